"""Consumer-group lag: how many messages of a topic a group (a Faust app id) has not yet committed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.settings import Settings


def group_lag(bootstrap: str, group: str, topic: str, *, settings: Settings | None = None) -> int | None:
    """Sum over partitions of (end offset − committed offset); None when Kafka cannot say yet.

    With ``settings``, its bootstrap servers and TLS/SASL configuration are used instead of ``bootstrap``.
    """
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    from pipeline.kafka.config import kafka_python_config

    client: dict[str, Any] = kafka_python_config(settings) if settings is not None else {"bootstrap_servers": bootstrap}
    consumer: Any = None
    try:
        # A consumer with a group id that never subscribes does not join the group: it only fetches offsets.
        consumer = KafkaConsumer(**client, group_id=group, enable_auto_commit=False)
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            return None
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        ends = consumer.end_offsets(tps)
        lag = 0
        for tp in tps:
            committed = consumer.committed(tp)
            lag += ends[tp] - (committed or 0)
        return lag
    except KafkaError:
        return None
    finally:
        if consumer is not None:
            consumer.close()
