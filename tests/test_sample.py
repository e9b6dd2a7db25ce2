"""End to end on the bundled sample data, with figures checked by hand against the raw events."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

import sessionize
from sessionize.cli import app
from tests.helpers import SAMPLE_DATA


@pytest.fixture(scope="module")
def table() -> pl.DataFrame:
    return sessionize.run([SAMPLE_DATA / "events.csv"]).sessions


def test_csv_and_parquet_samples_give_the_same_table(table: pl.DataFrame) -> None:
    assert sessionize.run([SAMPLE_DATA / "events.parquet"]).sessions.equals(table)


def test_headline_figures(table: pl.DataFrame) -> None:
    raw = pl.read_csv(SAMPLE_DATA / "events.csv", infer_schema=False)
    assert table["event_count"].sum() == raw.height == 5614
    assert table["user_id"].n_unique() == raw["user_id"].n_unique() == 400
    # 830 web sessions split by the 30-minute rule + 134 distinct client (app) session ids.
    assert table.height == 964
    app_ids = raw["session_id"].drop_nulls().unique()
    assert table.filter(pl.col("session_id").str.starts_with("app-s-")).height == app_ids.len() == 134
    assert table["session_id"].is_unique().all()


def test_one_users_sessions_checked_by_hand(table: pl.DataFrame) -> None:
    sessions = table.filter(pl.col("user_id") == "u00798")
    assert sessions["session_number"].to_list() == [1, 2, 3, 4, 5, 6]
    first = sessions.row(0, named=True)
    assert first["session_start"] == datetime(2026, 11, 2, 8, 6, 1, 288000, tzinfo=UTC)
    assert first["session_end"] == datetime(2026, 11, 2, 8, 10, 40, 537000, tzinfo=UTC)
    assert first["duration_s"] == 279.249
    assert (first["event_count"], first["pageview_count"]) == (6, 3)
    assert first["landing_page"] == "https://shop.example.com/products/rain-jacket-7"
    assert first["exit_page"] == "https://shop.example.com/"
    assert (first["referrer"], first["traffic_source"]) == ("https://www.google.com/", "google")
    assert first["ip"] == "79.114.156.126"
    assert sessions["traffic_source"].to_list() == [
        "google",
        "google",
        "duckduckgo",
        "google",
        "google",
        "direct",
    ]
    assert sessions["ip"].to_list()[-1] == "99.125.141.100"


def test_gaps_just_around_the_timeout(table: pl.DataFrame) -> None:
    # u15967 pauses 29m59.5s inside a visit; u04963 comes back after 30m00.5s: a new session.
    pause = table.filter(
        (pl.col("user_id") == "u15967")
        & (pl.col("session_start") < datetime(2026, 11, 3, 20, 14, 38, 388000, tzinfo=UTC))
        & (pl.col("session_end") >= datetime(2026, 11, 3, 20, 14, 38, 388000, tzinfo=UTC))
    )
    assert pause.height == 1
    back = table.filter(
        (pl.col("user_id") == "u04963")
        & (pl.col("session_start") == datetime(2026, 11, 3, 0, 4, 21, 852000, tzinfo=UTC))
    )
    assert back.height == 1


def test_numeric_looking_ids_are_kept(table: pl.DataFrame) -> None:
    ids = set(table["user_id"].to_list())
    assert {"u00042", "1000000000001", "1000000098765"} <= ids


def test_cli_on_sample_writes_the_same_table(tmp_path: Path, table: pl.DataFrame) -> None:
    out = tmp_path / "sessions.parquet"
    result = CliRunner().invoke(app, ["run", str(SAMPLE_DATA / "events.csv"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert pl.read_parquet(out).equals(table)
    assert "964" in result.stderr


def test_attribution_of_one_users_sessions(table: pl.DataFrame) -> None:
    sessions = table.filter(pl.col("user_id") == "u00798")
    assert sessions["channel"].to_list() == [
        "Organic Search",  # www.google.com, no tags
        "Paid Search",  # gclid on the landing URL
        "Organic Search",  # duckduckgo.com
        "Paid Search",
        "Organic Search",
        "Direct",
    ]
    second = sessions.row(1, named=True)
    assert (second["utm_source"], second["utm_medium"], second["utm_term"]) == (
        "google",
        "cpc",
        "trail shoes",
    )
    assert second["gclid"] == "Cj0KCQiAZ2lUiTkXql4EdyfxcrWFGXAIpdj-ZYUET7GVCQ1In6H9dXWSS9O3V0sPstWbUi-f"
    assert (second["source_name"], second["medium"]) == ("Google", "search")
    assert sessions["is_engaged"].to_list() == [True, True, True, True, True, True]


def test_every_session_has_a_channel(table: pl.DataFrame) -> None:
    assert table["channel"].null_count() == 0
    # Internal navigation never shows up as a session's source: landing referrers are external or none.
    assert table.filter(pl.col("medium") == "internal").height == 0


@pytest.mark.parametrize("exclude_bots", [False, True])
@pytest.mark.parametrize("buckets", [1, 3])
def test_summary_counts_users_of_the_table(exclude_bots: bool, buckets: int) -> None:
    # The run counts users where the user id changes in its (user-contiguous) table: it must agree with
    # a count of the distinct ids, with bots left out or not and however many parts the table came in.
    result = sessionize.run([SAMPLE_DATA / "events.csv"], exclude_bots=exclude_bots, buckets=buckets)
    assert result.user_count == result.sessions["user_id"].n_unique()
    assert result.session_count == result.sessions.height
    if not exclude_bots:
        assert result.user_count == 400
