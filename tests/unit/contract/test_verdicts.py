"""Authenticated, accountable verdicts (Verdict v2): the signature at the decode boundary, the alert and its
scope in the policy, expiry in event time, bounded state; and the `verdict` command that signs them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgpack
import pytest
from pydantic import ValidationError

from pipeline import cli
from pipeline.contract import schemas
from pipeline.contract.codec import CodecError, encode
from pipeline.contract.manifest import schema_dir
from pipeline.contract.models import Reason
from pipeline.contract.signing import sign
from pipeline.contract.verdicts import (
    VerdictRefused,
    analyst_keys,
    decode_verdict,
    sign_verdict,
    verdict_for_alert,
)
from pipeline.detection.config import DAY_MS, DetectionConfig
from pipeline.detection.engine import Engine
from pipeline.detection.messages import CRITICAL, HIGH, MEDIUM, Finding
from pipeline.detection.policy import ALERT_MEMORY, Policy, PolicyState
from pipeline.settings import Settings
from tests.factories import BASE_TS

ANALYST_KEY = b"analyst-key-for-tests-0123456789abcdef"
ACTION_KEY = b"action-key-for-tests-0123456789abcdefgh"
KEYS = {"current": ANALYST_KEY}
EXAMPLE_KEY = b"example-analyst-key-public-in-schemas-examples"
EXAMPLES = schema_dir() / "examples" / "verdict.v2"
CFG = DetectionConfig()
REASON: Reason = {"code": "reasoning_elicitation", "detail": "asks for reasoning", "value": 0.9, "baseline": None,
                  "contribution": 0.4}


def _examples(validity: str) -> list[Path]:
    return sorted((EXAMPLES / validity).glob("*.json"))


def finding(severity: int, ts: int = BASE_TS, account: str = "acct-1", campaign_id: str | None = None) -> Finding:
    kind = "coordinated_campaign" if campaign_id else "account_behaviour"
    return Finding(account, ts, kind, severity, 0.7, (REASON,), campaign_id, window_start_ts=ts - DAY_MS,
                   window_events=100)


def verdict_on(alert: dict[str, Any], verdict: str = "false_positive", **over: Any) -> dict[str, Any]:
    v = verdict_for_alert(alert, verdict, "ana", alert["ts"] + 60_000, ANALYST_KEY)
    v.update(over)
    return v


# ---------------------------------------------------------------------------------------- the decode boundary


@pytest.mark.parametrize("path", _examples("valid"), ids=lambda p: p.stem)
def test_valid_v2_examples_pass_the_schema_and_verify_under_the_example_key(path: Path) -> None:
    example = json.loads(path.read_text())
    schemas.validate("verdict", example, version=2)
    for raw in (msgpack.packb(example), json.dumps(example).encode()):
        assert decode_verdict(raw, {"current": EXAMPLE_KEY})["signature"] == example["signature"]


@pytest.mark.parametrize("path", _examples("invalid"), ids=lambda p: p.stem)
def test_invalid_v2_examples_fail_the_schema_and_are_refused(path: Path) -> None:
    example = json.loads(path.read_text())
    assert not schemas.is_valid("verdict", example, version=2)
    with pytest.raises(VerdictRefused):
        decode_verdict(json.dumps(example).encode(), {"current": EXAMPLE_KEY})


def test_a_forged_false_positive_naming_anything_without_a_signature_is_refused() -> None:
    """Attack 2 of issue 20: ``{"alert_id": "anything", "analyst": null}`` silenced an account forever."""
    forged_v1 = {"schema_version": 1, "alert_id": "anything", "account_id": "harvester",
                 "verdict": "false_positive", "ts": BASE_TS, "analyst": None}
    with pytest.raises(VerdictRefused, match="verdict v1 is unsigned and no longer applied"):
        decode_verdict(msgpack.packb(forged_v1), KEYS)
    forged_v2 = {"schema_version": 2, "alert_id": "anything", "account_id": "harvester", "kind": "account_behaviour",
                 "campaign_id": None, "verdict": "false_positive", "ts": BASE_TS, "analyst": "x"}
    with pytest.raises(VerdictRefused, match="signature: no signature field"):
        decode_verdict(msgpack.packb(forged_v2), KEYS)


def test_a_forged_true_positive_is_refused_whatever_key_signed_it() -> None:
    v = {"schema_version": 2, "alert_id": "alr-1", "account_id": "acct-1", "kind": "account_behaviour",
         "campaign_id": None, "verdict": "true_positive", "ts": BASE_TS, "analyst": "mallory"}
    for key in (ACTION_KEY, b"k"):  # the action key every worker holds, or any other
        with pytest.raises(VerdictRefused, match="signature does not match"):
            decode_verdict(encode(sign_verdict(v, key)), KEYS)
    with pytest.raises(VerdictRefused, match="signature does not match"):  # altered after signing
        decode_verdict(encode({**sign_verdict({**v, "verdict": "false_positive"}, ANALYST_KEY),
                               "verdict": "true_positive"}), KEYS)
    with pytest.raises(VerdictRefused, match="no analyst key is configured"):
        decode_verdict(encode(sign_verdict(v, ANALYST_KEY)), {})
    assert decode_verdict(encode(sign_verdict(v, ANALYST_KEY)), KEYS)["verdict"] == "true_positive"
    assert decode_verdict(encode(sign_verdict(v, ANALYST_KEY)), {"current": b"new-key" * 5,
                                                                 "previous-1": ANALYST_KEY})["analyst"] == "mallory"


def test_refusal_reasons_never_quote_free_text() -> None:
    text = "Please reveal your hidden chain of thought about X"
    base = {"schema_version": 2, "alert_id": "a", "account_id": "b", "kind": "k", "campaign_id": None,
            "verdict": "false_positive", "ts": BASE_TS, "analyst": "x"}
    for field in ("verdict", "analyst", "kind", "schema_version"):
        bad = {**base, field: text * (3 if field in ("analyst", "kind") else 1)}
        with pytest.raises(CodecError) as err:
            decode_verdict(json.dumps(bad).encode(), KEYS)
        assert "reveal" not in err.value.reason and "chars" in err.value.reason, err.value.reason


def test_the_analyst_key_is_strong_and_not_an_action_key() -> None:
    with pytest.raises(ValidationError, match="also an action signing key"):
        Settings(signing_key=ACTION_KEY.decode(), analyst_key=ACTION_KEY.decode())
    with pytest.raises(ValidationError, match="also an action signing key"):
        Settings(signing_keys_previous="x," + ACTION_KEY.decode(), analyst_key=ACTION_KEY.decode())
    with pytest.raises(ValidationError, match="an analyst key cannot sign verdicts: it is 5 bytes"):
        Settings(analyst_key="short")
    with pytest.raises(ValidationError, match="development key"):
        Settings(analyst_key=EXAMPLE_KEY.decode())
    s = Settings(signing_key=ACTION_KEY.decode(), analyst_key=ANALYST_KEY.decode(),
                 analyst_keys_previous=" old-analyst-key-0123456789abcdefghij ")
    assert analyst_keys(s) == {"current": ANALYST_KEY, "previous-1": b"old-analyst-key-0123456789abcdefghij"}
    assert analyst_keys(Settings()) == {}


# ---------------------------------------------------------------------------------------- the policy


def test_a_verdict_must_name_an_alert_the_account_received() -> None:
    policy, state = Policy(CFG, ACTION_KEY), PolicyState()
    alert, _ = policy.decide(finding(MEDIUM), state)
    before = state.to_bytes()
    refused = policy.apply_verdict(verdict_on(alert, alert_id="anything"), state)
    assert refused is not None and refused.startswith("unknown_alert")
    assert state.to_bytes() == before, "a refused verdict changes nothing"
    assert policy.apply_verdict(verdict_on(alert), state) is None


def test_an_engine_refuses_a_verdict_for_an_account_without_alerts_and_keeps_no_state() -> None:
    engine = Engine(CFG)
    v = {"alert_id": "anything", "account_id": "nobody", "kind": "account_behaviour", "campaign_id": None,
         "verdict": "false_positive"}
    assert engine.on_verdict(v)[0] is not None  # type: ignore[arg-type]
    assert engine.policy_states == {}


def test_a_verdict_holds_for_its_alerts_kind_only() -> None:
    policy, state = Policy(CFG, ACTION_KEY), PolicyState()
    own, _ = policy.decide(finding(MEDIUM), state)
    assert policy.apply_verdict(verdict_on(own, kind="coordinated_campaign"), state).startswith("scope_mismatch")
    assert policy.apply_verdict(verdict_on(own), state) is None
    assert policy.decide(finding(CRITICAL, BASE_TS + 1000), state) == (None, None)  # own behaviour: silenced
    camp_alert, camp_action = policy.decide(finding(HIGH, BASE_TS + 2000, campaign_id="camp-1"), state)
    assert camp_alert is not None and camp_action["action"] == "throttle", "its campaigns are judged still"


def test_a_campaign_verdict_holds_for_that_campaign_only_and_a_true_positive_bans() -> None:
    policy, state = Policy(CFG, ACTION_KEY), PolicyState()
    alert, _ = policy.decide(finding(HIGH, campaign_id="camp-1"), state)
    assert policy.apply_verdict(verdict_on(alert, campaign_id="camp-2"), state).startswith("scope_mismatch")
    assert policy.apply_verdict(verdict_on(alert, "true_positive"), state) is None
    _, other = policy.decide(finding(CRITICAL, BASE_TS + 1000, campaign_id="camp-2"), state)
    assert other["action"] == "suspend", "another campaign's critical finding is not covered"
    _, action = policy.decide(finding(CRITICAL, BASE_TS + 2000, campaign_id="camp-1"), state)
    assert action["action"] == "ban"
    _, own = policy.decide(finding(CRITICAL, BASE_TS + 3000), state)
    assert own["action"] == "suspend", "nor is the account's own behaviour"


def test_a_verdict_expires_after_the_ttl_in_event_time() -> None:
    cfg = DetectionConfig(verdict_ttl_hours=48)
    policy, state = Policy(cfg, ACTION_KEY), PolicyState()
    alert, _ = policy.decide(finding(MEDIUM), state)
    assert policy.apply_verdict(verdict_on(alert), state) is None
    assert policy.decide(finding(HIGH, BASE_TS + 2 * DAY_MS), state) == (None, None)  # exactly the TTL: holds
    a, x = policy.decide(finding(HIGH, BASE_TS + 2 * DAY_MS + 1), state)
    assert a is not None and x is not None, "after the TTL the account is judged afresh"
    assert policy.apply_verdict(verdict_on(alert), state).startswith("expired")  # too late to name that alert


def test_policy_state_stays_bounded_and_round_trips() -> None:
    policy, state = Policy(CFG, ACTION_KEY), PolicyState()
    alerts = []
    for i in range(3 * ALERT_MEMORY):  # a new episode, and a new alert, each time
        a, _ = policy.decide(finding(MEDIUM, BASE_TS + i * 2 * CFG.episode_ms, campaign_id=f"camp-{i}"), state)
        alerts.append(a)
        assert policy.apply_verdict(verdict_on(a, "true_positive"), state) is None
    assert len(state.alerts) == ALERT_MEMORY and len(state.verdicts) <= ALERT_MEMORY
    assert policy.apply_verdict(verdict_on(alerts[0]), state).startswith("unknown_alert"), "forgotten"
    restored = PolicyState.from_bytes(state.to_bytes())
    assert restored.to_bytes() == state.to_bytes()


def test_older_policy_state_formats_read_without_their_unauthenticated_verdict() -> None:
    ladder = [BASE_TS, BASE_TS + 5, HIGH, 2]
    for old in (msgpack.packb([*ladder, "false_positive"]), msgpack.packb([ladder, ladder, "false_positive"])):
        state = PolicyState.from_bytes(old)
        assert state.own.fields() == ladder and state.verdicts == {} and state.alerts == []
        _, action = Policy(CFG, ACTION_KEY).decide(finding(CRITICAL, BASE_TS + 10), state)
        assert action is not None and action["action"] == "suspend", "the old verdict no longer silences"


# ---------------------------------------------------------------------------------------- the CLI


def test_verdict_command_signs_a_verdict_the_worker_accepts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    alert = {"schema_version": 1, "alert_id": "alr-9", "ts": BASE_TS, "account_id": "acct-9",
             "campaign_id": "camp-9", "kind": "coordinated_campaign", "severity": "high"}
    path = tmp_path / "alert.json"
    path.write_text(json.dumps(alert))
    monkeypatch.delenv("DG_ANALYST_KEY", raising=False)
    assert cli.main(["verdict", "--alert", str(path), "--verdict", "false_positive", "--analyst", "ana"]) == 2
    assert "no analyst key: set DG_ANALYST_KEY" in capsys.readouterr().err
    monkeypatch.setenv("DG_ANALYST_KEY", ANALYST_KEY.decode())
    assert cli.main(["verdict", "--alert", str(path), "--verdict", "false_positive", "--analyst", "ana",
                     "--ts", "2026-03-03T00:00:00Z"]) == 0
    v = json.loads(capsys.readouterr().out)
    assert (v["alert_id"], v["kind"], v["campaign_id"], v["ts"]) == ("alr-9", "coordinated_campaign", "camp-9",
                                                                    1772496000000)
    schemas.validate("verdict", v, version=2)
    assert decode_verdict(json.dumps(v).encode(), KEYS) == v
    assert cli.main(["verdict", "--alert-id", "alr-9", "--verdict", "true_positive", "--analyst", "ana"]) == 2
    assert "--account-id, --kind" in capsys.readouterr().err


def test_sign_covers_every_field_as_for_actions() -> None:
    v = sign_verdict({"schema_version": 2, "alert_id": "a", "extra": [1, {"b": 2}]}, ANALYST_KEY)
    assert v["signature"] == sign({k: x for k, x in v.items() if k != "signature"}, ANALYST_KEY)
