"""The worker's Prometheus metrics: names in one list, series that move with the calls, a real scrape."""

from __future__ import annotations

import re
import socket
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pipeline.settings import Settings
from pipeline.worker.observability import (
    METRIC_NAMES,
    METRICS,
    REASON_KINDS,
    WorkerMetrics,
    reason_kind,
    start_metrics_server,
)


def _samples(m: WorkerMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition text, parsed the way Prometheus would, by (name, labels)."""
    out = {}
    for family in text_string_to_metric_families(m.exposition().decode("utf-8")):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _families(text: str) -> dict[str, str]:
    return {f.name: f.type for f in text_string_to_metric_families(text)}


def test_metric_names_follow_prometheus_conventions() -> None:
    assert len(set(METRIC_NAMES)) == len(METRIC_NAMES)
    for spec in METRICS:
        assert re.fullmatch(r"dg_[a-z][a-z0-9_]*", spec.name), spec.name
        assert spec.kind in ("counter", "gauge", "histogram")
        assert spec.name.endswith("_total") == (spec.kind == "counter"), spec.name
        assert spec.help
    for required in ("dg_events_total", "dg_dlq_messages_total", "dg_alerts_total", "dg_actions_total",
                     "dg_processing_seconds", "dg_event_to_alert_seconds", "dg_consumer_lag",
                     "dg_state_accounts", "dg_state_bytes", "dg_link_keys"):
        assert required in METRIC_NAMES


def test_every_listed_metric_is_exposed_with_its_type() -> None:
    families = _families(WorkerMetrics().exposition().decode("utf-8"))
    for spec in METRICS:
        assert families.get(spec.family) == spec.kind, spec.name
    exposed = {name for name in families if not name.endswith("_created")}
    assert exposed == {spec.family for spec in METRICS}, "a metric exists that is not in METRICS"


def test_event_counters_move_by_result_and_dlq_counts_reason_kinds() -> None:
    m = WorkerMetrics()
    before = _samples(m)
    assert before[("dg_events_total", (("result", "accepted"),))] == 0.0  # exposed before the first event
    m.event_accepted()
    m.event_accepted(4)
    m.event_duplicate()
    m.event_invalid("missing required field: ts")
    m.event_invalid("not msgpack or JSON: invalid msgpack: unpack(b) received extra data.")
    m.event_invalid("input_tokens: expected int >= 0, got -3")
    after = _samples(m)
    assert after[("dg_events_total", (("result", "accepted"),))] == 5.0
    assert after[("dg_events_total", (("result", "duplicate"),))] == 1.0
    assert after[("dg_events_total", (("result", "invalid"),))] == 3.0
    for kind in ("missing_field", "not_decodable", "invalid_field"):
        assert after[("dg_dlq_messages_total", (("reason_kind", kind),))] == 1.0


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("message too large: 70000 bytes > limit 65536", "oversized"),
        ("not msgpack or JSON: empty message", "empty"),
        ("expected bytes, got null (empty message)", "empty"),
        ("not msgpack or JSON: invalid JSON: Expecting value", "not_decodable"),
        ("expected a map, got list", "not_a_map"),
        ("expected a msgpack map, got JSON", "not_a_map"),
        ("missing required field: account_id", "missing_field"),
        ("status: expected ok|error|rate_limited|refused, got 'weird'", "invalid_field"),
        ("detection raised ZeroDivisionError", "other"),
        ("ts_in_future", "ts_in_future"),
        ("wrong_partition", "wrong_partition"),
        ("oversized", "oversized"),
    ],
)
def test_reason_kind_keeps_the_label_bounded(reason: str, kind: str) -> None:
    assert reason_kind(reason) == kind
    assert kind in REASON_KINDS


def test_alerts_actions_and_event_to_alert_latency_from_the_clock() -> None:
    m = WorkerMetrics(clock=lambda: 1_000.0)
    m.alert("high", "account_behaviour", event_ts_ms=997_500)  # 2.5 s after the event
    m.alert("critical", "coordinated_campaign")  # no event time: counted, no latency observed
    m.action("throttle", "shadow")
    m.action("throttle", "shadow")
    s = _samples(m)
    assert s[("dg_alerts_total", (("kind", "account_behaviour"), ("severity", "high")))] == 1.0
    assert s[("dg_alerts_total", (("kind", "coordinated_campaign"), ("severity", "critical")))] == 1.0
    assert s[("dg_actions_total", (("action", "throttle"), ("mode", "shadow")))] == 2.0
    assert s[("dg_event_to_alert_seconds_count", ())] == 1.0
    assert s[("dg_event_to_alert_seconds_sum", ())] == 2.5
    assert s[("dg_event_to_alert_seconds_bucket", (("le", "1.0"),))] == 0.0
    assert s[("dg_event_to_alert_seconds_bucket", (("le", "5.0"),))] == 1.0


def test_processing_histogram_and_gauges() -> None:
    m = WorkerMetrics()
    for seconds in (0.0002, 0.003, 0.2):
        m.observe_processing(seconds)
    m.set_lag("usage-events", 0, 120)
    m.set_lag("usage-events", 1, 7)
    m.set_lag("usage-events", 1, 3)
    m.set_state(accounts=42, size_bytes=12_345, link_keys=9)
    m.set_rocksdb_memory({"memtables": 4096, "block_cache": 512})
    s = _samples(m)
    assert s[("dg_processing_seconds_count", ())] == 3.0
    assert s[("dg_processing_seconds_bucket", (("le", "0.005"),))] == 2.0
    assert s[("dg_processing_seconds_bucket", (("le", "+Inf"),))] == 3.0
    assert s[("dg_consumer_lag", (("partition", "0"), ("topic", "usage-events")))] == 120.0
    assert s[("dg_consumer_lag", (("partition", "1"), ("topic", "usage-events")))] == 3.0
    assert s[("dg_state_accounts", ())] == 42.0
    assert s[("dg_state_bytes", ())] == 12_345.0
    assert s[("dg_link_keys", ())] == 9.0
    assert s[("dg_rocksdb_memory_bytes", (("component", "memtables"),))] == 4096.0
    assert s[("dg_rocksdb_memory_bytes", (("component", "block_cache"),))] == 512.0
    m.forget_partition("usage-events", 0)
    m.forget_partition("usage-events", 5)  # never set: no error
    assert ("dg_consumer_lag", (("partition", "0"), ("topic", "usage-events"))) not in _samples(m)


def test_registries_are_independent() -> None:
    a, b = WorkerMetrics(), WorkerMetrics()
    a.event_accepted(3)
    assert a.value("dg_events_total", result="accepted") == 3.0
    assert b.value("dg_events_total", result="accepted") == 0.0


def test_metrics_port_setting_defaults_to_9108_and_zero_turns_the_server_off() -> None:
    assert Settings().metrics_port == 9108
    assert start_metrics_server(0, "127.0.0.1", WorkerMetrics()) is None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_http_scrape_of_the_metrics_server_returns_parseable_text() -> None:
    m = WorkerMetrics()
    m.event_accepted(2)
    m.alert("medium", "account_behaviour")
    port = _free_port()
    server = start_metrics_server(port, "127.0.0.1", m)
    assert server is not None and server.port == port
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            text = response.read().decode("utf-8")
    finally:
        server.close()
    families = _families(text)
    assert {spec.family for spec in METRICS} <= set(families)
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value
              for f in text_string_to_metric_families(text) for s in f.samples}
    assert values[("dg_events_total", (("result", "accepted"),))] == 2.0
