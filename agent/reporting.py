"""Error reporting off the machine (Rollbar), with no patient data and no secrets in it.

How a report travels:
1. `RollbarSink.report_*` asks pyrollbar to build the item (pyrollbar is configured with
   local-variable capture OFF, no IP/user capture, and `SCRUB_FIELDS` = pyrollbar's own
   defaults + secrets + every patient field name; `scrub_fields=` replaces the defaults,
   hence the full list).
2. Our payload hook (`rollbar.events.add_payload_handler`) takes the built item, runs
   `scrub_payload` over it (drops frame locals/args entirely, drops any dict that looks like
   a patient record, masks patient-field `key=value` pairs and every secret registered with
   `agent.logs.SECRETS` in every string (the log filter's list: a secret learned later, such
   as refreshed SQS credentials, is masked here too), redacts quoted literals in
   database-driver error messages), queues the
   scrubbed copy on our own bounded sender, and tells pyrollbar not to send anything
   itself. A payload built outside a sink (someone calling `rollbar.report_*` directly)
   is dropped: nothing leaves unscrubbed.
3. One daemon thread POSTs queued items to `<endpoint>item/` with a timeout; failures
   (unreachable, 5xx, 429 + Retry-After) are logged once per kind and counted, never
   raised. `flush(timeout)` waits, bounded, for the queue to drain at exit.

Every public method is guarded: the reporter never raises into the agent.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import json
import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Literal

import requests

from agent._version import __version__
from agent.errors import exception_chain
from agent.logs import SECRETS, SecretRegistry, mask_credential_shapes
from agent.r4 import driver_messages

log = logging.getLogger(__name__)

# pyrollbar 1.x defaults (rollbar.SETTINGS['scrub_fields']), repeated because `scrub_fields=`
# replaces them.
_ROLLBAR_DEFAULT_SCRUB_FIELDS: Final = (
    "pw",
    "passwd",
    "password",
    "secret",
    "confirm_password",
    "confirmPassword",
    "password_confirmation",
    "passwordConfirmation",
    "access_token",
    "accessToken",
    "auth",
    "authentication",
    "authorization",
)
SECRET_FIELDS: Final = (
    "licence_key",
    "licenceKey",
    "license_key",
    "licenseKey",
    "licence",
    "license",
    "licence_key_file",
    "x-rollbar-access-token",
    "X-Rollbar-Access-Token",
    "aws_access_key_id",
    "access_key_id",
    "AccessKeyId",
    "accessKeyId",
    "aws_secret_access_key",
    "secret_access_key",
    "SecretAccessKey",
    "secretAccessKey",
    "aws_session_token",
    "session_token",
    "SessionToken",
    "sessionToken",
    "credentials",
    "Credentials",
    "connection_string",
    "connectionString",
    "conn_str",
    "PWD",
    "pwd",
    "proxy",
    "proxies",
    "cookie",
    "Cookie",
)
PATIENT_FIELDS: Final = (
    # agent.records names
    "forename",
    "surname",
    "dob",
    "mobile",
    "email",
    "address1",
    "address2",
    "address3",
    "address4",
    "address5",
    "postcode",
    "notes",
    "answer_text",
    "question_text",
    # R4 column names
    "Forename",
    "Surname",
    "DOB",
    "DateOfBirth",
    "MobileNo",
    "mobileNo",
    "Email",
    "EMail",
    "Address1",
    "Address2",
    "Address3",
    "Address4",
    "Address5",
    "Postcode",
    "PostCode",
    "Notes",
    "TextAnswer",
    "textAnswer",
    "NumberAnswer",
    "DateAnswer",
    "CurrencyAnswer",
    # backend contract names
    "familyName",
    "givenName",
    "dateOfBirth",
    "mobileNumber",
    "emailAddress",
    "addressLine1",
    "addressLine2",
    "addressLine3",
    "city",
    "county",
    "answerText",
    "answerNotes",
    "firstName",
    "lastName",
    "phone",
    "telephone",
)
SCRUB_FIELDS: Final[tuple[str, ...]] = (
    _ROLLBAR_DEFAULT_SCRUB_FIELDS + SECRET_FIELDS + PATIENT_FIELDS
)


def _norm(key: str) -> str:
    return re.sub(r"[^a-z0-9]", "", key.lower())


_SCRUB_KEYS: Final = frozenset(_norm(k) for k in SCRUB_FIELDS)
_PATIENT_KEYS: Final = frozenset(_norm(k) for k in PATIENT_FIELDS) | {
    "addressline4",
    "addressline5",
    "mobileno",
    "name",
    "fullname",
    "title",
    "birthdate",
}
_FRAME_KEEP: Final = frozenset({"filename", "lineno", "colno", "method", "code", "context"})
REMOVED_RECORD: Final = "[removed: looked like a patient record]"
MASK: Final = "***"
MAX_DEPTH: Final = 40
MAX_CHAIN: Final = 20  # exceptions of a cause/context chain searched for driver errors

# `surname='X'`, `"surname": "X"`, `surname=X,` ... for every patient/secret field name.
_FIELD_NAMES_RE: Final = "|".join(
    sorted(
        {re.escape(k) for k in SCRUB_FIELDS} | {re.escape(k) for k in PATIENT_FIELDS},
        key=len,
        reverse=True,
    )
)
_KEY_VALUE_RE: Final = re.compile(
    rf"""(?P<key>["']?\b(?:{_FIELD_NAMES_RE})\b["']?\s*[=:]\s*)"""
    r"""(?P<value>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[^,;)}\]\s]+(?:\s[^,;)}\]=:\s]+)*)""",
    re.IGNORECASE,
)
_DB_DRIVER_MODULES: Final = ("pyodbc", "sqlite3")


def mask_key_values(text: str) -> str:
    """Mask the value of every `field=value` / `"field": value` whose field is sensitive."""
    return _KEY_VALUE_RE.sub(lambda m: m.group("key") + MASK, text)


def redact_driver_args(args: tuple[object, ...]) -> list[str]:
    """A database-driver error's args with only the parts `driver_messages.scrub` knows to be
    safe: drivers quote row values without escaping their quotes ('O'Brien'), so no pattern
    over quotes can be trusted. pyodbc's args are (SQLSTATE, message)."""
    texts = [str(a) for a in args]
    if len(texts) >= 2 and re.fullmatch(r"[0-9A-Z]{5}", texts[0]):
        return [texts[0], *(driver_messages.scrub(texts[0], t) for t in texts[1:])]
    return [driver_messages.scrub("", t) for t in texts]


def _looks_like_patient(d: Mapping[object, object]) -> bool:
    hits = sum(1 for k in d if isinstance(k, str) and _norm(k) in _PATIENT_KEYS)
    return hits >= 2


@dataclass(frozen=True)
class ScrubRules:
    secret_values: tuple[str, ...] = ()  # masked wherever they appear in a string
    driver_messages: tuple[tuple[str, str], ...] = ()  # DB-driver error texts -> redacted


def _scrub_string(text: str, rules: ScrubRules) -> str:
    for message, redacted in rules.driver_messages:
        if message and message in text:
            text = text.replace(message, redacted)
    for value in rules.secret_values:
        if value and value in text:
            text = text.replace(value, MASK)
    return mask_key_values(mask_credential_shapes(text))


def _scrub(value: object, rules: ScrubRules, depth: int, in_frames: bool) -> object:
    if depth > MAX_DEPTH:
        return "[removed: too deep]"
    if isinstance(value, str):
        return _scrub_string(value, rules)
    if isinstance(value, Mapping):
        if _looks_like_patient(value):
            return REMOVED_RECORD
        out: dict[str, object] = {}
        for k, v in value.items():
            key = str(k)
            if in_frames and key not in _FRAME_KEEP:
                continue  # locals, args, kwargs, argspec...: dropped whole
            if _norm(key) in _SCRUB_KEYS:
                out[key] = MASK
            elif key == "frames" and isinstance(v, list):
                out[key] = [
                    _scrub(frame, rules, depth + 2, in_frames=True)
                    if isinstance(frame, Mapping)
                    else "[removed]"
                    for frame in v
                ]
            else:
                out[key] = _scrub(v, rules, depth + 1, in_frames=False)
        return out
    if isinstance(value, tuple) and hasattr(value, "_asdict"):  # a NamedTuple record: by name
        return _scrub(value._asdict(), rules, depth + 1, in_frames=False)
    if isinstance(value, list | tuple):
        return [_scrub(v, rules, depth + 1, in_frames=False) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return _scrub_string(repr(value), rules)


def scrub_payload(payload: Mapping[str, object], rules: ScrubRules) -> dict[str, object]:
    """A scrubbed copy of a Rollbar item (pure; never mutates the input).

    Raises whatever a pathological payload makes it raise; callers guard it.
    """
    scrubbed = _scrub(payload, rules, 0, in_frames=False)
    assert isinstance(scrubbed, dict)
    scrubbed.pop("access_token", None)  # sent as a header instead
    data = scrubbed.get("data")
    if isinstance(data, dict):
        for key in ("request", "person"):
            data.pop(key, None)
    return scrubbed


# ---------------------------------------------------------------------------------------------
# pyrollbar is a process-wide singleton: configure it once, route its payloads to the sink
# that asked for them (a context variable set for the duration of the report call).

_ACTIVE: contextvars.ContextVar[RollbarSink | None] = contextvars.ContextVar(
    "r4agent_rollbar_sink", default=None
)
_init_lock = threading.Lock()
_initialised = False


def _payload_hook(payload: object, **_kw: object) -> object:
    """pyrollbar payload handler: hand the item to the active sink, never let pyrollbar send."""
    try:
        sink = _ACTIVE.get()
        if sink is not None and isinstance(payload, Mapping):
            sink._accept(payload)
    except Exception as e:  # noqa: BLE001 - the reporter never raises
        log.warning("error report dropped: scrubbing failed (%s)", type(e).__name__)
    return False


def _ensure_rollbar(token: str, environment: str, endpoint: str) -> None:
    global _initialised
    import rollbar
    import rollbar.lib.events

    with _init_lock:
        if not _initialised:
            rollbar.init(
                token,
                environment,
                endpoint=endpoint,
                handler="blocking",  # never used: our hook sends; no pyrollbar threads
                locals={"enabled": False, "safe_repr": True, "scrub_varargs": True},
                scrub_fields=list(SCRUB_FIELDS),
                capture_ip=False,
                capture_username=False,
                capture_email=False,
                include_request_body=False,
                allow_logging_basic_config=False,
                log_payload_on_error=False,
                suppress_reinit_warning=True,
                code_version=__version__,
                timeout=5,
            )
            _initialised = True
        # init() resets the event handlers the first time only; (re)adding is idempotent.
        rollbar.lib.events.add_payload_handler(_payload_hook)


# ---------------------------------------------------------------------------------------------


@dataclass
class SinkStats:
    sent: int = 0
    failed: int = 0  # the endpoint was unreachable or answered non-2xx
    dropped: int = 0  # queue full, rate-limited, or the scrubber failed


_STOP: Final[dict[str, object]] = {}  # sentinel (identity) telling the sender thread to end


class RollbarSink:
    """`agent.ports.ErrorSink` that reports to Rollbar (or a stand-in endpoint)."""

    def __init__(
        self,
        access_token: str,
        *,
        environment: str,
        endpoint: str = "https://api.rollbar.com/api/1/",
        proxy: str | None = None,
        timeout: float = 5.0,
        max_queue: int = 100,
        secret_values: Iterable[str] = (),
        secrets: SecretRegistry = SECRETS,
        session_factory: Callable[[], requests.Session] = requests.Session,
    ) -> None:
        self._token = access_token
        self._environment = environment
        self._url = endpoint.rstrip("/") + "/item/"
        self._timeout = timeout
        # one registry for logs and reports: whatever is registered later is masked too
        self._secrets = secrets
        secrets.add(*secret_values, access_token)
        # the registry skips short values (they would mask ordinary words in logs); a report
        # still masks the ones given here, however short: a 4-character DB password is one
        self._given = tuple(v for v in (*secret_values, access_token) if v)
        self._session = session_factory()
        self._session.trust_env = False  # only the configured proxy, never ambient env vars
        if proxy:
            self._session.proxies = {"http": proxy, "https": proxy}
        self._queue: queue.Queue[dict[str, object]] = queue.Queue(maxsize=max_queue)
        self._cond = threading.Condition()
        self._pending = 0
        self._warned: set[str] = set()
        self._suspended_until = 0.0
        self._driver_messages: contextvars.ContextVar[tuple[tuple[str, str], ...]] = (
            contextvars.ContextVar("driver_messages", default=())
        )
        self.stats = SinkStats()
        self._closed = False
        self._worker = threading.Thread(target=self._run, name="rollbar-sender", daemon=True)
        self._worker.start()
        _ensure_rollbar(access_token, environment, endpoint)

    # -- ErrorSink ---------------------------------------------------------------------------

    def report_exception(self, exc: BaseException, *, context: dict[str, object]) -> None:
        try:
            import rollbar

            token = _ACTIVE.set(self)
            messages = self._driver_messages.set(_driver_error_messages(exc))
            try:
                rollbar.report_exc_info(
                    (type(exc), exc, exc.__traceback__), extra_data=dict(context) or None
                )
            finally:
                self._driver_messages.reset(messages)
                _ACTIVE.reset(token)
        except Exception as e:  # noqa: BLE001 - the reporter never raises
            self._warn_once("internal", "error report not sent: reporter failed (%s)", e)

    def report_message(self, message: str, *, level: str, extra: dict[str, object]) -> None:
        try:
            import rollbar

            token = _ACTIVE.set(self)
            try:
                rollbar.report_message(
                    message, _rollbar_level(level), extra_data=dict(extra) or None
                )
            finally:
                _ACTIVE.reset(token)
        except Exception as e:  # noqa: BLE001 - the reporter never raises
            self._warn_once("internal", "message report not sent: reporter failed (%s)", e)

    def flush(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for queued reports to be sent (or to fail)."""
        try:
            deadline = time.monotonic() + max(timeout, 0.0)
            with self._cond:
                while self._pending:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        log.warning(
                            "exiting with %d error report(s) not yet sent to Rollbar",
                            self._pending,
                        )
                        return
                    self._cond.wait(remaining)
        except Exception as e:  # noqa: BLE001 - the reporter never raises
            self._warn_once("internal", "flush failed (%s)", e)

    def close(self, timeout: float = 0.0) -> None:
        """Flush (bounded), then stop the sender thread. Later reports are dropped."""
        self.flush(timeout)
        self._closed = True
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(_STOP)

    @property
    def pending(self) -> int:
        with self._cond:
            return self._pending

    # -- internals ---------------------------------------------------------------------------

    def _accept(self, payload: Mapping[str, object]) -> None:
        """Called by the payload hook on the reporting thread: scrub, then queue."""
        secret_values = tuple(sorted({*self._secrets.values(), *self._given}, key=len,
                                     reverse=True))  # longest first: a secret holding another
        rules = ScrubRules(secret_values=secret_values, driver_messages=self._driver_messages.get())
        scrubbed = scrub_payload(payload, rules)
        data = scrubbed.get("data")
        if isinstance(data, dict):
            data["environment"] = self._environment
        with self._cond:
            if self._closed:
                self.stats.dropped += 1
                return
            try:
                self._queue.put_nowait(scrubbed)
            except queue.Full:
                self.stats.dropped += 1
                self._warn_once("full", "error report dropped: the send queue is full")
                return
            self._pending += 1

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            try:
                self._send(item)
            except Exception as e:  # noqa: BLE001 - the sender thread must never die
                self._count("failed")
                self._warn_once("internal", "error report not sent (%s)", e)
            finally:
                with self._cond:
                    self._pending -= 1
                    self._cond.notify_all()

    def _send(self, item: dict[str, object]) -> None:
        if time.monotonic() < self._suspended_until:
            self._count("dropped")
            return
        body = json.dumps(item, default=str)
        try:
            response = self._session.post(
                self._url,
                data=body.encode("utf-8"),
                headers={
                    "Content-Type": "application/json",
                    "X-Rollbar-Access-Token": self._token,
                },
                timeout=(min(self._timeout, 3.0), self._timeout),
            )
        except requests.RequestException as e:
            self._count("failed")
            self._warn_once(
                "unreachable",
                "Rollbar unreachable (%s); further failures are counted, not logged",
                e,
            )
            return
        status = response.status_code
        response.close()
        if 200 <= status < 300:
            self._count("sent")
            return
        if status == 429:
            self._count("dropped")
            self._suspended_until = time.monotonic() + _retry_after(
                response.headers.get("Retry-After")
            )
            self._warn_once("429", "Rollbar rate-limited this agent (HTTP 429); backing off")
            return
        self._count("failed")
        self._warn_once(
            f"http-{status}",
            f"Rollbar rejected an error report (HTTP {status}); further ones are counted",
        )

    def _count(self, what: str) -> None:
        with self._cond:
            setattr(self.stats, what, getattr(self.stats, what) + 1)

    def _warn_once(self, kind: str, message: str, exc: BaseException | None = None) -> None:
        try:
            if kind in self._warned:
                return
            self._warned.add(kind)
            if exc is None:
                log.warning(message)
            else:  # the type only: a transport error's text can hold URLs with tokens
                log.warning(message, type(exc).__name__)
        except Exception:  # noqa: BLE001, S110 - logging itself failed; nothing safer to do
            pass


class NullSink:
    """The ErrorSink when no Rollbar token is configured: errors stay in the local log."""

    def report_exception(self, exc: BaseException, *, context: dict[str, object]) -> None:
        with contextlib.suppress(Exception):  # the reporter never raises
            log.error(
                "error (not sent: no Rollbar token configured): %s",
                describe_exception(exc),
            )

    def report_message(self, message: str, *, level: str, extra: dict[str, object]) -> None:
        with contextlib.suppress(Exception):  # the reporter never raises
            log.log(
                _LOG_LEVELS.get(level, logging.INFO),
                "report (not sent: no Rollbar token configured): %s",
                mask_key_values(message),
            )

    def flush(self, timeout: float) -> None:
        return None


_LOG_LEVELS: Final = {
    "critical": logging.CRITICAL,
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
}


def _rollbar_level(level: str) -> Literal["critical", "error", "warning", "info", "debug"]:
    if level == "critical":
        return "critical"
    if level == "warning":
        return "warning"
    if level == "info":
        return "info"
    if level == "debug":
        return "debug"
    return "error"


def _retry_after(value: str | None) -> float:
    try:
        return min(max(float(value or 60), 1.0), 3600.0)
    except ValueError:
        return 60.0


def _is_driver_error(exc: BaseException) -> bool:
    return any(c.__module__.split(".")[0] in _DB_DRIVER_MODULES for c in type(exc).__mro__)


def _driver_error_messages(exc: BaseException) -> tuple[tuple[str, str], ...]:
    """(text, redacted text) of database-driver errors in the chain.

    Drivers quote the offending value in their messages, and str() of a pyodbc error is the
    repr of its args tuple (quotes escaped), so each arg is redacted on its own and str(e) is
    rebuilt from the redacted args.
    """
    out: list[tuple[str, str]] = []
    for e in itertools.islice(exception_chain(exc), MAX_CHAIN):
        if not _is_driver_error(e):
            continue
        args = tuple(str(a) for a in e.args)
        redacted = redact_driver_args(args)  # the same texts: each arg's str() is taken once
        try:
            text = str(e)
        except Exception:  # noqa: BLE001 - a broken __str__ leaves nothing to redact
            text = ""
        if text:
            rebuilt = ", ".join(redacted) if len(redacted) != 1 else redacted[0]
            out.append((text, rebuilt or "<redacted>"))
            out.append((repr(text)[1:-1], rebuilt or "<redacted>"))
        out.extend((a, r) for a, r in zip(args, redacted, strict=True) if a)
    # longest first, so str(e) is replaced before the args inside it
    return tuple(sorted(set(out), key=lambda pair: len(pair[0]), reverse=True))


def scrub_text(text: str, secret_values: Iterable[str] = ()) -> str:
    """A text that leaves the machine other than as a report (a support bundle's files), with
    a payload's string scrubbing: the secrets registered with agent.logs.SECRETS and
    `secret_values`, credential shapes and sensitive `field=value` pairs masked. Line by
    line, so a masked value never swallows the line after it."""
    secrets = SecretRegistry()  # its rules: longest first, too-short values ignored
    secrets.add(*SECRETS.values(), *secret_values)
    rules = ScrubRules(secret_values=secrets.values())
    return "".join(_scrub_string(line, rules) for line in text.splitlines(keepends=True))


def describe_exception(exc: BaseException) -> str:
    """`Type: message` with the same string scrubbing as a Rollbar payload (for local logs)."""
    rules = ScrubRules(driver_messages=_driver_error_messages(exc))
    return f"{type(exc).__name__}: {_scrub_string(str(exc), rules)}"
