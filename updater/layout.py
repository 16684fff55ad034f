"""The on-disk layout of an installed agent, under one base directory.

Windows: `C:\\ProgramData\\Flynotes\\R4Agent`; Linux (tests, dev): any base dir.

    <base>/
      current                 pointer: running version, previous version, state, crash count
      install-state.json      the last install attempt's state (checked ... switched / failed)
      quarantine.json         builds the host rolled back (host-written; survives the pointer)
      last-confirmed.json     the last version that confirmed itself (agent-written)
      reported-rollbacks.json rollbacks already reported to Rollbar (agent-written)
      versions/<X.Y.Z>/<exe>  one folder per installed version; the last two are kept
      versions/.staging-*     private extraction folders (removed when an attempt ends)
      metadata/               TUF trusted metadata (root.json seeded from the exe)
      targets/                verified download cache (archives, patches, current tar)
      logs/
      config.toml

The service host exe lives in Program Files (installed by the MSI) and is never replaced.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from updater.policy import BadVersionError, parse_version

DEFAULT_WINDOWS_BASE = Path(r"C:\ProgramData\Flynotes\R4Agent")
STAGING_PREFIX = ".staging-"
TRASH_PREFIX = ".trash-"
KEEP_VERSIONS = 2
# Set by the host for the agent it starts: the base dir of the installed layout.
ENV_INSTALL_BASE = "R4AGENT_INSTALL_BASE"


def default_exe_name() -> str:
    return "r4agent.exe" if sys.platform == "win32" else "r4agent"


@dataclass(frozen=True, slots=True)
class Layout:
    base: Path
    exe_name: str = default_exe_name()

    @property
    def current_file(self) -> Path:
        return self.base / "current"

    @property
    def install_state_file(self) -> Path:
        return self.base / "install-state.json"

    @property
    def quarantine_file(self) -> Path:
        return self.base / "quarantine.json"

    @property
    def last_confirmed_file(self) -> Path:
        return self.base / "last-confirmed.json"

    @property
    def reported_rollbacks_file(self) -> Path:
        return self.base / "reported-rollbacks.json"

    @property
    def versions_dir(self) -> Path:
        return self.base / "versions"

    @property
    def metadata_dir(self) -> Path:
        return self.base / "metadata"

    @property
    def targets_dir(self) -> Path:
        return self.base / "targets"

    @property
    def logs_dir(self) -> Path:
        return self.base / "logs"

    @property
    def config_file(self) -> Path:
        return self.base / "config.toml"

    def version_dir(self, version: str) -> Path:
        parse_version(version)  # a version reaches a path only after the strict check
        return self.versions_dir / version

    def exe_path(self, version: str) -> Path:
        return self.version_dir(version) / self.exe_name

    def ensure_dirs(self) -> None:
        for d in (self.versions_dir, self.metadata_dir, self.targets_dir, self.logs_dir):
            d.mkdir(parents=True, exist_ok=True)

    def installed_versions(self) -> list[str]:
        found = []
        if self.versions_dir.is_dir():
            for entry in self.versions_dir.iterdir():
                try:
                    parse_version(entry.name)
                except BadVersionError:
                    continue
                if entry.is_dir():
                    found.append(entry.name)
        return sorted(found, key=parse_version)

    def leftovers(self) -> list[Path]:
        """Staging/trash folders of attempts that did not finish (killed, disk full)."""
        if not self.versions_dir.is_dir():
            return []
        return [
            p
            for p in self.versions_dir.iterdir()
            if p.name.startswith((STAGING_PREFIX, TRASH_PREFIX))
        ]

    def remove_leftovers(self) -> None:
        for path in self.leftovers():
            shutil.rmtree(path, ignore_errors=True)

    def prune(self, keep: set[str]) -> list[str]:
        """Remove installed versions not in `keep` (the current and previous); return them."""
        removed = []
        for version in self.installed_versions():
            if version in keep:
                continue
            discard(self.version_dir(version), self.versions_dir)
            removed.append(version)
        return removed


def discard(path: Path, parent: Path) -> None:
    """Remove a folder: first rename it out of the way (atomic), then delete it."""
    if not path.exists():
        return
    trash = parent / f"{TRASH_PREFIX}{os.urandom(6).hex()}"
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


class InstallLockedError(RuntimeError):
    """Another process holds the install lock."""


@contextlib.contextmanager
def install_lock(layout: Layout) -> Iterator[None]:
    """One install at a time per base dir (e.g. the service's agent and a manual `run`).
    Non-blocking: raises InstallLockedError if another process holds it. The OS releases the
    lock when the holder dies, so a killed install never blocks the next one."""
    layout.base.mkdir(parents=True, exist_ok=True)
    with open(layout.base / "install.lock", "a+b") as handle:
        try:
            _lock(handle.fileno())
        except OSError as e:
            raise InstallLockedError("another install is in progress") from e
        try:
            yield
        finally:
            _unlock(handle.fileno())


def _lock(fd: int) -> None:
    if sys.platform == "win32":
        import msvcrt

        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    else:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _unlock(fd: int) -> None:
    if sys.platform == "win32":
        import msvcrt

        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
    else:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_UN)
