"""Where the offline keys' passphrase comes from: a file or the environment (CI), else a prompt
in a terminal — never the command line, which other users of the machine can read (`ps`) and
shells keep in their history."""

from __future__ import annotations

import getpass
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from updater.repo.keys import Passphrase
from updater.repo.repository import RepoError

ENV_FILE = "R4AGENT_RELEASE_PASSPHRASE_FILE"  # a file holding the passphrase (first line)
ENV_VALUE = "R4AGENT_RELEASE_PASSPHRASE"


def passphrase_from(
    environ: Mapping[str, str],
    *,
    new: bool = False,
    prompt: Callable[[str], str] = getpass.getpass,
    interactive: Callable[[], bool] = sys.stdin.isatty,
) -> Passphrase:
    """A passphrase source, asked at most once and only when a key needs it. `new`: for keys
    being made (a prompt asks twice)."""
    cached: list[str] = []

    def get() -> str:
        if cached:
            return cached[0]
        if environ.get(ENV_FILE):
            try:
                lines = Path(environ[ENV_FILE]).read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeError) as e:
                raise RepoError(f"${ENV_FILE} names a file that cannot be read: {e}") from e
            value = lines[0] if lines else ""
        elif ENV_VALUE in environ:
            value = environ[ENV_VALUE]
        elif interactive():
            value = prompt("Passphrase of the offline keys: ")
            if new and prompt("The same passphrase again: ") != value:
                raise RepoError("the two passphrases differ; nothing was written")
        else:
            raise RepoError(f"the offline keys are encrypted: set ${ENV_FILE} (a file holding "
                            f"the passphrase) or ${ENV_VALUE}, or run in a terminal to be asked")
        if not value:
            raise RepoError("the passphrase is empty")
        cached.append(value)
        return value

    return get
