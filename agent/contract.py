"""The Flynotes backend's wire contract, as a pure mapping from `agent.records` to bodies.

No I/O and no HTTP here: `agent.flynotes.client` sends what these functions build. The
stand-in (`agent.standin.backend`) checks it against its own copy of the issue's header lines
and key sets, not these constants, so a renamed or reordered field here fails the tests.

By default every value is the one the ORIGINAL agent sent (docs/backend-contract.md, "The
original's semantics"): the backend has parsed that for years. Each difference that would
change a stored value is a `WireSettings` field, off by default, set from `[contract]`:

- times: R4's naive wall clock labelled UTC with milliseconds (`…T10:30:00.000Z` for a
  10:30 BST appointment), or `times = "utc"`: converted Europe/London -> UTC, whole seconds.
- dateOfBirth: `YYYY-MM-DD` as R4 has it, 1900-01-01 included, or `unknown_dob = "missing"`.
- blank text: NULL is missing (JSON null, empty CSV field); a blank mobile or email is missing;
  any other blank text is an empty string (`""`), or `blank_text = "missing"`.
- answerText: the pre-set answer's text only (a typed, number, date or money answer goes out
  as null), or `typed_answers = "send"`: the typed answer where there is no pre-set one.
  Text is stripped of surrounding whitespace either way (R4 has fixed-width char columns).
- `city`: address3 and address4 joined by ", " when both are set, else whichever is set (the
  original's `a3 || a4`, which Python's `or` matches for str/None). `county` = address5,
  `country` is always "UK".
- JSON types as the original's: strings or null, `patient.id` the code as a string.

CSV bodies are written in the original's byte form (json2csv 4.5.4 under Windows): a quoted
header, every string quoted (`""` for an empty one), numbers and booleans bare, an empty field
for a missing value, CRLF between lines and none after the last.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo

from agent.records import Answer, Appointment, AppointmentFlag, Patient, Questionnaire

PATIENT_FIELDS: Final[tuple[str, ...]] = (
    "id",
    "familyName",
    "givenName",
    "dateOfBirth",
    "mobileNumber",
    "emailAddress",
    "addressLine1",
    "addressLine2",
    "city",
    "county",
    "postcode",
    "country",
)
APPOINTMENT_FIELDS: Final[tuple[str, ...]] = (
    "apptId",
    "patientCode",
    "apptDateTime",
    "statusCode",
    "status",
)
APPOINTMENT_STATUS_FIELDS: Final[tuple[str, ...]] = (
    "apptFlag",
    "cancelled",
    "character",
    "description",
)
QUESTIONNAIRE_FIELDS: Final[tuple[str, ...]] = ("submissionTime", "notes", "responses")
RESPONSE_FIELDS: Final[tuple[str, ...]] = ("questionText", "answerText", "answerNotes")
PATIENT_SYNC_FIELDS: Final[tuple[str, ...]] = ("patient", "questionnaire", "patientPatchId")

COUNTRY: Final = "UK"
UNKNOWN_DOB: Final = date(1900, 1, 1)  # R4's "no date of birth" placeholder
PRACTICE_TZ: Final = ZoneInfo("Europe/London")

# Content types as sent; the media type is what the backend matches on.
CSV_CONTENT_TYPE: Final = "text/csv; charset=utf-8"
JSON_CONTENT_TYPE: Final = "application/json"

# One CSV row in header order: str is written quoted, int and bool bare, None as an empty field.
Cell = str | int | bool | None
Values = tuple[Cell, ...]
JsonObject = dict[str, Any]


@dataclass(frozen=True, slots=True)
class CsvTable:
    """One bulk upload: what `r4agent status` calls it, the endpoint, the header."""

    name: str
    endpoint: str
    header: tuple[str, ...]


PATIENTS: Final = CsvTable("patients", "patient-upload", PATIENT_FIELDS)
APPOINTMENTS: Final = CsvTable("appointments", "appointment-upload", APPOINTMENT_FIELDS)
APPOINTMENT_STATUSES: Final = CsvTable(
    "appointment statuses", "appointment-status-upload", APPOINTMENT_STATUS_FIELDS
)


@dataclass(frozen=True, slots=True)
class WireSettings:
    """The `[contract]` settings (docs/config.md). The defaults are the original's values."""

    times: Literal["wall-clock", "utc"] = "wall-clock"
    unknown_dob: Literal["as-r4", "missing"] = "as-r4"
    blank_text: Literal["as-r4", "missing"] = "as-r4"
    typed_answers: Literal["omit", "send"] = "omit"


ORIGINAL: Final = WireSettings()
# Everything switched on: what this agent sent before issue 10 (kept for when the backend opts in).
IMPROVED: Final = WireSettings(
    times="utc", unknown_dob="missing", blank_text="missing", typed_answers="send"
)


def local_to_utc_iso(moment: datetime | None) -> str | None:
    """R4's naive local UK time -> ISO 8601 UTC with `Z`, whole seconds (`times = "utc"`).

    An ambiguous local time (the autumn hour that happens twice) is its first occurrence
    (BST); a time in the skipped spring hour (01:00-02:00) is read as GMT."""
    if moment is None:
        return None
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=PRACTICE_TZ)
    return aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def wall_clock_iso(moment: datetime | None) -> str | None:
    """R4's naive wall clock labelled UTC, milliseconds included: what the original sent (its
    SQL Server driver read DATETIME as if it were UTC). Equal to real UTC only in winter."""
    if moment is None:
        return None
    if moment.tzinfo is not None:  # not from R4; shown as the practice's wall clock
        moment = moment.astimezone(PRACTICE_TZ).replace(tzinfo=None)
    return moment.isoformat(timespec="milliseconds") + "Z"


def skips_patient(patient: Patient) -> bool:
    """The bulk upload leaves out a patient without a surname or forename, as the original did
    (patient-sync sends them all)."""
    return not (patient.surname or "").strip() or not (patient.forename or "").strip()


class Wire:
    """The mapping under one `WireSettings`. Methods are hot (100,000 patients per full pass),
    so each setting is decided once here, not per value."""

    def __init__(self, settings: WireSettings = ORIGINAL) -> None:
        self.settings = settings
        self._time = local_to_utc_iso if settings.times == "utc" else wall_clock_iso
        self._dob_missing = settings.unknown_dob == "missing"
        self._blank_missing = settings.blank_text == "missing"
        self._send_typed = settings.typed_answers == "send"

    def _text(self, value: str | None) -> str | None:
        if value is None:
            return None
        stripped = value.strip()
        return None if self._blank_missing and not stripped else stripped

    def date_of_birth(self, dob: date | None) -> str | None:
        if dob is None or (self._dob_missing and dob == UNKNOWN_DOB):
            return None
        return dob.isoformat()

    def time(self, moment: datetime | None) -> str | None:
        return self._time(moment)

    def patient_values(self, patient: Patient) -> Values:
        """The twelve patient fields in PATIENT_FIELDS order."""
        p, text = patient, self._text
        address3, address4 = text(p.address3), text(p.address4)
        return (
            str(p.code),
            text(p.surname),
            text(p.forename),
            self.date_of_birth(p.dob),
            (p.mobile or "").strip() or None,  # the original's `|| null`, whatever the setting
            (p.email or "").strip() or None,
            text(p.address1),
            text(p.address2),
            f"{address3}, {address4}" if address3 and address4 else address3 or address4,
            text(p.address5),
            text(p.postcode),
            COUNTRY,
        )

    def appointment_values(self, appt: Appointment) -> Values:
        # patientCode and statusCode are numbers in the original's CSV (bare), apptId a string
        return (
            str(appt.appt_id),
            appt.patient_code,
            self._time(appt.starts_at),
            appt.flag,
            self._text(appt.status),
        )

    def appointment_status_values(self, flag: AppointmentFlag) -> Values:
        return (flag.flag, flag.cancelled, self._text(flag.character), self._text(flag.description))

    def patient_fields(self, patient: Patient) -> dict[str, Cell]:
        """The patient object of the patient-sync body: the CSV values, all strings or null."""
        return dict(zip(PATIENT_FIELDS, self.patient_values(patient), strict=True))

    def response_item(self, answer: Answer) -> JsonObject:
        return {
            "questionText": self._text(answer.question_text),
            "answerText": (
                None if answer.typed and not self._send_typed else self._text(answer.answer_text)
            ),
            "answerNotes": self._text(answer.notes),
        }

    def questionnaire_body(self, questionnaire: Questionnaire) -> JsonObject:
        return {
            "submissionTime": self._time(questionnaire.completed_at),
            "notes": self._text(questionnaire.notes),
            "responses": [self.response_item(a) for a in questionnaire.answers],
        }

    def patient_sync_body(
        self, patient: Patient, questionnaire: Questionnaire | None, patient_patch_id: str
    ) -> JsonObject:
        return {
            "patient": self.patient_fields(patient),
            "questionnaire": (
                None if questionnaire is None else self.questionnaire_body(questionnaire)
            ),
            "patientPatchId": patient_patch_id,
        }


def as_row(header: Sequence[str], values: Values) -> dict[str, Cell]:
    """A row as a dict (tests and diagnostics)."""
    return dict(zip(header, values, strict=True))


# --- CSV bytes -------------------------------------------------------------------------------


class _Bare:
    """A cell csv's QUOTE_NONNUMERIC leaves unquoted (it looks numeric: `__float__`), written as
    its text. Python 3.11's csv has no QUOTE_STRINGS/QUOTE_NOTNULL, and writes None as `""`."""

    __slots__ = ("_text",)

    def __init__(self, text: str) -> None:
        self._text = text

    def __float__(self) -> float:
        return 0.0

    def __str__(self) -> str:
        return self._text


_EMPTY: Final = _Bare("")
_TRUE: Final = _Bare("true")
_FALSE: Final = _Bare("false")


def _cells(values: Values) -> list[object]:
    # identity tests: 1 == True, so a dict lookup would turn the number 1 into `true`
    return [
        _EMPTY if v is None else _TRUE if v is True else _FALSE if v is False else v for v in values
    ]


def encode_csv(header: Sequence[str], rows: Iterable[Values]) -> bytes:
    """The original's CSV bytes: quoted header, strings quoted, numbers and booleans bare,
    missing values empty, CRLF between lines, no line end after the last one. UTF-8."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(map(_cells, rows))
    return buffer.getvalue()[:-2].encode("utf-8")
