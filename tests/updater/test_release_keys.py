"""Release keys: `init --create-keys` encrypts the offline keys and keeps them apart from the
online ones; a wrong passphrase signs nothing; the passphrase never comes from argv."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.build_scripts import load_build_script
from tests.updater.support import make_elf_bundle, serve
from updater.policy import LINUX
from updater.repo import keys
from updater.repo.passphrase import ENV_FILE, ENV_VALUE, passphrase_from
from updater.repo.repository import RepoError, Repository
from updater.tuf_client import TufClient

release = load_build_script("release", "release_keys")
OFFLINE = ("root1", "root2", "root3", "targets")
ONLINE = ("snapshot", "timestamp")
PASSPHRASE = "correct horse battery staple"


@pytest.fixture
def split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A repository made by `init --create-keys`, the passphrase in a file (as CI gives it)."""
    secret = tmp_path / "passphrase.txt"
    secret.write_text(PASSPHRASE + "\n")
    monkeypatch.setenv(ENV_FILE, str(secret))
    monkeypatch.delenv(ENV_VALUE, raising=False)
    offline, online, repo = tmp_path / "offline", tmp_path / "online", tmp_path / "repo"
    args = ["--repo", str(repo), "--offline-keys", str(offline), "--online-keys", str(online)]

    def run(*more: str) -> int:
        code: int = release.main([*args, *more])
        return code

    run.offline, run.online, run.repo, run.secret = offline, online, repo, secret  # type: ignore[attr-defined]
    return run


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_init_encrypts_the_offline_keys_and_keeps_the_online_keys_in_another_folder(
    split: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert split("init", "--create-keys") == 0
    out = capsys.readouterr().out
    assert f"{split.offline} -> keep on offline media" in out
    assert f"{split.online} -> the CI secret store" in out
    assert sorted(p.name for p in split.offline.iterdir()) == sorted(
        [*OFFLINE, *(f"{n}.pub" for n in OFFLINE)])
    assert sorted(p.name for p in split.online.iterdir()) == sorted(
        [*ONLINE, *(f"{n}.pub" for n in ONLINE)])
    for name in OFFLINE:
        path = split.offline / name
        data = json.loads(path.read_text())
        assert "private" not in data["keyval"] and "ENCRYPTED PRIVATE KEY" in data[
            "encrypted_private"]
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        opened = load_pem_private_key(data["encrypted_private"].encode(), PASSPHRASE.encode())
        seed = opened.private_bytes_raw()  # type: ignore[union-attr]
        assert seed.hex() not in path.read_text() and seed not in path.read_bytes()
        keys.signer(path, lambda: PASSPHRASE)  # opens, and its halves match
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for name in ONLINE:  # signed by the unattended daily job: no passphrase
        assert not keys.is_encrypted(split.online / name)


def test_the_daily_job_signs_with_the_online_folder_alone_and_no_passphrase(
    split: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert split("init", "--create-keys") == 0
    monkeypatch.delenv(ENV_FILE)
    assert release.main(["--repo", str(split.repo), "--online-keys", str(split.online),
                         "resign-online"]) == 0


def test_a_release_signed_with_the_split_keys_is_read_by_agents(
    split: Any, tmp_path: Path
) -> None:
    assert split("init", "--create-keys") == 0
    bundle = make_elf_bundle(tmp_path / "b", "1.0.0")
    assert split("add", "--version", "1.0.0", "--bundle", str(bundle), "--platform", LINUX) == 0
    repo = Repository(split.repo, split.offline)
    for http in serve(split.repo):
        metadata = tmp_path / "agent" / "metadata"
        metadata.mkdir(parents=True)
        (metadata / "root.json").write_bytes(repo.root_bytes())
        catalog = TufClient(metadata, tmp_path / "agent" / "targets", f"{http.url}/metadata/",
                            f"{http.url}/targets/", app="r4agent_linux_amd64").refresh()
        assert [str(v) for v in catalog.releases] == ["1.0.0"]


def test_a_wrong_passphrase_is_refused_and_nothing_is_signed(
    split: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert split("init", "--create-keys") == 0
    split.secret.write_text("not the passphrase\n")
    before = _tree(split.repo)
    capsys.readouterr()
    bundle = make_elf_bundle(tmp_path / "b", "1.0.0")
    assert split("add", "--version", "1.0.0", "--bundle", str(bundle), "--platform", LINUX) == 1
    assert split("rotate-key", "root1", "root4") == 1
    assert "wrong passphrase, nothing was signed" in capsys.readouterr().err
    assert _tree(split.repo) == before and not (split.offline / "root4").exists()


def test_rotating_an_encrypted_key_makes_an_encrypted_successor_beside_it(split: Any) -> None:
    assert split("init", "--create-keys") == 0
    assert split("rotate-key", "root1", "root4") == 0
    assert keys.is_encrypted(split.offline / "root4")
    assert not (split.online / "root4").exists()


def test_init_refuses_to_put_every_key_into_one_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_VALUE, PASSPHRASE)
    args = ["--repo", str(tmp_path / "repo")]
    assert release.main([*args, "--keys", str(tmp_path / "k"), "init", "--create-keys"]) == 1
    err = capsys.readouterr().err
    assert "--offline-keys DIR" in err and "offline media" in err and "CI secret store" in err
    same = str(tmp_path / "k")
    assert release.main([*args, "--offline-keys", same, "--online-keys", same, "init",
                         "--create-keys"]) == 1
    assert "two different folders" in capsys.readouterr().err
    assert not (tmp_path / "k").exists() and not (tmp_path / "repo").exists()


def test_the_passphrase_is_never_taken_from_the_command_line(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_:
        release.main(["--repo", str(tmp_path), "--offline-keys", str(tmp_path), "init",
                      "--create-keys", "--passphrase", PASSPHRASE])
    assert exit_.value.code == 2


def test_without_a_terminal_or_environment_the_passphrase_is_refused_with_what_to_set() -> None:
    with pytest.raises(RepoError, match=ENV_FILE):
        passphrase_from({}, interactive=lambda: False)()


def test_a_new_passphrase_is_asked_twice_and_a_mismatch_writes_nothing() -> None:
    answers = iter(["one", "two"])
    with pytest.raises(RepoError, match="differ"):
        passphrase_from({}, new=True, prompt=lambda _: next(answers), interactive=lambda: True)()
    asked: list[str] = []

    def prompt(text: str) -> str:
        asked.append(text)
        return "same"

    get = passphrase_from({}, new=True, prompt=prompt, interactive=lambda: True)
    assert get() == "same" and get() == "same" and len(asked) == 2  # asked once, cached
