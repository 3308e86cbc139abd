"""prompt_simhash v1: the reference implementation reproduces the published test vectors, and agrees with a
bit-by-bit reading of the specification on any text."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.contract.manifest import schema_dir
from pipeline.contract.prompt_simhash import SHINGLE, VERSION, features, normalise, simhash_text
from pipeline.contract.simhash import hamming

VECTORS_PATH = schema_dir() / "examples" / "simhash" / "vectors.json"


def _vectors() -> dict[str, Any]:
    return json.loads(VECTORS_PATH.read_text(encoding="utf-8"))


VECTORS = _vectors()["vectors"]


def _spec_simhash(text: str) -> str:
    """Step 4 as the specification words it, one feature and one bit at a time (no numpy)."""
    counts = [0] * 64
    for feature in features(normalise(text)):
        h = int.from_bytes(hashlib.sha256(feature.encode("utf-8")).digest()[:8], "big")
        for i in range(64):
            counts[i] += 1 if (h >> i) & 1 else -1
    return f"{sum(1 << i for i in range(64) if counts[i] > 0):016x}"


def test_vectors_file_states_the_version_and_shingle_size_of_the_implementation() -> None:
    doc = _vectors()
    assert (doc["version"], doc["shingle"]) == (VERSION, SHINGLE)
    assert len(VECTORS) >= 20 and len({v["name"] for v in VECTORS}) == len(VECTORS)


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v["name"])
def test_reference_implementation_reproduces_each_vector(vector: dict[str, Any]) -> None:
    assert normalise(vector["text"]) == vector["normalised"]
    assert len(features(vector["normalised"])) == vector["features"]
    assert simhash_text(vector["text"]) == vector["simhash"]
    assert _spec_simhash(vector["text"]) == vector["simhash"]


def test_vectors_show_what_the_normalisation_makes_equal() -> None:
    by_name = {v["name"]: v["simhash"] for v in VECTORS}
    same = ["case_folding", "whitespace_runs", "fullwidth", "zero_width_and_bidi", "controls",
            "nbsp_and_ideographic_space"]
    assert {by_name[n] for n in same} == {by_name["case_folded_twin"]}
    assert by_name["sharp_s"] == by_name["sharp_s_upper"]
    assert by_name["precomposed"] == by_name["decomposed"]
    assert by_name["empty"] == by_name["only_whitespace"] == "0000000000000000"
    assert by_name["exactly_five"] == hashlib.sha256(b"hello").hexdigest()[:16]


def test_a_template_with_another_slot_stays_near_and_an_unrelated_prompt_does_not() -> None:
    by_name = {v["name"]: v["simhash"] for v in VECTORS}
    assert hamming(by_name["template_a"], by_name["template_b"]) <= 16
    assert hamming(by_name["template_a"], by_name["unrelated"]) >= 20


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_vectorised_hash_agrees_with_the_bit_by_bit_specification(text: str) -> None:
    assert simhash_text(text) == _spec_simhash(text)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_normalisation_is_idempotent_and_leaves_no_edge_or_double_space(text: str) -> None:
    n = normalise(text)
    assert normalise(n) == n
    assert n == n.strip(" ") and "  " not in n


def test_simhash_command_prints_the_vectors_hash_from_an_argument_or_a_file(tmp_path, capsys) -> None:
    from pipeline.cli import main

    for v in VECTORS[:12]:
        assert main(["simhash", v["text"]]) == 0
        assert capsys.readouterr().out == v["simhash"] + "\n"
    template = next(v for v in VECTORS if v["name"] == "template_a")
    path = tmp_path / "prompt.txt"
    path.write_text(template["text"] + "\n", encoding="utf-8")
    assert main(["simhash", "--input", str(path), "--explain"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {"version": VERSION, "normalised": template["normalised"], "features": template["features"],
                   "simhash": template["simhash"]}
