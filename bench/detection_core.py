"""Detection core: backtest events per second against a decode-only pass over the same file.

    python bench/detection_core.py [--events N] [--repeat 1] [--profile]

The file is ``standard`` seed 1 at scale 3.5 (about a million events), simulated once and cached under
``bench/.cache/``. The baseline reads and validates every event of the file and does nothing else: the
floor any Python consumer of the file pays. The backtest is ``pipeline.offline.backtest.backtest_file``, i.e.
the same decode plus the whole detection engine in process. Both run in this process, one after the
other, on one core, with the garbage-collector settings of the backtest command (``pipeline.runtime``). The digest of the outputs shows that a change left the detection's answers alone.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import itertools
import pstats
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import cached_events, figure, header  # noqa: E402

from pipeline.contract.eventfile import read_events  # noqa: E402
from pipeline.offline.backtest import backtest_file  # noqa: E402
from pipeline.runtime import tune_gc  # noqa: E402
from pipeline.settings import Settings  # noqa: E402

GOAL_RATE = 50_000
GOAL_RATIO = 0.25


def decode_only(path: Path, limit: int | None) -> tuple[int, float]:
    t0 = time.perf_counter()
    n = 0
    for _ in itertools.islice(read_events(path, lambda bad: None), limit):
        n += 1
    return n, time.perf_counter() - t0


def backtest(path: Path, limit: int | None, profile: bool) -> tuple[int, float, str, int]:
    digest = hashlib.sha256()
    outputs = 0

    def sink(topic: str, value: dict[str, Any]) -> None:
        nonlocal outputs
        outputs += 1
        digest.update(topic.encode())
        digest.update(repr(sorted(value.items())).encode())

    def events(bad: Any) -> Any:
        return itertools.islice(read_events(path, bad), limit)

    prof = cProfile.Profile() if profile else None
    t0 = time.perf_counter()
    if prof is not None:
        prof.enable()
    counts = backtest_file(path, Settings(), events=events, sink=sink)
    if prof is not None:
        prof.disable()
    secs = time.perf_counter() - t0
    if prof is not None:
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    return counts.events, secs, digest.hexdigest()[:16], outputs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, help="only the first N events of the file (default: all)")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each; the best is reported")
    ap.add_argument("--profile", action="store_true", help="also print a cProfile of the backtest (slower)")
    args = ap.parse_args()
    path = cached_events()
    tune_gc()  # as the backtest command does (both passes run with it)
    header("detection core: backtest vs decode-only, one process")
    best_dec = best_bt = 0.0
    for _ in range(args.repeat):
        n_dec, s_dec = decode_only(path, args.events)
        n_bt, s_bt, digest, outputs = backtest(path, args.events, args.profile)
        best_dec = max(best_dec, n_dec / s_dec)
        best_bt = max(best_bt, n_bt / s_bt)
        print(f"run: {n_bt:,} events; decode-only {s_dec:.1f} s, backtest {s_bt:.1f} s; "
              f"{outputs:,} outputs, digest {digest}", flush=True)
    figure("backtest", best_bt, "events/s", baseline=best_dec, baseline_name="decode-only")
    figure("backtest rate", best_bt, "events/s", goal=f">= {GOAL_RATE:,} events/s", met=best_bt >= GOAL_RATE)
    figure("backtest / decode-only", best_bt / best_dec, "", goal=f">= {GOAL_RATIO}",
           met=best_bt / best_dec >= GOAL_RATIO)
    return 0


if __name__ == "__main__":
    sys.exit(main())
