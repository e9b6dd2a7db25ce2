"""Apache/nginx access logs: every edge of the line format on synthetic lines, then a real 10,000-line log.

The figures asserted on the real log were found independently with grep and awk (the commands are
next to each assertion), not by running the parser.
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import polars as pl
import pytest

import sessionize
from sessionize import accesslog as A
from sessionize import schema as S
from sessionize.errors import UsageError
from sessionize.normalize import prepare_events
from tests.helpers import (
    APACHE_LOG,
    CITY_DB,
    EVERY_PATH,
    path_options,
    path_sessions,
    run_cli,
    session_rows,
    values_written,
    words,
)

UA = "Mozilla/5.0 (X11; Linux x86_64; rv:25.0) Gecko/20100101 Firefox/25.0"
T = "[17/May/2015:10:05:03 +0000]"
INSTANT = datetime(2015, 5, 17, 10, 5, 3, tzinfo=UTC)


def line(
    request: str = "GET / HTTP/1.1",
    *,
    ip: str = "83.149.9.216",
    time_: str = T,
    status: str = "200",
    size: str = "1234",
    referrer: str = "-",
    user_agent: str = UA,
    head: str = "- -",
) -> str:
    """One combined-format line; fields are written as given (quotes and escapes included)."""
    return f'{ip} {head} {time_} "{request}" {status} {size} "{referrer}" "{user_agent}"'


def frame_of(lines: list[str]) -> pl.DataFrame:
    return pl.DataFrame({"line": lines}, schema={"line": pl.String}).with_row_index("_row")


def parse(lines: list[str], **options: Any) -> tuple[pl.DataFrame, pl.DataFrame]:
    return A.parse_access_log(frame_of(lines), **options)


def one(text: str, **options: Any) -> dict[str, Any]:
    parsed, malformed = parse([text], **options)
    assert malformed.height == 0, malformed.rows()
    assert parsed.height == 1
    return parsed.row(0, named=True)


# --- the line format -----------------------------------------------------------------------------


def test_combined_line_gives_every_field() -> None:
    row = one(
        line(
            "GET /blog/post.html?utm_source=x HTTP/1.1",
            referrer="https://www.google.com/search?q=a",
            head="- frank",
            size="5120",
        )
    )
    assert row == {
        "ip": "83.149.9.216",
        "ident": None,
        "auth_user": "frank",
        "timestamp": INSTANT,
        "method": "GET",
        "url": "/blog/post.html?utm_source=x",
        "protocol": "HTTP/1.1",
        "status": 200,
        "bytes": 5120,
        "referrer": "https://www.google.com/search?q=a",
        "user_agent": UA,
        "event": "page_view",
        "visitor_id": "83.149.9.216|" + hashlib.sha256(UA.encode()).hexdigest()[:8],
        "_row": 0,
    }


def test_output_schema_is_the_same_for_both_formats() -> None:
    combined, _ = parse([line()], log_format="combined")
    common, _ = parse(['::1 - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 5'], log_format="common")
    expected = {**A.PARSED_SCHEMA, "visitor_id": pl.String(), "_row": pl.UInt32()}
    assert dict(combined.schema) == expected
    assert dict(common.schema) == expected
    assert combined.schema["timestamp"] == pl.Datetime("us", "UTC")


def test_common_format_has_no_referrer_or_user_agent() -> None:
    row = one('10.1.2.3 - bob [17/May/2015:10:05:03 +0000] "GET /a HTTP/1.0" 304 -', log_format="common")
    assert (row["ip"], row["auth_user"], row["url"], row["status"], row["bytes"]) == (
        "10.1.2.3",
        "bob",
        "/a",
        304,
        0,
    )
    assert row["referrer"] is None and row["user_agent"] is None
    # Without a user agent, the visitor is the address alone.
    assert row["visitor_id"] == "10.1.2.3"
    assert row["event"] == "page_view"


def test_common_format_reads_a_combined_line_as_written() -> None:
    """A line with the referrer and user agent after the common fields (a LogFormat changed to combined
    mid-file) keeps them when the file is read as common; other trailing fields are still ignored
    (review 56 F4)."""
    row = one(line(referrer="http://a.example/"), log_format="common")
    assert row["referrer"] == "http://a.example/" and row["user_agent"] == UA and row["url"] == "/"
    other = one(
        '1.2.3.4 - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 5 0.012 "-"', log_format="common"
    )
    assert other["referrer"] is None and other["user_agent"] is None and other["url"] == "/"


def test_combined_format_rejects_a_common_line() -> None:
    parsed, malformed = parse(['1.2.3.4 - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 5'])
    assert parsed.height == 0
    assert malformed.rows() == [
        (1, '1.2.3.4 - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 5', "malformed_log_line")
    ]


@pytest.mark.parametrize(
    "address",
    [
        "2001:db8::1",
        "::1",
        "::ffff:81.2.69.160",
        "fe80::1ff:fe23:4567:890a",
        "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
    ],
)
def test_ipv6_client_addresses(address: str) -> None:
    row = one(line(ip=address))
    assert row["ip"] == address
    assert row["visitor_id"].startswith(address + "|")


def test_escaped_quotes_and_backslashes_are_unescaped() -> None:
    # Apache writes " as \" and \ as \\ inside quoted fields.
    row = one(
        line(
            r"GET /search?q=\"exact\" HTTP/1.1",
            referrer=r"http://a.example/?q=\"x\"",
            user_agent=r"Mozilla/5.0 \"quoted\" C:\\path\\",
        )
    )
    assert row["url"] == '/search?q="exact"'
    assert row["referrer"] == 'http://a.example/?q="x"'
    assert row["user_agent"] == 'Mozilla/5.0 "quoted" C:\\path\\'


def test_an_escaped_backslash_before_the_closing_quote() -> None:
    # \\" is an escaped backslash and then the end of the field, not an escaped quote.
    row = one(line(user_agent="agent\\\\"))
    assert row["user_agent"] == "agent\\"


def test_an_unescaped_quote_inside_a_field_is_malformed() -> None:
    parsed, malformed = parse([line(user_agent='Mozilla "bad" agent')])
    assert parsed.height == 0 and malformed["source_row"].to_list() == [1]


def test_dash_fields_are_null_and_dash_bytes_are_zero() -> None:
    row = one(line(size="-", referrer="-", user_agent="-"))
    assert (row["ident"], row["auth_user"], row["referrer"], row["user_agent"]) == (None, None, None, None)
    assert row["bytes"] == 0
    assert row["visitor_id"] == "83.149.9.216"


def test_empty_referrer_and_user_agent_are_null() -> None:
    row = one(line(referrer="", user_agent=""))
    assert row["referrer"] is None and row["user_agent"] is None


@pytest.mark.parametrize(
    "stamp",
    [
        "[17/May/2015:10:05:03 +0000]",
        "[17/May/2015:12:05:03 +0200]",
        "[17/May/2015:03:05:03 -0700]",
        "[17/May/2015:15:35:03 +0530]",
        "[16/May/2015:23:05:03 -1100]",
        "[17/may/2015:10:05:03 +0000]",
    ],
)
def test_offsets_are_honoured_and_compared_as_instants(stamp: str) -> None:
    assert one(line(time_=stamp))["timestamp"] == INSTANT


def test_mixed_offsets_sort_as_instants() -> None:
    parsed, _ = parse(
        [
            line("GET /second HTTP/1.1", time_="[17/May/2015:12:06:00 +0200]"),  # 10:06 UTC
            line("GET /first HTTP/1.1", time_="[17/May/2015:03:05:59 -0700]"),  # 10:05:59 UTC
        ]
    )
    assert parsed.sort("timestamp")["url"].to_list() == ["/first", "/second"]


def test_fractional_seconds_are_kept() -> None:
    row = one(line(time_="[17/May/2015:10:05:03.250 +0000]"))
    assert row["timestamp"] == INSTANT.replace(microsecond=250_000)


def test_bad_lines_are_set_aside_with_their_line_numbers() -> None:
    lines = [
        line("GET /ok HTTP/1.1"),
        "this is not a log line",
        line(time_="[32/May/2015:10:05:03 +0000]"),  # no such day
        line(time_="[17/May/2015:10:05:03]"),  # no offset
        "",  # blank: skipped, not a request and not an error
        line(time_="[2015-05-17T10:05:03Z]"),  # another time format
        line("GET /also-ok HTTP/1.1"),
        # Truncated mid user agent (the real log has one, line 8899).
        '46.118.127.106 - - [20/May/2015:12:05:17 +0000] "GET /x HTTP/1.1" 200 235 "-" "Mozilla/5.0 (compat',
        line(status="2000"),
        line(size="12k"),
        "   ",
    ]
    parsed, malformed = parse(lines)
    assert parsed["url"].to_list() == ["/ok", "/also-ok"]
    assert parsed["_row"].to_list() == [0, 6]
    assert dict(malformed.schema) == A.MALFORMED_SCHEMA
    assert malformed["source_row"].to_list() == [2, 3, 4, 6, 8, 9, 10]
    assert malformed["raw_line"].to_list() == [lines[i - 1] for i in (2, 3, 4, 6, 8, 9, 10)]
    assert set(malformed["reject_reason"]) == {"malformed_log_line"}


def test_extra_trailing_fields_are_ignored() -> None:
    # nginx configs often append request time, upstream time and X-Forwarded-For.
    row = one(line() + ' rt=0.123 uct="0.000" "203.0.113.7, 10.0.0.1"')
    assert (row["user_agent"], row["status"], row["url"]) == (UA, 200, "/")
    row = one(line() + " 0.004", log_format="common")
    assert row["bytes"] == 1234


def test_a_byte_order_mark_is_not_part_of_the_address() -> None:
    parsed, _ = A.parse_access_log(pl.scan_lines(("\ufeff" + line() + "\n" + line()).encode()))
    assert parsed.collect()["ip"].to_list() == ["83.149.9.216", "83.149.9.216"]
    assert A.detect_log_format(["\ufeff" + line()]) == "combined"


def test_whitespace_around_the_line_end() -> None:
    # A CR left by a reader that does not strip CRLF is trailing text, ignored.
    assert one(line() + "\r")["user_agent"] == UA


@pytest.mark.parametrize(
    ("request_line", "method", "url", "protocol"),
    [
        ("GET /a HTTP/1.1", "GET", "/a", "HTTP/1.1"),
        ("GET / HTTP/2.0", "GET", "/", "HTTP/2.0"),
        ("GET /", "GET", "/", None),  # HTTP/0.9
        ("GET /a b HTTP/1.1", "GET", "/a b", "HTTP/1.1"),  # nginx logs the raw target, spaces included
        ("GET http://proxy.example/x?y=1 HTTP/1.1", "GET", "http://proxy.example/x?y=1", "HTTP/1.1"),
        ("-", None, None, None),  # nginx: the connection sent no request (400, 408)
        ("", None, None, None),
        (r"\x16\x03\x01\x00\xa5\x01\x00\x00", None, None, None),  # TLS sent to a plain-HTTP port
        ("GET", None, None, None),
    ],
)
def test_request_lines(request_line: str, method: str | None, url: str | None, protocol: str | None) -> None:
    row = one(line(request_line, status="400" if method is None else "200"))
    assert (row["method"], row["url"], row["protocol"]) == (method, url, protocol)
    if method is None:
        # Kept, not rejected: the server did answer it. It is never a page view.
        assert row["event"] == "request"


def test_the_row_index_is_added_when_missing_and_kept_otherwise() -> None:
    parsed, _ = A.parse_access_log(pl.DataFrame({"line": [line(), "", line()]}))
    assert parsed["_row"].to_list() == [0, 2]
    parsed, _ = A.parse_access_log(pl.DataFrame({"line": [line()], "_row": [41]}))
    assert parsed["_row"].to_list() == [41]


def test_lazy_in_lazy_out() -> None:
    parsed, malformed = A.parse_access_log(frame_of([line(), "junk"]).lazy())
    assert isinstance(parsed, pl.LazyFrame) and isinstance(malformed, pl.DataFrame)
    assert parsed.collect().height == 1 and malformed.height == 1
    eager, _ = A.parse_access_log(frame_of([line()]))
    assert isinstance(eager, pl.DataFrame)


def test_empty_input() -> None:
    parsed, malformed = parse([])
    assert parsed.height == 0 and malformed.height == 0
    assert dict(malformed.schema) == A.MALFORMED_SCHEMA


def test_unknown_log_format_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="'apache' is not one of combined, common"):
        parse([line()], log_format="apache")


# --- page views, assets, events ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "url", "status", "event"),
    [
        ("GET", "/", 200, "page_view"),
        ("GET", "/about", 200, "page_view"),
        ("GET", "/blog/post.html", 200, "page_view"),
        ("GET", "/index.php?id=3", 200, "page_view"),
        ("GET", "/blog/?utm_medium=feed&utm_source=feedburner", 200, "page_view"),
        ("GET", "/page", 304, "page_view"),  # the browser's copy is current: still a view
        ("GET", "/old", 301, "page_view"),  # 2xx/3xx, as the definition says
        ("GET", "/download/tool.jar", 200, "page_view"),  # downloads are not in the default list
        ("GET", "/missing", 404, "request"),
        ("GET", "/boom", 500, "request"),
        ("POST", "/login", 200, "request"),
        ("HEAD", "/", 200, "request"),
        ("OPTIONS", "/", 200, "request"),
        ("GET", "/style.css", 200, "asset"),
        ("GET", "/app.js?v=3", 200, "asset"),  # the query string is not part of the extension
        ("GET", "/app.min.js.map", 200, "asset"),
        ("GET", "/IMG_001.JPG", 200, "asset"),  # case-insensitive
        ("GET", "/a/photo.jpeg", 200, "asset"),
        ("GET", "/logo.svg", 200, "asset"),
        ("GET", "/pic.webp", 200, "asset"),
        ("GET", "/fonts/x.woff2", 200, "asset"),
        ("GET", "/fonts/x.ttf", 200, "asset"),
        ("GET", "/favicon.ico", 200, "asset"),
        ("GET", "/robots.txt", 200, "asset"),
        ("GET", "/feed/", 200, "asset"),
        ("GET", "/blog/rss", 200, "asset"),
        ("GET", "/index.atom", 200, "asset"),
        ("GET", "/sitemap.xml", 200, "asset"),
        ("GET", "/?feed=rss2", 200, "asset"),  # WordPress without pretty permalinks
        ("GET", "/blog/tags/puppet?flav=rss20", 200, "asset"),  # Blosxom, as in the real log
        ("GET", "/?flav=atom", 200, "asset"),
        ("GET", "/missing.png", 404, "asset"),  # an asset whatever its status
        ("POST", "/upload.png", 200, "asset"),
        ("GET", "/rss-reader-review", 200, "page_view"),  # not a feed: only a whole path segment
        ("GET", "/css-tricks", 200, "page_view"),
        ("GET", "/notes.txt", 200, "page_view"),
    ],
)
def test_page_views_and_assets(method: str, url: str, status: int, event: str) -> None:
    row = one(line(f"{method} {url} HTTP/1.1", status=str(status)))
    assert row["event"] == event
    requests = pl.DataFrame({"method": [method], "url": [url], "status": [status]})
    assert requests.select(A.is_page_view_expr()).item() is (event == "page_view")


def test_page_view_needs_every_column_known() -> None:
    requests = pl.DataFrame(
        {"method": [None, "GET", "GET"], "url": ["/", None, "/"], "status": [200, 200, None]},
        schema={"method": pl.String, "url": pl.String, "status": pl.Int32},
    )
    assert requests.select(A.is_page_view_expr()).to_series().to_list() == [False, False, False]


def test_a_custom_asset_pattern() -> None:
    rows = [line(f"GET {url} HTTP/1.1") for url in ("/static/app", "/style.css", "/STATIC/x")]
    parsed, _ = parse(rows, asset_pattern=r"^/static/")
    # Only the given pattern counts (case-insensitively), not the default one.
    assert parsed["event"].to_list() == ["asset", "page_view", "asset"]


def test_the_feed_query_rule_can_be_turned_off() -> None:
    parsed, _ = parse([line("GET /?feed=rss2 HTTP/1.1")], feed_query_pattern=None)
    assert parsed["event"].to_list() == ["page_view"]


def test_an_invalid_asset_pattern_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match=r"--asset-pattern '\(unclosed' is not a valid regular expression"):
        A.is_page_view_expr("(unclosed")
    with pytest.raises(UsageError, match="--asset-pattern"):
        parse([line()], asset_pattern="[a-")


def test_an_invalid_pattern_s_error_says_why(tmp_path: Path) -> None:
    """The message kept only the expression Polars names after the reason, and showed the pattern's
    backslashes doubled (review of stop 52): it gave no reason and no fix."""
    log = tmp_path / "access.log"
    log.write_text(line() + "\n", encoding="utf-8")
    result = run_cli(log, "--no-geo", "--asset-pattern", r"\.(?!html?$)", "-o", tmp_path / "o.csv")
    assert result.exit_code == 2
    message = words(result.stderr)
    assert r"--asset-pattern '\.(?!html?$)' is not a valid regular expression" in message
    assert "look-around" in message and "is not supported" in message and "col(" not in message


# --- visitors ------------------------------------------------------------------------------------


def test_visitor_keys() -> None:
    parsed, _ = parse(
        [
            line(ip="10.0.0.1", user_agent="curl/8.5.0"),
            line(ip="10.0.0.1", user_agent="Wget/1.21"),
            line(ip="10.0.0.2", user_agent="curl/8.5.0"),
            line(ip="10.0.0.1", user_agent="-"),
        ]
    )
    # `echo -n curl/8.5.0 | sha256sum | cut -c1-8` is 07d1d539: the same on every Polars version.
    assert parsed["visitor_id"].to_list() == [
        "10.0.0.1|07d1d539",
        "10.0.0.1|" + hashlib.sha256(b"Wget/1.21").hexdigest()[:8],
        "10.0.0.2|07d1d539",
        "10.0.0.1",
    ]
    assert parsed.select(A.visitor_key_expr("ip")).to_series().to_list() == [
        "10.0.0.1",
        "10.0.0.1",
        "10.0.0.2",
        "10.0.0.1",
    ]
    by_ip, _ = parse([line()], visitor_key="ip")
    assert by_ip["visitor_id"].to_list() == ["83.149.9.216"]
    without, _ = parse([line()], visitor_key=None)
    assert "visitor_id" not in without.columns


def test_visitor_key_is_lazy_friendly() -> None:
    lazy = pl.LazyFrame({"ip": ["1.1.1.1"] * 3, "user_agent": ["a", "b", "a"]})
    keys = lazy.select(A.visitor_key_expr()).collect(engine="streaming").to_series().to_list()
    assert keys[0] == keys[2] != keys[1]


def test_unknown_visitor_key_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="--visitor-key 'cookie' is not one of ip\\+ua, ip"):
        A.visitor_key_expr("cookie")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="--visitor-key"):
        parse([line()], visitor_key="cookie")


# --- format detection ----------------------------------------------------------------------------


def test_detect_log_format() -> None:
    common = '1.2.3.4 - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 5'
    assert A.detect_log_format([line(), line()]) == "combined"
    assert A.detect_log_format([common, common]) == "common"
    # A stray bad line at the top does not hide the format; blank lines do not count.
    assert A.detect_log_format(["garbage", "", line(), line()]) == "combined"
    assert A.detect_log_format(["user_id,timestamp", "u1,2024-05-01T10:00:00Z"]) is None
    assert A.detect_log_format(['{"user_id": "u1"}']) is None
    assert A.detect_log_format([]) is None
    assert A.detect_log_format(["", "  "]) is None


# --- how io.py feeds it, and what the core makes of it -------------------------------------------


def test_lines_from_plain_gzip_and_crlf_files(tmp_path: Path) -> None:
    text = f"{line('GET /a HTTP/1.1')}\r\n{line('GET /b HTTP/1.1')}\r\n\r\nnot a log line\r\n"
    plain = tmp_path / "access.log"
    plain.write_bytes(text.encode())
    packed = tmp_path / "access.log.gz"
    packed.write_bytes(gzip.compress(text.encode()))
    for path in (plain, packed):
        parsed, malformed = A.parse_access_log(pl.scan_lines(path, row_index_name="_row"))
        assert parsed.collect()["url"].to_list() == ["/a", "/b"]
        assert malformed.rows() == [(4, "not a log line", "malformed_log_line")]


def test_parsed_columns_are_found_by_the_core() -> None:
    parsed, _ = parse(
        [
            line("GET / HTTP/1.1", referrer="https://www.google.com/"),
            line("GET /style.css HTTP/1.1", time_="[17/May/2015:12:06:00 +0200]"),
        ]
    )
    columns = S.resolve_columns(parsed.columns)
    assert (columns.user_id, columns.timestamp, columns.url, columns.referrer, columns.ip, columns.event) == (
        "visitor_id",
        "timestamp",
        "url",
        "referrer",
        "ip",
        "event",
    )
    events = prepare_events(parsed.lazy(), columns=columns).collect()
    assert events[S.IS_PAGEVIEW].to_list() == [True, False]
    assert events[S.TIME].to_list() == [INSTANT, datetime(2015, 5, 17, 10, 6, tzinfo=UTC)]
    assert events[S.REFERRER].to_list() == ["https://www.google.com/", None]


# --- the real log --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def apache() -> tuple[pl.DataFrame, pl.DataFrame]:
    parsed, malformed = A.parse_access_log(pl.scan_lines(APACHE_LOG, row_index_name="_row"))
    return parsed.collect(), malformed


def test_real_log_lines_and_the_one_bad_line(apache: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    parsed, malformed = apache
    # wc -l: 10000. awk -F'"' 'NF!=7': only line 8899, whose user agent is cut off without a closing quote.
    assert parsed.height + malformed.height == 10_000
    assert malformed["source_row"].to_list() == [8899]
    assert (
        malformed["raw_line"]
        .item()
        .endswith('"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html')
    )
    assert 8898 not in parsed["_row"].to_list()


def test_real_log_figures(apache: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    parsed, _ = apache
    # awk '{print $1}' | sort -u | wc -l
    assert parsed["ip"].n_unique() == 1_753
    # 1,862 distinct (field 1, field 6 of -F'"') pairs, less the bad line's own pair.
    assert parsed["visitor_id"].n_unique() == 1_861
    # awk -F'"' '{print $2}' | awk '{print $1}' | sort | uniq -c (GET 9,952 includes line 8899).
    assert dict(parsed["method"].value_counts().iter_rows()) == {
        "GET": 9_951,
        "HEAD": 42,
        "POST": 5,
        "OPTIONS": 1,
    }
    assert parsed["protocol"].null_count() == 0
    # awk '$10=="-"' | wc -l: 669 (no line logs 0); sum of $10 is 2,747,282,740, less line 8899's 235.
    assert parsed.filter(pl.col("bytes") == 0).height == 669
    assert parsed["bytes"].sum() == 2_747_282_505
    # awk -F'"' '$4=="-"': 4,073 lines, 4,072 without line 8899; '$6=="-"': 190.
    assert parsed["referrer"].null_count() == 4_072
    assert parsed["user_agent"].null_count() == 190
    # Every ident and auth user is "-".
    assert parsed["ident"].null_count() == parsed["auth_user"].null_count() == 9_999
    # awk '$9==404' | wc -l: 213; 304s: 445.
    assert parsed.filter(pl.col("status") == 404).height == 213
    assert parsed.filter(pl.col("status") == 304).height == 445
    # The timestamps span the four days of the log ($4 sorted: 17/May/2015:10:05:00 .. 20/May/2015:21:05:59).
    assert parsed["timestamp"].min() == datetime(2015, 5, 17, 10, 5, tzinfo=UTC)
    assert parsed["timestamp"].max() == datetime(2015, 5, 20, 21, 5, 59, tzinfo=UTC)


def test_real_log_events(apache: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    parsed, _ = apache
    # An awk program with the same rules (GET, 200-399 but 206, path not matching the asset extensions,
    # query not flav=/feed=/format= rss|atom) counts 3,227 page views, 6,580 assets and 192 other requests.
    # (Before PDFs were assets, 3,282, 6,524 and 193: awk '{split($7,a,"?")} tolower(a[1]) ~ /\.pdf$/
    # {print $6, $9}' gives 55 GETs, 15 200s, 34 206s and 6 304s, and one HEAD; no other new extension.)
    assert dict(parsed["event"].value_counts().iter_rows()) == {
        "page_view": 3_227,
        "asset": 6_580,
        "request": 192,
    }
    # grep -c '"GET /robots.txt': 180, all assets.
    robots = parsed.filter(pl.col("url") == "/robots.txt")
    assert robots.height == 180 and set(robots["event"]) == {"asset"}
    # The 901 Blosxom feed polls (grep -c 'flav=') are assets, not page views.
    feeds = parsed.filter(pl.col("url").str.contains("flav="))
    assert feeds.height == 901 and set(feeds["event"]) == {"asset"}


def test_real_log_specific_lines(apache: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    parsed, _ = apache
    by_row = {row["_row"]: row for row in parsed.filter(pl.col("_row").is_in([0, 24])).iter_rows(named=True)}
    # sed -n 1p
    first = by_row[0]
    assert (first["ip"], first["timestamp"], first["method"], first["status"], first["bytes"]) == (
        "83.149.9.216",
        datetime(2015, 5, 17, 10, 5, 3, tzinfo=UTC),
        "GET",
        200,
        203023,
    )
    assert first["url"] == "/presentations/logstash-monitorama-2013/images/kibana-search.png"
    assert first["referrer"] == "http://semicomplete.com/presentations/logstash-monitorama-2013/"
    assert first["user_agent"] == (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_9_1) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/32.0.1700.77 Safari/537.36"
    )
    assert first["event"] == "asset"
    # sed -n 25p: a Google-referred page view.
    google = by_row[24]
    assert (google["ip"], google["url"], google["protocol"], google["event"]) == (
        "93.114.45.13",
        "/articles/dynamic-dns-with-dhcp/",
        "HTTP/1.1",
        "page_view",
    )
    assert google["referrer"].startswith("http://www.google.ro/url?sa=t&rct=j&q=&esrc=s&source=web&cd=2")
    assert google["user_agent"] == UA
    # grep -c '^66.249.73.135 ': the busiest client (Googlebot) has 482 lines.
    assert parsed.filter(pl.col("ip") == "66.249.73.135").height == 482


def test_detects_the_real_log_as_combined() -> None:
    with APACHE_LOG.open(encoding="utf-8") as handle:
        first = [next(handle).rstrip("\n") for _ in range(20)]
    assert A.detect_log_format(first) == "combined"


def test_parsing_is_vectorized() -> None:
    # 100,000 lines take about 0.3 s; a Python loop per line would take several seconds. The bound is
    # loose so that a busy CI machine does not fail it.
    data = APACHE_LOG.read_bytes() * 10
    start = time.perf_counter()
    parsed, malformed = A.parse_access_log(pl.scan_lines(data, row_index_name="_row"))
    rows = parsed.collect().height
    elapsed = time.perf_counter() - start
    assert (rows, malformed.height) == (99_990, 10)
    assert elapsed < 5.0, f"100,000 lines took {elapsed:.1f}s"


# --- rotated and empty logs (review 44) ------------------------------------------------------------


def _log_line(ip: str, minute: int, path: str) -> str:
    return f'{ip} - - [17/May/2015:10:{minute:02d}:03 +0000] "GET {path} HTTP/1.1" 200 5 "-" "{UA}"\n'


def _logs(directory: Path, pages: dict[str, str]) -> Path:
    """A directory of one-request logs, each file (gzipped when its name ends .gz) a request for its page."""
    directory.mkdir()
    for number, (name, page) in enumerate(pages.items()):
        text = _log_line(f"10.0.0.{number + 1}", 40 - number, page)
        if name.endswith(".gz"):
            (directory / name).write_bytes(gzip.compress(text.encode()))
        else:
            (directory / name).write_text(text)
    return directory


def test_logrotate_names_are_access_logs_alone_and_in_a_directory(tmp_path: Path) -> None:
    """The docs' cron recipe reads access.log.1: "Cannot tell the format" before; and a directory of
    rotated logs read only access.log (1 of 4 events), with no warning."""
    rotated = {"access.log": "/today", "access.log.1": "/yesterday", "access.log.2.gz": "/before"}
    logs = _logs(tmp_path / "nginx", {**rotated, "access.log-20150516": "/dateext"})
    (logs / "error.log").write_text("")  # nginx's, empty: no events
    one = run_cli(logs / "access.log.1", "--no-geo", "-o", tmp_path / "one.csv")
    assert one.exit_code == 0, one.stderr
    assert pl.read_csv(tmp_path / "one.csv")["landing_page"].to_list() == ["/yesterday"]
    every = run_cli(logs, "--no-geo", "-o", tmp_path / "all.csv")
    assert every.exit_code == 0, every.stderr
    pages = pl.read_csv(tmp_path / "all.csv")["landing_page"].to_list()
    assert sorted(pages) == ["/before", "/dateext", "/today", "/yesterday"]


def test_other_logrotate_date_formats_and_apache_s_own_name_are_access_logs(tmp_path: Path) -> None:
    """logrotate's dateformat -%Y-%m-%d, and the man page's -%Y%m%d-%s, and Apache's access_log (its
    httpd.conf's name, RHEL's), rotated or not: a directory run skipped them without a word, exit 0, and
    their days of requests were not in the sessions (review of stop 52)."""
    logs = _logs(
        tmp_path / "httpd",
        {
            "access.log": "/today",
            "access.log-2015-05-16": "/dashed",
            "access.log-2015-05-15.gz": "/gz",
            "access.log-20150514-1431561600": "/epoch",
            "access_log": "/apache",
            "access_log-20150516": "/apache-dateext",
            "ssl_access_log.1": "/apache-ssl",
        },
    )
    every = run_cli(logs, "--no-geo", "-o", tmp_path / "all.csv")
    assert every.exit_code == 0, every.stderr
    pages = sorted(pl.read_csv(tmp_path / "all.csv")["landing_page"].to_list())
    assert pages == ["/apache", "/apache-dateext", "/apache-ssl", "/dashed", "/epoch", "/gz", "/today"]
    named = run_cli(logs / "access_log", "--no-geo", "-o", tmp_path / "one.csv")
    assert named.exit_code == 0, named.stderr
    assert pl.read_csv(tmp_path / "one.csv")["landing_page"].to_list() == ["/apache"]


def test_error_logs_in_a_log_directory_are_skipped(tmp_path: Path) -> None:
    """/var/log/nginx holds error.log and its rotations beside the access logs: a directory run failed
    on error.log.1 ("not an access log format"). They are skipped with a warning; named, one is read."""
    logs = tmp_path / "nginx"
    logs.mkdir()
    (logs / "access.log").write_text(_log_line("10.0.0.1", 40, "/today"))
    (logs / "access.log.1").write_text(_log_line("10.0.0.2", 30, "/yesterday"))
    error = "2015/05/17 10:05:03 [error] 1234#0: *1 open() failed (2: No such file or directory)\n"
    (logs / "error.log").write_text(error)
    (logs / "error.log.1").write_text(error)
    (logs / "ssl_error.log-20150516").write_text(error)
    every = run_cli(logs, "--no-geo", "-o", tmp_path / "all.csv")
    assert every.exit_code == 0, every.stderr
    assert "3 error log(s) skipped" in words(every.stderr)
    assert sorted(pl.read_csv(tmp_path / "all.csv")["landing_page"].to_list()) == ["/today", "/yesterday"]
    assert run_cli(logs / "*.log*", "--no-geo", "-o", tmp_path / "glob.csv").exit_code == 0
    named = run_cli(logs / "error.log.1", "--no-geo", "-o", tmp_path / "error.csv")
    assert named.exit_code != 0 and "not in Apache/nginx combined" in words(named.stderr)
    # Review 46: also when the format is given, and a directory of error logs alone is named as such.
    given = run_cli(logs, "--no-geo", "--input-format", "combined", "-o", tmp_path / "given.csv")
    assert given.exit_code == 0, given.stderr
    assert sorted(pl.read_csv(tmp_path / "given.csv")["landing_page"].to_list()) == ["/today", "/yesterday"]
    for access in ("access.log", "access.log.1"):
        (logs / access).unlink()
    alone = run_cli(logs, "--no-geo", "-o", tmp_path / "alone.csv")
    assert alone.exit_code != 0 and "holds error logs only" in words(alone.stderr)


@pytest.mark.parametrize(
    "content", [b"", b"\n\n  \n", gzip.compress(b"")], ids=["empty", "blank", "empty-gz"]
)
@pytest.mark.parametrize("buckets", [None, "2"])
def test_an_empty_access_log_holds_no_events(tmp_path: Path, content: bytes, buckets: str | None) -> None:
    """The access.log logrotate creates is empty until the first request: an error before ("neither
    combined nor common"), where an empty CSV or NDJSON gives an empty table."""
    source = tmp_path / ("access.log.gz" if content.startswith(b"\x1f\x8b") else "access.log")
    source.write_bytes(content)
    out = tmp_path / "o.csv"
    result = run_cli(source, "--no-geo", "-o", out, *(["--buckets", buckets] if buckets else []))
    assert result.exit_code == 0, result.stderr
    assert pl.read_csv(out).height == 0


def test_an_hourly_run_after_logrotate_created_an_empty_log(tmp_path: Path) -> None:
    log, state, out = tmp_path / "access.log", tmp_path / "state", tmp_path / "sessions"
    log.write_text(_log_line("10.0.0.1", 5, "/a"))
    flags: list[str | Path] = ["--no-geo", "--state", state, "--output-dir", out]
    assert run_cli(log, *flags).exit_code == 0
    log.rename(tmp_path / "access.log.1")
    log.write_text("")
    second = run_cli(log, *flags)
    assert second.exit_code == 0, second.stderr
    log.write_text(_log_line("10.0.0.1", 15, "/b"))
    third = run_cli(log, *flags)
    assert third.exit_code == 0, third.stderr
    sessions = pl.read_parquet(out / "**" / "*.parquet")
    assert sessions.select("landing_page", "exit_page", "event_count").rows() == [("/a", "/b", 2)]


@pytest.mark.parametrize("flags", [[], ["--visitor-key", "ip"], ["--anonymize-ip"], ["--buckets", "2"]])
def test_a_line_without_a_client_address_has_no_visitor(tmp_path: Path, flags: list[str]) -> None:
    """A proxy's X-Forwarded-For field is '-' on a direct request: every such line was the visitor
    '-|<ua>', one visitor of unrelated clients. It has no visitor now: rejected, named, counted."""
    log = tmp_path / "access.log"
    log.write_text(
        _log_line("-", 5, "/direct") + _log_line("10.0.0.1", 6, "/a") + _log_line("-", 7, "/other")
    )
    out, rejects = tmp_path / "o.csv", tmp_path / "rejects.csv"
    failed = run_cli(log, "--no-geo", "-o", out, *flags)
    assert failed.exit_code == 1
    assert "2 line(s) have no client address (first at line 1, line 3)" in words(failed.stderr)
    skipped = run_cli(log, "--no-geo", "-o", out, "--on-invalid", "skip", "--rejects", rejects, *flags)
    assert skipped.exit_code == 0, skipped.stderr
    assert pl.read_csv(out)["landing_page"].to_list() == ["/a"]
    assert pl.read_csv(rejects).select("source_row", "reject_reason").rows() == [
        (1, "empty_user_id"),
        (3, "empty_user_id"),
    ]


@pytest.mark.parametrize(
    "flags", [[], ["--buckets", "2"], ["--input-format", "vhost_combined"], ["--state", "STATE"]]
)
def test_apache_vhost_combined_logs(tmp_path: Path, flags: list[str]) -> None:
    """Apache's vhost_combined (``%v:%p`` before the combined fields; Debian's other_vhosts_access.log)
    was "neither combined nor common". Its lines are read on every path, the virtual host kept as a
    column that --filter selects one site by."""
    log = tmp_path / "other_vhosts_access.log"
    log.write_text(
        "shop.example:443 "
        + _log_line("10.0.0.1", 5, "/a")
        + "blog.example:80 "
        + _log_line("10.0.0.1", 6, "/post")
        + "shop.example:443 "
        + _log_line("10.0.0.1", 7, "/b")
    )
    flags = [str(tmp_path / "state") if flag == "STATE" else flag for flag in flags]
    out = tmp_path / "out"
    target = ["--output-dir", str(out)] if "--state" in flags else ["-o", str(tmp_path / "o.parquet")]
    result = run_cli(log, "--no-geo", "--filter", "vhost=shop.example:443", *target, *flags)
    assert result.exit_code == 0, result.stderr
    sessions = pl.read_parquet(out / "**" / "*.parquet" if "--state" in flags else tmp_path / "o.parquet")
    assert sessions.select("landing_page", "exit_page", "event_count").rows() == [("/a", "/b", 2)]
    parsed, malformed = A.parse_access_log(
        frame_of(log.read_text().splitlines()), log_format="vhost_combined"
    )
    assert malformed.height == 0
    assert parsed.get_column("vhost").to_list() == ["shop.example:443", "blog.example:80", "shop.example:443"]
    assert parsed.get_column("ip").to_list() == ["10.0.0.1"] * 3


def test_only_a_vhost_log_has_a_vhost(tmp_path: Path) -> None:
    """Review 46: a null vhost column in the other formats made --filter vhost=... leave out every line,
    exit 0, where a filter on a column a file lacks is an error."""
    assert "vhost" not in one(line())
    log = tmp_path / "access.log"
    log.write_text(_log_line("10.0.0.1", 5, "/a"))
    result = run_cli(log, "--no-geo", "--filter", "vhost=shop.example:443", "-o", tmp_path / "o.csv")
    assert result.exit_code != 0 and "vhost" in words(result.stderr)
    assert A.detect_log_format(["a.example:443 " + line(), "a.example:443 " + line()]) == "vhost_combined"
    # A vhost line is neither of the others: each format's lines are malformed in the others.
    assert parse(["a.example:443 " + line()])[1].height == 1
    assert parse([line()], log_format="vhost_combined")[1].height == 1


@pytest.mark.parametrize("log_format", ["combined", "common", "vhost_combined"])
def test_a_proxy_address_list_gives_its_first_address(log_format: str) -> None:
    """nginx's $http_x_forwarded_for as the client field: "client, proxy, ..." was a malformed line;
    the first address is the client's (the visitor), the proxies' are left out."""
    head = "a.example:443 " if log_format == "vhost_combined" else ""
    text = head + line(ip="203.0.113.99, 10.0.0.2, 10.0.0.3")
    if log_format == "common":
        text = text.rsplit(' "-" ', 1)[0]
    row = one(text, log_format=log_format)
    assert (row["ip"], row["url"], row["status"]) == ("203.0.113.99", "/", 200)
    assert (
        one(
            head + line(ip="2001:db8::1, ::1"),
            log_format=log_format if log_format != "common" else "combined",
        )["ip"]
        == "2001:db8::1"
    )


#: Two people in one /24 with the same browser, and one visit of the first across two log files.
NEIGHBOURS = ("81.2.69.160", "81.2.69.142")


def _neighbour_logs(directory: Path) -> list[Path]:
    first = directory / "access.log.1"
    first.write_text(_log_line(NEIGHBOURS[0], 5, "/a") + _log_line(NEIGHBOURS[1], 6, "/b"))
    second = directory / "access.log"
    second.write_text(_log_line(NEIGHBOURS[0], 9, "/c"))
    return [first, second]


#: Every engine path with and without --hash-user-ids, for runs under --anonymize-ip (an incremental
#: run needs --hash-user-ids with --anonymize-ip on logs: tested below).
ANONYMIZED_PATHS = pytest.mark.parametrize(
    ("path", "hashed"),
    [
        pytest.param(p.values[0], hashed, id=f"{p.id}-{'hashed' if hashed else 'plain'}", marks=p.marks)
        for p in EVERY_PATH
        for hashed in (False, True)
        if hashed or "state" not in cast(dict[str, Any], p.values[0])
    ],
)


@ANONYMIZED_PATHS
def test_anonymize_ip_tells_visitors_apart_by_the_full_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: dict[str, Any], hashed: bool
) -> None:
    """The visitor id was built from the truncated address under --anonymize-ip: two people in one /24
    with the same browser were one visitor, their visits one session. They are two, as without the
    option, and no output, rejects file or state holds their full addresses (in a visitor id, a session
    id or the ip column)."""
    monkeypatch.setenv("SESSIONIZE_TEST_SECRET", "s3cr3t")
    logs = tmp_path / "logs"
    logs.mkdir()
    files = _neighbour_logs(logs)
    chosen = path_options(path, tmp_path)
    secret = {"hash_user_ids": "SESSIONIZE_TEST_SECRET"} if hashed else {}
    options: dict[str, Any] = {"no_geo": True, "anonymize_ip": True, **secret, **chosen}
    # An incremental path reads the files in two runs, the first visit going on in the second.
    batches = [[file] for file in files] if "state" in path else [files]
    results = [sessionize.run(batch, **options) for batch in batches]
    table = path_sessions(results[-1], chosen)
    assert session_rows(table, "ip", "landing_page", "exit_page", "event_count") in (
        [("81.2.69.0", "/a", "/c", 2), ("81.2.69.0", "/b", "/b", 1)],
        [("81.2.69.0", "/b", "/b", 1), ("81.2.69.0", "/a", "/c", 2)],
    )
    assert table.get_column("user_id").n_unique() == 2
    if not hashed:
        assert table.get_column("user_id").str.starts_with("81.2.69.0|").all()
    assert values_written(tmp_path, NEIGHBOURS, skip=files) == set()
    assert all(address not in user for user in table.get_column("user_id") for address in NEIGHBOURS)


def test_anonymize_ip_visitor_ids_are_keyed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unkeyed hash of an address truncated to its /24 is reversed by trying its 256 addresses: the
    visitor id is keyed, with the --hash-user-ids secret (the same ids in every run) or else a key of
    the run alone. An incremental run without the secret is refused: its state continues sessions by
    visitor id, and a key kept on disk would turn the ids back into the addresses."""
    logs = tmp_path / "logs"
    logs.mkdir()
    files = _neighbour_logs(logs)
    options: dict[str, Any] = {"no_geo": True, "anonymize_ip": True}
    ids = [set(sessionize.run(files, **options).sessions.get_column("user_id")) for _ in range(2)]
    assert ids[0].isdisjoint(ids[1])
    monkeypatch.setenv("SESSIONIZE_TEST_SECRET", "s3cr3t")
    secret = {**options, "hash_user_ids": "SESSIONIZE_TEST_SECRET"}
    assert (
        len({frozenset(sessionize.run(files, **secret).sessions.get_column("user_id")) for _ in range(2)})
        == 1
    )
    with pytest.raises(UsageError, match="--hash-user-ids"):
        sessionize.run(files, **options, state=str(tmp_path / "state"), output_dir=str(tmp_path / "out"))


def _rotation_runs(tmp_path: Path, rotate: Any) -> tuple[pl.DataFrame, list[Any]]:
    """Two incremental runs over ``logs/access.log*`` of the real log's first 200 lines: the first reads
    the live log's 100 lines, then ``rotate(logs, lines)`` rotates it as logrotate would."""
    lines = APACHE_LOG.read_text(encoding="utf-8").splitlines(keepends=True)[:200]
    logs, state, out = tmp_path / "logs", tmp_path / "state", tmp_path / "sessions"
    logs.mkdir()
    (logs / "access.log").write_text("".join(lines[:100]))
    options: dict[str, Any] = {"no_geo": True, "state": str(state), "output_dir": str(out)}
    results = [sessionize.run([str(logs / "access.log*")], **options)]
    rotate(logs, lines)
    results.append(sessionize.run([str(logs / "access.log*")], **options))
    return pl.read_parquet(out / "**" / "*.parquet"), results


def test_a_live_log_renamed_by_logrotate_is_read_from_where_the_last_run_stopped(tmp_path: Path) -> None:
    """Review 54 F7: the live access.log read by a run, then appended to and renamed access.log.1 by
    logrotate (a new access.log beside it), was read again whole as a new file: its 100 lines already
    processed were counted twice (300 events for 200 lines, exit 0). A file that starts with what a run
    read at another path with the same first lines has grown: only its new lines are read."""

    def rotate(logs: Path, lines: list[str]) -> None:
        with (logs / "access.log").open("a") as handle:
            handle.write("".join(lines[100:150]))
        (logs / "access.log").rename(logs / "access.log.1")
        (logs / "access.log").write_text("".join(lines[150:]))

    table, (_, second) = _rotation_runs(tmp_path, rotate)
    assert second.incremental is not None
    assert second.incremental.files_grown == [str(tmp_path / "logs" / "access.log.1")]
    assert second.rows_read == 100
    whole = tmp_path / "whole.log"
    whole.write_text("".join(APACHE_LOG.read_text(encoding="utf-8").splitlines(keepends=True)[:200]))
    once = sessionize.run([whole], no_geo=True).sessions
    assert table.get_column("event_count").sum() == once.get_column("event_count").sum()
    columns = ["user_id", "session_start", "event_count", "landing_page", "exit_page"]
    assert table.sort(columns).select(columns).equals(once.sort(columns).select(columns))


def test_a_processed_log_compressed_by_logrotate_is_skipped(tmp_path: Path) -> None:
    """Review 54 F7's variant: logrotate's ``compress`` turns the processed log into access.log.1.gz
    (the same lines): it was read again whole (100 events counted twice). A .gz file is recognised by
    the content it holds."""

    def rotate(logs: Path, lines: list[str]) -> None:
        with gzip.open(logs / "access.log.1.gz", "wb") as handle:
            handle.write((logs / "access.log").read_bytes())
        (logs / "access.log").write_text("")

    table, (_, second) = _rotation_runs(tmp_path, rotate)
    assert second.incremental is not None
    assert second.incremental.files_skipped == [str(tmp_path / "logs" / "access.log.1.gz")]
    assert (second.rows_read, table.get_column("event_count").sum()) == (0, 100)


def test_a_gz_file_a_state_of_the_last_release_holds_is_skipped(tmp_path: Path) -> None:
    """States written before .gz files were known by their content hold a .gz file's own bytes' SHA-256:
    such a file is still recognised (and not read a second time)."""
    lines = APACHE_LOG.read_text(encoding="utf-8").splitlines(keepends=True)[:50]
    log, state, out = tmp_path / "access.log.1.gz", tmp_path / "state", tmp_path / "sessions"
    with gzip.open(log, "wb") as handle:
        handle.write("".join(lines).encode())
    options: dict[str, Any] = {"no_geo": True, "state": str(state), "output_dir": str(out)}
    sessionize.run([log], **options)
    version = state / (state / "CURRENT").read_text(encoding="utf-8").strip()
    manifest = json.loads((version / "manifest.json").read_text(encoding="utf-8"))
    for entry in manifest["files"]:  # as the last release wrote it
        entry["sha256"] = entry.pop("raw_sha256")
    (version / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    again = sessionize.run([log], **options)
    assert again.incremental is not None
    assert (again.incremental.files_skipped, again.rows_read) == ([str(log)], 0)
    assert pl.read_parquet(out / "**" / "*.parquet").get_column("event_count").sum() == 50


@pytest.mark.parametrize("flags", [[], ["--buckets", "2"]])
def test_the_authenticated_user_of_a_rejected_line_is_hidden_as_a_login_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flags: list[str]
) -> None:
    """Review 54 L3: a log line's HTTP basic-auth user (``auth_user``, a login name) stayed in the clear
    in the rejects file under ``--hash-user-ids``, beside the hashed visitor id. It is hashed as a login
    id is."""
    monkeypatch.setenv("SESSIONIZE_TEST_SECRET", "s3cr3t")
    log = tmp_path / "access.log"
    log.write_text(
        f'203.0.113.7 - frank [17/May/2015:10:05:03 +0000] "GET /a HTTP/1.1" 200 10 "-" "{UA}"\n'
        f'203.0.113.8 - bob [17/May/2099:10:05:03 +0000] "GET /a HTTP/1.1" 200 10 "-" "{UA}"\n'
    )
    rejects = tmp_path / "rejects.csv"
    result = run_cli(log, "--no-geo", "-o", tmp_path / "s.csv", "--hash-user-ids", "SESSIONIZE_TEST_SECRET",
                     "--on-invalid", "skip", "--rejects", rejects, *flags)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    row = pl.read_csv(rejects).row(0, named=True)
    assert row["reject_reason"] == "out_of_range"
    assert row["auth_user"] == hmac.new(b"s3cr3t", b"bob", hashlib.sha256).hexdigest()
    assert "bob" not in rejects.read_text()


def test_an_incremental_run_names_a_cut_gz_log(tmp_path: Path) -> None:
    """A .gz input is known by the content it holds (the rotation tests above): one cut short (a copy
    that stopped) is an error naming it, before anything is read or written, not an unexpected one."""
    data = gzip.compress(APACHE_LOG.read_bytes()[:20_000])
    log = tmp_path / "access.log.1.gz"
    log.write_bytes(data[: len(data) // 2])
    state, out = tmp_path / "state", tmp_path / "sessions"
    result = run_cli(log, "--no-geo", "--state", state, "--output-dir", out)
    assert result.exit_code == 1
    assert "access.log.1.gz: cannot be read as gzip" in " ".join(result.stderr.split())
    assert not out.exists() or not any(out.iterdir())


# --- a client address with a port (review 56 F3) --------------------------------------------------

_CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0 Safari/537.36"
)
#: Azure Application Gateway writes the client's address with the port it connected from into
#: X-Forwarded-For: a Google visit of three requests over three connections (the last through a proxy),
#: and two requests of an IPv6 client.
PORT_LOG = "".join(
    f'{ip} - - [01/May/2024:10:0{minute}:00 +0000] "GET {path} HTTP/1.1" 200 512 "{referrer}" "{_CHROME}"\n'
    for ip, minute, path, referrer in (
        ("81.2.69.160:50312", 0, "/", "https://www.google.com/"),
        ("81.2.69.160:50388", 1, "/products", "https://shop.example/"),
        ("81.2.69.160:50412, 10.0.0.4", 2, "/cart", "https://shop.example/products"),
        ("[2001:480:10::1]:443", 0, "/", "-"),
        ("[2001:480:10::1]:444", 1, "/b", "-"),
    )
)
PORTED = ("81.2.69.160:50312", "81.2.69.160:50388", "81.2.69.160:50412", "[2001:480:10::1]:443")


@pytest.mark.parametrize("path", EVERY_PATH)
def test_a_client_address_with_a_port_is_one_visitor_and_located(
    tmp_path: Path, path: dict[str, Any]
) -> None:
    """Review 56 F3: "81.2.69.160:50312" (Azure Application Gateway's X-Forwarded-For) made one visitor
    per connection, the Google visit three sessions (two of them referrals from the site itself), and
    no address was located ({'invalid': 5}). The port is left out of the visitor id, the ``ip`` column
    and the lookup, as the proxies after the first address are, on every engine path."""
    log = tmp_path / "access.log"
    log.write_text(PORT_LOG)
    options = path_options(path, tmp_path)
    result = sessionize.run([log], geoip_db=str(CITY_DB), **options)
    table = path_sessions(result, options)
    digest = hashlib.sha256(_CHROME.encode()).hexdigest()[:8]
    assert session_rows(table, "user_id", "ip", "event_count", "traffic_source", "city") == [
        (f"2001:480:10::1|{digest}", "2001:480:10::1", 2, "direct", "San Diego"),
        (f"81.2.69.160|{digest}", "81.2.69.160", 3, "google", "London"),
    ]
    assert result.geo_counts == {"resolved": 2}


@ANONYMIZED_PATHS
def test_anonymize_ip_hides_a_client_address_with_a_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: dict[str, Any], hashed: bool
) -> None:
    """Review 56 F3: under --anonymize-ip (and --hash-user-ids) an address with a port is one visitor,
    truncated in the ``ip`` column, and written in full nowhere: not in the tables, the rejects file,
    the page views and users tables or the state."""
    monkeypatch.setenv("SESSIONIZE_TEST_SECRET", "s3cr3t")
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "access.log"
    log.write_text(PORT_LOG + "81.2.69.160:50999 - - [01/May/2024:10:03:00 +0000] garbage\n")
    chosen = path_options(path, tmp_path)
    secret = {"hash_user_ids": "SESSIONIZE_TEST_SECRET"} if hashed else {}
    written = {
        "rejects": str(tmp_path / "rejects.csv"),
        "pageviews_output": str(tmp_path / "pageviews.csv"),
        "users_output": str(tmp_path / "users.csv"),
        # (Dask writes a directory of Parquet partitions.)
        **(
            {}
            if "output_dir" in chosen
            else {"output": str(tmp_path / ("sessions" if "engine" in chosen else "sessions.csv"))}
        ),
    }
    options: dict[str, Any] = {
        "geoip_db": str(CITY_DB),
        "anonymize_ip": True,
        "on_invalid": "skip",
        **secret,
        **written,
        **chosen,
    }
    result = sessionize.run([log], **options)
    table = path_sessions(result, chosen)
    assert session_rows(table, "ip", "event_count", "city") in (
        [("2001:480:10::", 2, "San Diego"), ("81.2.69.0", 3, "London")],
        [("81.2.69.0", 3, "London"), ("2001:480:10::", 2, "San Diego")],
    )
    assert table.get_column("user_id").n_unique() == 2
    full = {"81.2.69.160", "2001:480:10::1", *PORTED}
    assert values_written(tmp_path, full, skip=[log]) == set()
    for column in table.select(pl.col(pl.String)).columns:
        assert not table.get_column(column).str.contains("81.2.69.160|2001:480:10::1").any(), column


# --- fields a client writes: a user name or X-Forwarded-For with spaces (review of stop 52) -------------

#: Lines the servers write for requests any client can send: (client field, ident and user as logged),
#: the fields expected (ip, ident, auth_user). nginx fills $remote_user from any Authorization: Basic
#: header and Apache's %u after a 401 is the client's; neither escapes a space; X-Forwarded-For's first
#: part is what the client sent.
CLIENT_WRITTEN = [
    ("81.2.69.161", "- john smith", ("81.2.69.161", None, "john smith")),
    ("81.2.69.161", "- a - b c", ("81.2.69.161", None, "a - b c")),
    ("evil client, 10.0.0.2", "- -", ("evil client", None, None)),
    ("evil client, 10.0.0.2", "- a b", ("evil client", None, "a b")),
]


@pytest.mark.parametrize(("client", "head", "expected"), CLIENT_WRITTEN)
def test_a_user_or_client_field_with_spaces_is_read(
    client: str, head: str, expected: tuple[Any, ...]
) -> None:
    """Such a line was malformed (the fields were ``\\S+``), so one stranger's request stopped every run
    that reads the log with --on-invalid fail (the default; a cron job's incremental state stuck on it),
    or set the request aside with skip."""
    lines = [line(), line(ip=client, head=head, request="GET /page HTTP/1.1"), line()]
    parsed, malformed = parse(lines)
    assert malformed.height == 0
    row = parsed.row(1, named=True)
    assert (row["ip"], row["ident"], row["auth_user"]) == expected
    assert (row["timestamp"], row["url"], row["status"], row["user_agent"]) == (INSTANT, "/page", 200, UA)


def test_a_line_that_is_no_request_is_still_malformed() -> None:
    """The loose reading takes only the time in its one shape after the fields: damage stays damage."""
    lines = [
        line(),
        line(head="- john smith", time_="[17/May/2015 10:05:03]"),
        "john smith [x] y",
        line(ip="a b", head="- -"),  # a space in a client field that is no list
        line(head="identd-user a b"),  # an ident (identd) and a user name with spaces
        # A line cut off in its request and run into the next one: two requests, not one (review of stop 52).
        f'2.2.2.2 - - {T} "GET /checkout HT' + line(ip="3.3.3.3"),
        line(head="- a [b] c"),  # brackets or a quote in a user name with spaces
        line(head='- a "b c'),
        line(),
    ]
    parsed, malformed = parse(lines)
    assert parsed.height == 2
    assert malformed.get_column("source_row").to_list() == [2, 3, 4, 5, 6, 7, 8]


@pytest.mark.parametrize("path", EVERY_PATH)
def test_a_client_written_user_name_is_read_on_every_path(tmp_path: Path, path: dict[str, Any]) -> None:
    weird = [line(head="- john smith", status="401"), line(ip="evil client, 10.0.0.2")]
    text = "\n".join([line(), line(), line(), *weird]) + "\n"
    source = tmp_path / "access.log"
    source.write_text(text, encoding="utf-8")
    options = path_options(path, tmp_path)
    result = sessionize.run([source], no_geo=True, **options)
    assert (result.rows_read, result.events_read, result.rejected) == (5, 5, 0)
    users = sorted(path_sessions(result, options).get_column("user_id").str.split("|").list.first())
    assert users == ["83.149.9.216", "evil client"]


def test_a_long_user_field_of_spaces_is_read() -> None:
    """A user field of 160,000 characters, spaces and dashes (the regex engine is linear in the line's
    length)."""
    hostile = line(head="- " + " a - " * 40_000)
    parsed, malformed = parse([hostile] * 5)
    assert parsed.height == 5 and malformed.height == 0


@pytest.mark.parametrize("flags", [[], ["--buckets", "2"]])
def test_lines_cut_by_a_carriage_return_alone_are_not_lost(tmp_path: Path, flags: list[str]) -> None:
    """A log whose lines end in a lone CR (``\\r``, no ``\\n``) is one line to the reader: its first
    request was read and the others after the CR dropped as the "extra fields" some formats append (3
    requests: 1 event, 0 rejected, no word). The line is now malformed, named with its number; a CRLF
    log is read as before."""
    requests = [
        line(f"GET /{page} HTTP/1.1", ip=ip) for page, ip in (("a", "81.2.69.160"), ("b", "89.160.20.112"))
    ]
    log = tmp_path / "cr.log"
    log.write_bytes(("\r".join(requests) + "\r").encode())
    out, rejects = tmp_path / "o.csv", tmp_path / "r.csv"
    failed = run_cli(log, "--no-geo", "-o", out, "--input-format", "combined", *flags)
    assert failed.exit_code == 1, failed.output
    assert "line 1" in words(failed.stderr)
    skipped = run_cli(
        log,
        "--no-geo",
        "-o",
        out,
        "--input-format",
        "combined",
        "--on-invalid",
        "skip",
        "--rejects",
        rejects,
        *flags,
    )
    assert skipped.exit_code == 0, skipped.stderr
    assert pl.read_csv(rejects).select("source_row", "reject_reason").rows() == [(1, "malformed_log_line")]
    crlf = tmp_path / "crlf.log"
    crlf.write_bytes(("\r\n".join(requests) + "\r\n").encode())
    assert run_cli(crlf, "--no-geo", "-o", out, *flags).exit_code == 0
    assert sorted(pl.read_csv(out)["landing_page"].to_list()) == ["/a", "/b"]


def test_a_byte_count_too_large_for_a_number_is_one_malformed_line(tmp_path: Path) -> None:
    """A byte count of 20 digits (over Int64) stopped the whole run, even with --on-invalid skip, with no
    line number ("conversion from str to i64 failed"): that line is now malformed, the others read."""
    log = tmp_path / "access.log"
    log.write_text(
        "\n".join(
            [
                line("GET /a HTTP/1.1"),
                line("GET /b HTTP/1.1", size="9" * 20),
                line("GET /c HTTP/1.1", size="-"),
            ]
        )
        + "\n"
    )
    out, rejects = tmp_path / "o.csv", tmp_path / "r.csv"
    failed = run_cli(log, "--no-geo", "-o", out)
    assert failed.exit_code == 1 and "line 2" in words(failed.stderr), failed.output
    assert run_cli(log, "--no-geo", "-o", out, "--on-invalid", "skip", "--rejects", rejects).exit_code == 0
    assert pl.read_csv(rejects).select("source_row", "reject_reason").rows() == [(2, "malformed_log_line")]
    assert pl.read_csv(out)["event_count"].to_list() == [2]


@pytest.mark.parametrize(
    "time_", ["[17/May/15:10:05:03 +0000]", "[7/May/2015:10:05:03 +0000]", "[17/May/2015:10:5:3 +0000]"]
)
def test_a_log_time_in_another_shape_is_rejected(tmp_path: Path, time_: str) -> None:
    """Apache's %t and nginx's $time_local have one shape (``[17/May/2015:10:05:03 +0000]``): a two-digit
    year was read as year 15 (a session in 0015, nothing rejected), one-digit days and minutes were read
    too. Such a time is now a bad timestamp, named with its line."""
    log = tmp_path / "access.log"
    log.write_text(line("GET /x HTTP/1.1", time_=time_) + "\n" + line("GET /y HTTP/1.1") + "\n")
    out, rejects = tmp_path / "o.csv", tmp_path / "r.csv"
    result = run_cli(log, "--no-geo", "-o", out, "--on-invalid", "skip", "--rejects", rejects)
    assert result.exit_code == 0, result.output
    assert pl.read_csv(rejects)["source_row"].to_list() == [1]
    assert pl.read_csv(out)["landing_page"].to_list() == ["/y"]
    assert pl.read_csv(out)["session_start"].to_list() == ["2015-05-17T10:05:03.000000Z"]
