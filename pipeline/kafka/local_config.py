"""The local Kafka broker's files and logins: ``server.properties``, log4j, the KRaft storage, SASL logins.

What :mod:`pipeline.kafka.local` writes into a data directory before it launches the broker, and reads back
from it (the bootstrap, whether the storage was formatted, and in which mode); in SASL mode also each
principal's login file, :func:`role_settings` that reads one, and :func:`provision` that creates the logins
and ACLs on the running broker. The SASL mode itself is described in :mod:`pipeline.kafka.local`.
"""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import uuid
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from pipeline.kafka.acls import ADMIN, ROLES
from pipeline.kafka.local_jars import KafkaLocalError, tail
from pipeline.settings import Settings

HOST = "127.0.0.1"
NODE_ID = 1
PROPERTIES = "server.properties"
LOG4J = "log4j.properties"
SERVER_LOG = "server.log"
SASL_DIR = "sasl"
SASL_MECHANISM = "SCRAM-SHA-512"

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


# --------------------------------------------------------------------------- data directory


def data_dir_of(settings: Settings, data_dir: Path | None) -> Path:
    """The broker's data directory: ``data_dir`` if given, else the settings', as an absolute path."""
    return Path(data_dir if data_dir is not None else settings.kafka_data_dir).expanduser().resolve()


# --------------------------------------------------------------------------- SASL logins


def sasl_dir(data: Path) -> Path:
    """Where the principals' login files of ``data`` live."""
    return data / SASL_DIR


def is_sasl(data: Path) -> bool:
    """Whether the storage of ``data`` was formatted for SASL mode (the admin's login exists)."""
    return (sasl_dir(data) / f"{ADMIN}.env").is_file()


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (it holds a password)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(text)


def read_password(data: Path, user: str) -> str | None:
    try:
        lines = (sasl_dir(data) / f"{user}.env").read_text().splitlines()
    except OSError:
        return None
    found = [line.split("=", 1)[1] for line in lines if line.startswith("DG_SASL_PASSWORD=")]
    return found[0] if found and found[0] else None


def login_passwords(data: Path, bootstrap: str) -> dict[str, str]:
    """Each principal's password: drawn once per data directory (256 random bits) and kept, with the rest of
    its login, in ``sasl/<user>.env`` (mode 0600, in a 0700 directory). Never printed or logged."""
    folder = sasl_dir(data)
    folder.mkdir(mode=0o700, exist_ok=True)
    folder.chmod(0o700)
    passwords: dict[str, str] = {}
    for user in (ADMIN, *ROLES):
        password = read_password(data, user) or secrets.token_urlsafe(32)
        _write_private(folder / f"{user}.env", (
            f"# Login of the local Kafka's {user!r} principal, written by pipeline.kafka.local: keep it private.\n"
            f"DG_BOOTSTRAP={bootstrap}\nDG_SECURITY_PROTOCOL=SASL_PLAINTEXT\nDG_SASL_MECHANISM={SASL_MECHANISM}\n"
            f"DG_SASL_USERNAME={user}\nDG_SASL_PASSWORD={password}\n"))
        passwords[user] = password
    return passwords


def admin_login(data: Path) -> dict[str, Any] | None:
    """kafka-python kwargs that log in as ``admin`` on a SASL-mode broker; None for a plain one."""
    password = read_password(data, ADMIN) if is_sasl(data) else None
    if password is None:
        return None
    return {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": SASL_MECHANISM,
            "sasl_plain_username": ADMIN, "sasl_plain_password": password}


def role_settings(settings: Settings, role: str, data_dir: Path | None = None) -> Settings:
    """``settings`` with the bootstrap and SASL login of principal ``role`` (``admin`` or one of
    :data:`pipeline.kafka.acls.ROLES`) of the SASL-mode broker of ``data_dir``."""
    data = data_dir_of(settings, data_dir)
    password = read_password(data, role)
    if password is None:
        raise KafkaLocalError(f"no login for {role!r} in {sasl_dir(data)}: start that broker with --sasl "
                              f"(roles: {', '.join((ADMIN, *ROLES))})")
    return settings.model_copy(update={
        "bootstrap": bootstrap_of(settings, data), "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": SASL_MECHANISM, "sasl_username": role, "sasl_password": SecretStr(password),
    })


def provision(settings: Settings, bootstrap: str, passwords: dict[str, str]) -> None:
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


def server_properties(settings: Settings, data: Path, admin_password: str | None = None) -> str:
    """The broker's ``server.properties``; SASL mode when the admin's password is given."""
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


def formatted(data: Path) -> bool:
    """Whether the storage (``log.dirs``) of ``data`` has been formatted."""
    return (data / "logs" / "meta.properties").is_file()


def format_storage(java: str, libs: Path, data: Path, admin_password: str | None = None) -> None:
    """Format ``log.dirs`` once, with a fresh cluster id (a random UUID in Kafka's base64 form), and in SASL
    mode with the admin's SCRAM login, which the broker needs before it can read any from its metadata."""
    if formatted(data):
        return
    cluster_id = new_cluster_id()
    scram = [] if admin_password is None else [
        "--add-scram", f"{SASL_MECHANISM}=[name={ADMIN},password={admin_password}]"]
    cmd = [
        java, "-Xmx256m", "-Djava.awt.headless=true", f"-Dlog4j.configuration=file:{data / LOG4J}",
        "-cp", f"{libs}/*", "kafka.tools.StorageTool",
        "format", "-t", cluster_id, "-c", str(data / PROPERTIES), *scram,
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=data, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        output = tail(proc.stdout + proc.stderr)
        if admin_password:
            output = output.replace(admin_password, "**********")
        raise KafkaLocalError(f"kafka.tools.StorageTool format failed (exit {proc.returncode}):\n{output}")


def write_config(settings: Settings, data: Path, admin_password: str | None) -> None:
    """Write ``server.properties`` (private: in SASL mode it holds the admin's password) and the log4j file."""
    _write_private(data / PROPERTIES, server_properties(settings, data, admin_password))
    (data / LOG4J).write_text(_LOG4J_TEMPLATE.format(log=data / SERVER_LOG))


def bootstrap_of(settings: Settings, data: Path) -> str:
    """The bootstrap of the broker of ``data``: its advertised listener if configured, else the settings'."""
    try:
        for line in (data / PROPERTIES).read_text().splitlines():
            if line.startswith("advertised.listeners="):
                return line.split("://", 1)[1].split(",", 1)[0].strip()
    except (OSError, IndexError):
        pass
    return f"{HOST}:{settings.kafka_port}"
