"""The demo's hand-off: its results loaded in a console store, and a command that serves them."""

from __future__ import annotations

import shlex
from pathlib import Path

from pipeline.console import queries, store
from pipeline.console.auth import Sessions
from pipeline.console.cli import DEFAULT_STORE
from pipeline.console.handoff import DEMO_USER, load_demo_results
from tests.unit.console.helpers import action, campaign_alerts


def test_the_demo_results_are_loaded_and_the_printed_command_names_the_store_and_a_working_login(tmp_path):
    lines = load_demo_results(tmp_path, campaign_alerts(), [action("act-a", "acct-a", "alr-a")],
                              [{"account_id": "acct-a", "ts": 1_772_409_600_000}])
    command = shlex.split(lines[1])
    assert command[1:5] == ["-m", "pipeline", "console", "--no-kafka"] and Path(command[0]).exists()
    db = command[command.index("--store") + 1]
    assert db != str(DEFAULT_STORE)
    conn = store.connect(db)
    assert store.sources(conn) == ["demo"]
    assert queries.campaign(conn, "demo", "camp-0001") is not None
    password = lines[2].rsplit("password ", 1)[1].rstrip(")")
    users = command[command.index("--users") + 1]
    assert Sessions(users_file=Path(users)).login(DEMO_USER, password)
