"""Distillation campaigns built to evade detectors that learned the simulator (label ``distillation``).

Today's five kinds (``campaigns``) share cards, client fingerprints and near-identical templates. These
campaigns drop one tell each: own card and client per account with varied prompts (``diverse``), human
pace with ordinary traffic mixed in (``human``), tiny per-account volume (``lowvol``), or cover under an
organisation with institutional tiers (``org``).
"""

from __future__ import annotations

import numpy as np

from pipeline.contract.simhash import flip_bits, random_hashes

from .campaigns import HARVEST_CAPS, _mix, _pool, _templated
from .populations import Block
from .timing import HUMAN, diurnal, sessions, steady
from .traffic import events, lognormal_int, models
from .world import COUNTRIES, Accounts, World

DIVERSE_CAPS = ("reasoning", "math", "analysis", "coding")


def _proxy_pool(world: World, n: int, reseller: bool) -> tuple[np.ndarray, np.ndarray]:
    """A pool of ``n`` exit prefixes with their ASNs: half datacenter, half residential (plus the reseller's)."""
    rng = world.rng
    k = n // 2
    ips = np.concatenate([world.prefixes(k, datacenter=True), world.prefixes(n - k)])
    isp = np.concatenate([world.isp_asns[c[0]] for c in COUNTRIES])
    asn = np.concatenate([rng.choice(world.datacenter_asns, size=k), rng.choice(isp, size=n - k)])
    if reseller:
        ips = np.concatenate([ips, world.reseller_ips])
        asn = np.concatenate([asn, np.full(len(world.reseller_ips), world.reseller_asn)])
    return ips, asn.astype(np.int64)


def _exits(world: World, pool: tuple[np.ndarray, np.ndarray], m: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-request exit prefix and ASN drawn at random from a proxy pool."""
    j = world.rng.integers(0, len(pool[0]), m)
    return pool[0][j], pool[1][j]


def diverse(world: World, p: dict) -> Block:
    """A campaign with nothing shared per account: own card, own client, varied prompts, one script.

    ``n`` (60-150) accounts, each with its own card and client fingerprint, free/pro/team. One global
    stream of requests, its interval chosen so each account makes ``per_day`` (150-600) requests a day,
    dealt to accounts at random round the clock with a few seconds of per-request jitter; each request
    exits through a pool of ``proxies`` (10-40) datacenter and residential prefixes plus the reseller's.
    Half of the prompts are ``flips`` (8-20) bits from one of ``templates`` (3-8), the rest fresh random;
    reasoning on 90%; reasoning/math/analysis/coding; long outputs (lognormal median 4,000-6,000).
    """
    rng = world.rng
    cid = world.campaign_id("diverse")
    n = world.count(p["n"])
    acc = world.accounts(n, tiers=("free", "pro", "team"), tier_p=(0.3, 0.55, 0.15))
    pool = _proxy_pool(world, world.i(p["proxies"]), reseller=True)
    interval = 86_400 / (world.u(p["per_day"]) * n)
    start = world.t0 + int(rng.uniform(0, 0.1) * (world.t1 - world.t0))
    ts = steady(world, interval, 0.5, start, world.t1)
    m = len(ts)
    ts = ts + rng.integers(0, 5_000, m)
    idx = rng.integers(0, n, m)
    simhash, cap, _ = _templated(world, world.i(p["templates"]), DIVERSE_CAPS, m, p["flips"])
    fresh = rng.random(m) < 0.5
    simhash[fresh] = random_hashes(rng, int(fresh.sum()))
    ip, asn = _exits(world, pool, m)
    block = events(
        world,
        acc,
        idx,
        ts,
        model=models(world, ts, 0.0, 0.6, 12),
        input_tokens=lognormal_int(world, 650, 0.6, m, 40, 12_000),
        output_tokens=lognormal_int(world, world.u((4_000, 6_000)), 0.5, m, 200, 32_000),
        simhash=simhash,
        capability=cap,
        reasoning=rng.random(m) < 0.9,
        status_p=(0.005, 0.03, 0.01),
        ip=ip,
        asn=asn,
    )
    world.register("camp_diverse", acc, m, (cid, "diverse"))
    return block


def human(world: World, p: dict) -> Block:
    """A human-paced campaign: operators or crowd workers at human hours, ordinary traffic mixed in.

    ``n`` (40-120) accounts at human hours of their claimed timezones, in bursty sessions (``per_day``
    requests a day, sessions of ~8 requests 20-90 s apart); cards one per 5-10 accounts, 2-4 client
    fingerprints; prompts ``flips`` (2-8) bits from 4-10 templates, reasoning on, long outputs; a
    ``mix`` share (30-40%) of requests replaced by ordinary-looking traffic.
    """
    rng = world.rng
    cid = world.campaign_id("human")
    n = world.count(p["n"])
    acc = world.accounts(n, tiers=("free", "pro"), tier_p=(0.4, 0.6))
    _pool(world, acc, "payment", n // world.i((5, 10)))
    _pool(world, acc, "client", world.i((2, 4)))
    s_acc, s_ts = diurnal(world, world.uniforms(p["per_day"], n) / 8, acc.tz, HUMAN)
    ns = len(s_ts)
    sess, _, ts = sessions(world, s_ts, rng.geometric(0.125, ns), rng.uniform(20, 90, ns), 0.6)
    idx = s_acc[sess]
    m = len(ts)
    simhash, cap, _ = _templated(world, world.i((4, 10)), HARVEST_CAPS + ("coding",), m, p["flips"])
    reasoning = rng.random(m) < 0.9
    out = lognormal_int(world, 3_500, 0.6, m, 100, 32_000)
    _mix(world, world.u(p["mix"]), simhash, cap, reasoning, out)
    block = events(
        world,
        acc,
        idx,
        ts,
        model=models(world, ts, 0.0, 0.5, 12),
        input_tokens=lognormal_int(world, 600, 0.6, m, 30, 12_000),
        output_tokens=out,
        simhash=simhash,
        capability=cap,
        reasoning=reasoning,
        status_p=(0.004, 0.01, 0.01),
    )
    world.register("camp_human", acc, m, (cid, "human"))
    return block


def lowvol(world: World, p: dict) -> Block:
    """A very wide, very thin campaign: hundreds of accounts at a handful of requests a day each.

    ``n`` (300-800) accounts at ``per_day`` (3-12) requests a day at human hours, exiting through a pool
    of 50-150 residential proxy prefixes; cards one per 15-30 accounts, 3-8 client fingerprints; prompts
    ``flips`` (4-12) bits from a template family (6-15 templates 4-8 bits from one base), reasoning on,
    reasoning/math/analysis, long outputs.
    """
    rng = world.rng
    cid = world.campaign_id("lowvol")
    n = world.count(p["n"])
    acc = world.accounts(n, tiers=("free", "pro"), tier_p=(0.6, 0.4))
    _pool(world, acc, "payment", n // world.i((15, 30)))
    _pool(world, acc, "client", world.i((3, 8)))
    nproxy = world.i((50, 150))
    isp = np.concatenate([world.isp_asns[c[0]] for c in COUNTRIES])
    pool = (world.prefixes(nproxy, v6_share=0.1), rng.choice(isp, size=nproxy).astype(np.int64))
    idx, ts = diurnal(world, world.uniforms(p["per_day"], n), acc.tz, HUMAN)
    m = len(ts)
    nt = world.i((6, 15))
    family = flip_bits(rng, np.repeat(random_hashes(rng, 1), nt), 4, 8)
    t = rng.integers(0, nt, m)
    cap = np.array(HARVEST_CAPS, dtype=object)[rng.integers(0, 3, nt)][t]
    ip, asn = _exits(world, pool, m)
    block = events(
        world,
        acc,
        idx,
        ts,
        model=models(world, ts, 0.0, 0.5, 24),
        input_tokens=lognormal_int(world, 500, 0.5, m, 30, 8_000),
        output_tokens=lognormal_int(world, 4_000, 0.6, m, 100, 32_000),
        simhash=flip_bits(rng, family[t], *p["flips"]),
        capability=cap,
        reasoning=rng.random(m) < 0.92,
        status_p=(0.004, 0.01, 0.01),
        ip=ip,
        asn=asn,
    )
    world.register("camp_lowvol", acc, m, (cid, "lowvol"))
    return block


def _org_accounts(world: World, n: int) -> Accounts:
    """Accounts registered under 1-3 organisations with institutional tiers, on 1-2 cards."""
    rng = world.rng
    acc = world.accounts(
        n, tiers=("education", "research", "enterprise"), tier_p=(0.4, 0.35, 0.25), max_keys=3
    )
    orgs = world.hex_ids(world.i((1, 3)), 10, "org_")
    acc.org[:] = orgs[rng.integers(0, len(orgs), n)]
    _pool(world, acc, "payment", world.i((1, 2)))
    _pool(world, acc, "client", world.i((1, 3)))
    acc.share("ip", world.prefixes(world.i((1, 4)), datacenter=True), rng)
    acc.asn[:] = int(rng.choice(world.datacenter_asns))
    acc.country[:] = acc.country[0]
    return acc


def org(world: World, p: dict) -> Block:
    """A reasoning harvest under institutional cover: every account carries an org and an institutional tier.

    ``n`` (20-60) accounts under 1-3 org ids, education/research/enterprise tiers, one or two cards,
    1-3 client fingerprints, 1-4 datacenter prefixes. Like ``campaigns.reasoning_harvest``: one request
    every ``interval_s`` seconds round the clock dealt round-robin to the members, prompts ``flips``
    (0-3) bits from ``templates`` (3-8), reasoning on, long outputs.
    """
    rng = world.rng
    cid = world.campaign_id("org")
    n = world.count(p["n"])
    acc = _org_accounts(world, n)
    start = world.t0 + int(rng.uniform(0, 0.1) * (world.t1 - world.t0))
    ts = steady(world, world.u(p["interval_s"]) / world.scale, p["jitter"], start, world.t1)
    m = len(ts)
    idx = (np.arange(m) + int(rng.integers(n))) % n
    simhash, cap, _ = _templated(world, world.i(p["templates"]), HARVEST_CAPS, m, p["flips"])
    block = events(
        world,
        acc,
        idx,
        ts,
        model=models(world, ts, 0.0, 0.6, 12),
        input_tokens=lognormal_int(world, 550, 0.5, m, 40, 8_000),
        output_tokens=lognormal_int(world, 5_000, 0.5, m, 200, 32_000),
        simhash=simhash,
        capability=cap,
        reasoning=np.ones(m, dtype=bool),
        status_p=(0.005, 0.03, 0.01),
    )
    world.register("camp_org", acc, m, (cid, "org"))
    return block
