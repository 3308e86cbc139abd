"""The agents' batch handling without a broker: decode, DLQ, detection, link stage (verdicts: test_verdicts.py).

Each test feeds Faust ``Message`` objects to the batch function the agent runs for every batch that
``stream.take_events`` yields (its stream plumbing is covered by the integration tests on real Kafka);
the tables are real Faust tables on the ``memory://`` store. The app's ``Wire`` (every record it sends,
outputs and changelogs alike) is stubbed out: each record is recorded and delivered at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from typing import Any

import msgpack
import pytest
from faust.types import Message

from pipeline.contract.schemas import validator
from pipeline.detection.messages import (
    EMPTY_BATCH,
    HIGH,
    Finding,
    LinkUpdate,
    decode_findings,
    decode_group_signals,
    decode_link_updates,
    encode_findings,
    encode_link_updates,
)
from pipeline.detection.partition import partition_for
from pipeline.worker.app import LINK_BUFFER, STREAM_BUFFER, WorkerParts, create_app
from pipeline.worker.link_order import IDLE_HEADER, pairs_header
from pipeline.worker.outbox import DLQ_OFFSET, DLQ_REASON, DLQ_TOPIC
from pipeline.worker.tables import ROCKSDB_MEMORY, rocksdb_memory
from tests import factories

BROKER_S = factories.BASE_TS / 1000 + 365 * 86_400
"""The broker's timestamp (seconds, as Faust has it) of the messages fed to the agents: after every event."""


class Sent:
    """The messages sent to one topic."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []


class Wire:
    """Stands in for the app's ``Wire.send``: records each message by topic, returns a delivered future."""

    def __init__(self, names: dict[str, str]) -> None:
        self.names = names  # topic name -> short name
        self.sent = {short: Sent() for short in names.values()}
        self.changelog = Sent()

    async def send(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None,
                   headers: Any = None) -> asyncio.Future[None]:
        short = self.names.get(topic)
        sent = self.sent[short] if short is not None else self.changelog
        sent.messages.append({"key": key, "value": value, "headers": headers, "partition": partition})
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut


@dataclasses.dataclass
class PartsUnderTest(WorkerParts):
    """An app's parts (``app.dg``) with its ``Wire`` stubbed: what it sends is in ``sent``, by short name."""

    sent: dict[str, Sent] = dataclasses.field(default_factory=dict)
    next_offset: dict[str, int] = dataclasses.field(default_factory=dict)  # by topic, for feeders that go on


def make_parts(settings: Any) -> PartsUnderTest:
    """The parts of a new app of ``settings``, its flow resumed and its ``Wire`` stubbed."""
    app = create_app(settings)
    app.finalize()
    app.flow_control.resume()
    dg: WorkerParts = app.dg  # type: ignore[attr-defined]
    wire = Wire({settings.topic(name): short for name, short in (
        ("usage-events-dlq", "dlq"), ("anomaly-alerts", "alerts"), ("enforcement-actions", "actions"),
        ("link-updates", "links"), ("findings", "findings"), ("campaign-signals", "signals"))})
    dg.wire.send = wire.send  # type: ignore[method-assign]
    fields = {f.name: getattr(dg, f.name) for f in dataclasses.fields(dg)}
    return PartsUnderTest(**fields, sent=wire.sent)


@pytest.fixture
def app_parts(make_settings) -> PartsUnderTest:
    return make_parts(make_settings(store="memory://"))


def _put(parts: PartsUnderTest, agent: str, messages: list[tuple[Any, ...]], topic: str | None = None) -> None:
    """Feed raw messages ``(key, value[, headers])`` to an agent as if they came from ``topic`` (default: the
    agent's first topic), at offsets from 0."""
    first = {"account_agent": "usage-events", "link_agent": "link-updates", "campaign_agent": "campaign-signals"}
    if topic is None:
        topic = parts.settings.topic(first[agent])

    batch = getattr(parts, agent.replace("_agent", "_stage")).process_batch
    n_parts = parts.settings.input_partitions

    def partition(key: bytes | None) -> int:  # an account-keyed message is on its account's partition
        return partition_for(key.decode(), n_parts) if agent == "account_agent" and key else 0

    msgs = [Message(topic=topic, partition=partition(m[0]), offset=offset, timestamp=BROKER_S, timestamp_type=1,
                    headers=m[2] if len(m) > 2 else None, key=m[0], value=m[1], checksum=b"")
            for offset, m in enumerate(messages)]

    async def go() -> None:
        for i in range(0, len(msgs), 500):
            await batch(msgs[i:i + 500])

    asyncio.run(go())


def _all_idle(parts: PartsUnderTest) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """A message that says every source partition has gone idle: the link stage (or the campaign stage)
    applies all it holds (``pipeline.worker.link_order``)."""
    return (b"x", EMPTY_BATCH, pairs_header(IDLE_HEADER, [(p, 0) for p in range(parts.settings.input_partitions)]))


def test_invalid_event_goes_to_dlq_with_original_bytes_and_reason(app_parts):
    raw = msgpack.packb(factories.event(1, input_tokens=-3))
    _put(app_parts, "account_agent", [(b"acct-1", raw)])
    dlq = app_parts.sent["dlq"].messages
    assert len(dlq) == 1
    assert dlq[0]["value"] == raw and dlq[0]["key"] == b"acct-1"
    headers = dict(dlq[0]["headers"])
    assert headers[DLQ_REASON] == b"input_tokens: expected int >= 0, got -3"
    assert headers[DLQ_OFFSET].isdigit()
    assert DLQ_TOPIC in headers
    assert app_parts.sent["alerts"].messages == []


def test_harvester_gets_schema_valid_alerts_and_signed_actions_and_worker_goes_on(app_parts):
    events = [e for e in factories.harvester_and_noise(3000) if e["account_id"] == "harvester"]
    msgs = [(b"h", b"\x00garbage")] + [(b"harvester", msgpack.packb(e)) for e in events]
    _put(app_parts, "account_agent", msgs)
    alerts = [msgpack.unpackb(m["value"]) for m in app_parts.sent["alerts"].messages]
    actions = [msgpack.unpackb(m["value"]) for m in app_parts.sent["actions"].messages]
    assert [a["severity"] for a in alerts] == ["medium", "high"]
    for a in alerts:
        validator("anomaly_alert", 2).validate(a)
    assert [a["action"] for a in actions] == ["flag_for_review", "require_verification"]
    for a in actions:
        validator("enforcement_action").validate(a)
        assert a["mode"] == "shadow"
    assert len(app_parts.sent["dlq"].messages) == 1
    assert app_parts.sent["links"].messages, "window updates are announced to the link keys"


def test_account_stage_outputs_do_not_depend_on_how_events_and_findings_interleave(make_settings):
    """A replay after a crash interleaves the account stage's two inputs (usage events, findings) as its
    fetches fall: the same messages, in another interleaving and other batches, give the same alerts and
    actions, id for id and byte for byte (each topic keeps its own order)."""
    events = [e for e in factories.harvester_and_noise(3000) if e["account_id"] == "harvester"]
    reason = {"code": "campaign_member", "detail": "shares a card with a harvesting group", "value": 0.9,
              "baseline": 0.8}
    findings = [Finding("harvester", events[i]["ts"], "coordinated_campaign", HIGH, 0.5 + i / 10_000,
                        (reason,), "camp-1", (), events[0]["ts"], i + 1, None) for i in range(40, len(events), 90)]

    def run(seed: int) -> tuple[list[bytes], list[bytes]]:
        settings = make_settings(store="memory://")
        parts = make_parts(settings)

        def message(topic: str, offset: int, value: bytes) -> Message:
            return Message(topic=settings.topic(topic), partition=partition_for("harvester", settings.input_partitions),
                           offset=offset, timestamp=BROKER_S, timestamp_type=1, headers=None, key=b"harvester",
                           value=value, checksum=b"")

        own = [message("usage-events", i, msgpack.packb(e)) for i, e in enumerate(events)]
        camp = [message("findings", i, raw) for i, f in enumerate(findings) for raw in encode_findings([f])]
        rng, merged = random.Random(seed), []
        while own or camp:
            source = own if own and (not camp or rng.random() < 0.9) else camp
            merged.append(source.pop(0))

        async def go() -> None:
            i = 0
            while i < len(merged):
                n = rng.randint(1, 400)
                await parts.account_stage.process_batch(merged[i:i + n])
                i += n

        asyncio.run(go())
        return ([m["value"] for m in parts.sent["alerts"].messages],
                [m["value"] for m in parts.sent["actions"].messages])

    alerts, actions = run(1)
    kinds = {msgpack.unpackb(a)["kind"] for a in alerts}
    assert kinds == {"account_behaviour", "coordinated_campaign"}, "both ladders are exercised"
    for seed in (2, 3):
        other_alerts, other_actions = run(seed)
        assert sorted(other_alerts) == sorted(alerts)
        assert sorted(other_actions) == sorted(actions)


def test_link_agent_buffers_few_messages_since_each_is_a_batch(app_parts):
    """Faust's ``App.topic`` drops its ``maxsize``: the link agent's stream must still get the small buffer."""
    def buffer(agent: str) -> int:  # the queue of the channel the agent's stream iterates over
        return int(getattr(app_parts, agent).channel_iterator.clone(is_iterator=True).queue.maxsize)

    assert buffer("link_agent") == LINK_BUFFER < STREAM_BUFFER
    assert buffer("account_agent") == STREAM_BUFFER


def test_link_agent_names_campaign_members_in_findings(app_parts):
    from pipeline.detection.messages import MemberSummary

    ts = factories.BASE_TS + 12 * 3_600_000
    msgs = []
    for i in range(20):
        s = MemberSummary(f"m{i}", ts + i, 200, 400.0, 1.0, 0.95, 0xFFFFFF, ts // 3_600_000, factories.BASE_TS,
                          None, "pro", 0.9, f"card-{i % 4}", 0.8, 1.0)
        msgs += [(b"pay:shared", raw) for raw in encode_link_updates([LinkUpdate("pay:shared", s)])]
    _put(app_parts, "link_agent", msgs)
    assert not app_parts.sent["signals"].messages, "held until every source partition has passed them"
    _put(app_parts, "link_agent", [*msgs, _all_idle(app_parts)])  # the same again (skipped), then idle
    signals = app_parts.sent["signals"].messages
    assert signals and not app_parts.sent["findings"].messages, "the link stage reports to the campaign stage"
    assert {m["partition"] for m in signals} == {partition_for("campaigns", app_parts.settings.input_partitions)}
    _put(app_parts, "campaign_agent", [*((m["key"], m["value"], m["headers"]) for m in signals),
                                       _all_idle(app_parts)])  # the link partitions that sent nothing: idle
    named = {f.account for m in app_parts.sent["findings"].messages for f in decode_findings(m["value"])}
    assert named == {f"m{i}" for i in range(20)}
    cids = {f.campaign_id for m in app_parts.sent["findings"].messages for f in decode_findings(m["value"])}
    campaign = [msgpack.unpackb(m["value"]) for m in app_parts.sent["alerts"].messages]
    assert campaign and campaign[0]["kind"] == "coordinated_campaign"
    assert cids == {campaign[0]["campaign_id"]}, "members are named under the campaign's one id"
    validator("anomaly_alert", 2).validate(campaign[0])


def test_link_updates_leave_as_one_message_per_partition_per_batch(app_parts):
    events = factories.harvester_and_noise(3000)
    _put(app_parts, "account_agent", [(e["account_id"].encode(), msgpack.packb(e)) for e in events])
    links = app_parts.sent["links"].messages
    batches = -(-len(events) // 500)  # _put hands the agent batches of 500
    n_parts = app_parts.settings.input_partitions
    assert 0 < len(links) <= batches * n_parts
    updates = [(m["partition"], u) for m in links for u in decode_link_updates(m["value"])]
    assert len(updates) > len(links), "several updates share a message"
    from pipeline.detection.partition import partition_for

    assert all(p == partition_for(u.key, n_parts) for p, u in updates), "each update goes to its key's partition"


def test_a_redelivered_link_message_is_applied_once(app_parts):
    from pipeline.detection.messages import MemberSummary

    ts = factories.BASE_TS + 12 * 3_600_000
    updates = [LinkUpdate("pay:shared", MemberSummary(f"m{i}", ts + i, 200, 400.0, 1.0, 0.95, 0xFFFFFF,
                                                      ts // 3_600_000, factories.BASE_TS, None, "pro", 0.9, f"card-{i % 4}",
                                                      0.8, 1.0))
               for i in range(20)]
    [raw] = encode_link_updates(updates)
    _put(app_parts, "link_agent", [(b"x", raw), _all_idle(app_parts)])
    group = app_parts.engine.links.get("pay:shared")
    first = group.updates
    _put(app_parts, "link_agent", [(b"x", raw), _all_idle(app_parts)])  # offsets 0 and 1 again: a redelivery
    assert app_parts.engine.links.get("pay:shared").updates == first == 20
    # the link stage forgets its order (a rebalance) and reads it back from its table: still nothing twice
    app_parts.link_stage.clear()
    _put(app_parts, "link_agent", [(b"x", raw), _all_idle(app_parts)])
    assert app_parts.engine.links.get("pay:shared").updates == 20


def test_a_batch_writes_out_whenever_its_changed_state_reaches_the_bound(app_parts, monkeypatch):
    """A link batch of many groups writes its outputs, then its state, each time the changed state reaches
    ``BATCH_STATE_WEIGHT``, also while it applies the updates one message set free (a chunk of
    ``RELEASE_CHUNK`` at a time), and ends with the state one write at the end would leave; redelivered
    whole after that (a crash before the ack), it changes and sends nothing."""
    import pipeline.worker.ordered
    import pipeline.worker.stages
    from pipeline.detection.messages import MemberSummary

    monkeypatch.setattr(pipeline.worker.stages, "BATCH_STATE_WEIGHT", 100)
    monkeypatch.setattr(pipeline.worker.ordered, "RELEASE_CHUNK", 16)
    ts = factories.BASE_TS + 12 * 3_600_000
    msgs = []
    for i in range(20):  # each message: a member of one campaign, and 15 one-off groups (weight 9 each)
        s = MemberSummary(f"m{i}", ts + i, 200, 400.0, 1.0, 0.95, 0xFFFFFF, ts // 3_600_000, factories.BASE_TS,
                          None, "pro", 0.9, f"card-{i % 4}", 0.8, 1.0)
        updates = [LinkUpdate("pay:shared", s)] + [LinkUpdate(f"pay:one-off-{i}-{j}", s) for j in range(15)]
        msgs += [(b"x", raw) for raw in encode_link_updates(updates)]
    msgs.append(_all_idle(app_parts))  # every source idle: the link stage applies what it holds, in order
    order: list[tuple[str, int]] = []  # the batch's outputs (a message each) and writes of state (groups)
    send, table = app_parts.wire.send, app_parts.tables["link-state"]
    put_many = table.put_many

    async def recording_send(topic: str, *args: Any, **kwargs: Any) -> Any:
        if not topic.endswith("-changelog") and args[1] != EMPTY_BATCH:  # not state, nor a bare watermark
            order.append(("output", 1))
        return await send(topic, *args, **kwargs)

    async def recording_put_many(items: list[Any]) -> None:
        order.append(("state", len(items)))
        await put_many(items)

    app_parts.wire.send = recording_send
    monkeypatch.setattr(table, "put_many", recording_put_many)
    _put(app_parts, "link_agent", msgs)  # one batch of 21 messages
    # the updates are held until the last message says every source is idle; then each chunk of 16 (one
    # member's groups) reaches the bound: the batch writes after each chunk, and the outputs of a chunk
    # (from the fifth on, the campaign group's signal) leave before its groups' state
    rounds, outputs = [], 0
    for kind, n in order:
        if kind == "output":
            outputs += 1
        else:
            rounds.append((outputs, n))
            outputs = 0
    assert [n for _, n in rounds] == [16] * 20 + [0]  # and nothing is left for the end of the batch
    assert [bool(outputs) for outputs, _ in rounds[:20]] == [False] * 4 + [True] * 16
    named = {f.account for m in app_parts.sent["signals"].messages for s in decode_group_signals(m["value"])
             for f in s.named}
    assert named == {f"m{i}" for i in range(20)}
    group = app_parts.engine.links.get("pay:shared")
    assert (group.updates, len(group.members)) == (20, 20)
    assert all(app_parts.engine.links.get(f"pay:one-off-{i}-14") is not None for i in range(20))
    sent_before = {name: len(sent.messages) for name, sent in app_parts.sent.items()}
    order.clear()
    _put(app_parts, "link_agent", msgs)  # the same batch again, as after a crash before its ack
    assert {name: len(sent.messages) for name, sent in app_parts.sent.items()} == sent_before
    assert app_parts.engine.links.get("pay:shared").updates == 20


def test_state_cache_is_bounded_by_weight_and_evicts_the_least_recently_used():
    from pipeline.worker.state import StateCache

    cache = StateCache(10, weight=len)
    cache.keep("a", "xxxx")
    cache.keep("b", "xxxx")
    assert cache.get("a") == "xxxx"  # now "b" is the least recently used
    cache.keep("c", "xxx")
    assert (cache.get("b"), cache.get("a"), cache.get("c"), cache.total) == (None, "xxxx", "xxx", 7)
    cache.keep("a", "x")  # re-weighed when kept again
    cache.pop("c")
    assert (len(cache), cache.total) == (1, 1)
    cache.clear()
    assert (len(cache), cache.total, cache.get("a")) == (0, 0, None)


def test_state_cache_keeps_state_touched_again_through_a_flood_of_one_off_keys():
    from pipeline.worker.state import StateCache

    cache = StateCache(100)  # 20 on probation, 80 protected
    cache.keep("template-group", "hot")
    cache.keep("template-group", "hot")  # a second batch touched it: protected
    for i in range(10_000):  # a million one-off accounts, in small
        cache.keep(f"one-off-{i}", "cold")  # each on probation, the oldest out first
    assert cache.get("template-group") == "hot"
    assert (len(cache), cache.total) == (100, 100)  # the one-off keys fill only what is free
    assert cache.get("one-off-9900") is None and cache.get("one-off-9901") == "cold"
    for i in range(80):  # 80 more keys touched twice: the least recently kept falls back to probation
        cache.keep(f"hot-{i}", "hot")
        cache.keep(f"hot-{i}", "hot")
    assert (len(cache.protected), len(cache.probation), cache.total) == (80, 20, 100)
    assert "template-group" in cache.probation
    for i in range(20):  # and leaves with the next keys seen once, after the older ones on probation
        cache.keep(f"late-{i}", "cold")
        assert ("template-group" in cache.probation) == (i < 19)
    assert cache.get("hot-0") == "hot"
    big = StateCache(10, weight=len)
    big.keep("small", "x")
    big.keep("small", "x")
    big.keep("huge", "y" * 11)  # heavier than the whole cache: not kept
    assert (big.get("huge"), big.get("small"), big.total) == (None, "x", 1)


def test_cached_state_is_what_was_written_and_is_dropped_on_rebalance(app_parts):
    events = [e for e in factories.harvester_and_noise(600) if e["account_id"] == "harvester"]
    _put(app_parts, "account_agent", [(b"harvester", msgpack.packb(e)) for e in events])
    table = app_parts.tables["account-state"]
    cached = app_parts.engine.accounts.cache.get("harvester")
    assert cached is not None and cached.to_bytes() == table.get_raw(0, b"harvester")
    asyncio.run(table.on_rebalance(set(), set(), set()))
    assert len(app_parts.engine.accounts.cache) == 0


def test_batch_messages_stay_under_the_size_limit_and_lose_nothing():
    from pipeline.detection.messages import Finding, MemberSummary, encode_findings

    findings = [Finding(f"acct-{i}", 1, "coordinated_campaign", 3, 0.5,
                        tuple({"code": "campaign_member", "detail": "x" * 300, "value": 1.0, "baseline": None,
                               "contribution": None}
                              for _ in range(5)), "camp-1") for i in range(2000)]
    msgs = encode_findings(findings, max_bytes=64 * 1024)
    assert len(msgs) > 1 and all(len(m) <= 64 * 1024 + 2048 for m in msgs)
    assert [f for m in msgs for f in decode_findings(m)] == findings
    s = [MemberSummary(f"a{i}", i, 3, 3.0, 1.0, 1.0, 7, 0, 1, None, "pro", 0.5) for i in range(5000)]
    updates = [LinkUpdate(f"pay:{i % 7}", s[i]) for i in range(5000)]
    msgs = encode_link_updates(updates, max_bytes=32 * 1024)
    assert len(msgs) > 1 and [u for m in msgs for u in decode_link_updates(m)] == updates


def test_recovery_stops_the_input_flow_before_faust_resumes_and_seeks(app_parts, monkeypatch):
    # Faust's on_recovery_completed resumes the input partitions, then seeks them to the committed offsets;
    # input fetched in between was processed twice and Faust's commit stopped moving (a stalled worker)
    from faust.tables.recovery import Recovery

    from pipeline.worker.tables import SeekFirstRecovery

    app = app_parts.account_agent.app
    recovery = app.tables.recovery
    assert isinstance(recovery, SeekFirstRecovery)
    app.consumer.resume_flow()
    seen: list[bool] = []

    async def faust_part(self: Recovery, generation_id: int = 0) -> None:
        seen.append(self.app.consumer.flow_active)

    monkeypatch.setattr(Recovery, "on_recovery_completed", faust_part)
    asyncio.run(recovery.on_recovery_completed(1))
    assert seen == [False]


def test_flow_snapshot_of_an_idle_app_is_plain_data(app_parts):
    import json

    from pipeline.worker import stall

    app = app_parts.account_agent.app
    topics = {app_parts.settings.topic("usage-events")}
    snap = stall.snapshot(app, topics)
    json.dumps(snap)  # structlog renders it as JSON
    for key in ("generation", "flow_control_active", "consumer_flow_active", "active", "paused", "buffered",
                "queues", "offsets", "acks", "tasks", "threads"):
        assert key in snap
    assert snap["flow_control_active"] is True  # the fixture resumed it


def test_watchdog_reports_a_stall_once_per_interval_and_not_while_busy():
    from pipeline.worker import stall

    now = [0.0]
    dog = stall.Watchdog(clock=lambda: now[0])
    now[0] = stall.STALL_AFTER_S + 1
    assert dog.stalled_for(waiting=0, busy=False) is None  # nothing waiting: idle, not stalled
    assert dog.stalled_for(waiting=5, busy=True) is None  # recovering: no batches by design
    now[0] += stall.STALL_AFTER_S + 1
    assert dog.stalled_for(waiting=5, busy=False) == stall.STALL_AFTER_S + 1
    now[0] += 10
    assert dog.stalled_for(waiting=5, busy=False) is None  # said already
    dog.batch_ran()
    now[0] += stall.STALL_REPEAT_S
    assert dog.stalled_for(waiting=5, busy=False) is not None


def test_worker_is_ready_only_with_partitions_recovered_and_flowing():
    from types import SimpleNamespace

    from pipeline.worker.health import worker_ready

    flowing = SimpleNamespace(is_active=lambda: True)
    stopped = SimpleNamespace(is_active=lambda: False)

    def app(consumer: Any = "assigned", **kw: Any) -> Any:
        assignment = {"tp"} if consumer == "assigned" else set()
        c = None if consumer is None else SimpleNamespace(assignment=lambda: assignment)
        return SimpleNamespace(_consumer=c, **{"rebalancing": False, "in_recovery": False, "flow_control": flowing,
                                               **kw})

    assert worker_ready(app())
    assert not worker_ready(app(consumer=None))  # not started: the metrics thread must not create one
    assert not worker_ready(app(consumer="none assigned"))
    assert not worker_ready(app(rebalancing=True))
    assert not worker_ready(app(in_recovery=True))
    assert not worker_ready(app(flow_control=stopped))


def test_standby_replicas_are_off_unless_asked_for(make_settings):
    """Faust keeps one standby copy of every table partition by default; the worker keeps none unless
    ``DG_STANDBY_REPLICAS`` asks (each copy replays another worker's state writes all the time)."""
    assert create_app(make_settings(store="memory://")).conf.table_standby_replicas == 0
    assert create_app(make_settings(store="memory://", standby_replicas=2)).conf.table_standby_replicas == 2


def test_worker_consumer_fetches_with_a_short_broker_wait(make_settings):
    """Faust asks the broker to hold a fetch up to 1.5 s; the worker's consumer asks for FETCH_MAX_WAIT_MS."""
    from pipeline.worker.consumer import FETCH_MAX_WAIT_MS, PromptFetchConsumerThread

    app = create_app(make_settings(store="memory://"))
    thread = app.consumer._thread
    assert isinstance(thread, PromptFetchConsumerThread)

    async def build() -> Any:
        return thread._create_worker_consumer(app.transport)

    consumer = asyncio.run(build())
    assert consumer._fetch_max_wait_ms == FETCH_MAX_WAIT_MS == 100


def test_rocksdb_memory_sums_the_estimates_of_every_open_database(tmp_path):
    from types import SimpleNamespace

    import rocksdict

    dbs = {p: rocksdict.Rdict(str(tmp_path / f"p{p}"), rocksdict.Options(raw_mode=True)) for p in (0, 1)}
    try:
        for p, db in dbs.items():
            for i in range(1000 * (p + 1)):
                db.put(f"account-{i}".encode(), b"x" * 200)
        one = rocksdb_memory([SimpleNamespace(data=SimpleNamespace(_dbs={0: dbs[0]}))])
        both = rocksdb_memory([SimpleNamespace(data=SimpleNamespace(_dbs=dbs))])
        assert set(both) == set(ROCKSDB_MEMORY)
        assert 200_000 <= one["memtables"] < both["memtables"]  # 1,000 and 3,000 values of 200 bytes
        assert rocksdb_memory([SimpleNamespace(data={})]) == {}  # the memory store has no estimates
    finally:
        for db in dbs.values():
            db.close()
