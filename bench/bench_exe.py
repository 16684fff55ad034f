"""Exe size, cold start (bare and realistic) and the dependency-bump patch, printed against goals.

    .venv/bin/python bench/bench_exe.py [--linux-exe PATH] [--windows-exe PATH] [--runs N]
                                        [--skip-wine] [--skip-dep-bump]

Without paths it freezes both (build/freeze.py; build/wine/winehost.py freeze, a test build
without a trusted root) into .work/bench/. Times are medians of N runs after one warm-up run
(the page cache is warm; the onefile unpack happens every run):

- bare cold start: `r4agent --version` (onefile unpack + interpreter + CLI; imports nothing of
  the run path);
- realistic start (Linux): `r4agent run` installed as the host installs it, against the demo
  practice (agent.standin: SQLite R4 via pyodbc, backend stand-in, moto SQS; update URL on a
  closed loopback port): time until the backend sees the agent's first request (config, logs,
  pyodbc connect, requests) and until its first patient upload (also the TUF client's refresh
  attempt, boto3's SQS client, the first R4 read). Informational against the 0.6 s goal;
- dependency bump: one pinned dependency moved to its neighbouring release (requests 2.34.2 ->
  2.34.1, from the package index) in a venv of its own, frozen as 1.0.1, and the bsdiff patch
  (tufup's format) from the pinned 1.0.0 build measured against the full archive (goal <= 5 %; the
  code-only goal, <= 1 %, is bench/bench_update.py's).
Goals (issue 5): Windows onefile <= 15 MB; cold start <= 0.6 s on Linux. Under Wine the time is
informational (Wine is not Windows).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "build"))
sys.path.insert(0, str(REPO / "build" / "wine"))

import winehost  # noqa: E402
from builds import bundle_of, freeze  # noqa: E402
from freeze import REQUIREMENTS, clean_build_python  # noqa: E402

SIZE_GOAL_MB = 15.0
COLD_START_GOAL_S = 0.6
DEP_BUMP_PATCH_GOAL = 0.05
BUMP = ("requests==2.34.2", "requests==2.34.1")
OUT = REPO / ".work" / "bench"


def cold_start(command: list[str], runs: int) -> float:
    subprocess.run(command, capture_output=True, check=True, timeout=300)  # warm-up
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True, timeout=300)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def wine_cold_start(exe: Path, runs: int) -> float:
    prefix = winehost.WinePrefix(OUT / "wine-prefix")
    prefix.start()
    target = prefix.drive_c / "bench" / "r4agent.exe"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(exe.read_bytes())
    args = [prefix.windows_path(target), "--version"]
    prefix.run(args)  # warm-up
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        prefix.run(args)
        times.append(time.perf_counter() - started)
    prefix.stop()
    return statistics.median(times)


def _wait(condition: Callable[[], bool], timeout_s: float = 120.0) -> float:
    """Seconds until `condition()` holds (polled every 5 ms)."""
    started = time.perf_counter()
    while not condition():
        if time.perf_counter() - started > timeout_s:
            raise TimeoutError("the agent did not get there")
        time.sleep(0.005)
    return time.perf_counter() - started


def realistic_start(exe: Path, runs: int) -> tuple[float, float]:
    """(start -> first backend request, start -> first patient upload), medians."""
    from agent.standin.demo import DemoPractice

    work = Path(tempfile.mkdtemp(prefix="bench-start-", dir=OUT))
    try:
        with DemoPractice(work / "practice", patients=300, out=io.StringIO()) as practice:
            base = work / "R4Agent"
            installed = base / "versions" / "1.0.0" / exe.name
            installed.parent.mkdir(parents=True)
            shutil.copy2(exe, installed)
            config = base / "config.toml"
            config.write_text(
                f'licence_key = "{practice.licence_key}"\n'
                f'backend_url = "{practice.backend.url}"\n'
                f'sqs_endpoint_url = "{practice.sqs.endpoint_url}"\n'
                "[database]\n"
                f"connection_string = {json.dumps(practice.db_settings.connection_string)}\n"
            )
            env = dict(os.environ, R4AGENT_CONFIG=str(config), R4AGENT_INSTALL_BASE=str(base),
                       R4AGENT_UPDATE_URL="http://127.0.0.1:9")
            first, upload = [], []
            for run in range(runs + 1):
                practice.backend.clear_received()
                started = time.perf_counter()
                proc = subprocess.Popen([str(installed), "run"], env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                try:
                    _wait(lambda: bool(practice.backend.received))
                    seen = time.perf_counter() - started
                    _wait(lambda: bool(practice.backend.received_for("patient-upload")))
                    uploaded = time.perf_counter() - started
                finally:
                    proc.terminate()
                    proc.wait(timeout=60)
                if run:  # the first run warms the page cache
                    first.append(seen)
                    upload.append(uploaded)
            return statistics.median(first), statistics.median(upload)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def bumped_build_python() -> Path:
    """A clean build venv like the pinned one, with BUMP applied (build/freeze.py makes it once
    per content of the bumped requirements)."""
    requirements = REQUIREMENTS.read_text()
    if BUMP[0] not in requirements:
        raise SystemExit(f"bench: {BUMP[0]} is no longer pinned; update BUMP")
    bumped = OUT / "requirements-dep-bump.txt"
    bumped.write_text(requirements.replace(BUMP[0], BUMP[1]))
    return clean_build_python(bumped)


def dep_bump_patch(baseline: Path) -> tuple[int, int]:
    """(patch bytes, full archive bytes) for BUMP, as the release repository publishes them."""
    from updater.repo.repository import Repository

    bumped = freeze("1.0.1", OUT / "linux-dep-bump", python=bumped_build_python())
    work = Path(tempfile.mkdtemp(prefix="bench-patch-", dir=OUT))
    try:
        Repository.create_keys(work / "keys")
        repo = Repository(work / "repo", work / "keys")
        repo.initialize()
        repo.add_bundle(bundle_of(baseline, work / "bundle-1.0.0"), "1.0.0")
        archive, patch = repo.add_bundle(bundle_of(bumped, work / "bundle-1.0.1"), "1.0.1")
        targets = repo.targets_dir
        return (targets / patch).stat().st_size, (targets / archive).stat().st_size
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(label: str, exe: Path, start_s: float, start_goal: float | None) -> None:
    size_mb = exe.stat().st_size / 1_000_000
    size_line = f"{size_mb:6.2f} MB (goal <= {SIZE_GOAL_MB} MB: {size_mb / SIZE_GOAL_MB:.2f}x)"
    if start_goal is None:
        start_line = f"{start_s:5.2f} s (under Wine; informational)"
    else:
        start_line = f"{start_s:5.2f} s (goal <= {start_goal} s: {start_s / start_goal:.2f}x)"
    print(f"{label:<22} size {size_line}   --version cold start {start_line}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--linux-exe", type=Path)
    parser.add_argument("--windows-exe", type=Path)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--skip-wine", action="store_true")
    parser.add_argument("--skip-dep-bump", action="store_true")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    linux_exe = args.linux_exe or freeze("1.0.0", OUT / "linux")
    report("Linux onefile", linux_exe, cold_start([str(linux_exe), "--version"], args.runs),
           COLD_START_GOAL_S)
    first, upload = realistic_start(linux_exe, args.runs)
    print(f"{'Linux realistic start':<22} first backend request {first:5.2f} s, first patient "
          f"upload {upload:5.2f} s (informational; --version goal <= {COLD_START_GOAL_S} s: "
          f"{first / COLD_START_GOAL_S:.2f}x to the first request)", flush=True)
    if not args.skip_dep_bump:
        patch, archive = dep_bump_patch(linux_exe)
        share = patch / archive
        print(f"{'Dependency bump patch':<22} {BUMP[0]} -> {BUMP[1].split('==')[1]}: patch "
              f"{patch / 1000:.0f} KB of {archive / 1_000_000:.2f} MB archive = {share:.2%} "
              f"(goal <= {DEP_BUMP_PATCH_GOAL:.0%}: {share / DEP_BUMP_PATCH_GOAL:.2f}x)",
              flush=True)
    if args.skip_wine:
        return 0
    windows_exe = args.windows_exe or winehost.freeze_windows(
        "1.0.0", OUT / "windows", no_trusted_root=True
    )
    report("Windows onefile (Wine)", windows_exe, wine_cold_start(windows_exe, args.runs), None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
