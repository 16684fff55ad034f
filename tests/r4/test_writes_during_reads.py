"""R4 is written while we read (REALITY §2: rows appear and change between keyset pages).

On the real stack (pyodbc + unixODBC + the SQLite3 ODBC driver) a hook between the keyset pages
of a running pass (the connection's statement observer, called just before each next page
runs) inserts, updates and deletes rows through another connection, as the practice's R4 does.
No row that existed throughout the pass may be skipped or read twice, nothing may crash."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

from agent.flynotes.client import FlynotesClient
from agent.r4.connection import open_database
from agent.r4.reader import R4Reader
from agent.r4.sql import Statement
from agent.records import Patient
from agent.standin.backend import StandinBackend
from agent.uploads.passes import Uploads
from tests.fixtures.flynotes_backend import TEST_LICENCE_KEY
from tests.fixtures.r4_database import MakeR4Db, R4SampleDb, int_column
from tests.uploads.conftest import RecordingSink

PAGE = 25


class PracticeAtWork:
    """Writes to R4 between the pages of a pass, through its own sqlite3 connection (as R4's
    own application does), and remembers what it did."""

    def __init__(self, path: Path, table: str, key: str) -> None:
        self.path, self.table, self.key = path, table, key
        self.deleted: set[int] = set()
        self.inserted_behind: set[int] = set()
        self.inserted_ahead: set[int] = set()
        self.updated_ahead: set[int] = set()
        self.pages = 0
        self.read_so_far: Callable[[], int] = lambda: 0
        con = sqlite3.connect(path)
        try:  # holes in the keys before the pass: where a new row can appear behind the cursor
            keys = [int(r[0]) for r in con.execute(f"SELECT {key} FROM {table} ORDER BY {key}")]
            self.holes = set(keys[7::10])
            con.executemany(f"DELETE FROM {table} WHERE {key} = ?", [(k,) for k in self.holes])
            con.commit()
        finally:
            con.close()
        self.before = int_column(path, f"SELECT {key} FROM {table} ORDER BY {key}")

    def between_pages(self, statement: Statement) -> None:
        if not statement.name.endswith("_next_page"):
            return
        self.pages += 1
        last = self.read_so_far()  # the previous page's last key: where the next page starts
        con = sqlite3.connect(self.path, timeout=5)
        try:
            live = [int(r[0]) for r in con.execute(
                f"SELECT {self.key} FROM {self.table} ORDER BY {self.key}")]  # fmt: skip
            behind = [k for k in live if k < last]
            ahead = [k for k in live if k > last]
            top = live[-1]
            gone = {last}  # the row the next page starts after
            if behind:
                gone.add(behind[len(behind) // 2])
            if len(ahead) > 3:
                gone.add(ahead[2])
                self._update(con, ahead[1])
            for k in gone:
                con.execute(f"DELETE FROM {self.table} WHERE {self.key} = ?", (k,))
            self.deleted |= gone
            new_behind = self._free_key_below(last)
            if new_behind is not None:
                self._insert(con, new_behind)
                self.inserted_behind.add(new_behind)
            self._insert(con, top + 1000 + self.pages)
            self.inserted_ahead.add(top + 1000 + self.pages)
            con.commit()
        finally:
            con.close()

    def _free_key_below(self, last: int) -> int | None:
        # a new row below the cursor is exactly what a pass cannot see until the next one
        free = [k for k in self.holes - self.inserted_behind if k < last]
        return max(free) if free else None

    def _insert(self, con: sqlite3.Connection, key: int) -> None:
        raise NotImplementedError

    def _update(self, con: sqlite3.Connection, key: int) -> None:
        raise NotImplementedError


class PatientsAtWork(PracticeAtWork):
    def __init__(self, path: Path) -> None:
        super().__init__(path, "patients", "patientCode")

    def _insert(self, con: sqlite3.Connection, key: int) -> None:
        con.execute(
            "INSERT INTO patients (patientCode, forename, surname, dob) VALUES (?, ?, ?, ?)",
            (key, "Walk", "In", "1990-01-01 00:00:00"),
        )

    def _update(self, con: sqlite3.Connection, key: int) -> None:
        con.execute("UPDATE patients SET surname = 'Married', mobileNo = '07700900123', "
                    "addressId = NULL WHERE patientCode = ?", (key,))  # fmt: skip
        self.updated_ahead.add(key)


class AppointmentsAtWork(PracticeAtWork):
    def __init__(self, path: Path) -> None:
        super().__init__(path, "Appts", "ApptId")

    def _insert(self, con: sqlite3.Connection, key: int) -> None:
        con.execute(  # booked for nobody yet: a NULL PatientCode, as R4 has them
            "INSERT INTO Appts (ApptId, PatientCode, ApptDateTime, ApptFlag) VALUES (?, ?, ?, ?)",
            (key, None, "2027-03-28 01:30:00", 6),
        )

    def _update(self, con: sqlite3.Connection, key: int) -> None:
        con.execute("UPDATE Appts SET ApptFlag = 5 WHERE ApptId = ?", (key,))  # deleted in R4
        self.updated_ahead.add(key)
        if self.pages == 2:  # and a flag description changes under the join
            con.execute("UPDATE ApptFlags SET Description = 'Removed' WHERE ApptFlag = 5")


def _real(make_r4_db: MakeR4Db) -> R4SampleDb:
    return make_r4_db(patients=150, profile="real", canary=True)


def _every_row_that_existed_throughout_is_read_once(read: list[int], work: PracticeAtWork) -> None:
    before = work.before
    assert work.pages >= 5  # the writes really happened between pages of one pass
    assert read == sorted(read) and len(read) == len(set(read))  # in order, never twice
    throughout = set(before) - work.deleted
    assert throughout <= set(read)  # no row that existed throughout is skipped
    assert work.inserted_ahead - work.deleted <= set(read)  # new rows past the cursor: now
    assert not work.inserted_behind & set(read)  # new rows behind it: the next pass
    assert set(read) <= set(before) | work.inserted_ahead | work.inserted_behind


def test_patients_inserted_updated_and_deleted_between_pages_skip_no_other(
    make_r4_db: MakeR4Db,
) -> None:
    sample = _real(make_r4_db)
    work = PatientsAtWork(sample.path)
    read: list[int] = []
    married: dict[int, tuple[str | None, str | None]] = {}
    work.read_so_far = lambda: read[-1]
    with open_database(sample.settings) as db:
        db.observers.append(work.between_pages)
        reader = R4Reader(db, page_size=PAGE)
        for patient in reader.iter_patients():
            read.append(patient.code)
            if patient.code in work.updated_ahead:
                married[patient.code] = (patient.surname, patient.mobile)
        db.observers.clear()
        next_pass = {p.code for p in reader.iter_patients()}
    _every_row_that_existed_throughout_is_read_once(read, work)
    assert married and set(married.values()) == {("Married", "07700900123")}  # read as changed
    assert work.inserted_behind and work.inserted_behind <= next_pass


def test_appointments_written_between_pages_skip_no_other_and_nothing_crashes(
    make_r4_db: MakeR4Db,
) -> None:
    sample = _real(make_r4_db)
    work = AppointmentsAtWork(sample.path)
    read: list[int] = []
    statuses: set[str | None] = set()
    work.read_so_far = lambda: read[-1]
    with open_database(sample.settings) as db:
        db.observers.append(work.between_pages)
        for appt in R4Reader(db, page_size=PAGE * 4).iter_appointments():
            read.append(appt.appt_id)
            if appt.appt_id in work.updated_ahead:
                statuses.add(appt.status)
    _every_row_that_existed_throughout_is_read_once(read, work)
    assert {"Deleted", "Removed"} & statuses  # the updates ahead of the cursor were seen


def test_an_upload_pass_while_patients_change_sends_every_patient_that_stayed(
    make_r4_db: MakeR4Db, flynotes_standin: StandinBackend
) -> None:
    sample = _real(make_r4_db)
    work = PatientsAtWork(sample.path)
    seen: list[int] = []

    class Watched(R4Reader):
        def iter_patients(self) -> Iterator[Patient]:
            for patient in super().iter_patients():
                seen.append(patient.code)
                yield patient

    work.read_so_far = lambda: seen[-1]
    with (
        open_database(sample.settings) as db,
        FlynotesClient(flynotes_standin.url, TEST_LICENCE_KEY) as client,
    ):
        db.observers.append(work.between_pages)
        uploads = Uploads(client, errors=RecordingSink())
        summary = uploads.run("patients", Watched(db, page_size=PAGE))
    ids = [
        int(row["id"])
        for request in flynotes_standin.received_for("patient-upload")
        for row in request.rows or ()
    ]
    assert summary.error is None and summary.refused == 0
    assert summary.read == len(seen) and summary.sent == len(ids) == len(seen) - summary.skipped
    assert len(set(ids)) == len(ids) and set(ids) <= set(seen)  # what was sent was read once
    _every_row_that_existed_throughout_is_read_once(seen, work)


def test_rows_written_while_an_undecodable_page_is_read_again_skip_no_other(
    make_r4_db: MakeR4Db,
) -> None:
    # A page with a text the driver cannot decode is read again row by row, then by its keys
    # alone; R4 writes between those two reads too.
    sample = _real(make_r4_db)
    work = PatientsAtWork(sample.path)
    before = work.before
    undecodable = {before[3], before[30], before[31], before[-1]}
    con = sqlite3.connect(sample.path)
    con.executemany("UPDATE patients SET surname = CAST(X'FF' AS TEXT) WHERE patientCode = ?",
                    [(k,) for k in undecodable])  # fmt: skip
    con.commit()
    con.close()
    read: list[int] = []
    work.read_so_far = lambda: read[-1] if read else 0

    def between_rows_and_keys(statement: Statement) -> None:
        if statement.name.startswith("patient_codes_"):  # the keys of the page being read again
            work.between_pages(Statement("x_next_page", ""))

    with open_database(sample.settings) as db:
        db.observers.append(between_rows_and_keys)
        reader = R4Reader(db, page_size=PAGE)
        read.extend(p.code for p in reader.iter_patients())
    assert read == sorted(read) and len(read) == len(set(read))
    assert set(work.before) - work.deleted - undecodable <= set(read)
    assert not undecodable & set(read) and work.pages >= 3
