"""Builds r4agent-messages from the agent's source: the modules below are copied into the
package `r4agent_messages` with their `agent.` imports pointed at it, and the build fails if
anything they import is neither the standard library nor the package itself."""

from __future__ import annotations

import ast
import re
import shutil
import sys
from pathlib import Path

from setuptools import setup  # type: ignore[import-untyped]

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PACKAGE = "r4agent_messages"
# module in the package -> its source in the agent
SOURCES = {
    "errors": REPO / "agent" / "errors.py",
    "envelope": REPO / "agent" / "commands" / "envelope.py",
    "schema": REPO / "agent" / "commands" / "schema.py",
}
REWRITES = {"agent.errors": f"{PACKAGE}.errors", "agent.commands.envelope": f"{PACKAGE}.envelope",
            "agent.commands.schema": f"{PACKAGE}.schema"}
INIT = '''"""The R4 agent's SQS command messages (generated from the agent's source; stdlib only).

    from r4agent_messages import decode, document, SCHEMA_ID
    command = decode(body)          # a frozen dataclass, or DecodeError
    schema = document()             # the JSON Schema the agent validates against
"""

from r4agent_messages.envelope import BY_TYPE, COMMAND_TYPES, DecodeError, decode
from r4agent_messages.schema import SCHEMA_ID, SCHEMA_VERSION, document

__version__ = {version!r}
__all__ = ["BY_TYPE", "COMMAND_TYPES", "DecodeError", "SCHEMA_ID", "SCHEMA_VERSION", "decode",
           "document"]
'''


def agent_version() -> str:
    text = (REPO / "agent" / "_version.py").read_text(encoding="utf-8")
    match = re.search(r'__version__\s*=\s*"([^"]+)"', text)
    if match is None:
        raise SystemExit("agent/_version.py holds no __version__")
    return match[1]


def rewrite(source: str, name: str) -> str:
    for old, new in REWRITES.items():
        source = re.sub(rf"^(\s*)from {re.escape(old)} import", rf"\1from {new} import", source,
                        flags=re.MULTILINE)
    for node in ast.walk(ast.parse(source)):
        modules = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                   [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        for module in modules:
            top = module.split(".")[0]
            if top not in sys.stdlib_module_names and top != PACKAGE:
                raise SystemExit(f"{name}: imports {module}, which is not the standard "
                                 f"library: r4agent-messages must stay stdlib-only")
    return source


def stage() -> Path:
    """The package source, generated under .cache (never in the repository)."""
    root = REPO / ".cache" / "r4agent-messages" / "src"
    package = root / PACKAGE
    shutil.rmtree(root, ignore_errors=True)
    package.mkdir(parents=True)
    for module, path in SOURCES.items():
        text = rewrite(path.read_text(encoding="utf-8"), path.name)
        (package / f"{module}.py").write_text(text, encoding="utf-8")
    (package / "__init__.py").write_text(INIT.format(version=agent_version()), encoding="utf-8")
    (package / "py.typed").write_text("")
    shutil.copyfile(HERE / "messages.schema.json", package / "messages.schema.json")
    return root


SOURCE_ROOT = stage()
setup(
    version=agent_version(),
    packages=[PACKAGE],
    # setuptools wants it relative to this folder
    package_dir={"": "../../" + SOURCE_ROOT.relative_to(REPO).as_posix()},
    package_data={PACKAGE: ["py.typed", "messages.schema.json"]},
)
