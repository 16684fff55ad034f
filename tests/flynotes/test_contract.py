"""The pure mapping from R4 records to the wire contract (no I/O): by default the ORIGINAL
agent's values (REALITY §1), and each `[contract]` setting's improvement."""

from __future__ import annotations

import csv
import io
from datetime import date, datetime

import pytest

from agent import contract
from agent.contract import IMPROVED, ORIGINAL, Wire, WireSettings
from agent.records import Answer, Appointment, AppointmentFlag, Patient, Questionnaire

ORIGINAL_WIRE = Wire(ORIGINAL)
IMPROVED_WIRE = Wire(IMPROVED)


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


def _row(p: Patient, wire: Wire = ORIGINAL_WIRE) -> dict[str, contract.Cell]:
    return contract.as_row(contract.PATIENT_FIELDS, wire.patient_values(p))


def test_the_defaults_are_the_original_agents_semantics() -> None:
    assert WireSettings() == ORIGINAL
    originals = {"times": "wall-clock", "unknown_dob": "as-r4", "blank_text": "as-r4"}
    assert WireSettings(**originals, typed_answers="omit") == ORIGINAL  # type: ignore[arg-type]


def test_city_joins_address3_and_address4_when_both_are_set() -> None:
    assert _row(_patient(address3="Llandaff", address4="Cardiff"))["city"] == "Llandaff, Cardiff"


def test_city_follows_the_originals_a3_or_a4_for_blank_and_null_parts() -> None:
    assert _row(_patient(address3="Llandaff"))["city"] == "Llandaff"
    assert _row(_patient(address4="Cardiff"))["city"] == "Cardiff"
    assert _row(_patient(address3="   ", address4="Cardiff"))["city"] == "Cardiff"
    # JS `'' || null` is null and `null || ''` is "": so is Python's `or`
    assert _row(_patient(address3="", address4=None))["city"] is None
    assert _row(_patient(address3=None, address4=""))["city"] == ""
    assert _row(_patient(address3=None, address4=""), IMPROVED_WIRE)["city"] is None


def test_county_is_address5_and_country_is_always_uk() -> None:
    row = _row(_patient(address5="South Glamorgan"))
    assert row["county"] == "South Glamorgan"
    assert row["country"] == "UK"


def test_patient_without_an_address_is_sent_with_null_address_fields() -> None:
    fields = ORIGINAL_WIRE.patient_fields(_patient())
    for key in ("addressLine1", "addressLine2", "city", "county", "postcode"):
        assert fields[key] is None


def test_dob_placeholder_1900_goes_out_as_r4_has_it_unless_set_missing() -> None:
    assert _row(_patient(dob=date(1900, 1, 1)))["dateOfBirth"] == "1900-01-01"
    assert _row(_patient(dob=date(1900, 1, 1)), IMPROVED_WIRE)["dateOfBirth"] is None
    assert Wire(WireSettings(unknown_dob="missing")).date_of_birth(date(1900, 1, 1)) is None
    assert _row(_patient(dob=None))["dateOfBirth"] is None


def test_real_and_future_dobs_are_iso_dates_as_r4_has_them() -> None:
    assert _row(_patient())["dateOfBirth"] == "1980-02-29"
    assert _row(_patient(dob=date(2091, 5, 1)))["dateOfBirth"] == "2091-05-01"


def test_blank_mobile_and_email_are_null_other_blank_text_is_an_empty_string() -> None:
    p = _patient(forename="Zoë      ", mobile="   ", email="", address1="", postcode="  ")
    fields = ORIGINAL_WIRE.patient_fields(p)
    assert fields["givenName"] == "Zoë"  # trimmed (R4's fixed-width columns)
    assert fields["mobileNumber"] is None and fields["emailAddress"] is None
    assert fields["addressLine1"] == "" and fields["postcode"] == ""
    assert fields["addressLine2"] is None  # NULL stays null
    improved = IMPROVED_WIRE.patient_fields(p)
    assert improved["addressLine1"] is None and improved["postcode"] is None


def test_every_patient_field_is_a_string_or_null_like_the_originals_json() -> None:
    p = _patient(address1="1 High St", address3="A", address4="B", postcode="CF1 1AA")
    for wire in (ORIGINAL_WIRE, IMPROVED_WIRE):
        values = wire.patient_fields(p).values()
        assert all(v is None or isinstance(v, str) for v in values)
    assert ORIGINAL_WIRE.patient_fields(p)["id"] == "7"


# --- times: the original labels R4's wall clock UTC; `times = "utc"` converts ---------------
TIMES = [
    # (R4 wall clock, original, times = "utc")
    (datetime(2026, 7, 1, 10, 30, 5), "2026-07-01T10:30:05.000Z", "2026-07-01T09:30:05Z"),  # BST
    (datetime(2026, 1, 5, 10, 30), "2026-01-05T10:30:00.000Z", "2026-01-05T10:30:00Z"),  # GMT
    # spring edge: 00:59 is GMT, 01:30 never happens on a clock (read as GMT), 02:00 is BST
    (datetime(2026, 3, 29, 0, 59), "2026-03-29T00:59:00.000Z", "2026-03-29T00:59:00Z"),
    (datetime(2026, 3, 29, 1, 30), "2026-03-29T01:30:00.000Z", "2026-03-29T01:30:00Z"),
    (datetime(2026, 3, 29, 2, 0), "2026-03-29T02:00:00.000Z", "2026-03-29T01:00:00Z"),
    # autumn edge: 01:30 happens twice (the first, BST, is taken), 02:00 is GMT again
    (datetime(2026, 10, 25, 0, 30), "2026-10-25T00:30:00.000Z", "2026-10-24T23:30:00Z"),
    (datetime(2026, 10, 25, 1, 30), "2026-10-25T01:30:00.000Z", "2026-10-25T00:30:00Z"),
    (datetime(2026, 10, 25, 2, 0), "2026-10-25T02:00:00.000Z", "2026-10-25T02:00:00Z"),
    # SQL Server DATETIME keeps 1/300 s: the original's JS Date showed milliseconds
    (datetime(2026, 6, 1, 10, 30, 0, 3000), "2026-06-01T10:30:00.003Z", "2026-06-01T09:30:00Z"),
]


@pytest.mark.parametrize(("wall", "original", "utc"), TIMES)
def test_times_are_the_wall_clock_labelled_utc_or_real_utc_when_set(
    wall: datetime, original: str, utc: str
) -> None:
    assert ORIGINAL_WIRE.time(wall) == original
    assert Wire(WireSettings(times="utc")).time(wall) == utc
    appt = Appointment(1, 7, wall, 1, "Complete")
    assert ORIGINAL_WIRE.appointment_values(appt)[2] == original
    q = Questionnaire(1, 7, wall, None, ())
    assert IMPROVED_WIRE.questionnaire_body(q)["submissionTime"] == utc


def test_missing_submission_time_is_null() -> None:
    q = Questionnaire(1, 7, None, None, ())
    assert ORIGINAL_WIRE.questionnaire_body(q) == {
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
        (Answer("Allergies?", "Penicillin", None), Answer("Smoker?", None, "")),
    )
    body = ORIGINAL_WIRE.patient_sync_body(_patient(), q, "patch-42")
    assert list(body) == ["patient", "questionnaire", "patientPatchId"]
    assert list(body["patient"]) == list(contract.PATIENT_FIELDS)
    assert body["patient"]["id"] == "7"
    assert body["patientPatchId"] == "patch-42"
    assert body["questionnaire"] == {
        "submissionTime": "2026-03-01T09:00:00.000Z",
        "notes": "Nervous patient",
        "responses": [
            {"questionText": "Allergies?", "answerText": "Penicillin", "answerNotes": None},
            {"questionText": "Smoker?", "answerText": None, "answerNotes": ""},
        ],
    }
    assert ORIGINAL_WIRE.patient_sync_body(_patient(), None, "p")["questionnaire"] is None


def test_a_typed_answer_goes_out_as_null_unless_typed_answers_is_send() -> None:
    # the original joined only the pre-set answers: a typed one reached the backend as null
    typed = Answer("Weight (kg)", "61.5", None, typed=True)
    preset = Answer("Smoker?", "No", None)
    assert ORIGINAL_WIRE.response_item(typed)["answerText"] is None
    assert ORIGINAL_WIRE.response_item(preset)["answerText"] == "No"
    sending = Wire(WireSettings(typed_answers="send"))
    assert sending.response_item(typed)["answerText"] == "61.5"
    assert sending.response_item(preset)["answerText"] == "No"


def test_appointment_values_have_the_originals_types() -> None:
    known = ORIGINAL_WIRE.appointment_values(
        Appointment(100, 7, datetime(2026, 6, 2, 14, 15), 3, "Did Not Attend")
    )
    assert known == ("100", 7, "2026-06-02T14:15:00.000Z", 3, "Did Not Attend")
    unknown = ORIGINAL_WIRE.appointment_values(Appointment(101, 8, None, None, None))
    assert unknown == ("101", 8, None, None, None)


def test_appointment_status_values_have_a_numeric_flag_and_a_boolean() -> None:
    assert ORIGINAL_WIRE.appointment_status_values(AppointmentFlag(4, "Cancelled", "C", True)) == (
        4,
        True,
        "C",
        "Cancelled",
    )


def test_bulk_upload_skips_patients_without_surname_or_forename_only() -> None:
    assert contract.skips_patient(_patient(surname=None))
    assert contract.skips_patient(_patient(surname="   "))
    assert contract.skips_patient(_patient(forename=""))
    assert not contract.skips_patient(_patient())  # no address: sent


# --- CSV bytes ----------------------------------------------------------------------------
def test_csv_is_the_originals_byte_form() -> None:
    rows = [("1", 5, None, True, ""), ("2", 0, "x", False, None)]
    assert contract.encode_csv(("a", "b", "c", "d", "e"), rows) == (
        b'"a","b","c","d","e"\r\n"1",5,,true,""\r\n"2",0,"x",false,'
    )
    assert contract.encode_csv(("a",), []) == b'"a"'  # the header alone (never POSTed)


def test_number_one_is_not_mistaken_for_true() -> None:
    assert contract.encode_csv(("n",), [(1,), (0,)]) == b'"n"\r\n1\r\n0'


def test_csv_quotes_commas_quotes_and_newlines_and_reads_back_identically() -> None:
    nasty = _patient(surname='O\'Brien, "Jr"', address1="Flat 1\nHigh St", forename="Nuñez")
    body = contract.encode_csv(contract.PATIENT_FIELDS, [ORIGINAL_WIRE.patient_values(nasty)])
    rows = list(csv.DictReader(io.StringIO(body.decode("utf-8"), newline="")))
    assert rows[0]["familyName"] == 'O\'Brien, "Jr"'
    assert rows[0]["addressLine1"] == "Flat 1\nHigh St"
    assert rows[0]["givenName"] == "Nuñez"
