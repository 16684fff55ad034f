"""`r4agent demo`: a whole practice on one machine, driven through the real code paths.

`DemoPractice` brings the practice up (an R4-shaped SQLite database read through pyodbc, the
Flynotes backend stand-in, a moto SQS queue with its dead-letter queue) and takes it down again,
whatever happens. The demo then runs its phases against it: `DEMO_PHASES` names them as
"module:function" strings, imported only when run, so another area can add a phase (the SQS
command loop) with one line. A phase gets the practice and an output stream, and prints only
counts and timings: no patient data reaches the screen.

The licence key is random, made here and handed over in-process: never on a command line.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from types import FrameType
from typing import Self, TextIO

from agent._version import __version__
from agent.clock import SystemClock
from agent.errors import AgentError, exception_chain
from agent.flynotes.client import FlynotesClient
from agent.progress import Progress
from agent.r4.connection import DbSettings, open_database
from agent.r4.reader import R4Reader
from agent.reporting import NullSink
from agent.standin import r4_sample
from agent.standin.backend import StandinBackend
from agent.standin.sqs_local import LocalSqs, SqsEndpoint
from agent.uploads.passes import Uploads, raise_if_stopped

DEFAULT_PATIENTS = 5000
# The sample database's shape (agent.standin.r4_sample.PROFILES): a practice as it really is
# (REALITY §2: 7-digit codes, sparse contact data, 1.7% of appointments without a patient).
# "nasty" is for edge-case tests.
DEMO_PROFILE = "real"

# (title, "module:function"); each function is `phase(practice, out) -> None`.
DEMO_PHASES: tuple[tuple[str, str], ...] = (
    ("scope and uploads", "agent.standin.demo:upload_phase"),
    ("SQS command loop (r4agent run)", "agent.standin.demo_loop:command_loop_phase"),
)

Phase = Callable[["DemoPractice", TextIO], None]


class DemoPractice:
    """Sample R4 database + backend stand-in + local SQS, started together, stopped together.

    Attributes once entered: `db_path`, `db_settings`, `backend` (StandinBackend), `sqs`
    (SqsEndpoint), `licence_key`. `client()` and `reader()` give the real production objects
    wired to them.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        patients: int = DEFAULT_PATIENTS,
        seed: int = 1,
        out: TextIO | None = None,
    ) -> None:
        self.workdir = workdir
        self.patients = patients
        self.seed = seed
        self.licence_key = secrets.token_urlsafe(24)
        self.db_path = workdir / "sys2000.db"
        self.db_settings = DbSettings(
            connection_string=r4_sample.sqlite_connection_string(self.db_path)
        )
        self._out = out or sys.stdout
        self._stack = ExitStack()
        self._backend: StandinBackend | None = None
        self._sqs: SqsEndpoint | None = None
        self.timings: dict[str, float] = {}

    @property
    def backend(self) -> StandinBackend:
        if self._backend is None:
            raise RuntimeError("DemoPractice is not started")
        return self._backend

    @property
    def sqs(self) -> SqsEndpoint:
        if self._sqs is None:
            raise RuntimeError("DemoPractice is not started")
        return self._sqs

    def __enter__(self) -> Self:
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.timed("sample R4 database"):
            progress = Progress(
                "sample R4 database",
                clock=SystemClock(),
                log=_screen_log(self._out),
                expected=self.patients,
                unit="patients",
            )
            r4_sample.generate(
                self.db_path, self.patients, seed=self.seed, profile=DEMO_PROFILE,
                progress=progress,
            )
        self._say(
            f"R4 stand-in: {self.patients:,} patients in {self.db_path} "
            f"({self.timings['sample R4 database']:.1f} s)"
        )
        with self.timed("local SQS"):
            sqs = self._stack.enter_context(LocalSqs(prefix="r4agent-demo"))
        self._sqs = sqs.endpoint
        self._say(f"SQS (moto):  {self._sqs.endpoint_url}  queue + dead-letter queue")
        backend = StandinBackend(
            [self.licence_key],
            library_version=__version__,
            sqs_queue_url=self._sqs.queue_url,
            sqs_region=self._sqs.region,
            credentials={
                "AccessKeyId": self._sqs.access_key_id,
                "SecretAccessKey": self._sqs.secret_access_key,
                "SessionToken": self._sqs.session_token,
            },
        )
        self._backend = self._stack.enter_context(backend)
        self._say(f"Flynotes stand-in: {self._backend.url}")

    def client(self) -> FlynotesClient:
        """The production client, pointed at the stand-in (closed with the practice)."""
        return self._stack.enter_context(FlynotesClient(self.backend.url, self.licence_key))

    @contextlib.contextmanager
    def reader(self) -> Iterator[R4Reader]:
        """The production R4 reader over pyodbc + the SQLite3 ODBC driver."""
        with open_database(self.db_settings) as db:
            yield R4Reader(db)

    @contextlib.contextmanager
    def timed(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = time.perf_counter() - started

    def _say(self, line: str) -> None:
        print(line, file=self._out, flush=True)


def _screen_log(out: TextIO) -> logging.Logger:
    """A logger whose lines go to the demo's screen, indented like its own lines: the progress
    of its long steps (counts only)."""
    screen = logging.getLogger("agent.standin.demo.screen")
    screen.propagate = False  # not into a log file the agent may have set up
    screen.setLevel(logging.INFO)
    for old in list(screen.handlers):
        screen.removeHandler(old)
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("  %(message)s"))
    screen.addHandler(handler)
    return screen


def upload_phase(practice: DemoPractice, out: TextIO) -> None:
    """Scope, full patient upload, one patient-sync with a questionnaire, appointments and
    their statuses: the calls `r4agent run` makes, through the same objects."""
    client = practice.client()
    uploads = Uploads(client, errors=NullSink())  # a full pass each (no ledger in the demo)
    with practice.reader() as reader:
        with practice.timed("scope"):
            scope = client.fetch_scope()
        print(f"  licence accepted; backend wants version {scope.library_version}", file=out)
        with practice.timed("patient upload"):
            patients = _full_pass(uploads, "patients", reader)
        with practice.timed("patient-sync"):
            synced = _sync_one_patient_with_questionnaire(client, reader)
        with practice.timed("appointment upload"):
            appointments = _full_pass(uploads, "appointments", reader)
        with practice.timed("status upload"):
            flags = _full_pass(uploads, "appointment statuses", reader)
    t = practice.timings
    print(f"  sent {patients:,} patients in {t['patient upload']:.2f} s", file=out)
    print(
        f"  sent one patient-sync (patient code {synced}) in {t['patient-sync'] * 1000:.0f} ms",
        file=out,
    )
    print(
        f"  sent {appointments:,} appointments in {t['appointment upload']:.2f} s "
        f"and {flags} appointment statuses in {t['status upload']:.2f} s",
        file=out,
    )


def _full_pass(uploads: Uploads, table: str, reader: R4Reader) -> int:
    summary = uploads.run(table, reader, full=True)
    raise_if_stopped(summary)
    return summary.sent


def _sync_one_patient_with_questionnaire(client: FlynotesClient, reader: R4Reader) -> int:
    for patient in reader.iter_patients():
        questionnaire = reader.latest_questionnaire(patient.code)
        if questionnaire is not None:
            client.sync_patient(patient, questionnaire, f"demo-{secrets.token_hex(4)}")
            return patient.code
    raise AgentError("the sample database has no patient with a questionnaire")


def print_received(backend: StandinBackend, out: TextIO) -> None:
    print("What the Flynotes stand-in accepted:", file=out)
    for endpoint, counts in sorted(backend.summary().items()):
        rows = f", {counts['rows']:,} rows" if counts["rows"] else ""
        print(
            f"  {endpoint:<26} {counts['accepted']}/{counts['requests']} requests{rows}", file=out
        )


def load_phase(spec: str) -> Phase:
    module_name, _, function = spec.partition(":")
    phase: Phase = getattr(importlib.import_module(module_name), function)
    return phase


def run_demo(workdir: Path, *, patients: int, out: TextIO) -> int:
    with DemoPractice(workdir, patients=patients, out=out) as practice:
        for title, spec in DEMO_PHASES:
            print(f"\n== {title}", file=out, flush=True)
            load_phase(spec)(practice, out)
        print("", file=out)
        print_received(practice.backend, out)
    return 0


# --- CLI -----------------------------------------------------------------------------------


def _patient_count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if count < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return count


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.epilog = (
        "Exit codes: 0 done; 1 failed (one line on stderr); 130 interrupted (Ctrl-C or SIGTERM), "
        "after stopping everything it started and removing its temporary folder."
    )
    parser.add_argument(
        "--patients",
        type=_patient_count,
        default=DEFAULT_PATIENTS,
        help=f"size of the sample R4 database (default {DEFAULT_PATIENTS:,})",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where to put the sample database (default: a temporary folder, removed after)",
    )


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _interrupted(error: BaseException | None) -> bool:
    """Whether `error` came from Ctrl-C: a KeyboardInterrupt raised while a C call (pyodbc's
    connect, waiting on a locked database) was returning surfaces as its SystemError cause."""
    return any(isinstance(e, KeyboardInterrupt) for e in exception_chain(error))


def command(args: argparse.Namespace) -> int:
    out = sys.stdout
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's per-request access log
    # SIGTERM cleans up like Ctrl-C; and Ctrl-C does, even when started with SIGINT ignored
    # (Python then installs no KeyboardInterrupt handler: a background job of a script).
    previous = signal.signal(signal.SIGTERM, _interrupt), signal.signal(signal.SIGINT, _interrupt)
    temporary: Path | None = None
    try:
        workdir: Path | None = args.workdir
        if workdir is None:
            workdir = temporary = Path(tempfile.mkdtemp(prefix="r4agent-demo-"))
        print(f"r4agent {__version__} practice-in-a-box", file=out, flush=True)
        return run_demo(workdir, patients=args.patients, out=out)
    except (KeyboardInterrupt, Exception) as e:  # noqa: BLE001 - one line, not a traceback
        if _interrupted(e):
            print("\ninterrupted: everything the demo started has been stopped", file=out)
            return 130
        # The demo's data is generated and its errors name no values; the type says which
        # phase gave up (TimeoutError from a wait, LookupError from an empty sample, ...).
        print(f"demo failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    finally:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])
