"""The ``sessionize`` command line on real files: through CliRunner and through a subprocess."""

from __future__ import annotations

import errno
import gzip
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import sessionize
from sessionize import cli
from sessionize import io as sio
from tests.helpers import COLUMN_NAMES, flat, listing, run_cli, write_text

CSV_HEADER = ",".join(COLUMN_NAMES)

# Several users, referrers, a client session id, mixed offsets, an event column and ids that look
# like numbers: enough for the CLI and the Python API to have something to disagree about.
EVENTS_CSV = """\
event_id,user_id,timestamp,event,url,referrer,ip,session_id
1,00042,2024-05-01T10:00:00Z,page_view,https://shop.example/,https://www.google.com/search?q=x,81.2.69.142,
2,00042,2024-05-01T12:05:00+02:00,click,https://shop.example/,,81.2.69.142,
3,00042,2024-05-01T10:10:00.250000Z,page_view,https://shop.example/cart,https://shop.example/,81.2.69.142,
4,00042,2024-05-01T13:00:00Z,page_view,https://shop.example/blog,https://t.co/abc,81.2.69.160,
5,1000000000001,2024-05-01T09:00:00Z,PageView,https://shop.example/,,2001:218::1,
6,1000000000001,2024-05-01T09:45:00Z,page_view,https://shop.example/p,,2001:218::1,
7,u7,2024-05-01T11:00:00Z,screen,,,10.0.0.1,app-s-1
8,u7,2024-05-01T12:30:00Z,screen,,,10.0.0.1,app-s-1
"""


@pytest.fixture
def events_csv(workdir: Path) -> Path:
    return write_text(workdir / "events.csv", EVENTS_CSV)


def two_events(workdir: Path, gap_seconds: int, name: str = "gap.csv") -> Path:
    return write_text(
        workdir / name,
        f"user_id,timestamp\nu,1714557600\nu,{1714557600 + gap_seconds}\n",
    )


# ---------------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------------


def test_parquet_output_has_the_session_columns_and_types(events_csv: Path, workdir: Path) -> None:
    result = run_cli(events_csv, "-o", "sessions.parquet")

    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    table = pl.read_parquet(workdir / "sessions.parquet")
    assert table.columns == COLUMN_NAMES
    assert dict(table.schema) == sessionize.SESSION_SCHEMA
    assert table["user_id"].to_list() == ["00042", "00042", "1000000000001", "1000000000001", "u7"]
    assert table["session_number"].to_list() == [1, 2, 1, 2, 1]
    assert table["event_count"].to_list() == [3, 1, 1, 1, 2]
    assert table["traffic_source"].to_list() == ["google", "t", "direct", "direct", "direct"]
    assert table.filter(pl.col("user_id") == "u7")["session_id"].to_list() == ["app-s-1"]
    # Inputs and output only: no temporary file is left beside the output.
    assert listing(workdir) == ["events.csv", "sessions.parquet"]


def read_ndjson_in_key_order(path: Path) -> pl.DataFrame:
    # Polars' NDJSON reader does not keep the key order of wide objects: take it from the first line.
    keys = list(json.loads(path.read_text().splitlines()[0]))
    return pl.read_ndjson(path, infer_schema_length=None).select(keys)


@pytest.mark.parametrize(
    ("name", "extra", "read"),
    [
        ("sessions.csv", [], lambda p: pl.read_csv(p, infer_schema=False)),
        ("sessions.ndjson", [], lambda p: read_ndjson_in_key_order(p)),
        ("sessions.out", ["--format", "csv"], lambda p: pl.read_csv(p, infer_schema=False)),
        ("sessions.txt", ["--format", "ndjson"], lambda p: read_ndjson_in_key_order(p)),
        ("sessions.csv", ["--format", "parquet"], pl.read_parquet),
    ],
)
def test_output_format_from_extension_or_format_flag(
    events_csv: Path, workdir: Path, name: str, extra: list[str], read: Callable[[Path], pl.DataFrame]
) -> None:
    result = run_cli(events_csv, "-o", name, *extra)
    assert result.exit_code == 0, result.output
    table = read(workdir / name)
    assert table.columns == COLUMN_NAMES
    assert table["user_id"].to_list() == ["00042", "00042", "1000000000001", "1000000000001", "u7"]


@pytest.mark.parametrize(
    ("name", "fmt", "named"),
    [
        ("sessions.parquet", "csv", "parquet"),
        ("sessions.csv", "parquet", "csv"),
        ("s.jsonl", "csv", "ndjson"),
    ],
)
def test_a_format_flag_that_contradicts_the_name_is_written_with_a_warning(
    events_csv: Path, workdir: Path, name: str, fmt: str, named: str
) -> None:
    # A stop-55 review: -o sessions.parquet --format csv wrote CSV into a .parquet name without a word,
    # which Spark, DuckDB and pandas (they go by the name) then fail on.
    result = run_cli(events_csv, "-o", name, "--format", fmt, "--log-format", "json")
    assert result.exit_code == 0, result.output
    line = json.loads(result.stderr.splitlines()[-1])
    assert any(f"{name} is written as {fmt}" in w and f"its name says {named}" in w for w in line["warnings"])
    table = pl.read_csv(workdir / name) if fmt == "csv" else pl.read_parquet(workdir / name)
    assert table.height == 5


@pytest.mark.parametrize(
    ("name", "fmt"), [("sessions.out", "csv"), ("sessions.csv", "csv"), ("-", "parquet")]
)
def test_a_format_flag_for_a_name_without_one_gives_no_warning(events_csv: Path, name: str, fmt: str) -> None:
    result = run_cli(events_csv, "-o", name, "--format", fmt, "--log-format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stderr.splitlines()[-1])["warnings"] == []


def test_csv_output_keeps_ids_and_microseconds(events_csv: Path) -> None:
    result = run_cli(events_csv, "-o", "-", "-q")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == CSV_HEADER
    assert lines[1].startswith("00042-20240501T100000.000000,00042,1,2024-05-01T10:00:00.000000Z,")
    assert ",2024-05-01T10:10:00.250000Z," in lines[1]
    assert lines[3].startswith("1000000000001-20240501T090000.000000,1000000000001,1,")


def test_dash_output_writes_only_csv_to_stdout_and_the_summary_to_stderr(events_csv: Path) -> None:
    result = run_cli(events_csv, "-o", "-")
    assert result.exit_code == 0
    table = pl.read_csv(io.BytesIO(result.stdout_bytes), infer_schema=False)
    assert table.columns == COLUMN_NAMES
    assert table.height == 5
    assert result.stdout.count("\n") == 6
    summary = flat(result.stderr)
    assert "rowsread8from1file" in summary
    assert "eventssessionized8" in summary
    assert "sessions5" in summary
    assert "users3" in summary
    assert "writtentostdout(csv)" in summary
    assert "00042" not in result.stderr


def test_dash_output_as_parquet(events_csv: Path) -> None:
    result = run_cli(events_csv, "-o", "-", "--format", "parquet", "-q")
    assert result.exit_code == 0
    assert result.stderr == ""
    table = pl.read_parquet(io.BytesIO(result.stdout_bytes))
    assert dict(table.schema) == sessionize.SESSION_SCHEMA
    assert_frame_equal(table, sessionize.run([events_csv]).sessions)


def test_without_output_csv_goes_to_stdout_when_it_is_not_a_terminal(events_csv: Path, workdir: Path) -> None:
    result = run_cli(events_csv, "-q")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[0] == CSV_HEADER
    assert len(result.stdout.splitlines()) == 6
    assert listing(workdir) == ["events.csv"]


def test_without_output_on_a_terminal_a_preview_is_printed(
    events_csv: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "_stdout_is_terminal", lambda: True)
    result = run_cli(events_csv, columns=250)
    assert result.exit_code == 0
    assert "First 5 of 5 sessions" in result.stdout
    rows = [line for line in result.stdout.splitlines() if "shop.example" in line]
    assert len(rows) == 4  # the app session has no landing page
    assert re.search(r"\b1000000000001\b.*\b2\b.*https://shop\.example/p\b", rows[3])
    assert CSV_HEADER not in result.stdout
    assert "-o" in result.stderr
    assert "sessions5" in flat(result.stderr)
    assert listing(workdir) == ["events.csv"]


def test_quiet_silences_the_summary(events_csv: Path, workdir: Path) -> None:
    result = run_cli(events_csv, "-o", "sessions.parquet", "--quiet")
    assert result.exit_code == 0
    assert result.stdout == ""
    assert result.stderr == ""
    assert pl.read_parquet(workdir / "sessions.parquet").height == 5


def test_summary_is_printed_without_quiet(events_csv: Path) -> None:
    result = run_cli(events_csv, "-o", "sessions.parquet")
    assert result.stdout == ""
    assert "writtentosessions.parquet(parquet)" in flat(result.stderr)


def test_header_only_csv_gives_an_empty_table_with_the_full_schema(workdir: Path) -> None:
    write_text(workdir / "header.csv", "user_id,timestamp,url\n")
    result = run_cli("header.csv", "-o", "sessions.parquet", "-q")
    assert result.exit_code == 0, result.output
    table = pl.read_parquet(workdir / "sessions.parquet")
    assert table.height == 0
    assert dict(table.schema) == sessionize.SESSION_SCHEMA
    assert table.columns == COLUMN_NAMES


def test_empty_csv_gives_zero_sessions(workdir: Path) -> None:
    (workdir / "empty.csv").write_bytes(b"")
    result = run_cli("empty.csv", "-o", "-")
    assert result.exit_code == 0, result.output
    assert result.stdout == CSV_HEADER + "\n"
    assert "rowsread0from1file" in flat(result.stderr)


# ---------------------------------------------------------------------------------------------------
# Atomic output
# ---------------------------------------------------------------------------------------------------


def test_failed_run_keeps_the_existing_output(workdir: Path) -> None:
    write_text(workdir / "bad.csv", "user_id,timestamp\nu,2024-05-01T10:00:00Z\nu,not a time\n")
    (workdir / "sessions.parquet").write_bytes(b"last week's table")

    result = run_cli("bad.csv", "-o", "sessions.parquet")

    assert result.exit_code == 1
    assert (workdir / "sessions.parquet").read_bytes() == b"last week's table"
    assert listing(workdir) == ["bad.csv", "sessions.parquet"]


def test_failed_run_writes_no_output(workdir: Path) -> None:
    write_text(workdir / "bad.csv", "user_id,timestamp\nu,2024-05-01T10:00:00Z\nu,not a time\n")
    result = run_cli("bad.csv", "-o", "sessions.csv")
    assert result.exit_code == 1
    assert listing(workdir) == ["bad.csv"]


def test_failure_while_writing_keeps_the_old_output_and_leaves_no_temp_file(
    events_csv: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(frame: pl.DataFrame, handle: IO[bytes], fmt: str, **kwargs: object) -> None:
        handle.write(b"PAR1 partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sio.publish, "serialize", disk_full)
    (workdir / "sessions.parquet").write_bytes(b"old")

    result = run_cli(events_csv, "-o", "sessions.parquet")

    assert result.exit_code == 1
    assert "Nospaceleftondevice" in flat(result.stderr)
    assert "Traceback" not in result.output
    assert (workdir / "sessions.parquet").read_bytes() == b"old"
    assert listing(workdir) == ["events.csv", "sessions.parquet"]


@pytest.mark.parametrize(
    ("inputs", "output"),
    [
        (["events.csv"], "events.csv"),
        (["events.csv"], "./sub/../events.csv"),
        (["."], "events.csv"),
        (["*.csv"], "events.csv"),
    ],
)
def test_output_over_an_input_is_refused(
    events_csv: Path, workdir: Path, inputs: list[str], output: str
) -> None:
    (workdir / "sub").mkdir()
    before = events_csv.read_bytes()

    result = run_cli(*inputs, "-o", output, "--format", "csv")

    assert result.exit_code == 1
    assert "alsoaninput" in flat(result.stderr)
    assert events_csv.read_bytes() == before
    assert listing(workdir) == ["events.csv", "sub"]


def test_output_into_a_missing_directory_is_an_error(events_csv: Path, workdir: Path) -> None:
    result = run_cli(events_csv, "-o", "nope/sessions.parquet")
    assert result.exit_code == 1
    assert "doesnotexist" in flat(result.stderr)
    assert listing(workdir) == ["events.csv"]


# ---------------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------------


def test_files_directories_and_quoted_globs_together(workdir: Path) -> None:
    write_text(workdir / "a.csv", "user_id,timestamp\nu1,2024-05-01T10:00:00Z\n")
    write_text(workdir / "logs" / "b.tsv", "anonymous_id\tts\nu2\t2024-05-01T10:00:00Z\n")
    write_text(workdir / "logs" / "deep" / "c.jsonl", '{"userId": "u3", "time": 1714557600}\n')
    write_text(workdir / "logs" / "README.md", "not events\n")
    (workdir / "logs" / "deep" / "d.csv.gz").write_bytes(
        gzip.compress(b"visitor_id,event_time\nu4,2024-05-01T10:00:00Z\n")
    )
    pl.DataFrame({"client_id": [5], "received_at": [1714557600000]}).write_parquet(workdir / "e1.parquet")
    pl.DataFrame({"client_id": [6], "received_at": [1714557600000]}).write_parquet(workdir / "e2.parquet")

    result = run_cli("a.csv", "logs", "e*.parquet", "-o", "-")

    assert result.exit_code == 0, result.output
    table = pl.read_csv(io.BytesIO(result.stdout_bytes), infer_schema=False)
    assert table["user_id"].to_list() == ["5", "6", "u1", "u2", "u3", "u4"]
    assert set(table["session_start"]) == {"2024-05-01T10:00:00.000000Z"}
    assert "rowsread6from6files" in flat(result.stderr)


def test_stdin_dash_reads_csv(events_csv: Path) -> None:
    result = run_cli("-", "-o", "-", "-q", input=EVENTS_CSV)
    assert result.exit_code == 0, result.output
    from_file = run_cli(events_csv, "-o", "-", "-q")
    assert result.stdout == from_file.stdout
    assert result.stdout.count("\n") == 6


def test_unknown_extension_needs_input_format(workdir: Path) -> None:
    write_text(workdir / "events.log", "user_id,timestamp\nu,2024-05-01T10:00:00Z\n")

    result = run_cli("events.log", "-o", "-")
    assert result.exit_code == 1
    assert "events.log" in flat(result.stderr)
    assert "--input-format" in flat(result.stderr)
    assert result.stdout == ""

    result = run_cli("events.log", "--input-format", "csv", "-o", "-", "-q")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[1].startswith("u-20240501T100000.000000,u,")


def test_column_flags(workdir: Path) -> None:
    write_text(
        workdir / "custom.csv",
        "who,when,where,came_from,addr,what,visit\n"
        "A,2024-05-01T10:00:00Z,/a,https://www.bing.com/,1.1.1.1,view,\n"
        "A,2024-05-01T10:01:00Z,/b,/a,1.1.1.1,view,\n"
        "B,2024-05-01T10:00:00Z,/c,,2.2.2.2,view,s-9\n",
    )
    result = run_cli(
        "custom.csv",
        *("--user-col", "who", "--time-col", "when", "--url-col", "where"),
        *("--referrer-col", "came_from", "--ip-col", "addr", "--event-col", "what"),
        *("--session-col", "visit", "--pageview-events", "view"),
        *("-o", "out.parquet", "-q"),
    )
    assert result.exit_code == 0, result.output
    table = pl.read_parquet(workdir / "out.parquet")
    rows = table.select("session_id", "user_id", "pageview_count", "landing_page", "exit_page")
    assert rows.rows() == [("A-20240501T100000.000000", "A", 2, "/a", "/b"), ("s-9", "B", 1, "/c", "/c")]
    assert table["traffic_source"].to_list() == ["bing", "direct"]
    assert table["ip"].to_list() == ["1.1.1.1", "2.2.2.2"]


def test_missing_optional_columns_leave_output_columns_null(workdir: Path) -> None:
    write_text(
        workdir / "min.csv", "user_id,timestamp,extra\nu,2024-05-01T10:00:00Z,x\nu,2024-05-01T10:01:00Z,y\n"
    )
    result = run_cli("min.csv", "-o", "out.parquet", "-q")
    assert result.exit_code == 0, result.output
    row = pl.read_parquet(workdir / "out.parquet").row(0, named=True)
    assert row["event_count"] == 2
    assert row["pageview_count"] == 0
    assert row["landing_page"] is None
    assert row["exit_page"] is None
    assert row["referrer"] is None
    assert row["ip"] is None
    assert row["traffic_source"] == "direct"


def test_pageview_events_flag(events_csv: Path) -> None:
    default = pl.read_csv(io.BytesIO(run_cli(events_csv, "-o", "-", "-q").stdout_bytes), infer_schema=False)
    custom = pl.read_csv(
        io.BytesIO(run_cli(events_csv, "-o", "-", "-q", "--pageview-events", "screen,CLICK").stdout_bytes),
        infer_schema=False,
    )
    assert default["pageview_count"].to_list() == ["2", "1", "1", "1", "0"]
    assert custom["pageview_count"].to_list() == ["1", "0", "0", "0", "2"]


def test_timezone_flag_applies_to_naive_timestamps(workdir: Path) -> None:
    write_text(workdir / "naive.csv", "user_id,timestamp\nu,2024-05-01 12:00:00\nv,2024-05-01T12:00:00Z\n")
    result = run_cli("naive.csv", "--timezone", "Europe/Berlin", "-o", "-", "-q")
    assert result.exit_code == 0, result.output
    table = pl.read_csv(io.BytesIO(result.stdout_bytes), infer_schema=False)
    assert table["session_start"].to_list() == ["2024-05-01T10:00:00.000000Z", "2024-05-01T12:00:00.000000Z"]


def test_time_unit_flag(workdir: Path) -> None:
    write_text(workdir / "epoch.csv", "user_id,timestamp\nu,1714557600000\n")
    guessed = run_cli("epoch.csv", "-o", "-", "-q")
    as_us = run_cli("epoch.csv", "--time-unit", "us", "-o", "-", "-q")
    assert ",2024-05-01T10:00:00.000000Z," in guessed.stdout
    assert ",1970-01-20T20:15:57.600000Z," in as_us.stdout


def test_mixed_offsets_are_one_session_of_instants(workdir: Path) -> None:
    write_text(
        workdir / "tz.csv",
        "user_id,timestamp\n"
        "u,2024-05-01T11:00:00+02:00\n"  # 09:00Z
        "u,2024-05-01T09:20:00Z\n"
        "u,2024-05-01T04:10:00-05:00\n",  # 09:10Z
    )
    result = run_cli("tz.csv", "-o", "out.parquet", "-q")
    assert result.exit_code == 0, result.output
    table = pl.read_parquet(workdir / "out.parquet")
    assert table["duration_s"].to_list() == [1200.0]
    assert str(table["session_start"][0]) == "2024-05-01 09:00:00+00:00"


# ---------------------------------------------------------------------------------------------------
# --timeout
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gap_seconds", "timeout", "sessions"),
    [
        (45 * 60, None, 2),
        (45 * 60, "1h", 1),
        (45 * 60, "30m", 2),
        (30 * 60, None, 1),
        (80, "90s", 1),
        (100, "90s", 2),
        (85 * 60, "1h30m", 1),
        (95 * 60, "1h30m", 2),
    ],
)
def test_timeout_flag_is_used(workdir: Path, gap_seconds: int, timeout: str | None, sessions: int) -> None:
    two_events(workdir, gap_seconds)
    args = [] if timeout is None else ["--timeout", timeout]
    result = run_cli("gap.csv", *args, "-o", "out.parquet", "-q")
    assert result.exit_code == 0, result.output
    assert pl.read_parquet(workdir / "out.parquet").height == sessions


# ---------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------


def _truncated_gzip(path: Path) -> None:
    data = gzip.compress(b"user_id,timestamp\n" + b"u,2024-05-01T10:00:00Z\n" * 5000)
    path.write_bytes(data[: len(data) // 2])


ERROR_CASES: dict[str, tuple[Callable[[Path], object], list[str], list[str]]] = {
    "missing user column": (
        lambda d: write_text(d / "nouser.csv", "visitor,when\nv,2024-05-01T10:00:00Z\n"),
        ["nouser.csv"],
        ["nouser.csv", "visitor,when", "--user-col"],
    ),
    "missing time column": (
        lambda d: write_text(d / "notime.csv", "user_id,when\nv,2024-05-01T10:00:00Z\n"),
        ["notime.csv"],
        ["notime.csv", "user_id,when", "--time-col"],
    ),
    "named column does not exist": (
        lambda d: write_text(d / "e.csv", "user_id,timestamp\nv,2024-05-01T10:00:00Z\n"),
        ["e.csv", "--ip-col", "client_addr"],
        ["e.csv", "client_addr", "--ip-col"],
    ),
    "bad timestamps": (
        lambda d: write_text(
            d / "badtime.csv",
            "user_id,timestamp\nu,2024-05-01T10:00:00Z\nu,nope\nu,2024-05-01T10:00:00Z\nu,31/12\n",
        ),
        ["badtime.csv"],
        ["badtime.csv", "2timestamp(s)", "line3:'nope'", "line5:'31/12'"],
    ),
    "empty user id": (
        lambda d: write_text(
            d / "nouid.csv", "user_id,timestamp\nu,2024-05-01T10:00:00Z\n,2024-05-01T10:00:00Z\n"
        ),
        ["nouid.csv"],
        ["nouid.csv", "emptyuserid", "line3"],
    ),
    "text file named parquet": (
        lambda d: write_text(d / "fake.parquet", "user_id,timestamp\nu,2024-05-01T10:00:00Z\n"),
        ["fake.parquet"],
        ["fake.parquet", "Parquet", "--input-format"],
    ),
    "truncated gzip": (
        lambda d: _truncated_gzip(d / "cut.csv.gz"),
        ["cut.csv.gz"],
        ["cut.csv.gz", "truncated"],
    ),
    "nonexistent path": (lambda d: None, ["ghost.csv"], ["ghost.csv", "nosuchfile"]),
    "directory without supported files": (
        lambda d: write_text(d / "docs" / "readme.md", "hello\n"),
        ["docs"],
        ["docs", "nosupportedfiles"],
    ),
    "glob matching nothing": (lambda d: None, ["logs/*.csv"], ["logs/*.csv", "matchesnofiles"]),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_errors_exit_1_with_a_message_naming_the_problem(workdir: Path, case: str) -> None:
    setup, args, expected = ERROR_CASES[case]
    setup(workdir)

    result = run_cli(*args, "-o", "-")

    assert result.exit_code == 1
    assert result.stdout == ""
    message = flat(result.stderr)
    for text in expected:
        assert flat(text) in message
    assert "Traceback" not in result.output
    assert "Unexpected error" not in result.output


def test_glob_matching_only_unsupported_files_is_an_error_naming_the_pattern(workdir: Path) -> None:
    write_text(workdir / "logs" / "access.dat", "127.0.0.1 - - [01/May/2024:10:00:00 +0000] GET /\n")
    result = run_cli("logs/*.dat", "-o", "-")
    assert result.exit_code == 1
    assert "logs/*.dat" in flat(result.stderr)
    assert "Unexpected error" not in result.stderr


def test_debug_shows_the_traceback(workdir: Path) -> None:
    write_text(workdir / "bad.csv", "user_id,timestamp\nu,nope\n")
    quiet = run_cli("bad.csv", "-o", "-")
    loud = run_cli("bad.csv", "-o", "-", "--debug")
    assert quiet.exit_code == loud.exit_code == 1
    assert "Traceback" not in quiet.stderr
    assert "Traceback" in loud.stderr
    assert "BadTimestampError" in loud.stderr
    assert "line2:'nope'" in flat(loud.stderr)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--timeout", "10 minutes"], "--timeout"),
        (["--timeout", "0s"], "--timeout"),
        (["--format", "xml"], "--format"),
        (["--input-format", "xls"], "--input-format"),
        (["--time-unit", "h"], "--time-unit"),
        (["--timezone", "Mars/Olympus_Mons"], "--timezone"),
        (["-o", "sessions.xlsx"], "--format"),
    ],
)
def test_usage_errors_exit_2(events_csv: Path, workdir: Path, args: list[str], expected: str) -> None:
    result = run_cli(events_csv, *args)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert flat(expected) in flat(result.stderr)
    assert "Traceback" not in result.output
    assert listing(workdir) == ["events.csv"]


# ---------------------------------------------------------------------------------------------------
# The Python API gives what the CLI gives
# ---------------------------------------------------------------------------------------------------


def test_run_api_and_cli_give_identical_tables(events_csv: Path, workdir: Path) -> None:
    result = run_cli(events_csv, "-o", "cli.parquet", "--timeout", "1h", "-q")
    assert result.exit_code == 0, result.output
    api = sessionize.run([events_csv], output=workdir / "api.parquet", timeout="1h")

    from_cli = pl.read_parquet(workdir / "cli.parquet")
    assert_frame_equal(pl.read_parquet(workdir / "api.parquet"), from_cli)
    assert_frame_equal(api.sessions, from_cli)
    assert api.session_count == 4  # the 45-minute gap no longer splits user 1000000000001


def test_sessionize_on_a_frame_equals_the_cli(events_csv: Path, workdir: Path) -> None:
    result = run_cli(events_csv, "-o", "cli.parquet", "-q")
    assert result.exit_code == 0, result.output
    frame = pl.read_csv(events_csv, infer_schema=False)
    assert_frame_equal(sessionize.sessionize(frame).collect(), pl.read_parquet(workdir / "cli.parquet"))


# ---------------------------------------------------------------------------------------------------
# A real process
# ---------------------------------------------------------------------------------------------------


def python_m(*args: str, cwd: Path, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    env.pop("FORCE_COLOR", None)
    return subprocess.run(
        [sys.executable, "-m", "sessionize", *args],
        cwd=cwd,
        input=input,
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_version_in_a_subprocess(tmp_path: Path) -> None:
    done = python_m("--version", cwd=tmp_path)
    assert done.returncode == 0
    assert done.stdout.decode().strip() == f"sessionize {sessionize.__version__}"


@pytest.mark.slow
def test_run_help_in_a_subprocess(tmp_path: Path) -> None:
    done = python_m("run", "--help", cwd=tmp_path)
    assert done.returncode == 0
    text = done.stdout.decode()
    for flag in ("--output", "--format", "--input-format", "--timeout", "--user-col", "--quiet", "--debug"):
        assert flag in text


@pytest.mark.slow
def test_piped_stdout_gets_csv_in_a_subprocess(events_csv: Path, workdir: Path) -> None:
    done = python_m("run", "events.csv", cwd=workdir)
    assert done.returncode == 0, done.stderr.decode()
    # stderr is not a terminal: the summary is one JSON line.
    (line,) = done.stderr.decode().splitlines()
    assert json.loads(line)["sessions"] == 5
    assert listing(workdir) == ["events.csv"]
    stdout = done.stdout.decode()
    assert stdout.splitlines()[0] == CSV_HEADER
    assert stdout.count("\n") == 6
    assert stdout == run_cli(events_csv, "-o", "-", "-q").stdout


@pytest.mark.slow
def test_stdin_to_stdout_pipe_in_a_subprocess(events_csv: Path, workdir: Path) -> None:
    done = python_m(
        "run", "-", "-o", "-", "--format", "parquet", "-q", cwd=workdir, input=EVENTS_CSV.encode()
    )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stderr == b""
    assert_frame_equal(pl.read_parquet(io.BytesIO(done.stdout)), sessionize.run([events_csv]).sessions)


@pytest.mark.slow
def test_error_in_a_subprocess_has_no_traceback(workdir: Path) -> None:
    write_text(workdir / "bad.csv", "user_id,timestamp\nu,2024-05-01T10:00:00Z\nu,tomorrow\n")
    done = python_m("run", "bad.csv", "-o", "out.parquet", cwd=workdir)
    assert done.returncode == 1
    assert done.stdout == b""
    stderr = done.stderr.decode()
    assert "bad.csv" in stderr
    assert "line 3: 'tomorrow'" in stderr
    assert "Traceback" not in stderr
    assert listing(workdir) == ["bad.csv"]


def test_attribution_and_rule_options_reach_the_library(tmp_path: Path) -> None:
    events = write_text(
        tmp_path / "e.csv",
        "user_id,timestamp,event,url,referrer\n"
        "u,2024-05-01T10:00:00Z,page_view,https://shop.example/,https://blog.example.org/post\n"
        "u,2024-05-01T23:50:00Z,signup,https://shop.example/join,\n"
        "u,2024-05-02T00:10:00Z,page_view,https://shop.example/?utm_source=x&utm_medium=email,\n",
    )
    referers = write_text(
        tmp_path / "referers.yml", "social:\n  Example Blog:\n    domains:\n      - blog.example.org\n"
    )
    out = tmp_path / "o.csv"
    result = run_cli(
        events,
        "-o",
        out,
        "--referers",
        referers,
        "--conversion-events",
        "signup",
        "--split-at-midnight",
        "--split-on-campaign",
        "--max-session-length",
        "24h",
    )
    assert result.exit_code == 0, result.output
    table = pl.read_csv(out, infer_schema=False)
    assert table.select("source_name", "medium", "channel", "is_engaged").rows() == [
        ("Example Blog", "social", "Organic Social", "false"),
        (None, "direct", "Direct", "true"),
        (None, "direct", "Email", "false"),
    ]
    internal = run_cli(events, "-o", out, "--internal-domains", "example.org")
    assert internal.exit_code == 0, internal.output
    assert pl.read_csv(out, infer_schema=False)["medium"].to_list()[0] == "internal"
    bad = run_cli(events, "-o", out, "--referers", tmp_path / "missing.yml")
    assert bad.exit_code == 1
    assert "missing.yml" in flat(bad.stderr)


def test_summary_states_peak_memory(tmp_path: Path) -> None:
    events = write_text(tmp_path / "e.csv", "user_id,timestamp\nu,2024-05-01T10:00:00Z\n")
    result = run_cli(events, "-o", tmp_path / "o.csv", "--no-geo")
    assert result.exit_code == 0
    match = re.search(r"peakmemory([\d,]+)MiB", flat(result.stderr))
    assert match is not None and int(match.group(1).replace(",", "")) > 10


@pytest.mark.parametrize("value", ["true", "1"])
def test_a_choice_given_as_a_toml_bool_or_number_is_a_usage_error(workdir: Path, value: str) -> None:
    """``anonymize_ip = true`` in a config file (review 42): a TypeError with a traceback before; now the
    choices, as for any other wrong value, exit 2 and nothing written."""
    events = write_text(workdir / "e.csv", "user_id,timestamp\nu1,2024-05-01T10:00:00Z\n")
    config = write_text(workdir / "c.toml", f"[run]\nanonymize_ip = {value}\n")
    result = run_cli(events, "-o", workdir / "o.csv", "--no-geo", "--config", config)
    assert result.exit_code == 2
    assert "isnotoneofafter-geo,before-geo" in flat(result.stderr)
    assert not (workdir / "o.csv").exists()
