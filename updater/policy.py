"""Which version to run, decided from TRUSTED metadata only. Pure: no I/O, no clock.

Version rule: a version is canonical `X.Y.Z` — three decimal numbers without leading zeros
(`0` alone is fine), nothing else. `1.0` is NOT accepted as a spelling of `1.0.0`: the backend's
hint must name the exact release, so there is exactly one string per release and no two
spellings can map to different targets or folders. Anything else (`../1.0`, `1.0/../x`, `1.0.0a1`,
` 1.0.0`, `01.0.0`) is refused before it reaches a path or a URL.

Target names follow tufup's repository format: `<app>-<X.Y.Z>.tar.gz` (full archive) and
`<app>-<X.Y.Z>.patch` (bsdiff of the uncompressed tar of the previous archive to this one).
`<app>` carries the platform: `r4agent_win_amd64`, `r4agent_linux_amd64` (`target_app`), and an
agent reads only its own platform's names (`target_apps`). The plain `r4agent` names are the
ones every agent built before platform names reads; all of those are Windows agents, so the
release side lists Windows builds under them as well and never anything else, and a Windows
agent reads them where its platform name has no entry for a version (releases made before).
The platform is joined with `_`, not `-`: those older agents read `r4agent-win-amd64-1.1.0` as
`r4agent` with the malformed version `win-amd64-1.1.0` — an archive whose policy they cannot
read, which makes them refuse every downgrade — while `r4agent_win_amd64-1.1.0` is another
app's name to them, ignored.
Each archive carries signed policy in its custom metadata (`custom.user`):
`{"revoked": bool, "floor": "X.Y.Z", "channel": "stable"}`. The effective floor is the highest
`floor` over all trusted archives; nothing below it is installed, and neither is anything revoked
or unlisted. An archive whose policy is missing or malformed is refused (fail closed), and while
any archive's policy is unreadable no downgrade is made at all: its floor is unknown.
"""

from __future__ import annotations

import re
import sysconfig
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

APP_NAME = "r4agent"
WINDOWS = "win-amd64"
LINUX = "linux-amd64"
PLATFORMS = (WINDOWS, LINUX)
# the platform of every target named plain `r4agent-…` (see the module doc)
LEGACY_PLATFORM = WINDOWS
# Above this patch-chain / archive size ratio the full archive is cheaper (tufup uses 0.8).
DEFAULT_MAX_PATCH_RATIO = 0.8

_VERSION_RE = re.compile(r"(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})")
_TARGET_RE = re.compile(
    r"(?P<app>[a-z0-9][a-z0-9_]*)-(?P<version>[^/]+?)(?P<suffix>\.tar\.gz|\.patch)"
)


class BadVersionError(ValueError):
    """A version string that is not canonical X.Y.Z."""


@dataclass(frozen=True, slots=True, order=True)
class Version:
    major: int
    minor: int
    patch: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


def parse_version(text: str) -> Version:
    """Parse canonical `X.Y.Z`; raise BadVersionError for anything else (see module doc)."""
    if not isinstance(text, str):
        raise BadVersionError("version must be a string")
    match = _VERSION_RE.fullmatch(text)
    if match is None:
        shown = text if len(text) <= 40 and text.isprintable() else repr(text[:40])
        raise BadVersionError(f"not a canonical X.Y.Z version: {shown!r}")
    return Version(int(match[1]), int(match[2]), int(match[3]))


def target_app(platform: str) -> str:
    """The `<app>` part of a platform's target names: `r4agent_win_amd64`."""
    return f"{APP_NAME}_{platform.replace('-', '_')}"


def target_apps(platform: str) -> tuple[str, ...]:
    """The `<app>` names an agent on `platform` reads, its own first."""
    own = target_app(platform)
    return (own, APP_NAME) if platform == LEGACY_PLATFORM else (own,)


def host_platform(build: str | None = None) -> str:
    """The platform this interpreter (the exe, when frozen) was built for, from `build` (default
    `sysconfig.get_platform()`: "win-amd64", "linux-x86_64"; static, no WMI query at start):
    `win-amd64`, `linux-amd64`, or a tag no release carries (so nothing is read)."""
    name, _, arch = (build or sysconfig.get_platform()).partition("-")
    arch = "amd64" if arch in {"amd64", "x86_64"} else arch
    return f"{name}-{arch}"


def parse_target_name(path: str) -> tuple[str, Version, bool] | None:
    """(`<app>`, version, is_archive) of a well-formed target name, else None."""
    match = _TARGET_RE.fullmatch(path)
    if match is None:
        return None
    try:
        version = parse_version(match["version"])
    except BadVersionError:
        return None
    return match["app"], version, match["suffix"] == ".tar.gz"


@dataclass(frozen=True, slots=True)
class Artifact:
    """One trusted target file: its repository path, length and hashes (from targets metadata)."""

    path: str
    length: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Release:
    version: Version
    archive: Artifact
    revoked: bool
    floor: Version | None
    channel: str


@dataclass(frozen=True, slots=True)
class Patch:
    version: Version  # the archive version this patch produces
    artifact: Artifact
    tar_size: int  # size and sha256 of the uncompressed tar the patch produces
    tar_sha256: str


@dataclass(frozen=True, slots=True)
class TrustedCatalog:
    """What TUF-verified targets metadata says; built only from trusted metadata."""

    releases: Mapping[Version, Release]
    patches: Mapping[Version, Patch]
    problems: tuple[str, ...] = ()  # targets ignored because their name or metadata was malformed
    # the archives among them: their floor is unknown, so downgrades are refused (fail closed)
    archive_problems: tuple[str, ...] = ()

    @property
    def effective_floor(self) -> Version | None:
        floors = [r.floor for r in self.releases.values() if r.floor is not None]
        return max(floors) if floors else None

    def installable(self) -> list[Release]:
        """Releases an agent would install: listed, not revoked, not below the effective floor."""
        floor = self.effective_floor
        return [
            r for r in self.releases.values()
            if not r.revoked and (floor is None or r.version >= floor)
        ]


@dataclass(frozen=True, slots=True)
class TargetInfo:
    """Plain input to `build_catalog`: one trusted target's name, length, hashes, custom."""

    path: str
    length: int
    hashes: Mapping[str, str]
    custom: Any


def build_catalog(
    targets: Sequence[TargetInfo], app: str | Sequence[str] = APP_NAME
) -> TrustedCatalog:
    """The catalog of the targets named `<app>-…`; with several apps (a Windows agent: its own,
    then the plain `r4agent` names), each version comes from the first app that lists it, and
    so does that version's patch."""
    apps = (app,) if isinstance(app, str) else tuple(app)
    parts = [_catalog_of(targets, one) for one in apps]
    releases: dict[Version, Release] = {}
    patches: dict[Version, Patch] = {}
    for part in reversed(parts):  # the first app wins
        for version, release in part.releases.items():
            releases[version] = release
            patches.pop(version, None)
            if version in part.patches:
                patches[version] = part.patches[version]
    return TrustedCatalog(
        releases, patches,
        tuple(p for part in parts for p in part.problems),
        tuple(p for part in parts for p in part.archive_problems),
    )


def _catalog_of(targets: Sequence[TargetInfo], app: str) -> TrustedCatalog:
    releases: dict[Version, Release] = {}
    patches: dict[Version, Patch] = {}
    problems: list[str] = []
    archive_problems: list[str] = []
    for target in targets:
        match = _TARGET_RE.fullmatch(target.path)
        if match is None or match["app"] != app:
            continue  # not ours (or not a bundle); never installable
        is_archive = match["suffix"] == ".tar.gz"
        try:
            entry = _read_target(target, match["version"], is_archive)
        except ValueError as e:
            problems.append(f"{target.path}: {e}")
            if is_archive:
                archive_problems.append(problems[-1])
            continue
        if isinstance(entry, Release):
            releases[entry.version] = entry
        else:
            patches[entry.version] = entry
    return TrustedCatalog(releases, patches, tuple(problems), tuple(archive_problems))


def _read_target(target: TargetInfo, version_text: str, is_archive: bool) -> Release | Patch:
    try:
        version = parse_version(version_text)
    except BadVersionError as e:
        raise ValueError("bad version in target name") from e
    sha256 = target.hashes.get("sha256")
    if not isinstance(sha256, str):
        raise ValueError("no sha256 hash")
    artifact = Artifact(target.path, target.length, sha256)
    custom = target.custom if isinstance(target.custom, Mapping) else {}
    if is_archive:
        return _release(version, artifact, custom.get("user"))
    internal = custom.get("tufup")
    if not isinstance(internal, Mapping):
        raise ValueError("patch without size/hash of its result")
    size, tar_hash = internal.get("tar_size"), internal.get("tar_hash")
    if (not isinstance(size, int) or not isinstance(tar_hash, str)
            or internal.get("tar_hash_algorithm") != "sha256"):
        raise ValueError("patch without size/hash of its result")
    return Patch(version, artifact, size, tar_hash)


def _release(version: Version, archive: Artifact, user: Any) -> Release:
    if not isinstance(user, Mapping):
        raise ValueError("no signed policy (custom.user) on archive")
    revoked = user.get("revoked")
    if not isinstance(revoked, bool):
        raise ValueError("signed policy lacks a boolean 'revoked'")
    floor_text = user.get("floor")
    floor = None
    if floor_text is not None:
        try:
            floor = parse_version(floor_text)
        except BadVersionError as e:
            raise ValueError(f"signed policy has a bad floor: {e}") from e
    channel = user.get("channel", "stable")
    if not isinstance(channel, str):
        raise ValueError("signed policy has a non-string channel")
    return Release(version, archive, revoked, floor, channel)


# ---- decisions -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NoOp:
    reason: str


@dataclass(frozen=True, slots=True)
class Refuse:
    reason: str


@dataclass(frozen=True, slots=True)
class FullRoute:
    archive: Artifact


@dataclass(frozen=True, slots=True)
class PatchRoute:
    patches: tuple[Patch, ...]  # in application order
    fallback: Artifact  # the full archive, used if any patch step fails


@dataclass(frozen=True, slots=True)
class Install:
    release: Release
    route: FullRoute | PatchRoute
    reason: str


Decision = NoOp | Refuse | Install


def check_hint(running: str, wanted: str) -> NoOp | Refuse | None:
    """The decision that needs no metadata: bad strings refused, same version a no-op."""
    try:
        parse_version(wanted)
    except BadVersionError as e:
        return Refuse(f"backend asked for an invalid version: {e}")
    if wanted == running:
        return NoOp("already running the wanted version")
    return None


def decide(
    running: str,
    wanted: str,
    catalog: TrustedCatalog,
    *,
    running_tar_cached: bool = False,
    quarantined: Mapping[str, str] | None = None,
    max_patch_ratio: float = DEFAULT_MAX_PATCH_RATIO,
) -> Decision:
    """Decide what to do about the backend's hint `wanted` given TRUSTED metadata.

    `running_tar_cached`: the verified uncompressed tar of the running version is in the local
    cache (needed as the base of a patch chain). `quarantined`: version -> archive sha256 of
    builds the host rolled back here (they never confirmed); the same build is not installed
    again while quarantined (the edge passes only entries still in force).
    """
    early = check_hint(running, wanted)
    if early is not None:
        return early
    want = parse_version(wanted)
    release = catalog.releases.get(want)
    if release is None:
        return Refuse(f"version {wanted} is not listed in the signed targets metadata")
    if release.revoked:
        return Refuse(f"version {wanted} is revoked by signed policy")
    if catalog.archive_problems and not _is_forward(running, want):
        # an unreadable archive policy may hold a higher floor than the readable ones: the
        # floor is unknown, so fail closed for downgrades (moving up never goes below it)
        return Refuse(f"signed policy of {len(catalog.archive_problems)} archive(s) is "
                      f"unreadable, so the signed floor is unknown: refusing to go down to "
                      f"{wanted}")
    floor = catalog.effective_floor
    if floor is not None and want < floor:
        return Refuse(f"version {wanted} is below the signed minimum version {floor}")
    if quarantined and quarantined.get(wanted) == release.archive.sha256:
        return Refuse(f"version {wanted} was rolled back here before confirming (quarantined); "
                      "not reinstalling that build")
    route = choose_route(running, release, catalog, running_tar_cached, max_patch_ratio)
    direction = "upgrade" if _is_forward(running, want) else "downgrade"
    how = "patch" if isinstance(route, PatchRoute) else "full archive"
    return Install(release, route, f"{direction} {running} -> {wanted} via {how}")


def _is_forward(running: str, want: Version) -> bool:
    try:
        return parse_version(running) < want
    except BadVersionError:
        return False


def choose_route(
    running: str,
    release: Release,
    catalog: TrustedCatalog,
    running_tar_cached: bool,
    max_patch_ratio: float = DEFAULT_MAX_PATCH_RATIO,
) -> FullRoute | PatchRoute:
    """Patches for forward moves when the chain is complete and smaller; else the full archive.

    A patch for archive V is made against the archive listed just before V, so the chain from the
    running version R to W needs the running version's tar and a patch for every archive in
    (R, W]. Downgrades always use the full archive.
    """
    full = FullRoute(release.archive)
    try:
        base = parse_version(running)
    except BadVersionError:
        return full
    if not running_tar_cached or base >= release.version or base not in catalog.releases:
        return full
    steps = sorted(v for v in catalog.releases if base < v <= release.version)
    chain: list[Patch] = []
    for step in steps:
        patch = catalog.patches.get(step)
        if patch is None:
            return full
        chain.append(patch)
    total = sum(p.artifact.length for p in chain)
    if not chain or total > max_patch_ratio * release.archive.length:
        return full
    return PatchRoute(tuple(chain), release.archive)
