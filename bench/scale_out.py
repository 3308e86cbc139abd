"""Scale-out: two workers against one on the same partitioned topic.

    python bench/scale_out.py [--events 300000] [--partitions 4]

Pre-produces the first N events of the cached simulated file (as ``end_to_end.py`` does), then runs one
worker over the topic, then two workers (a fresh consumer group each time, from the start). The figure
is the account stage's combined rate (sum of the workers' accepted-events metrics) from the moment every
worker reports itself ready, until all N are taken, and the ratio two over one. Workers started together
join the group one after the other: the first starts alone, and the group rebalances when the second
joins; the events taken before then are printed and left out of the rate. While the account stage runs,
the output also shows how many of the machine's cores were busy, and how many each worker and the broker
used: with two cores, the broker, the two workers and this process share them.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import figure, header, local_kafka  # noqa: E402
from end_to_end import all_stages_rate, prepare, worker_rate  # noqa: E402

GOAL_RATIO = 1.7


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=300_000,
                    help="events pre-produced; enough that most are taken after the second worker is ready")
    ap.add_argument("--partitions", type=int, default=4)
    args = ap.parse_args()
    header("scale-out: two workers vs one")
    with tempfile.TemporaryDirectory(prefix="dg-bench-") as tmp, local_kafka() as bootstrap:
        workdir = Path(tmp)
        settings = prepare(bootstrap, workdir, args.events, args.partitions)
        n = args.events
        one_account, drain1, _, cpu1 = worker_rate(settings, n, workdir / "one", steady=True)
        one = all_stages_rate(n, one_account, drain1)
        figure("one worker", one, "events/s")
        print(f"one worker, account stage, {cpu1.report()}", flush=True)
        two_settings = settings.model_copy(update={"app_id": settings.app_id + "-two"})
        two_account, drain2, _, cpu2 = worker_rate(two_settings, n, workdir / "two", workers=2, steady=True)
        two = all_stages_rate(n, two_account, drain2)
        figure("two workers", two, "events/s", baseline=one, baseline_name="one worker")
        print(f"two workers, account stage, {cpu2.report()}", flush=True)
        print(f"link stage drained {drain1:.1f} s (one) / {drain2:.1f} s (two) after the account stage; "
              f"{os.cpu_count()} cores shared by the broker, the workers and this process", flush=True)
        figure("two / one", two / one, "", goal=f">= {GOAL_RATIO}", met=two / one >= GOAL_RATIO)
    return 0


if __name__ == "__main__":
    sys.exit(main())
