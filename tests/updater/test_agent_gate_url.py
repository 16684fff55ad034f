"""Where the installed gate finds the update repository: the host's environment wins over the
agent's config, so an MSI-set UPDATEURL cannot be shadowed by a stale config line."""

from __future__ import annotations

from updater.agent_gate import ENV_UPDATE_URL, configured_update_url


def test_host_environment_overrides_the_config_url() -> None:
    env = {ENV_UPDATE_URL: "https://from-msi.example/"}
    assert configured_update_url(env, "https://from-config.example/") == "https://from-msi.example/"


def test_config_url_is_used_when_the_host_sets_none() -> None:
    assert configured_update_url({}, "https://from-config.example/") == "https://from-config.example/"


def test_no_url_anywhere_means_no_update_source() -> None:
    assert configured_update_url({ENV_UPDATE_URL: ""}, None) is None
