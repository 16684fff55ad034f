"""Chunks: at most `rows_per_request` rows per POST; a 413 halves the chunk down to one row;
another 4xx refuses that chunk for good, reported once with counts and keys only, and the pass
goes on."""

from __future__ import annotations

import json

import pytest

from agent.uploads.passes import Uploads
from tests.fixtures.canary import CANARY_CODE, canaries_in
from tests.uploads.conftest import Practice


@pytest.mark.parametrize("rows_per_request", [1, 7, 500])
def test_no_post_carries_more_than_rows_per_request_rows(
    practice: Practice, rows_per_request: int
) -> None:
    practice.rows_per_request = rows_per_request
    summary = practice.run("patients")
    sizes = [r.row_count for r in practice.backend.received_for("patient-upload")]
    assert max(sizes) == min(rows_per_request, summary.sent)
    assert sum(sizes) == summary.sent == summary.read - summary.skipped
    assert summary.requests == len(sizes) == -(-summary.sent // rows_per_request)


def test_rows_per_request_outside_1_to_5000_is_refused() -> None:
    for bad in (0, 5001):
        with pytest.raises(ValueError, match="1 to 5000"):
            Uploads(None, errors=None, rows_per_request=bad)  # type: ignore[arg-type]


def test_413_halves_the_chunk_until_it_passes_and_later_chunks_start_smaller(
    practice: Practice,
) -> None:
    practice.backend.max_rows = 60
    summary = practice.run("patients")
    assert summary.error is None and summary.refused == 0
    assert summary.sent == summary.read - summary.skipped
    answered = practice.backend.received_for("patient-upload", status=None)
    too_large = [r for r in answered if r.status == 413]
    accepted = [r for r in answered if r.status == 200]
    assert too_large and all(r.row_count <= 60 for r in accepted)
    # 301 rows -> 151 -> 76 -> 38, which passes: the rest of the pass keeps to 38 rows
    assert [r.status for r in answered[:4]] == [413, 413, 413, 200]
    assert len(too_large) == 3 and {r.row_count for r in accepted} <= {36, 37, 38}
    assert len({r["id"] for r in practice.rows_received()}) == summary.sent


def test_413_for_a_single_row_refuses_that_row_only(practice: Practice) -> None:
    practice.backend.max_rows = 0  # nothing passes: every row ends alone and refused
    practice.rows_per_request = 4
    practice.sql(f"DELETE FROM patients WHERE patientCode NOT IN (1001, 1002, {CANARY_CODE})")
    summary = practice.run("patients")
    assert (summary.sent, summary.refused, summary.error) == (0, 3, None)
    statuses = [r.status for r in practice.backend.received_for("patient-upload", status=None)]
    assert statuses == [413, 413, 413, 413, 413]  # 3 rows -> 2 + 1 -> 1 + 1 + 1
    assert len(practice.sink.messages) == 3


def test_a_refused_chunk_is_reported_once_without_values_and_the_pass_goes_on(
    practice: Practice, caplog: pytest.LogCaptureFixture
) -> None:
    practice.rows_per_request = 100
    practice.sql(f"UPDATE patients SET patientCode = 1000 WHERE patientCode = {CANARY_CODE}")
    practice.backend.fail_next(1, status=422, endpoint="patient-upload")  # the canary's chunk
    summary = practice.run("patients")
    assert summary.refused == 100 and summary.error is None
    assert summary.sent == summary.read - summary.skipped - 100
    (message, level, extra) = practice.sink.messages[0]
    assert len(practice.sink.messages) == 1  # once: a 4xx is not retried
    assert level == "error" and "HTTP 422" in message
    assert extra == {
        "table": "patients",
        "status": 422,
        "first_key": extra["first_key"],
        "last_key": extra["last_key"],
        "rows": 100,
    }
    assert extra["first_key"] == 1000  # codes only: the canary's
    assert isinstance(extra["last_key"], int) and extra["last_key"] > 1000
    assert not canaries_in(json.dumps(practice.sink.messages) + caplog.text)
    # refused rows are not in the ledger: the next pass sends them again
    practice.backend.clear_received()
    assert practice.run("patients").sent == 100


def test_the_pass_summary_counts_every_kind_of_row(practice: Practice) -> None:
    practice.rows_per_request = 100
    practice.sql("UPDATE patients SET forename = NULL WHERE patientCode = 1003")
    practice.backend.fail_next(1, status=400, endpoint="patient-upload")
    summary = practice.run("patients")
    counts = summary.counts()
    assert counts == {
        "read": summary.read,
        "changed": summary.read - 1,
        "sent": summary.read - 1 - 100,
        "skipped": 1,
        "refused": 100,
        "failed": 0,
    }
    assert "1 skipped, 100 refused" in summary.line()
