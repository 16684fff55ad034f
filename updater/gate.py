"""The one small interface between the agent and the updater.

The agent asks `ensure(wanted)` after each scope fetch and acts on the decision; after it has
initialised successfully (config + scope) it calls `confirm_running()` so the host stops counting
pre-confirmation failures of this version, and reports the notice it may return (a rollback the
host made here, returned once) to the error service. The backend's `wanted` version is an
untrusted hint.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Protocol


class GateAction(Enum):
    CARRY_ON = "carry-on"  # running the wanted version, or the update was refused/not possible
    RESTART_INTO_NEW_VERSION = "restart-into-new-version"  # switched; exit with ExitCode.UPDATED


@dataclass(frozen=True, slots=True)
class GateDecision:
    action: GateAction
    running: str
    wanted: str
    reason: str  # human-readable, safe to log and report (no secrets, no patient data)


class VersionGate(Protocol):
    def ensure(self, wanted: str) -> GateDecision: ...

    def confirm_running(self) -> str | None:
        """Mark this version good; return a notice to report once (no patient data), or None."""
        ...


class ReportOnlyGate:
    """For runs outside an installed layout (a developer's venv): report, never switch."""

    def __init__(self, running: str) -> None:
        self._running = running

    def ensure(self, wanted: str) -> GateDecision:
        if wanted == self._running:
            return GateDecision(GateAction.CARRY_ON, self._running, wanted, "already current")
        return GateDecision(
            GateAction.CARRY_ON,
            self._running,
            wanted,
            "version mismatch; not running from an installed layout, so not updating",
        )

    def confirm_running(self) -> None:
        return None
