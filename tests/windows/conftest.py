"""Fixtures for the Windows artefacts under Wine (marker `wine`).

`wine_tools` runs .ci/wine-setup.sh (apt packages + the cached build prefix; idempotent, a few
seconds when done), so `pytest -m wine` works on a fresh machine without a separate step.
`windows_release` freezes two real Windows builds (1.0.0, 1.1.0) with the Windows CPython under
Wine, publishes both to a TUF repository on disk (throwaway keys; the root baked into the exes),
signs the 1.0.0 exe and its MSI with a throwaway Authenticode certificate and verifies both.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from installer.build_msi import build_msi
from updater.repo.repository import Repository

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "build" / "wine"))

import winehost  # noqa: E402

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
    exe_1_1: Path
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
    signed = path.with_name(f"signed-{path.name}")
    subprocess.run(
        ["osslsigncode", "sign", "-certs", str(cert), "-key", str(key), "-h", "sha256",
         "-n", "R4 agent", "-in", str(path), "-out", str(signed)],
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
    exes = {}
    for version in ("1.0.0", "1.1.0"):
        started = time.monotonic()
        exes[version] = winehost.freeze_windows(version, tmp / f"bundle-{version}",
                                                trusted_root=root)
        timed(f"freeze {version} under Wine", started)
    key, cert = make_signing_cert(tmp)
    sign(exes["1.0.0"], key, cert)
    started = time.monotonic()
    for version in ("1.0.0", "1.1.0"):
        repository.add_bundle(exes[version].parent, version)
    timed("publish 1.0.0 + 1.1.0 to the TUF repository", started)
    msi = sign(build_msi(exes["1.0.0"], "1.0.0", tmp / "r4agent.msi"), key, cert)
    return WindowsRelease(repository, exes["1.0.0"], exes["1.1.0"], msi, cert)


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
