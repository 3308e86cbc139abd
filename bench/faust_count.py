"""The framework's own ceiling: a Faust agent that only decodes each event and counts it.

    BENCH_BOOTSTRAP=… BENCH_TOPIC=… BENCH_GROUP=… BENCH_COUNT_FILE=… python bench/faust_count.py worker

Same broker, same topic and partitions, same batching (``take_events`` of the worker's size) and the
same process settings (``pipeline.runtime``) as the worker's account agent; no state, no outputs. It
writes its running count to ``BENCH_COUNT_FILE`` after each batch, which the end-to-end benchmark polls
exactly as it polls the worker's metrics. With ``BENCH_CONSUMER=worker`` it uses the worker's consumer
(``pipeline.worker.consumer.WorkerConsumer``) instead of Faust's own.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import faust

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.contract import codec  # noqa: E402
from pipeline.runtime import quiet_root_logger, tune_gc  # noqa: E402
from pipeline.worker.consumer import WorkerConsumer  # noqa: E402
from pipeline.worker.stages import BATCH_MAX, BATCH_WITHIN_S  # noqa: E402

app = faust.App(
    os.environ["BENCH_GROUP"],
    broker=f"kafka://{os.environ['BENCH_BOOTSTRAP']}",
    store="memory://",
    datadir=os.environ.get("BENCH_DATADIR", "/tmp/dg-bench-faust-count"),
    autodiscover=False,
    consumer_auto_offset_reset="earliest",
    web_host="127.0.0.1",
    key_serializer="raw",
    value_serializer="raw",
)
if os.environ.get("BENCH_CONSUMER") == "worker":
    app.transport.Consumer = WorkerConsumer  # type: ignore[misc]
topic = app.topic(os.environ["BENCH_TOPIC"], key_type=bytes, value_type=bytes, key_serializer="raw",
                  value_serializer="raw")
count_file = Path(os.environ["BENCH_COUNT_FILE"])


@app.agent(topic, concurrency=1)
async def count(stream: faust.StreamT) -> None:
    n = 0
    async for events in stream.take_events(BATCH_MAX, within=BATCH_WITHIN_S):  # type: ignore[attr-defined]
        for e in events:
            with contextlib.suppress(codec.CodecError):
                codec.decode_event(e.message.value)
            n += 1
        count_file.write_text(str(n))


if __name__ == "__main__":
    quiet_root_logger(app, "warning")  # the same process settings as the worker (run with -l warn)
    tune_gc()
    app.main()
