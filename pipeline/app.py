"""The Faust application: topics, tables and agents of the streaming pipeline, built from Settings.

Agents are thin: they decode raw bytes themselves (so a bad message reaches the dead-letter topic with
its original bytes), call the pure detection engine, and send what it returns. Agent concurrency stays
at 1 (faust-streaming #606: higher concurrency can commit past an unprocessed message).
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

import faust

from pipeline import codec
from pipeline.detection import Engine
from pipeline.logs import get_logger
from pipeline.settings import Settings
from pipeline.topics import load_manifest

log = get_logger("worker")

DLQ_REASON = "dlq.reason"
DLQ_TOPIC = "dlq.source.topic"
DLQ_PARTITION = "dlq.source.partition"
DLQ_OFFSET = "dlq.source.offset"


class TableState(MutableMapping[str, bytes]):
    """Engine state on a Faust table: string account ids outside, raw bytes keys inside."""

    def __init__(self, table: Any) -> None:
        self.table = table

    def __getitem__(self, key: str) -> bytes:
        value = self.table[key.encode("utf-8")]
        if value is None:
            raise KeyError(key)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        value = self.table.get(key.encode("utf-8"))
        return default if value is None else value

    def __setitem__(self, key: str, value: bytes) -> None:
        self.table[key.encode("utf-8")] = value

    def __delitem__(self, key: str) -> None:
        del self.table[key.encode("utf-8")]

    def __iter__(self) -> Iterator[str]:
        for k in self.table:
            yield k.decode("utf-8") if isinstance(k, bytes) else k

    def __len__(self) -> int:
        return len(self.table)


def dlq_headers(reason: str, topic: str, partition: int, offset: int) -> list[tuple[str, bytes]]:
    """The DLQ headers of the contract: reason and source coordinates, as UTF-8 bytes."""
    return [
        (DLQ_REASON, reason.encode("utf-8")),
        (DLQ_TOPIC, topic.encode("utf-8")),
        (DLQ_PARTITION, str(partition).encode("ascii")),
        (DLQ_OFFSET, str(offset).encode("ascii")),
    ]


def create_app(settings: Settings) -> faust.App:
    """Build the Faust app with its topics, table and agents from the settings."""
    manifest = load_manifest()

    def partitions(name: str) -> int:
        return settings.partitions or int(manifest[name]["partitions"])

    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{b.strip()}" for b in settings.bootstrap.split(",") if b.strip()],
        store=settings.store,
        datadir=str(settings.store_dir),
        autodiscover=False,
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
        topic_partitions=partitions("usage-events"),
        topic_replication_factor=settings.replication_factor,
        web_port=settings.web_port,
        web_host="127.0.0.1",
        key_serializer="raw",
        value_serializer="raw",
    )

    def topic(name: str) -> faust.TopicT:
        return app.topic(
            settings.topic(name),
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=partitions(name),
            internal=False,
        )

    events_topic = topic("usage-events")
    outputs = {name: topic(name) for name in ("anomaly-alerts", "enforcement-actions")}
    dlq_topic = topic("usage-events-dlq")

    account_table = app.Table(
        "account-state",
        default=None,
        key_type=bytes,  # bytes → the "raw" codec: state is serialised by the detection code itself
        value_type=bytes,
        partitions=partitions("usage-events"),
    )
    engine_box: dict[str, Engine] = {}

    def engine() -> Engine:
        if "engine" not in engine_box:
            engine_box["engine"] = Engine.from_config(settings, state=TableState(account_table))
        return engine_box["engine"]

    async def to_dlq(message: Any, reason: str) -> None:
        await dlq_topic.send(
            key=message.key,
            value=message.value,
            headers=dlq_headers(reason, message.topic, message.partition, message.offset),
        )
        log.warning(
            "event_to_dlq", reason=reason, topic=message.topic, partition=message.partition,
            offset=message.offset,
        )

    @app.agent(events_topic, concurrency=1)
    async def process_events(stream: faust.StreamT) -> None:
        async for event in stream.events():
            message = event.message
            try:
                usage = codec.decode_event(message.value, max_bytes=settings.max_message_bytes)
            except codec.CodecError as exc:
                await to_dlq(message, exc.reason)
                continue
            try:
                outs = engine().process(usage)
            except Exception as exc:  # a detection bug must not lose the event: keep it in the DLQ
                log.exception("processing_error", account_id=usage["account_id"], offset=message.offset)
                await to_dlq(message, f"processing error: {type(exc).__name__}: {exc}")
                continue
            for out in outs:
                await outputs[out.topic].send(key=out.key.encode("utf-8"), value=codec.encode(out.value))
                log.info(
                    "alert" if out.topic == "anomaly-alerts" else "action",
                    account_id=usage["account_id"], kind=out.value.get("kind"),
                    score=out.value.get("score"), severity=out.value.get("severity"),
                    topic=message.topic, partition=message.partition, offset=message.offset,
                )

    app.dg_parts = {  # type: ignore[attr-defined]  # handles for tests and tools
        "events_topic": events_topic, "dlq_topic": dlq_topic, "outputs": outputs,
        "account_table": account_table, "process_events": process_events,
    }
    return app
