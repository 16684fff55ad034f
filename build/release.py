"""The one release command for engineers and CI: freeze, archive, sign, publish — and the
repository chores (revoke, raise the floor, re-sign the timestamp, rotate a key).

    python build/release.py [--repo DIR] [--keys DIR] COMMAND [--publish DEST] [--dry-run]

    init [--create-keys]              new repository (root 2-of-3, targets, snapshot, timestamp)
    release --version X.Y.Z           freeze (build/freeze.py, trusted root baked in), archive as
            [--bundle DIR]            a tufup bundle, add with signed policy, sign
            [--floor X.Y.Z] [--channel NAME] [--revoked]
    revoke X.Y.Z                      mark a version revoked (agents refuse to install it)
    raise-floor X.Y.Z                 no agent installs anything below this any more
    resign-timestamp [--days N]       the daily job (timestamp expires after 1 day)
    rotate-key OLD NEW                replace key file OLD by a new key NEW in root (and re-sign)
    publish                           only publish (needs --publish)

`--publish DEST` (a folder or s3://bucket/prefix) uploads what changed, target files first and
timestamp.json last. `--dry-run` does the work on a scratch copy and only prints what would change.
Keys come from `--keys` or $R4AGENT_RELEASE_KEYS and are never committed; the repository folder
from `--repo` or $R4AGENT_RELEASE_REPO (default .work/tuf-repo). Exit 0 = done, 1 = refused/failed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from updater.repo.publish import Change, FolderDestination, destination_for, publish  # noqa: E402
from updater.repo.repository import ReleasePolicy, RepoError, Repository  # noqa: E402

DEFAULT_REPO = REPO_ROOT / ".work" / "tuf-repo"


def freeze_bundle(version: str, trusted_root: Path, out_dir: Path, epoch: str) -> Path:
    """Run build/freeze.py reproducibly; return the folder holding only the exe (the bundle)."""
    bundle = out_dir / "bundle"
    if bundle.exists():
        shutil.rmtree(bundle)
    bundle.mkdir(parents=True)
    env = dict(os.environ, SOURCE_DATE_EPOCH=epoch, PYTHONHASHSEED="0")
    subprocess.run(
        [sys.executable, str(REPO_ROOT / "build" / "freeze.py"), "--version", version,
         "--out", str(bundle), "--trusted-root", str(trusted_root)],
        check=True, env=env, cwd=REPO_ROOT, timeout=3600,
    )
    return bundle


def source_date_epoch() -> str:
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value and value.isdigit():
        return value
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "log", "-1", "--format=%ct"],
                             capture_output=True, text=True, check=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return "315532800"
    return out.strip() if out.strip().isdigit() else "315532800"


def _parser() -> argparse.ArgumentParser:
    # --publish/--dry-run are accepted before or after the command
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--publish", metavar="DEST", dest="late_publish",
                        help="folder or s3://bucket/prefix")
    common.add_argument("--dry-run", action="store_true", dest="late_dry_run",
                        help="show what would change only")
    parser = argparse.ArgumentParser(prog="release.py", description=__doc__.splitlines()[0])
    parser.add_argument("--publish", metavar="DEST", help="folder or s3://bucket/prefix")
    parser.add_argument("--dry-run", action="store_true", help="show what would change only")
    parser.add_argument("--repo", type=Path,
                        default=Path(os.environ.get("R4AGENT_RELEASE_REPO", DEFAULT_REPO)))
    parser.add_argument("--keys", type=Path, default=os.environ.get("R4AGENT_RELEASE_KEYS"))
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, parents=[common])

    init = add("init", "create a new repository")
    init.add_argument("--create-keys", action="store_true", help="generate missing key pairs")
    rel = add("release", "freeze (or take --bundle), add, sign")
    rel.add_argument("--version", required=True)
    rel.add_argument("--bundle", type=Path, help="an already built bundle folder (skip freeze)")
    rel.add_argument("--floor")
    rel.add_argument("--channel", default="stable")
    rel.add_argument("--revoked", action="store_true")
    add("revoke", "revoke a version").add_argument("version")
    add("raise-floor", "raise the minimum version").add_argument("version")
    add("resign-timestamp", "re-sign the timestamp (daily)").add_argument("--days", type=float)
    rot = add("rotate-key", "replace a key in root")
    rot.add_argument("old")
    rot.add_argument("new")
    add("publish", "publish the repository (with --publish)")
    return parser


def _apply(args: argparse.Namespace, repo: Repository) -> str:
    if args.command == "init":
        if args.create_keys:
            Repository.create_keys(repo.keys_dir)
        repo.initialize()
        return f"initialised {repo.repo_dir}"
    if args.command == "release":
        policy = ReleasePolicy(revoked=args.revoked, floor=args.floor, channel=args.channel)
        epoch = source_date_epoch()
        bundle = args.bundle
        if bundle is None:
            out = REPO_ROOT / ".cache" / "release" / args.version
            bundle = freeze_bundle(args.version, repo.metadata_dir / "root.json", out, epoch)
        added = repo.add_bundle(bundle, args.version, policy, mtime=int(epoch))
        return "added " + ", ".join(added)
    if args.command == "revoke":
        repo.revoke(args.version)
        return f"revoked {args.version}"
    if args.command == "raise-floor":
        repo.raise_floor(args.version)
        return f"floor raised to {args.version}"
    if args.command == "resign-timestamp":
        return f"timestamp version {repo.resign_timestamp(args.days)}"
    if args.command == "rotate-key":
        repo.rotate_key(args.old, args.new)
        return f"rotated {args.old} -> {args.new}"
    return "nothing to change"


def _show(changes: list[Change], where: str, dry_run: bool) -> None:
    verb = "would publish" if dry_run else "published"
    if not changes:
        print(f"{where}: up to date")
    for change in changes:
        print(f"{verb} {change.key} ({change.reason}) -> {where}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.publish = args.late_publish or args.publish
    args.dry_run = args.late_dry_run or args.dry_run
    if args.command != "publish" and args.keys is None:
        print("release.py: give --keys DIR or set R4AGENT_RELEASE_KEYS", file=sys.stderr)
        return 1
    keys = Path(args.keys) if args.keys else Path(tempfile.gettempdir()) / "no-keys"
    scratch = None
    try:
        repo_dir = args.repo
        if args.dry_run and args.command != "publish":
            scratch = Path(tempfile.mkdtemp(prefix="release-dry-run-"))
            if args.repo.exists():
                shutil.copytree(args.repo, scratch / "repo")
            repo_dir = scratch / "repo"
        repo = Repository(repo_dir, keys)
        print(_apply(args, repo) + (" (dry run, nothing written)" if scratch else ""))
        if args.publish:
            _show(publish(repo_dir, destination_for(args.publish), dry_run=args.dry_run),
                  args.publish, args.dry_run)
        elif scratch is not None:
            _show(publish(repo_dir, FolderDestination(args.repo), dry_run=True),
                  str(args.repo), True)
    except (RepoError, ValueError, FileNotFoundError) as e:
        print(f"release.py: {e}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as e:
        print(f"release.py: freeze failed (exit {e.returncode})", file=sys.stderr)
        return 1
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
