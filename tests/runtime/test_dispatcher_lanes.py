"""The dispatcher's lanes on their own (no lifecycle): coalescing of serial commands, the
visibility heartbeat's timing, and what winding down releases. Real parts: moto, the Flynotes
stand-in, the R4 stand-in through pyodbc. The tests call `poll_once` themselves.

Some waits are real time on purpose: a message's visibility deadline is kept by the SQS
server's clock, so only real time shows whether the heartbeat kept it hidden."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from agent.commands import envelope
from agent.commands.dispatcher import Dispatcher, DispatchSettings
from agent.sqs_queue import ReceivedMessage, SqsQueue
from agent.standin.r4_sample import CANARY_CODE
from tests.runtime.conftest import MakeDispatcher, Practice, eventually

BULK = envelope.encode(envelope.BulkUploadPatients(full=True))


def _sync(patch: str) -> str:
    return envelope.encode(envelope.PatientSync(r4_patient_id=CANARY_CODE, patient_patch_id=patch))


class CountingQueue(SqsQueue):
    """The real SqsQueue, counting its visibility calls (each heartbeat tick makes one)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.visibility_calls = 0

    def change_visibility(
        self, messages: Sequence[ReceivedMessage], seconds: int
    ) -> list[tuple[ReceivedMessage, str]]:
        refused = super().change_visibility(messages, seconds)
        self.visibility_calls += 1
        return refused


def receive(lanes: Dispatcher, queue: SqsQueue, n: int) -> None:
    """Poll until `n` more messages were received (and handed to the lanes)."""
    received = 0

    def enough() -> bool:
        nonlocal received
        received += lanes.poll_once(queue)
        return received >= n

    eventually(enough)
    assert received == n


@contextmanager
def polling(lanes: Dispatcher, queue: SqsQueue) -> Iterator[None]:
    """`poll_once` in a loop on a thread, as the lifecycle does, until the block ends."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            lanes.poll_once(queue)

    thread = threading.Thread(target=loop, name="test-poller", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)


def test_backlog_of_bulk_uploads_is_coalesced_and_a_patient_sync_is_received_past_it(
    practice: Practice, make_dispatcher: MakeDispatcher
) -> None:
    # one upload running (held by the backend), then 11 more of the same queued with a
    # patient-sync behind them: the sync must be received and sent at once, the first of the
    # 11 waits (its twin is running and may have read past the change), the other 10 are
    # answered by that waiting one and deleted
    lanes, sink = make_dispatcher(
        DispatchSettings(heartbeat_interval_seconds=0.2, visibility_extension_seconds=5)
    )
    queue = SqsQueue(practice.sqs.client(), practice.sqs.queue_url, wait_seconds=1)
    release = threading.Event()
    practice.backend.hold_next(1, until=release, endpoint="patient-upload")
    try:
        with polling(lanes, queue):
            practice.send(BULK)
            eventually(lambda: practice.backend.holding == 1)
            for _ in range(11):
                practice.send(BULK)
            practice.send(_sync("past-the-backlog"))
            eventually(lambda: practice.backend.received_for("patient-sync"), timeout=10)
            assert practice.backend.holding == 1  # the bulk work is still held
            eventually(lambda: lanes.outcomes["coalesced"] == 10)
            # longer than the queue's 1 s visibility timeout: the running and the waiting
            # upload stay hidden only if the heartbeat extends both (a waiting one that came
            # back would be received again and coalesced into itself: an 11th)
            time.sleep(2.5)
            assert practice.queue_counts() == (0, 2)
            assert lanes.outcomes["coalesced"] == 10
            release.set()
            eventually(lambda: lanes.outcomes["done"] == 3)  # the sync and two uploads
    finally:
        release.set()
    assert len(practice.backend.received_for("patient-upload")) == 2
    assert practice.queue_counts() == (0, 0)
    assert practice.dead_letters() == []
    assert dict(lanes.outcomes) == {"done": 3, "coalesced": 10}
    assert sink.exceptions == []


def test_heartbeat_extends_a_message_at_the_first_tick_after_its_receipt(
    practice: Practice, make_dispatcher: MakeDispatcher
) -> None:
    # visibility timeout 2 s, heartbeat every 1.5 s: enough only if a message is extended at
    # the first tick after it arrived (one received just after a tick is 1.5 s old at the
    # next; skipping it until it is older than an interval would extend it at 3 s, too late)
    lanes, _ = make_dispatcher(
        DispatchSettings(heartbeat_interval_seconds=1.5, visibility_extension_seconds=5)
    )
    queue = CountingQueue(
        practice.sqs.client(), practice.sqs.queue_url, wait_seconds=1, visibility_timeout=2
    )
    release = threading.Event()
    practice.backend.hold_next(2, until=release, endpoint="patient-sync")
    try:
        practice.send(_sync("first"))
        receive(lanes, queue, 1)
        eventually(lambda: practice.backend.holding == 1)
        practice.send(_sync("just-after-a-tick"))
        ticks = queue.visibility_calls
        eventually(lambda: queue.visibility_calls > ticks)  # a tick (extending "first")
        assert lanes.poll_once(queue) == 1
        received = time.monotonic()
        eventually(lambda: practice.backend.holding == 2)
        time.sleep(max(0.0, received + 2.6 - time.monotonic()))  # past its own 2 s
        assert practice.queue_counts() == (0, 2)  # neither came back
    finally:
        release.set()
    lanes.drain()
    assert len(practice.backend.received_for("patient-sync")) == 2
    eventually(lambda: practice.queue_counts() == (0, 0))


def test_wind_down_releases_what_has_not_started_and_lets_running_work_finish(
    practice: Practice, make_dispatcher: MakeDispatcher
) -> None:
    # one worker: a patient-sync runs and one waits; in the serial lane an upload runs and an
    # appointments upload waits. Winding down must not work through the waiting two (the host
    # kills the process after its grace period): they go back to the queue at once.
    lanes, _ = make_dispatcher(
        DispatchSettings(
            workers=1, heartbeat_interval_seconds=0.2, visibility_extension_seconds=30
        )
    )
    queue = SqsQueue(
        practice.sqs.client(), practice.sqs.queue_url, wait_seconds=1, visibility_timeout=30
    )
    release = threading.Event()
    practice.backend.hold_next(1, until=release, endpoint="patient-upload")
    practice.backend.hold_next(1, until=release, endpoint="patient-sync")
    released: list[int] = []
    winding = threading.Thread(target=lambda: released.append(lanes.wind_down()))
    try:
        practice.send(BULK)
        practice.send(_sync("runs"))
        receive(lanes, queue, 2)
        eventually(lambda: practice.backend.holding == 2)
        practice.send(envelope.encode(envelope.BulkUploadAppointments(full=True)))
        practice.send(_sync("waits"))
        receive(lanes, queue, 2)
        assert practice.queue_counts() == (0, 4)
        winding.start()
        eventually(lambda: practice.queue_counts() == (2, 2))  # released while two still run
        assert winding.is_alive()  # it waits for the running ones
    finally:
        release.set()
    winding.join(30)
    assert released == [2]
    assert dict(lanes.outcomes) == {"done": 2, "released": 2}
    assert len(practice.backend.received_for("patient-upload")) == 1
    assert [r.json["patientPatchId"] for r in practice.backend.received_for("patient-sync")] == [
        "runs"
    ]
    back = practice.sqs.client().receive_message(
        QueueUrl=practice.sqs.queue_url,
        MaxNumberOfMessages=10,
        WaitTimeSeconds=1,
        MessageSystemAttributeNames=["ApproximateReceiveCount"],
    )["Messages"]
    assert sorted(m["Body"] for m in back) == sorted(
        [envelope.encode(envelope.BulkUploadAppointments(full=True)), _sync("waits")]
    )
