"""Which driver errors mean "R4 cannot answer now" (the message waits, the R4 breaker opens),
"this row is at fault" and "a person must put R4 right" — on the drivers' real message texts.

SQLite's are produced here, through pyodbc and the SQLite3 ODBC driver, by really locking and
really replacing the database file. SQL Server's are as pyodbc raised them in the public
reports cited next to each one; where a report shows another client's rendering, the pyodbc
form is rebuilt around the server's exact text and native number (sys.messages)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pyodbc
import pytest

from agent.errors import R4DataError, R4Error, R4UnavailableError, TransientError
from agent.r4.connection import open_database, translate_error
from agent.r4.failure_kinds import FailureKind, classify
from agent.r4.reader import R4Reader
from agent.standin.r4_sample import sqlite_connection_string
from tests.fixtures import driver_errors

D17 = "[Microsoft][ODBC Driver 17 for SQL Server]"
D18 = "[Microsoft][ODBC Driver 18 for SQL Server]"
D11 = "[Microsoft][ODBC Driver 11 for SQL Server]"

SQL_SERVER_TRANSIENT = {
    # jiangwen365/pypyodbc#110, jdelic/django-dbconn-retry#87
    "communication link failure": (
        "08S01",
        f"[08S01] {D18}Communication link failure (0) (SQLExecDirectW)",
    ),
    # jdglaser/fast-to-sql#14 (connection reset mid-statement)
    "connection reset": (
        "08S01",
        f"[08S01] {D17}TCP Provider: An existing connection was forcibly closed by the remote "
        f"host.\r\n (10054) (SQLExecute); [08S01] {D17}Communication link failure (10054)",
    ),
    # mkleehammer/pyodbc#879
    "connect timeout mid-statement": (
        "08S01",
        f"[08S01] {D17}TCP Provider: A connection attempt failed because the connected party did "
        "not properly respond after a period of time, or established connection failed because "
        "connected host has failed to respond.\r\n (10060) (SQLExecute); [08S01] "
        f"{D17}Communication link failure (10060)",
    ),
    # mkleehammer/pyodbc#1033 (a Chinese-language driver: the numbers still say it)
    "localised link failure": (
        "08S01",
        f"[08S01] {D11}TCP 提供程序: 远程主机强迫关闭了一个现有的连接。"
        f"\r\n (10054) (SQLExecDirectW); [08S01] {D11}通讯链接失败 (10054)",
    ),
    # microsoft/mssql-django#396
    "query timeout": ("HYT00", f"[HYT00] {D17}Query timeout expired (0) (SQLExecDirectW)"),
    # ESSolutions/django-mssql-backend#110
    "login timeout": driver_errors.OTHER_FAILURES["login timeout"],
    # apache/airflow#19856, kippnorcal/google_classroom#120
    "deadlock victim": (
        "40001",
        f"[40001] {D17}[SQL Server]Transaction (Process ID 55) was deadlocked on lock resources "
        "with another process and has been chosen as the deadlock victim. Rerun the transaction. "
        "(1205) (SQLExecDirectW)",
    ),
    # the server's text as SSMS shows it (mkleehammer/pyodbc#198, Msg 1222), pyodbc's form
    "lock timeout": (
        "HY000",
        f"[HY000] {D17}[SQL Server]Lock request time out period exceeded. (1222) (SQLExecDirectW)",
    ),
    # a server being shut down / paused / upgraded / recovering (sys.messages 6005, 17142,
    # 18401, 922), pyodbc's form
    "shutdown in progress": (
        "HY000",
        f"[HY000] {D17}[SQL Server]SHUTDOWN is in progress. (6005) (SQLExecDirectW)",
    ),
    "service paused": (
        "08004",
        f"[08004] {D17}[SQL Server]SQL Server service has been paused. No new connections will "
        "be allowed. To resume the service, use SQL Computer Manager or the Services application "
        "in Control Panel. (17142) (SQLDriverConnect)",
    ),
    "script upgrade mode": (
        "28000",
        f"[28000] {D17}[SQL Server]Login failed for user 'sa'. Reason: Server is in script "
        "upgrade mode. Only administrator can connect at this time. (18401) (SQLDriverConnect)",
    ),
    "database being recovered": (
        "42000",
        f"[42000] {D17}[SQL Server]Database 'sys2000' is being recovered. Waiting until recovery "
        "is finished. (922) (SQLExecDirectW)",
    ),
}


@pytest.mark.parametrize("name", sorted(SQL_SERVER_TRANSIENT))
def test_sql_server_outage_texts_are_r4_unavailable_not_a_fault_of_the_message(name: str) -> None:
    state, message = SQL_SERVER_TRANSIENT[name]
    assert classify(state, message, connecting=False) is FailureKind.UNAVAILABLE
    error = translate_error(pyodbc.Error(state, message), target="t", action="query patients")
    assert isinstance(error, R4UnavailableError)
    assert isinstance(error, TransientError)


@pytest.mark.parametrize(
    ("name", "state", "message", "kind"),
    [
        ("login refused", *driver_errors.SQL_LOGIN_REFUSED, FailureKind.REFUSED),
        (
            "table missing",
            "42S02",
            f"[42S02] {D17}[SQL Server]Invalid object name 'dbo.Patients'. (208) (SQLExecDirectW)",
            FailureKind.REFUSED,
        ),
        (
            "conversion failed",
            "22018",
            f"[22018] {D17}[SQL Server]Conversion failed when converting the varchar value "
            "'abc' to data type int. (245) (SQLExecDirectW)",
            FailureKind.DATA,
        ),
        (
            "driver not loadable",
            "01000",
            "[01000] [unixODBC][Driver Manager]Can't open lib 'ODBC Driver 18 for SQL Server' : "
            "file not found (0) (SQLDriverConnect)",
            FailureKind.REFUSED,
        ),
    ],
)
def test_what_a_person_or_the_row_must_fix_is_not_taken_for_an_outage(
    name: str, state: str, message: str, kind: FailureKind
) -> None:
    assert classify(state, message, connecting=False) is kind
    error = translate_error(pyodbc.Error(state, message), target="t", action="query patients")
    assert isinstance(error, R4DataError if kind is FailureKind.DATA else R4Error)


# -- SQLite, for real -------------------------------------------------------------------------


@pytest.fixture
def tiny_db(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "r4.db"
    with sqlite3.connect(path) as db:
        db.execute("create table t (a int)")
    yield path


def _query_error(connection_string: str) -> pyodbc.Error:
    try:
        connection = pyodbc.connect(connection_string, autocommit=True)
        connection.cursor().execute("select * from t").fetchall()
    except pyodbc.Error as e:
        return e
    raise AssertionError("the query did not fail")


def test_sqlite_locked_by_another_process_is_r4_unavailable(tiny_db: Path) -> None:
    holder = sqlite3.connect(tiny_db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # as R4's own writer, or a backup tool, would
    try:
        error = _query_error(f"Driver=SQLite3;Database={tiny_db};Timeout=100")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    state, message = error.args
    assert "database is locked" in message  # the driver's real text, e.g. (5) (5)
    assert classify(state, message, connecting=False) is FailureKind.UNAVAILABLE
    translated = translate_error(error, target="t", action="query patients")
    assert isinstance(translated, R4UnavailableError)


def test_sqlite_file_replaced_by_something_else_is_r4_unavailable(tiny_db: Path) -> None:
    tiny_db.write_bytes(b"not a database yet, a restore is copying it back" * 50)
    error = _query_error(f"Driver=SQLite3;Database={tiny_db}")
    state, message = error.args
    assert "file is not a database" in message
    assert classify(state, message, connecting=False) is FailureKind.UNAVAILABLE


def test_the_sample_r4_database_locked_while_the_agent_reads_it_is_r4_unavailable(
    tmp_path: Path,
) -> None:
    from agent.r4.connection import DbSettings
    from agent.standin.r4_sample import generate

    path = tmp_path / "r4.db"
    generate(path, patients=3)
    quick = sqlite_connection_string(path).replace("Timeout=5000", "Timeout=100")
    db = open_database(DbSettings(connection_string=quick))
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(R4UnavailableError):
            R4Reader(db).get_patient(1)  # (a ping reads no table: SQLite takes no lock)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        db.close()
