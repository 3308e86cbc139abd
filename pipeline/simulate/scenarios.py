"""Named scenarios: the window, the release time, and each population's parameter ranges.

Every ``(lo, hi)`` range is drawn once per run from the seed, so different seeds give different
population sizes, rates, template counts and timings. Account and group counts (``n``, ``orgs``, ``labs``,
``spaces``, ``slots``, ``users``, ``students``, ``courses``, ``companies``, and the startup's and the
resellers' ``accounts``) are multiplied by the run's ``scale``; per-account rates are not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from . import campaigns, evasions, hard_negatives, lookalikes, populations
from .world import World

Generator = Callable[[World, dict], dict[str, np.ndarray]]

# Order matters: it fixes the order of random draws, hence the output for a seed.
GENERATORS: dict[str, Generator] = {
    "casual": populations.casual_users,
    "developers": populations.developers,
    "enterprise": hard_negatives.enterprise,
    "university": hard_negatives.university,
    "coworking": hard_negatives.coworking,
    "startup": hard_negatives.startup,
    "reseller_customers": hard_negatives.reseller_customers,
    "camp_reasoning": campaigns.reasoning_harvest,
    "camp_agentic": campaigns.agentic_harvest,
    "camp_hydra": campaigns.hydra,
    "camp_slowlow": campaigns.slow_and_low,
    "camp_naive": campaigns.naive,
    "oss_agents": lookalikes.oss_agents,
    "course": lookalikes.course,
    "eval_company": lookalikes.eval_company,
    "research_lab": lookalikes.research_lab,
    "ci_bots": lookalikes.ci_bots,
    "reseller_frontends": lookalikes.reseller_frontends,
    "shared_clients": lookalikes.shared_clients,
    "cloud_devs": lookalikes.cloud_devs,
    "agency": lookalikes.agency,
    "cowork_teams": lookalikes.cowork_teams,
    "camp_diverse": evasions.diverse,
    "camp_human": evasions.human,
    "camp_lowvol": evasions.lowvol,
    "camp_org": evasions.org,
}


@dataclass(frozen=True)
class Scenario:
    """A scenario's description, window, release time and per-population parameters."""

    description: str
    days: tuple[float, float]
    release_frac: tuple[float, float]
    hard: bool
    populations: dict[str, dict] = field(default_factory=dict)


_FLIPS = (0, 3)

_STANDARD_POPS: dict[str, dict] = {
    "casual": {"n": (2200, 3000), "per_day": (1.5, 25.0)},
    "developers": {"n": (300, 450), "sessions_per_day": (0.4, 1.5)},
    "enterprise": {"orgs": (2, 3), "accounts": (8, 20), "per_day": (150, 500)},
    "university": {"labs": (2, 3), "accounts": (4, 10), "runs_per_day": (0.2, 0.5)},
    "coworking": {"spaces": (2, 4), "accounts": (15, 40), "per_day": (2.0, 20.0)},
    "startup": {"accounts": (4, 10), "per_day": (200, 500)},
    "reseller_customers": {"n": (30, 80), "per_day": (2.0, 20.0)},
    "camp_reasoning": {
        "n": (20, 60),
        "payments": (2, 5),
        "interval_s": (5.0, 9.0),
        "jitter": 0.08,
        "templates": (3, 8),
        "flips": _FLIPS,
    },
    "camp_agentic": {
        "n": (150, 400),
        "reseller_share": 0.25,
        "sessions_per_day": (0.5, 1.5),
        "templates": (4, 10),
        "flips": _FLIPS,
    },
    "camp_hydra": {
        "slots": (4, 8),
        "quota": (100, 300),
        "interval_s": (40.0, 90.0),
        "templates": (5, 12),
        "flips": _FLIPS,
    },
    "camp_slowlow": {"n": (200, 450), "per_day": (15.0, 40.0), "flips": _FLIPS},
    "camp_naive": {"interval_s": (8.0, 16.0), "flips": _FLIPS},
}

_HARD_POPS: dict[str, dict] = {
    **_STANDARD_POPS,
    "enterprise": {"orgs": (3, 5), "accounts": (8, 20), "per_day": (150, 500)},
    "university": {"labs": (3, 5), "accounts": (4, 10), "runs_per_day": (0.2, 0.5)},
    "coworking": {"spaces": (4, 7), "accounts": (15, 40), "per_day": (2.0, 20.0)},
    "reseller_customers": {"n": (80, 160), "per_day": (2.0, 20.0)},
    "camp_reasoning": {
        "n": (30, 60),
        "payments": (4, 10),
        "interval_s": (8.0, 14.0),
        "jitter": 0.35,
        "templates": (8, 16),
        "flips": _FLIPS,
        "mix": 0.2,
        "reseller_share": 0.3,
    },
    "camp_agentic": {
        "n": (200, 400),
        "reseller_share": 0.5,
        "sessions_per_day": (0.3, 1.0),
        "templates": (8, 16),
        "flips": _FLIPS,
        "mix": 0.15,
    },
    "camp_hydra": {
        "slots": (4, 8),
        "quota": (60, 150),
        "interval_s": (60.0, 150.0),
        "templates": (8, 16),
        "flips": _FLIPS,
        "mix": 0.15,
    },
    "camp_slowlow": {"n": (250, 500), "per_day": (8.0, 25.0), "flips": _FLIPS, "mix": 0.2},
    "camp_naive": {"interval_s": (15.0, 30.0), "flips": _FLIPS, "mix": 0.1},
}

# Benign look-alikes (``lookalikes``): crowds that share what campaigns share, each labelled benign.
LOOKALIKE_POPS: dict[str, dict] = {
    "oss_agents": {
        "tools": (2, 3),
        "users": (100, 300),
        "sessions_per_day": (0.3, 8.0),
        "system_share": (0.5, 0.9),
        "loop_share": 0.1,
        "cloud_share": 0.15,
    },
    "course": {"courses": (1, 2), "students": (80, 200), "peak_per_day": (5.0, 60.0)},
    "eval_company": {
        "companies": (1, 2),
        "accounts": (2, 5),
        "pace_s": (1.0, 6.0),
        "run_size": 800,
        "span_days": (1.5, 3.0),
    },
    "research_lab": {
        "labs": (1, 2),
        "accounts": (3, 8),
        "pace_s": (1.0, 5.0),
        "run_size": 500,
        "span_days": (1.0, 3.0),
    },
    "ci_bots": {"companies": (1, 2), "accounts": (4, 10), "jobs_per_day": (20.0, 120.0)},
    "reseller_frontends": {"accounts": (1, 3), "per_day": (2_000.0, 20_000.0)},
    "shared_clients": {"n": (300, 600), "per_day": (1.5, 25.0), "sessions_per_day": (0.4, 1.5)},
    "cloud_devs": {"n": (50, 150), "sessions_per_day": (0.4, 1.5)},
    "agency": {"agencies": (1, 2), "accounts": (15, 40), "sessions_per_day": (0.5, 2.0)},
    "cowork_teams": {"spaces": (2, 4), "members": (20, 40), "team": (3, 6), "sessions_per_day": (0.5, 2.0)},
}

# Campaigns that drop a tell of today's five kinds (``evasions``), each labelled distillation.
EVASION_POPS: dict[str, dict] = {
    "camp_diverse": {
        "n": (60, 150),
        "per_day": (150.0, 600.0),
        "proxies": (10, 40),
        "templates": (3, 8),
        "flips": (8, 20),
    },
    "camp_human": {"n": (40, 120), "per_day": (30.0, 80.0), "flips": (2, 8), "mix": (0.3, 0.4)},
    "camp_lowvol": {"n": (300, 800), "per_day": (3.0, 12.0), "flips": (4, 12)},
    "camp_org": {
        "n": (20, 60),
        "interval_s": (5.0, 9.0),
        "jitter": 0.1,
        "templates": (3, 8),
        "flips": _FLIPS,
    },
}


def _plus(name: str, params: dict) -> Scenario:
    """``standard`` with one more population appended (its draws come after standard's)."""
    kind = "benign look-alike" if name in LOOKALIKE_POPS else "evasive campaign"
    return Scenario(
        f"standard plus the {kind} {name}",
        days=(3.0, 4.0),
        release_frac=(0.5, 0.6),
        hard=False,
        populations={**_STANDARD_POPS, name: params},
    )


SCENARIO_SPECS: dict[str, Scenario] = {
    "tiny": Scenario(
        "smoke test: ~150 accounts, ~30k events over ~6 h; reasoning, agentic and naive campaigns",
        days=(0.23, 0.27),
        release_frac=(0.4, 0.6),
        hard=False,
        populations={
            "casual": {"n": (100, 140), "per_day": (8.0, 60.0)},
            "developers": {"n": (12, 20), "sessions_per_day": (2.0, 4.0)},
            "enterprise": {"orgs": (1, 1), "accounts": (5, 9), "per_day": (1500, 3000)},
            "startup": {"accounts": (2, 4), "per_day": (600, 1200)},
            "camp_reasoning": {
                "n": (20, 30),
                "payments": (2, 4),
                "interval_s": (1.2, 2.0),
                "jitter": 0.08,
                "templates": (3, 6),
                "flips": _FLIPS,
            },
            "camp_agentic": {
                "n": (30, 45),
                "reseller_share": 0.25,
                "sessions_per_day": (8.0, 14.0),
                "templates": (3, 6),
                "flips": _FLIPS,
            },
            "camp_naive": {"interval_s": (3.0, 5.0), "flips": _FLIPS},
        },
    ),
    "standard": Scenario(
        "~4,000 accounts, a few hundred thousand events over 3-4 days; every population and campaign kind; "
        "frontier-2 released around day 2",
        days=(3.0, 4.0),
        release_frac=(0.5, 0.6),
        hard=False,
        populations=_STANDARD_POPS,
    ),
    "hard": Scenario(
        "standard scale with stealthier campaigns (lower rates, jitter, varied traffic mixed in, more "
        "templates, more reseller overlap) and more hard negatives",
        days=(3.0, 4.0),
        release_frac=(0.5, 0.6),
        hard=True,
        populations=_HARD_POPS,
    ),
    **{
        f"standard+{name}": _plus(name, params) for name, params in {**LOOKALIKE_POPS, **EVASION_POPS}.items()
    },
    "realistic": Scenario(
        "standard plus every benign look-alike (coding-agent users, a course, eval companies, labs, CI bots, "
        "resellers, popular clients, cloud developers, an agency on one card, company teams in coworking spaces) and every evasive campaign",
        days=(3.0, 4.0),
        release_frac=(0.5, 0.6),
        hard=False,
        populations={**_STANDARD_POPS, **LOOKALIKE_POPS, **EVASION_POPS},
    ),
}

SCENARIOS: dict[str, str] = {name: s.description for name, s in SCENARIO_SPECS.items()}
