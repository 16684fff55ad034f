"""The ledger file: codes and keyed digests only, under a key only the service account reads;
a digest is written only after its chunk's 2xx."""

from __future__ import annotations

import hmac
import os
import sqlite3
import stat
import sys
import threading

import pytest

from agent.uploads.ledger import (
    KEY_FILENAME,
    LEDGER_FILENAME,
    RowDigest,
    SqliteLedger,
    load_or_create_key,
    row_digest,
)
from tests.fixtures.canary import CANARY_CODE, canaries_in_bytes
from tests.uploads.conftest import Practice


def test_ledger_holds_codes_and_keyed_digests_only_no_patient_data(practice: Practice) -> None:
    practice.run("patients"), practice.run("appointments")
    practice.ledger.close()
    ledger = practice.data_dir / LEDGER_FILENAME
    for path in practice.data_dir.iterdir():
        if path.name.startswith(LEDGER_FILENAME):
            assert not canaries_in_bytes(path.read_bytes()), path.name
    con = sqlite3.connect(ledger)
    try:
        rows = con.execute("SELECT key, digest FROM digests_patients").fetchall()
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        con.close()
    assert tables == {"meta", "digests_patients", "digests_appointments"}
    assert CANARY_CODE in {k for k, _ in rows}
    assert all(isinstance(k, int) and isinstance(d, bytes) and len(d) == 32 for k, d in rows)


def test_the_digest_is_keyed_so_a_guess_cannot_be_checked_without_the_key() -> None:
    values = ("900001", "CANARYSURNAME", "CANARYFORENAME")
    assert row_digest(b"k" * 32, values) != row_digest(b"j" * 32, values)
    assert row_digest(b"k" * 32, values) == hmac.digest(b"k" * 32, repr(values).encode(), "sha256")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX mode bits")
def test_the_install_key_is_random_and_readable_by_the_owner_only(practice: Practice) -> None:
    practice.run("patients")
    key_file = practice.data_dir / KEY_FILENAME
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(bytes.fromhex(key_file.read_text("ascii"))) == 32
    assert load_or_create_key(key_file) == bytes.fromhex(key_file.read_text("ascii"))
    other = practice.data_dir / "other.key"
    assert load_or_create_key(other) != load_or_create_key(key_file)


def test_damaged_key_file_gets_a_new_key(tmp_path: os.PathLike[str]) -> None:
    from pathlib import Path

    path = Path(tmp_path) / KEY_FILENAME
    path.write_text("not hex", encoding="ascii")
    key = load_or_create_key(path)
    assert len(key) == 32 and path.read_text("ascii") == key.hex()


def test_no_digest_is_committed_before_its_chunks_2xx(practice: Practice) -> None:
    practice.rows_per_request = 100
    release = threading.Event()
    practice.backend.hold_next(1, until=release, endpoint="patient-upload")
    uploads = practice.uploads()
    done = threading.Thread(target=practice.run, args=("patients",))
    done.start()
    try:
        while practice.backend.holding == 0:
            release.wait(0.01)
        # the first chunk is at the backend, unanswered: the ledger has nothing yet
        reader = SqliteLedger(practice.data_dir / LEDGER_FILENAME, uploads.ledger.key, "sys2000")
        assert reader.known("patients", None, None) == {}
        reader.close()
    finally:
        release.set()
        done.join(30)
    assert len(uploads.ledger.known("patients", None, None)) == 301


def test_the_fast_row_digest_is_hmac_sha256() -> None:
    for key in (b"k" * 32, b"short", b"x" * 100):
        values = ("1000001", "Nuñez", None, True, 3)
        assert RowDigest(key)(values) == row_digest(key, values)
