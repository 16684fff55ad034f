"""The one way the release side runs a program (osslsigncode, a Linux build's `--version`):
an injected `Runner`, with the real one here."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Ran:
    returncode: int  # -1: it could not start, or it hung
    output: str  # stdout and stderr


class Runner(Protocol):
    def __call__(self, argv: Sequence[str], timeout_s: float) -> Ran: ...


def run_program(argv: Sequence[str], timeout_s: float) -> Ran:
    """The real runner: no stdin, output captured, a timeout."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout_s,
                              stdin=subprocess.DEVNULL, errors="replace")
    except FileNotFoundError:
        return Ran(-1, f"{argv[0]}: not found")
    except (OSError, subprocess.TimeoutExpired) as e:
        return Ran(-1, f"{argv[0]}: {e}")
    return Ran(done.returncode, done.stdout + done.stderr)
