"""Page layout and the small pieces every page uses: escaping, times, severities, verdict forms.

Every value that came from a message goes through :func:`e` (``html.escape``); pages are plain strings
built here on the server, with the package's stylesheet inlined.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from html import escape
from importlib import resources
from typing import Any
from urllib.parse import urlencode

SEVERITIES = ("low", "medium", "high", "critical")


def e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


@lru_cache(maxsize=1)
def stylesheet() -> str:
    return resources.files("pipeline.console").joinpath("static/console.css").read_text(encoding="utf-8")


def when(ms: int | None) -> str:
    if not ms:
        return ""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


def severity(name: str | None = None, rank: int | None = None) -> str:
    if name is None and rank:
        name = SEVERITIES[rank - 1]
    return f'<span class="sev sev-{e(name)}">{e(name)}</span>'


def status(word: str) -> str:
    return f'<span class="status status-{e(word.split()[0])}">{e(word)}</span>'


def url(path: str, **params: Any) -> str:
    query = urlencode({k: v for k, v in params.items() if v not in (None, "")})
    return e(f"{path}?{query}" if query else path)


def page(title: str, body: str, *, user: str | None, csrf: str = "", source: str = "", flash: str = "",
         error: bool = False) -> str:
    nav = ""
    if user:
        nav = (f'<a href="{url("/", source=source)}">Queue</a><a href="{url("/replays")}">Replays</a>'
               f'<span class=who>signed in as <b>{e(user)}</b> · source <b>{e(source)}</b></span>'
               f"<form method=post action='/logout'><input type=hidden name=csrf value='{e(csrf)}'>"
               f"<button>Sign out</button></form>")
    note = f'<div class="flash{" error" if error else ""}" id=flash>{e(flash)}</div>' if flash else ""
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{e(title)} · distillation-guard"
            f"</title><meta name=viewport content='width=device-width, initial-scale=1'>"
            f"<style>{stylesheet()}</style></head><body><header><span class=brand>distillation-guard console"
            f"</span>{nav}</header><main>{note}{body}</main></body></html>")


def login_page(login_csrf: str, failed: bool = False, next_url: str = "/") -> str:
    body = ("<form class=login method=post action='/login'><h1>Sign in</h1>"
            + ("<p class='flash error'>Wrong user name or password.</p>" if failed else "")
            + f"<input type=hidden name=csrf value='{e(login_csrf)}'><input type=hidden name=next "
            f"value='{e(next_url)}'><label>User <input name=user autocomplete=username required></label>"
            f"<label>Password <input name=password type=password autocomplete=current-password required>"
            f"</label><button id=login>Sign in</button></form>")
    return page("Sign in", body, user=None)


def verdict_form(*, csrf: str, source: str, alert_id: str, back: str, label: str = "",
                 action: str = "/verdict", extra: dict[str, str] | None = None) -> str:
    """Confirm / dismiss buttons with a note, naming one alert (or, with ``action``, a campaign)."""
    if source != "live":
        return "<span class=muted>verdicts are given on live alerts</span>"
    hidden = {"csrf": csrf, "source": source, "alert_id": alert_id, "next": back, **(extra or {})}
    fields = "".join(f"<input type=hidden name={k} value='{e(v)}'>" for k, v in hidden.items() if v)
    return (f"<form class=verdict method=post action='{e(action)}'>{fields}"
            f"<input name=note placeholder='note for {e(label) or 'the record'}' maxlength=500>"
            f"<button class=confirm name=verdict value=true_positive>Confirm</button>"
            f"<button class=dismiss name=verdict value=false_positive>Dismiss</button></form>")


def reasons_table(reasons: list[dict[str, Any]], score: float | None = None) -> str:
    """Each reason of an alert as a sentence, with its value against its baseline, and (AnomalyAlert v2)
    its contribution: how much of the alert's ``score`` that evidence accounts for, drawn as a bar of the
    score; a v1 alert carries none, so its bar is the reason's value where that is a share."""
    from pipeline.console.charts import bars

    if not reasons:
        return "<p class=muted>No reasons carried.</p>"
    out = ["<table><tr><th>reason</th><th>in words</th><th>value</th><th>baseline</th><th>contribution</th>"
           "<th></th></tr>"]
    for r in reasons:
        v, b, c = r.get("value"), r.get("baseline"), r.get("contribution")
        if isinstance(c, int | float) and score:
            share: float | None = max(0.0, c) / score
        else:
            share = v if "contribution" not in r and isinstance(v, int | float) and 0 <= v <= 1 else None
        out.append(f"<tr><td><code>{e(r.get('code'))}</code></td><td>{e(r.get('detail'))}</td>"
                   f"<td>{_num(v)}</td><td>{_num(b)}</td><td>{_num(c)}</td>"
                   f"<td>{bars([(str(r.get('code')), share)]) if share is not None else ''}</td></tr>")
    return "".join(out) + "</table>"


def _num(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return e(v) if v is not None else "<span class=muted>–</span>"


def sentence(a: dict[str, Any]) -> str:
    """An alert in one sentence: when, how severe, what kind, and why."""
    why = "; ".join(str(r.get("detail")) for r in a.get("reasons") or [] if r.get("detail"))
    scope = f" in campaign {a['campaign_id']}" if a.get("campaign_id") else ""
    return (f"{when(a['ts'])}: a {a['severity']} {a['kind'].replace('_', ' ')} alert{scope} "
            f"(score {a['score']:.2f}) because {why or 'no reason was given'}.")


def actions_table(actions: list[dict[str, Any]], source: str, with_account: bool = True) -> str:
    if not actions:
        return "<p class=muted>No actions.</p>"
    head = "<th>account</th>" if with_account else ""
    out = [f"<table><tr><th>time</th>{head}<th>action</th><th>mode</th><th>reasons</th><th>alerts</th>"
           f"<th>expires</th></tr>"]
    for a in actions:
        acct = f"<td><a href='{url('/account/' + a['account_id'], source=source)}'>{e(a['account_id'])}</a></td>" \
            if with_account else ""
        lifted = f" of {len(a['lifts'])} action(s)" if a["action"] == "lift" else ""
        out.append(f"<tr class='action-{e(a['action'])}'><td>{when(a['ts'])}</td>{acct}<td><b>{e(a['action'])}"
                   f"</b>{lifted}</td><td>{e(a['mode'])}</td><td>{e(', '.join(a['reason_codes']))}</td>"
                   f"<td class=mono>{e(' '.join(a['alert_ids']))}</td><td>{when(a['expires_ts'])}</td></tr>")
    return "".join(out) + "</table>"
