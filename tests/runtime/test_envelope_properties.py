"""Property tests (Hypothesis) of the command envelope: ANY body either decodes to a command
every handler can process without an unexpected exception, or is refused with a reason — the
poison the fuzzing found (ids beyond R4's int range, lone surrogates) included."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agent import contract
from agent.commands import envelope
from agent.commands.envelope import (
    DECODE_REASONS,
    MAX_ID,
    MIN_ID,
    DecodeError,
    PatientSync,
    decode,
)
from agent.records import Patient

REASONS = {
    "not-json",
    "not-an-object",
    "missing-type",
    "unknown-type",
    "missing-field",
    "bad-field",
}

json_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(),  # lone surrogates included: st.text() draws them
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
type_names = st.sampled_from([*envelope.BY_TYPE, "", "PATIENT-SYNC", "x" * 70]) | st.text()
wire_names = st.sampled_from(["r4PatientId", "patientPatchId", "full", "type"]) | st.text(
    max_size=8
)
documents = st.dictionaries(wire_names, json_values, max_size=5).flatmap(
    lambda d: st.builds(lambda t: {**d, "type": t}, type_names | json_values)
)


def _bodies() -> st.SearchStrategy[str]:
    as_json = documents.map(lambda d: json.dumps(d, ensure_ascii=True))  # \ud800 escapes stay
    return st.one_of(st.text(), json_values.map(json.dumps), as_json)


def _processable(command: envelope.Command) -> None:
    """What every handler does with a command's fields, without I/O: ids are R4 ints, texts
    reach a UTF-8 JSON body (patient-sync's POST), and the command encodes back."""
    for spec in envelope.field_specs(type(command)):
        value = getattr(command, spec.attribute)
        if spec.python_type is int:
            assert MIN_ID <= value <= MAX_ID
        elif spec.python_type is bool:  # bulk uploads' optional `full`
            assert isinstance(value, bool)
        else:
            assert isinstance(value, str) and value
            value.encode("utf-8")
    if isinstance(command, PatientSync):
        patient = Patient(command.r4_patient_id, "A", "B", None, None, None)
        body = contract.Wire().patient_sync_body(patient, None, command.patient_patch_id)
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    assert decode(envelope.encode(command)) == command


@settings(max_examples=1500, deadline=None)
@given(_bodies())
def test_any_body_decodes_to_a_processable_command_or_is_refused_with_a_reason(body: str) -> None:
    try:
        command = decode(body)
    except DecodeError as e:
        assert e.reason in DECODE_REASONS
        return
    _processable(command)


@settings(max_examples=500, deadline=None)
@given(st.integers(), st.text(min_size=1))
def test_patient_sync_ids_outside_r4s_int_range_or_unencodable_patch_ids_are_poison(
    code: int, patch: str
) -> None:
    body = json.dumps({"type": "patient-sync", "r4PatientId": code, "patientPatchId": patch})
    valid_code = MIN_ID <= code <= MAX_ID
    try:
        patch.encode("utf-8")
        valid_patch = True
    except UnicodeEncodeError:
        valid_patch = False
    try:
        command = decode(body)
    except DecodeError as e:
        assert e.reason == "bad-field"
        assert not (valid_code and valid_patch)
        assert patch not in str(e) or len(patch) < 3  # never the value itself
        return
    assert valid_code and valid_patch
    _processable(command)


def test_the_fuzzers_poison_is_refused_at_decode() -> None:
    for body in (
        '{"type": "patient-sync", "r4PatientId": 18446744073709551616, "patientPatchId": "p"}',
        '{"type": "patient-sync", "r4PatientId": "2147483648", "patientPatchId": "p"}',
        '{"type": "patient-sync", "r4PatientId": 0, "patientPatchId": "p"}',
        '{"type": "patient-sync", "r4PatientId": 7, "patientPatchId": "p\\ud800"}',
    ):
        try:
            decode(body)
        except DecodeError as e:
            assert e.reason == "bad-field"
        else:
            raise AssertionError(f"accepted: {body}")
    assert decode(
        '{"type": "patient-sync", "r4PatientId": 2147483647, "patientPatchId": "p\\ud83d\\ude00"}'
    ) == PatientSync(2**31 - 1, "p\U0001f600")  # a surrogate PAIR is a real character
