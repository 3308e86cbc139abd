"""Scale-out: two workers against one on the same partitioned topic.

    python bench/scale_out.py [--events 300000] [--partitions 4] [--repeat 1]

Pre-produces the first N events of the cached simulated file (as ``end_to_end.py`` does), then runs one
worker over the topic, then two workers (a fresh consumer group each time, from the start). The figure
is the account stage's combined rate (sum of the workers' accepted-events metrics) from the moment every
worker reports itself ready, until all N are taken, and the ratio two over one. Workers started together
join the group one after the other: the first starts alone, and the group rebalances when the second
joins; the events taken before then are printed and left out of the rate. While the account stage runs,
the output also shows how many of the machine's cores were busy, and how many each worker and the broker
used: with two cores, the broker, the two workers and this process share them. With ``--repeat`` the
rounds alternate which runs first, each on a consumer group of its own over the same events, and the
median of their ratios is the figure.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import figure, header, local_kafka  # noqa: E402
from end_to_end import all_stages_rate, prepare, worker_rate  # noqa: E402

from pipeline.settings import Settings  # noqa: E402

GOAL_RATIO = 1.7


def measure(settings: Settings, n: int, workdir: Path, workers: int, tag: str) -> float:
    """All-stages events/s of ``workers`` workers over the pre-produced events, in a consumer group (and
    tables) of their own."""
    name = "one worker" if workers == 1 else f"{workers} workers"
    group = settings.model_copy(update={"app_id": f"{settings.app_id}-{workers}w{tag}"})
    account, drain, _, cpu = worker_rate(group, n, workdir / f"{workers}w{tag}", workers=workers, steady=True)
    rate = all_stages_rate(n, account, drain)
    figure(name, rate, "events/s")
    print(f"{name}, account stage, {cpu.report()}; link stage drained {drain:.1f} s after it", flush=True)
    return rate


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=300_000,
                    help="events pre-produced; enough that most are taken after the second worker is ready")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds of one-then-two (then two-then-one, ...) workers on the same events; the "
                         "median of the rounds' ratios is the figure (this machine's speed drifts over minutes)")
    args = ap.parse_args()
    if args.repeat < 1:
        ap.error(f"--repeat must be 1 or more, got {args.repeat}")
    header("scale-out: two workers vs one")
    with tempfile.TemporaryDirectory(prefix="dg-bench-") as tmp, local_kafka() as bootstrap:
        workdir = Path(tmp)
        settings = prepare(bootstrap, workdir, args.events, args.partitions)
        n = args.events
        ratios = []
        for r in range(args.repeat):
            tag = f"-r{r}" if args.repeat > 1 else ""
            if r % 2 == 0:  # alternate the order, so a machine that drifts faster or slower favours neither
                one = measure(settings, n, workdir, 1, tag)
                two = measure(settings, n, workdir, 2, tag)
            else:
                two = measure(settings, n, workdir, 2, tag)
                one = measure(settings, n, workdir, 1, tag)
            ratios.append(two / one)
            figure(f"round {r + 1}: two workers", two, "events/s", baseline=one, baseline_name="one worker")
        print(f"{os.cpu_count()} cores shared by the broker, the workers and this process", flush=True)
        if len(ratios) > 1:
            print("two / one by round: " + ", ".join(f"{x:.3f}" for x in ratios), flush=True)
        ratio = statistics.median(ratios)
        figure("two / one" + (f" (median of {len(ratios)} rounds)" if len(ratios) > 1 else ""), ratio, "",
               goal=f">= {GOAL_RATIO}", met=ratio >= GOAL_RATIO)
    return 0


if __name__ == "__main__":
    sys.exit(main())
