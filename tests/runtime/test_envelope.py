"""The command envelope: every way a body can be wrong is one DecodeError that never repeats
the body; the JSON Schema export accepts exactly what the decoder accepts."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # (a moto[server] dependency)
import pytest

from agent.commands import envelope, schema
from agent.commands.envelope import DECODE_REASONS, DecodeError, decode
from agent.commands.registry import Registry, RegistryError, default_registry
from agent.errors import PermanentError


def _example(command_type: type[envelope.Command]) -> envelope.Command:
    kwargs: dict[str, Any] = {
        s.attribute: {int: 7, bool: True}.get(s.python_type, "x")
        for s in envelope.field_specs(command_type)
    }
    return command_type(**kwargs)


SECRETISH = "CANARYSURNAME"

BAD_BODIES = {
    "not-json": f'{{"type": "patient-sync", "r4PatientId": "{SECRETISH}"',
    "empty body": "",
    "not-an-object": json.dumps([SECRETISH]),
    "missing-type": json.dumps({"r4PatientId": 1, "note": SECRETISH}),
    "type not a string": json.dumps({"type": [SECRETISH]}),
    "unknown-type": json.dumps({"type": "wipe-everything", "x": SECRETISH}),
    "unknown type with data": json.dumps({"type": f"{SECRETISH} lives at 1 CANARYSTREET"}),
    "missing-field": json.dumps({"type": "patient-sync", "patientPatchId": SECRETISH}),
    "id not int-like": json.dumps(
        {"type": "patient-sync", "r4PatientId": SECRETISH, "patientPatchId": "p"}
    ),
    "id negative": json.dumps({"type": "patient-sync", "r4PatientId": -4, "patientPatchId": "p"}),
    "id boolean": json.dumps({"type": "patient-sync", "r4PatientId": True, "patientPatchId": "p"}),
    "id float": json.dumps({"type": "patient-sync", "r4PatientId": 1.5, "patientPatchId": "p"}),
    "patch id empty": json.dumps({"type": "patient-sync", "r4PatientId": 1, "patientPatchId": ""}),
    "patch id object": json.dumps(
        {"type": "patient-sync", "r4PatientId": 1, "patientPatchId": {"n": SECRETISH}}
    ),
    "deeply nested": "[" * 100_000 + "]" * 100_000,
}


@pytest.mark.parametrize("body", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_bad_body_is_one_decode_error_without_body_contents(body: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(body)
    assert isinstance(caught.value, PermanentError)
    assert SECRETISH not in str(caught.value) and "CANARYSTREET" not in str(caught.value)
    assert caught.value.reason in DECODE_REASONS
    assert caught.value.__cause__ is None  # the JSON parser's error (which may quote) is dropped


def test_decode_error_names_the_field_and_the_reason() -> None:
    with pytest.raises(DecodeError, match="r4PatientId") as caught:
        decode(BAD_BODIES["id not int-like"])
    assert caught.value.reason == "bad-field"
    with pytest.raises(DecodeError, match="wipe-everything"):
        decode(BAD_BODIES["unknown-type"])


def test_patient_sync_accepts_an_int_or_a_string_of_digits() -> None:
    assert decode('{"type":"patient-sync","r4PatientId":42,"patientPatchId":"a"}') == (
        envelope.PatientSync(42, "a")
    )
    assert decode('{"type":"patient-sync","r4PatientId":"42","patientPatchId":"a"}') == (
        envelope.PatientSync(42, "a")
    )


def test_unknown_extra_members_are_ignored() -> None:
    assert decode('{"type":"restart","reason":"ops"}') == envelope.Restart()


@pytest.mark.parametrize("command_type", envelope.COMMAND_TYPES, ids=lambda c: c.TYPE)
def test_every_command_round_trips_through_its_wire_body(
    command_type: type[envelope.Command],
) -> None:
    command = _example(command_type)
    assert decode(envelope.encode(command)) == command


def test_schema_accepts_exactly_what_the_decoder_accepts() -> None:
    doc = schema.document()
    jsonschema.Draft202012Validator.check_schema(doc)
    validator = jsonschema.Draft202012Validator(doc)
    good = [
        envelope.encode(c())
        for c in envelope.COMMAND_TYPES
        if not any(s.required for s in envelope.field_specs(c))
    ]
    good += [
        '{"type":"bulk-upload-patients"}',  # bodies from before `full` stay valid
        '{"type":"bulk-upload-patients","full":true}',
        '{"type":"bulk-upload-appointments","full":false}',
        '{"type":"patient-sync","r4PatientId":"42","patientPatchId":"a"}',
        '{"type":"patient-sync","r4PatientId":42,"patientPatchId":"a","extra":1}',
        '{"type":"patient-sync","r4PatientId":42.0,"patientPatchId":"a"}',
    ]
    for body in good:
        decode(body)
        assert validator.is_valid(json.loads(body)), body
    for name, body in BAD_BODIES.items():
        if name in {"not-json", "empty body", "deeply nested"}:
            continue
        assert not validator.is_valid(json.loads(body)), name


def test_full_must_be_a_boolean_in_decoder_and_schema() -> None:
    validator = jsonschema.Draft202012Validator(schema.document())
    for body in ('{"type":"bulk-upload-patients","full":"yes"}',
                 '{"type":"bulk-upload-appointments","full":1}'):  # fmt: skip
        with pytest.raises(DecodeError, match="full"):
            decode(body)
        assert not validator.is_valid(json.loads(body)), body
    assert decode('{"type":"bulk-upload-patients"}') == envelope.BulkUploadPatients(full=False)
    assert decode('{"type":"bulk-upload-patients","full":true}').full is True  # type: ignore[union-attr]


def test_messages_schema_command_prints_every_type() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "agent", "messages", "schema"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    doc = json.loads(out)
    assert set(doc["$defs"]) == {c.TYPE for c in envelope.COMMAND_TYPES}
    assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_duplicate_handler_registration_fails_when_the_registry_is_built() -> None:
    registry = Registry()
    registry.register(envelope.Restart, lambda command, ctx: None)
    with pytest.raises(RegistryError, match="restart"):
        registry.register(envelope.Restart, lambda command, ctx: None)


def test_registry_missing_a_handler_fails_at_start_up() -> None:
    registry = Registry()
    registry.register(envelope.Restart, lambda command, ctx: None)
    with pytest.raises(RegistryError, match="patient-sync"):
        registry.check_complete()


def test_default_registry_has_one_handler_per_message_type() -> None:
    registry = default_registry()
    for command_type in envelope.COMMAND_TYPES:
        assert registry.registration_for(_example(command_type)).command_type is command_type
