"""Reading one field of a stored state without decoding the rest."""

from __future__ import annotations

from typing import Any

import msgpack


def field_of(raw: bytes, index: int, versions: tuple[int, ...], what: str) -> Any:
    """Item ``index`` of a msgpack array whose item 0 is a version among ``versions``; the items before it
    are skipped, not built (a link group's hundreds of members, say), and the ones after it not read."""
    u = msgpack.Unpacker()
    u.feed(raw)
    u.read_array_header()
    version = u.unpack()
    if version not in versions:
        raise ValueError(f"{what} version {version} is not one of {versions}")
    for _ in range(index - 1):
        u.skip()
    return u.unpack()
