"""`python -m pipeline config show`: every setting, where it came from, and secrets masked."""

from __future__ import annotations

import json
import os

import pytest

from pipeline import cli
from pipeline.settings import Settings

SECRET = "do-not-print-me-42"


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("DG_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("DG_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("DG_SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("DG_SASL_USERNAME", "dg")
    monkeypatch.setenv("DG_SASL_PASSWORD", SECRET)
    monkeypatch.setenv("DG_SIGNING_KEY", SECRET + "-signing")


def test_text_lists_every_field_aligned_with_its_source_and_masks_secrets(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["config", "show", "--bootstrap", "k1:9092,k2:9092"]) == 0
    out = capsys.readouterr().out
    assert SECRET not in out
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert set(lines) == set(Settings.model_fields)
    assert lines["sasl_password"].split()[1:] == ["**********", "env", "DG_SASL_PASSWORD"]
    assert lines["signing_key"].split()[1] == "**********"
    assert lines["bootstrap"].split()[1:] == ["k1:9092,k2:9092", "flag"]
    assert lines["metrics_port"].split()[1:] == ["9108", "default"]
    assert lines["ssl_cafile"].split()[1] == "(unset)"
    assert len({line.index(line.split()[1]) for line in out.splitlines() if len(line.split()) > 2}) == 1


def test_json_is_one_object_with_every_field_and_masked_secrets(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["config", "show", "--json"]) == 0
    out = capsys.readouterr().out
    assert SECRET not in out
    shown = json.loads(out)
    assert set(shown) == set(Settings.model_fields)
    assert shown["sasl_password"] == shown["signing_key"] == "**********"
    assert shown["signing_keys_previous"] is None
    assert shown["security_protocol"] == "SASL_SSL" and shown["metrics_port"] == 9108


def test_an_incomplete_security_setup_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DG_SASL_PASSWORD")
    assert cli.main(["config", "show"]) == 2
    assert "security_protocol SASL_SSL needs DG_SASL_PASSWORD" in capsys.readouterr().err


def test_every_setting_survives_the_trip_through_a_child_process_environment(monkeypatch) -> None:
    """``to_env`` is how the demo, the benchmarks and the tests hand settings to a worker: every field,
    at its default, must read back from those strings (a ``Literal`` of ints once did not)."""
    base = Settings()
    for key in [k for k in os.environ if k.startswith("DG_")]:
        monkeypatch.delenv(key)
    for key, value in base.to_env().items():
        monkeypatch.setenv(key, value)
    again = Settings()
    for name in type(base).model_fields:
        assert getattr(again, name) == getattr(base, name), name
