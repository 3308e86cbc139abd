"""Ordinary benign users: casual chat users and developers running coding agents.

The traffic generators take an ``Accounts`` table so the hard-negative populations (coworking spaces,
reseller customers) can reuse them behind other networks.
"""

from __future__ import annotations

import numpy as np

from pipeline.contract.simhash import flip_bits, random_hashes

from .timing import EVENING, HUMAN, WORK, diurnal, sessions
from .traffic import events, lognormal_int, models, pick
from .world import Accounts, World

Block = dict[str, np.ndarray]
CASUAL_CAPS = ("chat", "writing", "other", "coding", "analysis", "translation", "math", "vision")
CASUAL_CAPS_P = (0.45, 0.2, 0.12, 0.07, 0.05, 0.04, 0.04, 0.03)


def casual_traffic(
    world: World,
    acc: Accounts,
    per_day: tuple[float, float],
    mobile_share: float = 0.12,
    evening: bool = False,
) -> Block:
    """Casual chat users' requests: short conversations at human hours of their own timezone.

    Each account has its own rate, log-uniform in ``per_day`` requests a day, sent as conversations of
    ~2.5 messages (geometric) a minute or so apart, ``n_turns`` growing by two per message. Prompts are
    free-form (unrelated random SimHashes), outputs short, capability mostly chat/writing/other. Some
    requests come from a mobile carrier's shared prefix instead of the home prefix.
    """
    rng = world.rng
    n = len(acc)
    rate = np.exp(rng.uniform(np.log(per_day[0]), np.log(per_day[1]), size=n))
    s_acc, s_ts = diurnal(world, rate / 2.5, acc.tz, EVENING if evening else HUMAN)
    sizes = rng.geometric(0.4, size=len(s_ts))
    sess, pos, ts = sessions(world, s_ts, sizes, 50.0, 0.8)
    idx = s_acc[sess]
    m = len(ts)
    mobile = rng.random(m) < mobile_share
    k = rng.integers(0, len(world.mobile_ips), size=m)
    ip = np.where(mobile, world.mobile_ips[k], acc.ip[idx])
    asn = np.where(mobile, world.mobile_asns[k], acc.asn[idx])
    return events(
        world,
        acc,
        idx,
        ts,
        model=models(world, ts, mini_frac=0.25, adopt_max=0.35, adopt_tau_h=30),
        input_tokens=lognormal_int(world, 90 + 220 * pos, 0.8, m, 3, 60_000),
        output_tokens=lognormal_int(world, 260, 0.75, m, 1, 4_000),
        simhash=random_hashes(rng, m),
        capability=pick(world, CASUAL_CAPS, m, CASUAL_CAPS_P),
        reasoning=rng.random(m) < 0.07,
        n_turns=1 + 2 * pos,
        n_tools=np.where(rng.random(m) < 0.1, 1, 0),
        ip=ip,
        asn=asn,
        no_key_share=0.3,
    )


def developer_traffic(world: World, acc: Accounts, sessions_per_day: tuple[float, float]) -> Block:
    """Developers' coding-agent sessions: bursts of tens to hundreds of requests in working hours.

    Sessions start in local working hours; each sends a log-normal number of requests (median 30) a few
    seconds apart (the agent loop), with a fixed tool set (5-40 tools) and a conversation that grows by
    two turns a request, so inputs are long and grow. Capability coding or agentic. Each account reuses
    a few system prompts of its own: 55% of its prompts are near (3-14 bits) one of its three templates,
    the rest free-form.
    """
    rng = world.rng
    n = len(acc)
    rate = world.uniforms(sessions_per_day, n)
    s_acc, s_ts = diurnal(world, rate, acc.tz, WORK)
    ns = len(s_ts)
    sizes = lognormal_int(world, 30, 0.8, ns, 3, 400)
    sess, pos, ts = sessions(world, s_ts, sizes, rng.uniform(4, 25, ns), 0.7)
    idx = s_acc[sess]
    m = len(ts)
    turns = np.clip(rng.integers(5, 16, ns)[sess] + 2 * pos, 1, 200)
    templates = random_hashes(rng, n * 3).reshape(n, 3)
    own = templates[s_acc, rng.integers(0, 3, ns)][sess]
    simhash = np.where(rng.random(m) < 0.55, flip_bits(rng, own, 3, 14), random_hashes(rng, m))
    return events(
        world,
        acc,
        idx,
        ts,
        model=models(world, ts, mini_frac=0.15, adopt_max=0.5, adopt_tau_h=20),
        input_tokens=lognormal_int(world, 2500 + 700 * turns, 0.35, m, 200, 190_000),
        output_tokens=lognormal_int(world, 550, 0.9, m, 5, 12_000),
        simhash=simhash,
        capability=np.where(rng.random(ns) < 0.7, "coding", "agentic").astype(object)[sess],
        reasoning=(rng.random(ns) < 0.35)[sess],
        n_turns=turns,
        n_tools=rng.integers(5, 41, ns)[sess],
        chars_per_token=3.4,
    )


def casual_users(world: World, p: dict) -> Block:
    """Casual chat users: free/pro individuals on residential networks, a few to tens of requests a day."""
    acc = world.accounts(world.count(p["n"]), tiers=("free", "pro"), tier_p=(0.7, 0.3))
    block = casual_traffic(world, acc, p["per_day"])
    world.register("casual", acc, len(block["ts"]))
    return block


def developers(world: World, p: dict) -> Block:
    """Developers running coding agents: pro/team individuals, bursty high-volume working-hour sessions."""
    acc = world.accounts(world.count(p["n"]), tiers=("pro", "team"), max_keys=3)
    block = developer_traffic(world, acc, p["sessions_per_day"])
    world.register("developers", acc, len(block["ts"]))
    return block
