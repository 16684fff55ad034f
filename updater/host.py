"""The service host: keep the current agent version running, restart it by exit code, roll back.

Pure Python, testable on Linux; the Windows service (installer/) is a thin pywin32 shell that calls
`Host.run(stop_event)` and turns `HostEvent`s into Event Log entries.

Restart policy by the child's exit code (agent/exit_codes.py, docs/exit-codes.md):

    UPDATED (4), RESTART_REQUESTED (3), END_OF_LIFE (0)   start again at once
    TRANSIENT_FAILURE (75)                                back-off: 5 s doubling up to 15 min
    CRASH (1), killed by a signal, any other code          exponential back-off; counts as a crash
    CONFIG_ERROR (78)                                     long back-off (15 min): never a hot loop;
                                                          before confirming counts softly (75 too)
    could not even start the exe                          like CRASH

A run that lasted `healthy_run_s` resets the back-off. More than `max_quick_restarts` "at once"
exits in a row, each quicker than `quick_exit_s`, get the back-off too (no hot loop even then).

Rollback: while the `current` pointer says `switched` (the new version has not yet confirmed
itself after initialising config + scope), every run that ends is counted in the pointer, and a
run still unconfirmed after `confirm_deadline_s` is stopped and counted too (a hang). The host
flips the pointer back to the previous version and quarantines that build (the gate will not
reinstall the same archive) either

- at `max_starts_before_confirm` (≤ 3) crashes (CRASH/signal/unknown/cannot start):
  quarantined for good; or
- at `max_unconfirmed_starts` (6) unconfirmed runs of any kind (TRANSIENT_FAILURE and
  CONFIG_ERROR — an outage or the backend refusing look the same —, exits 0/3/4, hangs; a build
  with broken TLS or a missing module must not stay forever): quarantined softly, for
  `soft_quarantine_s` (24 h), so an outage right after an update does not bar it for good. When
  that rollback followed 75/78 exits and the version rolled back to exits 75/78 too before it
  confirms itself again, the environment was to blame: the soft quarantine is lifted at once.

The quarantine lives in its own file (`quarantine.json`), mirrored into the pointer for agents
older than that file. A lost or damaged pointer is rebuilt from what survives
(`choose_recovery`): the last version that confirmed itself, else the newest runnable
unquarantined one (awaiting confirmation with a fallback), the host's own exe (`own`, the MSI's)
only as the last resort, and a quarantined build never as trusted. `bootstrap` runs that at
every service start; on the very first one it installs the own exe.

Stop: `stop` set → the child is asked to finish in-flight work (SIGTERM on POSIX; on Windows a
named event whose name the child gets in R4AGENT_STOP_EVENT, see updater/stop_signal.py, plus
CTRL_BREAK when there is a console), then killed after `stop_grace_s` — its whole process tree
(a Job Object on Windows, a process group on POSIX: updater/process_tree.py). At worst a stop
takes `HostPolicy.stop_worst_case_s` (the service's STOP_PENDING hints are built from it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import IO, Protocol

from agent.clock import Clock, SystemClock
from agent.exit_codes import ExitCode
from updater.layout import ENV_INSTALL_BASE, Layout, discard
from updater.policy import parse_version
from updater.process_tree import KILL_DRAIN_S, ProcessTree, popen_options
from updater.staging import new_staging_dir, remove_staging
from updater.state import (
    CorruptStateError,
    CurrentPointer,
    IllegalTransitionError,
    InstallState,
    PointerState,
    QuarantineEntry,
    read_last_confirmed,
    read_pointer,
    read_quarantine_or_empty,
    read_record,
    write_pointer,
    write_quarantine,
    write_record,
)
from updater.stop_signal import ChildStopEvent

log = logging.getLogger(__name__)

AT_ONCE = frozenset({ExitCode.UPDATED, ExitCode.RESTART_REQUESTED, ExitCode.END_OF_LIFE})
# Exits an outage or the backend's refusal causes as well as a broken build: before confirming
# they count towards the soft budget only.
OUTAGE_LIKE = frozenset({ExitCode.TRANSIENT_FAILURE, ExitCode.CONFIG_ERROR})


@dataclass(frozen=True, slots=True)
class HostPolicy:
    max_starts_before_confirm: int = 3  # crashes before confirming: hard rollback
    max_unconfirmed_starts: int = 6  # any unconfirmed runs: soft rollback
    confirm_deadline_s: float = 900.0  # a run not confirmed by then is stopped (a hang)
    soft_quarantine_s: float = 86_400.0
    backoff_initial_s: float = 5.0
    backoff_max_s: float = 900.0
    config_error_delay_s: float = 900.0
    healthy_run_s: float = 600.0
    quick_exit_s: float = 10.0
    max_quick_restarts: int = 5
    stop_grace_s: float = 60.0
    kill_wait_s: float = 10.0  # after the kill (and its drain), for the exit code
    poll_s: float = 1.0

    def __post_init__(self) -> None:
        if not 1 <= self.max_starts_before_confirm <= 3:
            raise ValueError("max_starts_before_confirm must be 1..3")
        if self.max_unconfirmed_starts < 1:
            raise ValueError("max_unconfirmed_starts must be at least 1")

    @property
    def stop_worst_case_s(self) -> float:
        """From a stop request to `Host.run` returning, at worst: the poll under way, the
        grace (overshot by up to a poll), the kill's drain, the wait for the exit code."""
        return self.poll_s + self.stop_grace_s + self.poll_s + KILL_DRAIN_S + self.kill_wait_s


@dataclass(frozen=True, slots=True)
class HostEvent:
    kind: str  # start, exit, backoff, rollback, stop, error
    version: str
    detail: str


# ---- pure restart decision -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunHistory:
    failures: int = 0  # consecutive failed runs (drives the back-off)
    quick_restarts: int = 0  # consecutive quick "at once" exits


@dataclass(frozen=True, slots=True)
class RestartPlan:
    delay_s: float
    history: RunHistory
    pointer: CurrentPointer | None  # the pointer to persist, if it changes
    rollback: bool
    reason: str
    soft: bool = False  # a rollback for not confirming (not a crash loop): quarantine expires
    recheck: bool = False  # soft, after failures an outage also causes: watch the old version
    lift_soft: str | None = None  # lift this version's soft quarantine: the environment failed


def describe_exit(code: int | None) -> str:
    if code is None:
        return "could not start"
    if code < 0:
        return f"killed by signal {-code}"
    try:
        return f"exit {code} ({ExitCode(code).name})"
    except ValueError:
        return f"exit {code}"


def plan_restart(
    code: int | None,
    ran_for_s: float,
    pointer: CurrentPointer,
    history: RunHistory,
    policy: HostPolicy,
    *,
    ran_version: str | None = None,
    unconfirmed_timeout: bool = False,
) -> RestartPlan:
    """What to do after the child ended with `code` (None: it could not be started).

    `pointer` is the pointer as it is now; `ran_version` the version that ran (when the child
    switched to another version before exiting, its exit does not count against the new one).
    `unconfirmed_timeout`: the host stopped the child for not confirming within the deadline."""
    what = (f"no confirmation within {policy.confirm_deadline_s:.0f} s (stopped)"
            if unconfirmed_timeout else describe_exit(code))
    delay, history, then = _next_start(code, ran_for_s, history, policy, unconfirmed_timeout)
    ran_current = ran_version in (None, pointer.version)
    outage_like = code in OUTAGE_LIKE and not unconfirmed_timeout
    if pointer.awaiting_reconfirmation and ran_current and outage_like:
        # the version rolled back to fails as the new one did, before confirming itself: the
        # environment (backend, R4, licence) is to blame, so the new version may come back
        lifted = pointer.previous
        watched = replace(pointer, unconfirmed_starts=0)
        return RestartPlan(delay, history, watched, False,
                           f"{what} before confirming, as {lifted} did: the environment is to "
                           f"blame, {lifted} may be installed again; {then}", lift_soft=lifted)
    counts = pointer.awaiting_confirmation and ran_current
    if not counts:
        return RestartPlan(delay, history, None, False, f"{what}; {then}")
    # CONFIG_ERROR counts softly: besides a broken config it is the backend refusing (a non-429
    # 4xx, a maintenance page instead of JSON), which must not bar a good release for good
    crashed = not unconfirmed_timeout and code not in AT_ONCE | OUTAGE_LIKE
    counted = pointer.with_unconfirmed_start(crashed)
    hard = counted.crashes_before_confirm >= policy.max_starts_before_confirm
    soft = counted.unconfirmed_starts >= policy.max_unconfirmed_starts
    if not (hard or soft):
        return RestartPlan(
            delay, history, counted, False,
            f"{what} before confirming (crashes {counted.crashes_before_confirm}/"
            f"{policy.max_starts_before_confirm}, unconfirmed runs {counted.unconfirmed_starts}/"
            f"{policy.max_unconfirmed_starts}); {then}")
    if counted.previous is None:
        return RestartPlan(delay, history, counted, False,
                           f"{what} before confirming; no previous version to go back to")
    if hard:
        failed = f"failed {counted.crashes_before_confirm} starts before confirming"
    else:
        failed = f"did not confirm in {counted.unconfirmed_starts} runs"
    reason = (f"version {pointer.version} {failed} (last: {what}); "
              f"rolled back to {pointer.previous}")
    return RestartPlan(0.0, RunHistory(), counted, True, reason, soft=not hard,
                       recheck=not hard and outage_like)


def _next_start(
    code: int | None, ran_for_s: float, history: RunHistory, policy: HostPolicy, hung: bool
) -> tuple[float, RunHistory, str]:
    """The delay before the next start by exit code, and the run history it leaves."""
    if code in AT_ONCE and not hung:
        quick = history.quick_restarts + 1 if ran_for_s < policy.quick_exit_s else 0
        if quick > policy.max_quick_restarts:
            failures = history.failures + 1
            delay = _backoff(failures, policy)
            return (delay, RunHistory(failures, quick),
                    f"again after {ran_for_s:.0f} s; backing off {delay:.0f} s")
        return 0.0, RunHistory(0, quick), "starting again"
    failures = 0 if ran_for_s >= policy.healthy_run_s and not hung else history.failures
    failures += 1
    if code == ExitCode.CONFIG_ERROR and not hung:
        delay = policy.config_error_delay_s
    else:
        delay = _backoff(failures, policy)
    return delay, RunHistory(failures, 0), f"retrying in {delay:.0f} s"


def _backoff(failures: int, policy: HostPolicy) -> float:
    exponent = min(failures - 1, 30)
    return min(policy.backoff_initial_s * (2.0**exponent), policy.backoff_max_s)


@dataclass(frozen=True, slots=True)
class RecoveryChoice:
    version: str
    previous: str | None
    state: PointerState
    why: str


def choose_recovery(
    runnable: Sequence[str],
    confirmed: Sequence[str],
    barred_for_good: set[str],
    barred_softly: set[str],
    own: str | None,
) -> RecoveryChoice | None:
    """What a lost or broken pointer becomes. `runnable`: installed versions whose exe exists;
    `confirmed`: versions known to have confirmed themselves here, best evidence first;
    `barred_*`: quarantined (crash loop / did not confirm); `own`: the version of the host's
    own exe (the MSI's), which can be copied in, if any. In order:

    1. the best-evidenced confirmed version that is runnable and not barred: confirmed;
    2. the newest runnable unbarred version: awaiting confirmation with the next one as the
       fallback (trusted as installed only when it is the only one);
    3. only barred builds (or none) left: the own exe, unless its version is barred itself —
       confirmed if that version confirmed itself here, else awaiting confirmation with a
       softly barred build as the fallback where one exists (never a crash loop);
    4. else the least barred build (soft before for good, newest first), awaiting confirmation
       (never trusted), with the own exe as the fallback where it is another version."""
    newest_first = sorted(set(runnable), key=parse_version, reverse=True)
    barred = barred_for_good | barred_softly
    clean = [v for v in newest_first if v not in barred]
    good = next((v for v in confirmed if v in clean), None)
    if good is not None:
        return RecoveryChoice(good, None, PointerState.CONFIRMED, "last confirmed version")
    if clean:
        fallback = clean[1] if len(clean) > 1 else None
        state = PointerState.SWITCHED if fallback else PointerState.INSTALLED
        return RecoveryChoice(clean[0], fallback, state, "no confirmed version known")
    if own is not None and own not in barred:
        if own in confirmed:
            return RecoveryChoice(own, None, PointerState.CONFIRMED,
                                  "the service's own build, confirmed here before")
        soft = next((v for v in newest_first if v in barred_softly and v != own), None)
        state = PointerState.SWITCHED if soft else PointerState.INSTALLED
        return RecoveryChoice(own, soft, state, "the service's own build (nothing else runnable)")
    least_barred = ([v for v in newest_first if v not in barred_for_good]
                    + [v for v in newest_first if v in barred_for_good])
    if not least_barred:
        if own is None:
            return None
        return RecoveryChoice(own, None, PointerState.SWITCHED,
                              "the service's own build, though quarantined (nothing else)")
    chosen = least_barred[0]
    fallback = own if own is not None and own != chosen else None
    return RecoveryChoice(chosen, fallback, PointerState.SWITCHED,
                          "only quarantined builds left: on probation")


@dataclass(frozen=True, slots=True)
class RunResult:
    code: int | None  # None: could not start
    ran_for_s: float
    stopped: bool = False  # ended by the host's stop
    unconfirmed_timeout: bool = False  # stopped by the host for not confirming in time


# ---- process edges ------------------------------------------------------------------------------


class ChildProcess(Protocol):
    def wait(self, timeout_s: float) -> int | None:
        """The exit code, or None if still running after `timeout_s`."""
        ...

    def request_stop(self) -> None: ...

    def kill(self) -> None: ...


class Launcher(Protocol):
    def start(self, argv: list[str], env: Mapping[str, str]) -> ChildProcess: ...


class Waiter(Protocol):
    def wait(self, stop: threading.Event, seconds: float) -> bool:
        """Wait up to `seconds`; True if `stop` was set."""
        ...


class EventWaiter:
    def wait(self, stop: threading.Event, seconds: float) -> bool:
        return stop.wait(seconds) if seconds > 0 else stop.is_set()


class _Popen:
    def __init__(
        self, proc: subprocess.Popen[bytes], stop_event: ChildStopEvent, tree: ProcessTree
    ) -> None:
        self._proc = proc
        self._stop_event = stop_event
        self._tree = tree

    def wait(self, timeout_s: float) -> int | None:
        try:
            code = self._proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None
        self._stop_event.close()
        self._tree.close()
        return code

    def request_stop(self) -> None:
        if self._proc.poll() is not None:
            return
        if sys.platform == "win32":
            self._stop_event.set()  # a service has no console: the named event is the channel
            with contextlib.suppress(OSError):
                self._proc.send_signal(signal.CTRL_BREAK_EVENT)  # when run from a console
        else:
            self._proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """The whole tree: a onefile agent's Python child outlives its killed bootloader."""
        self._tree.kill()


class SubprocessLauncher:
    """Starts the agent exe as the root of its own process tree (updater/process_tree.py);
    its console output is appended to `console_log` if given. `check_exe`, if given, runs
    first and refuses an exe by raising OSError (the host then reports "could not start")."""

    def __init__(
        self,
        console_log: Path | None = None,
        check_exe: Callable[[Path], None] | None = None,
    ) -> None:
        self._console_log = console_log
        self._check_exe = check_exe

    def start(self, argv: list[str], env: Mapping[str, str]) -> ChildProcess:
        if self._check_exe is not None:
            self._check_exe(Path(argv[0]))
        out: IO[bytes] | int = subprocess.DEVNULL
        if self._console_log is not None:
            self._console_log.parent.mkdir(parents=True, exist_ok=True)
            out = open(self._console_log, "ab")  # noqa: SIM115 - closed below, child keeps it
        stop_event = ChildStopEvent()
        try:
            proc = subprocess.Popen(
                argv,
                env={**env, **stop_event.env()},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                **popen_options(),
            )
            tree = ProcessTree.adopt(proc)
        except OSError:
            stop_event.close()
            raise
        finally:
            if not isinstance(out, int):
                out.close()
        return _Popen(proc, stop_event, tree)


# ---- the host -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OwnBuild:
    """The host's own exe (the MSI's, in Program Files) and its version."""

    exe: Path
    version: str


@dataclass
class Host:
    layout: Layout
    launcher: Launcher = field(default_factory=SubprocessLauncher)
    clock: Clock = field(default_factory=SystemClock)
    waiter: Waiter = field(default_factory=EventWaiter)
    policy: HostPolicy = field(default_factory=HostPolicy)
    on_event: Callable[[HostEvent], None] | None = None
    env: Mapping[str, str] | None = None
    agent_args: tuple[str, ...] = ("run",)
    own: OwnBuild | None = None  # installed on a first start and as the last resort

    def _emit(self, kind: str, version: str, detail: str) -> None:
        log.info("host %s %s: %s", kind, version, detail)
        if self.on_event is not None:
            self.on_event(HostEvent(kind, version, detail))

    def run(self, stop: threading.Event, max_runs: int | None = None) -> None:
        """Run until `stop` is set (or `max_runs` children have ended, for tests)."""
        history = RunHistory()
        runs = 0
        while not stop.is_set():
            pointer = self._current()
            if pointer is None:
                self._emit("error", "-", "no runnable version installed; retrying in 15 min")
                if self.waiter.wait(stop, self.policy.config_error_delay_s):
                    break
                continue
            pointer = self._lift_expired_quarantine(pointer)
            run = self._run_once(pointer, stop)
            runs += 1
            if run.stopped:
                self._emit("stop", pointer.version, f"stopped ({describe_exit(run.code)})")
                break
            latest = self._current() or pointer  # the child may have confirmed itself
            plan = plan_restart(run.code, run.ran_for_s, latest, history, self.policy,
                                ran_version=pointer.version,
                                unconfirmed_timeout=run.unconfirmed_timeout)
            history = plan.history
            self._apply(latest, plan)
            if max_runs is not None and runs >= max_runs:
                break
            if plan.delay_s > 0:
                self._emit("backoff", latest.version, plan.reason)
            if self.waiter.wait(stop, plan.delay_s):
                break

    def _run_once(self, pointer: CurrentPointer, stop: threading.Event) -> RunResult:
        exe = self.layout.exe_path(pointer.version)
        env = dict(os.environ if self.env is None else self.env)
        env[ENV_INSTALL_BASE] = str(self.layout.base)
        started = self.clock.monotonic()
        self._emit("start", pointer.version, str(exe))
        try:
            child = self.launcher.start([str(exe), *self.agent_args], env)
        except OSError as e:
            self._emit("error", pointer.version, f"could not start: {e.strerror or e}")
            return RunResult(None, self.clock.monotonic() - started)
        awaiting = pointer.awaiting_confirmation
        while True:
            code = child.wait(self.policy.poll_s)
            ran_for = self.clock.monotonic() - started
            if code is not None:
                self._emit("exit", pointer.version, f"{describe_exit(code)} after {ran_for:.0f} s")
                return RunResult(code, ran_for)
            if stop.is_set():
                code = self._stop_child(child)
                return RunResult(code, self.clock.monotonic() - started, stopped=True)
            if awaiting and ran_for >= self.policy.confirm_deadline_s:
                awaiting = self._still_awaiting(pointer.version)  # read once the deadline passes
                if awaiting:
                    self._emit("error", pointer.version,
                               f"not confirmed after {ran_for:.0f} s (hung?); stopping it")
                    code = self._stop_child(child)
                    return RunResult(code, self.clock.monotonic() - started,
                                     unconfirmed_timeout=True)

    def _still_awaiting(self, version: str) -> bool:
        try:
            now = read_pointer(self.layout.current_file)
        except CorruptStateError:
            return False
        return now is not None and now.version == version and now.awaiting_confirmation

    def _stop_child(self, child: ChildProcess) -> int | None:
        child.request_stop()
        deadline = self.clock.monotonic() + self.policy.stop_grace_s
        while self.clock.monotonic() < deadline:
            code = child.wait(self.policy.poll_s)
            if code is not None:
                return code
        child.kill()
        return child.wait(self.policy.kill_wait_s)

    def _current(self) -> CurrentPointer | None:
        try:
            pointer = read_pointer(self.layout.current_file)
        except CorruptStateError as e:
            log.error("current pointer unreadable (%s); recovering", e)
            pointer = None
        if pointer is not None and self.layout.exe_path(pointer.version).is_file():
            return pointer
        return self._recover(pointer)

    def bootstrap(self) -> CurrentPointer | None:
        """At every service start: the pointer if it names a runnable exe; else what
        `_recover` rebuilds from what survives (installed versions, last confirmed, quarantine),
        the host's own exe (`own`) only as the last resort — on a first start, the only one."""
        self.layout.ensure_dirs()
        self.layout.remove_leftovers()
        return self._current()

    def _recover(self, broken: CurrentPointer | None) -> CurrentPointer | None:
        """Pointer missing/unreadable or naming a missing exe: rebuild it from what survives
        it (`choose_recovery`). The quarantine (own file) is kept and no quarantined build is
        trusted; the last version that confirmed itself here is preferred; any other choice
        must confirm again, with a fallback to roll back to."""
        layout = self.layout
        installed = layout.installed_versions()
        first_start = broken is None and not layout.current_file.exists() and not installed
        quarantine = read_quarantine_or_empty(layout.quarantine_file)
        mirror = dict(broken.quarantined) if broken is not None else {}
        now = self.clock.now()  # one instant: an entry expiring between reads would be both
        held = quarantine.in_force(now, mirror)
        softly = quarantine.soft_in_force(now)
        runnable = [v for v in installed if layout.exe_path(v).is_file()]
        own = self.own.version if self.own is not None else None
        choice = choose_recovery(runnable, self._confirmed_versions(broken),
                                 set(held) - softly, softly, own)
        if choice is None:
            return None
        if self.own is not None and own in (choice.version, choice.previous) and (
            own not in runnable
        ):
            _install_own(layout, self.own)
        why = "installed by host" if first_start else (
            f"recovered: pointer was missing or broken; {choice.why}")
        pointer = CurrentPointer(choice.version, choice.previous, choice.state, 0, why, held)
        write_pointer(layout.current_file, pointer)
        if first_start:
            log.info("first start: installed the service's own build %s", pointer.version)
        else:
            self._emit("rollback" if broken else "error", pointer.version, pointer.reason)
        return pointer

    def _confirmed_versions(self, broken: CurrentPointer | None) -> list[str]:
        """Versions known to have run well here, best evidence first."""
        found: list[str] = []
        last = read_last_confirmed(self.layout.last_confirmed_file)
        if last:
            found.append(last)
        with contextlib.suppress(CorruptStateError):
            record = read_record(self.layout.install_state_file)
            if record is not None:
                # an install starts only from a confirmed running version
                if record.state is InstallState.CONFIRMED:
                    found.append(record.to_version)
                found.append(record.from_version)
        if broken is not None and broken.previous and broken.awaiting_confirmation:
            found.append(broken.previous)  # what ran before the unconfirmed switch
        return found

    def _lift_expired_quarantine(self, pointer: CurrentPointer) -> CurrentPointer:
        """Soft quarantines end after `soft_quarantine_s`: drop them from the file and from
        the pointer's mirror (which older agents read), so the version may be tried again."""
        quarantine = read_quarantine_or_empty(self.layout.quarantine_file)
        expired = quarantine.expired(self.clock.now())
        if not expired:
            return pointer
        mirror = {v: sha for v, sha in pointer.quarantined.items()
                  if not (v in expired and quarantine.entries[v].sha256 == sha)}
        try:
            write_quarantine(self.layout.quarantine_file, quarantine.without(expired))
            if mirror != dict(pointer.quarantined):
                pointer = replace(pointer, quarantined=mirror)
                write_pointer(self.layout.current_file, pointer)
        except OSError as e:  # lifting can wait for the next start; running must not
            log.warning("could not lift the quarantine of %s: %s", sorted(expired), e)
            return pointer
        log.info("quarantine lifted for %s", ", ".join(sorted(expired)))
        return pointer

    def _apply(self, pointer: CurrentPointer, plan: RestartPlan) -> None:
        if plan.pointer is None:
            return
        if not plan.rollback:
            new = plan.pointer
            if plan.lift_soft is not None:
                new = self._lift_soft_quarantine(plan.lift_soft, new)
            write_pointer(self.layout.current_file, new)
            return
        bad_sha = self._archive_sha_of(pointer.version)
        try:
            back = plan.pointer.rolled_back(plan.reason, bad_sha, recheck=plan.recheck)
        except IllegalTransitionError as e:
            self._emit("error", pointer.version, str(e))
            return
        if bad_sha:
            # the quarantine's own file first: it survives whatever happens to the pointer
            now = self.clock.now()
            until = now + timedelta(seconds=self.policy.soft_quarantine_s) if plan.soft else None
            entry = QuarantineEntry(bad_sha, plan.reason, now, until)
            quarantine = read_quarantine_or_empty(self.layout.quarantine_file)
            write_quarantine(self.layout.quarantine_file, quarantine.add(pointer.version, entry))
        write_pointer(self.layout.current_file, back)
        self._mark_record_rolled_back(pointer.version, plan.reason)
        self._emit("rollback", back.version, plan.reason)

    def _lift_soft_quarantine(self, version: str, new: CurrentPointer) -> CurrentPointer:
        """Drop `version`'s quarantine if it is a soft one (file first, then the pointer's
        mirror); a crash loop's stays, mirror included. Only the file says which it is, so
        this is decided here, not in `plan_restart`."""
        quarantine = read_quarantine_or_empty(self.layout.quarantine_file)
        entry = quarantine.entries.get(version)
        if entry is None or entry.until is None:
            return new
        write_quarantine(self.layout.quarantine_file, quarantine.without({version}))
        log.warning("quarantine of %s lifted: %s failed the same way before confirming",
                    version, new.version)  # the plan's reason reaches the Event Log (backoff)
        return replace(new, quarantined={v: sha for v, sha in new.quarantined.items()
                                         if v != version})

    def _archive_sha_of(self, version: str) -> str | None:
        try:
            record = read_record(self.layout.install_state_file)
        except CorruptStateError:
            return None
        if record is not None and record.to_version == version and record.archive_sha256:
            return record.archive_sha256
        return None

    def _mark_record_rolled_back(self, version: str, reason: str) -> None:
        try:
            record = read_record(self.layout.install_state_file)
            if record and record.to_version == version and record.state is InstallState.SWITCHED:
                write_record(self.layout.install_state_file,
                             record.advance(InstallState.ROLLED_BACK, reason))
        except (CorruptStateError, IllegalTransitionError, OSError) as e:
            log.warning("install record not updated: %s", e)


def _install_own(layout: Layout, own: OwnBuild) -> None:
    """Copy the host's own exe to `versions/<its version>/` (via a private staging folder, then
    one rename)."""
    staging = new_staging_dir(layout)
    try:
        shutil.copy2(own.exe, staging / layout.exe_name)
        discard(layout.version_dir(own.version), layout.versions_dir)
        os.replace(staging, layout.version_dir(own.version))
    finally:
        remove_staging(staging)
