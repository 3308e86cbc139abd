"""64-bit SimHash bit helpers shared by the simulator and the detector: hex codec, Hamming distance, LSH bands.

A prompt SimHash travels as 16 lowercase hex characters. Near-duplicate prompts (one template, a few
words changed) differ in a few bits; unrelated prompts differ in about 32 of 64.

>>> hamming("00000000000000ff", "000000000000000f")
4
>>> [(key >> 64, key & 0xFFFF) for key in lsh_bands(0xFFFF, 4)]
[(0, 65535), (1, 0), (2, 0), (3, 0)]
"""

from __future__ import annotations

import numpy as np

BITS = 64
_MASK64 = (1 << BITS) - 1


def from_hex(h: str | int) -> int:
    """Parse a 16-hex-char SimHash (an int passes through unchanged)."""
    return h if isinstance(h, int) else int(h, 16)


def to_hex(h: int) -> str:
    """Format a 64-bit SimHash as 16 lowercase hex characters."""
    return f"{h & _MASK64:016x}"


def hamming(a: str | int, b: str | int) -> int:
    """Number of differing bits between two SimHashes (hex strings or ints)."""
    return (from_hex(a) ^ from_hex(b)).bit_count()


def lsh_bands(h: int | str, bands: int) -> list[int]:
    """Split a SimHash into ``bands`` contiguous bit bands, one bucket key per band.

    Each key carries its band index in the bits above the band value (``index << 64 | value``), so keys
    from different bands never collide and can share one bucket table. Two hashes that differ in fewer
    than ``bands`` bits share at least one key (pigeonhole).
    """
    if not 1 <= bands <= BITS:
        raise ValueError(f"bands must be in 1..{BITS}, got {bands}")
    value = from_hex(h)
    keys: list[int] = []
    start = 0
    for i in range(bands):
        width = BITS // bands + (1 if i < BITS % bands else 0)
        band = (value >> start) & ((1 << width) - 1)
        keys.append((i << BITS) | band)
        start += width
    return keys


def random_hashes(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` independent uniformly random 64-bit hashes (uint64), as for unrelated free-form prompts."""
    return rng.integers(0, np.iinfo(np.uint64).max, size=n, dtype=np.uint64, endpoint=True)


def flip_bits(rng: np.random.Generator, hashes: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Flip between ``lo`` and ``hi`` (inclusive) random bit positions of each hash (uint64 in, uint64 out).

    Positions are drawn with replacement, so a repeated position flips back: the distance is at most ``hi``.
    """
    n = len(hashes)
    if hi <= 0 or n == 0:
        return hashes.astype(np.uint64, copy=True)
    k = rng.integers(lo, hi, size=n, endpoint=True)
    pos = rng.integers(0, BITS, size=(n, hi), dtype=np.uint64)
    masks = np.left_shift(np.uint64(1), pos)
    masks[np.arange(hi)[None, :] >= k[:, None]] = 0
    return np.bitwise_xor(hashes.astype(np.uint64), np.bitwise_xor.reduce(masks, axis=1))


def hex_list(hashes: np.ndarray) -> list[str]:
    """Format an array of uint64 hashes as a list of 16-char hex strings."""
    return [f"{h:016x}" for h in hashes.tolist()]
