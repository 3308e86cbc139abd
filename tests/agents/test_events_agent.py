"""The events agent under Faust's test context (no broker): decode, DLQ, detection, send."""

from __future__ import annotations

import asyncio
from typing import Any
from unittest.mock import AsyncMock

import msgpack
import pytest

from pipeline.app import DLQ_OFFSET, DLQ_REASON, DLQ_TOPIC, create_app
from pipeline.schemas import validator
from tests import factories


@pytest.fixture
def app_parts(make_settings) -> dict[str, Any]:
    settings = make_settings(store="memory://", rate_limit_per_minute=3)
    app = create_app(settings)
    app.finalize()
    app.flow_control.resume()
    parts = app.dg_parts
    parts["sent"] = {"dlq": AsyncMock(), "anomaly-alerts": AsyncMock()}
    parts["dlq_topic"].send = parts["sent"]["dlq"]
    parts["outputs"]["anomaly-alerts"].send = parts["sent"]["anomaly-alerts"]
    parts["settings"] = settings
    return parts


def _run(parts: dict[str, Any], messages: list[tuple[bytes, bytes]]) -> None:
    async def go() -> None:
        async with parts["process_events"].test_context() as agent:
            for key, value in messages:
                await agent.put(value, key=key)

    asyncio.run(go())


def test_invalid_message_goes_to_dlq_with_original_bytes_and_reason(app_parts):
    raw = msgpack.packb(factories.event(1, input_tokens=-3))
    _run(app_parts, [(b"acct-1", raw)])
    dlq = app_parts["sent"]["dlq"]
    assert dlq.await_count == 1
    kwargs = dlq.await_args.kwargs
    assert kwargs["value"] == raw and kwargs["key"] == b"acct-1"
    headers = dict(kwargs["headers"])
    assert headers[DLQ_REASON] == b"input_tokens: expected int >= 0, got -3"
    assert headers[DLQ_TOPIC] == app_parts["settings"].topic("usage-events").encode()
    assert int(headers[DLQ_OFFSET]) >= 0
    assert app_parts["sent"]["anomaly-alerts"].await_count == 0


def test_rate_over_limit_emits_one_schema_valid_alert_and_worker_goes_on(app_parts):
    msgs = [(b"a", b"\x00garbage")]
    msgs += [(b"a", msgpack.packb(factories.event(i, account_id="a", ts=factories.BASE_TS + i))) for i in range(6)]
    _run(app_parts, msgs)
    alerts = app_parts["sent"]["anomaly-alerts"]
    assert alerts.await_count == 1
    value = msgpack.unpackb(alerts.await_args.kwargs["value"])
    validator("anomaly_alert").validate(value)
    assert value["account_id"] == "a" and value["window_events"] == 4
    assert app_parts["sent"]["dlq"].await_count == 1


def test_json_object_input_is_accepted(app_parts):
    import json

    msgs = [(b"j", json.dumps(factories.event(i, account_id="j", ts=factories.BASE_TS + i)).encode())
            for i in range(5)]
    _run(app_parts, msgs)
    assert app_parts["sent"]["dlq"].await_count == 0
    assert app_parts["sent"]["anomaly-alerts"].await_count == 1
