"""Linked accounts (``pipeline.detection.links``): groups of member summaries judged for campaign traits."""

from __future__ import annotations

import copy
from typing import Any

import msgpack
import pytest

from pipeline.detection.campaigns import Campaigns
from pipeline.detection.config import HOUR_MS, DetectionConfig
from pipeline.detection.ids import stable_id
from pipeline.detection.links import TEMPLATE_MATCH_BITS, LinkGroup, evaluate, judge
from pipeline.detection.messages import CRITICAL, HIGH, Finding, MemberSummary
from tests.factories import BASE_TS

CFG = DetectionConfig()
NOW = BASE_TS + 48 * HOUR_MS
ALL_HOURS = (1 << 24) - 1


def member(i: int, **overrides: Any) -> MemberSummary:
    """A harvest-like member: reasoning-heavy, templated, long outputs, round the clock, scripted, paying
    with one of an operator's three cards."""
    v: dict[str, Any] = {
        "account": f"acct-{i:04d}", "ts": NOW, "n": 100, "events_day": 500.0, "elicitation": 0.9,
        "templating": 0.9, "mask": ALL_HOURS, "mask_hour": NOW // HOUR_MS, "first_ts": BASE_TS, "org": None,
        "tier": "pro", "regularity": 0.9, "payment": f"card-{i % 3}", "long_share": 0.8, "clock": 1.0,
    }
    v.update(overrides)
    return MemberSummary(**v)


_STAGES: dict[int, tuple[LinkGroup, Campaigns]] = {}


def feed(g: LinkGroup, summaries: list[MemberSummary], cfg: DetectionConfig = CFG,
         template: int | None = None) -> tuple[list[Finding], list[dict[str, Any]]]:
    """Add each summary and judge after each, as the engine does, handing each group signal to a campaign
    stage of the group's own: all findings and campaign alerts."""
    stage = _STAGES.setdefault(id(g), (g, Campaigns(cfg, {})))[1]
    findings: list[Finding] = []
    campaigns: list[dict[str, Any]] = []
    for s in summaries:
        if not g.add(s, cfg, template):
            continue
        signal = judge(g, cfg)
        if signal is None:
            continue
        c, f = stage.on_signal(signal)
        findings += f
        if c is not None:
            campaigns.append(c)
    return findings, campaigns


def test_harvest_like_group_becomes_a_campaign_and_names_its_members() -> None:
    g = LinkGroup("pay:pf-1")
    findings, campaigns = feed(g, [member(i) for i in range(CFG.link_min_members)])
    assert sorted(f.account for f in findings) == [f"acct-{i:04d}" for i in range(CFG.link_min_members)]
    assert all(f.kind == "coordinated_campaign" and f.campaign_id == campaigns[0]["campaign_id"] for f in findings)
    assert all(f.severity >= HIGH for f in findings)
    assert findings[0].reasons[0]["code"] == "campaign_member"
    assert {"linked_accounts", "group_elicitation", "group_templating"} <= {r["code"] for r in findings[0].reasons}
    assert len(campaigns) == 1
    assert campaigns[0]["related"] == [f"acct-{i:04d}" for i in range(CFG.link_min_members)]
    assert campaigns[0]["members"] == CFG.link_min_members


def test_members_are_named_once() -> None:
    g = LinkGroup("pay:pf-1")
    first, _ = feed(g, [member(i) for i in range(6)])
    again, _ = feed(g, [member(i, ts=NOW + 60_000) for i in range(6)])
    assert len(first) == 6 and again == []


def test_a_member_whose_profile_differs_is_not_named() -> None:
    """Honest accounts on the same key: one with low elicitation; one that elicits reasoning as a person
    does (human hours, pace and volume, short answers), on one of the shared cards."""
    g = LinkGroup("pay:pf-1")
    honest = [member(100, elicitation=0.1, templating=0.0),
              member(101, elicitation=0.7, templating=0.0, clock=0.25, regularity=0.1, events_day=20.0,
                     long_share=0.1, payment="card-0")]
    findings, campaigns = feed(g, [member(i) for i in range(6)] + honest)
    named = {f.account for f in findings}
    assert named == {f"acct-{i:04d}" for i in range(6)}
    assert "acct-0100" not in campaigns[-1]["related"] and "acct-0101" not in campaigns[-1]["related"]


def test_members_with_too_few_events_are_not_counted_or_named() -> None:
    g = LinkGroup("pay:pf-1")
    findings, campaigns = feed(g, [member(i, n=CFG.link_member_min_events - 1) for i in range(10)])
    assert findings == [] and campaigns == []
    assert evaluate(g, CFG)[0] == 0.0


def test_fewer_than_link_min_members_is_never_a_campaign() -> None:
    g = LinkGroup("pay:pf-1")
    perfect = [member(i, elicitation=1.0, templating=1.0, regularity=1.0)
               for i in range(CFG.link_min_members - 1)]
    findings, campaigns = feed(g, perfect)
    assert findings == [] and campaigns == []
    assert evaluate(g, CFG) == (0.0, {"members": float(CFG.link_min_members - 1)})


def test_a_group_of_benign_members_is_not_a_campaign() -> None:
    g = LinkGroup("pay:pf-1")
    findings, campaigns = feed(g, [member(i, elicitation=0.05, templating=0.1, regularity=0.1, mask=0b111)
                                   for i in range(20)])
    assert findings == [] and campaigns == []


def test_one_customers_small_fleet_is_no_campaign() -> None:
    """One card, one organisation or vetted tiers for the core: a customer's own accounts (CI bots, an
    evaluation team), however alike and busy, unless there are ``customer_fleet_members`` of them."""
    fleets = {
        "one card": lambda i: member(i, payment="card-co"),
        "one organisation": lambda i: member(i, org="org-acme"),
        "vetted tiers": lambda i: member(i, tier=("enterprise", "education", "research")[i % 3]),
    }
    for name, make in fleets.items():
        small, large = LinkGroup("cli:cf-1"), LinkGroup("cli:cf-1")
        for i in range(CFG.customer_fleet_members - 1):
            small.add(make(i), CFG)
        for i in range(CFG.customer_fleet_members):
            large.add(make(i), CFG)
        assert evaluate(small, CFG)[0] == 0.0, name
        assert evaluate(small, CFG)[1]["one_customer"] == 1.0, name
        assert evaluate(large, CFG)[0] >= CFG.campaign_critical, name


def test_a_minority_of_one_organisation_explains_nothing() -> None:
    plain, mixed = LinkGroup("pay:pf-1"), LinkGroup("pay:pf-1")
    for i in range(10):
        plain.add(member(i), CFG)
        mixed.add(member(i, org="org-acme" if i < 7 else None), CFG)  # 70 % < 80 %
    assert evaluate(mixed, CFG)[0] == evaluate(plain, CFG)[0] > 0


def test_a_public_key_is_no_campaign_when_its_users_differ() -> None:
    """A popular tool's users: one client fingerprint and system prompt, every user with their own card,
    their own volume, hours and reasoning habits: no coordination, however much they elicit."""
    import random

    rng = random.Random(5)
    g = LinkGroup("cli:popular-sdk")
    for i in range(200):
        g.add(member(i, payment=f"own-card-{i}", events_day=round(10 ** rng.uniform(0.5, 3), 3),
                     elicitation=round(rng.uniform(0.5, 1.0), 4), long_share=round(rng.random() * 0.3, 4),
                     clock=round(rng.uniform(0.1, 0.6), 4), regularity=round(rng.random(), 4)), CFG)
    score, comp = evaluate(g, CFG)
    assert comp["shared_cards"] == 0.0 and comp["alike"] * comp["machine"] < 0.3
    assert score < CFG.campaign_high


def test_accounts_with_their_own_cards_that_work_alike_round_the_clock_are_a_campaign() -> None:
    """No shared card, no shared template: one script's accounts behind one proxy network still ask the
    same, get the same long answers, at the same volume, round the clock."""
    g = LinkGroup("net:203.0.113.0/24")
    for i in range(30):
        g.add(member(i, payment=f"own-card-{i}", templating=0.0, events_day=300.0 + i), CFG)
    score, comp = evaluate(g, CFG)
    assert comp["shared_cards"] == 0.0 and comp["alike"] > 0.9
    assert score >= CFG.campaign_critical


def test_one_shared_card_is_a_sub_fleet_two_are_a_pool() -> None:
    """Accounts on one client fingerprint that include a company's accounts on one card are no campaign;
    two or more cards each shared by several of them are an operator's pool. Behind one network the same
    cards are several companies' teams in one building: no evidence there."""
    def group(key: str, cards: list[str]) -> LinkGroup:
        g = LinkGroup(key)
        for i, card in enumerate(cards):
            g.add(member(i, payment=card, clock=0.3, events_day=round(10.0 * (i + 1), 3)), CFG)
        return g

    one = ["company"] * 5 + [f"own-{i}" for i in range(10)]
    two = ["pool-a"] * 5 + ["pool-b"] * 5 + [f"own-{i}" for i in range(5)]
    assert evaluate(group("cli:tool", one), CFG)[1]["shared_cards"] == 0.0
    assert evaluate(group("cli:tool", two), CFG)[1]["shared_cards"] == 10 / 15
    assert evaluate(group("net:198.51.100.0/24", two), CFG)[1]["shared_cards"] == 0.0


def test_evaluate_components_for_a_known_group() -> None:
    """Fifteen identical members on three cards: shared cards 1, alike 1, round the clock 1."""
    g = LinkGroup("pay:pf-1")
    for i in range(15):
        g.add(member(i, ts=NOW - 7 * HOUR_MS if i < 3 else NOW), CFG)
    score, c = evaluate(g, CFG)
    assert c["members"] == 15 and c["breadth"] == 1.0 and c["cards"] == 3.0
    assert c["shared_cards"] == 1.0 and c["alike"] == 1.0 and c["machine"] == 1.0
    assert c["elicitation"] == 0.9 and c["long_outputs"] == 0.8 and c["templating"] == 0.9
    expected = 0.9 * (0.5 + 0.5 * 0.9) * 1.0 * (0.5 + 0.5 * 1.0)
    assert abs(score - expected) < 1e-12


def test_template_bucket_rejects_a_candidate_beyond_the_match_distance() -> None:
    ref = 0x0F0F_0F0F_0F0F_0F0F
    near = ref ^ ((1 << TEMPLATE_MATCH_BITS) - 1)  # exactly TEMPLATE_MATCH_BITS bits away
    far = ref ^ ((1 << (TEMPLATE_MATCH_BITS + 1)) - 1)
    g = LinkGroup("tpl:0:abcd")
    assert g.add(member(0), CFG, ref)
    assert g.ref == ref
    assert g.add(member(1), CFG, near)
    assert not g.add(member(2), CFG, far)
    assert set(g.members) == {"acct-0000", "acct-0001"} and g.updates == 2


def test_template_bucket_takes_its_members_own_templating() -> None:
    """Sharing a template is what puts accounts in the bucket, not evidence of a harvest in itself: the
    group's templating is its members' own."""
    g = LinkGroup("tpl:1:ff")
    for i in range(8):
        g.add(member(i, templating=0.25), CFG, 0xABC)
    assert evaluate(g, CFG)[1]["templating"] == 0.25


def test_member_cap_bounds_memory_and_counts_every_member() -> None:
    cfg = DetectionConfig(link_member_cap=512)
    g = LinkGroup("pay:pf-big")
    for i in range(2000):
        g.add(member(i, ts=NOW + i), cfg)
    assert len(g.members) == 512
    assert g.n_seen == 2000
    assert set(g.members) == {f"acct-{i:04d}" for i in range(2000 - 512, 2000)}  # the oldest gave way


def test_campaign_id_is_deterministic_per_key_and_first_firing() -> None:
    def first_id(key: str) -> str:
        return feed(LinkGroup(key), [member(i) for i in range(6)])[1][0]["campaign_id"]

    assert first_id("pay:pf-1") == first_id("pay:pf-1") == stable_id("camp", "pay:pf-1", NOW)
    assert first_id("pay:pf-1") != first_id("pay:pf-2")
    assert first_id("pay:pf-1").startswith("camp-")


def test_round_trip_gives_an_identical_group_that_judges_identically() -> None:
    a = LinkGroup("tpl:2:beef")
    feed(a, [member(i) for i in range(6)], template=0xBEEF)
    a.applied_offset = 41
    b = LinkGroup.from_bytes(a.to_bytes())
    _STAGES[id(b)] = (b, copy.deepcopy(_STAGES[id(a)][1]))  # the campaign stage as it was
    assert b.to_bytes() == a.to_bytes()
    more = [member(i) for i in range(6, 14)]
    fa, ca = feed(a, more, template=0xBEEF)
    fb, cb = feed(b, more, template=0xBEEF)
    assert fa == fb and ca == cb
    assert b.to_bytes() == a.to_bytes()


def test_campaign_alert_is_re_emitted_only_when_flagged_members_double() -> None:
    cfg = DetectionConfig(campaign_critical=0.99)  # keep the severity at high
    g = LinkGroup("pay:pf-1")
    _, first = feed(g, [member(i) for i in range(5)], cfg)
    assert [len(c["related"]) for c in first] == [5]
    _, again = feed(g, [member(i, ts=NOW + 1) for i in range(5)], cfg)  # the same members report again
    assert again == []
    _, grown = feed(g, [member(i) for i in range(5, 9)], cfg)  # 9 flagged: not yet double
    assert grown == []
    _, doubled = feed(g, [member(9)], cfg)
    assert [len(c["related"]) for c in doubled] == [10]
    assert all(c["severity"] == HIGH for c in first + doubled)


def test_campaign_alert_is_re_emitted_when_severity_rises() -> None:
    g = LinkGroup("pay:pf-1")
    _, first = feed(g, [member(i, elicitation=0.8, templating=0.8) for i in range(5)])
    assert [c["severity"] for c in first] == [HIGH]
    _, rising = feed(g, [member(i, elicitation=1.0, templating=1.0, regularity=1.0) for i in range(5)])
    assert [c["severity"] for c in rising][:1] == [CRITICAL]
    assert len(rising) == 1  # and only once
    _, steady = feed(g, [member(i, ts=NOW + 5, elicitation=1.0, templating=1.0, regularity=1.0)
                         for i in range(5)])
    assert steady == []


def test_running_aggregates_give_what_a_fresh_pass_over_the_members_gives() -> None:
    """``evaluate`` reads running aggregates kept up to date member by member (replaced, evicted,
    named); a group restored from bytes derives them afresh from its members: the two agree exactly."""
    import random

    rng = random.Random(3)
    cfg = DetectionConfig(link_member_cap=30, link_min_members=3)
    g = LinkGroup("pay:pf-mixed")
    counts: dict[str, int] = {}
    now = NOW
    for _ in range(2000):
        acc = f"acct-{rng.randrange(60):04d}"
        counts[acc] = counts.get(acc, 0) + rng.randrange(1, 9)
        now += rng.randrange(0, 2 * HOUR_MS)
        g.add(member(0, account=acc, ts=now - rng.randrange(300_000), n=counts[acc],
                     elicitation=round(rng.random(), 4), templating=round(rng.random(), 4),
                     mask=rng.getrandbits(24), mask_hour=now // HOUR_MS, first_ts=now - rng.randrange(24 * HOUR_MS),
                     org=rng.choice([None, "org-a", "org-b"]), tier=rng.choice(["pro", "enterprise"]),
                     regularity=round(rng.random(), 4)), cfg)
        judge(g, cfg)
        fresh = LinkGroup.from_bytes(g.to_bytes())
        assert evaluate(fresh, cfg) == evaluate(g, cfg)
        a, b = g.running(cfg), fresh.running(cfg)
        assert (a.candidates, a.flagged, a.hours) == (b.candidates, b.flagged, b.hours)


def test_rounded_member_figures_are_stored_as_scaled_integers_and_read_back_exactly() -> None:
    from pipeline.detection.links import _scaled, _unscaled

    for scale in (1000, 10_000):  # every share at 4 decimals, every events_day up to 10,000 at 3
        for k in range(0, 10_000_001 if scale == 1000 else 10_001, 97 if scale == 1000 else 1):
            x = round(k / scale * 1.0000001, 3 if scale == 1000 else 4)  # as a summary rounds its figures
            v = _scaled(x, scale)
            assert type(v) is int and _unscaled(v, scale) == x
    assert _scaled(0.123456, 10_000) == 0.123456  # not rounded: stays a double
    assert _scaled(float("nan"), 1000) != _scaled(float("nan"), 1000)  # passed through, no error
    a = LinkGroup("pay:pf-1")
    feed(a, [member(i) for i in range(6)])
    b = LinkGroup.from_bytes(a.to_bytes())
    assert b.members == a.members
    assert all(type(x) is float for m in b.members.values() for x in (m[2], m[3], m[4], m[11]))
    assert len(a.to_bytes()) < len(msgpack.packb([1, a.key, a.members, a.n_seen, a.updates, a.now, a.detected_ts,
                                                  a.alerted_n, a.alerted_sev, a.ref, a.applied_offset]))


def test_a_group_written_before_scaled_figures_still_reads() -> None:
    a = LinkGroup("pay:pf-1")
    feed(a, [member(i) for i in range(6)])
    v1 = msgpack.packb([1, a.key, a.members, a.n_seen, a.updates, a.now, a.detected_ts, a.alerted_n, a.alerted_sev,
                        a.ref, a.applied_offset])
    b = LinkGroup.from_bytes(v1)
    # version 1 knew no card, long-output share or clock
    assert {k: tuple(m) for k, m in b.members.items()} == {k: (*m[:12], None, 0.0, 0.0) for k, m in a.members.items()}
    assert LinkGroup.from_bytes(b.to_bytes()).members == b.members  # and it is written in today's form
    assert LinkGroup.now_of(v1) == LinkGroup.now_of(a.to_bytes()) == a.now > 0
    with pytest.raises(ValueError, match="version 7"):
        LinkGroup.now_of(msgpack.packb([7, a.key]))


def test_written_form_follows_every_member_change() -> None:
    """``to_bytes`` keeps each member's written form until the member is replaced: after new reports, a
    member leaving a full group and members being named, it writes what encoding every member afresh
    writes."""
    cfg = DetectionConfig(link_member_cap=8)
    g = LinkGroup("tpl:1:ab")
    named, _ = feed(g, [member(i, n=2) for i in range(8)], cfg, template=0xAB)
    assert not named
    g.to_bytes()
    named, _ = feed(g, [member(i, ts=NOW + i) for i in range(3, 12)], cfg, template=0xAB)
    assert named and len(g.members) == 8  # members reported again, named, and some gave way
    cached = g.to_bytes()
    g._packed.clear()
    assert g.to_bytes() == cached
    assert LinkGroup.from_bytes(cached).members == g.members
    restored = LinkGroup.from_bytes(cached)  # its written forms come from the bytes it was read from
    assert restored._packed and restored.to_bytes() == cached
    for group in (g, restored):
        feed(group, [member(i, ts=NOW + 99, n=40) for i in range(10, 14)], cfg, template=0xAB)
    assert restored.to_bytes() == g.to_bytes()
    restored._packed.clear()
    assert restored.to_bytes() == g.to_bytes()
