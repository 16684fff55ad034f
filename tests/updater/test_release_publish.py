"""Publishing what agents can read: a folder a web server running as another user can serve, S3
objects with the right Content-Type and Cache-Control, immutable objects never replaced, and a
`status` that says what is not published."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.fixtures.build_scripts import load_build_script
from tests.updater.support import (
    ReleaseCli,
    install_from_repository,
    make_elf_bundle,
    release_cli,
)
from updater.agent_gate import InstalledGate
from updater.gate import GateAction
from updater.layout import Layout
from updater.policy import LINUX, target_app
from updater.repo.publish import IMMUTABLE, SHORT_LIVED
from updater.repo.repository import Repository

release = load_build_script("release", "release_publish")
APP = target_app(LINUX)


@pytest.fixture
def cli(tmp_path: Path) -> ReleaseCli:
    cli = release_cli(release, tmp_path)
    for version in ("1.0.0", "1.1.0"):
        bundle = make_elf_bundle(tmp_path / "bundles", version)
        assert cli("add", "--version", version, "--bundle", str(bundle), "--platform", LINUX) == 0
    return cli


@pytest.fixture
def world_dir() -> Iterator[Path]:
    """A folder another user can reach (pytest's tmp_path is private to its owner)."""
    folder = Path(tempfile.mkdtemp(prefix="r4agent-publish-"))
    os.chmod(folder, 0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _serve_as_nobody(root: Path) -> tuple[subprocess.Popen[str], str]:
    """python's http.server run as `nobody` (setpriv), on a loopback port it picks itself."""
    proc = subprocess.Popen(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "/usr/bin/python3",
         "-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory", str(root)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd="/")
    assert proc.stdout is not None
    line = proc.stdout.readline()  # "Serving HTTP on 127.0.0.1 port N (...)"
    match = re.search(r"port (\d+)", line)
    if match is None:
        proc.kill()
        pytest.fail(f"http.server did not start as nobody: {line!r}")
    return proc, f"http://127.0.0.1:{match[1]}"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0,
                    reason="switching to the unprivileged user `nobody` needs root")
def test_a_published_folder_is_served_by_a_web_server_running_as_another_user(
    cli: Any, tmp_path: Path, world_dir: Path
) -> None:
    # every published file was 0600: a web server running as another user answered 403
    dest = world_dir / "updates"
    old_umask = os.umask(0o077)  # a strict umask must not make them private either
    try:
        assert cli("--publish", str(dest), "publish") == 0
    finally:
        os.umask(old_umask)
    for path in [dest, *dest.rglob("*")]:
        want = 0o755 if path.is_dir() else 0o644
        assert stat.S_IMODE(path.stat().st_mode) == want, path

    server, url = _serve_as_nobody(dest)
    try:
        repo = Repository(cli.repo, cli.keys)
        layout = Layout(tmp_path / "pd")
        install_from_repository(repo, layout, "1.0.0", app=APP)
        gate = InstalledGate(layout, "1.0.0", url, root_seed=repo.root_bytes(), platform=LINUX)
        decision = gate.ensure("1.1.0")
        assert decision.action is GateAction.RESTART_INTO_NEW_VERSION, decision.reason
    finally:
        server.kill()
        server.wait(timeout=30)


def test_s3_objects_carry_content_type_and_cache_control_by_kind(
    cli: Any, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "eu-west-2",
                        "AWS_ENDPOINT_URL_S3": s3_endpoint}.items():
        monkeypatch.setenv(name, value)
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="headers",
                     CreateBucketConfiguration={"LocationConstraint": "eu-west-2"})
    assert cli("--publish", "s3://headers/r4agent", "publish") == 0

    def head(key: str) -> tuple[str, str]:
        got = s3.head_object(Bucket="headers", Key=f"r4agent/{key}")
        return got["ContentType"], got.get("CacheControl", "")

    for key in ("timestamp.json", "snapshot.json", "targets.json", "root.json"):
        assert head(f"metadata/{key}") == ("application/json", SHORT_LIVED), key
    assert head("metadata/1.root.json") == ("application/json", IMMUTABLE)
    assert head(f"targets/{APP}-1.1.0.tar.gz") == ("application/gzip", IMMUTABLE)
    assert head(f"targets/{APP}-1.1.0.patch") == ("application/octet-stream", IMMUTABLE)


def test_replacing_a_published_target_with_other_bytes_is_refused(
    cli: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # caches keep immutable objects for a year: agents would get bytes that fail the hash
    dest = tmp_path / "published"
    assert cli("--publish", str(dest), "publish") == 0
    published = dest / "targets" / f"{APP}-1.1.0.tar.gz"
    published.write_bytes(b"another build under the same name")
    before = (dest / "metadata" / "timestamp.json").read_bytes()
    assert cli("resign-online") == 0
    capsys.readouterr()
    assert cli("--publish", str(dest), "publish") == 1
    assert "never change" in capsys.readouterr().err
    assert (dest / "metadata" / "timestamp.json").read_bytes() == before  # nothing uploaded


def test_status_lists_versions_policy_expiries_and_what_is_not_published(
    cli: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "published"
    capsys.readouterr()
    assert cli("status", "--against", str(dest)) == 0
    out = capsys.readouterr().out
    assert "nothing published at" in out and "run `release.py publish" in out
    assert f"1.1.0      installable      channel stable   {APP}-1.1.0.tar.gz +patch" in out
    assert "win-amd64: 0 release(s)" in out and "expiries:" in out and "timestamp" in out

    assert cli("--publish", str(dest), "publish") == 0
    assert cli("raise-floor", "1.1.0") == 0  # without --publish
    assert "not published" in capsys.readouterr().out
    assert cli("list", "--against", str(dest)) == 0
    out = capsys.readouterr().out
    assert "floor 1.1.0" in out and "below the floor" in out
    assert "not published to" in out and "metadata/targets.json (changed)" in out

    assert cli("--publish", str(dest), "publish") == 0
    capsys.readouterr()
    assert cli("status", "--against", str(dest)) == 0
    assert "up to date with the local repository" in capsys.readouterr().out
    assert cli("status", "--publish", str(dest)) == 1  # status never uploads
