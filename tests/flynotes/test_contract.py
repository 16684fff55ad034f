"""The pure mapping from R4 records to the wire contract (no I/O)."""

from __future__ import annotations

import csv
import io
from datetime import date, datetime

from agent import contract
from agent.records import Answer, Appointment, AppointmentFlag, Patient, Questionnaire


def _patient(**kw: object) -> Patient:
    base: dict[str, object] = {
        "code": 7,
        "forename": "Siân",
        "surname": "O'Brien",
        "dob": date(1980, 2, 29),
        "mobile": "07700 900123",
        "email": "sian@example.invalid",
    }
    base.update(kw)
    return Patient(**base)  # type: ignore[arg-type]


def test_city_joins_address3_and_address4_when_both_are_set() -> None:
    row = contract.patient_row(_patient(address3="Llandaff", address4="Cardiff"))
    assert row["city"] == "Llandaff, Cardiff"


def test_city_is_whichever_of_address3_or_address4_is_set() -> None:
    assert contract.patient_row(_patient(address3="Llandaff"))["city"] == "Llandaff"
    assert contract.patient_row(_patient(address4="Cardiff"))["city"] == "Cardiff"
    assert contract.patient_row(_patient(address3="   ", address4="Cardiff"))["city"] == "Cardiff"


def test_county_is_address5_and_country_is_always_uk() -> None:
    row = contract.patient_row(_patient(address5="South Glamorgan"))
    assert row["county"] == "South Glamorgan"
    assert row["country"] == "UK"
    assert contract.patient_row(_patient())["country"] == "UK"


def test_patient_without_address_has_empty_address_fields_in_csv_and_null_in_json() -> None:
    p = _patient()
    row = contract.patient_row(p)
    fields = contract.patient_fields(p)
    for key in ("addressLine1", "addressLine2", "city", "county", "postcode"):
        assert row[key] == ""
        assert fields[key] is None


def test_r4_unknown_dob_sentinel_is_sent_as_missing_not_as_1900() -> None:
    assert contract.patient_row(_patient(dob=date(1900, 1, 1)))["dateOfBirth"] == ""
    assert contract.patient_fields(_patient(dob=date(1900, 1, 1)))["dateOfBirth"] is None
    assert contract.patient_fields(_patient(dob=None))["dateOfBirth"] is None


def test_real_and_future_dobs_are_iso_dates_as_r4_has_them() -> None:
    assert contract.patient_row(_patient())["dateOfBirth"] == "1980-02-29"
    assert contract.patient_row(_patient(dob=date(2091, 5, 1)))["dateOfBirth"] == "2091-05-01"
    assert contract.patient_row(_patient(dob=date(1900, 1, 2)))["dateOfBirth"] == "1900-01-02"


def test_fixed_width_padding_is_stripped_and_blank_counts_as_missing() -> None:
    fields = contract.patient_fields(_patient(forename="Zoë      ", mobile="   ", email=""))
    assert fields["givenName"] == "Zoë"
    assert fields["mobileNumber"] is None
    assert fields["emailAddress"] is None


def test_summer_submission_time_is_converted_from_bst_to_utc() -> None:
    assert contract.local_to_utc_iso(datetime(2026, 7, 1, 10, 30, 5)) == "2026-07-01T09:30:05Z"


def test_winter_submission_time_is_already_utc() -> None:
    assert contract.local_to_utc_iso(datetime(2026, 1, 5, 10, 30)) == "2026-01-05T10:30:00Z"


def test_ambiguous_autumn_hour_is_read_as_the_first_occurrence() -> None:
    # 2026-10-25 01:30 happens twice in London; the first is BST (00:30Z).
    assert contract.local_to_utc_iso(datetime(2026, 10, 25, 1, 30)) == "2026-10-25T00:30:00Z"


def test_missing_submission_time_is_null() -> None:
    q = Questionnaire(1, 7, None, None, ())
    assert contract.questionnaire_body(q) == {
        "submissionTime": None,
        "notes": None,
        "responses": [],
    }


def test_patient_sync_body_has_exactly_the_contract_fields() -> None:
    q = Questionnaire(
        9,
        7,
        datetime(2026, 3, 1, 9, 0),
        "Nervous patient",
        (Answer("Allergies?", "Penicillin", None), Answer("Smoker?", None, "gave up")),
    )
    body = contract.patient_sync_body(_patient(), q, "patch-42")
    assert list(body) == ["patient", "questionnaire", "patientPatchId"]
    assert list(body["patient"]) == list(contract.PATIENT_FIELDS)
    assert body["patient"]["id"] == "7"
    assert body["patientPatchId"] == "patch-42"
    assert body["questionnaire"] == {
        "submissionTime": "2026-03-01T09:00:00Z",
        "notes": "Nervous patient",
        "responses": [
            {"questionText": "Allergies?", "answerText": "Penicillin", "answerNotes": None},
            {"questionText": "Smoker?", "answerText": None, "answerNotes": "gave up"},
        ],
    }
    assert contract.patient_sync_body(_patient(), None, "p")["questionnaire"] is None


def test_csv_quotes_commas_quotes_and_newlines_and_reads_back_identically() -> None:
    nasty = _patient(surname='O\'Brien, "Jr"', address1="Flat 1\nHigh St", forename="Nuñez")
    out = io.StringIO(newline="")
    assert contract.write_csv(out, contract.PATIENT_FIELDS, contract.patient_rows([nasty])) == 1
    rows = list(csv.DictReader(io.StringIO(out.getvalue(), newline="")))
    assert rows == [contract.patient_row(nasty)]
    assert rows[0]["familyName"] == 'O\'Brien, "Jr"'
    assert rows[0]["addressLine1"] == "Flat 1\nHigh St"
    # the header line as the product issue writes it (a literal: not the constant under test)
    assert out.getvalue().startswith(
        "id,familyName,givenName,dateOfBirth,mobileNumber,emailAddress,"
        "addressLine1,addressLine2,city,county,postcode,country\r\n"
    )


def test_appointment_rows_use_utc_times_and_empty_fields_for_unknown_flags() -> None:
    known = Appointment(100, 7, datetime(2026, 6, 2, 14, 15), 3, "Arrived")
    unknown = Appointment(101, 8, None, None, None)
    assert contract.appointment_row(known) == {
        "apptId": "100",
        "patientCode": "7",
        "apptDateTime": "2026-06-02T13:15:00Z",
        "statusCode": "3",
        "status": "Arrived",
    }
    assert contract.appointment_row(unknown) == {
        "apptId": "101",
        "patientCode": "8",
        "apptDateTime": "",
        "statusCode": "",
        "status": "",
    }


def test_appointment_status_rows_spell_cancelled_as_true_or_false() -> None:
    assert contract.appointment_status_row(AppointmentFlag(4, "Cancelled", "C", True)) == {
        "apptFlag": "4",
        "cancelled": "true",
        "character": "C",
        "description": "Cancelled",
    }
    assert contract.appointment_status_row(AppointmentFlag(5, None, None, False)) == {
        "apptFlag": "5",
        "cancelled": "false",
        "character": "",
        "description": "",
    }
