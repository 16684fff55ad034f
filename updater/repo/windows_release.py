"""`release windows`: one Windows release from source to a signed TUF target and a signed MSI.

    freeze (Wine on Linux, native on Windows) -> sign the exe -> bundle (only the signed exe)
    -> check it as `add` does (PE32+, version resource == X.Y.Z, signature) -> build the MSI
    from that exe -> sign the MSI -> check its signature -> add + sign the TUF target

The MSI is built and signed before the TUF target is added, so a failure in any step leaves the
repository as it was; publishing (build/release.py) comes after all of it. Each side effect is
one injected step (`WindowsBuild`), so the order and the refusals are tested without Wine; the
Wine suite runs the real steps.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from updater.policy import WINDOWS, parse_version
from updater.repo.bundle_check import check_bundle
from updater.repo.programs import Runner, run_program
from updater.repo.repository import ReleasePolicy, RepoError, Repository


@dataclass(frozen=True, slots=True)
class WindowsBuild:
    """The side effects: freeze(version, out_dir, trusted_root) -> the unsigned exe;
    message_dll() -> pywin32's servicemanager.pyd of the build Python; build_msi(exe, version,
    out, message_dll) -> the MSI; sign(path) signs an exe or MSI in place; verify(path) raises
    unless its signature is valid."""

    freeze: Callable[[str, Path, Path], Path]
    message_dll: Callable[[], Path]
    build_msi: Callable[[Path, str, Path, Path], Path]
    sign: Callable[[Path], Path]
    verify: Callable[[Path], None]


@dataclass(frozen=True, slots=True)
class WindowsRelease:
    exe: Path  # the signed exe, as in the bundle
    msi: Path  # the signed MSI
    added: list[str]  # the TUF targets added


def release_windows(
    repo: Repository,
    version: str,
    build: WindowsBuild,
    out_dir: Path,
    *,
    policy: ReleasePolicy | None = None,
    ca_file: Path | None = None,
    mtime: int,
    run: Runner = run_program,
    log: Callable[[str], None] = print,
) -> WindowsRelease:
    """Every step in order; raises RepoError (a refusal or a failed step) with the repository
    unchanged unless the last step, the TUF add, was reached."""
    parse_version(version)
    if not (repo.metadata_dir / "root.json").is_file():
        raise RepoError(f"no repository in {repo.repo_dir}: run `release.py init` first")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    log(f"1/7 freeze {version}")
    exe = build.freeze(version, out_dir / "freeze", repo.metadata_dir / "root.json")
    bundle = out_dir / "bundle"
    bundle.mkdir()
    signed = bundle / "r4agent.exe"
    shutil.copyfile(exe, signed)
    log("2/7 sign the exe")
    build.sign(signed)
    log("3/7 check the bundle (PE32+, embedded version, signature)")
    check_bundle(bundle, version, platform=WINDOWS, ca_file=ca_file, run=run)
    log("4/7 build the MSI from the signed exe")
    msi = build.build_msi(signed, version, out_dir / f"r4agent-{version}.msi",
                          build.message_dll())
    log("5/7 sign the MSI")
    build.sign(msi)
    log("6/7 check the MSI's signature")
    build.verify(msi)
    log("7/7 add and sign the TUF target")
    added = repo.add_bundle(bundle, version, policy, platform=WINDOWS, mtime=mtime)
    return WindowsRelease(signed, msi, added)
