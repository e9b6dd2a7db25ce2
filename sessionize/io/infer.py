"""The column types of an NDJSON file, inferred from every line in time linear in its size.

Polars infers an NDJSON file's schema from every line (``infer_schema_length=None``) by merging each
line's types into the types so far, and a merge costs as much as the object types merged: a file whose
events each bring a key of their own (PostHog's ``$feature/<flag>`` keys, a property named after a user)
took time with the square of its lines (20,000 events 6 s, 100,000 more than 200 s). Here the lines are
inferred by Polars in blocks small enough that a block costs at most :data:`BLOCK_BUDGET` line-leaves
(a block's lines times the leaves of its types), and the blocks' schemas are merged by Polars too, a few
at a time, as a tree: each schema is written as one JSON line holding a value of every type in it (its
*witness*: ``0`` for an integer, ``{"a": 0.5}`` for an object of one float), and Polars' inference of those
lines gives the types it would have given the lines themselves, by its own rules (an integer and a float
are a float, an integer and a string a string, an integer and a list an error).

Only the order of an object's keys may differ from one inference over the whole file where the same key
came with two types (Polars puts the larger object's keys first): every reader of a file uses this
function, so every engine sees the same columns.
"""

from __future__ import annotations

import contextlib
import io
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii as _quoted
from typing import IO, Any

import polars as pl

#: The most line-leaves (lines of a block times the leaves of the block's types) one call of Polars'
#: inference is given: a block of events with 30 leaves each holds some 60,000 lines, one of events that
#: each bring a new key some 1,400.
BLOCK_BUDGET = 2_000_000
#: The fewest and the most lines of a block. The most bound the cost of one block of wide objects
#: after narrow ones: 4,096 lines each with a new key take some 0.2 s.
MIN_BLOCK_LINES = 1_024
MAX_BLOCK_LINES = 4_096


def infer_ndjson_schema(ndjson: str | bytes | io.BytesIO) -> pl.Schema:
    """The schema Polars infers for an NDJSON file (a path, or its bytes without a byte order mark) from
    every line: the same types as ``pl.scan_ndjson(..., infer_schema_length=None).collect_schema()``.
    Raises Polars' error where Polars' inference fails (a malformed line, an integer and a list in one
    field)."""
    with contextlib.ExitStack() as stack:
        if isinstance(ndjson, str):
            handle: IO[bytes] = stack.enter_context(open(ndjson, "rb"))
        else:  # read from its start, and left where it was
            handle = ndjson if isinstance(ndjson, io.BytesIO) else io.BytesIO(ndjson)
            stack.callback(handle.seek, handle.tell())
            handle.seek(0)
        schemas = list(_block_schemas(handle))
    return merge_schemas(schemas)


def merge_schemas(schemas: Sequence[pl.Schema | Mapping[str, Any]]) -> pl.Schema:
    """The schema Polars infers from the lines of files whose schemas are ``schemas``, in their order,
    each object's keys in the order they first come. Each distinct schema is merged once, a few at a
    time (:data:`BLOCK_BUDGET` line-leaves a call), as a tree."""
    distinct: dict[str, _Part] = {}
    for schema in schemas:
        if len(schema):
            text, leaves = _witness_fields(schema.items())
            distinct.setdefault(text, _Part(text, leaves, schema))
    parts = list(distinct.values())
    level = parts
    while len(level) > 1:
        level = [_merged(group) for group in _groups(level)]
    if not level:
        return pl.Schema()
    return pl.Schema(_in_order(level[0].schema, [part.schema for part in parts]))


@dataclass(frozen=True)
class _Part:
    witness: str  # one JSON line Polars infers ``schema`` for
    leaves: int
    schema: pl.Schema | Mapping[str, Any]


def _groups(level: Sequence[_Part]) -> Iterator[list[_Part]]:
    """``level`` cut into runs of at least two parts (the last may be one) within the budget."""
    group: list[_Part] = []
    leaves = 0
    for part in level:
        if len(group) >= 2 and (len(group) + 1) * (leaves + part.leaves) > BLOCK_BUDGET:
            yield group
            group, leaves = [], 0
        group.append(part)
        leaves += part.leaves
    if group:
        yield group


def _merged(group: Sequence[_Part]) -> _Part:
    if len(group) == 1:
        return group[0]
    schema = _inferred("\n".join(part.witness for part in group).encode())
    return _Part(*_witness_fields(schema.items()), schema)


def _in_order(merged: Mapping[str, Any], parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The fields of ``merged`` in the order they first come in ``parts`` (the fields at the same place
    of the schemas merged), and so in each object within: Polars puts the keys of the object with more
    keys first."""
    seen: dict[str, list[Any]] = {}
    for part in parts:
        for name, dtype in part.items():
            seen.setdefault(name, []).append(dtype)
    names = [name for name in seen if name in merged] + [name for name in merged if name not in seen]
    return {name: _type_in_order(merged[name], seen.get(name, [])) for name in names}


def _type_in_order(merged: Any, parts: Sequence[Any]) -> Any:
    if isinstance(merged, pl.Struct):
        structs = [part for part in parts if isinstance(part, pl.Struct)]
        if len(structs) <= 1 and not any(
            isinstance(field.dtype, pl.Struct | pl.List) for field in merged.fields
        ):
            return merged  # one object's keys: already in their order
        fields = {field.name: field.dtype for field in merged.fields}
        ordered = _in_order(
            fields, [{field.name: field.dtype for field in struct.fields} for struct in structs]
        )
        return pl.Struct(ordered)
    if isinstance(merged, pl.List):
        return pl.List(
            _type_in_order(merged.inner, [part.inner for part in parts if isinstance(part, pl.List)])
        )
    return merged


def _witness_fields(fields: Iterable[tuple[str, Any]]) -> tuple[str, int]:
    """A JSON object with the fields given (name, Polars type), and the count of its leaves."""
    texts: list[str] = []
    leaves = 0
    for name, dtype in fields:
        text, count = _witness(dtype)
        texts.append(f"{_quoted(name)}:{text}")
        leaves += count
    return "{" + ",".join(texts) + "}", max(leaves, 1)


def _witness(dtype: Any) -> tuple[str, int]:
    """A JSON value Polars infers the type ``dtype`` for, and the count of its leaves."""
    kind = dtype if isinstance(dtype, type) else type(dtype)
    if kind is pl.Struct:
        return _witness_fields((field.name, field.dtype) for field in dtype.fields)
    if kind is pl.List:
        inner, leaves = _witness(dtype.inner)
        return ("[]" if inner == "null" else f"[{inner}]"), leaves
    witness = _SCALARS.get(kind)
    if witness is None:  # pragma: no cover - Polars' NDJSON inference gives none other
        raise TypeError(f"no JSON value has the inferred type {dtype}")
    return witness, 1


_SCALARS: dict[type, str] = {
    pl.Null: "null",
    pl.Boolean: "true",
    pl.Int64: "0",
    pl.Int128: str(1 << 64),  # beyond 64 bits: Polars infers Int128 for it
    pl.Float64: "0.5",
    pl.String: '""',
}


def _inferred(data: bytes) -> pl.Schema:
    return pl.scan_ndjson(io.BytesIO(data), infer_schema_length=None).collect_schema()


def _leaves(dtype: Any) -> int:
    if isinstance(dtype, pl.Struct):
        return sum(_leaves(field.dtype) for field in dtype.fields) or 1
    if isinstance(dtype, pl.List):
        return _leaves(dtype.inner)
    return 1


def _block_schemas(handle: IO[bytes]) -> Iterator[pl.Schema]:
    """The schemas of the file's blocks in order, two inferred at a time (Polars' inference runs on one
    core). A block holds at most :data:`MAX_BLOCK_LINES` lines, and fewer when the blocks before it were
    wide: lines times the leaves of the widest type so far within :data:`BLOCK_BUDGET`. Where a file's
    objects turn wide from one block to the next, that block costs at most ``MAX_BLOCK_LINES`` squared."""
    blocks = _Blocks(handle)
    pending: deque[Future[pl.Schema]] = deque()
    with ThreadPoolExecutor(max_workers=2) as pool:
        while True:
            while len(pending) < 2 and (block := blocks.next()):
                pending.append(pool.submit(_block_schema, block))
            if not pending:
                return
            schema = pending.popleft().result()
            within = BLOCK_BUDGET // max(sum(map(_leaves, schema.values())), 1)
            blocks.lines = min(max(within, MIN_BLOCK_LINES), blocks.lines * 2, MAX_BLOCK_LINES)
            yield schema


def _block_schema(block: bytes) -> pl.Schema:
    return _inferred(block) if block.strip() else pl.Schema()


class _Blocks:
    """Whole lines of a file, at most ``lines`` at a time (one line however long)."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self.lines = MIN_BLOCK_LINES
        self.line_bytes = 256.0  # the mean line so far: how much to read for ``lines`` lines
        self.rest = b""

    def next(self) -> bytes:
        data = self.rest + self.handle.read(max(int(self.lines * self.line_bytes) - len(self.rest), 1 << 12))
        if data and not data.endswith(b"\n"):
            data += self.handle.readline()
        count = data.count(b"\n")
        end = len(data)
        if count > self.lines:
            end, count = _after_line(data, self.lines), self.lines
        block, self.rest = data[:end], data[end:]
        if count:
            self.line_bytes = len(block) / count
        return block


def _after_line(data: bytes, lines: int) -> int:
    """Where the ``lines``-th line of ``data`` ends (after its newline), found by halving, counting each
    byte about once: ``before`` is the count of newlines in ``data[:low]``."""
    low, high, before = 0, len(data), 0
    while low < high:
        middle = (low + high) // 2
        counted = data.count(b"\n", low, middle)
        if before + counted >= lines:
            high = middle
        else:
            before += counted + (data[middle] == 0x0A)
            low = middle + 1
    return low
