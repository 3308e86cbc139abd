"""The robustness matrix: one detector configuration against every scenario variant, summarised per scenario.

``run_variant`` simulates a scenario, replays it in process through the detection engine (the same code
the worker and ``backtest`` run, one event at a time) and scores it with ``pipeline.offline.evaluation``, with a
per-population breakdown. ``summarise`` folds runs over seeds into one row per scenario, pessimistic
where it matters (the worst seed's false positives, review load, precision and delay). No Kafka, no I/O.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from statistics import mean
from typing import Any, cast

from pipeline.contract.models import UsageEvent
from pipeline.detection import DetectionConfig, Engine
from pipeline.offline.evaluation import Evaluation
from pipeline.simulate import generate


def run_variant(
    scenario: str, seed: int, scale: float = 1.0, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Simulate ``scenario`` at ``seed``/``scale``, detect with ``DetectionConfig(**overrides)``, score it.

    Returns the ``Evaluation.compute()`` metrics (with ``per_population``) plus the run's identity,
    its campaign kinds and the seconds spent generating and detecting.
    """
    t0 = time.perf_counter()
    sim = generate(scenario, seed, scale)
    t1 = time.perf_counter()
    labels = {r["account_id"]: (r["label"], r["campaign_id"]) for r in sim.labels}
    engine = Engine(DetectionConfig(**(overrides or {})))
    ev = Evaluation(labels, sim.info["account_population"])
    for e in sim.events:
        ev.observe_event(e)
        for out in engine.process(cast(UsageEvent, e)):  # the simulator writes contract events
            ev.observe_output(out.topic, out.value)
    for out in engine.finish():
        ev.observe_output(out.topic, out.value)
    metrics = ev.compute()
    metrics.pop("threshold_curve", None)
    return {
        "scenario": scenario,
        "seed": seed,
        "scale": scale,
        "overrides": dict(overrides or {}),
        "campaign_kinds": {cid: c["kind"] for cid, c in sim.info["campaigns"].items()},
        "generate_s": round(t1 - t0, 2),
        "detect_s": round(time.perf_counter() - t1, 2),
        **metrics,
    }


def _worst(values: Iterable[float | None], pick: Any) -> float | None:
    present = [v for v in values if v is not None]
    return pick(present) if present else None


def _populations(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Benign populations with flagged or reviewed accounts, summed over seeds, worst first."""
    total: dict[str, dict[str, int]] = {}
    for r in rows:
        for name, p in (r.get("per_population") or {}).items():
            if p["label"] != "benign" or not (p["flagged"] or p["reviewed"]):
                continue
            t = total.setdefault(name, {"accounts": 0, "flagged": 0, "reviewed": 0})
            for k in t:
                t[k] += p[k]
    out = [{"population": k, **v} for k, v in total.items()]
    return sorted(out, key=lambda p: (-p["flagged"], -p["reviewed"], p["population"]))


def _missed_campaigns(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Campaigns whose account recall is below 1 in some seed, lowest recall first."""
    out = []
    for r in rows:
        for cid, c in r["per_campaign"].items():
            if c["accounts_flagged"] < c["accounts"]:
                out.append({
                    "seed": r["seed"],
                    "campaign": cid,
                    "kind": r.get("campaign_kinds", {}).get(cid),
                    "accounts": c["accounts"],
                    "flagged": c["accounts_flagged"],
                    "recall": c["accounts_flagged"] / c["accounts"] if c["accounts"] else None,
                })
    return sorted(out, key=lambda c: (c["recall"] or 0.0, c["seed"], c["campaign"]))


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per scenario (in first-seen order), aggregated over its seeds.

    Campaigns found is summed over seeds (found/total); account recall is the mean and the minimum over
    seeds; benign FPR (with its count), benign review load and median delay are the worst (maximum)
    seed; precision is the minimum seed; campaign ids per labelled campaign the worst (maximum) seed,
    campaigns conflated summed over seeds. ``populations`` lists the benign crowds with flagged or
    reviewed accounts (summed over seeds) and ``missed`` the campaigns with recall below 1.
    """
    by_scenario: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_scenario.setdefault(r["scenario"], []).append(r)
    out = []
    for scenario, rs in by_scenario.items():
        recalls = [r["account_recall"] for r in rs if r["account_recall"] is not None]
        worst_fpr = max(rs, key=lambda r: r["benign_fpr"] or 0.0)
        out.append({
            "scenario": scenario,
            "seeds": [r["seed"] for r in rs],
            "campaigns_found": sum(r["campaigns_found"] for r in rs),
            "campaigns": sum(r["campaigns"] for r in rs),
            "account_recall_mean": mean(recalls) if recalls else None,
            "account_recall_min": min(recalls) if recalls else None,
            "benign_fpr_max": worst_fpr["benign_fpr"],
            "benign_fp_at_max": worst_fpr["benign_false_positives"],
            "benign_review_load_max": _worst((r["benign_review_load"] for r in rs), max),
            "benign_reviewed_max": max(r["benign_reviewed"] for r in rs),
            "precision_min": _worst((r["precision"] for r in rs), min),
            "median_delay_max": _worst((r["median_delay_event_share"] for r in rs), max),
            "campaign_ids_max": _worst((r.get("max_campaign_ids") for r in rs), max),
            "campaigns_conflated": sum(r.get("campaigns_conflated", 0) for r in rs),
            "populations": _populations(rs),
            "missed": _missed_campaigns(rs),
        })
    return out
