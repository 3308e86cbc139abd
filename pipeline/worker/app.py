"""The Faust application: topics, tables and agents of the streaming pipeline, built from Settings.

Three agents, all thin (decode, call the pure engine, send what it returns):

- ``account_agent`` reads the co-partitioned, account-keyed topics ``usage-events``, ``findings`` and
  ``analyst-verdicts``; it keeps the ``account-state`` and ``policy-state`` tables and sends member
  summaries to ``link-updates``, to the partition of each link key;
- ``link_agent`` reads ``link-updates``; it keeps the ``link-state`` table and sends a signal for each
  link group judged a campaign to ``campaign-signals`` (all to the partition of one key);
- ``campaign_agent`` reads ``campaign-signals``; it keeps the ``campaign-state`` table (link groups that
  name the same accounts are one campaign) and sends campaign alerts and the named members' findings (to
  each account's partition).

Internal messages are batched: a batch's link updates go out as one message per destination partition,
findings likewise, so the link stage reads a few messages per batch rather than several per event. A
link update is known by (source offset, position in its message), which is what a link group records as
applied. Every record is sent straight through the app's producer (no per-message Faust future).

Exactly-once *effect* without transactions: each agent works in batches; it first sends every output of
the batch and waits until Kafka has acknowledged them (acks=all), and only then writes the new state to
its tables (RocksDB + changelog), before Faust commits the batch's offsets. A crash before the state
write redelivers the batch against the old state, which reproduces the same outputs with the same ids;
a crash after it finds each key's applied source offset in the state and skips what is already in.
Agent concurrency stays at 1 (faust-streaming #606).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import faust
from faust.streams import _current_event
from faust.tables.recovery import Recovery

from pipeline.contract import admission, codec, signing
from pipeline.contract.manifest import load_manifest
from pipeline.contract.privacy import redact
from pipeline.contract.verdicts import analyst_keys, decode_verdict
from pipeline.detection import Engine
from pipeline.detection.campaigns import SIGNALS_KEY, decode_record, last_ts_of
from pipeline.detection.engine import ACTIONS, ALERTS, Output
from pipeline.detection.features import AccountState
from pipeline.detection.links import LinkGroup
from pipeline.detection.messages import (
    Finding,
    GroupSignal,
    LinkUpdate,
    decode_findings,
    decode_group_signals,
    decode_link_updates,
    encode_findings,
    encode_group_signals,
    encode_link_updates,
)
from pipeline.detection.partition import partition_for
from pipeline.detection.policy import PolicyState
from pipeline.kafka import probe as broker_probe
from pipeline.logs import faust_logging_config, get_logger
from pipeline.settings import Settings
from pipeline.worker import stall
from pipeline.worker.consumer import WorkerConsumer
from pipeline.worker.guard import InvalidRateGuard
from pipeline.worker.observability import WorkerMetrics, default_metrics

log = get_logger("worker")

DLQ_REASON = "dlq.reason"
DLQ_TOPIC = "dlq.source.topic"
DLQ_PARTITION = "dlq.source.partition"
DLQ_OFFSET = "dlq.source.offset"
WRONG_PARTITION = admission.WRONG_PARTITION
BATCH_MAX = 2000
# RocksDB per table partition: small write buffers and block cache instead of Faust's 64 MiB x 3 buffers
# and 2 GiB cache, so worker memory stays flat as the number of accounts grows. Each of the three tables
# has a database per partition (12 with 4 partitions: at most 12 x 12 MiB); recently used state is kept
# decoded in the StateCaches below, so the block cache serves only the rest.
ROCKSDB_OPTIONS = {"write_buffer_size": 4 << 20, "max_write_buffer_number": 2, "block_cache_size": 4 << 20}
STREAM_BUFFER = 2048
"""Messages each agent's stream buffers (Faust's default is 4,096): a batch of ``BATCH_MAX`` and a little.
The worker's consumer fills a buffer to the brim instead of pausing its partitions at four-fifths
(``pipeline/worker/consumer.py``), and a buffered link-update message carries a whole batch of updates: at 4,096
the worker ended ``bench/state.py --accounts 100000`` at 743-751 MiB, at 2,048 at 674 MiB (649 MiB with
Faust's consumer), with the same end-to-end rate (8,364 events/s) and event-to-alert p99 (0.80 s)."""
LINK_BUFFER = 32
"""Messages the link agent's stream buffers. Each carries a batch of link updates of up to 256 KiB
(``MAX_BATCH_BYTES``), so ``STREAM_BUFFER`` of them could hold 512 MiB while the link stage lags; 32 hold
at most 8 MiB, and a full buffer holds delivery back until the link agent takes a message (it never
waits on the account stage). ``bench/end_to_end.py`` and ``bench/state.py`` gave the same figures with
it as without (7,303 events/s; 698 MiB at 100,000 accounts): a bound for the worst case."""
BATCH_WITHIN_S = 0.1
"""How long an agent gathers input before it works on it (at most ``BATCH_MAX`` messages). Every batch
writes each state it touched once, so a longer window writes less: on the standard file, 500-event
batches write 249 bytes of account state and 643 of link groups per event, 250-event ones 305 and 971.
At a steady 4,000 events/s that is 0.1 s or 0.05 s; 0.1 s adds at most that much per stage to the
event-to-alert latency (``bench/latency.py``)."""
# The worker's own exit codes (README, "Exit codes"): in the sysexits.h range, not with its meanings
EXIT_OUTPUT_FAILED = 70  # a batch's outputs or state could not be written: exit without committing
EXIT_INVALID_FLOOD = 71  # too much recent input was invalid (DG_MAX_INVALID_RATIO)
EXIT_BROKER_GONE = 72  # no broker answered, or the login was refused, for DG_BROKER_TIMEOUT_S
SWEEP_INTERVAL_S = 30.0
SWEEP_CHUNK = 20_000
WATCHDOG_INTERVAL_S = 5.0
STATS_INTERVAL_S = 10.0
PRODUCER_BATCH_BYTES = 512 * 1024
ACCOUNT_CACHE = 10_000
"""Decoded account (and policy) states kept between batches: about 3.6 KiB each as Python objects."""
LINK_CACHE = 50_000
"""Decoded link groups kept between batches, weighed by members + 8 (a group costs a few KiB of Python
objects before its first member, a few hundred bytes per member after): at most ~6,000 small groups."""


def link_group_weight(group: LinkGroup) -> int:
    """A link group's weight in ``LINK_CACHE`` and ``BATCH_STATE_WEIGHT``: its members + 8."""
    return len(group.members) + 8


BATCH_STATE_WEIGHT = LINK_CACHE
"""The most changed state a batch holds before it writes it (weighed as in the caches: 1 per account
state, members + 8 per link group): about what the caches keep, overshot by one input message at most.
A batch that reaches it delivers its outputs so far and writes its state, then goes on; its input is
acknowledged at the end, as always. This is safe for the reason a crash between batches is: each state
records the input offsets it has applied, so a redelivery skips them, and the outputs of what it
applied were acknowledged first.

The link agent needs it: its batch takes up to ``BATCH_MAX`` messages of up to 256 KiB of updates each.
In pass 3 of ``bench/state.py --accounts 300000`` (every account first reports to its link keys), one
batch held some 22,000 decoded groups and as many changelog writes in flight, and the worker ended at
1,381 MiB; with the bound, at 563 MiB. The pass ran at 517 events/s instead of 1,155: a large group
that many parts of a batch touch is written once per part. The standard file's batches rarely reach it
(``bench/end_to_end.py``: 0.900 of Faust's decode-and-count agent's rate, 0.888 before the bound)."""
LINK_OFFSET_STRIDE = 1 << 20
"""A link update's applied-offset is ``source offset * LINK_OFFSET_STRIDE + its index in the message``."""


def dlq_headers(reason: str, topic: str, partition: int, offset: int) -> list[tuple[str, bytes]]:
    """The DLQ headers of the contract: reason and source coordinates, as UTF-8 bytes."""
    return [
        (DLQ_REASON, reason.encode("utf-8")),
        (DLQ_TOPIC, topic.encode("utf-8")),
        (DLQ_PARTITION, str(partition).encode("ascii")),
        (DLQ_OFFSET, str(offset).encode("ascii")),
    ]


KAFKA_MAX_MESSAGE_BYTES = 1_048_588
"""The largest record batch a topic takes (``max.message.bytes``: Kafka's default, set on every topic of
``schemas/topics.json``), and the producer's ``max_request_size`` (Faust's default, 1,000,000, was below
it: a DLQ copy of an input the broker had taken could not be sent, and the worker restarted on it)."""
DLQ_RECORD_MAX = KAFKA_MAX_MESSAGE_BYTES - 16 * 1024
"""The most key and value bytes of a DLQ copy: the rest of a record (headers, framing) fits in what is left."""
DLQ_REASON_MAX = 1000
DLQ_TRUNCATED = "dlq.truncated"
DLQ_ORIGINAL_SIZE = "dlq.original.size"
DLQ_ORIGINAL_SHA256 = "dlq.original.sha256"
DLQ_ORIGINAL_KEY_SIZE = "dlq.original.key.size"
DLQ_ORIGINAL_KEY_SHA256 = "dlq.original.key.sha256"


def dlq_copy(key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]],
             limit: int = DLQ_RECORD_MAX) -> tuple[bytes | None, bytes | None]:
    """The key and value of a DLQ copy that fits in ``limit`` bytes: as they came, or cut short (the value
    first, then the key) with the original size and SHA-256 of what was cut in ``headers``, so a copy of
    any message the broker took can be sent, and the original can still be recognised."""
    import hashlib

    k, v = key or b"", value or b""
    if len(k) + len(v) <= limit:
        return key, value
    cut = []
    if len(k) > limit // 2:
        headers += [(DLQ_ORIGINAL_KEY_SIZE, str(len(k)).encode("ascii")),
                    (DLQ_ORIGINAL_KEY_SHA256, hashlib.sha256(k).hexdigest().encode("ascii"))]
        key, k = k[:limit // 2], k[:limit // 2]
        cut.append("key")
    if len(k) + len(v) > limit:
        headers += [(DLQ_ORIGINAL_SIZE, str(len(v)).encode("ascii")),
                    (DLQ_ORIGINAL_SHA256, hashlib.sha256(v).hexdigest().encode("ascii"))]
        value = v[:limit - len(k)]
        cut.append("value")
    headers.append((DLQ_TRUNCATED, ",".join(cut).encode("ascii")))
    return key, value


class _PartitionOnly:
    """Stands in for Faust's current event where only its partition matters (table and store writes)."""

    __slots__ = ("message", "__weakref__")

    def __init__(self, partition: int) -> None:
        self.message = SimpleNamespace(partition=partition)


class Wire:
    """Raw records straight through the app's producer: no Faust ``FutureMessage``, callbacks or sensors
    per record (they cost more than the detection). ``send`` returns the delivery future; tests replace it."""

    def __init__(self, app: faust.App) -> None:
        self.app = app

    async def send(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None,
                   headers: Any = None) -> Any:
        return await self.app.producer.send(topic, key, value, partition, None, headers)


class PartitionedTable(faust.Table):
    """A table written in batches with explicit partitions, changelog first.

    Faust's own ``table[key] = value`` writes the local RocksDB at once and the changelog later: a
    SIGKILL in between leaves the local store ahead of the changelog, and a restarted worker on the same
    disk would then skip a redelivered event whose effect the changelog never got. ``put_many`` sends the
    changelog records, waits until Kafka has them, writes the local store, and then records the changelog
    offset it has reached per partition (what Faust's recovery resumes from on the same disk).
    """

    wire: Wire
    caches: list[StateCache]

    async def on_rebalance(self, assigned: Any, revoked: Any, newly_assigned: Any, generation_id: int = 0) -> None:
        # another worker may have changed what this one cached while it did not own the partition
        for cache in self.caches:
            cache.clear()
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)

    async def on_recovery_completed(self, active_tps: Any, standby_tps: Any) -> None:
        for cache in self.caches:
            cache.clear()
        await super().on_recovery_completed(active_tps, standby_tps)

    def _rocksdb(self, partition: int) -> Any:
        """The RocksDB database of one partition, or None for another kind of store (``memory://``)."""
        db_for = getattr(self.data, "_db_for_partition", None)
        return None if db_for is None else db_for(partition)

    def get_raw(self, partition: int, key: bytes) -> bytes | None:
        """The stored value of ``key`` in ``partition``, looked up there alone (Faust's own lookup takes the
        partition from the current event, or searches every partition's database)."""
        db = self._rocksdb(partition)
        return self.get(key) if db is None else db.get(key)

    async def put_many(self, items: list[tuple[int, bytes, bytes | None]]) -> None:
        """Write (value ``None``: delete) ``(partition, key, value)`` items durably."""
        if not items:
            return
        topic = self.changelog_topic.get_topic_name()
        send = self.wire.send
        futures = [await send(topic, key, value, partition) for partition, key, value in items]
        results = await asyncio.gather(*futures)
        store = self.data
        for partition, key, value in items:
            if value is None:
                for cache in self.caches:
                    cache.pop(key.decode("utf-8"))
            db = self._rocksdb(partition)
            if db is not None:  # straight into the partition's database
                if value is None:
                    db.delete(key)
                else:
                    db.put(key, value)
                continue
            stand_in = _PartitionOnly(partition)  # other stores take the partition from the current event
            token = _current_event.set(weakref.ref(stand_in))  # type: ignore[arg-type]
            try:
                if value is None:
                    with contextlib.suppress(KeyError):
                        del store[key]
                else:
                    store[key] = value
            finally:
                _current_event.reset(token)
        persisted: dict[Any, int] = {}
        for res in results:
            tp = getattr(res, "topic_partition", None)
            if tp is not None and res.offset > persisted.get(tp, -1):
                persisted[tp] = res.offset
        for tp, offset in persisted.items():
            store.set_persisted_offset(tp, offset)


class SeekFirstRecovery(Recovery):
    """Faust's recovery, but no input message is delivered between "resume the input partitions" and
    "seek them to the committed offsets".

    Faust's ``on_recovery_completed`` resumes the input partitions first and seeks second, with the fetcher
    running: messages fetched in between are processed and acked, then fetched again from the committed
    offset once the seek lands, and the seek also resets the consumer's idea of the committed offset.
    The consumer's ack list then holds offsets twice or starts above the committed offset, and Faust's
    commit never (or one offset per commit interval) moves again: the worker has processed everything
    and its group lag stays put. Stopping the consumer's flow first closes that window; Faust resumes the
    flow itself once the seek is done.
    """

    async def on_recovery_completed(self, generation_id: int = 0) -> None:
        self.app.consumer.stop_flow()
        await super().on_recovery_completed(generation_id)


class TableManager(faust.tables.TableManager):
    """Faust's table manager with ``SeekFirstRecovery``."""

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = SeekFirstRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery


class Sweeper:
    """Deletes state idle for longer than ``idle_ms`` of event time, a chunk of keys per call, so a
    million one-off accounts or link keys do not accumulate (RocksDB partitions of this worker only).

    A standby partition (``standby()``: a replica this worker keeps of another worker's state) is never
    swept: its changelog belongs to the worker that owns the partition, which sweeps it itself; a
    tombstone from here would delete state under that worker's feet."""

    def __init__(self, table: PartitionedTable, last_ts: Callable[[bytes], int], idle_ms: int,
                 standby: Callable[[], set[int]] = set) -> None:
        self.table = table
        self.last_ts = last_ts
        self.idle_ms = idle_ms
        self.standby = standby
        self.cursor: dict[int, bytes | None] = {}

    async def sweep(self, watermark: int, chunk: int = SWEEP_CHUNK) -> int:
        """One pass over up to ``chunk`` keys per partition; returns how many keys were deleted."""
        dbs = getattr(self.table.data, "_dbs", None)
        if dbs is None or watermark <= 0:
            return 0
        expired: list[tuple[int, bytes]] = []
        standby = self.standby()
        for partition, db in list(dbs.items()):
            if partition in standby:
                continue
            start = self.cursor.get(partition)
            seen = 0
            last_key = None
            for key, raw in (db.items(from_key=start) if start is not None else db.items()):
                if key.startswith(b"__faust"):
                    continue
                seen += 1
                last_key = key
                if raw is not None and watermark - self.last_ts(raw) > self.idle_ms:
                    expired.append((partition, key))
                if seen >= chunk:
                    break
            self.cursor[partition] = last_key if seen >= chunk else None
        await self.table.put_many([(partition, key, None) for partition, key in expired])
        return len(expired)


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
    those groups at every batch and ran at under 600 events/s, nearly all of it in the link stage's
    decoding and encoding. On the standard file it misses fewer link groups than a plain LRU too, and
    the same account states (``bench/state_cache.py``).

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
        pending = self.pending
        items = [(partition, key.encode("utf-8"), obj.to_bytes()) for key, (partition, obj) in pending.items()]
        self.pending = {}
        self.pending_weight = 0
        await self.table.put_many(items)
        keep = self.cache.keep
        for key, (_, obj) in pending.items():
            keep(key, obj)


class Outbox:
    """The batch's outgoing messages: sent together, then awaited until Kafka acknowledges them all.

    Link updates and findings are gathered per destination partition and leave as one message each."""

    def __init__(self, wire: Wire, link_topic: str, findings_topic: str, partitions: int,
                 signals_topic: str = "") -> None:
        self.wire = wire
        self.link_topic, self.findings_topic, self.partitions = link_topic, findings_topic, partitions
        self.signals_topic = signals_topic
        self.items: list[tuple[str, bytes | None, bytes | None, Any]] = []
        self.signals: list[GroupSignal] = []
        self.links: dict[int, list[LinkUpdate]] = {}
        self.findings: dict[int, list[Finding]] = {}
        self.tripped = False  # the invalid-input breaker fired during this batch
        self.accepted = 0  # input events handed to detection (counted in the metrics once per batch)

    def add(self, topic: str, key: bytes | None, value: bytes | None, headers: Any = None) -> None:
        self.items.append((topic, key, value, headers))

    def add_link_update(self, upd: LinkUpdate) -> None:
        self.links.setdefault(_partition(upd.key, self.partitions), []).append(upd)

    def add_finding(self, f: Finding) -> None:
        self.findings.setdefault(_partition(f.account, self.partitions), []).append(f)

    def add_signal(self, s: GroupSignal) -> None:
        self.signals.append(s)

    async def deliver(self) -> None:
        send = self.wire.send
        futures = [await send(topic, key, value, None, headers) for topic, key, value, headers in self.items]
        for partition, updates in sorted(self.links.items()):
            for raw in encode_link_updates(updates):
                futures.append(await send(self.link_topic, None, raw, partition))
        for partition, findings in sorted(self.findings.items()):
            for raw in encode_findings(findings):
                futures.append(await send(self.findings_topic, None, raw, partition))
        if self.signals:
            key = SIGNALS_KEY.encode("utf-8")
            for raw in encode_group_signals(self.signals):
                futures.append(await send(self.signals_topic, key, raw, _partition(SIGNALS_KEY, self.partitions)))
            self.signals.clear()
        self.items.clear()
        self.links.clear()
        self.findings.clear()
        if futures:
            await asyncio.gather(*futures)


@functools.lru_cache(maxsize=1 << 16)
def _partition(key: str, partitions: int) -> int:
    return partition_for(key, partitions)


def _fatal(what: str, exc: BaseException | None, code: int = EXIT_OUTPUT_FAILED, **info: Any) -> None:
    # Leaving the batch any other way would let Faust ack its events: exit without committing instead,
    # so a restarted worker processes the batch again (nothing accepted is lost).
    log.critical("fatal", what=what, error=None if exc is None else f"{type(exc).__name__}: {exc}", exc_info=exc,
                 hint="exiting without committing this batch's offsets; fix the cause, then restart the worker",
                 **info)
    os._exit(code)


SIGNING_KEY_ID_HEADER = signing.KEY_ID_HEADER


def signing_key_id(settings: Settings) -> str:
    """The public id of the signing key (``signing.key_id``), sent as a header with each action so a
    verifier holding several keys during a rotation knows which one signed it."""
    if settings.signing_key is None:
        return signing.DEVELOPMENT_KEY_ID
    return signing.key_id(settings.signing_key.get_secret_value().encode("utf-8"))


def table_stats(table: Any) -> tuple[int, int | None]:
    """(keys, bytes) of a table: RocksDB's own estimates per partition, or a count for the memory store."""
    dbs = getattr(table.data, "_dbs", None)
    if dbs is None:
        return len(table.data), None
    keys = size = 0
    for db in list(dbs.values()):
        try:
            keys += int(db.property_int_value("rocksdb.estimate-num-keys") or 0)
            size += int(db.property_int_value("rocksdb.estimate-live-data-size") or 0)
        except Exception:  # an estimate is optional: a store without it reports keys only
            continue
    return keys, size


ROCKSDB_MEMORY = {"memtables": "rocksdb.size-all-mem-tables",
                  "table_readers": "rocksdb.estimate-table-readers-mem",
                  "block_cache": "rocksdb.block-cache-usage"}
"""RocksDB's memory estimates, by the component name of ``dg_rocksdb_memory_bytes``."""


def rocksdb_memory(tables: list[Any]) -> dict[str, int]:
    """RocksDB's memory estimates (``ROCKSDB_MEMORY``) summed over the tables' open databases; empty for
    other stores. Each table partition has a block cache of its own, so the block cache usages add up."""
    total: dict[str, int] = {}
    for table in tables:
        for db in list((getattr(table.data, "_dbs", None) or {}).values()):
            for component, prop in ROCKSDB_MEMORY.items():
                try:
                    value = int(db.property_int_value(prop) or 0)
                except Exception:  # an estimate is optional
                    continue
                total[component] = total.get(component, 0) + value
    return total


def worker_ready(app: faust.App) -> bool:
    """Whether the worker processes input now: it has partitions, no rebalance or table recovery is under
    way, and Faust lets its input flow (read from the metrics thread at each scrape: plain attribute reads,
    and no consumer is created that the app has not created itself)."""
    consumer = getattr(app, "_consumer", None)
    try:
        return bool(consumer is not None and not app.rebalancing and not getattr(app, "in_recovery", False)
                    and app.flow_control.is_active() and consumer.assignment())
    except Exception:  # a consumer that is starting or stopping is not ready
        return False


def create_app(settings: Settings, metrics: WorkerMetrics | None = None) -> faust.App:
    """Build the Faust app with its topics, tables and agents from the settings."""
    from pipeline.kafka.config import faust_broker_credentials

    metrics = metrics or default_metrics()
    manifest = load_manifest()
    n_parts = settings.input_partitions

    def partitions(name: str) -> int:
        # everything keyed by account or link key is co-partitioned with the input; the DLQ is not
        return int(manifest[name]["partitions"]) if name == "usage-events-dlq" else n_parts

    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{b.strip()}" for b in settings.bootstrap.split(",") if b.strip()],
        broker_credentials=faust_broker_credentials(settings),
        store=settings.store,
        datadir=str(settings.store_dir),
        autodiscover=False,
        logging_config=faust_logging_config(),  # one log format: libraries' lines as structlog's (JSON)
        producer_acks=-1,
        # a batch's state records go out together: let them share produce requests (aiokafka's 16 KiB
        # default puts a large link group in a request of its own)
        producer_max_batch_size=PRODUCER_BATCH_BYTES,
        producer_max_request_size=KAFKA_MAX_MESSAGE_BYTES,
        # a SIGKILLed worker's partitions move to the others after this long (Faust's default is 60 s)
        broker_session_timeout=15.0,
        broker_heartbeat_interval=3.0,
        consumer_auto_offset_reset="earliest",
        topic_partitions=n_parts,
        topic_replication_factor=settings.replication_factor,
        web_port=settings.web_port,
        web_host="127.0.0.1",
        key_serializer="raw",
        value_serializer="raw",
        TableManager=TableManager,
        stream_buffer_maxsize=STREAM_BUFFER,
        # Faust's default is 1: with two workers each then replays the other's every state write, and two
        # workers took 1.29x one's events/s in ``bench/scale_out.py``, against 1.76x without
        table_standby_replicas=settings.standby_replicas,
    )
    app.transport.Consumer = WorkerConsumer  # type: ignore[misc]  # see pipeline/worker/consumer.py

    def topic(*names: str, maxsize: int | None = None) -> faust.TopicT:
        t = app.topic(*(settings.topic(n) for n in names), key_type=bytes, value_type=bytes,
                      key_serializer="raw", value_serializer="raw", partitions=partitions(names[0]))
        if maxsize is not None:  # App.topic takes ``maxsize`` but does not pass it on to the Topic
            t.maxsize = maxsize  # read when an agent's stream clones the topic and makes its buffer
        return t

    events_name, findings_name, verdicts_name = (settings.topic(n) for n in
                                                 ("usage-events", "findings", "analyst-verdicts"))
    account_in = topic("usage-events", "findings", "analyst-verdicts")
    link_topic = topic("link-updates", maxsize=LINK_BUFFER)
    findings_topic = topic("findings")
    signals_topic = topic("campaign-signals")
    out_topics = {ALERTS: topic("anomaly-alerts"), ACTIONS: topic("enforcement-actions")}
    out_names = {name: t.get_topic_name() for name, t in out_topics.items()}
    dlq_topic = topic("usage-events-dlq")
    dlq_name = dlq_topic.get_topic_name()

    wire = Wire(app)

    def table(name: str) -> PartitionedTable:
        options = dict(ROCKSDB_OPTIONS) if settings.store.startswith("rocksdb") else None
        t = PartitionedTable(app, name=name, default=None, key_type=bytes, value_type=bytes, partitions=n_parts,
                             options=options)
        t.wire = wire
        t.caches = []
        app.tables.add(t)
        return t

    account_table, policy_table, link_table = table("account-state"), table("policy-state"), table("link-state")
    accounts = BatchStore(account_table, AccountState.from_bytes, StateCache(ACCOUNT_CACHE))
    policy = BatchStore(policy_table, PolicyState.from_bytes, StateCache(ACCOUNT_CACHE))
    links = BatchStore(link_table, LinkGroup.from_bytes, StateCache(LINK_CACHE, link_group_weight))
    campaign_table = table("campaign-state")
    campaigns = BatchStore(campaign_table, decode_record, StateCache(ACCOUNT_CACHE))
    engine = Engine.from_config(settings, accounts=accounts, links=links, policy=policy, campaigns=campaigns)

    key_id = [(SIGNING_KEY_ID_HEADER, signing_key_id(settings).encode("ascii"))]
    verdict_keys = analyst_keys(settings)  # none: every verdict is refused
    cfg = engine.cfg
    thresholds = {("account_behaviour", "medium"): cfg.account_medium, ("account_behaviour", "high"): cfg.account_high,
                  ("account_behaviour", "critical"): cfg.account_critical,
                  ("coordinated_campaign", "high"): cfg.campaign_high,
                  ("coordinated_campaign", "critical"): cfg.campaign_critical}

    def emit(outbox: Outbox, out: Output, source: Any) -> None:
        outbox.add(out_names[out.topic], out.key.encode("utf-8"), codec.encode(out.value),
                   key_id if out.topic == ACTIONS else None)
        v = out.value
        if out.topic == ALERTS:
            metrics.alert(v["severity"], v["kind"], v["ts"])
            log.info("alert", account_id=v["account_id"], campaign_id=v["campaign_id"], kind=v["kind"],
                     severity=v["severity"], score=v["score"],
                     threshold=thresholds.get((v["kind"], v["severity"])), alert_id=v["alert_id"],
                     reasons=[r["code"] for r in v["reasons"]], topic=source.topic,
                     partition=source.partition, offset=source.offset)
        else:
            metrics.action(v["action"], v["mode"])
            log.info("action", account_id=v["account_id"], action=v["action"], mode=v["mode"],
                     action_id=v["action_id"], reasons=v["reason_codes"], topic=source.topic,
                     partition=source.partition, offset=source.offset)

    guard = InvalidRateGuard(settings.max_invalid_ratio, window=settings.invalid_window,
                             min_messages=max(10, settings.invalid_window // 10))

    def to_dlq(outbox: Outbox, message: Any, reason: str) -> None:
        if len(reason) > DLQ_REASON_MAX:
            reason = reason[:DLQ_REASON_MAX] + "..."
        value, headers = message.value, dlq_headers(reason, message.topic, message.partition, message.offset)
        if settings.dlq_redact_text and value:
            value, redacted = redact(value)
            if redacted:
                headers.append(("dlq.redacted", b"true"))
        key, value = dlq_copy(message.key, value, headers)
        outbox.add(dlq_name, key, value, headers)
        metrics.event_invalid(reason)
        log.warning("to_dlq", reason=reason, topic=message.topic, partition=message.partition,
                    offset=message.offset)

    watermark = admission.Watermark()  # the clock of state expiry: event time, never beyond broker time

    def account_message(outbox: Outbox, message: Any) -> None:
        accounts.partition = policy.partition = message.partition
        if message.topic == events_name:
            try:
                ev = codec.decode_event(message.value, max_bytes=settings.max_message_bytes)
            except codec.CodecError as exc:
                to_dlq(outbox, message, exc.reason)
                if guard.record(valid=False):
                    outbox.tripped = True
                return
            guard.record(valid=True)
            if _partition(ev["account_id"], n_parts) != message.partition:
                to_dlq(outbox, message, WRONG_PARTITION)
                return
            broker_ms = admission.message_ms(message)
            if admission.in_future(ev["ts"], broker_ms, settings.max_event_skew_ms):
                to_dlq(outbox, message, admission.TS_IN_FUTURE)
                return
            watermark.advance(ev["ts"], broker_ms)
            res = engine.on_event(ev, message.partition, message.offset)
            if res.duplicate:
                metrics.event_duplicate()
                return
            if res.late:
                metrics.event_late()
                log.info("late_event", account_id=ev["account_id"], ts=ev["ts"], topic=message.topic,
                         partition=message.partition, offset=message.offset)
                return
            outbox.accepted += 1
            for upd in res.links:
                outbox.add_link_update(upd)
            for out in res.outputs:
                emit(outbox, out, message)
        elif message.topic == findings_name:
            findings = decode_findings(message.value)
            if any(_partition(f.account, n_parts) != message.partition for f in findings):
                to_dlq(outbox, message, WRONG_PARTITION)
                return
            for finding in findings:
                for out in engine.on_finding(finding):
                    emit(outbox, out, message)
        elif message.topic == verdicts_name:
            try:
                verdict = decode_verdict(message.value, verdict_keys)
            except codec.CodecError as exc:
                to_dlq(outbox, message, f"verdict: {exc.reason}")
                log.warning("verdict", outcome="refused", reason=exc.reason, partition=message.partition,
                            offset=message.offset)
                return
            about = {"account_id": verdict["account_id"], "verdict": verdict["verdict"],
                     "alert_id": verdict["alert_id"], "kind": verdict["kind"], "campaign_id": verdict["campaign_id"],
                     "analyst": verdict["analyst"], "partition": message.partition, "offset": message.offset}
            if _partition(verdict["account_id"], n_parts) != message.partition:
                to_dlq(outbox, message, WRONG_PARTITION)
                log.warning("verdict", outcome="refused", reason=WRONG_PARTITION, **about)
                return
            refused, outs = engine.on_verdict(verdict)
            if refused is not None:
                to_dlq(outbox, message, f"verdict: {refused}")
                log.warning("verdict", outcome="refused", reason=refused, **about)
            else:
                log.info("verdict", outcome="accepted", lifted=bool(outs), **about)
                for out in outs:  # a false positive lifts the account's active actions
                    emit(outbox, out, message)

    def link_message(outbox: Outbox, message: Any) -> None:
        links.partition = message.partition
        base = message.offset * LINK_OFFSET_STRIDE
        for i, upd in enumerate(decode_link_updates(message.value)):
            signal = engine.on_link_update(upd, base + i)
            if signal is not None:
                outbox.add_signal(signal)

    def campaign_message(outbox: Outbox, message: Any) -> None:
        campaigns.partition = message.partition
        base = message.offset * LINK_OFFSET_STRIDE
        for i, sig in enumerate(decode_group_signals(message.value)):
            outs, findings = engine.on_group_signal(sig, base + i)
            for out in outs:
                emit(outbox, out, message)
            for f in findings:
                outbox.add_finding(f)

    watchdog = stall.Watchdog()

    async def process_batch(messages: list[Any], handle: Callable[[Outbox, Any], None],
                            stores: tuple[BatchStore, ...]) -> None:
        t0 = time.perf_counter()
        watchdog.batch_ran()
        outbox = Outbox(wire, link_topic.get_topic_name(), findings_topic.get_topic_name(), n_parts,
                        signals_topic.get_topic_name())
        for message in messages:
            try:
                handle(outbox, message)
            except Exception as exc:  # a bug must not lose the message: park it in the DLQ
                log.exception("processing_error", topic=message.topic, partition=message.partition,
                              offset=message.offset)
                # the exception's text may quote the message: the reason names its type only (it is logged)
                to_dlq(outbox, message, f"processing error: {type(exc).__name__}")
                for store in stores:  # the failed call may have changed a cached object half-way
                    store.cache.clear()
            if sum(store.pending_weight for store in stores) >= BATCH_STATE_WEIGHT:
                await write_out(outbox, stores)
        await write_out(outbox, stores)
        metrics.observe_processing(time.perf_counter() - t0)

    async def write_out(outbox: Outbox, stores: tuple[BatchStore, ...]) -> None:
        """The outputs gathered so far, acknowledged by Kafka, then the state changed so far."""
        try:
            await outbox.deliver()
            if outbox.tripped:
                _fatal("too much invalid input", None, EXIT_INVALID_FLOOD,
                       invalid_share=round(guard.ratio, 3), limit=settings.max_invalid_ratio,
                       window=settings.invalid_window,
                       cause="most recent input events are invalid: check the producers upstream (a bad deploy?); "
                             "the invalid ones are in the DLQ with reasons; raise DG_MAX_INVALID_RATIO to go on")
            for store in stores:
                await store.flush()
        except Exception as exc:
            _fatal("delivering a batch's outputs", exc)
        if outbox.accepted:
            metrics.event_accepted(outbox.accepted)
            outbox.accepted = 0

    async def run_batches(stream: faust.StreamT, handle: Callable[[Outbox, Any], None],
                          stores: tuple[BatchStore, ...]) -> None:
        # take_events acks the batch's events only after this loop body: outputs, then state, then ack
        async for events in stream.take_events(BATCH_MAX, within=BATCH_WITHIN_S):  # type: ignore[attr-defined]
            await process_batch([e.message for e in events], handle, stores)

    # policy state is written before account state: after a crash between the two, the replayed events
    # find their findings already decided (no output changes); the other order would apply no event twice
    # but leave the policy unaware of alerts it had sent, to send their ids again with other contents
    account_stores = (policy, accounts)

    @app.agent(account_in, concurrency=1)
    async def account_agent(stream: faust.StreamT) -> None:
        await run_batches(stream, account_message, account_stores)

    @app.agent(link_topic, concurrency=1)
    async def link_agent(stream: faust.StreamT) -> None:
        await run_batches(stream, link_message, (links,))

    @app.agent(signals_topic, concurrency=1)
    async def campaign_agent(stream: faust.StreamT) -> None:
        await run_batches(stream, campaign_message, (campaigns,))

    watched = {settings.topic(n) for n in ("usage-events", "link-updates", "findings", "analyst-verdicts",
                                               "campaign-signals")}
    metrics.track_readiness(lambda: worker_ready(app) and not watchdog.stalled())

    @app.page("/ready/")
    async def ready(web: Any, request: Any) -> Any:
        """Readiness for a health check: 200 while the worker processes its input (``worker_ready``) and
        has not stalled (input waiting, no batch for ``stall.STALL_AFTER_S``), else 503. A stuck event loop
        does not answer at all, which a health check counts as a failure too."""
        stalled = watchdog.stalled()
        ok = worker_ready(app) and not stalled
        return web.json({"ready": ok, "stalled": stalled, "waiting_events": watchdog.waiting},
                        status=200 if ok else 503)

    def log_flow_state(event: str, **info: Any) -> None:
        log.warning(event, **info, **stall.snapshot(app, watched))

    @app.task
    async def on_usr1_log_flow_state() -> None:
        with contextlib.suppress(NotImplementedError, RuntimeError):  # no signals on this platform/thread
            asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, log_flow_state, "flow_state")

    @app.timer(STATS_INTERVAL_S)
    async def report_stats() -> None:
        consumer = app.consumer
        waiting = 0
        for tp in list(consumer.assignment()):
            if tp.topic not in watched:
                continue
            try:
                high = consumer.highwater(tp)
                read = getattr(consumer, "_read_offset", {}).get(tp)  # Faust keeps no public read offset
            except Exception:  # not yet known right after a rebalance
                continue
            if high is not None:
                lag = max(0, high - (read + 1 if read is not None else 0))
                metrics.set_lag(tp.topic, tp.partition, lag)
                committed = getattr(consumer, "_committed_offset", {}).get(tp)
                waiting += max(lag, high - (committed or 0))  # read but not yet committed counts too
        idle = watchdog.stalled_for(waiting, busy=app.rebalancing or getattr(app, "in_recovery", False))
        if idle is not None:
            log_flow_state("worker_stalled", idle_s=round(idle, 1), waiting_events=waiting,
                           hint="input is waiting but no batch ran; the state below says where the flow stops")
        n_accounts, size = table_stats(account_table)
        n_links, link_size = table_stats(link_table)
        metrics.set_state(n_accounts, (size or 0) + (link_size or 0), n_links)
        metrics.set_rocksdb_memory(rocksdb_memory([account_table, policy_table, link_table]))

    idle_ms = int(settings.idle_expiry_hours * 3_600_000)
    verdict_window_ms = int(engine.cfg.verdict_ttl_hours * 3_600_000)

    def policy_last_ts(raw: bytes) -> int:
        """When a policy state was last of use, in event time: its latest finding, the last moment a verdict
        may still name one of its alerts (``verdict_ttl_hours`` after it), or the end of a verdict that
        holds. The sweeper forgets it ``idle_expiry_hours`` after that, as it forgets idle accounts."""
        s = PolicyState.from_bytes(raw)
        return max(s.own.last_ts, s.campaign.last_ts, *(alert[3] + verdict_window_ms for alert in s.alerts),
                   *(verdict[1] for verdict in s.verdicts.values()))


    def standby_of(table: PartitionedTable) -> Callable[[], set[int]]:
        """The partitions of ``table`` this worker keeps as a standby replica (of another worker's)."""
        def standby() -> set[int]:
            name = table.changelog_topic.get_topic_name()
            return {tp.partition for tp in app.assignor.assigned_standbys() if tp.topic == name}
        return standby

    sweepers = [Sweeper(t, last, idle_ms, standby_of(t)) for t, last in (
        (account_table, AccountState.last_ts_of), (link_table, LinkGroup.now_of), (campaign_table, last_ts_of),
        (policy_table, policy_last_ts))]

    @app.timer(SWEEP_INTERVAL_S)
    async def expire_idle_state() -> None:
        for sweeper in sweepers:
            n = await sweeper.sweep(watermark.value)
            if n:
                log.info("expired_idle_state", table=sweeper.table.name, keys=n, watermark=watermark.value,
                         idle_hours=settings.idle_expiry_hours)
            await asyncio.sleep(0)

    last_contact = [time.monotonic()]

    @app.timer(WATCHDOG_INTERVAL_S)
    async def broker_watchdog() -> None:
        # a logged-in metadata request (pipeline/kafka/probe.py), not an open port: a broker that refuses
        # the worker's login, or a stranger on the port, is no broker
        answer = await broker_probe.probe(settings, timeout=3.0)
        if answer.ok:
            last_contact[0] = time.monotonic()
            return
        silent = time.monotonic() - last_contact[0]
        log.warning("kafka_unreachable", bootstrap=settings.bootstrap, reason=answer.reason,
                    seconds=round(silent, 1), limit=settings.broker_timeout_s)
        if silent > settings.broker_timeout_s:
            cause = ("the brokers refuse the worker's login: check DG_SASL_USERNAME, DG_SASL_PASSWORD and the "
                     "cluster's SCRAM users" if answer.login_refused
                     else "no broker answered; check the cluster and DG_BOOTSTRAP")
            _fatal("Kafka unreachable", None, EXIT_BROKER_GONE, bootstrap=settings.bootstrap, reason=answer.reason,
                   seconds=round(silent, 1), cause=f"{cause}, then restart the worker (it resumes from its last "
                   "committed offsets)")

    app.dg_parts = {  # type: ignore[attr-defined]  # handles for tests and tools
        "account_in": account_in, "link_topic": link_topic, "findings_topic": findings_topic,
        "signals_topic": signals_topic,
        "dlq_topic": dlq_topic, "outputs": out_topics, "engine": engine, "wire": wire,
        "tables": {"account-state": account_table, "policy-state": policy_table, "link-state": link_table,
                   "campaign-state": campaign_table},
        "sweepers": sweepers, "watermark": watermark, "watchdog": watchdog, "ready_view": ready,
        "account_agent": account_agent, "link_agent": link_agent, "campaign_agent": campaign_agent,
        "account_batch": lambda msgs: process_batch(msgs, account_message, account_stores),
        "link_batch": lambda msgs: process_batch(msgs, link_message, (links,)),
        "campaign_batch": lambda msgs: process_batch(msgs, campaign_message, (campaigns,)),
    }
    return app
