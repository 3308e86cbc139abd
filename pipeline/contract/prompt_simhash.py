"""The reference implementation of ``prompt_simhash``: the 64-bit SimHash a gateway computes of a prompt.

``docs/producers.md`` states the specification in words and ``schemas/examples/simhash/vectors.json``
holds test vectors that any implementation, in any language, must reproduce. Version 1, in four steps:

1. **Clean.** Drop every code point of general category ``Cc`` (control) or ``Cf`` (format: zero-width
   space, joiners, bidi marks, soft hyphen) that is not in :data:`WHITE_SPACE`, so invisible characters
   cannot make one prompt look like another.
2. **Normalise.** NFKC, then full Unicode case folding, then NFKC again (folding can leave a
   decomposed sequence, e.g. U+01F0 folds to ``j`` + U+030C), so compatibility forms (full-width letters,
   ligatures) and case do not matter.
3. **Whitespace.** Every maximal run of :data:`WHITE_SPACE` code points becomes one U+0020; leading and
   trailing space is removed. Punctuation, symbols and digits are kept.
4. **Hash.** The features are the text's shingles of :data:`SHINGLE` (5) consecutive code points, every
   occurrence counted; a non-empty text shorter than that is one feature, the whole text. A feature's
   hash is the first 8 bytes of SHA-256 of its UTF-8 encoding, read as a big-endian unsigned 64-bit
   integer. Bit ``i`` (``i`` = 0 is the least significant) of the SimHash is 1 when more features have
   bit ``i`` set than clear, and 0 otherwise (a tie is 0). An empty text (after steps 1–3) hashes to 0.

The SimHash travels as 16 lowercase hex digits of that integer (:func:`pipeline.contract.simhash.to_hex`).

Character shingles, not word shingles, so that languages written without spaces get the same treatment
as the others; five code points keep unrelated prompts far apart (about 29 of 64 bits on a corpus of
English technical text, 1st percentile 17) while a prompt with three words changed moves about 4 bits,
well inside the detector's ``template_radius`` (10).

>>> simhash_text("Hello,   World!") == simhash_text("hello, world!")
True
>>> simhash_text("")
'0000000000000000'
>>> normalise("\\uff21\\u200bb\\ufb01  \\u00df\\n")
'abfi ss'
"""

from __future__ import annotations

import hashlib
import unicodedata

import numpy as np

from pipeline.contract.simhash import to_hex

__all__ = ["SHINGLE", "VERSION", "WHITE_SPACE", "feature_hash", "features", "normalise", "simhash_text"]

VERSION = 1
"""The version of this specification; a change to any step is a new version, never an edit."""
SHINGLE = 5
"""Code points per feature."""
WHITE_SPACE = frozenset(
    [*range(0x09, 0x0E), 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029, 0x202F, 0x205F,
     0x3000]
)
"""The Unicode ``White_Space`` property (PropList.txt), spelt out so that every language agrees."""
_DROP = ("Cc", "Cf")


def normalise(text: str) -> str:
    """Steps 1 to 3: the text whose shingles are hashed."""
    kept = "".join(c for c in text if ord(c) in WHITE_SPACE or unicodedata.category(c) not in _DROP)
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", kept).casefold())
    out: list[str] = []
    space = False
    for c in folded:
        if ord(c) in WHITE_SPACE:
            space = True
            continue
        if space and out:
            out.append(" ")
        space = False
        out.append(c)
    return "".join(out)


def features(normalised: str) -> list[str]:
    """The shingles of an already normalised text, in order, repeats included."""
    if not normalised:
        return []
    if len(normalised) <= SHINGLE:
        return [normalised]
    return [normalised[i:i + SHINGLE] for i in range(len(normalised) - SHINGLE + 1)]


def feature_hash(feature: str) -> int:
    """First 8 bytes of SHA-256 of the feature's UTF-8 bytes, big-endian.

    >>> f"{feature_hash('hello'):016x}"
    '2cf24dba5fb0a30e'
    """
    return int.from_bytes(hashlib.sha256(feature.encode("utf-8")).digest()[:8], "big")


def simhash_text(text: str) -> str:
    """The ``prompt_simhash`` of a prompt text: 16 lowercase hex digits (steps 1 to 4)."""
    feats = features(normalise(text))
    if not feats:
        return to_hex(0)
    digests = b"".join(hashlib.sha256(f.encode("utf-8")).digest()[:8] for f in feats)
    hashes = np.frombuffer(digests, dtype=">u8")
    # bits[:, j] is bit 63 - j of each hash (unpackbits reads each big-endian byte most significant bit first)
    bits = np.unpackbits(hashes.view(np.uint8).reshape(-1, 8), axis=1)
    ones = bits.sum(axis=0, dtype=np.int64)
    value = 0
    for j, n in enumerate(ones.tolist()):
        if 2 * n > len(feats):
            value |= 1 << (63 - j)
    return to_hex(value)
