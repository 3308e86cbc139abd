"""The worker's side of event-time order: when a usage-events partition counts as idle, and what the
link-order table keeps of a partition's order."""

from __future__ import annotations

from pipeline.detection.messages import EMPTY_BATCH, LinkUpdate, MemberSummary, encode_link_updates
from pipeline.detection.ordering import Aligner
from pipeline.worker.link_order import (
    IDLE_AFTER_S,
    IDLE_HEADER,
    WM_HEADER,
    PartitionOrder,
    SourceClock,
    header_pairs,
    pairs_header,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_partition_is_idle_only_when_quiet_and_caught_up_and_is_announced_once():
    clock = Clock()
    sources = SourceClock(clock)
    sources.saw(0, 1_000)
    sources.take_advanced()  # the batch's checkpoint
    caught_up = {0: True, 1: False}
    assert sources.gone_idle({0, 1}, caught_up.__getitem__) == []  # just seen, and just owned
    clock.now += IDLE_AFTER_S
    assert sources.gone_idle({0, 1}, caught_up.__getitem__) == [(0, 1_000)], "1 still has messages to read"
    assert sources.gone_idle({0, 1}, caught_up.__getitem__) == [], "announced once"
    caught_up[1] = True
    assert sources.gone_idle({0, 1}, caught_up.__getitem__) == [(1, 0)], "never had an event: watermark 0"
    sources.saw(0, 2_000)  # wakes: a new announcement when it goes quiet again
    sources.take_advanced()
    clock.now += IDLE_AFTER_S
    assert sources.gone_idle({0, 1}, caught_up.__getitem__) == [(0, 2_000)]
    # partition 1 moves away and comes back: another worker may have told the link stage it was active
    sources.gone_idle({0}, caught_up.__getitem__)
    clock.now += IDLE_AFTER_S
    assert sources.gone_idle({0, 1}, caught_up.__getitem__) == [], "owned again: quiet from now on"
    clock.now += IDLE_AFTER_S
    assert sources.gone_idle({0, 1}, caught_up.__getitem__) == [(1, 0)]


def test_headers_carry_partition_and_event_time_pairs_as_lists_or_mappings():
    headers = pairs_header(WM_HEADER, [(2, 7), (0, 5)])
    assert header_pairs(headers, WM_HEADER) == [(0, 5), (2, 7)]
    assert header_pairs(dict(headers), WM_HEADER) == [(0, 5), (2, 7)]
    assert header_pairs([(b"dg.wm", headers[0][1])], WM_HEADER) == [(0, 5), (2, 7)]
    assert header_pairs(None, WM_HEADER) == [] and header_pairs(headers, IDLE_HEADER) == []


def _order(table: dict[bytes, bytes]) -> PartitionOrder:
    return PartitionOrder(0, Aligner(2, 0), _decode, lambda u: int(u.summary.account[1]), b"l").restore(table.get)


def _decode(raw: bytes) -> list[LinkUpdate]:
    from pipeline.detection.messages import decode_link_updates

    return decode_link_updates(raw)


def _update(account: str, ts: int) -> LinkUpdate:
    return LinkUpdate("pay:x", MemberSummary(account, ts, 5, 10.0, 1.0, 0.0, 0, 0, 0, None, None, 0.5))


def test_what_is_held_is_written_and_read_back_and_what_was_applied_is_not_offered_again():
    table: dict[bytes, bytes] = {}

    def write(order: PartitionOrder) -> None:
        for _, key, value in order.writes():
            if value is None:
                table.pop(key, None)
            else:
                table[key] = value

    order = _order(table)
    [m0] = encode_link_updates([_update("a0", 10), _update("a1", 20)])
    assert order.take(0, m0, pairs_header(WM_HEADER, [(0, 15), (1, 40)])) == []
    assert [u.summary.ts for u, _ in order.release()] == [10], "source 0 has got to 15 only"
    write(order)
    again = _order(table)  # a restart: the held update comes back, the applied one does not
    assert len(again.aligner) == 1 and again.read == 0
    assert again.take(0, m0, None) is None, "a message read before is skipped"
    assert again.take(1, EMPTY_BATCH, pairs_header(IDLE_HEADER, [(0, 15)])) == []
    assert [u.summary.ts for u, _ in again.release()] == [20]
    write(again)
    assert sorted(table) == [b"lf:0"], "no message is kept once its updates are applied"
    assert again.take(2, encode_link_updates([_update("a0", 5)])[0], None) == [_update("a0", 5)], "late"
