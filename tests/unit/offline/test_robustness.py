"""The robustness summary: pessimistic over seeds, naming the benign crowds hit and the campaigns missed."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

from pipeline.offline.robustness import summarise

BENCH = Path(__file__).resolve().parents[3] / "bench" / "robustness.py"


def row(seed: int, recall: float, fpr: float, fp: int, load: float, precision: float, flagged: int) -> dict[str, Any]:
    return {
        "scenario": "standard+ci_bots",
        "seed": seed,
        "campaigns": 2,
        "campaigns_found": 2 if flagged == 4 else 1,
        "account_recall": recall,
        "benign_fpr": fpr,
        "benign_false_positives": fp,
        "benign_review_load": load,
        "benign_reviewed": int(load * 100),
        "precision": precision,
        "median_delay_event_share": 0.01 * seed,
        "campaign_kinds": {"camp-a-1": "a"},
        "per_campaign": {"camp-a-1": {"accounts": 4, "accounts_flagged": flagged}},
        "per_population": {
            "ci_bots": {"accounts": 6, "flagged": fp, "reviewed": 6, "label": "benign"},
            "casual": {"accounts": 90, "flagged": 0, "reviewed": 0, "label": "benign"},
            "camp_a": {"accounts": 4, "flagged": flagged, "reviewed": 4, "label": "distillation"},
        },
    }


def test_summary_takes_the_worst_seed_and_sums_campaigns() -> None:
    (s,) = summarise([row(1, 1.0, 0.0, 0, 0.06, 1.0, 4), row(2, 0.5, 0.06, 6, 0.1, 0.4, 2)])
    assert (s["campaigns_found"], s["campaigns"]) == (3, 4)
    assert (s["account_recall_mean"], s["account_recall_min"]) == (0.75, 0.5)
    assert (s["benign_fpr_max"], s["benign_fp_at_max"]) == (0.06, 6)
    assert (s["benign_review_load_max"], s["precision_min"], s["median_delay_max"]) == (0.1, 0.4, 0.02)
    assert s["populations"] == [{"population": "ci_bots", "accounts": 12, "flagged": 6, "reviewed": 12}]
    assert s["missed"] == [
        {"seed": 2, "campaign": "camp-a-1", "kind": "a", "accounts": 4, "flagged": 2, "recall": 0.5}
    ]


def test_set_values_are_parsed_for_ablations() -> None:
    spec = importlib.util.spec_from_file_location("bench_robustness", BENCH)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_robustness"] = mod
    spec.loader.exec_module(mod)
    assert mod.parse_sets(["link_detection=false", "template_radius=8", "x=0.5", "name=abc"]) == {
        "link_detection": False,
        "template_radius": 8,
        "x": 0.5,
        "name": "abc",
    }
    assert "realistic" in mod.DEFAULT_SCENARIOS and "standard+camp_diverse" in mod.DEFAULT_SCENARIOS
