"""Composition root and the `r4agent run` subcommand: the only place real defaults are built.

    r4agent run [--foreground] [--config PATH]

Builds config -> logging -> status file -> error sink (Rollbar, noting each error in the status)
-> R4 reader -> Flynotes client -> version gate -> SQS client (refreshing credentials) -> handler
registry -> dispatcher -> lifecycle, runs the lifecycle, and turns the outcome into an exit code
(docs/exit-codes.md); while it runs, an
exception that ends any thread is logged (masked) and reported too (`report_thread_crashes`).
Tests call `run_agent` with a FakeClock and short intervals; the service runs `command`.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar

from agent._version import __version__
from agent.clock import Clock, SystemClock
from agent.commands.context import RestartRequest
from agent.commands.dispatcher import Dispatcher, DispatchSettings
from agent.commands.registry import Registry, default_registry
from agent.errors import AgentError, ConfigError, R4DataError
from agent.exit_codes import ExitCode
from agent.lifecycle import Lifecycle, LifeSettings, probe_r4
from agent.ops.status_file import FileStatus, StatusNotingErrors, status_path
from agent.ports import Backend, ErrorSink, Scope, SqsCredentials, StatusRecorder
from agent.records import (
    Appointment,
    AppointmentFlag,
    Patient,
    PresetAnswerCount,
    QuestionCount,
    Questionnaire,
)
from agent.resilience.breaker import Breakers, ProbeSettings
from agent.sqs_queue import SqsQueue
from updater.gate import ReportOnlyGate, VersionGate

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

    from agent.config import AgentConfig
    from agent.flynotes.client import FlynotesClient, Timeouts
    from agent.r4.connection import DbSettings, R4Database
    from agent.r4.reader import R4Reader
    from agent.uploads.passes import Uploads

log = logging.getLogger(__name__)

FLUSH_SECONDS = 10.0  # how long the process waits for pending error reports on exit
T = TypeVar("T")


# -- R4, reconnecting --------------------------------------------------------------------------
class ReconnectingRecords:
    """A RecordSource that opens R4 on first use and, after any failure but a row's own (the
    server restarted, the network blipped, the file was swapped under an open connection),
    drops the connection so the next call opens a new one. One per thread: an ODBC connection
    is never shared between threads. `errors`: where a pass's skipped (unconvertible) rows are
    reported, besides the log."""

    def __init__(self, settings: DbSettings, errors: ErrorSink | None = None) -> None:
        self._settings = settings
        self._errors = errors
        self._db: R4Database | None = None
        self._reader: R4Reader | None = None

    def _connected(self) -> R4Reader:
        if self._reader is None:
            from agent.r4.connection import open_database
            from agent.r4.reader import R4Reader
            from agent.r4.skipped_rows import LogSkippedRows

            self._db = open_database(self._settings)
            self._reader = R4Reader(self._db, skips=LogSkippedRows(self._errors))
        return self._reader

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
        self._db = None
        self._reader = None

    def _call(self, use: Callable[[R4Reader], T]) -> T:
        try:
            return use(self._connected())
        except R4DataError:
            raise
        except AgentError:
            self.close()
            raise

    def _stream(self, use: Callable[[R4Reader], Iterator[T]]) -> Iterator[T]:
        try:
            yield from use(self._connected())
        except R4DataError:
            raise
        except AgentError:
            self.close()
            raise

    def ping(self) -> None:
        self._call(lambda r: r.ping())

    def iter_patients(self) -> Iterator[Patient]:
        return self._stream(lambda r: r.iter_patients())

    def get_patient(self, code: int) -> Patient | None:
        return self._call(lambda r: r.get_patient(code))

    def latest_questionnaire(self, patient_code: int) -> Questionnaire | None:
        return self._call(lambda r: r.latest_questionnaire(patient_code))

    def iter_appointments(self) -> Iterator[Appointment]:
        return self._stream(lambda r: r.iter_appointments())

    def iter_appointment_flags(self) -> Iterator[AppointmentFlag]:
        return self._stream(lambda r: r.iter_appointment_flags())

    def question_counts(self) -> list[QuestionCount]:
        return self._call(lambda r: r.question_counts())

    def preset_answer_counts(self) -> list[PresetAnswerCount]:
        return self._call(lambda r: r.preset_answer_counts())


def db_settings(config: AgentConfig) -> DbSettings:
    from agent.r4.connection import DbSettings

    db = config.db
    return DbSettings(
        connection_string=(
            db.connection_string.reveal() if db.connection_string is not None else None
        ),
        server=db.server,
        database=db.database,
        user=db.user,
        password=db.password.reveal() if db.password is not None else None,
        encrypt=db.encrypt,
    )


def flynotes_client(
    config: AgentConfig,
    *,
    clock: Clock | None = None,
    purpose: str = "",
    timeouts: Timeouts | None = None,
) -> FlynotesClient:
    from agent.contract import Wire
    from agent.flynotes.client import FlynotesClient

    return FlynotesClient(
        config.backend_url,
        config.licence_key.reveal(),
        user_agent=f"r4agent/{__version__}{f' ({purpose})' if purpose else ''}",
        proxy=config.proxy.reveal() if config.proxy is not None else None,
        clock=clock,
        licence_source=str(config.config_path),
        timeouts=timeouts,
        wire=Wire(config.wire),
    )


def uploads_for(
    config: AgentConfig, backend: Backend, *, errors: ErrorSink, clock: Clock
) -> Uploads:
    """Upload passes with the data directory's change ledger for this R4 database."""
    from agent.contract import Wire
    from agent.uploads.ledger import open_ledger, source_identity
    from agent.uploads.passes import Uploads

    db = config.db
    connection = db.connection_string.reveal() if db.connection_string is not None else None
    ledger = open_ledger(config.data_dir, source_identity(connection, db.server, db.database))
    return Uploads(
        backend,
        errors=errors,
        ledger=ledger,
        wire=Wire(config.wire),
        clock=clock,
        rows_per_request=config.rows_per_request,
    )


def error_sink(config: AgentConfig) -> ErrorSink:
    from agent.reporting import NullSink, RollbarSink

    token = config.rollbar.access_token
    if token is None:
        return NullSink()
    return RollbarSink(
        token.reveal(),
        environment=config.rollbar.environment,
        endpoint=config.rollbar.endpoint,
        proxy=config.proxy.reveal() if config.proxy is not None else None,
        secret_values=config.secret_values(),
    )


def _error_sink_or_local(config: AgentConfig) -> ErrorSink:
    """The reporter must never stop the agent, not even while being built."""
    try:
        return error_sink(config)
    except Exception as e:  # noqa: BLE001 - any failure here means: report locally only
        from agent.reporting import NullSink

        log.error("error reporting disabled: could not set up Rollbar (%s)", type(e).__name__)
        return NullSink()


def version_gate(config: AgentConfig) -> VersionGate:
    """The updater's gate when running from an installed layout, else report-only."""
    from updater.agent_gate import from_environment

    gate = from_environment(__version__, config_url=config.update_url)
    return gate or ReportOnlyGate(__version__)


# -- the run -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Runtime:
    """What tests may replace: time, the stop signal, and the knobs that compress a day."""

    clock: Clock = field(default_factory=SystemClock)
    stop: threading.Event = field(default_factory=threading.Event)
    errors: ErrorSink | None = None  # None: built from config (Rollbar or local-only)
    gate: VersionGate | None = None  # None: version_gate(config)
    life: LifeSettings | None = None  # None: from config (poll/life hours)
    dispatch: DispatchSettings = field(default_factory=DispatchSettings)
    sqs_max_attempts: int = 3  # botocore's own retries (real-time sleeps) per SQS call
    registry_factory: Callable[[], Registry] = default_registry
    sqs_client_factory: Callable[..., SQSClient] | None = None  # None: credentials.sqs_client
    backend_timeouts: Timeouts | None = None  # None: the client's defaults
    on_lifecycle: Callable[[Lifecycle], None] | None = None  # tests: observe stats
    status: StatusRecorder | None = None  # None: the status file in the data directory
    probes: ProbeSettings = field(default_factory=ProbeSettings)  # breakers' probe back-off


@contextlib.contextmanager
def report_thread_crashes(errors: ErrorSink) -> Iterator[None]:
    """While inside, an exception that ends a thread (its target raised) is logged through the
    agent's logger (whose handlers mask secrets) and reported. It is NOT handed on to Python's
    default hook: that prints the traceback to stderr past the masking. The previous hook is
    put back on the way out, unless someone replaced ours meanwhile."""
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        error = args.exc_value
        if error is None or isinstance(error, SystemExit):
            return  # as the default hook: a thread ending with SystemExit is silent
        name = args.thread.name if args.thread is not None else "?"
        with contextlib.suppress(Exception):  # the hook must never raise itself
            log.error("thread %s died: %s", name, type(error).__name__, exc_info=error)
        with contextlib.suppress(Exception):
            errors.report_exception(error, context={"phase": "thread", "thread": name})

    threading.excepthook = hook
    try:
        yield
    finally:
        if threading.excepthook is hook:
            threading.excepthook = previous


def run_agent(config: AgentConfig, runtime: Runtime | None = None) -> ExitCode:
    """Run one life of the agent with `config`; never raises (an uncaught error is reported,
    flushed and becomes ExitCode.CRASH; one that ends a background thread is reported)."""
    runtime = runtime or Runtime()
    status = runtime.status or FileStatus(
        status_path(config.data_dir), clock=runtime.clock, version=__version__
    )
    errors = StatusNotingErrors(runtime.errors or _error_sink_or_local(config), status)
    code = ExitCode.CRASH
    try:
        with report_thread_crashes(errors), ExitStack() as stack:
            code = _run(config, runtime, errors, status, stack)
            return code
    except Exception as e:
        log.critical("crashed: %s", type(e).__name__, exc_info=True)
        errors.report_exception(e, context={"phase": "run", "fatal": True})
        return ExitCode.CRASH
    finally:
        status.stopped(code.name)
        errors.flush(FLUSH_SECONDS)


def _run(
    config: AgentConfig,
    runtime: Runtime,
    errors: ErrorSink,
    status: StatusRecorder,
    stack: ExitStack,
) -> ExitCode:
    from agent.credentials import sqs_client
    from agent.logs import register_secret

    clock = runtime.clock
    settings = db_settings(config)
    registry = runtime.registry_factory()  # a bad handler table fails here, at start-up
    backend = flynotes_client(config, clock=clock, timeouts=runtime.backend_timeouts)
    stack.callback(backend.close)

    worker_connections: list[ReconnectingRecords] = []
    connections_lock = threading.Lock()

    def worker_records() -> ReconnectingRecords:
        records = ReconnectingRecords(settings, errors)
        with connections_lock:
            worker_connections.append(records)
        return records

    def close_worker_connections() -> None:
        for records in worker_connections:
            records.close()

    stack.callback(close_worker_connections)
    main_records = ReconnectingRecords(settings, errors)
    stack.callback(main_records.close)

    # The SQS client of the current scope. Replaced every cycle, and when SQS refuses the
    # credentials; each queue is then switched to the new client BEFORE the old one is closed
    # (its pooled connections would stay open otherwise), so a message received earlier and
    # still in flight is deleted and extended with the new credentials, not the refused ones.
    current_client: SQSClient | None = None
    queues: dict[str, SqsQueue] = {}
    make_client = runtime.sqs_client_factory or sqs_client

    def close_current_client() -> None:
        if current_client is not None:
            current_client.close()

    stack.callback(close_current_client)  # after the dispatcher's close (LIFO): it may delete

    uploads = uploads_for(config, backend, errors=errors, clock=clock)
    stack.callback(uploads.ledger.close)

    restart = RestartRequest()
    dispatcher = Dispatcher(
        registry,
        records_factory=worker_records,
        backend=backend,
        errors=errors,
        restart=restart,
        agent_version=__version__,
        settings=runtime.dispatch,
        status=status,
        clock=clock,
        breakers=Breakers(clock, runtime.probes),
        uploads=uploads,
    )
    stack.callback(dispatcher.close)

    def hide(credentials: SqsCredentials) -> SqsCredentials:
        # never logged on purpose; masked anyway should a library log them
        register_secret(credentials.secret_access_key, credentials.session_token)
        return credentials

    def queue_for(scope: Scope) -> SqsQueue:
        nonlocal current_client
        hide(scope.credentials)
        client = make_client(
            scope,
            lambda: hide(backend.fetch_scope().credentials),
            clock=clock,
            endpoint_url=config.sqs_endpoint_url,
            proxy=config.proxy.reveal() if config.proxy is not None else None,
            max_attempts=runtime.sqs_max_attempts,
        )
        for earlier in queues.values():  # the backend's one set of credentials for the practice
            earlier.use_client(client)
        close_current_client()
        current_client = client
        queue = queues.get(scope.sqs_queue_url)
        if queue is None:
            queue = SqsQueue(client, scope.sqs_queue_url, wait_seconds=config.long_poll_seconds)
            queues[scope.sqs_queue_url] = queue
        return queue

    def probe_r4_afresh() -> None:
        fresh = ReconnectingRecords(settings)  # not one opened before a swap of the file
        try:
            probe_r4(fresh)
        finally:
            fresh.close()

    life = runtime.life or LifeSettings(poll_hours=config.poll_hours, life_hours=config.life_hours)
    lifecycle = Lifecycle(
        clock=clock,
        stop=runtime.stop,
        records=main_records,
        backend=backend,
        errors=errors,
        gate=runtime.gate or version_gate(config),
        dispatcher=dispatcher,
        restart=restart,
        queue_for=queue_for,
        settings=life,
        status=status,
        r4_probe=probe_r4_afresh,
        uploads=uploads,
    )
    if runtime.on_lifecycle is not None:
        runtime.on_lifecycle(lifecycle)
    log.info("r4agent %s starting (pid %d)", __version__, os.getpid())
    status.started()
    code = lifecycle.run()
    log.info("r4agent exiting with %s (%d)", code.name, code.value)
    return code


# -- signals -----------------------------------------------------------------------------------
@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM/SIGINT (and SIGBREAK on Windows) set `stop`: running work finishes, then the
    agent exits. A second Ctrl-C falls back to the default (immediate) behaviour."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    names = ["SIGTERM", "SIGINT", "SIGBREAK"]
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: stopping after in-flight work", signum)
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    for name in names:
        number = getattr(signal, name, None)
        if number is not None:
            previous[number] = signal.signal(number, handler)
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)


# -- the subcommand ----------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument(
        "--foreground", action="store_true", help="also stream human-readable logs to the console"
    )
    parser.add_argument("--config", type=Path, default=None, help="config file (TOML)")


def command(args: argparse.Namespace) -> int:
    return int(main(args.config, foreground=args.foreground))


def main(
    config_path: Path | None, *, foreground: bool, stop: threading.Event | None = None
) -> ExitCode:
    """Load config, set up logging, run one life. ConfigError -> CONFIG_ERROR with one line on
    stderr naming the file and key (no traceback)."""
    from agent.config import load_config
    from agent.logs import setup_logging

    try:
        config = load_config(config_path, os.environ)
        try:
            setup_logging(config.data_dir, foreground=foreground, secrets=config.secret_values())
        except OSError as e:
            raise ConfigError(
                f"{config.config_path}: key 'data_dir' must be a writable folder "
                f"({type(e).__name__} creating its logs folder)"
            ) from None
    except ConfigError as e:
        print(f"r4agent: configuration error: {e}", file=sys.stderr)
        return ExitCode.CONFIG_ERROR
    stop = stop or threading.Event()
    from updater.stop_signal import watch

    watch(stop)  # Windows: the service host's named stop event (no console for CTRL_BREAK)
    with stop_on_signals(stop):
        probes = ProbeSettings(probe_max_seconds=config.probe_max_seconds)
        return run_agent(config, Runtime(stop=stop, probes=probes))
