"""The real agent, composed as `r4agent run` composes it (config file -> logging -> RollbarSink),
fails in every way we can provoke around the canary patient; the fake Rollbar's payloads and
the agent's log file must hold no patient data, while still saying what went wrong."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.app import Runtime, error_sink, run_agent
from agent.clock import FakeClock
from agent.commands.dispatcher import DispatchSettings
from agent.config import load_config
from agent.exit_codes import ExitCode
from agent.lifecycle import Backoff, Lifecycle, LifeSettings
from agent.logs import log_file, setup_logging, teardown_logging
from agent.reporting import RollbarSink
from agent.standin.backend import StandinBackend
from agent.standin.sqs_local import SqsEndpoint
from tests.fixtures.canary import CANARY_CODE, CANARY_SURNAME, canaries_in
from tests.fixtures.flynotes_backend import TEST_LICENCE_KEY
from tests.fixtures.r4_database import R4SampleDb
from tests.fixtures.rollbar_endpoint import FakeRollbar
from updater.gate import ReportOnlyGate

ROLLBAR_TOKEN = "e2e-rollbar-token-31337"
# the agent logs in with it (the SQLite3 driver ignores UID/PWD): in no payload, no log line
SQL_PASSWORD = "e2e-sql-pass}word-4242"


def eventually(condition: Callable[[], object], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    level = logging.getLogger().level
    yield
    teardown_logging()
    logging.getLogger().setLevel(level)


def test_failures_around_the_canary_patient_reach_rollbar_without_patient_data(
    tmp_path: Path,
    r4_sample_db: R4SampleDb,
    flynotes_standin: StandinBackend,
    sqs_server: SqsEndpoint,
    rollbar_endpoint: FakeRollbar,
    restore_logging: None,
) -> None:
    flynotes_standin.sqs_queue_url = sqs_server.queue_url
    flynotes_standin.sqs_region = sqs_server.region
    config_file = tmp_path / "config.toml"
    config_file.write_text(
        f"""
licence_key = "{TEST_LICENCE_KEY}"
backend_url = "{flynotes_standin.url}"
sqs_endpoint_url = "{sqs_server.endpoint_url}"
data_dir = "{tmp_path / "data"}"
[database]
connection_string = "{r4_sample_db.connection_string}"
user = "r4reader"
password = "{SQL_PASSWORD}"
[rollbar]
access_token = "{ROLLBAR_TOKEN}"
endpoint = "{rollbar_endpoint.url}"
environment = "canary-e2e"
[timing]
long_poll_seconds = 1
""",
        encoding="utf-8",
    )
    config = load_config(config_file, {})
    setup_logging(config.data_dir, foreground=False, secrets=config.secret_values())
    sink = error_sink(config)
    assert isinstance(sink, RollbarSink)

    lifecycles: list[Lifecycle] = []
    clock = FakeClock()
    stop = threading.Event()
    runtime = Runtime(
        clock=clock,
        stop=stop,
        errors=sink,
        gate=ReportOnlyGate("1.0.0"),
        life=LifeSettings(poll_hours=1, life_hours=24, start_attempts=3, backoff=Backoff(jitter=0)),
        dispatch=DispatchSettings(
            workers=2, heartbeat_interval_seconds=0.3, visibility_extension_seconds=5
        ),
        sqs_max_attempts=1,
        on_lifecycle=lifecycles.append,
    )
    result: list[ExitCode] = []
    thread = threading.Thread(target=lambda: result.append(run_agent(config, runtime)))
    thread.start()
    try:
        eventually(lambda: lifecycles and lifecycles[0].stats["polling-in-cycle"] >= 1)
        sqs = sqs_server.client()

        def send(body: dict[str, object]) -> None:
            sqs.send_message(QueueUrl=sqs_server.queue_url, MessageBody=json.dumps(body))

        # 1. the backend refuses the canary's patient-sync (permanent 4xx)
        flynotes_standin.fail_next(3, status=400, endpoint="patient-sync")
        send({"type": "patient-sync", "r4PatientId": CANARY_CODE, "patientPatchId": "e2e-1"})
        # 2. a malformed message whose fields carry patient data
        send({"type": "patient-sync", "r4PatientId": CANARY_SURNAME, "patientPatchId": "e2e-2"})
        # 3. the operator reports: questions and PRE-SET answers only, and the test message
        send({"type": "questionnaire-questions-upload"})
        send({"type": "questionnaire-answers-upload"})
        send({"type": "test"})
        eventually(lambda: len(rollbar_endpoint.items) >= 5, timeout=60)  # one per message
    finally:
        stop.set()
        clock.advance(48 * 3600)
        thread.join(60)
    assert not thread.is_alive() and result
    sink.flush(10)

    texts = [item.text for item in rollbar_endpoint.items]
    assert texts, "nothing reached the fake Rollbar"
    for text in texts:
        assert canaries_in(text) == [], text
        assert ROLLBAR_TOKEN not in text and TEST_LICENCE_KEY not in text
        assert SQL_PASSWORD not in text and SQL_PASSWORD.replace("}", "}}") not in text
    everything = "\n".join(texts)
    assert "r4agent test message" in everything
    assert everything.count('"Questionnaire Data"') >= 2  # both reports, the original's shape
    assert "patient-sync" in everything and "HTTP 400" in everything  # still says what broke
    assert all(
        i.headers.get("X-Rollbar-Access-Token") == ROLLBAR_TOKEN for i in rollbar_endpoint.items
    )

    for handler in logging.getLogger().handlers:
        handler.flush()
    log_text = log_file(config.data_dir).read_text(encoding="utf-8")
    assert "patient-sync" in log_text
    assert canaries_in(log_text) == []
    assert TEST_LICENCE_KEY not in log_text and ROLLBAR_TOKEN not in log_text
    assert "R4: connected with driver 'SQLite3'" in log_text  # with the SQL login added
    assert SQL_PASSWORD not in log_text and SQL_PASSWORD.replace("}", "}}") not in log_text
