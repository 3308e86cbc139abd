"""Messages between the detection stages: account → link keys, link keys → accounts (findings).

In a backtest they are handed from stage to stage in process; in the worker they travel through
Kafka topics (a repartition topic keyed by link key, a findings topic keyed by account), as msgpack.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from pipeline.models import Reason

SEVERITIES = ("none", "low", "medium", "high", "critical")
LOW, MEDIUM, HIGH, CRITICAL = 1, 2, 3, 4


@dataclass(frozen=True, slots=True)
class MemberSummary:
    """What an account tells its link keys about itself at a window update."""

    account: str
    ts: int
    n: int
    events_day: float
    elicitation: float
    templating: float
    mask: int
    mask_hour: int
    first_ts: int
    org: str | None
    tier: str | None
    regularity: float

    def to_list(self) -> list[Any]:
        return [self.account, self.ts, self.n, self.events_day, self.elicitation, self.templating,
                self.mask, self.mask_hour, self.first_ts, self.org, self.tier, self.regularity]

    @classmethod
    def from_list(cls, v: list[Any]) -> MemberSummary:
        return cls(*v)


@dataclass(frozen=True, slots=True)
class LinkUpdate:
    """A member summary addressed to one link key (``pay:…``, ``cli:…``, ``tpl:…``)."""

    key: str
    summary: MemberSummary
    template: int | None = None
    """For a template bucket key: the account's template SimHash, so the bucket can check it is a true
    near-duplicate and not a chance match of one LSH band."""

    def encode(self) -> bytes:
        return msgpack.packb([self.key, self.summary.to_list(), self.template])

    @classmethod
    def decode(cls, raw: bytes) -> LinkUpdate:
        key, s, template = msgpack.unpackb(raw)
        return cls(key, MemberSummary.from_list(s), template)


@dataclass(frozen=True, slots=True)
class Finding:
    """Evidence against one account, for the policy: from its own behaviour or from a campaign."""

    account: str
    ts: int
    kind: str
    severity: int
    score: float
    reasons: tuple[Reason, ...]
    campaign_id: str | None = None
    related: tuple[str, ...] = ()
    window_start_ts: int | None = None
    window_events: int | None = None
    org: str | None = None

    def encode(self) -> bytes:
        return msgpack.packb([self.account, self.ts, self.kind, self.severity, self.score,
                              [list(r.values()) for r in self.reasons], self.campaign_id, list(self.related),
                              self.window_start_ts, self.window_events, self.org])

    @classmethod
    def decode(cls, raw: bytes) -> Finding:
        a, ts, kind, sev, score, reasons, camp, related, ws, we, org = msgpack.unpackb(raw)
        rs = tuple({"code": r[0], "detail": r[1], "value": r[2], "baseline": r[3]} for r in reasons)
        return cls(a, ts, kind, sev, score, rs, camp, tuple(related), ws, we, org)  # type: ignore[arg-type]
