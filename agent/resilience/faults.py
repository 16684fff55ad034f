"""Whose fault a handler's failure is, and so what happens to its message (docs/messages.md).

Only a message at fault is dead-lettered: an undecodable body, an unknown type, invalid fields,
a patient code R4 does not have, a row R4 holds that cannot be read or sent, or a refusal the
backend's `/data` (asked again) says is about this message. Everything else — R4 or the backend
unreachable, locked, timing out, refusing for a reason a person must fix — leaves the message
in the queue and opens the breaker of the part that failed, so receiving stops until a probe
finds it back. A bug (an exception no boundary translated) leaves the message too, without a
breaker: SQS's redrive bounds how often a message that crashes its handler comes back.

Pure: looks at the exception's class only.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from agent.errors import (
    BackendRefusedError,
    BackendUnavailableError,
    MessageFault,
    PermanentError,
    R4DataError,
    R4Error,
    R4UnavailableError,
    TransientError,
)


class Part(enum.Enum):
    R4 = "R4"
    BACKEND = "backend"


class Verdict(enum.Enum):
    DEAD_LETTER = "dead-letter"  # the message is at fault
    RECHECK_LICENCE = "recheck-licence"  # a 4xx: ask /data whether it is the licence
    OUTAGE = "outage"  # leave the message, open the breaker of `part`
    BUG = "bug"  # leave the message, report; redrive bounds it


@dataclass(frozen=True, slots=True)
class Fault:
    verdict: Verdict
    parts: tuple[Part, ...] = ()  # the breakers to open (OUTAGE)
    reason: str = ""  # the dead-letter reason (DEAD_LETTER)


def classify(error: BaseException) -> Fault:
    """What `error`, raised by a handler, means for its message."""
    if isinstance(error, MessageFault | R4DataError):
        return Fault(Verdict.DEAD_LETTER, reason=f"{type(error).__name__}: {error}")
    if isinstance(error, BackendRefusedError):
        return Fault(Verdict.RECHECK_LICENCE)
    if isinstance(error, R4UnavailableError | R4Error):
        return Fault(Verdict.OUTAGE, (Part.R4,))
    if isinstance(error, BackendUnavailableError):
        return Fault(Verdict.OUTAGE, (Part.BACKEND,))
    if isinstance(error, TransientError | PermanentError):
        # translated at a boundary that does not say which part: probe both before receiving
        return Fault(Verdict.OUTAGE, (Part.R4, Part.BACKEND))
    return Fault(Verdict.BUG)


def refused_reason(error: BackendRefusedError) -> str:
    """The dead-letter reason of a refusal `/data` says is about this message only."""
    return f"backend-refused: HTTP {error.status} ({error})"
