"""docs/release-runbook.md cannot rot: every `sh` block runs, in order, against a real repository
(keys made by its own `init --create-keys`, the passphrase from a file), published to a folder;
then an agent that knows only the first root updates from what was published."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pefile
import pytest

from tests.updater.support import make_code_signing, real_windows_exe, serve
from updater.policy import WINDOWS, parse_version, target_apps
from updater.tuf_client import TufClient

REPO = Path(__file__).resolve().parents[2]
RUNBOOK = REPO / "docs" / "release-runbook.md"
BLOCK = re.compile(r"^```sh\n(.*?)^```$", re.MULTILINE | re.DOTALL)
RELEASE_WINDOWS = re.compile(r"release windows --version (\d+\.\d+\.\d+)")


def runbook_blocks() -> list[str]:
    return BLOCK.findall(RUNBOOK.read_text(encoding="utf-8"))


def frozen_exe(folder: Path, version: str) -> Path:
    """A real PE32+ standing in for the Wine freeze of `version`: its version resource says so."""
    major, minor, patch = (int(p) for p in version.split("."))
    pe = pefile.PE(str(real_windows_exe()))
    info = pe.VS_FIXEDFILEINFO[0]
    info.FileVersionMS, info.FileVersionLS = (major << 16) | minor, patch << 16
    out = folder / version / "r4agent.exe"
    out.parent.mkdir(parents=True)
    pe.write(str(out))
    pe.close()
    return out


def test_the_runbook_has_a_command_for_every_situation() -> None:
    text = RUNBOOK.read_text(encoding="utf-8")
    for heading in ("First release", "Hotfix", "Fleet-wide rollback", "Revoke", "Raise the floor",
                    "The daily job", "Lost (or leaked) online key", "Lost or compromised offline",
                    "Expired (or expiring) root"):
        section = text.split(f"## {heading}", 1)
        assert len(section) == 2, heading
        assert "```sh" in section[1].split("\n## ", 1)[0], f"{heading}: no command"


def test_every_command_of_the_runbook_runs_and_agents_follow(tmp_path: Path) -> None:
    signing = make_code_signing(tmp_path / "codesign")
    passphrase = tmp_path / "passphrase.txt"
    passphrase.write_text("runbook passphrase\n")
    dest = tmp_path / "published"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("R4AGENT_", "AWS_"))},
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "R4AGENT_RELEASE_REPO": str(tmp_path / "repo"),
        "R4AGENT_RELEASE_OFFLINE_KEYS": str(tmp_path / "offline"),
        "R4AGENT_RELEASE_ONLINE_KEYS": str(tmp_path / "online"),
        "R4AGENT_RELEASE_PASSPHRASE_FILE": str(passphrase),
        "R4AGENT_SIGN_CERT": str(signing.cert),
        "R4AGENT_SIGN_KEY": str(signing.key),
        "R4AGENT_SIGNING_CA_FILE": str(signing.cert),
        "DEST": str(dest),
    }
    message_dll = real_windows_exe().with_name("w64.exe")
    blocks = runbook_blocks()
    assert len(blocks) >= 9
    first_root = None
    for block in blocks:
        def with_exe(match: re.Match[str]) -> str:
            exe = frozen_exe(tmp_path / "frozen", match[1])
            return f'{match[0]} --exe "{exe}" --message-dll "{message_dll}"'

        script = RELEASE_WINDOWS.sub(with_exe, block)
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=600, check=False)
        assert done.returncode == 0, f"{block}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        if first_root is None and (dest / "metadata" / "1.root.json").is_file():
            first_root = (dest / "metadata" / "1.root.json").read_bytes()

    assert first_root is not None
    # offline keys stayed in their folder, encrypted; online ones in theirs
    assert sorted(p.name for p in (tmp_path / "offline").iterdir() if not p.suffix) == [
        "root1", "root2", "root3", "root4", "targets", "targets-2"]
    assert sorted(p.name for p in (tmp_path / "online").iterdir() if not p.suffix) == [
        "snapshot", "timestamp", "timestamp-2"]
    shutil.rmtree(tmp_path / "repo")  # the agent reads only what was published
    for http in serve(dest):
        metadata = tmp_path / "agent" / "metadata"
        metadata.mkdir(parents=True)
        (metadata / "root.json").write_bytes(first_root)
        catalog = TufClient(metadata, tmp_path / "agent" / "targets", f"{http.url}/metadata/",
                            f"{http.url}/targets/", app=target_apps(WINDOWS)).refresh()
    releases = catalog.releases
    assert sorted(str(v) for v in releases) == ["1.0.0", "1.1.0", "1.1.1"]
    assert releases[parse_version("1.1.1")].revoked
    assert str(catalog.effective_floor) == "1.1.0"
    assert [str(r.version) for r in catalog.installable()] == ["1.1.0"]


@pytest.mark.parametrize("block", runbook_blocks())
def test_no_runbook_command_takes_a_passphrase_on_the_command_line(block: str) -> None:
    assert "--passphrase" not in block and "-pass " not in block
