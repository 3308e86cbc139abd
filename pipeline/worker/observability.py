"""Prometheus metrics of the worker: every metric name in one list, and the calls the worker makes.

The names follow Prometheus conventions: the ``dg_`` prefix, base units in the name (``_seconds``,
``_bytes``), ``_total`` on counters. Every label has a small, fixed set of values (a DLQ reason is
reduced to its kind by :func:`reason_kind`, never used verbatim), so the number of series stays bounded.

Each :class:`WorkerMetrics` owns its own :class:`~prometheus_client.CollectorRegistry` rather than the
library's global one, so tests can build as many as they like; :func:`start_metrics_server` serves one
registry over HTTP on its own port (``DG_METRICS_PORT``, 9108 by default; 0 turns it off).

>>> m = WorkerMetrics()
>>> m.event_accepted()
>>> m.value("dg_events_total", result="accepted")
1.0
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import start_http_server

__all__ = [
    "METRICS",
    "METRIC_NAMES",
    "REASON_KINDS",
    "MetricSpec",
    "MetricsServer",
    "WorkerMetrics",
    "default_metrics",
    "reason_kind",
    "start_metrics_server",
]

EVENT_RESULTS = ("accepted", "invalid", "duplicate", "late")
REASON_KINDS = ("empty", "oversized", "not_decodable", "not_a_map", "missing_field", "invalid_field",
                "ts_in_future", "wrong_partition", "other")

# Buckets: per-event or per-batch processing is sub-millisecond to seconds; event time to alert is
# seconds (live) to minutes (a lagging consumer).
PROCESSING_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                      2.5, 5.0)
EVENT_TO_ALERT_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)


@dataclass(frozen=True)
class MetricSpec:
    """One metric: exposed ``name`` (with ``_total`` for counters), type, help text and label names."""

    name: str
    kind: str  # counter | gauge | histogram
    help: str
    labels: tuple[str, ...] = ()

    @property
    def family(self) -> str:
        """The metric family name in a parsed exposition (a counter's family has no ``_total``)."""
        return self.name.removesuffix("_total") if self.kind == "counter" else self.name


#: Every metric the worker exposes. Dashboards and alert rules may rely on these names and labels.
METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("dg_build_info", "gauge", "Always 1; the labels name the running version",
               ("version", "detector_version")),
    MetricSpec("dg_events_total", "counter", "Input events by result: accepted, invalid (sent to the DLQ), duplicate",
               ("result",)),
    MetricSpec("dg_dlq_messages_total", "counter", "Messages sent to the dead-letter topic, by kind of reason",
               ("reason_kind",)),
    MetricSpec("dg_alerts_total", "counter", "Anomaly alerts emitted", ("severity", "kind")),
    MetricSpec("dg_actions_total", "counter", "Enforcement actions emitted", ("action", "mode")),
    MetricSpec("dg_processing_seconds", "histogram", "Wall-clock time to process one event or batch"),
    MetricSpec("dg_event_to_alert_seconds", "histogram",
               "Wall-clock emission time of an alert minus the event time of the event that triggered it"),
    MetricSpec("dg_consumer_lag", "gauge", "Messages not yet processed, per input partition", ("topic", "partition")),
    MetricSpec("dg_state_accounts", "gauge", "Accounts with detection state on this worker"),
    MetricSpec("dg_state_bytes", "gauge", "Serialised size of the detection state on this worker"),
    MetricSpec("dg_link_keys", "gauge", "Shared keys (payment, fingerprint, network) tracked for campaign linking"),
    MetricSpec("dg_order_held", "gauge",
               "Items held for event-time order, by stage: link updates until every usage-events partition has "
               "passed them, group signals until every link partition has; it stays up while a partition has no "
               "worker", ("stage",)),
    MetricSpec("dg_order_late_total", "counter",
               "Items that came after later ones had been applied (a partition more than the slack out of order, "
               "or idle and woken with old events): applied at once, out of event-time order, by stage",
               ("stage",)),
    MetricSpec("dg_rocksdb_memory_bytes", "gauge",
               "Native memory of the worker's RocksDB state stores, as RocksDB estimates it, by component: "
               "memtables, table_readers (index and filter blocks outside the block cache), block_cache",
               ("component",)),
    MetricSpec("dg_worker_ready", "gauge",
               "1 while the worker has partitions, its tables are recovered and its input flows; 0 while it starts, "
               "rebalances or recovers, or has stalled (input waiting, no batch for a minute); also at /ready/"),
)

METRIC_NAMES: tuple[str, ...] = tuple(spec.name for spec in METRICS)

_PREFIXES: tuple[tuple[str, str], ...] = (
    ("message too large", "oversized"),
    ("not msgpack or JSON: empty", "empty"),
    ("expected bytes, got null", "empty"),
    ("not msgpack or JSON", "not_decodable"),
    ("invalid message", "not_decodable"),
    ("expected bytes", "not_decodable"),
    ("expected a map", "not_a_map"),
    ("expected a msgpack map", "not_a_map"),
    ("missing required field", "missing_field"),
)


def reason_kind(reason: str) -> str:
    """The kind of a dead-letter reason (one of :data:`REASON_KINDS`), a bounded label value.

    >>> reason_kind("missing required field: ts")
    'missing_field'
    >>> reason_kind("input_tokens: expected int >= 0, got -3")
    'invalid_field'
    """
    if reason in REASON_KINDS:
        return reason
    for prefix, kind in _PREFIXES:
        if reason.startswith(prefix):
            return kind
    head, sep, _ = reason.partition(": ")
    if sep and head.isidentifier():
        return "invalid_field"
    return "other"


def _build(spec: MetricSpec, registry: CollectorRegistry) -> Any:
    if spec.kind == "counter":
        return Counter(spec.name.removesuffix("_total"), spec.help, spec.labels, registry=registry)
    if spec.kind == "gauge":
        return Gauge(spec.name, spec.help, spec.labels, registry=registry)
    buckets = EVENT_TO_ALERT_BUCKETS if spec.name == "dg_event_to_alert_seconds" else PROCESSING_BUCKETS
    return Histogram(spec.name, spec.help, spec.labels, registry=registry, buckets=buckets)


class WorkerMetrics:
    """The worker's metrics on a private registry. ``clock`` (seconds since the epoch) is replaceable
    for tests; it is read only to measure event time to alert."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        clock: Callable[[], float] = time.time,
        version: str | None = None,
        detector_version: str = "",
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.clock = clock
        self._m: dict[str, Any] = {spec.name: _build(spec, self.registry) for spec in METRICS}
        if version is None:
            from pipeline import __version__ as version
        self._m["dg_build_info"].labels(version=version, detector_version=detector_version).set(1)
        # Label values known up front are exposed at 0, so rate() works from the first scrape.
        for result in EVENT_RESULTS:
            self._m["dg_events_total"].labels(result=result)
        for stage in ("link", "campaign"):
            self._m["dg_order_held"].labels(stage=stage)
            self._m["dg_order_late_total"].labels(stage=stage)

    # -------------------------------------------------------------------- events

    def event_accepted(self, n: int = 1) -> None:
        """``n`` events decoded and handed to detection."""
        self._m["dg_events_total"].labels(result="accepted").inc(n)

    def event_duplicate(self, n: int = 1) -> None:
        """``n`` events dropped as re-deliveries of an event id already seen."""
        self._m["dg_events_total"].labels(result="duplicate").inc(n)

    def event_late(self, n: int = 1) -> None:
        """``n`` events later than the allowed lateness: counted in state, not applied."""
        self._m["dg_events_total"].labels(result="late").inc(n)

    def event_invalid(self, reason: str) -> None:
        """One event that broke the schema and went to the DLQ; ``reason`` is the codec's sentence."""
        self._m["dg_events_total"].labels(result="invalid").inc()
        self.dlq(reason)

    def dlq(self, reason: str) -> None:
        """One message sent to the dead-letter topic (counted by :func:`reason_kind` of ``reason``)."""
        self._m["dg_dlq_messages_total"].labels(reason_kind=reason_kind(reason)).inc()

    # -------------------------------------------------------------------- outputs

    def alert(self, severity: str, kind: str, event_ts_ms: int | None = None) -> None:
        """One alert emitted; with the event time (epoch ms) that triggered it, the delay from event time
        to now is observed in ``dg_event_to_alert_seconds``."""
        self._m["dg_alerts_total"].labels(severity=severity, kind=kind).inc()
        if event_ts_ms is not None:
            self.observe_event_to_alert(max(0.0, self.clock() - event_ts_ms / 1000.0))

    def action(self, action: str, mode: str) -> None:
        """One enforcement action emitted."""
        self._m["dg_actions_total"].labels(action=action, mode=mode).inc()

    # -------------------------------------------------------------------- timings

    def observe_processing(self, seconds: float) -> None:
        """Wall-clock seconds spent processing one event (or one batch)."""
        self._m["dg_processing_seconds"].observe(seconds)

    def observe_event_to_alert(self, seconds: float) -> None:
        """Seconds from an alert's triggering event time to its emission."""
        self._m["dg_event_to_alert_seconds"].observe(seconds)

    # -------------------------------------------------------------------- gauges

    def set_lag(self, topic: str, partition: int, lag: int) -> None:
        """Messages of ``topic``/``partition`` not yet processed by this worker."""
        self._m["dg_consumer_lag"].labels(topic=topic, partition=str(partition)).set(lag)

    def forget_partition(self, topic: str, partition: int) -> None:
        """Drop the lag series of a partition this worker no longer owns (after a rebalance)."""
        with contextlib.suppress(KeyError):
            self._m["dg_consumer_lag"].remove(topic, str(partition))

    def set_state(self, accounts: int, size_bytes: int, link_keys: int | None = None) -> None:
        """Size of the detection state held by this worker."""
        self._m["dg_state_accounts"].set(accounts)
        self._m["dg_state_bytes"].set(size_bytes)
        if link_keys is not None:
            self._m["dg_link_keys"].set(link_keys)

    def set_order_held(self, stage: str, n: int) -> None:
        """Items held for event-time order by ``stage`` (``pipeline.worker.link_order``)."""
        self._m["dg_order_held"].labels(stage=stage).set(n)

    def order_late(self, stage: str, n: int) -> None:
        """``n`` items applied out of event-time order (late) by ``stage``."""
        self._m["dg_order_late_total"].labels(stage=stage).inc(n)

    def set_rocksdb_memory(self, components: dict[str, int]) -> None:
        """RocksDB's own memory estimates, summed over this worker's databases (see ``ROCKSDB_MEMORY``)."""
        for component, size in components.items():
            self._m["dg_rocksdb_memory_bytes"].labels(component=component).set(size)

    def track_readiness(self, ready: Callable[[], bool]) -> None:
        """``dg_worker_ready`` is ``ready()`` at each scrape (a readiness probe, a benchmark's start signal)."""
        self._m["dg_worker_ready"].set_function(lambda: 1.0 if ready() else 0.0)

    # -------------------------------------------------------------------- reading

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format, as a scrape would see it."""
        return generate_latest(self.registry)

    def value(self, name: str, **labels: str) -> float | None:
        """The current value of one sample (e.g. ``dg_events_total`` with ``result="accepted"``)."""
        return self.registry.get_sample_value(name, labels)


def held_for_order(port: int, timeout: float = 2.0) -> int | None:
    """Items a worker serving metrics on ``port`` holds for event-time order (``dg_order_held``, all
    stages), or None when it does not answer: a worker whose input is all read and whose held count is 0
    has done everything that input will give."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as r:
            text = r.read().decode("utf-8")
    except OSError:
        return None
    return int(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("dg_order_held{")))


@cache
def default_metrics() -> WorkerMetrics:
    """The process's worker metrics, built on first use."""
    return WorkerMetrics()


@dataclass
class MetricsServer:
    """A running metrics HTTP server; ``close()`` stops it."""

    server: Any
    thread: Any
    host: str
    port: int

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def start_metrics_server(
    port: int, host: str = "0.0.0.0", metrics: WorkerMetrics | None = None
) -> MetricsServer | None:
    """Serve ``metrics`` (default: :func:`default_metrics`) at ``http://host:port/metrics`` from a daemon
    thread. Port 0 means metrics are turned off: nothing is started and None is returned."""
    if port == 0:
        return None
    registry = (metrics or default_metrics()).registry
    server, thread = start_http_server(port, addr=host, registry=registry)
    return MetricsServer(server=server, thread=thread, host=host, port=server.server_port)
