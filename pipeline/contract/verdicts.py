"""Analyst verdicts (Verdict v2): signed by an analyst key, authenticated here, at the decode boundary.

A verdict lifts an account's enforcement (``false_positive``) or hardens it (``true_positive``: critical
becomes ``ban``), so whoever can write ``analyst-verdicts`` must not be able to forge one. Verdict v2 is
Verdict v1 plus four fields:

- ``kind`` and ``campaign_id``: the kind (and, for a campaign member's alert, the campaign) of the alert it
  names; the verdict covers findings of that kind or campaign only, never the account as a whole;
- ``analyst``: now required, so every verdict is accountable to a person;
- ``signature``: hex HMAC-SHA256 under the *analyst* key (``DG_ANALYST_KEY``, never the action-signing
  key) of the canonical msgpack of every other field, computed as for actions (:mod:`pipeline.contract.signing`).

This module checks the shape and the signature and nothing else: whether the account really received the
alert named, and whether the verdict still holds (``DG_VERDICT_TTL_HOURS`` of event time after that alert),
is policy state (:meth:`pipeline.detection.policy.Policy.apply_verdict`). A refused verdict goes to the
DLQ with its reason, and the worker logs each verdict it accepts or refuses.

Verdict v1 (unsigned) is still *read*: it is decoded so that its reason can say what to do, and goes to
the DLQ as ``verdict v1 is unsigned``; it is never applied.

>>> key = b"an-analyst-key-of-32-bytes-or-more!"
>>> v = sign_verdict({"schema_version": 2, "alert_id": "alr-1", "account_id": "acct-1",
...                   "kind": "account_behaviour", "campaign_id": None, "verdict": "false_positive",
...                   "ts": 1772409600000, "analyst": "ana"}, key)
>>> decode_verdict(encode(v), {"current": key})["verdict"]
'false_positive'
>>> decode_verdict(encode({**v, "verdict": "true_positive"}), {"current": key})
Traceback (most recent call last):
...
pipeline.contract.verdicts.VerdictRefused: signature: signature does not match the key: wrong key, or the action was altered
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, NoReturn, cast

import msgpack

from pipeline.contract import signing
from pipeline.contract.codec import CodecError, encode
from pipeline.contract.models import ID_MAX_CHARS, TS_MAX_EXCLUSIVE, VERDICTS, SignedVerdict
from pipeline.contract.privacy import describe, is_token

__all__ = ["VERDICT_VERSION", "VerdictRefused", "analyst_keys", "decode_verdict", "encode", "sign_verdict",
           "verdict_for_alert"]

VERDICT_VERSION = 2
MAX_BYTES = 16 * 1024
"""A verdict is a few hundred bytes; anything much larger is not one."""
FIELDS = ("schema_version", "alert_id", "account_id", "kind", "campaign_id", "verdict", "ts", "analyst",
          "signature")


class VerdictRefused(CodecError):
    """A verdict that is not applied: malformed, v1, unsigned, or signed with no analyst key."""


def _refuse(reason: str) -> NoReturn:
    raise VerdictRefused(reason)


def _show(v: Any) -> str:
    return repr(v) if isinstance(v, str) and is_token(v) else describe(v) if v is not None else "null"


def _parse(raw: bytes | bytearray | memoryview) -> Any:
    data = bytes(raw) if raw is not None else b""
    if not data:
        _refuse("empty message")
    if len(data) > MAX_BYTES:
        _refuse(f"message too large: {len(data)} bytes > limit {MAX_BYTES}")
    try:
        if data.lstrip()[:1] == b"{":
            return json.loads(data)
        return msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # any parser error: the reason names its type, never the bytes
        _refuse(f"not msgpack or JSON: {type(exc).__name__}")


def _string(obj: Mapping[str, Any], name: str, nullable: bool = False) -> None:
    v = obj.get(name)
    if v is None and nullable:
        return
    if v is None and name not in obj:
        _refuse(f"missing required field: {name}")
    if type(v) is not str or not 0 < len(v) <= ID_MAX_CHARS:
        _refuse(f"{name}: expected string of 1..{ID_MAX_CHARS} chars{' or null' if nullable else ''}, "
                f"got {_show(v)}")


def decode_verdict(raw: bytes | bytearray | memoryview, keys: Mapping[str, bytes]) -> SignedVerdict:
    """A Verdict v2 whose signature matches one of ``keys`` (the analyst keys, by name); raises
    :class:`VerdictRefused` (a :class:`~pipeline.contract.codec.CodecError`) with a reason fit for a DLQ header."""
    obj = _parse(raw)
    if type(obj) is not dict:
        _refuse(f"expected a map, got {describe(obj)}")
    version = obj.get("schema_version")
    if version == 1 and type(version) is int:
        _refuse("verdict v1 is unsigned and no longer applied: send Verdict v2 (schemas/verdict.v2.json), "
                "signed with the analyst key")
    if type(version) is not int or version != VERDICT_VERSION:
        _refuse(f"schema_version: expected {VERDICT_VERSION}, got {_show(version)}")
    for name in ("alert_id", "account_id", "kind", "analyst"):
        _string(obj, name)
    _string(obj, "campaign_id", nullable=True)
    v = obj.get("verdict")
    if type(v) is not str or v not in VERDICTS:
        _refuse(f"verdict: expected one of {'|'.join(sorted(VERDICTS))}, got {_show(v)}")
    ts = obj.get("ts")
    if type(ts) is not int or not 0 < ts < TS_MAX_EXCLUSIVE:
        _refuse(f"ts: expected int epoch milliseconds in (0, 2**53), got {_show(ts)}")
    if not keys:
        _refuse("no analyst key is configured (DG_ANALYST_KEY): a verdict cannot be authenticated")
    try:
        signing.check(obj, keys)
    except signing.SignatureError as exc:
        _refuse(f"signature: {exc}")
    return cast(SignedVerdict, {name: obj.get(name) for name in FIELDS})


def sign_verdict(verdict: Mapping[str, Any], key: bytes) -> dict[str, Any]:
    """``verdict`` with its ``signature`` under the analyst ``key``."""
    out = {k: v for k, v in verdict.items() if k != signing.SIGNATURE_FIELD}
    out[signing.SIGNATURE_FIELD] = signing.sign(out, key)
    return out


def verdict_for_alert(alert: Mapping[str, Any], verdict: str, analyst: str, ts: int, key: bytes) -> dict[str, Any]:
    """The signed Verdict v2 on one AnomalyAlert of an account (not a campaign-level alert, which names no
    account: give the verdict on each member's own alert)."""
    if not alert.get("account_id"):
        raise ValueError("a campaign-level alert names no account: give the verdict on a member's own alert")
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {', '.join(sorted(VERDICTS))}")
    return sign_verdict({"schema_version": VERDICT_VERSION, "alert_id": alert["alert_id"],
                         "account_id": alert["account_id"], "kind": alert["kind"],
                         "campaign_id": alert.get("campaign_id"), "verdict": verdict, "ts": ts,
                         "analyst": analyst}, key)


def analyst_keys(settings: Any) -> dict[str, bytes]:
    """The analyst keys of the settings by name (``current``, ``previous-1`` …); empty when none is set."""
    keys: dict[str, bytes] = {}
    current = getattr(settings, "analyst_key", None)
    if current is not None and current.get_secret_value():
        keys["current"] = current.get_secret_value().encode("utf-8")
    previous = getattr(settings, "analyst_keys_previous", None)
    if previous is not None:
        for i, k in enumerate((k.strip() for k in previous.get_secret_value().split(",")), 1):
            if k:
                keys[f"previous-{i}"] = k.encode("utf-8")
    return keys
