"""Acceptance: move to exactly the version named, up or down, through signed metadata."""

from __future__ import annotations

from tests.updater.support import HOST_APP, HttpRepo, RepoSim, gate, pointer_version
from updater.gate import GateAction
from updater.layout import Layout, install_lock
from updater.staging import smoke_test
from updater.state import InstallState, PointerState, read_pointer, read_record


def test_upgrade_1_0_to_1_1_uses_the_patch(
    layout: Layout, sim: RepoSim, http_repo: HttpRepo
) -> None:
    decision = gate(layout, "1.0.0", http_repo.url, sim).ensure("1.1.0")

    assert decision.action is GateAction.RESTART_INTO_NEW_VERSION, decision.reason
    assert "via patch" in decision.reason
    assert http_repo.fetched(f"/targets/{HOST_APP}-1.1.0.patch")
    assert not http_repo.fetched(f"/targets/{HOST_APP}-1.1.0.tar.gz")
    pointer = read_pointer(layout.current_file)
    assert pointer is not None
    assert (pointer.version, pointer.previous, pointer.state) == ("1.1.0", "1.0.0",
                                                                  PointerState.SWITCHED)
    smoke_test(layout.exe_path("1.1.0"), "1.1.0", 30)
    record = read_record(layout.install_state_file)
    assert record is not None and record.state is InstallState.SWITCHED


def test_upgrade_two_steps_applies_the_patch_chain(
    layout: Layout, sim: RepoSim, http_repo: HttpRepo
) -> None:
    decision = gate(layout, "1.0.0", http_repo.url, sim).ensure("1.2.0")

    assert decision.action is GateAction.RESTART_INTO_NEW_VERSION, decision.reason
    assert http_repo.fetched(f"{HOST_APP}-1.1.0.patch")
    assert http_repo.fetched(f"{HOST_APP}-1.2.0.patch")
    assert pointer_version(layout) == "1.2.0"
    smoke_test(layout.exe_path("1.2.0"), "1.2.0", 30)


def test_downgrade_1_1_to_1_0_uses_the_full_archive(
    layout: Layout, sim: RepoSim, http_repo: HttpRepo
) -> None:
    assert gate(layout, "1.0.0", http_repo.url, sim).ensure("1.1.0").action is (
        GateAction.RESTART_INTO_NEW_VERSION
    )
    new = gate(layout, "1.1.0", http_repo.url, sim)
    new.confirm_running()
    http_repo.requests.clear()

    decision = new.ensure("1.0.0")

    assert decision.action is GateAction.RESTART_INTO_NEW_VERSION, decision.reason
    assert "downgrade" in decision.reason and "full archive" in decision.reason
    assert http_repo.fetched(f"/targets/{HOST_APP}-1.0.0.tar.gz")
    pointer = read_pointer(layout.current_file)
    assert pointer is not None and (pointer.version, pointer.previous) == ("1.0.0", "1.1.0")
    smoke_test(layout.exe_path("1.0.0"), "1.0.0", 30)


def test_pin_to_a_middle_version_while_a_newer_one_exists(
    layout: Layout, sim: RepoSim, http_repo: HttpRepo
) -> None:
    decision = gate(layout, "1.0.0", http_repo.url, sim).ensure("1.1.0")

    assert decision.action is GateAction.RESTART_INTO_NEW_VERSION
    assert pointer_version(layout) == "1.1.0"
    assert not http_repo.fetched("1.2.0.patch") and not http_repo.fetched("1.2.0.tar.gz")
    assert sorted(p.name for p in layout.versions_dir.iterdir()) == ["1.0.0", "1.1.0"]


def test_already_current_is_a_no_op_without_network(
    layout: Layout, sim: RepoSim, http_repo: HttpRepo
) -> None:
    decision = gate(layout, "1.0.0", http_repo.url, sim).ensure("1.0.0")

    assert decision.action is GateAction.CARRY_ON
    assert decision.reason == "already current"
    assert http_repo.requests == []
    assert pointer_version(layout) == "1.0.0"


def test_confirm_marks_the_new_version_good_and_prunes_beyond_two(
    layout: Layout, sim: RepoSim, http_repo: HttpRepo
) -> None:
    gate(layout, "1.0.0", http_repo.url, sim).ensure("1.1.0")
    g11 = gate(layout, "1.1.0", http_repo.url, sim)
    g11.confirm_running()
    g11.ensure("1.2.0")
    gate(layout, "1.2.0", http_repo.url, sim).confirm_running()

    pointer = read_pointer(layout.current_file)
    assert pointer is not None and pointer.state is PointerState.CONFIRMED
    assert layout.installed_versions() == ["1.1.0", "1.2.0"]
    record = read_record(layout.install_state_file)
    assert record is not None and record.state is InstallState.CONFIRMED


def test_confirming_while_an_install_holds_the_lock_does_not_prune_the_folder_it_switches_to(
    layout: Layout, sim: RepoSim, http_repo: HttpRepo
) -> None:
    # an install (say, a manually started agent of the service's version) has moved 1.2.0 into
    # versions/ and is about to flip the pointer; a confirming run pruned it from under it
    layout.version_dir("1.2.0").mkdir()
    layout.exe_path("1.2.0").write_text("the build being switched to")
    with install_lock(layout):  # the OS lock, held on another open file as the install does
        gate(layout, "1.0.0", http_repo.url, sim).confirm_running()
        assert layout.exe_path("1.2.0").is_file()
    gate(layout, "1.0.0", http_repo.url, sim).confirm_running()  # no install: prunes as before
    assert layout.installed_versions() == ["1.0.0"]
