"""The local Kafka launcher's pure parts (starting a broker is covered by tests/integration)."""

from __future__ import annotations

import base64
import uuid

from pipeline import kafka_local


def test_cluster_ids_never_start_with_a_dash(monkeypatch) -> None:
    # the storage tool read a cluster id starting with "-" as an option and failed a CI run (1 draw in 64)
    dash_first = uuid.UUID(bytes=base64.urlsafe_b64decode("-" + "A" * 21 + "=="))
    draws = iter([dash_first, dash_first, uuid.UUID(int=1)])
    monkeypatch.setattr(kafka_local.uuid, "uuid4", lambda: next(draws))
    assert kafka_local.new_cluster_id() == base64.urlsafe_b64encode(uuid.UUID(int=1).bytes).decode().rstrip("=")
    monkeypatch.undo()
    ids = [kafka_local.new_cluster_id() for _ in range(2000)]
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)
    assert len(set(ids)) == len(ids)
