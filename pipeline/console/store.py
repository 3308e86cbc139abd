"""The console's own store: SQLite (stdlib), its numbered schema migrations, and every write to it.

Every row has a *source*: ``live`` for what the consumer read from Kafka, or the name of a loaded
backtest run. Writes are idempotent: alerts and actions are keyed by their deterministic ids, verdicts
read from a topic by (topic, partition, offset), and the consumer's next offsets are written in the same
transaction as the rows they produced, so a restart resumes exactly where the last commit left off.

The queue reads a summary table (``items``: one row per campaign and per account with its highest
severity, size, newest alert and status) that each write keeps current, so the queue page is one indexed
query however many alerts are stored.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

SEVERITY_RANK = {"low": 1, "medium": 2, "high": 3, "critical": 4}
LIVE = "live"
CAMPAIGN_KIND = "coordinated_campaign"

MIGRATIONS: list[tuple[int, str]] = [
    (1, """
    CREATE TABLE offsets (topic TEXT NOT NULL, partition INTEGER NOT NULL, next_offset INTEGER NOT NULL,
                          PRIMARY KEY (topic, partition));
    CREATE TABLE runs (source TEXT PRIMARY KEY, kind TEXT NOT NULL, loaded_ts INTEGER NOT NULL,
                       path TEXT, metrics TEXT, accounts TEXT);
    CREATE TABLE alerts (source TEXT NOT NULL, alert_id TEXT NOT NULL, ts INTEGER NOT NULL, account_id TEXT,
                         campaign_id TEXT, kind TEXT NOT NULL, score REAL, severity TEXT NOT NULL,
                         sev_rank INTEGER NOT NULL, reasons TEXT NOT NULL, related TEXT NOT NULL,
                         window_start_ts INTEGER, window_events INTEGER, detector_version TEXT,
                         PRIMARY KEY (source, alert_id));
    CREATE INDEX alerts_account ON alerts (source, account_id, ts);
    CREATE INDEX alerts_campaign ON alerts (source, campaign_id, ts);
    CREATE TABLE actions (source TEXT NOT NULL, action_id TEXT NOT NULL, ts INTEGER NOT NULL,
                          account_id TEXT NOT NULL, action TEXT NOT NULL, mode TEXT, reason_codes TEXT NOT NULL,
                          alert_ids TEXT NOT NULL, lifts TEXT NOT NULL, expires_ts INTEGER, policy_version TEXT,
                          PRIMARY KEY (source, action_id));
    CREATE INDEX actions_account ON actions (source, account_id, ts);
    CREATE TABLE verdicts (source TEXT NOT NULL, topic TEXT NOT NULL, partition INTEGER NOT NULL,
                           offset INTEGER NOT NULL, alert_id TEXT, account_id TEXT, kind TEXT, campaign_id TEXT,
                           verdict TEXT, ts INTEGER, analyst TEXT, signature TEXT,
                           PRIMARY KEY (source, topic, partition, offset));
    CREATE INDEX verdicts_account ON verdicts (source, account_id);
    CREATE TABLE notes (signature TEXT PRIMARY KEY, alert_id TEXT NOT NULL, account_id TEXT NOT NULL,
                        verdict TEXT NOT NULL, analyst TEXT NOT NULL, note TEXT NOT NULL, ts INTEGER NOT NULL,
                        partition INTEGER, offset INTEGER);
    CREATE TABLE activity (source TEXT NOT NULL, account_id TEXT NOT NULL, hour INTEGER NOT NULL,
                           events INTEGER NOT NULL, PRIMARY KEY (source, account_id, hour));
    CREATE TABLE members (source TEXT NOT NULL, campaign_id TEXT NOT NULL, account_id TEXT NOT NULL,
                          similarity REAL, last_ts INTEGER, PRIMARY KEY (source, campaign_id, account_id));
    CREATE INDEX members_account ON members (source, account_id);
    CREATE TABLE items (source TEXT NOT NULL, item_type TEXT NOT NULL, item_id TEXT NOT NULL, kind TEXT NOT NULL,
                        sev_rank INTEGER NOT NULL, size INTEGER NOT NULL, first_ts INTEGER NOT NULL,
                        last_ts INTEGER NOT NULL, n_alerts INTEGER NOT NULL, status TEXT NOT NULL,
                        PRIMARY KEY (source, item_type, item_id));
    CREATE INDEX items_queue ON items (source, sev_rank DESC, last_ts DESC);
    """),
    (2, """
    CREATE INDEX items_status ON items (source, status, sev_rank DESC, last_ts DESC);
    CREATE INDEX actions_lift ON actions (source, action) WHERE action = 'lift';
    """),
    (3, """
    ALTER TABLE items ADD COLUMN merged_into TEXT;
    """),
]


def connect(path: Path | str) -> sqlite3.Connection:
    """A connection to the store at ``path``, migrated to the newest schema (WAL: the web server reads
    while the consumer writes)."""
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=30, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    migrate(conn)
    return conn


def migrate(conn: sqlite3.Connection) -> int:
    """Apply the migrations newer than the store's ``user_version``, each in its own transaction."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    for number, sql in MIGRATIONS:
        if number <= version:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in filter(str.strip, sql.split(";")):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        version = number
    return version


class Batch:
    """One write transaction: ``with Batch(conn) as b: b.alert(...); b.offset(...)``."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.touched: set[tuple[str, str]] = set()  # (source, account) whose status may have changed

    def __enter__(self) -> Batch:
        self.conn.execute("BEGIN IMMEDIATE")
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is not None:
            self.conn.execute("ROLLBACK")
            return
        for source, account in self.touched:
            refresh_status(self.conn, source, account)
        self.conn.execute("COMMIT")

    def offset(self, topic: str, partition: int, next_offset: int) -> None:
        self.conn.execute("INSERT INTO offsets VALUES (?, ?, ?) ON CONFLICT (topic, partition) DO UPDATE SET "
                          "next_offset = max(next_offset, excluded.next_offset)", (topic, partition, next_offset))

    def alert(self, source: str, a: Mapping[str, Any]) -> bool:
        """Store an AnomalyAlert; False when it was stored already (a redelivery changes nothing)."""
        rank = SEVERITY_RANK.get(a["severity"], 0)
        cur = self.conn.execute(
            "INSERT OR IGNORE INTO alerts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (source, a["alert_id"], a["ts"], a.get("account_id"), a.get("campaign_id"), a["kind"], a.get("score"),
             a["severity"], rank, json.dumps(a.get("reasons") or []), json.dumps(a.get("related_accounts") or []),
             a.get("window_start_ts"), a.get("window_events"), a.get("detector_version")))
        if cur.rowcount == 0:
            return False
        self._summarise(source, a, rank)
        return True

    def _summarise(self, source: str, a: Mapping[str, Any], rank: int) -> None:
        account, campaign = a.get("account_id"), a.get("campaign_id")
        if campaign:
            members = list(a.get("related_accounts") or []) + ([account] if account else [])
            for m in members:
                sim = similarity(a) if m == account else None
                self.conn.execute(
                    "INSERT INTO members VALUES (?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET "
                    "similarity = coalesce(excluded.similarity, similarity), last_ts = max(last_ts, excluded.last_ts)",
                    (source, campaign, m, sim, a["ts"]))
            size = self.conn.execute("SELECT count(*) FROM members WHERE source = ? AND campaign_id = ?",
                                     (source, campaign)).fetchone()[0]
            self._item(source, "campaign", campaign, CAMPAIGN_KIND, rank, size, a["ts"])
            for absorbed in merged_ids(a):
                self._merged(source, absorbed, campaign, a["ts"])
            self.touched.update((source, m) for m in members)
        elif account:
            self._item(source, "account", account, a["kind"], rank, 1, a["ts"])
            self.touched.add((source, account))

    def _merged(self, source: str, absorbed: str, into: str, ts: int) -> None:
        """Campaign ``absorbed`` is now part of ``into`` (the detector merged them): it leaves the queue, and its
        page points to ``into``. Its own alerts may come before or after the merge (alerts of different
        campaigns are on different partitions): an item made here waits for them, and they keep it merged."""
        if absorbed == into:
            return
        self.conn.execute(
            f"INSERT INTO items ({ITEM_COLUMNS}) VALUES (?, 'campaign', ?, ?, 0, 0, ?, ?, 0, 'merged', ?) "
            "ON CONFLICT DO UPDATE SET status = 'merged', merged_into = excluded.merged_into",
            (source, absorbed, CAMPAIGN_KIND, ts, ts, into))

    def _item(self, source: str, item_type: str, item_id: str, kind: str, rank: int, size: int, ts: int) -> None:
        self.conn.execute(
            f"INSERT INTO items ({ITEM_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1, 'open', NULL) ON CONFLICT DO UPDATE SET "
            "sev_rank = max(sev_rank, excluded.sev_rank), size = max(size, excluded.size), "
            "first_ts = min(first_ts, excluded.first_ts), last_ts = max(last_ts, excluded.last_ts), "
            "n_alerts = n_alerts + 1", (source, item_type, item_id, kind, rank, size, ts, ts))

    def action(self, source: str, a: Mapping[str, Any]) -> bool:
        """Store an EnforcementAction (v1, or v2 with ``lift``); False when it was stored already."""
        cur = self.conn.execute(
            "INSERT OR IGNORE INTO actions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (source, a["action_id"], a["ts"], a["account_id"], a["action"], a.get("mode"),
             json.dumps(a.get("reason_codes") or []), json.dumps(a.get("alert_ids") or []),
             json.dumps(a.get("lifts") or []), a.get("expires_ts"), a.get("policy_version")))
        if cur.rowcount and a["action"] == "lift":
            self.touched.add((source, a["account_id"]))
        return bool(cur.rowcount)

    def verdict(self, source: str, where: tuple[str, int, int], v: Mapping[str, Any]) -> bool:
        """Store a verdict read from ``analyst-verdicts`` at (topic, partition, offset)."""
        cur = self.conn.execute(
            "INSERT OR IGNORE INTO verdicts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (source, *where, v.get("alert_id"), v.get("account_id"), v.get("kind"), v.get("campaign_id"),
             v.get("verdict"), v.get("ts"), v.get("analyst"), v.get("signature")))
        if cur.rowcount and isinstance(v.get("account_id"), str):
            self.touched.add((source, v["account_id"]))
        return bool(cur.rowcount)

    def activity(self, source: str, counts: Mapping[tuple[str, int], int]) -> None:
        """Add events per (account, hour since the epoch)."""
        self.conn.executemany(
            "INSERT INTO activity VALUES (?, ?, ?, ?) ON CONFLICT DO UPDATE SET events = events + excluded.events",
            [(source, acct, hour, n) for (acct, hour), n in counts.items()])


ITEM_COLUMNS = "source, item_type, item_id, kind, sev_rank, size, first_ts, last_ts, n_alerts, status, merged_into"
MERGED_ID = re.compile(r"\bcamp-[0-9a-f]{8,64}\b")


def merged_ids(alert: Mapping[str, Any]) -> list[str]:
    """The campaign ids a campaign alert says it absorbed: its ``campaign_merged`` reason names them in its
    words (AnomalyAlert has no field for them), at most 20 per alert."""
    out: list[str] = []
    for r in alert.get("reasons") or []:
        if r.get("code") == "campaign_merged":
            out += MERGED_ID.findall(str(r.get("detail") or ""))
    return out


def similarity(alert: Mapping[str, Any]) -> float | None:
    """How alike a member is to its campaign's core, as its ``campaign_member`` reason carries it."""
    for r in alert.get("reasons") or []:
        if r.get("code") == "campaign_member" and isinstance(r.get("value"), int | float):
            return float(r["value"])
    return None


def refresh_status(conn: sqlite3.Connection, source: str, account: str) -> None:
    """Recompute the queue status of an account and of the campaigns it belongs to from its verdicts:
    open, confirmed or dismissed (a campaign is dismissed when every member is)."""
    if conn.execute("SELECT 1 FROM verdicts WHERE source = ? AND account_id = ? LIMIT 1",
                    (source, account)).fetchone() is None:  # the common case, kept cheap: no verdict yet
        conn.execute("UPDATE items SET status = 'open' WHERE source = ? AND item_type = 'campaign' AND "
                     "status = 'dismissed' AND item_id IN (SELECT campaign_id FROM members WHERE source = ? AND "
                     "account_id = ?)", (source, source, account))
        return
    status = account_status(conn, source, account)
    conn.execute("UPDATE items SET status = ? WHERE source = ? AND item_type = 'account' AND item_id = ?",
                 (status, source, account))
    for (campaign,) in conn.execute("SELECT campaign_id FROM members WHERE source = ? AND account_id = ?",
                                    (source, account)).fetchall():
        rows = conn.execute(
            "SELECT (SELECT verdict FROM verdicts v WHERE v.source = m.source AND v.account_id = m.account_id "
            "ORDER BY v.ts DESC, v.offset DESC LIMIT 1) FROM members m WHERE m.source = ? AND m.campaign_id = ?",
            (source, campaign)).fetchall()
        verdicts = [r[0] for r in rows]
        status = ("confirmed" if "true_positive" in verdicts else
                  "dismissed" if verdicts and all(v == "false_positive" for v in verdicts) else "open")
        conn.execute("UPDATE items SET status = ? WHERE source = ? AND item_type = 'campaign' AND item_id = ? "
                     "AND status != 'merged'", (status, source, campaign))


def account_status(conn: sqlite3.Connection, source: str, account: str) -> str:
    row = conn.execute("SELECT verdict FROM verdicts WHERE source = ? AND account_id = ? "
                       "ORDER BY ts DESC, offset DESC LIMIT 1", (source, account)).fetchone()
    if row is None:
        return "open"
    return "confirmed" if row[0] == "true_positive" else "dismissed"


def offsets(conn: sqlite3.Connection) -> dict[tuple[str, int], int]:
    return {(r[0], r[1]): r[2] for r in conn.execute("SELECT topic, partition, next_offset FROM offsets")}


def save_run(conn: sqlite3.Connection, source: str, kind: str, loaded_ts: int, path: str | None,
             metrics: Any = None, accounts: Any = None) -> None:
    conn.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (source) DO UPDATE SET "
                 "kind = excluded.kind, path = excluded.path, metrics = coalesce(excluded.metrics, metrics), "
                 "accounts = coalesce(excluded.accounts, accounts)",
                 (source, kind, loaded_ts, path, None if metrics is None else json.dumps(metrics),
                  None if accounts is None else json.dumps(accounts)))


def drop_source(conn: sqlite3.Connection, source: str) -> None:
    """Forget everything of one loaded run (a reload replaces it)."""
    for table in ("alerts", "actions", "verdicts", "activity", "members", "items", "runs"):
        conn.execute(f"DELETE FROM {table} WHERE source = ?", (source,))


def save_note(conn: sqlite3.Connection, verdict: Mapping[str, Any], note: str,
              where: tuple[int, int] | None) -> None:
    """The analyst's note on a verdict the console published (Verdict v2 has no field for it)."""
    conn.execute("INSERT OR REPLACE INTO notes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                 (verdict["signature"], verdict["alert_id"], verdict["account_id"], verdict["verdict"],
                  verdict["analyst"], note, verdict["ts"], *(where or (None, None))))


def sources(conn: sqlite3.Connection) -> list[str]:
    found = {r[0] for r in conn.execute("SELECT DISTINCT source FROM items")}
    found |= {r[0] for r in conn.execute("SELECT source FROM runs")}
    return sorted(found, key=lambda s: (s != LIVE, s))


def loads(text: str | None) -> Any:
    return json.loads(text) if text else None


def rows(cur: Iterable[sqlite3.Row]) -> list[dict[str, Any]]:
    return [dict(r) for r in cur]
