"""The Go enforcement consumer (``examples/enforcement-consumer``), a client in another language written from
the contract, verifies the pipeline's real actions on a real Kafka (a lift after an analyst's false-positive
verdict among them), refuses tampered, forged, stale and ambiguous ones, acts on each action id once, and
matches the signing test vectors."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any

import msgpack
import pytest
from kafka import KafkaProducer

from pipeline.contract import signing, verify
from pipeline.contract.verdicts import verdict_for_alert
from pipeline.kafka import admin as topics
from pipeline.simulate import generate
from tests.integration.workers import Worker, produce_events, read_all, wait_until_idle

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CONSUMER = REPO / "examples" / "enforcement-consumer"
VECTORS = REPO / "schemas" / "examples" / "signing"
KEY = "integration-enforcement-key-6f1d0c9b8a7e5d4c3b2a"  # 32+ bytes and not public: may sign enforce actions
DEV_KEY = "distillation-guard-development-key:not-for-enforcement"  # public in the source
ANALYST_KEY = "integration-analyst-key-for-the-go-consumer-test-0123"
LINE = re.compile(r"^(ACCEPT|REJECT|DUPLICATE) (\S+)\[(\d+)\]@(\d+) action_id=\"([^\"]*)\" account_id=\"[^\"]*\""
                  r"(.*)$")


def go_env() -> dict[str, str]:
    """Go's module and build caches in a writable place that outlives the test run (a rebuild is then quick);
    modules come from the Go module proxy, pinned by the committed go.sum."""
    cache = Path(os.environ.get("DG_GO_CACHE", Path(tempfile.gettempdir()) / "dg-go-cache"))
    return {**os.environ, "GOPATH": str(cache / "gopath"), "GOMODCACHE": str(cache / "gopath" / "pkg" / "mod"),
            "GOCACHE": str(cache / "build"), "GOFLAGS": "-mod=readonly -buildvcs=false", "CGO_ENABLED": "0"}


def go_tool() -> str:
    go = shutil.which("go")
    if go is None:
        pytest.skip("the Go toolchain ('go') is not installed: cannot build examples/enforcement-consumer")
    return go


@pytest.fixture(scope="module")
def consumer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The consumer, built with ``go build`` from its own module."""
    go = go_tool()
    binary = tmp_path_factory.mktemp("go") / "enforcement-consumer"
    done = subprocess.run([go, "build", "-o", str(binary), "."], cwd=CONSUMER, env=go_env(), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, f"go build failed:\n{done.stdout}\n{done.stderr}"
    return binary


def test_go_consumers_own_unit_tests_pass(consumer: Path) -> None:
    """``go test``: decoding edge cases (trailing bytes, a key twice, ext types, depth), the canonical form of
    a differently encoded value, the bounded de-duplication memory."""
    done = subprocess.run([go_tool(), "test", "./..."], cwd=CONSUMER, env=go_env(), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr


def test_go_consumer_matches_every_signing_test_vector(consumer: Path) -> None:
    done = subprocess.run([str(consumer), "-vectors", str(VECTORS)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    names = sorted(p.stem for p in VECTORS.glob("*.json"))
    assert [line.split()[1] for line in done.stdout.splitlines() if line.startswith("ok ")] == names


def test_go_consumer_exits_non_zero_on_a_vector_it_does_not_match(consumer: Path, tmp_path: Path) -> None:
    import json

    vector = json.loads((VECTORS / "01_shadow_flag_for_review.json").read_text(encoding="utf-8"))
    vector["canonical_msgpack_hex"] = vector["canonical_msgpack_hex"][:-2] + "00"  # one byte off
    (tmp_path / "off.json").write_text(json.dumps(vector), encoding="utf-8")
    done = subprocess.run([str(consumer), "-vectors", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "FAIL off: canonical bytes differ" in done.stdout


def _resign(original: dict[str, Any], key: bytes, **changes: Any) -> dict[str, Any]:
    """``original`` with ``changes``, signed anew under ``key``."""
    body = {k: v for k, v in original.items() if k != "signature"} | changes
    return body | {"signature": signing.sign(body, key)}


def _duplicate_action_key(action: dict[str, Any]) -> bytes:
    """``action`` as msgpack with a second ``action`` entry ("ban") after its own: signed over neither reading."""
    body = msgpack.packb(action)
    return bytes([body[0] + 1]) + body[1:] + msgpack.packb("action") + msgpack.packb("ban")


def run_pipeline_with_a_false_positive(settings: Any, log: Path) -> str:
    """Run a worker on the tiny scenario, then send an analyst's signed false-positive verdict on the alert
    behind the latest action (by event time, then id: the same whatever the partitions' interleaving), so
    that the worker lifts that account's actions; returns the account."""
    topics.create_topics(settings)
    worker = Worker(settings, log)
    try:
        produce_events(settings, generate("tiny", 1).events)
        wait_until_idle(settings, [worker])
        actions = [msgpack.unpackb(m.value) for m in read_all(settings.bootstrap, settings.topic("enforcement-actions"))]
        alerts = {a["alert_id"]: a for a in (msgpack.unpackb(m.value) for m in
                                             read_all(settings.bootstrap, settings.topic("anomaly-alerts")))}
        assert actions, "the tiny scenario's campaigns lead to enforcement actions"
        latest = max(actions, key=lambda a: (a["ts"], a["action_id"]))
        alert = alerts[latest["alert_ids"][0]]
        verdict = verdict_for_alert(alert, "false_positive", "integration", alert["ts"], ANALYST_KEY.encode())
        producer = KafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
        producer.send(settings.topic("analyst-verdicts"), key=alert["account_id"].encode(),
                      value=msgpack.packb(verdict)).get(timeout=30)
        producer.close()
        wait_until_idle(settings, [worker])
    finally:
        worker.stop()
    return str(alert["account_id"])


def test_go_consumer_accepts_every_real_action_and_rejects_tampered_forged_and_stale_ones(
        consumer: Path, kafka_bootstrap: str, make_settings: Any, tmp_path: Path) -> None:
    settings = make_settings(bootstrap=kafka_bootstrap, enforce=True, signing_key=KEY, analyst_key=ANALYST_KEY)
    dismissed = run_pipeline_with_a_false_positive(settings, tmp_path / "worker.log")
    topic = settings.topic("enforcement-actions")
    real = read_all(settings.bootstrap, topic)
    actions = [msgpack.unpackb(m.value) for m in real]
    assert {a["mode"] for a in actions} == {"enforce"}
    (lift,) = [a for a in actions if a["action"] == "lift"]
    assert lift["account_id"] == dismissed and lift["schema_version"] == 2
    now = max(a["ts"] for a in actions) + 60_000  # judged as at the end of the scenario: event time is in 2026-03
    for a in actions:  # the pipeline's own verifier agrees they are good at that time
        assert not verify.check(a, {"current": KEY.encode()}, now).problems

    # what an attacker with write access to the topic, or a broken producer, could add
    first = actions[0]
    tampered = dict(first, action="flag_for_review" if first["action"] != "flag_for_review" else "ban")
    forged = _resign(first, b"someone-elses-key-0123456789abcdef-0123", action_id="act-forged", action="ban")
    stale = _resign(first, KEY.encode(), action_id="act-stale", expires_ts=first["ts"] + 1)
    public = _resign(first, DEV_KEY.encode(), action_id="act-public-key")
    extra: list[tuple[str, bytes, str]] = [
        ("tampered", msgpack.packb(tampered), "signature does not match"),
        ("redelivered", real[0].value, ""),
        ("forged", msgpack.packb(forged), "signature does not match"),
        ("stale", msgpack.packb(stale), "expired at"),
        ("public key", msgpack.packb(public), "signed with a key that is public"),
        ("duplicate key", _duplicate_action_key(first), 'duplicate key "action"'),
        ("not msgpack", b'{"action": "ban"}', "not one msgpack value"),
    ]
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
    sent = {}
    for name, value, _ in extra:
        meta = producer.send(topic, key=first["account_id"].encode(), value=value).get(timeout=30)
        sent[(meta.partition, meta.offset)] = name
    producer.close()

    env = {**os.environ, "DG_SIGNING_KEY": KEY, "DG_TOPIC_PREFIX": settings.topic_prefix,
           # the development key as a "previous" key: its actions verify, but may not be enforced
           "DG_SIGNING_KEYS_PREVIOUS": DEV_KEY}
    done = subprocess.run([str(consumer), "-bootstrap", settings.bootstrap, "-group", f"enforcement-{uuid.uuid4().hex}",
                           "-now", str(now), "-idle", "8s"], env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    lines: dict[tuple[int, int], tuple[str, str, str]] = {}
    for line in done.stdout.splitlines():
        m = LINE.match(line)
        assert m, f"not a line of the consumer's format: {line!r}"
        assert m.group(2) == topic
        lines[(int(m.group(3)), int(m.group(4)))] = (m.group(1), m.group(5), m.group(6))
    assert len(lines) == len(real) + len(extra), done.stdout

    # every real action accepted, each id once (the pipeline may itself deliver one twice: at least once)
    accepted: set[str] = set()
    for m in real:
        verdict, action_id, rest = lines[(m.partition, m.offset)]
        assert verdict in ("ACCEPT", "DUPLICATE"), rest
        if verdict == "ACCEPT":
            assert action_id not in accepted
            accepted.add(action_id)
            assert "mode=enforce key=current" in rest and ": would " in rest and "shadow" not in rest
    assert accepted == {a["action_id"] for a in actions}

    # the lift ends the dismissed account's actions that the consumer had taken, and names them
    lift_line = next(rest for verdict, action_id, rest in lines.values() if action_id == lift["action_id"])
    ended = set(lift_line.split("ended=")[1].split(" ")[0].split(","))
    taken = {a["action_id"] for a in actions if a["account_id"] == dismissed and a["action"] != "lift"}
    assert ended == taken & set(lift["lifts"]) and ended, lift_line

    for (partition, offset), name in sent.items():
        verdict, action_id, rest = lines[(partition, offset)]
        want = dict((n, r) for n, _, r in extra)[name]
        if name == "redelivered":
            assert (verdict, action_id) == ("DUPLICATE", first["action_id"]), rest
        else:
            assert verdict == "REJECT", (name, rest)
            assert want in rest, (name, rest)


    # run as a service (no -idle): SIGTERM stops it promptly and cleanly, leaving its group
    service = subprocess.Popen([str(consumer), "-bootstrap", settings.bootstrap, "-group",
                                f"enforcement-{uuid.uuid4().hex}", "-now", str(now)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert service.stdout is not None and service.stdout.readline().startswith("ACCEPT ")
        service.terminate()
        out, err = service.communicate(timeout=30)
    finally:
        if service.poll() is None:
            service.kill()
    assert service.returncode == 0 and " accepted, " in err and "commit failed" not in err, err


def test_go_consumer_logs_in_as_the_enforcement_principal_of_a_sasl_broker(
        consumer: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """On a broker with SCRAM logins and ACLs (``kafka start --sasl``), the consumer runs with the
    ``enforcement`` role's env file as it is, and reads and verifies what the worker principal wrote."""
    from kafka.errors import KafkaError

    from pipeline.kafka import local as kafka_local
    from pipeline.kafka.config import kafka_python_config
    from pipeline.settings import Settings
    from tests.conftest import _free_port

    tag = uuid.uuid4().hex[:8]
    data = tmp_path_factory.mktemp("kafka-sasl")
    base = Settings(kafka_port=_free_port(), kafka_controller_port=_free_port(), kafka_data_dir=data,
                    kafka_sasl=True, topic_prefix=f"ec{tag}-", app_id=f"dg-ec-{tag}")
    kafka_local.start(base, timeout=120.0)
    try:
        for attempt in range(3):  # the admin client may ask before it knows the controller
            try:
                topics.create_topics(kafka_local.role_settings(base, "admin"))
                break
            except KafkaError:
                if attempt == 2:
                    raise
        action = _resign({"schema_version": 1, "action_id": "act-sasl", "ts": 1_772_409_600_000,
                          "account_id": "acct-1", "action": "throttle", "mode": "enforce", "reason_codes": [],
                          "alert_ids": ["alr-1"], "expires_ts": 1_772_409_600_000 + 3_600_000,
                          "policy_version": "p"}, KEY.encode())
        producer = KafkaProducer(**kafka_python_config(kafka_local.role_settings(base, "worker")), acks="all")
        producer.send(base.topic("enforcement-actions"), key=b"acct-1", value=msgpack.packb(action)).get(timeout=30)
        producer.close()

        login = (data / "sasl" / "enforcement.env").read_text().splitlines()
        env = {**os.environ, **dict(line.split("=", 1) for line in login if "=" in line and not line.startswith("#")),
               "DG_SIGNING_KEY": KEY, "DG_TOPIC_PREFIX": base.topic_prefix}
        done = subprocess.run([str(consumer), "-group", f"enforcement-{tag}", "-now", str(action["ts"]),
                               "-idle", "8s"], env=env, capture_output=True, text=True, timeout=180)
    finally:
        kafka_local.stop(base, data_dir=data)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith(f'ACCEPT {base.topic("enforcement-actions")}[') and 'action_id="act-sasl"' in \
        done.stdout and ": would throttle" in done.stdout, done.stdout + done.stderr
