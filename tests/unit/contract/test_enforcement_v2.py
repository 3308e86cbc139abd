"""EnforcementAction v2: v1 plus the verb ``lift`` and the field ``lifts`` (the actions a lift ends); its
examples, and the example lift's signature under the public example key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.contract import schemas
from pipeline.contract.manifest import schema_dir
from pipeline.contract.signing import check

EXAMPLES = schema_dir() / "examples" / "enforcement_action.v2"
EXAMPLE_KEY = b"example-action-key-public-in-schemas-examples"


def test_v2_is_v1_with_the_lift_verb_and_the_lifts_field() -> None:
    v1, v2 = schemas.load_schema("enforcement_action", 1), schemas.load_schema("enforcement_action", 2)
    assert v2["properties"]["schema_version"]["const"] == 2
    assert set(v2["properties"]) - set(v1["properties"]) == {"lifts"}
    assert v2["properties"]["action"]["enum"] == [*v1["properties"]["action"]["enum"], "lift"]
    assert set(v2["required"]) == set(v1["required"]) | {"lifts"}


@pytest.mark.parametrize("path", sorted((EXAMPLES / "valid").glob("*.json")), ids=lambda p: p.stem)
def test_valid_example_passes_and_is_signed_with_the_example_key(path: Path) -> None:
    action = json.loads(path.read_text())
    assert schemas.errors("enforcement_action", action, 2) == []
    assert check(action, {"example": EXAMPLE_KEY}) == "example"


@pytest.mark.parametrize("path", sorted((EXAMPLES / "invalid").glob("*.json")), ids=lambda p: p.stem)
def test_invalid_example_fails(path: Path) -> None:
    assert schemas.errors("enforcement_action", json.loads(path.read_text()), 2) != []
