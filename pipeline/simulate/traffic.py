"""What each request looks like: model choice, token counts, status, latency, and the per-event columns.

A population decides who sends what when; ``events`` turns that into UsageEvent columns, adding what the
gateway would see (api key, status, latency) in one vectorised pass.
"""

from __future__ import annotations

import numpy as np

from .world import HOUR_MS, Accounts, World

MODELS = ("frontier-1", "frontier-1-mini", "frontier-2")
NEW_MODEL = "frontier-2"
_TTFT_MS = {"frontier-1": 450.0, "frontier-1-mini": 220.0, "frontier-2": 520.0}
_MS_PER_TOKEN = {"frontier-1": 21.0, "frontier-1-mini": 8.5, "frontier-2": 17.0}
BENIGN_STATUS = (0.004, 0.003, 0.004)  # error, rate_limited, refused


def lognormal_int(
    world: World, median: float | np.ndarray, sigma: float, n: int, lo: int = 0, hi: int = 1_000_000
) -> np.ndarray:
    """``n`` log-normal integers around ``median`` (scalar or per event), clipped to ``[lo, hi]``."""
    x = np.asarray(median, dtype=float) * world.rng.lognormal(0.0, sigma, size=n)
    return np.clip(np.rint(x), lo, hi).astype(np.int64)


def pick(world: World, options: tuple[str, ...], n: int, p: tuple[float, ...] | None = None) -> np.ndarray:
    """``n`` draws from ``options`` (object array of str) with optional probabilities."""
    return np.array(options, dtype=object)[world.rng.choice(len(options), size=n, p=p)]


def models(
    world: World,
    ts: np.ndarray,
    mini_frac: float,
    adopt_max: float,
    adopt_tau_h: float,
    switch_ts: int | None = None,
) -> np.ndarray:
    """Model served per request: frontier-1 or its mini, moving to frontier-2 after its release.

    After ``world.release_ts`` the share on the new model rises as ``adopt_max * (1 - exp(-dt / tau))``;
    with ``switch_ts`` every request from that time on goes to the new model (an all-at-once migration).
    """
    rng = world.rng
    n = len(ts)
    out = np.where(rng.random(n) < mini_frac, MODELS[1], MODELS[0]).astype(object)
    dt_h = np.maximum(ts - world.release_ts, 0) / HOUR_MS
    p_new = np.where(ts >= world.release_ts, adopt_max * (1 - np.exp(-dt_h / max(adopt_tau_h, 1e-6))), 0.0)
    out[rng.random(n) < p_new] = NEW_MODEL
    if switch_ts is not None:
        out[ts >= switch_ts] = NEW_MODEL
    return out


def events(
    world: World,
    acc: Accounts,
    idx: np.ndarray,
    ts: np.ndarray,
    *,
    model: np.ndarray,
    input_tokens: np.ndarray,
    output_tokens: np.ndarray,
    simhash: np.ndarray,
    capability: np.ndarray,
    reasoning: np.ndarray,
    n_turns: np.ndarray | int = 1,
    n_tools: np.ndarray | int = 0,
    endpoint: np.ndarray | str = "messages",
    status_p: tuple[float, float, float] = BENIGN_STATUS,
    chars_per_token: float = 3.8,
    ip: np.ndarray | None = None,
    asn: np.ndarray | None = None,
    no_key_share: float = 0.0,
) -> dict[str, np.ndarray]:
    """Build the UsageEvent columns (all but ``schema_version`` and ``event_id``) for one population.

    ``idx`` indexes ``acc`` per event; ``ip``/``asn`` override the account's home network per event
    (proxies, mobile networks). Failed requests get no (or few) output tokens and short latencies.
    """
    n = len(ts)
    status = _status(world, n, status_p)
    out = _output_tokens(world, status, output_tokens)
    ep = _full(endpoint, n, object)
    latency = _latency(world, model, input_tokens, out, status, ep == "batch")
    key = _api_keys(world, acc, idx, no_key_share)
    chars = np.rint(input_tokens * chars_per_token * world.rng.uniform(0.85, 1.15, n)).astype(np.int64)
    return {
        "ts": ts.astype(np.int64),
        "account_id": acc.ids[idx],
        "model": model,
        "input_tokens": input_tokens.astype(np.int64),
        "output_tokens": out,
        "status": status,
        "org_id": acc.org[idx],
        "api_key_id": key,
        "endpoint": ep,
        "latency_ms": np.rint(latency).astype(np.int64),
        "ip_prefix": acc.ip[idx] if ip is None else ip,
        "asn": acc.asn[idx] if asn is None else asn,
        "client_fingerprint": acc.client[idx],
        "payment_fingerprint": acc.payment[idx],
        "account_tier": acc.tier[idx],
        "country": acc.country[idx],
        "prompt_simhash": simhash,
        "prompt_chars": chars,
        "n_turns": _full(n_turns, n, np.int64),
        "n_tools": _full(n_tools, n, np.int64),
        "reasoning_requested": _full(reasoning, n, bool),
        "capability": capability,
        "language": acc.language[idx],
    }


def _full(v: np.ndarray | int | str, n: int, dtype: type | str) -> np.ndarray:
    """``v`` as a column of ``n`` values: a scalar repeated, an array as it is."""
    return np.full(n, v, dtype=dtype) if np.isscalar(v) else np.asarray(v)


def _api_keys(world: World, acc: Accounts, idx: np.ndarray, no_key_share: float) -> np.ndarray:
    """One of its account's API keys per request; none for a ``no_key_share`` of them."""
    rng = world.rng
    key = acc.keys[idx, rng.integers(0, acc.n_keys[idx])]
    if no_key_share > 0:
        key[rng.random(len(idx)) < no_key_share] = None
    return key


def _status(world: World, n: int, status_p: tuple[float, float, float]) -> np.ndarray:
    """Per request ``ok``, ``refused``, ``rate_limited`` or ``error``, with the probabilities ``status_p``."""
    p_err, p_rl, p_ref = status_p
    u = world.rng.random(n)
    status = np.full(n, "ok", dtype=object)
    status[u < p_err + p_rl + p_ref] = "refused"
    status[u < p_err + p_rl] = "rate_limited"
    status[u < p_err] = "error"
    return status


def _output_tokens(world: World, status: np.ndarray, output_tokens: np.ndarray) -> np.ndarray:
    """Output tokens as served: a short refusal text, nothing for a rate-limited or failed request."""
    out = output_tokens.astype(np.int64).copy()
    out[status == "refused"] = world.rng.integers(15, 90, size=int((status == "refused").sum()))
    out[status == "rate_limited"] = 0
    out[status == "error"] = 0
    return out


def _latency(
    world: World,
    model: np.ndarray,
    input_tokens: np.ndarray,
    out: np.ndarray,
    status: np.ndarray,
    batch: np.ndarray,
) -> np.ndarray:
    """Latency in ms: time to first token plus generation, long for batch jobs, short for rejections.

    The draws are made in a fixed order (first-token jitter, per-token jitter, batch, rate-limited, error),
    so a seed gives the same events.
    """
    rng = world.rng
    n = len(status)
    ttft = np.array([_TTFT_MS[m] for m in MODELS])
    per_tok = np.array([_MS_PER_TOKEN[m] for m in MODELS])
    midx = np.select([model == MODELS[1], model == MODELS[2]], [1, 2], 0)
    latency = (ttft[midx] + input_tokens / 4000 * 60) * rng.lognormal(0, 0.35, n) + out * per_tok[
        midx
    ] * rng.lognormal(0, 0.15, n)
    latency[batch] += 90_000 * rng.lognormal(0, 0.8, int(batch.sum()))
    latency[status == "rate_limited"] = rng.uniform(3, 40, int((status == "rate_limited").sum()))
    n_err = int((status == "error").sum())
    latency[status == "error"] = rng.uniform(50, 30_000, n_err)
    return latency


def concat(blocks: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate event column blocks field by field."""
    blocks = [b for b in blocks if len(b["ts"])]
    return {k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]}
