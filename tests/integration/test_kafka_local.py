"""The local Apache Kafka broker: starts, reports its status, takes topics, serves both clients, stops."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.contract.manifest import load_manifest
from pipeline.kafka import admin as topics
from pipeline.kafka import local as kafka_local
from pipeline.settings import Settings
from tests.integration.workers import free_ports

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("java") is None or shutil.which("mvn") is None,
        reason="the local Kafka broker needs java and mvn on PATH",
    ),
]



@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    port, controller_port = free_ports(2)
    return Settings(
        kafka_port=port,
        kafka_controller_port=controller_port,
        kafka_data_dir=tmp_path_factory.mktemp("kafka"),
        bootstrap=f"127.0.0.1:{port}",
        topic_prefix=f"it-{uuid.uuid4().hex[:8]}-",
    )


@pytest.fixture(scope="module")
def broker(settings: Settings) -> Iterator[kafka_local.BrokerInfo]:
    info = kafka_local.start(settings, timeout=90.0)
    yield info
    kafka_local.stop(settings)


def test_start_runs_a_reachable_broker_on_the_configured_port(
    settings: Settings, broker: kafka_local.BrokerInfo
) -> None:
    assert broker.started
    assert broker.bootstrap == f"127.0.0.1:{settings.kafka_port}"
    state = kafka_local.status(settings)
    assert state.running and state.reachable
    assert state.pid == broker.pid
    assert state.version == "3.9.1"
    assert state.data_dir == Path(settings.kafka_data_dir).resolve()
    assert (state.data_dir / "server.log").stat().st_size > 0, "the broker logs to a file in its data dir"


def test_start_again_returns_the_running_broker_without_owning_it(
    settings: Settings, broker: kafka_local.BrokerInfo
) -> None:
    again = kafka_local.start(settings)
    assert not again.started
    assert (again.pid, again.bootstrap) == (broker.pid, broker.bootstrap)


def test_create_topics_creates_the_manifest_then_reports_exists(
    settings: Settings, broker: kafka_local.BrokerInfo
) -> None:
    manifest = load_manifest()
    first = topics.create_topics(settings)
    assert first == [(settings.topic(name), "created") for name in manifest]
    second = topics.create_topics(settings, ["usage-events"])
    assert second == [(settings.topic("usage-events"), "exists")]
    partitions = topics.describe(settings)
    assert partitions[settings.topic("usage-events")] == manifest["usage-events"]["partitions"]


def test_kafka_python_produces_and_consumes_a_message(
    settings: Settings, broker: kafka_local.BrokerInfo
) -> None:
    from kafka import KafkaConsumer, KafkaProducer

    topic = settings.topic("kafka-python-roundtrip")
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", enable_idempotence=True)
    try:
        producer.send(topic, key=b"acct-1", value=b"hello from kafka-python").get(timeout=30)
    finally:
        producer.close()
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=broker.bootstrap,
        group_id="it-kafka-python",
        auto_offset_reset="earliest",
        consumer_timeout_ms=20_000,
    )
    try:
        message = next(consumer, None)  # StopIteration after consumer_timeout_ms without a message
    finally:
        consumer.close()
    assert message is not None, "no message within 20 s"
    assert (message.key, message.value) == (b"acct-1", b"hello from kafka-python")


def test_aiokafka_produces_and_consumes_a_message(settings: Settings, broker: kafka_local.BrokerInfo) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    topic = settings.topic("usage-events")
    topics.create_topics(settings, ["usage-events"])

    async def roundtrip() -> tuple[bytes | None, bytes | None]:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", enable_idempotence=True)
        await producer.start()
        try:
            await producer.send_and_wait(topic, key=b"acct-2", value=b"hello from aiokafka")
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=broker.bootstrap, group_id="it-aiokafka", auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            message = await asyncio.wait_for(consumer.getone(), timeout=30)
        finally:
            await consumer.stop()
        return message.key, message.value

    assert asyncio.run(roundtrip()) == (b"acct-2", b"hello from aiokafka")


def test_stop_ends_the_broker_and_status_says_stopped(
    settings: Settings, broker: kafka_local.BrokerInfo
) -> None:
    assert kafka_local.stop(settings) is True
    state = kafka_local.status(settings)
    assert not state.running and not state.reachable and state.pid is None
    assert not (state.data_dir / "broker.pid").exists()
    assert kafka_local.stop(settings) is False, "stopping a stopped broker is a no-op"
