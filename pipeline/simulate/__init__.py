"""Deterministic synthetic API traffic with labelled distillation campaigns and benign hard negatives.

>>> sim = generate("tiny", seed=1)
>>> sim.events[0]["schema_version"], sorted({lab["label"] for lab in sim.labels})
(1, ['benign', 'distillation'])

The same ``(scenario, seed, scale)`` always gives the same events, labels and info; nothing reads the
clock or the global random state. Populations live in ``populations`` (ordinary users),
``hard_negatives`` (benign traffic that looks suspicious), ``lookalikes`` (benign crowds that share what
campaigns share: a coding agent's system prompt and SDK, a course's assignment, a company card without an
org), ``campaigns`` (distillation) and ``evasions`` (campaigns that drop one of those tells).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from .assemble import FIELDS, MAX_LATENESS_MS, run_tag, to_events
from .scenarios import GENERATORS, SCENARIO_SPECS, SCENARIOS
from .traffic import MODELS, NEW_MODEL, concat
from .world import World

__all__ = ["FIELDS", "MAX_LATENESS_MS", "SCENARIOS", "Simulation", "UnknownScenario", "generate"]


class UnknownScenario(ValueError):
    """Raised for a scenario name that is not in ``SCENARIOS``; the message lists the known names."""

    def __init__(self, name: str) -> None:
        super().__init__(f"unknown scenario {name!r}; known scenarios: {', '.join(SCENARIOS)}")
        self.name = name


@dataclass
class Simulation:
    """A generated run: UsageEvent v1 dicts in arrival order, one label per account, and a summary."""

    events: list[dict]
    labels: list[dict]
    info: dict = field(default_factory=dict)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def generate(scenario: str, seed: int, scale: float = 1.0) -> Simulation:
    """Generate a scenario's traffic for a seed; ``scale`` multiplies every population's account count."""
    spec = SCENARIO_SPECS.get(scenario)
    if spec is None:
        raise UnknownScenario(scenario)
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    world = World.create(scenario, seed, scale, spec.hard, spec.days, spec.release_frac)
    blocks = [GENERATORS[name](world, params) for name, params in spec.populations.items()]
    events, account = to_events(world, concat(blocks), run_tag(scenario, seed, scale))

    per_account = np.bincount(account, minlength=len(world.labels))
    active = np.flatnonzero(per_account > 0)
    labels = [world.labels[i] for i in active.tolist()]
    populations: dict[str, dict] = {}
    campaigns: dict[str, dict] = {}
    for i in active.tolist():
        pop = populations.setdefault(world.label_population[i], {"accounts": 0, "events": 0})
        pop["accounts"] += 1
        pop["events"] += int(per_account[i])
        cid = world.labels[i]["campaign_id"]
        if cid is not None:
            camp = campaigns.setdefault(
                cid, {"kind": world.campaigns[cid]["kind"], "n_accounts": 0, "n_events": 0}
            )
            camp["n_accounts"] += 1
            camp["n_events"] += int(per_account[i])
    info = {
        "scenario": scenario,
        "seed": seed,
        "scale": scale,
        "n_events": len(events),
        "n_accounts": len(labels),
        "n_distillation_accounts": sum(lab["label"] == "distillation" for lab in labels),
        "start_ts": world.t0,
        "end_ts": world.t1,
        "start": _iso(world.t0),
        "end": _iso(world.t1),
        "models": list(MODELS),
        "new_model": NEW_MODEL,
        "new_model_release_ts": world.release_ts,
        "populations": populations,
        "campaigns": campaigns,
        "account_population": {world.labels[i]["account_id"]: world.label_population[i] for i in active.tolist()},
        "max_lateness_ms": MAX_LATENESS_MS,
    }
    return Simulation(events=events, labels=labels, info=info)
