"""Only SELECT reaches R4: anything that could write, run code or stack a statement is refused
by the connection wrapper BEFORE it is sent (the observer never sees it, the data is unchanged).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sqlite3

import pytest

from agent.errors import UnsafeStatementError
from agent.r4.connection import R4Database, open_database
from agent.r4.guard import SQLITE_KEYWORDS, check_select_only
from agent.r4.sql import Statement
from tests.fixtures.r4_database import MakeR4Db

REFUSED = [
    "INSERT INTO patients (patientCode) VALUES (1)",
    "UPDATE patients SET forename = 'x'",
    "DELETE FROM patients",
    "MERGE INTO patients USING addresses ON 1 = 1 WHEN MATCHED THEN DELETE",
    "EXEC xp_cmdshell 'dir'",
    "EXECUTE sp_who",
    "DROP TABLE patients",
    "ALTER TABLE patients ADD x int",
    "CREATE TABLE stolen (x int)",
    "TRUNCATE TABLE patients",
    "GRANT SELECT ON patients TO public",
    "SELECT * INTO stolen FROM patients",
    "select patientCode into stolen from patients",
    "SELECT 1; DROP TABLE patients",
    "SELECT 1;DELETE FROM patients;",
    "SELECT 1 DELETE FROM patients",  # T-SQL stacks statements without a semicolon
    "WITH x AS (SELECT patientCode FROM patients) DELETE FROM patients",
    "WITH x AS (SELECT 1 AS a) UPDATE patients SET forename = 'x'",
    "SELECT * FROM OPENROWSET('SQLNCLI', 'Server=x;', 'SELECT 1')",
    "SELECT 1 WAITFOR DELAY '00:10'",
    "SELECT 1 -- ; DROP TABLE patients",
    "SELECT /* hidden */ 1",
    "SELECT 'unterminated",
    "PRAGMA writable_schema = 1",
    "ATTACH DATABASE '/tmp/x.db' AS x",
    "   ",
    "",
    "SHUTDOWN WITH NOWAIT",
    "DECLARE @x int; SELECT 1",
    "SELECT 1 SET NOCOUNT ON",
    "SELECT [x]] ; DROP TABLE patients ;SELECT [y]",  # ]] ends the name early in SQLite
    # T-SQL statements that stack without ";" and are not in a deny-list of writes
    "SELECT 1 DISABLE TRIGGER t ON patients",
    "SELECT 1 ENABLE TRIGGER t ON patients",
    "SELECT 1 CHECKPOINT",
    "SELECT 1 RECEIVE * FROM q",
    "SELECT 1 RECEIVE TOP (1) message_body FROM q",
    "SELECT 1 SEND ON CONVERSATION h MESSAGE TYPE m",
    "SELECT 1 GET CONVERSATION GROUP g FROM q",
    "SELECT 1 MOVE CONVERSATION h TO g",
    "SELECT 1 END CONVERSATION h WITH CLEANUP",
    "SELECT 1 REVERT",
    "SELECT 1 SETUSER",
    "SELECT 1 CLOSE MASTER KEY",
    "SELECT 1 ADD SIGNATURE TO p BY CERTIFICATE c",
    "SELECT 1 RAISERROR('x', 16, 1) WITH LOG",
    "SELECT 1 THROW 50000, 'x', 1",
    "SELECT 1 PRINT 'x'",
    "SELECT 1 BACKUP LOG sys2000 TO DISK = 'x'",
    "SELECT 1DELETE FROM patients",  # T-SQL reads "1DELETE" as 1 then DELETE
    # keywords glued to number literals: T-SQL ends the number at the letter
    "SELECT 1e1DELETE FROM patients",
    "SELECT 1.e1DELETE FROM patients",
    "SELECT 1.5E+2DELETE FROM patients",
    "SELECT .5e1DELETE FROM patients",
    "SELECT 0xSHUTDOWN",
    "SELECT 0xKILL 55",
    "SELECT 0xDEADBEEFDELETE FROM patients",
    "SELECT 1e1WAITFOR DELAY '0:0:5'",
    "SELECT 1e1EXEC xp_cmdshell 'dir'",
    "SELECT 1e1_x FROM patients",
    # table and query hints that would block R4's own writes
    "SELECT * FROM patients WITH (TABLOCKX)",
    "SELECT * FROM patients WITH(NOLOCK)",
    "SELECT * FROM patients p WITH (HOLDLOCK, ROWLOCK)",
    "SELECT TABLOCK FROM patients",
    "SELECT TABLOCKX FROM patients",
    "SELECT XLOCK FROM patients",
    "SELECT UPDLOCK FROM patients",
    "SELECT HOLDLOCK FROM patients",
    "SELECT PAGLOCK FROM patients",
    "SELECT SERIALIZABLE FROM patients",
    "SELECT REPEATABLEREAD FROM patients",
    "SELECT * FROM patients (TABLOCKX)",
    # functions that load code, read files or act, and ODBC escapes that call procedures
    "SELECT load_extension('/tmp/evil.so')",
    "SELECT LOAD_EXTENSION ('/tmp/evil.so', 'init')",
    "SELECT [load_extension]('/tmp/evil.so')",
    'SELECT "load_extension"(\'/tmp/evil.so\')',
    "SELECT readfile('/etc/passwd')",
    "SELECT * FROM fn_dblog(NULL, NULL)",
    "SELECT {fn user()}",
    "SELECT 1 {call xp_cmdshell('dir')}",
    # variables, temp tables and other characters the agent's SELECTs never use
    "SELECT @@version",
    "SELECT @x = forename FROM patients",
    "SELECT * FROM #stolen",
    "SELECT forename || surname FROM patients",
    "SELECT $1",
    "SELECT :name",
    "SELECT Siân FROM patients",
    # backticks are names in SQLite: a quote inside one does not start a literal
    "SELECT 1 AS `'`; DELETE FROM patients; SELECT 1 AS `'`",
    "SELECT 1 AS `'` DELETE FROM patients SELECT 1 AS `'`",
    "SELECT `x",
    # keywords of either dialect that a SELECT of the agent never uses
    "SELECT 1 UNION SELECT password FROM users",
    "SELECT CASE WHEN 1 = 1 THEN 1 END",
    "SELECT * FROM patients TABLESAMPLE (10 PERCENT)",
    "SELECT * FROM patients FOR XML AUTO",
    "SELECT 1 OPTION (MAXDOP 1)",
    "SELECT REPLACE FROM patients",  # REPLACE is only allowed as the function
]

ALLOWED = [
    "SELECT 1",
    "select 1;",
    "SELECT COUNT(*) FROM patients WHERE surname = 'O''Brien; DROP TABLE patients'",
    "SELECT [update] FROM [insert into]",
    'SELECT "delete" FROM patients',
    "WITH x AS (SELECT patientCode FROM patients) SELECT COUNT(*) FROM x",
    "SELECT m.name FROM sqlite_master m JOIN pragma_table_info(m.name) c",
    "SELECT REPLACE(forename, 'a', 'b') FROM patients",
    "SELECT N'Siân' AS name",
    "SELECT `delete` FROM patients",
    "SELECT 1 AS `it``s`",
    "SELECT p.patientCode, COUNT (*) FROM dbo.patients p WHERE p.dob IS NOT NULL AND p.x <> ?",
    "SELECT date FROM patients",  # a function's name used as a column name
    "SELECT 1e1, 1.e1, .5, 1.5E+2, 0x1F, 0x FROM patients WHERE a1e5 = 2",  # numbers alone
    "SELECT 1e1 AS x, 0xAB AS y",
]


@pytest.mark.parametrize("statement", REFUSED)
def test_guard_refuses_anything_but_a_single_select(statement: str) -> None:
    with pytest.raises(UnsafeStatementError):
        check_select_only(statement)


@pytest.mark.parametrize("statement", ALLOWED)
def test_guard_allows_selects_even_with_dangerous_words_inside_literals(statement: str) -> None:
    check_select_only(statement)


def test_guard_embeds_every_keyword_of_the_sqlite_library_the_tests_run() -> None:
    # SQLite adds keywords now and then: the embedded list must not fall behind the library.
    lib = ctypes.CDLL(ctypes.util.find_library("sqlite3"))
    names: set[str] = set()
    for i in range(lib.sqlite3_keyword_count()):
        name, size = ctypes.c_char_p(), ctypes.c_int()
        lib.sqlite3_keyword_name(i, ctypes.byref(name), ctypes.byref(size))
        names.add(ctypes.string_at(name, size.value).decode("ascii"))
    assert len(names) > 100 and names <= SQLITE_KEYWORDS


def test_guard_refusal_message_names_the_keyword_not_the_values() -> None:
    with pytest.raises(UnsafeStatementError) as refused:
        check_select_only("UPDATE patients SET forename = 'Siân'")
    assert "Siân" not in str(refused.value)
    with pytest.raises(UnsafeStatementError, match="INTO"):
        check_select_only("SELECT forename INTO stolen FROM patients WHERE surname = 'Nuñez'")


def _count(path: object, sql: str) -> int:
    con = sqlite3.connect(str(path))
    try:
        return int(con.execute(sql).fetchone()[0])
    finally:
        con.close()


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM patients",
        "UPDATE patients SET forename = 'x'",
        "INSERT INTO patients (patientCode) VALUES (5)",
        "SELECT * INTO stolen FROM patients",
        "SELECT 1; DELETE FROM patients",
        "SELECT 1 DELETE FROM patients",
        "DROP TABLE patients",
        "CREATE TABLE stolen (x int)",
        "SELECT 1 AS `'`; DELETE FROM patients; SELECT 1 AS `'`",
        "SELECT load_extension('/tmp/evil.so')",
    ],
)
def test_write_through_the_real_connection_is_refused_and_never_reaches_the_database(
    make_r4_db: MakeR4Db, statement: str
) -> None:
    sample = make_r4_db()
    before = _count(sample.path, "SELECT COUNT(*) FROM patients")
    tables_before = _count(sample.path, "SELECT COUNT(*) FROM sqlite_master WHERE type='table'")
    seen: list[Statement] = []
    count = Statement("count", "SELECT COUNT(*) FROM patients")
    with open_database(sample.settings) as db:
        db.observers.append(seen.append)
        calls = (
            db.fetch_all,
            db.fetch_one,
            lambda st: list(db.iter_rows(st)),
            lambda st: db.fetch_decodable(st, limit=10),
        )
        for call in calls:
            with pytest.raises(UnsafeStatementError):
                call(Statement("named", statement))
            with pytest.raises(UnsafeStatementError):
                call(statement)  # type: ignore[arg-type]  # a raw string is refused as such
        # the connection still works for reads afterwards
        assert db.fetch_one(count) == (before,)
    assert seen == [count]  # the refused never ran
    assert _count(sample.path, "SELECT COUNT(*) FROM patients") == before
    assert _count(sample.path, "SELECT COUNT(*) FROM sqlite_master WHERE type='table'") == (
        tables_before
    )


def test_the_wrapper_offers_no_way_around_the_guard() -> None:
    # every public way to run SQL goes through the guarded _execute: these four, nothing else
    methods = {
        n for n in dir(R4Database) if not n.startswith("_") and callable(getattr(R4Database, n))
    }
    assert methods == {"fetch_all", "fetch_one", "iter_rows", "fetch_decodable", "close"}
