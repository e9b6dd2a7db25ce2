"""A file's warnings are the file's, whichever engine reads it and in how many slices.

Two warnings tell of a whole file: epoch timestamps of several sizes (with how many of each), and a
column flag naming a key of a JSON text column that no event has. The bucketed path reads a large file
in windows, Dask a Parquet file in partitions, Spark a large file in splits; each slice gave its own
warning: once per slice, with the slice's figures, of a key that only that slice lacked (a false
alarm), or, for a Parquet window, not at all. Each path must give the in-memory run's warnings, once.
"""

from __future__ import annotations

import functools
import json
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import sessionize
from sessionize.engines import budget as budget_module
from tests.helpers import write_text

ROWS = 600
#: The first half's epoch times in seconds, the second half's in milliseconds: each window of 50 rows
#: holds one unit, the file both.
HALF = 300
#: Only the last rows' JSON objects have the page key: most windows have none.
PAGE_FROM = 500
START = 1714550400


def _frame() -> pl.DataFrame:
    seconds = [START + 37 * i for i in range(ROWS)]
    return pl.DataFrame(
        {
            "user_id": [f"u{i % 23}" for i in range(ROWS)],
            "timestamp": [s if i < HALF else s * 1000 for i, s in enumerate(seconds)],
            "props": [
                json.dumps({"page": f"https://a.example/p{i % 7}"} if i >= PAGE_FROM else {"other": i})
                for i in range(ROWS)
            ],
        }
    )


def _csv(directory: Path) -> Path:
    frame = _frame()
    lines = [f'{u},{t},"{p.replace(chr(34), chr(34) * 2)}"' for u, t, p in frame.iter_rows()]
    return write_text(directory / "events.csv", "user_id,timestamp,props\n" + "\n".join(lines) + "\n")


def _parquet(directory: Path) -> Path:
    path = directory / "events.parquet"
    _frame().write_parquet(path, row_group_size=50)
    return path


#: The page key some events have, and a user agent key none has.
OPTIONS: dict[str, Any] = {"url_col": "props.page", "user_agent_col": "props.agent", "no_geo": True}


#: The warnings of a file: they name it first.
SOURCE_WARNINGS = "/"


def _given(run: Callable[[], sessionize.RunResult]) -> tuple[Counter[str], sessionize.RunResult]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run()
    messages = [str(w.message) for w in caught if issubclass(w.category, sessionize.SessionizeWarning)]
    # (Not the warnings of the tiny --memory-limit that makes the windows.)
    return Counter(" ".join(m.split()) for m in messages if m.startswith(SOURCE_WARNINGS)), result


def _expected(source: Path) -> tuple[Counter[str], sessionize.RunResult]:
    given, result = _given(lambda: sessionize.run([source], **OPTIONS))
    shown = " ".join(str(source).split())
    assert given == Counter(
        {
            f"{shown}: no event has a value for 'props.agent' (--user-agent-col), a key of the JSON objects "
            "in its 'props' column. Keys match exactly, case and punctuation included: check the key's "
            "spelling.": 1,
            f"{shown}: epoch timestamps of several sizes, each read in the unit its size suggests (300 read "
            "as seconds, 300 as milliseconds). If they are all in one unit, give it with --time-unit "
            "s|ms|us|ns.": 1,
        }
    ), given
    assert result.session_count > 0
    return given, result


@pytest.mark.parametrize("make", [_csv, _parquet], ids=["csv", "parquet"])
def test_a_file_read_in_windows_warns_as_one_read_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make: Callable[[Path], Path]
) -> None:
    source = make(tmp_path)
    expected, memory = _expected(source)
    monkeypatch.setattr(budget_module, "MIN_CHUNK_ROWS", 50)
    given, bucketed = _given(
        lambda: sessionize.run([source], memory_limit="8K", buckets=7, temp_dir=str(tmp_path), **OPTIONS)
    )
    assert bucketed.buckets == 7
    assert given == expected
    assert bucketed.session_count == memory.session_count


@pytest.mark.slow
def test_a_file_in_dask_partitions_warns_as_one_read_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    distributed = pytest.importorskip("distributed")
    from sessionize.engines import dask as dask_engine

    source = _parquet(tmp_path)
    expected, memory = _expected(source)
    planned = dask_engine.plan_parts
    parts: list[int] = []

    def small_parts(files: Any, *, partition_rows: int) -> list[Any]:
        made = planned(files, partition_rows=100)
        parts.append(len(made))
        return made

    monkeypatch.setattr(dask_engine, "plan_parts", small_parts)
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0"
    ) as cluster:
        given, result = _given(
            lambda: sessionize.run(
                [source], engine="dask", scheduler=cluster.scheduler_address, output=None, **OPTIONS
            )
        )
    assert parts == [ROWS // 100]
    assert given == expected
    assert result.session_count == memory.session_count


@pytest.mark.slow
@pytest.mark.parametrize("make", [_csv, _parquet], ids=["csv", "parquet"])
def test_a_file_in_spark_splits_warns_as_one_read_does(
    tmp_path: Path, spark_session: Any, make: Callable[[Path], Path]
) -> None:
    source = make(tmp_path)
    expected, memory = _expected(source)
    previous = spark_session.conf.get("spark.sql.files.maxPartitionBytes")
    spark_session.conf.set("spark.sql.files.maxPartitionBytes", "4k")
    try:
        given, result = _given(
            lambda: sessionize.run([source], spark=spark_session, output=str(tmp_path / "out"), **OPTIONS)
        )
    finally:
        spark_session.conf.set("spark.sql.files.maxPartitionBytes", previous)
    assert result.path_taken.endswith("read in splits")
    assert given == expected
    assert result.session_count == memory.session_count


@pytest.mark.parametrize("windows", [False, True], ids=["memory", "buckets-windows"])
def test_the_units_counted_are_those_of_the_times_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, windows: bool
) -> None:
    """A rejected row's time (a bad one, or one of an event without a user id) was counted as read in
    the unit of its size: a file whose events are all in seconds was warned of as "2 read as seconds, 1
    as milliseconds" (review of stop 51). Only the times of the events read count."""
    rows = [f"u{i % 5},{START + 60 * i}" for i in range(120)]
    rows[40] = f",{(START + 2400) * 1000}"  # no user id: rejected (empty_user_id)
    rows[80] = f"u1,+{(START + 4800) * 1000}"  # rejected (bad_timestamp)
    source = write_text(tmp_path / "seconds.csv", "user_id,timestamp\n" + "\n".join(rows) + "\n")
    options: dict[str, Any] = {"no_geo": True, "on_invalid": "skip"}
    if windows:
        monkeypatch.setattr(budget_module, "MIN_CHUNK_ROWS", 50)
        options |= {"memory_limit": "8K", "buckets": 7, "temp_dir": str(tmp_path)}
    given, result = _given(lambda: sessionize.run([source], **options))
    assert result.rejected == 2
    assert result.events_read == 118
    assert given == Counter()


@pytest.mark.parametrize("kind", ["csv", "parquet"])
@pytest.mark.parametrize("windows", [False, True], ids=["memory", "buckets-windows"])
def test_dates_as_yyyymmdd_numbers_are_warned_of_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, windows: bool, kind: str
) -> None:
    """A stop-56 review: a column of dates (20240501, GA4's event_date) given as the time column was read
    as epoch seconds in August 1970, by the documented size rule, without a word."""
    days = [20240501 + i % 28 for i in range(ROWS)]
    frame = pl.DataFrame({"user_id": [f"u{i % 23}" for i in range(ROWS)], "event_date": days})
    source = tmp_path / f"events.{kind}"
    if kind == "csv":
        frame.write_csv(source)
    else:
        frame.write_parquet(source, row_group_size=50)
    options: dict[str, Any] = {"time_col": "event_date", "no_geo": True}
    if windows:
        monkeypatch.setattr(budget_module, "MIN_CHUNK_ROWS", 50)
        options.update(memory_limit="8K", buckets=7, temp_dir=str(tmp_path))
    given, result = _given(lambda: sessionize.run([source], **options))
    assert result.session_count > 0
    dated = [message for message in given if "every timestamp is an 8-digit number" in message]
    assert len(dated) == 1 and given[dated[0]] == 1, given
    assert "--time-col" in dated[0] and str(source) in dated[0]
    # Epoch seconds of our time, and a file whose one value is no such date, are not warned of.
    for times in ([START + i for i in range(ROWS)], [*days[:-1], 99991231]):
        frame.with_columns(pl.Series("event_date", times)).write_csv(tmp_path / "other.csv")
        other, _ = _given(
            lambda: sessionize.run([tmp_path / "other.csv"], time_col="event_date", no_geo=True)
        )
        assert not any("8-digit" in message for message in other), other


def _warned(run: Callable[[], sessionize.RunResult]) -> list[str]:
    """Every SessionizeWarning of ``run``, its whitespace squeezed."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run()
    return [
        " ".join(str(w.message).split())
        for w in caught
        if issubclass(w.category, sessionize.SessionizeWarning)
    ]


def test_input_options_that_no_input_is_read_with_are_warned_of(tmp_path: Path) -> None:
    """Leftovers of stop 56's review: ``--visitor-key ip`` and ``--asset-pattern`` on CSV events, or
    ``--encoding latin-1`` with only Parquet and NDJSON inputs, were taken without a word, as if applied.
    Each is a warning naming the flag; with an input they apply to, none."""
    csv = write_text(tmp_path / "events.csv", "user_id,timestamp,url\nu1,2024-05-01T10:00:00Z,/a\n")
    ndjson = write_text(tmp_path / "events.ndjson", '{"user_id":"u1","timestamp":"2024-05-01T10:00:00Z"}\n')
    log = write_text(
        tmp_path / "access.log",
        '203.0.113.7 - - [01/May/2024:10:00:00 +0000] "GET /a HTTP/1.1" 200 1 "-" "Firefox/120.0"\n',
    )
    access: dict[str, Any] = {"visitor_key": "ip", "asset_pattern": r"\.png$", "no_geo": True}
    given = _warned(lambda: sessionize.run([csv], **access))
    assert [m for m in given if "access logs" in m] == [
        "--visitor-key and --asset-pattern apply to web-server access logs, and no input is one: ignored."
    ]
    given = _warned(lambda: sessionize.run([csv, log], **access))
    assert not any("access logs" in m for m in given), given
    given = _warned(lambda: sessionize.run([ndjson], encoding="latin-1", no_geo=True))
    assert any(m.startswith("--encoding latin-1 applies to CSV, TSV and access logs") for m in given), given
    for inputs in ([csv], [ndjson, csv]):
        given = _warned(functools.partial(sessionize.run, inputs, encoding="latin-1", no_geo=True))
        assert not any("--encoding" in m for m in given), given
