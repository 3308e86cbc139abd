"""Read a stored topic's time range for a backtest: isolated (no consumer group, no commits), ordered.

Partitions are merged in (message timestamp, partition, offset) order, so the same stored range always
replays in the same order. ``--from``/``--to`` select by the Kafka message timestamp (when the event was
written to Kafka), which in live operation trails event time by moments. A message the worker would send
to the DLQ for where or when it is (``wrong_partition``, ``ts_in_future``) is a bad record here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from pipeline.contract import admission, codec
from pipeline.contract.eventfile import BadRecord
from pipeline.contract.models import UsageEvent
from pipeline.detection.partition import partition_for
from pipeline.settings import Settings


class ReplayError(Exception):
    """The topic cannot be read (missing, unreachable) or the range is wrong."""


def parse_time(text: str) -> int:
    """Epoch milliseconds from ``1772409600000``, ``2026-03-02`` or ``2026-03-02T06:00:00Z``."""
    t = text.strip()
    if t.isdigit():
        return int(t)
    try:
        dt = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise ReplayError(
            f"not a time: {text!r} (use epoch milliseconds or ISO 8601, e.g. 2026-03-02T06:00:00Z)"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def read_range(settings: Settings, topic: str, start_ms: int | None, end_ms: int | None,
               on_bad: Callable[[BadRecord], None]) -> Iterator[UsageEvent]:
    """Valid events of ``topic`` with message timestamps in [start_ms, end_ms), merged across partitions."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    from pipeline.kafka.config import kafka_python_config

    if start_ms is not None and end_ms is not None and end_ms <= start_ms:
        raise ReplayError(f"--to ({end_ms}) must be after --from ({start_ms})")
    try:
        consumer = KafkaConsumer(**kafka_python_config(settings), group_id=None, enable_auto_commit=False,
                                 consumer_timeout_ms=5000)
    except KafkaError as exc:
        raise ReplayError(f"cannot reach Kafka at {settings.bootstrap}: {exc}") from exc
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            raise ReplayError(f"topic {topic!r} does not exist on {settings.bootstrap}")
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        starts, ends = _offset_range(consumer, tps, start_ms, end_ms)
        rows = _read_rows(consumer, topic, tps, starts, ends)
    except KafkaError as exc:
        raise ReplayError(f"cannot read {topic} on {settings.bootstrap}: {exc}") from exc
    finally:
        consumer.close()
    rows.sort(key=lambda r: (r[0], r[1], r[2]))
    n_parts = len(tps)
    for timestamp, partition, offset, value in rows:
        where = f"partition {partition} offset {offset}"
        try:
            ev = codec.decode_event(value, max_bytes=settings.max_message_bytes)
        except codec.CodecError as exc:
            on_bad(BadRecord(topic, where, exc.reason, value or b""))
            continue
        # the worker's checks on the message around the event (pipeline/worker/stages.py, AccountStage), in the same order
        if partition_for(ev["account_id"], n_parts) != partition:
            on_bad(BadRecord(topic, where, admission.WRONG_PARTITION, value))
        elif admission.in_future(ev["ts"], timestamp, settings.max_event_skew_ms):
            on_bad(BadRecord(topic, where, admission.TS_IN_FUTURE, value))
        else:
            yield ev


def _offset_range(consumer: Any, tps: list[Any], start_ms: int | None,
                  end_ms: int | None) -> tuple[dict[Any, int], dict[Any, int]]:
    """Per partition, the first offset at or after ``start_ms`` and the first at or after ``end_ms`` (the
    partition's beginning and end when not given; its end when no message is that late)."""
    ends = consumer.end_offsets(tps)
    starts = consumer.beginning_offsets(tps)
    if start_ms is not None:
        found = consumer.offsets_for_times({tp: start_ms for tp in tps})
        starts = {tp: (found[tp].offset if found[tp] is not None else ends[tp]) for tp in tps}
    if end_ms is not None:
        found = consumer.offsets_for_times({tp: end_ms for tp in tps})
        ends = {tp: (found[tp].offset if found[tp] is not None else ends[tp]) for tp in tps}
    return starts, ends


def _read_rows(consumer: Any, topic: str, tps: list[Any], starts: dict[Any, int],
               ends: dict[Any, int]) -> list[tuple[int, int, int, Any]]:
    """Every message in [start, end) of each partition as (timestamp, partition, offset, value), unsorted."""
    todo = {tp for tp in tps if starts[tp] < ends[tp]}
    consumer.assign(list(todo))
    for tp in todo:
        consumer.seek(tp, starts[tp])
    rows: list[tuple[int, int, int, Any]] = []
    while todo:
        batch = consumer.poll(timeout_ms=2000)
        if not batch:
            raise ReplayError(f"reading {topic} stalled before the end of the range")
        for tp, msgs in batch.items():
            for m in msgs:
                if m.offset < ends[tp]:
                    rows.append((m.timestamp, m.partition, m.offset, m.value))
            if msgs and msgs[-1].offset + 1 >= ends[tp]:
                todo.discard(tp)
                consumer.pause(tp)
    return rows
