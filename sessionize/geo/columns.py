"""The columns a lookup gives (city, region, country, country code) and its status.

Their names, the struct type they travel in, the status codes of many lookups at once, and how a
database record, or a batch of lookups, becomes them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import polars as pl

if TYPE_CHECKING:
    from sessionize.geo._numpy import U8, Index

GEO_COLUMNS = ("city", "region", "country", "country_code")
#: Per-session lookup outcome, counted in the run summary.
STATUS = "_geo_status"
RESOLVED, NOT_FOUND, PRIVATE, INVALID, MISSING = "resolved", "not_found", "private", "invalid", "missing"

_GEO_DTYPE = pl.Struct({**{name: pl.String for name in GEO_COLUMNS}, STATUS: pl.String})
_GEO_SCHEMA = dict(_GEO_DTYPE.to_schema())
# Status codes of lookup_many, as indexes into _STATUS_NAMES; _PENDING: to be looked up.
_RESOLVED, _NOT_FOUND, _PRIVATE, _INVALID, _MISSING, _PENDING = range(6)
_STATUS_NAMES: Final = (RESOLVED, NOT_FOUND, PRIVATE, INVALID, MISSING)


def _geo_fields(record: Any) -> dict[str, str | None]:
    """The geo columns and status of a raw record (``None``: not in the database)."""
    result: dict[str, str | None] = dict.fromkeys(GEO_COLUMNS)
    if not record:
        result[STATUS] = NOT_FOUND
        return result
    country = record.get("country") or {}
    subdivisions = record.get("subdivisions") or [{}]
    result["city"] = _english(record.get("city"))
    result["region"] = _english(subdivisions[0])
    result["country"] = _english(country)
    result["country_code"] = country.get("iso_code")
    result[STATUS] = RESOLVED if any(result[c] for c in GEO_COLUMNS) else NOT_FOUND
    return result


def _english(entity: Any) -> str | None:
    if not entity:
        return None
    name: str | None = (entity.get("names") or {}).get("en")
    return name


def _geo_frame(code: U8, table: pl.DataFrame, record_of_row: Index) -> pl.DataFrame:
    """The lookup_many frame: the geo columns of each row from ``table`` (the distinct records; the row
    past its end for none), and the status of each code."""
    status = pl.Series(STATUS, _STATUS_NAMES, dtype=pl.String).gather(code)
    with_none = pl.concat([table.drop(STATUS), pl.DataFrame(schema=_GEO_SCHEMA).drop(STATUS).clear(1)])
    return with_none.rechunk()[record_of_row].with_columns(status)
