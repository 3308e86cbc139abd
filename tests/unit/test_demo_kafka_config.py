"""The demo's Kafka clients take their configuration from ``pipeline.kafka.config`` like every other client:
a demo against a SASL cluster reaches its consumer, its producer and its lag checks with the login, instead
of silently connecting without it. No broker: the kafka-python constructors are replaced by recorders."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest

from pipeline import cli, proc
from pipeline.kafka import admin

PASSWORD = "demo-sasl-password-not-printed"


class Recorder:
    """Stands in for KafkaConsumer and KafkaProducer: records each construction's keyword arguments and
    behaves like an empty, caught-up cluster."""

    def __init__(self, made: list[tuple[str, tuple[Any, ...], dict[str, Any]]], kind: str) -> None:
        self.made, self.kind = made, kind

    def __call__(self, *topics: Any, **kwargs: Any) -> Recorder:
        self.made.append((self.kind, topics, kwargs))
        return self

    def __iter__(self) -> Any:
        return iter(())

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0}

    def end_offsets(self, tps: list[Any]) -> dict[Any, int]:
        return {tp: 0 for tp in tps}

    def committed(self, tp: Any) -> int:
        return 0

    def send(self, *args: Any, **kwargs: Any) -> None:
        pass

    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self, timeout: float | None = None) -> None:
        pass


class FakeWorker:
    settings: list[Any] = []

    def __init__(self, settings: Any, log_path: Path, *args: Any, **kwargs: Any) -> None:
        FakeWorker.settings.append(settings)
        self.returncode = None

    def alive(self) -> bool:
        return True

    def stop(self, timeout: float = 30) -> None:
        pass


def test_a_demo_with_sasl_plaintext_reaches_every_kafka_client_with_its_credentials(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import kafka

    monkeypatch.setenv("DG_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("DG_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("DG_SASL_USERNAME", "demo-user")
    monkeypatch.setenv("DG_SASL_PASSWORD", PASSWORD)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    made: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
    monkeypatch.setattr(kafka, "KafkaConsumer", Recorder(made, "consumer"))
    monkeypatch.setattr(kafka, "KafkaProducer", Recorder(made, "producer"))
    topic_settings: list[Any] = []
    monkeypatch.setattr(admin, "create_topics", lambda settings, names=None: topic_settings.append(settings) or [])
    FakeWorker.settings = []
    monkeypatch.setattr(proc, "WorkerProcess", FakeWorker)

    code = cli.main(["demo", "--bootstrap", "broker.test:9092", "--max-seconds", "0.5", "--no-colour"])

    out = capsys.readouterr().out
    assert code == 0, out
    assert "summary" in out and PASSWORD not in out
    kinds = {kind for kind, _, _ in made}
    assert kinds == {"consumer", "producer"}
    watch = [(topics, kw) for kind, topics, kw in made if kind == "consumer" and topics]
    assert watch and all(t.endswith(("anomaly-alerts", "enforcement-actions")) for t in watch[0][0])
    for kind, _, kwargs in made:
        assert kwargs["bootstrap_servers"] == ["broker.test:9092"], kind
        assert kwargs["security_protocol"] == "SASL_PLAINTEXT", kind
        assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512", kind
        assert kwargs["sasl_plain_username"] == "demo-user", kind
        assert kwargs["sasl_plain_password"] == PASSWORD, kind
    for settings in topic_settings + FakeWorker.settings:  # the topics' admin client and the worker process
        assert settings.security_protocol == "SASL_PLAINTEXT"
        assert settings.sasl_password.get_secret_value() == PASSWORD
