"""Killing the agent kills its whole process tree (POSIX half; the Windows job object is proven
under Wine in tests/windows/test_wine_practice.py).

Threat: a onefile agent is a bootloader plus a Python child. Killing only the process the host
started (the bootloader) after the grace period left the child running: still polling SQS,
still holding the version's exe open. Here a real script agent ignores the stop request and
spawns a grandchild that ignores it too, the way a stuck agent would.
"""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest

from tests.updater.support import process_state, wait_for
from updater.host import SubprocessLauncher

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX process groups")

STUBBORN_AGENT = textwrap.dedent(
    """
    import os, signal, subprocess, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    grandchild = subprocess.Popen(
        [sys.executable, "-c",
         "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
         "print('ready', flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE,
    )
    grandchild.stdout.readline()
    print(f"pids {os.getpid()} {grandchild.pid}", flush=True)
    time.sleep(600)
    """
)


def _live_members_of_group(pgid: int) -> list[int]:
    pids = (int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit())
    return [pid for pid in pids if process_state(pid) == (True, pgid)]


def test_killing_an_agent_that_ignores_stop_leaves_no_process_of_its_tree(
    tmp_path: Path,
) -> None:
    script = tmp_path / "stubborn_agent.py"
    script.write_text(STUBBORN_AGENT)
    console = tmp_path / "console.log"
    child = SubprocessLauncher(console).start([sys.executable, str(script)], dict(os.environ))
    grandchild_pid = 0
    try:
        wait_for(lambda: console.exists() and "pids" in console.read_text(),
                 "the agent started its grandchild")
        leader_pid, grandchild_pid = (
            int(pid) for pid in console.read_text().split("pids", 1)[1].split()[:2]
        )
        assert os.getpgid(grandchild_pid) == leader_pid  # the agent leads its own group
        assert os.getpgid(leader_pid) != os.getpgid(0)  # ... apart from the host's

        child.request_stop()
        assert child.wait(0.2) is None  # ignored: this is the agent the grace period ends
        child.kill()
        code = child.wait(10)
        wait_for(lambda: not process_state(grandchild_pid)[0], "the grandchild has ended", 10)
        assert _live_members_of_group(leader_pid) == []
    finally:
        child.kill()
        if grandchild_pid and process_state(grandchild_pid)[0]:  # the bug: do not leak it
            os.kill(grandchild_pid, 9)
    assert code is not None and code < 0
