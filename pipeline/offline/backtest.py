"""Backtests: replay events through the same detection engine the worker runs, in event time.

Nothing here reads the clock or touches a live topic: the same input gives byte-identical outputs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

import orjson

from pipeline.contract import codec
from pipeline.contract.admission import TS_IN_FUTURE, bound_file_events
from pipeline.contract.eventfile import BadRecord, read_events
from pipeline.contract.models import UsageEvent
from pipeline.contract.signing import REPLAY_MARK
from pipeline.detection import DetectionConfig, Engine
from pipeline.detection.engine import ACTIONS, ALERTS, Output
from pipeline.offline.evaluation import Evaluation
from pipeline.settings import Settings


@dataclass
class BacktestCounts:
    events: int = 0
    bad_records: int = 0
    alerts: int = 0
    actions: int = 0
    bad: list[BadRecord] = field(default_factory=list)


def replay_engine(settings: Settings) -> Engine:
    """The engine a replay runs: the settings' detection config, but always in shadow mode and with
    ``policy_version`` marked ``+replay``, whatever ``DG_ENFORCE`` says. A replay (candidate thresholds, an
    old range) must never produce an action that could be carried out: ``verify`` shows these as
    ``REPLAY (shadow)`` and fails one in enforce mode. Signed over another ``policy_version``, its actions
    also have ids of their own, which never de-duplicate against live ones."""
    cfg = DetectionConfig.from_settings(settings)
    cfg = dataclasses.replace(cfg, shadow=True, policy_version=cfg.policy_version + REPLAY_MARK)
    key = settings.signing_key
    return Engine(cfg, signing_key=key.get_secret_value().encode("utf-8") if key is not None else None)


def replay(
    events: Iterable[UsageEvent],
    engine: Engine,
    *,
    alerts_fh: IO[bytes] | None = None,
    actions_fh: IO[bytes] | None = None,
    evaluation: Evaluation | None = None,
    counts: BacktestCounts | None = None,
    on_event: Callable[[], None] | None = None,
    sink: Callable[[str, dict[str, Any]], None] | None = None,
) -> BacktestCounts:
    """Feed events in order through ``engine``; write its outputs as JSON lines (and to ``sink``);
    return the counts. With an ``evaluation``, every account's harvest score reaches it too."""
    if evaluation is not None:
        engine.observe_score = evaluation.observe_score
    counts = counts or BacktestCounts()

    def emit(outputs: list[Output]) -> None:
        for out in outputs:
            if out.topic == ALERTS:
                counts.alerts += 1
                fh = alerts_fh
            elif out.topic == ACTIONS:
                counts.actions += 1
                fh = actions_fh
            else:  # pragma: no cover - the engine only emits these two
                raise ValueError(f"engine emitted to unknown topic {out.topic}")
            if fh is not None:
                fh.write(orjson.dumps(out.value) + b"\n")
            if sink is not None:
                sink(out.topic, out.value)
            if evaluation is not None:
                evaluation.observe_output(out.topic, out.value)

    for event in events:
        counts.events += 1
        if evaluation is not None:
            evaluation.observe_event(event)
        emit(engine.process(event))
        if on_event is not None:
            on_event()
    emit(engine.finish())  # the link updates still held for event-time order
    return counts


def backtest_file(
    path: Path | None,
    config: Settings,
    *,
    alerts_out: Path | None = None,
    actions_out: Path | None = None,
    evaluation: Evaluation | None = None,
    on_bad: Callable[[BadRecord], None] | None = None,
    on_event: Callable[[], None] | None = None,
    events: Callable[[Callable[[BadRecord], None]], Iterable[UsageEvent]] | None = None,
    sink: Callable[[str, dict[str, Any]], None] | None = None,
) -> BacktestCounts:
    """Backtest an events file (or the events ``events(on_bad)`` yields, e.g. a topic range); bad records
    are counted, handed to ``on_bad`` and skipped. Outputs go to the JSONL files and/or ``sink``.

    A file's events are bounded in time as the worker bounds them (``admission.bound_file_events``: an
    event far ahead of the file's clock is a bad record, ``ts_in_future``); ``events`` are taken as they
    come (``replay.read_range`` bounds a topic's by their message timestamps)."""
    counts = BacktestCounts()

    def bad(rec: BadRecord) -> None:
        counts.bad_records += 1
        if len(counts.bad) < 1000:
            counts.bad.append(rec)
        if on_bad is not None:
            on_bad(rec)

    def future(ev: UsageEvent) -> None:
        bad(BadRecord(str(path), f"event {ev['event_id']}", TS_IN_FUTURE, codec.encode(ev)))

    if events is None and path is None:
        raise ValueError("backtest_file needs an events file or an events source")
    engine = replay_engine(config)
    alerts_fh = _open_out(alerts_out)
    actions_fh = _open_out(actions_out)
    source = events(bad) if events is not None else bound_file_events(
        read_events(cast(Path, path), bad), config.max_event_skew_ms, future)
    try:
        replay(source, engine, alerts_fh=alerts_fh, actions_fh=actions_fh,
               evaluation=evaluation, counts=counts, on_event=on_event, sink=sink)
    finally:
        for fh in (alerts_fh, actions_fh):
            if fh is not None:
                fh.close()
    return counts


def _open_out(path: Path | None) -> IO[bytes] | None:
    if path is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    return open(path, "wb", buffering=1 << 20)  # noqa: SIM115
