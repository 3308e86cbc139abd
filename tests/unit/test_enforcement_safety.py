"""Enforcement safety without a broker: shadow mode is the default, and enforce mode without a signing key
is refused before the worker connects to anything."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from pipeline.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def test_shadow_mode_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DG_ENFORCE", raising=False)
    assert Settings().enforce is False


@pytest.mark.parametrize("key", [None, ""])
def test_enforce_without_a_signing_key_is_refused(key: str | None) -> None:
    with pytest.raises(ValidationError, match="DG_SIGNING_KEY"):
        Settings(enforce=True, signing_key=key)


def test_worker_refuses_to_start_in_enforce_mode_without_a_key(tmp_path: Path) -> None:
    """The CLI exits 2 with a message naming DG_SIGNING_KEY, before touching Kafka (nothing listens on
    the bootstrap address given, so a worker that tried to connect would not exit quickly)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DG_")}
    env.update({"DG_ENFORCE": "true", "DG_BOOTSTRAP": "127.0.0.1:9", "DG_STORE_DIR": str(tmp_path),
                "DG_METRICS_PORT": "0", "PYTHONPATH": str(REPO)})
    proc = subprocess.run([sys.executable, "-m", "pipeline", "worker"], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "DG_SIGNING_KEY" in proc.stderr + proc.stdout


@pytest.mark.parametrize("key", ["k", "x" * 31, "distillation-guard-development-key:not-for-enforcement",
                                 "change-me-dev-only-signing-key"])
def test_enforce_with_a_short_or_public_key_is_refused(key: str) -> None:
    with pytest.raises(ValidationError, match="DG_SIGNING_KEY cannot sign enforce-mode actions"):
        Settings(enforce=True, signing_key=key)
    assert Settings(enforce=False, signing_key=key).signing_key is not None  # shadow may use any key
    assert Settings(enforce=True, signing_key="x" * 32).enforce
