"""Latency: event-to-alert p50 and p99 with a worker fed at a steady rate (default 5,000 events/s).

    python bench/latency.py [--rate 5000] [--seconds 30] [--skip 0] [--drain 180]

Starts the local Kafka and one worker, waits until the worker's consumer group is stable, then sends
the cached simulated file's events (from event ``--skip`` on) at a steady rate, paced in wall time. A
consumer in this process reads ``anomaly-alerts``. The events carry simulated (historic) timestamps,
so latency is measured in wall time: from the moment the bench sent the event that triggered an alert
(the alert's ``ts`` is the triggering event's time) to the moment the alert arrived here. Alerts of
the first ``--warmup`` seconds are left out of the quantiles (and counted). The baseline is the same
path without detection: the time from sending an event to this process reading it back from the input
topic, sampled over the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    bench_settings,
    cached_events,
    create_topics,
    figure,
    group_lag,
    header,
    local_kafka,
    raw_messages,
    start_worker,
)

from pipeline import codec  # noqa: E402
from pipeline.settings import Settings  # noqa: E402

GOAL_P99_S = 1.0


def _quantile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def wait_stable(settings: Settings, timeout: float = 120) -> None:
    """Until the worker's consumer group is Stable with a member (partitions assigned)."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                group = admin.describe_groups([settings.app_id]).get(settings.app_id) or {}
            except Exception:  # not there yet: kafka-python raises its own zoo of errors
                group = {}
            if group.get("group_state", group.get("state")) == "Stable" and group.get("members"):
                return
            time.sleep(0.5)
    finally:
        admin.close()
    raise TimeoutError("the worker's consumer group did not become stable")


class Reader:
    """Reads a topic from its end (positioned before anything is sent), recording (receive time, decoded
    value) for every ``every``-th message. aiokafka, whose record parsing is compiled: the harness should
    leave the two cores to the broker and the worker it measures."""

    def __init__(self, settings: Settings, topic: str, every: int = 1) -> None:
        self.settings, self.topic, self.every = settings, settings.topic(topic), every
        self.got: list[tuple[float, dict]] = []
        self.consumer: Any = None

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer

        self.consumer = AIOKafkaConsumer(self.topic, bootstrap_servers=self.settings.bootstrap, group_id=None,
                                         enable_auto_commit=False, auto_offset_reset="latest", fetch_max_wait_ms=10)
        await self.consumer.start()
        while not self.consumer.assignment():  # without a group: every partition, once metadata is in
            await asyncio.sleep(0.05)
        for tp in self.consumer.assignment():
            await self.consumer.position(tp)  # the end offsets, resolved now rather than at the first fetch

    async def run(self, stop: asyncio.Event) -> None:
        i = 0
        while not stop.is_set():
            batches = await self.consumer.getmany(timeout_ms=100)
            now = time.monotonic()
            for msgs in batches.values():
                for m in msgs:
                    i += 1
                    if i % self.every == 0:
                        self.got.append((now, codec.decode_map(m.value)))
        await self.consumer.stop()


async def send_paced(settings: Settings, messages: list[tuple[bytes, bytes]], stamps: list[int], rate: int,
                     worker: Any, sent_at: dict[int, float]) -> tuple[float, float]:
    """Send the messages at ``rate`` per second of wall time (aiokafka: a small fraction of a core at
    5,000/s, where kafka-python's producer took half of one); returns (start, seconds)."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, acks="all", linger_ms=5,
                                max_batch_size=256 * 1024)
    await producer.start()
    topic = settings.topic("usage-events")
    futures = []
    try:
        t0 = time.monotonic()
        for i, (key, value) in enumerate(messages):
            due = t0 + i / rate
            now = time.monotonic()
            if due > now + 0.001:
                await asyncio.sleep(due - now)
            futures.append(await producer.send(topic, value, key=key))
            sent_at.setdefault(stamps[i], time.monotonic())
            if i % 5000 == 0:
                worker.check()
        await asyncio.gather(*futures)
        return t0, time.monotonic() - t0
    finally:
        await producer.stop()


async def run(settings: Settings, messages: list[tuple[bytes, bytes]], stamps: list[int], rate: int, worker: Any,
              alerts: Reader, echo: Reader, sent_at: dict[int, float], drain: float) -> tuple[float, float, int | None, float]:
    """Send at the rate while reading alerts and the input echo, then wait for the worker to catch up;
    returns (start, seconds sending, events behind when sending ended, seconds to catch up)."""
    await alerts.start()
    await echo.start()
    stop = asyncio.Event()
    readers = [asyncio.create_task(r.run(stop)) for r in (alerts, echo)]
    t0, send_secs = await send_paced(settings, messages, stamps, rate, worker, sent_at)
    behind = await asyncio.to_thread(group_lag, settings, "usage-events")
    drain_until = time.monotonic() + drain
    while time.monotonic() < drain_until:  # the backlog, and the last alerts' way through the link stage
        worker.check()
        lags = [await asyncio.to_thread(group_lag, settings, t) for t in ("usage-events", "link-updates", "findings")]
        if all(lag == 0 for lag in lags):
            break
        await asyncio.sleep(1.0)
    await asyncio.sleep(2.0)
    drained = time.monotonic() - t0 - send_secs
    stop.set()
    await asyncio.gather(*readers)
    return t0, send_secs, behind, drained


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=int, default=5000, help="events per second sent")
    ap.add_argument("--seconds", type=int, default=30, help="how long to send")
    ap.add_argument("--skip", type=int, default=0, help="start at this event of the file")
    ap.add_argument("--drain", type=int, default=180, help="seconds to wait for the worker to catch up")
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds of alerts left out of the quantiles")
    args = ap.parse_args()
    header(f"latency: event to alert at {args.rate:,} events/s")
    n = args.rate * args.seconds
    messages = raw_messages(cached_events(), limit=args.skip + n)[args.skip:]
    stamps = [codec.decode_event(value)["ts"] for _, value in messages]  # before the clock starts
    with tempfile.TemporaryDirectory(prefix="dg-bench-") as tmp, local_kafka() as bootstrap:
        workdir = Path(tmp)
        settings = bench_settings(bootstrap, workdir)
        create_topics(settings)
        worker, _ = start_worker(settings, workdir / "worker.log")
        try:
            wait_stable(settings)
            alerts = Reader(settings, "anomaly-alerts")
            echo = Reader(settings, "usage-events", every=50)
            sent_at: dict[int, float] = {}
            t0, send_secs, behind, drained = asyncio.run(run(settings, messages, stamps, args.rate, worker, alerts,
                                                             echo, sent_at, args.drain))
            rss = worker.rss_mib()
        finally:
            worker.stop()
    lat, early, unmatched = [], 0, 0
    for got, alert in alerts.got:
        sent = sent_at.get(alert["ts"])
        if sent is None:
            unmatched += 1
        elif sent - t0 < args.warmup:
            early += 1
        else:
            lat.append(got - sent)
    echo_lat = [got - sent_at[ev["ts"]] for got, ev in echo.got if ev["ts"] in sent_at]
    print(f"sent {len(messages):,} events in {send_secs:.1f} s ({len(messages) / send_secs:,.0f} events/s); "
          f"the worker was {behind if behind is not None else '?'} events behind when sending ended and took "
          f"{drained:.0f} s more to catch up (limit --drain {args.drain} s); {len(alerts.got)} alerts ({early} "
          f"in the warm-up, {unmatched} unmatched); worker RSS {rss:.0f} MiB", flush=True)
    if not lat:
        print("no alerts to measure: try --skip or --seconds")
        return 1
    base50, base99 = _quantile(echo_lat, 0.5), _quantile(echo_lat, 0.99)
    p50, p99 = _quantile(lat, 0.5), _quantile(lat, 0.99)
    figure("event-to-alert p50", 1000 * p50, "ms", baseline=1000 * base50, baseline_name="input echo p50")
    figure("event-to-alert p99", 1000 * p99, "ms", baseline=1000 * base99, baseline_name="input echo p99")
    print(f"event-to-alert mean {1000 * statistics.fmean(lat):.0f} ms, max {1000 * max(lat):.0f} ms, "
          f"over {len(lat)} alerts", flush=True)
    figure("event-to-alert p99", 1000 * p99, "ms", goal=f"<= {1000 * GOAL_P99_S:.0f} ms", met=p99 <= GOAL_P99_S)
    return 0


if __name__ == "__main__":
    sys.exit(main())
