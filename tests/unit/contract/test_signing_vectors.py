"""The published signing test vectors (``schemas/examples/signing``) hold for the Python implementation.

Consumers in other languages check their HMAC against these files; this test keeps the files true to what
the worker signs, so a change to the canonical encoding fails here before it breaks a consumer.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from pathlib import Path
from typing import Any

import pytest

from pipeline.contract import signing, verify
from pipeline.contract.manifest import schema_dir

VECTORS = schema_dir() / "examples" / "signing"
FIELDS = {"description", "key_text", "key_hex", "message", "message_msgpack_hex", "canonical_msgpack_hex",
          "hmac_sha256_hex", "signature_valid"}


def _vectors() -> list[Path]:
    return sorted(VECTORS.glob("*.json"))


def _load(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text(encoding="utf-8")))


def _decoded(vector: dict[str, Any]) -> dict[str, Any]:
    """The message as the topic would carry it: decoded the way ``verify`` decodes msgpack."""
    records = list(verify.parse_records(bytes.fromhex(vector["message_msgpack_hex"])))
    assert len(records) == 1, "one msgpack map per vector"
    obj = records[0][1]
    assert isinstance(obj, dict), obj
    return obj


@pytest.mark.parametrize("path", _vectors(), ids=lambda p: p.stem)
def test_vector_is_complete_and_its_key_is_its_text_in_utf8(path: Path) -> None:
    vector = _load(path)
    assert set(vector) >= FIELDS
    assert bytes.fromhex(vector["key_hex"]) == vector["key_text"].encode("utf-8")
    assert ("why_invalid" in vector) == (not vector["signature_valid"])


@pytest.mark.parametrize("path", _vectors(), ids=lambda p: p.stem)
def test_wire_bytes_decode_to_the_message_shown(path: Path) -> None:
    vector = _load(path)
    assert _decoded(vector) == vector["message"]


@pytest.mark.parametrize("path", _vectors(), ids=lambda p: p.stem)
def test_python_signs_exactly_the_canonical_bytes_of_the_vector(path: Path) -> None:
    vector = _load(path)
    action = _decoded(vector)
    key = bytes.fromhex(vector["key_hex"])
    canonical = bytes.fromhex(vector["canonical_msgpack_hex"])
    assert signing.signing_payload(action) == canonical
    assert hmac.new(key, canonical, hashlib.sha256).hexdigest() == vector["hmac_sha256_hex"]
    assert signing.sign(action, key) == vector["hmac_sha256_hex"]


@pytest.mark.parametrize("path", _vectors(), ids=lambda p: p.stem)
def test_python_verifier_accepts_exactly_the_vectors_marked_valid(path: Path) -> None:
    vector = _load(path)
    key = bytes.fromhex(vector["key_hex"])
    assert signing.verify(_decoded(vector), key) is vector["signature_valid"]
    assert signing.verify(vector["message"], key) is vector["signature_valid"]  # the JSON view signs the same


def test_the_vectors_include_valid_ones_a_tampered_one_and_a_non_canonical_wire_encoding() -> None:
    vectors = {p.stem: _load(p) for p in _vectors()}
    assert sum(v["signature_valid"] for v in vectors.values()) >= 3
    assert vectors["05_tampered_action"]["signature_valid"] is False
    wire = vectors["03_non_canonical_wire_encoding"]
    assert wire["message_msgpack_hex"] != wire["canonical_msgpack_hex"]


def test_vector_keys_are_public_so_the_pipeline_refuses_them_for_enforcement() -> None:
    for path in _vectors():
        key = _load(path)["key_text"].encode("utf-8")
        assert signing.enforce_key_problem(key) == "it is a development key, public in the source"


def test_the_go_consumer_refuses_for_enforcement_exactly_the_keys_the_pipeline_refuses() -> None:
    """``examples/enforcement-consumer/action.go`` keeps its own copy of the public keys: it must not drift."""
    source = (Path(__file__).resolve().parents[3] / "examples" / "enforcement-consumer" / "action.go").read_text(
        "utf-8")
    block = re.search(r"var publicKeys = map\[string\]bool\{(.*?)\n\}", source, re.S)
    assert block, "publicKeys not found in action.go"
    go_keys = {k.encode("utf-8") for k in re.findall(r'"([^"]+)":\s*true', block.group(1))}
    assert go_keys == set(signing.DEVELOPMENT_KEYS)
