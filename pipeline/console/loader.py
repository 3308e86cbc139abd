"""Load a backtest's output files into the console store as a named run, so a replay is looked at like live.

A run is the alerts and actions files of ``backtest --alerts-out/--actions-out`` (JSON lines), and
optionally the report directory of ``backtest --report`` (its ``metrics.json`` and ``accounts.json`` feed
the Replays view) and the events file (per-account events per hour for the campaign activity chart).
Loading a run again replaces it.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.console import store
from pipeline.console.ingest import hour_of
from pipeline.console.store import Batch


class LoadError(ValueError):
    """A file of the run could not be read."""


@dataclass
class RunFiles:
    alerts: Path | None = None
    actions: Path | None = None
    report: Path | None = None
    events: Path | None = None


def _jsonl(path: Path) -> Iterator[dict[str, Any]]:
    try:
        with open(path, "rb") as fh:
            for n, line in enumerate(fh, 1):
                if line.strip():
                    obj = json.loads(line)
                    if not isinstance(obj, dict):
                        raise LoadError(f"{path}:{n}: not a JSON object")
                    yield obj
    except (OSError, json.JSONDecodeError) as exc:
        raise LoadError(f"{path}: {exc}") from exc


def _report(path: Path) -> tuple[Any, Any]:
    found = []
    for name in ("metrics.json", "accounts.json"):
        try:
            found.append(json.loads((path / name).read_text()))
        except FileNotFoundError:
            found.append(None)
        except (OSError, json.JSONDecodeError) as exc:
            raise LoadError(f"{path / name}: {exc}") from exc
    return found[0], found[1]


def activity_of(events: Iterable[dict[str, Any]]) -> Counter[tuple[str, int]]:
    counts: Counter[tuple[str, int]] = Counter()
    for ev in events:
        hour = hour_of(ev.get("ts"))
        if hour is not None and isinstance(ev.get("account_id"), str):
            counts[(ev["account_id"], hour)] += 1
    return counts


def _events(path: Path) -> Iterator[dict[str, Any]]:
    from pipeline.contract.eventfile import EventFileError, read_events

    try:
        yield from read_events(path, lambda bad: None)  # type: ignore[misc]
    except EventFileError as exc:
        raise LoadError(str(exc)) from exc


def load_run(conn: sqlite3.Connection, name: str, files: RunFiles, *,
             alerts: Iterable[dict[str, Any]] = (), actions: Iterable[dict[str, Any]] = (),
             events: Iterable[dict[str, Any]] = ()) -> dict[str, int]:
    """Replace the run ``name`` with the given files (and/or in-memory alerts, actions, events); returns
    the counts stored."""
    if name == store.LIVE:
        raise LoadError(f"'{store.LIVE}' is the name of what the consumer reads from Kafka: pick another")
    metrics, accounts = _report(files.report) if files.report else (None, None)
    all_alerts = [*alerts, *(_jsonl(files.alerts) if files.alerts else [])]
    all_actions = [*actions, *(_jsonl(files.actions) if files.actions else [])]
    counts = activity_of([*events, *(_events(files.events) if files.events else [])])
    with Batch(conn) as batch:
        store.drop_source(conn, name)
        path = str(files.alerts.parent) if files.alerts else str(files.report) if files.report else None
        store.save_run(conn, name, "backtest", int(time.time() * 1000), path, metrics, accounts)
        try:
            for a in sorted(all_alerts, key=lambda a: a["ts"]):
                batch.alert(name, a)
            for a in sorted(all_actions, key=lambda a: a["ts"]):
                batch.action(name, a)
        except (KeyError, TypeError) as exc:
            raise LoadError(f"not an alert or action: missing or bad field {exc}") from exc
        batch.activity(name, counts)
    return {"alerts": len(all_alerts), "actions": len(all_actions), "activity_rows": len(counts)}
