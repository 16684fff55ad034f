"""The agent's whole process tree, so that killing the agent kills all of it.

A onefile agent is two processes: the PyInstaller bootloader (the process the host starts) and
the Python child it spawns. Killing only the bootloader leaves the child running: still polling
SQS, still holding `versions/<v>/r4agent.exe` open. So the host starts each agent as the root of
its own tree and kills the tree:

- Windows: the agent is created suspended, put in a Job Object with
  JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE (every process it spawns inherits the job), then resumed —
  nothing runs before it is in the job. Kill = TerminateJobObject; closing the job handle (the
  host exits or crashes) ends the tree too.
- POSIX: the agent leads a new session (`start_new_session=True`); kill = SIGKILL to its
  process group.

`process_images` (Windows) lists what runs, by image path: the uninstall's `service stop` waits
on it, and the Wine harness checks with it that a kill left nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)

CREATE_SUSPENDED = 0x00000004
_TH32CS_SNAPTHREAD = 0x00000004
_THREAD_SUSPEND_RESUME = 0x0002
_INVALID_HANDLE = -1
_PROCESS_QUERY_LIMITED_INFORMATION = 0x1000
# How long a kill waits for the job's processes to be gone (Windows): part of a stop's worst case.
KILL_DRAIN_S = 10.0


def popen_options() -> dict[str, Any]:
    """Extra `subprocess.Popen` arguments that make the child the root of its own tree."""
    if sys.platform == "win32":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | CREATE_SUSPENDED}
    return {"start_new_session": True}


class ProcessTree:
    """One started agent and everything it spawns. `adopt` right after Popen."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self._proc = proc
        self._job: Any = None

    @classmethod
    def adopt(cls, proc: subprocess.Popen[bytes]) -> ProcessTree:
        """Windows: put the (suspended) process in a kill-on-close job, then let it run.
        Raises OSError (and ends the process) if it cannot be resumed."""
        tree = cls(proc)
        if sys.platform == "win32":
            try:
                tree._job = _kill_on_close_job(proc)
            except Exception as e:  # noqa: BLE001 - a tree we cannot kill beats no agent at all
                log.warning("agent not in a job object (%s): a kill may leave its child", e)
            try:
                _resume(proc.pid)
            except OSError:
                tree.kill()
                raise
        return tree

    def kill(self) -> None:
        """End the whole tree (idempotent)."""
        if sys.platform == "win32":
            if self._job is not None:
                with contextlib.suppress(Exception):
                    _terminate_and_drain(self._job)
                    return
            if self._proc.poll() is None:
                self._proc.kill()
            return
        # Only while the leader is unreaped: its pid (the group id) cannot have been reused.
        if self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signal.SIGKILL)

    def close(self) -> None:
        """The agent has exited: drop the job (kill-on-close ends any straggler)."""
        if self._job is not None:
            with contextlib.suppress(Exception):
                self._job.Close()
            self._job = None


def _terminate_and_drain(job: Any, timeout_s: float = KILL_DRAIN_S) -> None:
    """TerminateJobObject only starts each process's end: wait until none is left, so that
    "stopped" means the exes are no longer open (uninstall, purge, the next version)."""
    import time

    import win32job

    win32job.TerminateJobObject(job, 1)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        accounting = win32job.QueryInformationJobObject(
            job, win32job.JobObjectBasicAccountingInformation
        )
        if accounting["ActiveProcesses"] == 0:
            return
        time.sleep(0.05)


def _kill_on_close_job(proc: subprocess.Popen[bytes]) -> Any:
    import win32job

    job = win32job.CreateJobObject(None, "")
    info = win32job.QueryInformationJobObject(job, win32job.JobObjectExtendedLimitInformation)
    info["BasicLimitInformation"]["LimitFlags"] |= win32job.JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
    win32job.SetInformationJobObject(job, win32job.JobObjectExtendedLimitInformation, info)
    win32job.AssignProcessToJobObject(job, int(proc._handle))  # type: ignore[attr-defined]
    return job


_RESUME_FAILED = 0xFFFFFFFF  # ResumeThread's (DWORD)-1


def resume_failed(previous_suspend_count: int) -> bool:
    """ResumeThread's result, read as the DWORD it is (see `declare_kernel32`)."""
    return previous_suspend_count == _RESUME_FAILED


def _thread_entry() -> type:
    from ctypes import Structure, wintypes

    class THREADENTRY32(Structure):
        _fields_ = [
            ("dwSize", wintypes.DWORD),
            ("cntUsage", wintypes.DWORD),
            ("th32ThreadID", wintypes.DWORD),
            ("th32OwnerProcessID", wintypes.DWORD),
            ("tpBasePri", wintypes.LONG),
            ("tpDeltaPri", wintypes.LONG),
            ("dwFlags", wintypes.DWORD),
        ]

    return THREADENTRY32


def declare_kernel32(kernel32: Any, thread_entry: type) -> None:
    """Prototypes for the calls `_resume` makes. Without them ctypes passes and returns C ints:
    a handle above 2**31 does not fit, and ResumeThread's failure, (DWORD)-1, came back as -1,
    which never equals 0xFFFFFFFF: a failed resume passed as done and the agent stayed
    suspended for good while the service showed running."""
    import ctypes
    from ctypes import wintypes

    entry: Any = ctypes.POINTER(thread_entry)
    kernel32.CreateToolhelp32Snapshot.argtypes = (wintypes.DWORD, wintypes.DWORD)
    kernel32.CreateToolhelp32Snapshot.restype = wintypes.HANDLE
    for walk in (kernel32.Thread32First, kernel32.Thread32Next):
        walk.argtypes = (wintypes.HANDLE, entry)
        walk.restype = wintypes.BOOL
    kernel32.OpenThread.argtypes = (wintypes.DWORD, wintypes.BOOL, wintypes.DWORD)
    kernel32.OpenThread.restype = wintypes.HANDLE
    kernel32.ResumeThread.argtypes = (wintypes.HANDLE,)
    kernel32.ResumeThread.restype = wintypes.DWORD
    kernel32.CloseHandle.argtypes = (wintypes.HANDLE,)
    kernel32.CloseHandle.restype = wintypes.BOOL


def _last_error() -> int:
    import ctypes

    get = getattr(ctypes, "get_last_error", None)  # Windows only
    return int(get()) if get is not None else 0


def _resume(pid: int, kernel32: Any = None) -> None:
    """Resume the threads of a process created suspended (Popen does not expose the thread
    handle; a toolhelp snapshot names the one thread it has). Raises OSError unless at least
    one thread was resumed (the caller then kills the tree). `kernel32`: tests pass stand-in
    C functions; the default is the real DLL."""
    import ctypes
    from ctypes import wintypes

    thread_entry = _thread_entry()
    if kernel32 is None:
        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined,unused-ignore]
    declare_kernel32(kernel32, thread_entry)
    snapshot = kernel32.CreateToolhelp32Snapshot(_TH32CS_SNAPTHREAD, 0)
    if not snapshot or snapshot == wintypes.HANDLE(_INVALID_HANDLE).value:
        raise OSError(_last_error(), "CreateToolhelp32Snapshot failed")
    resumed = 0
    failed = 0
    try:
        entry: Any = thread_entry()
        entry.dwSize = ctypes.sizeof(thread_entry)
        more = kernel32.Thread32First(snapshot, ctypes.byref(entry))
        while more:
            if entry.th32OwnerProcessID == pid:
                thread = kernel32.OpenThread(_THREAD_SUSPEND_RESUME, False, entry.th32ThreadID)
                if thread:
                    if resume_failed(kernel32.ResumeThread(thread)):
                        failed += 1
                    else:
                        resumed += 1
                    kernel32.CloseHandle(thread)
                else:
                    failed += 1
            more = kernel32.Thread32Next(snapshot, ctypes.byref(entry))
    finally:
        kernel32.CloseHandle(snapshot)
    if not resumed:
        raise OSError(_last_error(),
                      f"could not resume process {pid} ({failed} thread(s) refused)")


def process_images() -> Iterator[tuple[int, str]]:
    """(pid, full image path) of each running process this one may query (Windows); the
    others (no access, gone meanwhile) are left out. No handle stays open across a yield."""
    import ctypes
    from ctypes import wintypes

    import win32process

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined,unused-ignore]
    kernel32.OpenProcess.restype = wintypes.HANDLE
    for pid in win32process.EnumProcesses():
        handle = kernel32.OpenProcess(_PROCESS_QUERY_LIMITED_INFORMATION, False, pid)
        if not handle:
            continue
        try:
            buffer = ctypes.create_unicode_buffer(1024)
            size = wintypes.DWORD(len(buffer))
            named = kernel32.QueryFullProcessImageNameW(handle, 0, buffer, ctypes.byref(size))
            image = buffer.value if named else None
        finally:
            kernel32.CloseHandle(handle)
        if image is not None:
            yield int(pid), image
