"""A local single-node Apache Kafka broker (KRaft mode), started from jars that Maven resolves.

The project runs a *real* Apache Kafka (``settings.kafka_version``, 3.9.1 by default) for development
and integration tests, without Docker and without a Kafka download: Maven resolves
``org.apache.kafka:kafka_2.13`` and its runtime dependencies into the cache, and the machine's Java
runs ``kafka.Kafka`` as a combined broker + controller bound to loopback only.

Files in the data directory (``settings.kafka_data_dir`` unless given):

- ``server.properties``, ``log4j.properties``: written by :func:`start`;
- ``logs/``: the partition data (``log.dirs``), formatted once with a fresh cluster id;
- ``server.log``: the broker's own log; ``broker.out``: the JVM's stdout/stderr;
- ``broker.pid``: the pid of the running broker;
- ``sasl/<role>.env`` (SASL mode only, private to the user): each principal's login as ``DG_*`` variables.

SASL mode (``settings.kafka_sasl``, ``kafka start --sasl``) is chosen when the data directory is first
formatted: the client listener then takes only SASL/SCRAM-SHA-512 logins, the ``StandardAuthorizer``
refuses whatever :mod:`pipeline.kafka.acls` does not grant, and every start creates the role logins and
ACLs for the settings' topic prefix and app id. The ``admin`` principal (super user, the broker's own
login) is added to the storage at format time (``--add-scram``), since a KRaft broker must log in before
it can read credentials from its metadata; the controller listener takes PLAIN with the admin's password
only, as KRaft cannot use SCRAM there. A client of a role runs with ``set -a; . <data>/sasl/worker.env``,
or in Python with :func:`role_settings`.

Example::

    info = start(settings)          # idempotent: reuses a running broker of this data dir
    ...                             # use info.bootstrap
    if info.started:
        stop(settings)
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.kafka.acls import ADMIN
from pipeline.kafka.local_config import (
    HOST,
    LOG4J,
    PROPERTIES,
    SERVER_LOG,
    admin_login,
    bootstrap_of,
    data_dir_of,
    format_storage,
    formatted,
    is_sasl,
    login_passwords,
    new_cluster_id,
    provision,
    role_settings,
    write_config,
)
from pipeline.kafka.local_jars import KafkaLocalError, ensure_jars, locked, require, tail
from pipeline.settings import Settings

__all__ = [
    "BrokerInfo",
    "BrokerStatus",
    "KafkaLocalError",
    "ensure_jars",
    "new_cluster_id",
    "role_settings",
    "start",
    "status",
    "stop",
]

JVM_OPTS = (
    "-Xms256m",
    "-Xmx768m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
    "-Dfile.encoding=UTF-8",
)
_PID_FILE = "broker.pid"
_BROKER_OUT = "broker.out"


@dataclass(frozen=True)
class BrokerInfo:
    """A running local broker. ``started`` is False when :func:`start` found it already running."""

    bootstrap: str
    pid: int
    data_dir: Path
    started: bool


@dataclass(frozen=True)
class BrokerStatus:
    """What :func:`status` found in a data directory."""

    running: bool
    pid: int | None
    bootstrap: str
    version: str
    data_dir: Path
    reachable: bool


# --------------------------------------------------------------------------- processes


def _reap(pid: int) -> None:
    """Collect our own exited child, so that it does not linger as a zombie that still 'exists'."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _is_broker(pid: int, data: Path) -> bool:
    """Whether ``pid`` is alive and is the Kafka broker of ``data`` (guards against pid reuse)."""
    _reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    proc = Path(f"/proc/{pid}")
    if not proc.is_dir():  # no procfs: trust the signal check
        return True
    try:
        if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
            return False
        cmdline = (proc / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"kafka.Kafka" in cmdline and str(data / PROPERTIES).encode() in cmdline


def _read_pid(data: Path) -> int | None:
    try:
        return int((data / _PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


def _running_pid(data: Path) -> int | None:
    pid = _read_pid(data)
    return pid if pid is not None and _is_broker(pid, data) else None


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _accepts(bootstrap: str, timeout: float = 1.0) -> bool:
    host, port = bootstrap.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def _reachable(bootstrap: str, timeout: float = 5.0, login: dict[str, Any] | None = None) -> bool:
    """Whether a real Kafka client (logged in with ``login``'s SASL kwargs, if any) gets cluster metadata
    with at least one broker from ``bootstrap``."""
    if not _accepts(bootstrap, timeout=min(timeout, 1.0)):
        return False
    from kafka import KafkaAdminClient

    ms = max(int(timeout * 1000), 1000)
    admin = None
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            client_id="kafka-local-probe",
            request_timeout_ms=ms,
            bootstrap_timeout_ms=ms,
            **(login or {}),
        )
        return bool(admin.describe_cluster().get("brokers"))
    except Exception:  # any failure means "not (yet) usable"
        return False
    finally:
        if admin is not None:
            with contextlib.suppress(Exception):
                admin.close()


def _broker_log_tail(data: Path, lines: int = 40) -> str:
    parts = []
    for name in (SERVER_LOG, _BROKER_OUT):
        with contextlib.suppress(OSError):
            text = (data / name).read_text(errors="replace")
            if text.strip():
                parts.append(f"--- {data / name} (last {lines} lines)\n{tail(text, lines)}")
    return "\n".join(parts) or f"(no broker log in {data})"


# --------------------------------------------------------------------------- API


def start(settings: Settings, data_dir: Path | None = None, timeout: float = 60.0) -> BrokerInfo:
    """Start the local broker of ``data_dir`` and wait until a Kafka client can use it.

    If the broker of this data directory is already running and answering, it is returned with
    ``started=False`` (the caller does not own it). Otherwise the jars are resolved, the storage is
    formatted on first use, ``kafka.Kafka`` is launched detached (its own session) and this waits up
    to ``timeout`` seconds for cluster metadata. Raises :class:`KafkaLocalError`, with the tail of the
    broker log, if a port is taken, the process dies or the timeout passes.

    With ``settings.kafka_sasl`` the broker runs in SASL mode (see the module docstring), and each call,
    whether it starts the broker or finds it running, creates the role logins and the ACLs of
    ``settings``' topic prefix and app id. A data directory keeps the mode it was first formatted in.
    """
    data = data_dir_of(settings, data_dir)
    data.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    with locked(data / ".start.lock"):
        _check_mode(settings, data)
        pid = _running_pid(data)
        if pid is not None:
            bootstrap = bootstrap_of(settings, data)
            _wait_ready(bootstrap, pid, data, deadline, admin_login(data))
            if settings.kafka_sasl:
                provision(settings, bootstrap, login_passwords(data, bootstrap))
            return BrokerInfo(bootstrap=bootstrap, pid=pid, data_dir=data, started=False)
        (data / _PID_FILE).unlink(missing_ok=True)
        _check_can_start(settings)
        libs = ensure_jars(settings)
        java = require("java")
        bootstrap = f"{HOST}:{settings.kafka_port}"
        passwords = login_passwords(data, bootstrap) if settings.kafka_sasl else None
        admin_password = passwords[ADMIN] if passwords else None
        write_config(settings, data, admin_password)
        format_storage(java, libs, data, admin_password)
        pid = _launch(java, libs, data)
        try:
            _wait_ready(bootstrap, pid, data, deadline, admin_login(data))
            if passwords:
                provision(settings, bootstrap, passwords)
        except KafkaLocalError:
            _terminate(pid, data, 10.0)
            (data / _PID_FILE).unlink(missing_ok=True)
            raise
        return BrokerInfo(bootstrap=bootstrap, pid=pid, data_dir=data, started=True)


def _check_mode(settings: Settings, data: Path) -> None:
    """Refuse to start a data directory in the other mode (SASL or not) than the one it was formatted in."""
    if formatted(data) and is_sasl(data) != settings.kafka_sasl:
        was, want = ("with", "without") if is_sasl(data) else ("without", "with")
        raise KafkaLocalError(f"the broker data in {data} was formatted {was} SASL and cannot be started "
                              f"{want} it: use another data directory (--data-dir) or delete this one")


def _check_can_start(settings: Settings) -> None:
    """Refuse ports that are taken or equal, and (SASL mode) topic prefixes the ACLs cannot express."""
    for name, port in (
        ("kafka_port", settings.kafka_port),
        ("kafka_controller_port", settings.kafka_controller_port),
    ):
        if not _port_free(port):
            raise KafkaLocalError(
                f"port {port} ({name}) on {HOST} is already in use; stop whatever listens there "
                f"or set DG_{name.upper()} to a free port"
            )
    if settings.kafka_port == settings.kafka_controller_port:
        raise KafkaLocalError(f"kafka_port and kafka_controller_port are both {settings.kafka_port}")

    if settings.kafka_sasl:
        try:
            from pipeline.kafka.acls import check_prefixes

            check_prefixes(settings)
        except ValueError as exc:
            raise KafkaLocalError(str(exc)) from exc


def _launch(java: str, libs: Path, data: Path) -> int:
    """Launch ``kafka.Kafka`` detached (its own session), output to ``broker.out``; record and return its pid."""
    cmd = [
        java, *JVM_OPTS, f"-Dlog4j.configuration=file:{data / LOG4J}",
        "-cp", f"{libs}/*", "kafka.Kafka", str(data / PROPERTIES),
    ]  # fmt: skip
    with open(data / _BROKER_OUT, "ab") as out:
        proc = subprocess.Popen(
            cmd, cwd=data, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    (data / _PID_FILE).write_text(f"{proc.pid}\n")
    return proc.pid


def _wait_ready(bootstrap: str, pid: int, data: Path, deadline: float, login: dict[str, Any] | None) -> None:
    while True:
        if not _is_broker(pid, data):
            raise KafkaLocalError(
                f"the Kafka broker (pid {pid}) exited during startup\n{_broker_log_tail(data)}"
            )
        remaining = deadline - time.monotonic()
        if _reachable(bootstrap, timeout=max(min(remaining, 5.0), 1.0), login=login):
            return
        if time.monotonic() >= deadline:
            raise KafkaLocalError(
                f"the Kafka broker (pid {pid}) did not answer on {bootstrap} in time\n{_broker_log_tail(data)}"
            )
        time.sleep(0.25)


def _terminate(pid: int, data: Path, timeout: float) -> None:
    """SIGTERM (a clean, controlled shutdown), then SIGKILL if it has not exited after ``timeout``."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _is_broker(pid, data):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10.0
    while _is_broker(pid, data):
        if time.monotonic() >= deadline:
            raise KafkaLocalError(f"the Kafka broker (pid {pid}) survived SIGKILL")
        time.sleep(0.1)


def stop(settings: Settings, data_dir: Path | None = None, timeout: float = 30.0) -> bool:
    """Stop the broker of ``data_dir``; return whether one was running. The data is kept."""
    data = data_dir_of(settings, data_dir)
    pid = _running_pid(data)
    if pid is not None:
        _terminate(pid, data, timeout)
    (data / _PID_FILE).unlink(missing_ok=True)
    return pid is not None


def status(settings: Settings, data_dir: Path | None = None) -> BrokerStatus:
    """Whether the broker of ``data_dir`` runs, and whether a client can reach it."""
    data = data_dir_of(settings, data_dir)
    pid = _running_pid(data)
    bootstrap = bootstrap_of(settings, data)
    return BrokerStatus(
        running=pid is not None,
        pid=pid,
        bootstrap=bootstrap,
        version=settings.kafka_version,
        data_dir=data,
        reachable=pid is not None and _reachable(bootstrap, timeout=3.0, login=admin_login(data)),
    )
