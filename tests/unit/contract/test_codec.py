"""The wire codec: what it accepts, the reasons it gives for what it rejects, and that nothing else escapes."""

from __future__ import annotations

import contextlib
import json
import math
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pipeline.contract import schemas
from pipeline.contract.codec import (
    CodecError,
    _check_event_precisely,
    decode_event,
    decode_map,
    decode_verdict,
    encode,
    encode_canonical,
    event_from_json_obj,
    event_to_json_line,
    verdict_from_json_obj,
)
from pipeline.contract.models import USAGE_EVENT_FIELDS, USAGE_EVENT_REQUIRED, UsageEvent
from tests.strategies import msgpack_values, usage_event_maps, usage_events

MINIMAL: dict[str, Any] = {
    "schema_version": 1,
    "event_id": "evt-1",
    "ts": 1764288000000,
    "account_id": "acct-1",
    "model": "claude-large-2",
    "input_tokens": 1200,
    "output_tokens": 350,
    "status": "ok",
}


def _with(**changes: Any) -> dict[str, Any]:
    ev = dict(MINIMAL)
    for k, v in changes.items():
        if v is ...:
            del ev[k]
        else:
            ev[k] = v
    return ev


def _reason(raw: bytes, **kw: Any) -> str:
    with pytest.raises(CodecError) as info:
        decode_event(raw, **kw)
    assert str(info.value) == info.value.reason
    return info.value.reason


BAD_EVENTS = [
    (_with(input_tokens=-3), "input_tokens: expected int >= 0, got -3"),
    (_with(input_tokens=True), "input_tokens: expected int >= 0, got bool True"),
    (_with(input_tokens=3.0), "input_tokens: expected int >= 0, got float 3.0"),
    (_with(input_tokens="12"), "input_tokens: expected int >= 0, got string '12'"),
    (_with(input_tokens=2**63), "input_tokens: expected int >= 0, got 9223372036854775808"),
    (_with(output_tokens=None), "output_tokens: expected int >= 0, got null"),
    (_with(account_id=...), "missing required field: account_id"),
    (_with(schema_version=...), "missing required field: schema_version"),
    (_with(schema_version=3), "schema_version: expected 1 or 2, got 3"),
    (_with(schema_version=True), "schema_version: expected 1 or 2, got bool True"),
    (_with(org_id="o" * 129), "org_id: expected string of at most 128 chars or null, got a string of 129 chars"),
    (_with(event_id=""), "event_id: expected string of 1..128 chars, got 0 chars"),
    (_with(event_id="x" * 129), "event_id: expected string of 1..128 chars, got 129 chars"),
    (_with(model=7), "model: expected string of 1..128 chars, got int 7"),
    (_with(account_id=["a"]), "account_id: expected string of 1..128 chars, got list"),
    (_with(ts=0), "ts: expected int epoch milliseconds in (0, 2**53), got 0"),
    (_with(ts=2**53), "ts: expected int epoch milliseconds in (0, 2**53), got 9007199254740992"),
    (_with(ts="2025-11-28"), "ts: expected int epoch milliseconds in (0, 2**53), got string '2025-11-28'"),
    (_with(status="bogus"), "status: expected one of error|ok|rate_limited|refused, got 'bogus'"),
    (_with(status=None), "status: expected one of error|ok|rate_limited|refused, got null"),
    (
        _with(capability="poetry"),
        "capability: expected one of agentic|analysis|chat|coding|math|other|reasoning|translation|vision"
        "|writing or null, got 'poetry'",
    ),
    (
        _with(account_tier="platinum"),
        "account_tier: expected one of education|enterprise|free|pro|research|startup|team or null, got 'platinum'",
    ),
    (
        _with(account_tier={"x": 1}),
        "account_tier: expected one of education|enterprise|free|pro|research|startup|team or null, got map",
    ),
    (
        _with(prompt_simhash="8F14E45FCEEA167A"),
        "prompt_simhash: expected 16 lowercase hex chars or null, got '8F14E45FCEEA167A'",
    ),
    (
        _with(prompt_simhash="8f14e45f"),
        "prompt_simhash: expected 16 lowercase hex chars or null, got '8f14e45f'",
    ),
    (_with(reasoning_requested=1), "reasoning_requested: expected bool or null, got int 1"),
    (_with(reasoning_requested="yes"), "reasoning_requested: expected bool or null, got string 'yes'"),
    (_with(n_turns=0), "n_turns: expected int >= 1 or null, got 0"),
    (_with(latency_ms=-1), "latency_ms: expected int >= 0 or null, got -1"),
    (_with(n_tools=1.5), "n_tools: expected int >= 0 or null, got float 1.5"),
    (_with(asn=-5), "asn: expected int in 0..4294967295 or null, got -5"),
    (_with(org_id=19), "org_id: expected string of at most 128 chars or null, got int 19"),
    (_with(country=b"NL"), "country: expected string of at most 128 chars or null, got bytes"),
    (_with(event_id="y" * 200), "event_id: expected string of 1..128 chars, got 200 chars"),
]


@pytest.mark.parametrize(("event", "reason"), BAD_EVENTS, ids=[r for _, r in BAD_EVENTS])
def test_bad_event_gets_a_precise_reason(event: dict[str, Any], reason: str) -> None:
    assert _reason(encode(event)) == reason


@pytest.mark.parametrize(("event", "reason"), BAD_EVENTS[:20], ids=[r for _, r in BAD_EVENTS[:20]])
def test_json_and_parsed_objects_get_the_same_reason(event: dict[str, Any], reason: str) -> None:
    try:
        raw = json.dumps(event).encode()
    except TypeError:
        pytest.skip("not JSON-encodable")
    assert _reason(raw) == reason
    with pytest.raises(CodecError, match="^" + __import__("re").escape(reason) + "$"):
        event_from_json_obj(json.loads(raw))


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (msgpack.packb([1, 2]), "expected a map, got list"),
        (msgpack.packb("hello"), "expected a map, got string"),
        (b"\xc0", "expected a map, got null"),
        (b"[1, 2]", "expected a map, got list"),
        (b"", "not msgpack or JSON: empty message"),
        (b"\xc1", "not msgpack or JSON: invalid msgpack: "),
        (b"\x82\xa1a", "not msgpack or JSON: invalid msgpack: "),
        (b'{"schema_version": 1,', "not msgpack or JSON: invalid JSON: "),
        (b'{"a": NaN}', "not msgpack or JSON: invalid JSON: "),
        (b'{"a": "\xff"}', "not msgpack or JSON: invalid JSON: "),
        (b'{"a": 1} {"b": 2}', "not msgpack or JSON: invalid JSON: JSONDecodeError: Extra data"),
        (b"\x81\xa1a\xa1\xff", "not msgpack or JSON: invalid msgpack: UnicodeDecodeError"),
        (b"\x81\x01\x02", "not msgpack or JSON: invalid msgpack: ValueError"),  # int map key
        (b"[" * 100_000, "message too large"),
        (
            b'{"a":' + b"[" * 30_000 + b"]" * 30_000 + b"}",
            "not msgpack or JSON: invalid JSON: RecursionError",
        ),
        (b"\x91" * 50_000, "not msgpack or JSON: invalid msgpack: "),
    ],
)
def test_undecodable_bytes_get_a_reason(raw: bytes, reason: str) -> None:
    assert _reason(raw).startswith(reason)


def test_size_limit() -> None:
    raw = encode(_with(padding="o" * 70_000))  # an unknown field: ignored, but its bytes count
    assert _reason(raw) == f"message too large: {len(raw)} bytes > limit 65536"
    assert decode_event(raw, max_bytes=len(raw)) == decode_event(encode(MINIMAL))
    assert _reason(encode(MINIMAL), max_bytes=10).startswith("message too large:")


def test_trailing_garbage_is_rejected() -> None:
    raw = encode(MINIMAL)
    assert _reason(raw + b"\x00") == "not msgpack or JSON: 1 bytes of trailing data after the msgpack value"
    assert _reason(raw + raw).endswith("trailing data after the msgpack value")
    assert _reason(json.dumps(MINIMAL).encode() + b"x").startswith("not msgpack or JSON: invalid JSON")


def test_not_bytes_is_a_codec_error() -> None:
    with pytest.raises(CodecError, match="expected bytes, got null"):
        decode_event(None)  # type: ignore[arg-type]
    with pytest.raises(CodecError, match="expected bytes, got string"):
        decode_event("{}")  # type: ignore[arg-type]


def test_unknown_fields_are_dropped_and_missing_optionals_are_none() -> None:
    event = decode_event(encode(_with(gateway_region="eu", nested={"a": [1, 2]}, **{"": 1})))
    assert list(event) == list(USAGE_EVENT_FIELDS)
    assert {k: v for k, v in event.items() if k in USAGE_EVENT_REQUIRED} == MINIMAL
    assert all(v is None for k, v in event.items() if k not in USAGE_EVENT_REQUIRED)


def test_json_object_is_accepted_with_leading_whitespace_and_bytes_like_inputs() -> None:
    text = json.dumps(_with(capability="math", reasoning_requested=True, asn=64500))
    expected = decode_event(encode(_with(capability="math", reasoning_requested=True, asn=64500)))
    assert decode_event(text.encode()) == expected
    assert decode_event(b" \n\t" + text.encode() + b"\n") == expected
    assert decode_event(bytearray(text.encode())) == expected
    assert decode_event(memoryview(encode(expected))) == expected


def test_json_lone_surrogate_is_rejected() -> None:
    raw = json.dumps(_with(org_id="\ud800")).encode()
    assert _reason(raw) == "org_id: invalid unicode (lone surrogate)"
    with pytest.raises(CodecError, match="lone surrogate"):
        event_from_json_obj(json.loads(raw))


def test_bool_is_not_an_int_anywhere() -> None:
    for name in (
        "ts",
        "input_tokens",
        "output_tokens",
        "latency_ms",
        "asn",
        "prompt_chars",
        "n_turns",
        "n_tools",
    ):
        assert _reason(encode(_with(**{name: True}))).endswith("got bool True")


def test_event_to_json_line_keeps_contract_order_and_nulls() -> None:
    event = decode_event(encode(MINIMAL))
    line = event_to_json_line(event)
    assert "\n" not in line and " " not in line
    assert list(json.loads(line)) == list(USAGE_EVENT_FIELDS)
    assert '"org_id":null' in line
    assert event_from_json_obj(json.loads(line)) == event


def test_encode_is_a_plain_msgpack_map() -> None:
    assert msgpack.unpackb(encode(MINIMAL)) == MINIMAL
    assert encode(MINIMAL).startswith(b"\x88")  # fixmap of 8, no framework metadata


def test_encode_canonical_sorts_keys_recursively() -> None:
    a = {"b": 1, "a": {"z": [{"y": 1, "x": 2}], "c": (1, 2)}}
    b = {"a": {"c": [1, 2], "z": [{"x": 2, "y": 1}]}, "b": 1}
    assert encode_canonical(a) == encode_canonical(b)
    assert list(msgpack.unpackb(encode_canonical(a))) == ["a", "b"]
    assert list(msgpack.unpackb(encode_canonical(a))["a"]["z"][0]) == ["x", "y"]
    with pytest.raises(CodecError, match="string keys"):
        encode_canonical({1: "x"})  # type: ignore[dict-item]


def test_decode_map_reads_plain_msgpack_only() -> None:
    assert decode_map(encode({"a": [1, None]})) == {"a": [1, None]}
    with pytest.raises(CodecError, match="got JSON"):
        decode_map(b'{"a": 1}')
    with pytest.raises(CodecError, match="expected a map, got list"):
        decode_map(msgpack.packb([1]))


def test_decode_verdict() -> None:
    v = {
        "schema_version": 1,
        "alert_id": "al-1",
        "account_id": "acct-1",
        "verdict": "false_positive",
        "ts": 5,
    }
    assert decode_verdict(encode(v)) == {**v, "analyst": None}
    assert decode_verdict(json.dumps({**v, "analyst": "jd", "x": 1}).encode())["analyst"] == "jd"
    assert verdict_from_json_obj(v)["verdict"] == "false_positive"
    with pytest.raises(
        CodecError, match=r"^verdict: expected one of false_positive\|true_positive, got 'maybe'$"
    ):
        decode_verdict(encode({**v, "verdict": "maybe"}))
    with pytest.raises(CodecError, match="^missing required field: ts$"):
        decode_verdict(encode({k: x for k, x in v.items() if k != "ts"}))


# --------------------------------------------------------------------------- properties


@settings(max_examples=300)
@given(usage_events())
def test_valid_event_round_trips_and_satisfies_the_schema(event: UsageEvent) -> None:
    assert decode_event(encode(event)) == event
    assert decode_event(event_to_json_line(event).encode()) == event
    schemas.validate("usage_event", event)


@settings(max_examples=200)
@given(usage_event_maps())
def test_producer_maps_decode_to_full_events(raw_event: dict[str, Any]) -> None:
    event = decode_event(encode(raw_event))
    assert list(event) == list(USAGE_EVENT_FIELDS)
    assert event == {k: raw_event.get(k) for k in USAGE_EVENT_FIELDS}
    schemas.validate("usage_event", raw_event)


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_nothing_but_codec_error(raw: bytes) -> None:
    for decode in (decode_event, decode_verdict, decode_map):
        with contextlib.suppress(CodecError):
            decode(raw)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        msgpack_values,
        st.dictionaries(
            st.sampled_from(USAGE_EVENT_FIELDS) | st.text(max_size=10), msgpack_values, max_size=30
        ),
    )
)
def test_arbitrary_msgpack_objects_raise_nothing_but_codec_error(obj: Any) -> None:
    for raw in (msgpack.packb(obj, use_bin_type=True), msgpack.packb(obj, use_bin_type=False)):
        try:
            event = decode_event(raw)
        except CodecError:
            continue
        schemas.validate("usage_event", event)


def _integral_float(v: Any) -> bool:
    return type(v) is float and math.isfinite(v) and v.is_integer()


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(
    usage_events(), st.sampled_from(USAGE_EVENT_FIELDS), msgpack_values | st.text(min_size=120, max_size=140)
)
def test_codec_and_schema_agree_on_one_mutated_field(event: UsageEvent, name: str, value: Any) -> None:
    """Replace one field by anything: the codec accepts exactly when the JSON Schema does, except for
    integral floats such as 3.0, which JSON Schema counts as integers and the codec refuses."""
    assume(not _integral_float(value))
    mutated = {**event, name: value}
    raw = encode(mutated)
    as_received = msgpack.unpackb(raw, raw=False)
    schema_ok = schemas.event_is_valid(as_received)
    try:
        decode_event(raw)
        codec_ok = True
    except CodecError:
        codec_ok = False
    assert codec_ok == schema_ok, schemas.errors("usage_event", {**as_received, "schema_version": 2}, 2)
    try:  # the precise path (which words the reasons) agrees with the fast path
        _check_event_precisely(as_received)
        precise_ok = True
    except CodecError:
        precise_ok = False
    assert precise_ok == codec_ok
