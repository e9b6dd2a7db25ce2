"""Many address values parsed and classified at once, as :meth:`GeoDatabase.lookup` does one.

Each value gets a status code (missing, invalid, private, or pending: a global address to look up),
and the global ones come out as numpy arrays of IPv4 and IPv6 addresses, with the rows they come from.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import polars as pl

from sessionize.geo._numpy import NumpyOnFirstUse
from sessionize.geo.columns import _INVALID, _MISSING, _PENDING, _PRIVATE
from sessionize.privacy import client_address_expr

if TYPE_CHECKING:
    import numpy as np

    from sessionize.geo._numpy import U8, U32, U64, Index, Mask
else:
    np = NumpyOnFirstUse(globals())

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


@dataclass
class _Addresses:
    """The parsed values of lookup_many: a status code for each, and the global addresses to look up
    with the rows they come from."""

    code: U8
    v4_rows: Index
    v4: U32
    v6_rows: Index
    v6_hi: U64
    v6_lo: U64


@functools.cache
def _whitespace() -> str:
    """The characters ``str.strip()`` removes, in this Python."""
    return "".join(c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace())


def _parse_addresses(series: pl.Series) -> _Addresses:
    """Classify each value as :meth:`GeoDatabase.lookup` does, up to the database read.

    Values made only of digits, hex letters, dots and colons are parsed with Polars (IPv4) or
    ``socket.inet_pton`` (IPv6: it accepts exactly what ``ipaddress`` does, scope ids aside). The
    others are stripped and cut at the first comma with Polars, then parsed the same way; only those
    with a scope id ("%") go through ``ipaddress``. A port after the address
    (:func:`sessionize.privacy.client_address`) is stripped from the values that do not parse as they
    are (a plain ``81.2.69.160:50312`` is no IPv6 address) and from the others before they are parsed.
    """
    code = np.full(series.len(), _INVALID, dtype=np.uint8)
    found = _Found()
    kinds = _kinds(series)
    code[kinds["empty"]] = _MISSING
    failed = _parse_plain(series, kinds, None, found)
    if failed.size:
        # "a.b.c.d:port" is plain but no address: parsed again without its port, if it had one.
        values = series.gather(failed)
        stripped = pl.select(client_address_expr(pl.lit(values))).to_series()
        again = stripped != values
        stripped = stripped.filter(again)
        _parse_plain(stripped, _kinds(stripped), failed[again.to_numpy()], found)
    rest = np.flatnonzero(~kinds["plain"] & ~kinds["empty"])
    if rest.size:
        whitespace = _whitespace()
        values = series.gather(rest)
        blank = (values.str.strip_chars(whitespace).str.len_bytes() == 0).to_numpy()
        code[rest[blank]] = _MISSING
        rest = rest[~blank]
        # A forwarded-for list, "client, proxy1, proxy2": the client's address.
        heads = values.filter(~blank).str.splitn(",", 2).struct.field("field_0").str.strip_chars(whitespace)
        # ... without a port after it ("[2001:db8::1]:443").
        heads = pl.select(client_address_expr(pl.lit(heads))).to_series()
        kinds = _kinds(heads)
        _parse_plain(heads, kinds, rest, found)
        # A scope id may hold any character but "%" and "/": ipaddress decides. Anything else is not an
        # address (it stays _INVALID).
        scoped = np.flatnonzero(~kinds["plain"] & heads.str.contains("%", literal=True).to_numpy())
        for at, text in zip(scoped.tolist(), heads.gather(scoped).to_list(), strict=True):
            found.parse_exactly(text, int(rest[at]), code)
    return found.addresses(code)


def _kinds(texts: pl.Series) -> dict[str, Mask]:
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
        self.v4_rows: list[Index] = []
        self.v4: list[U32] = []
        self.v6_rows: list[Index] = []
        self.v6_hi: list[U64] = []
        self.v6_lo: list[U64] = []
        #: Global addresses parsed by ipaddress: (row, version, value).
        self.exact: list[tuple[int, int, int]] = []

    def parse_exactly(self, text: str, row: int, code: U8) -> None:
        """Parse and classify one value with ipaddress, as lookup does."""
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            return
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if not is_public(address):
            code[row] = _PRIVATE
            return
        self.exact.append((row, address.version, int(address)))

    def addresses(self, code: U8) -> _Addresses:
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


def _parse_plain(texts: pl.Series, kinds: dict[str, Mask], rows: Index | None, found: _Found) -> Index:
    """Parse the plain values (only address characters): IPv4 with Polars, IPv6 with inet_pton.

    ``rows`` maps positions in ``texts`` to rows of the result (``None``: the same). The invalid ones
    are left out; the rows of those with a colon that inet_pton refused are returned.
    """
    v4_at = np.flatnonzero(kinds["v4"])
    if v4_at.size:
        # Four octets of 0-255 (_IPV4): their sum, each at its place, fits in 32 bits.
        octets = pl.col("ip").str.split_exact(".", 3)
        value = sum(octets.struct.field(f"field_{i}").cast(pl.UInt32) * (1 << (24 - 8 * i)) for i in range(4))
        packed = pl.DataFrame([texts.gather(v4_at).alias("ip")]).lazy().select(value).collect()
        found.v4_rows.append(v4_at if rows is None else rows[v4_at])
        found.v4.append(packed.to_series().to_numpy())
    v6_at = np.flatnonzero(kinds["plain"] & kinds["colon"])
    if v6_at.size:
        ok, hi, lo = _parse_v6(texts.gather(v6_at).to_list())
        found.v6_rows.append(v6_at[ok] if rows is None else rows[v6_at[ok]])
        found.v6_hi.append(hi)
        found.v6_lo.append(lo)
        return v6_at[~ok] if rows is None else rows[v6_at[~ok]]
    return np.empty(0, np.intp)


def _parse_v6(texts: list[str]) -> tuple[Mask, U64, U64]:
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
def _maybe_not_global(version: int) -> tuple[U64, U64]:
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


def is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether an address is one a visitor's device has on the internet: ``is_global`` and not multicast
    (Python before 3.13 counts ``224.0.0.1`` and ``ff0e::1`` as global; a multicast group is no host and
    has no place, so it counts with the private and reserved addresses)."""
    return address.is_global and not address.is_multicast


def _maybe_not_global_mask(values: U64, version: int) -> Mask:
    firsts, lasts = _maybe_not_global(version)
    at = np.searchsorted(firsts, values, side="right") - 1
    maybe: Mask = (at >= 0) & (values <= lasts[np.maximum(at, 0)])
    return maybe


def _is_global_v4(values: U32) -> Mask:
    """ipaddress's is_global of each IPv4 address: True outside the ranges that may not be global, and
    ipaddress's own answer inside them."""
    is_global = ~_maybe_not_global_mask(values.astype(np.uint64), 4)
    for at in np.flatnonzero(~is_global).tolist():
        is_global[at] = is_public(ipaddress.IPv4Address(int(values[at])))
    return is_global


def _is_global_v6(hi: U64, lo: U64) -> Mask:
    """As :func:`_is_global_v4`, for IPv6 addresses given as their high and low 64 bits."""
    is_global = ~_maybe_not_global_mask(hi, 6)
    for at in np.flatnonzero(~is_global).tolist():
        is_global[at] = is_public(ipaddress.IPv6Address((int(hi[at]) << 64) | int(lo[at])))
    return is_global
