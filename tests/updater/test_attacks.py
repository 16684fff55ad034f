"""Attacks on the update path. Each one must be rejected with the running version untouched:
the `current` pointer still names 1.0.0, no folder for the attacker's version, no staging left."""

from __future__ import annotations

import io
import json
import tarfile
import threading
import time
from collections.abc import Callable
from http.server import SimpleHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from tuf.api.exceptions import SlowRetrievalError
from tuf.api.metadata import Metadata
from tuf.api.serialization.json import JSONSerializer

from tests.updater.support import (
    HOST_APP,
    HttpRepo,
    RepoSim,
    add_delegation,
    gate,
    install_from_repo,
    make_bundle,
    sign_with,
)
from updater.gate import GateAction, GateDecision
from updater.layout import Layout
from updater.repo import keys
from updater.repo.repository import ReleasePolicy, deterministic_tar_gz
from updater.state import read_pointer
from updater.tuf_client import DeadlineFetcher, Limits


def _assert_untouched(layout: Layout, decision: GateDecision, running: str = "1.0.0") -> None:
    assert decision.action is GateAction.CARRY_ON, decision.reason
    pointer = read_pointer(layout.current_file)
    assert pointer is not None and pointer.version == running
    assert layout.installed_versions() == [running]
    assert layout.leftovers() == []
    assert layout.exe_path(running).is_file()


def _full_route(layout: Layout) -> None:
    """Drop the cached base tar so the update must use the full archive."""
    (layout.targets_dir / "r4agent-1.0.0.tar").unlink()


def _tamper(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same length, one byte different
    path.write_bytes(bytes(data))


def _ensure(layout: Layout, sim: RepoSim, http_repo: HttpRepo, wanted: str,
            limits: Limits | None = None) -> GateDecision:
    return gate(layout, "1.0.0", http_repo.url, sim, limits).ensure(wanted)


def test_tampered_archive_is_rejected(layout: Layout, sim: RepoSim, http_repo: HttpRepo) -> None:
    _full_route(layout)
    _tamper(sim.repo_dir / "targets" / f"{HOST_APP}-1.1.0.tar.gz")
    decision = _ensure(layout, sim, http_repo, "1.1.0")
    assert "LengthOrHashMismatch" in decision.reason
    _assert_untouched(layout, decision)


def test_tampered_patch_is_rejected_and_the_signed_full_archive_used_instead(
    layout: Layout, sim: RepoSim, http_repo: HttpRepo
) -> None:
    _tamper(sim.repo_dir / "targets" / f"{HOST_APP}-1.1.0.patch")
    decision = _ensure(layout, sim, http_repo, "1.1.0")
    assert decision.action is GateAction.RESTART_INTO_NEW_VERSION
    assert http_repo.fetched(f"{HOST_APP}-1.1.0.patch")
    assert http_repo.fetched(f"{HOST_APP}-1.1.0.tar.gz")
    assert b"1.1.0" in layout.exe_path("1.1.0").read_bytes()


def test_tampered_patch_and_archive_are_both_rejected(
    layout: Layout, sim: RepoSim, http_repo: HttpRepo
) -> None:
    _tamper(sim.repo_dir / "targets" / f"{HOST_APP}-1.1.0.patch")
    _tamper(sim.repo_dir / "targets" / f"{HOST_APP}-1.1.0.tar.gz")
    _assert_untouched(layout, _ensure(layout, sim, http_repo, "1.1.0"))


def test_patch_result_not_matching_its_signed_hash_is_rejected(
    layout: Layout, sim: RepoSim, http_repo: HttpRepo
) -> None:
    # a genuine patch applied to a damaged local base gives the wrong tar: the signed size/hash
    # of the result catches it; with the archive tampered too, nothing is left to install
    _tamper(layout.targets_dir / "r4agent-1.0.0.tar")
    _tamper(sim.repo_dir / "targets" / f"{HOST_APP}-1.1.0.tar.gz")
    decision = _ensure(layout, sim, http_repo, "1.1.0")
    assert http_repo.fetched(f"{HOST_APP}-1.1.0.patch")
    _assert_untouched(layout, decision)


def test_damaged_local_patch_base_falls_back_to_the_full_archive(
    layout: Layout, sim: RepoSim, http_repo: HttpRepo
) -> None:
    _tamper(layout.targets_dir / "r4agent-1.0.0.tar")
    decision = _ensure(layout, sim, http_repo, "1.1.0")
    assert decision.action is GateAction.RESTART_INTO_NEW_VERSION
    assert http_repo.fetched(f"{HOST_APP}-1.1.0.tar.gz")


def test_target_not_listed_is_refused(layout: Layout, sim: RepoSim, http_repo: HttpRepo) -> None:
    # the file is on the server, but unsigned: not in targets metadata
    (sim.repo_dir / "targets" / f"{HOST_APP}-1.3.0.tar.gz").write_bytes(
        (sim.repo_dir / "targets" / f"{HOST_APP}-1.2.0.tar.gz").read_bytes()
    )
    decision = _ensure(layout, sim, http_repo, "1.3.0")
    assert "not listed" in decision.reason
    assert not http_repo.fetched(f"{HOST_APP}-1.3.0.tar.gz")
    _assert_untouched(layout, decision)


def test_revoked_target_is_refused(layout: Layout, sim: RepoSim, http_repo: HttpRepo) -> None:
    sim.repo.revoke("1.1.0")
    decision = _ensure(layout, sim, http_repo, "1.1.0")
    assert "revoked" in decision.reason
    _assert_untouched(layout, decision)


def test_below_floor_downgrade_is_refused(
    tmp_path: Path, sim: RepoSim, http_repo: HttpRepo
) -> None:
    layout = Layout(tmp_path / "pd12")
    install_from_repo(sim, layout, "1.2.0")
    sim.repo.raise_floor("1.1.0")
    decision = gate(layout, "1.2.0", http_repo.url, sim).ensure("1.0.0")
    assert "below the signed minimum version 1.1.0" in decision.reason
    _assert_untouched(layout, decision, running="1.2.0")
    # the floor itself is still allowed
    assert gate(layout, "1.2.0", http_repo.url, sim).ensure("1.1.0").action is (
        GateAction.RESTART_INTO_NEW_VERSION
    )


def test_new_root_signed_under_threshold_is_rejected(
    layout: Layout, sim: RepoSim, http_repo: HttpRepo
) -> None:
    meta = sim.repo_dir / "metadata"
    root = Metadata.from_file(str(meta / "root.json"))
    root.signed.version += 1
    root.signed.roles["targets"].keyids = list(root.signed.roles["timestamp"].keyids)
    sign_with(root, sim.root / "keys" / "root1")  # 1 of the 2 needed
    root.to_file(str(meta / "2.root.json"), JSONSerializer(compact=False))
    decision = _ensure(layout, sim, http_repo, "1.1.0")
    assert "UnsignedMetadataError" in decision.reason
    _assert_untouched(layout, decision)


def test_targets_signed_by_an_unknown_key_is_rejected_even_with_online_keys(
    layout: Layout, sim: RepoSim, http_repo: HttpRepo
) -> None:
    # attacker holds the online snapshot/timestamp keys, not the offline targets key
    evil = sim.root / "evil"
    keys.generate_key_pair(evil)
    sim.add("1.3.0")  # the "evil" build gets listed...
    md = sim.repo.load("targets")
    sign_with(md, evil)  # ...but signed with the attacker's key
    md.to_file(str(sim.repo_dir / "metadata" / "targets.json"), JSONSerializer(compact=False))
    sim.repo.resign_snapshot()  # with the genuine (stolen) online keys
    decision = _ensure(layout, sim, http_repo, "1.3.0")
    assert "UnsignedMetadataError" in decision.reason
    _assert_untouched(layout, decision)


def test_a_delegated_role_cannot_list_a_release_the_top_level_targets_do_not(
    layout: Layout, sim: RepoSim, http_repo: HttpRepo, tmp_path: Path
) -> None:
    # a genuine delegation (made with the real offline targets key) to a role whose key signs
    # a build 1.3.0: releases are what the top-level targets list (the signed policy lives
    # there), so the agent refuses 1.3.0 without ever reading the delegated role
    evil = deterministic_tar_gz(make_bundle(tmp_path, "1.3.0"))
    add_delegation(sim, "builds", [f"{HOST_APP}-*"], {f"{HOST_APP}-1.3.0.tar.gz": evil})

    decision = _ensure(layout, sim, http_repo, "1.3.0")

    assert "not listed" in decision.reason
    assert not http_repo.fetched("builds.json")
    assert not any("/targets/" in r for r in http_repo.requests)
    _assert_untouched(layout, decision)


def test_a_delegated_role_cannot_replace_a_release_the_top_level_targets_list(
    layout: Layout, sim: RepoSim, http_repo: HttpRepo, tmp_path: Path
) -> None:
    # the delegated role lists other bytes under the name of a real release: the lookup finds
    # the top-level entry first (the specification's pre-order search), so the genuine build
    # installs, its hash checked against the top-level targets; delegations are no longer
    # refused outright
    _full_route(layout)
    other = deterministic_tar_gz(make_bundle(tmp_path, "1.1.0", run_exit=1))
    add_delegation(sim, "builds", [f"{HOST_APP}-*"], {f"{HOST_APP}-1.1.0.tar.gz": other},
                   write_files=False)

    decision = _ensure(layout, sim, http_repo, "1.1.0")

    assert decision.action is GateAction.RESTART_INTO_NEW_VERSION, decision.reason
    assert not http_repo.fetched("builds.json")
    assert '"run_exit": 1' not in layout.exe_path("1.1.0").read_text()  # the genuine build


@pytest.mark.parametrize("role", ["timestamp", "snapshot", "targets", "root"])
def test_expired_metadata_is_rejected(
    layout: Layout, sim: RepoSim, http_repo: HttpRepo, role: str
) -> None:
    from datetime import UTC, datetime

    sim.now.value = datetime(2020, 1, 1, tzinfo=UTC)  # expiries computed from 2020 are past
    if role == "timestamp":
        sim.repo.resign_timestamp()
    elif role == "snapshot":
        sim.repo.resign_snapshot()
        sim.now.value = None
        sim.repo.resign_timestamp()
    elif role == "targets":
        sim.repo.revoke("1.2.0")
        sim.now.value = None
        sim.repo.resign_snapshot()
    else:
        sim.repo.set_threshold("root", 2)  # a new root version, expired
        sim.now.value = None
        sim.repo.resign_snapshot()
    decision = _ensure(layout, sim, http_repo, "1.1.0")
    assert "ExpiredMetadataError" in decision.reason
    _assert_untouched(layout, decision)


def test_replayed_older_metadata_is_rejected(
    layout: Layout, sim: RepoSim, http_repo: HttpRepo
) -> None:
    old = sim.snapshot_files()  # 1.1.0 allowed here
    sim.repo.revoke("1.1.0")
    first = _ensure(layout, sim, http_repo, "1.1.0")  # the client has now seen the new state
    assert "revoked" in first.reason
    sim.restore_metadata(old, ["targets.json", "snapshot.json", "timestamp.json"])
    decision = _ensure(layout, sim, http_repo, "1.1.0")
    assert "BadVersionNumberError" in decision.reason
    _assert_untouched(layout, decision)


def test_mix_and_match_snapshot_is_rejected(
    layout: Layout, sim: RepoSim, http_repo: HttpRepo
) -> None:
    old = sim.snapshot_files()
    sim.repo.revoke("1.1.0")
    sim.restore_metadata(old, ["targets.json"])  # current snapshot/timestamp, older targets
    decision = _ensure(layout, sim, http_repo, "1.1.0")
    # the snapshot pins the targets file's length and hash: the old one does not match
    assert "LengthMismatch" in decision.reason or "BadVersionNumber" in decision.reason
    _assert_untouched(layout, decision)


def _endless(handler: SimpleHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "application/octet-stream")
    handler.end_headers()
    chunk = b"\0" * 65536
    try:
        for _ in range(100_000):  # ~6.5 GB: "endless" as far as the client is concerned
            handler.wfile.write(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass


def test_endless_archive_download_is_cut_at_the_signed_length(
    layout: Layout, sim: RepoSim, http_repo: HttpRepo
) -> None:
    _full_route(layout)
    http_repo.overrides[f"/targets/{HOST_APP}-1.1.0.tar.gz"] = _endless
    decision = _ensure(layout, sim, http_repo, "1.1.0")
    assert "DownloadLengthMismatchError" in decision.reason
    _assert_untouched(layout, decision)


def test_endless_timestamp_is_cut_at_the_metadata_cap(
    layout: Layout, sim: RepoSim, http_repo: HttpRepo
) -> None:
    http_repo.overrides["/metadata/timestamp.json"] = _endless
    decision = _ensure(layout, sim, http_repo, "1.1.0")
    assert "download failed" in decision.reason
    _assert_untouched(layout, decision)


def _trickle(length: int | None, stop: threading.Event) -> Callable[[Any], None]:
    """A hostile mirror: one byte every 20 ms, well inside any per-read timeout, forever."""

    def handler(h: SimpleHTTPRequestHandler) -> None:
        h.send_response(200)
        if length is not None:
            h.send_header("Content-Length", str(length))
        h.end_headers()
        try:
            while not stop.wait(0.02):
                h.wfile.write(b"\0")
                h.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass

    return handler


@pytest.mark.parametrize("path", ["/metadata/timestamp.json", f"/targets/{HOST_APP}-1.1.0.tar.gz"])
def test_trickled_download_is_cut_at_its_total_deadline(
    layout: Layout, sim: RepoSim, http_repo: HttpRepo, path: str
) -> None:
    _full_route(layout)
    served = sim.repo_dir / path.lstrip("/")
    # the archive keeps its true length (the length cap never trips); metadata has none
    length = served.stat().st_size if path.startswith("/targets/") else None
    stop = threading.Event()
    http_repo.overrides[path] = _trickle(length, stop)
    limits = Limits(socket_timeout=5, download_base_s=1.0, min_download_bytes_per_s=10**12,
                    min_target_bytes_per_s=10**12)
    result: list[GateDecision] = []
    worker = threading.Thread(
        target=lambda: result.append(_ensure(layout, sim, http_repo, "1.1.0", limits)),
        daemon=True,
    )
    started = time.monotonic()
    worker.start()
    try:
        worker.join(60)
        assert not worker.is_alive(), "the trickled download was never cut"
    finally:
        stop.set()
    assert time.monotonic() - started < 20
    assert "SlowRetrievalError" in result[0].reason
    _assert_untouched(layout, result[0])


class SimulatedLine:
    """A practice's slow line: the clock the fetcher reads is the bytes served so far divided
    by the line's rate (real bytes over loopback, simulated seconds)."""

    def __init__(self, bytes_per_s: float) -> None:
        self.bytes_per_s = bytes_per_s
        self.served = 0

    def __call__(self) -> float:
        return self.served / self.bytes_per_s

    def handler(self, length: int) -> Callable[[Any], None]:
        def serve(h: SimpleHTTPRequestHandler) -> None:
            h.send_response(200)
            h.send_header("Content-Length", str(length))
            h.end_headers()
            chunk = b"\0" * 65536
            try:
                for start in range(0, length, len(chunk)):
                    part = chunk[: length - start]
                    h.wfile.write(part)
                    self.served += len(part)
            except (BrokenPipeError, ConnectionResetError):
                pass

        return serve


@pytest.mark.parametrize(("path", "length", "gets_through"), [
    (f"/targets/{HOST_APP}-9.9.9.tar.gz", 12_000_000, True),  # a full archive, as a downgrade needs
    ("/metadata/targets.json", 5_000_000, False),  # metadata at its cap stays tight
])
def test_a_slow_line_still_downloads_a_full_archive_while_metadata_stays_tight(
    http_repo: HttpRepo, path: str, length: int, gets_through: bool
) -> None:
    # 25 kB/s sustained: at the old 50 kB/s floor a 12 MB archive always failed (60 s + 240 s
    # for 480 s of transfer), so such a practice could never downgrade
    line = SimulatedLine(25_000)
    http_repo.overrides[path] = line.handler(length)
    fetcher = DeadlineFetcher(Limits(), clock=line, targets_url=f"{http_repo.url}/targets/")
    url = f"{http_repo.url}{path}"
    if gets_through:
        assert len(fetcher.download_bytes(url, length)) == length
    else:
        with pytest.raises(SlowRetrievalError):
            fetcher.download_bytes(url, length)


def test_signed_target_above_the_size_cap_is_not_downloaded(
    layout: Layout, sim: RepoSim, http_repo: HttpRepo
) -> None:
    _full_route(layout)
    decision = _ensure(layout, sim, http_repo, "1.1.0", Limits(max_target_bytes=1000))
    assert "byte cap" in decision.reason
    assert not http_repo.fetched(f"{HOST_APP}-1.1.0.tar.gz")
    _assert_untouched(layout, decision)


@pytest.mark.parametrize("wanted", ["../1.0", "1.0/../x", "1.0", "1.1.0/../../etc", "latest"])
def test_bad_version_strings_are_refused_before_any_request(
    layout: Layout, sim: RepoSim, http_repo: HttpRepo, wanted: str
) -> None:
    decision = _ensure(layout, sim, http_repo, wanted)
    assert "invalid version" in decision.reason
    assert http_repo.requests == []
    _assert_untouched(layout, decision)


def _evil_archive(tmp: Path, kind: str) -> Path:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        exe = b"#!/bin/sh\necho r4agent 1.3.0\n"
        info = tarfile.TarInfo("r4agent")
        info.size, info.mode = len(exe), 0o755
        tar.addfile(info, io.BytesIO(exe))
        evil = tarfile.TarInfo({"dotdot": "../../escaped", "absolute": "/tmp/r4-escaped",
                                "nested-dotdot": "sub/../../escaped"}.get(kind, "evil"))
        if kind == "symlink":
            evil.type, evil.linkname = tarfile.SYMTYPE, "/etc/passwd"
        elif kind == "hardlink":
            evil.type, evil.linkname = tarfile.LNKTYPE, "r4agent"
        elif kind == "device":
            evil.type = tarfile.CHRTYPE
        else:
            evil.size = 4
        tar.addfile(evil, io.BytesIO(b"evil") if evil.isfile() else None)
    import gzip

    path = tmp / f"evil-{kind}.tar.gz"
    path.write_bytes(gzip.compress(raw.getvalue()))
    return path


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "nested-dotdot", "symlink", "hardlink",
                                  "device"])
def test_signed_archive_with_traversal_or_links_is_refused(
    tmp_path: Path, layout: Layout, sim: RepoSim, http_repo: HttpRepo, kind: str
) -> None:
    sim.repo.add_archive(_evil_archive(tmp_path, kind), "1.3.0", ReleasePolicy())
    decision = _ensure(layout, sim, http_repo, "1.3.0")
    assert "archive member" in decision.reason
    _assert_untouched(layout, decision)
    assert not (tmp_path / "escaped").exists()
    assert not Path("/tmp/r4-escaped").exists()
    assert json.loads(layout.install_state_file.read_text())["state"] == "failed"
