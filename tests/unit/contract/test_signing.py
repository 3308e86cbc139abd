"""Enforcement action signatures: HMAC-SHA256 over canonical msgpack, key rotation, and `verify` CLI."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
from pathlib import Path
from typing import Any

import msgpack
import pytest

from pipeline import cli
from pipeline.contract import schemas
from pipeline.contract.signing import SignatureError, check, sign, signing_payload, verify

KEY = b"current-key-0123456789"
OLD_KEY = b"previous-key-9876543210"


def action(**overrides: Any) -> dict[str, Any]:
    """A valid EnforcementAction v1, signed with KEY unless ``signature`` is overridden."""
    a: dict[str, Any] = {
        "schema_version": 1,
        "action_id": "act-0001",
        "ts": 1_772_409_600_000,
        "account_id": "acct-7",
        "action": "throttle",
        "mode": "shadow",
        "reason_codes": ["reasoning_share", "prompt_template_reuse"],
        "alert_ids": ["al-1", "al-2"],
        "expires_ts": None,
        "policy_version": "policy-1",
    }
    a.update({k: v for k, v in overrides.items() if k != "signature"})
    a["signature"] = overrides.get("signature", sign(a, KEY))
    return a


def test_signature_is_hmac_sha256_of_the_sorted_msgpack_of_every_other_field() -> None:
    a = action()
    expected_payload = msgpack.packb({k: a[k] for k in sorted(a) if k != "signature"}, use_bin_type=True)
    assert signing_payload(a) == expected_payload
    assert a["signature"] == hmac.new(KEY, expected_payload, hashlib.sha256).hexdigest()
    schemas.validate("enforcement_action", a)


def test_sign_ignores_field_order_and_an_existing_signature() -> None:
    a = action()
    shuffled = dict(reversed(list(a.items())))
    shuffled["signature"] = "0" * 64
    assert sign(shuffled, KEY) == a["signature"]


def test_round_trip_verifies() -> None:
    assert verify(action(), KEY)
    assert check(action(), {"current": KEY}) == "current"


@pytest.mark.parametrize(
    ("field", "value"),
    [("action", "ban"), ("mode", "enforce"), ("account_id", "acct-8"), ("ts", 1_772_409_600_001),
     ("reason_codes", ["prompt_template_reuse", "reasoning_share"]), ("expires_ts", 1_772_500_000_000),
     ("smuggled_extra_field", True)],
)
def test_a_tampered_field_fails(field: str, value: Any) -> None:
    a = action()
    a[field] = value
    assert not verify(a, KEY)
    with pytest.raises(SignatureError, match="does not match the key"):
        check(a, KEY)


def test_missing_or_malformed_signature_fails() -> None:
    a = action()
    del a["signature"]
    assert not verify(a, KEY)
    with pytest.raises(SignatureError, match="no signature field"):
        check(a, KEY)
    for bad in ("", "ABCDEF" * 10 + "ABCD", action()["signature"][:-1], 12):
        with pytest.raises(SignatureError, match="64 lowercase hex"):
            check(action(signature=bad), KEY)


def test_wrong_key_fails_and_empty_keys_are_refused() -> None:
    assert not verify(action(), b"another key")
    with pytest.raises(ValueError, match="empty"):
        sign(action(), b"")
    with pytest.raises(ValueError, match="no keys"):
        verify(action(), {})


def test_rotation_accepts_actions_signed_with_the_previous_key() -> None:
    old = action(signature=None)
    old["signature"] = sign(old, OLD_KEY)
    keys = {"current": KEY, "previous-1": OLD_KEY}
    assert check(old, keys) == "previous-1"
    assert check(action(), keys) == "current"
    assert not verify(old, KEY)  # once the old key is dropped, its actions no longer verify
    with pytest.raises(SignatureError, match="any of the 2 keys"):
        check(action(signature=sign(action(), b"third")), keys)


# ---------------------------------------------------------------------------------- CLI


def _write_jsonl(path: Path, records: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def test_cli_all_ok_exits_0(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DG_SIGNING_KEY", KEY.decode())
    path = _write_jsonl(tmp_path / "actions.jsonl", [action(), action(action_id="act-0002")])
    assert cli.main(["verify", "--input", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and all(line.startswith("OK") for line in out)
    assert "act-0002" in out[1]


def test_cli_reports_each_failure_with_its_reason_and_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DG_SIGNING_KEY", KEY.decode())
    tampered = action()
    tampered["action"] = "ban"
    bad_schema = action(mode="maybe")
    unsigned = action()
    del unsigned["signature"]
    path = _write_jsonl(tmp_path / "actions.jsonl", [action(), tampered, bad_schema, unsigned, "{not json"])
    assert cli.main(["verify", "-i", str(path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == ["OK", "FAIL", "FAIL", "FAIL", "FAIL"]
    assert "line 2" in out[1] and "does not match" in out[1]
    assert "schema: $.mode" in out[2]
    assert "no signature field" in out[3] and "schema" in out[3]
    assert "not JSON" in out[4]


def test_cli_accepts_one_json_object_on_stdin_and_previous_keys(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    old = action(signature=None)
    old["signature"] = sign(old, OLD_KEY)
    monkeypatch.setenv("DG_SIGNING_KEY", KEY.decode())
    monkeypatch.setenv("DG_SIGNING_KEYS_PREVIOUS", "unused-key, " + OLD_KEY.decode())
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(old, indent=2)))
    assert cli.main(["verify", "--input", "-"]) == 0
    assert "(key previous-2)" in capsys.readouterr().out


def test_cli_key_from_a_named_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DG_SIGNING_KEY", raising=False)
    monkeypatch.setenv("ENFORCEMENT_HMAC", KEY.decode())
    path = _write_jsonl(tmp_path / "a.jsonl", [action()])
    assert cli.main(["verify", "--input", str(path), "--key-env", "ENFORCEMENT_HMAC"]) == 0


def test_cli_without_a_key_or_with_unreadable_input_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DG_SIGNING_KEY", raising=False)
    path = _write_jsonl(tmp_path / "a.jsonl", [action()])
    assert cli.main(["verify", "--input", str(path)]) == 2
    assert "no signing key: set DG_SIGNING_KEY" in capsys.readouterr().err
    monkeypatch.setenv("DG_SIGNING_KEY", KEY.decode())
    assert cli.main(["verify", "--input", str(tmp_path / "missing.jsonl")]) == 2
    (tmp_path / "empty.jsonl").write_text("\n")
    assert cli.main(["verify", "--input", str(tmp_path / "empty.jsonl")]) == 2


# ---------------------------------------------------------------------------------- verify: what a consumer needs

LONG_KEY = b"enforcement-key-0123456789abcdef-xyz"  # 36 bytes
NOW = "2026-03-02T12:00:00Z"  # 1_772_452_800_000: half a day after action()'s ts


def _verify(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
            data: bytes, key: bytes = KEY, *extra: str) -> tuple[int, str]:
    monkeypatch.setenv("DG_SIGNING_KEY", key.decode())
    monkeypatch.delenv("DG_SIGNING_KEYS_PREVIOUS", raising=False)
    path = tmp_path / "actions.bin"
    path.write_bytes(data)
    code = cli.main(["verify", "-i", str(path), "--now", NOW, *extra])
    return code, capsys.readouterr().out


def test_verify_fails_an_expired_action(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    expired = action(action="suspend", expires_ts=1_772_409_600_000 + 3_600_000)  # an hour after it was issued
    live = action(action_id="act-0002", action="suspend", expires_ts=1_772_409_600_000 + 7 * 86_400_000)
    code, out = _verify(tmp_path, monkeypatch, capsys, (json.dumps(expired) + "\n" + json.dumps(live)).encode())
    assert code == 1
    first, second = out.splitlines()
    assert first.startswith("FAIL") and "expired at 2026-03-02T01:00:00Z" in first
    assert second.startswith("OK")


def test_verify_max_age_fails_old_actions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    data = json.dumps(action()).encode()
    assert _verify(tmp_path, monkeypatch, capsys, data, KEY, "--max-age", "24h")[0] == 0
    code, out = _verify(tmp_path, monkeypatch, capsys, data, KEY, "--max-age", "1h")
    assert code == 1 and "too old" in out


def test_verify_rejects_a_key_named_twice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """``{"action": "ban", …, "action": "suspend"}``: a consumer keeping the first value bans, although the
    signature (over the last value, as ``json.loads`` keeps it) covers ``suspend``."""
    signed = action(action="suspend")
    text = json.dumps(signed).replace('"action": "suspend"', '"action": "ban", "action": "suspend"')
    code, out = _verify(tmp_path, monkeypatch, capsys, text.encode())
    assert code == 1 and out.startswith("FAIL") and "duplicate key 'action'" in out
    pretty = json.dumps(signed, indent=2).replace('"action": "suspend"', '"action": "ban",\n  "action": "suspend"')
    code, out = _verify(tmp_path, monkeypatch, capsys, pretty.encode())
    assert code == 1 and out.count("FAIL") == 1 and "duplicate key 'action'" in out
    packed = b"\x8b" + msgpack.packb("action") + msgpack.packb("ban") + msgpack.packb(signed)[1:]
    code, out = _verify(tmp_path, monkeypatch, capsys, packed)
    assert code == 1 and "duplicate key 'action'" in out


def test_verify_reads_msgpack_as_on_the_topic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    data = msgpack.packb(action()) + msgpack.packb(action(action_id="act-0002", account_id="acct-8"))
    code, out = _verify(tmp_path, monkeypatch, capsys, data)
    assert code == 0 and [line.split()[0] for line in out.splitlines()] == ["OK", "OK"]
    assert "record 2" in out and "acct-8" in out
    tampered = msgpack.packb({**action(), "action": "ban"})
    code, out = _verify(tmp_path, monkeypatch, capsys, tampered)
    assert code == 1 and "does not match" in out


def _signed(key: bytes, **fields: Any) -> dict[str, Any]:
    a = action(**fields)
    a["signature"] = sign(a, key)
    return a


def test_verify_fails_enforce_actions_signed_with_a_short_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    short = b"k"
    code, out = _verify(tmp_path, monkeypatch, capsys, json.dumps(_signed(short, mode="enforce")).encode(), short)
    assert code == 1 and "1 bytes long, under the minimum of 32" in out
    assert _verify(tmp_path, monkeypatch, capsys, json.dumps(_signed(short)).encode(), short)[0] == 0  # shadow
    ok = json.dumps(_signed(LONG_KEY, mode="enforce")).encode()
    assert _verify(tmp_path, monkeypatch, capsys, ok, LONG_KEY)[0] == 0


def test_verify_fails_enforce_actions_signed_with_a_development_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.contract.signing import DEV_SIGNING_KEY, DEVELOPMENT_KEYS

    assert DEV_SIGNING_KEY in DEVELOPMENT_KEYS
    for dev in DEVELOPMENT_KEYS:
        code, out = _verify(tmp_path, monkeypatch, capsys, json.dumps(_signed(dev, mode="enforce")).encode(), dev)
        assert code == 1 and "development key" in out


def test_verify_marks_replays_and_fails_a_replay_in_enforce_mode(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    shadow = _signed(LONG_KEY, policy_version="dg-policy-1.1+replay")
    code, out = _verify(tmp_path, monkeypatch, capsys, json.dumps(shadow).encode(), LONG_KEY)
    assert code == 0 and "REPLAY (shadow)" in out
    forged = _signed(LONG_KEY, policy_version="dg-policy-1.1+replay", mode="enforce")
    code, out = _verify(tmp_path, monkeypatch, capsys, json.dumps(forged).encode(), LONG_KEY)
    assert code == 1 and "replays are shadow only" in out
