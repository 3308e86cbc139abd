"""Run real worker processes (``python -m pipeline worker``) from tests, and read topics back."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer

from pipeline.proc import WorkerProcess
from pipeline.settings import Settings


class Worker(WorkerProcess):
    """A worker subprocess with its log in a file (``pipeline.proc``), logging at ``info`` by default, and
    its watchdog's reports read from that log."""

    def __init__(self, settings: Settings, log_path: Path, loglevel: str = "info") -> None:
        log_path.touch()
        self._scanned = log_path.stat().st_size
        super().__init__(settings, log_path, loglevel)

    def stall_report(self) -> str | None:
        """The worker's ``worker_stalled`` log line (its own watchdog: input waiting, no batch for a minute),
        if it has logged one since the last call."""
        with open(self.log_path, "rb") as f:
            f.seek(self._scanned)
            chunk = f.read()
        cut = chunk.rfind(b"\n") + 1  # a partly written last line is read again next time
        self._scanned += cut
        for line in chunk[:cut].splitlines():
            if b'"worker_stalled"' in line:
                return line.decode("utf-8", "replace")
        return None

    def stop(self, timeout: float = 60) -> int:
        return super().stop(timeout)


def read_topic(bootstrap: str, topic: str, *, until: Callable[[list[Any]], bool], timeout: float,
               workers: list[Worker] | None = None) -> list[Any]:
    """Consume ``topic`` from the start until ``until(messages)`` holds or ``timeout`` seconds pass."""
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=1000)
    messages: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not until(messages):
            for w in workers or []:
                if not w.alive():
                    raise AssertionError(f"worker died:\n{w.log_tail()}")
            for msg in consumer:
                messages.append(msg)
                if until(messages):
                    break
    finally:
        consumer.close()
    return messages


def check_workers(workers: list[Worker]) -> None:
    """Fail at once on a worker that died or logged ``worker_stalled``, with its log."""
    for w in workers:
        if not w.alive():
            raise AssertionError(f"worker died:\n{w.log_tail()}")
        stalled = w.stall_report()
        if stalled:
            raise AssertionError(f"worker stalled:\n{stalled}")


def free_ports(count: int) -> list[int]:
    """Distinct loopback ports that are free right now (held open together so they differ)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def wait_until_idle(settings: Settings, workers: list[Worker], timeout: float = 240.0) -> None:
    """Wait until the app's consumer group has committed everything on its input and internal topics, and
    no worker holds anything for event-time order (three times in a row, a second apart: a finding may
    still be on its way after the link stage caught up)."""
    from pipeline.kafka.lag import group_lag
    from pipeline.worker.observability import held_for_order

    names = ["usage-events", "link-updates", "campaign-signals", "findings", "analyst-verdicts"]
    deadline = time.monotonic() + timeout
    calm = 0
    while time.monotonic() < deadline:
        check_workers(workers)
        lags = [group_lag(settings.bootstrap, settings.app_id, settings.topic(n)) for n in names]
        held = [held_for_order(w.settings.metrics_port) if w.settings.metrics_port else 0 for w in workers
                if w.alive()]
        calm = calm + 1 if all(lag == 0 for lag in lags) and all(h == 0 for h in held) else 0
        if calm >= 3:
            return
        time.sleep(1.0)
    raise AssertionError(f"workers did not catch up within {timeout} s (lags {lags})")


def produce_events(settings: Settings, events: list[dict[str, Any]]) -> None:
    """Send events keyed by account, as msgpack, and wait until Kafka has them all."""
    import msgpack
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=settings.bootstrap, acks="all", linger_ms=20,
                             batch_size=256 * 1024)
    topic = settings.topic("usage-events")
    for ev in events:
        producer.send(topic, key=ev["account_id"].encode(), value=msgpack.packb(ev))
    producer.flush()
    producer.close()


def run_to_idle(settings: Settings, events: list[dict[str, Any]], log_path: Path) -> None:
    """Create the topics, send ``events``, and run one worker until it has committed everything."""
    from pipeline.kafka import admin as topics

    topics.create_topics(settings)
    produce_events(settings, events)
    worker = Worker(settings, log_path)
    try:
        wait_until_idle(settings, [worker])
    finally:
        worker.stop()


def _reader(bootstrap: str) -> KafkaConsumer:
    # large fetches: the long fault tests read changelogs of a million records and more
    return KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=2000,
                         max_partition_fetch_bytes=8 << 20, fetch_max_bytes=64 << 20, max_poll_records=20_000)


def read_all(bootstrap: str, topic: str, timeout: float = 60.0) -> list[Any]:
    """Everything currently in a topic (at least up to the end offsets seen at the start). A read that
    does not reach them within ``timeout`` raises: a partial read must not pass for the whole topic."""
    view = TopicView(bootstrap, topic)
    try:
        return view.catch_up(timeout)
    finally:
        view.close()


class TopicView:
    """A topic read from the beginning and then followed: each ``catch_up`` reads on to the end offsets
    of that moment and returns the new records (so a test polling a big changelog reads each record once)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from kafka import TopicPartition

        self.consumer = _reader(bootstrap)
        self.topic = topic
        parts = self.consumer.partitions_for_topic(topic) or set()
        self.tps = [TopicPartition(topic, p) for p in sorted(parts)]
        self.consumer.assign(self.tps)
        self.consumer.seek_to_beginning(*self.tps)
        self.next = dict.fromkeys(self.tps, 0)

    def catch_up(self, timeout: float = 60.0) -> list[Any]:
        ends = self.consumer.end_offsets(self.tps)
        out: list[Any] = []
        remaining = {tp for tp in self.tps if ends[tp] > self.next[tp]}
        deadline = time.monotonic() + timeout
        while remaining:
            if time.monotonic() > deadline:
                raise TimeoutError(f"read {len(out)} records of {self.topic} in {timeout} s without reaching its "
                                   f"end offsets")
            for tp, msgs in self.consumer.poll(timeout_ms=500).items():
                out += msgs  # records past the end offsets too: the next catch-up goes on from there
                if msgs:
                    self.next[tp] = msgs[-1].offset + 1
                    if self.next[tp] >= ends[tp]:
                        remaining.discard(tp)
        return out

    def close(self) -> None:
        self.consumer.close()


def scrape_metrics(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """A worker's Prometheus samples: (name, sorted labels) → value."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def latest_values(bootstrap: str, topic: str, timeout: float = 60.0,
                  into: dict[bytes, bytes | None] | None = None,
                  records: list[Any] | None = None) -> dict[bytes, bytes | None]:
    """The last value per key of a (changelog) topic; ``None`` where the last record is a tombstone.
    With ``records`` (from a ``TopicView``), those are applied to ``into`` instead of reading the topic."""
    out: dict[bytes, bytes | None] = {} if into is None else into
    if records is None:
        records = read_all(bootstrap, topic, timeout)
    for m in sorted(records, key=lambda m: (m.partition, m.offset)):
        out[m.key] = m.value
    return out


def consumed_share(settings: Settings, total: int) -> float:
    """Share of ``total`` input events the app's consumer group has committed (0 before its first commit)."""
    from pipeline.kafka.lag import group_lag

    lag = group_lag(settings.bootstrap, settings.app_id, settings.topic("usage-events"))
    return 0.0 if lag is None else max(0.0, 1.0 - lag / total)


def wait_for_share(settings: Settings, total: int, share: float, workers: list[Worker],
                   timeout: float = 240.0) -> float:
    """Wait until the group has committed ``share`` of ``total`` input events; returns the share reached."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        check_workers(workers)
        got = consumed_share(settings, total)
        if got >= share:
            return got
        time.sleep(0.2)
    raise AssertionError(f"the worker did not reach {share:.0%} of {total} events within {timeout} s")


class PrivateBroker:
    """A local Kafka of its own (own ports and data dir) that a test may stop and start again, for faults
    that must not disturb the session broker other tests share."""

    def __init__(self, data_dir: Path, port: int, controller_port: int) -> None:
        self.data_dir = data_dir
        self.settings = Settings(kafka_port=port, kafka_controller_port=controller_port, kafka_data_dir=data_dir)
        self.bootstrap = f"127.0.0.1:{port}"

    def start(self, timeout: float = 120.0) -> None:
        from pipeline.kafka import local as kafka_local

        kafka_local.start(self.settings, data_dir=self.data_dir, timeout=timeout)

    def stop(self) -> bool:
        from pipeline.kafka import local as kafka_local

        return kafka_local.stop(self.settings, data_dir=self.data_dir)


def ids_per_decision(alerts: list[dict[str, Any]], actions: list[dict[str, Any]]) -> dict[tuple[Any, ...], set[str]]:
    """The ids sent for each policy decision: an account's alert at a severity and its action of a name,
    on each of its two ladders (own behaviour, campaign). Each must be one id, however often it was sent."""
    ids: dict[tuple[Any, ...], set[str]] = {}
    kind_of = {a["alert_id"]: a["kind"] for a in alerts}
    for a in alerts:  # a campaign's own alert id follows its evidence (group growth): left out
        if a["account_id"] is not None:
            ids.setdefault(("alert", a["account_id"], a["kind"], a["severity"]), set()).add(a["alert_id"])
    for a in actions:
        ids.setdefault(("action", a["account_id"], kind_of.get(a["alert_ids"][0]), a["action"]),
                       set()).add(a["action_id"])
    return ids

