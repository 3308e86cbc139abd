"""Policy (``pipeline.detection.policy``): findings become alerts and signed actions on a severity ladder."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.contract import schemas
from pipeline.contract.models import Reason
from pipeline.contract.signing import verify
from pipeline.detection.config import DAY_MS, DetectionConfig
from pipeline.detection.messages import CRITICAL, HIGH, LOW, MEDIUM, Finding
from pipeline.detection.policy import Policy, PolicyState
from tests.factories import BASE_TS

KEY = b"policy-test-key"
CFG = DetectionConfig()
REASON: Reason = {"code": "reasoning_elicitation", "detail": "90% of requests ask for reasoning traces",
                  "value": 0.9, "baseline": None, "contribution": 0.5}


def finding(severity: int, ts: int = BASE_TS, account: str = "acct-1", **kw: Any) -> Finding:
    return Finding(account, ts, kw.pop("kind", "account_behaviour"), severity, kw.pop("score", 0.7),
                   kw.pop("reasons", (REASON,)), window_start_ts=ts - DAY_MS, window_events=120, **kw)


def decide(f: Finding, state: PolicyState | None = None, cfg: DetectionConfig = CFG) -> tuple[Any, Any]:
    return Policy(cfg, KEY).decide(f, state if state is not None else PolicyState())


def action_name(f: Finding, state: PolicyState | None = None, cfg: DetectionConfig = CFG) -> str | None:
    _, action = decide(f, state, cfg)
    return None if action is None else action["action"]


# ---------------------------------------------------------------------------------------- the ladder


def test_medium_flags_for_review() -> None:
    assert action_name(finding(MEDIUM)) == "flag_for_review"


def test_high_own_behaviour_requires_verification() -> None:
    assert action_name(finding(HIGH)) == "require_verification"


def test_high_campaign_member_is_throttled() -> None:
    f = finding(HIGH, kind="coordinated_campaign", campaign_id="camp-1")
    assert action_name(f) == "throttle"


def test_critical_suspends() -> None:
    assert action_name(finding(CRITICAL)) == "suspend"


def judged(state: PolicyState, verdict: str, f: Finding | None = None) -> PolicyState:
    """``state`` after an alert on ``f`` (medium, own behaviour by default) and a verdict on that alert."""
    policy = Policy(CFG, KEY)
    f = f or finding(MEDIUM)
    alert, _ = policy.decide(f, state)
    alert = alert or {"alert_id": policy.alert_id(f, state.ladder(f)), "kind": f.kind, "campaign_id": f.campaign_id}
    assert policy.apply_verdict({**alert, "verdict": verdict}, state) is None
    return state


def test_critical_after_a_true_positive_verdict_bans() -> None:
    state = judged(PolicyState(), "true_positive")
    _, action = decide(finding(CRITICAL), state)
    assert action["action"] == "ban"
    assert action["expires_ts"] is None  # a ban does not expire


def test_true_positive_verdict_escalates_a_suspended_account_to_ban() -> None:
    policy, state = Policy(CFG, KEY), PolicyState()
    _, first = policy.decide(finding(CRITICAL), state)
    judged(state, "true_positive", finding(CRITICAL))
    alert, second = policy.decide(finding(CRITICAL, BASE_TS + 60_000), state)
    assert first is not None and second is not None
    assert first["action"] == "suspend" and second["action"] == "ban"
    assert alert is None  # the severity did not rise
    assert second["alert_ids"] == [first["alert_ids"][0]]


def test_low_alerts_without_an_action() -> None:
    alert, action = decide(finding(LOW))
    assert alert["severity"] == "low" and action is None


def test_actions_expire_after_the_ttl() -> None:
    _, action = decide(finding(HIGH))
    assert action["expires_ts"] == BASE_TS + CFG.action_ttl_ms


# ---------------------------------------------------------------------------------------- episodes


def test_one_alert_per_episode_unless_severity_rises() -> None:
    policy, state = Policy(CFG, KEY), PolicyState()
    out = [policy.decide(finding(sev, BASE_TS + i * 60_000), state)
           for i, sev in enumerate([MEDIUM, MEDIUM, HIGH, HIGH, MEDIUM, CRITICAL, CRITICAL])]
    alerts = [a["severity"] if a else None for a, _ in out]
    actions = [x["action"] if x else None for _, x in out]
    assert alerts == ["medium", None, "high", None, None, "critical", None]
    assert actions == ["flag_for_review", None, "require_verification", None, None, "suspend", None]
    assert len({a["alert_id"] for a, _ in out if a}) == 3


def test_a_new_episode_starts_after_episode_ms_of_quiet() -> None:
    policy, state = Policy(CFG, KEY), PolicyState()
    a1, _ = policy.decide(finding(HIGH), state)
    a2, _ = policy.decide(finding(HIGH, BASE_TS + CFG.episode_ms), state)  # exactly episode_ms: same episode
    a3, x3 = policy.decide(finding(HIGH, BASE_TS + 2 * CFG.episode_ms + 1), state)
    assert a1 is not None and a2 is None
    assert a3 is not None and x3 is not None and x3["action"] == "require_verification"
    assert state.own.episode_start == BASE_TS + 2 * CFG.episode_ms + 1
    assert a3["alert_id"] != a1["alert_id"]


def test_findings_keep_an_episode_open() -> None:
    """Quiet is measured from the latest finding, not the first."""
    policy, state = Policy(CFG, KEY), PolicyState()
    policy.decide(finding(HIGH), state)
    for day in range(1, 20):
        alert, action = policy.decide(finding(HIGH, BASE_TS + day * DAY_MS), state)
        assert alert is None and action is None
    assert state.own.episode_start == BASE_TS


def test_false_positive_verdict_silences_the_account_until_it_expires() -> None:
    state = judged(PolicyState(), "false_positive")
    assert decide(finding(CRITICAL), state) == (None, None)
    assert decide(finding(CRITICAL, BASE_TS + 30 * DAY_MS), state) == (None, None)
    assert decide(finding(CRITICAL, BASE_TS + 30 * DAY_MS + 1), state) != (None, None)


def campaign_finding(severity: int, ts: int = BASE_TS, **kw: Any) -> Finding:
    return finding(severity, ts, kind="coordinated_campaign", campaign_id="camp-1", **kw)


def test_own_and_campaign_findings_climb_ladders_of_their_own() -> None:
    policy, state = Policy(CFG, KEY), PolicyState()
    a1, x1 = policy.decide(campaign_finding(HIGH), state)
    a2, x2 = policy.decide(finding(HIGH, BASE_TS + 1000), state)
    assert a1 is not None and a2 is not None and x1 is not None and x2 is not None
    assert (a1["kind"], x1["action"]) == ("coordinated_campaign", "throttle")
    assert (a2["kind"], x2["action"]) == ("account_behaviour", "require_verification")
    assert a1["alert_id"] != a2["alert_id"] and x1["action_id"] != x2["action_id"]


def test_a_verdict_covers_the_ladder_of_its_alert_only() -> None:
    state = judged(PolicyState(), "false_positive", campaign_finding(MEDIUM))
    assert decide(campaign_finding(CRITICAL), state) == (None, None)
    assert action_name(finding(CRITICAL), state) == "suspend"
    state = judged(PolicyState(), "true_positive", campaign_finding(MEDIUM))
    assert action_name(campaign_finding(CRITICAL), state) == "ban"


SEVERITY_STEPS = st.lists(st.tuples(st.sampled_from([LOW, MEDIUM, HIGH, CRITICAL]),
                                    st.integers(0, 9 * DAY_MS)), max_size=8)


@given(own=SEVERITY_STEPS, campaign=SEVERITY_STEPS, order=st.randoms(use_true_random=False))
def test_outputs_do_not_depend_on_how_the_two_inputs_interleave(own: list[tuple[int, int]],
                                                               campaign: list[tuple[int, int]],
                                                               order: Any) -> None:
    """The account stage reads its own events and the findings topic as two inputs, which a replay after a
    crash interleaves as its fetches fall: each id must come back with the same content, whatever the
    interleaving (each input keeps its own order)."""
    def stream(steps: list[tuple[int, int]], make: Any) -> list[Finding]:
        ts, out = BASE_TS, []
        for sev, gap in steps:
            ts += gap
            out.append(make(sev, ts))
        return out

    own_f, camp_f = stream(own, finding), stream(campaign, campaign_finding)
    merged, i, j = [], 0, 0
    while i < len(own_f) or j < len(camp_f):
        if j == len(camp_f) or (i < len(own_f) and order.random() < 0.5):
            merged.append(own_f[i])
            i += 1
        else:
            merged.append(camp_f[j])
            j += 1

    def outputs(findings: list[Finding]) -> dict[str, Any]:
        policy, state = Policy(CFG, KEY), PolicyState()
        sent: dict[str, Any] = {}
        for f in findings:
            for out in policy.decide(f, state):
                if out is not None:
                    key = out.get("action_id") or out["alert_id"]
                    assert sent.setdefault(key, out) == out, f"{key} sent twice with different contents"
        return sent

    assert outputs(merged) == outputs(own_f + camp_f)


# ---------------------------------------------------------------------------------------- allow-lists


@pytest.mark.parametrize("cfg,f", [
    (DetectionConfig(allowlist_accounts=frozenset({"acct-1"})), finding(CRITICAL)),
    (DetectionConfig(allowlist_orgs=frozenset({"org-acme"})), finding(CRITICAL, org="org-acme")),
    (DetectionConfig(allowlist_orgs=frozenset({"org-acme"})),
     finding(HIGH, org="org-acme", kind="coordinated_campaign", campaign_id="camp-1")),
], ids=["account", "org", "org-campaign-member"])
def test_allow_listed_accounts_are_capped_at_review(cfg: DetectionConfig, f: Finding) -> None:
    alert, action = decide(f, cfg=cfg)
    assert action["action"] == "flag_for_review"
    assert alert["reasons"][-1]["code"] == "allowlisted"
    assert alert["severity"] == ("critical" if f.severity == CRITICAL else "high")  # the alert still tells


def test_an_allow_listed_org_does_not_cover_other_orgs() -> None:
    cfg = DetectionConfig(allowlist_orgs=frozenset({"org-acme"}))
    alert, action = decide(finding(CRITICAL, org="org-other"), cfg=cfg)
    assert action["action"] == "suspend"
    assert "allowlisted" not in {r["code"] for r in alert["reasons"]}


# ---------------------------------------------------------------------------------------- modes, ids, contract


def test_shadow_is_the_default() -> None:
    assert CFG.shadow
    _, action = decide(finding(HIGH))
    assert action["mode"] == "shadow"


def test_enforce_mode_marks_actions_enforce() -> None:
    _, action = decide(finding(HIGH), cfg=DetectionConfig(shadow=False))
    assert action["mode"] == "enforce"


def run_sequence() -> list[tuple[Any, Any]]:
    policy, states = Policy(CFG, KEY), {"acct-1": PolicyState(), "acct-2": PolicyState()}
    seq = [finding(MEDIUM), finding(HIGH, account="acct-2", kind="coordinated_campaign", campaign_id="c"),
           finding(HIGH, BASE_TS + 1000), finding(CRITICAL, BASE_TS + 2000),
           finding(HIGH, BASE_TS + 20 * DAY_MS)]
    return [policy.decide(f, states[f.account]) for f in seq]


def test_ids_are_deterministic_across_fresh_policies() -> None:
    a, b = run_sequence(), run_sequence()
    ids_a = [(x and x["alert_id"], y and y["action_id"]) for x, y in a]
    ids_b = [(x and x["alert_id"], y and y["action_id"]) for x, y in b]
    assert ids_a == ids_b
    assert a == b  # everything else too, signatures included
    all_ids = [i for pair in ids_a for i in pair if i]
    assert len(all_ids) == len(set(all_ids))


def test_an_action_names_the_alert_that_caused_it() -> None:
    alert, action = decide(finding(HIGH))
    assert action["alert_ids"] == [alert["alert_id"]]


def test_every_alert_and_action_validates_against_the_schema() -> None:
    outputs = run_sequence()
    cfg = DetectionConfig(allowlist_accounts=frozenset({"acct-1"}), shadow=False)
    outputs += [decide(finding(CRITICAL), cfg=cfg), decide(finding(LOW))]
    alerts = [a for a, _ in outputs if a]
    actions = [x for _, x in outputs if x]
    assert len(alerts) >= 5 and len(actions) >= 5
    for a in alerts:
        schemas.validator("anomaly_alert", 2).validate(a)
    for x in actions:
        schemas.validator("enforcement_action").validate(x)


def test_campaign_alert_validates_and_has_a_deterministic_id() -> None:
    c = {"severity": HIGH, "score": 0.42, "reasons": [REASON], "related": ["acct-1", "acct-2"],
         "window_start_ts": BASE_TS, "members": 6, "episode_ts": BASE_TS}
    a = Policy(CFG, KEY).campaign_alert("camp-1", BASE_TS + 5, c)
    schemas.validator("anomaly_alert", 2).validate(a)
    assert a["account_id"] is None and a["related_accounts"] == ["acct-1", "acct-2"]
    assert a["alert_id"] == Policy(CFG, KEY).campaign_alert("camp-1", BASE_TS + 999, c)["alert_id"]


def test_action_signature_verifies_and_fails_after_tampering() -> None:
    _, action = decide(finding(CRITICAL))
    assert verify(action, KEY)
    assert not verify(action, b"another-key")
    assert not verify({**action, "action": "ban"}, KEY)
    assert not verify({**action, "mode": "enforce"}, KEY)
    assert not verify({**action, "expires_ts": action["expires_ts"] + 1}, KEY)


def test_policy_state_round_trips() -> None:
    policy, state = Policy(CFG, KEY), PolicyState()
    judged(state, "true_positive", finding(HIGH))
    restored = PolicyState.from_bytes(state.to_bytes())
    assert restored.to_bytes() == state.to_bytes()
    assert policy.decide(finding(CRITICAL, BASE_TS + 1), restored) == policy.decide(
        finding(CRITICAL, BASE_TS + 1), state)


def test_policy_state_of_the_one_ladder_format_is_read_as_both_ladders() -> None:
    """State written by dg-policy-1.0 (one ladder) still reads: what was said stands for each ladder, so
    an upgraded worker does not alert again on an open episode."""
    old = msgpack.packb([BASE_TS, BASE_TS + 5, HIGH, 2, None])
    state = PolicyState.from_bytes(old)
    assert state.own.fields() == state.campaign.fields() == [BASE_TS, BASE_TS + 5, HIGH, 2]
    assert decide(finding(HIGH, BASE_TS + 10), state) == (None, None)
    assert decide(campaign_finding(HIGH, BASE_TS + 10), state)[0] is None
