"""Account-level scores (``pipeline.detection.scoring``): the harvest profile and the shift against the past."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.detection.config import DetectionConfig
from pipeline.detection.features import AccountState
from pipeline.detection.scoring import (
    harvest_components,
    harvest_reasons,
    harvest_score,
    regularity,
    shift_score,
)
from tests.factories import harvester_and_noise

CFG = DetectionConfig()


def profile(**overrides: float) -> dict[str, float]:
    """A quiet, unremarkable profile with every key ``AccountState.profile`` returns, then the overrides."""
    p: dict[str, float] = {
        "events_day": 20.0, "events_hour": 600.0, "reasoning_share": 0.0, "agentic_tools_share": 0.0,
        "template_share": 0.0, "long_output_share": 0.0, "out_in_ratio": 1.0, "output_k_per_req": 0.5,
        "capability_entropy": 0.5, "capability_top_share": 0.5, "error_share": 0.0, "rate_limited_share": 0.0,
        "refused_share": 0.0, "tools_per_req": 0.0, "turns_per_req": 1.0, "active_hours": 4.0,
        "age_hours": 500.0, "interarrival_log_std": 1.0, "reasoning_share_hour": 0.0,
        "template_share_hour": 0.0, "new_model_share_hour": 0.0, "templates": 0.0, "model_top_share": 1.0,
    }
    assert set(overrides) <= set(p), set(overrides) - set(p)
    p.update(overrides)
    return p


def test_profile_helper_has_the_keys_of_a_real_profile() -> None:
    assert set(profile()) == set(AccountState().profile())


NAIVE_HARVESTER = profile(events_day=8000, events_hour=8000, reasoning_share=0.95, template_share=0.9,
                          long_output_share=0.9, active_hours=24, age_hours=72, interarrival_log_std=0.05,
                          reasoning_share_hour=0.95, template_share_hour=0.9, templates=3)
ENTERPRISE_BATCH = profile(events_day=20000, events_hour=20000, template_share=0.97, long_output_share=0.6,
                           active_hours=24, age_hours=2000, interarrival_log_std=0.05, templates=2)
STUDENT = profile(events_day=40, events_hour=300, reasoning_share=0.9, reasoning_share_hour=0.9,
                  template_share=0.1, long_output_share=0.5, active_hours=3, age_hours=300,
                  interarrival_log_std=0.9)
DEVELOPER = profile(events_day=400, events_hour=600, agentic_tools_share=0.75, template_share=0.05,
                    tools_per_req=12, long_output_share=0.3, active_hours=10, age_hours=2000,
                    interarrival_log_std=0.8)
CASUAL = profile(events_day=15, events_hour=0.5, reasoning_share=0.05, template_share=0.02, active_hours=3,
                 interarrival_log_std=1.2)


def test_naive_harvester_scores_critical() -> None:
    assert harvest_score(NAIVE_HARVESTER) >= CFG.account_critical


@pytest.mark.parametrize("name,p", [("enterprise batch, no elicitation", ENTERPRISE_BATCH),
                                    ("reasoning-heavy student, short bursts", STUDENT),
                                    ("developer, agentic but not templated", DEVELOPER),
                                    ("casual user", CASUAL)])
def test_benign_profiles_score_below_medium(name: str, p: dict[str, float]) -> None:
    assert harvest_score(p) < 0.5 * CFG.account_medium, name


def test_enterprise_batch_scores_zero_without_elicitation() -> None:
    """Round the clock, templated, huge volume: still nothing, because it asks for no reasoning or tools."""
    c = harvest_components(ENTERPRISE_BATCH)
    assert c["templating"] > 0.9 and c["round_the_clock"] == 1.0 and c["volume"] == 1.0
    assert harvest_score(ENTERPRISE_BATCH) == 0.0


def test_tool_use_alone_counts_half_as_elicitation() -> None:
    """Every coding agent sends tool definitions: an account that only does that is half as suspicious
    as one that asks for reasoning traces (agentic harvests are caught by their coordination)."""
    agentic = dict(NAIVE_HARVESTER, reasoning_share=0.0, agentic_tools_share=0.95)
    assert harvest_score(agentic) == pytest.approx(0.5 * harvest_score(NAIVE_HARVESTER))
    assert harvest_score(agentic) < CFG.account_high
    assert harvest_reasons(agentic)[0]["code"] == "agentic_harvest"


def test_harvest_score_is_the_documented_product() -> None:
    p = profile(events_day=500, reasoning_share=0.8, template_share=0.5, long_output_share=0.25,
                active_hours=12, age_hours=100, interarrival_log_std=0.3, model_top_share=0.6)
    # elicitation 0.8 x (0.3 clock 0.5 + 0.3 volume 0.5 + 0.25 long 0.25 + 0.15 regularity 0.5)
    #   x (0.75 + 0.25 templating 0.5) x (0.3 + 0.7 model focus 0.5)
    expected = 0.8 * (0.15 + 0.15 + 0.0625 + 0.075) * (0.75 + 0.125) * (0.3 + 0.35)
    assert harvest_score(p) == pytest.approx(expected)


def test_prompts_that_never_repeat_do_not_hide_a_harvest() -> None:
    """Templating lifts the score; it does not gate it: a harvester that varies every prompt still
    reaches high on its own."""
    fresh = dict(NAIVE_HARVESTER, template_share=0.0, templates=0)
    assert harvest_score(fresh) >= CFG.account_high
    assert harvest_score(fresh) == pytest.approx(0.75 * harvest_score(dict(fresh, template_share=1.0)))


def test_an_evaluation_spread_over_models_earns_a_review_at_most() -> None:
    """The naive harvester's profile, but its requests spread evenly over three models, as a model
    evaluation's are: medium at most; a distiller harvests one teacher."""
    sweep = dict(NAIVE_HARVESTER, model_top_share=0.34)
    assert harvest_score(sweep) < CFG.account_high
    assert harvest_score(dict(NAIVE_HARVESTER, model_top_share=0.85)) >= CFG.account_critical


def test_round_the_clock_is_relative_to_a_young_account_but_at_least_six_hours() -> None:
    assert harvest_components(profile(active_hours=3, age_hours=3))["round_the_clock"] == 0.5
    assert harvest_components(profile(active_hours=8, age_hours=8))["round_the_clock"] == 1.0
    assert harvest_components(profile(active_hours=12, age_hours=500))["round_the_clock"] == 0.5


def test_volume_counts_fifty_a_day_as_nothing_and_five_thousand_as_all() -> None:
    assert harvest_components(profile(events_day=50))["volume"] == 0.0
    assert harvest_components(profile(events_day=0))["volume"] == 0.0
    assert harvest_components(profile(events_day=500))["volume"] == pytest.approx(0.5)
    assert harvest_components(profile(events_day=5000))["volume"] == pytest.approx(1.0)
    assert harvest_components(profile(events_day=1e6))["volume"] == 1.0


def test_regularity_is_one_for_a_metronome_and_zero_for_bursts() -> None:
    assert regularity(0.0) == 1.0
    assert regularity(0.3) == pytest.approx(0.5)
    assert regularity(0.6) == 0.0
    assert regularity(3.0) == 0.0


def test_every_component_is_in_the_unit_range() -> None:
    for p in (NAIVE_HARVESTER, ENTERPRISE_BATCH, STUDENT, DEVELOPER, CASUAL, profile()):
        assert all(0.0 <= v <= 1.0 for v in harvest_components(p).values())


def test_harvester_reasons_name_the_evidence() -> None:
    codes = [r["code"] for r in harvest_reasons(NAIVE_HARVESTER)]
    assert codes == ["reasoning_elicitation", "templated_prompts", "round_the_clock", "high_volume",
                     "long_outputs"]
    assert harvest_reasons(CASUAL) == []


def test_a_harvester_fed_through_account_state_scores_high_within_hours() -> None:
    """The factory's naive harvester, as events (900 in its first 2.5 hours): the real profile scores high."""
    st = AccountState()
    for ev in harvester_and_noise(3000):
        if ev["account_id"] == "harvester":
            st.update(ev, CFG)  # type: ignore[arg-type]
    assert harvest_score(st.profile()) >= CFG.account_high


# ---------------------------------------------------------------------------------------- shift


def codes(result: tuple[float, list[Any]]) -> list[str]:
    return [r["code"] for r in result[1]]


def test_steady_account_has_no_shift() -> None:
    assert shift_score(profile(events_day=600, events_hour=610)) == (0.0, [])


def test_volume_jump_when_the_last_hour_runs_far_above_the_daily_rate() -> None:
    score, reasons = shift_score(profile(events_day=100, events_hour=2400))
    assert score == 1.0  # 24x: (24 - 8) / 16 + 0.5, clipped
    assert [r["code"] for r in reasons] == ["volume_jump"]
    assert reasons[0]["value"] == 2400 and reasons[0]["baseline"] == 100


def test_volume_jump_at_eight_times_scores_one_half() -> None:
    score, reasons = shift_score(profile(events_day=200, events_hour=1600))
    assert score == 0.5 and [r["code"] for r in reasons] == ["volume_jump"]
    assert codes(shift_score(profile(events_day=200, events_hour=1599))) == []  # 7.99x


def test_no_shift_below_20_requests_in_the_last_hour_and_no_volume_jump_below_60() -> None:
    """A small account going from 1 to 470 a day (under 20 an hour) shows no change at all; a volume
    jump needs 60 an hour."""
    assert codes(shift_score(profile(events_day=1, events_hour=470, reasoning_share_hour=1.0))) == []
    assert codes(shift_score(profile(events_day=10, events_hour=1400))) == []


def test_an_account_younger_than_a_day_has_no_past_to_shift_from() -> None:
    assert shift_score(profile(age_hours=23.0, events_day=100, events_hour=2400, reasoning_share=0.1,
                               reasoning_share_hour=0.9, new_model_share_hour=1.0)) == (0.0, [])


def test_reasoning_jump_when_the_last_hour_asks_for_reasoning_far_more() -> None:
    score, reasons = shift_score(profile(reasoning_share=0.2, reasoning_share_hour=0.9))
    assert score == 0.5
    assert [r["code"] for r in reasons] == ["reasoning_jump"]
    assert codes(shift_score(profile(reasoning_share=0.5, reasoning_share_hour=0.9))) == []


def test_model_shift_when_most_of_the_last_hour_went_to_a_new_model() -> None:
    score, reasons = shift_score(profile(new_model_share_hour=0.8))
    assert score == pytest.approx(0.3)
    assert [r["code"] for r in reasons] == ["model_shift"]
    assert codes(shift_score(profile(new_model_share_hour=0.4))) == []


def test_several_shifts_report_every_reason_and_the_strongest_score() -> None:
    score, reasons = shift_score(profile(events_day=100, events_hour=2400, reasoning_share=0.1,
                                         reasoning_share_hour=0.9, new_model_share_hour=1.0))
    assert [r["code"] for r in reasons] == ["volume_jump", "reasoning_jump", "model_shift"]
    assert score == pytest.approx(1.0)  # 24x: (24 - 8) / 16 + 0.5, clipped
