"""The demo's command-loop phase: the real agent life handles the commands it is sent, the poison
one ends in the dead-letter queue. (No patient data on screen: tests/flynotes/test_demo.py.)"""

from __future__ import annotations

import io
from pathlib import Path

from agent.standin.demo import DEMO_PHASES, DemoPractice
from agent.standin.demo_loop import command_loop_phase


def test_demo_runs_the_command_loop_phase() -> None:
    assert "agent.standin.demo_loop:command_loop_phase" in {spec for _, spec in DEMO_PHASES}


def test_command_loop_phase_shows_messages_handled_and_the_poison_one_dead_lettered(
    tmp_path: Path,
) -> None:
    out = io.StringIO()
    with DemoPractice(tmp_path, patients=30, out=out) as practice:
        command_loop_phase(practice, out)
        assert len(practice.backend.received_for("patient-sync")) == 1
    text = out.getvalue()
    assert "patient-sync sent 1 record(s); queue empty" in text
    assert "dead-letter queue: unknown-type: unknown message type make-coffee" in text
    assert "Rollbar (info): r4agent test message" in text
    assert "agent stopped: exit 0" in text
    assert list(tmp_path.glob("r4agent-demo-data-*")) == []  # its data folder is cleaned up
