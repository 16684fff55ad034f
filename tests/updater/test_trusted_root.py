"""The trusted root baked into the exe seeds the metadata folder only when none exists; a newer
root reached through the signed chain is never replaced by the older baked-in one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.updater.support import HttpRepo, RepoSim, gate
from updater.errors import VerificationError
from updater.gate import GateAction
from updater.layout import Layout
from updater.tuf_client import seed_trusted_root


def _root_version(path: Path) -> int:
    version: int = json.loads(path.read_bytes())["signed"]["version"]
    return version


def test_seed_writes_the_baked_root_only_when_none_exists(tmp_path: Path, sim: RepoSim) -> None:
    baked = sim.repo.root_bytes()
    assert seed_trusted_root(tmp_path / "metadata", baked) is True
    assert (tmp_path / "metadata" / "root.json").read_bytes() == baked
    assert seed_trusted_root(tmp_path / "metadata", b"{}") is False


def test_unreadable_root_on_disk_is_replaced_by_the_baked_one(tmp_path: Path, sim: RepoSim) -> None:
    (tmp_path / "root.json").write_text("{truncated")
    assert seed_trusted_root(tmp_path, sim.repo.root_bytes()) is True


def test_no_root_anywhere_is_a_verification_error(tmp_path: Path) -> None:
    with pytest.raises(VerificationError):
        seed_trusted_root(tmp_path, None)


def test_newer_root_on_disk_is_kept_over_an_older_baked_root(
    layout: Layout, sim: RepoSim, http_repo: HttpRepo
) -> None:
    baked_v1 = sim.repo.root_bytes()
    sim.repo.rotate_key("timestamp", "timestamp-2")
    assert gate(layout, "1.0.0", http_repo.url, sim).ensure("1.3.0").action is GateAction.CARRY_ON
    assert _root_version(layout.metadata_dir / "root.json") == 2  # followed the chain

    # an exe with the older root baked in runs the gate: the v2 root stays
    g = gate(layout, "1.0.0", http_repo.url, sim, root_seed=baked_v1)
    assert g.ensure("1.1.0").action is GateAction.RESTART_INTO_NEW_VERSION
    assert _root_version(layout.metadata_dir / "root.json") == 2


def test_the_metadata_folder_holds_no_link_the_installer_would_refuse(
    layout: Layout, sim: RepoSim, http_repo: HttpRepo
) -> None:
    # ngclient 7 makes root.json a symbolic link into root_history/; the MSI's `service prepare`
    # refuses to install over a data tree holding any link, so every later MSI upgrade would stop
    from installer.tree_security import PosixTreeSecurity, is_link, secure_data_tree

    sim.repo.rotate_key("root1", "root4")
    assert gate(layout, "1.0.0", http_repo.url, sim).ensure("1.1.0").action is (
        GateAction.RESTART_INTO_NEW_VERSION)
    root = layout.metadata_dir / "root.json"
    assert not is_link(root) and _root_version(root) == 2
    assert root.read_bytes() == (layout.metadata_dir / "root_history" / "2.root.json").read_bytes()
    secure_data_tree([layout.base], PosixTreeSecurity())  # what the MSI runs: no refusal
