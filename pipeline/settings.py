"""The one settings object: built once from ``DG_``-prefixed environment variables and CLI flags."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "distillation-guard"


SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class Settings(BaseSettings):
    """Effective configuration. Every field can be set as ``DG_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="DG_", frozen=True, extra="ignore")

    # Kafka
    bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers, comma separated")
    topic_prefix: str = Field("", description="prefix put in front of every topic name")
    partitions: int | None = Field(None, ge=1, description="override the manifest's partition count")
    replication_factor: int = Field(1, ge=1, description="replication factor for created topics")

    # Kafka security (kafka_config.py turns these into client kwargs and Faust credentials)
    security_protocol: SecurityProtocol = Field("PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL")
    sasl_mechanism: SaslMechanism | None = Field(
        None, description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (needed with SASL_*)"
    )
    sasl_username: str | None = Field(None, description="SASL user name (needed with SASL_*)")
    sasl_password: SecretStr | None = Field(None, description="SASL password (needed with SASL_*)")
    ssl_cafile: Path | None = Field(None, description="CA bundle (PEM) to verify the brokers; default: system CAs")
    ssl_certfile: Path | None = Field(None, description="client certificate (PEM) for mutual TLS")
    ssl_keyfile: Path | None = Field(None, description="private key (PEM) of the client certificate")
    sasl_users: SecretStr | None = Field(None, description="logins that 'kafka provision' creates: user:password "
                                         "pairs, comma separated, for the roles of pipeline/kafka/acls.py")
    replay_prefix: str = Field("sandbox-", description="topic prefix of replay output (backtest --to-prefix): "
                               "the replay principal's ACLs let it write only topics starting with this")

    # Worker
    app_id: str = Field("distillation-guard", description="Faust application id (consumer group)")
    store_dir: Path = Field(Path("var/store"), description="directory of the worker's RocksDB tables")
    store: str = Field(
        "rocksdb://", description="Faust table store URL: rocksdb:// (RocksDB via the rocksdict driver) or memory://"
    )
    web_port: int = Field(6066, ge=0, le=65535, description="Faust web port of the worker")
    max_message_bytes: int = Field(64 * 1024, ge=256, description="input events larger than this go to the DLQ")
    max_invalid_ratio: float = Field(0.5, gt=0, le=1, description="stop the worker when this share of the last "
                                     "DG_INVALID_WINDOW input events was invalid (a bad deploy upstream)")
    invalid_window: int = Field(10_000, ge=10, description="input events over which the invalid share is measured")
    idle_expiry_hours: float = Field(24 * 14, gt=0, description="forget an account's or link key's state after "
                                     "this many hours of event time without activity (bounded state)")
    max_event_skew_ms: int = Field(10 * 60_000, ge=0, description="an event whose ts is further ahead of its "
                                   "Kafka message timestamp (broker time) than this goes to the DLQ as "
                                   "ts_in_future: one message cannot move event time (pipeline/contract/admission.py)")
    source_idle_s: float = Field(5.0, gt=0, le=3600, description="a usage-events partition with every message "
                                 "handled and no events for this long is announced idle, so campaign detection does "
                                 "not wait for it (input pushed in bursts with longer pauses may then come late)")
    broker_timeout_s: float = Field(300, gt=0, description="exit with a clear error when no Kafka broker has "
                                    "answered for this many seconds (the worker rides out shorter outages)")
    dlq_redact_text: bool = Field(True, description="DLQ copies without raw text: fields named like prompt/"
                                  "content/messages at any depth and free-text strings are replaced by their "
                                  "type and size (pipeline/contract/privacy.py); false keeps the original bytes")
    metrics_port: int = Field(9108, ge=0, le=65535, description="Prometheus /metrics port of the worker; 0: off")
    standby_replicas: int = Field(0, ge=0, description="warm copies of each table partition other workers keep "
                                  "(Faust's table_standby_replicas): a failover then skips most of the changelog "
                                  "replay, but every worker replays the others' state writes as they happen")

    # Detection and policy (pipeline/detection/config.py documents every knob; these are the ones to tune)
    enforce: bool = Field(False, description="enforce mode: actions are to be carried out (needs DG_SIGNING_KEY); "
                          "default shadow: recorded, not carried out")
    allowlist_accounts: str = Field("", description="account ids, comma separated, never acted on beyond review")
    allowlist_orgs: str = Field("", description="org ids, comma separated, never acted on beyond review")
    account_high: float = Field(0.6, gt=0, le=1, description="harvest-profile score for a high account alert")
    account_critical: float = Field(0.8, gt=0, le=1, description="harvest-profile score for a critical account alert")
    campaign_high: float = Field(0.3, gt=0, le=1, description="campaign score for a high campaign alert")
    campaign_critical: float = Field(0.5, gt=0, le=1, description="campaign score for a critical campaign alert")
    link_order_slack_ms: int = Field(10_000, ge=0, le=3_600_000, description="campaign detection applies link "
                                     "updates in event-time order, each once every usage-events partition is this "
                                     "far past it: events this far out of order within a partition stay in order")
    population_review: bool = Field(False, description="a river population model's outliers with some harvest "
                                    "profile earn a review (off by default: in the robustness matrix it added "
                                    "only benign reviews); its state is in the changelogged population table")
    vetted_tiers_lenient: bool = Field(True, description="enterprise, education and research accounts get their "
                                       "own-behaviour findings one level lower (a review for high, a verification "
                                       "for critical); campaign findings are not lowered")
    rank_min_accounts: int = Field(50, ge=1, le=1_000_000, description="accounts a tier segment on a partition "
                                   "counts before account alerts tell the share of them that reach their harvest "
                                   "score (population_rank; it decides nothing)")
    population_window: int = Field(250, ge=8, le=100_000, description="window summaries in the population "
                                   "model's reference window (it scores nothing before its first is full)")
    population_warmup: int = Field(200, ge=0, le=1_000_000, description="population model scores a segment "
                                   "collects before its quantile is trusted")

    # Local Kafka
    kafka_version: str = Field("3.9.1", description="Apache Kafka version for the local broker")
    cache_dir: Path = Field(default_factory=_default_cache_dir, description="where the Kafka jars are cached")
    kafka_data_dir: Path = Field(Path(".kafka"), description="data/log directory of the local broker")
    kafka_port: int = Field(9092, ge=1, le=65535, description="listener port of the local broker")
    kafka_controller_port: int = Field(9093, ge=1, le=65535, description="controller port of the local broker")
    kafka_sasl: bool = Field(False, description="local broker with SASL/SCRAM-SHA-512 logins and per-role ACLs "
                             "(kafka start --sasl); each role's login is written to <data dir>/sasl/<role>.env")

    # Enforcement
    signing_key: SecretStr | None = Field(None, description="HMAC key for enforcement actions")
    signing_keys_previous: SecretStr | None = Field(
        None, description="earlier HMAC keys, comma separated, still accepted by 'verify' during a key rotation"
    )
    analyst_key: SecretStr | None = Field(
        None, description="HMAC key analysts sign verdicts with (Verdict v2; 32 bytes or more, never the action "
                          "signing key); unset: every verdict is refused (to the DLQ)"
    )
    analyst_keys_previous: SecretStr | None = Field(
        None, description="earlier analyst keys, comma separated, still accepted during a key rotation"
    )
    verdict_ttl_hours: float = Field(30 * 24, gt=0, description="an analyst's verdict holds for this many hours "
                                     "of event time after the alert it names")
    alert_schema_version: int = Field(
        2, ge=1, le=2, description="AnomalyAlert version written: 2 (each reason with its contribution) or 1 "
                                   "(without), for consumers that still validate v1")

    @model_validator(mode="after")
    def _check_security(self) -> Self:
        sasl = self.security_protocol.startswith("SASL_")
        if sasl:
            missing = [f"DG_{n.upper()}" for n in ("sasl_mechanism", "sasl_username", "sasl_password")
                       if getattr(self, n) in (None, "")]
            if self.sasl_password is not None and not self.sasl_password.get_secret_value():
                missing.append("DG_SASL_PASSWORD")
            if missing:
                raise ValueError(f"security_protocol {self.security_protocol} needs {', '.join(sorted(set(missing)))}")
        elif self.sasl_mechanism or self.sasl_username or self.sasl_password:
            raise ValueError(f"SASL settings are given but security_protocol is {self.security_protocol}: "
                             "use SASL_PLAINTEXT or SASL_SSL, or drop the DG_SASL_* variables")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("ssl_certfile and ssl_keyfile go together: give both or neither")
        if self.enforce and (self.signing_key is None or not self.signing_key.get_secret_value()):
            raise ValueError("enforce mode needs a signing key: set DG_SIGNING_KEY, or leave DG_ENFORCE off "
                             "(shadow mode)")
        if self.enforce and self.signing_key is not None:
            from pipeline.contract.signing import enforce_key_problem

            problem = enforce_key_problem(self.signing_key.get_secret_value().encode("utf-8"))
            if problem:
                raise ValueError(f"DG_SIGNING_KEY cannot sign enforce-mode actions: {problem} (generate one with "
                                 "`python -c 'import secrets; print(secrets.token_hex(32))'`)")
        self._check_analyst_keys()
        return self

    def _check_analyst_keys(self) -> None:
        """Analyst keys are strong and are not action keys: whoever holds the key that signs actions (every
        worker) must not be able to sign verdicts too, nor the other way round."""
        from pipeline.contract.signing import enforce_key_problem

        action_keys = {k.strip() for k in (self.signing_keys_previous.get_secret_value().split(",")
                                           if self.signing_keys_previous else []) if k.strip()}
        if self.signing_key is not None:
            action_keys.add(self.signing_key.get_secret_value())
        analyst = [k.strip() for k in (self.analyst_keys_previous.get_secret_value().split(",")
                                       if self.analyst_keys_previous else []) if k.strip()]
        if self.analyst_key is not None and self.analyst_key.get_secret_value():
            analyst.append(self.analyst_key.get_secret_value())
        for key in analyst:
            if key in action_keys:
                raise ValueError("an analyst key (DG_ANALYST_KEY, DG_ANALYST_KEYS_PREVIOUS) is also an action "
                                 "signing key: give analysts a key of their own")
            problem = enforce_key_problem(key.encode("utf-8"))
            if problem:
                raise ValueError(f"an analyst key cannot sign verdicts: {problem}")

    @property
    def input_partitions(self) -> int:
        """Partitions of the input topic (and of everything co-partitioned with it)."""
        if self.partitions is not None:
            return self.partitions
        from pipeline.contract.manifest import USAGE_EVENTS, load_manifest

        return int(load_manifest()[USAGE_EVENTS]["partitions"])

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
