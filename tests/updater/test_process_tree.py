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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.updater.support import process_state, wait_for
from updater.host import SubprocessLauncher
from updater.process_tree import _resume, _thread_entry, resume_failed

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


# ---- resuming the suspended agent (Windows calls, through the real C calling convention) --------


class StandInKernel32:
    """kernel32's thread calls as C functions (ctypes callbacks), held the way the real DLL's
    functions are before any prototype is declared (C int results). The process has one
    thread; ResumeThread returns `resume_result` through the C ABI, as the DLL's DWORD would."""

    def __init__(self, pid: int, resume_result: int) -> None:
        from ctypes import CFUNCTYPE, POINTER, c_int, c_void_p, cast

        def snapshot(flags: int, process: int) -> int:
            return 77

        def first(handle: int, entry: Any) -> int:
            entry.contents.th32OwnerProcessID = pid
            entry.contents.th32ThreadID = 8
            return 1

        def next_(handle: int, entry: Any) -> int:
            return 0

        def open_thread(access: int, inherit: int, thread_id: int) -> int:
            return 99 if thread_id == 8 else 0

        def resume(handle: int) -> int:
            self.resumed.append(handle)
            return resume_result

        def close(handle: int) -> int:
            return 1

        entry_pointer: Any = POINTER(_thread_entry())
        self.resumed: list[int] = []
        self._keep: list[Any] = []
        calls: list[tuple[str, Callable[..., int], tuple[Any, ...]]] = [
            ("CreateToolhelp32Snapshot", snapshot, (c_int, c_int)),
            ("Thread32First", first, (c_void_p, entry_pointer)),
            ("Thread32Next", next_, (c_void_p, entry_pointer)),
            ("OpenThread", open_thread, (c_int, c_int, c_int)),
            ("ResumeThread", resume, (c_void_p,)),
            ("CloseHandle", close, (c_void_p,)),
        ]
        for name, fn, params in calls:
            callback = CFUNCTYPE(c_int, *params)(fn)  # what the "DLL" does, in C
            self._keep.append(callback)
            # what the caller holds: a function pointer with ctypes' default prototype
            setattr(self, name, cast(callback, CFUNCTYPE(c_int)))


def test_a_thread_that_fails_to_resume_is_detected_so_the_agent_is_not_left_suspended() -> None:
    # ResumeThread failing returns (DWORD)-1; read as a C int it was -1 != 0xFFFFFFFF, so the
    # failure counted as a resume: the agent stayed suspended, the service showed running
    kernel32 = StandInKernel32(pid=4242, resume_result=-1)
    with pytest.raises(OSError, match="could not resume process 4242"):
        _resume(4242, kernel32)
    assert kernel32.resumed == [99]


def test_a_thread_that_resumes_passes() -> None:
    kernel32 = StandInKernel32(pid=4242, resume_result=1)  # its previous suspend count
    _resume(4242, kernel32)
    assert kernel32.resumed == [99]
    assert resume_failed(0xFFFFFFFF) and not resume_failed(1)
