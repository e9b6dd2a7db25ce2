"""The geo columns of many records of a MaxMind DB, read from its data section with numpy.

The ``maxminddb`` reader decodes a whole record into Python objects: a DB-IP City Lite record holds
about 40 (the continent's and country's names in ten languages, the location...), 6 µs a record, and a
lookup of 1M addresses meets 74k records. The geo columns need four texts of each: the English names
of its city, first subdivision and country, and the country's ISO code. :func:`record_rows` walks all
the records at once, one map entry of every record a step, and follows only the keys those texts are
under; the cities, subdivisions and countries (shared by many records, through pointers) are read once
each. Values on the way are skipped by their structure (types, sizes, bounds and pointers checked), not
decoded.

Anything but the usual shape (a record or entity that is not a map, a name that is not text, a map
key that is not text, invalid UTF-8 in a text read, a value that does not fit in the data section, very
long maps or deep values) leaves the record to the reader, which answers (or reports the database
corrupt) as :meth:`~sessionize.geo.database.GeoDatabase.lookup` does. What a run does not read is not
checked: the texts of values skipped, the targets of pointers skipped (a target past a valid first byte,
a cycle of pointers), the subdivisions after the first, and the record's total size and depth as the
reader counts them. So a record whose unused parts alone are corrupt is read here, where the reader
reports the file corrupt. The tests compare the rows
with the records maxminddb's own decoder gives, for every record of MaxMind's test databases and for
records of any shape. The format: https://maxmind.github.io/MaxMind-DB/.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from sessionize.geo._numpy import NumpyOnFirstUse
from sessionize.geo.columns import NOT_FOUND, RESOLVED

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from sessionize.geo._numpy import I64, U8, Mask
else:
    np = NumpyOnFirstUse(globals())

# The data types of the format, by number.
_POINTER, _UTF8, _DOUBLE, _BYTES, _UINT16, _UINT32, _MAP, _INT32, _UINT64, _UINT128, _ARRAY = range(1, 12)
_BOOLEAN, _FLOAT = 14, 15
#: The payload size each number type may have (doubles and floats exactly, integers at most).
_EXACT_SIZE: Final = {_DOUBLE: 8, _FLOAT: 4}
_MOST_SIZE: Final = {_UINT16: 2, _UINT32: 4, _INT32: 4, _UINT64: 8, _UINT128: 16}
#: Most entries of a map walked, and most tokens of one value skipped: beyond, the reader decides. Real
#: records have a dozen keys, and their longest inline values (a continent or country with its names in
#: ten languages) about 30 tokens; the bounds keep a crafted file's walk to 3 x 32 x 64 numpy steps.
_MOST_ENTRIES: Final = 32
_MOST_TOKENS: Final = 64
#: The longest name read here (the reader allows texts of up to 2 MiB in a record): longer, the reader
#: decides.
_MOST_TEXT: Final = 1 << 16

#: A row for a record the reader must decode.
Row = tuple[str | None, str | None, str | None, str | None, str]


class _Section:
    """A data section as bytes (``data[start:end]``, a view of the file), read many values at once.

    Positions are of the file. Each step takes a mask, ``odd``, of the lanes (values) that are read,
    and sets it where a value is not of the usual shape; the caller leaves those to the reader.
    """

    def __init__(self, data: U8, start: int, end: int) -> None:
        self.data, self.start, self.end = data, start, end
        #: The 8 bytes from each position as a big-endian word (overlapping views of the file).
        self.words = np.ndarray((max(data.size - 7, 1),), dtype=">u8", buffer=data, offset=0, strides=(1,))

    def token(self, at: I64, odd: Mask) -> tuple[I64, I64, I64]:
        """The type, size and payload position of the value at each position.

        For a pointer, the size is the position it points at and the payload the position after it.
        A value whose control bytes are not all in the section sets ``odd``.
        """
        inside = (at >= self.start) & (at < self.end)
        odd |= ~inside
        # The control byte and the 7 after it (at most 5 are read: extended type and size, or pointer),
        # as one big-endian word, read at once.
        word = self.words[np.minimum(np.where(inside, at, self.start), self.words.size - 1)].astype(np.uint64)
        control = (word >> np.uint64(56)).astype(np.int64)
        kind = control >> 5
        size = control & 31
        payload = at + 1
        extended = np.flatnonzero(kind == 0)
        if extended.size:
            # An extended type's number is 7 plus the next byte (8 to 15).
            kind[extended] = 7 + _byte(word[extended], 1)
            payload[extended] += 1
            odd[extended] |= (kind[extended] < 8) | (kind[extended] > 15)
        pointer = kind == _POINTER
        longer = np.flatnonzero((size >= 29) & ~pointer)
        if longer.size:
            # Sizes from 29 on take 1, 2 or 3 more bytes, after the type's.
            extra = size[longer] - 28
            first = payload[longer] - at[longer]
            b = [_byte(word[longer], first + i) for i in range(3)]
            size[longer] = np.select(
                [extra == 1, extra == 2],
                [29 + b[0], 285 + ((b[0] << 8) | b[1])],
                65821 + ((b[0] << 16) | (b[1] << 8) | b[2]),
            )
            payload[longer] += extra
        pointers = np.flatnonzero(pointer)
        if pointers.size:
            # A pointer's size bits are its length (1-4 more bytes) and its top value bits.
            bits = control[pointers]
            length, high = (bits >> 3) & 3, bits & 7
            p = [_byte(word[pointers], 1 + i) for i in range(4)]
            value = np.select(
                [length == 0, length == 1, length == 2],
                [
                    (high << 8) | p[0],
                    ((high << 16) | (p[0] << 8) | p[1]) + 2048,
                    ((high << 24) | (p[0] << 16) | (p[1] << 8) | p[2]) + 526336,
                ],
                (p[0] << 24) | (p[1] << 16) | (p[2] << 8) | p[3],
            )
            size[pointers] = self.start + value
            payload[pointers] = at[pointers] + 2 + length
        # The bytes read must be in the section (a value's payload is checked where it is read).
        odd |= payload > self.end
        return kind, size, payload

    def resolve(self, at: I64, odd: Mask) -> tuple[I64, I64, I64, I64]:
        """The value at each position, a pointer followed: its type, size and payload position, and
        where the next value starts if this one was a pointer (else -1)."""
        kind, size, payload = self.token(at, odd)
        pointer = kind == _POINTER
        next_at = np.where(pointer, payload, -1)
        if pointer.any():
            target = np.where(pointer, size, at)
            t_kind, t_size, t_payload = self.token(target, odd)
            odd |= pointer & (t_kind == _POINTER)  # a pointer to a pointer is not valid
            kind = np.where(pointer, t_kind, kind)
            size = np.where(pointer, t_size, size)
            payload = np.where(pointer, t_payload, payload)
        return kind, size, payload, next_at

    def skip(self, at: I64, odd: Mask) -> I64:
        """The position after the value at each position (a pointer is not followed, but checked)."""
        end = at.copy()
        lanes = np.arange(at.size)
        pending = np.ones(at.size, np.int64)
        bad = np.zeros(at.size, bool)
        for _ in range(_MOST_TOKENS):
            if not lanes.size:
                break
            seen = bad[lanes]
            kind, size, payload = self.token(end[lanes], seen)
            pointer = kind == _POINTER
            if pointer.any():
                target_kind = self.token(np.where(pointer, size, end[lanes]), seen)[0]
                seen |= pointer & (target_kind == _POINTER)
            inline = (kind == _UTF8) | (kind == _BYTES) | np.isin(kind, list(_MOST_SIZE) + list(_EXACT_SIZE))
            for number, most in _MOST_SIZE.items():
                seen |= (kind == number) & (size > most)
            for number, exact in _EXACT_SIZE.items():
                seen |= (kind == number) & (size != exact)
            seen |= (kind == _BOOLEAN) & (size > 1)
            seen |= ~(inline | pointer | (kind == _MAP) | (kind == _ARRAY) | (kind == _BOOLEAN))
            seen |= inline & (payload + size > self.end)
            end[lanes] = np.where(inline, payload + size, payload)
            pending[lanes] += np.select([kind == _MAP, kind == _ARRAY], [2 * size, size], 0) - 1
            bad[lanes] = seen
            lanes = lanes[(pending[lanes] > 0) & ~seen]
        bad[lanes] = True  # too long: the reader decides
        odd |= bad
        return end

    def text_at(self, at: I64, odd: Mask) -> tuple[I64, I64, I64]:
        """The payload position and length of the text at each position (a pointer followed), and
        where the next value starts; a value that is not text sets ``odd``."""
        kind, size, payload, next_at = self.resolve(at, odd)
        odd |= (kind != _UTF8) | (payload + size > self.end)
        return payload, size, np.where(next_at >= 0, next_at, payload + size)

    def find(self, maps: I64, keys: Sequence[bytes], odd: Mask) -> I64:
        """The position of each key's value (a pointer followed) in each map (-1: none), or -1: an
        array of ``len(keys)`` rows. A value that is not a map sets ``odd``; of keys given twice the
        last counts, as in the dict the reader makes."""
        found = np.full((len(keys), maps.size), -1, np.int64)
        lanes = np.flatnonzero(maps >= 0)
        seen = odd[lanes]
        kind, count, at, _ = self.resolve(maps[lanes], seen)
        seen |= (kind != _MAP) | (count > _MOST_ENTRIES)
        odd[lanes] = seen
        keep = ~seen & (count > 0)
        lanes, at, count = lanes[keep], at[keep], count[keep]
        wanted = [(row, len(key), np.frombuffer(key, np.uint8)) for row, key in enumerate(keys)]
        while lanes.size:
            seen = odd[lanes]
            key_at, key_size, after_key = self.text_at(at, seen)
            value_kind, value_size, value_payload = self.token(after_key, seen)
            pointer = value_kind == _POINTER
            value_at = np.where(pointer, value_size, after_key)
            after_value = value_payload.copy()
            if pointer.any():
                target_kind = self.token(np.where(pointer, value_at, after_key), seen)[0]
                seen |= pointer & (target_kind == _POINTER)  # a pointer to a pointer is not valid
            direct = np.flatnonzero(~pointer & ~seen)
            if direct.size:
                direct_seen = seen[direct]
                after_value[direct] = self.skip(after_key[direct], direct_seen)
                seen[direct] = direct_seen
            for row, length, key in wanted:
                candidates = np.flatnonzero((key_size == length) & ~seen)
                if candidates.size:
                    stored = self.data[key_at[candidates, None] + np.arange(length)]
                    candidates = candidates[(stored == key).all(axis=1)]
                    found[row, lanes[candidates]] = value_at[candidates]
            odd[lanes] = seen
            count = count - 1
            keep = (count > 0) & ~seen
            lanes, at, count = lanes[keep], after_value[keep], count[keep]
        return found


def _byte(words: npt.NDArray[np.uint64], index: I64 | int) -> I64:
    """Byte ``index`` (0: the first) of each big-endian word."""
    shift = (56 - 8 * np.asarray(index)).astype(np.uint64)
    return ((words >> shift) & np.uint64(0xFF)).astype(np.int64)


def record_rows(data: U8, start: int, end: int, positions: I64) -> list[Row | None]:
    """The geo columns and status of the record at each file position, as
    :func:`~sessionize.geo.columns._record_values` gives them, or ``None`` where the reader must
    decode the record (see the module's docstring). ``data[start:end]`` is the data section."""
    section = _Section(data, start, end)
    n = positions.size
    positions = positions.astype(np.int64)
    odd = positions < start  # (find reads -1 as no map)
    keys = (b"city", b"country", b"subdivisions")
    city, country, subdivisions = section.find(np.where(odd, -1, positions), keys, odd)
    # The first (most general) subdivision: the array's first element.
    first = np.full(n, -1, np.int64)
    has = np.flatnonzero(subdivisions >= 0)
    if has.size:
        seen = odd[has]
        kind, size, payload, _ = section.resolve(subdivisions[has], seen)
        seen |= kind != _ARRAY
        first[has] = np.where((size > 0) & ~seen, payload, -1)
        odd[has] = seen
    # Each city, subdivision and country once (-1: none), then each names map once.
    roles = np.stack([city, first, country])
    entities, entity_of = np.unique(roles, return_inverse=True)
    entity_of = entity_of.reshape(roles.shape)
    entity_odd = np.zeros(entities.size, bool)
    names, iso = section.find(entities, (b"names", b"iso_code"), entity_odd)
    name_maps, names_of = np.unique(names, return_inverse=True)
    names_of = names_of.reshape(-1)
    names_odd = np.zeros(name_maps.size, bool)
    english_at = section.find(name_maps, (b"en",), names_odd)[0][names_of]
    english, english_odd = _texts(section, english_at)
    codes, codes_odd = _texts(section, iso)
    entity_odd |= names_odd[names_of] | english_odd
    # Every role reads the English name; only the country's ISO code is read.
    odd |= entity_odd[entity_of].any(axis=0) | codes_odd[entity_of[2]]
    rows: list[Row | None] = []
    for is_odd, c, r, k in zip(odd.tolist(), *(role.tolist() for role in entity_of), strict=True):
        if is_odd:
            rows.append(None)
        else:
            values = (english[c], english[r], english[k], codes[k])
            rows.append((*values, RESOLVED if any(values) else NOT_FOUND))
    return rows


def _texts(section: _Section, at: I64) -> tuple[list[str | None], Mask]:
    """The text at each position (-1: none), and whether it is not valid text (odd)."""
    texts: list[str | None] = [None] * at.size
    odd = np.zeros(at.size, bool)
    present = np.flatnonzero(at >= 0)
    if present.size:
        seen = odd[present]
        payload, size, _ = section.text_at(at[present], seen)
        odd[present] = seen
        data = section.data
        # By position and length: two texts may share their first byte (a long text's size byte can be
        # a short text's control byte, and a pointer may point at either).
        decoded: dict[tuple[int, int], str] = {}
        for i, p, s, bad in zip(
            present.tolist(), payload.tolist(), size.tolist(), seen.tolist(), strict=True
        ):
            if bad or s > _MOST_TEXT:
                odd[i] = True
                continue
            text = decoded.get((p, s))
            if text is None:
                try:
                    text = decoded[p, s] = sys.intern(data[p : p + s].tobytes().decode())
                except UnicodeDecodeError:
                    odd[i] = True
                    continue
            texts[i] = text
    return texts, odd
