"""Why a worker is not making progress: a snapshot of Faust's and aiokafka's flow state, for the log.

A worker with input waiting (unread, or read but not committed) that runs no batch for ``STALL_AFTER_S``
logs ``worker_stalled`` with this snapshot (and again every ``STALL_REPEAT_S`` while it lasts); ``kill -USR1 <pid>`` logs it on
demand. It reads private attributes of Faust and aiokafka, each one guarded: a snapshot must never break
the worker it describes, so a missing attribute shows as ``None``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
import threading
import time
import traceback
import tracemalloc
from collections.abc import Callable
from typing import Any

STALL_AFTER_S = 60.0
STALL_REPEAT_S = 300.0


class Watchdog:
    """When a worker has stalled: input waiting (unread, or read and not committed) and no batch for
    ``STALL_AFTER_S``; said at most once per ``STALL_REPEAT_S``. Wall-clock time, never read by detection."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.last_batch = clock()
        self.said = -math.inf
        self.waiting = 0  # input waiting at the last look (``stalled_for``)

    def batch_ran(self) -> None:
        self.last_batch = self.clock()

    def stalled_for(self, waiting: int, busy: bool) -> float | None:
        """Seconds without a batch if that is a stall to report now, else None. ``busy``: rebalancing or
        reading changelogs, when no batch runs by design."""
        now = self.clock()
        if busy:
            self.last_batch = now
        self.waiting = waiting
        idle = now - self.last_batch
        if waiting and idle > STALL_AFTER_S and now - self.said > STALL_REPEAT_S:
            self.said = now
            return idle
        return None

    def stalled(self) -> bool:
        """Whether the worker is stalled now: input was waiting at the last look and no batch has run for
        ``STALL_AFTER_S`` (a batch since clears it at once). Plain reads: the readiness check calls it from
        another thread, and it holds while the event loop itself is stuck, when no look is taken."""
        return bool(self.waiting) and self.clock() - self.last_batch > STALL_AFTER_S


def _get(obj: Any, *path: str) -> Any:
    for name in path:
        if obj is None:
            return None
        obj = getattr(obj, name, None)
    return obj


def _tps(tps: Any, topics: set[str]) -> list[str] | None:
    if tps is None:
        return None
    try:
        return sorted(f"{tp.topic}:{tp.partition}" for tp in tps if tp.topic in topics)
    except Exception:
        return None


def _queues(app: Any) -> list[dict[str, Any]]:
    out = []
    for chan in list(_get(app, "topics", "_topics") or []):
        queue = getattr(chan, "_queue", None)
        if queue is None:
            continue
        try:
            out.append({"channel": ",".join(getattr(chan, "topics", ()) or ()), "size": queue.qsize(),
                        "maxsize": queue.maxsize, "getters": len(getattr(queue, "_getters", ()) or ()),
                        "putters": len(getattr(queue, "_putters", ()) or ()),
                        "pressure_drop_pending": len(getattr(queue, "_pending_pressure_drop_callbacks", ()) or ())})
        except Exception as exc:
            out.append({"channel": repr(chan), "error": repr(exc)})
    return out


def _await_chain(task: asyncio.Task[Any], limit: int) -> list[str]:
    """Where a task is suspended: its coroutine and each one it awaits, outermost first."""
    out: list[str] = []
    obj: Any = task.get_coro()
    while obj is not None and len(out) < limit:
        frame = getattr(obj, "cr_frame", None) or getattr(obj, "gi_frame", None) or getattr(obj, "ag_frame", None)
        if frame is None:
            if isinstance(obj, asyncio.Future):
                out.append(f"future {type(obj).__name__} done={obj.done()}")
            break
        code = frame.f_code
        out.append(f"{code.co_name}@{code.co_filename.rsplit('/', 1)[-1]}:{frame.f_lineno}")
        obj = getattr(obj, "cr_await", None) or getattr(obj, "gi_yieldfrom", None) or getattr(obj, "ag_await", None)
    return out


def _task_stacks(limit: int = 12) -> list[str]:
    """Each pending task of this loop and the chain of awaits it is suspended in."""
    try:
        tasks = asyncio.all_tasks()
    except RuntimeError:
        return []
    return sorted(f"{task.get_name()}: {' -> '.join(_await_chain(task, limit))}" for task in tasks)


def _thread_stacks(limit: int = 8) -> dict[str, str]:
    names = {t.ident: t.name for t in threading.enumerate()}
    out = {}
    for ident, frame in sys._current_frames().items():
        if ident == threading.get_ident():
            continue
        stack = traceback.extract_stack(frame, limit=limit)
        out[names.get(ident, str(ident))] = " <- ".join(
            f"{s.name}@{s.filename.rsplit('/', 1)[-1]}:{s.lineno}" for s in reversed(stack))
    return out


def snapshot(app: Any, topics: set[str]) -> dict[str, Any]:
    """The flow state of the app's consumer, queues, flow control, acks and tasks, restricted to ``topics``."""
    consumer = _get(app, "consumer")
    aio = _get(consumer, "_thread", "_consumer")
    state: dict[str, Any] = {
        "generation": _get(app, "consumer_generation_id"),
        "rebalancing": _get(app, "rebalancing"),
        "in_recovery": _get(app, "in_recovery"),
        "flow_control_active": None,
        "consumer_flow_active": _get(consumer, "flow_active"),
        "assigned": None,
        "active": _tps(_get(consumer, "_active_partitions"), topics),
        "paused": _tps(_get(consumer, "_paused_partitions"), topics),
        "buffered": _tps(_get(consumer, "_buffered_partitions"), topics),
        "aiokafka_paused": None,
        "aiokafka_fetched": None,
        "queues": _queues(app),
    }
    probes = {
        "flow_control_active": lambda: app.flow_control.is_active(),
        "assigned": lambda: _tps(consumer.assignment(), topics),
        "aiokafka_paused": lambda: _tps(aio._subscription.paused_partitions(), topics),
        "aiokafka_fetched": lambda: _tps(list(aio._fetcher._records.keys()), topics),
    }
    for name, probe in probes.items():
        with contextlib.suppress(Exception):
            state[name] = probe()
    offsets: dict[str, dict[str, Any] | None] = {}
    for name, attr in (("read", "_read_offset"), ("committed", "_committed_offset")):
        table = _get(consumer, attr) or {}
        try:
            offsets[name] = {f"{tp.topic}:{tp.partition}": off for tp, off in list(table.items()) if tp.topic in topics}
        except Exception:
            offsets[name] = None
    state["offsets"] = offsets
    acks: dict[str, Any] = {}
    with contextlib.suppress(Exception):
        gaps = _get(consumer, "_gap") or {}
        for tp, acked in list((_get(consumer, "_acked") or {}).items()):
            if tp.topic in topics and (acked or gaps.get(tp)):
                acks[f"{tp.topic}:{tp.partition}"] = {
                    "acked": len(acked), "acked_min": min(acked) if acked else None,
                    "acked_max": max(acked) if acked else None, "acked_head": sorted(acked)[:5],
                    "gap": [(iv.begin, iv.end) for iv in sorted(gaps.get(tp) or ())][:5]}
    state["acks"] = acks
    with contextlib.suppress(Exception):
        state["unacked_messages"] = len(consumer._unacked_messages)
    with contextlib.suppress(Exception):
        fut = consumer._commit_fut
        state["commit_in_flight"] = fut is not None and not fut.done()
    if tracemalloc.is_tracing():  # PYTHONTRACEMALLOC=1: where the Python heap is
        stats = tracemalloc.take_snapshot().statistics("lineno")
        state["python_heap_mib"] = round(sum(st.size for st in stats) / 2**20, 1)
        state["python_heap_top"] = [f"{st.size / 2**20:.1f} MiB {st.count} blocks {st.traceback[0]}"
                                    for st in stats[:15]]
    state["tasks"] = _task_stacks()
    state["threads"] = _thread_stacks()
    return state
