"""The worker's Kafka consumer: Faust's aiokafka consumer with three costs of its hot path taken out.

Measured with ``bench/end_to_end.py``, which runs Faust's decode-and-count agent both with Faust's own
consumer and with this one: the agent counts more than twice as many events per second with this one,
and the worker gains about a third (the figures are in ``bench/README.md``).

1. **One guarded wait per fetched batch, not per message.** Faust hands each fetched message to its
   topic conductor inside ``Service.wait_first(callback(message), suspend_flow.wait())``, so that a
   delivery blocked on a full stream buffer gives up when a rebalance suspends the flow.
   ``wait_first`` starts four tasks, waits on them and cancels three, for every message: a py-spy
   profile of the decode-and-count agent put that at about a quarter of its time.
   ``WorkerConsumer._drain_messages`` fetches a batch as Faust does, outside any guarded wait, then
   makes the same guarded wait once for the whole batch: its messages are delivered one after the
   other inside it. When the flow stops or is suspended, the rest of the batch is dropped unread, as
   Faust drops it (its ``getmany`` stops yielding once the flow is stopped, and the consumer seeks
   back to the committed offsets after the rebalance). The rest is Faust's loop of faust-streaming
   0.15: the read offsets, the gaps in acked topics, the commit every ``broker_commit_every`` acks
   (made outside the guarded wait, as Faust makes it), a yield to the event loop every
   ``YIELD_EVERY`` messages, and the same errors.
2. **Back-pressure by waiting, not by pausing partitions.** When a stream buffer is four-fifths full,
   Faust takes the partition out of the fetch until the buffer is *empty* again, and when every
   partition is out it sleeps a whole second before it looks again. Delivering a fetched batch at once
   fills the buffer to that mark every time (a fetch brings up to a MiB per partition, thousands of
   events). Logged fetch by fetch, the decode-and-count agent then waited about a second for an empty
   fetch after every batch (whether in that sleep or in a fetch of the partitions left in it was not
   pinned down). ``on_buffer_full`` therefore leaves the partition in the fetch; a delivery to a full
   buffer waits in Faust's ``put`` until the agent has taken an event. Memory stays bounded: one
   fetch per partition waits in aiokafka, and the buffers hold ``app.STREAM_BUFFER`` messages.
3. ``FETCH_MAX_WAIT_MS``: how long the broker may hold a fetch (Faust hard-codes 1,500 ms).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka

FETCH_MAX_WAIT_MS = 100
"""How long the broker may hold the worker's fetch request for data to arrive (Faust sets 1,500 ms).

aiokafka fetches only the partitions that have nothing buffered; when those are all quiet (say the
findings and link-update partitions, while the input partitions' records are still being worked on),
the broker holds the request for this long, and the input that arrives meanwhile is not fetched either.
At 1,500 ms a worker fed at a steady rate could settle, from the start, into working in bursts about
every 2 s, with an event-to-alert p99 of several seconds; at 100 ms it did not (``bench/latency.py``; the
figures are in ``bench/README.md``)."""

YIELD_EVERY = 100
"""Messages delivered between two yields to the event loop (Faust's figure), so the agents run."""

_COMMIT_DUE = "commit due"
_BATCH_DONE = "batch done"


class PromptFetchConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's consumer thread with ``FETCH_MAX_WAIT_MS`` for its aiokafka consumer (Faust offers no setting)."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read when the consumer starts its fetcher
        return consumer


class WorkerConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer, run by ``PromptFetchConsumerThread``, delivering a batch per guarded wait."""

    def _new_consumer_thread(self) -> PromptFetchConsumerThread:
        return PromptFetchConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def on_buffer_full(self, tp: Any) -> None:
        """Keep fetching the partition: a delivery to the full buffer waits for room instead (point 2)."""

    async def _drain_messages(self, fetcher: Any) -> None:
        consumer_stopped = self._stopped.is_set
        fetcher_stopped = fetcher._stopped.is_set
        try:
            while not (consumer_stopped() or fetcher_stopped()):
                self.diag.set_flag(CONSUMER_FETCHING)
                # The fetch stays outside the guarded wait, as in Faust: a fetch cancelled half-way still
                # takes its records out of aiokafka's buffers in the consumer thread, and they are lost.
                fetched = [record async for record in self.getmany(timeout=1.0)]
                # The generation the records were fetched in, as getmany takes it once its fetch returns
                # (nothing ran since): taken before the fetch, a rebalance during it would drop a batch of
                # the new generation's records, which nothing fetches again.
                generation = self.app.consumer_generation_id
                await self.sleep(0)  # as Faust: getmany may return at once, again and again
                batch = iter(fetched)
                while fetched and not self.should_stop:
                    delivery = self._deliver(batch, generation)
                    waited = await self.wait_first(delivery, self.suspend_flow.wait())
                    if delivery not in waited.done or waited.results[waited.done.index(delivery)] != _COMMIT_DUE:
                        break  # the batch is delivered, or the flow was suspended, or the service stops
                    self._n_acked = 0
                    await self.commit()
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)

    async def _deliver(self, batch: Iterator[tuple[Any, Any]], generation: int) -> str:
        """Hand the batch's messages to the conductor until it is done or a commit is due; the caller
        commits and calls again with the same, partly read, batch.

        Like Faust's ``getmany``, it stops at once when the flow stops or the consumer generation
        changes: the recovery stops the flow before it seeks back to the committed offsets, and a
        message handed on after that would be processed twice (the commit stall of issue #8)."""
        callback = self.callback
        read_offset = self._read_offset
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        app = self.app
        since_yield = 0
        for tp, message in batch:
            since_yield += 1
            if since_yield > YIELD_EVERY:
                await asyncio.sleep(0)
                since_yield = 0
            if not self.flow_active or app.consumer_generation_id != generation:
                return _BATCH_DONE
            offset = message.offset
            r_offset = read_offset[tp]
            if r_offset is not None and offset < r_offset:
                continue  # read already (Faust logs these at its "dev" level and drops them)
            if r_offset and offset - r_offset > 1 and acks_enabled_for(message.topic):
                await self._add_gap(tp, r_offset + 1, offset)
            await callback(message)
            read_offset[tp] = offset
            if commit_every is not None and self._n_acked >= commit_every:
                return _COMMIT_DUE
        return _BATCH_DONE
