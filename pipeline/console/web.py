"""The console's web application (aiohttp): routes, login and CSRF checks, security headers.

Nothing but ``/healthz`` and the login form is served without a session: a page asked for without one
redirects to the login form, any other method is refused with 403. Every POST carries the session's CSRF
token (the login form a double-submit one), compared in constant time.
"""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp import web

from pipeline.console import html, pages, queries, store
from pipeline.console.auth import Session, Sessions, same
from pipeline.console.publish import Publisher, PublishError

COOKIE, LOGIN_COOKIE = "dg_console", "dg_console_login"
OPEN_PATHS = {"/healthz", "/login", "/favicon.ico"}
CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Console:
    """What the handlers share: the store, the sessions, the verdict publisher, the consumer (if any)."""

    conn: sqlite3.Connection
    sessions: Sessions
    publisher: Publisher | None = None
    consumer: Any = None
    secure_cookies: bool = False


CONSOLE: web.AppKey[Console] = web.AppKey("console", Console)
SESSION: web.RequestKey[Session] = web.RequestKey("session", Session)


def _console(request: web.Request) -> Console:
    return request.app[CONSOLE]


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Login and CSRF checks before any handler; security headers on every answer."""
    response = await _checked(request, handler)
    response.headers.update({"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                             "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
                             "Cache-Control": "no-store"})
    return response


async def _checked(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in OPEN_PATHS:
        return await handler(request)
    session = _console(request).sessions.get(request.cookies.get(COOKIE))
    if session is None:
        if request.method in ("GET", "HEAD"):
            raise web.HTTPSeeOther(f"/login?next={quote(request.path_qs, safe='')}")
        raise web.HTTPForbidden(text="sign in first")
    if request.method == "POST":
        form = await request.post()
        if not same(str(form.get("csrf", "")), session.csrf):
            raise web.HTTPForbidden(text="CSRF token missing or wrong: reload the page and try again")
    request[SESSION] = session
    return await handler(request)


def _session(request: web.Request) -> Session:
    return request[SESSION]


def _source(request: web.Request) -> str:
    found = store.sources(_console(request).conn)
    asked = request.query.get("source", "")
    if asked:
        return asked
    return store.LIVE if store.LIVE in found or not found else found[0]


def _page(request: web.Request, title: str, body: str, source: str = "") -> web.Response:
    s = _session(request)
    flash = request.query.get("flash", "")
    text = html.page(title, body, user=s.user, csrf=s.csrf, source=source or _source(request), flash=flash,
                     error=request.query.get("error") == "1")
    return web.Response(text=text, content_type="text/html")


async def healthz(request: web.Request) -> web.Response:
    consumer = _console(request).consumer
    failed = consumer is not None and consumer.error is not None
    return web.json_response({"ok": not failed, "consumer": None if consumer is None else
                              ("failed" if failed else "running")}, status=503 if failed else 200)


async def favicon(request: web.Request) -> web.Response:
    return web.Response(status=204)


async def login_form(request: web.Request) -> web.Response:
    # the same token for every login page of this browser (a second tab, or a favicon request that
    # landed here, must not invalidate the form already shown)
    token = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(24)
    response = web.Response(text=html.login_page(token, request.query.get("failed") == "1",
                                                 _safe_next(request.query.get("next", "/"))),
                            content_type="text/html")
    response.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="Strict", path="/login",
                        secure=_console(request).secure_cookies)
    return response


def _safe_next(target: str) -> str:
    """Only a path of this site (no scheme, no host, no protocol-relative ``//``)."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"


async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    if not same(str(form.get("csrf", "")), request.cookies.get(LOGIN_COOKIE)):
        raise web.HTTPForbidden(text="CSRF token missing or wrong: reload the login page")
    console = _console(request)
    token = console.sessions.login(str(form.get("user", "")), str(form.get("password", "")))
    target = _safe_next(str(form.get("next", "/")))
    if token is None:
        raise web.HTTPSeeOther(f"/login?failed=1&next={quote(target, safe='')}")
    response = web.HTTPSeeOther(target)
    response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/", secure=console.secure_cookies)
    response.del_cookie(LOGIN_COOKIE, path="/login")
    raise response


async def logout(request: web.Request) -> web.StreamResponse:
    _console(request).sessions.logout(request.cookies.get(COOKIE))
    response = web.HTTPSeeOther("/login")
    response.del_cookie(COOKIE, path="/")
    raise response


def _filter(request: web.Request) -> queries.QueueFilter:
    q = request.query
    hours = q.get("hours", "0")
    return queries.QueueFilter(severity=q.get("severity", ""), kind=q.get("kind", ""),
                               status=q.get("status", "open"), hours=int(hours) if hours.isdigit() else 0)


async def queue(request: web.Request) -> web.Response:
    conn, source, f = _console(request).conn, _source(request), _filter(request)
    data = queries.queue(conn, source, f)
    sources = store.sources(conn) or [source]
    return _page(request, "Queue", pages.queue_page(data, source, sources, f), source)


async def campaign(request: web.Request) -> web.Response:
    source, cid = _source(request), request.match_info["campaign_id"]
    c = queries.campaign(_console(request).conn, source, cid)
    if c is None:
        raise web.HTTPNotFound(text=f"no campaign {cid} in {source}")
    return _page(request, f"Campaign {cid}", pages.campaign_page(c, cid, source, _session(request).csrf), source)


async def account(request: web.Request) -> web.Response:
    source, acct = _source(request), request.match_info["account_id"]
    a = queries.account(_console(request).conn, source, acct)
    if a is None:
        raise web.HTTPNotFound(text=f"no account {acct} in {source}")
    return _page(request, f"Account {acct}", pages.account_page(a, acct, source, _session(request).csrf), source)


async def replays(request: web.Request) -> web.Response:
    conn = _console(request).conn
    sources = store.sources(conn)
    a = request.query.get("a") or (sources[1] if len(sources) > 1 else sources[0] if sources else "")
    b = request.query.get("b") or (sources[0] if sources else "")
    cmp = queries.compare(conn, a, b) if a and b and a in sources and b in sources else None
    return _page(request, "Replays", pages.replays_page(sources, queries.runs(conn), a, b, cmp))


def _back(form: Any, flash: str, error: bool = False) -> web.HTTPSeeOther:
    target = _safe_next(str(form.get("next", "/")))
    sep = "&" if "?" in target else "?"
    return web.HTTPSeeOther(f"{target}{sep}flash={quote(flash)}{'&error=1' if error else ''}")


def _verdict_word(form: Any) -> str:
    verdict = str(form.get("verdict", ""))
    if verdict not in ("true_positive", "false_positive"):
        raise web.HTTPBadRequest(text="verdict must be true_positive or false_positive")
    return verdict


async def verdict(request: web.Request) -> web.StreamResponse:
    form, console = await request.post(), _console(request)
    word = _verdict_word(form)
    alert = queries.alert_by_id(console.conn, store.LIVE, str(form.get("alert_id", "")))
    if alert is None or not alert.get("account_id"):
        raise web.HTTPBadRequest(text="a verdict names a live alert of an account")
    sent = await _publish(console, [alert], word, _session(request).user, str(form.get("note", ""))[:500])
    raise _back(form, *sent)


async def account_verdict(request: web.Request) -> web.StreamResponse:
    """An account confirmed or dismissed as a whole: one verdict per scope it was alerted in (its own
    behaviour, each campaign), each on its newest alert there."""
    form, console = await request.post(), _console(request)
    word = _verdict_word(form)
    a = queries.account(console.conn, store.LIVE, str(form.get("account_id", "")))
    if a is None or not a["scopes"]:
        raise web.HTTPBadRequest(text="no such live account with alerts")
    sent = await _publish(console, a["scopes"], word, _session(request).user, str(form.get("note", ""))[:500])
    raise _back(form, *sent)


async def campaign_verdict(request: web.Request) -> web.StreamResponse:
    """One verdict per member, each on the member's newest alert in this campaign."""
    form, console = await request.post(), _console(request)
    word = _verdict_word(form)
    c = queries.campaign(console.conn, store.LIVE, str(form.get("campaign_id", "")))
    if c is None:
        raise web.HTTPBadRequest(text="no such live campaign")
    alerts = [m["alert"] for m in c["members"] if m["alert"] is not None]
    sent = await _publish(console, alerts, word, _session(request).user, str(form.get("note", ""))[:500])
    raise _back(form, *sent)


async def _publish(console: Console, alerts: list[dict[str, Any]], word: str, user: str,
                   note: str) -> tuple[str, bool]:
    """Send one verdict per alert (in a thread: a slow broker must not stop the pages), then keep the note."""
    publisher = console.publisher
    if publisher is None:
        return "this console does not publish verdicts (started without Kafka)", True
    loop = asyncio.get_running_loop()
    done = []
    try:
        for a in alerts:
            signed, partition, offset = await loop.run_in_executor(None, publisher.publish, a, word, user)
            store.save_note(console.conn, signed, note, (partition, offset))
            done.append(signed)
    except PublishError as exc:
        return f"verdict not sent: {exc}" + (f" (after {len(done)} sent)" if done else ""), True
    what = "dismissed" if word == "false_positive" else "confirmed"
    names = ", ".join(sorted({v["account_id"] for v in done}))
    return f"{what} {names}: signed verdict sent to analyst-verdicts", False


def make_app(console: Console) -> web.Application:
    app = web.Application(middlewares=[guard], client_max_size=64 * 1024)
    app[CONSOLE] = console
    app.add_routes([
        web.get("/healthz", healthz), web.get("/favicon.ico", favicon), web.get("/login", login_form), web.post("/login", login),
        web.post("/logout", logout), web.get("/", queue), web.get("/campaign/{campaign_id}", campaign),
        web.get("/account/{account_id}", account), web.get("/replays", replays),
        web.post("/verdict", verdict), web.post("/verdict/account", account_verdict),
        web.post("/verdict/campaign", campaign_verdict),
    ])
    return app


def open_console(store_path: Path, users: Path, **kw: Any) -> Console:
    return Console(conn=store.connect(store_path), sessions=Sessions(users), **kw)
