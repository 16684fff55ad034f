"""r4agent-messages: the SQS message models and their JSON Schema as a stdlib-only distribution
built from the agent's own source, and a committed schema file that cannot drift from the code;
`pip install .` leaves no build/lib behind (mypy reads build/)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from agent.commands.schema import SCHEMA_ID, SCHEMA_VERSION, document

REPO = Path(__file__).resolve().parents[2]
DIST = REPO / "build" / "messages"
COMMITTED = DIST / "messages.schema.json"


def test_the_committed_schema_is_what_the_code_generates() -> None:
    # after a change to agent/commands/envelope.py: regenerate it with
    #   r4agent messages schema > build/messages/messages.schema.json
    assert json.loads(COMMITTED.read_text(encoding="utf-8")) == document()


def test_the_schema_id_carries_its_version() -> None:
    assert re.fullmatch(rf"https://.+/v{SCHEMA_VERSION}\.schema\.json", SCHEMA_ID)
    assert json.loads(COMMITTED.read_text(encoding="utf-8"))["$id"] == SCHEMA_ID


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out),
                    str(DIST)], check=True, timeout=600)
    (found,) = out.glob("r4agent_messages-*.whl")
    return found


def test_the_distribution_depends_on_nothing_and_holds_only_the_message_modules(
    wheel: Path,
) -> None:
    with zipfile.ZipFile(wheel) as z:
        names = sorted(n for n in z.namelist() if not n.startswith("r4agent_messages-"))
        metadata = next(z.read(n) for n in z.namelist() if n.endswith("/METADATA")).decode()
    assert names == [f"r4agent_messages/{n}" for n in (
        "__init__.py", "envelope.py", "errors.py", "messages.schema.json", "py.typed",
        "schema.py")]
    assert "Requires-Dist" not in metadata


PROBE = """
import json, sys
before = set(sys.modules)
import r4agent_messages as m
command = m.decode('{"type": "patient-sync", "r4PatientId": "1234", "patientPatchId": "p-7"}')
try:
    m.decode('{"type": "no-such-command"}')
    refused = None
except m.DecodeError as e:
    refused = e.reason
loaded = sorted(n.split(".")[0] for n in set(sys.modules) - before)  # what importing it loaded
print(json.dumps({"command": [type(command).__name__, command.r4_patient_id], "refused": refused,
                  "schema": m.document(), "not_stdlib": sorted(set(
                      n for n in loaded if n not in sys.stdlib_module_names
                      and n != "r4agent_messages"))}))
"""


def test_installed_alone_it_decodes_as_the_agent_does_with_the_standard_library_only(
    wheel: Path, tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    str(wheel)], check=True, timeout=300)
    out = subprocess.run([str(python), "-I", "-c", PROBE], capture_output=True, text=True,
                         check=True, timeout=120, cwd=tmp_path).stdout
    seen = json.loads(out)
    assert seen["command"] == ["PatientSync", 1234]
    assert seen["refused"] == "unknown-type"
    assert seen["schema"] == document()
    assert seen["not_stdlib"] == []  # not even `agent`


def test_pip_install_of_the_agent_leaves_no_build_lib_behind(tmp_path: Path) -> None:
    # a build/lib copy of agent/ and updater/ made mypy (which reads build/) see every module
    # twice; setuptools' build folder is .cache/setuptools-build instead
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    before = sorted(p.name for p in (REPO / "build").iterdir())
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps",
                    str(REPO)], check=True, timeout=600, cwd=tmp_path)
    assert not (REPO / "build" / "lib").exists()
    assert not list((REPO / "build").glob("bdist.*"))
    assert sorted(p.name for p in (REPO / "build").iterdir()) == before
    assert not list(DIST.glob("*.egg-info")) and not (DIST / "build").exists()
