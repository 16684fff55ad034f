"""`release windows`: sign the exe, check it, build and sign the MSI, add the signed build — in
that order, with the signing passphrase from the environment only. The freeze is Wine's (the
Wine suite runs it, tests/windows); here an already frozen real PE32+ stands in (`--exe`)."""

from __future__ import annotations

import gzip
import hashlib
import io
import subprocess
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.build_scripts import load_build_script
from tests.fixtures.code_signing import make_signing_cert
from tests.updater.support import real_windows_exe
from updater.policy import APP_NAME, WINDOWS, target_app
from updater.repo import authenticode
from updater.repo.programs import Ran, run_program
from updater.repo.repository import Repository

release = load_build_script("release", "release_windows_cli")
VERSION = "1.1.0"  # real_windows_exe()'s embedded version
SIGN_PASSPHRASE = "signing key passphrase 42"


@pytest.fixture(scope="module")
def identity(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A throwaway code-signing certificate whose key is encrypted (as a release key is)."""
    key, cert = make_signing_cert(tmp_path_factory.mktemp("codesign"), SIGN_PASSPHRASE)
    return cert, key


@pytest.fixture
def cli(tmp_path: Path, identity: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> Any:
    cert, key = identity
    monkeypatch.setenv(authenticode.ENV_CERT, str(cert))
    monkeypatch.setenv(authenticode.ENV_KEY, str(key))
    monkeypatch.setenv(authenticode.ENV_PASSPHRASE, SIGN_PASSPHRASE)
    monkeypatch.delenv(authenticode.ENV_PASSPHRASE_FILE, raising=False)
    repo, keys = tmp_path / "repo", tmp_path / "keys"
    Repository.create_keys(keys)
    out = tmp_path / "out"

    def run(*args: str) -> int:
        code: int = release.main([
            "--repo", str(repo), "--keys", str(keys), "release", "windows", "--exe",
            str(real_windows_exe()), "--message-dll",
            str(real_windows_exe().with_name("w64.exe")), "--ca-file", str(cert), "--out",
            str(out), *args])
        return code

    assert release.main(["--repo", str(repo), "--keys", str(keys), "init"]) == 0
    run.repo, run.keys, run.out, run.cert = repo, keys, out, cert  # type: ignore[attr-defined]
    return run


def _verify(path: Path, cert: Path) -> bool:
    done = subprocess.run(["osslsigncode", "verify", "-CAfile", str(cert), "-in", str(path)],
                          capture_output=True, timeout=120, check=False)
    return done.returncode == 0


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_release_windows_signs_the_exe_and_the_msi_and_adds_the_signed_build(cli: Any) -> None:
    assert cli("--version", VERSION) == 0
    exe, msi = cli.out / "bundle" / "r4agent.exe", cli.out / f"r4agent-{VERSION}.msi"
    assert _verify(exe, cli.cert) and _verify(msi, cli.cert)
    assert not _verify(real_windows_exe(), cli.cert)  # the input was unsigned
    targets = Repository(cli.repo, cli.keys).load("targets").signed.targets
    names = {f"{target_app(WINDOWS)}-{VERSION}.tar.gz", f"{APP_NAME}-{VERSION}.tar.gz"}
    assert set(targets) == names
    for name in names:  # the archive agents install holds exactly the signed exe
        archive = (cli.repo / "targets" / name).read_bytes()
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(archive))) as tar:
            member = tar.extractfile("r4agent.exe")
            assert member is not None
            assert hashlib.sha256(member.read()).digest() == hashlib.sha256(
                exe.read_bytes()).digest()


def test_release_windows_of_an_exe_with_another_version_builds_and_adds_nothing(
    cli: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _tree(cli.repo)
    assert cli("--version", "1.2.0") == 1
    assert "is version 1.1.0, not --version 1.2.0" in capsys.readouterr().err
    assert _tree(cli.repo) == before
    assert not list(cli.out.glob("*.msi"))  # refused before the MSI


def test_a_wrong_signing_passphrase_signs_and_adds_nothing(
    cli: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(authenticode.ENV_PASSPHRASE, "not it")
    before = _tree(cli.repo)
    assert cli("--version", VERSION) == 1
    assert "r4agent.exe not signed" in capsys.readouterr().err
    assert _tree(cli.repo) == before


def test_release_windows_without_a_signing_identity_is_refused_with_what_to_give(
    cli: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(authenticode.ENV_CERT)
    assert cli("--version", VERSION) == 1
    assert "--sign-cert and --sign-key" in capsys.readouterr().err


def test_release_windows_dry_run_writes_nothing(
    cli: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _tree(cli.repo)
    assert cli("--version", VERSION, "--dry-run") == 0
    out = capsys.readouterr().out
    assert "would take" in out and "build and sign the MSI" in out
    assert f"would publish targets/{target_app(WINDOWS)}-{VERSION}.tar.gz" in out
    assert _tree(cli.repo) == before and not cli.out.exists()


def test_the_signing_passphrase_never_reaches_a_command_line(
    tmp_path: Path, identity: tuple[Path, Path]
) -> None:
    cert, key = identity
    seen: list[list[str]] = []
    secret_files: list[Path] = []

    def recording(argv: Sequence[str], timeout_s: float) -> Ran:
        seen.append(list(argv))
        if "-readpass" in argv:
            secret = Path(argv[argv.index("-readpass") + 1])
            secret_files.append(secret)
            assert secret.stat().st_mode & 0o077 == 0  # private while it exists
        return run_program(argv, timeout_s)

    exe = tmp_path / "r4agent.exe"
    exe.write_bytes(real_windows_exe().read_bytes())
    identity_ = authenticode.SigningIdentity(cert=cert, key=key, passphrase=SIGN_PASSPHRASE)
    authenticode.sign(exe, identity_, run=recording)
    assert _verify(exe, cert)
    assert seen and all(SIGN_PASSPHRASE not in " ".join(argv) for argv in seen)
    assert SIGN_PASSPHRASE not in repr(identity_)
    assert secret_files and not any(p.exists() for p in secret_files)  # removed after use
