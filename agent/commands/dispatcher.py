"""Runs received messages through their handlers in two lanes, accounting for each message
separately (like Powertools' batch processor):

- success              -> deleted
- transient failure    -> left alone: visible again after the visibility timeout, and after the
                          queue's maxReceiveCount SQS moves it to the dead-letter queue
- permanent failure    -> moved to the dead-letter queue now with a `failure-reason`
  (undecodable body, unknown type, unknown patient, ...)
- unexpected exception -> a bug: reported, treated as transient (so it ends in the DLQ, bounded)

Lanes: the message is decoded on receipt, and `serial` work (bulk uploads, questionnaire
reports, the lifecycle's cycle uploads) goes to a lane of its own, ONE thread, so the practice's
SQL Server never runs several full scans at once; everything else (patient-sync, restart, test,
undecodable bodies) runs on the worker pool. The lanes share no thread, so no backlog of bulk
work can hold a patient-sync up. Each lane thread has its own RecordSource (an ODBC connection
is not shared between threads). How many messages are taken ahead is bounded per lane.

A heartbeat thread extends the visibility of messages whose handler runs (or waits) long, so a
100k-patient bulk upload is not delivered a second time while it runs; it waits in real time
because the visibility deadline is kept by the SQS server's clock. A failure in the heartbeat
is reported and the heartbeat goes on; an exception escaping a lane's job is reported too.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace

from agent.commands.context import Delivery, HandlerContext, RestartRequest
from agent.commands.envelope import Command, DecodeError, decode
from agent.commands.registry import Registry
from agent.errors import AgentError, PermanentError, TransientError
from agent.ports import Backend, ErrorSink, RecordSource
from agent.sqs_queue import MAX_MESSAGES_PER_RECEIVE, ReceivedMessage, SqsQueue

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DispatchSettings:
    workers: int = 4  # the worker pool (patient-syncs and other quick commands)
    prefetch: int = 10  # messages received ahead of a free worker (they wait, invisible)
    serial_backlog: int = 10  # serial messages held for the serial lane, the running one included
    # Real time. Must stay well under the queue's visibility timeout (SQS default 30 s): a
    # message in flight for one interval is extended before its first timeout can expire.
    heartbeat_interval_seconds: float = 10.0
    visibility_extension_seconds: int = 60  # each extension keeps the message hidden this long


@dataclass(slots=True)
class _InFlight:
    queue: SqsQueue
    message: ReceivedMessage
    started: float  # time.monotonic(), real: compared with the server's visibility deadline
    serial: bool  # which lane it waits in


REPORT_EVERY = 10  # in a streak of heartbeat failures, report the 1st and every Nth


class Dispatcher:
    def __init__(
        self,
        registry: Registry,
        *,
        records_factory: Callable[[], RecordSource],
        backend: Backend,
        errors: ErrorSink,
        restart: RestartRequest,
        agent_version: str,
        settings: DispatchSettings = DispatchSettings(),
    ) -> None:
        self._registry = registry
        self._records_factory = records_factory
        self._backend = backend
        self._errors = errors
        self._restart = restart
        self._agent_version = agent_version
        self._settings = settings
        if settings.workers < 1 or settings.serial_backlog < 1:
            raise ValueError("DispatchSettings: workers and serial_backlog must be at least 1")
        self._pool = ThreadPoolExecutor(settings.workers, thread_name_prefix="handler")
        self._serial = ThreadPoolExecutor(1, thread_name_prefix="serial")
        self._local = threading.local()
        self._lock = threading.Lock()
        self._inflight: dict[Future[None], _InFlight] = {}
        self._jobs: set[Future[None]] = set()  # the lifecycle's own bulk work (no message)
        self._closed = threading.Event()
        self._heartbeat_failures = 0
        self.outcomes: Counter[str] = Counter()  # done / retry / dead-lettered / dropped / error
        self._heartbeat = threading.Thread(target=self._beat, name="visibility", daemon=True)
        self._heartbeat.start()

    # -- receiving -------------------------------------------------------------------------
    def free_slots(self) -> int:
        """How many messages may be received now: any of them may be for either lane, so the
        fuller lane decides (worker pool: workers + prefetch; serial lane: serial_backlog)."""
        with self._lock:
            serial = sum(1 for f in self._inflight.values() if f.serial) + len(self._jobs)
            quick = len(self._inflight) + len(self._jobs) - serial
        settings = self._settings
        return min(settings.workers + settings.prefetch - quick, settings.serial_backlog - serial)

    def poll_once(self, queue: SqsQueue) -> int:
        """Receive up to the number of free slots (long poll) and start handling them. With no
        slot free, waits (up to 1 s) for a message to finish instead of receiving. Returns how
        many messages were received. Raises TransientError."""
        free = self.free_slots()
        if free <= 0:
            self.wait_for_any(timeout=1.0)
            return 0
        messages = queue.receive(min(free, MAX_MESSAGES_PER_RECEIVE))
        for message in messages:
            self.submit(queue, message)
        return len(messages)

    def submit(self, queue: SqsQueue, message: ReceivedMessage) -> Future[None]:
        """Decode `message` and start handling it in its lane."""
        try:
            command: Command | DecodeError = decode(message.body)
        except DecodeError as e:
            command = e  # dead-lettered by a worker (an SQS call: not on the receiving thread)
        serial = not isinstance(command, DecodeError) and self._is_serial(command)
        lane = self._serial if serial else self._pool
        with self._lock:
            future = lane.submit(self._process, queue, message, command)
            self._inflight[future] = _InFlight(queue, message, time.monotonic(), serial)
        future.add_done_callback(self._finished)
        return future

    def _is_serial(self, command: Command) -> bool:
        try:
            return self._registry.registration_for(command).serial
        except PermanentError:
            return False  # no handler: dead-lettered by a worker

    def _finished(self, future: Future[None]) -> None:
        with self._lock:
            item = self._inflight.pop(future, None)
            self._jobs.discard(future)
        error = None if future.cancelled() else future.exception()
        if error is not None:  # escaped the lane's own handling: a bug in the dispatcher
            where: dict[str, object] = {"phase": "dispatch"}
            if item is not None:
                where["message_id"] = item.message.message_id
            log.error("unexpected error in a lane: %s", type(error).__name__, exc_info=error)
            self._errors.report_exception(error, context=where)
            self._count("error")

    def submit_job(self, name: str, job: Callable[[RecordSource], None]) -> Future[None]:
        """Run the lifecycle's own bulk work (the cycle's uploads) in the serial lane like bulk
        commands, so SQS keeps being polled (patient-syncs keep flowing) while it runs. `job`
        gets the serial lane's RecordSource. Failures are reported, never raised."""

        def run() -> None:
            try:
                job(self._context(None).records)
            except Exception as e:  # reported; the next cycle runs the job again
                log.exception("%s failed", name)
                self._errors.report_exception(e, context={"phase": name})

        with self._lock:
            future = self._serial.submit(run)
            self._jobs.add(future)
        future.add_done_callback(self._finished)
        return future

    def in_flight(self) -> int:
        with self._lock:
            return len(self._inflight)

    def wait_for_any(self, timeout: float) -> None:
        with self._lock:
            pending = [*self._inflight, *self._jobs]
        if pending:
            wait(pending, timeout=timeout, return_when=FIRST_COMPLETED)

    def drain(self) -> None:
        """Wait for every in-flight message and job to finish (stop, restart, end of life)."""
        with self._lock:
            pending = [*self._inflight, *self._jobs]
        wait(pending)

    def close(self) -> None:
        self.drain()
        self._closed.set()
        self._pool.shutdown(wait=True)
        self._serial.shutdown(wait=True)
        self._heartbeat.join(timeout=5)

    # -- handling one message (worker thread) ----------------------------------------------
    def _context(self, message: ReceivedMessage | None) -> HandlerContext:
        base: HandlerContext | None = getattr(self._local, "context", None)
        if base is None:
            base = HandlerContext(
                records=self._records_factory(),
                backend=self._backend,
                errors=self._errors,
                restart=self._restart,
                agent_version=self._agent_version,
            )
            self._local.context = base
        if message is None:
            return base
        return replace(
            base,
            delivery=Delivery(message.message_id, message.receive_count, message.sent_at),
        )

    def _count(self, outcome: str) -> None:
        with self._lock:
            self.outcomes[outcome] += 1

    def _process(
        self, queue: SqsQueue, message: ReceivedMessage, command: Command | DecodeError
    ) -> None:
        where: dict[str, object] = {
            "message_id": message.message_id,
            "receive_count": message.receive_count,
        }
        if isinstance(command, DecodeError):
            log.error("message %s: %s", message.message_id, command)
            self._dead_letter(queue, message, f"{command.reason}: {command.detail}", command, where)
            return
        where["message_type"] = command.TYPE
        try:
            registration = self._registry.registration_for(command)
            registration.handler(command, self._context(message))
        except PermanentError as e:
            log.error("message %s (%s) failed for good: %s", message.message_id, command.TYPE, e)
            self._dead_letter(queue, message, f"{type(e).__name__}: {e}", e, where)
            return
        except TransientError as e:
            log.warning(
                "message %s (%s) failed, will be retried (receive %d): %s",
                message.message_id,
                command.TYPE,
                message.receive_count,
                e,
            )
            self._errors.report_exception(e, context=where)
            self._count("retry")
            return
        except Exception as e:  # a bug in a handler: report; redrive bounds the retries
            log.exception("message %s (%s): unexpected error", message.message_id, command.TYPE)
            self._errors.report_exception(e, context=where)
            self._count("retry")
            return
        try:
            queue.delete(message)
        except TransientError as e:
            # handled but not deleted: it will come back; handlers are idempotent (upserts)
            log.warning("message %s handled but not deleted: %s", message.message_id, e)
            self._count("done-undeleted")
            return
        self._count("done")

    def _dead_letter(
        self,
        queue: SqsQueue,
        message: ReceivedMessage,
        reason: str,
        error: Exception,
        where: dict[str, object],
    ) -> None:
        self._errors.report_exception(error, context={**where, "outcome": "dead-lettered"})
        try:
            queue.dead_letter(message, reason)
        except TransientError as e:
            log.warning("message %s: could not move it to the DLQ yet: %s", message.message_id, e)
            self._count("retry")
            return
        except PermanentError as e:
            # no DLQ configured: retrying cannot help either, so drop it (it was reported)
            log.error("message %s dropped: %s", message.message_id, e)
            with contextlib.suppress(TransientError):
                queue.delete(message)
            self._count("dropped")
            return
        self._count("dead-lettered")

    # -- heartbeat -------------------------------------------------------------------------
    def _beat(self) -> None:
        interval = self._settings.heartbeat_interval_seconds
        while not self._closed.wait(interval):
            try:
                self._extend_long_running(interval)
            except Exception as e:  # a bug: reported; the heartbeat must not die with it
                log.exception("visibility heartbeat failed")
                self._report_heartbeat_failure(e)

    def _extend_long_running(self, interval: float) -> None:
        now = time.monotonic()
        with self._lock:
            long_running = [f for f in self._inflight.values() if now - f.started >= interval]
        failed = False
        for item in long_running:
            try:
                item.queue.extend_visibility(
                    item.message, self._settings.visibility_extension_seconds
                )
            except AgentError as e:  # redrive is the backstop if extending fails
                log.warning("could not extend visibility of %s: %s", item.message.message_id, e)
            except Exception as e:  # untranslated: report it, extend the others all the same
                log.exception("extending visibility of %s failed", item.message.message_id)
                self._report_heartbeat_failure(e)
                failed = True
        if not failed:
            self._heartbeat_failures = 0

    def _report_heartbeat_failure(self, error: Exception) -> None:
        self._heartbeat_failures += 1
        streak = self._heartbeat_failures
        if streak == 1 or streak % REPORT_EVERY == 0:
            self._errors.report_exception(
                error, context={"phase": "visibility heartbeat", "streak": streak}
            )
