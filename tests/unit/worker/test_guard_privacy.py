"""The invalid-input breaker and the privacy rules: text fields never stored, DLQ redaction on demand."""

from __future__ import annotations

import json
from typing import Any

import msgpack
import pytest

from pipeline.contract import codec
from pipeline.contract.privacy import redact
from pipeline.detection import DetectionConfig
from pipeline.detection.features import AccountState
from pipeline.worker.guard import InvalidRateGuard
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


# ------------------------------------------------------------------ DLQ redaction: recursive, by name and shape


def test_redaction_is_on_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.settings import Settings

    monkeypatch.delenv("DG_DLQ_REDACT_TEXT", raising=False)
    assert Settings().dlq_redact_text is True


@pytest.mark.parametrize("bad", [
    {"request": {"messages": [{"role": "user", "content": SECRET}]}},  # nested: request.messages[].content
    {"prompt_text": SECRET},
    {"user_prompt": SECRET},
    {"PromptText": SECRET},
    {"payload": {"userMessage": SECRET}},
    {"meta": [{"note": SECRET}]},  # an innocent name, but the value has the shape of free text
    [{"completion": SECRET}, 3],  # an array, not a map
    {"turns": [[SECRET]]},
], ids=["nested", "prompt_text", "user_prompt", "camel", "userMessage", "shape", "array", "deep-list"])
def test_redaction_catches_nested_and_renamed_text_fields(bad: Any) -> None:
    for raw in (msgpack.packb(bad), json.dumps(bad).encode()):
        out, changed = redact(raw)
        assert changed, raw
        assert SECRET.encode() not in out
        assert b"[redacted: " in out


def test_redaction_keeps_contract_fields_and_short_tokens() -> None:
    bad = {**factories.event(1, input_tokens=-3), "note": "ok", "request": {"messages": ["hi"]}}
    out, changed = redact(json.dumps(bad).encode())
    kept = json.loads(out)
    assert changed and kept["request"] == {"messages": "[redacted: list of 1 items]"}
    assert kept["input_tokens"] == -3 and kept["prompt_chars"] == bad["prompt_chars"] and kept["note"] == "ok"


def test_redaction_covers_invalid_json_and_broken_msgpack() -> None:
    for raw in (b'{"prompt": "' + SECRET.encode() + b'", "ts": ',  # cut off: not JSON
                b"\xc1\xa5" + SECRET.encode("utf-8") + b"\x00",  # not msgpack
                b"just some text: " + SECRET.encode()):
        out, changed = redact(raw)
        assert changed and SECRET.encode() not in out and b"[redacted: " in out, out
    assert redact(b'{"ts": 1,') == (b'{"ts": 1,', False)  # nothing text-shaped: the bytes stay as they are


@pytest.mark.parametrize("raw", [
    json.dumps({**factories.event(1), "status": SECRET}).encode(),
    json.dumps({**factories.event(1), "model": SECRET * 4}).encode(),
    json.dumps({**factories.event(1), "account_tier": SECRET}).encode(),
    msgpack.packb({**factories.event(1), "capability": SECRET}),
    json.dumps({"schema_version": 1, "alert_id": "a", "account_id": "b", "verdict": SECRET, "ts": 1}).encode(),
], ids=["enum", "too-long", "tier", "msgpack", "verdict"])
def test_no_dlq_reason_quotes_the_bad_value(raw: bytes) -> None:
    decode = codec.decode_verdict if b"verdict" in raw else codec.decode_event
    with pytest.raises(codec.CodecError) as err:
        decode(raw)
    reason = err.value.reason
    assert "Please" not in reason and "reveal" not in reason, reason
    assert "string of" in reason or "chars" in reason, reason
