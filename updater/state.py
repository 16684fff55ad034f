"""The install state machine and the `current` pointer, with atomic persistence.

Pure part: `InstallRecord.advance` allows only these transitions (anything else raises
`IllegalTransitionError`):

    checked -> downloaded -> staged -> smoke_tested -> switched -> confirmed
                                                              \\-> rolled_back
    checked / downloaded / staged / smoke_tested -> failed

The `current` pointer (what the host starts) changes in exactly one place, the switch, and it
changes by one `os.replace`; every other state only describes an attempt. A process killed at any
point therefore leaves the pointer naming either the old or the new version, both complete and
verified.

Beside the pointer, in their own files so they survive a lost or damaged pointer: the
`Quarantine` of builds the host rolled back (written by the host) and the last version that
confirmed itself (written by the agent). Edge part: `write_atomic` (temp file with a random name
in the same folder + fsync + os.replace + fsync of the folder) and the readers, which validate
what they read.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import IO, Any

from updater.policy import BadVersionError, parse_version

log = logging.getLogger(__name__)


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
    SWITCHED = "switched"  # just switched to (or recovered to); not yet confirmed by that version
    CONFIRMED = "confirmed"  # the version initialised successfully (config + scope)
    ROLLED_BACK = "rolled_back"  # the host flipped back: the new version never confirmed


@dataclass(frozen=True, slots=True)
class CurrentPointer:
    version: str
    previous: str | None
    state: PointerState
    crashes_before_confirm: int = 0  # crashes while awaiting confirmation (hard budget)
    reason: str = ""
    # version -> archive sha256 of builds rolled back here; the gate will not reinstall them.
    # A mirror of the quarantine file's entries in force, for agents older than that file.
    quarantined: Mapping[str, str] = field(default_factory=dict)
    # switched: runs that ended (any way) while awaiting confirmation. rolled_back: 1 after a
    # soft rollback for failures that looked environmental, until the version rolled back to
    # confirms itself again (any agent's confirmation resets the counters): see
    # `awaiting_reconfirmation`.
    unconfirmed_starts: int = 0

    @property
    def awaiting_confirmation(self) -> bool:
        return self.state is PointerState.SWITCHED

    @property
    def awaiting_reconfirmation(self) -> bool:
        """Rolled back softly (the new version failed as an outage would) and the version rolled
        back to has not confirmed itself since: if it fails the same way, the environment is
        to blame, not the new version."""
        return self.state is PointerState.ROLLED_BACK and self.unconfirmed_starts > 0

    def switched_to(self, version: str, reason: str) -> CurrentPointer:
        return CurrentPointer(version, self.version, PointerState.SWITCHED, 0, reason,
                              dict(self.quarantined))

    def confirmed(self) -> CurrentPointer:
        return replace(self, state=PointerState.CONFIRMED, crashes_before_confirm=0,
                       unconfirmed_starts=0, reason="")

    def with_unconfirmed_start(self, crashed: bool) -> CurrentPointer:
        return replace(self, crashes_before_confirm=self.crashes_before_confirm + int(crashed),
                       unconfirmed_starts=self.unconfirmed_starts + 1)

    def rolled_back(
        self, reason: str, bad_sha256: str | None, *, recheck: bool = False
    ) -> CurrentPointer:
        """Back to the previous version. `recheck`: watch it for failing the same way before
        it confirms itself again (`awaiting_reconfirmation`)."""
        if self.previous is None:
            raise IllegalTransitionError("no previous version to roll back to")
        quarantined = dict(self.quarantined)
        if bad_sha256:
            quarantined[self.version] = bad_sha256
        return CurrentPointer(self.previous, self.version, PointerState.ROLLED_BACK, 0, reason,
                              quarantined, int(recheck))

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "previous": self.previous,
            "state": self.state.value,
            "crashes_before_confirm": self.crashes_before_confirm,
            "reason": self.reason,
            "quarantined": dict(sorted(self.quarantined.items())),
            "unconfirmed_starts": self.unconfirmed_starts,
        }

    @classmethod
    def from_json(cls, data: Any) -> CurrentPointer:
        try:
            version = _version(data["version"])
            previous = data.get("previous")
            if previous is not None:
                previous = _version(previous)
            crashes = _count(data, "crashes_before_confirm")
            unconfirmed = _count(data, "unconfirmed_starts")
            quarantined = data.get("quarantined", {})
            if not isinstance(quarantined, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in quarantined.items()
            ):
                raise ValueError("quarantined must map versions to hashes")
            return cls(version, previous, PointerState(data["state"]), crashes,
                       str(data.get("reason", "")), quarantined, unconfirmed)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise CorruptStateError(f"current pointer is invalid: {e}") from e


@dataclass(frozen=True, slots=True)
class QuarantineEntry:
    sha256: str  # the archive of the build that was rolled back (a rebuild is not affected)
    reason: str
    at: datetime
    until: datetime | None = None  # None: for good (it crash-looped); else lifted then

    def in_force(self, now: datetime) -> bool:
        return self.until is None or now < self.until

    def to_json(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "reason": self.reason, "at": self.at.isoformat(),
                "until": None if self.until is None else self.until.isoformat()}

    @classmethod
    def from_json(cls, data: Any) -> QuarantineEntry:
        until = data.get("until")
        return cls(_str(data, "sha256"), _str(data, "reason"), _aware(_str(data, "at")),
                   None if until is None else _aware(until))


@dataclass(frozen=True, slots=True)
class Quarantine:
    """Builds the host rolled back here (`<base>/quarantine.json`, written only by the host):
    version -> entry. A crash loop quarantines for good; a build that only failed to confirm
    (transient failures, a hang) softly, until `until`, so an outage right after an update does
    not bar that version forever."""

    entries: Mapping[str, QuarantineEntry] = field(default_factory=dict)

    def add(self, version: str, entry: QuarantineEntry) -> Quarantine:
        return Quarantine({**self.entries, version: entry})

    def without(self, versions: set[str]) -> Quarantine:
        return Quarantine({v: e for v, e in self.entries.items() if v not in versions})

    def expired(self, now: datetime) -> set[str]:
        return {v for v, e in self.entries.items() if not e.in_force(now)}

    def soft_in_force(self, now: datetime) -> set[str]:
        """Versions held only until their `until` (not a crash loop's), still held at `now`."""
        return {v for v, e in self.entries.items() if e.until is not None and e.in_force(now)}

    def in_force(self, now: datetime, pointer_mirror: Mapping[str, str]) -> dict[str, str]:
        """version -> sha256 not to reinstall: this file's entries in force, plus the pointer's
        entries this file does not know (an older host wrote them: for good)."""
        held = {v: sha for v, sha in pointer_mirror.items() if v not in self.entries}
        held.update({v: e.sha256 for v, e in self.entries.items() if e.in_force(now)})
        return held

    def to_json(self) -> dict[str, Any]:
        return {v: e.to_json() for v, e in sorted(self.entries.items())}

    @classmethod
    def from_json(cls, data: Any) -> Quarantine:
        try:
            if not isinstance(data, dict):
                raise TypeError("quarantine must be an object")
            return cls({_version(v): QuarantineEntry.from_json(e) for v, e in data.items()})
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise CorruptStateError(f"quarantine is invalid: {e}") from e


def _count(data: Any, key: str) -> int:
    value = data.get(key, 0)
    if not isinstance(value, int) or value < 0:
        raise ValueError(f"{key} must be a non-negative integer")
    return value


def _aware(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError("times must carry a time zone")
    return value


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


def copy_file_atomic(source: Path, path: Path, mode: int | None = None) -> None:
    """Copy `source` to `path` (streamed) with the same guarantees as `write_bytes_atomic`."""
    with open(source, "rb") as src:
        write_atomic(path, lambda out: shutil.copyfileobj(src, out, 1 << 20), mode)


def write_atomic(
    path: Path, fill: Callable[[IO[bytes]], object], mode: int | None = None
) -> None:
    """The one atomic write: `fill` writes into a temp file with an unpredictable name in the
    same folder; it is fsynced and renamed over `path`, then the folder is fsynced. A reader
    (or a crash) sees the old or the new content, never a mix; no temp file is left behind.
    The file is private (0600) unless `mode` is given (POSIX), set before the rename so it is
    never visible with another."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as tmp:
            fill(tmp)
            tmp.flush()
            os.fsync(tmp.fileno())
            if mode is not None and os.name == "posix":
                os.fchmod(tmp.fileno(), mode)
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


def read_quarantine(path: Path) -> Quarantine:
    data = _read_json(path)
    return Quarantine() if data is None else Quarantine.from_json(data)


def read_quarantine_or_empty(path: Path) -> Quarantine:
    """`read_quarantine` for deciding what to run: a damaged file must not stop a start, and the
    pointer keeps its own copy of the rollback it records (`CurrentPointer.quarantined`)."""
    try:
        return read_quarantine(path)
    except CorruptStateError as e:
        log.warning("quarantine file unreadable (%s); the pointer's copy still holds", e)
        return Quarantine()


def write_quarantine(path: Path, quarantine: Quarantine) -> None:
    write_json_atomic(path, quarantine.to_json())


def read_last_confirmed(path: Path) -> str | None:
    """The last version that confirmed itself here (written by the agent), if known: a damaged
    file is evidence of nothing, so it reads as unknown (the agent rewrites it on confirming)."""
    try:
        data = _read_json(path)
        return None if data is None else _version(data["version"])
    except (CorruptStateError, KeyError, TypeError, ValueError):
        return None


def write_last_confirmed(path: Path, version: str) -> None:
    write_json_atomic(path, {"version": _version(version)})


def read_reported(path: Path) -> set[str]:
    """Keys of rollbacks already reported to the error service (written by the agent)."""
    data = _read_json(path)
    if data is None:
        return set()
    keys = data.get("reported") if isinstance(data, dict) else None
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise CorruptStateError(f"{path.name} is invalid")
    return set(keys)


def write_reported(path: Path, keys: set[str]) -> None:
    write_json_atomic(path, {"reported": sorted(keys)})
