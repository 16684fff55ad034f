"""The data tree the service runs code from: nobody but SYSTEM/Administrators may have made it.

Threat: any local user can create `C:\\ProgramData\\Flynotes` before the MSI runs (and so own
it), plant `R4Agent\\current` + `versions\\X\\r4agent.exe`, or swap a folder for a junction, and
the host then runs that exe as LocalSystem. The decisions (installer/tree_security.py) are the
same on every platform; here they run with the POSIX backend (owner = uid; root may chown), the
Windows backend's calls run under Wine (tests/windows/test_wine_practice.py) and its effect is
checked on real Windows (.github/workflows/windows.yml).
"""

from __future__ import annotations

import os
import stat
import sys
from functools import partial
from pathlib import Path

import pytest

from installer import service
from installer.tree_security import (
    PosixTreeSecurity,
    UntrustedTreeError,
    require_trusted_chain,
    secure_data_tree,
)
from updater.host import SubprocessLauncher

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX backend")

OTHER_USER = 4242  # not root, not us
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="only root can plant another's files")


def _chain(tmp_path: Path) -> list[Path]:
    return [tmp_path / "Flynotes", tmp_path / "Flynotes" / "R4Agent"]


def _plant_agent(base: Path) -> Path:
    exe = base / "versions" / "9.9.9" / "r4agent"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\ntouch \"$0.ran\"\n")
    exe.chmod(0o755)
    (base / "current").write_text('{"version": "9.9.9"}')
    return exe


@needs_root
def test_prepare_refuses_a_tree_another_user_planted_and_does_not_adopt_it(tmp_path: Path) -> None:
    vendor, base = _chain(tmp_path)
    base.mkdir(parents=True)
    exe = _plant_agent(base)
    os.chown(exe, OTHER_USER, OTHER_USER)
    with pytest.raises(UntrustedTreeError, match="r4agent is owned by uid:4242"):
        secure_data_tree([vendor, base], PosixTreeSecurity())
    assert exe.stat().st_uid == OTHER_USER  # not "repaired" into a trusted-looking file
    assert exe.is_file() and (base / "current").is_file()


@needs_root
def test_prepare_refuses_a_vendor_folder_another_user_created(tmp_path: Path) -> None:
    vendor, base = _chain(tmp_path)
    vendor.mkdir()
    os.chown(vendor, OTHER_USER, OTHER_USER)
    with pytest.raises(UntrustedTreeError, match="Flynotes is owned by uid:4242"):
        secure_data_tree([vendor, base], PosixTreeSecurity())
    assert not base.exists()  # refused before anything was created inside


@pytest.mark.parametrize("link", ["vendor", "base", "versions"])
def test_prepare_refuses_a_link_anywhere_on_the_data_tree_path(tmp_path: Path, link: str) -> None:
    vendor, base = _chain(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    if link == "vendor":
        vendor.symlink_to(elsewhere)
    elif link == "base":
        vendor.mkdir()
        base.symlink_to(elsewhere)
    else:
        base.mkdir(parents=True)
        (base / "versions").symlink_to(elsewhere)
    with pytest.raises(UntrustedTreeError, match="junction or symbolic link"):
        secure_data_tree([vendor, base], PosixTreeSecurity())
    assert stat.S_IMODE(elsewhere.stat().st_mode) != 0o700  # the link's target was not touched


def test_prepare_makes_a_private_tree_and_keeps_a_trusted_existing_one(tmp_path: Path) -> None:
    base = tmp_path / "R4Agent"
    service.prepare(base)
    assert stat.S_IMODE(base.stat().st_mode) == 0o700
    assert (base / "versions").is_dir() and (base / "logs").is_dir()
    (base / "config.toml").write_text('licence_key = "kept"\n')
    service.prepare(base)  # reinstall over a tree the service made: accepted as it is
    assert (base / "config.toml").read_text() == 'licence_key = "kept"\n'


@needs_root
def test_host_does_not_start_an_exe_from_a_folder_another_user_owns(tmp_path: Path) -> None:
    base = tmp_path / "R4Agent"
    service.prepare(base)
    exe = _plant_agent(base)
    os.chown(exe.parent, OTHER_USER, OTHER_USER)
    check = partial(require_trusted_chain, stop_at=tmp_path, security=PosixTreeSecurity())
    launcher = SubprocessLauncher(check_exe=check)
    with pytest.raises(OSError, match=r"9\.9\.9 is owned by uid:4242"):
        launcher.start([str(exe)], dict(os.environ))
    assert not exe.with_name("r4agent.ran").exists()


def test_host_does_not_start_an_exe_reached_through_a_link(tmp_path: Path) -> None:
    base = tmp_path / "R4Agent"
    service.prepare(base)
    real = tmp_path / "elsewhere" / "9.9.9"
    real.mkdir(parents=True)
    (base / "versions" / "9.9.9").symlink_to(real)
    exe = base / "versions" / "9.9.9" / "r4agent"
    exe.write_text("#!/bin/sh\ntouch \"$0.ran\"\n")
    exe.chmod(0o755)
    check = partial(require_trusted_chain, stop_at=tmp_path, security=PosixTreeSecurity())
    with pytest.raises(OSError, match="junction or symbolic link"):
        SubprocessLauncher(check_exe=check).start([str(exe)], dict(os.environ))
    assert not (real / "r4agent.ran").exists()


def test_host_starts_an_exe_from_the_tree_it_made(tmp_path: Path) -> None:
    base = tmp_path / "R4Agent"
    service.prepare(base)
    exe = base / "versions" / "1.0.0" / "r4agent"
    exe.parent.mkdir()
    exe.write_text("#!/bin/sh\nexit 7\n")
    exe.chmod(0o755)
    check = partial(require_trusted_chain, stop_at=tmp_path, security=PosixTreeSecurity())
    child = SubprocessLauncher(check_exe=check).start([str(exe)], dict(os.environ))
    assert child.wait(30) == 7


def test_purge_leaves_nothing_and_keeps_a_vendor_folder_that_is_not_empty(tmp_path: Path) -> None:
    vendor, base = _chain(tmp_path)
    for _ in range(2):
        base.mkdir(parents=True)
        (base / "logs").mkdir()
        (base / "config.toml").write_text("x")
        service.purge(base)
        assert not vendor.exists()  # the vendor folder went too: it was ours and empty
    (vendor / "OtherProduct").mkdir(parents=True)
    base.mkdir()
    service.purge(base)
    assert not base.exists() and (vendor / "OtherProduct").is_dir()


def test_purge_writes_no_install_log_into_the_tree_it_removed(tmp_path: Path) -> None:
    import argparse

    vendor, base = _chain(tmp_path)
    (base / "logs").mkdir(parents=True)
    code = service.command(argparse.Namespace(action="purge", data_dir=base))
    assert code == 0
    assert not vendor.exists()
