"""Scoring against the population: a river HalfSpaceTrees model per segment, calibrated by quantiles.

Accounts are compared with their peers (segment = account tier) on a vector of window features. The
model is fed an account's vector when its window is re-summarised, never on every event, and one model
serves a whole segment (river's trees are ~1 MiB each; nothing heavy is kept per account). A score is
only called anomalous against the segment's own running score distribution: above its
``population_quantile`` after ``population_warmup`` summaries, so no threshold is hand-set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from river import anomaly, stats

from pipeline.detection.config import DetectionConfig

# features fed to the model, each squashed into [0, 1] (HalfSpaceTrees expects that range)
FEATURES = (
    "events_day", "reasoning_share", "agentic_tools_share", "template_share", "long_output_share",
    "out_in_ratio", "capability_top_share", "active_hours", "interarrival_log_std", "rate_limited_share",
    "tools_per_req",
)


def model_vector(profile: dict[str, float]) -> dict[str, float]:
    """The profile as HalfSpaceTrees input: every feature mapped monotonically into [0, 1]."""
    return {
        "events_day": min(math.log10(1.0 + profile["events_day"]) / 4.0, 1.0),
        "reasoning_share": profile["reasoning_share"],
        "agentic_tools_share": profile["agentic_tools_share"],
        "template_share": profile["template_share"],
        "long_output_share": profile["long_output_share"],
        "out_in_ratio": min(math.log10(1.0 + profile["out_in_ratio"]) / 2.0, 1.0),
        "capability_top_share": profile["capability_top_share"],
        "active_hours": profile["active_hours"] / 24.0,
        "interarrival_log_std": min(profile["interarrival_log_std"] / 2.0, 1.0),
        "rate_limited_share": profile["rate_limited_share"],
        "tools_per_req": min(profile["tools_per_req"] / 40.0, 1.0),
    }


def score_then_learn(model: anomaly.HalfSpaceTrees, x: dict[str, float]) -> float:
    """``model.score_one(x)`` and then ``model.learn_one(x)``, with one walk down each tree instead of two.

    Both of river's walks follow the same path (scoring reads the reference window's masses, learning
    counts the current window's, and a missing feature picks the child by the current window's masses,
    which this walk has not yet changed below the node it is at), so the score, the masses and the window
    pivot are exactly river's; ``tests/unit/test_population.py`` holds it to that. The model's first call
    (it builds its trees) and its first window (it scores 0) are left to river itself."""
    if not model.trees or model._first_window:
        score = model.score_one(x)
        model.learn_one(x)
        return score
    height = model.height
    size_limit = 0.1 * model.window_size
    total = 0.0
    for node in model.trees:
        score = 0.0
        depth_pow = 1
        scoring = True
        for _ in range(height):
            if scoring:
                r = node.r_mass
                score += r * depth_pow
                if r < size_limit:
                    scoring = False  # river's score walk stops here; the learning walk goes on down
                depth_pow <<= 1
            node.l_mass += 1
            c = node.children
            try:
                value = x[node.feature]
            except KeyError:
                node = c[1] if c[0].l_mass < c[1].l_mass else c[0]
            else:
                node = c[0] if value < node.threshold else c[1]
        if scoring:
            score += node.r_mass * depth_pow
        node.l_mass += 1
        total += score
    model.counter += 1  # the rest is river's ``learn_one`` after its walks: pivot at a full window
    if model.counter == model.window_size:
        for nodes in model._tree_nodes:
            for n in nodes:
                n.r_mass = n.l_mass
                n.l_mass = 0
        model._first_window = False
        model.counter = 0
    return 1 - total / model._max_score


@dataclass(frozen=True, slots=True)
class PopulationScore:
    score: float
    threshold: float | None
    anomalous: bool


class Segment:
    """One segment's model and its running score quantile."""

    def __init__(self, cfg: DetectionConfig, seed: int) -> None:
        self.model = anomaly.HalfSpaceTrees(n_trees=10, height=8, window_size=250, seed=seed)
        self.quantile = stats.Quantile(cfg.population_quantile)
        self.seen = 0
        self.warmup = cfg.population_warmup

    def score_and_learn(self, x: dict[str, float]) -> PopulationScore:
        score = float(score_then_learn(self.model, x))
        self.seen += 1
        # HalfSpaceTrees scores nothing until its first reference window is full: the calibration starts
        # after that, and the threshold is trusted once it has seen ``warmup`` scores of its own
        if self.seen <= self.model.window_size:
            return PopulationScore(score, None, False)
        calibrated = self.seen > self.model.window_size + self.warmup
        threshold = self.quantile.get() if calibrated else None
        self.quantile.update(score)
        return PopulationScore(score, threshold, threshold is not None and score > threshold)


class PopulationModels:
    """Segment models, one per (segment, partition): the same partition gives the same model state
    whichever worker runs it, so a backtest and any number of workers agree."""

    def __init__(self, cfg: DetectionConfig) -> None:
        self.cfg = cfg
        self.segments: dict[tuple[str, int], Segment] = {}

    def score(self, segment: str, partition: int, profile: dict[str, float]) -> PopulationScore:
        key = (segment, partition)
        seg = self.segments.get(key)
        if seg is None:
            seed = self.cfg.population_seed * 1000 + partition
            seg = self.segments[key] = Segment(self.cfg, seed)
        return seg.score_and_learn(model_vector(profile))
