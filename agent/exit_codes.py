"""Process exit codes shared by the agent and the service host (see docs/exit-codes.md)."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    END_OF_LIFE = 0  # ran its 24 h (or was stopped); the host starts it again
    CRASH = 1  # an uncaught error, already reported; the host restarts it with back-off
    RESTART_REQUESTED = 3  # a `restart` command; the host restarts it at once
    UPDATED = 4  # a new version was switched in; the host starts that version at once
    TRANSIENT_FAILURE = 75  # EX_TEMPFAIL: DB/backend unreachable at start; host backs off
    CONFIG_ERROR = 78  # EX_CONFIG: fatal config error; the host backs off hard
