"""The agent's one configuration file (TOML), read and validated once at start-up.

Where the file is (first that applies):
1. the path given to `load_config` (the CLI's `--config PATH`);
2. the environment variable `R4AGENT_CONFIG`;
3. the platform default: `%ProgramData%\\Flynotes\\R4Agent\\config.toml` on Windows,
   `/var/lib/r4agent/config.toml` elsewhere.

Every mistake of one read is collected into one `ConfigProblems` (a `ConfigError`) whose lines
each name the file and line, the key and what is expected, e.g. ``config.toml:3: key
'backend_url' must be an https:// URL (got a value without a scheme)``, so a practice sees every
fix in one run; known mistakes get a hint (a backslash in a double-quoted string: use single
quotes). Secret values are never echoed: a wrong licence key is described, not quoted.
Every key is documented in docs/config.md. New keys follow the schema table (`_TOP_KEYS`,
`_TABLE_KEYS`) and the `_Reader` accessors, which report and read a bad value as absent.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from agent.contract import WireSettings
from agent.errors import ConfigError

ENV_VAR: Final = "R4AGENT_CONFIG"
CONFIG_FILENAME: Final = "config.toml"
DEFAULT_ROLLBAR_ENDPOINT: Final = "https://api.rollbar.com/api/1/"
DEFAULT_ROLLBAR_ENVIRONMENT: Final = "production"
LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "localhost", "::1"})
DEFAULT_LONG_POLL_SECONDS: Final = 20  # = agent.sqs_queue.LONG_POLL_SECONDS, SQS's maximum
DEFAULT_PROBE_MAX_SECONDS: Final = 60  # = agent.resilience.breaker.ProbeSettings.probe_max_seconds
DEFAULT_ROWS_PER_REQUEST: Final = 500  # = agent.uploads.passes.DEFAULT_ROWS_PER_REQUEST
MAX_ROWS_PER_REQUEST: Final = 5000


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
    probe_max_seconds: int = DEFAULT_PROBE_MAX_SECONDS  # dev/test only: breakers' probe cap
    wire: WireSettings = field(default_factory=WireSettings)  # [contract]: the original's values
    rows_per_request: int = DEFAULT_ROWS_PER_REQUEST  # [uploads]: rows per bulk-upload POST

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


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    """The `--config PATH` option of the commands that read the config."""
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="config file (default: R4AGENT_CONFIG or the data directory's config.toml)",
    )


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
        "contract",
        "uploads",
    }
)
_TABLE_KEYS: Final[Mapping[str, frozenset[str]]] = {
    "database": frozenset(
        {"connection_string", "server", "database", "user", "password", "password_file", "encrypt"}
    ),
    "rollbar": frozenset({"access_token", "access_token_file", "environment", "endpoint"}),
    "timing": frozenset({"poll_minutes", "life_hours", "long_poll_seconds", "probe_max_seconds"}),
    "contract": frozenset({"times", "unknown_dob", "blank_text", "typed_answers"}),
    "uploads": frozenset({"rows_per_request"}),
}
# [contract] key -> its allowed values, the first being the default (the original's behaviour)
_CONTRACT_CHOICES: Final[Mapping[str, tuple[str, ...]]] = {
    "times": ("wall-clock", "utc"),
    "unknown_dob": ("as-r4", "missing"),
    "blank_text": ("as-r4", "missing"),
    "typed_answers": ("omit", "send"),
}


class ConfigProblems(ConfigError):
    """Every mistake one read of the file found, each `<file>:<line>: key 'x' <expected>` (no
    line where the key is missing). `str()` lists them all, so one run shows every fix."""

    def __init__(self, path: Path, problems: Sequence[str]) -> None:
        self.path = path
        self.problems = tuple(problems)
        if len(self.problems) == 1:
            text = self.problems[0]
        else:
            text = f"{path}: {len(self.problems)} problems:\n" + "\n".join(
                f"  {p}" for p in self.problems
            )
        super().__init__(text)


_TABLE_HEADER: Final = re.compile(r"^\s*\[\s*([A-Za-z0-9_.-]+)\s*\]\s*(?:#.*)?$")
_KEY_AT_LINE_START: Final = re.compile(
    r"""^\s*(?:"(?P<dq>[^"]+)"|'(?P<sq>[^']+)'|(?P<bare>[A-Za-z0-9_.-]+))\s*="""
)


def key_lines(text: str) -> dict[str, int]:
    """Dotted key (and table name) -> the line (1-based) that sets it first, for messages.
    A line scan, not a TOML parser: enough for this flat file (top-level keys + one-level
    tables); a key it cannot place is reported without a line."""
    lines: dict[str, int] = {}
    table = ""
    for number, line in enumerate(text.splitlines(), start=1):
        header = _TABLE_HEADER.match(line)
        if header:
            table = header.group(1)
            lines.setdefault(table, number)
            continue
        key = _KEY_AT_LINE_START.match(line)
        if key:
            name = key.group("dq") or key.group("sq") or key.group("bare")
            lines.setdefault(f"{table}.{name}" if table else name, number)
    return lines


class _Reader:
    """Typed access to one parsed file. A bad value is REPORTED (with its file:line, key and
    what is expected) and read as absent, so one run lists every mistake; `fail` builds the
    same message as an exception, for a check that cannot go on."""

    def __init__(self, path: Path, data: Mapping[str, object], text: str = "") -> None:
        self.path = path
        self.data = data
        self.lines = key_lines(text)
        self.problems: list[str] = []

    def where(self, key: str) -> str:
        line = self.lines.get(key)
        return f"{self.path}:{line}" if line is not None else str(self.path)

    def fail(self, key: str, expectation: str) -> ConfigError:
        return ConfigError(f"{self.where(key)}: key '{key}' {expectation}")

    def report(self, key: str, expectation: str) -> None:
        self.problems.append(str(self.fail(key, expectation)))

    def table(self, name: str) -> Mapping[str, object]:
        value = self.data.get(name, {})
        if not isinstance(value, dict):
            self.report(name, f"must be a table ([{name}]) (got {_kind(value)})")
            return {}
        return value

    def string(
        self, table: Mapping[str, object], key: str, dotted: str, *, secret: bool = False
    ) -> str | None:
        value = table.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            self.report(dotted, f"must be a string (got {_kind(value)})")
            return None
        stripped = value.strip()
        if not stripped:
            self.report(dotted, "must not be empty")
            return None
        if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
            # "C:\temp\new" is valid TOML: \t and \n became a tab and a line break
            self.report(
                dotted, f"holds a tab, line break or other control character; {_BACKSLASH_HINT}"
            )
            return None
        if secret and stripped != value:
            self.report(dotted, "must not start or end with spaces")
            return None
        return stripped

    def boolean(self, table: Mapping[str, object], key: str, dotted: str) -> bool | None:
        value = table.get(key)
        if value is not None and not isinstance(value, bool):
            self.report(dotted, f"must be true or false (got {_kind(value)})")
            return None
        return value

    def choice(
        self, table: Mapping[str, object], key: str, dotted: str, allowed: tuple[str, ...]
    ) -> str:
        """One of `allowed` (the first is the default)."""
        value = table.get(key, allowed[0])
        if value not in allowed:
            shown = f"'{value}'" if isinstance(value, str) and value.isprintable() else _kind(value)
            options = " or ".join(f"'{a}'" for a in allowed)
            self.report(dotted, f"must be {options} (got {shown})")
            return allowed[0]
        return str(value)

    def number(self, table: Mapping[str, object], key: str, dotted: str, default: float) -> float:
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.report(dotted, f"must be a number (got {_kind(value)})")
            return default
        if value <= 0:
            self.report(dotted, f"must be greater than 0 (got {value})")
            return default
        return float(value)

    def whole_number(
        self, table: Mapping[str, object], key: str, dotted: str, default: int, *, at_most: int
    ) -> int:
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            self.report(dotted, f"must be a whole number (got {_kind(value)})")
            return default
        if not 1 <= value <= at_most:
            self.report(dotted, f"must be from 1 to {at_most} (got {value})")
            return default
        return value


_BACKSLASH_HINT: Final = (
    "in a double-quoted TOML string a backslash starts an escape (\\t, \\n, ...): write "
    "Windows paths and server names in single quotes, e.g. 'C:\\ProgramData\\R4' or "
    "'R4SERVER\\R4', or double each backslash"
)


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
        reader.report(
            dotted,
            "must be an https:// URL (http:// is accepted only for 127.0.0.1/localhost "
            f"stand-ins) ({problem})",
        )
        return None
    return value


def _read_secret_file(
    reader: _Reader, key: str, raw: str, *, spaces: bool = False
) -> Secret | None:
    path = Path(raw)
    if not path.is_absolute():
        path = reader.path.parent / path
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        reader.report(key, f"names a file that does not exist ({path})")
        return None
    except PermissionError:
        reader.report(
            key, f"names a file this account may not read ({path}); check its permissions"
        )
        return None
    except (OSError, UnicodeDecodeError) as e:
        reader.report(
            key, f"names a file that cannot be read as UTF-8 text ({path}: {type(e).__name__})"
        )
        return None
    value = text.strip()
    if not value:
        reader.report(key, f"names an empty file ({path})")
        return None
    if spaces and ("\n" in value or "\r" in value):
        reader.report(key, f"names a file that must hold one line ({path})")
        return None
    if not spaces and any(ch.isspace() for ch in value):
        reader.report(key, f"names a file that must hold one line with no spaces ({path})")
        return None
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
        reader.report(dotted, f"and '{dotted_file}' are both set; set exactly one of them")
        return None
    if inline is not None:
        if any(ch.isspace() and not (spaces and ch == " ") for ch in inline):
            reader.report(dotted, "must be one line" if spaces else "must not contain spaces")
            return None
        return Secret(inline)
    if from_file is not None:
        return _read_secret_file(reader, dotted_file, from_file, spaces=spaces)
    if required and key not in table and file_key not in table:
        reader.report(
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
    password_set = any(k in table for k in ("password", "password_file"))
    if user is not None and not password_set:
        reader.report(
            "database.user",
            "needs 'database.password' or 'database.password_file' (a file holding it)",
        )
    if password_set and user is None and "user" not in table:
        reader.report("database.user", "is missing; a SQL password needs its login name")
    if user is not None and connection_string is not None:
        names = {key for key, _value in _connection_string_pairs(connection_string)}
        if names & {"uid", "user id", "pwd", "password", "trusted_connection"}:
            reader.report(
                "database.user",
                "is set, but 'database.connection_string' names its own login "
                "(UID/PWD/Trusted_Connection); set one or the other",
            )
    encrypt = reader.boolean(table, "encrypt", "database.encrypt")
    if encrypt is not None and connection_string is not None:
        reader.report(
            "database.encrypt",
            "applies to 'database.server' only; put Encrypt=yes/no in "
            "'database.connection_string' instead",
        )
    return user, password, encrypt


def _check_unknown_keys(reader: _Reader) -> None:
    unknown = [(k, k, _TOP_KEYS) for k in sorted(set(reader.data) - _TOP_KEYS)]
    for name, allowed in _TABLE_KEYS.items():
        sub = reader.data.get(name)
        if isinstance(sub, dict):
            unknown += [(f"{name}.{k}", k, allowed) for k in sorted(set(sub) - allowed)]
    for dotted, key, allowed in unknown:
        close = difflib.get_close_matches(key, sorted(allowed), n=1, cutoff=0.75)
        guess = f" (did you mean '{dotted[: -len(key)]}{close[0]}'?)" if close else ""
        reader.report(dotted, f"is not a known key{guess}; see docs/config.md for the valid keys")


_TOML_POSITION: Final = re.compile(r"\(at line (\d+), column (\d+)\)")


def toml_syntax_message(path: Path, text: str, error: tomllib.TOMLDecodeError) -> str:
    """`<file>:<line>: not valid TOML: <tomllib's words> (at line L, column C)` plus a hint for
    the mistakes people make (tomllib never quotes a value, so neither does this)."""
    message = str(error)
    position = _TOML_POSITION.search(message)
    line = int(position.group(1)) if position else None
    where = f"{path}:{line}" if line is not None else str(path)
    lines = text.splitlines()
    source = lines[line - 1] if line is not None and 0 < line <= len(lines) else ""
    hint = ""
    if "\\" in message or ("\\" in source and '"' in source):
        hint = f"; {_BACKSLASH_HINT}"
    elif message.startswith("Invalid value") and re.match(r"^[^=]*=\s*[A-Za-z]", source):
        hint = "; text values need quotes, e.g. key = 'value' (numbers and true/false do not)"
    elif message.startswith("Unterminated string"):
        hint = "; a string is missing its closing quote"
    elif message.startswith(("Cannot overwrite", "Cannot declare")):
        hint = "; a key or [table] appears twice"
    return f"{where}: not valid TOML: {message}{hint}"


def parse_config(path: Path, text: str) -> AgentConfig:
    """Validate the text of a config file (no I/O except reading a named key file).

    Raises ConfigProblems (a ConfigError) listing EVERY mistake found, or a ConfigError for a
    syntax error (tomllib stops at the first one)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(toml_syntax_message(path, text, e)) from None
    reader = _Reader(path, data, text)
    try:
        config = _read(reader)
    except ConfigError as e:  # a check that stopped at its first problem (`raise reader.fail`)
        reader.problems.append(str(e))
        config = None
    if reader.problems or config is None:
        raise ConfigProblems(path, reader.problems or [f"{path}: invalid configuration"])
    return config


def _read(reader: _Reader) -> AgentConfig | None:
    """The keys of the schema, in file order; None when a required value could not be read
    (its problem is reported)."""
    path, data = reader.path, reader.data
    _check_unknown_keys(reader)

    licence = _one_secret(reader, data, "licence_key", "licence_key_file", "", required=True)
    if licence is not None and "/" in licence.reveal():  # it becomes a URL path segment
        where = "licence_key_file" if "licence_key_file" in data else "licence_key"
        reader.report(where, "must hold a licence key without '/' characters")
        licence = None

    backend_url = _url(reader, data, "backend_url", "backend_url")
    if backend_url is None and "backend_url" not in data:
        reader.report(
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
        reader.report(
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
            reader.report(
                "proxy", "must be a URL like http://proxy.example:3128 (with a scheme and host)"
            )
        else:
            proxy = Secret(proxy_raw)

    data_dir_raw = reader.string(data, "data_dir", "data_dir")
    data_dir = path.parent
    if data_dir_raw is not None:
        if Path(data_dir_raw).is_absolute():
            data_dir = Path(data_dir_raw)
        else:
            reader.report("data_dir", f"must be an absolute path (got '{data_dir_raw}')")

    timing = reader.table("timing")
    poll_minutes = reader.number(timing, "poll_minutes", "timing.poll_minutes", 60.0)
    life_hours = reader.number(timing, "life_hours", "timing.life_hours", 24.0)
    long_poll_seconds = reader.whole_number(
        timing,
        "long_poll_seconds",
        "timing.long_poll_seconds",
        DEFAULT_LONG_POLL_SECONDS,
        at_most=DEFAULT_LONG_POLL_SECONDS,  # SQS refuses a longer wait
    )
    probe_max_seconds = reader.whole_number(
        timing,
        "probe_max_seconds",
        "timing.probe_max_seconds",
        DEFAULT_PROBE_MAX_SECONDS,
        at_most=DEFAULT_PROBE_MAX_SECONDS,  # at least one probe a minute, however long the outage
    )
    contract_table = reader.table("contract")
    wire = WireSettings(
        **{  # type: ignore[arg-type]  # each value is one of _CONTRACT_CHOICES
            key: reader.choice(contract_table, key, f"contract.{key}", allowed)
            for key, allowed in _CONTRACT_CHOICES.items()
        }
    )
    rows_per_request = reader.whole_number(
        reader.table("uploads"),
        "rows_per_request",
        "uploads.rows_per_request",
        DEFAULT_ROWS_PER_REQUEST,
        at_most=MAX_ROWS_PER_REQUEST,
    )
    if licence is None or backend_url is None:
        return None
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
        poll_minutes=poll_minutes,
        life_hours=life_hours,
        long_poll_seconds=long_poll_seconds,
        probe_max_seconds=probe_max_seconds,
        wire=wire,
        rows_per_request=rows_per_request,
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
