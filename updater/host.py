"""The service host: keep the current agent version running, restart it by exit code, roll back.

Pure Python, testable on Linux; the Windows service (installer/) is a thin pywin32 shell that calls
`Host.run(stop_event)` and turns `HostEvent`s into Event Log entries.

Restart policy by the child's exit code (agent/exit_codes.py, docs/exit-codes.md):

    UPDATED (4), RESTART_REQUESTED (3), END_OF_LIFE (0)   start again at once
    TRANSIENT_FAILURE (75)                                back-off: 5 s doubling up to 15 min
    CRASH (1), killed by a signal, any other code          exponential back-off; counts as a crash
    CONFIG_ERROR (78)                                     long back-off (15 min): never a hot loop
    could not even start the exe                          like CRASH

A run that lasted `healthy_run_s` resets the back-off. More than `max_quick_restarts` "at once"
exits in a row, each quicker than `quick_exit_s`, get the back-off too (no hot loop even then).

Rollback: while the `current` pointer says `switched` (the new version has not yet confirmed
itself after initialising config + scope), every CRASH/CONFIG_ERROR/unknown exit is counted in the
pointer; at `max_starts_before_confirm` (≤ 3) the host flips the pointer back to the previous
version, quarantines that build (the gate will not reinstall the same archive) and reports why.

Stop: `stop` set → the child is asked to finish in-flight work (SIGTERM on POSIX; on Windows a
named event whose name the child gets in R4AGENT_STOP_EVENT, see updater/stop_signal.py, plus
CTRL_BREAK when there is a console), then killed after `stop_grace_s` — its whole process tree
(a Job Object on Windows, a process group on POSIX: updater/process_tree.py).
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

from agent.clock import Clock, SystemClock
from agent.exit_codes import ExitCode
from updater.layout import ENV_INSTALL_BASE, Layout, discard
from updater.process_tree import ProcessTree, popen_options
from updater.staging import new_staging_dir, remove_staging
from updater.state import (
    CorruptStateError,
    CurrentPointer,
    IllegalTransitionError,
    InstallState,
    PointerState,
    read_pointer,
    read_record,
    write_pointer,
    write_record,
)
from updater.stop_signal import ChildStopEvent

log = logging.getLogger(__name__)

AT_ONCE = frozenset({ExitCode.UPDATED, ExitCode.RESTART_REQUESTED, ExitCode.END_OF_LIFE})


@dataclass(frozen=True, slots=True)
class HostPolicy:
    max_starts_before_confirm: int = 3
    backoff_initial_s: float = 5.0
    backoff_max_s: float = 900.0
    config_error_delay_s: float = 900.0
    healthy_run_s: float = 600.0
    quick_exit_s: float = 10.0
    max_quick_restarts: int = 5
    stop_grace_s: float = 60.0
    poll_s: float = 1.0

    def __post_init__(self) -> None:
        if not 1 <= self.max_starts_before_confirm <= 3:
            raise ValueError("max_starts_before_confirm must be 1..3")


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
) -> RestartPlan:
    """What to do after the child ended with `code` (None: it could not be started)."""
    what = describe_exit(code)
    if code in AT_ONCE:
        quick = history.quick_restarts + 1 if ran_for_s < policy.quick_exit_s else 0
        if quick > policy.max_quick_restarts:
            failures = history.failures + 1
            delay = _backoff(failures, policy)
            return RestartPlan(delay, RunHistory(failures, quick), None, False,
                               f"{what} again after {ran_for_s:.0f} s; backing off {delay:.0f} s")
        return RestartPlan(0.0, RunHistory(0, quick), None, False, f"{what}; starting again")
    failures = 0 if ran_for_s >= policy.healthy_run_s else history.failures
    failures += 1
    history = RunHistory(failures, 0)
    if code == ExitCode.TRANSIENT_FAILURE:
        delay = _backoff(failures, policy)
        return RestartPlan(delay, history, None, False, f"{what}; retrying in {delay:.0f} s")
    delay = (
        policy.config_error_delay_s if code == ExitCode.CONFIG_ERROR else _backoff(failures, policy)
    )
    if pointer.awaiting_confirmation:
        counted = pointer.with_crash()
        if counted.crashes_before_confirm >= policy.max_starts_before_confirm:
            if counted.previous is None:
                return RestartPlan(delay, history, counted, False,
                                   f"{what} before confirming; no previous version to go back to")
            reason = (
                f"version {pointer.version} failed {counted.crashes_before_confirm} starts before "
                f"confirming (last: {what}); rolled back to {pointer.previous}"
            )
            return RestartPlan(0.0, RunHistory(), counted, True, reason)
        return RestartPlan(delay, history, counted, False,
                           f"{what} before confirming ({counted.crashes_before_confirm}/"
                           f"{policy.max_starts_before_confirm}); retrying in {delay:.0f} s")
    return RestartPlan(delay, history, None, False, f"{what}; retrying in {delay:.0f} s")


def _backoff(failures: int, policy: HostPolicy) -> float:
    exponent = min(failures - 1, 30)
    return min(policy.backoff_initial_s * (2.0**exponent), policy.backoff_max_s)


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
            code, ran_for, stopped = self._run_once(pointer, stop)
            runs += 1
            if stopped:
                self._emit("stop", pointer.version, f"stopped ({describe_exit(code)})")
                break
            latest = self._current() or pointer  # the child may have confirmed itself
            plan = plan_restart(code, ran_for, latest, history, self.policy)
            history = plan.history
            self._apply(latest, plan)
            if max_runs is not None and runs >= max_runs:
                break
            if plan.delay_s > 0:
                self._emit("backoff", latest.version, plan.reason)
            if self.waiter.wait(stop, plan.delay_s):
                break

    def _run_once(
        self, pointer: CurrentPointer, stop: threading.Event
    ) -> tuple[int | None, float, bool]:
        exe = self.layout.exe_path(pointer.version)
        env = dict(os.environ if self.env is None else self.env)
        env[ENV_INSTALL_BASE] = str(self.layout.base)
        started = self.clock.monotonic()
        self._emit("start", pointer.version, str(exe))
        try:
            child = self.launcher.start([str(exe), *self.agent_args], env)
        except OSError as e:
            self._emit("error", pointer.version, f"could not start: {e.strerror or e}")
            return None, self.clock.monotonic() - started, False
        while True:
            code = child.wait(self.policy.poll_s)
            if code is not None:
                ran_for = self.clock.monotonic() - started
                self._emit("exit", pointer.version, f"{describe_exit(code)} after {ran_for:.0f} s")
                return code, ran_for, False
            if stop.is_set():
                return self._stop_child(child), self.clock.monotonic() - started, True

    def _stop_child(self, child: ChildProcess) -> int | None:
        child.request_stop()
        deadline = self.clock.monotonic() + self.policy.stop_grace_s
        while self.clock.monotonic() < deadline:
            code = child.wait(self.policy.poll_s)
            if code is not None:
                return code
        child.kill()
        return child.wait(self.policy.stop_grace_s)

    def _current(self) -> CurrentPointer | None:
        try:
            pointer = read_pointer(self.layout.current_file)
        except CorruptStateError as e:
            log.error("current pointer unreadable (%s); recovering", e)
            pointer = None
        if pointer is not None and self.layout.exe_path(pointer.version).is_file():
            return pointer
        return self._recover(pointer)

    def _recover(self, broken: CurrentPointer | None) -> CurrentPointer | None:
        """Pointer missing/unreadable or naming a missing exe: fall back to a runnable version."""
        candidates = [broken.previous] if broken is not None and broken.previous else []
        candidates += list(reversed(self.layout.installed_versions()))
        for version in candidates:
            if self.layout.exe_path(version).is_file():
                pointer = CurrentPointer(version, None, PointerState.INSTALLED, 0,
                                         "recovered: pointer was missing or broken")
                write_pointer(self.layout.current_file, pointer)
                self._emit("rollback" if broken else "error", version, pointer.reason)
                return pointer
        return None

    def _apply(self, pointer: CurrentPointer, plan: RestartPlan) -> None:
        if plan.pointer is None:
            return
        if not plan.rollback:
            write_pointer(self.layout.current_file, plan.pointer)
            return
        bad_sha = self._archive_sha_of(pointer.version)
        try:
            back = plan.pointer.rolled_back(plan.reason, bad_sha)
        except IllegalTransitionError as e:
            self._emit("error", pointer.version, str(e))
            return
        write_pointer(self.layout.current_file, back)
        self._mark_record_rolled_back(pointer.version, plan.reason)
        self._emit("rollback", back.version, plan.reason)

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


def bootstrap(layout: Layout, own_exe: Path, own_version: str) -> CurrentPointer:
    """First start after the MSI: install the host's own exe as the first version if there is
    no pointer yet (copied via a private staging folder, then one rename)."""
    layout.ensure_dirs()
    layout.remove_leftovers()
    try:
        existing = read_pointer(layout.current_file)
    except CorruptStateError:
        existing = None
    if existing is not None and layout.exe_path(existing.version).is_file():
        return existing
    if not layout.exe_path(own_version).is_file():
        staging = new_staging_dir(layout)
        try:
            shutil.copy2(own_exe, staging / layout.exe_name)
            discard(layout.version_dir(own_version), layout.versions_dir)
            os.replace(staging, layout.version_dir(own_version))
        finally:
            remove_staging(staging)
    pointer = CurrentPointer(own_version, None, PointerState.INSTALLED, 0, "installed by host")
    write_pointer(layout.current_file, pointer)
    return pointer
