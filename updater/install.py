"""One install attempt, as the explicit state machine of `updater.state`, persisted at each step.

    checked       the hint passed policy against freshly refreshed TUF metadata
    downloaded    the new tar exists, verified (TUF hashes, or the signed hash of a patch result)
    staged        extracted safely into versions/.staging-<random>
    smoke_tested  the staged exe passed its self-test (updater/staging.py `smoke_test`)
    switched      staging renamed to versions/<v>; the `current` pointer flipped (one os.replace)

Any failure before `switched` ends in `failed`, removes the staging folder and leaves the pointer
alone. A process killed anywhere leaves the pointer on the old or the new version (both complete);
the next attempt removes leftovers and starts again from `checked`.

Only the version the service runs (the pointer's) installs or prunes: a manually started other
version (an older exe run by hand) only reports, so it cannot move the service off its version
or delete the folder the service runs from.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

from agent.clock import Clock, SystemClock
from updater import policy
from updater.errors import UpdateError, UpdateRefusedError
from updater.layout import InstallLockedError, Layout, install_lock
from updater.staging import (
    StagingFileSystem,
    StagingLimits,
    extract_tar,
    move_into_place,
    new_staging_dir,
    remove_staging,
    smoke_test,
)
from updater.state import (
    CorruptStateError,
    CurrentPointer,
    InstallRecord,
    InstallState,
    read_pointer,
    read_quarantine_or_empty,
    write_pointer,
    write_record,
)
from updater.tuf_client import TufClient

log = logging.getLogger(__name__)

# Called after each state is persisted (logging, Event Log, fault-injection tests).
Observer = Callable[[InstallRecord], None]


@dataclass(frozen=True, slots=True)
class Outcome:
    switched: bool
    reason: str
    refused: bool = False  # True: policy/verification said no (not worth retrying soon)


class Installer:
    def __init__(
        self,
        layout: Layout,
        client: TufClient,
        *,
        fs: StagingFileSystem | None = None,
        limits: StagingLimits | None = None,
        observer: Observer | None = None,
        max_patch_ratio: float = policy.DEFAULT_MAX_PATCH_RATIO,
        clock: Clock | None = None,
    ) -> None:
        self._layout = layout
        self._client = client
        self._fs = fs
        self._limits = limits or StagingLimits()
        self._observer = observer
        self._max_patch_ratio = max_patch_ratio
        self._clock = clock or SystemClock()

    def _persist(self, record: InstallRecord) -> InstallRecord:
        write_record(self._layout.install_state_file, record)
        log.info("update %s: %s %s", record.to_version, record.state.value, record.detail)
        if self._observer is not None:
            self._observer(record)
        return record

    def install(self, running: str, wanted: str) -> Outcome:
        """Make `wanted` current if trusted metadata and policy allow it. Never raises
        `UpdateError`; the outcome says what happened and why."""
        early = policy.check_hint(running, wanted)
        if isinstance(early, policy.Refuse):
            return Outcome(False, early.reason, refused=True)
        if early is not None:
            return Outcome(False, early.reason)
        try:
            with install_lock(self._layout):
                return self._install_locked(running, wanted)
        except InstallLockedError as e:
            return Outcome(False, str(e))

    def _install_locked(self, running: str, wanted: str) -> Outcome:
        layout = self._layout
        layout.ensure_dirs()
        layout.remove_leftovers()
        try:
            pointer = read_pointer(layout.current_file)
        except CorruptStateError as e:
            return Outcome(False, f"not updating: {e} (the service host rebuilds it)")
        if pointer is not None and pointer.version == wanted:
            return Outcome(True, f"{wanted} is already switched in; restart into it")
        if pointer is None or pointer.version != running:
            serves = pointer.version if pointer else "nothing"
            log.warning("running %s but the service runs %s: reporting only", running, serves)
            return Outcome(False, f"this process runs {running} but the service runs {serves}: "
                                  "report only, not updating")
        try:
            catalog = self._client.refresh()
            quarantine = read_quarantine_or_empty(self._layout.quarantine_file)
            decision = policy.decide(
                running,
                wanted,
                catalog,
                running_tar_cached=self._client.tar_cache_path(running).is_file(),
                quarantined=quarantine.in_force(self._clock.now(), pointer.quarantined),
                max_patch_ratio=self._max_patch_ratio,
            )
        except UpdateError as e:
            return Outcome(False, str(e), refused=isinstance(e, UpdateRefusedError))
        if isinstance(decision, policy.Refuse):
            return Outcome(False, decision.reason, refused=True)
        if isinstance(decision, policy.NoOp):
            return Outcome(False, decision.reason)
        return self._run(running, wanted, decision, pointer)

    def _run(
        self,
        running: str,
        wanted: str,
        decision: policy.Install,
        pointer: CurrentPointer,
    ) -> Outcome:
        route_name = "patch" if isinstance(decision.route, policy.PatchRoute) else "full"
        record = self._persist(
            InstallRecord(
                attempt=os.urandom(6).hex(),
                from_version=running,
                to_version=wanted,
                state=InstallState.CHECKED,
                route=route_name,
                detail=decision.reason,
                archive_sha256=decision.release.archive.sha256,
            )
        )
        staging = None
        try:
            tar = self._obtain_tar(running, decision)
            self._client.store_tar(wanted, tar)
            record = self._persist(record.advance(InstallState.DOWNLOADED))
            staging = new_staging_dir(self._layout)
            extract_tar(tar, staging, fs=self._fs, limits=self._limits)
            del tar
            record = self._persist(record.advance(InstallState.STAGED))
            smoke_test(staging / self._layout.exe_name, wanted, self._limits.smoke_timeout_s)
            record = self._persist(record.advance(InstallState.SMOKE_TESTED))
            move_into_place(staging, self._layout, wanted, running)
            staging = None
            write_pointer(self._layout.current_file, pointer.switched_to(wanted, decision.reason))
            record = self._persist(record.advance(InstallState.SWITCHED, decision.reason))
        except (UpdateError, OSError) as e:
            if staging is not None:
                remove_staging(staging)
            reason = str(e) if isinstance(e, UpdateError) else f"local file error: {e}"
            self._persist(record.advance(InstallState.FAILED, reason))
            return Outcome(False, reason, refused=isinstance(e, UpdateRefusedError))
        self._tidy({wanted, running})
        return Outcome(True, decision.reason)

    def _obtain_tar(self, running: str, decision: policy.Install) -> bytes:
        route = decision.route
        if isinstance(route, policy.PatchRoute):
            try:
                return self._client.tar_from_patches(running, route.patches)
            except UpdateError as e:
                log.warning("patch route failed (%s); using the full archive", e)
            return self._client.tar_from_archive(self._client.read_verified(route.fallback))
        return self._client.tar_from_archive(self._client.read_verified(route.archive))

    def _tidy(self, keep: set[str]) -> None:
        try:
            self._layout.prune(keep)
            self._client.prune_cache(keep)
        except OSError as e:  # tidying is best effort; the switch already happened
            log.warning("could not prune old versions: %s", e)
