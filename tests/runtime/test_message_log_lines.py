"""A handled command logs one line when it starts and one when it ends, at INFO: a practice's
IT person reading agent.log sees each message once each way, never two 'sent' lines for the
same patient-sync. Real parts: moto, the stand-in, the R4 stand-in through pyodbc."""

from __future__ import annotations

import logging

import pytest

from agent.commands import envelope
from agent.commands.dispatcher import DispatchSettings
from agent.sqs_queue import SqsQueue
from agent.standin.r4_sample import CANARY_CODE
from tests.runtime.conftest import MakeDispatcher, Practice, eventually


def test_a_patient_sync_logs_one_start_and_one_end_line_and_a_failure_ends_as_failed(
    practice: Practice, make_dispatcher: MakeDispatcher, caplog: pytest.LogCaptureFixture
) -> None:
    lanes, _ = make_dispatcher(DispatchSettings(heartbeat_interval_seconds=5))
    queue = SqsQueue(practice.sqs.client(), practice.sqs.queue_url, wait_seconds=1)
    caplog.set_level(logging.INFO, logger="agent")
    practice.send(envelope.encode(envelope.PatientSync(CANARY_CODE, "log-lines")))
    practice.send(envelope.encode(envelope.PatientSync(1, "no-such-patient")))
    received = 0
    while received < 2:
        received += lanes.poll_once(queue)
    eventually(lambda: lanes.outcomes["done"] == 1 and lanes.outcomes["dead-lettered"] == 1)
    lines = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.INFO and r.name.startswith("agent.")
    ]
    ids = {line.split()[1] for line in lines if line.startswith("message ")}
    about = [[line for line in lines if message_id in line] for message_id in ids]
    assert sorted(len(entries) for entries in about) == [2, 2], about
    for started, ended in about:
        assert started.endswith("(patient-sync) started")
        assert " (patient-sync) done in " in ended or " (patient-sync) failed for good: " in ended
    assert sorted(" done in " in ended for _, ended in about) == [False, True]
    assert [line for line in lines if "sent patient" in line or "sync sent" in line] == []
