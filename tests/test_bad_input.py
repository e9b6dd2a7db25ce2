"""Bad input, nothing lost: rejected rows, duplicates, encodings, damaged files and privacy controls."""

from __future__ import annotations

import codecs
import csv
import gzip
import hashlib
import hmac
import io
import json
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner, Result

import sessionize
from sessionize import io as sio
from sessionize.cli import app
from sessionize.io.read import JSON_DEPTH_LIMIT, _jq_command
from sessionize.privacy import anonymize_ip
from tests.helpers import (
    CITY_DB,
    EVERY_PATH,
    EVERY_PATH_AND_SPARK,
    REPO,
    any_path_options,
    path_options,
    path_sessions,
    words,
    write_text,
)

BAD = REPO / "tests" / "data" / "bad"


def squash(text: str) -> str:
    """Text without whitespace or box lines: rich wraps long paths anywhere."""
    return "".join(text.replace("│", "").split())


def cli(*args: object) -> Result:
    return CliRunner().invoke(app, ["run", *map(str, args), "--no-geo", "--log-format", "text"])


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def fail_then_skip(
    source: Path, tmp_path: Path, buckets: str | None
) -> tuple[Result, list[tuple[str, str]], list[str]]:
    """Run on a file with invalid rows twice: by default (fails, writes nothing), then with
    --on-invalid skip and --rejects. The failed run, the rejects' (line, reason) and the users written."""
    flags = ["--buckets", buckets] if buckets else []
    out, rejects = tmp_path / "o.csv", tmp_path / "rejects.csv"
    failed = cli(source, "-o", out, *flags)
    assert failed.exit_code == 1, failed.stderr
    assert not out.exists()
    skipped = cli(source, "-o", out, "--on-invalid", "skip", "--rejects", rejects, *flags)
    assert skipped.exit_code == 0, skipped.stderr
    rows = pl.read_csv(rejects, infer_schema=False).select("source_row", "reject_reason").rows()
    return failed, rows, sorted(pl.read_csv(out, infer_schema=False)["user_id"].to_list())


DIRTY = (
    "event_id,user_id,timestamp,url,ip\n"
    "e1,u1,2024-05-01T10:00:00Z,https://s.example/a,81.2.69.160\n"  # line 2
    "e1,u1,2024-05-01T10:00:00Z,https://s.example/a,81.2.69.160\n"  # 3: duplicate id
    "e2,,2024-05-01T10:01:00Z,https://s.example/b,81.2.69.160\n"  # 4: empty user
    "e3,u2,not a time,https://s.example/c,81.2.69.160\n"  # 5: bad timestamp
    "e4,u3,2024-05-01T10:00:00Z,https://s.example/d,extra,field\n"  # 6: wrong field count
    "e5,u4,2031-01-01T00:00:00Z,https://s.example/e,81.2.69.160\n"  # 7: future
    "e6,u1,2024-05-01T10:10:00Z,https://s.example/f,81.2.69.160\n"  # 8
)


# --- invalid rows -------------------------------------------------------------------------------------


def test_fail_is_the_default_and_writes_nothing(tmp_path: Path) -> None:
    events = write(tmp_path / "dirty.csv", DIRTY)
    out = tmp_path / "out.parquet"
    result = cli(events, "-o", out)
    assert result.exit_code == 1
    message = words(result.stderr)
    assert "dirty.csv" in squash(result.stderr) and "line 6" in message and "--on-invalid skip" in message
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [events]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("user_id,timestamp\n,2024-05-01T10:00:00Z\nu,2024-05-01T10:00:00Z\n", "empty user id"),
        ("user_id,timestamp\nu,2024-05-01T10:00:00Z\nu,soon\n", "line 3: 'soon'"),
        ("user_id,timestamp\nu,2031-01-01T00:00:00Z\n", "outside the valid range"),
        # Quoted as written, though it parsed.
        ("user_id,timestamp\nu,2031-01-01T00:00:00Z\n", "line 2: '2031-01-01T00:00:00Z'"),
    ],
)
def test_each_kind_of_invalid_row_fails_with_the_skip_hint(tmp_path: Path, text: str, expected: str) -> None:
    result = cli(write(tmp_path / "e.csv", text), "-o", tmp_path / "o.csv")
    assert result.exit_code == 1
    assert expected in words(result.stderr)
    assert "--on-invalid skip" in words(result.stderr)


@pytest.mark.parametrize("header", ["_time_fast", "_time_text", "_time_shape"])
def test_a_time_column_named_like_a_parsers_helper_is_read_and_quoted(tmp_path: Path, header: str) -> None:
    # The timestamp parsers add helper columns; an input column of the same name (the times themselves,
    # or another column) is neither overwritten nor read in their place.
    rows = "u,2024-05-01T10:00:00Z,x\nu,2024-05-01 10:10:00,x\nv,2024-05-01T10:00:01+02:00,x\n"
    times = write(tmp_path / "times.csv", f"user_id,{header},other\n{rows}u,soon,x\n")
    result = cli(times, "--time-col", header, "--no-geo", "-o", tmp_path / "o.csv")
    assert result.exit_code == 1
    assert "line 5: 'soon'" in words(result.stderr)
    beside = write(tmp_path / "beside.csv", f"user_id,timestamp,{header}\n{rows}")
    sessions = sessionize.run([beside], no_geo=True).sessions
    assert sessions.select("user_id", "event_count").rows() == [("u", 2), ("v", 1)]
    assert sessions.get_column("session_start").dt.hour().to_list() == [10, 8]


def test_skip_counts_add_up_and_rejects_keep_every_original_column(tmp_path: Path) -> None:
    events = write(tmp_path / "dirty.csv", DIRTY)
    rejects = tmp_path / "rejects.csv"
    result = sessionize.run(
        [events], output=tmp_path / "out.parquet", on_invalid="skip", rejects=rejects, no_geo=True
    )
    assert (result.rows_read, result.events_read, result.rejected, result.duplicates_removed) == (7, 2, 4, 1)
    assert result.rows_read == result.events_read + result.rejected + result.duplicates_removed
    assert result.sessions["event_count"].sum() == 2
    table = pl.read_csv(rejects, infer_schema=False)
    assert table.columns == [
        "event_id",
        "user_id",
        "timestamp",
        "url",
        "ip",
        "source_file",
        "source_row",
        "reject_reason",
        "raw_line",
    ]
    assert table.select("source_row", "reject_reason").rows() == [
        ("4", "empty_user_id"),
        ("5", "bad_timestamp"),
        ("6", "wrong_field_count (6, expected 5)"),
        ("7", "out_of_range"),
    ]
    assert table.row(1, named=True)["timestamp"] == "not a time"
    assert (
        table.row(2, named=True)["raw_line"] == "e4,u3,2024-05-01T10:00:00Z,https://s.example/d,extra,field"
    )
    assert set(table["source_file"]) == {str(events)}


def test_skip_summary_on_the_command_line(tmp_path: Path) -> None:
    events = write(tmp_path / "dirty.csv", DIRTY)
    result = cli(
        events, "-o", tmp_path / "o.csv", "--on-invalid", "skip", "--rejects", tmp_path / "r.parquet"
    )
    assert result.exit_code == 0, result.output
    summary = words(result.stderr)
    assert "rows read 7" in summary and "rejected 4" in summary and "duplicates removed 1" in summary
    assert "events sessionized 2" in summary
    # The rejects file takes its own extension's format.
    assert pl.read_parquet(tmp_path / "r.parquet").height == 4


def test_rejects_file_is_written_even_when_nothing_is_rejected(tmp_path: Path) -> None:
    events = write(tmp_path / "ok.csv", "user_id,timestamp\nu,2024-05-01T10:00:00Z\n")
    rejects = tmp_path / "rejects.ndjson"
    result = cli(events, "-o", tmp_path / "o.csv", "--on-invalid", "skip", "--rejects", rejects)
    assert result.exit_code == 0
    assert rejects.exists() and rejects.read_text() == ""


def test_rejects_across_files_of_different_formats(tmp_path: Path) -> None:
    csv = write(tmp_path / "a.csv", "user_id,timestamp,url\nu,soon,https://s.example/\n")
    parquet = tmp_path / "b.parquet"
    pl.DataFrame({"user_id": ["", "v"], "timestamp": [1714557600, 1714557600]}).write_parquet(parquet)
    result = sessionize.run([csv, parquet], on_invalid="skip", no_geo=True)
    assert result.rejects is not None
    assert result.rejects.select("source_file", "source_row", "reject_reason").rows() == [
        (str(csv), 2, "bad_timestamp"),
        (str(parquet), 1, "empty_user_id"),
    ]
    assert result.sessions["user_id"].to_list() == ["v"]


@pytest.mark.parametrize("path", EVERY_PATH)
def test_a_rejects_file_sent_again_keeps_its_columns_beside_this_runs(
    tmp_path: Path, path: dict[str, Any]
) -> None:
    """Review 54 F4: a rejects file read again (rows "written so that they can be sent again") stopped
    with "Unexpected error: DuplicateError: column 'reject_reason' is duplicate" when a row was rejected
    again, and an input's own ``source_file`` column was overwritten by the file's name. The input's
    columns of those names are kept as ``input_<name>``; ``source_file``, ``source_row`` and
    ``reject_reason`` are this run's, on every engine path."""
    events = write(
        tmp_path / "events.csv",
        "user_id,timestamp,url,source_file\n"
        "u1,2024-05-01T10:00:00Z,https://s.example/a,crm-export-17\n"
        "u2,yesterday,https://s.example/b,crm-export-18\n"
        "u3,2024-05-01T10:00:00Z,https://s.example/c,crm-export-19,EXTRA\n",
    )
    first = tmp_path / "rejects.csv"
    sessionize.run([events], on_invalid="skip", rejects=str(first), no_geo=True)
    assert pl.read_csv(first).select("source_file", "input_source_file", "reject_reason").rows() == [
        (str(events), "crm-export-18", "bad_timestamp"),
        (str(events), None, "wrong_field_count (5, expected 4)"),
    ]
    again = tmp_path / "rejects-again.csv"
    chosen = path_options(path, tmp_path)
    result = sessionize.run([first], on_invalid="skip", rejects=str(again), no_geo=True, **chosen)
    assert (result.rows_read, result.rejected) == (2, 2)
    table = pl.read_csv(again, infer_schema=False)
    assert table.columns == [
        "user_id", "timestamp", "url", "input_source_file", "input_source_file_",
        "input_source_row", "input_reject_reason", "input_raw_line",
        "source_file", "source_row", "reject_reason",
    ]  # fmt: skip
    kept = ["input_source_file", "input_source_file_", "input_reject_reason", "source_file", "reject_reason"]
    assert table.select(kept).rows() == [
        ("crm-export-18", str(events), "bad_timestamp", str(first), "bad_timestamp"),
        (None, str(events), "wrong_field_count (5, expected 4)", str(first), "empty_user_id"),
    ]


def test_rejects_needs_skip_and_its_own_path(tmp_path: Path) -> None:
    events = write(tmp_path / "e.csv", "user_id,timestamp\nu,2024-05-01T10:00:00Z\n")
    assert cli(events, "--rejects", tmp_path / "r.csv").exit_code == 2
    same = cli(events, "-o", tmp_path / "o.csv", "--on-invalid", "skip", "--rejects", tmp_path / "o.csv")
    assert same.exit_code == 2
    over_input = cli(events, "-o", tmp_path / "o.csv", "--on-invalid", "skip", "--rejects", events)
    assert over_input.exit_code == 1
    assert "also an input" in words(over_input.stderr)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("--rejects", "also an input: choose another output path with --rejects."),
        ("--users-output", "also an input: choose another output path with --users-output."),
        ("--pageviews-output", "also an input: choose another output path with --pageviews-output."),
        ("--report", "also an input: choose another path with --report."),
    ],
)
def test_an_output_over_an_input_is_refused_naming_its_option(
    tmp_path: Path, option: str, message: str
) -> None:
    """The refusal tells which path to change: the option that named the input, not ``-o``."""
    events = write(tmp_path / "e.csv", "user_id,timestamp\nu,2024-05-01T10:00:00Z\n")
    before = events.read_bytes()
    result = cli(events, "-o", tmp_path / "o.csv", "--on-invalid", "skip", option, events)
    assert result.exit_code == 1, result.output
    assert message in words(result.stderr)
    assert events.read_bytes() == before and not (tmp_path / "o.csv").exists()


@pytest.mark.parametrize("rejects", ["out/rejects.parquet", "st/rejects.csv"])
def test_rejects_inside_the_output_directory_or_the_state_is_refused(workdir: Path, rejects: str) -> None:
    """Readers of an incremental output directory (``pl.scan_parquet(OUT_DIR, hive_partitioning=True)``,
    ``sessionize report OUT_DIR``) take every file there for sessions, and the state is the run's own: a
    rejects file in either is refused before anything is written, as the page-view and user tables are."""
    events = write(workdir / "e.csv", "user_id,timestamp\nu1,2024-05-01T10:00:00Z\nu2,garbage\n")
    (workdir / "out").mkdir()
    (workdir / "st").mkdir()
    result = cli(events, "--state", "st", "--output-dir", "out", "--on-invalid", "skip", "--rejects", rejects)
    assert result.exit_code == 2, result.output
    assert f"--rejects {rejects} is inside --output-dir or --state" in words(result.stderr)
    assert sorted(p.relative_to(workdir).as_posix() for p in workdir.rglob("*")) == ["e.csv", "out", "st"]


def test_valid_range(tmp_path: Path) -> None:
    events = write(
        tmp_path / "e.csv",
        "user_id,timestamp\nu,2023-12-31T23:59:59Z\nu,2024-05-01T10:00:00Z\nu,2024-06-01T00:00:01Z\n",
    )
    result = sessionize.run(
        [events], on_invalid="skip", valid_from="2024-01-01", valid_until="2024-06-01T00:00:00Z", no_geo=True
    )
    assert result.events_read == 1 and result.rejected == 2
    assert result.rejects is not None and set(result.rejects["reject_reason"]) == {"out_of_range"}
    # An explicit far bound lets future events through.
    future = write(tmp_path / "f.csv", "user_id,timestamp\nu,2031-01-01T00:00:00Z\n")
    assert sessionize.run([future], valid_until="2100-01-01", no_geo=True).events_read == 1
    assert cli(future, "--valid-from", "last tuesday").exit_code == 2


# --- malformed CSV and encodings ---------------------------------------------------------------------------


def test_malformed_csv_rows_are_rejected_with_their_line_numbers(tmp_path: Path) -> None:
    result = sessionize.run([BAD / "ragged.csv"], on_invalid="skip", no_geo=True)
    assert result.rejects is not None
    assert result.rejects.select("source_row", "reject_reason").rows() == [
        (3, "wrong_field_count (4, expected 3)"),
        (4, "bad_quote"),
        (5, "wrong_field_count (2, expected 3)"),
    ]
    assert result.sessions["landing_page"].to_list() == ["https://s.example/a"]
    failed = cli(BAD / "ragged.csv", "-o", tmp_path / "o.csv")
    assert failed.exit_code == 1
    assert squash("ragged.csv: 3 row(s) cannot be parsed as CSV (line 3") in squash(failed.stderr)


def test_undecodable_bytes_and_the_encoding_flag(tmp_path: Path) -> None:
    failed = cli(BAD / "latin1.csv", "-o", tmp_path / "o.csv")
    assert failed.exit_code == 1
    assert "line 2: undecodable_bytes" in words(failed.stderr) and "--encoding" in words(failed.stderr)
    skipped = sessionize.run([BAD / "latin1.csv"], on_invalid="skip", no_geo=True)
    assert skipped.rejected == 1 and skipped.events_read == 1
    decoded = sessionize.run([BAD / "latin1.csv"], encoding="latin-1", no_geo=True)
    assert "https://s.example/café" in decoded.sessions["landing_page"].to_list()
    assert cli(BAD / "latin1.csv", "--encoding", "klingon").exit_code == 2


MAC_LINES = "".join(
    line + "\r"
    for line in ("user_id,timestamp,url", "a,2024-01-01T00:00:00Z,/x", "a,2024-01-01T00:10:00Z,/y")
)


@pytest.mark.parametrize("buckets", [None, "2"])
@pytest.mark.parametrize(
    ("data", "expected"),
    [
        # Excel for Mac's "CSV (Macintosh)": read as a header alone, it held no events and the run ended well.
        (MAC_LINES.encode(), "carriage return alone"),
        # A stray "\r" inside the header, and a short row: the csv module's error was an "Unexpected error".
        (b"user_id,timestamp\r,url\na,2024-01-01T00:00:00Z,/x\na,2024-01-01T00:00:00Z\n", "header is broken"),
        ("user_id,timestamp,url\r\na,2024-01-01T00:00:00Z,/x\r\n".encode("utf-16"), "Give --encoding utf-16"),
        # Big-endian UTF-16 read as UTF-8: every header name held NULs (a BadTimestampError, or 0 events).
        ("user_id,timestamp,url\na,2024-01-01T00:00:00Z,/x\n".encode("utf-16-be"), "looks like UTF-16"),
        # Python's csv module on Windows without newline='': every last value kept a "\r".
        (b"user_id,timestamp,url\r\r\na,2024-01-01T00:00:00Z,/x\r\r\n", "two before the line feed"),
    ],
    ids=["cr-line-ends", "cr-in-header", "utf-16", "utf-16-be", "cr-cr-lf"],
)
def test_line_ends_and_encodings_the_reader_cannot_take_are_named(
    tmp_path: Path, data: bytes, expected: str, buckets: str | None
) -> None:
    """Review 44: each of these files lost every row with exit 0, or ended in "Unexpected error"."""
    source = tmp_path / "export.csv"
    source.write_bytes(data)
    out = tmp_path / "o.csv"
    flags = ["--buckets", buckets] if buckets else []
    for invalid in ("fail", "skip"):
        result = cli(source, "-o", out, "--on-invalid", invalid, *flags)
        assert result.exit_code == 1, result.stderr
        assert "export.csv" in squash(result.stderr) and squash(expected) in squash(result.stderr)
        assert "Unexpected" not in result.stderr and not out.exists()


UTF16_CSV = "user_id,timestamp,url\r\na,2024-01-01T00:00:00Z,/x\r\n"
UTF16_LOG = '81.2.69.160 - - [01/May/2024:10:00:00 +0000] "GET / HTTP/1.1" 200 5 "-" "curl/8.5.0"\n'


@pytest.mark.parametrize("buckets", [None, "2"])
@pytest.mark.parametrize(
    "encode",
    [
        pytest.param(lambda text: codecs.BOM_UTF16_LE + text.encode("utf-16-le"), id="bom-le"),
        pytest.param(lambda text: codecs.BOM_UTF16_BE + text.encode("utf-16-be"), id="bom-be"),
        pytest.param(lambda text: text.encode("utf-16-le"), id="le"),
        pytest.param(lambda text: text.encode("utf-16-be"), id="be"),
    ],
)
def test_utf_16_is_told_alike_in_a_csv_and_a_log(
    tmp_path: Path, encode: Callable[[str], bytes], buckets: str | None
) -> None:
    """One definition of UTF-16 (its byte order mark, or a NUL beside most bytes) and one message for CSV
    and logs. A CSV with a byte order mark was "cannot be read as CSV (UTF-16 text, by its byte order mark:
    give --encoding utf-16). Check the file, or give its real format with --input-format", one without
    "its header holds NUL characters", by a count of the NULs in its header, not the log's definition."""
    flags = ["--buckets", buckets] if buckets else []
    for name, text in (("export.csv", UTF16_CSV), ("access.log", UTF16_LOG)):
        source = tmp_path / name
        source.write_bytes(encode(text))
        result = cli(source, "-o", tmp_path / "o.csv", *flags)
        assert result.exit_code == 1 and not (tmp_path / "o.csv").exists(), result.output
        expected = (
            f"{source}: the file looks like UTF-16 text. Give --encoding utf-16 (or utf-16-le, utf-16-be)"
        )
        assert squash(expected + " and run again.") in squash(result.stderr), result.stderr
        assert "--input-format" not in result.stderr and "header" not in result.stderr


@pytest.mark.parametrize("buckets", [None, "2"])
def test_binary_data_with_nuls_in_a_csv_is_not_called_utf_16(tmp_path: Path, buckets: str | None) -> None:
    """Zero-padded binary numbers: a third of its header NULs, which the CSV's count called UTF-16 (and
    --encoding utf-16 then read as garbage). No NUL beside most bytes: the file is not CSV text."""
    source = tmp_path / "export.csv"
    source.write_bytes(b"".join(struct.pack(">i", n) for n in range(1, 40)) + b",x\n1,2\n")
    result = cli(source, "-o", tmp_path / "o.csv", *(["--buckets", buckets] if buckets else []))
    assert result.exit_code == 1, result.output
    message = squash(result.stderr)
    assert squash(f"{source}: its header holds NUL bytes: the file is not CSV text") in message
    assert "UTF-16" not in message


def test_utf_16_with_its_encoding_given_is_read(tmp_path: Path) -> None:
    source = tmp_path / "export.csv"
    source.write_bytes("user_id,timestamp,url\r\na,2024-01-01T00:00:00Z,/x\r\n".encode("utf-16"))
    table = sessionize.run([source], encoding="utf-16", no_geo=True).sessions
    assert table.select("user_id", "landing_page").rows() == [("a", "/x")]


@pytest.mark.parametrize("buckets", [None, "2"])
@pytest.mark.parametrize("name", ["events.ndjson", "events.jsonl.gz"])
def test_ndjson_with_a_byte_order_mark_keeps_its_first_event(
    tmp_path: Path, name: str, buckets: str | None
) -> None:
    """PowerShell and .NET start UTF-8 text with a byte order mark: the first line was malformed_json."""
    data = b'\xef\xbb\xbf{"user_id":"a","timestamp":"2024-01-01T00:00:00Z","url":"/first"}\r\n'
    data += b'{"user_id":"a","timestamp":"2024-01-01T00:10:00Z","url":"/second"}\r\n'
    source = tmp_path / name
    source.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    out = tmp_path / "o.csv"
    result = cli(source, "-o", out, *(["--buckets", buckets] if buckets else []))
    assert result.exit_code == 0, result.stderr
    table = pl.read_csv(out, infer_schema=False)
    assert table.select("user_id", "event_count", "landing_page", "exit_page").rows() == [
        ("a", "2", "/first", "/second")
    ]


@pytest.mark.parametrize(
    ("name", "pretty", "command"),
    [
        ("dump.json", False, "jq -c '.[]' {dir}/dump.json > {dir}/dump.ndjson"),
        ("dump.json", True, "jq -c '.[]' {dir}/dump.json > {dir}/dump.ndjson"),
        # Not x.ndjson.ndjson, nor x.ndjson itself (the shell would empty it before jq reads it).
        ("x.ndjson", False, "jq -c '.[]' {dir}/x.ndjson > {dir}/x.lines.ndjson"),
        ("api.json.gz", True, "gunzip -c {dir}/api.json.gz | jq -c '.[]' > {dir}/api.ndjson"),
    ],
)
def test_a_json_array_file_is_named_as_one(tmp_path: Path, name: str, pretty: bool, command: str) -> None:
    """A .json file of one array (jq -s, an API dump) was "malformed_json" with no word of why; the jq
    command to convert it named no file (FILE > NEW.ndjson, before that x.ndjson.ndjson): it names the
    file and a new one next to it."""
    events = [
        {"user_id": "a", "timestamp": "2024-01-01T00:00:00Z"},
        {"user_id": "a", "timestamp": "2024-01-01T00:10:00Z"},
    ]
    source = tmp_path / name
    text = json.dumps(events, indent=2 if pretty else None) + "\n"
    if name.endswith(".gz"):
        source.write_bytes(gzip.compress(text.encode()))
    else:
        source.write_text(text)
    result = cli(source, "-o", tmp_path / "o.csv")
    assert result.exit_code == 1
    assert "looks like one JSON array" in words(result.stderr)
    assert squash(command.format(dir=tmp_path)) in squash(result.stderr), result.stderr


@pytest.mark.parametrize(
    ("name", "command"),
    [
        ("standard input", "... | jq -c '.[]' > events.ndjson"),
        ("my dump.jsonl", "jq -c '.[]' 'my dump.jsonl' > 'my dump.ndjson'"),
        (
            "https://h.example/api/x.ndjson.gz",
            "curl -sL https://h.example/api/x.ndjson.gz | gunzip -c | jq -c '.[]' > x.lines.ndjson",
        ),
        # The name's case is kept (it was lowercased with the .gz test).
        ("Exports/Dump.JSON.gz", "gunzip -c Exports/Dump.JSON.gz | jq -c '.[]' > Exports/Dump.ndjson"),
    ],
)
def test_the_jq_command_for_stdin_a_name_with_spaces_and_a_url(name: str, command: str) -> None:
    assert _jq_command(name) == command


@pytest.mark.parametrize("buckets", [None, "2"])
@pytest.mark.parametrize("separator", [",", "\t"], ids=["csv", "tsv"])
def test_a_quote_inside_an_unquoted_value_is_a_character(
    tmp_path: Path, separator: str, buckets: str | None
) -> None:
    """`12" pizza` was a bad_quote (and a failed run by default), where Python's csv module, pandas and
    spreadsheets read it as it is; a quoted value over two lines and an unbalanced quote stay as they were."""
    rows = [
        ["user_id", "timestamp", "url"],
        ["a", "2024-07-01T10:00:00Z", '/menu/12" pizza'],
        ["a", "2024-07-01T10:05:00Z", '"/two\nlines"'],
        ["a", "2024-07-01T10:06:00Z", '/5" sub'],
        ["b", "2024-07-01T10:07:00Z", '"/unbalanced'],
        ["b", "2024-07-01T10:08:00Z", "/ok"],
    ]
    source = tmp_path / ("menu.csv" if separator == "," else "menu.tsv")
    source.write_text("".join(separator.join(row) + "\n" for row in rows))
    failed, rejected, users = fail_then_skip(source, tmp_path, buckets)
    assert rejected == [("6", "bad_quote")] and users == ["a", "b"]
    table = pl.read_csv(tmp_path / "o.csv", infer_schema=False)
    assert sorted(table.select("user_id", "landing_page", "exit_page").rows()) == [
        ("a", '/menu/12" pizza', '/5" sub'),
        ("b", "/ok", "/ok"),
    ]
    assert "line6:bad_quote" in squash(failed.stderr) and "line2" not in squash(failed.stderr)


#: Lines Python's csv module (default dialect), DuckDB and spreadsheets read, where a quote sits at the
#: edge of an unquoted value or next to a properly quoted field; and, last, a quote that never closes.
EDGE_QUOTES = [
    "u1,2024-05-01T10:00:00Z,https://a.com/a,ok",
    'u2,2024-05-01T10:01:00Z,https://a.com/b,screen 12"',
    'u3,2024-05-01T10:02:00Z,"https://a.com/c",size 5" wide',
    'u4,2024-05-01T10:03:00Z,/tv/55",ok',
    'u5,2024-05-01T10:04:00Z,/tv/32","4"" stand"',
    'u6,2024-05-01T10:05:00Z,"/a ""b""",ok',
    'u7,2024-05-01T10:06:00Z,"/unbalanced,ok',
    "u8,2024-05-01T10:07:00Z,/z,ok",
]


#: The read paths of a careful CSV read: in memory, in buckets, and in buckets with a tiny memory budget.
READ_PATHS = pytest.mark.parametrize(
    "options",
    [{}, {"buckets": 2}, {"buckets": 3, "memory_limit": "8K"}],
    ids=["memory", "buckets", "memory-limit"],
)


@READ_PATHS
def test_a_quote_at_the_edge_of_an_unquoted_value_is_read_as_the_csv_module_reads_it(
    tmp_path: Path, options: dict[str, Any]
) -> None:
    """`screen 12"` (a quote ending an unquoted value) and `"https://a.com/c",size 5" wide` (a quote in a
    line that also has a quoted field) were bad_quote rejects (and a failed run by default): they are read
    as Python's csv module reads them; a quote that opens a field and never closes is still a bad_quote."""
    source = write(tmp_path / "events.csv", "user_id,timestamp,url,note\n" + "\n".join(EDGE_QUOTES) + "\n")
    out, rejects = tmp_path / "o.csv", tmp_path / "rejects.csv"
    flags = [f"--{key.replace('_', '-')}={value}" for key, value in options.items()]
    failed = cli(source, "-o", out, *flags)
    assert failed.exit_code == 1 and not out.exists()
    message = squash(failed.stderr)
    assert "events.csv:1row(s)cannotbeparsedasCSV(line8:bad_quote" in message, failed.stderr
    result = cli(source, "-o", out, "--on-invalid", "skip", "--rejects", rejects, *flags)
    assert result.exit_code == 0, result.stderr
    table = pl.read_csv(rejects, infer_schema=False)
    assert table.select("source_row", "reject_reason").rows() == [("8", "bad_quote")]
    assert table["raw_line"].to_list() == [EDGE_QUOTES[6]]
    expected = [(r[0], r[2]) for r in csv.reader(EDGE_QUOTES[:6] + EDGE_QUOTES[7:])]
    assert expected[1] == ("u2", "https://a.com/b") and expected[4] == ("u5", '/tv/32"')
    sessions = pl.read_csv(out, infer_schema=False).select("user_id", "landing_page").sort("user_id")
    assert sessions.rows() == expected
    counted = sessionize.run([source], on_invalid="skip", no_geo=True, **options)
    assert (counted.rows_read, counted.events_read, counted.rejected) == (8, 7, 1)


@pytest.mark.parametrize(
    "options",
    [{}, {"buckets": 2}, {"buckets": 3, "memory_limit": "8K"}, {"state": "STATE"}],
    ids=["memory", "buckets", "memory-limit", "incremental"],
)
@pytest.mark.parametrize("more", [0, 3000], ids=["small", "large"])
def test_a_quote_inside_a_value_does_not_join_two_records(
    tmp_path: Path, options: dict[str, Any], more: int
) -> None:
    """Review 46: Polars took the quote of `sc"r` for the start of a quoted section running to the next
    line's quote, so that u0's and u1's lines were one record of the header's width: u1 lost, u0 given
    u1's time, no reject, exit 0. The records are Python's csv module's, on every path."""
    lines = ['"u0",a,sc"r,2024-05-01T10:00:00Z', 'u1,"q",12",2024-05-01T10:01:00Z']
    lines += [f"v{n},t,r,2024-05-01T11:00:00Z" for n in range(more)]
    source = write(tmp_path / "events.csv", "user_id,title,ref,timestamp\n" + "\n".join(lines) + "\n")
    if options.get("state"):
        options = {"state": tmp_path / "state", "output_dir": tmp_path / "out"}
    result = sessionize.run([source], no_geo=True, **options)
    assert (result.rows_read, result.events_read, result.rejected) == (2 + more, 2 + more, 0)
    sessions = (
        pl.read_parquet(tmp_path / "out" / "**" / "*.parquet") if "state" in options else result.sessions
    )
    starts = dict(
        sessions.filter(pl.col("user_id").is_in(["u0", "u1"])).select("user_id", "session_start").rows()
    )
    assert {user: start.minute for user, start in starts.items()} == {"u0": 0, "u1": 1}


@READ_PATHS
def test_a_quoted_field_over_lines_closes_where_the_csv_module_closes_it(
    tmp_path: Path, options: dict[str, Any]
) -> None:
    """Review 46: the careful reader paired the lines of a quoted field by their quotes' parity, so a quote
    in an unquoted value on the opening line (`12","Mozilla`: even) or the closing one (`x",sc"r`: even)
    rejected a good record in two pieces, or read a line inside the quoted field as an event of its own.
    The record ends where Python's csv module ends it."""
    text = (
        "user_id,timestamp,title,ua\n"
        'u1,2024-05-01T10:00:00Z,screen 12","Mozilla\nline2"\n'
        'u2,2024-05-01T10:05:00Z,"multi\nu9,2024-05-01T11:00:00Z,x",sc"r\n'
        "u3,2024-05-01T10:06:00Z,ok,ok\n"
    )
    source = write(tmp_path / "events.csv", text)
    expected = list(csv.reader(io.StringIO(text)))[1:]
    assert [record[0] for record in expected] == ["u1", "u2", "u3"]
    result = sessionize.run([source], no_geo=True, **options)
    assert (result.rows_read, result.events_read, result.rejected) == (3, 3, 0)
    assert sorted(result.sessions["user_id"].to_list()) == ["u1", "u2", "u3"]


def test_a_semicolon_separated_file_is_named_as_one(tmp_path: Path) -> None:
    """Excel writes CSV with semicolons in many locales: the error listed one column and said no more."""
    source = write(tmp_path / "export.csv", "user_id;timestamp;url\na;2024-01-01T00:00:00Z;/x\n")
    result = cli(source, "-o", tmp_path / "o.csv")
    assert result.exit_code == 1
    assert "separated by semicolons" in words(result.stderr)


def test_a_tab_separated_csv_is_told_to_be_read_as_tsv(tmp_path: Path) -> None:
    # A stop-56 review: a .csv of tabs was told to name its columns with --user-col and --time-col,
    # which cannot help (its one column is the whole header).
    source = write(tmp_path / "export.csv", "user_id\ttimestamp\turl\na\t2024-01-01T00:00:00Z\t/x\n")
    result = cli(source, "-o", tmp_path / "o.csv")
    assert result.exit_code == 1
    assert "separated by tabs" in words(result.stderr) and "--input-format tsv" in words(result.stderr)
    assert "--user-col" not in words(result.stderr)
    read = cli(source, "-o", tmp_path / "o.csv", "--input-format", "tsv")
    assert read.exit_code == 0, read.stderr


def test_a_plain_file_named_gz_is_told_apart_from_a_damaged_one(tmp_path: Path) -> None:
    # A stop-56 review: a plain CSV named .csv.gz was "corrupt or truncated gzip data: re-download".
    source = write(tmp_path / "events.csv.gz", "user_id,timestamp\nu1,2024-05-01T10:00:00Z\n")
    result = cli(source, "-o", tmp_path / "o.csv")
    assert result.exit_code == 1
    said = words(result.stderr)
    assert "named .gz but is not gzip data" in said and "rename it without .gz" in said
    assert "corrupt" not in said


def test_bom_and_crlf_just_work() -> None:
    table = sessionize.run([BAD / "bom_crlf.csv"], no_geo=True).sessions
    assert table["user_id"].to_list() == ["u1"]
    assert table["exit_page"].to_list() == ["https://s.example/b"]


# --- duplicates ----------------------------------------------------------------------------------------


def test_events_with_the_same_id_are_one_event_across_files(tmp_path: Path) -> None:
    first = write(
        tmp_path / "a.csv", "message_id,user_id,timestamp,url\nm1,u,2024-05-01T10:00:00Z,https://s/first\n"
    )
    second = write(
        tmp_path / "b.csv",
        "message_id,user_id,timestamp,url\nm1,u,2024-05-01T10:00:00Z,https://s/second\n,u,2024-05-01T10:01:00Z,\n"
        ",u,2024-05-01T10:01:00Z,\n",
    )
    result = sessionize.run([first, second], no_geo=True)
    assert result.duplicates_removed == 1
    # Events without an id are all kept.
    assert result.sessions["event_count"].to_list() == [3]
    assert result.sessions["landing_page"].to_list() == ["https://s/first"]


def test_exact_duplicates_without_ids_are_kept_unless_dedupe() -> None:
    kept = sessionize.run([BAD / "quotes_and_dupes.csv"], no_geo=True)
    assert kept.duplicates_removed == 0
    assert dict(kept.sessions.select("user_id", "event_count").iter_rows()) == {"u1": 2, 'u"2': 1}
    deduped = sessionize.run([BAD / "quotes_and_dupes.csv"], dedupe=True, no_geo=True)
    assert deduped.duplicates_removed == 1
    assert deduped.rows_read == deduped.events_read + deduped.duplicates_removed


def test_explicit_event_id_column(tmp_path: Path) -> None:
    events = write(
        tmp_path / "e.csv", "eid,user_id,timestamp\nx,u,2024-05-01T10:00:00Z\nx,u,2024-05-01T10:05:00Z\n"
    )
    assert sessionize.run([events], no_geo=True).duplicates_removed == 0
    assert sessionize.run([events], event_id_col="eid", no_geo=True).duplicates_removed == 1


# --- damaged files and differing schemas ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("not_parquet.parquet", "not a readable Parquet file"),
        ("truncated.parquet", "not a readable Parquet file"),
        ("truncated.csv.gz", "corrupt or truncated"),
    ],
)
def test_damaged_files_name_the_file(tmp_path: Path, name: str, message: str) -> None:
    out = tmp_path / "o.csv"
    result = cli(BAD / name, "-o", out, "--on-invalid", "skip")
    assert result.exit_code == 1
    assert name in squash(result.stderr) and squash(message) in squash(result.stderr)
    assert "Traceback" not in result.output and not out.exists()


@pytest.mark.parametrize("kind", ["parquet", "csv"])
def test_two_columns_of_one_name_are_named_as_such(tmp_path: Path, kind: str) -> None:
    # A stop-56 review: a Parquet file with two url columns was "not a readable Parquet file: check that
    # it is complete"; a CSV header x,x,x_duplicated_0 got Polars' text and "check the file".
    if kind == "parquet":
        import pyarrow as pa  # type: ignore[import-untyped]
        import pyarrow.parquet as pq  # type: ignore[import-untyped]

        source = tmp_path / "events.parquet"
        columns = [pa.array(["u1"]), pa.array(["2024-05-01T10:00:00Z"]), pa.array(["/a"]), pa.array(["/b"])]
        pq.write_table(pa.Table.from_arrays(columns, names=["user_id", "timestamp", "url", "url"]), source)
        named = "url"
    else:
        source = write(
            tmp_path / "events.csv", "user_id,timestamp,x,x,x_duplicated_0\nu1,2024-05-01T10:00:00Z,1,2,3\n"
        )
        named = "x"
    result = cli(source, "-o", tmp_path / "o.csv")
    assert result.exit_code == 1
    said = words(result.stderr)
    assert f"two of its columns are named '{named}'" in said and "Rename one of them" in said
    assert "complete" not in said


def test_a_truncated_ndjson_file_has_its_cut_line_rejected(tmp_path: Path) -> None:
    """Its last line is cut off: one malformed row (line 2), not a file that cannot be read."""
    failed = cli(BAD / "truncated.ndjson", "-o", tmp_path / "o.csv")
    assert failed.exit_code == 1
    assert "truncated.ndjson" in squash(failed.stderr) and "line2:malformed_json" in squash(failed.stderr)
    skipped = cli(BAD / "truncated.ndjson", "-o", tmp_path / "o.csv", "--on-invalid", "skip")
    assert skipped.exit_code == 0, skipped.stderr
    assert pl.read_csv(tmp_path / "o.csv").height == 1


@pytest.mark.parametrize(
    "value",
    [
        "1e400",  # valid JSON grammar, out of any float's range
        "true",  # a bool where the other lines have numbers
        "99999999999999999999999999999",  # beyond 64 bits
        "[1]",  # a list where the others have numbers
        '{"a": 1}',  # an object where the others have numbers (read as the column's fields)
    ],
)
@pytest.mark.parametrize("buckets", [None, "2"])
def test_one_json_line_of_an_unexpected_kind_is_one_rejected_row(
    tmp_path: Path, value: str, buckets: str | None
) -> None:
    """A line of valid JSON whose value the others' do not go with stopped the whole file, even with
    --on-invalid skip, and named no line: it is now that line's row, rejected as bad_json_value, on the
    in-memory and bucketed paths alike."""
    source = write(
        tmp_path / "events.ndjson",
        '{"user_id": "u1", "timestamp": 1714557600}\n'
        f'{{"user_id": "u2", "timestamp": {value}}}\n'
        '{"user_id": "u3", "timestamp": 1714557700}\n',
    )
    failed, rejects, users = fail_then_skip(source, tmp_path, buckets)
    assert "line2:bad_json_value" in squash(failed.stderr), failed.stderr
    assert users == ["u1", "u3"]
    assert rejects == [("2", "bad_json_value")]


def test_a_field_that_is_an_object_on_one_line_and_a_list_on_others(tmp_path: Path) -> None:
    """The kind most lines give a field wins; the line that differs is rejected, whatever field it is."""
    source = write(
        tmp_path / "events.ndjson",
        '{"user_id": "u1", "timestamp": 1714557600, "props": {"p": "s"}}\n'
        '{"user_id": "u2", "timestamp": 1714557600, "props": [{"k": 1}]}\n'
        '{"user_id": "u3", "timestamp": 1714557600, "props": {"p": "t"}}\n'
        "not json\n",
    )
    rejects = tmp_path / "rejects.csv"
    skipped = cli(source, "-o", tmp_path / "o.csv", "--on-invalid", "skip", "--rejects", rejects)
    assert skipped.exit_code == 0, skipped.stderr
    table = pl.read_csv(rejects, infer_schema=False)
    assert table.select("source_row", "reject_reason").rows() == [
        ("2", "bad_json_value"),
        ("4", "malformed_json"),
    ]


@pytest.mark.parametrize("buckets", [None, "2"])
@pytest.mark.parametrize(
    ("first", "second"),
    [
        ('"tags": true', '"tags": "a"'),  # a boolean and a text
        ('"tags": ["x"]', '"tags": "a"'),  # a list and a text
        ('"tags": {"k": 1}', '"tags": "a"'),  # an object and a text
        ('"o": {"k": [1, {"a": 2}]}', '"o": {"k": ["s"]}'),  # a list of a number and an object
    ],
    ids=["bool_text", "list_text", "object_text", "mixed_list"],
)
def test_valid_json_lines_read_alone_are_read_beside_a_malformed_line(
    tmp_path: Path, first: str, second: str, buckets: str | None
) -> None:
    # A stop-56 review: the lines read fine on their own, but one malformed line sent the file to the
    # careful reader, which held every line to its fields' usual kinds and rejected valid lines as
    # bad_json_value (named in the error of a failing run; set aside with --on-invalid skip).
    lines = [
        f'{{"user_id": "u1", "timestamp": "2024-05-01T10:00:00Z", "url": "/a", {first}}}',
        f'{{"user_id": "u2", "timestamp": "2024-05-01T10:00:00Z", "url": "/b", {second}}}',
    ]
    clean = write(tmp_path / "clean.ndjson", "\n".join(lines) + "\n")
    source = write(tmp_path / "events.ndjson", "\n".join([*lines, '{"user_id": "u3", "timestamp": ', ""]))
    flags = ["--buckets", buckets] if buckets else []
    assert cli(clean, "-o", tmp_path / "clean.csv", *flags).exit_code == 0
    failed = cli(source, "-o", tmp_path / "o.csv", *flags)
    assert failed.exit_code == 1
    assert "line3:malformed_json" in squash(failed.stderr)
    assert "line1" not in squash(failed.stderr) and "line2" not in squash(failed.stderr)
    rejects = tmp_path / "rejects.csv"
    skipped = cli(source, "-o", tmp_path / "o.csv", "--on-invalid", "skip", "--rejects", rejects, *flags)
    assert skipped.exit_code == 0, skipped.stderr
    assert pl.read_csv(rejects, infer_schema=False).select("source_row", "reject_reason").rows() == [
        ("3", "malformed_json")
    ]
    assert pl.read_csv(tmp_path / "o.csv")["user_id"].sort().to_list() == ["u1", "u2"]


def nested(depth: int) -> str:
    """A JSON line of ``depth`` levels: its own object, and lists within each other."""
    inner = depth - 1
    return f'{{"user_id": "u{depth}", "timestamp": 1714557600, "x": {"[" * inner}{"]" * inner}}}'


@pytest.mark.parametrize("buckets", [None, "2"])
def test_json_nested_too_deep_is_rejected_as_such(tmp_path: Path, buckets: str | None) -> None:
    """A line nested thousands of levels deep may be valid JSON: it is rejected as ``json_too_deep``, not
    as ``malformed_json``, which would send its writer looking for a syntax error. So is any line beyond
    JSON_DEPTH_LIMIT levels (Polars reads such lines slowly, and crashes on objects about 900 deep), and
    one within it is read, whether or not another line has the file read line by line (the check of a
    600-level line's kinds ended that run with a RecursionError)."""
    limit = JSON_DEPTH_LIMIT
    source = write(
        tmp_path / "events.ndjson",
        f"{nested(limit)}\n{nested(5000)}\n{nested(600)}\n{nested(limit + 1)}\n"
        '{"user_id": "u9", "timestamp": 1714557700\n',
    )
    failed, rejects, users = fail_then_skip(source, tmp_path, buckets)
    assert "line2:json_too_deep" in squash(failed.stderr), failed.stderr
    assert rejects == [
        ("2", "json_too_deep"),
        ("3", "json_too_deep"),
        ("4", "json_too_deep"),
        ("5", "malformed_json"),
    ]
    assert users == [f"u{limit}"]
    # Without another bad line (read by the fast reader) the same lines give the same result.
    (tmp_path / "clean").mkdir()
    clean = write(tmp_path / "clean" / "e.ndjson", f"{nested(limit)}\n{nested(limit + 1)}\n{nested(600)}\n")
    failed, rejects, users = fail_then_skip(clean, tmp_path / "clean", buckets)
    assert rejects == [("2", "json_too_deep"), ("3", "json_too_deep")] and users == [f"u{limit}"]
    docs = " ".join((REPO / "docs" / "bad-input-and-privacy.md").read_text(encoding="utf-8").split())
    assert f"nest more than {limit} levels deep" in docs and "(`json_too_deep`" in docs


@pytest.mark.parametrize("engine", [[], ["--buckets", "2"]], ids=["memory", "buckets"])
def test_lists_nested_deep_with_a_value_never_reach_polars(tmp_path: Path, engine: list[str]) -> None:
    """Lists nested in lists around a value: 32 levels kept Polars' NDJSON reader busy for more than ten
    minutes (deaf to SIGTERM) before any depth check could run. The file is read line by line, the
    deep line rejected, in seconds (a child process, so that a hang fails the test)."""

    def line(user: str, minute: int, depth: int = 0) -> str:
        q = f', "q": {"[" * depth}1{"]" * depth}' if depth else ', "url": "/p"'
        return f'{{"user_id": "{user}", "timestamp": "2024-05-01T10:{minute:02d}:00Z"{q}}}'

    lines = [
        *(line("u1", minute) for minute in range(5)),
        line("u2", 0, JSON_DEPTH_LIMIT + 24),
        line("u3", 0, 70),
    ]
    source = write(tmp_path / "deep.ndjson", "\n".join(lines) + "\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "sessionize",
            "run",
            str(source),
            "--no-geo",
            "--on-invalid",
            "skip",
            "-o",
            str(tmp_path / "o.csv"),
            "--rejects",
            str(tmp_path / "r.csv"),
            *engine,
        ],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    rejects = pl.read_csv(tmp_path / "r.csv", infer_schema=False)
    assert rejects.select("source_row", "reject_reason").rows() == [
        ("6", "json_too_deep"),
        ("7", "json_too_deep"),
    ]
    assert pl.read_csv(tmp_path / "o.csv").get_column("user_id").to_list() == ["u1"]


def test_a_file_that_disappears_while_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events = write(tmp_path / "gone.csv", "user_id,timestamp\nu,2024-05-01T10:00:00Z\n")
    original = sio.read_file

    def vanish(source: sio.InputFile, options: sio.ReadOptions) -> sio.FileRead:
        Path(source.path).unlink()
        return original(source, options)

    monkeypatch.setattr(sio.read, "read_file", vanish)
    result = cli(events, "-o", tmp_path / "o.csv")
    assert result.exit_code == 1
    assert "gone.csv" in squash(result.stderr) and "disappeared" in words(result.stderr)


def test_schemas_that_differ_between_files(tmp_path: Path) -> None:
    # Same role, different names, types and column sets: integer ids and native timestamps in Parquet,
    # text in CSV, a referrer only in the CSV.
    parquet = tmp_path / "a.parquet"
    pl.DataFrame(
        {"userId": [42], "ts": pl.Series([1714557600_000_000]).cast(pl.Datetime("us"))}
    ).write_parquet(parquet)
    csv = write(
        tmp_path / "b.csv", "user_id,timestamp,referrer\n42,2024-05-01T10:20:00Z,https://www.google.com/\n"
    )
    table = sessionize.run([parquet, csv], no_geo=True).sessions
    assert table.select("user_id", "event_count", "duration_s", "traffic_source").rows() == [
        ("42", 2, 1200.0, "direct")
    ]


# --- the nasty corpus and generated CSV ------------------------------------------------------------------


def _check_run(paths: list[Path], tmp_path: Path, *extra: str) -> None:
    out = tmp_path / "out.csv"
    rejects = tmp_path / "rejects.csv"
    result = CliRunner().invoke(
        app,
        [
            "run",
            *map(str, paths),
            "-o",
            str(out),
            "--no-geo",
            "--valid-until",
            "2100-01-01",
            "--log-format",
            "text",
            *extra,
        ],
    )
    assert "Traceback" not in result.output
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []
    if result.exit_code == 0:
        table = pl.read_csv(out, infer_schema=False)
        summary = words(result.stderr)
        sessionized = table["event_count"].cast(pl.Int64).sum() if table.height else 0
        assert f"events sessionized {sessionized:,}" in summary
        if "--rejects" in extra:
            assert rejects.exists()
    else:
        assert result.exit_code == 1, result.output
        assert not out.exists()
        assert any(str(p) in squash(result.stderr) for p in paths), result.stderr


@pytest.mark.parametrize("name", sorted(p.name for p in BAD.iterdir() if p.name != "README.md"))
@pytest.mark.parametrize("mode", ["fail", "skip"])
def test_every_nasty_file(tmp_path: Path, name: str, mode: str) -> None:
    copy = tmp_path / "in" / name
    copy.parent.mkdir()
    shutil.copy(BAD / name, copy)
    work = tmp_path / "work"
    work.mkdir()
    extra = ["--on-invalid", mode] + (["--rejects", str(work / "rejects.csv")] if mode == "skip" else [])
    _check_run([copy], work, *extra)


@pytest.mark.parametrize(
    ("name", "sessions"),
    [
        ("bom_crlf.csv", 1),
        ("header_only.csv", 0),
        ("empty.csv", 0),
        ("tabs.tsv", 2),
        ("quotes_and_dupes.csv", 2),
    ],
)
def test_valid_nasty_files_succeed(name: str, sessions: int) -> None:
    assert sessionize.run([BAD / name], no_geo=True).session_count == sessions


CSV_CELLS = st.sampled_from(
    [
        "u1",
        "u2",
        "",
        '"',
        '""',
        "a,b",
        "2024-05-01T10:00:00Z",
        "2024-05-01T10:40:00Z",
        "x\u00e9",
        "1714557600",
        " ",
    ]
)


@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(st.lists(CSV_CELLS, min_size=1, max_size=4), max_size=8),
    latin1=st.booleans(),
)
def test_generated_csv_text_never_crashes(
    tmp_path_factory: pytest.TempPathFactory, rows: list[list[str]], latin1: bool
) -> None:
    tmp_path = tmp_path_factory.mktemp("gen")
    text = "user_id,timestamp,url\n" + "\n".join(",".join(row) for row in rows) + "\n"
    path = tmp_path / "gen.csv"
    path.write_bytes(text.encode("latin-1" if latin1 else "utf-8"))
    work = tmp_path / "work"
    work.mkdir()
    _check_run([path], work, "--on-invalid", "skip", "--rejects", str(work / "rejects.csv"))
    result = sessionize.run([path], on_invalid="skip", no_geo=True, valid_until="2100-01-01")
    assert result.rows_read == result.events_read + result.rejected + result.duplicates_removed


# --- privacy ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ("81.2.69.160", "81.2.69.0"),
        ("2001:db8:85a3:8d3:1319:8a2e:370:7348", "2001:db8:85a3::"),
        ("2001:480:10::1", "2001:480:10::"),
        ("::ffff:81.2.69.160", "::ffff:81.2.69.0"),
        ("not an ip", None),
        (None, None),
    ],
)
def test_anonymize_ip(ip: str | None, expected: str | None) -> None:
    assert anonymize_ip(ip) == expected


def test_anonymize_after_and_before_geo(tmp_path: Path) -> None:
    events = write(tmp_path / "e.csv", "user_id,timestamp,ip\nu,2024-05-01T10:00:00Z,81.2.69.160\n")
    plain = sessionize.run([events], geoip_db=CITY_DB).sessions.row(0, named=True)
    after = sessionize.run([events], geoip_db=CITY_DB, anonymize_ip=True).sessions.row(0, named=True)
    before = sessionize.run([events], geoip_db=CITY_DB, anonymize_ip="before-geo").sessions.row(0, named=True)
    assert (plain["ip"], plain["city"]) == ("81.2.69.160", "London")
    assert (after["ip"], after["city"]) == ("81.2.69.0", "London")
    # 81.2.69.0 is outside the test database's London network: the lookup saw the truncated address.
    assert (before["ip"], before["city"]) == ("81.2.69.0", None)
    for flag, city in (("--anonymize-ip", "London"), ("--anonymize-ip=before-geo", "")):
        out = tmp_path / "o.csv"
        result = CliRunner().invoke(
            app, ["run", str(events), flag, "--geoip-db", str(CITY_DB), "-o", str(out)]
        )
        assert result.exit_code == 0, result.output
        row = pl.read_csv(out, infer_schema=False).row(0, named=True)
        assert row["ip"] == "81.2.69.0" and (row["city"] or "") == city


@pytest.mark.parametrize(
    ("flags", "city"),
    [
        (["--anonymize-ip", "before-geo"], ""),
        (["--anonymize-ip", "after-geo"], "London"),
        (["--anonymize-ip"], "London"),
        (["--anonymize-ip", "--", "before-geo"], "London"),
    ],
)
def test_anonymize_ip_takes_its_mode_after_a_space(workdir: Path, flags: list[str], city: str) -> None:
    """``--anonymize-ip before-geo`` is the mode, as any option's value after a space: never an input
    (here a file of that name, whose events would be read) with the mode silently after-geo. After
    ``--`` the name is an input again, and the flag alone means after-geo."""
    events = write(workdir / "e.csv", "user_id,timestamp,ip\nu,2024-05-01T10:00:00Z,81.2.69.160\n")
    write(workdir / "before-geo", "user_id,timestamp,ip\nv,2024-05-01T10:00:00Z,81.2.69.160\n")
    options = ["--input-format", "csv", "--geoip-db", str(CITY_DB), "-o", "o.csv"]
    result = CliRunner().invoke(app, ["run", str(events), *options, *flags])
    assert result.exit_code == 0, result.output
    rows = pl.read_csv(workdir / "o.csv", infer_schema=False).rows(named=True)
    users = ["u", "v"] if "--" in flags else ["u"]
    assert [(row["user_id"], row["ip"], row["city"] or "") for row in rows] == [
        (user, "81.2.69.0", city) for user in users
    ]


def test_hash_user_ids_is_a_stable_keyed_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events = write(tmp_path / "e.csv", "user_id,timestamp\n00042,2024-05-01T10:00:00Z\n")
    monkeypatch.setenv("SESSIONIZE_SALT", "s3cret")
    expected = hmac.new(b"s3cret", b"00042", hashlib.sha256).hexdigest()
    for _ in range(2):
        out = tmp_path / "o.csv"
        result = CliRunner().invoke(
            app, ["run", str(events), "--no-geo", "--hash-user-ids", "SESSIONIZE_SALT", "-o", str(out)]
        )
        assert result.exit_code == 0, result.output
        row = pl.read_csv(out, infer_schema=False).row(0, named=True)
        assert row["user_id"] == expected
        assert row["session_id"].startswith(expected + "-")
        assert "00042" not in out.read_text()
    monkeypatch.delenv("SESSIONIZE_SALT")
    missing = CliRunner().invoke(app, ["run", str(events), "--hash-user-ids", "SESSIONIZE_SALT"])
    assert missing.exit_code == 2
    assert "SESSIONIZE_SALT" in words(missing.stderr)


def test_drop_columns(tmp_path: Path) -> None:
    events = write(
        tmp_path / "e.csv",
        "user_id,timestamp,ip,referrer\nu,2024-05-01T10:00:00Z,81.2.69.160,https://t.co/\n",
    )
    out = tmp_path / "o.parquet"
    result = cli(events, "--drop-columns", "ip, referrer", "-o", out)
    assert result.exit_code == 0, result.output
    columns = pl.read_parquet(out).columns
    assert "ip" not in columns and "referrer" not in columns and "traffic_source" in columns
    unknown = cli(events, "--drop-columns", "password", "-o", out)
    assert unknown.exit_code == 2
    assert "password" in words(unknown.stderr)


def test_privacy_controls_apply_to_the_rejects_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events = write(tmp_path / "dirty.csv", DIRTY)
    monkeypatch.setenv("SALT", "s3cret")
    rejects = tmp_path / "r.csv"
    args = ["--on-invalid", "skip", "--rejects", rejects, "--anonymize-ip", "--hash-user-ids", "SALT"]
    result = cli(events, "-o", tmp_path / "o.csv", *args)
    assert result.exit_code == 0, result.output
    table = pl.read_csv(rejects, infer_schema=False)
    assert "raw_line" not in table.columns
    assert table.filter(pl.col("ip").is_not_null())["ip"].to_list() == ["81.2.69.0"] * 3
    assert table["user_id"].to_list()[1] == hmac.new(b"s3cret", b"u2", hashlib.sha256).hexdigest()
    assert "81.2.69.160" not in rejects.read_text() and ",u2," not in rejects.read_text()


@pytest.mark.parametrize(
    ("flags", "agg", "secret"),
    [
        (["--hash-user-ids", "SALT"], "a=sum(amount)", "alice@example.com"),
        (["--anonymize-ip"], "a=mean(client_ip)", "203.0.113.5"),
    ],
)
def test_an_error_does_not_show_a_copy_of_a_hidden_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flags: list[str], agg: str, secret: str
) -> None:
    """``--on-invalid fail``: the error that names a bad value (in cron's log) does not show it under
    --hash-user-ids or --anonymize-ip, where it may be a copy of the user id or address (review, stop
    55: the rejects file hid such copies, the error showed them)."""
    monkeypatch.setenv("SALT", "s3cret")
    events = write(
        tmp_path / "events.csv",
        "user_id,timestamp,ip,amount,client_ip\n"
        "alice@example.com,2024-05-01T10:00:00Z,203.0.113.5,alice@example.com,203.0.113.5\n",
    )
    result = cli(events, "-o", tmp_path / "o.csv", "--agg", agg, *flags)
    assert result.exit_code == 1, result.output
    assert "not numbers (line 2: value not shown" in words(result.output)
    assert secret not in result.output
    assert not (tmp_path / "o.csv").exists()
    # Without a privacy flag the value is shown, as the example of what to fix.
    shown = cli(events, "-o", tmp_path / "o.csv", "--agg", agg)
    assert shown.exit_code == 1 and secret in shown.output


@pytest.mark.parametrize("column", ["timestamp", "amount"])
def test_an_error_shows_a_huge_value_cut_short(tmp_path: Path, column: str) -> None:
    """A stranger's megabyte-long value named in an error is cut to its first 100 characters and its
    length (it was echoed whole: a 1 MB JSON line, a 9 MB panel, in cron's log or mail)."""
    huge = "2024" * 250_000
    values = {"timestamp": "2024-05-01T10:00:00Z", "amount": "1", column: huge}
    events = write(
        tmp_path / "events.csv", f"user_id,timestamp,amount\nu1,{values['timestamp']},{values['amount']}\n"
    )
    for log_format in ("json", "text"):
        args = ["run", str(events), "-o", str(tmp_path / "o.csv"), "--no-geo", "--agg", "a=sum(amount)"]
        result = CliRunner().invoke(app, [*args, "--log-format", log_format])
        assert result.exit_code == 1, result.output[:2000]
        assert len(result.output) < 5_000, len(result.output)
        assert "(1,000,000 characters)" in words(result.output)
        assert "line 2" in words(result.output)


def private_rejects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, events: Path, *flags: str
) -> tuple[str, pl.DataFrame]:
    """The rejects file's text and table under ``--hash-user-ids`` (secret ``s3cret``) and ``flags``."""
    monkeypatch.setenv("SALT", "s3cret")
    rejects = tmp_path / "r.csv"
    args = ["--on-invalid", "skip", "--rejects", rejects, "--hash-user-ids", "SALT", *flags]
    result = cli(events, "-o", tmp_path / "o.csv", *args)
    assert result.exit_code == 0, result.output
    return rejects.read_text(encoding="utf-8"), pl.read_csv(rejects, infer_schema=False)


def test_privacy_controls_hide_the_login_id_in_the_rejects_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--hash-user-ids hashes the login id (--stitch-col: Segment's userId, often an e-mail address) in the
    rejects file as in the sessions; an empty user id stays empty, not the hash of nothing."""
    events = write(
        tmp_path / "events.csv",
        "anon,login,timestamp,url\n"
        "a1,alice@example.com,2024-05-01T10:00:00Z,https://s.example/\n"
        "a2,bob@example.com,not a time,https://s.example/\n"
        ",carol@example.com,2024-05-01T10:00:00Z,https://s.example/\n",
    )
    text, table = private_rejects(
        tmp_path, monkeypatch, events, "--user-col", "anon", "--stitch-col", "login"
    )
    assert "bob@example.com" not in text and "carol@example.com" not in text
    digest = hmac.new(b"s3cret", b"bob@example.com", hashlib.sha256).hexdigest()
    assert table.select("anon", "login").rows() == [
        (hmac.new(b"s3cret", b"a2", hashlib.sha256).hexdigest(), digest),
        (None, hmac.new(b"s3cret", b"carol@example.com", hashlib.sha256).hexdigest()),
    ]


def test_copies_of_a_hidden_id_or_address_are_hidden_in_the_rejects_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostHog's SDK sends the user id again inside ``properties`` (``distinct_id``), and a proxy's log may
    carry the address twice: a rejected row kept those copies in the clear (``properties_distinct_id``)
    while ``distinct_id`` itself was hashed. Each copy (the same text in another column of the row) is
    hidden as the value is; other values are kept as read."""
    lines = [
        {"distinct_id": "ph-user-1", "timestamp": "not a time", "ip": "81.2.69.160",
         "properties": {"distinct_id": "ph-user-1", "$ip": "81.2.69.160", "$device_id": "dev-9"}},
        {"distinct_id": "ph-user-2", "timestamp": "2024-05-01T10:00:00Z", "ip": "81.2.69.161",
         "properties": {"distinct_id": "ph-user-2", "$ip": "81.2.69.161", "$device_id": "dev-8"}},
    ]  # fmt: skip
    events = write(tmp_path / "events.ndjson", "".join(json.dumps(line) + "\n" for line in lines))
    flags = ("--user-col", "distinct_id", "--ip-col", "ip", "--anonymize-ip")
    text, table = private_rejects(tmp_path, monkeypatch, events, *flags)
    assert "ph-user-1" not in text and "81.2.69.160" not in text
    digest = hmac.new(b"s3cret", b"ph-user-1", hashlib.sha256).hexdigest()
    assert table.select(
        "distinct_id", "properties_distinct_id", "ip", "properties_$ip", "properties_$device_id"
    ).rows() == [(digest, digest, "81.2.69.0", "81.2.69.0", "dev-9")]


def test_a_preset_s_every_address_column_is_hidden_in_the_rejects_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review of stop 57: the mixpanel preset reads the address from ``properties.ip`` or, where that has
    none, ``properties.$ip``; a rejected row kept the second in the clear (only the first was the role's
    column), though the session table truncated the address read from it."""
    lines = [
        {"event": "page", "properties": {"time": 1714557600, "distinct_id": "mp-1", "$insert_id": "a1",
         "ip": "203.0.113.77", "$current_url": "/a"}},
        {"event": "page", "properties": {"time": "not a time", "distinct_id": "mp-2", "$insert_id": "a2",
         "$ip": "203.0.113.78", "$current_url": "/b"}},
    ]  # fmt: skip
    events = write(tmp_path / "events.ndjson", "".join(json.dumps(line) + "\n" for line in lines))
    text, table = private_rejects(tmp_path, monkeypatch, events, "--preset", "mixpanel", "--anonymize-ip")
    assert "203.0.113.78" not in text and "mp-2" not in text
    assert table.select("properties_ip", "properties_$ip").rows() == [(None, "203.0.113.0")]


def test_copies_of_an_address_or_id_read_from_json_text_are_hidden_in_the_rejects_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review of stop 57: with the address and user id read from a text column of JSON objects (PostHog's
    ``properties`` in its CSV export), that column is left out of a rejected row, but their copies in the
    row's other columns (the top-level ``distinct_id`` and ``$ip`` of PostHog's export) stayed in the
    clear: the values hidden were in no column of the rejects to compare with. They are compared with
    the values the row was read with."""
    events = write(
        tmp_path / "events.csv",
        "distinct_id,timestamp,event,properties,ip_dup,other\n"
        'ph-0,2024-05-01T10:00:00Z,$pageview,"{""$ip"": ""203.0.113.77"", ""distinct_id"": ""ph-0""}",'
        "203.0.113.77,x\n"
        'ph-1,bad,$pageview,"{""$ip"": ""203.0.113.88"", ""distinct_id"": ""ph-1""}",203.0.113.88,'
        "203.0.113.99\n",
    )
    flags = ("--user-col", "properties.distinct_id", "--ip-col", "properties.$ip", "--anonymize-ip")
    text, table = private_rejects(tmp_path, monkeypatch, events, *flags)
    assert "203.0.113.88" not in text and "ph-1" not in text
    digest = hmac.new(b"s3cret", b"ph-1", hashlib.sha256).hexdigest()
    # Another address than the row's is kept as read.
    assert table.select("distinct_id", "ip_dup", "other").rows() == [(digest, "203.0.113.0", "203.0.113.99")]
    assert "properties" not in table.columns


def test_an_empty_user_id_is_not_hashed_in_the_rejects_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An empty user id (rejected as such) stays empty under --hash-user-ids: the HMAC of the empty
    string would look like a real user's id."""
    events = write(
        tmp_path / "events.ndjson",
        '{"user_id": "u1", "timestamp": "2024-05-01T10:00:00Z"}\n'
        '{"user_id": "", "timestamp": "2024-05-01T10:00:00Z"}\n',
    )
    monkeypatch.setenv("SALT", "s3cret")
    rejects = tmp_path / "r.csv"
    args = ["--on-invalid", "skip", "--rejects", rejects, "--hash-user-ids", "SALT"]
    result = cli(events, "-o", tmp_path / "o.csv", *args)
    assert result.exit_code == 0, result.output
    table = pl.read_csv(rejects, infer_schema=False, empty_string_is_null=False)
    assert table["reject_reason"].to_list() == ["empty_user_id"]
    assert table["user_id"].to_list() == [""]
    assert hmac.new(b"s3cret", b"", hashlib.sha256).hexdigest() not in rejects.read_text(encoding="utf-8")


def test_a_malformed_row_does_not_turn_quoted_multi_line_records_into_rejects(tmp_path: Path) -> None:
    """One row of the wrong width sends the file to the careful reader, which split records at every
    newline: the valid record whose quoted user agent spans two lines (as sessionize itself writes one)
    became two bad_quote rejects, and rows read went from 3 to 4. It is one record again; a lone quote
    that never closes is still one bad line, and the lines after it are read."""
    source = write(
        tmp_path / "events.csv",
        "user_id,timestamp,url,user_agent\n"
        'u1,2024-05-01T10:00:00Z,/a,"Mozilla\nline2"\n'
        "u2,2024-05-01T10:00:00Z,/b,ok\n"
        "u3,2024-05-01T10:00:00Z,/c,x,EXTRA\n"
        'u4,2024-05-01T10:00:00Z,/d,"never closed\n'
        "u5,2024-05-01T10:00:00Z,/e,ok\n",
    )
    failed = cli(source, "-o", tmp_path / "o.csv")
    assert failed.exit_code == 1
    assert "line5:wrong_field_count" in squash(failed.stderr) and "line2" not in squash(failed.stderr)
    rejects = tmp_path / "rejects.csv"
    result = sessionize.run(
        [source], output=str(tmp_path / "o.csv"), no_geo=True, on_invalid="skip", rejects=str(rejects)
    )
    assert (result.rows_read, result.rejected, result.events_read) == (5, 2, 3)
    table = pl.read_csv(tmp_path / "o.csv").sort("user_id")
    assert table["user_id"].to_list() == ["u1", "u2", "u5"]
    assert table.filter(pl.col("user_id") == "u1")["user_agent"].to_list() == ["Mozilla\nline2"]
    assert pl.read_csv(rejects, infer_schema=False)["source_row"].to_list() == ["5", "6"]


@pytest.mark.parametrize("buckets", [None, "2"])
@pytest.mark.parametrize(
    "other",
    [
        b"u3,2024-05-01T10:00:00Z,/c,x,EXTRA\r\n",  # a row of the wrong width
        b"u3,2024-05-01T10:00:00Z,/c,a\rb\r\n",  # a lone CR in an unquoted value (no reject)
    ],
    ids=["wrong_width", "lone_cr"],
)
def test_a_quoted_value_over_lines_keeps_its_crlf_whatever_another_row_holds(
    tmp_path: Path, other: bytes, buckets: str | None
) -> None:
    # A stop-56 review: the careful reader (which a malformed row, or a lone CR anywhere, sends the
    # file to) joined a quoted field's lines with "\n" alone: the "\r\n" inside another, valid row's
    # value became "\n", so that value depended on the rest of the file (and with a lone CR nothing was
    # rejected to tell).
    source = tmp_path / "events.csv"
    source.write_bytes(
        b"user_id,timestamp,url,user_agent\r\n"
        b'u1,2024-05-01T10:00:00Z,/a,"Mozilla\r\nline2\r\nline3"\r\n'
        b"u2,2024-05-01T10:00:00Z,/b,ok\r\n" + other
    )
    flags = ["--buckets", buckets] if buckets else []
    result = cli(source, "-o", tmp_path / "o.csv", "--on-invalid", "skip", *flags)
    assert result.exit_code == 0, result.stderr
    table = pl.read_csv(tmp_path / "o.csv").sort("user_id")
    agents = dict(table.select("user_id", "user_agent").rows())
    assert agents["u1"] == "Mozilla\r\nline2\r\nline3"
    if b"\rb" in other:
        assert agents["u3"] == "a\rb"


@pytest.mark.parametrize("buckets", [None, "2"])
@pytest.mark.parametrize("separator", [",", "\t"])
@pytest.mark.parametrize("blank", ["", "   ", " \t "])
def test_a_csv_line_of_separators_only_is_a_rejected_row_not_a_blank_line(
    tmp_path: Path, separator: str, blank: str, buckets: str | None
) -> None:
    """A line of empty fields (",,") read as a row of nulls, which the fast reader dropped as a blank
    line: rows read 3 with 4 records in the file, nothing rejected, exit 0. It is now a row with an
    empty user id (line 3); blank and whitespace-only lines are still no rows (but for the separator:
    a TSV line of tabs is a record)."""
    body = [
        ["user_id", "timestamp", "url"],
        ["u1", "2024-05-01T10:00:00Z", "/a"],
        ["", "", ""],
        ["u2", "2024-05-01T10:01:00Z", "/b"],
        ["u3", "2024-05-01T10:02:00Z", "/c"],
    ]
    lines = [separator.join(row) for row in body]
    lines.insert(3, "")
    if separator not in blank:
        lines.insert(5, blank)
    name = "events.tsv" if separator == "\t" else "events.csv"
    source = write(tmp_path / name, "\n".join(lines) + "\n\n")
    flags = ["--buckets", buckets] if buckets else []
    failed = cli(source, "-o", tmp_path / "o.csv", *flags)
    assert failed.exit_code == 1, failed.stderr
    assert "line 3" in words(failed.stderr) and "empty user id" in words(failed.stderr)
    assert not (tmp_path / "o.csv").exists()
    rejects = tmp_path / "rejects.csv"
    result = sessionize.run(
        [source],
        output=str(tmp_path / "o.csv"),
        no_geo=True,
        on_invalid="skip",
        rejects=str(rejects),
        buckets=int(buckets) if buckets else None,
    )
    assert (result.rows_read, result.rejected, result.events_read) == (4, 1, 3)
    table = pl.read_csv(rejects, infer_schema=False)
    assert table.select("source_row", "reject_reason").rows() == [("3", "empty_user_id")]


@pytest.mark.parametrize("buckets", [None, "2"])
@pytest.mark.parametrize("compressed", [False, True])
def test_rejected_rows_name_their_line_after_records_that_span_lines(
    tmp_path: Path, buckets: str | None, compressed: bool
) -> None:
    """The fast reader numbers records: after a record whose quoted field spans three lines, a bad row
    on line 6 was reported as line 4, and the next as line 5 (the careful reader, which a malformed
    row elsewhere calls in, said 6 and 7). Rows are named by their first line on every path."""
    text = (
        "user_id,timestamp,url,user_agent\n"
        'u1,2024-05-01T10:00:00Z,/a,"Mozilla\nline2\nline3"\n'  # lines 2-4
        "u2,2024-05-01T10:00:00Z,/b,ok\n"
        "u3,oops,/c,x\n"  # line 6
        ',2024-05-01T10:00:00Z,/d,"two\nlines"\n'  # lines 7-8
        "u5,2024-05-01T10:00:00Z,/e,ok\n"
    )
    source = tmp_path / ("events.csv.gz" if compressed else "events.csv")
    source.write_bytes(gzip.compress(text.encode()) if compressed else text.encode())
    failed, rejects, users = fail_then_skip(source, tmp_path, buckets)
    assert "line 7" in words(failed.stderr), failed.stderr
    assert rejects == [("6", "bad_timestamp"), ("7", "empty_user_id")]
    assert users == ["u1", "u2", "u5"]


def test_a_line_of_separators_keeps_a_large_csv_on_the_streaming_reader(tmp_path: Path) -> None:
    """One ",," line sent the whole file to the careful reader (Python lists of every line, about 15
    bytes per byte of input, outside --memory-limit): the file is still read in windows, and only
    that row is rejected."""
    rows = [f"u{i % 50},2024-05-01T10:{i % 60:02d}:00Z,/p{i}\n" for i in range(2_000)]
    rows.insert(2, ",,\n")  # line 4
    source = write(tmp_path / "events.csv", "user_id,timestamp,url\n" + "".join(rows))
    assert sio.read._csv_windows(str(source), ",", 500) is not None
    result = sessionize.run(
        [source],
        output=str(tmp_path / "o.csv"),
        no_geo=True,
        on_invalid="skip",
        rejects=str(tmp_path / "r.csv"),
    )
    assert (result.rows_read, result.rejected) == (2_001, 1)
    assert pl.read_csv(tmp_path / "r.csv", infer_schema=False)["source_row"].to_list() == ["4"]


@pytest.mark.parametrize("buckets", [None, "2"])
def test_a_field_over_128_kib_is_a_value_on_the_careful_reader_too(
    tmp_path: Path, buckets: str | None
) -> None:
    """Python's csv module refuses a field over 128 KiB: once a short row sent the file to the careful
    reader, a valid row with a 200 KB URL was rejected as a bad quote, where the fast reader reads it."""
    long_url = "/" + "x" * 200_000
    text = (
        "user_id,timestamp,url\n"
        "u1,2024-05-01T10:00:00Z,/a\n"
        ",,\n"  # line 3
        f"u2,2024-05-01T10:00:00Z,{long_url}\n"
        "u3,2024-05-01T10:00:00Z\n"  # line 5: a short row, read carefully
    )
    failed, rejects, users = fail_then_skip(write(tmp_path / "events.csv", text), tmp_path, buckets)
    assert "line 5" in words(failed.stderr), failed.stderr  # rows that do not parse are named first
    assert sorted(rejects) == [("3", "empty_user_id"), ("5", "wrong_field_count (2, expected 3)")]
    assert users == ["u1", "u2"]


@pytest.mark.parametrize("buckets", [None, "2"])
@pytest.mark.parametrize(
    ("first_row", "expected"),
    [
        ("u0,2024-05-01T10:00:00Z,/a\rb,ok", "/a\rb"),  # a "\r" in an unquoted field
        ('u0,2024-05-01T10:00:00Z,"/a\ry",ok', "/a\ry"),  # and in a quoted one
    ],
)
def test_a_carriage_return_inside_a_line_does_not_end_it(
    tmp_path: Path, buckets: str | None, first_row: str, expected: str
) -> None:
    """A "\\r" that is not before a "\\n" is a character to the fast reader, but the line count after
    records that span lines took it for a line end (line 4 or 6 reported for 5), the careful reader
    rejected its row as a bad quote, and with buckets the ragged-row check failed with an untyped
    csv error."""
    text = (
        "user_id,timestamp,url,user_agent\n"
        f"{first_row}\n"
        'u1,2024-05-01T10:00:00Z,/b,"Moz\nline2"\n'  # lines 3-4
        "u3,oops,/c,x\n"  # line 5
    )
    # As it is, then with a short row that sends it to the careful reader: the same values and lines.
    for name, tail, reasons in [
        ("fast", "", [("5", "bad_timestamp")]),
        ("careful", "u5,short\n", [("5", "bad_timestamp"), ("6", "wrong_field_count (2, expected 4)")]),
    ]:
        directory = tmp_path / name
        directory.mkdir()
        source = directory / "events.csv"
        source.write_bytes((text + tail).encode())
        _, rejects, users = fail_then_skip(source, directory, buckets)
        assert sorted(rejects) == reasons, name
        assert users == ["u0", "u1"], name
        table = pl.read_csv(directory / "o.csv", infer_schema=False)
        assert table.filter(pl.col("user_id") == "u0")["landing_page"].to_list() == [expected], name


def test_an_incremental_run_names_the_lines_of_a_grown_file_after_records_that_span_lines(
    tmp_path: Path,
) -> None:
    """A grown file is read from a copy of its new lines: its rejected rows were named by record
    (row 4 for line 6), as the copy's lines were not counted."""
    source = write(
        tmp_path / "events.csv", "user_id,timestamp,url,user_agent\nu0,2024-05-01T10:00:00Z,/a,ok\n"
    )
    state, rejects = tmp_path / "state", tmp_path / "rejects.csv"

    def run() -> None:
        flags = ["--state", state, "--on-invalid", "skip", "--rejects", rejects]
        result = cli(source, "--output-dir", tmp_path / "out", *flags)
        assert result.exit_code == 0, result.stderr

    run()
    with source.open("a", encoding="utf-8") as handle:
        handle.write('u1,2024-05-01T10:05:00Z,/b,"Moz\nline2\nline3"\nu2,oops,/c,x\n')  # lines 3-5, 6
    run()
    assert pl.read_csv(rejects, infer_schema=False).select("source_row", "reject_reason").rows() == [
        ("6", "bad_timestamp")
    ]


def _nested_events() -> pl.DataFrame:
    """Two events with list and object columns (GA4's ``items`` and ``user_properties``), the second
    without a user id."""
    return pl.DataFrame(
        {
            "user_id": ["u1", ""],
            "timestamp": ["2024-05-01T10:00:00Z", "2024-05-01T10:00:05Z"],
            "url": ["https://a.example/", "https://a.example/b"],
            "tags": [[], ["beta", "x"]],
            "items": [[], [{"item_id": "SKU1", "price": 9.5}]],
            "device": [{"category": "mobile", "ids": [1]}, {"category": "desktop", "ids": []}],
        }
    )


@pytest.mark.parametrize("fmt", ["ndjson", "parquet"])
@pytest.mark.parametrize("engine", ["memory", "buckets", "state"])
def test_rejected_row_with_list_columns(tmp_path: Path, fmt: str, engine: str) -> None:
    """A rejected row of a file with list or object columns is set aside, its values as JSON text: the
    rejects' cast to text crashed the run ("cannot cast List type"), with or without --rejects (review 49)."""
    events = tmp_path / f"events.{fmt}"
    frame = _nested_events()
    if fmt == "parquet":
        frame.write_parquet(events)
    else:
        frame.write_ndjson(events)
    rejects = tmp_path / "rejects.csv"
    flags: list[object] = {
        "memory": ["-o", tmp_path / "o.csv"],
        "buckets": ["-o", tmp_path / "o.csv", "--buckets", "2"],
        "state": ["--state", tmp_path / "st", "--output-dir", tmp_path / "out"],
    }[engine]
    bare = cli(events, *flags, "--on-invalid", "skip")
    assert bare.exit_code == 0, bare.stderr
    shutil.rmtree(tmp_path / "st", ignore_errors=True)
    shutil.rmtree(tmp_path / "out", ignore_errors=True)
    result = cli(events, *flags, "--on-invalid", "skip", "--rejects", rejects)
    assert result.exit_code == 0, result.stderr
    rows = pl.read_csv(rejects, infer_schema=False)
    assert rows.select("source_row", "reject_reason").rows() == [("2", "empty_user_id")]
    assert json.loads(rows["tags"][0]) == ["beta", "x"]
    assert json.loads(rows["items"][0]) == [{"item_id": "SKU1", "price": 9.5}]
    # An object is flattened before the rows are checked: its fields are columns like any other.
    assert {name: rows[name][0] for name in rows.columns if name.startswith("device")} == {
        "device_category": "desktop",
        "device_ids": "[]",
    }


def test_rejected_ga4_row_with_list_columns(tmp_path: Path) -> None:
    """The GA4 preset: a consent-mode hit without a user_pseudo_id, in an export whose ``items`` and
    ``user_properties`` are lists on every row, is rejected and counted (docs/presets.md), not a crash."""
    params = [{"key": "page_location", "value": {"string_value": "https://www.example.com/"}}]
    lines = [
        {
            "event_timestamp": "1714550400000000",
            "event_name": "page_view",
            "user_pseudo_id": "111.222",
            "event_params": [{"key": "ga_session_id", "value": {"int_value": "1714550400"}}, *params],
            "user_properties": [],
            "items": [],
        },
        {
            "event_timestamp": "1714550405000000",
            "event_name": "page_view",
            "user_pseudo_id": None,
            "event_params": params,
            "user_properties": [],
            "items": [{"item_id": "SKU1", "price": 9.5}],
        },
    ]
    events = write(tmp_path / "ga4.ndjson", "".join(json.dumps(line) + "\n" for line in lines))
    rejects = tmp_path / "rejects.csv"
    flags = ["--on-invalid", "skip", "-o", tmp_path / "o.csv", "--rejects", rejects]
    result = cli(events, "--preset", "ga4", *flags)
    assert result.exit_code == 0, result.stderr
    assert pl.read_csv(tmp_path / "o.csv")["event_count"].to_list() == [1]
    rows = pl.read_csv(rejects, infer_schema=False)
    assert rows.select("source_row", "reject_reason").rows() == [("2", "empty_user_id")]
    assert json.loads(rows["items"][0]) == [{"item_id": "SKU1", "price": 9.5}]
    assert json.loads(rows["event_params"][0])[0]["value"]["string_value"] == "https://www.example.com/"


def test_an_empty_timestamp_is_named_empty(tmp_path: Path) -> None:
    """The error for a row without a time says it is empty, not that ``None`` does not parse (review 49)."""
    source = write(tmp_path / "events.csv", "user_id,timestamp\na,2024-05-01T10:00:00Z\nb,\nc,yesterday\n")
    text = squash(cli(source, "-o", tmp_path / "o.csv").stderr)
    assert (
        squash(
            "2 timestamp(s) in column 'timestamp' are empty or do not parse "
            "(line 3: empty; line 4: 'yesterday')"
        )
        in text
    )


def test_a_directory_without_inputs_names_every_extension(tmp_path: Path) -> None:
    """The message lists every input extension, .json among them (review 49: it was left out)."""
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.txt").write_text("x", encoding="utf-8")
    text = squash(cli(tmp_path / "d", "-o", tmp_path / "o.csv").stderr)
    assert squash(".csv, .tsv, .tab, .parquet, .pq, .ndjson, .jsonl, .json, .log and rotated .log.1") in text


def test_rejected_row_with_bytes_in_a_list_column(tmp_path: Path) -> None:
    """Bytes inside a list, an array or an object of a rejected Parquet row are written as hex in its
    JSON: the JSON writer panicked ("Writing BinaryView to JSON"; review 51)."""
    events = tmp_path / "events.parquet"
    pl.DataFrame(
        {
            "user_id": ["a", "b"],
            "timestamp": ["2024-05-01T10:00:00Z", "bad"],
            "tags": [[b"ab"], [b"ab", b"\xff\xfe"]],
            "pairs": [[b"a", b"b"], [b"c", b"\x00"]],
            "blobs": [[{"k": b"x"}], [{"k": b"\xff"}, None]],
        },
        schema_overrides={"pairs": pl.Array(pl.Binary, 2)},
    ).write_parquet(events)
    rejects = tmp_path / "rejects.csv"
    result = cli(events, "-o", tmp_path / "o.csv", "--on-invalid", "skip", "--rejects", rejects)
    assert result.exit_code == 0, result.stderr
    rows = pl.read_csv(rejects, infer_schema=False)
    assert rows.select("source_row", "reject_reason").rows() == [("2", "bad_timestamp")]
    assert json.loads(rows["tags"][0]) == ["6162", "fffe"]
    assert json.loads(rows["pairs"][0]) == ["63", "00"]
    assert json.loads(rows["blobs"][0]) == [{"k": "ff"}, None]


def test_a_header_that_names_a_column_the_run_reads_twice_is_refused(tmp_path: Path) -> None:
    """``user_id,timestamp,user_id``: the CSV reader kept the first and renamed the second
    (``user_id_duplicated_0``), so the run chose one user id silently, and a rejected row kept the other
    in the clear under --hash-user-ids (review 52). Refused now, naming the column; a repeated column the
    run does not read is kept as it was."""
    events = write(
        tmp_path / "events.csv",
        "user_id,timestamp,user_id,url,note,note\nsecretA,2024-05-01T10:00:00Z,secretB,https://a.example/,x,y\n",
    )
    result = cli(events, "--no-geo", "-o", tmp_path / "o.csv")
    assert result.exit_code != 0
    assert "its header names the column 'user_id' more than once" in words(result.stderr)
    assert not (tmp_path / "o.csv").exists()
    fine = write(tmp_path / "fine.csv", "user_id,timestamp,note,note\nu1,2024-05-01T10:00:00Z,x,y\n")
    assert cli(fine, "--no-geo", "-o", tmp_path / "fine_out.csv").exit_code == 0


# --- ids of only whitespace -----------------------------------------------------------------------

#: Events whose ids are blank (spaces, a tab, a no-break space) where empty ones would be missing: the
#: user id (u1's login L1 stands in), client session ids (u2's two visits 50 minutes apart), login ids,
#: event ids; and ids with spaces around them, kept as written.
BLANK_IDS_CSV = (
    "user_id,timestamp,session_id,login,event_id\n"
    "u1,2024-05-01T10:00:00Z,   ,  , \n"
    "   ,2024-05-01T10:01:00Z,s1,L1,e2\n"
    "\t,2024-05-01T11:00:00Z,,,e3\n"
    "\u00a0,2024-05-01T12:00:00Z,s9,\u3000,e4\n"
    "u2,2024-05-01T10:00:00Z,   ,  , \n"
    "u2,2024-05-01T10:50:00Z,   ,  , \n"
    " u3 ,2024-05-01T10:00:00Z,,,e7\n"
    "u3,2024-05-01T10:00:00Z,,,e8\n"
)
BLANK_OPTIONS: dict[str, Any] = {
    "no_geo": True,
    "on_invalid": "skip",
    "stitch_col": "login",
    "user_fallback_col": "login",
    "event_id_col": "event_id",
}


def test_blank_is_unicode_white_space_for_every_character() -> None:
    """``schema.is_blank`` (a strip of leading whitespace) tells every code point as the regex ``^\\s*$``
    (Unicode's White_Space) does, alone, before an id and after one: U+3000 and U+00A0 are blank,
    U+200B and U+FEFF are not."""
    from sessionize.schema import is_blank

    characters = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    texts = pl.Series(
        "t", [*characters, *(c + c for c in characters), *(c + "u1" for c in characters), "", None]
    )
    told = pl.DataFrame({"t": texts}).select(
        blank=is_blank(pl.col("t")), regex=pl.col("t").str.contains(r"^\s*$")
    )
    assert told["blank"].to_list() == told["regex"].to_list()
    assert told["blank"].sum() == 2 * 25 + 1  # White_Space has 25 code points; "" is blank too


@pytest.mark.parametrize("path", EVERY_PATH_AND_SPARK)
def test_blank_ids_are_missing_ones_on_every_path(
    tmp_path: Path, path: dict[str, Any], request: pytest.FixtureRequest
) -> None:
    """An id of only whitespace was an id: the blank user ids were one user who owned every such event,
    a blank client session id joined u2's visits 50 minutes apart into one session (``session_id``
    '   '), a blank login made ``stitched_user_id`` '  ', and the blank event ids dropped u2's events as
    duplicates of u1's. Each is missing now, as an empty one: the blank user takes its login id or is
    rejected as ``empty_user_id``, on every engine path. Ids with spaces around them are kept as
    written (' u3 ' is not 'u3')."""
    source = write_text(tmp_path / "input" / "events.csv", BLANK_IDS_CSV)
    rejects = tmp_path / "rejects.csv"
    options = any_path_options(path, tmp_path, request)
    if "spark" in options:
        rejects = tmp_path / "rejects"  # (Spark writes a directory)
    result = sessionize.run([source], **BLANK_OPTIONS, rejects=str(rejects), **options)
    table = path_sessions(result, options).sort("user_id", "session_start")
    assert table.select("user_id", "session_id", "stitched_user_id", "event_count").rows() == [
        (" u3 ", " u3 -20240501T100000.000000", None, 1),
        ("L1", "s1", "L1", 1),
        ("u1", "u1-20240501T100000.000000", None, 1),
        ("u2", "u2-20240501T100000.000000", None, 1),
        ("u2", "u2-20240501T105000.000000", None, 1),
        ("u3", "u3-20240501T100000.000000", None, 1),
    ]
    assert (result.rows_read, result.rejected, result.duplicates_removed) == (8, 2, 0)
    written = pl.read_csv(rejects) if rejects.is_file() else pl.read_parquet(rejects / "*.parquet")
    assert written.select("source_row", "reject_reason").sort("source_row").rows() == [
        (4, "empty_user_id"),
        (5, "empty_user_id"),
    ]


def test_a_blank_user_id_is_no_id_in_a_frame_nor_hashed_in_the_rejects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Python API on a frame reads ids as files are read; and under ``--hash-user-ids`` a rejected
    row's blank user id stays blank in the rejects file, as an empty one does (its hash would look like
    a real user's)."""
    frame = pl.read_csv(io.StringIO(BLANK_IDS_CSV), infer_schema=False)
    with pytest.raises(sessionize.MissingUserIdError, match="2 row"):
        sessionize.sessionize(frame, no_geo=True, user_fallback_col="login").collect()
    monkeypatch.setenv("BLANK_TEST_SECRET", "s3cret")
    source = write_text(tmp_path / "events.csv", BLANK_IDS_CSV)
    rejects = tmp_path / "rejects.csv"
    result = sessionize.run(
        [source], **BLANK_OPTIONS, rejects=str(rejects), hash_user_ids="BLANK_TEST_SECRET"
    )
    assert result.rejected == 2
    written = pl.read_csv(rejects, infer_schema=False).sort("source_row")
    assert written.get_column("user_id").to_list() == ["\t", "\u00a0"]
    assert written.get_column("login").to_list() == [None, "\u3000"]
