"""`r4agent self-test`: can this build update itself? Prints `r4agent X.Y.Z` and exits 0 if so.

The staging smoke test (`updater.staging.smoke_test`) runs it on every staged exe before the
switch. Printing the version alone is not enough: a build that cannot update (bz2 or bsdiff4 cut
from the freeze, cf. commit 0925bd1; ngclient or the trusted root missing) would start, confirm
itself and then never be able to leave that version again. So, in a second or so and without any
network or writes outside a temporary folder, this exercises the update path itself:

- imports it: ngclient, the deadline fetcher (requests/urllib3 `read1`), bsdiff4 + bz2, gzip/tar;
- parses the trusted root baked into the exe and verifies its own signatures (the same
  securesystemslib verification ngclient uses; a release build always has a root baked in), and
  checks that the same signatures do NOT verify a changed copy: a build whose ed25519 verifier
  is missing or broken (the exe carries no `cryptography`: securesystemslib's pure-Python
  fallback does it) must not pass as one that can update;
- round-trips a tiny bsdiff patch;
- packs a tiny tar.gz, decompresses it with the TUF client's capped reader and extracts it with the
  staging code into a temporary folder.

Exit 1 with `self-test failed: <what>` on stderr otherwise.
"""

from __future__ import annotations

import argparse
import gzip
import io
import sys
import tarfile
import tempfile
from pathlib import Path


class SelfTestError(Exception):
    pass


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    return None


def command(args: argparse.Namespace) -> int:
    from agent._version import __version__

    try:
        run_self_test()
    except SelfTestError as e:
        print(f"self-test failed: {e}", file=sys.stderr)
        return 1
    print(f"r4agent {__version__}")
    return 0


def run_self_test(root: bytes | None = None) -> None:
    """Raise SelfTestError naming the first part of the update path that does not work.
    `root`: the trusted root to check (default: the one baked into this exe)."""
    try:
        _check(root)
    except SelfTestError:
        raise
    except Exception as e:  # anything else is a broken update path too: say which
        raise SelfTestError(f"{type(e).__name__}: {e}") from e


def _check(root: bytes | None) -> None:
    try:
        import bz2  # noqa: F401 - bsdiff4's patches need it

        import bsdiff4
        import urllib3.response
        from tuf.api.exceptions import UnsignedMetadataError
        from tuf.api.metadata import Metadata
        from tuf.ngclient.updater import Updater  # noqa: F401

        from updater.staging import extract_tar
        from updater.tuf_client import DeadlineFetcher, Limits, TufClient, bundled_root
    except ImportError as e:
        raise SelfTestError(f"update path not importable: {e}") from e
    if not hasattr(urllib3.response.HTTPResponse, "read1"):
        raise SelfTestError("urllib3 without HTTPResponse.read1 (the deadline fetcher needs it)")
    DeadlineFetcher(Limits())

    root = bundled_root() if root is None else root
    if root is None:
        raise SelfTestError("no trusted root baked into this exe")
    md = Metadata.from_bytes(root)
    if md.signed.type != "root":
        raise SelfTestError("the baked-in trusted root is not root metadata")
    # the threshold of its own keys, as ngclient checks a root
    md.signed.verify_delegate("root", md.signed_bytes, md.signatures)
    changed = md.signed_bytes.replace(b'"_type":"root"', b'"_type":"rooT"', 1)
    if changed == md.signed_bytes:
        raise SelfTestError("the baked-in trusted root is not in canonical form")
    try:
        md.signed.verify_delegate("root", changed, md.signatures)
    except UnsignedMetadataError:
        pass
    else:
        raise SelfTestError("ed25519 verification accepted a changed root")

    old = b"r4agent self-test base " * 64
    new = old.replace(b"base", b"next", 3)
    if bsdiff4.patch(old, bsdiff4.diff(old, new)) != new:
        raise SelfTestError("bsdiff4 round trip gave other bytes")

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("r4agent")
        info.size, info.mode = len(new), 0o755
        tar.addfile(info, io.BytesIO(new))
    client = TufClient(Path("unused"), Path("unused"), "http://unused/", "http://unused/")
    tar_bytes = client.tar_from_archive(gzip.compress(raw.getvalue(), mtime=0))
    with tempfile.TemporaryDirectory(prefix="r4agent-self-test-") as scratch:
        dest = Path(scratch) / "staged"
        dest.mkdir(mode=0o700)
        extract_tar(tar_bytes, dest)
        if (dest / "r4agent").read_bytes() != new:
            raise SelfTestError("extracted file differs from what was packed")
