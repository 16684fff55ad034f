"""`r4agent status` on an installed layout: the updater's own files (written with its own
writers), the agent's status file (written by FileStatus on a FakeClock) and the service
state, as one screen and as the versioned `--json` document."""

from __future__ import annotations

import io
import json
import logging
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jsonschema  # type: ignore[import-untyped]  # (a moto[server] dependency)
import pytest

from agent.cli import main
from agent.clock import FakeClock
from agent.ops.status import OUTPUT_SCHEMA, gather, render
from agent.ops.status_file import FileStatus, StatusFileError, read_status, status_path
from agent.ports import TablePass
from installer.service import ServiceState, service_state
from updater.state import (
    CurrentPointer,
    InstallRecord,
    InstallState,
    PointerState,
    Quarantine,
    QuarantineEntry,
    write_last_confirmed,
    write_pointer,
    write_quarantine,
    write_record,
)

CONFIG = """licence_key = "status-licence-0a1b2c"
backend_url = "https://flynotes.example/"
"""
T0 = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)


@pytest.fixture
def london() -> Iterator[None]:
    """Local time as at a practice (BST in June): the screen shows +01:00."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "Europe/London"
    time.tzset()
    yield
    if old is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = old
    time.tzset()


def _installed(base: Path) -> None:
    """What the host and the updater leave on a practice that rolled back 1.2.0."""
    (base / "versions" / "1.1.0").mkdir(parents=True)
    (base / "versions" / "1.2.0").mkdir(parents=True)
    write_pointer(
        base / "current",
        CurrentPointer("1.1.0", "1.2.0", PointerState.ROLLED_BACK, 0, "1.2.0 crashed 3 times"),
    )
    write_record(
        base / "install-state.json",
        InstallRecord("a1", "1.1.0", "1.2.0", InstallState.ROLLED_BACK, "patch", "crash loop",
                      "ab" * 32),
    )  # fmt: skip
    entry = QuarantineEntry("cd" * 32, "crash loop", T0 - timedelta(hours=2))
    write_quarantine(base / "quarantine.json", Quarantine({"1.2.0": entry}))
    write_last_confirmed(base / "last-confirmed.json", "1.1.0")


def _agent_ran(base: Path, clock: FakeClock) -> FileStatus:
    status = FileStatus(status_path(base), clock=clock, version="1.1.0", pid=4242)
    status.started()
    status.version_checked("1.2.0", "carry-on", "1.2.0 is quarantined",
                           next_check_in_s=3600, life_left_s=86400)  # fmt: skip
    clock.advance(12.5)
    status.uploads_done(
        {"patients": TablePass({"sent": 17012}), "appointments": TablePass(error="TransientError")},
        seconds=12.5,
    )
    status.received(1)
    status.outcome("done")
    status.outcome("dead-lettered")
    status.outcome("retry")
    status.error(ValueError("a message that could quote a patient"), phase="upload appointments")
    return status


def test_status_shows_service_versions_update_cycle_queue_error_and_next(
    tmp_path: Path, london: None
) -> None:
    (tmp_path / "config.toml").write_text(CONFIG, encoding="utf-8")
    _installed(tmp_path)
    _agent_ran(tmp_path, FakeClock(T0))
    doc = gather(
        tmp_path / "config.toml", {},
        query_service=lambda: ServiceState(True, "running"), now=T0 + timedelta(seconds=20),
    )  # fmt: skip
    jsonschema.validate(doc, OUTPUT_SCHEMA)
    assert doc["versions"] == {
        "this_build": doc["versions"]["this_build"],
        "agent": "1.1.0",
        "wanted": "1.2.0",
        "service_runs": "1.1.0",
        "last_confirmed": "1.1.0",
        "installed": ["1.1.0", "1.2.0"],
    }
    assert doc["today"] == {"day": "2026-06-01", "handled": 1, "failed": 1, "dead_lettered": 1}
    assert doc["update"]["quarantine"] == [{
        "version": "1.2.0", "reason": "crash loop", "at": "2026-06-01T06:00:00+00:00",
        "until": None,
    }]  # fmt: skip
    assert doc["agent"]["last_error"] == {
        "type": "ValueError", "phase": "upload appointments", "at": "2026-06-01T08:00:12+00:00",
    }  # fmt: skip
    out = io.StringIO()
    render(doc, out)
    screen = out.getvalue()
    for expected in (
        "service     R4Agent: running",
        "agent       version 1.1.0, pid 4242, started 2026-06-01 09:00:00+01:00; status "
        "written 8 s ago",
        "versions    agent 1.1.0 · wanted 1.2.0 · service runs 1.1.0 · last confirmed 1.1.0 · "
        "installed 1.1.0, 1.2.0",
        "update      pointer rolled_back (1.2.0 crashed 3 times); last attempt 1.1.0 -> 1.2.0: "
        "rolled_back (crash loop)",
        "quarantine  1.2.0 for good: crash loop",
        "last cycle  #1 at 2026-06-01 09:00:00+01:00, took 12.5 s: patients 17,012 sent · "
        "appointments failed (TransientError)",
        "queue       last receive 2026-06-01 09:00:12+01:00 (1 message(s)); today 1 handled, "
        "1 failed, 1 dead-lettered",
        "last error  ValueError in upload appointments at 2026-06-01 09:00:12+01:00",
        "next        scope refresh and version check 2026-06-01 10:00:00+01:00; end of life "
        "2026-06-02 09:00:00+01:00",
    ):
        assert expected in screen, screen
    assert "quote a patient" not in screen + json.dumps(doc)  # exception text never recorded


def test_the_days_counts_start_again_at_the_practices_midnight(
    tmp_path: Path, london: None
) -> None:
    clock = FakeClock(datetime(2026, 6, 1, 22, 59, tzinfo=UTC))  # 23:59 BST
    status = FileStatus(status_path(tmp_path), clock=clock, version="1.0.0")
    status.outcome("done")
    status.outcome("done")
    clock.advance(120)  # 00:01 BST, still 23:01 UTC
    status.outcome("done")
    queue = status.document()["queue"]
    assert queue["day"] == "2026-06-02" and queue["today"] == {"done": 1}


def test_a_status_write_that_fails_is_logged_once_and_never_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    status = FileStatus(tmp_path / "gone" / "status.json", clock=FakeClock(), version="1.0.0")
    with caplog.at_level(logging.WARNING, logger="agent.ops.status_file"):
        status.started()
        status.received(0)
    assert [r.getMessage()[:31] for r in caplog.records] == ["could not write the status file"]


def test_no_status_file_exits_1_and_says_the_agent_has_not_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "config.toml").write_text(CONFIG, encoding="utf-8")
    code = main(["status", "--config", str(tmp_path / "config.toml")])
    out = capsys.readouterr().out
    assert code == 1
    assert "no status.json: the agent has not run here yet" in out
    assert "service runs (not an installed layout)" in out


def test_a_damaged_status_file_or_config_is_named_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "config.toml").write_text("licence_key = 'x'\n", encoding="utf-8")  # no URL
    status_path(tmp_path).write_text('{"schema_version": 99}', encoding="utf-8")
    with pytest.raises(StatusFileError, match="not a version 1 status document"):
        read_status(status_path(tmp_path))
    assert main(["status", "--json", "--config", str(tmp_path / "config.toml")]) == 1
    doc = json.loads(capsys.readouterr().out)
    jsonschema.validate(doc, OUTPUT_SCHEMA)
    assert doc["config"]["valid"] is False and "doctor" in doc["config"]["problem"]
    assert "not a version 1 status document" in doc["agent_problem"]


def test_the_schema_is_printed_and_versioned(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["properties"]["schema_version"] == {"const": 1}


def test_off_windows_the_service_is_said_to_be_no_service_host() -> None:
    state = service_state()
    assert state.installed is None and state.state.startswith("not a Windows service host")


def test_a_console_that_cannot_show_a_character_gets_a_question_mark_not_a_traceback() -> None:
    from agent.ops.console import reader_safe

    raw = io.BytesIO()
    console = io.TextIOWrapper(raw, encoding="ascii")
    out = reader_safe(console)
    out.write("agent 1.0.0 · wanted 1.1.0\n")
    assert raw.getvalue() == b"agent 1.0.0 ? wanted 1.1.0\n"
