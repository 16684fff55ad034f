"""Per-message accounting on a real SQS (moto): delete on success only, permanent failures to the
dead-letter queue at once with a reason, transient failures retried by redelivery and bounded
by the queue's maxReceiveCount, duplicates harmless, long handlers kept invisible."""

from __future__ import annotations

import json
import threading
import time

from agent.commands import envelope
from agent.exit_codes import ExitCode
from agent.sqs_queue import FAILURE_REASON_ATTRIBUTE
from agent.standin.r4_sample import CANARY_CODE
from tests.runtime.conftest import Practice, eventually

HOUR = 3600.0


def _started(practice: Practice):  # type: ignore[no-untyped-def]
    return practice.agent().start().polling()


def _collect(into: list[dict[str, object]], practice: Practice) -> int:
    into.extend(practice.dead_letters())
    return len(into)


def _reasons(dead: list[dict[str, object]]) -> list[str]:
    out = []
    for m in dead:
        attributes = m["MessageAttributes"]
        assert isinstance(attributes, dict)
        out.append(str(attributes[FAILURE_REASON_ATTRIBUTE]["StringValue"]))
    return out


def test_poison_messages_go_to_the_dead_letter_queue_at_once_with_a_reason(
    practice: Practice,
) -> None:
    agent = _started(practice)
    practice.send('{"type": "patient-sync", "r4PatientId": "CANARYSURNAME"')  # not JSON
    practice.send(json.dumps({"type": "format-hard-disk"}))
    practice.send(
        json.dumps({"type": "patient-sync", "r4PatientId": "Smith", "patientPatchId": "x"})
    )
    practice.send(envelope.encode(envelope.PatientSync(r4_patient_id=424242, patient_patch_id="p")))

    dead: list[dict[str, object]] = []
    eventually(lambda: _collect(dead, practice) >= 4)
    reasons = sorted(_reasons(dead))
    assert len(reasons) == 4
    assert any(r.startswith("not-json:") for r in reasons)
    assert any(r.startswith("unknown-type:") and "format-hard-disk" in r for r in reasons)
    assert any(r.startswith("bad-field:") and "r4PatientId" in r for r in reasons)
    assert any("UnknownPatientError" in r and "424242" in r for r in reasons)
    for reason in reasons:
        assert "CANARY" not in reason and "Smith" not in reason  # never body contents
    eventually(lambda: practice.queue_counts() == (0, 0))
    assert practice.backend.received_for("patient-sync", status=None) == []
    assert len(agent.sink.exceptions) == 4  # each one reported
    agent.clock.advance(24 * HOUR)
    assert agent.wait() is ExitCode.END_OF_LIFE


def test_failing_patient_sync_is_retried_by_redelivery_and_not_lost(practice: Practice) -> None:
    agent = _started(practice)
    practice.backend.fail_next(2, status=500, endpoint="patient-sync")
    practice.send(
        envelope.encode(envelope.PatientSync(r4_patient_id=CANARY_CODE, patient_patch_id="r"))
    )

    eventually(lambda: practice.backend.received_for("patient-sync"))
    assert len(practice.backend.received_for("patient-sync", status=500)) == 2
    assert practice.backend.received_for("patient-sync")[0].json["patientPatchId"] == "r"
    eventually(lambda: practice.queue_counts() == (0, 0))
    assert practice.dead_letters() == []
    # the failed delivery was reported once and left for SQS to deliver again
    assert [c["receive_count"] for _, c in agent.sink.exceptions] == [1]


def test_message_failing_every_time_ends_in_the_dead_letter_queue_after_max_receives(
    practice: Practice,
) -> None:
    agent = _started(practice)
    practice.backend.fail_next(50, status=500, endpoint="patient-sync")
    practice.send(
        envelope.encode(envelope.PatientSync(r4_patient_id=CANARY_CODE, patient_patch_id="d"))
    )

    dead: list[dict[str, object]] = []
    eventually(lambda: _collect(dead, practice) >= 1)
    # maxReceiveCount is 3: three attempts, then SQS's redrive moved it (not retried forever)
    assert [c["receive_count"] for _, c in agent.sink.exceptions] == [1, 2, 3]
    assert practice.backend.received_for("patient-sync") == []
    assert json.loads(str(dead[0]["Body"]))["patientPatchId"] == "d"


def test_duplicate_delivery_of_patient_sync_sends_the_same_record_twice_harmlessly(
    practice: Practice,
) -> None:
    _started(practice)
    body = envelope.encode(envelope.PatientSync(r4_patient_id=CANARY_CODE, patient_patch_id="dup"))
    practice.send(body)
    practice.send(body)
    eventually(lambda: len(practice.backend.received_for("patient-sync")) == 2)
    first, second = practice.backend.received_for("patient-sync")
    assert first.json == second.json
    eventually(lambda: practice.queue_counts() == (0, 0))


def test_long_handler_keeps_its_message_invisible_past_the_visibility_timeout(
    practice: Practice,
) -> None:
    # visibility timeout 1 s; the backend takes 3 s to answer: without the heartbeat SQS would
    # deliver the message again while the first handler still runs
    _started(practice)
    practice.backend.slow_next(1, seconds=3.0, endpoint="patient-sync")
    practice.send(
        envelope.encode(envelope.PatientSync(r4_patient_id=CANARY_CODE, patient_patch_id="s"))
    )
    eventually(lambda: practice.backend.received_for("patient-sync"))
    eventually(lambda: practice.queue_counts() == (0, 0))
    assert len(practice.backend.received_for("patient-sync", status=None)) == 1


def test_patient_sync_is_not_held_up_by_the_cycle_upload(practice: Practice) -> None:
    practice.backend.slow_next(1, seconds=5.0, endpoint="patient-upload")
    agent = practice.agent().start()
    eventually(lambda: agent.stats("polling-in-cycle") >= 1)
    practice.send(
        envelope.encode(envelope.PatientSync(r4_patient_id=CANARY_CODE, patient_patch_id="now"))
    )
    eventually(lambda: practice.backend.received_for("patient-sync"))
    # the slow full upload is still running: the patient-sync went past it
    assert practice.backend.received_for("patient-upload", status=None) == []
    agent.polling()
    assert practice.backend.received_for("patient-upload")


def test_patient_sync_is_received_past_a_backlog_of_bulk_uploads_coalesced_into_one(
    practice: Practice,
) -> None:
    # one bulk upload running (held by the backend), eleven more queued behind it, then a
    # patient-sync: the sync must still be received and sent (a full serial lane once stopped
    # all receiving); the first of the eleven waits, the other ten are answered by it
    agent = _started(practice)
    uploads_before = len(practice.backend.received_for("patient-upload"))
    release = threading.Event()
    practice.backend.hold_next(1, until=release, endpoint="patient-upload")
    try:
        practice.send(envelope.encode(envelope.BulkUploadPatients(full=True)))
        eventually(lambda: practice.backend.holding == 1)  # the first one is uploading
        for _ in range(11):
            practice.send(envelope.encode(envelope.BulkUploadPatients(full=True)))
        practice.send(
            envelope.encode(
                envelope.PatientSync(r4_patient_id=CANARY_CODE, patient_patch_id="past-bulk")
            )
        )
        eventually(lambda: practice.backend.received_for("patient-sync"), timeout=10)
        assert practice.backend.holding == 1  # it went past the held bulk work
        eventually(lambda: practice.queue_counts() == (0, 2))  # ten deleted as coalesced
        # held past the queue's 1 s visibility timeout (real time: SQS's clock): the running
        # and the waiting upload stay hidden because the heartbeat extends both
        time.sleep(2.5)
        assert practice.queue_counts() == (0, 2)
        assert len(practice.backend.received_for("patient-upload")) == uploads_before
    finally:
        release.set()
    eventually(lambda: practice.queue_counts() == (0, 0))
    eventually(lambda: len(practice.backend.received_for("patient-upload")) == uploads_before + 2)
    agent.clock.advance(24 * HOUR)
    assert agent.wait() is ExitCode.END_OF_LIFE
    # exactly the running one and the one that waited: the others were deleted unrun
    assert len(practice.backend.received_for("patient-upload")) == uploads_before + 2
    assert practice.dead_letters() == []
    assert agent.sink.exceptions == []
