"""End to end against moto, the Flynotes stand-in and the R4 stand-in database: `r4agent run`
itself (`python -m agent run --config FILE`, a child process) with its day compressed by the
config's [timing] keys, and `run_agent` in a thread with a FakeClock for the finer checks."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from agent.commands import envelope
from agent.exit_codes import ExitCode
from agent.sqs_queue import FAILURE_REASON_ATTRIBUTE
from agent.standin.backend import StandinBackend
from agent.standin.r4_sample import CANARY_CODE
from agent.standin.sqs_local import SqsEndpoint
from tests.fixtures.canary import CANARY_ANSWER_NOTES, canaries_in
from tests.fixtures.flynotes_backend import TEST_LICENCE_KEY
from tests.fixtures.rollbar_endpoint import FakeRollbar
from tests.runtime.conftest import (
    PATIENTS,
    Practice,
    PracticeDb,
    eventually,
    r4agent_run,
    write_run_config,
)

HOUR = 3600.0


def test_every_message_type_is_handled_and_deleted_and_life_ends_at_24h(
    practice: Practice,
) -> None:
    agent = practice.agent().start().polling()
    backend = practice.backend

    def rows(endpoint: str) -> int:
        return sum(r.row_count for r in backend.received_for(endpoint))

    assert rows("patient-upload") == PATIENTS + 1  # the first pass is full
    appointments = rows("appointment-upload")
    assert appointments > 0

    for command in (
        envelope.PatientSync(r4_patient_id=CANARY_CODE, patient_patch_id="patch-1"),
        envelope.BulkUploadPatients(full=True),
        envelope.BulkUploadAppointments(full=True),
        envelope.BulkUploadAppointmentStatus(),
        envelope.TestMessage(),
        envelope.QuestionnaireQuestionsUpload(),
        envelope.QuestionnaireAnswersUpload(),
    ):
        practice.send(envelope.encode(command))

    eventually(
        lambda: (
            len(backend.received_for("patient-sync")) == 1
            and rows("patient-upload") == 2 * (PATIENTS + 1)
            and rows("appointment-upload") == 2 * appointments
            and len(backend.received_for("appointment-status-upload")) == 2
            and len(agent.sink.messages) == 3
        )
    )
    sync = backend.received_for("patient-sync")[0].json
    assert sync["patientPatchId"] == "patch-1"
    assert sync["patient"]["id"] == str(CANARY_CODE) or sync["patient"]["id"] == CANARY_CODE
    assert sync["questionnaire"] is not None
    # the answer-level notes canary travels this path, so the guard watches it on the way
    answer_notes = [r["answerNotes"] for r in sync["questionnaire"]["responses"]]
    assert CANARY_ANSWER_NOTES in answer_notes
    texts = agent.sink.message_texts()
    assert "r4agent test message" in texts
    assert texts.count("Questionnaire Data") == 2  # questions and answers, the original's shape
    reports = [e for m, _, e in agent.sink.messages if m == "Questionnaire Data"]
    assert all(list(e) == ["questions"] and e["questions"] for e in reports)
    assert "CANARYTEXTANSWER" not in json.dumps(reports)  # free text never reported
    eventually(lambda: practice.queue_counts() == (0, 0))  # every handled message was deleted

    agent.clock.advance(24 * HOUR)
    assert agent.wait() is ExitCode.END_OF_LIFE
    assert agent.sink.exceptions == []


def test_restart_command_exits_with_restart_requested_after_deleting_it(
    practice: Practice,
) -> None:
    agent = practice.agent().start().polling()
    practice.send(envelope.encode(envelope.Restart()))
    assert agent.wait() is ExitCode.RESTART_REQUESTED
    assert practice.queue_counts() == (0, 0)


# -- `r4agent run` as the service runs it, its day compressed ---------------------------------
LIFE_HOURS = 0.003  # the "24 hours": 10.8 s
POLL_MINUTES = 0.05  # the "hour" between version checks, scope refreshes and uploads: 3 s
ROLLBAR_TOKEN = "life-rollbar-token-5e1f"


def _write_config(
    path: Path,
    *,
    backend: StandinBackend,
    sqs: SqsEndpoint,
    db: PracticeDb,
    rollbar: FakeRollbar,
    life_hours: float,
    poll_minutes: float,
) -> Path:
    """The agent's config.toml for this practice, its day compressed and its Rollbar local."""
    return write_run_config(
        path,
        backend,
        sqs,
        db,
        f"life_hours = {life_hours}",
        f"poll_minutes = {poll_minutes}",
        "[rollbar]",
        f"access_token = {json.dumps(ROLLBAR_TOKEN)}",
        f"endpoint = {json.dumps(rollbar.url)}",
    )


def _finished(child: subprocess.Popen[str], timeout: float) -> tuple[int, str]:
    try:
        _, err = child.communicate(timeout=timeout)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    return child.returncode, err


def _dead_letter_reasons(sqs: SqsEndpoint) -> list[str]:
    messages = sqs.client().receive_message(
        QueueUrl=sqs.dead_letter_queue_url,
        MaxNumberOfMessages=10,
        WaitTimeSeconds=0,
        MessageAttributeNames=["All"],
    ).get("Messages", [])
    return sorted(
        m["MessageAttributes"][FAILURE_REASON_ATTRIBUTE]["StringValue"]
        for m in messages
    )


def test_r4agent_run_lives_its_compressed_day_handling_commands_then_exits_end_of_life(
    tmp_path: Path,
    practice_db: PracticeDb,
    flynotes_standin: StandinBackend,
    sqs_server: SqsEndpoint,
    rollbar_endpoint: FakeRollbar,
) -> None:
    config = _write_config(
        tmp_path / "config.toml",
        backend=flynotes_standin,
        sqs=sqs_server,
        db=practice_db,
        rollbar=rollbar_endpoint,
        life_hours=LIFE_HOURS,
        poll_minutes=POLL_MINUTES,
    )
    started = time.monotonic()
    child = r4agent_run(config)
    try:
        eventually(lambda: flynotes_standin.received_for("patient-upload"), 60)
        sqs = sqs_server.client()
        for body in (
            envelope.encode(envelope.PatientSync(CANARY_CODE, "life-sync")),
            '{"type": "make-coffee"}',  # poison: an unknown type
            '{"type": "patient-sync", "r4PatientId": ',  # poison: not JSON
        ):
            sqs.send_message(QueueUrl=sqs_server.queue_url, MessageBody=body)
        code, stderr = _finished(child, timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    lived = time.monotonic() - started
    assert code == ExitCode.END_OF_LIFE, stderr
    assert lived >= LIFE_HOURS * 3600  # it lived its whole compressed day
    # the stand-in: the patient-sync, and a pass and a scope fetch every compressed hour: the
    # first pass sent every patient, the later ones nothing (nothing changed: the ledger)
    (sync,) = flynotes_standin.received_for("patient-sync")
    assert sync.json["patientPatchId"] == "life-sync"
    cycles = round(LIFE_HOURS * 60 / POLL_MINUTES)  # 3.6 -> 4 cycles
    assert len(flynotes_standin.received_for("appointment-status-upload")) >= cycles - 1
    assert len(flynotes_standin.received_for("data")) >= cycles - 1
    assert [r.row_count for r in flynotes_standin.received_for("patient-upload")] == [PATIENTS + 1]
    assert (tmp_path / "data" / "uploads-ledger.sqlite3").is_file()
    # SQS: the poison ones in the dead-letter queue with their reasons, nothing left behind
    reasons = _dead_letter_reasons(sqs_server)
    assert len(reasons) == 2
    assert reasons[0].startswith("not-json:") and reasons[1].startswith("unknown-type:")
    attributes = sqs_server.client().get_queue_attributes(
        QueueUrl=sqs_server.queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    assert set(attributes.values()) == {"0"}
    # Rollbar heard of both poison messages, and nothing of the patient
    eventually(lambda: len(rollbar_endpoint.items) >= 2, 10)
    assert all(canaries_in(item.text) == [] for item in rollbar_endpoint.items)
    log_text = (tmp_path / "data" / "logs" / "agent.log").read_text(encoding="utf-8")
    assert f"end of life after {LIFE_HOURS} hours" in log_text
    assert TEST_LICENCE_KEY not in log_text and canaries_in(stderr) == []


def test_r4agent_run_exits_restart_requested_after_a_restart_message(
    tmp_path: Path,
    practice_db: PracticeDb,
    flynotes_standin: StandinBackend,
    sqs_server: SqsEndpoint,
    rollbar_endpoint: FakeRollbar,
) -> None:
    config = _write_config(
        tmp_path / "config.toml",
        backend=flynotes_standin,
        sqs=sqs_server,
        db=practice_db,
        rollbar=rollbar_endpoint,
        life_hours=24,  # the restart, not the end of life, ends this one
        poll_minutes=60,
    )
    child = r4agent_run(config)
    try:
        eventually(lambda: flynotes_standin.received_for("appointment-status-upload"), 60)
        sqs_server.client().send_message(
            QueueUrl=sqs_server.queue_url, MessageBody=envelope.encode(envelope.Restart())
        )
        code, stderr = _finished(child, timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert code == ExitCode.RESTART_REQUESTED, stderr
    attributes = sqs_server.client().get_queue_attributes(
        QueueUrl=sqs_server.queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    assert set(attributes.values()) == {"0"}  # the restart message was deleted first
    assert _dead_letter_reasons(sqs_server) == []
