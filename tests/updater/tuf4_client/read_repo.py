# mypy: ignore-errors
# (runs under tuf 4.0.0 and tufup 0.10.0 in a venv of their own: not the API installed here)
"""What an agent already installed (a tuf 4 build) does with a repository, as one JSON line.

    python read_repo.py METADATA_DIR METADATA_URL TARGETS_URL TARGETS_DIR

Refreshes with tuf 4.0.0's ngclient (the trust anchor is METADATA_DIR/root.json, as in those
builds), reads the trusted top-level targets as they did (delegations refused), downloads every
target through `get_targetinfo` (their catalog then reads only the plain `r4agent-X.Y.Z` names:
any other is another app's to them), applies every patch to the uncompressed tar of the archive
before it and checks the result against the size and sha256 signed in the patch's metadata
(what their client did), and makes each patch again with tufup's own `Patcher` to compare
with the published bytes. Exits 1 with the error on stderr if any of that fails.
"""

import gzip
import hashlib
import itertools
import json
import re
import sys
import tempfile
from pathlib import Path

import bsdiff4
from tuf.ngclient import Updater
from tufup.common import Patcher

NAME = re.compile(r"r4agent-(\d+)\.(\d+)\.(\d+)(\.tar\.gz|\.patch)")


def main(metadata_dir: str, metadata_url: str, targets_url: str, targets_dir: str) -> dict:
    Path(targets_dir).mkdir(parents=True, exist_ok=True)
    updater = Updater(metadata_dir, metadata_url, targets_dir, targets_url)
    updater.refresh()
    trusted = updater._trusted_set
    targets = trusted.targets
    if targets.delegations is not None:
        raise SystemExit("targets metadata delegates; this client refuses delegations")
    files = {}
    for name in sorted(targets.targets):
        info = updater.get_targetinfo(name)
        path = updater.find_cached_target(info) or updater.download_target(info)
        files[name] = Path(path).read_bytes()
    # their catalog reads `r4agent-X.Y.Z` names only: any other app's name is not theirs
    ours = [NAME.fullmatch(n) for n in files]
    versions = sorted({tuple(map(int, m.groups()[:3])) for m in ours if m})
    patched, tufup_patches = {}, {}
    for previous, version in itertools.pairwise(versions):
        text = ".".join(map(str, version))
        patch = f"r4agent-{text}.patch"
        if patch not in files:
            continue
        old_archive = f"r4agent-{'.'.join(map(str, previous))}.tar.gz"
        custom = targets.targets[patch].unrecognized_fields["custom"]["tufup"]
        tar = bsdiff4.patch(gzip.decompress(files[old_archive]), files[patch])
        patched[text] = (len(tar) == custom["tar_size"]
                         and hashlib.sha256(tar).hexdigest() == custom["tar_hash"])
        with tempfile.TemporaryDirectory() as scratch:
            made = Path(scratch) / patch
            result = Patcher.diff_and_hash(
                src_path=Path(targets_dir) / old_archive,
                dst_path=Path(targets_dir) / f"r4agent-{text}.tar.gz", patch_path=made)
            tufup_patches[patch] = {"sha256": hashlib.sha256(made.read_bytes()).hexdigest(),
                                    "custom": result}
    return {
        "root_version": trusted.root.version,
        "targets_version": targets.version,
        "targets": {n: {"sha256": hashlib.sha256(d).hexdigest(),
                        "custom": targets.targets[n].unrecognized_fields.get("custom")}
                    for n, d in files.items()},
        "patched": patched,
        "tufup_patches": tufup_patches,
    }


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:5])))
