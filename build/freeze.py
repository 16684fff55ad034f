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
- A build takes a minute or more: a progress line goes to stderr at least every 10 s (agent.
  progress: PyInstaller's log lines so far, and an ETA from the previous build's count). Its
  warnings and errors are passed on; after a failure, its last lines.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import hashlib
import logging
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from agent.clock import Clock, SystemClock  # noqa: E402 (after the repo is on sys.path)
from agent.progress import Progress  # noqa: E402

SPEC = REPO / "build" / "r4agent.spec"
REQUIREMENTS = REPO / "build" / "requirements-freeze.txt"
# Caches (clean venv, PyInstaller workpath and cache); R4AGENT_BUILD_CACHE points a copy of the
# tree (the reproducibility test builds from a git snapshot) at the same caches.
CACHE = Path(os.environ.get("R4AGENT_BUILD_CACHE") or REPO / ".cache")
VERSION_RE = re.compile(r"\d+\.\d+\.\d+")
FALLBACK_EPOCH = "315532800"  # 1980-01-01, the earliest time a zip entry can hold
PASSED_ON = re.compile(r"\b(WARNING|ERROR|CRITICAL)\b|Traceback|Error:")
TAIL_ON_FAILURE = 60  # PyInstaller lines shown when a build fails

log = logging.getLogger("build.freeze")


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


def _progress_log() -> logging.Logger:
    """`freeze: ...` lines on stderr, beside PyInstaller's own."""
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("freeze: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    return log


def _lines_file() -> Path:
    return CACHE / "pyinstaller" / f"log-lines-{sys.platform}.txt"


def previous_line_count() -> int | None:
    """How many log lines the last build here wrote: the next one's ETA."""
    try:
        return int(_lines_file().read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None


def run_with_progress(
    command: Sequence[str],
    *,
    env: Mapping[str, str] | None,
    cwd: Path,
    what: str,
    expected: int | None,
    pass_on_everything: bool = False,
    clock: Clock | None = None,
    logger: logging.Logger | None = None,
) -> tuple[int, int]:
    """Run `command` (its stdout + stderr read line by line), logging progress at least every
    10 s of `clock` while it runs, passing on its warnings and errors (everything with
    `pass_on_everything`), and its last lines if it fails. Returns (exit code, lines)."""
    progress = Progress(what, clock=clock or SystemClock(), log=logger or _progress_log(),
                        expected=expected, unit="PyInstaller log lines")  # fmt: skip
    child = subprocess.Popen(
        list(command), env=None if env is None else dict(env), cwd=str(cwd),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
    )  # fmt: skip
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert child.stdout is not None
        for line in child.stdout:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=read, name="freeze-output", daemon=True)
    reader.start()
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_ON_FAILURE)
    while True:
        try:
            line = lines.get(timeout=1.0)  # a silent PyInstaller still gets its progress line
        except queue.Empty:
            progress.advance(0)
            continue
        if line is None:
            break
        tail.append(line)
        if pass_on_everything or PASSED_ON.search(line):
            sys.stderr.write(line)
        progress.advance()
    code = child.wait()
    reader.join()
    progress.finish()
    if code:
        sys.stderr.write(f"freeze: PyInstaller's last {len(tail)} lines:\n")
        sys.stderr.writelines(tail)
    return code, progress.done


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
    chosen_level = os.environ.get("R4AGENT_PYINSTALLER_LOG_LEVEL")
    command = [
        str(build_python),
        "-m",
        "PyInstaller",
        "--noconfirm",
        "--log-level",
        chosen_level or "INFO",  # INFO: lines to count for the progress; only warnings shown
        "--distpath",
        str(out_dir),
        "--workpath",
        str(workpath),
        str(SPEC),
    ]
    try:
        code, lines = run_with_progress(
            command,
            env=env,
            cwd=REPO,
            what=f"{name} {version}",
            expected=previous_line_count(),
            pass_on_everything=chosen_level is not None,
        )
        if code:
            raise subprocess.CalledProcessError(code, command)
        with contextlib.suppress(OSError):
            _lines_file().write_text(f"{lines}\n", encoding="utf-8")
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
