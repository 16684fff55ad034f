"""Error translation at the SQS boundary, scripted with botocore's Stubber (SQS refusing
credentials cannot be provoked on moto, which accepts any)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from botocore.stub import Stubber

from agent.clock import FakeClock
from agent.credentials import ASSUMED_LIFETIME, refreshable_credentials, sqs_client
from agent.errors import TransientError
from agent.ports import Scope, SqsCredentials
from agent.sqs_queue import CredentialsRejectedError, SqsQueue

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


@pytest.mark.parametrize("code", ["ExpiredToken", "InvalidClientTokenId", "AccessDenied"])
def test_sqs_refusing_the_credentials_is_credentials_rejected(code: str) -> None:
    queue, stub = _queue()
    stub.add_client_error("receive_message", service_error_code=code, http_status_code=403)
    with stub, pytest.raises(CredentialsRejectedError, match=code):
        queue.receive()


def test_sqs_server_error_is_transient_and_names_the_operation() -> None:
    queue, stub = _queue()
    stub.add_client_error(
        "delete_message", service_error_code="InternalError", http_status_code=500
    )
    with stub, pytest.raises(TransientError, match="delete") as caught:
        from agent.sqs_queue import ReceivedMessage

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
