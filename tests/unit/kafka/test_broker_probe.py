"""The broker probe against things that are not Kafka: a port that accepts and never answers, an IPv6
bootstrap, nothing at all (a real Kafka, and one that refuses the login, are in
tests/integration/test_kafka_acls.py)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from pipeline.kafka.probe import Probe, probe
from pipeline.settings import Settings


@asynccontextmanager
async def silent_listener(host: str) -> AsyncIterator[int]:
    """A TCP server on ``host`` that accepts connections and never says a word; yields its port."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, host, 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


def _ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_an_open_port_that_never_answers_is_no_broker() -> None:
    async def run() -> tuple[Probe, float]:
        async with silent_listener("127.0.0.1") as port:
            start = time.monotonic()
            answer = await probe(Settings(bootstrap=f"127.0.0.1:{port}"), timeout=1.0)
            return answer, time.monotonic() - start

    answer, took = asyncio.run(run())
    assert not answer.ok and "no Kafka answer in time" in answer.reason
    assert took < 3.0, "each server is given the timeout, no more"


@pytest.mark.skipif(not _ipv6(), reason="no IPv6 loopback here")
def test_a_bracketed_ipv6_bootstrap_is_asked_at_its_address() -> None:
    # the TCP watchdog split "[::1]:9092" into host "[::1]" and never reached it (exit 72 with Kafka fine)
    async def run() -> Probe:
        async with silent_listener("::1") as port:
            return await probe(Settings(bootstrap=f"[::1]:{port}"), timeout=1.0)

    answer = asyncio.run(run())
    assert not answer.ok and "[::1]:" in answer.reason and "no Kafka answer in time" in answer.reason


def test_every_server_is_tried_and_each_reason_kept() -> None:
    with socket.socket() as a, socket.socket() as b:
        a.bind(("127.0.0.1", 0))
        b.bind(("127.0.0.1", 0))
        ports = [a.getsockname()[1], b.getsockname()[1]]  # bound, not listening: refused at once
        answer = asyncio.run(probe(Settings(bootstrap=",".join(f"127.0.0.1:{p}" for p in ports)), timeout=1.0))
    assert not answer.ok and not answer.login_refused
    assert all(f"127.0.0.1:{p}" in answer.reason for p in ports)
