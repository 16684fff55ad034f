"""Faults inside the dispatcher itself: a bug in the visibility heartbeat or in a lane must be
reported, and must not silently stop the heartbeat. Real parts (moto, the stand-in, the R4
stand-in through pyodbc); the fault is injected at SqsQueue's public methods."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from agent.app import ReconnectingRecords, flynotes_client
from agent.commands import envelope
from agent.commands.context import RestartRequest
from agent.commands.dispatcher import Dispatcher, DispatchSettings
from agent.commands.registry import default_registry
from agent.r4.connection import DbSettings
from agent.sqs_queue import ReceivedMessage, SqsQueue
from agent.standin.r4_sample import CANARY_CODE
from tests.runtime.conftest import Practice, RecordingSink, eventually


class HeartbeatBugOnce(SqsQueue):
    """The first visibility extension fails with an error no boundary translated (a bug)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.failed = False
        self.extended = 0

    def extend_visibility(self, message: ReceivedMessage, seconds: int) -> None:
        if not self.failed:
            self.failed = True
            raise ValueError("a bug on the heartbeat's path")
        super().extend_visibility(message, seconds)
        self.extended += 1


class DeleteBug(SqsQueue):
    def delete(self, message: ReceivedMessage) -> None:
        raise ValueError("a bug after the handler succeeded")


@pytest.fixture
def dispatcher(practice: Practice) -> Iterator[tuple[Dispatcher, RecordingSink]]:
    sink = RecordingSink()
    connection_string = practice.db.connection_string
    backend = flynotes_client(practice.config)
    records: list[ReconnectingRecords] = []

    def records_factory() -> ReconnectingRecords:
        records.append(ReconnectingRecords(DbSettings(connection_string=connection_string)))
        return records[-1]

    dispatcher = Dispatcher(
        default_registry(),
        records_factory=records_factory,
        backend=backend,
        errors=sink,
        restart=RestartRequest(),
        agent_version="1.0.0",
        settings=DispatchSettings(heartbeat_interval_seconds=0.2, visibility_extension_seconds=5),
    )
    yield dispatcher, sink
    dispatcher.close()
    for r in records:
        r.close()
    backend.close()


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
