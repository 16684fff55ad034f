"""The install state machine and the atomic persistence of state and pointer."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from updater.state import (
    CorruptStateError,
    CurrentPointer,
    IllegalTransitionError,
    InstallRecord,
    InstallState,
    PointerState,
    Quarantine,
    QuarantineEntry,
    read_last_confirmed,
    read_pointer,
    read_quarantine,
    read_record,
    write_last_confirmed,
    write_pointer,
    write_quarantine,
    write_record,
)

S = InstallState


def _record() -> InstallRecord:
    return InstallRecord("a1", "1.0.0", "1.1.0", S.CHECKED)


def test_the_happy_path_visits_every_state_in_order() -> None:
    record = _record()
    for state in (S.DOWNLOADED, S.STAGED, S.SMOKE_TESTED, S.SWITCHED, S.CONFIRMED):
        record = record.advance(state)
    assert record.state is S.CONFIRMED


@pytest.mark.parametrize("path", [
    [S.SWITCHED],  # skipping download/staging/smoke test
    [S.DOWNLOADED, S.SMOKE_TESTED],  # skipping staging
    [S.DOWNLOADED, S.STAGED, S.SWITCHED],  # skipping the smoke test
    [S.FAILED, S.DOWNLOADED],  # failed is final
    [S.DOWNLOADED, S.STAGED, S.SMOKE_TESTED, S.SWITCHED, S.FAILED],  # switched cannot "fail"
])
def test_illegal_transitions_are_rejected(path: list[InstallState]) -> None:
    record = _record()
    with pytest.raises(IllegalTransitionError):
        for state in path:
            record = record.advance(state)


def test_records_and_pointers_round_trip_through_disk(tmp_path: Path) -> None:
    record = _record().advance(S.DOWNLOADED, "ok")
    write_record(tmp_path / "install-state.json", record)
    assert read_record(tmp_path / "install-state.json") == record
    pointer = CurrentPointer("1.0.0", None, PointerState.INSTALLED).switched_to("1.1.0", "why")
    write_pointer(tmp_path / "current", pointer)
    assert read_pointer(tmp_path / "current") == pointer
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_rollback_flips_to_previous_and_quarantines_the_build() -> None:
    pointer = CurrentPointer("1.0.0", None, PointerState.INSTALLED).switched_to("1.1.0", "")
    back = pointer.with_unconfirmed_start(crashed=True).rolled_back("crash loop", "abc")
    assert (back.version, back.previous, back.state) == ("1.0.0", "1.1.0", PointerState.ROLLED_BACK)
    assert back.quarantined == {"1.1.0": "abc"}


def test_rollback_without_previous_is_illegal() -> None:
    with pytest.raises(IllegalTransitionError):
        CurrentPointer("1.0.0", None, PointerState.SWITCHED).rolled_back("x", None)


@pytest.mark.parametrize("content", [
    "{not json", json.dumps({"version": "../1.0.0", "previous": None, "state": "confirmed"}),
    json.dumps({"version": "1.0.0", "previous": None, "state": "weird"}),
    json.dumps({"version": "1.0.0", "state": "confirmed", "crashes_before_confirm": -1}),
    json.dumps(["1.0.0"]),
])
def test_corrupt_pointer_is_reported_not_trusted(tmp_path: Path, content: str) -> None:
    (tmp_path / "current").write_text(content)
    with pytest.raises(CorruptStateError):
        read_pointer(tmp_path / "current")


def test_missing_files_read_as_none(tmp_path: Path) -> None:
    assert read_pointer(tmp_path / "current") is None
    assert read_record(tmp_path / "install-state.json") is None


def test_quarantine_round_trips_and_soft_entries_expire(tmp_path: Path) -> None:
    at = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    q = Quarantine().add("1.1.0", QuarantineEntry("a", "crash loop", at)).add(
        "1.2.0", QuarantineEntry("b", "no confirmation", at, at + timedelta(hours=24)))
    assert q.in_force(at + timedelta(hours=1), {}) == {"1.1.0": "a", "1.2.0": "b"}
    later = at + timedelta(hours=25)
    assert q.in_force(later, {}) == {"1.1.0": "a"} and q.expired(later) == {"1.2.0"}
    # an entry only the pointer knows (an older host wrote it) holds for good
    assert q.in_force(later, {"1.0.5": "c", "1.2.0": "b"}) == {"1.1.0": "a", "1.0.5": "c"}
    write_quarantine(tmp_path / "quarantine.json", q)
    assert read_quarantine(tmp_path / "quarantine.json") == q


@pytest.mark.parametrize("content", [
    "[]", json.dumps({"../x": {"sha256": "a", "reason": "", "at": "2026-01-05T09:00:00+00:00"}}),
    json.dumps({"1.1.0": {"sha256": "a", "reason": "", "at": "2026-01-05T09:00:00"}}),  # naive
    json.dumps({"1.1.0": {"reason": "", "at": "2026-01-05T09:00:00+00:00"}}),
])
def test_corrupt_quarantine_is_reported_not_trusted(tmp_path: Path, content: str) -> None:
    (tmp_path / "quarantine.json").write_text(content)
    with pytest.raises(CorruptStateError):
        read_quarantine(tmp_path / "quarantine.json")


def test_damaged_last_confirmed_file_reads_as_unknown_not_as_a_version(tmp_path: Path) -> None:
    path = tmp_path / "last-confirmed.json"
    assert read_last_confirmed(path) is None
    write_last_confirmed(path, "1.2.0")
    assert read_last_confirmed(path) == "1.2.0"
    for damaged in ('{"version": "1.2', '{"version": "../1.0"}', '["1.2.0"]', '{}'):
        path.write_text(damaged)
        assert read_last_confirmed(path) is None, damaged
