"""What a failed connection to R4 says about itself, read from the driver's message text.

Two questions the agent and `doctor` ask after a connect failed:
- was it the TLS handshake? (SQL Server 2008 R2 speaks only TLS 1.0/1.1; a modern driver or
  Windows that insists on TLS 1.2 fails before the login) -> `is_tls_handshake_failure`;
- did SQL Server refuse the login (error 18456, 18452) or the database (4060), and for which
  account / database? -> `connect_refusal`.

Pure text work on pyodbc's message (`[SQLSTATE] [components]text (native error)` per
diagnostic record, records joined by `; `). The native error numbers are what is matched, so a
localised server still counts; the account and database names come from the quotes in those
records. While connecting, no row has been read: the message holds no patient data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agent.r4 import driver_messages

# Phrases of the drivers' TLS handshake failures (Microsoft's ODBC drivers, Native Client, the
# old `SQL Server` driver's DBNETLIB); the tests pin the real texts each one comes from.
_TLS_PHRASES = (
    "ssl provider",  # msodbcsql 11-18 and Native Client: "SSL Provider: ..."
    "ssl security error",  # SQL Server driver: "[DBNETLIB]SSL Security error"
    "secdoclienthandshake",  # SQL Server driver: "ConnectionOpen (SECDoClientHandshake())."
    "seccreatecredentials",  # SQL Server driver: "ConnectionOpen (SECCreateCredentials())."
    "encryption not supported on the client",
    # msodbcsql on Linux/macOS: the server resets the connection at a ClientHello it cannot
    # answer (WSAECONNRESET, 10054); OpenSSL's "unsupported protocol" is the other form
    "tcp provider: error code 0x2746",
)

LOGIN_FAILED = 18456  # "Login failed for user '...'."
UNTRUSTED_LOGIN = 18452  # "Login failed. The login is from an untrusted domain ..."
CANNOT_OPEN_DATABASE = 4060  # 'Cannot open database "..." requested by the login.'

_ENGLISH_LOGIN = re.compile(r"Login failed for user '(?P<name>.*?)'\.")
_SINGLE_QUOTED = re.compile(r"'(?P<name>[^']*)'")
_DOUBLE_QUOTED = re.compile(r'"(?P<name>[^"]*)"')


@dataclass(frozen=True, slots=True)
class ConnectRefusal:
    """SQL Server answered, and refused: `error` is 18456/18452 (the login) or 4060 (the
    database); `account` / `database` as the server named them (None if it did not)."""

    error: int
    account: str | None = None
    database: str | None = None


def is_tls_handshake_failure(message: str) -> bool:
    """Did this connect fail in the TLS/SSL handshake (before any login)?"""
    text = message.lower()
    return any(phrase in text for phrase in _TLS_PHRASES)


def connect_refusal(message: str) -> ConnectRefusal | None:
    """The login or database refusal in a driver message, or None if it holds none."""
    records = [(r.native, r.text) for r in driver_messages.records(message)]
    account = next(
        (_account(text) for native, text in records if native == LOGIN_FAILED), None
    )
    for native, text in records:
        if native == CANNOT_OPEN_DATABASE:
            quoted = _DOUBLE_QUOTED.search(text)
            return ConnectRefusal(native, account, quoted.group("name") if quoted else None)
    for native, _text in records:
        if native in (LOGIN_FAILED, UNTRUSTED_LOGIN):
            return ConnectRefusal(native, account)
    return None


def _account(text: str) -> str | None:
    found = _ENGLISH_LOGIN.search(text) or _SINGLE_QUOTED.search(text)  # localised: the quotes
    return found.group("name") if found else None
