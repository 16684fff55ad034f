"""Local logging: a rotating file under <data_dir>/logs, plus the console with --foreground.
Times are local with the UTC offset (`local_time`).

Patient data is kept out of logs by the code never logging it (log the patient CODE only);
the canary tests prove that. As defence in depth, every handler installed here carries a
filter that masks registered secrets (licence key, SQS keys and session token, Rollbar
token, proxy/DB passwords) wherever they appear in a formatted line or traceback. The same
registry (`SECRETS`) is what the Rollbar reporter masks in every payload.
"""

from __future__ import annotations

import logging
import logging.handlers
import re
import sys
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

LOG_DIRNAME: Final = "logs"
LOG_FILENAME: Final = "agent.log"
MAX_BYTES: Final = 5 * 1024 * 1024
BACKUP_COUNT: Final = 5
MASK: Final = "***"
MIN_SECRET_LENGTH: Final = 6  # shorter values would mask ordinary words
FILE_FORMAT: Final = "%(asctime)s %(levelname)-7s %(process)d %(threadName)s %(name)s: %(message)s"
CONSOLE_FORMAT: Final = "%(asctime)s %(levelname)-7s %(message)s"
_MARK: Final = "_r4agent_handler"


# Shapes of credentials that may reach a log before anyone registered them: AWS access key ids
# (long-term AKIA…, temporary ASIA…) and long base64 blobs such as STS session tokens.
_CREDENTIAL_SHAPES: Final = re.compile(
    r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b|(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{100,}={0,2}"
)


def mask_credential_shapes(text: str) -> str:
    """Mask AWS access key ids and session-token-like blobs, registered or not."""
    return _CREDENTIAL_SHAPES.sub(MASK, text)


class SecretRegistry:
    """The secret values to mask. Thread-safe; values are only ever added."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: tuple[str, ...] = ()

    def add(self, *values: str | None) -> None:
        with self._lock:
            new = {v for v in values if v and len(v) >= MIN_SECRET_LENGTH}
            # longest first so a secret containing another is masked whole
            merged = set(self._values) | new
            self._values = tuple(sorted(merged, key=len, reverse=True))

    def values(self) -> tuple[str, ...]:
        """The registered values, longest first (a snapshot)."""
        return self._values

    def mask(self, text: str) -> str:
        for value in self._values:  # the tuple is replaced atomically, never mutated
            if value in text:
                text = text.replace(value, MASK)
        return mask_credential_shapes(text)

    def __len__(self) -> int:
        return len(self._values)


SECRETS: Final = SecretRegistry()
"""Process-wide, because logging is: the composition root registers each secret as it is
learned (config at start-up, SQS credentials at every refresh). The Rollbar reporter
(agent.reporting) masks the same registry's values: one list for every way out."""


def register_secret(*values: str | None) -> None:
    """Mask these values in every log line from now on (empty/short values are ignored)."""
    SECRETS.add(*values)


class SecretMaskingFilter(logging.Filter):
    """Rewrites a record so its message, traceback and stack text carry no registered secret."""

    def __init__(self, registry: SecretRegistry = SECRETS) -> None:
        super().__init__()
        self._registry = registry
        self._formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string must not lose the record
            message = str(record.msg)
        record.msg = self._registry.mask(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._registry.mask(record.exc_text)
        if record.stack_info:
            record.stack_info = self._registry.mask(record.stack_info)
        return True


def local_time(moment: float | datetime) -> str:
    """A time as practice IT reads it: this machine's local time WITH its UTC offset, e.g.
    `2026-06-01T10:30:00.125+01:00`. Local, to match the wall clock, R4 and the Event Log; the
    offset, so the hour repeated when the clocks go back stays unambiguous and a support
    engineer elsewhere can convert it."""
    if not isinstance(moment, datetime):
        moment = datetime.fromtimestamp(moment, tz=UTC)
    return moment.astimezone().isoformat(timespec="milliseconds")


class LocalTimeFormatter(logging.Formatter):
    """Stamps records with `local_time` (the agent's log and the service host's)."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return local_time(record.created)


def log_file(data_dir: Path) -> Path:
    return data_dir / LOG_DIRNAME / LOG_FILENAME


def setup_logging(
    data_dir: Path,
    *,
    foreground: bool,
    level: int = logging.INFO,
    secrets: Iterable[str | None] = (),
    max_bytes: int = MAX_BYTES,
    backup_count: int = BACKUP_COUNT,
) -> None:
    """Install the agent's handlers on the root logger (idempotent: replaces its own).

    Raises OSError if the log folder cannot be created (the caller reports it as a config
    problem: the data directory is not writable).
    """
    register_secret(*secrets)
    folder = data_dir / LOG_DIRNAME
    folder.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _MARK, False)]:
        root.removeHandler(old)
        old.close()

    masking = SecretMaskingFilter()
    file_handler = logging.handlers.RotatingFileHandler(
        log_file(data_dir), maxBytes=max_bytes, backupCount=backup_count, encoding="utf-8"
    )
    file_handler.setFormatter(LocalTimeFormatter(FILE_FORMAT))
    handlers: list[logging.Handler] = [file_handler]
    if foreground:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(LocalTimeFormatter(CONSOLE_FORMAT))
        handlers.append(console)
    for handler in handlers:
        handler.addFilter(masking)
        setattr(handler, _MARK, True)
        root.addHandler(handler)
    root.setLevel(level)
    # Third-party chatter that would drown the agent's own lines (and could echo URLs).
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    logging.captureWarnings(True)


def teardown_logging() -> None:
    """Remove and close the handlers `setup_logging` installed (tests, clean exit)."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _MARK, False)]:
        root.removeHandler(old)
        old.close()
