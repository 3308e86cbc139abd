"""``python -m pipeline tail``: a topic's messages as JSON lines, for people, ``jq`` and ``verify``.

One line per message: ``{"topic", "partition", "offset", "timestamp", "key", "headers", "encoding",
"value"}``. ``value`` is the message decoded from msgpack (or from JSON, which the input topics accept);
a value that is neither, or a map that names a key twice, is shown as ``value_b64`` with an ``error`` and
``value`` null, never a crash. A
key that is not UTF-8 is ``key_b64``; headers are ``[name, value]`` pairs in message order, the value as
text when it is UTF-8 and as ``{"b64": …}`` otherwise. Inside a value, msgpack binary is ``{"b64": …}``,
an extension type ``{"ext": code, "b64": …}``, and a non-finite float its name (``"nan"``).

>>> decode_value(b"\\x81\\xa8severity\\xa4high")
('msgpack', {'severity': 'high'}, None)
>>> decode_value(b'{"a": 1}')
('json', {'a': 1}, None)
>>> decode_value(b"\\xc1")[0], decode_value(b"\\xc1")[2]
(None, 'neither msgpack nor JSON: msgpack: FormatError')
"""

from __future__ import annotations

import base64
import json
import math
import re
import time
from collections.abc import Callable
from typing import Any

import msgpack

from pipeline.contract.verify import DuplicateKey, unique_keys
from pipeline.kafka.reader import Start

__all__ = ["SEVERITIES", "decode_value", "matches", "parse_start", "record"]

SEVERITIES = ("low", "medium", "high", "critical")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)$")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _jsonable(obj: Any, depth: int = 0) -> Any:
    """A decoded msgpack value as something ``json.dumps`` writes as valid JSON."""
    if depth > 200:
        raise ValueError("nested deeper than 200 levels")
    if isinstance(obj, str | int | bool) or obj is None:
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else str(obj)
    if isinstance(obj, bytes):
        return {"b64": _b64(obj)}
    if isinstance(obj, msgpack.ExtType):
        return {"ext": obj.code, "b64": _b64(obj.data)}
    if isinstance(obj, dict):
        return {(k if isinstance(k, str) else json.dumps(_jsonable(k, depth + 1))): _jsonable(v, depth + 1)
                for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v, depth + 1) for v in obj]
    return repr(obj)


def decode_value(raw: bytes | None) -> tuple[str | None, Any, str | None]:
    """``(encoding, value, error)``: ``("msgpack" | "json", value, None)``, or ``(None, None, reason)``
    when the bytes are neither one msgpack value nor UTF-8 JSON. A null value (a tombstone) is
    ``(None, None, None)``."""
    if raw is None:
        return None, None, None
    if raw.lstrip(b" \t\r\n")[:1] in (b"{", b"["):  # the codec's rule: as msgpack these are two small ints
        try:
            return "json", json.loads(raw.decode("utf-8"), object_pairs_hook=unique_keys), None
        except DuplicateKey as exc:
            return None, None, f"JSON object with {exc}"
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            return None, None, f"neither msgpack nor JSON: JSON: {str(exc)[:300]}"
    try:
        value = msgpack.unpackb(raw, raw=False, strict_map_key=False, object_pairs_hook=unique_keys)
        return "msgpack", _jsonable(value), None
    except DuplicateKey as exc:
        return None, None, f"msgpack map with {exc}"
    except msgpack.ExtraData as exc:
        problem = f"{len(exc.extra)} bytes of trailing data after the msgpack value"
    except Exception as exc:  # msgpack raises many kinds; the reason is all that matters
        problem = type(exc).__name__ + (f" ({exc})" if str(exc) else "")
    return None, None, f"neither msgpack nor JSON: msgpack: {problem[:300]}"


def _text_or_b64(data: bytes) -> Any:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return {"b64": _b64(data)}


def record(msg: Any) -> dict[str, Any]:
    """The JSON line of a kafka-python ``ConsumerRecord`` (see the module docstring)."""
    out: dict[str, Any] = {"topic": msg.topic, "partition": msg.partition, "offset": msg.offset,
                           "timestamp": msg.timestamp}
    key = msg.key
    if key is None:
        out["key"] = None
    else:
        text = _text_or_b64(key)
        if isinstance(text, str):
            out["key"] = text
        else:
            out["key"], out["key_b64"] = None, text["b64"]
    out["headers"] = [[name, _text_or_b64(value or b"")] for name, value in (msg.headers or [])]
    encoding, value, error = decode_value(msg.value)
    out["encoding"], out["value"] = encoding, value
    if error is not None:
        out["value_b64"], out["error"] = _b64(msg.value), error
    return out


def matches(rec: dict[str, Any], account: str | None = None, severity: str | None = None) -> bool:
    """Whether a record passes the filters: ``account``, the key or the value's ``account_id`` or one of
    its ``related_accounts``; ``severity``, a value whose ``severity`` is this one or higher."""
    value = rec["value"] if isinstance(rec["value"], dict) else {}
    if account is not None:
        related = value.get("related_accounts")
        if not (rec["key"] == account or value.get("account_id") == account
                or (isinstance(related, list) and account in related)):
            return False
    if severity is not None:
        got = value.get("severity")
        if got not in SEVERITIES or SEVERITIES.index(got) < SEVERITIES.index(severity):
            return False
    return True


def parse_start(text: str | None, now_ms: Callable[[], int] = lambda: int(time.time() * 1000)) -> Start:
    """``--from``: None (the beginning), ``now`` (only new messages), a duration back from now (``15m``,
    ``2h``, ``7d``), or a time (epoch ms or ISO 8601).

    >>> parse_start("90s", now_ms=lambda: 100_000).at_ms, parse_start("1772409600000").at_ms
    (10000, 1772409600000)
    """
    from pipeline.kafka.replay import parse_time

    if text is None:
        return Start()
    t = text.strip().lower()
    if t == "now":
        return Start(at_ms=now_ms())
    m = _DURATION.match(t)
    if m:
        unit = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}[m.group(2)]
        return Start(at_ms=now_ms() - int(float(m.group(1)) * unit))
    return Start(at_ms=parse_time(text))
