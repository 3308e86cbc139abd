"""The schemas, their examples, the Python models and the codec's hand validator all agree."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgpack
import pytest
from jsonschema import Draft202012Validator

from pipeline.contract import models, schemas
from pipeline.contract.codec import CodecError, decode_event, decode_verdict, encode
from pipeline.contract.manifest import load_manifest, schema_dir

EXAMPLES = schema_dir() / "examples"


def _examples(kind: str, validity: str) -> list[Path]:
    return sorted((EXAMPLES / kind / validity).glob("*.json"))


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _params(kinds: tuple[str, ...], validity: str) -> list[Any]:
    return [pytest.param(k, p, id=f"{k}/{p.stem}") for k in kinds for p in _examples(k, validity)]


TYPED_DICTS = {
    "usage_event": models.UsageEvent,
    "anomaly_alert": models.AnomalyAlert,
    "enforcement_action": models.EnforcementAction,
    "verdict": models.Verdict,
}
FIELD_TUPLES = {
    "usage_event": models.USAGE_EVENT_FIELDS,
    "anomaly_alert": models.ALERT_FIELDS,
    "enforcement_action": models.ACTION_FIELDS,
    "verdict": models.VERDICT_FIELDS,
}
REQUIRED = {
    "usage_event": models.USAGE_EVENT_REQUIRED,
    "anomaly_alert": models.ALERT_FIELDS,
    "enforcement_action": models.ACTION_FIELDS,
    "verdict": models.VERDICT_REQUIRED,
}
ENUMS = [
    ("usage_event", "status", models.STATUSES),
    ("usage_event", "capability", models.CAPABILITIES),
    ("usage_event", "account_tier", models.TIERS),
    ("anomaly_alert", "severity", models.SEVERITIES),
    ("enforcement_action", "action", models.ACTIONS),
    ("enforcement_action", "mode", models.MODES),
    ("verdict", "verdict", models.VERDICTS),
]


@pytest.mark.parametrize("kind", schemas.KINDS)
def test_schema_is_valid_draft_2020_12_with_id_title_description(kind: str) -> None:
    schema = schemas.load_schema(kind)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"https://distillation-guard.dev/schemas/{kind}.v1.json"
    assert schema["title"] and schema["description"]
    assert all(prop.get("description") for prop in schema["properties"].values())


@pytest.mark.parametrize("kind", schemas.KINDS)
def test_every_kind_has_valid_and_invalid_examples(kind: str) -> None:
    assert len(_examples(kind, "valid")) >= 2
    assert len(_examples(kind, "invalid")) >= 5


@pytest.mark.parametrize(("kind", "path"), _params(schemas.KINDS, "valid"))
def test_valid_example_passes_its_schema(kind: str, path: Path) -> None:
    schemas.validate(kind, _load(path))


@pytest.mark.parametrize(("kind", "path"), _params(schemas.KINDS, "invalid"))
def test_invalid_example_fails_its_schema(kind: str, path: Path) -> None:
    with pytest.raises(schemas.SchemaValidationError) as info:
        schemas.validate(kind, _load(path))
    assert info.value.errors and str(info.value).startswith(f"invalid {kind}: $")


def test_validate_reports_the_path_of_the_problem() -> None:
    alert = _load(EXAMPLES / "anomaly_alert" / "valid" / "account_alert.json")
    alert["reasons"][1]["value"] = "high"
    assert schemas.errors("anomaly_alert", alert) == [
        "$.reasons[1].value: 'high' is not of type 'number', 'null'"
    ]


@pytest.mark.parametrize("kind", schemas.KINDS)
def test_typed_dict_keys_equal_schema_properties(kind: str) -> None:
    props = list(schemas.load_schema(kind)["properties"])
    assert list(TYPED_DICTS[kind].__annotations__) == props
    assert FIELD_TUPLES[kind] == tuple(props)


def test_reason_typed_dict_equals_schema_reason() -> None:
    """The pipeline writes AnomalyAlert v2: its reason is v1's plus ``contribution``."""
    reason = schemas.load_schema("anomaly_alert", 2)["$defs"]["reason"]
    assert models.REASON_FIELDS == tuple(reason["properties"]) == tuple(reason["required"])
    v1 = schemas.load_schema("anomaly_alert", 1)["$defs"]["reason"]
    assert (*v1["properties"], "contribution") == models.REASON_FIELDS


@pytest.mark.parametrize("kind", schemas.KINDS)
def test_required_lists_agree(kind: str) -> None:
    assert tuple(schemas.load_schema(kind)["required"]) == REQUIRED[kind]


@pytest.mark.parametrize(("kind", "field", "values"), ENUMS, ids=[f"{k}.{f}" for k, f, _ in ENUMS])
def test_enum_constants_equal_schema_enums(kind: str, field: str, values: frozenset[str]) -> None:
    prop = schemas.load_schema(kind)["properties"][field]
    assert {v for v in prop["enum"] if v is not None} == values
    assert (None in prop["enum"]) == (field not in REQUIRED[kind])


def test_inputs_allow_unknown_fields_outputs_do_not() -> None:
    for kind in ("usage_event", "verdict"):
        assert schemas.load_schema(kind)["additionalProperties"] is True
    for kind in ("anomaly_alert", "enforcement_action"):
        assert schemas.load_schema(kind)["additionalProperties"] is False


def test_manifest_references_existing_schema_files() -> None:
    manifest = {"topics": load_manifest()}
    referenced = set()
    for name, topic in manifest["topics"].items():
        assert topic["direction"] in ("in", "out", "internal"), name
        if topic["schema"] is not None:
            assert (schema_dir() / topic["schema"]).is_file(), topic["schema"]
            referenced.add(topic["schema"])
    assert referenced == {schemas.schema_path(k).name for k in schemas.KINDS}


def test_load_schema_returns_a_copy() -> None:
    schemas.load_schema("verdict")["title"] = "changed"
    assert schemas.load_schema("verdict")["title"] == "Verdict v1"


def test_unknown_kind_is_a_key_error() -> None:
    with pytest.raises(KeyError, match="unknown message kind"):
        schemas.load_schema("usage_events")


# --------------------------------------------------------------------------- codec agrees with the schema


def _both_encodings(obj: Any) -> list[bytes]:
    return [msgpack.packb(obj, use_bin_type=True), json.dumps(obj).encode()]


@pytest.mark.parametrize("path", _examples("usage_event", "valid"), ids=lambda p: p.stem)
def test_codec_accepts_every_valid_usage_event_example(path: Path) -> None:
    example = _load(path)
    for raw in _both_encodings(example):
        event = decode_event(raw)
        assert list(event) == list(models.USAGE_EVENT_FIELDS)
        assert event == {name: example.get(name) for name in models.USAGE_EVENT_FIELDS}
        schemas.validate("usage_event", event)
        assert decode_event(encode(event)) == event


@pytest.mark.parametrize("path", _examples("usage_event", "invalid"), ids=lambda p: p.stem)
def test_codec_rejects_every_invalid_usage_event_example(path: Path) -> None:
    if schemas.event_is_valid(_load(path)):  # invalid as v1, but read as what it says it is (v2)
        assert path.stem == "schema_version_2"
        return
    for raw in _both_encodings(_load(path)):
        with pytest.raises(CodecError):
            decode_event(raw)


@pytest.mark.parametrize("path", _examples("verdict", "valid"), ids=lambda p: p.stem)
def test_codec_accepts_every_valid_verdict_example(path: Path) -> None:
    example = _load(path)
    for raw in _both_encodings(example):
        assert decode_verdict(raw) == {name: example.get(name) for name in models.VERDICT_FIELDS}


@pytest.mark.parametrize("path", _examples("verdict", "invalid"), ids=lambda p: p.stem)
def test_codec_rejects_every_invalid_verdict_example(path: Path) -> None:
    for raw in _both_encodings(_load(path)):
        with pytest.raises(CodecError):
            decode_verdict(raw)


def test_the_topic_name_constants_are_exactly_the_manifest_topics() -> None:
    from pipeline.contract import manifest

    assert set(manifest.NAMES) == set(load_manifest())
    assert len(manifest.NAMES) == len(set(manifest.NAMES))
