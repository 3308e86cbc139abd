"""``python -m pipeline check-partitioning``: find messages of an account-keyed topic on the wrong partition.

Producers must key account messages by the account id and partition by murmur2 of the key
(:func:`pipeline.detection.partition.partition_for`, Kafka's Java client and kafka-python default;
librdkafka needs ``partitioner=murmur2_random``). The worker sends a usage event or verdict found on
another partition than its account's to the DLQ as ``wrong_partition``; this check finds such producers
from a sample of the topic, before or after the fact.

A message is misplaced when it has no key, when its key is not UTF-8, when murmur2 of its key names
another partition, or when its value's ``account_id`` is not its key (that account's partition is the
one the worker checks).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pipeline.detection.partition import partition_for
from pipeline.kafka.tail import decode_value

__all__ = ["Misplaced", "Report", "check_messages", "is_account_keyed"]


@dataclass(frozen=True)
class Misplaced:
    """One message on the wrong partition, and why."""

    partition: int
    offset: int
    key: str | None
    problem: str

    def __str__(self) -> str:
        return f"partition {self.partition} offset {self.offset} key {self.key!r}: {self.problem}"


@dataclass
class Report:
    topic: str
    partitions: int
    checked: int = 0
    misplaced: list[Misplaced] = field(default_factory=list)


def is_account_keyed(entry: dict[str, Any]) -> bool:
    """Whether a manifest entry's messages are keyed by account id (campaign alerts by campaign id)."""
    return str(entry.get("key", "")).startswith("account_id")


def _problem(key: bytes | None, value: bytes | None, partition: int, n_partitions: int) -> tuple[str | None, str]:
    """``(key text, problem)``, the problem empty when the message is where it belongs."""
    if key is None:
        return None, "no key (an account's messages must be keyed by its account id)"
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError:
        return repr(key)[:80], "the key is not UTF-8"
    expected = partition_for(text, n_partitions)
    if expected != partition:
        return text, (f"murmur2 of the key gives partition {expected} of {n_partitions} (was the producer's "
                      "partitioner murmur2? librdkafka needs partitioner=murmur2_random)")
    _, decoded, _ = decode_value(value)
    account = decoded.get("account_id") if isinstance(decoded, dict) else None
    if isinstance(account, str) and account != text:
        where = partition_for(account, n_partitions)
        return text, (f"keyed {text!r} but its account_id is {account!r} (partition {where}): "
                      "key every message by its account id")
    return text, ""


def check_messages(topic: str, n_partitions: int, messages: Iterable[Any]) -> Report:
    """The report on kafka-python ``ConsumerRecord`` s of ``topic`` (which has ``n_partitions``)."""
    report = Report(topic, n_partitions)
    for m in messages:
        report.checked += 1
        key, problem = _problem(m.key, m.value, m.partition, n_partitions)
        if problem:
            report.misplaced.append(Misplaced(m.partition, m.offset, key, problem))
    return report
