"""Read a manifest topic's messages without a consumer group: the shared part of ``tail`` and
``check-partitioning``.

The topic is named as in the manifest (``schemas/topics.json``) and gets the configured prefix, like
everywhere else; the client is configured by :mod:`pipeline.kafka.config`, so TLS and SASL apply. No
group, no commits: reading never moves the worker's offsets.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.settings import Settings

__all__ = ["Start", "TopicReadError", "manifest_topic", "open_consumer", "read"]

STALL_S = 15.0
"""How long a bounded read waits for a partition that has not reached its end before giving up."""


class TopicReadError(Exception):
    """The topic cannot be read: ``service`` is true when Kafka could not be reached."""

    def __init__(self, message: str, *, service: bool = False) -> None:
        super().__init__(message)
        self.service = service


def manifest_topic(settings: Settings, name: str) -> tuple[str, dict[str, Any]]:
    """The full topic name (with the prefix) and manifest entry of a manifest topic name."""
    from pipeline.contract.manifest import load_manifest

    manifest = load_manifest()
    if name not in manifest:
        hint = ""
        if settings.topic_prefix and name.startswith(settings.topic_prefix):
            hint = f" (give the name without the prefix {settings.topic_prefix!r}: it is added)"
        raise TopicReadError(f"unknown topic {name!r}{hint}: one of {', '.join(manifest)}")
    return settings.topic(name), manifest[name]


def open_consumer(settings: Settings, purpose: str) -> Any:
    """A kafka-python consumer with no group (nothing is committed), the settings' TLS/SASL, and no topic
    creation as a side effect of looking (a broker with ``auto.create.topics.enable`` would otherwise
    create a mistyped prefix's topic)."""
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    from pipeline.kafka.config import KafkaConfigError, kafka_python_config

    try:
        return KafkaConsumer(**kafka_python_config(settings), group_id=None, enable_auto_commit=False,
                             allow_auto_create_topics=False, client_id=f"{settings.app_id}-{purpose}")
    except KafkaConfigError as exc:
        raise TopicReadError(str(exc)) from exc
    except KafkaError as exc:
        raise TopicReadError(f"cannot reach Kafka at {settings.bootstrap}: {exc}", service=True) from exc


@dataclass(frozen=True)
class Start:
    """Where to start each partition: at a message timestamp (epoch ms, ``at_ms``), at the last ``last``
    messages of each partition, or (both None) at the beginning."""

    at_ms: int | None = None
    last: int | None = None


def partitions(consumer: Any, topic: str, bootstrap: str) -> list[Any]:
    """The topic's partitions on the cluster (TopicPartition objects, in partition order)."""
    from kafka import TopicPartition

    parts = consumer.partitions_for_topic(topic)
    if not parts:
        raise TopicReadError(f"topic {topic!r} does not exist on {bootstrap} (create it with 'topics create')")
    return [TopicPartition(topic, p) for p in sorted(parts)]


def _starts(consumer: Any, tps: list[Any], start: Start, ends: Mapping[Any, int]) -> dict[Any, int]:
    first = consumer.beginning_offsets(tps)
    if start.at_ms is not None:
        found = consumer.offsets_for_times({tp: start.at_ms for tp in tps})
        return {tp: (found[tp].offset if found.get(tp) is not None else ends[tp]) for tp in tps}
    if start.last is not None:
        return {tp: max(first[tp], ends[tp] - start.last) for tp in tps}
    return dict(first)


def read(consumer: Any, topic: str, start: Start, *, follow: bool, bootstrap: str,
         n_partitions: list[int] | None = None) -> Iterator[Any]:
    """The topic's messages (kafka-python ``ConsumerRecord``) from ``start``, partition by partition as
    they arrive; up to each partition's end at the time of the call, or, with ``follow``, until the
    caller stops. ``n_partitions``, when given, receives the topic's partition count."""
    from kafka.errors import KafkaError

    try:
        tps = partitions(consumer, topic, bootstrap)
        if n_partitions is not None:
            n_partitions.append(len(tps))
        ends = consumer.end_offsets(tps)
        starts = _starts(consumer, tps, start, ends)
        todo = set(tps) if follow else {tp for tp in tps if starts[tp] < ends[tp]}
        consumer.assign(sorted(todo, key=lambda tp: tp.partition))
        for tp in todo:
            consumer.seek(tp, starts[tp])
        quiet_since = time.monotonic()
        while todo:
            batch = consumer.poll(timeout_ms=1000)
            if not batch:
                if not follow and time.monotonic() - quiet_since > STALL_S:
                    raise TopicReadError(f"reading {topic} stalled before the end of partitions "
                                         f"{sorted(tp.partition for tp in todo)}", service=True)
                continue
            quiet_since = time.monotonic()
            for tp, msgs in sorted(batch.items(), key=lambda kv: kv[0].partition):
                for m in msgs:
                    if follow or m.offset < ends[tp]:
                        yield m
            if not follow:  # by position, not by the last offset seen: transaction markers take offsets too
                for tp in [tp for tp in todo if consumer.position(tp) >= ends[tp]]:
                    todo.discard(tp)
                    consumer.pause(tp)
    except KafkaError as exc:
        raise TopicReadError(f"cannot read {topic} on {bootstrap}: {exc}", service=True) from exc
