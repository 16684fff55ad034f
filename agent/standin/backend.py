"""A stand-in of the Flynotes backend speaking exactly its wire contract (agent.contract).

Used by tests, benchmarks, the demo and the Windows suite. It validates what it receives
strictly (the exact header names of each CSV, in the byte forms the real backend has parsed
for years: the original agent's json2csv output and plain RFC 4180; the exact key sets of the
patient-sync JSON, content types, upsert flag, Content-Length) and answers 400 with the reason
otherwise, so client bugs show up (the exact bytes the agent sends are pinned by tests); it
records every request, raw body included; and it can be told to fail:
`fail_next` (5xx), `throttle_next` (429 + Retry-After), `slow_next` (answer late),
`hold_next` (answer only once an Event is set: a slow backend without real sleeps in the test),
`reject_licence` (403 on every endpoint), `max_rows` (413 for a CSV with more rows).

The header lines and key sets below are copied from the product issue's contract on purpose,
NOT imported from `agent.contract`: the client builds its bodies from agent.contract, and a
stand-in checking against the same constants would let a renamed or reordered field there pass
every test.

Standalone: `python -m agent.standin.backend --port 8765` reads the licence key from the
environment variable FLYNOTES_STANDIN_LICENCE_KEY, else the first line of stdin (never argv),
prints `listening on http://127.0.0.1:PORT` and serves until SIGINT/SIGTERM. `GET
/_standin/summary` answers what arrived (counts only).
"""

from __future__ import annotations

import argparse
import csv
import email.utils
import io
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any, Final, Self
from urllib.parse import parse_qs, unquote, urlsplit

from agent.flynotes.client import mask_url

log = logging.getLogger(__name__)

LICENCE_KEY_ENV: Final = "FLYNOTES_STANDIN_LICENCE_KEY"
_PREFIX: Final = "/on-site-servers/"

# --- the contract, as the product issue writes it (see the module docstring) ---------------
PATIENT_CSV_HEADER: Final = (
    "id,familyName,givenName,dateOfBirth,mobileNumber,emailAddress,"
    "addressLine1,addressLine2,city,county,postcode,country"
)
APPOINTMENT_CSV_HEADER: Final = "apptId,patientCode,apptDateTime,statusCode,status"
APPOINTMENT_STATUS_CSV_HEADER: Final = "apptFlag,cancelled,character,description"
PATIENT_SYNC_KEYS: Final = frozenset({"patient", "questionnaire", "patientPatchId"})
# The issue lists the patient object's keys as the patient CSV's columns.
PATIENT_KEYS: Final = frozenset(PATIENT_CSV_HEADER.split(","))
QUESTIONNAIRE_KEYS: Final = frozenset({"submissionTime", "notes", "responses"})
RESPONSE_KEYS: Final = frozenset({"questionText", "answerText", "answerNotes"})


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    """One request as the stand-in saw it. `endpoint` is the segment after the key
    (`data`, `patient-upload`, ...); `rows` holds parsed CSV rows, `json` the parsed body."""

    method: str
    path: str
    endpoint: str | None
    query: dict[str, list[str]]
    headers: dict[str, str]
    status: int  # what the stand-in answered
    rows: list[dict[str, str]] | None = None
    row_count: int = 0
    json: Any = None
    body_bytes: int = 0
    body: bytes | None = None  # the raw body as received (None with keep_rows=False)
    error: str | None = None  # why it was refused (400/411), as answered


@dataclass(slots=True)
class _Fault:
    endpoint: str | None  # None = any endpoint
    remaining: int
    status: int = 0  # 0 = no status override
    retry_after: str | None = None
    delay: float = 0.0
    hold: threading.Event | None = None  # answer only once this is set (or on stop())
    after: int = 0  # let this many matching requests pass untouched first


@dataclass(frozen=True, slots=True)
class _EndpointSpec:
    method: str
    content_type: str | None  # media type the body must have; None = no body
    csv_header: str | None = None  # the exact header line (without its line end)
    needs_upsert: bool = False


ENDPOINT_SPECS: Final[dict[str, _EndpointSpec]] = {
    "data": _EndpointSpec("GET", None),
    "patient-upload": _EndpointSpec("POST", "text/csv", PATIENT_CSV_HEADER, True),
    "patient-sync": _EndpointSpec("POST", "application/json"),
    "appointment-upload": _EndpointSpec("POST", "text/csv", APPOINTMENT_CSV_HEADER, True),
    "appointment-status-upload": _EndpointSpec("POST", "text/csv", APPOINTMENT_STATUS_CSV_HEADER),
}


class BadRequest(Exception):
    """What the real backend would answer 400 to; the message says why (no values)."""


def _exact_keys(value: object, keys: frozenset[str], where: str) -> dict[str, Any]:
    """`value` as a JSON object whose keys are exactly `keys`, else BadRequest naming the
    missing and unexpected keys (key names only, never values)."""
    if not isinstance(value, dict):
        raise BadRequest(f"{where} is not a JSON object")
    missing, extra = sorted(keys - value.keys()), sorted(value.keys() - keys)
    if missing or extra:
        raise BadRequest(f"{where} keys differ from the contract: missing {missing}, extra {extra}")
    return value


def _string_or_null(obj: dict[str, Any], where: str) -> None:
    for key, value in obj.items():
        if value is not None and not isinstance(value, str):
            raise BadRequest(f"{where}.{key} must be a string or null")


def validate_patient_sync(body: object) -> None:
    """Raise BadRequest unless `body` is a patient-sync body as the contract defines it: the
    exact key sets of the body, `patient`, `questionnaire` and each response."""
    body = _exact_keys(body, PATIENT_SYNC_KEYS, "body")
    patient = _exact_keys(body["patient"], PATIENT_KEYS, "patient")
    _string_or_null(patient, "patient")
    if not isinstance(patient["id"], str) or not _is_digits(patient["id"]):
        raise BadRequest("patient.id must be the R4 code as a string")
    if not isinstance(body["patientPatchId"], str) or not body["patientPatchId"]:
        raise BadRequest("patientPatchId must be a non-empty string")
    if body["questionnaire"] is None:
        return
    questionnaire = _exact_keys(body["questionnaire"], QUESTIONNAIRE_KEYS, "questionnaire")
    submitted = questionnaire["submissionTime"]
    if submitted is not None and (
        not isinstance(submitted, str) or not submitted.endswith("Z") or not _is_iso(submitted)
    ):
        raise BadRequest("questionnaire.submissionTime must be ISO 8601 UTC ending in Z")
    if questionnaire["notes"] is not None and not isinstance(questionnaire["notes"], str):
        raise BadRequest("questionnaire.notes must be a string or null")
    if not isinstance(questionnaire["responses"], list):
        raise BadRequest("questionnaire.responses must be a list")
    for item in questionnaire["responses"]:
        _string_or_null(_exact_keys(item, RESPONSE_KEYS, "response"), "response")


def _is_digits(value: str) -> bool:
    return value.isascii() and value.isdigit()  # str.isdigit alone takes "²" and "٣"


def _is_iso(value: str) -> bool:
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def parse_csv(body: bytes, header: str) -> list[list[str]]:
    """The data rows of a UTF-8 CSV body whose first record is exactly the `header` names,
    else BadRequest. What the real backend has parsed for years is accepted: the original
    agent's form (json2csv: quoted header, every string quoted, CRLF or LF, no line end after
    the last row) and plain RFC 4180 (unquoted header, CRLF after every row). A BOM, padded or
    renamed or reordered names, rows of another width, a non-numeric id are refused."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("CSV body is not UTF-8") from None
    try:
        records = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    except csv.Error:
        raise BadRequest("CSV body is not valid CSV") from None
    names = header.split(",")
    if not records or records[0] != names:
        raise BadRequest(f"CSV header must be exactly the names {header!r}")
    rows = records[1:]
    width = len(names)
    for number, values in enumerate(rows, start=2):
        if len(values) != width:
            raise BadRequest(f"CSV row {number} has {len(values)} fields, not {width}")
    if not all(_is_digits(values[0]) for values in rows):
        raise BadRequest(f"every row needs a numeric {names[0]}")
    return rows


class StandinBackend:
    """The stand-in server. Thread-safe; start()/stop() or use it as a context manager."""

    def __init__(
        self,
        licence_keys: Iterable[str],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        library_version: str = "1.0.0",
        sqs_queue_url: str = "http://127.0.0.1:1/123456789012/r4agent-commands",
        sqs_region: str = "eu-west-2",
        credentials: dict[str, str] | None = None,
        keep_rows: bool = True,
    ) -> None:
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.licence_keys: set[str] = set(licence_keys)
        self.library_version = library_version
        self.sqs_queue_url = sqs_queue_url
        self.sqs_region = sqs_region
        self.credentials: dict[str, str] = credentials or {
            "AccessKeyId": "testing",
            "SecretAccessKey": "testing",
            "SessionToken": "testing",
        }
        self.clock_offset = timedelta(0)  # shifts the Date header (clock-skew checks)
        self.keep_rows = keep_rows  # False: count rows only (benchmarks)
        self.max_rows: int | None = None  # a CSV body with more rows is answered 413
        self._received: list[ReceivedRequest] = []
        self._faults: list[_Fault] = []
        self._holding = 0  # requests held by hold_next right now
        self._rejecting = False
        self._host = host
        self._port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle ----------------------------------------------------------------------------

    def start(self) -> Self:
        handler = type("_BoundHandler", (_Handler,), {"backend": self})
        server = ThreadingHTTPServer((self._host, self._port), handler)
        server.daemon_threads = True
        self._server = server
        self._stopping.clear()
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # releases requests held by slow_next
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the stand-in backend is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # configuration ------------------------------------------------------------------------

    def set_credentials(
        self, access_key_id: str, secret: str, token: str, expiration: datetime | None = None
    ) -> None:
        creds = {"AccessKeyId": access_key_id, "SecretAccessKey": secret, "SessionToken": token}
        if expiration is not None:
            creds["Expiration"] = expiration.astimezone(UTC).isoformat().replace("+00:00", "Z")
        with self._lock:
            self.credentials = creds

    def reject_licence(self, rejecting: bool = True) -> None:
        """From now on every endpoint answers 403 for every key (until called with False), as
        the real backend does for a revoked licence: the key is in every path."""
        with self._lock:
            self._rejecting = rejecting

    def fail_next(self, n: int = 1, *, status: int = 503, endpoint: str | None = None) -> None:
        """The next `n` requests (to `endpoint`, or any) answer `status` (empty body)."""
        self._add_fault(_Fault(endpoint, n, status=status))

    def throttle_next(
        self, n: int = 1, *, retry_after: str = "1", endpoint: str | None = None
    ) -> None:
        """The next `n` requests answer 429 with this Retry-After (seconds or an HTTP date)."""
        self._add_fault(_Fault(endpoint, n, status=429, retry_after=retry_after))

    def slow_next(self, n: int = 1, *, seconds: float, endpoint: str | None = None) -> None:
        """The next `n` requests are answered only after `seconds` (cut short by stop())."""
        self._add_fault(_Fault(endpoint, n, delay=seconds))

    def hold_next(
        self, n: int = 1, *, until: threading.Event, endpoint: str | None = None, after: int = 0
    ) -> None:
        """The next `n` requests (after `after` more pass untouched) are answered only once
        `until` is set (or on stop())."""
        self._add_fault(_Fault(endpoint, n, hold=until, after=after))

    @property
    def holding(self) -> int:
        """How many requests `hold_next` is holding right now (they are in flight)."""
        with self._lock:
            return self._holding

    def _stopped_while_holding(self, fault: _Fault) -> bool:
        """Hold the request as `fault` says (slow_next, hold_next); True if stop() came first."""
        if fault.delay:
            return self._stopping.wait(fault.delay)
        if fault.hold is not None:
            return not self._held(fault.hold)
        return False

    def _held(self, release: threading.Event) -> bool:
        """Wait until `release` is set; False if the stand-in is stopping meanwhile."""
        with self._lock:
            self._holding += 1
        try:
            while not release.wait(0.05):
                if self._stopping.is_set():
                    return False
            return True
        finally:
            with self._lock:
                self._holding -= 1

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _add_fault(self, fault: _Fault) -> None:
        if fault.endpoint is not None and fault.endpoint not in ENDPOINT_SPECS:
            raise ValueError(f"unknown endpoint {fault.endpoint!r}")
        with self._lock:
            self._faults.append(fault)

    def _take_fault(self, endpoint: str | None) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.endpoint is None or fault.endpoint == endpoint:
                    if fault.after > 0:
                        fault.after -= 1
                        return None
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    # what arrived -------------------------------------------------------------------------

    @property
    def received(self) -> list[ReceivedRequest]:
        """A snapshot of every request received, in order."""
        with self._lock:
            return list(self._received)

    def received_for(self, endpoint: str, *, status: int | None = 200) -> list[ReceivedRequest]:
        return [
            r
            for r in self.received
            if r.endpoint == endpoint and (status is None or r.status == status)
        ]

    def summary(self) -> dict[str, dict[str, int]]:
        """Per endpoint: requests, accepted (2xx), rows accepted and body bytes received (all
        requests). No contents."""
        out: dict[str, dict[str, int]] = {}
        for r in self.received:
            name = r.endpoint or "other"
            entry = out.setdefault(name, {"requests": 0, "accepted": 0, "rows": 0, "bytes": 0})
            entry["requests"] += 1
            entry["bytes"] += r.body_bytes
            if 200 <= r.status < 300:
                entry["accepted"] += 1
                entry["rows"] += r.row_count
        return out

    def clear_received(self) -> None:
        with self._lock:
            self._received.clear()

    def _record(self, request: ReceivedRequest) -> None:
        with self._lock:
            self._received.append(request)

    def _scope_body(self) -> dict[str, Any]:
        with self._lock:
            return {
                "sqsQueueUrl": self.sqs_queue_url,
                "sqsRegion": self.sqs_region,
                "libraryVersion": self.library_version,
                "sqsCredentials": dict(self.credentials),
            }

    def _licence_ok(self, key: str) -> bool:
        with self._lock:
            return not self._rejecting and key in self.licence_keys


class _Handler(BaseHTTPRequestHandler):
    backend: StandinBackend  # set on the per-server subclass
    protocol_version = "HTTP/1.1"  # keep-alive, as behind the real load balancer
    # Headers and body go out in two writes: with Nagle on, the body waits for the client's
    # delayed ACK (40 ms on Linux) and every call looks 40 ms slower than it is.
    disable_nagle_algorithm = True
    server_version = "FlynotesStandin/1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("stand-in: %s", mask_url(format % args))

    def date_time_string(self, timestamp: float | None = None) -> str:
        now = datetime.now(UTC) + self.backend.clock_offset
        return email.utils.format_datetime(now, usegmt=True)

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def _handle(self) -> None:
        backend = self.backend
        split = urlsplit(self.path)
        path = split.path
        query = parse_qs(split.query)
        headers = {k.lower(): v for k, v in self.headers.items()}
        key, endpoint = self._route(path)
        status, payload, extra_headers, parsed = 404, b"", {}, None
        rows: list[dict[str, str]] | int | None = None  # parsed CSV rows, or just their count
        error: str | None = None
        body: bytes | None = b""

        fault = backend._take_fault(endpoint) if endpoint is not None else None
        try:
            body = self._read_body(headers)
            if body is None:
                status, error = 411, "Content-Length required"
                self.close_connection = True
            elif path == "/_standin/summary" and self.command == "GET":
                status, payload = 200, json.dumps(backend.summary()).encode()
            elif endpoint is None or key is None:
                status = 404
            elif fault is not None and backend._stopped_while_holding(fault):
                status = 503
            elif fault is not None and fault.status:
                status = fault.status
                if fault.retry_after is not None:
                    extra_headers["Retry-After"] = fault.retry_after
            elif not backend._licence_ok(key):
                status, payload = 403, b'{"error":"licence not recognised"}'
            else:
                status, payload, rows, parsed = self._serve(endpoint, query, headers, body)
        except BadRequest as e:
            status, error = 400, str(e)
        if error is not None:
            payload = json.dumps({"error": error}).encode()

        backend._record(
            ReceivedRequest(
                method=self.command,
                path=path,
                endpoint=endpoint,
                query=query,
                headers=headers,
                status=status,
                rows=rows if isinstance(rows, list) else None,
                row_count=len(rows) if isinstance(rows, list) else rows or 0,
                json=parsed,
                body_bytes=len(body or b""),
                body=body if backend.keep_rows else None,
                error=error,
            )
        )
        self._answer(status, payload, extra_headers)

    def _read_body(self, headers: dict[str, str]) -> bytes | None:
        """The body, or None when it is chunked (the real backend requires Content-Length)."""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return None
        value = headers.get("content-length", "0").strip() or "0"
        if not _is_digits(value):  # also refuses "-1": read(-1) would wait for the client's EOF
            self.close_connection = True  # where this body ends is unknown
            raise BadRequest("Content-Length is not a non-negative integer")
        length = int(value)
        return self.rfile.read(length) if length else b""

    @staticmethod
    def _route(path: str) -> tuple[str | None, str | None]:
        if not path.startswith(_PREFIX):
            return None, None
        key, _, endpoint = path[len(_PREFIX) :].partition("/")
        return unquote(key), (endpoint if endpoint in ENDPOINT_SPECS else None)

    def _serve(
        self, endpoint: str, query: dict[str, list[str]], headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes, list[dict[str, str]] | int | None, Any]:
        spec = ENDPOINT_SPECS[endpoint]
        if self.command != spec.method:
            return 405, b"", None, None
        if endpoint == "data":
            return 200, json.dumps(self.backend._scope_body()).encode(), None, None
        media_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != spec.content_type:
            raise BadRequest(f"Content-Type must be {spec.content_type}")
        if spec.needs_upsert and query.get("performUpsert") != ["true"]:
            raise BadRequest("performUpsert=true is required")
        if spec.csv_header is not None:
            values = parse_csv(body, spec.csv_header)
            if self.backend.max_rows is not None and len(values) > self.backend.max_rows:
                return 413, b'{"error":"payload too large"}', None, None
            payload = json.dumps({"received": len(values)}).encode()
            if not self.backend.keep_rows:  # counts only (benchmarks): no per-row dicts
                return 200, payload, len(values), None
            columns = spec.csv_header.split(",")
            return 200, payload, [dict(zip(columns, v, strict=True)) for v in values], None
        try:
            parsed = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise BadRequest("body is not UTF-8 JSON") from None
        validate_patient_sync(parsed)
        return 200, b'{"ok":true}', None, parsed

    def _answer(self, status: int, payload: bytes, extra: dict[str, str]) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in extra.items():
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (read timeout)


# --- standalone ----------------------------------------------------------------------------


def _read_licence_key() -> str:
    key = os.environ.get(LICENCE_KEY_ENV, "").strip()
    if not key:
        key = sys.stdin.readline().strip()
    if not key:
        raise SystemExit(f"give the licence key in ${LICENCE_KEY_ENV} or on stdin")
    return key


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agent.standin.backend", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--library-version", default="1.0.0")
    parser.add_argument("--sqs-queue-url", default="http://127.0.0.1:1/123456789012/r4agent")
    parser.add_argument("--sqs-region", default="eu-west-2")
    parser.add_argument("--counts-only", action="store_true", help="do not keep CSV rows")
    args = parser.parse_args(argv)
    backend = StandinBackend(
        [_read_licence_key()],
        host=args.host,
        port=args.port,
        library_version=args.library_version,
        sqs_queue_url=args.sqs_queue_url,
        sqs_region=args.sqs_region,
        keep_rows=not args.counts_only,
    )
    done = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    with backend:
        print(f"listening on {backend.url}", flush=True)
        while not done.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
