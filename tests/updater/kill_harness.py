"""Run one install in its own process and freeze at a chosen state, so the test can SIGKILL it
there. Test-only: product code has no fault hooks, only the Installer's observer."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from updater.agent_gate import repository_urls
from updater.install import Installer
from updater.layout import Layout
from updater.state import InstallRecord
from updater.tuf_client import TufClient


def main() -> None:
    base, url, running, wanted, pause_at, marker = sys.argv[1:7]
    layout = Layout(Path(base))

    def observer(record: InstallRecord) -> None:
        if record.state.value == pause_at:
            Path(marker).write_text(record.state.value)
            time.sleep(600)  # killed here by the test

    metadata_url, targets_url = repository_urls(url)
    client = TufClient(layout.metadata_dir, layout.targets_dir, metadata_url, targets_url)
    Installer(layout, client, observer=observer).install(running, wanted)


if __name__ == "__main__":
    main()
