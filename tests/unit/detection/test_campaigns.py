"""The campaign stage (``pipeline.detection.campaigns``): link groups that name the same accounts are one
campaign, with one id whatever order its groups fired in."""

from __future__ import annotations

import itertools

from pipeline.detection.campaigns import (
    MEMBERS_LISTED,
    Campaign,
    Campaigns,
    Pointer,
    decode_record,
    last_ts_of,
)
from pipeline.detection.config import DAY_MS, HOUR_MS, DetectionConfig
from pipeline.detection.ids import stable_id
from pipeline.detection.messages import (
    CRITICAL,
    HIGH,
    Finding,
    GroupSignal,
    decode_group_signals,
    encode_group_signals,
)
from tests.factories import BASE_TS

CFG = DetectionConfig()
REASON = {"code": "linked_accounts", "detail": "6 active accounts share one card", "value": 6.0, "baseline": None,
          "contribution": 0.1}


def signal(key: str, ts: int, accounts: list[str], severity: int = HIGH) -> GroupSignal:
    named = tuple(Finding(a, ts, "coordinated_campaign", severity, 0.4, (REASON,), "", (), BASE_TS, 100, None)
                  for a in accounts)
    return GroupSignal(key, ts, severity, 0.4, (REASON,), len(accounts), BASE_TS, named)


def run(signals: list[GroupSignal]) -> tuple[Campaigns, list[dict], list[Finding]]:
    stage = Campaigns(CFG, {})
    alerts, findings = [], []
    for s in signals:
        alert, f = stage.on_signal(s)
        findings += f
        if alert is not None:
            alerts.append(alert)
    return stage, alerts, findings


def campaign_of(stage: Campaigns, account: str) -> str:
    c = stage._lookup("a:" + account)
    assert c is not None
    return c.cid


def test_groups_that_name_the_same_accounts_merge_into_the_older_campaign() -> None:
    t = BASE_TS + 10 * HOUR_MS
    card = signal("pay:card-1", t, ["a1", "a2", "a3"])
    client = signal("cli:fp-1", t + 60_000, ["a4", "a5", "a6"])  # no overlap yet: a campaign of its own
    bridge = signal("tpl:0:beef", t + 120_000, ["a3", "a4", "a7"])  # names members of both
    stage, alerts, findings = run([card, client, bridge])
    first = stable_id("camp", "pay:card-1", t)
    assert [a["campaign_id"] for a in alerts] == [first, stable_id("camp", "cli:fp-1", t + 60_000), first]
    merged = alerts[-1]
    assert merged["members"] == 7, "an account named by two groups counts once"
    assert merged["related"] == ["a1", "a2", "a3", "a4", "a5", "a6", "a7"]
    assert {r["code"] for r in merged["reasons"]} >= {"campaign_merged", "campaign_links"}
    assert {campaign_of(stage, f"a{i}") for i in range(1, 8)} == {first}
    assert findings[-1].campaign_id == first and {f.campaign_id for f in findings[-3:]} == {first}


def test_the_final_campaign_id_does_not_depend_on_the_order_groups_fired_in() -> None:
    """In the worker, signals from groups on different partitions arrive in any order."""
    t = BASE_TS + 10 * HOUR_MS
    signals = [signal("pay:card-1", t, ["a1", "a2"]), signal("cli:fp-1", t + 1, ["a2", "a3"]),
               signal("net:10.0.0.0/24", t + 2, ["a3", "a4"]), signal("tpl:1:f00d", t + 3, ["a5", "a1"])]
    finals = set()
    for order in itertools.permutations(signals):
        stage, _, _ = run(list(order))
        finals.add(frozenset((a, campaign_of(stage, a)) for a in ("a1", "a2", "a3", "a4", "a5")))
        root = stage._lookup("a:a1")
        assert root is not None and root.n == 5
    assert finals == {frozenset((f"a{i}", stable_id("camp", "pay:card-1", t)) for i in range(1, 6))}


def test_unrelated_campaigns_stay_apart() -> None:
    t = BASE_TS + 10 * HOUR_MS
    stage, alerts, _ = run([signal("pay:card-1", t, ["a1", "a2"]), signal("pay:card-9", t, ["b1", "b2"])])
    assert len({a["campaign_id"] for a in alerts}) == 2
    assert campaign_of(stage, "a1") != campaign_of(stage, "b1")


def test_a_campaign_alerts_when_found_when_it_rises_or_doubles_and_after_a_quiet_episode() -> None:
    t = BASE_TS + 10 * HOUR_MS
    stage, alerts, _ = run([
        signal("pay:card-1", t, ["a1", "a2"]),
        signal("pay:card-1", t + 1, ["a3"]),  # 3 of 2: not yet double
        signal("cli:fp-1", t + 2, ["a1", "a4"]),  # another group of the campaign: 4, double
        signal("cli:fp-1", t + 3, [], CRITICAL),  # severity rises, nobody new
        signal("cli:fp-1", t + 4, [], CRITICAL),  # nothing new
        signal("cli:fp-1", t + 4 + CFG.episode_ms, [], CRITICAL),  # after an episode of quiet
    ])
    assert [(a["severity"], a["members"]) for a in alerts] == [(HIGH, 2), (HIGH, 4), (CRITICAL, 4), (CRITICAL, 4)]
    assert alerts[-1]["episode_ts"] == t + 4 + CFG.episode_ms != alerts[-2]["episode_ts"]


def test_a_redelivered_signal_changes_nothing() -> None:
    stage = Campaigns(CFG, {})
    s = signal("pay:card-1", BASE_TS + DAY_MS, ["a1", "a2"])
    alert, findings = stage.on_signal(s, offset=7)
    assert alert is not None and len(findings) == 2
    assert stage.on_signal(s, offset=7) == (None, [])


def test_a_huge_campaign_keeps_a_bounded_record() -> None:
    accounts = [f"acct-{i:05d}" for i in range(5 * MEMBERS_LISTED)]
    stage, alerts, _ = run([signal("pay:card-1", BASE_TS + i, accounts[i:i + 500])
                            for i in range(0, len(accounts), 500)])
    root = stage._lookup("a:acct-00000")
    assert root is not None and root.n == len(accounts) and len(root.members) == MEMBERS_LISTED
    assert len(root.to_bytes()) < 40_000
    assert max(len(a["related"]) for a in alerts) == MEMBERS_LISTED


def test_records_round_trip_and_tell_their_time() -> None:
    c = Campaign("camp-1", BASE_TS, BASE_TS + 5, None, 3, HIGH, 0.4, HIGH, 3, BASE_TS, BASE_TS, ["a", "b", "c"],
                 {"pay": 2})
    p = Pointer("camp-1", BASE_TS + 9)
    assert decode_record(c.to_bytes()) == c and decode_record(p.to_bytes()) == p
    assert last_ts_of(c.to_bytes()) == BASE_TS + 5 and last_ts_of(p.to_bytes()) == BASE_TS + 9


def test_group_signals_travel_in_batches_and_decode_unchanged() -> None:
    signals = [signal(f"pay:card-{i}", BASE_TS + i, [f"a{i}", f"b{i}"]) for i in range(50)]
    messages = encode_group_signals(signals, max_bytes=4096)
    assert len(messages) > 1
    assert [s for m in messages for s in decode_group_signals(m)] == signals
