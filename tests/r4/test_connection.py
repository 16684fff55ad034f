"""Connecting: driver choice, connection strings, error translation without secrets or data."""

from __future__ import annotations

from pathlib import Path

import pyodbc
import pytest

from agent.errors import PermanentError, R4DataError, TransientError
from agent.r4 import sql
from agent.r4.connection import (
    DRIVER_PREFERENCE,
    DbSettings,
    default_connection_string,
    describe_target,
    mask_secrets,
    odbc_call,
    open_database,
    pick_driver,
    translate_error,
)
from agent.r4.connection_plan import connection_plan
from agent.standin.r4_sample import sqlite_connection_string
from tests.fixtures.canary import (
    CANARY_EMAIL,
    CANARY_FORENAME,
    CANARY_MOBILE,
    CANARY_NOTES,
    CANARY_POSTCODE,
    CANARY_STREET,
    CANARY_SURNAME,
    canaries_in,
)
from tests.fixtures.r4_database import R4SampleDb


def test_driver_preference_is_newest_sql_server_driver_first() -> None:
    assert DRIVER_PREFERENCE == (
        "ODBC Driver 18 for SQL Server",
        "ODBC Driver 17 for SQL Server",
        "SQL Server Native Client 11.0",
        "SQL Server Native Client 10.0",
        "SQL Native Client",
        "SQL Server",
    )
    installed = ["SQL Server", "SQLite3", "SQL Server Native Client 10.0"]
    assert pick_driver(installed) == "SQL Server Native Client 10.0"
    assert pick_driver([*installed, "ODBC Driver 17 for SQL Server"]) == (
        "ODBC Driver 17 for SQL Server"
    )
    assert pick_driver(list(reversed(DRIVER_PREFERENCE))) == "ODBC Driver 18 for SQL Server"
    assert pick_driver(["SQL Native Client", "SQL Server"]) == "SQL Native Client"
    assert pick_driver(["SQLite3", "PostgreSQL Unicode"]) is None
    assert pick_driver([]) is None


def _first_connection_string(settings: DbSettings, installed: list[str]) -> str:
    return connection_plan(settings, installed, machine_names=())[0].connection_string


def test_default_is_windows_auth_to_local_sys2000_trusting_driver18_self_signed_cert() -> None:
    cs = _first_connection_string(DbSettings(), ["SQL Server", "ODBC Driver 18 for SQL Server"])
    assert cs == (
        "Driver={ODBC Driver 18 for SQL Server};Server=.;Database=sys2000;"
        "Trusted_Connection=yes;TrustServerCertificate=yes;ApplicationIntent=ReadOnly;"
    )
    assert default_connection_string("SQL Server", r".\R4", "sys2000") == (
        r"Driver={SQL Server};Server=.\R4;Database=sys2000;Trusted_Connection=yes;"
    )


def test_configured_connection_string_overrides_driver_choice() -> None:
    configured = "Driver={SQL Server};Server=r4host;Database=sys2000;UID=r4;PWD=pw;"
    assert _first_connection_string(DbSettings(connection_string=configured), []) == configured


def test_no_sql_server_driver_installed_is_a_permanent_error_naming_what_was_looked_for() -> None:
    with pytest.raises(PermanentError) as missing:
        connection_plan(DbSettings(), ["SQLite3"], machine_names=())
    assert "ODBC Driver 18 for SQL Server" in str(missing.value)
    assert "SQLite3" in str(missing.value)


def test_passwords_are_masked_in_every_form() -> None:
    cs = "Driver={SQL Server};Server=x;UID=sa;PWD=secret;password={se;cr}}et};Pwd = s3;"
    masked = mask_secrets(cs)
    for secret in ("secret", "se;cr", "s3"):
        assert secret not in masked
    assert masked.count("***") == 3 and "Server=x" in masked
    assert "secret" not in repr(DbSettings(connection_string=cs))
    assert describe_target(cs) == "driver=SQL Server, server=x, database=-"


def test_unloadable_driver_error_names_driver_and_server_but_not_the_password() -> None:
    settings = DbSettings(
        connection_string=(
            "Driver={No Such R4 Driver};Server=tcp:r4.invalid,1433;Database=sys2000;"
            "UID=sa;PWD=secret;"
        ),
        login_timeout_s=2,
    )
    with pytest.raises(PermanentError) as failed:
        open_database(settings)
    message = str(failed.value)
    assert "No Such R4 Driver" in message and "r4.invalid" in message and "sys2000" in message
    assert "secret" not in message
    assert not isinstance(failed.value, TransientError)
    assert isinstance(failed.value.__cause__, pyodbc.Error)


def test_database_that_cannot_be_reached_is_transient_and_names_the_database(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "not-there" / "sys2000.db"
    settings = DbSettings(connection_string=sqlite_connection_string(missing) + "PWD=secret;")
    with pytest.raises(TransientError) as failed:
        open_database(settings)
    assert str(missing) in str(failed.value) and "SQLite3" in str(failed.value)
    assert "secret" not in str(failed.value)


def test_query_on_missing_table_is_permanent_and_names_the_statement(
    r4_sample_db: R4SampleDb,
) -> None:
    with open_database(r4_sample_db.settings) as db, pytest.raises(PermanentError) as failed:
        db.fetch_all(sql.Statement("probe_missing", "SELECT x FROM NoSuchTable"))
    assert "probe_missing" in str(failed.value) and "NoSuchTable" in str(failed.value)


MSSQL_TARGET = "driver=ODBC Driver 17 for SQL Server, server=., database=sys2000"
SQL_SERVER = "[Microsoft][ODBC Driver 17 for SQL Server][SQL Server]"


def _sql_server_error(state: str, *records: tuple[str, int]) -> pyodbc.Error:
    """A pyodbc error as pyodbc formats SQL Server's diagnostic records."""
    text = "; ".join(
        f"[{state}] {SQL_SERVER}{message} ({native})" + (" (SQLExecDirectW)" if i == 0 else "")
        for i, (message, native) in enumerate(records)
    )
    return pyodbc.DataError(state, text)


LEAKING_MESSAGES = [
    # SQL Server does not escape quotes inside the quoted value
    "Conversion failed when converting the varchar value 'O'Brien' to data type int.",
    "Conversion failed when converting the nvarchar value 'Siân D'Arcy-Nuñez' to data type int.",
    f"Conversion failed when converting the varchar value '{CANARY_SURNAME}'' to data type int.",
    f"Conversion failed when converting the varchar value '{CANARY_NOTES}\nline 2 ''' to data "
    "type int.",
    # values in parentheses, unquoted
    "Violation of PRIMARY KEY constraint 'PK_patients'. Cannot insert duplicate key in object "
    f"'dbo.patients'. The duplicate key value is ({CANARY_FORENAME}, {CANARY_SURNAME}).",
    "Cannot insert duplicate key row in object 'dbo.patients' with unique index 'ix'. The "
    f"duplicate key value is (Siân, Jones, {CANARY_MOBILE}).",
    # unquoted values in a message no template knows
    f"Truncated value: {CANARY_EMAIL} in column email",
    # a value that forges a second diagnostic record naming a 'table'
    f"Conversion failed when converting the varchar value 'x (1); [42S02] {SQL_SERVER}Invalid "
    f"object name '{CANARY_STREET}'. (208)' to data type int.",
    # template-shaped messages whose name is not one the statement or R4 uses
    f"Invalid column name '{CANARY_POSTCODE.replace(' ', '_')}'.",
    f"Invalid object name 'dbo.{CANARY_SURNAME}'.",
]


@pytest.mark.parametrize("message", LEAKING_MESSAGES)
def test_driver_message_text_never_carries_row_values_into_the_error_or_its_cause(
    message: str,
) -> None:
    exc = _sql_server_error("22018", (message, 245))
    translated = translate_error(
        exc, target=MSSQL_TARGET, action="query q", statement="SELECT p.surname FROM patients p"
    )
    cause = translated.__cause__
    assert isinstance(translated, PermanentError) and isinstance(cause, pyodbc.DataError)
    for text in (str(translated), repr(cause.args)):
        assert canaries_in(text) == []
        for value in ("Brien", "Siân", "Arcy", "Nuñez", "Jones", "line 2"):
            assert value not in text
        assert "[22018]" in text and "(245)" in text and SQL_SERVER in text


CONVERSION = "Conversion failed when converting the varchar value '{}' to data type int."
DEADLOCK = (
    "Transaction (Process ID 7700900123) was deadlocked on lock resources with another process "
    "and has been chosen as the deadlock victim. Rerun the transaction."
)

# Cell values shaped like the rest of a message and further diagnostic records: split before
# the value is masked, their pieces would be read as records of their own.
FORGED_RECORDS = {
    "odbc function name": (
        CONVERSION.format(
            f"a' to data type int. (245) (SQLJaneDoe); [22018] {SQL_SERVER}"
            + CONVERSION.split("'")[0]
            + "'b"
        ),
        ["JaneDoe"],
    ),
    "deadlock record with a phone number": (
        CONVERSION.format(
            f"x' to data type int. (245); [40001] {SQL_SERVER}{DEADLOCK} (1205); [22018] "
            f"{SQL_SERVER}" + CONVERSION.split("'")[0] + "'y"
        ),
        ["7700900123"],
    ),
    "native error number of a forged record": (
        CONVERSION.format(f"z (7700900123); [22018] {SQL_SERVER}Divide by zero error encountered."),
        ["7700900123"],
    ),
    "unquoted key values forging a record": (
        "Violation of PRIMARY KEY constraint 'PK_patients'. Cannot insert duplicate key in object "
        f"'dbo.patients'. The duplicate key value is ({CANARY_SURNAME} (1); [40001] {SQL_SERVER}"
        f"{DEADLOCK} (1205); [22012] {SQL_SERVER}Divide by zero error encountered.).",
        ["7700900123"],
    ),
}


@pytest.mark.parametrize("forged", FORGED_RECORDS, ids=str)
def test_value_shaped_like_further_records_is_masked_before_the_message_is_split(
    forged: str,
) -> None:
    message, leaked = FORGED_RECORDS[forged]
    exc = _sql_server_error("22018", (message, 245))
    translated = translate_error(
        exc, target=MSSQL_TARGET, action="query q", statement="SELECT p.surname FROM patients p"
    )
    for text in (str(translated), repr(translated.__cause__.args if translated.__cause__ else "")):
        assert canaries_in(text) == []
        for value in leaked:
            assert value not in text
        assert "[22018]" in text


def test_odbc_function_name_is_kept_only_from_the_known_list() -> None:
    def function_named(name: str) -> str:
        exc = pyodbc.DataError(
            "22012", f"[22012] {SQL_SERVER}Divide by zero error encountered. (8134) ({name})"
        )
        return str(translate_error(exc, target=MSSQL_TARGET, action="query q"))

    assert function_named("SQLExecDirectW").endswith("encountered. (8134) (SQLExecDirectW)")
    assert function_named("SQLFetch").endswith("(8134) (SQLFetch)")
    forged = function_named("SQLJaneDoe")
    assert "JaneDoe" not in forged and forged.endswith("(8134) (?)")


def test_conversion_errors_keep_the_types_and_mask_the_whole_value() -> None:
    exc = _sql_server_error(
        "22018",
        ("Conversion failed when converting the varchar value 'O'Brien' to data type int.", 245),
    )
    text = str(translate_error(exc, target=MSSQL_TARGET, action="query patients_first_page"))
    assert text == (
        f"R4 query patients_first_page failed ({MSSQL_TARGET}): [22018] {SQL_SERVER}"
        "Conversion failed when converting the varchar value '***' to data type int. (245) "
        "(SQLExecDirectW)"
    )


def test_driver_messages_keep_names_of_r4_and_of_the_statement_and_the_state_class() -> None:
    exc = _sql_server_error(
        "42S02",
        ("Invalid object name 'dbo.Appts'.", 208),
        ("Invalid column name 'NoSuchColumn'.", 207),
        ("Statement(s) could not be prepared.", 8180),
        ("Something no template knows about 'x'.", 50000),
    )
    text = str(
        translate_error(
            exc,
            target=MSSQL_TARGET,
            action="query probe",
            statement="SELECT NoSuchColumn FROM dbo.Appts",
        )
    )
    assert "Invalid object name 'dbo.Appts'. (208) (SQLExecDirectW)" in text
    assert "Invalid column name 'NoSuchColumn'. (207)" in text
    assert "Statement(s) could not be prepared. (8180)" in text
    assert f"[42S02] {SQL_SERVER}syntax error or access rule violation; message withheld" in text
    assert "(50000)" in text and "'x'" not in text


def test_messages_while_connecting_are_kept_because_no_row_was_read_yet() -> None:
    exc = pyodbc.InterfaceError(
        "28000",
        f"[28000] {SQL_SERVER}Login failed for user 'PRACTICE\\r4svc'. (18456) (SQLDriverConnect)",
    )
    text = str(translate_error(exc, target=MSSQL_TARGET, action="connect", connecting=True))
    assert "Login failed for user 'PRACTICE\\r4svc'." in text


@pytest.mark.parametrize(
    ("state", "transient"),
    [("08S01", True), ("08001", True), ("HYT00", True), ("40001", True), ("42S02", False),
     ("28000", False), ("IM002", False)],
)  # fmt: skip
def test_communication_failures_are_transient_everything_else_permanent(
    state: str, transient: bool
) -> None:
    translated = translate_error(
        pyodbc.Error(state, f"[{state}] boom"), target="driver=SQL Server", action="query x"
    )
    assert isinstance(translated, TransientError) is transient
    assert isinstance(translated, PermanentError) is not transient


def test_sqlite_driver_gets_the_sqlite_dialect(r4_sample_db: R4SampleDb) -> None:
    with open_database(r4_sample_db.settings) as db:
        assert db.dialect is sql.SQLITE
        assert db.target == f"driver=SQLite3, server=-, database={r4_sample_db.path}"


def _chain(exc: BaseException | None) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def test_raw_driver_error_quoting_patient_data_is_not_reachable_through_the_cause_chain() -> None:
    # Error reporters (Rollbar, our scrubber) walk __cause__/__context__: the raw pyodbc error
    # must not be there, only a scrubbed copy of the same type and SQLSTATE.
    def conversion_failure() -> None:
        raise pyodbc.DataError(
            "22018", "[22018] Conversion failed when converting the varchar value 'Zoë Nuñez'"
        )

    with pytest.raises(PermanentError) as failed:
        odbc_call(conversion_failure, target="driver=SQL Server", action="query patients")
    chain = _chain(failed.value)
    assert [type(e) for e in chain] == [R4DataError, pyodbc.DataError]
    assert chain[1].args[0] == "22018"
    for exc in chain:
        assert "Zoë" not in repr(exc.args) and "Nuñez" not in str(exc)


def test_pyodbc_own_messages_are_kept_only_when_known() -> None:
    known = pyodbc.ProgrammingError("No results.  Previous SQL was not a query.")
    assert str(translate_error(known, target=MSSQL_TARGET, action="query q")).endswith(
        "[?] No results.  Previous SQL was not a query."
    )
    odd = pyodbc.Error(f"invalid value {CANARY_SURNAME} for parameter 1")
    text = str(translate_error(odd, target=MSSQL_TARGET, action="query q"))
    assert canaries_in(text) == [] and "message withheld" in text
