"""The worker's consumer (``pipeline.worker.consumer``) without a broker: its drain loop fed a fetched batch.

``getmany`` and the conductor's callback are replaced by fakes; the rest (read offsets, the guarded
wait, the suspend-flow event, the commit bookkeeping) is the real consumer of a real app. That the
worker keeps up and loses nothing through rebalances and crashes is the integration tests' part.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP, Message

from pipeline.worker.app import STREAM_BUFFER, create_app
from pipeline.worker.consumer import YIELD_EVERY, WorkerConsumer
from pipeline.worker.stages import BATCH_MAX


def _message(tp: TP, offset: int) -> Message:
    return Message(topic=tp.topic, partition=tp.partition, offset=offset, timestamp=0.0, timestamp_type=0,
                   headers=None, key=b"k", value=b"v", checksum=b"")


async def _drain(consumer: Any, tp: TP, offsets: list[int], on_message: Callable[[Message], Awaitable[None]],
                 while_fetching: Callable[[], None] = lambda: None) -> None:
    """Run the consumer's drain loop over one fetched batch of ``offsets`` on ``tp``, then stop it;
    ``while_fetching`` runs while the fetch is under way."""
    fetcher = SimpleNamespace(_stopped=asyncio.Event())
    fetched = [False]

    async def getmany(timeout: float) -> AsyncIterator[tuple[TP, Message]]:
        if fetched[0]:
            fetcher._stopped.set()
            return
        fetched[0] = True
        while_fetching()
        for offset in offsets:
            yield tp, _message(tp, offset)

    consumer.getmany = getmany
    consumer.callback = on_message
    await asyncio.wait_for(consumer._drain_messages(fetcher), timeout=30)


@pytest.fixture
def run(make_settings) -> Callable[[Callable[[Any], Awaitable[None]]], None]:
    """Runs a test body with the consumer of an app made in the body's event loop (Faust's services
    bind their events to the loop they are made in)."""

    def go(body: Callable[[Any], Awaitable[None]]) -> None:
        async def main() -> None:
            consumer = create_app(make_settings(store="memory://")).consumer
            assert isinstance(consumer, WorkerConsumer)
            await body(consumer)

        asyncio.run(main())

    return go


def test_a_fetched_batch_is_delivered_in_order_with_commits_when_due(run):
    tp = TP("t", 0)
    delivered: list[int] = []
    commits: list[int] = []

    async def body(consumer: Any) -> None:
        consumer._commit_every = 100

        async def on_message(message: Message) -> None:
            delivered.append(message.offset)
            consumer._n_acked += 1

        async def commit(*args: Any, **kwargs: Any) -> bool:
            commits.append(len(delivered))
            return True

        consumer.commit = commit
        await _drain(consumer, tp, list(range(7, 257)), on_message)
        assert consumer._read_offset[tp] == 256
        assert consumer._n_acked == 50

    run(body)
    assert delivered == list(range(7, 257))
    assert commits == [100, 200]  # Faust's "every broker_commit_every acks", made between deliveries


def test_offsets_already_read_are_not_delivered_again(run):
    tp = TP("t", 1)
    delivered: list[int] = []

    async def on_message(message: Message) -> None:
        delivered.append(message.offset)

    async def body(consumer: Any) -> None:
        consumer._read_offset[tp] = 50
        await _drain(consumer, tp, list(range(40, 60)), on_message)

    run(body)
    assert delivered == list(range(50, 60))


@pytest.mark.parametrize("blocked", [False, True], ids=["between-deliveries", "delivery-blocked"])
def test_a_stopped_flow_drops_the_rest_of_the_batch(run, blocked):
    # a rebalance or the table recovery stops the flow, then seeks back to the committed offsets: the
    # batch's rest is not delivered, and a delivery blocked on a full buffer is given up
    tp = TP("t", 2)
    delivered: list[int] = []

    async def body(consumer: Any) -> None:
        async def on_message(message: Message) -> None:
            delivered.append(message.offset)
            if message.offset == 10:
                consumer.stop_flow()
                if blocked:
                    await asyncio.sleep(3600)

        await _drain(consumer, tp, list(range(1000)), on_message)
        assert consumer._read_offset[tp] == (9 if blocked else 10)

    run(body)
    assert delivered == list(range(11))


def test_the_loop_yields_to_the_agents_while_it_delivers(run):
    tp = TP("t", 3)
    turns: list[int] = []
    delivered: list[int] = []

    async def on_message(message: Message) -> None:
        delivered.append(message.offset)

    async def agent() -> None:
        while True:
            turns.append(len(delivered))
            await asyncio.sleep(0)

    async def body(consumer: Any) -> None:
        task = asyncio.ensure_future(agent())
        await _drain(consumer, tp, list(range(5 * YIELD_EVERY)), on_message)
        task.cancel()

    run(body)
    assert len(delivered) == 5 * YIELD_EVERY
    during = {n for n in turns if 0 < n < len(delivered)}
    assert len(during) >= 4  # the agent ran between every YIELD_EVERY deliveries


def test_a_full_stream_buffer_leaves_the_partition_in_the_fetch(run):
    # Faust takes it out of the fetch until the buffer is empty, and sleeps a second when all are out
    tp = TP("t", 0)

    async def body(consumer: Any) -> None:
        consumer._set_active_tps({tp})
        consumer.on_buffer_full(tp)
        assert consumer._get_active_partitions() == {tp}

    run(body)


def test_a_stream_buffer_holds_a_whole_batch_and_less_than_faust_default(make_settings):
    # the consumer fills buffers to the brim (no pausing at four-fifths): STREAM_BUFFER bounds that memory
    app = create_app(make_settings(store="memory://"))
    assert app.conf.stream_buffer_maxsize == STREAM_BUFFER
    assert BATCH_MAX <= STREAM_BUFFER < 4096


def test_a_batch_fetched_across_a_rebalance_is_delivered(run):
    # the fetch waits while a rebalance ends; its records belong to the new generation and must not be
    # taken for stale ones (they are out of aiokafka's buffers: nothing would fetch them again)
    tp = TP("t", 0)
    delivered: list[int] = []

    async def on_message(message: Message) -> None:
        delivered.append(message.offset)

    async def body(consumer: Any) -> None:
        def rebalance_ends() -> None:
            consumer.app.consumer_generation_id += 1

        await _drain(consumer, tp, list(range(5)), on_message, while_fetching=rebalance_ends)

    run(body)
    assert delivered == list(range(5))
