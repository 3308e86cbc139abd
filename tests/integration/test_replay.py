"""Topic replay: a stored topic range through the backtest engine, isolated from live topics."""

from __future__ import annotations

import time

import msgpack
import pytest

from pipeline.cli import main
from pipeline.contract.eventfile import read_jsonl
from pipeline.kafka import admin as topics
from pipeline.offline.evaluation import flagged_accounts
from pipeline.simulate import generate
from tests.integration.workers import produce_events, read_all

pytestmark = pytest.mark.integration


def test_topic_replay_matches_file_backtest_and_writes_only_to_the_sandbox(kafka_bootstrap, make_settings,
                                                                           tmp_path):
    settings = make_settings(bootstrap=kafka_bootstrap)
    topics.create_topics(settings)
    sim = generate("tiny", 2)
    start = int(time.time() * 1000) - 1000
    produce_events(settings, sim.events)
    common = ["--bootstrap", kafka_bootstrap, "--topic-prefix", settings.topic_prefix, "-q"]

    def replay(tag: str, *extra: str) -> list[dict]:
        out = tmp_path / f"alerts-{tag}.jsonl"
        rc = main(["backtest", "--topic", "usage-events", "--from", str(start), "--alerts-out", str(out),
                   "--actions-out", str(tmp_path / f"actions-{tag}.jsonl"), *common, *extra])
        assert rc == 0
        return read_jsonl(out)

    first = replay("1")
    second = replay("2", "--to-prefix", "sandbox-" + settings.topic_prefix)
    assert (tmp_path / "alerts-1.jsonl").read_bytes() == (tmp_path / "alerts-2.jsonl").read_bytes()
    assert (tmp_path / "actions-1.jsonl").read_bytes() == (tmp_path / "actions-2.jsonl").read_bytes()

    from pipeline.detection import Engine

    engine = Engine.from_config(settings)
    expected: set[str] = set()
    for out in engine.replay(sim.events):
            expected.update(flagged_accounts(out.topic, out.value))
    got = {a for v in first for a in flagged_accounts("anomaly-alerts", v)}
    got |= {a for v in read_jsonl(tmp_path / "actions-1.jsonl") for a in flagged_accounts("enforcement-actions", v)}
    assert got == expected and expected

    sandbox = [msgpack.unpackb(m.value) for m in read_all(kafka_bootstrap,
                                                          "sandbox-" + settings.topic("anomaly-alerts"))]
    key = lambda a: a["alert_id"]  # noqa: E731  # the sandbox topic has 4 partitions: compare as sets
    assert sorted(sandbox, key=key) == sorted(second, key=key)
    assert read_all(kafka_bootstrap, settings.topic("anomaly-alerts")) == []  # live outputs untouched

    # a range that ends before anything was written replays nothing
    assert replay("empty", "--to", str(start + 1)) == []


def test_replay_refuses_to_write_to_live_topics(kafka_bootstrap, make_settings, capsys):
    settings = make_settings(bootstrap=kafka_bootstrap)
    rc = main(["backtest", "--topic", "usage-events", "--to-prefix", settings.topic_prefix, "--bootstrap",
               kafka_bootstrap, "--topic-prefix", settings.topic_prefix, "-q"])
    assert rc == 2
    assert "live topic prefix" in capsys.readouterr().err
