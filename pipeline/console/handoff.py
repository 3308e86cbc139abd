"""The demo's hand-off to the console: its results in a console store, and the command that opens them."""

from __future__ import annotations

import secrets
import shlex
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pipeline.console import auth, store
from pipeline.console.loader import RunFiles, load_run

DEMO_USER = "demo"


def load_demo_results(workdir: Path, alerts: Iterable[dict[str, Any]], actions: Iterable[dict[str, Any]],
                      events: Iterable[dict[str, Any]], run: str = "demo", port: int = 8080) -> list[str]:
    """Load the demo's outputs as the run ``run`` into ``workdir/console.db``, make a user ``demo`` with a
    fresh password in ``workdir/console-users``, and return the lines to print: the command and the URL."""
    db, users = workdir / "console.db", workdir / "console-users"
    password = secrets.token_urlsafe(12)
    auth.add_user(users, DEMO_USER, password)
    conn = store.connect(db)
    try:
        counts = load_run(conn, run, RunFiles(), alerts=alerts, actions=actions, events=events)
    finally:
        conn.close()
    command = [sys.executable or "python", "-m", "pipeline", "console", "--no-kafka", "--store", str(db), "--users", str(users),
               "--port", str(port)]
    return [f"the demo's {counts['alerts']} alerts and {counts['actions']} actions are in a console store; "
            "open them in the browser with",
            f"    {shlex.join(command)}",
            f"  then http://127.0.0.1:{port}/?source={run} (user {DEMO_USER}, password {password})"]
