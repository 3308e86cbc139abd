"""When requests happen: diurnal arrivals in local time, sessions of back-to-back requests, steady streams.

All functions are vectorised over accounts and return event times in epoch milliseconds (int64).
"""

from __future__ import annotations

import numpy as np

from .world import HOUR_MS, World

# Relative request intensity by local hour, from typical consumer and office traffic curves.
HUMAN = np.array(
    [
        0.25,
        0.15,
        0.1,
        0.08,
        0.08,
        0.12,
        0.25,
        0.45,
        0.65,
        0.8,
        0.9,
        0.95,
        0.9,
        0.9,
        0.95,
        0.95,
        0.9,
        0.85,
        0.85,
        0.9,
        1.0,
        0.95,
        0.75,
        0.45,
    ]
)
WORK = np.array(
    [
        0.02,
        0.01,
        0.01,
        0.01,
        0.01,
        0.02,
        0.05,
        0.2,
        0.6,
        0.95,
        1.0,
        1.0,
        0.7,
        0.9,
        1.0,
        1.0,
        0.95,
        0.8,
        0.5,
        0.3,
        0.25,
        0.2,
        0.12,
        0.05,
    ]
)
EVENING = np.array(
    [
        0.2,
        0.1,
        0.05,
        0.03,
        0.03,
        0.03,
        0.05,
        0.1,
        0.3,
        0.6,
        0.8,
        0.9,
        0.8,
        0.9,
        1.0,
        1.0,
        1.0,
        0.9,
        0.8,
        0.85,
        0.9,
        0.85,
        0.7,
        0.4,
    ]
)
FLAT = np.ones(24)


def local_hour(ts: np.ndarray, tz: np.ndarray) -> np.ndarray:
    """Local hour of day (0..23) of each timestamp, given each event's UTC offset in hours."""
    return (np.floor(ts / HOUR_MS + tz) % 24).astype(np.int64)


def diurnal(
    world: World,
    per_day: np.ndarray,
    tz: np.ndarray,
    profile: np.ndarray,
    t0: int | None = None,
    t1: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Poisson arrivals per account at ``per_day`` a day on average, shaped by ``profile`` in local time.

    Returns ``(account_index, ts)``. Rejection sampling: uniform candidates, kept with probability
    ``profile[local hour] / max(profile)``.
    """
    rng = world.rng
    lo, hi = (world.t0 if t0 is None else t0), (world.t1 if t1 is None else t1)
    keep_rate = profile.mean() / profile.max()
    expected = per_day * (hi - lo) / (24 * HOUR_MS) / keep_rate
    cand = rng.poisson(expected)
    acct = np.repeat(np.arange(len(per_day)), cand)
    ts = rng.integers(lo, hi, size=len(acct))
    keep = rng.random(len(acct)) < (profile / profile.max())[local_hour(ts, tz[acct])]
    return acct[keep], ts[keep]


def group_positions(sizes: np.ndarray) -> np.ndarray:
    """Position of each element within its group, for consecutive groups of the given sizes."""
    starts = np.repeat(np.cumsum(sizes) - sizes, sizes)
    return np.arange(int(sizes.sum())) - starts


def sessions(
    world: World,
    starts: np.ndarray,
    sizes: np.ndarray,
    gap_median_s: float | np.ndarray,
    gap_sigma: float = 0.6,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Expand sessions into requests: each session sends ``sizes[i]`` requests from ``starts[i]``.

    Gaps between consecutive requests are log-normal around ``gap_median_s`` (scalar or per session).
    Returns ``(session_index, position_in_session, ts)``.
    """
    rng = world.rng
    sess = np.repeat(np.arange(len(sizes)), sizes)
    pos = group_positions(sizes)
    med = np.broadcast_to(np.asarray(gap_median_s, dtype=float), (len(sizes),))[sess]
    gaps = med * 1000 * rng.lognormal(0.0, gap_sigma, size=len(sess))
    gaps[pos == 0] = 0.0
    csum = np.cumsum(gaps)
    base = csum[np.repeat(np.cumsum(sizes) - sizes, sizes)] if len(sess) else csum
    ts = starts[sess] + (csum - base).astype(np.int64)
    return sess, pos, ts


def steady(world: World, interval_s: float, jitter: float, t0: int, t1: int) -> np.ndarray:
    """A near-constant stream: one request every ``interval_s`` seconds (relative jitter ``jitter``)."""
    n = max(1, int((t1 - t0) / 1000 / interval_s))
    gaps = interval_s * 1000 * np.clip(1 + jitter * world.rng.standard_normal(n), 0.05, None)
    ts = t0 + np.cumsum(gaps).astype(np.int64)
    return ts[ts < t1]
