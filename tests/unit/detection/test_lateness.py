"""Late events: within the allowed lateness they are used; later ones are counted and set aside, the
same way on every replay."""

from __future__ import annotations

from pipeline.detection import DetectionConfig, Engine
from pipeline.detection.features import AccountState
from tests import factories

CFG = DetectionConfig()
MIN = 60_000


def _events() -> list[dict]:
    t = factories.BASE_TS
    return [
        factories.event(1, account_id="a", ts=t),
        factories.event(2, account_id="a", ts=t + 10 * MIN),
        factories.event(3, account_id="a", ts=t + 10 * MIN - 4 * MIN),  # 4 min late: used
        factories.event(4, account_id="a", ts=t + 10 * MIN - 6 * MIN),  # 6 min late: beyond the 5 allowed
        factories.event(5, account_id="a", ts=t + 11 * MIN),
    ]


def test_events_within_the_lateness_are_used_and_later_ones_counted_not_applied() -> None:
    engine = Engine(CFG)
    results = [engine.on_event(ev, 0) for ev in _events()]
    assert [r.late for r in results] == [False, False, False, True, False]
    st: AccountState = engine.accounts.get("a")
    assert st.n == 4 and st.late == 1
    assert st.last_ts == factories.BASE_TS + 11 * MIN


def test_a_late_event_delivered_again_is_a_duplicate_not_a_second_late_count() -> None:
    engine = Engine(CFG)
    evs = _events()
    for ev in evs:
        engine.on_event(ev, 0)
    again = engine.on_event(evs[3], 0)
    assert again.duplicate and engine.accounts.get("a").late == 1


def test_lateness_handling_is_the_same_on_every_replay_and_survives_serialisation() -> None:
    def run() -> bytes:
        engine = Engine(CFG)
        for ev in _events():
            engine.on_event(ev, 0)
        return engine.accounts.get("a").to_bytes()

    first = run()
    assert first == run()
    assert AccountState.from_bytes(first).late == 1
