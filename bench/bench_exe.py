"""Exe size and cold start, Linux build and Wine (Windows) build, printed against the goals.

    .venv/bin/python bench/bench_exe.py [--linux-exe PATH] [--windows-exe PATH] [--runs N]

Without paths it freezes both (build/freeze.py; build/wine/winehost.py freeze) into .work/bench/.
Cold start = wall time of `r4agent --version` (onefile unpack + interpreter + CLI), median of N
runs, after one warm-up run (the page cache is warm; the onefile unpack happens every run).
Goals (issue 5): Windows onefile <= 15 MB; cold start <= 0.6 s on Linux. Under Wine the time is
informational (Wine is not Windows).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "build" / "wine"))

import winehost  # noqa: E402

SIZE_GOAL_MB = 15.0
COLD_START_GOAL_S = 0.6


def cold_start(command: list[str], runs: int) -> float:
    subprocess.run(command, capture_output=True, check=True, timeout=300)  # warm-up
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True, timeout=300)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def wine_cold_start(exe: Path, runs: int) -> float:
    prefix = winehost.WinePrefix(REPO / ".work" / "bench" / "wine-prefix")
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


def report(label: str, exe: Path, start_s: float, start_goal: float | None) -> None:
    size_mb = exe.stat().st_size / 1_000_000
    size_line = f"{size_mb:6.2f} MB (goal <= {SIZE_GOAL_MB} MB: {size_mb / SIZE_GOAL_MB:.2f}x)"
    if start_goal is None:
        start_line = f"{start_s:5.2f} s (under Wine; informational)"
    else:
        start_line = f"{start_s:5.2f} s (goal <= {start_goal} s: {start_s / start_goal:.2f}x)"
    print(f"{label:<22} size {size_line}   cold start {start_line}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--linux-exe", type=Path)
    parser.add_argument("--windows-exe", type=Path)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--skip-wine", action="store_true")
    args = parser.parse_args()
    out = REPO / ".work" / "bench"
    linux_exe = args.linux_exe
    if linux_exe is None:
        subprocess.run([sys.executable, str(REPO / "build" / "freeze.py"), "--version", "1.0.0",
                        "--out", str(out / "linux")], check=True)
        linux_exe = out / "linux" / "r4agent"
    report("Linux onefile", linux_exe, cold_start([str(linux_exe), "--version"], args.runs),
           COLD_START_GOAL_S)
    if args.skip_wine:
        return 0
    windows_exe = args.windows_exe
    if windows_exe is None:
        windows_exe = winehost.freeze_windows("1.0.0", out / "windows")
    report("Windows onefile (Wine)", windows_exe, wine_cold_start(windows_exe, args.runs), None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
