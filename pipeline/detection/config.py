"""Detection settings: the tunables of features, scoring and policy, as one frozen value.

The worker and the backtest both build it from ``Settings`` (``DetectionConfig.from_settings``), so they
run with the same numbers. Every default here is documented where it is used.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields
from typing import Any

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


@dataclass(frozen=True, slots=True)
class DetectionConfig:
    # --- account features
    template_radius: int = 10
    """Hamming distance (bits of 64) within which a prompt SimHash counts as a repeat of a template."""
    template_slots: int = 16
    """Template representatives kept per account (space-saving sketch)."""
    long_output_tokens: int = 2000
    """An output at least this long counts as a long output."""
    max_lateness_ms: int = 5 * 60_000
    """Events up to this much older than an account's newest are used; later ones are counted in the
    account's state (``late``) and otherwise ignored, the same way on every replay."""
    summary_interval_ms: int = 30 * 60_000
    """An active account re-summarises its window (model scoring, link updates) at most this often, and
    then only when at least two events came since the last summary (or its count doubled): a summary
    per event of an account that sends one every half hour or more rarely told nothing new. (An hour
    here instead slowed account-level detection of the naive campaign by 0.9 points of its events.)"""
    summary_min_events: int = 3
    """An account's first summary is at this many events, the least a link group counts as an active
    member: a summary of one or two events tells a link group nothing it counts and the account-level
    scores next to nothing (no template share to speak of, no rates), yet was a third of all summaries."""
    link_interval_ms: int = 2 * HOUR_MS
    """A summary re-announces the account to its link keys when its event count has doubled since the
    last summary, or on the first summary in each interval of this length (well inside the six hours
    after which a group counts a member as quiet)."""

    # --- population model (river HalfSpaceTrees per tier segment and partition)
    population_seed: int = 7
    population_window: int = 250
    """Summaries in a HalfSpaceTrees reference window (the model scores nothing before its first is full)."""
    population_warmup: int = 200
    """Window summaries a segment must see before its scores are trusted."""
    population_quantile: float = 0.995
    """Calibrated threshold: a summary is anomalous when its score exceeds this running quantile."""
    population_review: bool = False
    """On: a population outlier with some harvest profile earns a review (medium). Off by default: in the
    robustness matrix its outliers added only benign reviews (17 of 48 in the realistic scenario) and
    never an earlier flag. Off, the model is not fed at all. On, the worker keeps each model in the
    ``population`` table (changelogged), so a restarted worker or a moved partition goes on with it."""

    rank_min_accounts: int = 50
    """A tier segment on a partition must count this many accounts before an account alert tells the share
    of them that reach its harvest score (``calibration``; it decides nothing)."""

    # --- account-level decision thresholds on the harvest profile score (0..1)
    account_medium: float = 0.45
    account_high: float = 0.6
    account_critical: float = 0.8
    model_focus: bool = True
    """An account's harvest score counts in full only when most of its day went to one model (a distiller
    harvests one teacher; an evaluation sweeps several); off: every account counts as focused."""
    shift_min_harvest: float = 0.2
    """A change against the account's own past (volume jump, new model) is told only when its harvest
    score is at least this: developers' sessions and migrations to a new model are bursty by nature."""
    account_min_events: int = 30
    """Fewer events than this in an account's day window give it no account-level high/critical."""
    vetted_tiers_lenient: bool = True
    """An account of a vetted tier (enterprise, education, research: contracts and checked institutions)
    gets its own-behaviour finding one level lower: a harvest profile at the high level earns a review, at
    the critical level a verification, never a suspension on its own behaviour alone. Evaluation sweeps and
    research benchmarks run round the clock at a machine's pace, templated, with long reasoning outputs,
    like a single-account harvest; an institution answers a verification. Campaign findings are not
    lowered. Off: the ablation."""

    # --- linked accounts
    link_detection: bool = True
    """Off: account-level scoring alone (the ablation of the detection table)."""
    link_member_cap: int = 512
    """Members kept in detail per link key; more are counted, not stored (bounded state)."""
    link_min_members: int = 5
    """Members with enough events a link group needs before it can be called a campaign."""
    link_member_min_events: int = 3
    campaign_high: float = 0.3
    campaign_critical: float = 0.5
    member_similarity: float = 0.6
    """How closely (0..1) a member must match the campaign core's profile to be named."""
    link_order_slack_ms: int = 10_000
    """Link updates are applied in event-time order (``ordering``): each is held until every source
    partition has processed events this much later than it, so events up to this far out of order within a
    partition (gateways' clocks and queues) still reach their link groups in the same order in a worker as
    in a backtest. It is also how long, in event time, a campaign finding waits: at 30 s the median delay
    rose by up to 0.04 points of a campaign's events in the robustness matrix."""
    network_links: bool = True
    """Accounts are also linked by their client network (``ip_prefix``); off: the ablation."""
    coordination_evidence: bool = True
    """A group is judged on coordination (cards shared across its eliciting core, members alike and
    machine-paced), not on the shared key itself; off: the old judgement (templating × timing)."""
    customer_fleet_members: int = 15
    """A group whose eliciting core is one customer (one card, or one organisation or vetted tier for
    80 % of it) is that customer's own fleet below this many accounts, and no campaign; at this many or
    more it is judged as accounts with a card each are (alike and round the clock): why would one customer
    spread the same round-the-clock work over more accounts than that, if not to dodge per-account
    limits? An agency whose accounts are its clients' projects works in office hours, each differently."""
    template_bands: int = 4
    template_link_min_hits: float = 2.0
    """A template seen this often in one account is announced to its LSH buckets."""
    template_new_hits: float = 4.0
    """A template seen fewer times than this is new and announced at every summary (so its buckets learn
    of the account at once); the others with the link keys' re-announcements (``link_interval_ms``).
    4 and 8 gave the same per-campaign delays on hard seeds 1 and 2; 4 sends 17% fewer template updates."""

    # --- policy
    episode_ms: int = 7 * DAY_MS
    """Quiet time after which an account's next finding, or a campaign's next firing group, opens a new
    alert episode."""
    shadow: bool = True
    detector_version: str = "dg-detect-2.3"
    """2.0: campaigns judged on coordination (shared cards, members alike round the clock), not on a shared
    key; templating no longer gates the account score; network links; the population model out of decisions.
    2.1: the same decisions; alerts carry each reason's contribution (AnomalyAlert v2).
    2.2: the same judgements, made on link updates and group signals in event-time order (``ordering``):
    a worker's alerts are a replay's, whatever order it read its partitions in; campaign findings come up to
    ``link_order_slack_ms`` of event time later.
    2.3: a vetted tier's own-behaviour findings one level lower (``vetted_tiers_lenient``); account alerts
    tell where the harvest score stands among the tier's accounts (``population_rank``, ``calibration``);
    the population model, when on, is kept in a table and its quantile comes from a histogram of its
    scores."""
    alert_schema_version: int = 2
    """The AnomalyAlert version written: 2, each reason with its contribution; 1 (the same alerts without
    contributions) for a transition while consumers still validate v1 (``DG_ALERT_SCHEMA_VERSION``)."""
    policy_version: str = "dg-policy-1.1"
    action_ttl_ms: int = 7 * DAY_MS
    verdict_ttl_hours: float = 30 * 24.0
    """An analyst's verdict holds for this long in event time after the alert it names; then the account is
    judged afresh (``DG_VERDICT_TTL_HOURS``)."""
    allowlist_accounts: frozenset[str] = field(default_factory=frozenset)
    allowlist_orgs: frozenset[str] = field(default_factory=frozenset)

    # --- partitioning (so per-partition models give the same answers in a backtest as in the worker)
    partitions: int = 4

    def decisions(self) -> dict[str, Any]:
        """Every field that changes a decision, JSON-ready (allow-lists sorted): what ``digest`` covers.
        Left out: the mode (``shadow``: each action states it), the two version names, the alerts'
        schema version and when a rank is told (what is written, not what is decided)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name in ("shadow", "detector_version", "policy_version", "alert_schema_version",
                          "rank_min_accounts"):
                continue
            v = getattr(self, f.name)
            out[f.name] = sorted(v) if isinstance(v, frozenset) else v
        return out

    def digest(self) -> str:
        """8 hex characters identifying the decision-relevant configuration (``decisions``): two runs with
        different thresholds, windows or allow-lists have different digests."""
        raw = json.dumps(self.decisions(), sort_keys=True, separators=(",", ":")).encode("utf-8")
        return hashlib.sha256(raw).hexdigest()[:8]

    def versioned_policy(self) -> str:
        """``policy_version`` with the digest after its name (``dg-policy-1.1@1a2b3c4d``), before any
        ``+suffix`` (``dg-policy-1.1@1a2b3c4d+replay``): what actions carry, so an action says which
        configuration decided it."""
        head, sep, tail = self.policy_version.partition("+")
        return f"{head}@{self.digest()}{sep}{tail}"

    @classmethod
    def from_settings(cls, settings: object) -> DetectionConfig:
        """Take every field that ``settings`` has under the same name (the rest keep their defaults);
        ``shadow`` is ``not settings.enforce``, ``partitions`` the input topic's, allow-lists are
        comma-separated strings."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name == "partitions":
                v = getattr(settings, "input_partitions", None)
            else:
                v = getattr(settings, f.name, None)
            if v is None:
                continue
            if f.name.startswith("allowlist_") and isinstance(v, str):
                v = frozenset(x.strip() for x in v.split(",") if x.strip())
            values[f.name] = v
        if hasattr(settings, "enforce"):
            values["shadow"] = not settings.enforce
        return cls(**values)
