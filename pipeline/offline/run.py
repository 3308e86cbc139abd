"""A backtest run end to end, as ``python -m pipeline backtest`` asks for it.

``prepare`` checks what the run reads (an events file, or a stored topic's time range; the labels) and
opens the sandbox sink when alerts and actions go to sandbox topics too; ``BacktestRun.execute`` replays
through :func:`~pipeline.offline.backtest.backtest_file`, flushes the sandbox and evaluates against the
labels; ``write_report`` writes the evaluation's report. The command line only parses flags, shows
progress and prints the result.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.contract.eventfile import BadRecord, EventFileError, count_records, file_format, read_labels
from pipeline.contract.models import UsageEvent
from pipeline.detection import DetectionConfig
from pipeline.kafka.produce import ProduceError
from pipeline.kafka.replay import ReplayError, parse_time, read_range
from pipeline.kafka.sandbox import SandboxSink
from pipeline.offline.backtest import BacktestCounts, backtest_file
from pipeline.offline.evaluation import Evaluation
from pipeline.settings import Settings

__all__ = ["BacktestError", "BacktestPlan", "BacktestResult", "BacktestRun", "prepare"]

USAGE, SERVICE = 2, 3  # the command line's exit codes for bad input and for an unreachable Kafka


class BacktestError(Exception):
    """The run cannot start or did not finish; ``code`` says whose fault (bad input 2, Kafka 3)."""

    def __init__(self, message: str, code: int = USAGE) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class BacktestPlan:
    """What to replay (``input`` file or stored ``topic`` from ``from_ts`` to ``to_ts``), what to score it
    against (``labels``), and where its outputs go (JSONL files, sandbox topics under ``to_prefix``)."""

    input: Path | None = None
    topic: str | None = None
    from_ts: str | None = None
    to_ts: str | None = None
    labels: Path | None = None
    alerts_out: Path | None = None
    actions_out: Path | None = None
    to_prefix: str | None = None


@dataclass
class BacktestResult:
    counts: BacktestCounts
    seconds: float
    evaluation: Evaluation | None = None
    metrics: dict[str, Any] | None = None


@dataclass
class BacktestRun:
    """One prepared backtest: its inputs checked and its sandbox open; ``execute`` runs it once."""

    settings: Settings
    plan: BacktestPlan
    labels: dict[str, tuple[str, str | None]] | None
    start_ms: int | None
    end_ms: int | None
    sandbox: SandboxSink | None

    @property
    def label(self) -> str:
        """What is replayed, for a progress bar: the file's name or the topic's."""
        return self.plan.input.name if self.plan.input is not None else str(self.plan.topic)

    def total(self) -> int | None:
        """The number of records of the input file (None for a topic, or a file that cannot be counted)."""
        return count_records(self.plan.input) if self.plan.input is not None else None

    def _source(self) -> Callable[[Callable[[BadRecord], None]], Iterable[UsageEvent]] | None:
        if self.plan.topic is None:
            return None
        topic = self.settings.topic(self.plan.topic)

        def source(bad: Callable[[BadRecord], None]) -> Iterable[UsageEvent]:
            return read_range(self.settings, topic, self.start_ms, self.end_ms, bad)

        return source

    def execute(self, *, on_bad: Callable[[BadRecord], None] | None = None,
                on_event: Callable[[], None] | None = None) -> BacktestResult:
        """Replay, flush the sandbox, evaluate. A stored topic that cannot be read is a ``SERVICE`` error."""
        evaluation = Evaluation(self.labels) if self.labels is not None else None
        plan, done = self.plan, False
        t0 = time.perf_counter()
        try:
            counts = backtest_file(plan.input, self.settings, alerts_out=plan.alerts_out,
                                   actions_out=plan.actions_out, evaluation=evaluation, on_bad=on_bad,
                                   events=self._source(), sink=self.sandbox, on_event=on_event)
            done = True
        except (EventFileError, ReplayError) as exc:
            raise BacktestError(str(exc), SERVICE if isinstance(exc, ReplayError) else USAGE) from exc
        finally:
            if self.sandbox is not None:
                self.sandbox.close(flush=done)
        seconds = time.perf_counter() - t0
        metrics = evaluation.compute() if evaluation is not None else None
        return BacktestResult(counts, seconds, evaluation, metrics)

    def write_report(self, directory: Path, result: BacktestResult) -> Path:
        """Write the evaluation's report (metrics, accounts, plots, report.html) to ``directory``; return
        its last file (the HTML report)."""
        from pipeline.offline.report import write_report

        assert result.evaluation is not None and result.metrics is not None, "a report needs labels"
        cfg = DetectionConfig.from_settings(self.settings)
        meta = {"input": str(self.plan.input), "labels": str(self.plan.labels),
                "detector_version": cfg.detector_version, "policy_version": cfg.versioned_policy(),
                "detection_config": cfg.decisions(), "bad_records": result.counts.bad_records}
        files = write_report(directory, result.evaluation, result.metrics, meta)
        return files[-1]


def prepare(settings: Settings, plan: BacktestPlan) -> BacktestRun:
    """Check the plan's inputs (file, labels, times: ``USAGE`` errors) and open its sandbox (``SERVICE``
    when Kafka cannot take the sandbox topics)."""
    try:
        if plan.input is not None:
            file_format(plan.input)
            if not plan.input.is_file():
                raise EventFileError(f"{plan.input}: no such file")
        labels = read_labels(plan.labels) if plan.labels is not None else None
        start_ms = parse_time(plan.from_ts) if plan.from_ts else None
        end_ms = parse_time(plan.to_ts) if plan.to_ts else None
    except (EventFileError, ReplayError) as exc:
        raise BacktestError(str(exc)) from exc
    sandbox = None
    if plan.to_prefix is not None:
        try:
            sandbox = SandboxSink(settings, plan.to_prefix)
        except ValueError as exc:
            raise BacktestError(str(exc)) from exc
        except ProduceError as exc:
            raise BacktestError(str(exc), exc.code) from exc
    return BacktestRun(settings, plan, labels, start_ms, end_ms, sandbox)
