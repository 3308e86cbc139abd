"""The console's consumer: the pipeline's output topics (and, for the activity chart, its input) into the store.

It assigns itself every partition (no consumer group: the store is its only reader and keeps the offsets),
seeks each to the next offset the store recorded, and writes each polled batch in one transaction with
the offsets that follow it. A crash between two commits loses nothing (the batch is read again) and a
re-read changes nothing (alerts and actions are keyed by id, verdicts by topic, partition and offset).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import msgpack
import structlog

from pipeline.console import store
from pipeline.console.store import LIVE, Batch
from pipeline.settings import Settings

log = structlog.get_logger("pipeline.console")
HOUR_MS = 3_600_000
OUTPUTS = ("anomaly-alerts", "enforcement-actions", "analyst-verdicts")
EVENTS = "usage-events"
RETRY_S = 5.0


def decode(raw: bytes | None) -> dict[str, Any] | None:
    """A message value as a map (msgpack, or JSON on the input topics); None when it is not one."""
    if not raw:
        return None
    try:
        obj = json.loads(raw) if raw.lstrip()[:1] == b"{" else msgpack.unpackb(raw, raw=False)
    except Exception:  # noqa: BLE001 - a value we cannot read is skipped, its offset still moves on
        return None
    return obj if isinstance(obj, dict) else None


def hour_of(ts: Any) -> int | None:
    return ts // HOUR_MS if type(ts) is int and ts > 0 else None


class Applier:
    """Writes one polled batch of records (of any of the topics) into the store, with their offsets."""

    def __init__(self, conn: sqlite3.Connection, settings: Settings, source: str = LIVE) -> None:
        self.conn = conn
        self.source = source
        self.kinds = {settings.topic(name): name for name in (*OUTPUTS, EVENTS)}

    def apply(self, records: list[Any]) -> int:
        """Store ``records`` (kafka-python ConsumerRecords); returns how many rows were new."""
        new = 0
        activity: Counter[tuple[str, int]] = Counter()
        nexts: dict[tuple[str, int], int] = {}
        with Batch(self.conn) as batch:
            for rec in records:
                nexts[(rec.topic, rec.partition)] = max(nexts.get((rec.topic, rec.partition), 0), rec.offset + 1)
                new += self._one(batch, rec, activity)
            batch.activity(self.source, activity)
            for (topic, partition), nxt in nexts.items():
                batch.offset(topic, partition, nxt)
        return new

    def _one(self, batch: Batch, rec: Any, activity: Counter[tuple[str, int]]) -> int:
        kind, value = self.kinds.get(rec.topic), decode(rec.value)
        if value is None:
            return 0
        try:
            if kind == "anomaly-alerts":
                return int(batch.alert(self.source, value))
            if kind == "enforcement-actions":
                return int(batch.action(self.source, value))
            if kind == "analyst-verdicts":
                return int(batch.verdict(self.source, (rec.topic, rec.partition, rec.offset), value))
        except (KeyError, TypeError, sqlite3.IntegrityError) as exc:  # not one of ours: skipped, logged
            log.warning("console_skipped_record", topic=rec.topic, partition=rec.partition, offset=rec.offset,
                        error=type(exc).__name__)
            return 0
        hour = hour_of(value.get("ts"))
        if kind == EVENTS and hour is not None and isinstance(value.get("account_id"), str):
            activity[(value["account_id"], hour)] += 1
        return 0


def topic_names(settings: Settings, activity: bool) -> list[str]:
    return [settings.topic(n) for n in (*OUTPUTS, *((EVENTS,) if activity else ()))]


class Consumer:
    """Follows the topics into the store until :meth:`stop`; run it in a thread (:meth:`start`)."""

    def __init__(self, conn: sqlite3.Connection, settings: Settings, *, activity: bool = True,
                 on_batch: Callable[[int], None] | None = None, max_records: int = 2000,
                 source: str = LIVE) -> None:
        self.conn = conn
        self.max_records = max_records
        self.settings = settings
        self.topics = topic_names(settings, activity)
        self.applier = Applier(conn, settings, source)
        self.on_batch = on_batch
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="console-consumer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        """:meth:`run` until stopped; after a failure (Kafka unreachable, the store locked) it starts again
        from the stored offsets, and ``error`` (shown by ``/healthz``) holds the failure until a batch is
        stored again."""
        while not self._stop.is_set():
            try:
                self.run()
                return
            except Exception as exc:  # noqa: BLE001 - kept for the health endpoint, logged, retried
                self.error = exc
                log.error("console_consumer_failed", error=repr(exc), retry_in_s=RETRY_S)
                self._stop.wait(RETRY_S)

    def run(self, max_batches: int | None = None) -> None:
        """Poll and store until stopped (or for ``max_batches`` non-empty batches)."""
        consumer = self._consumer()
        try:
            assigned = self._assign(consumer)
            done = 0
            while not self._stop.is_set() and (max_batches is None or done < max_batches):
                if not assigned:  # no topic yet: the pipeline has not created them
                    self._stop.wait(1.0)
                    assigned = self._assign(consumer)
                    continue
                polled = consumer.poll(timeout_ms=500, max_records=self.max_records)
                records = [r for part in polled.values() for r in part]
                if records:
                    new = self.applier.apply(sorted(records, key=lambda r: (r.topic, r.partition, r.offset)))
                    done += 1
                    self.error = None
                    if self.on_batch is not None:
                        self.on_batch(new)
                elif assigned < len(self.topics):
                    assigned = self._assign(consumer)
        finally:
            consumer.close()

    def _consumer(self) -> Any:
        from kafka import KafkaConsumer

        from pipeline.kafka.config import kafka_python_config

        # no topic is created by looking for it (a broker may have auto.create.topics.enable on)
        return KafkaConsumer(**kafka_python_config(self.settings), enable_auto_commit=False, group_id=None,
                             allow_auto_create_topics=False, client_id="dg-console",
                             auto_offset_reset="earliest", max_partition_fetch_bytes=4 << 20)

    def _assign(self, consumer: Any) -> int:
        """Assign every partition of the topics that exist now, each at the store's next offset; returns
        how many topics were found (a topic created later is picked up on a later call)."""
        from kafka import TopicPartition

        tps = []
        for topic in self.topics:
            parts = consumer.partitions_for_topic(topic) or set()
            tps += [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return 0
        consumer.assign(tps)
        stored = store.offsets(self.conn)
        for tp in tps:
            if (tp.topic, tp.partition) in stored:
                consumer.seek(tp, stored[(tp.topic, tp.partition)])
            else:
                consumer.seek_to_beginning(tp)
        return len({tp.topic for tp in tps})


def wait_for(check: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return check()


def count_rows(conn: sqlite3.Connection, source: str = LIVE) -> Mapping[str, int]:
    return {t: conn.execute(f"SELECT count(*) FROM {t} WHERE source = ?", (source,)).fetchone()[0]
            for t in ("alerts", "actions", "verdicts")}
