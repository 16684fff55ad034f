"""Publish a repository folder to a local folder or an S3 bucket, in a client-safe order.

Order: target files first, then targets.json, snapshot.json, timestamp.json, and the root
versions last — a client reading mid-publish sees either the old timestamp (everything it names
still there) or the new one (everything it names already uploaded), and a key rotation's
re-signed roles, which also carry the retired key's signature, are there before the root that
retires it (updater/repo/repository.py `rotate_key`). Only changed files are written;
`dry_run` lists what would change and writes nothing. Nothing is deleted remotely (an agent may be
mid-download of an old target).

What is published is readable by anyone who can reach it: a folder gets files 0644 and folders
0755 (a web server running as another user must be able to serve them); S3 objects get their
`Content-Type` and a `Cache-Control` by kind — the metadata files that change in place
(timestamp, snapshot, targets, root.json) `no-cache`, so a CDN revalidates them every time and a
revoke reaches agents at once; versioned roots and targets, which never change once published,
a year and `immutable`. So publishing refuses to replace a target or a versioned root that is
already there with other bytes: a cache holding the old ones would serve agents bytes that no
longer match the signed hashes.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from updater.state import copy_file_atomic

FILE_MODE = 0o644
DIR_MODE = 0o755
MUTABLE_METADATA = frozenset({"metadata/timestamp.json", "metadata/snapshot.json",
                              "metadata/targets.json", "metadata/root.json"})
SHORT_LIVED = "no-cache"
IMMUTABLE = "public, max-age=31536000, immutable"


class PublishRefused(ValueError):
    """Publishing would replace an immutable object (a target, a versioned root)."""


def is_immutable(key: str) -> bool:
    return key not in MUTABLE_METADATA


def headers_for(key: str) -> dict[str, str]:
    """Content-Type and Cache-Control of the object `key`."""
    if key.endswith(".json"):
        content_type = "application/json"
    elif key.endswith(".tar.gz"):
        content_type = "application/gzip"
    else:
        content_type = "application/octet-stream"
    return {"ContentType": content_type,
            "CacheControl": IMMUTABLE if is_immutable(key) else SHORT_LIVED}

_METADATA_ORDER = ("targets.json", "snapshot.json", "timestamp.json")


@dataclass(frozen=True, slots=True)
class Change:
    key: str  # "metadata/timestamp.json", "targets/r4agent-1.1.0.tar.gz"
    reason: str  # "new" or "changed"


def ordered_files(repo_dir: Path) -> list[str]:
    targets = sorted(
        f"targets/{p.name}" for p in (repo_dir / "targets").iterdir() if p.is_file()
    )
    meta_dir = repo_dir / "metadata"
    roots = sorted(
        (p.name for p in meta_dir.iterdir() if p.name.endswith(".root.json")),
        key=lambda n: int(n.split(".", 1)[0]),
    )
    metadata = [f"metadata/{n}" for n in [*_METADATA_ORDER, *roots, "root.json"]]
    return targets + [m for m in metadata if (repo_dir / m).is_file()]


class Destination(Protocol):
    def digest(self, key: str) -> str | None:
        """sha256 of the object at `key`, or None if absent."""
        ...

    def put(self, key: str, source: Path) -> None: ...


class FolderDestination:
    def __init__(self, root: Path) -> None:
        self._root = root

    def digest(self, key: str) -> str | None:
        path = self._root / key
        return _sha256(path) if path.is_file() else None

    def put(self, key: str, source: Path) -> None:
        path = self._root / key
        # folders made here get 0755 whatever the umask; an existing root keeps its mode
        for folder in [Path("."), *reversed(path.relative_to(self._root).parents[:-1])]:
            where = self._root / folder
            if not where.is_dir():
                where.mkdir(parents=folder == Path("."))
                os.chmod(where, DIR_MODE)
        copy_file_atomic(source, path, mode=FILE_MODE)


class S3Destination:
    """Objects under `s3://bucket/prefix/`; the sha256 is kept in object metadata."""

    def __init__(self, bucket: str, prefix: str, client: Any) -> None:
        self._bucket = bucket
        self._prefix = prefix.strip("/")
        self._client = client

    def _key(self, key: str) -> str:
        return f"{self._prefix}/{key}" if self._prefix else key

    def digest(self, key: str) -> str | None:
        from botocore.exceptions import ClientError

        try:
            head = self._client.head_object(Bucket=self._bucket, Key=self._key(key))
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return None
            raise
        value = head.get("Metadata", {}).get("sha256")
        return value if isinstance(value, str) else ""

    def put(self, key: str, source: Path) -> None:
        extra: dict[str, Any] = {**headers_for(key), "Metadata": {"sha256": _sha256(source)}}
        self._client.upload_file(str(source), self._bucket, self._key(key), ExtraArgs=extra)


def destination_for(url: str, s3_client_factory: Callable[[], Any] | None = None) -> Destination:
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        if s3_client_factory is None:
            import boto3

            def s3_client_factory() -> Any:
                return boto3.client("s3")

        return S3Destination(parsed.netloc, parsed.path, s3_client_factory())
    if parsed.scheme in {"", "file"}:
        return FolderDestination(Path(parsed.path if parsed.scheme else url))
    raise ValueError(f"unsupported destination {url!r}: use a folder or s3://bucket/prefix")


def plan(repo_dir: Path, dest: Destination) -> list[Change]:
    """What publishing would upload, in order. Raises PublishRefused if that would replace an
    immutable object."""
    changes = []
    for key in ordered_files(repo_dir):
        remote = dest.digest(key)
        if remote is None:
            changes.append(Change(key, "new"))
        elif remote != _sha256(repo_dir / key):
            if is_immutable(key):
                raise PublishRefused(
                    f"{key} is already published with other bytes and published files of "
                    "that kind never change (caches keep them): release a new version "
                    "instead; nothing was uploaded")
            changes.append(Change(key, "changed"))
    return changes


def publish(repo_dir: Path, dest: Destination, *, dry_run: bool = False) -> list[Change]:
    changes = plan(repo_dir, dest)
    if not dry_run:
        for change in changes:
            dest.put(change.key, repo_dir / change.key)
    return changes


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
