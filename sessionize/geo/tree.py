"""The search tree of a MaxMind DB, walked with numpy for many addresses at once.

See https://maxmind.github.io/MaxMind-DB/ for the format.
"""

from __future__ import annotations

import contextlib
import mmap
import threading
from typing import TYPE_CHECKING

from sessionize.geo._numpy import NumpyOnFirstUse

if TYPE_CHECKING:
    import numpy as np

    from sessionize.geo._numpy import I64, U8, U32, U64
else:
    np = NumpyOnFirstUse(globals())

# Prefix tables of the search tree: the node after the first bits of an address, for every pattern of
# them. A batch of fewer than _BIG_BATCH addresses uses 12 bits (4,096 nodes, under 1 ms to make); a
# bigger one makes the 20-bit table (4 MiB, ~30 ms) once, and every batch uses it from then on: most IPv4
# addresses then need 4 more steps, not 20 (with 16 bits the walk of 1M IPs took 2.4x as long).
_TABLE_BITS = (12, 20)
_BIG_BATCH = 100_000
_DATA_SEPARATOR = 16


class _SearchTree:
    """A database's binary search tree, read with numpy from its memory map: it walks many addresses
    at once, one bit of all of them a step (https://maxmind.github.io/MaxMind-DB/).

    A walk ends at ``node_count`` (no record), at a record's value (``node_count + 16 + offset`` in the
    data section), or, in a corrupt tree only, at a node after the last bit; the reader decides what
    the last two mean. Threads can share it: its prefix tables are made under a lock, and never change.
    """

    def __init__(self, data: U8, file: mmap.mmap, node_count: int, record_size: int, ip_version: int) -> None:
        self.node_count = node_count
        #: The whole file (the data section follows the tree).
        self.data = data
        self._file = file
        self.ip_version = ip_version
        self._record_size = record_size
        self._node_bytes = record_size // 4
        # Each record is read as the big-endian 32-bit word at its first byte: a view of the file as
        # overlapping words, one at every byte (the 16-byte separator follows the last node).
        self._words = np.ndarray(
            (node_count * self._node_bytes,), dtype=">u4", buffer=data, offset=0, strides=(1,)
        )
        # In an IPv6 tree, IPv4 addresses are ::a.b.c.d: start where 96 zero bits lead, as the reader.
        start = np.zeros(1, np.uint32)
        if ip_version == 6:
            start = self.walk(start, np.zeros(1, np.uint64), 64)
            start = self.walk(start, np.zeros(1, np.uint64), 32)
        self._starts = {4: int(start[0]), 6: 0}
        #: Prefix tables by (IP version, bits).
        self._tables: dict[tuple[int, int], U32] = {}
        self._tables_lock = threading.Lock()

    def release(self) -> None:
        """Let go of the pages of the file that the walks mapped (~60 MiB for DB-IP City Lite): they stay
        in the page cache, but no longer count in this process's RSS on top of the reader's own."""
        if hasattr(mmap, "MADV_DONTNEED"):
            with contextlib.suppress(OSError, ValueError):
                self._file.madvise(mmap.MADV_DONTNEED)

    def children(self, nodes: U32, bits: I64) -> U32:
        """The left (bit 0) or right (bit 1) record of each node."""
        at = nodes.astype(np.int64) * self._node_bytes
        if self._record_size == 24:
            word: U32 = (self._words[at + bits * 3] >> 8).astype(np.uint32)
            return word
        if self._record_size == 32:
            word = self._words[at + bits * 4].astype(np.uint32)
            return word
        # 28 bits: the middle byte's high nibble tops the left record, its low nibble the right one.
        word = self._words[at + bits * 3].astype(np.uint32)
        left = (word >> 8) | ((word & 0xF0) << 20)
        record: U32 = np.where(bits == 1, word & 0x0FFFFFFF, left).astype(np.uint32)
        return record

    def walk(self, nodes: U32, bits: U64, count: int) -> U32:
        """Follow the first ``count`` bits of ``bits`` (most significant first) from ``nodes``."""
        nodes = nodes.copy()
        active = np.flatnonzero(nodes < self.node_count)
        current, rest = nodes[active], bits[active]
        for _ in range(count):
            if not active.size:
                break
            current = self.children(current, (rest >> np.uint64(63)).astype(np.int64))
            rest = rest << np.uint64(1)
            inner = current < self.node_count
            if not inner.all():
                nodes[active[~inner]] = current[~inner]
                active, current, rest = active[inner], current[inner], rest[inner]
        nodes[active] = current
        return nodes

    def prefix_table(self, version: int, batch: int) -> tuple[int, U32]:
        """The prefix table (and its bits) for a batch of ``batch`` IPv4 or IPv6 addresses."""
        small, big = _TABLE_BITS
        bits = big if batch >= _BIG_BATCH or (version, big) in self._tables else small
        table = self._tables.get((version, bits))
        if table is None:
            with self._tables_lock:
                table = self._tables.get((version, bits))
                if table is None:
                    table = self._tables[version, bits] = self._walk_all(self._starts[version], bits)
        return bits, table

    def _walk_all(self, start: int, bits: int) -> U32:
        """The node (or record) after each of the 2**bits first bit patterns from ``start``."""
        level = np.array([start], dtype=np.uint32)
        for _ in range(bits):
            pair = np.column_stack([level, level])
            inner = np.flatnonzero(level < self.node_count)
            for bit in (0, 1):
                pair[inner, bit] = self.children(level[inner], np.full(inner.size, bit, np.int64))
            level = pair.reshape(-1)
        return level

    def lookup_v4(self, values: U32) -> U32:
        """The record (or node_count) of each IPv4 address."""
        bits, table = self.prefix_table(4, values.size)
        nodes = table[values >> (32 - bits)]
        return self.walk(nodes, values.astype(np.uint64) << np.uint64(32 + bits), 32 - bits)

    def lookup_v6(self, hi: U64, lo: U64) -> U32:
        """The record (or node_count) of each IPv6 address, given as its high and low 64 bits."""
        bits, table = self.prefix_table(6, hi.size)
        nodes = self.walk(
            table[(hi >> np.uint64(64 - bits)).astype(np.intp)], hi << np.uint64(bits), 64 - bits
        )
        return self.walk(nodes, lo, 64)
