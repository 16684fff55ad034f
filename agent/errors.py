"""The two error roots every side effect translates into at its boundary.

Messages of these errors may reach logs and Rollbar, so they must never carry patient data
(names, dates of birth, addresses, phone, email, notes) or secrets: say which key, table,
driver, endpoint or patient *code* was involved, never what the record held.
"""

from __future__ import annotations

from collections.abc import Iterator


class AgentError(Exception):
    """Root of every error the agent raises on purpose."""


class TransientError(AgentError):
    """Worth retrying later: network blips, 5xx, throttling, a database that is restarting."""


class PermanentError(AgentError):
    """Retrying cannot help: bad input, unknown patient, licence rejected, schema missing."""


class ConfigError(PermanentError):
    """The configuration is missing or wrong; the message names the file, the key and the fix."""


class UnsafeStatementError(PermanentError):
    """Something other than a single SELECT was about to reach the R4 database."""


def exception_chain(error: BaseException | None) -> Iterator[BaseException]:
    """`error`, then its cause (else the exception it was raised while handling), and so on.
    Each exception comes once, by identity, so a cycle in the chain ends the walk (and no
    exception's own __eq__ is called)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def worth_reporting(streak: int, every: int) -> bool:
    """Whether the `streak`-th failure in a row is reported: the 1st and every `every`-th, so
    a lasting outage shows now and then, not once per attempt."""
    return streak == 1 or streak % every == 0
