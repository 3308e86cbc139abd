"""Scoring against the population: a river HalfSpaceTrees model per segment, calibrated by quantiles.

Accounts are compared with their peers (segment = account tier) on a vector of window features. The
model is fed an account's vector when its window is re-summarised, never on every event, and one model
serves a whole segment (its trees are about 125 KB, ``FlatTrees``; nothing heavy is kept per account). A
score is only called anomalous against the segment's own running score distribution: above its
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


def model_vector(profile: dict[str, float]) -> list[float]:
    """The profile as HalfSpaceTrees input, in ``FEATURES`` order: every feature mapped monotonically into
    [0, 1]."""
    return [
        min(math.log10(1.0 + profile["events_day"]) / 4.0, 1.0),
        profile["reasoning_share"],
        profile["agentic_tools_share"],
        profile["template_share"],
        profile["long_output_share"],
        min(math.log10(1.0 + profile["out_in_ratio"]) / 2.0, 1.0),
        profile["capability_top_share"],
        profile["active_hours"] / 24.0,
        min(profile["interarrival_log_std"] / 2.0, 1.0),
        profile["rate_limited_share"],
        min(profile["tools_per_req"] / 40.0, 1.0),
    ]


class FlatTrees:
    """A river ``HalfSpaceTrees`` after its first window, its trees laid out as lists, scored and taught in
    one walk down each tree.

    River builds the trees (seeded) and learns the first window, which scores 0; ``from_river`` then
    takes the splits and masses node for node. A tree of height ``h`` is complete, so node ``i`` (in
    breadth-first order) has children ``2i + 1`` and ``2i + 2``, and each tree is four lists: split
    feature (an index into ``FEATURES``), threshold, the current window's masses and the reference
    window's. The walk reads the reference masses as river's ``score_one`` does (stopping where a mass
    falls below a tenth of the window) and counts the current window's as ``learn_one`` does; at a full
    window the current masses become the reference. Scores and masses are river's exactly
    (``tests/unit/detection/test_population.py`` runs both side by side over several windows). Walking lists
    instead of river's node objects takes about 13 µs a vector instead of 30 (10 trees of height 8), and a
    model's state is about 125 KB instead of river's 1.1 MB of nodes. Every vector carries every feature,
    so river's rule for a missing one is not needed."""

    __slots__ = ("trees", "height", "window_size", "counter", "size_limit", "max_score")

    def __init__(self, trees: list[tuple[list[int], list[float], list[int], list[int]]], height: int,
                 window_size: int, counter: int) -> None:
        self.trees = trees  # per tree: (feature, threshold, current masses, reference masses)
        self.height = height
        self.window_size = window_size
        self.counter = counter
        self.size_limit = 0.1 * window_size
        self.max_score = len(trees) * window_size * (2 ** (height + 1) - 1)  # as river's ``_max_score``

    @classmethod
    def from_river(cls, model: anomaly.HalfSpaceTrees) -> FlatTrees:
        """The lists of a river model whose first window is over (trees built, reference masses set)."""
        if not model.trees or model._first_window:
            raise ValueError("a HalfSpaceTrees model is laid out flat only after its first window")
        index = {f: i for i, f in enumerate(FEATURES)}
        size = 2 ** (model.height + 1) - 1
        trees = []
        for root in model.trees:
            nodes = [root]
            for i in range(size // 2):  # the branches, breadth first; their children follow in order
                nodes += nodes[i].children
            branches = nodes[: size // 2]
            trees.append(([index[n.feature] for n in branches], [n.threshold for n in branches],
                          [n.l_mass for n in nodes], [n.r_mass for n in nodes]))
        return cls(trees, model.height, model.window_size, model.counter)

    def score_then_learn(self, x: list[float]) -> float:
        """River's ``score_one(x)`` and then ``learn_one(x)``, with one walk down each tree."""
        size_limit = self.size_limit
        height = self.height
        total = 0.0
        for feature, threshold, current, reference in self.trees:
            i = 0
            score = 0.0
            depth_pow = 1
            scoring = True
            for _ in range(height):
                if scoring:
                    r = reference[i]
                    score += r * depth_pow
                    if r < size_limit:
                        scoring = False  # river's score walk stops here; the learning walk goes on down
                    depth_pow <<= 1
                current[i] += 1
                i = 2 * i + 1 if x[feature[i]] < threshold[i] else 2 * i + 2
            if scoring:
                score += reference[i] * depth_pow
            current[i] += 1
            total += score
        self.counter += 1
        if self.counter == self.window_size:  # the window is full: it becomes the reference
            self.trees = [(f, t, [0] * len(cur), cur) for f, t, cur, _ in self.trees]
            self.counter = 0
        return 1 - total / self.max_score


@dataclass(frozen=True, slots=True)
class PopulationScore:
    score: float
    threshold: float | None
    anomalous: bool


class Segment:
    """One segment's model and its running score quantile."""

    def __init__(self, cfg: DetectionConfig, seed: int) -> None:
        self.seed = seed
        # river's model until its first window is over, then the same model as ``FlatTrees``
        self.model: anomaly.HalfSpaceTrees | None = anomaly.HalfSpaceTrees(n_trees=10, height=8, window_size=250,
                                                                           seed=seed)
        self.flat: FlatTrees | None = None
        self.window_size = self.model.window_size
        self.quantile = stats.Quantile(cfg.population_quantile)
        self.seen = 0
        self.warmup = cfg.population_warmup

    def _score_then_learn(self, x: list[float]) -> float:
        if self.flat is not None:
            return self.flat.score_then_learn(x)
        model = self.model
        assert model is not None
        xd = dict(zip(FEATURES, x, strict=True))
        score = float(model.score_one(xd))
        model.learn_one(xd)
        if not model._first_window:
            self.flat, self.model = FlatTrees.from_river(model), None
        return score

    def score_and_learn(self, x: list[float]) -> PopulationScore:
        score = self._score_then_learn(x)
        self.seen += 1
        # HalfSpaceTrees scores nothing until its first reference window is full: the calibration starts
        # after that, and the threshold is trusted once it has seen ``warmup`` scores of its own
        if self.seen <= self.window_size:
            return PopulationScore(score, None, False)
        calibrated = self.seen > self.window_size + self.warmup
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
