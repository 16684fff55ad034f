"""The one module that talks SQS (boto3). Every botocore failure is translated here into
TransientError (or CredentialsRejectedError, a TransientError the lifecycle answers by
re-fetching its scope); nothing botocore-specific escapes.

Semantics (docs/messages.md):
- receive: long poll (WaitTimeSeconds 20 by default), up to 10 messages.
- delete: ONLY after the handler succeeded.
- a transient failure is left alone: the message becomes visible again after the visibility
  timeout and, after the queue's maxReceiveCount, SQS moves it to the dead-letter queue.
- a permanent failure is moved to the dead-letter queue at once (sent there with a
  `failure-reason` message attribute, then deleted here), so it is never retried forever.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import BotoCoreError, ClientError

from agent.errors import PermanentError, TransientError

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

log = logging.getLogger(__name__)

LONG_POLL_SECONDS: Final = 20
MAX_MESSAGES_PER_RECEIVE: Final = 10
FAILURE_REASON_ATTRIBUTE: Final = "failure-reason"

# Error codes that mean "these credentials are no good any more": fetch a fresh scope.
_CREDENTIAL_CODES: Final = frozenset(
    {
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AccessDenied",
        "AccessDeniedException",
        "RequestExpired",
    }
)


class CredentialsRejectedError(TransientError):
    """SQS refused the credentials (expired or revoked): re-fetch the scope and retry."""


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    message_id: str
    receipt_handle: str
    body: str
    receive_count: int
    sent_at: datetime | None


def _translate(operation: str, e: Exception) -> TransientError:
    if isinstance(e, ClientError):
        code = str(e.response.get("Error", {}).get("Code", "unknown"))
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
        if code in _CREDENTIAL_CODES:
            return CredentialsRejectedError(f"SQS {operation} refused the credentials ({code})")
        return TransientError(f"SQS {operation} failed: {code} (HTTP {status})")
    # BotoCoreError: connection refused, timeouts, DNS; the class name says which, the message
    # names the endpoint (no secrets in it).
    return TransientError(f"SQS {operation} failed: {type(e).__name__}: {e}")


class SqsQueue:
    """One command queue, reached with one boto3 SQS client."""

    def __init__(
        self,
        client: SQSClient,
        queue_url: str,
        *,
        wait_seconds: int = LONG_POLL_SECONDS,
        visibility_timeout: int | None = None,
    ) -> None:
        self._client = client
        self.url = queue_url
        self._wait_seconds = wait_seconds
        self._visibility_timeout = visibility_timeout
        self._dlq_url: str | None = None
        self._dlq_looked_up = False

    def receive(self, max_messages: int = MAX_MESSAGES_PER_RECEIVE) -> list[ReceivedMessage]:
        """Long-poll for up to `max_messages` (1..10); returns [] when the wait ends empty."""
        kwargs: dict[str, Any] = {
            "QueueUrl": self.url,
            "MaxNumberOfMessages": max(1, min(max_messages, MAX_MESSAGES_PER_RECEIVE)),
            "WaitTimeSeconds": self._wait_seconds,
            "MessageSystemAttributeNames": ["ApproximateReceiveCount", "SentTimestamp"],
        }
        if self._visibility_timeout is not None:
            kwargs["VisibilityTimeout"] = self._visibility_timeout
        try:
            response = self._client.receive_message(**kwargs)
        except (ClientError, BotoCoreError) as e:
            raise _translate("receive", e) from e
        received = []
        for m in response.get("Messages", []):
            attributes = m.get("Attributes", {})
            sent_ms = attributes.get("SentTimestamp")
            received.append(
                ReceivedMessage(
                    message_id=m.get("MessageId", "?"),
                    receipt_handle=m["ReceiptHandle"],
                    body=m.get("Body", ""),
                    receive_count=int(attributes.get("ApproximateReceiveCount", "1")),
                    sent_at=(
                        datetime.fromtimestamp(int(sent_ms) / 1000, UTC) if sent_ms else None
                    ),
                )
            )
        return received

    def delete(self, message: ReceivedMessage) -> None:
        try:
            self._client.delete_message(QueueUrl=self.url, ReceiptHandle=message.receipt_handle)
        except (ClientError, BotoCoreError) as e:
            raise _translate("delete", e) from e

    def extend_visibility(self, message: ReceivedMessage, seconds: int) -> None:
        """Keep a message invisible for `seconds` more (a long handler's heartbeat)."""
        try:
            self._client.change_message_visibility(
                QueueUrl=self.url,
                ReceiptHandle=message.receipt_handle,
                VisibilityTimeout=seconds,
            )
        except (ClientError, BotoCoreError) as e:
            raise _translate("change-visibility", e) from e

    def dead_letter_url(self) -> str | None:
        """The DLQ named by the queue's RedrivePolicy (looked up once), or None if it has none."""
        if not self._dlq_looked_up:
            try:
                attributes = self._client.get_queue_attributes(
                    QueueUrl=self.url, AttributeNames=["RedrivePolicy"]
                ).get("Attributes", {})
            except (ClientError, BotoCoreError) as e:
                raise _translate("get-attributes", e) from e
            policy = attributes.get("RedrivePolicy")
            if policy:
                arn = str(json.loads(policy)["deadLetterTargetArn"])
                try:
                    # arn:aws:sqs:region:account:name -> the queue URL on this endpoint
                    self._dlq_url = self._client.get_queue_url(
                        QueueName=arn.rsplit(":", 1)[-1], QueueOwnerAWSAccountId=arn.split(":")[4]
                    )["QueueUrl"]
                except (ClientError, BotoCoreError) as e:
                    raise _translate("get-queue-url", e) from e
            self._dlq_looked_up = True
        return self._dlq_url

    def dead_letter(self, message: ReceivedMessage, reason: str) -> None:
        """Move a message that can never succeed to the DLQ now, with `reason` attached.

        Raises PermanentError if the queue has no dead-letter queue (the caller reports and
        drops it), TransientError if SQS could not be reached (the message stays and is
        retried; SQS's own redrive then still bounds it)."""
        dlq_url = self.dead_letter_url()
        if dlq_url is None:
            raise PermanentError("the command queue has no RedrivePolicy / dead-letter queue")
        try:
            self._client.send_message(
                QueueUrl=dlq_url,
                MessageBody=message.body or "(empty)",
                MessageAttributes={
                    FAILURE_REASON_ATTRIBUTE: {"DataType": "String", "StringValue": reason[:1000]},
                    "original-message-id": {
                        "DataType": "String",
                        "StringValue": message.message_id,
                    },
                },
            )
        except (ClientError, BotoCoreError) as e:
            raise _translate("send-to-dead-letter", e) from e
        self.delete(message)
