"""`r4agent demo`: real code paths against the stand-ins, counts on screen, nothing left running."""

from __future__ import annotations

import contextlib
import io
import os
import queue
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from agent.cli import build_parser, main
from agent.standin import demo as demo_module
from agent.standin.demo import DemoPractice, run_demo

DEADLINE_S = 120.0  # generous: the machine is shared; each wait ends as soon as its line shows


def _listening(url: str) -> bool:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex((parts.hostname, parts.port)) == 0


def test_demo_uploads_through_the_real_paths_and_prints_only_counts(tmp_path: Path) -> None:
    out = io.StringIO()
    assert run_demo(tmp_path, patients=40, out=out) == 0
    text = out.getvalue()
    assert "sent 40 patients" in text
    # upload phase + the command-loop phase (agent start-up uploads, patient-sync and
    # bulk-upload-appointment-status commands: agent.standin.demo_loop)
    assert "patient-upload             2/2 requests, 80 rows" in text
    assert "patient-sync               2/2 requests" in text
    assert "appointment-upload         2/2 requests" in text
    assert "appointment-status-upload  3/3 requests" in text
    # No patient data on screen: compare against every name in the generated database.
    con = sqlite3.connect(tmp_path / "sys2000.db")
    try:
        names = [n for (n,) in con.execute("SELECT surname FROM patients") if n and len(n) > 3]
    finally:
        con.close()
    assert names
    assert not [n for n in names if n in text]


def test_interrupted_demo_practice_stops_everything_it_started(tmp_path: Path) -> None:
    urls: list[str] = []
    with (
        pytest.raises(KeyboardInterrupt),
        DemoPractice(tmp_path, patients=5, out=io.StringIO()) as practice,
    ):
        urls = [practice.backend.url, practice.sqs.endpoint_url]
        assert all(_listening(u) for u in urls)
        raise KeyboardInterrupt
    assert urls
    assert not any(_listening(u) for u in urls)


class _Demo:
    """`python -m agent demo ...` in its own session, its stdout read line by line."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.tmpdir = tmp_path / "tmp"
        self.tmpdir.mkdir()
        env = {**os.environ, "TMPDIR": str(self.tmpdir), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "demo", *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own session: leftovers are found by session id
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for(self, pattern: str) -> re.Match[str]:
        deadline = time.monotonic() + DEADLINE_S
        while True:
            line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            assert line is not None, f"demo ended before {pattern!r}: {self.seen}"
            self.seen.append(line)
            if match := re.search(pattern, line):
                return match

    def finish(self) -> tuple[int, str, str]:
        code = self.proc.wait(timeout=DEADLINE_S)
        assert self.proc.stderr is not None
        err = self.proc.stderr.read()
        while (line := self.lines.get(timeout=DEADLINE_S)) is not None:
            self.seen.append(line)
        return code, "\n".join(self.seen), err

    def kill(self) -> None:
        """After a failed test: the demo and anything it left in its process group."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


@pytest.fixture
def demo_process(tmp_path: Path) -> Iterator[list[_Demo]]:
    started: list[_Demo] = []
    yield started
    for demo in started:
        demo.kill()


def _session_members(session: int) -> list[int]:
    """Live processes (not zombies) whose session id is `session` (Linux /proc)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _ppid, _pgrp, sid = stat.read_text().rpartition(")")[2].split()[:4]
        except (OSError, ValueError):
            continue  # gone meanwhile
        if int(sid) == session and state != "Z":
            members.append(int(stat.parent.name))
    return members


def test_ctrl_c_in_the_upload_phase_exits_130_and_leaves_no_server_process_or_temp_folder(
    tmp_path: Path, demo_process: list[_Demo]
) -> None:
    demo = _Demo(tmp_path, "--patients", "300")
    demo_process.append(demo)
    db_path = Path(demo.wait_for(r"^R4 stand-in: .* in (.+) \(")[1])
    # Hold the demo at a known point with a real write lock on its R4 database (as a busy R4
    # would): the upload phase cannot read a row while both servers are up.
    lock = sqlite3.connect(db_path, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        sqs_url = demo.wait_for(r"^SQS \(moto\): +(\S+)")[1]
        backend_url = demo.wait_for(r"^Flynotes stand-in: (\S+)")[1]
        demo.wait_for(r"^== scope and uploads$")
        assert _listening(sqs_url) and _listening(backend_url)
        demo.proc.send_signal(signal.SIGINT)
    finally:
        lock.rollback()  # the blocked ODBC call returns, then Python raises KeyboardInterrupt
        lock.close()
    code, text, err = demo.finish()
    assert code == 130, err
    assert "interrupted: everything the demo started has been stopped" in text
    assert "sent 300 patients" not in text  # it was stopped in the upload phase
    assert "Traceback" not in err
    assert not _listening(sqs_url) and not _listening(backend_url)
    assert _session_members(demo.proc.pid) == []
    assert list(demo.tmpdir.iterdir()) == []  # its temporary folder, database included


def test_ctrl_c_while_generating_into_a_given_workdir_leaves_no_partial_database(
    tmp_path: Path, demo_process: list[_Demo]
) -> None:
    workdir = tmp_path / "work"
    # Big enough that generation is surely still running when the signal lands (it lands
    # within milliseconds of the partial file appearing, so the size costs nothing).
    demo = _Demo(tmp_path, "--patients", "2000000", "--workdir", str(workdir))
    demo_process.append(demo)
    demo.wait_for(r"practice-in-a-box$")
    deadline = time.monotonic() + DEADLINE_S
    while not list(workdir.glob(".sys2000.db.*.partial")):
        assert time.monotonic() < deadline and demo.proc.poll() is None
        time.sleep(0.01)
    demo.proc.send_signal(signal.SIGINT)
    code, text, err = demo.finish()
    assert code == 130, err
    assert "R4 stand-in:" not in text  # interrupted before the database was complete
    assert "Traceback" not in err
    assert list(workdir.iterdir()) == []  # neither the partial file nor a half database
    assert list(demo.tmpdir.iterdir()) == []
    assert _session_members(demo.proc.pid) == []


def test_demo_failure_is_one_line_on_stderr_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    assert main(["demo", "--patients", "5", "--workdir", str(not_a_folder)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("demo failed: FileExistsError: ")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_demo_licence_key_is_random_and_never_printed(tmp_path: Path) -> None:
    out = io.StringIO()
    with DemoPractice(tmp_path, patients=5, out=out) as practice:
        key = practice.licence_key
        assert len(key) >= 24
        practice.client().fetch_scope()
    assert key not in out.getvalue()
    assert DemoPractice(tmp_path, patients=5).licence_key != key


def _listed_commands(help_text: str) -> set[str]:
    return {line.split()[0] for line in help_text.splitlines() if line.startswith("    ")}


def test_frozen_exe_without_the_stand_ins_answers_demo_in_one_line_and_hides_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # As in the exe: build/r4agent.spec leaves agent.standin out.
    monkeypatch.setitem(sys.modules, "agent.standin", None)
    monkeypatch.setitem(sys.modules, "agent.standin.demo", None)
    with pytest.raises(ModuleNotFoundError):  # what `r4agent demo` did in the exe
        main(["demo"], frozen=False)
    listed = _listed_commands(build_parser([], frozen=True).format_help())
    assert "demo" not in listed and {"run", "doctor", "service"} <= listed
    for argv in (["demo"], ["demo", "--patients", "5"], ["demo", "-h"]):
        assert main(argv, frozen=True) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "not part of the installed agent" in err, argv


def test_demo_is_listed_when_running_from_source() -> None:
    assert not getattr(sys, "frozen", False)
    assert "demo" in _listed_commands(build_parser([]).format_help())


def test_ctrl_c_landing_inside_a_c_call_counts_as_an_interrupt_not_a_failure() -> None:
    # What pyodbc.connect gives when SIGINT's handler raises as the call returns (seen in the
    # upload-phase test above, about one run in eight): a SystemError caused by the interrupt.
    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as interrupt:
            raise SystemError("<built-in function connect> returned a result") from interrupt
    except SystemError as e:
        assert demo_module._interrupted(e)
    assert not demo_module._interrupted(TimeoutError("stand-in did not start"))
