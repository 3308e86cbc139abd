"""Access to the JSON Schemas of the wire messages and to the topic manifest (``schemas/``).

The schemas are the source of truth of the contract. Code on the per-event path uses the hand-written
validation in :mod:`pipeline.contract.codec`; this module is for tests, tools and the (rare) output checks.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from pipeline.contract.manifest import schema_dir

KINDS: tuple[str, ...] = ("usage_event", "anomaly_alert", "enforcement_action", "verdict")
SCHEMA_VERSION = 1


class SchemaValidationError(ValueError):
    """A message that breaks its JSON Schema; ``errors`` lists every problem as 'path: message'."""

    def __init__(self, kind: str, errors: list[str]) -> None:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(f"invalid {kind}: {errors[0]}{more}")
        self.kind = kind
        self.errors = errors




def schema_path(kind: str, version: int = SCHEMA_VERSION) -> Path:
    """Path of the schema file of one message kind, e.g. ``usage_event.v1.json``."""
    if kind not in KINDS:
        raise KeyError(f"unknown message kind {kind!r}; known: {', '.join(KINDS)}")
    return schema_dir() / f"{kind}.v{version}.json"


@cache
def _load(kind: str, version: int) -> dict[str, Any]:
    with schema_path(kind, version).open(encoding="utf-8") as f:
        schema: dict[str, Any] = json.load(f)
    return schema


def load_schema(kind: str, version: int = SCHEMA_VERSION) -> dict[str, Any]:
    """The JSON Schema of one message kind, as a fresh dict the caller may change."""
    return copy.deepcopy(_load(kind, version))


@cache
def validator(kind: str, version: int = SCHEMA_VERSION) -> Draft202012Validator:
    """A cached draft 2020-12 validator for one message kind (the schema itself is checked first)."""
    schema = _load(kind, version)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)



def errors(kind: str, obj: Any, version: int = SCHEMA_VERSION) -> list[str]:
    """Every way ``obj`` breaks the schema, as 'path: message' strings, sorted by path; empty if valid."""
    found = []
    for err in validator(kind, version).iter_errors(obj):
        path = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path)
        message = err.message if len(err.message) <= 300 else err.message[:300] + "..."
        found.append((list(map(str, err.absolute_path)), f"{path}: {message}"))
    return [text for _, text in sorted(found)]


def validate(kind: str, obj: Any, version: int = SCHEMA_VERSION) -> None:
    """Raise :class:`SchemaValidationError` if ``obj`` breaks the schema of ``kind``."""
    found = errors(kind, obj, version)
    if found:
        raise SchemaValidationError(kind, found)


def is_valid(kind: str, obj: Any, version: int = SCHEMA_VERSION) -> bool:
    """True if ``obj`` satisfies the schema of ``kind``."""
    return bool(validator(kind, version).is_valid(obj))


EVENT_VERSIONS = (1, 2)
"""UsageEvent versions the pipeline reads (``usage_event.v<n>.json``)."""


def event_is_valid(obj: Any) -> bool:
    """Whether the pipeline reads ``obj`` as a UsageEvent: valid against the schema of the version it
    names, and within the bounds of the latest (v1 events are read with v2's string lengths)."""
    if not isinstance(obj, dict) or obj.get("schema_version") not in EVENT_VERSIONS or \
            type(obj.get("schema_version")) is not int:
        return False
    latest = max(EVENT_VERSIONS)
    return is_valid("usage_event", obj, obj["schema_version"]) and \
        is_valid("usage_event", {**obj, "schema_version": latest}, latest)
