"""What the detection stages keep their state in: a dict in a backtest, a table's ``BatchStore`` in the
worker (``pipeline.worker.state``)."""

from __future__ import annotations

from typing import Any, Protocol


class Store(Protocol):
    def get(self, key: str, default: Any = None) -> Any: ...
    def __setitem__(self, key: str, value: Any) -> None: ...
