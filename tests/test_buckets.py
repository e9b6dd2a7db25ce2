"""The bounded-memory path: users spilled into hash buckets, inputs read a window of rows at a time.

Every test compares the bucketed path with the in-memory one on real files on disk: the session
table, the written outputs (Parquet, CSV, NDJSON), the rejected rows and the counts must be the same,
and the temporary bucket files must be gone afterwards, whether the run succeeds or fails.
"""

from __future__ import annotations

import errno
import functools
import gc
import gzip
import json
import math
import random
import re
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal
from typer.testing import CliRunner, Result

import sessionize
from sessionize import geo, partition, pipeline
from sessionize import io as sio
from sessionize import report as report_module
from sessionize.cli import app
from sessionize.engines import budget as buckets_module
from sessionize.errors import SessionizeWarning, UsageError
from sessionize.io.write import serialize
from tests import helpers
from tests.helpers import (
    APACHE_LOG,
    CITY_DB,
    COLUMN_NAMES,
    DATA,
    KEYS,
    SAMPLE_DATA,
    T0,
    flat,
    listing,
    load_generator,
)

SECRET_VAR = "SESSIONIZE_BUCKETS_TEST_SECRET"

#: The figures of a run that must not depend on the path taken.
FIGURES = (
    "files",
    "rows_read",
    "events_read",
    "rejected",
    "duplicates_removed",
    "session_count",
    "user_count",
    "bot_sessions",
    "bot_sessions_excluded",
    "bot_events_excluded",
    "geo_counts",
)

USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "curl/8.5.0",
)


# --- helpers ---------------------------------------------------------------------------------------


def run_cli(*args: str | Path, input: str | bytes | None = None) -> Result:
    """``sessionize run ARGS`` (see ``helpers.run_cli``) on a terminal 200 columns wide."""
    return helpers.run_cli(*args, input=input, columns=200)


def assert_same_sessions(expected: pl.DataFrame, actual: pl.DataFrame) -> None:
    assert actual.columns == expected.columns
    assert actual.height == expected.height
    # Bucketed output is sorted by user within each bucket, not globally: compare in one order.
    assert_frame_equal(actual.sort(KEYS), expected.sort(KEYS))


def assert_same_figures(expected: sessionize.RunResult, actual: sessionize.RunResult) -> None:
    for name in FIGURES:
        assert getattr(actual, name) == getattr(expected, name), name
    for name in ("median_duration_s", "mean_duration_s"):
        assert getattr(actual, name) == pytest.approx(getattr(expected, name), rel=1e-12), name
    for result in (expected, actual):
        assert result.rows_read == result.events_read + result.rejected + result.duplicates_removed


def assert_grouped_by_user(table: pl.DataFrame) -> None:
    """Each user's sessions are together and in session order (sorted by user within a bucket)."""
    users = table.get_column("user_id")
    starts = users.ne_missing(users.shift(1)).fill_null(True)
    assert int(starts.sum()) == users.n_unique()
    numbers = table.get_column("session_number").cast(pl.Int64).to_list()
    for previous, current, start in zip([0, *numbers[:-1]], numbers, starts.to_list(), strict=True):
        assert current == (1 if start else previous + 1)


def read_back(path: Path) -> pl.DataFrame:
    """An output file as a frame (text formats as strings, so nothing is lost in parsing)."""
    if path.suffix == ".parquet":
        return pl.read_parquet(path)
    if path.suffix == ".csv":
        return pl.read_csv(path, infer_schema=False)
    table = pl.read_ndjson(path, infer_schema_length=None)
    with path.open(encoding="utf-8") as handle:
        first = handle.readline()
    return table.select(list(json.loads(first))) if first else table  # the columns in the file's order


def assert_same_output(expected: Path, actual: Path) -> None:
    """Two outputs of one table hold the same rows; text outputs the same lines, byte for byte."""
    if expected.suffix == ".parquet":
        want, got = pl.read_parquet(expected), pl.read_parquet(actual)
        assert got.schema == want.schema
        assert_same_sessions(want, got)
        return
    want_lines = expected.read_bytes().splitlines()
    got_lines = actual.read_bytes().splitlines()
    if expected.suffix == ".csv":
        assert got_lines[:1] == want_lines[:1]  # the header, once
        want_lines, got_lines = want_lines[1:], got_lines[1:]
    assert len(got_lines) == len(want_lines)
    assert sorted(got_lines) == sorted(want_lines)


def clickstream(n_events: int, seed: int) -> pl.DataFrame:
    """bench/generate.py's clickstream plus event ids (some repeated later in the input), exact copies
    without an id, client session ids for some users and user agents (bots among them)."""
    events: pl.DataFrame = load_generator().generate(n_events, n_events // 10, n_events // 10, seed=seed)
    rng = np.random.default_rng(seed)
    number = pl.col("user_id").str.slice(1).cast(pl.Int64)
    events = events.with_columns(
        pl.format("e{}", pl.int_range(pl.len())).alias("event_id"),
        pl.lit(pl.Series(USER_AGENTS)).gather(number % len(USER_AGENTS)).alias("user_agent"),
        pl.when((number % 23 == 0) & (pl.col("event") != "page_view"))
        .then(pl.format("app-{}", number % 3))
        .alias("session_id"),
    )
    height = events.height
    # Repeats of an event id, later in the input and a second earlier: the first in input order wins.
    repeated = events.gather(rng.choice(height, size=height // 50, replace=False)).with_columns(
        pl.col("timestamp") - timedelta(seconds=1), pl.lit("https://shop.example.com/repeat").alias("url")
    )
    # Exact copies without an event id (kept, unless dedupe).
    copies = events.gather(rng.choice(height, size=height // 100, replace=False)).with_columns(
        pl.lit(None, pl.String).alias("event_id")
    )
    return pl.concat([events, repeated, copies, copies])


# --- datasets --------------------------------------------------------------------------------------


@dataclass
class Dataset:
    inputs: list[Path]
    #: Small enough that the planner picks many buckets for this input.
    memory_limit: str
    options: dict[str, Any] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)


DATASETS = ("sample", "clickstream", "apache", "multi")


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Dataset]:
    root = tmp_path_factory.mktemp("datasets")
    stream = clickstream(20_000, seed=7)
    stream.write_parquet(root / "clickstream.parquet")

    # One clickstream across three files of three formats; every user's events are spread out, and
    # some events of a user are at the same instant in different files (input order breaks the tie).
    other = clickstream(12_000, seed=11)
    ties = other.filter(
        pl.col("user_id").is_in(other.get_column("user_id").unique().sort().head(50).implode())
    )
    ties = ties.with_columns(
        pl.concat_str(pl.col("url"), pl.lit("?tie=1")).alias("url"), pl.lit(None).alias("event_id")
    )
    shuffled = pl.concat([other, ties]).sample(fraction=1.0, shuffle=True, seed=3).with_row_index("_n")
    parts = [shuffled.filter(pl.col("_n") % 3 == k).drop("_n") for k in range(3)]
    multi = root / "multi"
    multi.mkdir()
    parts[0].write_csv(multi / "part0.csv", datetime_format="%Y-%m-%dT%H:%M:%S%.6fZ")
    parts[1].write_parquet(multi / "part1.parquet")
    parts[2].with_columns(pl.col("timestamp").dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ")).write_ndjson(
        multi / "part2.ndjson"
    )
    users = [set(part.get_column("user_id").to_list()) for part in parts]
    assert len(users[0] & users[1] & users[2]) > 100  # users spread across the files
    return {
        "sample": Dataset(
            [SAMPLE_DATA / "events.csv"], "256K", {"geoip_db": CITY_DB}, ["--geoip-db", str(CITY_DB)]
        ),
        "clickstream": Dataset(
            [root / "clickstream.parquet"], "1500K", {"geoip_db": CITY_DB}, ["--geoip-db", str(CITY_DB)]
        ),
        "apache": Dataset(
            [APACHE_LOG],
            "512K",
            {"no_geo": True, "on_invalid": "skip", "internal_domains": "semicomplete.com"},
            ["--no-geo", "--on-invalid", "skip", "--internal-domains", "semicomplete.com"],
        ),
        "multi": Dataset(
            [multi / "part0.csv", multi / "part1.parquet", multi / "part2.ndjson"],
            "1M",
            {"no_geo": True},
            ["--no-geo"],
        ),
    }


@pytest.fixture(scope="module")
def in_memory(datasets: dict[str, Dataset]) -> dict[str, sessionize.RunResult]:
    """Each dataset through the in-memory path (the reference), computed once."""
    results = {}
    for name, data in datasets.items():
        results[name] = sessionize.run(data.inputs, buckets=1, **data.options)
        assert results[name].buckets == 1
    return results


# --- 1. identity -----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", DATASETS)
@pytest.mark.parametrize("how", ["buckets", "memory_limit"])
def test_buckets_give_the_in_memory_session_table(
    name: str, how: str, datasets: dict[str, Dataset], in_memory: dict[str, sessionize.RunResult]
) -> None:
    data = datasets[name]
    expected = in_memory[name]
    assert expected.sessions.width == len(sessionize.schema.SESSION_SCHEMA)
    assert expected.sessions.columns == COLUMN_NAMES
    assert expected.session_count > 500
    chosen: dict[str, Any] = {"buckets": 13} if how == "buckets" else {"memory_limit": data.memory_limit}
    actual = sessionize.run(data.inputs, **chosen, **data.options)
    if how == "buckets":
        assert actual.buckets == 13
    else:
        assert actual.buckets >= 8
    assert actual.path_taken == f"{actual.buckets} buckets"
    assert actual.sessions_complete
    assert_same_sessions(expected.sessions, actual.sessions)
    assert_same_figures(expected, actual)
    if expected.rejects is None:
        assert actual.rejects is None
    else:
        assert actual.rejects is not None
        assert_frame_equal(actual.rejects, expected.rejects)
    assert_grouped_by_user(actual.sessions)


@pytest.mark.slow
def test_the_datasets_exercise_what_buckets_must_keep(in_memory: dict[str, sessionize.RunResult]) -> None:
    """The inputs above are not trivial: they have duplicates, bots, client session ids, geo hits."""
    stream = in_memory["clickstream"]
    assert stream.duplicates_removed == 400  # one in 50 rows is repeated
    assert stream.bot_sessions > 100
    assert stream.geo_counts.get("not_found", 0) > 0
    assert in_memory["sample"].geo_counts.get("resolved", 0) > 0  # some IPs are in the test database
    assert in_memory["apache"].rejected == 1
    assert in_memory["multi"].duplicates_removed > 0
    assert len(in_memory["multi"].files) == 3


@pytest.mark.slow
@pytest.mark.parametrize("name", DATASETS)
@pytest.mark.parametrize("fmt", ["parquet", "csv", "ndjson"])
def test_bucketed_outputs_match_in_memory_outputs(
    name: str,
    fmt: str,
    datasets: dict[str, Dataset],
    in_memory: dict[str, sessionize.RunResult],
    tmp_path: Path,
) -> None:
    """``sessionize run --memory-limit SMALL -o FILE`` against the in-memory table written as the
    in-memory path writes it."""
    data = datasets[name]
    memory_out = tmp_path / f"memory.{fmt}"
    bucket_out = tmp_path / f"buckets.{fmt}"
    sessionize.write_sessions(in_memory[name].sessions, str(memory_out))
    result = run_cli(*data.inputs, *data.flags, "--memory-limit", data.memory_limit, "-o", bucket_out)
    assert result.exit_code == 0, result.stderr
    assert "bucketsofusers" in flat(result.stderr)
    assert f"sessions{in_memory[name].session_count:,}" in flat(result.stderr)
    assert_same_output(memory_out, bucket_out)
    table = read_back(bucket_out)
    assert table.columns == COLUMN_NAMES
    assert_grouped_by_user(table)
    assert listing(tmp_path) == sorted([memory_out.name, bucket_out.name])


# --- 2. windowed reading ---------------------------------------------------------------------------

HEADER = ["event_id", "user_id", "timestamp", "event", "url", "referrer", "ip", "user_agent"]


def nasty_rows(count: int, seed: int = 5) -> list[list[str]]:
    """Rows of text fields: commas and quotes inside fields, duplicates by id and exact copies, bots,
    bad timestamps and empty user ids."""
    rng = random.Random(seed)
    rows: list[list[str]] = []
    for i in range(count):
        user = f"u{rng.randrange(40):03d}"
        when = T0 + timedelta(seconds=rng.randrange(0, 2 * 24 * 3600))
        stamp = when.strftime("%Y-%m-%dT%H:%M:%S") + f".{rng.randrange(1000):03d}Z"
        page = rng.choice(["/", "/a", "/b?x=1,2", "/c/d", '/q?s="shoes"'])
        event = rng.choice(["page_view", "page_view", "click"])
        referrer = rng.choice(["", "https://www.google.com/", "https://t.co/x", "https://s.example/a"])
        agent = USER_AGENTS[int(user[1:]) % len(USER_AGENTS)]
        ip = rng.choice(["81.2.69.142", "2001:218::1", "-", "10.0.0.1"])
        row = [f"e{i}", user, stamp, event, f"https://s.example{page}", referrer, ip, agent]
        if i % 83 == 11:
            row[2] = "yesterday"
        if i % 89 == 13:
            row[1] = ""
        rows.append(row)
        if i % 50 == 7:  # the same event id again, later and different: dropped
            rows.insert(rng.randrange(len(rows) // 2, len(rows)), [*row[:4], row[4] + "#dup", *row[5:]])
        if i % 61 == 3:  # an exact copy without an id: dropped with dedupe only
            copy = ["", *row[1:]]
            rows[-1] = copy
            rows.append(list(copy))
    return rows


def csv_field(value: str) -> str:
    if any(ch in value for ch in ',"\n'):
        return '"' + value.replace('"', '""') + '"'
    return value


def write_nasty_csv(
    path: Path, rows: list[list[str]], *, extra: Collection[int] = (), short: Collection[int] = ()
) -> list[int]:
    """The rows as CSV, with blank lines (also several in a row, and at the end), and rows with a
    field too many (the indexes in ``extra``) or too few (``short``). Returns each row's line."""
    lines = [",".join(HEADER)]
    numbers: list[int] = []
    for i, row in enumerate(rows):
        if i % 37 == 5:
            lines.append("")
        if i % 151 == 9:
            lines.extend(["", ""])
        fields = [csv_field(v) for v in row]
        if i in short:
            fields = fields[:-1]
        if i in extra:
            fields.append("EXTRA")
        lines.append(",".join(fields))
        numbers.append(len(lines))
    path.write_text("\n".join(lines) + "\n\n", encoding="utf-8")
    return numbers


def malformed_from(first: int, count: int) -> dict[str, set[int]]:
    """Rows with a field too many and too few, every hundred rows or so from row ``first`` on."""
    return {
        "extra": {i for i in range(first, count) if i % 101 == 17},
        "short": {i for i in range(first, count) if i % 103 == 19},
    }


@pytest.fixture
def windows(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """Read windows of 50 rows at most, and record every ``read_file`` call: (file name, window)."""
    monkeypatch.setattr(buckets_module, "MIN_CHUNK_ROWS", 50)
    calls: list[tuple[str, Any]] = []
    original = sio.read_file

    def spy(
        source: sio.InputFile, options: sio.ReadOptions, window: Any = None, **kwargs: Any
    ) -> sio.FileRead:
        # A Parquet window is (first, count); a CSV window comes as its raw rows: ("raw", rows).
        raw = kwargs.get("raw")
        calls.append((Path(source.path).name, ("raw", raw.height) if raw is not None else window))
        return original(source, options, window, **kwargs)

    monkeypatch.setattr(sio.read, "read_file", spy)
    return calls


def windowed_pair(
    inputs: list[Path], tmp_path: Path, calls: list[tuple[str, Any]], **options: Any
) -> tuple[sessionize.RunResult, sessionize.RunResult]:
    """The in-memory run and a run with a tiny memory limit (windows of 50 rows, 7 buckets)."""
    memory = sessionize.run(inputs, buckets=1, rejects=tmp_path / "rejects-memory.csv", **options)
    assert all(window is None for _, window in calls)
    calls.clear()
    bucketed = sessionize.run(
        inputs, memory_limit="8K", buckets=7, rejects=tmp_path / "rejects-buckets.csv", **options
    )
    assert bucketed.buckets == 7
    return memory, bucketed


def assert_same_rejects(tmp_path: Path, memory: sessionize.RunResult, bucketed: sessionize.RunResult) -> None:
    assert memory.rejects is not None and bucketed.rejects is not None
    assert_frame_equal(bucketed.rejects, memory.rejects)
    written = [pl.read_csv(tmp_path / f"rejects-{n}.csv", infer_schema=False) for n in ("memory", "buckets")]
    assert_frame_equal(written[1], written[0])
    assert (tmp_path / "rejects-buckets.csv").read_bytes() == (tmp_path / "rejects-memory.csv").read_bytes()


OPTIONS: dict[str, Any] = {
    "no_geo": True,
    "on_invalid": "skip",
    "dedupe": True,
    "hash_user_ids": SECRET_VAR,
    "exclude_bots": True,
    "drop_columns": "ip,user_agent,city",
    "valid_until": "2030-01-01",
}


@pytest.mark.slow
@pytest.mark.parametrize("first_malformed", [900, 0], ids=["malformed-later", "malformed-first"])
def test_windowed_csv_gives_the_in_memory_result(
    first_malformed: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, windows: list[tuple[str, Any]]
) -> None:
    """Blank lines, quoted commas, bad timestamps and empty user ids everywhere; rows with a wrong
    number of fields from row ``first_malformed`` on (the fast reader fails on those windows)."""
    monkeypatch.setenv(SECRET_VAR, "s3cret")
    rows = nasty_rows(1500)
    path = tmp_path / "nasty.csv"
    write_nasty_csv(path, rows, **malformed_from(first_malformed, len(rows)))
    memory, bucketed = windowed_pair([path], tmp_path, windows, **OPTIONS)
    # A file the fast reader cannot parse is read whole, as in memory, so the same rows are rejected.
    assert windows == [("nasty.csv", None)]
    assert memory.duplicates_removed > 30 and memory.bot_sessions_excluded > 0
    assert memory.rejects is not None
    reasons = memory.rejects.get_column("reject_reason").to_list()
    assert {"bad_timestamp", "empty_user_id"} <= set(reasons)
    assert {"wrong_field_count (9, expected 8)", "wrong_field_count (7, expected 8)"} <= set(reasons)
    assert_same_figures(memory, bucketed)
    assert_same_rejects(tmp_path, memory, bucketed)
    assert_same_sessions(memory.sessions, bucketed.sessions)
    assert "ip" not in bucketed.sessions.columns and "city" not in bucketed.sessions.columns
    assert not bucketed.sessions.get_column("user_id").str.starts_with("u").any()  # hashed


@pytest.mark.slow
def test_windowed_csv_with_a_short_row_before_the_first_failing_window(
    tmp_path: Path, windows: list[tuple[str, Any]]
) -> None:
    """A row with a field too few in an early window, and rows with a field too many later: in
    memory the whole file goes to the careful reader, which rejects the short row; windowed, the
    short row's window must not keep it as an event with a null field."""
    rows = nasty_rows(1500)
    path = tmp_path / "short.csv"
    bad = malformed_from(900, len(rows))
    # A valid event but for its missing last field (the user agent), not a repeat of another.
    ids = [row[0] for row in rows]
    early = next(i for i in range(60, 100) if rows[i][0] and rows[i][1] and ids.count(rows[i][0]) == 1)
    lines = write_nasty_csv(path, rows, extra=bad["extra"], short={early, *bad["short"]})
    options = {k: v for k, v in OPTIONS.items() if k != "hash_user_ids"}
    memory, bucketed = windowed_pair([path], tmp_path, windows, **options)
    assert memory.rejects is not None
    assert (lines[early], "wrong_field_count (7, expected 8)") in memory.rejects.select(
        "source_row", "reject_reason"
    ).rows()
    assert_same_figures(memory, bucketed)
    assert_same_rejects(tmp_path, memory, bucketed)
    assert_same_sessions(memory.sessions, bucketed.sessions)


@pytest.mark.slow
def test_windowed_csv_without_malformed_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, windows: list[tuple[str, Any]]
) -> None:
    """The fast reader on every window: blank lines and quoted commas, no row to re-read carefully."""
    monkeypatch.setenv(SECRET_VAR, "s3cret")
    path = tmp_path / "clean.csv"
    write_nasty_csv(path, nasty_rows(1500))
    memory, bucketed = windowed_pair([path], tmp_path, windows, **OPTIONS)
    assert len(windows) > 20
    assert memory.rejected > 20
    assert_same_sessions(memory.sessions, bucketed.sessions)
    assert_same_figures(memory, bucketed)
    assert_same_rejects(tmp_path, memory, bucketed)


@pytest.mark.slow
def test_windowed_csv_with_line_breaks_inside_quoted_fields(
    tmp_path: Path, windows: list[tuple[str, Any]]
) -> None:
    """Quoted fields that span lines: windows count records, not lines, as the in-memory read does."""
    rows = nasty_rows(700, seed=3)
    for i in range(0, len(rows), 7):
        rows[i][5] = f"https://s.example/ref?note=line one\nline two {i}"
    path = tmp_path / "multiline.csv"
    path.write_text(
        "\n".join([",".join(HEADER), *(",".join(csv_field(v) for v in row) for row in rows)]) + "\n",
        encoding="utf-8",
    )
    options = {k: v for k, v in OPTIONS.items() if k != "hash_user_ids"}
    memory, bucketed = windowed_pair([path], tmp_path, windows, **options)
    assert len(windows) > 10
    assert memory.rows_read == len(rows)
    assert_same_figures(memory, bucketed)
    assert_same_rejects(tmp_path, memory, bucketed)
    assert_same_sessions(memory.sessions, bucketed.sessions)


@pytest.mark.slow
@pytest.mark.parametrize("rows", [500, 501])
def test_window_boundary_at_the_end_of_the_file(
    rows: int, tmp_path: Path, windows: list[tuple[str, Any]]
) -> None:
    """A file of exactly 10 windows of rows, and one row more, with and without blank lines."""
    data = nasty_rows(10_000)[:rows]
    for name, blank in (("plain", False), ("blank", True)):
        path = tmp_path / f"{name}.csv"
        lines = [",".join(HEADER), *(",".join(csv_field(v) for v in row) for row in data)]
        path.write_text("\n".join(lines) + ("\n\n\n" if blank else "\n"), encoding="utf-8")
        options = {k: v for k, v in OPTIONS.items() if k != "hash_user_ids"}
        windows.clear()
        memory, bucketed = windowed_pair([path], tmp_path, windows, **options)
        assert len(windows) >= 10
        assert memory.rows_read == rows
        assert_same_sessions(memory.sessions, bucketed.sessions)
        assert_same_figures(memory, bucketed)
        assert_same_rejects(tmp_path, memory, bucketed)


@pytest.mark.slow
def test_windowed_parquet_gives_the_in_memory_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, windows: list[tuple[str, Any]]
) -> None:
    monkeypatch.setenv(SECRET_VAR, "s3cret")
    rows = nasty_rows(1500)
    path = tmp_path / "nasty.parquet"
    frame = pl.DataFrame(rows, schema=HEADER, orient="row").with_columns(
        pl.col(c).replace("", None) for c in HEADER
    )
    frame.write_parquet(path, row_group_size=64)
    memory, bucketed = windowed_pair([path], tmp_path, windows, **OPTIONS)
    assert len(windows) == math.ceil(frame.height / 50)  # no window read past the end
    assert memory.rows_read == frame.height
    assert memory.rejected > 20 and memory.duplicates_removed > 30
    assert_same_sessions(memory.sessions, bucketed.sessions)
    assert_same_figures(memory, bucketed)
    assert_same_rejects(tmp_path, memory, bucketed)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "options"),
    [("multi", {}), ("clickstream", {"shared_session_ids": "merge", "no_geo": True})],
    ids=["three-formats", "merged-session-ids"],
)
def test_read_windows_are_held_and_spilled_together(
    name: str,
    options: dict[str, Any],
    datasets: dict[str, Dataset],
    windows: list[tuple[str, Any]],
    tmp_path: Path,
    spill: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Read windows are held until they fill the spill buffer, then split into buckets together: a file
    per bucket and buffer, not per bucket and window (at 100M events, 209 buckets and windows made
    44,000 files of a few thousand rows, each costing milliseconds to write and to read back). Windows
    of three files of three formats meet in one buffer, and ``--shared-session-ids merge`` spills them
    twice; the sessions are the in-memory path's."""
    data = datasets[name]
    run_options = {**data.options, **options}
    expected = sessionize.run(data.inputs, buckets=1, **run_options)
    seen: list[int] = []
    original = partition.sessionize_partition

    def spy(events: pl.DataFrame, settings: partition.SessionSettings) -> pl.DataFrame:
        if not seen:
            seen.append(len([p for p in spill.rglob("*.parquet") if p.is_file()]))
        return original(events, settings)

    monkeypatch.setattr(partition, "sessionize_partition", spy)
    windows.clear()
    # 2 MB: windows of 599 rows and a buffer of 140 KB, a few windows but a fraction of the input.
    with pytest.warns(SessionizeWarning):
        actual = sessionize.run(data.inputs, buckets=7, memory_limit="2M", temp_dir=spill, **run_options)
    assert actual.buckets == 7
    assert len(windows) > 10
    if "shared_session_ids" not in options:  # (merged: the files of the second spill, by user)
        # More than one buffer was spilled (more than a file per bucket), and fewer files than half
        # the windows' (7 buckets each).
        assert 7 < seen[0] <= 7 * len(windows) / 2, (seen, len(windows))
    assert_same_sessions(expected.sessions, actual.sessions)
    assert_same_figures(expected, actual)
    assert listing(spill) == []


def test_the_spill_holds_frames_until_its_buffer_is_full(tmp_path: Path) -> None:
    frames = [
        pl.DataFrame(
            {"user_id": [f"u{(k * 7 + i) % 23}" for i in range(40)], "n": range(40 * k, 40 * (k + 1))}
        )
        for k in range(9)
    ]
    size = int(frames[0].estimated_size())
    spill = sio.BucketSpill(tmp_path, 5, buckets_module.bucket_of(5), buffer_bytes=3 * size)
    for number, frame in enumerate(frames, start=1):
        spill.add(frame)
        files = sorted(p.name for p in tmp_path.iterdir())
        # Every third frame fills the buffer: the three are split and written, one file per bucket.
        assert len(files) == 5 * (number // 3), (number, files)
    spill.add(frames[0].clear())
    spill.add(frames[0].head(3))
    assert sum(spill.rows) == 9 * 40  # the three rows are held, not written yet
    schema = dict(frames[0].schema)
    everything = pl.concat([*frames, frames[0].head(3)])
    buckets = everything.with_columns(buckets_module.bucket_of(5).alias("b"))
    # Reading flushes what is held; each bucket has its events in the order they were added.
    for index in range(5):
        assert_frame_equal(spill.read(index, schema), buckets.filter(pl.col("b") == index).drop("b"))
    assert sum(spill.rows) == everything.height
    assert [spill.rows[i] for i in range(5)] == [buckets.filter(pl.col("b") == i).height for i in range(5)]


@pytest.mark.slow
@pytest.mark.parametrize("row", [399, 400, 425, 599], ids=["window-end", "window-start", "mid", "last"])
def test_windowed_csv_with_an_unbalanced_quote(
    row: int, tmp_path: Path, windows: list[tuple[str, Any]]
) -> None:
    """A row with an unbalanced quote (data row ``row``: the end, start or middle of a window of 50,
    or the last row) is rejected as bad_quote and the rows after it are read, as in memory."""
    rows = nasty_rows(600, seed=9)
    path = tmp_path / "quote.csv"
    lines = [",".join(HEADER), *(",".join(csv_field(v) for v in fields) for fields in rows)]
    # An opening quote at the start of the event name, never closed: "click,https://...
    head = lines[row + 1].split(",", 3)
    lines[row + 1] = ",".join([*head[:3], '"' + head[3]])
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    options = {k: v for k, v in OPTIONS.items() if k != "hash_user_ids"}
    memory, bucketed = windowed_pair([path], tmp_path, windows, **options)
    assert windows == [("quote.csv", None)]  # read whole, as in memory
    assert memory.rejects is not None
    assert (row + 2, "bad_quote") in memory.rejects.select("source_row", "reject_reason").rows()
    assert_same_figures(memory, bucketed)
    assert_same_rejects(tmp_path, memory, bucketed)
    assert_same_sessions(memory.sessions, bucketed.sessions)


@pytest.mark.parametrize("row", [400, 425], ids=["window-start", "mid"])
def test_windowed_csv_with_an_unbalanced_quote_fails_as_in_memory(row: int, tmp_path: Path) -> None:
    """With the default --on-invalid fail, a bad quote stops the run on either path."""
    rows = [fields for fields in nasty_rows(600, seed=9) if fields[1] and fields[2] != "yesterday"]
    path = tmp_path / "quote.csv"
    lines = [",".join(HEADER), *(",".join(csv_field(v) for v in fields) for fields in rows)]
    head = lines[row + 1].split(",", 3)
    lines[row + 1] = ",".join([*head[:3], '"' + head[3]])
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    for args in (["--buckets", "1"], ["--buckets", "3", "--memory-limit", "8K"]):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(buckets_module, "MIN_CHUNK_ROWS", 50)
            result = run_cli(path, "--no-geo", "--valid-until", "2030-01-01", *args, "-o", tmp_path / "s.csv")
        assert result.exit_code == 1, (args, result.stderr)
        assert f"line{row + 2}:bad_quote" in flat(result.stderr)
        assert not (tmp_path / "s.csv").exists()


@pytest.mark.parametrize("suffix", ["csv", "tsv"])
def test_windowed_text_with_a_byte_not_in_its_encoding(
    suffix: str, tmp_path: Path, windows: list[tuple[str, Any]]
) -> None:
    """One Windows-1252 byte in a UTF-8 file: rejected as undecodable_bytes on both paths (review 44: the
    shape check before the windows raised, and the bucketed run failed with "invalid utf8")."""
    separator = "," if suffix == "csv" else "\t"
    lines = ["user_id" + separator + "timestamp" + separator + "url"]
    times = [f"2024-01-01T{i // 60 % 24:02d}:{i % 60:02d}:00Z" for i in range(600)]
    lines += [separator.join([f"u{i % 37}", time, f"/p{i}"]) for i, time in enumerate(times)]
    data = "\n".join(lines).encode() + b"\n"
    data = data.replace(b"/p425\n", b"/caf\xe9\n")
    path = tmp_path / f"cp1252.{suffix}"
    path.write_bytes(data)
    memory, bucketed = windowed_pair([path], tmp_path, windows, no_geo=True, on_invalid="skip")
    assert memory.rejects is not None
    assert memory.rejects.select("source_row", "reject_reason").rows() == [(427, "undecodable_bytes")]
    assert_same_figures(memory, bucketed)
    assert_same_rejects(tmp_path, memory, bucketed)
    assert_same_sessions(memory.sessions, bucketed.sessions)
    # And as in memory with the default --on-invalid fail: the line named.
    for args in (["--buckets", "1"], ["--buckets", "3", "--memory-limit", "8K"]):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(buckets_module, "MIN_CHUNK_ROWS", 50)
            result = run_cli(path, "--no-geo", *args, "-o", tmp_path / "s.csv")
        assert result.exit_code == 1, (args, result.stderr)
        assert "line427" in flat(result.stderr), (args, result.stderr)


# --- 3. temporary files ----------------------------------------------------------------------------


@pytest.fixture
def spill(tmp_path: Path) -> Path:
    directory = tmp_path / "spill"
    directory.mkdir()
    return directory


def test_temp_dir_holds_the_buckets_and_is_emptied_after_success(
    tmp_path: Path, spill: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[list[Path]] = []
    original = partition.sessionize_partition

    def spy(events: pl.DataFrame, settings: partition.SessionSettings) -> pl.DataFrame:
        seen.append([p for p in spill.rglob("*") if p.is_file()])
        return original(events, settings)

    monkeypatch.setattr(partition, "sessionize_partition", spy)
    out = tmp_path / "sessions.parquet"
    result = sessionize.run([SAMPLE_DATA / "events.csv"], output=out, no_geo=True, buckets=7, temp_dir=spill)
    assert result.buckets == 7 and len(seen) == 7
    # The bucket files were in --temp-dir while the run went on, fewer as buckets were done.
    assert all(path.suffix == ".parquet" for path in seen[0])
    assert len(seen[0]) >= 7 > len(seen[-1]) > 0
    assert listing(spill) == []
    assert listing(tmp_path) == ["sessions.parquet", "spill"]
    assert pl.read_parquet(out).height == result.session_count == 964
    # The table went to the output: the result keeps its first rows only, and says so.
    assert not result.sessions_complete
    assert result.sessions.height == pipeline.PREVIEW_ROWS
    assert result.sessions.columns == COLUMN_NAMES


@dataclass
class Boom:
    """A ``sessionize_partition`` that raises on its ``on``-th call."""

    error: BaseException
    on: int = 3
    calls: int = 0
    original: Callable[..., pl.DataFrame] = partition.sessionize_partition

    def __call__(self, events: pl.DataFrame, settings: pipeline.SessionSettings) -> pl.DataFrame:
        self.calls += 1
        if self.calls == self.on:
            raise self.error
        return self.original(events, settings)


@pytest.mark.slow
@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()], ids=["exception", "ctrl-c"])
@pytest.mark.parametrize("fmt", ["parquet", "csv", "ndjson"])
@pytest.mark.parametrize("existing", [False, True], ids=["new", "existing"])
def test_a_failure_in_a_bucket_leaves_no_temp_files_and_no_output(
    error: BaseException,
    fmt: str,
    existing: bool,
    tmp_path: Path,
    spill: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / f"sessions.{fmt}"
    before = b"the previous run's table\n"
    if existing:
        out.write_bytes(before)
    boom = Boom(error)
    monkeypatch.setattr(partition, "sessionize_partition", boom)
    with pytest.raises(type(error)):
        sessionize.run(
            [SAMPLE_DATA / "events.csv"],
            output=out,
            no_geo=True,
            buckets=6,
            temp_dir=spill,
            rejects=tmp_path / "rejects.csv",
            on_invalid="skip",
            report=tmp_path / "report.html",
        )
    assert boom.calls == 3
    assert listing(spill) == []
    if existing:
        assert out.read_bytes() == before
        assert listing(tmp_path) == [out.name, "spill"]
    else:
        assert not out.exists()
        assert listing(tmp_path) == ["spill"]


def assert_failed_and_left_nothing(result: Result, message: str, tmp_path: Path, spill: Path) -> None:
    """A CLI run that failed with ``message`` (no traceback), leaving nothing in the output directory
    but the empty ``--temp-dir``."""
    assert result.exit_code == 1
    assert flat(message) in flat(result.stderr)
    assert "Traceback" not in result.stderr
    assert listing(spill) == []
    assert listing(tmp_path) == ["spill"]


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_each_bucket_is_written_while_the_next_is_computed(
    fmt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The session, page-view and user tables of a bucket are encoded and written in a thread of their
    own while the next bucket goes through the partition step; the files are those written in turn."""
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    events: list[str] = []
    original_partition = partition.sessionize_partition
    second_bucket = threading.Event()

    def computing(events_frame: pl.DataFrame, settings: partition.SessionSettings) -> pl.DataFrame:
        events.append("compute")
        if events.count("compute") == 2:
            second_bucket.set()
        return original_partition(events_frame, settings)

    def record(write: Callable[..., Any]) -> Callable[..., Any]:
        def recorded(*args: Any, **kwargs: Any) -> Any:
            # A slow disk: the writes wait for the second bucket's step (written in turn, they would
            # wait the 10 s out, and come before it).
            second_bucket.wait(10)
            events.append(f"write in {threading.current_thread().name.split('_')[0]}")
            return write(*args, **kwargs)

        return recorded

    monkeypatch.setattr(partition, "sessionize_partition", computing)
    monkeypatch.setattr(pq.ParquetWriter, "write_table", record(pq.ParquetWriter.write_table))
    monkeypatch.setattr(sio.publish, "serialize", record(serialize))
    names: dict[str, Any] = {"output": f"s.{fmt}", "pageviews_output": f"p.{fmt}", "users_output": f"u.{fmt}"}
    options: dict[str, Any] = {"no_geo": True, "valid_until": "2030-01-01"}
    result = sessionize.run(
        [SAMPLE_DATA / "events.csv"], buckets=5, **options, **{k: tmp_path / v for k, v in names.items()}
    )
    writes = [event for event in events if event != "compute"]
    assert writes == ["write in sessionize-sink"] * 15  # 3 tables, 5 buckets (no empty part at the end)
    # A bucket's tables were written after the next bucket's partition step had begun.
    assert events.index("compute", events.index("compute") + 1) < events.index(writes[0])
    memory = tmp_path / "memory"
    memory.mkdir()
    expected = sessionize.run(
        [SAMPLE_DATA / "events.csv"], buckets=1, **options, **{k: memory / v for k, v in names.items()}
    )
    assert result.session_count == expected.session_count == 964
    read = pl.read_parquet if fmt == "parquet" else functools.partial(pl.read_csv, infer_schema=False)
    for name in names.values():
        written, reference = read(tmp_path / name), read(memory / name)
        assert written.height == reference.height > 0
        assert_frame_equal(written.sort(written.columns), reference.sort(reference.columns))


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("fmt", ["parquet", "csv"])
@pytest.mark.parametrize("failing", [2, 5], ids=["second-part", "last-part"])
def test_a_full_disk_in_the_writing_thread_fails_the_run(
    fmt: str, failing: int, tmp_path: Path, spill: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A part that cannot be written (a full disk) fails the run with the output's name, as when it
    was written in turn; nothing is published and no temporary file is left."""
    import pyarrow.parquet as pq

    calls = 0

    def full_disk(write: Callable[..., Any]) -> Callable[..., Any]:
        def failing_write(*args: Any, **kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls == failing:
                raise OSError(errno.ENOSPC, "No space left on device")
            return write(*args, **kwargs)

        return failing_write

    monkeypatch.setattr(pq.ParquetWriter, "write_table", full_disk(pq.ParquetWriter.write_table))
    monkeypatch.setattr(sio.publish, "serialize", full_disk(serialize))
    out = tmp_path / f"sessions.{fmt}"
    result = run_cli(SAMPLE_DATA / "events.csv", "--no-geo", "--buckets", "5", "--temp-dir", spill, "-o", out)
    assert_failed_and_left_nothing(result, f"Cannot write {out}: No space left on device", tmp_path, spill)
    assert calls == failing
    # The table's Parquet writer was ended, not left to the garbage collector
    # (which then wrote into the closed temporary file).
    gc.collect()


def test_a_failure_while_a_part_is_written_waits_for_it_and_leaves_nothing(
    tmp_path: Path, spill: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bucket fails while the previous one is still being written: the write ends before the
    output's temporary file is removed, and nothing is left."""
    import pyarrow.parquet as pq

    original = pq.ParquetWriter.write_table
    finished: list[float] = []

    def slow(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.3)
        original(*args, **kwargs)
        finished.append(time.monotonic())

    monkeypatch.setattr(pq.ParquetWriter, "write_table", slow)
    monkeypatch.setattr(partition, "sessionize_partition", Boom(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        sessionize.run(
            [SAMPLE_DATA / "events.csv"],
            output=tmp_path / "s.parquet",
            no_geo=True,
            buckets=6,
            temp_dir=spill,
        )
    assert len(finished) == 2  # the two parts before the failure, the second one drained
    assert listing(spill) == []
    assert listing(tmp_path) == ["spill"]
    assert not [t for t in threading.enumerate() if t.name.startswith("sessionize-sink")]


def _buffer_bytes(frame: pl.DataFrame) -> int:
    """The bytes of every buffer ``frame``'s columns hold (as exported, without copying)."""
    total = 0
    for column in frame.get_columns():
        exported = column.to_arrow(compat_level=pl.CompatLevel.newest())
        for chunk in getattr(exported, "chunks", [exported]):
            total += sum(buffer.size for buffer in chunk.buffers() if buffer is not None)
    return total


def test_the_preview_of_a_written_table_does_not_hold_its_first_bucket(tmp_path: Path) -> None:
    """With the table written to a file, the result keeps its first rows: a copy of them, not a slice
    of the first bucket's table, which would keep every value of that bucket for the whole run."""
    source = tmp_path / "events.parquet"
    clickstream(20_000, seed=5).write_parquet(source)
    result = sessionize.run([source], output=tmp_path / "s.parquet", no_geo=True, buckets=2)
    assert result.sessions.height == pipeline.PREVIEW_ROWS < result.session_count // 10
    compact = pl.read_ipc(result.sessions.write_ipc(None).getvalue())
    assert_frame_equal(result.sessions, compact)
    assert _buffer_bytes(result.sessions) < 2 * _buffer_bytes(compact)


def test_a_failure_in_a_bucket_through_the_cli(
    tmp_path: Path, spill: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(partition, "sessionize_partition", Boom(RuntimeError("disk on fire")))
    out = tmp_path / "sessions.csv"
    result = run_cli(SAMPLE_DATA / "events.csv", "--no-geo", "--buckets", "5", "--temp-dir", spill, "-o", out)
    assert_failed_and_left_nothing(result, "disk on fire", tmp_path, spill)


def test_a_failing_report_in_bucket_mode_leaves_no_temp_files(
    tmp_path: Path, spill: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The report's parts stay in the temp dir until the report is written: also when it fails."""

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("cannot render")

    monkeypatch.setattr(report_module, "render_report", broken)
    with pytest.raises(RuntimeError, match="cannot render"):
        sessionize.run(
            [SAMPLE_DATA / "events.csv"],
            output=tmp_path / "sessions.parquet",
            no_geo=True,
            buckets=4,
            temp_dir=spill,
            report=tmp_path / "report.html",
        )
    assert listing(spill) == []
    # Nothing is published when one output fails: not even the table, written before the report.
    assert listing(tmp_path) == ["spill"]


def test_missing_temp_dir_is_a_clear_error(tmp_path: Path) -> None:
    result = run_cli(
        SAMPLE_DATA / "events.csv",
        "--no-geo",
        "--buckets",
        "3",
        "--temp-dir",
        tmp_path / "nope",
        "-o",
        tmp_path / "s.csv",
    )
    assert result.exit_code in (1, 2)
    assert "--temp-dir" in flat(result.stderr)
    assert listing(tmp_path) == []


# --- 4. validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2GiB", 2 << 30),
        ("1.5G", int(1.5 * (1 << 30))),
        ("512M", 512 << 20),
        ("512MB", 512 << 20),
        ("512MiB", 512 << 20),
        ("1024", 1024),
        ("1 g", 1 << 30),
        (" 64k ", 64 << 10),
        ("100B", 100),
        ("1T", 1 << 40),
        (4096, 4096),
    ],
)
def test_parse_memory(text: str | int, expected: int) -> None:
    assert buckets_module.parse_memory(text) == expected


@pytest.mark.parametrize("text", ["lots", "0", "0M", "-1G", "1.5.2G", "", "G", "2 GB extra", "0.1", 0])
def test_parse_memory_rejects(text: str | int) -> None:
    with pytest.raises(UsageError, match="--memory-limit"):
        buckets_module.parse_memory(text)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--memory-limit", "lots"], "--memory-limit'lots'isnotanamountofmemory"),
        (["--memory-limit", "0"], "mustbemorethanzero"),
        (["--memory-limit", "-5M"], "--memory-limit"),
        (["--buckets", "0"], "--buckets"),
        (["--buckets", "-3"], "--buckets"),
        (["--buckets", "many"], "--buckets"),
    ],
)
def test_bad_bucket_options_fail_with_a_clear_message(args: list[str], message: str, tmp_path: Path) -> None:
    out = tmp_path / "s.csv"
    result = run_cli(SAMPLE_DATA / "events.csv", "--no-geo", *args, "-o", out)
    assert result.exit_code in (1, 2)
    assert message in flat(result.stderr)
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_bad_buckets_in_the_python_api() -> None:
    with pytest.raises(UsageError, match="--buckets 0"):
        sessionize.run([SAMPLE_DATA / "events.csv"], no_geo=True, buckets=0)
    # Review 54 L5: a mistyped count (1e20 buckets) ran until killed, a pass per bucket.
    counts: list[dict[str, Any]] = [{"buckets": 4_097}, {"buckets": 10**20}, {"partitions": 100_001}]
    for count in counts:
        with pytest.raises(UsageError, match="must be from 1 to"):
            sessionize.run([SAMPLE_DATA / "events.csv"], no_geo=True, **count)
    with pytest.raises(UsageError, match="--memory-limit"):
        sessionize.run([SAMPLE_DATA / "events.csv"], no_geo=True, memory_limit="plenty")


def test_the_plan_leaves_room_for_the_geo_database(monkeypatch: pytest.MonkeyPatch) -> None:
    # The GeoIP database is memory-mapped and its pages become resident as lookups read them: the plan
    # takes its size off the budget, so the same events need more buckets.
    limit = 1 << 30
    without = buckets_module.plan(10_000_000, memory_limit=limit)
    with_geo = buckets_module.plan(10_000_000, memory_limit=limit, resident_bytes=100 << 20)
    assert with_geo.buckets > without.buckets > 1
    assert with_geo.chunk_rows < without.chunk_rows
    # The database is not read while the events are spilled: the spill buffer has its room too, and
    # the phase's peak (about three times what the buffer holds) stays within the budget.
    assert with_geo.spill_bytes == without.spill_bytes
    assert 3 * without.spill_bytes <= (limit - buckets_module.BASELINE_BYTES) * buckets_module.BUCKET_SHARE
    # Unless the addresses are located before they go to disk (--anonymize-ip): then it is read there.
    located = buckets_module.plan(
        10_000_000, memory_limit=limit, resident_bytes=100 << 20, resident_while_spilling=True
    )
    room = limit - buckets_module.BASELINE_BYTES - (100 << 20)
    assert 3 * located.spill_bytes <= room * buckets_module.BUCKET_SHARE < 3 * without.spill_bytes
    # A run passes the size of the database it opened, and nothing without one; with --anonymize-ip
    # (after the lookup) it counts while spilling.
    seen: list[tuple[int, bool]] = []
    original = buckets_module.plan

    def spy(estimated_rows: int, **options: Any) -> buckets_module.Plan:
        seen.append((options["resident_bytes"], options.get("resident_while_spilling", False)))
        return original(estimated_rows, **options)

    monkeypatch.setattr(buckets_module, "plan", spy)
    city = DATA / "geoip" / "GeoIP2-City-Test.mmdb"
    sessionize.run([SAMPLE_DATA / "events.csv"], geoip_db=city)
    sessionize.run([SAMPLE_DATA / "events.csv"], no_geo=True)
    sessionize.run([SAMPLE_DATA / "events.csv"], geoip_db=city, anonymize_ip=True)
    sessionize.run([SAMPLE_DATA / "events.csv"], geoip_db=city, anonymize_ip="before-geo")
    # Two maps of the file (the reader's and the tree walk's) and the records kept decoded.
    size = 2 * city.stat().st_size + geo.DECODED_RECORDS_BYTES
    assert seen == [(size, False), (0, False), (size, True), (size, False)]
    assert geo.DECODED_RECORDS_BYTES == 150_000 * 280


def test_buckets_look_addresses_up_after_the_sessions(monkeypatch: pytest.MonkeyPatch) -> None:
    # In memory, the lookup runs in a thread beside the session step; within a budget (buckets) it runs
    # after it, so that the two do not hold memory at once. The tables are the same.
    from sessionize import geo

    tables: list[int] = []
    original = geo.geo_table

    def spy(ips: pl.Series, database: geo.GeoDatabase) -> geo.GeoTable:
        tables.append(ips.len())
        return original(ips, database)

    monkeypatch.setattr(geo, "geo_table", spy)
    city = DATA / "geoip" / "GeoIP2-City-Test.mmdb"
    in_memory = sessionize.run([SAMPLE_DATA / "events.csv"], geoip_db=city)
    assert tables == [5614]
    bucketed = sessionize.run([SAMPLE_DATA / "events.csv"], geoip_db=city, buckets=3)
    assert tables == [5614]
    assert_frame_equal(bucketed.sessions.sort("session_id"), in_memory.sessions.sort("session_id"))
    assert bucketed.geo_counts == in_memory.geo_counts


# --- 5. summary and progress -----------------------------------------------------------------------


@pytest.mark.slow
def test_the_summary_names_the_path_taken(tmp_path: Path) -> None:
    sample = SAMPLE_DATA / "events.csv"
    memory = run_cli(sample, "--no-geo", "-o", tmp_path / "a.csv")
    assert memory.exit_code == 0
    assert "pathinmemory" in flat(memory.stderr)
    assert "buckets" not in flat(memory.stderr)
    forced = run_cli(sample, "--no-geo", "--buckets", "13", "-o", tmp_path / "b.csv")
    assert forced.exit_code == 0
    assert "path13bucketsofusers" in flat(forced.stderr)
    assert "budget" not in flat(forced.stderr)  # --buckets decided, not the budget
    limited = run_cli(sample, "--no-geo", "--memory-limit", "256K", "-o", tmp_path / "c.csv")
    assert limited.exit_code == 0
    summary = flat(limited.stderr)
    found = re.search(r"path([\d,]+)bucketsofusers\(memorybudget256KiB\)", summary)
    assert found is not None, summary
    expected = sessionize.run([sample], no_geo=True, memory_limit="256K").buckets
    assert int(found.group(1).replace(",", "")) == expected > 1
    assert "inmemory" not in summary
    # The figures are the same whichever the path.
    for result in (memory, forced, limited):
        assert "sessions964" in flat(result.stderr)
        assert "rowsread5,614from1file" in flat(result.stderr)


@pytest.mark.slow
def test_the_json_log_line_names_the_path_taken(tmp_path: Path) -> None:
    sample = SAMPLE_DATA / "events.csv"
    paths = []
    for buckets in ("1", "13"):
        result = run_cli(
            sample,
            "--no-geo",
            "--buckets",
            buckets,
            "--log-format",
            "json",
            "-o",
            tmp_path / f"{buckets}.csv",
        )
        assert result.exit_code == 0
        line = json.loads(result.stderr.strip().splitlines()[-1])
        assert line["sessions"] == 964
        paths.append(line["path"])
    assert paths == ["in memory", "13 buckets"]


@pytest.mark.slow
def test_progress_reports_reading_and_buckets(datasets: dict[str, Dataset]) -> None:
    data = datasets["multi"]
    events: list[pipeline.RunProgress] = []
    result = sessionize.run(data.inputs, no_geo=True, buckets=9, progress=events.append)
    stages = [e.stage for e in events]
    assert set(stages) == {"read", "buckets"}
    # Every file is read before the first bucket is sessionized.
    assert stages.index("buckets") == len(stages) - stages[::-1].index("read")
    reads = [e for e in events if e.stage == "read"]
    assert all(e.total == 3 for e in reads)
    assert [e.done for e in reads] == sorted(e.done for e in reads)
    assert reads[-1].done == reads[-1].total == 3
    assert reads[-1].rows == result.rows_read
    done = [e for e in events if e.stage == "buckets"]
    assert [e.done for e in done] == list(range(1, 10))
    assert all(e.total == 9 for e in done)
    assert done[-1].rows == result.events_read
    assert [e.rows for e in done] == sorted(e.rows for e in done)

    events.clear()
    memory = sessionize.run(data.inputs, no_geo=True, buckets=1, progress=events.append)
    # A first event before anything is read (it starts the rate's clock), then one per file; then the
    # sessions, as one step (the progress does not stop at "reading" for the rest of the run).
    steps = [(e.stage, e.done, e.total) for e in events]
    assert steps == [
        ("read", 0, 3),
        ("read", 1, 3),
        ("read", 2, 3),
        ("read", 3, 3),
        ("buckets", 0, 1),
        ("buckets", 1, 1),
    ]
    assert events[3].rows == memory.rows_read
    assert events[-1].rows == memory.events_read


def test_progress_counts_windows_as_they_are_read(tmp_path: Path, windows: list[tuple[str, Any]]) -> None:
    path = tmp_path / "events.csv"
    write_nasty_csv(path, nasty_rows(400))
    events: list[pipeline.RunProgress] = []
    result = sessionize.run(
        [path], no_geo=True, on_invalid="skip", memory_limit="8K", buckets=3, progress=events.append
    )
    reads = [e for e in events if e.stage == "read"]
    assert len(reads) > 5
    assert [e.rows for e in reads] == sorted(e.rows for e in reads)
    assert reads[-1].done == reads[-1].total == 1
    assert reads[-1].rows == result.rows_read


# --- 6. stdout and report --------------------------------------------------------------------------


@pytest.mark.slow
def test_stdout_in_bucket_mode(tmp_path: Path) -> None:
    sample = SAMPLE_DATA / "events.csv"
    memory = run_cli(sample, "--no-geo", "-o", "-", "--buckets", "1")
    bucketed = run_cli(sample, "--no-geo", "-o", "-", "--buckets", "13")
    assert memory.exit_code == bucketed.exit_code == 0
    want = memory.stdout.splitlines()
    got = bucketed.stdout.splitlines()
    assert got[0] == want[0] == ",".join(COLUMN_NAMES)
    assert got.count(want[0]) == 1  # one header, not one per bucket
    assert len(got) == len(want) == 965
    assert sorted(got[1:]) == sorted(want[1:])
    assert "13bucketsofusers" in flat(bucketed.stderr)
    assert listing(tmp_path) == []


def test_stdin_in_bucket_mode(tmp_path: Path) -> None:
    """Standard input cannot be read in windows: it is read whole, then spilled into buckets."""
    text = (SAMPLE_DATA / "events.csv").read_text(encoding="utf-8")
    outs = []
    for buckets in ("1", "6"):
        out = tmp_path / f"{buckets}.csv"
        result = run_cli("-", "--no-geo", "--buckets", buckets, "-o", out, input=text)
        assert result.exit_code == 0, result.stderr
        outs.append(out)
    assert_same_output(*outs)
    assert len(outs[1].read_text(encoding="utf-8").splitlines()) == 965


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["csv", "ndjson"])
def test_stdout_in_bucket_mode_other_formats(fmt: str) -> None:
    sample = SAMPLE_DATA / "events.csv"
    memory = run_cli(sample, "--no-geo", "-o", "-", "--format", fmt, "--buckets", "1", "-q")
    bucketed = run_cli(sample, "--no-geo", "-o", "-", "--format", fmt, "--buckets", "4", "-q")
    assert memory.exit_code == bucketed.exit_code == 0
    assert bucketed.stderr == ""
    assert sorted(bucketed.stdout.splitlines()) == sorted(memory.stdout.splitlines())


@pytest.mark.slow
def test_report_in_bucket_mode(tmp_path: Path, spill: Path) -> None:
    sample = SAMPLE_DATA / "events.csv"
    out = tmp_path / "sessions.parquet"
    report = tmp_path / "report.html"
    result = run_cli(sample, "--no-geo", "--buckets", "7", "--temp-dir", spill, "-o", out, "--report", report)
    assert result.exit_code == 0, result.stderr
    html = report.read_text(encoding="utf-8")
    assert len(html) > 10_000
    assert "<html" in html.lower() and "964" in html.replace(",", "")
    assert listing(spill) == []
    assert listing(tmp_path) == ["report.html", "sessions.parquet", "spill"]
    # The same page as in memory, but for the time it was made.
    memory_report = tmp_path / "memory.html"
    memory = run_cli(
        sample, "--no-geo", "--buckets", "1", "-o", tmp_path / "m.parquet", "--report", memory_report
    )
    assert memory.exit_code == 0
    made = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC")
    assert made.sub("", html) == made.sub("", memory_report.read_text(encoding="utf-8"))


# --- 7. empty inputs -------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["parquet", "csv", "ndjson"])
@pytest.mark.parametrize("content", ["user_id,timestamp,url\n", ""], ids=["header-only", "empty"])
def test_empty_input_in_bucket_mode_writes_an_empty_table(
    fmt: str, content: str, tmp_path: Path, spill: Path
) -> None:
    source = tmp_path / "events.csv"
    source.write_text(content, encoding="utf-8")
    memory_out = tmp_path / f"memory.{fmt}"
    bucket_out = tmp_path / f"buckets.{fmt}"
    memory = sessionize.run([source], output=memory_out, no_geo=True, buckets=1)
    bucketed = sessionize.run([source], output=bucket_out, no_geo=True, buckets=5, temp_dir=spill)
    assert bucketed.buckets == 5
    assert bucketed.session_count == bucketed.rows_read == 0
    assert bucketed.sessions.columns == COLUMN_NAMES and bucketed.sessions.height == 0
    assert_frame_equal(bucketed.sessions, memory.sessions)
    if fmt == "parquet":
        table = pl.read_parquet(bucket_out)
        assert table.height == 0
        assert table.schema == pl.read_parquet(memory_out).schema == sessionize.SESSION_SCHEMA
    elif fmt == "csv":
        assert bucket_out.read_text(encoding="utf-8").splitlines() == [",".join(COLUMN_NAMES)]
        assert bucket_out.read_bytes() == memory_out.read_bytes()
    else:
        assert bucket_out.read_bytes() == memory_out.read_bytes()
    assert listing(spill) == []


def test_empty_input_with_dropped_columns_in_bucket_mode(tmp_path: Path) -> None:
    source = tmp_path / "events.csv"
    source.write_text("user_id,timestamp\n", encoding="utf-8")
    out = tmp_path / "s.parquet"
    result = run_cli(source, "--no-geo", "--buckets", "3", "--drop-columns", "ip,city", "-o", out)
    assert result.exit_code == 0, result.stderr
    table = pl.read_parquet(out)
    assert table.height == 0
    assert table.columns == [c for c in COLUMN_NAMES if c not in ("ip", "city")]


@pytest.mark.slow
def test_some_empty_buckets(tmp_path: Path) -> None:
    """Two users and 16 buckets: most buckets are empty; the output holds both users' sessions."""
    source = tmp_path / "events.csv"
    source.write_text(
        "user_id,timestamp,url\n"
        "a,2024-05-01T10:00:00Z,https://s.example/\n"
        "b,2024-05-01T10:00:00Z,https://s.example/x\n"
        "a,2024-05-01T11:00:00Z,https://s.example/y\n",
        encoding="utf-8",
    )
    for fmt in ("parquet", "csv", "ndjson"):
        memory = sessionize.run([source], output=tmp_path / f"m.{fmt}", no_geo=True, buckets=1)
        bucketed = sessionize.run([source], output=tmp_path / f"b.{fmt}", no_geo=True, buckets=16)
        assert bucketed.session_count == memory.session_count == 3
        assert_same_output(tmp_path / f"m.{fmt}", tmp_path / f"b.{fmt}")


@pytest.mark.slow
def test_sigterm_removes_the_temp_files_and_writes_nothing(tmp_path: Path) -> None:
    """cron and systemd stop a job with SIGTERM: it unwinds like Ctrl-C (exit 143, nothing left)."""
    spill = tmp_path / "spill"
    spill.mkdir()
    out = tmp_path / "sessions.parquet"
    script = (
        "import sys, time, sessionize.partition as p\n"
        "real = p.sessionize_partition\n"
        "def slow(*a, **k):\n"
        "    time.sleep(60)\n"
        "    return real(*a, **k)\n"
        "p.sessionize_partition = slow\n"
        "from sessionize.cli import app\n"
        "app(sys.argv[1:])\n"
    )
    args = ["run", str(SAMPLE_DATA / "events.csv"), "-o", str(out), "--no-geo", "--buckets", "4"]
    process = subprocess.Popen(
        [sys.executable, "-c", script, *args, "--temp-dir", str(spill)], stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 30
        while not list(spill.glob("sessionize-buckets-*/*.parquet")):
            assert time.monotonic() < deadline, "the run never spilled"
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 143
    finally:
        process.kill()
    assert list(spill.iterdir()) == []
    assert list(tmp_path.iterdir()) == [spill]


def test_a_corrupt_parquet_file_in_bucket_mode_is_a_clear_error(tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    good.write_bytes((SAMPLE_DATA / "events.csv").read_bytes())
    bad = tmp_path / "broken.parquet"
    bad.write_bytes(b"PAR1 this is not a parquet file")
    out = tmp_path / "sessions.parquet"
    result = CliRunner().invoke(
        app,
        ["run", str(good), str(bad), "--buckets", "4", "--no-geo", "-o", str(out), "--log-format", "text"],
    )
    assert result.exit_code == 1
    message = "".join(result.stderr.replace("│", "").split())
    assert "broken.parquet:notareadableParquetfile" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.parquet", "good.csv"]


# --- Windows of gzipped, re-encoded, NDJSON and access-log inputs -----------------------------------


def _assert_windowed_like_memory(
    inputs: list[Path], tmp_path: Path, windows: list[tuple[str, Any]], *, min_windows: int, **options: Any
) -> tuple[sessionize.RunResult, sessionize.RunResult]:
    memory, bucketed = windowed_pair(inputs, tmp_path, windows, **options)
    # Read a window at a time (the raw rows of each), never whole.
    assert len(windows) >= min_windows
    assert all(window is not None and window[0] == "raw" for _, window in windows)
    assert_same_figures(memory, bucketed)
    assert_same_rejects(tmp_path, memory, bucketed)
    assert_same_sessions(memory.sessions, bucketed.sessions)
    return memory, bucketed


@pytest.mark.slow
def test_windowed_gzipped_csv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, windows: list[tuple[str, Any]], spill: Path
) -> None:
    """A .csv.gz is decompressed into the temp dir as it streams, read in windows, and the copy removed."""
    monkeypatch.setenv(SECRET_VAR, "s3cret")
    plain = tmp_path / "clean.csv"
    write_nasty_csv(plain, nasty_rows(1500))
    path = tmp_path / "clean.csv.gz"
    path.write_bytes(gzip.compress(plain.read_bytes()))
    memory, _ = _assert_windowed_like_memory(
        [path], tmp_path, windows, min_windows=20, temp_dir=spill, **OPTIONS
    )
    assert memory.rejected > 20
    assert list(spill.iterdir()) == []


@pytest.mark.slow
def test_windowed_latin1_csv(tmp_path: Path, windows: list[tuple[str, Any]]) -> None:
    """--encoding latin-1: decoded into the temp dir as it streams; the accents come out the same."""
    rows = nasty_rows(800)
    for i, row in enumerate(rows):
        if i % 3 == 0:
            row[4] += "/caf\u00e9-cr\u00e8me"
    plain = tmp_path / "utf8.csv"
    write_nasty_csv(plain, rows)
    path = tmp_path / "latin1.csv"
    path.write_bytes(plain.read_text(encoding="utf-8").encode("latin-1"))
    _, bucketed = _assert_windowed_like_memory(
        [path], tmp_path, windows, min_windows=10, no_geo=True, on_invalid="skip", encoding="latin-1"
    )
    assert bucketed.sessions.get_column("landing_page").str.contains("caf\u00e9-cr\u00e8me").any()


def test_a_latin1_csv_with_undecodable_bytes_is_read_whole(
    tmp_path: Path, windows: list[tuple[str, Any]]
) -> None:
    """cp1252 has no byte 0x81: such a file cannot be decoded as it streams; it is read whole, as in
    memory, which rejects that row alone."""
    plain = tmp_path / "utf8.csv"
    write_nasty_csv(plain, nasty_rows(300))
    data = plain.read_bytes().replace(b"/c/d", b"/c/\x81", 1)
    path = tmp_path / "cp1252.csv"
    path.write_bytes(data)
    memory, bucketed = windowed_pair(
        [path], tmp_path, windows, no_geo=True, on_invalid="skip", encoding="cp1252"
    )
    assert windows == [("cp1252.csv", None)]
    assert memory.rejects is not None
    assert "undecodable_bytes" in memory.rejects.get_column("reject_reason").to_list()
    assert_same_figures(memory, bucketed)
    assert_same_sessions(memory.sessions, bucketed.sessions)


def _write_ndjson(path: Path, rows: list[list[str]]) -> None:
    """The rows as JSON lines: empty fields left out (as exporters do), ids sometimes numbers."""
    lines = []
    for i, row in enumerate(rows):
        record: dict[str, Any] = {name: value for name, value in zip(HEADER, row, strict=True) if value}
        if i % 7 == 0 and record.get("event_id", "").startswith("e"):
            record["event_id"] = int(record["event_id"][1:])
        lines.append(json.dumps(record))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.mark.slow
@pytest.mark.parametrize("compressed", [False, True], ids=["ndjson", "ndjson-gz"])
def test_windowed_ndjson(
    compressed: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, windows: list[tuple[str, Any]]
) -> None:
    """NDJSON in windows with the schema of the whole file (a key missing from the first lines, ids
    that are numbers in some lines and text in others)."""
    monkeypatch.setenv(SECRET_VAR, "s3cret")
    rows = nasty_rows(1200)
    for row in rows[:200]:
        row[5] = ""  # no referrer key at all in the first windows
    path = tmp_path / "events.ndjson"
    _write_ndjson(path, rows)
    if compressed:
        path = path.with_suffix(".ndjson.gz")
        path.write_bytes(gzip.compress((tmp_path / "events.ndjson").read_bytes()))
    memory, _ = _assert_windowed_like_memory([path], tmp_path, windows, min_windows=20, **OPTIONS)
    assert memory.rejected > 20 and memory.duplicates_removed > 20


def test_windowed_gzipped_ndjson_ignores_the_csv_encoding(
    tmp_path: Path, windows: list[tuple[str, Any]]
) -> None:
    """--encoding is for CSV: a .ndjson.gz with UTF-8 accents reads as UTF-8 in windows, as when whole."""
    lines = [
        json.dumps(
            {
                "user_id": f"u{i % 7}",
                "timestamp": f"2026-10-01T{i // 60:02d}:{i % 60:02d}:00Z",
                "url": "/caf\u00e9",
            },
            ensure_ascii=False,
        )
        for i in range(300)
    ]
    path = tmp_path / "events.ndjson.gz"
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode("utf-8")))
    memory, bucketed = windowed_pair(
        [path], tmp_path, windows, no_geo=True, on_invalid="skip", encoding="latin-1"
    )
    assert len(windows) >= 5 and all(window is not None and window[0] == "raw" for _, window in windows)
    assert_same_figures(memory, bucketed)
    assert_same_sessions(memory.sessions, bucketed.sessions)
    assert bucketed.sessions.get_column("landing_page").unique().to_list() == ["/caf\u00e9"]


@pytest.mark.slow
@pytest.mark.parametrize("compressed", [False, True], ids=["log", "log-gz"])
def test_windowed_access_log(compressed: bool, tmp_path: Path, windows: list[tuple[str, Any]]) -> None:
    """The real Apache log (10,000 lines, one malformed) in windows of 50 lines: same sessions, same
    rejected line, whether plain or gzipped."""
    path = tmp_path / "access.log"
    path.write_bytes(APACHE_LOG.read_bytes())
    if compressed:
        path = tmp_path / "access.log.gz"
        path.write_bytes(gzip.compress(APACHE_LOG.read_bytes()))
    memory, bucketed = _assert_windowed_like_memory(
        [path], tmp_path, windows, min_windows=150, no_geo=True, on_invalid="skip"
    )
    assert memory.rejected == 1
    assert bucketed.session_count == memory.session_count > 3000


@pytest.mark.slow
def test_an_access_log_that_is_not_utf8_is_read_whole(tmp_path: Path, windows: list[tuple[str, Any]]) -> None:
    data = APACHE_LOG.read_bytes().split(b"\n")
    data[100] = data[100].replace(b"GET /", b"GET /caf\xe9", 1)
    path = tmp_path / "latin1.log"
    path.write_bytes(b"\n".join(data))
    memory, bucketed = windowed_pair([path], tmp_path, windows, no_geo=True, on_invalid="skip")
    assert windows == [("latin1.log", None)]
    assert_same_figures(memory, bucketed)
    assert_same_sessions(memory.sessions, bucketed.sessions)


def test_a_corrupt_gzip_in_bucket_mode_names_the_file(tmp_path: Path, spill: Path) -> None:
    plain = tmp_path / "clean.csv"
    write_nasty_csv(plain, nasty_rows(300))
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(gzip.compress(plain.read_bytes())[:-40])
    output = tmp_path / "out.parquet"
    result = CliRunner().invoke(
        app, ["run", str(path), "-o", str(output), "--buckets", "3", "--temp-dir", str(spill), "--no-geo"]
    )
    assert result.exit_code == 1
    assert "cut.csv.gz" in result.output and "gzip data is corrupt or truncated" in result.output
    assert not output.exists()
    assert list(spill.iterdir()) == []


def test_the_mean_duration_is_the_same_figure_in_buckets(tmp_path: Path) -> None:
    """Durations of tenths of a second added in another order gave another last digit of the mean
    (0.30000000000000004 against 0.3); taken from whole microseconds, it is one figure."""
    lines = ["user_id,timestamp"]
    for number in range(60):
        tenths = 1 + number % 7
        lines += [f"u{number},2024-05-01T10:00:00Z", f"u{number},2024-05-01T10:00:00.{tenths}00000Z"]
    source = tmp_path / "events.csv"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    memory = sessionize.run([source], no_geo=True)
    expected = sum(1 + number % 7 for number in range(60)) / 10 / 60
    assert memory.mean_duration_s == pytest.approx(expected, rel=1e-15)
    for buckets in (3, 7, 16):
        bucketed = sessionize.run(
            [source], output=str(tmp_path / f"b{buckets}.csv"), no_geo=True, buckets=buckets
        )
        assert bucketed.mean_duration_s == memory.mean_duration_s, buckets


def test_the_mean_duration_is_added_up_part_by_part(monkeypatch: pytest.MonkeyPatch) -> None:
    """The mean comes from each part's whole microseconds as the part is counted: at the end of a
    100M-event run in a 1 GiB budget, the mean from all 24.6M durations at once (and three temporaries
    as long) took 370 MB more than the run's buckets."""
    from sessionize.partition import Tally

    parts = [
        pl.DataFrame({"duration_s": [0.1, None, 0.2], "user_id": ["a", "b", "c"]}),
        pl.DataFrame({"duration_s": [0.3, 1.000001], "user_id": ["d", "e"]}),
    ]
    tallies = []
    for part in parts:
        tally = Tally()
        tally.add(part.with_columns(is_bot=False, event_count=1, _geo_status=None))
        tallies.append(tally)
    tally = tallies[0].merge(tallies[1])

    def gathered(parts: object) -> float:
        raise AssertionError("every duration gathered for the mean")

    monkeypatch.setattr(partition, "median_of", gathered)
    assert tally.mean_duration_s == pytest.approx((0.1 + 0.2 + 0.3 + 1.000001) / 4, rel=1e-15)
    assert Tally().mean_duration_s is None


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.lists(
            st.one_of(
                st.none(),
                st.floats(allow_nan=False, allow_infinity=False, width=64),
                st.integers(0, 10**12).map(lambda micros: micros / 1e6),
            ),
            max_size=12,
        ),
        max_size=4,
    )
)
def test_the_median_duration_is_polars_median(parts: list[list[float | None]]) -> None:
    """The summary's median (a selection in numpy) is the very float Polars' median gives."""
    series = [pl.Series("duration_s", part, dtype=pl.Float64) for part in parts]
    expected = pl.concat(series).median() if series else None
    assert partition.median_of(series) == expected
    tally = partition.Tally(durations=series)
    assert tally.median_duration_s == expected


def test_a_limit_below_a_mib_is_shown_as_given(tmp_path: Path) -> None:
    """``--memory-limit 8K`` was warned of as "--memory-limit 0 MiB is below the ..." (review of stop 51)."""
    source = tmp_path / "events.csv"
    source.write_text("user_id,timestamp\nu1,2024-05-01T10:00:00Z\n", encoding="utf-8")
    with pytest.warns(sessionize.SessionizeWarning) as caught:
        sessionize.run([source], no_geo=True, memory_limit="8K", temp_dir=str(tmp_path))
    messages = " ".join(str(w.message) for w in caught)
    assert "--memory-limit 8 KiB is below the " in messages, messages
    assert "0 MiB" not in messages


def test_a_budget_below_any_run_is_told_once_not_blamed_on_a_bucket(tmp_path: Path) -> None:
    """A stop-56 review: under --memory-limit 1MiB a second warning blamed "a crawler or a shared id" for
    a bucket of 217 ordinary events, whose estimate was the fixed cost the first warning names."""
    budget = buckets_module
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = sessionize.run(
            [SAMPLE_DATA / "events.csv"], memory_limit="1MiB", no_geo=True, temp_dir=str(tmp_path)
        )
    messages = [str(w.message) for w in caught if issubclass(w.category, sessionize.SessionizeWarning)]
    assert result.buckets is not None and result.buckets > 1
    assert sum("is below the" in m for m in messages) == 1, messages
    assert not any("One bucket of users" in m for m in messages), messages
    # A user whose events alone exceed what any run takes is still told of.
    assert budget.bucket_warning(budget.MIN_CHUNK_ROWS * 4, memory_limit=1 << 20) is not None
    assert budget.bucket_warning(217, memory_limit=1 << 20) is None
