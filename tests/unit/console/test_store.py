"""The console store: numbered migrations, idempotent writes, the queue summary and statuses."""

from __future__ import annotations

import json

from pipeline.console import pages, queries, store
from pipeline.console.loader import RunFiles, load_run
from pipeline.console.store import LIVE, Batch
from tests.unit.console.helpers import BASE_TS, CAMPAIGN, action, alert, campaign_alerts


def _snapshot(conn) -> dict[str, list[tuple]]:
    return {t: [tuple(r) for r in conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2, 3")]
            for t in ("alerts", "actions", "verdicts", "members", "items", "activity", "offsets")}


def test_migrations_are_numbered_and_applied_once(tmp_path):
    conn = store.connect(tmp_path / "c.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == store.MIGRATIONS[-1][0]
    assert [n for n, _ in store.MIGRATIONS] == list(range(1, len(store.MIGRATIONS) + 1))
    conn.close()
    again = store.connect(tmp_path / "c.db")  # reopening applies nothing twice
    assert store.migrate(again) == store.MIGRATIONS[-1][0]


def test_writing_the_same_messages_twice_changes_nothing(tmp_path):
    conn = store.connect(tmp_path / "c.db")
    verdict = {"alert_id": "alr-a", "account_id": "acct-a", "kind": "coordinated_campaign", "campaign_id": CAMPAIGN,
               "verdict": "false_positive", "ts": 5, "analyst": "ana", "signature": "ab"}

    def write() -> None:
        with Batch(conn) as b:
            for a in campaign_alerts():
                b.alert(LIVE, a)
            b.action(LIVE, action("act-1", "acct-a", "alr-a"))
            b.verdict(LIVE, ("t-analyst-verdicts", 0, 7), verdict)
            b.offset("t-anomaly-alerts", 0, 4)

    write()
    first = _snapshot(conn)
    write()
    assert _snapshot(conn) == first


def test_campaign_summary_counts_members_and_keeps_the_highest_severity(tmp_path):
    conn = store.connect(tmp_path / "c.db")
    with Batch(conn) as b:
        for a in campaign_alerts():
            b.alert(LIVE, a)
    q = queries.queue(conn, LIVE, queries.QueueFilter())
    assert [(i["item_type"], i["item_id"]) for i in q["items"]] == [("campaign", CAMPAIGN), ("account", "acct-lone")]
    assert q["items"][0]["size"] == 3 and q["items"][0]["sev_rank"] == 4
    c = queries.campaign(conn, LIVE, CAMPAIGN)
    assert c is not None
    assert [(m["account_id"], m["similarity"]) for m in c["members"]] == [
        ("acct-a", 0.95), ("acct-b", 0.7), ("acct-c", None)]


def test_queue_filters_by_severity_kind_status_and_time(tmp_path):
    conn = store.connect(tmp_path / "c.db")
    with Batch(conn) as b:
        for a in campaign_alerts():
            b.alert(LIVE, a)
        b.alert(LIVE, alert("alr-old", "acct-old", ts=1_772_409_600_000 - 48 * 3_600_000, severity="low"))
    ids = lambda **kw: [i["item_id"] for i in queries.queue(conn, LIVE, queries.QueueFilter(**kw))["items"]]  # noqa: E731
    assert ids(severity="high") == [CAMPAIGN]
    assert ids(kind="campaign") == [CAMPAIGN]
    assert ids(kind="account_behaviour") == ["acct-lone", "acct-old"]
    assert ids(hours=24) == [CAMPAIGN, "acct-lone"]
    assert ids(status="dismissed") == []


def test_a_dismissal_of_every_member_dismisses_the_campaign_and_a_lift_shows_as_its_effect(tmp_path):
    conn = store.connect(tmp_path / "c.db")
    with Batch(conn) as b:
        for a in campaign_alerts():
            b.alert(LIVE, a)
        b.action(LIVE, action("act-a", "acct-a", "alr-a"))
    with Batch(conn) as b:
        for i, acct in enumerate(("acct-a", "acct-b", "acct-c")):
            b.verdict(LIVE, ("v", 0, i), {"alert_id": f"alr-{acct[-1]}", "account_id": acct, "kind":
                      "coordinated_campaign", "campaign_id": CAMPAIGN, "verdict": "false_positive", "ts": 10 + i,
                      "analyst": "ana", "signature": f"s{i}"})
        b.action(LIVE, action("lift-a", "acct-a", "alr-a", name="lift", lifts=["act-a"]))
    (item,) = queries.queue(conn, LIVE, queries.QueueFilter(status="dismissed", kind="campaign"))["items"]
    assert item["item_id"] == CAMPAIGN
    a = queries.account(conn, LIVE, "acct-a")
    assert a is not None
    (v,) = a["verdicts"]
    assert v["effect"]["lift"]["action_id"] == "lift-a" and v["effect"]["later_alerts"] == 0


def test_loading_a_run_again_replaces_it(tmp_path):
    alerts = tmp_path / "alerts.jsonl"
    alerts.write_text("".join(json.dumps(a) + "\n" for a in campaign_alerts()))
    report = tmp_path / "report"
    report.mkdir()
    (report / "metrics.json").write_text(json.dumps({"flagged_accounts": 3}))
    conn = store.connect(tmp_path / "c.db")
    load_run(conn, "run-1", RunFiles(alerts=alerts, report=report),
             events=[{"account_id": "acct-a", "ts": 1_772_409_600_000}])
    first = _snapshot(conn)
    load_run(conn, "run-1", RunFiles(alerts=alerts, report=report),
             events=[{"account_id": "acct-a", "ts": 1_772_409_600_000}])
    assert _snapshot(conn) == first
    assert queries.runs(conn)[0]["metrics"] == {"flagged_accounts": 3}
    cmp = queries.compare(conn, "run-1", "run-1")
    assert cmp["only_a"] == [] and cmp["both"] == ["acct-a", "acct-b", "acct-c"]


def test_a_new_member_reopens_a_dismissed_campaign(tmp_path):
    conn = store.connect(tmp_path / "c.db")
    with Batch(conn) as b:
        b.alert(LIVE, alert("alr-c", None, kind="coordinated_campaign", campaign=CAMPAIGN, related=["acct-a"]))
        b.verdict(LIVE, ("v", 0, 0), {"alert_id": "alr-c", "account_id": "acct-a", "kind": "coordinated_campaign",
                                      "campaign_id": CAMPAIGN, "verdict": "false_positive", "ts": 1, "analyst": "ana",
                                      "signature": "s"})
    status = lambda: conn.execute("SELECT status FROM items WHERE item_id = ?", (CAMPAIGN,)).fetchone()[0]  # noqa: E731
    assert status() == "dismissed"
    with Batch(conn) as b:
        b.alert(LIVE, alert("alr-d", "acct-new", kind="coordinated_campaign", campaign=CAMPAIGN, similarity=0.9))
    assert status() == "open"


def test_two_runs_compared_show_the_settings_they_differ_in_and_severity_changes(tmp_path):
    conn = store.connect(tmp_path / "c.db")
    strict, loose = tmp_path / "strict.jsonl", tmp_path / "loose.jsonl"
    strict.write_text(json.dumps(alert("alr-1", "acct-a", severity="high")) + "\n")
    loose.write_text(json.dumps(alert("alr-2", "acct-a", severity="critical")) + "\n"
                     + json.dumps(alert("alr-3", "acct-b", severity="high")) + "\n")
    for name, path, high in (("strict", strict, 0.8), ("loose", loose, 0.6)):
        report = tmp_path / f"report-{name}"
        report.mkdir()
        (report / "metrics.json").write_text(json.dumps({"meta": {"detection_config": {"account_high": high,
                                                                                       "seed": 7}}}))
        load_run(conn, name, RunFiles(alerts=path, report=report))
    cmp = queries.compare(conn, "strict", "loose")
    assert cmp["settings"] == [("account_high", 0.8, 0.6)]
    assert cmp["severity_changed"] == [("acct-a", 3, 4)] and cmp["only_b"] == ["acct-b"]


def test_a_campaign_absorbed_by_a_merge_leaves_the_queue_and_points_to_the_survivor(tmp_path):
    """The detector merges campaigns of one operator into the oldest; the survivor's alert names the absorbed
    ids in its ``campaign_merged`` reason. Whichever comes first, the absorbed campaign's own alerts or the
    merge, the queue shows the survivor only, and the absorbed one's page points to it."""
    older, younger = "camp-" + "a" * 32, "camp-" + "b" * 32
    merge = alert("alr-merge", None, severity="critical", kind="coordinated_campaign", campaign=older,
                  related=["acct-a", "acct-b"], ts=BASE_TS + 9000)
    merge["reasons"].append({"code": "campaign_merged", "detail": f"the same operator as campaign {younger}: now "
                             "one campaign", "value": 1.0, "baseline": None, "contribution": None})
    own = [alert("alr-y", None, severity="high", kind="coordinated_campaign", campaign=younger, related=["acct-b"]),
           alert("alr-yb", "acct-b", severity="high", kind="coordinated_campaign", campaign=younger,
                 similarity=0.8)]
    for n, order in enumerate(([*own, merge], [merge, *own])):
        conn = store.connect(tmp_path / f"c{n}.db")
        with Batch(conn) as b:
            for a in order:
                b.alert(LIVE, a)
        q = queries.queue(conn, LIVE, queries.QueueFilter())
        assert [i["item_id"] for i in q["items"] if i["item_type"] == "campaign"] == [older]
        assert sum(w["n"] for w in q["waiting"] if w["item_type"] == "campaign") == 1
        gone = queries.queue(conn, LIVE, queries.QueueFilter(status="merged"))["items"]
        assert [(i["item_id"], i["merged_into"]) for i in gone] == [(younger, older)]
        c = queries.campaign(conn, LIVE, younger)
        assert c is not None and c["item"]["merged_into"] == older
        assert f"Merged into campaign <a href='/campaign/{older}?source=live'>" in pages.campaign_page(
            c, younger, LIVE, "csrf")
        # a verdict on the absorbed campaign's member leaves it merged
        with Batch(conn) as b:
            b.verdict(LIVE, ("t-analyst-verdicts", 0, 1), {
                "alert_id": "alr-yb", "account_id": "acct-b", "kind": "coordinated_campaign", "campaign_id": younger,
                "verdict": "false_positive", "ts": BASE_TS + 10_000, "analyst": "ana", "signature": "ab"})
        status = conn.execute("SELECT status FROM items WHERE item_id = ?", (younger,)).fetchone()[0]
        assert status == "merged"
        conn.close()
