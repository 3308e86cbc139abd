"""Replays are always shadow: a backtest never writes an enforce-mode action, whatever DG_ENFORCE says, marks
its actions as replays (``verify`` shows them), and writes to sandbox topics only under a real sandbox prefix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline import cli
from pipeline.contract.eventfile import write_records
from pipeline.simulate import generate

KEY = "replay-test-signing-key-0123456789abcdef"


@pytest.fixture(scope="module")
def events_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("replay") / "events.msgpack"
    write_records(path, generate("tiny", 1).events)
    return path


def test_a_replay_with_dg_enforce_true_writes_only_shadow_actions_marked_as_replays(
        events_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DG_ENFORCE", "true")
    monkeypatch.setenv("DG_SIGNING_KEY", KEY)
    actions_out = tmp_path / "actions.jsonl"
    assert cli.main(["backtest", "--input", str(events_file), "--actions-out", str(actions_out), "-q"]) == 0
    assert "a replay is always shadow" in capsys.readouterr().err
    actions = [json.loads(line) for line in actions_out.read_text().splitlines()]
    assert actions, "the tiny scenario gives actions"
    assert {a["mode"] for a in actions} == {"shadow"}
    assert all(a["policy_version"].endswith("+replay") for a in actions)
    assert cli.main(["verify", "--input", str(actions_out), "--now", str(max(a["ts"] for a in actions))]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(actions) and all("REPLAY (shadow)" in line for line in lines)


@pytest.mark.parametrize(("prefix", "live", "message"), [
    ("", "", "--to-prefix is empty"),
    ("", "prod-", "--to-prefix is empty"),
    ("prod-", "prod-", "is the live topic prefix"),
])
def test_the_sandbox_prefix_must_be_non_empty_and_not_the_live_one(
        events_file: Path, prefix: str, live: str, message: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DG_TOPIC_PREFIX", live)
    monkeypatch.setenv("DG_BOOTSTRAP", "127.0.0.1:9")  # nothing listens: the check comes before any connection
    assert cli.main(["backtest", "--input", str(events_file), "--to-prefix", prefix, "-q"]) == 2
    assert message in capsys.readouterr().err
