"""Doctor's update check: is the update repository reachable, and does its metadata verify
against the root this agent trusts? Through updater.tuf_client's public entry points only
(`seed_trusted_root`, `TufClient.refresh`, `bundled_root`), in a throwaway folder: the
installed agent's trusted metadata is not touched, and no target is downloaded.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from agent.config import AgentConfig
from updater.agent_gate import configured_update_url, repository_urls
from updater.layout import Layout
from updater.policy import TrustedCatalog
from updater.tuf_client import Limits, TufClient, bundled_root, seed_trusted_root


def update_url(config: AgentConfig, env: Mapping[str, str]) -> str | None:
    """The URL the installed agent updates from: as the service host hands it over (the MSI's
    UPDATEURL, kept in `<data_dir>/update-url`), else R4AGENT_UPDATE_URL, else `update_url`."""
    from installer.service import update_url_env

    return configured_update_url(update_url_env(config.data_dir, env), config.update_url)


@dataclass(frozen=True, slots=True)
class TrustedRoot:
    content: bytes | None
    source: str  # where it came from, for the check's words


def trusted_root(config: AgentConfig) -> TrustedRoot:
    """The installed agent's trusted root (`metadata/root.json`, reached through the signed
    root chain, so possibly newer than the exe's), else the one baked into this build."""
    on_disk = Layout(config.data_dir).metadata_dir / "root.json"
    try:
        return TrustedRoot(on_disk.read_bytes(), f"the trusted root in {on_disk}")
    except OSError:
        return TrustedRoot(bundled_root(), "the root baked into this build")


def verify_repository(url: str, root: bytes, *, timeout_s: float) -> TrustedCatalog:
    """Refresh TUF metadata from `url` starting from `root`, in a temporary folder.
    Raises updater.errors.DownloadFailedError (transport) or VerificationError (rejected)."""
    seconds = max(1, round(timeout_s))
    limits = Limits(socket_timeout=seconds, download_base_s=float(seconds))
    metadata_url, targets_url = repository_urls(url)
    with tempfile.TemporaryDirectory(prefix="r4agent-doctor-") as folder:
        metadata = Path(folder) / "metadata"
        seed_trusted_root(metadata, root)
        client = TufClient(metadata, Path(folder) / "targets", metadata_url, targets_url,
                           limits=limits)  # fmt: skip
        return client.refresh()
