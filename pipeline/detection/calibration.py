"""Where an account's harvest score stands among its peers: the share of its tier's accounts that reach it.

A harvest score of 0.62 means little on its own; "reached by 0.3 % of the 1,200 pro-tier accounts active
in the last two weeks" is a figure an analyst can weigh. ``ScoreRanks`` keeps, for one tier segment on one
partition, every account once, at the score of its latest window summary, in ``RANK_BINS`` bins, bucketed
by the event-time day of that summary: an account summarised again moves from its old bin to its new one,
and a day older than ``RANK_DAYS`` leaves with its accounts (as idle accounts' state does). The share is
told in account alerts (reason ``population_rank``); it decides nothing: in a segment a campaign's
thousands of accounts have taken over, a harvest profile is no longer rare, and a rule that waited for
rarity would let that campaign through.

Everything is integers in event time, so a backtest and any worker give the same figures. The worker
writes the ranks (the ``score-ranks`` table) before the account states of a checkpoint; an account's move
that was written before a crash is not made twice: a summary at an offset already counted gets the place
and figure it got the first time (kept until the next write).
"""

from __future__ import annotations

from typing import NamedTuple

import msgpack

from pipeline.detection.config import DAY_MS
from pipeline.detection.store import ReplayMemo, dense, sparse

RANK_BINS = 100
"""Score bins over [0, 1]: shares are told to a hundredth of the score."""
RANK_DAYS = 14
"""Accounts whose latest summary is older than this many event-time days are no longer counted."""
STATE_VERSION = 1


def score_bin(score: float) -> int:
    b = int(score * RANK_BINS)
    return 0 if b < 0 else RANK_BINS - 1 if b >= RANK_BINS else b


class Rank(NamedTuple):
    """An account's place: the day and bin it is counted in, the share of the segment's accounts at or
    above its bin (itself included) and how many accounts the segment counts."""

    day: int
    bin: int
    share: float
    accounts: int


class ScoreRanks:
    """One tier segment's accounts on one partition by their latest harvest score (see the module
    docstring)."""

    __slots__ = ("day", "days", "totals", "total", "replays")

    def __init__(self) -> None:
        self.day = 0  # the segment's clock: the latest event-time day it has counted
        self.days: dict[int, list[int]] = {}  # day -> accounts per score bin whose latest summary was that day
        self.totals = [0] * RANK_BINS  # ``days`` summed over the days (derived, not written)
        self.total = 0
        self.replays: ReplayMemo[Rank] = ReplayMemo()

    def move(self, old: tuple[int, int] | None, ts: int, score: float, offset: int | None = None) -> Rank:
        """Count an account at ``score`` as of event time ``ts``, no longer where it was (``old``: the day and
        bin of its previous place, if any); its rank among the segment's accounts after the move."""
        replays = self.replays
        if replays.replayed(offset):  # counted before a crash: the same answer, no second move
            hit = replays.answer(offset)
            if hit is not None:
                return hit
            b = score_bin(score)
            return Rank(old[0] if old else self.day, old[1] if old else b, *self._share(b))
        replays.learn(offset)
        day = max(self.day, ts // DAY_MS)  # a late event does not move the clock back
        totals = self.totals
        if day > self.day:
            self.day = day
            for d in [d for d in self.days if d <= day - RANK_DAYS]:
                for i, c in enumerate(self.days.pop(d)):
                    totals[i] -= c
                    self.total -= c
        if old is not None:
            counts = self.days.get(old[0])
            if counts is not None and counts[old[1]] > 0:
                counts[old[1]] -= 1
                totals[old[1]] -= 1
                self.total -= 1
        b = score_bin(score)
        counts = self.days.get(day)
        if counts is None:
            counts = self.days[day] = [0] * RANK_BINS
        counts[b] += 1
        totals[b] += 1
        self.total += 1
        return replays.keep(offset, Rank(day, b, *self._share(b)))

    def _share(self, b: int) -> tuple[float, int]:
        total = self.total
        return (sum(self.totals[b:]) / total if total else 1.0), total

    def to_bytes(self) -> bytes:
        replays = self.replays
        replays.written = True
        return msgpack.packb([
            STATE_VERSION, self.day, replays.applied_offset,
            [[d, sparse(counts)] for d, counts in sorted(self.days.items())],
            [[o, r.day, r.bin, r.share, r.accounts] for o, r in replays.answers.items()],
        ])

    @classmethod
    def from_bytes(cls, raw: bytes) -> ScoreRanks:
        v = msgpack.unpackb(raw, strict_map_key=True)
        if v[0] != STATE_VERSION:
            raise ValueError(f"score ranks state version {v[0]} is not {STATE_VERSION}")
        r = cls()
        _, r.day, applied, days, memo = v
        for d, pairs in days:
            counts = r.days[d] = dense(pairs, RANK_BINS)
            for i, c in enumerate(counts):
                r.totals[i] += c
            r.total += sum(counts)
        r.replays = ReplayMemo(applied, {o: Rank(d, b, s, n) for o, d, b, s, n in memo})
        return r
