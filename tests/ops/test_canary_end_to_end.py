"""The real agent, composed as `r4agent run` composes it (config file -> logging -> RollbarSink),
fails in every way we can provoke around the canary patient; the fake Rollbar's payloads and
the agent's log file must hold no patient data, while still saying what went wrong. Also on an
R4 whose canary rows hold values the agent cannot convert."""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.app import Runtime, error_sink, run_agent
from agent.clock import FakeClock
from agent.commands.dispatcher import DispatchSettings
from agent.config import AgentConfig, load_config
from agent.exit_codes import ExitCode
from agent.lifecycle import Backoff, Lifecycle, LifeSettings
from agent.logs import log_file, setup_logging, teardown_logging
from agent.ports import ErrorSink
from agent.reporting import RollbarSink
from agent.standin.backend import StandinBackend
from agent.standin.r4_sample import CANARY
from agent.standin.sqs_local import SqsEndpoint
from tests.fixtures.canary import CANARY_CODE, CANARY_SURNAME, canaries_in
from tests.fixtures.flynotes_backend import TEST_LICENCE_KEY
from tests.fixtures.r4_database import MakeR4Db, R4SampleDb, int_column
from tests.fixtures.rollbar_endpoint import FakeRollbar
from tests.runtime.conftest import eventually
from updater.gate import ReportOnlyGate

ROLLBAR_TOKEN = "e2e-rollbar-token-31337"
# the agent logs in with it (the SQLite3 driver ignores UID/PWD): in no payload, no log line
SQL_PASSWORD = "e2e-sql-pass}word-4242"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    level = logging.getLogger().level
    yield
    teardown_logging()
    logging.getLogger().setLevel(level)


def _agent_config(
    tmp_path: Path,
    standin: StandinBackend,
    sqs: SqsEndpoint,
    rollbar: FakeRollbar,
    connection_string: str,
    *,
    database_extra: str = "",
) -> AgentConfig:
    """A config file as an install writes one, pointed at the stand-ins; logging set up from it."""
    standin.sqs_queue_url = sqs.queue_url
    standin.sqs_region = sqs.region
    config_file = tmp_path / "config.toml"
    config_file.write_text(
        f"""
licence_key = "{TEST_LICENCE_KEY}"
backend_url = "{standin.url}"
sqs_endpoint_url = "{sqs.endpoint_url}"
data_dir = "{tmp_path / "data"}"
[database]
connection_string = "{connection_string}"
{database_extra}
[rollbar]
access_token = "{ROLLBAR_TOKEN}"
endpoint = "{rollbar.url}"
environment = "canary-e2e"
[timing]
long_poll_seconds = 1
""",
        encoding="utf-8",
    )
    config = load_config(config_file, {})
    setup_logging(config.data_dir, foreground=False, secrets=config.secret_values())
    return config


@contextlib.contextmanager
def _running_agent(config: AgentConfig, sink: ErrorSink, *, workers: int) -> Iterator[None]:
    """`run_agent` in a thread, from its start-up passes until the block ends (it is polling
    SQS when the block begins); then stopped, and its life run out on the fake clock."""
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
            workers=workers, heartbeat_interval_seconds=0.3, visibility_extension_seconds=5
        ),
        sqs_max_attempts=1,
        on_lifecycle=lifecycles.append,
    )
    result: list[ExitCode] = []
    thread = threading.Thread(target=lambda: result.append(run_agent(config, runtime)))
    thread.start()
    try:
        eventually(lambda: lifecycles and lifecycles[0].stats["polling-in-cycle"] >= 1)
        yield
    finally:
        stop.set()
        clock.advance(48 * 3600)
        thread.join(60)
    assert not thread.is_alive() and result


def _log_text(config: AgentConfig) -> str:
    for handler in logging.getLogger().handlers:
        handler.flush()
    return log_file(config.data_dir).read_text(encoding="utf-8")


def test_failures_around_the_canary_patient_reach_rollbar_without_patient_data(
    tmp_path: Path,
    r4_sample_db: R4SampleDb,
    flynotes_standin: StandinBackend,
    sqs_server: SqsEndpoint,
    rollbar_endpoint: FakeRollbar,
    restore_logging: None,
) -> None:
    config = _agent_config(
        tmp_path, flynotes_standin, sqs_server, rollbar_endpoint, r4_sample_db.connection_string,
        database_extra=f'user = "r4reader"\npassword = "{SQL_PASSWORD}"',
    )
    sink = error_sink(config)
    assert isinstance(sink, RollbarSink)
    with _running_agent(config, sink, workers=2):
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

    log_text = _log_text(config)
    assert "patient-sync" in log_text
    assert canaries_in(log_text) == []
    assert TEST_LICENCE_KEY not in log_text and ROLLBAR_TOKEN not in log_text
    assert "R4: connected with driver 'SQLite3'" in log_text  # with the SQL login added
    assert SQL_PASSWORD not in log_text and SQL_PASSWORD.replace("}", "}}") not in log_text


def _with_unconvertible_canary_rows(path: Path) -> int:
    """patients.dob and Appts.ApptDateTime handed back as text (views), the canary's own rows
    holding canary text there. Returns the canary's appointment id."""
    appt = int_column(path, f"SELECT ApptId FROM Appts WHERE PatientCode = {CANARY_CODE}")[0]
    con = sqlite3.connect(path)
    try:
        for statement in (
            "ALTER TABLE patients RENAME TO patients_raw",
            "CREATE VIEW patients AS SELECT patientCode, forename, surname, "
            "CAST(dob AS TEXT) AS dob, mobileNo, email, addressId FROM patients_raw",
            "ALTER TABLE Appts RENAME TO Appts_raw",
            "CREATE VIEW Appts AS SELECT ApptId, PatientCode, "
            "CAST(ApptDateTime AS TEXT) AS ApptDateTime, ApptFlag FROM Appts_raw",
        ):
            con.execute(statement)
        con.execute("UPDATE patients_raw SET dob = ? WHERE patientCode = ?",
                    (CANARY["surname"], CANARY_CODE))  # fmt: skip
        con.execute("UPDATE Appts_raw SET ApptDateTime = ? WHERE ApptId = ?",
                    (CANARY["notes"], appt))  # fmt: skip
        con.commit()
    finally:
        con.close()
    return appt


def test_unconvertible_canary_rows_are_skipped_and_each_pass_reports_them_once_without_data(
    tmp_path: Path,
    make_r4_db: MakeR4Db,
    flynotes_standin: StandinBackend,
    sqs_server: SqsEndpoint,
    rollbar_endpoint: FakeRollbar,
    restore_logging: None,
) -> None:
    # The canary's values sit exactly where a conversion fails: the start-up passes upload every
    # other row and report their skipped rows once each (table, column, type, key), never a value.
    sample = make_r4_db(patients=100, profile="real", canary=True)
    appt = _with_unconvertible_canary_rows(sample.path)
    patients = len(int_column(sample.path, "SELECT patientCode FROM patients_raw"))
    appointments = len(int_column(sample.path, "SELECT ApptId FROM Appts_raw"))
    config = _agent_config(
        tmp_path, flynotes_standin, sqs_server, rollbar_endpoint, sample.connection_string
    )
    sink = error_sink(config)
    with _running_agent(config, sink, workers=1):
        pass  # the start-up passes are done once the agent polls SQS
    sink.flush(10)

    def rows(endpoint: str) -> list[dict[str, str]]:
        return [r for q in flynotes_standin.received_for(endpoint) for r in q.rows or ()]

    assert len(rows("patient-upload")) == patients - 1  # all but the canary
    sent_appts = {r["apptId"] for r in rows("appointment-upload")}
    assert len(sent_appts) == appointments - 1 and str(appt) not in sent_appts
    reports = [
        item.payload["data"]["body"]["message"]["body"] for item in rollbar_endpoint.items
    ]
    assert [r for r in reports if r.startswith("R4 rows skipped")] == [
        "R4 rows skipped in patients",
        "R4 rows skipped in Appts",
    ]
    for item in rollbar_endpoint.items:
        assert canaries_in(item.text) == []
    log_text = _log_text(config)
    assert canaries_in(log_text) == []
    assert (
        "R4 patients: 1 row skipped, their values could not be converted: dob (str) in 1 row, "
        f"patientCode {CANARY_CODE}"
    ) in log_text
    assert f"ApptDateTime (str) in 1 row, ApptId {appt}" in log_text
