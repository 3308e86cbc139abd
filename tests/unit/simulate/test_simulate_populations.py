"""Benign look-alikes and evasive campaigns: each population has the trait it claims to model.

Each test runs one population's generator alone in a fresh world (fast, no other traffic) and checks
its event columns and its registered labels.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import pytest

from pipeline.simulate.scenarios import EVASION_POPS, GENERATORS, LOOKALIKE_POPS
from pipeline.simulate.world import _DATACENTER_OCTETS, DAY_MS, HOUR_MS, World

Columns = dict[str, np.ndarray]


def population(name: str, seed: int = 1) -> tuple[World, Columns]:
    """A 3-4 day world holding only ``name`` (scenario parameters), its events inside the window."""
    world = World.create(f"test:{name}", seed, 1.0, False, (3.0, 4.0), (0.5, 0.6))
    cols = GENERATORS[name](world, {**LOOKALIKE_POPS, **EVASION_POPS}[name])
    inside = (cols["ts"] >= world.t0) & (cols["ts"] < world.t1)
    return world, {k: v[inside] for k, v in cols.items()}


def groups(cols: Columns, key: str, value: str) -> dict[Any, set[Any]]:
    """Distinct ``value``s per ``key`` value (e.g. accounts per client fingerprint)."""
    out: dict[Any, set[Any]] = defaultdict(set)
    for k, v in zip(cols[key].tolist(), cols[value].tolist(), strict=True):
        out[k].add(v)
    return out


def distinct(cols: Columns, f: str) -> int:
    return len(set(cols[f].tolist()))


def per_account_day(world: World, cols: Columns) -> np.ndarray:
    _, counts = np.unique(cols["account_id"], return_counts=True)
    return counts / world.days


def bits(a: np.ndarray, b: int) -> np.ndarray:
    return np.array([(int(x) ^ b).bit_count() for x in a.tolist()])


def test_each_new_population_labels_its_accounts() -> None:
    for name in (*LOOKALIKE_POPS, *EVASION_POPS):
        world, cols = population(name)
        mine = {lab["account_id"]: lab for lab, p in zip(world.labels, world.label_population, strict=True)
                if p == name}
        assert set(cols["account_id"].tolist()) <= set(mine), name
        expected = "distillation" if name.startswith("camp_") else "benign"
        assert {lab["label"] for lab in mine.values()} == {expected}, name
        if expected == "distillation":
            assert {c["kind"] for c in world.campaigns.values()} == {name.removeprefix("camp_")}


def test_oss_agents_share_one_sdk_fingerprint_and_system_prompt_per_tool_but_nothing_else() -> None:
    _, cols = population("oss_agents")
    tools = groups(cols, "client_fingerprint", "account_id")
    assert 2 <= len(tools) <= 3
    for client, accounts in tools.items():
        sel = cols["client_fingerprint"] == client
        assert len(accounts) >= 100
        assert distinct({k: v[sel] for k, v in cols.items()}, "payment_fingerprint") >= 0.95 * len(accounts)
        system = int(np.bincount(np.unique(cols["prompt_simhash"][sel], return_inverse=True)[1]).argmax())
        system_hash = int(np.unique(cols["prompt_simhash"][sel])[system])
        near = float(np.mean(bits(cols["prompt_simhash"][sel], system_hash) <= 4))
        assert 0.5 <= near <= 0.9
    assert set(cols["org_id"].tolist()) == {None}
    assert cols["n_tools"].min() >= 10 and cols["n_tools"].max() <= 40
    assert len(np.unique(cols["ts"] // HOUR_MS % 24)) == 24  # autonomous loops run at night too


def test_course_students_rush_before_a_deadline_with_reasoning_on() -> None:
    world, cols = population("course")
    assert 0.8 <= cols["reasoning_requested"].mean() <= 0.9
    assert set(cols["account_tier"].tolist()) <= {"free", "pro", "education"}
    popular = np.isin(cols["client_fingerprint"], world.popular_clients()[:3])
    shared = len(set(cols["account_id"][popular].tolist())) / distinct(cols, "account_id")
    assert 0.35 <= shared <= 0.65
    frac = (cols["ts"] - world.t0) / (world.t1 - world.t0)
    hist = np.bincount(np.minimum(frac * 20, 19).astype(int), minlength=20)
    assert 8 <= int(hist.argmax()) <= 15  # the peak sits in the day or two before the deadline at ~70%
    assert hist[9:14].sum() > 2 * hist[:5].sum()  # rising towards it
    assert hist[16:].max() < hist.max() / 5  # then a trickle


def test_eval_company_sweeps_every_model_round_the_clock_at_machine_pace() -> None:
    _, cols = population("eval_company")
    companies = groups(cols, "payment_fingerprint", "account_id")
    assert 1 <= len(companies) <= 2
    for card in companies:
        sel = cols["payment_fingerprint"] == card
        assert set(cols["model"][sel].tolist()) == {"frontier-1", "frontier-1-mini", "frontier-2"}
        assert len(set(cols["org_id"][sel].tolist())) == 1
        assert len(np.unique(cols["ts"][sel] // HOUR_MS % 24)) == 24
    assert next(iter(groups(cols, "payment_fingerprint", "org_id").values())) != {None}
    for acc in set(cols["account_id"].tolist()):
        gaps = np.diff(np.sort(cols["ts"][cols["account_id"] == acc])) / 1000
        assert 1.0 <= np.median(gaps) <= 6.5


def test_research_labs_share_a_card_under_research_tiers() -> None:
    _, cols = population("research_lab")
    labs = groups(cols, "payment_fingerprint", "account_id")
    assert all(3 <= len(a) <= 8 for a in labs.values())
    assert set(cols["account_tier"].tolist()) <= {"research", "education"}
    assert cols["reasoning_requested"].mean() > 0.6


def test_ci_bots_use_one_card_one_client_and_no_org_per_company() -> None:
    _, cols = population("ci_bots")
    assert set(cols["org_id"].tolist()) == {None}
    for card, accounts in groups(cols, "payment_fingerprint", "account_id").items():
        sel = cols["payment_fingerprint"] == card
        assert 4 <= len(accounts) <= 10
        assert distinct({"c": cols["client_fingerprint"][sel]}, "c") == 1
    ok = cols["status"] == "ok"
    assert cols["output_tokens"][ok].min() >= 300 and cols["output_tokens"][ok].max() <= 1500
    assert len(np.unique(cols["ts"] // HOUR_MS % 24)) == 24


def test_an_agency_runs_many_accounts_on_one_card_in_office_hours() -> None:
    """More accounts on one card than a small fleet, no org, and nights off (the agency's own timezone)."""
    _, cols = population("agency")
    assert set(cols["org_id"].tolist()) == {None}
    for card, accounts in groups(cols, "payment_fingerprint", "account_id").items():
        assert 15 <= len(accounts) <= 40
        sel = cols["payment_fingerprint"] == card
        assert distinct({"c": cols["client_fingerprint"][sel]}, "c") == 1
        busy = np.bincount(cols["ts"][sel] // HOUR_MS % 24, minlength=24)
        assert np.sort(busy)[:6].sum() < 0.05 * busy.sum()  # six hours of the day nearly silent


def test_reseller_frontends_send_thousands_of_diverse_requests_a_day() -> None:
    world, cols = population("reseller_frontends")
    assert per_account_day(world, cols).min() >= 1_500
    assert distinct(cols, "prompt_simhash") > 0.99 * len(cols["ts"])
    assert 0.1 <= cols["reasoning_requested"].mean() <= 0.35


def test_shared_clients_come_from_five_popular_fingerprints() -> None:
    world, cols = population("shared_clients")
    assert set(cols["client_fingerprint"].tolist()) <= set(world.popular_clients().tolist())
    assert distinct(cols, "account_id") >= 300
    assert distinct(cols, "payment_fingerprint") == distinct(cols, "account_id")


def test_cloud_devs_sit_on_the_datacenter_networks_campaigns_use() -> None:
    world, cols = population("cloud_devs")
    allowed = {*world.datacenter_asns.tolist(), world.reseller_asn}
    assert set(cols["asn"].tolist()) <= allowed
    assert {int(ip.split(".")[0]) for ip in cols["ip_prefix"].tolist()} <= set(_DATACENTER_OCTETS)
    assert np.isin(cols["ip_prefix"], world.reseller_ips).any()


def test_camp_diverse_has_one_card_and_one_client_per_account_and_varied_prompts() -> None:
    world, cols = population("camp_diverse")
    n = distinct(cols, "account_id")
    assert 60 <= n <= 150
    assert distinct(cols, "payment_fingerprint") == n and distinct(cols, "client_fingerprint") == n
    assert 10 <= distinct(cols, "ip_prefix") <= 40 + len(world.reseller_ips)
    assert 150 * 0.8 <= np.median(per_account_day(world, cols)) <= 600 * 1.2
    assert cols["reasoning_requested"].mean() >= 0.85
    assert np.median(cols["output_tokens"][cols["status"] == "ok"]) >= 3_500
    assert len(np.unique(cols["ts"] // HOUR_MS % 24)) == 24


def test_camp_human_keeps_human_hours_and_mixes_in_ordinary_traffic() -> None:
    _, cols = population("camp_human")
    n = distinct(cols, "account_id")
    assert distinct(cols, "payment_fingerprint") <= n / 5 + 1
    assert 2 <= distinct(cols, "client_fingerprint") <= 4
    assert 0.5 <= cols["reasoning_requested"].mean() <= 0.7  # 30-40% of requests look ordinary


def test_camp_lowvol_is_wide_and_thin() -> None:
    world, cols = population("camp_lowvol")
    n = distinct(cols, "account_id")
    assert n >= 290
    assert np.median(per_account_day(world, cols)) <= 12
    assert distinct(cols, "payment_fingerprint") <= n / 15 + 1
    assert 3 <= distinct(cols, "client_fingerprint") <= 8


def test_camp_org_carries_an_org_and_institutional_tiers() -> None:
    world, cols = population("camp_org")
    assert None not in set(cols["org_id"].tolist()) and distinct(cols, "org_id") <= 3
    assert set(cols["account_tier"].tolist()) <= {"education", "research", "enterprise"}
    assert distinct(cols, "payment_fingerprint") <= 2
    assert cols["reasoning_requested"].all()
    assert (cols["ts"].max() - cols["ts"].min()) > 0.8 * world.days * DAY_MS


@pytest.mark.parametrize("name", ["oss_agents", "camp_diverse"])
def test_populations_are_deterministic(name: str) -> None:
    a, b = population(name, 5)[1], population(name, 5)[1]
    assert all(np.array_equal(a[k], b[k]) for k in a)
