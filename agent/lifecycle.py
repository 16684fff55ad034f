"""The agent's life, as the Windows service runs it (`r4agent run`):

    start    ping R4, fetch the scope (bounded retries with back-off, else TRANSIENT_FAILURE)
    confirm  tell the updater this version initialised (it stops counting early crashes)
    cycle:   version check -> UPDATED if the updater switched versions
             upload patients, then appointments, then appointment statuses (in the serial lane,
               so polling starts at once and patient-syncs are not held up by the uploads):
               the first cycle's passes are full, later ones send what changed (agent.uploads)
             poll SQS for `poll_hours`, handling commands
             re-fetch the scope (keep the old one if the backend is down), cycle again
    end      after `life_hours` -> END_OF_LIFE; `restart` command -> RESTART_REQUESTED;
             stop event (SIGTERM, service stop) -> END_OF_LIFE. Running work always finishes;
             messages not started yet are released to the queue for the next run (the host
             kills a process that overstays its grace period, so no backlog is worked off).

While R4 or the backend is known to be down (a handler opened its breaker, see
agent.resilience.breaker) the poll loop receives nothing: it probes the failed part, at least
once a minute, and receives again once it answers; a 403 that `/data` confirmed ends the run
with CONFIG_ERROR. Every wait goes through the injected Clock, so tests compress 24 hours. A
failure inside the poll loop backs off exponentially (capped) and is reported on the first of
a streak: the loop never spins hot. Uncaught errors propagate to the composition root, which
reports and exits with CRASH.
"""

from __future__ import annotations

import logging
import random
import re
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from agent.clock import Clock
from agent.commands.context import RestartRequest
from agent.commands.dispatcher import Dispatcher
from agent.errors import PermanentError, TransientError, worth_reporting
from agent.exit_codes import ExitCode
from agent.flynotes.client import BackendForbiddenError
from agent.ops.status_file import NO_STATUS
from agent.ports import Backend, ErrorSink, RecordSource, Scope, StatusRecorder, TablePass
from agent.resilience.faults import Part
from agent.sqs_queue import CredentialsRejectedError, SqsQueue
from agent.uploads.passes import TABLES, Uploads
from updater.gate import GateAction, GateDecision, VersionGate

log = logging.getLogger(__name__)

HOUR = 3600.0
_SAFE_VERSION = re.compile(r"[0-9A-Za-z.+-]{0,40}")  # shown in a report; anything else is not


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential back-off, capped, with jitter so a fleet of practices does not retry in step."""

    base_seconds: float = 2.0
    factor: float = 2.0
    cap_seconds: float = 300.0
    jitter: float = 0.5  # a delay is drawn from [(1 - jitter) * d, d]

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        d = min(self.cap_seconds, self.base_seconds * self.factor ** max(attempt - 1, 0))
        spread = (rng or random).uniform(1.0 - self.jitter, 1.0) if self.jitter else 1.0
        return d * spread


@dataclass(frozen=True, slots=True)
class LifeSettings:
    poll_hours: float = 1.0
    life_hours: float = 24.0
    start_attempts: int = 5  # DB ping + scope fetch at start, before TRANSIENT_FAILURE
    backoff: Backoff = field(default_factory=Backoff)
    report_every: int = 10  # in a streak of poll failures, report the 1st and every Nth


class Lifecycle:
    def __init__(
        self,
        *,
        clock: Clock,
        stop: threading.Event,
        records: RecordSource,
        backend: Backend,
        errors: ErrorSink,
        gate: VersionGate,
        dispatcher: Dispatcher,
        restart: RestartRequest,
        queue_for: Callable[[Scope], SqsQueue],
        settings: LifeSettings = LifeSettings(),
        rng: random.Random | None = None,
        status: StatusRecorder = NO_STATUS,
        r4_probe: Callable[[], None] | None = None,
        uploads: Uploads | None = None,
    ) -> None:
        self._clock = clock
        self._passes = uploads or Uploads(backend, errors=errors, clock=clock)
        self._stop = stop
        self._records = records
        self._backend = backend
        self._errors = errors
        self._gate = gate
        self._dispatcher = dispatcher
        self._restart = restart
        self._queue_for = queue_for
        self._settings = settings
        self._rng = rng or random.Random()
        self._status = status
        # R4's breaker probe: on a NEW connection (an open one may still read a file that was
        # swapped since); the default reads through `records`
        self._r4_probe = r4_probe or (lambda: probe_r4(records))
        self.stats: Counter[str] = Counter()  # observable by tests: cycles, pauses, failures
        self._poll_failures = 0  # a streak outlives a cycle: SQS being down is not per hour
        self._uploads: Future[None] | None = None
        self._version_reports: dict[str, float] = {}  # wanted version -> when last reported

    # -- the life ------------------------------------------------------------------------
    def run(self) -> ExitCode:
        try:
            return self._live()
        finally:
            self._dispatcher.wind_down()

    def _live(self) -> ExitCode:
        life_end = self._clock.monotonic() + self._settings.life_hours * HOUR
        started = self._start()
        if isinstance(started, ExitCode):
            return started
        scope = started
        notice = self._gate.confirm_running()
        if notice:  # a rollback the service host made here; the gate returns it once
            self._errors.report_message(notice, level="warning", extra={"phase": "update"})
        while True:
            self.stats["cycles"] += 1
            decision = self._gate.ensure(scope.library_version)
            log.info(
                "version check: running %s, backend wants %s: %s (%s)",
                decision.running,
                decision.wanted,
                decision.action.value,
                decision.reason,
            )
            if decision.action is GateAction.RESTART_INTO_NEW_VERSION:
                return ExitCode.UPDATED
            self._report_unusable_version(decision)
            self._upload_all()
            poll_end = min(self._clock.monotonic() + self._settings.poll_hours * HOUR, life_end)
            self._status.version_checked(
                decision.wanted,
                decision.action.value,
                decision.reason,
                next_check_in_s=poll_end - self._clock.monotonic(),
                life_left_s=life_end - self._clock.monotonic(),
            )
            ended = self._poll(scope, poll_end)
            if isinstance(ended, ExitCode):
                return ended
            scope = ended
            if self._clock.monotonic() >= life_end:
                log.info("end of life after %s hours: exiting", self._settings.life_hours)
                return ExitCode.END_OF_LIFE
            refreshed = self._refresh_scope(scope)
            if isinstance(refreshed, ExitCode):
                return refreshed
            scope = refreshed

    def _report_unusable_version(self, decision: GateDecision) -> None:
        """A version the backend wants that the updater cannot use (the original's npm version
        0.0.12, garbage, empty, not listed, revoked, below the floor): the agent carries on
        with the current one and reports it at most once a day per wanted value."""
        if decision.wanted == decision.running:
            return
        now = self._clock.monotonic()
        last = self._version_reports.get(decision.wanted)
        if last is not None and now - last < 24 * HOUR:
            return
        self._version_reports[decision.wanted] = now
        shown = decision.wanted if _SAFE_VERSION.fullmatch(decision.wanted) else "(not shown)"
        self._errors.report_message(
            f"the backend wants version {shown or '(empty)'}, which cannot be used: "
            f"carrying on with {decision.running} ({decision.reason})",
            level="warning",
            extra={"phase": "version check"},
        )

    def _start(self) -> Scope | ExitCode:
        attempt = 0
        while True:
            attempt += 1
            try:
                self._records.ping()
                return self._backend.fetch_scope()
            except TransientError as e:
                log.warning("start attempt %d failed: %s", attempt, e)
                if attempt >= self._settings.start_attempts:
                    self._errors.report_exception(e, context={"phase": "start"})
                    log.error("giving up after %d attempts: exiting to be restarted later", attempt)
                    return ExitCode.TRANSIENT_FAILURE
            except PermanentError as e:
                # /data refusing us is decided by the configured backend URL + licence key
                self._errors.report_exception(e, context={"phase": "start"})
                log.error("cannot start: %s", e)
                return ExitCode.CONFIG_ERROR
            if not self._pause(self._settings.backoff.delay(attempt, self._rng)):
                return ExitCode.END_OF_LIFE

    def _refresh_scope(self, current: Scope) -> Scope | ExitCode:
        try:
            return self._backend.fetch_scope()
        except PermanentError as e:
            self._errors.report_exception(e, context={"phase": "scope-refresh"})
            log.error("the backend now refuses this licence: %s", e)
            return ExitCode.CONFIG_ERROR
        except TransientError as e:
            # the current credentials stay valid for hours and refresh themselves: carry on
            self._errors.report_exception(e, context={"phase": "scope-refresh"})
            log.warning("could not re-fetch the scope, keeping the current one: %s", e)
            return current

    def _upload_all(self) -> None:
        """Start this cycle's uploads in the serial lane (polling goes on meanwhile), unless the
        previous cycle's are still running."""
        if self._uploads is not None and not self._uploads.done():
            log.warning("the previous cycle's uploads are still running: not starting again")
            return
        self._uploads = self._dispatcher.submit_job("cycle uploads", self._upload_job)

    def _upload_job(self, records: RecordSource) -> None:
        started = self._clock.monotonic()
        tables: dict[str, TablePass] = {}
        for table in TABLES:
            if self._stop.is_set():
                return
            summary = self._passes.run(table, records)
            error = summary.error
            tables[table] = TablePass(
                summary.counts(), error=None if error is None else type(error).__name__
            )
            if error is not None:
                self.stats["upload-failures"] += 1
                self._errors.report_exception(error, context={"phase": f"upload {table}"})
                log.warning(
                    "upload of %s stopped early (the next cycle sends the rest): %s", table, error
                )
                if isinstance(error, BackendForbiddenError):  # at once, not at the next refresh
                    self._recheck_licence(table)
        self._status.uploads_done(tables, seconds=self._clock.monotonic() - started)
        self.stats["uploads-done"] += 1

    def _poll(self, scope: Scope, until: float) -> Scope | ExitCode:
        queue = self._queue_for(scope)
        self.stats["polling-in-cycle"] = self.stats["cycles"]
        while True:
            if self._restart.requested:
                released = self._dispatcher.wind_down()
                log.info(
                    "restart requested: in-flight work finished, %d waiting released, exiting",
                    released,
                )
                return ExitCode.RESTART_REQUESTED
            if self._stop.is_set():
                released = self._dispatcher.wind_down()
                log.info(
                    "stop requested: in-flight work finished, %d waiting released, exiting",
                    released,
                )
                return ExitCode.END_OF_LIFE
            if self._clock.monotonic() >= until:
                return scope
            if self._dispatcher.breakers.is_licence_refused:  # a 403 that /data confirmed
                self._dispatcher.wind_down()
                log.error("the backend refuses this licence: exiting, nothing dead-lettered")
                return ExitCode.CONFIG_ERROR
            if self._dispatcher.breakers.any_open():
                self._probe_breakers()
                continue
            try:
                self.stats["receives"] += 1
                self._dispatcher.poll_once(queue)
                self._poll_failures = 0
                continue
            except CredentialsRejectedError as e:
                self._poll_failures += 1
                self._report_streak(e, self._poll_failures)
                log.warning("SQS refused the credentials: fetching a fresh scope")
                try:
                    scope = self._backend.fetch_scope()
                    queue = self._queue_for(scope)
                except TransientError as again:
                    log.warning("could not fetch a fresh scope: %s", again)
                except PermanentError as refused:
                    self._errors.report_exception(refused, context={"phase": "poll"})
                    return ExitCode.CONFIG_ERROR
            except PermanentError as e:
                # only the backend refusing the licence while refreshing credentials gets here
                self._errors.report_exception(e, context={"phase": "poll"})
                log.error("cannot go on polling: %s", e)
                return ExitCode.CONFIG_ERROR
            except TransientError as e:
                self._poll_failures += 1
                self.stats["receive-failures"] += 1
                self._report_streak(e, self._poll_failures)
                log.warning("polling SQS failed (%d in a row): %s", self._poll_failures, e)
            self._pause(self._settings.backoff.delay(self._poll_failures, self._rng))

    def _recheck_licence(self, table: str) -> None:
        """A 401/403 to an upload; `/data` refusing too ends the run (the poll loop sees it)."""
        try:
            self._dispatcher.recheck_licence({"upload": table})
        except TransientError as down:
            log.warning("could not re-check the licence after a refusal: %s", down)

    def _probe_breakers(self) -> None:
        """Receiving has stopped because R4 or the backend is down: probe each part whose probe
        is due, close its breaker if it answers, then wait (on the clock) for the next probe.
        A backend probe that finds the licence refused leaves the exit to the poll loop."""
        breakers = self._dispatcher.breakers
        for part in breakers.due():
            self.stats["probes"] += 1
            try:
                if part is Part.R4:
                    self._r4_probe()
                elif not self._dispatcher.recheck_licence({"probe": part.value}):
                    return  # CONFIG_ERROR, from the poll loop
            except (TransientError, PermanentError) as e:
                self._probe_failed(part, e)
            else:
                down_for = breakers.close(part) or 0.0
                log.info("%s is back after %.0f s: receiving again", part.value, down_for)
        if breakers.any_open():
            self._pause(max(breakers.seconds_to_next_probe(), 0.1))

    def _probe_failed(self, part: Part, error: Exception) -> None:
        failed = self._dispatcher.breakers.probe_failed(part, f"{type(error).__name__}: {error}")
        self.stats["probe-failures"] += 1
        log.warning("%s still down (probe %d): %s", part.value, failed, error)
        if failed % self._settings.report_every == 0:  # the opening was reported already
            self._errors.report_exception(
                error, context={"phase": "probe", "part": part.value, "streak": failed}
            )

    def _report_streak(self, error: Exception, failures: int) -> None:
        if worth_reporting(failures, self._settings.report_every):
            self._errors.report_exception(error, context={"phase": "poll", "streak": failures})

    def _pause(self, seconds: float) -> bool:
        """Wait `seconds` on the clock in steps of at most 1 s, so a stop request is honoured
        promptly. Returns False if a stop was requested."""
        self.stats["pauses"] += 1
        end = self._clock.monotonic() + seconds
        while not self._stop.is_set():
            left = end - self._clock.monotonic()
            if left <= 0:
                return True
            self._clock.sleep(min(left, 1.0))
        return False


def probe_r4(records: RecordSource) -> None:
    """R4's breaker probe: raises unless R4 answers a read of a table (a lock shows there; a
    ping alone may not see it)."""
    records.ping()
    records.get_patient(0)
