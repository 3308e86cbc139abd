"""Who may do what on the pipeline's topics: the Kafka principals, their ACLs and their SCRAM logins.

One table, :func:`grants`, says what each principal may do; the local broker (``kafka start --sasl``) and
the compose cluster (``kafka provision``) both apply it with :func:`apply_grants`, so the two cannot drift.
Everything not granted is refused: the brokers run the ``StandardAuthorizer`` with
``allow.everyone.if.no.acl.found=false``, and only ``admin`` is a super user.

=============  =====================================================================================
principal      may
=============  =====================================================================================
admin          everything (super user): create topics, users and ACLs; the brokers' own login
gateway        write ``usage-events``
worker         by each manifest topic's direction (``schemas/topics.json``): read the inputs
               (``usage-events``, ``analyst-verdicts``); read and write the internal topics
               (``findings``, ``link-updates``, …); write the outputs (``anomaly-alerts``,
               ``enforcement-actions``, ``usage-events-dlq``); everything on topics starting with
               ``<app_id>-`` (Faust's changelogs and assignor topic, which it creates); consumer group
               ``<app_id>``
analyst        write ``analyst-verdicts``
enforcement    read ``enforcement-actions``; consumer groups starting with ``enforcement``
replay         read the inputs; create, write and read topics starting with ``replay_prefix`` (the
               sandbox of ``backtest --to-prefix``); consumer groups starting with it
=============  =====================================================================================

Topic names carry ``topic_prefix`` in front, as everywhere. Example::

    from kafka import KafkaAdminClient
    admin = KafkaAdminClient(**kafka_python_config(admin_settings))
    upsert_users(admin, {"gateway": "…", "worker": "…"})
    apply_grants(admin, settings)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pipeline.contract.manifest import ACTIONS, USAGE_EVENTS, VERDICTS
from pipeline.settings import Settings

__all__ = [
    "ADMIN", "ROLES", "SCRAM_ITERATIONS", "Grant", "apply_grants", "check_prefixes", "grants", "parse_users",
    "provision", "upsert_users",
]

ADMIN = "admin"
ROLES = ("gateway", "worker", "analyst", "enforcement", "replay")
SCRAM_ITERATIONS = 8192
ENFORCEMENT_GROUP_PREFIX = "enforcement"

Operation = Literal["READ", "WRITE", "CREATE", "DESCRIBE", "DESCRIBE_CONFIGS", "ALL"]

WORKER_OPERATIONS: dict[str, tuple[Operation, ...]] = {
    "in": ("READ", "DESCRIBE"),
    "internal": ("READ", "WRITE", "DESCRIBE"),
    "out": ("WRITE", "DESCRIBE"),
}
"""What the worker may do on a manifest topic, by the topic's ``direction`` in ``schemas/topics.json``."""


@dataclass(frozen=True)
class Grant:
    """One ALLOW ACL: ``user`` may ``operation`` on the topic or group ``name`` (or every name starting
    with it when ``prefixed``)."""

    user: str
    resource: Literal["topic", "group"]
    name: str
    operation: Operation
    prefixed: bool = False


def check_prefixes(settings: Settings) -> None:
    """Refuse a replay sandbox that could reach a live topic: it must be non-empty, and no live topic
    (``topic_prefix`` + a manifest name) nor the worker's own topics may start with it."""
    from pipeline.contract.manifest import load_manifest

    sandbox = settings.replay_prefix
    if not sandbox:
        raise ValueError("replay_prefix is empty: the replay principal would be allowed to write every topic")
    app = f"{settings.app_id}-"
    clash = [name for name in (*(settings.topic(n) for n in load_manifest()), app) if name.startswith(sandbox)]
    if sandbox.startswith(app):
        clash.append(f"{app}… (the worker's own)")
    if clash:
        raise ValueError(f"replay_prefix {sandbox!r} covers live topics ({', '.join(clash)}): choose a sandbox "
                         "prefix that no live topic starts with")


def _topics(user: str, names: tuple[str, ...], ops: tuple[Operation, ...], settings: Settings) -> list[Grant]:
    return [Grant(user, "topic", settings.topic(n), op) for n in names for op in ops]


def grants(settings: Settings) -> list[Grant]:
    """Every ACL of every role for the pipeline configured by ``settings`` (see the module's table). The
    worker's and replay's topics follow the manifest: a new topic gets its ACLs by its ``direction``."""
    from pipeline.contract.manifest import load_manifest

    check_prefixes(settings)
    app, sandbox = f"{settings.app_id}-", settings.replay_prefix
    manifest = load_manifest()
    inputs = tuple(name for name, spec in manifest.items() if spec.get("direction") == "in")
    return [
        *_topics("gateway", (USAGE_EVENTS,), ("WRITE", "DESCRIBE"), settings),
        *_topics("analyst", (VERDICTS,), ("WRITE", "DESCRIBE"), settings),
        *_topics("enforcement", (ACTIONS,), ("READ", "DESCRIBE"), settings),
        Grant("enforcement", "group", ENFORCEMENT_GROUP_PREFIX, "READ", prefixed=True),
        *(grant for name, spec in manifest.items()
          for grant in _topics("worker", (name,), WORKER_OPERATIONS[spec["direction"]], settings)),
        Grant("worker", "topic", app, "ALL", prefixed=True),
        Grant("worker", "group", settings.app_id, "READ"),
        Grant("worker", "group", settings.app_id, "DESCRIBE"),
        *_topics("replay", inputs, ("READ", "DESCRIBE"), settings),
        *(Grant("replay", "topic", sandbox, op, prefixed=True)
          for op in ("CREATE", "WRITE", "READ", "DESCRIBE", "DESCRIBE_CONFIGS")),
        Grant("replay", "group", sandbox, "READ", prefixed=True),
    ]


def _acl(grant: Grant) -> Any:
    from kafka.admin import (
        ACL,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        ResourcePattern,
        ResourceType,
    )

    pattern = ResourcePattern(
        ResourceType.TOPIC if grant.resource == "topic" else ResourceType.GROUP,
        grant.name,
        ACLResourcePatternType.PREFIXED if grant.prefixed else ACLResourcePatternType.LITERAL,
    )
    return ACL(f"User:{grant.user}", "*", ACLOperation[grant.operation], ACLPermissionType.ALLOW, pattern)


def apply_grants(admin: Any, settings: Settings) -> int:
    """Create the ACLs of :func:`grants` with kafka-python's ``KafkaAdminClient`` ``admin`` (idempotent:
    an ACL that exists already is not an error). Returns how many there are; raises ``RuntimeError``
    naming the ACLs the cluster refused."""
    wanted = grants(settings)
    result = admin.create_acls([_acl(g) for g in wanted])
    failed = result.get("failed") or []
    if failed:
        names = sorted({getattr(err, "__name__", str(err)) for err in failed})
        raise RuntimeError(f"the cluster refused {len(failed)} of {len(wanted)} ACLs: {', '.join(names)}")
    return len(wanted)


def upsert_users(admin: Any, passwords: Mapping[str, str]) -> None:
    """Create or update the SCRAM-SHA-512 login of each user in ``passwords`` (user name -> password).
    Raises ``RuntimeError`` naming the users the cluster refused (never their passwords)."""
    from kafka.admin import ScramMechanism, UserScramCredentialUpsertion

    if not passwords:
        return
    short = [user for user, password in passwords.items() if len(password) < 16]
    if short:
        raise ValueError(f"SASL passwords shorter than 16 characters for: {', '.join(sorted(short))}")
    result = admin.alter_user_scram_credentials([
        UserScramCredentialUpsertion(user, ScramMechanism.SCRAM_SHA_512, password, iterations=SCRAM_ITERATIONS)
        for user, password in passwords.items()
    ])
    errors = {user: err for user, err in result.items() if err}
    if errors:
        raise RuntimeError("the cluster refused SCRAM credentials: "
                           + "; ".join(f"{user}: {err}" for user, err in sorted(errors.items())))


def parse_users(text: str) -> dict[str, str]:
    """``"gateway:pw1,worker:pw2"`` as ``{"gateway": "pw1", "worker": "pw2"}``; only the roles of
    :data:`ROLES`, each once (the admin's login is the cluster's own, never created here)."""
    users: dict[str, str] = {}
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        user, sep, password = entry.partition(":")
        if not sep or not password:
            raise ValueError(f"sasl_users: {user!r} has no password (write user:password)")
        if user not in ROLES:
            raise ValueError(f"sasl_users: {user!r} is not a role (roles: {', '.join(ROLES)})")
        if user in users:
            raise ValueError(f"sasl_users: {user!r} given twice")
        users[user] = password
    return users


def provision(settings: Settings) -> tuple[int, int]:
    """Logged in with ``settings``' own (admin) credentials: create or update the SCRAM logins of
    ``settings.sasl_users`` and the ACLs of :func:`grants`. Returns (users, ACLs)."""
    from kafka import KafkaAdminClient

    from pipeline.kafka.config import kafka_python_config

    users = parse_users(settings.sasl_users.get_secret_value()) if settings.sasl_users is not None else {}
    admin = KafkaAdminClient(**kafka_python_config(settings), client_id=f"{settings.app_id}-provision")
    try:
        upsert_users(admin, users)
        return len(users), apply_grants(admin, settings)
    finally:
        admin.close()
