"""services/kit/schema.py: request shapes and bounds, without a server."""

from __future__ import annotations

import json
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from pushwire_protocol.errors import BadRequest
from services.kit.limits import MAX_ID_LEN
from services.kit.schema import (
    DEVICE,
    ID,
    MAX_ID,
    UID,
    Base64,
    Boolean,
    DictOf,
    Digits,
    Integer,
    ListOf,
    Number,
    Schema,
    Text,
    decode_json,
    valid_unicode,
)


def refused(kind: Any, value: Any) -> str:
    with pytest.raises(BadRequest) as caught:
        kind.check("f", value)
    return caught.value.message


def test_text_may_have_to_match_a_pattern() -> None:
    assert Text(pattern="[a-c,]*").check("f", "a,b") == "a,b"
    assert refused(Text(pattern="[a-c]*"), "ab\n") == "f must match [a-c]*"


@pytest.mark.parametrize("value", [True, False, 1.5, float("inf"), float("nan"), "1", None,
                                   [1], -1, -1.0, 2**63, 2.0**63])
def test_an_integer_is_a_json_integer_in_range(value: Any) -> None:
    assert refused(Integer(0, MAX_ID), value).startswith("f must be")


def test_a_whole_float_is_the_integer_it_equals() -> None:
    # JSON has one number type: Python's json.dumps(60.0) writes "60.0" (JSON Schema: integer)
    assert Integer(0, 100).check("f", 60.0) == 60
    assert type(Integer(0, 100).check("f", 60.0)) is int


def test_integer_bounds_are_inclusive() -> None:
    assert Integer(0, 10).check("f", 0) == 0 and Integer(0, 10).check("f", 10) == 10
    assert refused(Integer(0, 10), 11) == "f must be in 0..10"


@pytest.mark.parametrize("value", [True, "1", None, float("nan"), float("inf"), float("-inf"),
                                   -0.5, 10**400, 1e30])
def test_a_number_is_finite_and_in_range(value: Any) -> None:
    assert refused(Number(0, 1e6), value).startswith("f must be")


def test_a_number_may_be_an_integer_and_comes_back_as_float() -> None:
    assert Number(0, 10).check("f", 3) == 3.0 and isinstance(Number(0, 10).check("f", 3), float)
    assert Number(0).check("f", 1e300) == 1e300


@pytest.mark.parametrize("value", ["", "x" * (MAX_ID_LEN + 1), 5, None, ["u"], "\ud800",
                                   "a\udfffb"])
def test_a_uid_is_1_to_128_characters_of_valid_unicode(value: Any) -> None:
    refused(UID, value)


def test_ids_count_characters_not_bytes() -> None:
    assert UID.check("uid", "é" * MAX_ID_LEN) == "é" * MAX_ID_LEN
    assert DEVICE.check("device", "") == "" and DEVICE.check("d", "d" * MAX_ID_LEN)
    assert "lone surrogate" in refused(UID, "\ud800")


def test_text_may_bound_bytes_too() -> None:
    reason = Text(max_bytes=4)
    assert reason.check("f", "ab") == "ab"
    assert refused(reason, "ééé") == "f must be at most 4 bytes in UTF-8"


def test_valid_unicode() -> None:
    assert valid_unicode("ascii") and valid_unicode("日本") and valid_unicode("😀")
    assert not valid_unicode("\ud83d") and not valid_unicode("x\udc80")


@pytest.mark.parametrize("value", [0, "yes", None, 1])
def test_boolean_is_true_or_false_only(value: Any) -> None:
    assert refused(Boolean(), value) == "f must be true or false"


def test_base64_decodes_strictly() -> None:
    assert Base64().check("f", "aGk=") == b"hi"
    for bad in ("aGk", "a*Gk=", "é", 5, "\ud800"):
        refused(Base64(), bad)


def test_a_list_bounds_its_length_and_names_the_bad_item() -> None:
    uids = ListOf(UID, 1, 3)
    assert uids.check("uids", ["a", "b"]) == ["a", "b"]
    assert refused(uids, []) == "f must hold 1-3 items"
    assert refused(uids, ["a"] * 4) == "f must hold 1-3 items"
    assert refused(uids, ["a", 7]) == "f[1] must be a string"
    assert refused(uids, "a") == "f must be a list"


def test_an_object_bounds_its_size_and_names_the_bad_entry() -> None:
    hooks = DictOf(Text(1, 8), Integer(0, 9), 2)
    assert hooks.check("h", {"a": 1, "b": 2}) == {"a": 1, "b": 2}
    assert refused(hooks, {"a": 1, "b": 2, "c": 3}) == "f must hold at most 2 entries"
    assert refused(hooks, {"a": "1"}) == "f.a must be an integer"
    assert refused(hooks, {"": 1}) == "f key must be 1-8 characters"
    assert refused(hooks, ["a"]) == "f must be an object"


@pytest.mark.parametrize("value", ["-1", "0", "+5", " 5", "5 ", "1_000", "١٢", "0x10", "",
                                   "1e3", str(2**63), str(2**64), "9" * 5000, 5])
def test_an_id_in_a_path_is_plain_decimal_in_1_to_2_63(value: Any) -> None:
    assert refused(ID, value) == f"f must be a decimal integer in 1..{MAX_ID}"


def test_digits_accept_plain_decimals() -> None:
    assert ID.check("id", str(MAX_ID)) == MAX_ID and ID.check("id", "007") == 7
    assert Digits(0, 10).check("attempt", "0") == 0


PUSH = Schema({"uids": ListOf(UID, 1, 10), "data": Text(), "data_b64": Base64(),
               "ttl_s": Integer(0, 100)}, defaults={"ttl_s": 0}, one_of=("data", "data_b64"))


def test_schema_fills_defaults_and_checks_every_field() -> None:
    assert PUSH.parse({"uids": ["a"], "data": "x"}) == {"uids": ["a"], "data": "x", "ttl_s": 0}
    assert PUSH.parse({"uids": ["a"], "data_b64": "aGk=", "ttl_s": 5}) == {
        "uids": ["a"], "data_b64": b"hi", "ttl_s": 5}


@pytest.mark.parametrize(("body", "message"), [
    ({"data": "x"}, "uids is required"),
    ({"uids": ["a"]}, "give exactly one of data or data_b64"),
    ({"uids": ["a"], "data": "x", "data_b64": "aGk="}, "give exactly one of data or data_b64"),
    ({"uids": ["a"], "data": "x", "ttl": 5}, "unknown field(s): ttl"),
    ({"uids": ["a"], "data": "x", "ttl_s": True}, "ttl_s must be an integer"),
    ({"uids": ["\ud800"], "data": "x"}, "uids[0] is not valid Unicode (lone surrogate)"),
])
def test_schema_names_the_first_bad_field(body: dict[str, Any], message: str) -> None:
    with pytest.raises(BadRequest) as caught:
        PUSH.parse(body)
    assert caught.value.message == message


def test_unknown_field_names_are_cut_short() -> None:
    with pytest.raises(BadRequest) as caught:
        PUSH.parse({f"x{i}" * 50: 1 for i in range(100)})
    assert len(caught.value.message) <= 200


@pytest.mark.parametrize(("raw", "message"), [
    (b"", "body must be JSON"),
    (b"{not json", "body must be JSON"),
    (b"[1, 2]", "body must be a JSON object"),
    (b'"text"', "body must be a JSON object"),
    (b"\xff\xfe{}", "body must be UTF-8"),
    (b'{"a": "\xc3"}', "body must be UTF-8"),
    (b'{"a": NaN}', "NaN is not a JSON number"),
    (b'{"a": -Infinity}', "-Infinity is not a JSON number"),
    (b'{"a": 1, "a": 2}', "a field is given twice"),
    (b"[" * 10_000 + b"]" * 10_000, "body is nested too deeply"),
    (b'{"a":' * 10_000 + b"1" + b"}" * 10_000, "body is nested too deeply"),
    ("\ufeff{}".encode(), "body must be JSON"),
])
def test_decode_json_takes_one_utf8_json_object(raw: bytes, message: str) -> None:
    with pytest.raises(BadRequest) as caught:
        decode_json(raw)
    assert caught.value.message == message


def test_decode_json_keeps_escapes_for_the_schema_to_judge() -> None:
    body = decode_json(json.dumps({"uids": ["\ud800"], "n": 10**30}).encode())
    assert body == {"uids": ["\ud800"], "n": 10**30}
    assert decode_json(b'{"x": 1e400}')["x"] == float("inf")       # Number refuses it later


# json_schema(): what the OpenAPI documents say. Every value `check` accepts fits the schema,
# and every listed value the schema refuses `check` refuses too (the schema is as tight as
# JSON Schema can say; the looser case is named: a byte bound is only words).
ONE_OF = Schema({"a": Integer(0, 9), "data": Text(), "data_b64": Base64()}, defaults={"a": 1},
                one_of=("data", "data_b64"))


@pytest.mark.parametrize(("kind", "good", "bad"), [
    (Text(1, 3), ["a", "abc", "é"], ["", "abcd", 5, None]),
    (Text(max_bytes=4), ["", "abcd", "éé"], ["abcde", 4]),
    (Integer(0, 9), [0, 9, 9.0], [-1, 10, True, "1", 1.5]),
    (Text(0, 9, pattern="[a-c,]*"), ["", "a,b"], ["d", "ab;", "a" * 10]),
    (Number(0, 1e6), [0, 0.5, 10**6], [-0.1, 1e6 + 1, False, "1"]),
    (Number(), [0, 1e300], [-1, None]),
    (Boolean(), [True, False], [0, "true", None]),
    (Base64(), ["", "AA==", "AAE=", "AAAA"], ["A", "AA=", "AAA", "A===", "****", 5]),
    (ListOf(UID, 1, 2), [["u"], ["u", "v"]], [[], ["u"] * 3, [""], "u", [5]]),
    (ONE_OF, [{"data": ""}, {"data_b64": "AA==", "a": 9}],
     [{}, {"data": "", "data_b64": ""}, {"a": 1}, {"data": "", "b": 1}, {"data": 5}, []]),
])
def test_json_schema_agrees_with_check(kind: Any, good: list[Any], bad: list[Any]) -> None:
    validator = Draft202012Validator(kind.json_schema())
    Draft202012Validator.check_schema(kind.json_schema())
    check = kind.parse if isinstance(kind, Schema) else lambda v: kind.check("f", v)
    for value in good:
        check(value)
        assert validator.is_valid(value), value
    for value in bad:
        assert not validator.is_valid(value), value
        with pytest.raises(BadRequest):
            check(value)


def test_json_schema_states_what_it_cannot_check() -> None:
    assert Text(max_bytes=100).json_schema() == {
        "type": "string", "minLength": 0, "maxLength": 100,
        "description": "at most 100 bytes in UTF-8"}
    assert Integer().json_schema()["maximum"] == MAX_ID
    assert Digits(1, 5).json_schema() == {"type": "integer", "minimum": 1, "maximum": 5}
    assert ONE_OF.json_schema()["properties"]["a"]["default"] == 1
    assert ONE_OF.json_schema()["required"] == []
