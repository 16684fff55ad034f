"""tuf-conformance client-under-test CLI (theupdateframework/tuf-conformance, CLIENT-CLI.md),
wrapping the SAME verification path the agent uses (`updater.tuf_client.TufClient`: same
ngclient configuration, size caps, timeouts and the refusal of delegations).

    python -m updater.conformance_cli --metadata-dir D init TRUSTED_ROOT
    python -m updater.conformance_cli --metadata-dir D --metadata-url U refresh
    python -m updater.conformance_cli --metadata-dir D --metadata-url U --target-name T \\
        --target-base-url B --target-dir X download

Exit 0 on success, 1 on any failure. Known, deliberate difference: repositories that delegate
are refused (docs/security-tuf.md), so the suite's delegation tests are expected to fail.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from updater.errors import UpdateError
from updater.tuf_client import TufClient


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="conformance_cli", description=__doc__.splitlines()[0])
    parser.add_argument("--metadata-dir", required=True, type=Path)
    parser.add_argument("--metadata-url")
    parser.add_argument("--target-name")
    parser.add_argument("--target-base-url")
    parser.add_argument("--target-dir", type=Path)
    parser.add_argument("--days-in-future", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("command", choices=["init", "refresh", "download"])
    parser.add_argument("trusted_root", nargs="?", type=Path)
    return parser


def run(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    if args.command == "init":
        if args.trusted_root is None:
            print("init needs TRUSTED_ROOT", file=sys.stderr)
            return 1
        args.metadata_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args.trusted_root, args.metadata_dir / "root.json")
        return 0
    if not args.metadata_url:
        print("--metadata-url is required", file=sys.stderr)
        return 1
    target_dir = args.target_dir or args.metadata_dir / "targets"
    client = TufClient(args.metadata_dir, target_dir, args.metadata_url,
                       args.target_base_url or args.metadata_url, app="")
    try:
        client.refresh()
        if args.command == "download":
            if not args.target_name or not args.target_base_url or args.target_dir is None:
                print("download needs --target-name, --target-base-url, --target-dir",
                      file=sys.stderr)
                return 1
            client.fetch_target(args.target_name)
    except UpdateError as e:
        print(f"{args.command} failed: {e}", file=sys.stderr)
        return 1
    return 0


def main() -> None:
    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
