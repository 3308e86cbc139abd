"""Small hand-made alerts and a logged-in aiohttp test client for the console's unit tests."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from pipeline.console import auth
from pipeline.console.web import Console, make_app

PASSWORD = "a-long-enough-password"
BASE_TS = 1_772_409_600_000
CAMPAIGN = "camp-0001"


def alert(alert_id: str, account: str | None, *, ts: int = BASE_TS, severity: str = "high",
          kind: str = "account_behaviour", campaign: str | None = None, related: list[str] | None = None,
          similarity: float | None = None) -> dict[str, Any]:
    reasons: list[dict[str, Any]] = [{"code": "reasoning_elicitation", "detail": "100% of requests ask for "
                                      "reasoning traces", "value": 1.0, "baseline": None}]
    if similarity is not None:
        reasons.insert(0, {"code": "campaign_member", "detail": "behaves like the core", "value": similarity,
                           "baseline": 0.6})
    return {"schema_version": 1, "alert_id": alert_id, "ts": ts, "account_id": account, "campaign_id": campaign,
            "kind": kind, "score": 0.7, "severity": severity, "reasons": reasons, "related_accounts": related or [],
            "window_start_ts": ts - 60_000, "window_events": 10, "detector_version": "test"}


def action(action_id: str, account: str, alert_id: str, *, name: str = "throttle", ts: int = BASE_TS,
           lifts: list[str] | None = None) -> dict[str, Any]:
    return {"schema_version": 2 if name == "lift" else 1, "action_id": action_id, "ts": ts, "account_id": account,
            "action": name, "mode": "shadow", "reason_codes": ["campaign_member"], "alert_ids": [alert_id],
            "expires_ts": None, "policy_version": "test", "signature": "00", **({"lifts": lifts} if lifts else {})}


def campaign_alerts() -> list[dict[str, Any]]:
    """A campaign of three members (two with alerts of their own), and one lone account."""
    members = ["acct-a", "acct-b", "acct-c"]
    return [
        alert("alr-camp", None, severity="critical", kind="coordinated_campaign", campaign=CAMPAIGN, related=members),
        alert("alr-a", "acct-a", severity="critical", kind="coordinated_campaign", campaign=CAMPAIGN,
              similarity=0.95),
        alert("alr-b", "acct-b", severity="critical", kind="coordinated_campaign", campaign=CAMPAIGN,
              similarity=0.7, ts=BASE_TS + 1000),
        alert("alr-lone", "acct-lone", severity="medium", ts=BASE_TS + 5000),
    ]


def users_file(tmp_path: Path, name: str = "ana") -> Path:
    path = tmp_path / "users"
    auth.add_user(path, name, PASSWORD)
    return path


async def client_for(console: Console) -> TestClient:
    client = TestClient(TestServer(make_app(console)))
    await client.start_server()
    return client


def csrf_of(page: str) -> str:
    found = re.search(r"name=csrf value='([^']+)'", page)
    assert found, "the page has a CSRF field"
    return found.group(1)


async def log_in(client: TestClient, user: str = "ana", password: str = PASSWORD) -> str:
    """Sign in through the login form; the session's CSRF token (from the queue page)."""
    page = await (await client.get("/login")).text()
    r = await client.post("/login", data={"csrf": csrf_of(page), "user": user, "password": password, "next": "/"})
    assert r.status == 200 and r.url.path == "/", await r.text()
    return csrf_of(await r.text())


ANALYST_KEY = "console-test-analyst-key-0123456789abcdef"


class FakeProducer:
    """Stands in for the Kafka producer: records what is sent, answers with a partition and offset."""

    def __init__(self, partitions: int = 4) -> None:
        self.partitions = partitions
        self.sent: list[dict[str, Any]] = []

    def partitions_for(self, topic: str) -> set[int]:
        return set(range(self.partitions))

    def send(self, topic: str, key: bytes, value: bytes, partition: int) -> Any:
        self.sent.append({"topic": topic, "key": key, "value": value, "partition": partition})
        meta = type("Meta", (), {"partition": partition, "offset": len(self.sent) - 1})

        class Done:
            def get(self, timeout: float) -> Any:
                return meta

        return Done()

    def close(self, timeout: float) -> None:
        pass


def run(coro_fn: Callable[[TestClient], Awaitable[Any]], console: Console) -> Any:
    """Run ``coro_fn(client)`` against the console's app in a fresh event loop."""

    async def main() -> Any:
        client = await client_for(console)
        try:
            return await coro_fn(client)
        finally:
            await client.close()

    return asyncio.run(main())
