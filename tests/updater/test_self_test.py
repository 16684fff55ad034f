"""`r4agent self-test`: the staged build's own update path (ngclient, bsdiff4 + bz2, gzip/tar,
the baked-in trusted root) must work before the switch, or the new version could confirm itself
and never update again."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.updater.support import RepoSim
from updater.self_test import SelfTestError, run_self_test

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_self_test_passes_with_a_genuine_trusted_root(sim: RepoSim) -> None:
    run_self_test(sim.repo.root_bytes())


def test_self_test_fails_on_a_trusted_root_whose_signatures_do_not_verify(sim: RepoSim) -> None:
    root = json.loads(sim.repo.root_bytes())
    root["signed"]["expires"] = "2099-01-01T00:00:00Z"  # signatures no longer match
    with pytest.raises(SelfTestError, match="UnsignedMetadataError"):
        run_self_test(json.dumps(root).encode())


def test_ed25519_verifies_in_pure_python_without_cryptography_as_in_the_exe(
    sim: RepoSim, tmp_path: Path
) -> None:
    # the exe carries no pyca/cryptography: securesystemslib's vendored ed25519 must verify the
    # root (and refuse a changed one: self-test checks both) in a process that cannot import it
    root = tmp_path / "root.json"
    root.write_bytes(sim.repo.root_bytes())
    script = (
        "import sys; sys.modules['cryptography'] = None\n"
        "from securesystemslib.signer._key import CRYPTO_IMPORT_ERROR\n"
        "assert CRYPTO_IMPORT_ERROR, 'cryptography was imported'\n"
        "from pathlib import Path\n"
        "from updater.self_test import run_self_test\n"
        f"run_self_test(Path({str(root)!r}).read_bytes())\n"
        "print('verified')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120)
    assert (done.returncode, done.stdout.strip()) == (0, "verified"), done.stderr


def test_self_test_fails_on_metadata_that_is_not_a_root(sim: RepoSim) -> None:
    with pytest.raises(SelfTestError):
        run_self_test((sim.repo_dir / "metadata" / "targets.json").read_bytes())


def test_a_build_without_a_baked_in_root_fails_its_self_test() -> None:
    done = subprocess.run([sys.executable, "-m", "agent", "self-test"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "self-test failed: no trusted root baked into this exe" in done.stderr
    assert done.stdout == ""
