"""Policy: findings become alerts and enforcement actions, once per episode, on a severity ladder.

Scoring says how suspicious; the policy decides what to tell people and what to do:

- one alert per account per *episode* (findings with less than ``episode_ms`` of quiet between them),
  and another only when the severity rises, so a campaign does not cause an alert storm;
- an account has two such ladders, one for its own behaviour and one for its campaign memberships: each
  follows one input in its log order (the account's usage events; the findings topic), so a replay after
  a crash, which interleaves the two topics as its fetches happen to fall, emits the same ids with the
  same contents as the run before it (one shared ladder made an alert's kind, and which actions were
  sent, depend on that interleaving);
- a ladder of actions driven by the evidence: medium → ``flag_for_review``; high → ``require_verification``
  (own behaviour) or ``throttle`` (campaign member); critical → ``suspend``; an analyst's confirmed true
  positive turns critical into ``ban``;
- allow-listed accounts and organisations never get more than ``flag_for_review``;
- an analyst's verdict (authenticated by ``pipeline/contract/verdicts.py`` before it gets here) must name an alert
  the account received, one of the last ``ALERT_MEMORY`` it remembers, and holds for the alert's kind, or
  for its campaign, until ``verdict_ttl_hours`` of event time after that alert: a false positive silences
  that ladder (or campaign), a true positive turns its critical findings into ``ban``;
- actions are ``shadow`` unless the policy is in enforce mode, and every action is signed.

Ids are derived from the evidence (account, ladder, episode start, severity or action), never from time
of processing, so a replay or redelivery emits the same ids.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgpack

from pipeline.contract.models import TS_MAX_EXCLUSIVE, AnomalyAlert, EnforcementAction
from pipeline.contract.signing import sign
from pipeline.detection.config import DetectionConfig
from pipeline.detection.ids import stable_id
from pipeline.detection.messages import CRITICAL, HIGH, MEDIUM, SEVERITIES, Finding

LADDER = ("flag_for_review", "require_verification", "throttle", "suspend", "ban")
_RANK = {a: i + 1 for i, a in enumerate(LADDER)}
CAMPAIGN = "coordinated_campaign"  # a campaign member's finding (the link stage); the rest are its own
ALERT_MEMORY = 16
ALERT_SCHEMA_VERSION = 2
"""AnomalyAlert v2: v1 with each reason's contribution to the score (``schemas/anomaly_alert.v2.json``)."""
"""Alerts an account's policy state remembers (id, kind, campaign, time), newest last: a verdict must name
one of them, so verdicts for made-up ids are refused and add nothing to state."""
HOUR_MS = 3_600_000


def scope_of(kind: str, campaign_id: str | None) -> str:
    """What a verdict covers: the kind of the alert it names, or that kind in one campaign."""
    return kind if campaign_id is None else f"{kind}:{campaign_id}"


class Ladder:
    """One severity ladder of an account: the open episode and what was already said and done in it."""

    __slots__ = ("episode_start", "last_ts", "severity", "action")

    def __init__(self, episode_start: int | None = None, last_ts: int = 0, severity: int = 0,
                 action: int = 0) -> None:
        self.episode_start, self.last_ts, self.severity, self.action = episode_start, last_ts, severity, action

    def fields(self) -> list[Any]:
        return [self.episode_start, self.last_ts, self.severity, self.action]


class PolicyState:
    """Per-account policy memory: a ladder for its own behaviour, one for campaigns, the alerts it received
    lately, and the verdicts that hold, by scope (:func:`scope_of`)."""

    __slots__ = ("own", "campaign", "alerts", "verdicts")

    def __init__(self) -> None:
        self.own = Ladder()
        self.campaign = Ladder()
        self.alerts: list[list[Any]] = []  # [alert_id, kind, campaign_id, ts], oldest first, ALERT_MEMORY at most
        self.verdicts: dict[str, list[Any]] = {}  # scope -> [verdict, holds until ts, alert_id]

    def ladder(self, f: Finding) -> Ladder:
        return self.campaign if f.kind == CAMPAIGN else self.own

    def remember(self, alert: Mapping[str, Any]) -> None:
        """Record an alert the account received (a verdict may name it)."""
        self.alerts.append([alert["alert_id"], alert["kind"], alert["campaign_id"], alert["ts"]])
        del self.alerts[:-ALERT_MEMORY]

    def verdict_for(self, f: Finding) -> str | None:
        """The verdict that holds for ``f``'s kind or campaign at its time, if any."""
        v = self.verdicts.get(scope_of(f.kind, f.campaign_id))
        return v[0] if v is not None and f.ts <= v[1] else None

    def to_bytes(self) -> bytes:
        return msgpack.packb([self.own.fields(), self.campaign.fields(), self.alerts, self.verdicts])

    @classmethod
    def from_bytes(cls, raw: bytes) -> PolicyState:
        """Reads every format written so far. The verdict of an older format (Verdict v1, unauthenticated,
        covering the whole account) is dropped: re-issue it as a signed Verdict v2."""
        s = cls()
        fields = msgpack.unpackb(raw)
        if len(fields) == 5:  # written by dg-policy-1.0, one ladder for both: it stands for each
            s.own, s.campaign = Ladder(*fields[:4]), Ladder(*fields[:4])
        elif len(fields) == 3:  # two ladders and a v1 verdict
            s.own, s.campaign = Ladder(*fields[0]), Ladder(*fields[1])
        else:
            own, campaign, s.alerts, s.verdicts = fields
            s.own, s.campaign = Ladder(*own), Ladder(*campaign)
        return s


class Policy:
    def __init__(self, cfg: DetectionConfig, signing_key: bytes) -> None:
        self.cfg = cfg
        self.key = signing_key
        self.policy_version = cfg.versioned_policy()  # the name and the digest of the configuration

    def action_for(self, f: Finding, state: PolicyState) -> str | None:
        if f.severity >= CRITICAL:
            action = "ban" if state.verdict_for(f) == "true_positive" else "suspend"
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
        """Apply one finding to its ladder of the account's policy state; return the alert and action to
        emit, if any."""
        if state.verdict_for(f) == "false_positive":
            return None, None
        ladder = state.ladder(f)
        if ladder.episode_start is None or f.ts - ladder.last_ts > self.cfg.episode_ms:
            ladder.episode_start, ladder.severity, ladder.action = f.ts, 0, 0
        ladder.last_ts = max(ladder.last_ts, f.ts)
        alert = action = None
        if f.severity > ladder.severity:
            ladder.severity = f.severity
            alert = self.alert(f, ladder)
            state.remember(alert)
        name = self.action_for(f, state)
        if name is not None and _RANK[name] > ladder.action:
            ladder.action = _RANK[name]
            action = self.action(f, ladder, name, [alert["alert_id"]] if alert else [self.alert_id(f, ladder)])
        return alert, action

    def apply_verdict(self, v: Mapping[str, Any], state: PolicyState) -> str | None:
        """Apply an authenticated verdict to the account's state; the reason it is refused (``state``
        unchanged), or None. It must name an alert the account received, with that alert's kind and
        campaign, and arrive before it expires (``verdict_ttl_hours`` after the alert, in event time: the
        account's latest finding is the clock)."""
        named = next((a for a in reversed(state.alerts) if a[0] == v["alert_id"]), None)
        if named is None:
            return (f"unknown_alert: the account received no such alert among its last {ALERT_MEMORY} "
                    "(a verdict names one of the account's own alerts)")
        alert_id, kind, campaign_id, ts = named
        if v["kind"] != kind or v["campaign_id"] != campaign_id:
            return (f"scope_mismatch: the alert is of kind {kind}" + (" in a campaign" if campaign_id else "")
                    + "; the verdict names another kind or campaign")
        until = ts + int(self.cfg.verdict_ttl_hours * HOUR_MS)
        now = max(state.own.last_ts, state.campaign.last_ts)
        if now > until:
            return f"expired: a verdict holds for {self.cfg.verdict_ttl_hours:g} hours after the alert it names"
        verdicts = {scope: x for scope, x in state.verdicts.items() if x[1] >= now}
        verdicts[scope_of(kind, campaign_id)] = [v["verdict"], until, alert_id]
        while len(verdicts) > ALERT_MEMORY:  # bounded: the one that ends first goes
            del verdicts[min(verdicts, key=lambda scope: (verdicts[scope][1], scope))]
        state.verdicts = verdicts
        return None

    def lift(self, v: Mapping[str, Any], state: PolicyState, account: str) -> EnforcementAction | None:
        """After an accepted ``false_positive`` verdict: the signed lift (EnforcementAction v2) of the
        actions the account's ladder of that kind took in its episode, once (the ladder then holds no
        action, so a redelivered or repeated verdict lifts nothing more); None when nothing is active.
        Its id follows from the episode and the alert the verdict names, so a replay gives the same id."""
        if v["verdict"] != "false_positive":
            return None
        ladder = state.campaign if v["kind"] == CAMPAIGN else state.own
        if not ladder.action or ladder.episode_start is None:
            return None
        names = LADDER[:ladder.action]
        ids = [stable_id("act", self.policy_version, account, v["kind"], ladder.episode_start, n) for n in names]
        ladder.action = 0
        body: dict[str, Any] = {
            "schema_version": 2,
            "action_id": stable_id("lift", self.policy_version, account, v["kind"], ladder.episode_start,
                                   v["alert_id"]),
            "ts": min(max(ladder.last_ts, 1), TS_MAX_EXCLUSIVE - 1),
            "account_id": account,
            "action": "lift",
            "mode": "shadow" if self.cfg.shadow else "enforce",
            "reason_codes": ["analyst_false_positive"],
            "alert_ids": [v["alert_id"]],
            "lifts": ids,
            "expires_ts": None,
            "policy_version": self.policy_version,
        }
        body["signature"] = sign(body, self.key)
        return body  # type: ignore[return-value]

    def alert_id(self, f: Finding, ladder: Ladder) -> str:
        return stable_id("alr", self.cfg.detector_version, f.account, f.kind, ladder.episode_start,
                         ladder.severity)

    def alert(self, f: Finding, ladder: Ladder) -> AnomalyAlert:
        allow = f.account in self.cfg.allowlist_accounts or (f.org is not None and f.org in self.cfg.allowlist_orgs)
        reasons = list(f.reasons)
        if allow:
            reasons.append({"code": "allowlisted", "detail": "account or organisation is allow-listed: "
                            "review only, no enforcement", "value": None, "baseline": None, "contribution": None})
        return self._versioned({
            "schema_version": ALERT_SCHEMA_VERSION,
            "alert_id": self.alert_id(f, ladder),
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
        })

    def _versioned(self, alert: AnomalyAlert) -> AnomalyAlert:
        """``alert`` as the configured version: v2 as built, or v1 (its reasons without contributions)."""
        if self.cfg.alert_schema_version == 1:
            alert["schema_version"] = 1
            alert["reasons"] = [{k: v for k, v in r.items() if k != "contribution"}  # type: ignore[misc]
                                for r in alert["reasons"]]
        return alert

    def action(self, f: Finding, ladder: Ladder, name: str, alert_ids: list[str]) -> EnforcementAction:
        body: dict[str, Any] = {
            "schema_version": 1,
            "action_id": stable_id("act", self.policy_version, f.account, f.kind, ladder.episode_start, name),
            "ts": f.ts,
            "account_id": f.account,
            "action": name,
            "mode": "shadow" if self.cfg.shadow else "enforce",
            "reason_codes": sorted({r["code"] for r in f.reasons}),
            "alert_ids": alert_ids,
            # within the schema's bound whatever the finding's time (the worker bounds it by broker time)
            "expires_ts": None if name == "ban" else min(f.ts + self.cfg.action_ttl_ms, TS_MAX_EXCLUSIVE - 1),
            "policy_version": self.policy_version,
        }
        body["signature"] = sign(body, self.key)
        return body  # type: ignore[return-value]

    def campaign_alert(self, campaign_id: str, ts: int, c: dict[str, Any]) -> AnomalyAlert:
        """The campaign-level alert (no account, the named members in ``related_accounts``)."""
        return self._versioned({
            "schema_version": ALERT_SCHEMA_VERSION,
            "alert_id": stable_id("alr", self.cfg.detector_version, campaign_id, c["episode_ts"], c["severity"],
                                  c["members"]),
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
        })
