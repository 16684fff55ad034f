"""The MSI -> config hand-over (installer/service.py), pure parts, on Linux.

The MSI's JScript action writes `KEY=value` records into the private data folder; `service
configure` merges them into config.toml. Threats: a licence key leaking into an error message,
an install that keeps a broken config, a settings file left lying around, an upgrade that
forgets the key.
"""

from __future__ import annotations

import stat
import tomllib
from pathlib import Path

import pytest

from agent.errors import ConfigError
from installer import service

KEY = "lic-5e1f0c2b-secret"


def _settings(**values: str) -> str:
    return service.SETTINGS_SEPARATOR.join(f"{k}={v}" for k, v in values.items())


def test_fresh_install_writes_key_backend_and_database() -> None:
    text = service.configured_text(
        Path("config.toml"),
        None,
        _settings(LICENCEKEY=KEY, BACKENDURL="https://agent.example.test", DBSERVER=r".\R4",
                  DBNAME="sys2000", DBCONNECTION="", SQSENDPOINTURL=""),
    )
    data = tomllib.loads(text)
    assert data["licence_key"] == KEY
    assert data["backend_url"] == "https://agent.example.test"
    assert data["database"] == {"server": r".\R4", "database": "sys2000"}
    assert "sqs_endpoint_url" not in data


def test_upgrade_without_key_keeps_the_existing_config() -> None:
    existing = (
        f'licence_key = "{KEY}"\nbackend_url = "https://a.example.test"\n\n'
        "[timing]\npoll_minutes = 5.0\n"
    )
    text = service.configured_text(
        Path("config.toml"), existing, _settings(LICENCEKEY="", BACKENDURL="https://b.example.test")
    )
    data = tomllib.loads(text)
    assert data["licence_key"] == KEY
    assert data["backend_url"] == "https://b.example.test"
    assert data["timing"] == {"poll_minutes": 5.0}


def test_connection_string_replaces_server_and_database() -> None:
    existing = (
        f'licence_key = "{KEY}"\nbackend_url = "https://a.example.test"\n'
        '[database]\nserver = "x"\n'
    )
    text = service.configured_text(
        Path("c.toml"), existing, _settings(DBCONNECTION='Driver={SQLite3};Database=C:\\r4 "x".db')
    )
    assert tomllib.loads(text)["database"] == {
        "connection_string": 'Driver={SQLite3};Database=C:\\r4 "x".db'
    }


def test_missing_licence_key_fails_the_install_naming_the_key() -> None:
    with pytest.raises(ConfigError, match="licence_key"):
        service.configured_text(Path("c.toml"), None, _settings(BACKENDURL="https://a.example.test"))


def test_bad_backend_url_error_does_not_leak_the_licence_key() -> None:
    with pytest.raises(ConfigError) as caught:
        service.configured_text(
            Path("c.toml"), None, _settings(LICENCEKEY=KEY, BACKENDURL="ftp://nope")
        )
    assert KEY not in str(caught.value)
    assert "backend_url" in str(caught.value)


def test_unknown_setting_is_refused_without_echoing_its_value() -> None:
    with pytest.raises(service.InstallSettingsError) as caught:
        service.parse_install_settings(f"PASSWORD={KEY}")
    assert KEY not in str(caught.value)


def test_control_characters_cannot_break_out_of_the_toml_string() -> None:
    nasty = 'k"\nbackend_url = "https://evil.example.test'
    text = service.render_toml({"licence_key": nasty, "backend_url": "https://a.example.test"})
    data = tomllib.loads(text)
    assert data == {"licence_key": nasty, "backend_url": "https://a.example.test"}


def test_configure_writes_private_file_and_deletes_the_hand_over(tmp_path: Path) -> None:
    (tmp_path / service.SETTINGS_FILE).write_bytes(
        _settings(LICENCEKEY=KEY, BACKENDURL="http://127.0.0.1:9").encode("utf-16")
    )
    service.configure(tmp_path)
    config = tmp_path / "config.toml"
    assert tomllib.loads(config.read_text())["licence_key"] == KEY
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert not (tmp_path / service.SETTINGS_FILE).exists()
    # no temp file left; a fresh install gets the production update URL
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml", service.UPDATE_URL_FILE]


def test_configure_failure_still_deletes_the_settings_file(tmp_path: Path) -> None:
    (tmp_path / service.SETTINGS_FILE).write_text(_settings(LICENCEKEY=KEY, BACKENDURL="ftp://x"))
    with pytest.raises(ConfigError):
        service.configure(tmp_path)
    assert not (tmp_path / service.SETTINGS_FILE).exists()
    assert not (tmp_path / "config.toml").exists()


def test_purge_refuses_a_folder_that_is_not_the_data_tree(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(service.InstallSettingsError):
        service.purge(tmp_path)
    assert (tmp_path / "keep.txt").exists()


def test_event_log_names_update_rollback_and_crash() -> None:
    recorder = service.EventRecorder()
    for kind, version, detail in [
        ("start", "1.0.0", "exe"),
        ("exit", "1.0.0", "exit 4 (UPDATED) after 3 s"),
        ("start", "1.1.0", "exe"),
        ("exit", "1.1.0", "exit 1 (CRASH) after 1 s"),
        ("rollback", "1.0.0", "version 1.1.0 failed 3 starts"),
        ("start", "1.0.0", "exe"),
    ]:
        recorder(type("E", (), {"kind": kind, "version": version, "detail": detail})())
    severities = [s for s, _ in recorder.entries]
    messages = [m for _, m in recorder.entries]
    assert "updated: now running version 1.1.0 (was 1.0.0)" in messages[2]
    assert severities[3] == service.ERROR and "CRASH" in messages[3]
    assert severities[4] == service.WARNING and "rolled back to version 1.0.0" in messages[4]
    assert "updated" in messages[5]  # going back down is a version change too


def test_update_url_goes_to_the_host_not_into_the_agent_config(tmp_path: Path) -> None:
    (tmp_path / service.SETTINGS_FILE).write_text(
        _settings(LICENCEKEY=KEY, BACKENDURL="https://a.example.test",
                  UPDATEURL="https://updates.example.test/r4agent")
    )
    service.configure(tmp_path)
    assert "updates" not in tomllib.loads((tmp_path / "config.toml").read_text())
    env = service.update_url_env(tmp_path, {"PATH": "x"})
    assert env == {"PATH": "x", "R4AGENT_UPDATE_URL": "https://updates.example.test/r4agent"}
    # an explicit environment wins (tests, support)
    assert service.update_url_env(tmp_path, {"R4AGENT_UPDATE_URL": "http://127.0.0.1:1"}) == {
        "R4AGENT_UPDATE_URL": "http://127.0.0.1:1"
    }


def test_update_url_that_is_not_http_fails_the_install(tmp_path: Path) -> None:
    (tmp_path / service.SETTINGS_FILE).write_text(
        _settings(LICENCEKEY=KEY, BACKENDURL="https://a.example.test", UPDATEURL="file:///x")
    )
    with pytest.raises(service.InstallSettingsError):
        service.configure(tmp_path)
    assert not (tmp_path / service.UPDATE_URL_FILE).exists()


def test_agent_that_cannot_be_signalled_does_not_crash_the_host_stop() -> None:
    calls: list[str] = []

    class NoConsoleChild:
        def wait(self, timeout_s: float) -> int | None:
            return None

        def request_stop(self) -> None:
            calls.append("stop")
            raise OSError(6, "The handle is invalid")  # GenerateConsoleCtrlEvent, no console

        def kill(self) -> None:
            calls.append("kill")

    child = service._StopSafeChild(NoConsoleChild())
    child.request_stop()  # must not raise: the host then waits out the grace and kills
    child.kill()
    assert calls == ["stop", "kill"]


def test_fresh_install_without_urls_gets_the_production_backend_and_update_repository(
    tmp_path: Path,
) -> None:
    (tmp_path / service.SETTINGS_FILE).write_text(_settings(LICENCEKEY=KEY, BACKENDURL="",
                                                            UPDATEURL=""))
    service.configure(tmp_path)
    config = tomllib.loads((tmp_path / "config.toml").read_text())
    assert config["backend_url"] == service.DEFAULT_BACKEND_URL
    assert service.update_url_env(tmp_path, {})["R4AGENT_UPDATE_URL"] == service.DEFAULT_UPDATE_URL


def test_upgrade_without_urls_keeps_a_staging_practice_off_production(tmp_path: Path) -> None:
    (tmp_path / service.SETTINGS_FILE).write_text(
        _settings(LICENCEKEY=KEY, BACKENDURL="https://staging.example.test",
                  UPDATEURL="https://updates.staging.example.test/r4agent")
    )
    service.configure(tmp_path)
    # the major upgrade: msiexec /i new.msi /qn, no properties at all
    (tmp_path / service.SETTINGS_FILE).write_text(
        _settings(LICENCEKEY="", BACKENDURL="", UPDATEURL="")
    )
    service.configure(tmp_path)
    config = tomllib.loads((tmp_path / "config.toml").read_text())
    assert config["licence_key"] == KEY
    assert config["backend_url"] == "https://staging.example.test"
    env = service.update_url_env(tmp_path, {})
    assert env["R4AGENT_UPDATE_URL"] == "https://updates.staging.example.test/r4agent"


def test_a_slow_stop_keeps_reporting_stop_pending_until_the_host_is_done() -> None:
    # one STOP_PENDING with a 45 s hint and no checkpoints, for a stop that may take over a
    # minute (grace, kill drain, wait): the SCM deemed the service hung ("did not respond")
    worst = service.host_stop_worst_case_s()
    assert worst >= service.host_policy().stop_grace_s + 20  # more than the old hint allowed
    now = [0.0]
    reports: list[tuple[float, int]] = []

    def wait(seconds: float) -> bool:  # the host takes its worst case to stop
        now[0] += seconds
        return now[0] >= worst

    service.report_stop_pending(lambda hint: reports.append((now[0], hint)), wait,
                                lambda: now[0], worst)

    every = service.STOP_PENDING_EVERY_S
    assert [t for t, _ in reports] == [every * i for i in range(len(reports))]  # a checkpoint
    assert reports[-1][0] < worst <= reports[-1][0] + every  # ... until the host is done
    for at, hint in reports:
        assert at + hint / 1000 >= worst  # each hint covers what is left of the worst case
        assert hint >= 2 * every * 1000  # and outlasts the next report


def test_preshutdown_timeout_covers_the_hosts_worst_case_stop_so_a_reboot_cannot_cut_it() -> None:
    assert service.preshutdown_timeout_ms() >= service.host_policy().stop_worst_case_s * 1000


SQL_PASSWORD = "Sql pass;w0rd}=x"


def test_sql_login_from_the_msi_goes_into_the_private_config(tmp_path: Path) -> None:
    (tmp_path / service.SETTINGS_FILE).write_bytes(
        _settings(LICENCEKEY=KEY, BACKENDURL="https://a.example.test", DBSERVER=r".\R4",
                  SQLUSER="r4reader", SQLPASSWORD=SQL_PASSWORD).encode("utf-16")
    )
    service.configure(tmp_path)
    config = tmp_path / "config.toml"
    assert tomllib.loads(config.read_text())["database"] == {
        "server": r".\R4", "user": "r4reader", "password": SQL_PASSWORD
    }
    assert stat.S_IMODE(config.stat().st_mode) == 0o600  # on Windows: the tree's DACL
    assert not (tmp_path / service.SETTINGS_FILE).exists()


def test_a_new_sql_password_replaces_a_password_file_and_an_upgrade_keeps_the_login() -> None:
    existing = (
        f'licence_key = "{KEY}"\nbackend_url = "https://a.example.test"\n\n'
        '[database]\nuser = "r4reader"\npassword_file = "sql.password"\n'
    )
    text = service.configured_text(Path("c.toml"), existing, _settings(SQLPASSWORD=SQL_PASSWORD))
    assert tomllib.loads(text)["database"] == {"user": "r4reader", "password": SQL_PASSWORD}
    kept = service.configured_text(Path("c.toml"), text, _settings(SQLUSER="", SQLPASSWORD=""))
    assert tomllib.loads(kept)["database"] == {"user": "r4reader", "password": SQL_PASSWORD}


def test_a_sql_user_without_a_password_fails_the_install_without_echoing_secrets() -> None:
    with pytest.raises(ConfigError) as caught:
        service.configured_text(
            Path("c.toml"), None,
            _settings(LICENCEKEY=KEY, BACKENDURL="https://a.example.test", SQLUSER="r4reader"),
        )
    assert "database.user" in str(caught.value) and KEY not in str(caught.value)
