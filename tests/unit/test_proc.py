"""Child processes of the tools (``pipeline.proc``): started in their own session, stopped, logged."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import pytest

from pipeline.proc import ChildProcess, rss_mib

SLEEPER = [sys.executable, "-c", "import sys, time; print('up', flush=True); time.sleep(60)"]


def test_stop_terminates_the_process_and_reports_its_exit(tmp_path: Path) -> None:
    p = ChildProcess(SLEEPER, tmp_path / "log")
    assert p.alive() and p.returncode is None
    assert rss_mib(p.pid) > 0
    assert p.stop(timeout=10) == -signal.SIGTERM
    assert not p.alive()
    with pytest.raises(RuntimeError, match="exited with -15"):
        p.check()


def test_kill_and_log_tail(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "import time; print('line one'); print('line two', flush=True); time.sleep(60)"]
    p = ChildProcess(argv, tmp_path / "log")
    deadline = time.monotonic() + 30
    while "line two" not in (tmp_path / "log").read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    p.kill()
    assert p.returncode == -signal.SIGKILL
    assert p.log_tail(1) == "line two"


def test_the_package_is_importable_in_the_child(tmp_path: Path) -> None:
    p = ChildProcess([sys.executable, "-c", "import pipeline.proc"], tmp_path / "log", {"PYTHONPATH": "/nonexistent"})
    assert p.proc.wait(timeout=60) == 0, p.log_tail()
    p.stop()
