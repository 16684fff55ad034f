"""Progress lines for long work (a full upload, generating a demo database, a freeze).

A practice's IT person watching the log should never see more than `every` seconds of silence
during long work: `Progress.advance(n)` logs "what: N done, R/s, ETA …" once that much time
has passed on the injected clock since the last line, and `finish()` logs the total. The ETA
comes from `expected` (e.g. the previous pass's row count); without it only the rate is shown.
Lines carry counts only: never a record, so they are safe for patient work.
"""

from __future__ import annotations

import logging
from typing import Final

from agent.clock import Clock

DEFAULT_EVERY_SECONDS: Final = 10.0


def _duration(seconds: float) -> str:
    whole = max(round(seconds), 0)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """Counts work done and logs a line at most every `every` seconds (and at least that
    often while `advance` is being called). Not thread-safe: one per piece of work."""

    def __init__(
        self,
        what: str,
        *,
        clock: Clock,
        log: logging.Logger,
        expected: int | None = None,
        unit: str = "rows",
        every: float = DEFAULT_EVERY_SECONDS,
    ) -> None:
        if every <= 0:
            raise ValueError("every must be positive")
        self._what = what
        self._clock = clock
        self._log = log
        self._expected = expected if expected and expected > 0 else None
        self._unit = unit
        self._every = every
        self._started = clock.monotonic()
        self._last_line = self._started
        self.done = 0
        self.lines = 0  # how many progress lines were logged (tests, summaries)

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = self._clock.monotonic()
        if now - self._last_line >= self._every:
            self._last_line = now
            self.lines += 1
            self._log.info("%s", self.line(now))

    def line(self, now: float | None = None) -> str:
        """The progress line as it would be logged now."""
        now = self._clock.monotonic() if now is None else now
        elapsed = now - self._started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        text = f"{self._what}: {self.done:,} {self._unit} done, {rate:,.0f}/s"
        if self._expected is not None:
            if self.done < self._expected and rate > 0:
                eta = (self._expected - self.done) / rate
                text += f", about {_duration(eta)} left (of ~{self._expected:,})"
            elif self.done >= self._expected:
                text += f", past the {self._expected:,} expected"
        return text

    def finish(self) -> float:
        """Log the closing line; return the seconds the work took."""
        elapsed = self._clock.monotonic() - self._started
        self._log.info(
            "%s: %s %s in %s", self._what, f"{self.done:,}", self._unit, _duration(elapsed)
        )
        return elapsed
