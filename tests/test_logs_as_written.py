"""Access logs read line by line as they are written (review 56): NUL holes before lines, a LogFormat
changed from common to combined mid-file, media and partial-content requests, bytes that are not UTF-8.

Every case runs through ``sessionize.run`` (or the CLI) on a file on disk, on every engine path."""

from __future__ import annotations

import codecs
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import sessionize
from sessionize.errors import MalformedRowsError, SessionizeWarning, UnreadableInputError
from tests.helpers import EVERY_PATH, path_options, path_sessions, run_cli, session_rows, words

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


def combined(
    path: str,
    second: int,
    *,
    ip: str = "81.2.69.160",
    status: int = 200,
    referrer: str = "-",
    agent: str = FIREFOX,
) -> str:
    time = f"01/May/2024:10:{second // 60:02d}:{second % 60:02d} +0000"
    return f'{ip} - - [{time}] "GET {path} HTTP/1.1" {status} 5 "{referrer}" "{agent}"'


def common(path: str, second: int, *, ip: str = "81.2.69.1") -> str:
    return f'{ip} - - [01/May/2024:09:{second // 60:02d}:{second % 60:02d} +0000] "GET {path} HTTP/1.1" 200 5'


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def run_on(path: dict[str, Any], tmp_path: Path, log: Path, **options: Any) -> tuple[Any, pl.DataFrame]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    chosen = path_options(path, tmp_path)
    result = sessionize.run([log], no_geo=True, **options, **chosen)
    return result, path_sessions(result, chosen)


# -- F2: NUL bytes ---------------------------------------------------------------------------------


def _holed_log(tmp_path: Path) -> Path:
    """A log that starts with a copytruncate hole (100 NULs), then a line, then 4,096 NULs (a crash
    with delayed allocation) before the next line of the same visitor 5 minutes later."""
    first, second = combined("/a", 0), combined("/b", 300)
    return write_bytes(
        tmp_path / "access.log", b"\0" * 100 + first.encode() + b"\n" + b"\0" * 4096 + second.encode() + b"\n"
    )


@pytest.mark.parametrize("path", EVERY_PATH)
def test_nul_bytes_before_a_line_are_skipped_and_counted(tmp_path: Path, path: dict[str, Any]) -> None:
    """The NULs before line 2 became part of its client field: a visitor of 4,096 NULs and an address,
    2 sessions instead of 1, no word. They are skipped, and the run says how many and where."""
    log = _holed_log(tmp_path)
    with pytest.warns(
        SessionizeWarning, match=r"access\.log: skipped 4,196 NUL byte\(s\) before line 1 and 1 "
    ):
        result, table = run_on(path, tmp_path, log)
    assert (result.rows_read, result.rejected, result.events_read) == (2, 0, 2)
    assert session_rows(table, "user_id", "landing_page", "exit_page", "event_count") == [
        ("81.2.69.160|" + table["user_id"][0].split("|")[1], "/a", "/b", 2)
    ]
    assert "\0" not in table["user_id"][0] and "\0" not in table["session_id"][0]


@pytest.mark.parametrize("path", EVERY_PATH)
def test_a_nul_inside_a_line_makes_it_a_reject(tmp_path: Path, path: dict[str, Any]) -> None:
    """A NUL that is not before the line (a hole in the middle of a line) is damage: the line is rejected
    with its line number, by default stopping the run; counts in = counts out + rejected."""
    good, damaged = combined("/a", 0), combined("/b", 60)
    log = write_bytes(
        tmp_path / "access.log",
        (good + "\n" + damaged[:20] + "\0\0\0\0" + damaged[20:] + "\n" + combined("/c", 90) + "\n").encode(),
    )
    with pytest.raises(MalformedRowsError, match=r"line 2: nul_byte_in_line"):
        run_on(path, tmp_path / "fail", log)
    result, table = run_on(path, tmp_path, log, on_invalid="skip", rejects=str(tmp_path / "rejects.csv"))
    assert (result.rows_read, result.rejected, result.events_read) == (3, 1, 2)
    assert session_rows(table, "landing_page", "exit_page", "event_count") == [("/a", "/c", 2)]
    rejects = pl.read_csv(tmp_path / "rejects.csv")
    assert rejects.select("source_row", "reject_reason").rows() == [(2, "nul_byte_in_line")]


def test_a_log_that_starts_with_a_hole_is_told_by_its_lines(tmp_path: Path) -> None:
    """logrotate's copytruncate with a writer that does not append: the file starts with as many NULs as
    the old file had bytes. Its format is still told by its first lines (the NULs are not a line)."""
    log = write_bytes(tmp_path / "access.log", b"\0" * 8192 + (combined("/a", 0) + "\n").encode())
    out = tmp_path / "s.csv"
    result = run_cli(log, "--no-geo", "-o", out)
    assert result.exit_code == 0, result.output
    assert "skipped 8,192 NUL byte(s) before line 1" in words(result.output)
    assert pl.read_csv(out)["landing_page"].to_list() == ["/a"]


# -- F4: a LogFormat changed from common to combined -------------------------------------------------


def _mixed_log(tmp_path: Path, *, combined_first: bool = False) -> Path:
    olds = [common(f"/old{i}", i, ip=f"81.2.69.{i + 1}") for i in range(20)]
    news = [
        combined(
            f"/new{i}", 1800 + i, ip=f"81.2.69.{i + 1}", referrer="https://www.google.com/", agent=GOOGLEBOT
        )
        for i in range(25 if combined_first else 5)
    ]
    lines = [*news, *olds] if combined_first else [*olds, *news]
    return write_bytes(tmp_path / "access.log", "\n".join(lines).encode() + b"\n")


@pytest.mark.parametrize("path", EVERY_PATH)
def test_combined_lines_in_a_common_log_keep_their_referrer_and_user_agent(
    tmp_path: Path, path: dict[str, Any]
) -> None:
    """20 common lines, then the LogFormat became combined: the file was read as common and the later
    lines lost their referrer and user agent (Googlebot counted as people). Each line is read as written."""
    result, table = run_on(path, tmp_path, _mixed_log(tmp_path))
    assert (result.rows_read, result.rejected, result.events_read) == (25, 0, 25)
    new = table.filter(pl.col("landing_page").str.starts_with("/new")).sort("landing_page")
    old = table.filter(pl.col("landing_page").str.starts_with("/old"))
    assert new.height == 5 and old.height == 20
    assert new["referrer"].to_list() == ["https://www.google.com/"] * 5
    assert new["user_agent"].to_list() == [GOOGLEBOT] * 5
    assert new["is_bot"].to_list() == [True] * 5
    assert old["user_agent"].null_count() == old["referrer"].null_count() == 20
    assert not any(old["is_bot"].to_list())


def test_common_lines_in_a_combined_log_are_rejected_loudly(tmp_path: Path) -> None:
    """The other way round (25 combined lines first: told combined), a common line lacks fields of the
    format: rejected with its line number, as before."""
    log = _mixed_log(tmp_path, combined_first=True)
    with pytest.raises(MalformedRowsError, match=r"20 row\(s\) .* \(line 26: malformed_log_line"):
        sessionize.run([log], no_geo=True)
    result = sessionize.run([log], no_geo=True, on_invalid="skip")
    assert (result.rows_read, result.rejected, result.events_read) == (45, 20, 25)


# -- F5: media, partial content and sub-resources --------------------------------------------------

SUBRESOURCES = [
    ("/videos/intro.mp4", 206),
    ("/videos/intro.mp4", 206),
    ("/site.webmanifest", 200),
    ("/api/cart.json", 200),
    ("/app.wasm", 200),
    ("/hls/seg1.ts", 200),
    ("/hls/index.m3u8", 200),
    ("/dash/manifest.mpd", 200),
    ("/dash/chunk-1.m4s", 200),
    ("/docs/manual.pdf", 200),
    ("/sw.js.map", 200),
    ("/audio.mp3", 200),
    ("/video.WEBM", 200),
    ("/sound.flac", 200),
    ("/download/report", 206),  # a range of a resource without an extension: still no page
]


def _watch_log(tmp_path: Path) -> Path:
    lines = [combined("/watch", 0)]
    lines += [combined(url, 1 + i, status=status) for i, (url, status) in enumerate(SUBRESOURCES)]
    return write_bytes(tmp_path / "access.log", "\n".join(lines).encode() + b"\n")


@pytest.mark.parametrize("path", EVERY_PATH)
def test_media_partial_content_and_subresources_are_not_page_views(
    tmp_path: Path, path: dict[str, Any]
) -> None:
    """A page and what it loaded: 206 ranges of a video, a manifest, an API call, WebAssembly, HLS/DASH
    playlists and segments, a PDF, a source map, audio. They were 15 more page views and the exit page
    was /audio... : the page is the only page view; the requests still count as events."""
    result, table = run_on(path, tmp_path, _watch_log(tmp_path))
    assert result.events_read == 16
    assert session_rows(table, "pageview_count", "event_count", "landing_page", "exit_page") == [
        (1, 16, "/watch", "/watch")
    ]


def test_the_asset_pattern_option_still_decides_what_is_an_asset(tmp_path: Path) -> None:
    """--asset-pattern replaces the default: with only CSS as assets, a 200 for audio is a page view again;
    a 206 is a range of a resource whatever the pattern, never a page view."""
    log = _watch_log(tmp_path)
    views = tmp_path / "pv.csv"
    result = sessionize.run([log], no_geo=True, asset_pattern=r"\.css$", pageviews_output=str(views))
    pages = pl.read_csv(views)["page_url"].to_list()
    assert "/audio.mp3" in pages and "/api/cart.json" in pages
    assert "/videos/intro.mp4" not in pages and "/download/report" not in pages
    assert result.sessions["pageview_count"].to_list() == [1 + len(SUBRESOURCES) - 3]


# -- F9: bytes that are not UTF-8 ------------------------------------------------------------------


def _latin1_log(tmp_path: Path) -> Path:
    lines = [
        combined("/plain", 0).encode(),
        combined("/caf\xe9", 5, agent="Agent \xe9").encode("latin-1"),
        combined("/caf\xe8", 10, agent="Agent \xe8").encode("latin-1"),
        combined("/caf\\xc3\\xa9", 15).encode(),  # Apache's escape of a byte it will not write raw
    ]
    return write_bytes(tmp_path / "access.log", b"\n".join(lines) + b"\n")


@pytest.mark.parametrize("path", EVERY_PATH)
def test_undecodable_bytes_in_a_log_are_rejected_as_in_a_csv(tmp_path: Path, path: dict[str, Any]) -> None:
    """Latin-1 bytes in a log were replaced by U+FFFD without a word (/caf\\xe9 and /caf\\xe8 one URL, two
    visitors one). As in a CSV: those lines are undecodable_bytes, named by line, failing the run by
    default; --on-invalid skip sets them aside; --encoding latin-1 reads them."""
    log = _latin1_log(tmp_path)
    with pytest.raises(MalformedRowsError, match=r"line 2: undecodable_bytes; line 3: undecodable_bytes"):
        run_on(path, tmp_path / "fail", log)
    result, table = run_on(path, tmp_path / "skip", log, on_invalid="skip", rejects=str(tmp_path / "r.csv"))
    assert (result.rows_read, result.rejected, result.events_read) == (4, 2, 2)
    assert pl.read_csv(tmp_path / "r.csv").select("source_row", "reject_reason").rows() == [
        (2, "undecodable_bytes"),
        (3, "undecodable_bytes"),
    ]
    # \xHH escapes are kept as the server wrote them.
    assert session_rows(table, "landing_page", "exit_page") == [("/plain", "/caf\\xc3\\xa9")]
    result, table = run_on(path, tmp_path / "latin", log, encoding="latin-1")
    assert (result.rows_read, result.rejected, result.events_read) == (4, 0, 4)
    agents = table.filter(pl.col("user_agent").str.starts_with("Agent"))
    assert sorted(agents.select("landing_page", "user_agent").rows()) == [
        ("/caf\xe8", "Agent \xe8"),
        ("/caf\xe9", "Agent \xe9"),
    ]


def test_undecodable_log_lines_are_named_by_the_cli(tmp_path: Path) -> None:
    log = _latin1_log(tmp_path)
    out = tmp_path / "s.csv"
    result = run_cli(log, "--no-geo", "-o", out)
    assert result.exit_code != 0 and not out.exists()
    text = words(result.output)
    assert "access.log: 2 row(s)" in text and "line 2: undecodable_bytes" in text and "--encoding" in text


# -- review 57 F4: a log in UTF-16 ------------------------------------------------------------------


def _utf16_logs(tmp_path: Path) -> dict[str, Path]:
    """One log in UTF-16 as Windows writes it (PowerShell's Out-File, some IIS shippers): little-endian
    without a byte order mark, big-endian, and with one; and the same text gzipped."""
    import gzip

    text = "".join(combined(f"/p{i}", i * 10, ip=f"81.2.69.{160 + i % 2}") + "\n" for i in range(6))
    folder = tmp_path / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    return {
        "utf-16-le": write_bytes(folder / "le.log", text.encode("utf-16-le")),
        "utf-16-be": write_bytes(folder / "be.log", text.encode("utf-16-be")),
        "utf-16": write_bytes(folder / "bom.log", text.encode("utf-16")),
        "utf-16-le ": write_bytes(folder / "le.log.gz", gzip.compress(text.encode("utf-16-le"))),
    }


@pytest.mark.parametrize("path", EVERY_PATH)
def test_a_utf16_log_is_named_and_read_with_its_encoding(tmp_path: Path, path: dict[str, Any]) -> None:
    """A UTF-16 log is valid UTF-8 with a NUL beside each letter: every line was rejected as
    nul_byte_in_line (the NULs called a copytruncate hole), and the advice "--encoding" did nothing, as
    --encoding was applied only to bytes that are not UTF-8."""
    for n, (encoding, log) in enumerate(_utf16_logs(tmp_path).items()):
        with pytest.raises(UnreadableInputError, match=r"looks like UTF-16 text\. Give --encoding utf-16"):
            run_on(path, tmp_path / f"fail{n}", log)
        # Python's utf-16 reads text without a byte order mark as little-endian (when read whole).
        for given in sorted({encoding.strip(), "utf-16"} if "le" in encoding else {encoding.strip()}):
            result, table = run_on(path, tmp_path / f"ok{n}{given}", log, encoding=given)
            assert (result.rows_read, result.rejected, result.events_read) == (6, 0, 6), (log, given)
            assert sorted(table["landing_page"].to_list()) == ["/p0", "/p1"], (log, given)


def test_a_utf16_log_through_the_cli(tmp_path: Path) -> None:
    log = _utf16_logs(tmp_path)["utf-16-le"]
    out = tmp_path / "s.csv"
    for extra in ((), ("--input-format", "combined"), ("--buckets", "2")):
        result = run_cli(log, "--no-geo", "-o", out, *extra)
        assert result.exit_code == 1 and not out.exists(), result.output
        assert "looks like UTF-16 text. Give --encoding utf-16 (or utf-16-le, utf-16-be)" in words(
            result.output
        )
        assert "nul_byte_in_line" not in result.output and "copytruncate" not in result.output
        result = run_cli(log, "--no-geo", "-o", out, "--encoding", "utf-16-le", *extra)
        assert result.exit_code == 0 and pl.read_csv(out).height == 2, result.output
        out.unlink()


# -- a UTF-16 log's line numbers -------------------------------------------------------------------

#: Characters with the byte 0x0A in them in UTF-16: 上 (U+4E0A, ``0A 4E`` in UTF-16-LE) and Gurmukhi ਊ
#: (U+0A0A, ``0A 0A`` either way). Lines were split on that byte before decoding.
WIDE = "上ਊ"
#: A lone high surrogate (half of a pair): UTF-16 that does not decode.
LONE_SURROGATE = {"le": b"\x00\xd8", "be": b"\xd8\x00"}


def _utf16_text(lines: Sequence[str | bytes], order: str) -> bytes:
    """``lines`` in UTF-16 of byte ``order`` (``le``, ``be``), each with its ``\\n``; bytes are written as
    they are, in place of a piece of the line (``b"..."`` stands for a line's undecodable bytes)."""
    codec = f"utf-16-{order}"
    return b"".join(
        (line if isinstance(line, bytes) else line.encode(codec)) + "\n".encode(codec) for line in lines
    )


def _wide_request(n: int) -> str:
    return combined(f"/{WIDE}{n}", n * 10, agent=f"Mozilla/5.0 {WIDE}")


def _numbered_utf16_lines(order: str) -> list[str | bytes]:
    """Eight requests of one visitor whose URLs and user agent have :data:`WIDE` characters, but line 4,
    which is not a log line, and line 6, a request with a lone surrogate in it."""
    lines: list[str | bytes] = [_wide_request(n) for n in range(8)]
    lines[3] = f"not a log line {WIDE}"
    codec = f"utf-16-{order}"
    lines[5] = (
        _wide_request(5)[:20].encode(codec) + LONE_SURROGATE[order] + _wide_request(5)[20:].encode(codec)
    )
    return lines


#: (file, --encoding): with a byte order mark (little- and big-endian) and without one.
UTF16_LAYOUTS = [
    pytest.param("le", codecs.BOM_UTF16_LE, "utf-16", id="utf-16-bom-le"),
    pytest.param("be", codecs.BOM_UTF16_BE, "utf-16", id="utf-16-bom-be"),
    pytest.param("le", b"", "utf-16-le", id="utf-16-le"),
    pytest.param("be", b"", "utf-16-be", id="utf-16-be"),
]


@pytest.mark.parametrize(("order", "bom", "encoding"), UTF16_LAYOUTS)
@pytest.mark.parametrize("path", EVERY_PATH)
def test_a_utf16_logs_bad_lines_are_named_by_their_line_numbers(
    tmp_path: Path, path: dict[str, Any], order: str, bom: bytes, encoding: str
) -> None:
    """Lines were split on the byte 0x0A before decoding: a line that did not decode crashed the read
    (UnicodeDecodeError: truncated data), hung it (big-endian), or was numbered by the 0x0A bytes of the
    characters before it. The bad lines are named by their line numbers, in the error and the rejects."""
    log = write_bytes(tmp_path / "access.log", bom + _utf16_text(_numbered_utf16_lines(order), order))
    with pytest.raises(MalformedRowsError, match=r"line 4: malformed_log_line; line 6: undecodable_bytes"):
        run_on(path, tmp_path / "fail", log, encoding=encoding)
    rejects = tmp_path / "rejects.csv"
    result, table = run_on(path, tmp_path, log, encoding=encoding, on_invalid="skip", rejects=str(rejects))
    assert (result.rows_read, result.rejected, result.events_read) == (8, 2, 6)
    assert pl.read_csv(rejects).select("source_row", "reject_reason", "raw_line").rows() == [
        (4, "malformed_log_line", f"not a log line {WIDE}"),
        (6, "undecodable_bytes", _wide_request(5)[:20] + "\ufffd" + _wide_request(5)[20:]),
    ]
    assert sorted(table["landing_page"].to_list()) == [f"/{WIDE}0"]
    assert table["exit_page"].to_list() == [f"/{WIDE}7"] and table["event_count"].to_list() == [6]
