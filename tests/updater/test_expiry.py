"""Metadata expiry on a quiet repository: the daily online job must keep snapshot and timestamp
fresh for agents (which check expiry against their own clock) without the offline keys. The
repository clock starts days in the past, so agents check the result against the real now."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.updater.support import RepoSim, gate, install_from_repo, make_repo, serve
from updater.gate import GateAction, GateDecision
from updater.layout import Layout

QUIET_DAYS = 9  # longer than the snapshot's 7 days


def _quiet_repository(tmp_path: Path) -> tuple[RepoSim, datetime]:
    start = datetime.now(UTC) - timedelta(days=QUIET_DAYS, minutes=5)
    sim = make_repo(tmp_path / "release", start=start)
    sim.add("1.0.0")
    sim.add("1.1.0")
    # the daily job's machine holds only the online keys
    for offline in ("root1", "root2", "root3", "targets"):
        (sim.root / "keys" / offline).unlink()
    return sim, start


def _agent_asks_for_1_1_0(tmp_path: Path, sim: RepoSim) -> tuple[Layout, GateDecision]:
    layout = Layout(tmp_path / "pd")
    install_from_repo(sim, layout, "1.0.0")
    for http in serve(sim.repo_dir):
        return layout, gate(layout, "1.0.0", http.url, sim).ensure("1.1.0")
    raise AssertionError("no server")


def test_daily_online_resigning_keeps_a_quiet_repository_fresh_for_agents(tmp_path: Path) -> None:
    sim, start = _quiet_repository(tmp_path)
    resigned_snapshot = []
    for day in range(1, QUIET_DAYS + 1):
        sim.now.value = start + timedelta(days=day)
        resigned_snapshot.append(sim.repo.resign_online().snapshot_version is not None)
    assert any(resigned_snapshot) and not all(resigned_snapshot)  # only when close to expiry

    _, decision = _agent_asks_for_1_1_0(tmp_path, sim)
    assert decision.action is GateAction.RESTART_INTO_NEW_VERSION, decision.reason


def test_a_quiet_week_of_timestamp_only_resigning_expires_the_snapshot_for_agents(
    tmp_path: Path,
) -> None:
    sim, start = _quiet_repository(tmp_path)
    for day in range(1, QUIET_DAYS + 1):
        sim.now.value = start + timedelta(days=day)
        sim.repo.resign_timestamp()  # what the daily job used to do

    layout, decision = _agent_asks_for_1_1_0(tmp_path, sim)
    assert decision.action is GateAction.CARRY_ON
    assert "ExpiredMetadataError" in decision.reason
    assert layout.installed_versions() == ["1.0.0"]


def test_expiries_reports_days_left_and_flags_roles_inside_their_window(tmp_path: Path) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    sim = make_repo(tmp_path / "release", start=start)
    sim.now.value = start + timedelta(days=80)
    report = {e.role: e for e in sim.repo.expiries()}
    assert report["root"].left == timedelta(days=285) and not report["root"].warn
    assert report["targets"].left == timedelta(days=10) and report["targets"].warn
    assert report["snapshot"].warn and report["timestamp"].warn  # already expired
    assert not any(e.warn for e in sim.repo.expiries(warn_within_days=-100))


def test_a_daily_timestamp_job_that_misses_a_run_leaves_the_fleet_refreshing_and_warns(
    tmp_path: Path,
) -> None:
    # the job last ran 36 h ago (one run missed): with a 1-day timestamp every agent refused
    # the repository (ExpiredMetadataError), blocking fleet-wide rollbacks too
    start = datetime.now(UTC) - timedelta(hours=36)
    sim = make_repo(tmp_path / "release", start=start)
    sim.add("1.0.0")
    sim.add("1.1.0")
    sim.repo.resign_online()

    _, decision = _agent_asks_for_1_1_0(tmp_path, sim)
    assert decision.action is GateAction.RESTART_INTO_NEW_VERSION, decision.reason

    sim.now.value = None  # the release side's real now: 12 h left, inside the 1-day window
    timestamp = {e.role: e for e in sim.repo.expiries()}["timestamp"]
    assert timedelta(hours=11) < timestamp.left < timedelta(hours=13) and timestamp.warn
    sim.repo.resign_online()  # the job runs again: 2 days left, no warning
    assert not {e.role: e for e in sim.repo.expiries()}["timestamp"].warn
