"""What each page of the console shows, read from the store (no HTML here)."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from pipeline.console.store import CAMPAIGN_KIND, SEVERITY_RANK, loads, rows

QUEUE_LIMIT = 200
ACTIVITY_MEMBERS = 40


@dataclass(frozen=True)
class QueueFilter:
    severity: str = ""  # the lowest severity shown; "" all
    kind: str = ""  # "" all, "campaign", or an alert kind
    status: str = "open"  # open, confirmed, dismissed, merged (into another campaign), or "" all
    hours: int = 0  # only items active in the last N hours before the source's newest alert; 0 all


def queue(conn: sqlite3.Connection, source: str, f: QueueFilter) -> dict[str, Any]:
    """Items (campaigns and accounts) newest and most severe first, and counts of what is waiting."""
    where: list[str] = ["source = ?"]
    args: list[Any] = [source]
    if f.severity in SEVERITY_RANK:
        where.append("sev_rank >= ?")
        args.append(SEVERITY_RANK[f.severity])
    if f.kind == "campaign":
        where.append("item_type = 'campaign'")
    elif f.kind:
        where.append("item_type = 'account' AND kind = ?")
        args.append(f.kind)
    if f.status:
        where.append("status = ?")
        args.append(f.status)
    if f.hours > 0:
        newest = conn.execute("SELECT max(last_ts) FROM items WHERE source = ?", (source,)).fetchone()[0] or 0
        where.append("last_ts >= ?")
        args.append(newest - f.hours * 3_600_000)
    sql = (f"SELECT * FROM items WHERE {' AND '.join(where)} "
           f"ORDER BY sev_rank DESC, last_ts DESC, size DESC LIMIT {QUEUE_LIMIT}")
    items = rows(conn.execute(sql, args))
    total = conn.execute(f"SELECT count(*) FROM items WHERE {' AND '.join(where)}", args).fetchone()[0]
    waiting = rows(conn.execute("SELECT item_type, sev_rank, count(*) AS n FROM items WHERE source = ? AND "
                                "status = 'open' GROUP BY item_type, sev_rank", (source,)))
    kinds = [r[0] for r in conn.execute("SELECT DISTINCT kind FROM items WHERE source = ? AND item_type = "
                                        "'account' ORDER BY kind", (source,))]
    return {"items": items, "total": total, "waiting": waiting, "kinds": kinds}


def _alert(r: sqlite3.Row) -> dict[str, Any]:
    a = dict(r)
    a["reasons"] = loads(a["reasons"]) or []
    a["related_accounts"] = loads(a.pop("related")) or []
    return a


def _action(r: sqlite3.Row) -> dict[str, Any]:
    a = dict(r)
    for name in ("reason_codes", "alert_ids", "lifts"):
        a[name] = loads(a[name]) or []
    return a


def campaign(conn: sqlite3.Connection, source: str, campaign_id: str) -> dict[str, Any] | None:
    """A campaign: its own alerts, its members (similarity, latest alert, status), actions and activity."""
    item = conn.execute("SELECT * FROM items WHERE source = ? AND item_type = 'campaign' AND item_id = ?",
                        (source, campaign_id)).fetchone()
    if item is None:
        return None
    alerts = [_alert(r) for r in conn.execute(
        "SELECT * FROM alerts WHERE source = ? AND campaign_id = ? ORDER BY ts, alert_id", (source, campaign_id))]
    members = rows(conn.execute("SELECT account_id, similarity, last_ts FROM members WHERE source = ? AND "
                                "campaign_id = ? ORDER BY similarity DESC NULLS LAST, account_id",
                                (source, campaign_id)))
    latest = {a["account_id"]: a for a in alerts if a["account_id"]}
    for m in members:
        m["alert"] = latest.get(m["account_id"])
        m["status"] = member_status(conn, source, m["account_id"], campaign_id)
    names = [m["account_id"] for m in members]
    actions = _actions_of(conn, source, names)
    own = [a for a in alerts if a["account_id"] is None]
    newest = (own or alerts)[-1] if alerts else None
    evidence = newest["reasons"] if newest else []
    return {"item": dict(item), "alerts": alerts, "members": members, "actions": actions, "evidence": evidence,
            "evidence_score": newest["score"] if newest else None,
            "activity": activity(conn, source, names[:ACTIVITY_MEMBERS])}


def _actions_of(conn: sqlite3.Connection, source: str, accounts: list[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(0, len(accounts), 500):
        chunk = accounts[i:i + 500]
        marks = ",".join("?" * len(chunk))
        out += [_action(r) for r in conn.execute(
            f"SELECT * FROM actions WHERE source = ? AND account_id IN ({marks}) ORDER BY ts, action_id",
            (source, *chunk))]
    return sorted(out, key=lambda a: (a["ts"], a["action_id"]))


def activity(conn: sqlite3.Connection, source: str, accounts: list[str]) -> dict[str, dict[int, int]]:
    """Events per hour (hours since the epoch) per account."""
    out: dict[str, dict[int, int]] = {a: {} for a in accounts}
    if not accounts:
        return out
    marks = ",".join("?" * len(accounts))
    for acct, hour, n in conn.execute(f"SELECT account_id, hour, events FROM activity WHERE source = ? AND "
                                      f"account_id IN ({marks})", (source, *accounts)):
        out[acct][hour] = n
    return out


def member_status(conn: sqlite3.Connection, source: str, account: str, campaign_id: str | None) -> str:
    row = conn.execute("SELECT verdict FROM verdicts WHERE source = ? AND account_id = ? AND "
                       "campaign_id IS ? ORDER BY ts DESC, offset DESC LIMIT 1",
                       (source, account, campaign_id)).fetchone()
    if row is None:
        pending = conn.execute("SELECT verdict FROM notes WHERE account_id = ? ORDER BY ts DESC LIMIT 1",
                               (account,)).fetchone() if source == "live" else None
        return "open" if pending is None else f"{_word(pending[0])} (sent)"
    return _word(row[0])


def _word(verdict: str) -> str:
    return "confirmed" if verdict == "true_positive" else "dismissed"


def account(conn: sqlite3.Connection, source: str, account_id: str) -> dict[str, Any] | None:
    alerts = [_alert(r) for r in conn.execute(
        "SELECT * FROM alerts WHERE source = ? AND account_id = ? ORDER BY ts, alert_id", (source, account_id))]
    actions = _actions_of(conn, source, [account_id])
    campaigns = rows(conn.execute("SELECT campaign_id, similarity FROM members WHERE source = ? AND "
                                  "account_id = ? ORDER BY campaign_id", (source, account_id)))
    if not alerts and not actions and not campaigns:
        return None
    return {"alerts": alerts, "actions": actions, "campaigns": campaigns,
            "verdicts": verdicts(conn, source, account_id, alerts, actions),
            "scopes": open_scopes(alerts), "activity": activity(conn, source, [account_id])[account_id]}


def open_scopes(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The newest alert per scope (kind and campaign) of an account: what a verdict can name."""
    latest: dict[tuple[str, str | None], dict[str, Any]] = {}
    for a in alerts:
        latest[(a["kind"], a["campaign_id"])] = a
    return sorted(latest.values(), key=lambda a: -a["ts"])


def verdicts(conn: sqlite3.Connection, source: str, account_id: str, alerts: list[dict[str, Any]],
             actions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The account's verdicts (read back from the topic, or sent and not yet read) with their effect."""
    seen = rows(conn.execute("SELECT * FROM verdicts WHERE source = ? AND account_id = ? ORDER BY ts, offset",
                             (source, account_id)))
    notes = {r["signature"]: dict(r) for r in conn.execute("SELECT * FROM notes WHERE account_id = ?",
                                                            (account_id,))} if source == "live" else {}
    for v in seen:
        v["note"] = (notes.pop(v["signature"], None) or {}).get("note", "")
        v["on_topic"] = True
    seen += [{**n, "kind": None, "campaign_id": None, "on_topic": False} for n in notes.values()]
    for v in seen:
        v["effect"] = effect(v, alerts, actions)
    return sorted(seen, key=lambda v: v["ts"])


def effect(v: dict[str, Any], alerts: list[dict[str, Any]], actions: list[dict[str, Any]]) -> dict[str, Any]:
    """What the pipeline did with a verdict, as far as the topics show: its lift, and the alerts of the
    verdict's scope after the alert it names (none once the account is silenced)."""
    lift = next((a for a in actions if a["action"] == "lift" and v["alert_id"] in a["alert_ids"]), None)
    named = next((a for a in alerts if a["alert_id"] == v["alert_id"]), None)
    later = [a for a in alerts if named is not None and a["ts"] > named["ts"] and a["kind"] == named["kind"]
             and a["campaign_id"] == named["campaign_id"]]
    return {"lift": lift, "later_alerts": len(later), "named": named}


def alert_by_id(conn: sqlite3.Connection, source: str, alert_id: str) -> dict[str, Any] | None:
    r = conn.execute("SELECT * FROM alerts WHERE source = ? AND alert_id = ?", (source, alert_id)).fetchone()
    return None if r is None else _alert(r)


def runs(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    out = rows(conn.execute("SELECT source, kind, loaded_ts, path, metrics FROM runs ORDER BY source"))
    for r in out:
        r["metrics"] = loads(r["metrics"])
    return out


def flagged(conn: sqlite3.Connection, source: str) -> dict[str, int]:
    """Accounts flagged in a source (a high or critical alert naming them, or an action beyond review),
    with their highest severity rank."""
    out: dict[str, int] = {}
    for acct, rank in conn.execute("SELECT account_id, max(sev_rank) FROM alerts WHERE source = ? AND "
                                   "account_id IS NOT NULL GROUP BY account_id", (source,)):
        if rank >= SEVERITY_RANK["high"]:
            out[acct] = rank
    for _acct, related, rank in conn.execute("SELECT account_id, related, sev_rank FROM alerts WHERE source = ? "
                                            "AND kind = ? AND account_id IS NULL", (source, CAMPAIGN_KIND)):
        if rank >= SEVERITY_RANK["high"]:
            for a in json.loads(related):
                out[a] = max(out.get(a, 0), rank)
    for (acct,) in conn.execute("SELECT DISTINCT account_id FROM actions WHERE source = ? AND action NOT IN "
                                "('flag_for_review', 'lift')", (source,)):
        out.setdefault(acct, SEVERITY_RANK["high"])
    return out


def compare(conn: sqlite3.Connection, a: str, b: str) -> dict[str, Any]:
    """Two sources side by side: the accounts each flags, and their metrics where a report gave them."""
    fa, fb = flagged(conn, a), flagged(conn, b)
    metrics = {r["source"]: r["metrics"] for r in runs(conn)}
    counts = {s: {t: conn.execute(f"SELECT count(*) FROM {t} WHERE source = ?", (s,)).fetchone()[0]
                  for t in ("alerts", "actions")} for s in (a, b)}
    both = sorted(set(fa) & set(fb))
    return {"only_a": sorted(set(fa) - set(fb)), "only_b": sorted(set(fb) - set(fa)), "both": both,
            "severity_changed": [(acct, fa[acct], fb[acct]) for acct in both if fa[acct] != fb[acct]],
            "settings": settings_diff(metrics.get(a), metrics.get(b)),
            "metrics": (metrics.get(a), metrics.get(b)), "counts": counts}


def settings_diff(a: Any, b: Any) -> list[tuple[str, Any, Any]]:
    """The detection settings two runs' reports differ in (``metrics.json``'s ``meta.detection_config``)."""
    ca = ((a or {}).get("meta") or {}).get("detection_config") or {}
    cb = ((b or {}).get("meta") or {}).get("detection_config") or {}
    return [(k, ca.get(k), cb.get(k)) for k in sorted(set(ca) | set(cb)) if ca.get(k) != cb.get(k)]
