"""Review load and per-population counts: what a run costs analysts, and which crowd it lands on."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.offline.evaluation import Evaluation, reviewed_accounts

ALERTS, ACTIONS = "anomaly-alerts", "enforcement-actions"
LABELS = {
    "c1": ("distillation", "camp-x-1"),
    "c2": ("distillation", "camp-x-1"),
    "b1": ("benign", None),
    "b2": ("benign", None),
    "b3": ("benign", None),
    "b4": ("benign", None),
}
POPULATION = {"c1": "camp_x", "c2": "camp_x", "b1": "ci_bots", "b2": "ci_bots", "b3": "casual", "b4": "casual"}


def alert(severity: str, account: str | None, related: list[str]) -> dict[str, Any]:
    return {"ts": 1, "severity": severity, "account_id": account, "related_accounts": related, "score": 0.5}


def action(account: str, name: str) -> dict[str, Any]:
    return {"ts": 1, "account_id": account, "action": name}


def evaluation(population: dict[str, str] | None = POPULATION) -> Evaluation:
    """Every account sends one event; b1 gets a low alert, b2 a review action, c1 a high campaign alert."""
    ev = Evaluation(LABELS, population)
    for acc in LABELS:
        ev.observe_event({"account_id": acc, "ts": 1, "account_tier": "pro"})
    ev.observe_output(ALERTS, alert("low", "b1", []))
    ev.observe_output(ACTIONS, action("b2", "flag_for_review"))
    ev.observe_output(ALERTS, alert("high", None, ["c1"]))
    return ev


def test_any_alert_or_action_names_an_account_for_review() -> None:
    assert reviewed_accounts(ALERTS, alert("low", "a", ["b"])) == ["a", "b"]
    assert reviewed_accounts(ACTIONS, action("a", "flag_for_review")) == ["a"]
    assert reviewed_accounts(ACTIONS, action("a", "suspend")) == ["a"]
    assert reviewed_accounts("usage-events", {"account_id": "a"}) == []


def test_benign_review_load_counts_low_alerts_and_review_actions_that_do_not_flag() -> None:
    m = evaluation().compute()
    assert m["benign_false_positives"] == 0  # neither a low alert nor flag_for_review flags
    assert m["benign_reviewed"] == 2  # b1 and b2
    assert m["benign_review_load"] == pytest.approx(2 / 4)


def test_per_population_shows_which_crowd_is_flagged_and_reviewed() -> None:
    assert evaluation().compute()["per_population"] == {
        "camp_x": {"accounts": 2, "flagged": 1, "reviewed": 1, "label": "distillation"},
        "casual": {"accounts": 2, "flagged": 0, "reviewed": 0, "label": "benign"},
        "ci_bots": {"accounts": 2, "flagged": 0, "reviewed": 2, "label": "benign"},
    }


def test_per_population_is_absent_without_a_mapping_and_existing_keys_stay() -> None:
    m = evaluation(None).compute()
    assert "per_population" not in m
    assert m["benign_reviewed"] == 2 and m["account_recall"] == 0.5 and m["benign_fpr"] == 0.0
