"""The TUF repository on the release side (never frozen into the agent exe).

Same on-disk format as tufup's repository (`metadata/`, `targets/`, `<app>-<X.Y.Z>.tar.gz` and
`.patch` targets, custom metadata `{"user": ..., "tufup": ...}`, keys as securesystemslib 0.x
ed25519 key files with `.pub` twins: `updater.repo.keys`), and patches in tufup's format (bsdiff4
of the uncompressed tars, the result's size and sha256 in the patch's custom metadata: tested
byte for byte against tufup's own `Patcher`), so tufup's client could read it too. Written on
`tuf.api.metadata` (the same python-tuf as the agents, without tufup: its newest release still
pins tuf 4.0.x) rather than `tufup.repo.Repository`, which prompts on stdin, writes a config file
into the current directory and takes expiry from the wall clock; here the clock is injected
(tests make expired metadata) and nothing prompts. See docs/security-tuf.md.

Roles and keys (no delegations, see docs/security-tuf.md):

    root       3 keys (root1..root3), threshold 2, offline; expires after 365 days
    targets    1 key, offline; 90 days (re-signed by each release / revoke / floor change, or
               `release.py resign-targets`)
    snapshot   1 key, online; 7 days (re-signed with every targets change, and by the daily
               job when it has less than SNAPSHOT_RESIGN_WITHIN_DAYS left)
    timestamp  1 key, online; 2 days, re-signed daily (`release.py resign-online`): a day of
               slack, so a late or failed daily run does not expire the fleet's timestamp

`expiries()` reports what expires when; `release.py expiries` fails when a role is close.
Snapshot and timestamp carry length + sha256 of what they point at (stronger than versions only).
Before targets are signed, the client's own reading of them (`updater.tuf_client.trusted_catalog`)
must accept every archive and leave at least one release installable.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bsdiff4
from securesystemslib.signer import Signer, SSlibKey  # type: ignore[attr-defined]
from tuf.api.metadata import (  # type: ignore[attr-defined]
    Metadata,
    MetaFile,
    Role,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

from updater.policy import (
    APP_NAME,
    LEGACY_PLATFORM,
    PLATFORMS,
    BadVersionError,
    Version,
    host_platform,
    parse_target_name,
    parse_version,
    target_app,
    target_apps,
)
from updater.repo import keys
from updater.repo.keys import KeyFileError
from updater.state import write_bytes_atomic
from updater.tuf_client import trusted_catalog

ROOT_KEYS = ("root1", "root2", "root3")
# signed unattended (the daily job, CI): their keys are kept online, unencrypted
ONLINE_ROLES = frozenset({"snapshot", "timestamp"})
ROOT_THRESHOLD = 2
# timestamp: 2 days for a job that runs daily (the usual practice): one late or failed run
# must not expire it for the whole fleet, which would block every update and rollback.
EXPIRY_DAYS: Mapping[str, int] = {"root": 365, "targets": 90, "snapshot": 7, "timestamp": 2}
ROLE_KEYS: Mapping[str, tuple[str, ...]] = {
    "root": ROOT_KEYS,
    "targets": ("targets",),
    "snapshot": ("snapshot",),
    "timestamp": ("timestamp",),
}
# The daily online job re-signs the snapshot too when it has less than this left, so a quiet
# week without releases never lets it expire (agents refuse an expired snapshot).
SNAPSHOT_RESIGN_WITHIN_DAYS = 3.0
# `expiries` warns when a role has less than this left (timestamp: under a day of its 2 left
# means the daily job missed a run).
WARN_WITHIN_DAYS: Mapping[str, float] = {"root": 60, "targets": 21, "snapshot": 2,
                                         "timestamp": 1}
DEFAULT_SOURCE_DATE_EPOCH = 1_700_000_000


class RepoError(Exception):
    """A release-side operation that cannot be done (missing keys, bad version, policy)."""


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class ReleasePolicy:
    revoked: bool = False
    floor: str | None = None
    channel: str = "stable"

    def to_custom(self) -> dict[str, Any]:
        data: dict[str, Any] = {"revoked": self.revoked, "channel": self.channel}
        if self.floor is not None:
            data["floor"] = self.floor
        return data


@dataclass(frozen=True, slots=True)
class RoleExpiry:
    role: str
    version: int
    expires: datetime
    left: timedelta
    warn_within: timedelta

    @property
    def warn(self) -> bool:
        return self.left < self.warn_within


@dataclass(frozen=True, slots=True)
class OnlineResign:
    timestamp_version: int
    snapshot_version: int | None  # None: the snapshot had enough time left and was kept


def deterministic_tar_gz(src_dir: Path, mtime: int = DEFAULT_SOURCE_DATE_EPOCH) -> bytes:
    """A .tar.gz of `src_dir` whose bytes depend only on the files' content and exec bits."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        paths = sorted(src_dir.rglob("*"), key=lambda p: p.relative_to(src_dir).as_posix())
        for path in paths:
            rel = path.relative_to(src_dir).as_posix()
            if path.is_symlink():
                raise RepoError(f"bundle contains a symlink: {rel}")
            info = tarfile.TarInfo(rel)
            info.mtime = mtime
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if path.is_dir():
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            else:
                data = path.read_bytes()
                info.size = len(data)
                info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
                tar.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, compresslevel=9) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def archive_name(version: str, app: str) -> str:
    return f"{app}-{version}.tar.gz"


def _patch_name(version: str, app: str) -> str:
    return f"{app}-{version}.patch"


def listed_as(platform: str) -> tuple[str, ...]:
    """The `<app>` names a build for `platform` is listed under: its own, and for Windows the
    plain `r4agent` names agents built before platform names read (updater/policy.py)."""
    return (target_app(platform), APP_NAME) if platform == LEGACY_PLATFORM \
        else (target_app(platform),)


class Repository:
    def __init__(
        self,
        repo_dir: Path,
        keys_dir: Path,
        *,
        now: Callable[[], datetime] = utc_now,
        more_keys_dirs: Iterable[Path] = (),
        passphrase: keys.Passphrase | None = None,
    ) -> None:
        """Keys are looked for in `keys_dir` and `more_keys_dirs` (e.g. the offline and the
        online folder); `passphrase` opens the encrypted ones, asked only when one is needed."""
        self.repo_dir = repo_dir
        self.keys_dir = keys_dir
        self.keys_dirs = (keys_dir, *more_keys_dirs)
        self._passphrase = passphrase
        self._now = now
        self.metadata_dir = repo_dir / "metadata"
        self.targets_dir = repo_dir / "targets"

    # ---- keys ----------------------------------------------------------------------------------

    @staticmethod
    def create_keys(keys_dir: Path) -> None:
        """Throwaway ed25519 keys, unencrypted, all in one folder: tests and throwaway
        repositories only (`create_split_keys` is what `release.py init` does)."""
        keys_dir.mkdir(parents=True, exist_ok=True)
        for names in ROLE_KEYS.values():
            for name in names:
                if not (keys_dir / name).exists():
                    keys.generate_key_pair(keys_dir / name)

    @staticmethod
    def create_split_keys(offline_dir: Path, online_dir: Path, passphrase: str) -> list[Path]:
        """The missing keys: offline ones (root x3, targets) encrypted with `passphrase` into
        `offline_dir`, online ones (snapshot, timestamp: the daily job signs unattended)
        unencrypted into `online_dir`. Refused if the folders are one and the same. Returns
        the private key files made."""
        if offline_dir.resolve() == online_dir.resolve():
            raise RepoError("offline and online keys go to two different folders")
        made = []
        for role, names in ROLE_KEYS.items():
            folder = online_dir if role in ONLINE_ROLES else offline_dir
            for name in names:
                if not (folder / name).exists():
                    keys.generate_key_pair(folder / name,
                                           None if role in ONLINE_ROLES else passphrase)
                    made.append(folder / name)
        return made

    def _find_key(self, name: str) -> Path:
        """Key file `name` (or `name`.pub) in the first key folder that has it."""
        for folder in self.keys_dirs:
            if (folder / name).exists():
                return folder / name
        return self.keys_dir / name

    def _public(self, name: str) -> SSlibKey:
        try:
            return keys.public_key(self._find_key(f"{name}.pub"))
        except KeyFileError as e:
            raise RepoError(f"public key {name}.pub not readable in the keys folders") from e

    # ---- metadata I/O --------------------------------------------------------------------------

    def load(self, role: str) -> Metadata[Any]:
        path = self.metadata_dir / f"{role}.json"
        if not path.is_file():
            raise FileNotFoundError(path)
        return Metadata.from_file(str(path))

    def _write(self, md: Metadata[Any], name: str) -> None:
        write_bytes_atomic(self.metadata_dir / name, _bytes(md))

    def _expires(self, role: str, days: float | None = None) -> datetime:
        span = timedelta(days=EXPIRY_DAYS[role] if days is None else days)
        return (self._now() + span).replace(microsecond=0)

    def _sign(self, md: Metadata[Any], role: str, signers: Iterable[Signer]) -> int:
        md.signatures.clear()
        count = 0
        for signer in signers:
            md.sign(signer, append=True)
            count += 1
        return count

    # ---- operations ----------------------------------------------------------------------------

    def initialize(self) -> None:
        if (self.metadata_dir / "root.json").exists():
            raise RepoError(f"{self.metadata_dir} already holds a repository")
        self.metadata_dir.mkdir(parents=True, exist_ok=True)
        self.targets_dir.mkdir(parents=True, exist_ok=True)
        root = Root(version=1, expires=self._expires("root"), consistent_snapshot=False)
        for role, names in ROLE_KEYS.items():
            for name in names:
                root.add_key(self._public(name), role)
        root.roles["root"].threshold = ROOT_THRESHOLD
        root_md = Metadata(root)
        self._sign_root(root_md, old_root=None)
        self._write(root_md, "1.root.json")
        self._write(root_md, "root.json")
        targets_md = Metadata(Targets(version=1, expires=self._expires("targets")))
        self._finish_targets(targets_md)

    def _sign_root(self, md: Metadata[Root], old_root: Root | None) -> None:
        signers = self._signers_for_keyids(set(md.signed.roles["root"].keyids))
        if old_root is not None:
            signers.update(self._signers_for_keyids(set(old_root.roles["root"].keyids)))
        self._sign(md, "root", signers.values())
        threshold = md.signed.roles["root"].threshold
        have = {s for s in md.signatures if s in md.signed.roles["root"].keyids}
        if len(have) < threshold:
            raise RepoError(f"root needs {threshold} root keys; only {len(have)} found")
        if old_root is not None:
            old = {s for s in md.signatures if s in old_root.roles["root"].keyids}
            if len(old) < old_root.roles["root"].threshold:
                raise RepoError("the new root must also be signed by the old root's threshold")

    def _key_files(self) -> dict[str, Path]:
        """keyid -> private key file, over every key folder (nothing decrypted)."""
        found: dict[str, Path] = {}
        for folder in self.keys_dirs:
            for path in sorted(folder.iterdir()) if folder.is_dir() else []:
                if path.suffix or not path.is_file():
                    continue
                try:
                    found.setdefault(keys.keyid_of(path), path)
                except KeyFileError:  # not a key file; skip it
                    continue
        return found

    def _signers_for_keyids(self, keyids: set[str]) -> dict[str, Signer]:
        """Signers for the keys among `keyids` that are here; an encrypted one is opened with
        the passphrase (a wrong one is refused, never skipped)."""
        found: dict[str, Signer] = {}
        for keyid, path in self._key_files().items():
            if keyid not in keyids:
                continue
            try:
                found[keyid] = keys.signer(path, self._passphrase)
            except keys.WrongPassphraseError as e:
                raise RepoError(f"{e}: wrong passphrase, nothing was signed") from e
            except KeyFileError as e:
                raise RepoError(f"{e}; nothing was signed") from e
        return found

    def _require_signers(self, *roles: str) -> None:
        """Refuse before anything is written unless every role's threshold of keys is here
        (and opens: a wrong passphrase is refused here, not halfway through)."""
        root = self.load("root").signed
        for role in roles:
            keyids = set(root.roles[role].keyids)
            if len(self._signers_for_keyids(keyids)) < root.roles[role].threshold:
                raise RepoError(f"no private key for the {role} role in "
                                f"{', '.join(map(str, self.keys_dirs))}")

    def _finish_targets(self, targets_md: Metadata[Targets]) -> None:
        """Sign targets, then a new snapshot and timestamp that pin it (length + hash)."""
        check_client_view(targets_md.signed)
        self._sign_role(targets_md, "targets")
        self._write(targets_md, "targets.json")
        self._new_snapshot()

    def _sign_role(
        self,
        md: Metadata[Any],
        role: str,
        root: Root | None = None,
        retired_keyid: str | None = None,
    ) -> None:
        """Sign `md` for `role` under `root` (default: root.json on disk) to its threshold, and
        also by `retired_keyid` when that key is still here (a key rotation: agents still on
        the old root then accept it too)."""
        if root is None:
            root = self.load("root").signed
        keyids = set(root.roles[role].keyids)
        retired = {retired_keyid} if retired_keyid else set()
        self._sign(md, role, self._signers_for_keyids(keyids | retired).values())
        if len(keyids & set(md.signatures)) < root.roles[role].threshold:
            raise RepoError(f"no private key for the {role} role in {self.keys_dir}")

    def _meta(self, name: str, version: int) -> MetaFile:
        return _meta_of((self.metadata_dir / name).read_bytes(), version)

    def _snapshot_md(self, version: int, targets_meta: MetaFile) -> Metadata[Snapshot]:
        return Metadata(Snapshot(version=version, expires=self._expires("snapshot"),
                                 meta={"targets.json": targets_meta}))

    def _timestamp_md(
        self, version: int, snapshot_meta: MetaFile, days: float | None = None
    ) -> Metadata[Timestamp]:
        return Metadata(Timestamp(version=version, expires=self._expires("timestamp", days),
                                  snapshot_meta=snapshot_meta))

    def _new_snapshot(self, timestamp_days: float | None = None) -> int:
        targets_version = self.load("targets").signed.version
        try:
            version = self.load("snapshot").signed.version + 1
        except FileNotFoundError:
            version = 1
        snapshot_md = self._snapshot_md(version, self._meta("targets.json", targets_version))
        self._sign_role(snapshot_md, "snapshot")
        self._write(snapshot_md, "snapshot.json")
        self.resign_timestamp(timestamp_days)
        return int(version)

    def resign_timestamp(self, days: float | None = None) -> int:
        """New timestamp version pointing at the current snapshot; returns its version."""
        snapshot_version = self.load("snapshot").signed.version
        try:
            version = int(self.load("timestamp").signed.version) + 1
        except FileNotFoundError:
            version = 1
        md = self._timestamp_md(version, self._meta("snapshot.json", snapshot_version), days)
        self._sign_role(md, "timestamp")
        self._write(md, "timestamp.json")
        return version

    def resign_snapshot(self) -> None:
        self._new_snapshot()

    def resign_online(
        self,
        timestamp_days: float | None = None,
        snapshot_within_days: float = SNAPSHOT_RESIGN_WITHIN_DAYS,
    ) -> OnlineResign:
        """The daily job (online keys only): a new timestamp, and a new snapshot first when the
        current one expires within `snapshot_within_days`."""
        left = self.load("snapshot").signed.expires - self._now()
        if left < timedelta(days=snapshot_within_days):
            snapshot_version = self._new_snapshot(timestamp_days)
            return OnlineResign(int(self.load("timestamp").signed.version), snapshot_version)
        return OnlineResign(self.resign_timestamp(timestamp_days), None)

    def resign_targets(self) -> int:
        """Re-sign targets unchanged with a fresh expiry (offline targets key); returns its new
        version. Snapshot and timestamp follow."""
        md = self._targets_for_update()
        self._finish_targets(md)
        return int(md.signed.version)

    def expiries(self, warn_within_days: float | None = None) -> list[RoleExpiry]:
        """Each top-level role's version and expiry as of now (read only). `warn_within_days`
        replaces the per-role WARN_WITHIN_DAYS."""
        now = self._now()
        out = []
        for role in ("root", "targets", "snapshot", "timestamp"):
            signed = self.load(role).signed
            days = WARN_WITHIN_DAYS[role] if warn_within_days is None else warn_within_days
            out.append(RoleExpiry(role, int(signed.version), signed.expires,
                                  signed.expires - now, timedelta(days=days)))
        return out

    def _targets_for_update(self) -> Metadata[Targets]:
        md = self.load("targets")
        md.signed.version += 1
        md.signed.expires = self._expires("targets")
        return md

    def releases(self, platform: str | None = None) -> dict[Version, dict[str, Any]]:
        """Version -> the archive's user custom metadata, as agents on `platform` read them
        (None: every archive of every platform)."""
        out: dict[Version, dict[str, Any]] = {}
        apps = None if platform is None else target_apps(platform)
        for path, target in self.load("targets").signed.targets.items():
            parsed = parse_target_name(path)
            if parsed is None or not parsed[2] or (apps is not None and parsed[0] not in apps):
                continue
            custom = target.unrecognized_fields.get("custom", {})
            out.setdefault(parsed[1], dict(custom.get("user") or {}))
        return out

    def add_bundle(
        self,
        bundle_dir: Path,
        version: str,
        policy: ReleasePolicy | None = None,
        *,
        platform: str | None = None,
        mtime: int = DEFAULT_SOURCE_DATE_EPOCH,
        skip_patch: bool = False,
    ) -> list[str]:
        """Archive `bundle_dir` as `version` of `platform` (default: this machine's), add it under
        each name it is listed as (`listed_as`), each with a patch from the archive its readers
        have as the latest, and sign.

        Returns the target names added. Versions must increase per platform (as in tufup). The
        policy is checked as agents will read it before anything is written. The bundle's
        content is not checked here: build/release.py does that (updater/repo/bundle_check.py)."""
        new = _parse(version)
        platform = platform or host_platform()
        policy = policy or ReleasePolicy()
        releases = self.releases(platform)
        if releases and new <= max(releases):
            latest = max(releases)
            hint = (f"; {latest} is revoked: release the hotfix as a version above it (agents "
                    f"install exactly the backend's libraryVersion, so a higher number moves "
                    f"no one by itself), with --floor to keep agents off {latest}"
                    if releases[latest].get("revoked") else "")
            raise RepoError(f"version {version} must be above the latest {platform} release "
                            f"{latest}{hint}")
        archive_bytes = deterministic_tar_gz(bundle_dir, mtime)
        self._require_signers("targets", "snapshot", "timestamp")
        md = self._targets_for_update()
        added: list[str] = []
        for app in listed_as(platform):
            readers = target_apps(platform) if app != APP_NAME else (APP_NAME,)
            previous = None if skip_patch else self._latest_archive(md.signed, readers)
            archive_path = self._put_archive(md, version, archive_bytes, policy, app)
            added.append(archive_path.name)
            if previous is not None:
                added.append(self._add_patch(md, previous, archive_path,
                                             _patch_name(version, app)))
        self._finish_targets(md)
        return added

    def _latest_archive(self, targets: Targets, apps: tuple[str, ...]) -> Path | None:
        catalog = trusted_catalog(targets, apps)
        if not catalog.releases:
            return None
        return self.targets_dir / catalog.releases[max(catalog.releases)].archive.path

    def _add_patch(self, md: Metadata[Targets], previous: Path, archive: Path, name: str) -> str:
        patch, result = tufup_patch(previous.read_bytes(), archive.read_bytes())
        write_bytes_atomic(self.targets_dir / name, patch)
        return self._add_target(md, self.targets_dir / name, {"user": None, "tufup": result})

    def add_archive(
        self,
        archive: Path,
        version: str,
        policy: ReleasePolicy | None = None,
        *,
        platform: str | None = None,
    ) -> list[str]:
        """Add an already built `.tar.gz` as `version` of `platform` (no patch) and sign."""
        _parse(version)
        policy = policy or ReleasePolicy()
        data = archive.read_bytes()
        self._require_signers("targets", "snapshot", "timestamp")
        md = self._targets_for_update()
        names = [self._put_archive(md, version, data, policy, app).name
                 for app in listed_as(platform or host_platform())]
        self._finish_targets(md)
        return names

    def _put_archive(
        self, md: Metadata[Targets], version: str, data: bytes, policy: ReleasePolicy, app: str
    ) -> Path:
        """List archive `data` as `version` named for `app` with its signed policy in `md`,
        refuse it as agents would read it before writing any file, then write it into targets/;
        returns its path."""
        name = archive_name(version, app)
        _put_target(md, TargetFile.from_data(name, data, ["sha256"]),
                    {"user": policy.to_custom(), "tufup": {"required": False}})
        check_client_view(md.signed)  # refuse before writing any file
        path = self.targets_dir / name
        write_bytes_atomic(path, data)
        return path

    def _add_target(self, md: Metadata[Targets], path: Path, custom: dict[str, Any]) -> str:
        _put_target(md, TargetFile.from_file(path.name, str(path), ["sha256"]), custom)
        return path.name

    def _edit_policy(self, edit: Callable[[str, dict[str, Any]], None]) -> None:
        md = self._targets_for_update()
        for path, target in md.signed.targets.items():
            parsed = parse_target_name(path)
            if parsed is not None and parsed[2]:  # an archive, of any platform
                custom = target.unrecognized_fields.setdefault("custom", {})
                user = custom.get("user") or {}
                edit(str(parsed[1]), user)
                custom["user"] = user
        self._finish_targets(md)

    def revoke(self, version: str) -> None:
        """Mark `version` revoked; refused if nothing would be left for agents to install."""
        if _parse(version) not in self.releases():
            raise RepoError(f"version {version} is not in the repository")

        def edit(v: str, user: dict[str, Any]) -> None:
            if v == version:
                user["revoked"] = True

        self._edit_policy(edit)

    def raise_floor(self, floor: str) -> None:
        """No agent installs anything below `floor` any more. Never lowered; refused if no
        unrevoked release at or above it would be left."""
        new = _parse(floor)
        current = [parse_version(u["floor"]) for u in self.releases().values() if u.get("floor")]
        if current and new < max(current):
            raise RepoError(f"floor {floor} is below the current floor {max(current)}")

        def edit(_v: str, user: dict[str, Any]) -> None:
            user["floor"] = floor

        self._edit_policy(edit)

    def rotate_key(self, old_name: str, new_name: str) -> None:
        """Replace key `old_name` by a new key pair `new_name` (generated if absent) in root.

        Refused before anything is written (a key file or metadata) unless every signature the
        rotation needs is available. The new root is signed by the threshold of the old root
        keys AND of the new root keys, so clients can follow the chain. Only what must change is
        re-signed: each role the key served (with the new key, and with the old one too when it
        is still there, so agents on either root accept it), then what points at it — snapshot
        after targets, timestamp after either; rotating an online key never needs the offline
        targets key. Everything is built in memory, then written role files first and the root
        last, the order `publish` uploads in."""
        root_md = self.load("root")
        old_root = Root.from_dict(json.loads(json.dumps(root_md.signed.to_dict())))
        old_key = self._public(old_name)
        roles = [r for r, role in old_root.roles.items() if old_key.keyid in role.keyids]
        if not roles:
            raise RepoError(f"key {old_name} is not used by any role")
        resign = {r for r in roles if r != "root"}
        if "targets" in resign:
            resign.add("snapshot")
        if resign:
            resign.add("timestamp")
        # the new key goes next to the old one, encrypted if that one is
        old_path = self._find_key(old_name)
        new_path = self._find_key(new_name)
        if not new_path.exists():
            new_path = old_path.with_name(new_name)
        # the new key is made below if absent: count it as there, under a stand-in id
        new_keyid = self._public(new_name).keyid if new_path.exists() else "<new key>"
        # opened now (a wrong passphrase is refused before anything is written)
        usable = set(self._signers_for_keyids(
            {k for role in old_root.roles.values() for k in role.keyids})) | {new_keyid}
        for role in ("root", *sorted(resign)):
            keyids = set(old_root.roles[role].keyids)
            if role in roles:
                keyids = (keyids - {old_key.keyid}) | {new_keyid}
            needs = [(f"the {role} keys", keyids)]
            if role == "root":  # clients on the old root must verify the new one
                needs.append(("the old root keys", set(old_root.roles["root"].keyids)))
            threshold = old_root.roles[role].threshold
            for what, wanted in needs:
                have = len(wanted & usable)
                if have < threshold:
                    raise RepoError(f"rotating {old_name} needs {threshold} of {what}; "
                                    f"{have} private key(s) found in {self.keys_dir}")
        if not new_path.exists():
            encrypted = old_path.exists() and keys.is_encrypted(old_path)
            if encrypted and self._passphrase is None:
                raise RepoError(f"{old_name} is encrypted: its successor needs the passphrase")
            keys.generate_key_pair(new_path, self._passphrase() if encrypted
                                   and self._passphrase else None)
        new_key = self._public(new_name)
        for role in roles:
            root_md.signed.revoke_key(old_key.keyid, role)
            root_md.signed.add_key(new_key, role)
        root_md.signed.version += 1
        root_md.signed.expires = self._expires("root")
        self._sign_root(root_md, old_root)
        new_root = root_md.signed

        files: list[tuple[str, bytes]] = []  # written in this order

        def sign_and_queue(md: Metadata[Any], role: str) -> MetaFile:
            self._sign_role(md, role, new_root, old_key.keyid if role in roles else None)
            data = _bytes(md)
            files.append((f"{role}.json", data))
            return _meta_of(data, md.signed.version)

        if "targets" in resign:
            targets_md = self._targets_for_update()
            check_client_view(targets_md.signed)
            targets_meta = sign_and_queue(targets_md, "targets")
        else:
            targets_meta = self._meta("targets.json", self.load("targets").signed.version)
        snapshot_version = self.load("snapshot").signed.version
        if "snapshot" in resign:
            snapshot_md = self._snapshot_md(snapshot_version + 1, targets_meta)
            snapshot_meta = sign_and_queue(snapshot_md, "snapshot")
        else:
            snapshot_meta = self._meta("snapshot.json", snapshot_version)
        if "timestamp" in resign:
            timestamp_version = int(self.load("timestamp").signed.version) + 1
            sign_and_queue(self._timestamp_md(timestamp_version, snapshot_meta), "timestamp")
        root_bytes = _bytes(root_md)
        files += [(f"{new_root.version}.root.json", root_bytes), ("root.json", root_bytes)]
        for name, data in files:
            write_bytes_atomic(self.metadata_dir / name, data)

    def root_bytes(self) -> bytes:
        return (self.metadata_dir / "root.json").read_bytes()

    def keyids(self, role: str) -> list[str]:
        signed = self.load("root").signed
        assert isinstance(signed, Root)
        return list(signed.roles[role].keyids)

    def resign_root(self) -> int:
        """A new root version with the same keys and a fresh expiry, signed by the threshold of
        root keys (an expired or expiring root: agents fetch newer root versions before they
        check the expiry, so publishing it frees them). Returns its version."""
        self._require_signers("root")
        root_md = self.load("root")
        old_root = Root.from_dict(json.loads(json.dumps(root_md.signed.to_dict())))
        root_md.signed.version += 1
        root_md.signed.expires = self._expires("root")
        self._sign_root(root_md, old_root)
        self._write(root_md, f"{root_md.signed.version}.root.json")
        self._write(root_md, "root.json")
        return int(root_md.signed.version)

    def set_threshold(self, role: str, threshold: int) -> None:
        """Change a role's threshold in a new root version (signed by old and new root keys)."""
        root_md = self.load("root")
        old_root = Root.from_dict(json.loads(json.dumps(root_md.signed.to_dict())))
        root_md.signed.roles[role] = Role(list(root_md.signed.roles[role].keyids), threshold)
        root_md.signed.version += 1
        root_md.signed.expires = self._expires("root")
        self._sign_root(root_md, old_root)
        self._write(root_md, f"{root_md.signed.version}.root.json")
        self._write(root_md, "root.json")


def check_client_view(targets: Targets) -> None:
    """Refuse to sign targets agents would not read as meant: delegations, an archive whose
    name or signed policy they would ignore (e.g. a non-canonical floor: its floor would silently
    not count), or a policy that leaves no release installable (all revoked or below the floor).
    Uses the agent's own reading (`updater.tuf_client.trusted_catalog`). Agents verify
    delegations, but read releases from the top-level role only: this repository has none
    (docs/security-tuf.md), so a delegation here can only be a mistake."""
    if targets.delegations is not None:
        raise RepoError("delegations are not allowed in this repository")
    # each platform's agents, and those built before platform names (plain `r4agent` only)
    views = {p: target_apps(p) for p in PLATFORMS} | {"pre-platform": (APP_NAME,)}
    for who, apps in views.items():
        catalog = trusted_catalog(targets, apps)
        if catalog.problems:
            raise RepoError(f"{who} agents would ignore: " + "; ".join(catalog.problems))
        if catalog.releases and not catalog.installable():
            floor = catalog.effective_floor
            where = f" at or above the floor {floor}" if floor is not None else ""
            raise RepoError(f"no unrevoked {who} release{where} would be left; agents could "
                            f"not move (a release below a revoked or floored one needs "
                            f"--floor at or below it, or revoke less)")


def tufup_patch(previous_archive: bytes, archive: bytes) -> tuple[bytes, dict[str, Any]]:
    """A patch as tufup's `Patcher.diff_and_hash` makes it: bsdiff4 from the uncompressed tar of
    the previous archive to that of the new one, and the new tar's size and sha256 (what agents
    check the patched result against)."""
    tar = gzip.decompress(archive)
    patch = bsdiff4.diff(gzip.decompress(previous_archive), tar)
    return patch, {"tar_size": len(tar), "tar_hash": hashlib.sha256(tar).hexdigest(),
                   "tar_hash_algorithm": "sha256"}


def _meta_of(data: bytes, version: int) -> MetaFile:
    return MetaFile(version, len(data), {"sha256": hashlib.sha256(data).hexdigest()})


def _bytes(md: Metadata[Any]) -> bytes:
    """The bytes every metadata file is written as (indented JSON)."""
    return bytes(md.to_bytes(JSONSerializer(compact=False)))


def _parse(version: str) -> Version:
    try:
        return parse_version(version)
    except BadVersionError as e:
        raise RepoError(str(e)) from e


def _put_target(md: Metadata[Targets], info: TargetFile, custom: dict[str, Any]) -> None:
    info.unrecognized_fields["custom"] = custom
    md.signed.targets[info.path] = info
