"""The server-side SVG activity chart: one row per member, one cell per active hour, names escaped."""

from __future__ import annotations

from pipeline.console.charts import MAX_COLUMNS, activity_heatmap

HOUR0 = 1_772_409_600_000 // 3_600_000


def test_one_row_per_member_and_one_cell_per_active_hour():
    svg = activity_heatmap({"acct-a": {HOUR0: 5, HOUR0 + 2: 1}, "acct-b": {HOUR0 + 1: 3}})
    assert svg.startswith("<svg") and svg.count("<rect") == 3
    assert "acct-a 03-02 00:00: 5 events" in svg and "1 h per cell" in svg


def test_a_long_span_is_binned_and_names_are_escaped():
    svg = activity_heatmap({"<b>x</b>": {HOUR0 + h: 1 for h in range(0, 24 * 30)}})
    assert "<b>" not in svg and "&lt;b&gt;" in svg
    assert svg.count("<rect") <= MAX_COLUMNS and "5 h per cell" in svg


def test_no_activity_is_said_in_words():
    assert "No activity" in activity_heatmap({"acct-a": {}})
