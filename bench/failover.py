"""Failover: how long the survivor of two workers takes to carry on when the other is killed, with and
without standby table replicas.

    python bench/failover.py [--events 200000] [--kill-at 0.5] [--replicas 0 1] [--partitions 4]

For each ``--replicas`` setting (``DG_STANDBY_REPLICAS``) the run is the same, on a fresh topic layout and
consumer group: pre-produce the first N events of the cached simulated file, start two workers, wait
until both report themselves ready and together have taken ``--kill-at`` of the events, then SIGKILL one.
The survivor is polled every 0.1 s and the output gives, counted from the kill:

- *noticed*: its readiness (``dg_worker_ready``) drops, i.e. the group has seen the member is gone (the
  broker waits for the session timeout, 15 s, for a member that died without leaving);
- *ready*: it reports itself ready again: the group has rebalanced and the killed worker's table
  partitions are recovered from their changelogs (with a standby replica, only what the replica had not
  yet read);
- *taking input*: its accepted-events count moves again after that (its first batch is done).

The figures are the survivor's time from noticed to ready, and from the kill to taking input again, with
the first ``--replicas`` setting against the second (the baseline), measured in the same run. What a
recovery reads is the killed worker's share of the tables' changelogs, whose records at the kill are
printed: it grows with the state written since the changelogs were last compacted, so the figures hold
for this many events.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    accepted,
    figure,
    header,
    local_kafka,
    metric,
    rate_until,
    start_worker,
    wait_ready,
)
from end_to_end import prepare  # noqa: E402

from pipeline.settings import Settings  # noqa: E402

POLL_S = 0.1


def changelog_records(settings: Settings) -> int:
    """Records in the worker tables' changelog topics (the sum of their partitions' end offsets)."""
    from kafka import KafkaConsumer, TopicPartition

    from pipeline.kafka.config import kafka_python_config

    consumer = KafkaConsumer(**kafka_python_config(settings))
    try:
        tps = [TopicPartition(t, p) for t in consumer.topics()
               if t.startswith(f"{settings.app_id}-") and t.endswith("-changelog")
               for p in consumer.partitions_for_topic(t) or ()]
        return sum(consumer.end_offsets(tps).values()) if tps else 0
    finally:
        consumer.close()


def run(bootstrap: str, workdir: Path, events: int, kill_at: float, partitions: int,
        replicas: int) -> dict[str, float]:
    settings = prepare(bootstrap, workdir, events, partitions)
    started = [start_worker(settings, workdir / f"worker-{i}-r{replicas}.log",
                            DG_STANDBY_REPLICAS=str(replicas)) for i in range(2)]
    procs, ports = [p for p, _ in started], [port for _, port in started]
    try:
        waited = wait_ready(ports, procs, timeout=300)
        rate_until(lambda: accepted(ports), int(kill_at * events), procs, timeout=1800, poll=POLL_S)
        victim, survivor = procs[1], procs[0]
        port = ports[0]
        before = metric(port, "dg_events_total", result="accepted")
        taken = before + metric(ports[1], "dg_events_total", result="accepted")
        killed_at = time.monotonic()
        victim.kill()
        records = changelog_records(settings)
        noticed = ready = moving = None
        at_ready = 0.0
        deadline = killed_at + 600
        while moving is None:
            survivor.check()
            now = time.monotonic()
            if now > deadline:
                raise TimeoutError("the survivor did not carry on within 600 s of the kill")
            up = metric(port, "dg_worker_ready") == 1.0
            if noticed is None and not up:
                noticed = now
            elif noticed is not None and ready is None and up:
                ready, at_ready = now, metric(port, "dg_events_total", result="accepted")
            elif ready is not None and metric(port, "dg_events_total", result="accepted") > at_ready:
                moving = now  # its first batch since the recovery is done
            time.sleep(POLL_S)
        assert noticed is not None and ready is not None and moving is not None
        print(f"standby replicas {replicas}: both ready after {waited:.1f} s; killed one at "
              f"{taken:,.0f} events taken, the changelogs holding {records:,} records; survivor noticed after "
              f"{noticed - killed_at:.1f} s, ready after {ready - killed_at:.1f} s, taking input again after "
              f"{moving - killed_at:.1f} s", flush=True)
        return {"noticed": noticed - killed_at, "ready": ready - killed_at, "moving": moving - killed_at,
                "recovery": ready - noticed}
    finally:
        for p in procs:
            p.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000, help="events pre-produced for each run")
    ap.add_argument("--kill-at", type=float, default=0.5,
                    help="kill one worker once this share of the events is taken (0 < share < 1)")
    ap.add_argument("--replicas", type=int, nargs="+", default=[0, 1],
                    help="DG_STANDBY_REPLICAS of each run; the first two are compared")
    ap.add_argument("--partitions", type=int, default=4)
    args = ap.parse_args()
    if not 0 < args.kill_at < 1:
        ap.error(f"--kill-at must be between 0 and 1, got {args.kill_at}")
    if any(r < 0 for r in args.replicas):
        ap.error("--replicas must be 0 or more")
    header("failover: the survivor of two workers, with and without standby replicas")
    results: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="dg-bench-") as tmp, local_kafka() as bootstrap:
        for replicas in args.replicas:
            results[replicas] = run(bootstrap, Path(tmp) / f"r{replicas}", args.events, args.kill_at,
                                    args.partitions, replicas)
    if len(args.replicas) >= 2:
        a, b = args.replicas[:2]
        figure(f"rebalance and recovery, {a} standby replicas", results[a]["recovery"], "s",
               baseline=results[b]["recovery"], baseline_name=f"{b} standby replicas")
        figure(f"kill to taking input, {a} standby replicas", results[a]["moving"], "s",
               baseline=results[b]["moving"], baseline_name=f"{b} standby replicas")
    return 0


if __name__ == "__main__":
    sys.exit(main())
