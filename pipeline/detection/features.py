"""Per-account behaviour state: small decayed counters on two time scales, updated in event time.

Everything an account needs fits in a few hundred bytes (``AccountState.to_bytes``): exponentially
decayed counts with a one-hour and a one-day half-life, a rolling 24-hour activity bitmap, an EWMA of
inter-arrival times, and a space-saving sketch of prompt templates (SimHash representatives). Nothing
here reads the clock: time is the events' ``ts``.

The decay is lazy, so an event touches only the counters it changes. Every decayed counter (``day``,
``hour``, the template and model counts) is stored *scaled to a reference time* ``ref`` (an absolute
hour, ``ref_hour``): the true value at the account's newest time ``last_ts`` is

    stored × 2^-((last_ts - ref) / half_life)

An event at ``last_ts`` adds its weight times ``2^((last_ts - ref) / half_life)`` (``_gains``), which is
the same sum as decaying everything and adding the weight, in exact arithmetic. Shares are ratios of
counters on one scale, so the factor cancels; only absolute counts (``events_day``, template and model
counts) are divided by it. When ``last_ts`` runs ``RESCALE_MS`` past ``ref`` every counter is decayed
once and ``ref`` moves up, so the hour-scale factor stays below 2^24 and no double can overflow however
long an account sleeps.
"""

from __future__ import annotations

import math
import zlib
from typing import Any

import msgpack

from pipeline.contract.models import CAPABILITY_ORDER, UsageEvent
from pipeline.detection.config import DAY_MS, HOUR_MS, DetectionConfig
from pipeline.detection.packing import field_of

_CAP_INDEX = {c: i for i, c in enumerate(CAPABILITY_ORDER)}
AGENTIC = frozenset({"agentic", "coding"})

# day-scale counters
D_N, D_OUT_K, D_IN_K, D_LONG, D_REASON, D_AGENT_TOOLS, D_TPL_HIT, D_ERR, D_RATE, D_REFUSED, D_TURNS, D_TOOLS = range(12)
D_CAP0 = 12
N_DAY = D_CAP0 + len(CAPABILITY_ORDER)
# hour-scale counters
H_N, H_REASON, H_TPL_HIT = range(3)
N_HOUR = 3

LN2 = math.log(2.0)
STATE_VERSION = 6
"""3: lazily decayed counters; the slot of the (derivable) ``mask_hour`` carries ``ref_hour``; the last
hour's new-model use is derived from the model list when profiled, no longer kept as an hour counter.
4: counters at zero (most of a typical account's) are written as the msgpack integer 0, 1 byte instead of
9, and read back as 0.0. 5: the account's latest client network (``network``, its ``ip_prefix``) at the
end. 6: where the account is counted among its segment's harvest scores (``rank``: day, bin, segment;
``calibration``) at the end. Versions 3 to 5 are still read (not counted yet: the next summary counts the
account)."""
_READABLE_VERSIONS = (3, 4, 5, STATE_VERSION)


def _compact(counters: list[float]) -> list[float | int]:
    """Counters with 0.0 as 0 (they are sums of positive weights, so never -0.0: nothing is lost)."""
    return [x or 0 for x in counters]


RESCALE_MS = DAY_MS
"""How far ``last_ts`` may run ahead of the counters' reference time before they are rescaled."""
_DAY_RATE = LN2 / DAY_MS
_HOUR_RATE = LN2 / HOUR_MS
_LOG2_CAPS = math.log2(len(CAPABILITY_ORDER))
MAX_MODELS = 3
RECENT_IDS = 8
_DAY_BITS = (1 << 24) - 1


def _decay(dt_ms: int, half_life_ms: int) -> float:
    return math.exp(-LN2 * dt_ms / half_life_ms) if dt_ms > 0 else 1.0


def roll_mask(mask: int, from_hour: int, to_hour: int) -> int:
    """Advance a rolling 24-hour activity bitmap (bit = hour of day) from one absolute hour to a later one.

    >>> bin(roll_mask(0b111, 2, 3))   # hour 3 of the day was 24 h ago: its bit is cleared
    '0b111'
    >>> roll_mask(0xFFFFFF, 0, 24)    # a whole day later nothing of the old day is left
    0
    """
    gap = to_hour - from_hour
    if gap <= 0:
        return mask
    if gap >= 24:
        return 0
    cleared = ((1 << gap) - 1) << ((from_hour + 1) % 24)  # the hours passed, as bits; may run past bit 23
    return mask & ~(cleared | (cleared >> 24)) & _DAY_BITS


class AccountState:
    """The behaviour of one account, as running statistics. See the module docstring."""

    __slots__ = (
        "n", "first_ts", "last_ts", "day", "hour", "mask", "ref_hour", "ia_mean", "ia_var",
        "tpl", "models", "tier", "org", "payment", "client", "last_summary_ts", "last_summary_n",
        "recent_ids", "applied_offset", "late", "network", "rank",
    )

    def __init__(self) -> None:
        self.n = 0
        self.first_ts = 0
        self.last_ts = 0
        self.day = [0.0] * N_DAY
        self.hour = [0.0] * N_HOUR
        self.mask = 0
        self.ref_hour = 0  # reference time of the decayed counters (absolute hour): see the module docstring
        self.ia_mean = 0.0  # EWMA of log10(inter-arrival seconds)
        self.ia_var = 0.0
        self.tpl: list[list[Any]] = []  # [simhash int, decayed count, decayed inherited error] (scaled)
        self.models: list[list[Any]] = []  # [model id, day count, hour count]
        self.tier: str | None = None
        self.org: str | None = None
        self.payment: str | None = None
        self.client: str | None = None
        self.last_summary_ts = 0
        self.last_summary_n = 0
        self.recent_ids: list[int] = []
        self.applied_offset = -1
        self.late = 0  # events that arrived later than the allowed lateness: counted, not applied
        self.network: str | None = None  # the latest ``ip_prefix``: a network link key of the account
        self.rank: list[Any] | None = None  # [day, bin, segment] where ``calibration.ScoreRanks`` counts it

    # ------------------------------------------------------------------------------------ update

    def too_late(self, ts: int, cfg: DetectionConfig) -> bool:
        """Whether an event is older than the account's newest by more than the allowed lateness."""
        return self.n > 0 and ts < self.last_ts - cfg.max_lateness_ms

    def count_late(self, event_id: str) -> None:
        """Record a too-late event: counted and remembered for de-duplication, its features not applied."""
        self.late += 1
        ids = self.recent_ids
        ids.append(event_id_hash(event_id))
        if len(ids) > RECENT_IDS:
            del ids[0]

    def seen(self, event_id: str) -> bool:
        """Whether this event id is among the account's recent ones (a redelivered duplicate)."""
        return event_id_hash(event_id) in self.recent_ids

    @property
    def mask_hour(self) -> int:
        """The absolute hour the activity bitmap is current to: the newest event's (derived, not stored)."""
        return self.last_ts // HOUR_MS

    def _gains(self) -> tuple[float, float]:
        """Day- and hour-scale factors between stored counters and true ones at ``last_ts``."""
        dt = self.last_ts - self.ref_hour * HOUR_MS
        return math.exp(_DAY_RATE * dt), math.exp(_HOUR_RATE * dt)

    def _rescale(self, ts: int) -> None:
        """Decay every counter to the hour of ``ts`` and make that the reference (rarely: see RESCALE_MS)."""
        ref = ts // HOUR_MS
        dt = ref * HOUR_MS - self.ref_hour * HOUR_MS
        fd, fh = _decay(dt, DAY_MS), _decay(dt, HOUR_MS)
        self.day = [x * fd for x in self.day]
        self.hour = [x * fh for x in self.hour]
        for slot in self.tpl:
            slot[1] *= fd
            slot[2] *= fd
        for m in self.models:
            m[1] *= fd
            m[2] *= fh
        self.ref_hour = ref

    def day_count(self) -> float:
        """The decayed (one-day half-life) number of events at ``last_ts``."""
        return self.day[D_N] / self._gains()[0]

    def update(self, ev: UsageEvent, cfg: DetectionConfig) -> None:
        """Apply one event (already de-duplicated) to the state."""
        self.apply(ev, cfg, event_id_hash(ev["event_id"]))

    def apply(self, ev: UsageEvent, cfg: DetectionConfig, id_hash: int) -> None:
        """``update`` with the event id's hash already computed (the engine has it from ``seen``)."""
        last = self._advance_clock(ev["ts"])
        # an event counts at ``last_ts`` (a late one too, as if just arrived): weight 1 there is ``g`` here
        since_ref = last - self.ref_hour * HOUR_MS
        g, gh = math.exp(_DAY_RATE * since_ref), math.exp(_HOUR_RATE * since_ref)  # as ``_gains``
        self._count(ev, cfg, g, gh)
        self._note_attributes(ev, g, gh)
        ids = self.recent_ids
        ids.append(id_hash)
        if len(ids) > RECENT_IDS:
            del ids[0]

    def _advance_clock(self, ts: int) -> int:
        """Move the account's clock to an event at ``ts``: pacing, the hours bitmap, the decay reference.
        Returns ``last_ts`` after it (a late event leaves it where it was)."""
        if self.n == 0:
            self.first_ts = ts
            self.last_ts = ts
            self.ref_hour = ts // HOUR_MS
        last = self.last_ts
        dt = ts - last
        if dt > 0:
            gap_s = dt / 1000.0 if dt > 50 else 0.05
            x = math.log10(gap_s)
            if self.n == 1:
                self.ia_mean = x
            else:
                d = x - self.ia_mean
                self.ia_mean += 0.05 * d
                self.ia_var = 0.95 * (self.ia_var + 0.05 * d * d)
            h_abs = ts // HOUR_MS
            h_last = last // HOUR_MS
            if h_abs > h_last:
                self.mask = roll_mask(self.mask, h_last, h_abs)
            self.last_ts = last = ts
            if ts - self.ref_hour * HOUR_MS >= RESCALE_MS:
                self._rescale(ts)
        self.mask |= 1 << (ts // HOUR_MS % 24)  # a late event marks its own hour, as it always did
        return last

    def _count(self, ev: UsageEvent, cfg: DetectionConfig, g: float, gh: float) -> None:
        """Add the event to the decayed daily and hourly counters, with weights ``g`` and ``gh``."""
        day, hour = self.day, self.hour
        self.n += 1
        day[D_N] += g
        hour[H_N] += gh
        out_t = ev["output_tokens"]
        day[D_OUT_K] += out_t / 1000.0 * g
        day[D_IN_K] += ev["input_tokens"] / 1000.0 * g
        if out_t >= cfg.long_output_tokens:
            day[D_LONG] += g
        if ev["reasoning_requested"]:
            day[D_REASON] += g
            hour[H_REASON] += gh
        cap = ev["capability"]
        n_tools = ev["n_tools"] or 0
        if n_tools > 0:
            if cap in AGENTIC:
                day[D_AGENT_TOOLS] += g
            day[D_TOOLS] += (n_tools if n_tools < 100 else 100) * g
        if cap is not None:
            day[D_CAP0 + _CAP_INDEX[cap]] += g
        turns = ev["n_turns"] or 1
        day[D_TURNS] += (turns if turns < 200 else 200) * g
        status = ev["status"]
        if status != "ok":
            day[D_ERR if status == "error" else D_RATE if status == "rate_limited" else D_REFUSED] += g
        simhash = ev["prompt_simhash"]
        if simhash is not None and self._template_hit(int(simhash, 16), cfg, g):
            day[D_TPL_HIT] += g
            hour[H_TPL_HIT] += gh

    def _note_attributes(self, ev: UsageEvent, g: float, gh: float) -> None:
        """The model mix, and the latest of each identity attribute the event carries (tier, org, card,
        client, network)."""
        model = ev["model"]
        for m in self.models:
            if m[0] == model:
                m[1] += g
                m[2] += gh
                break
        else:
            self._new_model(model, g, gh)
        v = ev["account_tier"]
        if v is not None:
            self.tier = v
        v = ev["org_id"]
        if v is not None:
            self.org = v
        v = ev["payment_fingerprint"]
        if v is not None:
            self.payment = v
        v = ev["client_fingerprint"]
        if v is not None:
            self.client = v
        v = ev["ip_prefix"]
        if v is not None:
            self.network = v

    def _template_hit(self, h: int, cfg: DetectionConfig, g: float) -> bool:
        radius = cfg.template_radius
        for slot in self.tpl:
            if (slot[0] ^ h).bit_count() <= radius:
                slot[1] += g
                return True
        tpl = self.tpl
        if len(tpl) < cfg.template_slots:
            tpl.append([h, g, 0.0])
        else:  # space-saving: the (first) weakest representative gives way; its count is inherited as error
            counts = [slot[1] for slot in tpl]
            inherited = min(counts)
            tpl[counts.index(inherited)] = [h, inherited + g, inherited]
        return False

    def _new_model(self, model: str, g: float, gh: float) -> None:
        """A model the account has not used lately: the least used of the tracked ones gives way."""
        models = self.models
        if len(models) >= MAX_MODELS:
            models.remove(min(models, key=lambda m: m[1]))
        models.append([model, g, gh])

    def _new_model_use(self, g: float, gh: float) -> float:
        """The last hour's (scaled) use of models other than the one dominant before this hour."""
        models = self.models
        if len(models) < 2:
            return 0.0
        # dominant before this hour: the most day-scale use less the last hour's (true values, so unscaled)
        dominant = max(models, key=lambda m: m[1] / g - m[2] / gh)
        return sum(m[2] for m in models if m is not dominant)

    # ------------------------------------------------------------------------------------ features

    def profile(self) -> dict[str, float]:
        """The window's behaviour as shares and rates (all finite; shares in 0..1)."""
        day, hour = self.day, self.hour
        g, gh = self._gains()  # shares are ratios on one scale; absolute counts are divided by the gain
        n = day[D_N]
        if n < 1e-9 * g:
            n = 1e-9 * g
        nh = hour[H_N]
        if nh < 1e-9 * gh:
            nh = 1e-9 * gh
        caps = day[D_CAP0:N_DAY]
        total_caps = sum(caps)
        if total_caps > 0:
            log2 = math.log2
            entropy = -sum([p * log2(p) for p in [c / total_caps for c in caps if c > 0]]) / _LOG2_CAPS
            top_share = max(caps) / total_caps
        else:
            entropy, top_share = 1.0, 0.0
        in_k = day[D_IN_K]
        if in_k < 1e-3 * g:
            in_k = 1e-3 * g
        shares = [x / n for x in day[:D_CAP0]]  # by counter index; the rates are ratios to n as well
        for i in (D_REASON, D_AGENT_TOOLS, D_TPL_HIT, D_LONG, D_ERR, D_RATE, D_REFUSED):
            if shares[i] > 1.0:
                shares[i] = 1.0
        hour_shares = [x / nh if x < nh else 1.0 for x in hour]
        return {
            "events_day": day[D_N] / g * LN2,  # decayed count → events per day (half-life one day)
            "events_hour": hour[H_N] / gh * LN2 * 24.0,  # hour scale, as a per-day rate
            "reasoning_share": shares[D_REASON],
            "agentic_tools_share": shares[D_AGENT_TOOLS],
            "template_share": shares[D_TPL_HIT],
            "long_output_share": shares[D_LONG],
            "out_in_ratio": day[D_OUT_K] / in_k,
            "output_k_per_req": shares[D_OUT_K],
            "capability_entropy": entropy,
            "capability_top_share": top_share,
            "error_share": shares[D_ERR],
            "rate_limited_share": shares[D_RATE],
            "refused_share": shares[D_REFUSED],
            "tools_per_req": shares[D_TOOLS],
            "turns_per_req": shares[D_TURNS],
            "active_hours": float(self.mask.bit_count()),
            "age_hours": (self.last_ts - self.first_ts) / HOUR_MS + 1.0,
            "interarrival_log_std": math.sqrt(self.ia_var) if self.ia_var > 0.0 else 0.0,
            "reasoning_share_hour": hour_shares[H_REASON],
            "template_share_hour": hour_shares[H_TPL_HIT],
            "new_model_share_hour": min(self._new_model_use(g, gh) / nh, 1.0),
            "templates": float(sum([1 for s in self.tpl if s[1] - s[2] >= 3.0 * g])),
            # share of the day's requests that went to the account's most used model: an evaluation sweeps
            # several models, a distiller harvests one teacher
            "model_top_share": min(max([m[1] for m in self.models], default=0.0) / n, 1.0),
        }

    def templates(self, min_hits: float, below: float = math.inf) -> list[int]:
        """SimHashes of the account's established templates: representatives seen at least ``min_hits``
        times for certain (count less the error inherited from the representative it replaced); with
        ``below``, only those seen fewer times than that (the newly established)."""
        g = self._gains()[0]
        need, limit = min_hits * g, below * g
        return [int(s[0]) for s in self.tpl if need <= s[1] - s[2] < limit]

    def mask_at(self, hour_abs: int) -> int:
        """The 24-hour activity bitmap as seen at a later absolute hour."""
        return roll_mask(self.mask, self.mask_hour, hour_abs)

    # ------------------------------------------------------------------------------------ codec

    def to_bytes(self) -> bytes:
        """Compact msgpack encoding: doubles (zero counters as 0), read back as the same doubles, so a
        restored state continues exactly as the original."""
        return msgpack.packb(
            [STATE_VERSION, self.n, self.first_ts, self.last_ts, _compact(self.day), _compact(self.hour),
             self.mask, self.ref_hour, self.ia_mean, self.ia_var,
             [[h, a or 0, b or 0] for h, a, b in self.tpl], [[m, a or 0, b or 0] for m, a, b in self.models],
             self.tier, self.org, self.payment, self.client, self.last_summary_ts, self.last_summary_n,
             self.recent_ids, self.applied_offset, self.late, self.network, self.rank],
        )

    @staticmethod
    def last_ts_of(raw: bytes) -> int:
        """``from_bytes(raw).last_ts`` without decoding the rest (the state sweeper reads only this)."""
        return int(field_of(raw, 3, _READABLE_VERSIONS, "account state"))

    @classmethod
    def from_bytes(cls, raw: bytes) -> AccountState:
        v = msgpack.unpackb(raw, strict_map_key=True)
        if v[0] not in _READABLE_VERSIONS:
            raise ValueError(f"account state version {v[0]} is not one of {_READABLE_VERSIONS}")
        s = cls()
        (_, s.n, s.first_ts, s.last_ts, day, hour, s.mask, s.ref_hour, s.ia_mean, s.ia_var, tpl,
         models, s.tier, s.org, s.payment, s.client, s.last_summary_ts, s.last_summary_n, s.recent_ids,
         s.applied_offset, s.late) = v[:21]
        if v[0] >= 5:
            s.network = v[21]
        if v[0] >= 6:
            s.rank = v[22]
        s.day = [float(x) for x in day]
        s.hour = [float(x) for x in hour]
        s.tpl = [[h, float(a), float(b)] for h, a, b in tpl]
        s.models = [[m, float(a), float(b)] for m, a, b in models]
        return s


def event_id_hash(event_id: str) -> int:
    """The 32-bit hash by which ``recent_ids`` remembers an event id."""
    # 32 bits are enough to recognise a redelivery among the last few events of one account
    return zlib.crc32(event_id.encode("utf-8"))
