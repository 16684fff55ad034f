"""build/release.py: the release command and the repository chores, on real repositories, with
throwaway keys, published to a folder and to S3 (moto server over loopback)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.fixtures.build_scripts import load_build_script
from tests.updater.support import (
    HOST_APP,
    ReleaseCli,
    install_from_repository,
    make_elf_bundle,
    release_cli,
    serve,
)
from updater.agent_gate import InstalledGate
from updater.gate import GateAction
from updater.layout import Layout
from updater.policy import LINUX
from updater.repo.publish import S3Destination, plan
from updater.repo.repository import Repository

REPO_ROOT = Path(__file__).resolve().parents[2]


release = load_build_script("release", "release_cli")


@pytest.fixture
def cli(tmp_path: Path) -> ReleaseCli:
    return release_cli(release, tmp_path)


def _release(cli: Any, tmp_path: Path, version: str, *extra: str) -> int:
    """Release a real (Linux ELF) build of `version`: the Linux test platform's names."""
    bundle = make_elf_bundle(tmp_path / "bundles", version)
    code: int = cli("release", "--version", version, "--bundle", str(bundle), "--platform",
                    LINUX, *extra)
    return code


def test_init_makes_root_two_of_three_and_no_delegations(cli: Any) -> None:
    repo = Repository(cli.repo, cli.keys)
    root = repo.load("root").signed
    assert len(root.roles["root"].keyids) == 3 and root.roles["root"].threshold == 2
    assert repo.load("targets").signed.delegations is None


def test_release_adds_archive_patch_and_signed_policy(cli: Any, tmp_path: Path) -> None:
    assert _release(cli, tmp_path, "1.0.0") == 0
    assert _release(cli, tmp_path, "1.1.0", "--floor", "1.0.0", "--channel", "beta") == 0
    targets = Repository(cli.repo, cli.keys).load("targets").signed.targets
    assert set(targets) == {f"{HOST_APP}-1.0.0.tar.gz", f"{HOST_APP}-1.1.0.tar.gz",
                            f"{HOST_APP}-1.1.0.patch"}
    user = targets[f"{HOST_APP}-1.1.0.tar.gz"].unrecognized_fields["custom"]["user"]
    assert user == {"revoked": False, "floor": "1.0.0", "channel": "beta"}


def test_release_refuses_bad_or_non_increasing_versions(cli: Any, tmp_path: Path) -> None:
    assert _release(cli, tmp_path, "1.1.0") == 0
    assert _release(cli, tmp_path, "1.0.0") == 1
    assert _release(cli, tmp_path, "../1.2.0") == 1


def test_missing_keys_are_refused(tmp_path: Path) -> None:
    assert release.main(["--repo", str(tmp_path / "r"), "init"]) == 1


def test_signing_without_the_offline_targets_key_fails(cli: Any, tmp_path: Path) -> None:
    (cli.keys / "targets").unlink()  # only the online keys on this machine
    assert _release(cli, tmp_path, "1.0.0") == 1
    assert cli("resign-timestamp") == 0  # the daily job needs only the timestamp key


def test_dry_run_shows_changes_and_writes_nothing(
    cli: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "published"
    assert cli("--publish", str(dest), "publish") == 0
    before = {p: p.read_bytes() for p in cli.repo.rglob("*") if p.is_file()}
    capsys.readouterr()
    code = cli("release", "--version", "1.0.0", "--bundle",
               str(make_elf_bundle(tmp_path / "b2", "1.0.0")), "--platform", LINUX,
               "--dry-run", "--publish", str(dest))
    out = capsys.readouterr().out
    assert code == 0
    assert f"would publish targets/{HOST_APP}-1.0.0.tar.gz (new)" in out
    assert "would publish metadata/timestamp.json (changed)" in out
    assert {p: p.read_bytes() for p in cli.repo.rglob("*") if p.is_file()} == before
    assert not (dest / "targets" / f"{HOST_APP}-1.0.0.tar.gz").exists()


def test_published_folder_serves_agents_and_revoke_floor_take_effect(
    cli: Any, tmp_path: Path
) -> None:
    dest = tmp_path / "published"
    for version in ("1.0.0", "1.1.0", "1.2.0"):
        assert _release(cli, tmp_path, version) == 0
    assert cli("--publish", str(dest), "revoke", "1.1.0") == 0
    assert cli("--publish", str(dest), "raise-floor", "1.0.0") == 0
    assert cli("raise-floor", "0.9.0") == 1  # never lowered
    repo = Repository(cli.repo, cli.keys)
    layout = Layout(tmp_path / "pd")
    for http in serve(dest):
        install_from_repository(repo, layout, "1.0.0")
        gate = InstalledGate(layout, "1.0.0", http.url, root_seed=repo.root_bytes())
        assert "revoked" in gate.ensure("1.1.0").reason
        assert gate.ensure("1.2.0").action is GateAction.RESTART_INTO_NEW_VERSION


@pytest.mark.parametrize("key", ["root1", "timestamp", "targets"])
def test_rotated_key_is_followed_by_clients_holding_the_old_root(
    cli: Any, tmp_path: Path, key: str
) -> None:
    for version in ("1.0.0", "1.1.0"):
        assert _release(cli, tmp_path, version) == 0
    repo = Repository(cli.repo, cli.keys)
    old_root = repo.root_bytes()
    layout = Layout(tmp_path / "pd")
    install_from_repository(repo, layout, "1.0.0")
    (layout.metadata_dir / "root.json").write_bytes(old_root)
    assert cli("rotate-key", key, f"{key}-new") == 0
    (cli.keys / key).unlink()  # the old private key is gone for good
    assert cli("resign-timestamp") == 0
    for http in serve(cli.repo):
        gate = InstalledGate(layout, "1.0.0", http.url, root_seed=old_root)
        decision = gate.ensure("1.1.0")
        assert decision.action is GateAction.RESTART_INTO_NEW_VERSION, decision.reason
    assert b'"version": 2' in (layout.metadata_dir / "root.json").read_bytes()


def _online_machine(cli: Any, tmp_path: Path) -> Path:
    """A keys folder holding what a timestamp rotation needs: root keys + online keys only."""
    keys = tmp_path / "keys-without-targets"
    keys.mkdir()
    for name in ("root1", "root2", "root3", "snapshot", "timestamp"):
        for suffix in ("", ".pub"):
            (keys / f"{name}{suffix}").write_bytes((cli.keys / f"{name}{suffix}").read_bytes())
    (keys / "targets.pub").write_bytes((cli.keys / "targets.pub").read_bytes())
    return keys


def test_rotating_the_timestamp_key_needs_no_offline_targets_key_and_agents_follow(
    cli: Any, tmp_path: Path
) -> None:
    # it wrote 2.root.json and root.json, then failed ("no private key for the targets role")
    # with timestamp.json still signed by the retired key: a later publish broke every refresh
    for version in ("1.0.0", "1.1.0"):
        assert _release(cli, tmp_path, version) == 0
    repo = Repository(cli.repo, cli.keys)
    old_root, old_targets = repo.root_bytes(), (cli.repo / "metadata" / "targets.json").read_bytes()
    keys = _online_machine(cli, tmp_path)
    args = ["--repo", str(cli.repo), "--keys", str(keys)]
    assert release.main([*args, "rotate-key", "timestamp", "timestamp-new"]) == 0

    assert (cli.repo / "metadata" / "targets.json").read_bytes() == old_targets  # untouched
    layout = Layout(tmp_path / "pd")
    install_from_repository(repo, layout, "1.0.0")
    (layout.metadata_dir / "root.json").write_bytes(old_root)
    for http in serve(cli.repo):
        decision = InstalledGate(layout, "1.0.0", http.url, root_seed=old_root).ensure("1.1.0")
        assert decision.action is GateAction.RESTART_INTO_NEW_VERSION, decision.reason
    assert b'"version": 2' in (layout.metadata_dir / "root.json").read_bytes()
    (keys / "timestamp").unlink()  # the retired key is gone: the daily job signs with the new
    assert release.main([*args, "resign-online"]) == 0


def test_a_rotation_agents_meet_before_its_new_root_is_published_still_verifies(
    cli: Any, tmp_path: Path
) -> None:
    # publish uploads the re-signed roles before the new root: they carry the retired key's
    # signature too, so an agent still on the old root accepts them in that window
    for version in ("1.0.0", "1.1.0"):
        assert _release(cli, tmp_path, version) == 0
    repo = Repository(cli.repo, cli.keys)
    old_root = repo.root_bytes()
    assert cli("rotate-key", "targets", "targets-new") == 0
    mid_publish = tmp_path / "mid-publish"
    shutil.copytree(cli.repo, mid_publish)
    (mid_publish / "metadata" / "2.root.json").unlink()
    (mid_publish / "metadata" / "root.json").write_bytes(old_root)
    layout = Layout(tmp_path / "pd")
    install_from_repository(repo, layout, "1.0.0")
    (layout.metadata_dir / "root.json").write_bytes(old_root)
    for http in serve(mid_publish):
        decision = InstalledGate(layout, "1.0.0", http.url, root_seed=old_root).ensure("1.1.0")
        assert decision.action is GateAction.RESTART_INTO_NEW_VERSION, decision.reason


@pytest.mark.parametrize(("key", "missing"), [
    ("timestamp", ["root2", "root3"]),  # one root key: under the threshold of 2
    ("targets", ["snapshot"]),  # new targets need a new snapshot
    ("root1", ["root2", "root3"]),  # the new root must also carry 2 of the old root keys
])
def test_a_rotation_missing_a_needed_key_is_refused_before_any_file_is_written(
    cli: Any, tmp_path: Path, key: str, missing: list[str]
) -> None:
    assert _release(cli, tmp_path, "1.0.0") == 0
    for name in missing:
        (cli.keys / name).unlink()
    before = [_tree(cli.repo), _tree(cli.keys)]
    assert cli("rotate-key", key, f"{key}-new") == 1
    assert [_tree(cli.repo), _tree(cli.keys)] == before  # not even the new key pair


def test_publish_to_s3_uploads_changes_in_order_and_dry_run_uploads_nothing(
    cli: Any, tmp_path: Path, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "eu-west-2", "AWS_ENDPOINT_URL_S3": s3_endpoint}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="updates",
                     CreateBucketConfiguration={"LocationConstraint": "eu-west-2"})
    assert _release(cli, tmp_path, "1.0.0") == 0

    assert cli("--dry-run", "--publish", "s3://updates/r4agent", "publish") == 0
    assert s3.list_objects_v2(Bucket="updates").get("KeyCount", 0) == 0

    assert cli("--publish", "s3://updates/r4agent", "publish") == 0
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="updates")["Contents"]}
    assert {"r4agent/metadata/timestamp.json", f"r4agent/targets/{HOST_APP}-1.0.0.tar.gz"} <= keys
    dest = S3Destination("updates", "r4agent", s3)
    assert plan(cli.repo, dest) == []  # nothing left to upload
    assert cli("resign-timestamp") == 0
    assert [c.key for c in plan(cli.repo, dest)] == ["metadata/timestamp.json"]
    assert cli("--publish", "s3://updates/r4agent", "publish") == 0
    body = s3.get_object(Bucket="updates", Key="r4agent/metadata/timestamp.json")["Body"].read()
    assert body == (cli.repo / "metadata" / "timestamp.json").read_bytes()


# ---- expiry chores ----------------------------------------------------------------------------


def test_expiries_fails_until_resign_online_and_resign_targets_renew_every_role(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from datetime import UTC, datetime, timedelta

    from tests.updater.support import make_repo

    # a repository last released 80 days ago: targets has 10 of its 90 days left,
    # snapshot and timestamp expired long ago
    sim = make_repo(tmp_path / "release", start=datetime.now(UTC) - timedelta(days=80))
    sim.add("1.0.0")
    sim.add("1.1.0")
    args = ["--repo", str(sim.repo_dir), "--keys", str(sim.root / "keys")]
    capsys.readouterr()

    assert release.main([*args, "expiries"]) == 1
    out = capsys.readouterr().out
    assert "targets" in out and "WARN" in out and "resign-targets" in out
    assert "snapshot" in out and "EXPIRED" in out

    assert release.main([*args, "resign-online"]) == 0
    assert "snapshot version" in capsys.readouterr().out  # it was close: re-signed too
    assert release.main([*args, "expiries"]) == 1  # targets still inside its window
    assert release.main([*args, "resign-targets"]) == 0
    capsys.readouterr()
    assert release.main([*args, "expiries"]) == 0
    assert "WARN" not in capsys.readouterr().out

    layout = Layout(tmp_path / "pd")
    install_from_repository(sim.repo, layout, "1.0.0")
    for http in serve(sim.repo_dir):
        gate = InstalledGate(layout, "1.0.0", http.url, root_seed=sim.repo.root_bytes())
        decision = gate.ensure("1.1.0")
        assert decision.action is GateAction.RESTART_INTO_NEW_VERSION, decision.reason


def test_old_resign_timestamp_name_is_the_daily_online_job(cli: Any, tmp_path: Path) -> None:
    assert _release(cli, tmp_path, "1.0.0") == 0
    before = Repository(cli.repo, cli.keys).load("snapshot").signed.version
    assert cli("resign-timestamp", "--days", "1") == 0
    assert cli("resign-online") == 0
    repo = Repository(cli.repo, cli.keys)
    assert repo.load("snapshot").signed.version == before  # 7 days left: kept
    assert repo.load("timestamp").signed.version >= 4


# ---- signed policy agents can read -------------------------------------------------------------


def _tree(root: Path) -> dict[str, bytes]:
    if not root.exists():
        return {}
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("floor", ["1.0", "01.0.0", "1.0.0-rc1", " 1.0.0"])
def test_release_with_a_floor_agents_cannot_read_is_refused_before_anything_is_written(
    cli: Any, tmp_path: Path, floor: str
) -> None:
    # agents drop an archive whose floor is not canonical: the floor would silently not count
    assert _release(cli, tmp_path, "1.0.0") == 0
    before = _tree(cli.repo)
    assert _release(cli, tmp_path, "1.1.0", "--floor", floor) == 1
    assert _tree(cli.repo) == before


def test_release_with_a_floor_above_every_release_is_refused(cli: Any, tmp_path: Path) -> None:
    assert _release(cli, tmp_path, "1.0.0") == 0
    before = _tree(cli.repo)
    assert _release(cli, tmp_path, "1.1.0", "--floor", "1.2.0") == 1  # 1.1.0 below its own floor
    assert _tree(cli.repo) == before
    assert _release(cli, tmp_path, "1.1.0", "--floor", "1.1.0") == 0


def test_revoking_the_last_installable_release_is_refused(cli: Any, tmp_path: Path) -> None:
    for version in ("1.0.0", "1.1.0"):
        assert _release(cli, tmp_path, version) == 0
    assert cli("raise-floor", "1.1.0") == 0
    before = _tree(cli.repo)
    assert cli("revoke", "1.1.0") == 1  # 1.0.0 is below the floor: nothing would be left
    assert cli("raise-floor", "1.2.0") == 1  # no release at or above it
    assert cli("raise-floor", "1.1") == 1
    assert _tree(cli.repo) == before
    assert cli("revoke", "1.0.0") == 0


def test_release_side_refuses_to_sign_targets_with_delegations(cli: Any, tmp_path: Path) -> None:
    from tuf.api.metadata import DelegatedRole, Delegations  # type: ignore[attr-defined]
    from tuf.api.serialization.json import JSONSerializer

    assert _release(cli, tmp_path, "1.0.0") == 0
    targets_file = cli.repo / "metadata" / "targets.json"
    md = Repository(cli.repo, cli.keys).load("targets")
    md.signed.delegations = Delegations(keys={}, roles={
        "evil": DelegatedRole("evil", [], 1, False, paths=[f"{HOST_APP}-*"])})
    md.to_file(str(targets_file), JSONSerializer(compact=False))  # a hand-edited repository
    before = _tree(cli.repo)
    for command in (["resign-targets"], ["revoke", "1.0.0"], ["raise-floor", "1.0.0"]):
        assert cli(*command) == 1, command
    assert _release(cli, tmp_path, "1.1.0") == 1
    assert _tree(cli.repo) == before


# ---- dry runs write nothing ------------------------------------------------------------------


def _dry_run_dirs() -> set[str]:
    import tempfile

    return {p.name for p in Path(tempfile.gettempdir()).glob("release-dry-run-*")}


def test_every_dry_run_leaves_keys_repository_and_build_caches_unchanged(
    cli: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("R4AGENT_RELEASE_PASSPHRASE", "dry run")
    for version in ("1.0.0", "1.1.0"):
        assert _release(cli, tmp_path, version) == 0
    fresh_repo, fresh_keys = tmp_path / "fresh-repo", tmp_path / "fresh-keys"
    release_cache = REPO_ROOT / ".cache" / "release" / "7.7.7"
    watched = [cli.repo, cli.keys, fresh_repo, fresh_keys, release_cache]
    before = [_tree(d) for d in watched]
    scratch_before = _dry_run_dirs()
    capsys.readouterr()

    fresh = ["--repo", str(fresh_repo), "--offline-keys", str(fresh_keys / "offline"),
             "--online-keys", str(fresh_keys / "online")]
    assert release.main([*fresh, "init", "--create-keys", "--dry-run"]) == 0
    for command in (
        ["rotate-key", "timestamp", "timestamp-new"],
        ["release", "--version", "7.7.7"],  # no --bundle: would freeze; a dry run must not
        ["revoke", "1.1.0"],
        ["raise-floor", "1.1.0"],
        ["resign-online"],
        ["resign-targets"],
    ):
        assert cli(*command, "--dry-run") == 0, command

    out = capsys.readouterr().out
    assert "placeholder bundle" in out and f"would publish targets/{HOST_APP}-7.7.7.tar.gz" in out
    assert [_tree(d) for d in watched] == before
    assert not fresh_keys.exists() and not fresh_repo.exists() and not release_cache.exists()
    assert _dry_run_dirs() == scratch_before  # the scratch copies are gone too
