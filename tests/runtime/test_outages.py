"""No command is lost to an outage: the real agent (`run_agent`) against moto (redrive policy,
maxReceiveCount 3, visibility 1 s: a redrive window of 3 s), the backend stand-in and its own
copy of the R4 database, with the outage far longer than the redrive window. The outage is
timed on the agent's fake clock (it ends when the agent has waited long enough), so minutes
pass in a moment; "no hot loop" is counted: probes and receives during the outage."""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from agent.commands import envelope
from agent.config import Secret
from agent.exit_codes import ExitCode
from agent.sqs_queue import FAILURE_REASON_ATTRIBUTE
from agent.standin import r4_sample
from agent.standin.r4_sample import CANARY_CODE
from tests.runtime.conftest import CountingClock, Practice, eventually

HOUR = 3600.0
MESSAGES = 10


class OutageClock(CountingClock):
    """Ends the outage once the agent has waited `seconds` of its clock since it began."""

    def __init__(self) -> None:
        super().__init__()
        self._lock_ends = threading.Lock()
        self._end_at: float | None = None
        self._end: Callable[[], object] | None = None
        self.ended = threading.Event()

    def outage(self, seconds: float, end: Callable[[], object]) -> None:
        with self._lock_ends:
            self._end_at = self.monotonic() + seconds
            self._end = end

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        with self._lock_ends:
            due = self._end is not None and self._end_at is not None
            if due and self.monotonic() >= self._end_at:  # type: ignore[operator]
                end, self._end = self._end, None
            else:
                end = None
        if end is not None:
            end()
            self.ended.set()


def _own_database(practice: Practice, tmp_path: Path) -> Path:
    """A copy of the sample for this test alone (it is locked and swapped), with a short busy
    timeout so a locked read fails in 0.1 s."""
    path = tmp_path / "sys2000.sqlite"
    shutil.copy(practice.db.path, path)
    cs = r4_sample.sqlite_connection_string(path).replace("Timeout=5000", "Timeout=100")
    practice.config = replace(
        practice.config, db=replace(practice.config.db, connection_string=Secret(cs))
    )
    return path


def _send_syncs(practice: Practice) -> set[str]:
    patches = {f"o{i}" for i in range(MESSAGES)}
    for patch in sorted(patches):
        practice.send(envelope.encode(envelope.PatientSync(CANARY_CODE, patch)))
    return patches


def _dead_lettered(practice: Practice, at_least: int) -> list[dict[str, object]]:
    """Receive from the dead-letter queue until `at_least` messages came (bounded wait)."""
    dead: list[dict[str, object]] = []

    def collect() -> int:
        dead.extend(practice.dead_letters())
        return len(dead)

    eventually(lambda: collect() >= at_least, 60)
    return dead


def _delivered(practice: Practice) -> set[str]:
    return {str(r.json["patientPatchId"]) for r in practice.backend.received_for("patient-sync")}


def _all_delivered_none_dead(practice: Practice, patches: set[str], clock: OutageClock) -> None:
    eventually(clock.ended.is_set, 60)
    eventually(lambda: _delivered(practice) >= patches, 60)
    eventually(lambda: practice.queue_counts() == (0, 0), 30)
    assert practice.dead_letters() == []


def _no_hot_loop(practice: Practice, outage_seconds: float, probes: int, receives: int) -> None:
    # at least one probe a minute, backing off from 2 s: 2+4+8+16+32+60+60... never a spin
    assert 2 <= probes <= 4 + outage_seconds / 30
    assert receives <= 2  # the receive that found the outage, and one racing it at most


def test_r4_locked_by_another_process_for_2_minutes_loses_no_command(
    practice: Practice, tmp_path: Path
) -> None:
    path = _own_database(practice, tmp_path)
    clock = OutageClock()
    agent = practice.agent(clock=clock).start().polling()
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")  # another process holds R4's file locked
    clock.outage(120, lambda: holder.execute("ROLLBACK"))
    receives_before = agent.stats("receives")
    patches = _send_syncs(practice)

    _all_delivered_none_dead(practice, patches, clock)
    lifecycle = agent.lifecycle
    assert lifecycle is not None
    probes = lifecycle.stats["probes"]
    _no_hot_loop(practice, 120, probes, 0)
    assert agent.stats("receives") - receives_before < 40  # real-time long polls, not a spin
    opened = [c for _, c in agent.sink.exceptions if c.get("breaker")]
    assert [c["breaker"] for c in opened] == [["R4"]]  # reported once, when it opened
    holder.close()
    agent.clock.advance(24 * HOUR)
    assert agent.wait() is ExitCode.END_OF_LIFE


def test_r4_file_replaced_then_restored_loses_no_command(
    practice: Practice, tmp_path: Path
) -> None:
    path = _own_database(practice, tmp_path)
    clock = OutageClock()
    agent = practice.agent(clock=clock).start().polling()
    kept = tmp_path / "kept.sqlite"
    shutil.copy(path, kept)
    empty = tmp_path / "empty.sqlite"
    sqlite3.connect(empty).close()  # a valid SQLite file without R4's tables
    empty.replace(path)  # a restore gone wrong: R4's file is not R4's database now
    clock.outage(180, lambda: kept.replace(path))
    patches = _send_syncs(practice)

    _all_delivered_none_dead(practice, patches, clock)
    assert agent.lifecycle is not None and agent.lifecycle.stats["probes"] >= 2
    agent.clock.advance(24 * HOUR)
    assert agent.wait() is ExitCode.END_OF_LIFE


def test_backend_answering_500_for_5_minutes_loses_no_command(practice: Practice) -> None:
    clock = OutageClock()
    agent = practice.agent(clock=clock).start().polling()
    practice.backend.fail_next(100_000, status=500)  # every endpoint, /data too
    clock.outage(300, practice.backend.clear_faults)
    patches = _send_syncs(practice)

    _all_delivered_none_dead(practice, patches, clock)
    lifecycle = agent.lifecycle
    assert lifecycle is not None
    _no_hot_loop(practice, 300, lifecycle.stats["probes"], 0)
    agent.clock.advance(24 * HOUR)
    assert agent.wait() is ExitCode.END_OF_LIFE


def test_403_on_every_call_exits_config_error_at_once_and_dead_letters_nothing(
    practice: Practice,
) -> None:
    agent = practice.agent().start().polling()
    practice.backend.reject_licence()  # revoked: every endpoint answers 403, /data too
    patches = _send_syncs(practice)

    assert agent.wait() is ExitCode.CONFIG_ERROR  # at once, not at the next hourly refresh
    assert practice.dead_letters() == []
    practice.backend.reject_licence(False)  # the licence is put right; the host starts it again
    again = practice.agent().start()
    eventually(lambda: _delivered(practice) >= patches, 60)
    eventually(lambda: practice.queue_counts() == (0, 0), 30)
    assert practice.dead_letters() == []
    again.clock.advance(24 * HOUR)
    assert again.wait() is ExitCode.END_OF_LIFE


def test_403_on_patient_sync_only_with_data_accepting_dead_letters_those_with_the_status(
    practice: Practice,
) -> None:
    agent = practice.agent().start().polling()
    practice.backend.fail_next(3, status=403, endpoint="patient-sync")
    patches = _send_syncs(practice)

    dead = _dead_lettered(practice, 3)
    eventually(lambda: len(_delivered(practice)) == MESSAGES - 3, 60)
    reasons = [
        str(m["MessageAttributes"][FAILURE_REASON_ATTRIBUTE]["StringValue"])  # type: ignore[index]
        for m in dead
    ]
    assert all(r.startswith("backend-refused: HTTP 403") for r in reasons)
    assert {json.loads(str(m["Body"]))["patientPatchId"] for m in dead} | _delivered(
        practice
    ) == patches
    # each refusal re-checked /data at once (accepted): the licence is fine
    assert len(practice.backend.received_for("data")) >= 1 + 3
    agent.clock.advance(24 * HOUR)
    assert agent.wait() is ExitCode.END_OF_LIFE


@pytest.mark.parametrize("status", [400, 404, 422])
def test_other_4xx_with_data_accepting_dead_letters_the_message_with_its_status(
    practice: Practice, status: int
) -> None:
    agent = practice.agent().start().polling()
    practice.backend.fail_next(1, status=status, endpoint="patient-sync")
    practice.send(envelope.encode(envelope.PatientSync(CANARY_CODE, "refused")))
    dead = _dead_lettered(practice, 1)
    reason = dead[0]["MessageAttributes"][FAILURE_REASON_ATTRIBUTE]["StringValue"]  # type: ignore[index]
    assert str(reason).startswith(f"backend-refused: HTTP {status}")
    agent.clock.advance(24 * HOUR)
    assert agent.wait() is ExitCode.END_OF_LIFE


# -- poison: rate-limited reports, bodies near SQS's size limit --------------------------------
def test_a_burst_of_poison_sends_one_report_not_one_per_message(practice: Practice) -> None:
    agent = practice.agent().start().polling()
    for i in range(25):
        practice.send(f'{{"type": "patient-sync", "r4PatientId": {i}')  # not JSON
    _dead_lettered(practice, 25)
    reports = [c for _, c in agent.sink.exceptions if c.get("outcome") == "dead-lettered"]
    assert len(reports) == 1  # the first; the rest are counted (agent clock: one window)
    agent.clock.advance(24 * HOUR)
    assert agent.wait() is ExitCode.END_OF_LIFE
    summaries = [e for m, _, e in agent.sink.messages if "same fault" in m]
    assert summaries and summaries[-1]["count"] == 24  # the summary sent on the way out


def test_poison_body_near_the_256kb_limit_still_reaches_the_dead_letter_queue_whole(
    practice: Practice,
) -> None:
    agent = practice.agent().start().polling()
    head = '{"type": "no-such-type", "pad": "'
    body = head + "x" * (262_144 - len(head) - 2 - 60) + '"}'  # 60 bytes under SQS's limit
    practice.send(body)
    dead = _dead_lettered(practice, 1)
    assert dead[0]["Body"] == body  # never dropped, never cut
    attributes = dead[0]["MessageAttributes"]
    assert isinstance(attributes, dict)
    reason = str(attributes[FAILURE_REASON_ATTRIBUTE]["StringValue"])
    assert reason.startswith("unknown-type") and len(reason) < 60  # the reason shortened
    agent.clock.advance(24 * HOUR)
    assert agent.wait() is ExitCode.END_OF_LIFE


def test_403_to_the_cycle_uploads_rechecks_the_licence_at_once_not_at_the_hourly_refresh(
    practice: Practice,
) -> None:
    release = threading.Event()
    practice.backend.hold_next(1, until=release, endpoint="patient-upload")
    agent = practice.agent().start()
    eventually(lambda: practice.backend.holding == 1)
    started = agent.clock.monotonic()
    practice.backend.reject_licence()  # revoked while the uploads run
    release.set()
    assert agent.wait() is ExitCode.CONFIG_ERROR
    assert agent.clock.monotonic() - started < HOUR  # no hourly scope refresh was waited for
    assert practice.dead_letters() == []
