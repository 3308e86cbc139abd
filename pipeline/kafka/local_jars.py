"""The local Kafka broker's jars: Maven resolves Apache Kafka and its runtime dependencies into the cache.

:mod:`pipeline.kafka.local` starts the broker from them; this module also holds what every part of the
local broker shares: :class:`KafkaLocalError`, the lookup of ``java``/``mvn`` and an advisory file lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pipeline.settings import Settings

# Kafka 3.9 logs through slf4j 1.7 + reload4j; the same backend, so the broker logs to a file we configure.
SLF4J_VERSION = "1.7.36"
RELOAD4J_VERSION = "1.2.25"
_MARKER = ".complete"

_POM = """<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.distillation-guard</groupId>
  <artifactId>kafka-local</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-reload4j</artifactId>
      <version>{slf4j}</version>
    </dependency>
    <dependency>
      <groupId>ch.qos.reload4j</groupId>
      <artifactId>reload4j</artifactId>
      <version>{reload4j}</version>
    </dependency>
  </dependencies>
</project>
"""


class KafkaLocalError(RuntimeError):
    """The local broker could not be resolved, started, reached or stopped."""


def _libs_dir(settings: Settings) -> Path:
    return Path(settings.cache_dir).expanduser().resolve() / f"kafka-{settings.kafka_version}" / "libs"


def require(tool: str) -> str:
    """The path of ``tool`` on PATH; :class:`KafkaLocalError` if there is none."""
    path = shutil.which(tool)
    if path is None:
        raise KafkaLocalError(f"`{tool}` not found on PATH; the local Kafka broker needs Java 17+ and Maven")
    return path


def tail(text: str, lines: int = 40) -> str:
    """The last ``lines`` lines of ``text``: what an error message quotes of a tool's output."""
    return "\n".join(text.rstrip().splitlines()[-lines:])


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock, so that two processes never resolve or start at the same time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_jars(settings: Settings) -> Path:
    """Resolve Kafka and its runtime dependencies into the cache; return the ``libs`` directory.

    Idempotent: a marker file in ``libs`` records a complete resolution and makes later calls free.
    Raises :class:`KafkaLocalError` if ``java`` or ``mvn`` is missing or Maven fails.
    """
    libs = _libs_dir(settings)
    if (libs / _MARKER).is_file():
        return libs
    require("java")
    mvn = require("mvn")
    with locked(libs.parent / ".resolve.lock"):
        if (libs / _MARKER).is_file():  # resolved by another process while we waited
            return libs
        partial = libs.parent / "libs.partial"
        shutil.rmtree(partial, ignore_errors=True)
        with tempfile.TemporaryDirectory(prefix="kafka-pom-") as tmp:
            pom = Path(tmp) / "pom.xml"
            pom.write_text(
                _POM.format(kafka=settings.kafka_version, slf4j=SLF4J_VERSION, reload4j=RELOAD4J_VERSION)
            )
            cmd = [
                mvn, "-q", "-B", "-Dstyle.color=never", "-f", str(pom), "dependency:copy-dependencies",
                f"-DoutputDirectory={partial}", "-DincludeScope=runtime",
            ]  # fmt: skip
            proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        jars = sorted(p.name for p in partial.glob("*.jar")) if partial.is_dir() else []
        if proc.returncode != 0 or not any(
            j.startswith(f"kafka_2.13-{settings.kafka_version}") for j in jars
        ):
            output = tail(proc.stdout + proc.stderr)
            raise KafkaLocalError(
                f"mvn could not resolve org.apache.kafka:kafka_2.13:{settings.kafka_version} "
                f"(exit {proc.returncode}):\n{output}"
            )
        shutil.rmtree(libs, ignore_errors=True)
        partial.rename(libs)
        (libs / _MARKER).write_text("\n".join(jars) + "\n")
    return libs
