"""Command output that survives its reader going away (`r4agent doctor | head -1`), and a
console code page that cannot show every character.

When the pipe's reader has exited, a write raises BrokenPipeError (EINVAL on Windows): the
command would die with a traceback instead of finishing its work and returning its own exit
code. `ReaderSafeOutput` swallows that, stops writing, and points the process's stdout at the
null device so the interpreter's final flush cannot fail either.
"""

from __future__ import annotations

import errno
import io
import os
import sys
from typing import TextIO

_GONE_ERRNOS = frozenset({errno.EPIPE, errno.EINVAL})  # EINVAL: Windows' closed pipe


class ReaderSafeOutput(io.TextIOBase):
    """Writes to `stream` until its reader has gone, then quietly discards the rest."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self._stream = stream
        self.reader_gone = False

    @property
    def encoding(self) -> str:  # type: ignore[override]  # TextIOBase declares an attribute
        return getattr(self._stream, "encoding", None) or "utf-8"

    def write(self, text: str) -> int:
        if not self.reader_gone:
            try:
                try:
                    self._stream.write(text)
                except UnicodeEncodeError:  # a console code page without '·' or '✓'
                    self._stream.write(text.encode(self.encoding, "replace").decode(self.encoding))
                if "\n" in text:  # line by line, so a watcher sees each check as it ends
                    self._stream.flush()
            except OSError as e:
                self._gone(e)
        return len(text)

    def flush(self) -> None:
        if not self.reader_gone:
            try:
                self._stream.flush()
            except OSError as e:
                self._gone(e)

    def _gone(self, error: OSError) -> None:
        if not isinstance(error, BrokenPipeError) and error.errno not in _GONE_ERRNOS:
            raise error
        self.reader_gone = True
        if self._stream is sys.stdout or self._stream is sys.__stdout__:
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, self._stream.fileno())
                os.close(devnull)
            except (OSError, ValueError):
                pass  # no real file descriptor (captured output): nothing left to flush


def reader_safe(stream: TextIO | None = None) -> TextIO:
    """`stream` (default: stdout) wrapped for command output; typed as the TextIO it stands
    in for."""
    safe: TextIO = ReaderSafeOutput(stream or sys.stdout)  # type: ignore[assignment]
    return safe
