"""Bad input to the commands: a clear error naming the file, line or option, and the documented exit code."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from pipeline.cli import main
from tests import factories


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse's own usage errors
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_unknown_scenario_names_the_known_ones(capsys):
    code, out = run(capsys, "simulate", "--scenario", "huge", "--out", "x.jsonl")
    assert code == 2 and "huge" in out and "tiny" in out


def test_missing_and_unknown_files_are_usage_errors(capsys, tmp_path: Path):
    code, out = run(capsys, "backtest", "--input", str(tmp_path / "none.jsonl"), "-q")
    assert code == 2 and "no such file" in out
    code, out = run(capsys, "backtest", "--input", str(tmp_path / "events.csv"), "-q")
    assert code == 2 and "unknown file type" in out
    code, out = run(capsys, "simulate", "--out", str(tmp_path / "events.txt"))
    assert code == 2 and "unknown file type" in out


def test_bad_event_lines_are_reported_by_line_and_skipped(capsys, tmp_path: Path):
    f = tmp_path / "events.jsonl"
    lines = [orjson.dumps(factories.event(i)) for i in range(5)]
    lines.insert(2, b'{"schema_version": 1, "event_id": "x"}')
    lines.insert(4, b"not json at all")
    f.write_bytes(b"\n".join(lines) + b"\n")
    code, out = run(capsys, "backtest", "--input", str(f), "-q")
    assert code == 1
    assert "line 3: missing required field" in out and "line 5: not valid JSON" in out
    assert "5 events" in out and "2 bad records skipped" in out


def test_bad_labels_file_names_the_record(capsys, tmp_path: Path):
    events = tmp_path / "events.jsonl"
    events.write_bytes(orjson.dumps(factories.event(1)) + b"\n")
    labels = tmp_path / "labels.jsonl"
    labels.write_text('{"account_id": "a", "label": "maybe", "campaign_id": null}\n')
    code, out = run(capsys, "backtest", "--input", str(events), "--labels", str(labels), "-q")
    assert code == 2 and "record 1: label" in out


def test_report_without_labels_and_replay_without_output_are_refused(capsys, tmp_path: Path):
    code, out = run(capsys, "backtest", "--input", str(tmp_path / "e.jsonl"), "--report", str(tmp_path / "r"))
    assert code == 2 and "--report needs --labels" in out
    code, out = run(capsys, "backtest", "--topic", "usage-events")
    assert code == 2 and "needs somewhere to write" in out


def test_invalid_setting_value_is_named(capsys):
    code, out = run(capsys, "config", "show", "--campaign-high", "7")
    assert code == 2 and "campaign_high" in out


def test_backtest_offers_the_settings_a_replay_uses_not_the_workers_ports_and_stores(capsys):
    """Issue 21: ``backtest --help`` listed every setting, --web-port and --metrics-port included."""
    code, out = run(capsys, "backtest", "--help")
    assert code == 0
    for flag in ("--campaign-high", "--account-high", "--allowlist-orgs", "--max-event-skew-ms", "--bootstrap"):
        assert flag in out, flag
    for flag in ("--web-port", "--metrics-port", "--store-dir", "--standby-replicas", "--kafka-port"):
        assert flag not in out, flag
    code, out = run(capsys, "backtest", "--input", "x.jsonl", "--web-port", "1")
    assert code == 2 and "unrecognized arguments: --web-port" in out
