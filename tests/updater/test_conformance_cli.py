"""The tuf-conformance client CLI (CLIENT-CLI.md) over our repository, as a real subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.updater.support import HOST_APP, HttpRepo, RepoSim, add_delegation

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
                "--target-name", f"{HOST_APP}-1.1.0.tar.gz",
                "--target-base-url", f"{http_repo.url}/targets", "--target-dir", str(targets),
                "download"]
    assert _cli(*download) == 0
    assert (targets / f"{HOST_APP}-1.1.0.tar.gz").read_bytes() == (
        sim.repo_dir / "targets" / f"{HOST_APP}-1.1.0.tar.gz"
    ).read_bytes()
    http_repo.requests.clear()
    assert _cli(*download) == 0
    assert not http_repo.fetched(f"{HOST_APP}-1.1.0.tar.gz")  # cached, hashes matched


def test_refresh_and_download_fail_with_exit_1_on_attacks(
    tmp_path: Path, sim: RepoSim, http_repo: HttpRepo
) -> None:
    meta, targets = tmp_path / "meta", tmp_path / "targets"
    assert _cli("--metadata-dir", str(meta), "init",
                str(sim.repo_dir / "metadata" / "root.json")) == 0
    url = f"{http_repo.url}/metadata"
    archive = sim.repo_dir / "targets" / f"{HOST_APP}-1.1.0.tar.gz"
    archive.write_bytes(archive.read_bytes()[:-1] + b"x")
    common = ["--metadata-dir", str(meta), "--metadata-url", url,
              "--target-base-url", f"{http_repo.url}/targets", "--target-dir", str(targets)]
    assert _cli(*common, "--target-name", f"{HOST_APP}-1.1.0.tar.gz", "download") == 1
    assert _cli(*common, "--target-name", "not-listed.bin", "download") == 1
    assert not (targets / f"{HOST_APP}-1.1.0.tar.gz").exists()
    (sim.repo_dir / "metadata" / "timestamp.json").write_text("{}")
    assert _cli("--metadata-dir", str(meta), "--metadata-url", url, "refresh") == 1


def _download(tmp_path: Path, http_repo: HttpRepo, *names: str) -> int:
    args = ["--metadata-dir", str(tmp_path / "meta"), "--metadata-url",
            f"{http_repo.url}/metadata", "--target-base-url", f"{http_repo.url}/targets",
            "--target-dir", str(tmp_path / "targets")]
    for name in names:
        args += ["--target-name", name]
    return _cli(*args, "download")


def _init(tmp_path: Path, sim: RepoSim) -> None:
    assert _cli("--metadata-dir", str(tmp_path / "meta"), "init",
                str(sim.repo_dir / "metadata" / "root.json")) == 0


def test_repeated_target_names_download_in_order_and_stop_at_the_first_failure(
    tmp_path: Path, sim: RepoSim, http_repo: HttpRepo
) -> None:
    _init(tmp_path, sim)
    assert _download(tmp_path, http_repo, f"{HOST_APP}-1.2.0.tar.gz",
                     f"{HOST_APP}-1.1.0.tar.gz") == 0
    fetched = [r for r in http_repo.requests if r.startswith("/targets/")]
    assert fetched == [f"/targets/{HOST_APP}-1.2.0.tar.gz", f"/targets/{HOST_APP}-1.1.0.tar.gz"]

    http_repo.requests.clear()
    assert _download(tmp_path, http_repo, f"{HOST_APP}-1.0.0.tar.gz", "not-listed.bin",
                     f"{HOST_APP}-1.1.0.patch") == 1
    assert (tmp_path / "targets" / f"{HOST_APP}-1.0.0.tar.gz").is_file()
    assert not http_repo.fetched(f"{HOST_APP}-1.1.0.patch")  # stopped at the unlisted name


def test_a_delegated_target_is_verified_through_its_delegation(
    tmp_path: Path, sim: RepoSim, http_repo: HttpRepo
) -> None:
    # delegations are verified as the specification says (no longer refused): a target only a
    # delegated role lists downloads when that role is signed by the key its delegator names
    _init(tmp_path, sim)
    add_delegation(sim, "tools", ["tool-*"], {"tool-1.bin": b"a delegated target\n"})
    assert _download(tmp_path, http_repo, "tool-1.bin") == 0
    assert (tmp_path / "targets" / "tool-1.bin").read_bytes() == b"a delegated target\n"
    assert http_repo.fetched("/metadata/tools.json")
    assert (tmp_path / "meta" / "tools.json").is_file()


def test_a_delegated_role_signed_by_another_key_is_rejected(
    tmp_path: Path, sim: RepoSim, http_repo: HttpRepo
) -> None:
    _init(tmp_path, sim)
    add_delegation(sim, "tools", ["tool-*"], {"tool-1.bin": b"forged\n"},
                   signed_by=sim.root / "keys" / "snapshot")
    assert _download(tmp_path, http_repo, "tool-1.bin") == 1
    assert not (tmp_path / "targets" / "tool-1.bin").exists()
    assert not http_repo.fetched("/targets/tool-1.bin")


def test_a_target_outside_the_delegated_paths_is_not_found_through_the_delegation(
    tmp_path: Path, sim: RepoSim, http_repo: HttpRepo
) -> None:
    _init(tmp_path, sim)
    add_delegation(sim, "tools", ["tool-*"], {"other-1.bin": b"not the role's to sign\n"})
    assert _download(tmp_path, http_repo, "other-1.bin") == 1
    assert not http_repo.fetched("/metadata/tools.json")
    assert not http_repo.fetched("/targets/other-1.bin")
