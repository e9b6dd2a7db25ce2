"""Run a per-value Python function once per distinct value of a column, then map it back."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import polars as pl


def map_distinct(series: pl.Series, compute: Callable[[list[Any]], pl.Series | pl.DataFrame]) -> pl.Series:
    """``compute`` gets the distinct values (nulls included) and returns one result per value, as a
    Series or a DataFrame (which becomes a struct); the result is joined back in ``series``' order.

    >>> s = pl.Series("x", ["a", "b", "a", None])
    >>> upper = lambda values: pl.Series([None if v is None else v.upper() for v in values])
    >>> map_distinct(s, upper).to_list()
    ['A', 'B', 'A', None]
    """
    distinct = series.unique()
    result = compute(distinct.to_list())
    value = result.to_struct("_value") if isinstance(result, pl.DataFrame) else result.alias("_value")
    lookup = pl.DataFrame([distinct.alias("_key"), value])
    joined = series.to_frame("_key").join(
        lookup, on="_key", how="left", nulls_equal=True, maintain_order="left"
    )
    return joined.get_column("_value").alias(series.name)
