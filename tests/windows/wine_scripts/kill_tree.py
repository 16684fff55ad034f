"""Wine harness (Windows Python in the build prefix): the host's launcher kills an agent tree.

    python kill_tree.py REPO EXE DATA_DIR

Starts `EXE service debug --data-dir DATA_DIR` with updater.host.SubprocessLauncher (what the
service uses), waits until the onefile bootloader's Python child runs (the debug host logs its
first agent start), then kills the tree without asking it to stop (an agent that ignores stop
gets exactly this after the grace period), then — while this process, and so the job handle,
is still alive — lists the processes whose image lies under EXE's folder (the bootloader, its
Python child, a versions\\ copy): "tree killed <exit code>; left [pids]".
"""

import ctypes
import os
import sys
import time
from ctypes import wintypes
from pathlib import Path

import win32process

sys.path.insert(0, sys.argv[1])

from updater.host import SubprocessLauncher

exe, data = Path(sys.argv[2]), Path(sys.argv[3])
child = SubprocessLauncher(data.parent / "console.log").start(
    [str(exe), "service", "debug", "--data-dir", str(data)], dict(os.environ)
)
service_log = data / "logs" / "service.log"
deadline = time.monotonic() + 120
while not (service_log.exists() and "host start" in service_log.read_text(errors="replace")):
    if time.monotonic() > deadline or child.wait(0.2) is not None:
        child.kill()
        sys.exit("the debug host never started its agent")
child.kill()
code = child.wait(30)


def images_under(folder: Path) -> list[int]:
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined,unused-ignore]
    kernel32.OpenProcess.restype = wintypes.HANDLE
    wanted = os.path.normcase(str(folder)) + os.sep
    found = []
    for pid in win32process.EnumProcesses():
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            continue
        buffer = ctypes.create_unicode_buffer(1024)
        size = wintypes.DWORD(len(buffer))
        named = kernel32.QueryFullProcessImageNameW(handle, 0, buffer, ctypes.byref(size))
        if named and os.path.normcase(buffer.value).startswith(wanted):
            found.append(int(pid))
        kernel32.CloseHandle(handle)
    return found


print(f"tree killed {code}; left {images_under(exe.parent)}", flush=True)
