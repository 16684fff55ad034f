"""The VersionGate the agent uses when it runs from an installed layout.

The composition root calls `from_environment(__version__)`: it returns an `InstalledGate` when this
process runs from `<base>/versions/<version>/` (the service host sets `R4AGENT_INSTALL_BASE` for
its child; a frozen exe can also tell from its own path), else None — then use `ReportOnlyGate`.

The update repository URL comes from `R4AGENT_UPDATE_URL` (the service host sets it from the
MSI's UPDATEURL), else the `update_url` the agent's validated config holds (passed in by the
composition root); metadata is read from `<url>/metadata/` and targets from `<url>/targets/`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from updater.gate import GateAction, GateDecision, VersionGate
from updater.install import Installer, Observer
from updater.layout import ENV_INSTALL_BASE, InstallLockedError, Layout, install_lock
from updater.policy import host_platform, target_apps
from updater.state import (
    CorruptStateError,
    CurrentPointer,
    IllegalTransitionError,
    InstallState,
    PointerState,
    read_last_confirmed,
    read_pointer,
    read_quarantine_or_empty,
    read_record,
    read_reported,
    write_last_confirmed,
    write_pointer,
    write_record,
    write_reported,
)
from updater.tuf_client import Limits, TufClient, bundled_root, seed_trusted_root

log = logging.getLogger(__name__)

ENV_UPDATE_URL = "R4AGENT_UPDATE_URL"


def repository_urls(update_url: str) -> tuple[str, str]:
    base = update_url.rstrip("/")
    return f"{base}/metadata/", f"{base}/targets/"


class InstalledGate:
    def __init__(
        self,
        layout: Layout,
        running: str,
        update_url: str | None,
        *,
        limits: Limits | None = None,
        observer: Observer | None = None,
        root_seed: bytes | None = None,
        platform: str | None = None,
    ) -> None:
        """`platform`: whose builds to read (default this machine's, updater/policy.py)."""
        self._layout = layout
        self._running = running
        self._update_url = update_url
        self._limits = limits
        self._observer = observer
        self._root_seed = root_seed if root_seed is not None else bundled_root()
        self._apps = target_apps(platform or host_platform())

    def _installer(self, update_url: str) -> Installer:
        metadata_url, targets_url = repository_urls(update_url)
        self._layout.ensure_dirs()
        seed_trusted_root(self._layout.metadata_dir, self._root_seed)
        client = TufClient(
            self._layout.metadata_dir,
            self._layout.targets_dir,
            metadata_url,
            targets_url,
            limits=self._limits,
            app=self._apps,
        )
        return Installer(self._layout, client, observer=self._observer)

    def ensure(self, wanted: str) -> GateDecision:
        running = self._running
        if wanted == running:
            return GateDecision(GateAction.CARRY_ON, running, wanted, "already current")
        if not self._update_url:
            return GateDecision(GateAction.CARRY_ON, running, wanted, "no update URL configured")
        try:
            outcome = self._installer(self._update_url).install(running, wanted)
        except Exception as e:  # an updater bug must never take the running agent down
            log.exception("updater failed unexpectedly")
            return GateDecision(
                GateAction.CARRY_ON, running, wanted, f"updater error: {type(e).__name__}"
            )
        action = GateAction.RESTART_INTO_NEW_VERSION if outcome.switched else GateAction.CARRY_ON
        return GateDecision(action, running, wanted, outcome.reason)

    def confirm_running(self) -> str | None:
        """Mark the running version as good (the host stops counting its failed starts),
        remember it as the last confirmed version (it outlives a damaged pointer) and prune.
        Only when this process is the version the service runs; pruning is skipped while an
        install holds the install lock. Returns, once, a notice of
        rollbacks the host made here that no run has reported yet (for the error service)."""
        layout = self._layout
        try:
            pointer = read_pointer(layout.current_file)
        except (OSError, CorruptStateError) as e:
            log.warning("could not confirm version %s: %s", self._running, e)
            return None
        if pointer is None or pointer.version != self._running:
            return None
        try:
            if pointer.awaiting_confirmation or pointer.crashes_before_confirm or (
                pointer.unconfirmed_starts
            ):
                write_pointer(layout.current_file, pointer.confirmed())
                log.info("version %s confirmed", self._running)
            if read_last_confirmed(layout.last_confirmed_file) != self._running:
                write_last_confirmed(layout.last_confirmed_file, self._running)
            record = read_record(layout.install_state_file)
            if (
                record is not None
                and record.to_version == self._running
                and record.state is InstallState.SWITCHED
            ):
                write_record(layout.install_state_file, record.advance(InstallState.CONFIRMED))
            keep = {self._running} | ({pointer.previous} if pointer.previous else set())
            self._prune(keep)
        except (OSError, CorruptStateError, IllegalTransitionError) as e:
            log.warning("could not confirm version %s: %s", self._running, e)
        return self._take_rollback_notice(pointer)

    def _prune(self, keep: set[str]) -> None:
        """Prune only while no install runs: an install (e.g. by a manually started agent of
        the same version) moves its new folder into `versions/` before it flips the pointer,
        and pruning then would delete the folder it is about to switch to."""
        try:
            with install_lock(self._layout):
                self._layout.prune(keep)
        except InstallLockedError:
            log.info("an install is in progress: pruning left for the next start")

    def _take_rollback_notice(self, pointer: CurrentPointer) -> str | None:
        """Rollbacks recorded in the quarantine (or, by an older host, only in the pointer) that
        were not reported yet; marks them reported first, so each is reported at most once."""
        layout = self._layout
        quarantine = read_quarantine_or_empty(layout.quarantine_file)
        pending = {f"{v}@{e.at.isoformat()}": e.reason for v, e in quarantine.entries.items()}
        if pointer.state is PointerState.ROLLED_BACK and pointer.reason not in pending.values():
            digest = hashlib.sha256(pointer.reason.encode()).hexdigest()[:16]
            pending[f"pointer@{digest}"] = pointer.reason
        try:
            reported = read_reported(layout.reported_rollbacks_file)
        except CorruptStateError:
            reported = set()
        new = [reason for key, reason in sorted(pending.items()) if key not in reported]
        if not new:
            return None
        try:
            write_reported(layout.reported_rollbacks_file, set(pending))  # bounded: still held
        except OSError as e:
            log.warning("could not record the rollback report: %s", e)
            return None  # better silent than reported on every start
        return "the service host rolled back an update on this machine: " + "; ".join(new)


def installed_base(running: str, env: Mapping[str, str]) -> Path | None:
    explicit = env.get(ENV_INSTALL_BASE)
    if explicit:
        base = Path(explicit)
        return base if (base / "current").is_file() else None
    if getattr(sys, "frozen", False):
        exe_dir = Path(sys.executable).resolve().parent
        if exe_dir.name == running and exe_dir.parent.name == "versions":
            base = exe_dir.parent.parent
            return base if (base / "current").is_file() else None
    return None


def configured_update_url(env: Mapping[str, str], config_url: str | None) -> str | None:
    return env.get(ENV_UPDATE_URL) or config_url or None


def from_environment(
    running: str, env: Mapping[str, str] | None = None, *, config_url: str | None = None
) -> VersionGate | None:
    env = os.environ if env is None else env
    base = installed_base(running, env)
    if base is None:
        return None
    layout = Layout(base)
    return InstalledGate(layout, running, configured_update_url(env, config_url))
