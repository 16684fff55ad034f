"""What the benchmarks share: freezing a build as a release does, and making a bundle of it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def freeze(
    version: str, out: Path, *, trusted_root: Path | None = None, python: Path | None = None
) -> Path:
    """Run build/freeze.py for `version` into `out` (optionally baking in `trusted_root`, or with
    the interpreter `python`); returns the Linux exe."""
    command = [sys.executable, str(REPO / "build" / "freeze.py"), "--version", version,
               "--out", str(out)]
    if trusted_root is not None:
        command += ["--trusted-root", str(trusted_root)]
    if python is not None:
        command += ["--python", str(python)]
    subprocess.run(command, check=True, timeout=3600)
    return out / "r4agent"


def bundle_of(exe: Path, dest: Path) -> Path:
    """A bundle folder `dest` holding only `exe`, as `r4agent` (what `add_bundle` archives)."""
    dest.mkdir(parents=True)
    shutil.copy2(exe, dest / "r4agent")
    return dest
