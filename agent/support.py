"""Support-staff commands, sharing the agent's config, R4 reader and backend client:

    r4agent sync-patient CODE [--dry-run] [--patch-id ID] [--config PATH]
    r4agent bulk-upload [--dry-run] [--with-appointments] [--config PATH]

`--dry-run` reads R4 and prints counts and field NAMES only (never a patient's values) and sends
nothing. Exit status: 0 done; 1 failed for good (e.g. unknown patient, licence rejected);
75 (TRANSIENT_FAILURE) database or backend unreachable, try again; 78 (CONFIG_ERROR) bad config.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from agent.errors import ConfigError, PermanentError, TransientError
from agent.exit_codes import ExitCode
from agent.records import Patient

if TYPE_CHECKING:
    from agent.contract import Wire
    from agent.flynotes.client import FlynotesClient
    from agent.ports import Backend, RecordSource

DEFAULT_PATCH_ID = "r4agent-support"


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    if name == "sync-patient":
        parser.add_argument("code", type=int, metavar="CODE", help="the R4 patient code")
        parser.add_argument(
            "--patch-id",
            default=DEFAULT_PATCH_ID,
            help=f"patientPatchId sent with the record (default {DEFAULT_PATCH_ID!r})",
        )
    else:
        parser.add_argument(
            "--with-appointments",
            action="store_true",
            help="also upload appointments and appointment statuses",
        )
    parser.add_argument(
        "--dry-run", action="store_true", help="read R4, print counts, send nothing"
    )
    parser.add_argument("--config", type=Path, default=None, help="config file (TOML)")
    parser.set_defaults(_support_action=name)


def command(args: argparse.Namespace) -> int:
    from agent.app import ReconnectingRecords, db_settings, flynotes_client
    from agent.config import load_config
    from agent.contract import Wire

    try:
        config = load_config(args.config)
    except ConfigError as e:
        print(f"r4agent: configuration error: {e}", file=sys.stderr)
        return int(ExitCode.CONFIG_ERROR)
    records = ReconnectingRecords(db_settings(config))
    opened: list[FlynotesClient] = []  # built only when something is sent (not on --dry-run)

    def backend() -> Backend:
        opened.append(flynotes_client(config, purpose="support"))
        return opened[-1]

    try:
        if args._support_action == "sync-patient":
            return _sync_patient(args, records, backend)
        return _bulk_upload(
            args, records, backend, wire=Wire(config.wire), rows_per_request=config.rows_per_request
        )
    except TransientError as e:
        print(f"r4agent: not reachable, try again later: {e}", file=sys.stderr)
        return int(ExitCode.TRANSIENT_FAILURE)
    except PermanentError as e:
        print(f"r4agent: failed: {e}", file=sys.stderr)
        return 1
    finally:
        for client in opened:
            client.close()
        records.close()


def present_fields(patient: Patient) -> list[str]:
    """Names of the patient's fields that hold a value (the values themselves stay private)."""
    return [name for name, value in patient._asdict().items() if value not in (None, "")]


def _sync_patient(
    args: argparse.Namespace, records: RecordSource, backend: Callable[[], Backend]
) -> int:
    patient = records.get_patient(args.code)
    if patient is None:
        print(f"patient {args.code}: not found in R4", file=sys.stderr)
        return 1
    questionnaire = records.latest_questionnaire(args.code)
    answers = len(questionnaire.answers) if questionnaire is not None else 0
    print(f"patient {args.code}: found; fields with a value: {', '.join(present_fields(patient))}")
    print(f"latest questionnaire: {'none' if questionnaire is None else f'{answers} answers'}")
    if args.dry_run:
        print("dry run: nothing sent")
        return 0
    backend().sync_patient(patient, questionnaire, args.patch_id)
    print(f"patient {args.code}: sent to Flynotes")
    return 0


def _counting(patients: Iterator[Patient], tally: Counter[str]) -> Iterator[Patient]:
    for p in patients:
        tally["patients"] += 1
        for name in present_fields(p):
            tally[name] += 1
        yield p


def _bulk_upload(
    args: argparse.Namespace,
    records: RecordSource,
    backend: Callable[[], Backend],
    *,
    wire: Wire,
    rows_per_request: int,
) -> int:
    tally: Counter[str] = Counter()
    if args.dry_run:
        for _ in _counting(records.iter_patients(), tally):
            pass
        total = tally.pop("patients", 0)
        print(f"{total} patients would be uploaded; how many have each field:")
        for name in Patient._fields:
            print(f"  {name:<10} {tally.get(name, 0)}")
        if args.with_appointments:
            print(f"{sum(1 for _ in records.iter_appointments())} appointments would be uploaded")
            flags = sum(1 for _ in records.iter_appointment_flags())
            print(f"{flags} appointment statuses would be uploaded")
        print("dry run: nothing sent")
        return 0
    from agent.reporting import NullSink
    from agent.uploads.passes import Uploads, raise_if_stopped

    # A full pass without the change ledger: the running service keeps its own.
    uploads = Uploads(backend(), errors=NullSink(), wire=wire, rows_per_request=rows_per_request)
    tables = ["patients"]
    if args.with_appointments:
        tables += ["appointments", "appointment statuses"]
    for table in tables:
        summary = uploads.run(table, records, full=True)
        print(
            f"{table}: {summary.sent} uploaded, {summary.skipped} skipped (no surname or "
            f"forename), {summary.refused} refused by the backend, {summary.failed} not sent"
        )
        raise_if_stopped(summary)
    return 0
