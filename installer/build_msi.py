"""Build r4agent.msi from installer/r4agent.wxs with wixl (msitools), on Linux or in CI.

    python -m installer.build_msi --exe path/to/r4agent.exe --message-dll servicemanager.pyd \
        --version X.Y.Z --out r4agent.msi

`--message-dll` is pywin32's `win32/servicemanager.pyd` from the Python the exe was frozen
with (the Event Log message table; installed as `r4agent-messages.dll` next to the exe).

wixl resolves source files relative to its working directory only, so the build runs in a
private staging folder holding the .wxs, its JScript, the exe and the message DLL. wixl ignores
two attributes, so msibuild sets them afterwards: `HideTarget` (the two custom actions that carry
the install settings get the msidbCustomActionTypeHideTarget bit 0x2000: Windows then keeps
CustomActionData, the licence key, out of verbose install logs) and `Secure` (the
SecureCustomProperties property lists the wxs's Secure="yes" properties). Sign the exe before
and the result after with osslsigncode or signtool (see docs/windows.md).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

INSTALLER = Path(__file__).resolve().parent
HIDE_TARGET = 0x2000
SECRET_CARRYING_ACTIONS = ("R4SetWriteSettings", "R4WriteSettings")
WIX_NS = "{http://schemas.microsoft.com/wix/2006/wi}"


def secure_properties(wxs: Path) -> list[str]:
    """The properties the .wxs marks Secure="yes" (what WiX would put in SecureCustomProperties)."""
    root = ET.parse(wxs).getroot()  # noqa: S314 - our own source file, not untrusted XML
    return [
        prop.attrib["Id"]
        for prop in root.iter(f"{WIX_NS}Property")
        if prop.attrib.get("Secure") == "yes"
    ]


def export_table(msi: Path, name: str) -> list[list[str]]:
    """The rows of table `name` in `msi` (`msiinfo export`: three header lines, then one
    tab-separated line per row), each as its column values."""
    out = subprocess.run(
        ["msiinfo", "export", str(msi), name],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout
    return [line.split("\t") for line in out.splitlines()[3:] if line]


def _custom_action_types(msi: Path) -> dict[str, int]:
    return {row[0]: int(row[1]) for row in export_table(msi, "CustomAction")}


def _secure_custom_properties_query(msi: Path, wxs: Path) -> str:
    """wixl writes SecureCustomProperties for MajorUpgrade's own properties only: add ours."""
    # Property has two columns; msiinfo does not escape a tab in a value, so join it back
    rows = {row[0]: "\t".join(row[1:]) for row in export_table(msi, "Property") if len(row) > 1}
    existing = [p for p in rows.get("SecureCustomProperties", "").split(";") if p]
    merged = ";".join(dict.fromkeys([*existing, *secure_properties(wxs)]))
    if not all(name.isidentifier() for name in merged.split(";")):
        raise ValueError(f"unexpected property name in {merged!r}")
    if "SecureCustomProperties" in rows:
        template = "UPDATE `Property` SET `Value` = '{}' WHERE `Property` = '{}'"
    else:
        template = "INSERT INTO `Property` (`Value`, `Property`) VALUES ('{}', '{}')"
    return template.format(merged, "SecureCustomProperties")


def build_msi(exe: Path, version: str, out: Path, message_dll: Path) -> Path:
    """Build the MSI for `exe` (reported as product `version`) at `out`; return `out`."""
    with tempfile.TemporaryDirectory(prefix="r4agent-msi-") as tmp:
        stage = Path(tmp)
        for name in ("r4agent.wxs", "write_settings.js"):
            shutil.copy2(INSTALLER / name, stage / name)
        shutil.copy2(exe, stage / "r4agent.exe")
        shutil.copy2(message_dll, stage / "r4agent-messages.dll")
        subprocess.run(
            ["wixl", "-a", "x64", "-D", f"Version={version}", "-D", "ExePath=r4agent.exe",
             "-D", "MessageDllPath=r4agent-messages.dll", "-D", "SourceDir=.",
             "-o", "r4agent.msi", "r4agent.wxs"],
            check=True, capture_output=True, timeout=300, cwd=stage,
        )
        msi = stage / "r4agent.msi"
        types = _custom_action_types(msi)
        template = "UPDATE `CustomAction` SET `Type` = {} WHERE `Action` = '{}'"
        queries = [
            template.format(types[name] | HIDE_TARGET, name) for name in SECRET_CARRYING_ACTIONS
        ]
        queries.append(_secure_custom_properties_query(msi, stage / "r4agent.wxs"))
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
    parser.add_argument(
        "--message-dll",
        type=Path,
        required=True,
        help="pywin32's servicemanager.pyd (Event Log message table)",
    )
    parser.add_argument("--version", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        print(build_msi(args.exe, args.version, args.out, args.message_dll))
    except subprocess.CalledProcessError as e:
        print(f"build_msi: {e.cmd[0]} failed: {e.stderr!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
