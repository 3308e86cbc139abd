"""What the account stage admits of a decoded message: where it is (its account's partition) and when
(an event's ``ts`` bounded by its message's timestamp), so that one message cannot move event time.

Producers partition account-keyed messages by murmur2 of the account id (``detection/partition.py``, as
Kafka's Java client and kafka-python do by default). A usage event, findings batch or verdict on another
partition goes to the DLQ with reason ``wrong_partition``: the account's state lives with its partition
and records the offsets applied there, so one forged event at a huge offset elsewhere made the
account's real events duplicates.

An event's ``ts`` is written by the producer and trusted by detection (each account's newest ``ts`` is
its clock for lateness). The Kafka message timestamp is the broker's (``usage-events`` is created with
``message.timestamp.type=LogAppendTime``, ``schemas/topics.json``): an event whose ``ts`` is more than
``DG_MAX_EVENT_SKEW_MS`` ahead of its message's timestamp did not happen yet, and goes to the DLQ with
reason ``ts_in_future`` instead of moving its account's clock to the far future (after which every real
event of the account counted as late).

The worker's watermark, the clock of state expiry, is the largest event time it has accepted, each
event's ``ts`` taken no further than its message's timestamp: it never runs ahead of broker time, and
in a replay of historic events it stays the events' own time.

Backtests apply the same bound: a stored topic's messages carry their timestamps (``pipeline/kafka/replay.py``);
an events file has none, so ``bound_file_events`` gives each event a deterministic reference time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from pipeline.contract.models import UsageEvent

DEFAULT_MAX_SKEW_MS = 10 * 60_000
"""How far an event's ``ts`` may run ahead of its message's timestamp: the gateway's clock against the
broker's, and the time an event waits in the gateway before it is sent."""
TS_IN_FUTURE = "ts_in_future"
WRONG_PARTITION = "wrong_partition"


def in_future(ts: int, reference_ms: int, max_skew_ms: int) -> bool:
    """Whether an event at ``ts`` is ahead of its reference time (the message timestamp) by more than
    the allowed skew. A message without a timestamp (``reference_ms`` 0 or less) bounds every event out.

    >>> in_future(1_000_000, 1_000_000 - 600_000, 600_000), in_future(1_000_001, 400_000, 600_000)
    (False, True)
    """
    return ts > reference_ms + max_skew_ms


def message_ms(message: Any) -> int:
    """A Faust message's timestamp in epoch milliseconds (Faust keeps float seconds); 0 when it has none."""
    ts = getattr(message, "timestamp", None)
    if ts is None or ts <= 0:
        return 0
    return int(round(ts * 1000.0))


class Watermark:
    """The largest event time accepted so far, each event's ``ts`` bounded by its message's timestamp."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def advance(self, ts: int, reference_ms: int) -> None:
        t = ts if ts < reference_ms else reference_ms
        if t > self.value:
            self.value = t


def bound_file_events(events: Iterable[UsageEvent], max_skew_ms: int,
                      reject: Callable[[UsageEvent], None]) -> Iterator[UsageEvent]:
    """The events of a file (no message timestamps) with the same bound, deterministically.

    A file event's reference time is the file's clock: the largest ``ts`` accepted before it. An event
    more than ``max_skew_ms`` ahead of the clock (or the file's first event) is accepted only when the
    event after it in the file is not more than ``max_skew_ms`` behind it: a quiet spell in the traffic,
    which the traffic after it confirms, and not one event in the far future among present ones. The
    file's last event has nothing after it and is accepted (it can move no later event). ``reject`` gets
    each event bounded out, in file order.

    On honest traffic (events of different accounts interleaved, late by seconds) this accepts every
    event, as a worker fed the file does (``produce`` stamps each message when it sends it, after the
    events happened); one far-future event among them is ``ts_in_future`` in both.

    >>> ev = lambda ts: {"ts": ts}
    >>> [e["ts"] for e in bound_file_events([ev(10), ev(2**53 - 1), ev(11), ev(5000), ev(5001)], 100, print)]
    {'ts': 9007199254740991}
    [10, 11, 5000, 5001]
    """
    clock: int | None = None
    it = iter(events)
    current = next(it, None)
    while current is not None:
        following = next(it, None)
        ts = current["ts"]
        if ((clock is None or ts > clock + max_skew_ms) and following is not None
                and following["ts"] < ts - max_skew_ms):
            reject(current)
        else:
            if clock is None or ts > clock:
                clock = ts
            yield current
        current = following
