"""The Flynotes backend's wire contract, as a pure mapping from `agent.records` to bodies.

No I/O and no HTTP here: `agent.flynotes.client` sends what these functions build, the
stand-in (`agent.standin.backend`) validates against the same constants, and tests compare
both ends field by field. Decisions the contract leaves open (see docs/backend-contract.md):

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
  (the autumn hour that happens twice) is read as the first occurrence (BST).
- JSON `patient.id` is the R4 patient code as a string, like the CSV `id` column.
- Booleans in CSV (`cancelled`) are `true` / `false`.
"""

from __future__ import annotations

import csv
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
JsonObject = dict[str, Any]


def _text(value: str | None) -> str | None:
    if value is None:
        return None
    stripped = value.strip()
    return stripped or None


def date_of_birth(dob: date | None) -> str | None:
    """ISO date, or None when R4 does not know it (NULL or the 1900-01-01 sentinel)."""
    if dob is None or dob == UNKNOWN_DOB:
        return None
    return dob.isoformat()


def city(patient: Patient) -> str | None:
    parts = [p for p in (_text(patient.address3), _text(patient.address4)) if p]
    return ", ".join(parts) or None


def local_to_utc_iso(moment: datetime | None) -> str | None:
    """R4's naive local UK time -> ISO 8601 UTC with `Z`. Aware values are converted as is."""
    if moment is None:
        return None
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=PRACTICE_TZ)
    return aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def patient_fields(patient: Patient) -> dict[str, str | None]:
    """The twelve patient fields, None where R4 has no value (shared by CSV and JSON)."""
    return {
        "id": str(patient.code),
        "familyName": _text(patient.surname),
        "givenName": _text(patient.forename),
        "dateOfBirth": date_of_birth(patient.dob),
        "mobileNumber": _text(patient.mobile),
        "emailAddress": _text(patient.email),
        "addressLine1": _text(patient.address1),
        "addressLine2": _text(patient.address2),
        "city": city(patient),
        "county": _text(patient.address5),
        "postcode": _text(patient.postcode),
        "country": COUNTRY,
    }


def _csv_row(fields: dict[str, str | None]) -> Row:
    return {k: ("" if v is None else v) for k, v in fields.items()}


def patient_row(patient: Patient) -> Row:
    return _csv_row(patient_fields(patient))


def appointment_row(appt: Appointment) -> Row:
    return _csv_row(
        {
            "apptId": str(appt.appt_id),
            "patientCode": str(appt.patient_code),
            "apptDateTime": local_to_utc_iso(appt.starts_at),
            "statusCode": None if appt.flag is None else str(appt.flag),
            "status": _text(appt.status),
        }
    )


def appointment_status_row(flag: AppointmentFlag) -> Row:
    return _csv_row(
        {
            "apptFlag": str(flag.flag),
            "cancelled": "true" if flag.cancelled else "false",
            "character": _text(flag.character),
            "description": _text(flag.description),
        }
    )


def response_item(answer: Answer) -> JsonObject:
    return {
        "questionText": _text(answer.question_text),
        "answerText": _text(answer.answer_text),
        "answerNotes": _text(answer.notes),
    }


def questionnaire_body(questionnaire: Questionnaire) -> JsonObject:
    return {
        "submissionTime": local_to_utc_iso(questionnaire.completed_at),
        "notes": _text(questionnaire.notes),
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


def write_csv(sink: TextSink, header: tuple[str, ...], rows: Iterable[Row]) -> int:
    """Write the header and the rows (RFC 4180 quoting, CRLF); return how many rows."""
    writer = csv.DictWriter(sink, fieldnames=header, lineterminator="\r\n", extrasaction="raise")
    writer.writeheader()
    count = 0
    for row in rows:
        writer.writerow(row)
        count += 1
    return count


def patient_rows(patients: Iterable[Patient]) -> Iterator[Row]:
    return (patient_row(p) for p in patients)


def appointment_rows(appointments: Iterable[Appointment]) -> Iterator[Row]:
    return (appointment_row(a) for a in appointments)


def appointment_status_rows(flags: Iterable[AppointmentFlag]) -> Iterator[Row]:
    return (appointment_status_row(f) for f in flags)
