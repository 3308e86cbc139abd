"""``python -m pipeline console``: add-user, load, and a refusal to serve without any user."""

from __future__ import annotations

import io
import json

from pipeline.cli import main
from pipeline.console import auth, store
from tests.unit.console.helpers import PASSWORD, campaign_alerts


def test_add_user_reads_the_password_from_stdin_and_refuses_a_short_one(tmp_path, monkeypatch, capsys):
    users = tmp_path / "users"
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert main(["console", "add-user", "ana", "--users", str(users), "--password-stdin"]) == 0
    assert auth.check_password(PASSWORD, auth.read_users(users)["ana"])
    assert PASSWORD not in users.read_text()
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["console", "add-user", "bob", "--users", str(users), "--password-stdin"]) == 2
    assert "at least" in capsys.readouterr().err


def test_load_makes_a_run_of_a_backtests_files(tmp_path):
    alerts = tmp_path / "alerts.jsonl"
    alerts.write_text("".join(json.dumps(a) + "\n" for a in campaign_alerts()))
    db = tmp_path / "c.db"
    assert main(["console", "load", "run-1", "--alerts", str(alerts), "--store", str(db)]) == 0
    assert store.sources(store.connect(db)) == ["run-1"]
    assert main(["console", "load", "live", "--alerts", str(alerts), "--store", str(db)]) == 2


def test_serving_without_a_user_exits_with_the_command_that_adds_one(tmp_path, capsys):
    assert main(["console", "--no-kafka", "--users", str(tmp_path / "none"), "--store", str(tmp_path / "c.db")]) == 2
    assert "console add-user" in capsys.readouterr().err
