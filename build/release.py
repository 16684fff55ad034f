"""The one release command for engineers and CI: check, sign, publish a build — and the
repository chores (revoke, raise the floor, the daily re-signing, rotate a key, check expiries).

    python build/release.py [GLOBAL OPTIONS] COMMAND [OPTIONS]   (global options also after it)

    init [--create-keys]              new repository (root 2-of-3, targets, snapshot, timestamp);
                                      new keys: offline ones encrypted into --offline-keys,
                                      online ones into --online-keys
    release windows --version X.Y.Z   freeze under Wine (natively on Windows, or --exe), sign the
                                      exe, check it, build and sign the MSI, add and sign
    release --version X.Y.Z           freeze here (this machine's platform) or take --bundle,
    add --version X.Y.Z --bundle DIR  check the bundle, add it with signed policy + patch, sign
            [--platform P] [--unsigned-test-build] [--floor X.Y.Z] [--channel NAME] [--revoked]
    revoke X.Y.Z                      mark a version revoked (agents refuse it)
    raise-floor X.Y.Z                 no agent installs anything below this any more
    resign-online [--days N]          the daily job, online keys only: a new timestamp (2 days),
                                      and a new snapshot when it has < 3 of its 7 days left
                                      (`resign-timestamp` is the same command, its old name)
    resign-targets                    re-sign targets with a fresh 90 days (offline targets key)
    resign-root                       a new root version, same keys, fresh 365 days
    expiries [--within DAYS]          read only: each role's expiry; exit 1 if one is close
    status [--against DEST]           read only: each platform's releases (revoked, floor,
                                      channel), expiries, what DEST lacks (alias `list`)
    rotate-key OLD NEW                replace key file OLD by a new key NEW in root; re-signs only
                                      the roles OLD served and what points at them (refused
                                      before writing anything if a needed key is missing)
    publish                           only publish (needs --publish)

Keys: --offline-keys / --online-keys / --keys (or $R4AGENT_RELEASE_OFFLINE_KEYS,
$R4AGENT_RELEASE_ONLINE_KEYS, $R4AGENT_RELEASE_KEYS); the offline keys' passphrase from
$R4AGENT_RELEASE_PASSPHRASE_FILE, $R4AGENT_RELEASE_PASSPHRASE or a prompt, never argv. The
repository: --repo or $R4AGENT_RELEASE_REPO (default .work/tuf-repo). `--publish DEST` (a
folder or s3://bucket/prefix) uploads what changed: target files first, then targets, snapshot
and timestamp metadata, the root versions last; without it a change says "not published".
`--dry-run` works on scratch copies and writes nothing else. Procedures: docs/release-runbook.md.
Exit 0 = done, 1 = refused/failed (for `expiries`: a role expires within the warning window).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from updater.policy import APP_NAME, PLATFORMS, WINDOWS, host_platform, target_apps  # noqa: E402
from updater.repo import authenticode  # noqa: E402
from updater.repo.authenticode import SigningIdentity  # noqa: E402
from updater.repo.bundle_check import check_bundle  # noqa: E402
from updater.repo.passphrase import passphrase_from  # noqa: E402
from updater.repo.publish import (  # noqa: E402
    Change,
    FolderDestination,
    destination_for,
    plan,
    publish,
)
from updater.repo.repository import ReleasePolicy, RepoError, Repository  # noqa: E402
from updater.repo.windows_release import WindowsBuild, release_windows  # noqa: E402
from updater.tuf_client import trusted_catalog  # noqa: E402

DEFAULT_REPO = REPO_ROOT / ".work" / "tuf-repo"


def freeze_bundle(
    version: str, trusted_root: Path, out_dir: Path, epoch: str, python: Path | None = None
) -> Path:
    """Run build/freeze.py reproducibly (`python`: the build interpreter, default a clean venv
    freeze.py makes); return the folder holding only the exe (the bundle)."""
    bundle = out_dir / "bundle"
    if bundle.exists():
        shutil.rmtree(bundle)
    bundle.mkdir(parents=True)
    env = dict(os.environ, SOURCE_DATE_EPOCH=epoch, PYTHONHASHSEED="0")
    subprocess.run(
        [sys.executable, str(REPO_ROOT / "build" / "freeze.py"), "--version", version,
         "--out", str(bundle), "--trusted-root", str(trusted_root),
         *(["--python", str(python)] if python else [])],
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


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    pass


def _global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """The options every command takes, before or after its name. On the subcommands they
    default to SUPPRESS, so one given before the command is not reset by the subcommand."""

    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument("--repo", type=Path, metavar="DIR",
                        default=default(Path(os.environ.get("R4AGENT_RELEASE_REPO",
                                                            DEFAULT_REPO))),
                        help="the local repository folder (default $R4AGENT_RELEASE_REPO, "
                             "else .work/tuf-repo)")
    parser.add_argument("--offline-keys", type=Path, metavar="DIR",
                        default=default(os.environ.get("R4AGENT_RELEASE_OFFLINE_KEYS")),
                        help="the offline key files: root1-3 and targets, encrypted (default "
                             "$R4AGENT_RELEASE_OFFLINE_KEYS); passphrase from "
                             "$R4AGENT_RELEASE_PASSPHRASE_FILE, $R4AGENT_RELEASE_PASSPHRASE or "
                             "a prompt")
    parser.add_argument("--online-keys", type=Path, metavar="DIR",
                        default=default(os.environ.get("R4AGENT_RELEASE_ONLINE_KEYS")),
                        help="the online key files: snapshot and timestamp (default "
                             "$R4AGENT_RELEASE_ONLINE_KEYS)")
    parser.add_argument("--keys", type=Path, metavar="DIR",
                        default=default(os.environ.get("R4AGENT_RELEASE_KEYS")),
                        help="one more folder of key files, any roles (default "
                             "$R4AGENT_RELEASE_KEYS; key sets made before the split)")
    parser.add_argument("--publish", metavar="DEST", default=default(None),
                        help="after the change, upload what changed to a folder or "
                             "s3://bucket/prefix (boto3 credentials from the environment)")
    parser.add_argument("--dry-run", action="store_true", default=default(False),
                        help="work on scratch copies, print what would change, write nothing")


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, suppress=True)
    parser = argparse.ArgumentParser(prog="release.py", formatter_class=_HelpFormatter,
                                     description=__doc__.split("\n\n")[0].replace("\n", " "),
                                     epilog=__doc__.split("\n\n", 1)[1])
    _global_options(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help: str, aliases: tuple[str, ...] = ()) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, parents=[common],
                              aliases=list(aliases))

    init = add("init", "create a new repository")
    init.add_argument("--create-keys", action="store_true",
                      help="generate the missing key pairs: offline ones encrypted into "
                           "--offline-keys, online ones into --online-keys")

    def release_options(cmd: argparse.ArgumentParser, *, bundle_required: bool) -> None:
        cmd.add_argument("--version", required=True, help="the release's X.Y.Z")
        cmd.add_argument("--bundle", type=Path, required=bundle_required, metavar="DIR",
                         help="an already built bundle folder holding only the exe"
                              + ("" if bundle_required else " (default: freeze one here)"))
        cmd.add_argument("--platform", choices=PLATFORMS, default=None,
                         help="the platform the bundle must be for (default: win-amd64 with "
                              "--bundle; this machine's when freezing here)")
        cmd.add_argument("--unsigned-test-build", action="store_true",
                         help="accept a Windows exe without an Authenticode signature (test "
                              "repositories only)")
        cmd.add_argument("--ca-file", type=Path, metavar="PEM",
                         default=os.environ.get("R4AGENT_SIGNING_CA_FILE"),
                         help="CA certificates the exe's signature must chain to (default "
                              "$R4AGENT_SIGNING_CA_FILE, else the system's)")
        cmd.add_argument("--floor", metavar="X.Y.Z",
                         help="also raise the minimum version agents may run to X.Y.Z")
        cmd.add_argument("--channel", default="stable", help="signed channel name (stable)")
        cmd.add_argument("--revoked", action="store_true",
                         help="list it already revoked (agents refuse it)")

    rel = add("release", "check the bundle (or freeze one), add it, sign; `release windows`: "
              "the whole Windows release")
    release_options(rel, bundle_required=False)
    rel.add_argument("what", nargs="?", choices=["windows"],
                     help="windows: freeze under Wine (natively on Windows), sign the exe, "
                          "check it, build and sign the MSI, then add and sign the target")
    win = rel.add_argument_group("release windows")
    win.add_argument("--exe", type=Path, metavar="EXE",
                     help="an already frozen, unsigned r4agent.exe: skip the freeze")
    win.add_argument("--build-python", type=Path, metavar="PY",
                     help="on Windows: the interpreter that runs PyInstaller (default: the "
                          "clean venv build/freeze.py makes)")
    win.add_argument("--message-dll", type=Path, metavar="PYD",
                     help="pywin32's servicemanager.pyd of the Python the exe was frozen with "
                          "(default: the Wine build Python's)")
    win.add_argument("--sign-cert", type=Path, metavar="PEM",
                     help="code-signing certificate (default $R4AGENT_SIGN_CERT); its key's "
                          "passphrase from $R4AGENT_SIGN_PASSPHRASE_FILE or "
                          "$R4AGENT_SIGN_PASSPHRASE, never argv")
    win.add_argument("--sign-key", type=Path, metavar="PEM",
                     help="its private key (default $R4AGENT_SIGN_KEY)")
    win.add_argument("--sign-pkcs12", type=Path, metavar="PFX",
                     help="certificate and key in one PKCS#12 file instead (default "
                          "$R4AGENT_SIGN_PKCS12)")
    win.add_argument("--out", type=Path, metavar="DIR",
                     help="where the signed exe and MSI go (default .cache/release/X.Y.Z)")
    release_options(add("add", "check an already built bundle, add it, sign"),
                    bundle_required=True)
    add("revoke", "revoke a version").add_argument("version", help="X.Y.Z to revoke")
    add("raise-floor", "raise the minimum version").add_argument(
        "version", help="X.Y.Z: no agent installs anything below it any more")
    online = add("resign-online", "daily: new timestamp, and snapshot when close to expiry",
                 aliases=("resign-timestamp",))
    online.add_argument("--days", type=float, help="timestamp lifetime (default 2 days)")
    add("resign-targets", "re-sign targets with a fresh expiry (offline key)")
    add("resign-root", "a new root version, same keys, fresh 365 days (2 of the 3 offline "
        "root keys; also frees agents whose root expired)")
    exp = add("expiries", "show each role's expiry; exit 1 if one expires soon (read only)")
    exp.add_argument("--within", type=float, metavar="DAYS",
                     help="warn window for every role (default per role: root 60, targets 21, "
                          "snapshot 2, timestamp 1 day)")
    rot = add("rotate-key", "replace a key in root")
    rot.add_argument("old", help="name of the key file to retire (e.g. root1, timestamp)")
    rot.add_argument("new", help="name of the key file that replaces it (made if absent)")
    add("publish", "publish the repository (with --publish)")
    status = add("status", "read only: each platform's versions (revoked, floor, channel), "
                 "expiries, and what the published copy lacks", aliases=("list",))
    status.add_argument("--against", metavar="DEST",
                        default=os.environ.get("R4AGENT_RELEASE_PUBLISHED"),
                        help="the published copy to compare with: folder or s3://bucket/prefix "
                             "(default $R4AGENT_RELEASE_PUBLISHED; nothing is uploaded)")
    return parser


def _release(args: argparse.Namespace, repo: Repository, scratch: Path | None) -> str:
    """Check the bundle (freezing one first without --bundle), then add and sign it."""
    policy = ReleasePolicy(revoked=args.revoked, floor=args.floor, channel=args.channel)
    epoch = source_date_epoch()
    _require_repository(repo)
    if getattr(args, "what", None) == "windows":
        return _release_windows(args, repo, scratch, policy, int(epoch))
    bundle = args.bundle
    if bundle is None and scratch is not None:
        platform = args.platform or host_platform()
        bundle = placeholder_bundle(scratch, platform)
        added = repo.add_bundle(bundle, args.version, policy, platform=platform,
                                mtime=int(epoch))
        return "added " + ", ".join(added) + " (placeholder bundle: sizes not real)"
    if bundle is None:
        here = host_platform()
        if args.platform not in (None, here):
            raise RepoError(f"freezing here makes a {here} build, not {args.platform}: a "
                            f"Windows release is `release windows --version {args.version}` "
                            "(it freezes under Wine), or give --bundle")
        out = REPO_ROOT / ".cache" / "release" / args.version
        bundle = freeze_bundle(args.version, repo.metadata_dir / "root.json", out, epoch)
        expected = here
    else:
        expected = args.platform or WINDOWS
    checked = check_bundle(bundle, args.version, platform=expected,
                           unsigned_test_build=args.unsigned_test_build, ca_file=args.ca_file)
    added = repo.add_bundle(bundle, args.version, policy, platform=checked.platform,
                            mtime=int(epoch))
    note = "" if checked.platform == WINDOWS else " (a Linux build: Windows agents never see it)"
    if checked.platform == WINDOWS and not checked.signed:
        note = " (UNSIGNED test build)"
    return "added " + ", ".join(added) + note


def _release_windows(
    args: argparse.Namespace,
    repo: Repository,
    scratch: Path | None,
    policy: ReleasePolicy,
    epoch: int,
) -> str:
    if args.bundle is not None or args.platform not in (None, WINDOWS):
        raise RepoError("release windows makes its own bundle: drop --bundle/--platform")
    identity = SigningIdentity.from_environment(os.environ, args.sign_cert, args.sign_key,
                                                args.sign_pkcs12)
    freezing = ("take " + str(args.exe) if args.exe else
                "freeze natively" if sys.platform == "win32" else "freeze under Wine")
    if scratch is not None:
        bundle = placeholder_bundle(scratch, WINDOWS)
        added = repo.add_bundle(bundle, args.version, policy, platform=WINDOWS, mtime=epoch)
        return (f"would {freezing}, sign the exe with {identity.describe()}, check it, build "
                f"and sign the MSI; added " + ", ".join(added) + " (placeholder bundle)")
    wine = None if args.exe or sys.platform == "win32" else _winehost()

    def freeze(version: str, out: Path, trusted_root: Path) -> Path:
        if args.exe is not None:
            return Path(args.exe)
        if wine is not None:
            try:
                return Path(wine.freeze_windows(version, out, trusted_root=trusted_root))
            except wine.WineError as e:
                raise RepoError(f"the freeze under Wine failed: {e}") from e
        return freeze_bundle(version, trusted_root, out, str(epoch),
                             args.build_python) / "r4agent.exe"

    def message_dll() -> Path:
        if args.message_dll is not None:
            return Path(args.message_dll)
        if wine is None:
            raise RepoError("give --message-dll (pywin32's servicemanager.pyd of the Python "
                            "the exe was frozen with)")
        return Path(wine.message_dll())

    from installer.build_msi import build_msi

    build = WindowsBuild(
        freeze=freeze, message_dll=message_dll, build_msi=build_msi,
        sign=lambda path: authenticode.sign(path, identity),
        verify=lambda path: authenticode.verify(path, args.ca_file),
    )
    out = args.out or REPO_ROOT / ".cache" / "release" / args.version
    done = release_windows(repo, args.version, build, Path(out), policy=policy,
                           ca_file=args.ca_file, mtime=epoch)
    return (f"signed exe {done.exe}\nsigned MSI {done.msi}\nadded " + ", ".join(done.added))


def _winehost() -> Any:
    """build/wine/winehost.py (not a package): the Wine build prefix and its freeze."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "winehost", REPO_ROOT / "build" / "wine" / "winehost.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _create_keys(args: argparse.Namespace, repo: Repository) -> str:
    offline, online = args.offline_keys, args.online_keys
    if offline is None or online is None:
        raise RepoError("init --create-keys writes two folders: --offline-keys DIR (root1-3 "
                        "and targets, encrypted; they go on offline media) and --online-keys "
                        "DIR (snapshot and timestamp; they go in the CI secret store)")
    if (repo.metadata_dir / "root.json").exists():
        raise RepoError(f"{repo.metadata_dir} already holds a repository")
    secret = passphrase_from(os.environ, new=True)
    needs_offline = any(not (offline / n).exists() for n in ("root1", "root2", "root3",
                                                              "targets"))
    Repository.create_split_keys(offline, online, secret() if needs_offline else "-")
    return (f"offline keys (root1-3, targets; encrypted): {offline} -> keep on offline media, "
            f"never on a CI machine\n"
            f"online keys (snapshot, timestamp): {online} -> the CI secret store, for the "
            f"daily resign-online job\n")


def _require_repository(repo: Repository) -> None:
    if not (repo.metadata_dir / "root.json").is_file():
        raise RepoError(f"no repository in {repo.repo_dir}: run `release.py init` first (or "
                        "give --repo)")


def placeholder_bundle(scratch: Path, platform: str) -> Path:
    """What a dry run adds instead of a real build: freezing would write build caches."""
    bundle = scratch / "placeholder-bundle"
    bundle.mkdir()
    name = "r4agent.exe" if platform == WINDOWS else "r4agent"
    (bundle / name).write_bytes(b"dry-run placeholder, never published\n")
    return bundle


def _apply(args: argparse.Namespace, repo: Repository, scratch: Path | None) -> str:
    if args.command == "init":
        made = ""
        if args.create_keys:
            made = _create_keys(args, repo)
        if (repo.metadata_dir / "root.json").exists():
            raise RepoError(f"{repo.metadata_dir} already holds a repository")
        repo.initialize()
        return made + f"initialised {repo.repo_dir}"
    if args.command in {"release", "add"}:
        return _release(args, repo, scratch)
    if args.command == "revoke":
        repo.revoke(args.version)
        return f"revoked {args.version}"
    if args.command == "raise-floor":
        repo.raise_floor(args.version)
        return f"floor raised to {args.version}"
    if args.command in {"resign-online", "resign-timestamp"}:
        done = repo.resign_online(args.days)
        snapshot = (f"snapshot version {done.snapshot_version}, " if done.snapshot_version
                    else "snapshot kept, ")
        return snapshot + f"timestamp version {done.timestamp_version}"
    if args.command == "resign-targets":
        return f"targets version {repo.resign_targets()}"
    if args.command == "resign-root":
        return f"root version {repo.resign_root()}"
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


def show_expiries(repo: Repository, within_days: float | None) -> int:
    """Print each role's expiry; 1 if any is within its warning window (or already past)."""
    late = 0
    for e in repo.expiries(within_days):
        days = e.left.total_seconds() / 86400
        verdict = "ok"
        if e.warn:
            late += 1
            fix = RESIGN_HINT[e.role]
            window = e.warn_within.total_seconds() / 86400
            verdict = f"EXPIRED: {fix}" if days < 0 else f"WARN (< {window:g} days): {fix}"
        print(f"{e.role:10s} v{e.version:<5d} expires {e.expires:%Y-%m-%d %H:%M} UTC "
              f"({days:7.2f} days left)  {verdict}")
    return 1 if late else 0


def show_status(repo: Repository, against: str | None) -> int:
    """Print each platform's releases as its agents read them, the expiries and, with
    `against`, what is local but not published. 0, or 1 if something cannot be read."""
    targets = repo.load("targets").signed
    views = [(p, target_apps(p)) for p in PLATFORMS] + [("pre-platform agents", (APP_NAME,))]
    for who, apps in views:
        catalog = trusted_catalog(targets, apps)
        floor = catalog.effective_floor
        print(f"{who}: {len(catalog.releases)} release(s), floor {floor or '-'}")
        for version in sorted(catalog.releases):
            r = catalog.releases[version]
            state = ("REVOKED" if r.revoked else
                     "below the floor" if floor is not None and version < floor else
                     "installable")
            patch = " +patch" if version in catalog.patches else ""
            print(f"  {version!s:10s} {state:16s} channel {r.channel:8s} "
                  f"{r.archive.path}{patch}")
    print("expiries:")
    show_expiries(repo, None)
    if against:
        dest = destination_for(against)
        changes = plan(repo.repo_dir, dest)
        if dest.digest("metadata/timestamp.json") is None:
            print(f"nothing published at {against}: run `release.py publish --publish "
                  f"{against}`")
        elif changes:
            print(f"not published to {against} yet ({len(changes)} file(s)): run "
                  f"`release.py publish --publish {against}`")
            for change in changes:
                print(f"  {change.key} ({change.reason})")
        else:
            print(f"{against}: up to date with the local repository")
    return 0


RESIGN_HINT = {
    "root": "resign-root (2 of the 3 offline root keys)",
    "targets": "resign-targets (offline targets key)",
    "snapshot": "resign-online (online snapshot key)",
    "timestamp": "resign-online (the daily job is not running?)",
}
KEY_WRITING = {"init", "rotate-key"}  # commands that may create key files


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command in {"status", "list"}:
        if args.publish:
            print("release.py: status uploads nothing: compare with --against DEST",
                  file=sys.stderr)
            return 1
        try:
            repo = Repository(args.repo, Path(tempfile.gettempdir()))
            _require_repository(repo)
            return show_status(repo, args.against)
        except (RepoError, OSError, ValueError) as e:
            print(f"release.py: {e}", file=sys.stderr)
            return 1
    if args.command == "expiries":
        try:
            return show_expiries(Repository(args.repo, Path(args.keys or ".")), args.within)
        except (OSError, ValueError) as e:
            print(f"release.py: cannot read the repository metadata: {e}", file=sys.stderr)
            return 1
    key_dirs = [Path(d) for d in (args.offline_keys, args.online_keys, args.keys) if d]
    if args.command != "publish" and not key_dirs:
        print("release.py: give --offline-keys DIR and/or --online-keys DIR (or --keys DIR), "
              "or set R4AGENT_RELEASE_OFFLINE_KEYS / R4AGENT_RELEASE_ONLINE_KEYS",
              file=sys.stderr)
        return 1
    scratch = None
    try:
        repo_dir = args.repo
        if args.dry_run and args.command != "publish":
            # everything a dry run writes goes under one private scratch folder
            scratch = Path(tempfile.mkdtemp(prefix="release-dry-run-"))
            if args.repo.exists():
                shutil.copytree(args.repo, scratch / "repo")
            repo_dir = scratch / "repo"
            if args.command in KEY_WRITING:
                copies = []
                for i, folder in enumerate(key_dirs):
                    copy = scratch / f"keys-{i}"
                    if folder.is_dir():
                        shutil.copytree(folder, copy)
                    copies.append(copy)
                key_dirs = list(copies)
                for name in ("offline_keys", "online_keys", "keys"):  # key_dirs' order
                    if getattr(args, name):
                        setattr(args, name, copies.pop(0))
        repo = Repository(repo_dir, key_dirs[0] if key_dirs else Path(tempfile.gettempdir()),
                          more_keys_dirs=key_dirs[1:], passphrase=passphrase_from(os.environ))
        if args.command not in {"init", "release", "add"}:
            _require_repository(repo)
        if args.command == "publish" and not args.publish:
            raise RepoError("publish needs --publish DEST (a folder or s3://bucket/prefix)")
        print(_apply(args, repo, scratch) + (" (dry run, nothing written)" if scratch else ""))
        if args.publish:
            _show(publish(repo_dir, destination_for(args.publish), dry_run=args.dry_run),
                  args.publish, args.dry_run)
        elif scratch is not None:
            _show(publish(repo_dir, FolderDestination(args.repo), dry_run=True),
                  str(args.repo), True)
        elif args.command != "publish":
            print(f"not published: the change is in {repo_dir} only; agents see it after "
                  "`release.py publish --publish DEST`")
    except (RepoError, ValueError, FileNotFoundError) as e:
        print(f"release.py: {e}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as e:
        what = Path(str(e.cmd[0] if isinstance(e.cmd, list | tuple) else e.cmd)).name
        print(f"release.py: {what} failed (exit {e.returncode}); nothing was added",
              file=sys.stderr)
        return 1
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
