"""The console's pages as HTML: queue, campaign, account and replays (data from :mod:`.queries`)."""

from __future__ import annotations

from typing import Any

from pipeline.console import queries
from pipeline.console.charts import activity_heatmap
from pipeline.console.html import (
    SEVERITIES,
    actions_table,
    e,
    reasons_table,
    sentence,
    severity,
    status,
    url,
    verdict_form,
    when,
)


def _option(value: str, label: str, chosen: str) -> str:
    return f"<option value='{e(value)}'{' selected' if value == chosen else ''}>{e(label)}</option>"


def _filters(source: str, sources: list[str], f: queries.QueueFilter, kinds: list[str]) -> str:
    src = "".join(_option(s, s, source) for s in sources)
    sev = _option("", "any", f.severity) + "".join(_option(s, f"{s} and above", f.severity) for s in SEVERITIES)
    kind = _option("", "all", f.kind) + _option("campaign", "campaigns", f.kind) + "".join(
        _option(k, k.replace("_", " "), f.kind) for k in kinds)
    st = "".join(_option(s, s or "all", f.status) for s in ("open", "confirmed", "dismissed", "merged", ""))
    hours = "".join(_option(str(h), label, str(f.hours)) for h, label in
                    ((0, "all time"), (1, "last hour"), (6, "last 6 hours"), (24, "last day"), (168, "last week")))
    return (f"<form class=filters method=get action='/'><label>source<select name=source>{src}</select></label>"
            f"<label>severity<select name=severity>{sev}</select></label><label>kind<select name=kind>{kind}"
            f"</select></label><label>status<select name=status>{st}</select></label><label>active in<select "
            f"name=hours>{hours}</select></label><button>Filter</button></form>")


def queue_page(data: dict[str, Any], source: str, sources: list[str], f: queries.QueueFilter) -> str:
    waiting: dict[tuple[str, int], int] = {(w["item_type"], w["sev_rank"]): w["n"] for w in data["waiting"]}
    cards = "".join(
        f"<div class=card>{severity(s)}<b>{sum(n for (t, r), n in waiting.items() if r == i + 1)}</b>"
        f"<span class=muted>{waiting.get(('campaign', i + 1), 0)} campaigns · "
        f"{waiting.get(('account', i + 1), 0)} accounts</span></div>"
        for i, s in reversed(list(enumerate(SEVERITIES))))
    rows = []
    for it in data["items"]:
        path = f"/{it['item_type']}/{it['item_id']}"
        what = "campaign" if it["item_type"] == "campaign" else it["kind"].replace("_", " ")
        rows.append(f"<tr class='item item-{e(it['item_type'])}'><td>{severity(rank=it['sev_rank'])}</td>"
                    f"<td><a href='{url(path, source=source)}'>{e(it['item_id'])}</a></td><td>{e(what)}</td>"
                    f"<td>{it['size']}</td><td>{it['n_alerts']}</td><td>{when(it['last_ts'])}</td>"
                    f"<td>{when(it['first_ts'])}</td><td>{status(it['status'])}</td></tr>")
    shown = f"{len(data['items'])} of {data['total']}" if data["total"] > len(data["items"]) else str(data["total"])
    table = ("<table id=queue><tr><th>severity</th><th>campaign / account</th><th>kind</th><th>accounts</th>"
             "<th>alerts</th><th>newest alert</th><th>first alert</th><th>status</th></tr>"
             + "".join(rows) + "</table>") if rows else "<p class=muted>Nothing matches these filters.</p>"
    return (f"<h1>Review queue</h1><div class=cards>{cards}</div>{_filters(source, sources, f, data['kinds'])}"
            f"<p class=muted>{shown} shown, most severe and newest first (event time).</p>{table}")


LINK_CODES = {"shared_payment": "payment", "linked_accounts": "client / network / template",
              "campaign_links": "all groups", "shared_client": "client", "shared_template": "template",
              "shared_network": "network", "campaign_merged": "merge"}


def _links(evidence: list[dict[str, Any]]) -> str:
    """What ties the members, as the campaign's alert carries it (the kind of each shared key)."""
    found = [r for r in evidence if r.get("code") in LINK_CODES or "share" in str(r.get("detail"))]
    if not found:
        return "<p class=muted>The alerts name no shared keys.</p>"
    out = ["<table id=links><tr><th>link</th><th>what the members share</th><th>value</th></tr>"]
    for r in found:
        detail = str(r.get("detail"))
        kinds = [k for k in ("card", "payment", "client", "template", "network", "proxy") if k in detail]
        label = ", ".join(kinds) or LINK_CODES.get(str(r.get("code")), "")
        out.append(f"<tr><td>{e(label)}</td><td>{e(detail)}</td><td>{e(r.get('value'))}</td></tr>")
    return "".join(out) + "</table>"


def _member_rows(c: dict[str, Any], source: str, csrf: str, back: str) -> str:
    out = []
    for m in c["members"]:
        acct, alert = m["account_id"], m["alert"]
        sim = f"{m['similarity']:.0%}" if m["similarity"] is not None else "<span class=muted>–</span>"
        form = verdict_form(csrf=csrf, source=source, alert_id="", back=back, label=acct, action="/verdict/account",
                            extra={"account_id": acct}) if alert else "<span class=muted>no alert of its own</span>"
        sev = severity(alert["severity"]) if alert else ""
        out.append(f"<tr id='member-{e(acct)}'><td><a href='{url('/account/' + acct, source=source)}'>{e(acct)}"
                   f"</a></td><td>{sim}</td><td>{sev}</td><td>{when(m['last_ts'])}</td>"
                   f"<td>{status(m['status'])}</td><td>{form}</td></tr>")
    return "".join(out)


def campaign_page(c: dict[str, Any], campaign_id: str, source: str, csrf: str) -> str:
    item, back = c["item"], f"/campaign/{campaign_id}?source={source}"
    members = ("<table id=members><tr><th>account</th><th>alike to the core</th><th>severity</th>"
               "<th>last seen</th><th>status</th><th>verdict</th></tr>" + _member_rows(c, source, csrf, back)
               + "</table>")
    whole = verdict_form(csrf=csrf, source=source, alert_id="", back=back, label="the whole campaign",
                         action="/verdict/campaign", extra={"campaign_id": campaign_id})
    own = [a for a in c["alerts"] if a["account_id"] is None]
    timeline = "".join(f"<li>{e(sentence(a))}</li>" for a in own) or "<li class=muted>none</li>"
    into = item.get("merged_into")
    merged = (f"<p class=merged>Merged into campaign <a href='{url('/campaign/' + into, source=source)}'>"
              f"<code>{e(into)}</code></a>: the detector found the same operator behind both; its members and "
              "alerts from then on are there.</p>") if into else ""
    return (f"<h1>Campaign <code>{e(campaign_id)}</code> {severity(rank=item['sev_rank'])} "
            f"{status(item['status'])}</h1>{merged}<p>{item['size']} accounts named · {item['n_alerts']} alerts from "
            f"{when(item['first_ts'])} to {when(item['last_ts'])}</p>"
            f"<h2>Verdict on the whole campaign</h2>{whole}"
            f"<h2>Members</h2>{members}<h2>Links that tie them</h2>{_links(c['evidence'])}"
            f"<h2>Activity: events per hour per member</h2>{activity_heatmap(c['activity'])}"
            f"<h2>Evidence (newest campaign alert)</h2>{reasons_table(c['evidence'], c['evidence_score'])}"
            f"<h2>Campaign alerts</h2><ul>{timeline}</ul>"
            f"<h2>Actions taken on members</h2>{actions_table(c['actions'], source)}")


def _effect(v: dict[str, Any]) -> str:
    eff = v["effect"]
    if v["verdict"] != "false_positive":
        return "<span class=muted>confirms: a critical finding becomes a ban</span>"
    parts = []
    if eff["lift"] is not None:
        parts.append(f"<span class='effect-ok lifted'>lifted by the pipeline: <code>{e(eff['lift']['action_id'])}"
                     f"</code> ({len(eff['lift']['lifts'])} action(s)) at {when(eff['lift']['ts'])}</span>")
    if eff["named"] is not None:
        later = eff["later_alerts"]
        parts.append("<span class='effect-ok silenced'>silenced: no alert of this kind since</span>" if not later
                     else f"<span class=effect-wait>{later} alert(s) of this kind since</span>")
    if not v["on_topic"]:
        parts.append("<span class=effect-wait>sent; waiting to read it back from the topic</span>")
    return "<br>".join(parts) or "<span class=effect-wait>waiting for the pipeline</span>"


def _verdict_rows(verdicts: list[dict[str, Any]]) -> str:
    if not verdicts:
        return "<p class=muted>No verdicts yet.</p>"
    out = ["<table id=verdicts><tr><th>time</th><th>verdict</th><th>analyst</th><th>alert</th><th>note</th>"
           "<th>signed</th><th>effect</th></tr>"]
    for v in verdicts:
        where = f"p{v['partition']} @{v['offset']}" if v.get("partition") is not None else ""
        out.append(f"<tr class='verdict-{e(v['verdict'])}'><td>{when(v['ts'])}</td><td><b>{e(v['verdict'])}</b>"
                   f"</td><td>{e(v['analyst'])}</td><td class=mono>{e(v['alert_id'])}</td><td>{e(v['note'])}</td>"
                   f"<td class=mono title='{e(v['signature'])}'>{e(str(v['signature'])[:12])}… {e(where)}</td>"
                   f"<td>{_effect(v)}</td></tr>")
    return "".join(out) + "</table>"


def _alike(similarity: float | None) -> str:
    return "" if similarity is None else f" ({similarity:.0%} alike to its core)"


def account_page(a: dict[str, Any], account_id: str, source: str, csrf: str) -> str:
    back = f"/account/{account_id}?source={source}"
    scopes = "".join(
        f"<tr><td>{severity(s['severity'])}</td><td>{e(s['kind'])}</td><td>{e(s['campaign_id'] or '–')}</td>"
        f"<td>{when(s['ts'])}</td><td>{verdict_form(csrf=csrf, source=source, alert_id=s['alert_id'], back=back)}"
        f"</td></tr>" for s in a["scopes"])
    camps = "".join(f"<li><a href='{url('/campaign/' + c['campaign_id'], source=source)}'>{e(c['campaign_id'])}"
                    f"</a>{_alike(c['similarity'])}</li>" for c in a["campaigns"]) or "<li class=muted>none</li>"
    alerts = "".join(f"<li>{e(sentence(x))}</li>" for x in reversed(a["alerts"])) or "<li class=muted>none</li>"
    return (f"<h1>Account <code>{e(account_id)}</code></h1>"
            f"<h2>Give a verdict</h2><table id=scopes><tr><th>severity</th><th>kind</th><th>campaign</th>"
            f"<th>newest alert</th><th>verdict on it</th></tr>{scopes}</table>"
            f"<h2>Verdict history</h2>{_verdict_rows(a['verdicts'])}"
            f"<h2>Campaigns</h2><ul>{camps}</ul>"
            f"<h2>Activity</h2>{activity_heatmap({account_id: a['activity']})}"
            f"<h2>Alerts, newest first</h2><ul id=alerts>{alerts}</ul>"
            f"<h2>Actions</h2>{actions_table(a['actions'], source, with_account=False)}")


def _metric_rows(pair: tuple[Any, Any]) -> str:
    names = ("events", "accounts", "flagged_accounts", "account_recall", "campaigns_found", "campaigns",
             "benign_false_positives", "benign_fpr", "median_delay_minutes")
    a, b = (p or {} for p in pair)
    return "".join(f"<tr><td>{n.replace('_', ' ')}</td><td>{e(a.get(n, '–'))}</td><td>{e(b.get(n, '–'))}</td>"
                   f"</tr>" for n in names if n in a or n in b)


def _changes(cmp: dict[str, Any], a: str, b: str) -> str:
    """What differs between the runs: their detection settings, and accounts flagged at another severity."""
    settings = "".join(f"<tr><td><code>{e(k)}</code></td><td>{e(va)}</td><td>{e(vb)}</td></tr>"
                       for k, va, vb in cmp["settings"])
    changed = "".join(f"<tr><td><a href='{url('/account/' + acct, source=a)}'>{e(acct)}</a></td>"
                      f"<td>{severity(rank=ra)}</td><td>{severity(rank=rb)}</td></tr>"
                      for acct, ra, rb in cmp["severity_changed"])
    return ((f"<h2>Settings that differ</h2><table id=settings><tr><th>setting</th><th>{e(a)}</th><th>{e(b)}</th>"
             f"</tr>{settings}</table>" if settings else "")
            + f"<h2>Flagged by both at another severity ({len(cmp['severity_changed'])})</h2>"
            + (f"<table><tr><th>account</th><th>{e(a)}</th><th>{e(b)}</th></tr>{changed}</table>" if changed
               else "<p class=muted>none</p>"))


def replays_page(sources: list[str], runs: list[dict[str, Any]], a: str, b: str,
                 cmp: dict[str, Any] | None) -> str:
    opts = "".join(f"<option{' selected' if s == a else ''}>{e(s)}</option>" for s in sources)
    opts_b = "".join(f"<option{' selected' if s == b else ''}>{e(s)}</option>" for s in sources)
    listing = "".join(f"<tr><td>{e(r['source'])}</td><td>{when(r['loaded_ts'])}</td><td class=mono>{e(r['path'])}"
                      f"</td></tr>" for r in runs) or "<tr><td colspan=3 class=muted>no run loaded</td></tr>"
    body = (f"<h1>Replays</h1><p>Load a backtest with <code>python -m pipeline console load</code>.</p>"
            f"<table><tr><th>run</th><th>loaded</th><th>from</th></tr>{listing}</table>"
            f"<form class=filters method=get action='/replays'><label>run<select name=a>{opts}</select></label>"
            f"<label>against<select name=b>{opts_b}</select></label><button>Compare</button></form>")
    if cmp is None:
        return body
    counts = "".join(f"<tr><td>{t}</td><td>{cmp['counts'][a][t]}</td><td>{cmp['counts'][b][t]}</td></tr>"
                     for t in ("alerts", "actions"))

    def accts(names: list[str], source: str) -> str:
        return " ".join(f"<a href='{url('/account/' + n, source=source)}'>{e(n)}</a>" for n in names) or "none"

    return body + (f"<h2>{e(a)} against {e(b)}</h2><table id=compare><tr><th></th><th>{e(a)}</th><th>{e(b)}</th>"
                   f"</tr>{counts}{_metric_rows(cmp['metrics'])}</table>"
                   f"{_changes(cmp, a, b)}"
                   f"<h2>Flagged by {e(a)} only ({len(cmp['only_a'])})</h2><p>{accts(cmp['only_a'], a)}</p>"
                   f"<h2>Flagged by {e(b)} only ({len(cmp['only_b'])})</h2><p>{accts(cmp['only_b'], b)}</p>"
                   f"<h2>Flagged by both ({len(cmp['both'])})</h2><p class=muted>{len(cmp['both'])} accounts</p>")
