"""Kafka security settings: validated once, and turned into the right kwargs for each client library."""

from __future__ import annotations

import inspect
import ssl
from pathlib import Path
from typing import Any

import faust
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from pydantic import ValidationError

from pipeline.kafka.config import (
    KafkaConfigError,
    aiokafka_config,
    faust_broker_credentials,
    kafka_python_config,
)
from pipeline.settings import Settings

PASSWORD = "s3cr3t-Pa55word"


@pytest.fixture(autouse=True)
def _no_dg_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings here come from arguments only, whatever the developer's shell exports."""
    import os

    for name in list(os.environ):
        if name.startswith("DG_"):
            monkeypatch.delenv(name)


def scram_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "bootstrap": "b1:9094, b2:9094",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": "dg-worker",
        "sasl_password": PASSWORD,
    }
    values.update(overrides)
    return Settings(**values)


def _accepted(cls: Any) -> set[str]:
    return set(getattr(cls, "DEFAULT_CONFIG", {})) or set(inspect.signature(cls.__init__).parameters)


def test_plaintext_is_the_default_and_adds_nothing() -> None:
    settings = Settings(bootstrap="k:9092")
    assert kafka_python_config(settings) == {"bootstrap_servers": ["k:9092"], "security_protocol": "PLAINTEXT"}
    assert aiokafka_config(settings) == {"bootstrap_servers": ["k:9092"], "security_protocol": "PLAINTEXT"}
    assert faust_broker_credentials(settings) is None


def test_sasl_ssl_scram_sha_512_gives_kafka_python_kwargs() -> None:
    config = kafka_python_config(scram_settings())
    assert config == {
        "bootstrap_servers": ["b1:9094", "b2:9094"],
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "dg-worker",
        "sasl_plain_password": PASSWORD,
        "ssl_check_hostname": True,
    }
    for cls in (KafkaProducer, KafkaConsumer, KafkaAdminClient):
        assert set(config) <= _accepted(cls), cls.__name__


def test_sasl_ssl_scram_sha_512_gives_aiokafka_kwargs_with_a_verifying_tls_context() -> None:
    config = aiokafka_config(scram_settings())
    context = config.pop("ssl_context")
    assert config == {
        "bootstrap_servers": ["b1:9094", "b2:9094"],
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "dg-worker",
        "sasl_plain_password": PASSWORD,
    }
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    for cls in (AIOKafkaProducer, AIOKafkaConsumer):
        assert set(config) | {"ssl_context"} <= _accepted(cls), cls.__name__


def test_sasl_ssl_scram_sha_512_gives_faust_sasl_credentials_over_tls() -> None:
    creds = faust_broker_credentials(scram_settings())
    assert isinstance(creds, faust.SASLCredentials)
    assert creds.protocol.value == "SASL_SSL"
    assert creds.mechanism.value == "SCRAM-SHA-512"
    assert (creds.username, creds.password) == ("dg-worker", PASSWORD)
    assert isinstance(creds.ssl_context, ssl.SSLContext)
    assert PASSWORD not in repr(creds)


def test_sasl_plaintext_plain_has_no_tls() -> None:
    settings = scram_settings(security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN")
    config = kafka_python_config(settings)
    assert config["security_protocol"] == "SASL_PLAINTEXT"
    assert config["sasl_mechanism"] == "PLAIN"
    assert not any(k.startswith("ssl_") for k in config)
    assert "ssl_context" not in aiokafka_config(settings)
    creds = faust_broker_credentials(settings)
    assert isinstance(creds, faust.SASLCredentials)
    assert (creds.protocol.value, creds.mechanism.value, creds.ssl_context) == ("SASL_PLAINTEXT", "PLAIN", None)


def test_ssl_passes_file_paths_to_kafka_python_and_builds_faust_ssl_credentials(tmp_path: Path) -> None:
    import certifi

    settings = Settings(security_protocol="SSL", ssl_cafile=Path(certifi.where()))
    config = kafka_python_config(settings)
    assert config["security_protocol"] == "SSL"
    assert config["ssl_cafile"] == certifi.where()
    assert not any(k.startswith("sasl_") for k in config)
    creds = faust_broker_credentials(settings)
    assert isinstance(creds, faust.SSLCredentials)
    assert isinstance(creds.context, ssl.SSLContext)
    assert creds.context.cert_store_stats()["x509_ca"] > 0  # the CA file was loaded


def test_unreadable_certificate_files_are_named_in_the_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(KafkaConfigError, match="nope.pem"):
        aiokafka_config(Settings(security_protocol="SSL", ssl_cafile=missing))
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    with pytest.raises(KafkaConfigError, match="ssl_certfile=.*junk.pem"):
        faust_broker_credentials(Settings(security_protocol="SSL", ssl_certfile=junk, ssl_keyfile=junk))


def test_missing_password_is_a_clear_error() -> None:
    with pytest.raises(ValidationError, match="security_protocol SASL_SSL needs DG_SASL_PASSWORD"):
        Settings(security_protocol="SASL_SSL", sasl_mechanism="PLAIN", sasl_username="u")
    with pytest.raises(ValidationError, match="DG_SASL_MECHANISM, DG_SASL_PASSWORD, DG_SASL_USERNAME"):
        Settings(security_protocol="SASL_PLAINTEXT")
    with pytest.raises(ValidationError, match="DG_SASL_PASSWORD"):
        scram_settings(sasl_password="")


def test_sasl_settings_without_a_sasl_protocol_are_refused() -> None:
    with pytest.raises(ValidationError, match="use SASL_PLAINTEXT or SASL_SSL"):
        Settings(sasl_username="u", sasl_password="p", sasl_mechanism="PLAIN")


def test_unknown_protocol_or_mechanism_and_half_a_key_pair_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="security_protocol"):
        Settings(security_protocol="TLS")
    with pytest.raises(ValidationError, match="sasl_mechanism"):
        scram_settings(sasl_mechanism="SCRAM-SHA-1")
    with pytest.raises(ValidationError, match="give both or neither"):
        Settings(security_protocol="SSL", ssl_certfile=tmp_path / "c.pem")


def test_environment_variables_configure_security(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DG_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("DG_SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("DG_SASL_USERNAME", "env-user")
    monkeypatch.setenv("DG_SASL_PASSWORD", PASSWORD)
    config = kafka_python_config(Settings())
    assert (config["sasl_mechanism"], config["sasl_plain_password"]) == ("SCRAM-SHA-256", PASSWORD)


def test_password_never_appears_when_settings_are_printed() -> None:
    settings = scram_settings(signing_key="signing-key-material")
    for text in (repr(settings), str(settings), f"{settings}", repr(settings.model_dump())):
        assert PASSWORD not in text
        assert "signing-key-material" not in text
    assert settings.to_env()["DG_SASL_PASSWORD"] == PASSWORD  # a child process still gets it
