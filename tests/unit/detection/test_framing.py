"""Framing resistance: nobody is condemned for sharing something with accounts it does not behave like.

An attacker who knows a victim's prompt template (and copies its client fingerprint, which is a user
agent and a TLS fingerprint) runs throwaway accounts on it round the clock, hoping that the group they
form with the victim is judged a campaign and the victim named with it. The throwaways may be caught; the
victim, a person working in office hours, must get a review at most.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from pipeline.detection import DetectionConfig, Engine
from pipeline.detection.config import HOUR_MS
from pipeline.offline.evaluation import flagged_accounts
from tests.factories import BASE_TS, event

TEMPLATE = 0x5A5A_F00D_1234_BEEF
VICTIM = "acct-victim"
DAYS = 3


def _near(rng: random.Random, bits: int) -> str:
    h = TEMPLATE
    for _ in range(rng.randint(0, bits)):
        h ^= 1 << rng.randrange(64)
    return f"{h:016x}"


def victim_events(rng: random.Random) -> list[dict[str, Any]]:
    """A researcher in office hours: two sessions a day of 10-30 requests a few seconds to minutes apart,
    reasoning on for most, prompts from their own template, ordinary output lengths."""
    out = []
    for day in range(DAYS):
        for start_h in (9 + rng.random() * 2, 14 + rng.random() * 2):
            ts = BASE_TS + day * 24 * HOUR_MS + int(start_h * HOUR_MS)
            for _ in range(rng.randint(10, 30)):
                ts += int(rng.lognormvariate(3.0, 1.0) * 1000)
                out.append(event(0, account_id=VICTIM, ts=ts, prompt_simhash=_near(rng, 2),
                                 reasoning_requested=rng.random() < 0.7, capability="reasoning",
                                 output_tokens=int(rng.lognormvariate(6.8, 0.5)),
                                 payment_fingerprint="pf-victim", client_fingerprint="cf-victim",
                                 ip_prefix="198.51.100.0/24"))
    return out


def throwaway_events(rng: random.Random, n: int, cards: str) -> list[dict[str, Any]]:
    """``n`` accounts on the victim's template and client fingerprint, one request each every ~90 s round
    the clock, reasoning on, long outputs; paying from a pool of four cards or each with its own."""
    out = []
    for i in range(n):
        ts = BASE_TS + int(rng.random() * HOUR_MS)
        while ts < BASE_TS + DAYS * 24 * HOUR_MS:
            ts += int(90_000 * (0.8 + 0.4 * rng.random()))
            out.append(event(0, account_id=f"throwaway-{i:02d}", ts=ts, prompt_simhash=_near(rng, 2),
                             reasoning_requested=True, capability="reasoning", output_tokens=5000,
                             payment_fingerprint=f"pf-pool-{i % 4}" if cards == "pool" else f"pf-own-{i}",
                             client_fingerprint="cf-victim", ip_prefix=f"203.0.113.{i}/32"))
    return out


@pytest.mark.parametrize("cards", ["pool", "own"])
def test_a_victim_whose_template_is_copied_by_throwaways_gets_a_review_at_most(cards: str) -> None:
    rng = random.Random(11)
    events = victim_events(rng) + throwaway_events(rng, 20, cards)
    events.sort(key=lambda e: e["ts"])
    for j, e in enumerate(events):
        e["event_id"] = f"f-{j}"
    engine = Engine(DetectionConfig())
    flagged: set[str] = set()
    victim_outputs = []
    for out in engine.replay(events):  # type: ignore[arg-type]
            flagged.update(flagged_accounts(out.topic, out.value))
            v = out.value
            if v.get("account_id") == VICTIM or VICTIM in (v.get("related_accounts") or []):
                victim_outputs.append(v)
    assert VICTIM not in flagged, victim_outputs
    assert all(v.get("action", "flag_for_review") == "flag_for_review" for v in victim_outputs)
    # the group the throwaways made with the victim was judged: they are what it condemned
    assert len(flagged) >= 10 and all(a.startswith("throwaway-") for a in flagged)
