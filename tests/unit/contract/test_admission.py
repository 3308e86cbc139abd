"""Event time bounded by message time, in the worker's terms and in a file backtest's (issue 20, attack 1)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from pipeline.contract.admission import TS_IN_FUTURE, Watermark, bound_file_events, in_future
from pipeline.contract.eventfile import write_records
from pipeline.offline.backtest import backtest_file
from pipeline.settings import Settings
from tests import factories

SKEW = 600_000


def _ts(events: list[dict]) -> list[int]:
    return [e["ts"] for e in events]


def test_an_event_more_than_the_skew_ahead_of_its_message_is_in_the_future() -> None:
    assert not in_future(1_000 + SKEW, 1_000, SKEW)
    assert in_future(1_001 + SKEW, 1_000, SKEW)
    assert in_future(1, 0, SKEW) is False and in_future(SKEW + 1, 0, SKEW), "no timestamp: only the skew"


def test_the_watermark_follows_events_but_never_passes_their_messages_time() -> None:
    w = Watermark()
    w.advance(1_000, 5_000)
    assert w.value == 1_000
    w.advance(2**53 - 1, 6_000)  # what one event claims is bounded by when Kafka had it
    assert w.value == 6_000
    w.advance(3_000, 7_000)
    assert w.value == 6_000


def test_a_file_event_far_ahead_of_the_traffic_around_it_is_bounded_out() -> None:
    base = factories.BASE_TS
    events = [{"ts": base + i * 1000} for i in range(5)]
    rejected: list[dict] = []
    forged = [{"ts": 2**53 - 1}]
    got = list(bound_file_events(events[:2] + forged + events[2:], SKEW, rejected.append))
    assert _ts(got) == _ts(events) and rejected == forged
    rejected.clear()
    got = list(bound_file_events(forged + events, SKEW, rejected.append))  # the file's first event, too
    assert _ts(got) == _ts(events) and rejected == forged


def test_a_quiet_spell_in_a_file_is_not_the_future() -> None:
    """An hour without traffic and then traffic again: the event after the gap is confirmed by the ones
    after it. The file's last event is accepted whatever its time (nothing comes after it to blind)."""
    base = factories.BASE_TS
    events = [{"ts": base}, {"ts": base + 1000}, {"ts": base + 3_600_000}, {"ts": base + 3_601_000},
              {"ts": 2**53 - 1}]
    rejected: list[dict] = []
    assert _ts(list(bound_file_events(events, SKEW, rejected.append))) == _ts(events) and rejected == []
    assert _ts(list(bound_file_events(events[:1], SKEW, rejected.append))) == _ts(events[:1])


@pytest.mark.parametrize("far_ts", [2**53 - 1, 4_102_444_800_000], ids=["2**53-1", "year-2100"])
def test_a_backtest_bounds_a_far_future_event_as_the_worker_does(tmp_path: Path, far_ts: int) -> None:
    """One event of the harvester far in the future is a bad record (``ts_in_future``) of the backtest, as
    it is the worker's DLQ message, and the harvester is flagged as it is without it."""
    events = factories.harvester_and_noise(3000)
    at = len(events) // 10
    forged = factories.event(10**6, account_id="harvester", event_id="forged", ts=far_ts)

    def run(name: str, evs: list[dict]) -> tuple[list[dict], list[str]]:
        path = tmp_path / f"{name}.jsonl"
        write_records(path, evs)
        bad: list[str] = []
        backtest_file(path, Settings(), alerts_out=tmp_path / f"{name}-alerts.jsonl",
                      on_bad=lambda rec: bad.append(rec.reason))
        alerts = [orjson.loads(line) for line in (tmp_path / f"{name}-alerts.jsonl").read_bytes().splitlines()]
        return alerts, bad

    clean, clean_bad = run("clean", events)
    attacked, attacked_bad = run("attacked", events[:at] + [forged] + events[at:])
    assert [a["severity"] for a in attacked if a["account_id"] == "harvester"] == ["medium", "high"]
    assert attacked == clean and clean_bad == []
    assert attacked_bad == [TS_IN_FUTURE]


def test_every_topic_takes_what_the_worker_producer_may_send_and_usage_events_has_broker_time() -> None:
    """The producer's ``max_request_size`` is every topic's ``max.message.bytes`` (attack 3), and the input's
    message timestamps, which bound event time, are the broker's (attack 1)."""
    from pipeline.contract.manifest import load_manifest
    from pipeline.worker.outbox import KAFKA_MAX_MESSAGE_BYTES

    manifest = load_manifest()
    assert {int(t["config"]["max.message.bytes"]) for t in manifest.values()} == {KAFKA_MAX_MESSAGE_BYTES}
    assert manifest["usage-events"]["config"]["message.timestamp.type"] == "LogAppendTime"
