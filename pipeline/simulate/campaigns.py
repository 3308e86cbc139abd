"""Distillation campaigns: coordinated harvesting of model outputs through many accounts (label ``distillation``).

Each function creates one or more campaigns (``camp-<kind>-<n>``) and returns their event columns. The
``mix`` parameter (hard scenario) turns a share of a campaign's requests into varied, human-looking
traffic so that members do not look purely templated.
"""

from __future__ import annotations

import numpy as np

from pipeline.contract.simhash import flip_bits, random_hashes

from .populations import CASUAL_CAPS, CASUAL_CAPS_P, Block
from .timing import FLAT, HUMAN, diurnal, sessions, steady
from .traffic import concat, events, lognormal_int, models, pick
from .world import Accounts, World

HARVEST_CAPS = ("reasoning", "math", "analysis")


def _pool(world: World, acc: Accounts, attr: str, size: int) -> None:
    """Make ``size`` values of ``attr`` the only ones the campaign's accounts use."""
    acc.share(attr, getattr(acc, attr)[: max(1, size)].copy(), world.rng)


def _mix(
    world: World, share: float, simhash: np.ndarray, cap: np.ndarray, reasoning: np.ndarray, out: np.ndarray
) -> None:
    """Replace a ``share`` of requests (in place) by varied traffic: free-form prompt, chat-like shape."""
    rng = world.rng
    sel = rng.random(len(simhash)) < share
    k = int(sel.sum())
    simhash[sel] = random_hashes(rng, k)
    cap[sel] = pick(world, CASUAL_CAPS, k, CASUAL_CAPS_P)
    reasoning[sel] = rng.random(k) < 0.1
    out[sel] = lognormal_int(world, 300, 0.7, k, 1, 4_000)


def _templated(
    world: World,
    n_templates: int,
    caps: tuple[str, ...],
    m: int,
    flips: tuple[int, int],
    choice: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Prompt hashes near a few templates: returns ``(simhash, capability, template index)``."""
    rng = world.rng
    templates = random_hashes(rng, n_templates)
    tcap = pick(world, caps, n_templates)
    t = rng.integers(0, n_templates, m) if choice is None else choice
    return flip_bits(rng, templates[t], *flips), tcap[t].copy(), t


def reasoning_harvest(world: World, p: dict) -> Block:
    """Reasoning-trace / rubric-grading harvesting: tens of accounts load-balanced by one script.

    20-60 accounts (``n``) paid with 2-5 shared cards and 1-3 client fingerprints, on a few datacenter
    prefixes. One request every ``interval_s`` seconds (relative jitter ``jitter``) around the clock,
    dealt round-robin to the members, so each member sees a near-constant inter-arrival time. Prompts
    come from a few templates (``templates``; 0-3 differing bits), reasoning requested,
    reasoning/math/analysis, short inputs and long outputs (reasoning traces), more rate limits.
    """
    rng = world.rng
    cid = world.campaign_id("reasoning")
    n = world.count(p["n"])
    acc = world.accounts(
        n,
        tiers=("pro", "team"),
        countries=world.countries(n, ("US", "SG", "GB")),
        max_keys=2,
        residential=False,
    )
    acc.language[:] = "en"
    _pool(world, acc, "payment", world.i(p["payments"]))
    _pool(world, acc, "client", world.i((1, 3)))
    ips = world.prefixes(world.i((4, 12)), datacenter=True)
    if p.get("reseller_share", 0) > 0:
        ips = np.concatenate([ips, world.reseller_ips])
    acc.share("ip", ips, rng)
    acc.asn[:] = rng.choice(world.datacenter_asns[:3], size=n)
    acc.asn[np.isin(acc.ip, world.reseller_ips)] = world.reseller_asn
    start = world.t0 + int(rng.uniform(0, 0.1) * (world.t1 - world.t0))
    # The script's total pace scales with its fleet, so each member's rate stays the same at any scale.
    ts = steady(world, world.u(p["interval_s"]) / world.scale, p["jitter"], start, world.t1)
    m = len(ts)
    idx = (np.arange(m) + int(rng.integers(n))) % n
    simhash, cap, _ = _templated(world, world.i(p["templates"]), HARVEST_CAPS, m, p["flips"])
    reasoning = np.ones(m, dtype=bool)
    out = lognormal_int(world, 5_500, 0.5, m, 200, 32_000)
    _mix(world, p.get("mix", 0.0), simhash, cap, reasoning, out)
    block = events(
        world,
        acc,
        idx,
        ts,
        model=models(world, ts, 0.0, 0.6, 12),
        input_tokens=lognormal_int(world, 550, 0.5, m, 40, 8_000),
        output_tokens=out,
        simhash=simhash,
        capability=cap,
        reasoning=reasoning,
        status_p=(0.005, 0.04, 0.015),
    )
    world.register("camp_reasoning", acc, m, (cid, "reasoning"))
    return block


def agentic_harvest(world: World, p: dict) -> Block:
    """Agentic / tool-use / coding harvesting: hundreds of accounts behind proxies, one agent harness.

    150-400 accounts (``n``) with a handful (3-6) of shared client fingerprints and a pool of cards
    (about one per 6-15 accounts). Each account exits through two proxies drawn from a pool of datacenter
    prefixes and the reseller's prefixes (share ``reseller_share``). Agent sessions around the clock,
    tens of requests each a few seconds apart, from 4-10 task templates (0-3 bits), each template with
    its tool set (8-40 tools), coding/agentic, growing conversations, long code outputs.
    """
    rng = world.rng
    cid = world.campaign_id("agentic")
    n = world.count(p["n"])
    acc = world.accounts(n, tiers=("pro", "team"), max_keys=2, residential=False)
    _pool(world, acc, "client", world.i((3, 6)))
    _pool(world, acc, "payment", n // world.i((6, 15)))
    dc = world.prefixes(world.i((20, 60)), datacenter=True)
    dc_asn = rng.choice(world.datacenter_asns, size=len(dc))
    via_reseller = rng.random((n, 2)) < p["reseller_share"]
    proxy = rng.integers(0, len(dc), (n, 2))
    rs = rng.integers(0, len(world.reseller_ips), (n, 2))
    s_acc, s_ts = diurnal(world, world.uniforms(p["sessions_per_day"], n), acc.tz, FLAT)
    ns = len(s_ts)
    sizes = lognormal_int(world, 22, 0.6, ns, 4, 150)
    sess, pos, ts = sessions(world, s_ts, sizes, rng.uniform(5, 15, ns), 0.5)
    idx = s_acc[sess]
    m = len(ts)
    nt = world.i(p["templates"])
    simhash, cap, t = _templated(
        world, nt, ("coding", "agentic"), m, p["flips"], choice=rng.integers(0, nt, ns)[sess]
    )
    tools = rng.integers(8, 41, nt)[t]
    reasoning = (rng.random(nt) < 0.5)[t]
    out = lognormal_int(world, 1_400, 0.6, m, 20, 16_000)
    _mix(world, p.get("mix", 0.0), simhash, cap, reasoning, out)
    which = rng.integers(0, 2, m)
    res = via_reseller[idx, which]
    ip = np.where(res, world.reseller_ips[rs[idx, which]], dc[proxy[idx, which]])
    asn = np.where(res, world.reseller_asn, dc_asn[proxy[idx, which]])
    turns = np.clip(3 + 2 * pos, 1, 200)
    block = events(
        world,
        acc,
        idx,
        ts,
        model=models(world, ts, 0.05, 0.5, 10),
        input_tokens=lognormal_int(world, 2_000 + 600 * turns, 0.3, m, 200, 190_000),
        output_tokens=out,
        simhash=simhash,
        capability=cap,
        reasoning=reasoning,
        n_turns=turns,
        n_tools=tools,
        status_p=(0.005, 0.03, 0.008),
        ip=ip,
        asn=asn,
        chars_per_token=3.4,
    )
    world.register("camp_agentic", acc, m, (cid, "agentic"))
    return block


def hydra(world: World, p: dict) -> Block:
    """Hydra network: accounts used up one after another, each making its quota and going silent.

    ``slots`` parallel chains; in each, an account sends ``quota`` requests one every ``interval_s``
    seconds (jittered), then is never seen again, and the next account appears 1-30 minutes later. All
    accounts draw from small pools of cards (3-8) and client fingerprints (2-4) and exit through
    residential proxy prefixes of their own. Templated (5-12 templates) reasoning/coding/math with
    reasoning mostly requested. Half of the traffic moves to the new model within a day of its release.
    """
    rng = world.rng
    cid = world.campaign_id("hydra")
    starts: list[int] = []
    sizes: list[int] = []
    gaps: list[float] = []
    for _ in range(world.count(p["slots"])):
        t = world.t0 + int(rng.uniform(0, 2) * 3_600_000)
        interval = world.u(p["interval_s"])
        while t < world.t1:
            q = world.i(p["quota"])
            starts.append(t)
            sizes.append(q)
            gaps.append(interval)
            t += int(q * interval * 1000) + int(rng.uniform(60, 1_800) * 1000)
    n = len(starts)
    acc = world.accounts(n, tiers=("free", "pro"), tier_p=(0.3, 0.7))
    _pool(world, acc, "payment", world.i((3, 8)))
    _pool(world, acc, "client", world.i((2, 4)))
    sess, _, ts = sessions(world, np.array(starts, dtype=np.int64), np.array(sizes), np.array(gaps), 0.3)
    keep = ts < world.t1
    idx, ts = sess[keep], ts[keep]
    m = len(ts)
    simhash, cap, _ = _templated(
        world, world.i(p["templates"]), ("reasoning", "coding", "math"), m, p["flips"]
    )
    reasoning = rng.random(m) < 0.8
    out = lognormal_int(world, 3_500, 0.6, m, 100, 32_000)
    _mix(world, p.get("mix", 0.0), simhash, cap, reasoning, out)
    block = events(
        world,
        acc,
        idx,
        ts,
        model=models(world, ts, 0.0, 0.5, 4),
        input_tokens=lognormal_int(world, 700, 0.5, m, 40, 20_000),
        output_tokens=out,
        simhash=simhash,
        capability=cap,
        reasoning=reasoning,
        status_p=(0.005, 0.05, 0.01),
    )
    world.register("camp_hydra", acc, m, (cid, "hydra"))
    return block


def slow_and_low(world: World, p: dict) -> Block:
    """Slow-and-low network: hundreds of accounts at human volume, tied together only by what they share.

    ``n`` accounts each sending ``per_day`` requests a day at human hours of their claimed timezone,
    on residential prefixes of their own. They share a template family (6-15 templates 4-8 bits from one
    base prompt, requests 0-3 bits from a template), a small pool of client fingerprints (3-6), cards
    (one per 8-15 accounts) and reasoning elicitation; reasoning/math/analysis with long outputs.
    """
    rng = world.rng
    cid = world.campaign_id("slowlow")
    n = world.count(p["n"])
    acc = world.accounts(n, tiers=("free", "pro"), tier_p=(0.5, 0.5))
    _pool(world, acc, "client", world.i((3, 6)))
    _pool(world, acc, "payment", n // world.i((8, 15)))
    idx, ts = diurnal(world, world.uniforms(p["per_day"], n), acc.tz, HUMAN)
    m = len(ts)
    base = random_hashes(rng, 1)
    nt = world.i((6, 15))
    family = flip_bits(rng, np.repeat(base, nt), 4, 8)
    t = rng.integers(0, nt, m)
    simhash = flip_bits(rng, family[t], *p["flips"])
    cap = pick(world, HARVEST_CAPS, nt)[t].copy()
    reasoning = rng.random(m) < 0.95
    out = lognormal_int(world, 4_000, 0.6, m, 100, 32_000)
    _mix(world, p.get("mix", 0.0), simhash, cap, reasoning, out)
    block = events(
        world,
        acc,
        idx,
        ts,
        model=models(world, ts, 0.0, 0.4, 24),
        input_tokens=lognormal_int(world, 500, 0.5, m, 30, 8_000),
        output_tokens=out,
        simhash=simhash,
        capability=cap,
        reasoning=reasoning,
        status_p=(0.004, 0.01, 0.01),
    )
    world.register("camp_slowlow", acc, m, (cid, "slowlow"))
    return block


def naive(world: World, p: dict) -> Block:
    """A single naive high-volume account: one script, one datacenter prefix, around the clock.

    One request every ``interval_s`` seconds (jitter 30%), 1-3 templates (0-3 bits), reasoning on,
    reasoning/math, long outputs; many rate limits; jumps to the new model right after its release.
    """
    rng = world.rng
    cid = world.campaign_id("naive")
    acc = world.accounts(1, tiers=("pro",), residential=False)
    ts = steady(
        world,
        world.u(p["interval_s"]),
        0.3,
        world.t0 + int(rng.uniform(0, 0.05) * (world.t1 - world.t0)),
        world.t1,
    )
    m = len(ts)
    simhash, cap, _ = _templated(world, world.i((1, 3)), ("reasoning", "math"), m, p["flips"])
    reasoning = np.ones(m, dtype=bool)
    out = lognormal_int(world, 6_000, 0.5, m, 200, 32_000)
    _mix(world, p.get("mix", 0.0), simhash, cap, reasoning, out)
    block = events(
        world,
        acc,
        np.zeros(m, dtype=np.int64),
        ts,
        model=models(world, ts, 0.0, 0.9, 2),
        input_tokens=lognormal_int(world, 600, 0.4, m, 40, 8_000),
        output_tokens=out,
        simhash=simhash,
        capability=cap,
        reasoning=reasoning,
        status_p=(0.005, 0.12, 0.01),
    )
    world.register("camp_naive", acc, m, (cid, "naive"))
    return concat([block])
