"""AnomalyAlert v2: v1 with each reason's contribution to the score. The pipeline writes v2; the
contributions follow from the score's terms (the score less what it would be without that evidence)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.contract import schemas
from pipeline.contract.manifest import schema_dir
from pipeline.detection import DetectionConfig, Engine
from pipeline.detection.links import GROUP_NEUTRAL, group_score
from pipeline.detection.scoring import NEUTRAL, combine, contributions, harvest_components
from pipeline.simulate import generate

EXAMPLES = schema_dir() / "examples" / "anomaly_alert.v2"


def test_v2_is_v1_with_a_contribution_on_every_reason() -> None:
    v1, v2 = schemas.load_schema("anomaly_alert", 1), schemas.load_schema("anomaly_alert", 2)
    assert v2["properties"]["schema_version"]["const"] == 2
    assert set(v2["properties"]) == set(v1["properties"]) and v2["required"] == v1["required"]
    r1, r2 = v1["$defs"]["reason"], v2["$defs"]["reason"]
    assert set(r2["properties"]) - set(r1["properties"]) == {"contribution"}
    assert r2["required"] == [*r1["required"], "contribution"]


@pytest.mark.parametrize("path", sorted((EXAMPLES / "valid").glob("*.json")), ids=lambda p: p.stem)
def test_valid_example_passes(path: Path) -> None:
    assert schemas.errors("anomaly_alert", json.loads(path.read_text()), 2) == []


@pytest.mark.parametrize("path", sorted((EXAMPLES / "invalid").glob("*.json")), ids=lambda p: p.stem)
def test_invalid_example_fails(path: Path) -> None:
    assert schemas.errors("anomaly_alert", json.loads(path.read_text()), 2)


NAIVE = {"reasoning_share": 0.95, "agentic_tools_share": 0.0, "template_share": 0.8, "active_hours": 22.0,
         "age_hours": 72.0, "interarrival_log_std": 0.1, "events_day": 4000.0, "long_output_share": 0.8,
         "model_top_share": 1.0}


def test_an_account_reasons_contribution_is_the_score_less_the_score_without_it() -> None:
    c = harvest_components(NAIVE)
    part = contributions(c)
    assert part["elicitation"] == pytest.approx(combine(c), abs=1e-4)  # elicitation gates the score
    for term, neutral in NEUTRAL.items():
        assert part[term] == pytest.approx(combine(c) - combine({**c, term: neutral}), abs=1e-4)
    sweep = harvest_components({**NAIVE, "model_top_share": 0.35})
    assert contributions(sweep)["model_focus"] < 0  # several models lower the score


def test_a_floor_from_other_evidence_shrinks_what_each_term_accounts_for() -> None:
    c = harvest_components(NAIVE)
    floor = combine(c) - 0.05  # another signal alone gives nearly as much
    assert all(v <= 0.05 + 1e-4 for v in contributions(c, floor).values())


def test_a_campaign_reasons_contribution_follows_the_group_score() -> None:
    comp = {"members": 20.0, "elicitation": 0.9, "templating": 0.6, "long_outputs": 0.3, "round_the_clock": 0.9,
            "regularity": 0.8, "shared_cards": 0.7, "alike": 0.8, "machine": 0.9, "breadth": 1.0,
            "one_customer": 0.0, "cards": 4.0}
    s = group_score(comp)
    assert s == pytest.approx(0.9 * (0.5 + 0.5 * 0.6) * max(0.7, 0.8 * 0.9) * 1.0)
    for code, (term, neutral) in GROUP_NEUTRAL.items():
        assert 0.0 <= s - group_score({**comp, term: neutral}) <= s, code


def test_every_alert_the_engine_writes_is_v2_with_contributions_within_its_score() -> None:
    sim = generate("tiny", 1, 1.0)
    engine = Engine(DetectionConfig())
    validator = schemas.validator("anomaly_alert", 2)
    alerts = [o.value for o in engine.replay(sim.events) if o.topic == "anomaly-alerts"]  # type: ignore[arg-type]
    assert alerts
    scored = 0
    for a in alerts:
        validator.validate(a)
        for r in a["reasons"]:
            if r["contribution"] is not None:
                scored += 1
                assert -1.0 <= r["contribution"] <= a["score"] + 1e-4, (a["alert_id"], r)
    assert scored


def test_alert_schema_version_1_writes_the_same_alerts_without_contributions_for_a_transition() -> None:
    """``DG_ALERT_SCHEMA_VERSION=1``: consumers that still validate v1 get v1 (the same ids, scores and
    reasons, without contributions); the setting decides nothing, so the policy digest is the same."""
    sim = generate("tiny", 1, 1.0)
    v1_cfg = DetectionConfig(alert_schema_version=1)
    assert v1_cfg.digest() == DetectionConfig().digest()
    runs = []
    for cfg in (DetectionConfig(), v1_cfg):
        engine = Engine(cfg)
        runs.append([o.value for o in engine.replay(sim.events)  # type: ignore[arg-type]
                     if o.topic == "anomaly-alerts"])
    v2_alerts, v1_alerts = runs
    validator = schemas.validator("anomaly_alert", 1)
    assert len(v1_alerts) == len(v2_alerts) > 0
    for a1, a2 in zip(v1_alerts, v2_alerts, strict=True):
        validator.validate(a1)
        assert a1["alert_id"] == a2["alert_id"] and a1["score"] == a2["score"]
        assert a1["reasons"] == [{k: v for k, v in r.items() if k != "contribution"} for r in a2["reasons"]]


def test_the_setting_reaches_the_detection_config_from_the_environment(monkeypatch) -> None:
    from pydantic import ValidationError

    from pipeline.settings import Settings

    monkeypatch.setenv("DG_ALERT_SCHEMA_VERSION", "1")  # as a worker started by a tool gets it
    assert DetectionConfig.from_settings(Settings()).alert_schema_version == 1
    monkeypatch.setenv("DG_ALERT_SCHEMA_VERSION", "2")
    assert DetectionConfig.from_settings(Settings()).alert_schema_version == 2
    monkeypatch.setenv("DG_ALERT_SCHEMA_VERSION", "3")
    with pytest.raises(ValidationError):
        Settings()
