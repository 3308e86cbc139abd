"""State: bytes per account, and memory, as the number of accounts grows.

    python bench/state.py [--accounts 100000 1000000] [--per-account 3] [--realistic 300000] [--no-worker | --no-in-process]

1. Realistic sizes: the first ``--realistic`` events of the cached simulated file through the engine in
   process; serialised bytes of account, policy and link state (what the worker keeps in RocksDB and its
   changelog), per account.
2. For each ``--accounts`` A: a synthetic stream of ``--per-account`` events per account (real events of
   the file, re-addressed to A distinct accounts, each with its own payment fingerprint, so every account
   also owns a link group: the worst case for link state; three events, since an account is first
   summarised to its link keys at its third). Through the engine in process: serialised
   bytes per account, and this process's resident memory as the stream runs (a backtest keeps its state
   in dicts, so it grows with accounts, and must not grow with events of known accounts: the last pass
   only revisits them). Then, unless ``--no-worker``, the same stream through one real worker
   (RocksDB tables): its resident memory sampled as it runs.

Baseline of the memory figures: the same process (or worker) before the stream.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    accepted,
    bench_settings,
    cached_events,
    create_topics,
    figure,
    header,
    local_kafka,
    metric,
    produce,
    start_worker,
)

from pipeline.contract import codec  # noqa: E402
from pipeline.contract.eventfile import read_events  # noqa: E402
from pipeline.detection import DetectionConfig, Engine  # noqa: E402
from pipeline.proc import rss_mib  # noqa: E402
from pipeline.worker.app import STATS_INTERVAL_S  # noqa: E402
from pipeline.worker.tables import ROCKSDB_MEMORY  # noqa: E402

GOAL_BYTES = 1024


class Stores:
    """Dict stores of an in-process engine, kept at hand to measure them."""

    def __init__(self) -> None:
        self.accounts: dict[str, Any] = {}
        self.links: dict[str, Any] = {}
        self.policy: dict[str, Any] = {}
        self.engine = Engine(DetectionConfig(), accounts=self.accounts, links=self.links, policy=self.policy)

    def sizes(self) -> tuple[int, int, int, list[int]]:
        """Serialised bytes of account, policy and link state, and of each account state."""
        accounts = [len(s.to_bytes()) for s in self.accounts.values()]
        policy = sum(len(s.to_bytes()) for s in self.policy.values())
        links = sum(len(g.to_bytes()) for g in self.links.values())
        return sum(accounts), policy, links, accounts


def realistic(n: int) -> None:
    stores = Stores()
    for ev in itertools.islice(read_events(cached_events(), lambda bad: None), n):
        stores.engine.process(ev)
    acc, pol, lnk, sizes = stores.sizes()
    k = len(sizes)
    sizes.sort()
    print(f"realistic: {n:,} events of the simulated file, {k:,} accounts, {len(stores.links):,} link keys "
          f"({len(stores.policy):,} accounts with policy state)")
    print(f"  account state bytes: mean {acc / k:.0f}, median {statistics.median(sizes):.0f}, "
          f"p99 {sizes[int(0.99 * (k - 1))]}, max {sizes[-1]}")
    total = (acc + pol + lnk) / k
    print(f"  per account: account {acc / k:.0f} + policy {pol / k:.0f} + link groups {lnk / k:.0f} = {total:.0f} bytes")
    figure("realistic state per account", total, "bytes", goal=f"<= {GOAL_BYTES}", met=total <= GOAL_BYTES)


def source_events(n: int = 50_000) -> list[dict[str, Any]]:
    return list(itertools.islice(read_events(cached_events(), lambda bad: None), n))  # type: ignore[arg-type]


def synthetic(accounts: int, per_account: int, events: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """``per_account`` passes over ``accounts`` accounts; real events of the file, re-addressed."""
    source = itertools.cycle(events)
    t0 = 1_800_000_000_000
    i = 0
    for rnd in range(per_account):
        for a in range(accounts):
            ev = dict(next(source))
            ev.update(account_id=f"s{a:07d}", event_id=f"s{a:07d}-{rnd}", payment_fingerprint=f"pf-{a:07d}",
                      ts=t0 + i * 20)
            i += 1
            yield ev


def in_process(accounts: int, per_account: int) -> None:
    events = source_events()
    gc.collect()
    before = rss_mib()
    stores = Stores()
    marks: list[str] = []
    total = accounts * per_account
    for i, ev in enumerate(synthetic(accounts, per_account, events), start=1):
        stores.engine.process(ev)  # type: ignore[arg-type]
        if i % accounts == 0:
            marks.append(f"after pass {i // accounts}: {rss_mib() - before:,.0f} MiB")
    acc, pol, lnk, _ = stores.sizes()
    per = (acc + pol + lnk) / accounts
    grown = rss_mib() - before
    print(f"in process, {accounts:,} accounts x {per_account} events ({total:,} events): resident memory "
          f"growth {'; '.join(marks)}")
    print(f"  serialised: account {acc / accounts:.0f} + policy {pol / accounts:.0f} + link groups "
          f"{lnk / accounts:.0f} = {per:.0f} bytes per account; in memory {grown * 2**20 / accounts:,.0f} bytes "
          f"per account (Python objects)")
    figure(f"state per account at {accounts:,} accounts", per, "bytes", goal=f"<= {GOAL_BYTES}",
           met=per <= GOAL_BYTES)
    del stores


def worker(accounts: int, per_account: int) -> None:
    messages = [(ev["account_id"].encode(), codec.encode(ev))
                for ev in synthetic(accounts, per_account, source_events())]
    total = len(messages)
    with tempfile.TemporaryDirectory(prefix="dg-bench-") as tmp, local_kafka() as bootstrap:
        workdir = Path(tmp)
        settings = bench_settings(bootstrap, workdir)
        create_topics(settings)
        produce(settings, messages)
        del messages
        proc, port = start_worker(settings, workdir / "worker.log")
        try:
            samples: list[tuple[float, float, float]] = []
            idle_rss = None
            deadline = time.monotonic() + 3600
            while time.monotonic() < deadline:
                proc.check()
                n = accepted([port])
                rss = proc.rss_mib()
                if n == 0:
                    idle_rss = rss
                samples.append((n, rss, time.monotonic()))
                if n >= total:
                    break
                time.sleep(1.0)
            time.sleep(STATS_INTERVAL_S + 1)  # the worker's next report of RocksDB's memory
            native = {c: metric(port, "dg_rocksdb_memory_bytes", component=c) for c in ROCKSDB_MEMORY}
            store = sum(f.stat().st_size for f in Path(settings.store_dir).rglob("*") if f.is_file())
        finally:
            proc.stop()
    quarter = [next(r for n, r, _ in samples if n >= q * total / 4) for q in (1, 2, 3, 4)]
    print(f"worker, {accounts:,} accounts x {per_account} events: resident memory at 25/50/75/100% of the "
          f"stream {' / '.join(f'{r:.0f}' for r in quarter)} MiB (before the first event {idle_rss or 0:.0f} MiB); "
          f"RocksDB files {store / 2**20:.0f} MiB = {store / accounts:.0f} bytes per account")
    figure(f"worker memory at {accounts:,} accounts", quarter[-1], "MiB", baseline=idle_rss or float("nan"),
           baseline_name="idle worker")
    start = [x for x in samples if x[0] == 0][-1:] or samples[:1]  # the last look before the first event
    passes = [next((n, r, t) for n, r, t in samples if n >= k * accounts) for k in range(1, per_account + 1)]
    print(f"worker resident memory after each pass over the accounts: {' / '.join(f'{r:.0f}' for _, r, _ in passes)} "
          f"MiB; events/s in each pass: " + " / ".join(
              f"{(n - n0) / (t - t0):,.0f}" for (n0, _, t0), (n, _, t) in zip(start + passes[:-1], passes, strict=True)))
    print("RocksDB's memory estimates at the end (dg_rocksdb_memory_bytes): "
          + ", ".join(f"{c} {v / 2**20:.0f} MiB" for c, v in native.items()), flush=True)
    growth = quarter[-1] - quarter[0]
    print(f"worker memory growth from 25% to 100% of the stream: {growth:+.0f} MiB", flush=True)
    if per_account > 3:  # from the third pass on every account and its link groups exist: only revisits
        settled = next(r for n, r, _ in samples if n >= 3 * accounts)
        later = total - 3 * accounts
        print(f"worker memory growth after pass 3 (every account and link group known; {later:,} more events "
              f"of known accounts): {quarter[-1] - settled:+.0f} MiB ({settled:.0f} -> {quarter[-1]:.0f} MiB)",
              flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--accounts", type=int, nargs="+", default=[100_000])
    ap.add_argument("--per-account", type=int, default=3)
    ap.add_argument("--realistic", type=int, default=300_000, help="events of the file for part 1; 0 skips it")
    ap.add_argument("--no-worker", action="store_true", help="skip the worker run of part 2")
    ap.add_argument("--no-in-process", action="store_true", help="skip the in-process run of part 2")
    args = ap.parse_args()
    header("state: bytes per account and memory")
    if args.realistic:
        realistic(args.realistic)
    for a in args.accounts:
        if not args.no_in_process:
            in_process(a, args.per_account)
        if not args.no_worker:
            worker(a, args.per_account)
    return 0


if __name__ == "__main__":
    sys.exit(main())
