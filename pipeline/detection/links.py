"""Linked accounts: per link key, a bounded group of member summaries judged for campaign traits.

Shared keys (a payment fingerprint, a client fingerprint, a client network, a prompt template's LSH
bucket) put accounts in one group; a key only makes the group. What makes a group a campaign is what
independent people do not show, judged on its eliciting core (``evaluate``): a pool of cards shared
among its accounts, or accounts that work alike and each round the clock, together harvesting reasoning
or agentic transcripts, over enough accounts. One customer's own small fleet (one card, one
organisation, vetted tiers) is no campaign. Only members that behave like the core (and, when shared
cards are the evidence, pay with one of them) are named, so an honest account that shares a fingerprint,
a template or a proxy with a campaign is not swept up. Groups keep at most ``link_member_cap`` members.
The judgement before this one (templating × timing of the whole group) is kept for the ablation
(``coordination_evidence`` off).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from operator import itemgetter
from typing import Any

import msgpack

from pipeline.contract.models import Reason
from pipeline.detection.config import HOUR_MS, DetectionConfig
from pipeline.detection.group_sums import (
    SPREAD_SCALES,
    Member,
    Running,
    member_similarity,
)
from pipeline.detection.messages import CRITICAL, HIGH, Finding, GroupSignal, MemberSummary
from pipeline.detection.packing import field_of

QUIET_MS = 6 * HOUR_MS
TEMPLATE_MATCH_BITS = 14
"""Two SimHashes this close are one template family; unrelated prompts differ in ~32 bits (P(≤14) ≈ 1e-6)."""

KINDS = {"pay": "payment fingerprint", "cli": "client fingerprint", "tpl": "prompt template",
         "net": "client network"}


_EXACT = 1 << 53


def _scaled(x: float, scale: int) -> float | int:
    """``x`` as the integer ``x * scale`` when that integer divided by ``scale`` gives back ``x`` exactly
    (a figure rounded to that many decimals), else ``x`` itself."""
    try:
        k = round(x * scale)
    except (ValueError, OverflowError):  # nan, inf
        return x
    return k if k / scale == x and -_EXACT < k < _EXACT else x


def _unscaled(v: float | int, scale: int) -> float:
    return v / scale if type(v) is int else v


def _clip(x: float) -> float:
    return 0.0 if x < 0.0 else 1.0 if x > 1.0 else x


class LinkGroup:
    """State of one link key. ``members``: account → (ts, n, events_day, elicitation, templating, mask,
    mask_hour, first_ts, org, flagged, tier, regularity, payment, long_share, clock) (see ``Member``)."""

    __slots__ = ("key", "members", "n_seen", "updates", "now", "detected_ts", "alerted_n", "alerted_sev", "ref",
                 "applied_offset", "_running", "_packed")

    def __init__(self, key: str) -> None:
        self.key = key
        self.members: dict[str, Member] = {}
        self.n_seen = 0
        self.updates = 0
        self.now = 0
        self.detected_ts: int | None = None
        self.alerted_n = 0
        self.alerted_sev = 0
        self.ref: int | None = None  # template buckets: the first template, candidates are checked against it
        self.applied_offset = -1  # in the worker: the last link-updates offset applied (redeliveries skip)
        self._running: Running | None = None  # derived, never serialised: see ``running``
        self._packed: dict[str, tuple[Member, tuple[Any, ...]]] = {}  # derived: see ``to_bytes``

    def to_bytes(self) -> bytes:
        """Version 2: a member's rounded figures (events_day to 3 decimals, shares and regularity to 4, as
        summaries carry them) are written as scaled integers, 3–5 bytes instead of 9, and read back as the
        same doubles; a figure that is not so rounded stays a double.

        A group is written after every batch that touched it, mostly with a few of its (up to
        ``link_member_cap``) members changed: each member's written form is kept next to the record it was
        made from and made again only when the record was replaced."""
        packed = self._packed
        if len(packed) > 2 * len(self.members) + 64:  # mostly members that left: start again
            packed = self._packed = {}
        members = {}
        for acc, m in self.members.items():
            hit = packed.get(acc)
            if hit is None or hit[0] is not m:
                hit = packed[acc] = (m, (m[0], m[1], _scaled(m[2], 1000), _scaled(m[3], 10_000),
                                         _scaled(m[4], 10_000), *m[5:11], _scaled(m[11], 10_000), m[12],
                                         _scaled(m[13], 10_000), _scaled(m[14], 10_000)))
            members[acc] = hit[1]
        return msgpack.packb([3, self.key, members, self.n_seen, self.updates, self.now,
                              self.detected_ts, self.alerted_n, self.alerted_sev, self.ref, self.applied_offset])

    @staticmethod
    def now_of(raw: bytes) -> int:
        """``from_bytes(raw).now`` without decoding the members (the state sweeper reads only this)."""
        return int(field_of(raw, 5, (1, 2, 3), "link group"))

    @classmethod
    def from_bytes(cls, raw: bytes) -> LinkGroup:
        v = msgpack.unpackb(raw, strict_map_key=True)
        if v[0] not in (1, 2, 3):
            raise ValueError(f"link group version {v[0]} is not 1, 2 or 3")
        g = cls(v[1])
        (version, _, members, g.n_seen, g.updates, g.now, g.detected_ts, g.alerted_n, g.alerted_sev, g.ref,
         g.applied_offset) = v
        if version == 3:  # each member's written form is at hand: ``to_bytes`` need not make it again
            packed = g._packed
            records = {}
            for acc, m in members.items():
                rec = records[acc] = (m[0], m[1], _unscaled(m[2], 1000), _unscaled(m[3], 10_000),
                                      _unscaled(m[4], 10_000), *m[5:11], _unscaled(m[11], 10_000), m[12],
                                      _unscaled(m[13], 10_000), _unscaled(m[14], 10_000))
                packed[acc] = (rec, m)
            members = records
        else:  # versions 1 and 2 knew no payment, long-output share or clock: none, and zero
            members = {acc: (m[0], m[1], _unscaled(m[2], 1000), _unscaled(m[3], 10_000), _unscaled(m[4], 10_000),
                             *m[5:11], _unscaled(m[11], 10_000), None, 0.0, 0.0) for acc, m in members.items()}
        g.members = members
        return g

    def add(self, s: MemberSummary, cfg: DetectionConfig, template: int | None = None) -> bool:
        """Take a member's summary; False when a template candidate is not a true near-duplicate."""
        if template is not None:
            if self.ref is None:
                self.ref = template
            elif (self.ref ^ template).bit_count() > TEMPLATE_MATCH_BITS:
                return False
        running = self._running or self.running(cfg)
        members = self.members
        acc = s.account
        old = members.get(acc)
        new = (s.ts, s.n, s.events_day, s.elicitation, s.templating, s.mask, s.mask_hour, s.first_ts, s.org,
               old is not None and old[9], s.tier, s.regularity, s.payment, s.long_share, s.clock)
        if old is None:
            self.n_seen += 1
            if len(members) >= cfg.link_member_cap:  # the oldest report (then the least id) gives way
                oldest = running.oldest(members)
                running.count(oldest, members.pop(oldest), -1, cfg)
            members[acc] = new
            running.count(acc, new, 1, cfg)
        else:
            members[acc] = new
            running.replace(acc, old, new, cfg)
        if running.by_age is not None:
            running.touch(s.ts, acc, members)
        self.updates += 1
        if s.ts > self.now:
            self.now = s.ts
        return True

    def running(self, cfg: DetectionConfig) -> Running:
        """The group's running aggregates: derived from ``members`` on first use (after ``from_bytes``
        too), then kept up to date by ``add`` and ``judge``; never serialised."""
        if self._running is None:
            self._running = Running(self.members)
            for acc, m in self.members.items():
                self._running.count(acc, m, 1, cfg)
        return self._running

    def could_reach(self, threshold: float, cfg: DetectionConfig) -> bool:
        """Whether the campaign score can reach ``threshold``, from the running sums alone, so most groups
        are dismissed without a pass over their members: the score itself (a handful of sums), or in the
        ablation an upper bound (clock, evenness and churn taken at their best)."""
        r = self.running(cfg)
        if cfg.coordination_evidence:
            return evaluate(self, cfg)[0] + _MARGIN >= threshold
        if r.k < cfg.link_min_members or r.wsum == 0:
            return False
        elicit, templ, regular = r.means(self.ref is not None)
        breadth = _clip((r.k - 2.0) / 13.0)
        best = elicit * templ * (0.35 * breadth + 0.25 + 0.15 * regular + 0.1 + 0.15)
        return best + _MARGIN >= threshold

    def could_name(self, cfg: DetectionConfig) -> bool:
        """Whether ``judge`` could name a member now: some candidate is close enough to the group's
        elicitation and templating (the running means, within a rounding margin)."""
        r = self.running(cfg)
        if not r.candidates:
            return False
        if cfg.coordination_evidence:
            means = r.core.means_and_spreads()[0] if r.core.k else None
            return means is not None and any(member_similarity(self.members[acc], means) + _MARGIN
                                             >= cfg.member_similarity for acc in r.candidates)
        elicit, templ, _ = r.means(self.ref is not None)
        need = 2.0 * (1.0 - cfg.member_similarity) + _MARGIN
        members = self.members
        for acc in r.candidates:
            m = members[acc]
            if abs(m[3] - elicit) + abs(m[4] - templ) <= need:
                return True
        return False


_MARGIN = 1e-9
"""Slack of the bounds above: running means and ``evaluate`` differ in the last bits of float rounding."""




def evaluate(g: LinkGroup, cfg: DetectionConfig) -> tuple[float, dict[str, float]]:
    """The group's campaign score (0..1) and its components (from the running aggregates).

    A shared key (card, client, template, network) only makes the group; what makes it a campaign is
    what independent people do not show, judged on its eliciting core:

    - *coordination*: cards shared among the core across two or more cards (one operator's pool of
      payment instruments; independent users pay each with their own), or members alike in what they
      ask, how long the answers, how many hours, what pace and what volume (one script), while working
      like machines (round the clock each); a public template or SDK is used by people who differ in
      all of these;
    - a *harvest*: the core elicits reasoning or agentic transcripts, with long outputs or templated;
    - *breadth*: how many accounts.

    A core that is one customer (one card, one organisation, vetted tiers) is that customer's own fleet:
    its shared card counts for nothing, and under ``customer_fleet_members`` accounts it is no campaign at
    all; a larger fleet is a campaign only when it works alike and round the clock.
    """
    if not cfg.coordination_evidence:
        return _evaluate_shared_key(g, cfg)
    core = g.running(cfg).core
    k = core.k
    if k < cfg.link_min_members:
        return 0.0, {"members": float(k)}
    means, spreads = core.means_and_spreads()
    elicit, long_share, clock, regular, _ = means
    alike = 1.0 - _clip(sum(sd / scale for sd, scale in zip(spreads, SPREAD_SCALES, strict=True))
                        / len(spreads))
    machine = clock  # a steady pace is no evidence: every coding agent's loop keeps one
    fleet = core.one_customer()
    if fleet:
        # one customer's card, organisation or vetted tier is no evidence between its own accounts: a small
        # fleet is its own business; a large one must work alike and round the clock, as accounts with a
        # card each must
        shared_cards = 0.0
        if k < cfg.customer_fleet_members:
            alike = 0.0
    elif g.key.startswith("net:"):
        # a network is where unrelated customers meet (an office building, a coworking space, a campus, a
        # cloud's egress): several companies' teams, each on its company card, behind one prefix are no
        # card pool; a network group condemns only accounts that work alike round the clock
        shared_cards = 0.0
    else:
        # one shared card is one customer's sub-fleet (a company's developers among a tool's users); a pool
        # of shared cards across accounts that share the operator's client or template is an operator's
        shared_cards = core.shared / k if core.shared_cards >= 2 else 0.0
    r = g.running(cfg)
    templ = r.w_templ / (1e4 * r.wsum) if r.wsum else 0.0
    comp = {"members": float(k), "elicitation": elicit, "templating": templ, "long_outputs": long_share,
            "round_the_clock": clock, "regularity": regular, "shared_cards": shared_cards, "alike": alike,
            "machine": machine, "breadth": _clip((k - 2.0) / 13.0), "one_customer": float(fleet),
            "cards": float(len(core.cards))}
    return group_score(comp), comp


def group_score(c: dict[str, float]) -> float:
    """harvest × coordination × breadth, from ``evaluate``'s components: the harvest is elicitation, more
    with long outputs or templates; coordination the pool of shared cards, or alike and like machines."""
    harvest = c["elicitation"] * (0.5 + 0.5 * max(c["long_outputs"], c["templating"]))
    return harvest * max(c["shared_cards"], c["alike"] * c["machine"]) * (0.5 + 0.5 * c["breadth"])


GROUP_NEUTRAL = {"linked_accounts": ("breadth", 0.0), "group_elicitation": ("elicitation", 0.0),
                 "group_templating": ("templating", 0.0), "group_round_the_clock": ("machine", 0.0),
                 "shared_payment": ("shared_cards", 0.0), "members_alike": ("alike", 0.0)}
"""The term of ``group_score`` each campaign reason stands for, and its value as no evidence."""


def _evaluate_shared_key(g: LinkGroup, cfg: DetectionConfig) -> tuple[float, dict[str, float]]:
    """The judgement before ``coordination_evidence``: templating × timing of the whole group (kept for
    the ablation)."""
    if len(g.members) < cfg.link_min_members:
        return 0.0, {"members": float(len(g.members))}
    r = g.running(cfg)
    k = r.k
    if k < cfg.link_min_members:
        return 0.0, {"members": float(k)}
    now = g.now
    elicit, templ, regular = r.means(g.ref is not None)
    born = min(now, r.first_ts[0])
    age_hours = (now - born) / HOUR_MS + 1.0
    clock = _clip(r.clock_hours(now // HOUR_MS) / max(6.0, min(24.0, age_hours)))
    breadth = _clip((k - 2.0) / 13.0)
    # coefficient of variation of the members' event counts, from exact integer sums
    spread = k * r.n_sq - r.n_sum * r.n_sum
    cv = math.sqrt(max(spread, 0)) / r.n_sum if r.n_sum > 0 else 1.0
    even = 1.0 - _clip(cv)
    churn = bisect_left(r.last_ts, now - QUIET_MS) / k  # reported more than QUIET_MS before now
    # one organisation explains the group when it has 80 % of the members (then it is the most common)
    top = max(r.orgs.values())
    explained = (top >= 0.8 * k and r.orgs.get(None, 0) < top) or r.institutional / k >= 0.8
    coordination = 0.35 * breadth + 0.25 * clock + 0.15 * regular + 0.1 * even + 0.15 * churn
    score = elicit * templ * coordination * (0.5 if explained else 1.0)
    return score, {"members": float(k), "elicitation": elicit, "templating": templ, "round_the_clock": clock,
                   "regularity": regular,
                   "breadth": breadth, "evenness": even, "churn": churn, "org_explained": float(explained)}


def judge(g: LinkGroup, cfg: DetectionConfig) -> GroupSignal | None:
    """The group's signal to the campaign stage (``campaigns``) when it is judged a campaign and names
    members not named before, or its severity rose, or its named members doubled; else None."""
    if g.updates % max(1, len(g.members) // 32) != 0:
        return None  # large groups are re-judged every few updates: bounded work per update
    if not g.could_reach(cfg.campaign_high, cfg):
        return None  # not a campaign whatever its members' timing: no need to look at each
    running = g.running(cfg)
    if (g.detected_ts is not None and not g.could_name(cfg)
            and (not running.flagged or g.alerted_sev >= CRITICAL or not g.could_reach(cfg.campaign_critical, cfg))):
        # nobody left to name, and the severity cannot rise: flagged members only grow by naming, and the
        # judgement that named the last ones already compared their number with the last signal's
        return None
    score, comp = evaluate(g, cfg)
    sev = CRITICAL if score >= cfg.campaign_critical else HIGH if score >= cfg.campaign_high else 0
    if not sev:
        return None
    if g.detected_ts is None:
        g.detected_ts = g.now
    kind_word = KINDS.get(g.key.split(":", 1)[0], "link")
    reasons = _campaign_reasons(comp, kind_word)
    findings: list[Finding] = []
    members = g.members
    means = running.core.means_and_spreads()[0] if cfg.coordination_evidence else []
    named = []
    for acc in running.candidates:  # unflagged active members eliciting at least half the time
        m = members[acc]
        similarity = _similarity(g, m, comp, means, cfg)
        if similarity >= cfg.member_similarity:
            named.append((acc, m, similarity))
    for acc, m, similarity in sorted(named, key=itemgetter(0)):
        members[acc] = m = (*m[:9], True, *m[10:])
        running.flag(acc)
        member_reason: Reason = {
            "code": "campaign_member",
            "detail": f"shares a {kind_word} with {int(comp['members']) - 1} other accounts that together "
                      f"harvest model outputs; behaves like the group's core ({100 * similarity:.0f}% alike)",
            "value": round(similarity, 4), "baseline": cfg.member_similarity, "contribution": None,
        }
        findings.append(Finding(acc, g.now, "coordinated_campaign", sev, round(score, 4),
                                (member_reason, *reasons), "", (), m[7], m[1], m[8]))
    n_flagged = running.flagged
    if not findings and not (n_flagged and (sev > g.alerted_sev or n_flagged >= 2 * max(g.alerted_n, 1))):
        return None
    g.alerted_sev = max(g.alerted_sev, sev)
    g.alerted_n = n_flagged
    window_start = min(m[7] for m in members.values() if m[9]) if n_flagged else g.now
    return GroupSignal(g.key, g.now, sev, round(score, 4), tuple(reasons), int(comp["members"]), window_start,
                       tuple(findings))


def _similarity(g: LinkGroup, m: Member, comp: dict[str, float], means: list[float],
                cfg: DetectionConfig) -> float:
    """How alike a member is to the core's mean profile ``means`` (``member_similarity``), or, in the
    ablation, to the group's elicitation and templating only. When what condemns the group is its shared
    cards, a member whose own card is shared with no other member of the core is not one of them, however
    alike (0): an honest developer behind a proxy that a campaign also uses behaves much like its agents."""
    if not cfg.coordination_evidence:
        return 1.0 - (abs(m[3] - comp["elicitation"]) + abs(m[4] - comp["templating"])) / 2.0
    if comp["shared_cards"] > comp["alike"] * comp["machine"] and g.running(cfg).core.cards.get(m[12], 0) < 2:
        return 0.0
    return member_similarity(m, means)


def _contribution(c: dict[str, float], code: str) -> float | None:
    """How much of the group's score the reason ``code`` accounts for: the score less what it would be with
    that term at its neutral value; None for a reason that is no term of it (and in the ablation)."""
    term = GROUP_NEUTRAL.get(code)
    if term is None or "alike" not in c:
        return None
    return round(group_score(c) - group_score({**c, term[0]: term[1]}), 4)


def _campaign_reasons(c: dict[str, float], kind_word: str) -> list[Reason]:
    def r(code: str, detail: str, value: float, baseline: float | None = None) -> Reason:
        return {"code": code, "detail": detail, "value": round(value, 4),
                "baseline": None if baseline is None else round(baseline, 4), "contribution": _contribution(c, code)}

    out = [r("linked_accounts", f"{c['members']:.0f} active accounts share one {kind_word}", c["members"])]
    out.append(r("group_elicitation", f"{100 * c['elicitation']:.0f}% of the group's traffic elicits reasoning "
                 "or agentic transcripts", c["elicitation"]))
    out.append(r("group_templating", f"{100 * c['templating']:.0f}% of the group's prompts are templated",
                 c["templating"]))
    if c["round_the_clock"] >= 0.5:
        detail = "the accounts each work round the clock" if "alike" in c else "the group's accounts together cover the clock"
        out.append(r("group_round_the_clock", detail, c["round_the_clock"]))
    if c["regularity"] >= 0.5:
        out.append(r("scripted_timing", "members send at a machine's steady pace", c["regularity"]))
    if c.get("churn", 0.0) >= 0.3:
        out.append(r("member_churn", f"{100 * c['churn']:.0f}% of members went quiet while others carry on",
                     c["churn"]))
    if c.get("org_explained"):
        out.append(r("one_organisation", "the members belong to one organisation or institution (counts half)",
                     1.0))
    if c.get("shared_cards", 0.0) >= 0.25:
        out.append(r("shared_payment", f"the accounts pay with {c['cards']:.0f} cards that several of them share",
                     c["shared_cards"]))
    if c.get("alike", 0.0) * c.get("machine", 0.0) >= 0.25:
        out.append(r("members_alike", "the accounts work alike (what they ask, output length, hours, pace and "
                     "volume) and like machines", c["alike"] * c["machine"]))
    return out
