"""TUF edge: refresh trusted metadata and fetch EXACT targets with every check python-tuf makes.

Built on `tuf.ngclient.Updater` (python-tuf 7, the maintained line) and tufup's repository format
(target names, patch custom metadata), without tufup itself: tufup's newest release still pins
tuf 4.0.x, and its package `__init__` pulls in its repository side. What this adds on top of
ngclient:

- exact pinning: the catalog is built from the TRUSTED top-level targets metadata (as tufup's
  `trusted_target_metas` does), every download goes through `get_targetinfo(<exact name>)`;
- patch chains (bsdiff on the uncompressed tar, tufup's format) for forward moves, with the result
  verified against the size and sha256 signed in the last patch's metadata;
- size caps (`Limits`): metadata caps go to ngclient's `UpdaterConfig`, a target longer than
  `max_target_bytes` is refused before download, and ngclient's fetcher aborts any download that
  sends more bytes than the signed length (endless data);
- a total deadline per download (`DeadlineFetcher`): a mirror that trickles bytes just under the
  per-read timeout cannot hold the agent's main loop (and the install lock) for hours;
- verified bytes, read once: a target is hashed against the trusted metadata as it is read into
  memory and only those bytes are used, so the cached file is not re-opened after its check;
- seeding of the trusted root from the copy baked into the exe, only when none exists: the root
  on disk is the trust anchor (ngclient's `bootstrap=None`), see `seed_trusted_root`.

Delegations are verified as the specification says (ngclient's pre-order search, each delegated
role checked against its delegator's keys and threshold) wherever a lookup walks them; our own
repository has none (docs/security-tuf.md).

Raises only `updater.errors` types: `VerificationError` for anything TUF rejects,
`DownloadFailedError` for transport trouble.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import importlib.resources
import io
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import urlparse

import requests
import urllib3
from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import Targets  # type: ignore[attr-defined]
from tuf.ngclient.config import UpdaterConfig
from tuf.ngclient.fetcher import FetcherInterface
from tuf.ngclient.updater import Updater

from updater.errors import DownloadFailedError, UpdateRefusedError, VerificationError
from updater.policy import (
    APP_NAME,
    Artifact,
    Patch,
    TargetInfo,
    TrustedCatalog,
    build_catalog,
    host_platform,
    target_apps,
)
from updater.state import write_bytes_atomic

_CHUNK = 1 << 16


@dataclass(frozen=True, slots=True)
class Limits:
    socket_timeout: int = 30  # seconds; connect and between bytes
    # slow retrieval: each download must end within base + its maximum length at the minimum
    # rate. Metadata is small and tight (a timestamp: about 60 s; targets.json at its 5 MB cap:
    # 160 s). Targets get a lower rate so a slow practice line can still move: a 12 MB archive,
    # which every downgrade needs, gets 60 s + 600 s (about 11 min), while ensure() holds the
    # agent's cycle (no SQS polling) for that long at worst.
    download_base_s: float = 60.0
    min_download_bytes_per_s: int = 50_000  # metadata
    min_target_bytes_per_s: int = 20_000  # archives and patches
    root_max_bytes: int = 512_000
    timestamp_max_bytes: int = 16_384
    snapshot_max_bytes: int = 2_000_000
    targets_max_bytes: int = 5_000_000
    max_target_bytes: int = 300_000_000  # refuse signed targets longer than this
    max_tar_bytes: int = 800_000_000  # cap on an uncompressed tar (gzip bomb)
    max_root_rotations: int = 32

    def download_deadline_s(self, max_length: int, *, target: bool = False) -> float:
        rate = self.min_target_bytes_per_s if target else self.min_download_bytes_per_s
        return self.download_base_s + max_length / rate


class DeadlineFetcher(FetcherInterface):
    """ngclient's fetcher (requests underneath, one session per scheme + host, like its
    RequestsFetcher) with a TOTAL deadline per download on top of the per-read timeout.

    Each read returns whatever has arrived (`read1`), so the deadline is checked at least every
    `socket_timeout` seconds however slowly the bytes come. Raises tuf's `SlowRetrievalError` (a
    `DownloadError`) when a download is not done by `Limits.download_deadline_s(max_length)`;
    a download under `targets_url` is allowed the lower target rate."""

    def __init__(
        self,
        limits: Limits,
        clock: Callable[[], float] = time.monotonic,
        targets_url: str | None = None,
    ) -> None:
        self._limits = limits
        self._clock = clock
        self._targets_url = targets_url  # downloads under it get the (lower) target rate
        self._sessions: dict[tuple[str, str], requests.Session] = {}
        self._budget_s = limits.download_base_s

    @contextlib.contextmanager
    def download_file(self, url: str, max_length: int) -> Iterator[IO[bytes]]:
        # every ngclient download (metadata and targets) comes through here with its cap
        target = bool(self._targets_url) and url.startswith(self._targets_url or "")
        self._budget_s = self._limits.download_deadline_s(max_length, target=target)
        with super().download_file(url, max_length) as file:
            yield file

    def _session(self, url: str) -> requests.Session:
        parsed = urlparse(url)
        if not parsed.scheme:
            raise tuf_errors.DownloadError(f"not a URL: {url}")
        key = (parsed.scheme, parsed.hostname or "")
        if key not in self._sessions:
            self._sessions[key] = requests.Session()
        return self._sessions[key]

    def _fetch(self, url: str) -> Iterator[bytes]:
        deadline = self._clock() + self._budget_s
        try:
            response = self._session(url).get(url, stream=True,
                                              timeout=self._limits.socket_timeout)
        except requests.exceptions.Timeout as e:
            raise tuf_errors.SlowRetrievalError("no answer within the read timeout") from e
        if response.status_code >= 400:
            response.close()
            raise tuf_errors.DownloadHTTPError(f"HTTP {response.status_code}",
                                               response.status_code)
        return self._chunks(response, deadline)

    def _chunks(self, response: requests.Response, deadline: float) -> Iterator[bytes]:
        try:
            while True:
                if self._clock() > deadline:
                    raise tuf_errors.SlowRetrievalError(
                        f"download not finished within {self._budget_s:.0f} s"
                    )
                try:
                    chunk = response.raw.read1(_CHUNK, decode_content=True)
                except (urllib3.exceptions.TimeoutError, TimeoutError) as e:
                    raise tuf_errors.SlowRetrievalError("no bytes within the read timeout") from e
                except (urllib3.exceptions.HTTPError, OSError) as e:
                    raise tuf_errors.DownloadError(f"connection failed: {e}") from e
                if not chunk:
                    return
                yield chunk
        finally:
            response.close()


class _LinklessUpdater(Updater):
    """ngclient's Updater, with `root.json` a plain copy of the trusted root version instead of
    the symbolic link into `root_history/` ngclient 7 makes. The data tree the service runs code
    from may hold no links at all (installer/tree_security.py refuses to install over one: a
    planted link could point anywhere), and agents on tuf 4 read the same folder after a
    downgrade. Same content, the same atomic write as every other file of ours."""

    def _update_root_symlink(self) -> None:
        metadata_dir = Path(self._dir)
        version = self._trusted_set.root.version
        trusted = metadata_dir / "root_history" / f"{version}.root.json"
        write_bytes_atomic(metadata_dir / "root.json", trusted.read_bytes())


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


def trusted_catalog(targets: Targets, app: str | Sequence[str] = APP_NAME) -> TrustedCatalog:
    """The catalog of a (verified) top-level targets role, as the agent sees it (`app`: the
    target names it reads, `updater.policy.target_apps`). The release side runs it too before
    signing, for every platform, so it never publishes what agents would refuse or ignore.

    Only the top-level role's own targets are releases (it is the role the offline targets key
    signs, and the one that carries the signed policy); a delegation it may hold is not read
    here. Every name in the catalog is then found by `get_targetinfo` in the top-level role
    itself, the first one its pre-order search visits, so the agent's lookups never walk a
    delegated role (docs/security-tuf.md)."""
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
        app: str | Sequence[str] | None = None,
    ) -> None:
        """`app`: the target names read (default: this machine's platform's,
        `updater.policy.target_apps`); an agent never looks at another platform's builds."""
        self._metadata_dir = metadata_dir
        self._target_dir = target_dir
        self._metadata_url = metadata_url
        self._targets_url = targets_url
        self._limits = limits or Limits()
        self._app = target_apps(host_platform()) if app is None else app
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
            # bootstrap=None: the trust anchor is the root on disk (seed_trusted_root put the
            # exe's there only when none existed). It was reached through the signed chain, so
            # it may be newer than the root baked into this exe (a downgrade runs an older
            # exe): starting again from the baked root would let the threshold of root keys
            # retired since then sign a different chain for an agent whose cached root
            # versions are gone (every agent updated from a tuf 4 build keeps root.json only).
            updater = _LinklessUpdater(
                metadata_dir=str(self._metadata_dir),
                metadata_base_url=self._metadata_url,
                target_dir=str(self._target_dir),
                target_base_url=self._targets_url,
                fetcher=DeadlineFetcher(limits, targets_url=self._targets_url),
                config=config,
                bootstrap=None,
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

    def read_verified(self, artifact: Artifact) -> bytes:
        """The bytes of a trusted target, hashed as they are read: the caller uses exactly the
        bytes that matched the signed length and sha256 (no re-opening the file afterwards)."""
        path = self.fetch(artifact)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise DownloadFailedError(f"{artifact.path} could not be read back: {e}") from e
        if len(data) != artifact.length or hashlib.sha256(data).hexdigest() != artifact.sha256:
            raise VerificationError(f"{artifact.path} changed on disk after its verification")
        return data

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
        return self._target_dir / f"{APP_NAME}-{version}.tar"

    def tar_from_archive(self, archive: bytes) -> bytes:
        """Decompress a verified .tar.gz, refusing output above the tar cap (gzip bomb)."""
        cap = self._limits.max_tar_bytes
        out = bytearray()
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(archive), mode="rb") as src:
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
            patch_bytes = self.read_verified(patch.artifact)
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
