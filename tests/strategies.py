"""Hypothesis strategies for wire messages, shared by the test tiers (``from tests.strategies import ...``)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from pipeline.contract.models import (
    ASN_MAX,
    CAPABILITIES,
    INT64_MAX,
    STATUSES,
    TIERS,
    TS_MAX_EXCLUSIVE,
    USAGE_EVENT_FIELDS,
    USAGE_EVENT_REQUIRED,
    UsageEvent,
)

ids = st.text(min_size=1, max_size=128)
counts = st.integers(min_value=0, max_value=INT64_MAX)
small_counts = st.integers(min_value=0, max_value=200_000)
timestamps = st.integers(min_value=1, max_value=TS_MAX_EXCLUSIVE - 1)
simhashes = st.integers(min_value=0, max_value=2**64 - 1).map(lambda h: f"{h:016x}")
ip_prefixes = st.one_of(
    st.tuples(*[st.integers(0, 255)] * 3).map(lambda t: f"{t[0]}.{t[1]}.{t[2]}.0/24"),
    st.tuples(*[st.integers(0, 0xFFFF)] * 3).map(lambda t: f"{t[0]:x}:{t[1]:x}:{t[2]:x}::/48"),
)


def _optional(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | values


def _value_strategies(account_id: st.SearchStrategy[str], ts: st.SearchStrategy[int]) -> dict[str, Any]:
    return {
        "schema_version": st.just(1),
        "event_id": ids,
        "ts": ts,
        "account_id": account_id,
        "model": ids,
        "input_tokens": st.one_of(small_counts, counts),
        "output_tokens": st.one_of(small_counts, counts),
        "status": st.sampled_from(sorted(STATUSES)),
        "org_id": _optional(st.text(max_size=64)),
        "api_key_id": _optional(st.text(max_size=64)),
        "endpoint": _optional(st.sampled_from(["messages", "batch", "completions"]) | st.text(max_size=20)),
        "latency_ms": _optional(small_counts),
        "ip_prefix": _optional(ip_prefixes),
        "asn": _optional(st.integers(0, ASN_MAX)),
        "client_fingerprint": _optional(st.text(max_size=64)),
        "payment_fingerprint": _optional(st.text(max_size=64)),
        "account_tier": _optional(st.sampled_from(sorted(TIERS))),
        "country": _optional(st.sampled_from(["US", "NL", "DE", "CN", "IN", "BR"])),
        "prompt_simhash": _optional(simhashes),
        "prompt_chars": _optional(small_counts),
        "n_turns": _optional(st.integers(min_value=1, max_value=INT64_MAX)),
        "n_tools": _optional(st.integers(min_value=0, max_value=64)),
        "reasoning_requested": _optional(st.booleans()),
        "capability": _optional(st.sampled_from(sorted(CAPABILITIES))),
        "language": _optional(st.sampled_from(["en", "zh", "fr", "de", "es"])),
    }


def usage_events(
    account_id: st.SearchStrategy[str] | None = None, ts: st.SearchStrategy[int] | None = None
) -> st.SearchStrategy[UsageEvent]:
    """Valid UsageEvents as the codec returns them: every field present, in contract order, optional ones
    sometimes None. Pass ``account_id`` / ``ts`` strategies to narrow those fields."""
    values = _value_strategies(account_id or ids, ts or timestamps)
    return st.fixed_dictionaries({name: values[name] for name in USAGE_EVENT_FIELDS})  # type: ignore[return-value]


@st.composite
def usage_event_maps(draw: st.DrawFn) -> dict[str, Any]:
    """Valid UsageEvent maps as a producer may send them: optional fields sometimes left out, unknown extra
    fields sometimes added. Decoding one gives ``usage_events``-style output."""
    event = dict(draw(usage_events()))
    for name in USAGE_EVENT_FIELDS:
        if name not in USAGE_EVENT_REQUIRED and draw(st.booleans()):
            del event[name]
    extra = draw(
        st.dictionaries(
            st.text(max_size=20).filter(lambda k: k not in USAGE_EVENT_FIELDS),
            st.none() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=20) | st.lists(st.booleans()),
            max_size=3,
        )
    )
    event.update(extra)
    return event


msgpack_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.binary(max_size=40)
)

#: Arbitrary msgpack-encodable values, nested.
msgpack_values = st.recursive(
    msgpack_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)
