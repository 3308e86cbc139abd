"""The wire codec: raw bytes to validated messages and back (plain msgpack maps; JSON accepted on input).

This module checks the contract's messages (UsageEvent, Verdict); :mod:`pipeline.contract.wire` holds what
they stand on (parsing, encoding, :class:`CodecError` and its reason text) and everything public there is
re-exported here, so ``pipeline.contract.codec`` stays the one import for callers.

This is the per-event hot path, so validation is written by hand instead of going through jsonschema; the
rules are the ones in ``schemas/*.v1.json`` and ``tests/unit/contract/test_schemas.py`` checks that both agree on
the examples. One deliberate difference: JSON Schema counts ``3.0`` as an integer, the codec does not.

Every string has a bounded length (``STRING_MAX_CHARS``), so that no input can make a state record or an
output grow without bound (a link group of 512 members with megabyte org ids could not be written).
UsageEvent v2 (``schemas/usage_event.v2.json``) states the bounds; v1 events are read with the same
bounds, as the contract's "oversized" events that go to the DLQ. The same holds for a verdict's analyst.

Whatever the input, decoding raises nothing but :class:`CodecError`, whose ``reason`` is a readable sentence
fit for a dead-letter header.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, cast

from pipeline.contract.models import (
    ASN_MAX,
    CAPABILITIES,
    EVENT_SCHEMA_VERSIONS,
    ID_MAX_CHARS,
    INT64_MAX,
    SCHEMA_VERSION,
    STATUSES,
    STRING_MAX_CHARS,
    TIERS,
    TS_MAX_EXCLUSIVE,
    USAGE_EVENT_FIELDS,
    VERDICT_FIELDS,
    VERDICTS,
    UsageEvent,
    Verdict,
)
from pipeline.contract.wire import (
    DEFAULT_MAX_BYTES,
    MAX_OUTPUT_MAP_BYTES,
    MISSING,
    Buffer,
    CodecError,
    check_unicode,
    decode_map,
    encode,
    encode_canonical,
    exc_text,
    fail,
    fail_string,
    guarded,
    is_msgpack,
    parse,
    type_name,
)

__all__ = [
    "DEFAULT_MAX_BYTES",
    "MAX_OUTPUT_MAP_BYTES",
    "Buffer",
    "CodecError",
    "decode_event",
    "decode_map",
    "decode_verdict",
    "encode",
    "encode_canonical",
    "event_from_json_obj",
    "event_from_msgpack_obj",
    "event_to_json_line",
    "verdict_from_json_obj",
]

_HEX_DIGITS = "0123456789abcdef"
_N_EVENT_FIELDS = len(USAGE_EVENT_FIELDS)
_STATUS_TEXT = "|".join(sorted(STATUSES))
_TIER_TEXT = "|".join(sorted(TIERS))
_CAPABILITY_TEXT = "|".join(sorted(CAPABILITIES))
_VERDICT_TEXT = "|".join(sorted(VERDICTS))
_OPTIONAL_STRING = f"string of at most {STRING_MAX_CHARS} chars or null"

# Field groups of UsageEvent, checked in loops (names in contract order within each group).
_EVENT_REQUIRED_IDS = ("event_id", "account_id", "model")
_EVENT_REQUIRED_COUNTS = ("input_tokens", "output_tokens")
_EVENT_OPTIONAL_STRINGS = (
    "org_id",
    "api_key_id",
    "endpoint",
    "ip_prefix",
    "client_fingerprint",
    "payment_fingerprint",
    "country",
    "language",
)
_EVENT_OPTIONAL_COUNTS = ("latency_ms", "prompt_chars", "n_tools")


# --------------------------------------------------------------------------- UsageEvent


def _check_event(obj: Any, fresh: bool = False) -> UsageEvent:
    """Fast path: one pass over the fields in locals; anything odd goes to the precise (slower) path.

    ``fresh``: ``obj`` was just decoded and belongs to nobody else, so it may be returned as it is when it
    already holds exactly the contract's fields in contract order."""
    if type(obj) is not dict:
        raise CodecError(f"expected a map, got {type_name(obj)}")
    values = tuple(map(obj.get, USAGE_EVENT_FIELDS))
    (sv, eid, ts, acct, model, inp, out, status,
     org, key, endpoint, lat, ip, asn, cfp, pfp, tier, country, sh, chars, turns, tools, rr, cap, lang) = values  # fmt: skip
    if (
        type(sv) is int and sv in EVENT_SCHEMA_VERSIONS
        and type(eid) is str and 0 < len(eid) <= ID_MAX_CHARS
        and type(ts) is int and 0 < ts < TS_MAX_EXCLUSIVE
        and type(acct) is str and 0 < len(acct) <= ID_MAX_CHARS
        and type(model) is str and 0 < len(model) <= ID_MAX_CHARS
        and type(inp) is int and 0 <= inp <= INT64_MAX
        and type(out) is int and 0 <= out <= INT64_MAX
        and type(status) is str and status in STATUSES
        and (org is None or (type(org) is str and len(org) <= STRING_MAX_CHARS))
        and (key is None or (type(key) is str and len(key) <= STRING_MAX_CHARS))
        and (endpoint is None or (type(endpoint) is str and len(endpoint) <= STRING_MAX_CHARS))
        and (lat is None or (type(lat) is int and 0 <= lat <= INT64_MAX))
        and (ip is None or (type(ip) is str and len(ip) <= STRING_MAX_CHARS))
        and (asn is None or (type(asn) is int and 0 <= asn <= ASN_MAX))
        and (cfp is None or (type(cfp) is str and len(cfp) <= STRING_MAX_CHARS))
        and (pfp is None or (type(pfp) is str and len(pfp) <= STRING_MAX_CHARS))
        and (tier is None or (type(tier) is str and tier in TIERS))
        and (country is None or (type(country) is str and len(country) <= STRING_MAX_CHARS))
        and (sh is None or (type(sh) is str and len(sh) == 16 and not sh.strip(_HEX_DIGITS)))
        and (chars is None or (type(chars) is int and 0 <= chars <= INT64_MAX))
        and (turns is None or (type(turns) is int and 1 <= turns <= INT64_MAX))
        and (tools is None or (type(tools) is int and 0 <= tools <= INT64_MAX))
        and (rr is None or type(rr) is bool)
        and (cap is None or (type(cap) is str and cap in CAPABILITIES))
        and (lang is None or (type(lang) is str and len(lang) <= STRING_MAX_CHARS))
    ):  # fmt: skip
        if fresh and len(obj) == _N_EVENT_FIELDS and tuple(obj) == USAGE_EVENT_FIELDS:
            return cast(UsageEvent, obj)
        return cast(UsageEvent, dict(zip(USAGE_EVENT_FIELDS, values, strict=False)))
    return _check_event_precisely(obj)


def _check_event_precisely(obj: dict[str, Any]) -> UsageEvent:
    """Field by field in contract order, raising on the first problem with a reason naming it."""
    get = obj.get

    v = get("schema_version", MISSING)
    if type(v) is not int or v not in EVENT_SCHEMA_VERSIONS:
        fail("schema_version", " or ".join(map(str, sorted(EVENT_SCHEMA_VERSIONS))), v, int)
    v = get("event_id", MISSING)
    if type(v) is not str or not 0 < len(v) <= ID_MAX_CHARS:
        fail_string("event_id", v)
    v = get("ts", MISSING)
    if type(v) is not int or not 0 < v < TS_MAX_EXCLUSIVE:
        fail("ts", "int epoch milliseconds in (0, 2**53)", v, int)
    for name in _EVENT_REQUIRED_IDS[1:]:
        v = get(name, MISSING)
        if type(v) is not str or not 0 < len(v) <= ID_MAX_CHARS:
            fail_string(name, v)
    for name in _EVENT_REQUIRED_COUNTS:
        v = get(name, MISSING)
        if type(v) is not int or not 0 <= v <= INT64_MAX:
            fail(name, "int >= 0", v, int)
    v = get("status", MISSING)
    if type(v) is not str or v not in STATUSES:
        fail("status", f"one of {_STATUS_TEXT}", v, str)

    for name in _EVENT_OPTIONAL_STRINGS:
        v = get(name)
        if v is not None and (type(v) is not str or len(v) > STRING_MAX_CHARS):
            fail(name, _OPTIONAL_STRING, v, str)
    for name in _EVENT_OPTIONAL_COUNTS:
        v = get(name)
        if v is not None and (type(v) is not int or not 0 <= v <= INT64_MAX):
            fail(name, "int >= 0 or null", v, int)
    v = get("n_turns")
    if v is not None and (type(v) is not int or not 1 <= v <= INT64_MAX):
        fail("n_turns", "int >= 1 or null", v, int)
    v = get("asn")
    if v is not None and (type(v) is not int or not 0 <= v <= ASN_MAX):
        fail("asn", "int in 0..4294967295 or null", v, int)
    v = get("account_tier")
    if v is not None and (type(v) is not str or v not in TIERS):
        fail("account_tier", f"one of {_TIER_TEXT} or null", v, str)
    v = get("capability")
    if v is not None and (type(v) is not str or v not in CAPABILITIES):
        fail("capability", f"one of {_CAPABILITY_TEXT} or null", v, str)
    v = get("prompt_simhash")
    if v is not None and (type(v) is not str or len(v) != 16 or v.strip(_HEX_DIGITS)):
        fail("prompt_simhash", "16 lowercase hex chars or null", v, str)
    v = get("reasoning_requested")
    if v is not None and type(v) is not bool:
        fail("reasoning_requested", "bool or null", v, bool)

    return cast(UsageEvent, dict(zip(USAGE_EVENT_FIELDS, map(get, USAGE_EVENT_FIELDS), strict=True)))


def decode_event(raw: Buffer, max_bytes: int = DEFAULT_MAX_BYTES) -> UsageEvent:
    """Decode and validate one UsageEvent v1 from a msgpack map or a UTF-8 JSON object.

    Returns a new dict with exactly the contract's fields, in contract order: unknown fields are dropped,
    missing optional ones are ``None``. Raises :class:`CodecError` (and nothing else) on any bad input.

    >>> decode_event(b'{"schema_version": 1, "event_id": "e1", "ts": 1700000000000, "account_id": "a1",'
    ...              b' "model": "m", "input_tokens": 5, "output_tokens": 7, "status": "ok"}')["status"]
    'ok'
    >>> decode_event(encode({"schema_version": 1}))
    Traceback (most recent call last):
    ...
    pipeline.contract.wire.CodecError: missing required field: event_id
    """
    obj = parse(raw, max_bytes)
    try:
        event = _check_event(obj, fresh=True)
    except CodecError:
        raise
    except Exception as e:  # a bug in a check must still end in the DLQ, not crash the worker
        raise CodecError(f"invalid message: {exc_text(e)}") from None
    if not is_msgpack(raw):
        check_unicode(event)
    return event


def event_from_json_obj(obj: Any) -> UsageEvent:
    """Validate an already parsed object (e.g. one line of a JSONL file); same rules as :func:`decode_event`."""
    event = cast(UsageEvent, guarded(_check_event, obj))
    check_unicode(event)
    return event


def event_from_msgpack_obj(obj: Any) -> UsageEvent:
    """Validate an object just decoded from msgpack and owned by the caller (e.g. one record of a msgpack
    file): the same rules as :func:`decode_event`, which means that the object itself may be returned, and
    that its strings need no unicode check (msgpack decoding already rejected invalid UTF-8)."""
    return cast(UsageEvent, guarded(lambda o: _check_event(o, fresh=True), obj))


def event_to_json_line(ev: Mapping[str, Any]) -> str:
    """One compact JSON line (no newline), keys in contract order, nulls kept."""
    return json.dumps(
        {name: ev.get(name) for name in USAGE_EVENT_FIELDS},
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )


# --------------------------------------------------------------------------- Verdict


def _check_verdict(obj: Any) -> Verdict:
    if type(obj) is not dict:
        raise CodecError(f"expected a map, got {type_name(obj)}")
    get = obj.get
    v = get("schema_version", MISSING)
    if type(v) is not int or v != SCHEMA_VERSION:
        fail("schema_version", str(SCHEMA_VERSION), v, int)
    for name in ("alert_id", "account_id"):
        v = get(name, MISSING)
        if type(v) is not str or not 0 < len(v) <= ID_MAX_CHARS:
            fail_string(name, v)
    v = get("verdict", MISSING)
    if type(v) is not str or v not in VERDICTS:
        fail("verdict", f"one of {_VERDICT_TEXT}", v, str)
    v = get("ts", MISSING)
    if type(v) is not int or not 0 < v < TS_MAX_EXCLUSIVE:
        fail("ts", "int epoch milliseconds in (0, 2**53)", v, int)
    v = get("analyst")
    if v is not None and (type(v) is not str or len(v) > STRING_MAX_CHARS):
        fail("analyst", _OPTIONAL_STRING, v, str)
    return cast(Verdict, dict(zip(VERDICT_FIELDS, map(get, VERDICT_FIELDS), strict=True)))


def decode_verdict(raw: Buffer, max_bytes: int = DEFAULT_MAX_BYTES) -> Verdict:
    """Decode and validate one Verdict v1 (msgpack map or UTF-8 JSON object); raises only :class:`CodecError`."""
    obj = parse(raw, max_bytes)
    verdict = cast(Verdict, guarded(_check_verdict, obj))
    if not is_msgpack(raw):
        check_unicode(verdict)
    return verdict


def verdict_from_json_obj(obj: Any) -> Verdict:
    """Validate an already parsed Verdict; same rules as :func:`decode_verdict`."""
    verdict = cast(Verdict, guarded(_check_verdict, obj))
    check_unicode(verdict)
    return verdict
