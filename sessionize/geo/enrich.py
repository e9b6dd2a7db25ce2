"""The geo columns of sessions: :func:`enrich_geo` in one plan, or :func:`geo_table` of the events'
addresses made ahead and :func:`join_geo` to the sessions (how a run does it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import polars as pl

from sessionize import distinct
from sessionize.geo.columns import _GEO_DTYPE, GEO_COLUMNS, MISSING, STATUS, _geo_frame
from sessionize.geo.database import GeoDatabase

if TYPE_CHECKING:
    from sessionize.geo._numpy import U8, Index


def enrich_geo(sessions: pl.LazyFrame, *, database: GeoDatabase | None) -> pl.LazyFrame:
    """Add ``city``, ``region``, ``country``, ``country_code`` (and ``_geo_status``) from ``ip``.

    Without a database the columns are null. Each distinct IP is looked up once.
    """
    if database is None:
        return sessions.with_columns(
            *(pl.lit(None, pl.String).alias(name) for name in GEO_COLUMNS),
            pl.when(pl.col("ip").is_null()).then(pl.lit(MISSING)).otherwise(None).alias(STATUS),
        )
    return sessions.with_columns(
        pl.col("ip")
        .map_batches(
            lambda ips: _geo_of_distinct(ips, database), return_dtype=_GEO_DTYPE, is_elementwise=False
        )
        .alias("_geo")
    ).unnest("_geo")


def _geo_of_distinct(ips: pl.Series, database: GeoDatabase) -> pl.Series:
    """The geo struct of each address, from one lookup of the distinct ones.

    The distinct values and each row's index among them come from
    :func:`~sessionize.distinct.distinct_rows` (by hash, each row checked against its value); they are
    looked up as lookup_many does
    (:meth:`GeoDatabase._lookup_parts`), and each row is made from its record (74k distinct records
    for the benchmark's 1M distinct IPs), not from a frame of the distinct IPs gathered again.
    """
    if ips.null_count() == ips.len():
        # No IP at all (a table without an ip column, say): all missing, without numpy or the tree.
        n = ips.len()
        columns = [pl.repeat(None, n, dtype=pl.String, eager=True).alias(name) for name in GEO_COLUMNS]
        status = pl.repeat(MISSING, n, dtype=pl.String, eager=True).alias(STATUS)
        return pl.DataFrame([*columns, status]).to_struct(ips.name)
    values, index = distinct.distinct_rows(ips.to_frame())
    code, table, record_of_row = database._lookup_parts(values.to_series())
    rows = index.to_numpy()
    return _geo_frame(code[rows], table, record_of_row[rows]).to_struct(ips.name)


@dataclass(frozen=True)
class GeoTable:
    """The lookups of a set of addresses made ahead of the sessions (see :func:`geo_table`)."""

    #: The distinct addresses, and the hash (:func:`~sessionize.distinct.row_hashes`) each was told
    #: apart by.
    ips: pl.Series
    hashes: pl.Series
    #: Status code and record (a row of ``records``, or past its end for none) of each address.
    code: U8
    record: Index
    #: The geo columns of each distinct record.
    records: pl.DataFrame


def geo_table(ips: pl.Series, database: GeoDatabase) -> GeoTable:
    """The lookups of the distinct values of ``ips`` (the events' addresses), for :func:`join_geo`.

    The values are told apart by their 64-bit hash (``arg_unique`` of the hashes: 0.3 s for 10M
    addresses, against 1.2-1.5 s for ``unique``). Should two values share a hash, one of them is
    left out, and :func:`join_geo` looks its sessions up itself.
    """
    ips = ips.cast(pl.String)
    hashes = distinct.row_hashes(ips.to_frame())
    first = hashes.arg_unique()
    values = ips.gather(first)
    code, records, record = database._lookup_parts(values)
    return GeoTable(ips=values, hashes=hashes.gather(first), code=code, record=record, records=records)


def match_addresses(ips: pl.Series, table: GeoTable) -> pl.Series | None:
    """The row of ``table`` of each of ``ips`` (the sessions' addresses), or ``None`` if any is not
    there: found by hash (a join on a 64-bit integer), and each address found must equal its own (an
    address missing from the table, or two that share a hash, give ``None``).

    The part of :func:`join_geo` that reads the addresses: a run matches them while the sessions' other
    columns are made (on a thread of its own), and joins the geo columns after.
    """
    ips = ips.cast(pl.String)
    index = distinct.index_among(distinct.row_hashes(ips.to_frame()), table.hashes)
    if index.null_count() == 0 and ips.eq_missing(table.ips.gather(index)).all():
        return index
    return None


def join_geo(
    sessions: pl.DataFrame, table: GeoTable, database: GeoDatabase, matched: pl.Series | None = None
) -> pl.DataFrame:
    """``sessions`` with the geo columns and status of their ``ip``, as :func:`enrich_geo` adds them,
    taken from ``table`` (:func:`geo_table` of addresses that include the sessions' ones).

    Each session finds its address in the table (:func:`match_addresses`; ``matched``: what it gave
    for these sessions' addresses, in their order, when it was made ahead: the caller keeps the rows as
    they were); if any does not, the sessions are looked up as :func:`enrich_geo` does.
    """
    ips = sessions.get_column("ip")
    # A match of another length is not of these sessions: matched again.
    index = (
        matched if matched is not None and matched.len() == sessions.height else match_addresses(ips, table)
    )
    if index is not None:
        rows = index.to_numpy()
        frame = _geo_frame(table.code[rows], table.records, table.record[rows])
    else:
        frame = _geo_of_distinct(ips.cast(pl.String), database).struct.unnest()
    return sessions.hstack(frame.get_columns())
