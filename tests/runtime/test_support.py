"""Support commands: `sync-patient` and `bulk-upload` through the real CLI, against the stand-in
backend and the R4 stand-in database. Dry runs send nothing and print no patient data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.cli import main
from agent.exit_codes import ExitCode
from agent.standin.backend import StandinBackend
from agent.standin.r4_sample import CANARY, CANARY_CODE
from tests.fixtures.flynotes_backend import TEST_LICENCE_KEY
from tests.runtime.conftest import PATIENTS, PracticeDb


@pytest.fixture
def config_file(tmp_path: Path, practice_db: PracticeDb, flynotes_standin: StandinBackend) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        "\n".join(
            [
                f"licence_key = {json.dumps(TEST_LICENCE_KEY)}",
                f"backend_url = {json.dumps(flynotes_standin.url)}",
                f"data_dir = {json.dumps(str(tmp_path))}",
                "[database]",
                f"connection_string = {json.dumps(practice_db.connection_string)}",
            ]
        ),
        encoding="utf-8",
    )
    return path


def _no_patient_data(text: str) -> None:
    for value in CANARY.values():
        assert value not in text


def test_sync_patient_dry_run_prints_field_names_only_and_sends_nothing(
    config_file: Path, flynotes_standin: StandinBackend, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["sync-patient", str(CANARY_CODE), "--dry-run", "--config", str(config_file)])
    out = capsys.readouterr().out
    assert code == 0
    assert "surname" in out and "dry run" in out
    _no_patient_data(out)
    assert flynotes_standin.received == []


def test_sync_patient_sends_the_patient(
    config_file: Path, flynotes_standin: StandinBackend, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sync-patient", str(CANARY_CODE), "--config", str(config_file)]) == 0
    (sync,) = flynotes_standin.received_for("patient-sync")
    assert sync.json["patientPatchId"] == "r4agent-support"
    _no_patient_data(capsys.readouterr().out)


def test_sync_unknown_patient_fails_with_status_1(
    config_file: Path, flynotes_standin: StandinBackend
) -> None:
    assert main(["sync-patient", "424242", "--config", str(config_file)]) == 1
    assert flynotes_standin.received == []


def test_bulk_upload_dry_run_counts_without_sending(
    config_file: Path, flynotes_standin: StandinBackend, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["bulk-upload", "--dry-run", "--with-appointments", "--config", str(config_file)]) == 0
    )
    out = capsys.readouterr().out
    assert f"{PATIENTS + 1} patients would be uploaded" in out
    _no_patient_data(out)
    assert flynotes_standin.received == []


def test_bulk_upload_sends_every_patient(
    config_file: Path, flynotes_standin: StandinBackend
) -> None:
    assert main(["bulk-upload", "--config", str(config_file)]) == 0
    (upload,) = flynotes_standin.received_for("patient-upload")
    assert upload.row_count == PATIENTS + 1


def test_bulk_upload_with_backend_down_exits_transient_failure(
    config_file: Path, flynotes_standin: StandinBackend
) -> None:
    flynotes_standin.fail_next(100, status=503)
    assert main(["bulk-upload", "--config", str(config_file)]) == ExitCode.TRANSIENT_FAILURE
