"""Wine harness (Windows Python in the build prefix): the host's launcher kills an agent tree.

    python kill_tree.py REPO EXE DATA_DIR

Starts `EXE service debug --data-dir DATA_DIR` with updater.host.SubprocessLauncher (what the
service uses), waits until the onefile bootloader's Python child runs (the debug host logs its
first agent start), then kills the tree without asking it to stop (an agent that ignores stop
gets exactly this after the grace period), then — while this process, and so the job handle,
is still alive — lists the processes whose image lies under EXE's folder (the bootloader, its
Python child, a versions\\ copy): "tree killed <exit code>; left [pids]".
"""

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, sys.argv[1])

from updater.host import SubprocessLauncher
from updater.process_tree import process_images

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
    wanted = os.path.normcase(str(folder)) + os.sep
    return [pid for pid, image in process_images() if os.path.normcase(image).startswith(wanted)]


print(f"tree killed {code}; left {images_under(exe.parent)}", flush=True)
