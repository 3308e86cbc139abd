"""Detection quality floors: a small robustness matrix that a change breaking detection cannot pass.

Each case simulates one scenario at a reduced scale (seed 1; the simulator and the detector are
deterministic, so a case gives the same figures on every run), replays it through the detection engine
in process and scores it against its labels (``pipeline.offline.robustness.run_variant``). The floors sit a little
below what the code measures today, so they catch a regression, not noise (there is none). The full
matrix, every variant × 3 seeds at full scale, is ``python bench/robustness.py``; its table is in
``docs/robustness.md``.
"""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.offline.robustness import run_variant

# scenario, scale: the hard base, the two benign crowds that broke the old detector (a public coding agent's
# users; a company's CI bots on one card without an org) and the campaign with its own card and client
# per account and no shared template
CASES = [
    ("hard", 0.5),
    ("standard+oss_agents", 0.5),
    ("standard+ci_bots", 0.5),
    ("standard+camp_diverse", 0.5),
]


@pytest.fixture(scope="module", params=CASES, ids=[c[0] for c in CASES])
def run(request: pytest.FixtureRequest) -> dict[str, Any]:
    scenario, scale = request.param
    return run_variant(scenario, 1, scale)


def test_every_campaign_is_found(run: dict[str, Any]) -> None:
    missed = [c for c, v in run["per_campaign"].items() if not v["found"]]
    assert run["campaigns_found"] == run["campaigns"] > 0, missed


def test_account_recall_floor(run: dict[str, Any]) -> None:
    assert run["account_recall"] >= 0.95, run["per_campaign"]


def test_no_benign_crowd_is_condemned(run: dict[str, Any]) -> None:
    hit = {p: v for p, v in run["per_population"].items() if v["label"] == "benign" and v["flagged"]}
    assert run["benign_fpr"] <= 0.001, hit
    assert run["precision"] >= 0.99, hit


def test_benign_review_load_floor(run: dict[str, Any]) -> None:
    reviewed = {p: v["reviewed"] for p, v in run["per_population"].items() if v["label"] == "benign" and v["reviewed"]}
    assert run["benign_review_load"] <= 0.01, reviewed


def test_median_delay_floor(run: dict[str, Any]) -> None:
    assert run["median_delay_event_share"] <= 0.05, {c: v["delay_event_share"] for c, v in run["per_campaign"].items()}
