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

from pipeline.detection.ordering import Aligner

WM_HEADER = "dg.wm"
IDLE_HEADER = "dg.idle"
IDLE_AFTER_S = 5.0
"""A usage-events partition with every message handled and no events for this long (wall clock,
``DG_SOURCE_IDLE_S``) is announced idle, so the link stage does not wait for it; its next event makes it
count again. In real time a partition that wakes brings events newer than what the others have passed;
input sent in bursts with pauses longer than this (a file pushed to the topic piece by piece) may wake it
with older ones, which are then applied on arrival (late). Longer holds campaign findings that long at the
end of such a burst."""
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

    def __init__(self, clock: Callable[[], float] = time.monotonic, idle_after_s: float = IDLE_AFTER_S) -> None:
        self.clock, self.idle_after_s = clock, idle_after_s
        self.next_offset: dict[int, int] = {}  # per partition, the offset after the last message handled
        self.wm: dict[int, int] = {}
        self.advanced: set[int] = set()
        self.last_event: dict[int, float] = {}
        self.resting: set[int] = set()
        self.owned: set[int] = set()

    def saw(self, partition: int, ts: int) -> None:
        """An event admitted (per event: no clock read here, ``take_advanced`` notes the time per batch)."""
        if ts > self.wm.get(partition, 0):
            self.wm[partition] = ts
        self.advanced.add(partition)

    def take_advanced(self) -> list[tuple[int, int]]:
        """The watermarks to announce with this checkpoint's link updates; their partitions are active now
        (``gone_idle`` never runs inside a batch, so a batch's end is when its events were seen)."""
        now = self.clock()
        out = []
        for p in self.advanced:
            out.append((p, self.wm[p]))
            self.last_event[p] = now
            self.resting.discard(p)
        self.advanced.clear()
        return out

    def gone_idle(self, owned: set[int], caught_up: Callable[[int], bool]) -> list[tuple[int, int]]:
        """The owned partitions to announce idle now: every message in them handled (``caught_up``: none
        waiting in the broker or in the worker's buffers), no event for ``idle_after_s``, and not announced
        since. A partition newly owned is announced again (another worker may have had it meanwhile). A
        partition that is only slow to be read (a worker starting, or busy) is never idle: what it holds
        would come late."""
        now = self.clock()
        for p in owned - self.owned:  # (again) this worker's: quiet from now on, until it shows events
            self.resting.discard(p)
            self.last_event[p] = now
        self.owned = set(owned)
        idle = [p for p in sorted(owned) if p not in self.resting and now - self.last_event[p] >= self.idle_after_s
                and caught_up(p)]
        self.resting.update(idle)
        return [(p, self.wm.get(p, 0)) for p in idle]


class PartitionOrder:
    """One input partition's order (a link partition's updates, or the campaign stage's signals): its
    Aligner, the offsets of messages with items still held (and how many each still has), and what
    changed since the last write (``writes``). ``decode`` reads a message's items, ``source_of`` says
    which source partition an item came from; table keys start with ``prefix``."""

    def __init__(self, partition: int, aligner: Aligner, decode: Callable[[bytes], list[Any]],
                 source_of: Callable[[Any], int], prefix: bytes) -> None:
        self.partition = partition
        self.aligner = aligner
        self.decode, self.source_of, self.prefix = decode, source_of, prefix
        self.read = -1  # the last message offset taken
        self.held: dict[int, int] = {}  # message offset → its items still held
        self.new: dict[int, bytes] = {}  # messages with held items, not yet written
        self.done: set[int] = set()  # written messages whose items are all applied: to delete
        self.dirty = False
        self.announced: int | None = None  # the frontier last told downstream (the link stage's)

    def _message_key(self, offset: int) -> bytes:
        return self.prefix + b"m:%d:%020d" % (self.partition, offset)

    def _state_key(self) -> bytes:
        return self.prefix + b"f:%d" % self.partition

    def restore(self, get: Callable[[bytes], bytes | None]) -> PartitionOrder:
        """Read back what was written for this partition (``get``: a raw table lookup), with its held
        items offered again (those given out before are not: their keys are below the last one)."""
        raw = get(self._state_key())
        if raw is None:
            return self
        version, aligner_state, self.read, held = msgpack.unpackb(raw)
        if version != 1:
            raise ValueError(f"link order record version {version} is not 1")
        self.aligner.restore(aligner_state)
        for offset in held:
            value = get(self._message_key(offset))
            if value is None:  # pragma: no cover - written with the record that names it
                continue
            n = sum(self.aligner.offer(x, self.source_of(x), offset) for x in self.decode(value))
            if n:
                self.held[offset] = n
            else:
                self.done.add(offset)
                self.dirty = True
        return self

    def take(self, offset: int, value: bytes, headers: Any) -> list[Any] | None:
        """Take one message: hold its items, note its watermarks. None when it was taken before (a
        redelivery); else the items that are late, to apply at once."""
        if offset <= self.read:
            return None
        self.read = offset
        self.dirty = True
        aligner = self.aligner
        late: list[Any] = []
        held = 0
        for x in self.decode(value) if value else ():
            if aligner.offer(x, self.source_of(x), offset):
                held += 1
            else:
                late.append(x)
        if held:
            self.held[offset] = held
            self.new[offset] = value
        for p, wm in header_pairs(headers, WM_HEADER):
            aligner.advance(p, wm)
        for p, wm in header_pairs(headers, IDLE_HEADER):
            aligner.rest(p, wm)
        return late

    def release(self, limit: int | None = None) -> list[tuple[Any, int]]:
        """The held items every source has passed (at most ``limit``), in order, each with the offset of
        the message it came in; their messages' counts go down."""
        out = []
        for x, offset in self.aligner.release(limit):
            out.append((x, offset))
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
        out: list[tuple[int, bytes, bytes | None]] = [(p, self._message_key(o), v) for o, v in self.new.items()]
        out += [(p, self._message_key(o), None) for o in self.done]
        out.append((p, self._state_key(), msgpack.packb([1, self.aligner.state_bytes(), self.read,
                                                           sorted(self.held)])))
        self.new.clear()
        self.done.clear()
        self.dirty = False
        return out

    def frontier_news(self) -> int | None:
        """This partition's frontier (``Aligner.frontier``) if it moved since it was last told, else None."""
        f = self.aligner.frontier()
        if f is None or f == self.announced:
            return None
        self.announced = f
        return f
