"""Who may write the data tree the service runs code from, and the checks that keep it so.

The host (LocalSystem) runs `<data>/versions/<v>/r4agent.exe` as named by `<data>/current`, so
anyone who can write anywhere on that path can run code as SYSTEM. ProgramData lets every user
create folders (and own them: CREATOR OWNER full control). So:

- `secure_data_tree` (MSI action `service prepare`): every folder of the chain
  (`ProgramData\\Flynotes`, `...\\R4Agent`) is created by us, or, if it already exists, must be a
  real folder (no junction/symlink) owned by SYSTEM/Administrators (or by the account running
  this, which is SYSTEM under msiexec); it then gets owner Administrators and a PROTECTED DACL
  (SYSTEM + Administrators full control, inherited below, nothing from ProgramData). Everything
  already inside must be owned the same way and be no link — otherwise the install stops
  (refuse, not repair: a planted `current` + exe would survive a mere ACL reset). What passes
  gets its explicit ACEs dropped (inherited ones only).
- `require_trusted_chain` (the host, before each agent start; defence in depth): the exe and
  every folder up to ProgramData must be such folders/files, or the agent is not started.

Windows does the real work through pywin32 (`WindowsTreeSecurity`); POSIX (dev, tests) maps
"owner" to the uid and "lock" to mode 0700, so the same decisions are tested on Linux.
Under Wine 8 the calls succeed but nothing is persisted (owner and DACL read back as Wine
synthesises them from the Unix mode), and Linux symlinks are invisible to Windows code: the
real-Windows job (.github/workflows/windows.yml) checks owner and protection.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

SYSTEM_SID = "S-1-5-18"
ADMINISTRATORS_SID = "S-1-5-32-544"


class UntrustedTreeError(OSError):
    """A folder or file on the data tree's path is a link or owned by someone else."""


class TreeSecurity(Protocol):
    def owner(self, path: Path) -> str:
        """An owner id (a SID string on Windows, `uid:N` on POSIX); does not follow links."""
        ...

    def trusted_owners(self) -> frozenset[str]: ...

    def lock(self, folder: Path) -> None:
        """Owner Administrators, protected DACL for SYSTEM + Administrators (POSIX: 0700)."""
        ...

    def inherit_only(self, path: Path) -> None:
        """Drop explicit ACEs: only what the locked folder above passes down."""
        ...


def is_link(path: Path) -> bool:
    """A symlink, junction or any other reparse point (never followed by these checks)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    reparse = getattr(stat, "FILE_ATTRIBUTE_REPARSE_POINT", 0x400)
    return stat.S_ISLNK(st.st_mode) or bool(getattr(st, "st_file_attributes", 0) & reparse)


def _refusal(path: Path, why: str) -> UntrustedTreeError:
    return UntrustedTreeError(
        f"{path} {why}: remove it (or take it over as an administrator) and install again"
    )


def _vet(path: Path, security: TreeSecurity) -> None:
    if is_link(path):
        raise _refusal(path, "is a junction or symbolic link")
    owner = security.owner(path)
    if owner not in security.trusted_owners():
        raise _refusal(path, f"is owned by {owner}, not SYSTEM or Administrators")


def _entries(root: Path) -> Iterator[Path]:
    """Everything below `root`, depth first, never descending into a link."""
    pending = [root]
    while pending:
        folder = pending.pop()
        with os.scandir(folder) as it:
            for entry in it:
                path = Path(entry.path)
                yield path
                if entry.is_dir(follow_symlinks=False) and not is_link(path):
                    pending.append(path)


def secure_data_tree(chain: Sequence[Path], security: TreeSecurity) -> None:
    """Create/vet and lock each folder of `chain` (outermost first), then vet and reset what
    the innermost already holds. Raises UntrustedTreeError (nothing below it is changed)."""
    chain[0].parent.mkdir(parents=True, exist_ok=True)
    for folder in chain:
        try:
            folder.mkdir()
        except FileExistsError:
            _vet(folder, security)
            if not folder.is_dir():
                raise _refusal(folder, "is not a folder") from None
        security.lock(folder)
        _vet(folder, security)  # swapped between the check and the lock?
    inside = list(_entries(chain[-1]))
    for path in inside:
        _vet(path, security)
    for path in inside:
        security.inherit_only(path)


def require_trusted_chain(exe: Path, stop_at: Path, security: TreeSecurity) -> None:
    """The exe and each folder above it up to (not including) `stop_at` are no links and are
    owned by SYSTEM/Administrators. Raises UntrustedTreeError (an OSError: "could not start")."""
    if stop_at not in exe.parents:
        raise _refusal(exe, f"is outside {stop_at}")
    path = exe
    while path != stop_at:
        _vet(path, security)
        path = path.parent


class PosixTreeSecurity:
    """Dev/test stand-in with the same decisions: owner = uid; trusted = root and us."""

    def owner(self, path: Path) -> str:
        return f"uid:{os.lstat(path).st_uid}"

    def trusted_owners(self) -> frozenset[str]:
        return frozenset({"uid:0", f"uid:{os.getuid()}"})

    def lock(self, folder: Path) -> None:
        os.chmod(folder, 0o700)

    def inherit_only(self, path: Path) -> None:
        return None


class WindowsTreeSecurity:
    """pywin32: owner/DACL of files and folders (reparse points are vetted before use)."""

    def __init__(self) -> None:
        import win32api
        import win32security

        token = win32security.OpenProcessToken(
            win32api.GetCurrentProcess(), win32security.TOKEN_QUERY
        )
        user_sid = win32security.GetTokenInformation(token, win32security.TokenUser)[0]
        self._me = win32security.ConvertSidToStringSid(user_sid)
        self._privileged = False

    def _enable_privileges(self) -> None:
        """Once, before the first change: the host only reads owners, so its token (which the
        agents it starts inherit) keeps these disabled."""
        if self._privileged:
            return
        import win32api
        import win32security

        token = win32security.OpenProcessToken(  # QUERY: pywin32 asks for the previous state
            win32api.GetCurrentProcess(),
            win32security.TOKEN_QUERY | win32security.TOKEN_ADJUST_PRIVILEGES,
        )
        # Setting an owner other than ourselves, on something we did not create: LocalSystem
        # and elevated administrators hold these privileges, disabled until asked for.
        wanted = [
            (win32security.LookupPrivilegeValue(None, name), win32security.SE_PRIVILEGE_ENABLED)
            for name in (win32security.SE_RESTORE_NAME, win32security.SE_TAKE_OWNERSHIP_NAME)
        ]
        win32security.AdjustTokenPrivileges(token, False, wanted)
        self._privileged = True

    def owner(self, path: Path) -> str:
        import win32security

        descriptor = win32security.GetNamedSecurityInfo(
            str(path), win32security.SE_FILE_OBJECT, win32security.OWNER_SECURITY_INFORMATION
        )
        sid_text: str = win32security.ConvertSidToStringSid(
            descriptor.GetSecurityDescriptorOwner()
        )
        return sid_text

    def trusted_owners(self) -> frozenset[str]:
        return frozenset({SYSTEM_SID, ADMINISTRATORS_SID, self._me})

    def lock(self, folder: Path) -> None:
        import ntsecuritycon
        import win32security

        self._enable_privileges()
        dacl = win32security.ACL()
        inherit = ntsecuritycon.OBJECT_INHERIT_ACE | ntsecuritycon.CONTAINER_INHERIT_ACE
        for sid_text in (SYSTEM_SID, ADMINISTRATORS_SID):
            dacl.AddAccessAllowedAceEx(
                win32security.ACL_REVISION,
                inherit,
                ntsecuritycon.FILE_ALL_ACCESS,
                win32security.ConvertStringSidToSid(sid_text),
            )
        win32security.SetNamedSecurityInfo(
            str(folder),
            win32security.SE_FILE_OBJECT,
            win32security.OWNER_SECURITY_INFORMATION
            | win32security.DACL_SECURITY_INFORMATION
            | win32security.PROTECTED_DACL_SECURITY_INFORMATION,
            win32security.ConvertStringSidToSid(ADMINISTRATORS_SID),
            None,
            dacl,
            None,
        )

    def inherit_only(self, path: Path) -> None:
        import win32security

        self._enable_privileges()
        win32security.SetNamedSecurityInfo(
            str(path),
            win32security.SE_FILE_OBJECT,
            win32security.DACL_SECURITY_INFORMATION
            | win32security.UNPROTECTED_DACL_SECURITY_INFORMATION,
            None,
            None,
            win32security.ACL(),  # empty, not NULL: inherited ACEs only (NULL = everyone)
            None,
        )


def default_security() -> TreeSecurity:
    return WindowsTreeSecurity() if sys.platform == "win32" else PosixTreeSecurity()
