"""Backtest scoring against labels: recall, false-positive rate, precision and detection delay.

Definitions (pinned by tests):
- An account is *flagged* when an alert of severity ``high`` or ``critical`` names it (as ``account_id``
  or in ``related_accounts``), or an enforcement action other than ``flag_for_review`` does. Its flag time
  is the first such message, in arrival order.
- Campaign recall: campaigns with at least one flagged member / campaigns. Account recall: flagged
  distillation accounts / distillation accounts. Benign false-positive rate: flagged benign accounts /
  benign accounts. Precision: flagged distillation accounts / all flagged accounts (a flagged account
  missing from the labels counts against precision).
- Detection delay of a campaign: the share of the campaign's events that arrived before its first flagged
  member was flagged (1.0 if never), and the event-time minutes from its first event to that flag.
- An account is *reviewed* when any alert names it (any severity) or any enforcement action names it
  (``flag_for_review`` included): it costs an analyst a look. Benign review load: reviewed benign
  accounts / benign accounts. Every flagged account is also reviewed.
- Per population (given a mapping account -> population name): accounts seen, flagged, reviewed, and
  the population's label (``distillation`` if any member is, else ``benign``).
- Per tier: an account's tier is the first non-null ``account_tier`` of its events.
- Score per account: the highest alert score that named it (0 when none); the threshold curve flags an
  account when that score reaches the threshold.
- Campaign ids of a labelled campaign: the detected campaign ids on alerts that name its members, where
  ids a campaign alert ties together (its ``related_accounts`` were named under them before: a merge)
  count as one; 1 when the campaign is seen as one entity, 0 when never named in a campaign. Campaigns
  conflated: detected campaigns that named members of two or more labelled campaigns.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from statistics import median
from typing import Any

from pipeline.contract.manifest import ACTIONS, ALERTS

FLAG_SEVERITIES = frozenset({"high", "critical"})
REVIEW_ONLY = "flag_for_review"
THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(21))


def flagged_accounts(topic: str, value: Mapping[str, Any]) -> list[str]:
    """The accounts a single output message flags under the definition above (often none)."""
    if topic == ALERTS:
        if value.get("severity") not in FLAG_SEVERITIES:
            return []
        named = [value["account_id"]] if value.get("account_id") else []
        return named + list(value.get("related_accounts") or [])
    if topic == ACTIONS and value.get("action") != REVIEW_ONLY:
        return [value["account_id"]]
    return []


def reviewed_accounts(topic: str, value: Mapping[str, Any]) -> list[str]:
    """Every account an alert (any severity) or an enforcement action (any kind) names."""
    if topic == ACTIONS:
        return [value["account_id"]]
    return scored_accounts(topic, value)


def scored_accounts(topic: str, value: Mapping[str, Any]) -> list[str]:
    """Every account an alert names, flagging or not (for score distributions)."""
    if topic != ALERTS:
        return []
    named = [value["account_id"]] if value.get("account_id") else []
    return named + list(value.get("related_accounts") or [])


@dataclass
class Evaluation:
    """Accumulates what a run saw (events, outputs) so it can be scored against labels afterwards."""

    labels: Mapping[str, tuple[str, str | None]]
    population: Mapping[str, str] | None = None
    n_events: int = 0
    account_events: Counter[str] = field(default_factory=Counter)
    account_tier: dict[str, str] = field(default_factory=dict)
    campaign_events: Counter[str] = field(default_factory=Counter)
    campaign_first_ts: dict[str, int] = field(default_factory=dict)
    # account -> (arrival index, ts, campaign events seen so far for its campaign)
    first_flag: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    max_score: dict[str, float] = field(default_factory=dict)
    campaign_first_flag: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    flag_timeline: list[tuple[int, str, str | None]] = field(default_factory=list)
    reviewed: set[str] = field(default_factory=set)
    # detected campaign ids: account -> ids it was named under; id -> the id it merged into (union-find)
    account_campaigns: dict[str, set[str]] = field(default_factory=dict)
    campaign_parent: dict[str, str] = field(default_factory=dict)
    # account -> reason codes of the output that first flagged it (what an analyst reads first)
    flag_reasons: dict[str, list[str]] = field(default_factory=dict)
    # account -> highest account-level harvest score at any window update (``Engine.observe_score``)
    harvest: dict[str, float] = field(default_factory=dict)

    def observe_score(self, account: str, score: float) -> None:
        """An account's harvest score at a window update, alerting or not."""
        if score > self.harvest.get(account, -1.0):
            self.harvest[account] = score

    def observe_event(self, event: Mapping[str, Any]) -> None:
        acc = event["account_id"]
        self.n_events += 1
        self.account_events[acc] += 1
        if acc not in self.account_tier and event.get("account_tier"):
            self.account_tier[acc] = event["account_tier"]
        camp = self.labels.get(acc, ("benign", None))[1]
        if camp is not None:
            self.campaign_events[camp] += 1
            self.campaign_first_ts.setdefault(camp, event["ts"])

    def _root(self, cid: str) -> str:
        parent = self.campaign_parent
        while parent.get(cid, cid) != cid:
            cid = parent[cid]
        return cid

    def _observe_campaign(self, value: Mapping[str, Any]) -> None:
        cid = value.get("campaign_id")
        if not cid:
            return
        named = [value["account_id"]] if value.get("account_id") else list(value.get("related_accounts") or [])
        root = self._root(cid)
        for acc in named:
            ids = self.account_campaigns.setdefault(acc, set())
            if not value.get("account_id"):  # a campaign alert ties its members' earlier ids to its own
                for other in ids:
                    r = self._root(other)
                    if r != root:
                        self.campaign_parent[r] = root
            ids.add(cid)

    def accounts(self) -> dict[str, list[dict[str, Any]]]:
        """The accounts behind the figures, for a reviewer: every flagged account (label, campaign, the
        reason codes of its first flag, the detected campaign ids it was named under, after merges), and
        the distillation accounts never flagged."""
        def campaigns(acc: str) -> list[str]:
            return sorted({self._root(c) for c in self.account_campaigns.get(acc, ())})

        flagged = [{"account_id": a, "label": self.labels.get(a, ("unlabelled", None))[0],
                    "campaign": self.labels.get(a, ("", None))[1], "reasons": self.flag_reasons.get(a, []),
                    "detected_campaigns": campaigns(a), "events": self.account_events[a]}
                   for a in sorted(self.first_flag)]
        missed = [{"account_id": a, "campaign": camp, "events": self.account_events[a],
                   "max_alert_score": round(self.max_score.get(a, 0.0), 4), "detected_campaigns": campaigns(a)}
                  for a, (lab, camp) in sorted(self.labels.items())
                  if lab == "distillation" and a in self.account_events and a not in self.first_flag]
        return {"flagged": flagged, "missed": missed}

    def campaign_ids(self, members: Iterable[str]) -> int:
        """Distinct detected campaigns (after merges) that named any of ``members``."""
        return len({self._root(c) for a in members for c in self.account_campaigns.get(a, ())})

    def campaigns_conflated(self) -> int:
        """Detected campaigns (after merges) that named accounts of two or more labelled campaigns."""
        labelled: dict[str, set[str]] = {}
        for acc, ids in self.account_campaigns.items():
            camp = self.labels.get(acc, ("benign", None))[1]
            if camp is not None:
                for c in ids:
                    labelled.setdefault(self._root(c), set()).add(camp)
        return sum(len(v) > 1 for v in labelled.values())

    def observe_output(self, topic: str, value: Mapping[str, Any]) -> None:
        ts = int(value["ts"])
        if topic == ALERTS:
            self._observe_campaign(value)
        self.reviewed.update(reviewed_accounts(topic, value))
        for acc in scored_accounts(topic, value):
            score = float(value.get("score", 0.0))
            if score > self.max_score.get(acc, -1.0):
                self.max_score[acc] = score
        for acc in flagged_accounts(topic, value):
            if acc in self.first_flag:
                continue
            camp = self.labels.get(acc, ("benign", None))[1]
            seen = self.campaign_events[camp] if camp is not None else 0
            self.first_flag[acc] = (self.n_events, ts, seen)
            self.flag_reasons[acc] = ([r["code"] for r in value.get("reasons") or []] if topic == ALERTS
                                      else list(value.get("reason_codes") or []))
            self.flag_timeline.append((ts, acc, camp))
            if camp is not None and camp not in self.campaign_first_flag:
                self.campaign_first_flag[camp] = (self.n_events, ts, seen)

    def compute(self) -> dict[str, Any]:
        """The metrics as a JSON-ready dict (see the module docstring for the definitions)."""
        seen = set(self.account_events)
        labelled = {a: lab for a, lab in self.labels.items() if a in seen}
        distill = {a for a, (lab, _) in labelled.items() if lab == "distillation"}
        benign = {a for a, (lab, _) in labelled.items() if lab == "benign"}
        flagged = set(self.first_flag)
        campaigns: dict[str, list[str]] = {}
        for a, (lab, camp) in labelled.items():
            if lab == "distillation" and camp is not None:
                campaigns.setdefault(camp, []).append(a)

        per_campaign = self.per_campaign(campaigns, flagged)
        found = [c for c in per_campaign.values() if c["found"]]
        tp = len(flagged & distill)
        per_tier = self.per_tier(labelled, distill, benign, flagged)
        reviewed = self.reviewed | flagged
        extra = {"per_population": self.per_population(labelled, flagged, reviewed)} if self.population else {}
        return {
            "events": self.n_events,
            "accounts": len(seen),
            "distillation_accounts": len(distill),
            "benign_accounts": len(benign),
            "unlabelled_accounts": len(seen - set(labelled)),
            "campaigns": len(campaigns),
            "campaigns_found": len(found),
            "campaign_recall": _ratio(len(found), len(campaigns)),
            "account_recall": _ratio(tp, len(distill)),
            "benign_false_positives": len(flagged & benign),
            "benign_fpr": _ratio(len(flagged & benign), len(benign)),
            "benign_reviewed": len(reviewed & benign),
            "benign_review_load": _ratio(len(reviewed & benign), len(benign)),
            "flagged_accounts": len(flagged),
            "precision": _ratio(tp, len(flagged)),
            "median_delay_event_share": median(float(c["delay_event_share"]) for c in found) if found else None,
            "median_delay_minutes": median(float(c["delay_minutes"]) for c in found) if found else None,
            "max_campaign_ids": max((c["campaign_ids"] for c in found), default=None),
            "campaigns_conflated": self.campaigns_conflated(),
            "per_campaign": per_campaign,
            "per_tier": per_tier,
            "threshold_curve": self.threshold_curve(distill, benign),
            **extra,
        }

    def per_campaign(self, campaigns: Mapping[str, list[str]], flagged: set[str]) -> dict[str, dict[str, Any]]:
        """Per labelled campaign (in name order): members flagged, whether and how late it was found, and how
        many detected campaign ids named its members."""
        per_campaign: dict[str, dict[str, Any]] = {}
        for camp in sorted(campaigns):
            members = campaigns[camp]
            hit = self.campaign_first_flag.get(camp)
            total = self.campaign_events[camp]
            per_campaign[camp] = {
                "accounts": len(members),
                "accounts_flagged": sum(1 for a in members if a in flagged),
                "events": total,
                "found": hit is not None,
                "delay_event_share": (hit[2] / total if total else 0.0) if hit else 1.0,
                "delay_minutes": ((hit[1] - self.campaign_first_ts[camp]) / 60_000.0) if hit else None,
                "campaign_ids": self.campaign_ids(members),
            }
        return per_campaign

    def per_tier(
        self, labelled: Mapping[str, tuple[str, str | None]], distill: set[str], benign: set[str], flagged: set[str]
    ) -> dict[str, dict[str, Any]]:
        """Account recall and benign false-positive rate per account tier (``unknown`` when never seen)."""
        per_tier: dict[str, dict[str, Any]] = {}
        for tier in sorted({self.account_tier.get(a, "unknown") for a in labelled}):
            t_acc = {a for a in labelled if self.account_tier.get(a, "unknown") == tier}
            t_d, t_b = t_acc & distill, t_acc & benign
            per_tier[tier] = {
                "distillation_accounts": len(t_d),
                "benign_accounts": len(t_b),
                "account_recall": _ratio(len(t_d & flagged), len(t_d)),
                "benign_fpr": _ratio(len(t_b & flagged), len(t_b)),
            }
        return per_tier

    def per_population(
        self, labelled: Mapping[str, tuple[str, str | None]], flagged: set[str], reviewed: set[str]
    ) -> dict[str, dict[str, Any]]:
        """Accounts seen, flagged and reviewed per population, with the population's label."""
        pop_of = self.population or {}
        out: dict[str, dict[str, Any]] = {}
        for a, (lab, _) in labelled.items():
            row = out.setdefault(
                pop_of.get(a, "unknown"), {"accounts": 0, "flagged": 0, "reviewed": 0, "label": "benign"}
            )
            row["accounts"] += 1
            row["flagged"] += a in flagged
            row["reviewed"] += a in reviewed
            if lab == "distillation":
                row["label"] = "distillation"
        return dict(sorted(out.items()))

    def threshold_curve(self, distill: set[str], benign: set[str]) -> list[dict[str, float | None]]:
        """Precision and recall when an account counts as flagged at max alert score ≥ threshold."""
        curve = []
        for t in THRESHOLDS:
            hit = {a for a, s in self.max_score.items() if s >= t and s > 0}
            tp = len(hit & distill)
            curve.append({
                "threshold": t,
                "precision": _ratio(tp, len(hit & (distill | benign))),
                "recall": _ratio(tp, len(distill)),
                "benign_fpr": _ratio(len(hit & benign), len(benign)),
            })
        return curve

    def scores(self, accounts: Iterable[str]) -> list[float]:
        return [self.max_score.get(a, 0.0) for a in accounts]


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None
