"""A replay's sandbox: its alerts and actions produced to topics under a prefix of their own, never live ones.

``backtest --to-prefix P`` writes what a replay decides to ``P``+anomaly-alerts and
``P``+enforcement-actions, so a candidate configuration can be watched with the usual tools (``tail``,
``verify``) without any consumer of the live topics seeing it. The prefix must be non-empty and differ
from the live one: an empty prefix would be the live topics themselves.
"""

from __future__ import annotations

from typing import Any

from pipeline.contract import codec
from pipeline.contract.manifest import ACTIONS, ALERTS
from pipeline.kafka import admin
from pipeline.kafka.produce import ProduceError, make_producer
from pipeline.settings import Settings

__all__ = ["SandboxSink", "check_sandbox_prefix"]


def check_sandbox_prefix(prefix: str, live_prefix: str) -> None:
    """Raise ``ValueError`` unless ``prefix`` is a real sandbox prefix (non-empty, not the live one)."""
    if not prefix:
        raise ValueError("--to-prefix is empty: that would be the live topics (or, with a live prefix, "
                         "topics that only look like sandbox ones); give a sandbox prefix, e.g. sandbox-")
    if prefix == live_prefix:
        raise ValueError(f"--to-prefix {prefix!r} is the live topic prefix: a replay never writes "
                         "to live output topics; choose a sandbox prefix")


class SandboxSink:
    """A replay's output sink: ``sink(topic_name, value)`` produces ``value`` (keyed by its account, else
    its campaign) to the sandbox copy of ``topic_name``. Creating it creates the sandbox topics;
    ``close()`` flushes and closes its producer.

    Raises ``ValueError`` for a prefix that is not a sandbox one (before any connection) and
    :class:`~pipeline.kafka.produce.ProduceError` (``code`` 3) when Kafka cannot take the topics."""

    def __init__(self, settings: Settings, prefix: str) -> None:
        check_sandbox_prefix(prefix, settings.topic_prefix)
        self.settings = settings.model_copy(update={"topic_prefix": prefix})
        try:
            admin.create_topics(self.settings, [ALERTS, ACTIONS])
            self.producer: Any = make_producer(self.settings)
        except ProduceError:
            raise
        except Exception as exc:  # kafka-python raises a zoo of errors; name the broker
            raise ProduceError(f"cannot create sandbox topics on {settings.bootstrap}: {exc}", 3) from exc

    def __call__(self, topic_name: str, value: dict[str, Any]) -> None:
        key = value["account_id"] or value.get("campaign_id") or ""
        self.producer.send(self.settings.topic(topic_name), key=key.encode("utf-8"), value=codec.encode(value))

    def close(self, *, flush: bool = True) -> None:
        """Flush what was sent (unless the run failed) and close the producer."""
        if flush:
            self.producer.flush(timeout=120)
        self.producer.close(timeout=30)
