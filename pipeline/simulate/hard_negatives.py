"""Benign hard negatives: legitimate traffic that shares one or more traits with distillation campaigns."""

from __future__ import annotations

import numpy as np

from pipeline.contract.simhash import flip_bits, random_hashes

from .populations import Block, casual_traffic, developer_traffic
from .timing import EVENING, HUMAN, WORK, diurnal, sessions
from .traffic import concat, events, lognormal_int, models, pick
from .world import HOUR_MS, World


def _one_country(world: World, n: int) -> np.ndarray:
    return np.full(n, world.countries(1)[0], dtype=object)


def enterprise(world: World, p: dict) -> Block:
    """Enterprise batch customers: one org, many accounts and keys, steady templated volume round the clock.

    Per org: 8-20 accounts (``accounts``), each with up to 6 api keys, one corporate egress prefix (or
    two) on the company's ASN, one payment card and one or two SDK client fingerprints for all of them,
    enterprise tier. Each account sends ``per_day`` requests a day, flat over the day with a mild office
    bump, mostly to the batch endpoint. One capability per org (analysis, translation or writing) and
    1-4 prompt templates, so prompts are near-duplicates (0-3 bits), just like a harvesting campaign.
    """
    rng = world.rng
    blocks = []
    for _ in range(world.count(p["orgs"])):
        n = world.i(p["accounts"])
        org = world.hex_ids(1, 10, "org_")[0]
        acc = world.accounts(
            n, tiers=("enterprise",), countries=_one_country(world, n), org=org, max_keys=6, residential=False
        )
        acc.share("ip", world.prefixes(world.i((1, 2)), datacenter=True), rng)
        acc.asn[:] = int(rng.integers(20_000, 60_000))
        acc.payment[:] = acc.payment[0]
        acc.share("client", acc.client[:2], rng)
        idx, ts = diurnal(world, world.uniforms(p["per_day"], n), acc.tz, 0.6 + 0.4 * WORK)
        m = len(ts)
        cap = str(rng.choice(["analysis", "translation", "writing"]))
        templates = random_hashes(rng, world.i((1, 4)))
        inp = lognormal_int(world, rng.uniform(600, 3000), 0.45, m, 50, 100_000)
        out = inp if cap == "translation" else lognormal_int(world, 450, 0.6, m, 5, 8_000)
        block = events(
            world,
            acc,
            idx,
            ts,
            model=models(world, ts, 0.4, 0.1, 48),
            input_tokens=inp,
            output_tokens=lognormal_int(world, out, 0.15, m, 1, 100_000),
            simhash=flip_bits(rng, templates[rng.integers(0, len(templates), m)], 0, 3),
            capability=np.full(m, cap, dtype=object),
            reasoning=rng.random(m) < (0.2 if cap == "analysis" else 0.0),
            endpoint=np.where(rng.random(m) < 0.85, "batch", "messages").astype(object),
            status_p=(0.003, 0.01, 0.001),
        )
        world.register("enterprise", acc, m)
        blocks.append(block)
    return concat(blocks)


def university(world: World, p: dict) -> Block:
    """University labs running benchmark evaluations: templated reasoning bursts from a campus network.

    Per lab: 4-10 students (education/research tier) on one to three campus prefixes of one ASN; each
    has a card of their own, except 30-60% who share the university's card. Each student launches a
    few evaluation runs (``runs_per_day``) in the day or evening: a harness sending hundreds of requests
    at a near-constant 1-5 s pace, from one of the lab's 2-5 shared benchmarks (prompts within 1-6 bits of
    the benchmark's hash), math/reasoning with reasoning requested and long outputs. Labs try a new model
    within hours of its release. Students also chat casually.
    """
    rng = world.rng
    blocks = []
    for _ in range(world.count(p["labs"])):
        n = world.i(p["accounts"])
        acc = world.accounts(
            n, tiers=("education", "research"), tier_p=(0.6, 0.4), countries=_one_country(world, n)
        )
        acc.share("ip", world.prefixes(world.i((1, 3))), rng)
        acc.asn[:] = int(rng.integers(1_000, 60_000))
        card = acc.payment[0]
        acc.payment[rng.random(n) < rng.uniform(0.3, 0.6)] = card
        benches = random_hashes(rng, world.i((2, 5)))
        bench_cap = pick(world, ("math", "reasoning"), len(benches))
        r_acc, r_ts = diurnal(world, world.uniforms(p["runs_per_day"], n), acc.tz, EVENING)
        nr = len(r_ts)
        sizes = lognormal_int(world, 450, 0.6, nr, 100, 2_500)
        run, _, ts = sessions(world, r_ts, sizes, rng.uniform(1, 5, nr), 0.25)
        idx = r_acc[run]
        m = len(ts)
        b = rng.integers(0, len(benches), nr)[run]
        block = events(
            world,
            acc,
            idx,
            ts,
            model=models(world, ts, 0.1, 0.6, 6),
            input_tokens=lognormal_int(world, 420, 0.5, m, 30, 20_000),
            output_tokens=lognormal_int(world, 3_200, 0.6, m, 50, 32_000),
            simhash=flip_bits(rng, benches[b], 1, 6),
            capability=bench_cap[b],
            reasoning=rng.random(m) < 0.9,
            status_p=(0.005, 0.02, 0.004),
        )
        chat = casual_traffic(world, acc, (1.0, 8.0), mobile_share=0.05, evening=True)
        world.register("university", acc, m + len(chat["ts"]))
        blocks += [block, chat]
    return concat(blocks)


def coworking(world: World, p: dict) -> Block:
    """Coworking spaces and large NATs: unrelated casual users and developers behind one prefix and ASN.

    Per space: 15-40 accounts of one country, 35% developers and the rest casual users, with their own
    payments and clients, all on the space's single prefix.
    """
    rng = world.rng
    blocks = []
    for _ in range(world.count(p["spaces"])):
        n = world.i(p["accounts"])
        acc = world.accounts(
            n, tiers=("free", "pro", "team"), tier_p=(0.4, 0.4, 0.2), countries=_one_country(world, n)
        )
        acc.ip[:] = world.prefixes(1)[0]
        acc.asn[:] = int(rng.integers(1_000, 60_000))
        dev = rng.random(n) < 0.35
        parts = [casual_traffic(world, acc.take(~dev), p["per_day"], mobile_share=0.03)]
        if dev.any():
            parts.append(developer_traffic(world, acc.take(dev), (0.3, 1.2)))
        block = concat(parts)
        world.register("coworking", acc, len(block["ts"]))
        blocks.append(block)
    return concat(blocks)


def startup(world: World, p: dict) -> Block:
    """A startup moving all its traffic to the new model on release day (otherwise ordinary app traffic).

    One org, startup tier, 4-10 accounts (its environments and services) with a few keys each, one
    company card, one or two SDK fingerprints, production servers on one or two cloud prefixes. Traffic
    follows its own users' day (``per_day`` per account); chat/writing/coding/analysis; 60% of prompts
    are near (2-10 bits) one of the app's 3-6 prompt templates. Everything moves to the new model 0.5-4 h
    after its release.
    """
    rng = world.rng
    n = world.count(p["accounts"])
    org = world.hex_ids(1, 10, "org_")[0]
    acc = world.accounts(
        n, tiers=("startup",), countries=_one_country(world, n), org=org, max_keys=3, residential=False
    )
    acc.share("ip", world.prefixes(world.i((1, 2)), datacenter=True), rng)
    acc.asn[:] = int(rng.choice(world.datacenter_asns))
    acc.payment[:] = acc.payment[0]
    acc.share("client", acc.client[:2], rng)
    idx, ts = diurnal(world, world.uniforms(p["per_day"], n), acc.tz, HUMAN)
    m = len(ts)
    templates = random_hashes(rng, world.i((3, 6)))
    near = flip_bits(rng, templates[rng.integers(0, len(templates), m)], 2, 10)
    switch = world.release_ts + int(rng.uniform(0.5, 4.0) * HOUR_MS)
    block = events(
        world,
        acc,
        idx,
        ts,
        model=models(world, ts, 0.3, 0.0, 1, switch_ts=switch),
        input_tokens=lognormal_int(world, 900, 0.7, m, 20, 60_000),
        output_tokens=lognormal_int(world, 500, 0.7, m, 5, 8_000),
        simhash=np.where(rng.random(m) < 0.6, near, random_hashes(rng, m)),
        capability=pick(world, ("chat", "writing", "coding", "analysis"), m, (0.4, 0.2, 0.2, 0.2)),
        reasoning=rng.random(m) < 0.15,
    )
    world.register("startup", acc, m)
    return block


def reseller_customers(world: World, p: dict) -> Block:
    """Legitimate customers of an API reseller: ordinary users whose traffic exits the reseller's prefixes.

    ``n`` accounts with their own payments and clients, each on one of the reseller's prefixes and its
    ASN (the same network a campaign routes through); 70% casual, 30% developer behaviour.
    """
    rng = world.rng
    acc = world.accounts(world.count(p["n"]), tiers=("free", "pro", "team"), tier_p=(0.3, 0.5, 0.2))
    acc.share("ip", world.reseller_ips, rng)
    acc.asn[:] = world.reseller_asn
    dev = rng.random(len(acc)) < 0.3
    parts = [casual_traffic(world, acc.take(~dev), p["per_day"], mobile_share=0.0)]
    if dev.any():
        parts.append(developer_traffic(world, acc.take(dev), (0.3, 1.2)))
    block = concat(parts)
    world.register("reseller_customers", acc, len(block["ts"]))
    return block
