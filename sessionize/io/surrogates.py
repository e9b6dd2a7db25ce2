"""JSON text whose ``\\u`` escapes name half a UTF-16 surrogate pair, made well formed before Polars reads it.

JSON escapes a character beyond U+FFFF as two ``\\u`` escapes, a high surrogate (``\\ud800``-``\\udbff``)
and then a low one (``\\udc00``-``\\udfff``). JavaScript's ``JSON.stringify`` writes a lone half as an
escape of its own (a title cut in the middle of an emoji, a string sliced by UTF-16 units), so browser
trackers send them. Polars' JSON reader took a lone high half for U+0000 (a NUL written into the session
table's ids and URLs) and failed the whole file on a lone low half: one event stopped every event of the
run. Each lone half is read as U+FFFD, the replacement character, as a browser's ``TextEncoder`` writes it
in UTF-8; pairs stay as they are. The escape ``\\ufffd`` is as long as the one it replaces, so byte offsets
and line numbers do not move.
"""

from __future__ import annotations

import re

#: A run of backslashes, then ``u`` and a surrogate's code: an escape when the run is odd.
_SURROGATE = re.compile(rb"(\\+)u([dD][89a-fA-F][0-9a-fA-F]{2})")
_REPLACEMENT = b"\\ufffd"
#: Two backslashes, then a surrogate's ``u``: where a ``\\u`` may be text, not an escape.
_ESCAPED_BACKSLASH = re.compile(rb"\\\\u[dD][89a-fA-F]")
#: A lone half, when every backslash before a ``u`` is one of its own (a run of one): a high half not
#: followed at once by a low one, or a low half not right after a high one. One search in C, where
#: :func:`_lone_positions` loops in Python over every match (a file of emoji written as pairs, as
#: ``json.dumps`` writes them, took three times as long to read).
_LONE = re.compile(
    rb"\\u[dD](?:[89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    rb"|[c-fC-F][0-9a-fA-F]{2}(?<!\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}))"
)


def may_hold_surrogate_escape(data: bytes | bytearray) -> bool:
    """Whether ``data`` holds ``\\ud`` or ``\\uD``: a quick test, true for every text
    :func:`well_formed_surrogates` would change (and for some it leaves as they are)."""
    return b"\\ud" in data or b"\\uD" in data


def well_formed_surrogates(data: bytes) -> bytes:
    """``data`` with every lone surrogate escape (a high half not followed at once by a low one, a low
    half not right after a high one) replaced by ``\\ufffd``; escaped backslashes before a ``u`` are
    text, not escapes. Linear: one regular expression pass over the text."""
    if not may_hold_surrogate_escape(data):
        return data
    if not _holds_lone(data):
        return data
    lone = _lone_positions(data)
    fixed = bytearray(data)
    for at in lone:
        fixed[at : at + len(_REPLACEMENT)] = _REPLACEMENT
    return bytes(fixed)


def _holds_lone(data: bytes, end: int | None = None) -> bool:
    """Whether ``data[:end]`` holds a lone surrogate escape: ``bool(_lone_positions(data, end))``, in C.

    Without two backslashes before a surrogate's ``u`` (``\\\\ud8``), each surrogate ``\\u`` is an
    escape (its run of backslashes is one long: a longer run holds two before the ``u``), so that
    :data:`_LONE`'s lookarounds see what :func:`_lone_positions` sees; with them (an escaped
    backslash, then the text ``ud800``: rare) the exact loop decides."""
    stop = len(data) if end is None else end
    if _ESCAPED_BACKSLASH.search(data, 0, stop):
        return bool(_lone_positions(data, end))
    return _LONE.search(data, 0, stop) is not None


def _lone_positions(data: bytes, end: int | None = None) -> list[int]:
    """Where each lone surrogate escape of ``data[:end]`` starts (see :func:`well_formed_surrogates`)."""
    lone: list[int] = []
    pending_high: int | None = None  # where the last high half's escape starts, while unpaired
    for match in _SURROGATE.finditer(data, 0, len(data) if end is None else end):
        run = len(match.group(1))
        if run % 2 == 0:
            continue  # escaped backslashes, then the letter u
        at = match.start() + run - 1
        high = int(match.group(2), 16) < 0xDC00
        if pending_high is not None and not high and at == pending_high + len(_REPLACEMENT):
            pending_high = None  # a pair
            continue
        if pending_high is not None:
            lone.append(pending_high)
            pending_high = None
        if high:
            pending_high = at
        else:
            lone.append(at)
    if pending_high is not None:
        lone.append(pending_high)
    return lone


class LoneSurrogateScan:
    """Whether a file read block by block holds a lone surrogate escape: each block is looked at up
    to its last line end, the rest with the next block (an escape pair never spans lines), and only
    where a block holds ``\\ud`` or ``\\uD`` at all (a search in C over the others)."""

    def __init__(self) -> None:
        self.found = False
        self._carry = bytearray()  # extended in place: a line over many blocks costs its length once

    def feed(self, block: bytes) -> None:
        if self.found:
            return
        cut = block.rfind(b"\n") + 1
        if not cut:
            self._carry += block
            return
        # An escape that starts in the carried text ends within the block's first bytes. Most blocks
        # hold no backslash at all: looking for one byte (memchr) is ten times faster than for three.
        if (
            may_hold_surrogate_escape(self._carry)
            or may_hold_surrogate_escape(bytes(self._carry[-2:]) + block[:4])
            or (
                block.find(b"\\", 0, cut) >= 0
                and (block.find(b"\\ud", 0, cut) >= 0 or block.find(b"\\uD", 0, cut) >= 0)
            )
        ):
            self.found = _holds_lone(bytes(self._carry) + block, len(self._carry) + cut)
        self._carry = bytearray(block[cut:])

    def close(self) -> bool:
        """Whether a lone escape was found, the text after the last line end included."""
        if not self.found and may_hold_surrogate_escape(self._carry):
            self.found = _holds_lone(bytes(self._carry))
        return self.found
