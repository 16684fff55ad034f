"""One chunk of rows to the backend: at most `rows_per_request` rows per POST, each POST with
its own retries (the client's retry policy). HTTP 413 halves the part and tries again, down to
one row; another 4xx refuses that part for good (reported once: status, key range, row count,
never a value); a transient failure (5xx, timeouts, after the client's retries) leaves the
part for the next pass. The caller commits digests of `sent` only."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from agent.contract import CsvTable, Values
from agent.errors import BackendRefusedError, TransientError
from agent.flynotes.client import BackendForbiddenError, PayloadTooLargeError
from agent.ports import Backend, ErrorSink

log = logging.getLogger(__name__)


class PlannedRow(NamedTuple):
    key: int  # patient code / appointment id: not patient data, safe to log
    values: Values
    digest: bytes


@dataclass(slots=True)
class ChunkResult:
    sent: list[PlannedRow] = field(default_factory=list)
    refused: list[PlannedRow] = field(default_factory=list)
    failed: list[PlannedRow] = field(default_factory=list)
    requests: int = 0
    transient: TransientError | None = None  # why `failed` rows were not sent


class ChunkSender:
    """Sends chunks of one table's pass. `ceiling` drops after a 413 so the rest of the pass
    does not hit the same limit again."""

    def __init__(
        self, backend: Backend, table: CsvTable, errors: ErrorSink, *, rows_per_request: int
    ) -> None:
        self._backend = backend
        self._table = table
        self._errors = errors
        self.ceiling = rows_per_request

    def send(self, rows: Sequence[PlannedRow]) -> ChunkResult:
        result = ChunkResult()
        parts = [list(rows[i : i + self.ceiling]) for i in range(0, len(rows), self.ceiling)]
        while parts:
            part = parts.pop(0)
            if result.transient is not None:  # the backend is failing: do not hammer it
                result.failed.extend(part)
                continue
            if len(part) > self.ceiling:  # a 413 lowered it since this part was cut
                parts[0:0] = [part[i : i + self.ceiling] for i in range(0, len(part), self.ceiling)]
                continue
            result.requests += 1
            try:
                self._backend.upload_rows(self._table, [r.values for r in part])
            except PayloadTooLargeError as e:
                if len(part) == 1:
                    self._refuse(part, e, result)
                    continue
                half = (len(part) + 1) // 2
                self.ceiling = min(self.ceiling, half)
                log.info(
                    "%s: HTTP 413 for %d rows: halving to %d", self._table.name, len(part), half
                )
                parts[0:0] = [part[:half], part[half:]]
            except BackendForbiddenError:
                raise  # "check the licence": the caller re-asks /data before anything else
            except BackendRefusedError as e:
                self._refuse(part, e, result)
            except TransientError as e:
                result.transient = e
                result.failed.extend(part)
            else:
                result.sent.extend(part)
        return result

    def _refuse(
        self, part: list[PlannedRow], error: BackendRefusedError, result: ChunkResult
    ) -> None:
        result.refused.extend(part)
        first, last = part[0].key, part[-1].key
        log.warning(
            "%s: the backend refused %d rows (keys %d-%d) with HTTP %d: not sent this pass",
            self._table.name,
            len(part),
            first,
            last,
            error.status,
        )
        self._errors.report_message(
            f"{self._table.name} upload: chunk refused (HTTP {error.status})",
            level="error",
            extra={
                "table": self._table.name,
                "status": error.status,
                "first_key": first,
                "last_key": last,
                "rows": len(part),
            },
        )
