"""Upload passes: stream one R4 table, send its new or changed rows in chunks, keep the ledger.

A pass reads R4 as before (keyset pages, one batch held at a time) and, per batch, asks the
ledger for the digests of the batch's key range: a row whose digest differs (or is unknown) is
changed; a key the ledger has but R4 no longer yields is gone and leaves the ledger (the
contract has no delete call: the backend keeps what it has). A full pass sends every row;
a changed-only pass only the changed ones. Digests are committed per chunk, only after its 2xx
(Debezium's offsets: a crash replays, never skips); a refused or failed chunk's rows are
forgotten, so they are sent again next pass.

Every table's first pass in a process is full (so at least daily) and so is any pass on a
fresh ledger; `full=True` (a bulk-upload message with `"full": true`) asks for one.
Appointment statuses (a handful of rows) have no ledger: every pass sends them all.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from agent.clock import Clock, SystemClock
from agent.contract import (
    APPOINTMENT_STATUSES,
    APPOINTMENTS,
    PATIENTS,
    CsvTable,
    Values,
    Wire,
    skips_patient,
)
from agent.errors import AgentError
from agent.ports import Backend, ErrorSink, RecordSource
from agent.progress import Progress
from agent.uploads.chunks import ChunkSender, PlannedRow
from agent.uploads.ledger import Ledger, NoLedger, RowDigest

log = logging.getLogger(__name__)

DEFAULT_ROWS_PER_REQUEST: Final = 500  # the original's chunk of 500 key values
MAX_ROWS_PER_REQUEST: Final = 5000
BATCH_ROWS: Final = 2000  # rows compared against the ledger at a time (one query)
# A transient chunk failure leaves the chunk for the next pass and the pass goes on; this many
# in a row end the pass (the backend is down: its retries would only add up).
FAILED_CHUNKS_TO_STOP: Final = 2


@dataclass(frozen=True, slots=True)
class _Source:
    table: CsvTable
    read: Callable[[RecordSource], Iterator[Any]]
    key: Callable[[Any], int]
    values: Callable[[Wire, Any], Values]
    skip: Callable[[Any], bool] | None
    has_ledger: bool


SOURCES: Final[dict[str, _Source]] = {
    "patients": _Source(
        PATIENTS, lambda r: r.iter_patients(), lambda p: p.code, Wire.patient_values,
        skips_patient, True,
    ),
    "appointments": _Source(
        APPOINTMENTS, lambda r: r.iter_appointments(), lambda a: a.appt_id,
        Wire.appointment_values, None, True,
    ),
    "appointment statuses": _Source(
        APPOINTMENT_STATUSES, lambda r: r.iter_appointment_flags(), lambda f: f.flag,
        Wire.appointment_status_values, None, False,
    ),
}  # fmt: skip
TABLES: Final = tuple(SOURCES)


@dataclass(slots=True)
class PassSummary:
    """One table's pass, counts only (the log line, `r4agent status`)."""

    table: str
    full: bool
    read: int = 0  # rows R4 yielded
    changed: int = 0  # new or changed since the backend last acknowledged them
    sent: int = 0  # acknowledged (2xx) in this pass
    skipped: int = 0  # left out on purpose (no surname / forename)
    refused: int = 0  # in chunks the backend refused for good (4xx)
    failed: int = 0  # in chunks that failed transiently: sent again next pass
    requests: int = 0
    seconds: float = 0.0
    error: AgentError | None = field(default=None, repr=False)  # what ended the pass early
    last_failure: AgentError | None = field(default=None, repr=False)  # of a `failed` chunk

    def counts(self) -> dict[str, int]:
        return {
            "read": self.read,
            "changed": self.changed,
            "sent": self.sent,
            "skipped": self.skipped,
            "refused": self.refused,
            "failed": self.failed,
        }

    def line(self) -> str:
        kind = "full pass" if self.full else "changed-only pass"
        text = (
            f"{self.table}: {kind}: {self.read:,} read, {self.changed:,} changed, "
            f"{self.sent:,} sent, {self.skipped:,} skipped, {self.refused:,} refused, "
            f"{self.failed:,} failed ({self.requests} requests, {self.seconds:.1f} s)"
        )
        if self.error is not None:
            text += f"; stopped early: {type(self.error).__name__}"
        return text


def plan_batch(
    rows: list[tuple[int, Values]],
    known: dict[int, bytes],
    digest_of: Callable[[Values], bytes],
    *,
    full: bool,
) -> tuple[list[PlannedRow], int]:
    """Pure: which rows of a batch go out (all of them in a full pass), and how many of them
    changed since their last acknowledged digest."""
    out: list[PlannedRow] = []
    changed = 0
    for k, values in rows:
        digest = digest_of(values)
        if known.get(k) != digest:
            changed += 1
            out.append(PlannedRow(k, values, digest))
        elif full:
            out.append(PlannedRow(k, values, digest))
    return out, changed


class Uploads:
    """Runs passes, one at a time (the dispatcher's serial lane runs them anyway)."""

    def __init__(
        self,
        backend: Backend,
        *,
        errors: ErrorSink,
        ledger: Ledger | None = None,
        wire: Wire | None = None,
        clock: Clock | None = None,
        rows_per_request: int = DEFAULT_ROWS_PER_REQUEST,
    ) -> None:
        if not 1 <= rows_per_request <= MAX_ROWS_PER_REQUEST:
            raise ValueError(f"rows_per_request must be from 1 to {MAX_ROWS_PER_REQUEST}")
        self._backend = backend
        self._errors = errors
        self.ledger = ledger or NoLedger()
        self._wire = wire or Wire()
        self._clock = clock or SystemClock()
        self._rows_per_request = rows_per_request
        self._lock = threading.Lock()
        self._full_done: set[str] = set()  # tables whose full pass of this process completed
        self._last_read: dict[str, int] = {}  # for the progress line's ETA

    def run(self, table: str, records: RecordSource, *, full: bool = False) -> PassSummary:
        """One pass of `table` ("patients", "appointments", "appointment statuses"). Never
        raises an AgentError: what ended the pass early is in `summary.error`."""
        source = SOURCES[table]
        with self._lock:
            full = (
                full
                or not source.has_ledger
                or table not in self._full_done
                or self.ledger.fresh(table)
            )
            summary = PassSummary(table, full)
            started = self._clock.monotonic()
            try:
                self._pass(source, records, summary)
            except AgentError as e:  # R4 or the backend: the next pass sends what is missing
                summary.error = e
            summary.seconds = self._clock.monotonic() - started
            if summary.error is None:
                self._last_read[table] = summary.read
                if full:
                    self._full_done.add(table)
                    self.ledger.full_pass_done(table)
        log.info("%s", summary.line())
        return summary

    def _pass(self, source: _Source, records: RecordSource, summary: PassSummary) -> None:
        table, ledger, wire = source.table.name, self.ledger, self._wire
        sender = ChunkSender(
            self._backend, source.table, self._errors, rows_per_request=self._rows_per_request
        )
        progress = Progress(
            f"{table} upload", clock=self._clock, log=log, expected=self._last_read.get(table)
        )
        pending: list[PlannedRow] = []
        failed_in_a_row = 0
        digest_of = RowDigest(ledger.key)

        def flush(rows: list[PlannedRow]) -> None:
            nonlocal failed_in_a_row
            result = sender.send(rows)
            summary.requests += result.requests
            summary.sent += len(result.sent)
            summary.refused += len(result.refused)
            summary.failed += len(result.failed)
            if source.has_ledger:
                ledger.commit(table, [(r.key, r.digest) for r in result.sent])
                ledger.forget(table, [r.key for r in (*result.refused, *result.failed)])
            if result.transient is None:
                failed_in_a_row = 0
                return
            failed_in_a_row += 1
            summary.last_failure = result.transient
            log.warning("%s: a chunk failed (sent again next pass): %s", table, result.transient)
            if failed_in_a_row >= FAILED_CHUNKS_TO_STOP:
                raise result.transient

        def send(rows: list[PlannedRow]) -> None:
            flush(rows)
            progress.advance(0)  # a slow backend must not silence the progress line either

        last_key: int | None = None
        iterator = source.read(records)
        while batch := list(itertools.islice(iterator, BATCH_ROWS)):
            rows: list[tuple[int, Values]] = []
            for record in batch:
                if source.skip is not None and source.skip(record):
                    summary.skipped += 1
                    continue
                rows.append((source.key(record), source.values(wire, record)))
            summary.read += len(batch)
            high = source.key(batch[-1])
            known = ledger.known(table, last_key, high) if source.has_ledger else {}
            if known:
                present = {k for k, _ in rows}
                ledger.forget(table, [k for k in known if k not in present])  # gone, or skipped
            planned, changed = plan_batch(rows, known, digest_of, full=summary.full)
            summary.changed += changed
            pending.extend(planned)
            while len(pending) >= sender.ceiling:
                chunk, pending = pending[: sender.ceiling], pending[sender.ceiling :]
                send(chunk)
            last_key = high
            progress.advance(len(batch))
        if pending:
            send(pending)
        if source.has_ledger:
            ledger.forget_after(table, last_key)  # rows above the last key are gone from R4


def raise_if_stopped(summary: PassSummary) -> None:
    """For a command handler: a pass that R4 or the backend stopped early, or that left a
    chunk unsent, fails the message (a TransientError: it is retried). Refused chunks do not:
    they were reported, and sending them again would be refused again."""
    error = summary.error or summary.last_failure
    if error is not None:
        raise error
