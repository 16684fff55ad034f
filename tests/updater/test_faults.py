"""Faults during an install: SIGKILL at every state, a full disk, a staged exe that fails its
smoke test. Afterwards there is always a runnable, verified version, and a retry succeeds."""

from __future__ import annotations

import errno
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import pytest

from tests.updater.support import HttpRepo, RepoSim, gate, pointer_version
from updater.agent_gate import repository_urls
from updater.gate import GateAction
from updater.install import Installer
from updater.layout import Layout
from updater.staging import RealFileSystem, StagingLimits, smoke_test
from updater.state import read_pointer, read_record
from updater.tuf_client import TufClient

REPO_ROOT = Path(__file__).resolve().parents[2]


def _assert_runnable(layout: Layout, allowed: set[str]) -> str:
    version = pointer_version(layout)
    assert version in allowed
    smoke_test(layout.exe_path(version), version, 30)  # complete and the right build
    return version


@pytest.mark.parametrize("state", ["checked", "downloaded", "staged", "smoke_tested", "switched"])
def test_sigkill_at_every_state_leaves_a_runnable_version_and_a_retry_finishes(
    tmp_path: Path, layout: Layout, sim: RepoSim, http_repo: HttpRepo, state: str
) -> None:
    marker = tmp_path / "paused"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.updater.kill_harness", str(layout.base), http_repo.url,
         "1.0.0", "1.1.0", state, str(marker)],
        cwd=REPO_ROOT,
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None, "harness ended before reaching the state"
            assert time.monotonic() < deadline, "harness never reached the state"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    record = read_record(layout.install_state_file)
    assert record is not None and record.state.value == state

    expected = {"1.1.0"} if state == "switched" else {"1.0.0"}
    _assert_runnable(layout, expected)

    # the next attempt (the agent restarted) cleans up and ends switched to 1.1.0
    decision = gate(layout, "1.0.0", http_repo.url, sim).ensure("1.1.0")
    assert decision.action is GateAction.RESTART_INTO_NEW_VERSION, decision.reason
    _assert_runnable(layout, {"1.1.0"})
    assert layout.leftovers() == []


class FullDisk(RealFileSystem):
    """Writes succeed until `budget` bytes, then ENOSPC (like a disk filling up mid-extract)."""

    def __init__(self, budget: int) -> None:
        self.budget = budget

    def write_file(self, path: Path, source: IO[bytes], mode: int) -> None:
        data = source.read()
        if len(data) > self.budget:
            path.write_bytes(data[: self.budget])  # a partial file, as a real full disk leaves
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        self.budget -= len(data)
        super().write_file(path, io.BytesIO(data), mode)


def _installer(layout: Layout, url: str, **kwargs: object) -> Installer:
    metadata_url, targets_url = repository_urls(url)
    client = TufClient(layout.metadata_dir, layout.targets_dir, metadata_url, targets_url)
    return Installer(layout, client, **kwargs)  # type: ignore[arg-type]


def test_disk_full_while_staging_fails_cleanly_and_a_retry_succeeds(
    layout: Layout, sim: RepoSim, http_repo: HttpRepo
) -> None:
    outcome = _installer(layout, http_repo.url, fs=FullDisk(budget=1000)).install("1.0.0", "1.1.0")

    assert not outcome.switched and "No space left" in outcome.reason
    assert not outcome.refused  # worth retrying later
    record = read_record(layout.install_state_file)
    assert record is not None and record.state.value == "failed"
    assert layout.leftovers() == [] and layout.installed_versions() == ["1.0.0"]
    _assert_runnable(layout, {"1.0.0"})

    assert _installer(layout, http_repo.url).install("1.0.0", "1.1.0").switched
    _assert_runnable(layout, {"1.1.0"})


@pytest.mark.parametrize("behaviour", [
    {"version_output": "r4agent 9.9.9"},  # a mislabelled build
    {"version_exit": 3},
    {"version_hang": True},
])
def test_staged_exe_failing_its_smoke_test_is_never_switched_to(
    layout: Layout, sim: RepoSim, http_repo: HttpRepo, behaviour: dict[str, Any]
) -> None:
    sim.add("1.3.0", **behaviour)
    installer = _installer(layout, http_repo.url, limits=StagingLimits(smoke_timeout_s=2))
    outcome = installer.install("1.0.0", "1.3.0")

    assert not outcome.switched and "staged exe" in outcome.reason
    record = read_record(layout.install_state_file)
    assert record is not None and record.state.value == "failed"
    assert layout.leftovers() == [] and layout.installed_versions() == ["1.0.0"]
    pointer = read_pointer(layout.current_file)
    assert pointer is not None and pointer.version == "1.0.0"
    _assert_runnable(layout, {"1.0.0"})


def test_staged_build_whose_own_update_path_is_broken_is_never_switched_to(
    layout: Layout, sim: RepoSim, http_repo: HttpRepo
) -> None:
    # it would print its version, start and confirm itself, and then never update again
    sim.add("1.3.0", self_test_broken=True)
    outcome = _installer(layout, http_repo.url).install("1.0.0", "1.3.0")

    assert not outcome.switched and "self-test failed" in outcome.reason
    assert layout.installed_versions() == ["1.0.0"] and pointer_version(layout) == "1.0.0"


def test_a_staged_build_that_lost_its_self_test_command_is_never_switched_to(
    layout: Layout, sim: RepoSim, http_repo: HttpRepo
) -> None:
    # every release has self-test (FIRST_SELF_TEST_VERSION): one that refuses the word would
    # otherwise pass on --version alone (tests/updater/test_staging.py: older builds may)
    sim.add("1.3.0", legacy_cli=True)
    outcome = _installer(layout, http_repo.url).install("1.0.0", "1.3.0")
    assert not outcome.switched and "no self-test command" in outcome.reason
    assert layout.installed_versions() == ["1.0.0"] and pointer_version(layout) == "1.0.0"


def test_a_second_install_while_one_runs_is_refused_and_a_killed_holder_frees_the_lock(
    tmp_path: Path, layout: Layout, sim: RepoSim, http_repo: HttpRepo
) -> None:
    marker = tmp_path / "paused"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.updater.kill_harness", str(layout.base), http_repo.url,
         "1.0.0", "1.1.0", "staged", str(marker)],
        cwd=REPO_ROOT,
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        staging_of_the_first = layout.leftovers()
        decision = gate(layout, "1.0.0", http_repo.url, sim).ensure("1.2.0")
        assert decision.action is GateAction.CARRY_ON
        assert "another install is in progress" in decision.reason
        assert layout.leftovers() == staging_of_the_first  # the second one touched nothing
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    decision = gate(layout, "1.0.0", http_repo.url, sim).ensure("1.2.0")
    assert decision.action is GateAction.RESTART_INTO_NEW_VERSION, decision.reason
    _assert_runnable(layout, {"1.2.0"})
