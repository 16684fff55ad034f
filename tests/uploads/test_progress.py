"""A long upload keeps telling the practice's log how far it got (issue 14: a progress line
at least every 10 s), on the fake clock."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator, Sequence
from datetime import date

import pytest

from agent.clock import FakeClock
from agent.contract import CsvTable, Values
from agent.flynotes.client import FlynotesClient
from agent.records import Patient
from agent.standin.backend import StandinBackend
from agent.uploads.passes import Uploads
from tests.fixtures.flynotes_backend import TEST_LICENCE_KEY
from tests.uploads.conftest import RecordingSink

PATIENTS = 100_000
SECONDS_PER_POST = 2.5  # a slow backend, on the fake clock


class HundredThousandPatients:
    """The RecordSource port's simulator for this one test: 100,000 patient records in code
    order, without a 100k-row database to generate first (the R4 reader is tested elsewhere)."""

    def iter_patients(self) -> Iterator[Patient]:
        for code in range(1_000_000, 1_000_000 + PATIENTS):
            yield Patient(code, "Ann", "Lee", date(1970, 1, 1), None, None)


class SlowBackend:
    """The real client to the stand-in, each POST taking SECONDS_PER_POST of fake time."""

    def __init__(self, client: FlynotesClient, clock: FakeClock) -> None:
        self._client = client
        self._clock = clock

    def upload_rows(self, table: CsvTable, rows: Sequence[Values]) -> None:
        self._clock.advance(SECONDS_PER_POST)
        self._client.upload_rows(table, rows)


def test_a_100k_patient_upload_logs_a_progress_line_at_least_every_10_s(
    flynotes_standin: StandinBackend, caplog: pytest.LogCaptureFixture
) -> None:
    flynotes_standin.keep_rows = False
    clock = FakeClock()
    started = clock.monotonic()
    at: list[tuple[float, str]] = []

    class OnTheClock(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            at.append((clock.monotonic(), record.getMessage()))

    logger = logging.getLogger("agent.uploads.passes")
    handler = OnTheClock(logging.INFO)
    logger.addHandler(handler)
    try:
        with FlynotesClient(flynotes_standin.url, TEST_LICENCE_KEY) as client:
            uploads = Uploads(SlowBackend(client, clock), errors=RecordingSink(), clock=clock)  # type: ignore[arg-type]
            summary = uploads.run("patients", HundredThousandPatients())  # type: ignore[arg-type]
    finally:
        logger.removeHandler(handler)
    assert summary.sent == PATIENTS and summary.requests == PATIENTS // 500
    ended = clock.monotonic()
    assert ended - started == PATIENTS // 500 * SECONDS_PER_POST  # 500 simulated seconds
    progress = [(t, m) for t, m in at if "rows done" in m]
    assert len(progress) >= 45
    times = [started, *(t for t, _ in progress), ended]
    assert max(b - a for a, b in itertools.pairwise(times)) <= 10.0
    assert progress[0][1].startswith("patients upload: ")
    assert at[-1][1].startswith("patients: full pass: 100,000 read")
