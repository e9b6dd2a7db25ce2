"""``--session-cap`` (Snowplow's ``snowplow__max_session_days``, the snowplow preset's 3 days): the events
of a client session more than the cap after its first event are left out and counted as filtered out, on
every path; rows read = events + rejected + duplicates + filtered out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest

import sessionize
from sessionize.engines.incremental import load_state
from sessionize.errors import UsageError
from tests.helpers import EVERY_PATH, path_options, path_sessions, run_cli, session_rows, write_text
from tests.helpers import SNOWPLOW_HEADER as HEADER
from tests.helpers import SNOWPLOW_OPTIONS as OPTIONS

# s1 starts on the 1st at 10:00 (its first event comes late in the file): the cap ends on the 4th at
# 10:00, exactly 3 days later, which stays in; a second later does not, nor the 5th.
LINES = [
    "u1,s1,2024-05-02T09:00:00Z,page_view,https://shop.example/day2,e2",
    "u1,s1,2024-05-04T10:00:00Z,page_view,https://shop.example/day4,e3",
    "u1,s1,2024-05-01T10:00:00Z,page_view,https://shop.example/,e1",
    "u1,s1,2024-05-04T10:00:01Z,page_view,https://shop.example/late,e4",
    "u1,s1,2024-05-05T12:00:00Z,page_view,https://shop.example/later,e5",
    # Without a client session id: timeout sessions, never capped (5 days apart, two sessions).
    "u1,,2024-05-01T10:00:00Z,page_view,https://shop.example/a,e6",
    "u1,,2024-05-06T10:00:00Z,page_view,https://shop.example/b,e7",
    # Another user's session of the same id: its own start (the cap is per user and session id).
    "u2,s1,2024-05-05T11:00:00Z,page_view,https://shop.example/u2,e8",
    "u2,s1,2024-05-08T11:00:00Z,page_view,https://shop.example/u2-end,e9",
    # A repeated event id beyond the cap: a duplicate first, never counted twice.
    "u1,s1,2024-05-05T12:00:00Z,page_view,https://shop.example/later,e5",
]


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return write_text(tmp_path / "events.csv", HEADER + "\n".join(LINES) + "\n")


def capped_sessions(table: pl.DataFrame) -> list[tuple[Any, ...]]:
    return session_rows(table, "user_id", "session_id", "event_count", "exit_page", "duration_s")


EXPECTED = [
    ("u1", "s1", 3, "https://shop.example/day4", 3 * 86400.0),
    ("u1", "u1-20240501T100000.000000", 1, "https://shop.example/a", 0.0),
    ("u1", "u1-20240506T100000.000000", 1, "https://shop.example/b", 0.0),
    ("u2", "s1", 2, "https://shop.example/u2-end", 3 * 86400.0),
]


@pytest.mark.parametrize("path", EVERY_PATH)
def test_events_beyond_the_cap_are_left_out_and_counted(
    source: Path, tmp_path: Path, path: dict[str, Any]
) -> None:
    chosen = path_options(path, tmp_path)
    result = sessionize.run([source], **OPTIONS, session_cap="3d", **chosen)
    assert capped_sessions(path_sessions(result, chosen)) == EXPECTED
    assert (result.rows_read, result.events_read, result.duplicates_removed, result.filtered_out) == (
        10,
        7,
        1,
        2,
    )
    assert result.rejected == 0
    # Without the cap every event is in its session.
    plain = sessionize.run([source], **OPTIONS, **chosen | _fresh(chosen, tmp_path))
    assert path_sessions(plain, _fresh(chosen, tmp_path) or chosen).filter(
        pl.col("session_id") == "s1", pl.col("user_id") == "u1"
    ).get_column("event_count").to_list() == [5]


def _fresh(chosen: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """The incremental path's directories for a second, independent run."""
    if "state" not in chosen:
        return {}
    return {"state": str(tmp_path / "state2"), "output_dir": str(tmp_path / "out2")}


def test_the_page_view_and_user_tables_leave_the_same_events_out(source: Path) -> None:
    tables = sessionize.sessionize_tables(
        pl.read_csv(source, infer_schema=False), **OPTIONS, session_cap="3d"
    )
    pages = tables.pageviews.filter(pl.col("user_id") == "u1", pl.col("session_id") == "s1")
    assert pages.sort("page_view_in_session").get_column("page_url").to_list() == [
        "https://shop.example/",
        "https://shop.example/day2",
        "https://shop.example/day4",
    ]
    assert tables.users.sort("user_id").get_column("events").to_list() == [5, 2]


def test_incremental_runs_count_what_each_run_leaves_out(tmp_path: Path) -> None:
    """A session continued by a later run: the events that run brings beyond the cap are its filtered out;
    the state keeps none of them, so no later run counts them again."""

    def lines(*rows: str) -> str:
        return HEADER + "".join(
            f"u1,s1,2024-05-01T{row},page_view,https://a.example/{row[:5]},e{row}\n" for row in rows
        )

    first = write_text(tmp_path / "a.csv", lines("10:00:00Z", "10:30:00Z"))
    second = write_text(tmp_path / "b.csv", lines("11:00:00Z", "11:00:01Z"))
    third = write_text(tmp_path / "c.csv", lines("11:20:00Z"))
    dirs: dict[str, Any] = {"state": str(tmp_path / "state"), "output_dir": str(tmp_path / "out")}
    runs = [sessionize.run([f], **OPTIONS, session_cap="1h", **dirs) for f in (first, second, third)]
    assert [(r.rows_read, r.events_read, r.filtered_out) for r in runs] == [(2, 2, 0), (2, 1, 1), (1, 0, 1)]
    table = pl.read_parquet(tmp_path / "out" / "**" / "*.parquet")
    assert table.select("session_id", "event_count", "exit_page").rows() == [
        ("s1", 3, "https://a.example/11:00")
    ]
    assert load_state(tmp_path / "state").events.height == 3


def test_the_snowplow_preset_caps_sessions_at_three_days(source: Path, tmp_path: Path) -> None:
    """No other flag: the preset's user, session id and time columns, and its 3-day cap. (The file has no
    device times: --max-send-delay warns and leaves the rows alone.) The preset also makes s1 one session
    of its first event's user id, u1 (--shared-session-ids merge): u2's events in it are capped from u1's
    start."""
    out = tmp_path / "sessions.csv"
    result = run_cli(source, "--preset", "snowplow", "--no-geo", "-o", out)
    assert result.exit_code == 0, result.output
    table = pl.read_csv(out, try_parse_dates=True)
    assert table.select("user_id", "session_id", "event_count", "exit_page").rows() == [
        ("u1", "s1", 3, "https://shop.example/day4")
    ]
    # Four beyond the cap (u1's two, u2's two), two without a session id.
    assert "6 (--filter, --max-send-delay, --session-cap)" in " ".join(result.output.split())
    split = run_cli(source, "--preset", "snowplow", "--shared-session-ids", "split", "--no-geo", "-o", out)
    assert split.exit_code == 0, split.output
    assert pl.read_csv(out).sort("user_id").select("session_id", "event_count").rows() == [
        ("s1", 3),
        ("s1", 2),
    ]


def test_a_frame_and_the_config_file(source: Path, tmp_path: Path) -> None:
    frame = pl.read_csv(source, infer_schema=False)
    table = sessionize.sessionize(frame, **OPTIONS, session_cap="3d").collect()
    assert capped_sessions(table) == EXPECTED
    config = write_text(tmp_path / "sessionize.toml", '[run]\nsession-cap = "3d"\n')
    out = tmp_path / "s.parquet"
    result = run_cli(
        source,
        "--config",
        config,
        "--user-col",
        "domain_userid",
        "--session-col",
        "domain_sessionid",
        "--no-geo",
        "-o",
        out,
    )
    assert result.exit_code == 0, result.output
    assert capped_sessions(pl.read_parquet(out)) == EXPECTED


def test_a_bad_cap_is_a_usage_error(source: Path) -> None:
    with pytest.raises(UsageError, match="--session-cap"):
        sessionize.run([source], **OPTIONS, session_cap="three days")
    result = run_cli(source, "--session-cap", "-1d", "--no-geo")
    assert result.exit_code != 0 and "--session-cap" in " ".join(result.output.split())


COLLIDING = """user_id,session_id,timestamp,url
u9,,2024-05-01T10:00:00Z,https://x/a
u9,u9-20240501T100000.000000,2024-05-01T10:00:00Z,https://x/b
u9,u9-20240501T100000.000000,2024-05-09T10:00:00Z,https://x/c
"""


@pytest.mark.parametrize("path", EVERY_PATH)
def test_a_client_id_equal_to_a_generated_one_is_counted_once(tmp_path: Path, path: dict[str, Any]) -> None:
    """A client may send a session id equal to the id the timeout gives another of its sessions: the event
    left out by the cap is still counted once (rows read = events + filtered out)."""
    source = write_text(tmp_path / "c.csv", COLLIDING)
    chosen = path_options(path, tmp_path)
    result = sessionize.run([source], session_cap="3d", no_geo=True, **chosen)
    assert (result.rows_read, result.events_read, result.filtered_out, result.duplicates_removed) == (
        3,
        2,
        1,
        0,
    )
