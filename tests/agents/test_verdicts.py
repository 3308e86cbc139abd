"""Verdicts in the account agent: forged ones go to the DLQ with a reason and change nothing; a signed one
that names an alert the account received is applied. Every verdict is logged, accepted or refused."""

from __future__ import annotations

import asyncio
from typing import Any

import msgpack
import pytest
from faust.types import Message

from pipeline.contract.codec import encode
from pipeline.contract.signing import sign
from pipeline.contract.verdicts import sign_verdict, verdict_for_alert
from pipeline.detection.messages import CRITICAL, HIGH, Finding, encode_findings
from pipeline.detection.partition import partition_for
from pipeline.worker.outbox import DLQ_REASON
from tests import factories
from tests.agents.test_agents import PartsUnderTest, make_parts

BROKER_S = factories.BASE_TS / 1000 + 365 * 86_400
"""Broker timestamps (seconds) of the messages fed: after every event, as live."""


def _put(parts: PartsUnderTest, agent: str, messages: list[tuple[bytes, bytes]], topic: str | None = None) -> None:
    """Feed raw messages to the account agent from ``topic`` (default usage-events), each on its key's
    partition, with offsets that go on from the previous call's (so later calls are no redeliveries)."""
    assert agent == "account_agent"
    topic = topic or parts.settings.topic("usage-events")
    offsets = parts.next_offset
    n_parts = parts.settings.input_partitions
    msgs = []
    for key, value in messages:
        offset = offsets.get(topic, 0)
        offsets[topic] = offset + 1
        msgs.append(Message(topic=topic, partition=partition_for(key.decode(), n_parts), offset=offset,
                            timestamp=BROKER_S, timestamp_type=1, headers=None, key=key, value=value, checksum=b""))
    asyncio.run(parts.account_stage.process_batch(msgs))

ANALYST_KEY = b"agent-test-analyst-key-0123456789abcdef"
ACTION_KEY = "agent-test-action-key-0123456789abcdefgh"
REASON = {"code": "campaign_member", "detail": "shares a card with a harvesting group", "value": 0.9,
          "baseline": 0.8}


@pytest.fixture
def parts(make_settings) -> PartsUnderTest:
    return make_parts(make_settings(store="memory://", signing_key=ACTION_KEY,
                                    analyst_key=ANALYST_KEY.decode()))


def _verdicts(parts: PartsUnderTest, *verdicts: dict[str, Any]) -> None:
    _put(parts, "account_agent", [(v["account_id"].encode(), encode(v)) for v in verdicts],
         topic=parts.settings.topic("analyst-verdicts"))


def _sent(parts: PartsUnderTest, short: str) -> list[dict[str, Any]]:
    return [msgpack.unpackb(m["value"]) for m in parts.sent[short].messages]


def _dlq_reasons(parts: PartsUnderTest) -> list[str]:
    return [dict(m["headers"])[DLQ_REASON].decode() for m in parts.sent["dlq"].messages]


def _harvester_until_first_alert(parts: PartsUnderTest) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Feed the harvester's events until its first alert; (that alert, the events not yet fed)."""
    events = [e for e in factories.harvester_and_noise(3000) if e["account_id"] == "harvester"]
    i = 0
    while not parts.sent["alerts"].messages:
        assert i < len(events), ("no alert", _dlq_reasons(parts)[:3])
        _put(parts, "account_agent", [(b"harvester", msgpack.packb(e)) for e in events[i:i + 50]])
        i += 50
    (alert,) = _sent(parts, "alerts")
    return alert, events[i:]


def _rest(parts: PartsUnderTest, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    before = len(parts.sent["alerts"].messages)
    _put(parts, "account_agent", [(b"harvester", msgpack.packb(e)) for e in events])
    return _sent(parts, "alerts")[before:]


def test_a_forged_false_positive_naming_anything_is_refused_and_the_harvester_is_still_alerted(parts, capsys):
    alert, rest = _harvester_until_first_alert(parts)
    forged = [
        {"schema_version": 1, "alert_id": "anything", "account_id": "harvester", "verdict": "false_positive",
         "ts": factories.BASE_TS, "analyst": None},  # the attack: unsigned, any id
        {"schema_version": 2, "alert_id": "anything", "account_id": "harvester", "kind": alert["kind"],
         "campaign_id": None, "verdict": "false_positive", "ts": factories.BASE_TS, "analyst": "x"},  # unsigned v2
        sign_verdict({"schema_version": 2, "alert_id": alert["alert_id"], "account_id": "harvester",
                      "kind": alert["kind"], "campaign_id": None, "verdict": "false_positive",
                      "ts": factories.BASE_TS, "analyst": "x"}, ACTION_KEY.encode()),  # the workers' action key
        verdict_for_alert({**alert, "alert_id": "anything"}, "false_positive", "x", alert["ts"], ANALYST_KEY),
    ]
    _verdicts(parts, *forged)
    reasons = _dlq_reasons(parts)
    assert len(reasons) == 4, reasons
    assert reasons[0].startswith("verdict: verdict v1 is unsigned")
    assert reasons[1] == "verdict: signature: no signature field"
    assert reasons[2].startswith("verdict: signature: signature does not match")
    assert reasons[3].startswith("verdict: unknown_alert")
    assert capsys.readouterr().out.count("outcome=refused") == 4, "each refused verdict is logged"
    later = _rest(parts, rest)
    assert [a["severity"] for a in later] == ["high"], "the harvester is alerted on as before"
    assert any(a["action"] == "require_verification" for a in _sent(parts, "actions"))


def test_a_signed_false_positive_on_a_received_alert_silences_that_kind(parts, capsys):
    alert, rest = _harvester_until_first_alert(parts)
    _verdicts(parts, verdict_for_alert(alert, "false_positive", "ana", alert["ts"] + 1, ANALYST_KEY))
    assert parts.sent["dlq"].messages == []
    logged = [line for line in capsys.readouterr().out.splitlines() if "outcome=" in line]
    assert len(logged) == 1 and "outcome=accepted" in logged[0] and "analyst=ana" in logged[0], logged
    n_actions = len(parts.sent["actions"].messages)
    assert _rest(parts, rest) == [], "no more alerts for the account's own behaviour"
    assert len(parts.sent["actions"].messages) == n_actions


def _campaign_finding(severity: int, ts: int) -> list[tuple[bytes, bytes]]:
    f = Finding("m1", ts, "coordinated_campaign", severity, 0.6, (REASON,), "camp-1", ("m2",), ts - 1000, 10)
    return [(b"m1", raw) for raw in encode_findings([f])]


@pytest.mark.parametrize("forgery", ["v1", "action_key"])
def test_a_forged_true_positive_is_refused_and_a_signed_one_turns_critical_into_ban(make_settings, forgery):
    def run(verdict_of: Any) -> tuple[list[str], list[str]]:
        parts = make_parts(make_settings(store="memory://", signing_key=ACTION_KEY,
                                         analyst_key=ANALYST_KEY.decode()))
        findings = parts.settings.topic("findings")
        _put(parts, "account_agent", _campaign_finding(HIGH, factories.BASE_TS), topic=findings)
        (alert,) = _sent(parts, "alerts")
        _verdicts(parts, verdict_of(alert))
        _put(parts, "account_agent", _campaign_finding(CRITICAL, factories.BASE_TS + 60_000), topic=findings)
        return [a["action"] for a in _sent(parts, "actions")], _dlq_reasons(parts)

    def forged(alert: dict[str, Any]) -> dict[str, Any]:
        if forgery == "v1":
            return {"schema_version": 1, "alert_id": alert["alert_id"], "account_id": "m1",
                    "verdict": "true_positive", "ts": alert["ts"], "analyst": None}
        v = verdict_for_alert(alert, "true_positive", "mallory", alert["ts"], ANALYST_KEY)
        v["signature"] = sign(v, ACTION_KEY.encode())
        return v

    actions, reasons = run(forged)
    assert actions == ["throttle", "suspend"] and len(reasons) == 1, (actions, reasons)
    actions, reasons = run(lambda a: verdict_for_alert(a, "true_positive", "ana", a["ts"], ANALYST_KEY))
    assert actions == ["throttle", "ban"] and reasons == []


def test_without_an_analyst_key_every_verdict_is_refused(make_settings):
    parts = make_parts(make_settings(store="memory://"))
    alert, _ = _harvester_until_first_alert(parts)
    _verdicts(parts, verdict_for_alert(alert, "false_positive", "ana", alert["ts"], ANALYST_KEY))
    assert _dlq_reasons(parts) == ["verdict: no analyst key is configured (DG_ANALYST_KEY): a verdict cannot be "
                                   "authenticated"]


def test_a_false_positive_lifts_the_accounts_active_actions_once_with_a_replayable_id(make_settings):
    """Issue 21: dismissing an alert undoes what was done, not only what is to come. The lift is a signed
    EnforcementAction v2 naming the actions it ends; a repeated verdict lifts nothing more; a replay of the
    same input gives the same lift."""
    from pipeline.contract import schemas, verify
    from pipeline.contract.signing import check

    def run() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        parts = make_parts(make_settings(store="memory://", signing_key=ACTION_KEY, analyst_key=ANALYST_KEY.decode()))
        _, rest = _harvester_until_first_alert(parts)
        _rest(parts, rest[:600])  # on to a stronger action
        before = _sent(parts, "actions")
        assert any(a["action"] != "flag_for_review" for a in before), before
        (latest,) = [a for a in _sent(parts, "alerts") if a["account_id"] == "harvester"][-1:]
        verdict = verdict_for_alert(latest, "false_positive", "ana", latest["ts"] + 1, ANALYST_KEY)
        _verdicts(parts, verdict)
        _verdicts(parts, verdict)  # the same verdict again (another offset): nothing more to lift
        return before, _sent(parts, "actions")[len(before):]

    before, lifts = run()
    assert len(lifts) == 1, lifts
    (lift,) = lifts
    assert schemas.errors("enforcement_action", lift, 2) == []
    assert lift["action"] == "lift" and lift["schema_version"] == 2 and lift["expires_ts"] is None
    assert {a["action_id"] for a in before} <= set(lift["lifts"]), "every action taken is named"
    assert check(lift, {"k": ACTION_KEY.encode()}) == "k"
    assert verify.check(lift, {"k": ACTION_KEY.encode()}, now_ms=lift["ts"]).problems == []
    assert run()[1] == lifts, "a replay gives the same lift, byte for byte"


def test_a_true_positive_lifts_nothing(parts):
    alert, _ = _harvester_until_first_alert(parts)
    n = len(parts.sent["actions"].messages)
    _verdicts(parts, verdict_for_alert(alert, "true_positive", "ana", alert["ts"] + 1, ANALYST_KEY))
    assert len(parts.sent["actions"].messages) == n
