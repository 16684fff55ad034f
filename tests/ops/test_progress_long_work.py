"""The demo's database generation and the release freeze log a progress line at least every
10 s of (simulated) time: on a clock that moves a fixed step at every reading, as on a slow
machine, the lines' counts show how much time passed between them."""

from __future__ import annotations

import itertools
import logging
import re
import sys
from pathlib import Path

import pytest

from agent.clock import FakeClock
from agent.progress import Progress
from agent.standin.r4_sample import generate
from tests.fixtures.build_scripts import load_build_script

REPO = Path(__file__).resolve().parents[2]


class SlowMachineClock(FakeClock):
    """Every reading of the monotonic clock is `step` seconds after the previous one."""

    def __init__(self, step: float) -> None:
        super().__init__()
        self.step = step

    def monotonic(self) -> float:
        self.advance(self.step)
        return super().monotonic()


def _counts(caplog: pytest.LogCaptureFixture, logger: str) -> list[int]:
    lines = [r.getMessage() for r in caplog.records if r.name == logger]
    return [int(m.group(1).replace(",", "")) for line in lines
            if (m := re.search(r": ([\d,]+) \w[\w ]* done", line))]  # fmt: skip


def test_generating_the_demo_database_logs_progress_at_least_every_10_s(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    step = 1 / 16  # one reading per patient: 2,000 patients take 125 simulated seconds
    caplog.set_level(logging.INFO, logger="test.demo")
    progress = Progress("sample R4 database", clock=SlowMachineClock(step),
                        log=logging.getLogger("test.demo"), expected=2000, unit="patients")
    generate(tmp_path / "sys2000.db", 2000, seed=3, progress=progress)
    counts = _counts(caplog, "test.demo")
    assert len(counts) >= 9 and progress.done == 2000
    seconds = [c * step for c in counts]
    assert seconds[0] <= 10.0 + step
    assert max(b - a for a, b in itertools.pairwise(seconds)) <= 10.0 + step
    first = next(r.getMessage() for r in caplog.records if r.name == "test.demo")
    assert re.fullmatch(
        r"sample R4 database: [\d,]+ patients done, \d+/s, about 1:\d\d left \(of ~2,000\)", first
    ), first


CHATTY_BUILD = """
import sys
for i in range(60):
    print(f"{i} INFO: step {i}")
print("61 WARNING: hidden import 'x' not found")
sys.exit(int(sys.argv[1]))
"""


def test_the_freeze_logs_progress_passes_on_warnings_and_shows_the_tail_when_it_fails(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    freeze = load_build_script("freeze", "freeze_under_test")
    caplog.set_level(logging.INFO, logger="test.freeze")
    step = 1.0  # each PyInstaller line read a simulated second after the previous
    code, lines = freeze.run_with_progress(
        [sys.executable, "-c", CHATTY_BUILD, "0"], env=None, cwd=tmp_path, what="freeze 1.2.3",
        expected=50, clock=SlowMachineClock(step), logger=logging.getLogger("test.freeze"),
    )  # fmt: skip
    assert (code, lines) == (0, 61)
    counts = _counts(caplog, "test.freeze")
    assert counts and counts[0] * step <= 10.0 + step
    assert max(b - a for a, b in itertools.pairwise([0, *counts])) * step <= 10.0 + step
    messages = [r.getMessage() for r in caplog.records if r.name == "test.freeze"]
    assert messages[-1].startswith("freeze 1.2.3: 61 PyInstaller log lines in ")
    assert any("past the 50 expected" in m for m in messages)
    err = capsys.readouterr().err
    assert "WARNING: hidden import 'x' not found" in err and "INFO: step 3\n" not in err

    code, _ = freeze.run_with_progress(
        [sys.executable, "-c", CHATTY_BUILD, "1"], env=None, cwd=tmp_path, what="freeze 1.2.3",
        expected=None, clock=FakeClock(), logger=logging.getLogger("test.freeze"),
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and "PyInstaller's last 60 lines:" in err and "INFO: step 59" in err
