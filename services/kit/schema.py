"""Request schemas: the shape and bounds of what HTTP callers send, checked in one place.

    raw body --decode_json--> JSON object --Schema.parse--> {field: checked value}
    path / query text ------> Digits / Text .check -------> int / str

A `Schema` names every field of an object with its type; `parse` fills in defaults and raises
BadRequest naming the first bad field (an unknown field, a missing one, a wrong type, a value
out of range, text that is not valid Unicode). Types are small frozen dataclasses with
`check(name, value) -> value`; they never trust Python's leniency: `true` is not an integer,
NaN is not a number, "١٢" is not a decimal id, a lone surrogate is not text. Pure: no I/O, so
services/kit/http.py and the services' APIs share it and tests/kit/test_schema.py needs no
network. The limits are listed in docs/api.md §3.2.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pushwire_protocol.errors import BadRequest
from services.kit.limits import MAX_ID_LEN

MAX_ID = 2**63 - 1              # message and broadcast ids: positive signed 64-bit
MAX_TTL_S = 2**31 - 1           # any ttl_s in a request (the app's TTL caps it further)
# Standard base64 with padding, what Base64 accepts (b64decode with validate=True).
BASE64_PATTERN = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"


class Type(Protocol):
    def check(self, name: str, value: Any) -> Any:
        """`value` if it fits, converted where the type says so; else BadRequest."""

    def json_schema(self) -> dict[str, Any]:
        """The JSON Schema (2020-12, as OpenAPI 3.1 uses it) of the values `check` accepts."""


def valid_unicode(text: str) -> bool:
    """False for text holding a lone surrogate (JSON's "\\ud800" decodes to one)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class Text:
    """A string of `min_len`..`max_len` characters (and at most `max_bytes` in UTF-8, all of
    it matching `pattern` when one is given)."""

    min_len: int = 0
    max_len: int = 1 << 30
    max_bytes: int = 0                  # 0: no byte bound
    pattern: str = ""                   # a regular expression the whole text must match

    def check(self, name: str, value: Any) -> str:
        if not isinstance(value, str):
            raise BadRequest(f"{name} must be a string")
        if not valid_unicode(value):
            raise BadRequest(f"{name} is not valid Unicode (lone surrogate)")
        if not self.min_len <= len(value) <= self.max_len:
            raise BadRequest(f"{name} must be {self.min_len}-{self.max_len} characters")
        if self.max_bytes and len(value.encode()) > self.max_bytes:
            raise BadRequest(f"{name} must be at most {self.max_bytes} bytes in UTF-8")
        if self.pattern and not re.fullmatch(self.pattern, value):
            raise BadRequest(f"{name} must match {self.pattern}")
        return value

    def json_schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "string", "minLength": self.min_len}
        longest = min(self.max_len, self.max_bytes or self.max_len)    # a character: >= 1 byte
        if longest < 1 << 30:
            out["maxLength"] = longest
        if self.max_bytes:          # JSON Schema has no byte bound: said in words
            out["description"] = f"at most {self.max_bytes} bytes in UTF-8"
        if self.pattern:            # JSON Schema's pattern searches: anchor it
            out["pattern"] = f"^(?:{self.pattern})$"
        return out


UID = Text(1, MAX_ID_LEN)               # the same bound as the room's AUTH and saver's columns
DEVICE = Text(0, MAX_ID_LEN)            # empty: no device / every device


@dataclass(frozen=True, slots=True)
class Integer:
    """A JSON integer in [lo, hi]: not a boolean; 60.0 is 60, as JSON (and JSON Schema) has
    one number type and encoders write whole floats so, but 60.5 is no integer."""

    lo: int = 0
    hi: int = MAX_ID

    def check(self, name: str, value: Any) -> int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadRequest(f"{name} must be an integer")
        if not self.lo <= value <= self.hi:
            raise BadRequest(f"{name} must be in {self.lo}..{self.hi}")
        return value

    def json_schema(self) -> dict[str, Any]:
        return {"type": "integer", "minimum": self.lo, "maximum": self.hi}


@dataclass(frozen=True, slots=True)
class Number:
    """A finite JSON number (integer or not; not a boolean) in [lo, hi]."""

    lo: float = 0.0
    hi: float = math.inf

    def check(self, name: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BadRequest(f"{name} must be a number")
        # NaN compares false; inf and a 400-digit int (float() would overflow) are too big.
        if not (self.lo <= value <= self.hi and abs(value) <= 2.0**1000):
            raise BadRequest(f"{name} must be in {self.lo:g}..{self.hi:g}")
        return float(value)

    def json_schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "number", "minimum": self.lo}
        return out | {"maximum": self.hi} if math.isfinite(self.hi) else out


@dataclass(frozen=True, slots=True)
class OneOf:
    """One of a few strings (a format, a mode)."""

    values: tuple[str, ...]

    def check(self, name: str, value: Any) -> str:
        if not isinstance(value, str) or value not in self.values:
            raise BadRequest(f"{name} must be one of {', '.join(self.values)}")
        return value

    def json_schema(self) -> dict[str, Any]:
        return {"type": "string", "enum": list(self.values)}


@dataclass(frozen=True, slots=True)
class Boolean:
    def check(self, name: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise BadRequest(f"{name} must be true or false")
        return value

    def json_schema(self) -> dict[str, Any]:
        return {"type": "boolean"}


@dataclass(frozen=True, slots=True)
class Base64:
    """Standard base64 text (with padding) -> the bytes it encodes."""

    def check(self, name: str, value: Any) -> bytes:
        text = Text().check(name, value)
        try:
            return base64.b64decode(text.encode("ascii"), validate=True)
        except (binascii.Error, ValueError) as exc:      # ValueError: not ASCII
            raise BadRequest(f"{name} is not valid base64") from exc

    def json_schema(self) -> dict[str, Any]:
        return {"type": "string", "contentEncoding": "base64", "pattern": BASE64_PATTERN}


@dataclass(frozen=True, slots=True)
class ListOf:
    """A JSON array of `min_len`..`max_len` items, each of type `item`."""

    item: Type
    min_len: int = 0
    max_len: int = 1000

    def check(self, name: str, value: Any) -> list[Any]:
        if not isinstance(value, list):
            raise BadRequest(f"{name} must be a list")
        if not self.min_len <= len(value) <= self.max_len:
            raise BadRequest(f"{name} must hold {self.min_len}-{self.max_len} items")
        return [self.item.check(f"{name}[{i}]", v) for i, v in enumerate(value)]

    def json_schema(self) -> dict[str, Any]:
        return {"type": "array", "items": self.item.json_schema(), "minItems": self.min_len,
                "maxItems": self.max_len}


@dataclass(frozen=True, slots=True)
class DictOf:
    """A JSON object of at most `max_len` entries, keys of type `key`, values of `value`."""

    key: Type
    value: Type
    max_len: int = 1000

    def check(self, name: str, value: Any) -> dict[Any, Any]:
        if not isinstance(value, dict):
            raise BadRequest(f"{name} must be an object")
        if len(value) > self.max_len:
            raise BadRequest(f"{name} must hold at most {self.max_len} entries")
        return {self.key.check(f"{name} key", k): self.value.check(f"{name}.{k}"[:100], v)
                for k, v in value.items()}

    def json_schema(self) -> dict[str, Any]:
        return {"type": "object", "propertyNames": self.key.json_schema(),
                "additionalProperties": self.value.json_schema(), "maxProperties": self.max_len}


@dataclass(frozen=True, slots=True)
class Digits:
    """Decimal text from a path or a query ("42"; no sign, no spaces, ASCII digits only) ->
    an int in [lo, hi]."""

    lo: int = 0
    hi: int = MAX_ID

    def check(self, name: str, value: Any) -> int:
        width = len(str(self.hi))
        if not (isinstance(value, str) and value.isascii() and value.isdigit()
                and len(value) <= width and self.lo <= int(value) <= self.hi):
            raise BadRequest(f"{name} must be a decimal integer in {self.lo}..{self.hi}")
        return int(value)

    def json_schema(self) -> dict[str, Any]:
        # A path or query parameter: OpenAPI serialises an integer as its decimal text.
        return {"type": "integer", "minimum": self.lo, "maximum": self.hi}


ID = Digits(1, MAX_ID)                  # a message or broadcast id in a path


@dataclass(frozen=True)
class Schema:
    """A JSON object's fields. Fields with a default are optional; of the fields in `one_of`
    exactly one must be given; every other field is required. Unknown fields are refused."""

    fields: Mapping[str, Type]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    one_of: tuple[str, ...] = ()

    def parse(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """The checked fields, defaults filled in; BadRequest for the first bad one."""
        unknown = sorted(k for k in obj if k not in self.fields)
        if unknown:
            raise BadRequest(f"unknown field(s): {', '.join(unknown)}"[:200])
        given = [k for k in self.one_of if k in obj]
        if self.one_of and len(given) != 1:
            raise BadRequest(f"give exactly one of {' or '.join(self.one_of)}")
        missing = [k for k in self.fields
                   if k not in obj and k not in self.defaults and k not in self.one_of]
        if missing:
            raise BadRequest(f"{missing[0]} is required")
        out = dict(self.defaults)
        out.update((k, t.check(k, obj[k])) for k, t in self.fields.items() if k in obj)
        return out

    def json_schema(self) -> dict[str, Any]:
        """The object `parse` accepts; a field's default is its JSON Schema `default`."""
        out: dict[str, Any] = {
            "type": "object", "additionalProperties": False,
            "properties": {k: t.json_schema() | ({"default": self.defaults[k]}
                                                 if k in self.defaults else {})
                           for k, t in self.fields.items()},
            "required": [k for k in self.fields
                         if k not in self.defaults and k not in self.one_of]}
        if self.one_of:
            out["oneOf"] = [{"required": [k]} for k in self.one_of]
        return out


def decode_json(raw: bytes) -> dict[str, Any]:
    """A request body -> its JSON object. BadRequest for anything but one UTF-8 JSON object:
    invalid UTF-8, NaN/Infinity, a field given twice, nesting too deep for the parser."""
    try:
        body = _DECODER.decode(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise BadRequest("body must be UTF-8") from exc
    except RecursionError as exc:
        raise BadRequest("body is nested too deeply") from exc
    except ValueError as exc:              # json.JSONDecodeError
        raise BadRequest("body must be JSON") from exc
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    return body


def _no_constant(name: str) -> Any:
    raise BadRequest(f"{name} is not a JSON number")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise BadRequest("a field is given twice")
    return obj


# One decoder for every body: json.loads with hooks builds a new one (and its scanner) per call.
_DECODER = json.JSONDecoder(parse_constant=_no_constant, object_pairs_hook=_no_duplicates)
