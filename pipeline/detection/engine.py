"""The detection engine: the one entry point the worker and the backtest both call, event by event."""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

from pipeline.detection.placeholder import RateRule
from pipeline.models import UsageEvent

ALERTS = "anomaly-alerts"
ACTIONS = "enforcement-actions"


@dataclass(frozen=True, slots=True)
class Output:
    """One message the engine wants sent: manifest topic name, key, and the message map."""

    topic: str
    key: str
    value: dict[str, Any]


class Engine:
    """Turns usage events into alerts and actions. Pure: state lives in the mapping it is given.

    ``state`` maps account id → serialised account state (bytes). The worker passes a Faust table,
    the backtest a dict, so both run exactly this code.
    """

    def __init__(self, *, rate_limit_per_minute: int, detector_version: str,
                 state: MutableMapping[str, bytes] | None = None) -> None:
        self.rule = RateRule(rate_limit_per_minute, detector_version)
        self.state: MutableMapping[str, bytes] = {} if state is None else state

    @classmethod
    def from_config(cls, config: Any, state: MutableMapping[str, bytes] | None = None) -> Engine:
        """The engine the settings describe (worker and backtest both build it this way)."""
        return cls(rate_limit_per_minute=config.rate_limit_per_minute,
                   detector_version=config.detector_version, state=state)

    def process(self, event: UsageEvent) -> list[Output]:
        """Apply one valid event; return the messages it causes (often none)."""
        account = event["account_id"]
        new_state, alert = self.rule.update(self.state.get(account), event)
        self.state[account] = new_state
        if alert is None:
            return []
        return [Output(ALERTS, account, dict(alert))]
