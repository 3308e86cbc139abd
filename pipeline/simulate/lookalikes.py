"""Benign look-alikes: real crowds that share what campaigns share (a prompt, a client, a card, a pace).

Each crowd here was, at some point, flagged by a detector that had only seen templated campaigns and
org-tagged hard negatives: users of one open-source coding agent (one system prompt, one SDK), students
of one course (one assignment, one deadline), evaluation companies and research labs sweeping benchmarks
round the clock, CI bots on one company card without an org, resellers fronting thousands of end users,
popular SDK/browser fingerprints, and developers on the same cloud networks campaigns exit from.
All label ``benign``.
"""

from __future__ import annotations

import numpy as np

from pipeline.contract.simhash import flip_bits, random_hashes

from .populations import CASUAL_CAPS, CASUAL_CAPS_P, Block, casual_traffic, developer_traffic
from .timing import FLAT, HUMAN, WORK, diurnal, sessions
from .traffic import MODELS, concat, events, lognormal_int, models, pick
from .world import DAY_MS, HOUR_MS, Accounts, World

# Evenings and nights of local time: when students do their assignments.
NIGHT = np.array(
    [0.8, 0.6, 0.4, 0.2, 0.08, 0.04, 0.03, 0.05, 0.1, 0.2, 0.3, 0.35,
     0.35, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.95, 1.0, 1.0, 0.95]
)  # fmt: skip


def _log_uniform(world: World, r: tuple[float, float], n: int) -> np.ndarray:
    """``n`` draws spread evenly in log space over ``(lo, hi)`` (volumes that vary by orders of magnitude)."""
    return np.exp(world.rng.uniform(np.log(r[0]), np.log(r[1]), size=n))


def _cloud(world: World, acc: Accounts, sel: np.ndarray, reseller_share: float = 0.0) -> None:
    """Move the selected accounts onto cloud VMs: datacenter prefixes on the same ASNs campaigns use.

    A ``reseller_share`` of them sits on the reseller's prefixes, which campaigns also route through.
    """
    rng = world.rng
    k = int(sel.sum())
    if k == 0:
        return
    acc.ip[sel] = world.prefixes(k, datacenter=True)
    acc.asn[sel] = rng.choice(world.datacenter_asns, size=k)
    via = np.flatnonzero(sel)[rng.random(k) < reseller_share]
    acc.ip[via] = world.reseller_ips[rng.integers(0, len(world.reseller_ips), len(via))]
    acc.asn[via] = world.reseller_asn


def _oss_tool(world: World, p: dict) -> Block:
    """One open-source coding agent's users (see ``oss_agents``)."""
    rng = world.rng
    n = world.count(p["users"])
    acc = world.accounts(n, tiers=("free", "pro", "team"), tier_p=(0.35, 0.5, 0.15), max_keys=3)
    acc.client[:] = world.hex_ids(1, 16)[0]  # the tool's SDK: one user agent + TLS stack for everyone
    _cloud(world, acc, rng.random(n) < p["cloud_share"])
    system = random_hashes(rng, 1)
    base_tools = world.i((10, 36))
    loop = rng.random(n) < p["loop_share"]
    i_acc, i_ts = diurnal(world, _log_uniform(world, p["sessions_per_day"], n), acc.tz, WORK)
    l_acc, l_ts = diurnal(world, np.where(loop, world.uniforms((0.3, 1.5), n), 0.0), acc.tz, FLAT)
    s_acc, s_ts = np.concatenate([i_acc, l_acc]), np.concatenate([i_ts, l_ts])
    ni, ns = len(i_ts), len(i_ts) + len(l_ts)
    sizes = np.concatenate(
        [lognormal_int(world, 30, 0.8, ni, 3, 400), lognormal_int(world, 300, 0.5, ns - ni, 80, 1_500)]
    )
    gaps = np.concatenate([rng.uniform(4, 25, ni), rng.uniform(2, 8, ns - ni)])
    sess, pos, ts = sessions(world, s_ts, sizes, gaps, 0.6)
    idx = s_acc[sess]
    m = len(ts)
    near = rng.random(m) < world.uniforms(p["system_share"], n)[idx]
    simhash = np.where(near, flip_bits(rng, np.repeat(system, m), 0, 4), random_hashes(rng, m))
    turns = np.clip(rng.integers(3, 12, ns)[sess] + 2 * pos, 1, 400)
    block = events(
        world,
        acc,
        idx,
        ts,
        model=models(world, ts, mini_frac=0.15, adopt_max=0.6, adopt_tau_h=12),
        input_tokens=lognormal_int(world, 4_000 + 700 * turns, 0.35, m, 300, 190_000),
        output_tokens=lognormal_int(world, 600, 0.9, m, 5, 16_000),
        simhash=simhash,
        capability=np.where(rng.random(ns) < 0.6, "coding", "agentic").astype(object)[sess],
        reasoning=rng.random(m) < world.uniforms((0.0, 0.9), n)[idx],
        n_turns=turns,
        n_tools=np.clip(base_tools + rng.integers(0, 6, ns), 10, 40)[sess],
        chars_per_token=3.4,
    )
    world.register("oss_agents", acc, m)
    return block


def oss_agents(world: World, p: dict) -> Block:
    """Users of popular open-source coding agents: one system prompt and one SDK per tool, nothing else shared.

    Per tool (``tools``, 2-3): ``users`` (100-300) individuals with their own card, keys and home
    network in many countries (a ``cloud_share`` on cloud VMs), no org, free/pro/team. Every user's
    client fingerprint is the tool's SDK fingerprint, and a per-user share (``system_share``, 50-90%)
    of their prompts lies 0-4 bits from the tool's system-prompt hash (the system prompt dominates the
    hash). Sessions at working hours of their own timezone, log-uniform ``sessions_per_day`` (0.3-8),
    sizes lognormal median 30, 10-40 tools, growing conversations, reasoning share per user 0-0.9; a
    ``loop_share`` (~10%) also runs autonomous loops of hundreds of requests at any hour.
    """
    return concat([_oss_tool(world, p) for _ in range(world.i(p["tools"]))])


def _deadline_rate(ts: np.ndarray, deadline: int, rush_h: float) -> np.ndarray:
    """Relative activity around a deadline: a trickle, a steep rise over the last day or two, then a trickle."""
    before = np.exp(-np.maximum(deadline - ts, 0) / (rush_h * HOUR_MS))
    return np.where(ts < deadline, 0.12 + 0.88 * before, 0.03)


def course(world: World, p: dict) -> Block:
    """Students of an online course: one assignment prompt, reasoning on, nights, a deadline rush.

    Per course (``courses``, 1-2): ``students`` (80-200) in many countries with their own cards,
    free/pro/education; half use one of three popular browser/web-client fingerprints (``world.
    popular_clients``). 1-3 assignment prompts: 75% of requests are 0-4 bits from one, the rest
    free-form; reasoning on 85%; math/reasoning/coding; long-ish outputs (median 2,000). Short sessions
    in the evening and night of local time, at ``peak_per_day`` (5-60) requests a day per student at
    the peak, which comes just before a deadline at ~70% of the window (rising over ~a day), then a trickle.
    """
    rng = world.rng
    blocks = []
    for _ in range(world.count(p["courses"])):
        n = world.count(p["students"])
        acc = world.accounts(n, tiers=("free", "pro", "education"), tier_p=(0.45, 0.2, 0.35))
        browser = rng.random(n) < 0.5
        acc.client[browser] = world.popular_clients()[rng.integers(0, 3, int(browser.sum()))]
        deadline = world.t0 + int(rng.uniform(0.65, 0.75) * (world.t1 - world.t0))
        s_acc, s_ts = diurnal(world, world.uniforms(p["peak_per_day"], n) / 4, acc.tz, NIGHT)
        keep = rng.random(len(s_ts)) < _deadline_rate(s_ts, deadline, world.u((18.0, 36.0)))
        s_acc, s_ts = s_acc[keep], s_ts[keep]
        ns = len(s_ts)
        sess, pos, ts = sessions(world, s_ts, rng.geometric(0.25, ns), rng.uniform(40, 150, ns), 0.7)
        idx = s_acc[sess]
        m = len(ts)
        assignments = random_hashes(rng, world.i((1, 3)))
        a = rng.integers(0, len(assignments), ns)[sess]
        near = flip_bits(rng, assignments[a], 0, 4)
        cap = pick(world, ("math", "reasoning", "coding"), len(assignments))[a].copy()
        block = events(
            world,
            acc,
            idx,
            ts,
            model=models(world, ts, mini_frac=0.3, adopt_max=0.4, adopt_tau_h=24),
            input_tokens=lognormal_int(world, 500 + 300 * pos, 0.6, m, 20, 40_000),
            output_tokens=lognormal_int(world, 2_000, 0.6, m, 20, 16_000),
            simhash=np.where(rng.random(m) < 0.75, near, random_hashes(rng, m)),
            capability=cap,
            reasoning=rng.random(m) < 0.85,
            n_turns=1 + 2 * pos,
        )
        world.register("course", acc, m)
        blocks.append(block)
    return concat(blocks)


def _sweeps(
    world: World, acc: Accounts, benches: np.ndarray, p: dict, pause_min: tuple[float, float]
) -> Block:
    """Benchmark runs back to back per account: each run sends one benchmark to one model at machine pace.

    A run is ``run_size`` (lognormal) requests ``pace_s`` seconds apart (low jitter); runs follow one
    another after a pause drawn from ``pause_min`` minutes, cycling each benchmark through every model
    served at the time (frontier-2 only after its release). Each account sweeps for ``span_days`` from
    a start within the first third of the window.
    """
    rng = world.rng
    caps = pick(world, ("math", "reasoning", "coding", "analysis"), len(benches))
    starts: list[int] = []
    sizes: list[int] = []
    pace: list[float] = []
    owner: list[int] = []
    model_of: list[str] = []
    bench_of: list[int] = []
    for a in range(len(acc)):
        t = world.t0 + int(rng.uniform(0, 0.33) * (world.t1 - world.t0))
        end = min(world.t1, t + int(world.u(p["span_days"]) * DAY_MS))
        step = world.u(p["pace_s"])
        while t < end:
            b = int(rng.integers(len(benches)))
            for mdl in MODELS if t >= world.release_ts else MODELS[:2]:
                size = int(lognormal_int(world, p["run_size"], 0.5, 1, 50, 5_000)[0])
                starts.append(t)
                sizes.append(size)
                pace.append(step)
                owner.append(a)
                model_of.append(mdl)
                bench_of.append(b)
                t += int(size * step * 1000) + int(rng.uniform(*pause_min) * 60_000)
    sess, pos, ts = sessions(world, np.array(starts, dtype=np.int64), np.array(sizes), np.array(pace), 0.1)
    idx = np.array(owner)[sess]
    m = len(ts)
    b = np.array(bench_of)[sess]
    return events(
        world,
        acc,
        idx,
        ts,
        model=np.array(model_of, dtype=object)[sess],
        input_tokens=lognormal_int(world, 700, 0.5, m, 30, 30_000),
        output_tokens=lognormal_int(world, 3_500, 0.6, m, 50, 32_000),
        simhash=flip_bits(rng, benches[b], 0, 6),
        capability=caps[b].copy(),
        reasoning=rng.random(m) < 0.85,
        status_p=(0.004, 0.03, 0.004),
    )


def eval_company(world: World, p: dict) -> Block:
    """Evaluation companies: a few accounts sweeping benchmarks across every model, round the clock.

    Per company (``companies``, 1-2): ``accounts`` (2-5), team/enterprise, one company card, one
    harness client fingerprint, datacenter egress on cloud ASNs; the first company records its org,
    the second does not. 3-10 benchmarks (requests 0-6 bits from a benchmark's hash); multi-day sweeps
    at machine pace (``pace_s``, 1-6 s, low jitter) lasting ``span_days`` (1.5-3) per account, each
    benchmark sent to frontier-1, frontier-1-mini and (after release) frontier-2; reasoning on 85%, long
    outputs.
    """
    rng = world.rng
    blocks = []
    for c in range(world.count(p["companies"])):
        n = world.i(p["accounts"])
        org = world.hex_ids(1, 10, "org_")[0] if c % 2 == 0 else None
        acc = world.accounts(n, tiers=("team", "enterprise"), org=org, max_keys=3, residential=False)
        acc.country[:] = acc.country[0]
        acc.payment[:] = acc.payment[0]
        acc.client[:] = acc.client[0]
        acc.share("ip", world.prefixes(world.i((1, 3)), datacenter=True), rng)
        block = _sweeps(world, acc, random_hashes(rng, world.i((3, 10))), p, (1.0, 20.0))
        world.register("eval_company", acc, len(block["ts"]))
        blocks.append(block)
    return concat(blocks)


def research_lab(world: World, p: dict) -> Block:
    """Research labs: eval runs like an evaluation company, with pauses between runs and interactive use.

    Per lab (``labs``, 1-2): ``accounts`` (3-8), research/education tier, one lab card, the first lab
    with an org and the second without, the lab's prefixes on one ASN. Each account runs benchmark
    sweeps at machine pace (``pace_s``) across all models for ``span_days`` (1-3), with 20 minutes to
    8 hours between runs, and
    also works interactively (coding-agent sessions in working hours).
    """
    rng = world.rng
    blocks = []
    for c in range(world.count(p["labs"])):
        n = world.i(p["accounts"])
        org = world.hex_ids(1, 10, "org_")[0] if c % 2 == 0 else None
        acc = world.accounts(n, tiers=("research", "education"), tier_p=(0.7, 0.3), org=org, max_keys=2)
        acc.country[:] = acc.country[0]
        acc.tz[:] = acc.tz[0]
        acc.payment[:] = acc.payment[0]
        acc.share("ip", world.prefixes(world.i((1, 3))), rng)
        acc.asn[:] = int(rng.integers(1_000, 60_000))
        sweeps = _sweeps(world, acc, random_hashes(rng, world.i((3, 8))), p, (20.0, 480.0))
        block = concat([sweeps, developer_traffic(world, acc, (0.3, 1.0))])
        world.register("research_lab", acc, len(block["ts"]))
        blocks.append(block)
    return concat(blocks)


def ci_bots(world: World, p: dict) -> Block:
    """Code-review / CI bots: a company's bot accounts on one card, no org, triggered by commits.

    Per company (``companies``, 1-2): ``accounts`` (4-10) on ONE card, no org recorded, one client
    fingerprint (the company's SDK), CI runners on datacenter prefixes. Jobs round the clock but heavier
    in the company's working hours (``jobs_per_day`` per bot); each job is 3-15 requests a few seconds
    apart with 5-20 tools and a growing conversation; 70% of prompts are 0-4 bits from one of the
    company's 1-2 system prompts, the rest free-form (the diff); outputs 300-1,500 tokens; reasoning
    share 0.2-0.6 per company.
    """
    rng = world.rng
    blocks = []
    for _ in range(world.count(p["companies"])):
        n = world.i(p["accounts"])
        acc = world.accounts(n, tiers=("team", "enterprise", "pro"), max_keys=2, residential=False)
        acc.country[:] = acc.country[0]
        acc.tz[:] = acc.tz[0]
        acc.payment[:] = acc.payment[0]
        acc.client[:] = acc.client[0]
        acc.share("ip", world.prefixes(world.i((1, 4)), datacenter=True), rng)
        j_acc, j_ts = diurnal(world, world.uniforms(p["jobs_per_day"], n), acc.tz, 0.15 + WORK)
        nj = len(j_ts)
        sess, pos, ts = sessions(world, j_ts, rng.integers(3, 16, nj), rng.uniform(2, 8, nj), 0.4)
        idx = j_acc[sess]
        m = len(ts)
        prompts = random_hashes(rng, world.i((1, 2)))
        near = flip_bits(rng, prompts[rng.integers(0, len(prompts), m)], 0, 4)
        turns = np.clip(2 + 2 * pos, 1, 60)
        block = events(
            world,
            acc,
            idx,
            ts,
            model=models(world, ts, mini_frac=0.3, adopt_max=0.3, adopt_tau_h=48),
            input_tokens=lognormal_int(world, 3_000 + 800 * turns, 0.4, m, 200, 150_000),
            output_tokens=lognormal_int(world, 650, 0.4, m, 300, 1_500),
            simhash=np.where(rng.random(m) < 0.7, near, random_hashes(rng, m)),
            capability=np.where(rng.random(nj) < 0.7, "coding", "agentic").astype(object)[sess],
            reasoning=rng.random(m) < world.u((0.2, 0.6)),
            n_turns=turns,
            n_tools=rng.integers(5, 21, nj)[sess],
            chars_per_token=3.4,
        )
        world.register("ci_bots", acc, m)
        blocks.append(block)
    return concat(blocks)


def reseller_frontends(world: World, p: dict) -> Block:
    """Reseller / proxy accounts fronting many end users: huge, flat-ish, diverse traffic.

    ``accounts`` (1-3) each sending ``per_day`` (log-uniform 2,000-20,000) requests a day, Poisson
    arrivals almost flat over the day (end users in every timezone); free-form prompts; the casual mix
    of capabilities plus 25% coding; reasoning 15-30%; ordinary output lengths; team/enterprise/startup;
    an org on about half of them; egress on datacenter prefixes (the first on the reseller's own).
    """
    rng = world.rng
    n = world.count(p["accounts"])
    acc = world.accounts(n, tiers=("team", "enterprise", "startup"), max_keys=8, residential=False)
    has_org = rng.random(n) < 0.5
    acc.org[has_org] = world.hex_ids(int(has_org.sum()), 10, "org_")
    acc.ip[0] = world.reseller_ips[0]
    acc.asn[0] = world.reseller_asn
    idx, ts = diurnal(world, _log_uniform(world, p["per_day"], n), acc.tz, 0.7 + 0.3 * HUMAN)
    m = len(ts)
    coding = rng.random(m) < 0.25
    cap = pick(world, CASUAL_CAPS, m, CASUAL_CAPS_P)
    cap[coding] = "coding"
    turns = 1 + 2 * rng.geometric(0.4, m) - 2
    block = events(
        world,
        acc,
        idx,
        ts,
        model=models(world, ts, mini_frac=0.35, adopt_max=0.4, adopt_tau_h=24),
        input_tokens=lognormal_int(world, 300 + 250 * turns, 0.9, m, 3, 100_000),
        output_tokens=lognormal_int(world, 380, 0.8, m, 1, 8_000),
        simhash=random_hashes(rng, m),
        capability=cap,
        reasoning=rng.random(m) < world.uniforms((0.15, 0.3), n)[idx],
        n_turns=turns,
        n_tools=np.where(coding, rng.integers(0, 20, m), 0),
        status_p=(0.004, 0.02, 0.006),
    )
    world.register("reseller_frontends", acc, m)
    return block


def shared_clients(world: World, p: dict) -> Block:
    """Casual users and developers on popular SDKs and browsers: five client fingerprints for everyone.

    ``n`` (300-600) accounts, 60% casual and 40% developers, with their own cards and networks, whose
    client fingerprints all come from ``world.popular_clients`` (five values shared across the world).
    """
    rng = world.rng
    acc = world.accounts(world.count(p["n"]), tiers=("free", "pro", "team"), tier_p=(0.5, 0.4, 0.1))
    acc.share("client", world.popular_clients(), rng)
    dev = rng.random(len(acc)) < 0.4
    parts = [casual_traffic(world, acc.take(~dev), p["per_day"])]
    if dev.any():
        parts.append(developer_traffic(world, acc.take(dev), p["sessions_per_day"]))
    block = concat(parts)
    world.register("shared_clients", acc, len(block["ts"]))
    return block


def cloud_devs(world: World, p: dict) -> Block:
    """Developers running their agents from cloud VMs on the datacenter networks campaigns exit from.

    ``n`` (50-150) developer accounts whose prefixes are datacenter /24s on ``world.datacenter_asns``
    (the ASNs campaigns draw from), 20% of them on the reseller's prefixes that campaigns share;
    otherwise ordinary developer sessions in working hours.
    """
    acc = world.accounts(world.count(p["n"]), tiers=("pro", "team"), max_keys=3)
    _cloud(world, acc, np.ones(len(acc), dtype=bool), reseller_share=0.2)
    block = developer_traffic(world, acc, p["sessions_per_day"])
    world.register("cloud_devs", acc, len(block["ts"]))
    return block


def agency(world: World, p: dict) -> Block:
    """A development agency: one company card for many accounts, one per client project, no org.

    Per agency (``agencies``, 1-2): ``accounts`` (15-40), team/pro tier, the agency's card and SDK client
    fingerprint for all of them, its office prefix (or two) and ASN, no org recorded. Its developers run
    coding agents for each project in the agency's working hours (``sessions_per_day`` per account), the
    project's own system prompt for most requests: one customer with more accounts than a small fleet,
    whose accounts are as different as its projects and rest at night.
    """
    rng = world.rng
    blocks = []
    for _ in range(world.count(p["agencies"])):
        n = world.i(p["accounts"])
        cc = world.countries(1)
        acc = world.accounts(n, tiers=("team", "pro"), tier_p=(0.7, 0.3), countries=np.repeat(cc, n), max_keys=2)
        acc.tz[:] = acc.tz[0]
        acc.payment[:] = acc.payment[0]
        acc.client[:] = acc.client[0]
        acc.share("ip", world.prefixes(world.i((1, 2))), rng)
        acc.asn[:] = int(rng.integers(1_000, 60_000))
        block = developer_traffic(world, acc, p["sessions_per_day"])
        world.register("agency", acc, len(block["ts"]))
        blocks.append(block)
    return concat(blocks)


def cowork_teams(world: World, p: dict) -> Block:
    """A coworking space with small companies in it: two or three teams on their company's card, among
    independent members, all behind the space's one prefix.

    Per space (``spaces``, 1-2): ``members`` (20-40) accounts of one country on one prefix and ASN; 2-3
    companies of ``team`` (3-6) developers each pay with their company's card (no org recorded), the
    others with their own. Everyone runs developer traffic (coding agents in working hours): several
    cards each shared by several accounts behind one network, as a campaign's card pool would be, but
    each team on its own card and the rest on their own.
    """
    rng = world.rng
    blocks = []
    for _ in range(world.count(p["spaces"])):
        n = world.i(p["members"])
        cc = world.countries(1)
        acc = world.accounts(n, tiers=("pro", "team"), tier_p=(0.5, 0.5), countries=np.repeat(cc, n), max_keys=2)
        acc.ip[:] = world.prefixes(1)[0]
        acc.asn[:] = int(rng.integers(1_000, 60_000))
        start = 0
        for _ in range(world.i((2, 3))):
            size = world.i(p["team"])
            acc.payment[start : start + size] = acc.payment[start]
            start += size
        block = developer_traffic(world, acc, p["sessions_per_day"])
        world.register("cowork_teams", acc, len(block["ts"]))
        blocks.append(block)
    return concat(blocks)
