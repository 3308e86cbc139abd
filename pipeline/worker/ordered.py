"""The two stages whose input comes from several partitions and is applied in event-time order
(``pipeline.worker.link_order``): ``LinkStage`` (link updates from every usage-events partition) and
``CampaignStage`` (the link groups' signals from every link partition), on a common ``OrderedStage``.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from pipeline.detection import Engine
from pipeline.detection.messages import decode_group_signals, decode_link_updates
from pipeline.detection.ordering import Aligner, signal_key
from pipeline.logs import get_logger
from pipeline.worker.exits import fatal
from pipeline.worker.link_order import PartitionOrder
from pipeline.worker.outbox import Outbox, partition_of
from pipeline.worker.stages import Stage, StageContext
from pipeline.worker.state import BatchStore
from pipeline.worker.tables import PartitionedTable

log = get_logger("worker")

RELEASE_CHUNK = 512
"""Held items (link updates, group signals) applied between two checks of a batch's changed state
(``Stage.more``)."""


class OrderedStage(Stage):
    """A stage whose input comes from several source partitions and is applied in event-time order,
    whatever order those were read in: each input partition's ``PartitionOrder`` holds the items until
    every source has passed them (``pipeline.worker.link_order``), and is written to the ``link-order``
    table after the stage's own state at each checkpoint. Subclasses say how to read a message
    (``decode``), where an item came from (``source_of``), its order (``aligner``) and what applying one
    does (``apply``)."""

    prefix = b""

    def __init__(self, ctx: StageContext, engine: Engine, store: BatchStore, order_table: PartitionedTable) -> None:
        super().__init__(ctx, engine, (store,))
        self.store = store
        self.order_table = order_table
        self.orders: dict[int, PartitionOrder] = {}
        self.releasing: PartitionOrder | None = None  # the order whose freed items ``more`` applies
        order_table.caches.append(self)  # a rebalance or a recovery: read the orders back from the table

    def decode(self, raw: bytes) -> list[Any]:
        raise NotImplementedError

    def source_of(self, item: Any) -> int:
        raise NotImplementedError

    def aligner(self) -> Aligner:
        raise NotImplementedError

    def apply_one(self, outbox: Outbox, item: Any, partition: int, offset: int) -> None:
        """Apply one item of input partition ``partition`` (that came in the message at ``offset``)."""
        raise NotImplementedError

    def apply(self, outbox: Outbox, items: list[tuple[Any, int]], partition: int) -> None:
        """Apply items (each with the offset of the message it came in). An item whose application raises
        is logged and skipped: a bug must not stop the stage (a released item has no message to send to
        the DLQ), and the store's cache is dropped, since the failed call may have changed an object half-way."""
        for item, offset in items:
            try:
                self.apply_one(outbox, item, partition, offset)
            except Exception:
                log.exception("processing_error", stage=self.name, key=item.key, partition=partition, offset=offset)
                self.store.cache.clear()

    def pop(self, key: str) -> bool:  # the table's cache protocol: orders are dropped whole, in ``clear``
        return False

    def clear(self) -> None:
        self.orders.clear()
        self.releasing = None
        self.ctx.metrics.set_order_held(self.name, 0)  # what it held is read back when its partitions are

    def _order(self, partition: int) -> PartitionOrder:
        order = self.orders.get(partition)
        if order is None:
            table = self.order_table
            order = self.orders[partition] = PartitionOrder(
                partition, self.aligner(), self.decode, self.source_of, self.prefix,
            ).restore(lambda key: table.get_raw(partition, key))
        return order

    def held(self) -> int:
        """Items held for event-time order on this worker."""
        return sum(len(o.aligner) for o in self.orders.values())

    def handle(self, outbox: Outbox, message: Any) -> None:
        self.store.partition = message.partition
        order = self._order(message.partition)
        late = order.take(message.offset, message.value, getattr(message, "headers", None))
        if late is None:
            return  # read before: its items are held, or applied
        if late:
            self.ctx.metrics.order_late(self.name, len(late))
            self.apply(outbox, [(x, message.offset) for x in late], message.partition)
        self.releasing = order

    def more(self, outbox: Outbox) -> bool:
        """Apply up to ``RELEASE_CHUNK`` of the items the last message set free (a watermark can free many
        at once: a partition that was far behind catching up)."""
        order = self.releasing
        if order is None:
            return False
        self.store.partition = order.partition
        chunk = order.release(RELEASE_CHUNK)
        self.apply(outbox, chunk, order.partition)
        if len(chunk) < RELEASE_CHUNK:
            self.releasing = None
        return self.releasing is not None

    async def checkpoint(self, outbox: Outbox) -> None:
        await super().checkpoint(outbox)
        writes = [w for order in self.orders.values() for w in order.writes()]
        try:
            await self.order_table.put_many(writes)
        except Exception as exc:
            fatal(f"writing the {self.name} stage's order", exc)
        self.ctx.metrics.set_order_held(self.name, self.held())


class LinkStage(OrderedStage):
    """Link updates (an account's summary, sent to each of its link keys), in event-time order: the engine
    keeps each link group and returns a signal for a group judged a campaign, sent to the campaign stage
    with this link partition's frontier (``dg.wm``: every update before it applied), which is the campaign
    stage's watermark for this partition."""

    name = "link"
    prefix = b"l"

    def __init__(self, ctx: StageContext, engine: Engine, links: BatchStore, order_table: PartitionedTable) -> None:
        super().__init__(ctx, engine, links, order_table)
        self.links = links

    def decode(self, raw: bytes) -> list[Any]:
        return decode_link_updates(raw)

    def source_of(self, item: Any) -> int:
        return partition_of(item.summary.account, self.ctx.partitions)

    def aligner(self) -> Aligner:
        return Aligner(self.ctx.partitions, self.engine.cfg.link_order_slack_ms)

    def apply_one(self, outbox: Outbox, item: Any, partition: int, offset: int) -> None:
        signal = self.engine.on_link_update(item)
        if signal is not None:
            outbox.add_signal(signal)

    async def checkpoint(self, outbox: Outbox) -> None:
        outbox.signal_watermarks = [(p, f) for p, o in sorted(self.orders.items())
                                    if (f := o.frontier_news()) is not None]
        await super().checkpoint(outbox)


class CampaignStage(OrderedStage):
    """Signals of link groups judged campaigns, in event-time order across the link partitions they come
    from: the engine merges groups that name the same accounts into one campaign and returns its alerts,
    and findings for the named members (sent to their partitions)."""

    name = "campaign"
    prefix = b"c"

    def __init__(self, ctx: StageContext, engine: Engine, campaigns: BatchStore, order_table: PartitionedTable) -> None:
        super().__init__(ctx, engine, campaigns, order_table)
        self.campaigns = campaigns
        self.topic = ctx.signals_topic

    def decode(self, raw: bytes) -> list[Any]:
        return decode_group_signals(raw)

    def source_of(self, item: Any) -> int:
        return partition_of(item.key, self.ctx.partitions)

    def aligner(self) -> Aligner:
        return Aligner(self.ctx.partitions, 0, key=signal_key)

    def apply_one(self, outbox: Outbox, item: Any, partition: int, offset: int) -> None:
        outs, findings = self.engine.on_group_signal(item)
        source = SimpleNamespace(topic=self.topic, partition=partition, offset=offset)
        for out in outs:
            self.emit(outbox, out, source)
        for f in findings:
            outbox.add_finding(f)
