"""TUF edge: refresh trusted metadata and fetch EXACT targets with every check python-tuf makes.

Built on `tuf.ngclient.Updater` (the verifier tufup's client subclasses) and tufup's repository
format (target names, patch custom metadata), without importing tufup itself: the tufup package
`__init__` pulls in its repository side (setuptools, cryptography), which must not be frozen into
the agent exe. What this adds on top of ngclient:

- exact pinning: the catalog is built from the TRUSTED targets metadata (as tufup's
  `trusted_target_metas` does), every download goes through `get_targetinfo(<exact name>)`;
- patch chains (bsdiff on the uncompressed tar, tufup's format) for forward moves, with the result
  verified against the size and sha256 signed in the last patch's metadata;
- size caps (`Limits`): metadata caps go to ngclient's `UpdaterConfig`, a target longer than
  `max_target_bytes` is refused before download, and ngclient's fetcher aborts any download that
  sends more bytes than the signed length (endless data);
- seeding of the trusted root from the copy baked into the exe, only when none exists.

Raises only `updater.errors` types: `VerificationError` for anything TUF rejects,
`DownloadFailedError` for transport trouble.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import importlib.resources
import json
from dataclasses import dataclass
from pathlib import Path

from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import Targets  # type: ignore[attr-defined]
from tuf.ngclient._internal.requests_fetcher import RequestsFetcher
from tuf.ngclient.config import UpdaterConfig
from tuf.ngclient.updater import Updater

from updater.errors import DownloadFailedError, UpdateRefusedError, VerificationError
from updater.policy import (
    APP_NAME,
    Artifact,
    Patch,
    TargetInfo,
    TrustedCatalog,
    build_catalog,
)
from updater.state import write_bytes_atomic


@dataclass(frozen=True, slots=True)
class Limits:
    socket_timeout: int = 30  # seconds; connect and between bytes
    root_max_bytes: int = 512_000
    timestamp_max_bytes: int = 16_384
    snapshot_max_bytes: int = 2_000_000
    targets_max_bytes: int = 5_000_000
    max_target_bytes: int = 300_000_000  # refuse signed targets longer than this
    max_tar_bytes: int = 800_000_000  # cap on an uncompressed tar (gzip bomb)
    max_root_rotations: int = 32


def seed_trusted_root(metadata_dir: Path, bundled_root: bytes | None) -> bool:
    """Put the exe's trusted root in place only when none (readable) exists; True if written.

    A root already on disk was reached through the signed root chain and may be newer than the
    one baked into this exe, so it is never overwritten. Only an unreadable one (not JSON with a
    signed root) is replaced, so a damaged file cannot stop updates for good.
    """
    target = metadata_dir / "root.json"
    if target.exists():
        try:
            data = json.loads(target.read_bytes())
            if data["signed"]["_type"] == "root" and isinstance(data["signed"]["version"], int):
                return False
        except (OSError, ValueError, KeyError, TypeError):
            pass
    if bundled_root is None:
        raise VerificationError("no trusted root on disk and none baked into this exe")
    metadata_dir.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(target, bundled_root)
    return True


def bundled_root() -> bytes | None:
    """The trusted root.json baked into the exe as data `updater/trusted_root.json`
    (build/freeze.py --trusted-root; build/release.py passes the repository's root)."""
    try:
        return (importlib.resources.files("updater") / "trusted_root.json").read_bytes()
    except (FileNotFoundError, OSError):
        return None


def trusted_catalog(targets: Targets, app: str = APP_NAME) -> TrustedCatalog:
    """The catalog of a (verified) top-level targets role, as the agent sees it. The release side
    runs it too before signing, so it never publishes what agents would refuse or ignore.

    Raises VerificationError if the role delegates: no delegations by design
    (docs/security-tuf.md, GHSA-qp9x-wp8f-qgjj), so refuse rather than walk them."""
    if targets.delegations is not None:
        raise VerificationError("targets metadata delegates; this client refuses delegations")
    return build_catalog(
        [
            TargetInfo(path, t.length, dict(t.hashes), t.unrecognized_fields.get("custom"))
            for path, t in targets.targets.items()
        ],
        app,
    )


class TufClient:
    def __init__(
        self,
        metadata_dir: Path,
        target_dir: Path,
        metadata_url: str,
        targets_url: str,
        *,
        limits: Limits | None = None,
        app: str = "r4agent",
    ) -> None:
        self._metadata_dir = metadata_dir
        self._target_dir = target_dir
        self._metadata_url = metadata_url
        self._targets_url = targets_url
        self._limits = limits or Limits()
        self._app = app
        self._updater: Updater | None = None

    def refresh(self) -> TrustedCatalog:
        """Run the TUF client workflow (root -> timestamp -> snapshot -> targets)."""
        limits = self._limits
        config = UpdaterConfig(
            max_root_rotations=limits.max_root_rotations,
            root_max_length=limits.root_max_bytes,
            timestamp_max_length=limits.timestamp_max_bytes,
            snapshot_max_length=limits.snapshot_max_bytes,
            targets_max_length=limits.targets_max_bytes,
        )
        self._target_dir.mkdir(parents=True, exist_ok=True)
        try:
            updater = Updater(
                metadata_dir=str(self._metadata_dir),
                metadata_base_url=self._metadata_url,
                target_dir=str(self._target_dir),
                target_base_url=self._targets_url,
                fetcher=RequestsFetcher(socket_timeout=limits.socket_timeout),
                config=config,
            )
            updater.refresh()
        except tuf_errors.RepositoryError as e:
            raise VerificationError(f"TUF metadata rejected: {type(e).__name__}: {e}") from e
        except tuf_errors.DownloadError as e:
            raise DownloadFailedError(f"TUF metadata download failed: {type(e).__name__}") from e
        except OSError as e:
            raise DownloadFailedError(f"TUF metadata could not be read/written: {e}") from e
        self._updater = updater
        return trusted_catalog(self._trusted_targets(updater), self._app)

    @staticmethod
    def _trusted_targets(updater: Updater) -> Targets:
        # Like tufup's Client.trusted_target_metas: ngclient has no public listing of the
        # verified top-level targets, so read them from its trusted set (after refresh()).
        targets: Targets = updater._trusted_set.targets
        return targets

    def fetch(self, artifact: Artifact) -> Path:
        """Download one exact trusted target of the catalog (or reuse a verified cached copy)."""
        if artifact.length > self._limits.max_target_bytes:
            raise UpdateRefusedError(
                f"{artifact.path} is {artifact.length} bytes, above the "
                f"{self._limits.max_target_bytes} byte cap"
            )
        return self.fetch_target(artifact.path, artifact)

    def fetch_target(self, target_path: str, expected: Artifact | None = None) -> Path:
        """Download the target named exactly `target_path` through `get_targetinfo`; ngclient
        checks its length and hashes against the trusted targets metadata before keeping it."""
        updater = self._require_refreshed()
        try:
            info = updater.get_targetinfo(target_path)
            if info is None:
                raise VerificationError(f"{target_path} is not in the trusted targets metadata")
            if info.length > self._limits.max_target_bytes:
                raise UpdateRefusedError(f"{target_path} is above the target size cap")
            if expected is not None and (
                info.length != expected.length or info.hashes.get("sha256") != expected.sha256
            ):
                raise VerificationError(f"{target_path}: trusted metadata changed under us")
            cached = updater.find_cached_target(info)
            if cached is not None:
                return Path(cached)
            return Path(updater.download_target(info))
        except tuf_errors.RepositoryError as e:
            raise VerificationError(f"{target_path} rejected: {type(e).__name__}: {e}") from e
        except tuf_errors.DownloadError as e:
            raise DownloadFailedError(f"{target_path} download failed: {type(e).__name__}") from e
        except OSError as e:
            raise DownloadFailedError(f"{target_path} could not be stored: {e}") from e

    def _require_refreshed(self) -> Updater:
        if self._updater is None:
            raise RuntimeError("refresh() first")
        return self._updater

    # ---- uncompressed tars (patch bases) ------------------------------------------------------

    def tar_cache_path(self, version: str) -> Path:
        return self._target_dir / f"{self._app}-{version}.tar"

    def tar_from_archive(self, archive_path: Path) -> bytes:
        """Decompress a verified .tar.gz, refusing output above the tar cap (gzip bomb)."""
        cap = self._limits.max_tar_bytes
        out = bytearray()
        try:
            with gzip.open(archive_path, "rb") as src:
                while chunk := src.read(1 << 20):
                    out += chunk
                    if len(out) > cap:
                        raise UpdateRefusedError(f"archive unpacks to more than {cap} bytes")
        except (OSError, EOFError, gzip.BadGzipFile) as e:
            raise VerificationError(f"archive is not a valid gzip file: {e}") from e
        return bytes(out)

    def tar_from_patches(self, base_version: str, chain: tuple[Patch, ...]) -> bytes:
        """Apply a trusted patch chain to the cached tar of the running version; verify result."""
        if not chain:
            raise ValueError("empty patch chain")
        try:
            tar = self.tar_cache_path(base_version).read_bytes()
        except OSError as e:
            raise DownloadFailedError(f"no cached tar of {base_version} to patch: {e}") from e
        try:
            import bsdiff4  # only the patch route needs it (and its bz2)
        except ImportError as e:
            raise DownloadFailedError(f"patching unavailable in this build: {e}") from e
        for patch in chain:
            patch_bytes = self.fetch(patch.artifact).read_bytes()
            try:
                tar = bsdiff4.patch(tar, patch_bytes)
            except Exception as e:
                raise VerificationError(f"{patch.artifact.path} does not apply: {e}") from e
            if len(tar) > self._limits.max_tar_bytes:
                raise UpdateRefusedError("patched tar above the tar cap")
        last = chain[-1]
        if len(tar) != last.tar_size or hashlib.sha256(tar).hexdigest() != last.tar_sha256:
            raise VerificationError(
                f"patched tar of {last.version} does not match its signed size/hash"
            )
        return tar

    def store_tar(self, version: str, tar: bytes) -> Path:
        path = self.tar_cache_path(version)
        write_bytes_atomic(path, tar)
        return path

    def prune_cache(self, keep_versions: set[str]) -> None:
        """Drop cached archives, patches and tars except the tars of versions we keep."""
        keep = {self.tar_cache_path(v).name for v in keep_versions}
        for entry in self._target_dir.iterdir():
            if entry.is_file() and entry.name not in keep:
                with contextlib.suppress(OSError):
                    entry.unlink()
