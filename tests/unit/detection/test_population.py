"""Population models (``pipeline.detection.population``): HalfSpaceTrees per segment, quantile-calibrated,
written and read back exactly."""

from __future__ import annotations

import random

import msgpack
import pytest
from river import anomaly

from pipeline.detection.config import DetectionConfig
from pipeline.detection.population import (
    FEATURES,
    SCORE_BINS,
    FlatTrees,
    PopulationModels,
    PopulationScore,
    ScoreHistogram,
    Segment,
    model_vector,
)
from pipeline.detection.store import dense, sparse

WARMUP = 60
CFG = DetectionConfig(population_warmup=WARMUP, population_quantile=0.99)
WINDOW = 250  # HalfSpaceTrees' reference window in Segment


def ordinary(rng: random.Random) -> dict[str, float]:
    """A casual-looking profile with a little noise."""
    return {
        "events_day": rng.uniform(10, 40), "reasoning_share": rng.uniform(0.0, 0.1),
        "agentic_tools_share": rng.uniform(0.0, 0.05), "template_share": rng.uniform(0.0, 0.05),
        "long_output_share": rng.uniform(0.0, 0.1), "out_in_ratio": rng.uniform(0.5, 2.0),
        "capability_top_share": rng.uniform(0.4, 0.6), "active_hours": float(rng.randint(2, 5)),
        "interarrival_log_std": rng.uniform(0.8, 1.2), "rate_limited_share": 0.0, "tools_per_req": 0.0,
    }


EXTREME = {
    "events_day": 20000.0, "reasoning_share": 1.0, "agentic_tools_share": 1.0, "template_share": 1.0,
    "long_output_share": 1.0, "out_in_ratio": 100.0, "capability_top_share": 1.0, "active_hours": 24.0,
    "interarrival_log_std": 0.0, "rate_limited_share": 1.0, "tools_per_req": 50.0,
}


def run(models: PopulationModels, n: int, seed: int = 1) -> list[PopulationScore]:
    rng = random.Random(seed)
    return [models.score("pro", 0, ordinary(rng)) for _ in range(n)]


def test_model_vector_maps_every_feature_into_the_unit_range() -> None:
    rng = random.Random(2)
    for p in [EXTREME, {k: 0.0 for k in EXTREME}, *(ordinary(rng) for _ in range(50))]:
        x = model_vector(p)
        assert len(x) == len(FEATURES)
        assert all(0.0 <= v <= 1.0 for v in x)


def test_nothing_is_anomalous_before_warm_up() -> None:
    """Even extreme vectors are not called anomalous while the window fills and the quantile warms up."""
    models = PopulationModels(CFG)
    rng = random.Random(3)
    for i in range(WINDOW + WARMUP):
        s = models.score("pro", 0, EXTREME if i % 10 == 9 else ordinary(rng))
        assert s.threshold is None and not s.anomalous, i


def test_threshold_is_the_running_quantile_of_the_segments_scores() -> None:
    """From the first full window on, scores feed the segment's histogram; after warm-up each summary's
    threshold is the quantile of the scores before it, to the histogram's thousandth (never below it)."""
    scores = run(PopulationModels(CFG), WINDOW + WARMUP + 150)
    before: list[float] = []
    for i, s in enumerate(scores, start=1):
        if i <= WINDOW:
            assert s.threshold is None
            continue
        if i <= WINDOW + WARMUP:
            assert s.threshold is None
        else:
            ranked = sorted(before)
            exact = ranked[max(0, -(-int(CFG.population_quantile * len(ranked) * 1e9) // int(1e9)) - 1)]
            assert s.threshold is not None and exact <= s.threshold <= exact + 1e-3 + 1e-12, i
            assert s.anomalous == (s.score > s.threshold)
        before.append(s.score)


def test_the_histogram_quantile_is_the_upper_edge_of_the_bin_that_reaches_the_share() -> None:
    h = ScoreHistogram()
    assert h.quantile(0.5) is None
    for x in (0.1004, 0.2, 0.2, 0.9999, 1.0, -0.1):
        h.add(x)
    assert h.total == 6
    assert h.quantile(1 / 6) == 0.001  # -0.1 counts in the first bin
    assert h.quantile(0.5) == 0.201
    assert h.quantile(1.0) == 1.0
    assert dense(sparse(h.counts), SCORE_BINS) == h.counts


def test_an_extreme_vector_among_similar_ones_is_anomalous() -> None:
    models = PopulationModels(CFG)
    ordinary_scores = run(models, WINDOW + WARMUP + 100)
    extreme = models.score("pro", 0, EXTREME)
    assert extreme.threshold is not None
    assert extreme.anomalous
    assert extreme.score > max(s.score for s in ordinary_scores[WINDOW:])
    assert sum(s.anomalous for s in ordinary_scores) <= 0.05 * 100  # the quantile keeps false calls rare


def test_segments_and_partitions_have_their_own_models() -> None:
    models = PopulationModels(CFG)
    run(models, WINDOW + WARMUP + 10)
    s = models.score("enterprise", 0, EXTREME)
    assert s.threshold is None and not s.anomalous  # a fresh segment is still warming up
    assert models.score("pro", 1, EXTREME).threshold is None  # so is another partition
    assert set(models.store) == {"0:pro", "0:enterprise", "1:pro"}  # type: ignore[call-overload]
    assert models.store.get("0:pro").seen == WINDOW + WARMUP + 10


def test_two_models_fed_the_same_sequence_give_identical_scores() -> None:
    a = run(PopulationModels(CFG), WINDOW + WARMUP + 50, seed=4)
    b = run(PopulationModels(CFG), WINDOW + WARMUP + 50, seed=4)
    assert a == b


def test_the_seed_is_explicit_per_partition() -> None:
    """Two partitions of one segment get different, deterministic seeds."""
    models = PopulationModels(CFG)
    models.score("pro", 0, EXTREME)
    models.score("pro", 3, EXTREME)
    seeds = {k: models.store.get(k).seed for k in ("0:pro", "3:pro")}
    assert seeds == {"0:pro": CFG.population_seed * 1000, "3:pro": CFG.population_seed * 1000 + 3}


@pytest.mark.parametrize("quantile", [0.9, 0.995])
def test_segment_uses_the_configured_quantile(quantile: float) -> None:
    seg = Segment(DetectionConfig(population_quantile=quantile), seed=1)
    assert seg.q == quantile


def test_flat_trees_score_and_learn_exactly_as_river() -> None:
    """The segment's model gives river's scores bit for bit, through river's first window and then the
    flat walk, over several window pivots, with a mix of ordinary and extreme vectors; the flat trees
    keep river's masses node for node."""
    rng = random.Random(3)
    seg = Segment(CFG, seed=11)
    river = anomaly.HalfSpaceTrees(n_trees=10, height=8, window_size=WINDOW, seed=11)
    for i in range(4 * WINDOW + 130):
        x = model_vector(EXTREME if i % 37 == 0 else ordinary(rng))
        xd = dict(zip(FEATURES, x, strict=True))
        expected = river.score_one(xd)
        river.learn_one(xd)
        assert seg.score_and_learn(x).score == expected, i
        assert (seg.flat is None) == (i < WINDOW - 1)  # laid out flat once the first window is over
    assert seg.model is None and seg.flat is not None  # river's nodes are let go
    for (feature, threshold, current, reference), root in zip(seg.flat.trees, river.trees, strict=True):
        nodes = [root]
        for i in range(len(current) // 2):
            nodes += nodes[i].children
        assert current == [n.l_mass for n in nodes]
        assert reference == [n.r_mass for n in nodes]
        assert [FEATURES[f] for f in feature] == [n.feature for n in nodes[: len(feature)]]
        assert threshold == [n.threshold for n in nodes[: len(threshold)]]
    assert seg.flat.counter == river.counter


def test_flat_trees_need_the_first_window_over() -> None:
    model = anomaly.HalfSpaceTrees(n_trees=2, height=3, window_size=10, seed=1)
    with pytest.raises(ValueError, match="first window"):
        FlatTrees.from_river(model)
    x = dict.fromkeys(FEATURES, 0.5)
    model.learn_one(x)
    with pytest.raises(ValueError, match="first window"):
        FlatTrees.from_river(model)


def vectors(n: int, seed: int = 5) -> list[list[float]]:
    rng = random.Random(seed)
    return [model_vector(EXTREME if i % 41 == 0 else ordinary(rng)) for i in range(n)]


@pytest.mark.parametrize("cut", [0, 1, 120, WINDOW - 1, WINDOW, WINDOW + WARMUP + 3, 3 * WINDOW + 17])
def test_a_segment_written_and_read_back_goes_on_exactly_as_one_never_written(cut: int) -> None:
    """Cut anywhere (in river's first window, at its end, after warm-up, windows later): the segment read
    back from its bytes gives the uninterrupted segment's scores, thresholds and calls from there on."""
    xs = vectors(4 * WINDOW)
    whole = Segment(CFG, seed=9)
    expected = [whole.score_and_learn(x) for x in xs]
    first = Segment(CFG, seed=9)
    got = [first.score_and_learn(x) for x in xs[:cut]]
    restored = Segment.from_bytes(first.to_bytes(), CFG)
    got += [restored.score_and_learn(x) for x in xs[cut:]]
    assert got == expected
    assert restored.to_bytes() == whole.to_bytes()


def test_summaries_replayed_after_a_crash_get_their_first_scores_and_teach_nothing() -> None:
    """The worker writes the model before the account states of a checkpoint: after a crash between the
    two, the checkpoint's events reach the model again, at offsets it has learnt. Each gets the score it
    got the first time, and the model goes on as if they had come once."""
    xs = vectors(WINDOW + WARMUP + 200, seed=6)
    offsets = list(range(100, 100 + 2 * len(xs), 2))
    once = Segment(CFG, seed=3)
    expected = [once.score_and_learn(x, o) for x, o in zip(xs, offsets, strict=True)]

    seg = Segment(CFG, seed=3)
    cut, crash = WINDOW + WARMUP + 40, WINDOW + WARMUP + 90  # written at ``cut``, then at ``crash``
    got = [seg.score_and_learn(x, o) for x, o in zip(xs[:cut], offsets[:cut], strict=True)]
    seg = Segment.from_bytes(seg.to_bytes(), CFG)
    got += [seg.score_and_learn(x, o) for x, o in zip(xs[cut:crash], offsets[cut:crash], strict=True)]
    stored = seg.to_bytes()  # the crash: account states still at ``cut``, so events from there come again
    seg = Segment.from_bytes(stored, CFG)
    replayed = [seg.score_and_learn(x, o) for x, o in zip(xs[cut:], offsets[cut:], strict=True)]
    assert got == expected[:crash]
    assert replayed == expected[cut:]
    assert seg.seen == once.seen
    more = vectors(300, seed=8)
    next_offsets = range(offsets[-1] + 1, offsets[-1] + 301)
    assert ([seg.score_and_learn(x, o) for x, o in zip(more, next_offsets, strict=True)]
            == [once.score_and_learn(x, o) for x, o in zip(more, next_offsets, strict=True)])


def test_a_state_of_another_version_is_refused() -> None:
    raw = Segment(CFG, seed=1).to_bytes()
    v = msgpack.unpackb(raw)
    v[0] = 99
    with pytest.raises(ValueError, match="version 99"):
        Segment.from_bytes(msgpack.packb(v), CFG)
