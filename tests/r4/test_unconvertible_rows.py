"""Rows R4 hands back with a value of an unexpected type or form, on the real stack (pyodbc +
unixODBC + the SQLite3 ODBC driver). A bulk pass skips such a row, counts it and reports the
pass's skipped rows once (table, column, type, key; never the value) and goes on; only a missing
table or column fails a pass.

SQLite's ODBC driver turns a non-date in a DATETIME column into NULL, so the faults are made
the way a real R4 could show them: a view handing a column back as text."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Generator
from pathlib import Path

import pytest

from agent.errors import PermanentError
from agent.r4.connection import DbSettings, R4Database, open_database
from agent.r4.reader import R4Reader
from agent.r4.skipped_rows import KEYS_KEPT, LogSkippedRows, SkippedRows, UnconvertibleValue
from agent.reporting import RollbarSink
from agent.standin.r4_sample import CANARY, CANARY_CODE, sqlite_connection_string
from tests.fixtures.r4_database import MakeR4Db, int_column
from tests.fixtures.rollbar_endpoint import FakeRollbar


class RecordedSkips:
    """A SkipReporter that keeps each report (the interface's whole surface: one method)."""

    def __init__(self) -> None:
        self.reports: list[SkippedRows] = []

    def rows_skipped(self, skipped: SkippedRows) -> None:
        self.reports.append(skipped)


def _write(path: Path, *statements: str | tuple[str, tuple[object, ...]]) -> None:
    """Test set-up writes with sqlite3; the product under test reads through pyodbc only."""
    con = sqlite3.connect(path)
    try:
        for statement in statements:
            sql, params = (statement, ()) if isinstance(statement, str) else statement
            con.execute(sql, params)
        con.commit()
    finally:
        con.close()


def _text_view(path: Path, table: str, columns: str) -> None:
    """`table` becomes a view over `<table>_raw` with `columns` as written (e.g. a CAST)."""
    _write(path, f"ALTER TABLE {table} RENAME TO {table}_raw",
           f"CREATE VIEW {table} AS SELECT {columns} FROM {table}_raw")  # fmt: skip


def _patients_with_text_dob(path: Path) -> None:
    _text_view(path, "patients", "patientCode, forename, surname, CAST(dob AS TEXT) AS dob, "
               "mobileNo, email, addressId")  # fmt: skip


def _appts_with_text_times(path: Path) -> None:
    _text_view(path, "Appts", "ApptId, PatientCode, CAST(ApptDateTime AS TEXT) AS ApptDateTime, "
               "CAST(ApptFlag AS TEXT) AS ApptFlag, Duration")  # fmt: skip


@pytest.fixture
def real_db(make_r4_db: MakeR4Db) -> Path:
    return make_r4_db(patients=120, profile="real", canary=True).path


def _open(path: Path) -> R4Database:
    return open_database(DbSettings(connection_string=sqlite_connection_string(path)))


def test_a_patient_whose_date_is_no_date_is_skipped_and_the_pass_goes_on(
    real_db: Path,
) -> None:
    codes = int_column(real_db, "SELECT patientCode FROM patients ORDER BY patientCode")
    bad = [CANARY_CODE, codes[5], codes[60]]  # the canary (lowest code), early, mid-pass
    _patients_with_text_dob(real_db)
    _write(real_db, *(("UPDATE patients_raw SET dob = ? WHERE patientCode = ?",
                       (f"{CANARY['surname']} 1971", code)) for code in bad))  # fmt: skip
    skips = RecordedSkips()
    with _open(real_db) as db:
        read = [p.code for p in R4Reader(db, page_size=50, skips=skips).iter_patients()]
    assert read == [c for c in codes if c not in bad]  # every other patient, in order
    (report,) = skips.reports  # once per pass, not once per row or page
    assert (report.table, report.key_column, report.count) == ("patients", "patientCode", 3)
    assert report.describe() == (
        "R4 patients: 3 rows skipped, their values could not be converted: "
        f"dob (str) in 3 rows, patientCode {bad[0]}, {bad[1]}, {bad[2]}"
    )


def test_appointments_whose_time_or_flag_does_not_convert_are_skipped_by_key(
    real_db: Path,
) -> None:
    ids = int_column(real_db, "SELECT ApptId FROM Appts ORDER BY ApptId")
    _appts_with_text_times(real_db)
    _write(real_db,
           ("UPDATE Appts_raw SET ApptDateTime = ? WHERE ApptId = ?", (CANARY["notes"], ids[3])),
           ("UPDATE Appts_raw SET ApptFlag = ? WHERE ApptId = ?", ("1.5", ids[400])),
           ("UPDATE Appts_raw SET ApptDateTime = ? WHERE ApptId = ?", ("31/02/2020", ids[401])))
    skips = RecordedSkips()
    with _open(real_db) as db:
        read = [a.appt_id for a in R4Reader(db, page_size=100, skips=skips).iter_appointments()]
    assert read == [i for i in ids if i not in (ids[3], ids[400], ids[401])]
    (report,) = skips.reports
    extra = report.as_extra()
    assert extra == {
        "table": "Appts",
        "skipped": 3,
        "problems": [
            {"column": "ApptDateTime", "type": "str", "rows": 2, "ApptId": [ids[3], ids[401]]},
            {"column": "ApptFlag", "type": "str", "rows": 1, "ApptId": [ids[400]]},
        ],
    }


def test_every_pass_reports_its_own_skips_and_a_clean_pass_reports_nothing(
    real_db: Path,
) -> None:
    _patients_with_text_dob(real_db)
    _write(real_db, ("UPDATE patients_raw SET dob = 'soon' WHERE patientCode = ?", (CANARY_CODE,)))
    skips = RecordedSkips()
    with _open(real_db) as db:
        reader = R4Reader(db, skips=skips)
        for _ in range(2):
            list(reader.iter_patients())
        list(reader.iter_appointments())  # nothing wrong there: no report
        stream = reader.iter_patients()
        next(stream)
        assert isinstance(stream, Generator)
        stream.close()  # a pass that ends early (the upload failed): reports what it skipped
    # (the canary, 900001, is the lowest code: the first page already skipped it)
    assert [(r.table, r.count) for r in skips.reports] == [("patients", 1)] * 3


@pytest.mark.parametrize(
    "stored",
    ["²", "--5", "٣", "1" * 5000, "1_000", 9e999, 1.5],
    ids=["superscript two", "double minus", "arabic-indic digit", "5000 digits", "underscore",
         "infinity", "fraction"],
)  # fmt: skip
def test_a_key_that_is_no_integer_is_reported_as_unknown_never_as_its_value(
    make_r4_db: MakeR4Db, stored: object
) -> None:
    # The key of a row is how a skipped row is named; when the key is what does not convert it
    # is the value, and values are never reported ("²".isdigit() is true; int("--5") quotes it)
    sample = make_r4_db()
    _write(
        sample.path,
        "ALTER TABLE patients RENAME TO patients_raw",
        "CREATE TABLE odd_codes (patientCode INTEGER, shown)",
        ("INSERT INTO odd_codes VALUES (?, ?)", (CANARY_CODE, stored)),
        "CREATE VIEW patients AS SELECT COALESCE(o.shown, CAST(p.patientCode AS TEXT)) AS "
        "patientCode, forename, surname, dob, mobileNo, email, addressId FROM patients_raw p "
        "LEFT JOIN odd_codes o ON o.patientCode = p.patientCode",
    )
    skips = RecordedSkips()
    with open_database(sample.settings) as db:
        read = list(R4Reader(db, page_size=100_000, skips=skips).iter_patients())
    assert len(read) == 301 - 1 and CANARY_CODE not in {p.code for p in read}
    (report,) = skips.reports
    text = report.describe()
    assert f"patientCode ({type(stored).__name__}) in 1 row, patientCode unknown" in text
    assert not any(c in text for c in "²٣5_") and "inf" not in text and "--" not in text


@pytest.mark.parametrize("column", ["ApptDateTime", "Appts"])
def test_a_missing_column_or_table_still_fails_the_pass(
    make_r4_db: MakeR4Db, column: str
) -> None:
    sample = (
        make_r4_db(drop_tables=["Appts"])
        if column == "Appts"
        else make_r4_db(drop_columns=[("Appts", column)])
    )
    skips = RecordedSkips()
    with open_database(sample.settings) as db, pytest.raises(PermanentError) as failed:
        list(R4Reader(db, skips=skips).iter_appointments())
    assert not isinstance(failed.value, UnconvertibleValue)
    assert column in str(failed.value) and skips.reports == []


def test_one_patient_read_of_an_unconvertible_row_fails_naming_table_column_and_key(
    real_db: Path,
) -> None:
    _patients_with_text_dob(real_db)
    _write(real_db, ("UPDATE patients_raw SET dob = ? WHERE patientCode = ?",
                     (CANARY["surname"], CANARY_CODE)))  # fmt: skip
    with _open(real_db) as db, pytest.raises(UnconvertibleValue) as failed:
        R4Reader(db).get_patient(CANARY_CODE)
    assert str(failed.value) == (
        "R4 column dob holds a value of an unexpected type or form (str) "
        f"(patients, key {CANARY_CODE})"
    )
    assert failed.value.__cause__ is None and failed.value.__context__ is None


def test_a_flag_row_that_does_not_convert_is_skipped(real_db: Path) -> None:
    _text_view(real_db, "ApptFlags", "CAST(CASE ApptFlag WHEN 4 THEN 'four' ELSE ApptFlag END "
               "AS TEXT) AS ApptFlag, Description, [Character], Cancelled")  # fmt: skip
    skips = RecordedSkips()
    with _open(real_db) as db:
        flags = [f.flag for f in R4Reader(db, skips=skips).iter_appointment_flags()]
    assert sorted(flags) == [1, 2, 3, 5, 6, 7, 8, 9, 10, 11]  # (ordered as text now)
    (report,) = skips.reports
    assert report.as_extra()["problems"] == [
        {"column": "ApptFlag", "type": "str", "rows": 1, "ApptFlag": [None]}
    ]


def test_a_report_names_at_most_some_keys_but_counts_every_row(real_db: Path) -> None:
    _appts_with_text_times(real_db)
    _write(real_db, "UPDATE Appts_raw SET ApptDateTime = 'never'")
    total = len(int_column(real_db, "SELECT ApptId FROM Appts"))
    skips = RecordedSkips()
    with _open(real_db) as db:
        assert list(R4Reader(db, page_size=500, skips=skips).iter_appointments()) == []
    (report,) = skips.reports
    assert report.count == total > KEYS_KEPT
    problems = report.as_extra()["problems"]
    assert isinstance(problems, list)
    (problem,) = problems
    assert len(problem["ApptId"]) == KEYS_KEPT and report.describe().endswith(", ...")


def test_unconvertible_canary_values_never_reach_the_log_or_rollbar(
    real_db: Path, rollbar_endpoint: FakeRollbar, caplog: pytest.LogCaptureFixture
) -> None:
    # Each canary value sits where a conversion fails on it; the canary guard (tests/fixtures/
    # canary_guard.py) fails this test should any reach a log record or the fake Rollbar.
    _patients_with_text_dob(real_db)
    _appts_with_text_times(real_db)
    appt = int_column(real_db, f"SELECT ApptId FROM Appts_raw WHERE PatientCode = {CANARY_CODE}")[0]
    _write(real_db,
           ("UPDATE patients_raw SET dob = ? WHERE patientCode = ?",
            (f"{CANARY['forename']} {CANARY['email']}", CANARY_CODE)),
           ("UPDATE Appts_raw SET ApptDateTime = ?, ApptFlag = ? WHERE ApptId = ?",
            (CANARY["address1"], CANARY["postcode"], appt)))  # fmt: skip
    sink = RollbarSink("t" * 32, environment="test", endpoint=rollbar_endpoint.url)
    try:
        with caplog.at_level(logging.WARNING, logger="agent"), _open(real_db) as db:
            reader = R4Reader(db, skips=LogSkippedRows(sink))
            list(reader.iter_patients())
            list(reader.iter_appointments())
        sink.flush(10)
    finally:
        sink.close(timeout=5)
    warnings = [r.getMessage() for r in caplog.records if "skipped, their" in r.getMessage()]
    assert warnings == [
        "R4 patients: 1 row skipped, their values could not be converted: "
        f"dob (str) in 1 row, patientCode {CANARY_CODE}",
        "R4 Appts: 1 row skipped, their values could not be converted: "
        f"ApptDateTime (str) in 1 row, ApptId {appt}",
    ]
    assert [item.payload["data"]["body"]["message"]["body"] for item in rollbar_endpoint.items] == [
        "R4 rows skipped in patients",
        "R4 rows skipped in Appts",
    ]
    custom = rollbar_endpoint.items[1].payload["data"]["custom"]
    assert custom["problems"] == [
        {"column": "ApptDateTime", "type": "str", "rows": 1, "ApptId": [appt]}
    ]
    for item in rollbar_endpoint.items:
        assert not any(v in item.text for v in CANARY.values())


@pytest.mark.parametrize("page_size", [1, 7, 10, 50, 1000])
def test_a_text_the_driver_cannot_decode_skips_only_its_row_at_any_page_boundary(
    real_db: Path, page_size: int
) -> None:
    # Bytes that are no UTF-8 (SQL Server: an nvarchar holding a lone surrogate) make pyodbc
    # refuse the whole page; the page is read again row by row and its keys alone, so exactly
    # the rows that do not decode are left out, wherever they fall in a page.
    codes = int_column(real_db, "SELECT patientCode FROM patients ORDER BY patientCode")
    bad = {*codes[10:20], codes[49], codes[50], codes[-1]}  # a whole page of 10, page edges
    _write(real_db, *(("UPDATE patients SET forename = CAST(X'43C3FF41' AS TEXT) "
                       "WHERE patientCode = ?", (code,)) for code in bad))  # fmt: skip
    skips = RecordedSkips()
    with _open(real_db) as db:
        read = [p.code for p in R4Reader(db, page_size=page_size, skips=skips).iter_patients()]
    assert read == [c for c in codes if c not in bad]
    (report,) = skips.reports
    assert report.count == len(bad)
    problems = report.as_extra()["problems"]
    assert isinstance(problems, list)
    (problem,) = problems
    assert problem["column"] == "(a text column)" and problem["type"] == "text not valid utf-8"
    assert sorted(problem["patientCode"]) == sorted(bad)  # each once, by its key
