"""The one door to R4: connecting, and a SELECT-only database wrapper.

`open_database(settings)` connects through pyodbc (unixODBC / Windows ODBC), trying the
attempts `agent.r4.connection_plan` lists (settings, driver choice, the login and the TLS
fallback live there, pure), and returns an `R4Database` that knows its SQL dialect and will
only execute statements that pass the SELECT-only guard. pyodbc errors are translated here, once
(agent.r4.failure_kinds says which kind): R4 cannot answer now -> R4UnavailableError (transient),
a value that cannot be converted -> R4DataError, anything else -> R4Error (both permanent). Error
messages name the statement, driver, server and database — never a password (masked in any
connection string) and never row contents (driver messages keep only known-safe parts, see
agent.r4.driver_messages).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import pyodbc

from agent.errors import (
    AgentError,
    R4DataError,
    R4Error,
    R4UnavailableError,
    UnsafeStatementError,
)
from agent.r4 import cp1252 as r4_cp1252
from agent.r4 import driver_messages
from agent.r4 import sql as r4sql
from agent.r4.connect_failures import is_tls_handshake_failure
from agent.r4.connection_plan import DRIVER_PREFERENCE as DRIVER_PREFERENCE
from agent.r4.connection_plan import Attempt, connection_plan
from agent.r4.connection_plan import DbSettings as DbSettings
from agent.r4.connection_plan import connection_attributes as connection_attributes
from agent.r4.connection_plan import default_connection_string as default_connection_string
from agent.r4.connection_plan import describe_target as describe_target
from agent.r4.connection_plan import mask_secrets as mask_secrets
from agent.r4.connection_plan import pick_driver as pick_driver
from agent.r4.failure_kinds import FailureKind
from agent.r4.failure_kinds import classify as classify_failure
from agent.r4.guard import check_select_only
from agent.r4.skipped_rows import UndecodableText
from agent.r4.sql import Dialect, Statement

# (settings and connection strings live in agent.r4.connection_plan; the names imported `as`
# themselves stay importable from here)

log = logging.getLogger(__name__)

Row = Sequence[Any]  # a pyodbc Row: indexable and unpackable like a tuple
StatementObserver = Callable[[Statement], None]

# --- error translation -----------------------------------------------------------------------

# Names a driver message may keep: R4's tables and columns (and dbo.), besides the words of
# the statement that failed and of the target.
_R4_NAMES = driver_messages.known_names(
    "dbo", *r4sql.REQUIRED_COLUMNS, *(c for cols in r4sql.REQUIRED_COLUMNS.values() for c in cols)
)


def _driver_state_and_message(exc: pyodbc.Error) -> tuple[str, str]:
    args = exc.args
    if len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        return args[0], args[1]
    return "", str(args[0]) if args else type(exc).__name__


def scrub_driver_message(
    state: str, message: str, *, target: str, statement: str = "", connecting: bool = False
) -> str:
    """What of a driver message may be logged.

    While connecting the driver has read no row, so its message (server not found, login
    failed for user X, driver not loadable) is kept, with passwords masked. After that only
    the parts `driver_messages.scrub` knows to be safe are kept: names the statement, the
    target or R4's schema holds, never a value.
    """
    if not connecting:
        names = _R4_NAMES | driver_messages.known_names(statement, target)
        message = driver_messages.scrub(state, message, names)
    return mask_secrets(message)


def translate_error(
    exc: pyodbc.Error,
    *,
    target: str,
    action: str,
    connecting: bool = False,
    statement: str = "",
) -> R4UnavailableError | R4Error | R4DataError:
    """The agent error for a pyodbc error (which kind: agent.r4.failure_kinds). Its `__cause__`
    is a scrubbed copy of the driver error (same type and SQLSTATE): the raw one may quote row
    values, and error reporters walk the cause chain. `statement` is the SQL text that failed,
    if any."""
    state, message = _driver_state_and_message(exc)
    scrubbed = scrub_driver_message(
        state, message, target=target, statement=statement, connecting=connecting
    )
    # pyodbc's message starts with the SQLSTATE in brackets; its own errors have none
    stated = scrubbed if scrubbed.startswith(f"[{state}] ") else f"[{state or '?'}] {scrubbed}"
    text = f"R4 {action} failed ({target}): {stated}"
    kind = classify_failure(
        state,
        message,
        connecting=connecting,
        operational=isinstance(exc, pyodbc.OperationalError),
    )
    translated: R4UnavailableError | R4Error | R4DataError = (
        R4UnavailableError(text)
        if kind is FailureKind.UNAVAILABLE
        else R4DataError(text)
        if kind is FailureKind.DATA
        else R4Error(text)
    )
    try:
        translated.__cause__ = type(exc)(state, scrubbed)
    except Exception:  # noqa: BLE001 - an odd pyodbc subclass constructor: no cause then
        translated.__cause__ = None
    return translated


T = TypeVar("T")


def odbc_call(
    call: Callable[[], T],
    *,
    target: str,
    action: str,
    connecting: bool = False,
    statement: str = "",
) -> T:
    """Run one pyodbc call; a pyodbc error becomes R4UnavailableError/R4Error/R4DataError, a
    text value the codec cannot decode (pyodbc raises the codec's UnicodeDecodeError)
    UndecodableText (an R4DataError).

    The agent error is raised OUTSIDE the except block, so the raw driver error is neither its
    __cause__ nor its __context__ (only the scrubbed copy from translate_error is attached).
    """
    failure: AgentError
    try:
        return call()
    except pyodbc.Error as e:
        failure = translate_error(
            e, target=target, action=action, connecting=connecting, statement=statement
        )
    except UnicodeError as e:  # its .object holds the row's bytes: only the codec name leaves
        codec = getattr(e, "encoding", None) or "?"
        failure = UndecodableText(
            f"R4 {action} failed ({target}): a text value could not be decoded (codec {codec})",
            codec,
        )
    raise failure


# --- the wrapper -----------------------------------------------------------------------------


@dataclass(eq=False)
class R4Database:
    """An open connection to R4 that only ever runs SELECTs. Use as a context manager.

    Every query method takes a `Statement` (built in agent.r4.sql; a raw string is refused)
    and raises UnsafeStatementError (nothing sent) unless its text is a single SELECT that
    passes the guard, TransientError when the server/link fails, PermanentError for any other
    database error. `observers` are called with each statement just before it runs (after the guard
    passed); tests use this to count keyset pages without patching pyodbc.
    """

    _connection: Any
    dialect: Dialect
    target: str  # "driver=..., server=..., database=..." (no secrets)
    observers: list[StatementObserver] = field(default_factory=list)
    encryption: str = "as configured"  # how the connection that worked encrypts (Attempt)

    def _execute(self, st: Statement, params: Sequence[object]) -> Any:
        if not isinstance(st, Statement):  # a raw string has no name and no builder
            raise UnsafeStatementError("refused: only Statements built in agent.r4.sql run")
        check_select_only(st.text)  # raises UnsafeStatementError before anything is sent
        for observe in self.observers:
            observe(st)

        def run() -> Any:
            cursor = self._connection.cursor()
            cursor.execute(st.text, *params)
            return cursor

        return odbc_call(run, target=self.target, action=f"query {st.name}", statement=st.text)

    def _fetch(self, call: Callable[[], T], st: Statement) -> T:
        return odbc_call(call, target=self.target, action=f"fetch {st.name}", statement=st.text)

    def fetch_all(self, statement: Statement, params: Sequence[object] = ()) -> list[Row]:
        cursor = self._execute(statement, params)
        try:
            # pyodbc's rows as they are: copying each into a tuple cost ~5% of a bulk read
            rows: list[Row] = self._fetch(cursor.fetchall, statement)
            return rows
        finally:
            _close_quietly(cursor)

    def fetch_one(
        self, statement: Statement, params: Sequence[object] = ()
    ) -> tuple[Any, ...] | None:
        cursor = self._execute(statement, params)
        try:
            row = self._fetch(cursor.fetchone, statement)
            return None if row is None else tuple(row)
        finally:
            _close_quietly(cursor)

    def fetch_decodable(
        self, statement: Statement, params: Sequence[object] = (), *, limit: int
    ) -> tuple[list[Row], int]:
        """At most `limit` rows of `statement` (a page: its TOP/LIMIT), fetched one at a time,
        leaving out each row with a text the driver cannot decode (pyodbc decodes after the
        fetch, so the next fetch goes on with the next row); and how many were left out. For a
        page `fetch_all` refused with UndecodableText."""
        cursor = self._execute(statement, params)
        rows: list[Row] = []
        failed = 0
        try:
            for _ in range(limit):
                try:
                    row = self._fetch(cursor.fetchone, statement)
                except UndecodableText:
                    failed += 1
                    continue
                if row is None:
                    break
                rows.append(row)
            return rows, failed
        finally:
            _close_quietly(cursor)

    def iter_rows(
        self, statement: Statement, params: Sequence[object] = (), *, batch: int = 500
    ) -> Iterator[Row]:
        """Rows of one statement, fetched `batch` at a time (never the whole result at once)."""
        cursor = self._execute(statement, params)
        try:
            while rows := self._fetch(lambda: cursor.fetchmany(batch), statement):
                yield from rows
        finally:
            _close_quietly(cursor)

    def close(self) -> None:
        _close_quietly(self._connection)

    def __enter__(self) -> R4Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _close_quietly(handle: Any) -> None:
    with contextlib.suppress(pyodbc.Error):  # a broken connection: nothing left to close
        handle.close()


def _detect_dialect(connection: Any, connection_string: str) -> Dialect:
    names = [connection_attributes(connection_string).get("driver", "")]
    for info in (pyodbc.SQL_DBMS_NAME, pyodbc.SQL_DRIVER_NAME):
        try:
            names.append(str(connection.getinfo(info)))
        except pyodbc.Error:
            continue
    return r4sql.SQLITE if any("sqlite" in n.lower() for n in names) else r4sql.MSSQL


def set_text_decoding(connection: Any, dialect: Dialect) -> None:
    """Decode varchar (SQL_CHAR) bytes as the dialect says: R4's SQL Server holds Windows-1252
    (decoded with r4-cp1252, which defines every byte, as Windows does), the SQLite stand-in
    UTF-8. nvarchar keeps pyodbc's UTF-16 default."""
    r4_cp1252.register()
    connection.setdecoding(pyodbc.SQL_CHAR, encoding=dialect.char_encoding)


# "optional feature not implemented" / "invalid attribute": a driver without read-only mode
_UNSUPPORTED_ATTRIBUTE = frozenset({"HYC00", "HY092", "HY024", "S1C00", "S1092"})


def _connect(connection_string: str, login_timeout_s: int) -> Any:
    """pyodbc.connect in read-only access mode; again without it if the driver lacks that mode
    (it is only a hint: the SELECT-only guard is what keeps R4 unchanged)."""
    try:
        return pyodbc.connect(
            connection_string, autocommit=True, readonly=True, timeout=login_timeout_s
        )
    except pyodbc.Error as e:
        if _driver_state_and_message(e)[0] not in _UNSUPPORTED_ATTRIBUTE:
            raise
    return pyodbc.connect(connection_string, autocommit=True, timeout=login_timeout_s)


def local_machine_names() -> frozenset[str]:
    """This machine's names (lower case), for telling a local SQL Server from a remote one."""
    names = {socket.gethostname(), os.environ.get("COMPUTERNAME", "")}
    names |= {n.split(".", 1)[0] for n in names}
    return frozenset(n.strip().lower() for n in names if n.strip())


def connect_first(
    attempts: Sequence[Attempt], connect: Callable[[str], Any]
) -> tuple[Any, Attempt]:
    """The first attempt that `connect` (pyodbc.connect's edge, given a connection string)
    opens. After a TLS handshake failure the next one is tried (the plan holds more only for a
    local server or an explicit `encrypt`); any other failure, or the last attempt's, is raised
    as TransientError/PermanentError. Logs which driver and encryption connected."""
    for n, attempt in enumerate(attempts):
        try:
            connection = odbc_call(
                partial(connect, attempt.connection_string),
                target=describe_target(attempt.connection_string),
                action="connect",
                connecting=True,
            )
        except AgentError as e:
            if n + 1 == len(attempts) or not is_tls_handshake_failure(str(e)):
                raise
            log.warning(
                "R4: the TLS handshake failed with %s; trying %s",
                attempt.describe(),
                attempts[n + 1].describe(),
            )
            continue
        after = " (after a TLS handshake failure with the drivers before it)" if n else ""
        (log.warning if n else log.info)("R4: connected with %s%s", attempt.describe(), after)
        return connection, attempt
    raise AssertionError("connection_plan returned no attempt")


def open_database(settings: DbSettings) -> R4Database:
    """Connect to R4 read-only (autocommit, read-only access mode, login + query timeouts),
    through the attempts of `connection_plan` (the TLS fallback for a local server).

    Raises TransientError when the server/file cannot be reached, PermanentError when no driver
    is installed, the driver cannot load, or the login is refused.
    """
    installed: list[str] = (
        []
        if settings.connection_string
        else odbc_call(
            lambda: list(pyodbc.drivers()), target="ODBC driver manager", action="list drivers"
        )
    )
    attempts = connection_plan(settings, installed, machine_names=local_machine_names())
    connection, attempt = connect_first(
        attempts, partial(_connect, login_timeout_s=settings.login_timeout_s)
    )
    target = describe_target(attempt.connection_string)

    def configure() -> Dialect:
        connection.timeout = settings.query_timeout_s
        dialect = _detect_dialect(connection, attempt.connection_string)
        set_text_decoding(connection, dialect)
        return dialect

    try:
        dialect = odbc_call(configure, target=target, action="configure connection")
    except BaseException:
        _close_quietly(connection)
        raise
    return R4Database(connection, dialect, target, encryption=attempt.encryption)
