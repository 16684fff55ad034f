"""The agent's one configuration file (TOML), read and validated once at start-up.

Where the file is (first that applies):
1. the path given to `load_config` (the CLI's `--config PATH`);
2. the environment variable `R4AGENT_CONFIG`;
3. the platform default: `%ProgramData%\\Flynotes\\R4Agent\\config.toml` on Windows,
   `/var/lib/r4agent/config.toml` elsewhere.

Every mistake becomes one `ConfigError` whose message names the file, the key and what is
expected, e.g. ``config.toml: key 'backend_url' must be an https:// URL (got a value without a
scheme)``. Secret values are never echoed: a wrong licence key is described, not quoted.
Every key is documented in docs/config.md.
"""

from __future__ import annotations

import os
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from agent.errors import ConfigError

ENV_VAR: Final = "R4AGENT_CONFIG"
CONFIG_FILENAME: Final = "config.toml"
DEFAULT_ROLLBAR_ENDPOINT: Final = "https://api.rollbar.com/api/1/"
DEFAULT_ROLLBAR_ENVIRONMENT: Final = "production"
LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "localhost", "::1"})
DEFAULT_LONG_POLL_SECONDS: Final = 20  # = agent.sqs_queue.LONG_POLL_SECONDS, SQS's maximum


@dataclass(frozen=True, slots=True, repr=False, eq=True)
class Secret:
    """A secret string whose repr and str are masked, so it cannot leak through a log line,
    an f-string or a traceback. Call `reveal()` exactly where the value is needed."""

    _value: str = field(compare=True)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    """How to reach R4. The same fields as `agent.r4.connection.DbSettings`."""

    connection_string: Secret | None = None  # may hold a SQL password
    server: str = "."
    database: str = "sys2000"
    user: str | None = None  # a SQL Server login; None = Windows authentication
    password: Secret | None = None  # the SQL login's password (with `user` only)
    encrypt: bool | None = None  # None: the driver's default, falling back for a local server


@dataclass(frozen=True, slots=True)
class RollbarConfig:
    access_token: Secret | None  # None: errors are logged locally only (NullSink)
    environment: str = DEFAULT_ROLLBAR_ENVIRONMENT
    endpoint: str = DEFAULT_ROLLBAR_ENDPOINT


@dataclass(frozen=True, slots=True)
class AgentConfig:
    config_path: Path
    licence_key: Secret
    backend_url: str
    db: DatabaseConfig
    rollbar: RollbarConfig
    data_dir: Path
    sqs_endpoint_url: str | None = None  # dev/test only (moto); None = real AWS
    update_url: str | None = None  # TUF repository; the host's R4AGENT_UPDATE_URL wins
    proxy: Secret | None = None  # may hold user:password@
    poll_minutes: float = 60.0  # how long to long-poll SQS between version checks
    life_hours: float = 24.0  # exit cleanly after this much uptime
    long_poll_seconds: int = DEFAULT_LONG_POLL_SECONDS  # dev/test only: SQS WaitTimeSeconds

    @property
    def poll_hours(self) -> float:
        return self.poll_minutes / 60.0

    def secret_values(self) -> list[str]:
        """Every secret in this config, for the log masking filter (agent.logs)."""
        values = [self.licence_key.reveal()]
        if self.rollbar.access_token is not None:
            values.append(self.rollbar.access_token.reveal())
        if self.proxy is not None:
            password = urlsplit(self.proxy.reveal()).password
            if password:
                values.append(password)
        if self.db.connection_string is not None:
            values.extend(_connection_string_passwords(self.db.connection_string.reveal()))
        if self.db.password is not None:
            password = self.db.password.reveal()
            # as the connection string holds it, too: braced, '}' doubled
            values += [password, password.replace("}", "}}")]
        return values


def default_data_dir(env: Mapping[str, str], *, platform: str = sys.platform) -> Path:
    if platform == "win32":
        program_data = env.get("ProgramData") or env.get("PROGRAMDATA") or r"C:\ProgramData"
        return Path(program_data) / "Flynotes" / "R4Agent"
    return Path("/var/lib/r4agent")


def config_path(path: Path | None, env: Mapping[str, str]) -> Path:
    """Which file `load_config` reads (see the module docstring for the order)."""
    if path is not None:
        return path
    from_env = env.get(ENV_VAR)
    if from_env:
        return Path(from_env)
    return default_data_dir(env) / CONFIG_FILENAME


# ---------------------------------------------------------------------------------------------
# The schema: every key the file may hold, so a typo is an error naming the unknown key.

_TOP_KEYS: Final = frozenset(
    {
        "licence_key",
        "licence_key_file",
        "backend_url",
        "sqs_endpoint_url",
        "update_url",
        "data_dir",
        "proxy",
        "database",
        "rollbar",
        "timing",
    }
)
_TABLE_KEYS: Final[Mapping[str, frozenset[str]]] = {
    "database": frozenset(
        {"connection_string", "server", "database", "user", "password", "password_file", "encrypt"}
    ),
    "rollbar": frozenset({"access_token", "access_token_file", "environment", "endpoint"}),
    "timing": frozenset({"poll_minutes", "life_hours", "long_poll_seconds"}),
}


class _Reader:
    """Typed access to one parsed file; each failure names the file and the dotted key."""

    def __init__(self, path: Path, data: Mapping[str, object]) -> None:
        self.path = path
        self.data = data

    def fail(self, key: str, expectation: str) -> ConfigError:
        return ConfigError(f"{self.path}: key '{key}' {expectation}")

    def table(self, name: str) -> Mapping[str, object]:
        value = self.data.get(name, {})
        if not isinstance(value, dict):
            raise self.fail(name, f"must be a table ([{name}]) (got {_kind(value)})")
        return value

    def string(
        self, table: Mapping[str, object], key: str, dotted: str, *, secret: bool = False
    ) -> str | None:
        value = table.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.fail(dotted, f"must be a string (got {_kind(value)})")
        stripped = value.strip()
        if not stripped:
            raise self.fail(dotted, "must not be empty")
        if secret and stripped != value:
            raise self.fail(dotted, "must not start or end with spaces")
        return stripped

    def boolean(self, table: Mapping[str, object], key: str, dotted: str) -> bool | None:
        value = table.get(key)
        if value is not None and not isinstance(value, bool):
            raise self.fail(dotted, f"must be true or false (got {_kind(value)})")
        return value

    def number(self, table: Mapping[str, object], key: str, dotted: str, default: float) -> float:
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(dotted, f"must be a number (got {_kind(value)})")
        if value <= 0:
            raise self.fail(dotted, f"must be greater than 0 (got {value})")
        return float(value)

    def whole_number(
        self, table: Mapping[str, object], key: str, dotted: str, default: int, *, at_most: int
    ) -> int:
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(dotted, f"must be a whole number (got {_kind(value)})")
        if not 1 <= value <= at_most:
            raise self.fail(dotted, f"must be from 1 to {at_most} (got {value})")
        return value


def _kind(value: object) -> str:
    names = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "a table",
    }
    return names.get(type(value), f"a {type(value).__name__}")


def _describe_url_problem(value: str, *, loopback_http: bool) -> str | None:
    """Why `value` is not an acceptable service URL, or None when it is."""
    parts = urlsplit(value)
    if not parts.scheme:
        return "got a value without a scheme"
    if parts.scheme not in ("https", "http"):
        return f"got the scheme '{parts.scheme}'"
    if not parts.hostname:
        return "got a URL without a host"
    if parts.scheme == "http" and not (loopback_http and parts.hostname in LOOPBACK_HOSTS):
        return "got plain http:// to a non-loopback host"
    if parts.username or parts.password:
        return "got a URL with a user or password in it"
    return None


def _url(reader: _Reader, table: Mapping[str, object], key: str, dotted: str) -> str | None:
    value = reader.string(table, key, dotted)
    if value is None:
        return None
    problem = _describe_url_problem(value, loopback_http=True)
    if problem is not None:
        raise reader.fail(
            dotted,
            "must be an https:// URL (http:// is accepted only for 127.0.0.1/localhost "
            f"stand-ins) ({problem})",
        )
    return value


def _read_secret_file(reader: _Reader, key: str, raw: str, *, spaces: bool = False) -> Secret:
    path = Path(raw)
    if not path.is_absolute():
        path = reader.path.parent / path
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise reader.fail(key, f"names a file that does not exist ({path})") from None
    except PermissionError:
        raise reader.fail(
            key, f"names a file this account may not read ({path}); check its permissions"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise reader.fail(
            key, f"names a file that cannot be read as UTF-8 text ({path}: {type(e).__name__})"
        ) from None
    value = text.strip()
    if not value:
        raise reader.fail(key, f"names an empty file ({path})")
    if spaces and ("\n" in value or "\r" in value):
        raise reader.fail(key, f"names a file that must hold one line ({path})")
    if not spaces and any(ch.isspace() for ch in value):
        raise reader.fail(key, f"names a file that must hold one line with no spaces ({path})")
    return Secret(value)


def _one_secret(
    reader: _Reader,
    table: Mapping[str, object],
    key: str,
    file_key: str,
    prefix: str,
    *,
    required: bool,
    spaces: bool = False,  # a SQL password may hold spaces (not at its ends)
) -> Secret | None:
    dotted, dotted_file = prefix + key, prefix + file_key
    inline = reader.string(table, key, dotted, secret=True)
    from_file = reader.string(table, file_key, dotted_file)
    if inline is not None and from_file is not None:
        raise reader.fail(dotted, f"and '{dotted_file}' are both set; set exactly one of them")
    if inline is not None:
        if any(ch.isspace() and not (spaces and ch == " ") for ch in inline):
            raise reader.fail(dotted, "must be one line" if spaces else "must not contain spaces")
        return Secret(inline)
    if from_file is not None:
        return _read_secret_file(reader, dotted_file, from_file, spaces=spaces)
    if required:
        raise reader.fail(
            dotted, f"is missing; set '{dotted}' or '{dotted_file}' (a file holding it)"
        )
    return None


def _database_login(
    reader: _Reader, table: Mapping[str, object], connection_string: str | None
) -> tuple[str | None, Secret | None, bool | None]:
    """[database] user + password (or password_file), and encrypt."""
    user = reader.string(table, "user", "database.user")
    password = _one_secret(
        reader, table, "password", "password_file", "database.", required=False, spaces=True
    )
    if user is not None and password is None:
        raise reader.fail(
            "database.user",
            "needs 'database.password' or 'database.password_file' (a file holding it)",
        )
    if password is not None and user is None:
        raise reader.fail("database.user", "is missing; a SQL password needs its login name")
    if user is not None and connection_string is not None:
        names = {key for key, _value in _connection_string_pairs(connection_string)}
        if names & {"uid", "user id", "pwd", "password", "trusted_connection"}:
            raise reader.fail(
                "database.user",
                "is set, but 'database.connection_string' names its own login "
                "(UID/PWD/Trusted_Connection); set one or the other",
            )
    encrypt = reader.boolean(table, "encrypt", "database.encrypt")
    if encrypt is not None and connection_string is not None:
        raise reader.fail(
            "database.encrypt",
            "applies to 'database.server' only; put Encrypt=yes/no in "
            "'database.connection_string' instead",
        )
    return user, password, encrypt


def _check_unknown_keys(reader: _Reader) -> None:
    unknown = sorted(set(reader.data) - _TOP_KEYS)
    for name, allowed in _TABLE_KEYS.items():
        sub = reader.data.get(name)
        if isinstance(sub, dict):
            unknown.extend(sorted(f"{name}.{k}" for k in set(sub) - allowed))
    if unknown:
        names = ", ".join(f"'{k}'" for k in unknown)
        raise ConfigError(
            f"{reader.path}: unknown key(s) {names}; see docs/config.md for the valid keys"
        )


def parse_config(path: Path, text: str) -> AgentConfig:
    """Validate the text of a config file (no I/O except reading a named key file)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        # tomllib's message says where ("... (at line 3, column 12)") but never quotes values.
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    reader = _Reader(path, data)
    _check_unknown_keys(reader)

    licence = _one_secret(reader, data, "licence_key", "licence_key_file", "", required=True)
    assert licence is not None  # required=True
    if "/" in licence.reveal():  # it becomes a URL path segment of every backend call
        where = "licence_key_file" if "licence_key_file" in data else "licence_key"
        raise reader.fail(where, "must hold a licence key without '/' characters")

    backend_url = _url(reader, data, "backend_url", "backend_url")
    if backend_url is None:
        raise reader.fail(
            "backend_url",
            "is missing; set it to the Flynotes backend's https:// URL given with your licence",
        )

    db_table = reader.table("database")
    connection_string = reader.string(
        db_table, "connection_string", "database.connection_string", secret=True
    )
    server = reader.string(db_table, "server", "database.server")
    database = reader.string(db_table, "database", "database.database")
    if connection_string is not None and (server is not None or database is not None):
        raise reader.fail(
            "database.connection_string",
            "replaces 'database.server' and 'database.database'; set one or the other",
        )
    user, password, encrypt = _database_login(reader, db_table, connection_string)
    db = DatabaseConfig(
        connection_string=Secret(connection_string) if connection_string else None,
        server=server or ".",
        database=database or "sys2000",
        user=user,
        password=password,
        encrypt=encrypt,
    )

    rb_table = reader.table("rollbar")
    token = _one_secret(
        reader, rb_table, "access_token", "access_token_file", "rollbar.", required=False
    )
    rollbar = RollbarConfig(
        access_token=token,
        environment=reader.string(rb_table, "environment", "rollbar.environment")
        or DEFAULT_ROLLBAR_ENVIRONMENT,
        endpoint=_url(reader, rb_table, "endpoint", "rollbar.endpoint") or DEFAULT_ROLLBAR_ENDPOINT,
    )

    sqs_endpoint_url = _url(reader, data, "sqs_endpoint_url", "sqs_endpoint_url")
    update_url = _url(reader, data, "update_url", "update_url")

    proxy_raw = reader.string(data, "proxy", "proxy", secret=True)
    proxy: Secret | None = None
    if proxy_raw is not None:
        parts = urlsplit(proxy_raw)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise reader.fail(
                "proxy", "must be a URL like http://proxy.example:3128 (with a scheme and host)"
            )
        proxy = Secret(proxy_raw)

    data_dir_raw = reader.string(data, "data_dir", "data_dir")
    if data_dir_raw is None:
        data_dir = path.parent
    else:
        data_dir = Path(data_dir_raw)
        if not data_dir.is_absolute():
            raise reader.fail("data_dir", f"must be an absolute path (got '{data_dir_raw}')")

    timing = reader.table("timing")
    return AgentConfig(
        config_path=path,
        licence_key=licence,
        backend_url=backend_url,
        db=db,
        rollbar=rollbar,
        data_dir=data_dir,
        sqs_endpoint_url=sqs_endpoint_url,
        update_url=update_url,
        proxy=proxy,
        poll_minutes=reader.number(timing, "poll_minutes", "timing.poll_minutes", 60.0),
        life_hours=reader.number(timing, "life_hours", "timing.life_hours", 24.0),
        long_poll_seconds=reader.whole_number(
            timing,
            "long_poll_seconds",
            "timing.long_poll_seconds",
            DEFAULT_LONG_POLL_SECONDS,
            at_most=DEFAULT_LONG_POLL_SECONDS,  # SQS refuses a longer wait
        ),
    )


def load_config(path: Path | None, env: Mapping[str, str] | None = None) -> AgentConfig:
    """Read and validate the config file.

    Raises ConfigError (message: file, key, expectation; never a secret value) for any
    missing/unreadable file or bad value.
    """
    env = os.environ if env is None else env
    chosen = config_path(path, env)
    try:
        raw = chosen.read_bytes()
    except FileNotFoundError:
        how = (
            "given with --config"
            if path is not None
            else (f"from {ENV_VAR}" if env.get(ENV_VAR) else "the default location")
        )
        raise ConfigError(
            f"{chosen}: config file not found ({how}); create it (see docs/config.md) "
            f"or point --config / {ENV_VAR} at it"
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"{chosen}: is a directory, expected a TOML file") from None
    except PermissionError:
        raise ConfigError(
            f"{chosen}: this account may not read the config file; check its permissions"
        ) from None
    except OSError as e:
        raise ConfigError(f"{chosen}: cannot read the config file ({type(e).__name__})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{chosen}: not UTF-8 text (bad byte at offset {e.start}); save it as UTF-8"
        ) from None
    return parse_config(chosen, text)


def _connection_string_pairs(connection_string: str) -> list[tuple[str, str]]:
    """(key in lower case, value) of each `key=value` of an ODBC connection string."""
    pairs = []
    for part in connection_string.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            pairs.append((key.strip().lower(), value.strip()))
    return pairs


def _connection_string_passwords(connection_string: str) -> list[str]:
    """The PWD=/Password= values of an ODBC connection string (to mask them in logs)."""
    return [
        value.strip("{}")
        for key, value in _connection_string_pairs(connection_string)
        if key in ("pwd", "password") and value
    ]
