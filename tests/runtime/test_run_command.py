"""`r4agent run` as the service host starts it: a real child process with a config file,
stopped with SIGTERM after finishing its in-flight work."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from agent.commands import envelope
from agent.exit_codes import ExitCode
from agent.standin.backend import StandinBackend
from agent.standin.sqs_local import SqsEndpoint
from tests.fixtures.flynotes_backend import TEST_LICENCE_KEY
from tests.runtime.conftest import PracticeDb, eventually


def test_run_command_uploads_polls_and_stops_gracefully_on_sigterm(
    tmp_path: Path,
    practice_db: PracticeDb,
    flynotes_standin: StandinBackend,
    sqs_server: SqsEndpoint,
) -> None:
    flynotes_standin.sqs_queue_url = sqs_server.queue_url
    flynotes_standin.sqs_region = sqs_server.region
    config = tmp_path / "config.toml"
    config.write_text(
        "\n".join(
            [
                f"licence_key = {json.dumps(TEST_LICENCE_KEY)}",
                f"backend_url = {json.dumps(flynotes_standin.url)}",
                f"sqs_endpoint_url = {json.dumps(sqs_server.endpoint_url)}",
                f"data_dir = {json.dumps(str(tmp_path / 'data'))}",
                "[database]",
                f"connection_string = {json.dumps(practice_db.connection_string)}",
            ]
        ),
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "R4AGENT_"))}
    child = subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "--config", str(config)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        eventually(lambda: flynotes_standin.received_for("appointment-status-upload"), 60)
        child.send_signal(signal.SIGTERM)
        # a message arriving during the long poll is handled before the exit (in-flight work)
        sqs_server.client().send_message(
            QueueUrl=sqs_server.queue_url,
            MessageBody=envelope.encode(envelope.BulkUploadAppointmentStatus()),
        )
        assert child.wait(60) == ExitCode.END_OF_LIFE
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    log = (tmp_path / "data" / "logs").glob("*.log")
    text = "".join(p.read_text(encoding="utf-8") for p in log)
    assert "stop requested" in text
    assert TEST_LICENCE_KEY not in text
