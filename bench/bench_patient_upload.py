"""Benchmark: full patient upload of a 100,000-patient R4 stand-in to the Flynotes stand-in.

Prints the upload's wall time, this process's peak RSS, and the ratio to a bare keyset fetch
of the same rows through pyodbc (same SQL, same page size, no mapping, no HTTP) measured in
the same run. Goals (a benchmark, not a test): <= 10 s, <= 150 MB, <= 3x the bare fetch.

The backend stand-in runs in a child process (`python -m agent.standin.backend --counts-only`,
licence key via the environment) so its parsing is not charged to the client's time or RSS.
The sample database is cached under .cache/bench/ (regenerate with --fresh).

    .venv/bin/python bench/bench_patient_upload.py [--patients 100000] [--fresh]
"""

from __future__ import annotations

import argparse
import os
import resource
import secrets
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pyodbc
import requests

from agent.flynotes.client import FlynotesClient
from agent.r4 import sql
from agent.r4.connection import DbSettings, open_database
from agent.r4.reader import DEFAULT_PAGE_SIZE, R4Reader
from agent.reporting import NullSink
from agent.standin import r4_sample
from agent.standin.backend import LICENCE_KEY_ENV
from agent.uploads.passes import Uploads

GOAL_SECONDS = 10.0
GOAL_RSS_MB = 150.0
GOAL_RATIO = 3.0
ROOT = Path(__file__).resolve().parent.parent


GENERATE = (
    "import sys; from pathlib import Path; from agent.standin import r4_sample; "
    "r4_sample.generate(Path(sys.argv[1]), int(sys.argv[2]), seed=1)"
)


def count_patients(db_path: Path) -> int:
    with sqlite3.connect(db_path) as con:
        count: int = con.execute("SELECT COUNT(*) FROM patients").fetchone()[0]
    return count


def peak_rss_mb() -> float:
    # ru_maxrss is KiB on Linux (bytes on macOS; this bench runs on Linux CI).
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bare_keyset_fetch(connection_string: str) -> tuple[int, float]:
    """The floor: the reader's own patient page SQL through raw pyodbc, rows discarded."""
    started = time.perf_counter()
    connection = pyodbc.connect(connection_string, autocommit=True, readonly=True)
    try:
        cursor = connection.cursor()
        first = sql.patients_page(sql.SQLITE, DEFAULT_PAGE_SIZE, first=True).text
        following = sql.patients_page(sql.SQLITE, DEFAULT_PAGE_SIZE, first=False).text
        count, last = 0, None
        while True:
            rows = (
                cursor.execute(first).fetchall()
                if last is None
                else (cursor.execute(following, last).fetchall())
            )
            count += len(rows)
            if len(rows) < DEFAULT_PAGE_SIZE:
                break
            last = rows[-1][0]
    finally:
        connection.close()
    return count, time.perf_counter() - started


def start_backend(licence_key: str) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, LICENCE_KEY_ENV: licence_key}
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.standin.backend", "--counts-only"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("listening on "):
        proc.kill()
        raise SystemExit("the backend stand-in did not start")
    return proc, line.removeprefix("listening on ")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--fresh", action="store_true", help="regenerate the sample database")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved runs; best counts")
    args = parser.parse_args()

    db_path = ROOT / ".cache" / "bench" / f"r4-{args.patients}.db"
    if args.fresh or not db_path.exists():
        # In a child process: the generator's memory must not count towards this RSS.
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", GENERATE, str(db_path), str(args.patients)], check=True
        )
        print(f"generated {db_path} in {time.perf_counter() - started:.1f} s")
    in_db = count_patients(db_path)
    if in_db != args.patients:
        print(f"the sample database holds {in_db:,} patients, not {args.patients:,}")
        return 2
    connection_string = r4_sample.sqlite_connection_string(db_path)

    licence_key = secrets.token_urlsafe(24)
    backend, url = start_backend(licence_key)
    floors: list[float] = []
    uploads: list[float] = []
    readers: list[float] = []  # R4Reader alone: where the time goes, not a goal
    try:
        fetched, cold = bare_keyset_fetch(connection_string)  # warms the OS cache for both
        rss_before = peak_rss_mb()
        with (
            open_database(DbSettings(connection_string=connection_string)) as db,
            FlynotesClient(url, licence_key) as client,
        ):
            # Interleaved and repeated: the machine is shared, so each side keeps its best run.
            for _ in range(args.repeat):
                fetched, floor = bare_keyset_fetch(connection_string)
                floors.append(floor)
                started = time.perf_counter()
                for _patient in R4Reader(db).iter_patients():
                    pass
                readers.append(time.perf_counter() - started)
                started = time.perf_counter()
                summary = Uploads(client, errors=NullSink()).run(
                    "patients", R4Reader(db), full=True
                )
                sent = summary.sent
                uploads.append(time.perf_counter() - started)
        rss = peak_rss_mb()
        summary = requests.get(f"{url}/_standin/summary", timeout=10).json()
    finally:
        backend.terminate()
        backend.wait(timeout=10)

    received = summary.get("patient-upload", {}).get("rows", 0) // args.repeat
    upload, floor = min(uploads), min(floors)
    ratio = upload / floor
    runs = ", ".join(f"{u:.2f}/{f:.2f}" for u, f in zip(uploads, floors, strict=True))
    print(
        f"patients in database / fetched bare / sent / received: "
        f"{in_db:,} / {fetched:,} / {sent:,} / {received:,}"
    )
    print(f"runs (upload/bare, s):      {runs}   (cold bare fetch {cold:.2f} s)")
    print(f"bare keyset fetch (pyodbc): {floor:6.2f} s  best of {args.repeat}")
    print(f"R4Reader records alone:     {min(readers):6.2f} s  (breakdown only)")
    print(
        f"full patient upload:        {upload:6.2f} s   goal <= {GOAL_SECONDS:.0f} s   "
        f"{'OK' if upload <= GOAL_SECONDS else 'MISSED'}  best of {args.repeat}"
    )
    print(
        f"peak RSS:                   {rss:6.1f} MB  goal <= {GOAL_RSS_MB:.0f} MB  "
        f"{'OK' if rss <= GOAL_RSS_MB else 'MISSED'}  (before the uploads {rss_before:.1f} MB)"
    )
    print(
        f"upload / bare fetch:        {ratio:6.2f} x   goal <= {GOAL_RATIO:.0f} x     "
        f"{'OK' if ratio <= GOAL_RATIO else 'MISSED'}"
    )
    return 0 if sent == received == fetched else 1


if __name__ == "__main__":
    raise SystemExit(main())
