"""`r4agent demo`: real code paths against the stand-ins, counts on screen, nothing left running."""

from __future__ import annotations

import io
import socket
import sqlite3
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from agent.standin.demo import DemoPractice, run_demo


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


def test_interrupted_demo_stops_everything_it_started(tmp_path: Path) -> None:
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


def test_demo_licence_key_is_random_and_never_printed(tmp_path: Path) -> None:
    out = io.StringIO()
    with DemoPractice(tmp_path, patients=5, out=out) as practice:
        key = practice.licence_key
        assert len(key) >= 24
        practice.client().fetch_scope()
    assert key not in out.getvalue()
    assert DemoPractice(tmp_path, patients=5).licence_key != key
