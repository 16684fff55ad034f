"""The service host: restart policy by exit code, back-off, rollback of a crash-looping version,
graceful stop. Pure logic with a fake clock and fake children; then real processes."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.clock import FakeClock, SystemClock
from agent.exit_codes import ExitCode
from tests.updater.support import HttpRepo, RepoSim, install_from_repo, service_start
from updater.agent_gate import ENV_UPDATE_URL, InstalledGate
from updater.host import (
    Host,
    HostEvent,
    HostPolicy,
    OwnBuild,
    RunHistory,
    SubprocessLauncher,
    choose_recovery,
    plan_restart,
)
from updater.layout import Layout
from updater.state import (
    CurrentPointer,
    InstallRecord,
    InstallState,
    PointerState,
    read_pointer,
    read_quarantine,
    write_last_confirmed,
    write_pointer,
    write_record,
)

POLICY = HostPolicy()
CONFIRMED = CurrentPointer("1.0.0", None, PointerState.CONFIRMED)
SWITCHED = CurrentPointer("1.0.0", None, PointerState.CONFIRMED).switched_to("1.1.0", "test")


@pytest.mark.parametrize("code", [ExitCode.UPDATED, ExitCode.RESTART_REQUESTED,
                                  ExitCode.END_OF_LIFE])
def test_updated_restart_and_end_of_life_restart_at_once(code: int) -> None:
    plan = plan_restart(code, 3600, CONFIRMED, RunHistory(), POLICY)
    assert plan.delay_s == 0 and plan.pointer is None


def test_crash_backs_off_exponentially_up_to_the_cap() -> None:
    history, delays = RunHistory(), []
    for _ in range(12):
        plan = plan_restart(ExitCode.CRASH, 1, CONFIRMED, history, POLICY)
        history = plan.history
        delays.append(plan.delay_s)
    assert delays[:4] == [5, 10, 20, 40]
    assert max(delays) == POLICY.backoff_max_s and delays[-1] == POLICY.backoff_max_s


def test_transient_failure_backs_off_and_a_healthy_run_resets_it() -> None:
    plan = plan_restart(ExitCode.TRANSIENT_FAILURE, 1, CONFIRMED, RunHistory(failures=3), POLICY)
    assert plan.delay_s == 40
    plan = plan_restart(ExitCode.TRANSIENT_FAILURE, 3600, CONFIRMED, RunHistory(failures=3),
                        POLICY)
    assert plan.delay_s == 5


def test_config_error_never_hot_loops() -> None:
    history = RunHistory()
    for _ in range(5):
        plan = plan_restart(ExitCode.CONFIG_ERROR, 0.1, CONFIRMED, history, POLICY)
        history = plan.history
        assert plan.delay_s >= POLICY.config_error_delay_s


def test_quick_at_once_exits_in_a_row_get_backed_off() -> None:
    history, delays = RunHistory(), []
    for _ in range(7):
        plan = plan_restart(ExitCode.END_OF_LIFE, 0.5, CONFIRMED, history, POLICY)
        history = plan.history
        delays.append(plan.delay_s)
    assert delays[:5] == [0] * 5 and all(d > 0 for d in delays[5:])


def test_unknown_exit_codes_and_signals_count_as_crashes() -> None:
    for code in (2, 137, -9, None):
        plan = plan_restart(code, 1, SWITCHED, RunHistory(), POLICY)
        assert plan.pointer is not None and plan.pointer.crashes_before_confirm == 1


def test_transient_failures_of_a_new_version_roll_it_back_softly_after_six_unconfirmed_runs(
) -> None:
    # a build with broken TLS/proxy exits 75 forever: it must not stay, but an outage must not
    # count like a crash either: a larger budget, and only a soft (expiring) quarantine
    pointer, history = SWITCHED, RunHistory()
    for run in range(1, 6):
        plan = plan_restart(ExitCode.TRANSIENT_FAILURE, 1, pointer, history, POLICY)
        assert not plan.rollback and plan.pointer is not None
        assert (plan.pointer.crashes_before_confirm, plan.pointer.unconfirmed_starts) == (0, run)
        pointer, history = plan.pointer, plan.history
    plan = plan_restart(ExitCode.TRANSIENT_FAILURE, 1, pointer, history, POLICY)
    assert plan.rollback and plan.soft and plan.delay_s == 0
    assert "did not confirm in 6 runs" in plan.reason


@pytest.mark.parametrize("code", [ExitCode.END_OF_LIFE, ExitCode.RESTART_REQUESTED,
                                  ExitCode.UPDATED])
def test_at_once_exits_without_confirming_count_towards_the_soft_budget(code: int) -> None:
    pointer = SWITCHED
    for _ in range(POLICY.max_unconfirmed_starts - 1):
        plan = plan_restart(code, 30, pointer, RunHistory(), POLICY)
        assert plan.delay_s == 0 and not plan.rollback and plan.pointer is not None
        pointer = plan.pointer
    plan = plan_restart(code, 30, pointer, RunHistory(), POLICY)
    assert plan.rollback and plan.soft


def test_crashes_and_unconfirmed_runs_mixed_roll_back_at_the_first_budget_reached() -> None:
    pointer = SWITCHED
    for code in (ExitCode.CRASH, ExitCode.TRANSIENT_FAILURE, ExitCode.CRASH):
        plan = plan_restart(code, 1, pointer, RunHistory(), POLICY)
        assert plan.pointer is not None and not plan.rollback
        pointer = plan.pointer
    plan = plan_restart(ExitCode.CRASH, 1, pointer, RunHistory(), POLICY)
    assert plan.rollback and not plan.soft  # 3 crashes: a crash loop, quarantined for good


def test_the_exit_of_a_version_that_switched_away_does_not_count_against_the_new_one() -> None:
    # 1.0.0 installed 1.1.0 and exited UPDATED: the pointer now awaits 1.1.0's confirmation
    plan = plan_restart(ExitCode.UPDATED, 5, SWITCHED, RunHistory(), POLICY, ran_version="1.0.0")
    assert plan.pointer is None and not plan.rollback


def test_policy_caps_the_starts_before_rollback_at_three() -> None:
    with pytest.raises(ValueError):
        HostPolicy(max_starts_before_confirm=4)
    with pytest.raises(ValueError):
        HostPolicy(max_unconfirmed_starts=0)


def test_config_errors_before_confirming_count_towards_the_soft_budget_not_the_hard_one() -> None:
    # 78 is also the backend refusing (a non-429 4xx from /data, a maintenance page instead of
    # JSON): three of those (about 30 min) must not bar a good release at a practice for good
    pointer = SWITCHED
    for run in range(1, POLICY.max_unconfirmed_starts):
        plan = plan_restart(ExitCode.CONFIG_ERROR, 1, pointer, RunHistory(), POLICY)
        assert not plan.rollback and plan.pointer is not None
        assert (plan.pointer.crashes_before_confirm, plan.pointer.unconfirmed_starts) == (0, run)
        pointer = plan.pointer
    plan = plan_restart(ExitCode.CONFIG_ERROR, 1, pointer, RunHistory(), POLICY)
    assert plan.rollback and plan.soft and plan.recheck


def test_a_soft_rollback_for_hangs_does_not_watch_the_old_version_for_an_outage() -> None:
    pointer = SWITCHED
    for _ in range(POLICY.max_unconfirmed_starts):
        plan = plan_restart(None, POLICY.confirm_deadline_s, pointer, RunHistory(), POLICY,
                            unconfirmed_timeout=True)
        assert plan.pointer is not None
        pointer = plan.pointer
    assert plan.rollback and plan.soft and not plan.recheck


@pytest.mark.parametrize(("case", "expected"), [
    # only a crash looper left, own build not barred and confirmed here: the own build
    (dict(runnable=["1.1.0"], confirmed=["1.0.0"], hard={"1.1.0"}, soft=set(), own="1.0.0"),
     ("1.0.0", None, PointerState.CONFIRMED)),
    # own build never confirmed here: on probation, a softly barred build as its fallback
    (dict(runnable=["1.2.0", "1.1.0"], confirmed=[], hard={"1.1.0"}, soft={"1.2.0"},
          own="1.0.0"), ("1.0.0", "1.2.0", PointerState.SWITCHED)),
    # the own build's version is barred too: the least barred build, with the own as fallback
    (dict(runnable=["1.2.0", "1.3.0"], confirmed=[], hard={"1.1.0", "1.3.0"}, soft={"1.2.0"},
          own="1.1.0"), ("1.2.0", "1.1.0", PointerState.SWITCHED)),
    # no own build (not frozen): a barred build is never trusted
    (dict(runnable=["1.1.0"], confirmed=["1.1.0"], hard={"1.1.0"}, soft=set(), own=None),
     ("1.1.0", None, PointerState.SWITCHED)),
])
def test_recovery_never_trusts_a_quarantined_build_and_falls_back_on_the_hosts_own(
    case: dict[str, Any], expected: tuple[str, str | None, PointerState]
) -> None:
    choice = choose_recovery(case["runnable"], case["confirmed"], case["hard"], case["soft"],
                             case["own"])
    assert choice is not None and (choice.version, choice.previous, choice.state) == expected


def test_recovery_with_nothing_runnable_and_no_own_build_has_no_choice() -> None:
    assert choose_recovery([], ["1.0.0"], set(), set(), None) is None


# ---- the host loop with fake children --------------------------------------------------------


@dataclass
class FakeChild:
    clock: FakeClock
    code: int | None  # None: runs until asked to stop
    runtime_s: float = 10.0
    obeys_stop: bool = True
    stop_requested: bool = False
    killed: bool = False
    elapsed: float = 0.0

    def wait(self, timeout_s: float) -> int | None:
        if self.killed:
            return -9
        if self.stop_requested and self.obeys_stop:
            return 0
        if self.code is not None and self.elapsed + timeout_s >= self.runtime_s:
            self.clock.advance(self.runtime_s - self.elapsed)
            self.elapsed = self.runtime_s
            return self.code
        self.clock.advance(timeout_s)
        self.elapsed += timeout_s
        return None

    def request_stop(self) -> None:
        self.stop_requested = True

    def kill(self) -> None:
        self.killed = True


@dataclass
class FakeLauncher:
    clock: FakeClock
    script: list[tuple[int | None, Callable[[], None] | None]]
    started: list[str] = field(default_factory=list)
    children: list[FakeChild] = field(default_factory=list)
    obeys_stop: bool = True
    runtime_s: float = 10.0

    def start(self, argv: list[str], env: dict[str, str] | object) -> FakeChild:
        self.started.append(Path(argv[0]).parent.name)
        code, on_start = self.script.pop(0)
        if on_start is not None:
            on_start()
        child = FakeChild(self.clock, code, self.runtime_s, obeys_stop=self.obeys_stop)
        self.children.append(child)
        return child


Step = tuple[int | None, Callable[[], None] | None]


def _step(code: int | None, on_start: Callable[[], None] | None = None) -> Step:
    return code, on_start


class FakeWaiter:
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.delays: list[float] = []

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        self.delays.append(seconds)
        self.clock.advance(seconds)
        return stop.is_set()


def _installed(tmp_path: Path, versions: list[str], pointer: CurrentPointer) -> Layout:
    layout = Layout(tmp_path / "pd")
    layout.ensure_dirs()
    for v in versions:
        layout.version_dir(v).mkdir()
        layout.exe_path(v).write_text("#!/bin/sh\n")
    write_pointer(layout.current_file, pointer)
    if pointer.awaiting_confirmation and pointer.previous:
        # as the updater leaves it: the switch's record names the new build's archive
        write_record(layout.install_state_file, InstallRecord(
            "a1", pointer.previous, pointer.version, InstallState.SWITCHED,
            archive_sha256=f"sha-of-{pointer.version}"))
    return layout


def _host(layout: Layout, launcher: FakeLauncher, clock: FakeClock,
          events: list[HostEvent]) -> tuple[Host, FakeWaiter]:
    waiter = FakeWaiter(clock)
    return Host(layout, launcher, clock, waiter, HostPolicy(), events.append, env={}), waiter


def test_crash_looping_new_version_is_rolled_back_within_three_starts(tmp_path: Path) -> None:
    layout = _installed(tmp_path, ["1.0.0", "1.1.0"], SWITCHED)
    clock, events = FakeClock(), list[HostEvent]()
    crash: tuple[int | None, Callable[[], None] | None] = (1, None)
    script = [crash, crash, crash, (0, None)]
    launcher = FakeLauncher(clock, script)
    host, _ = _host(layout, launcher, clock, events)

    host.run(threading.Event(), max_runs=4)

    assert launcher.started == ["1.1.0", "1.1.0", "1.1.0", "1.0.0"]
    pointer = read_pointer(layout.current_file)
    assert pointer is not None
    assert (pointer.version, pointer.previous, pointer.state) == ("1.0.0", "1.1.0",
                                                                  PointerState.ROLLED_BACK)
    rollbacks = [e for e in events if e.kind == "rollback"]
    assert len(rollbacks) == 1 and "failed 3 starts before confirming" in rollbacks[0].detail
    entry = read_quarantine(layout.quarantine_file).entries["1.1.0"]
    assert entry.sha256 == "sha-of-1.1.0" and entry.until is None  # a crash loop: for good
    assert pointer.quarantined == {"1.1.0": "sha-of-1.1.0"}  # mirrored for older agents


def test_new_version_failing_transiently_is_rolled_back_and_quarantined_for_a_day(
    tmp_path: Path,
) -> None:
    layout = _installed(tmp_path, ["1.0.0", "1.1.0"], SWITCHED)
    clock, events = FakeClock(), list[HostEvent]()
    transient: tuple[int | None, Callable[[], None] | None] = (ExitCode.TRANSIENT_FAILURE, None)
    launcher = FakeLauncher(clock, [transient] * 6 + [(0, None)] * 2)
    host, _ = _host(layout, launcher, clock, events)

    host.run(threading.Event(), max_runs=7)

    assert launcher.started == ["1.1.0"] * 6 + ["1.0.0"]
    pointer = read_pointer(layout.current_file)
    assert pointer is not None and (pointer.version, pointer.state) == (
        "1.0.0", PointerState.ROLLED_BACK)
    entry = read_quarantine(layout.quarantine_file).entries["1.1.0"]
    assert entry.until is not None
    assert entry.until - clock.now() > timedelta(hours=23)
    assert pointer.quarantined == {"1.1.0": "sha-of-1.1.0"}

    # a day later the quarantine is lifted: file and the pointer's mirror, so it may be retried
    clock.advance(24 * 3600)
    host.run(threading.Event(), max_runs=1)
    assert read_quarantine(layout.quarantine_file).entries == {}
    pointer = read_pointer(layout.current_file)
    assert pointer is not None and pointer.quarantined == {}


def test_hung_new_version_is_stopped_at_the_confirmation_deadline_and_counted(
    tmp_path: Path,
) -> None:
    layout = _installed(tmp_path, ["1.0.0", "1.1.0"], SWITCHED)
    clock, events = FakeClock(), list[HostEvent]()
    launcher = FakeLauncher(clock, [(None, None)])  # runs until asked to stop, never confirms
    host, _ = _host(layout, launcher, clock, events)
    before = clock.monotonic()

    host.run(threading.Event(), max_runs=1)

    child = launcher.children[0]
    assert child.stop_requested
    assert clock.monotonic() - before >= POLICY.confirm_deadline_s
    pointer = read_pointer(layout.current_file)
    assert pointer is not None and pointer.version == "1.1.0"
    assert (pointer.crashes_before_confirm, pointer.unconfirmed_starts) == (0, 1)


def test_a_version_that_confirmed_in_time_is_left_running_past_the_deadline(
    tmp_path: Path,
) -> None:
    layout = _installed(tmp_path, ["1.0.0", "1.1.0"], SWITCHED)
    clock, events = FakeClock(), list[HostEvent]()

    def confirm() -> None:
        pointer = read_pointer(layout.current_file)
        assert pointer is not None
        write_pointer(layout.current_file, pointer.confirmed())

    launcher = FakeLauncher(clock, [(0, confirm)], runtime_s=2 * POLICY.confirm_deadline_s)
    host, _ = _host(layout, launcher, clock, events)
    host.run(threading.Event(), max_runs=1)
    assert not launcher.children[0].stop_requested
    assert launcher.children[0].elapsed == 2 * POLICY.confirm_deadline_s


def test_a_confirmed_version_is_never_rolled_back(tmp_path: Path) -> None:
    layout = _installed(tmp_path, ["1.0.0", "1.1.0"], SWITCHED)
    clock, events = FakeClock(), list[HostEvent]()

    def confirm() -> None:
        pointer = read_pointer(layout.current_file)
        assert pointer is not None
        write_pointer(layout.current_file, pointer.confirmed())

    launcher = FakeLauncher(clock, [(1, confirm)] + [(1, None)] * 4)
    host, waiter = _host(layout, launcher, clock, events)
    host.run(threading.Event(), max_runs=5)
    assert launcher.started == ["1.1.0"] * 5
    assert waiter.delays == [5, 10, 20, 40]


def test_stop_asks_the_child_to_finish_then_ends(tmp_path: Path) -> None:
    layout = _installed(tmp_path, ["1.0.0"], CONFIRMED)
    clock, events = FakeClock(), list[HostEvent]()
    stop = threading.Event()
    launcher = FakeLauncher(clock, [(None, stop.set)])
    host, _ = _host(layout, launcher, clock, events)
    host.run(stop)
    child = launcher.children[0]
    assert child.stop_requested and not child.killed
    assert events[-1].kind == "stop"


def test_stop_kills_a_child_that_ignores_it_after_the_grace_period(tmp_path: Path) -> None:
    layout = _installed(tmp_path, ["1.0.0"], CONFIRMED)
    clock, events = FakeClock(), list[HostEvent]()
    stop = threading.Event()
    launcher = FakeLauncher(clock, [(None, stop.set)], obeys_stop=False)
    host, _ = _host(layout, launcher, clock, events)
    before = clock.monotonic()
    host.run(stop)
    assert launcher.children[0].killed
    assert clock.monotonic() - before >= POLICY.stop_grace_s


def test_a_stop_of_a_child_that_will_not_die_ends_within_the_policys_worst_case(
    tmp_path: Path,
) -> None:
    # the Windows service's STOP_PENDING wait hints are built from `stop_worst_case_s`
    layout = _installed(tmp_path, ["1.0.0"], CONFIRMED)
    clock, events = FakeClock(), list[HostEvent]()
    stop = threading.Event()

    class Unkillable(FakeChild):
        def wait(self, timeout_s: float) -> int | None:
            self.clock.advance(timeout_s)
            return None

    class UnkillableLauncher(FakeLauncher):
        def start(self, argv: list[str], env: dict[str, str] | object) -> FakeChild:
            stop.set()
            return Unkillable(clock, None)

    host, _ = _host(layout, UnkillableLauncher(clock, []), clock, events)
    before = clock.monotonic()
    host.run(stop)
    assert clock.monotonic() - before <= POLICY.stop_worst_case_s
    assert events[-1].kind == "stop"


def test_damaged_pointer_with_no_confirmed_version_known_runs_the_newest_on_probation(
    tmp_path: Path,
) -> None:
    layout = _installed(tmp_path, ["1.0.0", "1.1.0"], CONFIRMED)
    layout.current_file.write_text("{garbage")
    clock, events = FakeClock(), list[HostEvent]()
    crash, done = _step(ExitCode.CRASH), _step(ExitCode.END_OF_LIFE)
    launcher = FakeLauncher(clock, [crash] * 3 + [done])
    host, _ = _host(layout, launcher, clock, events)
    host.run(threading.Event(), max_runs=4)
    # awaiting confirmation with the other version as fallback: a crash loop still rolls back
    assert launcher.started == ["1.1.0", "1.1.0", "1.1.0", "1.0.0"]


def test_damaged_pointer_after_a_rollback_keeps_the_quarantine_and_the_confirmed_version(
    tmp_path: Path,
) -> None:
    layout = _installed(tmp_path, ["1.0.0", "1.1.0"], SWITCHED)
    write_last_confirmed(layout.last_confirmed_file, "1.0.0")  # 1.0.0 confirmed itself earlier
    clock, events = FakeClock(), list[HostEvent]()
    crash, done = _step(ExitCode.CRASH), _step(ExitCode.END_OF_LIFE)
    launcher = FakeLauncher(clock, [crash] * 3 + [done] * 2)
    host, _ = _host(layout, launcher, clock, events)
    host.run(threading.Event(), max_runs=4)  # 1.1.0 crash-loops and is rolled back
    assert read_quarantine(layout.quarantine_file).entries.keys() == {"1.1.0"}

    layout.current_file.write_text("{truncated by a power cut")
    host.run(threading.Event(), max_runs=1)

    assert launcher.started[-1] == "1.0.0"  # not the newer, quarantined build still on disk
    pointer = read_pointer(layout.current_file)
    assert pointer is not None
    assert (pointer.version, pointer.state) == ("1.0.0", PointerState.CONFIRMED)
    assert pointer.quarantined == {"1.1.0": "sha-of-1.1.0"}  # the gate still refuses it


def test_pointer_to_a_missing_exe_falls_back_to_the_previous_version(tmp_path: Path) -> None:
    layout = _installed(tmp_path, ["1.0.0"], SWITCHED)  # 1.1.0 folder gone
    clock, events = FakeClock(), list[HostEvent]()
    launcher = FakeLauncher(clock, [(0, None)])
    host, _ = _host(layout, launcher, clock, events)
    host.run(threading.Event(), max_runs=1)
    assert launcher.started == ["1.0.0"]


def test_bootstrap_installs_the_hosts_own_exe_as_the_first_version(tmp_path: Path) -> None:
    own = tmp_path / "ProgramFiles" / "r4agent"
    own.parent.mkdir()
    own.write_text("#!/bin/sh\necho r4agent 1.0.0\n")
    layout = Layout(tmp_path / "pd")
    pointer = service_start(layout, own, "1.0.0")
    assert pointer.version == "1.0.0" and layout.exe_path("1.0.0").read_text() == own.read_text()
    assert service_start(layout, own, "9.9.9").version == "1.0.0"  # never overrides a pointer


def _own_build(tmp_path: Path, version: str) -> OwnBuild:
    """The service's own exe (the MSI's, in Program Files)."""
    exe = tmp_path / "ProgramFiles" / "r4agent"
    exe.parent.mkdir(exist_ok=True)
    exe.write_text(f"#!/bin/sh\necho r4agent {version}\n")
    return OwnBuild(exe, version)


def test_service_start_with_a_corrupt_pointer_runs_the_last_confirmed_version_not_the_msi_exe(
    tmp_path: Path,
) -> None:
    layout = _installed(tmp_path, ["1.3.0", "1.4.0", "1.5.0"], CONFIRMED)
    write_last_confirmed(layout.last_confirmed_file, "1.5.0")
    layout.current_file.write_text("{torn")
    own = _own_build(tmp_path, "1.0.0")

    pointer = service_start(layout, own.exe, own.version)

    assert (pointer.version, pointer.state) == ("1.5.0", PointerState.CONFIRMED)
    assert layout.installed_versions() == ["1.3.0", "1.4.0", "1.5.0"]  # the MSI's 1.0.0 not copied
    assert read_pointer(layout.current_file) == pointer


def test_service_start_with_the_confirmed_versions_exe_gone_runs_the_version_it_came_from(
    tmp_path: Path,
) -> None:
    # 1.4.0 installed 1.5.0, which confirmed itself; then 1.5.0's exe was deleted
    confirmed_15 = CurrentPointer("1.4.0", None, PointerState.CONFIRMED).switched_to(
        "1.5.0", "test").confirmed()
    layout = _installed(tmp_path, ["1.3.0", "1.4.0", "1.5.0"], confirmed_15)
    write_record(layout.install_state_file,
                 InstallRecord("a1", "1.4.0", "1.5.0", InstallState.CONFIRMED))
    write_last_confirmed(layout.last_confirmed_file, "1.5.0")
    layout.exe_path("1.5.0").unlink()
    own = _own_build(tmp_path, "1.0.0")

    pointer = service_start(layout, own.exe, own.version)

    # an install starts only from a confirmed version: 1.4.0 is known good, not the MSI's 1.0.0
    assert (pointer.version, pointer.state) == ("1.4.0", PointerState.CONFIRMED)
    assert "1.0.0" not in layout.installed_versions()


def test_service_start_with_nothing_known_good_left_runs_the_newest_on_probation_not_the_msi_exe(
    tmp_path: Path,
) -> None:
    layout = _installed(tmp_path, ["1.3.0", "1.4.0", "1.5.0"], CONFIRMED)
    write_last_confirmed(layout.last_confirmed_file, "1.5.0")
    layout.current_file.write_text("{torn")
    layout.exe_path("1.5.0").unlink()  # and no install record says where 1.5.0 came from
    own = _own_build(tmp_path, "1.0.0")

    pointer = service_start(layout, own.exe, own.version)

    assert (pointer.version, pointer.previous, pointer.state) == (
        "1.4.0", "1.3.0", PointerState.SWITCHED)  # must confirm itself, 1.3.0 to roll back to
    assert "1.0.0" not in layout.installed_versions()


def _rolled_back_off_a_crash_loop(tmp_path: Path) -> Layout:
    """1.1.0 crash-looped and was quarantined for good; the host runs 1.0.0 again."""
    layout = _installed(tmp_path, ["1.0.0", "1.1.0"], SWITCHED)
    write_last_confirmed(layout.last_confirmed_file, "1.0.0")
    clock = FakeClock()
    launcher = FakeLauncher(clock, [_step(ExitCode.CRASH)] * 3)
    host, _ = _host(layout, launcher, clock, [])
    host.run(threading.Event(), max_runs=3)
    pointer = read_pointer(layout.current_file)
    assert pointer is not None and pointer.state is PointerState.ROLLED_BACK
    assert read_quarantine(layout.quarantine_file).entries["1.1.0"].until is None
    return layout


def test_rollback_target_deleted_with_only_a_crash_looper_left_reinstalls_the_hosts_own_build(
    tmp_path: Path,
) -> None:
    layout = _rolled_back_off_a_crash_loop(tmp_path)
    shutil.rmtree(layout.version_dir("1.0.0"))
    own = _own_build(tmp_path, "1.0.0")
    clock, events = FakeClock(), list[HostEvent]()
    launcher = FakeLauncher(clock, [_step(ExitCode.END_OF_LIFE)])
    host, _ = _host(layout, launcher, clock, events)
    host.own = own

    host.run(threading.Event(), max_runs=1)

    assert launcher.started == ["1.0.0"]  # not the crash looper as a trusted version
    assert layout.exe_path("1.0.0").read_text() == own.exe.read_text()
    pointer = read_pointer(layout.current_file)
    assert pointer is not None and (pointer.version, pointer.state) == (
        "1.0.0", PointerState.CONFIRMED)
    assert pointer.quarantined == {"1.1.0": "sha-of-1.1.0"}  # the gate still refuses it


def test_only_a_crash_looper_left_and_no_own_build_runs_it_on_probation_never_trusted(
    tmp_path: Path,
) -> None:
    layout = _rolled_back_off_a_crash_loop(tmp_path)
    shutil.rmtree(layout.version_dir("1.0.0"))
    clock = FakeClock()
    launcher = FakeLauncher(clock, [_step(ExitCode.END_OF_LIFE)])
    host, _ = _host(layout, launcher, clock, [])

    host.run(threading.Event(), max_runs=1)

    assert launcher.started == ["1.1.0"]
    pointer = read_pointer(layout.current_file)
    assert pointer is not None and pointer.version == "1.1.0"
    assert pointer.awaiting_confirmation  # was: installed (trusted), previous None


def test_with_no_runnable_version_the_host_runs_its_own_build_instead_of_waiting(
    tmp_path: Path,
) -> None:
    layout = _installed(tmp_path, ["1.2.0"], CurrentPointer("1.2.0", None,
                                                            PointerState.CONFIRMED))
    layout.exe_path("1.2.0").unlink()
    clock = FakeClock()
    launcher = FakeLauncher(clock, [_step(ExitCode.END_OF_LIFE)])
    host, waiter = _host(layout, launcher, clock, [])
    host.own = _own_build(tmp_path, "1.0.0")

    host.run(threading.Event(), max_runs=1)

    assert launcher.started == ["1.0.0"] and waiter.delays == []  # was: 15 min waits, forever


def _soft_rollback_of_1_1_0(tmp_path: Path, clock: FakeClock) -> tuple[Layout, Host, FakeLauncher]:
    layout = _installed(tmp_path, ["1.0.0", "1.1.0"], SWITCHED)
    launcher = FakeLauncher(clock, [_step(ExitCode.TRANSIENT_FAILURE)] * 6)
    host, _ = _host(layout, launcher, clock, [])
    host.run(threading.Event(), max_runs=6)  # an outage right after the switch
    entry = read_quarantine(layout.quarantine_file).entries["1.1.0"]
    assert entry.until is not None
    pointer = read_pointer(layout.current_file)
    assert pointer is not None and pointer.awaiting_reconfirmation
    return layout, host, launcher


@pytest.mark.parametrize("code", [ExitCode.TRANSIENT_FAILURE, ExitCode.CONFIG_ERROR])
def test_rolled_back_version_failing_the_same_way_lifts_the_new_versions_soft_quarantine(
    tmp_path: Path, code: int
) -> None:
    clock = FakeClock()
    layout, host, launcher = _soft_rollback_of_1_1_0(tmp_path, clock)
    launcher.script.append(_step(code))  # 1.0.0 cannot get through either: the environment

    host.run(threading.Event(), max_runs=1)

    assert launcher.started[-1] == "1.0.0"
    assert read_quarantine(layout.quarantine_file).entries == {}
    pointer = read_pointer(layout.current_file)
    assert pointer is not None and pointer.version == "1.0.0"
    assert pointer.quarantined == {} and not pointer.awaiting_reconfirmation


def test_rolled_back_version_that_confirms_itself_keeps_the_new_versions_soft_quarantine(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    layout, host, launcher = _soft_rollback_of_1_1_0(tmp_path, clock)
    gate = InstalledGate(layout, "1.0.0", None, root_seed=b"")

    def confirm() -> None:  # 1.0.0 gets through (the real gate): 1.1.0 was to blame
        gate.confirm_running()

    launcher.script.append(_step(ExitCode.TRANSIENT_FAILURE, confirm))  # fails later on

    host.run(threading.Event(), max_runs=1)

    assert read_quarantine(layout.quarantine_file).entries.keys() == {"1.1.0"}
    pointer = read_pointer(layout.current_file)
    assert pointer is not None and pointer.quarantined == {"1.1.0": "sha-of-1.1.0"}


def test_a_crash_loop_stays_quarantined_when_the_rolled_back_version_meets_an_outage(
    tmp_path: Path,
) -> None:
    layout = _rolled_back_off_a_crash_loop(tmp_path)
    clock = FakeClock()
    launcher = FakeLauncher(clock, [_step(ExitCode.TRANSIENT_FAILURE)])
    host, _ = _host(layout, launcher, clock, [])
    host.run(threading.Event(), max_runs=1)
    assert read_quarantine(layout.quarantine_file).entries.keys() == {"1.1.0"}


# ---- real processes: the simulated agent, the real gate, the real host --------------------------


class NoWait:
    def wait(self, stop: threading.Event, seconds: float) -> bool:
        return stop.is_set()


def _real_host(layout: Layout, url: str, events: list[HostEvent]) -> Host:
    env = dict(os.environ, **{ENV_UPDATE_URL: url})
    return Host(layout, SubprocessLauncher(layout.logs_dir / "console.log"), SystemClock(),
                NoWait(), HostPolicy(poll_s=0.05), events.append, env=env)


def _runs(layout: Layout) -> list[str]:
    return (layout.base / "runs.log").read_text().split()


def test_real_host_moves_up_and_down_with_the_wanted_version(
    tmp_path: Path, sim: RepoSim, http_repo: HttpRepo
) -> None:
    layout = Layout(tmp_path / "pd")
    install_from_repo(sim, layout, "1.0.0")
    events: list[HostEvent] = []
    host = _real_host(layout, http_repo.url, events)
    (layout.base / "wanted").write_text("1.1.0")
    host.run(threading.Event(), max_runs=2)  # 1.0.0 updates (exit 4), 1.1.0 runs
    (layout.base / "wanted").write_text("1.0.0")
    host.run(threading.Event(), max_runs=2)  # 1.1.0 downgrades (exit 4), 1.0.0 runs
    assert _runs(layout) == ["1.0.0", "1.1.0", "1.1.0", "1.0.0"]
    exits = [(e.version, e.detail.split(" after")[0]) for e in events if e.kind == "exit"]
    assert exits == [("1.0.0", "exit 4 (UPDATED)"), ("1.1.0", "exit 0 (END_OF_LIFE)"),
                     ("1.1.0", "exit 4 (UPDATED)"), ("1.0.0", "exit 0 (END_OF_LIFE)")]
    pointer = read_pointer(layout.current_file)
    assert pointer is not None
    assert (pointer.version, pointer.previous, pointer.state) == ("1.0.0", "1.1.0",
                                                                  PointerState.CONFIRMED)


def test_real_crash_looping_version_is_rolled_back_and_not_reinstalled(
    tmp_path: Path, sim: RepoSim, http_repo: HttpRepo
) -> None:
    sim.add("1.3.0", crash_before_confirm=True)
    layout = Layout(tmp_path / "pd")
    install_from_repo(sim, layout, "1.0.0")
    (layout.base / "wanted").write_text("1.3.0")
    events: list[HostEvent] = []
    host = _real_host(layout, http_repo.url, events)
    host.run(threading.Event(), max_runs=6)
    # 1.0.0 installs 1.3.0; 1.3.0 fails 3 starts; back on 1.0.0, which refuses to reinstall it
    assert _runs(layout)[:6] == ["1.0.0", "1.3.0", "1.3.0", "1.3.0", "1.0.0", "1.0.0"]
    pointer = read_pointer(layout.current_file)
    assert pointer is not None and pointer.version == "1.0.0"
    assert "rolled back here" in (layout.base / "decisions.log").read_text().splitlines()[-1]
    assert any(e.kind == "rollback" for e in events)


def test_real_rollback_survives_a_damaged_pointer_and_is_reported_once(
    tmp_path: Path, sim: RepoSim, http_repo: HttpRepo
) -> None:
    sim.add("1.3.0", crash_before_confirm=True)
    layout = Layout(tmp_path / "pd")
    install_from_repo(sim, layout, "1.0.0")
    (layout.base / "wanted").write_text("1.3.0")
    events: list[HostEvent] = []
    host = _real_host(layout, http_repo.url, events)
    host.run(threading.Event(), max_runs=5)  # installed, 3 crashes, rolled back, 1.0.0 runs
    assert layout.exe_path("1.3.0").is_file()  # the bad build is still on disk
    layout.current_file.write_text('{"version": "1.3')  # torn write / disk trouble
    host.run(threading.Event(), max_runs=2)
    assert _runs(layout)[-3:] == ["1.0.0", "1.0.0", "1.0.0"]
    pointer = read_pointer(layout.current_file)
    assert pointer is not None and pointer.version == "1.0.0"
    assert "rolled back here" in (layout.base / "decisions.log").read_text().splitlines()[-1]
    notices = (layout.base / "notices.log").read_text().splitlines()
    assert len(notices) == 1 and "version 1.3.0 failed 3 starts" in notices[0]
