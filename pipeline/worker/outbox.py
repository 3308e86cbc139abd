"""What a batch sends: the wire to Kafka, the batch's outbox, and the dead-letter copies of bad input.

``Wire`` sends raw records straight through the app's producer; ``Outbox`` gathers a batch's outputs
(internal messages grouped per destination partition) and sends them together, then waits until Kafka
has acknowledged them all. ``dlq_headers`` and ``dlq_copy`` make the dead-letter copy of an input
message: its original bytes (cut to what a record may hold, with the size and SHA-256 of what was cut),
its reason and its source coordinates.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from typing import Any

import faust

from pipeline.detection.campaigns import SIGNALS_KEY
from pipeline.detection.messages import (
    EMPTY_BATCH,
    Finding,
    GroupSignal,
    LinkUpdate,
    encode_findings,
    encode_group_signals,
    encode_link_updates,
)
from pipeline.detection.partition import partition_for
from pipeline.worker.link_order import WM_HEADER, pairs_header

DLQ_REASON = "dlq.reason"
DLQ_TOPIC = "dlq.source.topic"
DLQ_PARTITION = "dlq.source.partition"
DLQ_OFFSET = "dlq.source.offset"
DLQ_REDACTED = "dlq.redacted"

KAFKA_MAX_MESSAGE_BYTES = 1_048_588
"""The largest record batch a topic takes (``max.message.bytes``: Kafka's default, set on every topic of
``schemas/topics.json``), and the producer's ``max_request_size`` (Faust's default, 1,000,000, was below
it: a DLQ copy of an input the broker had taken could not be sent, and the worker restarted on it)."""
DLQ_RECORD_MAX = KAFKA_MAX_MESSAGE_BYTES - 16 * 1024
"""The most key and value bytes of a DLQ copy: the rest of a record (headers, framing) fits in what is left."""
DLQ_REASON_MAX = 1000
DLQ_TRUNCATED = "dlq.truncated"
DLQ_ORIGINAL_SIZE = "dlq.original.size"
DLQ_ORIGINAL_SHA256 = "dlq.original.sha256"
DLQ_ORIGINAL_KEY_SIZE = "dlq.original.key.size"
DLQ_ORIGINAL_KEY_SHA256 = "dlq.original.key.sha256"


def dlq_headers(reason: str, topic: str, partition: int, offset: int) -> list[tuple[str, bytes]]:
    """The DLQ headers of the contract: reason and source coordinates, as UTF-8 bytes."""
    return [
        (DLQ_REASON, reason.encode("utf-8")),
        (DLQ_TOPIC, topic.encode("utf-8")),
        (DLQ_PARTITION, str(partition).encode("ascii")),
        (DLQ_OFFSET, str(offset).encode("ascii")),
    ]


def dlq_copy(key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]],
             limit: int = DLQ_RECORD_MAX) -> tuple[bytes | None, bytes | None]:
    """The key and value of a DLQ copy that fits in ``limit`` bytes: as they came, or cut short (the value
    first, then the key) with the original size and SHA-256 of what was cut in ``headers``, so a copy of
    any message the broker took can be sent, and the original can still be recognised."""
    k, v = key or b"", value or b""
    if len(k) + len(v) <= limit:
        return key, value
    cut = []
    if len(k) > limit // 2:
        headers += [(DLQ_ORIGINAL_KEY_SIZE, str(len(k)).encode("ascii")),
                    (DLQ_ORIGINAL_KEY_SHA256, hashlib.sha256(k).hexdigest().encode("ascii"))]
        key, k = k[:limit // 2], k[:limit // 2]
        cut.append("key")
    if len(k) + len(v) > limit:
        headers += [(DLQ_ORIGINAL_SIZE, str(len(v)).encode("ascii")),
                    (DLQ_ORIGINAL_SHA256, hashlib.sha256(v).hexdigest().encode("ascii"))]
        value = v[:limit - len(k)]
        cut.append("value")
    headers.append((DLQ_TRUNCATED, ",".join(cut).encode("ascii")))
    return key, value


@functools.lru_cache(maxsize=1 << 16)
def partition_of(key: str, partitions: int) -> int:
    """``partition_for``, remembered: the worker asks it for the same accounts and link keys all the time."""
    return partition_for(key, partitions)


class Wire:
    """Raw records straight through the app's producer: no Faust ``FutureMessage``, callbacks or sensors
    per record (they cost more than the detection). ``send`` returns the delivery future; tests replace it."""

    def __init__(self, app: faust.App) -> None:
        self.app = app

    async def send(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None,
                   headers: Any = None) -> Any:
        return await self.app.producer.send(topic, key, value, partition, None, headers)


class Outbox:
    """The batch's outgoing messages: sent together, then awaited until Kafka acknowledges them all.

    Link updates and findings are gathered per destination partition and leave as one message each."""

    def __init__(self, wire: Wire, link_topic: str, findings_topic: str, partitions: int,
                 signals_topic: str = "") -> None:
        self.wire = wire
        self.link_topic, self.findings_topic, self.partitions = link_topic, findings_topic, partitions
        self.signals_topic = signals_topic
        self.items: list[tuple[str, bytes | None, bytes | None, Any]] = []
        self.signals: list[GroupSignal] = []
        self.links: dict[int, list[LinkUpdate]] = {}
        self.findings: dict[int, list[Finding]] = {}
        self.watermarks: list[tuple[int, int]] = []  # (usage-events partition, event time) to announce
        self.signal_watermarks: list[tuple[int, int]] = []  # (link partition, frontier) to announce
        self.tripped = False  # the invalid-input breaker fired during this batch
        self.accepted = 0  # input events handed to detection (counted in the metrics once per batch)

    def add(self, topic: str, key: bytes | None, value: bytes | None, headers: Any = None) -> None:
        self.items.append((topic, key, value, headers))

    def add_link_update(self, upd: LinkUpdate) -> None:
        self.links.setdefault(partition_of(upd.key, self.partitions), []).append(upd)

    def add_finding(self, f: Finding) -> None:
        self.findings.setdefault(partition_of(f.account, self.partitions), []).append(f)

    def add_signal(self, s: GroupSignal) -> None:
        self.signals.append(s)

    async def deliver(self) -> None:
        """Send everything gathered, then wait until Kafka has acknowledged it all; the outbox is empty after."""
        send = self.wire.send
        futures = [await send(topic, key, value, None, headers) for topic, key, value, headers in self.items]
        if self.watermarks:
            # every link partition hears how far these sources have got, on the last message it gets from
            # this batch (after the updates it carries: ``pipeline.worker.link_order``)
            wm = pairs_header(WM_HEADER, self.watermarks)
            for partition in range(self.partitions):
                raws = encode_link_updates(self.links.get(partition, [])) or [EMPTY_BATCH]
                for i, raw in enumerate(raws):
                    futures.append(await send(self.link_topic, None, raw, partition,
                                              wm if i == len(raws) - 1 else None))
            self.watermarks = []
        else:
            for partition, updates in sorted(self.links.items()):
                for raw in encode_link_updates(updates):
                    futures.append(await send(self.link_topic, None, raw, partition))
        for partition, findings in sorted(self.findings.items()):
            for raw in encode_findings(findings):
                futures.append(await send(self.findings_topic, None, raw, partition))
        if self.signals or self.signal_watermarks:
            # the campaign stage hears how far these link partitions have got on the last message
            key, partition = SIGNALS_KEY.encode("utf-8"), partition_of(SIGNALS_KEY, self.partitions)
            raws = encode_group_signals(self.signals) or [EMPTY_BATCH]
            swm = pairs_header(WM_HEADER, self.signal_watermarks) if self.signal_watermarks else None
            for i, raw in enumerate(raws):
                futures.append(await send(self.signals_topic, key, raw, partition,
                                          swm if i == len(raws) - 1 else None))
            self.signals.clear()
            self.signal_watermarks = []
        self.items.clear()
        self.links.clear()
        self.findings.clear()
        if futures:
            await asyncio.gather(*futures)
