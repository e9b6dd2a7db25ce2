"""Privacy controls: truncated IP addresses and keyed hashes of user ids, once per distinct value; and
the client address of a logged value (without the port a proxy may have written after it)."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping, Sequence

import polars as pl

from sessionize import schema as S
from sessionize.distinct import fresh_name, map_distinct
from sessionize.errors import MissingColumnError, UsageError

# A client address with the port it connected from, as Azure Application Gateway writes it into
# X-Forwarded-For: IPv4 "a.b.c.d:port", or an IPv6 address in brackets, "[addr]:port" (or "[addr]": the
# brackets alone). A bare IPv6 address has no port to strip: "2001:db8::1:443" is one address.
_V4_PORT = r"((?:[0-9]{1,3}\.){3}[0-9]{1,3}):[0-9]{1,5}"
_V6_PORT = r"\[([0-9A-Fa-f:.]+(?:%[^\]\s,]+)?)\](?::[0-9]{1,5})?"
# The same at the start of a value (blanks before it dropped, as the geo lookup drops them), before the
# end, a space or a comma (a forwarded-for list's first address): the separator is kept (group 3), as
# Rust's regex has no look-ahead.
CLIENT_PORT = rf"^\s*(?:{_V6_PORT}|{_V4_PORT})([\s,]|$)"
_ADDRESS_PORT = re.compile(rf"(?:{_V6_PORT}|{_V4_PORT})")


def client_address(text: str) -> str:
    """One address without the port a proxy wrote after it (``81.2.69.160:50312`` is ``81.2.69.160``,
    ``[2001:db8::1]:443`` is ``2001:db8::1``); any other text as it is.

    >>> client_address("81.2.69.160:50312"), client_address("[2001:db8::1]:443"), client_address("::1")
    ('81.2.69.160', '2001:db8::1', '::1')
    """
    found = _ADDRESS_PORT.fullmatch(text)
    return text if found is None else found[1] or found[2]


def client_address_expr(ip: pl.Expr) -> pl.Expr:
    """:func:`client_address` of the first address of each value (vectorized): a forwarded-for list
    keeps its proxies, its first address loses its port."""
    return ip.str.replace(CLIENT_PORT, "${1}${2}${3}")


def client_addresses(ips: pl.Series) -> pl.Series:
    """:func:`client_address_expr` of the values that have a port only: one regex test each, and the
    replacement on those alone (the session table's ``ip``, where ports are rare)."""
    ips = ips.cast(pl.String)
    with_port = ips.str.contains(CLIENT_PORT).fill_null(False)
    if not with_port.any():
        return ips
    at = with_port.arg_true()
    stripped = pl.select(client_address_expr(pl.lit(ips.gather(at)))).to_series()
    return ips.scatter(at, stripped)


def anonymize_ip(ip: str | None) -> str | None:
    """Zero the last octet of an IPv4 address and the last 80 bits of an IPv6 one, as Google
    Analytics did. An IPv4-mapped IPv6 address keeps its form, and a 6to4 one loses the last octet of
    the IPv4 address it carries too; a malformed value becomes null. A port after the address (see
    :func:`client_address`) goes with the rest.

    >>> anonymize_ip("81.2.69.160"), anonymize_ip("2001:db8:85a3:8d3:1319:8a2e:370:7348")
    ('81.2.69.0', '2001:db8:85a3::')
    """
    if ip is None or not ip.strip():
        return None
    try:
        address = ipaddress.ip_address(client_address(ip.split(",")[0].strip()))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv4Address):
        return str(ipaddress.IPv4Address(int(address) & ~0xFF))
    if address.ipv4_mapped is not None:
        return "::ffff:" + str(ipaddress.IPv4Address(int(address.ipv4_mapped) & ~0xFF))
    if address.sixtofour is not None:
        # 6to4 (2002:AABB:CCDD::/48) carries the whole IPv4 address in its first 48 bits: zero its last
        # octet too, as for the address itself (Teredo's and NAT64's IPv4 sit in the zeroed 80 bits).
        return str(ipaddress.IPv6Address(int(address) & ~((1 << 88) - 1)))
    return str(ipaddress.IPv6Address(int(address) & ~((1 << 80) - 1)))


def anonymize_ips(frame: pl.LazyFrame, column: str = S.IP) -> pl.LazyFrame:
    """Replace ``column`` by its anonymized addresses (see :func:`anonymize_ip`)."""
    return frame.with_columns(
        pl.col(column).map_batches(
            lambda ips: map_distinct(
                ips, lambda values: pl.Series([anonymize_ip(v) for v in values], dtype=pl.String)
            ),
            return_dtype=pl.String,
        )
    )


def hash_user_ids(events: pl.LazyFrame, *, secret: bytes, column: str = S.USER) -> pl.LazyFrame:
    """Replace user ids by HMAC-SHA256(secret, id) in hex: stable across runs with the same secret. An
    empty id stays empty, and so does one of only whitespace, which is no id either (a rejected row's:
    its hash would look like a real id)."""

    def digest(values: list[str | None]) -> pl.Series:
        return pl.Series(
            [v if not v else hmac.new(secret, v.encode("utf-8"), hashlib.sha256).hexdigest() for v in values],
            dtype=pl.String,
        )

    ids = pl.col(column)
    hashed = ids.map_batches(lambda values: map_distinct(values, digest), return_dtype=pl.String)
    return events.with_columns(pl.when(S.is_blank(ids)).then(ids).otherwise(hashed).alias(column))


#: How a hidden column's values are hidden: a function of a frame and the column's name.
Hide = Callable[[pl.LazyFrame, str], pl.LazyFrame]


def hide_copies(
    frame: pl.LazyFrame, columns: Sequence[str], hidden: Sequence[tuple[str, Hide]]
) -> pl.LazyFrame:
    """``frame`` with each cell of the text ``columns`` that copies a hidden value of its row (equal to
    the row's value of a ``hidden`` column) hidden as that value is (``hide`` applied to the cell: the
    same hash, the same truncated address). The hidden columns themselves are left as they are: call
    before hiding them, while their values are as read."""
    taken = set(frame.collect_schema().names())
    copies: dict[str, list[str]] = {}
    for name in columns:
        for column, hide in hidden:
            taken.add(copy := fresh_name("_copy", taken))
            same = pl.when(pl.col(name) == pl.col(column)).then(pl.col(name))
            frame = hide(frame.with_columns(same.alias(copy)), copy)
            copies.setdefault(name, []).append(copy)
    if not copies:
        return frame
    restored = [pl.coalesce(*found, name).alias(name) for name, found in copies.items()]
    return frame.with_columns(restored).drop([copy for found in copies.values() for copy in found])


#: ``--agg`` functions that give no value of the column they read, only how many.
_COUNTING = ("count", "n_unique")


def refuse_private_aggregates(
    aggregates: Iterable[S.Aggregate],
    columns: S.ColumnMap,
    available: Sequence[str],
    *,
    source: str,
    anonymize_ip: bool,
    hash_ids: bool,
    hash_sessions: bool = False,
    json_sources: Mapping[str, str] | None = None,
    in_turn: Mapping[str, Sequence[str]] | None = None,
    logins: Sequence[str] = (),
) -> None:
    """Refuse a ``--agg`` that would write a value the privacy options hide: ``first(ip)`` under
    ``--anonymize-ip`` (the full address), ``first(user_id)`` or ``min`` of a login id under
    ``--hash-user-ids`` (the id in clear), and of the session id too with ``hash_sessions``
    (``--require-session-id``: see :func:`sessionize.partition.hidden_ids`). ``count`` and ``n_unique``
    of those columns are fine. Nor may ``--agg`` write a text column of JSON objects that a hidden value
    was read from (``json_sources``: PostHog's ``properties`` in its CSV export, holding ``$ip`` and
    ``distinct_id`` as sent). ``in_turn``: the columns a role is read from in turn, by role (a preset's
    ``properties.ip`` and ``properties.$ip``), each hidden as the role's column is; ``logins``: other
    login id columns (an access log's ``auth_user``), hidden as login ids."""
    protected: dict[str, tuple[str, str]] = {}
    turns = in_turn or {}
    if anonymize_ip and columns.ip is not None:
        for column in turns.get(S.IP) or [columns.ip]:
            protected[column] = ("the IP address column", "--anonymize-ip")
    if hash_ids:
        protected[columns.user_id] = ("the user id column", "--hash-user-ids")
        for column in logins:
            protected.setdefault(column, ("the login id column", "--hash-user-ids"))
        if columns.stitch is not None:
            protected[columns.stitch] = ("the login id column", "--hash-user-ids")
        if columns.user_fallback is not None:
            # --user-fallback-col: the login id some events take as their user id.
            protected.setdefault(columns.user_fallback, ("the login id column", "--hash-user-ids"))
        if hash_sessions and columns.client_session_id is not None:
            for column in turns.get(S.CLIENT_SESSION) or [columns.client_session_id]:
                protected.setdefault(column, ("the session id column", "--hash-user-ids"))
    for column, (what, flag) in list(protected.items()):
        if json_sources and column in json_sources:
            protected.setdefault(json_sources[column], (f"the JSON text {what} was read from", flag))
    if not protected:
        return
    for aggregate in aggregates:
        if aggregate.column is None or aggregate.function in _COUNTING:
            continue
        try:
            found = S.find_column(aggregate.column, available, source=source, flag=f"--agg {aggregate.spec}")
        except MissingColumnError:
            continue  # reported where the aggregates are read
        if found in protected:
            what, flag = protected[found]
            raise UsageError(
                f"--agg {aggregate.spec} would write values of {found}, {what} that {flag} hides, as they "
                f"are. Leave that --agg out, or count them instead: count({aggregate.column}) or "
                f"n_unique({aggregate.column})."
            )
