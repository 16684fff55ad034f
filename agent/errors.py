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


# -- the boundaries' own kinds (agent.resilience.faults decides what each means for a message) --
class R4UnavailableError(TransientError):
    """R4 cannot answer now: unreachable, the link dropped, locked, timing out, a deadlock
    victim, restarting. The R4 breaker opens; the message waits in the queue."""


class R4Error(PermanentError):
    """R4 refused the statement or the login, or its file is not the database we expect (a
    table missing, permissions, a driver that cannot load). Not the message's fault: it waits
    in the queue while the R4 breaker probes for a person to put R4 right."""


class R4DataError(PermanentError):
    """A row or value R4 holds cannot be read or sent (a text that does not decode, a column of
    an unexpected type): the message that asked for it is at fault, it is dead-lettered."""


class BackendUnavailableError(TransientError):
    """The Flynotes backend cannot answer now: 5xx, 429, timeouts, connection errors."""


class BackendRefusedError(PermanentError):
    """The backend answered a 4xx to one request. Whether that is about the licence (every call
    refused) or about this one request is decided by asking `/data` again (the dispatcher)."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


class MessageFault(PermanentError):
    """The message itself is at fault (its body, its type, its fields, a patient code R4 does
    not have): dead-lettered with `reason`, a short code. Subclasses set the code."""

    reason = "message-fault"


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
