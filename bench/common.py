"""Shared pieces of the benchmarks: the cached event file, a local Kafka, worker processes, reporting.

Every benchmark prints its figures next to a baseline measured in the same run (these machines are
noisy, so only ratios travel), and the exact command line that produced them.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shlex
import socket
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.contract.manifest import USAGE_EVENTS  # noqa: E402
from pipeline.proc import ChildProcess, WorkerProcess  # noqa: E402
from pipeline.settings import Settings  # noqa: E402

CACHE = REPO / "bench" / ".cache"
BROKER_PID: int | None = None
"""The pid of the broker ``local_kafka`` started (None with ``DG_BENCH_BOOTSTRAP`` or before it starts)."""


# ------------------------------------------------------------------------------------------ reporting


def command_line() -> str:
    """The command that is running, as one could paste it."""
    return " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv])


def header(title: str) -> None:
    print(f"== {title}")
    print(f"command: {command_line()}")
    print(f"machine: {platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.2f}")


def figure(name: str, value: float, unit: str, *, baseline: float | None = None, baseline_name: str = "",
           goal: str = "", met: bool | None = None) -> None:
    """One line: the figure, its baseline and the ratio, and the goal when there is one."""
    text = f"{name}: {value:,.1f} {unit}" if unit else f"{name}: {value:.3f}"
    if baseline is not None and baseline_name:
        text += f" | {baseline_name}: {baseline:,.1f} {unit} | ratio {value / baseline:.3f}"
    if goal:
        text += f" | goal {goal}: {'met' if met else 'NOT met'}"
    print(text, flush=True)


# ------------------------------------------------------------------------------------------ events


def cached_events(scenario: str = "standard", seed: int = 1, scale: float = 3.5) -> Path:
    """A simulated events file (msgpack), generated once and kept under ``bench/.cache/``."""
    path = CACHE / f"{scenario}-s{seed}-x{scale:g}.msgpack"
    if not path.exists():
        from pipeline.contract.eventfile import write_records
        from pipeline.simulate import generate

        print(f"generating {path.name} (once) ...", flush=True)
        sim = generate(scenario, seed, scale=scale)
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.msgpack")
        write_records(tmp, sim.events)
        tmp.rename(path)
    return path


def raw_messages(path: Path, limit: int | None = None) -> list[tuple[bytes, bytes]]:
    """``(key, value)`` pairs as the producer sends them: account id, the event as a msgpack map."""
    from pipeline.contract import codec
    from pipeline.contract.eventfile import read_events

    out: list[tuple[bytes, bytes]] = []
    for ev in read_events(path, lambda bad: None):
        out.append((ev["account_id"].encode("utf-8"), codec.encode(ev)))
        if limit is not None and len(out) >= limit:
            break
    return out


# ------------------------------------------------------------------------------------------ Kafka


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def local_kafka() -> Iterator[str]:
    """The project's local Apache Kafka on free ports in a temporary directory; stopped at the end.
    ``DG_BENCH_BOOTSTRAP`` names an existing broker to use instead."""
    external = os.environ.get("DG_BENCH_BOOTSTRAP")
    if external:
        yield external
        return
    from pipeline.kafka import local as kafka_local

    with tempfile.TemporaryDirectory(prefix="dg-bench-kafka-") as tmp:
        data = Path(tmp)
        settings = Settings(kafka_port=free_port(), kafka_controller_port=free_port(), kafka_data_dir=data)
        info = kafka_local.start(settings, data_dir=data, timeout=180)
        global BROKER_PID
        BROKER_PID = info.pid
        try:
            yield info.bootstrap
        finally:
            BROKER_PID = None
            if info.started:
                kafka_local.stop(settings, data_dir=data)


def bench_settings(bootstrap: str, workdir: Path, partitions: int = 4, **overrides: Any) -> Settings:
    """Settings of one benchmark run: its own topic prefix and consumer group."""
    tag = uuid.uuid4().hex[:6]
    base: dict[str, Any] = {"bootstrap": bootstrap, "topic_prefix": f"b{tag}-", "app_id": f"dg-bench-{tag}",
                            "partitions": partitions, "store_dir": workdir / f"store-{tag}"}
    base.update(overrides)
    return Settings(**base)


def create_topics(settings: Settings) -> None:
    from pipeline.kafka.admin import create_topics as create

    create(settings)


def produce(settings: Settings, messages: list[tuple[bytes, bytes]], topic: str = USAGE_EVENTS) -> float:
    """Send pre-encoded messages keyed by account and wait for Kafka to have them; returns seconds."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=settings.bootstrap, acks="all", linger_ms=20,
                             batch_size=512 * 1024, max_block_ms=120_000)
    name = settings.topic(topic)
    t0 = time.perf_counter()
    for key, value in messages:
        producer.send(name, key=key, value=value)
    producer.flush()
    secs = time.perf_counter() - t0
    producer.close()
    return secs


def group_lag(settings: Settings, topic: str) -> int | None:
    from pipeline.kafka.lag import group_lag as lag

    return lag(settings.bootstrap, settings.app_id, settings.topic(topic))


# ------------------------------------------------------------------------------------------ processes


def start_worker(settings: Settings, log_path: Path, **env: str) -> tuple[WorkerProcess, int]:
    """``python -m pipeline worker`` with the settings as DG_* variables; returns it and its metrics port."""
    metrics_port, web_port = free_port(), free_port()
    s = settings.model_copy(update={"metrics_port": metrics_port, "web_port": web_port,
                                    "store_dir": settings.store_dir / f"w{web_port}"})
    s.store_dir.parent.mkdir(parents=True, exist_ok=True)
    return WorkerProcess(s, log_path, **env), metrics_port


def metric(port: int, name: str, **labels: str) -> float:
    """One sample of a worker's Prometheus /metrics (0 when absent or unreachable)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return 0.0
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(name):
            head, _, value = line.rpartition(" ")
            if head == name or (want and head == f"{name}{{{want}}}"):
                return float(value)
    return 0.0


def wait_ready(ports: list[int], procs: Sequence[ChildProcess], timeout: float = 180) -> float:
    """Until every worker reports ``dg_worker_ready`` 1 (partitions assigned, tables recovered, input
    flowing): a consumer group can be Stable while its members still recover. Returns the seconds waited."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        for p in procs:
            p.check()
        if all(metric(port, "dg_worker_ready") == 1.0 for port in ports):
            return time.monotonic() - t0
        time.sleep(0.25)
    raise TimeoutError(f"the workers were not ready within {timeout} s")


def accepted(ports: list[int]) -> float:
    return sum(metric(p, "dg_events_total", result="accepted") for p in ports)


def rate_until(count: Any, target: int, procs: Sequence[ChildProcess], timeout: float, poll: float = 0.1,
               cpu: CpuMeter | None = None) -> float:
    """Items per second of ``count()`` from the first poll that sees progress until it reaches ``target``
    (so start-up and group joining are not counted); ``cpu``, when given, is started and stopped with it."""
    deadline = time.monotonic() + timeout
    first: tuple[float, float] | None = None
    while time.monotonic() < deadline:
        for p in procs:
            p.check()
        n = count()
        now = time.monotonic()
        if first is None and n > 0:
            first = (now, n)
            if cpu is not None:
                cpu.start()
        elif first is not None and n >= target:
            if cpu is not None:
                cpu.stop()
            return (n - first[1]) / (now - first[0])
        time.sleep(poll)
    raise TimeoutError(f"only {count()} of {target} after {timeout} s")


# ------------------------------------------------------------------------------------------ CPU time


def _machine_jiffies() -> tuple[int, int]:
    """(busy, total) clock ticks of all cores since boot, from ``/proc/stat``."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    return sum(fields[:8]) - idle, sum(fields[:8])  # guest time is already counted in user


def _process_jiffies(pid: int) -> int:
    """User and system clock ticks of one process (all its threads) since it started."""
    after_name = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(after_name[11]) + int(after_name[12])  # utime, stime: fields 14 and 15


class CpuMeter:
    """Where the cores went over an interval: how many the whole machine kept busy, and how many each named
    process used (CPU seconds over wall seconds; Linux ``/proc``). A ratio of two runs on a machine whose
    cores were all busy is a share of the machine, not a property of the code."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._t0 = 0.0
        self._machine0 = (0, 0)
        self._procs0: dict[str, int] = {}
        self.wall = 0.0
        self.machine_cores = 0.0
        self.cores: dict[str, float] = {}

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._machine0 = _machine_jiffies()
        self._procs0 = {name: _process_jiffies(pid) for name, pid in self.pids.items()}

    def stop(self) -> None:
        self.wall = time.monotonic() - self._t0
        busy, total = _machine_jiffies()
        n_cores = os.cpu_count() or 1
        self.machine_cores = n_cores * (busy - self._machine0[0]) / max(total - self._machine0[1], 1)
        tick = os.sysconf("SC_CLK_TCK")
        self.cores = {name: (_process_jiffies(pid) - self._procs0[name]) / tick / self.wall
                      for name, pid in self.pids.items()}

    def report(self) -> str:
        named = sum(self.cores.values())
        parts = [f"{name} {cores:.2f}" for name, cores in self.cores.items()]
        return (f"cores busy: machine {self.machine_cores:.2f} of {os.cpu_count()} over {self.wall:.1f} s; "
                + ", ".join(parts) + f", everything else {max(self.machine_cores - named, 0.0):.2f}")
