"""The topic manifest (``schemas/topics.json``): the one loader, and the topic names as constants.

Every topic the pipeline reads or writes is named here once; code says ``USAGE_EVENTS``, never the
string, and a test checks that these constants are exactly the manifest's topics. Names are unprefixed:
``Settings.topic(name)`` puts the configured prefix in front.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

__all__ = [
    "ALERTS",
    "ACTIONS",
    "CAMPAIGN_SIGNALS",
    "DLQ",
    "FINDINGS",
    "LINK_UPDATES",
    "NAMES",
    "USAGE_EVENTS",
    "VERDICTS",
    "load_manifest",
    "schema_dir",
]

USAGE_EVENTS = "usage-events"
VERDICTS = "analyst-verdicts"
ALERTS = "anomaly-alerts"
ACTIONS = "enforcement-actions"
DLQ = "usage-events-dlq"
LINK_UPDATES = "link-updates"
FINDINGS = "findings"
CAMPAIGN_SIGNALS = "campaign-signals"
NAMES = (USAGE_EVENTS, VERDICTS, ALERTS, ACTIONS, DLQ, LINK_UPDATES, FINDINGS, CAMPAIGN_SIGNALS)

MANIFEST_FILE = "topics.json"


@cache
def schema_dir() -> Path:
    """The schema folder: inside the installed wheel (``pipeline/_schemas``), else the repository's ``schemas/``."""
    packaged = Path(__file__).resolve().parents[1] / "_schemas"
    if (packaged / MANIFEST_FILE).is_file():
        return packaged
    return Path(__file__).resolve().parents[2] / "schemas"


@cache
def _topics() -> dict[str, dict[str, Any]]:
    path = schema_dir() / MANIFEST_FILE
    topics = json.loads(path.read_text(encoding="utf-8"))["topics"]
    if not isinstance(topics, dict) or not topics:
        raise ValueError(f"{path}: 'topics' must be a non-empty object")
    return topics


def load_manifest() -> dict[str, dict[str, Any]]:
    """The manifest's topics by unprefixed name: ``{"usage-events": {"partitions": 4, "config": …}, …}``."""
    return _topics()
