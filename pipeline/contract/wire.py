"""The wire level of the codec: bytes to a Python object and back, and the error every decoder raises.

:mod:`pipeline.contract.codec` checks the contract's messages on top of this; both are the per-event hot
path. Parsing takes msgpack maps and, when the first non-blank byte is ``{`` or ``[``, UTF-8 JSON. Whatever
the input, it raises nothing but :class:`CodecError`, whose ``reason`` is a readable sentence fit for a
dead-letter header, and a reason never quotes free text from the message.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, NoReturn, cast

import msgpack

from pipeline.contract.models import ID_MAX_CHARS
from pipeline.contract.privacy import is_token

#: What the decoders take: a Kafka value as bytes, or any bytes-like buffer.
Buffer = bytes | bytearray | memoryview

DEFAULT_MAX_BYTES = 65536
MAX_OUTPUT_MAP_BYTES = 4 * 1024 * 1024

#: The default of ``dict.get`` for a required field, told apart from an explicit null.
MISSING: Any = object()
_WHITESPACE = b" \t\r\n"
_JSON_START = b" \t\r\n{["


class CodecError(ValueError):
    """A message that cannot be decoded or breaks its schema; ``reason`` says why, in one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --------------------------------------------------------------------------- error text


def type_name(v: Any) -> str:
    """The wire type of ``v`` as a reason names it (``null``, ``int``, ``map``, ``msgpack ext``, ...)."""
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
    return type_name(v)


def _got(v: Any, *, expected_type: type) -> str:
    """'-3' when the type was right, 'float 3.0' when it was not."""
    if type(v) is expected_type or v is None or type(v) in (bool, list, dict, bytes) or (
            type(v) is str and not is_token(v)):
        return _show(v)
    return f"{type_name(v)} {_show(v)}"


def fail(name: str, expected: str, v: Any, expected_type: type) -> NoReturn:
    """Raise the :class:`CodecError` of field ``name``: missing, or ``v`` where ``expected`` was wanted."""
    if v is MISSING:
        raise CodecError(f"missing required field: {name}")
    raise CodecError(f"{name}: expected {expected}, got {_got(v, expected_type=expected_type)}")


def fail_string(name: str, v: Any) -> NoReturn:
    """Raise the :class:`CodecError` of a required id field that is not a string of 1..ID_MAX_CHARS chars."""
    expected = f"string of 1..{ID_MAX_CHARS} chars"
    if type(v) is str:
        raise CodecError(f"{name}: expected {expected}, got {len(v)} chars")
    fail(name, expected, v, str)


# --------------------------------------------------------------------------- parsing


def parse(raw: Any, max_bytes: int) -> Any:
    """Bytes to a Python object: JSON if the first non-blank byte is '{' or '[', msgpack otherwise."""
    if type(raw) is bytes:
        size = len(raw)
    elif raw is None:
        raise CodecError("expected bytes, got null (empty message)")
    elif isinstance(raw, bytes | bytearray | memoryview):
        raw = bytes(raw)
        size = len(raw)
    else:
        raise CodecError(f"expected bytes, got {type_name(raw)}")
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
            raise CodecError(f"not msgpack or JSON: invalid JSON: {exc_text(e)}") from None
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
        raise CodecError(f"not msgpack or JSON: invalid msgpack: {exc_text(e)}") from None


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


def exc_text(e: BaseException) -> str:
    """An exception as a short reason: its type and at most 200 chars of its message."""
    try:
        text = str(e)
    except Exception:
        text = ""
    text = text[:200]
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def guarded(check: Callable[[Any], Any], obj: Any) -> Any:
    """``check(obj)``, with any exception other than :class:`CodecError` turned into one."""
    try:
        return check(obj)
    except CodecError:
        raise
    except Exception as e:  # a bug in a check must still end in the DLQ, not crash the worker
        raise CodecError(f"invalid message: {exc_text(e)}") from None


def check_unicode(msg: Mapping[str, Any]) -> None:
    """Reject lone surrogates, which JSON escapes (\\ud800) can produce and msgpack cannot carry."""
    for name, v in msg.items():
        if type(v) is str and not v.isascii():
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                raise CodecError(f"{name}: invalid unicode (lone surrogate)") from None


def is_msgpack(raw: Any) -> bool:
    """Whether :func:`parse` read ``raw`` as msgpack, whose decoding (``raw=False``) already rejects invalid
    UTF-8, surrogates included; JSON input still needs :func:`check_unicode`."""
    return bool(raw) and raw[0] not in _JSON_START


# --------------------------------------------------------------------------- encoding


def encode(obj: Mapping[str, Any]) -> bytes:
    """A plain msgpack map, nothing added (strings as str, bytes as bin)."""
    data = obj if type(obj) is dict else dict(obj)
    return cast(bytes, msgpack.packb(data, use_bin_type=True))


def _canonical(v: Any) -> Any:
    if isinstance(v, Mapping):
        for k in v:
            if type(k) is not str:
                raise CodecError(f"canonical encoding needs string keys, got {type_name(k)}")
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
    obj = parse(raw, max_bytes)
    if type(obj) is not dict:
        raise CodecError(f"expected a map, got {type_name(obj)}")
    return cast(dict[str, Any], obj)
