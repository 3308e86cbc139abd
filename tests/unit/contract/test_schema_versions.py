"""UsageEvent v2: v1 with every string's length bounded; its examples, and the codec reading both versions
(issue 20, attack 3: no optional string was bounded, and a link group of long org ids outgrew a record)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgpack
import pytest
from jsonschema import Draft202012Validator

from pipeline.contract import models, schemas
from pipeline.contract.codec import CodecError, decode_event
from pipeline.contract.manifest import schema_dir

EXAMPLES = schema_dir() / "examples" / "usage_event.v2"


def _examples(validity: str) -> list[Path]:
    return sorted((EXAMPLES / validity).glob("*.json"))


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def test_v2_is_v1_with_every_string_bounded() -> None:
    v1, v2 = schemas.load_schema("usage_event", 1), schemas.load_schema("usage_event", 2)
    Draft202012Validator.check_schema(v2)
    assert v2["$id"] == "https://distillation-guard.dev/schemas/usage_event.v2.json"
    assert v2["properties"]["schema_version"]["const"] == 2
    assert list(v2["properties"]) == list(v1["properties"]) == list(models.USAGE_EVENT_FIELDS)
    assert v2["required"] == v1["required"]
    for name, prop in v2["properties"].items():
        if "string" in prop["type"]:
            assert prop.get("maxLength", 0) <= models.STRING_MAX_CHARS or "enum" in prop, name
            assert "maxLength" in prop or "enum" in prop, f"{name} has no length bound"
        if name != "schema_version":
            assert {k: v for k, v in prop.items() if k != "maxLength"} == \
                {k: v for k, v in v1["properties"][name].items() if k != "maxLength"}, name


def test_v2_has_valid_and_invalid_examples() -> None:
    assert len(_examples("valid")) >= 2 and len(_examples("invalid")) >= 5


@pytest.mark.parametrize("path", _examples("valid"), ids=lambda p: p.stem)
def test_valid_v2_example_passes_its_schema_and_the_codec(path: Path) -> None:
    example = _load(path)
    schemas.validate("usage_event", example, 2)
    for raw in (msgpack.packb(example), json.dumps(example).encode()):
        assert decode_event(raw) == {name: example.get(name) for name in models.USAGE_EVENT_FIELDS}


@pytest.mark.parametrize("path", _examples("invalid"), ids=lambda p: p.stem)
def test_invalid_v2_example_fails_its_schema_and_the_codec(path: Path) -> None:
    example = _load(path)
    assert not schemas.is_valid("usage_event", example, 2)
    for raw in (msgpack.packb(example), json.dumps(example).encode()):
        with pytest.raises(CodecError):
            decode_event(raw)


@pytest.mark.parametrize("path", _examples("invalid"), ids=lambda p: p.stem)
def test_a_v1_event_is_read_with_the_bounds_of_v2(path: Path) -> None:
    """The same over-long strings in a v1 event (valid against v1, whose strings had no bound) go to the
    DLQ as well: a producer cannot get around the bounds by naming the older version."""
    if path.stem.startswith("schema_version"):
        return
    example = {**_load(path), "schema_version": 1}
    assert schemas.is_valid("usage_event", example, 1)
    with pytest.raises(CodecError, match="at most 128 chars"):
        decode_event(msgpack.packb(example))


def test_a_verdicts_analyst_is_bounded_too() -> None:
    from pipeline.contract.codec import decode_verdict

    verdict = {"schema_version": 1, "alert_id": "alr-1", "account_id": "a", "verdict": "true_positive",
               "ts": 1, "analyst": "x" * 128}
    assert decode_verdict(msgpack.packb(verdict))["analyst"] == "x" * 128
    with pytest.raises(CodecError, match="analyst: expected string of at most 128 chars or null"):
        decode_verdict(msgpack.packb({**verdict, "analyst": "x" * 129}))
