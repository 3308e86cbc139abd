"""Verdicts from the browser: a signed Verdict v2 on ``analyst-verdicts``, and the analyst's note in the store.

Each verdict names one alert of the account (its newest one in the scope being judged: its own behaviour,
or its membership of one campaign), is signed with the analyst key (``DG_ANALYST_KEY``) and carries the
logged-in analyst's name. It is keyed by ``account_id`` and sent to the partition Kafka's default
partitioner (murmur2) gives that key, named explicitly, so that the account's worker reads it in order
with the account's events (``docs/producers.md``). The worker applies it; the console shows the effect
when the lift arrives on ``enforcement-actions``. The analyst's note stays in the console's store
(:func:`pipeline.console.store.save_note`): Verdict v2 has no field for it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

from pipeline.contract.codec import encode
from pipeline.contract.verdicts import analyst_keys, verdict_for_alert
from pipeline.detection.partition import partition_for
from pipeline.settings import Settings

TOPIC = "analyst-verdicts"


class PublishError(RuntimeError):
    """The verdict could not be signed or sent."""


class Publisher:
    """Signs and sends verdicts; one Kafka producer, made on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._producer: Any = None
        self._lock = threading.Lock()
        self.key = analyst_keys(settings).get("current")

    def _get_producer(self) -> Any:
        if self._producer is None:
            from pipeline.kafka.produce import ProduceError, make_producer

            try:
                self._producer = make_producer(self.settings)
            except ProduceError as exc:
                raise PublishError(str(exc)) from exc
        return self._producer

    def publish(self, alert: Mapping[str, Any], verdict: str, analyst: str) -> tuple[dict[str, Any], int, int]:
        """Sign, send and wait for the broker's acknowledgement (blocking: the web app calls it in a thread);
        the signed verdict, and the partition and offset it went to."""
        if self.key is None:
            raise PublishError("no analyst key is configured (DG_ANALYST_KEY): verdicts cannot be signed")
        signed = verdict_for_alert(alert, verdict, analyst, int(time.time() * 1000), self.key)
        topic = self.settings.topic(TOPIC)
        with self._lock:
            producer = self._get_producer()
            parts = producer.partitions_for(topic)
            if not parts:
                raise PublishError(f"topic {topic} does not exist")
            partition = partition_for(signed["account_id"], len(parts))
            try:
                meta = producer.send(topic, key=signed["account_id"].encode("utf-8"), value=encode(signed),
                                     partition=partition).get(timeout=30)
            except Exception as exc:  # noqa: BLE001 - any send failure is shown to the analyst
                raise PublishError(f"Kafka did not take the verdict: {exc}") from exc
        return signed, meta.partition, meta.offset

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=10)
            self._producer = None
