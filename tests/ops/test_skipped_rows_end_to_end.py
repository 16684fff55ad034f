"""The real agent (`run_agent`, composed as `r4agent run` composes it) on a practice whose R4
holds rows that cannot be converted, each carrying a canary value: its start-up passes upload
every other row, and each pass's skipped rows reach the log file and Rollbar once, by table,
column, type and key, with no patient data."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.app import Runtime, error_sink, run_agent
from agent.clock import FakeClock
from agent.config import load_config
from agent.exit_codes import ExitCode
from agent.lifecycle import Backoff, Lifecycle, LifeSettings
from agent.logs import log_file, setup_logging, teardown_logging
from agent.standin.backend import StandinBackend
from agent.standin.r4_sample import CANARY, CANARY_CODE
from agent.standin.sqs_local import SqsEndpoint
from tests.fixtures.canary import canaries_in
from tests.fixtures.flynotes_backend import TEST_LICENCE_KEY
from tests.fixtures.r4_database import MakeR4Db, int_column
from tests.fixtures.rollbar_endpoint import FakeRollbar
from updater.gate import ReportOnlyGate


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


def test_the_agents_passes_skip_unconvertible_rows_and_report_each_pass_once(
    tmp_path: Path,
    make_r4_db: MakeR4Db,
    flynotes_standin: StandinBackend,
    sqs_server: SqsEndpoint,
    rollbar_endpoint: FakeRollbar,
    restore_logging: None,
) -> None:
    sample = make_r4_db(patients=100, profile="real", canary=True)
    appt = _with_unconvertible_canary_rows(sample.path)
    patients = len(int_column(sample.path, "SELECT patientCode FROM patients_raw"))
    appointments = len(int_column(sample.path, "SELECT ApptId FROM Appts_raw"))
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
connection_string = "{sample.connection_string}"
[rollbar]
access_token = "skipped-rows-token-2718"
endpoint = "{rollbar_endpoint.url}"
environment = "skipped-rows"
[timing]
long_poll_seconds = 1
""",
        encoding="utf-8",
    )
    config = load_config(config_file, {})
    setup_logging(config.data_dir, foreground=False, secrets=config.secret_values())
    sink = error_sink(config)
    lifecycles: list[Lifecycle] = []
    clock = FakeClock()
    stop = threading.Event()
    runtime = Runtime(
        clock=clock,
        stop=stop,
        errors=sink,
        gate=ReportOnlyGate("1.0.0"),
        life=LifeSettings(poll_hours=1, life_hours=24, start_attempts=3, backoff=Backoff(jitter=0)),
        sqs_max_attempts=1,
        on_lifecycle=lifecycles.append,
    )
    result: list[ExitCode] = []
    thread = threading.Thread(target=lambda: result.append(run_agent(config, runtime)))
    thread.start()
    try:  # the start-up passes are done once the agent polls SQS
        eventually(lambda: lifecycles and lifecycles[0].stats["polling-in-cycle"] >= 1)
    finally:
        stop.set()
        clock.advance(48 * 3600)
        thread.join(60)
    assert not thread.is_alive() and result
    sink.flush(10)

    def rows(endpoint: str) -> list[dict[str, str]]:
        return [r for q in flynotes_standin.received_for(endpoint) for r in q.rows or ()]

    assert len(rows("patient-upload")) == patients - 1  # all but the canary
    sent_appts = {r["apptId"] for r in rows("appointment-upload")}
    assert len(sent_appts) == appointments - 1 and str(appt) not in sent_appts
    reports = [
        item for item in rollbar_endpoint.items
        if item.payload["data"]["body"]["message"]["body"].startswith("R4 rows skipped")
    ]  # fmt: skip
    assert [r.payload["data"]["body"]["message"]["body"] for r in reports] == [
        "R4 rows skipped in patients",
        "R4 rows skipped in Appts",
    ]
    for item in rollbar_endpoint.items:
        assert canaries_in(item.text) == []
    for handler in logging.getLogger().handlers:
        handler.flush()
    log_text = log_file(config.data_dir).read_text(encoding="utf-8")
    assert canaries_in(log_text) == []
    assert (
        f"R4 patients: 1 row skipped, their values could not be converted: dob (str) in 1 row, "
        f"patientCode {CANARY_CODE}"
    ) in log_text
    assert f"ApptDateTime (str) in 1 row, ApptId {appt}" in log_text
