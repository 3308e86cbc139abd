"""The running sums of a link group: what an update and a judgement read instead of a pass over members.

``Running`` holds the group's aggregates over its active members and ``Core`` those of its eliciting core
(the members that mostly elicit reasoning or agentic transcripts), both as exact integers, so the score
``links.evaluate`` derives from them is the same whatever the order in which members reported.
``member_similarity`` says how alike one member is to the core. The group itself, its wire form and its
judgement are :mod:`pipeline.detection.links`.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_left, insort
from collections.abc import Sequence
from typing import Any

from pipeline.detection.config import DetectionConfig

INSTITUTIONAL_TIERS = frozenset({"enterprise", "education", "research"})
"""Tiers whose accounts are vetted institutions: sharing a card or a template among them is expected."""
Member = Sequence[Any]
"""A member's record (see ``LinkGroup``): a tuple, replaced whole on change, so the garbage collector
stops tracking it (a list after ``from_bytes`` until the member reports again; both encode alike)."""


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
