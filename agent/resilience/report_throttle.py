"""Reports of the same fault, rate-limited: a burst of poison (a thousand undecodable bodies)
sends the first report at once, then one summary a window (a minute) with the count, instead of
one Rollbar item per message. The reporter never raises (ErrorSink's promise)."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from agent.clock import Clock
from agent.ports import ErrorSink


@dataclass(slots=True)
class _Window:
    started: float
    suppressed: int = 0


class ThrottledReports:
    def __init__(self, sink: ErrorSink, clock: Clock, *, window_seconds: float = 60.0) -> None:
        self._sink = sink
        self._clock = clock
        self._window = window_seconds
        self._lock = threading.Lock()
        self._windows: dict[str, _Window] = {}

    def report(self, key: str, error: BaseException, context: dict[str, object]) -> None:
        """Report `error` if it is the first of `key` in a window, else count it; the first one
        after a window with suppressed reports sends the summary instead."""
        now = self._clock.monotonic()
        summary = 0
        with self._lock:
            window = self._windows.get(key)
            if window is not None and now - window.started < self._window:
                window.suppressed += 1
                return
            if window is not None and window.suppressed:
                summary = window.suppressed + 1  # with this one
            self._windows[key] = _Window(now)
        if summary:
            self._summary(key, summary, context)
        else:
            self._sink.report_exception(error, context={**context, "fault": key})

    def flush(self) -> None:
        """Send the summaries of the windows still counting (on close)."""
        with self._lock:
            pending = [(k, w.suppressed) for k, w in self._windows.items() if w.suppressed]
            self._windows.clear()
        for key, count in pending:
            self._summary(key, count, {})

    def _summary(self, key: str, count: int, context: dict[str, object]) -> None:
        self._sink.report_message(
            f"{count} more messages with the same fault ({key}) since the last report",
            level="warning",
            extra={**context, "fault": key, "count": count},
        )
