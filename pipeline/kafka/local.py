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

import base64
import contextlib
import fcntl
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from pipeline.kafka.acls import ADMIN, ROLES
from pipeline.settings import Settings

__all__ = [
    "BrokerInfo",
    "BrokerStatus",
    "KafkaLocalError",
    "ensure_jars",
    "role_settings",
    "start",
    "status",
    "stop",
]

HOST = "127.0.0.1"
NODE_ID = 1
# Kafka 3.9 logs through slf4j 1.7 + reload4j; the same backend, so the broker logs to a file we configure.
SLF4J_VERSION = "1.7.36"
RELOAD4J_VERSION = "1.2.25"
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
_MARKER = ".complete"
_PID_FILE = "broker.pid"
_PROPERTIES = "server.properties"
_LOG4J = "log4j.properties"
_BROKER_OUT = "broker.out"
_SERVER_LOG = "server.log"
_SASL_DIR = "sasl"
SASL_MECHANISM = "SCRAM-SHA-512"

_POM = """<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.distillation-guard</groupId>
  <artifactId>kafka-local</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-reload4j</artifactId>
      <version>{slf4j}</version>
    </dependency>
    <dependency>
      <groupId>ch.qos.reload4j</groupId>
      <artifactId>reload4j</artifactId>
      <version>{reload4j}</version>
    </dependency>
  </dependencies>
</project>
"""

_LOG4J_TEMPLATE = """\
# Written by pipeline.kafka.local: the broker logs to {log}, never to the console.
log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.RollingFileAppender
log4j.appender.file.File={log}
log4j.appender.file.MaxFileSize=20MB
log4j.appender.file.MaxBackupIndex=2
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka=INFO
log4j.logger.org.apache.kafka=INFO
log4j.logger.kafka.request.logger=WARN
log4j.logger.kafka.log.LogCleaner=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.kafka.authorizer.logger=WARN
"""


class KafkaLocalError(RuntimeError):
    """The local broker could not be resolved, started, reached or stopped."""


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


# --------------------------------------------------------------------------- jars


def _libs_dir(settings: Settings) -> Path:
    return Path(settings.cache_dir).expanduser().resolve() / f"kafka-{settings.kafka_version}" / "libs"


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise KafkaLocalError(f"`{tool}` not found on PATH; the local Kafka broker needs Java 17+ and Maven")
    return path


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock, so that two processes never resolve or start at the same time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_jars(settings: Settings) -> Path:
    """Resolve Kafka and its runtime dependencies into the cache; return the ``libs`` directory.

    Idempotent: a marker file in ``libs`` records a complete resolution and makes later calls free.
    Raises :class:`KafkaLocalError` if ``java`` or ``mvn`` is missing or Maven fails.
    """
    libs = _libs_dir(settings)
    if (libs / _MARKER).is_file():
        return libs
    _require("java")
    mvn = _require("mvn")
    with _locked(libs.parent / ".resolve.lock"):
        if (libs / _MARKER).is_file():  # resolved by another process while we waited
            return libs
        partial = libs.parent / "libs.partial"
        shutil.rmtree(partial, ignore_errors=True)
        with tempfile.TemporaryDirectory(prefix="kafka-pom-") as tmp:
            pom = Path(tmp) / "pom.xml"
            pom.write_text(
                _POM.format(kafka=settings.kafka_version, slf4j=SLF4J_VERSION, reload4j=RELOAD4J_VERSION)
            )
            cmd = [
                mvn, "-q", "-B", "-Dstyle.color=never", "-f", str(pom), "dependency:copy-dependencies",
                f"-DoutputDirectory={partial}", "-DincludeScope=runtime",
            ]  # fmt: skip
            proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        jars = sorted(p.name for p in partial.glob("*.jar")) if partial.is_dir() else []
        if proc.returncode != 0 or not any(
            j.startswith(f"kafka_2.13-{settings.kafka_version}") for j in jars
        ):
            output = _tail(proc.stdout + proc.stderr)
            raise KafkaLocalError(
                f"mvn could not resolve org.apache.kafka:kafka_2.13:{settings.kafka_version} "
                f"(exit {proc.returncode}):\n{output}"
            )
        shutil.rmtree(libs, ignore_errors=True)
        partial.rename(libs)
        (libs / _MARKER).write_text("\n".join(jars) + "\n")
    return libs


# --------------------------------------------------------------------------- processes


def _data_dir(settings: Settings, data_dir: Path | None) -> Path:
    return Path(data_dir if data_dir is not None else settings.kafka_data_dir).expanduser().resolve()


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
    return b"kafka.Kafka" in cmdline and str(data / _PROPERTIES).encode() in cmdline


def _read_pid(data: Path) -> int | None:
    try:
        return int((data / _PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


def _running_pid(data: Path) -> int | None:
    pid = _read_pid(data)
    return pid if pid is not None and _is_broker(pid, data) else None


def _bootstrap(settings: Settings, data: Path) -> str:
    """The bootstrap of the broker of ``data``: its advertised listener if configured, else the settings'."""
    try:
        for line in (data / _PROPERTIES).read_text().splitlines():
            if line.startswith("advertised.listeners="):
                return line.split("://", 1)[1].split(",", 1)[0].strip()
    except (OSError, IndexError):
        pass
    return f"{HOST}:{settings.kafka_port}"


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
    for name in (_SERVER_LOG, _BROKER_OUT):
        with contextlib.suppress(OSError):
            text = (data / name).read_text(errors="replace")
            if text.strip():
                parts.append(f"--- {data / name} (last {lines} lines)\n{_tail(text, lines)}")
    return "\n".join(parts) or f"(no broker log in {data})"


# --------------------------------------------------------------------------- SASL logins


def _sasl_dir(data: Path) -> Path:
    return data / _SASL_DIR


def _is_sasl(data: Path) -> bool:
    """Whether the storage of ``data`` was formatted for SASL mode (the admin's login exists)."""
    return (_sasl_dir(data) / f"{ADMIN}.env").is_file()


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (it holds a password)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(text)


def _read_password(data: Path, user: str) -> str | None:
    try:
        lines = (_sasl_dir(data) / f"{user}.env").read_text().splitlines()
    except OSError:
        return None
    found = [line.split("=", 1)[1] for line in lines if line.startswith("DG_SASL_PASSWORD=")]
    return found[0] if found and found[0] else None


def _passwords(data: Path, bootstrap: str) -> dict[str, str]:
    """Each principal's password: drawn once per data directory (256 random bits) and kept, with the rest of
    its login, in ``sasl/<user>.env`` (mode 0600, in a 0700 directory). Never printed or logged."""
    folder = _sasl_dir(data)
    folder.mkdir(mode=0o700, exist_ok=True)
    folder.chmod(0o700)
    passwords: dict[str, str] = {}
    for user in (ADMIN, *ROLES):
        password = _read_password(data, user) or secrets.token_urlsafe(32)
        _write_private(folder / f"{user}.env", (
            f"# Login of the local Kafka's {user!r} principal, written by pipeline.kafka.local: keep it private.\n"
            f"DG_BOOTSTRAP={bootstrap}\nDG_SECURITY_PROTOCOL=SASL_PLAINTEXT\nDG_SASL_MECHANISM={SASL_MECHANISM}\n"
            f"DG_SASL_USERNAME={user}\nDG_SASL_PASSWORD={password}\n"))
        passwords[user] = password
    return passwords


def _admin_login(data: Path) -> dict[str, Any] | None:
    """kafka-python kwargs that log in as ``admin`` on a SASL-mode broker; None for a plain one."""
    password = _read_password(data, ADMIN) if _is_sasl(data) else None
    if password is None:
        return None
    return {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": SASL_MECHANISM,
            "sasl_plain_username": ADMIN, "sasl_plain_password": password}


def role_settings(settings: Settings, role: str, data_dir: Path | None = None) -> Settings:
    """``settings`` with the bootstrap and SASL login of principal ``role`` (``admin`` or one of
    :data:`pipeline.kafka.acls.ROLES`) of the SASL-mode broker of ``data_dir``."""
    data = _data_dir(settings, data_dir)
    password = _read_password(data, role)
    if password is None:
        raise KafkaLocalError(f"no login for {role!r} in {_sasl_dir(data)}: start that broker with --sasl "
                              f"(roles: {', '.join((ADMIN, *ROLES))})")
    return settings.model_copy(update={
        "bootstrap": _bootstrap(settings, data), "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": SASL_MECHANISM, "sasl_username": role, "sasl_password": SecretStr(password),
    })


def _provision(settings: Settings, bootstrap: str, passwords: dict[str, str]) -> None:
    """As ``admin``: create or update every role's SCRAM login, then the ACLs of ``settings``' pipeline."""
    from kafka import KafkaAdminClient

    from pipeline.kafka.acls import apply_grants, upsert_users

    login = {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": SASL_MECHANISM,
             "sasl_plain_username": ADMIN, "sasl_plain_password": passwords[ADMIN]}
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="kafka-local-provision", **login)
        try:
            upsert_users(admin, {role: passwords[role] for role in ROLES})
            apply_grants(admin, settings)
        finally:
            admin.close()
    except Exception as exc:  # kafka-python raises a zoo of errors; the message names users, never passwords
        raise KafkaLocalError(f"could not create the SASL logins and ACLs on {bootstrap}: {exc}") from exc


# --------------------------------------------------------------------------- configuration


def _listeners(settings: Settings, admin_password: str | None) -> str:
    """The listener section: all PLAINTEXT, or (with the admin's password) SASL everywhere and the authorizer."""
    port, cport = settings.kafka_port, settings.kafka_controller_port
    if admin_password is None:
        return f"""\
listeners=PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{cport}
advertised.listeners=PLAINTEXT://{HOST}:{port}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
"""
    scram = f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{ADMIN}" ' \
            f'password="{admin_password}";'
    plain = f'org.apache.kafka.common.security.plain.PlainLoginModule required username="{ADMIN}" ' \
            f'password="{admin_password}" user_{ADMIN}="{admin_password}";'
    return f"""\
# SASL mode: clients log in with SCRAM-SHA-512 (users kept in the cluster metadata; the admin's added when the
# storage was formatted). The controller listener takes PLAIN with the admin's login only: KRaft cannot use
# SCRAM there. Whatever kafka_acls grants no ACL for is refused.
listeners=SASL_PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{cport}
advertised.listeners=SASL_PLAINTEXT://{HOST}:{port}
listener.security.protocol.map=SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=SASL_PLAINTEXT
sasl.enabled.mechanisms={SASL_MECHANISM}
sasl.mechanism.inter.broker.protocol={SASL_MECHANISM}
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config={scram}
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config={plain}
sasl.mechanism.controller.protocol=PLAIN
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:{ADMIN}
allow.everyone.if.no.acl.found=false
"""


def _server_properties(settings: Settings, data: Path, admin_password: str | None = None) -> str:
    return f"""\
# Written by pipeline.kafka.local for Apache Kafka {settings.kafka_version}: single node, KRaft, loopback only.
process.roles=broker,controller
node.id={NODE_ID}
controller.quorum.voters={NODE_ID}@{HOST}:{settings.kafka_controller_port}
{_listeners(settings, admin_password)}log.dirs={data / "logs"}

# One node: every internal topic has one replica.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
min.insync.replicas=1
# Fewer internal partitions than the default 50: the first consumer group is ready in well under a second.
offsets.topic.num.partitions=8
transaction.state.log.num.partitions=4

num.partitions=1
default.replication.factor=1
# Faust creates its internal topics (changelogs, repartition, the assignor's leader topic) itself;
# auto-creation is kept on so that a consumer or producer of a not-yet-created topic does not stall.
auto.create.topics.enable=true
delete.topic.enable=true
group.initial.rebalance.delay.ms=0
# Kafka's default (1 MiB plus record-batch overhead); our input events are far smaller.
message.max.bytes=1048588

# Lean on a small shared machine.
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
background.threads=4
log.cleaner.threads=1
log.cleaner.dedupe.buffer.size=33554432
log.retention.check.interval.ms=60000
"""


def new_cluster_id() -> str:
    """A random UUID in Kafka's URL-safe base64 form. One in 64 of those starts with "-", which the storage
    tool's argument parser takes for an option (it failed a CI run); like Kafka's own ``Uuid.randomUuid``,
    draw again until it does not."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _formatted(data: Path) -> bool:
    return (data / "logs" / "meta.properties").is_file()


def _format_storage(java: str, libs: Path, data: Path, admin_password: str | None = None) -> None:
    """Format ``log.dirs`` once, with a fresh cluster id (a random UUID in Kafka's base64 form), and in SASL
    mode with the admin's SCRAM login, which the broker needs before it can read any from its metadata."""
    if _formatted(data):
        return
    cluster_id = new_cluster_id()
    scram = [] if admin_password is None else [
        "--add-scram", f"{SASL_MECHANISM}=[name={ADMIN},password={admin_password}]"]
    cmd = [
        java, "-Xmx256m", "-Djava.awt.headless=true", f"-Dlog4j.configuration=file:{data / _LOG4J}",
        "-cp", f"{libs}/*", "kafka.tools.StorageTool",
        "format", "-t", cluster_id, "-c", str(data / _PROPERTIES), *scram,
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=data, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        output = _tail(proc.stdout + proc.stderr)
        if admin_password:
            output = output.replace(admin_password, "**********")
        raise KafkaLocalError(f"kafka.tools.StorageTool format failed (exit {proc.returncode}):\n{output}")


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
    data = _data_dir(settings, data_dir)
    data.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    with _locked(data / ".start.lock"):
        if _formatted(data) and _is_sasl(data) != settings.kafka_sasl:
            was, want = ("with", "without") if _is_sasl(data) else ("without", "with")
            raise KafkaLocalError(f"the broker data in {data} was formatted {was} SASL and cannot be started "
                                  f"{want} it: use another data directory (--data-dir) or delete this one")
        pid = _running_pid(data)
        if pid is not None:
            bootstrap = _bootstrap(settings, data)
            _wait_ready(bootstrap, pid, data, deadline, _admin_login(data))
            if settings.kafka_sasl:
                _provision(settings, bootstrap, _passwords(data, bootstrap))
            return BrokerInfo(bootstrap=bootstrap, pid=pid, data_dir=data, started=False)
        (data / _PID_FILE).unlink(missing_ok=True)

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
        libs = ensure_jars(settings)
        java = _require("java")
        bootstrap = f"{HOST}:{settings.kafka_port}"
        passwords = _passwords(data, bootstrap) if settings.kafka_sasl else None
        admin_password = passwords[ADMIN] if passwords else None
        _write_private(data / _PROPERTIES, _server_properties(settings, data, admin_password))
        (data / _LOG4J).write_text(_LOG4J_TEMPLATE.format(log=data / _SERVER_LOG))
        _format_storage(java, libs, data, admin_password)

        cmd = [
            java, *JVM_OPTS, f"-Dlog4j.configuration=file:{data / _LOG4J}",
            "-cp", f"{libs}/*", "kafka.Kafka", str(data / _PROPERTIES),
        ]  # fmt: skip
        with open(data / _BROKER_OUT, "ab") as out:
            proc = subprocess.Popen(
                cmd, cwd=data, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        (data / _PID_FILE).write_text(f"{proc.pid}\n")
        try:
            _wait_ready(bootstrap, proc.pid, data, deadline, _admin_login(data))
            if passwords:
                _provision(settings, bootstrap, passwords)
        except KafkaLocalError:
            _terminate(proc.pid, data, 10.0)
            (data / _PID_FILE).unlink(missing_ok=True)
            raise
        return BrokerInfo(bootstrap=bootstrap, pid=proc.pid, data_dir=data, started=True)


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
    data = _data_dir(settings, data_dir)
    pid = _running_pid(data)
    if pid is not None:
        _terminate(pid, data, timeout)
    (data / _PID_FILE).unlink(missing_ok=True)
    return pid is not None


def status(settings: Settings, data_dir: Path | None = None) -> BrokerStatus:
    """Whether the broker of ``data_dir`` runs, and whether a client can reach it."""
    data = _data_dir(settings, data_dir)
    pid = _running_pid(data)
    bootstrap = _bootstrap(settings, data)
    return BrokerStatus(
        running=pid is not None,
        pid=pid,
        bootstrap=bootstrap,
        version=settings.kafka_version,
        data_dir=data,
        reachable=pid is not None and _reachable(bootstrap, timeout=3.0, login=_admin_login(data)),
    )
