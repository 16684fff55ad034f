"""`libraryVersion` the updater cannot use (the original's npm version 0.0.12, garbage, an empty
string, nothing at all): the agent keeps running its own version, reports it at most once a
day, and carries on handling commands."""

from __future__ import annotations

import pytest

from agent.commands import envelope
from agent.exit_codes import ExitCode
from agent.standin.r4_sample import CANARY_CODE
from tests.runtime.conftest import Practice, eventually
from updater import policy

HOUR = 3600.0


@pytest.mark.parametrize("wanted", ["0.0.12", "garbage; rm -rf /", ""])
def test_a_version_we_cannot_use_is_reported_once_a_day_and_the_agent_carries_on(
    practice: Practice, wanted: str
) -> None:
    practice.backend.library_version = wanted
    agent = practice.agent().start().polling()
    for cycle in (2, 3):  # two more hourly version checks
        agent.clock.advance(HOUR)
        agent.polling(cycle)
    practice.send(envelope.encode(envelope.PatientSync(CANARY_CODE, "still-working")))
    eventually(lambda: practice.backend.received_for("patient-sync"), 60)
    reports = [m for m in agent.sink.message_texts() if "cannot be used" in m]
    assert len(reports) == 1  # three checks, one report
    assert "rm -rf" not in reports[0]  # garbage is not repeated into the report
    agent.clock.advance(24 * HOUR)
    assert agent.wait() is ExitCode.END_OF_LIFE


@pytest.mark.parametrize(
    ("wanted", "why"),
    [("0.0.12", "not listed"), ("garbage; rm -rf /", "invalid version"), ("", "invalid version")],
)
def test_the_updater_refuses_versions_that_are_not_ours_and_keeps_the_running_one(
    wanted: str, why: str
) -> None:
    decision = policy.decide("1.0.0", wanted, policy.build_catalog([]))
    assert isinstance(decision, policy.Refuse)
    assert why in decision.reason
