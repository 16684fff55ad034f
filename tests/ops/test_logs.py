"""Local logs: a rotating file under the data directory, the console with --foreground, and
no secret in any line even when code passes one by mistake."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.logs import (
    LocalTimeFormatter,
    local_time,
    log_file,
    register_secret,
    setup_logging,
    teardown_logging,
)

LICENCE = "licence-9f8e7d6c5b"
SQS_SECRET = "sqs-secret-A1b2C3d4E5f6"
SESSION_TOKEN = "FwoGZXIvYXdzEJr-session-token-xyz"


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    yield
    teardown_logging()
    root.setLevel(level)


def _read(data_dir: Path) -> str:
    for handler in logging.getLogger().handlers:
        handler.flush()
    return log_file(data_dir).read_text(encoding="utf-8")


def test_log_file_is_created_under_data_dir_logs(tmp_path: Path, restore_root: None) -> None:
    setup_logging(tmp_path, foreground=False)
    logging.getLogger("agent.test").info("started, patient %d synced", 900001)
    text = _read(tmp_path)
    assert log_file(tmp_path) == tmp_path / "logs" / "agent.log"
    assert "INFO" in text and "agent.test: started, patient 900001 synced" in text
    # local time with its offset: 2026-06-01T10:30:00.125+01:00
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d INFO", text), text


def test_log_times_are_the_practices_wall_clock_with_the_offset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """R4 and the practice's staff think in UK wall-clock time; the offset keeps the hour
    repeated in October unambiguous for a support engineer reading the log elsewhere."""
    monkeypatch.setenv("TZ", "Europe/London")
    time.tzset()
    try:
        summer = datetime(2026, 6, 1, 9, 30, 0, 125000, tzinfo=UTC).timestamp()
        winter = datetime(2026, 1, 5, 9, 30, tzinfo=UTC).timestamp()
        assert local_time(summer) == "2026-06-01T10:30:00.125+01:00"
        assert local_time(winter) == "2026-01-05T09:30:00.000+00:00"
        record = logging.LogRecord("agent.x", logging.INFO, __file__, 1, "m", None, None)
        record.created = summer
        assert LocalTimeFormatter("%(asctime)s %(message)s").format(record) == (
            "2026-06-01T10:30:00.125+01:00 m"
        )
    finally:
        monkeypatch.undo()
        time.tzset()


def test_foreground_also_streams_to_the_console(
    tmp_path: Path, restore_root: None, capsys: pytest.CaptureFixture[str]
) -> None:
    setup_logging(tmp_path, foreground=True)
    logging.getLogger("agent.test").warning("watch it live")
    assert "watch it live" in capsys.readouterr().err
    setup_logging(tmp_path, foreground=False)
    logging.getLogger("agent.test").warning("file only")
    assert "file only" not in capsys.readouterr().err
    assert "file only" in _read(tmp_path)


def test_setting_up_twice_does_not_duplicate_lines(tmp_path: Path, restore_root: None) -> None:
    setup_logging(tmp_path, foreground=False)
    setup_logging(tmp_path, foreground=False)
    logging.getLogger("agent.test").info("once")
    assert _read(tmp_path).count("once") == 1


def test_secrets_passed_by_mistake_are_masked_in_message_args_and_traceback(
    tmp_path: Path, restore_root: None, capsys: pytest.CaptureFixture[str]
) -> None:
    setup_logging(tmp_path, foreground=True, secrets=[LICENCE])
    register_secret(SQS_SECRET, SESSION_TOKEN)  # learned later, at a credentials refresh
    log = logging.getLogger("agent.test")
    log.info(f"licence {LICENCE} in the message")
    log.info("sqs secret %s and token %r in args", SQS_SECRET, SESSION_TOKEN)
    try:
        raise RuntimeError(f"boto said {SQS_SECRET}")
    except RuntimeError:
        log.exception("receive failed")
    text = _read(tmp_path) + capsys.readouterr().err
    for secret in (LICENCE, SQS_SECRET, SESSION_TOKEN):
        assert secret not in text
    assert text.count("***") >= 5 and "receive failed" in text


def test_short_values_are_not_registered_as_secrets(tmp_path: Path, restore_root: None) -> None:
    setup_logging(tmp_path, foreground=False, secrets=["", None, "abc"])
    logging.getLogger("agent.test").info("abc def")
    assert "abc def" in _read(tmp_path)


def test_log_rotates_by_size_and_keeps_a_few_files(tmp_path: Path, restore_root: None) -> None:
    setup_logging(tmp_path, foreground=False, max_bytes=2000, backup_count=3)
    log = logging.getLogger("agent.test")
    for i in range(400):
        log.info("line %04d %s", i, "x" * 40)
    names = sorted(p.name for p in (tmp_path / "logs").iterdir())
    assert names == ["agent.log", "agent.log.1", "agent.log.2", "agent.log.3"]
    assert all((tmp_path / "logs" / n).stat().st_size <= 2100 for n in names)
    assert "line 0399" in _read(tmp_path)


def test_unwritable_data_dir_raises_oserror_for_the_caller(
    tmp_path: Path, restore_root: None
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder", encoding="utf-8")
    with pytest.raises(OSError):
        setup_logging(blocker, foreground=False)


def test_unregistered_aws_credentials_are_masked_by_shape(
    tmp_path: Path, restore_root: None
) -> None:
    """SQS credentials arrive at every refresh; a line logged before registering them is safe."""
    access_key_id = "ASIA" + "Q" * 16
    session_token = "IQoJb3JpZ2luX2VjE" + "Ab1+/" * 60 + "=="
    setup_logging(tmp_path, foreground=False)
    logging.getLogger("agent.test").warning("creds %s %s", access_key_id, session_token)
    text = _read(tmp_path)
    assert access_key_id not in text and session_token[:100] not in text
    assert "creds *** ***" in text
