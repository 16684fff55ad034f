"""What went wrong with R4, in plain words, and how to fix it (for `r4agent doctor`). Pure.

- a refused login (SQL Server error 18456/18452): names the account the server refused (the
  service account `NT AUTHORITY\\SYSTEM` under Windows authentication) and gives both fixes:
  give that account read access to `sys2000`, or reinstall with a SQL login
  (`SQLUSER`/`SQLPASSWORD`);
- a database that cannot be opened (4060): names it, and says R4's is `sys2000`;
- a TLS handshake failure: what the agent already tried, and what is left;
- the wrong database (`NG_R4_Sys2000`, R4's newer schema; `Tutor`, its training copy): names
  it and suggests `sys2000`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import PureWindowsPath

from agent.r4.connect_failures import (
    CANNOT_OPEN_DATABASE,
    connect_refusal,
    is_tls_handshake_failure,
)
from agent.r4.connection_plan import DbSettings, connection_attributes, is_local_server

R4_DATABASE = "sys2000"
SERVICE_ACCOUNT = "NT AUTHORITY\\SYSTEM"  # the MSI installs the service as LocalSystem
# Other databases on an R4 server (REALITY.md §2), lower case -> what each one is.
OTHER_R4_DATABASES = {
    "ng_r4_sys2000": "R4's newer schema (GUID keys), not the one the agent reads",
    "tutor": "R4's training database, not the practice's",
}
_STAND_IN_SUFFIXES = (".db", ".sqlite", ".sqlite3")
USE_R4_DATABASE = (
    f'set [database] database = "{R4_DATABASE}" (or reinstall with DBNAME={R4_DATABASE})'
)
REINSTALL_WITH_SQL_LOGIN = (
    "msiexec /i r4agent.msi /qn SQLUSER=<login> SQLPASSWORD=<password> "
    "(or set [database] user and password_file)"
)


@dataclass(frozen=True, slots=True)
class Advice:
    summary: str  # what happened, in a sentence (goes before the driver's message)
    hint: str  # the fix(es)


def database_name(settings: DbSettings) -> str:
    """The database the settings open: the connection string's Database/Initial Catalog, else
    `settings.database`. For the SQLite stand-in, its file name without the extension."""
    name = settings.database
    if settings.connection_string:
        attrs = connection_attributes(settings.connection_string)
        name = attrs.get("database") or attrs.get("initial catalog") or name
    base = PureWindowsPath(name).name or name
    for suffix in _STAND_IN_SUFFIXES:
        if base.lower().endswith(suffix):
            return base[: -len(suffix)]
    return base


def other_r4_database(name: str) -> str | None:
    """What `name` is when it is one of R4's other databases (not `sys2000`), else None."""
    what = OTHER_R4_DATABASES.get(name.lower())
    return None if what is None else f"'{name}' is {what}"


def connect_failure(
    message: str, settings: DbSettings, machine_names: Collection[str]
) -> Advice | None:
    """Advice for a failed connect (the agent error's text), or None when it is none of a
    refused login, a database that cannot be opened, or a TLS handshake failure."""
    refusal = connect_refusal(message)
    if refusal is not None and refusal.error == CANNOT_OPEN_DATABASE:
        return _cannot_open_database(refusal.database, refusal.account, settings)
    if refusal is not None:
        return _login_refused(refusal.account, settings)
    if is_tls_handshake_failure(message):
        return _tls_failed(settings, machine_names)
    return None


def _login_refused(account: str | None, settings: DbSettings) -> Advice:
    database = database_name(settings)
    if settings.user is None:
        who = account or SERVICE_ACCOUNT
        return Advice(
            f"SQL Server refused the login of {who} (Windows authentication: the service "
            "account)",
            f"either give {who} read access to {database} (SQL Server Management Studio: "
            f"Security > Logins > New Login '{who}', User Mapping: {database}, role "
            f"db_datareader), or reinstall with a SQL login that has it: "
            f"{REINSTALL_WITH_SQL_LOGIN}",
        )
    who = account or settings.user
    return Advice(
        f"SQL Server refused the SQL login '{who}' (a wrong password, a login that does not "
        "exist or is disabled, or a server that accepts Windows logins only)",
        f"either fix the SQL login: check [database] user and password (or reinstall with the "
        f"right SQLUSER=... SQLPASSWORD=...), and let the server accept SQL logins ('SQL "
        f"Server and Windows Authentication mode'); or give the service account "
        f"{SERVICE_ACCOUNT} read access to {database} and remove [database] user/password "
        "to use Windows authentication",
    )


def _cannot_open_database(name: str | None, account: str | None, settings: DbSettings) -> Advice:
    database = name or database_name(settings)
    who = account or settings.user or SERVICE_ACCOUNT
    other = other_r4_database(database_name(settings))
    wrong = f"{other}; " if other else ""
    return Advice(
        f"SQL Server cannot open database '{database}' for {who}: it does not exist there, "
        "or this login may not use it",
        f"{wrong}R4's practice database is {R4_DATABASE}: check [database] database (or "
        f"reinstall with DBNAME={R4_DATABASE}); if the name is right, map {who} to it "
        "(Security > Logins > User Mapping, role db_datareader)",
    )


def _tls_failed(settings: DbSettings, machine_names: Collection[str]) -> Advice:
    update = "install SQL Server's TLS 1.2 update (Microsoft KB3135244)"
    if settings.connection_string:
        return Advice(
            "the TLS handshake with SQL Server failed (SQL Server 2008 R2 speaks only TLS "
            "1.0/1.1)",
            f"{update}; or, for a local or trusted network, put Encrypt=no in [database] "
            "connection_string (or drop the connection string: the agent then tries every "
            "installed driver, and for a local server without encryption)",
        )
    if is_local_server(settings.server, machine_names):
        return Advice(
            "the TLS handshake with the local SQL Server failed with every driver tried, "
            "encryption off included (SQL Server 2008 R2 speaks only TLS 1.0/1.1)",
            f"{update}, or allow TLS 1.0/1.1 in this machine's Windows (SCHANNEL protocols)",
        )
    return Advice(
        "the TLS handshake with the remote SQL Server failed (SQL Server 2008 R2 speaks only "
        "TLS 1.0/1.1)",
        f"{update}; or, only if the network to the server is trusted, set [database] "
        "encrypt = false (the agent never turns encryption off by itself for a remote server)",
    )


def schema_problems(name: str, problems: Sequence[str]) -> str:
    """The fix hint for the schema check's problems in database `name`."""
    other = other_r4_database(name)
    if other is not None:
        return f"{other}: {USE_R4_DATABASE}"
    if name.lower() != R4_DATABASE and all(p.startswith("missing table") for p in problems):
        return (
            f"'{name}' does not look like R4's database: R4's practice database is "
            f"{R4_DATABASE}; check [database] database"
        )
    return f"is this the R4 database ({R4_DATABASE})? check [database] database"
