"""build/release.py refuses, before anything is signed, a bundle an agent could not run — and
says what to do next. Real parts: a gcc-built ELF, a real PE32+ with a version resource, real
Authenticode signatures made and checked by osslsigncode with a throwaway certificate."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.build_scripts import load_build_script
from tests.updater.support import (
    CodeSigning,
    ReleaseCli,
    make_code_signing,
    make_elf_bundle,
    real_windows_exe,
    release_cli,
)
from updater.policy import APP_NAME, LINUX, WINDOWS, target_app
from updater.repo.repository import Repository

release = load_build_script("release", "release_refusals")
WINDOWS_EXE_VERSION = "1.1.0"  # real_windows_exe()'s FileVersion 1.1.0.14


@pytest.fixture
def cli(tmp_path: Path) -> ReleaseCli:
    return release_cli(release, tmp_path)


@pytest.fixture(scope="module")
def signing(tmp_path_factory: pytest.TempPathFactory) -> CodeSigning:
    return make_code_signing(tmp_path_factory.mktemp("codesign"))


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _windows_bundle(root: Path, exe: Path | None = None, *extra: str) -> Path:
    bundle = root / "win-bundle"
    bundle.mkdir(parents=True)
    shutil.copyfile(exe or real_windows_exe(), bundle / "r4agent.exe")
    for name in extra:
        (bundle / name).write_bytes(b"x")
    return bundle


def _refused(cli: Any, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run a command that must be refused with nothing signed or written; its message."""
    before = _tree(cli.repo)
    capsys.readouterr()
    assert cli(*args) == 1
    assert _tree(cli.repo) == before
    err: str = capsys.readouterr().err
    return err


def test_an_empty_bundle_is_refused_before_anything_is_signed(
    cli: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    err = _refused(cli, capsys, "add", "--version", "1.0.0", "--bundle", str(tmp_path / "empty"))
    assert "is empty" in err and "build/freeze.py" in err


def test_a_mixed_bundle_is_refused(
    cli: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = _windows_bundle(tmp_path, None, "r4agent")  # a Windows and a Linux exe together
    err = _refused(cli, capsys, "add", "--version", WINDOWS_EXE_VERSION, "--bundle", str(bundle),
                   "--unsigned-test-build")
    assert "exactly one exe" in err and "r4agent, r4agent.exe" in err


def test_a_linux_build_released_for_the_windows_fleet_is_refused(
    cli: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the reported incident: a Linux ELF frozen on Linux, signed and published for Windows
    bundle = make_elf_bundle(tmp_path / "b", "1.0.0")
    err = _refused(cli, capsys, "add", "--version", "1.0.0", "--bundle", str(bundle))
    assert "a linux-amd64 build, not win-amd64" in err and "release windows" in err


def test_freezing_on_linux_for_windows_is_refused_before_the_freeze(
    cli: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _refused(cli, capsys, "release", "--version", "1.0.0", "--platform", WINDOWS)
    assert "not win-amd64" in err and "release windows" in err


def test_a_linux_elf_named_like_the_windows_exe_is_refused(
    cli: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    elf = make_elf_bundle(tmp_path / "b", "1.0.0") / "r4agent"
    bundle = _windows_bundle(tmp_path, elf)
    err = _refused(cli, capsys, "add", "--version", "1.0.0", "--bundle", str(bundle),
                   "--unsigned-test-build")
    assert "Linux ELF named .exe" in err


def test_a_windows_exe_named_like_the_linux_build_is_refused(
    cli: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = tmp_path / "b"
    bundle.mkdir()
    shutil.copyfile(real_windows_exe(), bundle / "r4agent")
    err = _refused(cli, capsys, "add", "--version", "1.0.0", "--bundle", str(bundle),
                   "--platform", LINUX)
    assert "is a Windows executable, not a Linux ELF" in err


def test_a_windows_exe_of_another_version_is_refused(
    cli: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = _windows_bundle(tmp_path)
    err = _refused(cli, capsys, "add", "--version", "1.2.0", "--bundle", str(bundle),
                   "--unsigned-test-build")
    assert "is version 1.1.0, not --version 1.2.0" in err


@pytest.mark.parametrize(("launcher", "why"), [
    ("setuptools/cli-32.exe", "not a 64-bit x86 Windows build"),
    ("setuptools/cli-arm64.exe", "not a 64-bit x86 Windows build"),
    ("setuptools/cli-64.exe", "no version resource"),
])
def test_a_windows_exe_of_the_wrong_architecture_or_without_a_version_is_refused(
    cli: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], launcher: str, why: str
) -> None:
    site = real_windows_exe().parents[3]  # site-packages
    bundle = _windows_bundle(tmp_path, site / launcher)
    err = _refused(cli, capsys, "add", "--version", "1.0.0", "--bundle", str(bundle),
                   "--unsigned-test-build")
    assert why in err


def test_a_linux_build_printing_another_version_is_refused(
    cli: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = make_elf_bundle(tmp_path / "b", "1.1.0", printed="r4agent 1.0.0")
    err = _refused(cli, capsys, "add", "--version", "1.1.0", "--bundle", str(bundle),
                   "--platform", LINUX)
    assert "printed 'r4agent 1.0.0'" in err and "rebuild it with --version 1.1.0" in err


def test_an_unsigned_windows_exe_is_refused_unless_it_is_a_test_build(
    cli: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = _windows_bundle(tmp_path)
    err = _refused(cli, capsys, "add", "--version", WINDOWS_EXE_VERSION, "--bundle", str(bundle))
    assert "no valid Authenticode signature" in err and "no signature found" in err
    assert "--unsigned-test-build" in err
    assert cli("add", "--version", WINDOWS_EXE_VERSION, "--bundle", str(bundle),
               "--unsigned-test-build") == 0
    assert "UNSIGNED test build" in capsys.readouterr().out


def test_a_signature_that_does_not_chain_to_a_trusted_ca_is_refused(
    cli: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], signing: CodeSigning
) -> None:
    signed = signing.sign(real_windows_exe(), tmp_path / "signed.exe")
    bundle = _windows_bundle(tmp_path, signed)
    err = _refused(cli, capsys, "add", "--version", WINDOWS_EXE_VERSION, "--bundle", str(bundle))
    assert "no valid Authenticode signature" in err and "self-signed certificate" in err


def test_a_tampered_signed_exe_is_refused(
    cli: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], signing: CodeSigning
) -> None:
    signed = signing.sign(real_windows_exe(), tmp_path / "signed.exe")
    data = bytearray(signed.read_bytes())
    data[0x400] ^= 0xFF  # inside the code, after the headers
    signed.write_bytes(bytes(data))
    bundle = _windows_bundle(tmp_path, signed)
    err = _refused(cli, capsys, "add", "--version", WINDOWS_EXE_VERSION, "--bundle", str(bundle),
                   "--ca-file", str(signing.cert))
    assert "no valid Authenticode signature" in err


def test_a_signed_windows_build_is_listed_under_its_platform_and_the_plain_names(
    cli: Any, tmp_path: Path, signing: CodeSigning
) -> None:
    signed = signing.sign(real_windows_exe(), tmp_path / "signed.exe")
    bundle = _windows_bundle(tmp_path, signed)
    assert cli("add", "--version", WINDOWS_EXE_VERSION, "--bundle", str(bundle),
               "--ca-file", str(signing.cert)) == 0
    targets = Repository(cli.repo, cli.keys).load("targets").signed.targets
    assert set(targets) == {f"{target_app(WINDOWS)}-1.1.0.tar.gz", f"{APP_NAME}-1.1.0.tar.gz"}


def test_a_linux_build_is_never_listed_under_the_names_windows_agents_read(
    cli: Any, tmp_path: Path
) -> None:
    for version in ("1.0.0", "1.1.0"):
        bundle = make_elf_bundle(tmp_path / "b", version)
        assert cli("add", "--version", version, "--bundle", str(bundle), "--platform", LINUX) == 0
    targets = Repository(cli.repo, cli.keys).load("targets").signed.targets
    app = target_app(LINUX)
    assert set(targets) == {f"{app}-1.0.0.tar.gz", f"{app}-1.1.0.tar.gz", f"{app}-1.1.0.patch"}


# ---- refusals say what to do next -------------------------------------------------------------


def test_a_command_without_a_repository_says_run_init(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = make_elf_bundle(tmp_path / "b", "1.0.0")
    args = ["--repo", str(tmp_path / "none"), "--keys", str(tmp_path / "k")]
    for command in (["revoke", "1.0.0"], ["add", "--version", "1.0.0", "--bundle", str(bundle),
                                          "--platform", LINUX]):
        assert release.main([*args, *command]) == 1
        assert "run `release.py init` first" in capsys.readouterr().err


def test_a_hotfix_below_a_revoked_release_says_how(
    cli: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for version in ("1.0.0", "1.1.0"):
        assert cli("add", "--version", version, "--bundle",
                   str(make_elf_bundle(tmp_path / "b", version)), "--platform", LINUX) == 0
    assert cli("revoke", "1.1.0") == 0
    hotfix = make_elf_bundle(tmp_path / "b", "1.0.1")
    err = _refused(cli, capsys, "add", "--version", "1.0.1", "--bundle", str(hotfix),
                   "--platform", LINUX)
    assert "1.1.0 is revoked: release the hotfix as a version above it" in err
    assert "--floor" in err


def test_a_change_made_without_publish_says_it_is_not_published(
    cli: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = make_elf_bundle(tmp_path / "b", "1.0.0")
    assert cli("add", "--version", "1.0.0", "--bundle", str(bundle), "--platform", LINUX) == 0
    assert "not published" in capsys.readouterr().out
    assert cli("revoke", "1.0.0") == 1  # the last release: refused, nothing to publish
    assert cli("--publish", str(tmp_path / "pub"), "resign-online") == 0
    assert "not published" not in capsys.readouterr().out


def test_global_options_are_taken_before_or_after_the_command(tmp_path: Path) -> None:
    repo, keys = tmp_path / "repo", tmp_path / "keys"
    Repository.create_keys(keys)
    assert release.main(["init", "--repo", str(repo), "--keys", str(keys)]) == 0
    assert (repo / "metadata" / "root.json").is_file()
    dest = tmp_path / "pub"
    assert release.main(["--keys", str(keys), "resign-online", "--repo", str(repo),
                         "--publish", str(dest)]) == 0
    assert (dest / "metadata" / "timestamp.json").is_file()


def test_every_flag_of_every_command_has_help() -> None:
    import argparse

    parser = release._parser()
    parsers = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            parsers += list(action.choices.values())
    missing = [f"{p.prog}: {a.dest}" for p in parsers for a in p._actions
               if not isinstance(a, argparse._SubParsersAction) and not a.help]
    assert len(parsers) > 10 and missing == []
