"""The typed envelope of an SQS command message: one frozen dataclass per command type.

Wire shape (docs/messages.md): the SQS message body is a JSON object whose `type` names the
command; the other members are that command's fields, camelCase as the backend writes them:

    {"type": "patient-sync", "r4PatientId": 1234, "patientPatchId": "p-77"}
    {"type": "bulk-upload-patients"}

`decode` is the only way a body becomes a command. Every way a body can be wrong turns into one
`DecodeError` (a PermanentError: retrying the same bytes cannot help) whose message says what
was wrong but never repeats what the body held. Unknown extra members are ignored, so the
backend can add fields before the agent knows them.

The field table below also generates the JSON Schema (agent.commands.schema), so the decoder and
the schema the backend validates against cannot drift apart.
"""

from __future__ import annotations

import json
import re
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar, Final, TypeAlias

from agent.errors import MessageFault

_SAFE_TYPE_NAME: Final = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
_DIGITS: Final = re.compile(r"^[0-9]{1,10}$")
# R4's codes are SQL Server `int`s, and 0 is never one: anything else would fail in the query
# (a bug, retried until SQS's redrive dead-letters it without a reason) instead of here.
MIN_ID: Final = 1
MAX_ID: Final = 2**31 - 1


# Every `DecodeError.reason` (the dead-letter `failure-reason` code).
DECODE_REASONS: Final = frozenset(
    {"not-json", "not-an-object", "missing-type", "unknown-type", "missing-field", "bad-field"}
)


class DecodeError(MessageFault):
    """A message body that is not a valid command. `reason` is a short machine-readable code
    (`not-json`, `not-an-object`, `missing-type`, `unknown-type`, `missing-field`, `bad-field`)
    used as the dead-letter `failure-reason`; the message adds which field, never its value."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"undecodable message ({reason}): {detail}")
        self.reason = reason
        self.detail = detail


def _wire(
    name: str,
    description: str,
    *,
    int_like: bool = False,
    default: object = MISSING,
) -> Any:
    """A command field: its camelCase wire name, a description for the schema, and whether an
    integer may also arrive as a string of digits (the backend's ids are not always numbers).
    A field with a `default` is optional: bodies without it stay valid."""
    metadata = {"wire": name, "description": description, "int_like": int_like}
    if default is MISSING:
        return field(metadata=metadata)
    return field(default=default, metadata=metadata)


_FULL_DESCRIPTION: Final = (
    "true: send every row (and rebuild the change ledger); absent or false: only rows new or "
    "changed since the backend last acknowledged them"
)


@dataclass(frozen=True, slots=True)
class PatientSync:
    """Send one patient and their latest questionnaire now: their screen is about to open."""

    TYPE: ClassVar[str] = "patient-sync"
    r4_patient_id: int = _wire(
        "r4PatientId", "R4 patientCode of the patient to send", int_like=True
    )
    patient_patch_id: str = _wire(
        "patientPatchId", "opaque id the backend wants echoed back in the patient-sync POST"
    )


@dataclass(frozen=True, slots=True)
class BulkUploadPatients:
    """Upload basic details of the patients now (upsert): the new or changed ones, or every
    one with `"full": true`."""

    TYPE: ClassVar[str] = "bulk-upload-patients"
    full: bool = _wire("full", _FULL_DESCRIPTION, default=False)


@dataclass(frozen=True, slots=True)
class BulkUploadAppointments:
    """Upload the appointments now (upsert): the new or changed ones, or every one with
    `"full": true`."""

    TYPE: ClassVar[str] = "bulk-upload-appointments"
    full: bool = _wire("full", _FULL_DESCRIPTION, default=False)


@dataclass(frozen=True, slots=True)
class BulkUploadAppointmentStatus:
    """Upload the appointment status table (ApptFlags) now."""

    TYPE: ClassVar[str] = "bulk-upload-appointment-status"


@dataclass(frozen=True, slots=True)
class Restart:
    """Finish in-flight work, then exit with ExitCode.RESTART_REQUESTED."""

    TYPE: ClassVar[str] = "restart"


@dataclass(frozen=True, slots=True)
class TestMessage:
    """Send a test message to Rollbar (proves the agent is alive and reporting)."""

    __test__: ClassVar[bool] = False  # not a pytest test class despite the name
    TYPE: ClassVar[str] = "test"


@dataclass(frozen=True, slots=True)
class QuestionnaireQuestionsUpload:
    """Report every unique questionnaire question with its answer count to Rollbar."""

    TYPE: ClassVar[str] = "questionnaire-questions-upload"


@dataclass(frozen=True, slots=True)
class QuestionnaireAnswersUpload:
    """Report every unique PRE-SET answer (never free text) with its count to Rollbar."""

    TYPE: ClassVar[str] = "questionnaire-answers-upload"


Command: TypeAlias = (
    PatientSync
    | BulkUploadPatients
    | BulkUploadAppointments
    | BulkUploadAppointmentStatus
    | Restart
    | TestMessage
    | QuestionnaireQuestionsUpload
    | QuestionnaireAnswersUpload
)

COMMAND_TYPES: Final[tuple[type[Command], ...]] = (
    PatientSync,
    BulkUploadPatients,
    BulkUploadAppointments,
    BulkUploadAppointmentStatus,
    Restart,
    TestMessage,
    QuestionnaireQuestionsUpload,
    QuestionnaireAnswersUpload,
)
BY_TYPE: Final[dict[str, type[Command]]] = {c.TYPE: c for c in COMMAND_TYPES}


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One wire field of a command, as the decoder and the schema generator both see it."""

    attribute: str
    wire: str
    python_type: type
    description: str
    int_like: bool
    required: bool


def field_specs(command_type: type[Command]) -> tuple[FieldSpec, ...]:
    specs = []
    for f in fields(command_type):
        python_type = {"int": int, "str": str, "bool": bool}.get(str(f.type))
        if python_type is None:  # pragma: no cover - guarded by tests over every command type
            raise TypeError(f"{command_type.__name__}.{f.name}: unsupported field type {f.type}")
        specs.append(
            FieldSpec(
                attribute=f.name,
                wire=f.metadata["wire"],
                python_type=python_type,
                description=f.metadata["description"],
                int_like=f.metadata["int_like"],
                required=f.default is MISSING and f.default_factory is MISSING,
            )
        )
    return tuple(specs)


def _value_kind(value: object) -> str:
    """The JSON kind of a value, for error messages that must not show the value itself."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _convert(spec: FieldSpec, value: object) -> object:
    if spec.python_type is bool:
        if isinstance(value, bool):
            return value
        raise DecodeError(
            "bad-field", f"field {spec.wire} must be true or false, got {_value_kind(value)}"
        )
    if spec.python_type is int:
        number = _integer(spec, value)
        if not MIN_ID <= number <= MAX_ID:
            raise DecodeError(
                "bad-field", f"field {spec.wire} is out of range ({MIN_ID}..{MAX_ID})"
            )
        return number
    if isinstance(value, str) and value:
        if not _is_unicode(value):
            # a lone surrogate (a JSON escape such as \ud800) cannot be sent as UTF-8
            raise DecodeError("bad-field", f"field {spec.wire} is not valid Unicode text")
        return value
    raise DecodeError(
        "bad-field", f"field {spec.wire} must be a non-empty string, got {_value_kind(value)}"
    )


def _integer(spec: FieldSpec, value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, float) and value.is_integer() and 0 <= value < 2**63:
        return int(value)  # JSON Schema's "integer" includes 42.0; so does the decoder
    if spec.int_like and isinstance(value, str) and _DIGITS.match(value):
        return int(value)
    expected = "a non-negative integer" + (" or a string of digits" if spec.int_like else "")
    raise DecodeError(
        "bad-field", f"field {spec.wire} must be {expected}, got {_value_kind(value)}"
    )


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def decode(body: str) -> Command:
    """Turn an SQS message body into a command.

    Raises DecodeError for invalid JSON, a non-object, a missing or unknown `type`, and a
    missing or ill-typed field; the error names the field, never the body's content.
    """
    try:
        document = json.loads(body)
    except json.JSONDecodeError as e:
        # e.msg and the position describe the syntax error without quoting the document
        raise DecodeError("not-json", f"{e.msg} at line {e.lineno} column {e.colno}") from None
    except (TypeError, ValueError, RecursionError):
        raise DecodeError("not-json", "body is not JSON text") from None
    if not isinstance(document, dict):
        raise DecodeError("not-an-object", f"body is a JSON {_value_kind(document)}, not an object")
    type_name = document.get("type")
    if type_name is None:
        raise DecodeError("missing-type", "member `type` is missing")
    if not isinstance(type_name, str):
        raise DecodeError("unknown-type", f"member `type` is a {_value_kind(type_name)}")
    command_type = BY_TYPE.get(type_name)
    if command_type is None:
        shown = type_name if _SAFE_TYPE_NAME.match(type_name) else "(not shown)"
        raise DecodeError("unknown-type", f"unknown message type {shown}")
    values: dict[str, Any] = {}
    for spec in field_specs(command_type):
        if spec.wire not in document:
            if spec.required:
                raise DecodeError("missing-field", f"{type_name} needs field {spec.wire}")
            continue
        values[spec.attribute] = _convert(spec, document[spec.wire])
    return command_type(**values)


def encode(command: Command) -> str:
    """The wire body of a command (used by the demo, the benchmark and tests to send one)."""
    document: dict[str, object] = {"type": command.TYPE}
    for spec in field_specs(type(command)):
        document[spec.wire] = getattr(command, spec.attribute)
    return json.dumps(document)
