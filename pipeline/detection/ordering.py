"""Event-time order for the link stage, so a link group sees its members' summaries in the same order
whatever order the worker read its source partitions in.

A link group's judgement depends on the order its members' summaries reach it: which members it holds,
and how each looked, when it judges. In a backtest that order is the file's; in a worker, summaries come
from every usage-events partition, read as their fetches happen to come (a backlog after a restart reads
one partition hours of event time ahead of another). ``Aligner`` restores one order, the same in both:
it holds each update until every source partition's watermark (the latest event time it has processed)
has passed the update's event time by ``slack_ms``, then gives the held updates in key order
(``order_key``: event time, account, the account's event count, link key). The campaign stage orders the
link groups' signals the same way (``signal_key``), with each link partition's ``frontier`` as its
watermark. An update that arrives after
updates with larger keys were given out (from a source more than ``slack_ms`` out of order, or one that was
idle and woke up with old events) is *late*: the caller applies it at once, where a backtest of the same
events may have applied it in order.

A source partition that has no events for a while is marked idle (the worker's account stage says so):
it does not hold the others back, and its next update or watermark makes it count again.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

import msgpack

from pipeline.detection.messages import GroupSignal, LinkUpdate

Key = tuple[Any, ...]
"""An order key: event time first (what watermarks are compared with), then what makes it unique."""


def order_key(upd: LinkUpdate) -> Key:
    """Where ``upd`` stands in event-time order: its summary's event time, then account, then the
    account's event count (two summaries of one account at one millisecond), then the link key."""
    s = upd.summary
    return (s.ts, s.account, s.n, upd.key)


def signal_key(s: GroupSignal) -> Key:
    """Where a group's signal stands in event-time order (the campaign stage's input): its event time, the
    group, then what it says (a group judged twice in one millisecond)."""
    return (s.ts, s.key, s.severity, s.members, tuple(f.account for f in s.named))


class Aligner:
    """Link updates of one link partition, held until every source partition has passed them.

    ``sources``: how many usage-events partitions feed it. ``wait_for_all``: hold everything until each
    source has been heard from (the worker, where a source not heard from may still have a backlog); a
    backtest counts only the sources it has seen events of, since the file is in event-time order."""

    __slots__ = ("sources", "slack", "wait_for_all", "key", "wm", "idle", "heap", "last", "seq")

    def __init__(self, sources: int, slack_ms: int, wait_for_all: bool = True,
                 key: Callable[[Any], Key] = order_key) -> None:
        self.sources, self.slack, self.wait_for_all, self.key = sources, slack_ms, wait_for_all, key
        self.wm: dict[int, int] = {}  # source partition → its watermark (event time), as last heard
        self.idle: set[int] = set()
        self.heap: list[tuple[Key, int, Any, Any]] = []
        self.last: Key | None = None  # the key of the last update given out
        self.seq = 0  # keeps the heap from comparing updates of one key (a redelivered copy)

    def __len__(self) -> int:
        return len(self.heap)

    def offer(self, upd: Any, source: int, ref: Any = None) -> bool:
        """Hold ``upd`` (from source partition ``source``; ``ref`` is given back with it); False when it is
        late, to be applied at once. An update from an idle source makes it count again."""
        if source in self.idle:
            self.idle.discard(source)
        key = self.key(upd)
        if self.last is not None and key <= self.last:
            return False
        heapq.heappush(self.heap, (key, self.seq, upd, ref))
        self.seq += 1
        return True

    def advance(self, source: int, wm: int) -> None:
        """Source ``source`` has processed its events up to event time ``wm`` (a lower figure than one heard
        before, from a restarted source, changes nothing)."""
        self.idle.discard(source)
        if wm > self.wm.get(source, -(1 << 62)):
            self.wm[source] = wm

    def rest(self, source: int, wm: int) -> None:
        """Source ``source`` has had no events for a while (its watermark ``wm``, 0 if it never had any)."""
        self.idle.add(source)
        if wm > self.wm.get(source, -(1 << 62)):
            self.wm[source] = wm

    def horizon(self) -> int | None:
        """Updates with an event time below this can be given out; None while nothing can."""
        if self.wait_for_all and len(self.wm) < self.sources:
            return None
        active = [w for p, w in self.wm.items() if p not in self.idle]
        if not active:
            return None if not self.wm else 1 << 62  # every source is idle: all that is held
        return min(active) - self.slack

    def frontier(self) -> int | None:
        """Event time below which every update has been given out (held ones, or any still to come); None
        while a source has not been heard from. What a stage fed by this one may treat as its watermark."""
        h = self.horizon()
        if h is None or not self.heap:
            return h
        return min(h, self.heap[0][0][0])

    def release(self, limit: int | None = None, below: int | None = None) -> list[tuple[Any, Any]]:
        """The held updates the sources have all passed (at most ``limit``), in key order; ``below``: those
        with an event time below it instead (in process, where one stage's frontier is known directly)."""
        h = self.horizon() if below is None else below
        heap = self.heap
        if h is None or not heap or heap[0][0][0] >= h:
            return []
        out: list[tuple[Any, Any]] = []
        while heap and heap[0][0][0] < h and (limit is None or len(out) < limit):
            key, _, upd, ref = heapq.heappop(heap)
            self.last = key
            out.append((upd, ref))
        return out

    def drain(self) -> list[tuple[Any, Any]]:
        """Everything held, in key order (the end of a backtest's input)."""
        out: list[tuple[Any, Any]] = []
        while self.heap:
            key, _, upd, ref = heapq.heappop(self.heap)
            self.last = key
            out.append((upd, ref))
        return out

    # the worker keeps the sources' watermarks and the last key given out in a changelogged table; the
    # held updates themselves are kept there as the messages they came in

    def state_bytes(self) -> bytes:
        return msgpack.packb([1, sorted(self.wm.items()), sorted(self.idle),
                              None if self.last is None else list(self.last)])

    def restore(self, raw: bytes) -> None:
        version, wm, idle, last = msgpack.unpackb(raw, strict_map_key=True)
        if version != 1:
            raise ValueError(f"link order state version {version} is not 1")
        self.wm = {int(p): int(w) for p, w in wm}
        self.idle = {int(p) for p in idle}
        self.last = None if last is None else _tuples(last)


def _tuples(x: Any) -> Any:
    """A key read back from msgpack (lists) as the tuples it was written from."""
    return tuple(_tuples(v) for v in x) if isinstance(x, list) else x
