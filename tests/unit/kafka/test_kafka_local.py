"""The local Kafka launcher's pure parts (starting a broker is covered by tests/integration)."""

from __future__ import annotations

import base64
import uuid

import pytest

from pipeline.kafka import local as kafka_local
from pipeline.kafka import local_config
from pipeline.settings import Settings


def test_cluster_ids_never_start_with_a_dash(monkeypatch) -> None:
    # the storage tool read a cluster id starting with "-" as an option and failed a CI run (1 draw in 64)
    dash_first = uuid.UUID(bytes=base64.urlsafe_b64decode("-" + "A" * 21 + "=="))
    draws = iter([dash_first, dash_first, uuid.UUID(int=1)])
    monkeypatch.setattr(local_config.uuid, "uuid4", lambda: next(draws))
    assert kafka_local.new_cluster_id() == base64.urlsafe_b64encode(uuid.UUID(int=1).bytes).decode().rstrip("=")
    monkeypatch.undo()
    ids = [kafka_local.new_cluster_id() for _ in range(2000)]
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)
    assert len(set(ids)) == len(ids)


def test_sasl_mode_leaves_no_listener_without_a_login_and_turns_the_authorizer_on(tmp_path) -> None:
    settings = Settings(kafka_port=19092, kafka_controller_port=19093)
    plain = local_config.server_properties(settings, tmp_path)
    assert "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT" in plain
    assert "authorizer" not in plain
    sasl = dict(line.split("=", 1) for line in local_config.server_properties(settings, tmp_path, "pw-123").splitlines()
                if "=" in line and not line.startswith("#"))
    assert all(p.split(":")[1] == "SASL_PLAINTEXT" for p in sasl["listener.security.protocol.map"].split(","))
    assert sasl["authorizer.class.name"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert sasl["allow.everyone.if.no.acl.found"] == "false" and sasl["super.users"] == "User:admin"
    assert sasl["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert sasl["advertised.listeners"] == "SASL_PLAINTEXT://127.0.0.1:19092"


def test_a_data_dir_keeps_the_mode_it_was_formatted_in(tmp_path) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "meta.properties").write_text("version=1\n")  # formatted, without SASL
    with pytest.raises(kafka_local.KafkaLocalError, match="formatted without SASL"):
        kafka_local.start(Settings(kafka_sasl=True), data_dir=tmp_path, timeout=1)
    (tmp_path / "sasl").mkdir()
    (tmp_path / "sasl" / "admin.env").write_text("DG_SASL_PASSWORD=x\n")  # now it looks formatted with SASL
    with pytest.raises(kafka_local.KafkaLocalError, match="formatted with SASL"):
        kafka_local.start(Settings(kafka_sasl=False), data_dir=tmp_path, timeout=1)


def test_role_settings_name_the_missing_login(tmp_path) -> None:
    with pytest.raises(kafka_local.KafkaLocalError, match="no login for 'worker'"):
        kafka_local.role_settings(Settings(), "worker", data_dir=tmp_path)
