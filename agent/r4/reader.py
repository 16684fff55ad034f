"""`R4Reader`: the real `RecordSource`. Turns R4 rows into the plain records of agent.records.

Bulk reads page by key (`TOP n ... WHERE key > ? ORDER BY key`), one page at a time, so at
most one page of rows is held; nothing here materialises every patient. Values are checked
and converted (dates, ints, text) but not interpreted: R4's 1900-01-01 "unknown" date of birth
is returned as it is, the mapping layer decides what it means.

A row with a value of an unexpected type or form is skipped by a bulk read (each `iter_*` call
is one pass), counted, and reported once when the pass ends (agent.r4.skipped_rows); the
single-patient reads raise `UnconvertibleValue` instead (they have one row to give).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from agent.r4 import sql
from agent.r4.connection import R4Database, Row
from agent.r4.skipped_rows import (
    LogSkippedRows,
    SkippedRows,
    SkipReporter,
    UnconvertibleValue,
    UndecodableText,
    convert_page,
)
from agent.r4.sql import Statement
from agent.records import (
    Answer,
    Appointment,
    AppointmentFlag,
    Patient,
    PresetAnswerCount,
    QuestionCount,
    Questionnaire,
)

DEFAULT_PAGE_SIZE = 2000


class R4Reader:
    """Read-only view of R4 over an open `R4Database` (implements agent.ports.RecordSource).

    Every method raises TransientError / PermanentError as translated by the connection (a
    missing table or column is a PermanentError). A value of an unexpected type or form (a
    code that is text but no integer) makes the bulk reads skip its row and tell `skips` once
    per pass; `get_patient` and `latest_questionnaire` raise UnconvertibleValue (a
    PermanentError naming the table, column, type and key, never the value).
    """

    def __init__(
        self,
        db: R4Database,
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
        skips: SkipReporter | None = None,
    ) -> None:
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        self._db = db
        self._dialect = db.dialect
        self._page_size = page_size
        self._skips = skips or LogSkippedRows()

    def ping(self) -> None:
        """Raise TransientError (from the connection wrapper) if R4 cannot be reached."""
        self._db.fetch_one(sql.ping(self._dialect))

    # --- patients ----------------------------------------------------------------------------

    def iter_patients(self) -> Iterator[Patient]:
        skipped = SkippedRows("patients", "patientCode")
        try:
            for rows in self._keyset(sql.patients_page, sql.patient_codes_page, skipped):
                yield from convert_page(rows, _patients, _key, skipped)
        finally:  # also when the pass ends early: what it skipped so far
            self._report(skipped)

    def get_patient(self, code: int) -> Patient | None:
        row = self._db.fetch_one(sql.patient_by_code(self._dialect), (code,))
        try:
            return None if row is None else _patients([row])[0]
        except UnconvertibleValue as e:
            failure = e.in_row("patients", code)
        raise failure  # outside the except: one error, naming the row, with no chain

    def latest_questionnaire(self, patient_code: int) -> Questionnaire | None:
        try:
            return self._latest_questionnaire(patient_code)
        except UnconvertibleValue as e:
            failure = e.in_row("CompletedQuestionnaire", patient_code)
        raise failure

    def _latest_questionnaire(self, patient_code: int) -> Questionnaire | None:
        head = self._db.fetch_one(sql.latest_questionnaire(self._dialect), (patient_code,))
        if head is None:
            return None
        qaire_id = _int(head[0], "qaireid")
        answers = tuple(
            Answer(
                question_text=_text(r[0]) or "",
                answer_text=_answer_text(r),
                notes=_text(r[6]),
                typed=r[1] is None and any(v is not None for v in r[2:6]),
            )
            for r in self._db.iter_rows(sql.questionnaire_answers(self._dialect), (qaire_id,))
        )
        return Questionnaire(
            qaire_id=qaire_id,
            patient_code=_int(head[1], "patientCode"),
            completed_at=_datetime(head[2], "CompletedQuestionnaire.datetime"),
            notes=_text(head[3]),
            answers=answers,
        )

    # --- appointments ------------------------------------------------------------------------

    def iter_appointments(self) -> Iterator[Appointment]:
        skipped = SkippedRows("Appts", "ApptId")
        try:
            for rows in self._keyset(sql.appointments_page, sql.appointment_ids_page, skipped):
                yield from convert_page(rows, _appointments, _key, skipped)
        finally:
            self._report(skipped)

    def iter_appointment_flags(self) -> Iterator[AppointmentFlag]:
        skipped = SkippedRows("ApptFlags", "ApptFlag")
        try:
            for r in self._db.iter_rows(sql.appointment_flags(self._dialect)):
                yield from convert_page([r], _appointment_flags, _key, skipped)
        finally:
            self._report(skipped)

    def _report(self, skipped: SkippedRows) -> None:
        if skipped.count:
            self._skips.rows_skipped(skipped)

    # --- aggregate counts (no answer content) ------------------------------------------------

    def question_counts(self) -> list[QuestionCount]:
        """One entry per distinct question text (several questions may share one), in the
        order of their first question id."""
        rows = self._db.fetch_all(sql.question_counts(self._dialect))
        return [QuestionCount(text, count) for text, count in _sum_by_text(rows)]

    def preset_answer_counts(self) -> list[PresetAnswerCount]:
        """One entry per distinct pre-set answer text ("Yes" belongs to many questions)."""
        rows = self._db.fetch_all(sql.preset_answer_counts(self._dialect))
        return [PresetAnswerCount(text, count) for text, count in _sum_by_text(rows)]

    # --- keyset paging -----------------------------------------------------------------------

    def _keyset(
        self,
        page: Callable[..., Statement],
        page_keys: Callable[..., Statement],
        skipped: SkippedRows,
    ) -> Iterator[list[Row]]:
        """Successive pages of rows (one page held at a time); the key is each row's first
        column, strictly increasing. `page_keys` gives the keys of the same page alone, for a
        page with a text the driver cannot decode (its rows are then counted in `skipped`).

        R4 is written while we read: a row inserted below the last key waits for the next
        pass, a deleted one is simply not there; a row that exists throughout is read once,
        as each page starts after the previous page's last key."""
        last: object = None
        while True:
            first = last is None
            statement = page(self._dialect, self._page_size, first=first)
            params: tuple[object, ...] = () if first else (last,)
            # The page is fetched whole before yielding: the connection is then free for the
            # caller's own queries while it consumes the page (SQL Server has no MARS by default).
            try:
                rows = self._db.fetch_all(statement, params)
                more = len(rows) == self._page_size
                if rows:
                    last = rows[-1][0]
            except UndecodableText as e:
                keys = page_keys(self._dialect, self._page_size, first=first)
                rows, more, end = self._decodable_page(statement, keys, params, skipped, e.codec)
                last = end if end is not None else last
            yield rows
            if not more:
                return

    def _decodable_page(
        self,
        statement: Statement,
        keys_statement: Statement,
        params: tuple[object, ...],
        skipped: SkippedRows,
        codec: str,
    ) -> tuple[list[Row], bool, object]:
        """The rows of a page that decode, whether more pages follow, and the key the next page
        starts after. The rows read one at a time first, then the page's keys: a key absent
        from the rows (and not beyond them, when rows were inserted meanwhile) is a row that
        did not decode."""
        rows, failed = self._db.fetch_decodable(statement, params, limit=self._page_size)
        keys = [k for (k, *_) in self._db.fetch_all(keys_statement, params)]
        more = len(rows) + failed == self._page_size
        if not keys:  # nothing past the last key any more (deleted meanwhile): the end
            return rows, False, rows[-1][0] if rows else None
        end = min(rows[-1][0], keys[-1]) if more and rows else keys[-1]
        read = {r[0] for r in rows}
        bad = UnconvertibleValue("(a text column)", f"text not valid {codec}")
        for key in keys:
            if key not in read and key <= end:
                skipped.add(bad, _key_value(key))
        return rows, more, end


# --- conversions: type errors name the column, never the value --------------------------------
#
# Bulk reads convert a page column by column: when every value of a column already has the
# type the record wants (the usual case: one C-speed type check per column and page), the
# column is used as it is; otherwise each value goes through the checking converter below.

_NONE = type(None)
_TEXT_TYPES = frozenset({str, _NONE})
_DATETIME_TYPES = frozenset({datetime, _NONE})


def _types(column: Sequence[object]) -> set[type]:
    return set(map(type, column))


def _texts(column: Sequence[object]) -> Sequence[str | None]:
    if _types(column) <= _TEXT_TYPES:
        return column  # type: ignore[return-value]  # checked just above
    return [_text(v) for v in column]


def _ints(column: Sequence[object], name: str, *, optional: bool = False) -> Sequence[Any]:
    if _types(column) <= ({int, _NONE} if optional else {int}):
        return column
    if optional:
        return [_opt_int(v, name) for v in column]
    return [_int(v, name) for v in column]


def _datetimes(column: Sequence[object], name: str) -> Sequence[datetime | None]:
    if _types(column) <= _DATETIME_TYPES:
        return column  # type: ignore[return-value]  # checked just above
    return [_datetime(v, name) for v in column]


def _dates(column: Sequence[object], name: str) -> Sequence[date | None]:
    types = _types(column)
    if types <= _DATETIME_TYPES:  # what drivers return for datetime columns
        return [None if v is None else v.date() for v in column]  # type: ignore[attr-defined]
    if types <= {date, _NONE}:
        return column  # type: ignore[return-value]  # checked just above
    return [_date(v, name) for v in column]


def _patients(rows: Sequence[Row]) -> list[Patient]:
    """A page of `sql.patients_page` rows, or the one row of `sql.patient_by_code` (columns in
    Patient's field order), as Patients."""
    if not rows:
        return []
    code, forename, surname, dob, *contact = zip(*rows, strict=True)
    return list(
        map(
            Patient,
            _ints(code, "patientCode"),
            _texts(forename),
            _texts(surname),
            _dates(dob, "dob"),
            *(_texts(c) for c in contact),  # mobile, email, address1..address5, postcode
        )
    )


def _appointments(rows: Sequence[Row]) -> list[Appointment]:
    """A page of `sql.appointments_page` rows (columns in Appointment's field order)."""
    if not rows:
        return []
    ids, patients, starts, flags, statuses = zip(*rows, strict=True)
    return list(
        map(
            Appointment,
            _ints(ids, "ApptId"),
            _ints(patients, "PatientCode", optional=True),  # NULL: an appointment, no patient
            _datetimes(starts, "ApptDateTime"),
            _ints(flags, "ApptFlag", optional=True),
            _texts(statuses),
        )
    )


def _appointment_flags(rows: Sequence[Row]) -> list[AppointmentFlag]:
    """Rows of `sql.appointment_flags` as AppointmentFlags."""
    return [
        AppointmentFlag(
            flag=_int(r[0], "ApptFlag"),
            description=_text(r[1]),
            character=_text(r[2]),
            cancelled=_bool(r[3]),
        )
        for r in rows
    ]


def _key(row: Row) -> int | None:
    """The row's key (its first column) to name a skipped row by."""
    return _key_value(row[0])


def _key_value(value: object) -> int | None:
    """None when the key itself is what does not convert: then it is the value, and values
    are never reported."""
    try:
        return _int(value, "key")
    except UnconvertibleValue:
        return None


def _sum_by_text(rows: list[Row]) -> list[tuple[str, int]]:
    """(text, count) rows summed per exact text, first-seen order. Done here rather than by a
    GROUP BY in SQL: R4's `text` columns cannot be grouped, and SQL Server's case- and
    trailing-space-insensitive collation would group differently from the SQLite stand-in."""
    totals: dict[str, int] = {}
    for text, count in rows:
        key = _text(text) or ""
        totals[key] = totals.get(key, 0) + _int(count, "count")
    return list(totals.items())


def _answer_text(r: Row) -> str | None:
    """The pre-set text, else the first non-NULL typed answer (columns 1-5 of
    `sql.questionnaire_answers`), numbers and dates as exact text."""
    if r[1] is not None:
        return _text(r[1])
    if r[2] is not None:
        return _text(r[2])
    if r[3] is not None:
        return _number_text(r[3], "NumberAnswer")
    if r[4] is not None:
        day = _date(r[4], "DateAnswer")
        return None if day is None else day.isoformat()
    if r[5] is not None:
        return _money_text(r[5], "CurrencyAnswer")
    return None


def _decimal(value: object, column: str) -> Decimal:
    """A number as the exact Decimal it holds; a float as its shortest round-trip form."""
    if isinstance(value, bool):
        raise _bad(column, value)
    if isinstance(value, int | Decimal):
        number = Decimal(value)
    elif isinstance(value, float):
        number = Decimal(repr(value))
    elif isinstance(value, str):  # SQLite may hand back a numeric column as text
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            raise _bad(column, value) from None
    else:
        raise _bad(column, value)
    if not number.is_finite():
        raise _bad(column, value)
    return number


def _number_text(value: object, column: str) -> str:
    """72.5 -> "72.5", 80.0 -> "80", 1234567.891 -> "1234567.891": no exponent, no padding."""
    text = format(_decimal(value, column), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _money_text(value: object, column: str) -> str:
    """At least two decimals, as money is written: 12.5 -> "12.50", 12.3456 -> "12.3456"."""
    whole, _, fraction = _number_text(value, column).partition(".")
    return f"{whole}.{fraction.ljust(2, '0')}"


def _bad(column: str, value: object) -> UnconvertibleValue:
    return UnconvertibleValue(column, type(value).__name__)


_INT_TEXT = re.compile(r"\s*-?[0-9]{1,19}\s*", re.ASCII)  # SQLite may hand back text


def _int(value: object, column: str) -> int:
    """Every failure is an UnconvertibleValue naming the column and the type, never the value
    (int() and float conversions put the value in their own error text)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, Decimal | float):
        try:
            whole = int(value)  # ValueError for NaN, OverflowError for inf
            if whole == value:  # not 1.5 (InvalidOperation for a signalling NaN)
                return whole
        except (ValueError, OverflowError, ArithmeticError):
            pass
        raise _bad(column, value)
    if isinstance(value, str) and _INT_TEXT.fullmatch(value):  # not "²", "--5", "1_000"
        return int(value)
    raise _bad(column, value)


def _opt_int(value: object, column: str) -> int | None:
    return None if value is None else _int(value, column)


def _text(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return str(value)


def _bool(value: object) -> bool:
    if isinstance(value, str):
        return value.strip() not in ("", "0")
    return bool(value)


def _datetime(value: object, column: str) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.strip())
        except ValueError:
            raise _bad(column, value) from None
    raise _bad(column, value)


def _date(value: object, column: str) -> date | None:
    moment = _datetime(value, column)
    return None if moment is None else moment.date()
