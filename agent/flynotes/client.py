"""`FlynotesClient`: the Flynotes backend over HTTP, implementing `agent.ports.Backend`.

The licence key sits in every URL path, so it is a secret in transit *and* in diagnostics:
no URL is logged or put in an error without `mask_url`, urllib3's own loggers get a masking
filter, and transport exceptions are re-raised `from None` because their messages carry the
full URL. Response bodies never reach an error message either (they may echo patient data):
errors say method, masked path and status code.

Raises (every public method): `BackendUnavailableError` (a TransientError) for 5xx / 429 /
timeouts / connection failures once the retries are spent, `BackendRefusedError` for another
4xx to a POST (`BackendForbiddenError` for 401/403), `PermanentError` for contract violations,
and `LicenceRejectedError` when `/data` refuses the licence.
"""

from __future__ import annotations

import email.utils
import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Final, Self
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import ConnectionPool
from urllib3.exceptions import MaxRetryError, ResponseError
from urllib3.exceptions import TimeoutError as Urllib3Timeout
from urllib3.response import BaseHTTPResponse
from urllib3.util.retry import Retry

from agent import contract
from agent._version import __version__
from agent.clock import Clock, SystemClock
from agent.errors import (
    BackendRefusedError,
    BackendUnavailableError,
    PermanentError,
)
from agent.ports import Scope, SqsCredentials
from agent.records import Patient, Questionnaire

log = logging.getLogger(__name__)

DEFAULT_USER_AGENT: Final = f"r4agent/{__version__}"  # the Windows suite reads the version here


class LicenceRejectedError(PermanentError):
    """The backend's `/data` endpoint did not accept this licence key."""


class BackendForbiddenError(BackendRefusedError):
    """A call other than `/data` answered 401 or 403: "check the licence". Whether that is about
    the licence (every call refused) or about this one request is decided by asking `/data`
    again, by the caller (the dispatcher); the client only names it."""


class PayloadTooLargeError(BackendRefusedError):
    """HTTP 413: the body is too big for the backend (or a proxy); a smaller one may pass
    (agent.uploads halves the chunk)."""


# --- masking -------------------------------------------------------------------------------

_KEY_IN_PATH: Final = re.compile(r"(/on-site-servers/)[^/?#\s'\"]+")


def mask_url(url: str) -> str:
    """Replace the licence key in any `/on-site-servers/{key}/...` URL or path with `***`."""
    return _KEY_IN_PATH.sub(r"\1***", url)


class _MaskLicenceKeyFilter(logging.Filter):
    """Masks the key in records of loggers we do not own (urllib3 logs full URLs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record must not break logging
            return True
        if "/on-site-servers/" in message:
            record.msg = mask_url(message)
            record.args = None
        return True


_MASK_FILTER: Final = _MaskLicenceKeyFilter()
# The urllib3 loggers that format URLs into their messages (filters are not inherited).
_URLLIB3_LOGGERS: Final = ("urllib3.connectionpool", "urllib3.util.retry", "urllib3.connection")


def install_url_masking() -> None:
    """Idempotent: attach the masking filter to urllib3's URL-logging loggers."""
    for name in _URLLIB3_LOGGERS:
        logger = logging.getLogger(name)
        if _MASK_FILTER not in logger.filters:
            logger.addFilter(_MASK_FILTER)


# --- limits and retry policy -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds. Every request gets (connect, read); uploads wait longer for the backend's
    answer because it parses and upserts every row before replying."""

    connect: float = 5.0
    read: float = 30.0
    sync_read: float = 10.0  # patient-sync is latency critical: fail fast, SQS redelivers
    upload_read: float = 300.0


@dataclass(frozen=True, slots=True)
class ClientLimits:
    """All of the client's knobs in one place."""

    retries: int = 3  # attempts after the first, for calls that may be retried
    sync_retries: int = 1
    backoff_factor: float = 0.5
    backoff_max: float = 10.0
    retry_after_max: float = 60.0  # a longer Retry-After is not waited for: TransientError


_RETRY_STATUSES: Final = frozenset({429, 500, 502, 503, 504})
# Statuses that say "not processed, come back later": safe to retry even a non-idempotent POST.
_NOT_PROCESSED_STATUSES: Final = frozenset({429, 503})
_FORBIDDEN_STATUSES: Final = frozenset({401, 403})


class _BackendRetry(Retry):
    """urllib3's Retry, sleeping through an injected function (a FakeClock in tests) and
    giving up instead of waiting when the server's Retry-After exceeds `retry_after_max`."""

    def __init__(self, *args: Any, sleep: Callable[[float], None] = time.sleep, **kw: Any):
        super().__init__(*args, **kw)
        self._sleep_fn = sleep

    def new(self, **kw: Any) -> Self:
        fresh = super().new(**kw)
        fresh._sleep_fn = self._sleep_fn
        return fresh

    def sleep(self, response: BaseHTTPResponse | None = None) -> None:
        if self.respect_retry_after_header and response is not None:
            retry_after = self.get_retry_after(response)
            if retry_after:
                self._sleep_fn(retry_after)
                return
        backoff = self.get_backoff_time()
        if backoff > 0:
            self._sleep_fn(backoff)

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: BaseHTTPResponse | None = None,
        error: Exception | None = None,
        _pool: ConnectionPool | None = None,
        _stacktrace: TracebackType | None = None,
    ) -> Self:
        if response is not None and self.respect_retry_after_header:
            wait = _retry_after_seconds(response.headers.get("Retry-After"))
            if wait is not None and wait > self.retry_after_max:
                # With raise_on_status=False urllib3 hands the 429/503 back to us.
                raise MaxRetryError(
                    _pool,  # type: ignore[arg-type]  # urllib3 itself passes None here
                    url or "",
                    ResponseError("Retry-After too long"),
                )
        return super().increment(method, url, response, error, _pool, _stacktrace)


def _retry_after_seconds(value: str | None) -> float | None:
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


@dataclass(frozen=True, slots=True)
class _Endpoint:
    name: str  # the path segment after the licence key
    query: str
    method: str
    idempotent: bool  # may a request that reached the server be sent again?
    read_timeout: str  # which Timeouts field applies


# Retry decisions, per call:
# - GET /data reads; always safe to repeat.
# - patient-upload and appointment-upload carry performUpsert=true: the backend upserts by id,
#   so a second copy of the same CSV leaves the same state. Retried on 5xx, 429, timeouts.
# - patient-sync: retried even when the first copy may have been applied (read timeout, 500,
#   502, 504), on the product brief's word that a duplicate gives the same result (issue 3;
#   SQS may deliver the message twice anyway). Once and briefly: it is latency critical and
#   the SQS message is redelivered if it still fails. See docs/backend-contract.md.
# - appointment-status-upload has no upsert flag in the contract, so a request the server may
#   have processed (read timeout, 500, 502, 504) is NOT sent again; only failures where the
#   server cannot have processed it are retried: connection refused/connect timeout, 429, 503.
_DATA: Final = _Endpoint("data", "", "GET", True, "read")
_PATIENT_UPLOAD: Final = _Endpoint(
    "patient-upload", "performUpsert=true", "POST", True, "upload_read"
)
_PATIENT_SYNC: Final = _Endpoint("patient-sync", "", "POST", True, "sync_read")
_APPOINTMENT_UPLOAD: Final = _Endpoint(
    "appointment-upload", "performUpsert=true", "POST", True, "upload_read"
)
_APPOINTMENT_STATUS_UPLOAD: Final = _Endpoint(
    "appointment-status-upload", "", "POST", False, "upload_read"
)
ENDPOINTS: Final = (
    _DATA,
    _PATIENT_UPLOAD,
    _PATIENT_SYNC,
    _APPOINTMENT_UPLOAD,
    _APPOINTMENT_STATUS_UPLOAD,
)
_CSV_ENDPOINTS: Final = {
    e.name: e for e in (_PATIENT_UPLOAD, _APPOINTMENT_UPLOAD, _APPOINTMENT_STATUS_UPLOAD)
}


# --- the client ------------------------------------------------------------------------------


class FlynotesClient:
    """The real `Backend`. One requests Session; the retry policy is mounted per endpoint."""

    def __init__(
        self,
        base_url: str,
        licence_key: str,
        *,
        user_agent: str = DEFAULT_USER_AGENT,
        proxy: str | None = None,
        timeouts: Timeouts | None = None,
        limits: ClientLimits | None = None,
        clock: Clock | None = None,
        licence_source: str = "the agent configuration",
        wire: contract.Wire | None = None,
    ) -> None:
        if not licence_key or "/" in licence_key:
            raise PermanentError("the licence key is empty or contains '/'")
        self._root = f"{base_url.rstrip('/')}/on-site-servers/{quote(licence_key, safe='')}"
        self._timeouts = timeouts or Timeouts()
        self._limits = limits or ClientLimits()
        self._clock = clock or SystemClock()
        self._licence_source = licence_source
        self._wire = wire or contract.Wire()
        install_url_masking()
        self._session = requests.Session()
        self._session.headers["User-Agent"] = user_agent
        if proxy:
            self._session.proxies = {"http": proxy, "https": proxy}
        for endpoint in ENDPOINTS:
            # Longest-prefix mount: each endpoint's URL gets its own retry policy.
            self._session.mount(self._url(endpoint), HTTPAdapter(max_retries=self._retry(endpoint)))

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Backend -------------------------------------------------------------------------------

    def fetch_scope(self) -> Scope:
        response = self._send(_DATA)
        try:
            if response.status_code in _RETRY_STATUSES:
                raise BackendUnavailableError(self._status_message(_DATA, response.status_code))
            if response.status_code != 200:
                raise LicenceRejectedError(
                    "the Flynotes backend rejected this licence key "
                    f"(HTTP {response.status_code}); check licence_key in {self._licence_source}"
                )
            server_date = _parse_http_date(response.headers.get("Date"))
            try:
                body = response.json()
            except ValueError:
                raise PermanentError(
                    f"GET {mask_url(self._url(_DATA))} answered 200 with a body that is not JSON"
                ) from None
        finally:
            response.close()
        return _parse_scope(body, server_date)

    def sync_patient(
        self, patient: Patient, questionnaire: Questionnaire | None, patient_patch_id: str
    ) -> None:
        body = self._wire.patient_sync_body(patient, questionnaire, patient_patch_id)
        data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        self._expect_success(
            _PATIENT_SYNC, self._send(_PATIENT_SYNC, data, contract.JSON_CONTENT_TYPE)
        )
        log.debug("patient-sync sent for patient %s", patient.code)  # the dispatcher says done

    def upload_rows(self, table: contract.CsvTable, rows: Sequence[contract.Values]) -> None:
        """POST one chunk of `table`'s rows (agent.uploads makes the chunks; an empty one is
        not sent). Raises PayloadTooLargeError (413), BackendRefusedError (another 4xx),
        BackendForbiddenError (401/403), TransientError."""
        if not rows:
            return
        endpoint = _CSV_ENDPOINTS[table.endpoint]
        body = contract.encode_csv(table.header, rows)
        started = time.monotonic()
        self._expect_success(endpoint, self._send(endpoint, body, contract.CSV_CONTENT_TYPE))
        log.debug(
            "%s: %d rows (%d bytes) sent in %.2f s",
            endpoint.name,
            len(rows),
            len(body),
            time.monotonic() - started,
        )

    # internals -----------------------------------------------------------------------------

    def _url(self, endpoint: _Endpoint) -> str:
        url = f"{self._root}/{endpoint.name}"
        return f"{url}?{endpoint.query}" if endpoint.query else url

    def _retry(self, endpoint: _Endpoint) -> Retry:
        limits = self._limits
        retries = limits.sync_retries if endpoint is _PATIENT_SYNC else limits.retries
        return _BackendRetry(
            total=retries,
            connect=retries,
            read=retries if endpoint.idempotent else 0,
            status=retries,
            other=0,
            redirect=0,
            allowed_methods=frozenset({endpoint.method}),
            status_forcelist=_RETRY_STATUSES if endpoint.idempotent else _NOT_PROCESSED_STATUSES,
            backoff_factor=limits.backoff_factor,
            backoff_max=limits.backoff_max,
            retry_after_max=int(limits.retry_after_max),
            raise_on_status=False,  # hand the last response back: we map the status ourselves
            respect_retry_after_header=True,
            sleep=self._clock.sleep,
        )

    def _send(
        self, endpoint: _Endpoint, body: bytes | None = None, content_type: str = ""
    ) -> requests.Response:
        url = self._url(endpoint)
        masked = mask_url(url)
        headers = {"Content-Type": content_type} if content_type else {}
        read = getattr(self._timeouts, endpoint.read_timeout)
        log.debug("%s %s", endpoint.method, masked)
        try:
            response = self._session.request(
                endpoint.method,
                url,
                data=body,
                headers=headers,
                timeout=(self._timeouts.connect, read),
            )
        # The transport exceptions' messages contain the URL (and so the licence key):
        # translate them without chaining, naming only the exception type.
        except requests.Timeout as e:
            raise BackendUnavailableError(
                f"{endpoint.method} {masked}: no answer in time ({type(e).__name__})"
            ) from None
        except requests.ConnectionError as e:
            # After spent retries urllib3 wraps the last cause (a read timeout, too).
            reason = getattr(e.args[0], "reason", None) if e.args else None
            kind = type(reason).__name__ if reason is not None else type(e).__name__
            what = (
                "no answer in time" if isinstance(reason, Urllib3Timeout) else "connection failed"
            )
            raise BackendUnavailableError(f"{endpoint.method} {masked}: {what} ({kind})") from None
        except requests.RequestException as e:
            raise BackendUnavailableError(
                f"{endpoint.method} {masked}: failed ({type(e).__name__})"
            ) from None
        log.debug("%s %s -> %d", endpoint.method, masked, response.status_code)
        return response

    def _status_message(self, endpoint: _Endpoint, status: int) -> str:
        return f"{endpoint.method} {mask_url(self._url(endpoint))} answered HTTP {status}"

    def _expect_success(self, endpoint: _Endpoint, response: requests.Response) -> None:
        status = response.status_code
        response.close()  # the body is never read into an error: it may echo patient data
        if 200 <= status < 300:
            return
        if status in _RETRY_STATUSES or status >= 500:
            raise BackendUnavailableError(self._status_message(endpoint, status))
        if status in _FORBIDDEN_STATUSES:
            raise BackendForbiddenError(self._status_message(endpoint, status), status=status)
        if status == 413:
            raise PayloadTooLargeError(self._status_message(endpoint, status), status=status)
        raise BackendRefusedError(self._status_message(endpoint, status), status=status)


def _parse_http_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _parse_expiration(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        log.warning("ignoring an sqsCredentials.Expiration that is not ISO 8601")
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _require_str(obj: dict[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise PermanentError(f"the backend's /data answer lacks a string {where}{key}")
    return value


def _version_hint(value: object) -> str:
    return value.strip()[:100] if isinstance(value, str) else ""


def _parse_scope(body: object, server_date: datetime | None) -> Scope:
    if not isinstance(body, dict):
        raise PermanentError("the backend's /data answer is not a JSON object")
    creds = body.get("sqsCredentials")
    if not isinstance(creds, dict):
        raise PermanentError("the backend's /data answer lacks an object sqsCredentials")
    return Scope(
        sqs_queue_url=_require_str(body, "sqsQueueUrl", ""),
        sqs_region=_require_str(body, "sqsRegion", ""),
        # the original's npm version (0.0.12), garbage or nothing: the version gate refuses what
        # it cannot use and the agent carries on (never a reason to stop)
        library_version=_version_hint(body.get("libraryVersion")),
        credentials=SqsCredentials(
            access_key_id=_require_str(creds, "AccessKeyId", "sqsCredentials."),
            secret_access_key=_require_str(creds, "SecretAccessKey", "sqsCredentials."),
            session_token=_require_str(creds, "SessionToken", "sqsCredentials."),
            expiration=_parse_expiration(creds.get("Expiration")),
        ),
        server_date=server_date,
    )
