"""`R4Reader`: the real `RecordSource`. Turns R4 rows into the plain records of agent.records.

Bulk reads page by key (`TOP n ... WHERE key > ? ORDER BY key`), one page at a time, so at
most one page of rows is held; nothing here materialises every patient. Values are checked
and converted (dates, ints, text) but not interpreted: R4's 1900-01-01 "unknown" date of birth
is returned as it is, the mapping layer decides what it means.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import date, datetime
from decimal import Decimal

from agent.errors import PermanentError
from agent.r4 import sql
from agent.r4.connection import R4Database, Row
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

    Every method raises TransientError / PermanentError as translated by the connection, and
    PermanentError naming the column when R4 returns a value of an unexpected type.
    """

    def __init__(self, db: R4Database, *, page_size: int = DEFAULT_PAGE_SIZE) -> None:
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        self._db = db
        self._dialect = db.dialect
        self._page_size = page_size

    def ping(self) -> None:
        """Raise TransientError (from the connection wrapper) if R4 cannot be reached."""
        self._db.fetch_one(sql.ping(self._dialect))

    # --- patients ----------------------------------------------------------------------------

    def iter_patients(self) -> Iterator[Patient]:
        for row in self._keyset(sql.patients_page):
            yield _patient(row)

    def get_patient(self, code: int) -> Patient | None:
        row = self._db.fetch_one(sql.patient_by_code(self._dialect), (code,))
        return None if row is None else _patient(row)

    def latest_questionnaire(self, patient_code: int) -> Questionnaire | None:
        head = self._db.fetch_one(sql.latest_questionnaire(self._dialect), (patient_code,))
        if head is None:
            return None
        qaire_id = _int(head[0], "qaireid")
        answers = tuple(
            Answer(
                question_text=_text(r[0]) or "",
                answer_text=_text(r[1]),
                notes=_text(r[2]),
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
        for r in self._keyset(sql.appointments_page):
            yield Appointment(
                appt_id=_int(r[0], "ApptId"),
                patient_code=_int(r[1], "PatientCode"),
                starts_at=_datetime(r[2], "ApptDateTime"),
                flag=_opt_int(r[3], "ApptFlag"),
                status=_text(r[4]),
            )

    def iter_appointment_flags(self) -> Iterator[AppointmentFlag]:
        for r in self._db.iter_rows(sql.appointment_flags(self._dialect)):
            yield AppointmentFlag(
                flag=_int(r[0], "ApptFlag"),
                description=_text(r[1]),
                character=_text(r[2]),
                cancelled=_bool(r[3]),
            )

    # --- aggregate counts (no answer content) ------------------------------------------------

    def question_counts(self) -> list[QuestionCount]:
        return [
            QuestionCount(question_text=_text(r[0]) or "", answer_count=_int(r[1], "count"))
            for r in self._db.fetch_all(sql.question_counts(self._dialect))
        ]

    def preset_answer_counts(self) -> list[PresetAnswerCount]:
        return [
            PresetAnswerCount(answer_text=_text(r[0]) or "", count=_int(r[1], "count"))
            for r in self._db.fetch_all(sql.preset_answer_counts(self._dialect))
        ]

    # --- keyset paging -----------------------------------------------------------------------

    def _keyset(self, page: Callable[..., Statement]) -> Iterator[Row]:
        """Rows of successive pages (one page held at a time); the key is each row's first
        column, strictly increasing."""
        last: object = None
        while True:
            if last is None:
                statement = page(self._dialect, self._page_size, first=True)
                params: tuple[object, ...] = ()
            else:
                statement = page(self._dialect, self._page_size, first=False)
                params = (last,)
            # The page is fetched whole before yielding: the connection is then free for the
            # caller's own queries while it consumes the page (SQL Server has no MARS by default).
            rows = self._db.fetch_all(statement, params)
            if rows:
                last = rows[-1][0]
            yield from rows
            if len(rows) < self._page_size:
                return


# --- conversions: type errors name the column, never the value --------------------------------


def _patient(r: Row) -> Patient:
    return Patient(
        code=_int(r[0], "patientCode"),
        forename=_text(r[1]),
        surname=_text(r[2]),
        dob=_date(r[3], "dob"),
        mobile=_text(r[4]),
        email=_text(r[5]),
        address1=_text(r[6]),
        address2=_text(r[7]),
        address3=_text(r[8]),
        address4=_text(r[9]),
        address5=_text(r[10]),
        postcode=_text(r[11]),
    )


def _bad(column: str, value: object) -> PermanentError:
    return PermanentError(f"R4 column {column} has an unexpected type {type(value).__name__}")


def _int(value: object, column: str) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, Decimal | float) and value == int(value):
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
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
