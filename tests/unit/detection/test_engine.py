"""The detection engine end to end in process, its determinism and idempotence, and the backtest metrics."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka.partitioner.default import murmur2 as kafka_murmur2

from pipeline import cli
from pipeline.contract.eventfile import write_records
from pipeline.detection import DetectionConfig, Engine
from pipeline.detection.engine import ACTIONS, ALERTS
from pipeline.detection.features import AccountState
from pipeline.detection.partition import murmur2, partition_for
from pipeline.offline.evaluation import Evaluation
from pipeline.settings import Settings
from pipeline.simulate import Simulation, generate
from tests.factories import BASE_TS, event


@pytest.fixture(scope="module")
def tiny() -> Simulation:
    return generate("tiny", 1)


def run_engine(events: list[dict[str, Any]]) -> list[tuple[str, str, bytes]]:
    engine = Engine(DetectionConfig())
    return [(o.topic, o.key, orjson.dumps(o.value)) for o in engine.replay(events)]  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------- determinism


def test_two_engines_on_the_same_events_give_byte_identical_outputs(tiny: Simulation) -> None:
    a = run_engine(tiny.events)
    b = run_engine(tiny.events)
    assert a == b
    topics = {t for t, _, _ in a}
    assert topics == {ALERTS, ACTIONS}  # the tiny scenario does raise alerts and actions


def test_backtest_cli_twice_gives_byte_identical_files(tiny: Simulation, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DG_ENFORCE", "DG_SIGNING_KEY", "DG_ALLOWLIST_ACCOUNTS", "DG_ALLOWLIST_ORGS", "DG_PARTITIONS"):
        monkeypatch.delenv(name, raising=False)
    events = tmp_path / "events.msgpack"
    assert write_records(events, tiny.events) == len(tiny.events)
    files = []
    for run in ("1", "2"):
        alerts, actions = tmp_path / f"alerts{run}.jsonl", tmp_path / f"actions{run}.jsonl"
        code = cli.main(["backtest", "--input", str(events), "--alerts-out", str(alerts),
                         "--actions-out", str(actions), "-q"])
        assert code == 0
        files.append((alerts.read_bytes(), actions.read_bytes()))
    assert files[0] == files[1]
    assert files[0][0] and files[0][1]


# ---------------------------------------------------------------------------------------- idempotence


def account_events(n: int) -> list[dict[str, Any]]:
    return [event(i, account_id="acct-r", ts=BASE_TS + i * 10_000, reasoning_requested=True) for i in range(n)]


def test_a_redelivered_event_is_a_no_op() -> None:
    engine = Engine(DetectionConfig())
    evs = account_events(10)
    for ev in evs:
        engine.on_event(ev, 0)  # type: ignore[arg-type]
    before = engine.accounts.get("acct-r").to_bytes()
    res = engine.on_event(evs[7], 0)  # type: ignore[arg-type]
    assert res.duplicate and res.outputs == [] and res.links == []
    assert engine.accounts.get("acct-r").to_bytes() == before


def test_an_offset_at_or_below_the_applied_one_is_skipped() -> None:
    engine = Engine(DetectionConfig())
    evs = account_events(4)
    assert not engine.on_event(evs[0], 0, offset=5).duplicate  # type: ignore[arg-type]
    state: AccountState = engine.accounts.get("acct-r")
    assert state.applied_offset == 5
    before = state.to_bytes()
    assert engine.on_event(evs[1], 0, offset=5).duplicate  # type: ignore[arg-type]
    assert engine.on_event(evs[2], 0, offset=3).duplicate  # type: ignore[arg-type]
    assert engine.accounts.get("acct-r").to_bytes() == before
    assert not engine.on_event(evs[3], 0, offset=6).duplicate  # type: ignore[arg-type]
    assert engine.accounts.get("acct-r").n == 2


def test_a_redelivered_link_update_is_skipped() -> None:
    engine = Engine(DetectionConfig())
    for ev in account_events(3):  # the third event is the account's first summary
        res = engine.on_event(ev, 0)  # type: ignore[arg-type]
    upd = res.links[0]
    assert upd.key == "pay:pf0123456789abcd"
    engine.on_link_update(upd, offset=10)
    before = engine.links.get(upd.key).to_bytes()
    assert engine.on_link_update(upd, offset=10) is None
    assert engine.links.get(upd.key).to_bytes() == before


def test_summaries_start_at_three_events_and_re_announce_established_links_sparingly() -> None:
    """One event a minute on template A, then three on template B, then A again (BASE_TS is on a
    two-hour boundary). Summaries: at 3 events, when the count doubles, and every 30 minutes."""
    a, b = "0123456789abcdef", "fedcba9876543210"
    evs = [event(i, account_id="acct-t", ts=BASE_TS + i * 60_000, prompt_simhash=b if 70 <= i < 73 else a)
           for i in range(140)]
    engine = Engine(DetectionConfig())
    keys = [[u.key for u in engine.on_event(ev, 0).links] for ev in evs]  # type: ignore[arg-type]
    assert keys[0] == keys[1] == []
    kinds = [k.split(":", 1)[0] for k in keys[2]]  # the first summary: every key
    assert kinds == ["pay", "cli", "net", "tpl", "tpl", "tpl", "tpl"]
    # 78 events at 77 min: a 30-minute summary inside the first two hours; only the new template B
    new = keys[77]
    assert len(new) == 4 and all(k.startswith("tpl:") for k in new) and not set(new) & set(keys[2])
    assert keys[107] == new  # 30 minutes later, still inside the first two hours: B is still new
    # 138 events at 137 min: the first summary after the two-hour boundary announces everything again
    assert set(keys[2]) | set(new) == set(keys[137])


# ---------------------------------------------------------------------------------------- partitioning


def test_partition_for_matches_kafka_pythons_default_partitioner() -> None:
    rng = random.Random(31)
    keys = ["", "a", "ab", "abc", "abcd", "acct_de731a740f25", "ünïcødé-ключ"]
    keys += ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789_-") for _ in range(rng.randrange(1, 40)))
             for _ in range(500)]
    for key in keys:
        data = key.encode("utf-8")
        assert murmur2(data) & 0xFFFFFFFF == kafka_murmur2(data) & 0xFFFFFFFF, key
        for n in (1, 4, 12, 64):
            assert partition_for(key, n) == (kafka_murmur2(data) & 0x7FFFFFFF) % n, (key, n)


def test_murmur2_is_a_signed_java_int() -> None:
    values = [murmur2(str(i).encode()) for i in range(200)]
    assert all(-(2**31) <= v < 2**31 for v in values)
    assert any(v < 0 for v in values)


# ---------------------------------------------------------------------------------------- settings

KEY32 = "engine-test-signing-key-0123456789abcdef"  # enforce mode needs 32 bytes or more


def test_detection_config_from_settings() -> None:
    cfg = DetectionConfig.from_settings(Settings(enforce=True, signing_key=KEY32, allowlist_accounts="a, b",
                                                 partitions=6, account_high=0.55))
    assert cfg.shadow is False
    assert cfg.allowlist_accounts == frozenset({"a", "b"})
    assert cfg.allowlist_orgs == frozenset()
    assert cfg.partitions == 6
    assert cfg.account_high == 0.55


def test_detection_config_from_default_settings_is_shadow() -> None:
    cfg = DetectionConfig.from_settings(Settings(partitions=4))
    assert cfg.shadow is True
    assert cfg == DetectionConfig(partitions=4)


def test_engine_from_config_signs_with_the_settings_key() -> None:
    from pipeline.contract.signing import verify

    settings = Settings(enforce=True, signing_key=KEY32, partitions=4)
    engine = Engine.from_config(settings)
    assert engine.policy.key == KEY32.encode()
    assert engine.cfg.shadow is False
    outs = []
    for ev in account_events(400):
        ev["output_tokens"] = 6000  # a harvester's long reasoning traces: enough for an action
        outs += engine.process(ev)  # type: ignore[arg-type]
    actions = [o.value for o in outs if o.topic == ACTIONS]
    assert actions and all(a["mode"] == "enforce" and verify(a, KEY32.encode()) for a in actions)


# ---------------------------------------------------------------------------------------- metrics

MIN = 60_000
LABELS = {
    "a1": ("distillation", "c1"), "a2": ("distillation", "c1"),
    "b1": ("distillation", "c2"), "b2": ("distillation", "c2"),
    "n1": ("benign", None), "n2": ("benign", None), "n3": ("benign", None),
}
TIERS = {"a1": "pro", "a2": "pro", "n1": "pro", "b1": "free", "b2": "free", "n2": "free", "n3": "enterprise"}


def alert(ts: int, severity: str, account: str | None, related: list[str], score: float) -> dict[str, Any]:
    return {"ts": ts, "severity": severity, "account_id": account, "related_accounts": related, "score": score}


def action(ts: int, account: str, name: str) -> dict[str, Any]:
    return {"ts": ts, "account_id": account, "action": name}


def hand_made_evaluation() -> Evaluation:
    """Eleven events; outputs after events 5, 8 and 11 (see the comments)."""
    ev = Evaluation(LABELS)
    order = ["a1", "n1", "a2", "b1", "a1", "n2", "b2", "a2", "n3", "a1", "b1"]
    for i, acc in enumerate(order, start=1):
        ev.observe_event({"account_id": acc, "ts": BASE_TS + (i - 1) * MIN, "account_tier": TIERS[acc]})
        if i == 5:
            ev.observe_output(ALERTS, alert(BASE_TS + 4 * MIN, "medium", "a1", [], 0.4))  # medium: no flag
            ev.observe_output(ACTIONS, action(BASE_TS + 4 * MIN, "n1", "flag_for_review"))  # review: no flag
            ev.observe_output(ALERTS, alert(BASE_TS + 4 * MIN, "medium", "b1", [], 0.45))
        if i == 8:
            # the c1 campaign alert: names a1 and a2 after 4 of c1's 5 events, 7 minutes in
            ev.observe_output(ALERTS, alert(BASE_TS + 7 * MIN, "high", None, ["a1", "a2"], 0.7))
            ev.observe_output(ACTIONS, action(BASE_TS + 7 * MIN, "n2", "throttle"))  # a benign false positive
        if i == 11:
            ev.observe_output(ALERTS, alert(BASE_TS + 10 * MIN, "critical", "zz", [], 0.9))  # unlabelled
            ev.observe_output(ALERTS, alert(BASE_TS + 10 * MIN, "critical", "a1", [], 0.95))  # already flagged
    return ev


def test_evaluation_on_a_hand_made_case() -> None:
    m = hand_made_evaluation().compute()
    assert (m["events"], m["accounts"], m["distillation_accounts"], m["benign_accounts"]) == (11, 7, 4, 3)
    assert m["unlabelled_accounts"] == 0
    assert (m["campaigns"], m["campaigns_found"], m["campaign_recall"]) == (2, 1, 0.5)
    assert m["account_recall"] == 0.5  # a1, a2 of four
    assert m["benign_false_positives"] == 1 and m["benign_fpr"] == pytest.approx(1 / 3)  # n2
    assert m["flagged_accounts"] == 4  # a1, a2, n2 and the unlabelled zz
    assert m["precision"] == 0.5
    assert m["per_campaign"]["c1"] == {"accounts": 2, "accounts_flagged": 2, "events": 5, "found": True,
                                       "delay_event_share": 0.8, "delay_minutes": 7.0, "campaign_ids": 0}
    assert m["per_campaign"]["c2"] == {"accounts": 2, "accounts_flagged": 0, "events": 3, "found": False,
                                       "delay_event_share": 1.0, "delay_minutes": None, "campaign_ids": 0}
    assert m["median_delay_event_share"] == 0.8 and m["median_delay_minutes"] == 7.0


def test_evaluation_per_tier() -> None:
    per_tier = hand_made_evaluation().compute()["per_tier"]
    assert per_tier == {
        "enterprise": {"distillation_accounts": 0, "benign_accounts": 1, "account_recall": None, "benign_fpr": 0.0},
        "free": {"distillation_accounts": 2, "benign_accounts": 1, "account_recall": 0.0, "benign_fpr": 1.0},
        "pro": {"distillation_accounts": 2, "benign_accounts": 1, "account_recall": 1.0, "benign_fpr": 0.0},
    }


def test_medium_alerts_and_review_actions_do_not_flag_but_other_actions_do() -> None:
    ev = hand_made_evaluation()
    assert "b1" not in ev.first_flag and "n1" not in ev.first_flag
    assert ev.first_flag["n2"] == (8, BASE_TS + 7 * MIN, 0)
    assert ev.first_flag["a1"] == (8, BASE_TS + 7 * MIN, 4)  # the first flag is kept
    assert ev.max_score["a1"] == 0.95 and ev.max_score["b1"] == 0.45  # scores count whatever the severity


def test_evaluation_threshold_curve() -> None:
    m = hand_made_evaluation().compute()
    curve = {p["threshold"]: p for p in m["threshold_curve"]}
    # at 0.45, b1 (0.45), a1 (0.95), a2 (0.7) and zz (0.9, unlabelled) are hit: precision among labelled
    assert curve[0.45] == {"threshold": 0.45, "precision": 1.0, "recall": 0.75, "benign_fpr": 0.0}
    assert curve[1.0] == {"threshold": 1.0, "precision": None, "recall": 0.0, "benign_fpr": 0.0}


def test_every_accounts_harvest_score_reaches_the_evaluation_not_only_alerting_ones() -> None:
    """The report's score plots sweep every account's own score (issue 21: with alert scores only, every
    benign account sat at 0 and no margin showed)."""
    from pipeline.offline.backtest import replay
    from pipeline.simulate import generate

    sim = generate("tiny", 1)
    labels = {r["account_id"]: (r["label"], r["campaign_id"]) for r in sim.labels}
    ev = Evaluation(labels)
    replay(sim.events, Engine(DetectionConfig()), evaluation=ev)
    benign_scored = {a for a in ev.harvest if labels.get(a, ("benign", None))[0] == "benign"}
    assert benign_scored - set(ev.max_score), "benign accounts that never alerted have a score too"
    assert all(0.0 <= s <= 1.0 for s in ev.harvest.values())


def harvest_events(tier: str, hours: int = 30, every_s: int = 15) -> list[dict[str, Any]]:
    """One account harvesting reasoning round the clock: one templated prompt every ``every_s`` seconds,
    long outputs, one model."""
    return [event(i, event_id=f"h-{tier}-{i}", account_id=f"harvester-{tier}", ts=BASE_TS + i * every_s * 1000,
                  account_tier=tier, reasoning_requested=True, capability="reasoning", output_tokens=6000,
                  prompt_simhash=f"{0x0123456789abcdef ^ (1 << (i % 3)):016x}")
            for i in range(hours * 3600 // every_s)]


@pytest.mark.parametrize("tier", ["enterprise", "education", "research"])
def test_a_vetted_tiers_own_harvest_profile_counts_one_level_lower_and_says_so(tier: str) -> None:
    """The same single-account harvest: critical and suspended in the pro tier; in a vetted tier a review
    at the high level and a verification at the critical level, never a suspension, each alert saying why."""
    def run(t: str, cfg: DetectionConfig) -> tuple[set[str], set[str], list[dict[str, Any]]]:
        outs = list(Engine(cfg).replay(harvest_events(t)))
        alerts = [o.value for o in outs if o.topic == ALERTS]
        return ({a["severity"] for a in alerts}, {o.value["action"] for o in outs if o.topic == ACTIONS}, alerts)

    sev, acts, _ = run("pro", DetectionConfig())
    assert "critical" in sev and "suspend" in acts
    sev, acts, alerts = run(tier, DetectionConfig())
    assert "critical" not in sev and "high" in sev and "suspend" not in acts and "require_verification" in acts
    for a in alerts:
        vetted = [r for r in a["reasons"] if r["code"] == "vetted_tier"]
        assert bool(vetted) == (a["score"] >= DetectionConfig().account_high)
        assert all(r["contribution"] == 0.0 for r in vetted)
    sev, acts, _ = run(tier, DetectionConfig(vetted_tiers_lenient=False))  # the ablation: as in the pro tier
    assert "critical" in sev and "suspend" in acts
