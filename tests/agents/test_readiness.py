"""``/ready`` and ``dg_worker_ready`` reflect stalls (issue 20, item 8): the stall watchdog only logged, and
the health check asked ``/metrics``, so a stalled worker looked healthy."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from pipeline.worker import app as app_module
from pipeline.worker import health, stall
from pipeline.worker.observability import WorkerMetrics


def test_a_stalled_worker_is_not_ready_and_a_batch_makes_it_ready_again(make_settings, monkeypatch):
    metrics = WorkerMetrics()
    app = app_module.create_app(make_settings(store="memory://"), metrics=metrics)
    app.finalize()
    parts = app.dg  # type: ignore[attr-defined]
    monkeypatch.setattr(health, "worker_ready", lambda app: True)  # partitions, recovered, flowing
    now = [1000.0]
    dog = parts.watchdog
    dog.clock = lambda: now[0]
    dog.batch_ran()
    view = parts.ready_view(app, app.web)

    def ready() -> tuple[int, Any]:
        response = asyncio.run(view.get(None))
        return response.status, json.loads(response.body)

    assert ready() == (200, {"ready": True, "stalled": False, "waiting_events": 0})
    assert metrics.value("dg_worker_ready") == 1.0

    dog.stalled_for(waiting=7, busy=False)  # the stats timer sees input waiting
    now[0] += stall.STALL_AFTER_S / 2
    assert ready()[0] == 200, "a batch may take a while"
    now[0] += stall.STALL_AFTER_S
    assert ready() == (503, {"ready": False, "stalled": True, "waiting_events": 7})
    assert metrics.value("dg_worker_ready") == 0.0

    dog.batch_ran()
    assert ready()[0] == 200 and metrics.value("dg_worker_ready") == 1.0
    dog.stalled_for(waiting=0, busy=False)
    now[0] += 10 * stall.STALL_AFTER_S
    assert ready()[0] == 200, "idle with nothing waiting is not a stall"

    monkeypatch.setattr(health, "worker_ready", lambda app: False)  # rebalancing, recovering, ...
    assert ready() == (503, {"ready": False, "stalled": False, "waiting_events": 0})
