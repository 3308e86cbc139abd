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

import msgpack
from river import anomaly

from pipeline.detection.config import DetectionConfig
from pipeline.detection.store import ReplayMemo, Store, dense, sparse

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


SCORE_BINS = 1000
"""Bins of a segment's score distribution over [0, 1]: its quantile is known to a thousandth."""


class ScoreHistogram:
    """How many of a segment's scores fell in each of ``SCORE_BINS`` equal bins of [0, 1]: integer counts,
    so a quantile is the same wherever and however often the state was written and read back (river's
    ``stats.Quantile`` keeps its markers in Rust, out of reach of a changelog)."""

    __slots__ = ("counts", "total")

    def __init__(self, counts: list[int] | None = None) -> None:
        self.counts = counts if counts is not None else [0] * SCORE_BINS
        self.total = sum(self.counts)

    def add(self, x: float) -> None:
        i = int(x * SCORE_BINS)
        self.counts[0 if i < 0 else SCORE_BINS - 1 if i >= SCORE_BINS else i] += 1
        self.total += 1

    def quantile(self, q: float) -> float | None:
        """The upper edge of the bin where the share ``q`` of the scores is reached (None when empty): a
        score above it is above at least that share of the scores seen."""
        if not self.total:
            return None
        need, seen = q * self.total, 0
        for i, c in enumerate(self.counts):
            seen += c
            if seen >= need:
                return (i + 1) / SCORE_BINS
        return 1.0


STATE_VERSION = 1


def _river_model(seed: int, window_size: int) -> anomaly.HalfSpaceTrees:
    return anomaly.HalfSpaceTrees(n_trees=10, height=8, window_size=window_size, seed=seed)


class Segment:
    """One segment's model on one partition and its running score distribution, kept in a changelogged
    table by the worker (``to_bytes``): a restarted worker, or the one a partition moves to, goes on
    with the same model, as a backtest does.

    Until its first window is over the model is river's and the vectors it learnt are kept: river builds
    its trees from the seed alone, so learning them again rebuilds it exactly. Then it is ``FlatTrees``,
    whose lists are the state. ``offset`` (a usage-events offset, in the worker) makes learning
    idempotent: the worker writes this state before the account states of the same checkpoint, so after
    a crash between the two the replayed events reach the model again; a summary at an offset already
    learnt gets the score it got the first time (kept until the next write) and teaches nothing."""

    def __init__(self, cfg: DetectionConfig, seed: int) -> None:
        self.seed = seed
        self.model: anomaly.HalfSpaceTrees | None = _river_model(seed, cfg.population_window)
        self.first: list[list[float]] = []  # the first window's vectors, while ``model`` is river's
        self.flat: FlatTrees | None = None
        self.window_size = cfg.population_window
        self.q = cfg.population_quantile
        self.scores = ScoreHistogram()
        self.seen = 0
        self.warmup = cfg.population_warmup
        self.replays: ReplayMemo[PopulationScore] = ReplayMemo()

    def _score_then_learn(self, x: list[float]) -> float:
        if self.flat is not None:
            return self.flat.score_then_learn(x)
        model = self.model
        assert model is not None
        xd = dict(zip(FEATURES, x, strict=True))
        score = float(model.score_one(xd))
        model.learn_one(xd)
        self.first.append(x)
        if not model._first_window:
            self.flat, self.model, self.first = FlatTrees.from_river(model), None, []
        return score

    def score_and_learn(self, x: list[float], offset: int | None = None) -> PopulationScore:
        replays = self.replays
        if replays.replayed(offset):  # learnt before a crash: the same answer, nothing learnt again
            return replays.answer(offset) or PopulationScore(0.0, None, False)
        replays.learn(offset)
        score = self._score_then_learn(x)
        self.seen += 1
        # HalfSpaceTrees scores nothing until its first reference window is full: the calibration starts
        # after that, and the threshold is trusted once it has seen ``warmup`` scores of its own
        if self.seen <= self.window_size:
            out = PopulationScore(score, None, False)
        else:
            calibrated = self.seen > self.window_size + self.warmup
            threshold = self.scores.quantile(self.q) if calibrated else None
            self.scores.add(score)
            out = PopulationScore(score, threshold, threshold is not None and score > threshold)
        return replays.keep(offset, out)

    def to_bytes(self) -> bytes:
        flat, replays = self.flat, self.replays
        replays.written = True
        return msgpack.packb([
            STATE_VERSION, self.seed, self.seen, replays.applied_offset, self.first,
            None if flat is None else [flat.height, flat.window_size, flat.counter, flat.trees],
            sparse(self.scores.counts),
            [[o, s.score, s.threshold, s.anomalous] for o, s in replays.answers.items()],
        ])

    @classmethod
    def from_bytes(cls, raw: bytes, cfg: DetectionConfig) -> Segment:
        v = msgpack.unpackb(raw, strict_map_key=True)
        if v[0] != STATE_VERSION:
            raise ValueError(f"population model state version {v[0]} is not {STATE_VERSION}")
        _, seed, seen, applied, first, flat, scores, memo = v
        seg = cls(cfg, seed)
        seg.seen = seen
        if flat is None:
            model = seg.model
            assert model is not None
            for x in first:  # river's trees come from the seed; their masses from these vectors
                model.learn_one(dict(zip(FEATURES, x, strict=True)))
            seg.first = [list(x) for x in first]
        else:
            height, window_size, counter, trees = flat
            seg.model = None
            seg.flat = FlatTrees([(list(f), list(t), list(c), list(r)) for f, t, c, r in trees], height,
                                 window_size, counter)
        seg.scores = ScoreHistogram(dense(scores, SCORE_BINS))
        seg.replays = ReplayMemo(applied, {o: PopulationScore(s, t, a) for o, s, t, a in memo})
        return seg


class PopulationModels:
    """Segment models, one per (segment, partition), in ``store`` under ``"<partition>:<segment>"``: the
    same partition gives the same model state whichever worker runs it, so a backtest and any number of
    workers agree."""

    def __init__(self, cfg: DetectionConfig, store: Store | None = None) -> None:
        self.cfg = cfg
        self.store: Store = {} if store is None else store

    @staticmethod
    def key(segment: str, partition: int) -> str:
        return f"{partition}:{segment}"

    def score(self, segment: str, partition: int, profile: dict[str, float],
              offset: int | None = None) -> PopulationScore:
        key = self.key(segment, partition)
        seg: Segment | None = self.store.get(key)
        if seg is None:
            seg = Segment(self.cfg, self.cfg.population_seed * 1000 + partition)
        out = seg.score_and_learn(model_vector(profile), offset)
        self.store[key] = seg
        return out
