"""A practice install under Wine, end to end, with the real Windows exe, service and MSI.

One fresh Wine prefix plays the practice server. The backend stand-in, moto (SQS), the TUF
repository (HTTP) and the R4 stand-in database run on the host; Wine processes share the host's
loopback, and Wine's odbc32 hands ODBC calls to the host's unixODBC + SQLite3 driver (so the
database path in the connection string is a host path).

Journey: signatures verify -> silent MSI install (licence key and a SQL login as MSI properties,
never in an exe command line nor in the verbose MSI log; the practice's existing config.toml
shortens the agent's poll window to seconds)
-> the service bootstraps 1.0.0 and the agent uploads the patients -> practice IT runs the
installed exe's `status` and `support-bundle` against the running service -> while it runs, 1.1.0 is
published and the backend asks for it -> at its next version check the agent updates through
TUF, exits, and the service brings up 1.1.0 -> the backend asks for 1.0.0 -> downgrade -> stop +
uninstall: service and binaries gone, ProgramData kept -> install again over the kept data ->
uninstall the RUNNING service with REMOVEDATA=1: nothing left, no process left. Every step is
asserted from what the stand-in received (the agent's User-Agent names its version) and from
files, registry and service state in the prefix.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from agent.standin.backend import StandinBackend
from agent.standin.sqs_local import SqsEndpoint
from tests.fixtures.canary import canaries_in_bytes
from tests.fixtures.flynotes_backend import TEST_LICENCE_KEY
from tests.fixtures.r4_database import R4SampleDb
from tests.windows.conftest import (
    REPO,
    WindowsRelease,
    release_windows_cli,
    timed,
    verify,
)
from tests.windows.conftest import winehost as winehost

pytestmark = pytest.mark.wine

SYSTEM32 = r"C:\windows\system32"
POLL_MINUTES = 0.2  # the agent re-checks the wanted version every 12 s (60 min in production)
SQL_USER, SQL_PASSWORD = "r4reader", "Sql-Canary;Pass}9137"  # the SQLite driver ignores UID/PWD
EVENT_SOURCE_KEY = r"HKLM\SYSTEM\CurrentControlSet\Services\EventLog\Application\R4Agent"


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


def _secrets_in(raw: bytes, *secrets: str) -> list[str]:
    """Which of `secrets` the bytes of a log hold, as UTF-8 or UTF-16 (msiexec writes either)."""
    return [
        s for s in secrets if s.encode("utf-8") in raw or s.encode("utf-16-le") in raw
    ]


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
    # the MSI was built from the exe AFTER it was signed: it carries the signed exe
    assert _cab_holds(windows_release.msi, windows_release.exe_1_0, tmp_path)


def _cab_holds(msi: Path, exe: Path, tmp_path: Path) -> bool:
    import subprocess

    out = tmp_path / "extracted"
    subprocess.run(["msiextract", "-C", str(out), str(msi)], check=True, capture_output=True,
                   timeout=300)
    found = list(out.rglob("r4agent.exe"))
    return len(found) == 1 and found[0].read_bytes() == exe.read_bytes()


def test_the_windows_exe_is_byte_identical_when_built_twice(
    windows_release: WindowsRelease,
) -> None:
    """Update patches are computed from these bytes. The second build ran from a copy of the
    source tree at another path, in its own fresh PyInstaller workpath (build/freeze.py), so a
    cached Analysis/PYZ cannot make the two equal; hash-seed order, timestamps or an absolute
    path in the bundle would make them differ."""
    again = hashlib.sha256(windows_release.exe_1_0_again.read_bytes()).hexdigest()
    assert again == windows_release.exe_1_0_unsigned_sha256


def _python_in_build_prefix(script: str, *args: str, timeout_s: float = 300) -> str:
    """Run a harness script with the build prefix's Windows Python (pywin32; the fresh
    prefix has none). Its paths into the fresh prefix are Z:\\ paths of the same files."""
    prefix = winehost.build_prefix()
    path = REPO / "tests" / "windows" / "wine_scripts" / script
    return str(prefix.python_run([prefix.windows_path(path), *args], timeout=timeout_s).stdout)


def _reg_query(prefix: Any, key: str) -> str:
    done = prefix.run([SYSTEM32 + r"\reg.exe", "query", key], check=False)
    return str(done.stdout) if done.returncode == 0 else ""


def test_practice_install_update_downgrade_uninstall(
    windows_release: WindowsRelease,
    fresh_prefix: Any,
    flynotes_standin: StandinBackend,
    sqs_server: SqsEndpoint,
    r4_sample_db: R4SampleDb,
    update_repo_url: str,
    tmp_path: Path,
) -> None:
    prefix = fresh_prefix
    flynotes_standin.sqs_queue_url = sqs_server.queue_url
    flynotes_standin.sqs_region = sqs_server.region
    flynotes_standin.set_credentials(
        sqs_server.access_key_id, sqs_server.secret_access_key, sqs_server.session_token
    )
    flynotes_standin.library_version = "1.0.0"
    vendor = prefix.drive_c / "ProgramData" / "Flynotes"
    data = vendor / "R4Agent"
    install_dir = prefix.drive_c / "Program Files" / "Flynotes" / "R4 Agent"
    program_files_exe = install_dir / "r4agent.exe"
    msi = prefix.drive_c / "r4agent.msi"
    msi.write_bytes(windows_release.msi.read_bytes())
    # The practice's existing config (kept by `configure`, which merges the MSI properties in):
    # a short poll window, so the agent re-checks the wanted version within seconds.
    data.mkdir(parents=True)
    (data / "config.toml").write_text(f"[timing]\npoll_minutes = {POLL_MINUTES}\n")
    msi_log = prefix.drive_c / "msi-install.log"
    install_args = [
        SYSTEM32 + r"\msiexec.exe", "/i", r"C:\r4agent.msi", "/qn", "/l*v", r"C:\msi-install.log",
        f"LICENCEKEY={TEST_LICENCE_KEY}", f"BACKENDURL={flynotes_standin.url}",
        f"DBCONNECTION=Driver=SQLite3;Database={r4_sample_db.path}",
        f"SQLUSER={SQL_USER}", f"SQLPASSWORD={SQL_PASSWORD}",
        f"SQSENDPOINTURL={sqs_server.endpoint_url}", f"UPDATEURL={update_repo_url}",
    ]

    started = time.monotonic()
    install = prefix.run(install_args, check=False, timeout=600)
    timed("msiexec /i", started)
    install_log = (data / "logs" / "install.log")
    assert install.returncode == 0, (
        install.stdout[-2000:] + (install_log.read_text() if install_log.exists() else "")
    )
    assert program_files_exe.is_file()
    config = (data / "config.toml").read_text()
    assert TEST_LICENCE_KEY in config and not (data / "install-settings.txt").exists()
    assert "poll_minutes" in config  # the existing config was merged into, not replaced
    assert f'user = "{SQL_USER}"' in config and f'password = "{SQL_PASSWORD}"' in config
    # Wine's msi ignores MsiHiddenProperties; R4ForgetSecrets empties the secret properties
    # before the property dump that ends a verbose log, so neither secret is in it
    logged = msi_log.read_bytes()
    assert b"Property(S): ProductName" in logged  # the dump is there ...
    assert _secrets_in(logged, TEST_LICENCE_KEY, SQL_PASSWORD) == []  # ... without the secrets
    assert "service prepare 1.0.0: exit 0" in install_log.read_text()
    query = prefix.run([SYSTEM32 + r"\sc.exe", "query", "R4Agent"], check=False)
    assert "RUNNING" in query.stdout, query.stdout
    # Event Log source: the installed message table, not a copy in a runtime folder
    source = _reg_query(prefix, EVENT_SOURCE_KEY)
    assert "r4agent-messages.dll" in source and "_MEI" not in source, source
    assert (install_dir / "r4agent-messages.dll").is_file()
    # The owner/DACL calls of `prepare` ran; Wine keeps no security descriptors on files, so
    # what reads back is Wine's synthesised one (owner: the Wine user) — trusted by the host's
    # check, as SYSTEM/Administrators are on Windows (real ACLs: .github/workflows/windows.yml).
    as_seen = winehost.build_prefix().windows_path
    owners = json.loads(_python_in_build_prefix(
        "read_owners.py", as_seen(vendor), as_seen(data), as_seen(data / "config.toml")
    ).strip().splitlines()[-1])
    assert all(o["owner_trusted"] for o in owners), owners

    started = time.monotonic()
    wait_for(lambda: bool(flynotes_standin.received_for("patient-upload")),
             "the service's agent (1.0.0) uploads the patients")
    timed("install -> patients uploaded", started)
    uploads = flynotes_standin.received_for("patient-upload")
    assert all(r.headers["user-agent"].startswith("r4agent/1.0.0") for r in uploads)
    # sqlite3 is in the Windows exe: the acknowledged chunks are in the change ledger
    wait_for(lambda: (data / "uploads-ledger.sqlite3").is_file(), "the upload change ledger")
    assert (data / "versions" / "1.0.0" / "r4agent.exe").is_file()
    assert not (data / "runtime").exists()  # the onefile unpacks under Program Files
    _status_and_support_bundle_of_the_running_service(prefix, data)

    # 1.1.0 is released (`release windows`, from its Wine freeze) while the practice's agent
    # runs; the backend then asks for it
    started = time.monotonic()
    release_windows_cli(windows_release.repository, windows_release.cert, "1.1.0",
                        tmp_path / "release-1.1.0", "--exe", str(windows_release.exe_1_1),
                        "--message-dll", str(winehost.message_dll()))
    timed("release windows 1.1.0 while the agent runs", started)
    started = time.monotonic()
    flynotes_standin.library_version = "1.1.0"
    wait_for(lambda: "1.1.0" in agent_versions_seen(flynotes_standin),
             "the agent notices 1.1.0 by itself and the service brings it up")
    timed("update 1.0.0 -> 1.1.0", started)
    assert (data / "versions" / "1.1.0" / "r4agent.exe").is_file()
    assert json.loads((data / "current").read_text())["version"] == "1.1.0"

    started = time.monotonic()
    flynotes_standin.library_version = "1.0.0"
    wait_for(lambda: agent_versions_seen(flynotes_standin)[-1:] == ["1.0.0"]
             and len(agent_versions_seen(flynotes_standin)) >= 3,
             "the service goes back to 1.0.0 (downgrade)")
    timed("downgrade 1.1.0 -> 1.0.0", started)
    assert agent_versions_seen(flynotes_standin) == ["1.0.0", "1.1.0", "1.0.0"]
    assert json.loads((data / "current").read_text())["version"] == "1.0.0"

    started = time.monotonic()
    stop = prefix.run([SYSTEM32 + r"\net.exe", "stop", "R4Agent"], check=False, timeout=180)

    def stopped() -> bool:
        state = prefix.run([SYSTEM32 + r"\sc.exe", "query", "R4Agent"], check=False).stdout
        return "STOPPED" in state

    wait_for(stopped, "the service stops (agent asked to finish, killed after the grace)", 180)
    timed("service stop", started)
    service_log = (data / "logs" / "service.log").read_text()
    assert "stopped (" in service_log  # the host's stop entry (Event Log text, also logged)
    # the host's CTRL_BREAK reached the agent through the shared console: it finished in-flight
    # work and exited by itself (END_OF_LIFE), no kill after the grace
    agent_log = (data / "logs" / "agent.log").read_text()
    assert "stop requested: in-flight work finished" in agent_log
    assert "stopped (exit 0 (END_OF_LIFE))" in service_log

    # msiexec straight after STOPPED: its `service stop` action waits for the onefile
    # bootloader that outlives STOPPED, so the exe is not left behind
    started = time.monotonic()
    uninstall = prefix.run(
        [SYSTEM32 + r"\msiexec.exe", "/x", r"C:\r4agent.msi", "/qn"], check=False, timeout=600
    )
    timed("msiexec /x", started)
    assert uninstall.returncode == 0, stop.stdout + uninstall.stdout
    gone = prefix.run([SYSTEM32 + r"\sc.exe", "query", "R4Agent"], check=False)
    assert gone.returncode != 0 and "SERVICE_NAME" not in gone.stdout, gone.stdout
    assert not program_files_exe.exists()
    assert not install_dir.exists()  # runtime folder and message DLL went too
    assert "r4agent-messages.dll" not in _reg_query(prefix, EVENT_SOURCE_KEY)
    assert (data / "config.toml").is_file()  # ProgramData kept without REMOVEDATA=1
    logs = list((data / "logs").glob("*.log"))
    secrets_in_logs = [
        p for p in logs if _secrets_in(p.read_bytes(), TEST_LICENCE_KEY, SQL_PASSWORD)
    ]
    assert secrets_in_logs == []

    # Install again over the kept data, then uninstall the RUNNING service with REMOVEDATA=1
    started = time.monotonic()
    seen = len(flynotes_standin.received)
    # no LICENCEKEY, no database: what the kept config.toml holds stays
    reinstall = prefix.run(
        [SYSTEM32 + r"\msiexec.exe", "/i", r"C:\r4agent.msi", "/qn",
         f"BACKENDURL={flynotes_standin.url}", f"UPDATEURL={update_repo_url}"],
        check=False, timeout=600,
    )
    assert reinstall.returncode == 0, reinstall.stdout[-2000:]
    wait_for(lambda: len(flynotes_standin.received) > seen,
             "the reinstalled service's agent (kept config, no key given) talks to the backend")
    timed("reinstall over kept data -> agent running", started)
    assert prefix.processes("r4agent.exe")
    started = time.monotonic()
    purge = prefix.run([SYSTEM32 + r"\msiexec.exe", "/x", r"C:\r4agent.msi", "/qn",
                        "REMOVEDATA=1"], check=False, timeout=600)
    timed("msiexec /x REMOVEDATA=1 of the running service", started)
    assert purge.returncode == 0, purge.stdout[-2000:]
    assert not vendor.exists(), sorted(str(p) for p in vendor.rglob("*"))
    assert not install_dir.exists(), sorted(str(p) for p in install_dir.rglob("*"))
    assert prefix.run([SYSTEM32 + r"\sc.exe", "query", "R4Agent"], check=False).returncode != 0
    assert prefix.processes("r4agent.exe") == []


def _status_and_support_bundle_of_the_running_service(prefix: Any, data: Path) -> None:
    """What practice IT runs from an elevated prompt, with the installed exe, while the
    service runs: `status` reads the agent's status file and asks the service manager;
    `support-bundle` packs doctor, status, logs, the redacted config and the updater's files."""
    exe = r"C:\Program Files\Flynotes\R4 Agent\r4agent.exe"
    wait_for(lambda: (data / "status.json").is_file()
             and json.loads((data / "status.json").read_text())["cycle"] is not None,
             "the agent's status file records its first cycle", 60)
    started = time.monotonic()
    shown = prefix.run([exe, "status", "--json"], check=False, timeout=300)
    timed("r4agent status --json (installed exe)", started)
    assert shown.returncode == 0, shown.stdout[-3000:]
    doc = json.loads(shown.stdout[shown.stdout.index("{"):])
    assert doc["service"] == {"name": "R4Agent", "installed": True, "state": "running"}, doc
    assert doc["versions"]["service_runs"] == "1.0.0" and doc["versions"]["agent"] == "1.0.0"
    tables = {t["table"]: t for t in doc["agent"]["cycle"]["tables"]}
    assert tables["patients"]["counts"]["sent"] > 0 and tables["patients"]["error"] is None
    screen = prefix.run([exe, "status"], check=False, timeout=300).stdout
    assert "R4Agent: running" in screen and "last cycle" in screen, screen

    started = time.monotonic()
    made = prefix.run([exe, "support-bundle", "--out", r"C:\support.zip"], check=False,
                      timeout=600)
    timed("r4agent support-bundle (installed exe)", started)
    assert made.returncode == 0, made.stdout[-3000:]
    with zipfile.ZipFile(prefix.drive_c / "support.zip") as archive:
        contents = {name: archive.read(name) for name in archive.namelist()}
    assert {"MANIFEST.txt", "doctor.txt", "status.json", "config.toml", "logs/agent.log",
            "logs/service.log", "updater/current", "updater/update-url", "versions.txt",
            "odbc-drivers.txt"} <= set(contents), sorted(contents)
    manifest = contents["MANIFEST.txt"].decode()
    assert "event-log.txt" in manifest and "msi/" in manifest  # packed, or said why not
    doctor = contents["doctor.txt"].decode()
    assert "Windows service    R4Agent is installed and running" in doctor, doctor
    assert "licence_key = ***" in contents["config.toml"].decode()
    for name, content in contents.items():
        assert TEST_LICENCE_KEY.encode() not in content, name
        assert canaries_in_bytes(content) == [], name


def test_killing_an_agent_that_ignores_stop_leaves_no_r4agent_process_under_wine(
    windows_release: WindowsRelease, tmp_path: Path
) -> None:
    """The host's launcher (Windows Python under Wine) starts the real onefile exe as a
    long-running tree (`service debug`: bootloader + Python host, whose own agent exits on the
    missing config and is backed off) and kills it without asking: the bootloader's Python child
    must die with it (Job Object). Killing only the bootloader, as before, left the child:
    "left [<pid>]"."""
    prefix = winehost.build_prefix()
    exe = tmp_path / "pd" / "r4agent.exe"
    exe.parent.mkdir()
    exe.write_bytes(windows_release.exe_1_0.read_bytes())
    started = time.monotonic()
    out = _python_in_build_prefix(
        "kill_tree.py", prefix.windows_path(REPO), prefix.windows_path(exe),
        prefix.windows_path(tmp_path / "pd" / "Flynotes" / "R4Agent"),
        timeout_s=120,  # a surviving child keeps our pipe open: the run then times out
    )
    timed("kill an agent tree under Wine", started)
    assert "tree killed" in out, out
    # checked by the script while its job handle was still open (the host's stays open for
    # hours: closing it would kill the tree anyway and hide a kill that missed the child)
    assert out.strip().splitlines()[-1].endswith("left []"), out
    wait_for(lambda: not prefix.processes(tmp_path.name),
             "no process of the killed tree is left", 30)


def test_the_hosts_launch_check_leaves_restore_and_take_ownership_disabled_under_wine(
    wine_tools: None, tmp_path: Path
) -> None:
    """The host builds the tree security at every service start for its launch check, which
    only reads owners; its agents inherit its token. Enabling SeRestore/SeTakeOwnership when it
    was built left them enabled in the host, and so in every agent, for life. `lock` (what
    `prepare` does) still enables them."""
    folder = tmp_path / "R4Agent"
    folder.mkdir()
    as_seen = winehost.build_prefix().windows_path
    out = _python_in_build_prefix("privileges.py", as_seen(REPO), as_seen(folder))
    both = "['SeRestorePrivilege', 'SeTakeOwnershipPrivilege']"
    assert out.strip().splitlines()[-1] == f"before []; checked []; locked {both}", out


def test_a_hung_staged_build_fails_its_smoke_test_in_time_and_leaves_no_process_under_wine(
) -> None:
    """The staging smoke test (Windows Python under Wine) of a build that hangs with a child
    holding its stdout/stderr: it must fail at its timeout with the whole tree killed. Before,
    it waited for the pipes with no timeout: the harness never ended."""
    started = time.monotonic()
    out = _python_in_build_prefix("smoke_hang.py", winehost.build_prefix().windows_path(REPO),
                                  timeout_s=120)
    timed("smoke test of a hung build under Wine", started)
    last = out.strip().splitlines()[-1]
    assert "did not answer self-test" in last and "child left False" in last, out
    took = float(last.split("after ", 1)[1].split(" s;", 1)[0])
    assert took < 5 + 15, out  # its 5 s timeout plus the kill, not the build's 600 s
