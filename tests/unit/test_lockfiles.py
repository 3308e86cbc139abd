"""The pinned dependencies (``requirements/*.lock``) cover ``pyproject.toml``, every pin carries hashes,
and the installs that matter use them with ``--require-hashes``: ``./run`` (hence CI) and the image."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _pins(lock: str) -> dict[str, list[str]]:
    """``name -> hashes`` of a lock file."""
    pins: dict[str, list[str]] = {}
    current = None
    for line in (ROOT / "requirements" / lock).read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([A-Za-z0-9._-]+)==\S+", line)
        if m:
            current = m.group(1).lower().replace("_", "-")
            pins[current] = []
        hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", line)
        if hashes:
            assert current is not None, line
            pins[current] += hashes
    return pins


@pytest.mark.parametrize(("lock", "extras"), [("runtime.lock", ()), ("dev.lock", ("dev",))])
def test_a_lock_pins_every_dependency_with_hashes(lock: str, extras: tuple[str, ...]) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in project["dependencies"]}
    for extra in extras:
        wanted |= {_name(r) for r in project["optional-dependencies"][extra]}
    pins = _pins(lock)
    assert wanted <= set(pins), f"not pinned in {lock}: {sorted(wanted - set(pins))}"
    assert all(pins.values()), f"pins without hashes: {[n for n, h in pins.items() if not h]}"


def test_run_and_the_image_install_from_the_locks_with_hashes_required() -> None:
    run = (ROOT / "run").read_text()
    assert "--require-hashes -r requirements/dev.lock" in run and "--no-deps -e ." in run
    assert "requirements/dev.lock" in run.split("want=", 1)[1].splitlines()[0], "a changed lock sets up .venv again"
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert "--require-hashes --only-binary=:all: -r requirements/runtime.lock" in dockerfile
    assert "!requirements/runtime.lock" in (ROOT / "docker" / "Dockerfile.dockerignore").read_text()
