"""The service host: restart policy by exit code, back-off, rollback of a crash-looping version,
graceful stop. Pure logic with a fake clock and fake children; then real processes."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agent.clock import FakeClock, SystemClock
from agent.exit_codes import ExitCode
from tests.updater.support import HttpRepo, RepoSim, install_from_repo
from updater.agent_gate import ENV_UPDATE_URL
from updater.host import (
    Host,
    HostEvent,
    HostPolicy,
    RunHistory,
    SubprocessLauncher,
    bootstrap,
    plan_restart,
)
from updater.layout import Layout
from updater.state import CurrentPointer, PointerState, read_pointer, write_pointer

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


def test_transient_failure_of_a_new_version_does_not_count_towards_rollback() -> None:
    plan = plan_restart(ExitCode.TRANSIENT_FAILURE, 1, SWITCHED, RunHistory(), POLICY)
    assert plan.pointer is None and not plan.rollback


def test_policy_caps_the_starts_before_rollback_at_three() -> None:
    with pytest.raises(ValueError):
        HostPolicy(max_starts_before_confirm=4)


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

    def start(self, argv: list[str], env: dict[str, str] | object) -> FakeChild:
        self.started.append(Path(argv[0]).parent.name)
        code, on_start = self.script.pop(0)
        if on_start is not None:
            on_start()
        child = FakeChild(self.clock, code, obeys_stop=self.obeys_stop)
        self.children.append(child)
        return child


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


def test_missing_pointer_recovers_to_the_newest_installed_version(tmp_path: Path) -> None:
    layout = _installed(tmp_path, ["1.0.0", "1.1.0"], CONFIRMED)
    layout.current_file.write_text("{garbage")
    clock, events = FakeClock(), list[HostEvent]()
    launcher = FakeLauncher(clock, [(0, None)])
    host, _ = _host(layout, launcher, clock, events)
    host.run(threading.Event(), max_runs=1)
    assert launcher.started == ["1.1.0"]


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
    pointer = bootstrap(layout, own, "1.0.0")
    assert pointer.version == "1.0.0" and layout.exe_path("1.0.0").read_text() == own.read_text()
    assert bootstrap(layout, own, "9.9.9").version == "1.0.0"  # never overrides a pointer


# ---- real processes: the simulated agent, the real gate, the real host --------------------------


class NoWait:
    def wait(self, stop: threading.Event, seconds: float) -> bool:
        return stop.is_set()


def _real_host(layout: Layout, url: str, events: list[HostEvent]) -> Host:
    import os

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
    tmp_path: Path, sim: RepoSim
) -> None:
    sim.add("1.3.0", crash_before_confirm=True)
    layout = Layout(tmp_path / "pd")
    install_from_repo(sim, layout, "1.0.0")
    (layout.base / "wanted").write_text("1.3.0")
    from tests.updater.support import serve

    events: list[HostEvent] = []
    for http_repo in serve(sim.repo_dir):
        host = _real_host(layout, http_repo.url, events)
        host.run(threading.Event(), max_runs=6)
    # 1.0.0 installs 1.3.0; 1.3.0 fails 3 starts; back on 1.0.0, which refuses to reinstall it
    assert _runs(layout)[:6] == ["1.0.0", "1.3.0", "1.3.0", "1.3.0", "1.0.0", "1.0.0"]
    pointer = read_pointer(layout.current_file)
    assert pointer is not None and pointer.version == "1.0.0"
    assert "rolled back here" in (layout.base / "decisions.log").read_text().splitlines()[-1]
    assert any(e.kind == "rollback" for e in events)
