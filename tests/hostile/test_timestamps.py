"""Issue 18, point 8: timestamps are never wrapped, never guessed silently, and local times that a
clock change skips or repeats are named as such."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import sessionize
from sessionize.errors import BadTimestampError, SessionizeWarning


def write(path: Path, rows: list[str]) -> Path:
    path.write_text("user_id,timestamp\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def rejected(path: Path) -> list[tuple[str, str]]:
    return pl.read_csv(path).select("user_id", "reject_reason").rows()


@pytest.mark.parametrize("typed", [False, True], ids=["csv-text", "parquet-int64"])
def test_the_nat_sentinel_and_overflowing_epochs_are_bad_timestamps(tmp_path: Path, typed: bool) -> None:
    values = [-(2**63), 1714557600, 2**63 - 1]
    if typed:
        events = tmp_path / "events.parquet"
        pl.DataFrame({"user_id": ["nat", "ok", "max"], "timestamp": values}).write_parquet(events)
    else:
        events = write(
            tmp_path / "events.csv", [f"nat,{values[0]}", f"ok,{values[1]}", "huge,99999999999999999999999"]
        )
    rejects = tmp_path / "rejects.csv"
    result = sessionize.run([events], no_geo=True, on_invalid="skip", rejects=rejects)
    assert result.sessions.get_column("user_id").to_list() == ["ok"]
    assert {reason for _, reason in rejected(rejects)} == {"bad_timestamp"}
    assert result.rejected == 2


def test_one_overflowing_value_with_a_time_unit_is_one_bad_row(tmp_path: Path) -> None:
    events = write(tmp_path / "events.csv", ["big,9999999999999", "ok,1714557600"])
    rejects = tmp_path / "rejects.csv"
    result = sessionize.run([events], no_geo=True, time_unit="s", on_invalid="skip", rejects=rejects)
    assert result.events_read == 1 and rejected(rejects) == [("big", "bad_timestamp")]
    with pytest.raises(BadTimestampError, match="9999999999999"):
        sessionize.run([events], no_geo=True, time_unit="s")


def test_epochs_of_two_sizes_are_read_but_said(tmp_path: Path) -> None:
    # 253402300799 is 9999-12-31 in seconds, and 1978 in milliseconds: the size says milliseconds.
    events = write(tmp_path / "events.csv", ["a,1714557600", "b,1714557660", "c,253402300799"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sessionize.run([events], no_geo=True)
    said = [str(w.message) for w in caught if issubclass(w.category, SessionizeWarning)]
    assert any("2 read as seconds, 1 as milliseconds" in text and "--time-unit" in text for text in said)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sessionize.run([write(tmp_path / "one.csv", ["a,1714557600", "b,1714557660"])], no_geo=True)
    assert not [w for w in caught if issubclass(w.category, SessionizeWarning)]


def test_the_warning_reaches_the_json_summary(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from sessionize.cli import app

    events = write(tmp_path / "events.csv", ["a,1714557600", "c,253402300799"])
    result = CliRunner().invoke(
        app, ["run", str(events), "--no-geo", "--log-format", "json", "-o", str(tmp_path / "s.csv")]
    )
    assert result.exit_code == 0, result.output
    line = json.loads(result.stderr.strip().splitlines()[-1])
    assert any("--time-unit" in warning for warning in line["warnings"])


DST = ["gap,2024-03-31 02:30:00", "twice,2024-10-27 02:30:00", "plain,2024-05-01 10:00:00"]


def test_a_local_time_in_the_skipped_hour_is_named(tmp_path: Path) -> None:
    events = write(tmp_path / "events.csv", DST)
    with pytest.raises(BadTimestampError, match=r"do not exist in Europe/Berlin.*daylight saving"):
        sessionize.run([events], no_geo=True, timezone="Europe/Berlin")
    rejects = tmp_path / "rejects.csv"
    sessionize.run([events], no_geo=True, timezone="Europe/Berlin", on_invalid="skip", rejects=rejects)
    assert rejected(rejects) == [("gap", "nonexistent_local_time")]


def test_a_skipped_local_time_in_the_rarer_forms_is_named_too(tmp_path: Path) -> None:
    """Review 46: a date with slashes or ISO's basic format in the skipped hour was a bad_timestamp."""
    events = write(tmp_path / "events.csv", ["slash,2024/03/31 02:30:00", "basic,20240331T023000", *DST[2:]])
    rejects = tmp_path / "rejects.csv"
    sessionize.run([events], no_geo=True, timezone="Europe/Berlin", on_invalid="skip", rejects=rejects)
    assert sorted(rejected(rejects)) == [
        ("basic", "nonexistent_local_time"),
        ("slash", "nonexistent_local_time"),
    ]


@pytest.mark.parametrize(
    ("mode", "hour_utc"),
    [("earliest", 0), ("latest", 1), ("reject", None)],
    ids=["earliest", "latest", "reject"],
)
def test_a_repeated_local_time_follows_ambiguous_time(
    tmp_path: Path, mode: str, hour_utc: int | None
) -> None:
    events = write(tmp_path / "events.csv", DST)
    rejects = tmp_path / "rejects.csv"
    result = sessionize.run(
        [events],
        no_geo=True,
        timezone="Europe/Berlin",
        on_invalid="skip",
        rejects=rejects,
        ambiguous_time=mode,
    )
    starts = dict(result.sessions.select("user_id", "session_start").rows())
    if hour_utc is None:
        assert "twice" not in starts
        assert ("twice", "ambiguous_local_time") in rejected(rejects)
    else:
        assert starts["twice"].hour == hour_utc
    with pytest.raises(sessionize.UsageError, match="--ambiguous-time"):
        sessionize.run([events], no_geo=True, ambiguous_time="first")


@pytest.mark.parametrize(
    "path",
    [
        pytest.param({}, id="memory"),
        pytest.param({"buckets": 3}, id="buckets"),
        pytest.param({"state": "STATE", "output_dir": "OUT"}, id="incremental"),
        # The file read whole by a worker (Polars), or by Spark's own reader (Parquet, CSV lines) in splits.
        pytest.param({"spark": "whole"}, id="spark", marks=pytest.mark.slow),
        pytest.param({"spark": "split"}, id="spark-split", marks=pytest.mark.slow),
    ],
)
@pytest.mark.parametrize("typed", [False, True], ids=["csv-text", "parquet-datetime"])
def test_a_time_before_year_1_or_after_9999_is_a_bad_timestamp(
    tmp_path: Path, path: dict[str, str], typed: bool, request: pytest.FixtureRequest
) -> None:
    """Review 48: a text time in the year 0 was an event in memory (a session starting in year 0) and
    crashed an incremental run ("Unexpected error: ValueError: year 0 is out of range"); epoch numbers
    were already held to years 1-9999. A text or a datetime beyond is a bad timestamp on every path,
    Spark's too (whose Parquet reader hands the workers the datetimes of a split file)."""
    if typed:
        # 0000-05-01T10:00:00Z, 2024-05-01T10:00:00Z and 10000-01-01T10:00:00Z as microseconds since 1970
        # (years 0 and 10000 cannot be Python datetimes).
        micros = [(-62_156_764_800 + 36_000) * 1_000_000, 1_714_557_600_000_000, 253_402_336_800_000_000]
        events = tmp_path / "events.parquet"
        pl.DataFrame(
            {"user_id": ["u0", "u1", "u9"], "timestamp": pl.Series(micros).cast(pl.Datetime("us", "UTC"))}
        ).write_parquet(events)
    else:
        rows = ["u0,0000-05-01T10:00:00Z", "u1,2024-05-01T10:00:00Z", "u9,+10000-01-01T10:00:00Z"]
        events = write(tmp_path / "events.csv", rows)
    options: dict[str, Any] = {
        k: str(tmp_path / v) if k in ("state", "output_dir") else v for k, v in path.items()
    }
    if "spark" in options:
        session = request.getfixturevalue("spark_session")
        if options.pop("spark") == "split":
            previous = session.conf.get("spark.sql.files.maxPartitionBytes")
            request.addfinalizer(lambda: session.conf.set("spark.sql.files.maxPartitionBytes", previous))
            session.conf.set("spark.sql.files.maxPartitionBytes", str(events.stat().st_size - 1))
        options["spark"] = session
    result = sessionize.run(
        [events], no_geo=True, on_invalid="skip", rejects=str(tmp_path / "rejects.csv"), **options
    )
    assert (result.rows_read, result.events_read, result.rejected) == (3, 1, 2)
    assert sorted(rejected(tmp_path / "rejects.csv")) == [("u0", "bad_timestamp"), ("u9", "bad_timestamp")]
    if path.get("spark") == "split":
        assert result.path_taken.endswith("1 large file(s) read in splits"), result.path_taken
    # Without --on-invalid skip, the run stops (an incremental one would not read the file again).
    again = {k: v for k, v in options.items() if k in ("buckets", "spark")}
    with pytest.raises(BadTimestampError, match="do not parse"):
        sessionize.run([events], no_geo=True, **again)


@pytest.mark.parametrize("engine", [[], ["--buckets", "2"]], ids=["memory", "buckets"])
def test_a_naive_time_only_chrono_takes_is_a_reject_of_the_cli(tmp_path: Path, engine: list[str]) -> None:
    """The naive SQL shape's fast formats took what chrono takes when Polars' fixed-width parse fails (a
    sign before the year, a one-digit day, a tab for the space) as events, where the general parsers give
    null. Through the CLI they are bad timestamps, as the year -2024 is, each row counted once."""
    from typer.testing import CliRunner

    from sessionize.cli import app

    bad = ["signed,+2024-05-1 10:00:00", "short,2024-05-1 10:00:00.123456", "tab,2024-05-01\t10:00:00"]
    bad.append("negative,-2024-05-01 10:00:00")
    events = write(tmp_path / "events.csv", [*bad, "plain,2024-05-01 10:00:00"])
    rejects, sessions = tmp_path / "rejects.csv", tmp_path / "sessions.csv"
    args = ["--on-invalid", "skip", "--rejects", str(rejects), "-o", str(sessions), "--log-format", "json"]
    result = CliRunner().invoke(app, ["run", str(events), "--no-geo", *args, *engine])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stderr.strip().splitlines()[-1])
    assert (summary["rows_read"], summary["events"], summary["rejected"]) == (5, 1, 4)
    assert summary["rows_read"] == summary["events"] + summary["rejected"]
    assert sorted(rejected(rejects)) == sorted(
        (user, "bad_timestamp") for user in ("signed", "short", "tab", "negative")
    )
    assert pl.read_csv(sessions).get_column("user_id").to_list() == ["plain"]
