"""The invalid-input breaker: when most recent input is invalid, stop instead of filling the DLQ forever.

A flood of invalid events usually means a bad deploy upstream (a producer writing the wrong format),
not hostile input: parking millions of them in the dead-letter topic helps nobody. The guard watches a
sliding window of recent input messages and trips when the invalid share reaches a threshold.

>>> g = InvalidRateGuard(max_ratio=0.5, window=10, min_messages=4)
>>> [g.record(valid=True) for _ in range(3)] + [g.record(valid=False)]
[False, False, False, False]
>>> any(g.record(valid=False) for _ in range(6))
True
>>> g.ratio
0.5
"""

from __future__ import annotations

from collections import deque


class InvalidRateGuard:
    """Sliding window of the last ``window`` input messages; ``record`` returns True when it trips."""

    def __init__(self, max_ratio: float, window: int = 10_000, min_messages: int = 1_000) -> None:
        if not 0.0 < max_ratio <= 1.0:
            raise ValueError(f"max_ratio must be in (0, 1], got {max_ratio}")
        self.max_ratio = max_ratio
        self.min_messages = min(min_messages, window)
        self.recent: deque[bool] = deque(maxlen=window)
        self.invalid = 0

    def record(self, valid: bool) -> bool:
        """Count one message (``valid`` or not); True when the invalid share has reached the limit."""
        if len(self.recent) == self.recent.maxlen and not self.recent[0]:
            self.invalid -= 1
        self.recent.append(valid)
        if not valid:
            self.invalid += 1
        return len(self.recent) >= self.min_messages and self.ratio >= self.max_ratio

    @property
    def ratio(self) -> float:
        return self.invalid / len(self.recent) if self.recent else 0.0
