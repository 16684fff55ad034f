"""Runtime test harness: the real agent (`agent.app.run_agent`) against moto, the Flynotes
stand-in and an R4-shaped SQLite database through pyodbc, with a FakeClock compressing its day."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agent.app import ReconnectingRecords, Runtime, flynotes_client, run_agent
from agent.clock import FakeClock
from agent.commands.context import RestartRequest
from agent.commands.dispatcher import Dispatcher, DispatchSettings
from agent.commands.registry import Registry, default_registry
from agent.config import AgentConfig, DatabaseConfig, RollbarConfig, Secret
from agent.exit_codes import ExitCode
from agent.flynotes.client import Timeouts
from agent.lifecycle import Backoff, Lifecycle, LifeSettings
from agent.r4.connection import DbSettings
from agent.reporting import RollbarSink
from agent.standin.backend import StandinBackend
from agent.standin.sqs_local import SqsEndpoint
from tests.fixtures.flynotes_backend import TEST_LICENCE_KEY
from tests.fixtures.r4_database import SAMPLE_PATIENTS, R4SampleDb
from tests.fixtures.rollbar_endpoint import FakeRollbar
from updater.gate import ReportOnlyGate, VersionGate

PATIENTS = SAMPLE_PATIENTS  # plus the canary patient


@dataclass(frozen=True)
class PracticeDb:
    path: Path
    connection_string: str


@pytest.fixture(scope="session")
def practice_db(r4_sample_db: R4SampleDb) -> PracticeDb:
    """The shared R4-shaped SQLite sample (with the canary patient), reached through pyodbc."""
    return PracticeDb(r4_sample_db.path, r4_sample_db.connection_string)


_SHARED_ROLLBAR: tuple[FakeRollbar, RollbarSink] | None = None
_SHARED_ROLLBAR_LOCK = threading.Lock()


def _real_reporter() -> RollbarSink:
    """One real Rollbar reporter for the runtime suite, posting to a local fake endpoint whose
    items the canary guard scans: every runtime failure scenario crosses the real scrubber."""
    global _SHARED_ROLLBAR
    with _SHARED_ROLLBAR_LOCK:
        if _SHARED_ROLLBAR is None:
            fake = FakeRollbar().start()
            sink = RollbarSink("runtime-test-token", environment="test", endpoint=fake.url)
            _SHARED_ROLLBAR = (fake, sink)
        return _SHARED_ROLLBAR[1]


@pytest.fixture(scope="session", autouse=True)
def _drain_real_reporter() -> Iterator[None]:
    """Deliver what the runtime tests reported before the canary guard's final scan."""
    yield
    if _SHARED_ROLLBAR is not None:
        fake, sink = _SHARED_ROLLBAR
        sink.flush(30.0)
        sink.close()
        fake.stop()


class RecordingSink:
    """An ErrorSink that keeps what it was given (the port's simulator, like FakeClock), and
    also hands every report to the real Rollbar reporter (see `_real_reporter`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._real = _real_reporter()
        self.exceptions: list[tuple[BaseException, dict[str, object]]] = []
        self.messages: list[tuple[str, str, dict[str, object]]] = []
        self.flushes = 0

    def report_exception(self, exc: BaseException, *, context: dict[str, object]) -> None:
        with self._lock:
            self.exceptions.append((exc, context))
        self._real.report_exception(exc, context=context)

    def report_message(self, message: str, *, level: str, extra: dict[str, object]) -> None:
        with self._lock:
            self.messages.append((message, level, extra))
        self._real.report_message(message, level=level, extra=extra)

    def flush(self, timeout: float) -> None:
        self.flushes += 1

    def message_texts(self) -> list[str]:
        with self._lock:
            return [m for m, _, _ in self.messages]


class CountingClock(FakeClock):
    """A FakeClock that counts its sleeps: a hot loop shows as many tiny sleeps."""

    def __init__(self) -> None:
        super().__init__()
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        super().sleep(seconds)


def eventually(condition: Callable[[], object], timeout: float = 30.0) -> None:
    """Wait (real time, bounded) until `condition()` is truthy: background threads are real."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def write_run_config(
    path: Path, backend: StandinBackend, sqs: SqsEndpoint, db: PracticeDb, *more: str
) -> Path:
    """A config.toml for `r4agent run` against these stand-ins (data in `data/` beside it;
    the stand-in hands out the queue), with `more` lines appended."""
    backend.sqs_queue_url = sqs.queue_url
    backend.sqs_region = sqs.region
    lines = [
        f"licence_key = {json.dumps(TEST_LICENCE_KEY)}",
        f"backend_url = {json.dumps(backend.url)}",
        f"sqs_endpoint_url = {json.dumps(sqs.endpoint_url)}",
        f"data_dir = {json.dumps(str(path.parent / 'data'))}",
        "[database]",
        f"connection_string = {json.dumps(db.connection_string)}",
        "[timing]",
        "long_poll_seconds = 1",  # a stop waits for the receive under way to end
        *more,
    ]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def r4agent_run(config: Path) -> subprocess.Popen[str]:
    """`r4agent run --config FILE` as the service host starts it: a child process, with none
    of this process's AWS_ / R4AGENT_ environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "R4AGENT_"))}
    return subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "--config", str(config)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def make_config(
    tmp_path: Path,
    *,
    backend_url: str,
    db_connection_string: str,
    sqs_endpoint_url: str | None,
) -> AgentConfig:
    return AgentConfig(
        config_path=tmp_path / "config.toml",
        licence_key=Secret(TEST_LICENCE_KEY),
        backend_url=backend_url,
        db=DatabaseConfig(connection_string=Secret(db_connection_string)),
        rollbar=RollbarConfig(access_token=None),
        data_dir=tmp_path,
        sqs_endpoint_url=sqs_endpoint_url,
        long_poll_seconds=1,  # a stop or a life's end is not held up by a 20 s receive
    )


@dataclass
class AgentUnderTest:
    """One `run_agent` life on a background thread."""

    config: AgentConfig
    clock: CountingClock = field(default_factory=CountingClock)
    stop: threading.Event = field(default_factory=threading.Event)
    sink: RecordingSink = field(default_factory=RecordingSink)
    life: LifeSettings = field(
        default_factory=lambda: LifeSettings(
            poll_hours=1, life_hours=24, start_attempts=3, backoff=Backoff(jitter=0)
        )
    )
    backend_timeouts: Timeouts | None = None
    gate: VersionGate | None = None  # None: ReportOnlyGate (running 1.0.0)
    registry_factory: Callable[[], Registry] = default_registry
    sqs_client_factory: Callable[..., Any] | None = None
    lifecycle: Lifecycle | None = None
    result: ExitCode | None = None
    _thread: threading.Thread | None = None

    def runtime(self) -> Runtime:
        def observe(lifecycle: Lifecycle) -> None:
            self.lifecycle = lifecycle

        return Runtime(
            clock=self.clock,
            stop=self.stop,
            errors=self.sink,
            gate=self.gate or ReportOnlyGate("1.0.0"),
            life=self.life,
            dispatch=DispatchSettings(
                workers=4, heartbeat_interval_seconds=0.3, visibility_extension_seconds=5
            ),
            sqs_max_attempts=1,
            backend_timeouts=self.backend_timeouts,
            registry_factory=self.registry_factory,
            sqs_client_factory=self.sqs_client_factory,
            on_lifecycle=observe,
        )

    def start(self) -> AgentUnderTest:
        def target() -> None:
            self.result = run_agent(self.config, self.runtime())

        self._thread = threading.Thread(target=target, name="agent-under-test", daemon=True)
        self._thread.start()
        return self

    def wait(self, timeout: float = 60.0) -> ExitCode:
        assert self._thread is not None
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the agent did not exit"
        assert self.result is not None
        return self.result

    def polling(self, cycle: int = 1) -> AgentUnderTest:
        """Wait until the agent polls SQS in its `cycle`-th cycle and that cycle's uploads
        (which run beside the polling) have ended."""
        eventually(
            lambda: self.stats("polling-in-cycle") >= cycle and self.stats("uploads-done") >= cycle
        )
        return self

    def stats(self, key: str) -> int:
        return self.lifecycle.stats[key] if self.lifecycle is not None else 0


@pytest.fixture
def practice(
    tmp_path: Path,
    practice_db: PracticeDb,
    flynotes_standin: StandinBackend,
    sqs_server: SqsEndpoint,
) -> Iterator[Practice]:
    flynotes_standin.sqs_queue_url = sqs_server.queue_url
    flynotes_standin.sqs_region = sqs_server.region
    config = make_config(
        tmp_path,
        backend_url=flynotes_standin.url,
        db_connection_string=practice_db.connection_string,
        sqs_endpoint_url=sqs_server.endpoint_url,
    )
    practice = Practice(config, flynotes_standin, sqs_server, practice_db)
    yield practice
    practice.shutdown()


@dataclass
class Practice:
    """A practice in a box: the stand-ins plus the agent(s) run against them."""

    config: AgentConfig
    backend: StandinBackend
    sqs: SqsEndpoint
    db: PracticeDb
    agents: list[AgentUnderTest] = field(default_factory=list)

    def agent(self, **kwargs: object) -> AgentUnderTest:
        agent = AgentUnderTest(self.config, **kwargs)  # type: ignore[arg-type]
        self.agents.append(agent)
        return agent

    def send(self, body: str) -> None:
        self.sqs.client().send_message(QueueUrl=self.sqs.queue_url, MessageBody=body)

    def queue_counts(self, url: str | None = None) -> tuple[int, int]:
        attributes = self.sqs.client().get_queue_attributes(
            QueueUrl=url or self.sqs.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return (
            int(attributes["ApproximateNumberOfMessages"]),
            int(attributes["ApproximateNumberOfMessagesNotVisible"]),
        )

    def dead_letters(self) -> list[dict[str, object]]:
        response = self.sqs.client().receive_message(
            QueueUrl=self.sqs.dead_letter_queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=0,
            MessageAttributeNames=["All"],
        )
        return list(response.get("Messages", []))  # type: ignore[arg-type]

    def shutdown(self) -> None:
        for agent in self.agents:
            agent.stop.set()
            agent.clock.advance(48 * 3600)
        for agent in self.agents:
            if agent._thread is not None:
                agent._thread.join(30)


MakeDispatcher = Callable[[DispatchSettings], tuple[Dispatcher, RecordingSink]]


@pytest.fixture
def make_dispatcher(practice: Practice) -> Iterator[MakeDispatcher]:
    """A Dispatcher on its own (no lifecycle) with the real parts of `practice`: tests drive
    `poll_once` themselves. Closed (with its R4 connections) at the end."""
    built: list[Dispatcher] = []
    records: list[ReconnectingRecords] = []
    backend = flynotes_client(practice.config)
    connection_string = practice.db.connection_string

    def records_factory() -> ReconnectingRecords:
        records.append(ReconnectingRecords(DbSettings(connection_string=connection_string)))
        return records[-1]

    def make(settings: DispatchSettings) -> tuple[Dispatcher, RecordingSink]:
        sink = RecordingSink()
        built.append(
            Dispatcher(
                default_registry(),
                records_factory=records_factory,
                backend=backend,
                errors=sink,
                restart=RestartRequest(),
                agent_version="1.0.0",
                settings=settings,
            )
        )
        return built[-1], sink

    yield make
    for dispatcher in built:
        dispatcher.close()
    for r in records:
        r.close()
    backend.close()
