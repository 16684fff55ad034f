"""The pure parts of surviving outages, on a fake clock: the breakers' probe schedule (at least
one probe a minute however long the outage, never a spin) and the rate limit on reports of the
same fault (the first at once, then one summary per window with the count)."""

from __future__ import annotations

from agent.clock import FakeClock
from agent.errors import PermanentError
from agent.resilience.breaker import Breakers, ProbeSettings
from agent.resilience.faults import Part, Verdict, classify
from agent.resilience.report_throttle import ThrottledReports
from tests.runtime.conftest import RecordingSink


def test_a_long_outage_is_probed_with_back_off_capped_at_one_probe_a_minute() -> None:
    clock = FakeClock()
    breakers = Breakers(clock, ProbeSettings())
    assert breakers.trip([Part.R4], "locked") == [Part.R4]
    assert breakers.trip([Part.R4], "locked again") == []  # one outage, one opening
    waits = []
    for _ in range(10):
        wait = breakers.seconds_to_next_probe()
        waits.append(wait)
        clock.advance(wait)
        assert breakers.due() == [Part.R4]
        breakers.probe_failed(Part.R4, "still locked")
    assert waits == [2, 4, 8, 16, 32, 60, 60, 60, 60, 60]
    down_for = breakers.close(Part.R4)
    assert down_for == sum(waits)
    assert not breakers.any_open()


def test_a_burst_of_the_same_fault_sends_one_report_then_one_summary_a_minute() -> None:
    clock = FakeClock()
    sink = RecordingSink()
    reports = ThrottledReports(sink, clock, window_seconds=60)
    for _ in range(100):
        reports.report("not-json", PermanentError("undecodable"), {})
    assert len(sink.exceptions) == 1 and sink.messages == []
    clock.advance(61)
    reports.report("not-json", PermanentError("undecodable"), {})
    assert len(sink.exceptions) == 1
    ((text, level, extra),) = sink.messages
    assert "same fault (not-json)" in text
    assert extra["count"] == 100 and level == "warning"  # 99 suppressed + this one
    reports.report("unknown-type", PermanentError("other"), {})  # another fault: reported
    assert len(sink.exceptions) == 2


def test_only_the_messages_own_faults_are_dead_lettered() -> None:
    from agent.commands.envelope import DecodeError
    from agent.commands.patient_sync import UnknownPatientError
    from agent.errors import (
        BackendRefusedError,
        BackendUnavailableError,
        R4DataError,
        R4Error,
        R4UnavailableError,
        TransientError,
    )

    assert classify(DecodeError("not-json", "x")).verdict is Verdict.DEAD_LETTER
    assert classify(UnknownPatientError("no patient 7")).verdict is Verdict.DEAD_LETTER
    assert classify(R4DataError("bad row")).verdict is Verdict.DEAD_LETTER
    assert classify(BackendRefusedError("403", status=403)).verdict is Verdict.RECHECK_LICENCE
    assert classify(R4UnavailableError("locked")).parts == (Part.R4,)
    assert classify(R4Error("no such table")).parts == (Part.R4,)
    assert classify(BackendUnavailableError("500")).parts == (Part.BACKEND,)
    assert classify(TransientError("?")).parts == (Part.R4, Part.BACKEND)
    assert classify(PermanentError("?")).verdict is Verdict.OUTAGE  # not the message's fault
    assert classify(KeyError("bug")).verdict is Verdict.BUG
