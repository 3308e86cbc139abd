"""Long commands show how far they are: the backtest and produce bars have a total (so an ETA), counted
from the file without decoding it; simulate says what it is generating before it starts."""

from __future__ import annotations

from pathlib import Path

import msgpack
import pytest

from pipeline.cli import main
from pipeline.contract.eventfile import count_records, write_records
from tests import factories


@pytest.mark.parametrize("name", ["e.msgpack", "e.jsonl", "e.msgpack.gz", "e.jsonl.gz"])
def test_records_are_counted_in_every_file_format(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    write_records(path, [factories.event(i) for i in range(123)])
    assert count_records(path) == 123


def test_an_unreadable_file_has_no_count_and_no_crash(tmp_path: Path) -> None:
    assert count_records(tmp_path / "missing.msgpack") is None
    bad = tmp_path / "bad.msgpack.gz"
    bad.write_bytes(b"not gzip at all")
    assert count_records(bad) is None
    cut = tmp_path / "cut.msgpack"
    cut.write_bytes(msgpack.packb(factories.event(1)) + msgpack.packb(factories.event(2))[:5])
    assert count_records(cut) == 1  # the reading proper reports the truncated record


def test_the_backtest_bar_shows_a_total(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "e.msgpack"
    write_records(path, [factories.event(i) for i in range(2_000)])
    assert main(["backtest", "--input", str(path)]) == 0
    assert "/2000" in capsys.readouterr().err.replace(",", "")


def test_simulate_says_what_it_generates_before_it_starts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--scenario", "tiny", "--out", str(tmp_path / "t.jsonl")]) == 0
    err = capsys.readouterr().err
    assert err.index("generating scenario tiny seed 1") < err.index("generated in")
