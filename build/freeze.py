"""Freeze the agent into ONE exe with PyInstaller, reproducibly, on Linux or Windows (or Wine).

    python build/freeze.py --version X.Y.Z --out DIR [--trusted-root ROOT.json] [--python PY]
                           [--no-trusted-root]

- The version is baked into the build (`r4agent --version` prints it) without touching the
  repo: the spec swaps `agent._version` for a module it generates in the workpath.
- The trusted TUF root is baked in as data `updater/trusted_root.json`; a Windows build
  without one fails unless `--no-trusted-root` marks it as a test build (benchmarks).
- Reproducible: PYTHONHASHSEED=0 and SOURCE_DATE_EPOCH (the HEAD commit's time unless already
  set), a pinned clean environment (build/requirements-freeze.txt) and no absolute paths in the
  bundle, so building the same commit twice gives byte-identical exes and small update patches.
- By default PyInstaller runs in a clean venv made from build/requirements-freeze.txt and kept
  under .cache/freeze-venv/ (rollbar imports flask when it finds it; the dev venv has it).
  `--python PATH` uses another interpreter (the Wine harness passes its Windows CPython, which
  it installs from the same pinned file).
- Every build gets its own fresh workpath (under .cache/pyinstaller/work/, removed afterwards):
  PyInstaller reuses a workpath's Analysis/PYZ/PKG, so a second build in the same one would only
  re-join the first build's pieces and a reproducibility check of it could never fail. Only
  PyInstaller's binary cache (.cache/pyinstaller/config-*) is shared. The output is
  DIR/r4agent (DIR/r4agent.exe on Windows).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SPEC = REPO / "build" / "r4agent.spec"
REQUIREMENTS = REPO / "build" / "requirements-freeze.txt"
# Caches (clean venv, PyInstaller workpath and cache); R4AGENT_BUILD_CACHE points a copy of the
# tree (the reproducibility test builds from a git snapshot) at the same caches.
CACHE = Path(os.environ.get("R4AGENT_BUILD_CACHE") or REPO / ".cache")
VERSION_RE = re.compile(r"\d+\.\d+\.\d+")
FALLBACK_EPOCH = "315532800"  # 1980-01-01, the earliest time a zip entry can hold


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `lock_path` (blocking) for the duration of the block."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+b") as handle:
        if sys.platform == "win32":
            import msvcrt

            while True:
                try:
                    msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1)
                    break
                except OSError:
                    continue
            try:
                yield
            finally:
                handle.seek(0)
                msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
        else:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _venv_python(venv_dir: Path) -> Path:
    if sys.platform == "win32":
        return venv_dir / "Scripts" / "python.exe"
    return venv_dir / "bin" / "python"


def clean_build_python(requirements: Path = REQUIREMENTS) -> Path:
    """The interpreter of a venv holding exactly `requirements` (made once per content of that
    file, interpreter and platform; bench/bench_exe.py passes a copy with one pin moved)."""
    base_python = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    key = hashlib.sha256(
        requirements.read_bytes() + sys.version.encode() + base_python.encode()
    ).hexdigest()[:16]
    venv_dir = CACHE / "freeze-venv" / f"{sys.platform}-{key}"
    python = _venv_python(venv_dir)
    done = venv_dir / ".complete"
    if done.exists():
        return python
    with _locked(CACHE / "freeze-venv" / f"{sys.platform}-{key}.lock"):
        if done.exists():
            return python
        print(f"freeze: making the clean build venv {venv_dir} (once)", file=sys.stderr)
        subprocess.run([base_python, "-m", "venv", "--clear", str(venv_dir)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--no-deps", "-r", str(requirements)],
            check=True,
        )
        done.write_text("ok\n", encoding="utf-8")
    return python


def source_date_epoch() -> str:
    """SOURCE_DATE_EPOCH: kept if set, else the HEAD commit's time, else 1980-01-01."""
    if os.environ.get("SOURCE_DATE_EPOCH"):
        return os.environ["SOURCE_DATE_EPOCH"]
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "log", "-1", "--format=%ct"],
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return FALLBACK_EPOCH
    return out if out.isdigit() else FALLBACK_EPOCH


def exe_name(name: str) -> str:
    return f"{name}.exe" if sys.platform == "win32" else name


def freeze(
    version: str,
    out_dir: Path,
    *,
    trusted_root: Path | None = None,
    python: Path | None = None,
    name: str = "r4agent",
    no_trusted_root: bool = False,
) -> Path:
    """Build the onefile exe into `out_dir` and return its path. Raises CalledProcessError
    (also when a Windows build has no `trusted_root` and `no_trusted_root` is not set)."""
    if not VERSION_RE.fullmatch(version):
        raise ValueError(f"version must be X.Y.Z, got {version!r}")
    if trusted_root is not None and not trusted_root.is_file():
        raise FileNotFoundError(f"trusted root {trusted_root} is not a file")
    build_python = python if python is not None else clean_build_python()
    out_dir = out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    work_root = CACHE / "pyinstaller" / "work"
    work_root.mkdir(parents=True, exist_ok=True)
    workpath = Path(tempfile.mkdtemp(prefix=f"{sys.platform}-{name}-{version}-", dir=work_root))
    env = dict(os.environ)
    env.update(
        {
            "PYTHONHASHSEED": "0",
            "SOURCE_DATE_EPOCH": source_date_epoch(),
            "PYINSTALLER_CONFIG_DIR": str(CACHE / "pyinstaller" / f"config-{sys.platform}"),
            "R4AGENT_BUILD_VERSION": version,
            "R4AGENT_BUILD_TRUSTED_ROOT": str(trusted_root.resolve()) if trusted_root else "",
            "R4AGENT_BUILD_NAME": name,
            "R4AGENT_BUILD_NO_TRUSTED_ROOT": "1" if no_trusted_root else "",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    env.pop("PYTHONPATH", None)
    command = [
        str(build_python),
        "-m",
        "PyInstaller",
        "--noconfirm",
        "--log-level",
        os.environ.get("R4AGENT_PYINSTALLER_LOG_LEVEL", "WARN"),
        "--distpath",
        str(out_dir),
        "--workpath",
        str(workpath),
        str(SPEC),
    ]
    try:
        subprocess.run(command, check=True, env=env, cwd=str(REPO))
    finally:
        shutil.rmtree(workpath, ignore_errors=True)
    exe = out_dir / exe_name(name)
    if not exe.is_file():
        raise FileNotFoundError(f"PyInstaller finished but {exe} is missing")
    return exe


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", required=True, help="X.Y.Z baked into the exe")
    parser.add_argument("--out", required=True, type=Path, help="output folder for the exe")
    parser.add_argument(
        "--trusted-root", type=Path, help="TUF root.json to bake in (required on Windows)"
    )
    parser.add_argument(
        "--no-trusted-root",
        action="store_true",
        help="test builds only (benchmarks): allow a Windows exe without a trusted root; "
        "it can never update, never ship it",
    )
    parser.add_argument(
        "--python", type=Path, help="interpreter that runs PyInstaller (default: clean venv)"
    )
    parser.add_argument("--name", default="r4agent", help="exe name without extension")
    args = parser.parse_args(argv)
    try:
        exe = freeze(
            args.version,
            args.out,
            trusted_root=args.trusted_root,
            python=args.python,
            name=args.name,
            no_trusted_root=args.no_trusted_root,
        )
    except (ValueError, FileNotFoundError) as e:
        print(f"freeze: {e}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as e:
        print(f"freeze: PyInstaller failed (exit {e.returncode})", file=sys.stderr)
        return 1
    print(exe)
    return 0


if __name__ == "__main__":
    sys.exit(main())
