"""`r4agent status [--json] [--config PATH]`: one screen of what the agent is doing.

It only READS: the status file the agent writes at each cycle and message
(agent.ops.status_file), the updater's pointer / install record / quarantine / last-confirmed
files through updater.state's readers, and the Windows service's state from the service
manager. So it works while the service runs, changes nothing, and opens no port: there is no
local web page on purpose (a listening port on a practice server is attack surface; this and
the Event Log cover the need).

`--json` prints the same facts as one document (`SCHEMA_VERSION`, `OUTPUT_SCHEMA`;
docs/support.md). Exit code 0 when the agent's status file was read, 1 when there is none (the
agent never ran with this data directory) or it cannot be read.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TextIO, TypeVar

from agent._version import __version__
from agent.config import add_config_argument, config_path, load_config
from agent.errors import ConfigError
from agent.logs import local_time
from agent.ops.console import reader_safe
from agent.ops.status_file import StatusFileError, read_status, status_path
from installer.service import SERVICE_NAME, ServiceState, service_state
from updater.layout import Layout
from updater.state import (
    CorruptStateError,
    read_last_confirmed,
    read_pointer,
    read_quarantine,
    read_record,
)

SCHEMA_VERSION: Final = 1
T = TypeVar("T")
# Outcomes of handled messages (agent.commands.dispatcher) as the three numbers people ask for.
HANDLED: Final = ("done", "done-undeleted", "coalesced", "coalesced-undeleted")
FAILED: Final = ("retry", "error", "dropped")
DEAD_LETTERED: Final = ("dead-lettered",)

_TIME: Final = {"type": ["string", "null"], "format": "date-time"}
_VERSION: Final = {"type": ["string", "null"]}
OUTPUT_SCHEMA: Final[dict[str, Any]] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://flynotes.co.uk/schemas/r4agent-status-1.json",
    "title": "r4agent status --json, schema version 1",
    "type": "object",
    "required": [
        "schema_version", "generated_at", "data_dir", "config", "service", "versions",
        "update", "today", "agent", "agent_problem",
    ],
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION},
        "generated_at": _TIME,
        "data_dir": {"type": "string"},
        "config": {
            "type": "object",
            "required": ["path", "valid", "problem"],
            "properties": {
                "path": {"type": "string"},
                "valid": {"type": "boolean"},
                "problem": {"type": ["string", "null"]},
            },
        },
        "service": {
            "type": "object",
            "required": ["name", "installed", "state"],
            "properties": {
                "name": {"type": "string"},
                "installed": {"type": ["boolean", "null"]},
                "state": {"type": "string"},
            },
        },
        "versions": {
            "type": "object",
            "required": [
                "this_build", "agent", "wanted", "service_runs", "last_confirmed", "installed"
            ],
            "properties": {
                "this_build": {"type": "string"},
                "agent": _VERSION,
                "wanted": _VERSION,
                "service_runs": _VERSION,
                "last_confirmed": _VERSION,
                "installed": {"type": "array", "items": {"type": "string"}},
            },
        },
        "update": {
            "type": "object",
            "required": ["pointer_state", "pointer_reason", "last_attempt", "quarantine",
                         "problems"],
            "properties": {
                "pointer_state": {"type": ["string", "null"]},
                "pointer_reason": {"type": "string"},
                "last_attempt": {
                    "type": ["object", "null"],
                    "required": ["from_version", "to_version", "state", "route", "detail"],
                },
                "quarantine": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["version", "reason", "at", "until"],
                        "properties": {"at": _TIME, "until": _TIME},
                    },
                },
                "problems": {"type": "array", "items": {"type": "string"}},
            },
        },
        "today": {
            "type": "object",
            "required": ["day", "handled", "failed", "dead_lettered"],
            "properties": {
                "day": {"type": "string"},
                "handled": {"type": "integer", "minimum": 0},
                "failed": {"type": "integer", "minimum": 0},
                "dead_lettered": {"type": "integer", "minimum": 0},
            },
        },
        "agent": {
            "description": "the agent's status file (agent.ops.status_file), as written",
            "type": ["object", "null"],
            "required": [
                "schema_version", "written_at", "agent", "version_check", "next", "cycle",
                "queue", "last_error",
            ],
            "properties": {
                "schema_version": {"const": 1},
                "written_at": _TIME,
                "agent": {
                    "type": "object",
                    "required": ["version", "pid", "started_at", "exited_at", "exit"],
                    "properties": {
                        "version": {"type": "string"},
                        "pid": {"type": "integer"},
                        "started_at": _TIME,
                        "exited_at": _TIME,
                        "exit": {"type": ["string", "null"]},
                    },
                },
                "version_check": {
                    "type": ["object", "null"],
                    "required": ["at", "wanted", "action", "reason"],
                },
                "next": {
                    "type": ["object", "null"],
                    "required": ["version_check_at", "scope_refresh_at", "end_of_life_at"],
                },
                "cycle": {
                    "type": ["object", "null"],
                    "required": ["number", "started_at", "finished_at", "duration_s", "tables"],
                    "properties": {
                        "tables": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["table", "counts", "error"],
                                "properties": {
                                    "table": {"type": "string"},
                                    "counts": {
                                        "type": "object",
                                        "additionalProperties": {"type": "integer"},
                                    },
                                    "error": {"type": ["string", "null"]},
                                },
                            },
                        },
                    },
                },
                "queue": {
                    "type": "object",
                    "required": ["last_receive_at", "last_received", "day", "today"],
                    "properties": {
                        "today": {
                            "type": "object",
                            "additionalProperties": {"type": "integer"},
                        },
                    },
                },
                "last_error": {
                    "type": ["object", "null"],
                    "required": ["type", "phase", "at"],
                },
            },
        },
        "agent_problem": {"type": ["string", "null"]},
    },
}  # fmt: skip


def gather(
    config_file: Path | None,
    env: Mapping[str, str],
    *,
    query_service: Callable[[], ServiceState] = service_state,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Everything `status` shows, as the `--json` document. Reads files only; never raises
    for a missing or damaged one (it is named in a `problem` field instead)."""
    chosen = config_path(config_file, env)
    config: dict[str, Any] = {"path": str(chosen), "valid": True, "problem": None}
    try:
        data_dir = load_config(config_file, env).data_dir
    except ConfigError:
        data_dir = chosen.parent  # the default data_dir: the config file's folder
        config.update(valid=False, problem="the config has problems: run `r4agent doctor`")
    service = query_service()
    update, service_runs, last_confirmed, installed = _update_state(Layout(data_dir))
    agent: dict[str, Any] | None = None
    agent_problem: str | None = None
    try:
        agent = read_status(status_path(data_dir))
        if agent is None:
            agent_problem = f"no {status_path(data_dir).name}: the agent has not run here yet"
    except StatusFileError as e:
        agent_problem = str(e)
    check = (agent or {}).get("version_check") or {}
    queue = (agent or {}).get("queue") or {}
    outcomes: Mapping[str, int] = queue.get("today") or {}
    return {
        "schema_version": SCHEMA_VERSION,
        "generated_at": (now or datetime.now(UTC)).isoformat(timespec="seconds"),
        "data_dir": str(data_dir),
        "config": config,
        "service": {"name": SERVICE_NAME, "installed": service.installed, "state": service.state},
        "versions": {
            "this_build": __version__,
            "agent": ((agent or {}).get("agent") or {}).get("version"),
            "wanted": check.get("wanted"),
            "service_runs": service_runs,
            "last_confirmed": last_confirmed,
            "installed": installed,
        },
        "update": update,
        "today": {
            "day": queue.get("day") or "",
            "handled": _total(outcomes, HANDLED),
            "failed": _total(outcomes, FAILED),
            "dead_lettered": _total(outcomes, DEAD_LETTERED),
        },
        "agent": agent,
        "agent_problem": agent_problem,
    }


def _total(outcomes: Mapping[str, int], kinds: Iterable[str]) -> int:
    return sum(int(outcomes.get(k, 0)) for k in kinds)


def _update_state(layout: Layout) -> tuple[dict[str, Any], str | None, str | None, list[str]]:
    """The updater's view through its own readers: (update, pointer version, last confirmed,
    installed versions)."""
    problems: list[str] = []
    update: dict[str, Any] = {
        "pointer_state": None,
        "pointer_reason": "",
        "last_attempt": None,
        "quarantine": [],
        "problems": problems,
    }

    def read(reader: Callable[[Path], T], path: Path) -> T | None:
        try:
            return reader(path)
        except CorruptStateError as e:  # named in the output, the rest is still shown
            problems.append(str(e))
            return None

    service_runs = None
    pointer = read(read_pointer, layout.current_file)
    if pointer is not None:
        service_runs = pointer.version
        update["pointer_state"] = pointer.state.value
        update["pointer_reason"] = pointer.reason
    record = read(read_record, layout.install_state_file)
    if record is not None:
        attempt = record.to_json()
        attempt.pop("attempt", None)
        attempt.pop("archive_sha256", None)
        update["last_attempt"] = attempt
    quarantine = read(read_quarantine, layout.quarantine_file)
    if quarantine is not None:
        update["quarantine"] = [
            {"version": version, **{k: v for k, v in entry.to_json().items() if k != "sha256"}}
            for version, entry in sorted(quarantine.entries.items())
        ]
    installed = layout.installed_versions()
    return update, service_runs, read_last_confirmed(layout.last_confirmed_file), installed


# -- the screen ------------------------------------------------------------------------------
def _when(value: str | None) -> str:
    if not value:
        return "never"
    try:
        return local_time(datetime.fromisoformat(value)).replace("T", " ").replace(".000", "")
    except ValueError:
        return value


def _ago(value: str | None, now: datetime) -> str:
    if not value:
        return "never"
    try:
        seconds = (now - datetime.fromisoformat(value)).total_seconds()
    except (ValueError, TypeError):
        return value
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def _tables(tables: Iterable[Mapping[str, Any]]) -> str:
    parts = []
    for result in tables:
        name = result.get("table", "?")
        if result.get("error"):
            parts.append(f"{name} failed ({result['error']})")
            continue
        counts = result.get("counts") or {}
        words = ", ".join(f"{n:,} {kind}" for kind, n in counts.items()) or "nothing"
        parts.append(f"{name} {words}")
    return " · ".join(parts) or "no tables"


def render(doc: Mapping[str, Any], out: TextIO) -> None:
    """The one screen (times in local time with the offset)."""
    now = datetime.fromisoformat(doc["generated_at"])
    lines: list[tuple[str, str]] = []
    service = doc["service"]
    if service["installed"] is None:
        lines.append(("service", service["state"]))
    else:
        lines.append(("service", f"{service['name']}: {service['state']}"))
    if not doc["config"]["valid"]:
        lines.append(("config", f"{doc['config']['path']}: {doc['config']['problem']}"))
    agent = doc["agent"]
    if agent is None:
        lines.append(("agent", doc["agent_problem"]))
    else:
        a = agent["agent"]
        if a.get("exited_at"):
            life = f"exited {_when(a['exited_at'])} ({a['exit']})"
        else:
            life = f"status written {_ago(agent['written_at'], now)}"
        lines.append(
            ("agent", f"version {a['version']}, pid {a['pid']}, started {_when(a['started_at'])}; "
                      f"{life}")
        )  # fmt: skip
    v = doc["versions"]
    shown = [
        f"agent {v['agent'] or 'unknown'}",
        f"wanted {v['wanted'] or 'not asked yet'}",
        f"service runs {v['service_runs'] or '(not an installed layout)'}",
        f"last confirmed {v['last_confirmed'] or 'none'}",
    ]
    if v["installed"]:
        shown.append(f"installed {', '.join(v['installed'])}")
    lines.append(("versions", " · ".join(shown)))
    update = doc["update"]
    attempt = update["last_attempt"]
    text = f"pointer {update['pointer_state'] or 'none'}"
    if update["pointer_reason"]:
        text += f" ({update['pointer_reason']})"
    if attempt is not None:
        text += (
            f"; last attempt {attempt['from_version']} -> {attempt['to_version']}: "
            f"{attempt['state']}" + (f" ({attempt['detail']})" if attempt["detail"] else "")
        )
    lines.append(("update", text))
    for problem in update["problems"]:
        lines.append(("update", f"unreadable: {problem}"))
    held = [
        f"{q['version']} {'for good' if q['until'] is None else 'until ' + _when(q['until'])}: "
        f"{q['reason']}"
        for q in update["quarantine"]
    ]
    lines.append(("quarantine", "; ".join(held) or "none"))
    if agent is not None:
        cycle = agent["cycle"]
        if cycle is None:
            lines.append(("last cycle", "none finished yet"))
        else:
            lines.append(
                ("last cycle", f"#{cycle['number']} at {_when(cycle['started_at'])}, took "
                               f"{cycle['duration_s']:.1f} s: {_tables(cycle['tables'])}")
            )  # fmt: skip
        queue = agent["queue"]
        today = doc["today"]
        received = queue["last_received"]
        lines.append(
            ("queue", f"last receive {_when(queue['last_receive_at'])}"
                      + ("" if received is None else f" ({received} message(s))")
                      + f"; today {today['handled']} handled, {today['failed']} failed, "
                      f"{today['dead_lettered']} dead-lettered")
        )  # fmt: skip
        error = agent["last_error"]
        lines.append(
            ("last error", "none" if error is None else
             f"{error['type']} in {error['phase']} at {_when(error['at'])}")
        )  # fmt: skip
        nxt = agent["next"]
        if nxt is not None and not agent["agent"].get("exited_at"):
            lines.append(
                ("next", f"scope refresh and version check {_when(nxt['version_check_at'])}; "
                         f"end of life {_when(nxt['end_of_life_at'])}")
            )  # fmt: skip
    width = max(len(label) for label, _ in lines)
    out.write(f"r4agent {doc['versions']['this_build']} status: {doc['data_dir']}\n")
    for label, text in lines:
        out.write(f"{label.ljust(width)}  {text}\n")


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--json", action="store_true", help="one JSON document (docs/support.md)")
    parser.add_argument(
        "--schema", action="store_true", help="print the JSON Schema of --json and exit"
    )
    add_config_argument(parser)


def command(args: argparse.Namespace, *, stream: TextIO | None = None) -> int:
    out = reader_safe(stream)
    if args.schema:
        out.write(json.dumps(OUTPUT_SCHEMA, indent=2) + "\n")
        out.flush()
        return 0
    doc = gather(args.config, os.environ)
    if args.json:
        out.write(json.dumps(doc, indent=2) + "\n")
    else:
        render(doc, out)
    out.flush()
    return 0 if doc["agent"] is not None else 1
