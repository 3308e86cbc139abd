"""Console queue: the queue page's answer time with 10,000 alerts in the store.

    python bench/console_queue.py [--alerts 10000] [--requests 50]

Synthetic alerts (campaigns of 5 to 40 members with a campaign alert and member alerts, and lone accounts
with one to three alerts of their own) are written into a fresh console store, as the consumer writes
them. The console's aiohttp application then serves on a loopback port, and a signed-in client asks for
the queue (default filters, every status, high and above, and campaigns only), a campaign page and an
account page, ``--requests`` times each, through HTTP. The figure is the median answer time of each; the
baseline is ``/healthz`` on the same server in the same run (the cost of aiohttp and the client alone).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import figure, header  # noqa: E402

from pipeline.console import auth, store  # noqa: E402
from pipeline.console.store import LIVE, Batch  # noqa: E402
from pipeline.console.web import make_app, open_console  # noqa: E402

BASE_TS = 1_772_409_600_000
SEVERITIES = ("low", "medium", "high", "critical")
PASSWORD = "bench-console-password"


def _alert(i: int, account: str | None, campaign: str | None, ts: int, rng: random.Random,
           related: list[str] | None = None) -> dict[str, Any]:
    kind = "coordinated_campaign" if campaign else rng.choice(("account_behaviour", "behaviour_shift"))
    return {"schema_version": 1, "alert_id": f"alr-{i:08d}", "ts": ts, "account_id": account,
            "campaign_id": campaign, "kind": kind, "score": rng.random(), "severity": rng.choice(SEVERITIES),
            "reasons": [{"code": "campaign_member" if campaign else "reasoning_elicitation",
                         "detail": "behaves like the group's core", "value": rng.random(), "baseline": 0.6}],
            "related_accounts": related or [], "window_start_ts": ts - 600_000, "window_events": 40,
            "detector_version": "bench"}


def synthetic_alerts(n: int, seed: int = 1) -> list[dict[str, Any]]:
    """``n`` alerts: about a third in campaigns, the rest on lone accounts, spread over a week."""
    rng, i = random.Random(seed), 0
    out: list[dict[str, Any]] = []
    while len(out) < n:
        ts = BASE_TS + rng.randrange(7 * 86_400_000)
        if rng.random() < 0.05:
            camp, members = f"camp-{i:06d}", [f"acct-c{i:06d}-{m}" for m in range(rng.randint(5, 40))]
            out.append(_alert(i, None, camp, ts, rng, members))
            i += 1
            for m in members[: n - len(out)]:
                out.append(_alert(i, m, camp, ts + rng.randrange(3_600_000), rng))
                i += 1
        else:
            acct = f"acct-{rng.randrange(n // 2):06d}"
            out.append(_alert(i, acct, None, ts, rng))
            i += 1
    return out[:n]


async def _median_ms(client: Any, path: str, requests: int) -> float:
    times = []
    for _ in range(requests):
        t0 = time.perf_counter()
        r = await client.get(path)
        await r.read()
        assert r.status == 200, (path, r.status)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


async def measure(store_path: Path, users: Path, paths: dict[str, str], requests: int) -> dict[str, float]:
    from aiohttp.test_utils import TestClient, TestServer

    client = TestClient(TestServer(make_app(open_console(store_path, users))))
    await client.start_server()
    try:
        page = await (await client.get("/login")).text()
        token = re.search(r"name=csrf value='([^']+)'", page)
        assert token is not None
        r = await client.post("/login", data={"csrf": token.group(1), "user": "bench", "password": PASSWORD})
        assert r.status == 200 and r.url.path == "/"
        return {name: await _median_ms(client, path, requests) for name, path in paths.items()}
    finally:
        await client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alerts", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args()
    header(f"console queue page, {args.alerts:,} alerts")
    work = Path(tempfile.mkdtemp(prefix="dg-bench-console-"))
    users = work / "users"
    auth.add_user(users, "bench", PASSWORD)
    alerts = synthetic_alerts(args.alerts)
    conn = store.connect(work / "console.db")
    t0 = time.perf_counter()
    with Batch(conn) as batch:
        for a in alerts:
            batch.alert(LIVE, a)
    load_s = time.perf_counter() - t0
    figure("store load", len(alerts) / load_s, "alerts/s")
    campaign = next(a["campaign_id"] for a in alerts if a["campaign_id"])
    account = next(a["account_id"] for a in alerts if a["account_id"] and not a["campaign_id"])
    paths = {"healthz": "/healthz", "queue": "/", "queue, every status": "/?status=",
             "queue, high and above": "/?severity=high", "queue, campaigns": "/?kind=campaign",
             "campaign page": f"/campaign/{campaign}", "account page": f"/account/{account}"}
    got = asyncio.run(measure(work / "console.db", users, paths, args.requests))
    base = got.pop("healthz")
    for name, ms in got.items():
        queue = name.startswith("queue")
        figure(f"{name} (median of {args.requests})", ms, "ms", baseline=base, baseline_name="/healthz",
               goal="< 300 ms" if queue else "", met=ms < 300 if queue else None)
    return 0 if all(ms < 300 for name, ms in got.items() if name.startswith("queue")) else 1


if __name__ == "__main__":
    sys.exit(main())
