"""The canary guard can fail: inner pytest sessions that leak on purpose must fail, a clean one
must pass. (Inner sessions run in a subprocess, so their leaks never touch this session.)"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from tests.fixtures import canary

ROOT = Path(__file__).resolve().parents[2]


def run_inner(tmp_path: Path, body: str) -> subprocess.CompletedProcess[str]:
    test_file = tmp_path / "test_inner.py"
    test_file.write_text(textwrap.dedent(body), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # the inner basetemp lives outside ours: its planted log files must not fail THIS session
    with tempfile.TemporaryDirectory(prefix="canary-inner-") as inner_tmp:
        return _run(tmp_path, test_file, Path(inner_tmp), env)


def _run(
    tmp_path: Path, test_file: Path, inner_tmp: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
            "-p", "tests.fixtures.rollbar_endpoint", "-p", "tests.fixtures.canary_guard",
            "--rootdir", str(tmp_path), "-c", os.devnull,
            "--basetemp", str(inner_tmp / "t"), str(test_file),
        ],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_clean_session_passes(tmp_path: Path) -> None:
    result = run_inner(
        tmp_path,
        """
        import logging
        def test_logs_the_code_only():
            logging.getLogger("agent.x").info("synced patient %d", 900001)
        """,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_patient_name_in_a_debug_log_line_fails_the_test(tmp_path: Path) -> None:
    result = run_inner(
        tmp_path,
        """
        import logging
        def test_leaks():
            logging.getLogger("agent.r4.reader").debug("row %s", ("CANARY" + "SURNAME",))
        """,
    )
    assert result.returncode != 0
    assert "PATIENT DATA LEAK" in result.stdout and "CANARYSURNAME" in result.stdout
    assert "agent.r4.reader" in result.stdout


def test_leak_through_a_non_propagating_logger_is_still_caught(tmp_path: Path) -> None:
    result = run_inner(
        tmp_path,
        """
        import logging
        def test_leaks():
            quiet = logging.getLogger("agent.hidden")
            quiet.propagate = False
            quiet.error("bad email %s", "canary.email" + "@example.invalid")
        """,
    )
    assert result.returncode != 0 and "PATIENT DATA LEAK" in result.stdout


def test_leak_in_an_exception_message_logged_with_traceback_is_caught(tmp_path: Path) -> None:
    result = run_inner(
        tmp_path,
        """
        import logging
        def test_leaks():
            try:
                raise ValueError("notes were " + "CANARY" + "NOTES")
            except ValueError:
                logging.getLogger("agent.x").exception("upload failed")
        """,
    )
    assert result.returncode != 0 and "CANARYNOTES" in result.stdout


def test_canary_posted_to_the_fake_rollbar_fails(tmp_path: Path) -> None:
    result = run_inner(
        tmp_path,
        """
        import requests
        def test_leaks(rollbar_endpoint):
            requests.post(rollbar_endpoint.url + "item/", data="07000" + "CANARY", timeout=5)
        """,
    )
    assert result.returncode != 0 and "fake Rollbar item" in result.stdout


def test_canary_in_a_subprocess_log_file_fails_the_session(tmp_path: Path) -> None:
    result = run_inner(
        tmp_path,
        """
        def test_child_agent_wrote_a_log(tmp_path):
            logs = tmp_path / "data" / "logs"
            logs.mkdir(parents=True)
            (logs / "agent.log").write_text("dob " + "1971-07-" + "17\\n")
        """,
    )
    assert result.returncode != 0
    assert "log file" in result.stdout and "1971-07-17" in result.stdout


def test_canary_in_an_upload_ledger_file_fails_the_session(tmp_path: Path) -> None:
    result = run_inner(
        tmp_path,
        """
        def test_a_ledger_that_kept_a_value(tmp_path):
            data = tmp_path / "data"
            data.mkdir()
            (data / "uploads-ledger.sqlite3-wal").write_bytes(b"CANARY" + b"SURNAME")
        """,
    )
    assert result.returncode != 0
    assert "ledger file" in result.stdout and "CANARYSURNAME" in result.stdout


def test_generator_and_guard_agree_on_the_canary_values() -> None:
    r4_sample = pytest.importorskip("agent.standin.r4_sample")
    generated = [str(v) for v in r4_sample.CANARY.values()]
    assert r4_sample.CANARY_CODE == canary.CANARY_CODE
    assert r4_sample.CANARY_DOB.isoformat() == canary.CANARY_DOB_ISO
    dates = {canary.CANARY_DOB_ISO, canary.CANARY_DOB_UK}
    # every value the guard hunts is in the database, and every value the database holds is
    # hunted: a canary field added on one side only fails here
    for value in set(canary.CANARY_VALUES) - dates:
        assert any(value in g for g in generated), value
    for g in generated:
        assert canary.canaries_in(g), g
    assert canary.CANARY_ANSWER_NOTES in canary.CANARY_VALUES  # CompletedQuestionnaireAnswer.Notes
