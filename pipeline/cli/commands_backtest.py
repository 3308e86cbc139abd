"""``backtest``: the flags checked, a progress bar, the result printed; the run itself is
:mod:`pipeline.offline.run` (source, sandbox sink, replay, evaluation, report)."""

from __future__ import annotations

import argparse
import sys
from types import TracebackType
from typing import Any

from pipeline.cli.common import EXIT_OK, EXIT_PROBLEM, CommandError, settings_from

MAX_SHOWN_BAD = 20


def cmd_backtest(args: argparse.Namespace) -> int:
    from pipeline.offline.run import BacktestError, BacktestPlan, prepare
    from pipeline.runtime import tune_gc

    tune_gc()
    if args.compare is not None:
        return _compare(args)
    _check_backtest_args(args)
    settings = settings_from(args)
    if settings.enforce:
        print("note: a replay is always shadow: DG_ENFORCE is ignored, and its actions carry policy_version "
              "…+replay", file=sys.stderr)
    plan = BacktestPlan(input=args.input, topic=args.topic, from_ts=args.from_ts, to_ts=args.to_ts,
                        labels=args.labels, alerts_out=args.alerts_out, actions_out=args.actions_out,
                        to_prefix=args.to_prefix)
    try:
        run = prepare(settings, plan)
        with _Progress(run.label, None if args.quiet else run.total(), quiet=args.quiet) as progress:
            result = run.execute(on_bad=progress.bad, on_event=None if args.quiet else progress.tick)
    except BacktestError as exc:
        raise CommandError(str(exc), exc.code) from exc
    counts, secs = result.counts, result.seconds
    rate = counts.events / secs if secs > 0 else float("inf")
    print(f"{counts.events} events, {counts.alerts} alerts, {counts.actions} actions, "
          f"{counts.bad_records} bad records skipped; {secs:.1f} s, {rate:,.0f} events/s")
    if (m := result.metrics) is not None:
        print(f"campaigns found {m['campaigns_found']}/{m['campaigns']}; account recall {m['account_recall']}; "
              f"precision {m['precision']}; benign FPR {m['benign_fpr']}; "
              f"median delay {m['median_delay_event_share']} of campaign events")
        if args.report is not None:
            print(f"report: {run.write_report(args.report, result)}")
    return EXIT_PROBLEM if counts.bad_records else EXIT_OK


def _compare(args: argparse.Namespace) -> int:
    from pipeline.offline.report import CompareError, compare

    try:
        print(compare(*args.compare), end="")
    except CompareError as exc:
        raise CommandError(str(exc)) from exc
    return EXIT_OK


def _check_backtest_args(args: argparse.Namespace) -> None:
    if (args.input is None) == (args.topic is None):
        raise CommandError("give either --input FILE (an events file) or --topic NAME (a stored topic)")
    if args.input is None and (args.alerts_out is None and args.actions_out is None and args.to_prefix is None):
        raise CommandError("a topic replay needs somewhere to write: --alerts-out/--actions-out or --to-prefix")
    if args.input is not None and (args.from_ts or args.to_ts):
        raise CommandError("--from/--to select a range of a topic; they go with --topic")
    if args.report is not None and args.labels is None:
        raise CommandError("--report needs --labels (the report scores the run against them)")


class _Progress:
    """The backtest's bar on stderr (updated every 1000 events) and the first bad records, listed."""

    def __init__(self, label: str, total: int | None, *, quiet: bool) -> None:
        from tqdm import tqdm

        self._write = tqdm.write
        self.bar = tqdm(desc=f"backtest {label}", unit=" ev", file=sys.stderr, disable=quiet, mininterval=0.5,
                        total=total)
        self.ticks = 0
        self.shown = 0

    def tick(self) -> None:
        self.ticks += 1
        if self.ticks == 1000:
            self.bar.update(self.ticks)
            self.ticks = 0

    def bad(self, rec: Any) -> None:
        self.shown += 1
        if self.shown <= MAX_SHOWN_BAD:
            self._write(f"skipped bad record: {rec}", file=sys.stderr)

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.bar.update(self.ticks)
        self.bar.close()
