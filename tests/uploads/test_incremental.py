"""Hourly passes send only what changed; the ledger moves only after the backend's 2xx, so a
failure, a lost or damaged ledger, or a restart costs resends, never a row."""

from __future__ import annotations

from agent.uploads.ledger import KEY_FILENAME, LEDGER_FILENAME
from tests.uploads.conftest import Practice


def test_second_pass_in_a_row_sends_no_patient_or_appointment_row(practice: Practice) -> None:
    first = practice.run("patients"), practice.run("appointments")
    assert all(s.full and s.sent == s.read - s.skipped > 0 for s in first)
    practice.backend.clear_received()
    second = practice.run("patients"), practice.run("appointments")
    assert [(s.full, s.changed, s.sent, s.requests) for s in second] == [(False, 0, 0, 0)] * 2
    assert practice.backend.received == []  # not even a header-only CSV


def test_one_patient_edited_sends_exactly_that_row(practice: Practice) -> None:
    practice.run("patients")
    practice.backend.clear_received()
    practice.sql("UPDATE patients SET mobileNo = '07700 900999' WHERE patientCode = 1005")
    summary = practice.run("patients")
    assert (summary.changed, summary.sent, summary.requests) == (1, 1, 1)
    (row,) = practice.rows_received()
    assert row["id"] == "1005" and row["mobileNumber"] == "07700 900999"


def test_new_patient_and_appointment_status_change_are_sent(practice: Practice) -> None:
    practice.run("patients"), practice.run("appointments")
    practice.backend.clear_received()
    practice.sql(
        "INSERT INTO patients (patientCode, forename, surname) VALUES (1999999, 'Walk', 'In')"
    )
    practice.sql("UPDATE Appts SET ApptFlag = 3 WHERE ApptId = (SELECT MIN(ApptId) FROM Appts)")
    assert practice.run("patients").sent == 1
    assert practice.run("appointments").sent == 1
    assert [r["id"] for r in practice.rows_received()] == ["1999999"]
    (appt,) = practice.rows_received("appointment-upload")
    assert appt["statusCode"] == "3"


def test_a_chunk_answered_500_is_resent_next_pass_and_nothing_else(practice: Practice) -> None:
    practice.rows_per_request = 100
    practice.backend.fail_next(2, status=500, endpoint="patient-upload")  # first try + retry
    first = practice.run("patients")
    assert first.failed == 100 and first.sent == first.read - first.skipped - 100
    assert first.error is None  # one failed chunk does not stop the pass
    sent_first = {r["id"] for r in practice.rows_received()}
    assert len(sent_first) == first.sent == first.read - first.skipped - 100
    practice.backend.clear_received()
    again = practice.run("patients")  # an hourly pass (not full: this process did one)
    assert not again.full
    resent = {r["id"] for r in practice.rows_received()}
    assert len(resent) == 100 and not resent & sent_first
    assert (again.sent, again.requests) == (100, 1)
    assert practice.run("patients").sent == 0


def test_the_backend_down_ends_the_pass_early_and_the_next_one_sends_the_rest(
    practice: Practice,
) -> None:
    practice.rows_per_request = 50
    practice.backend.fail_next(100, status=503, endpoint="patient-upload")
    stopped = practice.run("patients")
    assert type(stopped.error).__name__ == "BackendUnavailableError"
    assert stopped.requests == 2 and stopped.sent == 0  # two failed chunks in a row: stop
    practice.backend.clear_faults()
    practice.backend.clear_received()
    rest = practice.run("patients")
    assert rest.full  # the full pass of this process has not completed yet
    assert rest.sent == rest.read - rest.skipped


def test_deleted_ledger_means_a_full_pass(practice: Practice) -> None:
    practice.run("patients")
    practice.restart()
    (practice.data_dir / LEDGER_FILENAME).unlink()
    assert practice.ledger.fresh("patients")  # a new, empty ledger
    practice.backend.clear_received()
    summary = practice.run("patients")
    assert summary.full and summary.sent == summary.read - summary.skipped
    assert summary.changed == summary.sent  # nothing known: every row is new to it


def test_corrupted_ledger_means_a_full_pass_not_a_crash(practice: Practice) -> None:
    practice.run("patients")
    practice.restart()
    (practice.data_dir / LEDGER_FILENAME).write_bytes(b"not a database at all" * 100)
    assert practice.ledger.fresh("patients")
    summary = practice.run("patients")
    assert summary.full and summary.error is None
    assert summary.sent == summary.read - summary.skipped
    assert practice.run("patients").sent == 0  # and the new ledger works


def test_a_ledger_failing_while_in_use_makes_the_next_pass_full(practice: Practice) -> None:
    practice.run("patients")
    assert practice.run("patients").sent == 0  # this process's full pass is done
    practice.ledger.reset(OSError("disk I/O error"))  # type: ignore[attr-defined]
    summary = practice.run("patients")
    assert summary.full and summary.sent == summary.read - summary.skipped


def test_ledger_of_another_install_key_or_database_means_a_full_pass(practice: Practice) -> None:
    practice.run("patients")
    practice.restart()
    (practice.data_dir / KEY_FILENAME).write_text("00" * 32, encoding="ascii")
    assert practice.ledger.fresh("patients")  # foreign: another key
    assert practice.run("patients").changed == practice.run("patients", full=True).sent
    practice.restart()
    practice.source = "another R4 database"
    assert practice.ledger.fresh("patients")  # foreign: another database


def test_every_process_starts_with_a_full_pass(practice: Practice) -> None:
    practice.run("patients")
    practice.restart()
    practice.backend.clear_received()
    summary = practice.run("patients")
    assert summary.full and summary.changed == 0  # nothing changed, all sent anyway
    assert summary.sent == summary.read - summary.skipped


def test_full_true_sends_everything_even_unchanged(practice: Practice) -> None:
    practice.run("patients")
    summary = practice.run("patients", full=True)
    assert summary.full and summary.changed == 0 and summary.sent > 0


def test_rows_gone_from_r4_leave_the_ledger(practice: Practice) -> None:
    practice.run("patients")
    assert 1005 in practice.ledger.known("patients", 1004, 1005)
    practice.sql("DELETE FROM patients WHERE patientCode = 1005")
    last = practice.ledger.known("patients", None, None)
    top = max(last)
    practice.sql("DELETE FROM patients WHERE patientCode = ?", top)
    practice.run("patients")
    known = practice.ledger.known("patients", None, None)
    assert 1005 not in known and top not in known
    practice.sql("INSERT INTO patients (patientCode, forename, surname) VALUES (1005, 'A', 'B')")
    assert practice.run("patients").sent == 1  # back: new again


def test_patient_losing_their_surname_is_skipped_and_counted(practice: Practice) -> None:
    practice.run("patients")
    practice.sql("UPDATE patients SET surname = '  ' WHERE patientCode = 1005")
    summary = practice.run("patients")
    assert summary.sent == 0 and summary.skipped >= 1
    assert 1005 not in practice.ledger.known("patients", 1004, 1005)


def test_appointment_statuses_are_a_full_upload_every_pass(practice: Practice) -> None:
    first = practice.run("appointment statuses")
    second = practice.run("appointment statuses")
    assert first.sent == second.sent > 0 and second.full
    assert len(practice.backend.received_for("appointment-status-upload")) == 2
