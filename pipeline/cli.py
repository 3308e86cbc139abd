"""Command line of the pipeline: ``python -m pipeline <command> --help`` explains each command.

Exit codes: 0 success; 1 the command ran but found a problem (bad records skipped, a check failed);
2 bad usage or unreadable input (a flag, a file); 3 a service could not be reached or started.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pipeline.settings import Settings

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, EXIT_SERVICE = 0, 1, 2, 3


class CommandError(Exception):
    """A user-facing error: printed as ``error: <message>`` and exits with ``code``."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    for name in Settings.model_fields:
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            (f"{'.'.join(str(p) for p in e['loc'])}: " if e["loc"] else "") + e["msg"].removeprefix("Value error, ")
            for e in exc.errors()
        )
        raise CommandError(f"invalid settings: {problems}") from exc


def _detection_settings() -> frozenset[str]:
    """The settings that change what the detection decides (``DetectionConfig`` reads them)."""
    from dataclasses import fields

    from pipeline.detection.config import DetectionConfig

    return frozenset(f.name for f in fields(DetectionConfig)) & frozenset(Settings.model_fields)


def _add_settings_flags(p: argparse.ArgumentParser, only: frozenset[str] | None = None) -> None:
    """A ``--name VALUE`` flag for every setting the parser does not have yet, or for those in ``only`` (a
    command shows the settings it uses, not the worker's ports and stores); secrets excepted: they come
    from the environment only, never from a command line that other users can see."""
    from pydantic import SecretStr

    g = p.add_argument_group("settings (each flag overrides the DG_<NAME> environment variable)")
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        if (flag in p._option_string_actions or field.annotation in (SecretStr, SecretStr | None)
                or (only is not None and name not in only)):
            continue
        default = field.default if field.default_factory is None else "per user"
        g.add_argument(flag, dest=name, metavar="V",
                       help=f"{field.description or name} (env DG_{name.upper()}; default {default})")


def _add_kafka_opts(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("Kafka")
    g.add_argument("--bootstrap", metavar="HOST:PORT[,…]",
                   help="Kafka bootstrap servers (env DG_BOOTSTRAP; default 127.0.0.1:9092, the local broker)")
    g.add_argument("--topic-prefix", metavar="P", help="prefix in front of every topic name (env DG_TOPIC_PREFIX)")


def _add_local_kafka_opts(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("local broker")
    g.add_argument("--data-dir", dest="kafka_data_dir", type=Path, metavar="DIR",
                   help="broker data and log directory (env DG_KAFKA_DATA_DIR; default ./.kafka)")
    g.add_argument("--port", dest="kafka_port", type=int, metavar="N",
                   help="client listener port on 127.0.0.1 (env DG_KAFKA_PORT; default 9092)")
    g.add_argument("--controller-port", dest="kafka_controller_port", type=int, metavar="N",
                   help="KRaft controller port on 127.0.0.1 (env DG_KAFKA_CONTROLLER_PORT; default 9093)")
    g.add_argument("--sasl", dest="kafka_sasl", action="store_const", const=True,
                   help="SASL/SCRAM-SHA-512 logins and per-role ACLs (pipeline/kafka/acls.py); each role's login "
                        "goes to DIR/sasl/<role>.env (env DG_KAFKA_SASL; fixed when DIR is first formatted)")


# ---------------------------------------------------------------------------------------------- commands


def cmd_kafka(args: argparse.Namespace) -> int:
    from pipeline.kafka import local as kafka_local

    settings = _settings(args)
    try:
        if args.action == "start":
            info = kafka_local.start(settings, timeout=args.timeout)
            word = "started" if info.started else "already running"
            print(f"Kafka {settings.kafka_version} {word}: bootstrap {info.bootstrap}, pid {info.pid}, "
                  f"data {info.data_dir}")
            if settings.kafka_sasl:
                print(f"SASL logins per role (never printed): {info.data_dir / 'sasl'}/<role>.env; "
                      f"e.g. set -a; . {info.data_dir / 'sasl' / 'worker.env'}; set +a")
        elif args.action == "provision":
            return _provision(settings)
        elif args.action == "stop":
            was = kafka_local.stop(settings, timeout=args.timeout)
            print("Kafka stopped" if was else "Kafka was not running")
        else:
            st = kafka_local.status(settings)
            print(st)
            return EXIT_OK if st.running else EXIT_PROBLEM
    except kafka_local.KafkaLocalError as exc:
        raise CommandError(str(exc), EXIT_SERVICE) from exc
    return EXIT_OK


def _provision(settings: Settings) -> int:
    from pipeline.kafka import acls as kafka_acls

    try:
        users, acls = kafka_acls.provision(settings)
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    except Exception as exc:  # kafka-python raises a zoo of errors; the message names users, never passwords
        raise CommandError(f"cannot create logins and ACLs on {settings.bootstrap}: {exc}", EXIT_SERVICE) from exc
    print(f"{users} SASL logins and {acls} ACLs in place on {settings.bootstrap} "
          f"(topic prefix {settings.topic_prefix!r}, app id {settings.app_id!r})")
    return EXIT_OK


def cmd_topics(args: argparse.Namespace) -> int:
    from pipeline.kafka import admin as topics

    settings = _settings(args)
    try:
        results = topics.create_topics(settings)
    except Exception as exc:  # kafka-python raises a zoo of errors; name the broker
        raise CommandError(f"cannot create topics on {settings.bootstrap}: {exc}", EXIT_SERVICE) from exc
    for name, what in results:
        print(f"{what:8} {name}")
    return EXIT_OK


def cmd_worker(args: argparse.Namespace) -> int:
    from pipeline import logs
    from pipeline.detection import DetectionConfig
    from pipeline.runtime import quiet_root_logger, tune_gc
    from pipeline.worker.app import create_app
    from pipeline.worker.observability import WorkerMetrics, start_metrics_server

    settings = _settings(args)
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


def cmd_produce(args: argparse.Namespace) -> int:
    from pipeline.kafka.produce import ProduceError, produce_file

    settings = _settings(args)
    try:
        stats = produce_file(settings, args.input, raw=args.raw, progress=not args.quiet)
    except ProduceError as exc:
        raise CommandError(str(exc), exc.code) from exc
    print(f"sent {stats.sent} events to {settings.topic('usage-events')}"
          + (f"; skipped {stats.bad} bad records (listed above)" if stats.bad else ""))
    return EXIT_PROBLEM if stats.bad else EXIT_OK


def cmd_simulate(args: argparse.Namespace) -> int:
    import time

    from pipeline import simulate
    from pipeline.contract.eventfile import EventFileError, file_format, write_jsonl, write_records

    if args.out is None and not args.topic:
        raise CommandError("give --out FILE and/or --topic")
    if args.out is not None:
        try:
            file_format(args.out)
        except EventFileError as exc:
            raise CommandError(str(exc)) from exc
    if args.scale <= 0:
        raise CommandError(f"--scale must be > 0, got {args.scale}")
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
    try:
        if args.out is not None:
            n = write_records(args.out, sim.events)
            print(f"wrote {n} events to {args.out}", file=sys.stderr)
        if args.labels is not None:
            write_jsonl(args.labels, sim.labels)
            print(f"wrote {len(sim.labels)} labels to {args.labels}", file=sys.stderr)
    except EventFileError as exc:
        raise CommandError(str(exc)) from exc
    if args.topic:
        from pipeline.contract import codec
        from pipeline.kafka.produce import ProduceError, make_producer

        settings = _settings(args)
        try:
            producer = make_producer(settings)
        except ProduceError as exc:
            raise CommandError(str(exc), exc.code) from exc
        from tqdm import tqdm

        topic = settings.topic("usage-events")
        for ev in tqdm(sim.events, desc=f"produce to {topic}", unit=" ev", file=sys.stderr):
            producer.send(topic, key=ev["account_id"].encode("utf-8"), value=codec.encode(ev))
        producer.flush(timeout=120)
        producer.close(timeout=30)
        print(f"sent {len(sim.events)} events to {topic}", file=sys.stderr)
    return EXIT_OK


def cmd_backtest(args: argparse.Namespace) -> int:
    import time

    from tqdm import tqdm

    from pipeline.contract import codec
    from pipeline.contract.eventfile import EventFileError, file_format, read_labels
    from pipeline.detection import DetectionConfig
    from pipeline.kafka.replay import ReplayError, parse_time, read_range
    from pipeline.offline.backtest import backtest_file
    from pipeline.offline.evaluation import Evaluation
    from pipeline.runtime import tune_gc

    tune_gc()
    if args.compare is not None:
        from pipeline.offline.report import CompareError, compare

        try:
            print(compare(*args.compare), end="")
        except CompareError as exc:
            raise CommandError(str(exc)) from exc
        return EXIT_OK
    if (args.input is None) == (args.topic is None):
        raise CommandError("give either --input FILE (an events file) or --topic NAME (a stored topic)")
    if args.input is None and (args.alerts_out is None and args.actions_out is None and args.to_prefix is None):
        raise CommandError("a topic replay needs somewhere to write: --alerts-out/--actions-out or --to-prefix")
    if args.input is not None and (args.from_ts or args.to_ts):
        raise CommandError("--from/--to select a range of a topic; they go with --topic")
    if args.report is not None and args.labels is None:
        raise CommandError("--report needs --labels (the report scores the run against them)")
    settings = _settings(args)
    if settings.enforce:
        print("note: a replay is always shadow: DG_ENFORCE is ignored, and its actions carry policy_version "
              "…+replay", file=sys.stderr)
    try:
        if args.input is not None:
            file_format(args.input)
            if not args.input.is_file():
                raise EventFileError(f"{args.input}: no such file")
        labels = read_labels(args.labels) if args.labels is not None else None
        start_ms = parse_time(args.from_ts) if args.from_ts else None
        end_ms = parse_time(args.to_ts) if args.to_ts else None
    except (EventFileError, ReplayError) as exc:
        raise CommandError(str(exc)) from exc
    evaluation = Evaluation(labels) if labels is not None else None
    shown = 0

    def on_bad(rec: Any) -> None:
        nonlocal shown
        shown += 1
        if shown <= 20:
            tqdm.write(f"skipped bad record: {rec}", file=sys.stderr)

    source = None
    if args.topic is not None:
        topic = settings.topic(args.topic)

        def source(bad: Any) -> Any:
            return read_range(settings, topic, start_ms, end_ms, bad)

    sink = producer = None
    if args.to_prefix is not None:
        if not args.to_prefix:
            raise CommandError("--to-prefix is empty: that would be the live topics (or, with a live prefix, "
                               "topics that only look like sandbox ones); give a sandbox prefix, e.g. sandbox-")
        if args.to_prefix == settings.topic_prefix:
            raise CommandError(f"--to-prefix {args.to_prefix!r} is the live topic prefix: a replay never writes "
                               "to live output topics; choose a sandbox prefix")
        from pipeline.kafka import admin as topics
        from pipeline.kafka.produce import ProduceError, make_producer

        sandbox = settings.model_copy(update={"topic_prefix": args.to_prefix})
        try:
            topics.create_topics(sandbox, ["anomaly-alerts", "enforcement-actions"])
            producer = make_producer(sandbox)
        except ProduceError as exc:
            raise CommandError(str(exc), exc.code) from exc
        except Exception as exc:
            raise CommandError(f"cannot create sandbox topics on {settings.bootstrap}: {exc}", EXIT_SERVICE) from exc

        def sink(topic_name: str, value: dict[str, Any]) -> None:
            key = value["account_id"] or value.get("campaign_id") or ""
            producer.send(sandbox.topic(topic_name), key=key.encode("utf-8"), value=codec.encode(value))

    label = args.input.name if args.input is not None else args.topic
    from pipeline.contract.eventfile import count_records

    total = count_records(args.input) if args.input is not None and not args.quiet else None
    bar = tqdm(desc=f"backtest {label}", unit=" ev", file=sys.stderr, disable=args.quiet, mininterval=0.5,
               total=total)
    ticks = 0

    def tick() -> None:
        nonlocal ticks
        ticks += 1
        if ticks == 1000:
            bar.update(ticks)
            ticks = 0

    t0 = time.perf_counter()
    try:
        counts = backtest_file(args.input, settings, alerts_out=args.alerts_out, actions_out=args.actions_out,
                               evaluation=evaluation, on_bad=on_bad, events=source, sink=sink,
                               on_event=None if args.quiet else tick)
        if producer is not None:
            producer.flush(timeout=120)
            producer.close(timeout=30)
    except (EventFileError, ReplayError) as exc:
        raise CommandError(str(exc), EXIT_SERVICE if isinstance(exc, ReplayError) else EXIT_USAGE) from exc
    finally:
        bar.update(ticks)
        bar.close()
    secs = time.perf_counter() - t0
    rate = counts.events / secs if secs > 0 else float("inf")
    print(f"{counts.events} events, {counts.alerts} alerts, {counts.actions} actions, "
          f"{counts.bad_records} bad records skipped; {secs:.1f} s, {rate:,.0f} events/s")
    if evaluation is not None:
        m = evaluation.compute()
        print(f"campaigns found {m['campaigns_found']}/{m['campaigns']}; account recall {m['account_recall']}; "
              f"precision {m['precision']}; benign FPR {m['benign_fpr']}; "
              f"median delay {m['median_delay_event_share']} of campaign events")
        if args.report is not None:
            from pipeline.offline.report import write_report

            cfg = DetectionConfig.from_settings(settings)
            meta = {"input": str(args.input), "labels": str(args.labels),
                    "detector_version": cfg.detector_version, "policy_version": cfg.versioned_policy(),
                    "detection_config": cfg.decisions(), "bad_records": counts.bad_records}
            files = write_report(args.report, evaluation, m, meta)
            print(f"report: {files[-1]}")
    return EXIT_PROBLEM if counts.bad_records else EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from pipeline.demo import DemoOptions, run_demo
    from pipeline.kafka import local as kafka_local

    settings = _settings(args)
    opts = DemoOptions(scenario=args.scenario, seed=args.seed, max_seconds=args.max_seconds,
                       colour=not args.no_colour, external_bootstrap="bootstrap" in settings.model_fields_set)
    try:
        return run_demo(settings, opts)
    except kafka_local.KafkaLocalError as exc:
        raise CommandError(str(exc), EXIT_SERVICE) from exc


MASK = "**********"


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

    settings = _settings(args)
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


def cmd_verify(args: argparse.Namespace) -> int:
    import os
    import time

    from pipeline.contract import verify
    from pipeline.kafka.replay import ReplayError, parse_time

    current = os.environ.get(args.key_env, "")
    if not current:
        raise CommandError(f"no signing key: set {args.key_env} (the HMAC key the worker signs with)")
    keys = {"current": current.encode("utf-8")}
    for i, k in enumerate((k.strip() for k in os.environ.get(args.previous_keys_env, "").split(",")), 1):
        if k:
            keys[f"previous-{i}"] = k.encode("utf-8")
    try:
        now_ms = parse_time(args.now) if args.now else int(time.time() * 1000)
        max_age_ms = verify.parse_duration(args.max_age) if args.max_age else None
    except (ReplayError, ValueError) as exc:
        raise CommandError(str(exc)) from exc
    if (args.input is None) == (args.topic is None):
        raise CommandError("give either --input FILE (or -) or --topic NAME")
    source = str(args.input) if args.input is not None else f"topic {args.topic}"
    try:
        if args.topic is not None:
            data = _topic_as_tail_lines(args)
        elif str(args.input) == "-":
            stdin: Any = getattr(sys.stdin, "buffer", None)
            data = stdin.read() if stdin is not None else sys.stdin.read().encode("utf-8")
        else:
            data = args.input.read_bytes()
    except OSError as exc:
        raise CommandError(f"cannot read {args.input}: {exc}") from exc
    key_ids: dict[str, str] = {}
    records = list(verify.parse_records(data, key_ids))
    if not records:
        raise CommandError(f"no actions in {source}")
    failed = 0
    for where, obj in records:
        res = verify.check(obj, keys, now_ms, max_age_ms, where=where, key_id=key_ids.get(where))
        tag = " REPLAY (shadow)" if res.replay else ""
        if res.problems:
            failed += 1
            print(f"FAIL {res.where}{tag}: {'; '.join(res.problems)}")
        else:
            print(f"OK   {res.where}{tag} (key {res.key_name})")
    print(f"{len(records) - failed} ok, {failed} failed", file=sys.stderr)
    return EXIT_PROBLEM if failed else EXIT_OK


def _topic_as_tail_lines(args: argparse.Namespace) -> bytes:
    """``verify --topic``: the topic's messages (from ``--from``, to its current end) as ``tail`` prints
    them, headers included, so they are checked as ``tail … | verify --input -`` would check them."""
    import json

    from pipeline.kafka import reader as topic_reader
    from pipeline.kafka import tail
    from pipeline.kafka.replay import ReplayError

    settings = _settings(args)
    try:
        topic, _ = topic_reader.manifest_topic(settings, args.topic)
        start = tail.parse_start(args.from_ts)
    except (topic_reader.TopicReadError, ReplayError) as exc:
        raise CommandError(str(exc)) from exc
    lines = []
    try:
        consumer = topic_reader.open_consumer(settings, "verify")
        try:
            for msg in topic_reader.read(consumer, topic, start, follow=False, bootstrap=settings.bootstrap):
                lines.append(json.dumps(tail.record(msg), separators=(",", ":"), ensure_ascii=False))
        finally:
            consumer.close()
    except topic_reader.TopicReadError as exc:
        raise _topic_reader_error(exc) from exc
    return "\n".join(lines).encode("utf-8")


def cmd_verdict(args: argparse.Namespace) -> int:
    import json
    import time

    from pipeline.contract import codec
    from pipeline.contract.verdicts import VERDICT_VERSION, analyst_keys, decode_verdict, sign_verdict
    from pipeline.kafka.replay import ReplayError, parse_time

    settings = _settings(args)
    keys = analyst_keys(settings)
    if "current" not in keys:
        raise CommandError("no analyst key: set DG_ANALYST_KEY (verdicts are signed with the analyst key, never "
                           "with the key that signs actions)")
    fields: dict[str, Any] = {"alert_id": args.alert_id, "account_id": args.account_id, "kind": args.kind,
                              "campaign_id": args.campaign_id}
    if args.alert is not None:
        try:
            alert = json.loads(sys.stdin.read() if str(args.alert) == "-" else args.alert.read_text("utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise CommandError(f"cannot read the alert {args.alert}: {exc}") from exc
        if not isinstance(alert, dict) or not alert.get("account_id"):
            raise CommandError("--alert: give an AnomalyAlert of an account (a campaign-level alert names none: "
                               "give the verdict on each member's own alert)")
        for name in fields:
            if fields[name] is None:
                fields[name] = alert.get(name)
    missing = [f"--{n.replace('_', '-')}" for n in ("alert_id", "account_id", "kind") if not fields[n]]
    if missing:
        raise CommandError(f"give --alert FILE, or {', '.join(missing)}")
    try:
        ts = parse_time(args.ts) if args.ts else int(time.time() * 1000)
    except ReplayError as exc:
        raise CommandError(str(exc)) from exc
    verdict = sign_verdict({"schema_version": VERDICT_VERSION, **fields, "verdict": args.verdict, "ts": ts,
                            "analyst": args.analyst}, keys["current"])
    try:
        decode_verdict(codec.encode(verdict), keys)  # what the worker will check, before anything leaves
    except codec.CodecError as exc:
        raise CommandError(f"this verdict would be refused: {exc.reason}") from exc
    print(json.dumps(verdict, separators=(",", ":")))
    if args.send:
        from pipeline.kafka.produce import ProduceError, make_producer

        topic = settings.topic("analyst-verdicts")
        try:
            producer = make_producer(settings)
        except ProduceError as exc:
            raise CommandError(str(exc), exc.code) from exc
        producer.send(topic, key=verdict["account_id"].encode("utf-8"), value=codec.encode(verdict))
        producer.flush(timeout=60)
        producer.close(timeout=30)
        print(f"sent to {topic}", file=sys.stderr)
    return EXIT_OK


def _topic_reader_error(exc: Exception) -> CommandError:
    return CommandError(str(exc), EXIT_SERVICE if getattr(exc, "service", False) else EXIT_USAGE)


def cmd_tail(args: argparse.Namespace) -> int:
    import json

    from pipeline.kafka import reader as topic_reader
    from pipeline.kafka import tail
    from pipeline.kafka.replay import ReplayError

    settings = _settings(args)
    if args.max is not None and args.max < 1:
        raise CommandError(f"--max must be at least 1, got {args.max}")
    try:
        topic, _ = topic_reader.manifest_topic(settings, args.topic)
        start = tail.parse_start(args.from_ts)
    except (topic_reader.TopicReadError, ReplayError) as exc:
        raise CommandError(str(exc)) from exc
    shown = 0
    try:
        consumer = topic_reader.open_consumer(settings, "tail")
        try:
            for msg in topic_reader.read(consumer, topic, start, follow=args.follow, bootstrap=settings.bootstrap):
                rec = tail.record(msg)
                if not tail.matches(rec, args.account, args.severity):
                    continue
                if args.values:
                    line = rec["value"] if rec["value"] is not None else {
                        k: rec.get(k) for k in ("partition", "offset", "error", "value_b64")}
                else:
                    line = rec
                print(json.dumps(line, separators=(",", ":"), ensure_ascii=False), flush=args.follow)
                shown += 1
                if args.max is not None and shown >= args.max:
                    break
        finally:
            consumer.close()
    except topic_reader.TopicReadError as exc:
        raise _topic_reader_error(exc) from exc
    except BrokenPipeError:  # the reader went away (| head): not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_OK


def cmd_check_partitioning(args: argparse.Namespace) -> int:
    from pipeline.kafka import partitioning
    from pipeline.kafka import reader as topic_reader

    settings = _settings(args)
    if args.sample < 1:
        raise CommandError(f"--sample must be at least 1, got {args.sample}")
    try:
        topic, entry = topic_reader.manifest_topic(settings, args.topic)
    except topic_reader.TopicReadError as exc:
        raise CommandError(str(exc)) from exc
    if not partitioning.is_account_keyed(entry):
        raise CommandError(f"{args.topic} is keyed by {entry.get('key')}, not by account id: there is no "
                           "partition to check its keys against")
    try:
        consumer = topic_reader.open_consumer(settings, "check-partitioning")
        try:
            n_parts = len(topic_reader.partitions(consumer, topic, settings.bootstrap))
            per_partition = -(-args.sample // n_parts)
            report = partitioning.check_messages(topic, n_parts, topic_reader.read(
                consumer, topic, topic_reader.Start(last=per_partition), follow=False,
                bootstrap=settings.bootstrap))
        finally:
            consumer.close()
    except topic_reader.TopicReadError as exc:
        raise _topic_reader_error(exc) from exc
    for m in report.misplaced[:args.show]:
        print(f"MISPLACED {m}")
    if len(report.misplaced) > args.show:
        print(f"… and {len(report.misplaced) - args.show} more")
    print(f"{topic}: checked the last {report.checked} messages ({per_partition} at most per partition, "
          f"{n_parts} partitions): {len(report.misplaced)} on the wrong partition", file=sys.stderr)
    return EXIT_PROBLEM if report.misplaced else EXIT_OK


def cmd_simhash(args: argparse.Namespace) -> int:
    import json

    from pipeline.contract.prompt_simhash import VERSION, features, normalise, simhash_text

    if (args.text is None) == (args.input is None):
        raise CommandError("give the prompt TEXT, or --input FILE (- for standard input)")
    if args.input is not None:
        try:
            data = sys.stdin.buffer.read() if str(args.input) == "-" else args.input.read_bytes()
        except OSError as exc:
            raise CommandError(f"cannot read {args.input}: {exc}") from exc
        text = data.decode("utf-8", errors="replace")  # the specification's rule for invalid UTF-8
    else:
        text = args.text
    if args.explain:
        n = normalise(text)
        print(json.dumps({"version": VERSION, "normalised": n, "features": len(features(n)),
                          "simhash": simhash_text(text)}, ensure_ascii=False))
    else:
        print(simhash_text(text))
    return EXIT_OK


# ---------------------------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    from pipeline.kafka.tail import SEVERITIES

    parser = argparse.ArgumentParser(
        prog="python -m pipeline",
        description="Detect distillation attacks on an LLM API from a stream of usage events (Kafka + Faust).",
        epilog="Exit codes: 0 ok; 1 ran but found a problem; 2 bad usage or input; 3 Kafka unreachable. "
               "Every option also reads from a DG_-prefixed environment variable (see README).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("demo", help="run the whole pipeline on a simulated scenario with a local Kafka")
    _add_kafka_opts(p)
    p.add_argument("--scenario", default="tiny", help="simulated scenario to stream (default tiny)")
    p.add_argument("--seed", type=int, default=1, help="scenario seed (default 1)")
    p.add_argument("--max-seconds", type=float, default=600.0, help="give up after this long (default 600)")
    p.add_argument("--no-colour", action="store_true", help="plain output")
    _add_settings_flags(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("worker", help="run a Faust worker of the streaming pipeline (start more to scale out)",
                       description="Run a Faust worker: reads usage-events, writes anomaly-alerts and the DLQ. "
                                   "Start more workers (distinct --web-port, --store-dir) to scale out.")
    _add_kafka_opts(p)
    p.add_argument("-l", "--loglevel", default="info", choices=["debug", "info", "warning", "error"],
                   help="log level (default info)")
    p.add_argument("--web-port", type=int, metavar="N", help="worker web/stats port (env DG_WEB_PORT; default 6066)")
    p.add_argument("--store-dir", type=Path, metavar="DIR",
                   help="RocksDB table directory (env DG_STORE_DIR; default ./var/store)")
    _add_settings_flags(p)
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("kafka", help="start, stop or inspect a local single-node Apache Kafka (KRaft)",
                       description="A local Apache Kafka in KRaft mode from jars resolved with Maven "
                                   "(cached under ~/.cache/distillation-guard), run with the machine's Java.")
    p.add_argument("action", choices=["start", "stop", "status", "provision"],
                   help="provision: on the DG_BOOTSTRAP cluster, logged in as its admin (DG_SASL_*), create the "
                        "role logins of DG_SASL_USERS and the ACLs of pipeline/kafka/acls.py")
    p.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for start or stop (default 90)")
    _add_local_kafka_opts(p)
    p.set_defaults(func=cmd_kafka)

    p = sub.add_parser("topics", help="create the topics of the manifest (schemas/topics.json)")
    p.add_argument("action", choices=["create"])
    _add_kafka_opts(p)
    p.add_argument("--partitions", type=int, metavar="N", help="override the manifest's partition counts")
    p.set_defaults(func=cmd_topics)

    from pipeline.simulate import SCENARIOS

    p = sub.add_parser(
        "simulate", help="write synthetic traffic with labelled campaigns",
        description="Generate deterministic synthetic usage events with labelled distillation campaigns. "
                    "Scenarios: " + "; ".join(f"{k}: {v}" for k, v in SCENARIOS.items()))
    p.add_argument("--scenario", default="tiny", choices=sorted(SCENARIOS), help="scenario (default tiny)")
    p.add_argument("--seed", type=int, default=1, help="random seed; same seed, same output (default 1)")
    p.add_argument("--scale", type=float, default=1.0, help="multiply population sizes (default 1.0)")
    p.add_argument("--out", "-o", type=Path, metavar="FILE",
                   help="events file: .jsonl or .msgpack, optionally .gz")
    p.add_argument("--labels", type=Path, metavar="FILE", help="labels file to write (JSONL)")
    p.add_argument("--topic", action="store_true", help="also produce the events to the usage-events topic")
    _add_kafka_opts(p)
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("produce", help="send an events file to the input topic",
                       description="Send a .jsonl or .msgpack events file (optionally .gz) to usage-events, "
                                   "keyed by account_id, as msgpack. Bad records are listed and skipped "
                                   "(exit 1), unless --raw sends every record as it is.")
    p.add_argument("--input", "-i", required=True, type=Path, metavar="FILE", help="events file")
    p.add_argument("--raw", action="store_true",
                   help="send each record's bytes unvalidated (to exercise the worker's dead-letter path)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    _add_kafka_opts(p)
    p.set_defaults(func=cmd_produce)

    p = sub.add_parser(
        "backtest", help="replay events through the detection code, in event time (actions always shadow)",
        description="Replay an events file, or a stored topic's time range, through the same detection engine "
                    "the worker runs, in event time, isolated from live state and live output topics (no "
                    "consumer group, fresh state). Same input, byte-identical outputs. Bad records are "
                    "reported and skipped (exit 1). Actions are always shadow, whatever DG_ENFORCE says, "
                    "and their policy_version ends in +replay ('verify' shows them as REPLAY).")
    p.add_argument("--input", "-i", type=Path, metavar="FILE", help="events file (.jsonl/.msgpack[.gz])")
    p.add_argument("--topic", metavar="NAME",
                   help="replay a stored topic instead (e.g. usage-events; the topic prefix is added)")
    p.add_argument("--from", dest="from_ts", metavar="TIME",
                   help="with --topic: first message time, epoch ms or ISO 8601 (Kafka message timestamps)")
    p.add_argument("--to", dest="to_ts", metavar="TIME", help="with --topic: end of the range (exclusive)")
    p.add_argument("--to-prefix", metavar="P",
                   help="also write alerts and actions to sandbox topics P+anomaly-alerts, P+enforcement-actions "
                        "(P non-empty and not the live prefix)")
    p.add_argument("--alerts-out", type=Path, metavar="FILE", help="write AnomalyAlerts here (JSONL)")
    p.add_argument("--actions-out", type=Path, metavar="FILE", help="write EnforcementActions here (JSONL)")
    p.add_argument("--labels", type=Path, metavar="FILE", help="labels file: score the run against it")
    p.add_argument("--report", type=Path, metavar="DIR",
                   help="write metrics.json, accounts.json, report.md with plots and a self-contained report.html here")
    p.add_argument("--compare", nargs=2, type=Path, metavar=("RUN_A", "RUN_B"),
                   help="instead of a replay: compare two --report directories (settings that differ, figures, "
                        "and the accounts flagged in one run only, with labels and reasons)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    _add_kafka_opts(p)
    # what a replay uses: the detection's thresholds and lists, and the bounds it applies to input
    _add_settings_flags(p, _detection_settings() | {"max_event_skew_ms", "max_message_bytes", "replay_prefix"})
    p.set_defaults(func=cmd_backtest)

    p = sub.add_parser("config", help="show the effective settings (secrets masked)",
                       description="Print every setting as the commands would see it, from DG_* environment "
                                   "variables, flags and defaults, with where each value came from. Secrets "
                                   "are shown as " + MASK + ".")
    p.add_argument("action", choices=["show"])
    p.add_argument("--json", action="store_true", help="print a JSON object instead of aligned text")
    _add_kafka_opts(p)
    _add_settings_flags(p)
    p.set_defaults(func=cmd_config)

    p = sub.add_parser(
        "verify", help="check the schema and HMAC signature of enforcement actions",
        description="Check EnforcementActions (JSONL, one JSON object, msgpack, tail's lines, or --topic "
                    "straight from Kafka) as a consumer must: "
                    "schema, signature, freshness (expired actions fail; --max-age), no key named twice, and "
                    "in enforce mode a key of at least 32 bytes that is not a development key and no "
                    "replay. Prints OK or FAIL with the reasons per action (REPLAY marks a backtest's "
                    "shadow action). The key is read from the "
                    "environment: the current key from --key-env, and, during a key rotation, earlier keys "
                    "(comma separated) from --previous-keys-env. Exit 0: all ok; 1: any failed; 2: no key "
                    "or unreadable input.")
    p.add_argument("--input", "-i", type=Path, metavar="FILE",
                   help="actions file: JSONL, one JSON object, concatenated msgpack maps (as on the "
                        "topic), or tail's JSON lines; - for standard input")
    p.add_argument("--topic", metavar="NAME",
                   help="instead of --input: read a topic of the manifest (e.g. enforcement-actions, prefix "
                        "applied) from --from to its current end; each action's dg.signing-key-id header "
                        "must name the key that signed it")
    p.add_argument("--from", dest="from_ts", metavar="TIME",
                   help="with --topic: start at this time (epoch ms, ISO 8601, or a duration back from now "
                        "such as 2h); default: the oldest message kept")
    p.add_argument("--max-age", metavar="DURATION",
                   help="fail actions issued longer ago than this (e.g. 15m, 24h, 7d); default: no limit")
    p.add_argument("--now", metavar="TIME",
                   help="check freshness against this time (epoch ms or ISO 8601) instead of the clock, e.g. "
                        "for an archive")
    p.add_argument("--key-env", default="DG_SIGNING_KEY", metavar="VAR",
                   help="environment variable holding the current signing key (default DG_SIGNING_KEY)")
    p.add_argument("--previous-keys-env", default="DG_SIGNING_KEYS_PREVIOUS", metavar="VAR",
                   help="environment variable with earlier keys, comma separated "
                        "(default DG_SIGNING_KEYS_PREVIOUS)")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser(
        "verdict", help="sign an analyst verdict on an alert (Verdict v2) and print or send it",
        description="Build a Verdict v2 on one of an account's alerts, signed with the analyst key "
                    "(DG_ANALYST_KEY, from the environment only), print it as JSON, and with --send produce "
                    "it to analyst-verdicts. A false_positive silences the alert's kind (or campaign) for the "
                    "account, a true_positive turns its critical findings into ban; either holds for "
                    "DG_VERDICT_TTL_HOURS of event time after the alert. The worker refuses (DLQ) a verdict "
                    "that is unsigned, signed with another key, or names an alert the account never got.")
    p.add_argument("--alert", type=Path, metavar="FILE",
                   help="the AnomalyAlert (JSON; - for standard input): fills the four fields below")
    p.add_argument("--alert-id", metavar="ID", help="the alert the verdict is about")
    p.add_argument("--account-id", metavar="ID", help="the account that received it")
    p.add_argument("--kind", metavar="KIND", help="the alert's kind, e.g. account_behaviour")
    p.add_argument("--campaign-id", metavar="ID", help="the alert's campaign, for a campaign member's alert")
    p.add_argument("--verdict", required=True, choices=["false_positive", "true_positive"])
    p.add_argument("--analyst", required=True, metavar="NAME", help="who gives the verdict (accountable)")
    p.add_argument("--ts", metavar="TIME", help="when it was given, epoch ms or ISO 8601 (default: now)")
    p.add_argument("--send", action="store_true", help="also produce it to the analyst-verdicts topic")
    _add_kafka_opts(p)
    p.set_defaults(func=cmd_verdict)

    p = sub.add_parser(
        "tail", help="print a topic's messages as JSON lines (key, partition, offset, timestamp, headers, value)",
        description="Print the messages of TOPIC, one JSON object per line: topic, partition, offset, timestamp "
                    "(epoch ms), key, headers ([name, value] pairs), encoding and value (decoded from msgpack, "
                    "or JSON on the input topics). A value that is neither, or names a key twice, is shown as "
                    "value_b64 with an error. Reads without a consumer group: the worker's offsets never move. "
                    "Without --follow it stops at the end of every partition. Pipe it into 'verify --input -' "
                    "to check enforcement actions, or into jq.")
    p.add_argument("topic", metavar="TOPIC",
                   help="a topic of the manifest (schemas/topics.json), e.g. anomaly-alerts; the prefix is added")
    p.add_argument("--from", dest="from_ts", metavar="TIME",
                   help="start at this message time: epoch ms, ISO 8601, a duration back from now (15m, 2h, 7d) "
                        "or now (only new messages); default: the beginning of each partition")
    p.add_argument("--account", metavar="ID",
                   help="only messages keyed by ID, or whose account_id is ID or related_accounts name it")
    p.add_argument("--severity", choices=list(SEVERITIES),
                   help="only messages (alerts) of this severity or higher")
    p.add_argument("--follow", "-f", action="store_true", help="keep waiting for new messages (Ctrl-C stops)")
    p.add_argument("--max", type=int, metavar="N", help="stop after printing N messages")
    p.add_argument("--values", action="store_true",
                   help="print each message's value alone (the undecodable ones as partition, offset, error, "
                        "value_b64)")
    _add_kafka_opts(p)
    p.set_defaults(func=cmd_tail)

    p = sub.add_parser(
        "check-partitioning", help="report messages of an account-keyed topic that are on the wrong partition",
        description="Read the most recent messages of TOPIC (about --sample of them, spread over its partitions) "
                    "and report every one not where murmur2 of its account id puts it: no key, a key that is "
                    "not UTF-8, a key murmur2 sends elsewhere (a librdkafka producer without "
                    "partitioner=murmur2_random), or a key that is not the value's account_id. The worker "
                    "sends such usage events and verdicts to the DLQ as wrong_partition (docs/producers.md). "
                    "Exit 0: none found; 1: some found.")
    p.add_argument("topic", metavar="TOPIC",
                   help="an account-keyed manifest topic: usage-events, analyst-verdicts, enforcement-actions, "
                        "anomaly-alerts, findings (the prefix is added)")
    p.add_argument("--sample", type=int, default=1000, metavar="N",
                   help="messages to check, the latest of each partition (default 1000)")
    p.add_argument("--show", type=int, default=50, metavar="N", help="misplaced messages to list (default 50)")
    _add_kafka_opts(p)
    p.set_defaults(func=cmd_check_partitioning)

    p = sub.add_parser(
        "simhash", help="print the prompt_simhash of a text (the reference of docs/producers.md)",
        description="Compute prompt_simhash v1 of a prompt text as the reference implementation does "
                    "(pipeline/contract/prompt_simhash.py): clean, NFKC and case folding, whitespace runs to one space, "
                    "SimHash of 5-code-point shingles hashed with SHA-256. For a gateway team to check its own "
                    "implementation; the test vectors are in schemas/examples/simhash/vectors.json.")
    p.add_argument("text", nargs="?", metavar="TEXT", help="the prompt text")
    p.add_argument("--input", "-i", type=Path, metavar="FILE",
                   help="read the text from a file (UTF-8; - for standard input) instead, taken whole: a final "
                        "newline is whitespace and makes no difference")
    p.add_argument("--explain", action="store_true",
                   help="print a JSON object with the normalised text and the number of features as well")
    p.set_defaults(func=cmd_simhash)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
