"""A rollback the service host made reaches the error service: the agent that runs afterwards
reports it once, at start (after confirming), through its error sink."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from agent.exit_codes import ExitCode
from tests.runtime.conftest import Practice
from updater.agent_gate import InstalledGate
from updater.layout import Layout
from updater.state import (
    CurrentPointer,
    PointerState,
    Quarantine,
    QuarantineEntry,
    write_pointer,
    write_quarantine,
)

REASON = ("version 1.1.0 failed 3 starts before confirming (last: exit 1 (CRASH)); "
          "rolled back to 1.0.0")


def _life(practice: Practice, layout: Layout) -> list[tuple[str, str, dict[str, object]]]:
    agent = practice.agent(gate=InstalledGate(layout, "1.0.0", None)).start().polling()
    agent.stop.set()
    assert agent.wait() is ExitCode.END_OF_LIFE
    return [m for m in agent.sink.messages if "rolled back" in m[0]]


def test_a_host_rollback_is_reported_to_the_error_service_once(
    practice: Practice, tmp_path: Path
) -> None:
    layout = Layout(tmp_path / "ProgramData")
    layout.ensure_dirs()
    write_pointer(layout.current_file, CurrentPointer(
        "1.0.0", "1.1.0", PointerState.ROLLED_BACK, 0, REASON, {"1.1.0": "ab" * 32}))
    write_quarantine(layout.quarantine_file, Quarantine(
        {"1.1.0": QuarantineEntry("ab" * 32, REASON, datetime.now(UTC))}))

    first = _life(practice, layout)
    assert len(first) == 1
    message, level, extra = first[0]
    assert REASON in message and level == "warning" and extra == {"phase": "update"}
    assert _life(practice, layout) == []  # the next life does not repeat it
