"""Shared fixtures: settings factories and the real Apache Kafka broker for integration tests.

Integration tests use the broker named by ``DG_TEST_BOOTSTRAP`` when it is set; otherwise a session
fixture starts the project's local Kafka (``pipeline.kafka.local``) on free ports in a temporary
directory and stops it at the end.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.settings import Settings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Kafka broker's bootstrap address for the whole test session."""
    external = os.environ.get("DG_TEST_BOOTSTRAP")
    if external:
        yield external
        return
    from pipeline.kafka import local as kafka_local

    data = tmp_path_factory.mktemp("kafka")
    settings = Settings(kafka_port=_free_port(), kafka_controller_port=_free_port(), kafka_data_dir=data)
    info = kafka_local.start(settings, data_dir=data, timeout=120)
    try:
        yield info.bootstrap
    finally:
        if info.started:
            kafka_local.stop(settings, data_dir=data)


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Factory for settings isolated per test: own topic prefix, app id, store dir and web port."""

    def make(**overrides: Any) -> Settings:
        tag = uuid.uuid4().hex[:8]
        base: dict[str, Any] = {
            "topic_prefix": f"t{tag}-",
            "app_id": f"dg-test-{tag}",
            "store_dir": tmp_path / f"store-{tag}",
            "web_port": _free_port(),
            "metrics_port": _free_port(),
            "source_idle_s": 2.0,  # campaign findings at the end of each input 3 s sooner (the default is 5)
        }
        base.update(overrides)
        return Settings(**base)

    return make
