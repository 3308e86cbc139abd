"""Hostile input against a worker on a real Kafka (issue 20, attacks 1, 3 and 4): a 999,900-byte message,
an event of a campaign member far in the future and one on another partition go to the DLQ, and the
worker goes on to flag the same accounts as the backtest of the real events; ``/ready/`` says ready."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

import msgpack
import pytest

from pipeline.contract.admission import TS_IN_FUTURE, WRONG_PARTITION
from pipeline.detection.partition import partition_for
from pipeline.kafka import admin as topics
from pipeline.simulate import generate
from pipeline.worker.outbox import DLQ_REASON
from tests.integration.test_streaming import backtest_flags, outputs, streamed_flags
from tests.integration.workers import Worker, produce_events, read_topic, wait_until_idle

pytestmark = pytest.mark.integration


def _ready(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready/", timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def test_a_huge_a_far_future_and_a_misplaced_message_go_to_the_dlq_and_the_worker_goes_on(
        kafka_bootstrap, make_settings, tmp_path):
    from kafka import KafkaProducer

    settings = make_settings(bootstrap=kafka_bootstrap)
    topics.create_topics(settings)
    sim = generate("tiny", 2)
    expected = backtest_flags(settings, sim.events)
    victim = sorted(expected)[0]
    real = next(e for e in sim.events if e["account_id"] == victim)
    n_parts = settings.input_partitions
    topic = settings.topic("usage-events")
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    try:
        producer.send(topic, key=b"huge", value=b"{" + b" " * 999_898 + b"}")
        producer.send(topic, key=victim.encode(), value=msgpack.packb({**real, "event_id": "forged-future",
                                                                         "ts": 2**53 - 1}))
        producer.send(topic, key=victim.encode(), value=msgpack.packb({**real, "event_id": "forged-elsewhere"}),
                      partition=(partition_for(victim, n_parts) + 1) % n_parts)
        producer.flush()
    finally:
        producer.close()
    produce_events(settings, sim.events)
    worker = Worker(settings, tmp_path / "worker.log")
    try:
        deadline = time.monotonic() + 120
        while _ready(settings.web_port) != 200:
            assert time.monotonic() < deadline and worker.alive(), worker.log_tail()
            time.sleep(0.5)
        wait_until_idle(settings, [worker])
        dlq = read_topic(kafka_bootstrap, settings.topic("usage-events-dlq"), until=lambda ms: len(ms) >= 3,
                         timeout=60, workers=[worker])
        assert worker.alive(), worker.log_tail()
        assert _ready(settings.web_port) == 200
    finally:
        worker.stop()
    reasons = sorted(dict(m.headers)[DLQ_REASON].decode() for m in dlq)
    assert reasons[0].startswith("message too large") and reasons[1:] == sorted([TS_IN_FUTURE, WRONG_PARTITION])
    alerts, actions = outputs(settings)
    assert victim in streamed_flags(alerts, actions)
    assert streamed_flags(alerts, actions) == expected
