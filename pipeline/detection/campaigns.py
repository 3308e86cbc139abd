"""Campaigns as entities: the link groups that name the same accounts are one campaign.

One operator's accounts share several link keys at once (its cards, its client, its prompt templates,
its proxies' networks), so one campaign makes many link groups fire, each judged on its own
(``links.judge``). Each firing group sends a ``GroupSignal`` (its judgement and the members it named) to
this stage, which sees every firing group (one key: a small stream, only groups judged a campaign send)
and keeps a union of them:

- a group, and an account once named, belong to one campaign; a signal whose group or named accounts
  belong to several campaigns merges them;
- a merged campaign keeps the id of its oldest part (the earliest first signal in event time, then the
  smaller id), so the id of a campaign does not depend on the order its groups were seen in;
- the campaign alerts once when it is found, again when its severity rises or its named accounts
  double, and again when it fires after ``episode_ms`` of quiet (a new episode);
- members' findings carry the campaign's id, so an account's actions name the campaign, not a key.

State (all in one store, each record ``[version, last_ts, ...]`` so an idle sweeper can read its time):
``g:<link key>`` and ``a:<account>`` → the campaign they joined; ``c:<campaign id>`` → the campaign
(or, once merged, a pointer to the campaign it merged into). A pointer left by a merge is followed and
the record that used it is rewritten to point at the survivor, so chains stay short.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import msgpack

from pipeline.contract.models import Reason
from pipeline.detection.config import DetectionConfig
from pipeline.detection.ids import stable_id
from pipeline.detection.messages import Finding, GroupSignal
from pipeline.detection.packing import field_of

MEMBERS_LISTED = 1000
"""Accounts a campaign lists (the alert's ``related_accounts`` holds at most 1,000): its record is
bounded whatever the campaign's size; ``n`` counts all of them."""
SIGNALS_KEY = "campaigns"
"""The key every group signal travels under, so one worker sees them all (in the worker: one partition
of ``campaign-signals``)."""
KIND_WORDS = {"pay": ("card", "cards"), "cli": ("client fingerprint", "client fingerprints"),
              "tpl": ("prompt template bucket", "prompt template buckets"),
              "net": ("client network", "client networks")}


@dataclass
class Campaign:
    """One campaign (``parent`` None) or a pointer left by a merge (``parent`` the campaign it joined)."""

    cid: str
    first_ts: int
    last_ts: int
    parent: str | None = None
    n: int = 0
    severity: int = 0
    score: float = 0.0
    alerted_sev: int = 0
    alerted_n: int = 0
    episode_ts: int = 0
    window_start_ts: int = 0
    members: list[str] = field(default_factory=list)
    kinds: dict[str, int] = field(default_factory=dict)  # link kind (pay, cli, tpl, net) → groups

    def to_bytes(self) -> bytes:
        return msgpack.packb([1, self.last_ts, self.cid, self.first_ts, self.parent, self.n, self.severity,
                              self.score, self.alerted_sev, self.alerted_n, self.episode_ts,
                              self.window_start_ts, self.members, self.kinds])

    @classmethod
    def from_bytes(cls, raw: bytes) -> Campaign:
        v = msgpack.unpackb(raw, strict_map_key=True)
        if v[0] != 1:
            raise ValueError(f"campaign record version {v[0]} is not 1")
        (_, last_ts, cid, first_ts, parent, n, sev, score, alerted_sev, alerted_n, episode_ts, ws, members,
         kinds) = v
        return cls(cid, first_ts, last_ts, parent, n, sev, score, alerted_sev, alerted_n, episode_ts, ws,
                   members, kinds)


class Pointer(NamedTuple):
    """A group's or an account's campaign, and when it last took part."""

    cid: str
    last_ts: int

    def to_bytes(self) -> bytes:
        return msgpack.packb([1, self.last_ts, self.cid])

    @classmethod
    def from_bytes(cls, raw: bytes) -> Pointer:
        v = msgpack.unpackb(raw)
        if v[0] != 1:
            raise ValueError(f"campaign pointer version {v[0]} is not 1")
        return cls(v[2], v[1])


def decode_record(raw: bytes) -> Campaign | Pointer:
    """A record of this stage's store, by its length (pointers have three fields)."""
    return Pointer.from_bytes(raw) if len(msgpack.unpackb(raw)) == 3 else Campaign.from_bytes(raw)


def last_ts_of(raw: bytes) -> int:
    """A record's last event time, without decoding the rest (the state sweeper reads only this)."""
    return int(field_of(raw, 1, (1,), "campaign record"))


class Campaigns:
    """The campaign stage over a store (a dict in a backtest, a table in the worker)."""

    def __init__(self, cfg: DetectionConfig, store: Any) -> None:
        self.cfg = cfg
        self.store = store

    def _campaign(self, cid: str) -> Campaign | None:
        """The live campaign ``cid`` belongs to now (following merge pointers), or None if it expired."""
        seen = 0
        c = self.store.get("c:" + cid)
        while c is not None and c.parent is not None and seen < 64:
            c, seen = self.store.get("c:" + c.parent), seen + 1
        return c if c is not None and c.parent is None else None

    def _lookup(self, key: str) -> Campaign | None:
        p: Pointer | None = self.store.get(key)
        return None if p is None else self._campaign(p.cid)

    def on_signal(self, s: GroupSignal, offset: int | None = None) -> tuple[dict[str, Any] | None, list[Finding]]:
        """The campaign alert to send (as ``Policy.campaign_alert`` takes it) if any, and the named
        members' findings with the campaign's id."""
        if offset is not None:
            applied: Pointer | None = self.store.get("offset")
            if applied is not None and offset <= int(applied.cid):
                return None, []  # a redelivery: already applied
            self.store["offset"] = Pointer(str(offset), s.ts)
        found: dict[str, Campaign] = {}
        for key in ("g:" + s.key, *("a:" + f.account for f in s.named)):
            c = self._lookup(key)
            if c is not None:
                found[c.cid] = c
        # the campaign is known by its oldest firing (event time, then id): a signal older than every
        # campaign it touches (one that arrived late from another partition) founds the survivor
        cid = stable_id("camp", s.key, s.ts)
        oldest = min(found.values(), key=lambda c: (c.first_ts, c.cid), default=None)
        if oldest is not None and (oldest.first_ts, oldest.cid) <= (s.ts, cid):
            root = oldest
        else:
            root = Campaign(cid, s.ts, s.ts, episode_ts=s.ts, window_start_ts=s.window_start_ts)
            if oldest is not None:
                root.episode_ts = min(c.episode_ts for c in found.values())
        self.store["c:" + root.cid] = root  # before the merges, so the pointers they leave lead to it
        absorbed = sorted(c.cid for c in found.values() if c is not root)
        for other in absorbed:
            self._merge(root, found[other], s.ts)
        if s.ts - root.last_ts >= self.cfg.episode_ms:  # quiet for an episode: alert afresh
            root.alerted_sev = root.alerted_n = 0
            root.episode_ts = s.ts
        root.last_ts = max(root.last_ts, s.ts)
        if self.store.get("g:" + s.key) is None:  # a group new to every campaign
            kind = s.key.split(":", 1)[0]
            root.kinds[kind] = root.kinds.get(kind, 0) + 1
        self.store["g:" + s.key] = Pointer(root.cid, s.ts)
        findings = []
        for f in s.named:
            if self._lookup("a:" + f.account) is None:
                root.n += 1
                if len(root.members) < MEMBERS_LISTED:
                    root.members.append(f.account)
            self.store["a:" + f.account] = Pointer(root.cid, s.ts)
            findings.append(replace(f, campaign_id=root.cid))
        root.severity = max(root.severity, s.severity)
        root.score = max(root.score, s.score)
        root.window_start_ts = min(root.window_start_ts or s.window_start_ts, s.window_start_ts)
        alert = None
        if root.n and (absorbed or s.severity > root.alerted_sev or root.n >= 2 * max(root.alerted_n, 1)):
            root.alerted_sev = max(root.alerted_sev, s.severity)
            root.alerted_n = root.n
            reasons = [*s.reasons, self._links(root)]
            if absorbed:  # consumers holding alerts of the absorbed ids learn where they went
                reasons.append({"code": "campaign_merged", "detail": "the same operator as campaign"
                                f"{'s' if len(absorbed) > 1 else ''} {', '.join(absorbed[:20])}: now one campaign",
                                "value": float(len(absorbed)), "baseline": None, "contribution": None})
            alert = {"campaign_id": root.cid, "severity": root.alerted_sev, "score": root.score, "reasons": reasons,
                     "related": sorted(root.members), "window_start_ts": root.window_start_ts,
                     "members": root.n, "episode_ts": root.episode_ts}
        self.store["c:" + root.cid] = root
        return alert, findings

    def _merge(self, root: Campaign, other: Campaign, ts: int) -> None:
        """``other`` joins ``root``: its counts add up (an account is counted in one campaign only), and
        its record becomes a pointer to ``root``."""
        root.n += other.n
        room = MEMBERS_LISTED - len(root.members)
        if room > 0:
            root.members += other.members[:room]
        for kind, k in other.kinds.items():
            root.kinds[kind] = root.kinds.get(kind, 0) + k
        root.severity = max(root.severity, other.severity)
        root.score = max(root.score, other.score)
        root.alerted_sev = max(root.alerted_sev, other.alerted_sev)
        root.alerted_n = max(root.alerted_n, other.alerted_n)
        root.window_start_ts = min(root.window_start_ts, other.window_start_ts)
        root.last_ts = max(root.last_ts, other.last_ts)
        self.store["c:" + other.cid] = Campaign(other.cid, other.first_ts, ts, parent=root.cid)

    @staticmethod
    def _links(c: Campaign) -> Reason:
        parts = []
        for kind in ("pay", "cli", "tpl", "net"):
            k = c.kinds.get(kind, 0)
            if k:
                one, many = KIND_WORDS[kind]
                parts.append(f"{k} {one if k == 1 else many}")
        groups = sum(c.kinds.values())
        return {"code": "campaign_links",
                "detail": f"{c.n} accounts named by {groups} linked groups: " + ", ".join(parts),
                "value": float(groups), "baseline": None, "contribution": None}
