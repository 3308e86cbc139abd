"""The wire codec: raw bytes to validated messages and back (plain msgpack maps; JSON accepted on input).

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
from collections.abc import Callable, Mapping
from typing import Any, NoReturn, cast

import msgpack

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
from pipeline.contract.privacy import is_token

#: What the decoders take: a Kafka value as bytes, or any bytes-like buffer.
Buffer = bytes | bytearray | memoryview

DEFAULT_MAX_BYTES = 65536
MAX_OUTPUT_MAP_BYTES = 4 * 1024 * 1024

_MISSING: Any = object()
_WHITESPACE = b" \t\r\n"
_JSON_START = b" \t\r\n{["
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


class CodecError(ValueError):
    """A message that cannot be decoded or breaks its schema; ``reason`` says why, in one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --------------------------------------------------------------------------- error text


def _type_name(v: Any) -> str:
    if v is None:
        return "null"
    t = type(v)
    if t is bool:
        return "bool"
    if t is int:
        return "int"
    if t is float:
        return "float"
    if t is str:
        return "string"
    if t is bytes:
        return "bytes"
    if t is list or t is tuple:
        return "list"
    if t is dict:
        return "map"
    if t is msgpack.ExtType:
        return "msgpack ext"
    if t is msgpack.Timestamp:
        return "msgpack timestamp"
    return t.__name__


def _show(v: Any) -> str:
    """The offending value, short: numbers by repr, a string only when it is a short token (an enum value
    with a typo), any other string by its length (a reason never quotes free text), containers by type."""
    t = type(v)
    if v is None:
        return "null"
    if t is str:
        return repr(v) if is_token(v) else f"a string of {len(v)} chars"
    if t is int:
        text = str(v) if -(10**30) < v < 10**30 else f"an int of {len(str(abs(v)))} digits"
        return text
    if t is float:
        return repr(v)
    if t is bool:
        return f"bool {v}"
    return _type_name(v)


def _got(v: Any, *, expected_type: type) -> str:
    """'-3' when the type was right, 'float 3.0' when it was not."""
    if type(v) is expected_type or v is None or type(v) in (bool, list, dict, bytes) or (
            type(v) is str and not is_token(v)):
        return _show(v)
    return f"{_type_name(v)} {_show(v)}"


def _fail(name: str, expected: str, v: Any, expected_type: type) -> NoReturn:
    if v is _MISSING:
        raise CodecError(f"missing required field: {name}")
    raise CodecError(f"{name}: expected {expected}, got {_got(v, expected_type=expected_type)}")


def _fail_string(name: str, v: Any) -> NoReturn:
    expected = f"string of 1..{ID_MAX_CHARS} chars"
    if type(v) is str:
        raise CodecError(f"{name}: expected {expected}, got {len(v)} chars")
    _fail(name, expected, v, str)


# --------------------------------------------------------------------------- parsing


def _parse(raw: Any, max_bytes: int) -> Any:
    """Bytes to a Python object: JSON if the first non-blank byte is '{' or '[', msgpack otherwise."""
    if type(raw) is bytes:
        size = len(raw)
    elif raw is None:
        raise CodecError("expected bytes, got null (empty message)")
    elif isinstance(raw, bytes | bytearray | memoryview):
        raw = bytes(raw)
        size = len(raw)
    else:
        raise CodecError(f"expected bytes, got {_type_name(raw)}")
    if size > max_bytes:
        raise CodecError(f"message too large: {size} bytes > limit {max_bytes}")
    if size == 0:
        raise CodecError("not msgpack or JSON: empty message")
    first = raw[0]
    if first in _WHITESPACE:
        stripped = raw.lstrip(_WHITESPACE)
        first = stripped[0] if stripped else -1
    if first == 0x7B or first == 0x5B:  # '{' or '[': as msgpack these are fixints 123 and 91, never a map
        try:
            return json.loads(raw, parse_constant=_reject_constant)
        except Exception as e:  # JSONDecodeError, UnicodeDecodeError, RecursionError, ...
            raise CodecError(f"not msgpack or JSON: invalid JSON: {_exc_text(e)}") from None
    try:
        return msgpack.unpackb(
            raw,
            raw=False,
            strict_map_key=True,
            max_str_len=max_bytes,
            max_bin_len=max_bytes,
            max_array_len=max_bytes,
            max_map_len=max_bytes // 2,
            max_ext_len=max_bytes,
        )
    except msgpack.ExtraData as e:
        raise CodecError(
            f"not msgpack or JSON: {len(e.extra)} bytes of trailing data after the msgpack value"
        ) from None
    except Exception as e:  # FormatError, StackError, UnicodeDecodeError, ValueError, ...
        raise CodecError(f"not msgpack or JSON: invalid msgpack: {_exc_text(e)}") from None


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


def _exc_text(e: BaseException) -> str:
    try:
        text = str(e)
    except Exception:
        text = ""
    text = text[:200]
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _guarded(check: Callable[[Any], Any], obj: Any) -> Any:
    try:
        return check(obj)
    except CodecError:
        raise
    except Exception as e:  # a bug in a check must still end in the DLQ, not crash the worker
        raise CodecError(f"invalid message: {_exc_text(e)}") from None


def _check_unicode(msg: Mapping[str, Any]) -> None:
    """Reject lone surrogates, which JSON escapes (\\ud800) can produce and msgpack cannot carry."""
    for name, v in msg.items():
        if type(v) is str and not v.isascii():
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                raise CodecError(f"{name}: invalid unicode (lone surrogate)") from None


# --------------------------------------------------------------------------- UsageEvent


def _check_event(obj: Any, fresh: bool = False) -> UsageEvent:
    """Fast path: one pass over the fields in locals; anything odd goes to the precise (slower) path.

    ``fresh``: ``obj`` was just decoded and belongs to nobody else, so it may be returned as it is when it
    already holds exactly the contract's fields in contract order."""
    if type(obj) is not dict:
        raise CodecError(f"expected a map, got {_type_name(obj)}")
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

    v = get("schema_version", _MISSING)
    if type(v) is not int or v not in EVENT_SCHEMA_VERSIONS:
        _fail("schema_version", " or ".join(map(str, sorted(EVENT_SCHEMA_VERSIONS))), v, int)
    v = get("event_id", _MISSING)
    if type(v) is not str or not 0 < len(v) <= ID_MAX_CHARS:
        _fail_string("event_id", v)
    v = get("ts", _MISSING)
    if type(v) is not int or not 0 < v < TS_MAX_EXCLUSIVE:
        _fail("ts", "int epoch milliseconds in (0, 2**53)", v, int)
    for name in _EVENT_REQUIRED_IDS[1:]:
        v = get(name, _MISSING)
        if type(v) is not str or not 0 < len(v) <= ID_MAX_CHARS:
            _fail_string(name, v)
    for name in _EVENT_REQUIRED_COUNTS:
        v = get(name, _MISSING)
        if type(v) is not int or not 0 <= v <= INT64_MAX:
            _fail(name, "int >= 0", v, int)
    v = get("status", _MISSING)
    if type(v) is not str or v not in STATUSES:
        _fail("status", f"one of {_STATUS_TEXT}", v, str)

    for name in _EVENT_OPTIONAL_STRINGS:
        v = get(name)
        if v is not None and (type(v) is not str or len(v) > STRING_MAX_CHARS):
            _fail(name, _OPTIONAL_STRING, v, str)
    for name in _EVENT_OPTIONAL_COUNTS:
        v = get(name)
        if v is not None and (type(v) is not int or not 0 <= v <= INT64_MAX):
            _fail(name, "int >= 0 or null", v, int)
    v = get("n_turns")
    if v is not None and (type(v) is not int or not 1 <= v <= INT64_MAX):
        _fail("n_turns", "int >= 1 or null", v, int)
    v = get("asn")
    if v is not None and (type(v) is not int or not 0 <= v <= ASN_MAX):
        _fail("asn", "int in 0..4294967295 or null", v, int)
    v = get("account_tier")
    if v is not None and (type(v) is not str or v not in TIERS):
        _fail("account_tier", f"one of {_TIER_TEXT} or null", v, str)
    v = get("capability")
    if v is not None and (type(v) is not str or v not in CAPABILITIES):
        _fail("capability", f"one of {_CAPABILITY_TEXT} or null", v, str)
    v = get("prompt_simhash")
    if v is not None and (type(v) is not str or len(v) != 16 or v.strip(_HEX_DIGITS)):
        _fail("prompt_simhash", "16 lowercase hex chars or null", v, str)
    v = get("reasoning_requested")
    if v is not None and type(v) is not bool:
        _fail("reasoning_requested", "bool or null", v, bool)

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
    pipeline.contract.codec.CodecError: missing required field: event_id
    """
    obj = _parse(raw, max_bytes)
    try:
        event = _check_event(obj, fresh=True)
    except CodecError:
        raise
    except Exception as e:  # a bug in a check must still end in the DLQ, not crash the worker
        raise CodecError(f"invalid message: {_exc_text(e)}") from None
    if not _is_msgpack(raw):
        _check_unicode(event)
    return event


def _is_msgpack(raw: Any) -> bool:
    # msgpack decoding with raw=False already rejects invalid UTF-8, surrogates included.
    return bool(raw) and raw[0] not in _JSON_START


def event_from_json_obj(obj: Any) -> UsageEvent:
    """Validate an already parsed object (e.g. one line of a JSONL file); same rules as :func:`decode_event`."""
    event = cast(UsageEvent, _guarded(_check_event, obj))
    _check_unicode(event)
    return event


def event_from_msgpack_obj(obj: Any) -> UsageEvent:
    """Validate an object just decoded from msgpack and owned by the caller (e.g. one record of a msgpack
    file): the same rules as :func:`decode_event`, which means that the object itself may be returned, and
    that its strings need no unicode check (msgpack decoding already rejected invalid UTF-8)."""
    return cast(UsageEvent, _guarded(lambda o: _check_event(o, fresh=True), obj))


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
        raise CodecError(f"expected a map, got {_type_name(obj)}")
    get = obj.get
    v = get("schema_version", _MISSING)
    if type(v) is not int or v != SCHEMA_VERSION:
        _fail("schema_version", str(SCHEMA_VERSION), v, int)
    for name in ("alert_id", "account_id"):
        v = get(name, _MISSING)
        if type(v) is not str or not 0 < len(v) <= ID_MAX_CHARS:
            _fail_string(name, v)
    v = get("verdict", _MISSING)
    if type(v) is not str or v not in VERDICTS:
        _fail("verdict", f"one of {_VERDICT_TEXT}", v, str)
    v = get("ts", _MISSING)
    if type(v) is not int or not 0 < v < TS_MAX_EXCLUSIVE:
        _fail("ts", "int epoch milliseconds in (0, 2**53)", v, int)
    v = get("analyst")
    if v is not None and (type(v) is not str or len(v) > STRING_MAX_CHARS):
        _fail("analyst", _OPTIONAL_STRING, v, str)
    return cast(Verdict, dict(zip(VERDICT_FIELDS, map(get, VERDICT_FIELDS), strict=True)))


def decode_verdict(raw: Buffer, max_bytes: int = DEFAULT_MAX_BYTES) -> Verdict:
    """Decode and validate one Verdict v1 (msgpack map or UTF-8 JSON object); raises only :class:`CodecError`."""
    obj = _parse(raw, max_bytes)
    verdict = cast(Verdict, _guarded(_check_verdict, obj))
    if not _is_msgpack(raw):
        _check_unicode(verdict)
    return verdict


def verdict_from_json_obj(obj: Any) -> Verdict:
    """Validate an already parsed Verdict; same rules as :func:`decode_verdict`."""
    verdict = cast(Verdict, _guarded(_check_verdict, obj))
    _check_unicode(verdict)
    return verdict


# --------------------------------------------------------------------------- encoding


def encode(obj: Mapping[str, Any]) -> bytes:
    """A plain msgpack map, nothing added (strings as str, bytes as bin)."""
    data = obj if type(obj) is dict else dict(obj)
    return cast(bytes, msgpack.packb(data, use_bin_type=True))


def _canonical(v: Any) -> Any:
    if isinstance(v, Mapping):
        for k in v:
            if type(k) is not str:
                raise CodecError(f"canonical encoding needs string keys, got {_type_name(k)}")
        return {k: _canonical(v[k]) for k in sorted(v)}
    if isinstance(v, list | tuple):
        return [_canonical(x) for x in v]
    return v


def encode_canonical(obj: Mapping[str, Any]) -> bytes:
    """Canonical msgpack for signatures: map keys sorted (by code point, i.e. by UTF-8 bytes) at every level,
    tuples as arrays, floats as float64, ints in their smallest form."""
    return cast(bytes, msgpack.packb(_canonical(obj), use_bin_type=True))


def decode_map(raw: Buffer, max_bytes: int = MAX_OUTPUT_MAP_BYTES) -> dict[str, Any]:
    """Read one plain msgpack map (an output message, e.g. in tests); no schema check."""
    if isinstance(raw, bytes | bytearray | memoryview) and raw and raw[0] == 0x7B:
        raise CodecError("expected a msgpack map, got JSON")
    obj = _parse(raw, max_bytes)
    if type(obj) is not dict:
        raise CodecError(f"expected a map, got {_type_name(obj)}")
    return cast(dict[str, Any], obj)
