"""The worker's three stages, each fed batches by its agent: decode, apply (the engine), emit, write out.

- ``AccountStage`` reads the account-keyed input (usage events, findings, analyst verdicts) and keeps the
  account and policy state;
- ``LinkStage`` reads link updates and keeps the link groups;
- ``CampaignStage`` reads the link groups' signals and keeps the campaigns.

The last two are ``OrderedStage``s (``pipeline.worker.ordered``): their input comes from several
partitions, and they apply it in event-time order, whatever order they read it in.

A stage handles each message of a batch into an ``Outbox`` and the engine's ``BatchStore``s, then
``Stage.checkpoint`` writes the batch out: produce (the outputs, acknowledged), flush (the state), and
Faust commits the input offsets once the batch is done. No maths here: thresholds and scores are the
engine's (``pipeline.detection``); a stage only decodes, checks where a message came from, and sends.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import faust

from pipeline.contract import admission, codec
from pipeline.contract.manifest import FINDINGS, USAGE_EVENTS, VERDICTS
from pipeline.contract.privacy import redact
from pipeline.contract.verdicts import decode_verdict
from pipeline.detection import Engine
from pipeline.detection.engine import ACTIONS, ALERTS, Output
from pipeline.detection.messages import (
    EMPTY_BATCH,
    decode_findings,
)
from pipeline.logs import get_logger
from pipeline.settings import Settings
from pipeline.worker import stall
from pipeline.worker.exits import EXIT_INVALID_FLOOD, fatal
from pipeline.worker.guard import InvalidRateGuard
from pipeline.worker.link_order import IDLE_HEADER, SourceClock, pairs_header
from pipeline.worker.observability import WorkerMetrics
from pipeline.worker.outbox import (
    DLQ_REASON_MAX,
    DLQ_REDACTED,
    Outbox,
    Wire,
    dlq_copy,
    dlq_headers,
    partition_of,
)
from pipeline.worker.state import LINK_CACHE, BatchStore

log = get_logger("worker")

WRONG_PARTITION = admission.WRONG_PARTITION
BATCH_MAX = 2000
BATCH_WITHIN_S = 0.1
"""How long an agent gathers input before it works on it (at most ``BATCH_MAX`` messages). Every batch
writes each state it touched once, so a longer window writes less state per event; 0.1 s adds at most
that much per stage to the event-to-alert latency (``bench/latency.py``; the bytes per event at two
window lengths are in ``bench/README.md``)."""
BATCH_STATE_WEIGHT = LINK_CACHE
"""The most changed state a batch holds before it writes it (weighed as in the caches: 1 per account
state, members + 8 per link group): about what the caches keep, overshot by one input message at most.
A batch that reaches it delivers its outputs so far and writes its state, then goes on; its input is
acknowledged at the end, as always. This is safe for the reason a crash between batches is: each state
records the input offsets it has applied, so a redelivery skips them, and the outputs of what it
applied were acknowledged first.

The link agent needs it: its batch takes up to ``BATCH_MAX`` messages of up to 256 KiB of updates each.
When every account of a large population first reports to its link keys (pass 3 of ``bench/state.py``),
one batch would otherwise hold tens of thousands of decoded groups and as many changelog writes in
flight, and the worker's memory doubles; the bound costs speed there (a large group that many parts of
a batch touch is written once per part), and little on the standard file, whose batches rarely reach it.
The figures are in ``bench/README.md``."""


class Emitter:
    """Puts what the engine decided into a batch's outbox, with one log line and metric per decision:
    alerts and actions (an action with the id of the key that signed it), and DLQ copies of bad input."""

    def __init__(self, settings: Settings, metrics: WorkerMetrics, engine: Engine, out_names: dict[str, str],
                 dlq_name: str, key_id_headers: list[tuple[str, bytes]]) -> None:
        self.settings, self.metrics = settings, metrics
        self.out_names, self.dlq_name, self.key_id_headers = out_names, dlq_name, key_id_headers
        cfg = engine.cfg
        self.thresholds = {
            ("account_behaviour", "medium"): cfg.account_medium, ("account_behaviour", "high"): cfg.account_high,
            ("account_behaviour", "critical"): cfg.account_critical,
            ("coordinated_campaign", "high"): cfg.campaign_high,
            ("coordinated_campaign", "critical"): cfg.campaign_critical}

    def emit(self, outbox: Outbox, out: Output, source: Any) -> None:
        """An alert or action of the engine, decided on the message ``source``."""
        outbox.add(self.out_names[out.topic], out.key.encode("utf-8"), codec.encode(out.value),
                   self.key_id_headers if out.topic == ACTIONS else None)
        v = out.value
        where = {"topic": source.topic, "partition": source.partition, "offset": source.offset}
        if out.topic == ALERTS:
            self.metrics.alert(v["severity"], v["kind"], v["ts"])
            log.info("alert", account_id=v["account_id"], campaign_id=v["campaign_id"], kind=v["kind"],
                     severity=v["severity"], score=v["score"],
                     threshold=self.thresholds.get((v["kind"], v["severity"])), alert_id=v["alert_id"],
                     reasons=[r["code"] for r in v["reasons"]], **where)
        else:
            self.metrics.action(v["action"], v["mode"])
            log.info("action", account_id=v["account_id"], action=v["action"], mode=v["mode"],
                     action_id=v["action_id"], reasons=v["reason_codes"], **where)

    def to_dlq(self, outbox: Outbox, message: Any, reason: str) -> None:
        """A copy of ``message`` for the dead-letter topic, with ``reason`` (its text redacted if asked)."""
        if len(reason) > DLQ_REASON_MAX:
            reason = reason[:DLQ_REASON_MAX] + "..."
        value, headers = message.value, dlq_headers(reason, message.topic, message.partition, message.offset)
        if self.settings.dlq_redact_text and value:
            value, redacted = redact(value)
            if redacted:
                headers.append((DLQ_REDACTED, b"true"))
        key, value = dlq_copy(message.key, value, headers)
        outbox.add(self.dlq_name, key, value, headers)
        self.metrics.event_invalid(reason)
        log.warning("to_dlq", reason=reason, topic=message.topic, partition=message.partition,
                    offset=message.offset)


@dataclass
class StageContext:
    """What the stages share: where they send, how they report, and the input guard."""

    settings: Settings
    wire: Wire
    partitions: int
    link_topic: str
    findings_topic: str
    signals_topic: str
    emitter: Emitter
    guard: InvalidRateGuard
    watchdog: stall.Watchdog
    metrics: WorkerMetrics

    def outbox(self) -> Outbox:
        return Outbox(self.wire, self.link_topic, self.findings_topic, self.partitions, self.signals_topic)


class Stage:
    """A stage: its agent hands it batches (``run``); each message is handled into the batch's outbox and
    the engine's stores (``handle``, per stage), and the batch is written out by ``checkpoint``."""

    name = "stage"

    def __init__(self, ctx: StageContext, engine: Engine, stores: tuple[BatchStore, ...]) -> None:
        self.ctx, self.engine, self.stores = ctx, engine, stores
        self.emit, self.to_dlq = ctx.emitter.emit, ctx.emitter.to_dlq

    def handle(self, outbox: Outbox, message: Any) -> None:
        """Decode one input message, apply it to the engine, put what it returns in ``outbox``."""
        raise NotImplementedError

    def more(self, outbox: Outbox) -> bool:
        """Work the last message set free, a part at a time (the link stage's held updates): True while
        some is left, so that a batch can write out between parts."""
        return False

    async def run(self, stream: faust.StreamT) -> None:
        """The agent's body: batches of up to ``BATCH_MAX`` messages gathered for ``BATCH_WITHIN_S``."""
        # take_events acks the batch's events only after this loop body: outputs, then state, then ack
        async for events in stream.take_events(BATCH_MAX, within=BATCH_WITHIN_S):  # type: ignore[attr-defined]
            await self.process_batch([e.message for e in events])

    async def process_batch(self, messages: list[Any]) -> None:
        """Handle every message, checkpointing whenever the changed state reaches ``BATCH_STATE_WEIGHT``
        and once at the end. A message whose handling raises goes to the DLQ (a bug must not lose it)."""
        t0 = time.perf_counter()
        self.ctx.watchdog.batch_ran()
        outbox = self.ctx.outbox()
        for message in messages:
            try:
                self.handle(outbox, message)
            except Exception as exc:
                log.exception("processing_error", topic=message.topic, partition=message.partition,
                              offset=message.offset)
                # the exception's text may quote the message: the reason names its type only (it is logged)
                self.to_dlq(outbox, message, f"processing error: {type(exc).__name__}")
                for store in self.stores:  # the failed call may have changed a cached object half-way
                    store.cache.clear()
            if sum(store.pending_weight for store in self.stores) >= BATCH_STATE_WEIGHT:
                await self.checkpoint(outbox)
            while self.more(outbox):  # the held items this message set free, a chunk at a time
                if sum(store.pending_weight for store in self.stores) >= BATCH_STATE_WEIGHT:
                    await self.checkpoint(outbox)
        await self.checkpoint(outbox)
        self.ctx.metrics.observe_processing(time.perf_counter() - t0)

    async def checkpoint(self, outbox: Outbox) -> None:
        """Write out what the batch has done so far, in this order:

        1. produce: send the outbox and wait until Kafka has acknowledged every output (acks=all);
        2. flush: write the changed state of each store, in ``stores`` order (changelog first, then the
           local store: ``PartitionedTable.put_many``);
        3. commit: left to Faust, which acks the batch's input once ``run``'s loop body returns, and
           commits those offsets.

        A crash before 2 redelivers the input against the old state, which reproduces the same outputs
        with the same ids; a crash after it finds each input's offset applied in the state and skips it.
        Any failure here exits the process (``fatal``) so that 3 never happens for a batch not written."""
        ctx = self.ctx
        try:
            await outbox.deliver()
            if outbox.tripped:
                fatal("too much invalid input", None, EXIT_INVALID_FLOOD,
                      invalid_share=round(ctx.guard.ratio, 3), limit=ctx.settings.max_invalid_ratio,
                      window=ctx.settings.invalid_window,
                      cause="most recent input events are invalid: check the producers upstream (a bad deploy?); "
                            "the invalid ones are in the DLQ with reasons; raise DG_MAX_INVALID_RATIO to go on")
            for store in self.stores:
                await store.flush()
        except Exception as exc:
            fatal("delivering a batch's outputs", exc)
        if outbox.accepted:
            ctx.metrics.event_accepted(outbox.accepted)
            outbox.accepted = 0


class AccountStage(Stage):
    """Usage events, findings and analyst verdicts of the accounts of one partition.

    An event is decoded from raw bytes (invalid: to the DLQ, counted by the invalid-input guard), checked
    to be on its account's partition and not ahead of its message's broker time, and advances the
    ``watermark`` (the clock of state expiry: event time, never beyond broker time). The engine returns
    the account's link updates and its alerts and actions. Findings (from the link and campaign stages)
    and verdicts (signed by an analyst) go to the engine's policy."""

    name = "account"

    def __init__(self, ctx: StageContext, engine: Engine, accounts: BatchStore, policy: BatchStore,
                 segments: tuple[BatchStore, ...], verdict_keys: dict[str, bytes]) -> None:
        # policy state is written before account state: after a crash between the two, the replayed events
        # find their findings already decided (no output changes); the other order would apply no event twice
        # but leave the policy unaware of alerts it had sent, to send their ids again with other contents.
        # The per-segment stores (score ranks, population models) go first of all: a summary they counted
        # before a crash gets its first answer again and counts nothing twice (``calibration.ScoreRanks``,
        # ``population.Segment``), so the replayed events decide and tell as before
        super().__init__(ctx, engine, (*segments, policy, accounts))
        self.accounts, self.policy, self.segments = accounts, policy, segments
        self.verdict_keys = verdict_keys  # none: every verdict is refused
        self.watermark = admission.Watermark()
        self.sources = SourceClock(idle_after_s=ctx.settings.source_idle_s)  # how far each partition has got
        self.lock = asyncio.Lock()  # a batch, or an idle announcement: never both at once
        topic = ctx.settings.topic
        self.handlers: dict[str, Callable[[Outbox, Any], None]] = {
            topic(USAGE_EVENTS): self.on_event, topic(FINDINGS): self.on_findings, topic(VERDICTS): self.on_verdict}

    async def process_batch(self, messages: list[Any]) -> None:
        async with self.lock:
            await super().process_batch(messages)

    async def checkpoint(self, outbox: Outbox) -> None:
        outbox.watermarks = self.sources.take_advanced()
        await super().checkpoint(outbox)

    async def announce_idle(self, owned: set[int], caught_up: Callable[[int], bool]) -> None:
        """Tell every link partition which of the usage-events partitions ``owned`` by this worker have
        had no events for a while and nothing more to read (``caught_up``), so that the link stage does
        not wait for them (``link_order``). Never during a batch: all the updates of an idle partition's
        events have been delivered before."""
        async with self.lock:
            idle = self.sources.gone_idle(owned, caught_up)
            if not idle:
                return
            ctx = self.ctx
            headers = pairs_header(IDLE_HEADER, idle)
            try:
                futures = [await ctx.wire.send(ctx.link_topic, None, EMPTY_BATCH, p, headers)
                           for p in range(ctx.partitions)]
                await asyncio.gather(*futures)
            except Exception as exc:
                fatal("announcing idle partitions to the link stage", exc)
            log.debug("sources_idle", partitions=[p for p, _ in idle])

    def handle(self, outbox: Outbox, message: Any) -> None:
        self.accounts.partition = self.policy.partition = message.partition
        for store in self.segments:
            store.partition = message.partition
        handler = self.handlers.get(message.topic)
        if handler is not None:
            handler(outbox, message)

    def _misplaced(self, key: str, message: Any) -> bool:
        return partition_of(key, self.ctx.partitions) != message.partition

    def on_event(self, outbox: Outbox, message: Any) -> None:
        settings = self.ctx.settings
        self.sources.next_offset[message.partition] = message.offset + 1
        try:
            ev = codec.decode_event(message.value, max_bytes=settings.max_message_bytes)
        except codec.CodecError as exc:
            self.to_dlq(outbox, message, exc.reason)
            if self.ctx.guard.record(valid=False):
                outbox.tripped = True
            return
        self.ctx.guard.record(valid=True)
        if self._misplaced(ev["account_id"], message):
            self.to_dlq(outbox, message, WRONG_PARTITION)
            return
        broker_ms = admission.message_ms(message)
        if admission.in_future(ev["ts"], broker_ms, settings.max_event_skew_ms):
            self.to_dlq(outbox, message, admission.TS_IN_FUTURE)
            return
        self.watermark.advance(ev["ts"], broker_ms)
        self.sources.saw(message.partition, ev["ts"])
        res = self.engine.on_event(ev, message.partition, message.offset)
        if res.duplicate:
            self.ctx.metrics.event_duplicate()
            return
        if res.late:
            self.ctx.metrics.event_late()
            log.info("late_event", account_id=ev["account_id"], ts=ev["ts"], topic=message.topic,
                     partition=message.partition, offset=message.offset)
            return
        outbox.accepted += 1
        for upd in res.links:
            outbox.add_link_update(upd)
        for out in res.outputs:
            self.emit(outbox, out, message)

    def on_findings(self, outbox: Outbox, message: Any) -> None:
        findings = decode_findings(message.value)
        if any(self._misplaced(f.account, message) for f in findings):
            self.to_dlq(outbox, message, WRONG_PARTITION)
            return
        for finding in findings:
            for out in self.engine.on_finding(finding):
                self.emit(outbox, out, message)

    def on_verdict(self, outbox: Outbox, message: Any) -> None:
        try:
            verdict = decode_verdict(message.value, self.verdict_keys)
        except codec.CodecError as exc:
            self.to_dlq(outbox, message, f"verdict: {exc.reason}")
            log.warning("verdict", outcome="refused", reason=exc.reason, partition=message.partition,
                        offset=message.offset)
            return
        about = {"account_id": verdict["account_id"], "verdict": verdict["verdict"],
                 "alert_id": verdict["alert_id"], "kind": verdict["kind"], "campaign_id": verdict["campaign_id"],
                 "analyst": verdict["analyst"], "partition": message.partition, "offset": message.offset}
        if self._misplaced(verdict["account_id"], message):
            self.to_dlq(outbox, message, WRONG_PARTITION)
            log.warning("verdict", outcome="refused", reason=WRONG_PARTITION, **about)
            return
        refused, outs = self.engine.on_verdict(verdict)
        if refused is not None:
            self.to_dlq(outbox, message, f"verdict: {refused}")
            log.warning("verdict", outcome="refused", reason=refused, **about)
        else:
            log.info("verdict", outcome="accepted", lifted=bool(outs), **about)
            for out in outs:  # a false positive lifts the account's active actions
                self.emit(outbox, out, message)
