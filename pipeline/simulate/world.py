"""The simulated world: one seeded random stream, the clock window, identifiers, networks and bookkeeping.

Every random draw of a simulation comes from ``World.rng`` (``numpy.random.default_rng(seed)``), in a fixed
order, so the same scenario and seed always give the same traffic. Nothing reads the wall clock.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

EPOCH_MS = 1_772_409_600_000  # 2026-03-02T00:00:00Z, a Monday
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS

# code, UTC offset (hours), weight among users, main language
COUNTRIES: tuple[tuple[str, float, float, str], ...] = (
    ("US", -6.0, 0.30, "en"),
    ("GB", 0.0, 0.07, "en"),
    ("DE", 1.0, 0.06, "de"),
    ("FR", 1.0, 0.05, "fr"),
    ("IN", 5.5, 0.10, "en"),
    ("JP", 9.0, 0.05, "ja"),
    ("BR", -3.0, 0.05, "pt"),
    ("KR", 9.0, 0.04, "ko"),
    ("CA", -5.0, 0.04, "en"),
    ("SG", 8.0, 0.03, "en"),
    ("AU", 10.0, 0.03, "en"),
    ("ES", 1.0, 0.03, "es"),
    ("MX", -6.0, 0.03, "es"),
    ("NL", 1.0, 0.03, "nl"),
    ("ID", 7.0, 0.03, "id"),
    ("NG", 1.0, 0.02, "en"),
    ("PL", 1.0, 0.02, "pl"),
    ("IT", 1.0, 0.02, "it"),
)
_RESIDENTIAL_OCTETS = (
    24,
    31,
    37,
    46,
    49,
    62,
    67,
    71,
    73,
    77,
    81,
    86,
    88,
    92,
    98,
    108,
    112,
    121,
    124,
    151,
    176,
    177,
    181,
    187,
    189,
    190,
    200,
    201,
    213,
    217,
)
_DATACENTER_OCTETS = (
    3,
    13,
    34,
    35,
    44,
    52,
    54,
    104,
    138,
    139,
    143,
    157,
    159,
    161,
    165,
    167,
    178,
    185,
    188,
    192,
    193,
    194,
    195,
    198,
)


@dataclass
class Accounts:
    """Per-account attributes of one population (arrays indexed by account)."""

    ids: np.ndarray
    tier: np.ndarray
    country: np.ndarray
    language: np.ndarray
    tz: np.ndarray
    ip: np.ndarray
    asn: np.ndarray
    client: np.ndarray
    payment: np.ndarray
    org: np.ndarray
    keys: np.ndarray  # (n, max_keys) api key ids
    n_keys: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, sel: np.ndarray) -> Accounts:
        """The accounts selected by an index or boolean mask (copies)."""
        return Accounts(**{k: np.array(v[sel]) for k, v in self.__dict__.items()})

    def share(self, attr: str, pool: np.ndarray, rng: np.random.Generator) -> None:
        """Give every account a value drawn from a small shared ``pool`` (cards, fingerprints, prefixes)."""
        getattr(self, attr)[:] = pool[rng.integers(0, len(pool), size=len(self))]


@dataclass
class World:
    """Shared state of one simulation run: randomness, time window, id factories, networks and records."""

    seed: int
    scale: float
    hard: bool
    t0: int
    t1: int
    release_ts: int
    rng: np.random.Generator
    labels: list[dict] = field(default_factory=list)
    label_population: list[str] = field(default_factory=list)
    populations: dict[str, dict] = field(default_factory=dict)
    campaigns: dict[str, dict] = field(default_factory=dict)
    _used: set[str] = field(default_factory=set)
    _kinds: dict[str, int] = field(default_factory=dict)
    isp_asns: dict[str, np.ndarray] = field(default_factory=dict)
    datacenter_asns: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    reseller_ips: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))
    reseller_asn: int = 0
    mobile_ips: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))
    mobile_asns: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    _popular_clients: np.ndarray | None = None

    @classmethod
    def create(
        cls,
        scenario: str,
        seed: int,
        scale: float,
        hard: bool,
        days: tuple[float, float],
        release_frac: tuple[float, float],
    ) -> World:
        """Draw the window (start offset, length) and the model release time, then the networks.

        The random stream is seeded with the seed and the scenario name, so two scenarios at one seed
        do not share their background traffic.
        """
        rng = np.random.default_rng([seed, zlib.crc32(scenario.encode())])
        t0 = EPOCH_MS + int(rng.integers(0, 6 * 60)) * 60_000
        length = int(rng.uniform(*days) * DAY_MS)
        release = t0 + int(rng.uniform(*release_frac) * length)
        w = cls(seed=seed, scale=scale, hard=hard, t0=t0, t1=t0 + length, release_ts=release, rng=rng)
        for code, *_ in COUNTRIES:
            w.isp_asns[code] = rng.choice(np.arange(1_000, 60_000), size=3, replace=False)
        w.datacenter_asns = rng.choice(np.arange(13_000, 64_000), size=9, replace=False)
        # A proxy/API reseller: a few datacenter prefixes on its own ASN, shared by honest customers
        # and by campaigns that route through it.
        w.reseller_asn = int(w.datacenter_asns[-1])
        w.datacenter_asns = w.datacenter_asns[:-1]
        w.reseller_ips = w.prefixes(int(rng.integers(4, 9)), datacenter=True)
        # Mobile carriers' carrier-grade NAT: many unrelated users behind a few prefixes.
        w.mobile_ips = w.prefixes(40, v6_share=0.3)
        w.mobile_asns = rng.choice(np.arange(60_000, 64_000), size=40)
        return w

    # ---- draws from ranges -------------------------------------------------------------------------
    def u(self, r: tuple[float, float]) -> float:
        """A uniform draw from a ``(lo, hi)`` range."""
        return float(self.rng.uniform(r[0], r[1]))

    def uniforms(self, r: tuple[float, float], n: int) -> np.ndarray:
        """``n`` uniform draws from a ``(lo, hi)`` range (one per account)."""
        return self.rng.uniform(r[0], r[1], size=n)

    def i(self, r: tuple[int, int]) -> int:
        """An integer draw from an inclusive ``(lo, hi)`` range (not scaled)."""
        return int(self.rng.integers(r[0], r[1], endpoint=True))

    def count(self, r: tuple[int, int], minimum: int = 1) -> int:
        """A population size drawn from ``(lo, hi)`` and multiplied by the run's scale."""
        return max(minimum, round(self.i(r) * self.scale))

    @property
    def days(self) -> float:
        """Length of the event-time window in days."""
        return (self.t1 - self.t0) / DAY_MS

    # ---- identifiers -------------------------------------------------------------------------------
    def hex_ids(self, n: int, nchars: int, prefix: str = "") -> np.ndarray:
        """``n`` fresh random hex identifiers, unique within the run."""
        out: list[str] = []
        while len(out) < n:
            raw = self.rng.bytes((n - len(out)) * ((nchars + 1) // 2)).hex()
            for j in range(0, len(raw), ((nchars + 1) // 2) * 2):
                s = prefix + raw[j : j + nchars]
                if s not in self._used:
                    self._used.add(s)
                    out.append(s)
        return np.array(out, dtype=object)

    def campaign_id(self, kind: str) -> str:
        """Next campaign id of a kind: ``camp-<kind>-<n>``."""
        self._kinds[kind] = self._kinds.get(kind, 0) + 1
        return f"camp-{kind}-{self._kinds[kind]}"

    def prefixes(self, n: int, datacenter: bool = False, v6_share: float = 0.0) -> np.ndarray:
        """``n`` distinct made-up client prefixes (IPv4 /24, some IPv6 /48), unique within the run."""
        octets = _DATACENTER_OCTETS if datacenter else _RESIDENTIAL_OCTETS
        out: list[str] = []
        while len(out) < n:
            if self.rng.random() < v6_share:
                a, b = self.rng.integers(0, 0xFFFF, size=2)
                s = f"2a0{self.rng.integers(1, 10)}:{a:x}:{b:x}::/48"
            else:
                o1 = octets[int(self.rng.integers(len(octets)))]
                o2, o3 = self.rng.integers(0, 256, size=2)
                s = f"{o1}.{o2}.{o3}.0/24"
            if s not in self._used:
                self._used.add(s)
                out.append(s)
        return np.array(out, dtype=object)

    def popular_clients(self) -> np.ndarray:
        """Five client fingerprints shared by many unrelated users (popular SDKs and browsers).

        Drawn on first use only, so scenarios that never ask for them keep their random stream.
        """
        if self._popular_clients is None:
            self._popular_clients = self.hex_ids(5, 16)
        return self._popular_clients

    def countries(self, n: int, pool: tuple[str, ...] | None = None) -> np.ndarray:
        """``n`` country codes drawn by user weight (or uniformly from ``pool``)."""
        if pool is not None:
            return np.array(pool, dtype=object)[self.rng.integers(0, len(pool), size=n)]
        w = np.array([c[2] for c in COUNTRIES])
        idx = self.rng.choice(len(COUNTRIES), size=n, p=w / w.sum())
        return np.array([COUNTRIES[k][0] for k in idx], dtype=object)

    def accounts(
        self,
        n: int,
        *,
        tiers: tuple[str, ...],
        tier_p: tuple[float, ...] | None = None,
        countries: np.ndarray | None = None,
        org: str | None = None,
        max_keys: int = 1,
        residential: bool = True,
    ) -> Accounts:
        """``n`` accounts with their own ids, payment, client fingerprint, home prefix and api keys.

        Populations then overwrite what their members share (an org's payment card, a campus prefix).
        """
        rng = self.rng
        cc = countries if countries is not None else self.countries(n)
        info = {c[0]: c for c in COUNTRIES}
        tz = np.array([info[c][1] for c in cc]) + rng.choice([-1.0, 0.0, 0.0, 0.0, 1.0], size=n)
        lang = np.array([info[c][3] if rng.random() > 0.12 else "en" for c in cc], dtype=object)
        asn = np.array([int(rng.choice(self.isp_asns[c])) for c in cc], dtype=np.int64)
        if not residential:
            asn = rng.choice(self.datacenter_asns, size=n)
        n_keys = rng.integers(1, max_keys, size=n, endpoint=True)
        keys = self.hex_ids(n * max_keys, 20, "key_").reshape(n, max_keys)
        return Accounts(
            ids=self.hex_ids(n, 12, "acct_"),
            tier=np.array(tiers, dtype=object)[rng.choice(len(tiers), size=n, p=tier_p)],
            country=cc,
            language=lang,
            tz=tz,
            ip=self.prefixes(n, datacenter=not residential, v6_share=0.1 if residential else 0.0),
            asn=asn,
            client=self.hex_ids(n, 16),
            payment=self.hex_ids(n, 24),
            org=np.array([org] * n, dtype=object),
            keys=keys,
            n_keys=n_keys,
        )

    # ---- bookkeeping -------------------------------------------------------------------------------
    def register(
        self, population: str, accounts: Accounts, n_events: int, campaign: tuple[str, str] | None = None
    ) -> None:
        """Record labels for a population's accounts, and its size (and campaign) in the run info."""
        cid = campaign[0] if campaign else None
        label = "distillation" if campaign else "benign"
        self.labels.extend({"account_id": a, "label": label, "campaign_id": cid} for a in accounts.ids)
        self.label_population.extend([population] * len(accounts))
        pop = self.populations.setdefault(population, {"accounts": 0, "events": 0})
        pop["accounts"] += len(accounts)
        pop["events"] += n_events
        if campaign:
            self.campaigns[campaign[0]] = {
                "kind": campaign[1],
                "n_accounts": len(accounts),
                "n_events": n_events,
            }
