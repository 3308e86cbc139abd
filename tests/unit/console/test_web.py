"""The console's web app: nothing without a login but /healthz, CSRF on every form, verdicts signed and
sent to the account's partition under the analyst's name."""

from __future__ import annotations

import msgpack

from pipeline.console import store
from pipeline.console.store import LIVE, Batch
from pipeline.console.web import COOKIE
from pipeline.contract.verdicts import decode_verdict
from pipeline.detection.partition import partition_for
from tests.unit.console.helpers import ANALYST_KEY, CAMPAIGN, PASSWORD, campaign_alerts, csrf_of, log_in, run

PAGES = ["/", "/?source=live&severity=high", f"/campaign/{CAMPAIGN}", "/account/acct-a", "/replays"]


def test_without_a_session_every_page_redirects_to_the_login_and_every_post_is_refused(console):
    async def check(client):
        for path in PAGES:
            r = await client.get(path, allow_redirects=False)
            assert r.status == 303 and r.headers["Location"].startswith("/login?next="), path
            assert "acct-" not in await r.text()
        for path in ("/verdict", "/verdict/campaign", "/logout"):
            r = await client.post(path, data={"alert_id": "alr-a", "verdict": "false_positive", "csrf": "x"},
                                  allow_redirects=False)
            assert r.status == 403, path
        r = await client.get("/healthz")
        assert r.status == 200 and (await r.json())["ok"] is True

    run(check, console)
    assert console.publisher._producer.sent == []


def test_a_forged_session_cookie_is_no_session(console):
    async def check(client):
        client.session.cookie_jar.update_cookies({COOKIE: "forged-token"})
        r = await client.get("/", allow_redirects=False)
        assert r.status == 303

    run(check, console)


def test_a_wrong_password_makes_no_session_and_the_cookie_is_httponly_and_strict(console):
    async def check(client):
        page = await (await client.get("/login")).text()
        r = await client.post("/login", data={"csrf": csrf_of(page), "user": "ana", "password": "wrong-password"},
                              allow_redirects=False)
        assert r.status == 303 and "failed=1" in r.headers["Location"]
        assert COOKIE not in r.cookies
        r = await client.post("/login", data={"csrf": csrf_of(page), "user": "ana", "password": PASSWORD,
                                              "next": "//evil.example/"}, allow_redirects=False)
        assert r.headers["Location"] == "/"  # no open redirect
        morsel = r.cookies[COOKIE]
        assert morsel["httponly"] and morsel["samesite"] == "Strict" and morsel["path"] == "/"

    run(check, console)


def test_a_login_with_a_forged_login_csrf_token_is_refused(console):
    async def check(client):
        await client.get("/login")
        r = await client.post("/login", data={"csrf": "forged", "user": "ana", "password": PASSWORD},
                              allow_redirects=False)
        assert r.status == 403

    run(check, console)


def test_a_verdict_with_a_forged_or_missing_csrf_token_is_refused(console):
    async def check(client):
        await log_in(client)
        for token in ("forged", ""):
            r = await client.post("/verdict", data={"csrf": token, "alert_id": "alr-a", "verdict": "false_positive",
                                                    "next": "/"}, allow_redirects=False)
            assert r.status == 403

    run(check, console)
    assert console.publisher._producer.sent == []


def test_a_dismissal_is_a_signed_verdict_v2_on_the_accounts_partition_with_the_analysts_name(console):
    async def check(client):
        csrf = await log_in(client)
        r = await client.post("/verdict", data={"csrf": csrf, "alert_id": "alr-a", "verdict": "false_positive",
                                                "note": "a load test of ours", "next": "/account/acct-a"})
        assert r.status == 200 and "dismissed acct-a" in await r.text()
        return await r.text()

    page = run(check, console)
    (sent,) = console.publisher._producer.sent
    assert sent["topic"].endswith("analyst-verdicts") and sent["key"] == b"acct-a"
    assert sent["partition"] == partition_for("acct-a", 4)
    v = decode_verdict(sent["value"], {"current": ANALYST_KEY.encode()})
    assert (v["alert_id"], v["verdict"], v["analyst"], v["campaign_id"]) == ("alr-a", "false_positive", "ana", CAMPAIGN)
    assert "a load test of ours" in page  # the note, kept by the console, shown with the verdict sent
    assert "signature" in msgpack.unpackb(sent["value"])


def test_a_campaign_dismissal_sends_one_verdict_per_member_with_an_alert(console):
    async def check(client):
        csrf = await log_in(client)
        r = await client.post("/verdict/campaign", data={"csrf": csrf, "campaign_id": CAMPAIGN,
                                                         "verdict": "false_positive", "next": "/"})
        assert r.status == 200

    run(check, console)
    assert sorted(s["key"] for s in console.publisher._producer.sent) == [b"acct-a", b"acct-b"]


def test_pages_render_for_a_signed_in_analyst_and_escape_what_messages_carry(console):
    with Batch(console.conn) as b:
        b.alert(LIVE, {**campaign_alerts()[-1], "alert_id": "alr-x", "account_id": "<script>x</script>"})

    async def check(client):
        await log_in(client)
        for path in PAGES:
            r = await client.get(path)
            assert r.status == 200, path
            assert "Content-Security-Policy" in r.headers
            assert "<script>" not in await r.text()

    run(check, console)
    assert store.sources(console.conn) == [LIVE]


def test_five_wrong_passwords_stop_that_name_signing_in_for_a_while(tmp_path):
    from pipeline.console.auth import MAX_FAILURES, Sessions
    from tests.unit.console.helpers import users_file

    sessions = Sessions(users_file(tmp_path))
    for _ in range(MAX_FAILURES):
        assert sessions.login("ana", "a-wrong-password") is None
    assert sessions.login("ana", PASSWORD) is None
    sessions._failures.clear()  # the window has passed
    assert sessions.login("ana", PASSWORD) is not None
