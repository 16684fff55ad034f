"""Runs received messages through their handlers in two lanes, accounting for each message
separately (like Powertools' batch processor). What a failure means for its message is decided
by agent.resilience.faults (docs/messages.md):

- success              -> deleted
- the message at fault -> moved to the dead-letter queue now with a `failure-reason`
  (undecodable body, unknown type, invalid fields, unknown patient, a row R4 cannot give, a
  4xx the re-checked `/data` says is about this message); reports of the same fault are
  rate-limited (the first, then one summary a minute)
- a 4xx whose re-check finds `/data` refusing the licence -> left; the run ends (exit 78)
- an outage (R4 or the backend down, or refusing for a reason a person must fix) -> left in
  the queue, the breaker of that part opens (agent.resilience.breaker): the lifecycle stops
  receiving until a probe finds it back; messages already received wait without running
- unexpected exception -> a bug: reported, left (SQS's redrive bounds it)

Lanes: the message is decoded on receipt, and `serial` work (bulk uploads, questionnaire
reports, the lifecycle's cycle uploads) goes to a lane of its own, ONE thread, so the practice's
SQL Server never runs several full scans at once; everything else (patient-sync, restart, test,
undecodable bodies) runs on the worker pool. Each lane thread has its own RecordSource (an ODBC
connection is not shared between threads).

Serial commands are coalesced: a serial message equal to one already WAITING in the serial lane
(received, not yet started) is redundant, because that waiting one starts after this one arrived
and so answers it (a full upload that starts after a request answers the request); it is deleted
at once (outcome "coalesced"). One whose twin is already RUNNING waits: the running upload may
have read past the change. "Started" is set under the dispatcher's lock, so the choice is
race-free. The serial lane therefore holds at most one waiting message per serial command plus
the running one, whatever the backlog in the queue, and receiving is bounded by the worker
pool's room alone: no backlog of bulk work can stop a patient-sync from being received.

A heartbeat thread extends the visibility of EVERY message in flight (running or waiting in a
lane) at each tick, 10 per ChangeMessageVisibilityBatch call, so a message is extended at the
first tick after its receipt and a 100k-patient bulk upload is not delivered a second time
while it runs; it waits in real time because the visibility deadline is kept by the SQS
server's clock. A failure in the heartbeat is reported and the heartbeat goes on; an exception
escaping a lane's job is reported too.

Winding down (stop, restart, end of life): running work finishes; messages not yet started are
released (their futures cancelled, their visibility set to 0) so the next run gets them at once
instead of this one working through a backlog the service host would kill it in.
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

from agent.clock import Clock, SystemClock
from agent.commands.context import Delivery, HandlerContext, RestartRequest
from agent.commands.envelope import Command, DecodeError, decode
from agent.commands.registry import Registry
from agent.errors import (
    AgentError,
    BackendRefusedError,
    PermanentError,
    TransientError,
    worth_reporting,
)
from agent.ops.status_file import NO_STATUS
from agent.ports import Backend, ErrorSink, RecordSource, StatusRecorder
from agent.resilience.breaker import Breakers
from agent.resilience.faults import Part, Verdict, classify, refused_reason
from agent.resilience.report_throttle import ThrottledReports
from agent.sqs_queue import (
    MAX_MESSAGES_PER_BATCH,
    MAX_MESSAGES_PER_RECEIVE,
    ActionDeniedError,
    ReceivedMessage,
    SqsQueue,
)
from agent.uploads.passes import Uploads

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DispatchSettings:
    workers: int = 4  # the worker pool (patient-syncs and other quick commands)
    prefetch: int = 10  # messages received ahead of a free worker (they wait, invisible)
    # Real time. Every message in flight is extended at each tick, so the queue's visibility
    # timeout must exceed one interval (plus one SQS call); SQS's default is 30 s.
    heartbeat_interval_seconds: float = 10.0
    visibility_extension_seconds: int = 60  # each extension keeps the message hidden this long


@dataclass(slots=True, eq=False)
class _InFlight:
    queue: SqsQueue
    message: ReceivedMessage
    command: Command | DecodeError
    serial: bool  # which lane it waits in
    started: bool = False  # a lane thread took it up (set under the dispatcher's lock)


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
        status: StatusRecorder = NO_STATUS,
        clock: Clock | None = None,
        breakers: Breakers | None = None,
        uploads: Uploads | None = None,  # None: passes without a ledger (every one full)
    ) -> None:
        self._registry = registry
        clock = clock or SystemClock()
        self.breakers = breakers or Breakers(clock)
        self._fault_reports = ThrottledReports(errors, clock)
        self._uploads = uploads or Uploads(backend, errors=errors, clock=clock)
        self._status = status
        self._records_factory = records_factory
        self._backend = backend
        self._errors = errors
        self._restart = restart
        self._agent_version = agent_version
        self._settings = settings
        if settings.workers < 1 or settings.prefetch < 0:
            raise ValueError("DispatchSettings: workers must be at least 1, prefetch at least 0")
        self._pool = ThreadPoolExecutor(settings.workers, thread_name_prefix="handler")
        self._serial = ThreadPoolExecutor(1, thread_name_prefix="serial")
        self._local = threading.local()
        self._lock = threading.Lock()
        # Held for a heartbeat round and for a release: no round extends a released message.
        self._visibility_lock = threading.Lock()
        self._inflight: dict[Future[None], _InFlight] = {}
        self._jobs: set[Future[None]] = set()  # the lifecycle's own bulk work (no message)
        self._closed = threading.Event()
        self._heartbeat_failures = 0
        # done / retry / dead-lettered / dropped / coalesced / released / error ...
        self.outcomes: Counter[str] = Counter()
        self._heartbeat = threading.Thread(target=self._beat, name="visibility", daemon=True)
        self._heartbeat.start()

    # -- receiving -------------------------------------------------------------------------
    def free_slots(self) -> int:
        """How many messages may be received now: the worker pool's room (workers + prefetch).
        Serial messages do not count: coalescing bounds the serial lane by itself (at most one
        waiting message per serial command, plus the running one)."""
        with self._lock:
            quick = sum(1 for item in self._inflight.values() if not item.serial)
        return self._settings.workers + self._settings.prefetch - quick

    def poll_once(self, queue: SqsQueue) -> int:
        """Receive up to the number of free slots (long poll) and start handling them. With no
        slot free, waits (up to 1 s) for a message to finish instead of receiving. Returns how
        many messages were received. Raises TransientError."""
        free = self.free_slots()
        if free <= 0:
            self.wait_for_any(timeout=1.0)
            return 0
        messages = queue.receive(min(free, MAX_MESSAGES_PER_RECEIVE))
        self._status.received(len(messages))
        for message in messages:
            self.submit(queue, message)
        return len(messages)

    def submit(self, queue: SqsQueue, message: ReceivedMessage) -> Future[None]:
        """Decode `message` and start handling it in its lane, or delete it at once (on the
        worker pool: an SQS call) if a twin waiting in the serial lane answers it."""
        try:
            command: Command | DecodeError = decode(message.body)
        except DecodeError as e:
            command = e  # dead-lettered by a worker (an SQS call: not on the receiving thread)
        serial = not isinstance(command, DecodeError) and self._is_serial(command)
        with self._lock:
            twin = self._waiting_twin(command) if serial else None
            if twin is not None:
                item = _InFlight(queue, message, command, serial=False)
                future = self._pool.submit(self._coalesce, item, twin.message.message_id)
            else:
                item = _InFlight(queue, message, command, serial=serial)
                future = (self._serial if serial else self._pool).submit(self._process, item)
            self._inflight[future] = item
        future.add_done_callback(self._finished)
        return future

    def _waiting_twin(self, command: Command | DecodeError) -> _InFlight | None:
        """The serial message equal to `command` that waits, not started (under the lock)."""
        for item in self._inflight.values():
            if item.serial and not item.started and item.command == command:
                return item
        return None

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
        """Wait for every in-flight message and job to finish."""
        with self._lock:
            pending = [*self._inflight, *self._jobs]
        wait(pending)

    def wind_down(self) -> int:
        """Stop, restart, end of life: release every message not started yet (and cancel
        jobs not started), then wait for the running ones. Returns how many were released."""
        released = self.release_waiting()
        self.drain()
        return released

    def release_waiting(self) -> int:
        """Cancel what no lane thread has taken up yet; make those messages visible again at
        once (visibility 0) so the next run receives them without waiting out a timeout.
        Returns how many messages were released."""
        with self._visibility_lock:
            with self._lock:
                waiting = [(f, item) for f, item in self._inflight.items() if not item.started]
                jobs = list(self._jobs)
            for job in jobs:
                job.cancel()  # only one that has not started is cancelled
            # cancel() runs _finished, which takes the lock: not held here
            released = [item for future, item in waiting if future.cancel()]
            for queue, messages in _batches(released):
                try:
                    refused = queue.change_visibility(messages, 0)
                except ActionDeniedError as e:
                    self._note_denied(e)
                    continue
                except AgentError as e:  # they come back after their visibility timeout
                    log.warning("could not release %d waiting messages: %s", len(messages), e)
                    continue
                for message, code in refused:
                    log.warning("could not release message %s: %s", message.message_id, code)
        if released:
            log.info("released %d messages not started yet, for the next run", len(released))
            with self._lock:
                self.outcomes["released"] += len(released)
        return len(released)

    def close(self) -> None:
        self.wind_down()
        self._fault_reports.flush()
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
                uploads=self._uploads,
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
        self._status.outcome(outcome)

    def _coalesce(self, item: _InFlight, twin_id: str) -> None:
        with self._lock:
            item.started = True
        message = item.message
        kind = item.command.TYPE if isinstance(item.command, Command) else "?"
        log.info(
            "message %s (%s) coalesced into waiting message %s: deleted",
            message.message_id,
            kind,
            twin_id,
        )
        try:
            item.queue.delete(message)
        except TransientError as e:  # it comes back, and is coalesced or waits then
            log.warning("coalesced message %s not deleted: %s", message.message_id, e)
            self._count("coalesced-undeleted")
            return
        self._count("coalesced")

    def _process(self, item: _InFlight) -> None:
        with self._lock:
            item.started = True  # from now on an equal message must wait, not coalesce
        queue, message, command = item.queue, item.message, item.command
        where: dict[str, object] = {
            "message_id": message.message_id,
            "receive_count": message.receive_count,
        }
        if isinstance(command, DecodeError):
            log.error("message %s: %s", message.message_id, command)
            self._dead_letter(queue, message, f"{command.reason}: {command.detail}", command, where)
            return
        where["message_type"] = command.TYPE
        if self.breakers.any_open():
            # its handler would fail the same way: it waits in the queue, not received meanwhile
            log.info(
                "message %s (%s) waits: %s down",
                message.message_id,
                command.TYPE,
                " and ".join(p.value for p in self.breakers.open_parts()),
            )
            self._leave(queue, message)
            self._count("deferred")
            return
        # one line when it starts, one when it ends (done / failed / retried)
        log.info("message %s (%s) started", message.message_id, command.TYPE)
        started = time.monotonic()
        try:
            registration = self._registry.registration_for(command)
            registration.handler(command, self._context(message))
        except Exception as e:  # noqa: BLE001 - every failure is classified (resilience.faults)
            self._failed(item, command, e, where)
            return
        try:
            queue.delete(message)
        except TransientError as e:
            # handled but not deleted: it will come back; handlers are idempotent (upserts)
            log.warning("message %s handled but not deleted: %s", message.message_id, e)
            self._count("done-undeleted")
            return
        log.info(
            "message %s (%s) done in %.1f s",
            message.message_id,
            command.TYPE,
            time.monotonic() - started,
        )
        self._count("done")

    def _failed(
        self, item: _InFlight, command: Command, error: Exception, where: dict[str, object]
    ) -> None:
        """What a handler's failure means for its message (agent.resilience.faults)."""
        queue, message = item.queue, item.message
        fault = classify(error)
        if fault.verdict is Verdict.DEAD_LETTER:
            log.error(
                "message %s (%s) failed for good: %s", message.message_id, command.TYPE, error
            )
            self._dead_letter(queue, message, fault.reason, error, where)
        elif fault.verdict is Verdict.RECHECK_LICENCE:
            assert isinstance(error, BackendRefusedError)
            self._recheck_licence(item, command, error, where)
        elif fault.verdict is Verdict.OUTAGE:
            self._outage(item, command, fault.parts, error, where)
        else:  # a bug in a handler: report; redrive bounds the retries
            log.error(
                "message %s (%s): unexpected error",
                message.message_id,
                command.TYPE,
                exc_info=error,
            )
            self._errors.report_exception(error, context=where)
            self._count("retry")

    def _outage(
        self,
        item: _InFlight,
        command: Command,
        parts: tuple[Part, ...],
        error: Exception,
        where: dict[str, object],
    ) -> None:
        message = item.message
        opened = self.breakers.trip(parts, f"{type(error).__name__}: {error}")
        log.warning(
            "message %s (%s) failed, left in the queue until %s is back (receive %d): %s",
            message.message_id,
            command.TYPE,
            " and ".join(p.value for p in parts),
            message.receive_count,
            error,
        )
        if opened:  # once per outage, not once per message
            self._errors.report_exception(
                error, context={**where, "breaker": [p.value for p in opened]}
            )
        self._leave(item.queue, message)
        self._count("retry")

    def _recheck_licence(
        self,
        item: _InFlight,
        command: Command,
        refusal: BackendRefusedError,
        where: dict[str, object],
    ) -> None:
        """A 4xx from the backend: "check the licence". `/data` refusing means every call is
        refused: the run ends (CONFIG_ERROR) and nothing is dead-lettered; `/data` accepting
        means the refusal was about this message."""
        message = item.message
        try:
            accepted = self.recheck_licence(where)
        except TransientError as down:
            self._outage(item, command, (Part.BACKEND,), down, where)
            return
        if not accepted:
            log.error(
                "message %s (%s): left in the queue, the licence is refused",
                message.message_id,
                command.TYPE,
            )
            self._count("licence-refused")
            return
        log.error(
            "message %s (%s) refused by the backend, the licence is fine: %s",
            message.message_id,
            command.TYPE,
            refusal,
        )
        self._dead_letter(item.queue, message, refused_reason(refusal), refusal, where)

    def recheck_licence(self, where: dict[str, object]) -> bool:
        """"Check the licence" now (after a 401/403, or as the backend's breaker probe): True if
        `/data` accepts it; False if it refuses, reported once and noted on the breakers, whose
        owner (the lifecycle) then ends the run with CONFIG_ERROR, nothing dead-lettered.
        Raises TransientError if the backend cannot be asked."""
        try:
            self._backend.fetch_scope()
        except PermanentError as refused:
            log.error("the backend refuses this licence: %s", refused)
            if not self.breakers.is_licence_refused:
                self._errors.report_exception(refused, context={**where, "phase": "licence"})
            self.breakers.licence_refused()
            return False
        return True

    def _leave(self, queue: SqsQueue, message: ReceivedMessage) -> None:
        """Leave a message in the queue, visible again when the next probe is due (not
        received while a breaker is open anyway)."""
        seconds = int(self.breakers.seconds_to_next_probe() + 0.999)
        try:
            queue.change_visibility([message], seconds)
        except ActionDeniedError as e:
            self._note_denied(e)
        except AgentError as e:  # it comes back after its visibility timeout instead
            log.debug("message %s: visibility not changed: %s", message.message_id, e)

    def _dead_letter(
        self,
        queue: SqsQueue,
        message: ReceivedMessage,
        reason: str,
        error: Exception,
        where: dict[str, object],
    ) -> None:
        key = getattr(error, "reason", None) or type(error).__name__
        self._fault_reports.report(str(key), error, {**where, "outcome": "dead-lettered"})
        try:
            queue.dead_letter(message, reason)
        except TransientError as e:
            log.warning("message %s: could not move it to the DLQ yet: %s", message.message_id, e)
            self._count("retry")
            return
        except PermanentError as e:
            # no DLQ configured, or no right to use it: retrying cannot help either, so drop it
            # (it was reported, without its body), as the original agent did with every message
            if isinstance(e, ActionDeniedError):
                self._note_denied(e)
            log.error("message %s dropped: %s", message.message_id, e)
            with contextlib.suppress(TransientError):
                queue.delete(message)
            self._count("dropped")
            return
        self._count("dead-lettered")

    def _note_denied(self, error: ActionDeniedError) -> None:
        """An optional SQS action the credentials do not allow: one report for the process."""
        if error.first:
            self._errors.report_exception(
                error, context={"phase": "least privilege", "action": error.action}
            )

    # -- heartbeat -------------------------------------------------------------------------
    def _beat(self) -> None:
        interval = self._settings.heartbeat_interval_seconds
        while not self._closed.wait(interval):
            try:
                self._extend_in_flight()
            except Exception as e:  # a bug: reported; the heartbeat must not die with it
                log.exception("visibility heartbeat failed")
                self._report_heartbeat_failure(e)

    def _extend_in_flight(self) -> None:
        """Extend every message in flight, running or waiting: one received just before this
        tick is then covered by the queue's own visibility timeout until it (one interval)."""
        seconds = self._settings.visibility_extension_seconds
        failed = False
        with self._visibility_lock:
            with self._lock:
                items = list(self._inflight.values())
            for queue, messages in _batches(items):
                try:
                    refused = queue.change_visibility(messages, seconds)
                except ActionDeniedError as e:  # no heartbeat: a long handler may run twice
                    self._note_denied(e)
                    continue
                except AgentError as e:  # redrive is the backstop if extending fails
                    log.warning("could not extend visibility of %d messages: %s", len(messages), e)
                    continue
                except Exception as e:  # untranslated: report it, extend the others all the same
                    log.exception("extending visibility of %d messages failed", len(messages))
                    self._report_heartbeat_failure(e)
                    failed = True
                    continue
                if refused:
                    self._log_refused_extensions(refused)
        if not failed:
            self._heartbeat_failures = 0

    def _log_refused_extensions(self, refused: list[tuple[ReceivedMessage, str]]) -> None:
        # a message handled and deleted since this round began is refused as expected
        with self._lock:
            in_flight = {id(item.message) for item in self._inflight.values()}
        for message, code in refused:
            finished = id(message) not in in_flight
            log.log(
                logging.DEBUG if finished else logging.WARNING,
                "could not extend visibility of %s: %s%s",
                message.message_id,
                code,
                " (finished meanwhile)" if finished else "",
            )

    def _report_heartbeat_failure(self, error: Exception) -> None:
        self._heartbeat_failures += 1
        streak = self._heartbeat_failures
        if worth_reporting(streak, REPORT_EVERY):
            self._errors.report_exception(
                error, context={"phase": "visibility heartbeat", "streak": streak}
            )


def _batches(items: list[_InFlight]) -> list[tuple[SqsQueue, list[ReceivedMessage]]]:
    """The messages of `items` grouped by queue, in batches SQS takes in one call."""
    by_queue: dict[int, tuple[SqsQueue, list[ReceivedMessage]]] = {}
    for item in items:
        by_queue.setdefault(id(item.queue), (item.queue, []))[1].append(item.message)
    return [
        (queue, group[i : i + MAX_MESSAGES_PER_BATCH])
        for queue, group in by_queue.values()
        for i in range(0, len(group), MAX_MESSAGES_PER_BATCH)
    ]
