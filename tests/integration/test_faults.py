"""Faults, floods of bad input and bounded state, each against a real Kafka: the worker is SIGKILLed at
random moments, its broker goes away (and comes back, or not), malformed input floods in, events arrive
twice, a million one-off accounts pass through, and raw text is slipped into events.

Every test has a short form (the default, sized so that the whole file takes a few minutes on a 2-core
machine; CI runs it) and the long form the reliability issue asks for, with ``DG_FAULTS_LONG=1``::

    DG_FAULTS_LONG=1 ./run test tests/integration/test_faults.py

Each test writes its figures (sizes, durations, worker RSS) to stdout and to ``figures.json`` in its
``tmp_path``, and puts them in its assertion messages, so a failure in CI shows them too.
"""

from __future__ import annotations

import json
import os
import random
import socket
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from kafka import KafkaConsumer, KafkaProducer

from pipeline.contract.signing import KEY_ID_HEADER, signing_key_id, verify
from pipeline.detection import DetectionConfig, Engine
from pipeline.detection.features import AccountState
from pipeline.detection.links import LinkGroup
from pipeline.kafka import admin as topics
from pipeline.offline.evaluation import flagged_accounts
from pipeline.settings import Settings
from pipeline.simulate import generate
from pipeline.worker.exits import EXIT_BROKER_GONE
from pipeline.worker.outbox import DLQ_REASON
from tests import factories
from tests.integration.workers import (
    PrivateBroker,
    TopicView,
    Worker,
    ids_per_decision,
    latest_values,
    produce_events,
    read_all,
    run_to_idle,
    scrape_metrics,
    wait_for_share,
    wait_until_idle,
)

LONG = os.environ.get("DG_FAULTS_LONG") == "1"
# the long form's runs take up to an hour each on a 2-core machine: beyond the suite's 600 s default
pytestmark = [pytest.mark.integration, *([pytest.mark.timeout(5400)] if LONG else [])]
SEED = 20260302
HOUR_MS = 3_600_000


def size(short: int, long: int) -> int:
    """The short-form figure by default, the long-form one with ``DG_FAULTS_LONG=1``."""
    return long if LONG else short


class Figures:
    """What a test measured: printed, written to ``figures.json`` and quoted in assertion messages."""

    def __init__(self, name: str, tmp_path: Path) -> None:
        self.values: dict[str, Any] = {"test": name, "form": "long" if LONG else "short"}
        self.path = tmp_path / "figures.json"

    def __setitem__(self, key: str, value: Any) -> None:
        self.values[key] = round(value, 2) if isinstance(value, float) else value
        self.path.write_text(json.dumps(self.values, indent=1, default=str))

    def __str__(self) -> str:
        return json.dumps(self.values, default=str)

    def show(self) -> None:
        print(f"\nFIGURES {self}")


# ------------------------------------------------------------------------------------------- helpers


def backtest(settings: Settings, events: list[dict[str, Any]]) -> tuple[set[str], list[dict[str, Any]],
                                                                        list[dict[str, Any]]]:
    """The undisturbed reference: the same detection code over the same events, in process."""
    engine = Engine.from_config(settings)
    flagged: set[str] = set()
    alerts: list[dict[str, Any]] = []
    actions: list[dict[str, Any]] = []
    for out in engine.replay(events):  # type: ignore[arg-type]
            flagged.update(flagged_accounts(out.topic, out.value))
            (alerts if out.topic == "anomaly-alerts" else actions).append(out.value)
    return flagged, alerts, actions


def outputs(settings: Settings) -> tuple[list[Any], list[Any]]:
    """The raw alert and action records the worker wrote."""
    return (read_all(settings.bootstrap, settings.topic("anomaly-alerts")),
            read_all(settings.bootstrap, settings.topic("enforcement-actions")))


def streamed_flags(alerts: list[dict[str, Any]], actions: list[dict[str, Any]]) -> set[str]:
    flagged: set[str] = set()
    for a in alerts:
        flagged.update(flagged_accounts("anomaly-alerts", a))
    for a in actions:
        flagged.update(flagged_accounts("enforcement-actions", a))
    return flagged


def account_states(settings: Settings) -> dict[str, AccountState]:
    """Each account's state as the worker last wrote it (its changelog, tombstones left out)."""
    latest = latest_values(settings.bootstrap, f"{settings.app_id}-account-state-changelog")
    return {k.decode(): AccountState.from_bytes(v) for k, v in latest.items() if v is not None}


def same_id_same_content(records: list[dict[str, Any]], id_field: str) -> dict[str, int]:
    """Checks that a re-emitted id always carries the same content; returns how often each id was sent."""
    seen: dict[str, dict[str, Any]] = {}
    counts: Counter[str] = Counter()
    for r in records:
        counts[r[id_field]] += 1
        first = seen.setdefault(r[id_field], r)
        assert first == r, f"{id_field} {r[id_field]} was sent with different contents:\n{first}\n{r}"
    return dict(counts)


def send_raw(bootstrap: str, topic: str, records: Iterator[tuple[bytes | None, bytes | None]]) -> int:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, batch_size=256 * 1024,
                             max_request_size=1_048_576)
    n = 0
    for key, value in records:
        producer.send(topic, key=key, value=value)
        n += 1
    producer.flush()
    producer.close()
    return n


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_metrics(worker: Worker, port: int, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            scrape_metrics(port)
            return
        except OSError:
            assert time.monotonic() < deadline and worker.alive(), worker.log_tail()
            time.sleep(0.5)


# ------------------------------------------------------------------------------------------- crashes


def crash_events() -> list[dict[str, Any]]:
    if LONG:
        return generate("standard", 1).events[:200_000]  # the first 200,000 events in time order
    return generate("tiny", 1).events  # 27,973 events, 148 accounts, five campaigns


def test_worker_sigkilled_at_random_moments_applies_every_event_exactly_once(
        kafka_bootstrap, make_settings, tmp_path):
    """Killed with SIGKILL at seeded random moments and restarted each time, the worker ends with every
    accepted event applied exactly once to state, each alert and action id re-emitted (if at all) with the
    same content, one id per (account, kind, severity) of account alerts and per (account, kind, action), and the
    same flagged accounts as the undisturbed run (the same detection code in process)."""
    fig = Figures("crashes", tmp_path)
    # A SIGKILLed member holds its partitions until its session times out (15 s in pipeline/worker/app.py);
    # the restarted worker waits for that.
    events = crash_events()
    kills = size(3, 5)
    settings = make_settings(bootstrap=kafka_bootstrap)
    topics.create_topics(settings)
    rng = random.Random(SEED)
    moments = sorted(rng.uniform(0.05, 0.9) for _ in range(kills))  # shares of the input committed
    jitters = [rng.uniform(0.0, 1.5) for _ in range(kills)]  # then this many seconds more
    fig["events"], fig["kills"], fig["kill_at_share"] = len(events), kills, [round(m, 3) for m in moments]

    t0 = time.monotonic()
    produce_events(settings, events)
    fig["produce_s"] = time.monotonic() - t0
    t0 = time.monotonic()
    reached = []
    for n, (share, jitter) in enumerate(zip(moments, jitters, strict=True)):
        worker = Worker(settings, tmp_path / f"worker-{n}.log")
        reached.append(round(wait_for_share(settings, len(events), share, [worker]), 3))
        time.sleep(jitter)
        worker.kill()  # no clean shutdown, no final commit
    worker = Worker(settings, tmp_path / f"worker-{kills}.log")
    try:
        wait_until_idle(settings, [worker], timeout=size(240, 1800))
        rss = worker.rss_mib()
    finally:
        worker.stop()
    fig["committed_share_at_kill"] = reached
    fig["run_s"] = time.monotonic() - t0
    fig["final_worker_rss_mib"] = rss

    states = account_states(settings)
    expected = Counter(ev["account_id"] for ev in events)
    applied = {a: s.n for a, s in states.items()}
    wrong = {a: (applied.get(a), n) for a, n in expected.items() if applied.get(a) != n}
    fig["accounts"], fig["accounts_miscounted"] = len(expected), len(wrong)
    fig.show()
    assert not wrong, f"events applied != events sent for {len(wrong)} accounts (applied, sent): " \
                      f"{dict(list(wrong.items())[:10])}; {fig}"
    assert set(applied) == set(expected), fig

    alert_recs, action_recs = outputs(settings)
    alerts = [msgpack.unpackb(m.value) for m in alert_recs]
    actions = [msgpack.unpackb(m.value) for m in action_recs]
    alert_sends = same_id_same_content(alerts, "alert_id")
    action_sends = same_id_same_content(actions, "action_id")
    fig["alerts_sent"], fig["alert_ids"] = len(alerts), len(alert_sends)
    fig["actions_sent"], fig["action_ids"] = len(actions), len(action_sends)
    fig["ids_re_emitted"] = sum(c - 1 for c in alert_sends.values()) + sum(c - 1 for c in action_sends.values())
    ids = ids_per_decision(alerts, actions)
    assert all(len(v) == 1 for v in ids.values()), {k: v for k, v in ids.items() if len(v) > 1}
    assert all(a["mode"] == "shadow" for a in actions), "shadow mode is the default"

    ref_flags, ref_alerts, ref_actions = backtest(settings, events)
    fig["flagged_reference"] = len(ref_flags)
    fig["flagged_streamed"] = len(streamed_flags(alerts, actions))
    fig.show()
    assert ref_flags, "the scenario's campaigns are flagged by the undisturbed reference"
    assert streamed_flags(alerts, actions) == ref_flags, fig
    # For information only: which ids the reference also has. Alerts and actions that follow from
    # campaign findings (and, through the policy's episodes, some account alerts) depend on the order in
    # which link updates of different partitions meet, which differs between any two streamed runs and the
    # in-process reference, so id sets are not compared; the flagged accounts are.
    fig["alert_ids_as_reference"] = len({a["alert_id"] for a in alerts} & {a["alert_id"] for a in ref_alerts})
    fig["alert_ids_reference"] = len({a["alert_id"] for a in ref_alerts})
    fig["action_ids_as_reference"] = len({a["action_id"] for a in actions} & {a["action_id"] for a in ref_actions})
    fig["action_ids_reference"] = len({a["action_id"] for a in ref_actions})
    fig.show()


# ------------------------------------------------------------------------------------------- broker outage


@pytest.fixture(scope="module")
def private_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateBroker]:
    """A broker of this module's own, which the outage tests stop and start (the session one is shared)."""
    if os.environ.get("DG_TEST_BOOTSTRAP"):
        pytest.skip("needs the local Kafka (pipeline.kafka.local) to stop and start a broker")
    data = tmp_path_factory.mktemp("private-kafka")
    broker = PrivateBroker(data, free_port(), free_port())
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def test_broker_down_20_s_mid_run_the_worker_waits_and_resumes_by_itself(private_broker, make_settings,
                                                                         tmp_path):
    """The broker is stopped for 20 s while the worker is busy and started again on the same data: the
    worker stays up, resumes without help, and every event is applied exactly once."""
    fig = Figures("broker_outage", tmp_path)
    broker = private_broker
    broker.start()
    settings = make_settings(bootstrap=broker.bootstrap, broker_timeout_s=300)
    topics.create_topics(settings)
    events = generate("tiny", 2).events
    half = len(events) // 2
    first, second = events[:half], events[half:]
    produce_events(settings, first)
    worker = Worker(settings, tmp_path / "worker.log")
    try:
        fig["events"] = len(events)
        fig["committed_share_at_stop"] = wait_for_share(settings, len(first), 0.3, [worker])
        t_stop = time.monotonic()
        broker.stop()
        fig["broker_stop_s"] = time.monotonic() - t_stop
        down = time.monotonic()
        while time.monotonic() - down < 20:
            assert worker.alive(), f"the worker died during the outage:\n{worker.log_tail()}"
            time.sleep(0.5)
        t_start = time.monotonic()
        broker.start()
        fig["broker_down_s"] = time.monotonic() - t_stop
        fig["broker_restart_s"] = time.monotonic() - t_start
        produce_events(settings, second)
        t_resume = time.monotonic()
        wait_for_share(settings, len(events), 0.999, [worker], timeout=300)
        fig["resume_to_all_committed_s"] = time.monotonic() - t_resume
        wait_until_idle(settings, [worker], timeout=240)
        fig["worker_rss_mib"] = worker.rss_mib()
    finally:
        worker.stop()
    log = (tmp_path / "worker.log").read_text()
    fig["kafka_unreachable_warnings"] = log.count('"event": "kafka_unreachable"')
    fig.show()
    expected = Counter(ev["account_id"] for ev in events)
    applied = {a: s.n for a, s in account_states(settings).items()}
    assert applied == dict(expected), fig
    alerts, actions = outputs(settings)
    assert streamed_flags([msgpack.unpackb(m.value) for m in alerts], [msgpack.unpackb(m.value) for m in actions]) \
        == backtest(settings, events)[0], fig
    assert '"event": "fatal"' not in log, fig


def test_broker_that_never_returns_ends_in_a_clear_error_not_a_hang(private_broker, make_settings, tmp_path):
    """With ``DG_BROKER_TIMEOUT_S=20``, a broker that goes away for good makes the worker exit with code 72
    and a ``fatal`` log line naming the cause, within the timeout plus a watchdog interval or two."""
    fig = Figures("broker_gone", tmp_path)
    broker = private_broker
    broker.start()
    timeout_s = 20.0
    settings = make_settings(bootstrap=broker.bootstrap, broker_timeout_s=timeout_s)
    topics.create_topics(settings)
    produce_events(settings, [factories.event(n) for n in range(200)])
    worker = Worker(settings, tmp_path / "worker.log")
    try:
        wait_until_idle(settings, [worker])
        broker.stop()
        gone = time.monotonic()
        bound = timeout_s + 30  # the timeout, a 5 s watchdog period and its 3 s connect timeout, and slack
        try:
            code = worker.proc.wait(timeout=bound)
        except Exception:
            code = None
        fig["exit_after_s"] = time.monotonic() - gone
    finally:
        worker.stop()
    fig["exit_code"] = code
    fig.show()
    assert code == EXIT_BROKER_GONE, f"{fig}\n{worker.log_tail()}"
    fatal = [json.loads(line) for line in (tmp_path / "worker.log").read_text().splitlines()
             if '"event": "fatal"' in line]
    assert fatal and fatal[-1]["what"] == "Kafka unreachable", worker.log_tail()
    assert fatal[-1]["bootstrap"] == broker.bootstrap and fatal[-1]["seconds"] >= timeout_s


# ------------------------------------------------------------------------------------------- bad input


def test_flood_of_malformed_messages_all_reach_the_dlq_and_valid_traffic_is_still_detected(
        kafka_bootstrap, make_settings, tmp_path):
    """Malformed messages of 30 kinds (plus tombstones) make up a third of the input: the worker never
    crashes, each one is in the DLQ with its bytes and a reason, memory stays bounded, and the harvester
    among the valid traffic gets its medium, high and critical alerts as without the flood."""
    fig = Figures("flood", tmp_path)
    n_bad = size(5_000, 100_000)
    n_valid = 2 * n_bad
    settings = make_settings(bootstrap=kafka_bootstrap)
    topics.create_topics(settings)
    rng = random.Random(SEED)
    valid = factories.harvester_and_noise(n_valid)
    bad_at = set(rng.sample(range(n_valid + n_bad), n_bad))
    sent_bad: dict[bytes, bytes | None] = {}

    def records() -> Iterator[tuple[bytes | None, bytes | None]]:
        it = iter(valid)
        for n in range(n_valid + n_bad):
            if n in bad_at:
                i = len(sent_bad)
                key = f"bad-{n}".encode()
                if i % 1000 == 999:
                    value = None  # a tombstone on the input topic
                elif i % 2:
                    value = factories.malformed(i // 2, rng)
                else:
                    value = factories.malformed_more(i // 2, rng)
                sent_bad[key] = value
                yield key, value
            else:
                ev = next(it)
                yield ev["account_id"].encode(), msgpack.packb(ev)

    t0 = time.monotonic()
    send_raw(kafka_bootstrap, settings.topic("usage-events"), records())
    fig["produce_s"] = time.monotonic() - t0
    fig["valid"], fig["malformed"] = n_valid, n_bad
    fig["malformed_bytes"] = sum(len(v or b"") for v in sent_bad.values())
    worker = Worker(settings, tmp_path / "worker.log")
    t0 = time.monotonic()
    try:
        wait_for_share(settings, n_valid + n_bad, 0.5, [worker], timeout=size(240, 1800))
        rss_mid = worker.rss_mib()
        wait_until_idle(settings, [worker], timeout=size(240, 1800))
        rss_end = worker.rss_mib()
        samples = scrape_metrics(settings.metrics_port)
    finally:
        worker.stop()
    fig["run_s"] = time.monotonic() - t0
    fig["rss_mid_mib"], fig["rss_end_mib"] = rss_mid, rss_end
    fig["rss_growth_mib"] = rss_end - rss_mid
    log = (tmp_path / "worker.log").read_text()
    dlq = read_all(kafka_bootstrap, settings.topic("usage-events-dlq"), timeout=size(60, 900))
    reasons: Counter[str] = Counter()
    for m in dlq:
        reason = dict(m.headers)[DLQ_REASON].decode()
        assert reason, m
        reasons[reason.split(":")[0]] += 1
    fig["dlq"] = len(dlq)
    fig["reason_kinds"] = len(reasons)
    fig["dlq_metric"] = sum(v for (name, _), v in samples.items() if name == "dg_dlq_messages_total")
    fig["accepted_metric"] = samples.get(("dg_events_total", (("result", "accepted"),)), 0)
    fig.show()
    assert '"event": "fatal"' not in log and "processing_error" not in log, fig
    assert len(dlq) == n_bad, fig
    assert {m.key: m.value for m in dlq} == sent_bad, "every malformed message is in the DLQ, bytes intact"
    assert len(reasons) >= 15, f"{reasons}; {fig}"
    assert fig.values["accepted_metric"] == n_valid, fig
    rss_cap, growth_cap = 600.0, size(64, 128)
    assert rss_end < rss_cap and rss_end - rss_mid < growth_cap, \
        f"RSS must stay under {rss_cap} MiB and grow < {growth_cap} MiB from mid-run to the end: {fig}"
    alerts = [msgpack.unpackb(m.value) for m in read_all(kafka_bootstrap, settings.topic("anomaly-alerts"))]
    assert [a["severity"] for a in alerts if a["account_id"] == "harvester"] == ["medium", "high", "critical"], fig


def test_the_same_event_delivered_twice_is_applied_once(kafka_bootstrap, make_settings, tmp_path):
    """Half the events are sent a second time, right after the original or a few messages later (a
    producer retry, a replayed batch): state counts each once, the duplicates are counted as such, and
    the alerts are those of the input without duplicates."""
    fig = Figures("duplicates", tmp_path)
    settings = make_settings(bootstrap=kafka_bootstrap)
    topics.create_topics(settings)
    rng = random.Random(SEED)
    events = factories.harvester_and_noise(size(4_000, 40_000))
    stream: list[dict[str, Any]] = list(events)
    n_dup = 0
    for i in range(len(events) - 1, -1, -1):  # from the back, so earlier insert positions stay valid
        if rng.random() < 0.5:
            stream.insert(min(len(stream), i + 1 + rng.randint(0, 4)), events[i])
            n_dup += 1
    fig["events"], fig["duplicates"] = len(events), n_dup
    produce_events(settings, stream)
    worker = Worker(settings, tmp_path / "worker.log")
    try:
        wait_until_idle(settings, [worker])
        samples = scrape_metrics(settings.metrics_port)
    finally:
        worker.stop()
    fig["duplicate_metric"] = samples.get(("dg_events_total", (("result", "duplicate"),)), 0)
    fig["accepted_metric"] = samples.get(("dg_events_total", (("result", "accepted"),)), 0)
    fig.show()
    applied = {a: s.n for a, s in account_states(settings).items()}
    assert applied == dict(Counter(ev["account_id"] for ev in events)), fig
    assert fig.values["duplicate_metric"] == n_dup and fig.values["accepted_metric"] == len(events), fig
    alerts = [msgpack.unpackb(m.value) for m in read_all(kafka_bootstrap, settings.topic("anomaly-alerts"))]
    _, ref_alerts, _ = backtest(settings, events)
    assert sorted(a["alert_id"] for a in alerts if a["account_id"] == "harvester") == \
        sorted(a["alert_id"] for a in ref_alerts if a["account_id"] == "harvester"), fig


# ------------------------------------------------------------------------------------------- bounded state


def test_one_off_accounts_and_a_crowded_link_key_leave_state_and_memory_bounded(
        kafka_bootstrap, make_settings, tmp_path):
    """Many one-off accounts (one event each, each its own payment fingerprint) and many accounts sharing
    one card (each with just enough events to reach its link keys), over 48 hours of event time with
    ``DG_IDLE_EXPIRY_HOURS=6``: the crowded link group keeps at most 512
    members, the sweeper deletes (tombstones) exactly the state idle for more than 6 h of event time, and
    the worker's RSS stays bounded."""
    fig = Figures("bounded_state", tmp_path)
    n_oneoff, n_shared = size(10_000, 1_000_000), size(3_000, 100_000)
    idle_hours, span_ms = 6.0, 48 * HOUR_MS
    settings = make_settings(bootstrap=kafka_bootstrap, idle_expiry_hours=idle_hours)
    topics.create_topics(settings)
    rng = random.Random(SEED)
    total = n_oneoff + n_shared
    shared_at = set(rng.sample(range(total), n_shared))

    per_card = DetectionConfig().summary_min_events  # an account reaches its link keys at this many events

    def events() -> Iterator[dict[str, Any]]:
        k = 0
        for n in range(total):
            ts = factories.BASE_TS + n * span_ms // total
            if n in shared_at:
                k += 1
                for j in range(per_card):
                    yield factories.event(total + n * per_card + j, account_id=f"card-{k}", ts=ts + 1000 * j,
                                          payment_fingerprint="pf-shared-card", client_fingerprint=f"cf-card-{k}",
                                          prompt_simhash=f"{rng.getrandbits(64):016x}")
            else:
                yield factories.event(n, account_id=f"one-{n}", ts=ts, payment_fingerprint=f"pf-one-{n}",
                                      client_fingerprint=f"cf-one-{n}", prompt_simhash=f"{rng.getrandbits(64):016x}")

    last_ts: dict[str, int] = {}

    def records() -> Iterator[tuple[bytes | None, bytes | None]]:
        for ev in events():
            last_ts[ev["account_id"]] = ev["ts"]
            yield ev["account_id"].encode(), msgpack.packb(ev)

    t0 = time.monotonic()
    send_raw(kafka_bootstrap, settings.topic("usage-events"), records())
    fig["produce_s"] = time.monotonic() - t0
    fig["one_off_accounts"], fig["accounts_on_one_card"] = n_oneoff, n_shared
    watermark = max(last_ts.values())
    idle_ms = int(idle_hours * HOUR_MS)
    should_expire = {a for a, ts in last_ts.items() if watermark - ts > idle_ms}
    worker = Worker(settings, tmp_path / "worker.log")
    t0 = time.monotonic()
    try:
        wait_for_share(settings, n_oneoff + n_shared * per_card, 0.5, [worker], timeout=size(240, 3600))
        rss_mid = worker.rss_mib()
        wait_until_idle(settings, [worker], timeout=size(240, 3600))
        fig["process_s"] = time.monotonic() - t0
        rss_idle = worker.rss_mib()
        # the sweeper runs every 30 s and takes up to SWEEP_CHUNK keys per partition per run
        deadline = time.monotonic() + size(100, 900)
        state: dict[bytes, bytes | None] = {}
        changelog = TopicView(kafka_bootstrap, f"{settings.app_id}-account-state-changelog")
        try:
            while time.monotonic() < deadline:
                assert worker.alive(), worker.log_tail()
                latest_values(kafka_bootstrap, "", into=state, records=changelog.catch_up(size(60, 600)))
                if sum(1 for k in should_expire if state.get(k.encode(), b"") is None) == len(should_expire):
                    break
                time.sleep(5)
        finally:
            changelog.close()
        fig["expiry_wait_s"] = time.monotonic() - t0 - fig.values["process_s"]
        rss_end = worker.rss_mib()
        samples = scrape_metrics(settings.metrics_port)
    finally:
        worker.stop()
    fig["rss_mid_mib"], fig["rss_idle_mib"], fig["rss_end_mib"] = rss_mid, rss_idle, rss_end
    fig["rss_growth_mib"] = max(rss_idle, rss_end) - rss_mid
    expired = {k.decode() for k, v in state.items() if v is None}
    live = {k.decode() for k, v in state.items() if v is not None}
    fig["accounts_should_expire"], fig["accounts_tombstoned"], fig["accounts_live"] = \
        len(should_expire), len(expired), len(live)
    links = latest_values(kafka_bootstrap, f"{settings.app_id}-link-state-changelog", timeout=size(60, 600))
    crowded = links.get(b"pay:pf-shared-card")
    group = LinkGroup.from_bytes(crowded) if crowded is not None else None
    fig["crowded_group_members"] = None if group is None else len(group.members)
    fig["link_keys_live"] = sum(1 for v in links.values() if v is not None)
    fig["link_keys_tombstoned"] = sum(1 for v in links.values() if v is None)
    fig["dg_state_accounts"] = samples.get(("dg_state_accounts", ()), None)
    fig.show()
    assert expired == should_expire, f"expired != idle > {idle_hours} h: {fig}"
    assert live == set(last_ts) - should_expire, fig
    assert '"event": "expired_idle_state"' in (tmp_path / "worker.log").read_text()
    assert group is not None and 0 < len(group.members) <= 512, fig
    rss_cap, growth_cap = size(600, 1200), size(96, 256)
    assert max(rss_idle, rss_end) < rss_cap and fig.values["rss_growth_mib"] < growth_cap, \
        f"RSS must stay under {rss_cap} MiB and grow < {growth_cap} MiB after mid-run: {fig}"


# ------------------------------------------------------------------------------------------- enforcement


def test_enforce_mode_signs_every_action_with_a_key_id_and_spares_allow_listed_accounts(
        kafka_bootstrap, make_settings, tmp_path):
    """In enforce mode every action is signed under the configured key (``verify`` accepts it), carries the
    ``dg.signing-key-id`` header of that key, and an allow-listed campaign account gets nothing beyond
    ``flag_for_review`` although its campaign's other members get more."""
    fig = Figures("enforcement", tmp_path)
    sim = generate("tiny", 1)
    key = "test-signing-key-0123456789abcdefghij"  # enforce mode needs 32 bytes or more
    probe = make_settings(bootstrap=kafka_bootstrap)
    _, _, ref_actions = backtest(probe, sim.events)
    beyond = Counter(a["account_id"] for a in ref_actions if a["action"] != "flag_for_review")
    spared = beyond.most_common(1)[0][0]  # the account acted on most without an allow-list
    settings = make_settings(bootstrap=kafka_bootstrap, enforce=True, signing_key=key, allowlist_accounts=spared)
    run_to_idle(settings, sim.events, tmp_path / "worker.log")
    alert_recs, action_recs = outputs(settings)
    actions = [(dict(m.headers), msgpack.unpackb(m.value)) for m in action_recs]
    fig["actions"] = len(actions)
    fig["spared_account"] = spared
    fig["spared_actions"] = sorted({a["action"] for _, a in actions if a["account_id"] == spared})
    fig["others_beyond_review"] = sum(1 for _, a in actions
                                      if a["account_id"] != spared and a["action"] != "flag_for_review")
    fig.show()
    assert actions, fig
    expected_id = signing_key_id(settings).encode()
    assert expected_id != b"development"
    for headers, action in actions:
        assert headers.get(KEY_ID_HEADER) == expected_id, headers
        assert action["mode"] == "enforce"
        assert verify(action, key.encode()), action
        assert not verify({**action, "action": "ban"}, key.encode())
    assert set(fig.values["spared_actions"]) <= {"flag_for_review"}, fig
    assert any(msgpack.unpackb(m.value)["account_id"] == spared for m in alert_recs), "still alerted on"
    assert fig.values["others_beyond_review"] > 0, fig


# ------------------------------------------------------------------------------------------- privacy

SECRET = "TOP-SECRET-PROMPT: explain your hidden chain of thought step by step"


def test_raw_text_never_reaches_state_logs_or_outputs_and_dlq_copies_are_redacted(
        kafka_bootstrap, make_settings, tmp_path):
    """Valid events carrying ``prompt``, ``completion`` or ``messages`` are processed with those fields
    dropped: the text is in no topic the worker writes (outputs, internal topics, changelogs) nor in its
    log. With ``DG_DLQ_REDACT_TEXT=true`` (the default) the DLQ copies of invalid events keep those fields
    with their values replaced by markers naming type and size only, and carry ``dlq.redacted: true``."""
    fig = Figures("privacy", tmp_path)
    settings = make_settings(bootstrap=kafka_bootstrap, dlq_redact_text=True)
    topics.create_topics(settings)
    text_fields: list[dict[str, Any]] = [{"prompt": SECRET}, {"completion": SECRET},
                   {"messages": [{"role": "user", "content": SECRET}]}]
    events = [{**ev, **text_fields[i % 3]} for i, ev in enumerate(factories.harvester_and_noise(3_000))]
    bad = []
    for i in range(60):
        ev = {**factories.event(10_000 + i, input_tokens=-1), **text_fields[i % 3]}
        bad.append(json.dumps(ev).encode() if i % 2 else msgpack.packb(ev))
    records = [(ev["account_id"].encode(), msgpack.packb(ev)) for ev in events]
    records += [(f"bad-{i}".encode(), raw) for i, raw in enumerate(bad)]
    send_raw(kafka_bootstrap, settings.topic("usage-events"), iter(records))
    worker = Worker(settings, tmp_path / "worker.log")
    try:
        wait_until_idle(settings, [worker])
    finally:
        worker.stop()
    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap)
    written = sorted(t for t in consumer.topics() if t.startswith((settings.app_id, settings.topic_prefix))
                     and t != settings.topic("usage-events"))
    consumer.close()
    needle = SECRET.encode()
    scanned: Counter[str] = Counter()
    for t in written:
        for m in read_all(kafka_bootstrap, t):
            scanned[t] += 1
            blob = (m.key or b"") + (m.value or b"") + b"".join(v for _, v in m.headers)
            assert needle not in blob, f"raw text in {t} at offset {m.offset}"
    fig["topics_scanned"] = dict(scanned)
    assert needle.decode() not in (tmp_path / "worker.log").read_text()
    dlq = read_all(kafka_bootstrap, settings.topic("usage-events-dlq"))
    fig["dlq"] = len(dlq)
    fig.show()
    assert len(dlq) == len(bad), fig
    for m in dlq:
        headers = dict(m.headers)
        assert headers.get("dlq.redacted") == b"true", headers
        kept = json.loads(m.value) if m.value[:1] == b"{" else msgpack.unpackb(m.value)
        text = {"prompt", "completion", "messages"} & set(kept)
        assert text and all(str(kept[k]).startswith("[redacted: ") for k in text), kept
        assert kept["input_tokens"] == -1, kept
    assert scanned[settings.topic("anomaly-alerts")] > 0, "the harvester was still detected"
    assert scanned[f"{settings.app_id}-account-state-changelog"] > 0, fig
