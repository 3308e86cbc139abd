"""The console over a store with one campaign and one lone account, its Kafka producer replaced."""

from __future__ import annotations

import pytest

from pipeline.console.publish import Publisher
from pipeline.console.store import LIVE, Batch
from pipeline.console.web import Console, open_console
from tests.unit.console.helpers import ANALYST_KEY, FakeProducer, campaign_alerts, users_file


@pytest.fixture
def console(tmp_path, make_settings) -> Console:
    c = open_console(tmp_path / "c.db", users_file(tmp_path))
    with Batch(c.conn) as b:
        for a in campaign_alerts():
            b.alert(LIVE, a)
    c.publisher = Publisher(make_settings(analyst_key=ANALYST_KEY))
    c.publisher._producer = FakeProducer()
    return c
