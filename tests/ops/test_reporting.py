"""Error reports leave the machine without patient data, and the reporter never hurts the agent.

Reports go to a real local HTTP server posing as Rollbar (tests/fixtures/rollbar_endpoint.py);
the canary guard also scans every payload it received at the end of the session.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from datetime import date

import pytest

from agent.logs import SecretRegistry
from agent.records import Patient
from agent.reporting import (
    PATIENT_FIELDS,
    REMOVED_RECORD,
    SCRUB_FIELDS,
    NullSink,
    RollbarSink,
    ScrubRules,
    describe_exception,
    scrub_payload,
)
from tests.fixtures.canary import (
    CANARY_CODE,
    CANARY_DOB_ISO,
    CANARY_EMAIL,
    CANARY_FORENAME,
    CANARY_MOBILE,
    CANARY_NOTES,
    CANARY_POSTCODE,
    CANARY_STREET,
    CANARY_SURNAME,
    CANARY_TEXT_ANSWER,
    canaries_in,
)
from tests.fixtures.rollbar_endpoint import FakeRollbar

TOKEN = "rbtoken-5c2f1e8d9a7b"
LICENCE = "licence-4b7e11d0c2"

CANARY_PATIENT = Patient(
    code=CANARY_CODE,
    forename=CANARY_FORENAME,
    surname=CANARY_SURNAME,
    dob=date.fromisoformat(CANARY_DOB_ISO),
    mobile=CANARY_MOBILE,
    email=CANARY_EMAIL,
    address1="1 " + CANARY_STREET,
    postcode=CANARY_POSTCODE,
)


@pytest.fixture
def sink(rollbar_endpoint: FakeRollbar) -> Iterator[RollbarSink]:
    s = RollbarSink(
        TOKEN, environment="test", endpoint=rollbar_endpoint.url, secret_values=[LICENCE]
    )
    yield s
    s.close(timeout=2)


def _raise_while_handling(patient: Patient) -> None:
    record = {"forename": patient.forename, "surname": patient.surname, "code": patient.code}
    questionnaire_notes = CANARY_NOTES
    text_answer = CANARY_TEXT_ANSWER
    assert record and questionnaire_notes and text_answer  # locals a naive reporter would send
    raise RuntimeError(f"upload of patient {patient.code} failed: backend said 422")


def test_exception_with_canary_patient_in_frame_locals_sends_no_canary_and_no_locals(
    sink: RollbarSink, rollbar_endpoint: FakeRollbar
) -> None:
    try:
        _raise_while_handling(CANARY_PATIENT)
    except RuntimeError as e:
        sink.report_exception(e, context={"patient_code": CANARY_CODE, "handler": "sync"})
    sink.flush(5)
    assert sink.stats.sent == 1
    (item,) = rollbar_endpoint.items
    assert canaries_in(item.text) == []
    assert LICENCE not in item.text and TOKEN not in item.text  # token goes as a header only
    assert item.headers["X-Rollbar-Access-Token"] == TOKEN
    body = item.payload["data"]
    assert isinstance(body, dict)
    frames = body["body"]["trace"]["frames"]
    assert frames and all(
        set(f) <= {"filename", "lineno", "colno", "method", "code", "context"} for f in frames
    )
    assert '"locals":' not in item.text and '"argspec":' not in item.text
    assert body["body"]["trace"]["exception"]["message"].startswith(
        f"upload of patient {CANARY_CODE} failed"
    )  # the safe message and the code survive: the report is still useful
    assert body["custom"] == {"patient_code": CANARY_CODE, "handler": "sync"}
    assert body["environment"] == "test"
    assert "user_ip" not in item.text


def test_patient_record_passed_as_report_context_is_removed_whole(
    sink: RollbarSink, rollbar_endpoint: FakeRollbar
) -> None:
    # Patient is a NamedTuple: a scrubber walking it as a plain tuple would see bare values
    try:
        raise RuntimeError("sync failed")
    except RuntimeError as e:
        sink.report_exception(e, context={"record": CANARY_PATIENT, "records": [CANARY_PATIENT]})
    sink.flush(5)
    (item,) = rollbar_endpoint.items
    assert canaries_in(item.text) == []
    assert "sync failed" in item.text
    # pyrollbar turns it into its repr (masked by field name); the hook itself, given the
    # record as it is, removes it whole
    scrubbed = scrub_payload({"custom": {"record": CANARY_PATIENT}}, ScrubRules())
    assert canaries_in(json.dumps(scrubbed, default=str)) == []


def test_exception_message_carrying_a_patient_repr_is_masked(
    sink: RollbarSink, rollbar_endpoint: FakeRollbar
) -> None:
    try:
        raise ValueError(f"bad record {CANARY_PATIENT!r}")  # a careless f-string somewhere
    except ValueError as e:
        sink.report_exception(e, context={})
    sink.flush(5)
    (item,) = rollbar_endpoint.items
    assert canaries_in(item.text) == []
    assert f"code={CANARY_CODE}" in item.text


@pytest.mark.parametrize(
    "message",
    [
        # SQL Server does not escape a quote inside the value it quotes
        "[Microsoft][ODBC Driver 17 for SQL Server][SQL Server]Conversion failed when converting"
        f" the varchar value 'O'{CANARY_SURNAME}' to data type int. (245) (SQLExecDirectW)",
        "[Microsoft][ODBC Driver 17 for SQL Server][SQL Server]Violation of PRIMARY KEY"
        " constraint 'PK_x'. Cannot insert duplicate key in object 'dbo.t'. The duplicate key"
        f" value is (D'Arcy, {CANARY_SURNAME}). (2627) (SQLExecDirectW)",
    ],
)
def test_driver_error_with_an_unescaped_quote_in_the_value_is_withheld_from_reports(
    sink: RollbarSink, rollbar_endpoint: FakeRollbar, message: str
) -> None:
    import pyodbc

    state = "22018" if "Conversion" in message else "23000"
    try:
        try:
            raise pyodbc.DataError(state, f"[{state}] {message}")
        except pyodbc.Error as e:
            assert CANARY_SURNAME not in describe_exception(e)
            raise RuntimeError("reading patients failed") from e
    except RuntimeError as outer:
        sink.report_exception(outer, context={})
    sink.flush(5)
    (item,) = rollbar_endpoint.items
    assert canaries_in(item.text) == []
    assert "reading patients failed" in item.text and state in item.text


def test_database_driver_error_quoting_a_value_is_redacted(
    sink: RollbarSink, rollbar_endpoint: FakeRollbar
) -> None:
    """ODBC drivers quote the offending value in their messages (real pyodbc + SQLite3)."""
    import pyodbc

    conn = pyodbc.connect("Driver=SQLite3;Database=:memory:", timeout=5)
    try:
        conn.execute(f"SELECT '{CANARY_SURNAME}")  # an unterminated literal, echoed back
    except pyodbc.Error as e:
        assert CANARY_SURNAME in str(e)  # the threat is real
        assert CANARY_SURNAME not in describe_exception(e)
        try:
            raise RuntimeError("reading patients failed") from e
        except RuntimeError as outer:
            sink.report_exception(outer, context={})
    finally:
        conn.close()
    sink.flush(5)
    (item,) = rollbar_endpoint.items
    assert canaries_in(item.text) == []
    # what is left still identifies the failure: the SQLSTATE and the driver's native code
    assert "reading patients failed" in item.text and "[HY000] [SQLite]" in item.text


def test_message_with_patient_like_extra_is_stripped(
    sink: RollbarSink, rollbar_endpoint: FakeRollbar
) -> None:
    extra: dict[str, object] = {
        "patient_code": CANARY_CODE,
        "row": {"Forename": CANARY_FORENAME, "Surname": CANARY_SURNAME, "PatientCode": 1},
        "payload": [{"familyName": CANARY_SURNAME, "givenName": CANARY_FORENAME}],
        "mobileNo": CANARY_MOBILE,
        "licence_key": LICENCE,
        "free_text": f"licence is {LICENCE}",
    }
    sink.report_message("patient-sync rejected", level="warning", extra=extra)
    sink.flush(5)
    (item,) = rollbar_endpoint.items
    assert canaries_in(item.text) == [] and LICENCE not in item.text
    data = item.payload["data"]
    assert isinstance(data, dict)
    assert data["level"] == "warning"
    assert data["custom"]["row"] == REMOVED_RECORD
    assert data["custom"]["patient_code"] == CANARY_CODE


def test_pyrollbar_called_directly_sends_nothing_unscrubbed(
    sink: RollbarSink, rollbar_endpoint: FakeRollbar
) -> None:
    import rollbar

    rollbar.report_message(f"direct {CANARY_SURNAME}", "error")
    sink.report_message("through the sink", level="info", extra={})
    sink.flush(5)
    assert [i.payload["data"]["body"]["message"]["body"] for i in rollbar_endpoint.items] == [
        "through the sink"
    ]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_rollbar_unreachable_never_raises_logs_once_and_counts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = RollbarSink(TOKEN, environment="test", endpoint=f"http://127.0.0.1:{_closed_port()}/")
    try:
        for i in range(3):
            sink.report_message(f"attempt {i}", level="error", extra={})
        sink.flush(10)
        assert sink.pending == 0
        assert sink.stats.failed == 3 and sink.stats.sent == 0
        unreachable = [r for r in caplog.records if "unreachable" in r.getMessage()]
        assert len(unreachable) == 1
    finally:
        sink.close()


def test_rollbar_500_never_raises_and_is_counted(
    sink: RollbarSink, rollbar_endpoint: FakeRollbar, caplog: pytest.LogCaptureFixture
) -> None:
    rollbar_endpoint.status = 500
    sink.report_message("one", level="error", extra={})
    sink.report_message("two", level="error", extra={})
    sink.flush(5)
    assert sink.stats.failed == 2 and sink.pending == 0
    assert len([r for r in caplog.records if "HTTP 500" in r.getMessage()]) == 1


def test_rollbar_429_backs_off_and_drops_instead_of_hammering(
    sink: RollbarSink, rollbar_endpoint: FakeRollbar
) -> None:
    rollbar_endpoint.status = 429
    rollbar_endpoint.retry_after = "120"
    for i in range(3):
        sink.report_message(f"burst {i}", level="error", extra={})
    sink.flush(5)
    assert len(rollbar_endpoint.items) == 1  # the rest were dropped during Retry-After
    assert sink.stats.dropped == 3


def test_slow_rollbar_flush_returns_at_its_timeout_with_reports_pending(
    rollbar_endpoint: FakeRollbar,
) -> None:
    rollbar_endpoint.hold = threading.Event()  # the fake answers only when released
    sink = RollbarSink(TOKEN, environment="test", endpoint=rollbar_endpoint.url, timeout=30)
    try:
        sink.report_message("stuck", level="error", extra={})
        sink.flush(0.2)
        assert sink.pending == 1  # flush gave up instead of waiting for the 30 s timeout
    finally:
        rollbar_endpoint.hold.set()
        sink.close(timeout=5)
    assert sink.pending == 0 and sink.stats.sent == 1


def test_slow_rollbar_read_timeout_counts_a_failure(rollbar_endpoint: FakeRollbar) -> None:
    rollbar_endpoint.hold = threading.Event()
    sink = RollbarSink(TOKEN, environment="test", endpoint=rollbar_endpoint.url, timeout=0.3)
    try:
        sink.report_message("slow", level="error", extra={})
        sink.flush(10)
        assert sink.stats.failed == 1 and sink.pending == 0
    finally:
        rollbar_endpoint.hold.set()
        sink.close()


def test_reporter_never_raises_on_hostile_input(
    sink: RollbarSink, rollbar_endpoint: FakeRollbar
) -> None:
    class Hostile:
        def __repr__(self) -> str:
            raise RuntimeError("repr exploded")

        def __str__(self) -> str:
            raise RuntimeError("str exploded")

    cyclic: dict[str, object] = {}
    cyclic["self"] = cyclic
    sink.report_message("hostile", level="nonsense", extra={"x": Hostile(), "c": cyclic})

    class BadException(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no message for you")

    sink.report_exception(BadException(), context={"x": Hostile()})
    sink.flush(5)  # nothing raised; whatever could be sent was sent


def test_full_queue_drops_and_counts(rollbar_endpoint: FakeRollbar) -> None:
    rollbar_endpoint.hold = threading.Event()
    sink = RollbarSink(TOKEN, environment="test", endpoint=rollbar_endpoint.url, max_queue=2)
    try:
        for i in range(6):
            sink.report_message(f"flood {i}", level="error", extra={})
        assert sink.stats.dropped >= 3
    finally:
        rollbar_endpoint.hold.set()
        sink.close(timeout=5)


def test_scrub_fields_keep_pyrollbar_defaults_and_add_secrets_and_patient_fields() -> None:
    import rollbar

    for default in ("password", "secret", "access_token", "authorization", "passwd"):
        assert default in SCRUB_FIELDS
    for ours in (
        "licence_key",
        "licenceKey",
        "secret_access_key",
        "session_token",
        "connection_string",
        "forename",
        "surname",
        "dob",
        "mobileNo",
        "email",
        "familyName",
        "givenName",
        "dateOfBirth",
        "TextAnswer",
        "answerNotes",
    ):
        assert ours in SCRUB_FIELDS
    assert set(rollbar.SETTINGS["scrub_fields"]) >= set(SCRUB_FIELDS) - {""} or not (
        rollbar._initialized
    )
    assert rollbar.SETTINGS["locals"]["enabled"] is False or not rollbar._initialized


def test_scrub_payload_is_pure_and_handles_every_patient_field_name() -> None:
    payload: dict[str, object] = {
        "data": {"custom": {name: CANARY_SURNAME for name in PATIENT_FIELDS}},
        "access_token": TOKEN,
    }
    before = json.dumps(payload)
    scrubbed = scrub_payload(payload, ScrubRules(secret_values=(TOKEN,)))
    assert json.dumps(payload) == before  # input untouched
    assert canaries_in(json.dumps(scrubbed)) == [] and TOKEN not in json.dumps(scrubbed)


def test_null_sink_logs_locally_without_patient_data(caplog: pytest.LogCaptureFixture) -> None:
    sink = NullSink()
    try:
        raise RuntimeError(f"bad row surname='{CANARY_SURNAME}' code={CANARY_CODE}")
    except RuntimeError as e:
        sink.report_exception(e, context={})
    sink.report_message(f"note email={CANARY_EMAIL}", level="warning", extra={})
    sink.flush(1)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "not sent: no Rollbar token" in text and f"code={CANARY_CODE}" in text
    assert canaries_in(text) == []


def test_questionnaire_statistics_survive_scrubbing(
    sink: RollbarSink, rollbar_endpoint: FakeRollbar
) -> None:
    """The questions/pre-set answers reports are the point of those commands: not over-scrubbed."""
    extra: dict[str, object] = {
        "unique_questions": 2,
        "questions": [
            {"question": "Are you taking any medication?", "answers": 120},
            {"question": "Do you smoke?", "answers": 98},
        ],
    }
    sink.report_message("questionnaire questions: 2 unique", level="info", extra=extra)
    sink.flush(5)
    (item,) = rollbar_endpoint.items
    custom = item.payload["data"]["custom"]
    assert custom["questions"] == extra["questions"]


def test_every_personal_field_of_the_data_model_and_wire_contract_is_scrubbed() -> None:
    """Threat: a field added to the records or the contract later, reaching Rollbar unscrubbed."""
    from dataclasses import fields

    from agent import contract
    from agent.r4.sql import REQUIRED_COLUMNS
    from agent.records import Answer, Patient, Questionnaire
    from agent.reporting import SCRUB_FIELDS

    not_personal = {"code", "id", "country", "qaire_id", "patient_code", "completed_at", "answers"}
    not_personal |= {"patientCode", "addressId", "qaireid", "QuestionId", "AnswerId", "state"}
    not_personal |= {"datetime", "typed"}  # typed: whether an answer was typed, not what
    personal = set(Patient._fields)
    personal |= {f.name for model in (Questionnaire, Answer) for f in fields(model)}
    personal |= set(contract.PATIENT_FIELDS)
    personal |= set(REQUIRED_COLUMNS["patients"]) | set(REQUIRED_COLUMNS["addresses"])
    personal |= set(REQUIRED_COLUMNS["CompletedQuestionnaireAnswer"])
    personal |= {"notes", "Notes", "TextAnswer"}
    missing = sorted(personal - not_personal - set(SCRUB_FIELDS))
    assert missing == []


def test_secret_registered_for_the_logs_after_the_sink_was_built_is_masked_in_reports(
    rollbar_endpoint: FakeRollbar,
) -> None:
    registry = SecretRegistry()  # the log filter's registry (agent.logs.SECRETS in the agent)
    sink = RollbarSink(TOKEN, environment="test", endpoint=rollbar_endpoint.url, secrets=registry)
    late = "Zk8Qp2Wr/Xm5Tn9Lb4Vc7Hd1Jf6Gs3Ey0AuLATE1"  # a refreshed SecretAccessKey: 40 chars
    registry.add(late)
    try:
        raise RuntimeError(f"signature check failed for {late}")
    except RuntimeError as e:
        sink.report_exception(e, context={})
    sink.flush(5)
    sink.close(timeout=2)
    (item,) = rollbar_endpoint.items
    assert late not in item.text and "signature check failed for ***" in item.text
    assert TOKEN in registry.values()  # the sink's own token is in the one list too


def test_short_db_password_is_masked_in_reports_though_too_short_for_the_log_registry(
    rollbar_endpoint: FakeRollbar,
) -> None:
    registry = SecretRegistry()
    short = "Pw9!"  # a weak practice SQL password: below MIN_SECRET_LENGTH
    sink = RollbarSink(TOKEN, environment="test", endpoint=rollbar_endpoint.url,
                       secret_values=[short], secrets=registry)
    try:
        raise RuntimeError(f"login failed with {short} for user r4")
    except RuntimeError as e:
        sink.report_exception(e, context={})
    sink.flush(5)
    sink.close(timeout=2)
    (item,) = rollbar_endpoint.items
    assert short not in item.text and "login failed with *** for user r4" in item.text
    assert short not in registry.values()  # logs keep their length rule
