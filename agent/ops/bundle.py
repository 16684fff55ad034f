"""`r4agent support-bundle [--out PATH] [--config PATH]`: one zip a practice can email to
Flynotes support (like datadog-agent's flare).

What it holds (see MANIFEST.txt inside, which also says what was left out and why):

    doctor.txt           `r4agent doctor` as run now
    status.txt/.json     `r4agent status` and its --json document
    logs/...             the newest few MB of the agent's, the service host's and the
                         installer's logs (the tail of each file, newest files first)
    config.toml          the config, every secret redacted
    updater/...          the pointer, install state, quarantine, last-confirmed and reported
                         rollbacks files, the update URL, the agent's status.json
    versions.txt         this build, and the versions installed under versions/
    odbc-drivers.txt     the ODBC drivers installed
    event-log.txt        (Windows) the agent's recent Application Event Log entries
    msi/...              (Windows) recent verbose MSI logs of this product, if any

Every file goes through the same scrubber as error reports and logs (agent.reporting.scrub_text:
the registered secrets, the config's secrets, credential shapes and sensitive `field=value`
pairs masked) before it is packed. Nothing in the agent logs patient data; the scrubber is the
second line. The zip is written with the updater's atomic write (no half-written bundle).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import time
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Final

from agent._version import __version__
from agent.config import add_config_argument, config_path, load_config
from agent.errors import ConfigError
from agent.reporting import scrub_text
from updater.layout import Layout
from updater.state import write_atomic

LOG_BUDGET_BYTES: Final = 4 * 1024 * 1024  # "the last few MB of logs"
MSI_LOG_BUDGET_BYTES: Final = 2 * 1024 * 1024
MSI_LOG_MAX_AGE_S: Final = 90 * 86400
EVENT_LOG_ENTRIES: Final = 300


@dataclass
class Bundle:
    """The files to pack (name -> text, already scrubbed) and what the manifest says."""

    secret_values: tuple[str, ...] = ()
    files: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, name: str, text: str) -> None:
        self.files[name] = scrub_text(text, self.secret_values)

    def note(self, line: str) -> None:
        self.notes.append(line)


def _tail(path: Path, budget: int) -> str:
    """The last `budget` bytes of a text file, from the start of a line."""
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(max(size - budget, 0))
        data = f.read(budget)
    if size > budget:
        data = data.split(b"\n", 1)[-1]
    return data.decode("utf-8", errors="replace")


def _newest_first(paths: Iterable[Path]) -> list[Path]:
    def mtime(p: Path) -> float:
        try:
            return p.stat().st_mtime
        except OSError:
            return 0.0

    return sorted((p for p in paths if p.is_file()), key=mtime, reverse=True)


def add_logs(bundle: Bundle, logs_dir: Path, budget: int = LOG_BUDGET_BYTES) -> None:
    """The newest files of `logs_dir` (agent.log and its rotations, service.log,
    agent-console.log, install.log), each its tail, until `budget` bytes are packed."""
    left = budget
    for path in _newest_first(logs_dir.glob("*.log*")):
        if left <= 0:
            bundle.note(f"logs/{path.name}: left out (the {budget // 2**20} MB budget is used)")
            continue
        size = path.stat().st_size
        try:
            text = _tail(path, left)
        except OSError as e:
            bundle.note(f"logs/{path.name}: unreadable ({type(e).__name__})")
            continue
        left -= min(size, left)
        shown = "" if size <= len(text.encode()) else f" (its last {len(text.encode()):,} bytes)"
        bundle.add(f"logs/{path.name}", text)
        bundle.note(f"logs/{path.name}: {size:,} bytes{shown}")


def updater_files(layout: Layout) -> list[Path]:
    """The state files the updater, the host and the agent keep in the data directory."""
    from agent.ops.status_file import status_path
    from installer.service import UPDATE_URL_FILE

    return [
        layout.current_file,
        layout.install_state_file,
        layout.quarantine_file,
        layout.last_confirmed_file,
        layout.reported_rollbacks_file,
        layout.base / UPDATE_URL_FILE,
        status_path(layout.base),
    ]


def add_updater_files(bundle: Bundle, layout: Layout) -> None:
    for path in updater_files(layout):
        name = path.name
        try:
            bundle.add(f"updater/{name}", path.read_text(encoding="utf-8", errors="replace"))
        except FileNotFoundError:
            bundle.note(f"updater/{name}: not there")
        except OSError as e:
            bundle.note(f"updater/{name}: unreadable ({type(e).__name__})")


def versions_text(layout: Layout) -> str:
    lines = [f"this build: {__version__} ({sys.platform}, Python {sys.version.split()[0]})"]
    for version in layout.installed_versions():
        exe = layout.exe_path(version)
        try:
            digest = hashlib.sha256(exe.read_bytes()).hexdigest()
            lines.append(f"installed {version}: {exe.name} {exe.stat().st_size:,} bytes "
                         f"sha256 {digest}")  # fmt: skip
        except OSError:
            lines.append(f"installed {version}: no readable {exe.name}")
    if len(lines) == 1:
        lines.append(f"nothing installed under {layout.versions_dir}")
    return "\n".join(lines) + "\n"


def odbc_drivers_text() -> str:
    try:
        import pyodbc

        drivers = list(pyodbc.drivers())
    except Exception as e:  # noqa: BLE001 - pyodbc raises its own Error types; say which
        return f"the ODBC drivers could not be listed ({type(e).__name__})\n"
    return "".join(f"{d}\n" for d in drivers) or "no ODBC drivers installed\n"


def add_windows_parts(bundle: Bundle, env: Mapping[str, str]) -> None:
    """The agent's Event Log entries and recent verbose MSI logs of this product."""
    from installer.service import SERVICE_NAME, recent_event_log_entries

    try:
        entries = recent_event_log_entries(EVENT_LOG_ENTRIES)
        bundle.add("event-log.txt", "".join(f"{e}\n" for e in entries) or "no entries\n")
        bundle.note(f"event-log.txt: {len(entries)} newest entries of source {SERVICE_NAME}")
    except Exception as e:  # noqa: BLE001 - pywin32 raises pywintypes.error; say which
        bundle.note(f"event-log.txt: the Event Log could not be read ({type(e).__name__})")
    folders = {Path(v) for k in ("TEMP", "TMP") if (v := env.get(k))}
    folders.add(Path(env.get("SystemRoot") or env.get("WINDIR") or r"C:\Windows") / "Temp")
    candidates = [p for folder in folders for p in (*folder.glob("MSI*.LOG"),
                                                    *folder.glob("r4agent*.log"))]  # fmt: skip
    left = MSI_LOG_BUDGET_BYTES
    for path in _newest_first(candidates):
        try:
            if time.time() - path.stat().st_mtime > MSI_LOG_MAX_AGE_S:
                continue
            text = _tail(path, left)
        except OSError:
            continue
        if "R4 agent" not in text and "r4agent" not in text.lower():
            continue  # another product's install
        bundle.add(f"msi/{path.name}", text)
        bundle.note(f"msi/{path.name}: from {path.parent}")
        left -= len(text.encode())
        if left <= 0:
            break
    if not any(name.startswith("msi/") for name in bundle.files):
        bundle.note("msi/: no verbose MSI log of this product found (msiexec /l*v writes one)")


def collect(
    config_file: Path | None,
    env: Mapping[str, str],
    *,
    run_doctor: Callable[[], str] | None = None,
    on_windows: bool = sys.platform == "win32",
) -> Bundle:
    """Everything the bundle holds, scrubbed. Never raises for a missing or unreadable part:
    the manifest says what is missing and why."""
    from agent.ops.status import gather, render

    chosen = config_path(config_file, env)
    secrets: tuple[str, ...] = ()
    try:
        config = load_config(config_file, env)
        data_dir, secrets = config.data_dir, tuple(config.secret_values())
    except ConfigError as e:
        data_dir = chosen.parent
        problem = str(e)
    else:
        problem = ""
    bundle = Bundle(secret_values=secrets)
    now = datetime.now(UTC)
    bundle.note(f"r4agent {__version__} support bundle, made {now.isoformat(timespec='seconds')}")
    bundle.note(f"config {chosen}; data directory {data_dir}")
    if problem:
        bundle.add("config-problems.txt", problem + "\n")
    try:
        bundle.add("config.toml", chosen.read_text(encoding="utf-8-sig", errors="replace"))
    except OSError as e:
        bundle.note(f"config.toml: unreadable ({type(e).__name__})")

    bundle.add("doctor.txt", (run_doctor or (lambda: _doctor_text(config_file, env)))())
    doc = gather(config_file, env)
    screen = io.StringIO()
    render(doc, screen)
    bundle.add("status.txt", screen.getvalue())
    bundle.add("status.json", json.dumps(doc, indent=2) + "\n")

    layout = Layout(data_dir)
    add_logs(bundle, layout.logs_dir)
    add_updater_files(bundle, layout)
    bundle.add("versions.txt", versions_text(layout))
    bundle.add("odbc-drivers.txt", odbc_drivers_text())
    if on_windows:
        add_windows_parts(bundle, env)
    return bundle


def _doctor_text(config_file: Path | None, env: Mapping[str, str]) -> str:
    from agent.doctor import Doctor, render

    out = io.StringIO()
    out.write(f"r4agent {__version__} doctor: {config_path(config_file, env)}\n")
    render(Doctor(config_file, env).run(), out)
    return out.getvalue()


def write_zip(bundle: Bundle, path: Path) -> None:
    """The bundle as one zip (MANIFEST.txt first), written atomically."""

    def fill(out: IO[bytes]) -> None:
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("MANIFEST.txt", "".join(f"{line}\n" for line in bundle.notes))
            for name, text in sorted(bundle.files.items()):
                archive.writestr(name, text.encode("utf-8"))

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, fill)


def default_out(data_dir: Path, now: datetime) -> Path:
    return data_dir / "support" / f"r4agent-support-{now.strftime('%Y%m%d-%H%M%S')}.zip"


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="the zip to write (default: <data_dir>/support/r4agent-support-<time>.zip)",
    )
    add_config_argument(parser)


def command(args: argparse.Namespace) -> int:
    env = os.environ
    print("collecting (doctor runs its checks: up to a minute)...", file=sys.stderr)
    bundle = collect(args.config, env)
    out: Path | None = args.out
    if out is None:
        try:
            data_dir = load_config(args.config, env).data_dir
        except ConfigError:
            data_dir = config_path(args.config, env).parent
        out = default_out(data_dir, datetime.now())
    try:
        write_zip(bundle, out)
    except OSError as e:
        print(f"r4agent: cannot write {out} ({type(e).__name__})", file=sys.stderr)
        return 1
    print(f"wrote {out} ({len(bundle.files)} files, secrets redacted): email it to Flynotes "
          "support")  # fmt: skip
    return 0
