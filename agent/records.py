"""Plain records read from R4. No I/O here; the R4 reader yields these and nothing else.

Every field that can hold patient data is personal data: never log it, never put it in an
exception message. Log `code` (the R4 patientCode) when a patient must be identified.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import NamedTuple

# Patient and Appointment, the records a full upload streams by the 100,000, are NamedTuples:
# as immutable as a frozen dataclass, but built about 8x faster (a frozen dataclass sets each
# field through object.__setattr__), which was a sixth of a full upload's time. The others are
# frozen dataclasses.


class Patient(NamedTuple):
    code: int
    forename: str | None
    surname: str | None
    dob: date | None
    mobile: str | None
    email: str | None
    address1: str | None = None
    address2: str | None = None
    address3: str | None = None
    address4: str | None = None
    address5: str | None = None
    postcode: str | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    question_text: str
    answer_text: str | None  # the pre-set answer's text, else the typed/number/date answer
    notes: str | None
    typed: bool = False  # answer_text is a typed answer (no pre-set one): see [contract]


@dataclass(frozen=True, slots=True)
class Questionnaire:
    qaire_id: int
    patient_code: int
    completed_at: datetime | None  # as R4 stores it: local practice time, naive
    notes: str | None
    answers: tuple[Answer, ...]


class Appointment(NamedTuple):
    appt_id: int
    patient_code: int | None  # NULL in R4 for ~1.7% of a real practice's appointments
    starts_at: datetime | None
    flag: int | None
    status: str | None  # ApptFlags.Description; None when the flag is unknown


@dataclass(frozen=True, slots=True)
class AppointmentFlag:
    flag: int
    description: str | None
    character: str | None
    cancelled: bool


@dataclass(frozen=True, slots=True)
class QuestionCount:
    """A questionnaire question and how many answers it has (no answer content)."""

    question_text: str
    answer_count: int


@dataclass(frozen=True, slots=True)
class PresetAnswerCount:
    """A PRE-SET answer (QuestionMultiAnswer.Text) and how often it was chosen."""

    answer_text: str
    count: int
