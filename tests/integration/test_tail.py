"""tail and check-partitioning on a real Kafka: the engine's alerts and signed actions read back as JSON
lines, filtered; the tail | verify pipe of docs/operations.md works as written; a mis-keyed message is found."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from pipeline.cli import main
from pipeline.contract import codec
from pipeline.detection.engine import Engine
from pipeline.detection.partition import partition_for
from pipeline.kafka import admin as topics
from pipeline.kafka.produce import make_producer
from pipeline.settings import Settings
from tests import factories

pytestmark = pytest.mark.integration

SIGNING_KEY = "tail-test-key-0123456789abcdef0123456789abcdef"


def _engine_outputs(settings: Settings) -> list[Any]:
    """Real engine output: two harvesting accounts caught amid casual ones (alerts and signed actions),
    in the last hours, so the actions are still in force."""
    engine = Engine.from_config(settings)
    events = factories.harvester_and_noise(2_000, seed=3)
    events += [{**ev, "event_id": f"b-{ev['event_id']}", "account_id": ev["account_id"] + "-b"}
               for ev in factories.harvester_and_noise(2_000, seed=4)]
    shift = int(time.time() * 1000) - max(e["ts"] for e in events) - 60_000  # recent: its actions not expired
    events = sorted(({**e, "ts": e["ts"] + shift} for e in events), key=lambda e: e["ts"])
    return list(engine.replay(events))


def _send(settings: Settings, topic: str, messages: list[tuple[bytes | None, bytes, int | None]]) -> None:
    producer = make_producer(settings)
    for key, value, partition in messages:
        producer.send(settings.topic(topic), key=key, value=value, partition=partition)
    producer.flush(timeout=60)
    producer.close(timeout=30)


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str], str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, [line for line in out.splitlines() if line], err


@pytest.fixture
def outputs_on_kafka(kafka_bootstrap: str, make_settings: Callable[..., Settings]) -> tuple[Settings, list[Any]]:
    settings = make_settings(bootstrap=kafka_bootstrap, signing_key=SIGNING_KEY)
    topics.create_topics(settings, ["anomaly-alerts", "enforcement-actions"])
    outputs = _engine_outputs(settings)
    for name in ("anomaly-alerts", "enforcement-actions"):
        _send(settings, name, [(o.key.encode(), codec.encode(o.value), None) for o in outputs if o.topic == name])
    _send(settings, "anomaly-alerts", [(b"junk", b"\xc1 not msgpack", None)])
    return settings, outputs


def test_tail_shows_the_engines_alerts_as_json_lines_and_filters_them(outputs_on_kafka, capsys) -> None:
    settings, outputs = outputs_on_kafka
    alerts = [o.value for o in outputs if o.topic == "anomaly-alerts"]
    assert {a["account_id"] for a in alerts} >= {"harvester", "harvester-b"}
    kafka = ["--bootstrap", settings.bootstrap, "--topic-prefix", settings.topic_prefix]

    code, lines, _ = _cli(capsys, "tail", "anomaly-alerts", *kafka)
    assert code == 0
    recs = [json.loads(line) for line in lines]
    shown = {r["value"]["alert_id"]: r for r in recs if r["value"] is not None}
    assert set(shown) == {a["alert_id"] for a in alerts}
    for a in alerts:
        rec = shown[a["alert_id"]]
        assert rec["value"] == a and rec["key"] == a["account_id"] and rec["encoding"] == "msgpack"
        assert rec["topic"] == settings.topic("anomaly-alerts") and rec["timestamp"] > 0
        assert rec["partition"] == partition_for(a["account_id"], 4)
    (junk,) = [r for r in recs if r["value"] is None]
    assert junk["key"] == "junk" and junk["error"].startswith("neither msgpack nor JSON") and junk["value_b64"]

    code, lines, _ = _cli(capsys, "tail", "anomaly-alerts", "--account", "harvester-b", "--severity", "high", *kafka)
    want = {a["alert_id"] for a in alerts if a["account_id"] == "harvester-b" and a["severity"] in ("high", "critical")}
    assert code == 0 and want and {json.loads(line)["value"]["alert_id"] for line in lines} == want

    code, lines, _ = _cli(capsys, "tail", "anomaly-alerts", "--max", "2", "--from", "1h", *kafka)
    assert code == 0 and len(lines) == 2
    code, lines, _ = _cli(capsys, "tail", "anomaly-alerts", "--from", "now", *kafka)
    assert code == 0 and lines == []


def test_the_readme_pipe_from_tail_into_verify_passes_real_actions_and_fails_a_tampered_one(
        outputs_on_kafka, tmp_path) -> None:
    settings, outputs = outputs_on_kafka
    actions = [o.value for o in outputs if o.topic == "enforcement-actions"]
    assert actions
    env = {**os.environ, "DG_BOOTSTRAP": settings.bootstrap, "DG_TOPIC_PREFIX": settings.topic_prefix,
           "DG_SIGNING_KEY": SIGNING_KEY}
    py = f"{sys.executable} -m pipeline"
    # docs/operations.md's line, with ./run spelt as the interpreter running the package
    pipe = f"{py} tail enforcement-actions | DG_SIGNING_KEY={SIGNING_KEY} {py} verify --input -"
    done = subprocess.run(pipe, shell=True, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    oks = [line for line in done.stdout.splitlines() if line.startswith("OK")]
    assert len(oks) == len(actions) and all("enforcement-actions partition" in line for line in oks)
    kcat = shutil.which("kcat") or shutil.which("kafkacat")
    if kcat is not None:  # docs/operations.md's kcat line, with the test broker and prefix
        topic = settings.topic("enforcement-actions")
        line = (f"{kcat} -b {settings.bootstrap} -C -t {topic} -e -q -f '%s' | DG_SIGNING_KEY={SIGNING_KEY} "
                f"{py} verify --input -")
        done = subprocess.run(line, shell=True, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and done.stdout.count("OK") == len(actions), done.stdout + done.stderr

    tampered = {**actions[0], "action": "ban"}
    _send(settings, "enforcement-actions", [(tampered["account_id"].encode(), codec.encode(tampered), None)])
    done = subprocess.run(pipe, shell=True, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert [line for line in done.stdout.splitlines() if line.startswith("FAIL")][0].count("signature") == 1


def test_tail_follow_prints_messages_that_arrive_after_it_started(kafka_bootstrap, make_settings) -> None:
    settings = make_settings(bootstrap=kafka_bootstrap)
    topics.create_topics(settings, ["anomaly-alerts"])
    env = {**os.environ, "DG_BOOTSTRAP": settings.bootstrap, "DG_TOPIC_PREFIX": settings.topic_prefix}
    started = int(time.time() * 1000) - 1000
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "tail", "anomaly-alerts", "--follow", "--from",
                             str(started), "--max", "2", "--values"], env=env, stdout=subprocess.PIPE, text=True)
    first = {"alert_id": "alr-1", "account_id": "acct-9", "severity": "low"}
    second = {**first, "alert_id": "alr-2"}
    try:
        _send(settings, "anomaly-alerts", [(b"acct-9", codec.encode(first), None)])
        assert proc.stdout is not None and json.loads(proc.stdout.readline()) == first
        _send(settings, "anomaly-alerts", [(b"acct-9", codec.encode(second), None)])  # after it was shown
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0 and [json.loads(line) for line in out.splitlines()] == [second]


def test_check_partitioning_finds_a_deliberately_mis_keyed_message(kafka_bootstrap, make_settings, capsys) -> None:
    settings = make_settings(bootstrap=kafka_bootstrap)
    topics.create_topics(settings, ["usage-events"])
    kafka = ["--bootstrap", settings.bootstrap, "--topic-prefix", settings.topic_prefix]
    events = [factories.event(i) for i in range(40)]
    _send(settings, "usage-events", [(e["account_id"].encode(), codec.encode(e), None) for e in events])
    code, lines, err = _cli(capsys, "check-partitioning", "usage-events", *kafka)
    assert code == 0 and lines == [] and "checked the last 40 messages" in err and "0 on the wrong" in err

    stray = factories.event(99, account_id="acct-stray")
    wrong = (partition_for("acct-stray", 4) + 1) % 4
    _send(settings, "usage-events", [(b"acct-stray", codec.encode(stray), wrong)])
    code, lines, err = _cli(capsys, "check-partitioning", "usage-events", "--sample", "100", *kafka)
    assert code == 1 and "1 on the wrong partition" in err
    (line,) = lines
    assert line.startswith(f"MISPLACED partition {wrong} offset ") and "'acct-stray'" in line
    assert f"gives partition {partition_for('acct-stray', 4)} of 4" in line


def test_unknown_and_unkeyed_topics_are_clear_usage_errors(make_settings, capsys) -> None:
    code, _, err = _cli(capsys, "tail", "alerts")
    assert code == 2 and "unknown topic 'alerts'" in err and "anomaly-alerts" in err
    code, _, err = _cli(capsys, "check-partitioning", "usage-events-dlq")
    assert code == 2 and "not by account id" in err


def test_a_topic_missing_on_the_cluster_is_reported_and_not_created_by_looking(
        kafka_bootstrap, make_settings, capsys) -> None:
    from kafka import KafkaAdminClient

    settings = make_settings(bootstrap=kafka_bootstrap)
    kafka = ["--bootstrap", settings.bootstrap, "--topic-prefix", settings.topic_prefix]
    code, _, err = _cli(capsys, "tail", "anomaly-alerts", *kafka)
    assert code == 2 and "does not exist" in err
    code, _, err = _cli(capsys, "check-partitioning", "usage-events", *kafka)
    assert code == 2 and "does not exist" in err
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        assert not [t for t in admin.list_topics() if t.startswith(settings.topic_prefix)]
    finally:
        admin.close()


def test_verify_reads_the_topic_itself_and_checks_the_key_id_header(
        kafka_bootstrap, make_settings, capsys, monkeypatch) -> None:
    """``verify --topic enforcement-actions`` (issue 21): the topic's msgpack read directly, and each
    action's ``dg.signing-key-id`` header, as the worker sends it, must name the key its signature matched."""
    from pipeline.contract.signing import KEY_ID_HEADER, signing_key_id

    settings = make_settings(bootstrap=kafka_bootstrap, signing_key=SIGNING_KEY)
    topics.create_topics(settings, ["enforcement-actions"])
    actions = [o.value for o in _engine_outputs(settings) if o.topic == "enforcement-actions"]
    assert actions
    header = [(KEY_ID_HEADER, signing_key_id(settings).encode())]
    producer = make_producer(settings)
    for a in actions:
        producer.send(settings.topic("enforcement-actions"), key=a["account_id"].encode(), value=codec.encode(a),
                      headers=header)
    producer.flush(timeout=60)
    monkeypatch.setenv("DG_BOOTSTRAP", settings.bootstrap)
    monkeypatch.setenv("DG_TOPIC_PREFIX", settings.topic_prefix)
    monkeypatch.setenv("DG_SIGNING_KEY", SIGNING_KEY)
    code, lines, err = _cli(capsys, "verify", "--topic", "enforcement-actions")
    assert code == 0, lines + [err]
    assert len(lines) == len(actions) and all(line.startswith("OK ") for line in lines)

    # the same action relabelled as signed by another key (a mixed-up rotation, or a forged header)
    producer.send(settings.topic("enforcement-actions"), key=actions[0]["account_id"].encode(),
                  value=codec.encode(actions[0]), headers=[(KEY_ID_HEADER, b"0123456789abcdef")])
    producer.flush(timeout=60)
    producer.close(timeout=30)
    code, lines, _ = _cli(capsys, "verify", "--topic", "enforcement-actions")
    (fail,) = [line for line in lines if line.startswith("FAIL")]
    assert code == 1 and "header names key '0123456789abcdef', none of the keys held" in fail
    code, _, err = _cli(capsys, "verify")
    assert code == 2 and "either --input" in err
