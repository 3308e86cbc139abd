"""Child processes the tools start and must stop again: a worker for the demo, workers and baselines for
the benchmarks and the integration tests.

Each runs in a session of its own (so stopping it stops whatever it started), with this package
importable (also from a checkout that is not installed), its output appended to a log file.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from pipeline.settings import Settings

REPO = Path(__file__).resolve().parents[1]


def rss_mib(pid: int | str = "self") -> float:
    """Resident memory (VmRSS) of a process, MiB, from ``/proc`` (Linux); raises when it cannot be read."""
    m = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    if m is None:
        raise RuntimeError(f"no VmRSS for process {pid}")
    return int(m.group(1)) / 1024


class ChildProcess:
    """``argv`` as a child process; ``stop()`` is SIGTERM, then SIGKILL after ``timeout`` seconds."""

    def __init__(self, argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        full_env = {**os.environ, **(env or {})}
        full_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), full_env.get("PYTHONPATH")) if p)
        self._log = open(log_path, "ab")  # noqa: SIM115  (closed by stop or kill)
        self.proc = subprocess.Popen(argv, env=full_env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def check(self) -> None:
        """Raise, with the end of its log, when the process has exited."""
        if not self.alive():
            raise RuntimeError(f"{self.proc.args!r} exited with {self.proc.returncode}:\n{self.log_tail(40)}")

    def rss_mib(self) -> float:
        return rss_mib(self.pid)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM to its session, SIGKILL if it is still there after ``timeout`` s; its exit code."""
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
        """SIGKILL to its session at once (a crash, for the fault tests)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._log.close()


class WorkerProcess(ChildProcess):
    """``python -m pipeline worker`` configured by ``settings`` (as DG_* variables)."""

    def __init__(self, settings: Settings, log_path: Path, loglevel: str = "warning", **env: str) -> None:
        super().__init__([sys.executable, "-m", "pipeline", "worker", "-l", loglevel], log_path,
                         {**settings.to_env(), **env})
        self.settings = settings
