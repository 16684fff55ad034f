"""The one module that talks SQS (boto3). Every failure of an SQS call is translated here into
TransientError (or CredentialsRejectedError, a TransientError the lifecycle answers by
re-fetching its scope), or PermanentError for a queue set up wrongly; nothing botocore-specific
escapes, not even what botocore raises outside its own exception tree (the RuntimeError of
credentials that are still expired after a refresh). The AgentErrors of the credential refresh
(the backend's /data, called by botocore) pass through as they are.

Semantics (docs/messages.md):
- receive: long poll (WaitTimeSeconds 20 by default), up to 10 messages.
- change visibility: in batches of up to 10 (the heartbeat, and releasing on stop); entries
  SQS refuses are returned, so one failing entry does not hide the others.
- delete: ONLY after the handler succeeded.
- a transient failure is left alone: the message becomes visible again after the visibility
  timeout and, after the queue's maxReceiveCount, SQS moves it to the dead-letter queue.
- a permanent failure is moved to the dead-letter queue at once (sent there with a
  `failure-reason` message attribute, then deleted here), so it is never retried forever;
  the reason is shortened so the copy fits SQS's 256 KB, the body is kept whole.
- least privilege: the backend's credentials may allow only ReceiveMessage + DeleteMessage.
  AccessDenied on an optional action (OPTIONAL_ACTIONS) raises ActionDeniedError once and
  turns that action off for the process (later calls raise it at once, without a request).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from agent.errors import AgentError, PermanentError, TransientError

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

log = logging.getLogger(__name__)
T = TypeVar("T")

LONG_POLL_SECONDS: Final = 20
MAX_MESSAGES_PER_RECEIVE: Final = 10
MAX_MESSAGES_PER_BATCH: Final = 10  # SQS's limit for the *Batch calls
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
        "InvalidSignatureException",
    }
)


class CredentialsRejectedError(TransientError):
    """SQS refused the credentials (expired or revoked): re-fetch the scope and retry."""


# The actions beyond Receive + Delete (all the original agent used, so perhaps all the backend's
# credentials allow): AccessDenied on one turns its feature off for the process.
OPTIONAL_ACTIONS: Final = {
    "change-visibility": "ChangeMessageVisibility",  # the heartbeat, releasing on stop
    "get-attributes": "GetQueueAttributes",  # finding the dead-letter queue
    "get-queue-url": "GetQueueUrl",
    "send-to-dead-letter": "SendMessage",  # moving poison there with its reason
}
_DENIED_CODES: Final = frozenset({"AccessDenied", "AccessDeniedException"})
MAX_MESSAGE_BYTES: Final = 262_144  # SQS: body plus attribute names, types and values


class ActionDeniedError(PermanentError):
    """The credentials do not allow this optional SQS action: its feature is off for the
    process. `first` is True for the call that found out (report that one only)."""

    def __init__(self, action: str, *, first: bool) -> None:
        super().__init__(f"SQS {action} is not allowed by the credentials: feature turned off")
        self.action = action
        self.first = first


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
        # 403 is what SQS answers for refused credentials whatever the code is called (it
        # differs between the query and JSON protocols, and moto's server sends none)
        if code in _CREDENTIAL_CODES or status == 403:
            return CredentialsRejectedError(f"SQS {operation} refused the credentials ({code})")
        return TransientError(f"SQS {operation} failed: {code} (HTTP {status})")
    if isinstance(e, BotoCoreError):
        # connection refused, timeouts, DNS; the class name says which, the message names the
        # endpoint (no secrets in it).
        return TransientError(f"SQS {operation} failed: {type(e).__name__}: {e}")
    if isinstance(e, RuntimeError):
        # botocore's RefreshableCredentials: the refresh returned credentials that are already
        # expired by this machine's clock. A fresh scope may help; a wrong clock needs a person.
        return CredentialsRejectedError(
            f"SQS {operation}: the refreshed credentials are still expired "
            "(is this machine's clock right?)"
        )
    # anything else escaping botocore: the type only (its text is not ours to vouch for)
    return TransientError(f"SQS {operation} failed unexpectedly: {type(e).__name__}")


def _call(operation: str, call: Callable[[], T]) -> T:
    """Run one SQS call, translating every failure (see the module docstring)."""
    try:
        return call()
    except AgentError:
        raise  # from the credential refresh: the backend's errors, already translated
    except Exception as e:
        raise _translate(operation, e) from e


class SqsQueue:
    """One command queue, reached with one boto3 SQS client at a time: `use_client` swaps it
    (new credentials), so messages received earlier are deleted and extended with the new one.
    """

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
        self.denied: set[str] = set()  # optional actions the credentials refused

    def _optional(self, operation: str, call: Callable[[], T]) -> T:
        """An SQS call beyond Receive + Delete: AccessDenied turns it off for the process."""
        action = OPTIONAL_ACTIONS[operation]
        if action in self.denied:
            raise ActionDeniedError(action, first=False)
        try:
            return _call(operation, call)
        except CredentialsRejectedError as e:
            if not _access_denied(e.__cause__):
                raise
            self.denied.add(action)
            log.warning("SQS %s is not allowed by these credentials: turned off", action)
            raise ActionDeniedError(action, first=True) from None

    def use_client(self, client: SQSClient) -> None:
        """From now on every call (for any message, received before or after) goes through
        `client`. The caller closes the one it replaces. Each call reads `_client` once, so a
        swap from another thread is seen whole, by the next call."""
        self._client = client

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
        response = _call("receive", lambda: self._client.receive_message(**kwargs))
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
        _call(
            "delete",
            lambda: self._client.delete_message(
                QueueUrl=self.url, ReceiptHandle=message.receipt_handle
            ),
        )

    def change_visibility(
        self, messages: Sequence[ReceivedMessage], seconds: int
    ) -> list[tuple[ReceivedMessage, str]]:
        """Keep up to 10 messages invisible for `seconds` more (the heartbeat), or make them
        visible again at once (0: released on stop). One ChangeMessageVisibilityBatch call.
        Returns the messages SQS refused, each with its error code (a message deleted
        meanwhile); raises TransientError if the call itself failed."""
        if not 0 < len(messages) <= MAX_MESSAGES_PER_BATCH:
            raise ValueError(f"change_visibility takes 1 to {MAX_MESSAGES_PER_BATCH} messages")
        by_id = {str(i): m for i, m in enumerate(messages)}
        entries: list[Any] = [
            {"Id": i, "ReceiptHandle": m.receipt_handle, "VisibilityTimeout": seconds}
            for i, m in by_id.items()
        ]
        response = self._optional(
            "change-visibility",
            lambda: self._client.change_message_visibility_batch(
                QueueUrl=self.url, Entries=entries
            ),
        )
        return [
            (by_id[f["Id"]], str(f.get("Code", "unknown")))
            for f in response.get("Failed", [])
            if f.get("Id") in by_id
        ]

    def dead_letter_url(self) -> str | None:
        """The DLQ named by the queue's RedrivePolicy (looked up once), or None if it has none.

        Raises TransientError if SQS could not be asked, PermanentError if the RedrivePolicy
        cannot be read (it names no queue this agent can use)."""
        if not self._dlq_looked_up:
            attributes = self._optional(
                "get-attributes",
                lambda: self._client.get_queue_attributes(
                    QueueUrl=self.url, AttributeNames=["RedrivePolicy"]
                ),
            ).get("Attributes", {})
            policy = attributes.get("RedrivePolicy")
            if policy:
                name, account = _dead_letter_target(policy)
                self._dlq_url = self._optional(
                    "get-queue-url",
                    lambda: self._client.get_queue_url(
                        QueueName=name, QueueOwnerAWSAccountId=account
                    ),
                )["QueueUrl"]
            self._dlq_looked_up = True
        return self._dlq_url

    def dead_letter(self, message: ReceivedMessage, reason: str) -> None:
        """Move a message that can never succeed to the DLQ now, with `reason` attached.

        Raises PermanentError if the queue has no (usable) dead-letter queue (the caller
        reports and drops it), TransientError if SQS could not be reached (the message stays and is
        retried; SQS's own redrive then still bounds it)."""
        dlq_url = self.dead_letter_url()
        if dlq_url is None:
            raise PermanentError("the command queue has no RedrivePolicy / dead-letter queue")
        body = message.body or "(empty)"
        attributes = _fitting_attributes(
            len(body.encode("utf-8")),
            (
                (FAILURE_REASON_ATTRIBUTE, reason[:1000]),
                ("original-message-id", message.message_id),
            ),
        )
        self._optional(
            "send-to-dead-letter",
            lambda: self._client.send_message(
                QueueUrl=dlq_url, MessageBody=body, MessageAttributes=attributes
            ),
        )
        self.delete(message)


def _access_denied(cause: BaseException | None) -> bool:
    """A policy's refusal, not credentials gone bad. AWS names it in the code; moto's server
    (JSON protocol) puts the XML error in the message, so the policy's words are read too."""
    if not isinstance(cause, ClientError):
        return False
    error = cause.response.get("Error", {})
    code = str(error.get("Code", ""))
    return code in _DENIED_CODES or "is not authorized to perform" in str(error.get("Message", ""))


def _fitting_attributes(body_bytes: int, wanted: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """String attributes, in order of importance, shortened (never the body) so the message
    stays within SQS's size limit: a poison body near 256 KB still reaches the DLQ."""
    room = MAX_MESSAGE_BYTES - body_bytes
    attributes: dict[str, Any] = {}
    for name, value in wanted:
        fit = room - len(name) - len("String")
        data = value.encode("utf-8")[: max(fit, 0)].decode("utf-8", "ignore")
        if not data:
            continue  # SQS refuses an empty value: this one is left off
        attributes[name] = {"DataType": "String", "StringValue": data}
        room = fit - len(data.encode("utf-8"))
    return attributes


def _dead_letter_target(policy: str) -> tuple[str, str]:
    """(queue name, account id) of a RedrivePolicy's deadLetterTargetArn
    (arn:aws:sqs:region:account:name). Raises PermanentError if it is not one."""
    try:
        arn = json.loads(policy)["deadLetterTargetArn"]
        parts = arn.split(":")
        if len(parts) != 6 or parts[2] != "sqs" or not parts[4] or not parts[5]:
            raise ValueError("not an SQS queue ARN")
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise PermanentError(
            f"the command queue's RedrivePolicy names no usable dead-letter queue "
            f"({type(e).__name__})"
        ) from e
    return parts[5], parts[4]
