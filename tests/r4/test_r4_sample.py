"""The R4-shaped stand-in is deterministic, R4-realistic (Windows-1252 text), nasty by default
and, as the "real" profile, shaped like the real practice REALITY.md §2 measured."""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest

from agent.r4.connection import DbSettings, R4Database, open_database
from agent.r4.sql import REQUIRED_COLUMNS, Statement
from agent.standin.r4_sample import (
    CANARY,
    CANARY_CODE,
    PROFILES,
    UNKNOWN_FLAGS,
    generate,
    sqlite_connection_string,
)
from tests.fixtures.r4_database import R4SampleDb


def _one(con: sqlite3.Connection, sql: str) -> int:
    return int(con.execute(sql).fetchone()[0])


def _dump(path: Path) -> list[str]:
    con = sqlite3.connect(path)
    try:
        return list(con.iterdump())
    finally:
        con.close()


def test_same_seed_same_database_other_seed_other_data(tmp_path: Path) -> None:
    generate(tmp_path / "a.db", 120, seed=7)
    generate(tmp_path / "b.db", 120, seed=7)
    generate(tmp_path / "c.db", 120, seed=8)
    assert _dump(tmp_path / "a.db") == _dump(tmp_path / "b.db")
    assert _dump(tmp_path / "a.db") != _dump(tmp_path / "c.db")


def test_regenerating_replaces_the_file_and_leaves_no_partial_files(tmp_path: Path) -> None:
    target = tmp_path / "sys2000.db"
    generate(target, 50)
    generate(target, 10)
    con = sqlite3.connect(target)
    try:
        assert _one(con, "SELECT COUNT(*) FROM patients") == 10
    finally:
        con.close()
    assert [p.name for p in tmp_path.iterdir()] == ["sys2000.db"]


def test_has_every_table_and_column_the_agent_reads(r4_sample_db: R4SampleDb) -> None:
    con = sqlite3.connect(r4_sample_db.path)
    try:
        for table, columns in REQUIRED_COLUMNS.items():
            have = {r[1] for r in con.execute(f"PRAGMA table_info([{table}])")}
            assert set(columns) <= have, table
    finally:
        con.close()


def test_all_text_fits_windows_1252_like_r4_varchar(r4_sample_db: R4SampleDb) -> None:
    con = sqlite3.connect(r4_sample_db.path)
    try:
        for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
            for row in con.execute(f"SELECT * FROM [{table}]"):
                for value in row:
                    if isinstance(value, str):
                        value.encode("cp1252")
    finally:
        con.close()


def test_sample_is_nasty_in_every_way_the_brief_lists(r4_sample_db: R4SampleDb) -> None:
    con = sqlite3.connect(r4_sample_db.path)
    try:
        names = {r[0] for r in con.execute("SELECT forename FROM patients")} | {
            r[0] for r in con.execute("SELECT surname FROM patients")
        }
        assert {"Siân", "Zoë", "O'Brien", "Nuñez"} <= names
        assert _one(con, "SELECT COUNT(*) FROM patients WHERE addressId IS NULL") > 0
        dangling = _one(
            con,
            "SELECT COUNT(*) FROM patients WHERE addressId IS NOT NULL "
            "AND addressId NOT IN (SELECT addressId FROM addresses)",
        )
        without = _one(
            con,
            "SELECT COUNT(*) FROM patients p LEFT JOIN addresses a "
            "ON a.addressId = p.addressId WHERE a.addressId IS NULL",
        )
        assert dangling > 0 and 0.05 < without / 301 < 0.2  # ~10% without an address
        assert _one(con, "SELECT COUNT(*) FROM patients WHERE mobileNo IS NULL") > 0
        assert _one(con, "SELECT COUNT(*) FROM patients WHERE email IS NULL") > 0
        assert _one(con, "SELECT COUNT(*) FROM patients WHERE dob = '1900-01-01 00:00:00'") > 0
        assert _one(con, "SELECT COUNT(*) FROM patients WHERE dob > '2026-01-01'") > 0
        per_patient = dict(
            con.execute(
                "SELECT n, COUNT(*) FROM (SELECT p.patientCode, COUNT(q.qaireid) AS n "
                "FROM patients p LEFT JOIN CompletedQuestionnaire q "
                "ON q.patientCode = p.patientCode GROUP BY p.patientCode) GROUP BY n"
            ).fetchall()
        )
        assert per_patient.get(0) and per_patient.get(1) and max(per_patient) >= 4
        assert _one(
            con,
            "SELECT COUNT(*) FROM CompletedQuestionnaireAnswer "
            "WHERE AnswerId IS NULL AND TextAnswer IS NOT NULL",
        )
        assert _one(con, "SELECT COUNT(*) FROM CompletedQuestionnaire WHERE notes <> ''")
        unknown = ", ".join(str(f) for f in UNKNOWN_FLAGS)
        assert _one(con, f"SELECT COUNT(*) FROM Appts WHERE ApptFlag IN ({unknown})")
        assert not _one(con, f"SELECT COUNT(*) FROM ApptFlags WHERE ApptFlag IN ({unknown})")
    finally:
        con.close()


def test_canary_patient_is_exactly_as_agreed(r4_sample_db: R4SampleDb) -> None:
    con = sqlite3.connect(r4_sample_db.path)
    try:
        row = con.execute(
            "SELECT p.forename, p.surname, p.email, p.mobileNo, p.dob, a.address1, a.postcode "
            "FROM patients p JOIN addresses a ON a.addressId = p.addressId "
            "WHERE p.patientCode = ?",
            (CANARY_CODE,),
        ).fetchone()
        latest = con.execute(
            "SELECT qaireid, notes FROM CompletedQuestionnaire WHERE patientCode = ? "
            "ORDER BY qaireid DESC LIMIT 1",
            (CANARY_CODE,),
        ).fetchone()
        texts = {
            r[0]
            for r in con.execute(
                "SELECT TextAnswer FROM CompletedQuestionnaireAnswer WHERE qaireid = ?",
                (latest[0],),
            )
        }
    finally:
        con.close()
    assert row == (
        "CANARYFORENAME", "CANARYSURNAME", "canary.email@example.invalid", "07000CANARY",
        "1971-07-17 00:00:00", "1 CANARYSTREET", "CA1 1NY",
    )  # fmt: skip
    assert latest[1] == "CANARYNOTES" == CANARY["notes"]
    assert "CANARYTEXTANSWER" in texts


def test_canary_is_absent_unless_asked_for(tmp_path: Path) -> None:
    generate(tmp_path / "plain.db", 30)
    con = sqlite3.connect(tmp_path / "plain.db")
    try:
        assert not _one(con, f"SELECT COUNT(*) FROM patients WHERE patientCode = {CANARY_CODE}")
        assert not _one(con, "SELECT COUNT(*) FROM patients WHERE forename LIKE 'CANARY%'")
    finally:
        con.close()


def test_connection_string_targets_the_sqlite3_odbc_driver_without_creating_files() -> None:
    assert sqlite_connection_string(Path("/data/r4.db")) == (
        "Driver=SQLite3;Database=/data/r4.db;NoCreat=1;Timeout=5000;"
    )
    with pytest.raises(ValueError):
        sqlite_connection_string(Path("/data/a;Driver=Evil/r4.db"))


def test_negative_patient_count_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        generate(tmp_path / "x.db", -1)


def test_every_batch_is_written_past_the_first_flush(tmp_path: Path) -> None:
    # rows are flushed every 10,000 patients; everything after the first flush must land too
    generate(tmp_path / "big.db", 10_050, canary=True)
    con = sqlite3.connect(tmp_path / "big.db")
    try:
        assert _one(con, "SELECT COUNT(*) FROM patients") == 10_051
        orphans = [
            "SELECT COUNT(*) FROM Appts "
            "WHERE PatientCode NOT IN (SELECT patientCode FROM patients)",
            "SELECT COUNT(*) FROM CompletedQuestionnaire "
            "WHERE patientCode NOT IN (SELECT patientCode FROM patients)",
            "SELECT COUNT(*) FROM CompletedQuestionnaireAnswer "
            "WHERE qaireid NOT IN (SELECT qaireid FROM CompletedQuestionnaire)",
            "SELECT COUNT(*) FROM patients WHERE addressId < 10000000 "
            "AND addressId NOT IN (SELECT addressId FROM addresses)",
        ]
        for sql in orphans:
            assert _one(con, sql) == 0, sql
        assert _one(con, "SELECT MAX(qaireid) FROM CompletedQuestionnaire") == _one(
            con, "SELECT COUNT(*) FROM CompletedQuestionnaire"
        )
        assert _one(con, "SELECT COUNT(*) FROM CompletedQuestionnaireAnswer") > 10_051 * 3
    finally:
        con.close()


# -- the "real practice" profile (REALITY.md §2), read back through pyodbc + the SQLite3 ODBC
# driver as the agent reads R4 (raw Statements: the reader's conversion of NULL patients on
# appointments is not what these tests are about) ------------------------------------------

REAL_PATIENTS = 6000
# REALITY.md §2: a real practice's appointments per ApptFlag
MEASURED_FLAGS = dict(zip(range(1, 12), (83_836, 4_193, 3_833, 7, 3_932, 2_786, 120, 139, 296,
                                         751, 1_158), strict=True))  # fmt: skip


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[R4Database]:
    path = tmp_path_factory.mktemp("real") / "sys2000.db"
    generate(path, REAL_PATIENTS, seed=11, canary=True, profile="real")
    with open_database(DbSettings(connection_string=sqlite_connection_string(path))) as db:
        yield db


def _rows(db: R4Database, text: str) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in db.fetch_all(Statement("real_profile_probe", text))]


def _share(rows: list[tuple[Any, ...]], test: Callable[[tuple[Any, ...]], bool]) -> float:
    return sum(1 for r in rows if test(r)) / len(rows)


def _blank(value: object) -> bool:
    return value is None or value == ""


def test_real_codes_are_dense_seven_digit_numbers_from_one_million(real: R4Database) -> None:
    codes = [c for (c,) in _rows(real, "SELECT patientCode FROM patients ORDER BY patientCode")]
    codes.remove(CANARY_CODE)
    assert len(codes) == REAL_PATIENTS
    assert 1_000_000 <= codes[0] <= 1_000_003 and all(len(str(c)) == 7 for c in codes)
    assert (codes[-1] - codes[0] + 1 - len(codes)) / len(codes) < 0.03  # few deleted ones


def test_real_contact_data_is_sparse_for_old_records_and_usual_for_recent_ones(
    real: R4Database,
) -> None:
    rows = _rows(
        real,
        f"SELECT patientCode, mobileNo, email, title FROM patients "
        f"WHERE patientCode <> {CANARY_CODE} ORDER BY patientCode",
    )
    oldest, newest = rows[: int(len(rows) * 0.3)], rows[-len(rows) // 5 :]
    assert _share(oldest, lambda r: _blank(r[2])) >= 0.99  # measured: 99.8% without an email
    assert 0.93 <= _share(oldest, lambda r: _blank(r[1])) <= 0.99  # 96% without a phone
    assert _share(newest, lambda r: not _blank(r[1])) >= 0.7  # mostly a mobile ...
    assert _share(newest, lambda r: r[3] is not None) >= 0.85  # ... and a title
    assert any(r[1] == "" for r in rows) and any(r[1] is None for r in rows)  # both blanks


def test_real_questionnaires_a_quarter_of_patients_since_2017_half_the_notes_blank(
    real: R4Database,
) -> None:
    qaires = _rows(
        real,
        f"SELECT patientCode, [datetime], notes FROM CompletedQuestionnaire "
        f"WHERE patientCode <> {CANARY_CODE}",
    )
    with_any = {r[0] for r in qaires}
    assert 0.21 <= len(with_any) / REAL_PATIENTS <= 0.27  # measured: 24%
    assert 1.8 <= len(qaires) / len(with_any) <= 2.4  # 8,716 for 4,158 patients
    assert min(r[1] for r in qaires) >= datetime(2017, 1, 1)
    assert 0.44 <= _share(qaires, lambda r: _blank(r[2])) <= 0.54  # measured: 49%


def test_real_appointments_six_a_patient_some_without_one_r4s_own_flags(
    real: R4Database,
) -> None:
    appts = _rows(real, "SELECT PatientCode, ApptFlag FROM Appts")
    assert 5.4 <= len(appts) / REAL_PATIENTS <= 6.5  # ~101,000 for ~17,000
    assert 0.014 <= _share(appts, lambda r: r[0] is None) <= 0.020  # measured: 1.7%
    seen = {r[0] for r in appts} - {None, CANARY_CODE}
    assert 0.84 <= len(seen) / REAL_PATIENTS <= 0.90  # measured: 87% have one
    measured_total = sum(MEASURED_FLAGS.values())
    per_flag = Counter(r[1] for r in appts)
    for flag, measured in MEASURED_FLAGS.items():
        share = per_flag[flag] / len(appts)
        expected = measured / measured_total
        assert share > 0, flag  # even On Standby (7 of 101,051) is there
        if expected > 0.005:
            assert abs(share - expected) <= 0.2 * expected, (flag, share, expected)
    flags = dict(_rows(real, "SELECT ApptFlag, Description FROM ApptFlags"))
    assert sorted(flags) == list(range(1, 12)) and flags[5] == "Deleted"
    assert {r[1] for r in appts} <= set(flags)  # no flag ApptFlags does not know


def test_real_appointment_dates_run_2001_to_2027_with_few_in_the_future(
    real: R4Database,
) -> None:
    moments = [m for (m,) in _rows(real, "SELECT ApptDateTime FROM Appts")]
    assert min(moments).year == 2001 and max(moments).year <= 2027
    future = sum(1 for m in moments if m >= datetime(2026, 1, 1))
    assert 0 < future / len(moments) <= 0.002  # measured: ~60 of 101,000


def test_real_duration_is_a_datetime_span_not_minutes(real: R4Database) -> None:
    durations = {d for (d,) in _rows(real, "SELECT Duration FROM Appts")}
    assert all(isinstance(d, datetime) and d.date() == date(1900, 1, 1) for d in durations)
    assert datetime(1900, 1, 1, 0, 30) in durations


def test_real_profile_keeps_the_canary_and_is_deterministic(tmp_path: Path) -> None:
    generate(tmp_path / "a.db", 200, seed=4, canary=True, profile="real")
    generate(tmp_path / "b.db", 200, seed=4, canary=True, profile="real")
    assert _dump(tmp_path / "a.db") == _dump(tmp_path / "b.db")
    con = sqlite3.connect(tmp_path / "a.db")
    try:
        assert _one(con, f"SELECT ApptFlag FROM Appts WHERE PatientCode = {CANARY_CODE}") == 1
        assert _one(con, f"SELECT COUNT(*) FROM patients WHERE patientCode = {CANARY_CODE}")
    finally:
        con.close()


def test_an_unknown_profile_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nasty, real"):
        generate(tmp_path / "x.db", 1, profile="tidy")
    assert PROFILES["nasty"].rare_cases_every and not PROFILES["real"].rare_cases_every
