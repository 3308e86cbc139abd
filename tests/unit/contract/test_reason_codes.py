"""The published list of reason codes (``schemas/reason_codes.json``) is complete: every code the source
can emit is in it, and a backtest of the tiny scenario emits only listed codes."""

from __future__ import annotations

import json
import re
from pathlib import Path

from pipeline.contract.manifest import schema_dir
from pipeline.detection import DetectionConfig, Engine
from pipeline.simulate import generate

CODES = json.loads((schema_dir() / "reason_codes.json").read_text())["codes"]
SOURCE = Path(__file__).resolve().parents[3] / "pipeline"
# a code as the source writes it: a reason map's "code", a scoring helper's first argument, or an action's list
LITERAL = re.compile(r'(?:"code": "|_reason\("|\br\("|"reason_codes": \[")([a-z_]+)"')


def test_every_code_in_the_source_is_listed() -> None:
    found = {m.group(1) for path in SOURCE.rglob("*.py") for m in LITERAL.finditer(path.read_text())}
    assert len(found) >= 20, found
    assert found <= set(CODES), sorted(found - set(CODES))
    assert all(c["meaning"] and c["applies_to"] for c in CODES.values())


def test_a_backtest_emits_only_listed_codes() -> None:
    engine = Engine(DetectionConfig())
    seen: set[str] = set()
    for out in engine.replay(generate("tiny", 1).events):
            seen |= {r["code"] for r in out.value.get("reasons", [])} | set(out.value.get("reason_codes", []))
    assert seen and seen <= set(CODES), sorted(seen - set(CODES))
