"""End to end: `run_agent` against moto, the Flynotes stand-in and the R4 stand-in database,
with a FakeClock compressing the 24-hour life."""

from __future__ import annotations

import json

from agent.commands import envelope
from agent.exit_codes import ExitCode
from agent.standin.r4_sample import CANARY_CODE
from tests.fixtures.canary import CANARY_ANSWER_NOTES
from tests.runtime.conftest import PATIENTS, Practice, eventually

HOUR = 3600.0


def test_every_message_type_is_handled_and_deleted_and_life_ends_at_24h(
    practice: Practice,
) -> None:
    agent = practice.agent().start().polling()
    assert practice.backend.received_for("patient-upload")[0].row_count == PATIENTS + 1
    assert practice.backend.received_for("appointment-upload")

    for command in (
        envelope.PatientSync(r4_patient_id=CANARY_CODE, patient_patch_id="patch-1"),
        envelope.BulkUploadPatients(),
        envelope.BulkUploadAppointments(),
        envelope.BulkUploadAppointmentStatus(),
        envelope.TestMessage(),
        envelope.QuestionnaireQuestionsUpload(),
        envelope.QuestionnaireAnswersUpload(),
    ):
        practice.send(envelope.encode(command))

    backend = practice.backend
    eventually(
        lambda: (
            len(backend.received_for("patient-sync")) == 1
            and len(backend.received_for("patient-upload")) == 2
            and len(backend.received_for("appointment-upload")) == 2
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
    assert any(t.startswith("questionnaire questions:") for t in texts)
    assert any(t.startswith("questionnaire pre-set answers:") for t in texts)
    answers = next(e for m, _, e in agent.sink.messages if m.startswith("questionnaire pre"))
    assert "CANARYTEXTANSWER" not in json.dumps(answers)  # free text never reported
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
