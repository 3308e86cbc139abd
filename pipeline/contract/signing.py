"""HMAC signatures of enforcement actions, so the enforcement service can check where an action came from.

The signature is the lowercase hex HMAC-SHA256, under a shared key, of the canonical msgpack encoding
(:func:`pipeline.contract.codec.encode_canonical`: map keys sorted at every level) of every field of the action
except ``signature`` itself. Unknown extra fields are covered too, so nothing can be added unnoticed.

Key rotation: the action itself has no key-id field, but the worker sends the public id of the signing
key (:func:`key_id`) in the ``KEY_ID_HEADER`` header of each action (:func:`signing_key_id`), so a
verifier holding several keys can tell which one signed it. :func:`verify` also takes several candidate
keys (the current one and the previous ones) and accepts an action that any of them signed, header or
not. To rotate: give verifiers the new key as current and the old one as previous (``DG_SIGNING_KEY`` /
``DG_SIGNING_KEYS_PREVIOUS``), then switch the worker to the new key, and drop the old key once no action
signed with it can still arrive.

>>> action = {"action_id": "a1", "account_id": "acct-1", "action": "throttle"}
>>> action["signature"] = sign(action, b"k1")
>>> verify(action, b"k1"), verify(action, {"current": b"k2", "previous": b"k1"}), verify(action, b"k2")
(True, True, False)
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Any

from pipeline.contract.codec import CodecError, encode_canonical

__all__ = ["DEVELOPMENT_KEYS", "DEV_SIGNING_KEY", "MIN_ENFORCE_KEY_BYTES", "REPLAY_MARK", "SIGNATURE_FIELD", "SignatureError",
           "check", "enforce_key_problem", "key_id", "sign", "signing_key_id", "signing_payload", "verify"]

SIGNATURE_FIELD = "signature"
_HEX64 = re.compile(r"[0-9a-f]{64}")

KEY_ID_HEADER = "dg.signing-key-id"
"""Header the worker sends with each action: the public id of the key that signed it (:func:`key_id`)."""
DEVELOPMENT_KEY_ID = "development"
"""The key id a worker without ``DG_SIGNING_KEY`` sends (it signs with the engine's development key)."""


def key_id(key: bytes) -> str:
    """A key's public id: the first 16 hex characters of its SHA-256, so a verifier holding several keys
    during a rotation knows which one signed an action, and nothing about the key itself.

    >>> key_id(b"k" * 32)
    '5e318f8cf9cbe249'
    """
    return hashlib.sha256(key).hexdigest()[:16]


def signing_key_id(settings: Any) -> str:
    """The public id (:func:`key_id`) of the key that ``settings`` sign actions with (``signing_key``), or
    ``DEVELOPMENT_KEY_ID`` without one: the value of ``KEY_ID_HEADER`` on each action the worker sends.

    >>> from types import SimpleNamespace
    >>> signing_key_id(SimpleNamespace(signing_key=None))
    'development'
    """
    key = getattr(settings, "signing_key", None)
    if key is None:
        return DEVELOPMENT_KEY_ID
    return key_id(key.get_secret_value().encode("utf-8"))


DEV_SIGNING_KEY = b"distillation-guard-development-key:not-for-enforcement"
"""The key a worker or backtest signs with when ``DG_SIGNING_KEY`` is not set (shadow mode only)."""
MIN_ENFORCE_KEY_BYTES = 32
"""An enforce-mode key is at least this long (HMAC-SHA256 keys shorter than its 32-byte output are weak)."""
DEVELOPMENT_KEYS = frozenset({
    DEV_SIGNING_KEY,  # the engine's shadow-mode default
    b"change-me-dev-only-signing-key",  # the fallback docker/compose.yaml once had
    b"example-analyst-key-public-in-schemas-examples",  # signs the Verdict v2 examples in schemas/examples
    b"example-action-key-public-in-schemas-examples",  # signs the EnforcementAction v2 (lift) examples
    b"signing-vector-key-1: public, signs nothing real",  # the signing test vectors, schemas/examples/signing
    b"signing-vector-key-2: public as well, the wrong key for vector 1",
})
"""Keys that are public in this repository: they sign shadow actions at most, never enforce ones."""
REPLAY_MARK = "+replay"
"""Suffix of ``policy_version`` on every action a replay (``backtest``) writes; such actions are shadow."""

Keys = Mapping[str, bytes] | bytes


class SignatureError(ValueError):
    """An action whose signature is missing, malformed or made with none of the given keys."""


def enforce_key_problem(key: bytes) -> str | None:
    """Why ``key`` may not sign enforce-mode actions, or None if it may."""
    if key in DEVELOPMENT_KEYS:
        return "it is a development key, public in the source"
    if len(key) < MIN_ENFORCE_KEY_BYTES:
        return f"it is {len(key)} bytes long, under the minimum of {MIN_ENFORCE_KEY_BYTES}"
    return None


def signing_payload(action: Mapping[str, Any]) -> bytes:
    """The bytes that are signed: canonical msgpack of every field except ``signature``."""
    try:
        return encode_canonical({k: v for k, v in action.items() if k != SIGNATURE_FIELD})
    except (CodecError, TypeError, ValueError) as exc:
        raise SignatureError(f"cannot encode the action canonically: {exc}") from exc


def _mac(payload: bytes, key: bytes) -> str:
    if not key:
        raise ValueError("an empty signing key is not a key")
    return hmac.new(key, payload, hashlib.sha256).hexdigest()


def sign(action: Mapping[str, Any], key: bytes) -> str:
    """The hex HMAC-SHA256 signature of ``action`` under ``key`` (a ``signature`` field is ignored)."""
    return _mac(signing_payload(action), key)


def _named(keys: Keys) -> dict[str, bytes]:
    if isinstance(keys, bytes | bytearray):
        return {"key": bytes(keys)}
    named = {name: bytes(k) for name, k in keys.items()}
    if not named:
        raise ValueError("no keys to verify with")
    return named


def check(action: Mapping[str, Any], keys: Keys) -> str:
    """The name of the key that signed ``action`` (``"key"`` for a single key); raises
    :class:`SignatureError` saying why when the signature is missing, malformed or matches no key.

    Each comparison runs in constant time (:func:`hmac.compare_digest`), and every key is tried, so the
    time taken does not depend on the signature's content.
    """
    named = _named(keys)
    signature = action.get(SIGNATURE_FIELD)
    if signature is None:
        raise SignatureError("no signature field")
    if not isinstance(signature, str) or not _HEX64.fullmatch(signature):
        raise SignatureError("signature is not 64 lowercase hex characters")
    payload = signing_payload(action)
    matched: str | None = None
    for name, key in named.items():
        if hmac.compare_digest(_mac(payload, key), signature) and matched is None:
            matched = name
    if matched is None:
        which = "the key" if len(named) == 1 else f"any of the {len(named)} keys"
        raise SignatureError(f"signature does not match {which}: wrong key, or the action was altered")
    return matched


def verify(action: Mapping[str, Any], keys: Keys) -> bool:
    """True if ``action`` carries a valid signature under ``keys``: one key, or several candidates by name
    (e.g. ``{"current": k2, "previous": k1}`` during a rotation)."""
    try:
        check(action, keys)
    except SignatureError:
        return False
    return True
