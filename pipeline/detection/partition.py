"""Kafka's default partitioner (murmur2 of the key bytes), so a backtest knows each account's partition."""

from __future__ import annotations


def murmur2(data: bytes) -> int:
    """32-bit murmur2 with Kafka's seed, as a signed Java int (the Java client's ``Utils.murmur2``)."""
    m, r = 0x5BD1E995, 24
    length = len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    i = 0
    while length - i >= 4:
        k = data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24)
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
        i += 4
    rest = length - i
    if rest == 3:
        h ^= data[i + 2] << 16
    if rest >= 2:
        h ^= data[i + 1] << 8
    if rest >= 1:
        h ^= data[i]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for a UTF-8 key."""
    return (murmur2(key.encode("utf-8")) & 0x7FFFFFFF) % partitions
