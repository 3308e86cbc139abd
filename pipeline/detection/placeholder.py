"""PLACEHOLDER rule (foundation slice): requests per account per event-time minute over a limit.

This rule only proves the plumbing from Kafka to the alerts topic; it is not distillation detection and
is replaced by the behaviour and campaign models of the detection issue. It alerts once per account and
minute in which the account's requests exceed ``limit``.
"""

from __future__ import annotations

from typing import Any

import msgpack

from pipeline.detection.ids import stable_id
from pipeline.models import AnomalyAlert, UsageEvent

MINUTE_MS = 60_000
KIND = "request_rate_placeholder"


class RateRule:
    """Counts an account's requests per event-time minute; one alert when the count passes the limit.

    State per account is ``[minute, count]`` as msgpack (a handful of bytes).

    >>> rule = RateRule(limit=2, detector_version="t")
    >>> state, alerts = None, []
    >>> for i in range(4):
    ...     state, alert = rule.update(state, {"account_id": "a", "ts": 1_000 + i})
    ...     alerts.append(alert)
    >>> [a is not None for a in alerts]
    [False, False, True, False]
    """

    def __init__(self, limit: int, detector_version: str) -> None:
        self.limit = limit
        self.detector_version = detector_version

    def update(self, state: bytes | None, event: UsageEvent | dict[str, Any]) -> tuple[bytes, AnomalyAlert | None]:
        """Apply one event; return the new state and an alert when this event crosses the limit."""
        minute = event["ts"] // MINUTE_MS
        if state is not None:
            last_minute, count = msgpack.unpackb(state)
            count = count + 1 if last_minute == minute else 1
        else:
            count = 1
        alert = self._alert(event, minute, count) if count == self.limit + 1 else None
        return msgpack.packb([minute, count]), alert

    def _alert(self, event: UsageEvent | dict[str, Any], minute: int, count: int) -> AnomalyAlert:
        account = event["account_id"]
        window_start = minute * MINUTE_MS
        return {
            "schema_version": 1,
            "alert_id": stable_id("alr", self.detector_version, KIND, account, minute),
            "ts": event["ts"],
            "account_id": account,
            "campaign_id": None,
            "kind": KIND,
            "score": min(1.0, count / (2.0 * self.limit)),
            "severity": "medium",
            "reasons": [
                {
                    "code": "request_rate_over_limit",
                    "detail": (
                        f"{count} requests in the minute starting at event time {window_start} exceed the "
                        f"placeholder limit of {self.limit} per minute"
                    ),
                    "value": float(count),
                    "baseline": float(self.limit),
                }
            ],
            "related_accounts": [],
            "window_start_ts": window_start,
            "window_events": count,
            "detector_version": self.detector_version,
        }
