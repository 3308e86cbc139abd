"""Deterministic identifiers: the same evidence always gives the same alert, action or campaign id."""

from __future__ import annotations

import hashlib


def stable_id(prefix: str, *parts: object) -> str:
    """``prefix-<32 hex>`` from the parts, so a replay or redelivery yields the same id."""
    h = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).hexdigest()
    return f"{prefix}-{h[:32]}"
