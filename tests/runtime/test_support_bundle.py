"""`r4agent support-bundle`: after a real `r4agent run` (a child process, its day compressed)
that handled the canary patient, the zip holds doctor's and status's output, the logs, the
config with its secrets redacted and the updater's files — and no patient value, no secret."""

from __future__ import annotations

import json
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from agent.cli import main
from agent.commands import envelope
from agent.exit_codes import ExitCode
from agent.ops.bundle import Bundle
from agent.standin.backend import StandinBackend
from agent.standin.r4_sample import CANARY_CODE
from agent.standin.sqs_local import SqsEndpoint
from tests.fixtures.canary import CANARY_SURNAME, canaries_in_bytes
from tests.fixtures.flynotes_backend import TEST_LICENCE_KEY
from tests.fixtures.rollbar_endpoint import FakeRollbar
from tests.runtime.conftest import PracticeDb, eventually, r4agent_run
from tests.runtime.test_agent_life import ROLLBAR_TOKEN, _finished
from tests.runtime.test_status_file import compressed_day_config
from updater.state import (
    CurrentPointer,
    PointerState,
    Quarantine,
    QuarantineEntry,
    write_pointer,
    write_quarantine,
)

PROXY_PASSWORD = "proxy-pass-5d7e1a"
DB_PASSWORD = "db-pass-c0ffee42"


def test_the_bundle_holds_what_support_needs_and_no_patient_data_or_secret(
    tmp_path: Path,
    practice_db: PracticeDb,
    flynotes_standin: StandinBackend,
    sqs_server: SqsEndpoint,
    rollbar_endpoint: FakeRollbar,
) -> None:
    config = compressed_day_config(
        tmp_path, flynotes_standin, sqs_server, practice_db, rollbar_endpoint, life_hours=0.002
    )
    data = tmp_path / "data"
    child = r4agent_run(config)
    try:
        eventually(lambda: flynotes_standin.received_for("patient-upload"), 60)
        sqs_server.client().send_message(
            QueueUrl=sqs_server.queue_url,
            MessageBody=envelope.encode(envelope.PatientSync(CANARY_CODE, "bundle-sync")),
        )
        eventually(lambda: flynotes_standin.received_for("patient-sync"), 30)
        code, stderr = _finished(child, timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert code == ExitCode.END_OF_LIFE, stderr
    # what an installed practice also has: the host's pointer and a quarantined build
    write_pointer(data / "current", CurrentPointer("1.0.0", None, PointerState.CONFIRMED))
    at = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    write_quarantine(
        data / "quarantine.json",
        Quarantine({"1.1.0": QuarantineEntry("ab" * 32, "crash loop", at, at + timedelta(1))}),
    )
    # secrets the practice's config may hold beside the licence key and the Rollbar token
    text = config.read_text(encoding="utf-8")
    text = text.replace(
        "[database]",
        f'proxy = "http://practice:{PROXY_PASSWORD}@127.0.0.1:9"\n[database]',
    ).replace('connection_string = "', f'connection_string = "PWD={DB_PASSWORD};')
    config.write_text(text, encoding="utf-8")

    out = tmp_path / "bundle.zip"
    assert main(["support-bundle", "--config", str(config), "--out", str(out)]) == 0
    with zipfile.ZipFile(out) as archive:
        names = set(archive.namelist())
        contents = {name: archive.read(name) for name in names}

    assert {
        "MANIFEST.txt", "config.toml", "doctor.txt", "status.txt", "status.json",
        "logs/agent.log", "updater/current", "updater/quarantine.json", "updater/status.json",
        "versions.txt", "odbc-drivers.txt",
    } <= names, names  # fmt: skip
    assert "SQLite3" in contents["odbc-drivers.txt"].decode()
    assert b"doctor:" in contents["doctor.txt"] and b"R4 schema" in contents["doctor.txt"]
    status = json.loads(contents["status.json"])
    assert status["agent"]["agent"]["exit"] == "END_OF_LIFE"
    assert status["update"]["quarantine"][0]["version"] == "1.1.0"
    assert b"message " in contents["logs/agent.log"] and b"done in" in contents["logs/agent.log"]
    redacted = contents["config.toml"].decode()
    assert "licence_key = ***" in redacted and "access_token = ***" in redacted
    assert f'backend_url = "{flynotes_standin.url}"' in redacted  # the rest stays readable
    assert b"updater/current: " not in contents["MANIFEST.txt"]  # it was there
    assert b"updater/install-state.json: not there" in contents["MANIFEST.txt"]

    secrets = (
        TEST_LICENCE_KEY, ROLLBAR_TOKEN, PROXY_PASSWORD, DB_PASSWORD,
        sqs_server.secret_access_key, sqs_server.session_token,
    )  # fmt: skip
    for name, content in contents.items():
        assert canaries_in_bytes(content) == [], name
        for secret in secrets:
            assert secret.encode() not in content, (name, secret[:4])


def test_every_packed_file_goes_through_the_reports_scrubber() -> None:
    """The second line of defence, should a line ever carry a value by mistake."""
    bundle = Bundle(secret_values=("licence-0123456789",))
    bundle.add(
        "logs/agent.log",
        f"surname='{CANARY_SURNAME}' licence licence-0123456789 key ASIA{'Q' * 16}\nnext line\n",
    )
    assert bundle.files["logs/agent.log"] == "surname=*** licence *** key ***\nnext line\n"
