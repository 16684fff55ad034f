"""A practice install under Wine, end to end, with the real Windows exe, service and MSI.

One fresh Wine prefix plays the practice server. The backend stand-in, moto (SQS), the TUF
repository (HTTP) and the R4 stand-in database run on the host; Wine processes share the host's
loopback, and Wine's odbc32 hands ODBC calls to the host's unixODBC + SQLite3 driver (so the
database path in the connection string is a host path).

Journey: signatures verify -> silent MSI install (licence key as an MSI property, never in an exe
command line) -> the service bootstraps 1.0.0 and the agent uploads the patients -> the backend
asks for 1.1.0 and a `restart` command arrives -> the agent updates through TUF, exits, and the
service brings up 1.1.0 -> the backend asks for 1.0.0 -> downgrade -> uninstall: service and
binaries gone, ProgramData kept. Every step is asserted from what the stand-in received (the
agent's User-Agent names its version) and from files/service state in the prefix.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from agent.standin.backend import StandinBackend
from agent.standin.sqs_local import SqsEndpoint
from tests.fixtures.flynotes_backend import TEST_LICENCE_KEY
from tests.fixtures.r4_database import R4SampleDb
from tests.windows.conftest import WindowsRelease, timed, verify

pytestmark = pytest.mark.wine

SYSTEM32 = r"C:\windows\system32"


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 240.0) -> None:
    """Poll real processes' effects (a deadline for a hung run, not a timed assertion)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for: {what}")
        time.sleep(0.5)


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def update_repo_url(windows_release: WindowsRelease) -> Iterator[str]:
    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(_Quiet, directory=str(windows_release.repository.repo_dir))
    )
    thread = threading.Thread(target=server.serve_forever, args=(0.1,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def agent_versions_seen(backend: StandinBackend) -> list[str]:
    seen: list[str] = []
    for request in backend.received:
        agent = request.headers.get("user-agent", "")
        if agent.startswith("r4agent/"):
            version = agent.split("/", 1)[1].split()[0]
            if not seen or seen[-1] != version:
                seen.append(version)
    return seen


def send(sqs: SqsEndpoint, body: dict[str, Any]) -> None:
    sqs.client().send_message(QueueUrl=sqs.queue_url, MessageBody=json.dumps(body))


def test_signed_exe_and_msi_verify_and_a_tampered_msi_does_not(
    windows_release: WindowsRelease, tmp_path: Path
) -> None:
    for artefact in (windows_release.exe_1_0, windows_release.msi):
        result = verify(artefact, windows_release.cert)
        assert result.returncode == 0, result.stdout + result.stderr
    tampered = tmp_path / "tampered.msi"
    data = bytearray(windows_release.msi.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tampered.write_bytes(bytes(data))
    assert verify(tampered, windows_release.cert).returncode != 0


def test_practice_install_update_downgrade_uninstall(
    windows_release: WindowsRelease,
    fresh_prefix: Any,
    flynotes_standin: StandinBackend,
    sqs_server: SqsEndpoint,
    r4_sample_db: R4SampleDb,
    update_repo_url: str,
) -> None:
    prefix = fresh_prefix
    flynotes_standin.sqs_queue_url = sqs_server.queue_url
    flynotes_standin.sqs_region = sqs_server.region
    flynotes_standin.set_credentials(
        sqs_server.access_key_id, sqs_server.secret_access_key, sqs_server.session_token
    )
    flynotes_standin.library_version = "1.0.0"
    data = prefix.drive_c / "ProgramData" / "Flynotes" / "R4Agent"
    program_files_exe = prefix.drive_c / "Program Files" / "Flynotes" / "R4 Agent" / "r4agent.exe"
    msi = prefix.drive_c / "r4agent.msi"
    msi.write_bytes(windows_release.msi.read_bytes())

    started = time.monotonic()
    install = prefix.run(
        [SYSTEM32 + r"\msiexec.exe", "/i", r"C:\r4agent.msi", "/qn",
         f"LICENCEKEY={TEST_LICENCE_KEY}", f"BACKENDURL={flynotes_standin.url}",
         f"DBCONNECTION=Driver=SQLite3;Database={r4_sample_db.path}",
         f"SQSENDPOINTURL={sqs_server.endpoint_url}", f"UPDATEURL={update_repo_url}"],
        check=False, timeout=600,
    )
    timed("msiexec /i", started)
    install_log = (data / "logs" / "install.log")
    assert install.returncode == 0, (
        install.stdout[-2000:] + (install_log.read_text() if install_log.exists() else "")
    )
    assert program_files_exe.is_file()
    config = (data / "config.toml").read_text()
    assert TEST_LICENCE_KEY in config and not (data / "install-settings.txt").exists()
    query = prefix.run([SYSTEM32 + r"\sc.exe", "query", "R4Agent"], check=False)
    assert "RUNNING" in query.stdout, query.stdout

    started = time.monotonic()
    wait_for(lambda: bool(flynotes_standin.received_for("patient-upload")),
             "the service's agent (1.0.0) uploads the patients")
    timed("install -> patients uploaded", started)
    uploads = flynotes_standin.received_for("patient-upload")
    assert all(r.headers["user-agent"].startswith("r4agent/1.0.0") for r in uploads)
    assert (data / "versions" / "1.0.0" / "r4agent.exe").is_file()

    started = time.monotonic()
    flynotes_standin.library_version = "1.1.0"
    send(sqs_server, {"type": "restart"})
    wait_for(lambda: "1.1.0" in agent_versions_seen(flynotes_standin),
             "the service brings up 1.1.0 after a TUF-verified update")
    timed("update 1.0.0 -> 1.1.0", started)
    assert (data / "versions" / "1.1.0" / "r4agent.exe").is_file()
    assert json.loads((data / "current").read_text())["version"] == "1.1.0"

    started = time.monotonic()
    flynotes_standin.library_version = "1.0.0"
    send(sqs_server, {"type": "restart"})
    wait_for(lambda: agent_versions_seen(flynotes_standin)[-1:] == ["1.0.0"]
             and len(agent_versions_seen(flynotes_standin)) >= 3,
             "the service goes back to 1.0.0 (downgrade)")
    timed("downgrade 1.1.0 -> 1.0.0", started)
    assert agent_versions_seen(flynotes_standin) == ["1.0.0", "1.1.0", "1.0.0"]

    started = time.monotonic()
    stop = prefix.run([SYSTEM32 + r"\net.exe", "stop", "R4Agent"], check=False, timeout=180)

    def stopped() -> bool:
        state = prefix.run([SYSTEM32 + r"\sc.exe", "query", "R4Agent"], check=False).stdout
        return "STOPPED" in state

    wait_for(stopped, "the service stops (agent asked to finish, killed after the grace)", 180)
    # SCM says STOPPED before the onefile bootloader has cleaned up and exited; uninstalling
    # while it still holds the exe leaves the exe behind (as on Windows: stop, then remove).
    wait_for(lambda: not prefix.processes("r4agent.exe"), "every r4agent process has exited", 60)
    timed("service stop", started)
    service_log = (data / "logs" / "service.log").read_text()
    assert "stopped (" in service_log  # the host's stop entry (Event Log text, also logged)
    # the host's CTRL_BREAK reached the agent through the shared console: it finished in-flight
    # work and exited by itself (END_OF_LIFE), no kill after the grace
    agent_log = (data / "logs" / "agent.log").read_text()
    assert "stop requested: in-flight work finished" in agent_log
    assert "stopped (exit 0 (END_OF_LIFE))" in service_log

    started = time.monotonic()
    uninstall = prefix.run(
        [SYSTEM32 + r"\msiexec.exe", "/x", r"C:\r4agent.msi", "/qn"], check=False, timeout=600
    )
    timed("msiexec /x", started)
    assert uninstall.returncode == 0, stop.stdout + uninstall.stdout
    gone = prefix.run([SYSTEM32 + r"\sc.exe", "query", "R4Agent"], check=False)
    assert gone.returncode != 0 and "SERVICE_NAME" not in gone.stdout, gone.stdout
    assert not program_files_exe.exists()
    assert (data / "config.toml").is_file()  # ProgramData kept without REMOVEDATA=1
    logs = list((data / "logs").glob("*.log"))
    secrets_in_logs = [p for p in logs if TEST_LICENCE_KEY in p.read_text(errors="replace")]
    assert secrets_in_logs == []
