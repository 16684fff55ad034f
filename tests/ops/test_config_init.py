"""`r4agent config init` writes a commented starter config that `doctor` accepts once the
licence key is filled in, and never overwrites a practice's file by accident."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.cli import main
from agent.config import ConfigProblems, load_config
from agent.doctor import Doctor, Status
from installer.service import DEFAULT_BACKEND_URL


def _init(path: Path, *extra: str) -> int:
    return main(["config", "init", "--path", str(path), *extra])


def test_the_starter_config_passes_doctors_config_check_once_the_licence_is_filled_in(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "R4Agent" / "config.toml"
    assert _init(path) == 0
    assert "fill in licence_key" in capsys.readouterr().out
    text = path.read_text(encoding="utf-8")
    assert text.count("\n#") > 10  # commented for the person editing it

    # doctor's config check (the others would reach the production backend from a test)
    before = Doctor(path, {}).check_config()
    assert before.status is Status.FAIL
    line = text.splitlines().index("licence_key = ''") + 1
    assert f"{path}:{line}: key 'licence_key' must not be empty" in before.detail

    path.write_text(text.replace("licence_key = ''", "licence_key = 'practice-7f3a91c2'"))
    after = Doctor(path, {}).check_config()
    assert after.status is Status.OK, after.detail
    config = load_config(path, {})
    assert config.backend_url == DEFAULT_BACKEND_URL
    assert (config.db.server, config.db.database) == (".", "sys2000")
    assert config.data_dir == path.parent and config.rollbar.access_token is None


def test_the_commented_alternatives_are_valid_when_uncommented(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    assert _init(path) == 0
    text = path.read_text(encoding="utf-8").replace("licence_key = ''", "licence_key = 'k-1234'")
    text = text.replace("server = '.'\ndatabase = 'sys2000'\n", "")
    text = text.replace("# data_dir = ", "data_dir = ").replace("# proxy = ", "proxy = ")
    text = text.replace("# connection_string = ", "connection_string = ")
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigProblems) as caught:  # C:\... is not absolute on Linux
        load_config(path, {})
    assert [p.split(": key ")[1][:10] for p in caught.value.problems] == ["'data_dir'"]
    connection = text.split("connection_string = '")[1].split("'")[0]
    assert "Server=R4SERVER\\R4;" in connection  # one backslash: single quotes keep it


def test_an_existing_config_is_not_replaced_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.toml"
    path.write_text("licence_key = 'the practice's own'\n", encoding="utf-8")
    assert _init(path) == 1
    assert "exists; not replaced" in capsys.readouterr().err
    assert path.read_text(encoding="utf-8") == "licence_key = 'the practice's own'\n"
    assert _init(path, "--force") == 0
    assert "licence_key = ''" in path.read_text(encoding="utf-8")
