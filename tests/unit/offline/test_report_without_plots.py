"""The backtest report without the ``report`` extra (matplotlib): metrics.json and report.md are written
all the same, and the report says why it has no plots (the worker's image does not install plotting)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from pipeline.offline.report import write_report
from tests.unit.detection.test_engine import hand_made_evaluation


def test_a_report_without_matplotlib_has_everything_but_the_plots(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    ev = hand_made_evaluation()
    files = write_report(tmp_path, ev, ev.compute(), {"input": "x", "policy_version": "p@1"})
    assert [f.name for f in files] == ["metrics.json", "accounts.json", "report.md", "report.html"]
    assert json.loads((tmp_path / "metrics.json").read_text())["meta"]["policy_version"] == "p@1"
    assert "No plots: matplotlib is not installed" in (tmp_path / "report.md").read_text()
    assert "No plots: matplotlib is not installed" in (tmp_path / "report.html").read_text()


def test_the_image_installs_no_plotting() -> None:
    root = Path(__file__).resolve().parents[3]
    assert "matplotlib" not in (root / "requirements" / "runtime.lock").read_text()
    assert "matplotlib" in (root / "requirements" / "dev.lock").read_text()
