"""Hostile input on the account stage: a message cannot move event time, reach another partition's state,
or stop the worker by its size (issue 20, attacks 1, 3 and 4).

The tables are real Faust tables on RocksDB where the sweeper is exercised (it walks RocksDB only)."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import msgpack
import pytest
from faust.types import Message

from pipeline.contract.admission import TS_IN_FUTURE, WRONG_PARTITION
from pipeline.detection.partition import partition_for
from pipeline.worker.outbox import (
    DLQ_ORIGINAL_KEY_SHA256,
    DLQ_ORIGINAL_KEY_SIZE,
    DLQ_ORIGINAL_SHA256,
    DLQ_ORIGINAL_SIZE,
    DLQ_REASON,
    DLQ_RECORD_MAX,
    DLQ_TRUNCATED,
    KAFKA_MAX_MESSAGE_BYTES,
    dlq_copy,
)
from tests import factories
from tests.agents.test_agents import BROKER_S, PartsUnderTest, make_parts

YEAR_2100_MS = 4_102_444_800_000


def _message(parts: PartsUnderTest, offset: int, key: bytes, value: bytes, *, topic: str = "usage-events",
             partition: int | None = None, broker_s: float = BROKER_S) -> Message:
    settings = parts.settings
    if partition is None:
        partition = partition_for(key.decode(), settings.input_partitions)
    return Message(topic=settings.topic(topic), partition=partition, offset=offset, timestamp=broker_s,
                   timestamp_type=1, headers=None, key=key, value=value, checksum=b"")


def _run(parts: PartsUnderTest, messages: list[Message], batch: int = 500) -> None:
    async def go() -> None:
        for i in range(0, len(messages), batch):
            await parts.account_stage.process_batch(messages[i:i + batch])

    asyncio.run(go())


def _stream(parts: PartsUnderTest, events: list[dict[str, Any]]) -> list[Message]:
    """Each event as a message on its account's partition, offsets counted per partition."""
    offsets: dict[int, int] = {}
    out = []
    for ev in events:
        key = ev["account_id"].encode()
        p = partition_for(ev["account_id"], parts.settings.input_partitions)
        offsets[p] = offsets.get(p, -1) + 1
        out.append(_message(parts, offsets[p], key, msgpack.packb(ev)))
    return out


def _dlq_reasons(parts: PartsUnderTest) -> list[bytes]:
    return [dict(m["headers"])[DLQ_REASON] for m in parts.sent["dlq"].messages]


def _severities(parts: PartsUnderTest, account: str) -> list[str]:
    alerts = [msgpack.unpackb(m["value"]) for m in parts.sent["alerts"].messages]
    return [a["severity"] for a in alerts if a["account_id"] == account]


@pytest.mark.parametrize("far_ts", [2**53 - 1, YEAR_2100_MS], ids=["2**53-1", "year-2100"])
def test_a_far_future_event_wipes_no_state_and_blinds_no_account(make_settings, far_ts):
    """Attack 1: one event of the harvester with a far-future ``ts`` goes to the DLQ as ``ts_in_future``;
    the sweeper's clock stays at the events' own time, so it deletes none of the ~200 accounts' state,
    and the harvester's later real events all count: it is flagged high as without the forged event."""
    parts = make_parts(make_settings(store="rocksdb://"))
    events = factories.harvester_and_noise(3000)
    first = next(i for i, e in enumerate(events) if e["account_id"] == "harvester" and e["ts"] > factories.BASE_TS
                 + 600_000)  # ten minutes in
    forged = factories.event(10**6, account_id="harvester", event_id="forged", ts=far_ts)
    _run(parts, _stream(parts, events[:first] + [forged] + events[first:]))

    table = parts.tables["account-state"]
    before = sum(len(list(db.keys())) for db in table.data._dbs.values())
    assert before > 200

    async def sweep() -> int:
        return sum([await s.sweep(parts.watermark.value) for s in parts.sweepers])

    assert asyncio.run(sweep()) == 0
    assert sum(len(list(db.keys())) for db in table.data._dbs.values()) == before
    harvester = parts.engine.accounts.get("harvester")
    assert harvester.late == 0
    assert harvester.n == sum(1 for e in events if e["account_id"] == "harvester")
    assert _severities(parts, "harvester") == ["medium", "high"]
    for m in parts.sent["actions"].messages:  # expiries stay within the action schema whatever happens
        assert msgpack.unpackb(m["value"])["expires_ts"] < 2**53
    assert _dlq_reasons(parts) == [TS_IN_FUTURE.encode()]
    assert parts.watermark.value == max(e["ts"] for e in events)


def test_an_event_on_another_partition_at_a_huge_offset_makes_no_real_event_a_duplicate(make_settings):
    """Attack 4: a forged event of the harvester on a partition that is not its account's, at offset
    10,000,000, goes to the DLQ as ``wrong_partition``; the account's real events that follow (at their
    own partition's small offsets) all count, and it is flagged as without the forged event."""
    parts = make_parts(make_settings(store="memory://"))
    events = [e for e in factories.harvester_and_noise(3000) if e["account_id"] == "harvester"]
    n_parts = parts.settings.input_partitions
    other = (partition_for("harvester", n_parts) + 1) % n_parts
    forged = _message(parts, 10_000_000, b"harvester",
                      msgpack.packb(factories.event(10**6, account_id="harvester", event_id="forged",
                                                    ts=events[0]["ts"])), partition=other)
    _run(parts, [forged] + _stream(parts, events))

    assert parts.engine.accounts.get("harvester").n == len(events)
    assert _severities(parts, "harvester") == ["medium", "high"]
    assert _dlq_reasons(parts) == [WRONG_PARTITION.encode()]


def test_findings_and_verdicts_on_the_wrong_partition_go_to_the_dlq(make_settings):
    """Attack 4, the account stage's other inputs: a verdict or a findings batch about an account, on a
    partition that is not the account's, changes nothing and goes to the DLQ."""
    from pipeline.contract.verdicts import sign_verdict
    from pipeline.detection.messages import HIGH, Finding, encode_findings

    analyst_key = "hostile-input-test-analyst-key-0123456789"
    parts = make_parts(make_settings(store="memory://", analyst_key=analyst_key))
    n_parts = parts.settings.input_partitions
    other = (partition_for("victim", n_parts) + 1) % n_parts
    verdict = sign_verdict({"schema_version": 2, "alert_id": "alr-x", "account_id": "victim",
                            "kind": "account_behaviour", "campaign_id": None, "verdict": "false_positive",
                            "ts": factories.BASE_TS, "analyst": "ana"}, analyst_key.encode())
    reason = {"code": "campaign_member", "detail": "d", "value": None, "baseline": None, "contribution": None}
    finding = Finding("victim", factories.BASE_TS, "coordinated_campaign", HIGH, 0.9, (reason,), "camp-1")
    _run(parts, [_message(parts, 0, b"victim", msgpack.packb(verdict), topic="analyst-verdicts", partition=other),
                 _message(parts, 0, b"", encode_findings([finding])[0], topic="findings", partition=other)])

    assert parts.sent["alerts"].messages == [] and parts.sent["actions"].messages == []
    assert parts.engine.policy_states.get("victim") is None
    assert _dlq_reasons(parts) == [WRONG_PARTITION.encode()] * 2


def test_a_999900_byte_message_goes_to_the_dlq_and_the_worker_goes_on(make_settings):
    """Attack 3: a 999,900-byte input is invalid (too large); its DLQ copy, headers and all, is a record
    the worker's producer takes (its ``max_request_size`` is the topics' ``max.message.bytes``, where
    Faust's default of 1,000,000 was not), and the events after it are processed."""
    from pipeline.worker.app import create_app

    settings = make_settings(store="memory://")
    assert create_app(settings).conf.producer_max_request_size == KAFKA_MAX_MESSAGE_BYTES
    parts = make_parts(settings)
    huge = b"{" + b" " * 999_898 + b"}"
    assert len(huge) == 999_900
    events = [e for e in factories.harvester_and_noise(3000) if e["account_id"] == "harvester"]
    _run(parts, [_message(parts, 0, b"harvester", huge)] + _stream(parts, events)[1:])

    (dlq,) = parts.sent["dlq"].messages
    assert dict(dlq["headers"])[DLQ_REASON].startswith(b"message too large")
    assert dlq["value"] == huge
    assert _record_size(dlq) < KAFKA_MAX_MESSAGE_BYTES - 1024, "with room for the record's framing"
    assert _record_size(dlq) > 1_000_000, "more than Faust's default limit for a request"
    assert _severities(parts, "harvester") == ["medium", "high"]


def _record_size(sent: dict[str, Any]) -> int:
    return len(sent["value"]) + len(sent["key"] or b"") + sum(len(k) + len(v) for k, v in sent["headers"])


def test_a_dlq_copy_that_would_not_fit_is_cut_with_the_original_size_and_sha256(make_settings):
    """Attack 3: the largest input a topic takes (``max.message.bytes``, key and value) does not fit in a
    DLQ record once the DLQ headers are added: its copy is cut short, and the headers carry the original
    sizes and SHA-256 digests of the key and the value."""
    parts = make_parts(make_settings(store="memory://"))
    key, value = b"k" * 40_000, b"\x00" * 1_000_000  # together just under max.message.bytes
    _run(parts, [_message(parts, 0, key, value, partition=0)])

    (dlq,) = parts.sent["dlq"].messages
    headers = dict(dlq["headers"])
    assert headers[DLQ_TRUNCATED] == b"value"
    assert headers[DLQ_ORIGINAL_SIZE] == b"1000000"
    assert headers[DLQ_ORIGINAL_SHA256] == hashlib.sha256(value).hexdigest().encode()
    assert dlq["key"] == key and value.startswith(dlq["value"])
    assert _record_size(dlq) < KAFKA_MAX_MESSAGE_BYTES - 1024

    # a key that is most of the record is cut too (the value first, then the key)
    headers = []
    cut_key, cut_value = dlq_copy(b"k" * 1_000_000, b"v" * 40_000, headers)
    assert dict(headers)[DLQ_TRUNCATED] == b"key"
    assert dict(headers)[DLQ_ORIGINAL_KEY_SIZE] == b"1000000"
    assert dict(headers)[DLQ_ORIGINAL_KEY_SHA256] == hashlib.sha256(b"k" * 1_000_000).hexdigest().encode()
    assert cut_value == b"v" * 40_000 and len(cut_key) + len(cut_value) <= DLQ_RECORD_MAX


def test_policy_state_is_swept_once_no_verdict_can_name_its_alerts(make_settings):
    """Item 8: policy state was never swept, so it only grew. An account whose last finding (and the
    window in which a verdict may still name its alert) lies more than ``idle_expiry_hours`` of event time
    behind is forgotten; one with a recent finding is kept."""
    from pipeline.detection.messages import HIGH, Finding, encode_findings

    settings = make_settings(store="rocksdb://", idle_expiry_hours=24 * 14)
    parts = make_parts(settings)
    day = 86_400_000
    t0 = factories.BASE_TS
    reason = {"code": "campaign_member", "detail": "d", "value": None, "baseline": None, "contribution": None}

    def finding(account: str, ts: int) -> Message:
        raw = encode_findings([Finding(account, ts, "coordinated_campaign", HIGH, 0.9, (reason,), "camp-1")])[0]
        return _message(parts, 0, account.encode(), raw, topic="findings")

    late = factories.event(1, account_id="someone", ts=t0 + 60 * day)  # moves event time on by 60 days
    _run(parts, [finding("old", t0), finding("recent", t0 + 40 * day),
                 _message(parts, 0, b"someone", msgpack.packb(late), broker_s=(t0 + 60 * day) / 1000)])
    assert parts.watermark.value == t0 + 60 * day
    assert len(parts.sent["alerts"].messages) == 2

    async def sweep() -> None:
        for s in parts.sweepers:
            await s.sweep(parts.watermark.value)

    asyncio.run(sweep())
    policy = parts.tables["policy-state"]
    for account, kept in (("old", False), ("recent", True)):
        raw = policy.get_raw(partition_for(account, settings.input_partitions), account.encode())
        assert (raw is not None) == kept, account
