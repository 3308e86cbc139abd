"""Create the manifest's topics (``schemas/topics.json``) on a Kafka cluster, idempotently."""

from __future__ import annotations

from typing import Any

from pipeline.contract.manifest import load_manifest
from pipeline.settings import Settings

__all__ = ["create_topics", "describe"]

CREATED = "created"
EXISTS = "exists"


def _admin(settings: Settings) -> Any:
    from kafka import KafkaAdminClient

    from pipeline.kafka.config import kafka_python_config

    return KafkaAdminClient(**kafka_python_config(settings), client_id=f"{settings.app_id}-topics")


def create_topics(settings: Settings, names: list[str] | None = None) -> list[tuple[str, str]]:
    """Create the manifest topics ``names`` (all if None) with ``settings.topic(name)`` as their name.

    Partitions come from the manifest unless ``settings.partitions`` overrides them; the
    replication factor from ``settings.replication_factor``; configs from the manifest. Returns
    ``(topic, "created" | "exists")`` per topic, in manifest order; a topic that exists already is
    not an error (its partitions and configs are left as they are). Other broker errors raise.
    """
    import kafka.errors as errors

    manifest = load_manifest()
    wanted = list(manifest) if names is None else list(names)
    unknown = [n for n in wanted if n not in manifest]
    if unknown:
        raise KeyError(f"not in the topic manifest: {', '.join(unknown)} (known: {', '.join(manifest)})")
    new_topics = {
        settings.topic(name): {
            "num_partitions": settings.partitions or int(manifest[name].get("partitions", 1)),
            "replication_factor": settings.replication_factor,
            "configs": {k: str(v) for k, v in manifest[name].get("config", {}).items()},
        }
        for name in wanted
    }
    admin = _admin(settings)
    try:
        response = admin.create_topics(new_topics, raise_errors=False, wait_for_metadata=False)
        outcome: dict[str, str] = {}
        failures = []
        for result in response["topics"]:
            error = errors.for_code(result["error_code"])
            if error is errors.NoError:
                outcome[result["name"]] = CREATED
            elif error is errors.TopicAlreadyExistsError:
                outcome[result["name"]] = EXISTS
            else:
                failures.append(
                    f"{result['name']}: {error.__name__} {result.get('error_message') or ''}".strip()
                )
        if failures:
            raise RuntimeError("could not create topics: " + "; ".join(failures))
        created = [t for t, o in outcome.items() if o == CREATED]
        if created:
            admin.wait_for_topics(created)
    finally:
        admin.close()
    return [(topic, outcome[topic]) for topic in new_topics]


def describe(settings: Settings) -> dict[str, int | None]:
    """Partition count of each manifest topic on the cluster (None for a topic that does not exist)."""
    admin = _admin(settings)
    try:
        found = {t["name"]: len(t["partitions"]) for t in admin.describe_topics() if not t.get("error_code")}
    finally:
        admin.close()
    return {settings.topic(name): found.get(settings.topic(name)) for name in load_manifest()}
