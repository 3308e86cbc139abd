"""Run real worker processes (``python -m pipeline worker``) from tests, and read topics back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer

from pipeline.settings import Settings

REPO = Path(__file__).resolve().parents[2]


class Worker:
    """A worker subprocess with its log in a file; ``stop()`` sends SIGTERM, ``kill()`` SIGKILL."""

    def __init__(self, settings: Settings, log_path: Path, loglevel: str = "info") -> None:
        self.log_path = log_path
        env = {**os.environ, **settings.to_env(), "PYTHONPATH": str(REPO)}
        self._log = open(log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "worker", "-l", loglevel],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True, cwd=str(REPO),
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._log.close()


def read_topic(bootstrap: str, topic: str, *, until: Callable[[list[Any]], bool], timeout: float,
               workers: list[Worker] | None = None) -> list[Any]:
    """Consume ``topic`` from the start until ``until(messages)`` holds or ``timeout`` seconds pass."""
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=1000)
    messages: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not until(messages):
            for w in workers or []:
                if not w.alive():
                    raise AssertionError(f"worker died:\n{w.log_tail()}")
            for msg in consumer:
                messages.append(msg)
                if until(messages):
                    break
    finally:
        consumer.close()
    return messages
