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

import heapq
import math
from bisect import bisect_left, insort
from collections.abc import Sequence
from operator import itemgetter
from typing import Any

import msgpack

from pipeline.contract.models import Reason
from pipeline.detection.config import HOUR_MS, DetectionConfig
from pipeline.detection.messages import CRITICAL, HIGH, Finding, GroupSignal, MemberSummary
from pipeline.detection.packing import field_of

QUIET_MS = 6 * HOUR_MS
TEMPLATE_MATCH_BITS = 14
"""Two SimHashes this close are one template family; unrelated prompts differ in ~32 bits (P(≤14) ≈ 1e-6)."""
INSTITUTIONAL_TIERS = frozenset({"enterprise", "education", "research"})
"""Tiers whose accounts are vetted institutions: sharing a card or a template among them is expected."""
Member = Sequence[Any]
"""A member's record (see ``LinkGroup``): a tuple, replaced whole on change, so the garbage collector
stops tracking it (a list after ``from_bytes`` until the member reports again; both encode alike)."""

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


class Running:
    """Running aggregates of a link group, so an update and a judgement need no pass over its members.

    Over the active members (enough events): their number ``k``; ``Σ weight`` and the weighted sums of
    elicitation, templating and regularity, in units of 1e-4 (summaries carry four decimals), and
    ``Σ n``, ``Σ n²``: exact integers whatever the order of updates, so ``evaluate`` gives the same score
    however the group got to its members. ``hours`` counts, per absolute hour, the active members active
    in it (their 24-hour bitmaps laid out in absolute hours), so the group's clock is 24 look-ups;
    ``last_ts`` and ``first_ts`` are the members' report and first-event times in order (quiet members
    and the group's age by bisection); ``orgs`` and ``institutional`` count organisations and vetted
    tiers. Then ``candidates``, the members ``judge`` could still name, ``flagged``, how many it has
    named, and ``by_age``, a heap of ``(ts, account)`` per report (stale entries are skipped when met),
    so the member that gives way in a full group is found without a pass over all of them."""

    __slots__ = ("k", "wsum", "w_elicit", "w_templ", "w_regular", "n_sum", "n_sq", "hours", "top_hour", "last_ts",
                 "first_ts", "orgs", "institutional", "candidates", "flagged", "by_age", "core")

    def __init__(self, members: dict[str, Member]) -> None:
        self.k = self.wsum = self.w_elicit = self.w_templ = self.w_regular = self.flagged = 0
        self.n_sum = self.n_sq = self.institutional = 0
        self.hours: dict[int, int] = {}
        self.top_hour = 0  # no member was ever counted active in a later hour
        self.last_ts: list[int] = []
        self.first_ts: list[int] = []
        self.orgs: dict[str | None, int] = {}
        self.candidates: set[str] = set()
        # built when the group first fills up (most never do), then kept up to date by ``touch``
        self.by_age: list[tuple[int, str]] | None = None
        self.core = Core()

    def _reindex(self, members: dict[str, Member]) -> list[tuple[int, str]]:
        heap = self.by_age = [(m[0], acc) for acc, m in members.items()]
        heapq.heapify(heap)
        return heap

    def touch(self, ts: int, acc: str, members: dict[str, Member]) -> None:
        """Note a member's latest report."""
        heap = self.by_age
        if heap is not None:
            heapq.heappush(heap, (ts, acc))
            if len(heap) > 4 * len(members) + 64:  # mostly stale: start again from the members
                self._reindex(members)

    def oldest(self, members: dict[str, Member]) -> str:
        """The member with the oldest latest report, ties to the least account id."""
        heap = self.by_age
        if heap is None:
            heap = self._reindex(members)
        while True:
            ts, acc = heap[0]
            m = members.get(acc)
            if m is not None and m[0] == ts:
                return acc
            heapq.heappop(heap)

    def count(self, acc: str, m: Member, sign: int, cfg: DetectionConfig) -> None:
        """Add (``sign`` 1) or take away (-1) one member's share."""
        if m[9]:
            self.flagged += sign
        if m[1] < cfg.link_member_min_events:
            return
        if not m[9] and m[3] >= 0.5:
            if sign > 0:
                self.candidates.add(acc)
            else:
                self.candidates.discard(acc)
        self.core.count(m, sign)
        self._active(m, sign)
        self._hours(_absolute_hours(m[5], m[6]), m[6] - 23, sign)

    def _active(self, m: Member, sign: int) -> None:
        """An active member's share of everything but ``hours``."""
        c = m[1]
        w = sign * (c if c < 200 else 200)
        self.k += sign
        self.wsum += w
        self.w_elicit += w * round(m[3] * 1e4)
        self.w_templ += w * round(m[4] * 1e4)
        self.w_regular += w * round(m[11] * 1e4)
        self.n_sum += sign * c
        self.n_sq += sign * c * c
        if sign > 0:
            insort(self.last_ts, m[0])
            insort(self.first_ts, m[7])
        else:
            _remove(self.last_ts, m[0])
            _remove(self.first_ts, m[7])
        _bump(self.orgs, m[8], sign)
        if m[10] in INSTITUTIONAL_TIERS:
            self.institutional += sign

    def _hours(self, bits: int, base: int, sign: int) -> None:
        """Count (or uncount) the absolute hours ``base + i`` for each set bit ``i``."""
        hours = self.hours
        if sign > 0 and bits and base + bits.bit_length() - 1 > self.top_hour:
            self.top_hour = base + bits.bit_length() - 1
        while bits:
            low = bits & -bits
            h = base + low.bit_length() - 1
            left = hours.get(h, 0) + sign
            if left:
                hours[h] = left
            else:
                del hours[h]
            bits ^= low

    def replace(self, acc: str, old: Member, new: Member, cfg: DetectionConfig) -> None:
        """A member's new report in place of its old one: the difference only (a report usually moves
        the member's time and counts, and changes its hours by one bit or none)."""
        min_events = cfg.link_member_min_events
        if old[1] < min_events or new[1] < min_events:
            self.count(acc, old, -1, cfg)
            self.count(acc, new, 1, cfg)
            return
        if not new[9]:  # flagged stays flagged; the candidate test depends on elicitation
            if new[3] >= 0.5:
                self.candidates.add(acc)
            else:
                self.candidates.discard(acc)
        core = self.core
        core.count(old, -1)
        core.count(new, 1)
        # what ``_active(old, -1)`` then ``_active(new, 1)`` would do, for the fields that changed
        c_old, c_new = old[1], new[1]
        w_old = c_old if c_old < 200 else 200
        w_new = c_new if c_new < 200 else 200
        self.wsum += w_new - w_old
        self.w_elicit += w_new * round(new[3] * 1e4) - w_old * round(old[3] * 1e4)
        self.w_templ += w_new * round(new[4] * 1e4) - w_old * round(old[4] * 1e4)
        self.w_regular += w_new * round(new[11] * 1e4) - w_old * round(old[11] * 1e4)
        self.n_sum += c_new - c_old
        self.n_sq += c_new * c_new - c_old * c_old
        if old[0] != new[0]:
            _remove(self.last_ts, old[0])
            insort(self.last_ts, new[0])
        if old[7] != new[7]:
            _remove(self.first_ts, old[7])
            insort(self.first_ts, new[7])
        if old[8] != new[8]:
            orgs = self.orgs
            left = orgs[old[8]] - 1
            if left:
                orgs[old[8]] = left
            else:
                del orgs[old[8]]
            orgs[new[8]] = orgs.get(new[8], 0) + 1
        self.institutional += (new[10] in INSTITUTIONAL_TIERS) - (old[10] in INSTITUTIONAL_TIERS)
        if old[5] != new[5] or old[6] != new[6]:
            # both bitmaps as absolute hours from the earlier window's start; count only what changed
            shift = new[6] - old[6]
            a, b = _absolute_hours(old[5], old[6]), _absolute_hours(new[5], new[6])
            if shift >= 0:
                base, b = old[6], b << shift
            else:
                base, a = new[6], a << -shift
            self._hours(a & ~b, base - 23, -1)
            self._hours(b & ~a, base - 23, 1)

    def flag(self, acc: str) -> None:
        """``judge`` named an active member: no longer a candidate, one more flagged."""
        self.candidates.discard(acc)
        self.flagged += 1

    def clock_hours(self, hour_now: int) -> int:
        """Hours of the day in which some active member was active in the 24 hours to ``hour_now``: what
        OR-ing the members' bitmaps rolled to ``hour_now`` counts. A bitmap current to a later hour than
        ``hour_now`` (a member's late event) is not rolled, so its hours after ``hour_now`` count too, by
        hour of day."""
        hours = self.hours
        mask = 0
        for h in range(hour_now - 23, min(self.top_hour, hour_now + 23) + 1):
            if h in hours:
                mask |= 1 << (h % 24)
        return mask.bit_count()

    def means(self, template_bucket: bool) -> tuple[float, float, float]:
        """Weighted mean elicitation, templating (1 in a template bucket) and regularity."""
        unit = 1e4 * self.wsum
        return (self.w_elicit / unit, 1.0 if template_bucket else self.w_templ / unit, self.w_regular / unit)


CORE_ELICITATION = 0.5
"""A member is in a group's eliciting core when at least this share of its traffic elicits reasoning or
agentic transcripts: the core is what a campaign would be, the rest are bystanders on the same key."""
_SHARE, _LOG = 10_000, 10_000
CORE_FEATURES = ("elicitation", "long_outputs", "round_the_clock", "regularity", "log_volume")
SPREAD_SCALES = (0.25, 0.25, 0.25, 0.25, 0.5)
"""Spread (standard deviation) at which members no longer count as alike, per feature: a quarter for a
share (independent users spread over the whole range have about 0.29), half a decade of daily volume."""


def _core_vector(m: Member) -> tuple[int, int, int, int, int]:
    """An eliciting member's features as integers (shares in 1e-4, log10 of daily volume in 1e-4)."""
    ed = m[2]
    return (round(m[3] * _SHARE), round(m[13] * _SHARE), round(m[14] * _SHARE), round(m[11] * _SHARE),
            round(math.log10(ed if ed > 1.0 else 1.0) * _LOG))


class Core:
    """Running aggregates of a group's eliciting core (active members with elicitation ≥ 0.5): their
    number, the sums and sums of squares of ``CORE_FEATURES`` as exact integers (so the means and spreads
    are the same whatever the order of updates), cards (payment fingerprint → members), how many
    members share a card with another and how many cards are so shared, organisations and vetted tiers."""

    __slots__ = ("k", "sums", "squares", "cards", "shared", "shared_cards", "orgs", "institutional")

    def __init__(self) -> None:
        self.k = self.shared = self.shared_cards = self.institutional = 0
        self.sums = [0] * len(CORE_FEATURES)
        self.squares = [0] * len(CORE_FEATURES)
        self.cards: dict[str, int] = {}
        self.orgs: dict[str, int] = {}

    def count(self, m: Member, sign: int) -> None:
        """Add (``sign`` 1) or take away (-1) an active member, if it is in the core."""
        if m[3] < CORE_ELICITATION:
            return
        self.k += sign
        sums, squares = self.sums, self.squares
        for i, x in enumerate(_core_vector(m)):
            sums[i] += sign * x
            squares[i] += sign * x * x
        card = m[12]
        if card is not None:
            after = _bump(self.cards, card, sign)
            before = after - sign
            # members that share their card with another: a card held by one counts none, by c ≥ 2 all c
            self.shared += (after if after >= 2 else 0) - (before if before >= 2 else 0)
            self.shared_cards += (after >= 2) - (before >= 2)
        if m[8] is not None:
            _bump(self.orgs, m[8], sign)
        if m[10] in INSTITUTIONAL_TIERS:
            self.institutional += sign

    def means_and_spreads(self) -> tuple[list[float], list[float]]:
        k = self.k
        means = [x / k / _SHARE for x in self.sums]
        spreads = [math.sqrt(max(q * k - x * x, 0)) / k / _SHARE for x, q in zip(self.sums, self.squares, strict=True)]
        return means, spreads

    def one_customer(self) -> bool:
        """Whether the core is one customer: one card for all of it, or 80 % in one organisation or in
        vetted tiers (a company's or a university's accounts)."""
        k = self.k
        if len(self.cards) == 1 and next(iter(self.cards.values())) == k:
            return True
        return (bool(self.orgs) and max(self.orgs.values()) >= 0.8 * k) or self.institutional >= 0.8 * k


def member_similarity(m: Member, means: list[float]) -> float:
    """How alike (0..1) a member is to the core's mean profile, over every core feature: 1 less the mean
    distance, each in units of twice its spread scale. A framed account, one that shares a key with a
    campaign but not its way of working (human hours, human pace, human volume), is far on several."""
    x = _core_vector(m)
    total = 0.0
    for xi, mu, scale in zip(x, means, SPREAD_SCALES, strict=True):
        d = abs(xi / _SHARE - mu) / (2.0 * scale)
        total += d if d < 1.0 else 1.0
    return 1.0 - total / len(x)


def _absolute_hours(mask: int, mask_hour: int) -> int:
    """A 24-hour bitmap (bit = hour of day, current to absolute hour ``mask_hour``) as bits ``i`` for the
    absolute hours ``mask_hour - 23 + i``: rotated so that the oldest hour of the window is bit 0."""
    s = (mask_hour + 1) % 24
    return ((mask >> s) | (mask << (24 - s))) & 0xFFFFFF if s else mask


def _bump(counts: dict[Any, int], key: Any, sign: int) -> int:
    """Add ``sign`` to ``counts[key]``, dropping the key at zero; the new count."""
    left = counts.get(key, 0) + sign
    if left:
        counts[key] = left
    else:
        del counts[key]
    return left


def _remove(values: list[int], v: int) -> None:
    del values[bisect_left(values, v)]


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
    coordination = max(shared_cards, alike * machine)
    r = g.running(cfg)
    templ = r.w_templ / (1e4 * r.wsum) if r.wsum else 0.0
    harvest = elicit * (0.5 + 0.5 * max(long_share, templ))
    breadth = _clip((k - 2.0) / 13.0)
    score = harvest * coordination * (0.5 + 0.5 * breadth)
    return score, {"members": float(k), "elicitation": elicit, "templating": templ, "long_outputs": long_share,
                   "round_the_clock": clock, "regularity": regular, "shared_cards": shared_cards,
                   "alike": alike, "machine": machine, "breadth": breadth, "one_customer": float(fleet),
                   "cards": float(len(core.cards))}


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
            "value": round(similarity, 4), "baseline": cfg.member_similarity,
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


def _campaign_reasons(c: dict[str, float], kind_word: str) -> list[Reason]:
    def r(code: str, detail: str, value: float, baseline: float | None = None) -> Reason:
        return {"code": code, "detail": detail, "value": round(value, 4),
                "baseline": None if baseline is None else round(baseline, 4)}

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
