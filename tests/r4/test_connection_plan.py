"""Which connection to try, in which order: SQL logins, local vs remote servers, and the TLS
fallback against the drivers' real handshake failures.

Threats: SQL Server 2008 R2 (TLS 1.0/1.1 only) refused by the newest driver, so a practice
that could connect with an older one never does; a remote connection silently sent
unencrypted; a refused password retried with every driver (locking the login out); a
password that breaks out of its connection-string value or reaches a log.

The driver messages are real ones (tests/fixtures/driver_errors.py, each with its source).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pyodbc
import pytest

from agent.errors import PermanentError, TransientError
from agent.r4.connect_failures import is_tls_handshake_failure
from agent.r4.connection import connect_first, describe_target, local_machine_names
from agent.r4.connection_plan import (
    Attempt,
    DbSettings,
    connection_plan,
    default_connection_string,
    is_local_server,
    mask_secrets,
)
from tests.fixtures.driver_errors import OTHER_FAILURES, TLS_FAILURES

D18, D17 = "ODBC Driver 18 for SQL Server", "ODBC Driver 17 for SQL Server"
NC11, SQLSRV = "SQL Server Native Client 11.0", "SQL Server"
ALL_DRIVERS = [SQLSRV, NC11, D17, D18, "SQLite3"]
MACHINE = frozenset({"r4server"})


def local(**kw: Any) -> DbSettings:
    return DbSettings(server=r".\R4", **kw)


def plan(settings: DbSettings, installed: list[str] = ALL_DRIVERS) -> list[Attempt]:
    return connection_plan(settings, installed, machine_names=MACHINE)


def tried(attempts: list[Attempt]) -> list[tuple[str, str]]:
    return [(a.driver, a.encryption) for a in attempts]


@pytest.mark.parametrize(
    ("server", "is_local"),
    [
        (".", True), ("(local)", True), ("localhost", True), (r".\R4", True),
        (r"(local)\SQLEXPRESS", True), ("localhost,1433", True), ("tcp:127.0.0.1,1433", True),
        (r"lpc:R4SERVER\R4", True), (r"lpc:.", True), (r"R4SERVER\R4", True), ("r4server", True),
        (r"np:\\.\pipe\MSSQL$R4\sql\query", True), ("(localdb)\\MSSQLLocalDB", True),
        ("r4host", False), (r"10.0.0.5\R4", False), ("tcp:r4host.practice.local,1433", False),
        ("localhost.evil.example", False), (r"np:\\r4host\pipe\sql\query", False),
        (r"R4SERVER2\R4", False),
    ],
)  # fmt: skip
def test_local_server_names_and_only_those_count_as_this_machine(
    server: str, is_local: bool
) -> None:
    assert is_local_server(server, MACHINE) is is_local


def test_this_machines_own_name_is_among_its_local_names() -> None:
    import socket

    assert socket.gethostname().split(".")[0].lower() in local_machine_names()


def test_local_server_falls_back_through_the_drivers_then_driver_18_without_encryption() -> None:
    attempts = plan(local())
    assert tried(attempts) == [
        (D18, "on (the driver's default)"),
        (D17, "the driver's default (off unless the server requires it)"),
        (NC11, "the driver's default (off unless the server requires it)"),
        (SQLSRV, "the driver's default (off unless the server requires it)"),
        (D18, "off"),
    ]
    assert attempts[0].connection_string == (
        r"Driver={ODBC Driver 18 for SQL Server};Server=.\R4;Database=sys2000;"
        "Trusted_Connection=yes;TrustServerCertificate=yes;ApplicationIntent=ReadOnly;"
    )
    assert attempts[-1].connection_string == (
        r"Driver={ODBC Driver 18 for SQL Server};Server=.\R4;Database=sys2000;"
        "Trusted_Connection=yes;Encrypt=no;ApplicationIntent=ReadOnly;"
    )


def test_no_encryption_off_step_when_the_best_driver_does_not_encrypt_by_default() -> None:
    # Driver 17 and older already default to Encrypt=no: the same attempt twice would be noise
    assert tried(plan(local(), [D17, NC11])) == [
        (D17, "the driver's default (off unless the server requires it)"),
        (NC11, "the driver's default (off unless the server requires it)"),
    ]


def test_remote_server_is_never_silently_sent_unencrypted() -> None:
    # Driver 17's default is no encryption: falling back to it would turn encryption off
    assert tried(plan(DbSettings(server=r"r4host\R4"))) == [(D18, "on (the driver's default)")]


def test_remote_server_with_encrypt_false_tries_every_driver_unencrypted() -> None:
    attempts = plan(DbSettings(server="r4host", encrypt=False))
    assert tried(attempts) == [(D18, "off"), (D17, "off"), (NC11, "off"), (SQLSRV, "off")]
    assert all("Encrypt=no;" in a.connection_string for a in attempts)


def test_encrypt_true_keeps_encryption_on_for_every_driver_even_locally() -> None:
    attempts = plan(local(encrypt=True))
    assert tried(attempts) == [(D18, "on"), (D17, "on"), (NC11, "on"), (SQLSRV, "on")]
    assert all(
        "Encrypt=yes;TrustServerCertificate=yes;" in a.connection_string for a in attempts
    )


def test_sql_login_replaces_windows_authentication_with_braced_values() -> None:
    password = "p;w}d=x {y"
    cs = default_connection_string(D17, ".", "sys2000", user="r4 reader", password=password)
    assert cs == (
        "Driver={ODBC Driver 17 for SQL Server};Server=.;Database=sys2000;"
        "UID={r4 reader};PWD={p;w}}d=x {y};ApplicationIntent=ReadOnly;"
    )
    assert "Trusted_Connection" not in cs
    assert password not in mask_secrets(cs) and "PWD=***" in mask_secrets(cs)
    assert describe_target(cs) == "driver=ODBC Driver 17 for SQL Server, server=., database=sys2000"


def test_a_configured_connection_string_is_the_only_attempt_and_gets_the_sql_login() -> None:
    configured = "Driver={SQLite3};Database=C:\\r4\\sys2000.db"
    attempts = plan(DbSettings(connection_string=configured, user="r4", password="pw;1"))
    assert tried(attempts) == [("SQLite3", "as configured")]
    assert attempts[0].connection_string == configured + ";UID={r4};PWD={pw;1};"


def test_the_password_is_in_no_repr() -> None:
    settings = local(user="r4", password="Sekrit-7781")
    attempts = plan(settings)
    for text in (repr(settings), *(repr(a) for a in attempts), *(a.describe() for a in attempts)):
        assert "Sekrit-7781" not in text


def test_no_sql_server_driver_installed_names_what_was_looked_for() -> None:
    with pytest.raises(PermanentError, match=r"ODBC Driver 18 for SQL Server.*SQLite3"):
        plan(local(), ["SQLite3"])


@pytest.mark.parametrize("name", list(TLS_FAILURES))
def test_real_tls_handshake_failures_are_recognised(name: str) -> None:
    assert is_tls_handshake_failure(TLS_FAILURES[name][1])


@pytest.mark.parametrize("name", list(OTHER_FAILURES))
def test_other_real_connect_failures_are_not_taken_for_tls(name: str) -> None:
    assert not is_tls_handshake_failure(OTHER_FAILURES[name][1])


class ScriptedConnect:
    """pyodbc.connect's edge for the fallback loop: fails with a real driver error for the
    connection strings `fails` picks, and records every connection string it was given."""

    def __init__(self, fails: Callable[[str], tuple[str, str] | None]) -> None:
        self.fails = fails
        self.calls: list[str] = []

    def __call__(self, connection_string: str) -> object:
        self.calls.append(connection_string)
        failure = self.fails(connection_string)
        if failure is not None:
            raise pyodbc.OperationalError(*failure)
        return object()


@pytest.mark.parametrize("name", list(TLS_FAILURES))
def test_a_tls_failure_of_every_encrypting_driver_ends_with_driver_18_unencrypted(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    failure = TLS_FAILURES[name]
    connect = ScriptedConnect(lambda cs: None if "Encrypt=no" in cs else failure)
    attempts = plan(local())
    with caplog.at_level(logging.INFO, logger="agent.r4.connection"):
        _connection, used = connect_first(attempts, connect)
    assert connect.calls == [a.connection_string for a in attempts]  # in the plan's order
    assert (used.driver, used.encryption) == (D18, "off")
    logged = [r.getMessage() for r in caplog.records]
    assert sum("TLS handshake failed" in m for m in logged) == len(attempts) - 1
    assert logged[-1] == (
        "R4: connected with driver 'ODBC Driver 18 for SQL Server', encryption off "
        "(after a TLS handshake failure with the drivers before it)"
    )


def test_the_next_driver_is_used_when_it_speaks_the_servers_tls() -> None:
    connect = ScriptedConnect(
        lambda cs: TLS_FAILURES["driver 18, OpenSSL 3"] if D18 in cs else None
    )
    _connection, used = connect_first(plan(local()), connect)
    assert used.driver == D17 and len(connect.calls) == 2


def test_a_refused_login_is_not_retried_with_other_drivers() -> None:
    # each retry of a wrong password counts towards the login's lockout
    connect = ScriptedConnect(lambda cs: OTHER_FAILURES["login failed"])
    with pytest.raises(PermanentError, match="Login failed for user 'admin'"):
        connect_first(plan(local(user="admin", password="wrong")), connect)
    assert len(connect.calls) == 1


def test_an_unreachable_server_is_not_retried_with_other_drivers() -> None:
    connect = ScriptedConnect(lambda cs: OTHER_FAILURES["server not found"])
    with pytest.raises(TransientError):
        connect_first(plan(local()), connect)
    assert len(connect.calls) == 1


def test_a_remote_tls_failure_is_raised_after_the_one_attempt() -> None:
    connect = ScriptedConnect(lambda cs: TLS_FAILURES["driver 18, OpenSSL 3"])
    with pytest.raises(TransientError) as failed:
        connect_first(plan(DbSettings(server="r4host")), connect)
    assert len(connect.calls) == 1 and "SSL Provider" in str(failed.value)


def test_when_every_attempt_fails_the_tls_the_last_failure_is_raised() -> None:
    connect = ScriptedConnect(lambda cs: TLS_FAILURES["SQL Server driver, DBNETLIB"])
    with pytest.raises(TransientError, match="SECDoClientHandshake"):
        connect_first(plan(local(password="x", user="u")), connect)
    assert len(connect.calls) == len(plan(local()))
