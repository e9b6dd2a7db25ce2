"""Reading event files and writing session tables, on real files in a temporary directory."""

from __future__ import annotations

import bz2
import errno
import gzip
import io
import json
import lzma
import os
import random
import subprocess
import sys
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, Literal

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

import sessionize
from sessionize import io as sio
from sessionize.io.formats import InputFormat
from sessionize.normalize import TimeUnit, parse_timestamp_series, parse_timestamp_text, timestamp_text
from sessionize.schema import EVENT_SCHEMA
from tests.helpers import (
    EVERY_PATH,
    EVERY_PATH_AND_SPARK,
    T0,
    any_path_options,
    listing,
    path_options,
    path_sessions,
    run_cli,
    session_rows,
    words,
    write_text,
)

EPOCH_T0 = 1714557600  # T0 in epoch seconds


def write_frame(path: Path, frame: pl.DataFrame) -> Path:
    """Write ``frame`` in the format that ``path``'s name asks for."""
    path.parent.mkdir(parents=True, exist_ok=True)
    name = path.name.lower()
    if name.endswith(".parquet"):
        frame.write_parquet(path)
    elif name.endswith((".ndjson", ".jsonl")):
        frame.write_ndjson(path)
    elif name.endswith(".ndjson.gz"):
        path.write_bytes(gzip.compress(frame.write_ndjson().encode()))
    elif name.endswith(".tsv"):
        frame.write_csv(path, separator="\t")
    elif name.endswith(".csv.gz"):
        path.write_bytes(gzip.compress(frame.write_csv().encode()))
    else:
        frame.write_csv(path)
    return path


def canonical(rows: list[dict[str, object]]) -> pl.DataFrame:
    """The canonical events frame that ``read_events`` should return for ``rows``."""
    full = [{name: row.get(name) for name in EVENT_SCHEMA} for row in rows]
    return pl.DataFrame(full, schema=EVENT_SCHEMA, orient="row")


def read_one(path: Path, **options: Any) -> pl.DataFrame:
    return sessionize.read_events([path], **options)


def timestamps(frame: pl.DataFrame) -> list[datetime]:
    return frame.get_column("timestamp").to_list()


# ---------------------------------------------------------------------------------------------------
# Resolving inputs: files, directories, globs, stdin
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("events.csv", "csv"),
        ("EVENTS.CSV", "csv"),
        ("events.csv.gz", "csv"),
        ("events.tsv", "tsv"),
        ("events.parquet", "parquet"),
        ("events.ndjson", "ndjson"),
        ("events.jsonl", "ndjson"),
        ("events.ndjson.gz", "ndjson"),
    ],
)
def test_format_of_an_explicit_file_comes_from_its_extension(
    tmp_path: Path, name: str, expected: InputFormat
) -> None:
    path = write_text(tmp_path / name, "")
    assert sessionize.resolve_inputs([path]) == [sio.InputFile(str(path), expected)]


def test_directory_is_searched_recursively_and_unsupported_files_are_skipped(tmp_path: Path) -> None:
    root = tmp_path / "logs"
    for name in ["b.csv", "a.ndjson", "2024/05/c.parquet", "2024/d.csv.gz", "2024/e.tsv", "x/f.jsonl"]:
        write_text(root / name, "")
    for name in ["README.md", "notes.txt", "2024/archive.zip", ".hidden.csv", "2024/05/run.xlsx"]:
        write_text(root / name, "")

    found = sessionize.resolve_inputs([root])

    relative = [os.path.relpath(f.path, root) for f in found]
    assert relative == sorted(relative)
    assert set(relative) == {
        "b.csv",
        "a.ndjson",
        os.path.join("2024", "05", "c.parquet"),
        os.path.join("2024", "d.csv.gz"),
        os.path.join("2024", "e.tsv"),
        os.path.join("x", "f.jsonl"),
    }


def test_glob_patterns_are_expanded_by_sessionize(tmp_path: Path) -> None:
    for name in ["day1.csv", "day2.csv", "other.ndjson", "sub/day3.csv", "notes.txt"]:
        write_text(tmp_path / name, "")

    flat = sessionize.resolve_inputs([str(tmp_path / "day*.csv")])
    deep = sessionize.resolve_inputs([str(tmp_path / "**" / "*.csv")])

    assert [Path(f.path).name for f in flat] == ["day1.csv", "day2.csv"]
    assert sorted(Path(f.path).name for f in deep) == ["day1.csv", "day2.csv", "day3.csv"]


def test_inputs_keep_the_order_given(tmp_path: Path) -> None:
    second = write_text(tmp_path / "z.csv", "")
    first = write_text(tmp_path / "a.ndjson", "")
    found = sessionize.resolve_inputs([second, first])
    assert [f.path for f in found] == [str(second), str(first)]


def test_dash_is_csv_on_stdin() -> None:
    assert sessionize.resolve_inputs(["-"]) == [sio.InputFile("-", "csv")]


def test_unknown_extension_of_a_named_file_is_an_error_naming_input_format(tmp_path: Path) -> None:
    path = write_text(tmp_path / "events.dat", "user_id,timestamp\nu,2024-05-01T10:00:00Z\n")
    with pytest.raises(sessionize.UnknownFormatError, match="--input-format") as caught:
        sessionize.resolve_inputs([path])
    assert str(path) in str(caught.value)


def test_input_format_reads_a_file_with_an_unknown_extension(tmp_path: Path) -> None:
    path = write_text(tmp_path / "events.log", "user_id,timestamp\n00042,2024-05-01T10:00:00Z\n")
    frame = read_one(path, input_format="csv")
    assert_frame_equal(frame, canonical([{"user_id": "00042", "timestamp": T0, "is_pageview": False}]))


def test_nonexistent_path_is_an_unreadable_input(tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    with pytest.raises(sessionize.UnreadableInputError, match="no such file") as caught:
        sessionize.resolve_inputs([missing])
    assert str(missing) in str(caught.value)


def test_directory_without_supported_files_is_an_error(tmp_path: Path) -> None:
    write_text(tmp_path / "logs" / "readme.md", "# nothing here")
    with pytest.raises(sessionize.NoInputFilesError, match="no supported files") as caught:
        sessionize.resolve_inputs([tmp_path / "logs"])
    assert str(tmp_path / "logs") in str(caught.value)


def test_glob_matching_nothing_is_an_error(tmp_path: Path) -> None:
    pattern = str(tmp_path / "*.csv")
    with pytest.raises(sessionize.NoInputFilesError, match="matches no files") as caught:
        sessionize.resolve_inputs([pattern])
    assert pattern in str(caught.value)


# ---------------------------------------------------------------------------------------------------
# Reading each format
# ---------------------------------------------------------------------------------------------------

SAMPLE = pl.DataFrame(
    {
        "user_id": ["00042", "00042", "1000000000001"],
        "timestamp": ["2024-05-01T10:00:00Z", "2024-05-01T10:05:00.123456Z", "2024-05-01T12:00:00+02:00"],
        "url": ["https://shop.example/", None, "https://shop.example/p"],
        "referrer": ["https://www.google.com/", None, None],
        "ip": ["81.2.69.142", "81.2.69.142", "2001:218::1"],
        "event": ["page_view", "click", "page_view"],
        "session_id": [None, None, "app-s-1"],
    }
)
SAMPLE_CANONICAL = canonical(
    [
        {
            "user_id": "00042",
            "timestamp": T0,
            "url": "https://shop.example/",
            "referrer": "https://www.google.com/",
            "ip": "81.2.69.142",
            "event": "page_view",
            "is_pageview": True,
        },
        {
            "user_id": "00042",
            "timestamp": T0 + timedelta(minutes=5, microseconds=123456),
            "ip": "81.2.69.142",
            "event": "click",
            "is_pageview": False,
        },
        {
            "user_id": "1000000000001",
            "timestamp": T0,
            "url": "https://shop.example/p",
            "ip": "2001:218::1",
            "event": "page_view",
            "client_session_id": "app-s-1",
            "is_pageview": True,
        },
    ]
)


@pytest.mark.parametrize(
    "name",
    ["events.csv", "events.csv.gz", "events.tsv", "events.parquet", "events.ndjson", "events.jsonl"],
)
def test_every_format_reads_to_the_same_canonical_events(tmp_path: Path, name: str) -> None:
    path = write_frame(tmp_path / name, SAMPLE)
    assert_frame_equal(read_one(path), SAMPLE_CANONICAL)


def test_gzipped_ndjson_is_read(tmp_path: Path) -> None:
    path = write_frame(tmp_path / "events.ndjson.gz", SAMPLE)
    assert_frame_equal(read_one(path), SAMPLE_CANONICAL)


def test_csv_from_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    stdin = io.TextIOWrapper(io.BytesIO(SAMPLE.write_csv().encode()), encoding="utf-8")
    monkeypatch.setattr("sys.stdin", stdin)
    assert_frame_equal(sessionize.read_events(["-"]), SAMPLE_CANONICAL)


def test_csv_user_ids_are_kept_exactly_as_written(tmp_path: Path) -> None:
    path = write_text(
        tmp_path / "ids.csv",
        "user_id,timestamp\n00042,2024-05-01T10:00:00Z\n1000000000001,2024-05-01T10:00:00Z\n"
        "0x1F,2024-05-01T10:00:00Z\n1.50,2024-05-01T10:00:00Z\n",
    )
    assert read_one(path)["user_id"].to_list() == ["00042", "1000000000001", "0x1F", "1.50"]


def test_ndjson_numeric_user_ids_become_strings(tmp_path: Path) -> None:
    path = write_text(
        tmp_path / "ids.ndjson",
        '{"user_id": 1000000000001, "timestamp": "2024-05-01T10:00:00Z"}\n'
        '{"user_id": 42, "timestamp": "2024-05-01T10:00:00Z"}\n'
        '{"user_id": "00042", "timestamp": "2024-05-01T10:00:00Z"}\n',
    )
    frame = read_one(path)
    assert frame.schema["user_id"] == pl.String()
    assert frame["user_id"].to_list() == ["1000000000001", "42", "00042"]


def test_ndjson_numeric_user_ids_followed_by_text_ids_are_read(tmp_path: Path) -> None:
    # Exports mix numeric and text ids (logged-in users vs anonymous ids); the text ones may come
    # after the rows polars looks at to guess the types.
    lines = [json.dumps({"user_id": 1000 + i, "timestamp": "2024-05-01T10:00:00Z"}) for i in range(150)]
    lines.append(json.dumps({"user_id": "anon-7", "timestamp": "2024-05-01T10:00:00Z"}))
    path = write_text(tmp_path / "mixed.ndjson", "\n".join(lines) + "\n")

    frame = read_one(path)

    assert frame.height == 151
    assert frame["user_id"][0] == "1000"
    assert frame["user_id"][-1] == "anon-7"


#: Snowflake-style 64-bit ids (beyond 2**53, where floats skip integers), one beyond 64 bits and
#: fractions in the user, session and event id fields of one NDJSON file (the session ids with text): one
#: float among integers made the reader widen the whole field to floats, and users 1234567890123456789
#: and ...790 became one user, "1.2345678901234568e+18".
WIDE_IDS = [
    (1234567890123456789, 1234567890123456789, 1234567890123456789),
    (1234567890123456790, 1234567890123456790, 1234567890123456790),
    (18446744073709551615, 9223372036854775807, 18446744073709551615),
    (123456789012345678901234567890, 1.5, 123456789012345678901234567890),
    (1.5, "abc", 1.5),
    (7.0, 7.0, 7.0),
]
#: The ids as the run writes them: each as written, a whole float as its integer (JSON's 7.0 is 7).
WIDE_ID_TEXTS = [
    ("1234567890123456789", "1234567890123456789", "1234567890123456789"),
    ("1234567890123456790", "1234567890123456790", "1234567890123456790"),
    ("18446744073709551615", "9223372036854775807", "18446744073709551615"),
    ("123456789012345678901234567890", "1.5", "123456789012345678901234567890"),
    ("1.5", "abc", "1.5"),
    ("7", "7", "7"),
]


def wide_id_lines() -> list[str]:
    """The lines of :data:`WIDE_IDS`, a minute apart."""
    return [
        json.dumps(
            {
                "user_id": user,
                "session_id": session,
                "event_id": event,
                "timestamp": f"2024-05-01T10:{i:02d}:00Z",
            }
        )
        for i, (user, session, event) in enumerate(WIDE_IDS)
    ]


def test_ndjson_numeric_ids_are_never_widened_to_floats(tmp_path: Path) -> None:
    path = write_text(tmp_path / "ids.ndjson", "\n".join(wide_id_lines()) + "\n")
    events = read_one(path)
    assert events.select("user_id", "client_session_id", "event_id").rows() == WIDE_ID_TEXTS


def test_ndjson_numeric_ids_read_line_by_line_are_never_widened_to_floats(tmp_path: Path) -> None:
    """The careful reader (a malformed line sends the file to it) reads the ids alike, the malformed line
    set aside; so does a line whose id is ``true`` among numbers (it was, and is, bad_json_value)."""
    lines = wide_id_lines()
    lines.insert(2, '{"user_id": 5, "timestamp": ')
    lines.append(json.dumps({"user_id": True, "timestamp": "2024-05-01T11:00:00Z"}))
    path = write_text(tmp_path / "ids.ndjson", "\n".join(lines) + "\n")
    read = sio.read_inputs([path], sessionize.RunConfig.from_options(on_invalid="skip").read)
    assert read.events.select("user_id", "client_session_id", "event_id").rows() == WIDE_ID_TEXTS
    assert read.rejects is not None
    assert read.rejects.select("source_row", "reject_reason").rows() == [
        (3, "malformed_json"),
        (8, "bad_json_value"),
    ]


def test_a_boolean_among_numeric_ndjson_ids_is_still_rejected(tmp_path: Path) -> None:
    """Numbers in an id field are read as text; ``true`` is no number, and its line is rejected as before
    (it was never the user "true")."""
    lines = [
        json.dumps({"user_id": uid, "timestamp": "2024-05-01T10:00:00Z"})
        for uid in (1234567890123456789, 1.5, True)
    ]
    path = write_text(tmp_path / "ids.ndjson", "\n".join(lines) + "\n")
    read = sio.read_inputs([path], sessionize.RunConfig.from_options(on_invalid="skip").read)
    assert read.events["user_id"].to_list() == ["1234567890123456789", "1.5"]
    assert read.rejects is not None
    assert read.rejects.select("source_row", "reject_reason").rows() == [(3, "bad_json_value")]


@pytest.mark.parametrize("path", EVERY_PATH)
def test_a_boolean_id_among_text_ids_is_rejected_on_every_path(path: dict[str, Any], tmp_path: Path) -> None:
    """Polars makes a JSON boolean text in a field of text: ``false`` user ids (a tracker's for every
    anonymous visitor) were the user "false", ``true`` event ids dropped three events as duplicates of
    the first, and where booleans were the most lines sent, the careful reader rejected the real ids
    (review 53). A boolean id is rejected (bad_json_value), whichever lines are more; the text
    ``"true"`` is an id like any."""

    def line(user: object, minute: int, event: object) -> str:
        return json.dumps(
            {"user_id": user, "timestamp": f"2024-05-01T10:{minute:02d}:00Z", "event_id": event}
        )

    lines = [line("a", 0, "e1"), line(False, 1, "e2"), line(False, 2, "e3"), line("b", 3, True),
             line("b", 4, True), line("b", 5, True), line("true", 6, "e7")]  # fmt: skip
    source = write_text(tmp_path / "ids.ndjson", "\n".join(lines) + "\n")
    options = path_options(path, tmp_path)
    result = sessionize.run(
        [source], no_geo=True, on_invalid="skip", rejects=str(tmp_path / "r.csv"), **options
    )
    assert (result.rows_read, result.rejected, result.duplicates_removed) == (7, 5, 0)
    assert sorted(path_sessions(result, options)["user_id"].to_list()) == ["a", "true"]
    reasons = pl.read_csv(tmp_path / "r.csv").select("source_row", "reject_reason").rows()
    assert reasons == [(row, "bad_json_value") for row in (2, 3, 4, 5, 6)]


def test_ndjson_numeric_ids_read_in_windows_of_rows(tmp_path: Path) -> None:
    """The bucketed engine's reader of a file in windows of its rows reads the ids as a whole read does."""
    path = write_text(tmp_path / "ids.ndjson", "\n".join(wide_id_lines()) + "\n")
    source = sio.resolve_inputs([path])[0]
    reads = list(sio.read.iter_reads(source, sio.ReadOptions(), chunk_rows=2))
    assert len(reads) == 3
    rows = [
        row for read in reads for row in read.events.select("user_id", "client_session_id", "event_id").rows()
    ]
    assert rows == WIDE_ID_TEXTS


@pytest.mark.parametrize("path", EVERY_PATH)
def test_ndjson_numeric_ids_stay_apart_on_every_path(path: dict[str, Any], tmp_path: Path) -> None:
    """Each engine path reads the file's ids as the in-memory one does (the bucketed engine in windows
    of its rows): six users, none merged."""
    source = write_text(tmp_path / "ids.ndjson", "\n".join(wide_id_lines()) + "\n")
    options = path_options(path, tmp_path)
    result = sessionize.run([source], no_geo=True, **options)
    sessions = path_sessions(result, options)
    assert sorted(sessions["user_id"].to_list()) == sorted(user for user, _, _ in WIDE_ID_TEXTS)
    assert sorted(sessions["session_id"].to_list()) == sorted(session for _, session, _ in WIDE_ID_TEXTS)


#: Two events of user ``a`` in epoch nanoseconds, 30 minutes and 1 ns apart: two sessions (the
#: nanoseconds are cut, so the second starts at .123457, after .123456 plus 30 minutes).
NS_LINES = [
    '{"user_id": "a", "timestamp": 1714557600123456999}',
    '{"user_id": "a", "timestamp": 1714559400123457000}',
]


@pytest.mark.parametrize("path", EVERY_PATH_AND_SPARK)
@pytest.mark.parametrize("other", [None, '{"user_id": "z", "timestamp": 1714559400123457000.0}'])
def test_ndjson_epoch_nanoseconds_are_exact_whatever_another_line_holds(
    tmp_path: Path, path: dict[str, Any], other: str | None, request: pytest.FixtureRequest
) -> None:
    """One float among a field of integer epoch nanoseconds (another user's ``...000.0``) made Polars read
    the whole field as floats: beyond 2**53 each time lost up to 128 ns and was rounded to the
    microsecond, where a file of integers cuts the nanoseconds, so user a's two events became one session
    (review of stop 52). The time field's numbers are then read as text: the integers exactly."""
    lines = NS_LINES if other is None else [*NS_LINES, other]
    source = write_text(tmp_path / "ns.ndjson", "\n".join(lines) + "\n")
    options = any_path_options(path, tmp_path, request)
    result = sessionize.run([source], no_geo=True, **options)
    starts = [
        (user, start.replace(tzinfo=None).isoformat())
        for user, start in session_rows(path_sessions(result, options), "user_id", "session_start")
    ]
    assert starts[:2] == [("a", "2024-05-01T10:00:00.123456"), ("a", "2024-05-01T10:30:00.123457")]
    assert len(starts) == (2 if other is None else 3)


@pytest.mark.parametrize("path", EVERY_PATH_AND_SPARK)
@pytest.mark.parametrize("separator", [",", "\t"], ids=["csv", "tsv"])
def test_a_warehouse_null_marker_in_a_csv_is_no_value(
    tmp_path: Path, path: dict[str, Any], separator: str, request: pytest.FixtureRequest
) -> None:
    """MySQL, PostgreSQL's COPY, Hive and Snowflake write a NULL in a CSV or TSV as ``\\N``. It was read as
    the text: a NULL referrer made a referral from the site "\\n", a NULL address the address ``\\N``, and
    NULL user ids one user ``\\N``. It is no value; the rejects file keeps the row as written."""
    rows = [
        ["user_id", "timestamp", "url", "referrer", "ip"],
        ["u1", "2024-05-01 10:00:00", "https://a.example/x", "\\N", "\\N"],
        ["u2", "2024-05-01 10:00:00", "https://a.example/y", "https://www.google.com/", "\\N"],
        ["\\N", "2024-05-01 10:05:00", "https://a.example/z", "https://www.bing.com/", "1.2.3.4"],
        ["\\N", "2024-05-01 10:06:00", "https://a.example/z", "\\N", "1.2.3.5"],
    ]
    name = "events.csv" if separator == "," else "events.tsv"
    source = write_text(tmp_path / name, "".join(separator.join(row) + "\n" for row in rows))
    options = any_path_options(path, tmp_path, request)
    rejects = tmp_path / "rejects.csv"
    result = sessionize.run([source], no_geo=True, on_invalid="skip", rejects=str(rejects), **options)
    sessions = path_sessions(result, options)
    assert session_rows(sessions, "user_id", "referrer", "channel", "ip") == [
        ("u1", None, "Direct", None),
        ("u2", "https://www.google.com/", "Organic Search", None),
    ]
    assert result.rejected == 2
    written = pl.read_csv(rejects, infer_schema=False)
    assert written.get_column("user_id").to_list() == ["\\N", "\\N"]
    assert written.get_column("referrer").to_list() == ["https://www.bing.com/", "\\N"]


def test_ndjson_keys_that_first_appear_late_are_not_dropped(tmp_path: Path) -> None:
    # JSON exporters omit null keys, so the referrer may first appear far into the file.
    lines = [json.dumps({"user_id": f"u{i}", "timestamp": "2024-05-01T10:00:00Z"}) for i in range(150)]
    lines.append(
        json.dumps(
            {"user_id": "late", "timestamp": "2024-05-01T10:00:00Z", "referrer": "https://www.google.com/"}
        )
    )
    path = write_text(tmp_path / "late.ndjson", "\n".join(lines) + "\n")

    frame = read_one(path)

    assert frame.filter(pl.col("user_id") == "late")["referrer"].to_list() == ["https://www.google.com/"]


def test_parquet_integer_user_ids_become_strings(tmp_path: Path) -> None:
    frame = pl.DataFrame({"user_id": [42, 1000000000001], "timestamp": [T0, T0]})
    path = write_frame(tmp_path / "ids.parquet", frame)
    events = read_one(path)
    assert events.schema["user_id"] == pl.String()
    assert events["user_id"].to_list() == ["42", "1000000000001"]


# ---------------------------------------------------------------------------------------------------
# Timestamps
# ---------------------------------------------------------------------------------------------------

MS = timedelta(milliseconds=1)
US = timedelta(microseconds=1)


@pytest.mark.parametrize(
    ("raw", "options", "expected"),
    [
        ("2024-05-01T10:00:00Z", {}, T0),
        ("2024-05-01T12:00:00+02:00", {}, T0),
        ("2024-05-01T05:30:00-04:30", {}, T0),
        ("2024-05-01T15:30:00+0530", {}, T0),
        ("2024-05-01T10:00:00.123456Z", {}, T0 + 123456 * US),
        ("2024-05-01T10:00:00", {}, T0),
        ("2024-05-01 10:00:00", {}, T0),
        ("2024-05-01T12:00:00", {"timezone": "Europe/Berlin"}, T0),  # CEST, +02:00
        ("2024-01-15T10:00:00", {"timezone": "Europe/Berlin"}, datetime(2024, 1, 15, 9, tzinfo=UTC)),
        ("2024-05-01T10:00:00Z", {"timezone": "Europe/Berlin"}, T0),  # an explicit offset wins
        (str(EPOCH_T0), {}, T0),
        (str(EPOCH_T0 * 1000 + 123), {}, T0 + 123 * MS),
        (str(EPOCH_T0 * 1_000_000 + 123456), {}, T0 + 123456 * US),
        (str(EPOCH_T0 * 1_000_000_000 + 123456789), {}, T0 + 123456 * US),
        (f"{EPOCH_T0}.25", {}, T0 + 250 * MS),
        (str(EPOCH_T0), {"time_unit": "s"}, T0),
        (str(EPOCH_T0 * 1000), {"time_unit": "ms"}, T0),
        # An explicit unit overrides the guess from the magnitude.
        (str(EPOCH_T0 * 1000), {"time_unit": "us"}, datetime(1970, 1, 1, tzinfo=UTC) + EPOCH_T0 * MS),
        (str(EPOCH_T0 * 1_000_000_000), {"time_unit": "ns"}, T0),
        # Rejected as bad_timestamp before (review 44): RFC 3339's lower case, ISO 8601's decimal comma and
        # basic format, slashes, GMT, a zone name after the offset, RFC 2822 and an access log's time.
        ("2024-05-01t10:00:00z", {}, T0),
        ('"2024-05-01T10:00:00,5Z"', {}, T0 + 500 * MS),
        ("20240501T100000Z", {}, T0),
        ("20240501T120000.25+0200", {}, T0 + 250 * MS),
        ("2024/05/01 10:00", {}, T0),
        ("2024/05/01 12:00:00", {"timezone": "Europe/Berlin"}, T0),
        ("2024-05-01 10:00:00 GMT", {}, T0),
        ("2024-05-01T12:00:00+02:00[Europe/Paris]", {}, T0),
        ("2024-05-01T10:00:00Z[UTC]", {}, T0),
        ('"Wed, 01 May 2024 10:00:00 +0000"', {}, T0),
        ('"Wed, 01 May 2024 10:00:00 GMT"', {}, T0),
        ("01 May 2024 12:00:00 +0200", {}, T0),
        ("01/May/2024:12:00:00 +0200", {}, T0),
        ("2024/05/01", {}, T0 - timedelta(hours=10)),
    ],
)
def test_csv_timestamp_forms(tmp_path: Path, raw: str, options: dict[str, str], expected: datetime) -> None:
    path = write_text(tmp_path / "t.csv", f"user_id,timestamp\nu,{raw}\n")
    frame = read_one(path, **options)
    assert frame.schema["timestamp"] == pl.Datetime("us", "UTC")
    assert timestamps(frame) == [expected]


@pytest.mark.parametrize(
    "raw",
    [
        '"Thu, 01 May 2024 10:00:00 +0000"',  # the weekday does not match the date
        "01/May/2024:10:00:00",  # an access log's time without its offset
        "2024-05-01T10:00:00[Europe/Paris]",  # a zone name without an offset
        '"2024-05-01T10:00:00,Z"',
        "2024/5/1 10:00",
        # Review 46: signs where the offset's digits go ("+5" is a number to a cast), two-digit years.
        "2024-05-01T10:00:00++5:00",
        "2024-05-01T10:00:00+05:+5",
        "2024-05-01T10:00:00+05+5",
        "2024-05-01T10:00:00++5",
        "01 May 24 10:30:00 +0000",
        '"Wed, 01 May 24 10:30:00 GMT"',
        "01/May/24:10:30:00 +0000",
    ],
)
def test_timestamp_forms_that_stay_invalid(tmp_path: Path, raw: str) -> None:
    path = write_text(tmp_path / "t.csv", f"user_id,timestamp\nu,{raw}\nu,2024-05-01T10:00:00Z\n")
    result = sessionize.run([path], no_geo=True, on_invalid="skip")
    assert (result.rejected, result.events_read) == (1, 1)


def test_iso_offset_with_hours_only_as_postgres_writes_it(tmp_path: Path) -> None:
    # PostgreSQL prints timestamptz as `2024-05-01 12:00:00+02`: ISO 8601 allows an offset of hours only.
    path = write_text(
        tmp_path / "pg.csv", "user_id,timestamp\nu,2024-05-01 12:00:00+02\nu,2024-05-01 12:00:00.5-03\n"
    )
    assert timestamps(read_one(path)) == [T0, T0 + timedelta(hours=5, milliseconds=500)]


def test_mixed_offsets_in_one_file_are_compared_as_instants(tmp_path: Path) -> None:
    path = write_text(
        tmp_path / "mixed.csv",
        "user_id,timestamp\n"
        "u,2024-05-01T11:00:00+02:00\n"  # 09:00Z
        "u,2024-05-01T09:10:00Z\n"
        "u,2024-05-01T04:20:00-05:00\n",  # 09:20Z
    )
    nine = datetime(2024, 5, 1, 9, tzinfo=UTC)
    assert timestamps(read_one(path)) == [nine, nine + timedelta(minutes=10), nine + timedelta(minutes=20)]
    table = sessionize.run([path]).sessions
    assert table["session_start"].to_list() == [nine]
    assert table["duration_s"].to_list() == [1200.0]


def test_ndjson_epoch_numbers(tmp_path: Path) -> None:
    path = write_text(
        tmp_path / "epoch.ndjson",
        f'{{"user_id": "a", "ts": {EPOCH_T0 * 1000}}}\n{{"user_id": "b", "ts": {EPOCH_T0 + 60}}}\n',
    )
    assert timestamps(read_one(path)) == [T0, T0 + timedelta(minutes=1)]
    assert timestamps(read_one(path, time_unit="ms")) == [
        T0,
        datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=EPOCH_T0 + 60),
    ]


def test_ndjson_float_epoch_seconds_keep_microseconds(tmp_path: Path) -> None:
    path = write_text(tmp_path / "f.ndjson", f'{{"user_id": "a", "ts": {EPOCH_T0}.123456}}\n')
    assert timestamps(read_one(path)) == [T0 + 123456 * US]


@pytest.mark.parametrize("unit", ["ms", "us", "ns"])
def test_parquet_naive_timestamps_are_utc_or_the_given_timezone(
    tmp_path: Path, unit: Literal["ms", "us", "ns"]
) -> None:
    local = datetime(2024, 5, 1, 6, 0, 0, 123000)  # New York 06:00 EDT = 10:00Z
    frame = pl.DataFrame({"user_id": ["a"], "timestamp": [local]}).with_columns(
        pl.col("timestamp").dt.cast_time_unit(unit)
    )
    path = write_frame(tmp_path / "naive.parquet", frame)

    assert timestamps(read_one(path)) == [local.replace(tzinfo=UTC)]
    assert timestamps(read_one(path, timezone="America/New_York")) == [T0 + 123 * MS]


def test_parquet_aware_timestamps_are_converted_to_utc(tmp_path: Path) -> None:
    tokyo = timezone(timedelta(hours=9))
    frame = pl.DataFrame(
        {"user_id": ["a"], "event_time": [datetime(2024, 5, 1, 19, 0, 0, 654321, tzinfo=tokyo)]}
    ).with_columns(pl.col("event_time").dt.convert_time_zone("Asia/Tokyo"))
    path = write_frame(tmp_path / "aware.parquet", frame)
    # --timezone only applies to timestamps without a zone.
    for options in ({}, {"timezone": "America/New_York"}):
        events = read_one(path, **options)
        assert events.schema["timestamp"] == pl.Datetime("us", "UTC")
        assert timestamps(events) == [T0 + 654321 * US]


def test_parquet_nanosecond_timestamps_keep_microseconds(tmp_path: Path) -> None:
    frame = pl.DataFrame({"user_id": ["a"], "timestamp": [T0]}).with_columns(
        (pl.col("timestamp").dt.cast_time_unit("ns") + pl.duration(nanoseconds=123456789)).alias("timestamp")
    )
    path = write_frame(tmp_path / "ns.parquet", frame)
    assert timestamps(read_one(path)) == [T0 + 123456 * US]


# ---------------------------------------------------------------------------------------------------
# Columns
# ---------------------------------------------------------------------------------------------------

ROLE_VALUES = ("U-1", "2024-05-01T10:00:00Z", "/p", "https://ref.example/", "10.0.0.1", "page_view", "S-1")


@pytest.mark.parametrize(
    "header",
    [
        ("user_id", "timestamp", "url", "referrer", "ip", "event", "session_id"),
        ("anonymous_id", "ts", "page_url", "referer", "ip_address", "event_name", "session_id"),
        ("userId", "time", "page", "page_referrer", "context_ip", "type", "session_id"),
        ("visitor_id", "event_time", "url", "referrer", "ip", "event", "session_id"),
        ("client_id", "received_at", "url", "referrer", "ip", "event", "session_id"),
    ],
)
def test_usual_column_names_are_detected(tmp_path: Path, header: tuple[str, ...]) -> None:
    # Shuffled, with extra columns, so detection cannot rely on position.
    names = ["extra", *reversed(header), "user_agent"]
    values = ["x", *reversed(ROLE_VALUES), "Mozilla/5.0"]
    path = write_text(tmp_path / "cols.csv", ",".join(names) + "\n" + ",".join(values) + "\n")

    expected = {
        "user_id": "U-1",
        "timestamp": T0,
        "url": "/p",
        "referrer": "https://ref.example/",
        "ip": "10.0.0.1",
        "event": "page_view",
        "client_session_id": "S-1",
        "user_agent": "Mozilla/5.0",
        "is_pageview": True,
    }
    assert_frame_equal(read_one(path), canonical([expected]))


@pytest.mark.parametrize(
    "header",
    [
        ("User ID", "user_id", "timestamp"),
        ("userId", "user_id", "timestamp"),
        ("user_id", "User ID", "timestamp"),
    ],
)
def test_a_column_named_exactly_wins_over_an_earlier_look_alike(
    tmp_path: Path, header: tuple[str, ...]
) -> None:
    """Review 44: the first column whose name looked like an alias won, so `User ID` before `user_id`
    made another user id of it, and a glob of files with other column orders mixed the two."""
    exact = header.index("user_id")
    values = ["decoy", "decoy", "2024-05-01T10:00:00Z"]
    values[exact] = "U-1"
    path = write_text(tmp_path / "cols.csv", ",".join(header) + "\n" + ",".join(values) + "\n")
    assert read_one(path).get_column("user_id").to_list() == ["U-1"]


def test_column_flags_name_the_columns_and_win_over_detected_names(tmp_path: Path) -> None:
    path = write_text(
        tmp_path / "custom.csv",
        "who,when,where,came_from,addr,what,visit,user_id,timestamp,url\n"
        "U-1,2024-05-01T10:00:00Z,/p,https://ref.example/,10.0.0.1,PageView,S-1,decoy,bad,/decoy\n",
    )
    frame = read_one(
        path,
        user_col="who",
        time_col="when",
        url_col="where",
        referrer_col="came_from",
        ip_col="addr",
        event_col="what",
        session_col="visit",
    )
    expected = {
        "user_id": "U-1",
        "timestamp": T0,
        "url": "/p",
        "referrer": "https://ref.example/",
        "ip": "10.0.0.1",
        "event": "PageView",
        "client_session_id": "S-1",
        "is_pageview": True,
    }
    assert_frame_equal(frame, canonical([expected]))


def test_only_user_and_time_are_required_and_extra_columns_are_ignored(tmp_path: Path) -> None:
    path = write_text(
        tmp_path / "minimal.csv", "browser,user_id,timestamp,country\nFirefox,u,2024-05-01T10:00:00Z,DE\n"
    )
    frame = read_one(path)
    assert frame.columns == list(EVENT_SCHEMA)
    assert_frame_equal(frame, canonical([{"user_id": "u", "timestamp": T0, "is_pageview": False}]))


def test_files_with_different_columns_and_formats_are_read_together(tmp_path: Path) -> None:
    first = write_text(tmp_path / "a.csv", "user_id,timestamp,url\nu1,2024-05-01T10:00:00Z,/a\n")
    second = write_text(
        tmp_path / "b.ndjson",
        '{"userId": "u2", "ts": "2024-05-01T10:01:00Z", "page_url": "/b", "referer": "https://t.co/x"}\n',
    )
    third = write_frame(
        tmp_path / "c.parquet",
        pl.DataFrame({"visitor_id": [7], "event_time": [T0 + timedelta(minutes=2)], "ip_address": ["::1"]}),
    )

    frame = sessionize.read_events([first, second, third])

    expected = canonical(
        [
            {"user_id": "u1", "timestamp": T0, "url": "/a", "is_pageview": True},
            {
                "user_id": "u2",
                "timestamp": T0 + timedelta(minutes=1),
                "url": "/b",
                "referrer": "https://t.co/x",
                "is_pageview": True,
            },
            {"user_id": "7", "timestamp": T0 + timedelta(minutes=2), "ip": "::1", "is_pageview": False},
        ]
    )
    assert_frame_equal(frame, expected)


def test_missing_user_column_lists_the_columns_and_the_flag(tmp_path: Path) -> None:
    path = write_text(tmp_path / "nouser.csv", "visitor,when,url\nv,2024-05-01T10:00:00Z,/\n")
    with pytest.raises(sessionize.MissingColumnError) as caught:
        read_one(path)
    message = str(caught.value)
    assert str(path) in message
    assert "visitor, when, url" in message
    assert "--user-col" in message

    with pytest.raises(sessionize.MissingColumnError) as caught:
        read_one(path, user_col="visitor")
    assert "--time-col" in str(caught.value)
    assert "visitor, when, url" in str(caught.value)

    assert read_one(path, user_col="visitor", time_col="when")["user_id"].to_list() == ["v"]


def test_a_named_column_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    path = write_text(tmp_path / "e.csv", "user_id,timestamp\nu,2024-05-01T10:00:00Z\n")
    with pytest.raises(sessionize.MissingColumnError, match="--url-col") as caught:
        read_one(path, url_col="page_location_x")
    assert "page_location_x" in str(caught.value)
    assert "user_id, timestamp" in str(caught.value)


# ---------------------------------------------------------------------------------------------------
# Page views
# ---------------------------------------------------------------------------------------------------

PAGEVIEW_CSV = (
    "user_id,timestamp,event,url\n"
    "u,2024-05-01T10:00:00Z,page_view,/1\n"
    "u,2024-05-01T10:00:01Z,PageView,/2\n"
    "u,2024-05-01T10:00:02Z,$pageview,/3\n"
    "u,2024-05-01T10:00:03Z,PAGE,/4\n"
    "u,2024-05-01T10:00:04Z,click,/5\n"
    "u,2024-05-01T10:00:05Z,,/6\n"
    "u,2024-05-01T10:00:06Z,Page_View,\n"
)


def test_default_pageview_event_names_are_case_insensitive(tmp_path: Path) -> None:
    path = write_text(tmp_path / "pv.csv", PAGEVIEW_CSV)
    assert read_one(path)["is_pageview"].to_list() == [True, True, True, True, False, False, True]


def test_custom_pageview_event_names(tmp_path: Path) -> None:
    path = write_text(tmp_path / "pv.csv", PAGEVIEW_CSV)
    frame = read_one(path, pageview_events=["CLICK", "pageview"])
    assert frame["is_pageview"].to_list() == [False, True, False, False, True, False, False]


def test_without_an_event_column_every_event_with_a_url_is_a_pageview(tmp_path: Path) -> None:
    path = write_text(
        tmp_path / "nev.csv", "user_id,timestamp,url\nu,2024-05-01T10:00:00Z,/a\nu,2024-05-01T10:00:01Z,\n"
    )
    assert read_one(path)["is_pageview"].to_list() == [True, False]


# ---------------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------------


def test_bad_timestamps_report_file_line_numbers_and_values(tmp_path: Path) -> None:
    path = write_text(
        tmp_path / "bad.csv",
        "user_id,timestamp\n"
        "u,2024-05-01T10:00:00Z\n"  # line 2
        "u,yesterday\n"  # line 3
        "u,2024-05-01T10:01:00Z\n"
        "u,2024-13-45T10:00:00Z\n",  # line 5
    )
    with pytest.raises(sessionize.BadTimestampError) as caught:
        read_one(path)
    message = str(caught.value)
    assert str(path) in message
    assert "2 timestamp(s)" in message
    assert "line 3: 'yesterday'" in message
    assert "line 5: '2024-13-45T10:00:00Z'" in message
    assert "--time-unit" in message


def test_bad_timestamps_show_the_first_five(tmp_path: Path) -> None:
    rows = "".join(f"u,bad{i}\n" for i in range(7))
    path = write_text(tmp_path / "many.csv", "user_id,timestamp\n" + rows)
    with pytest.raises(sessionize.BadTimestampError) as caught:
        read_one(path)
    message = str(caught.value)
    assert "7 timestamp(s)" in message
    assert "line 2: 'bad0'" in message
    assert "line 6: 'bad4'" in message
    assert "bad5" not in message


def test_bad_timestamp_in_gzipped_csv_counts_lines_of_the_text(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv.gz"
    path.write_bytes(gzip.compress(b"user_id,timestamp\nu,2024-05-01T10:00:00Z\nu,soon\n"))
    with pytest.raises(sessionize.BadTimestampError, match="line 3: 'soon'") as caught:
        read_one(path)
    assert str(path) in str(caught.value)


def test_bad_timestamp_in_ndjson_names_the_row(tmp_path: Path) -> None:
    path = write_text(
        tmp_path / "bad.ndjson",
        '{"user_id": "u", "timestamp": "2024-05-01T10:00:00Z"}\n{"user_id": "u", "timestamp": "later"}\n',
    )
    with pytest.raises(sessionize.BadTimestampError, match=r"\b(line|row) 2: 'later'") as caught:
        read_one(path)
    assert str(path) in str(caught.value)


def test_the_error_names_the_file_that_holds_the_bad_row(tmp_path: Path) -> None:
    good = write_text(tmp_path / "good.csv", "user_id,timestamp\nu,2024-05-01T10:00:00Z\n")
    bad = write_text(
        tmp_path / "worse.csv",
        "user_id,timestamp\nu,2024-05-01T10:00:00Z\nu,2024-05-01T10:00:00Z\nu,x\n",
    )
    with pytest.raises(sessionize.BadTimestampError) as caught:
        sessionize.read_events([good, bad])
    assert str(bad) in str(caught.value)
    assert str(good) not in str(caught.value)
    assert "line 4: 'x'" in str(caught.value)


def test_empty_user_id_is_an_error_with_its_line(tmp_path: Path) -> None:
    path = write_text(
        tmp_path / "nouid.csv", "user_id,timestamp\nu,2024-05-01T10:00:00Z\n,2024-05-01T10:00:01Z\n"
    )
    with pytest.raises(sessionize.MissingUserIdError) as caught:
        read_one(path)
    message = str(caught.value)
    assert str(path) in message
    assert "line 3" in message
    assert "--user-col" in message


def test_null_user_id_in_ndjson_is_an_error(tmp_path: Path) -> None:
    path = write_text(
        tmp_path / "nouid.ndjson",
        '{"user_id": "u", "timestamp": "2024-05-01T10:00:00Z"}\n'
        '{"user_id": null, "timestamp": "2024-05-01T10:00:00Z"}\n',
    )
    with pytest.raises(sessionize.MissingUserIdError, match=r"\b(line|row) 2\b"):
        read_one(path)


def test_a_trailing_blank_line_in_a_csv_is_not_an_event(tmp_path: Path) -> None:
    # Hand-edited and concatenated CSV files often end with an empty line.
    path = write_text(tmp_path / "trailing.csv", "user_id,timestamp\nu,2024-05-01T10:00:00Z\n\n")
    assert read_one(path)["user_id"].to_list() == ["u"]


def test_blank_lines_still_count_in_reported_line_numbers(tmp_path: Path) -> None:
    path = write_text(
        tmp_path / "gaps.csv",
        "user_id,timestamp\nu,2024-05-01T10:00:00Z\n\n\nu,2024-05-01T10:01:00Z\nu,oops\n",
    )
    with pytest.raises(sessionize.BadTimestampError, match="line 6: 'oops'"):
        read_one(path)
    path.write_text("user_id,timestamp\nu,2024-05-01T10:00:00Z\n\nu,2024-05-01T10:01:00Z\n")
    assert timestamps(read_one(path)) == [T0, T0 + timedelta(minutes=1)]


def test_a_text_file_named_parquet_is_unreadable(tmp_path: Path) -> None:
    path = write_text(tmp_path / "events.parquet", "user_id,timestamp\nu,2024-05-01T10:00:00Z\n")
    with pytest.raises(sessionize.UnreadableInputError, match="--input-format") as caught:
        read_one(path)
    assert str(path) in str(caught.value)
    assert "Parquet" in str(caught.value)


BODY = b"user_id,timestamp\n" + b"u,2024-05-01T10:00:00Z\n" * 200_000


@pytest.mark.parametrize(
    ("name", "compress", "message"),
    [
        ("events.csv.bz2", bz2.compress, "is bzip2-compressed, which sessionize does not read"),
        ("events.csv", bz2.compress, "is bzip2-compressed"),
        ("events.csv.xz", lzma.compress, "is xz-compressed"),
        ("events.csv", gzip.compress, "is gzip-compressed but its name does not end in .gz"),
        ("events.log", gzip.compress, "is gzip-compressed but its name does not end in .gz"),
        ("events.csv.zip", None, "is a ZIP archive"),
        ("events.csv.zst", None, "is zstd-compressed"),
    ],
)
@pytest.mark.parametrize("flags", [[], ["--input-format", "csv"], ["--buckets", "2"]])
def test_compressed_files_sessionize_does_not_read_are_named(
    tmp_path: Path, name: str, compress: Any, message: str, flags: list[str]
) -> None:
    """Review 44: a .csv.bz2 or .zip was "unknown extension, use --input-format", and with it the error
    listed binary garbage as column names; a gzip file named .csv read when small and failed on a large
    one with binary "column names". Each is named as what it is, with the command that makes it
    readable, before anything is read."""
    path = tmp_path / name
    if name.endswith(".zip"):
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("events.csv", BODY)
    elif name.endswith(".zst"):
        path.write_bytes(b"\x28\xb5\x2f\xfd" + bytes(64))
    else:
        path.write_bytes(compress(BODY))
    result = run_cli(path, "--no-geo", "-o", tmp_path / "out.parquet", *flags)
    assert result.exit_code != 0
    assert message in words(result.stderr) and str(path) in words(result.stderr)
    assert not (tmp_path / "out.parquet").exists()


def test_the_decompress_command_is_quoted_for_the_shell(tmp_path: Path) -> None:
    path = tmp_path / "my events;.csv.bz2"
    path.write_bytes(bz2.compress(BODY[:1000]))
    result = run_cli(path, "--no-geo", "-o", tmp_path / "out.parquet")
    assert result.exit_code != 0
    assert f"bunzip2 -c '{path}' | gzip > '{tmp_path}/my events;.csv.gz'" in words(result.stderr)


def test_a_text_file_that_starts_like_a_compressed_one_is_read(tmp_path: Path) -> None:
    """The magic numbers are checked whole: a CSV whose first column is BZh... is text."""
    path = write_text(tmp_path / "e.csv", "BZh9,user_id,timestamp\nx,u,2024-05-01T10:00:00Z\n")
    assert read_one(path).height == 1


def test_truncated_gzip_is_unreadable(tmp_path: Path) -> None:
    body = b"user_id,timestamp\n" + b"u,2024-05-01T10:00:00Z\n" * 5000
    data = gzip.compress(body)
    path = tmp_path / "events.csv.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(sessionize.UnreadableInputError, match="truncated") as caught:
        read_one(path)
    assert str(path) in str(caught.value)


def test_empty_csv_holds_zero_events(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    assert_frame_equal(read_one(path), canonical([]))


def test_header_only_csv_holds_zero_events(tmp_path: Path) -> None:
    path = write_text(tmp_path / "header.csv", "user_id,timestamp,url\n")
    assert_frame_equal(read_one(path), canonical([]))


def test_empty_csv_next_to_a_real_one(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    real = write_text(tmp_path / "real.csv", "user_id,timestamp\nu,2024-05-01T10:00:00Z\n")
    frame = sessionize.read_events([empty, real])
    assert_frame_equal(frame, canonical([{"user_id": "u", "timestamp": T0, "is_pageview": False}]))


# ---------------------------------------------------------------------------------------------------
# Writing the session table
# ---------------------------------------------------------------------------------------------------


@pytest.fixture
def session_table(tmp_path: Path) -> pl.DataFrame:
    source = write_text(
        tmp_path / "in" / "events.csv",
        "user_id,timestamp,url,referrer\n"
        "00042,2024-05-01T10:00:00.123456Z,/a,https://www.google.com/\n"
        "00042,2024-05-01T10:10:00Z,/b,\n"
        "u2,2024-05-01T11:00:00Z,/c,\n",
    )
    return sessionize.run([source]).sessions


def test_parquet_output_has_the_session_schema(tmp_path: Path, session_table: pl.DataFrame) -> None:
    out = tmp_path / "out" / "sessions.parquet"
    out.parent.mkdir()
    assert sessionize.write_sessions(session_table, str(out)) == "parquet"
    back = pl.read_parquet(out)
    assert back.columns == [c.name for c in sessionize.SESSION_COLUMNS]
    assert dict(back.schema) == sessionize.SESSION_SCHEMA
    assert_frame_equal(back, session_table)
    assert back["user_id"].to_list() == ["00042", "u2"]
    assert listing(out.parent) == ["sessions.parquet"]


def test_csv_output_writes_utc_timestamps_with_microseconds(
    tmp_path: Path, session_table: pl.DataFrame
) -> None:
    out = tmp_path / "sessions.csv"
    assert sessionize.write_sessions(session_table, str(out)) == "csv"
    back = pl.read_csv(out, infer_schema=False)
    assert back.columns == [c.name for c in sessionize.SESSION_COLUMNS]
    assert back["user_id"].to_list() == ["00042", "u2"]
    assert back["session_start"].to_list() == ["2024-05-01T10:00:00.123456Z", "2024-05-01T11:00:00.000000Z"]


def test_ndjson_output(tmp_path: Path, session_table: pl.DataFrame) -> None:
    out = tmp_path / "sessions.ndjson"
    assert sessionize.write_sessions(session_table, str(out)) == "ndjson"
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [list(r) for r in records] == [[c.name for c in sessionize.SESSION_COLUMNS]] * 2
    assert records[0]["user_id"] == "00042"
    assert records[0]["session_start"] == "2024-05-01T10:00:00.123456Z"
    assert records[0]["traffic_source"] == "google"


def test_format_overrides_the_extension(tmp_path: Path, session_table: pl.DataFrame) -> None:
    out = tmp_path / "sessions.dat"
    assert sessionize.write_sessions(session_table, str(out), format="parquet") == "parquet"
    assert_frame_equal(pl.read_parquet(out), session_table)


def test_unknown_output_extension_asks_for_format(tmp_path: Path, session_table: pl.DataFrame) -> None:
    with pytest.raises(sessionize.UsageError, match="--format"):
        sessionize.write_sessions(session_table, str(tmp_path / "sessions.xlsx"))
    assert listing(tmp_path) == ["in"]


def test_output_file_gets_the_usual_permissions(tmp_path: Path, session_table: pl.DataFrame) -> None:
    old = os.umask(0o022)
    try:
        sessionize.write_sessions(session_table, str(tmp_path / "sessions.parquet"))
    finally:
        os.umask(old)
    assert (tmp_path / "sessions.parquet").stat().st_mode & 0o777 == 0o644


@pytest.fixture
def failing_write(monkeypatch: pytest.MonkeyPatch) -> Callable[[BaseException], None]:
    """Make the writer put some bytes in the file and then fail with the given exception."""

    def arm(exc: BaseException) -> None:
        def write(frame: pl.DataFrame, handle: IO[bytes], fmt: str, **kwargs: object) -> None:
            handle.write(b"PAR1 half a file")
            raise exc

        monkeypatch.setattr(sio.publish, "serialize", write)

    return arm


def test_failed_write_keeps_the_old_output_and_leaves_no_temp_file(
    tmp_path: Path, session_table: pl.DataFrame, failing_write: Callable[[BaseException], None]
) -> None:
    out = tmp_path / "out" / "sessions.parquet"
    out.parent.mkdir()
    out.write_bytes(b"previous run")
    failing_write(OSError(errno.ENOSPC, "No space left on device"))

    with pytest.raises(sessionize.OutputError, match="No space left on device") as caught:
        sessionize.write_sessions(session_table, str(out))

    assert str(out) in str(caught.value)
    assert out.read_bytes() == b"previous run"
    assert listing(out.parent) == ["sessions.parquet"]


def test_interrupted_write_leaves_no_file(
    tmp_path: Path, session_table: pl.DataFrame, failing_write: Callable[[BaseException], None]
) -> None:
    out = tmp_path / "out" / "sessions.csv"
    out.parent.mkdir()
    failing_write(KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        sessionize.write_sessions(session_table, str(out))
    assert listing(out.parent) == []


def test_output_over_an_input_is_refused(tmp_path: Path) -> None:
    source = write_text(tmp_path / "data" / "events.csv", "user_id,timestamp\nu,2024-05-01T10:00:00Z\n")
    inputs = sessionize.resolve_inputs([tmp_path / "data"])
    for spelling in (str(source), str(tmp_path / "data" / ".." / "data" / "events.csv")):
        with pytest.raises(sessionize.OutputError, match="also an input"):
            sio.check_output(spelling, inputs)
    sio.check_output(str(tmp_path / "data" / "sessions.csv"), inputs)


def test_output_into_a_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(sessionize.OutputError, match="does not exist"):
        sio.check_output(str(tmp_path / "nope" / "sessions.parquet"), [])


def test_stdin_in_other_formats(monkeypatch: pytest.MonkeyPatch) -> None:
    frame = pl.DataFrame({"user_id": ["a"], "timestamp": ["2024-05-01T10:00:00Z"]})
    parquet = io.BytesIO()
    frame.write_parquet(parquet)
    for fmt, data in (
        ("ndjson", b'{"user_id": "a", "timestamp": "2024-05-01T10:00:00Z"}\n'),
        ("parquet", parquet.getvalue()),
    ):
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data)))
        events = sessionize.read_events(["-"], input_format=fmt)
        assert events["user_id"].to_list() == ["a"], fmt


def test_empty_ndjson_holds_no_events(tmp_path: Path) -> None:
    empty = write_text(tmp_path / "empty.ndjson", "")
    assert read_one(empty).height == 0


def test_a_raw_segment_export_with_nested_objects(tmp_path: Path) -> None:
    # Segment's raw JSON: page calls have type=page and no event name, track calls an event name;
    # the page URL, referrer, IP and user agent sit in nested objects; messageId identifies events.
    lines = [
        {
            "type": "page",
            "anonymousId": "a1",
            "messageId": "m1",
            "timestamp": "2024-05-01T10:00:00Z",
            "context": {
                "ip": "81.2.69.160",
                "page": {"url": "https://s.example/", "referrer": "https://www.google.com/"},
                "userAgent": "curl/8.5.0",
            },
        },
        {
            "type": "track",
            "event": "Order Completed",
            "anonymousId": "a1",
            "messageId": "m2",
            "timestamp": "2024-05-01T10:05:00Z",
            "context": {"page": {"url": "https://s.example/checkout"}},
        },
        {
            "type": "page",
            "anonymousId": "a1",
            "messageId": "m2",
            "timestamp": "2024-05-01T10:05:00Z",
            "context": {"page": {"url": "https://s.example/dup"}},
        },
    ]
    path = write_text(tmp_path / "segment.ndjson", "\n".join(json.dumps(line) for line in lines) + "\n")
    events = read_one(path)
    assert events["event"].to_list() == ["page", "Order Completed"]  # m2's copy is a duplicate
    assert events["is_pageview"].to_list() == [True, False]
    assert events["url"].to_list() == ["https://s.example/", "https://s.example/checkout"]
    assert events.select("user_id", "referrer", "ip", "user_agent").row(0) == (
        "a1",
        "https://www.google.com/",
        "81.2.69.160",
        "curl/8.5.0",
    )


def _timestamp_shapes(count: int, seed: int) -> list[str | None]:
    """ISO 8601-like texts with every part sometimes out of range or in another shape."""
    rng = random.Random(seed)
    shapes: list[str | None] = []
    for _ in range(count):
        year = rng.choice([1969, 2000, 2024, 2026, 9999])
        month, day, hour = rng.randint(0, 13), rng.randint(0, 32), rng.randint(0, 25)
        minute, second = rng.randint(0, 60), rng.randint(0, 61)
        fraction = rng.choice(["", ".5", ".123", ".123456", ".1234567", ".123456789", ".", ".12a", ".12345a"])
        separator = rng.choice(["T", " ", "t", "  "])
        zone = rng.choice(["Z", "z", "", "+02:00", "+0200", " UTC", "-05", " +01:00", "Zx"])
        pad = rng.choice(["", " ", "\t"])
        shapes.append(
            f"{pad}{year:04d}-{month:02d}-{day:02d}{separator}{hour:02d}:{minute:02d}:{second:02d}"
            f"{fraction}{zone}{pad}"
        )
    # Epoch numbers, a date, minutes only, empty and null, and local times in DST gaps and overlaps.
    shapes += ["1700000000", "1700000000123", "1700000000.5", "2026-10-15", "2026-10-15T10:05", "", None]
    shapes += ["garbage", "2024-03-31 02:30:00", "2024-10-27 02:30:00", "2024-11-03 01:30:00"]
    return shapes


#: Offsets, out of range ones, and signs where the digits go (review 46: "+5" is a number to a cast).
_OFFSETS = ("+02:00", "-05:30", "+0200", "-0530", "+02", "-11", "+23:59", "+24:00", "+02:60", "++5:00",
            "+05:+5", "+05+5", "++5", "--5", "+-5:00", "+ 5:00", "+05:-5", "+\u0660\u0662:00", "-00:00",
            "+2:00", "+02:0")  # fmt: skip


def _fixed_width_shapes(count: int, seed: int) -> list[str]:
    """Texts in the exact shapes parsed by a fixed-width format (``...:SSZ``, ``...:SS.fffZ``, the naive
    ``YYYY-MM-DD HH:MM:SS.ffffff``, ...), with impossible dates, hour 24, second 60 and stray characters."""
    rng = random.Random(seed)
    shapes = []
    for _ in range(count):
        month, day, hour = (
            rng.choice([2, 6, 12, 0, 13]),
            rng.choice([1, 28, 29, 30, 31, 32]),
            rng.choice([0, 23, 24]),
        )
        second = rng.choice([0, 59, 60, 61])
        fraction = rng.choice(["", "." + "7" * 3, "." + "5" * 6, "." + "9" * 9])
        year = rng.choice([1969, 2023, 2024, 9999])
        text = f"{year}-{month:02d}-{day:02d}T{hour:02d}:30:{second:02d}{fraction}Z"
        draw = rng.random()
        if draw < 0.3:
            text = text.replace("T", " ").removesuffix("Z")
        elif draw < 0.45:  # naive with a T
            text = text.removesuffix("Z")
        elif draw < 0.75:  # an offset (sometimes out of range), after a T or a space
            offset = rng.choice(_OFFSETS)
            text = text.removesuffix("Z").replace("T", rng.choice("T ")) + offset
        if rng.random() < 0.1:  # the right length, not the shape
            at = rng.randrange(len(text))
            text = text[:at] + rng.choice("x+ -:.") + text[at + 1 :]
        shapes.append(text)
    return shapes


#: What chrono takes in a field and the general parsers may not: a sign, a space or tab before it, no-break
#: and ideographic spaces, digits of other scripts (Arabic-Indic, fullwidth).
_LENIENT_FILLS = ("+", "-", " ", "\t", "  ", "\u00a0", "\u3000", "\u0660", "\uff11", "")


def _lenient_shapes(count: int, seed: int) -> list[str]:
    """The common shapes (naive SQL, `Z`, naive `T`, with an offset) mutated where chrono is lenient and
    the general parsers are not: a sign before the year, a field one digit short (its width kept by a
    space, a sign or a longer year, or not), spaces and other scripts' digits, years 0, 10000 and more,
    another separator, trailing junk, fractions of 1 to 12 digits."""
    rng = random.Random(seed)
    shapes = []
    for _ in range(count):
        year = rng.choice(["2024", "0000", "0001", "9999", "10000", "+10000", "024", "24", "+2024", "-2024"])
        fields = [f"{rng.choice([1, 5, 12]):02d}", f"{rng.choice([1, 9, 28, 31]):02d}", "10", "05", "09"]
        for _ in range(rng.choice([0, 1, 1, 2])):
            at = rng.randrange(len(fields))
            fill = rng.choice(_LENIENT_FILLS)
            fields[at] = rng.choice([fill + fields[at][1:], fill + fields[at], fields[at][1:]])
        separator = rng.choice([" ", " ", " ", "T", "\t", "  ", "", "\u00a0"])
        fraction = rng.choice(["", ".", ".5", ".12", ".123", ".1234", ".123456", ".1234567", ".123456789",
                               ".123456789012"])  # fmt: skip
        zone = rng.choice(["", "", "", "Z", "+02:00", " +02", "x", " ", "Z ", "\t"])
        month, day, hour, minute, second = fields
        shapes.append(f"{year}-{month}-{day}{separator}{hour}:{minute}:{second}{fraction}{zone}")
    return shapes


@pytest.mark.parametrize("t_step", [True, False], ids=["t-shapes-step", "no-t-shapes-step"])
@pytest.mark.parametrize("timezone", ["UTC", "Europe/Paris", "America/New_York"])
@pytest.mark.parametrize("time_unit", [None, "ms"])
def test_timestamp_fast_path_parses_as_the_general_rewrite(
    timezone: str, time_unit: TimeUnit | None, t_step: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The common shapes are parsed first as they are; every value must come out as the general path
    (rewrite to one ISO shape, then the parsers) gives it, valid or not. With the step of the `T` and
    offset shapes in the plan (what a column's sample decides) and without it."""
    from sessionize import normalize

    monkeypatch.setattr(normalize, "_has_t_shapes", lambda events, column: t_step)
    shapes = [*_timestamp_shapes(20_000, seed=3), *_fixed_width_shapes(4_000, seed=4)]
    shapes += _lenient_shapes(6_000, seed=5)
    text = pl.Series("t", shapes, dtype=pl.String)
    fast = parse_timestamp_series(text, time_unit=time_unit, timezone=timezone)
    rewritten = pl.select(timestamp_text(pl.lit(text))).to_series()
    general = pl.select(parse_timestamp_text(pl.lit(rewritten), time_unit=time_unit, timezone=timezone))
    frame = pl.DataFrame({"text": text, "fast": fast, "general": general.to_series()})
    assert frame.filter(pl.col("fast").ne_missing(pl.col("general"))).height == 0
    # Not vacuous: thousands parse, in the fast shapes and in the others.
    assert frame.get_column("fast").drop_nulls().len() > 5_000
    assert frame.filter(pl.col("text").str.ends_with("Z"), pl.col("fast").is_not_null()).height > 200
    assert frame.filter(pl.col("text").str.contains(r"\+02:?00$"), pl.col("fast").is_not_null()).height > 50
    # Each fixed-width shape (parsed by its own format, by the text's length) and their near misses.
    for fraction in (r"", r"\.\d{3}", r"\.\d{6}", r"\.\d{9}"):
        for shape in (
            rf"^\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d{fraction}Z$",
            rf"^\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d{fraction}$",
            rf"^\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d{fraction}$",
            rf"^\d{{4}}-\d\d-\d\d[T ]\d\d:\d\d:\d\d{fraction}[+-]\d\d:\d\d$",
            rf"^\d{{4}}-\d\d-\d\d[T ]\d\d:\d\d:\d\d{fraction}[+-]\d\d(?:\d\d)?$",
        ):
            fixed = frame.filter(pl.col("text").str.contains(shape))
            assert fixed.get_column("fast").drop_nulls().len() > 20, shape
            assert fixed.get_column("fast").null_count() > 20, shape
    # The mutations where chrono is lenient: many still parse (a space before a time field, a year 0),
    # many are bad timestamps.
    lenient = frame.tail(6_000).get_column("fast")
    assert lenient.drop_nulls().len() > 500
    assert lenient.null_count() > 2_000


def test_t_shapes_after_the_sample_are_parsed_by_the_general_parsers(monkeypatch: pytest.MonkeyPatch) -> None:
    """ISO 8601 with a `T` and no `Z` has its own parsers only when the column's first values show it
    (a file of `Z` times does not pay for them); such a value further on is parsed all the same."""
    from sessionize import normalize

    monkeypatch.setattr(normalize, "T_SHAPE_SAMPLE", 2)
    monkeypatch.setattr(normalize, "T_SHAPE_MIN", 1)
    later = ["2024-05-01T12:00:00+02:00", "2024-05-01T10:00:00.250", "2024-05-01T10:00:00-05:30"]
    for head in (["2024-05-01T10:00:00Z"] * 2, ["2024-05-01T12:00:00+02:00"] * 2):
        text = pl.Series("t", head + later)
        parsed = parse_timestamp_series(text, time_unit=None, timezone="UTC")
        assert parsed.dt.to_string("%Y-%m-%dT%H:%M:%S%.6f").to_list()[2:] == [
            "2024-05-01T10:00:00.000000",
            "2024-05-01T10:00:00.250000",
            "2024-05-01T15:30:00.000000",
        ]


@pytest.mark.parametrize(
    "text",
    [
        "2024-05-01  1:00:00+02",
        "2024-05-01T\t1:00:00+02",
        "2024-03-31  02:59:5+00",
        "+2024-05-1 10:00:00+02:00",
        "-2024-05-1 10:00:00+02:00",
        "+2024-5-01 10:00:00+02",
        "\t979-04-03 02:59:00.000-1000",
        # And the naive SQL shape, by its fixed-width formats (Polars asks chrono when its own parse
        # fails) and by its format of any fraction (chrono's own).
        "+2024-05-01 10:00:00",
        "-2024-05-01 10:00:00",
        "+024-05-01 10:00:00",
        "+10000-05-01 10:00:00",
        "2024-5-01 10:00:00",
        "2024-05-1 10:00:00",
        "024-05-01 10:00:00",
        "24-05-01 10:00:00",
        " 24-05-01 10:00:00",
        "2024- 5-01 10:00:00",
        "2024-05-\t1 10:00:00",
        "2024-05-1  10:00:00",
        "+2024-05-1 10:00:00",
        "2024-05-01\t10:00:00",
        "2024-05-01\u00a010:00:00",
        "2024-05-01\u300010:00:00",
        "2024-05-0110:00:00.12",
        "2024-05-1 10:00:00.123456",
        "+2024-05-01 10:00:00.123456789",
        "2024-5-01 10:00:00.1234",
    ],
)
def test_the_fast_shapes_take_only_their_exact_shape(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review 48: the date and time before an offset were checked by their length only, and Polars asks
    chrono when its fixed-width parse fails, which takes a sign before the year, one-digit fields and
    spaces before them: these parsed (year -2024 crashed an incremental run) where the general parsers
    give null. So did the naive SQL shape's (and any whitespace for its space). They stay null
    (a bad timestamp), with or without the step in the plan."""
    from sessionize import normalize

    for t_step in (True, False):
        monkeypatch.setattr(normalize, "_has_t_shapes", lambda events, column, on=t_step: on)
        parsed = parse_timestamp_series(
            pl.Series("t", [text, "2024-05-01T10:00:00+02:00"]), time_unit=None, timezone="UTC"
        )
        assert parsed.to_list()[0] is None
        assert parsed.dt.to_string("%Y-%m-%dT%H:%M:%S").to_list()[1] == "2024-05-01T08:00:00"


@pytest.mark.slow
@pytest.mark.parametrize("suffix", ["csv", "parquet", "ndjson"])
def test_a_large_file_is_read_in_its_order(tmp_path: Path, suffix: str) -> None:
    # Reading is spread over threads a morsel at a time: the events still come out in the file's order
    # (same-instant events of a user are taken in input order, so the order is part of the result).
    n = 300_000
    rng = random.Random(3)
    frame = pl.DataFrame(
        {
            "user_id": [f"u{rng.randrange(1000)}" for _ in range(n)],
            "timestamp": [f"2024-05-{1 + i % 28:02d}T{rng.randrange(24):02d}:00:00Z" for i in range(n)],
            "url": [f"/p{i}" for i in range(n)],
        }
    )
    path = tmp_path / f"events.{suffix}"
    writers: dict[str, Callable[[Path], object]] = {
        "csv": frame.write_csv,
        "parquet": frame.write_parquet,
        "ndjson": frame.write_ndjson,
    }
    writers[suffix](path)
    source = sio.resolve_inputs([path])[0]
    options = sio.ReadOptions(valid_until=datetime(2030, 1, 1, tzinfo=UTC))
    events = sio.read_file(source, options, keep_row=True).events
    assert events.get_column("_row").to_list() == list(range(n))
    assert events.get_column("url").to_list() == frame.get_column("url").to_list()


def test_whole_float_ids_read_as_integers(tmp_path: Path) -> None:
    """JSON's 7.0 is the number 7: a file with 42 on one line and 7.0 on another is read as floats,
    and user 42 became "42.0", a user no other file (or the warehouse) calls so. A pandas integer
    column with gaps (float64 in Parquet) likewise; a fraction stays, NaN is no id, and a client
    session id of -1.0 is Amplitude's -1 (--session-id-nulls)."""
    path = write_text(
        tmp_path / "ids.ndjson",
        '{"user_id": 42, "session_id": 5, "timestamp": "2024-05-01T10:00:00Z"}\n'
        '{"user_id": 7.0, "session_id": -1.0, "timestamp": "2024-05-01T10:00:00Z"}\n'
        '{"user_id": 7.5, "session_id": 1.5, "timestamp": "2024-05-01T10:00:00Z"}\n',
    )
    events = read_one(path, session_id_nulls="-1")
    assert events["user_id"].to_list() == ["42", "7", "7.5"]
    assert events["client_session_id"].to_list() == ["5", None, "1.5"]
    parquet = tmp_path / "ids.parquet"
    pl.DataFrame(
        {"user_id": [42.0, float("nan"), 3.0], "timestamp": ["2024-05-01T10:00:00Z"] * 3}
    ).write_parquet(parquet)
    result = sessionize.run([parquet], output=str(tmp_path / "o.csv"), no_geo=True, on_invalid="skip")
    assert result.rejected == 1
    assert sorted(pl.read_csv(tmp_path / "o.csv", infer_schema=False)["user_id"].to_list()) == ["3", "42"]


def test_float_and_decimal_ids_at_their_edges(tmp_path: Path) -> None:
    """Infinities were the users "inf" and "-inf" while NaN was no id; a whole float beyond 2**53 was
    written as digits it never held (9007199254740993 read as 9007199254740992); a whole decimal
    (BigQuery's NUMERIC) stayed "42.000000000" (review of stop 37, item 8)."""
    parquet = tmp_path / "ids.parquet"
    pl.DataFrame(
        {
            "user_id": [float("inf"), float("-inf"), 9007199254740993.0, 2.0**52, 5.0],
            "session_id": pl.Series(
                [Decimal("42.000000000"), Decimal("42.500000000"), None, Decimal("-3.000000000"), None],
                dtype=pl.Decimal(38, 9),
            ),
            "timestamp": ["2024-05-01T10:00:00Z"] * 5,
        }
    ).write_parquet(parquet)
    source = sio.resolve_inputs([parquet])[0]
    read = sio.read_file(source, sio.ReadOptions(on_invalid="skip"))
    assert read.rejects is not None and read.rejects.height == 2  # the infinities: no user id
    assert read.events["user_id"].to_list() == ["9007199254740992.0", "4503599627370496", "5"]
    assert read.events["client_session_id"].to_list() == [None, "-3", None]


def test_aligned_chunks_cuts_every_column_as_most_columns_are_cut(tmp_path: Path) -> None:
    # The streaming read gives the columns it computes one chunk per morsel, a constant column one
    # chunk and the row numbers their own chunks: eager operations would copy them all into one layout.
    n = 250_000
    path = write_text(
        tmp_path / "events.csv",
        "user_id,timestamp,url\n"
        + "".join(f"u{i % 977},2024-05-01T10:{i % 60:02d}:00Z,/p{i}\n" for i in range(n)),
    )
    source = sio.resolve_inputs([path])[0]
    scan, _ = sio.read._scan(source, sio.ReadOptions())
    frame = scan.with_columns(pl.lit(None, pl.String).alias("user_agent")).collect(engine="streaming")
    text = frame.get_column("user_id")
    # One column cut in other places, as the read's row numbers are.
    frame = frame.with_columns(
        pl.concat([text.slice(0, 1000), text.slice(1000)], rechunk=False).alias("other")
    )

    def layout(table: pl.DataFrame, name: str) -> list[int]:
        return [len(chunk) for chunk in table.get_column(name).get_chunks()]

    aligned = sio.read.aligned_chunks(frame)
    assert_frame_equal(aligned, frame)
    most = layout(frame, "url")
    assert len(most) > 1  # not vacuous: the file was read in several morsels
    assert {tuple(layout(frame, name)) for name in frame.columns} != {tuple(most)}
    # Every column with a value is cut alike; the column of nulls only is left as it is (rebuilt, it
    # would hold 16 bytes a row where it held none).
    assert all(layout(aligned, name) == most for name in aligned.columns if name != "user_agent")
    assert layout(aligned, "user_agent") == layout(frame, "user_agent") == [n]
    # Already aligned: the same frame back.
    assert sio.read.aligned_chunks(aligned) is aligned


# --- ids stored as bytes (review 44) ----------------------------------------------------------------


@pytest.mark.parametrize("buckets", [None, 2])
def test_uuid_and_binary_ids_in_parquet_are_read_as_text(tmp_path: Path, buckets: int | None) -> None:
    """A UUID user or event id (Parquet's UUID type, Spark's and Trino's fixed_size_binary(16)) made the
    file "not a readable Parquet file (invalid utf8)"; strings written as plain binary are text."""
    import uuid

    import pyarrow as pa  # type: ignore[import-untyped]
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    # Random bytes, and bytes that are valid UTF-8 but for NULs.
    users = [uuid.UUID("0f8fad5b-d9cb-469f-a165-70867728950e"), uuid.UUID(int=(7 << 100) + 1), uuid.uuid4()]
    table = pa.table(
        {
            "user_id": pa.array([users[n % 3].bytes for n in range(6)], pa.binary(16)),
            "timestamp": pa.array(
                [datetime(2024, 5, 1, 10, n, tzinfo=UTC) for n in range(6)], pa.timestamp("us", "UTC")
            ),
            "event_id": pa.array([uuid.UUID(int=n).bytes for n in range(6)], pa.uuid()),
            "url": pa.array([f"/p{n}".encode() for n in range(6)], pa.binary()),
        }
    )
    path = tmp_path / "uuids.parquet"
    pq.write_table(table, path)
    result = sessionize.run([path], no_geo=True, buckets=buckets, dedupe=True)
    landing = dict(result.sessions.select("user_id", "landing_page").rows())
    assert landing == {str(user): f"/p{n}" for n, user in enumerate(users)}
    # The frame API reads them alike (review 45: "invalid utf8").
    framed = sessionize.sessionize(pl.read_parquet(path), no_geo=True, dedupe=True).collect()
    assert dict(framed.select("user_id", "landing_page").rows()) == landing
    assert result.events_read == 6 and result.duplicates_removed == 0


@pytest.mark.parametrize("how", ["file", "buckets", "stdin"])
def test_a_uuid_whose_bytes_are_text_is_still_a_uuid(tmp_path: Path, how: str) -> None:
    """A UUID column (Parquet's UUID type, or 16 fixed bytes) whose UUID's 16 bytes happen to be UTF-8
    (``30313233-...``: the bytes ``0123456789abcdef``, one random UUID in some 65,000 is all ASCII) was
    read as those bytes' text, not the UUID's: the id no longer joined the other sources' (review of
    stop 51). The column's type says it is a UUID."""
    import uuid

    import pyarrow as pa
    import pyarrow.parquet as pq

    users = [
        uuid.UUID("30313233-3435-3637-3839-616263646566"),
        uuid.UUID("0f8fad5b-d9cb-469f-a165-70867728950e"),
    ]
    times = [datetime(2024, 5, 1, 10, n, tzinfo=UTC) for n in range(4)]
    table = pa.table(
        {
            "user_id": pa.array([users[n % 2].bytes for n in range(4)], pa.binary(16)),
            "timestamp": pa.array(times, pa.timestamp("us", "UTC")),
            "session_id": pa.array([users[n % 2].bytes for n in range(4)], pa.uuid()),
        }
    )
    path = tmp_path / "uuids.parquet"
    pq.write_table(table, path)
    if how == "stdin":
        out = tmp_path / "sessions.csv"
        done = subprocess.run(
            [sys.executable, "-m", "sessionize", "run", "-", "--input-format", "parquet", "--no-geo", "-q",
             "-o", str(out)],
            input=path.read_bytes(), capture_output=True, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        sessions = pl.read_csv(out, infer_schema=False)
    else:
        sessions = sessionize.run([path], no_geo=True, buckets=2 if how == "buckets" else None).sessions
    assert sorted(sessions.select("user_id", "session_id").rows()) == sorted((str(u), str(u)) for u in users)


def _offset_zone_parquet(path: Path) -> Path:
    """Times of a fixed-offset zone, as pandas and pyarrow write offset-aware times: the role's column,
    another column and a struct's field, each in a zone Polars has no name for."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    india = timezone(timedelta(hours=5, minutes=30))
    # a's third event, 31 minutes after the second, starts a session
    times = [datetime(2024, 5, 1, 10, 0, tzinfo=india) + timedelta(minutes=m) for m in (0, 29, 60, 0)]
    table = pa.table(
        {
            "user_id": ["a", "a", "a", "b"],
            "timestamp": pa.array(times, pa.timestamp("us", "+05:30")),
            "received_at": pa.array(times, pa.timestamp("ms", "-08:00")),
            "context": pa.array(
                [{"sent": t, "page": f"/p{n}"} for n, t in enumerate(times)],
                pa.struct([("sent", pa.timestamp("ns", "+05:30")), ("page", pa.string())]),
            ),
        }
    )
    pq.write_table(table, path)
    return path


@pytest.mark.parametrize("path", EVERY_PATH_AND_SPARK)
def test_a_parquet_time_in_a_fixed_offset_zone_is_read_as_its_instant(
    tmp_path: Path, path: dict[str, Any], request: pytest.FixtureRequest
) -> None:
    """A Parquet timestamp whose zone is a fixed offset (``timestamp[us, tz=+05:30]``: what pandas writes
    for any offset-aware column) made Polars panic ("unable to parse time zone: '+05:30'") in every
    engine, with a traceback and exit 1 (review of stop 52). Such times are instants like any other."""
    source = _offset_zone_parquet(tmp_path / "offset.parquet")
    options = any_path_options(path, tmp_path, request)
    result = sessionize.run([source], no_geo=True, url_col="context.page", **options)
    sessions = path_sessions(result, options)
    assert session_rows_of(sessions) == [
        ("a", datetime(2024, 5, 1, 4, 30, tzinfo=UTC), 2, "/p0"),
        ("a", datetime(2024, 5, 1, 5, 30, tzinfo=UTC), 1, "/p2"),
        ("b", datetime(2024, 5, 1, 4, 30, tzinfo=UTC), 1, "/p3"),
    ]


def test_a_fixed_offset_zone_file_is_read_a_window_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read in windows (the bucketed path, Dask's partitions), such a file was read whole by pyarrow for
    each window and then sliced: time and memory grew with the square of its size, over --memory-limit
    (review of this stop's diff). A window reads the row groups it overlaps, and its rows are the file's."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    india = timezone(timedelta(hours=5, minutes=30))
    n = 1_000
    start = datetime(2024, 5, 1, 10, 0, tzinfo=india)
    table = pa.table(
        {
            "user_id": [f"u{i % 37}" for i in range(n)],
            "timestamp": pa.array(
                [start + timedelta(minutes=i) for i in range(n)], pa.timestamp("us", "+05:30")
            ),
            "url": [f"/p{i}" for i in range(n)],
        }
    )
    path = tmp_path / "offset.parquet"
    pq.write_table(table, path, row_group_size=100)
    source = sio.resolve_inputs([path])[0]
    whole = sio.read.read_file(source, sio.ReadOptions(), keep_row=True).events
    read_groups: list[int] = []
    whole_reads: list[Any] = []
    original_groups, original_table = pq.ParquetFile.read_row_groups, pq.read_table

    def counted(self: Any, groups: Any, *args: Any, **kwargs: Any) -> Any:
        read_groups.extend(groups)
        return original_groups(self, groups, *args, **kwargs)

    def counted_whole(*args: Any, **kwargs: Any) -> Any:
        whole_reads.append(args)
        return original_table(*args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "read_row_groups", counted)
    monkeypatch.setattr(pq, "read_table", counted_whole)
    reads = list(sio.read.iter_reads(source, sio.ReadOptions(), chunk_rows=150))
    assert len(reads) == 7
    # Each window its one or two row groups, never the whole file.
    assert whole_reads == [] and 0 < len(read_groups) <= 14
    windows = pl.concat([read.events for read in reads])
    assert windows.drop("_row", strict=False).equals(whole.drop("_row", strict=False))
    budget = sessionize.run([path], no_geo=True, memory_limit="2M", temp_dir=str(tmp_path))
    assert budget.sessions.sort("user_id", "session_start").equals(
        sessionize.run([path], no_geo=True).sessions.sort("user_id", "session_start")
    )


def session_rows_of(sessions: pl.DataFrame) -> list[tuple[Any, ...]]:
    return (
        sessions.sort("user_id", "session_start")
        .select("user_id", "session_start", "event_count", "landing_page")
        .cast({"event_count": pl.Int64})
        .rows()
    )


def test_a_parquet_time_in_a_fixed_offset_zone_on_standard_input(tmp_path: Path) -> None:
    source = _offset_zone_parquet(tmp_path / "offset.parquet")
    out = tmp_path / "sessions.parquet"
    done = subprocess.run(
        [sys.executable, "-m", "sessionize", "run", "-", "--input-format", "parquet", "--no-geo", "-q",
         "--url-col", "context.page", "-o", str(out)],
        input=source.read_bytes(), capture_output=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert session_rows_of(pl.read_parquet(out))[1] == (
        "a",
        datetime(2024, 5, 1, 5, 30, tzinfo=UTC),
        1,
        "/p2",
    )


@given(st.binary(max_size=12))
@settings(max_examples=400, deadline=None)
def test_bytes_are_text_exactly_when_python_decodes_them(data: bytes) -> None:
    frame = pl.LazyFrame({"b": pl.Series([data], dtype=pl.Binary)})
    text = sio.read.binary_as_text(frame).collect().item()
    try:
        expected = data.decode("utf-8")
    except UnicodeDecodeError:
        expected = data.hex()
    if any((c < " " and c not in "\t\n\r") or c == "\x7f" for c in expected):
        expected = data.hex()
    assert text == expected


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["2024-05-01T10:00:00.123456Z"] * 2_000, False),
        (["2024-05-01T12:00:00.123456+02:00"] * 2_000, True),
        (["2024-05-01T10:00:00.123456"] * 2_000, True),
        (["2024-05-01 10:00:00+00"] * 2_000, True),
        # SQL's naive shape has its own formats; a few offsets among them do not pay for the step.
        (["2024-05-01 10:00:00"] * 9_001 + ["2024-05-01 10:00:00+02"] * 1_000, False),
        (["2024-05-01 10:00:00"] * 8_000 + ["2024-05-01 10:00:00+02"] * 1_000 + [None] * 1_000, True),
        # Too few to pay for it.
        (["2024-05-01T12:00:00+02:00"] * 999, False),
    ],
)
def test_the_t_step_is_in_the_plan_when_the_sample_shows_its_shapes(
    values: list[str | None], expected: bool
) -> None:
    """The gate of the `T` shapes' step: at least T_SHAPE_MIN and a tenth of the sample's set values."""
    from sessionize import normalize

    assert normalize._has_t_shapes(pl.LazyFrame({"t": values}), "t") is expected


@pytest.mark.parametrize("how", ["frame", "file"])
@pytest.mark.parametrize("kind", ["list", "array"])
def test_a_column_of_lists_for_a_role_is_named_as_such(tmp_path: Path, how: str, kind: str) -> None:
    """A user id column of lists failed with Polars' "cannot cast List type": a Polars error from the
    frame API (whose errors are SessionizeErrors), "not a readable Parquet file" from the CLI, of a file
    that reads (review of stop 51). The error names the column, its type and the flag."""
    dtype = pl.List(pl.String) if kind == "list" else pl.Array(pl.String, 1)
    frame = pl.DataFrame(
        {
            "user_id": pl.Series([["a"], ["b"]], dtype=dtype),
            "timestamp": [datetime(2024, 5, 1, 10), datetime(2024, 5, 1, 11)],
        }
    )
    expected = r"column 'user_id' \(--user-col\) holds (List|Array)\(String.*not one value per event"
    if how == "frame":
        with pytest.raises(sessionize.SessionizeError, match=expected):
            sessionize.sessionize(frame, no_geo=True).collect()
        return
    path = tmp_path / "lists.parquet"
    frame.write_parquet(path)
    with pytest.raises(sessionize.SessionizeError, match=expected) as raised:
        sessionize.run([path], no_geo=True)
    assert "lists.parquet" in str(raised.value) and "not a readable" not in str(raised.value)
