"""The one settings object: built once from ``DG_``-prefixed environment variables and CLI flags."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "distillation-guard"


class Settings(BaseSettings):
    """Effective configuration. Every field can be set as ``DG_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="DG_", frozen=True, extra="ignore")

    # Kafka
    bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers, comma separated")
    topic_prefix: str = Field("", description="prefix put in front of every topic name")
    partitions: int | None = Field(None, ge=1, description="override the manifest's partition count")
    replication_factor: int = Field(1, ge=1, description="replication factor for created topics")

    # Worker
    app_id: str = Field("distillation-guard", description="Faust application id (consumer group)")
    store_dir: Path = Field(Path("var/store"), description="directory of the worker's RocksDB tables")
    store: str = Field(
        "rocksdb://", description="Faust table store URL: rocksdb:// (RocksDB via the rocksdict driver) or memory://"
    )
    web_port: int = Field(6066, ge=0, le=65535, description="Faust web port of the worker")
    max_message_bytes: int = Field(64 * 1024, ge=256, description="input events larger than this go to the DLQ")

    # Placeholder rule (issue 2 slice): requests per account per event-time minute
    rate_limit_per_minute: int = Field(120, ge=1, description="placeholder rule: requests/minute before an alert")

    # Local Kafka
    kafka_version: str = Field("3.9.1", description="Apache Kafka version for the local broker")
    cache_dir: Path = Field(default_factory=_default_cache_dir, description="where the Kafka jars are cached")
    kafka_data_dir: Path = Field(Path(".kafka"), description="data/log directory of the local broker")
    kafka_port: int = Field(9092, ge=1, le=65535, description="listener port of the local broker")
    kafka_controller_port: int = Field(9093, ge=1, le=65535, description="controller port of the local broker")

    # Enforcement (policy arrives with the detection issue)
    signing_key: SecretStr | None = Field(None, description="HMAC key for enforcement actions")
    detector_version: str = Field("placeholder-rate-0.1", description="detector version stamped on alerts")

    def topic(self, name: str) -> str:
        """The full topic name for a manifest topic name, with the configured prefix."""
        return f"{self.topic_prefix}{name}"

    def to_env(self) -> dict[str, str]:
        """These settings as ``DG_*`` environment variables, for a child process (secrets included)."""
        env: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            env[f"DG_{name.upper()}"] = str(value)
        return env


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings from the environment, built once per process."""
    return Settings()
