"""Turn population column blocks into UsageEvent v1 dicts in arrival order, with bounded lateness."""

from __future__ import annotations

import gc
import hashlib

import numpy as np

from pipeline.contract.models import USAGE_EVENT_FIELDS
from pipeline.contract.simhash import hex_list

from .world import World

FIELDS: tuple[str, ...] = USAGE_EVENT_FIELDS  # contract order
MAX_LATENESS_MS = 3_000


def arrival_order(world: World, ts: np.ndarray, account: np.ndarray) -> np.ndarray:
    """Indices in arrival order: by ``ts`` plus a random delay (at most ``MAX_LATENESS_MS``).

    Delays are made non-decreasing along each account's own events, so an account's events keep their
    ts order while events of different accounts may swap by up to a few seconds.
    """
    rng = world.rng
    order = np.lexsort((ts, account))
    delay = np.minimum(rng.exponential(400.0, len(ts)), MAX_LATENESS_MS).astype(np.int64)
    rel = ts[order] - ts.min() + delay
    span = np.int64(int(rel.max()) + 1 if len(rel) else 1)
    acc = account[order].astype(np.int64)
    arrival = np.maximum.accumulate(rel + acc * span) - acc * span
    return order[np.argsort(arrival, kind="stable")]


def to_events(world: World, cols: dict[str, np.ndarray], tag: str) -> tuple[list[dict], np.ndarray]:
    """Build the event dicts (contract field order) from columns; also return each event's account code.

    Events outside the window are dropped; a few optional fields are nulled as a real gateway would
    leave them (language undetected on 1%, capability classifier timeouts on 0.5%).
    """
    rng = world.rng
    inside = (cols["ts"] >= world.t0) & (cols["ts"] < world.t1)
    cols = {k: v[inside] for k, v in cols.items()}
    codes_of = {a["account_id"]: i for i, a in enumerate(world.labels)}
    account = np.fromiter((codes_of[a] for a in cols["account_id"]), dtype=np.int64, count=len(cols["ts"]))
    order = arrival_order(world, cols["ts"], account)
    n = len(order)
    lists: dict[str, list] = {}
    for k, v in cols.items():
        v = v[order]
        lists[k] = hex_list(v) if k == "prompt_simhash" else v.tolist()
    for k, share in (("language", 0.01), ("capability", 0.005)):
        for j in np.flatnonzero(rng.random(n) < share).tolist():
            lists[k][j] = None
    lists["schema_version"] = [1] * n
    lists["event_id"] = [f"{tag}-{j:08d}" for j in range(n)]
    rows = zip(*(lists[f] for f in FIELDS), strict=True)
    was_enabled = gc.isenabled()
    gc.disable()  # a million small dicts would otherwise trigger many useless full collections
    try:
        events = [dict(zip(FIELDS, row, strict=True)) for row in rows]
    finally:
        if was_enabled:
            gc.enable()
    return events, account[order]


def run_tag(scenario: str, seed: int, scale: float) -> str:
    """Short deterministic prefix for event ids of one run, distinct across scenarios, seeds and scales."""
    return "e" + hashlib.sha1(f"{scenario}:{seed}:{scale!r}".encode()).hexdigest()[:10]
