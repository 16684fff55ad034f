"""Safe extraction of a (verified) archive into the private staging folder; the smoke test of
the staged build."""

from __future__ import annotations

import io
import os
import signal
import sys
import tarfile
import time
from pathlib import Path

import pytest

from tests.updater.support import process_state, wait_for
from updater.errors import SmokeTestError, UnsafeArchiveError
from updater.staging import FIRST_SELF_TEST_VERSION, StagingLimits, extract_tar, smoke_test


def _tar(*members: tuple[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def test_regular_bundle_extracts_with_exec_bit(tmp_path: Path) -> None:
    extract_tar(_tar(("./r4agent", b"x"), ("lib/a.bin", b"yy")), tmp_path)
    assert (tmp_path / "r4agent").read_bytes() == b"x"
    assert (tmp_path / "r4agent").stat().st_mode & 0o100
    assert (tmp_path / "lib" / "a.bin").read_bytes() == b"yy"


@pytest.mark.parametrize("name", ["..\\..\\evil", "C:evil", "a/../../evil", "/abs", "../x"])
def test_windows_and_posix_traversal_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(UnsafeArchiveError):
        extract_tar(_tar(("r4agent", b"x"), (name, b"e")), tmp_path / "stage")
    assert not (tmp_path / "evil").exists()


def test_the_same_file_twice_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UnsafeArchiveError):
        extract_tar(_tar(("r4agent", b"x"), ("./r4agent", b"y")), tmp_path)


def test_member_count_and_total_size_caps(tmp_path: Path) -> None:
    with pytest.raises(UnsafeArchiveError):
        extract_tar(_tar(*[(f"f{i}", b"") for i in range(5)]), tmp_path,
                    limits=StagingLimits(max_members=4))
    with pytest.raises(UnsafeArchiveError):
        extract_tar(_tar(("big", b"x" * 100)), tmp_path, limits=StagingLimits(max_total_bytes=99))


def test_garbage_is_not_a_tar(tmp_path: Path) -> None:
    with pytest.raises(UnsafeArchiveError):
        extract_tar(b"not a tar at all" * 100, tmp_path)


# ---- the smoke test of a staged build ------------------------------------------------------------

# A staged "build" that hangs the way a onefile exe can: the process the smoke test starts (the
# bootloader) spawns a child that inherits its stdout/stderr and hangs too. `subprocess.run(...,
# capture_output=True, timeout=...)` killed only the direct child; on Windows it then read the
# pipes with no timeout while the grandchild held them: the agent's main loop hung for good.
HANGING_BUILD = """#!{python}
import subprocess, sys, time
grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
open({pids!r}, "w").write(f"{{grandchild.pid}}\\n")
print("starting", flush=True)
time.sleep(600)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX process groups; Wine covers Windows")
def test_hung_staged_build_whose_child_holds_its_output_fails_in_time_and_leaves_no_process(
    tmp_path: Path,
) -> None:
    pids = tmp_path / "pids"
    exe = tmp_path / "staging" / "r4agent"
    exe.parent.mkdir()
    exe.write_text(HANGING_BUILD.format(python=sys.executable, pids=str(pids)))
    exe.chmod(0o700)
    timeout_s = 2.0
    started = time.monotonic()
    grandchild = 0
    try:
        with pytest.raises(SmokeTestError, match="did not answer self-test"):
            smoke_test(exe, "1.3.0", timeout_s)
        took = time.monotonic() - started
        grandchild = int(pids.read_text())
        wait_for(lambda: not process_state(grandchild)[0], "the staged build's child has ended", 10)
    finally:
        if grandchild and process_state(grandchild)[0]:  # the bug: do not leak it
            os.kill(grandchild, signal.SIGKILL)
    assert took < timeout_s + 10  # the kill and its reaping, not the build's 600 s


def _legacy_build(tmp_path: Path, version: str) -> Path:
    """A build whose command line does not know `self-test` but prints its version."""
    exe = tmp_path / f"staged-{version}" / "r4agent"
    exe.parent.mkdir()
    exe.write_text(
        f"#!{sys.executable}\nimport sys\n"
        "if sys.argv[1:] == ['self-test']:\n"
        "    sys.stderr.write(\"r4agent: error: invalid choice: 'self-test'\\n\")\n"
        "    sys.exit(2)\n"
        f"print('r4agent {version}')\n"
    )
    exe.chmod(0o700)
    return exe


def test_a_build_at_or_above_the_first_self_test_version_that_lost_self_test_is_refused(
    tmp_path: Path,
) -> None:
    # a future build that dropped the command would pass on --version alone, confirm itself,
    # and maybe never be able to update again
    for version in (FIRST_SELF_TEST_VERSION, "1.4.0"):
        with pytest.raises(SmokeTestError, match="no self-test command"):
            smoke_test(_legacy_build(tmp_path, version), version, 30)


def test_a_build_older_than_the_first_self_test_version_is_checked_with_version_alone(
    tmp_path: Path,
) -> None:
    smoke_test(_legacy_build(tmp_path, "0.9.0"), "0.9.0", 30)
