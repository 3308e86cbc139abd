"""Send events to the input topic with kafka-python: keyed by account, msgpack, acks=all.

``send_events`` (and ``send_records`` for bytes already encoded) is the one loop that writes
usage-events: ``produce`` sends a file with it, ``simulate --topic`` and the demo a scenario.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
from tqdm import tqdm

from pipeline.contract import codec
from pipeline.contract.eventfile import (
    BadRecord,
    EventFileError,
    count_records,
    iter_raw_records,
    read_events,
)
from pipeline.contract.manifest import USAGE_EVENTS
from pipeline.settings import Settings

MAX_LISTED_BAD = 20


class ProduceError(Exception):
    """The events could not be read or Kafka could not take them; ``code`` is the CLI exit code."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class ProduceStats:
    sent: int = 0
    bad: int = 0


def make_producer(settings: Settings, **extra: Any) -> Any:
    """A kafka-python producer for outputs that matter: acks=all, idempotent, batched."""
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    from pipeline.kafka.config import kafka_python_config

    try:
        return KafkaProducer(
            **kafka_python_config(settings),
            acks="all",
            enable_idempotence=True,
            linger_ms=20,
            batch_size=256 * 1024,
            compression_type=None,
            **extra,
        )
    except KafkaError as exc:
        raise ProduceError(f"cannot connect to Kafka at {settings.bootstrap}: {exc}", 3) from exc


def _raw_key(obj: Any) -> bytes | None:
    acc = obj.get("account_id") if isinstance(obj, dict) else None
    return acc.encode("utf-8", "replace") if isinstance(acc, str) else None


def send_records(settings: Settings, records: Iterable[tuple[bytes | None, bytes]], *, desc: str = "",
                 progress: bool = False, total: int | None = None) -> int:
    """Send ``(key, value)`` pairs to the input topic with one producer (``make_producer``), flush and close
    it; return how many were sent. ``progress`` shows a bar on stderr (``total`` gives it an ETA)."""
    topic = settings.topic(USAGE_EVENTS)
    sent = 0
    producer = make_producer(settings)
    try:
        with tqdm(desc=desc or f"produce to {topic}", unit=" ev", disable=not progress, file=sys.stderr,
                  total=total) as bar:
            for key, value in records:
                producer.send(topic, key=key, value=value)
                sent += 1
                bar.update(1)
        producer.flush(timeout=120)
    finally:
        producer.close(timeout=30)
    return sent


def send_events(settings: Settings, events: Iterable[Mapping[str, Any]], *, desc: str = "",
                progress: bool = False, total: int | None = None) -> int:
    """Send usage events to the input topic, keyed by account id, msgpack-encoded (``send_records``)."""
    records = ((ev["account_id"].encode("utf-8"), codec.encode(ev)) for ev in events)
    return send_records(settings, records, desc=desc, progress=progress, total=total)


def produce_file(settings: Settings, path: Path, *, raw: bool = False, progress: bool = True) -> ProduceStats:
    """Send every event of ``path``; bad records are reported on stderr and skipped (unless ``raw``)."""
    stats = ProduceStats()

    def on_bad(bad: BadRecord) -> None:
        stats.bad += 1
        if stats.bad <= MAX_LISTED_BAD:
            tqdm.write(f"skipped {bad}", file=sys.stderr)
        elif stats.bad == MAX_LISTED_BAD + 1:
            tqdm.write("… more bad records not listed", file=sys.stderr)

    try:
        records: Any
        if raw:
            records = ((_raw_key(o), r if r else msgpack.packb(o, use_bin_type=True))
                       for _, r, o in iter_raw_records(path))
        else:
            records = ((ev["account_id"].encode("utf-8"), codec.encode(ev)) for ev in read_events(path, on_bad))
        total = count_records(path) if progress else None  # a total, so the bar shows an ETA
        stats.sent = send_records(settings, records, desc=f"produce {path.name}", progress=progress, total=total)
    except EventFileError as exc:
        raise ProduceError(str(exc), 2) from exc
    return stats
