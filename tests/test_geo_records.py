"""Records read from a MaxMind DB's data section with numpy (sessionize.geo.records) against the
reader's decoding of the same records: the same geo columns, or the record left to the reader."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from maxminddb.decoder import Decoder
from mmdb_writer import Encoder

from sessionize import geo
from sessionize.geo import database as geo_database
from sessionize.geo import records as geo_records
from sessionize.geo.records import record_rows
from tests.helpers import DATA
from tests.test_geo import RECORDS, write_sized_mmdb

GEOIP = DATA / "geoip"


def every_record(database: geo.GeoDatabase) -> list[int]:
    """The tree value of every record the database's search tree leads to (a walk of every node)."""
    tree = database._search_tree()
    assert tree is not None
    nodes, seen, records = [0], {0}, set()
    while nodes:
        node = nodes.pop()
        for bit in (0, 1):
            child = int(tree.children(np.array([node], np.uint32), np.array([bit], np.int64))[0])
            if child < tree.node_count and child not in seen:
                seen.add(child)
                nodes.append(child)
            elif child > tree.node_count:
                records.add(child)
    return sorted(records)


def rows_and_reference(database: geo.GeoDatabase, records: list[int]) -> tuple[list[Any], list[Any]]:
    """The rows record_rows gives for ``records`` (tree values), and the reader's records, decoded by
    maxminddb's pure-Python decoder (not the C extension the lookups use)."""
    tree_size = database._node_count * database._record_size // 4
    values = np.array(records, dtype=np.int64)
    rows = database._record_rows(values.astype(np.uint32))
    raw = database.path.read_bytes()
    decoder = Decoder(raw, tree_size + 16)
    reference = [decoder.decode(int(value) - database._node_count + tree_size)[0] for value in values]
    return rows, reference


@pytest.mark.parametrize(
    "name",
    [
        "GeoIP2-City-Test.mmdb",
        "GeoLite2-City-Test.mmdb",
        "GeoIP2-Country-Test.mmdb",
        "GeoLite2-Country-Test.mmdb",
    ],
)
def test_every_record_of_maxminds_test_databases_is_read_as_decoded(name: str) -> None:
    database = geo.GeoDatabase(GEOIP / name, "--geoip-db")
    records = every_record(database)
    assert len(records) > 20
    rows, reference = rows_and_reference(database, records)
    assert rows == [geo_database._record_row(record) for record in reference]  # none left to the reader
    assert all(usual(record) for record in reference)
    database.close()


@pytest.mark.parametrize("record_size", [24, 28, 32])
def test_lookups_of_a_built_database_decode_no_record_with_the_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, record_size: int
) -> None:
    networks = {f"81.{i}.0.0/16": record for i, record in enumerate(RECORDS)}
    db = write_sized_mmdb(tmp_path / "built.mmdb", networks, ip_version=6, record_size=record_size)
    database = geo.GeoDatabase(db, "--geoip-db")
    rows, reference = rows_and_reference(database, every_record(database))
    assert_read_as_decoded(rows, reference)
    # mmdb-writer shares one copy of {} and [] (both freeze to ()): a record's empty subdivisions
    # array is an empty map there, which only the reader reads.
    left = [record for row, record in zip(rows, reference, strict=True) if row is None]
    assert left == [{"subdivisions": {}, "city": {"names": {}}}]
    decoded: list[object] = []
    record = database._record

    def counted(address: Any) -> Any:
        decoded.append(address)
        return record(address)

    monkeypatch.setattr(database, "_record", counted)
    frame = database.lookup_many([f"81.{i}.2.3" for i in range(len(RECORDS))])
    assert decoded == [ipaddress.ip_address("81.7.2.3")]
    assert frame.get_column("city").to_list()[:3] == ["Testville", None, "Zürich"]
    database.close()


# --- records of any shape ---------------------------------------------------------------------------

TEXT = st.text(max_size=4) | st.text(min_size=28, max_size=300)  # sizes past 29 and 285 bytes too
SCALAR = (
    TEXT
    | st.integers(-(2**31), 2**128 - 1)
    | st.floats(allow_nan=False)
    | st.booleans()
    | st.binary(max_size=4)
)
VALUE = st.recursive(
    SCALAR,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
NAMES = st.dictionaries(st.sampled_from(["en", "de", "ja", "e", "enx"]), TEXT, max_size=4)
ENTITY = st.fixed_dictionaries(
    {},
    optional={
        "names": NAMES | VALUE,
        "iso_code": TEXT | VALUE,
        "geoname_id": st.integers(0, 2**32 - 1),
        "code": TEXT,
        "x": VALUE,
    },
)
RECORD = st.fixed_dictionaries(
    {},
    optional={
        "city": ENTITY | VALUE,
        "country": ENTITY | VALUE,
        "subdivisions": st.lists(ENTITY | VALUE, max_size=3) | VALUE,
        "continent": ENTITY,
        "location": VALUE,
        "citx": ENTITY,
        "": VALUE,
    },
) | st.lists(VALUE, max_size=2)


def usual(record: Any) -> bool:
    """Whether the record has the usual shape: every value on the way to a geo column a map (an
    array of them for the subdivisions), each name and ISO code text."""

    def entity(value: Any, *, code: bool) -> bool:
        if not isinstance(value, dict):
            return False
        names = value.get("names", {})
        return (
            isinstance(names, dict)
            and isinstance(names.get("en", ""), str)
            and (not code or isinstance(value.get("iso_code", ""), str))
        )

    if not isinstance(record, dict):
        return False
    subdivisions = record.get("subdivisions", [])
    return (
        entity(record.get("city", {}), code=False)
        and entity(record.get("country", {}), code=True)
        and isinstance(subdivisions, list)
        and (not subdivisions or entity(subdivisions[0], code=False))
    )


@settings(max_examples=150, deadline=None)
@given(st.lists(RECORD, min_size=1, max_size=12), st.booleans())
def test_records_of_any_shape_are_read_as_decoded_or_left_to_the_reader(
    records: list[Any], shared: bool
) -> None:
    # Shared: every value a pointer to its one copy (as mmdb-writer writes them); else all inline.
    data, positions = section(*records, shared=shared)
    decoder = Decoder(data.tobytes(), 0)
    decoded = [decoder.decode(position)[0] for position in positions]
    rows = rows_of(data, positions)
    # A record past the walk's bounds (a long map or value, of any shape) is left to the reader: read
    # without them, each record is read as decoded, and with them the same, or left to the reader.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(geo_records, "_MOST_ENTRIES", 10**6)
        patch.setattr(geo_records, "_MOST_TOKENS", 10**6)
        unbounded = rows_of(data, positions)
    assert all(row is None or row == read for row, read in zip(rows, unbounded, strict=True))
    assert_read_as_decoded(unbounded, decoded)


def assert_read_as_decoded(rows: list[Any], records: list[Any]) -> None:
    """Each row is the decoded record's, but for records of an unusual shape, which may be left to the
    reader (``None``)."""
    for row, record in zip(rows, records, strict=True):
        if usual(record) or row is not None:
            assert row == geo_database._record_row(record), record


# --- odd and corrupt data ---------------------------------------------------------------------------


def section(*values: Any, shared: bool = True) -> tuple[np.ndarray, list[int]]:
    """A data section of ``values`` encoded one after another (``shared``: each part once, the
    others pointers to it; else every part inline), 8 zero bytes after it, and the position of each."""
    encoder = Encoder(cache=shared)
    if shared:
        positions = [encoder.encode(value, return_offset=True) for value in values]
        data = b"".join(encoder.data_list)
    else:
        parts = [encoder.encode(value) for value in values]
        positions = [sum(len(part) for part in parts[:i]) for i in range(len(parts))]
        data = b"".join(parts)
    return np.frombuffer(data + bytes(8), np.uint8), positions


def rows_of(data: np.ndarray, positions: list[int], end: int | None = None) -> list[Any]:
    return record_rows(data, 0, len(data) - 8 if end is None else end, np.array(positions, np.int64))


def test_record_rows_of_a_hand_made_section() -> None:
    city = {"names": {"en": "Testville", "de": "Teststadt"}}
    data, positions = section(
        {"city": city, "country": {"iso_code": "GB", "names": {"en": "United Kingdom"}}},
        {"location": {"latitude": 1.5}, "city": city, "subdivisions": [{"names": {"en": "Outer"}}, {}]},
        {"country": {"iso_code": "SE"}, "country ": {"iso_code": "NO"}},
        {},
    )
    assert rows_of(data, positions) == [
        ("Testville", None, "United Kingdom", "GB", "resolved"),
        ("Testville", "Outer", None, None, "resolved"),
        (None, None, None, "SE", "resolved"),
        (None, None, None, None, "not_found"),
    ]


@pytest.mark.parametrize(
    "record",
    [
        "a text, not a map",
        {"city": "London"},
        {"city": {"names": ["en", "London"]}},
        {"city": {"names": {"en": 7}}},
        {"country": {"iso_code": 44}},
        {"subdivisions": {"names": {"en": "England"}}},
        {"subdivisions": ["England"]},
        {"city": {"names": {"en": "x"}}, **{f"k{i}": i for i in range(70)}},  # a long map
    ],
)
def test_records_of_other_shapes_are_left_to_the_reader(record: Any) -> None:
    for shared in (True, False):
        data, positions = section(record, shared=shared)
        assert rows_of(data, positions) == [None]


def test_a_long_value_is_skipped_as_a_pointer_but_left_to_the_reader_inline() -> None:
    record = {"location": list(range(1100)), "city": {"names": {"en": "x"}}}
    data, positions = section(record, shared=True)
    assert rows_of(data, positions) == [("x", None, None, None, "resolved")]
    data, positions = section(record, shared=False)
    assert rows_of(data, positions) == [None]


def test_corrupt_values_are_left_to_the_reader() -> None:
    record = {"city": {"names": {"en": "Testville"}}}
    data, (position,) = section(record)
    good = rows_of(data, [position])
    assert good == [("Testville", None, None, None, "resolved")]
    raw = bytes(data[:-8])
    name_at = raw.index(b"Testville")
    cases = {
        "past the end": (raw, [len(raw) + 3], None),
        "before the section": (raw, [-1], None),
        "the section ends inside": (raw, [position], name_at + 4),
        "invalid UTF-8": (raw.replace(b"Testville", b"Test\xffille"), [position], None),
        "an end marker": (bytes([0x00, 0x06]) + raw, [0], None),  # type 7 + 6 = 13
        "a container": (bytes([0x00, 0x05]) + raw, [0], None),  # type 12
        "a pointer past the end": (bytes([0x3F, 0xFF, 0xFF, 0xFF, 0xFF]) + raw, [0], None),
    }
    for name, (changed, at, end) in cases.items():
        padded = np.frombuffer(changed + bytes(8), np.uint8)
        assert rows_of(padded, at, end) == [None], name


def test_two_texts_that_start_at_the_same_byte_are_read_apart() -> None:
    # At 0 a text of 29 + 0x44 = 97 bytes; at 1 its size byte 0x44 is the control byte of a 4-byte text.
    # Both payloads start at 2; the city's name points at the short text, the country's at the long one.
    body = ("Lond" + "x" * 93).encode()
    texts = bytes([0x5D, 0x44]) + body
    encoder = Encoder(cache=False)

    def names(pointer: int) -> bytes:
        # {"names": {"en": <pointer>}}, the pointer written by hand (a 2-byte one: 001 00 vvv, then 8 bits).
        return (
            bytes([0xE1])
            + encoder.encode("names")
            + bytes([0xE1])
            + encoder.encode("en")
            + bytes([0x20 | (pointer >> 8), pointer & 0xFF])
        )

    record = bytes([0xE2]) + encoder.encode("city") + names(1) + encoder.encode("country") + names(0)
    raw = texts + record
    data = np.frombuffer(raw + bytes(8), np.uint8)
    expected = geo_database._record_row(Decoder(raw, 0).decode(len(texts))[0])
    assert expected[0] == "Lond" and expected[2] == body.decode()
    assert rows_of(data, [len(texts)]) == [expected]


def test_records_past_the_walks_bounds_are_left_to_the_reader() -> None:
    city = {"names": {"en": "x"}}
    beyond = [
        {"city": city, **{f"k{i}": i for i in range(40)}},  # more entries than a record walk takes
        {"city": city, "location": [[[[[[[[1, 2, 3, 4, 5, 6, 7, 8]]]]]]]] * 7},  # a value of 64+ tokens
        {"city": {"names": {"en": "y" * 70_000}}},  # a name longer than read here
    ]
    for record in beyond:
        data, positions = section(record, shared=False)
        assert rows_of(data, positions) == [None]
    # Within them: read.
    data, positions = section({"city": city, "location": list(range(60))}, shared=False)
    assert rows_of(data, positions) == [("x", None, None, None, "resolved")]
