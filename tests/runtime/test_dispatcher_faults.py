"""Faults inside the dispatcher itself: a bug in the visibility heartbeat or in a lane must be
reported, and must not silently stop the heartbeat. Real parts (moto, the stand-in, the R4
stand-in through pyodbc); the fault is injected at SqsQueue's public methods."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest

from agent.commands import envelope
from agent.commands.dispatcher import Dispatcher, DispatchSettings
from agent.sqs_queue import ReceivedMessage, SqsQueue
from agent.standin.r4_sample import CANARY_CODE
from tests.runtime.conftest import MakeDispatcher, Practice, RecordingSink, eventually


class HeartbeatBugOnce(SqsQueue):
    """The first visibility extension fails with an error no boundary translated (a bug)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.failed = False
        self.extended = 0

    def change_visibility(
        self, messages: Sequence[ReceivedMessage], seconds: int
    ) -> list[tuple[ReceivedMessage, str]]:
        if not self.failed:
            self.failed = True
            raise ValueError("a bug on the heartbeat's path")
        refused = super().change_visibility(messages, seconds)
        self.extended += 1
        return refused


class DeleteBug(SqsQueue):
    def delete(self, message: ReceivedMessage) -> None:
        raise ValueError("a bug after the handler succeeded")


@pytest.fixture
def dispatcher(make_dispatcher: MakeDispatcher) -> tuple[Dispatcher, RecordingSink]:
    return make_dispatcher(
        DispatchSettings(heartbeat_interval_seconds=0.2, visibility_extension_seconds=5)
    )


def _sync(patch: str) -> str:
    return envelope.encode(envelope.PatientSync(r4_patient_id=CANARY_CODE, patient_patch_id=patch))


def test_heartbeat_bug_is_reported_and_the_heartbeat_keeps_extending(
    practice: Practice, dispatcher: tuple[Dispatcher, RecordingSink]
) -> None:
    lanes, sink = dispatcher
    queue = HeartbeatBugOnce(practice.sqs.client(), practice.sqs.queue_url, wait_seconds=1)
    release = threading.Event()
    practice.backend.hold_next(1, until=release, endpoint="patient-sync")
    try:
        practice.send(_sync("held"))
        eventually(lambda: lanes.poll_once(queue) == 1)
        eventually(lambda: practice.backend.holding == 1)
        # the queue's visibility timeout is 1 s: six more extensions, 0.2 s apart, outlive it
        eventually(lambda: queue.extended >= 6)
        assert practice.queue_counts() == (0, 1)  # still invisible: not delivered again
    finally:
        release.set()
    lanes.drain()
    assert len(practice.backend.received_for("patient-sync", status=None)) == 1
    reported = [(e, c) for e, c in sink.exceptions if c.get("phase") == "visibility heartbeat"]
    assert len(reported) == 1 and isinstance(reported[0][0], ValueError)
    eventually(lambda: practice.queue_counts() == (0, 0))


def test_exception_escaping_a_lane_is_reported_not_lost_in_its_future(
    practice: Practice, dispatcher: tuple[Dispatcher, RecordingSink]
) -> None:
    lanes, sink = dispatcher
    queue = DeleteBug(practice.sqs.client(), practice.sqs.queue_url, wait_seconds=1)
    practice.send(_sync("delete-bug"))
    eventually(lambda: lanes.poll_once(queue) == 1)
    lanes.drain()
    eventually(lambda: lanes.outcomes["error"] == 1)
    [(error, context)] = sink.exceptions
    assert isinstance(error, ValueError)
    assert context["phase"] == "dispatch" and context["message_id"]
    assert practice.backend.received_for("patient-sync")  # the handler itself had succeeded
