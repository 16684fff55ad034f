"""How the host asks the agent to stop after its in-flight work, on every platform.

POSIX: SIGTERM (the agent's signal handler sets its stop event).
Windows: a service has no console, so CTRL_BREAK_EVENT cannot reach the child. The host creates a
named, manual-reset Win32 event per child and passes its name in `R4AGENT_STOP_EVENT`; the agent
calls `watch(stop)` at start-up, which waits on that event in a daemon thread and sets `stop`.
(ctypes only: no pywin32 needed on either side.)
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Mapping
from typing import Any

ENV_STOP_EVENT = "R4AGENT_STOP_EVENT"
_SYNCHRONIZE = 0x00100000
_INFINITE = 0xFFFFFFFF
_WAIT_OBJECT_0 = 0


def _kernel32() -> Any:
    import ctypes

    return ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined,unused-ignore]


class ChildStopEvent:
    """Host side: one named event for one child (Windows); a no-op elsewhere."""

    def __init__(self) -> None:
        self.name: str | None = None
        self._handle: int | None = None
        if sys.platform == "win32":
            name = f"Local\\r4agent-stop-{os.getpid()}-{os.urandom(6).hex()}"
            handle = _kernel32().CreateEventW(None, True, False, name)
            if handle:
                self.name, self._handle = name, handle

    def env(self) -> dict[str, str]:
        return {ENV_STOP_EVENT: self.name} if self.name else {}

    def set(self) -> bool:
        if self._handle is None:
            return False
        return bool(_kernel32().SetEvent(self._handle))

    def close(self) -> None:
        if self._handle is not None:
            _kernel32().CloseHandle(self._handle)
            self._handle = None


def watch(stop: threading.Event, env: Mapping[str, str] | None = None) -> bool:
    """Agent side: set `stop` when the host signals the named event. True if watching."""
    name = (os.environ if env is None else env).get(ENV_STOP_EVENT)
    if sys.platform == "win32" and name:
        return _watch_named_event(stop, name)
    return False


def _watch_named_event(stop: threading.Event, name: str) -> bool:
    kernel32 = _kernel32()
    handle = kernel32.OpenEventW(_SYNCHRONIZE, False, name)
    if not handle:
        return False

    def wait() -> None:
        try:
            if kernel32.WaitForSingleObject(handle, _INFINITE) == _WAIT_OBJECT_0:
                stop.set()
        finally:
            kernel32.CloseHandle(handle)

    threading.Thread(target=wait, name="host-stop-watch", daemon=True).start()
    return True
