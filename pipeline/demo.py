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
from typing import TYPE_CHECKING, Any

from pipeline.contract.manifest import ACTIONS, ALERTS, USAGE_EVENTS
from pipeline.settings import Settings

if TYPE_CHECKING:
    from pipeline.proc import WorkerProcess

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
    demo = Demo(base, opts)
    print(_c("distillation-guard demo", "\x1b[1m", demo.colour))
    try:
        return demo.run()
    except KeyboardInterrupt:
        print("\ninterrupted: stopping what the demo started …", file=sys.stderr)
        return 130
    finally:
        demo.stop()


class Demo:
    """One demo run, step by step: Kafka, topics and a worker started, the scenario streamed in, its
    alerts and actions watched until the worker has caught up, a summary. It remembers what it started,
    so ``stop`` stops exactly that (and an interrupt at any step stops it too)."""

    def __init__(self, base: Settings, opts: DemoOptions) -> None:
        self.opts = opts
        self.colour = opts.colour and sys.stdout.isatty()
        self.workdir = Path(tempfile.mkdtemp(prefix="dg-demo-"))
        run_id = time.strftime("%Y%m%d%H%M%S")
        self.prefix = f"{base.topic_prefix}demo-{run_id}-"
        self.settings = base.model_copy(update={"topic_prefix": self.prefix, "app_id": f"dg-demo-{run_id}",
                                                "store_dir": self.workdir / "store", "web_port": _free_port(),
                                                "metrics_port": _free_port()})
        self.log_path = self.workdir / "worker.log"
        self.started_kafka = False
        self.worker: WorkerProcess | None = None

    def run(self) -> int:
        self.start_kafka()
        self.start_worker()
        sim = self.scenario()
        labels = {r["account_id"]: (r["label"], r["campaign_id"]) for r in sim.labels}
        consumer = self.open_consumer()
        t0 = time.monotonic()
        self.stream(sim.events)
        watch = Watch(self, labels)
        for ev in sim.events:
            watch.evaluation.observe_event(ev)
        if not watch.run(consumer, t0):
            return 1
        elapsed = (watch.caught_up_at or time.monotonic()) - t0
        self.summary(len(sim.events), elapsed, watch)
        self.console_handoff(sim.events, watch)
        return 0

    def start_kafka(self) -> None:
        """The local Kafka (unless a bootstrap server was given), then this run's topics."""
        from pipeline.kafka import admin as topics
        from pipeline.kafka import local as kafka_local

        if not self.opts.external_bootstrap:
            print("· starting the local Apache Kafka (first run resolves its jars with Maven) …", flush=True)
            # decided before starting, so an interrupt during start-up still stops what we started
            self.started_kafka = not kafka_local.status(self.settings).running
            info = kafka_local.start(self.settings)
            self.settings = self.settings.model_copy(update={"bootstrap": info.bootstrap})
        print(f"· Kafka at {self.settings.bootstrap}; topics prefixed '{self.prefix}'", flush=True)
        topics.create_topics(self.settings)

    def start_worker(self) -> None:
        from pipeline.proc import WorkerProcess

        print(f"· starting a worker (log: {self.log_path}; metrics: "
              f"http://127.0.0.1:{self.settings.metrics_port}/metrics)", flush=True)
        self.worker = WorkerProcess(self.settings, self.log_path)

    def scenario(self) -> Any:
        from pipeline import simulate

        opts = self.opts
        sim = simulate.generate(opts.scenario, opts.seed, scale=opts.scale)
        print(f"· scenario '{opts.scenario}' seed {opts.seed}: {len(sim.events)} events, {len(sim.labels)} "
              f"accounts, {len(sim.info.get('campaigns', {}))} campaigns", flush=True)
        return sim

    def open_consumer(self) -> Any:
        """A consumer of this run's alerts and actions, configured like every Kafka client here
        (``kafka_python_config``: bootstrap servers, TLS and SASL)."""
        from kafka import KafkaConsumer

        from pipeline.kafka.config import kafka_python_config

        out_topics = [self.settings.topic(ALERTS), self.settings.topic(ACTIONS)]
        return KafkaConsumer(*out_topics, **kafka_python_config(self.settings), auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=500)

    def stream(self, events: list[Any]) -> None:
        from pipeline.kafka.produce import send_events

        in_topic = self.settings.topic(USAGE_EVENTS)
        send_events(self.settings, events)
        print(f"· streamed {len(events)} events into {in_topic}; watching for alerts and actions …\n",
              flush=True)

    def summary(self, n_events: int, elapsed: float, watch: Watch) -> None:
        m = watch.evaluation.compute()
        severities = watch.severities
        print()
        print(_c("summary", "\x1b[1m", self.colour))
        print(f"  events processed   {n_events} in {elapsed:.1f} s ({n_events / elapsed:,.0f} events/s "
              f"end to end, including worker start-up)")
        print(f"  alerts             {sum(severities.values())} "
              f"({', '.join(f'{k} {v}' for k, v in sorted(severities.items()))})")
        print(f"  accounts flagged   {m['flagged_accounts']} (high/critical alerts or actions beyond review)")
        ids = [f"{c}: {v['campaign_ids']}" for c, v in sorted(m["per_campaign"].items()) if v["campaign_ids"]]
        print(f"  campaigns found    {m['campaigns_found']} of {m['campaigns']}")
        print(f"  campaign ids       {', '.join(ids) or 'none'} (detected campaigns per labelled one, after merges)")
        print(f"  account recall     {m['account_recall']}; benign false positives {m['benign_false_positives']}")

    def console_handoff(self, events: list[Any], watch: Watch) -> None:
        """The results in an analyst console store, and the command that opens them in the browser."""
        from pipeline.console.handoff import load_demo_results

        print()
        for line in load_demo_results(self.workdir, watch.outputs[ALERTS], watch.outputs[ACTIONS], events):
            print(line, flush=True)

    def stop(self) -> None:
        """Stop the worker and the local Kafka, if this run started them."""
        if self.worker is not None:
            self.worker.stop(timeout=30)
        if self.started_kafka:
            from pipeline.kafka import local as kafka_local

            kafka_local.stop(self.settings)
            print("· local Kafka stopped", flush=True)


class Watch:
    """The demo's watch over its output topics: every alert and action printed and evaluated as it
    arrives, until the worker has consumed all input and nothing new came for two seconds."""

    def __init__(self, demo: Demo, labels: dict[str, tuple[str, str | None]]) -> None:
        from pipeline.offline.evaluation import Evaluation

        self.demo = demo
        self.labels = labels
        self.evaluation = Evaluation(labels)
        self.severities: Counter[str] = Counter()
        self.caught_up_at: float | None = None
        self.outputs: dict[str, list[dict[str, Any]]] = {ALERTS: [], ACTIONS: []}  # for the console

    def run(self, consumer: Any, t0: float) -> bool:
        """Watch until done or ``max_seconds`` after ``t0``; False if the worker died on the way."""
        from pipeline.kafka.lag import group_lag

        demo, settings = self.demo, self.demo.settings
        in_topic = settings.topic(USAGE_EVENTS)
        last_new = time.monotonic()
        while time.monotonic() - t0 < demo.opts.max_seconds:
            if demo.worker is not None and not demo.worker.alive():
                print(_c(f"worker exited with code {demo.worker.returncode}; see {demo.log_path}", "\x1b[31m",
                         demo.colour))
                return False
            got = self.drain(consumer)
            now = time.monotonic()
            if got:
                last_new = now
            if self.caught_up_at is None and group_lag(settings.bootstrap, settings.app_id, in_topic,
                                                       settings=settings) == 0:
                self.caught_up_at = now
            if (self.caught_up_at is not None and now - last_new > 2 and now - self.caught_up_at > 2
                    and self._nothing_held()):
                break
            if self.caught_up_at is None and now - last_new > demo.opts.max_seconds:
                break
        return True

    def _nothing_held(self) -> bool:
        """The worker holds nothing for event-time order (its last campaign findings are out), or does not say."""
        from pipeline.worker.observability import held_for_order

        port = self.demo.settings.metrics_port
        return not port or held_for_order(port) in (0, None)

    def drain(self, consumer: Any) -> bool:
        """Print and evaluate what the consumer has now; True if there was anything."""
        from pipeline.contract import codec

        got = False
        for msg in consumer:
            got = True
            value = codec.decode_map(msg.value)
            topic = ALERTS if msg.topic.endswith(ALERTS) else ACTIONS
            self.evaluation.observe_output(topic, value)
            self.outputs[topic].append(value)
            print(_describe(topic, value, self.labels, self.demo.colour), flush=True)
            if topic == ALERTS:
                self.severities[value["severity"]] += 1
        return got


def _describe(topic: str, v: dict[str, Any], labels: dict[str, tuple[str, str | None]], colour: bool) -> str:
    acc = v.get("account_id")
    if acc is None and v.get("related_accounts"):  # a campaign alert: what its named members really are
        truths = Counter(labels.get(a, ("?", None)) for a in v["related_accounts"])
        truth = truths.most_common(1)[0][0]
    else:
        truth = labels.get(acc or "", ("?", None))
    tag = f"[truth: {truth[0]}{' ' + truth[1] if truth[1] else ''}]"
    if topic == ALERTS:
        sev = v["severity"]
        head = _c(f"ALERT {sev.upper():8}", COLOURS.get(sev, ""), colour)
        reason = v["reasons"][0]["detail"] if v.get("reasons") else ""
        who = acc or f"campaign {v.get('campaign_id')} ({len(v.get('related_accounts', []))} accounts)"
        return f"{head} {who} score {v['score']:.2f} {tag}: {reason}"
    head = _c(f"ACTION {v['action']:>20}", "\x1b[35m", colour)
    return f"{head} {acc} mode={v['mode']} reasons={','.join(v['reason_codes'])} {tag}"
