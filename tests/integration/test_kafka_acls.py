"""Kafka ACLs on a real broker: each principal can do its job and is refused everything else.

One local broker in SASL mode (``kafka start --sasl``: SCRAM-SHA-512 logins, the ``StandardAuthorizer``,
the ACLs of ``pipeline.kafka.acls``) for the whole module. The refusals are the broker's own answers
(``TopicAuthorizationFailedError`` and friends), seen by the same kafka-python clients the pipeline uses.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import (
    ClusterAuthorizationFailedError,
    KafkaError,
    TopicAuthorizationFailedError,
)
from pydantic import SecretStr

from pipeline.kafka import admin as topics
from pipeline.kafka import local as kafka_local
from pipeline.kafka.config import kafka_python_config
from pipeline.kafka.probe import probe
from pipeline.settings import Settings
from tests import factories
from tests.integration.workers import Worker, free_ports

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("java") is None or shutil.which("mvn") is None,
        reason="the local Kafka broker needs java and mvn on PATH",
    ),
]

REFUSED = (TopicAuthorizationFailedError, ClusterAuthorizationFailedError)



@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings of a pipeline on a SASL-mode broker of its own (started once for the module)."""
    port, controller_port, web_port, metrics_port = free_ports(4)
    tag = uuid.uuid4().hex[:8]
    base = Settings(
        kafka_port=port, kafka_controller_port=controller_port, kafka_data_dir=tmp_path_factory.mktemp("kafka-sasl"),
        kafka_sasl=True, topic_prefix=f"acl{tag}-", app_id=f"dg-acl-{tag}", replay_prefix=f"sandbox-acl{tag}-",
        store_dir=tmp_path_factory.mktemp("store"), web_port=web_port, metrics_port=metrics_port,
    )
    kafka_local.start(base, timeout=120.0)
    try:
        for attempt in range(3):  # kafka-python's admin can ask before it knows the controller (NodeNotReady)
            try:
                topics.create_topics(as_role(base, "admin"))
                break
            except KafkaError:
                if attempt == 2:
                    raise
                time.sleep(1.0)
        yield base
    finally:
        kafka_local.stop(base)


def as_role(settings: Settings, role: str) -> Settings:
    return kafka_local.role_settings(settings, role)


def produce(settings: Settings, role: str, topic: str, *, idempotent: bool = True, value: bytes = b"{}") -> int:
    """Send one message to ``topic`` (unprefixed name, or a full name with ``topic`` given as is by the
    caller) as ``role`` and wait for the broker's answer: the offset, or the broker's error raised."""
    login = as_role(settings, role)
    producer = KafkaProducer(**kafka_python_config(login), acks="all", enable_idempotence=idempotent,
                             max_block_ms=10_000, retries=0 if not idempotent else 5)
    try:
        return int(producer.send(topic, key=b"acct-1", value=value).get(timeout=15).offset)
    finally:
        producer.close(timeout=5)


def consume(settings: Settings, role: str, topic: str, *, group: str | None, want: int, timeout: float = 20.0) -> list:
    login = as_role(settings, role)
    consumer = KafkaConsumer(topic, **kafka_python_config(login), group_id=group, auto_offset_reset="earliest",
                             enable_auto_commit=group is not None, consumer_timeout_ms=1000)
    got: list = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < want and time.monotonic() < deadline:
            got.extend(consumer)
    finally:
        consumer.close()
    return got


def test_roles_get_logins_in_private_env_files(settings: Settings) -> None:
    folder = Path(settings.kafka_data_dir) / "sasl"
    assert folder.stat().st_mode & 0o777 == 0o700
    for role in ("admin", "gateway", "worker", "analyst", "enforcement", "replay"):
        env = folder / f"{role}.env"
        assert env.stat().st_mode & 0o777 == 0o600
        lines = dict(line.split("=", 1) for line in env.read_text().splitlines() if "=" in line and line[0] != "#")
        assert lines["DG_SASL_USERNAME"] == role and lines["DG_SASL_MECHANISM"] == "SCRAM-SHA-512"
        assert len(lines["DG_SASL_PASSWORD"]) >= 32
    assert (Path(settings.kafka_data_dir) / "server.properties").stat().st_mode & 0o777 == 0o600


def test_gateway_writes_usage_events_but_is_refused_findings_and_verdicts(settings: Settings) -> None:
    assert produce(settings, "gateway", settings.topic("usage-events")) >= 0
    for topic in ("findings", "analyst-verdicts", "enforcement-actions", "link-updates"):
        with pytest.raises(TopicAuthorizationFailedError):
            produce(settings, "gateway", settings.topic(topic))


def test_gateway_cannot_read_what_it_writes(settings: Settings) -> None:
    with pytest.raises(TopicAuthorizationFailedError):
        consume(settings, "gateway", settings.topic("usage-events"), group=None, want=1, timeout=5)


def test_analyst_writes_verdicts_and_nothing_else(settings: Settings) -> None:
    assert produce(settings, "analyst", settings.topic("analyst-verdicts")) >= 0
    for topic in ("usage-events", "findings"):
        with pytest.raises(TopicAuthorizationFailedError):
            produce(settings, "analyst", settings.topic(topic))


def test_enforcement_reads_actions_but_cannot_write_them(settings: Settings) -> None:
    action = msgpack.packb({"action_id": "a-1", "action": "ban"})
    produce(settings, "admin", settings.topic("enforcement-actions"), value=action)
    got = consume(settings, "enforcement", settings.topic("enforcement-actions"), group="enforcement-svc", want=1)
    assert [m.value for m in got] == [action]
    # an idempotent producer is refused at InitProducerId (no WRITE anywhere), a plain one at the topic
    with pytest.raises(KafkaError) as refused:
        produce(settings, "enforcement", settings.topic("enforcement-actions"))
    assert "ClusterAuthorizationFailed" in str(refused.value) or isinstance(refused.value, REFUSED)
    with pytest.raises(TopicAuthorizationFailedError):
        produce(settings, "enforcement", settings.topic("enforcement-actions"), idempotent=False)
    with pytest.raises(KafkaError):  # only groups named enforcement… are its own
        consume(settings, "enforcement", settings.topic("enforcement-actions"), group=settings.app_id, want=1,
                timeout=5)


def test_replay_reads_inputs_and_writes_only_under_the_sandbox_prefix(settings: Settings) -> None:
    produce(settings, "gateway", settings.topic("usage-events"))
    assert consume(settings, "replay", settings.topic("usage-events"), group=None, want=1)
    sandbox = as_role(settings, "replay").model_copy(update={"topic_prefix": settings.replay_prefix})
    created = dict(topics.create_topics(sandbox, ["anomaly-alerts", "enforcement-actions"]))
    assert set(created) == {sandbox.topic("anomaly-alerts"), sandbox.topic("enforcement-actions")}
    assert produce(settings, "replay", sandbox.topic("enforcement-actions"), idempotent=False) >= 0
    for topic in ("enforcement-actions", "anomaly-alerts", "findings", "usage-events"):
        with pytest.raises(TopicAuthorizationFailedError):
            produce(settings, "replay", settings.topic(topic), idempotent=False)
    with pytest.raises(RuntimeError, match="TopicAuthorizationFailed"):  # nor create topics outside it
        topics.create_topics(as_role(settings, "replay").model_copy(update={"topic_prefix": "elsewhere-"}),
                             ["enforcement-actions"])


def test_a_wrong_password_is_refused_within_the_clients_timeout(settings: Settings) -> None:
    wrong = as_role(settings, "gateway").model_copy(update={"sasl_password": SecretStr("not-the-password-at-all")})
    start = time.monotonic()
    with pytest.raises(KafkaError):
        producer = KafkaProducer(**kafka_python_config(wrong), max_block_ms=5_000, bootstrap_timeout_ms=5_000)
        try:
            producer.send(settings.topic("usage-events"), value=b"{}").get(timeout=10)
        finally:
            producer.close(timeout=2)
    assert time.monotonic() - start < 15


def test_worker_principal_runs_the_pipeline_and_cannot_forge_inputs(settings: Settings, tmp_path: Path) -> None:
    """A real worker logged in as ``worker`` reads the gateway's events and writes alerts and the DLQ (its
    changelogs and consumer group included); the same login is refused writing verdicts or events."""
    events = factories.harvester_and_noise(3_000)
    login = as_role(settings, "gateway")
    producer = KafkaProducer(**kafka_python_config(login), acks="all", linger_ms=20)
    for ev in events:
        producer.send(settings.topic("usage-events"), key=ev["account_id"].encode(), value=msgpack.packb(ev))
    producer.send(settings.topic("usage-events"), key=b"bad", value=b"\xc1 not an event")
    producer.flush()
    producer.close()

    worker = Worker(as_role(settings, "worker"), tmp_path / "worker.log")
    try:
        deadline = time.monotonic() + 180
        alerts: list = []
        while not alerts and time.monotonic() < deadline:
            assert worker.alive(), worker.log_tail()
            alerts = consume(settings, "admin", settings.topic("anomaly-alerts"), group=None, want=1, timeout=5)
        dlq: list = []
        while b"\xc1 not an event" not in [m.value for m in dlq] and time.monotonic() < deadline:
            dlq = consume(settings, "admin", settings.topic("usage-events-dlq"), group=None, want=10, timeout=3)
        assert worker.alive(), worker.log_tail()
    finally:
        worker.stop()
    assert alerts and msgpack.unpackb(alerts[0].value)["account_id"] == "harvester"
    assert b"\xc1 not an event" in [m.value for m in dlq]
    log = (tmp_path / "worker.log").read_text(errors="replace")
    assert "AuthorizationFailed" not in log, log[-4000:]
    for topic in ("analyst-verdicts", "usage-events"):
        with pytest.raises(TopicAuthorizationFailedError):
            produce(settings, "worker", settings.topic(topic))


def test_the_broker_probe_logs_in_and_tells_a_refused_login_from_silence(settings: Settings) -> None:
    worker = as_role(settings, "worker")
    assert asyncio.run(probe(worker, timeout=3.0)).ok
    wrong = worker.model_copy(update={"sasl_password": SecretStr("not-the-password-at-all")})
    start = time.monotonic()
    refused = asyncio.run(probe(wrong, timeout=3.0))
    assert not refused.ok and refused.login_refused
    assert time.monotonic() - start < 4.0, "a refused login is an answer, not a hang"


def test_a_worker_whose_login_is_revoked_exits_72_instead_of_running_blind(
    settings: Settings, tmp_path: Path
) -> None:
    """Its open connections outlive the revocation, so only the watchdog's fresh login notices; the TCP
    check it had before kept such a worker 'healthy' forever, unable to reconnect after any broker restart."""
    from kafka import KafkaAdminClient

    from pipeline.kafka.acls import upsert_users
    from pipeline.worker.exits import EXIT_BROKER_GONE

    login = as_role(settings, "worker")
    worker = Worker(login.model_copy(update={"broker_timeout_s": 8.0}), tmp_path / "worker.log")
    admin = KafkaAdminClient(**kafka_python_config(as_role(settings, "admin")))
    try:
        deadline = time.monotonic() + 90
        while "[^Worker]: Ready" not in worker.log_path.read_text(errors="replace"):
            assert worker.alive() and time.monotonic() < deadline, worker.log_tail()
            time.sleep(0.5)
        upsert_users(admin, {"worker": "a-new-password-the-worker-does-not-know"})
        deadline = time.monotonic() + 60
        while worker.alive() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert worker.returncode == EXIT_BROKER_GONE, worker.log_tail()
        assert "refuse the worker's login" in worker.log_path.read_text(errors="replace")
    finally:
        upsert_users(admin, {"worker": login.sasl_password.get_secret_value()})  # type: ignore[union-attr]
        admin.close()
        if worker.alive():
            worker.stop()


def test_the_backtest_command_as_replay_writes_its_sandbox_and_nothing_else(settings: Settings) -> None:
    """``backtest --topic … --to-prefix`` run as the replay principal: the real command fits its ACLs, and
    a prefix outside the sandbox is refused by the broker (exit 3, the cause named)."""
    from pipeline.proc import REPO

    replay = as_role(settings, "replay")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("DG_")}, **replay.to_env(),
           "PYTHONPATH": str(REPO)}

    def backtest(prefix: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pipeline", "backtest", "--topic", "usage-events",
                               "--to-prefix", prefix, "--quiet"],
                              env=env, capture_output=True, text=True, timeout=180)

    inside = backtest(f"{settings.replay_prefix}bt-")
    assert inside.returncode in (0, 1), inside.stdout + inside.stderr  # 1: the bad records other tests sent
    assert "Authorization" not in inside.stdout + inside.stderr
    actions = consume(settings, "admin", f"{settings.replay_prefix}bt-enforcement-actions", group=None, want=1)
    alerts = consume(settings, "admin", f"{settings.replay_prefix}bt-anomaly-alerts", group=None, want=1)
    assert alerts or actions, "the harvester of the worker test should have been found again"
    outside = backtest("elsewhere-")
    assert outside.returncode == 3 and "TopicAuthorizationFailed" in outside.stderr, outside.stderr[-2000:]
