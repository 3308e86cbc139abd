"""Account-level scores: how much an account's window looks like output harvesting, and how much it
changed against its own past. Pure functions of a profile (``AccountState.profile``)."""

from __future__ import annotations

import math

from pipeline.contract.models import Reason


def _clip(x: float) -> float:
    return 0.0 if x < 0.0 else 1.0 if x > 1.0 else x


def regularity(interarrival_log_std: float) -> float:
    """1 for a metronome, 0 for human burstiness (std of log10 inter-arrival seconds ≥ 0.6)."""
    return 1.0 - _clip(interarrival_log_std / 0.6)


def harvest_components(p: dict[str, float]) -> dict[str, float]:
    """The evidence terms, each in [0, 1]."""
    return {
        # what a distiller wants: reasoning traces, or agentic/tool-use transcripts. Tool use alone counts
        # half: every user of a coding agent sends tool definitions with nearly every request
        "elicitation": max(p["reasoning_share"], 0.5 * p["agentic_tools_share"]),
        # the same prompt skeleton over and over (near-duplicate SimHashes)
        "templating": p["template_share"],
        # a machine works round the clock: hours active out of the last 24 (or of the account's life,
        # when it is younger, but never less than six)
        "round_the_clock": _clip(p["active_hours"] / max(6.0, min(24.0, p["age_hours"]))),
        # a script keeps its pace: inter-arrival times that hardly vary
        "regularity": regularity(p["interarrival_log_std"]),
        # volume: 50 requests a day counts as nothing, 5,000 as all
        "volume": _clip(math.log10(max(p["events_day"], 1.0) / 50.0) / 2.0),
        "long_outputs": p["long_output_share"],
        # one teacher model: 1 when 80 % or more of the day went to one model, 0 at an even spread over
        # two or more (a model evaluation sweeps several models; a distiller harvests the best one)
        "model_focus": _clip((p.get("model_top_share", 1.0) - 0.4) / 0.4),
    }


HARVEST_WEIGHTS = {"round_the_clock": 0.3, "volume": 0.3, "long_outputs": 0.25, "regularity": 0.15}
"""How the intensity terms add up: a harvest runs round the clock at volume for long outputs."""


NEUTRAL = {"elicitation": 0.0, "templating": 0.0, "round_the_clock": 0.0, "regularity": 0.0, "volume": 0.0,
           "long_outputs": 0.0, "model_focus": 1.0}
"""Each evidence term at the value that is no evidence at all (one model at full focus is the neutral
case: spreading over several models is what lowers a score)."""


def combine(c: dict[str, float]) -> float:
    """The harvest score of evidence terms ``c`` (see :func:`harvest_score`)."""
    intensity = sum(w * c[k] for k, w in HARVEST_WEIGHTS.items())
    return c["elicitation"] * intensity * (0.75 + 0.25 * c["templating"]) * (0.3 + 0.7 * c["model_focus"])


def contributions(c: dict[str, float], floor: float = 0.0) -> dict[str, float]:
    """How much of the score each evidence term accounts for: the score, ``max(harvest, floor)`` (``floor``:
    what the account's other evidence gives on its own), less the same with that term at its neutral
    value. Elicitation gates the score, so it accounts for all of it; several models lower it (negative)."""
    total = max(combine(c), floor)
    return {k: round(total - max(combine({**c, k: v}), floor), 4) for k, v in NEUTRAL.items()}


def harvest_score(p: dict[str, float]) -> float:
    """0..1: elicitation × intensity (round the clock, volume, long outputs, pacing), amplified by
    templating and by focus on one model.

    No single component makes the score, and none is required but elicitation: a harvest with prompts
    that never repeat still scores on what it asks for and how (templating lifts the score by up to
    a third, it does not gate it). A heavy enterprise batch job has no elicitation; a reasoning-heavy
    student has no round-the-clock volume; an evaluation sweep spread evenly over several models counts
    three tenths.
    """
    return combine(harvest_components(p))


def shift_score(p: dict[str, float], floor: float = 0.0) -> tuple[float, list[Reason]]:
    """Change against the account's own day: the last hour's rate, reasoning share and model mix.

    Only accounts with a day of history and at least 20 requests in the last hour are judged; a volume
    jump needs 60 requests an hour at eight times the daily rate (developers' sessions are bursty).
    A reason's contribution is to the alert's score, ``max(floor, shift / 2)`` (``floor``: what the
    account's other evidence gives on its own).
    """
    if p["age_hours"] < 24.0 or p["events_hour"] < 480.0:
        return 0.0, []  # no past of its own yet, or too few requests in the hour to judge a change
    rate_ratio = p["events_hour"] / max(p["events_day"], 1.0)
    found: list[tuple[float, str, str, float | None, float | None]] = []
    if p["events_hour"] >= 1440.0 and rate_ratio >= 8.0:
        found.append((_clip((rate_ratio - 8.0) / 16.0 + 0.5), "volume_jump",
                      f"the last hour ran at {p['events_hour']:.0f} requests/day, {rate_ratio:.1f}x the "
                      "account's daily rate", p["events_hour"], p["events_day"]))
    if p["reasoning_share_hour"] - p["reasoning_share"] >= 0.5:
        found.append((0.5, "reasoning_jump", "reasoning requests jumped in the last hour",
                      p["reasoning_share_hour"], p["reasoning_share"]))
    if p["new_model_share_hour"] >= 0.5:
        found.append((0.3, "model_shift", "most of the last hour went to a model the account did not use before",
                      p["new_model_share_hour"], None))
    score = max((f[0] for f in found), default=0.0)
    total = max(floor, 0.5 * score)
    reasons = []
    for i, (_, code, detail, value, baseline) in enumerate(found):
        without = max((f[0] for j, f in enumerate(found) if j != i), default=0.0)
        reasons.append(_reason(code, detail, value, baseline, total - max(floor, 0.5 * without)))
    return score, reasons


def harvest_reasons(p: dict[str, float], floor: float = 0.0) -> list[Reason]:
    """Reasons a reviewer can act on, strongest first, each with its contribution to the score
    ``max(harvest, floor)`` (:func:`contributions`)."""
    c = harvest_components(p)
    part = contributions(c, floor)
    out: list[Reason] = []
    if max(p["reasoning_share"], p["agentic_tools_share"]) >= 0.5:
        if p["reasoning_share"] >= p["agentic_tools_share"]:
            out.append(_reason("reasoning_elicitation", f"{100 * p['reasoning_share']:.0f}% of requests ask for "
                               "reasoning traces", p["reasoning_share"], None, part["elicitation"]))
        else:
            out.append(_reason("agentic_harvest", f"{100 * p['agentic_tools_share']:.0f}% of requests are "
                               "agentic or coding with tool definitions", p["agentic_tools_share"], None,
                               part["elicitation"]))
    if c["templating"] >= 0.5:
        out.append(_reason("templated_prompts", f"{100 * p['template_share']:.0f}% of prompts are near-"
                           f"duplicates of {p['templates']:.0f} templates", p["template_share"], None,
                           part["templating"]))
    if c["round_the_clock"] >= 0.5:
        out.append(_reason("round_the_clock", f"active in {p['active_hours']:.0f} of the last 24 hours",
                           p["active_hours"], 24.0, part["round_the_clock"]))
    if c["volume"] >= 0.3:
        out.append(_reason("high_volume", f"about {p['events_day']:.0f} requests a day", p["events_day"], 50.0,
                           part["volume"]))
    if c["long_outputs"] >= 0.5:
        out.append(_reason("long_outputs", f"{100 * p['long_output_share']:.0f}% of outputs are long",
                           p["long_output_share"], None, part["long_outputs"]))
    if c["model_focus"] < 0.5:
        out.append(_reason("several_models", f"only {100 * p['model_top_share']:.0f}% of requests went to one "
                           "model, as in a model evaluation (counts less)", p["model_top_share"], 0.8,
                           part["model_focus"]))
    return out


def _reason(code: str, detail: str, value: float | None, baseline: float | None,
            contribution: float | None = None) -> Reason:
    return {"code": code, "detail": detail, "value": None if value is None else round(float(value), 4),
            "baseline": None if baseline is None else round(float(baseline), 4),
            "contribution": None if contribution is None else round(float(contribution), 4)}
