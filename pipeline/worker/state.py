"""The engine's stores in the worker: a batch's changed state, and the decoded state kept between batches.

``BatchStore`` is what the engine reads and writes (``get``, ``[key] = obj``): objects are decoded once,
kept for the batch and written to their table only by ``flush()``, after the batch's outputs are
acknowledged. ``StateCache`` keeps recently written objects decoded for the next batches.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from pipeline.detection.links import LinkGroup
from pipeline.worker.tables import PartitionedTable

ACCOUNT_CACHE = 10_000
"""Decoded account (and policy) states kept between batches: a few KiB each as Python objects."""
LINK_CACHE = 50_000
"""Decoded link groups kept between batches, weighed by members + 8 (a group costs a few KiB of Python
objects before its first member, a few hundred bytes per member after): at most ~6,000 small groups."""

SEGMENTS_PER_PARTITION = 8
"""Tier segments per partition: the usage event's seven ``account_tier`` values and none ("unknown")."""
POPULATION_TABLE = "population"
"""``population.Segment`` per tier segment and partition (``DG_POPULATION_REVIEW``; about 40 KB each)."""
RANKS_TABLE = "score-ranks"
"""``calibration.ScoreRanks`` per tier segment and partition (a few KB each). Both tables' stores keep
``SEGMENTS_PER_PARTITION`` objects per input partition decoded: every one a worker can own."""


def link_group_weight(group: LinkGroup) -> int:
    """A link group's weight in ``LINK_CACHE`` and ``BATCH_STATE_WEIGHT``: its members + 8."""
    return len(group.members) + 8


class StateCache:
    """The recently used state objects of a table, decoded, as last written; bounded by a total weight
    (1 per account state, members + 8 per link group).

    Scan-resistant (a segmented LRU): an object kept for the first time goes on *probation* (by default
    a fifth of the capacity, and whatever the rest leaves free), least recently used out first; kept
    again while still cached (a key touched by a second batch), it moves to the *protected* rest, whose
    least recently used fall back to probation. A flood of keys seen once (a million one-off accounts,
    each with a payment fingerprint of its own) so churns only probation, and the state that most batches
    touch stays decoded: a group of hundreds of members costs milliseconds to decode, rebuild and
    re-encode from scratch. With a plain LRU, pass 3 of ``bench/state.py --accounts 1000000`` evicted
    those groups at every batch and spent nearly all its time in the link stage's decoding and encoding
    (the rate is in ``bench/README.md``). On the standard file it misses fewer link groups than a plain
    LRU too, and the same account states (``bench/state_cache.py``).

    Only this worker writes the partitions it owns, so a cached object equals its stored bytes until the
    partitions move: the table clears its caches on every rebalance and after recovery, drops deleted
    keys, and a batch that failed half-way clears them too (an object may have been changed in place)."""

    def __init__(self, capacity: int, weight: Callable[[Any], int] = lambda obj: 1, probation: float = 0.2) -> None:
        """``probation``: its share of the capacity (1.0 makes a plain LRU: nothing is protected)."""
        self.capacity = capacity
        self.weight = weight
        self.protected_capacity = capacity - max(1, int(capacity * probation))
        self.probation: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self.protected: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self.total = 0
        self.protected_total = 0

    def __len__(self) -> int:
        return len(self.probation) + len(self.protected)

    def get(self, key: str) -> Any:
        for segment in (self.protected, self.probation):
            hit = segment.get(key)
            if hit is not None:
                segment.move_to_end(key)
                return hit[0]
        return None

    def keep(self, key: str, obj: Any) -> None:
        known = self.pop(key)
        w = self.weight(obj)
        self.total += w
        if not known:
            self.probation[key] = (obj, w)
        else:
            self.protected[key] = (obj, w)
            self.protected_total += w
            while self.protected_total > self.protected_capacity:
                old_key, old = self.protected.popitem(last=False)
                self.protected_total -= old[1]
                self.probation[old_key] = old
        while self.total > self.capacity:
            segment = self.probation or self.protected  # protected only when one object outweighs the rest
            _, (_, old_w) = segment.popitem(last=False)
            self.total -= old_w
            if segment is self.protected:
                self.protected_total -= old_w

    def pop(self, key: str) -> bool:
        """Forget ``key``; whether it was cached."""
        hit = self.probation.pop(key, None)
        if hit is None:
            hit = self.protected.pop(key, None)
            if hit is None:
                return False
            self.protected_total -= hit[1]
        self.total -= hit[1]
        return True

    def clear(self) -> None:
        self.probation.clear()
        self.protected.clear()
        self.total = self.protected_total = 0


class BatchStore:
    """An engine store over a table: objects are decoded once, kept for the batch, and written back only
    by ``flush()`` (after the batch's outputs are acknowledged); written objects stay in a bounded cache."""

    def __init__(self, table: PartitionedTable, decode: Callable[[bytes], Any], cache: StateCache) -> None:
        self.table = table
        self.decode = decode
        self.pending: dict[str, tuple[int, Any]] = {}
        self.pending_weight = 0  # the cache's weight of the pending objects, as each was first set
        self.partition = 0
        self.cache = cache
        table.caches.append(self.cache)

    def get(self, key: str, default: Any = None) -> Any:
        hit = self.pending.get(key)
        if hit is not None:
            return hit[1]
        obj = self.cache.get(key)
        if obj is not None:
            return obj
        raw = self.table.get_raw(self.partition, key.encode("utf-8"))
        return default if raw is None else self.decode(raw)

    def __setitem__(self, key: str, obj: Any) -> None:
        pending = self.pending
        if key not in pending:
            self.pending_weight += self.cache.weight(obj)
        pending[key] = (self.partition, obj)

    async def flush(self) -> None:
        """Write the batch's changed objects to the table (durably), then keep them in the cache."""
        pending = self.pending
        items = [(partition, key.encode("utf-8"), obj.to_bytes()) for key, (partition, obj) in pending.items()]
        self.pending = {}
        self.pending_weight = 0
        await self.table.put_many(items)
        keep = self.cache.keep
        for key, (_, obj) in pending.items():
            keep(key, obj)
