"""R4's varchar bytes reach the agent as text, whatever byte a practice pasted into a field:
Windows-1252 on SQL Server with the five bytes Python leaves undefined mapped as Windows maps
them, and a byte no codec can decode is a PermanentError that carries none of the row's bytes.
"""

from __future__ import annotations

import codecs
import sqlite3
from pathlib import Path

import pyodbc
import pytest

from agent.errors import PermanentError
from agent.r4 import cp1252, sql
from agent.r4.connection import R4Database, describe_target, open_database, set_text_decoding
from agent.r4.reader import R4Reader
from tests.fixtures.canary import CANARY_SURNAME, canaries_in
from tests.fixtures.r4_database import MakeR4Db

CODE = 777100
# "O", the five bytes Python's cp1252 cannot decode, a right single quote, then the canary
SURNAME_BYTES = b"O\x81\x8d\x8f\x90\x9d\x92" + CANARY_SURNAME.encode("ascii")


def _insert_patient_with_surname_bytes(path: Path, surname: bytes) -> None:
    """Set-up writes with sqlite3: the raw bytes land in the varchar column as they are."""
    con = sqlite3.connect(path)
    try:
        con.execute(
            "INSERT INTO patients (patientCode, forename, surname) "
            "VALUES (?, 'Siân', CAST(? AS TEXT))",
            (CODE, surname),
        )
        con.commit()
    finally:
        con.close()


def test_every_byte_decodes_and_encodes_back_as_windows_does() -> None:
    cp1252.register()
    everything = bytes(range(256))
    text = everything.decode(cp1252.NAME)
    assert len(text) == 256 and text.encode(cp1252.NAME) == everything
    for byte in cp1252.UNDEFINED_IN_PYTHON:
        assert text[byte] == chr(byte)  # the C1 control of the same number
        with pytest.raises(UnicodeDecodeError):
            bytes([byte]).decode("cp1252")  # what the agent used to do
    defined = [b for b in range(256) if b not in cp1252.UNDEFINED_IN_PYTHON]
    assert [text[b] for b in defined] == [bytes([b]).decode("cp1252") for b in defined]
    assert codecs.lookup("r4_cp1252").name == cp1252.NAME


def test_sql_server_dialect_decodes_varchar_with_the_total_codec() -> None:
    assert sql.MSSQL.char_encoding == cp1252.NAME
    assert sql.SQLITE.char_encoding == "utf-8"


def test_varchar_bytes_python_cp1252_rejects_are_read_through_the_sql_server_decoding(
    make_r4_db: MakeR4Db,
) -> None:
    # The real pyodbc + SQLite3 ODBC stack hands pyodbc the column's raw bytes, as SQL Server's
    # driver does for varchar; the connection decodes them as it does for SQL Server.
    sample = make_r4_db()
    _insert_patient_with_surname_bytes(sample.path, SURNAME_BYTES)
    connection = pyodbc.connect(sample.connection_string, autocommit=True)
    set_text_decoding(connection, sql.MSSQL)
    with R4Database(connection, sql.SQLITE, describe_target(sample.connection_string)) as db:
        reader = R4Reader(db)
        patient = reader.get_patient(CODE)
        streamed = [p for p in reader.iter_patients() if p.code == CODE]
    assert patient is not None and streamed == [patient]
    assert patient.surname == "O\x81\x8d\x8f\x90\x9d\u2019" + CANARY_SURNAME
    assert patient.forename == "Siân".encode().decode(cp1252.NAME)  # UTF-8 bytes, as 1252


def test_undecodable_text_is_a_permanent_error_without_the_rows_bytes(
    make_r4_db: MakeR4Db,
) -> None:
    # The stand-in decodes UTF-8, in which \x81 cannot start a character.
    sample = make_r4_db()
    _insert_patient_with_surname_bytes(sample.path, SURNAME_BYTES)
    with open_database(sample.settings) as db, pytest.raises(PermanentError) as failed:
        R4Reader(db).get_patient(CODE)
    error = failed.value
    assert "patient_by_code" in str(error) and "could not be decoded" in str(error)
    assert error.__cause__ is None and error.__context__ is None  # the raw error's .object
    assert canaries_in(repr(error.args)) == [] and "\\x81" not in repr(error.args)
