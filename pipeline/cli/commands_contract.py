"""Commands about the contract's messages: check signed actions, sign an analyst verdict, a prompt's simhash."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pipeline.cli.common import (
    EXIT_OK,
    EXIT_PROBLEM,
    CommandError,
    settings_from,
    topic_reader_error,
)
from pipeline.contract.manifest import VERDICTS
from pipeline.settings import Settings


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
    data = _verify_input(args)
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


def _verify_input(args: argparse.Namespace) -> bytes:
    """The bytes ``verify`` checks: a topic's messages as tail lines, standard input, or a file."""
    try:
        if args.topic is not None:
            return _topic_as_tail_lines(args)
        data: bytes
        if str(args.input) == "-":
            stdin: Any = getattr(sys.stdin, "buffer", None)
            data = stdin.read() if stdin is not None else sys.stdin.read().encode("utf-8")
        else:
            data = args.input.read_bytes()
        return data
    except OSError as exc:
        raise CommandError(f"cannot read {args.input}: {exc}") from exc


def _topic_as_tail_lines(args: argparse.Namespace) -> bytes:
    """``verify --topic``: the topic's messages (from ``--from``, to its current end) as ``tail`` prints
    them, headers included, so they are checked as ``tail … | verify --input -`` would check them."""
    import json

    from pipeline.kafka import reader as topic_reader
    from pipeline.kafka import tail
    from pipeline.kafka.replay import ReplayError

    settings = settings_from(args)
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
        raise topic_reader_error(exc) from exc
    return "\n".join(lines).encode("utf-8")


def cmd_verdict(args: argparse.Namespace) -> int:
    import json
    import time

    from pipeline.contract import codec
    from pipeline.contract.verdicts import VERDICT_VERSION, analyst_keys, decode_verdict, sign_verdict
    from pipeline.kafka.replay import ReplayError, parse_time

    settings = settings_from(args)
    keys = analyst_keys(settings)
    if "current" not in keys:
        raise CommandError("no analyst key: set DG_ANALYST_KEY (verdicts are signed with the analyst key, never "
                           "with the key that signs actions)")
    fields = _verdict_fields(args)
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
        _send_verdict(settings, verdict)
    return EXIT_OK


def _verdict_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The alert a verdict is about: the flags, with ``--alert FILE`` filling those not given."""
    import json

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
    return fields


def _send_verdict(settings: Settings, verdict: dict[str, Any]) -> None:
    from pipeline.contract import codec
    from pipeline.kafka.produce import ProduceError, make_producer

    topic = settings.topic(VERDICTS)
    try:
        producer = make_producer(settings)
    except ProduceError as exc:
        raise CommandError(str(exc), exc.code) from exc
    producer.send(topic, key=verdict["account_id"].encode("utf-8"), value=codec.encode(verdict))
    producer.flush(timeout=60)
    producer.close(timeout=30)
    print(f"sent to {topic}", file=sys.stderr)


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
