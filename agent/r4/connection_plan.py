"""Which connection strings to try, in which order: settings, driver choice, the login, the
TLS fallback. Pure text work: no pyodbc, no I/O (`agent.r4.connection` is the edge).

Without a configured connection string the agent builds one for the best installed SQL Server
driver, with Windows authentication (the service account) or a SQL login
(`DbSettings.user`/`password`). SQL Server 2008 R2 speaks only TLS 1.0/1.1, which today's
drivers and Windows may refuse; so for a LOCAL server the plan goes on, after a TLS handshake
failure, to the next installed driver and finally to the first one with `Encrypt=no`. A local
connection never leaves the machine, so turning encryption off costs nothing there. For a
remote server only an explicit `encrypt=False` turns it off (and an explicit `encrypt=True`
keeps it on, for every driver tried).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from agent.errors import PermanentError

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
# The others default to Encrypt=no: for them "Encrypt=no" is the attempt already made.
ENCRYPTING_BY_DEFAULT = frozenset({"ODBC Driver 18 for SQL Server"})
# Server names that mean this machine, whatever it is called.
_LOCAL_HOSTS = frozenset({".", "(local)", "localhost", "127.0.0.1", "::1", "(localdb)"})


@dataclass(frozen=True, slots=True, repr=False)
class DbSettings:
    """Where R4 is and how to log in. `connection_string` (from config) overrides the built-in
    default, which is `server`, database `database`, with the best installed driver and Windows
    authentication, or the SQL login `user` + `password` when set (also added to a configured
    connection string). `encrypt`: None = the driver's default (with the local TLS fallback),
    True/False = Encrypt=yes/no for every driver tried."""

    connection_string: str | None = None
    server: str = "."
    database: str = "sys2000"
    login_timeout_s: int = 15
    query_timeout_s: int = 300
    user: str | None = None
    password: str | None = None
    encrypt: bool | None = None

    def __repr__(self) -> str:  # a connection string may carry a password
        cs = mask_secrets(self.connection_string) if self.connection_string else None
        return (
            f"DbSettings(connection_string={cs!r}, server={self.server!r}, "
            f"database={self.database!r}, user={self.user!r}, "
            f"password={'***' if self.password else None}, encrypt={self.encrypt!r})"
        )


@dataclass(frozen=True, slots=True, repr=False)
class Attempt:
    """One way to connect: a driver, how it encrypts (for the log), the connection string."""

    driver: str
    encryption: str  # "on", "off", "the driver's default", "as configured"
    connection_string: str

    def describe(self) -> str:
        return f"driver '{self.driver}', encryption {self.encryption}"

    def __repr__(self) -> str:
        return f"Attempt({self.describe()}, {mask_secrets(self.connection_string)!r})"


_SECRET_KEYS = re.compile(r"(?i)\b(PWD|Password)\s*=\s*(\{(?:[^}]|\}\})*\}|[^;]*)")


def mask_secrets(connection_string: str) -> str:
    """The connection string with every PWD=/Password= value replaced by ***."""
    return _SECRET_KEYS.sub(lambda m: f"{m.group(1)}=***", connection_string)


def braced(value: str) -> str:
    """An ODBC connection-string value that may hold ; = { } or spaces: {value, '}' doubled}."""
    return "{" + value.replace("}", "}}") + "}"


def pick_driver(installed: Sequence[str]) -> str | None:
    """The most preferred SQL Server driver among `installed` (pyodbc.drivers()), or None."""
    return next(iter(installed_in_preference(installed)), None)


def installed_in_preference(installed: Sequence[str]) -> list[str]:
    names = set(installed)
    return [d for d in DRIVER_PREFERENCE if d in names]


def login_parts(user: str | None, password: str | None) -> list[str]:
    """Windows authentication, or the SQL login (values braced: a password may hold ';')."""
    if user is None:
        return ["Trusted_Connection=yes"]
    return [f"UID={braced(user)}", f"PWD={braced(password or '')}"]


def default_connection_string(
    driver: str,
    server: str,
    database: str,
    *,
    user: str | None = None,
    password: str | None = None,
    encrypt: bool | None = None,
) -> str:
    parts = [f"Driver={{{driver}}}", f"Server={server}", f"Database={database}"]
    parts += login_parts(user, password)
    if encrypt is True:
        parts += ["Encrypt=yes", "TrustServerCertificate=yes"]
    elif encrypt is False:
        parts.append("Encrypt=no")
    elif driver in ENCRYPTING_BY_DEFAULT:
        parts.append("TrustServerCertificate=yes")  # a practice server's cert is self-signed
    if driver in _READ_INTENT_DRIVERS:
        parts.append("ApplicationIntent=ReadOnly")
    return ";".join(parts) + ";"


def with_login(connection_string: str, user: str | None, password: str | None) -> str:
    """A configured connection string with the SQL login added (config refuses a string that
    names its own login together with `user`); without `user` it is used as is."""
    if user is None:
        return connection_string
    head = connection_string.rstrip()
    joiner = "" if not head or head.endswith(";") else ";"
    return head + joiner + ";".join(login_parts(user, password)) + ";"


def connection_attributes(connection_string: str) -> dict[str, str]:
    """key (lower case) -> value of a connection string; braces around a value are removed."""
    attrs: dict[str, str] = {}
    for m in re.finditer(r"\s*([^=;]+?)\s*=\s*(\{(?:[^}]|\}\})*\}|[^;]*);?", connection_string):
        value = m.group(2).strip()
        if value.startswith("{") and value.endswith("}"):
            value = value[1:-1].replace("}}", "}")
        attrs[m.group(1).strip().lower()] = value
    return attrs


def describe_target(connection_string: str) -> str:
    """'driver=..., server=..., database=...' for messages. No secrets, no other keys."""
    attrs = connection_attributes(connection_string)
    driver = _driver_named(attrs)
    server = attrs.get("server") or attrs.get("address") or attrs.get("addr") or "-"
    database = attrs.get("database") or attrs.get("initial catalog") or "-"
    return f"driver={driver}, server={server}, database={database}"


def _driver_named(attrs: dict[str, str]) -> str:
    return attrs.get("driver") or (f"DSN {attrs['dsn']}" if "dsn" in attrs else "?")


def is_local_server(server: str, machine_names: Collection[str]) -> bool:
    """Does `server` (a SQL Server name as ODBC takes it) mean this machine? `.`, `(local)`,
    `localhost`, loopback, this machine's name (`machine_names`, lower case), each with or
    without an instance (`.\\R4`) or port (`localhost,1433`) and a `tcp:`/`np:` prefix;
    shared memory (`lpc:`) is local by definition."""
    name = server.strip().lower()
    if name.startswith("lpc:"):
        return True
    for prefix in ("tcp:", "np:", "admin:"):
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    if name.startswith("\\\\"):  # a named pipe: \\host\pipe\...
        host = name[2:].split("\\", 1)[0]
    else:
        host = re.split(r"[\\,]", name, maxsplit=1)[0]
    host = host.strip()
    return host in _LOCAL_HOSTS or host in machine_names


def connection_plan(
    settings: DbSettings, installed: Sequence[str], *, machine_names: Collection[str]
) -> list[Attempt]:
    """The connections to try, in order; the next one only after a TLS handshake failure.

    A configured connection string is the only attempt. Otherwise: the best installed driver
    (`encrypt` applied); for a local server, or with encryption explicitly set, each further
    installed driver; for a local server with `encrypt` unset, last, the first driver with
    Encrypt=no (when its default is to encrypt). Raises PermanentError if no SQL Server driver
    is installed.
    """
    if settings.connection_string:
        cs = with_login(settings.connection_string, settings.user, settings.password)
        return [Attempt(_driver_named(connection_attributes(cs)), "as configured", cs)]
    drivers = installed_in_preference(installed)
    if not drivers:
        raise PermanentError(
            "no SQL Server ODBC driver installed; looked for: "
            + ", ".join(DRIVER_PREFERENCE)
            + f"; installed: {', '.join(installed) or 'none'}"
        )

    def attempt(driver: str, encrypt: bool | None) -> Attempt:
        cs = default_connection_string(
            driver,
            settings.server,
            settings.database,
            user=settings.user,
            password=settings.password,
            encrypt=encrypt,
        )
        return Attempt(driver, _encryption(driver, encrypt), cs)

    local = is_local_server(settings.server, machine_names)
    if not local and settings.encrypt is None:
        # Driver 17 and older default to no encryption: going on to them would turn it off
        return [attempt(drivers[0], None)]
    attempts = [attempt(d, settings.encrypt) for d in drivers]
    if local and settings.encrypt is None and drivers[0] in ENCRYPTING_BY_DEFAULT:
        attempts.append(attempt(drivers[0], False))
    return attempts


def _encryption(driver: str, encrypt: bool | None) -> str:
    if encrypt is not None:
        return "on" if encrypt else "off"
    return "on (the driver's default)" if driver in ENCRYPTING_BY_DEFAULT else (
        "the driver's default (off unless the server requires it)"
    )
