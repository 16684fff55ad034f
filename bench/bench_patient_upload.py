"""Benchmark: upload passes of a 100,000-patient R4 stand-in to the Flynotes stand-in: a full
pass, an unchanged pass and a 1 %-changed pass, patients and appointments, with the change
ledger on disk.

Prints per pass: bytes and requests the backend received, wall time; and peak RSS of this
process and the ledger's size, against the goals of issue 10 (a benchmark, not a test):

- unchanged pass <= 1 % of the full pass's bytes, and <= 1.5x a bare keyset fetch of the same
  rows (same SQL through raw pyodbc: no mapping, no ledger, no HTTP);
- 1 %-changed pass <= 2 % of the full pass's bytes;
- peak RSS <= 150 MB; ledger <= 10 MB per 100,000 rows;
- and, as before, the full patient pass <= 10 s and <= 3x its bare fetch.

The backend stand-in runs in a child process (`python -m agent.standin.backend --counts-only`,
licence key via the environment) so its parsing is not charged to the client. The sample
database is cached under .cache/bench/ (regenerate with --fresh); each run works on a copy,
whose rows the 1 %-changed pass edits with sqlite3 (as R4 would).

    .venv/bin/python bench/bench_patient_upload.py [--patients 100000] [--profile real]
        [--changed 0.01] [--fresh]
"""

from __future__ import annotations

import argparse
import os
import resource
import secrets
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
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
from agent.uploads.ledger import SqliteLedger, load_or_create_key
from agent.uploads.passes import PassSummary, Uploads

GOAL_UNCHANGED_BYTES = 0.01  # of the full pass's
GOAL_UNCHANGED_TIME = 1.5  # x the bare keyset fetch
GOAL_CHANGED_BYTES = 0.02  # for a 1 %-changed pass
GOAL_RSS_MB = 150.0
GOAL_LEDGER_MB_PER_100K = 10.0
GOAL_FULL_PATIENTS_S = 10.0
GOAL_FULL_PATIENTS_RATIO = 3.0
ROOT = Path(__file__).resolve().parent.parent
TABLES = ("patients", "appointments")
ENDPOINTS = {"patients": "patient-upload", "appointments": "appointment-upload"}

GENERATE = (
    "import sys; from pathlib import Path; from agent.standin import r4_sample; "
    "r4_sample.generate(Path(sys.argv[1]), int(sys.argv[2]), seed=1, profile=sys.argv[3])"
)


def peak_rss_mb() -> float:
    # ru_maxrss is KiB on Linux (bytes on macOS; this bench runs on Linux CI).
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bare_keyset_fetch(connection_string: str, table: str) -> tuple[int, float]:
    """The floor: the reader's own page SQL through raw pyodbc, rows discarded."""
    page = sql.patients_page if table == "patients" else sql.appointments_page
    started = time.perf_counter()
    connection = pyodbc.connect(connection_string, autocommit=True, readonly=True)
    try:
        cursor = connection.cursor()
        first = page(sql.SQLITE, DEFAULT_PAGE_SIZE, first=True).text
        following = page(sql.SQLITE, DEFAULT_PAGE_SIZE, first=False).text
        count, last = 0, None
        while True:
            rows = (
                cursor.execute(first).fetchall()
                if last is None
                else cursor.execute(following, last).fetchall()
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


def reader_alone(settings: DbSettings, table: str) -> float:
    """R4Reader's records alone (no mapping, no ledger, no HTTP): where the time goes."""
    with open_database(settings) as db:
        reader = R4Reader(db)
        rows = reader.iter_patients() if table == "patients" else reader.iter_appointments()
        started = time.perf_counter()
        for _ in rows:
            pass
        return time.perf_counter() - started


@dataclass
class Measured:
    """One pass of one table, as the backend saw it."""

    summary: PassSummary
    seconds: float
    requests: int
    bytes: int
    rows: int


def run_pass(
    uploads: Uploads, db_settings: DbSettings, table: str, url: str, *, full: bool = False
) -> Measured:
    endpoint = ENDPOINTS[table]

    def received() -> dict[str, int]:
        summary = requests.get(f"{url}/_standin/summary", timeout=30).json()
        return dict(summary.get(endpoint, {"requests": 0, "bytes": 0, "rows": 0}))

    before = received()
    with open_database(db_settings) as db:
        started = time.perf_counter()
        summary = uploads.run(table, R4Reader(db), full=full)
        seconds = time.perf_counter() - started
    after = received()
    if summary.error is not None:
        raise SystemExit(f"the {table} pass failed: {type(summary.error).__name__}")
    return Measured(
        summary,
        seconds,
        after["requests"] - before["requests"],
        after["bytes"] - before["bytes"],
        after["rows"] - before["rows"],
    )


def change_rows(db_path: Path, share: float) -> dict[str, int]:
    """Edit `share` of the patients (mobile) and of the appointments (status), spread evenly."""
    con = sqlite3.connect(db_path)
    try:
        step = max(round(1 / share), 1)
        patients = con.execute(
            "UPDATE patients SET mobileNo = '07700 9' || (patientCode % 100000) "
            "WHERE patientCode IN (SELECT patientCode FROM patients ORDER BY patientCode) "
            f"AND (patientCode % {step}) = 0"
        ).rowcount
        appointments = con.execute(
            "UPDATE Appts SET ApptFlag = CASE ApptFlag WHEN 1 THEN 3 ELSE 1 END "
            f"WHERE (ApptId % {step}) = 0"
        ).rowcount
        con.commit()
    finally:
        con.close()
    return {"patients": patients, "appointments": appointments}


def fmt_mb(n: float) -> str:
    return f"{n / 1e6:8.2f} MB"


def ok(good: bool) -> str:
    return "OK" if good else "MISSED"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--profile", default="real", choices=r4_sample.PROFILES)
    parser.add_argument("--changed", type=float, default=0.01, help="share edited, 0-1")
    parser.add_argument("--fresh", action="store_true", help="regenerate the sample database")
    args = parser.parse_args()

    cached = ROOT / ".cache" / "bench" / f"r4-{args.patients}-{args.profile}.db"
    if args.fresh or not cached.exists():
        cached.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()  # in a child: the generator's memory is not ours
        subprocess.run(
            [sys.executable, "-c", GENERATE, str(cached), str(args.patients), args.profile],
            check=True,
        )
        print(f"generated {cached} in {time.perf_counter() - started:.1f} s")

    with tempfile.TemporaryDirectory(prefix="bench-upload-") as work:
        db_path = Path(work) / "sys2000.db"
        shutil.copyfile(cached, db_path)
        con = sqlite3.connect(db_path)
        try:
            # sent with an empty patientCode, as the original (the real profile: about 1.7 %)
            (null_codes,) = con.execute(
                "SELECT COUNT(*) FROM Appts WHERE PatientCode IS NULL"
            ).fetchone()
            counts = {
                "patients": con.execute("SELECT COUNT(*) FROM patients").fetchone()[0],
                "appointments": con.execute("SELECT COUNT(*) FROM Appts").fetchone()[0],
            }
        finally:
            con.close()
        connection_string = r4_sample.sqlite_connection_string(db_path)
        settings = DbSettings(connection_string=connection_string)
        data_dir = Path(work) / "data"
        data_dir.mkdir()

        licence_key = secrets.token_urlsafe(24)
        backend, url = start_backend(licence_key)
        try:
            for table in TABLES:
                bare_keyset_fetch(connection_string, table)  # warms the OS cache
            bare = {t: bare_keyset_fetch(connection_string, t)[1] for t in TABLES}
            reader = {t: reader_alone(settings, t) for t in TABLES}
            key = load_or_create_key(data_dir / "uploads-ledger.key")
            ledger = SqliteLedger(data_dir / "uploads-ledger.sqlite3", key, "bench")
            with FlynotesClient(url, licence_key) as client:
                uploads = Uploads(client, errors=NullSink(), ledger=ledger)
                full = {t: run_pass(uploads, settings, t, url) for t in TABLES}
                unchanged = {t: run_pass(uploads, settings, t, url) for t in TABLES}
                edited = change_rows(db_path, args.changed)
                changed = {t: run_pass(uploads, settings, t, url) for t in TABLES}
            ledger.close()
            ledger_bytes = ledger.size_bytes()
        finally:
            backend.terminate()
            backend.wait(timeout=10)
        rss = peak_rss_mb()

    rows_total = sum(counts.values())
    print(
        f"R4 stand-in ({args.profile} profile): {counts['patients']:,} patients, "
        f"{counts['appointments']:,} appointments ({null_codes:,} with a NULL PatientCode, "
        "sent with an empty one)"
    )
    print(
        f"edited for the changed pass: {edited['patients']:,} patients, "
        f"{edited['appointments']:,} appointments ({args.changed:.0%})"
    )
    print(f"{'pass':<22}{'table':<14}{'rows sent':>10}{'requests':>10}{'bytes':>14}{'time':>9}")
    for name, runs in (("full", full), ("unchanged", unchanged), ("changed", changed)):
        for table, m in runs.items():
            print(
                f"{name:<22}{table:<14}{m.summary.sent:>10,}{m.requests:>10,}"
                f"{fmt_mb(m.bytes):>14}{m.seconds:>8.2f}s"
            )
    for table in TABLES:
        print(f"{'bare keyset fetch':<22}{table:<14}{'':>34}{bare[table]:>8.2f}s")
    for table in TABLES:
        print(f"{'R4Reader alone':<22}{table:<14}{'':>34}{reader[table]:>8.2f}s  (breakdown)")

    def total(runs: dict[str, Measured], attr: str) -> float:
        return float(sum(getattr(m, attr) for m in runs.values()))

    full_bytes = total(full, "bytes")
    unchanged_share = total(unchanged, "bytes") / full_bytes
    changed_share = total(changed, "bytes") / full_bytes
    unchanged_ratio = total(unchanged, "seconds") / sum(bare.values())
    patients_ratio = full["patients"].seconds / bare["patients"]
    ledger_per_100k = ledger_bytes / rows_total * 100_000
    print(
        f"bytes per row sent (full): patients {full['patients'].bytes / full['patients'].rows:.0f}"
        f", appointments {full['appointments'].bytes / full['appointments'].rows:.0f}"
    )
    print(
        f"unchanged pass bytes:       {unchanged_share:7.3%} of full   goal <= "
        f"{GOAL_UNCHANGED_BYTES:.0%}   {ok(unchanged_share <= GOAL_UNCHANGED_BYTES)}"
    )
    print(
        f"unchanged pass time:        {unchanged_ratio:7.2f} x bare fetch goal <= "
        f"{GOAL_UNCHANGED_TIME} x  {ok(unchanged_ratio <= GOAL_UNCHANGED_TIME)}"
    )
    print(
        f"{args.changed:.0%}-changed pass bytes:     {changed_share:7.3%} of full   goal <= "
        f"{GOAL_CHANGED_BYTES:.0%}   {ok(changed_share <= GOAL_CHANGED_BYTES)}"
    )
    print(
        f"peak RSS:                   {rss:7.1f} MB        goal <= {GOAL_RSS_MB:.0f} MB "
        f"{ok(rss <= GOAL_RSS_MB)}"
    )
    print(
        f"ledger:                     {ledger_bytes / 1e6:7.2f} MB for {rows_total:,} rows = "
        f"{ledger_per_100k / 1e6:.2f} MB per 100k   goal <= {GOAL_LEDGER_MB_PER_100K:.0f} MB "
        f"{ok(ledger_per_100k / 1e6 <= GOAL_LEDGER_MB_PER_100K)}"
    )
    print(
        f"full patient pass:          {full['patients'].seconds:7.2f} s         goal <= "
        f"{GOAL_FULL_PATIENTS_S:.0f} s    {ok(full['patients'].seconds <= GOAL_FULL_PATIENTS_S)}"
        f"   ({patients_ratio:.2f} x bare, goal <= {GOAL_FULL_PATIENTS_RATIO:.0f} x "
        f"{ok(patients_ratio <= GOAL_FULL_PATIENTS_RATIO)})"
    )
    sent_all = all(full[t].rows == full[t].summary.sent for t in TABLES)
    return 0 if sent_all else 1


if __name__ == "__main__":
    raise SystemExit(main())
