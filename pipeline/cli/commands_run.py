"""Commands that run the pipeline or feed it: the worker, the demo, simulated traffic, the settings shown."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pipeline.cli.common import EXIT_OK, EXIT_SERVICE, CommandError, settings_from
from pipeline.contract.manifest import USAGE_EVENTS
from pipeline.settings import Settings

MASK = "**********"


def cmd_worker(args: argparse.Namespace) -> int:
    from pipeline import logs
    from pipeline.detection import DetectionConfig
    from pipeline.runtime import quiet_root_logger, tune_gc
    from pipeline.worker.app import create_app
    from pipeline.worker.observability import WorkerMetrics, start_metrics_server

    settings = settings_from(args)
    logs.configure(args.loglevel)
    metrics = WorkerMetrics(detector_version=DetectionConfig.from_settings(settings).detector_version)
    try:
        start_metrics_server(settings.metrics_port, metrics=metrics)
    except OSError as exc:
        raise CommandError(f"cannot serve metrics on port {settings.metrics_port}: {exc} "
                           "(set DG_METRICS_PORT, or 0 to turn metrics off)", EXIT_SERVICE) from exc
    app = create_app(settings, metrics=metrics)
    quiet_root_logger(app, args.loglevel)
    tune_gc()
    faust_level = {"warning": "warn"}.get(args.loglevel, args.loglevel)
    argv = ["pipeline", "worker", "-l", faust_level, "--web-port", str(settings.web_port)]
    sys.argv = argv
    app.main()  # faust's worker runs until SIGTERM / Ctrl-C
    return EXIT_OK


def cmd_simulate(args: argparse.Namespace) -> int:
    import time

    from pipeline import simulate

    _check_simulate_args(args)
    t0 = time.perf_counter()
    try:
        print(f"generating scenario {args.scenario} seed {args.seed} scale {args.scale:g} … (the standard "
              "scenario takes some seconds, realistic about a minute)", file=sys.stderr, flush=True)
        sim = simulate.generate(args.scenario, args.seed, scale=args.scale)
    except simulate.UnknownScenario as exc:
        raise CommandError(str(exc)) from exc
    gen_s = time.perf_counter() - t0
    info = sim.info
    print(f"scenario {args.scenario} seed {args.seed}: {len(sim.events)} events, {len(sim.labels)} accounts, "
          f"{len(info.get('campaigns', {}))} campaigns, generated in {gen_s:.1f} s", file=sys.stderr)
    _write_simulation(args, sim.events, sim.labels)
    if args.topic:
        _send_simulation(args, sim.events)
    return EXIT_OK


def _check_simulate_args(args: argparse.Namespace) -> None:
    from pipeline.contract.eventfile import EventFileError, file_format

    if args.out is None and not args.topic:
        raise CommandError("give --out FILE and/or --topic")
    if args.out is not None:
        try:
            file_format(args.out)
        except EventFileError as exc:
            raise CommandError(str(exc)) from exc
    if args.scale <= 0:
        raise CommandError(f"--scale must be > 0, got {args.scale}")


def _write_simulation(args: argparse.Namespace, events: list[Any], labels: list[Any]) -> None:
    from pipeline.contract.eventfile import EventFileError, write_jsonl, write_records

    try:
        if args.out is not None:
            n = write_records(args.out, events)
            print(f"wrote {n} events to {args.out}", file=sys.stderr)
        if args.labels is not None:
            write_jsonl(args.labels, labels)
            print(f"wrote {len(labels)} labels to {args.labels}", file=sys.stderr)
    except EventFileError as exc:
        raise CommandError(str(exc)) from exc


def _send_simulation(args: argparse.Namespace, events: list[Any]) -> None:
    from pipeline.kafka.produce import ProduceError, send_events

    settings = settings_from(args)
    topic = settings.topic(USAGE_EVENTS)
    try:
        sent = send_events(settings, events, desc=f"produce to {topic}", progress=True, total=len(events))
    except ProduceError as exc:
        raise CommandError(str(exc), exc.code) from exc
    print(f"sent {sent} events to {topic}", file=sys.stderr)


def cmd_demo(args: argparse.Namespace) -> int:
    from pipeline.demo import DemoOptions, run_demo
    from pipeline.kafka import local as kafka_local

    settings = settings_from(args)
    opts = DemoOptions(scenario=args.scenario, seed=args.seed, max_seconds=args.max_seconds,
                       colour=not args.no_colour, external_bootstrap="bootstrap" in settings.model_fields_set)
    try:
        return run_demo(settings, opts)
    except kafka_local.KafkaLocalError as exc:
        raise CommandError(str(exc), EXIT_SERVICE) from exc


def _shown(value: Any) -> Any:
    """A settings value for display: secrets masked, paths as text."""
    from pydantic import SecretStr

    if isinstance(value, SecretStr):
        return MASK if value.get_secret_value() else ""
    if isinstance(value, Path):
        return str(value)
    return value


def cmd_config(args: argparse.Namespace) -> int:
    import json
    import os

    settings = settings_from(args)
    flags = {n for n in Settings.model_fields if getattr(args, n, None) is not None}
    rows = []
    for name in type(settings).model_fields:
        env = f"DG_{name.upper()}"
        source = "flag" if name in flags else f"env {env}" if env in os.environ else "default"
        rows.append((name, _shown(getattr(settings, name)), source))
    if args.json:
        print(json.dumps({name: value for name, value, _ in rows}, indent=2, sort_keys=True))
        return EXIT_OK
    width = max(len(name) for name, _, _ in rows)
    text = {name: "(unset)" if value is None else str(value) for name, value, _ in rows}
    vwidth = min(60, max(len(v) for v in text.values()))
    for name, _, source in rows:
        print(f"{name:<{width}}  {text[name]:<{vwidth}}  {source}")
    return EXIT_OK
