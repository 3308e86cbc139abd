"""``python -m pipeline demo``: the whole pipeline on a simulated scenario, watched live.

Starts the local Kafka unless a bootstrap server is given, creates a fresh set of topics for this run
(a run-specific prefix, so runs never see each other's data), starts a worker process, streams a
simulated scenario into it, prints alerts and actions as they arrive, and ends with a summary. Ctrl-C
stops everything it started.
"""

from __future__ import annotations

import socket
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.settings import Settings

COLOURS = {"low": "\x1b[36m", "medium": "\x1b[33m", "high": "\x1b[31m", "critical": "\x1b[1;41;97m"}
RESET = "\x1b[0m"


@dataclass
class DemoOptions:
    scenario: str = "tiny"
    seed: int = 1
    scale: float = 1.0
    idle_seconds: float = 15.0
    max_seconds: float = 600.0
    colour: bool = True
    external_bootstrap: bool = False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _c(text: str, code: str, on: bool) -> str:
    return f"{code}{text}{RESET}" if on else text


def run_demo(base: Settings, opts: DemoOptions) -> int:
    """Run the demo; returns the process exit code."""
    from kafka import KafkaConsumer

    from pipeline import simulate
    from pipeline.contract import codec
    from pipeline.kafka import admin as topics
    from pipeline.kafka import local as kafka_local
    from pipeline.kafka.config import kafka_python_config
    from pipeline.kafka.lag import group_lag
    from pipeline.kafka.produce import make_producer
    from pipeline.offline.evaluation import Evaluation
    from pipeline.proc import WorkerProcess

    colour = opts.colour and sys.stdout.isatty()
    started_kafka = False
    worker: WorkerProcess | None = None
    workdir = Path(tempfile.mkdtemp(prefix="dg-demo-"))
    run_id = time.strftime("%Y%m%d%H%M%S")
    prefix = f"{base.topic_prefix}demo-{run_id}-"
    settings = base.model_copy(update={"topic_prefix": prefix, "app_id": f"dg-demo-{run_id}",
                                       "store_dir": workdir / "store", "web_port": _free_port(),
                                       "metrics_port": _free_port()})
    print(_c("distillation-guard demo", "\x1b[1m", colour))
    try:
        if not opts.external_bootstrap:
            print("· starting the local Apache Kafka (first run resolves its jars with Maven) …", flush=True)
            # decided before starting, so an interrupt during start-up still stops what we started
            started_kafka = not kafka_local.status(settings).running
            info = kafka_local.start(settings)
            settings = settings.model_copy(update={"bootstrap": info.bootstrap})
        print(f"· Kafka at {settings.bootstrap}; topics prefixed '{prefix}'", flush=True)
        topics.create_topics(settings)

        log_path = workdir / "worker.log"
        print(f"· starting a worker (log: {log_path}; metrics: http://127.0.0.1:{settings.metrics_port}/metrics)",
              flush=True)
        worker = WorkerProcess(settings, log_path)

        sim = simulate.generate(opts.scenario, opts.seed, scale=opts.scale)
        labels = {r["account_id"]: (r["label"], r["campaign_id"]) for r in sim.labels}
        print(f"· scenario '{opts.scenario}' seed {opts.seed}: {len(sim.events)} events, {len(labels)} accounts, "
              f"{len(sim.info.get('campaigns', {}))} campaigns", flush=True)

        out_topics = [settings.topic("anomaly-alerts"), settings.topic("enforcement-actions")]
        consumer = KafkaConsumer(*out_topics, **kafka_python_config(settings), auto_offset_reset="earliest",
                                 enable_auto_commit=False, consumer_timeout_ms=500)
        producer = make_producer(settings)
        t0 = time.monotonic()
        in_topic = settings.topic("usage-events")
        for ev in sim.events:
            producer.send(in_topic, key=ev["account_id"].encode("utf-8"), value=codec.encode(ev))
        producer.flush(timeout=120)
        producer.close()
        print(f"· streamed {len(sim.events)} events into {in_topic}; watching for alerts and actions …\n",
              flush=True)

        evaluation = Evaluation(labels)
        for ev in sim.events:
            evaluation.observe_event(ev)
        severities: Counter[str] = Counter()
        last_new = time.monotonic()
        caught_up_at: float | None = None
        while time.monotonic() - t0 < opts.max_seconds:
            if not worker.alive():
                print(_c(f"worker exited with code {worker.returncode}; see {log_path}", "\x1b[31m", colour))
                return 1
            got = False
            for msg in consumer:
                got = True
                value = codec.decode_map(msg.value)
                topic = "anomaly-alerts" if msg.topic.endswith("anomaly-alerts") else "enforcement-actions"
                evaluation.observe_output(topic, value)
                print(_describe(topic, value, labels, colour), flush=True)
                if topic == "anomaly-alerts":
                    severities[value["severity"]] += 1
            now = time.monotonic()
            if got:
                last_new = now
            if caught_up_at is None and group_lag(settings.bootstrap, settings.app_id, in_topic,
                                                  settings=settings) == 0:
                caught_up_at = now
            if caught_up_at is not None and now - last_new > 2 and now - caught_up_at > 2:
                break
            if caught_up_at is None and now - last_new > opts.max_seconds:
                break
        elapsed = (caught_up_at or time.monotonic()) - t0
        m = evaluation.compute()
        print()
        print(_c("summary", "\x1b[1m", colour))
        print(f"  events processed   {len(sim.events)} in {elapsed:.1f} s ({len(sim.events) / elapsed:,.0f} events/s "
              f"end to end, including worker start-up)")
        print(f"  alerts             {sum(severities.values())} ({', '.join(f'{k} {v}' for k, v in sorted(severities.items()))})")
        print(f"  accounts flagged   {m['flagged_accounts']} (high/critical alerts or actions beyond review)")
        ids = [f"{c}: {v['campaign_ids']}" for c, v in sorted(m["per_campaign"].items()) if v["campaign_ids"]]
        print(f"  campaigns found    {m['campaigns_found']} of {m['campaigns']}")
        print(f"  campaign ids       {', '.join(ids) or 'none'} (detected campaigns per labelled one, after merges)")
        print(f"  account recall     {m['account_recall']}; benign false positives {m['benign_false_positives']}")
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted: stopping what the demo started …", file=sys.stderr)
        return 130
    finally:
        if worker is not None:
            worker.stop(timeout=30)
        if started_kafka:
            from pipeline.kafka import local as kafka_local

            kafka_local.stop(settings)
            print("· local Kafka stopped", flush=True)


def _describe(topic: str, v: dict[str, Any], labels: dict[str, tuple[str, str | None]], colour: bool) -> str:
    acc = v.get("account_id")
    if acc is None and v.get("related_accounts"):  # a campaign alert: what its named members really are
        truths = Counter(labels.get(a, ("?", None)) for a in v["related_accounts"])
        truth = truths.most_common(1)[0][0]
    else:
        truth = labels.get(acc or "", ("?", None))
    tag = f"[truth: {truth[0]}{' ' + truth[1] if truth[1] else ''}]"
    if topic == "anomaly-alerts":
        sev = v["severity"]
        head = _c(f"ALERT {sev.upper():8}", COLOURS.get(sev, ""), colour)
        reason = v["reasons"][0]["detail"] if v.get("reasons") else ""
        who = acc or f"campaign {v.get('campaign_id')} ({len(v.get('related_accounts', []))} accounts)"
        return f"{head} {who} score {v['score']:.2f} {tag}: {reason}"
    head = _c(f"ACTION {v['action']:>20}", "\x1b[35m", colour)
    return f"{head} {acc} mode={v['mode']} reasons={','.join(v['reason_codes'])} {tag}"
