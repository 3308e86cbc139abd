"""Operations against a running worker on real Kafka: the metrics endpoint, the invalid-input breaker."""

from __future__ import annotations

import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pipeline.kafka import admin as topics
from pipeline.simulate import generate
from pipeline.worker.exits import EXIT_INVALID_FLOOD
from tests.integration.workers import Worker, produce_events, wait_until_idle

pytestmark = pytest.mark.integration


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_endpoint_of_a_running_worker_moves_with_the_stream(kafka_bootstrap, make_settings, tmp_path):
    settings = make_settings(bootstrap=kafka_bootstrap)
    topics.create_topics(settings)
    worker = Worker(settings, tmp_path / "worker.log")
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                before = scrape(settings.metrics_port)
                break
            except OSError:
                assert time.monotonic() < deadline and worker.alive(), worker.log_tail()
                time.sleep(0.5)
        assert value(before, "dg_events_total", result="accepted") == 0
        readiness = [value(before, "dg_worker_ready")]
        while readiness[-1] != 1.0:  # partitions assigned, tables recovered, input flowing
            assert time.monotonic() < deadline + 60 and worker.alive(), (readiness, worker.log_tail())
            time.sleep(0.5)
            readiness.append(value(scrape(settings.metrics_port), "dg_worker_ready"))
        sim = generate("tiny", 3)
        produce_events(settings, sim.events)
        wait_until_idle(settings, [worker])
        time.sleep(11)  # one stats interval: lag and state gauges
        after = scrape(settings.metrics_port)
    finally:
        worker.stop()
    assert value(after, "dg_events_total", result="accepted") == len(sim.events)
    assert sum(v for (name, _), v in after.items() if name == "dg_alerts_total") > 0
    assert sum(v for (name, _), v in after.items() if name == "dg_actions_total") > 0
    assert value(after, "dg_processing_seconds_count") > 0
    assert value(after, "dg_event_to_alert_seconds_count") > 0
    lags = [v for (name, labels), v in after.items() if name == "dg_consumer_lag"]
    assert lags and all(v == 0 for v in lags)
    assert value(after, "dg_state_accounts") > 0
    assert value(after, "dg_worker_ready") == 1.0


def test_worker_stops_with_a_clear_error_when_most_input_is_invalid(kafka_bootstrap, make_settings, tmp_path):
    settings = make_settings(bootstrap=kafka_bootstrap, invalid_window=200, max_invalid_ratio=0.5)
    topics.create_topics(settings)
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    for i in range(2_000):
        producer.send(settings.topic("usage-events"), key=b"k", value=b"not an event %d" % i)
    producer.flush()
    producer.close()
    worker = Worker(settings, tmp_path / "worker.log")
    try:
        worker.proc.wait(timeout=120)
    finally:
        worker.stop()
    assert worker.proc.returncode == EXIT_INVALID_FLOOD
    log = (tmp_path / "worker.log").read_text()
    assert "too much invalid input" in log and "DG_MAX_INVALID_RATIO" in log
