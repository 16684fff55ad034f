"""`r4agent status` reads what the running agent writes: the status file, rewritten atomically
at each cycle and message by a real `r4agent run` (a child process, its day compressed) and by
`run_agent` with a FakeClock; the `--json` document has a versioned schema."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # (a moto[server] dependency)

from agent.commands import envelope
from agent.exit_codes import ExitCode
from agent.ops.status import OUTPUT_SCHEMA
from agent.ops.status_file import status_path
from agent.standin.backend import StandinBackend
from agent.standin.r4_sample import CANARY_CODE
from agent.standin.sqs_local import SqsEndpoint
from tests.fixtures.canary import canaries_in
from tests.fixtures.flynotes_backend import TEST_LICENCE_KEY
from tests.fixtures.rollbar_endpoint import FakeRollbar
from tests.runtime.conftest import PATIENTS, Practice, PracticeDb, eventually, r4agent_run
from tests.runtime.test_agent_life import _finished, _write_config


class _Watcher:
    """Reads the status file as fast as it can while the agent rewrites it: with a write that
    is not atomic (truncate + write), some reads would see an empty or half document."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.reads = 0
        self.torn: list[str] = []
        self.seen: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                text = self.path.read_text(encoding="utf-8")
            except FileNotFoundError:
                continue
            self.reads += 1
            try:
                doc = json.loads(text)
            except ValueError:
                self.torn.append(text[:80])
                continue
            if not self.seen or self.seen[-1]["written_at"] != doc["written_at"]:
                self.seen.append(doc)

    def __enter__(self) -> _Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


# the first pass of a process is full: every patient read, new to the ledger and sent
FIRST_PASS = {
    "read": PATIENTS + 1,
    "changed": PATIENTS + 1,
    "sent": PATIENTS + 1,
    "skipped": 0,
    "refused": 0,
    "failed": 0,
}

def _status_json(config: Path) -> tuple[int, dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-m", "agent", "status", "--json", "--config", str(config)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return done.returncode, json.loads(done.stdout)


def compressed_day_config(
    tmp_path: Path,
    backend: StandinBackend,
    sqs: SqsEndpoint,
    db: PracticeDb,
    rollbar: FakeRollbar,
    *,
    life_hours: float,
) -> Path:
    """config.toml for an `r4agent run` whose "hour" is 3 s, data in tmp_path/data."""
    return _write_config(tmp_path / "config.toml", backend=backend, sqs=sqs, db=db,
                         rollbar=rollbar, life_hours=life_hours, poll_minutes=0.05)  # fmt: skip


def test_r4agent_run_rewrites_its_status_file_atomically_and_status_reads_it_meanwhile(
    tmp_path: Path,
    practice_db: PracticeDb,
    flynotes_standin: StandinBackend,
    sqs_server: SqsEndpoint,
    rollbar_endpoint: FakeRollbar,
) -> None:
    config = compressed_day_config(  # 10.8 s, a cycle every 3 s
        tmp_path, flynotes_standin, sqs_server, practice_db, rollbar_endpoint, life_hours=0.003
    )
    status_file = status_path(tmp_path / "data")
    child = r4agent_run(config)
    try:
        with _Watcher(status_file) as watcher:
            eventually(lambda: flynotes_standin.received_for("patient-upload"), 60)
            sqs_server.client().send_message(
                QueueUrl=sqs_server.queue_url,
                MessageBody=envelope.encode(envelope.PatientSync(CANARY_CODE, "status-sync")),
            )
            sqs_server.client().send_message(
                QueueUrl=sqs_server.queue_url, MessageBody='{"type": "make-coffee"}'
            )

            def handled_both() -> bool:
                today = _status_json(config)[1]["today"]
                return bool(today["handled"] == 1 and today["dead_lettered"] == 1)

            eventually(handled_both, 30)
            code, running = _status_json(config)  # while the agent runs
            exit_code, stderr = _finished(child, timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert exit_code == ExitCode.END_OF_LIFE, stderr
    assert watcher.reads > 50 and watcher.torn == [], watcher.torn
    assert len(watcher.seen) >= 5  # rewritten at cycles, receives and messages
    assert not [p for p in status_file.parent.iterdir() if p.name.startswith(".status.json")]

    assert code == 0
    jsonschema.validate(running, OUTPUT_SCHEMA)
    agent = running["agent"]
    assert agent["agent"]["exited_at"] is None and agent["version_check"]["action"] == "carry-on"
    tables = agent["cycle"]["tables"]
    assert tables[0] == {"table": "patients", "counts": FIRST_PASS, "error": None}
    assert [t["table"] for t in tables] == ["patients", "appointments", "appointment statuses"]
    assert agent["queue"]["last_receive_at"] is not None
    assert agent["last_error"]["type"] == "DecodeError"  # the poison message, type only
    assert running["service"]["installed"] is None  # not a Windows service host
    assert running["versions"]["service_runs"] is None  # not an installed layout

    final = json.loads(status_file.read_text(encoding="utf-8"))
    assert final["agent"]["exit"] == "END_OF_LIFE" and final["agent"]["exited_at"]
    text = status_file.read_text(encoding="utf-8")
    assert canaries_in(text) == [] and TEST_LICENCE_KEY not in text


def test_the_status_shows_cycles_messages_and_the_last_error_of_an_agent_in_a_thread(
    practice: Practice,
) -> None:
    """run_agent on a FakeClock: the cycle's counts, the day's outcomes, the next check."""
    agent = practice.agent().start().polling()
    path = status_path(practice.config.data_dir)
    practice.send(envelope.encode(envelope.PatientSync(CANARY_CODE, "thread-sync")))
    practice.send(envelope.encode(envelope.PatientSync(1, "no-such-patient")))

    def doc() -> dict[str, Any]:
        return dict(json.loads(path.read_text(encoding="utf-8")))

    eventually(lambda: doc()["queue"]["today"] == {"dead-lettered": 1, "done": 1})
    status = doc()
    assert status["last_error"]["type"] == "UnknownPatientError"
    assert status["last_error"]["phase"] == "message patient-sync"
    assert status["cycle"]["number"] == 1
    assert status["cycle"]["tables"][0]["counts"] == FIRST_PASS
    assert status["next"]["version_check_at"] == "2026-01-05T10:00:00+00:00"  # FakeClock + 1 h
    agent.clock.advance(24 * 3600)
    assert agent.wait() is ExitCode.END_OF_LIFE
    assert doc()["agent"]["exit"] == "END_OF_LIFE"
