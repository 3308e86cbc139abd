"""``python -m pipeline console``: serve the console; ``console add-user`` and ``console load`` manage it."""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from pathlib import Path

from pipeline.settings import Settings

DEFAULT_STORE = Path("var/console/console.db")
DEFAULT_USERS = Path("var/console/users")

DESCRIPTION = """\
The analyst console: a review queue in the browser over the pipeline's alerts, actions and verdicts.

Without a subcommand it serves the console (default http://127.0.0.1:8080/): it follows anomaly-alerts,
enforcement-actions and analyst-verdicts (and usage-events, for the activity charts; --no-activity
skips them) under the configured topic prefix (DG_TOPIC_PREFIX or --topic-prefix: a replay's sandbox
prefix works the same) into its SQLite store, resuming from the offsets stored there. Verdicts given in
the browser are signed with DG_ANALYST_KEY and sent to analyst-verdicts under the analyst's name.

Analysts sign in with a name and password from the users file (scrypt hashes), made with
`console add-user NAME`. `console load NAME --alerts … --actions … [--report DIR] [--events FILE]`
loads a backtest's output files as a run, shown under the source NAME and in the Replays view.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = DESCRIPTION
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--store", dest="console_store", type=Path, default=DEFAULT_STORE, help=f"SQLite store (default {DEFAULT_STORE})")
    p.add_argument("--users", type=Path, default=DEFAULT_USERS, help=f"users file (default {DEFAULT_USERS})")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    p.add_argument("--no-kafka", action="store_true", help="serve the store only: no consumer, no verdicts sent")
    p.add_argument("--no-activity", action="store_true", help="do not read usage-events for the activity charts")
    p.add_argument("--run-name", metavar="NAME", default=None,
                   help="store what is read as the run NAME instead of as live: for a replay's sandbox topics "
                        "(backtest --to-prefix; give its prefix with --topic-prefix); no verdicts are sent")
    p.add_argument("--secure-cookies", action="store_true", help="mark cookies Secure (behind a TLS proxy)")
    sub = p.add_subparsers(dest="console_command", metavar="{add-user,load}")
    u = sub.add_parser("add-user", help="add an analyst (or set a new password) in the users file")
    u.add_argument("name", help="the analyst's name: it signs their verdicts")
    u.add_argument("--password-stdin", action="store_true", help="read the password from stdin (one line)")
    u.add_argument("--users", type=Path, default=argparse.SUPPRESS, help=f"users file (default {DEFAULT_USERS})")
    ld = sub.add_parser("load", help="load a backtest's output files as a named run")
    ld.add_argument("name", help="the run's name (its source in the console)")
    ld.add_argument("--alerts", type=Path, help="alerts file of backtest --alerts-out (JSONL)")
    ld.add_argument("--actions", type=Path, help="actions file of backtest --actions-out (JSONL)")
    ld.add_argument("--report", type=Path, help="report directory of backtest --report (metrics.json, accounts.json)")
    ld.add_argument("--events", type=Path, help="the events file replayed, for the activity charts")
    ld.add_argument("--store", dest="console_store", type=Path, default=argparse.SUPPRESS, help=f"SQLite store (default {DEFAULT_STORE})")


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.console_command == "add-user":
        return _add_user(args)
    if args.console_command == "load":
        return _load(args)
    return serve(args, settings)


def _add_user(args: argparse.Namespace) -> int:
    from pipeline.console.auth import AuthError, add_user

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("again: ") != password:
            print("error: the passwords differ", file=sys.stderr)
            return 2
    try:
        new = add_user(args.users, args.name, password)
    except AuthError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{'added' if new else 'updated'} {args.name} in {args.users}")
    return 0


def _load(args: argparse.Namespace) -> int:
    from pipeline.console import store
    from pipeline.console.loader import LoadError, RunFiles, load_run

    if not (args.alerts or args.actions or args.report):
        print("error: give --alerts, --actions and/or --report", file=sys.stderr)
        return 2
    conn = store.connect(args.console_store)
    try:
        counts = load_run(conn, args.name, RunFiles(args.alerts, args.actions, args.report, args.events))
    except LoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        conn.close()
    print(f"loaded run {args.name} into {args.console_store}: {counts['alerts']} alerts, {counts['actions']} actions")
    return 0


def serve(args: argparse.Namespace, settings: Settings) -> int:
    from aiohttp import web

    from pipeline.console import store
    from pipeline.console.auth import AuthError, read_users
    from pipeline.console.ingest import Consumer
    from pipeline.console.publish import Publisher
    from pipeline.console.web import make_app, open_console

    try:
        if not read_users(args.users):
            raise AuthError(f"{args.users} names no user")
    except AuthError as exc:
        print(f"error: {exc}; add one with: python -m pipeline console add-user NAME --users {args.users}",
              file=sys.stderr)
        return 2
    console = open_console(args.console_store, args.users, secure_cookies=args.secure_cookies)
    consumer = None
    if not args.no_kafka:
        conn = store.connect(args.console_store)
        if args.run_name:
            store.save_run(conn, args.run_name, "replay", int(time.time() * 1000), settings.topic_prefix)
        consumer = Consumer(conn, settings, activity=not args.no_activity, source=args.run_name or store.LIVE)
        consumer.start()
        console.consumer = consumer
        if not args.run_name:
            console.publisher = Publisher(settings)
    print(f"console: http://{args.host}:{args.port}/ (store {args.console_store}; "
          f"{'Kafka ' + settings.bootstrap + ', prefix ' + repr(settings.topic_prefix) if consumer else 'no Kafka'})",
          flush=True)
    try:
        web.run_app(make_app(console), host=args.host, port=args.port, print=None)
    finally:
        if consumer is not None:
            consumer.stop()
        if console.publisher is not None:
            console.publisher.close()
    return 0
