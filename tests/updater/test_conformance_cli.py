"""The tuf-conformance client CLI (CLIENT-CLI.md) over our repository, as a real subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.updater.support import HttpRepo, RepoSim

REPO_ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str) -> int:
    return subprocess.run([sys.executable, "-m", "updater.conformance_cli", *args],
                          cwd=REPO_ROOT, capture_output=True, timeout=120).returncode


def test_init_refresh_download_succeed_and_cache(
    tmp_path: Path, sim: RepoSim, http_repo: HttpRepo
) -> None:
    meta, targets = tmp_path / "meta", tmp_path / "targets"
    root = sim.repo_dir / "metadata" / "root.json"
    assert _cli("--metadata-dir", str(meta), "init", str(root)) == 0
    assert http_repo.requests == []  # init makes no request
    url = f"{http_repo.url}/metadata"
    assert _cli("--metadata-dir", str(meta), "--metadata-url", url, "refresh") == 0
    assert {"root.json", "timestamp.json", "snapshot.json", "targets.json"} <= {
        p.name for p in meta.iterdir()
    }
    download = ["--metadata-dir", str(meta), "--metadata-url", url,
                "--target-name", "r4agent-1.1.0.tar.gz",
                "--target-base-url", f"{http_repo.url}/targets", "--target-dir", str(targets),
                "download"]
    assert _cli(*download) == 0
    assert (targets / "r4agent-1.1.0.tar.gz").read_bytes() == (
        sim.repo_dir / "targets" / "r4agent-1.1.0.tar.gz"
    ).read_bytes()
    http_repo.requests.clear()
    assert _cli(*download) == 0
    assert not http_repo.fetched("r4agent-1.1.0.tar.gz")  # cached, hashes matched


def test_refresh_and_download_fail_with_exit_1_on_attacks(
    tmp_path: Path, sim: RepoSim, http_repo: HttpRepo
) -> None:
    meta, targets = tmp_path / "meta", tmp_path / "targets"
    assert _cli("--metadata-dir", str(meta), "init",
                str(sim.repo_dir / "metadata" / "root.json")) == 0
    url = f"{http_repo.url}/metadata"
    archive = sim.repo_dir / "targets" / "r4agent-1.1.0.tar.gz"
    archive.write_bytes(archive.read_bytes()[:-1] + b"x")
    common = ["--metadata-dir", str(meta), "--metadata-url", url,
              "--target-base-url", f"{http_repo.url}/targets", "--target-dir", str(targets)]
    assert _cli(*common, "--target-name", "r4agent-1.1.0.tar.gz", "download") == 1
    assert _cli(*common, "--target-name", "not-listed.bin", "download") == 1
    assert not (targets / "r4agent-1.1.0.tar.gz").exists()
    (sim.repo_dir / "metadata" / "timestamp.json").write_text("{}")
    assert _cli("--metadata-dir", str(meta), "--metadata-url", url, "refresh") == 1
