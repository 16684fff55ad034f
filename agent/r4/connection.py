"""The one door to R4: connection settings, driver choice, and a SELECT-only database wrapper.

`open_database(settings)` connects through pyodbc (unixODBC / Windows ODBC) and returns an
`R4Database` that knows its SQL dialect and will only execute statements that pass the
SELECT-only guard. pyodbc errors are translated here, once:
connection/communication failures -> TransientError, everything else -> PermanentError. Error
messages name the statement, driver, server and database — never a password (masked in any
connection string) and never row contents (driver messages keep only known-safe parts, see
agent.r4.driver_messages).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pyodbc

from agent.errors import AgentError, PermanentError, TransientError, UnsafeStatementError
from agent.r4 import cp1252 as r4_cp1252
from agent.r4 import driver_messages
from agent.r4 import sql as r4sql
from agent.r4.guard import check_select_only
from agent.r4.sql import Dialect, Statement

# Most preferred first. Driver 18 encrypts by default (needs TrustServerCertificate for a
# local self-signed server); the last one ships with every Windows.
DRIVER_PREFERENCE: tuple[str, ...] = (
    "ODBC Driver 18 for SQL Server",
    "ODBC Driver 17 for SQL Server",
    "SQL Server Native Client 11.0",
    "SQL Server Native Client 10.0",
    "SQL Native Client",
    "SQL Server",
)
# Drivers that understand ApplicationIntent (ignored by a standalone server: harmless there).
_READ_INTENT_DRIVERS = frozenset(DRIVER_PREFERENCE[:3])

Row = Sequence[Any]  # a pyodbc Row: indexable and unpackable like a tuple
StatementObserver = Callable[[Statement], None]


@dataclass(frozen=True, slots=True, repr=False)
class DbSettings:
    """Where R4 is. `connection_string` (from config) overrides the built-in default, which is
    Windows authentication to `server`, database `database`, with the best installed driver."""

    connection_string: str | None = None
    server: str = "."
    database: str = "sys2000"
    login_timeout_s: int = 15
    query_timeout_s: int = 300

    def __repr__(self) -> str:  # a connection string may carry a password
        cs = mask_secrets(self.connection_string) if self.connection_string else None
        return (
            f"DbSettings(connection_string={cs!r}, server={self.server!r}, "
            f"database={self.database!r})"
        )


_SECRET_KEYS = re.compile(r"(?i)\b(PWD|Password)\s*=\s*(\{(?:[^}]|\}\})*\}|[^;]*)")


def mask_secrets(connection_string: str) -> str:
    """The connection string with every PWD=/Password= value replaced by ***."""
    return _SECRET_KEYS.sub(lambda m: f"{m.group(1)}=***", connection_string)


def pick_driver(installed: Sequence[str]) -> str | None:
    """The most preferred SQL Server driver among `installed` (pyodbc.drivers()), or None."""
    names = set(installed)
    return next((d for d in DRIVER_PREFERENCE if d in names), None)


def default_connection_string(driver: str, server: str, database: str) -> str:
    parts = [
        f"Driver={{{driver}}}",
        f"Server={server}",
        f"Database={database}",
        "Trusted_Connection=yes",
    ]
    if driver == "ODBC Driver 18 for SQL Server":
        parts.append("TrustServerCertificate=yes")
    if driver in _READ_INTENT_DRIVERS:
        parts.append("ApplicationIntent=ReadOnly")
    return ";".join(parts) + ";"


def connection_attributes(connection_string: str) -> dict[str, str]:
    """key (lower case) -> value of a connection string; braces around a value are removed."""
    attrs: dict[str, str] = {}
    for m in re.finditer(r"\s*([^=;]+?)\s*=\s*(\{(?:[^}]|\}\})*\}|[^;]*);?", connection_string):
        value = m.group(2).strip()
        if value.startswith("{") and value.endswith("}"):
            value = value[1:-1].replace("}}", "}")
        attrs[m.group(1).strip().lower()] = value
    return attrs


def resolve_connection_string(settings: DbSettings, installed: Sequence[str]) -> str:
    """The connection string to use. Raises PermanentError if no SQL Server driver is there."""
    if settings.connection_string:
        return settings.connection_string
    driver = pick_driver(installed)
    if driver is None:
        raise PermanentError(
            "no SQL Server ODBC driver installed; looked for: "
            + ", ".join(DRIVER_PREFERENCE)
            + f"; installed: {', '.join(installed) or 'none'}"
        )
    return default_connection_string(driver, settings.server, settings.database)


def describe_target(connection_string: str) -> str:
    """'driver=..., server=..., database=...' for messages. No secrets, no other keys."""
    attrs = connection_attributes(connection_string)
    driver = attrs.get("driver") or (f"DSN {attrs['dsn']}" if "dsn" in attrs else "?")
    server = attrs.get("server") or attrs.get("address") or attrs.get("addr") or "-"
    database = attrs.get("database") or attrs.get("initial catalog") or "-"
    return f"driver={driver}, server={server}, database={database}"


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


def _is_transient(exc: pyodbc.Error, state: str, *, connecting: bool) -> bool:
    if state.startswith(("IM", "28")) or "Can't open lib" in str(exc.args):
        return False  # driver missing / not loadable, login refused: configuration problems
    if connecting:
        return True  # server or file not reachable (yet): a restarting server comes back
    if state.startswith(("08", "HYT")) or state in ("40001", "HY008"):
        return True  # communication link failure, timeouts, deadlock victim
    return isinstance(exc, pyodbc.OperationalError)


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
) -> TransientError | PermanentError:
    """The agent error for a pyodbc error. Its `__cause__` is a scrubbed copy of the driver
    error (same type and SQLSTATE): the raw one may quote row values, and error reporters
    walk the cause chain. `statement` is the SQL text that failed, if any."""
    state, message = _driver_state_and_message(exc)
    scrubbed = scrub_driver_message(
        state, message, target=target, statement=statement, connecting=connecting
    )
    # pyodbc's message starts with the SQLSTATE in brackets; its own errors have none
    stated = scrubbed if scrubbed.startswith(f"[{state}] ") else f"[{state or '?'}] {scrubbed}"
    text = f"R4 {action} failed ({target}): {stated}"
    translated: TransientError | PermanentError = (
        TransientError(text)
        if _is_transient(exc, state, connecting=connecting)
        else PermanentError(text)
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
    """Run one pyodbc call; a pyodbc error becomes TransientError/PermanentError, a text
    value the codec cannot decode (pyodbc raises the codec's UnicodeDecodeError) PermanentError.

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
        failure = PermanentError(
            f"R4 {action} failed ({target}): a text value could not be decoded (codec {codec})"
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


def open_database(settings: DbSettings) -> R4Database:
    """Connect to R4 read-only (autocommit, read-only access mode, login + query timeouts).

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
    connection_string = resolve_connection_string(settings, installed)
    target = describe_target(connection_string)
    connection = odbc_call(
        lambda: _connect(connection_string, settings.login_timeout_s),
        target=target,
        action="connect",
        connecting=True,
    )

    def configure() -> Dialect:
        connection.timeout = settings.query_timeout_s
        dialect = _detect_dialect(connection, connection_string)
        set_text_decoding(connection, dialect)
        return dialect

    try:
        dialect = odbc_call(configure, target=target, action="configure connection")
    except BaseException:
        _close_quietly(connection)
        raise
    return R4Database(connection, dialect, target)
