"""Agent side of a rollback: which quarantined builds the gate refuses (soft entries expire, an
older host's pointer-only entries hold), the rollback reported to the error service exactly once,
and a manually started other version that must not move or prune what the service runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.updater.support import HOST_APP, HttpRepo, RepoSim, gate, pointer_version
from updater.gate import GateAction
from updater.layout import Layout
from updater.state import (
    CurrentPointer,
    PointerState,
    Quarantine,
    QuarantineEntry,
    read_pointer,
    write_pointer,
    write_quarantine,
)


def _sha(sim: RepoSim, version: str) -> str:
    target = sim.repo.load("targets").signed.targets[f"{HOST_APP}-{version}.tar.gz"]
    return str(target.hashes["sha256"])


def _rolled_back(layout: Layout, sim: RepoSim, until: datetime | None, *, file: bool = True,
                 reason: str = "version 1.1.0 did not confirm in 6 runs (last: exit 75 "
                               "(TRANSIENT_FAILURE)); rolled back to 1.0.0") -> None:
    """Leave the layout as the host does after rolling 1.1.0 back to 1.0.0."""
    sha = _sha(sim, "1.1.0")
    write_pointer(layout.current_file, CurrentPointer(
        "1.0.0", "1.1.0", PointerState.ROLLED_BACK, 0, reason, {"1.1.0": sha}))
    if file:
        at = datetime.now(UTC) - timedelta(hours=1)
        write_quarantine(layout.quarantine_file,
                         Quarantine({"1.1.0": QuarantineEntry(sha, reason, at, until)}))


def test_soft_quarantine_in_force_is_refused(
    layout: Layout, sim: RepoSim, http_repo: HttpRepo
) -> None:
    _rolled_back(layout, sim, until=datetime.now(UTC) + timedelta(hours=23))
    decision = gate(layout, "1.0.0", http_repo.url, sim).ensure("1.1.0")
    assert decision.action is GateAction.CARRY_ON and "rolled back here" in decision.reason


def test_expired_soft_quarantine_lets_the_version_be_tried_again(
    layout: Layout, sim: RepoSim, http_repo: HttpRepo
) -> None:
    # the backend was down right after the update: a day later 1.1.0 gets another chance,
    # even before the host has tidied the pointer's mirror
    _rolled_back(layout, sim, until=datetime.now(UTC) - timedelta(minutes=1))
    decision = gate(layout, "1.0.0", http_repo.url, sim).ensure("1.1.0")
    assert decision.action is GateAction.RESTART_INTO_NEW_VERSION, decision.reason


def test_pointer_only_quarantine_from_an_older_host_still_holds(
    layout: Layout, sim: RepoSim, http_repo: HttpRepo
) -> None:
    _rolled_back(layout, sim, until=None, file=False)
    decision = gate(layout, "1.0.0", http_repo.url, sim).ensure("1.1.0")
    assert "rolled back here" in decision.reason


def test_unreadable_quarantine_file_falls_back_to_the_pointers_copy(
    layout: Layout, sim: RepoSim, http_repo: HttpRepo
) -> None:
    _rolled_back(layout, sim, until=None)
    layout.quarantine_file.write_text("{not json")
    decision = gate(layout, "1.0.0", http_repo.url, sim).ensure("1.1.0")
    assert "rolled back here" in decision.reason


def test_a_rollback_is_reported_once_by_the_version_the_service_runs(
    layout: Layout, sim: RepoSim, http_repo: HttpRepo
) -> None:
    _rolled_back(layout, sim, until=None)
    assert gate(layout, "1.1.0", http_repo.url, sim).confirm_running() is None  # not the service
    notice = gate(layout, "1.0.0", http_repo.url, sim).confirm_running()
    assert notice is not None and "version 1.1.0 did not confirm in 6 runs" in notice
    assert gate(layout, "1.0.0", http_repo.url, sim).confirm_running() is None  # marked
    assert layout.reported_rollbacks_file.is_file()


def test_a_rollback_by_an_older_host_recorded_only_in_the_pointer_is_reported_once(
    layout: Layout, sim: RepoSim, http_repo: HttpRepo
) -> None:
    _rolled_back(layout, sim, until=None, file=False,
                 reason="version 1.1.0 failed 3 starts before confirming (last: exit 1 (CRASH)); "
                        "rolled back to 1.0.0")
    notice = gate(layout, "1.0.0", http_repo.url, sim).confirm_running()
    assert notice is not None and "failed 3 starts" in notice
    assert gate(layout, "1.0.0", http_repo.url, sim).confirm_running() is None


def test_a_manually_started_older_version_neither_moves_nor_prunes_the_service(
    layout: Layout, sim: RepoSim, http_repo: HttpRepo
) -> None:
    # the service runs 1.1.0 (previous 1.0.0); someone starts the 1.0.0 exe by hand
    gate(layout, "1.0.0", http_repo.url, sim).ensure("1.1.0")
    gate(layout, "1.1.0", http_repo.url, sim).confirm_running()
    before = read_pointer(layout.current_file)
    http_repo.requests.clear()

    manual = gate(layout, "1.0.0", http_repo.url, sim)
    decision = manual.ensure("1.2.0")
    manual.confirm_running()

    assert decision.action is GateAction.CARRY_ON and "report only" in decision.reason
    assert read_pointer(layout.current_file) == before and pointer_version(layout) == "1.1.0"
    assert layout.installed_versions() == ["1.0.0", "1.1.0"]
    assert http_repo.requests == []
