"""Runs received messages through their handlers on a small bounded worker pool, accounting for
each message separately (like Powertools' batch processor):

- success              -> deleted
- transient failure    -> left alone: visible again after the visibility timeout, and after the
                          queue's maxReceiveCount SQS moves it to the dead-letter queue
- permanent failure    -> moved to the dead-letter queue now with a `failure-reason`
  (undecodable body, unknown type, unknown patient, ...)
- unexpected exception -> a bug: reported, treated as transient (so it ends in the DLQ, bounded)

Handlers run on worker threads so a burst of patient-syncs is not queued behind one another or
behind a bulk upload; bulk handlers are `serial` and take one lock, so the practice's SQL Server
never runs several full scans at once. Each worker has its own RecordSource (an ODBC connection is
not shared between threads). A heartbeat thread extends the visibility of messages whose handler
runs long, so a 100k-patient bulk upload is not delivered a second time while it runs; it waits
in real time because the visibility deadline is kept by the SQS server's clock.
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
from agent.commands.envelope import DecodeError, decode
from agent.commands.registry import Registry
from agent.errors import AgentError, PermanentError, TransientError
from agent.ports import Backend, ErrorSink, RecordSource
from agent.sqs_queue import MAX_MESSAGES_PER_RECEIVE, ReceivedMessage, SqsQueue

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DispatchSettings:
    workers: int = 4
    prefetch: int = 10  # messages received ahead of a free worker (they wait, invisible)
    # Real time. Must stay well under the queue's visibility timeout (SQS default 30 s): a
    # message in flight for one interval is extended before its first timeout can expire.
    heartbeat_interval_seconds: float = 10.0
    visibility_extension_seconds: int = 60  # each extension keeps the message hidden this long


@dataclass(slots=True)
class _InFlight:
    queue: SqsQueue
    message: ReceivedMessage
    started: float  # time.monotonic(), real: compared with the server's visibility deadline


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
        self._pool = ThreadPoolExecutor(settings.workers, thread_name_prefix="handler")
        self._serial_lock = threading.Lock()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._inflight: dict[Future[None], _InFlight] = {}
        self._jobs: set[Future[None]] = set()  # the lifecycle's own bulk work (no message)
        self._closed = threading.Event()
        self.outcomes: Counter[str] = Counter()  # done / retry / dead-lettered / dropped
        self._heartbeat = threading.Thread(target=self._beat, name="visibility", daemon=True)
        self._heartbeat.start()

    # -- receiving -------------------------------------------------------------------------
    def free_slots(self) -> int:
        with self._lock:
            taken = len(self._inflight) + len(self._jobs)
            return self._settings.workers + self._settings.prefetch - taken

    def poll_once(self, queue: SqsQueue) -> int:
        """Receive up to the number of free slots (workers + prefetch; long poll) and start
        handling them. With every slot taken, waits (up to 1 s) for one to finish instead of
        receiving. Returns how many messages were received. Raises TransientError."""
        free = self.free_slots()
        if free <= 0:
            self.wait_for_any(timeout=1.0)
            return 0
        messages = queue.receive(min(free, MAX_MESSAGES_PER_RECEIVE))
        for message in messages:
            self.submit(queue, message)
        return len(messages)

    def submit(self, queue: SqsQueue, message: ReceivedMessage) -> Future[None]:
        with self._lock:
            future = self._pool.submit(self._process, queue, message)
            self._inflight[future] = _InFlight(queue, message, time.monotonic())
        future.add_done_callback(self._forget)
        return future

    def _forget(self, future: Future[None]) -> None:
        with self._lock:
            self._inflight.pop(future, None)
            self._jobs.discard(future)

    def submit_job(self, name: str, job: Callable[[RecordSource], None]) -> Future[None]:
        """Run the lifecycle's own bulk work (the cycle's uploads) on a worker, in the serial
        lane like bulk commands, so SQS keeps being polled (patient-syncs keep flowing) while
        it runs. `job` gets that worker's RecordSource. Failures are reported, never raised."""

        def run() -> None:
            try:
                context = self._context(None)
                with self._serial_lock:
                    job(context.records)
            except Exception as e:  # reported; the next cycle runs the job again
                log.exception("%s failed", name)
                self._errors.report_exception(e, context={"phase": name})

        with self._lock:
            future = self._pool.submit(run)
            self._jobs.add(future)
        future.add_done_callback(self._forget)
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

    def _process(self, queue: SqsQueue, message: ReceivedMessage) -> None:
        where = {"message_id": message.message_id, "receive_count": message.receive_count}
        try:
            command = decode(message.body)
        except DecodeError as e:
            log.error("message %s: %s", message.message_id, e)
            self._dead_letter(queue, message, f"{e.reason}: {e.detail}", e, where)
            return
        where["message_type"] = command.TYPE
        try:
            registration = self._registry.registration_for(command)
            context = self._context(message)
            lock = self._serial_lock if registration.serial else contextlib.nullcontext()
            with lock:
                registration.handler(command, context)
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
            now = time.monotonic()
            with self._lock:
                long_running = [f for f in self._inflight.values() if now - f.started >= interval]
            for item in long_running:
                try:
                    item.queue.extend_visibility(
                        item.message, self._settings.visibility_extension_seconds
                    )
                except AgentError as e:  # redrive is the backstop if extending fails
                    log.warning(
                        "could not extend visibility of %s: %s", item.message.message_id, e
                    )
