"""Dismissing an account as a whole: one signed verdict per scope it was alerted in."""

from __future__ import annotations

from pipeline.console.store import LIVE, Batch
from tests.unit.console.helpers import alert, log_in, run


def test_an_account_dismissal_names_its_newest_alert_in_each_scope(console):
    with Batch(console.conn) as b:
        b.alert(LIVE, alert("alr-a-own", "acct-a", severity="medium"))
        b.alert(LIVE, alert("alr-a-own-2", "acct-a", severity="high", ts=1_772_409_700_000))

    async def check(client):
        csrf = await log_in(client)
        r = await client.post("/verdict/account", data={"csrf": csrf, "account_id": "acct-a",
                                                        "verdict": "false_positive", "next": "/"})
        assert r.status == 200

    run(check, console)
    import msgpack

    named = sorted(msgpack.unpackb(s["value"])["alert_id"] for s in console.publisher._producer.sent)
    assert named == ["alr-a", "alr-a-own-2"]
