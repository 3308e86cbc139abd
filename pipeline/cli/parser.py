"""The argument parser: the top-level help, then one small builder per command, in the order ``--help`` lists them.

Help texts are the user's documentation: a change here is a change of the command line's interface.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.cli.commands_backtest import cmd_backtest
from pipeline.cli.commands_contract import cmd_simhash, cmd_verdict, cmd_verify
from pipeline.cli.commands_kafka import cmd_check_partitioning, cmd_kafka, cmd_produce, cmd_tail, cmd_topics
from pipeline.cli.commands_run import MASK, cmd_config, cmd_demo, cmd_simulate, cmd_worker
from pipeline.cli.common import settings_from
from pipeline.cli.options import add_kafka_opts, add_local_kafka_opts, add_settings_flags, detection_settings

Subparsers = argparse._SubParsersAction  # what add_subparsers returns


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline",
        description="Detect distillation attacks on an LLM API from a stream of usage events (Kafka + Faust).",
        epilog="Exit codes: 0 ok; 1 ran but found a problem; 2 bad usage or input; 3 Kafka unreachable. "
               "Every option also reads from a DG_-prefixed environment variable (see docs/operations.md, Configuration).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def _demo(sub: Subparsers[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline on a simulated scenario with a local Kafka")
    add_kafka_opts(p)
    p.add_argument("--scenario", default="tiny", help="simulated scenario to stream (default tiny)")
    p.add_argument("--seed", type=int, default=1, help="scenario seed (default 1)")
    p.add_argument("--max-seconds", type=float, default=600.0, help="give up after this long (default 600)")
    p.add_argument("--no-colour", action="store_true", help="plain output")
    add_settings_flags(p)
    p.set_defaults(func=cmd_demo)


def _worker(sub: Subparsers[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("worker", help="run a Faust worker of the streaming pipeline (start more to scale out)",
                       description="Run a Faust worker: reads usage-events, writes anomaly-alerts and the DLQ. "
                                   "Start more workers (distinct --web-port, --store-dir) to scale out.")
    add_kafka_opts(p)
    p.add_argument("-l", "--loglevel", default="info", choices=["debug", "info", "warning", "error"],
                   help="log level (default info)")
    p.add_argument("--web-port", type=int, metavar="N", help="worker web/stats port (env DG_WEB_PORT; default 6066)")
    p.add_argument("--store-dir", type=Path, metavar="DIR",
                   help="RocksDB table directory (env DG_STORE_DIR; default ./var/store)")
    add_settings_flags(p)
    p.set_defaults(func=cmd_worker)


def _kafka(sub: Subparsers[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("kafka", help="start, stop or inspect a local single-node Apache Kafka (KRaft)",
                       description="A local Apache Kafka in KRaft mode from jars resolved with Maven "
                                   "(cached under ~/.cache/distillation-guard), run with the machine's Java.")
    p.add_argument("action", choices=["start", "stop", "status", "provision"],
                   help="provision: on the DG_BOOTSTRAP cluster, logged in as its admin (DG_SASL_*), create the "
                        "role logins of DG_SASL_USERS and the ACLs of pipeline/kafka/acls.py")
    p.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for start or stop (default 90)")
    add_local_kafka_opts(p)
    p.set_defaults(func=cmd_kafka)


def _topics(sub: Subparsers[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("topics", help="create the topics of the manifest (schemas/topics.json)")
    p.add_argument("action", choices=["create"])
    add_kafka_opts(p)
    p.add_argument("--partitions", type=int, metavar="N", help="override the manifest's partition counts")
    p.set_defaults(func=cmd_topics)


def _simulate(sub: Subparsers[argparse.ArgumentParser]) -> None:
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
    add_kafka_opts(p)
    p.set_defaults(func=cmd_simulate)


def _produce(sub: Subparsers[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("produce", help="send an events file to the input topic",
                       description="Send a .jsonl or .msgpack events file (optionally .gz) to usage-events, "
                                   "keyed by account_id, as msgpack. Bad records are listed and skipped "
                                   "(exit 1), unless --raw sends every record as it is.")
    p.add_argument("--input", "-i", required=True, type=Path, metavar="FILE", help="events file")
    p.add_argument("--raw", action="store_true",
                   help="send each record's bytes unvalidated (to exercise the worker's dead-letter path)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    add_kafka_opts(p)
    p.set_defaults(func=cmd_produce)


def _backtest(sub: Subparsers[argparse.ArgumentParser]) -> None:
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
    add_kafka_opts(p)
    # what a replay uses: the detection's thresholds and lists, and the bounds it applies to input
    add_settings_flags(p, detection_settings() | {"max_event_skew_ms", "max_message_bytes", "replay_prefix"})
    p.set_defaults(func=cmd_backtest)


def _config(sub: Subparsers[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("config", help="show the effective settings (secrets masked)",
                       description="Print every setting as the commands would see it, from DG_* environment "
                                   "variables, flags and defaults, with where each value came from. Secrets "
                                   "are shown as " + MASK + ".")
    p.add_argument("action", choices=["show"])
    p.add_argument("--json", action="store_true", help="print a JSON object instead of aligned text")
    add_kafka_opts(p)
    add_settings_flags(p)
    p.set_defaults(func=cmd_config)


def _verify(sub: Subparsers[argparse.ArgumentParser]) -> None:
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


def _verdict(sub: Subparsers[argparse.ArgumentParser]) -> None:
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
    add_kafka_opts(p)
    p.set_defaults(func=cmd_verdict)


def _tail(sub: Subparsers[argparse.ArgumentParser]) -> None:
    from pipeline.kafka.tail import SEVERITIES

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
    add_kafka_opts(p)
    p.set_defaults(func=cmd_tail)


def _check_partitioning(sub: Subparsers[argparse.ArgumentParser]) -> None:
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
    add_kafka_opts(p)
    p.set_defaults(func=cmd_check_partitioning)


def _simhash(sub: Subparsers[argparse.ArgumentParser]) -> None:
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


def _console(sub: Subparsers[argparse.ArgumentParser]) -> None:
    from pipeline.console.cli import add_arguments, run

    p = sub.add_parser("console", help="the analyst console in the browser: review queue, campaigns, accounts, "
                                       "replays, signed verdicts (console add-user, console load)")
    add_arguments(p)
    add_kafka_opts(p)
    p.set_defaults(func=lambda args: run(args, settings_from(args)))


# the order of the commands in --help
COMMANDS = (_demo, _worker, _kafka, _topics, _simulate, _produce, _backtest, _config, _verify, _verdict, _console,
            _tail, _check_partitioning, _simhash)
