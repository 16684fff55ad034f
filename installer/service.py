"""`r4agent service ACTION`: the Windows service shell around the host (`updater.host.Host`).

The same exe has two roles: the agent (`run`, `doctor`, ...) and, under this subcommand, the
service host installed by the MSI in Program Files. The host logic is pure Python in
`updater/host.py`; this module only adapts it to Windows:

    service run        what the SCM starts (ImagePath `"...\\r4agent.exe" service run`):
                       pywin32 ServiceFramework -> Host.run(stop_event), Event Log entries
    service debug      the same host in the foreground (Ctrl-C stops it), any platform
    service prepare    MSI custom action: create the ProgramData tree (Flynotes\\R4Agent), owner
                       Administrators, protected DACL for SYSTEM + Administrators; refuses a
                       tree someone else planted (installer/tree_security.py)
    service purge      MSI custom action (uninstall with REMOVEDATA=1): remove the data tree
    service stop       MSI custom action (uninstall): stop the service and wait until its
                       processes have exited, so the exe and its runtime folder can go
    service configure  MSI custom action: merge the install settings the MSI's JScript action
                       wrote into that private folder into config.toml (validated by
                       agent.config), delete them, and set the SCM recovery actions

Secrets never travel in argv: the MSI hands LICENCEKEY, SQLPASSWORD & co. to a deferred JScript
action (CustomActionData), which writes them into the already-private data folder; `configure`
reads and deletes that file. See docs/windows.md.

Windows-only imports (pywin32) are inside the functions that need them, so this module imports
and its pure parts are tested on Linux; the Windows parts are tested under Wine.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import sys
import threading
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent._version import __version__
from agent.config import default_data_dir, parse_config
from agent.errors import ConfigError
from installer.tree_security import (
    UntrustedTreeError,
    default_security,
    require_trusted_chain,
    secure_data_tree,
)

SERVICE_NAME = "R4Agent"
DISPLAY_NAME = "Flynotes R4 agent"
DESCRIPTION = "Keeps Flynotes in sync with this practice's Carestream R4 database."
SETTINGS_FILE = "install-settings.txt"
SETTINGS_SEPARATOR = "|~|"  # between KEY=value records in the file the MSI's JScript writes
STOP_GRACE_S = 30.0  # in-flight work gets this long after a stop request, then the agent dies
# The Event Log source's message table: a copy of pywin32's servicemanager.pyd installed by the
# MSI next to the exe (the copy inside the onefile's runtime folder is gone when the process is).
MESSAGE_DLL = "r4agent-messages.dll"
# `service stop` (uninstall): how long the service and its processes get to go away.
UNINSTALL_STOP_TIMEOUT_S = STOP_GRACE_S + 30.0
# While stopping, STOP_PENDING is reported this often, each time with a new checkpoint (pywin32
# counts them) and a wait hint covering what is left of the host's worst case.
STOP_PENDING_EVERY_S = 5.0
VENDOR_FOLDER = "Flynotes"
# SCM recovery: restart after 1 min, 1 min, 5 min; failure count resets after a day.
RECOVERY_DELAYS_MS = (60_000, 60_000, 300_000)
RECOVERY_RESET_S = 86_400

# MSI property -> dotted config key. Empty properties keep what the config already holds.
SETTING_KEYS: Mapping[str, str] = {
    "LICENCEKEY": "licence_key",
    "BACKENDURL": "backend_url",
    "DBCONNECTION": "database.connection_string",
    "DBSERVER": "database.server",
    "DBNAME": "database.database",
    "SQLUSER": "database.user",  # a SQL login instead of Windows authentication
    "SQLPASSWORD": "database.password",
    "SQSENDPOINTURL": "sqs_endpoint_url",
}
# Not agent config: where the service host points the updater (R4AGENT_UPDATE_URL for the agent).
UPDATE_URL_SETTING = "UPDATEURL"
UPDATE_URL_FILE = "update-url"
# Production URLs, used only where neither the install nor an existing config names one: the
# MSI properties have no defaults of their own, or an upgrade run without them would put a
# staging practice back on production.
DEFAULT_BACKEND_URL = "https://agent-api.flynotes.co.uk"
DEFAULT_UPDATE_URL = "https://updates.flynotes.co.uk/r4agent"

log = logging.getLogger(__name__)


class InstallSettingsError(ValueError):
    """The settings handed over by the MSI are malformed (never quotes a value)."""


# ---- pure: install settings -> config.toml -----------------------------------------------------


def parse_install_settings(text: str) -> dict[str, str]:
    """`KEY=value` records (separated by SETTINGS_SEPARATOR or newlines) -> {KEY: value}."""
    settings: dict[str, str] = {}
    for record in text.replace("\r\n", "\n").replace("\n", SETTINGS_SEPARATOR).split(
        SETTINGS_SEPARATOR
    ):
        record = record.strip()
        if not record:
            continue
        key, sep, value = record.partition("=")
        if not sep or (key not in SETTING_KEYS and key != UPDATE_URL_SETTING):
            raise InstallSettingsError(f"unexpected install setting {key[:40]!r}")
        settings[key] = value.strip()
    return settings


def merge_settings(existing: Mapping[str, Any], settings: Mapping[str, str]) -> dict[str, Any]:
    """The config with every non-empty install setting applied (others kept as they were)."""
    merged: dict[str, Any] = {
        k: dict(v) if isinstance(v, Mapping) else v for k, v in existing.items()
    }
    for prop, value in settings.items():
        if not value or prop not in SETTING_KEYS:
            continue
        dotted = SETTING_KEYS[prop]
        table, _, key = dotted.rpartition(".")
        target = merged.setdefault(table, {}) if table else merged
        if table == "database" and key == "connection_string":
            target.pop("server", None)
            target.pop("database", None)
        if table == "database" and key in ("server", "database"):
            target.pop("connection_string", None)
        if key in ("licence_key", "password"):  # the new value replaces a file holding one
            target.pop(f"{key}_file", None)
        target[key] = value
    merged.setdefault("backend_url", DEFAULT_BACKEND_URL)
    return merged


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InstallSettingsError("config numbers must be finite")
        return repr(value)
    if isinstance(value, str):
        escaped = []
        for ch in value:
            if ch in ('"', "\\"):
                escaped.append("\\" + ch)
            elif ord(ch) < 0x20 or ord(ch) == 0x7F:
                escaped.append(f"\\u{ord(ch):04x}")
            else:
                escaped.append(ch)
        return '"' + "".join(escaped) + '"'
    raise InstallSettingsError(f"unsupported config value type {type(value).__name__}")


def render_toml(config: Mapping[str, Any]) -> str:
    """TOML text for the agent's flat config shape (top-level scalars, then one-level tables)."""
    lines = ["# Written by the R4 agent installer; see docs/config.md."]
    for key, value in config.items():
        if not isinstance(value, Mapping):
            lines.append(f"{key} = {_toml_value(value)}")
    for key, value in config.items():
        if isinstance(value, Mapping):
            lines.append("")
            lines.append(f"[{key}]")
            for sub_key, sub_value in value.items():
                if isinstance(sub_value, Mapping):
                    raise InstallSettingsError("config tables nest one level only")
                lines.append(f"{sub_key} = {_toml_value(sub_value)}")
    return "\n".join(lines) + "\n"


def configured_text(config_path: Path, existing_text: str | None, settings_text: str) -> str:
    """New config.toml text; raises ConfigError/InstallSettingsError (no secret in messages)."""
    try:
        existing = tomllib.loads(existing_text) if existing_text else {}
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{config_path}: existing file is not valid TOML: {e}") from None
    text = render_toml(merge_settings(existing, parse_install_settings(settings_text)))
    parse_config(config_path, text)  # the agent's own validation: fail the install, not the run
    return text


# ---- host events -> Event Log ------------------------------------------------------------------


INFO, WARNING, ERROR = "info", "warning", "error"


def event_log_entry(
    kind: str, version: str, detail: str, last_started: str | None
) -> tuple[str, str]:
    """(severity, message) for one host event; an update is a start of a different version."""
    if kind == "start":
        if last_started is not None and last_started != version:
            return INFO, f"R4 agent updated: now running version {version} (was {last_started})"
        return INFO, f"R4 agent version {version} started"
    if kind == "exit":
        crashed = "CRASH" in detail or "killed" in detail or "could not start" in detail
        return (ERROR if crashed else INFO), f"R4 agent version {version} ended: {detail}"
    if kind == "rollback":
        return WARNING, f"R4 agent rolled back to version {version}: {detail}"
    if kind == "backoff":
        return WARNING, f"R4 agent version {version}: {detail}"
    if kind == "stop":
        return INFO, f"R4 agent version {version} {detail}"
    return ERROR, f"R4 agent host: {detail}"


class EventRecorder:
    """Turns host events into Event Log entries (Windows) and log lines (everywhere)."""

    def __init__(self, write: Any | None = None) -> None:
        self._write = write
        self._last_started: str | None = None
        self.entries: list[tuple[str, str]] = []

    def __call__(self, event: Any) -> None:
        severity, message = event_log_entry(
            event.kind, event.version, event.detail, self._last_started
        )
        if event.kind == "start":
            self._last_started = event.version
        self.entries.append((severity, message))
        level = {INFO: logging.INFO, WARNING: logging.WARNING}.get(severity, logging.ERROR)
        log.log(level, "%s", message)
        if self._write is not None:
            try:
                self._write(severity, message)
            except Exception:
                log.exception("could not write the Event Log entry")


# ---- pure: stop-pending reports ------------------------------------------------------------------


def stop_wait_hint_ms(elapsed_s: float, worst_case_s: float,
                      every_s: float = STOP_PENDING_EVERY_S) -> int:
    """The wait hint of a STOP_PENDING report `elapsed_s` into a stop: what is left of the
    worst case, and never less than two report intervals, so the next checkpoint always comes
    before the SCM's patience runs out (a stop that overruns it is deemed hung)."""
    return int(max(worst_case_s - elapsed_s, 2 * every_s) * 1000)


def report_stop_pending(
    report: Callable[[int], None],
    wait: Callable[[float], bool],
    clock: Callable[[], float],
    worst_case_s: float,
    every_s: float = STOP_PENDING_EVERY_S,
) -> None:
    """Report STOP_PENDING (`report(wait_hint_ms)`) now and every `every_s` until `wait(every_s)`
    says the host is done (True)."""
    started = clock()
    report(stop_wait_hint_ms(0.0, worst_case_s, every_s))
    while not wait(every_s):
        report(stop_wait_hint_ms(clock() - started, worst_case_s, every_s))


# ---- edges: data folder, config file, host -----------------------------------------------------


def data_dir() -> Path:
    """The data tree. On Windows ProgramData comes from the shell's known folder (what the MSI
    calls CommonAppDataFolder), not the environment: under Wine a service's environment says
    C:\\users\\Public, and the MSI, the host and the agent must agree on one tree."""
    if sys.platform == "win32":
        os.environ["PROGRAMDATA"] = str(_known_program_data())  # case-insensitive on Windows
    return default_data_dir(os.environ)


def _known_program_data() -> Path:
    import ctypes

    csidl_common_appdata = 0x23
    buffer = ctypes.create_unicode_buffer(1024)
    windll = ctypes.windll  # type: ignore[attr-defined, unused-ignore]
    result = windll.shell32.SHGetFolderPathW(None, csidl_common_appdata, None, 0, buffer)
    if result != 0 or not buffer.value:
        return Path(os.environ.get("PROGRAMDATA") or r"C:\ProgramData")
    return Path(buffer.value)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    if sys.platform != "win32":
        os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def data_tree_chain(base: Path) -> list[Path]:
    """The folders `prepare` owns: `Flynotes` and `R4Agent` on Windows (anyone may create
    folders in ProgramData, so the vendor folder must be ours too), else the base alone."""
    if sys.platform == "win32" and base.parent.name == VENDOR_FOLDER:
        return [base.parent, base]
    return [base]


def trusted_root(base: Path) -> Path:
    """Above this the host does not vet owners (ProgramData itself is the system's)."""
    return data_tree_chain(base)[0].parent


def prepare(base: Path) -> None:
    """Create the data tree private to SYSTEM + Administrators. Raises UntrustedTreeError for a
    pre-existing tree (or vendor folder) someone else owns, or with a link on its path."""
    from updater.layout import Layout

    secure_data_tree(data_tree_chain(base), default_security())
    Layout(base).ensure_dirs()


def configure(base: Path) -> None:
    """Merge the MSI's install settings into config.toml, then delete them."""
    settings_file = base / SETTINGS_FILE
    config_file = base / "config.toml"
    settings_text = _decode(settings_file.read_bytes()) if settings_file.exists() else ""
    try:
        existing = config_file.read_text(encoding="utf-8") if config_file.exists() else None
        text = configured_text(config_file, existing, settings_text)
        update_url = parse_install_settings(settings_text).get(UPDATE_URL_SETTING, "")
        if update_url:
            scheme = update_url.split("://", 1)[0]
            if scheme not in ("https", "http") or "://" not in update_url:
                raise InstallSettingsError("UPDATEURL must be an http(s):// URL")
        elif not (base / UPDATE_URL_FILE).is_file():
            update_url = DEFAULT_UPDATE_URL  # a fresh install; an upgrade keeps the file's
        _atomic_write(config_file, text)
        if update_url:
            _atomic_write(base / UPDATE_URL_FILE, update_url + "\n")
    finally:
        settings_file.unlink(missing_ok=True)


def update_url_env(base: Path, env: Mapping[str, str]) -> dict[str, str]:
    """The agent's environment: R4AGENT_UPDATE_URL from the installed setting unless set."""
    child_env = dict(env)
    url_file = base / UPDATE_URL_FILE
    if "R4AGENT_UPDATE_URL" not in child_env and url_file.is_file():
        url = url_file.read_text(encoding="utf-8").strip()
        if url:
            child_env["R4AGENT_UPDATE_URL"] = url
    return child_env


def _decode(raw: bytes) -> str:
    """The JScript action writes UTF-16 (with a BOM); accept UTF-8 too."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16")
    return raw.decode("utf-8-sig")


def purge(base: Path) -> None:
    """Uninstall with REMOVEDATA=1: remove the data tree, and the vendor folder if that leaves
    it empty. Writes nothing into the tree (no install.log). The running exe's onefile folder
    is under Program Files, not in this tree. Raises OSError naming what could not go."""
    import shutil

    if base.name != "R4Agent" or not base.is_dir():
        raise InstallSettingsError(f"refusing to purge {base}: not an R4Agent data folder")
    shutil.rmtree(base, ignore_errors=True)  # never follows a junction (Python >= 3.8)
    if base.exists():  # as much as possible went; say that something is still in use
        left = sorted(str(p.relative_to(base)) for p in base.rglob("*"))[:5]
        raise OSError(f"could not remove all of {base} (still there: {', '.join(left)})")
    vendor = base.parent
    if vendor.name == VENDOR_FOLDER:
        with contextlib.suppress(OSError):  # not empty: another Flynotes product's
            vendor.rmdir()


@contextlib.contextmanager
def _service(name: str, scm_access: int, access: int) -> Iterator[Any]:
    """An open handle to service `name` (through the SCM, opened with `scm_access`); both
    handles are closed on the way out. Raises pywintypes.error if either cannot be opened."""
    import win32service

    scm = win32service.OpenSCManager(None, None, scm_access)
    try:
        handle = win32service.OpenService(scm, name, access)
        try:
            yield handle
        finally:
            win32service.CloseServiceHandle(handle)
    finally:
        win32service.CloseServiceHandle(scm)


# SERVICE_STATUS.dwCurrentState values (winsvc.h), as words.
SERVICE_STATES: Mapping[int, str] = {
    1: "stopped",
    2: "starting",
    3: "stopping",
    4: "running",
    5: "resuming",
    6: "pausing",
    7: "paused",
}
ERROR_SERVICE_DOES_NOT_EXIST = 1060


@dataclass(frozen=True, slots=True)
class ServiceState:
    """What the SCM says about the agent's service, for `status` and `doctor`."""

    installed: bool | None  # None: cannot tell (not Windows, or the SCM refused to say)
    state: str  # "running", "stopped", ... or why it cannot tell

    @property
    def running(self) -> bool:
        return self.state == "running"


def service_state(name: str = SERVICE_NAME) -> ServiceState:
    """Query the service (read-only access). Elsewhere than Windows there is no SCM: the
    agent runs as `r4agent run` under whatever supervisor started it."""
    if sys.platform == "win32":
        return _query_service_state(name)
    return ServiceState(None, f"not a Windows service host ({sys.platform})")


def _query_service_state(name: str) -> ServiceState:
    import pywintypes
    import win32service

    try:
        with _service(
            name, win32service.SC_MANAGER_CONNECT, win32service.SERVICE_QUERY_STATUS
        ) as handle:
            code = int(win32service.QueryServiceStatus(handle)[1])
    except pywintypes.error as e:
        if e.winerror == ERROR_SERVICE_DOES_NOT_EXIST:
            return ServiceState(False, "not installed")
        return ServiceState(None, f"the service manager would not say ({e.strerror})")
    return ServiceState(True, SERVICE_STATES.get(code, f"in state {code}"))


def set_recovery_actions(name: str = SERVICE_NAME) -> None:
    """SCM recovery (restart on failure), the second safety net behind the host's own policy."""
    import win32service

    with _service(
        name, win32service.SC_MANAGER_ALL_ACCESS, win32service.SERVICE_ALL_ACCESS
    ) as handle:
        actions = [(win32service.SC_ACTION_RESTART, delay) for delay in RECOVERY_DELAYS_MS]
        win32service.ChangeServiceConfig2(
            handle,
            win32service.SERVICE_CONFIG_FAILURE_ACTIONS,
            {
                "ResetPeriod": RECOVERY_RESET_S,
                "RebootMsg": None,
                "Command": None,
                "Actions": actions,
            },
        )
        win32service.ChangeServiceConfig2(
            handle, win32service.SERVICE_CONFIG_FAILURE_ACTIONS_FLAG, True
        )


def set_preshutdown_timeout(name: str = SERVICE_NAME) -> None:
    """How long Windows waits at shutdown for the agent's in-flight work (PRESHUTDOWN)."""
    import win32service

    with _service(
        name, win32service.SC_MANAGER_ALL_ACCESS, win32service.SERVICE_ALL_ACCESS
    ) as handle:
        win32service.ChangeServiceConfig2(
            handle, win32service.SERVICE_CONFIG_PRESHUTDOWN_INFO, preshutdown_timeout_ms()
        )


def stop_service_and_wait(
    exe: Path, timeout_s: float = UNINSTALL_STOP_TIMEOUT_S, name: str = SERVICE_NAME
) -> bool:
    """Uninstall: stop the service and wait until no other process runs `exe`. The SCM reports
    STOPPED when the Python service process says so, but the onefile bootloader that started
    it still cleans up and holds the exe for a moment; msiexec's StopServices waits for the SCM
    only, and an exe still open is left behind. True when all are gone within `timeout_s`."""
    import time

    import pywintypes
    import win32service

    deadline = time.monotonic() + timeout_s
    scm = win32service.OpenSCManager(None, None, win32service.SC_MANAGER_CONNECT)
    try:
        try:
            handle = win32service.OpenService(
                scm, name, win32service.SERVICE_STOP | win32service.SERVICE_QUERY_STATUS
            )
        except pywintypes.error:
            handle = None  # not installed: only stray processes to wait for
        if handle is not None:
            try:
                with contextlib.suppress(pywintypes.error):  # already stopping or stopped
                    win32service.ControlService(handle, win32service.SERVICE_CONTROL_STOP)
                while time.monotonic() < deadline:
                    state = win32service.QueryServiceStatus(handle)[1]
                    if state == win32service.SERVICE_STOPPED:
                        break
                    time.sleep(0.25)
            finally:
                win32service.CloseServiceHandle(handle)
    finally:
        win32service.CloseServiceHandle(scm)
    mine = {os.getpid(), os.getppid()}  # this action's own bootloader runs the same exe
    while time.monotonic() < deadline:
        if not [pid for pid in _pids_running(exe) if pid not in mine]:
            return True
        time.sleep(0.25)
    return False


def _pids_running(exe: Path) -> list[int]:
    """Processes whose image is `exe` (case-insensitive full path)."""
    from updater.process_tree import process_images

    wanted = os.path.normcase(str(exe))
    return [pid for pid, image in process_images() if os.path.normcase(image) == wanted]


def message_dll() -> Path:
    """Where the MSI installs the Event Log message table (next to the service exe)."""
    return Path(sys.executable).with_name(MESSAGE_DLL)


def _setup_host_logging(base: Path, foreground: bool) -> None:
    logs = base / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    from agent.logs import LocalTimeFormatter

    handlers: list[logging.Handler] = [logging.FileHandler(logs / "service.log", encoding="utf-8")]
    if foreground:
        handlers.append(logging.StreamHandler())
    for handler in handlers:  # basicConfig keeps a handler's own formatter
        handler.setFormatter(LocalTimeFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(
        level=logging.INFO,
        handlers=handlers,
        force=True,
    )


class _StopSafeChild:
    """A child whose stop request cannot crash the host: if the agent cannot be asked to stop
    (no shared console), the host's grace period runs out and it is killed instead."""

    def __init__(self, child: Any) -> None:
        self._child = child

    def wait(self, timeout_s: float) -> int | None:
        result: int | None = self._child.wait(timeout_s)
        return result

    def request_stop(self) -> None:
        try:
            self._child.request_stop()
        except OSError as e:
            log.warning("could not ask the agent to stop (%s); killing it after the grace", e)

    def kill(self) -> None:
        self._child.kill()


class _StopSafeLauncher:
    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def start(self, argv: list[str], env: Mapping[str, str]) -> _StopSafeChild:
        return _StopSafeChild(self._inner.start(argv, env))


def attach_hidden_console() -> None:
    """Windows service only: give the host a (hidden, session 0) console that the agent it
    starts shares, so the host's CTRL_BREAK to the agent's process group reaches it and the
    agent finishes in-flight work (a console-less service cannot signal a console child)."""
    import ctypes

    windll = ctypes.windll  # type: ignore[attr-defined, unused-ignore]
    if not windll.kernel32.GetConsoleWindow():
        windll.kernel32.AllocConsole()


def host_policy() -> Any:
    """The service's restart/stop policy (updater.host.HostPolicy)."""
    from updater.host import HostPolicy

    return HostPolicy(stop_grace_s=STOP_GRACE_S)


def host_stop_worst_case_s() -> float:
    """How long the host may take to stop, at worst, plus a margin for its bookkeeping."""
    return float(host_policy().stop_worst_case_s) + 5.0


def preshutdown_timeout_ms() -> int:
    """How long the SCM waits at shutdown for a service that accepts PRESHUTDOWN (set by
    `configure`): the host's whole worst-case stop, kill path included, so a reboot never cuts
    in-flight work short while the host still keeps its promise to finish or kill it."""
    return math.ceil(host_stop_worst_case_s() * 1000)


def run_host(base: Path, stop: threading.Event, recorder: EventRecorder) -> None:
    """Install this exe as the first version on a first start (later only as the last resort
    of recovering a broken pointer), then keep the current version running. An agent exe is
    only started from a folder chain that SYSTEM/Administrators own."""
    from functools import partial

    from updater.host import Host, OwnBuild, SubprocessLauncher
    from updater.layout import Layout

    layout = Layout(base)
    # this exe (Program Files): the first version on a first start, else only the last resort
    own = OwnBuild(Path(sys.executable), __version__) if getattr(sys, "frozen", False) else None
    check_exe = partial(
        require_trusted_chain, stop_at=trusted_root(base), security=default_security()
    )
    launcher = SubprocessLauncher(layout.logs_dir / "agent-console.log", check_exe=check_exe)
    host = Host(
        layout,
        env=update_url_env(base, os.environ),
        launcher=_StopSafeLauncher(launcher),
        policy=host_policy(),
        on_event=recorder,
        own=own,
    )
    if own is not None:
        host.bootstrap()  # a broken pointer is recovered, not replaced by this exe
    host.run(stop)


def _event_log_writer() -> Any:
    import servicemanager

    writers = {
        INFO: servicemanager.LogInfoMsg,
        WARNING: servicemanager.LogWarningMsg,
        ERROR: servicemanager.LogErrorMsg,
    }

    def write(severity: str, message: str) -> None:
        writers[severity](message)

    return write


EVENT_LOG_SCAN_LIMIT = 20_000  # records of the Application log looked through, newest first


def recent_event_log_entries(limit: int = 200, source: str = SERVICE_NAME) -> list[str]:
    """The newest `limit` Application Event Log entries of `source`, newest first, one line
    each (`time  TYPE  text`). Windows only; raises pywintypes.error if the log is unreadable."""
    import win32evtlog
    import win32evtlogutil

    kinds = {
        win32evtlog.EVENTLOG_ERROR_TYPE: "ERROR",
        win32evtlog.EVENTLOG_WARNING_TYPE: "WARNING",
        win32evtlog.EVENTLOG_INFORMATION_TYPE: "INFO",
    }
    flags = win32evtlog.EVENTLOG_BACKWARDS_READ | win32evtlog.EVENTLOG_SEQUENTIAL_READ
    handle = win32evtlog.OpenEventLog(None, "Application")
    found: list[str] = []
    scanned = 0
    try:
        while len(found) < limit and scanned < EVENT_LOG_SCAN_LIMIT:
            records = win32evtlog.ReadEventLog(handle, flags, 0)
            if not records:
                break
            for record in records:
                scanned += 1
                if record.SourceName != source:
                    continue
                text = win32evtlogutil.SafeFormatMessage(record, "Application").strip()
                kind = kinds.get(record.EventType, str(record.EventType))
                found.append(f"{record.TimeGenerated.Format('%Y-%m-%d %H:%M:%S')}  {kind}  {text}")
                if len(found) >= limit:
                    break
    finally:
        win32evtlog.CloseEventLog(handle)
    return found


def _service_class() -> type:
    import servicemanager
    import win32event
    import win32service
    import win32serviceutil

    class R4AgentService(win32serviceutil.ServiceFramework):  # type: ignore[misc]
        _svc_name_ = SERVICE_NAME
        _svc_display_name_ = DISPLAY_NAME
        _svc_description_ = DESCRIPTION

        def __init__(self, args: Any) -> None:
            super().__init__(args)
            self._stop = threading.Event()
            self._host_done = threading.Event()
            self._reporter: threading.Thread | None = None
            self._stopped_event = win32event.CreateEvent(None, 0, 0, None)

        def GetAcceptedControls(self) -> int:
            # PRESHUTDOWN: at shutdown the SCM waits preshutdown_timeout_ms() for us, where plain
            # SHUTDOWN gets a few seconds; SvcShutdown still covers a system that skips it.
            accepted = int(super().GetAcceptedControls())
            return accepted | int(win32service.SERVICE_ACCEPT_PRESHUTDOWN)

        def SvcStop(self) -> None:
            """Stop, reboot or shutdown: the agent finishes in-flight work (or is killed after
            the grace, with its whole process tree); STOPPED is reported after it is gone.
            Until then STOP_PENDING is reported every few seconds with a rising checkpoint and
            a wait hint for what is left of the worst case (one 45 s hint was overrun)."""
            if self._reporter is not None:
                return  # stop, then shutdown/preshutdown: one stop, one reporter
            import time

            def report(wait_hint_ms: int) -> None:
                self.ReportServiceStatus(win32service.SERVICE_STOP_PENDING,
                                         waitHint=wait_hint_ms)

            self._reporter = threading.Thread(
                target=report_stop_pending,
                args=(report, self._host_done.wait, time.monotonic, host_stop_worst_case_s()),
                name="stop-pending", daemon=True,
            )
            self._reporter.start()
            self._stop.set()

        def SvcShutdown(self) -> None:
            self.SvcStop()

        def SvcOtherEx(self, control: int, event_type: int, data: Any) -> None:
            if control == win32service.SERVICE_CONTROL_PRESHUTDOWN:
                self.SvcStop()

        def SvcDoRun(self) -> None:
            base = data_dir()
            _setup_host_logging(base, foreground=False)
            try:
                attach_hidden_console()
            except OSError:
                log.warning("no console for the agent: stop will kill it after the grace")
            write = _event_log_writer()
            write(INFO, f"R4 agent service {__version__} starting")
            recorder = EventRecorder(write)
            try:
                run_host(base, self._stop, recorder)
            except Exception as e:
                log.exception("service host failed")
                write(ERROR, f"R4 agent service host failed: {type(e).__name__}")
                servicemanager.LogErrorMsg(f"{SERVICE_NAME} host failed")
                raise
            finally:
                # no STOP_PENDING may follow the STOPPED pywin32 reports when this returns
                self._host_done.set()
                if self._reporter is not None:
                    self._reporter.join(10)
            write(INFO, "R4 agent service stopped")

    return R4AgentService


# ---- CLI --------------------------------------------------------------------------------------


ACTIONS = ("run", "debug", "prepare", "configure", "purge", "stop")


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument(
        "action",
        choices=ACTIONS,
        help="run: what the Windows service starts; debug: the same host in the foreground; "
        "prepare/configure/purge/stop: MSI custom actions",
    )
    parser.add_argument(
        "--data-dir", type=Path, help="the ProgramData tree (default: the platform's)"
    )
    parser.description = (__doc__ or "").split("\n\n")[0]


def _stop_on_signals(stop: threading.Event) -> None:
    """`service debug`: Ctrl-C / SIGTERM (Ctrl-Break on Windows) stop the host like the SCM
    would: the agent is asked to finish in-flight work, then killed after the grace period."""
    import signal

    def handler(signum: int, frame: object) -> None:
        stop.set()

    for name in ("SIGINT", "SIGTERM", "SIGBREAK"):
        number = getattr(signal, name, None)
        if number is not None:
            signal.signal(number, handler)


def _install_log(base: Path, message: str) -> None:
    """MSI custom actions have no console: their outcome goes to logs/install.log. Never
    creates the data tree itself (only `prepare` may, with its ACL)."""
    if not base.is_dir():
        return
    try:
        (base / "logs").mkdir(exist_ok=True)
        with open(base / "logs" / "install.log", "a", encoding="utf-8") as handle:
            handle.write(f"{message}\n")
    except OSError:
        pass
    # Nothing on stdout/stderr: under msiexec they may be unusable handles, and a failed flush
    # at exit turns the action's exit code into 120 (a failed install).


def _report_outside_the_tree(message: str) -> None:
    """For outcomes that must not be written into the data tree (it is untrusted, or being
    removed): the Event Log on Windows (source registered by the MSI), stderr elsewhere."""
    if sys.platform == "win32":
        try:
            import servicemanager

            servicemanager.Initialize(SERVICE_NAME, str(message_dll()))
            servicemanager.LogErrorMsg(message)
        except Exception:  # noqa: BLE001, S110 - nowhere else to say it; the exit code does
            pass
        return
    print(message, file=sys.stderr)


def command(args: argparse.Namespace) -> int:
    base: Path = args.data_dir or data_dir()
    if args.action in ("prepare", "configure", "purge", "stop"):
        try:
            code = _custom_action(args.action, base)
        except UntrustedTreeError as e:
            _report_outside_the_tree(f"service {args.action} {__version__}: refused: {e}")
            return 1
        except Exception as e:  # noqa: BLE001 - an MSI action must say why it failed
            what = f"{type(e).__name__}: {e}"
            if args.action == "purge":
                _report_outside_the_tree(f"service purge {__version__}: failed: {what}")
            else:
                _install_log(base, f"service {args.action} {__version__}: failed: {what}")
            return 1
        if args.action != "purge":  # purge leaves nothing behind, not even its own log
            _install_log(base, f"service {args.action} {__version__}: exit {code}")
        return code
    if args.action == "debug":
        _setup_host_logging(base, foreground=True)
        stop = threading.Event()
        _stop_on_signals(stop)
        run_host(base, stop, EventRecorder())
        return 0
    # run: hand this process to the SCM
    import servicemanager

    # Without a file, pywin32 registers the servicemanager.pyd inside this onefile's runtime
    # folder as the message table: gone when the process exits, and the entries lose their text.
    servicemanager.Initialize(SERVICE_NAME, str(message_dll()))
    servicemanager.PrepareToHostSingle(_service_class())
    servicemanager.StartServiceCtrlDispatcher()
    return 0


def _custom_action(action: str, base: Path) -> int:
    if action == "prepare":
        prepare(base)
        return 0
    if action == "purge":
        try:
            purge(base)
        except InstallSettingsError as e:
            _report_outside_the_tree(f"service purge: {e}")
            return 1
        return 0
    if action == "stop":
        gone = stop_service_and_wait(Path(sys.executable)) if sys.platform == "win32" else True
        if not gone:
            _install_log(base, "service stop: processes still running after the timeout")
        return 0
    if action == "configure":
        try:
            configure(base)
        except (ConfigError, InstallSettingsError) as e:
            _install_log(base, f"service configure: {e}")
            return 78
        if sys.platform == "win32":
            try:
                set_recovery_actions()
            except Exception as e:  # noqa: BLE001 - Wine lacks parts of the SCM; log, go on
                _install_log(base, f"service configure: recovery actions not set: {e}")
            try:
                set_preshutdown_timeout()
            except Exception as e:  # noqa: BLE001 - as above
                _install_log(base, f"service configure: preshutdown timeout not set: {e}")
        return 0
    raise ValueError(f"unknown action {action}")
