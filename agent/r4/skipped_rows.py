"""Rows of R4 that cannot be converted: the error that says so, and the once-per-pass report.

R4 is a live practice database; a row whose value has an unexpected type or form (a code that
is text, a date that is no date) is the row's fault, not R4's nor the agent's. A bulk pass
skips such a row, counts it, and reports the pass's skipped rows ONCE when the pass ends:
table, column, the value's type and the row's key (a patient code or an appointment id, never
patient data), never the value. Only a missing table or column fails a pass (that is the
driver's error, raised as it is).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from agent.errors import R4DataError
from agent.ports import ErrorSink

log = logging.getLogger(__name__)

R = TypeVar("R")  # a row
T = TypeVar("T")  # a record

KEYS_KEPT = 20  # keys named per (column, type) in one report; the count covers every row


class UnconvertibleValue(R4DataError):
    """A value R4 returned has an unexpected type or form: the row is at fault (a message that
    asked for that row is dead-lettered). The message names the column, the value's type and
    (once known) the table and the row's key, never the value."""

    def __init__(
        self, column: str, type_name: str, *, table: str | None = None, key: int | None = None
    ) -> None:
        self.column = column
        self.type_name = type_name
        self.table = table
        self.key = key
        where = "" if table is None else f" ({table}, key {'unknown' if key is None else key})"
        super().__init__(
            f"R4 column {column} holds a value of an unexpected type or form ({type_name}){where}"
        )

    def in_row(self, table: str, key: int | None) -> UnconvertibleValue:
        return UnconvertibleValue(self.column, self.type_name, table=table, key=key)


class UndecodableText(R4DataError):
    """The driver could not decode a text value of a fetched row (its bytes are not valid in
    `codec`). The message names the action, target and codec, never the bytes."""

    def __init__(self, message: str, codec: str) -> None:
        super().__init__(message)
        self.codec = codec


@dataclass(slots=True)
class _Problem:
    rows: int = 0
    keys: list[int | None] = field(default_factory=list)


@dataclass(slots=True)
class SkippedRows:
    """The rows one pass over `table` skipped, by (column, type). `key_column` names the key."""

    table: str
    key_column: str
    problems: dict[tuple[str, str], _Problem] = field(default_factory=dict)

    def add(self, error: UnconvertibleValue, key: int | None) -> None:
        problem = self.problems.setdefault((error.column, error.type_name), _Problem())
        problem.rows += 1
        if len(problem.keys) < KEYS_KEPT:
            problem.keys.append(key)

    @property
    def count(self) -> int:
        return sum(p.rows for p in self.problems.values())

    def describe(self) -> str:
        """One line: `R4 Appts: 2 rows skipped ... ApptDateTime (str) in 2 rows, ApptId 7, 9`."""
        parts = []
        for (column, type_name), p in self.problems.items():
            keys = ", ".join("unknown" if k is None else str(k) for k in p.keys)
            more = ", ..." if p.rows > len(p.keys) else ""
            where = f"{self.key_column} {keys}{more}"
            parts.append(f"{column} ({type_name}) in {_rows(p.rows)}, {where}")
        return (
            f"R4 {self.table}: {_rows(self.count)} skipped, their values could not be converted: "
            + "; ".join(parts)
        )

    def as_extra(self) -> dict[str, object]:
        """The report's fields for the error service: names, type names, counts and keys."""
        return {
            "table": self.table,
            "skipped": self.count,
            "problems": [
                {"column": c, "type": t, "rows": p.rows, self.key_column: list(p.keys)}
                for (c, t), p in self.problems.items()
            ],
        }


def _rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


class SkipReporter(Protocol):
    """Told once at the end of each pass that skipped rows (never for a clean pass)."""

    def rows_skipped(self, skipped: SkippedRows) -> None: ...


class LogSkippedRows:
    """The real reporter: one warning in the log and, given an error sink, one message to it.
    Never raises (a reporter must not end the pass it reports on)."""

    def __init__(self, errors: ErrorSink | None = None) -> None:
        self._errors = errors

    def rows_skipped(self, skipped: SkippedRows) -> None:
        with contextlib.suppress(Exception):
            log.warning("%s", skipped.describe())
        if self._errors is not None:
            with contextlib.suppress(Exception):
                self._errors.report_message(
                    f"R4 rows skipped in {skipped.table}", level="warning", extra=skipped.as_extra()
                )


def convert_page(
    rows: list[R],
    convert: Callable[[list[R]], list[T]],
    key_of: Callable[[R], int | None],
    skipped: SkippedRows,
) -> list[T]:
    """`convert(rows)`, the whole page at once (the fast, usual path); if a value in it does not
    convert, row by row, leaving out (and counting in `skipped`) each row that does not."""
    try:
        return convert(rows)
    except UnconvertibleValue:
        pass
    records: list[T] = []
    for row in rows:
        try:
            records.extend(convert([row]))
        except UnconvertibleValue as e:
            skipped.add(e, key_of(row))
    return records
