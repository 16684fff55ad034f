"""A real practice's appointments without a patient (REALITY §2: 1.7 % of `Appts` rows have a
NULL PatientCode) on the real data path: the R4 stand-in through pyodbc + the SQLite3 ODBC
driver, the reader, the client, loopback HTTP, the backend stand-in."""

from __future__ import annotations

import sqlite3

from agent.flynotes.client import FlynotesClient
from agent.r4.connection import open_database
from agent.r4.reader import R4Reader
from agent.standin.backend import StandinBackend
from agent.uploads.passes import Uploads
from tests.fixtures.flynotes_backend import TEST_LICENCE_KEY
from tests.fixtures.r4_database import MakeR4Db
from tests.uploads.conftest import RecordingSink


def test_appointments_with_a_null_patient_go_out_with_an_empty_patient_code(
    make_r4_db: MakeR4Db, flynotes_standin: StandinBackend
) -> None:
    # The original sent them with an empty patientCode (json2csv writes null as an empty
    # field); stopping the upload at the first one lost every appointment after it.
    sample = make_r4_db(patients=200, profile="real", canary=False)
    con = sqlite3.connect(sample.path)
    try:
        total, = con.execute("SELECT COUNT(*) FROM Appts").fetchone()
        orphans = {
            str(appt_id)
            for (appt_id,) in con.execute("SELECT ApptId FROM Appts WHERE PatientCode IS NULL")
        }
    finally:
        con.close()
    assert orphans, "the real profile must hold appointments with a NULL PatientCode"

    with (
        open_database(sample.settings) as db,
        FlynotesClient(flynotes_standin.url, TEST_LICENCE_KEY) as client,
    ):
        summary = Uploads(client, errors=RecordingSink()).run(
            "appointments", R4Reader(db, page_size=100)
        )

    rows = [
        row
        for request in flynotes_standin.received_for("appointment-upload")
        for row in request.rows or ()
    ]
    assert summary.error is None and summary.sent == total == len(rows)
    by_id = {r["apptId"]: r for r in rows}
    assert {a for a, r in by_id.items() if r["patientCode"] == ""} == orphans
    orphan = by_id[min(orphans)]
    assert orphan["apptDateTime"] and orphan["statusCode"]  # the rest of the row as R4 has it
