"""Privacy: raw prompt or completion text never reaches state, logs or output topics.

Valid events are safe by construction: the codec keeps only the contract's fields (sizes, labels,
fingerprints), so a ``prompt``, ``completion`` or ``messages`` field an upstream producer adds by mistake
is dropped before anything is stored. Invalid events go to the dead-letter topic with their original
bytes by design; deployments that must not keep such text there set ``DG_DLQ_REDACT_TEXT`` and the DLQ
copy has these fields removed (and a ``dlq.redacted`` header says so).
"""

from __future__ import annotations

import json
from typing import Any

import msgpack

TEXT_FIELDS = frozenset({"prompt", "prompts", "completion", "completions", "messages", "content", "text",
                         "system", "input", "output", "response"})


def redact(raw: bytes) -> tuple[bytes, bool]:
    """``raw`` without top-level text fields (msgpack or JSON map); (bytes, whether anything was removed).

    Anything that does not parse as a map is returned unchanged: it carries no field names to judge by.
    """
    obj: Any
    is_json = raw.lstrip()[:1] in (b"{", b"[")
    try:
        obj = json.loads(raw) if is_json else msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except Exception:  # unparseable input cannot be redacted field by field
        return raw, False
    if not isinstance(obj, dict):
        return raw, False
    kept = {k: v for k, v in obj.items() if not (isinstance(k, str) and k.lower() in TEXT_FIELDS)}
    if len(kept) == len(obj):
        return raw, False
    if is_json:
        return json.dumps(kept, separators=(",", ":")).encode("utf-8"), True
    return msgpack.packb(kept, use_bin_type=True), True
