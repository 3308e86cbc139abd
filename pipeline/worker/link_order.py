"""The worker's side of event-time order for link updates (``pipeline.detection.ordering``).

The account stage tells every link-updates partition how far each of its usage-events partitions has got:
a header ``dg.wm`` (msgpack ``[[partition, event time], ...]``) on the last link-updates message it sends
to that partition in a checkpoint (a message with no updates when it has none for it), and ``dg.idle``
when a partition it owns has had no events for ``IDLE_AFTER_S`` (``SourceClock``). The link stage holds each
update in an ``Aligner`` per link partition until every source has passed it, then applies it
(``PartitionOrder``).

Nothing held is lost in a crash or a move: the Aligner's state (the sources' watermarks, which are idle,
the last update applied, the last message read) and every message with updates still held are written to
the ``link-order`` table (changelogged) at each checkpoint, after the link groups; a partition's order is
read back from it on its first message after a start or a rebalance. A message read again (offset at or
below the last read) is skipped; an update applied before a crash and offered again is a copy the engine
skips (its member's record is as new).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import msgpack

from pipeline.detection.messages import LinkUpdate, decode_link_updates
from pipeline.detection.ordering import Aligner

WM_HEADER = "dg.wm"
IDLE_HEADER = "dg.idle"
IDLE_AFTER_S = 0.5
"""A usage-events partition with no events for this long (wall clock) is announced idle, so the link stage
does not wait for it; its next event makes it count again."""
ORDER_TABLE = "link-order"


def header_pairs(headers: Any, name: str) -> list[tuple[int, int]]:
    """The ``[[partition, event time], ...]`` of header ``name`` (a list of pairs or a mapping), or []."""
    if not headers:
        return []
    items: Iterable[Any] = headers.items() if hasattr(headers, "items") else headers
    for k, v in items:
        if (k.decode("utf-8") if isinstance(k, bytes) else k) == name and v:
            return [(int(p), int(w)) for p, w in msgpack.unpackb(v)]
    return []


def pairs_header(name: str, pairs: Iterable[tuple[int, int]]) -> list[tuple[str, bytes]]:
    return [(name, msgpack.packb([[p, w] for p, w in sorted(pairs)]))]


class SourceClock:
    """The account stage's view of its usage-events partitions: each one's watermark (the largest event
    time admitted), which advanced since the last announcement, and which were announced idle."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.wm: dict[int, int] = {}
        self.advanced: set[int] = set()
        self.last_event: dict[int, float] = {}
        self.resting: set[int] = set()
        self.owned: set[int] = set()

    def saw(self, partition: int, ts: int) -> None:
        if ts > self.wm.get(partition, 0):
            self.wm[partition] = ts
        self.advanced.add(partition)
        self.last_event[partition] = self.clock()
        self.resting.discard(partition)

    def take_advanced(self) -> list[tuple[int, int]]:
        """The watermarks to announce with this checkpoint's link updates."""
        out = [(p, self.wm[p]) for p in self.advanced]
        self.advanced.clear()
        return out

    def gone_idle(self, owned: set[int]) -> list[tuple[int, int]]:
        """The owned partitions to announce idle now: no event for ``IDLE_AFTER_S`` and not announced since.
        A partition newly owned is announced again (another worker may have had it meanwhile)."""
        for p in owned - self.owned:
            self.resting.discard(p)
            self.last_event.setdefault(p, self.clock())
        self.owned = set(owned)
        now = self.clock()
        idle = [p for p in sorted(owned) if p not in self.resting and now - self.last_event[p] >= IDLE_AFTER_S]
        self.resting.update(idle)
        return [(p, self.wm.get(p, 0)) for p in idle]


def _message_key(partition: int, offset: int) -> bytes:
    return b"m:%d:%020d" % (partition, offset)


def _state_key(partition: int) -> bytes:
    return b"f:%d" % partition


class PartitionOrder:
    """One link partition's order: its Aligner, the offsets of messages with updates still held (and how
    many each still has), and what changed since the last write (``writes``)."""

    def __init__(self, partition: int, sources: int, slack_ms: int) -> None:
        self.partition = partition
        self.aligner = Aligner(sources, slack_ms)
        self.read = -1  # the last message offset taken
        self.held: dict[int, int] = {}  # message offset → its updates still held
        self.new: dict[int, bytes] = {}  # messages with held updates, not yet written
        self.done: set[int] = set()  # written messages whose updates are all applied: to delete
        self.dirty = False

    @classmethod
    def restore(cls, partition: int, sources: int, slack_ms: int, get: Callable[[bytes], bytes | None],
                source_of: Callable[[str], int]) -> PartitionOrder:
        """The order written for ``partition`` (``get``: a raw table lookup), with its held updates again."""
        self = cls(partition, sources, slack_ms)
        raw = get(_state_key(partition))
        if raw is None:
            return self
        version, aligner_state, self.read, held = msgpack.unpackb(raw)
        if version != 1:
            raise ValueError(f"link order record version {version} is not 1")
        self.aligner.restore(aligner_state)
        for offset in held:
            value = get(_message_key(partition, offset))
            if value is None:  # pragma: no cover - written with the record that names it
                continue
            n = sum(self.aligner.offer(u, source_of(u.summary.account), offset)
                    for u in (decode_link_updates(value) if value else ()))
            if n:
                self.held[offset] = n
            else:
                self.done.add(offset)
                self.dirty = True
        return self

    def take(self, offset: int, value: bytes, headers: Any, source_of: Callable[[str], int]) -> list[LinkUpdate] | None:
        """Take one link-updates message: hold its updates, note its watermarks. None when it was taken
        before (a redelivery); else the updates that are late, to apply at once."""
        if offset <= self.read:
            return None
        self.read = offset
        self.dirty = True
        aligner = self.aligner
        late: list[LinkUpdate] = []
        held = 0
        for upd in decode_link_updates(value) if value else ():
            if aligner.offer(upd, source_of(upd.summary.account), offset):
                held += 1
            else:
                late.append(upd)
        if held:
            self.held[offset] = held
            self.new[offset] = value
        for p, wm in header_pairs(headers, WM_HEADER):
            aligner.advance(p, wm)
        for p, wm in header_pairs(headers, IDLE_HEADER):
            aligner.rest(p, wm)
        return late

    def release(self, limit: int | None = None) -> list[LinkUpdate]:
        """The held updates every source has passed (at most ``limit``), in order; their messages' counts
        go down."""
        out = []
        for upd, offset in self.aligner.release(limit):
            out.append(upd)
            left = self.held[offset] - 1
            if left:
                self.held[offset] = left
                continue
            del self.held[offset]
            if self.new.pop(offset, None) is None:
                self.done.add(offset)
        return out

    def writes(self) -> list[tuple[int, bytes, bytes | None]]:
        """The table writes (partition, key, value or None to delete) that bring the table up to date."""
        if not self.dirty:
            return []
        p = self.partition
        out: list[tuple[int, bytes, bytes | None]] = [(p, _message_key(p, o), v) for o, v in self.new.items()]
        out += [(p, _message_key(p, o), None) for o in self.done]
        out.append((p, _state_key(p), msgpack.packb([1, self.aligner.state_bytes(), self.read,
                                                       sorted(self.held)])))
        self.new.clear()
        self.done.clear()
        self.dirty = False
        return out
