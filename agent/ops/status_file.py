"""The status file: what the running agent is doing, written by the agent, read by `r4agent
status` (like datadog-agent's status page, but a file: the agent opens no port).

`<data_dir>/status.json` is rewritten whole at each cycle, each SQS receive and each handled
message, through the updater's one atomic write (temp file in the same folder + os.replace), so
a reader — `status` while the service runs, the support bundle — sees the previous or the new
document, never half of one. It holds versions, times, counts and exception TYPE names only:
never a record, a message body or an exception's text.

Document (`SCHEMA_VERSION` 1; docs/support.md):

    schema_version  1
    written_at      ISO 8601 with offset (UTC)
    agent           {version, pid, started_at, exited_at, exit}
    version_check   {at, wanted, action, reason} | null
    next            {version_check_at, scope_refresh_at, end_of_life_at} | null
    cycle           {number, started_at, finished_at, duration_s,
                     tables: [{table, counts: {sent: N, ...}, error: TypeName | null}]} | null
    queue           {last_receive_at, last_received, day, today: {outcome: count}}
    last_error      {type, phase, at} | null
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import threading
from collections import Counter
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

from agent.clock import Clock
from agent.ports import ErrorSink, StatusRecorder, TablePass
from updater.state import write_json_atomic

log = logging.getLogger(__name__)

SCHEMA_VERSION: Final = 1
STATUS_FILENAME: Final = "status.json"


class StatusFileError(ValueError):
    """The status file exists but does not hold a status document this version reads."""


def status_path(data_dir: Path) -> Path:
    return data_dir / STATUS_FILENAME


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


class FileStatus:
    """The real StatusRecorder: keeps the document in memory and rewrites the file at each
    event. Thread-safe (handlers, the serial lane and the poll loop all report). A failed
    write is logged once and never raised: the status is for people, the work goes on."""

    def __init__(self, path: Path, *, clock: Clock, version: str, pid: int | None = None) -> None:
        self._path = path
        self._clock = clock
        self._lock = threading.Lock()
        self._write_failed = False
        self._cycles = 0
        self._today: Counter[str] = Counter()
        self._day = ""
        self._doc: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "written_at": None,
            "agent": {
                "version": version,
                "pid": os.getpid() if pid is None else pid,
                "started_at": None,
                "exited_at": None,
                "exit": None,
            },
            "version_check": None,
            "next": None,
            "cycle": None,
            "queue": {"last_receive_at": None, "last_received": None, "day": "", "today": {}},
            "last_error": None,
        }

    def document(self) -> dict[str, Any]:
        """A copy of the document as it would be written now."""
        with self._lock:
            return copy.deepcopy(self._doc)

    # -- StatusRecorder ---------------------------------------------------------------------
    def started(self) -> None:
        with self._lock:
            self._doc["agent"]["started_at"] = _iso(self._clock.now())
            self._write()

    def version_checked(
        self, wanted: str, action: str, reason: str, *, next_check_in_s: float, life_left_s: float
    ) -> None:
        with self._lock:
            now = self._clock.now()
            self._cycles += 1
            self._doc["version_check"] = {
                "at": _iso(now),
                "wanted": wanted,
                "action": action,
                "reason": reason,
            }
            due = _iso(now + timedelta(seconds=max(next_check_in_s, 0.0)))
            self._doc["next"] = {
                "version_check_at": due,
                "scope_refresh_at": due,  # the scope is re-fetched just before the check
                "end_of_life_at": _iso(now + timedelta(seconds=max(life_left_s, 0.0))),
            }
            self._write()

    def uploads_done(self, tables: Mapping[str, TablePass], *, seconds: float) -> None:
        with self._lock:
            finished = self._clock.now()
            self._doc["cycle"] = {
                "number": self._cycles,
                "started_at": _iso(finished - timedelta(seconds=seconds)),
                "finished_at": _iso(finished),
                "duration_s": round(seconds, 3),
                "tables": [  # a list: in upload order (the file's keys are sorted)
                    {"table": name, "counts": dict(result.counts), "error": result.error}
                    for name, result in tables.items()
                ],
            }
            self._write()

    def received(self, count: int) -> None:
        with self._lock:
            queue = self._doc["queue"]
            queue["last_receive_at"] = _iso(self._clock.now())
            queue["last_received"] = count
            self._write()

    def outcome(self, outcome: str) -> None:
        with self._lock:
            day = self._clock.now().astimezone().date().isoformat()  # the practice's day
            if day != self._day:
                self._day, self._today = day, Counter()
            self._today[outcome] += 1
            self._doc["queue"]["day"] = day
            self._doc["queue"]["today"] = dict(sorted(self._today.items()))
            self._write()

    def error(self, error: BaseException, *, phase: str) -> None:
        with self._lock:
            self._doc["last_error"] = {
                "type": type(error).__name__,  # the type only: a message may quote data
                "phase": phase,
                "at": _iso(self._clock.now()),
            }
            self._write()

    def stopped(self, exit_code: str) -> None:
        with self._lock:
            self._doc["agent"]["exited_at"] = _iso(self._clock.now())
            self._doc["agent"]["exit"] = exit_code
            self._write()

    def _write(self) -> None:  # under the lock
        self._doc["written_at"] = _iso(self._clock.now())
        try:
            write_json_atomic(self._path, self._doc)
        except Exception as e:  # noqa: BLE001 - the status is for people: the work goes on
            if not self._write_failed:
                self._write_failed = True
                log.warning("could not write the status file %s: %s", self._path, e)
            return
        if self._write_failed:
            self._write_failed = False
            log.info("status file %s written again", self._path)


class NoStatus:
    """A StatusRecorder that keeps nothing: for a Dispatcher or Lifecycle used on its own."""

    def started(self) -> None:
        return None

    def version_checked(
        self, wanted: str, action: str, reason: str, *, next_check_in_s: float, life_left_s: float
    ) -> None:
        return None

    def uploads_done(self, tables: Mapping[str, TablePass], *, seconds: float) -> None:
        return None

    def received(self, count: int) -> None:
        return None

    def outcome(self, outcome: str) -> None:
        return None

    def error(self, error: BaseException, *, phase: str) -> None:
        return None

    def stopped(self, exit_code: str) -> None:
        return None


NO_STATUS: Final[StatusRecorder] = NoStatus()


class StatusNotingErrors:
    """An ErrorSink that notes each reported exception (type, phase, time) in the status, then
    hands it on: every error the agent reports passes here, so `last error` misses none."""

    def __init__(self, inner: ErrorSink, status: StatusRecorder) -> None:
        self._inner = inner
        self._status = status

    def report_exception(self, exc: BaseException, *, context: dict[str, object]) -> None:
        phase = context.get("phase") or (
            f"message {context['message_type']}" if "message_type" in context else "message"
        )
        with contextlib.suppress(Exception):  # the reporter never raises
            self._status.error(exc, phase=str(phase))
        self._inner.report_exception(exc, context=context)

    def report_message(self, message: str, *, level: str, extra: dict[str, object]) -> None:
        self._inner.report_message(message, level=level, extra=extra)

    def flush(self, timeout: float) -> None:
        self._inner.flush(timeout)


def read_status(path: Path) -> dict[str, Any] | None:
    """The status document at `path`; None when there is none (the agent never ran here).
    Raises StatusFileError for a file that is not a status document of this schema."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StatusFileError(f"{path.name} cannot be read ({type(e).__name__})") from e
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise StatusFileError(f"{path.name} is not JSON") from e
    if not isinstance(doc, dict) or doc.get("schema_version") != SCHEMA_VERSION:
        raise StatusFileError(
            f"{path.name} is not a version {SCHEMA_VERSION} status document (an agent of "
            "another version wrote it?)"
        )
    return doc
