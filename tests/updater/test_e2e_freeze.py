"""End to end with real builds: two PyInstaller exes (1.0.0 and 1.1.0, with the test repository's
root baked in) published to a TUF repository on loopback; the host runs the real agent against
the Flynotes stand-in, moto SQS and an R4-shaped SQLite database, and follows the stand-in's
`libraryVersion` from 1.0.0 up to 1.1.0, back down to 1.0.0 (full archive), and up again, which
must use the bsdiff patch inside the frozen exe (a too-aggressive cut of bz2 fails here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.clock import SystemClock
from agent.standin import r4_sample
from agent.standin.backend import StandinBackend
from agent.standin.sqs_local import LocalSqs
from tests.updater.support import HOST_APP, make_repo, serve, service_start
from updater.agent_gate import ENV_UPDATE_URL
from updater.host import EventWaiter, Host, HostEvent, HostPolicy, SubprocessLauncher
from updater.layout import Layout
from updater.state import PointerState, read_pointer, read_record

REPO_ROOT = Path(__file__).resolve().parents[2]
LICENCE = "e2e-licence-7c1d0b"


def freeze(version: str, out: Path, trusted_root: Path) -> Path:
    subprocess.run(
        [sys.executable, str(REPO_ROOT / "build" / "freeze.py"), "--version", version,
         "--out", str(out), "--trusted-root", str(trusted_root)],
        check=True, cwd=REPO_ROOT, timeout=1800,
    )
    exe = out / "r4agent"
    assert exe.is_file()
    return exe


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def agents_seen(backend: StandinBackend) -> list[str]:
    seen = []
    for request in backend.received:
        agent = next((v for k, v in request.headers.items() if k.lower() == "user-agent"), "")
        if agent.startswith("r4agent/"):
            seen.append(agent.split("/", 1)[1].split()[0])
    return seen


@pytest.mark.freeze
def test_host_and_frozen_agent_follow_library_version_up_and_down(tmp_path: Path) -> None:
    sim = make_repo(tmp_path / "release")
    root = tmp_path / "root.json"
    root.write_bytes(sim.repo.root_bytes())
    exe_10 = freeze("1.0.0", tmp_path / "build-1.0.0", root)
    exe_11 = freeze("1.1.0", tmp_path / "build-1.1.0", root)
    sim.repo.add_bundle(exe_10.parent, "1.0.0")
    sim.repo.add_bundle(exe_11.parent, "1.1.0")

    db = tmp_path / "sys2000.sqlite"
    r4_sample.generate(db, 30, seed=5)
    layout = Layout(tmp_path / "ProgramData")
    service_start(layout, exe_10, "1.0.0")  # what the service does on its first start
    events: list[HostEvent] = []
    stop = threading.Event()

    for http in serve(sim.repo_dir):
        with LocalSqs(visibility_timeout=5) as sqs, StandinBackend(
            [LICENCE], library_version="1.1.0", sqs_queue_url=sqs.endpoint.queue_url
        ) as backend:
            config = layout.config_file
            config.write_text(
                f"licence_key = {json.dumps(LICENCE)}\n"
                f"backend_url = {json.dumps(backend.url)}\n"
                f"sqs_endpoint_url = {json.dumps(sqs.endpoint.endpoint_url)}\n"
                f"data_dir = {json.dumps(str(layout.base))}\n"
                "[database]\n"
                f"connection_string = {json.dumps(r4_sample.sqlite_connection_string(db))}\n"
                "[timing]\npoll_minutes = 0.02\n"
            )
            env = dict(os.environ, R4AGENT_CONFIG=str(config), **{ENV_UPDATE_URL: http.url})
            host = Host(layout, SubprocessLauncher(layout.logs_dir / "agent-console.log"),
                        SystemClock(), EventWaiter(), HostPolicy(poll_s=0.2, stop_grace_s=30),
                        events.append, env=env)
            thread = threading.Thread(target=host.run, args=(stop,), daemon=True)
            thread.start()
            try:
                def on(version: str) -> bool:
                    pointer = read_pointer(layout.current_file)
                    return (pointer is not None and pointer.version == version
                            and pointer.state is PointerState.CONFIRMED
                            and version in agents_seen(backend))

                wait_for(lambda: on("1.1.0"), "the agent to move up to 1.1.0")
                backend.clear_received()
                backend.library_version = "1.0.0"
                wait_for(lambda: on("1.0.0"), "the agent to move back down to 1.0.0")
                down = read_record(layout.install_state_file)
                assert down is not None and down.route == "full"  # downgrades: full archive
                # up again: the frozen updater now has 1.0.0's tar and must use the patch
                http.requests.clear()
                backend.library_version = "1.1.0"
                wait_for(lambda: on("1.1.0"), "the agent to move up to 1.1.0 again")
                up = read_record(layout.install_state_file)
                assert up is not None and up.route == "patch"
                assert http.fetched(f"{HOST_APP}-1.1.0.patch")
                assert not http.fetched(f"{HOST_APP}-1.1.0.tar.gz"), "patch route fell back to full"
            finally:
                stop.set()
                thread.join(120)
    console = (layout.logs_dir / "agent-console.log")
    assert not thread.is_alive(), console.read_text()[-3000:] if console.exists() else ""

    starts = [e.version for e in events if e.kind == "start"]
    assert starts[0] == "1.0.0" and starts[-1] == "1.1.0" and "1.1.0" in starts
    first_11 = starts.index("1.1.0")
    assert set(starts[:first_11]) == {"1.0.0"}
    updated_exits = [e for e in events if e.kind == "exit" and "UPDATED" in e.detail]
    assert len(updated_exits) >= 3  # 1.0.0 -> 1.1.0 -> 1.0.0 -> 1.1.0
    assert not any(e.kind == "rollback" for e in events)
    pointer = read_pointer(layout.current_file)
    assert pointer is not None and (pointer.version, pointer.previous) == ("1.1.0", "1.0.0")
    assert layout.installed_versions() == ["1.0.0", "1.1.0"]
