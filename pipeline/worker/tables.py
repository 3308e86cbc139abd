"""The worker's tables: written in batches, changelog first; their recovery; and the sweeper of idle state.

``PartitionedTable`` is a Faust table the stages write through ``put_many`` (changelog records
acknowledged before the local store is written); ``TableManager`` gives the app ``SeekFirstRecovery``;
``Sweeper`` deletes state idle for longer than the settings allow; ``table_stats`` and
``rocksdb_memory`` read RocksDB's own estimates for the metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, Protocol

import faust
from faust.streams import _current_event
from faust.tables.recovery import Recovery

from pipeline.worker.outbox import Wire

SWEEP_CHUNK = 20_000
ROCKSDB_OPTIONS = {"write_buffer_size": 4 << 20, "max_write_buffer_number": 2, "block_cache_size": 4 << 20}
"""RocksDB per table partition: small write buffers and block cache instead of Faust's 64 MiB x 3 buffers
and 2 GiB cache, so worker memory stays flat as the number of accounts grows. Each table has a database
per partition, each with at most 12 MiB of write buffers and block cache; recently used state is kept
decoded in the stages' ``StateCache``s, so the block cache serves only the rest."""
ROCKSDB_MEMORY = {"memtables": "rocksdb.size-all-mem-tables",
                  "table_readers": "rocksdb.estimate-table-readers-mem",
                  "block_cache": "rocksdb.block-cache-usage"}
"""RocksDB's memory estimates, by the component name of ``dg_rocksdb_memory_bytes``."""


class Cache(Protocol):
    """What a table asks of a cache of its decoded state (``pipeline.worker.state.StateCache``)."""

    def pop(self, key: str) -> bool: ...

    def clear(self) -> None: ...


class _PartitionOnly:
    """Stands in for Faust's current event where only its partition matters (table and store writes)."""

    __slots__ = ("message", "__weakref__")

    def __init__(self, partition: int) -> None:
        self.message = SimpleNamespace(partition=partition)


class PartitionedTable(faust.Table):
    """A table written in batches with explicit partitions, changelog first.

    Faust's own ``table[key] = value`` writes the local RocksDB at once and the changelog later: a
    SIGKILL in between leaves the local store ahead of the changelog, and a restarted worker on the same
    disk would then skip a redelivered event whose effect the changelog never got. ``put_many`` sends the
    changelog records, waits until Kafka has them, writes the local store, and then records the changelog
    offset it has reached per partition (what Faust's recovery resumes from on the same disk).
    """

    wire: Wire
    caches: list[Cache]

    @classmethod
    def add_to(cls, app: faust.App, name: str, wire: Wire, partitions: int, rocksdb: bool) -> PartitionedTable:
        """A new table ``name`` of ``app`` (with ``ROCKSDB_OPTIONS`` on RocksDB), written through ``wire``."""
        options = dict(ROCKSDB_OPTIONS) if rocksdb else None
        table = cls(app, name=name, default=None, key_type=bytes, value_type=bytes, partitions=partitions,
                    options=options)
        table.wire = wire
        table.caches = []
        app.tables.add(table)
        return table

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
        for partition, key, value in items:
            if value is None:
                for cache in self.caches:
                    cache.pop(key.decode("utf-8"))
            self._write_local(partition, key, value)
        persisted: dict[Any, int] = {}
        for res in results:
            tp = getattr(res, "topic_partition", None)
            if tp is not None and res.offset > persisted.get(tp, -1):
                persisted[tp] = res.offset
        for tp, offset in persisted.items():
            self.data.set_persisted_offset(tp, offset)

    def _write_local(self, partition: int, key: bytes, value: bytes | None) -> None:
        """Write one item to the local store of ``partition`` (value ``None``: delete it)."""
        db = self._rocksdb(partition)
        if db is not None:  # straight into the partition's database
            if value is None:
                db.delete(key)
            else:
                db.put(key, value)
            return
        store = self.data
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


def standby_of(app: faust.App, table: PartitionedTable) -> Callable[[], set[int]]:
    """The partitions of ``table`` this worker keeps as a standby replica (of another worker's)."""
    def standby() -> set[int]:
        name = table.changelog_topic.get_topic_name()
        return {tp.partition for tp in app.assignor.assigned_standbys() if tp.topic == name}
    return standby


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
