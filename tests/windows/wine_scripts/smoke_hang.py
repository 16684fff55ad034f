"""Wine harness (Windows Python in the build prefix): the staging smoke test of a hung build.

    python smoke_hang.py REPO

The "staged exe" is this Python with the argument `self-test`, which it runs as a script from
the current folder: it starts a child that inherits its stdout/stderr (as a onefile bootloader's
Python child does) and both hang. `subprocess.run(capture_output=True, timeout=...)` killed only
the direct child, then read the pipes with no timeout while the child held them: this script
then never ends (the test's timeout says so). Prints "smoke failed after <s> s; child left
<True|False>: <error>".
"""

import os
import sys
import tempfile
import time
from pathlib import Path

import win32api
import win32con
import win32process

sys.path.insert(0, sys.argv[1])

from updater.errors import SmokeTestError
from updater.staging import smoke_test

STILL_ACTIVE = 259
HUNG_BUILD = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
open("child.pid", "w").write(str(child.pid))
print("starting", flush=True)
time.sleep(600)
"""

scratch = Path(tempfile.mkdtemp(prefix="smoke-hang-"))
os.chdir(scratch)
(scratch / "self-test").write_text(HUNG_BUILD)
started = time.monotonic()
try:
    smoke_test(Path(sys.executable), "9.9.9", 5)
    sys.exit("the hung build passed its smoke test")
except SmokeTestError as e:
    error = str(e)
took = time.monotonic() - started


def alive(pid: int) -> bool:
    try:
        handle = win32api.OpenProcess(win32con.PROCESS_QUERY_LIMITED_INFORMATION, False, pid)
    except win32api.error:
        return False
    try:
        return bool(win32process.GetExitCodeProcess(handle) == STILL_ACTIVE)
    finally:
        win32api.CloseHandle(handle)


child = int((scratch / "child.pid").read_text())
deadline = time.monotonic() + 15
while alive(child) and time.monotonic() < deadline:
    time.sleep(0.1)
print(f"smoke failed after {took:.1f} s; child left {alive(child)}: {error}", flush=True)
