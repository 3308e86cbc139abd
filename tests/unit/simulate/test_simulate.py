"""The traffic simulator: deterministic, contract-shaped events, coherent labels, realistic campaign traits."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path
from statistics import median

import pytest

from pipeline.contract import models
from pipeline.contract.simhash import hamming, lsh_bands
from pipeline.simulate import FIELDS, MAX_LATENESS_MS, SCENARIOS, Simulation, UnknownScenario, generate
from pipeline.simulate.scenarios import SCENARIO_SPECS

SCHEMA = Path(__file__).resolve().parents[3] / "schemas" / "usage_event.v1.json"
TIERS, CAPABILITIES, STATUSES = models.TIERS, models.CAPABILITIES, models.STATUSES
INT_FIELDS = (
    "ts",
    "input_tokens",
    "output_tokens",
    "latency_ms",
    "asn",
    "prompt_chars",
    "n_turns",
    "n_tools",
)
STR_FIELDS = (
    "event_id",
    "account_id",
    "model",
    "status",
    "org_id",
    "api_key_id",
    "endpoint",
    "ip_prefix",
    "client_fingerprint",
    "payment_fingerprint",
    "account_tier",
    "country",
    "prompt_simhash",
    "capability",
    "language",
)
CAMPAIGN_KINDS = {"reasoning", "agentic", "hydra", "slowlow", "naive"}
EVASIVE_KINDS = {"diverse", "human", "lowvol", "org"}
STANDARD_POPULATIONS = {
    "casual",
    "developers",
    "enterprise",
    "university",
    "coworking",
    "startup",
    "reseller_customers",
}
LOOKALIKES = {
    "agency",
    "cowork_teams",
    "oss_agents",
    "course",
    "eval_company",
    "research_lab",
    "ci_bots",
    "reseller_frontends",
    "shared_clients",
    "cloud_devs",
}


@pytest.fixture(scope="module")
def tiny() -> Simulation:
    return generate("tiny", 1)


@pytest.fixture(scope="module")
def standard() -> Simulation:
    return generate("standard", 2)


def test_same_seed_gives_identical_output(tiny: Simulation) -> None:
    again = generate("tiny", 1)
    assert again.events == tiny.events
    assert again.labels == tiny.labels
    assert again.info == tiny.info


def test_different_seeds_vary_sizes_and_timing(tiny: Simulation) -> None:
    other = generate("tiny", 2)
    assert len(other.events) != len(tiny.events)
    assert other.info["populations"] != tiny.info["populations"]
    assert {e["account_id"] for e in other.events}.isdisjoint(e["account_id"] for e in tiny.events[:1000])
    assert other.info["start_ts"] != tiny.info["start_ts"] or other.info["end_ts"] != tiny.info["end_ts"]


def test_tiny_is_a_smoke_test_size(tiny: Simulation) -> None:
    assert 100 <= tiny.info["n_accounts"] <= 250
    assert 15_000 <= tiny.info["n_events"] <= 45_000
    assert 5 * 3600_000 <= tiny.info["end_ts"] - tiny.info["start_ts"] <= 7 * 3600_000
    assert len({c["kind"] for c in tiny.info["campaigns"].values()}) >= 2


def test_events_have_exactly_the_contract_fields_in_order_with_contract_types(tiny: Simulation) -> None:
    for e in tiny.events:
        assert tuple(e) == FIELDS
        assert e["schema_version"] == 1
        for f in INT_FIELDS:
            assert e[f] is None or type(e[f]) is int, (f, e[f])
        for f in STR_FIELDS:
            assert e[f] is None or type(e[f]) is str, (f, e[f])
        assert type(e["reasoning_requested"]) is bool
        assert e["status"] in STATUSES
        assert e["account_tier"] in TIERS
        assert e["capability"] is None or e["capability"] in CAPABILITIES
        assert len(e["prompt_simhash"]) == 16 and int(e["prompt_simhash"], 16) >= 0
        assert e["prompt_simhash"] == e["prompt_simhash"].lower()
        assert e["input_tokens"] >= 0 and e["output_tokens"] >= 0 and e["latency_ms"] >= 0
        assert e["n_turns"] >= 1 and e["n_tools"] >= 0
        assert e["ip_prefix"].endswith(("/24", "/48"))


def test_events_validate_against_the_json_schema(tiny: Simulation, standard: Simulation) -> None:
    if not SCHEMA.exists():
        pytest.skip("schemas/usage_event.v1.json not present")
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))
    for e in tiny.events[::50] + standard.events[::500]:
        validator.validate(e)


def test_event_ids_are_unique(tiny: Simulation) -> None:
    assert len({e["event_id"] for e in tiny.events}) == len(tiny.events)


def test_each_account_arrives_in_ts_order(tiny: Simulation) -> None:
    last: dict[str, int] = {}
    for e in tiny.events:
        assert e["ts"] >= last.get(e["account_id"], 0)
        last[e["account_id"]] = e["ts"]


def test_lateness_across_accounts_is_a_few_seconds_at_most(tiny: Simulation) -> None:
    high = 0
    late = 0
    for e in tiny.events:
        assert high - e["ts"] <= MAX_LATENESS_MS
        late += e["ts"] < high
        high = max(high, e["ts"])
    assert late > 0, "some cross-account reordering is expected"
    assert tiny.events[0]["ts"] >= tiny.info["start_ts"] and tiny.events[-1]["ts"] < tiny.info["end_ts"]


def test_labels_cover_every_account_exactly_once(tiny: Simulation) -> None:
    ids = [lab["account_id"] for lab in tiny.labels]
    assert len(ids) == len(set(ids))
    assert set(ids) == {e["account_id"] for e in tiny.events}
    for lab in tiny.labels:
        assert set(lab) == {"account_id", "label", "campaign_id"}
        assert (lab["label"] == "distillation") == (lab["campaign_id"] is not None)
        assert lab["label"] in {"distillation", "benign"}


def test_campaign_info_matches_labels(tiny: Simulation) -> None:
    counts: dict[str, int] = defaultdict(int)
    for lab in tiny.labels:
        if lab["campaign_id"]:
            counts[lab["campaign_id"]] += 1
    assert counts == {cid: c["n_accounts"] for cid, c in tiny.info["campaigns"].items()}
    for cid, c in tiny.info["campaigns"].items():
        assert cid.startswith(f"camp-{c['kind']}-")


def test_unknown_scenario_names_the_known_ones() -> None:
    with pytest.raises(UnknownScenario) as exc:
        generate("nope", 1)
    assert isinstance(exc.value, ValueError)
    for name in ("tiny", "standard", "hard"):
        assert name in str(exc.value)
        assert name in SCENARIOS


def test_standard_has_every_campaign_kind_and_population(standard: Simulation) -> None:
    info = standard.info
    assert {c["kind"] for c in info["campaigns"].values()} == CAMPAIGN_KINDS
    assert set(info["populations"]) >= STANDARD_POPULATIONS
    assert 3_000 <= info["n_accounts"] <= 6_000
    assert 200_000 <= info["n_events"] <= 500_000
    assert 3.0 * 86_400_000 <= info["end_ts"] - info["start_ts"] <= 4.0 * 86_400_000


def test_new_model_appears_only_after_its_release(standard: Simulation) -> None:
    release = standard.info["new_model_release_ts"]
    new = [e["ts"] for e in standard.events if e["model"] == standard.info["new_model"]]
    assert new and min(new) >= release


def _nearest_template_distance(events: list[dict]) -> float:
    """Median distance of each prompt to the nearest other prompt of the group (its template's cluster)."""
    hashes = [int(e["prompt_simhash"], 16) for e in events[:300]]
    dists = [min((h ^ o).bit_count() for j, o in enumerate(hashes) if j != i) for i, h in enumerate(hashes)]
    return median(dists)


def test_campaign_prompts_are_near_duplicates_and_casual_prompts_are_not(standard: Simulation) -> None:
    by_campaign: dict[str, list[dict]] = defaultdict(list)
    label = {lab["account_id"]: lab for lab in standard.labels}
    casual_accounts = set()
    for e in standard.events:
        cid = label[e["account_id"]]["campaign_id"]
        if cid:
            by_campaign[cid].append(e)
        elif e["account_tier"] == "free":
            casual_accounts.add(e["account_id"])
    casual = [e for e in standard.events if e["account_id"] in casual_accounts and e["n_tools"] == 0]
    assert _nearest_template_distance(casual) >= 15
    for cid, events in by_campaign.items():
        assert _nearest_template_distance(events) <= 3, cid


def test_reasoning_campaign_is_round_robin_with_near_constant_gaps(standard: Simulation) -> None:
    cid = next(c for c, v in standard.info["campaigns"].items() if v["kind"] == "reasoning")
    members = {lab["account_id"] for lab in standard.labels if lab["campaign_id"] == cid}
    times: dict[str, list[int]] = defaultdict(list)
    for e in standard.events:
        if e["account_id"] in members:
            times[e["account_id"]].append(e["ts"])
    for ts in list(times.values())[:5]:
        gaps = sorted(b - a for a, b in zip(ts, ts[1:], strict=False))
        q1, q3 = gaps[len(gaps) // 4], gaps[3 * len(gaps) // 4]
        assert (q3 - q1) / median(gaps) < 0.3


def test_hydra_accounts_go_silent_after_their_quota(standard: Simulation) -> None:
    cid = next(c for c, v in standard.info["campaigns"].items() if v["kind"] == "hydra")
    members = {lab["account_id"] for lab in standard.labels if lab["campaign_id"] == cid}
    span: dict[str, list[int]] = {}
    for e in standard.events:
        if e["account_id"] in members:
            s = span.setdefault(e["account_id"], [e["ts"], e["ts"]])
            s[1] = e["ts"]
    window = standard.info["end_ts"] - standard.info["start_ts"]
    assert median(b - a for a, b in span.values()) < window / 4


def test_simhash_helpers() -> None:
    assert hamming("0000000000000000", "ffffffffffffffff") == 64
    assert hamming(0b1011, 0b0001) == 2
    keys_a, keys_b = lsh_bands(0x0123456789ABCDEF, 8), lsh_bands(0x0123456789ABCDEE, 8)
    assert len(keys_a) == 8 and len(set(keys_a) & set(keys_b)) == 7
    assert len(set(lsh_bands(0, 4))) == 4  # band index keeps equal band values apart
    with pytest.raises(ValueError):
        lsh_bands(0, 0)


def test_scale_multiplies_population_quickly() -> None:
    start = time.perf_counter()
    small = generate("tiny", 3)
    big = generate("tiny", 3, scale=2.0)
    assert time.perf_counter() - start < 10
    assert big.info["n_accounts"] > 1.5 * small.info["n_accounts"]
    assert big.info["n_events"] > 1.3 * small.info["n_events"]


def test_every_new_population_has_a_standard_plus_variant_and_realistic_has_them_all() -> None:
    standard = SCENARIO_SPECS["standard"].populations
    new = LOOKALIKES | {f"camp_{k}" for k in EVASIVE_KINDS}
    for name in new:
        spec = SCENARIO_SPECS[f"standard+{name}"]
        assert list(spec.populations) == [*standard, name]
        assert spec.days == SCENARIO_SPECS["standard"].days and f"standard+{name}" in SCENARIOS
    assert set(SCENARIO_SPECS["realistic"].populations) == set(standard) | new


def test_realistic_generates_every_population_and_campaign_kind() -> None:
    sim = generate("realistic", 1, scale=0.1)
    info = sim.info
    assert set(info["populations"]) == STANDARD_POPULATIONS | LOOKALIKES | {
        f"camp_{k}" for k in CAMPAIGN_KINDS | EVASIVE_KINDS
    }
    assert {c["kind"] for c in info["campaigns"].values()} == CAMPAIGN_KINDS | EVASIVE_KINDS
    assert set(info["account_population"]) == {lab["account_id"] for lab in sim.labels}
    for lab in sim.labels:
        benign = not info["account_population"][lab["account_id"]].startswith("camp_")
        assert (lab["label"] == "benign") == benign
