"""Where a harvest score stands among the tier's accounts (``pipeline.detection.calibration``): each account
counted once at its latest score, days leaving with their accounts, the same figures after a write and a
crash."""

from __future__ import annotations

import msgpack
import pytest

from pipeline.detection import DetectionConfig, Engine
from pipeline.detection.calibration import RANK_BINS, RANK_DAYS, ScoreRanks, score_bin
from pipeline.detection.config import DAY_MS
from pipeline.detection.features import AccountState
from pipeline.simulate import generate

T0 = 100 * DAY_MS


def test_an_account_is_counted_once_at_its_latest_score() -> None:
    ranks = ScoreRanks()
    places = {f"a{i}": ranks.move(None, T0, i / 10) for i in range(10)}  # scores 0.0 .. 0.9
    assert ranks.total == 10
    top = places["a9"]
    assert (top.share, top.accounts) == (0.1, 10)
    # a0 rises to 0.95: still ten accounts, and a9 now shares the top fifth with it
    moved = ranks.move((places["a0"].day, places["a0"].bin), T0 + 1, 0.95)
    assert (moved.share, moved.accounts) == (0.1, 10)
    assert ranks.move((top.day, top.bin), T0 + 2, 0.9).share == 0.2
    assert ranks.total == 10


def test_the_share_counts_the_accounts_at_or_above_the_scores_bin() -> None:
    ranks = ScoreRanks()
    for s in (0.601, 0.605, 0.2, 0.0):
        ranks.move(None, T0, s)
    r = ranks.move(None, T0, 0.609)  # the same bin as 0.601 and 0.605
    assert r.bin == score_bin(0.6) == 60 and (r.share, r.accounts) == (0.6, 5)
    assert score_bin(-1.0) == 0 and score_bin(1.0) == RANK_BINS - 1


def test_days_older_than_the_window_leave_with_their_accounts_and_late_events_do_not_turn_the_clock_back() -> None:
    ranks = ScoreRanks()
    old = ranks.move(None, T0, 0.9)
    ranks.move(None, T0 + (RANK_DAYS - 1) * DAY_MS, 0.1)
    assert ranks.total == 2
    r = ranks.move(None, T0 + RANK_DAYS * DAY_MS, 0.1)  # the first day is now out of the window
    assert r.accounts == 2 and ranks.total == 2 and ranks.totals[old.bin] == 0
    late = ranks.move(None, T0, 0.5)  # an event from long ago is counted on the segment's day
    assert late.day == ranks.day == (T0 + RANK_DAYS * DAY_MS) // DAY_MS
    again = ranks.move((old.day, old.bin), T0 + RANK_DAYS * DAY_MS, 0.3)  # its old place is gone: nothing taken
    assert again.accounts == 4


def test_written_and_read_back_the_ranks_go_on_alike() -> None:
    a = ScoreRanks()
    for i in range(40):
        a.move(None, T0 + i * DAY_MS // 3, (i * 37 % 100) / 100)
    b = ScoreRanks.from_bytes(a.to_bytes())
    assert (b.day, b.days, b.totals, b.total) == (a.day, a.days, a.totals, a.total)
    for i in range(40, 80):
        ts, score = T0 + i * DAY_MS // 3, (i * 53 % 100) / 100
        assert a.move(None, ts, score) == b.move(None, ts, score)


def test_a_move_replayed_after_a_crash_gets_its_first_rank_and_is_not_made_twice() -> None:
    once = ScoreRanks()
    first = [once.move(None, T0, (i % 10) / 10, offset=i) for i in range(30)]
    ranks = ScoreRanks()
    got = [ranks.move(None, T0, (i % 10) / 10, offset=i) for i in range(20)]
    ranks = ScoreRanks.from_bytes(ranks.to_bytes())
    got += [ranks.move(None, T0, (i % 10) / 10, offset=i) for i in range(20, 25)]
    stored = ranks.to_bytes()  # the crash: accounts still as of offset 19
    ranks = ScoreRanks.from_bytes(stored)
    replayed = [ranks.move(None, T0, (i % 10) / 10, offset=i) for i in range(20, 30)]
    assert got + replayed[5:] == first
    assert replayed[:5] == first[20:25]
    assert ranks.total == once.total == 30


def test_a_state_of_another_version_is_refused() -> None:
    v = msgpack.unpackb(ScoreRanks().to_bytes())
    v[0] = 7
    with pytest.raises(ValueError, match="version 7"):
        ScoreRanks.from_bytes(msgpack.packb(v))


def test_account_alerts_tell_their_rank_from_counts_that_hold_each_account_once() -> None:
    """On the standard scenario's first day: medium and higher account alerts tell the share of their
    tier's accounts that reach their score (once the segment counts 50 accounts), as a reason that weighs
    nothing; the counts hold each account once, where its state says."""
    sim = generate("standard", 1, 0.3)
    events = [e for e in sim.events if e["ts"] < sim.events[0]["ts"] + DAY_MS]
    ranks: dict[str, ScoreRanks] = {}
    accounts: dict[str, AccountState] = {}
    told = []
    for out in Engine(DetectionConfig(), ranks=ranks, accounts=accounts).replay(events):
        for r in out.value.get("reasons") or []:
            if r["code"] == "population_rank":
                told.append((out.value, r))
    assert told
    for alert, r in told:
        assert alert["kind"] == "account_behaviour" and r["contribution"] == 0.0
        assert 0.0 < r["value"] <= 1.0 and r["baseline"] >= 50
    # every account counted once, in the segment and bin its state says
    counted = sum(rk.total for rk in ranks.values())
    assert counted == sum(1 for st in accounts.values() if st.rank is not None)
    for st in accounts.values():
        if st.rank is not None:
            day, b, segment = st.rank
            assert any(k.endswith(":" + segment) and rk.days.get(day, [0] * RANK_BINS)[b] > 0
                       for k, rk in ranks.items())
