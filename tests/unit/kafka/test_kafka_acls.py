"""The ACL table of the Kafka principals, and the logins 'kafka provision' reads (the broker's own answers to
these ACLs are tested in tests/integration/test_kafka_acls.py)."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from pipeline.kafka import acls as kafka_acls
from pipeline.kafka.acls import Grant, check_prefixes, grants, parse_users
from pipeline.settings import Settings


def allowed(settings: Settings, user: str, operation: str, resource: str, name: str) -> bool:
    """Whether the table lets ``user`` do ``operation`` on ``name``, matched as Kafka matches patterns."""
    for g in grants(settings):
        if g.user != user or g.resource != resource or g.operation not in (operation, "ALL"):
            continue
        if (g.prefixed and name.startswith(g.name)) or (not g.prefixed and name == g.name):
            return True
    return False


@pytest.fixture
def settings() -> Settings:
    return Settings(topic_prefix="live-", app_id="dg", replay_prefix="sandbox-")


def test_gateway_may_write_usage_events_and_nothing_else(settings: Settings) -> None:
    mine = [g for g in grants(settings) if g.user == "gateway"]
    assert {(g.name, g.operation) for g in mine} == {("live-usage-events", "WRITE"), ("live-usage-events", "DESCRIBE")}
    assert not any(g.prefixed for g in mine)


@pytest.mark.parametrize("topic", ["findings", "link-updates", "analyst-verdicts", "enforcement-actions"])
def test_nobody_but_the_worker_and_analyst_writes_what_decides_an_action(settings: Settings, topic: str) -> None:
    writers = {u for u in ("gateway", "worker", "analyst", "enforcement", "replay")
               if allowed(settings, u, "WRITE", "topic", settings.topic(topic))}
    expected = {"analyst-verdicts": {"analyst"}}.get(topic, {"worker"})
    assert writers == expected


def test_enforcement_only_reads_actions_and_its_own_groups(settings: Settings) -> None:
    assert allowed(settings, "enforcement", "READ", "topic", "live-enforcement-actions")
    assert not allowed(settings, "enforcement", "WRITE", "topic", "live-enforcement-actions")
    assert allowed(settings, "enforcement", "READ", "group", "enforcement-service")
    assert not allowed(settings, "enforcement", "READ", "group", "dg")


def test_replay_reads_inputs_and_writes_only_its_sandbox(settings: Settings) -> None:
    assert allowed(settings, "replay", "READ", "topic", "live-usage-events")
    assert allowed(settings, "replay", "WRITE", "topic", "sandbox-enforcement-actions")
    assert allowed(settings, "replay", "CREATE", "topic", "sandbox-anomaly-alerts")
    for name in ("live-enforcement-actions", "live-anomaly-alerts", "live-usage-events", "dg-policy-state-changelog"):
        assert not allowed(settings, "replay", "WRITE", "topic", name)


def test_worker_owns_its_internal_topics_by_prefix_but_cannot_write_inputs(settings: Settings) -> None:
    assert Grant("worker", "topic", "dg-", "ALL", prefixed=True) in grants(settings)
    assert allowed(settings, "worker", "CREATE", "topic", "dg-account-state-changelog")
    assert allowed(settings, "worker", "READ", "group", "dg")
    for topic in ("usage-events", "analyst-verdicts"):
        assert allowed(settings, "worker", "READ", "topic", settings.topic(topic))
        assert not allowed(settings, "worker", "WRITE", "topic", settings.topic(topic))


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        ({"replay_prefix": ""}, "empty"),
        ({"replay_prefix": "live-"}, "covers live topics"),
        ({"replay_prefix": "live-enforce"}, "covers live topics"),
        ({"topic_prefix": "", "replay_prefix": "usage-"}, "covers live topics"),
        ({"replay_prefix": "dg-sandbox-"}, "covers live topics"),
    ],
)
def test_a_sandbox_that_could_reach_live_topics_is_refused(overrides: dict[str, str], complaint: str) -> None:
    settings = Settings(**{"topic_prefix": "live-", "app_id": "dg", **overrides})
    with pytest.raises(ValueError, match=complaint):
        check_prefixes(settings)
    with pytest.raises(ValueError, match=complaint):
        grants(settings)


def test_users_parse_from_user_password_pairs_for_known_roles_only() -> None:
    assert parse_users("gateway:p1-abcdefghijklmnop, worker:p:2-with-colon ,") == {
        "gateway": "p1-abcdefghijklmnop", "worker": "p:2-with-colon"}
    for text, complaint in (("admin:x", "not a role"), ("gateway", "no password"), ("gateway:", "no password"),
                            ("worker:a,worker:b", "twice")):
        with pytest.raises(ValueError, match=complaint):
            parse_users(text)


def test_short_passwords_are_refused_before_the_cluster_is_asked() -> None:
    with pytest.raises(ValueError, match="gateway"):  # no admin client at all: it is never reached
        kafka_acls.upsert_users(None, {"gateway": "short"})


def test_users_setting_is_a_secret() -> None:
    settings = Settings(sasl_users=SecretStr("gateway:very-secret-password-1"))
    assert "very-secret" not in repr(settings) and "very-secret" not in str(settings.model_dump())
