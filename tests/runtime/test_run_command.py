"""`r4agent run` as the service host starts it: a real child process with a config file,
stopped with SIGTERM; the patient-sync in flight at that moment is finished (and deleted)
before the exit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from agent.commands import envelope
from agent.exit_codes import ExitCode
from agent.standin.backend import StandinBackend
from agent.standin.r4_sample import CANARY_CODE
from agent.standin.sqs_local import SqsEndpoint
from tests.fixtures.flynotes_backend import TEST_LICENCE_KEY
from tests.runtime.conftest import PracticeDb, eventually, write_run_config


def test_sigterm_finishes_the_in_flight_patient_sync_then_exits_end_of_life(
    tmp_path: Path,
    practice_db: PracticeDb,
    flynotes_standin: StandinBackend,
    sqs_server: SqsEndpoint,
) -> None:
    config = write_run_config(tmp_path / "config.toml", flynotes_standin, sqs_server, practice_db)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "R4AGENT_"))}
    child = subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "--config", str(config)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    log_file = tmp_path / "data" / "logs" / "agent.log"
    release = threading.Event()
    try:
        eventually(lambda: flynotes_standin.received_for("appointment-status-upload"), 60)
        # a patient-sync in flight when the stop comes: the backend holds it until we let go
        flynotes_standin.hold_next(1, until=release, endpoint="patient-sync")
        sqs_server.client().send_message(
            QueueUrl=sqs_server.queue_url,
            MessageBody=envelope.encode(envelope.PatientSync(CANARY_CODE, "in-flight")),
        )
        eventually(lambda: flynotes_standin.holding == 1, 60)
        child.send_signal(signal.SIGTERM)
        eventually(lambda: "stopping after in-flight work" in log_file.read_text("utf-8"), 30)
        assert child.poll() is None  # stopped, and waiting for the held patient-sync
        release.set()
        assert child.wait(60) == ExitCode.END_OF_LIFE
    finally:
        release.set()
        if child.poll() is None:
            child.kill()
            child.wait()
    (sync,) = flynotes_standin.received_for("patient-sync")  # finished, answered 200
    assert sync.json["patientPatchId"] == "in-flight"
    attributes = sqs_server.client().get_queue_attributes(
        QueueUrl=sqs_server.queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    assert set(attributes.values()) == {"0"}  # and deleted before the exit
    text = log_file.read_text(encoding="utf-8")
    assert "stop requested: in-flight work finished" in text
    assert TEST_LICENCE_KEY not in text
