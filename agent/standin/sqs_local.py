"""A real SQS endpoint on loopback: moto's server, with a command queue and a dead-letter queue.

`LocalSqs` starts moto's `ThreadedMotoServer` on 127.0.0.1 (a free port), creates
`<prefix>-commands` with a redrive policy to `<prefix>-dead-letter` (maxReceiveCount, default 3)
and a visibility timeout, and exposes what a client needs: endpoint, queue URLs, region and
credentials (moto accepts any). Queue names get a random suffix: moto keeps its state per
process, so two instances (or two tests) must not share queues.

Used by the demo (`agent.standin.demo`) and the runtime's `sqs_server` test fixture.
"""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self

import boto3
from botocore.config import Config

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, repr=False)
class SqsEndpoint:
    endpoint_url: str
    region: str
    queue_url: str
    dead_letter_queue_url: str
    access_key_id: str
    secret_access_key: str
    session_token: str

    def __repr__(self) -> str:
        return f"SqsEndpoint(endpoint_url={self.endpoint_url!r}, queue_url={self.queue_url!r})"

    def client(self) -> SQSClient:
        """A boto3 SQS client for this endpoint (short timeouts; loopback)."""
        return boto3.client(
            "sqs",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            aws_session_token=self.session_token,
            config=Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 2}),
        )


class LocalSqs:
    """start()/stop() or a context manager; `endpoint` once started."""

    def __init__(
        self,
        *,
        prefix: str = "r4agent",
        region: str = "eu-west-2",
        max_receive_count: int = 3,
        visibility_timeout: int = 30,
    ) -> None:
        self._prefix = f"{prefix}-{secrets.token_hex(4)}"
        self._region = region
        self._max_receive_count = max_receive_count
        self._visibility_timeout = visibility_timeout
        self._server: Any = None
        self._endpoint: SqsEndpoint | None = None

    @property
    def endpoint(self) -> SqsEndpoint:
        if self._endpoint is None:
            raise RuntimeError("LocalSqs is not started")
        return self._endpoint

    def start(self) -> Self:
        from moto.server import ThreadedMotoServer  # heavy import: only when a server is wanted

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        self._server = server
        host, port = server.get_host_and_port()
        endpoint_url = f"http://{host}:{port}"
        try:
            self._endpoint = self._create_queues(endpoint_url)
        except BaseException:
            self.stop()
            raise
        log.info("local SQS (moto) on %s", endpoint_url)
        return self

    def _create_queues(self, endpoint_url: str) -> SqsEndpoint:
        token = secrets.token_hex(8)  # moto accepts any credentials; never a real one
        partial = SqsEndpoint(
            endpoint_url=endpoint_url,
            region=self._region,
            queue_url="",
            dead_letter_queue_url="",
            access_key_id="testing",
            secret_access_key=f"testing-{token}",
            session_token=f"testing-session-{token}",
        )
        sqs = partial.client()
        dlq_url = sqs.create_queue(QueueName=f"{self._prefix}-dead-letter")["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        queue_url = sqs.create_queue(
            QueueName=f"{self._prefix}-commands",
            Attributes={
                "VisibilityTimeout": str(self._visibility_timeout),
                "RedrivePolicy": json.dumps(
                    {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": self._max_receive_count}
                ),
            },
        )["QueueUrl"]
        return SqsEndpoint(
            endpoint_url=endpoint_url,
            region=self._region,
            queue_url=queue_url,
            dead_letter_queue_url=dlq_url,
            access_key_id=partial.access_key_id,
            secret_access_key=partial.secret_access_key,
            session_token=partial.session_token,
        )

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
