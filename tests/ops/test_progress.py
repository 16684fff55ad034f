"""Long work is never silent for more than the interval, on a fake clock."""

from __future__ import annotations

import itertools
import logging

import pytest

from agent.clock import FakeClock
from agent.progress import Progress


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "test.progress"]


def test_long_work_logs_a_line_at_least_every_interval(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    log = logging.getLogger("test.progress")
    caplog.set_level(logging.INFO, logger="test.progress")
    progress = Progress("patients", clock=clock, log=log, expected=1000, every=10.0)
    stamps: list[float] = []
    for _ in range(100):
        clock.advance(2.5)  # 250 s of work in 100 steps of 10 rows
        before = progress.lines
        progress.advance(10)
        if progress.lines > before:
            stamps.append(clock.monotonic())
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert stamps and max(gaps) <= 10.0
    assert stamps[0] - 1000.0 <= 10.0  # the first line within one interval of the start
    lines = _lines(caplog)
    assert len(lines) == progress.lines
    assert lines[0] == "patients: 40 rows done, 4/s, about 4:00 left (of ~1,000)"


def test_no_line_when_work_is_quicker_than_the_interval(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    caplog.set_level(logging.INFO, logger="test.progress")
    progress = Progress("appointments", clock=clock, log=logging.getLogger("test.progress"))
    progress.advance(500)
    clock.advance(3)
    assert progress.finish() == 3.0
    assert _lines(caplog) == ["appointments: 500 rows in 0:03"]


def test_work_past_the_expected_count_says_so_instead_of_a_negative_eta() -> None:
    clock = FakeClock()
    progress = Progress("p", clock=clock, log=logging.getLogger("test.progress"), expected=10)
    clock.advance(3600 + 61)
    progress.advance(20)
    assert progress.line() == "p: 20 rows done, 0/s, past the 10 expected"
    assert Progress("q", clock=clock, log=logging.getLogger("x"), expected=0).line() == (
        "q: 0 rows done, 0/s"
    )
