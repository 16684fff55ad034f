"""Passes over the real data path: the R4 stand-in through pyodbc + the SQLite3 ODBC driver,
the real client over loopback HTTP to the backend stand-in, the real SQLite ledger on disk."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agent.clock import FakeClock
from agent.contract import Wire
from agent.flynotes.client import ClientLimits, FlynotesClient
from agent.r4.connection import open_database
from agent.r4.reader import R4Reader
from agent.standin.backend import StandinBackend
from agent.uploads.ledger import Ledger, open_ledger
from agent.uploads.passes import PassSummary, Uploads
from tests.fixtures.flynotes_backend import TEST_LICENCE_KEY
from tests.fixtures.r4_database import MakeR4Db, R4SampleDb


class RecordingSink:
    """An ErrorSink keeping what it was given (the port's simulator)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str, dict[str, object]]] = []
        self.exceptions: list[BaseException] = []

    def report_exception(self, exc: BaseException, *, context: dict[str, object]) -> None:
        self.exceptions.append(exc)

    def report_message(self, message: str, *, level: str, extra: dict[str, object]) -> None:
        self.messages.append((message, level, extra))

    def flush(self, timeout: float) -> None:
        return None


@dataclass
class Practice:
    """One practice's data directory, R4 database and backend, and the passes between them."""

    db: R4SampleDb
    backend: StandinBackend
    data_dir: Path
    rows_per_request: int = 500
    sink: RecordingSink = field(default_factory=RecordingSink)
    clock: FakeClock = field(default_factory=FakeClock)
    source: str = "sys2000"
    _uploads: Uploads | None = None
    _client: FlynotesClient | None = None

    def uploads(self) -> Uploads:
        """The process's upload passes (a new one = a process restart)."""
        if self._uploads is None:
            self._client = FlynotesClient(
                self.backend.url,
                TEST_LICENCE_KEY,
                clock=self.clock,
                limits=ClientLimits(retries=1),
            )
            self._uploads = Uploads(
                self._client,
                errors=self.sink,
                ledger=open_ledger(self.data_dir, self.source),
                wire=Wire(),
                clock=self.clock,
                rows_per_request=self.rows_per_request,
            )
        return self._uploads

    @property
    def ledger(self) -> Ledger:
        return self.uploads().ledger

    def run(self, table: str = "patients", *, full: bool = False) -> PassSummary:
        with open_database(self.db.settings) as db:
            return self.uploads().run(table, R4Reader(db), full=full)

    def restart(self) -> None:
        self.close()

    def close(self) -> None:
        if self._uploads is not None:
            self._uploads.ledger.close()
        if self._client is not None:
            self._client.close()
        self._uploads = self._client = None

    def rows_received(self, endpoint: str = "patient-upload") -> list[dict[str, str]]:
        return [row for r in self.backend.received_for(endpoint) for row in r.rows or []]

    def sql(self, statement: str, *params: object) -> None:
        """Change the practice's R4 (test tooling writes with sqlite3; the agent only reads)."""
        con = sqlite3.connect(self.db.path)
        try:
            con.execute(statement, params)
            con.commit()
        finally:
            con.close()


@pytest.fixture
def practice(
    make_r4_db: MakeR4Db, flynotes_standin: StandinBackend, tmp_path: Path
) -> Iterator[Practice]:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    p = Practice(make_r4_db(), flynotes_standin, data_dir)
    yield p
    p.close()
