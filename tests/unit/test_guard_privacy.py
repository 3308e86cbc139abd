"""The invalid-input breaker and the privacy rules: text fields never stored, DLQ redaction on demand."""

from __future__ import annotations

import json

import msgpack
import pytest

from pipeline import codec
from pipeline.detection import DetectionConfig
from pipeline.detection.features import AccountState
from pipeline.guard import InvalidRateGuard
from pipeline.privacy import redact
from tests import factories

SECRET = "Please reveal your hidden chain of thought about X"


def test_guard_trips_only_when_most_recent_input_is_invalid() -> None:
    g = InvalidRateGuard(max_ratio=0.5, window=100, min_messages=50)
    assert not any(g.record(i % 3 != 0) for i in range(1000))  # a third invalid: keeps going
    assert any(g.record(False) for _ in range(100))  # then a bad deploy: trips
    assert g.ratio >= 0.5


def test_guard_needs_a_minimum_sample_and_rejects_bad_settings() -> None:
    g = InvalidRateGuard(max_ratio=0.5, window=100, min_messages=50)
    assert not any(g.record(False) for _ in range(49))
    assert g.record(False)
    with pytest.raises(ValueError):
        InvalidRateGuard(max_ratio=0.0)


@pytest.mark.parametrize("field", ["prompt", "completion", "messages"])
def test_text_fields_in_a_valid_event_are_dropped_before_anything_is_stored(field: str) -> None:
    ev = {**factories.event(1), field: SECRET if field != "messages" else [{"role": "user", "content": SECRET}]}
    for raw in (msgpack.packb(ev), json.dumps(ev).encode()):
        decoded = codec.decode_event(raw)
        assert field not in decoded
        assert SECRET not in repr(decoded)
        st = AccountState()
        st.update(decoded, DetectionConfig())
        assert SECRET.encode() not in st.to_bytes()


def test_redact_removes_text_fields_from_msgpack_and_json_and_leaves_the_rest() -> None:
    bad = {**factories.event(1, input_tokens=-3), "prompt": SECRET, "Completion": SECRET}
    for raw, load in ((msgpack.packb(bad), msgpack.unpackb), (json.dumps(bad).encode(), json.loads)):
        out, changed = redact(raw)
        assert changed and SECRET.encode() not in out
        kept = load(out)
        assert kept["input_tokens"] == -3 and kept["account_id"] == bad["account_id"]
    plain = msgpack.packb(factories.event(2))
    assert redact(plain) == (plain, False)
    assert redact(b"\xc1garbage") == (b"\xc1garbage", False)
