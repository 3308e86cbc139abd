"""Whether Kafka answers the worker as the worker: a logged-in metadata request, not an open TCP port.

The worker's broker watchdog asks :func:`probe` every few seconds. An open port says little: a broker
that refuses the worker's SASL login, or something else listening on the port, accepts TCP all the same,
and a worker that trusts that runs on blind (its clients retry their login forever). Here each probe
opens a fresh connection to a bootstrap server with the worker's own security settings (so the SASL
login is done again every time), asks for cluster metadata and closes it, all within ``timeout``; the
bootstrap servers are parsed as Kafka clients parse them, so ``[::1]:9092`` is IPv6 host ``::1``.

Example::

    result = await probe(settings, timeout=3.0)
    if not result.ok:
        log.warning("kafka_unreachable", reason=result.reason)
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from pipeline.settings import Settings

__all__ = ["Probe", "probe"]

AUTH_FAILED = "login refused"


@dataclass(frozen=True)
class Probe:
    """The outcome of one probe: ``ok`` when a broker answered a metadata request after the login; else
    ``reason`` says what went wrong at each bootstrap server (``login refused`` among them when a broker
    answered but refused the credentials)."""

    ok: bool
    reason: str = ""
    server: str = ""

    @property
    def login_refused(self) -> bool:
        return AUTH_FAILED in self.reason


async def _ask(host: str, port: int, settings: Settings, timeout: float) -> None:
    """Log in to one server and get its cluster metadata; raises what went wrong."""
    from aiokafka.conn import create_conn
    from aiokafka.protocol.metadata import MetadataRequest

    from pipeline.kafka.config import aiokafka_config

    config = aiokafka_config(settings)
    conn = await create_conn(
        host, port, client_id=f"{settings.app_id}-probe", request_timeout_ms=max(int(timeout * 1000), 100),
        ssl_context=config.get("ssl_context"), security_protocol=config["security_protocol"],
        sasl_mechanism=config.get("sasl_mechanism"), sasl_plain_username=config.get("sasl_plain_username"),
        sasl_plain_password=config.get("sasl_plain_password"),
    )
    try:
        metadata = await conn.send(MetadataRequest([]))
        if not metadata.brokers:
            raise ConnectionError("answered without any broker in its metadata")
    finally:
        conn.close()


def _why(exc: BaseException) -> str:
    from aiokafka.errors import SaslAuthenticationFailed

    if isinstance(exc, SaslAuthenticationFailed):
        return AUTH_FAILED
    if isinstance(exc, TimeoutError):
        return "no Kafka answer in time"
    return f"{type(exc).__name__}: {exc}".strip().rstrip(":")


async def probe(settings: Settings, timeout: float = 3.0) -> Probe:
    """Ask each bootstrap server in turn, each within ``timeout`` seconds, until one answers.

    Never raises and never takes longer than ``timeout`` per bootstrap server.
    """
    from aiokafka.conn import collect_hosts

    from pipeline.kafka.config import bootstrap_servers

    reasons: list[str] = []
    for host, port, _family in sorted(collect_hosts(bootstrap_servers(settings))):
        server = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            await asyncio.wait_for(_ask(host, port, settings, timeout), timeout)
        except Exception as exc:  # any failure is an answer: "not this server"
            reasons.append(f"{server}: {_why(exc)}")
            continue
        return Probe(ok=True, server=server)
    return Probe(ok=False, reason="; ".join(reasons) or "no bootstrap server")
