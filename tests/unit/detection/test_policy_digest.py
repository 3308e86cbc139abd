"""Policies are identified: actions carry ``policy_version`` with a digest of every setting that changes a
decision, and a backtest report records the whole detection configuration."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from pipeline import cli
from pipeline.contract.eventfile import write_records
from pipeline.detection.config import DetectionConfig
from pipeline.simulate import generate


def test_the_digest_follows_every_decision_setting_and_nothing_else() -> None:
    base = DetectionConfig()
    assert base.digest() == DetectionConfig().digest()
    assert len(base.digest()) == 8
    for change in ({"campaign_high": 0.9}, {"account_medium": 0.5}, {"member_similarity": 0.5},
                   {"allowlist_orgs": frozenset({"org-1"})}, {"population_review": True}):
        assert dataclasses.replace(base, **change).digest() != base.digest(), change
    for same in ({"shadow": False}, {"detector_version": "x"}, {"policy_version": "y"}):
        assert dataclasses.replace(base, **same).digest() == base.digest(), same
    assert (DetectionConfig(allowlist_orgs=frozenset({"a", "b"})).digest()
            == DetectionConfig(allowlist_orgs=frozenset({"b", "a"})).digest())


def test_the_versioned_policy_puts_the_digest_after_the_name_and_before_a_suffix() -> None:
    cfg = DetectionConfig()
    assert cfg.versioned_policy() == f"{cfg.policy_version}@{cfg.digest()}"
    replay = dataclasses.replace(cfg, policy_version=cfg.policy_version + "+replay")
    assert replay.versioned_policy() == f"{cfg.policy_version}@{cfg.digest()}+replay"


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    sim = generate("tiny", 1)
    root = tmp_path_factory.mktemp("digest")
    events, labels = root / "events.msgpack", root / "labels.jsonl"
    write_records(events, sim.events)
    labels.write_text("".join(json.dumps(r) + "\n" for r in sim.labels))
    return events, labels


def test_two_backtests_with_different_thresholds_say_so_in_actions_and_report(
        tiny_files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events, labels = tiny_files
    seen = {}
    for name, flags in (("default", []), ("strict", ["--campaign-high", "0.9"])):
        actions_out, report = tmp_path / f"{name}.jsonl", tmp_path / name
        assert cli.main(["backtest", "--input", str(events), "--labels", str(labels), "--actions-out",
                         str(actions_out), "--report", str(report), "-q", *flags]) == 0
        versions = {json.loads(line)["policy_version"] for line in actions_out.read_text().splitlines()}
        meta = json.loads((report / "metrics.json").read_text())["meta"]
        assert len(versions) == 1 and meta["policy_version"] + "+replay" == versions.pop()
        assert f"`{meta['policy_version']}`" in (report / "report.md").read_text()
        seen[name] = meta
    assert seen["default"]["policy_version"] != seen["strict"]["policy_version"]
    # the analyst's view of the same two runs: a self-contained HTML report, and what the change did
    page = (tmp_path / "default" / "report.html").read_text()
    assert page.startswith("<!doctype html>") and "data:image/png;base64," in page
    assert "http://" not in page and "https://" not in page and "<script" not in page, "nothing from a network"
    assert "Campaign accounts missed" in page and "detected campaign ids" in page
    accounts = json.loads((tmp_path / "default" / "accounts.json").read_text())
    assert accounts["flagged"] and all(a["reasons"] for a in accounts["flagged"])
    capsys.readouterr()
    assert cli.main(["backtest", "--compare", str(tmp_path / "default"), str(tmp_path / "strict")]) == 0
    out = capsys.readouterr().out
    assert "settings that differ: campaign_high 0.3 -> 0.9" in out
    only_default = int(out.split("flagged in A only: ")[1].split()[0])
    assert only_default > 0 and "flagged in B only: 0" in out, out
    assert cli.main(["backtest", "--compare", str(tmp_path / "default"), str(tmp_path / "nowhere")]) == 2
    assert (seen["default"]["detection_config"]["campaign_high"], seen["strict"]["detection_config"]["campaign_high"]) \
        == (DetectionConfig().campaign_high, 0.9)
