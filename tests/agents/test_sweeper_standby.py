"""The idle-state sweeper deletes only in partitions this worker owns: a standby replica's changelog is
another worker's, and a tombstone from here would delete state under its feet (issue 20, item 8)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from pipeline.worker.tables import Sweeper


class _DB:
    """The slice of a RocksDB partition the sweeper reads: keys and values in key order."""

    def __init__(self, items: dict[bytes, bytes]) -> None:
        self._items = dict(sorted(items.items()))

    def items(self, from_key: bytes | None = None) -> Any:
        return iter([(k, v) for k, v in self._items.items() if from_key is None or k >= from_key])


def _table(partitions: dict[int, dict[bytes, bytes]], deleted: list[tuple[int, bytes]]) -> Any:
    async def put_many(items: list[tuple[int, bytes, bytes | None]]) -> None:
        deleted.extend((p, k) for p, k, v in items if v is None)

    return SimpleNamespace(data=SimpleNamespace(_dbs={p: _DB(kv) for p, kv in partitions.items()}),
                           put_many=put_many)


def _last_ts(raw: bytes) -> int:
    return int(raw)


def test_standby_partitions_are_never_swept_and_owned_ones_are() -> None:
    old, fresh = b"1000", b"999000"
    partitions = {p: {b"idle": old, b"busy": fresh} for p in (0, 1, 2)}
    deleted: list[tuple[int, bytes]] = []
    sweeper = Sweeper(_table(partitions, deleted), _last_ts, idle_ms=10_000, standby=lambda: {1})
    assert asyncio.run(sweeper.sweep(watermark=1_000_000)) == 2
    assert sorted(deleted) == [(0, b"idle"), (2, b"idle")]


def test_a_partition_that_becomes_owned_is_swept_from_then_on() -> None:
    deleted: list[tuple[int, bytes]] = []
    standby = {0}
    sweeper = Sweeper(_table({0: {b"idle": b"1"}}, deleted), _last_ts, idle_ms=10, standby=lambda: standby)
    assert asyncio.run(sweeper.sweep(watermark=1_000)) == 0
    standby.clear()  # a rebalance made this worker the owner
    assert asyncio.run(sweeper.sweep(watermark=1_000)) == 1 and deleted == [(0, b"idle")]
