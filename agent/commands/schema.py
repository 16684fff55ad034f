"""JSON Schema (draft 2020-12) of every SQS command, generated from the envelope's dataclasses
so the backend team validates against exactly what `envelope.decode` accepts.

    r4agent messages schema            all message types, one document (oneOf by `type`)
    r4agent messages schema --type T   one message type
    r4agent messages list              the type names, one per line
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from agent.commands.envelope import (
    BY_TYPE,
    COMMAND_TYPES,
    MAX_ID,
    MIN_ID,
    Command,
    FieldSpec,
    field_specs,
)

DRAFT = "https://json-schema.org/draft/2020-12/schema"
# Raised when a change could make a message valid under one version invalid under the other;
# the $id carries it, and the committed build/messages/messages.schema.json must match the code
# (tests/messages). The r4agent-messages distribution is built from this module.
SCHEMA_VERSION = 1
SCHEMA_ID = f"https://flynotes.example/r4agent/messages/v{SCHEMA_VERSION}.schema.json"


def _field_schema(spec: FieldSpec) -> dict[str, Any]:
    if spec.python_type is bool:
        return {"description": spec.description, "type": "boolean", "default": False}
    if spec.python_type is int:
        integer: dict[str, Any] = {"type": "integer", "minimum": MIN_ID, "maximum": MAX_ID}
        if spec.int_like:
            # a pattern cannot say 2^31-1: the decoder also refuses digits above it
            digits = {"type": "string", "pattern": "^[0-9]{1,10}$"}
            schema: dict[str, Any] = {"anyOf": [integer, digits]}
        else:
            schema = integer
    else:
        schema = {"type": "string", "minLength": 1}  # and valid Unicode (no lone surrogate)
    return {"description": spec.description, **schema}


def message_schema(command_type: type[Command]) -> dict[str, Any]:
    """The schema of one message type (as a `$defs` entry: no `$schema` of its own)."""
    specs = field_specs(command_type)
    return {
        "title": command_type.TYPE,
        "description": (command_type.__doc__ or "").strip(),
        "type": "object",
        "properties": {
            "type": {"const": command_type.TYPE},
            **{s.wire: _field_schema(s) for s in specs},
        },
        "required": ["type", *(s.wire for s in specs if s.required)],
        "additionalProperties": True,  # the backend may add fields before the agent knows them
    }


def document(only: str | None = None) -> dict[str, Any]:
    """The whole schema: every message type under `$defs`, the root is `oneOf` them."""
    types = [BY_TYPE[only]] if only is not None else list(COMMAND_TYPES)
    return {
        "$schema": DRAFT,
        "$id": SCHEMA_ID,
        "title": "R4 agent SQS command message",
        "description": "The JSON body of one SQS message sent to a practice's R4 agent.",
        "oneOf": [{"$ref": f"#/$defs/{c.TYPE}"} for c in types],
        "$defs": {c.TYPE: message_schema(c) for c in types},
    }


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    actions = parser.add_subparsers(dest="messages_action", metavar="ACTION", required=True)
    schema = actions.add_parser("schema", help="print the JSON Schema of the messages")
    schema.add_argument("--type", choices=sorted(BY_TYPE), help="only this message type")
    actions.add_parser("list", help="print the message type names")


def command(args: argparse.Namespace) -> int:
    if args.messages_action == "list":
        for c in COMMAND_TYPES:
            print(c.TYPE)
        return 0
    json.dump(document(args.type), sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")
    return 0
