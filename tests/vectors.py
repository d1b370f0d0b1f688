"""Reading the conformance files (conformance/README.md) from Python: the files and the
mapping between their message objects and protobuf messages. Used by the loaders in tests/
and by scripts/conformance.py, which writes the files."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from pushwire_protocol.pb import wire_pb2

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "conformance"
FORMAT = "pushwire-conformance/1"


def load(name: str) -> dict[str, Any]:
    """The parsed conformance/<name>.json."""
    found: dict[str, Any] = json.loads((FOLDER / f"{name}.json").read_text(encoding="utf-8"))
    assert found["format"] == FORMAT and found["file"] == name
    return found


def named(vectors: list[dict[str, Any]]) -> list[Any]:
    """pytest parameters: the vectors with their names as ids."""
    return [pytest.param(v, id=v["name"]) for v in vectors]


def message_class(name: str) -> type[Message]:
    """The wire.proto message class called `name` (README: `message`)."""
    found: type[Message] = getattr(wire_pb2, name)
    return found


def to_json(message: Message) -> dict[str, Any]:
    """A message as a conformance `body`: .proto field names, every field, 64-bit integers as
    decimal strings, bytes as lowercase hex, enums by name."""
    out = json_format.MessageToDict(message, preserving_proto_field_name=True,
                                    always_print_fields_with_no_presence=True)
    for field in _bytes_fields(message):
        out[field] = base64.b64decode(out[field]).hex()
    return {f.name: out[f.name] for f in message.DESCRIPTOR.fields}   # field-number order


def from_json(name: str, body: dict[str, Any]) -> Message:
    """The message of type `name` that a conformance `body` describes."""
    message = message_class(name)()
    raw = dict(body)
    for field in _bytes_fields(message):
        if field in raw:
            raw[field] = base64.b64encode(bytes.fromhex(raw[field])).decode()
    return json_format.ParseDict(raw, message)


def _bytes_fields(message: Message) -> list[str]:
    return [f.name for f in message.DESCRIPTOR.fields if f.type == FieldDescriptor.TYPE_BYTES]
