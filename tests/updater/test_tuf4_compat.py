"""Both sides of the move from tuf 4 to tuf 7 keep working with each other.

- Agents already installed run tuf 4.0.0 (pinned by tufup 0.10.0): they must keep reading what
  the release side now writes (signed on tuf 7), patches included. They are played by
  tests/updater/tuf4_client/read_repo.py in a throwaway venv with exactly their pins.
- A repository written by the tuf-4-era release tool (tests/updater/fixtures/tuf4-era-repo) must
  stay readable by the new client, and today's release tool must be able to go on with it.
- A downgrade runs a tuf 4 build on the metadata folder a tuf 7 build left, and back.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.updater.support import (
    HttpRepo,
    RepoSim,
    install_from_repository,
    make_bundle,
    make_repo,
    serve,
)
from updater.agent_gate import InstalledGate
from updater.gate import GateAction
from updater.layout import Layout
from updater.policy import WINDOWS, parse_version, target_apps
from updater.repo.repository import Repository
from updater.tuf_client import TufClient

REPO_ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
TUF4_CLIENT = HERE / "tuf4_client"
FIXTURE = HERE / "fixtures" / "tuf4-era-repo"


@pytest.fixture(scope="session")
def tuf4_python() -> Path:
    """The interpreter of a venv with the tuf 4 agents' update client (made once, cached)."""
    spec = importlib.util.spec_from_file_location("freeze_build", REPO_ROOT / "build" / "freeze.py")
    assert spec is not None and spec.loader is not None
    freeze = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(freeze)
    python: Path = freeze.clean_build_python(TUF4_CLIENT / "requirements.txt")
    return python


def _tuf4_read(python: Path, metadata_dir: Path, url: str, targets_dir: Path) -> dict[str, Any]:
    out = subprocess.run(
        [str(python), str(TUF4_CLIENT / "read_repo.py"), str(metadata_dir), f"{url}/metadata/",
         f"{url}/targets/", str(targets_dir)],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def _seeded(metadata_dir: Path, root: bytes) -> Path:
    metadata_dir.mkdir(parents=True)
    (metadata_dir / "root.json").write_bytes(root)
    return metadata_dir


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _custom(repo: Repository, name: str) -> Any:
    return repo.load("targets").signed.targets[name].unrecognized_fields["custom"]


@pytest.fixture
def win_sim(tmp_path: Path) -> RepoSim:
    """A repository of Windows releases (the installed tuf 4 agents are Windows agents), listed
    under the platform names and the plain ones those agents read."""
    sim = make_repo(tmp_path / "release")
    sim.platform = WINDOWS
    for version in ("1.0.0", "1.1.0", "1.2.0"):
        sim.add(version)
    return sim


def test_agents_on_tuf4_read_what_the_new_release_side_writes_patches_included(
    tmp_path: Path, win_sim: RepoSim, tuf4_python: Path
) -> None:
    sim = win_sim
    v1_root = (sim.repo_dir / "metadata" / "1.root.json").read_bytes()
    sim.repo.rotate_key("root1", "root4")  # a root chain to follow, signed on tuf 7
    metadata = _seeded(tmp_path / "metadata", v1_root)

    for http_repo in serve(sim.repo_dir):
        seen = _tuf4_read(tuf4_python, metadata, http_repo.url, tmp_path / "targets")

    assert seen["root_version"] == 2
    published = sorted(p.name for p in (sim.repo_dir / "targets").iterdir())
    assert sorted(seen["targets"]) == published
    for name, target in seen["targets"].items():
        assert target["sha256"] == _sha256(sim.repo_dir / "targets" / name)
        assert target["custom"] == _custom(sim.repo, name)
    assert seen["targets"]["r4agent-1.1.0.tar.gz"]["custom"]["user"] == {
        "revoked": False, "channel": "stable"}
    # the old client's patch route works, and tufup's own Patcher makes the very same patches
    assert seen["patched"] == {"1.1.0": True, "1.2.0": True}
    for name in ("r4agent-1.1.0.patch", "r4agent-1.2.0.patch"):
        assert seen["tufup_patches"][name]["sha256"] == _sha256(sim.repo_dir / "targets" / name)
        assert seen["tufup_patches"][name]["custom"] == _custom(sim.repo, name)["tufup"]
    # the same builds under the Windows platform's names, which those agents leave alone
    for name in ("r4agent-1.2.0.tar.gz", "r4agent-1.2.0.patch"):
        platform_name = name.replace("r4agent-", "r4agent_win_amd64-")
        assert _sha256(sim.repo_dir / "targets" / platform_name) == _sha256(
            sim.repo_dir / "targets" / name)


@pytest.fixture
def tuf4_era(tmp_path: Path) -> Iterator[tuple[Repository, HttpRepo]]:
    """A private copy of the repository the tuf-4-era release tool wrote, served over HTTP."""
    shutil.copytree(FIXTURE, tmp_path / "fixture")
    repo = Repository(tmp_path / "fixture" / "repo", tmp_path / "fixture" / "TEST-KEYS-DO-NOT-USE")
    for served in serve(repo.repo_dir):
        yield repo, served


def test_new_agents_update_through_a_repository_the_tuf4_release_tool_wrote(
    tmp_path: Path, tuf4_era: tuple[Repository, HttpRepo]
) -> None:
    repo, http_repo = tuf4_era
    layout = Layout(tmp_path / "ProgramData")
    install_from_repository(repo, layout, "1.0.0", app="r4agent")
    v1_root = (repo.metadata_dir / "1.root.json").read_bytes()
    (layout.metadata_dir / "root.json").write_bytes(v1_root)  # an exe with the first root

    # a Windows agent (the plain names are Windows builds) on the platform-aware client
    gate = InstalledGate(layout, "1.0.0", http_repo.url, root_seed=v1_root, platform=WINDOWS)
    decision = gate.ensure("1.1.0")

    assert decision.action is GateAction.RESTART_INTO_NEW_VERSION, decision.reason
    assert "via patch" in decision.reason  # the patch tufup's Patcher made then still applies
    assert http_repo.fetched("/targets/r4agent-1.1.0.patch")
    assert layout.exe_path("1.1.0").read_text().endswith("echo 'r4agent 1.1.0'\n")


def test_the_new_release_tool_goes_on_with_a_tuf4_era_repository_for_both_clients(
    tmp_path: Path, tuf4_era: tuple[Repository, HttpRepo], tuf4_python: Path
) -> None:
    repo, http_repo = tuf4_era
    v1_root = (repo.metadata_dir / "1.root.json").read_bytes()
    # the same (securesystemslib 0.x) key files sign on; a new key joins in that format
    repo.add_bundle(make_bundle(tmp_path / "bundles", "1.2.0"), "1.2.0", platform=WINDOWS)
    repo.rotate_key("root2", "root5")
    repo.resign_online()

    seen = _tuf4_read(tuf4_python, _seeded(tmp_path / "tuf4-meta", v1_root), http_repo.url,
                      tmp_path / "tuf4-targets")
    assert seen["root_version"] == 3
    assert seen["patched"] == {"1.1.0": True, "1.2.0": True}
    assert seen["tufup_patches"]["r4agent-1.2.0.patch"]["sha256"] == _sha256(
        repo.targets_dir / "r4agent-1.2.0.patch")

    client = TufClient(_seeded(tmp_path / "tuf7-meta", v1_root), tmp_path / "tuf7-targets",
                       f"{http_repo.url}/metadata/", f"{http_repo.url}/targets/",
                       app=target_apps(WINDOWS))
    catalog = client.refresh()
    assert sorted(str(v) for v in catalog.releases) == ["1.0.0", "1.1.0", "1.2.0"]
    # 1.2.0 from its platform name, the releases made before platform names from the plain ones
    assert catalog.releases[parse_version("1.2.0")].archive.path == "r4agent_win_amd64-1.2.0.tar.gz"
    assert catalog.releases[parse_version("1.1.0")].archive.path == "r4agent-1.1.0.tar.gz"
    assert catalog.patches[parse_version("1.2.0")].artifact.path == "r4agent_win_amd64-1.2.0.patch"
    assert str(catalog.effective_floor) == "1.0.0"
    assert json.loads((tmp_path / "tuf7-meta" / "root.json").read_bytes())["signed"][
        "version"] == 3


def test_a_metadata_folder_goes_from_a_tuf7_build_to_a_tuf4_build_and_back(
    tmp_path: Path, sim: RepoSim, http_repo: HttpRepo, tuf4_python: Path
) -> None:
    # a downgrade runs a tuf 4 build on the folder a tuf 7 build left (root.json a link into
    # root_history/), an upgrade the other way round; root rotations in between
    metadata = _seeded(tmp_path / "metadata", sim.repo.root_bytes())

    def tuf7_refresh() -> None:
        TufClient(metadata, tmp_path / "targets", f"{http_repo.url}/metadata/",
                  f"{http_repo.url}/targets/").refresh()

    def root_version() -> int:
        version: int = json.loads((metadata / "root.json").read_bytes())["signed"]["version"]
        return version

    tuf7_refresh()
    sim.repo.rotate_key("timestamp", "timestamp-2")
    assert _tuf4_read(tuf4_python, metadata, http_repo.url, tmp_path / "t4")["root_version"] == 2
    assert root_version() == 2
    sim.repo.rotate_key("root1", "root4")
    tuf7_refresh()
    assert root_version() == 3
    assert _tuf4_read(tuf4_python, metadata, http_repo.url, tmp_path / "t4")["root_version"] == 3
