"""The compose cluster's Kafka security, run on a real broker: docker/compose.yaml's settings for kafka-1,
rendered into server.properties the way the apache/kafka image renders its ``KAFKA_*`` variables, on one
node on loopback; then its own jobs' environments (kafka-provision, topics-init, worker, simulator) log in.

No Docker engine runs here, so this is the nearest to running the compose file: the broker settings, the
logins and the ACLs are the file's own; only the host names, ports and replication factors are made fit
for one node.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kafka import KafkaProducer
from kafka.errors import KafkaError, TopicAuthorizationFailedError

from pipeline.contract.manifest import load_manifest
from pipeline.kafka import acls as kafka_acls
from pipeline.kafka import admin as topics
from pipeline.kafka import local as kafka_local
from pipeline.kafka.config import kafka_python_config
from pipeline.kafka.probe import probe
from pipeline.settings import Settings
from tests.integration.workers import free_ports

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("java") is None or shutil.which("mvn") is None,
        reason="the local Kafka broker needs java and mvn on PATH",
    ),
]

COMPOSE = Path(__file__).resolve().parents[2] / "docker" / "compose.yaml"
SECRET = re.compile(r"\$\{([A-Za-z0-9_]+):\?[^}]*\}")


def image_property_name(variable: str) -> str:
    """The apache/kafka image's rule (``docker/resources/utility``, ConvertKey) for ``KAFKA_<NAME>``: ``_`` is
    ``.``, ``__`` is ``_``, ``___`` is ``-``, all lower case."""
    name = re.sub(r"(?<!_)_(?!_)", ".", variable.removeprefix("KAFKA_"))
    return name.replace("___", "-").replace("__", "_").lower()


def test_image_property_names_follow_the_image_rule() -> None:
    assert image_property_name("KAFKA_LISTENER_NAME_CLIENT_SCRAM___SHA___512_SASL_JAAS_CONFIG") == \
        "listener.name.client.scram-sha-512.sasl.jaas.config"
    assert image_property_name("KAFKA_SUPER_USERS") == "super.users"



class Cluster:
    """kafka-1 of the compose file on loopback, with made-up secrets for the file's ``${VAR:?}``s."""

    def __init__(self, tmp: Path) -> None:
        self.doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
        self.secrets: dict[str, str] = {}
        self.client, self.internal, self.controller = free_ports(3)
        self.data = tmp

    def interpolate(self, value: Any) -> str:
        def secret(match: re.Match[str]) -> str:
            return self.secrets.setdefault(match.group(1), secrets.token_urlsafe(32))

        return SECRET.sub(secret, str(value))

    def host_ports(self, value: str) -> str:
        """compose's service names and ports, as this node's loopback ports."""
        value = re.sub(r"kafka-\d:9092", f"127.0.0.1:{self.client}", value)
        value = re.sub(r"kafka-\d:9094", f"127.0.0.1:{self.internal}", value)
        return ",".join(dict.fromkeys(value.split(",")))  # three brokers became one

    def server_properties(self) -> str:
        env = dict(self.doc["services"]["kafka-1"]["environment"])
        env.update({
            "KAFKA_CONTROLLER_QUORUM_VOTERS": f"1@127.0.0.1:{self.controller}",
            "KAFKA_LISTENERS": f"CLIENT://127.0.0.1:{self.client},CONTROLLER://127.0.0.1:{self.controller},"
                               f"INTERNAL://127.0.0.1:{self.internal}",
            "KAFKA_ADVERTISED_LISTENERS": f"CLIENT://127.0.0.1:{self.client},INTERNAL://127.0.0.1:{self.internal}",
            "KAFKA_LOG_DIRS": str(self.data / "logs"),
            "KAFKA_DEFAULT_REPLICATION_FACTOR": 1, "KAFKA_MIN_INSYNC_REPLICAS": 1,
            "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": 1, "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": 1,
            "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": 1, "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": 0,
        })
        return "".join(f"{image_property_name(k)}={self.interpolate(v)}\n"
                       for k, v in env.items() if k.startswith("KAFKA_"))

    def service_settings(self, service: str) -> Settings:
        """The ``DG_*`` environment compose gives ``service``, as the settings a process there would build."""
        with pytest.MonkeyPatch.context() as env:
            for name in [n for n in os.environ if n.startswith("DG_")]:
                env.delenv(name)
            for key, value in self.doc["services"][service]["environment"].items():
                if key.startswith("DG_"):
                    env.setenv(key, self.host_ports(self.interpolate(value)))
            env.setenv("DG_REPLICATION_FACTOR", "1")  # one node
            return Settings()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    data = tmp_path_factory.mktemp("compose-kafka")
    cluster = Cluster(data)
    libs = kafka_local.ensure_jars(Settings())
    java = shutil.which("java")
    assert java is not None
    (data / "server.properties").write_text(cluster.server_properties())
    (data / "log4j.properties").write_text(f"log4j.rootLogger=INFO, file\nlog4j.appender.file=org.apache.log4j.FileAppender\n"
                                           f"log4j.appender.file.File={data / 'server.log'}\n"
                                           "log4j.appender.file.layout=org.apache.log4j.PatternLayout\n"
                                           "log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n\n")
    base = [java, f"-Dlog4j.configuration=file:{data / 'log4j.properties'}", "-cp", f"{libs}/*"]
    cluster_id = cluster.doc["services"]["kafka-1"]["environment"]["CLUSTER_ID"]
    subprocess.run([*base, "-Xmx256m", "kafka.tools.StorageTool", "format", "-t", cluster_id,
                    "-c", str(data / "server.properties")], check=True, capture_output=True)
    with open(data / "broker.out", "wb") as out:
        broker = subprocess.Popen([*base, "-Xmx512m", "kafka.Kafka", str(data / "server.properties")],
                                  stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        admin = cluster.service_settings("topics-init")
        deadline = time.monotonic() + 90
        while not asyncio.run(probe(admin, timeout=2.0)).ok:
            assert broker.poll() is None, (data / "broker.out").read_text()[-3000:]
            assert time.monotonic() < deadline, "the broker did not come up"
            time.sleep(0.5)
        yield cluster
    finally:
        broker.terminate()
        try:
            broker.wait(30)
        except subprocess.TimeoutExpired:
            broker.kill()
            broker.wait(10)


def test_the_compose_jobs_provision_logins_acls_and_topics_as_admin(
    cluster: Cluster,
) -> None:
    provision = cluster.service_settings("kafka-provision")
    assert provision.sasl_username == "admin" and provision.sasl_mechanism == "PLAIN"
    users, acls = kafka_acls.provision(provision)
    assert users == len(kafka_acls.ROLES) and acls == len(kafka_acls.grants(provision))
    created = topics.create_topics(cluster.service_settings("topics-init"))
    assert {t for t, _ in created} == set(load_manifest())


def _send(settings: Settings, topic: str) -> int:
    producer = KafkaProducer(**kafka_python_config(settings), acks="all", max_block_ms=10_000,
                             bootstrap_timeout_ms=10_000)
    try:
        return int(producer.send(topic, key=b"acct-1", value=b"{}").get(timeout=15).offset)
    finally:
        producer.close(timeout=5)


def test_each_service_logs_in_as_its_role_and_gets_only_its_rights(
    cluster: Cluster,
) -> None:
    simulator = cluster.service_settings("simulator")
    worker = cluster.service_settings("worker")
    assert (simulator.sasl_username, worker.sasl_username) == ("gateway", "worker")
    assert {simulator.sasl_mechanism, worker.sasl_mechanism} == {"SCRAM-SHA-512"}
    assert _send(simulator, "usage-events") >= 0
    with pytest.raises(TopicAuthorizationFailedError):
        _send(simulator, "findings")
    assert _send(worker, "findings") >= 0
    with pytest.raises(TopicAuthorizationFailedError):
        _send(worker, "analyst-verdicts")
    assert asyncio.run(probe(worker, timeout=3.0)).ok


def test_the_admin_password_does_not_open_the_client_listener(
    cluster: Cluster,
) -> None:
    admin = cluster.service_settings("topics-init")
    on_client = admin.model_copy(update={"bootstrap": f"127.0.0.1:{cluster.client}"})  # PLAIN is internal only
    with pytest.raises(KafkaError):
        _send(on_client, "findings")
    anonymous = Settings(bootstrap=f"127.0.0.1:{cluster.client}")
    assert not asyncio.run(probe(anonymous, timeout=3.0)).ok
