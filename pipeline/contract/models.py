"""Python types of the wire messages: one TypedDict per message kind, its field names and its enums.

These mirror ``schemas/*.v1.json`` (the source of truth); ``tests/unit/contract/test_schemas.py`` checks that they
agree. Every TypedDict is total: a decoded message always carries every field, with ``None`` for a
missing optional one.
"""

from __future__ import annotations

from typing import TypedDict

SCHEMA_VERSION = 1

#: Bounds shared by the codec and the schemas.
ID_MAX_CHARS = 128
STRING_MAX_CHARS = 128
"""The longest optional string of an input message (UsageEvent v2 states it; v1 events are read with it)."""
EVENT_SCHEMA_VERSIONS: frozenset[int] = frozenset({1, 2})
"""UsageEvent versions read: v2 is v1 with every string's length bounded (``schemas/usage_event.v2.json``)."""
INT64_MAX = 2**63 - 1
TS_MAX_EXCLUSIVE = 2**53  # epoch milliseconds; 2**53 keeps ts exact in JSON doubles
ASN_MAX = 2**32 - 1
RELATED_ACCOUNTS_MAX = 1000


class UsageEvent(TypedDict):
    """One request to the model API, as the API gateway saw it."""

    schema_version: int
    event_id: str
    ts: int
    account_id: str
    model: str
    input_tokens: int
    output_tokens: int
    status: str
    org_id: str | None
    api_key_id: str | None
    endpoint: str | None
    latency_ms: int | None
    ip_prefix: str | None
    asn: int | None
    client_fingerprint: str | None
    payment_fingerprint: str | None
    account_tier: str | None
    country: str | None
    prompt_simhash: str | None
    prompt_chars: int | None
    n_turns: int | None
    n_tools: int | None
    reasoning_requested: bool | None
    capability: str | None
    language: str | None


class Reason(TypedDict):
    """Why an alert fired, in words a person can act on, and (AnomalyAlert v2) how much of the score it
    accounts for: the score less what it would be without this evidence; None when it is no term of it."""

    code: str
    detail: str
    value: float | None
    baseline: float | None
    contribution: float | None


class AnomalyAlert(TypedDict):
    """An alert for platform teams."""

    schema_version: int
    alert_id: str
    ts: int
    account_id: str | None
    campaign_id: str | None
    kind: str
    score: float
    severity: str
    reasons: list[Reason]
    related_accounts: list[str]
    window_start_ts: int | None
    window_events: int | None
    detector_version: str


class EnforcementAction(TypedDict):
    """An action for the enforcement service, signed with HMAC-SHA256."""

    schema_version: int
    action_id: str
    ts: int
    account_id: str
    action: str
    mode: str
    reason_codes: list[str]
    alert_ids: list[str]
    expires_ts: int | None
    policy_version: str
    signature: str


class Verdict(TypedDict):
    """Analyst feedback on an alert."""

    schema_version: int
    alert_id: str
    account_id: str
    verdict: str
    ts: int
    analyst: str | None


class SignedVerdict(TypedDict):
    """Analyst feedback on an alert, Verdict v2: scoped to the alert's kind or campaign, accountable to an
    analyst, and signed with the analyst key (``pipeline/contract/verdicts.py``)."""

    schema_version: int
    alert_id: str
    account_id: str
    kind: str
    campaign_id: str | None
    verdict: str
    ts: int
    analyst: str
    signature: str


USAGE_EVENT_FIELDS: tuple[str, ...] = tuple(UsageEvent.__annotations__)
USAGE_EVENT_REQUIRED: tuple[str, ...] = (
    "schema_version",
    "event_id",
    "ts",
    "account_id",
    "model",
    "input_tokens",
    "output_tokens",
    "status",
)
USAGE_EVENT_OPTIONAL: tuple[str, ...] = tuple(f for f in USAGE_EVENT_FIELDS if f not in USAGE_EVENT_REQUIRED)
REASON_FIELDS: tuple[str, ...] = tuple(Reason.__annotations__)
ALERT_FIELDS: tuple[str, ...] = tuple(AnomalyAlert.__annotations__)
ACTION_FIELDS: tuple[str, ...] = tuple(EnforcementAction.__annotations__)
VERDICT_FIELDS: tuple[str, ...] = tuple(Verdict.__annotations__)
VERDICT_REQUIRED: tuple[str, ...] = ("schema_version", "alert_id", "account_id", "verdict", "ts")

STATUSES: frozenset[str] = frozenset({"ok", "error", "rate_limited", "refused"})
CAPABILITY_ORDER: tuple[str, ...] = (
    "coding",
    "math",
    "reasoning",
    "agentic",
    "chat",
    "writing",
    "analysis",
    "vision",
    "translation",
    "other",
)
"""The capability values in a fixed order: detection's per-account counters are laid out in it."""
CAPABILITIES: frozenset[str] = frozenset(CAPABILITY_ORDER)
TIERS: frozenset[str] = frozenset({"free", "pro", "team", "enterprise", "education", "research", "startup"})
SEVERITIES: frozenset[str] = frozenset({"low", "medium", "high", "critical"})
ACTIONS: frozenset[str] = frozenset({"flag_for_review", "require_verification", "throttle", "suspend", "ban"})
MODES: frozenset[str] = frozenset({"enforce", "shadow"})
VERDICTS: frozenset[str] = frozenset({"true_positive", "false_positive"})
