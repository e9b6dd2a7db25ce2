"""Apache and nginx access logs (``combined``, ``common`` and ``vhost_combined`` formats) to event rows.

Parsing is one regular expression per line, run by Polars over the whole column (no Python loop
per line). A line that does not match the format, or whose ``[17/May/2015:10:05:03 +0000]``
timestamp does not parse, is set aside as a malformed row with its 1-based line number.

Visitors
--------
Web servers log no user id, so a visitor is identified as log analyzers (AWStats, GoAccess,
Matomo's log importer) do: by the client address plus the user agent (``ip+ua``), or by the address
alone (``ip``). This is a heuristic with known limits:

- **Shared addresses** (NAT, office and campus networks, carrier-grade NAT on mobile networks, VPNs,
  Tor exits) put many people behind one IP; people on the same IP with the same browser build are
  merged into one visitor, and with ``ip`` alone everyone behind the address is.
- **Changing addresses**: phones moving between networks, IPv6 privacy addresses that rotate, relay
  services (iCloud Private Relay) and IP-rotating crawlers split one person into several visitors,
  and so one visit into several sessions.
- **User agents are not unique**: reduced user agents (Chrome freezes most of its version string)
  make collisions on a shared address more likely, and a browser update mid-visit splits a visitor.
- **Proxies and CDNs**: behind a load balancer or CDN the logged address is the proxy's unless the
  server logs the real client (``mod_remoteip``, nginx ``real_ip``); otherwise every visitor looks
  like one.

Counts of visitors and sessions from logs are therefore estimates; for exact counts, log a user or
session id (a cookie) and read that column instead.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Literal, get_args, overload

import polars as pl

from sessionize import schema as S
from sessionize.config import DEFAULT_ASSET_PATTERN as DEFAULT_ASSET_PATTERN
from sessionize.config import DEFAULT_VISITOR_KEY as DEFAULT_VISITOR_KEY
from sessionize.config import VISITOR_KEYS, check_pattern
from sessionize.config import VisitorKey as VisitorKey
from sessionize.distinct import map_distinct
from sessionize.errors import UsageError
from sessionize.privacy import anonymize_ips, client_addresses

LogFormat = Literal["combined", "common", "vhost_combined"]
LOG_FORMATS: tuple[LogFormat, ...] = get_args(LogFormat)


#: The input column holding one raw log line, and the 0-based line index beside it.
LINE = "line"
ROW = "_row"
#: ``reject_reason`` of a line that does not match the log format.
MALFORMED_REASON = "malformed_log_line"
#: ``reject_reason`` of a line with a NUL byte inside it (after its first character): no server writes
#: one, so the line is damaged (a crash or a copytruncate hole in the middle of it), not data.
NUL_REASON = "nul_byte_in_line"
#: The NUL character. A run of them before a line is the hole that a crash with delayed allocation, or
#: logrotate's ``copytruncate`` under a writer that does not append, leaves in a log: not data, skipped.
NUL = "\x00"
#: The column that :func:`parse_access_log` fills with :func:`visitor_key_expr` (a user id alias).
VISITOR = S.VISITOR
#: The truncated address a visitor id starts with under ``--anonymize-ip`` (dropped after).
_KEY_IP = "_visitor_ip"
#: Hex digits of the keyed hash that tells visitors apart under ``--anonymize-ip`` (64 bits).
KEYED_DIGITS = 16

#: Values of the ``event`` column. Page views are what the core counts (``page_view`` is one of the
#: default ``--pageview-events``); the other two still count as events of their session.
PAGE_VIEW = "page_view"
ASSET = "asset"
REQUEST = "request"

#: Requests for static files, matched case-insensitively against the request path (the URL without
#: its query string and fragment): images, CSS, JavaScript and source maps, fonts, feeds and sitemaps,
#: ``favicon.ico`` and ``robots.txt``.
#: Feeds addressed by query string rather than path, matched against the query string: WordPress
#: without pretty permalinks (``/?feed=rss2``), Blosxom (``/?flav=rss20``), ``?format=atom``.
DEFAULT_FEED_QUERY_PATTERN = r"(?i)(?:^|&)(?:feed|flav|format)=[\w-]*(?:rss|atom|rdf)"

# A double-quoted field as Apache writes it: `"` and `\` inside are escaped with a backslash. Written
# unrolled ([^"\\]* runs between escapes), which Polars' regex engine captures a little faster than
# (?:[^"\\]|\\.)*.
_QUOTED = r'[^"\\]*(?:\\.[^"\\]*)*'
# A byte count: at most 18 digits, which any 64-bit integer holds (a longer one is no byte count: its line
# is malformed, where it stopped the whole run as a failed cast).
_BYTES = r"[0-9]{1,18}|-"
# Fields are separated by exactly one space, as both servers write them: \s+ there makes capturing
# about four times slower. The request line is captured whole and split afterwards (_split_request):
# an alternative for bad request lines here would nearly triple the time. A byte-order mark that an editor
# left at the start of the file is skipped, or it would end up in the first line's ip.
# The client field is an address, or what a proxy's X-Forwarded-For header gave (nginx's
# $http_x_forwarded_for): addresses separated by ", ", the client's first.
_HEAD = (
    r"(?P<ip>\S+(?:, \S+)*) (?P<ident>\S+) (?P<auth_user>\S+) \[(?P<time>[^\]]*)\] "
    rf'"(?P<request>{_QUOTED})" (?P<status>[0-9]{{3}}) (?P<bytes>{_BYTES})'
)
_START = r"^\x{FEFF}?"
# The line ends after the last field (a CRLF log's CR kept by the reader too), or a space (a tab) and
# more fields, which are ignored: some configurations append request time, upstream address or
# X-Forwarded-For. Not any whitespace: a log whose lines end in a lone CR is one line to the reader, and
# its requests after the first were taken for such fields and dropped (review of stop 55).
_END = r"(?:[ \t]|\r?$)"
_TAIL = rf' "(?P<referrer>{_QUOTED})" "(?P<user_agent>{_QUOTED})"'
_COMBINED = rf"{_HEAD}{_TAIL}{_END}"
# What the strict fields above miss, read only for the lines they leave: a user name with spaces (nginx
# fills $remote_user from any request's Authorization: Basic header, even where no page asks for one;
# Apache's %u after a 401 is whatever the client sent; neither escapes a space), or an X-Forwarded-For list
# whose first part, the client's own, has one. A stranger's request made its line malformed, which stopped
# every run that reads the log (review of stop 52). The ident is then ``-`` (as in all but identd set-ups),
# the client field an address or a list (``a b, 10.0.0.2``: a space only before its first comma, so that a
# vhost_combined line, "host:port address", is still no combined line unless its client is a list), the
# user name anything but brackets and quotes up to the time in its one shape. The regex engine is linear
# in the line's length however the fields are cut.
_LOG_TIME = r"[0-9]{2}/[A-Za-z]{3}/[0-9]{4}:[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)? [+-][0-9]{4}"
_AFTER_TIME = rf'\] "(?P<request>{_QUOTED})" (?P<status>[0-9]{{3}}) (?P<bytes>{_BYTES})'
# Neither loose field holds a bracket or a quote: a line cut off after its ident and run into the next line
# (``... "GET /checkout HT3.3.3.3 - - [...] "GET /b" ...``) stays malformed, not one request made of two.
_LOOSE_HEADS = (
    rf'(?P<ip>\S+|[^,\[\]"]*(?:, \S+)+) (?P<ident>-) (?P<auth_user>[^\[\]"]*?) '
    rf"\[(?P<time>{_LOG_TIME}){_AFTER_TIME}",
)
_LOOSE_PATTERNS: dict[LogFormat, tuple[str, ...]] = {
    "combined": tuple(f"{_START}{head}{_TAIL}{_END}" for head in _LOOSE_HEADS),
    "common": tuple(rf"{_START}{head}(?:{_TAIL})?{_END}" for head in _LOOSE_HEADS),
    "vhost_combined": tuple(rf"{_START}(?P<vhost>\S+) {head}{_TAIL}{_END}" for head in _LOOSE_HEADS),
}
_PATTERNS: dict[LogFormat, str] = {
    "combined": _START + _COMBINED,
    # A common log's line that has the referrer and user agent after its fields is a combined line (a
    # LogFormat changed from common to combined in the middle of the file): read as written, not cut.
    "common": rf"{_START}{_HEAD}(?:{_TAIL})?{_END}",
    # Apache's vhost_combined (Debian's other_vhosts_access.log): the virtual host and port first.
    "vhost_combined": rf"{_START}(?P<vhost>\S+) {_COMBINED}",
}
# Optional fractional seconds, for servers configured to log them (Apache's %{msec_frac}t).
_TIME_FORMAT = "%d/%b/%Y:%H:%M:%S%.f %z"
_TIMESTAMP = pl.Datetime("us", "UTC")
_FIELDS = "_fields"
_HAS_NUL = "_has_nul"
_REQUEST = "_request"
_UA_DIGEST_CHARS = 8

#: The columns of a parsed log, in order (``visitor_id`` only when a visitor key is asked for).
PARSED_SCHEMA: dict[str, pl.DataType] = {
    "ip": pl.String(),
    "ident": pl.String(),
    "auth_user": pl.String(),
    "timestamp": _TIMESTAMP,
    "method": pl.String(),
    "url": pl.String(),
    "protocol": pl.String(),
    "status": pl.Int32(),
    "bytes": pl.Int64(),
    "referrer": pl.String(),
    "user_agent": pl.String(),
    "event": pl.String(),
}
#: ``vhost_combined`` logs have the virtual host too, as logged (``host:port``); the other formats have no
#: such column, so that ``--filter vhost=...`` on them is an error, not a filter of every line.
VHOST = "vhost"
MALFORMED_SCHEMA: dict[str, pl.DataType] = {
    "source_row": pl.Int64(),
    "raw_line": pl.String(),
    "reject_reason": pl.String(),
}


def check_log_format(log_format: str) -> LogFormat:
    """Validate a log format name (``combined``, ``common`` or ``vhost_combined``)."""
    for known in LOG_FORMATS:
        if log_format == known:
            return known
    raise UsageError(f"Log format {log_format!r} is not one of {', '.join(LOG_FORMATS)}.")


def detect_log_format(first_lines: list[str]) -> LogFormat | None:
    """The format that most of ``first_lines`` (blank lines aside) match, or ``None``.

    ``combined`` is tried first, since a combined line is also a valid common line with extra
    fields; a ``vhost_combined`` line (the virtual host first) matches neither. A majority rather
    than every line is asked for, so that a stray bad line near the top does not hide the format.

    >>> detect_log_format(['::1 - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 5 "-" "curl/8"'])
    'combined'
    >>> detect_log_format(['::1 - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 5'])
    'common'
    >>> detect_log_format(['a.example:443 ::1 - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 5 "" ""'])
    'vhost_combined'
    >>> detect_log_format(["user_id,timestamp"]) is None
    True
    """
    lines = pl.Series(LINE, first_lines, dtype=pl.String).str.strip_chars_start(NUL)
    lines = lines.filter(lines.str.contains(r"\S"))
    if lines.is_empty():
        return None
    # The strict fields first: read loosely (a client field with spaces), a vhost_combined line is a
    # combined one whose client is "host:port address".
    for loose in (False, True):
        for log_format in LOG_FORMATS:
            patterns = _LOOSE_PATTERNS[log_format] if loose else (_PATTERNS[log_format],)
            matched = pl.any_horizontal(pl.col(LINE).str.contains(pattern) for pattern in patterns)
            count = pl.DataFrame([lines]).select(matched.sum()).item()
            if count * 2 > lines.len():
                return log_format
    return None


def without_leading_nuls(line: pl.Expr) -> pl.Expr:
    """``line`` without the run of NUL bytes before it (see :data:`NUL`)."""
    return line.str.strip_chars_start(NUL)


@dataclass(frozen=True)
class NulRuns:
    """The runs of NUL bytes before lines of a log (:func:`leading_nul_runs`): how many bytes in all,
    before how many lines, and the first such line (0-based; None when there are none)."""

    nul_bytes: int = 0
    lines: int = 0
    first_row: int | None = None

    def __add__(self, other: NulRuns) -> NulRuns:
        rows = [row for row in (self.first_row, other.first_row) if row is not None]
        return NulRuns(self.nul_bytes + other.nul_bytes, self.lines + other.lines, min(rows, default=None))


def leading_nul_runs(lines: pl.DataFrame) -> NulRuns:
    """The NUL bytes before the lines of ``lines`` (``line`` and ``_row``), which
    :func:`parse_access_log` skips: a crash, or logrotate's ``copytruncate``, leaves such a hole."""
    line = pl.col(LINE)
    skipped = (line.str.len_bytes() - without_leading_nuls(line).str.len_bytes()).alias("_nuls")
    runs = lines.select(skipped, pl.col(ROW).cast(pl.Int64)).filter(pl.col("_nuls") > 0)
    if runs.is_empty():
        return NulRuns()
    total, first = runs.select(pl.col("_nuls").sum(), pl.col(ROW).min()).row(0)
    return NulRuns(int(total), runs.height, int(first))


def _none_if_dash(text: pl.Expr) -> pl.Expr:
    # Servers write "-" for a header that was not sent; "" appears when a client sends it empty.
    return pl.when(text.is_in(["-", ""])).then(None).otherwise(text)


def _unescape(text: pl.Expr) -> pl.Expr:
    # Apache writes `"` as \" and `\` as \\. Every real quote is preceded by an odd number of
    # backslashes, the last of which escapes it, so replacing \" before \\ is exact. Other escapes
    # (\xhh for non-printable bytes, nginx's \x22) are kept as written.
    return text.str.replace_all('\\"', '"', literal=True).str.replace_all("\\\\", "\\", literal=True)


def _path(url: pl.Expr) -> pl.Expr:
    return url.str.replace(r"[?#].*$", "")


def _query(url: pl.Expr) -> pl.Expr:
    return url.str.extract(r"\?([^#]*)", 1)


def is_asset_expr(
    asset_pattern: str = DEFAULT_ASSET_PATTERN,
    *,
    feed_query_pattern: str | None = DEFAULT_FEED_QUERY_PATTERN,
) -> pl.Expr:
    """Whether the request in ``url`` is for a static file, by :data:`DEFAULT_ASSET_PATTERN`.

    ``asset_pattern`` is matched case-insensitively against the path (the URL without its query
    string, so ``/app.js?v=3`` is an asset); ``feed_query_pattern`` against the query string (``None``
    turns it off). Raises :class:`UsageError` for a pattern that is not a valid regular expression.
    """
    check_pattern(asset_pattern, "--asset-pattern")
    url = pl.col("url")
    # A user's pattern is case-insensitive too: /IMG_001.JPG is as much an image as /img.jpg.
    asset = _path(url).str.contains(f"(?i){asset_pattern}")
    if feed_query_pattern is not None:
        check_pattern(feed_query_pattern, "feed query pattern")
        asset = asset | _query(url).str.contains(feed_query_pattern).fill_null(False)
    return asset.fill_null(False)


#: 206 Partial Content answers a Range request: a byte range of a resource (a video or audio file a player
#: streams in pieces, a download resumed), never a page. AWStats counts only 200 and 304 as pages
#: (ValidHTTPCodes="200 304").
PARTIAL_CONTENT = 206


def _page_view(asset: pl.Expr) -> pl.Expr:
    status = pl.col("status")
    is_get = pl.col("method") == "GET"
    success = (status >= 200) & (status < 400) & (status != PARTIAL_CONTENT)
    return (is_get & success & pl.col("url").is_not_null() & ~asset).fill_null(False)


def is_page_view_expr(
    asset_pattern: str = DEFAULT_ASSET_PATTERN,
    *,
    feed_query_pattern: str | None = DEFAULT_FEED_QUERY_PATTERN,
) -> pl.Expr:
    """Page views: successful (2xx or 3xx) GET requests that are not for assets (:func:`is_asset_expr`).

    Reads the ``method``, ``status`` and ``url`` columns of a parsed log; never null. A redirect
    (301, 302) and the page it leads to are two page views, as the definition says; a 304 (the
    browser's cached copy is still current) is a page view, as in AWStats. A 206 (Partial Content: a
    byte range of a resource, as a media player or a resumed download asks for) is not, as in AWStats,
    whose ValidHTTPCodes are 200 and 304. HEAD requests (monitors, link checkers) are not either.
    """
    return _page_view(is_asset_expr(asset_pattern, feed_query_pattern=feed_query_pattern))


def event_expr(
    asset_pattern: str = DEFAULT_ASSET_PATTERN,
    *,
    feed_query_pattern: str | None = DEFAULT_FEED_QUERY_PATTERN,
) -> pl.Expr:
    """The ``event`` name of each request of a parsed log.

    ``page_view`` (:func:`is_page_view_expr`), ``asset`` (a request for a static file, whatever its
    method or status) or ``request`` (anything else: POST and HEAD requests, errors for pages,
    request lines that do not parse).
    """
    asset = is_asset_expr(asset_pattern, feed_query_pattern=feed_query_pattern)
    return (
        pl.when(_page_view(asset))
        .then(pl.lit(PAGE_VIEW))
        .when(asset)
        .then(pl.lit(ASSET))
        .otherwise(pl.lit(REQUEST))
        .alias("event")
    )


# The request line "METHOD target PROTOCOL". The fast form covers nearly every line; the slow one (a
# lazy target, so several times slower) runs only on the rest: targets with spaces (nginx logs the raw
# line) and HTTP/0.9 lines without a protocol.
_REQUEST_FAST = r"^(?P<method>[A-Za-z]+) (?P<url>\S+) (?P<protocol>[A-Za-z]+/[0-9.]+)$"
_REQUEST_SLOW = r"^(?P<method>[A-Za-z]+) (?P<url>.+?)(?: (?P<protocol>[A-Za-z]+/[0-9.]+))?$"
_REQUEST_FIELDS = ("method", "url", "protocol")


def _split_request(frame: pl.LazyFrame) -> pl.LazyFrame:
    """Replace the ``_request`` column by ``method``, ``url`` and ``protocol``.

    A request line that is not ``METHOD target [PROTOCOL]``, such as the ``-`` nginx writes for a
    connection that sent no request, or TLS bytes sent to a plain-HTTP port, gives nulls: the line is
    still a request that the server answered.
    """
    request = pl.col(_REQUEST)
    fast = request.str.extract_groups(_REQUEST_FAST).alias("_fast")
    frame = frame.with_columns(fast)
    missed = pl.col("_fast").struct.field("method").is_null()
    slow = pl.when(missed).then(request).str.extract_groups(_REQUEST_SLOW).alias("_slow")
    frame = frame.with_columns(slow)
    return frame.with_columns(
        pl.coalesce(pl.col("_fast").struct.field(name), pl.col("_slow").struct.field(name)).alias(name)
        for name in _REQUEST_FIELDS
    ).with_columns(_unescape(pl.col("url")).alias("url"))


def _ua_digests(values: list[str | None]) -> pl.Series:
    return pl.Series(
        [
            None if value is None else hashlib.sha256(value.encode()).hexdigest()[:_UA_DIGEST_CHARS]
            for value in values
        ],
        dtype=pl.String,
    )


def _ua_digest(user_agents: pl.Series) -> pl.Series:
    # SHA-256 is defined by its standard, unlike Polars' hash (which may change between releases),
    # so the ids in an output file are the same with every Polars version. It runs once per distinct
    # user agent (a few thousand in a big log), not once per line.
    return map_distinct(user_agents, _ua_digests)


def visitor_key_expr(kind: VisitorKey = DEFAULT_VISITOR_KEY, *, ip_column: str = "ip") -> pl.Expr:
    """A visitor id from the ``ip`` and ``user_agent`` columns of a parsed log.

    ``ip`` is the client address as logged. ``ip+ua`` is the address, ``|`` and the first 8 hex
    digits of the SHA-256 of the user agent (``echo -n "$UA" | sha256sum | cut -c1-8`` gives the
    same): readable by address, short, and the same on every run and machine. A line without a user
    agent (``-``, or a common-format log) gets the address alone. 32 bits of digest make two user
    agents on one address collide about once in 4 billion pairs. See the module docstring for the
    limits of identifying visitors this way.

    >>> frame = pl.DataFrame({"ip": ["10.0.0.1", "10.0.0.1"], "user_agent": ["curl/8.5.0", None]})
    >>> frame.select(visitor_key_expr("ip+ua")).to_series().to_list()
    ['10.0.0.1|07d1d539', '10.0.0.1']
    """
    ip = pl.col(ip_column)
    if kind == "ip":
        return ip.alias(VISITOR)
    if kind == "ip+ua":
        user_agent = pl.col("user_agent")
        digest = user_agent.map_batches(_ua_digest, return_dtype=pl.String, is_elementwise=True)
        return (
            pl.when(user_agent.is_null())
            .then(ip)
            .otherwise(pl.concat_str(ip, pl.lit("|"), digest))
            .alias(VISITOR)
        )
    raise UsageError(f"--visitor-key {kind!r} is not one of {', '.join(VISITOR_KEYS)}.")


def _parsed_lines(lines: pl.LazyFrame, pattern: str, *, vhost: bool) -> pl.DataFrame:
    """The fields of ``lines`` (``_row`` and ``line``) by ``pattern``: a line that does not match has a
    null ``ip``."""
    field = pl.col(_FIELDS).struct.field
    # A common line has no referrer and user agent (null); one written as combined has them.
    referrer = _none_if_dash(_unescape(field("referrer")))
    user_agent = _none_if_dash(_unescape(field("user_agent")))
    return (
        lines.select(
            pl.col(ROW),
            pl.col(LINE),
            pl.col(LINE).str.extract_groups(pattern).alias(_FIELDS),
            pl.col(LINE).str.contains(NUL, literal=True).alias(_HAS_NUL),
        )
        .select(
            pl.col(ROW),
            pl.col(LINE),
            pl.col(_HAS_NUL),
            # The first of a proxy's addresses is the client's, without the port a proxy may have written
            # after it (Azure Application Gateway's "81.2.69.160:50312"): one visitor, not one a connection.
            # One regex test each, rewritten only where a port is (a third of the cost of rewriting all).
            field("ip")
            .str.replace(",.*", "")
            .map_batches(client_addresses, return_dtype=pl.String, is_elementwise=True)
            .alias("ip"),
            _none_if_dash(field("ident")).alias("ident"),
            _none_if_dash(field("auth_user")).alias("auth_user"),
            # In the one shape servers write (Apache's %t, nginx's $time_local): strptime alone read a
            # two-digit year as the year 15 and one-digit days and minutes too.
            pl.when(field("time").str.contains(f"^{_LOG_TIME}$"))
            .then(field("time").str.to_datetime(_TIME_FORMAT, time_unit="us", strict=False))
            .alias("timestamp"),
            field("request").alias(_REQUEST),
            field("status").cast(pl.Int32).alias("status"),
            # Apache's %b writes "-" for an empty body: zero bytes, not an unknown number.
            pl.when(field("bytes") == "-").then(0).otherwise(field("bytes").cast(pl.Int64)).alias("bytes"),
            referrer.alias("referrer"),
            user_agent.alias("user_agent"),
            *([field(VHOST).alias(VHOST)] if vhost else []),
        )
        .pipe(_split_request)
        .collect()
    )


@overload
def parse_access_log(
    lines: pl.LazyFrame,
    *,
    log_format: str = ...,
    asset_pattern: str = ...,
    feed_query_pattern: str | None = ...,
    visitor_key: VisitorKey | None = ...,
    anonymize_ip: bool = ...,
    visitor_secret: bytes | None = ...,
) -> tuple[pl.LazyFrame, pl.DataFrame]: ...


@overload
def parse_access_log(
    lines: pl.DataFrame,
    *,
    log_format: str = ...,
    asset_pattern: str = ...,
    feed_query_pattern: str | None = ...,
    visitor_key: VisitorKey | None = ...,
    anonymize_ip: bool = ...,
    visitor_secret: bytes | None = ...,
) -> tuple[pl.DataFrame, pl.DataFrame]: ...


def parse_access_log(
    lines: pl.LazyFrame | pl.DataFrame,
    *,
    log_format: str = "combined",
    asset_pattern: str = DEFAULT_ASSET_PATTERN,
    feed_query_pattern: str | None = DEFAULT_FEED_QUERY_PATTERN,
    visitor_key: VisitorKey | None = DEFAULT_VISITOR_KEY,
    anonymize_ip: bool = False,
    visitor_secret: bytes | None = None,
) -> tuple[pl.LazyFrame | pl.DataFrame, pl.DataFrame]:
    """Parse raw access log lines into request rows, and set aside the lines that do not parse.

    Parameters
    ----------
    lines
        One String column ``line`` (a log line, without its line end) and a 0-based ``_row`` (its
        index in the file, added when absent), as ``pl.scan_lines(path, row_index_name="_row")``
        gives. Blank lines are skipped: they are not requests.
    log_format
        ``combined`` (``%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i"``, the default of
        nginx and of most Apache set-ups), ``common`` (the same without referrer and user agent) or
        ``vhost_combined`` (``%v:%p`` and a space before the combined fields: Apache's format for
        several sites in one log). Fields after these are ignored. The client field may be a proxy's
        ``X-Forwarded-For`` list (``203.0.113.9, 10.0.0.2``): the first address is the client's. A port
        after it (``203.0.113.9:50312``, ``[2001:db8::1]:443``) is left out of ``ip`` and the visitor id.
    asset_pattern, feed_query_pattern
        Which requests are static files rather than page views (see :func:`is_asset_expr`).
    visitor_key
        Add a ``visitor_id`` column made by :func:`visitor_key_expr` (``None``: do not).
    anonymize_ip, visitor_secret
        ``--anonymize-ip``: visitors are told apart by their full address as without it, but the
        visitor id (so the user id and the generated session ids) does not show it: it is the
        truncated address, ``|`` and a hash of the plain visitor id keyed with ``visitor_secret``
        (:func:`keyed_visitor_ids`), which ``anonymize_ip`` requires. The ``ip`` column stays as logged
        (the run truncates it after the geo lookup, or before with ``before-geo``).

    Returns
    -------
    parsed
        A frame of the same kind as ``lines`` with the columns of :data:`PARSED_SCHEMA` (``ip``,
        ``ident``, ``auth_user``, ``timestamp`` as UTC instants, ``method``, ``url``, ``protocol``,
        ``status``, ``bytes``, ``referrer``, ``user_agent``, ``event``; a ``vhost_combined`` log's
        ``vhost`` too: the virtual host as logged, ``host:port``), then ``visitor_id`` and
        ``_row``. ``-`` in ident, auth_user, referrer and user_agent is null; a ``-`` byte count is 0
        (Apache's ``%b`` writes ``-`` for an empty body); ``\\"`` and ``\\\\`` in quoted fields are
        unescaped. A request line that is not ``METHOD target [PROTOCOL]`` (nginx's ``-``, garbage)
        has null method, url and protocol and is a ``request`` event. A common log has null
        referrer and user_agent.
    malformed
        The lines that do not match the format or whose timestamp does not parse: ``source_row``
        (the 1-based line number), ``raw_line`` and ``reject_reason`` (``malformed_log_line``).

    A lazy ``lines`` is parsed (collected) once here, since both results come from the same pass;
    ``parsed`` is then a LazyFrame over the result.
    """
    known = check_log_format(log_format)
    if visitor_key is not None and visitor_key not in VISITOR_KEYS:
        raise UsageError(f"--visitor-key {visitor_key!r} is not one of {', '.join(VISITOR_KEYS)}.")
    event = event_expr(asset_pattern, feed_query_pattern=feed_query_pattern)  # checks the patterns early
    is_lazy = isinstance(lines, pl.LazyFrame)
    frame = lines.lazy()
    if ROW not in frame.collect_schema().names():
        frame = frame.with_row_index(ROW)
    lines_read = frame.with_columns(without_leading_nuls(pl.col(LINE))).filter(
        pl.col(LINE).str.contains(r"\S")
    )
    result = _parsed_lines(lines_read, _PATTERNS[known], vhost=known == "vhost_combined")
    missed = result.filter(pl.col("ip").is_null() & ~pl.col(_HAS_NUL)).select(ROW, LINE)
    for pattern in _LOOSE_PATTERNS[known] if missed.height else ():
        again = _parsed_lines(missed.lazy(), pattern, vhost=known == "vhost_combined")
        found = again.filter(pl.col("ip").is_not_null())
        if found.height:
            rows = found.get_column(ROW)
            result = pl.concat([result.filter(~pl.col(ROW).is_in(rows.implode())), found]).sort(ROW)
        missed = again.filter(pl.col("ip").is_null()).select(ROW, LINE)
        if not missed.height:
            break
    # The ip group is in every match, so a null ip means that the line does not match the format. A NUL
    # inside a line (those before it are gone) is damage, whatever the fields around it look like.
    ok = pl.col("ip").is_not_null() & pl.col("timestamp").is_not_null() & ~pl.col(_HAS_NUL)
    malformed = result.filter(~ok).select(
        (pl.col(ROW).cast(pl.Int64) + 1).alias("source_row"),
        pl.col(LINE).alias("raw_line"),
        pl.when(pl.col(_HAS_NUL))
        .then(pl.lit(NUL_REASON))
        .otherwise(pl.lit(MALFORMED_REASON))
        .alias("reject_reason"),
    )
    # A client address of "-" (a proxy's X-Forwarded-For field on a direct request) is no address: such
    # lines would otherwise all be one visitor "-" (per user agent). Without an address there is no
    # visitor: the line is rejected for its empty user id, as log analyzers count it invalid.
    parsed = result.filter(ok).with_columns(event, _none_if_dash(pl.col("ip")).alias("ip"))
    parsed = parsed.select(
        *PARSED_SCHEMA,
        *([VHOST] if known == "vhost_combined" else []),
        *([visitor_key_expr(visitor_key)] if visitor_key is not None else []),
        ROW,
    )
    if anonymize_ip and visitor_key is not None:
        if visitor_secret is None:
            raise UsageError(
                "--anonymize-ip on an access log needs a key for its visitor ids, which are keyed hashes of "
                "the full address: with --state, give --hash-user-ids SECRET_ENV (the same in every run)."
            )
        parsed = keyed_visitor_ids(parsed, visitor_secret)
    return (parsed.lazy() if is_lazy else parsed), malformed


def keyed_visitor_ids(parsed: pl.DataFrame, secret: bytes) -> pl.DataFrame:
    """Parsed requests whose visitor ids show no full address (``--anonymize-ip``): the truncated
    address, ``|`` and the first :data:`KEYED_DIGITS` hex digits of HMAC-SHA256(secret, the visitor
    id as without the option), e.g. ``81.2.69.0|5f1c0b9e2a7d4c31``; the digest alone for an address
    that is not an IP address.

    Visitors are told apart as without the option (two in one /24 with the same browser stay two).
    The digest is keyed because an address in a /24 is one of 256: an unkeyed hash of it would be
    reversed by trying them all. One HMAC per distinct visitor."""

    def digest(values: list[str | None]) -> pl.Series:
        return pl.Series(
            [
                None
                if value is None
                else hmac.new(secret, value.encode("utf-8"), hashlib.sha256).hexdigest()[:KEYED_DIGITS]
                for value in values
            ],
            dtype=pl.String,
        )

    truncated = anonymize_ips(parsed.lazy().with_columns(pl.col("ip").alias(_KEY_IP)), _KEY_IP)
    keyed = pl.col(VISITOR).map_batches(lambda ids: map_distinct(ids, digest), return_dtype=pl.String)
    prefix = (pl.col(_KEY_IP) + pl.lit("|")).fill_null("")
    return truncated.with_columns((prefix + keyed).alias(VISITOR)).drop(_KEY_IP).collect()
