"""Link updates in event-time order whatever order the source partitions were read in (``ordering``),
and the engine's link stage the same in process as over a worker's interleavings."""

from __future__ import annotations

import random
from typing import Any

from pipeline.detection import DetectionConfig, Engine
from pipeline.detection.messages import LinkUpdate, MemberSummary
from pipeline.detection.ordering import Aligner, order_key
from pipeline.detection.partition import partition_for
from pipeline.simulate import generate

SOURCES = 4


def summary(account: str, ts: int, n: int) -> MemberSummary:
    return MemberSummary(account, ts, n, 100.0, 0.9, 0.5, 0, 0, 0, None, None, 0.5)


def source_streams(seed: int) -> list[list[tuple[LinkUpdate, int]]]:
    """Per source partition, its updates in the order it produced them (event time, with some disorder
    within the slack), each with the source's watermark after it."""
    rng = random.Random(seed)
    streams: list[list[tuple[LinkUpdate, int]]] = [[] for _ in range(SOURCES)]
    wm = [0] * SOURCES
    counts: dict[str, int] = {}
    for i in range(600):
        acct = f"a{rng.randrange(40)}"
        src = partition_for(acct, SOURCES)
        ts = 1_000_000 + i * 1000 + rng.randrange(-20_000, 1)  # up to 20 s out of order
        counts[acct] = counts.get(acct, 0) + 1
        wm[src] = max(wm[src], ts)
        for key in rng.sample(["pay:x", "cli:y", "tpl:z", "net:w"], 2):
            streams[src].append((LinkUpdate(key, summary(acct, ts, counts[acct])), wm[src]))
    return streams


def interleave(streams: list[list[tuple[LinkUpdate, int]]], rng: random.Random, idle_at_end: bool) -> list[Any]:
    """One reading of the sources: runs of each in turn, as fetches come; then each source goes idle."""
    pos = [0] * len(streams)
    order: list[Any] = []
    while any(p < len(s) for p, s in zip(pos, streams, strict=True)):
        src = rng.choice([i for i, s in enumerate(streams) if pos[i] < len(s)])
        run = rng.randrange(1, 80)
        for upd, wm in streams[src][pos[src]:pos[src] + run]:
            order.append(("update", src, upd))
            order.append(("wm", src, wm))
        pos[src] += run
    if idle_at_end:
        order += [("idle", src, 0) for src in range(len(streams))]
    return order


def released_per_key(order: list[Any], slack: int) -> tuple[dict[str, list[Any]], int]:
    aligner = Aligner(SOURCES, slack)
    out: dict[str, list[Any]] = {}
    late = 0
    for what, src, x in order:
        if what == "update":
            if not aligner.offer(x, src):
                late += 1
                out.setdefault(x.key, []).append(order_key(x))
        elif what == "wm":
            aligner.advance(src, x)
        else:
            aligner.rest(src, x)
        for upd, _ in aligner.release():
            out.setdefault(upd.key, []).append(order_key(upd))
    assert not aligner.heap, "every source idle: everything given out"
    return out, late


def test_each_link_key_gets_its_updates_in_key_order_whatever_the_interleaving_of_sources():
    streams = source_streams(1)
    expected: dict[str, list[Any]] = {}
    for upd, _ in sorted((x for s in streams for x in s), key=lambda x: order_key(x[0])):
        expected.setdefault(upd.key, []).append(order_key(upd))
    for seed in range(20):
        got, late = released_per_key(interleave(streams, random.Random(seed), idle_at_end=True), slack=30_000)
        assert late == 0
        assert got == expected


def test_an_update_behind_what_was_given_out_is_late_and_nothing_waits_for_a_source_not_heard_from():
    aligner = Aligner(2, 0)
    aligner.offer(LinkUpdate("pay:x", summary("a", 100, 1)), 0)
    aligner.advance(0, 500)
    assert aligner.release() == [], "source 1 not heard from: it may still have older updates"
    aligner.advance(1, 400)
    assert [u.summary.ts for u, _ in aligner.release()] == [100]
    assert aligner.offer(LinkUpdate("pay:x", summary("b", 50, 1)), 1) is False  # late: apply at once
    aligner.offer(LinkUpdate("pay:x", summary("b", 450, 2)), 1)
    aligner.rest(1, 400)  # source 1 idle: only source 0 holds back
    assert [u.summary.ts for u, _ in aligner.release()] == [450]


def test_the_state_a_worker_keeps_comes_back_the_same():
    aligner = Aligner(3, 60_000)
    aligner.advance(0, 10)
    aligner.rest(2, 7)
    aligner.offer(LinkUpdate("pay:x", summary("a", 1, 1)), 0)
    aligner.advance(1, 70_000)
    aligner.release()
    again = Aligner(3, 60_000)
    again.restore(aligner.state_bytes())
    assert (again.wm, again.idle, again.last) == (aligner.wm, aligner.idle, aligner.last)


def test_the_engine_gives_the_same_outputs_whether_link_updates_come_in_order_or_from_shuffled_sources():
    """The engine's link stage fed as a worker feeds it (each source partition's updates in its own
    order, sources interleaved at random, watermarks after each) gives what ``replay`` gives."""
    sim = generate("tiny", 2)
    cfg = DetectionConfig()
    reference = [(o.topic, o.key, o.value.get("alert_id") or o.value.get("action_id"))
                 for o in Engine(cfg).replay(sim.events)]  # type: ignore[arg-type]
    flagged_ref = {o[1] for o in reference if o[0] == "enforcement-actions"}
    for seed in (1, 2):
        engine = Engine(cfg)
        per_source: list[list[Any]] = [[] for _ in range(cfg.partitions)]
        account_outputs = []
        wm = [0] * cfg.partitions
        for ev in sim.events:
            p = engine.partition(ev["account_id"])
            res = engine.on_event(ev, p)  # type: ignore[arg-type]
            account_outputs += res.outputs
            wm[p] = max(wm[p], ev["ts"])
            per_source[p] += [("update", p, u) for u in res.links] + [("wm", p, wm[p])]
        rng = random.Random(seed)
        pos = [0] * cfg.partitions
        aligner = Aligner(cfg.partitions, cfg.link_order_slack_ms)
        outputs = list(account_outputs)
        while any(pos[i] < len(s) for i, s in enumerate(per_source)):
            src = rng.choice([i for i, s in enumerate(per_source) if pos[i] < len(s)])
            run = rng.randrange(1, 400)
            for what, p, x in per_source[src][pos[src]:pos[src] + run]:
                if what == "update":
                    assert aligner.offer(x, p), "nothing is late: every source is within the slack"
                else:
                    aligner.advance(p, x)
                for upd, _ in aligner.release():
                    outputs += engine._link(upd)
            pos[src] += run
        for upd, _ in aligner.drain():
            outputs += engine._link(upd)
        for signal, _ in engine._signals.drain():  # the groups' signals, in their order, to the campaigns
            outputs += engine._campaign(signal)
        flagged = {o.key for o in outputs if o.topic == "enforcement-actions"}
        assert flagged == flagged_ref and flagged
        got = sorted((o.topic, o.key, o.value.get("alert_id") or o.value.get("action_id")) for o in outputs)
        assert got == sorted(reference), "the same alerts and actions, ids and all"


def test_a_group_signal_applied_again_gives_no_new_alert_or_action():
    """After a crash between the campaign state's write and the order's, the campaign stage offers signals
    it had applied again: each second application must send nothing new."""
    engine = Engine(DetectionConfig())
    first = engine._campaign
    again: list[Any] = []

    def twice(signal: Any) -> Any:
        out = first(signal)
        again.extend(o for o in first(signal) if o.topic in ("anomaly-alerts", "enforcement-actions"))
        return out

    engine._campaign = twice  # type: ignore[method-assign]
    outputs = list(engine.replay(generate("tiny", 3).events))  # type: ignore[arg-type]
    assert any(o.value.get("kind") == "coordinated_campaign" for o in outputs) and again == []
