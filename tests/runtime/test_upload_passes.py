"""The agent's upload passes as `r4agent run` makes them: killed (SIGKILL: no clean-up at all)
in the middle of a pass, then started again, the ledger holds digests of acknowledged chunks
only and every row reaches the backend; `r4agent status` shows each table's pass summary."""

from __future__ import annotations

import json
import signal
import sqlite3
import sys
import threading
from pathlib import Path

import pytest

from agent.exit_codes import ExitCode
from agent.standin.backend import StandinBackend
from agent.standin.sqs_local import SqsEndpoint
from agent.uploads.ledger import LEDGER_FILENAME
from tests.runtime.conftest import (
    PATIENTS,
    Practice,
    PracticeDb,
    eventually,
    r4agent_run,
    write_run_config,
)

ROWS = 50  # rows per request: the sample's 301 patients go in 7 chunks


def _ids(backend: StandinBackend) -> set[int]:
    return {int(row["id"]) for r in backend.received_for("patient-upload") for row in r.rows or []}


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_sigkill_mid_pass_then_restart_sends_every_row_and_commits_nothing_early(
    tmp_path: Path,
    practice_db: PracticeDb,
    flynotes_standin: StandinBackend,
    sqs_server: SqsEndpoint,
) -> None:
    config = write_run_config(
        tmp_path / "config.toml",
        flynotes_standin,
        sqs_server,
        practice_db,
        "[uploads]",
        f"rows_per_request = {ROWS}",
    )
    data = tmp_path / "data"
    release = threading.Event()
    # two chunks are answered, the third is held at the backend: the agent dies waiting for it
    flynotes_standin.hold_next(1, until=release, endpoint="patient-upload", after=2)
    child = r4agent_run(config)
    try:
        eventually(lambda: flynotes_standin.holding == 1, 60)
        child.send_signal(signal.SIGKILL)
        assert child.wait(30) == -signal.SIGKILL
        acknowledged = _ids(flynotes_standin)
        assert len(acknowledged) == 2 * ROWS
        con = sqlite3.connect(data / LEDGER_FILENAME)
        try:
            committed = {k for (k,) in con.execute("SELECT key FROM digests_patients")}
        finally:
            con.close()
        assert committed == acknowledged  # not one digest of the chunk still unanswered
    finally:
        release.set()
        if child.poll() is None:
            child.kill()
            child.wait()
    flynotes_standin.clear_received()
    again = r4agent_run(config)
    try:
        eventually(lambda: flynotes_standin.received_for("appointment-status-upload"), 60)
        assert len(_ids(flynotes_standin)) == PATIENTS + 1  # every row, the canary's included
        again.send_signal(signal.SIGTERM)
        assert again.wait(60) == ExitCode.END_OF_LIFE
    finally:
        if again.poll() is None:
            again.kill()
            again.wait()


def test_status_shows_each_tables_pass_summary(practice: Practice) -> None:
    agent = practice.agent().start().polling()
    status = json.loads((practice.config.data_dir / "status.json").read_text("utf-8"))
    tables = {t["table"]: t for t in status["cycle"]["tables"]}
    assert list(tables) == ["patients", "appointments", "appointment statuses"]
    patients = tables["patients"]
    assert patients["error"] is None
    assert set(patients["counts"]) == {"read", "changed", "sent", "skipped", "refused", "failed"}
    assert patients["counts"]["sent"] == patients["counts"]["read"] - patients["counts"]["skipped"]
    agent.stop.set()
