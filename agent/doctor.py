"""`r4agent doctor [--json] [--config PATH]`: check everything the agent needs, one line per
check, each printed as soon as it is done.

Each check prints ✓ (ok), ! (warning), ✗ (failed, with a `fix:` hint) or - (skipped because
a check it depends on failed, with the reason). The exit code is 0 when nothing failed
(warnings allowed), 1 otherwise — also when the reader of the output went away
(`doctor | head -1`): the checks still run to the end. Nothing here changes anything except
one temporary file in the data directory (and a throwaway folder for the update metadata);
no error report is posted to Rollbar (its ping endpoint is used instead, so the token itself
is not verified). No secret is ever printed. A service that cannot be reached is described
as what happened: the name does not exist, the connection was refused, or no answer came in
time (agent.ops.reachability).

Checks, in order (→ what each needs):
  config valid; ODBC drivers; R4 database reachable (→ config, drivers); R4 schema
  (→ database); backend + licence (→ config); SQS queue (→ backend); clock skew (→ backend);
  update repository reachable and verified against the trusted root (→ config); data
  directory writable (→ config); Rollbar reachable (→ config, a token); the Windows service
  installed and running.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from agent._version import __version__
from agent.clock import Clock, SystemClock
from agent.config import AgentConfig, add_config_argument, config_path, load_config
from agent.errors import ConfigError, PermanentError, TransientError
from agent.ops.console import reader_safe
from agent.ops.reachability import what_happened
from agent.ports import Scope

if TYPE_CHECKING:
    from agent.r4.connection import R4Database
    from agent.r4.connection_plan import DbSettings
    from installer.service import ServiceState

SKEW_WARN_S = 120.0  # the agent's own timestamps and logs start to mislead
SKEW_FAIL_S = 15 * 60.0  # AWS rejects SigV4-signed SQS requests beyond 15 minutes
NETWORK_TIMEOUT_S = 10.0


class Status(Enum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    status: Status
    detail: str
    hint: str = ""


@dataclass
class _State:
    """What earlier checks learned, for the checks that need it."""

    config: AgentConfig | None = None
    drivers: list[str] = field(default_factory=list)
    database: Any = None  # agent.r4.connection.R4Database once connected
    scope: Scope | None = None
    secrets: list[str] = field(default_factory=list)


class Doctor:
    """Runs the checks. Side effects come in through the constructor, so tests point it at the
    stand-ins (backend, moto, the sample database, the fake Rollbar); `open_r4` also lets a
    test hand in a SQL Server's answer no stand-in gives (a refused login)."""

    def __init__(
        self,
        config_file: Path | None,
        env: Mapping[str, str],
        *,
        clock: Clock | None = None,
        list_drivers: Callable[[], list[str]] | None = None,
        open_r4: Callable[[DbSettings], R4Database] | None = None,
        timeout_s: float = NETWORK_TIMEOUT_S,
        query_service: Callable[[], ServiceState] | None = None,
    ) -> None:
        self._config_file = config_file
        self._env = env
        self._clock = clock or SystemClock()
        self._list_drivers = list_drivers or _pyodbc_drivers
        self._open_r4 = open_r4 or _open_database
        self._timeout = timeout_s
        self._query_service = query_service
        self._state = _State()

    def check_names(self) -> list[str]:
        return [name for name, _, _ in self._checks()]

    def run(self, on_result: Callable[[CheckResult], None] | None = None) -> list[CheckResult]:
        """Run every check in order; `on_result` sees each result as soon as it is known."""
        results: list[CheckResult] = []
        done: dict[str, Status] = {}
        try:
            for name, needs, check in self._checks():
                missing = [n for n in needs if done.get(n) not in (Status.OK, Status.WARN)]
                if missing:
                    result = CheckResult(name, Status.SKIP, f"skipped: needs '{missing[0]}'")
                else:
                    try:
                        result = check()
                    except Exception as e:  # noqa: BLE001 - one broken check must not hide the rest
                        result = CheckResult(
                            name,
                            Status.FAIL,
                            f"the check itself failed ({type(e).__name__})",
                            "report this to Flynotes support if it persists",
                        )
                result = self._masked(result)
                done[name] = result.status
                results.append(result)
                if on_result is not None:
                    on_result(result)
        finally:
            if self._state.database is not None:
                self._state.database.close()
        return results

    def _checks(self) -> list[tuple[str, tuple[str, ...], Callable[[], CheckResult]]]:
        return [
            ("config", (), self.check_config),
            ("ODBC drivers", (), self.check_odbc_drivers),
            ("R4 database", ("config", "ODBC drivers"), self.check_database),
            ("R4 schema", ("R4 database",), self.check_schema),
            ("backend + licence", ("config",), self.check_backend),
            ("SQS queue", ("backend + licence",), self.check_sqs),
            ("clock skew", ("backend + licence",), self.check_clock),
            ("update repository", ("config",), self.check_update_repository),
            ("data directory", ("config",), self.check_data_dir),
            ("Rollbar", ("config",), self.check_rollbar),
            ("Windows service", (), self.check_service),
        ]

    def _masked(self, result: CheckResult) -> CheckResult:
        detail, hint = result.detail, result.hint
        for secret in self._state.secrets:
            if secret:
                detail, hint = detail.replace(secret, "***"), hint.replace(secret, "***")
        return CheckResult(result.name, result.status, detail, hint)

    @property
    def config(self) -> AgentConfig:
        assert self._state.config is not None  # guaranteed by the `needs` ordering
        return self._state.config

    # -- the checks -------------------------------------------------------------------------

    def check_config(self) -> CheckResult:
        try:
            cfg = load_config(self._config_file, self._env)
        except ConfigError as e:
            return CheckResult("config", Status.FAIL, str(e), "fix each key named above")
        self._state.config = cfg
        self._state.secrets = [s for s in cfg.secret_values() if len(s) >= 4]
        return CheckResult("config", Status.OK, f"{cfg.config_path} is valid")

    def check_odbc_drivers(self) -> CheckResult:
        from agent.r4.connection import connection_attributes, pick_driver

        try:
            drivers = list(self._list_drivers())
        except Exception as e:  # noqa: BLE001 - pyodbc raises its own Error types
            return CheckResult(
                "ODBC drivers",
                Status.FAIL,
                f"cannot list ODBC drivers ({type(e).__name__})",
                "install the ODBC driver manager (Windows has it; Linux: unixodbc)",
            )
        self._state.drivers = drivers
        found = ", ".join(drivers) or "none"
        cfg = self._state.config
        if cfg is None:
            return CheckResult(
                "ODBC drivers",
                Status.WARN,
                f"installed: {found} (which one is needed depends on the config)",
                "fix the config first",
            )
        cs = cfg.db.connection_string
        if cs is not None:
            wanted = connection_attributes(cs.reveal()).get("driver", "").strip("{}")
            if not wanted:  # a DSN: the DSN names its driver
                return CheckResult("ODBC drivers", Status.OK, f"installed: {found}")
            if wanted.lower() in (d.lower() for d in drivers):
                return CheckResult("ODBC drivers", Status.OK, f"'{wanted}' installed")
            return CheckResult(
                "ODBC drivers",
                Status.FAIL,
                f"the connection string names driver '{wanted}', which is not installed "
                f"(installed: {found})",
                "install that driver, or change [database] connection_string",
            )
        driver = pick_driver(drivers)
        if driver is None:
            return CheckResult(
                "ODBC drivers",
                Status.FAIL,
                f"no SQL Server ODBC driver installed (installed: {found})",
                "install Microsoft 'ODBC Driver 18 for SQL Server' (or 17)",
            )
        return CheckResult("ODBC drivers", Status.OK, f"will use '{driver}'")

    def check_database(self) -> CheckResult:
        settings = replace(self._db_settings(), login_timeout_s=int(self._timeout))
        try:
            database = self._open_r4(settings)
        except (TransientError, PermanentError) as e:
            return self._database_failed(e)
        self._state.database = database
        return CheckResult(
            "R4 database",
            Status.OK,
            f"connected to {database.target} (encryption {database.encryption})",
        )

    def _db_settings(self) -> DbSettings:
        from agent.app import db_settings

        return db_settings(self.config)

    def _database_failed(self, e: TransientError | PermanentError) -> CheckResult:
        """A refused login or database, or a TLS failure, named with its fix; else by kind."""
        from agent.r4 import advice
        from agent.r4.connection import local_machine_names

        found = advice.connect_failure(str(e), self._db_settings(), local_machine_names())
        if found is not None:
            return CheckResult("R4 database", Status.FAIL, f"{found.summary}: {e}", found.hint)
        if isinstance(e, TransientError):
            return CheckResult(
                "R4 database",
                Status.FAIL,
                str(e),
                "check the SQL Server service is running and [database] server/database "
                "(or connection_string) point at it",
            )
        return CheckResult(
            "R4 database",
            Status.FAIL,
            str(e),
            "check the login (the service account needs read access to R4) and the driver",
        )

    def check_schema(self) -> CheckResult:
        from agent.r4 import advice
        from agent.r4.schema_check import check_schema

        try:
            problems = check_schema(self._state.database)
        except (TransientError, PermanentError) as e:
            return CheckResult(
                "R4 schema", Status.FAIL, str(e), "check the login may read R4's tables"
            )
        name = advice.database_name(self._db_settings())
        if problems:
            # every one: a practice whose R4 differs is diagnosed in one run
            hint = advice.schema_problems(name, problems)
            return CheckResult("R4 schema", Status.FAIL, "; ".join(problems), hint)
        other = advice.other_r4_database(name)
        if other is not None:
            return CheckResult(
                "R4 schema",
                Status.WARN,
                f"every table and column the agent reads, but {other}",
                advice.USE_R4_DATABASE,
            )
        return CheckResult("R4 schema", Status.OK, "every table and column the agent reads")

    def check_backend(self) -> CheckResult:
        from agent.flynotes.client import ClientLimits, FlynotesClient, LicenceRejectedError
        from agent.flynotes.client import Timeouts as ClientTimeouts

        cfg = self.config
        try:
            with FlynotesClient(
                cfg.backend_url,
                cfg.licence_key.reveal(),
                user_agent=f"r4agent-doctor/{__version__}",
                proxy=cfg.proxy.reveal() if cfg.proxy is not None else None,
                timeouts=ClientTimeouts(connect=min(5.0, self._timeout), read=self._timeout),
                limits=ClientLimits(retries=1, backoff_max=2.0, retry_after_max=5.0),
                clock=self._clock,
                licence_source=str(cfg.config_path),
            ) as client:
                scope = client.fetch_scope()
        except LicenceRejectedError as e:
            return CheckResult(
                "backend + licence",
                Status.FAIL,
                str(e),
                "check licence_key (or the file licence_key_file names) against the key "
                "Flynotes issued for this practice",
            )
        except TransientError as e:
            return CheckResult(
                "backend + licence",
                Status.FAIL,
                self._what_happened(cfg.backend_url, e, proxied=True),
                "check the internet connection, backend_url and, behind a proxy, the proxy key",
            )
        except PermanentError as e:
            return CheckResult(
                "backend + licence", Status.FAIL, str(e), "check backend_url is the Flynotes URL"
            )
        self._state.scope = scope
        creds = scope.credentials
        self._state.secrets += [creds.secret_access_key, creds.session_token]
        return CheckResult(
            "backend + licence",
            Status.OK,
            f"licence accepted; Flynotes wants agent version {scope.library_version} "
            f"(this is {__version__})",
        )

    def check_sqs(self) -> CheckResult:
        from botocore.exceptions import BotoCoreError, ClientError

        from agent.clock import SystemClock
        from agent.credentials import sqs_client

        scope = self._state.scope
        assert scope is not None
        cfg = self.config
        # The same client the agent polls with (session token, timeouts, proxy); a doctor run is
        # far shorter than the credentials' life, so "refreshing" just reuses the scope's.
        client = sqs_client(
            scope,
            lambda: scope.credentials,
            clock=SystemClock(),
            endpoint_url=cfg.sqs_endpoint_url,
            proxy=cfg.proxy.reveal() if cfg.proxy is not None else None,
            max_attempts=2,
        )
        try:
            attributes = client.get_queue_attributes(
                QueueUrl=scope.sqs_queue_url,
                AttributeNames=["ApproximateNumberOfMessages", "RedrivePolicy"],
            ).get("Attributes", {})
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", "unknown"))
            return CheckResult("SQS queue", Status.FAIL, f"SQS refused: {code}", _sqs_hint(code))
        except BotoCoreError as e:
            endpoint = cfg.sqs_endpoint_url or f"https://sqs.{scope.sqs_region}.amazonaws.com/"
            return CheckResult(
                "SQS queue",
                Status.FAIL,
                f"SQS unreachable: {self._what_happened(endpoint, e, proxied=True)}",
                "allow outbound HTTPS to sqs.<region>.amazonaws.com (and the proxy, if any)",
            )
        finally:
            client.close()
        waiting = attributes.get("ApproximateNumberOfMessages", "?")
        dlq = "with" if attributes.get("RedrivePolicy") else "WITHOUT"
        return CheckResult(
            "SQS queue",
            Status.OK,
            f"queue reachable with the scope's credentials ({waiting} message(s) waiting, "
            f"{dlq} a dead-letter queue)",
        )

    def check_clock(self) -> CheckResult:
        scope = self._state.scope
        assert scope is not None
        if scope.server_date is None:
            return CheckResult("clock skew", Status.WARN, "the backend sent no Date header")
        skew = (self._clock.now() - scope.server_date).total_seconds()
        ahead = "ahead of" if skew > 0 else "behind"
        text = f"this machine's clock is {abs(skew):.0f} s {ahead} the backend's"
        hint = "sync Windows time: w32tm /resync (or fix the time service / NTP server)"
        if abs(skew) > SKEW_FAIL_S:
            return CheckResult("clock skew", Status.FAIL, text + " (AWS refuses > 15 min)", hint)
        if abs(skew) > SKEW_WARN_S:
            return CheckResult("clock skew", Status.WARN, text + " (more than 2 min)", hint)
        return CheckResult("clock skew", Status.OK, text)

    def check_data_dir(self) -> CheckResult:
        data_dir = self.config.data_dir
        hint = (
            f"create {data_dir} and let the service account modify it, or set data_dir "
            "to a folder it may write"
        )
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=data_dir, prefix=".doctor-", delete=True) as f:
                f.write(b"ok")
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            return CheckResult(
                "data directory",
                Status.FAIL,
                f"{data_dir} is not writable ({type(e).__name__})",
                hint,
            )
        return CheckResult("data directory", Status.OK, f"{data_dir} is writable")

    def check_rollbar(self) -> CheckResult:
        import requests

        rb = self.config.rollbar
        if rb.access_token is None:
            return CheckResult(
                "Rollbar",
                Status.SKIP,
                "no [rollbar] access_token: errors stay in the local log only",
            )
        url = rb.endpoint.rstrip("/") + "/status/ping"
        proxy = self.config.proxy.reveal() if self.config.proxy is not None else None
        session = requests.Session()
        session.trust_env = False
        if proxy:
            session.proxies = {"http": proxy, "https": proxy}
        hint = "allow outbound HTTPS to the Rollbar endpoint (and the proxy, if any)"
        try:
            response = session.get(url, timeout=(min(5.0, self._timeout), self._timeout))
        except requests.RequestException as e:
            return CheckResult(
                "Rollbar",
                Status.FAIL,
                f"{rb.endpoint} unreachable: {self._what_happened(url, e, proxied=True)}",
                hint,
            )
        finally:
            session.close()
        if not 200 <= response.status_code < 300:
            return CheckResult(
                "Rollbar",
                Status.FAIL,
                f"{rb.endpoint} answered HTTP {response.status_code} to a ping",
                hint + "; check [rollbar] endpoint",
            )
        return CheckResult(
            "Rollbar",
            Status.OK,
            f"{rb.endpoint} reachable (ping only: the token is not verified)",
        )


    def check_update_repository(self) -> CheckResult:
        from agent.ops.update_check import trusted_root, update_url, verify_repository
        from updater.errors import DownloadFailedError, VerificationError

        name = "update repository"
        url = update_url(self.config, self._env)
        if url is None:
            return CheckResult(name, Status.SKIP, "no update URL: this agent does not update")
        root = trusted_root(self.config)
        if root.content is None:
            return CheckResult(
                name,
                Status.FAIL,
                "no trusted root: none in the data directory's metadata folder and none baked "
                "into this build, so no update could be verified",
                "install a release build of the agent (the MSI)",
            )
        try:
            catalog = verify_repository(url, root.content, timeout_s=self._timeout)
        except DownloadFailedError as e:
            return CheckResult(
                name,
                Status.FAIL,
                f"{url} unreachable: {self._what_happened(url.rstrip('/') + '/metadata/', e)}",
                "allow outbound HTTPS to the update server; check the MSI's UPDATEURL "
                "(<data_dir>/update-url) or update_url",
            )
        except VerificationError as e:
            return CheckResult(
                name,
                Status.FAIL,
                f"{url}: the metadata does not verify against {root.source} ({e})",
                "this is not the repository this agent trusts (check UPDATEURL), or its "
                "metadata expired: contact Flynotes support",
            )
        versions = sorted(catalog.releases)
        newest = f", newest {versions[-1]}" if versions else ""
        return CheckResult(
            name,
            Status.OK,
            f"{url} reachable; its metadata verifies against {root.source} "
            f"({len(versions)} release(s) listed{newest})",
        )

    def check_service(self) -> CheckResult:
        from installer.service import SERVICE_NAME, service_state

        name = "Windows service"
        state = (self._query_service or service_state)()
        if state.installed is None:
            on_windows = sys.platform == "win32"
            return CheckResult(
                name,
                Status.WARN if on_windows else Status.SKIP,
                state.state if on_windows else f"{state.state}: nothing to check",
                "run this from an elevated prompt (Run as administrator)",
            )
        if not state.installed:
            return CheckResult(
                name,
                Status.FAIL,
                f"the {SERVICE_NAME} service is not installed",
                "install the agent's MSI (docs/install.md)",
            )
        if not state.running:
            return CheckResult(
                name,
                Status.FAIL,
                f"{SERVICE_NAME} is installed but {state.state}",
                f"start it (net start {SERVICE_NAME}, elevated); if it stops again, see the "
                "Event Log (source R4Agent) and logs\\service.log",
            )
        return CheckResult(name, Status.OK, f"{SERVICE_NAME} is installed and running")

    def _what_happened(self, url: str, error: BaseException, *, proxied: bool = False) -> str:
        proxy = self.config.proxy.reveal() if proxied and self.config.proxy is not None else None
        return what_happened(url, error, timeout_s=min(5.0, self._timeout), proxy=proxy)


def _sqs_hint(code: str) -> str:
    if code in ("InvalidClientTokenId", "ExpiredToken", "UnrecognizedClientException"):
        return "the backend handed out credentials SQS refuses: contact Flynotes support"
    if code in ("SignatureDoesNotMatch", "RequestExpired"):
        return "check this machine's clock (w32tm /resync)"
    if code in ("AccessDenied", "AccessDeniedException"):
        return "the credentials may not read this queue: contact Flynotes support"
    if "NonExistentQueue" in code or code == "QueueDoesNotExist":
        return "the queue the backend named does not exist: contact Flynotes support"
    return "contact Flynotes support with this code"


def _open_database(settings: DbSettings) -> R4Database:
    from agent.r4.connection import open_database

    return open_database(settings)


def _pyodbc_drivers() -> list[str]:
    import pyodbc

    return list(pyodbc.drivers())


def _symbols(stream: TextIO) -> dict[Status, str]:
    fancy = {Status.OK: "✓", Status.WARN: "!", Status.FAIL: "✗", Status.SKIP: "-"}
    encoding = getattr(stream, "encoding", None) or "utf-8"  # StringIO: any text
    try:
        "".join(fancy.values()).encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return {Status.OK: "OK  ", Status.WARN: "WARN", Status.FAIL: "FAIL", Status.SKIP: "SKIP"}
    return fancy


def render_line(result: CheckResult, stream: TextIO, width: int) -> None:
    """One check: its symbol, name and detail (continuation lines indented), then its hint."""
    symbols = _symbols(stream)
    pad = " " * (width + 4)
    first, *more = result.detail.split("\n")
    stream.write(f"{symbols[result.status]} {result.name.ljust(width)}  {first}\n")
    for line in more:
        stream.write(f"{pad}{line.strip()}\n")
    if result.hint and result.status in (Status.FAIL, Status.WARN):
        stream.write(f"{pad}fix: {result.hint}\n")


def render_summary(results: list[CheckResult], stream: TextIO) -> None:
    failed = sum(r.status is Status.FAIL for r in results)
    stream.write("all checks passed\n" if not failed else f"{failed} check(s) failed\n")


def render(results: list[CheckResult], stream: TextIO) -> None:
    width = max(len(r.name) for r in results)
    for r in results:
        render_line(r, stream, width)
    render_summary(results, stream)


def as_json(results: list[CheckResult], config_file: Path) -> dict[str, Any]:
    """The `--json` document (schema version 1, docs/config.md)."""
    return {
        "schema_version": 1,
        "version": __version__,
        "config": str(config_file),
        "ok": exit_code(results) == 0,
        "failed": sum(r.status is Status.FAIL for r in results),
        "checks": [
            {"name": r.name, "status": r.status.value, "detail": r.detail, "hint": r.hint}
            for r in results
        ],
    }


def exit_code(results: list[CheckResult]) -> int:
    return 1 if any(r.status is Status.FAIL for r in results) else 0


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument(
        "--json", action="store_true", help="print one JSON document when all checks are done"
    )
    add_config_argument(parser)


def command(args: argparse.Namespace, *, stream: TextIO | None = None) -> int:
    out = reader_safe(stream)  # `doctor | head -1`: the checks still finish, no traceback
    env = os.environ
    chosen = config_path(args.config, env)
    doctor = Doctor(args.config, env)
    if args.json:
        results = doctor.run()
        out.write(json.dumps(as_json(results, chosen), indent=2) + "\n")
    else:
        out.write(f"r4agent {__version__} doctor: {chosen}\n")
        width = max(len(name) for name in doctor.check_names())
        results = doctor.run(on_result=lambda r: render_line(r, out, width))
        render_summary(results, out)
    out.flush()
    return exit_code(results)
