"""Staging edge: extract a verified tar into a fresh private folder, smoke-test (`self-test`: the
staged build can update itself), move into place.

Extraction is done member by member through a small file-system interface (so a full disk can be
injected in tests) after two layers of checks on every member: our own (regular files and
folders only; no absolute paths, no `..`, no backslashes or drive letters, no links, devices or
fifos) and the standard library's `tarfile.data_filter`. The staging folder is created with a
random name and mode 0700 under `versions/`, so nothing else can plant files in it, and it sits on
the same volume as its destination, so moving it into place is one rename.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Protocol

from updater.errors import SmokeTestError, StagingError, UnsafeArchiveError
from updater.layout import STAGING_PREFIX, Layout, discard
from updater.policy import parse_version
from updater.process_tree import ProcessTree, popen_options
from updater.state import fsync_dir

_CHUNK = 1 << 20


class StagingFileSystem(Protocol):
    """The writes staging makes; tests inject one that runs out of space."""

    def make_dir(self, path: Path) -> None: ...

    def write_file(self, path: Path, source: IO[bytes], mode: int) -> None: ...


class RealFileSystem:
    def make_dir(self, path: Path) -> None:
        path.mkdir(mode=0o700, parents=False, exist_ok=True)

    def write_file(self, path: Path, source: IO[bytes], mode: int) -> None:
        with open(path, "xb") as out:  # exclusive: never follow or overwrite anything
            while chunk := source.read(_CHUNK):
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(path, mode)


@dataclass(frozen=True, slots=True)
class StagingLimits:
    max_members: int = 10_000
    max_total_bytes: int = 800_000_000
    smoke_timeout_s: float = 60.0


def _member_parts(member: tarfile.TarInfo) -> tuple[str, ...]:
    name = member.name
    if not name or "\\" in name or ":" in name or "\x00" in name:
        raise UnsafeArchiveError(f"archive member with an unsafe name: {name!r}")
    path = PurePosixPath(name)
    if path.is_absolute():
        raise UnsafeArchiveError(f"archive member with an absolute path: {name!r}")
    parts = tuple(p for p in path.parts if p != ".")
    if ".." in parts:
        raise UnsafeArchiveError(f"archive member with '..' in its path: {name!r}")
    return parts


def check_members(members: list[tarfile.TarInfo], limits: StagingLimits) -> None:
    if len(members) > limits.max_members:
        raise UnsafeArchiveError(f"archive has more than {limits.max_members} members")
    total = 0
    for member in members:
        _member_parts(member)
        if member.issym() or member.islnk():
            raise UnsafeArchiveError(f"archive member is a link: {member.name!r}")
        if not (member.isfile() or member.isdir()):
            raise UnsafeArchiveError(f"archive member is not a file or folder: {member.name!r}")
        total += member.size
    if total > limits.max_total_bytes:
        raise UnsafeArchiveError(f"archive unpacks to more than {limits.max_total_bytes} bytes")


def new_staging_dir(layout: Layout) -> Path:
    layout.versions_dir.mkdir(parents=True, exist_ok=True)
    path = layout.versions_dir / f"{STAGING_PREFIX}{os.urandom(8).hex()}"
    path.mkdir(mode=0o700)
    return path


def extract_tar(
    tar_bytes: bytes,
    dest: Path,
    *,
    fs: StagingFileSystem | None = None,
    limits: StagingLimits | None = None,
) -> None:
    """Extract a tar (already verified by TUF) into the empty private folder `dest`."""
    fs = fs or RealFileSystem()
    limits = limits or StagingLimits()
    try:
        with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as tar:
            members = tar.getmembers()
            check_members(members, limits)
            for member in members:
                try:
                    tarfile.data_filter(member, str(dest))
                except tarfile.FilterError as e:
                    raise UnsafeArchiveError(f"archive member refused: {e}") from e
                parts = _member_parts(member)
                if not parts:
                    continue  # the archive's "." entry
                target = dest.joinpath(*parts)
                if member.isdir():
                    _make_dirs(fs, dest, parts)
                    continue
                _make_dirs(fs, dest, parts[:-1])
                source = tar.extractfile(member)
                if source is None:
                    raise UnsafeArchiveError(f"archive member has no data: {member.name!r}")
                mode = 0o700 if member.mode & stat.S_IXUSR else 0o600
                fs.write_file(target, source, mode)
    except (tarfile.TarError, EOFError) as e:
        raise UnsafeArchiveError(f"archive is not a valid tar: {e}") from e
    except FileExistsError as e:
        raise UnsafeArchiveError(f"archive lists the same file twice: {e.filename}") from e
    except OSError as e:
        raise StagingError(f"extraction failed: {e.strerror or e}") from e
    fsync_dir(dest)


def _make_dirs(fs: StagingFileSystem, dest: Path, parts: tuple[str, ...]) -> None:
    current = dest
    for part in parts:
        current = current / part
        fs.make_dir(current)


# The first version whose command line has `self-test` (FIRST_SELF_TEST_VERSION): no release
# was ever published without it (the command came before the first release; dev builds from
# before it were all numbered 1.0.0 and only ever sat in throwaway test repositories). A staged
# build at or above it that does not know the word has lost its self-test: refused.
FIRST_SELF_TEST_VERSION = "1.0.0"
# What is read back of the staged exe's output (it is only ever a line or two).
_OUTPUT_CAP = 64 * 1024
# After the tree is killed, how long its root gets to be reaped (Windows drains the job first).
_KILL_WAIT_S = 15.0


@dataclass(frozen=True, slots=True)
class StagedRun:
    returncode: int
    stdout: bytes
    stderr: bytes


def may_skip_self_test(version: str) -> bool:
    """Only a build older than the first release with `self-test` may prove itself with
    `--version` alone (so a downgrade to it stays possible)."""
    return parse_version(version) < parse_version(FIRST_SELF_TEST_VERSION)


def smoke_test(exe: Path, version: str, timeout_s: float) -> None:
    """The staged exe must pass `self-test` (its own update path works: updater/self_test.py)
    and print exactly its version (`r4agent X.Y.Z` or `X.Y.Z`), exit 0. A build older than
    FIRST_SELF_TEST_VERSION whose command line refuses the word is checked with `--version`;
    a newer one that refuses it has lost its self-test and fails."""
    if not exe.is_file():
        raise SmokeTestError(f"staged bundle has no {exe.name}")
    done = _run_staged(exe, "self-test", timeout_s)
    if done.returncode == 2 and b"invalid choice: 'self-test'" in done.stderr:
        if not may_skip_self_test(version):
            raise SmokeTestError(
                f"staged exe has no self-test command, which every release from "
                f"{FIRST_SELF_TEST_VERSION} on has"
            )
        done = _run_staged(exe, "--version", timeout_s)
    printed = done.stdout.decode("utf-8", "replace").strip()
    if done.returncode != 0 or printed not in {version, f"r4agent {version}"}:
        said = done.stderr.decode("utf-8", "replace").strip().splitlines()
        why = f" ({said[-1][:120]})" if said else ""
        raise SmokeTestError(
            f"staged exe self-test gave exit {done.returncode} and {printed[:60]!r}{why}, "
            f"wanted {version}"
        )


def _run_staged(exe: Path, arg: str, timeout_s: float) -> StagedRun:
    """Run the staged exe as the root of its own process tree with its output in temp files.

    Not `subprocess.run(capture_output=True, timeout=...)`: on a timeout that kills only the
    direct child and then (on Windows) reads the pipes with no timeout, and a onefile build's
    Python grandchild still holds them, so a hung build would hang the agent's main loop for
    good. Files have no reader to block; on a timeout the whole tree is killed."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(
                [str(exe), arg], stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                **popen_options(),
            )
            tree = ProcessTree.adopt(proc)
        except OSError as e:
            raise SmokeTestError(f"staged exe could not start: {e.strerror or e}") from e
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired as e:
            tree.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=_KILL_WAIT_S)
            raise SmokeTestError(f"staged exe did not answer {arg} within {timeout_s} s") from e
        finally:
            tree.close()
        return StagedRun(code, _read_back(out), _read_back(err))


def _read_back(file: IO[bytes]) -> bytes:
    file.seek(0)
    return file.read(_OUTPUT_CAP)


def move_into_place(staging: Path, layout: Layout, version: str, running: str) -> Path:
    """Rename the smoke-tested staging folder to `versions/<version>` (replacing a stale copy)."""
    if version == running:
        raise StagingError("refusing to replace the folder of the running version")
    dest = layout.version_dir(version)
    discard(dest, layout.versions_dir)
    os.replace(staging, dest)
    fsync_dir(layout.versions_dir)
    return dest


def remove_staging(staging: Path) -> None:
    with contextlib.suppress(OSError):
        shutil.rmtree(staging)


