"""State cache: misses of the worker's decoded-state caches, scan-resistant against a plain LRU.

    python bench/state_cache.py [--events 300000] [--batch 500]

The first ``--events`` events of the cached simulated file go through the detection engine in process,
in batches of ``--batch`` events as the worker's account agent takes them. The account states and link
groups each batch touched (what the worker writes, then keeps decoded, at the end of the batch) are
replayed through ``pipeline.worker.state.StateCache`` with the worker's capacities and weights: a lookup before
the batch, a ``keep`` after it. A miss costs the worker a RocksDB read and a decode, and for a link group
also a rebuild of its running aggregates, all in proportion to its members; so link-group misses are
also counted by member weight. The baseline is the same cache as a plain LRU (``probation=1.0``).
Deterministic: no clock, no Kafka; the figures are counts, not rates.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import cached_events, figure, header  # noqa: E402

from pipeline.contract.eventfile import read_events  # noqa: E402
from pipeline.detection import DetectionConfig, Engine  # noqa: E402
from pipeline.worker.state import ACCOUNT_CACHE, LINK_CACHE, StateCache, link_group_weight  # noqa: E402


class Recording(dict[str, Any]):
    """A dict store that remembers which keys were written since the last ``take``."""

    def __init__(self, weight: Any) -> None:
        super().__init__()
        self.weight = weight
        self.written: dict[str, Any] = {}

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self.written[key] = value

    def take(self) -> list[tuple[str, int]]:
        batch = [(key, self.weight(obj)) for key, obj in self.written.items()]
        self.written = {}
        return batch


def misses(batches: list[list[tuple[str, int]]], capacity: int, probation: float) -> tuple[int, int]:
    """(lookups missed, their total weight) of the batches' keys through one cache."""
    cache = StateCache(capacity, weight=lambda w: w, probation=probation)
    n = weight = 0
    for batch in batches:
        for key, w in batch:
            if cache.get(key) is None:
                n += 1
                weight += w
        for key, w in batch:
            cache.keep(key, w)
    return n, weight


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--batch", type=int, default=500, help="events per batch (the worker takes up to 2,000)")
    args = ap.parse_args()
    header("state cache: misses, scan-resistant against plain LRU")
    accounts, links = Recording(lambda st: 1), Recording(link_group_weight)
    engine = Engine(DetectionConfig(), accounts=accounts, links=links)
    account_batches: list[list[tuple[str, int]]] = []
    link_batches: list[list[tuple[str, int]]] = []
    events = itertools.islice(read_events(cached_events(), lambda bad: None), args.events)
    for i, ev in enumerate(events, start=1):
        engine.process(ev)
        if i % args.batch == 0:
            account_batches.append(accounts.take())
            link_batches.append(links.take())
    print(f"{args.events:,} events in batches of {args.batch}: {len(accounts):,} accounts, {len(links):,} link groups "
          f"(total weight {sum(link_group_weight(g) for g in links.values()):,}); capacities {ACCOUNT_CACHE:,} and "
          f"{LINK_CACHE:,}", flush=True)
    for name, batches, capacity in (("account states", account_batches, ACCOUNT_CACHE),
                                    ("link groups", link_batches, LINK_CACHE)):
        (n, w), (n_lru, w_lru) = misses(batches, capacity, 0.2), misses(batches, capacity, 1.0)
        figure(f"{name} missed", n, "lookups", baseline=n_lru, baseline_name="plain LRU")
        if name == "link groups":
            figure(f"{name} missed, by weight (members + 8)", w, "weight", baseline=w_lru, baseline_name="plain LRU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
