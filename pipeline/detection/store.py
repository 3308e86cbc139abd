"""What the detection stages keep their state in: a dict in a backtest, a table's ``BatchStore`` in the
worker (``pipeline.worker.state``); and what per-segment state shares."""

from __future__ import annotations

from typing import Any, Generic, Protocol, TypeVar

T = TypeVar("T")


class Store(Protocol):
    def get(self, key: str, default: Any = None) -> Any: ...
    def __setitem__(self, key: str, value: Any) -> None: ...


class ReplayMemo(Generic[T]):
    """Learning made idempotent by source offset, for state the worker writes before the account states of a
    checkpoint (``population.Segment``, ``calibration.ScoreRanks``): after a crash between the two writes,
    the checkpoint's events come again at offsets already learnt, and each gets the answer it got the first
    time (``answers``, kept from one write to the next) instead of being learnt twice. Offsets are None in
    a backtest: nothing is kept."""

    __slots__ = ("applied_offset", "answers", "written")

    def __init__(self, applied_offset: int = -1, answers: dict[int, T] | None = None) -> None:
        self.applied_offset = applied_offset
        self.answers: dict[int, T] = {} if answers is None else answers
        self.written = answers is not None  # read back from storage: the next learning starts afresh

    def replayed(self, offset: int | None) -> bool:
        return offset is not None and offset <= self.applied_offset

    def answer(self, offset: int | None) -> T | None:
        """The answer kept for a ``replayed`` offset (None if it was not kept)."""
        return None if offset is None else self.answers.get(offset)

    def learn(self, offset: int | None) -> None:
        """``offset`` is learnt now (not ``replayed``): answers from before the last write are let go."""
        if offset is None:
            return
        if self.written:
            self.answers.clear()
            self.written = False
        self.applied_offset = offset

    def keep(self, offset: int | None, answer: T) -> T:
        if offset is not None:
            self.answers[offset] = answer
        return answer


def sparse(counts: list[int]) -> list[list[int]]:
    """Counts as ``[index, count]`` pairs of the non-zero ones (how bin counts are written)."""
    return [[i, c] for i, c in enumerate(counts) if c]


def dense(pairs: list[list[int]], size: int) -> list[int]:
    counts = [0] * size
    for i, c in pairs:
        counts[i] = c
    return counts
