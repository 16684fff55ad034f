"""Which kind of failure a driver error is, read from pyodbc's SQLSTATE and diagnostic records
(`[SQLSTATE] [components]text (native error)`, see agent.r4.driver_messages).

- UNAVAILABLE: R4 cannot answer now and will again without anyone's help: the link dropped
  (08S01, 08001), a timeout (HYT00, HYT01), a deadlock victim (40001 / 1205), a lock timeout
  (1222), a server that is starting, stopping, paused or recovering a database, SQLite's busy
  and locked, and a file that is being swapped (a restore: missing, not a database yet).
- DATA: a value could not be converted (SQLSTATE class 22): the row is at fault.
- REFUSED: everything else (a table missing, permissions, a driver that cannot load, a login
  refused): a person must put it right.

SQL Server's native error numbers are matched, not its texts, so a localised server counts too;
SQLite's ODBC driver says HY000 for everything, so its result codes are read, with its
component (`[SQLite]`) and its texts (tests/r4/test_failure_kinds.py pins the real texts).
Pure text work, no I/O.
"""

from __future__ import annotations

import enum
from typing import Final

from agent.r4 import driver_messages


class FailureKind(enum.Enum):
    UNAVAILABLE = "unavailable"
    DATA = "data"
    REFUSED = "refused"


# SQL Server native errors that say "not now": the statement or connection may be tried again.
SQL_SERVER_TRANSIENT: Final = frozenset(
    {
        1205,  # chosen as the deadlock victim
        1222,  # lock request time out period exceeded
        233,  # no process is on the other end of the pipe (the server went away)
        64,  # the specified network name is no longer available
        121,  # the semaphore timeout period has expired
        10053,  # WSAECONNABORTED
        10054,  # WSAECONNRESET
        10060,  # WSAETIMEDOUT
        6005,  # SHUTDOWN is in progress
        17142,  # the SQL Server service has been paused
        18401,  # login failed: the server is in script upgrade mode (after a service pack)
        922,  # database is being recovered
        927,  # database cannot be opened: it is in the middle of a restore
        942,  # database cannot be opened because it is offline
        952,  # database is in transition
        983,  # availability replica not ready
        40613,  # database not currently available
    }
)
# SQLite result codes, as its ODBC driver appends them: busy, locked, cannot open the file,
# not a database (a file half copied back during a restore), I/O error.
SQLITE_TRANSIENT: Final = frozenset({5, 6, 10, 14, 26})
_SQLITE_TRANSIENT_TEXTS: Final = (
    "database is locked",
    "database table is locked",
    "unable to open database file",
    "file is not a database",
    "disk i/o error",
    "connect failed",
)
# Driver manager / driver not loadable, login refused: configuration, not an outage.
_NEVER_TRANSIENT_CLASSES: Final = ("IM", "28")


def classify(
    state: str, message: str, *, connecting: bool, operational: bool = False
) -> FailureKind:
    """The kind of a pyodbc error: its SQLSTATE (`""` when pyodbc raised it itself), its
    message as pyodbc formats it, and whether pyodbc raised it as an OperationalError (its own
    verdict for the 08xxx / HYT states and the like, kept for what no table here names)."""
    found = driver_messages.records(message)
    natives = {r.native for r in found}
    if natives & SQL_SERVER_TRANSIENT and not _is_sqlite(message):
        return FailureKind.UNAVAILABLE  # before the login class: 18401 is a 28000 too
    if state.startswith(_NEVER_TRANSIENT_CLASSES) or "Can't open lib" in message:
        return FailureKind.REFUSED
    if _is_sqlite(message) and (
        natives & SQLITE_TRANSIENT
        or any(t in r.text.lower() for r in found for t in _SQLITE_TRANSIENT_TEXTS)
    ):
        return FailureKind.UNAVAILABLE
    states = {state, *(r.state for r in found)}
    if any(s.startswith(("08", "HYT")) or s in ("40001", "HY008") for s in states):
        return FailureKind.UNAVAILABLE  # link failure, timeouts, deadlock victim, cancelled
    if connecting or operational:
        return FailureKind.UNAVAILABLE  # not reachable (yet): a restarting server comes back
    if state.startswith("22"):
        return FailureKind.DATA
    return FailureKind.REFUSED


def _is_sqlite(message: str) -> bool:
    return "[SQLite]" in message
