"""Fixtures for the Windows artefacts under Wine (marker `wine`).

`wine_tools` runs .ci/wine-setup.sh (apt packages + the cached build prefix; idempotent, a few
seconds when done), so `pytest -m wine` works on a fresh machine without a separate step.
`windows_release` releases 1.0.0 with `build/release.py release windows` (freeze with the
Windows CPython under Wine, sign the exe with a throwaway Authenticode certificate, check it,
build the MSI from the signed exe, sign it, add the target to a TUF repository on disk with
throwaway keys, whose root is baked into the exes), and freezes 1.0.0 again (from a copy of this
tree at another path, in its own workpath: the bytes must match, it is what update patches are
made of) and 1.1.0, which the practice test releases with `release windows --exe` while the
agent runs.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures.build_scripts import load_build_script
from tests.fixtures.code_signing import make_signing_cert
from updater.repo.repository import Repository

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "build" / "wine"))

import winehost as winehost  # noqa: E402 (re-exported for the tests)

TIMINGS: dict[str, float] = {}
RELEASE = load_build_script("release", "release_for_wine")


def timed(label: str, started: float) -> None:
    TIMINGS[label] = time.monotonic() - started
    print(f"[wine timing] {label}: {TIMINGS[label]:.1f} s", file=sys.stderr)


@pytest.fixture(scope="session")
def wine_tools() -> None:
    started = time.monotonic()
    subprocess.run(["bash", str(REPO / ".ci" / "wine-setup.sh")], check=True, timeout=3000)
    timed("wine-setup (apt + build prefix)", started)


@dataclass(frozen=True)
class WindowsRelease:
    repository: Repository
    exe_1_0: Path  # signed
    exe_1_1: Path  # frozen, unsigned, not yet released
    exe_1_0_again: Path  # unsigned, the second build of 1.0.0 (another source path, workpath)
    exe_1_0_unsigned_sha256: str
    msi: Path  # signed, holds the signed exe_1_0
    cert: Path  # the throwaway signing certificate (the CA to trust)


def verify(path: Path, cert: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["osslsigncode", "verify", "-CAfile", str(cert), "-in", str(path)],
        capture_output=True, text=True, timeout=300, check=False,
    )


@pytest.fixture(scope="session")
def signing_env(
    wine_tools: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """A throwaway code-signing certificate for `release windows`, given the way a release job
    gives it (environment: paths and passphrase). Yields the certificate (the CA to trust)."""
    from updater.repo import authenticode

    folder = tmp_path_factory.mktemp("codesign")
    key, cert = make_signing_cert(folder)
    names = (authenticode.ENV_CERT, authenticode.ENV_KEY)
    saved = {name: os.environ.get(name) for name in names}
    os.environ[authenticode.ENV_CERT], os.environ[authenticode.ENV_KEY] = str(cert), str(key)
    try:
        yield cert
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def release_windows_cli(repository: Repository, cert: Path, version: str, out: Path,
                        *extra: str) -> None:
    """`build/release.py release windows` on the test repository (throwaway keys)."""
    code = RELEASE.main(["--repo", str(repository.repo_dir), "--keys",
                         str(repository.keys_dir), "release", "windows", "--version", version,
                         "--ca-file", str(cert), "--out", str(out), *extra])
    assert code == 0, f"release windows {version} failed"


@pytest.fixture(scope="session")
def windows_release(
    wine_tools: None, signing_env: Path, tmp_path_factory: pytest.TempPathFactory
) -> WindowsRelease:
    tmp = tmp_path_factory.mktemp("windows-release")
    Repository.create_keys(tmp / "keys")
    repository = Repository(tmp / "repo", tmp / "keys")
    repository.initialize()
    root = tmp / "root.json"
    root.write_bytes(repository.root_bytes())
    # 1.0.0: the whole `release windows` (freeze under Wine, sign, check, MSI, sign, add)
    started = time.monotonic()
    release_windows_cli(repository, signing_env, "1.0.0", tmp / "release-1.0.0")
    timed("release windows 1.0.0 (freeze under Wine ... add)", started)
    out = tmp / "release-1.0.0"
    unsigned_sha256 = hashlib.sha256((out / "freeze" / "r4agent.exe").read_bytes()).hexdigest()
    # the reproducibility check (another source path and workpath) and 1.1.0, released by the
    # practice test with `release windows --exe` while the agent runs
    source_copy = copy_of_source_tree(tmp / "source-copy")
    exes = {}
    for version, source, name in [("1.0.0", source_copy, "again-1.0.0"),
                                  ("1.1.0", REPO, "bundle-1.1.0")]:
        started = time.monotonic()
        exes[name] = winehost.freeze_windows(version, tmp / name, trusted_root=root,
                                             source=source)
        timed(f"freeze {version} under Wine ({name})", started)
    return WindowsRelease(repository, out / "bundle" / "r4agent.exe", exes["bundle-1.1.0"],
                          exes["again-1.0.0"], unsigned_sha256, out / "r4agent-1.0.0.msi",
                          signing_env)


def copy_of_source_tree(target: Path) -> Path:
    """The files git knows about (tracked + new, as they are on disk now) at another path."""
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        check=True, capture_output=True, timeout=60,
    ).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


@pytest.fixture
def fresh_prefix(wine_tools: None, tmp_path: Path) -> Iterator[winehost.WinePrefix]:
    """A brand-new Wine prefix (no Python in it: the exe and MSI must stand alone)."""
    started = time.monotonic()
    prefix = winehost.WinePrefix(tmp_path / "prefix")
    prefix.start()
    timed("fresh prefix", started)
    try:
        yield prefix
    finally:
        prefix.stop()
