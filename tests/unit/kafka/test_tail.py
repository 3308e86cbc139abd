"""tail's JSON lines: every message becomes one valid JSON object, undecodable ones included; its filters;
and verify reads its lines as the messages they stand for."""

from __future__ import annotations

import base64
import json
from collections import namedtuple
from typing import Any

import msgpack
import pytest

from pipeline.contract import codec, verify
from pipeline.contract.signing import DEV_SIGNING_KEY, sign
from pipeline.kafka.partitioning import check_messages
from pipeline.kafka.tail import matches, parse_start, record
from tests import factories

Msg = namedtuple("Msg", "topic partition offset timestamp key value headers")


def _msg(value: bytes | None, key: bytes | None = b"acct-1", headers: Any = (), partition: int = 0,
         offset: int = 7) -> Msg:
    return Msg("t-anomaly-alerts", partition, offset, 1_772_409_600_000, key, value, list(headers))


def _alert(**overrides: Any) -> dict[str, Any]:
    alert = {"schema_version": 1, "alert_id": "alr-1", "ts": factories.BASE_TS, "account_id": "acct-1",
             "campaign_id": None, "kind": "account_behaviour", "score": 0.7, "severity": "high", "reasons": [],
             "related_accounts": [], "window_start_ts": None, "window_events": 5, "detector_version": "x"}
    alert.update(overrides)
    return alert


def _line(msg: Msg) -> dict[str, Any]:
    return json.loads(json.dumps(record(msg), allow_nan=False))


def test_a_msgpack_alert_becomes_a_json_line_with_its_coordinates_key_and_headers() -> None:
    rec = _line(_msg(codec.encode(_alert()), headers=[("key-id", b"current"), ("bin", b"\xff\x00")]))
    assert rec == {"topic": "t-anomaly-alerts", "partition": 0, "offset": 7, "timestamp": 1_772_409_600_000,
                   "key": "acct-1", "headers": [["key-id", "current"], ["bin", {"b64": "/wA="}]],
                   "encoding": "msgpack", "value": _alert()}


def test_a_json_value_is_decoded_and_says_so() -> None:
    rec = _line(_msg(json.dumps(factories.event(1)).encode()))
    assert rec["encoding"] == "json" and rec["value"] == factories.event(1)


@pytest.mark.parametrize("raw", [b"\xc1", b"{not json", msgpack.packb({"a": 1})[:-1], b"\xff" * 40,
                                 msgpack.packb({"a": 1}) + b"trailing", b"\x00\x00\x00\x00\x01{}"])
def test_an_undecodable_value_is_shown_as_base64_with_an_error_never_a_crash(raw: bytes) -> None:
    rec = _line(_msg(raw))
    assert rec["value"] is None and rec["encoding"] is None
    assert base64.b64decode(rec["value_b64"]) == raw and rec["error"].startswith("neither msgpack nor JSON")


def test_a_map_naming_a_key_twice_is_not_decoded_into_one_of_its_values() -> None:
    raw = b"\x82" + msgpack.packb("action") + msgpack.packb("ban") + msgpack.packb("action") + msgpack.packb("x")
    rec = _line(_msg(raw))
    assert rec["value"] is None and "duplicate key 'action'" in rec["error"]


def test_odd_msgpack_still_gives_valid_json() -> None:
    value = {"bin": b"\x01\x02", "nan": float("nan"), 3: [msgpack.ExtType(5, b"x")], "deep": [[[]]]}
    rec = _line(_msg(msgpack.packb(value, use_bin_type=True)))
    assert rec["value"] == {"bin": {"b64": "AQI="}, "nan": "nan", "3": [{"ext": 5, "b64": "eA=="}],
                            "deep": [[[]]]}


def test_a_key_that_is_not_utf8_and_a_tombstone() -> None:
    rec = _line(_msg(None, key=b"\xff"))
    assert (rec["key"], rec["key_b64"], rec["value"], rec.get("error")) == (None, "/w==", None, None)


def test_filters_by_account_key_value_or_related_accounts_and_by_minimum_severity() -> None:
    own = record(_msg(codec.encode(_alert())))
    campaign = record(_msg(codec.encode(_alert(account_id=None, campaign_id="cmp-1", severity="critical",
                                               related_accounts=["acct-1", "acct-2"])), key=b"cmp-1"))
    assert matches(own, account="acct-1") and matches(campaign, account="acct-2")
    assert not matches(own, account="acct-2")
    assert matches(own, severity="medium") and matches(own, severity="high")
    assert not matches(own, severity="critical") and matches(campaign, severity="critical")
    assert not matches(record(_msg(b"\xc1")), severity="low")


def test_from_takes_times_durations_and_now() -> None:
    now = 1_772_409_600_000
    assert parse_start(None).at_ms is None
    assert parse_start("now", now_ms=lambda: now).at_ms == now
    assert parse_start("2h", now_ms=lambda: now).at_ms == now - 7_200_000
    assert parse_start("2026-03-02T00:00:00Z").at_ms == now


def _action(**overrides: Any) -> dict[str, Any]:
    action = {"schema_version": 1, "action_id": "act-1", "ts": factories.BASE_TS, "account_id": "acct-1",
              "action": "flag_for_review", "mode": "shadow", "reason_codes": ["x"], "alert_ids": ["alr-1"],
              "expires_ts": None, "policy_version": "p1"}
    action.update(overrides)
    return {**action, "signature": sign(action, DEV_SIGNING_KEY)}


def _verify(lines: list[dict[str, Any]]) -> list[verify.Result]:
    data = "\n".join(json.dumps(line) for line in lines).encode()
    return [verify.check(obj, {"current": DEV_SIGNING_KEY}, factories.BASE_TS, where=where)
            for where, obj in verify.parse_records(data)]


def test_verify_checks_the_action_inside_each_tail_line_and_names_its_offset() -> None:
    good = record(_msg(codec.encode(_action()), offset=3))
    tampered = record(_msg(codec.encode({**_action(), "action": "ban"}), offset=4))
    results = _verify([good, tampered])
    assert [r.problems for r in results][0] == []
    assert results[1].problems and "offset 4" in results[1].where and "offset 3" in results[0].where


def test_verify_judges_the_raw_bytes_of_a_line_tail_could_not_decode() -> None:
    raw = b"\x82" + msgpack.packb("action") + msgpack.packb("ban") + msgpack.packb("action") + msgpack.packb("x")
    (res,) = _verify([record(_msg(raw))])
    assert any("duplicate key 'action'" in p for p in res.problems)


def test_check_partitioning_names_messages_off_their_accounts_partition() -> None:
    from pipeline.detection.partition import partition_for

    right = partition_for("acct-1", 4)
    wrong = (right + 1) % 4
    msgs = [_msg(codec.encode(_alert()), partition=right, offset=1),
            _msg(codec.encode(_alert()), partition=wrong, offset=2),
            _msg(codec.encode(_alert()), key=None, partition=right, offset=3),
            _msg(codec.encode(_alert(account_id="acct-2")), partition=right, offset=4),
            _msg(codec.encode(_alert(account_id=None, campaign_id="cmp-9")), key=b"cmp-9",
                 partition=partition_for("cmp-9", 4), offset=5)]
    report = check_messages("t", 4, msgs)
    assert report.checked == 5
    assert [(m.partition, m.offset) for m in report.misplaced] == [(wrong, 2), (right, 3), (right, 4)]
    assert f"gives partition {right} of 4" in report.misplaced[0].problem
    assert "no key" in report.misplaced[1].problem and "account_id is 'acct-2'" in report.misplaced[2].problem
