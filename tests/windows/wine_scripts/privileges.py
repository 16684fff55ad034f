"""Wine harness (Windows Python in the build prefix): which privileges the tree checks enable.

    python privileges.py REPO FOLDER   -> "before [...]; checked [...]; locked [...]"

Lists which of SeRestore/SeTakeOwnership this process's token has enabled: at start, after the
host's launch check (`require_trusted_chain` on FOLDER\\x.exe: it only reads owners), and after
`lock(FOLDER)` (what `prepare` does). The host builds its WindowsTreeSecurity at every service
start and the agents it starts inherit its token, so the check must leave them as they were.
"""

import sys
from pathlib import Path

import win32api
import win32security

sys.path.insert(0, sys.argv[1])

from installer.tree_security import UntrustedTreeError, WindowsTreeSecurity, require_trusted_chain

NAMES = (win32security.SE_RESTORE_NAME, win32security.SE_TAKE_OWNERSHIP_NAME)


def enabled() -> list[str]:
    token = win32security.OpenProcessToken(
        win32api.GetCurrentProcess(), win32security.TOKEN_QUERY
    )
    by_luid = {win32security.LookupPrivilegeValue(None, name): name for name in NAMES}
    held = win32security.GetTokenInformation(token, win32security.TokenPrivileges)
    return sorted(
        by_luid[luid] for luid, attributes in held
        if luid in by_luid and attributes & win32security.SE_PRIVILEGE_ENABLED
    )


folder = Path(sys.argv[2])
before = enabled()
security = WindowsTreeSecurity()
exe = folder / "x.exe"
exe.write_bytes(b"")
try:
    require_trusted_chain(exe, folder.parent, security)
except UntrustedTreeError as e:
    sys.exit(f"the launch check refused: {e}")
checked = enabled()
security.lock(folder)
print(f"before {before}; checked {checked}; locked {enabled()}", flush=True)
