"""The Flynotes backend's wire contract, as a pure mapping from `agent.records` to bodies.

No I/O and no HTTP here: `agent.flynotes.client` sends what these functions build. The
stand-in (`agent.standin.backend`) checks it against its own copy of the issue's header lines
and key sets, not these constants, so a renamed or reordered field here fails the tests.
Decisions the contract leaves open (see docs/backend-contract.md):

- Missing values: an empty field in CSV, JSON `null` in the patient-sync body.
- Text is stripped of surrounding whitespace (R4 has fixed-width char columns); a value that
  is empty after stripping counts as missing.
- `dateOfBirth`: ISO date (YYYY-MM-DD). R4 uses 1900-01-01 for "unknown": that sentinel is
  sent as missing, never as a date (Flynotes would show a 126-year-old patient). Other dates,
  future ones included, are sent as R4 has them.
- `city`: address3 and address4 joined by ", " when both are set, else whichever is set.
  `county` = address5. `country` is always "UK" (every R4 practice is in the UK).
- Times: R4 stores naive local UK time. `submissionTime` and `apptDateTime` are converted
  Europe/London -> UTC and written ISO 8601 with a `Z` (whole seconds). An ambiguous local time
  (the autumn hour that happens twice) is read as the first occurrence (BST); a time in the
  skipped spring hour (01:00-02:00, never on a real clock) is read as GMT.
- JSON `patient.id` is the R4 patient code as a string, like the CSV `id` column.
- Booleans in CSV (`cancelled`) are `true` / `false`.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime
from typing import Any, Final, Protocol
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
UNKNOWN_DOB: Final = date(1900, 1, 1)  # R4's "no date of birth" sentinel
PRACTICE_TZ: Final = ZoneInfo("Europe/London")

# Content types as sent; the media type is what the backend matches on.
CSV_CONTENT_TYPE: Final = "text/csv; charset=utf-8"
JSON_CONTENT_TYPE: Final = "application/json"

Row = dict[str, str]
CsvValues = tuple[str, ...]  # one CSV row, in header order
JsonObject = dict[str, Any]


def _text(value: str | None) -> str:
    """Stripped text; "" when missing or blank (the CSV spelling of a missing value)."""
    return "" if value is None else value.strip()


def date_of_birth(dob: date | None) -> str:
    """ISO date, or "" when R4 does not know it (NULL or the 1900-01-01 sentinel)."""
    if dob is None or dob == UNKNOWN_DOB:
        return ""
    return dob.isoformat()


def local_to_utc_iso(moment: datetime | None) -> str:
    """R4's naive local UK time -> ISO 8601 UTC with `Z` ("" when missing). Aware values are
    converted as they are."""
    if moment is None:
        return ""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=PRACTICE_TZ)
    return aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# The CSV values are the one mapping; JSON is the same values with "" spelled null. Tuples,
# not dicts: the full upload maps 100,000 patients and csv.writer takes sequences directly.


def patient_values(patient: Patient) -> CsvValues:
    """The twelve patient fields in PATIENT_FIELDS order; "" where R4 has no value."""
    # `(x or "").strip()` is `_text` inlined: this runs 100,000 times per full upload.
    p = patient
    address3, address4 = (p.address3 or "").strip(), (p.address4 or "").strip()
    return (
        str(p.code),
        (p.surname or "").strip(),
        (p.forename or "").strip(),
        date_of_birth(p.dob),
        (p.mobile or "").strip(),
        (p.email or "").strip(),
        (p.address1 or "").strip(),
        (p.address2 or "").strip(),
        f"{address3}, {address4}" if address3 and address4 else address3 or address4,
        (p.address5 or "").strip(),
        (p.postcode or "").strip(),
        COUNTRY,
    )


def appointment_values(appt: Appointment) -> CsvValues:
    return (
        str(appt.appt_id),
        "" if appt.patient_code is None else str(appt.patient_code),  # as the original
        local_to_utc_iso(appt.starts_at),
        "" if appt.flag is None else str(appt.flag),
        _text(appt.status),
    )


def appointment_status_values(flag: AppointmentFlag) -> CsvValues:
    return (
        str(flag.flag),
        "true" if flag.cancelled else "false",
        _text(flag.character),
        _text(flag.description),
    )


def _or_null(value: str) -> str | None:
    return value or None


def patient_fields(patient: Patient) -> dict[str, str | None]:
    """The patient object of the JSON body: the CSV values with missing ones as null."""
    return {k: _or_null(v) for k, v in zip(PATIENT_FIELDS, patient_values(patient), strict=True)}


def patient_row(patient: Patient) -> Row:
    return dict(zip(PATIENT_FIELDS, patient_values(patient), strict=True))


def appointment_row(appt: Appointment) -> Row:
    return dict(zip(APPOINTMENT_FIELDS, appointment_values(appt), strict=True))


def appointment_status_row(flag: AppointmentFlag) -> Row:
    return dict(zip(APPOINTMENT_STATUS_FIELDS, appointment_status_values(flag), strict=True))


def response_item(answer: Answer) -> JsonObject:
    return {
        "questionText": _or_null(_text(answer.question_text)),
        "answerText": _or_null(_text(answer.answer_text)),
        "answerNotes": _or_null(_text(answer.notes)),
    }


def questionnaire_body(questionnaire: Questionnaire) -> JsonObject:
    return {
        "submissionTime": _or_null(local_to_utc_iso(questionnaire.completed_at)),
        "notes": _or_null(_text(questionnaire.notes)),
        "responses": [response_item(a) for a in questionnaire.answers],
    }


def patient_sync_body(
    patient: Patient, questionnaire: Questionnaire | None, patient_patch_id: str
) -> JsonObject:
    return {
        "patient": patient_fields(patient),
        "questionnaire": None if questionnaire is None else questionnaire_body(questionnaire),
        "patientPatchId": patient_patch_id,
    }


class TextSink(Protocol):
    def write(self, s: str, /) -> object: ...


def write_csv(
    sink: TextSink, header: tuple[str, ...], rows: Iterable[CsvValues], *, batch: int = 2000
) -> int:
    """Write the header and the rows (RFC 4180 quoting, CRLF); return how many rows.

    Rows are formatted into an in-memory buffer `batch` at a time and handed to `sink` as one
    string per batch (csv's C loop does the per-row work)."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    iterator = iter(rows)
    count = 0
    while chunk := list(itertools.islice(iterator, batch)):
        writer.writerows(chunk)
        count += len(chunk)
        sink.write(buffer.getvalue())
        buffer.seek(0)
        buffer.truncate()
    if buffer.tell():  # the header alone (no rows)
        sink.write(buffer.getvalue())
    return count


def patient_rows(patients: Iterable[Patient]) -> Iterator[CsvValues]:
    return map(patient_values, patients)


def appointment_rows(appointments: Iterable[Appointment]) -> Iterator[CsvValues]:
    return map(appointment_values, appointments)


def appointment_status_rows(flags: Iterable[AppointmentFlag]) -> Iterator[CsvValues]:
    return map(appointment_status_values, flags)
