"""The console's consumer on a real Kafka: stopped (or failing) mid-stream and started again, its store
holds every message once: no row missing, none twice, and additive counts (activity) exact."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import msgpack
import pytest
from kafka import KafkaProducer

from pipeline.console import store
from pipeline.console.ingest import Applier, Consumer, count_rows, wait_for
from pipeline.kafka import admin
from tests.unit.console.helpers import BASE_TS, action, alert

pytestmark = pytest.mark.integration
HOUR = 3_600_000


def _messages() -> dict[str, list[dict[str, Any]]]:
    accounts = [f"acct-{i:03d}" for i in range(40)]
    events = [{"schema_version": 1, "event_id": f"ev-{i}", "ts": BASE_TS + (i % 50) * HOUR // 7,
               "account_id": accounts[i % 40], "model": "m", "input_tokens": 1, "output_tokens": 1, "status": "ok"}
              for i in range(3000)]
    alerts = [alert(f"alr-{i}", accounts[i % 40], ts=BASE_TS + i * 1000, severity=("low", "high")[i % 2])
              for i in range(600)]
    actions = [action(f"act-{i}", accounts[i % 40], f"alr-{i}", ts=BASE_TS + i * 1000) for i in range(300)]
    verdicts = [{"schema_version": 2, "alert_id": f"alr-{i}", "account_id": accounts[i % 40], "kind":
                 "account_behaviour", "campaign_id": None, "verdict": "false_positive", "ts": BASE_TS + i,
                 "analyst": "ana", "signature": f"{i:064x}"} for i in range(60)]
    return {"usage-events": events, "anomaly-alerts": alerts, "enforcement-actions": actions,
            "analyst-verdicts": verdicts}


def _produce(settings, messages: dict[str, list[dict[str, Any]]], part: slice) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap, acks="all", linger_ms=5)
    for topic, values in messages.items():
        for v in values[part]:
            producer.send(settings.topic(topic), key=v["account_id"].encode(), value=msgpack.packb(v))
    producer.flush()
    producer.close()


class FailingApplier(Applier):
    """Fails its third batch after writing part of it (a crash between poll and commit)."""

    calls = 0

    def apply(self, records: list[Any]) -> int:
        FailingApplier.calls += 1
        if FailingApplier.calls == 3:
            with store.Batch(self.conn) as batch:
                batch.alert(self.source, alert("alr-ghost", "acct-ghost"))
                raise RuntimeError("crash in the middle of a batch")
        return super().apply(records)


def test_the_consumer_stopped_and_crashed_mid_stream_stores_every_message_once(kafka_bootstrap, make_settings,
                                                                               tmp_path):
    settings = make_settings(bootstrap=kafka_bootstrap)
    admin.create_topics(settings)
    messages = _messages()
    _produce(settings, messages, slice(0, None, 2))  # half now, half while the consumers run
    path = tmp_path / "console.db"

    # 1: a consumer whose third batch crashes half-written
    first = Consumer(store.connect(path), settings, max_records=200)
    first.applier = FailingApplier(first.conn, settings)
    first.start()
    assert wait_for(lambda: first.error is not None, 60), "the injected crash happened"
    first.stop()
    assert store.connect(path).execute("SELECT count(*) FROM alerts WHERE alert_id = 'alr-ghost'").fetchone()[0] == 0

    # 2: a consumer stopped cleanly part-way, while the rest is produced
    batches = threading.Event()
    second = Consumer(store.connect(path), settings, max_records=200,
                      on_batch=lambda n: batches.set())
    second.start()
    assert batches.wait(30)
    producer = threading.Thread(target=_produce, args=(settings, messages, slice(1, None, 2)))
    producer.start()
    second.stop()
    producer.join()

    # 3: a consumer that runs to the end
    third = Consumer(store.connect(path), settings, max_records=500)
    third.start()
    conn = store.connect(path)
    want = {"alerts": 600, "actions": 300, "verdicts": 60}
    try:
        assert wait_for(lambda: dict(count_rows(conn)) == want and
                        conn.execute("SELECT sum(events) FROM activity").fetchone()[0] == 3000, 90), count_rows(conn)
    finally:
        third.stop()
    assert third.error is None
    expected = Counter((e["account_id"], e["ts"] // HOUR) for e in messages["usage-events"])
    stored = {(a, h): n for a, h, n in conn.execute("SELECT account_id, hour, events FROM activity")}
    assert stored == dict(expected)
    assert {r[0] for r in conn.execute("SELECT alert_id FROM alerts")} == {a["alert_id"] for a in
                                                                           messages["anomaly-alerts"]}
    ends = {(t, p): o for (t, p), o in store.offsets(conn).items()}
    assert sum(ends[(settings.topic("analyst-verdicts"), p)] for p in range(settings.input_partitions)) == 60
