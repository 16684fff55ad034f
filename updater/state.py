"""The install state machine and the `current` pointer, with atomic persistence.

Pure part: `InstallRecord.advance` allows only these transitions (anything else raises
`IllegalTransitionError`):

    checked -> downloaded -> staged -> smoke_tested -> switched -> confirmed
                                                              \\-> rolled_back
    checked / downloaded / staged / smoke_tested -> failed

The `current` pointer (what the host starts) changes in exactly one place, the switch, and it
changes by one `os.replace`; every other state only describes an attempt. A process killed at any
point therefore leaves the pointer naming either the old or the new version, both complete and
verified. Edge part: `write_json_atomic` (temp file in the same folder + fsync + os.replace + fsync
of the folder) and the readers, which validate what they read.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import IO, Any

from updater.policy import BadVersionError, parse_version


class InstallState(Enum):
    CHECKED = "checked"
    DOWNLOADED = "downloaded"
    STAGED = "staged"
    SMOKE_TESTED = "smoke_tested"
    SWITCHED = "switched"
    CONFIRMED = "confirmed"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"


_NEXT: dict[InstallState, frozenset[InstallState]] = {
    InstallState.CHECKED: frozenset({InstallState.DOWNLOADED, InstallState.FAILED}),
    InstallState.DOWNLOADED: frozenset({InstallState.STAGED, InstallState.FAILED}),
    InstallState.STAGED: frozenset({InstallState.SMOKE_TESTED, InstallState.FAILED}),
    InstallState.SMOKE_TESTED: frozenset({InstallState.SWITCHED, InstallState.FAILED}),
    InstallState.SWITCHED: frozenset({InstallState.CONFIRMED, InstallState.ROLLED_BACK}),
    InstallState.CONFIRMED: frozenset(),
    InstallState.ROLLED_BACK: frozenset(),
    InstallState.FAILED: frozenset(),
}

FINISHED = frozenset({InstallState.CONFIRMED, InstallState.ROLLED_BACK, InstallState.FAILED})


class IllegalTransitionError(RuntimeError):
    pass


class CorruptStateError(ValueError):
    """A state file exists but does not hold a valid record."""


@dataclass(frozen=True, slots=True)
class InstallRecord:
    attempt: str
    from_version: str
    to_version: str
    state: InstallState
    route: str = ""
    detail: str = ""
    archive_sha256: str = ""

    def advance(self, new: InstallState, detail: str = "") -> InstallRecord:
        if new not in _NEXT[self.state]:
            raise IllegalTransitionError(f"{self.state.value} -> {new.value} is not allowed")
        return replace(self, state=new, detail=detail)

    def to_json(self) -> dict[str, Any]:
        return {
            "attempt": self.attempt,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "state": self.state.value,
            "route": self.route,
            "detail": self.detail,
            "archive_sha256": self.archive_sha256,
        }

    @classmethod
    def from_json(cls, data: Any) -> InstallRecord:
        try:
            return cls(
                attempt=_str(data, "attempt"),
                from_version=_str(data, "from_version"),
                to_version=_str(data, "to_version"),
                state=InstallState(data["state"]),
                route=_str(data, "route"),
                detail=_str(data, "detail"),
                archive_sha256=_str(data, "archive_sha256"),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise CorruptStateError(f"install record is invalid: {e}") from e


class PointerState(Enum):
    INSTALLED = "installed"  # put there by the MSI / first install; trusted as confirmed
    SWITCHED = "switched"  # just switched to; not yet confirmed by the new version
    CONFIRMED = "confirmed"  # the version initialised successfully (config + scope)
    ROLLED_BACK = "rolled_back"  # the host flipped back after a crash loop


@dataclass(frozen=True, slots=True)
class CurrentPointer:
    version: str
    previous: str | None
    state: PointerState
    crashes_before_confirm: int = 0
    reason: str = ""
    # version -> archive sha256 of builds that crash-looped here; the gate will not reinstall them
    quarantined: Mapping[str, str] = field(default_factory=dict)

    @property
    def awaiting_confirmation(self) -> bool:
        return self.state is PointerState.SWITCHED

    def switched_to(self, version: str, reason: str) -> CurrentPointer:
        return CurrentPointer(version, self.version, PointerState.SWITCHED, 0, reason,
                              dict(self.quarantined))

    def confirmed(self) -> CurrentPointer:
        return replace(self, state=PointerState.CONFIRMED, crashes_before_confirm=0, reason="")

    def with_crash(self) -> CurrentPointer:
        return replace(self, crashes_before_confirm=self.crashes_before_confirm + 1)

    def rolled_back(self, reason: str, bad_sha256: str | None) -> CurrentPointer:
        if self.previous is None:
            raise IllegalTransitionError("no previous version to roll back to")
        quarantined = dict(self.quarantined)
        if bad_sha256:
            quarantined[self.version] = bad_sha256
        return CurrentPointer(self.previous, self.version, PointerState.ROLLED_BACK, 0, reason,
                              quarantined)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "previous": self.previous,
            "state": self.state.value,
            "crashes_before_confirm": self.crashes_before_confirm,
            "reason": self.reason,
            "quarantined": dict(sorted(self.quarantined.items())),
        }

    @classmethod
    def from_json(cls, data: Any) -> CurrentPointer:
        try:
            version = _version(data["version"])
            previous = data.get("previous")
            if previous is not None:
                previous = _version(previous)
            crashes = data.get("crashes_before_confirm", 0)
            if not isinstance(crashes, int) or crashes < 0:
                raise ValueError("crashes_before_confirm must be a non-negative integer")
            quarantined = data.get("quarantined", {})
            if not isinstance(quarantined, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in quarantined.items()
            ):
                raise ValueError("quarantined must map versions to hashes")
            return cls(version, previous, PointerState(data["state"]), crashes,
                       str(data.get("reason", "")), quarantined)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise CorruptStateError(f"current pointer is invalid: {e}") from e


def _str(data: Any, key: str) -> str:
    value = data[key]
    if not isinstance(value, str):
        raise TypeError(f"{key} must be a string")
    return value


def _version(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("version must be a string")
    try:
        parse_version(value)
    except BadVersionError as e:
        raise ValueError(str(e)) from e
    return value


# ---- persistence edge --------------------------------------------------------------------------


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Write JSON so a reader sees the old or the new content, never a mix, even after a crash."""
    write_bytes_atomic(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def write_bytes_atomic(path: Path, payload: bytes) -> None:
    """Temp file in the same folder + fsync + os.replace + fsync of the folder."""
    write_atomic(path, lambda out: out.write(payload))


def copy_file_atomic(source: Path, path: Path) -> None:
    """Copy `source` to `path` (streamed) with the same guarantees as `write_bytes_atomic`."""
    with open(source, "rb") as src:
        write_atomic(path, lambda out: shutil.copyfileobj(src, out, 1 << 20))


def write_atomic(path: Path, fill: Callable[[IO[bytes]], object]) -> None:
    """The one atomic write: `fill` writes into a temp file with an unpredictable name in the
    same folder; it is fsynced and renamed over `path`, then the folder is fsynced. A reader
    (or a crash) sees the old or the new content, never a mix; no temp file is left behind."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as tmp:
            fill(tmp)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make a rename durable (POSIX); Windows has no directory handles to fsync."""
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise CorruptStateError(f"{path.name} cannot be read: {e}") from e


def read_pointer(path: Path) -> CurrentPointer | None:
    data = _read_json(path)
    return None if data is None else CurrentPointer.from_json(data)


def write_pointer(path: Path, pointer: CurrentPointer) -> None:
    write_json_atomic(path, pointer.to_json())


def read_record(path: Path) -> InstallRecord | None:
    data = _read_json(path)
    return None if data is None else InstallRecord.from_json(data)


def write_record(path: Path, record: InstallRecord) -> None:
    write_json_atomic(path, record.to_json())
