"""Privacy: raw prompt or completion text never reaches state, logs, DLQ reasons or output topics.

Valid events are safe by construction: the codec keeps only the contract's fields (sizes, labels,
fingerprints), so a ``prompt``, ``completion`` or ``messages`` field an upstream producer adds by mistake
is dropped before anything is stored. Invalid events go to the dead-letter topic, and their copy there is
redacted by default (``DG_DLQ_REDACT_TEXT``, on unless turned off); a ``dlq.redacted`` header says so.
Redaction judges two things, at every depth of maps and lists:

- the *name* of a field: any key that contains ``prompt``, ``content``, ``text``, ``message``,
  ``completion``, ``response``, ``instruction``, ``system``, ``input``, ``output``, ``query``,
  ``question``, ``answer``, ``transcript`` or ``conversation`` (case-insensitive: ``user_prompt``,
  ``promptText``, ``request.messages[].content``), except the UsageEvent contract's own field names
  (``input_tokens``, ``prompt_chars`` …), which carry sizes, not text;
- the *shape* of a string, whatever its field: free text (:func:`looks_like_text`: at least
  ``TEXT_MIN_CHARS`` characters with at least two spaces) is replaced too.

A value that does not parse as JSON or msgpack (or parses as a scalar) has no fields: its runs of
free-text-shaped bytes are replaced in place, so the rest stays readable for debugging.

Redaction markers name the type and the size only: ``"[redacted: string of 57 chars]"``.

>>> out, changed = redact(b'{"ts": 1, "request": {"messages": [{"role": "user", "content": "hi"}]}}')
>>> changed, out
(True, b'{"ts":1,"request":{"messages":"[redacted: list of 1 items]"}}')
>>> looks_like_text("explain your chain of thought"), looks_like_text("a-b-c"), describe("hello there")
(True, False, 'string of 11 chars')
"""

from __future__ import annotations

import json
import re
from typing import Any

import msgpack

from pipeline.contract.models import USAGE_EVENT_FIELDS

TEXT_NAME = re.compile(
    r"prompt|content|text|message|completion|response|instruction|system|input|output|query|question|answer"
    r"|transcript|conversation",
    re.IGNORECASE,
)
"""A field whose name contains one of these words may hold raw text."""
CONTRACT_FIELDS = frozenset(USAGE_EVENT_FIELDS)
"""Field names of the contract: sizes, labels and fingerprints, judged by the shape of their value only."""
TEXT_MIN_CHARS = 24
"""A string at least this long with at least two spaces counts as free text."""
_TEXT_RUN = re.compile(rb"[^\x00-\x1f\"\\{}\[\]]{%d,}" % TEXT_MIN_CHARS)
"""A run of printable bytes in unparseable input (JSON punctuation and control bytes end a run)."""
_TOKEN = re.compile(r"[A-Za-z0-9_.:+\-/]{0,32}")


def looks_like_text(s: str) -> bool:
    """Whether ``s`` has the shape of free text: long, with spaces between words."""
    return len(s) >= TEXT_MIN_CHARS and s.count(" ") >= 2


def is_text_field(name: Any) -> bool:
    """Whether a field of this name may hold raw text (see the module docstring)."""
    return isinstance(name, str) and name not in CONTRACT_FIELDS and TEXT_NAME.search(name) is not None


def describe(v: Any) -> str:
    """A value by its type and size alone, for DLQ reasons and redaction markers."""
    if isinstance(v, str):
        return f"string of {len(v)} chars"
    if isinstance(v, bytes | bytearray):
        return f"bytes of {len(v)}"
    if isinstance(v, list | tuple):
        return f"list of {len(v)} items"
    if isinstance(v, dict):
        return f"map of {len(v)} fields"
    return type(v).__name__


def is_token(s: str) -> bool:
    """Whether ``s`` is a short token (an enum value, a code), which a reason may quote: at most 32 of
    ``A-Z a-z 0-9 _ . : + - /``, so never free text."""
    return _TOKEN.fullmatch(s) is not None


def _marker(v: Any) -> str:
    return f"[redacted: {describe(v)}]"


def _scrub(obj: Any) -> tuple[Any, bool]:
    """``obj`` with text fields and free-text strings replaced, at every depth; (value, changed)."""
    if isinstance(obj, dict):
        out: dict[Any, Any] = {}
        changed = False
        for k, v in obj.items():
            if is_text_field(k) and v is not None:
                out[k], changed = _marker(v), True
                continue
            out[k], c = _scrub(v)
            changed = changed or c
        return out, changed
    if isinstance(obj, list):
        items = [_scrub(v) for v in obj]
        return [v for v, _ in items], any(c for _, c in items)
    if isinstance(obj, str) and looks_like_text(obj):
        return _marker(obj), True
    if isinstance(obj, bytes) and looks_like_text(obj.decode("utf-8", "replace")):
        return _marker(obj), True
    return obj, False


def _scrub_bytes(raw: bytes) -> tuple[bytes, bool]:
    """Unparseable input: each run of printable bytes with the shape of free text replaced in place."""
    def sub(m: re.Match[bytes]) -> bytes:
        run = m.group(0)
        if run.count(b" ") < 2:
            return run
        return f"[redacted: {len(run)} bytes]".encode("ascii")

    out = _TEXT_RUN.sub(sub, raw)
    return out, out != raw


def redact(raw: bytes) -> tuple[bytes, bool]:
    """``raw`` with raw text removed (see the module docstring); (bytes, whether anything was removed).

    A JSON value comes back as compact JSON, a msgpack value as msgpack, anything else as the same bytes
    with free-text runs replaced."""
    obj: Any
    is_json = raw.lstrip()[:1] in (b"{", b"[", b'"')
    try:
        obj = json.loads(raw) if is_json else msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except Exception:  # unparseable: judge the bytes by shape
        return _scrub_bytes(raw)
    if not isinstance(obj, dict | list | str | bytes):
        return _scrub_bytes(raw)
    kept, changed = _scrub(obj)
    if not changed:
        return raw, False
    if is_json:
        return json.dumps(kept, separators=(",", ":"), ensure_ascii=False).encode("utf-8"), True
    return msgpack.packb(kept, use_bin_type=True), True
