"""The Faust application: topics, tables and agents of the streaming pipeline, built from Settings.

Wiring only; what runs is in the modules named below. Three agents, all thin, each hands batches to its
stage (``pipeline/worker/stages.py``: decode, call the pure engine, send what it returns):

- ``account_agent`` reads the co-partitioned, account-keyed topics ``usage-events``, ``findings`` and
  ``analyst-verdicts``; its stage keeps the ``account-state`` and ``policy-state`` tables and sends member
  summaries to ``link-updates``, to the partition of each link key;
- ``link_agent`` reads ``link-updates``; its stage keeps the ``link-state`` table and sends a signal for
  each link group judged a campaign to ``campaign-signals`` (all to the partition of one key);
- ``campaign_agent`` reads ``campaign-signals``; its stage keeps the ``campaign-state`` table (link groups
  that name the same accounts are one campaign) and sends campaign alerts and the named members'
  findings (to each account's partition).

Internal messages are batched: a batch's link updates go out as one message per destination partition,
findings likewise, so the link stage reads a few messages per batch rather than several per event. A
link update is known by (source offset, position in its message), which is what a link group records as
applied. Every record is sent straight through the app's producer (``outbox.Wire``: no per-message
Faust future).

Exactly-once *effect* without transactions: each agent works in batches; it first sends every output of
the batch and waits until Kafka has acknowledged them (acks=all), and only then writes the new state to
its tables (RocksDB + changelog), before Faust commits the batch's offsets (``Stage.checkpoint``). A crash
before the state write redelivers the batch against the old state, which reproduces the same outputs with
the same ids; a crash after it finds each key's applied source offset in the state and skips what is
already in. Agent concurrency stays at 1 (faust-streaming #606).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import faust
from faust.types import TP

from pipeline.contract import signing
from pipeline.contract.manifest import (
    ACTIONS,
    ALERTS,
    CAMPAIGN_SIGNALS,
    DLQ,
    FINDINGS,
    LINK_UPDATES,
    USAGE_EVENTS,
    VERDICTS,
    load_manifest,
)
from pipeline.contract.verdicts import analyst_keys
from pipeline.detection import Engine
from pipeline.detection.calibration import ScoreRanks
from pipeline.detection.campaigns import decode_record, last_ts_of
from pipeline.detection.config import DetectionConfig
from pipeline.detection.features import AccountState
from pipeline.detection.links import LinkGroup
from pipeline.detection.policy import PolicyState
from pipeline.detection.population import Segment
from pipeline.kafka.config import faust_broker_credentials, faust_broker_urls
from pipeline.logs import faust_logging_config, get_logger
from pipeline.settings import Settings
from pipeline.worker import health, stall
from pipeline.worker.consumer import WorkerConsumer
from pipeline.worker.guard import InvalidRateGuard
from pipeline.worker.link_order import ORDER_TABLE
from pipeline.worker.observability import WorkerMetrics, default_metrics
from pipeline.worker.ordered import CampaignStage, LinkStage
from pipeline.worker.outbox import KAFKA_MAX_MESSAGE_BYTES, Wire
from pipeline.worker.stages import AccountStage, Emitter, StageContext
from pipeline.worker.state import (
    ACCOUNT_CACHE,
    LINK_CACHE,
    POPULATION_TABLE,
    RANKS_TABLE,
    SEGMENTS_PER_PARTITION,
    BatchStore,
    StateCache,
    link_group_weight,
)
from pipeline.worker.tables import PartitionedTable, Sweeper, TableManager, standby_of

log = get_logger("worker")

STREAM_BUFFER = 2048
"""Messages each agent's stream buffers (Faust's default is 4,096): a batch of ``stages.BATCH_MAX`` and a
little. The worker's consumer fills a buffer to the brim instead of pausing its partitions at four-fifths
(``pipeline/worker/consumer.py``), and a buffered link-update message carries a whole batch of updates,
so the buffers weigh on the worker's memory: halving Faust's default lowered it with the same rate and
latency (``bench/state.py``, ``bench/end_to_end.py``; the figures are in ``bench/README.md``)."""
LINK_BUFFER = 32
"""Messages the link agent's stream buffers. Each carries a batch of link updates of up to 256 KiB
(``MAX_BATCH_BYTES``), so ``STREAM_BUFFER`` of them could hold 512 MiB while the link stage lags; 32 hold
at most 8 MiB, and a full buffer holds delivery back until the link agent takes a message (it never
waits on the account stage). The benchmarks measure the same with it as without (``bench/README.md``):
a bound for the worst case."""
PRODUCER_BATCH_BYTES = 512 * 1024
SWEEP_INTERVAL_S = 30.0
WATCHDOG_INTERVAL_S = 5.0
STATS_INTERVAL_S = 10.0
TABLES = ("account-state", "policy-state", "link-state", "campaign-state", ORDER_TABLE, POPULATION_TABLE,
          RANKS_TABLE)


@dataclass
class WorkerParts:
    """The parts of a worker app, for tests and tools (``app.dg``): its topics, tables, stages, agents."""

    settings: Settings
    engine: Engine
    wire: Wire
    account_in: faust.TopicT
    link_topic: faust.TopicT
    findings_topic: faust.TopicT
    signals_topic: faust.TopicT
    dlq_topic: faust.TopicT
    outputs: dict[str, faust.TopicT]
    tables: dict[str, PartitionedTable]
    account_stage: AccountStage
    link_stage: LinkStage
    campaign_stage: CampaignStage
    sweepers: list[Sweeper]
    watchdog: stall.Watchdog
    account_agent: Any = None
    link_agent: Any = None
    campaign_agent: Any = None
    ready_view: Any = None

    @property
    def watermark(self) -> Any:
        """The account stage's watermark: the clock of state expiry."""
        return self.account_stage.watermark


def _faust_app(settings: Settings) -> faust.App:
    """The Faust app itself: brokers, producer and consumer settings, stores, the worker's consumer."""
    app = faust.App(
        settings.app_id,
        broker=faust_broker_urls(settings),
        broker_credentials=faust_broker_credentials(settings),
        store=settings.store,
        datadir=str(settings.store_dir),
        autodiscover=False,
        logging_config=faust_logging_config(),  # one log format: libraries' lines as structlog's (JSON)
        producer_acks=-1,
        # a batch's state records go out together: let them share produce requests (aiokafka's 16 KiB
        # default puts a large link group in a request of its own)
        producer_max_batch_size=PRODUCER_BATCH_BYTES,
        producer_max_request_size=KAFKA_MAX_MESSAGE_BYTES,
        # a SIGKILLed worker's partitions move to the others after this long (Faust's default is 60 s)
        broker_session_timeout=15.0,
        broker_heartbeat_interval=3.0,
        consumer_auto_offset_reset="earliest",
        topic_partitions=settings.input_partitions,
        topic_replication_factor=settings.replication_factor,
        web_port=settings.web_port,
        web_host="127.0.0.1",
        key_serializer="raw",
        value_serializer="raw",
        TableManager=TableManager,
        stream_buffer_maxsize=STREAM_BUFFER,
        # Faust's default is 1: with two workers each then replays the other's every state write, which
        # costs scale-out much of its gain (``bench/scale_out.py``; the figures are in bench/README.md)
        table_standby_replicas=settings.standby_replicas,
    )
    app.transport.Consumer = WorkerConsumer  # type: ignore[misc]  # see pipeline/worker/consumer.py
    return app


def _topic_maker(app: faust.App, settings: Settings) -> Any:
    """``topic(*names, maxsize=None)``: a raw-bytes topic of the app over the named topics of the manifest."""
    manifest = load_manifest()

    def topic(*names: str, maxsize: int | None = None) -> faust.TopicT:
        # everything keyed by account or link key is co-partitioned with the input; the DLQ is not
        partitions = int(manifest[DLQ]["partitions"]) if names[0] == DLQ else settings.input_partitions
        t = app.topic(*(settings.topic(n) for n in names), key_type=bytes, value_type=bytes,
                      key_serializer="raw", value_serializer="raw", partitions=partitions)
        if maxsize is not None:  # App.topic takes ``maxsize`` but does not pass it on to the Topic
            t.maxsize = maxsize  # read when an agent's stream clones the topic and makes its buffer
        return t
    return topic


def policy_last_ts(raw: bytes, verdict_window_ms: int) -> int:
    """When a policy state was last of use, in event time: its latest finding, the last moment a verdict
    may still name one of its alerts (``verdict_window_ms`` after it), or the end of a verdict that holds.
    The sweeper forgets it ``idle_expiry_hours`` after that, as it forgets idle accounts."""
    s = PolicyState.from_bytes(raw)
    return max(s.own.last_ts, s.campaign.last_ts, *(alert[3] + verdict_window_ms for alert in s.alerts),
               *(verdict[1] for verdict in s.verdicts.values()))


def _sweepers(app: faust.App, settings: Settings, engine: Engine,
              tables: dict[str, PartitionedTable]) -> list[Sweeper]:
    """One sweeper of idle state per table, each with how its values say when they were last of use."""
    idle_ms = int(settings.idle_expiry_hours * 3_600_000)
    verdict_window_ms = int(engine.cfg.verdict_ttl_hours * 3_600_000)
    last_ts: dict[str, Callable[[bytes], int]] = {"account-state": AccountState.last_ts_of, "link-state": LinkGroup.now_of,
               "campaign-state": last_ts_of,
               "policy-state": functools.partial(policy_last_ts, verdict_window_ms=verdict_window_ms)}
    return [Sweeper(tables[name], last_ts[name], idle_ms, standby_of(app, tables[name]))
            for name in ("account-state", "link-state", "campaign-state", "policy-state")]


def _build(app: faust.App, settings: Settings, metrics: WorkerMetrics) -> WorkerParts:
    """Topics, tables, the engine over the tables' stores, and the three stages."""
    topic, wire = _topic_maker(app, settings), Wire(app)
    account_in = topic(USAGE_EVENTS, FINDINGS, VERDICTS)
    link_topic, findings_topic = topic(LINK_UPDATES, maxsize=LINK_BUFFER), topic(FINDINGS)
    signals_topic = topic(CAMPAIGN_SIGNALS)
    outputs = {ALERTS: topic(ALERTS), ACTIONS: topic(ACTIONS)}
    dlq_topic = topic(DLQ)
    rocksdb = settings.store.startswith("rocksdb")
    tables = {name: PartitionedTable.add_to(app, name, wire, settings.input_partitions, rocksdb) for name in TABLES}
    accounts = BatchStore(tables["account-state"], AccountState.from_bytes, StateCache(ACCOUNT_CACHE))
    policy = BatchStore(tables["policy-state"], PolicyState.from_bytes, StateCache(ACCOUNT_CACHE))
    links = BatchStore(tables["link-state"], LinkGroup.from_bytes, StateCache(LINK_CACHE, link_group_weight))
    campaigns = BatchStore(tables["campaign-state"], decode_record, StateCache(ACCOUNT_CACHE))
    segments = SEGMENTS_PER_PARTITION * settings.input_partitions
    population = BatchStore(tables[POPULATION_TABLE],
                            functools.partial(Segment.from_bytes, cfg=DetectionConfig.from_settings(settings)),
                            StateCache(segments))
    ranks = BatchStore(tables[RANKS_TABLE], ScoreRanks.from_bytes, StateCache(segments))
    engine = Engine.from_config(settings, accounts=accounts, links=links, policy=policy, campaigns=campaigns,
                                population=population, ranks=ranks)
    key_id = [(signing.KEY_ID_HEADER, signing.signing_key_id(settings).encode("ascii"))]
    emitter = Emitter(settings, metrics, engine, {name: t.get_topic_name() for name, t in outputs.items()},
                      dlq_topic.get_topic_name(), key_id)
    guard = InvalidRateGuard(settings.max_invalid_ratio, window=settings.invalid_window,
                             min_messages=max(10, settings.invalid_window // 10))
    watchdog = stall.Watchdog()
    ctx = StageContext(settings, wire, settings.input_partitions, link_topic.get_topic_name(),
                       findings_topic.get_topic_name(), signals_topic.get_topic_name(), emitter, guard,
                       watchdog, metrics)
    return WorkerParts(
        settings=settings, engine=engine, wire=wire, account_in=account_in, link_topic=link_topic,
        findings_topic=findings_topic, signals_topic=signals_topic, dlq_topic=dlq_topic, outputs=outputs,
        tables=tables, account_stage=AccountStage(ctx, engine, accounts, policy, (ranks, population),
                                                   analyst_keys(settings)),
        link_stage=LinkStage(ctx, engine, links, tables[ORDER_TABLE]), campaign_stage=CampaignStage(ctx, engine, campaigns, tables[ORDER_TABLE]),
        sweepers=_sweepers(app, settings, engine, tables), watchdog=watchdog)


def _add_agents(app: faust.App, parts: WorkerParts) -> None:
    """One agent per stage, concurrency 1 (faust-streaming #606), each handing its batches to the stage."""
    @app.agent(parts.account_in, concurrency=1)
    async def account_agent(stream: faust.StreamT) -> None:
        await parts.account_stage.run(stream)

    @app.agent(parts.link_topic, concurrency=1)
    async def link_agent(stream: faust.StreamT) -> None:
        await parts.link_stage.run(stream)

    @app.agent(parts.signals_topic, concurrency=1)
    async def campaign_agent(stream: faust.StreamT) -> None:
        await parts.campaign_stage.run(stream)

    parts.account_agent, parts.link_agent, parts.campaign_agent = account_agent, link_agent, campaign_agent


def _add_health(app: faust.App, parts: WorkerParts, metrics: WorkerMetrics) -> None:
    """The ``/ready/`` page, readiness in the metrics, the flow report (and SIGUSR1), the broker watchdog."""
    settings, watchdog = parts.settings, parts.watchdog
    watched = {settings.topic(n) for n in (USAGE_EVENTS, LINK_UPDATES, FINDINGS, VERDICTS, CAMPAIGN_SIGNALS)}
    metrics.track_readiness(lambda: health.is_ready(app, watchdog))
    flow = health.FlowReport(app, watched, watchdog, metrics, parts.tables)
    broker = health.BrokerWatchdog(settings)

    @app.page("/ready/")
    async def ready(web: Any, request: Any) -> Any:
        """Readiness for a health check (``health.readiness``): 200 or 503. A stuck event loop does not
        answer at all, which a health check counts as a failure too."""
        body, status = health.readiness(app, watchdog)
        return web.json(body, status=status)

    @app.task
    async def on_usr1_log_flow_state() -> None:
        with contextlib.suppress(NotImplementedError, RuntimeError):  # no signals on this platform/thread
            asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, flow.log_flow_state, "flow_state")

    @app.timer(STATS_INTERVAL_S)
    async def report_stats() -> None:
        await flow.report()

    @app.timer(WATCHDOG_INTERVAL_S)
    async def broker_watchdog() -> None:
        await broker.check()

    parts.ready_view = ready


def _add_sweeps(app: faust.App, parts: WorkerParts) -> None:
    """Every ``SWEEP_INTERVAL_S``, a chunk of each table's idle state, by the account stage's watermark."""
    @app.timer(SWEEP_INTERVAL_S)
    async def expire_idle_state() -> None:
        watermark = parts.account_stage.watermark
        for sweeper in parts.sweepers:
            n = await sweeper.sweep(watermark.value)
            if n:
                log.info("expired_idle_state", table=sweeper.table.name, keys=n, watermark=watermark.value,
                         idle_hours=parts.settings.idle_expiry_hours)
            await asyncio.sleep(0)


def _add_idle_sources(app: faust.App, parts: WorkerParts) -> None:
    """Every second (or fifth of ``DG_SOURCE_IDLE_S``), the usage-events partitions this worker owns that
    have gone quiet are announced idle to the link stage (``pipeline.worker.link_order``), so it does not
    wait for them."""
    usage = parts.settings.topic(USAGE_EVENTS)
    handled = parts.account_stage.sources.next_offset

    def caught_up(partition: int) -> bool:
        """Every message of the partition handled: its end offset (as the last fetch saw it) reached by
        what the account stage handled, or by the committed offset when it handled none since it started."""
        consumer = app.consumer
        tp = TP(usage, partition)
        try:
            high = consumer.highwater(tp)
        except Exception:  # not known yet (no fetch since the assignment)
            return False
        if high is None:
            return False
        committed = getattr(consumer, "_committed_offset", {}).get(tp)  # Faust keeps no public one
        return max(handled.get(partition, 0), committed or 0) >= high

    @app.timer(min(1.0, parts.settings.source_idle_s / 5))
    async def announce_idle_sources() -> None:
        owned = {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == usage}
        await parts.account_stage.announce_idle(owned, caught_up)


def create_app(settings: Settings, metrics: WorkerMetrics | None = None) -> faust.App:
    """Build the Faust app with its topics, tables, stages, agents and timers from the settings; its parts
    are ``app.dg`` (a ``WorkerParts``)."""
    metrics = metrics or default_metrics()
    app = _faust_app(settings)
    parts = _build(app, settings, metrics)
    _add_agents(app, parts)
    _add_health(app, parts, metrics)
    _add_sweeps(app, parts)
    _add_idle_sources(app, parts)
    app.dg = parts  # type: ignore[attr-defined]  # handles for tests and tools
    return app
