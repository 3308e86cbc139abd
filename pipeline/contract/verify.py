"""What ``python -m pipeline verify`` checks of enforcement actions: everything a consumer must, per action.

- the JSON Schema of EnforcementAction v1;
- the signature, under the current key or one of the previous ones (:func:`pipeline.contract.signing.check`);
- enforce mode: the key that signed it is not a development key and is at least 32 bytes
  (:func:`pipeline.contract.signing.enforce_key_problem`), and it is no replay (``policy_version`` ending in
  ``+replay``: a backtest's actions are shadow only);
- freshness against ``now``: an action whose ``expires_ts`` has passed fails, and so does one older than
  ``max_age_ms`` or more than ``FUTURE_SKEW_MS`` ahead of ``now``;
- the encoding: a map with a key twice fails (a consumer keeping the first ``action`` and one keeping the
  last would act differently), in JSON and in msgpack alike.

Input is JSONL, one JSON object, or concatenated msgpack maps (the topic's own format), told apart by the
first byte. A line of ``python -m pipeline tail`` stands for its message: the action is its value (from
its raw bytes when tail could not decode them), named by its partition and offset.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgpack

from pipeline.contract import schemas, signing

FUTURE_SKEW_MS = 5 * 60_000
"""How far ahead of ``now`` an action's ``ts`` may be (clock differences between hosts)."""


class DuplicateKey(ValueError):
    """A map that names a key twice: readers keeping the first or the last value would disagree."""


def unique_keys(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    """A map from its pairs (``object_pairs_hook`` of json and msgpack); :class:`DuplicateKey` on a key
    named twice."""
    out: dict[Any, Any] = {}
    for k, v in pairs:
        if k in out:
            raise DuplicateKey(f"duplicate key {k!r}" if isinstance(k, str) and len(k) <= 64 else "duplicate key")
        out[k] = v
    return out


TAIL_FIELDS = frozenset({"topic", "partition", "offset", "value"})
"""The fields that make a JSON object a line of ``tail``'s output rather than an action."""


def _from_tail(where: str, obj: Any, key_ids: dict[str, str] | None = None) -> tuple[str, Any]:
    """A ``tail`` line as (its message's partition and offset, the action in it); anything else unchanged.
    The line's ``dg.signing-key-id`` header, if any, goes into ``key_ids`` under the returned ``where``."""
    if not (isinstance(obj, dict) and obj.keys() >= TAIL_FIELDS and "action_id" not in obj):
        return where, obj
    where = f"{where} ({obj['topic']} partition {obj['partition']} offset {obj['offset']})"
    if key_ids is not None:
        for header in obj.get("headers") or []:
            if isinstance(header, list) and len(header) == 2 and header[0] == signing.KEY_ID_HEADER:
                key_ids[where] = header[1] if isinstance(header[1], str) else "(not text)"
    raw = obj.get("value_b64")
    if isinstance(raw, str):  # tail could not decode it: judge the bytes themselves, as a consumer would
        try:
            inner = list(parse_records(base64.b64decode(raw, validate=True)))
        except ValueError:
            return where, ValueError("value_b64 is not base64")
        if len(inner) == 1:
            return where, inner[0][1]
        return where, ValueError(str(obj.get("error") or "not one message"))
    if obj["value"] is None:
        return where, ValueError("no value (a tombstone)")
    return where, obj["value"]


def parse_records(data: bytes, key_ids: dict[str, str] | None = None) -> Iterator[tuple[str, Any]]:
    """(where, object or the exception that stopped it) per record: JSONL, one JSON object, or msgpack.
    ``key_ids`` collects the key-id header of each ``tail`` line that has one, by ``where``."""
    stripped = data.lstrip()
    if not stripped:
        return
    if stripped[:1] != b"{":
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, object_pairs_hook=unique_keys,
                                    max_buffer_size=max(len(data), 1))
        unpacker.feed(data)
        n = 0
        try:
            for obj in unpacker:
                n += 1
                yield f"record {n}", obj
        except DuplicateKey as exc:
            yield f"record {n + 1}", exc
        except Exception as exc:  # the rest of the stream cannot be framed
            yield f"record {n + 1}", ValueError(f"not msgpack: {type(exc).__name__}")
        return
    text = data.decode("utf-8", errors="replace")
    try:  # a single JSON object (possibly spread over lines) ...
        whole = json.loads(text, object_pairs_hook=unique_keys)
        if isinstance(whole, dict):
            yield _from_tail("line 1", whole, key_ids)
            return
    except DuplicateKey as exc:
        try:
            single = isinstance(json.loads(text), dict)  # one object (with a key twice), not JSONL
        except ValueError:
            single = False
        if single:
            yield "line 1", exc
            return
    except ValueError:
        pass
    for lineno, line in enumerate(text.splitlines(), 1):  # ... or JSONL, one action per line
        if line.strip():
            try:
                yield _from_tail(f"line {lineno}", json.loads(line, object_pairs_hook=unique_keys), key_ids)
            except DuplicateKey as exc:
                yield f"line {lineno}", exc
            except ValueError as exc:
                yield f"line {lineno}", ValueError(f"not JSON: {exc}")


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Result:
    where: str
    problems: list[str] = field(default_factory=list)
    key_name: str = ""
    replay: bool = False


def check(obj: Any, keys: Mapping[str, bytes], now_ms: int, max_age_ms: int | None = None,
          where: str = "", key_id: str | None = None) -> Result:
    """The :class:`Result` of one record: ``obj`` is a decoded action, or the error that stopped decoding."""
    res = Result(where)
    if isinstance(obj, DuplicateKey):
        res.problems.append(f"{obj}: a consumer could read either value")
        return res
    if isinstance(obj, Exception):
        res.problems.append(str(obj))
        return res
    # v2 is a lift (it ends earlier actions); every other action is v1
    schema_v: int = obj["schema_version"] if isinstance(obj, dict) and obj.get("schema_version") in (1, 2) else 1
    res.problems += [f"schema: {e}" for e in schemas.errors("enforcement_action", obj, schema_v)[:3]]
    if not isinstance(obj, dict):
        return res
    res.where += f" action_id={obj.get('action_id')!r} account_id={obj.get('account_id')!r}"
    try:
        res.key_name = signing.check(obj, keys)
    except signing.SignatureError as exc:
        res.problems.append(str(exc))
    if key_id is not None:
        res.problems += _key_id_problems(key_id, keys, res.key_name)
    version = obj.get("policy_version")
    res.replay = isinstance(version, str) and version.endswith(signing.REPLAY_MARK)
    if obj.get("mode") == "enforce":
        if res.replay:
            res.problems.append("a replay's action in enforce mode: replays are shadow only")
        if res.key_name:
            problem = signing.enforce_key_problem(keys[res.key_name])
            if problem:
                res.problems.append(f"enforce mode, but the key that signed it cannot sign enforcement: {problem}")
    ts, expires = obj.get("ts"), obj.get("expires_ts")
    if type(expires) is int and expires <= now_ms:
        res.problems.append(f"expired at {_when(expires)} (now {_when(now_ms)})")
    if type(ts) is int:
        if max_age_ms is not None and ts < now_ms - max_age_ms:
            res.problems.append(f"too old: issued {_when(ts)}, more than --max-age before now ({_when(now_ms)})")
        if ts > now_ms + FUTURE_SKEW_MS:
            res.problems.append(f"issued in the future: {_when(ts)} (now {_when(now_ms)})")
    return res


def _key_id_problems(header: str, keys: Mapping[str, bytes], signed_by: str) -> list[str]:
    """What is wrong with an action's key-id header (:data:`signing.KEY_ID_HEADER`), given the keys held
    and the name of the one its signature matched (empty if none did)."""
    ids = {signing.key_id(k): name for name, k in keys.items()}
    for name, k in keys.items():
        if k == signing.DEV_SIGNING_KEY:  # a worker without DG_SIGNING_KEY names its key "development"
            ids[signing.DEVELOPMENT_KEY_ID] = name
    named = ids.get(header)
    if named is None:
        held = ", ".join(f"{name} {signing.key_id(k)}" for name, k in keys.items())
        return [f"its {signing.KEY_ID_HEADER} header names key {header!r}, none of the keys held ({held}): "
                "the worker signs with a key this check was not given"]
    if signed_by and named != signed_by:
        return [f"signed with the {signed_by} key, but its {signing.KEY_ID_HEADER} header names the {named} key"]
    return []


def parse_duration(text: str) -> int:
    """Milliseconds from ``90s``, ``15m``, ``24h``, ``7d`` or a plain number of seconds."""
    t = text.strip().lower()
    units = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
    for suffix in ("ms", "s", "m", "h", "d"):
        if t.endswith(suffix) and t[: -len(suffix)].replace(".", "", 1).isdigit():
            return int(float(t[: -len(suffix)]) * units[suffix])
    if t.replace(".", "", 1).isdigit():
        return int(float(t) * 1000)
    raise ValueError(f"not a duration: {text!r} (e.g. 90s, 15m, 24h, 7d)")
