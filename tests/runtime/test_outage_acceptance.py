"""Acceptance (issue 12): a real `r4agent run` child process, as the unprivileged user `nobody`
when the suite runs as root, against moto (redrive policy, maxReceiveCount 3, visibility 1 s:
a redrive window of 3 s) and the backend stand-in, through outages many times longer than that
window. Each ends with 0 valid messages dead-lettered, all delivered after recovery, and no hot
loop (the probes in the log are counted). Real time, compressed: the breakers' probes are
capped at 4 s (`[timing] probe_max_seconds`) instead of 60 s, so each outage lasts ~20-30 s,
not minutes. Marker `outage` (its own stage in .ci/test.sh)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.commands import envelope
from agent.exit_codes import ExitCode
from agent.standin import r4_sample
from agent.standin.backend import StandinBackend
from agent.standin.r4_sample import CANARY_CODE
from agent.standin.sqs_local import SqsEndpoint
from tests.fixtures.flynotes_backend import TEST_LICENCE_KEY
from tests.runtime.conftest import PracticeDb, eventually

pytestmark = pytest.mark.outage

REPO = Path(__file__).resolve().parents[2]
MESSAGES = 10
PROBE_MAX = 4


def _as_nobody() -> list[str]:
    """The command prefix that drops to `nobody` (root only), else nothing."""
    if os.geteuid() == 0 and shutil.which("setpriv") and Path("/usr/bin/python3").exists():
        return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    return []


@dataclass
class Site:
    root: Path
    db: Path
    config: Path
    log: Path


@pytest.fixture
def site(
    practice_db: PracticeDb, flynotes_standin: StandinBackend, sqs_server: SqsEndpoint
) -> Iterator[Site]:
    # not pytest's tmp_path: its parents are root's alone, and the agent runs as nobody
    root = Path(tempfile.mkdtemp(prefix="r4agent-outage-"))
    root.chmod(0o755)
    db = root / "sys2000.sqlite"
    shutil.copy(practice_db.path, db)
    db.chmod(0o644)
    data = root / "data"
    data.mkdir()
    if _as_nobody():
        os.chown(data, 65534, 65534)
    flynotes_standin.sqs_queue_url = sqs_server.queue_url
    flynotes_standin.sqs_region = sqs_server.region
    cs = r4_sample.sqlite_connection_string(db).replace("Timeout=5000", "Timeout=200")
    config = root / "config.toml"
    config.write_text(
        "\n".join(
            [
                f"licence_key = {json.dumps(TEST_LICENCE_KEY)}",
                f"backend_url = {json.dumps(flynotes_standin.url)}",
                f"sqs_endpoint_url = {json.dumps(sqs_server.endpoint_url)}",
                f"data_dir = {json.dumps(str(data))}",
                "[database]",
                f"connection_string = {json.dumps(cs)}",
                "[timing]",
                "long_poll_seconds = 1",
                f"probe_max_seconds = {PROBE_MAX}",
            ]
        ),
        encoding="utf-8",
    )
    config.chmod(0o644)
    yield Site(root, db, config, data / "logs" / "agent.log")
    shutil.rmtree(root, ignore_errors=True)


class AgentProcess:
    def __init__(self, site: Site) -> None:
        prefix = _as_nobody()
        python = "/usr/bin/python3" if prefix else sys.executable
        site_packages = next(p for p in sys.path if p.endswith("site-packages"))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "R4AGENT_"))}
        env.update(PYTHONPATH=f"{REPO}{os.pathsep}{site_packages}", HOME=str(site.root))
        self.site = site
        self.child = subprocess.Popen(
            [*prefix, python, "-m", "agent", "run", "--config", str(site.config)],
            env=env,
            cwd=site.root,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def log(self) -> str:
        try:
            return self.site.log.read_text("utf-8")
        except OSError:
            return ""

    def stop(self) -> int:
        if self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM)
        try:
            return self.child.wait(60)
        finally:
            if self.child.poll() is None:
                self.child.kill()
                self.child.wait()


def _started(site: Site, backend: StandinBackend) -> AgentProcess:
    agent = AgentProcess(site)
    eventually(lambda: backend.received_for("appointment-status-upload"), 90)
    if _as_nobody():  # it really runs as the unprivileged account
        assert site.log.stat().st_uid == 65534
    return agent


def _send(sqs: SqsEndpoint) -> set[str]:
    patches = {f"acc{i}" for i in range(MESSAGES)}
    client = sqs.client()
    for patch in sorted(patches):
        client.send_message(
            QueueUrl=sqs.queue_url,
            MessageBody=envelope.encode(envelope.PatientSync(CANARY_CODE, patch)),
        )
    return patches


def _delivered(backend: StandinBackend) -> set[str]:
    return {str(r.json["patientPatchId"]) for r in backend.received_for("patient-sync")}


def _dead_letters(sqs: SqsEndpoint) -> list[object]:
    response = sqs.client().receive_message(
        QueueUrl=sqs.dead_letter_queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
    )
    return list(response.get("Messages", []))


def _queue_empty(sqs: SqsEndpoint) -> bool:
    attributes = sqs.client().get_queue_attributes(
        QueueUrl=sqs.queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return set(attributes.values()) == {"0"}


def _recovered(
    agent: AgentProcess, backend: StandinBackend, sqs: SqsEndpoint, patches: set[str]
) -> None:
    eventually(lambda: _delivered(backend) >= patches, 90)
    eventually(lambda: _queue_empty(sqs), 30)
    assert _dead_letters(sqs) == []


def _no_hot_loop(text: str, part: str, outage_seconds: float) -> None:
    probes = text.count(f"{part} still down (probe ")
    # probes back off 2, 4, 4, ... s: about one per PROBE_MAX seconds, never a spin
    assert 1 <= probes <= outage_seconds / 2 + 3, probes
    assert f"{part} is back after" in text


@dataclass
class Outage:
    agent: AgentProcess
    sqs: SqsEndpoint
    part: str
    seconds: float
    patches: set[str]

    def send_and_wait(self) -> None:
        """Once the outage began: send the commands, see them left in the queue, wait out
        `seconds` (many redrive windows) and check nothing was dead-lettered meanwhile."""
        self.patches |= _send(self.sqs)
        eventually(lambda: f"left in the queue until {self.part} is back" in self.agent.log(), 60)
        time.sleep(self.seconds)
        assert _dead_letters(self.sqs) == []


@contextlib.contextmanager
def _through_an_outage(
    site: Site, backend: StandinBackend, sqs: SqsEndpoint, part: str, seconds: float
) -> Iterator[Outage]:
    """The agent through an outage the test starts and ends; then: all delivered, none
    dead-lettered, the part probed without a hot loop, and a clean stop."""
    agent = _started(site, backend)
    try:
        outage = Outage(agent, sqs, part, seconds, set())
        yield outage
        _recovered(agent, backend, sqs, outage.patches)
        _no_hot_loop(agent.log(), part, seconds)
    finally:
        code = agent.stop()
    assert code == ExitCode.END_OF_LIFE


def test_r4_locked_by_another_process_for_20_s_as_nobody(
    site: Site, flynotes_standin: StandinBackend, sqs_server: SqsEndpoint
) -> None:
    with _through_an_outage(site, flynotes_standin, sqs_server, "R4", 20) as outage:
        holder = sqlite3.connect(site.db, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")  # R4's own writer, a backup tool
        outage.send_and_wait()
        holder.execute("ROLLBACK")
        holder.close()


def test_r4_file_replaced_then_restored_unreadable_then_readable_as_nobody(
    site: Site, flynotes_standin: StandinBackend, sqs_server: SqsEndpoint
) -> None:
    kept = site.root / "kept.sqlite"
    shutil.copy(site.db, kept)
    with _through_an_outage(site, flynotes_standin, sqs_server, "R4", 10) as outage:
        empty = site.root / "empty.sqlite"
        sqlite3.connect(empty).close()
        empty.chmod(0o644)
        empty.replace(site.db)  # a restore gone wrong: not R4's database
        outage.send_and_wait()
        kept.chmod(0o600)  # restored by root, not yet readable by the service's account
        kept.replace(site.db)
        time.sleep(10)
        assert _dead_letters(sqs_server) == []
        site.db.chmod(0o644)


def test_backend_answering_500_for_30_s(
    site: Site, flynotes_standin: StandinBackend, sqs_server: SqsEndpoint
) -> None:
    with _through_an_outage(site, flynotes_standin, sqs_server, "backend", 30) as outage:
        flynotes_standin.fail_next(100_000, status=500)  # every endpoint, /data too
        outage.send_and_wait()
        flynotes_standin.clear_faults()


def test_403_on_every_call_exits_78_at_once_then_everything_is_delivered(
    site: Site, flynotes_standin: StandinBackend, sqs_server: SqsEndpoint
) -> None:
    agent = _started(site, flynotes_standin)
    try:
        flynotes_standin.reject_licence()
        patches = _send(sqs_server)
        assert agent.child.wait(60) == ExitCode.CONFIG_ERROR  # not at the next hourly refresh
    finally:
        agent.stop()
    assert _dead_letters(sqs_server) == []
    flynotes_standin.reject_licence(False)  # put right; the service host starts it again
    again = AgentProcess(site)
    try:
        _recovered(again, flynotes_standin, sqs_server, patches)
    finally:
        code = again.stop()
    assert code == ExitCode.END_OF_LIFE
