"""Messages between the detection stages: account → link keys, link keys → the campaign stage (group
signals), link keys and campaigns → accounts (findings).

In a backtest they are handed from stage to stage in process; in the worker they travel through
Kafka topics (a repartition topic keyed by link key, a findings topic keyed by account), as msgpack.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import msgpack

from pipeline.contract.manifest import CAMPAIGN_SIGNALS, FINDINGS, LINK_UPDATES
from pipeline.contract.models import Reason

SEVERITIES = ("none", "low", "medium", "high", "critical")
LOW, MEDIUM, HIGH, CRITICAL = 1, 2, 3, 4


class MemberSummary(NamedTuple):
    """What an account tells its link keys about itself at a window update (a named tuple: the link
    stage decodes many of them, and a tuple is the cheapest immutable record to build)."""

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
    payment: str | None = None
    """The account's payment fingerprint: who pays is the operator's scarcest resource, so cards shared
    across the members of a group are evidence of one operator (see ``links.evaluate``)."""
    long_share: float = 0.0
    """Share of the account's outputs that are long (a harvest of reasoning traces is mostly long)."""
    clock: float = 0.0
    """Active hours of the account's last 24, over 24 (or over its age when younger, at least six)."""

    def to_list(self) -> list[Any]:
        return list(self)

    @classmethod
    def from_list(cls, v: list[Any]) -> MemberSummary:
        """A summary from its list form; a list of an older, shorter form takes the defaults."""
        return cls(*v)


class LinkUpdate(NamedTuple):
    """A member summary addressed to one link key (``pay:…``, ``cli:…``, ``net:…``, ``tpl:…``)."""

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


def reason_list(r: Reason) -> list[Any]:
    return [r["code"], r["detail"], r["value"], r["baseline"], r.get("contribution")]


def reason_of(r: list[Any]) -> Reason:
    """A reason from its list form; one written before reasons had contributions (four items) has none."""
    return {"code": r[0], "detail": r[1], "value": r[2], "baseline": r[3],
            "contribution": r[4] if len(r) > 4 else None}


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
                              [reason_list(r) for r in self.reasons], self.campaign_id, list(self.related),
                              self.window_start_ts, self.window_events, self.org])

    @classmethod
    def decode(cls, raw: bytes) -> Finding:
        a, ts, kind, sev, score, reasons, camp, related, ws, we, org = msgpack.unpackb(raw)
        rs = tuple(reason_of(r) for r in reasons)
        return cls(a, ts, kind, sev, score, rs, camp, tuple(related), ws, we, org)


class GroupSignal(NamedTuple):
    """A link group judged a campaign: its key, judgement, and the members it newly named."""

    key: str
    ts: int
    severity: int
    score: float
    reasons: tuple[Reason, ...]
    members: int
    window_start_ts: int
    named: tuple[Finding, ...] = ()

    def encode(self) -> bytes:
        return msgpack.packb([self.key, self.ts, self.severity, self.score,
                              [reason_list(r) for r in self.reasons], self.members, self.window_start_ts,
                              [f.encode() for f in self.named]])

    @classmethod
    def decode(cls, raw: bytes) -> GroupSignal:
        key, ts, sev, score, reasons, members, ws, named = msgpack.unpackb(raw)
        rs = tuple(reason_of(r) for r in reasons)
        return cls(key, ts, sev, score, rs, members, ws, tuple(Finding.decode(f) for f in named))


# In the worker, link updates and findings travel in batches: one Kafka message per destination
# partition per agent batch (or a few, each under ``max_bytes``), instead of one per update (a window
# update announces itself to several link keys, so per-update messages would outnumber the events).
# A batch is ``[BATCH_VERSION, [item bytes, ...]]``, each item msgpack of its own.
BATCH_VERSION = 2
MAX_BATCH_BYTES = 256 * 1024
"""Largest batch message the worker sends (Kafka's default limit for a request is 1 MiB)."""


def _chunks(items: list[bytes], max_bytes: int) -> list[bytes]:
    """``items`` packed into as few batch messages as keep each within ``max_bytes`` (an item larger than
    that travels alone)."""
    out: list[bytes] = []
    chunk: list[bytes] = []
    size = 0
    for item in items:
        if chunk and size + len(item) > max_bytes:
            out.append(msgpack.packb([BATCH_VERSION, chunk]))
            chunk, size = [], 0
        chunk.append(item)
        size += len(item) + 5
    if chunk:
        out.append(msgpack.packb([BATCH_VERSION, chunk]))
    return out


EMPTY_BATCH = msgpack.packb([BATCH_VERSION, []])
"""A batch message with no items: a link-updates message that carries only its headers (``dg.wm``)."""


def _items(raw: bytes, what: str) -> list[bytes]:
    version, items = msgpack.unpackb(raw)
    if version != BATCH_VERSION:
        raise ValueError(f"{what} batch version {version} is not {BATCH_VERSION}")
    return list(items)


def encode_link_updates(updates: list[LinkUpdate], max_bytes: int = MAX_BATCH_BYTES) -> list[bytes]:
    """Link updates (any keys of one partition) as batch messages. A summary addressed to several keys (an
    account's payment and client fingerprints, its template buckets) is written once per message:
    item ``[summary, [[key, template], ...]]``.

    >>> from pipeline.detection.messages import MemberSummary as S
    >>> s = S("a", 1, 3, 3.0, 1.0, 1.0, 7, 0, 1, None, "pro", 0.5)
    >>> msgs = encode_link_updates([LinkUpdate("pay:x", s), LinkUpdate("tpl:1:f", s, 15)])
    >>> len(msgs), decode_link_updates(msgs[0]) == [LinkUpdate("pay:x", s), LinkUpdate("tpl:1:f", s, 15)]
    (1, True)
    """
    groups: dict[int, tuple[MemberSummary, list[list[Any]]]] = {}
    for u in updates:
        g = groups.get(id(u.summary))
        if g is None:
            g = groups[id(u.summary)] = (u.summary, [])
        g[1].append([u.key, u.template])
    return _chunks([msgpack.packb([list(s), keys]) for s, keys in groups.values()], max_bytes)


def decode_link_updates(raw: bytes) -> list[LinkUpdate]:
    make = MemberSummary.from_list
    out: list[LinkUpdate] = []
    for item in _items(raw, LINK_UPDATES):
        s, keys = msgpack.unpackb(item)
        summary = make(s)
        out += [LinkUpdate(key, summary, template) for key, template in keys]
    return out


def encode_findings(findings: list[Finding], max_bytes: int = MAX_BATCH_BYTES) -> list[bytes]:
    """Findings (any accounts of one partition) as batch messages."""
    return _chunks([f.encode() for f in findings], max_bytes)


def decode_findings(raw: bytes) -> list[Finding]:
    return [Finding.decode(item) for item in _items(raw, FINDINGS)]


def encode_group_signals(signals: list[GroupSignal], max_bytes: int = MAX_BATCH_BYTES) -> list[bytes]:
    """Group signals (all for the campaign stage's one key) as batch messages."""
    return _chunks([s.encode() for s in signals], max_bytes)


def decode_group_signals(raw: bytes) -> list[GroupSignal]:
    return [GroupSignal.decode(item) for item in _items(raw, CAMPAIGN_SIGNALS)]
