"""Kafka client configuration from Settings: bootstrap servers, TLS and SASL for each client library.

Three libraries talk to Kafka here and each spells the same settings its own way: kafka-python (topics,
produce, lag) takes file paths, aiokafka takes an :class:`ssl.SSLContext`, and Faust takes a credentials
object. These functions are the one place that translates :class:`~pipeline.settings.Settings` into
each, so a cluster with TLS or SASL needs nothing but ``DG_SECURITY_PROTOCOL`` and friends.

Settings already refuse an incomplete SASL setup; here a certificate file that cannot be read raises
:class:`KafkaConfigError` with the file named.
"""

from __future__ import annotations

import ssl
from typing import Any

from pipeline.settings import Settings

__all__ = [
    "KafkaConfigError",
    "aiokafka_config",
    "bootstrap_servers",
    "faust_broker_credentials",
    "faust_broker_urls",
    "kafka_python_config",
    "ssl_context",
]


class KafkaConfigError(ValueError):
    """The Kafka security settings cannot be turned into a working client configuration."""


def bootstrap_servers(settings: Settings) -> list[str]:
    """``settings.bootstrap`` split into ``host:port`` entries."""
    servers = [b.strip() for b in settings.bootstrap.split(",") if b.strip()]
    if not servers:
        raise KafkaConfigError("bootstrap is empty: give DG_BOOTSTRAP=host:port[,host:port…]")
    return servers


def faust_broker_urls(settings: Settings) -> list[str]:
    """The ``broker`` argument of ``faust.App``: each bootstrap server as a ``kafka://host:port`` URL."""
    return [f"kafka://{server}" for server in bootstrap_servers(settings)]


def _uses_ssl(settings: Settings) -> bool:
    return settings.security_protocol in ("SSL", "SASL_SSL")


def _uses_sasl(settings: Settings) -> bool:
    return settings.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")


def _password(settings: Settings) -> str | None:
    return settings.sasl_password.get_secret_value() if settings.sasl_password is not None else None


def _connection(settings: Settings) -> dict[str, Any]:
    """What kafka-python's and aiokafka's clients take alike: brokers, protocol and SASL login."""
    config: dict[str, Any] = {
        "bootstrap_servers": bootstrap_servers(settings),
        "security_protocol": settings.security_protocol,
    }
    if _uses_sasl(settings):
        config["sasl_mechanism"] = settings.sasl_mechanism
        config["sasl_plain_username"] = settings.sasl_username
        config["sasl_plain_password"] = _password(settings)
    return config


def kafka_python_config(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for kafka-python's ``KafkaProducer``, ``KafkaConsumer`` and ``KafkaAdminClient``.

    Only connection settings: callers add their own (``acks``, ``group_id``, ``client_id`` …).
    """
    config = _connection(settings)
    if _uses_ssl(settings):
        config["ssl_check_hostname"] = True
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(settings, name)
            if path is not None:
                config[name] = str(path)
    return config


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """A client TLS context that verifies the brokers (``ssl_cafile`` or the system CAs), with the client
    certificate loaded when ``ssl_certfile``/``ssl_keyfile`` are set."""
    try:
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH,
            cafile=str(settings.ssl_cafile) if settings.ssl_cafile is not None else None,
        )
    except (OSError, ssl.SSLError) as exc:
        raise KafkaConfigError(f"cannot load the CA file ssl_cafile={settings.ssl_cafile}: {exc}") from exc
    if settings.ssl_certfile is not None:
        try:
            context.load_cert_chain(
                certfile=str(settings.ssl_certfile),
                keyfile=str(settings.ssl_keyfile) if settings.ssl_keyfile is not None else None,
            )
        except (OSError, ssl.SSLError) as exc:
            raise KafkaConfigError(
                f"cannot load the client certificate ssl_certfile={settings.ssl_certfile} "
                f"ssl_keyfile={settings.ssl_keyfile}: {exc}"
            ) from exc
    return context


def aiokafka_config(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for aiokafka's ``AIOKafkaProducer`` / ``AIOKafkaConsumer`` (TLS as an SSLContext)."""
    config = _connection(settings)
    if _uses_ssl(settings):
        config["ssl_context"] = ssl_context(settings)
    return config


def faust_broker_credentials(settings: Settings) -> Any:
    """The ``broker_credentials`` argument of ``faust.App``: None for PLAINTEXT, else a
    ``faust.SSLCredentials`` or ``faust.SASLCredentials`` (with a TLS context for SASL_SSL)."""
    from faust.auth import SASLCredentials, SSLCredentials

    protocol = settings.security_protocol
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return SSLCredentials(ssl_context(settings))
    return SASLCredentials(
        username=settings.sasl_username,
        password=_password(settings),
        mechanism=settings.sasl_mechanism,
        ssl_context=ssl_context(settings) if protocol == "SASL_SSL" else None,
    )
