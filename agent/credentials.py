"""The SQS client, signed with the scope's temporary credentials (session token included: the old
agent dropped it) and refreshed from the backend before they expire.

Refreshing is botocore's own mechanism: `RefreshableCredentials` calls `refresh_using` when the
expiry is within its advisory window (15 min; a failure there is logged and the old credentials
are used) or its mandatory window (10 min; a failure there raises to the caller). It is plugged in
through the public `credential_provider` component of a private botocore Session, so nothing
from the machine's environment (AWS_* variables, ~/.aws) can be picked up instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Final

import boto3
import botocore.session
from botocore.config import Config
from botocore.credentials import CredentialProvider, CredentialResolver, RefreshableCredentials

from agent.clock import Clock
from agent.ports import Scope, SqsCredentials

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

log = logging.getLogger(__name__)

ASSUMED_LIFETIME: Final = timedelta(hours=36)  # the backend's credentials, when it omits Expiration
METHOD: Final = "flynotes-scope"
CONNECT_TIMEOUT_SECONDS: Final = 10
READ_TIMEOUT_SECONDS: Final = 30  # above the 20 s long poll, so a quiet queue is not a timeout


def _metadata(credentials: SqsCredentials, clock: Clock) -> dict[str, str]:
    expires = credentials.expiration or clock.now() + ASSUMED_LIFETIME
    return {
        "access_key": credentials.access_key_id,
        "secret_key": credentials.secret_access_key,
        "token": credentials.session_token,
        "expiry_time": expires.isoformat(),
    }


class _ScopeCredentialProvider(CredentialProvider):
    METHOD = METHOD
    CANONICAL_NAME = "FlynotesScope"

    def __init__(self, credentials: RefreshableCredentials) -> None:
        super().__init__()
        self._credentials = credentials

    def load(self) -> RefreshableCredentials:
        return self._credentials


def refreshable_credentials(
    initial: SqsCredentials,
    fetch_fresh: Callable[[], SqsCredentials],
    clock: Clock,
) -> RefreshableCredentials:
    """Credentials that call `fetch_fresh` (the backend's /data) when near expiry. Expiry is
    judged by `clock`, so tests move time instead of waiting 36 h."""

    def refresh() -> dict[str, str]:
        log.info("SQS credentials near expiry: fetching fresh ones from the backend")
        return _metadata(fetch_fresh(), clock)

    return RefreshableCredentials(
        access_key=initial.access_key_id,
        secret_key=initial.secret_access_key,
        token=initial.session_token,
        expiry_time=initial.expiration or clock.now() + ASSUMED_LIFETIME,
        refresh_using=refresh,
        method=METHOD,
        time_fetcher=clock.now,
    )


def sqs_client(
    scope: Scope,
    fetch_fresh: Callable[[], SqsCredentials],
    *,
    clock: Clock,
    endpoint_url: str | None = None,
    proxy: str | None = None,
    max_attempts: int = 3,
) -> SQSClient:
    """An SQS client for `scope`'s region, with timeouts on every call and refreshing creds."""
    credentials = refreshable_credentials(scope.credentials, fetch_fresh, clock)
    session = botocore.session.Session()
    session.register_component(
        "credential_provider", CredentialResolver(providers=[_ScopeCredentialProvider(credentials)])
    )
    config = Config(
        region_name=scope.sqs_region,
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        read_timeout=READ_TIMEOUT_SECONDS,
        retries={"mode": "standard", "max_attempts": max_attempts},
        proxies={"http": proxy, "https": proxy} if proxy else None,
    )
    client: SQSClient = boto3.Session(botocore_session=session).client(
        "sqs", endpoint_url=endpoint_url, config=config
    )
    return client
