"""tuf-conformance client-under-test CLI (theupdateframework/tuf-conformance, CLIENT-CLI.md),
wrapping the SAME verification path the agent uses (`updater.tuf_client.TufClient`: same
ngclient configuration, size caps, download deadlines and trust anchor).

    python -m updater.conformance_cli --metadata-dir D init TRUSTED_ROOT
    python -m updater.conformance_cli --metadata-dir D --metadata-url U refresh
    python -m updater.conformance_cli --metadata-dir D --metadata-url U --target-name T \\
        [--target-name T2 ...] --target-base-url B --target-dir X download

`--target-name` may be repeated: the targets are downloaded in argument order by one client,
stopping at the first that fails. Exit 0 on success, 1 on any failure. Results:
docs/security-tuf.md.
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
    parser.add_argument("--target-name", action="append", default=[],
                        help="a target path; repeat for several, downloaded in order")
    parser.add_argument("--target-base-url")
    parser.add_argument("--target-dir", type=Path)
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
    if args.command == "download" and (
        not args.target_name or not args.target_base_url or args.target_dir is None
    ):
        print("download needs --target-name, --target-base-url, --target-dir", file=sys.stderr)
        return 1
    target_dir = args.target_dir or args.metadata_dir / "targets"
    client = TufClient(args.metadata_dir, target_dir, args.metadata_url,
                       args.target_base_url or args.metadata_url, app="")
    try:
        client.refresh()
        if args.command == "download":
            for name in args.target_name:
                client.fetch_target(name)
    except UpdateError as e:
        print(f"{args.command} failed: {e}", file=sys.stderr)
        return 1
    return 0


def main() -> None:
    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
