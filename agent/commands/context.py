"""What a handler may touch, injected by the composition root (agent.app)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime

from agent.ports import Backend, ErrorSink, RecordSource
from agent.uploads.passes import Uploads


class RestartRequest:
    """Set by the `restart` handler; the lifecycle exits with RESTART_REQUESTED once in-flight
    work has finished. Thread-safe (handlers run on worker threads)."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def request(self) -> None:
        self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()


@dataclass(frozen=True, slots=True)
class Delivery:
    """Facts about this delivery of a message (safe to log: no body content)."""

    message_id: str
    receive_count: int
    sent_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class HandlerContext:
    records: RecordSource
    backend: Backend
    errors: ErrorSink
    restart: RestartRequest
    agent_version: str
    uploads: Uploads  # bulk-upload passes (chunks, the change ledger)
    delivery: Delivery = field(default_factory=lambda: Delivery("(none)", 0))
