"""The streaming slice against a real Kafka: invalid events reach the DLQ intact, alerts are plain msgpack."""

from __future__ import annotations

import random
from collections import Counter

import msgpack
import pytest
from kafka import KafkaProducer

from pipeline.contract.schemas import validator
from pipeline.kafka import admin as topics
from pipeline.worker.outbox import DLQ_OFFSET, DLQ_PARTITION, DLQ_REASON, DLQ_TOPIC
from tests import factories
from tests.integration.workers import Worker, read_topic

pytestmark = pytest.mark.integration


def test_10k_events_with_100_malformed(kafka_bootstrap, make_settings, tmp_path):
    """Exactly the 100 malformed messages land in the DLQ with their bytes and a reason; alerts validate."""
    settings = make_settings(bootstrap=kafka_bootstrap)
    topics.create_topics(settings)
    rng = random.Random(7)
    valid = iter(factories.harvester_and_noise(9_900))
    bad_at = set(rng.sample(range(10_000), 100))
    sent_bad: dict[bytes, bytes] = {}
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=20)
    for n in range(10_000):
        if n in bad_at:
            key = f"bad-{n}".encode()
            value = factories.malformed(len(sent_bad), rng)
            sent_bad[key] = value
        else:
            ev = next(valid)
            key, value = ev["account_id"].encode(), msgpack.packb(ev)
        producer.send(settings.topic("usage-events"), key=key, value=value)
    producer.flush()
    producer.close()

    worker = Worker(settings, tmp_path / "worker.log")
    try:
        dlq = read_topic(kafka_bootstrap, settings.topic("usage-events-dlq"),
                         until=lambda ms: len(ms) >= 100, timeout=180, workers=[worker])
        alerts = read_topic(kafka_bootstrap, settings.topic("anomaly-alerts"),
                            until=lambda ms: len(ms) >= 3, timeout=60, workers=[worker])
        # nothing more than the 100 arrives once the worker has gone through everything
        extra = read_topic(kafka_bootstrap, settings.topic("usage-events-dlq"),
                           until=lambda ms: len(ms) > 100, timeout=10, workers=[worker])
    finally:
        worker.stop()

    assert len(extra) == 100
    assert {m.key: m.value for m in dlq} == sent_bad
    kinds: Counter[str] = Counter()
    for m in dlq:
        headers = dict(m.headers)
        assert headers[DLQ_TOPIC].decode() == settings.topic("usage-events")
        assert int(headers[DLQ_PARTITION]) == m.partition or int(headers[DLQ_PARTITION]) >= 0
        assert int(headers[DLQ_OFFSET]) >= 0
        reason = headers[DLQ_REASON].decode()
        assert reason
        kinds[reason.split(":")[0]] += 1
    assert len(kinds) >= 8, f"expected many distinct reasons, got {kinds}"

    schema = validator("anomaly_alert", 2)
    severities = []
    for m in alerts:
        value = msgpack.unpackb(m.value, raw=False)  # plain msgpack: no framework metadata
        assert isinstance(value, dict)
        schema.validate(value)
        assert value["account_id"] == "harvester" and m.key == b"harvester"
        severities.append(value["severity"])
    assert severities == ["medium", "high", "critical"]
