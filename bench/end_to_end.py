"""End to end through Kafka: one worker with full detection against the framework's own ceiling.

    python bench/end_to_end.py [--events 200000] [--partitions 4]

Starts the project's local Kafka on free ports, creates the topics under a fresh prefix and pre-produces
the first N events of the cached simulated file (keyed by account, msgpack). Then, one after the other,
each from the start of the same topic with its own consumer group:

1. a bare aiokafka consumer that decodes and counts (in this process);
2. a Faust agent that decodes and counts (``bench/faust_count.py``, same batching as the worker), with
   Faust's own consumer: the baseline of the goal;
3. the same agent with the worker's consumer (``pipeline.worker.consumer.WorkerConsumer``), to show how much
   of the worker's figure is that consumer's doing;
4. ``python -m pipeline worker``: full detection, state in RocksDB, outputs acknowledged before state.

Rates run from the first progress seen to the N-th event (start-up and group joins are not counted);
the worker's count is its ``dg_events_total{result="accepted"}`` metric, polled every 0.5 s. After the
account stage has taken all N events, the link stage still drains: the worker's figure against the goal
is N over both times together ("all stages"); the account stage's own rate is printed too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import (  # noqa: E402
    CpuMeter,
    accepted,
    bench_settings,
    cached_events,
    create_topics,
    figure,
    free_port,
    group_lag,
    header,
    local_kafka,
    produce,
    rate_until,
    raw_messages,
    start_worker,
    wait_ready,
)

from pipeline.contract import codec  # noqa: E402
from pipeline.contract.manifest import CAMPAIGN_SIGNALS, FINDINGS, LINK_UPDATES, USAGE_EVENTS  # noqa: E402
from pipeline.proc import ChildProcess  # noqa: E402
from pipeline.settings import Settings  # noqa: E402
from pipeline.worker.stages import BATCH_MAX  # noqa: E402

GOAL_RATE = 20_000
GOAL_RATIO = 0.6


async def _bare(bootstrap: str, topic: str, n: int) -> float:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"bench-bare-{uuid.uuid4().hex[:6]}",
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        count, first = 0, None
        while count < n:
            batches = await consumer.getmany(timeout_ms=1000, max_records=BATCH_MAX)
            for msgs in batches.values():
                for m in msgs:
                    with contextlib.suppress(codec.CodecError):
                        codec.decode_event(m.value)
                count += len(msgs)
            if first is None and count:
                first = (time.perf_counter(), count)
        assert first is not None
        return (count - first[1]) / (time.perf_counter() - first[0])
    finally:
        await consumer.stop()


def bare_consumer_rate(settings: Settings, n: int) -> float:
    """Events per second of a plain aiokafka consumer that decodes and counts."""
    return asyncio.run(_bare(settings.bootstrap, settings.topic(USAGE_EVENTS), n))


def faust_count_rate(settings: Settings, n: int, workdir: Path, consumer: str = "faust") -> float:
    """Events per second of a Faust agent that only decodes and counts, with Faust's consumer or
    (``consumer="worker"``) the worker's."""
    tag = uuid.uuid4().hex[:6]
    count_file = workdir / f"count-{tag}"
    env = {"BENCH_BOOTSTRAP": settings.bootstrap, "BENCH_TOPIC": settings.topic(USAGE_EVENTS),
           "BENCH_GROUP": f"bench-count-{tag}", "BENCH_COUNT_FILE": str(count_file),
           "BENCH_DATADIR": str(workdir / f"faust-count-data-{tag}"), "BENCH_CONSUMER": consumer}
    script = str(Path(__file__).resolve().parent / "faust_count.py")
    proc = ChildProcess([sys.executable, script, "worker", "-l", "warn", "--web-port", str(free_port())],
                        workdir / f"faust_count-{consumer}.log", env)

    def count() -> int:
        try:
            return int(count_file.read_text() or 0)
        except (OSError, ValueError):
            return 0

    try:
        return rate_until(count, n, [proc], timeout=900)
    finally:
        proc.stop()


def worker_rate(settings: Settings, n: int, workdir: Path, workers: int = 1,
                steady: bool = False) -> tuple[float, float, list[float], CpuMeter]:
    """Events per second the account stage of ``workers`` workers takes in, the seconds from then until
    the link stage has committed everything, each worker's resident memory (MiB) at the end, and where
    the machine's cores went while the account stage ran (workers, broker, the rest).

    The rate runs from the first progress seen, or with ``steady`` from the first poll at which every
    worker reports itself ready: workers started together still join the group one after the other (the
    local broker has ``group.initial.rebalance.delay.ms=0``), so the first takes every partition and
    starts alone, and the group rebalances, and the moved partitions' state is recovered, when the next
    joins. The workers' metrics are polled every 0.5 s (serving a scrape costs the worker CPU time;
    Prometheus would scrape every 15 s), and the drain ends at the first of two consecutive polls with no
    lag."""
    workdir.mkdir(parents=True, exist_ok=True)
    started = [start_worker(settings, workdir / f"worker-{i}.log") for i in range(workers)]
    procs, ports = [p for p, _ in started], [port for _, port in started]
    pids = {f"worker {i + 1}" if workers > 1 else "worker": p.pid for i, p in enumerate(procs)}
    if common.BROKER_PID is not None:
        pids["broker"] = common.BROKER_PID
    cpu = CpuMeter(pids)
    try:
        if steady:
            waited = wait_ready(ports, procs)
            print(f"{workers} worker(s) ready after {waited:.1f} s, having taken {accepted(ports):,.0f} of the "
                  f"{n:,} events by then: the rate counts the rest", flush=True)
        rate = rate_until(lambda: accepted(ports), n, procs, timeout=1800, poll=0.5, cpu=cpu)
        t0 = time.monotonic()
        calm, calm_since = 0, t0
        while calm < 2 and time.monotonic() - t0 < 600:
            for p in procs:
                p.check()
            now = time.monotonic()
            lags = [group_lag(settings, t) for t in (USAGE_EVENTS, LINK_UPDATES, CAMPAIGN_SIGNALS, FINDINGS)]
            if all(lag == 0 for lag in lags):
                calm, calm_since = calm + 1, calm_since if calm else now
            else:
                calm = 0
            time.sleep(0.5)
        drain = calm_since - t0
        rss = [p.rss_mib() for p in procs]
        return rate, drain, rss, cpu
    finally:
        for p in procs:
            p.stop()


def all_stages_rate(n: int, account_rate: float, drain: float) -> float:
    """N over the account stage's time plus the link stage's drain after it: the worker's figure."""
    return n / (n / account_rate + drain)


def prepare(bootstrap: str, workdir: Path, n: int, partitions: int) -> Settings:
    settings = bench_settings(bootstrap, workdir, partitions=partitions)
    create_topics(settings)
    messages = raw_messages(cached_events(), limit=n)
    secs = produce(settings, messages)
    print(f"pre-produced {len(messages):,} events to {settings.topic(USAGE_EVENTS)} "
          f"({partitions} partitions) in {secs:.1f} s", flush=True)
    return settings


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--partitions", type=int, default=4)
    args = ap.parse_args()
    header("end to end through Kafka: one worker vs decode-and-count")
    with tempfile.TemporaryDirectory(prefix="dg-bench-") as tmp, local_kafka() as bootstrap:
        workdir = Path(tmp)
        settings = prepare(bootstrap, workdir, args.events, args.partitions)
        n = args.events
        bare = bare_consumer_rate(settings, n)
        figure("bare aiokafka consumer (decode + count)", bare, "events/s")
        count = faust_count_rate(settings, n, workdir)
        figure("Faust agent (decode + count)", count, "events/s", baseline=bare, baseline_name="bare aiokafka")
        count_wc = faust_count_rate(settings, n, workdir, consumer="worker")
        figure("Faust agent (decode + count) on the worker's consumer", count_wc, "events/s", baseline=count,
               baseline_name="Faust's consumer")
        account_rate, drain, rss, cpu = worker_rate(settings, n, workdir)
        # the figure that counts: every stage done (the link stage drains after the account stage)
        rate = all_stages_rate(n, account_rate, drain)
        figure("worker, account stage", account_rate, "events/s", baseline=count, baseline_name="Faust decode+count")
        print(f"link stage committed everything {drain:.1f} s after the account stage took the last event; "
              f"worker RSS at the end {rss[0]:.0f} MiB", flush=True)
        print(f"account stage, {cpu.report()}", flush=True)
        figure("worker, all stages (full detection)", rate, "events/s", baseline=count,
               baseline_name="Faust decode+count")
        figure("worker, all stages (full detection)", rate, "events/s", baseline=count_wc,
               baseline_name="Faust decode+count on the worker's consumer")
        figure("worker, all stages (full detection)", rate, "events/s", baseline=bare, baseline_name="bare aiokafka")
        figure("worker rate", rate, "events/s", goal=f">= {GOAL_RATE:,} events/s", met=rate >= GOAL_RATE)
        figure("worker / Faust decode+count", rate / count, "", goal=f">= {GOAL_RATIO}",
               met=rate / count >= GOAL_RATIO)
    return 0


if __name__ == "__main__":
    sys.exit(main())
