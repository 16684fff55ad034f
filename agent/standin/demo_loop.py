"""The demo's SQS command-loop phase: runs the real `r4agent run` life (agent.app.run_agent)
against the practice-in-a-box, sends it a few commands, shows them handled, then stops it.

Registered in agent.standin.demo.DEMO_PHASES as "agent.standin.demo_loop:command_loop_phase".
Prints counts, message types, outcomes and timings only: no patient data on screen.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from agent.commands import envelope
from agent.sqs_queue import FAILURE_REASON_ATTRIBUTE

if TYPE_CHECKING:
    from agent.lifecycle import Lifecycle
    from agent.standin.demo import DemoPractice

WAIT_SECONDS = 60.0


class _ScreenSink:
    """The demo's ErrorSink: shows the title of what would go to Rollbar (no payload)."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._lock = threading.Lock()

    def report_exception(self, exc: BaseException, *, context: dict[str, object]) -> None:
        with self._lock:
            kind = context.get("message_type", "message")
            print(f"    -> Rollbar: {type(exc).__name__} ({kind})", file=self._out, flush=True)

    def report_message(self, message: str, *, level: str, extra: dict[str, object]) -> None:
        with self._lock:
            print(f"    -> Rollbar ({level}): {message}", file=self._out, flush=True)

    def flush(self, timeout: float) -> None:
        return None


@contextlib.contextmanager
def _quiet_agent_logs() -> Iterator[None]:
    logger = logging.getLogger("agent")
    previous = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(previous)


def _wait(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"demo: gave up waiting for {what}")
        time.sleep(0.05)


def command_loop_phase(practice: DemoPractice, out: TextIO) -> None:
    """Start the agent's life, send commands over SQS, show each one handled, stop it."""
    # the agent's data folder lives only as long as the phase (the workdir may be the user's)
    with tempfile.TemporaryDirectory(
        prefix="r4agent-demo-data-", dir=practice.workdir, ignore_cleanup_errors=True
    ) as data_dir:
        _run_commands(practice, out, Path(data_dir))


def _run_commands(practice: DemoPractice, out: TextIO, data_dir: Path) -> None:
    from agent.app import Runtime, run_agent
    from agent.config import AgentConfig, DatabaseConfig, RollbarConfig, Secret
    from agent.lifecycle import LifeSettings
    from updater.gate import ReportOnlyGate

    sqs = practice.sqs
    client = sqs.client()
    connection_string = practice.db_settings.connection_string or ""
    config = AgentConfig(
        config_path=practice.workdir / "config.toml",
        licence_key=Secret(practice.licence_key),
        backend_url=practice.backend.url,
        db=DatabaseConfig(connection_string=Secret(connection_string)),
        rollbar=RollbarConfig(access_token=None),
        data_dir=data_dir,
        sqs_endpoint_url=sqs.endpoint_url,
        long_poll_seconds=2,
    )
    stop = threading.Event()
    result: list[object] = []
    lifecycles: list[Lifecycle] = []

    def polling() -> bool:
        return bool(lifecycles) and lifecycles[0].stats["polling-in-cycle"] >= 1

    runtime = Runtime(
        stop=stop,
        errors=_ScreenSink(out),
        gate=ReportOnlyGate(practice.backend.library_version),
        life=LifeSettings(poll_hours=1, life_hours=24),
        on_lifecycle=lifecycles.append,
    )
    syncs_before = len(practice.backend.received_for("patient-sync"))
    with _quiet_agent_logs():
        agent = threading.Thread(target=lambda: result.append(run_agent(config, runtime)))
        started = time.perf_counter()
        agent.start()
        try:
            _wait(polling, "the agent's start-up")
            print(
                f"  agent started, uploaded everything and is polling SQS "
                f"({time.perf_counter() - started:.1f} s)",
                file=out,
                flush=True,
            )
            code = _patient_with_questionnaire(practice)
            commands: list[str] = [
                envelope.encode(envelope.PatientSync(code, "demo-loop")),
                envelope.encode(envelope.BulkUploadAppointmentStatus()),
                envelope.encode(envelope.TestMessage()),
                envelope.encode(envelope.QuestionnaireQuestionsUpload()),
                envelope.encode(envelope.QuestionnaireAnswersUpload()),
                '{"type": "make-coffee"}',
            ]
            print(f"  sending {len(commands)} messages (one of them poison):", file=out, flush=True)
            sent_at = time.perf_counter()
            for body in commands:
                client.send_message(QueueUrl=sqs.queue_url, MessageBody=body)

            def all_gone() -> bool:
                attributes = client.get_queue_attributes(
                    QueueUrl=sqs.queue_url,
                    AttributeNames=[
                        "ApproximateNumberOfMessages",
                        "ApproximateNumberOfMessagesNotVisible",
                    ],
                )["Attributes"]
                return all(v == "0" for v in attributes.values())

            _wait(all_gone, "the messages to be handled")
            synced = len(practice.backend.received_for("patient-sync")) - syncs_before
            print(
                f"  all handled in {time.perf_counter() - sent_at:.2f} s: patient-sync sent "
                f"{synced} record(s); queue empty",
                file=out,
            )
            dead = client.receive_message(
                QueueUrl=sqs.dead_letter_queue_url,
                MaxNumberOfMessages=10,
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            for message in dead:
                attributes = message.get("MessageAttributes") or {}
                value = attributes.get(FAILURE_REASON_ATTRIBUTE)
                reason = value.get("StringValue", "?") if value else "?"
                print(f"  dead-letter queue: {reason}", file=out)
        finally:
            stop.set()
            agent.join(60)
            client.close()
    print(f"  agent stopped: exit {result[0] if result else '(still running)'}", file=out)


def _patient_with_questionnaire(practice: DemoPractice) -> int:
    with practice.reader() as reader:
        for patient in reader.iter_patients():
            if reader.latest_questionnaire(patient.code) is not None:
                return patient.code
    raise LookupError("the sample database has no patient with a questionnaire")
