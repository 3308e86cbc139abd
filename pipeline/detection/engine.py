"""The detection engine: pure stages the worker runs as agents and the backtest runs in process.

1. ``on_event`` (keyed by account): de-duplicate, update the account's behaviour state, and at each
   window update score it (harvest profile, population model, change against its own past), hand the
   account-level finding to the policy, and address a member summary to each of its link keys.
2. ``on_link_update`` (keyed by link key): update the link group, judge it for campaign traits, and
   name the members that behave like its core: a group signal when it fires, names new members, or
   rises.
3. ``on_group_signal`` (one key): groups that name the same accounts are one campaign
   (``campaigns``): the campaign alert when one is due, and the members' findings under its id.
4. ``on_finding`` and ``on_verdict`` (keyed by account): the policy turns a finding into at most one
   alert and one action, and an analyst's verdict into a scope it holds for (and a lift).

State lives in the stores the engine is given (dicts in a backtest, Faust tables in the worker).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

from pipeline.contract import manifest
from pipeline.contract.models import Reason, SignedVerdict, UsageEvent
from pipeline.contract.signing import DEV_SIGNING_KEY
from pipeline.contract.simhash import lsh_bands
from pipeline.detection.calibration import RANK_DAYS, Rank, ScoreRanks
from pipeline.detection.campaigns import Campaigns
from pipeline.detection.config import DAY_MS, DetectionConfig
from pipeline.detection.features import AccountState, event_id_hash
from pipeline.detection.group_sums import INSTITUTIONAL_TIERS
from pipeline.detection.links import LinkGroup, judge
from pipeline.detection.messages import (
    CRITICAL,
    HIGH,
    LOW,
    MEDIUM,
    Finding,
    GroupSignal,
    LinkUpdate,
    MemberSummary,
)
from pipeline.detection.ordering import Aligner, signal_key
from pipeline.detection.partition import partition_for
from pipeline.detection.policy import Policy, PolicyState
from pipeline.detection.population import PopulationModels, PopulationScore
from pipeline.detection.scoring import (
    harvest_reasons,
    harvest_score,
    regularity,
    shift_score,
)
from pipeline.detection.store import Store

ALERTS = manifest.ALERTS
ACTIONS = manifest.ACTIONS


_NO_POPULATION = PopulationScore(0.0, None, False)


@dataclass(frozen=True, slots=True)
class Output:
    """One message the engine wants sent: manifest topic name, key, and the message map."""

    topic: str
    key: str
    value: dict[str, Any]


class Secret(Protocol):
    def get_secret_value(self) -> str: ...


class EngineSettings(Protocol):
    """What :meth:`Engine.from_config` takes: ``pipeline.settings.Settings`` is one (detection does not
    import it). The signing key is a secret; ``DetectionConfig.from_settings`` reads every other field it
    knows by name."""

    @property
    def signing_key(self) -> Secret | None: ...


@dataclass
class EventResult:
    outputs: list[Output]
    links: list[LinkUpdate]
    duplicate: bool = False
    late: bool = False


class Engine:
    """See the module docstring. ``accounts``/``links``/``policy`` map keys to state objects."""

    def __init__(self, cfg: DetectionConfig, *, signing_key: bytes | None = None,
                 accounts: Store | None = None, links: Store | None = None,
                 policy: Store | None = None, campaigns: Store | None = None,
                 population: Store | None = None, ranks: Store | None = None) -> None:
        self.cfg = cfg
        self.policy = Policy(cfg, signing_key or DEV_SIGNING_KEY)
        self.accounts: Store = {} if accounts is None else accounts
        self.links: Store = {} if links is None else links
        self.policy_states: Store = {} if policy is None else policy
        self.campaign_stage = Campaigns(cfg, {} if campaigns is None else campaigns)
        self.models = PopulationModels(cfg, population)
        self.ranks: Store = {} if ranks is None else ranks  # ``calibration.ScoreRanks`` per partition and tier
        self._partition_cache: dict[str, int] = {}
        # in process (``process``): link updates in event-time order, as the worker's link stage applies them
        self._order = Aligner(cfg.partitions, cfg.link_order_slack_ms, wait_for_all=False)
        self._signals = Aligner(cfg.partitions, 0, wait_for_all=False, key=signal_key)  # the campaign stage's
        self.observe_score: Callable[[str, float], None] | None = None
        """Called with (account, harvest score) at each window update, alerting or not: a backtest's
        report sweeps thresholds over every account's score, not only over those that alerted."""

    @classmethod
    def from_config(cls, settings: EngineSettings, **stores: Store) -> Engine:
        """The engine the settings describe (worker and backtest both build it this way)."""
        key = settings.signing_key
        return cls(DetectionConfig.from_settings(settings),
                   signing_key=key.get_secret_value().encode("utf-8") if key is not None else None, **stores)

    # ------------------------------------------------------------------------------ stage 1: account

    def on_event(self, ev: UsageEvent, partition: int, offset: int | None = None) -> EventResult:
        acc = ev["account_id"]
        id_hash = event_id_hash(ev["event_id"])
        st: AccountState | None = self.accounts.get(acc)
        if st is None:
            st = AccountState()
        elif (offset is not None and offset <= st.applied_offset) or id_hash in st.recent_ids:
            return EventResult([], [], duplicate=True)
        if st.too_late(ev["ts"], self.cfg):
            st.count_late(ev["event_id"])
            if offset is not None:
                st.applied_offset = offset
            self.accounts[acc] = st
            return EventResult([], [], late=True)
        st.apply(ev, self.cfg, id_hash)
        if offset is not None:
            st.applied_offset = offset
        outputs: list[Output] = []
        links: list[LinkUpdate] = []
        n, ts, cfg = st.n, ev["ts"], self.cfg
        grown = n >= 2 * st.last_summary_n
        if n >= cfg.summary_min_events and (grown or (ts - st.last_summary_ts >= cfg.summary_interval_ms
                                                      and n - st.last_summary_n >= 2)):
            established = grown or ts // cfg.link_interval_ms != st.last_summary_ts // cfg.link_interval_ms
            st.last_summary_ts, st.last_summary_n = ts, n
            p = st.profile()
            if not cfg.model_focus:
                p["model_top_share"] = 1.0
            finding = self._account_finding(st, ev, partition, p, offset)
            if finding is not None:
                outputs += self.on_finding(finding)
            if cfg.link_detection:
                links = self._link_updates(st, ev, p, established)
        self.accounts[acc] = st
        return EventResult(outputs, links)

    def _account_finding(self, st: AccountState, ev: UsageEvent, partition: int,
                         p: dict[str, float], offset: int | None = None) -> Finding | None:
        hs = harvest_score(p)
        rank = self._rank(st, partition, ev["ts"], hs, offset)
        if self.observe_score is not None:
            self.observe_score(ev["account_id"], hs)
        cfg = self.cfg
        # the population model decides nothing unless ``population_review`` asks it to (see the config)
        pop = (self.models.score(st.tier or "unknown", partition, p, offset) if cfg.population_review
               else _NO_POPULATION)
        popv = 0.3 if pop.anomalous else 0.0
        shift, shift_reasons = shift_score(p, max(hs, popv))
        enough = st.day_count() >= cfg.account_min_events
        if enough and hs >= cfg.account_critical:
            sev = CRITICAL
        elif enough and hs >= cfg.account_high:
            sev = HIGH
        elif hs >= cfg.account_medium or (pop.anomalous and hs >= 0.2):
            sev = MEDIUM
        elif shift >= 0.5 and hs >= cfg.shift_min_harvest:
            sev = LOW  # a change against its own past, in an account that harvests a little: worth a look
        else:
            return None
        # a vetted institution's own evaluations and batch jobs look like a harvest: one level lower
        vetted = cfg.vetted_tiers_lenient and sev >= HIGH and st.tier in INSTITUTIONAL_TIERS
        if vetted:
            sev -= 1
        score = max(hs, 0.5 * shift, popv)
        # each reason's contribution: the score less what it would be without that evidence
        reasons = harvest_reasons(p, max(0.5 * shift, popv)) if sev >= MEDIUM else []
        if pop.anomalous:
            reasons.append({"code": "population_outlier",
                            "detail": f"unusual among {st.tier or 'unknown'}-tier accounts (score above the "
                                      f"segment's {100 * cfg.population_quantile:g}th percentile)",
                            "value": round(pop.score, 4),
                            "baseline": None if pop.threshold is None else round(pop.threshold, 4),
                            "contribution": round(score - max(hs, 0.5 * shift), 4)})
        reasons += shift_reasons
        if sev >= MEDIUM and rank.accounts >= cfg.rank_min_accounts:
            reasons.append(_rank_reason(rank, st.tier or "unknown"))
        if vetted:
            reasons.append({"code": "vetted_tier",
                            "detail": f"a vetted {st.tier}-tier account: its own behaviour counts one level lower "
                                      "(an institution's evaluations look like a harvest), never a suspension alone",
                            "value": None, "baseline": None, "contribution": 0.0})
        if not reasons:
            reasons.append({"code": "harvest_profile", "detail": "mix of elicitation, templating and volume",
                            "value": round(hs, 4), "baseline": None,
                            "contribution": round(score - max(0.5 * shift, popv), 4)})
        return Finding(ev["account_id"], ev["ts"], "account_behaviour", sev, round(score, 4), tuple(reasons),
                       window_start_ts=max(st.first_ts, ev["ts"] - DAY_MS),
                       window_events=int(round(p["events_day"])), org=st.org)

    def _rank(self, st: AccountState, partition: int, ts: int, hs: float, offset: int | None) -> Rank:
        """Count the account at its harvest score ``hs`` among its tier's accounts on its partition, no
        longer at its previous score (if it was counted in that tier): its rank after the move."""
        segment = st.tier or "unknown"
        key = f"{partition}:{segment}"
        ranks: ScoreRanks | None = self.ranks.get(key)
        if ranks is None:
            ranks = ScoreRanks()
        old = st.rank
        rank = ranks.move((old[0], old[1]) if old is not None and old[2] == segment else None, ts, hs, offset)
        st.rank = [rank.day, rank.bin, segment]
        self.ranks[key] = ranks
        return rank

    def _link_updates(self, st: AccountState, ev: UsageEvent, p: dict[str, float],
                      established: bool) -> list[LinkUpdate]:
        """The summary for the account's link keys. Only a new template (fewer than
        ``template_new_hits``) is announced at every summary, so its buckets learn of the account at once;
        the payment, client and established-template keys hear again when ``established``: the account's
        count doubled or a ``link_interval_ms`` boundary passed (a re-announcement every 30 minutes to
        every key was most of the link stage's work and moved no group's judgement)."""
        cfg = self.cfg
        templates = st.templates(cfg.template_link_min_hits, math.inf if established else cfg.template_new_hits)
        if not (established or templates):
            return []
        s = MemberSummary(ev["account_id"], ev["ts"], st.n, round(p["events_day"], 3),
                          round(max(p["reasoning_share"], p["agentic_tools_share"]), 4),
                          round(p["template_share"], 4), st.mask, st.mask_hour, st.first_ts, st.org, st.tier,
                          round(regularity(p["interarrival_log_std"]), 4), st.payment,
                          round(p["long_output_share"], 4),
                          round(min(p["active_hours"] / max(6.0, min(24.0, p["age_hours"])), 1.0), 4))
        updates: list[LinkUpdate] = []
        if established and st.payment:
            updates.append(LinkUpdate(f"pay:{st.payment}", s))
        if established and st.client:
            updates.append(LinkUpdate(f"cli:{st.client}", s))
        if established and st.network and cfg.network_links:
            updates.append(LinkUpdate(f"net:{st.network}", s))
        if not templates:
            return updates
        bands: dict[int, tuple[str, int]] = {}
        for h in templates:
            for b, key in _template_keys(h, cfg.template_bands):
                if b not in bands:
                    bands[b] = (key, h)
        updates += [LinkUpdate(key, s, h) for _, (key, h) in sorted(bands.items())]
        return updates

    # ------------------------------------------------------------------------------ stage 2: link key

    def on_link_update(self, upd: LinkUpdate, offset: int | None = None) -> GroupSignal | None:
        """Apply one update (in event-time order: ``ordering``). A summary no newer than the member's record
        (the same life of the account, no more events) is a redelivered copy, or was overtaken: nothing
        changes. ``offset`` (updates applied in the order they were read): a redelivery by offset."""
        g: LinkGroup | None = self.links.get(upd.key)
        if g is None:
            g = LinkGroup(upd.key)
        else:
            if offset is not None and offset <= g.applied_offset:
                return None  # a redelivery: already applied
            s = upd.summary
            m = g.members.get(s.account)
            if m is not None and m[7] == s.first_ts and m[1] >= s.n:
                return None
        if offset is not None:
            g.applied_offset = offset
        if not g.add(upd.summary, self.cfg, upd.template):
            self.links[upd.key] = g
            return None
        signal = judge(g, self.cfg)
        self.links[upd.key] = g
        return signal

    # ------------------------------------------------------------------------------ stage 2b: campaigns

    def on_group_signal(self, s: GroupSignal, offset: int | None = None) -> tuple[list[Output], list[Finding]]:
        """A firing link group joins its campaign (see ``campaigns``): the campaign alert when one is due,
        and the named members' findings under the campaign's id."""
        campaign, findings = self.campaign_stage.on_signal(s, offset)
        outputs: list[Output] = []
        if campaign is not None:
            cid = campaign["campaign_id"]
            outputs.append(Output(ALERTS, cid, dict(self.policy.campaign_alert(cid, s.ts, campaign))))
        return outputs, findings

    # ------------------------------------------------------------------------------ stage 3: policy

    def on_finding(self, f: Finding) -> list[Output]:
        ps: PolicyState | None = self.policy_states.get(f.account)
        if ps is None:
            ps = PolicyState()
        alert, action = self.policy.decide(f, ps)
        self.policy_states[f.account] = ps
        out: list[Output] = []
        if alert is not None:
            out.append(Output(ALERTS, f.account, dict(alert)))
        if action is not None:
            out.append(Output(ACTIONS, f.account, dict(action)))
        return out

    def on_verdict(self, v: SignedVerdict) -> tuple[str | None, list[Output]]:
        """Apply an authenticated verdict (``pipeline/contract/verdicts.py`` checked its signature): the reason it is
        refused (or None), and what to send: a false positive on an account with an active action lifts
        it (``Policy.lift``). A refused verdict changes no state, and creates none."""
        ps: PolicyState | None = self.policy_states.get(v["account_id"])
        if ps is None:
            return "unknown_alert: the account has received no alert", []
        refused = self.policy.apply_verdict(v, ps)
        if refused is not None:
            return refused, []
        lift = self.policy.lift(v, ps, v["account_id"])
        self.policy_states[v["account_id"]] = ps
        return None, [] if lift is None else [Output(ACTIONS, v["account_id"], dict(lift))]

    # ------------------------------------------------------------------------------ in process

    def partition(self, account: str) -> int:
        p = self._partition_cache.get(account)
        if p is None:
            p = self._partition_cache[account] = partition_for(account, self.cfg.partitions)
        return p

    def process(self, ev: UsageEvent) -> list[Output]:
        """All three stages for one event, in process (backtests): what the worker does via topics. Link
        updates are applied in event-time order once every partition seen so far has passed them
        (``ordering``), as the worker's link stage does; :meth:`finish` applies the rest at the end."""
        partition = self.partition(ev["account_id"])
        res = self.on_event(ev, partition)
        outputs = res.outputs
        order = self._order
        for upd in res.links:
            if not order.offer(upd, partition):
                outputs += self._link(upd)  # late: at once
        order.advance(partition, ev["ts"])
        released = order.release()
        for upd, _ in released:
            outputs += self._link(upd)
        if released:
            frontier = order.frontier()
            if frontier is not None:
                for signal, _ in self._signals.release(below=frontier):
                    outputs += self._campaign(signal)
        return outputs

    def finish(self) -> list[Output]:
        """The end of the input: the link updates still held, applied in order, then the groups' signals
        still held, and what they give."""
        outputs: list[Output] = []
        for upd, _ in self._order.drain():
            outputs += self._link(upd)
        for signal, _ in self._signals.drain():
            outputs += self._campaign(signal)
        return outputs

    def replay(self, events: Iterable[UsageEvent]) -> Iterator[Output]:
        """``process`` for each event, then ``finish``: everything the events give, in order."""
        for ev in events:
            yield from self.process(ev)
        yield from self.finish()

    def _link(self, upd: LinkUpdate) -> list[Output]:
        """Apply a link update; a signal it gives is held for the campaign stage's event-time order (as
        the worker's campaign stage holds it until every link partition has passed it)."""
        signal = self.on_link_update(upd)
        if signal is not None and not self._signals.offer(signal, self.partition(signal.key)):
            return self._campaign(signal)  # late: at once
        return []

    def _campaign(self, signal: GroupSignal) -> list[Output]:
        outputs, findings = self.on_group_signal(signal)
        for f in findings:
            outputs += self.on_finding(f)
        return outputs


def _rank_reason(rank: Rank, tier: str) -> Reason:
    share = 100 * rank.share
    told = f"{share:.1f}%" if share < 10 else f"{share:.0f}%"
    return {"code": "population_rank",
            "detail": f"a harvest score reached by {told} of the {rank.accounts} {tier}-tier accounts on its "
                      f"partition in the last {RANK_DAYS} days (told, not weighed)",
            "value": round(rank.share, 4), "baseline": float(rank.accounts), "contribution": 0.0}


@lru_cache(maxsize=1 << 16)
def _template_keys(h: int, bands: int) -> tuple[tuple[int, str], ...]:
    """A template's LSH bucket keys, as (band key, link key): the same templates are announced at every
    summary of every account that uses them, so their keys are formatted once (a bounded cache)."""
    return tuple((b, f"tpl:{b >> 64}:{b & 0xFFFFFFFFFFFFFFFF:x}") for b in lsh_bands(h, bands))


def account_state_size(states: MutableMapping[str, AccountState]) -> int:
    """Total serialised bytes of the given account states (for measuring state size)."""
    return sum(len(s.to_bytes()) for s in states.values())
