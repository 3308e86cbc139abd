"""Policy: findings become alerts and enforcement actions, once per episode, on a severity ladder.

Scoring says how suspicious; the policy decides what to tell people and what to do:

- one alert per account per *episode* (findings with less than ``episode_ms`` of quiet between them),
  and another only when the severity rises, so a campaign does not cause an alert storm;
- a ladder of actions driven by the evidence: medium → ``flag_for_review``; high → ``require_verification``
  (own behaviour) or ``throttle`` (campaign member); critical → ``suspend``; an analyst's confirmed true
  positive turns critical into ``ban``;
- allow-listed accounts and organisations never get more than ``flag_for_review``; an analyst's false
  positive verdict silences the account;
- actions are ``shadow`` unless the policy is in enforce mode, and every action is signed.

Ids are derived from the evidence (account, episode start, severity or action), never from time of
processing, so a replay or redelivery emits the same ids.
"""

from __future__ import annotations

from typing import Any

import msgpack

from pipeline.detection.config import DetectionConfig
from pipeline.detection.ids import stable_id
from pipeline.detection.messages import CRITICAL, HIGH, MEDIUM, SEVERITIES, Finding
from pipeline.models import AnomalyAlert, EnforcementAction
from pipeline.signing import sign

LADDER = ("flag_for_review", "require_verification", "throttle", "suspend", "ban")
_RANK = {a: i + 1 for i, a in enumerate(LADDER)}


class PolicyState:
    """Per-account policy memory: the open episode, what was already said and done, verdicts."""

    __slots__ = ("episode_start", "last_ts", "severity", "action", "verdict")

    def __init__(self) -> None:
        self.episode_start: int | None = None
        self.last_ts = 0
        self.severity = 0
        self.action = 0
        self.verdict: str | None = None

    def to_bytes(self) -> bytes:
        return msgpack.packb([self.episode_start, self.last_ts, self.severity, self.action, self.verdict])

    @classmethod
    def from_bytes(cls, raw: bytes) -> PolicyState:
        s = cls()
        s.episode_start, s.last_ts, s.severity, s.action, s.verdict = msgpack.unpackb(raw)
        return s


class Policy:
    def __init__(self, cfg: DetectionConfig, signing_key: bytes) -> None:
        self.cfg = cfg
        self.key = signing_key

    def action_for(self, f: Finding, state: PolicyState) -> str | None:
        if f.severity >= CRITICAL:
            action = "ban" if state.verdict == "true_positive" else "suspend"
        elif f.severity >= HIGH:
            action = "throttle" if f.campaign_id else "require_verification"
        elif f.severity >= MEDIUM:
            action = "flag_for_review"
        else:
            return None
        if f.account in self.cfg.allowlist_accounts or (f.org is not None and f.org in self.cfg.allowlist_orgs):
            action = "flag_for_review"
        return action

    def decide(self, f: Finding, state: PolicyState) -> tuple[AnomalyAlert | None, EnforcementAction | None]:
        """Apply one finding to the account's policy state; return the alert and action to emit, if any."""
        if state.verdict == "false_positive":
            return None, None
        if state.episode_start is None or f.ts - state.last_ts > self.cfg.episode_ms:
            state.episode_start, state.severity, state.action = f.ts, 0, 0
        state.last_ts = max(state.last_ts, f.ts)
        alert = action = None
        if f.severity > state.severity:
            state.severity = f.severity
            alert = self.alert(f, state)
        name = self.action_for(f, state)
        if name is not None and _RANK[name] > state.action:
            state.action = _RANK[name]
            action = self.action(f, state, name, [alert["alert_id"]] if alert else [self.alert_id(f, state)])
        return alert, action

    def alert_id(self, f: Finding, state: PolicyState) -> str:
        return stable_id("alr", self.cfg.detector_version, f.account, state.episode_start, state.severity)

    def alert(self, f: Finding, state: PolicyState) -> AnomalyAlert:
        allow = f.account in self.cfg.allowlist_accounts or (f.org is not None and f.org in self.cfg.allowlist_orgs)
        reasons = list(f.reasons)
        if allow:
            reasons.append({"code": "allowlisted", "detail": "account or organisation is allow-listed: "
                            "review only, no enforcement", "value": None, "baseline": None})
        return {
            "schema_version": 1,
            "alert_id": self.alert_id(f, state),
            "ts": f.ts,
            "account_id": f.account,
            "campaign_id": f.campaign_id,
            "kind": f.kind,
            "score": min(max(float(f.score), 0.0), 1.0),
            "severity": SEVERITIES[f.severity],
            "reasons": reasons,
            "related_accounts": list(f.related)[:1000],
            "window_start_ts": f.window_start_ts,
            "window_events": f.window_events,
            "detector_version": self.cfg.detector_version,
        }

    def action(self, f: Finding, state: PolicyState, name: str, alert_ids: list[str]) -> EnforcementAction:
        body: dict[str, Any] = {
            "schema_version": 1,
            "action_id": stable_id("act", self.cfg.policy_version, f.account, state.episode_start, name),
            "ts": f.ts,
            "account_id": f.account,
            "action": name,
            "mode": "shadow" if self.cfg.shadow else "enforce",
            "reason_codes": sorted({r["code"] for r in f.reasons}),
            "alert_ids": alert_ids,
            "expires_ts": None if name == "ban" else f.ts + self.cfg.action_ttl_ms,
            "policy_version": self.cfg.policy_version,
        }
        body["signature"] = sign(body, self.key)
        return body  # type: ignore[return-value]

    def campaign_alert(self, campaign_id: str, ts: int, c: dict[str, Any]) -> AnomalyAlert:
        """The campaign-level alert (no account, the named members in ``related_accounts``)."""
        return {
            "schema_version": 1,
            "alert_id": stable_id("alr", self.cfg.detector_version, campaign_id, c["severity"], len(c["related"])),
            "ts": ts,
            "account_id": None,
            "campaign_id": campaign_id,
            "kind": "coordinated_campaign",
            "score": min(max(float(c["score"]), 0.0), 1.0),
            "severity": SEVERITIES[c["severity"]],
            "reasons": c["reasons"],
            "related_accounts": c["related"],
            "window_start_ts": c["window_start_ts"],
            "window_events": None,
            "detector_version": self.cfg.detector_version,
        }
