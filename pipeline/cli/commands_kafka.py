"""Commands that operate Kafka: the local broker, topics, sending an events file, reading topics back."""

from __future__ import annotations

import argparse
import sys

from pipeline.cli.common import (
    EXIT_OK,
    EXIT_PROBLEM,
    EXIT_SERVICE,
    CommandError,
    settings_from,
    topic_reader_error,
)
from pipeline.contract.manifest import USAGE_EVENTS
from pipeline.settings import Settings


def cmd_kafka(args: argparse.Namespace) -> int:
    from pipeline.kafka import local as kafka_local

    settings = settings_from(args)
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

    settings = settings_from(args)
    try:
        results = topics.create_topics(settings)
    except Exception as exc:  # kafka-python raises a zoo of errors; name the broker
        raise CommandError(f"cannot create topics on {settings.bootstrap}: {exc}", EXIT_SERVICE) from exc
    for name, what in results:
        print(f"{what:8} {name}")
    return EXIT_OK


def cmd_produce(args: argparse.Namespace) -> int:
    from pipeline.kafka.produce import ProduceError, produce_file

    settings = settings_from(args)
    try:
        stats = produce_file(settings, args.input, raw=args.raw, progress=not args.quiet)
    except ProduceError as exc:
        raise CommandError(str(exc), exc.code) from exc
    print(f"sent {stats.sent} events to {settings.topic(USAGE_EVENTS)}"
          + (f"; skipped {stats.bad} bad records (listed above)" if stats.bad else ""))
    return EXIT_PROBLEM if stats.bad else EXIT_OK


def cmd_tail(args: argparse.Namespace) -> int:
    import json

    from pipeline.kafka import reader as topic_reader
    from pipeline.kafka import tail
    from pipeline.kafka.replay import ReplayError

    settings = settings_from(args)
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
        raise topic_reader_error(exc) from exc
    except BrokenPipeError:  # the reader went away (| head): not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_OK


def cmd_check_partitioning(args: argparse.Namespace) -> int:
    from pipeline.kafka import partitioning
    from pipeline.kafka import reader as topic_reader

    settings = settings_from(args)
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
        raise topic_reader_error(exc) from exc
    for m in report.misplaced[:args.show]:
        print(f"MISPLACED {m}")
    if len(report.misplaced) > args.show:
        print(f"… and {len(report.misplaced) - args.show} more")
    print(f"{topic}: checked the last {report.checked} messages ({per_partition} at most per partition, "
          f"{n_parts} partitions): {len(report.misplaced)} on the wrong partition", file=sys.stderr)
    return EXIT_PROBLEM if report.misplaced else EXIT_OK
