"""Faults around the running agent: it survives, or exits with the documented code, and never
loops hot (counted on the fake clock: sleeps and receive attempts per simulated hour)."""

from __future__ import annotations

import json
import secrets
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

from agent.app import Runtime, main, run_agent
from agent.commands import envelope
from agent.commands.registry import HANDLERS, Registry, RegistryError, default_registry
from agent.config import RollbarConfig, Secret
from agent.credentials import sqs_client
from agent.exit_codes import ExitCode
from agent.flynotes.client import Timeouts
from agent.lifecycle import Backoff, LifeSettings
from agent.reporting import RollbarSink
from agent.sqs_queue import CredentialsRejectedError
from agent.standin import r4_sample
from agent.standin.r4_sample import CANARY_CODE
from agent.standin.sqs_local import LocalSqs, SqsEndpoint
from tests.fixtures.rollbar_endpoint import FakeRollbar
from tests.runtime.conftest import CountingClock, Practice, RecordingSink, eventually
from updater.gate import GateAction, GateDecision, ReportOnlyGate

HOUR = 3600.0


def _started(practice: Practice, **kwargs: object):  # type: ignore[no-untyped-def]
    return practice.agent(**kwargs).start().polling()


def _sync(patch: str) -> str:
    return envelope.encode(envelope.PatientSync(r4_patient_id=CANARY_CODE, patient_patch_id=patch))


# -- at start ----------------------------------------------------------------------------------
def test_database_unavailable_at_start_exits_transient_failure_after_bounded_backoff(
    practice: Practice, tmp_path: Path
) -> None:
    missing = r4_sample.sqlite_connection_string(tmp_path / "gone" / "sys2000.sqlite")
    practice.config = replace(
        practice.config, db=replace(practice.config.db, connection_string=Secret(missing))
    )
    agent = practice.agent().start()
    assert agent.wait() is ExitCode.TRANSIENT_FAILURE
    # 3 attempts, 2 back-off pauses of 2 s and 4 s (1 s steps), then give up and report once
    assert sum(agent.clock.sleeps) == pytest.approx(6.0)
    assert len(agent.sink.exceptions) == 1
    assert practice.backend.received_for("data", status=None) == []


def test_database_back_during_start_retries_carries_on(practice: Practice, tmp_path: Path) -> None:
    later = tmp_path / "later" / "sys2000.sqlite"
    practice.config = replace(
        practice.config,
        db=replace(
            practice.config.db, connection_string=Secret(r4_sample.sqlite_connection_string(later))
        ),
    )
    agent = practice.agent()

    class RestoreOnSleep(CountingClock):
        def sleep(self, seconds: float) -> None:
            if not later.exists():
                later.parent.mkdir()
                shutil.copy(practice.db.path, later)
            super().sleep(seconds)

    agent.clock = RestoreOnSleep()
    agent.start()
    eventually(lambda: practice.backend.received_for("patient-upload"))
    agent.clock.advance(24 * HOUR)
    assert agent.wait() is ExitCode.END_OF_LIFE


def test_backend_5xx_at_start_exits_transient_failure(practice: Practice) -> None:
    practice.backend.fail_next(1000, status=503, endpoint="data")
    agent = practice.agent().start()
    assert agent.wait() is ExitCode.TRANSIENT_FAILURE
    assert len(agent.sink.exceptions) == 1


def test_licence_rejected_at_start_exits_config_error_without_retrying(practice: Practice) -> None:
    practice.backend.reject_licence()
    agent = practice.agent().start()
    assert agent.wait() is ExitCode.CONFIG_ERROR
    assert len(practice.backend.received_for("data", status=None)) == 1
    assert agent.clock.sleeps == []


def test_missing_config_file_exits_config_error_naming_the_file_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(tmp_path / "nowhere.toml", foreground=False)
    assert code is ExitCode.CONFIG_ERROR
    err = capsys.readouterr().err
    assert "nowhere.toml" in err and "Traceback" not in err


def test_duplicate_handler_registration_fails_at_start_up_and_is_reported_as_crash(
    practice: Practice,
) -> None:
    def doubled() -> Registry:
        registry = default_registry()
        registry.register(envelope.Restart, lambda c, ctx: None)
        return registry

    sink = RecordingSink()
    config = practice.config
    code = run_agent(config, Runtime(clock=CountingClock(), errors=sink, registry_factory=doubled))
    assert code is ExitCode.CRASH
    assert isinstance(sink.exceptions[0][0], RegistryError)
    assert sink.flushes == 1


# -- mid-run -----------------------------------------------------------------------------------
class DatabaseGoesAwayAfterStart(ReportOnlyGate):
    """Moves the database file away right after the agent confirmed its start (after the start
    ping, before any worker opened its own connection): R4 became unreachable mid-run."""

    def __init__(self, path: Path) -> None:
        super().__init__("1.0.0")
        self.path = path
        self.away = path.with_suffix(".away")

    def confirm_running(self) -> None:
        self.path.rename(self.away)

    def bring_back(self) -> None:
        self.away.rename(self.path)


def test_database_unavailable_mid_run_uploads_fail_reported_and_patient_sync_retried(
    practice: Practice, tmp_path: Path
) -> None:
    copy = tmp_path / "db" / "sys2000.sqlite"
    copy.parent.mkdir()
    shutil.copy(practice.db.path, copy)
    practice.config = replace(
        practice.config,
        db=replace(
            practice.config.db, connection_string=Secret(r4_sample.sqlite_connection_string(copy))
        ),
    )
    gate = DatabaseGoesAwayAfterStart(copy)
    agent = practice.agent(gate=gate).start().polling()
    assert practice.backend.received_for("patient-upload") == []
    assert agent.stats("upload-failures") == 3  # reported, and the agent polls on
    practice.send(_sync("db-down"))
    eventually(lambda: any(c.get("message_type") for _, c in agent.sink.exceptions))
    gate.bring_back()
    eventually(lambda: practice.backend.received_for("patient-sync"))
    assert practice.backend.received_for("patient-sync")[0].json["patientPatchId"] == "db-down"
    agent.clock.advance(HOUR)  # the next cycle's uploads reconnect and succeed
    agent.polling(2)
    assert practice.backend.received_for("patient-upload")
    agent.clock.advance(24 * HOUR)
    assert agent.wait() is ExitCode.END_OF_LIFE


def test_sqs_down_mid_run_backs_off_without_hot_looping_and_ends_life(
    practice: Practice,
) -> None:
    own = LocalSqs(max_receive_count=3, visibility_timeout=1).start()
    practice.backend.sqs_queue_url = own.endpoint.queue_url
    practice.config = replace(practice.config, sqs_endpoint_url=own.endpoint.endpoint_url)
    agent = _started(practice)
    own.stop()  # SQS unreachable from now on: every receive is refused
    assert agent.wait(timeout=120) is ExitCode.END_OF_LIFE
    failures = agent.stats("receive-failures")
    # back-off doubles from 2 s to a 300 s cap (8 steps), then one try per 300 s for the day
    assert 0 < failures <= 8 + 24 * HOUR / 300 + 1
    assert all(s > 0 for s in agent.clock.sleeps)
    # reported on the first failure of the streak and every 10th, not each time
    poll_reports = [c for _, c in agent.sink.exceptions if c.get("phase") == "poll"]
    assert 1 <= len(poll_reports) <= failures // 10 + 1


def test_backend_5xx_and_429_on_patient_sync_are_retried_not_lost(practice: Practice) -> None:
    agent = _started(practice)
    practice.backend.fail_next(2, status=502, endpoint="patient-sync")
    practice.send(_sync("five-hundred"))
    eventually(lambda: practice.backend.received_for("patient-sync"))
    practice.backend.throttle_next(4, retry_after="1", endpoint="patient-sync")
    practice.send(_sync("throttled"))
    eventually(lambda: len(practice.backend.received_for("patient-sync")) == 2)
    patches = [r.json["patientPatchId"] for r in practice.backend.received_for("patient-sync")]
    assert sorted(patches) == ["five-hundred", "throttled"]
    eventually(lambda: practice.queue_counts() == (0, 0))
    assert practice.dead_letters() == []
    assert agent.sink.exceptions  # the failed deliveries were reported


def test_backend_timing_out_on_patient_sync_is_retried_not_lost(practice: Practice) -> None:
    agent = practice.agent()
    agent.backend_timeouts = Timeouts(sync_read=0.3)
    agent.start().polling()
    practice.backend.slow_next(2, seconds=1.0, endpoint="patient-sync")  # both tries time out
    practice.send(_sync("slow"))
    eventually(lambda: practice.backend.received_for("patient-sync", status=200))
    assert any("no answer in time" in str(e) for e, _ in agent.sink.exceptions)
    eventually(lambda: practice.queue_counts() == (0, 0))
    assert practice.dead_letters() == []


def test_backend_down_at_hourly_scope_refresh_keeps_polling_with_current_scope(
    practice: Practice,
) -> None:
    agent = _started(practice)
    practice.backend.fail_next(1000, status=503, endpoint="data")
    agent.clock.advance(HOUR)  # the next cycle's scope fetch fails: carry on
    eventually(lambda: agent.stats("cycles") >= 2)
    practice.backend.clear_faults()
    practice.send(_sync("after-refresh-failure"))
    eventually(lambda: practice.backend.received_for("patient-sync"))
    phases = [c.get("phase") for _, c in agent.sink.exceptions]
    assert "scope-refresh" in phases


def test_expired_credentials_are_refreshed_from_the_backend(practice: Practice) -> None:
    clock = CountingClock()
    expires = clock.now() + timedelta(minutes=30)  # outside botocore's refresh windows for now
    practice.backend.set_credentials("AKIDFIRST", "first-secret", "first-token", expires)
    _started(practice, clock=clock)
    data_calls = len(practice.backend.received_for("data"))
    practice.backend.set_credentials(
        "AKIDSECOND", "second-secret", "second-token", clock.now() + timedelta(hours=36)
    )
    clock.advance(25 * 60)  # now 5 minutes from expiry: the next SQS call must refresh
    eventually(lambda: len(practice.backend.received_for("data")) == data_calls + 1)
    practice.send(_sync("after-refresh"))
    eventually(lambda: practice.backend.received_for("patient-sync"))
    assert len(practice.backend.received_for("data")) == data_calls + 1  # refreshed once


def test_licence_rejected_when_refreshing_credentials_exits_config_error(
    practice: Practice,
) -> None:
    clock = CountingClock()
    practice.backend.set_credentials("AKID", "s", "t", clock.now() + timedelta(minutes=30))
    agent = _started(practice, clock=clock)
    practice.backend.reject_licence()
    clock.advance(25 * 60)  # inside the mandatory refresh window: the refresh is refused
    assert agent.wait() is ExitCode.CONFIG_ERROR
    assert [c.get("phase") for _, c in agent.sink.exceptions] == ["poll"]


def test_rollbar_unreachable_does_not_stop_the_agent(practice: Practice) -> None:
    practice.config = replace(
        practice.config,
        rollbar=RollbarConfig(
            access_token=Secret("0123456789abcdef0123456789abcdef"),
            environment="test",
            endpoint="http://127.0.0.1:9/api/1/",  # discard port: nothing listens
        ),
    )
    sink = RollbarSink(
        "0123456789abcdef0123456789abcdef",
        environment="test",
        endpoint="http://127.0.0.1:9/api/1/",
        timeout=1.0,
    )
    agent = practice.agent(sink=sink).start().polling()
    practice.send('{"not": "a command"}')  # reported (and the report fails to send)
    practice.send(envelope.encode(envelope.TestMessage()))
    practice.send(_sync("rollbar-down"))
    eventually(lambda: practice.backend.received_for("patient-sync"))
    eventually(lambda: practice.queue_counts() == (0, 0))
    agent.clock.advance(24 * HOUR)
    assert agent.wait() is ExitCode.END_OF_LIFE


# -- how the life ends -------------------------------------------------------------------------
class SwitchingGate:
    """A VersionGate whose updater has just switched to the wanted version."""

    def __init__(self) -> None:
        self.confirmed = 0

    def ensure(self, wanted: str) -> GateDecision:
        return GateDecision(GateAction.RESTART_INTO_NEW_VERSION, "1.0.0", wanted, "switched")

    def confirm_running(self) -> None:
        self.confirmed += 1


def test_version_switched_by_updater_exits_updated_before_polling(practice: Practice) -> None:
    practice.backend.library_version = "1.1.0"
    gate = SwitchingGate()
    code = run_agent(
        practice.config,
        Runtime(clock=CountingClock(), errors=RecordingSink(), gate=gate, sqs_max_attempts=1),
    )
    assert code is ExitCode.UPDATED
    assert gate.confirmed == 1
    assert practice.backend.received_for("patient-upload") == []


def test_stop_event_finishes_in_flight_work_then_exits_end_of_life(practice: Practice) -> None:
    agent = _started(practice)
    practice.backend.slow_next(1, seconds=1.5, endpoint="patient-sync")
    practice.send(_sync("in-flight"))
    eventually(lambda: practice.backend.received_for("patient-sync", status=None) or False)
    agent.stop.set()
    assert agent.wait() is ExitCode.END_OF_LIFE
    assert practice.backend.received_for("patient-sync")  # it finished before the exit


def test_stop_lets_running_work_finish_but_releases_waiting_messages_for_the_next_run(
    practice: Practice,
) -> None:
    # a bulk upload runs (held by the backend) and another waits behind it: on stop the agent
    # must not work through the waiting one (the host kills it after its grace period) but
    # hand it back to the queue at once, visible to the next run
    agent = _started(practice)
    uploads_before = len(practice.backend.received_for("patient-upload"))
    appointments_before = len(practice.backend.received_for("appointment-upload", status=None))
    release = threading.Event()
    practice.backend.hold_next(1, until=release, endpoint="patient-upload")
    try:
        practice.send(envelope.encode(envelope.BulkUploadPatients(full=True)))
        eventually(lambda: practice.backend.holding == 1)
        practice.send(envelope.encode(envelope.BulkUploadAppointments(full=True)))
        eventually(lambda: practice.queue_counts() == (0, 2))
        agent.stop.set()
        # visible again while the running upload is still held (the heartbeat would keep it
        # hidden for as long as it waited in the lane)
        eventually(lambda: practice.queue_counts() == (1, 1))
        assert agent.result is None  # still waiting for the running upload
    finally:
        release.set()
    assert agent.wait() is ExitCode.END_OF_LIFE
    assert len(practice.backend.received_for("patient-upload")) == uploads_before + 1
    assert len(practice.backend.received_for("appointment-upload", status=None)) == (
        appointments_before
    )
    assert practice.queue_counts() == (1, 0)  # waiting for the next run, not dead-lettered
    assert practice.dead_letters() == []


def test_life_hours_from_config_end_the_life(practice: Practice) -> None:
    agent = practice.agent(
        life=LifeSettings(poll_hours=0.5, life_hours=2, backoff=Backoff(jitter=0))
    ).start()
    for cycle in range(1, 5):
        agent.polling(cycle)
        agent.clock.advance(0.5 * HOUR)
    assert agent.wait() is ExitCode.END_OF_LIFE
    # a version check and an upload pass each half hour: 4 cycles in the 2-hour life (the
    # statuses go in full every pass; the patients only in the first, nothing changed since)
    assert agent.stats("cycles") == 4
    assert len(practice.backend.received_for("appointment-status-upload")) == 4
    assert len(practice.backend.received_for("patient-upload")) == 1


def test_signals_set_the_stop_event() -> None:
    import signal

    from agent.app import stop_on_signals

    stop = threading.Event()
    with stop_on_signals(stop):
        signal.raise_signal(signal.SIGTERM)
    assert stop.is_set()


def test_clock_far_ahead_of_credential_expiry_backs_off_and_recovers_instead_of_crashing(
    practice: Practice,
) -> None:
    # the backend's credentials expired two days ago by this machine's clock, and every
    # refresh hands back the same ones: botocore raises RuntimeError while signing
    clock = CountingClock()
    practice.backend.set_credentials("AKIDSTALE", "s", "t", clock.now() - timedelta(days=2))
    agent = practice.agent(clock=clock).start()
    eventually(lambda: agent.stats("polling-in-cycle") >= 1 and len(agent.sink.exceptions) >= 1)
    eventually(lambda: len(practice.backend.received_for("data")) >= 5)  # retried, backing off
    practice.backend.set_credentials("AKIDGOOD", "s", "t", clock.now() + timedelta(hours=36))
    practice.send(_sync("clock-ahead"))
    eventually(lambda: practice.backend.received_for("patient-sync"))
    first, context = agent.sink.exceptions[0]
    assert "still expired" in str(first) and context["phase"] == "poll"
    assert all(s > 0 for s in clock.sleeps)  # every retry waited
    assert sum(clock.sleeps) >= 2 + 4  # the first two back-off pauses at least
    clock.advance(24 * HOUR)
    assert agent.wait() is ExitCode.END_OF_LIFE


# -- SQS itself refusing the credentials (moto with authentication on) --------------------------
Credentials = tuple[str, str, str]  # access key id, secret, session token


@dataclass
class MotoAuth:
    """moto's server checking every request's signature against its IAM/STS state, switched
    on by `enforce()`, with `credentials` of a role allowed sqs:*."""

    endpoint: str
    credentials: Credentials

    def enforce(self) -> None:
        # /moto-api/reset-auth: authenticate from request 0 on
        reset = requests.post(f"{self.endpoint}/moto-api/reset-auth", data=b"0", timeout=5)
        reset.raise_for_status()


@pytest.fixture
def moto_auth(practice: Practice) -> Iterator[MotoAuth]:
    """Mint temporary credentials (STS AssumeRole) of a role allowed sqs:* while moto still
    accepts anything. Authentication is process-wide in moto, so it is switched off again at
    the end whatever happens."""
    endpoint = practice.sqs.endpoint_url
    setup = {
        "endpoint_url": endpoint,
        "region_name": "us-east-1",
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }
    role = f"r4agent-{secrets.token_hex(4)}"
    iam = boto3.client("iam", **setup)  # type: ignore[call-overload]
    anyone = {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}
    arn = iam.create_role(
        RoleName=role,
        AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [anyone]}),
    )["Role"]["Arn"]
    sqs_only = {"Effect": "Allow", "Action": "sqs:*", "Resource": "*"}
    iam.put_role_policy(
        RoleName=role,
        PolicyName="sqs",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [sqs_only]}),
    )
    sts = boto3.client("sts", **setup)  # type: ignore[call-overload]
    c = sts.assume_role(RoleArn=arn, RoleSessionName="r4agent-test")["Credentials"]
    try:
        yield MotoAuth(endpoint, (c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"]))
    finally:
        requests.post(f"{endpoint}/moto-api/reset-auth", data=b"inf", timeout=5)


@pytest.fixture
def sqs_enforcing_credentials(moto_auth: MotoAuth) -> Callable[[], Credentials]:
    """moto checking signatures from now on; returns a function giving good credentials."""
    moto_auth.enforce()
    return lambda: moto_auth.credentials


def _authorised_client(sqs: SqsEndpoint, credentials: Credentials):  # type: ignore[no-untyped-def]
    key, secret, token = credentials
    return boto3.client(
        "sqs",
        endpoint_url=sqs.endpoint_url,
        region_name=sqs.region,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        aws_session_token=token,
    )


@pytest.mark.parametrize("refused", ["unknown key", "wrong secret"])
def test_credentials_sqs_refuses_are_replaced_by_a_fresh_scope_with_back_off(
    practice: Practice, sqs_enforcing_credentials: Callable[[], Credentials], refused: str
) -> None:
    good = sqs_enforcing_credentials()
    bad = ("ASIAUNKNOWNKEY000000", "x" * 40, "bad-token") if refused == "unknown key" else (
        good[0], "y" * 40, good[2]
    )
    later = CountingClock().now() + timedelta(hours=36)
    practice.backend.set_credentials(*bad, later)

    class GoodKeysAfterFirstPause(CountingClock):
        """The backend hands out good keys from the agent's first back-off pause on."""

        def sleep(self, seconds: float) -> None:
            if not self.sleeps:
                practice.backend.set_credentials(*good, later)
            super().sleep(seconds)

    agent = practice.agent(clock=GoodKeysAfterFirstPause()).start().polling()
    client = _authorised_client(practice.sqs, good)
    client.send_message(QueueUrl=practice.sqs.queue_url, MessageBody=_sync("fresh-keys"))
    eventually(lambda: practice.backend.received_for("patient-sync"))  # polling resumed
    assert practice.backend.received_for("patient-sync")[0].json["patientPatchId"] == "fresh-keys"
    # refused twice (the scope fetched right after the first refusal still held the bad keys),
    # each time a fresh /data call and a growing pause: 2 s then 4 s, in 1 s steps
    assert len(practice.backend.received_for("data")) == 1 + 2
    assert agent.clock.sleeps == [1.0] * 6
    [(error, context)] = agent.sink.exceptions  # the first of the streak is reported
    assert isinstance(error, CredentialsRejectedError) and context["phase"] == "poll"
    agent.stop.set()
    assert agent.wait() is ExitCode.END_OF_LIFE


def test_message_in_flight_across_a_credential_swap_is_deleted_with_the_new_credentials(
    practice: Practice, moto_auth: MotoAuth
) -> None:
    # a patient-sync is received with credentials SQS then stops accepting; the agent swaps in
    # a fresh scope's while the handler still runs: the delete (and the heartbeat) must use the
    # new client, or the message comes back and the patient is sent twice
    refused = ("ASIAUNKNOWNKEY000000", "x" * 40, "refused-token")
    later = CountingClock().now() + timedelta(hours=36)
    practice.backend.set_credentials(*refused, later)  # moto does not check them yet
    extended: list[int] = []

    def noting_extensions(*args: Any, **kwargs: Any) -> Any:
        client = sqs_client(*args, **kwargs)  # the real factory; botocore's own event hook
        client.meta.events.register(
            "after-call.sqs.ChangeMessageVisibilityBatch",
            lambda http_response, **_: extended.append(http_response.status_code),
        )
        return client

    agent = _started(practice, sqs_client_factory=noting_extensions)
    release = threading.Event()
    practice.backend.hold_next(1, until=release, endpoint="patient-sync")
    try:
        practice.send(_sync("across-the-swap"))
        eventually(lambda: practice.backend.holding == 1)
        eventually(lambda: 200 in extended)  # hidden for 5 s more, while the swap happens
        data_calls = len(practice.backend.received_for("data"))
        practice.backend.set_credentials(*moto_auth.credentials, later)
        moto_auth.enforce()  # from now on the first credentials are refused
        eventually(lambda: len(practice.backend.received_for("data")) > data_calls)
        receives = agent.stats("receives")  # the next receive comes after the new client
        eventually(lambda: agent.stats("receives") > receives)
    finally:
        release.set()
    good = _authorised_client(practice.sqs, moto_auth.credentials)

    def queue_empty() -> bool:
        attributes = good.get_queue_attributes(
            QueueUrl=practice.sqs.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return bool(
            attributes["ApproximateNumberOfMessages"]
            == attributes["ApproximateNumberOfMessagesNotVisible"]
            == "0"
        )

    eventually(queue_empty)  # deleted: not left to come back
    agent.stop.set()
    assert agent.wait() is ExitCode.END_OF_LIFE
    assert [r.json["patientPatchId"] for r in practice.backend.received_for("patient-sync")] == [
        "across-the-swap"
    ]


# -- secrets learned mid-run never reach Rollbar -----------------------------------------------
FIRST_SECRET = "q7Wd3kPz/Vn8Rt2Lm5Xc9Bf4Hj6Ks1Ng0YaCANRY1"[:40]  # SecretAccessKey-shaped
FRESH_SECRET = "Zp4Lq9Xv/Tn2Wb7Rc5Md8Kf3Hs6Jg1Ny0EaCANRY2"[:40]
FRESH_TOKEN = "fresh-session-token-" + "Fq3" * 8


def test_refreshed_sqs_secret_in_an_exception_message_is_masked_in_the_rollbar_payload(
    practice: Practice, rollbar_endpoint: FakeRollbar
) -> None:
    assert len(FIRST_SECRET) == len(FRESH_SECRET) == 40  # too short for the credential shapes

    def echoing_registry() -> Registry:
        # a library that puts the credentials it was given into its error text
        registry = Registry()
        for command_type, handler, serial in HANDLERS:
            if command_type is envelope.TestMessage:
                handler = _echo_credentials
            registry.register(command_type, handler, serial=serial)
        return registry

    clock = CountingClock()
    practice.backend.set_credentials(
        "AKIDFIRST", FIRST_SECRET, "first-session-token", clock.now() + timedelta(minutes=30)
    )
    sink = RollbarSink("rollbar-token-0a1b2c3d", environment="test", endpoint=rollbar_endpoint.url)
    agent = practice.agent(clock=clock, sink=sink, registry_factory=echoing_registry)
    agent.start().polling()
    data_calls = len(practice.backend.received_for("data"))
    practice.backend.set_credentials(
        "AKIDFRESH", FRESH_SECRET, FRESH_TOKEN, clock.now() + timedelta(hours=36)
    )
    clock.advance(25 * 60)  # inside botocore's refresh window: the next SQS call refreshes
    eventually(lambda: len(practice.backend.received_for("data")) == data_calls + 1)
    practice.send(envelope.encode(envelope.TestMessage()))
    eventually(lambda: rollbar_endpoint.items)
    sink.flush(10)
    agent.stop.set()
    assert agent.wait() is ExitCode.END_OF_LIFE
    texts = [item.text for item in rollbar_endpoint.items]
    assert any("signing with *** (then ***, token ***) failed" in t for t in texts), texts
    for text in texts:
        for secret in (FIRST_SECRET, FRESH_SECRET, FRESH_TOKEN):
            assert secret not in text


def _echo_credentials(command: envelope.TestMessage, ctx: object) -> None:
    raise RuntimeError(
        f"signing with {FRESH_SECRET} (then {FIRST_SECRET}, token {FRESH_TOKEN}) failed"
    )


def test_exception_ending_a_background_thread_is_reported_and_the_hook_restored(
    practice: Practice,
) -> None:
    before = threading.excepthook
    agent = _started(practice)
    assert threading.excepthook is not before  # installed for the life of the agent

    def crashes() -> None:
        raise LookupError("a background thread's bug")

    thread = threading.Thread(target=crashes, name="some-library-thread")
    thread.start()
    thread.join()
    [(error, context)] = agent.sink.exceptions
    assert isinstance(error, LookupError)
    assert context == {"phase": "thread", "thread": "some-library-thread"}
    agent.stop.set()
    assert agent.wait() is ExitCode.END_OF_LIFE
    assert threading.excepthook is before  # put back at exit


THREAD_SECRET = "thread-crash-secret-" + secrets.token_hex(8)


def test_thread_crash_traceback_reaches_stderr_only_through_the_masking_log_handlers(
    practice: Practice,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # as in production, the hook the agent finds is Python's default one, which would print
    # the traceback (the secret in the exception's message) to stderr past the log's masking
    from agent.logs import log_file, setup_logging, teardown_logging

    monkeypatch.setattr(threading, "excepthook", threading.__excepthook__)
    setup_logging(tmp_path / "data", foreground=True, secrets=[THREAD_SECRET])
    try:
        agent = _started(practice)

        def crashes() -> None:
            raise LookupError(f"a library's bug, quoting {THREAD_SECRET}")

        thread = threading.Thread(target=crashes, name="leaky-library-thread")
        thread.start()
        thread.join()
        agent.stop.set()
        assert agent.wait() is ExitCode.END_OF_LIFE
    finally:
        teardown_logging()
    err = capfd.readouterr().err
    logged = log_file(tmp_path / "data").read_text(encoding="utf-8")
    for text in (err, logged):
        assert "thread leaky-library-thread died: LookupError" in text
        assert "a library's bug, quoting ***" in text  # the traceback, masked
        assert THREAD_SECRET not in text
    [(error, _)] = agent.sink.exceptions
    assert isinstance(error, LookupError)


class ClosingWatch:
    """The real SQS client factory (agent.credentials.sqs_client), noting each client it built
    and each call of that client's public close()."""

    def __init__(self) -> None:
        self.built: list[object] = []
        self.closed: list[object] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        client = sqs_client(*args, **kwargs)
        close = client.close

        def noting_close() -> None:
            self.closed.append(client)
            close()

        client.close = noting_close  # type: ignore[method-assign]
        self.built.append(client)
        return client


def test_hourly_new_sqs_client_closes_the_one_it_replaces(practice: Practice) -> None:
    watch = ClosingWatch()
    agent = practice.agent(sqs_client_factory=watch).start().polling()
    for cycle in (2, 3):
        agent.clock.advance(HOUR)
        agent.polling(cycle)
    assert len(watch.built) == 3
    assert watch.closed == watch.built[:2]  # the current one stays open while it is in use
    practice.send(_sync("after-two-replacements"))
    eventually(lambda: practice.backend.received_for("patient-sync"))
    agent.stop.set()
    assert agent.wait() is ExitCode.END_OF_LIFE
    assert watch.closed == watch.built  # and the last one at exit
