"""The real data path: the R4 stand-in database through pyodbc + the SQLite3 ODBC driver, the
R4 reader, the client, loopback HTTP, the backend stand-in. Expected rows are computed from
the raw SQLite tables with the contract's stated rules (an oracle independent of the reader
and of agent.contract)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from agent.flynotes.client import FlynotesClient
from agent.r4.connection import open_database
from agent.r4.reader import R4Reader
from agent.standin.backend import StandinBackend
from tests.fixtures.flynotes_backend import TEST_LICENCE_KEY
from tests.fixtures.r4_database import R4SampleDb

CANARY_CODE = 900001


def _clean(value: object) -> str:
    return "" if value is None else str(value).strip()


def _expected_patient_rows(db_path: object) -> dict[str, dict[str, str]]:
    con = sqlite3.connect(str(db_path))
    try:
        raw = con.execute(
            "SELECT p.patientCode, p.surname, p.forename, p.dob, p.mobileNo, p.email, "
            "a.address1, a.address2, a.address3, a.address4, a.address5, a.postcode "
            "FROM patients p LEFT JOIN addresses a ON a.addressId = p.addressId"
        ).fetchall()
    finally:
        con.close()
    expected: dict[str, dict[str, str]] = {}
    for code, surname, forename, dob, mobile, email, a1, a2, a3, a4, a5, postcode in raw:
        day = _clean(dob)[:10]
        expected[str(code)] = {
            "id": str(code),
            "familyName": _clean(surname),
            "givenName": _clean(forename),
            "dateOfBirth": "" if day == "1900-01-01" else day,
            "mobileNumber": _clean(mobile),
            "emailAddress": _clean(email),
            "addressLine1": _clean(a1),
            "addressLine2": _clean(a2),
            "city": ", ".join(p for p in (_clean(a3), _clean(a4)) if p),
            "county": _clean(a5),
            "postcode": _clean(postcode),
            "country": "UK",
        }
    return expected


@pytest.fixture
def reader(r4_sample_db: R4SampleDb) -> Iterator[R4Reader]:
    with open_database(r4_sample_db.settings) as db:
        yield R4Reader(db)


def test_full_patient_upload_from_r4_matches_the_database_field_by_field(
    r4_sample_db: R4SampleDb, reader: R4Reader, flynotes_standin: StandinBackend
) -> None:
    with FlynotesClient(flynotes_standin.url, TEST_LICENCE_KEY) as client:
        sent = client.upload_patients(reader.iter_patients())
    (request,) = flynotes_standin.received_for("patient-upload")
    assert request.rows is not None
    received = {row["id"]: row for row in request.rows}
    expected = _expected_patient_rows(r4_sample_db.path)
    assert sent == len(request.rows) == len(received) == len(expected)
    for code, row in expected.items():
        assert received[code] == row, f"patient {code} differs"
    # The sample is nasty enough for this test to mean something:
    rows = list(expected.values())
    assert any(r["addressLine1"] == "" and r["postcode"] == "" for r in rows)  # no address
    assert any(not (r["familyName"] + r["givenName"]).isascii() for r in rows)  # accents
    assert any(r["dateOfBirth"] == "" for r in rows)  # unknown / 1900-01-01
    assert any(r["mobileNumber"] == "" for r in rows) and any(r["emailAddress"] == "" for r in rows)
    assert any(", " in r["city"] for r in rows)


def test_patient_sync_of_the_canary_patient_carries_every_field_and_the_questionnaire(
    r4_sample_db: R4SampleDb, reader: R4Reader, flynotes_standin: StandinBackend
) -> None:
    patient = reader.get_patient(CANARY_CODE)
    questionnaire = reader.latest_questionnaire(CANARY_CODE)
    assert patient is not None
    assert questionnaire is not None
    with FlynotesClient(flynotes_standin.url, TEST_LICENCE_KEY) as client:
        client.sync_patient(patient, questionnaire, "patch-canary")
    (request,) = flynotes_standin.received_for("patient-sync")
    body = request.json
    assert body["patientPatchId"] == "patch-canary"
    expected = _expected_patient_rows(r4_sample_db.path)[str(CANARY_CODE)]
    assert body["patient"] == {k: (v or None) for k, v in expected.items()}
    assert body["patient"]["familyName"] == "CANARYSURNAME"
    assert body["patient"]["givenName"] == "CANARYFORENAME"
    assert body["patient"]["dateOfBirth"] == "1971-07-17"
    assert body["patient"]["emailAddress"] == "canary.email@example.invalid"
    assert body["patient"]["mobileNumber"] == "07000CANARY"
    assert body["patient"]["addressLine1"] == "1 CANARYSTREET"
    assert body["patient"]["postcode"] == "CA1 1NY"

    con = sqlite3.connect(str(r4_sample_db.path))
    try:
        qaire_id, when, notes = con.execute(
            "SELECT qaireid, [datetime], notes FROM CompletedQuestionnaire "
            "WHERE patientCode = ? ORDER BY qaireid DESC LIMIT 1",
            (CANARY_CODE,),
        ).fetchone()
        answers = con.execute(
            "SELECT COUNT(*) FROM CompletedQuestionnaireAnswer WHERE qaireid = ?", (qaire_id,)
        ).fetchone()[0]
    finally:
        con.close()
    london = datetime.fromisoformat(when).replace(tzinfo=ZoneInfo("Europe/London"))
    q = body["questionnaire"]
    assert q["submissionTime"] == london.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert q["notes"] == notes.strip() == "CANARYNOTES"
    assert len(q["responses"]) == answers
    assert "CANARYTEXTANSWER" in [r["answerText"] for r in q["responses"]]
    assert all(set(r) == {"questionText", "answerText", "answerNotes"} for r in q["responses"])


def test_appointments_and_statuses_from_r4_arrive_complete(
    r4_sample_db: R4SampleDb, reader: R4Reader, flynotes_standin: StandinBackend
) -> None:
    with FlynotesClient(flynotes_standin.url, TEST_LICENCE_KEY) as client:
        sent_appts = client.upload_appointments(reader.iter_appointments())
        sent_flags = client.upload_appointment_flags(reader.iter_appointment_flags())
    con = sqlite3.connect(str(r4_sample_db.path))
    try:
        appts = {
            str(a): (str(p), "" if f is None else str(f), _clean(d))
            for a, p, f, d in con.execute(
                "SELECT ApptId, PatientCode, a.ApptFlag, f.Description FROM Appts a "
                "LEFT JOIN ApptFlags f ON f.ApptFlag = a.ApptFlag"
            )
        }
        flags = {
            str(f): (c, _clean(ch), _clean(d))
            for f, d, ch, c in con.execute(
                "SELECT ApptFlag, Description, [Character], Cancelled FROM ApptFlags"
            )
        }
    finally:
        con.close()
    (appt_request,) = flynotes_standin.received_for("appointment-upload")
    (flag_request,) = flynotes_standin.received_for("appointment-status-upload")
    assert appt_request.rows is not None and flag_request.rows is not None
    assert sent_appts == len(appts) == len(appt_request.rows)
    assert sent_flags == len(flags) == len(flag_request.rows)
    for row in appt_request.rows:
        assert (row["patientCode"], row["statusCode"], row["status"]) == appts[row["apptId"]]
        assert row["apptDateTime"] == "" or row["apptDateTime"].endswith("Z")
    assert any(row["statusCode"] and not row["status"] for row in appt_request.rows)  # unknown
    for row in flag_request.rows:
        cancelled, character, description = flags[row["apptFlag"]]
        assert row["cancelled"] == ("true" if cancelled else "false")
        assert (row["character"], row["description"]) == (character, description)
