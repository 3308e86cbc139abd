"""Factories for test messages: valid usage events, and malformed ones of many kinds."""

from __future__ import annotations

import json
import random
from typing import Any

import msgpack

BASE_TS = 1_772_409_600_000  # 2026-03-02T00:00:00Z


def event(n: int = 0, **overrides: Any) -> dict[str, Any]:
    """A valid UsageEvent v1 with every field present; ``n`` makes event_id and ts distinct."""
    ev: dict[str, Any] = {
        "schema_version": 1,
        "event_id": f"ev-{n}",
        "ts": BASE_TS + n * 1000,
        "account_id": f"acct-{n % 50}",
        "model": "frontier-1",
        "input_tokens": 500,
        "output_tokens": 800,
        "status": "ok",
        "org_id": None,
        "api_key_id": "key-1",
        "endpoint": "messages",
        "latency_ms": 1200,
        "ip_prefix": "203.0.113.0/24",
        "asn": 64500,
        "client_fingerprint": "cf0123456789abcd",
        "payment_fingerprint": "pf0123456789abcd",
        "account_tier": "pro",
        "country": "US",
        "prompt_simhash": "0123456789abcdef",
        "prompt_chars": 2000,
        "n_turns": 1,
        "n_tools": 0,
        "reasoning_requested": False,
        "capability": "chat",
        "language": "en",
    }
    ev.update(overrides)
    return ev


def malformed(i: int, rng: random.Random) -> bytes:
    """The i-th malformed message: cycles through many kinds of breakage (all must reach the DLQ)."""
    good = event(i, event_id=f"bad-{i}")
    kind = i % 14
    if kind == 0:
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 200))) + b"\xc1"  # 0xc1 is never valid
    if kind == 1:
        packed = msgpack.packb(good)
        return packed[: rng.randint(1, len(packed) - 1)]  # truncated
    if kind == 2:
        return msgpack.packb({**good, "input_tokens": -3})
    if kind == 3:
        return msgpack.packb({**good, "input_tokens": "many"})
    if kind == 4:
        return msgpack.packb({k: v for k, v in good.items() if k != "account_id"})
    if kind == 5:
        return json.dumps([1, 2, 3]).encode()  # JSON that is not an object
    if kind == 6:
        return msgpack.packb({**good, "status": "bogus"})
    if kind == 7:
        return msgpack.packb({**good, "account_id": "x" * 100_000})  # oversized
    if kind == 8:
        return msgpack.packb({**good, "reasoning_requested": "yes"})
    if kind == 9:
        return msgpack.packb({**good, "schema_version": 3})  # a version that does not exist (1 and 2 do)
    if kind == 10:
        return b'{"schema_version": 1, "event_id": '  # truncated JSON
    if kind == 11:
        return msgpack.packb([good])  # not a map
    if kind == 12:
        return msgpack.packb({**good, "ts": "yesterday"})
    nested: Any = "x"
    for _ in range(200):
        nested = [nested]
    return msgpack.packb({**good, "language": nested})  # deep nesting where a string belongs


def harvester_and_noise(n_valid: int, seed: int = 3) -> list[dict[str, Any]]:
    """``n_valid`` events in time order: one naive harvesting account (a templated reasoning prompt every
    10 s, long outputs, round the clock) amid casual accounts; the harvester is caught within hours."""
    rng = random.Random(seed)
    template = rng.getrandbits(64)
    events: list[dict[str, Any]] = []
    n_harvest = n_valid * 3 // 10
    for i in range(n_harvest):
        h = template ^ (1 << rng.randrange(64)) if rng.random() < 0.5 else template
        events.append(event(i, account_id="harvester", ts=BASE_TS + i * 10_000, reasoning_requested=True,
                            capability="reasoning", prompt_simhash=f"{h:016x}", output_tokens=6000,
                            input_tokens=400))
    span = n_harvest * 10_000
    for j in range(n_valid - n_harvest):
        n = n_harvest + j
        events.append(event(n, account_id=f"casual-{rng.randrange(200)}", ts=BASE_TS + rng.randrange(span),
                            prompt_simhash=f"{rng.getrandbits(64):016x}", payment_fingerprint=f"pf{n}",
                            client_fingerprint=f"cf{n % 200}"))
    events.sort(key=lambda e: e["ts"])
    return events


MALFORMED_MORE_KINDS = 16


def malformed_more(i: int, rng: random.Random) -> bytes:
    """The i-th malformed message of further kinds (huge strings and arrays, deep maps, JSON that is not
    an object, wrong scalar types, an empty value …); each is rejected by the codec with a reason."""
    good = event(i, event_id=f"bad2-{i}")
    kind = i % MALFORMED_MORE_KINDS
    if kind == 0:
        return b""  # empty
    if kind == 1:
        return msgpack.packb({**good, "capability": ["chat"] * 5_000})  # a big array where a string belongs
    if kind == 2:
        return msgpack.packb(list(range(rng.randint(1_000, 8_000))))  # a huge top-level array
    if kind == 3:
        # a map nested thousands deep, written by hand (msgpack's packer refuses depths over 511)
        return b"\x81\xa1a" * rng.randint(300, 5_000) + b"\xc0"
    if kind == 4:
        return msgpack.packb({**good, "event_id": "e" * 60_000})  # a huge string, yet under the size limit
    if kind == 5:
        return rng.choice([b"42", b'"a string"', b"null", b"true", b"[]", b"3.5"])  # JSON, not an object
    if kind == 6:
        return json.dumps({"schema_version": 1, "event_id": f"j-{i}"}).encode()  # JSON missing fields
    if kind == 7:
        return msgpack.packb({**good, "account_id": None})  # null where an id is required
    if kind == 8:
        return msgpack.packb({**good, "input_tokens": True})  # a boolean where a count belongs
    if kind == 9:
        return msgpack.packb({**good, "output_tokens": 1.5})  # a float where a count belongs
    if kind == 10:
        return msgpack.packb({**good, "input_tokens": 2**64 - 1})  # beyond int64
    if kind == 11:
        return msgpack.packb({**good, "account_id": b"\xff\xfe raw bytes"}, use_bin_type=True)  # bytes, not str
    if kind == 12:
        return msgpack.packb({**good, "model": msgpack.ExtType(5, b"xx")})  # a msgpack extension type
    if kind == 13:
        return msgpack.packb(good) + b"trailing"  # a valid event with junk after it
    if kind == 14:
        return msgpack.packb({**good, "ts": -1})  # a timestamp out of range
    return b"\x81" + b"\xa1a" * rng.randint(1, 50)  # a map header whose entries are cut short
