"""Circuit breakers for the parts a command needs (R4, the backend): closed -> open when a
handler finds the part down -> probed (half-open) -> closed when a probe succeeds.

While any breaker is open the lifecycle receives nothing from SQS: every receive of a message
its handler cannot finish counts towards the queue's maxReceiveCount, so an outage longer than
the redrive window (visibility timeout x maxReceiveCount) would let SQS itself dead-letter
valid commands. Instead the lifecycle probes the failed part (R4: a ping on a new connection;
the backend: GET /data) with exponential back-off capped at `probe_max_seconds` (a minute:
an outage of any length is noticed to be over within a minute), and receives again once every
breaker is closed. A message costs one receive per outage, whatever its length.

Pure state plus a lock (handlers trip breakers from worker threads); time comes from the
injected Clock.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass

from agent.clock import Clock
from agent.resilience.faults import Part


@dataclass(frozen=True, slots=True)
class ProbeSettings:
    first_probe_seconds: float = 2.0
    factor: float = 2.0
    probe_max_seconds: float = 60.0  # at least one probe a minute, however long the outage

    def delay(self, failed_probes: int) -> float:
        return min(self.probe_max_seconds, self.first_probe_seconds * self.factor**failed_probes)


@dataclass(slots=True)
class _Open:
    why: str  # the error's type and text (no patient data: the boundaries' messages)
    since: float
    next_probe: float
    failed_probes: int = 0


class Breakers:
    """One breaker per Part; thread-safe."""

    def __init__(self, clock: Clock, settings: ProbeSettings = ProbeSettings()) -> None:
        self._clock = clock
        self._settings = settings
        self._lock = threading.Lock()
        self._open: dict[Part, _Open] = {}
        self._licence_refused = threading.Event()

    def trip(self, parts: Iterable[Part], why: str) -> list[Part]:
        """Open the breakers of `parts`; returns the ones that were closed until now."""
        now = self._clock.monotonic()
        opened = []
        with self._lock:
            for part in parts:
                if part not in self._open:
                    delay = self._settings.delay(0)
                    self._open[part] = _Open(why, now, now + delay)
                    opened.append(part)
        return opened

    def open_parts(self) -> list[Part]:
        with self._lock:
            return list(self._open)

    def any_open(self) -> bool:
        with self._lock:
            return bool(self._open)

    def due(self) -> list[Part]:
        """The open breakers whose next probe is due now."""
        now = self._clock.monotonic()
        with self._lock:
            return [p for p, state in self._open.items() if state.next_probe <= now]

    def seconds_to_next_probe(self) -> float:
        now = self._clock.monotonic()
        with self._lock:
            if not self._open:
                return 0.0
            return max(0.0, min(s.next_probe for s in self._open.values()) - now)

    def probe_failed(self, part: Part, why: str) -> int:
        """Back off the next probe of `part`; returns how many probes failed in a row."""
        now = self._clock.monotonic()
        with self._lock:
            state = self._open.get(part)
            if state is None:  # closed meanwhile by another probe
                return 0
            state.failed_probes += 1
            state.why = why
            state.next_probe = now + self._settings.delay(state.failed_probes)
            return state.failed_probes

    def close(self, part: Part) -> float | None:
        """Close `part`'s breaker; returns how long it was open (None if it was not)."""
        now = self._clock.monotonic()
        with self._lock:
            state = self._open.pop(part, None)
        return None if state is None else now - state.since

    def why(self, part: Part) -> str:
        with self._lock:
            state = self._open.get(part)
            return "" if state is None else state.why

    # The backend refused the licence while a handler re-checked it (a 403 that /data confirmed):
    # the lifecycle ends the run with CONFIG_ERROR, nothing dead-lettered.
    def licence_refused(self) -> None:
        self._licence_refused.set()

    @property
    def is_licence_refused(self) -> bool:
        return self._licence_refused.is_set()
