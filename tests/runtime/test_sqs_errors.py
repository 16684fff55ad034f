"""Error translation at the SQS boundary, scripted with botocore's Stubber, and what botocore
raises outside its own exception tree (real RefreshableCredentials on a fake clock). SQS itself
refusing credentials, on moto with authentication switched on: tests/runtime/test_faults.py."""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from botocore.stub import Stubber

from agent.clock import FakeClock
from agent.config import AgentConfig, parse_config
from agent.credentials import ASSUMED_LIFETIME, refreshable_credentials, sqs_client
from agent.errors import PermanentError, TransientError
from agent.ports import Scope, SqsCredentials
from agent.sqs_queue import (
    LONG_POLL_SECONDS,
    MAX_MESSAGES_PER_RECEIVE,
    ActionDeniedError,
    CredentialsRejectedError,
    ReceivedMessage,
    SqsQueue,
)

QUEUE = "http://127.0.0.1:1/123456789012/commands"


def _scope(expiration: datetime | None = None) -> Scope:
    return Scope(
        sqs_queue_url=QUEUE,
        sqs_region="eu-west-2",
        library_version="1.0.0",
        credentials=SqsCredentials("AKIDOLD", "old-secret", "old-token", expiration),
        server_date=None,
    )


def _queue() -> tuple[SqsQueue, Stubber]:
    client = sqs_client(_scope(), lambda: _scope().credentials, clock=FakeClock())
    return SqsQueue(client, QUEUE, wait_seconds=0), Stubber(client)


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("ExpiredToken", 400),
        ("InvalidClientTokenId", 403),
        ("AccessDenied", 403),
        ("UnrecognizedClientException", 400),  # the JSON protocol's name for a bad token
        ("403", 403),  # no code at all, only the status (as moto's server answers)
    ],
)
def test_sqs_refusing_the_credentials_is_credentials_rejected(code: str, status: int) -> None:
    queue, stub = _queue()
    stub.add_client_error("receive_message", service_error_code=code, http_status_code=status)
    with stub, pytest.raises(CredentialsRejectedError, match=code):
        queue.receive()


def test_sqs_server_error_is_transient_and_names_the_operation() -> None:
    queue, stub = _queue()
    stub.add_client_error(
        "delete_message", service_error_code="InternalError", http_status_code=500
    )
    with stub, pytest.raises(TransientError, match="delete") as caught:
        queue.delete(ReceivedMessage("m", "rh", "{}", 1, None))
    assert not isinstance(caught.value, CredentialsRejectedError)


def test_credentials_keep_the_session_token_and_assume_36_hours_without_expiration() -> None:
    clock = FakeClock()
    fetched: list[int] = []

    def fresh() -> SqsCredentials:
        fetched.append(1)
        return _scope(clock.now() + ASSUMED_LIFETIME).credentials

    credentials = refreshable_credentials(_scope().credentials, fresh, clock)
    assert credentials.get_frozen_credentials().token == "old-token"
    clock.advance(35 * 3600)  # an hour left of the assumed 36 h: no refresh yet
    credentials.get_frozen_credentials()
    assert fetched == []
    clock.advance(55 * 60)  # 5 minutes left: refreshed from the backend
    credentials.get_frozen_credentials()
    assert fetched == [1]


def test_credentials_near_expiry_are_refreshed_once_by_the_fetcher() -> None:
    clock = FakeClock()
    fetched: list[int] = []

    def fresh() -> SqsCredentials:
        fetched.append(1)
        return SqsCredentials(
            "AKIDNEW", "new-secret", "new-token", clock.now() + timedelta(hours=36)
        )

    initial = SqsCredentials("AKIDOLD", "s", "t", clock.now() + timedelta(hours=1))
    credentials = refreshable_credentials(initial, fresh, clock)
    assert credentials.get_frozen_credentials().access_key == "AKIDOLD"
    assert fetched == []
    clock.advance(55 * 60)  # 5 minutes left: inside botocore's mandatory refresh window
    assert credentials.get_frozen_credentials().access_key == "AKIDNEW"
    assert credentials.get_frozen_credentials().token == "new-token"
    assert fetched == [1]
    assert clock.now().tzinfo is UTC


def test_clock_far_ahead_of_credential_expiry_is_credentials_rejected_not_a_crash() -> None:
    # this machine's clock says the backend's credentials expired long ago, and the refresh
    # (the backend's /data) hands back the same ones: botocore raises a bare RuntimeError while
    # signing, before any connection is made
    clock = FakeClock()
    stale = SqsCredentials("AKIDOLD", "old-secret", "old-token", clock.now() - timedelta(days=2))
    refreshes: list[int] = []

    def fetch_fresh() -> SqsCredentials:
        refreshes.append(1)
        return stale

    scope = Scope(QUEUE, "eu-west-2", "1.0.0", stale, None)
    client = sqs_client(scope, fetch_fresh, clock=clock, max_attempts=1)
    queue = SqsQueue(client, QUEUE, wait_seconds=0)
    with pytest.raises(CredentialsRejectedError, match="still expired") as caught:
        queue.receive()
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert refreshes == [1]
    with pytest.raises(CredentialsRejectedError, match="change-visibility"):
        queue.change_visibility([ReceivedMessage("m", "rh", "{}", 1, None)], 60)


def test_credential_refresh_refused_by_the_backend_passes_through_as_is() -> None:
    clock = FakeClock()
    stale = SqsCredentials("AKIDOLD", "s", "t", clock.now() - timedelta(minutes=1))

    def refused() -> SqsCredentials:
        raise PermanentError("the backend refused the licence key (HTTP 403)")

    client = sqs_client(Scope(QUEUE, "eu-west-2", "1.0.0", stale, None), refused, clock=clock)
    with pytest.raises(PermanentError, match="refused the licence"):
        SqsQueue(client, QUEUE, wait_seconds=0).receive()


@pytest.mark.parametrize(
    "policy",
    [
        "not json",
        '{"maxReceiveCount": 3}',
        '{"deadLetterTargetArn": "arn:aws:sqs:eu-west-2"}',
        '{"deadLetterTargetArn": 42}',
        "[1, 2]",
    ],
)
def test_malformed_redrive_policy_is_a_permanent_error_naming_the_policy(policy: str) -> None:
    queue, stub = _queue()
    stub.add_response(
        "get_queue_attributes",
        {"Attributes": {"RedrivePolicy": policy}},
        {"QueueUrl": QUEUE, "AttributeNames": ["RedrivePolicy"]},
    )
    with stub, pytest.raises(PermanentError, match="RedrivePolicy names no usable") as caught:
        queue.dead_letter(ReceivedMessage("m", "rh", "{}", 1, None), "not-json: x")
    assert "not json" not in str(caught.value)  # the policy text is not echoed


def test_production_receive_is_a_20_second_long_poll_for_10_messages_within_the_read_timeout(
) -> None:
    # the defaults the service runs with: SqsQueue and the client exactly as agent.app builds
    # them (only wait_seconds is ever changed, by tests and dev configs)
    client = sqs_client(_scope(), lambda: _scope().credentials, clock=FakeClock())
    queue = SqsQueue(client, QUEUE)
    stub = Stubber(client)
    stub.add_response(
        "receive_message",
        {"Messages": []},
        {
            "QueueUrl": QUEUE,
            "MaxNumberOfMessages": 10,
            "WaitTimeSeconds": 20,
            "MessageSystemAttributeNames": ["ApproximateReceiveCount", "SentTimestamp"],
        },
    )
    with stub:
        assert queue.receive() == []
    stub.assert_no_pending_responses()
    assert (LONG_POLL_SECONDS, MAX_MESSAGES_PER_RECEIVE) == (20, 10)
    # and a config without the dev/test [timing] key, read from a file or built in code (as
    # the demo does), asks agent.app for that same wait: agent.app takes it from the config
    config = parse_config(Path("config.toml"), 'licence_key = "k"\nbackend_url = "https://x/"\n')
    assert config.long_poll_seconds == LONG_POLL_SECONDS
    built_in_code = {f.name: f.default for f in fields(AgentConfig)}["long_poll_seconds"]
    assert built_in_code == LONG_POLL_SECONDS
    read_timeout = client.meta.config.read_timeout  # type: ignore[attr-defined]  # not in the stubs
    assert read_timeout > LONG_POLL_SECONDS  # a quiet queue is an empty answer, not a timeout


def test_visibility_is_changed_ten_per_call_and_entries_sqs_refuses_are_returned_not_raised(
) -> None:
    # the heartbeat extends every message in flight: one call per ten, and one message deleted
    # meanwhile must not hide that the others were extended
    queue, stub = _queue()
    messages = [ReceivedMessage(f"m{i}", f"rh{i}", "{}", 1, None) for i in range(3)]
    entries = [{"Id": str(i), "ReceiptHandle": f"rh{i}", "VisibilityTimeout": 60} for i in range(3)]
    stub.add_response(
        "change_message_visibility_batch",
        {
            "Successful": [{"Id": "0"}, {"Id": "2"}],
            "Failed": [
                {"Id": "1", "SenderFault": True, "Code": "ReceiptHandleIsInvalid", "Message": "x"}
            ],
        },
        {"QueueUrl": QUEUE, "Entries": entries},
    )
    stub.add_client_error(
        "change_message_visibility_batch", service_error_code="ExpiredToken", http_status_code=403
    )
    stub.add_client_error(
        "change_message_visibility_batch", service_error_code="AccessDenied", http_status_code=403
    )
    with stub:
        assert queue.change_visibility(messages, 60) == [(messages[1], "ReceiptHandleIsInvalid")]
        with pytest.raises(CredentialsRejectedError, match="change-visibility"):
            queue.change_visibility(messages, 60)
        # least privilege: a policy without the action turns it off, once, for the process
        with pytest.raises(ActionDeniedError) as denied:
            queue.change_visibility(messages, 60)
        assert denied.value.first
        with pytest.raises(ActionDeniedError) as again:  # no request: nothing is stubbed
            queue.change_visibility(messages, 60)
        assert not again.value.first
    stub.assert_no_pending_responses()
    for wrong in ([], messages * 4):
        with pytest.raises(ValueError, match="1 to 10"):
            queue.change_visibility(wrong, 60)
