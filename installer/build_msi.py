"""Build r4agent.msi from installer/r4agent.wxs with wixl (msitools), on Linux or in CI.

    python -m installer.build_msi --exe path/to/r4agent.exe --version X.Y.Z --out r4agent.msi

wixl resolves source files relative to its working directory only, so the build runs in a
private staging folder holding the .wxs, its JScript and the exe. wixl ignores `HideTarget`, so
the two custom actions that carry the install settings get the msidbCustomActionTypeHideTarget
bit (0x2000) afterwards with msibuild: Windows then keeps CustomActionData (the licence key)
out of verbose install logs. Sign the result with osslsigncode (see docs/windows.md).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

INSTALLER = Path(__file__).resolve().parent
HIDE_TARGET = 0x2000
SECRET_CARRYING_ACTIONS = ("R4SetWriteSettings", "R4WriteSettings")


def _custom_action_types(msi: Path) -> dict[str, int]:
    out = subprocess.run(
        ["msiinfo", "export", str(msi), "CustomAction"],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout
    rows = [line.split("\t") for line in out.splitlines()[3:] if line]
    return {row[0]: int(row[1]) for row in rows}


def build_msi(exe: Path, version: str, out: Path) -> Path:
    """Build the MSI for `exe` (reported as product `version`) at `out`; return `out`."""
    with tempfile.TemporaryDirectory(prefix="r4agent-msi-") as tmp:
        stage = Path(tmp)
        for name in ("r4agent.wxs", "write_settings.js"):
            shutil.copy2(INSTALLER / name, stage / name)
        shutil.copy2(exe, stage / "r4agent.exe")
        subprocess.run(
            ["wixl", "-a", "x64", "-D", f"Version={version}", "-D", "ExePath=r4agent.exe",
             "-D", "SourceDir=.", "-o", "r4agent.msi", "r4agent.wxs"],
            check=True, capture_output=True, timeout=300, cwd=stage,
        )
        msi = stage / "r4agent.msi"
        types = _custom_action_types(msi)
        template = "UPDATE `CustomAction` SET `Type` = {} WHERE `Action` = '{}'"
        queries = [
            template.format(types[name] | HIDE_TARGET, name) for name in SECRET_CARRYING_ACTIONS
        ]
        for query in queries:
            subprocess.run(
                ["msibuild", str(msi), "-q", query], check=True, capture_output=True, timeout=60
            )
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(msi, out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="build r4agent.msi with wixl")
    parser.add_argument("--exe", type=Path, required=True)
    parser.add_argument("--version", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        print(build_msi(args.exe, args.version, args.out))
    except subprocess.CalledProcessError as e:
        print(f"build_msi: {e.cmd[0]} failed: {e.stderr!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
