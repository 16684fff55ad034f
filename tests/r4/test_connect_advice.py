"""A refused login, a database that cannot be opened, a TLS failure: recognised in the drivers'
real messages, and told to the operator with the account or database and the fixes.

Threats: a practice whose service account has no SQL Server login (the original agent had to
be hot-fixed to a SQL login for exactly that) told only "login failed"; the wrong database
(`NG_R4_Sys2000`, `Tutor`) configured without anyone noticing; a localised server's message
not recognised. Each driver message is a real one (tests/fixtures/driver_errors.py, with its
source), run through the agent's own translation (`translate_error`, as `open_database` raises
it).
"""

from __future__ import annotations

import pyodbc
import pytest

from agent.r4 import advice
from agent.r4.connect_failures import ConnectRefusal, connect_refusal
from agent.r4.connection import translate_error
from agent.r4.connection_plan import DbSettings
from tests.fixtures.driver_errors import (
    ANONYMOUS_REFUSED,
    CANNOT_OPEN,
    LOCALISED_CANNOT_OPEN,
    SQL_LOGIN_REFUSED,
    SYSTEM_REFUSED,
    TLS_FAILURES,
)

TARGET = "driver=ODBC Driver 17 for SQL Server, server=., database=sys2000"
MACHINE = frozenset({"r4server"})
TLS_FAILED = TLS_FAILURES["driver 18, OpenSSL 3"]

def as_raised(state_and_message: tuple[str, str]) -> str:
    """The text of the agent error open_database raises for this driver error."""
    error = pyodbc.InterfaceError(*state_and_message)
    return str(translate_error(error, target=TARGET, action="connect", connecting=True))


@pytest.mark.parametrize(
    ("driver_error", "refusal"),
    [
        (ANONYMOUS_REFUSED, ConnectRefusal(18456, "NT AUTHORITY\\ANONYMOUS LOGON")),
        (SYSTEM_REFUSED, ConnectRefusal(18456, "NT AUTHORITY\\SYSTEM")),
        (SQL_LOGIN_REFUSED, ConnectRefusal(18456, "admin")),
        (LOCALISED_CANNOT_OPEN, ConnectRefusal(4060, "sa", "qq")),
        (CANNOT_OPEN, ConnectRefusal(4060, "NT AUTHORITY\\SYSTEM", "G2")),
        (TLS_FAILED, None),
    ],
)
def test_refusals_are_read_from_the_real_messages_by_their_error_numbers(
    driver_error: tuple[str, str], refusal: ConnectRefusal | None
) -> None:
    assert connect_refusal(as_raised(driver_error)) == refusal


def test_windows_authentication_refused_names_system_and_gives_both_fixes() -> None:
    found = advice.connect_failure(as_raised(SYSTEM_REFUSED), DbSettings(), MACHINE)
    assert found is not None
    assert "refused the login of NT AUTHORITY\\SYSTEM" in found.summary
    assert "give NT AUTHORITY\\SYSTEM read access to sys2000" in found.hint
    assert "SQLUSER=<login> SQLPASSWORD=<password>" in found.hint


def test_a_refused_sql_login_names_it_and_says_what_to_check() -> None:
    settings = DbSettings(user="admin", password="Sekrit-5521")
    found = advice.connect_failure(as_raised(SQL_LOGIN_REFUSED), settings, MACHINE)
    assert found is not None
    assert "refused the SQL login 'admin'" in found.summary
    assert "[database] user and password" in found.hint
    assert "SQL Server and Windows Authentication mode" in found.hint
    assert "NT AUTHORITY\\SYSTEM read access to sys2000" in found.hint  # the other way
    assert "Sekrit-5521" not in found.summary + found.hint


def test_a_database_that_cannot_be_opened_is_named_with_sys2000_suggested() -> None:
    found = advice.connect_failure(as_raised(CANNOT_OPEN), DbSettings(database="G2"), MACHINE)
    assert found is not None
    assert "cannot open database 'G2' for NT AUTHORITY\\SYSTEM" in found.summary
    assert "R4's practice database is sys2000" in found.hint
    localised = advice.connect_failure(as_raised(LOCALISED_CANNOT_OPEN), DbSettings(), MACHINE)
    assert localised is not None and "'qq' for sa" in localised.summary


def test_4060_on_r4s_newer_schema_says_what_that_database_is() -> None:
    settings = DbSettings(database="NG_R4_Sys2000")
    found = advice.connect_failure(as_raised(CANNOT_OPEN), settings, MACHINE)
    assert found is not None and "'NG_R4_Sys2000' is R4's newer schema" in found.hint


def test_tls_failure_advice_differs_for_a_local_and_a_remote_server() -> None:
    text = as_raised(TLS_FAILED)
    here = advice.connect_failure(text, DbSettings(server=r".\R4"), MACHINE)
    there = advice.connect_failure(text, DbSettings(server="r4host"), MACHINE)
    assert here is not None and there is not None
    assert "every driver tried" in here.summary and "KB3135244" in here.hint
    assert "encrypt = false" in there.hint and "remote" in there.summary
    assert "encrypt = false" not in here.hint  # nothing left to turn off locally


def test_other_failures_get_no_special_advice() -> None:
    timeout = ("HYT00", "[HYT00] [Microsoft][ODBC Driver 17 for SQL Server]Login timeout "
               "expired (0) (SQLDriverConnect)")  # ESSolutions/django-mssql-backend#110
    assert advice.connect_failure(as_raised(timeout), DbSettings(), MACHINE) is None


@pytest.mark.parametrize(
    ("configured", "name"),
    [
        (DbSettings(), "sys2000"),
        (DbSettings(database="Tutor"), "Tutor"),
        (DbSettings(connection_string="Driver={SQL Server};Server=.;Database=NG_R4_Sys2000"),
         "NG_R4_Sys2000"),
        (DbSettings(connection_string="Driver=X;Initial Catalog=Tutor;"), "Tutor"),
        (DbSettings(connection_string="Driver=SQLite3;Database=/tmp/a/Tutor.db;"), "Tutor"),
    ],
)
def test_the_configured_database_name_is_found_wherever_it_is_set(
    configured: DbSettings, name: str
) -> None:
    assert advice.database_name(configured) == name


def test_the_wrong_database_hint_names_it_and_suggests_sys2000() -> None:
    missing = ["missing table patients", "missing table dbo.Appts"]
    assert "'NG_R4_Sys2000' is R4's newer schema" in advice.schema_problems(
        "NG_R4_Sys2000", missing
    )
    assert 'database = "sys2000"' in advice.schema_problems("tutor", missing)
    assert "does not look like R4's database" in advice.schema_problems("practice", missing)
    assert advice.schema_problems("sys2000", ["missing column patients.mobileNo"]) == (
        "is this the R4 database (sys2000)? check [database] database"
    )
