"""Benchmark: patient-sync latency, from SQS send to the Flynotes stand-in receiving the record.

Runs the real agent (`agent.app.run_agent`, real clock, 20 s long poll) against moto's SQS
server (a child process: SQS is remote in production), the backend stand-in and a
50,000-patient R4 stand-in database shaped as a real practice (r4_sample's "real" profile),
then:

- latency: sends one patient-sync at a time (random patients) and times send -> the stand-in
  has the record (p50/p99);
- floor: the same patients through a bare "query + POST" (R4Reader.get_patient +
  latest_questionnaire + FlynotesClient.sync_patient) measured in the same run;
- SQS transport: send -> a bare long-polling receive returns (SQS's own share of the latency);
- burst: 100 patient-syncs queued at once, time until the stand-in has all 100.

Goals (a benchmark, not a test): p50 <= 100 ms, p99 <= 300 ms, p50 <= 2x floor, burst <= 3 s.
The stand-in is polled every 0.5 ms for arrivals, which bounds the timing resolution.
The database is cached under .cache/bench/ (regenerate with --fresh).

    .venv/bin/python bench/bench_patient_sync.py [--patients 50000] [--samples 200] [--fresh]
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from agent.app import Runtime, run_agent
from agent.commands import envelope
from agent.commands.dispatcher import DispatchSettings
from agent.config import AgentConfig, DatabaseConfig, RollbarConfig, Secret
from agent.flynotes.client import FlynotesClient
from agent.lifecycle import LifeSettings
from agent.r4.connection import DbSettings, open_database
from agent.r4.reader import R4Reader
from agent.reporting import NullSink
from agent.standin import r4_sample
from agent.standin.backend import StandinBackend
from updater.gate import ReportOnlyGate

GOAL_P50_MS = 100.0
GOAL_P99_MS = 300.0
GOAL_RATIO = 2.0
GOAL_BURST_S = 3.0
ROOT = Path(__file__).resolve().parent.parent
LICENCE = "bench-licence-7c1d"
PROFILE = "real"  # r4_sample.PROFILES: a practice as REALITY §2 measured one


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def wait_for_count(backend: StandinBackend, count: int, timeout: float = 60.0) -> float:
    deadline = time.perf_counter() + timeout
    while len(backend.received_for("patient-sync")) < count:
        if time.perf_counter() > deadline:
            raise SystemExit(f"timed out waiting for patient-sync #{count}")
        time.sleep(0.0005)
    return time.perf_counter()


class MotoProcess:
    """moto's SQS server in a child process (SQS is remote in production: its work must not
    compete with the agent for this process's GIL), with a command queue + DLQ."""

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.client = boto3.client(
            "sqs",
            endpoint_url=self.url,
            region_name="eu-west-2",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
            aws_session_token="bench",
            config=Config(connect_timeout=2, read_timeout=30, retries={"max_attempts": 1}),
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                dlq = self.client.create_queue(QueueName="bench-dead-letter")["QueueUrl"]
                break
            except (BotoCoreError, ClientError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        arn = self.client.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        policy = json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": 3})
        self.queue_url = self.client.create_queue(
            QueueName="bench-commands",
            Attributes={"VisibilityTimeout": "30", "RedrivePolicy": policy},
        )["QueueUrl"]

    def stop(self) -> None:
        self._process.terminate()
        self._process.wait(10)


def sqs_transport(moto: MotoProcess, samples: int) -> list[float]:
    """Send -> a bare long-polling receive returns: the part of the latency that is SQS's."""
    waiting = moto.client.create_queue(QueueName="bench-transport")["QueueUrl"]
    out: list[float] = []
    for i in range(samples):
        got: list[float] = []

        def receive(into: list[float] = got) -> None:
            moto.client.receive_message(QueueUrl=waiting, WaitTimeSeconds=5)
            into.append(time.perf_counter())

        thread = threading.Thread(target=receive)
        thread.start()
        time.sleep(0.05)  # the receive is waiting
        t0 = time.perf_counter()
        moto.client.send_message(QueueUrl=waiting, MessageBody=str(i))
        thread.join()
        out.append(got[0] - t0)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=50_000)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--burst", type=int, default=100)
    parser.add_argument("--workers", type=int, default=DispatchSettings().workers)
    parser.add_argument("--fresh", action="store_true")
    args = parser.parse_args()

    db_path = ROOT / ".cache" / "bench" / f"r4-sync-{PROFILE}-{args.patients}.sqlite"
    if args.fresh or not db_path.exists():
        print(f"generating {args.patients} patients ({PROFILE} profile) -> {db_path}")
        r4_sample.generate(db_path, args.patients, seed=1, profile=PROFILE)
    connection_string = r4_sample.sqlite_connection_string(db_path)
    reader = R4Reader(open_database(DbSettings(connection_string=connection_string)))
    codes = [p.code for p in reader.iter_patients()]
    rng = random.Random(7)

    moto = MotoProcess()
    with StandinBackend([LICENCE]) as backend:
        backend.sqs_queue_url = moto.queue_url
        backend.sqs_region = "eu-west-2"
        backend.keep_rows = False
        transport = sqs_transport(moto, max(20, args.samples // 4))

        # -- the agent -------------------------------------------------------------------
        config = AgentConfig(
            config_path=Path("bench.toml"),
            licence_key=Secret(LICENCE),
            backend_url=backend.url,
            db=DatabaseConfig(connection_string=Secret(connection_string)),
            rollbar=RollbarConfig(access_token=None),
            data_dir=ROOT / ".cache" / "bench",
            sqs_endpoint_url=moto.url,
        )
        stop = threading.Event()
        runtime = Runtime(
            stop=stop,
            errors=NullSink(),
            gate=ReportOnlyGate("1.0.0"),
            life=LifeSettings(poll_hours=24, life_hours=24),
            dispatch=DispatchSettings(workers=args.workers),
        )
        result: list[object] = []
        agent = threading.Thread(target=lambda: result.append(run_agent(config, runtime)))
        agent.start()
        started = time.perf_counter()
        while not backend.received_for("appointment-status-upload"):
            time.sleep(0.05)
            if time.perf_counter() - started > 300:
                raise SystemExit("the agent did not finish its start-up uploads")
        print(
            f"agent up (start-up uploads of {len(codes)} patients took "
            f"{time.perf_counter() - started:.1f} s)"
        )
        time.sleep(1.0)  # let the first long poll begin
        sqs_client = moto.client

        # -- latency one at a time, interleaved with the floor (bare query + POST on a
        # thread, timed the same way: until the stand-in has the record) -----------------
        client = FlynotesClient(backend.url, LICENCE, user_agent="bench")

        def bare(code: int) -> None:
            patient = reader.get_patient(code)
            assert patient is not None
            client.sync_patient(patient, reader.latest_questionnaire(code), "floor")

        latencies: list[float] = []
        floor: list[float] = []
        arrived = 0
        for i, code in enumerate(rng.sample(codes, args.samples), start=1):
            t0 = time.perf_counter()
            thread = threading.Thread(target=bare, args=(code,))
            thread.start()
            arrived += 1
            floor.append(wait_for_count(backend, arrived) - t0)
            thread.join()
            body = envelope.encode(envelope.PatientSync(code, f"lat-{i}"))
            t0 = time.perf_counter()
            sqs_client.send_message(QueueUrl=moto.queue_url, MessageBody=body)
            arrived += 1
            latencies.append(wait_for_count(backend, arrived) - t0)
        client.close()

        # -- burst -----------------------------------------------------------------------
        before = len(backend.received_for("patient-sync"))
        bodies = [
            envelope.encode(envelope.PatientSync(code, f"burst-{i}"))
            for i, code in enumerate(rng.sample(codes, args.burst))
        ]
        t0 = time.perf_counter()
        for start in range(0, len(bodies), 10):
            sqs_client.send_message_batch(
                QueueUrl=moto.queue_url,
                Entries=[
                    {"Id": str(n), "MessageBody": b}
                    for n, b in enumerate(bodies[start : start + 10])
                ],
            )
        burst = wait_for_count(backend, before + args.burst) - t0

        stop.set()
        agent.join(60)
    moto.stop()

    p50, p99 = percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000
    floor_p50 = statistics.median(floor) * 1000
    ratio = p50 / floor_p50 if floor_p50 else float("inf")

    def verdict(ok: bool) -> str:
        return "OK" if ok else "MISSED"

    print(f"patient-sync latency over {args.samples} sends, {len(codes)}-patient database:")
    print(f"  p50 {p50:7.1f} ms   goal <= {GOAL_P50_MS:.0f} ms   {verdict(p50 <= GOAL_P50_MS)}")
    print(f"  p99 {p99:7.1f} ms   goal <= {GOAL_P99_MS:.0f} ms   {verdict(p99 <= GOAL_P99_MS)}")
    print(
        f"  floor (query + POST) p50 {floor_p50:.1f} ms, p99 {percentile(floor, 99) * 1000:.1f} ms"
    )
    print(
        f"  ratio p50 / floor p50 {ratio:.2f}x   goal <= {GOAL_RATIO:.0f}x   "
        f"{verdict(ratio <= GOAL_RATIO)}"
    )
    transport_p50 = statistics.median(transport) * 1000
    print(
        f"  SQS transport alone (send -> long-poll receive returns) p50 {transport_p50:.1f} ms;"
        f" ratio p50 / (floor + transport) {p50 / (floor_p50 + transport_p50):.2f}x"
    )
    print(
        f"burst of {args.burst} queued patient-syncs: {burst:.2f} s   goal <= "
        f"{GOAL_BURST_S:.0f} s   {verdict(burst <= GOAL_BURST_S)}"
    )
    print(f"agent exit: {result[0] if result else 'still running'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
