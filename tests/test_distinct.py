"""distinct_rows and map_distinct: each row mapped back to its own value, with real hashes and with
forced hash collisions (which must be resolved by comparing the values, never trusted)."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import polars as pl
import pytest

from sessionize import distinct as D
from sessionize.distinct import distinct_rows, map_distinct
from sessionize.privacy import anonymize_ip, anonymize_ips

HashRows = Callable[[pl.DataFrame], pl.Series]

#: Row hashes: the real ones, all rows colliding, two buckets, and a few dozen buckets.
HASHES: dict[str, HashRows] = {
    "real": D.row_hashes,
    "constant": lambda keys: pl.repeat(7, keys.height, dtype=pl.UInt64, eager=True),
    "two buckets": lambda keys: keys.hash_rows(seed=0) % 2,
    "many buckets": lambda keys: keys.hash_rows(seed=0) % 37,
}


@pytest.fixture(params=list(HASHES))
def hashes(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setattr(D, "row_hashes", HASHES[request.param])
    yield request.param


def _keys(n: int, seed: int) -> pl.DataFrame:
    rng = random.Random(seed)
    pages = [None, "", "https://a.example/", "https://a.example/?utm_source=x", "https://b.example/p"]
    referrers = [None, "", "https://www.google.com/", "https://t.co/x", "https://a.example/"]
    return pl.DataFrame(
        {
            "page": [rng.choice(pages) for _ in range(n)],
            "referrer": [rng.choice(referrers) for _ in range(n)],
        },
        schema={"page": pl.String, "referrer": pl.String},
    )


def _check(keys: pl.DataFrame) -> None:
    distinct, index = distinct_rows(keys)
    assert index.dtype == pl.get_index_type()
    assert index.len() == keys.height
    assert distinct.columns == keys.columns and distinct.schema == keys.schema
    assert not distinct.is_duplicated().any()
    assert distinct.gather(index).equals(keys)
    assert set(distinct.rows()) == set(keys.rows())


@pytest.mark.parametrize("seed", range(5))
def test_distinct_rows_two_columns_with_nulls(hashes: str, seed: int) -> None:
    _check(_keys(400, seed))


def test_distinct_rows_null_only_in_one_column_is_not_the_empty_string(hashes: str) -> None:
    keys = pl.DataFrame({"a": [None, "", None, "x", "", "x"], "b": ["", None, None, None, "", "x"]})
    _check(keys)
    distinct, _ = distinct_rows(keys)
    assert distinct.height == 6


def test_distinct_rows_single_value_and_empty(hashes: str) -> None:
    _check(pl.DataFrame({"a": ["same"] * 10}))
    _check(pl.DataFrame({"a": [None] * 3}, schema={"a": pl.String}))
    _check(pl.DataFrame({"a": ["x", None]}))
    _check(pl.DataFrame({"a": []}, schema={"a": pl.String}))


def test_distinct_rows_a_key_column_named_like_the_index(hashes: str) -> None:
    _check(pl.DataFrame({"_index": ["a", "b", "a", "c"], "_index_": [1, 2, 1, 1]}))


def test_map_distinct_computes_each_value_once_and_maps_it_back(hashes: str) -> None:
    rng = random.Random(1)
    values = [rng.choice([None, "a", "b", "c", "dd", ""]) for _ in range(300)]
    seen: list[Any] = []

    def upper(batch: list[str | None]) -> pl.Series:
        seen.extend(batch)
        return pl.Series([None if v is None else v.upper() + "!" for v in batch], dtype=pl.String)

    out = map_distinct(pl.Series("x", values, dtype=pl.String), upper)
    assert out.name == "x"
    assert out.to_list() == [None if v is None else v.upper() + "!" for v in values]
    assert sorted(seen, key=str) == sorted(set(values), key=str)


def test_map_distinct_frame_result_becomes_a_struct(hashes: str) -> None:
    def describe(batch: list[str | None]) -> pl.DataFrame:
        return pl.DataFrame({"text": batch, "length": [None if v is None else len(v) for v in batch]})

    values = ["ab", None, "c", "ab", "c", None]
    out = map_distinct(pl.Series("v", values), describe)
    assert out.dtype == pl.Struct({"text": pl.String, "length": pl.Int64})
    assert out.to_list() == [{"text": v, "length": None if v is None else len(v)} for v in values]


def test_map_distinct_of_a_struct_tells_a_null_from_null_fields(hashes: str) -> None:
    values = [{"a": 1, "b": None}, None, {"a": None, "b": None}, {"a": 1, "b": None}, None]
    series = pl.Series("s", values, dtype=pl.Struct({"a": pl.Int64, "b": pl.String}))
    out = map_distinct(series, lambda batch: pl.Series([repr(v) for v in batch], dtype=pl.String))
    assert out.to_list() == [repr(v) for v in values]


def test_anonymize_ips_under_collisions(hashes: str) -> None:
    ips = ["81.2.69.160", None, "81.2.69.161", "2001:db8::1", "bad", "81.2.69.160", None]
    out = anonymize_ips(pl.LazyFrame({"ip": ips})).collect()
    assert out.get_column("ip").to_list() == [anonymize_ip(ip) for ip in ips]
