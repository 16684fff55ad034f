"""The R4-shaped stand-in is deterministic, R4-realistic (Windows-1252 text) and nasty."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from agent.r4.sql import REQUIRED_COLUMNS
from agent.standin.r4_sample import (
    CANARY,
    CANARY_CODE,
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
