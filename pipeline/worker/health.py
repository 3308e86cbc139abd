"""How the worker knows it is well: readiness, the broker watchdog, and the periodic flow and state report.

The app's timers and its ``/ready/`` page call these (``pipeline/worker/app.py``); nothing here reads or
changes detection state.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import faust

from pipeline.kafka import probe as broker_probe
from pipeline.logs import get_logger
from pipeline.settings import Settings
from pipeline.worker import stall
from pipeline.worker.exits import EXIT_BROKER_GONE, fatal
from pipeline.worker.observability import WorkerMetrics
from pipeline.worker.tables import PartitionedTable, rocksdb_memory, table_stats

log = get_logger("worker")


def worker_ready(app: faust.App) -> bool:
    """Whether the worker processes input now: it has partitions, no rebalance or table recovery is under
    way, and Faust lets its input flow (read from the metrics thread at each scrape: plain attribute reads,
    and no consumer is created that the app has not created itself)."""
    consumer = getattr(app, "_consumer", None)
    try:
        return bool(consumer is not None and not app.rebalancing and not getattr(app, "in_recovery", False)
                    and app.flow_control.is_active() and consumer.assignment())
    except Exception:  # a consumer that is starting or stopping is not ready
        return False


def readiness(app: faust.App, watchdog: stall.Watchdog) -> tuple[dict[str, Any], int]:
    """The ``/ready/`` answer and its HTTP status: 200 while the worker processes its input
    (``worker_ready``) and has not stalled (input waiting, no batch for ``stall.STALL_AFTER_S``), else 503."""
    stalled = watchdog.stalled()
    ok = worker_ready(app) and not stalled
    return {"ready": ok, "stalled": stalled, "waiting_events": watchdog.waiting}, 200 if ok else 503


def is_ready(app: faust.App, watchdog: stall.Watchdog) -> bool:
    """``dg_worker_ready``: the worker is ready and has not stalled."""
    return worker_ready(app) and not watchdog.stalled()


class BrokerWatchdog:
    """Exits the worker (``EXIT_BROKER_GONE``) once no broker has answered a logged-in metadata request
    (``pipeline/kafka/probe.py``, not an open port: a broker that refuses the worker's login, or a
    stranger on the port, is no broker) for ``DG_BROKER_TIMEOUT_S``."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self.last_contact = clock()

    async def check(self) -> None:
        settings = self.settings
        answer = await broker_probe.probe(settings, timeout=3.0)
        if answer.ok:
            self.last_contact = self.clock()
            return
        silent = self.clock() - self.last_contact
        log.warning("kafka_unreachable", bootstrap=settings.bootstrap, reason=answer.reason,
                    seconds=round(silent, 1), limit=settings.broker_timeout_s)
        if silent > settings.broker_timeout_s:
            cause = ("the brokers refuse the worker's login: check DG_SASL_USERNAME, DG_SASL_PASSWORD and the "
                     "cluster's SCRAM users" if answer.login_refused
                     else "no broker answered; check the cluster and DG_BOOTSTRAP")
            fatal("Kafka unreachable", None, EXIT_BROKER_GONE, bootstrap=settings.bootstrap, reason=answer.reason,
                  seconds=round(silent, 1), cause=f"{cause}, then restart the worker (it resumes from its last "
                  "committed offsets)")


class FlowReport:
    """The periodic report: consumer lag per input partition, a stall (input waiting, no batch) logged
    with where the flow stops, and the size of the state and of RocksDB's memory."""

    def __init__(self, app: faust.App, watched: set[str], watchdog: stall.Watchdog, metrics: WorkerMetrics,
                 tables: dict[str, PartitionedTable]) -> None:
        self.app, self.watched, self.watchdog, self.metrics, self.tables = app, watched, watchdog, metrics, tables

    def log_flow_state(self, event: str, **info: Any) -> None:
        """Log ``event`` with a snapshot of the flow (what SIGUSR1 asks for, and a stall)."""
        log.warning(event, **info, **stall.snapshot(self.app, self.watched))

    def waiting(self) -> int:
        """Input events waiting for this worker (unread, or read and not committed); sets the lag metrics."""
        consumer = self.app.consumer
        waiting = 0
        for tp in list(consumer.assignment()):
            if tp.topic not in self.watched:
                continue
            try:
                high = consumer.highwater(tp)
                read = getattr(consumer, "_read_offset", {}).get(tp)  # Faust keeps no public read offset
            except Exception:  # not yet known right after a rebalance
                continue
            if high is not None:
                lag = max(0, high - (read + 1 if read is not None else 0))
                self.metrics.set_lag(tp.topic, tp.partition, lag)
                committed = getattr(consumer, "_committed_offset", {}).get(tp)
                waiting += max(lag, high - (committed or 0))  # read but not yet committed counts too
        return waiting

    async def report(self) -> None:
        app, tables = self.app, self.tables
        waiting = self.waiting()
        idle = self.watchdog.stalled_for(waiting, busy=app.rebalancing or getattr(app, "in_recovery", False))
        if idle is not None:
            self.log_flow_state("worker_stalled", idle_s=round(idle, 1), waiting_events=waiting,
                                hint="input is waiting but no batch ran; the state below says where the flow stops")
        n_accounts, size = table_stats(tables["account-state"])
        n_links, link_size = table_stats(tables["link-state"])
        self.metrics.set_state(n_accounts, (size or 0) + (link_size or 0), n_links)
        self.metrics.set_rocksdb_memory(rocksdb_memory(
            [tables["account-state"], tables["policy-state"], tables["link-state"]]))
