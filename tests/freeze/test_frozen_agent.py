"""The frozen Linux exe, built by build/freeze.py exactly as releases are, doing real work.

The slimming (build/hooks, EXCLUDES in build/r4agent.spec) cuts botocore to sqs+sts, leaves out
`cryptography` and PyNaCl (securesystemslib verifies ed25519 in pure Python) and the stdlib to
what is used. A cut too deep must fail here, so the frozen exe runs
as the installed service would (`service debug` = the host, which installs the exe as version
1.0.0 and starts it): it reads the R4 stand-in through the real ODBC stack, uploads patients to
the backend stand-in, long-polls moto over real HTTP and handles a patient-sync command from the
queue, and verifies real TUF metadata (signed with throwaway keys, baked-in root) over loopback.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
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
from updater.repo.repository import Repository

pytestmark = pytest.mark.freeze

REPO = Path(__file__).resolve().parents[2]
VERSION = "1.0.0"


def freeze(out: Path, trusted_root: Path, version: str = VERSION) -> Path:
    subprocess.run(
        [sys.executable, str(REPO / "build" / "freeze.py"), "--version", version,
         "--out", str(out), "--trusted-root", str(trusted_root)],
        check=True, timeout=1800,
    )
    return out / "r4agent"


@pytest.fixture(scope="session")
def tuf_repository(tmp_path_factory: pytest.TempPathFactory) -> Repository:
    tmp = tmp_path_factory.mktemp("tuf")
    Repository.create_keys(tmp / "keys")
    repo = Repository(tmp / "repo", tmp / "keys")
    repo.initialize()
    return repo


@pytest.fixture(scope="session")
def trusted_root(tuf_repository: Repository, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("root") / "root.json"
    path.write_bytes(tuf_repository.root_bytes())
    return path


@pytest.fixture(scope="session")
def frozen_exe(tmp_path_factory: pytest.TempPathFactory, trusted_root: Path) -> Path:
    return freeze(tmp_path_factory.mktemp("dist-a"), trusted_root)


class _QuietHandler(SimpleHTTPRequestHandler):
    requested: list[str]

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def do_GET(self) -> None:
        self.requested.append(self.path)
        super().do_GET()


@pytest.fixture
def update_server(tuf_repository: Repository) -> Iterator[tuple[str, list[str]]]:
    requested: list[str] = []
    handler = type("H", (_QuietHandler,), {"requested": requested})
    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(handler, directory=str(tuf_repository.repo_dir))
    )
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", requested
    server.shutdown()
    server.server_close()


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 180.0) -> None:
    """Poll a condition of a real subprocess (a deadline, not a timed assertion)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for: {what}")
        time.sleep(0.2)


def test_frozen_exe_reports_the_version_baked_in_at_build_time(frozen_exe: Path) -> None:
    out = subprocess.run([str(frozen_exe), "--version"], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == f"r4agent {VERSION}"
    assert "1.0.0" in (REPO / "agent" / "_version.py").read_text()  # the repo file untouched


def test_frozen_self_test_verifies_the_real_root_without_cryptography_in_the_exe(
    frozen_exe: Path, tuf_repository: Repository
) -> None:
    # self-test verifies the baked-in root of a real repository (and that its signatures do
    # not verify a changed copy) with what is in the exe: securesystemslib's pure-Python ed25519
    from PyInstaller.archive.readers import pkg_archive_contents

    done = subprocess.run([str(frozen_exe), "self-test"], capture_output=True, text=True,
                          timeout=120)
    assert (done.returncode, done.stdout.strip()) == (0, f"r4agent {VERSION}"), done.stderr
    modules = set(pkg_archive_contents(str(frozen_exe)))
    assert "securesystemslib._vendor.ed25519.ed25519" in modules
    assert "tuf.ngclient.updater" in modules
    assert not {m for m in modules if m.split(".")[0] in {"cryptography", "nacl", "tufup"}}


def test_same_commit_twice_gives_a_byte_identical_exe(
    trusted_root: Path, tmp_path: Path
) -> None:
    """Two builds of one committed tree give the same bytes: what keeps update patches tiny.

    Why this can fail: each build runs from its OWN copy of the tree (a git snapshot at its own
    path: the shared work tree keeps changing) and build/freeze.py gives each build its own
    fresh PyInstaller workpath, so nothing but PyInstaller's binary cache (stripped copies of
    the same system libraries) is shared — the second build redoes Analysis, PYZ and PKG. An
    unpinned hash seed (base_library.zip and PYZ entry order), a build-time timestamp or an
    absolute source path baked into the bundle then shows up as differing bytes. (With one
    shared workpath, as before, PyInstaller reused the cached pieces and the two exes were
    equal whatever the build did.)"""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "HEAD"], check=True,
                             capture_output=True, timeout=120).stdout
    epoch = subprocess.run(["git", "-C", str(REPO), "log", "-1", "--format=%ct"], check=True,
                           capture_output=True, text=True, timeout=60).stdout.strip()
    env = dict(os.environ, R4AGENT_BUILD_CACHE=str(REPO / ".cache"), SOURCE_DATE_EPOCH=epoch)
    exes = []
    for name in ("one", "two"):
        snapshot = tmp_path / f"src-{name}"
        snapshot.mkdir()
        subprocess.run(["tar", "-x", "-C", str(snapshot)], input=archive, check=True,
                       timeout=120)
        out = tmp_path / f"dist-{name}"
        subprocess.run(
            [sys.executable, str(snapshot / "build" / "freeze.py"), "--version", "1.0.1",
             "--out", str(out), "--trusted-root", str(trusted_root)],
            check=True, timeout=1800, env=env,
        )
        exes.append(out / "r4agent")
    assert hashlib.sha256(exes[0].read_bytes()).digest() == hashlib.sha256(
        exes[1].read_bytes()
    ).digest()
    assert not list((REPO / ".cache" / "pyinstaller" / "work").glob("*-r4agent-1.0.1-*"))


def test_frozen_service_host_runs_agent_over_real_odbc_sqs_and_tuf(
    frozen_exe: Path,
    tmp_path: Path,
    flynotes_standin: StandinBackend,
    sqs_server: SqsEndpoint,
    r4_sample_db: R4SampleDb,
    update_server: tuple[str, list[str]],
) -> None:
    update_url, requested = update_server
    flynotes_standin.sqs_queue_url = sqs_server.queue_url
    flynotes_standin.sqs_region = sqs_server.region
    flynotes_standin.set_credentials(
        sqs_server.access_key_id, sqs_server.secret_access_key, sqs_server.session_token
    )
    flynotes_standin.library_version = "9.9.9"  # a hint TUF does not list: verify, refuse
    base = tmp_path / "R4Agent"
    base.mkdir()
    config = base / "config.toml"
    config.write_text(
        f'licence_key = "{TEST_LICENCE_KEY}"\n'
        f'backend_url = "{flynotes_standin.url}"\n'
        f'sqs_endpoint_url = "{sqs_server.endpoint_url}"\n'
        "[database]\n"
        f"connection_string = {json.dumps(r4_sample_db.connection_string)}\n"
        "[timing]\npoll_minutes = 0.05\n"
    )
    env = dict(os.environ, R4AGENT_CONFIG=str(config), R4AGENT_UPDATE_URL=update_url)
    host = subprocess.Popen(
        [str(frozen_exe), "service", "debug", "--data-dir", str(base)],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: bool(flynotes_standin.received_for("patient-upload")),
                 "patients uploaded by the frozen agent")
        sqs_server.client().send_message(
            QueueUrl=sqs_server.queue_url,
            MessageBody=json.dumps(
                {"type": "patient-sync", "r4PatientId": 900001, "patientPatchId": "p-1"}
            ),
        )
        wait_for(lambda: bool(flynotes_standin.received_for("patient-sync")),
                 "the patient-sync command received from SQS and sent on")
        wait_for(lambda: (base / "metadata" / "targets.json").exists(),
                 "TUF metadata verified and stored")
        # sqlite3 is in the exe: the first pass's acknowledged chunks are in the change ledger
        wait_for(lambda: (base / "uploads-ledger.sqlite3").is_file(),
                 "the upload change ledger written by the frozen agent")
    finally:
        host.send_signal(signal.SIGTERM)
        try:
            output, _ = host.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            host.kill()
            output, _ = host.communicate()
    uploads = flynotes_standin.received_for("patient-upload")
    assert sum(r.row_count for r in uploads) >= 300
    assert all(r.headers.get("user-agent", "").startswith("r4agent/1.0.0") for r in uploads)
    assert any(p.endswith("timestamp.json") for p in requested)
    assert (base / "versions" / VERSION / "r4agent").is_file()  # the host installed itself
    assert host.returncode == 0, output.decode(errors="replace")[-3000:]
    assert TEST_LICENCE_KEY.encode() not in output
    agent_log = (base / "logs" / "agent.log").read_text("utf-8", errors="replace")
    assert "upload ledger" not in agent_log  # no fallback: damaged, foreign or unusable
