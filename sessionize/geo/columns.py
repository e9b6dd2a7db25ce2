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
# Status codes of lookup_many, as indexes into STATUSES; _PENDING: to be looked up.
_RESOLVED, _NOT_FOUND, _PRIVATE, _INVALID, _MISSING, _PENDING = range(6)
#: Every geo status there is (a lookup gives one of these for each address).
STATUSES: Final = (RESOLVED, NOT_FOUND, PRIVATE, INVALID, MISSING)


def _geo_fields(record: Any) -> dict[str, str | None]:
    """The geo columns and status of a raw record (``None``: not in the database)."""
    return dict(zip(_GEO_SCHEMA, _record_values(record), strict=True))


_NO_RECORD: Final = (None, None, None, None, NOT_FOUND)
_NO_SUBDIVISION: Final[tuple[dict[str, Any]]] = ({},)
_NO_ENTITY: Final[dict[str, Any]] = {}


class _OtherSchemaError(Exception):
    """A record that is not in the City schema the geo columns are read from (what in it, as the
    message); :class:`~sessionize.geo.database.GeoDatabase` reports it as a ``GeoIPDatabaseError``
    naming its file."""


def _record_values(record: Any) -> tuple[str | None, ...]:
    """:func:`_geo_fields` as a row in the order of ``_GEO_SCHEMA``: a lookup decodes tens of thousands
    of records, so no dictionary is made for each (1M addresses: 74k records, 0.33 -> 0.19 s).

    A record, city, subdivisions, country or names that is absent, null or empty gives no value (an
    empty map or list: mmdb-writer writes one copy of both, as a list or a map), and so does a name or
    code that is absent or null. A record of another shape (not a map, a flat ``{"city": "London"}``, a
    name that is not text...) raises :class:`_OtherSchemaError`: a few type checks a record.
    """
    if not record:
        return _NO_RECORD
    if not isinstance(record, dict):
        raise _OtherSchemaError(_what("the record", record, "a map"))
    get = record.get
    country = get("country") or _NO_ENTITY
    subdivisions = get("subdivisions") or _NO_SUBDIVISION
    if not isinstance(country, dict):
        raise _OtherSchemaError(_what("country", country, "a map"))
    if not isinstance(subdivisions, (list, tuple)):
        raise _OtherSchemaError(_what("subdivisions", subdivisions, "a list"))
    code = country.get("iso_code")
    if code is not None and not isinstance(code, str):
        raise _OtherSchemaError(_what("country.iso_code", code, "text"))
    values = (
        _english(get("city"), "city"),
        _english(subdivisions[0], "subdivisions[0]"),
        _english(country, "country"),
        code,
    )
    return (*values, RESOLVED if any(values) else NOT_FOUND)


def _english(entity: Any, role: str) -> str | None:
    if not entity:
        return None
    if not isinstance(entity, dict):
        raise _OtherSchemaError(_what(role, entity, "a map"))
    names = entity.get("names")
    if not names:
        return None
    if not isinstance(names, dict):
        raise _OtherSchemaError(_what(f"{role}.names", names, "a map"))
    name = names.get("en")
    if name is None or isinstance(name, str):
        return name
    raise _OtherSchemaError(_what(f"{role}.names.en", name, "text"))


def _what(role: str, value: Any, expected: str) -> str:
    """What a record holds where the schema has something else, for an error message."""
    shown = repr(value)
    shown = shown if len(shown) <= 60 else f"{shown[:57]}..."
    return f"{role} is {shown} ({type(value).__name__}, not {expected})"


def _geo_frame(code: U8, table: pl.DataFrame, record_of_row: Index) -> pl.DataFrame:
    """The lookup_many frame: the geo columns of each row from ``table`` (the distinct records; the row
    past its end for none), and the status of each code."""
    status = pl.Series(STATUS, STATUSES, dtype=pl.String).gather(code)
    with_none = pl.concat([table.drop(STATUS), pl.DataFrame(schema=_GEO_SCHEMA).drop(STATUS).clear(1)])
    return with_none.rechunk()[record_of_row].with_columns(status)
