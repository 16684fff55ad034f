"""Fixtures for the Windows artefacts under Wine (marker `wine`).

`wine_tools` runs .ci/wine-setup.sh (apt packages + the cached build prefix; idempotent, a few
seconds when done), so `pytest -m wine` works on a fresh machine without a separate step.
`windows_release` freezes real Windows builds with the Windows CPython under Wine — 1.0.0 twice
(from this tree and from a copy of it at another path, each in its own workpath: the bytes must
match, it is what update patches are made of) and 1.1.0 — publishes 1.0.0 to a TUF repository on
disk (throwaway keys; the root baked into the exes; 1.1.0 is published by the practice test while
the agent runs), signs the 1.0.0 exe, builds the MSI from the signed exe and signs the MSI with a
throwaway Authenticode certificate.
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

from installer.build_msi import build_msi
from updater.policy import WINDOWS
from updater.repo.repository import Repository

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "build" / "wine"))

import winehost as winehost  # noqa: E402 (re-exported for the tests)

TIMINGS: dict[str, float] = {}


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
    exe_1_1: Path  # not yet published
    exe_1_0_again: Path  # unsigned, the second build of 1.0.0 (another source path, workpath)
    exe_1_0_unsigned_sha256: str
    msi: Path  # signed, holds the signed exe_1_0
    cert: Path


def make_signing_cert(folder: Path) -> tuple[Path, Path]:
    """A throwaway self-signed code-signing certificate (never the release one)."""
    key, cert = folder / "sign.key", folder / "sign.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=R4 agent test signing", "-addext", "extendedKeyUsage=codeSigning",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=120,
    )
    return key, cert


def sign(path: Path, key: Path, cert: Path) -> Path:
    """Authenticode-sign in place. Tests run offline, so no timestamp unless R4AGENT_SIGN_TSA
    names a time-stamping server (osslsigncode -ts); releases are always timestamped."""
    signed = path.with_name(f"signed-{path.name}")
    timestamp = os.environ.get("R4AGENT_SIGN_TSA")
    subprocess.run(
        ["osslsigncode", "sign", "-certs", str(cert), "-key", str(key), "-h", "sha256",
         "-n", "R4 agent", *(["-ts", timestamp] if timestamp else []),
         "-in", str(path), "-out", str(signed)],
        check=True, capture_output=True, timeout=300,
    )
    signed.replace(path)
    return path


def verify(path: Path, cert: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["osslsigncode", "verify", "-CAfile", str(cert), "-in", str(path)],
        capture_output=True, text=True, timeout=300, check=False,
    )


@pytest.fixture(scope="session")
def windows_release(
    wine_tools: None, tmp_path_factory: pytest.TempPathFactory
) -> WindowsRelease:
    tmp = tmp_path_factory.mktemp("windows-release")
    Repository.create_keys(tmp / "keys")
    repository = Repository(tmp / "repo", tmp / "keys")
    repository.initialize()
    root = tmp / "root.json"
    root.write_bytes(repository.root_bytes())
    source_copy = copy_of_source_tree(tmp / "source-copy")
    builds = [("1.0.0", REPO, "bundle-1.0.0"), ("1.0.0", source_copy, "again-1.0.0"),
              ("1.1.0", REPO, "bundle-1.1.0")]
    exes = {}
    for version, source, out in builds:
        started = time.monotonic()
        exes[out] = winehost.freeze_windows(version, tmp / out, trusted_root=root, source=source)
        timed(f"freeze {version} under Wine ({out})", started)
    unsigned_sha256 = hashlib.sha256(exes["bundle-1.0.0"].read_bytes()).hexdigest()
    key, cert = make_signing_cert(tmp)
    sign(exes["bundle-1.0.0"], key, cert)  # the exe first: the MSI must carry the signed one
    started = time.monotonic()
    repository.add_bundle(exes["bundle-1.0.0"].parent, "1.0.0", platform=WINDOWS)
    timed("publish 1.0.0 to the TUF repository", started)
    msi = build_msi(exes["bundle-1.0.0"], "1.0.0", tmp / "r4agent.msi", winehost.message_dll())
    sign(msi, key, cert)
    return WindowsRelease(repository, exes["bundle-1.0.0"], exes["bundle-1.1.0"],
                          exes["again-1.0.0"], unsigned_sha256, msi, cert)


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
