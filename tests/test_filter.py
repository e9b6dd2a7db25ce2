"""``--filter COLUMN=VALUES``: keep only some apps or platforms (Snowplow's ``app_id``/``platform``), on
every path, with the rows left out counted: rows read = events + rejected + duplicates + filtered out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import sessionize
from sessionize.errors import MissingColumnError, SessionizeWarning, UsageError
from tests.helpers import EVERY_PATH, KEYS, OTHER_PATHS, path_options, path_sessions, run_cli, write_text

LINES = [
    "app_id,platform,domain_userid,derived_tstamp,event,page_url,event_id",
    "shop,web,u1,2024-05-01T10:00:00Z,page_view,https://shop.example/,e1",
    "shop,web,u1,2024-05-01T10:05:00Z,page_view,https://shop.example/cart,e2",
    # Another app of the same visitor: left out, and so is its unparseable time (never rejected).
    "blog,web,u1,2024-05-01T10:02:00Z,page_view,https://blog.example/,e3",
    "blog,web,u1,not a time,page_view,https://blog.example/x,e4",
    # The shop's mobile app: kept with --filter platform=web,mob.
    "shop,mob,u2,2024-05-01T11:00:00Z,screen_view,,e5",
    "shop,srv,u2,2024-05-01T11:01:00Z,purchase,,e6",
    # No app id: a null never passes a filter.
    ",web,u3,2024-05-01T12:00:00Z,page_view,https://shop.example/,e7",
    # A repeated event id and a row without a time in a kept app: counted as duplicate and rejected.
    "shop,web,u1,2024-05-01T10:05:00Z,page_view,https://shop.example/cart,e2",
    "shop,web,u1,,page_view,https://shop.example/cart,e8",
]
FLAGS = ("--user-col", "domain_userid", "--filter", "app_id=shop", "--filter", "platform=web,mob")


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return write_text(tmp_path / "events.csv", "\n".join(LINES) + "\n")


def test_only_the_rows_of_the_filters_are_sessionized_and_the_rest_is_counted(
    source: Path, tmp_path: Path
) -> None:
    out, rejects = tmp_path / "sessions.csv", tmp_path / "rejects.csv"
    result = run_cli(
        source,
        "-o",
        out,
        "--no-geo",
        "--on-invalid",
        "skip",
        "--rejects",
        rejects,
        "--log-format",
        "json",
        *FLAGS,
    )
    assert result.exit_code == 0, result.output
    table = pl.read_csv(out).sort("user_id")
    assert table.select("user_id", "event_count", "landing_page", "exit_page").rows() == [
        ("u1", 2, "https://shop.example/", "https://shop.example/cart"),
        ("u2", 1, None, None),
    ]
    summary = json.loads(result.output.strip().splitlines()[-1])
    # 9 rows: 2 + 1 events, 1 rejected (no time), 1 duplicate, 4 filtered out (blog x2, srv, no app id).
    assert (summary["rows_read"], summary["events"], summary["rejected"], summary["duplicates_removed"],
            summary["filtered_out"]) == (9, 3, 1, 1, 4)  # fmt: skip
    assert pl.read_csv(rejects, infer_schema=False).get_column("event_id").to_list() == ["e8"]


def test_the_summary_panel_names_the_rows_filtered_out(source: Path, tmp_path: Path) -> None:
    result = run_cli(source, "-o", tmp_path / "s.csv", "--no-geo", "--on-invalid", "skip", *FLAGS)
    assert result.exit_code == 0, result.output
    assert "filtered out" in result.output
    assert "4 (--filter, --max-send-delay, --session-cap)" in result.output


@pytest.mark.parametrize("path", OTHER_PATHS)
def test_every_path_filters_and_counts_alike(source: Path, tmp_path: Path, path: dict[str, object]) -> None:
    options: dict[str, Any] = {
        "user_col": "domain_userid",
        "filter": ["app_id=shop", "platform=web,mob"],
        "no_geo": True,
        "on_invalid": "skip",
    }
    memory = sessionize.run([source], **options)
    extra = path_options(path, tmp_path)
    other = sessionize.run([source], **options, **extra)
    figures = ("rows_read", "filtered_out", "rejected", "duplicates_removed", "events_read")
    assert [getattr(other, name) for name in figures] == [getattr(memory, name) for name in figures]
    assert memory.filtered_out == 4
    sessions = path_sessions(other, extra)
    assert sessions.select(memory.sessions.columns).sort(KEYS).equals(memory.sessions.sort(KEYS))


def test_a_frame_a_mapping_and_the_config_file(source: Path, tmp_path: Path) -> None:
    frame = pl.read_csv(source, infer_schema=False).filter(pl.col("derived_tstamp").str.starts_with("2024"))
    table = sessionize.sessionize(
        frame, user_col="domain_userid", filter={"app_id": "shop", "platform": ["web", "mob"]}, no_geo=True
    ).collect()
    assert sorted(table.get_column("user_id")) == ["u1", "u2"]
    config = write_text(tmp_path / "s.toml", '[run]\nuser-col = "domain_userid"\nfilter = ["app_id=blog"]\n')
    out = tmp_path / "s.csv"
    result = run_cli(source, "--config", config, "-o", out, "--no-geo", "--on-invalid", "skip")
    assert result.exit_code == 0, result.output
    assert pl.read_csv(out).get_column("landing_page").to_list() == ["https://blog.example/"]


def test_column_names_match_like_the_others(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "s.csv"
    result = run_cli(source, "-o", out, "--no-geo", "--user-col", "domain_userid", "--filter", "App ID=shop",
                     "--on-invalid", "skip")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert pl.read_csv(out).height == 2


def test_bad_filters_are_clear_errors(source: Path, tmp_path: Path) -> None:
    missing = run_cli(source, "-o", tmp_path / "s.csv", "--no-geo", "--user-col", "domain_userid",
                      "--filter", "app=shop")  # fmt: skip
    assert missing.exit_code != 0
    assert "no column 'app'" in missing.output and "--filter app=" in missing.output
    assert "did you mean 'app_id'" in missing.output
    assert not (tmp_path / "s.csv").exists()
    with pytest.raises(MissingColumnError):
        sessionize.run([source], user_col="domain_userid", filter="app=shop", no_geo=True)
    # The file's columns, not the reader's row number (review 54 L1: "Its columns are: _row, ...").
    plain = write_text(
        tmp_path / "f.csv", "user_id,timestamp,url,app_id\nu1,2024-05-01T10:00:00Z,https://s/a,shop\n"
    )
    with pytest.raises(MissingColumnError, match=r"Its columns are: user_id, timestamp, url, app_id\."):
        sessionize.run([plain], filter="nosuch=1", no_geo=True)
    for bad in ("app_id", "=shop", "app_id="):
        with pytest.raises(UsageError, match="--filter"):
            sessionize.run([source], user_col="domain_userid", filter=bad, no_geo=True)
    with pytest.raises(UsageError, match="twice"):
        sessionize.run([source], user_col="domain_userid", filter=["app_id=a", "app_id=b"], no_geo=True)


def test_events_sent_too_late_are_left_out_and_counted(tmp_path: Path) -> None:
    """--max-send-delay (Snowplow's days_late_allowed; the snowplow preset's 3 days): an event whose device
    sent it more than that after creating it is left out and counted; exactly 3 days passes; a row without
    both device times is left out too, as Snowplow's base events model leaves it (its default
    allow_null_dvce_tstamps = false: the comparison with a null time is not true)."""
    header = "domain_userid,derived_tstamp,dvce_created_tstamp,dvce_sent_tstamp,event,event_id,page_url\n"
    source = write_text(
        tmp_path / "events.csv",
        header
        + "u1,2024-05-05T10:00:00Z,2024-05-05T10:00:00Z,2024-05-05T10:00:01Z,page_view,e1,https://a.example/\n"
        # Created on the 1st, sent on the 5th: 4 days late (a clock or a bot), left out.
        + "u1,2024-05-05T10:01:00Z,2024-05-01T10:01:00Z,2024-05-05T10:01:00Z,page_view,e2,https://a.example/old\n"
        # Exactly 3 days: kept.
        + "u1,2024-05-05T10:02:00Z,2024-05-02T10:02:00Z,2024-05-05T10:02:00Z,page_view,e3,https://a.example/b\n"
        # No sent time, or one that does not parse: left out, as Snowplow's `sent <= created + 3 days`
        # is not true there.
        + "u1,2024-05-05T10:03:00Z,2024-05-01T10:03:00Z,,page_view,e4,https://a.example/c\n"
        + "u1,2024-05-05T10:03:30Z,2024-05-01T10:03:00Z,next tuesday,page_view,e5,https://a.example/c\n",
    )
    options: dict[str, Any] = {"user_col": "domain_userid", "no_geo": True, "max_send_delay": "3d"}
    result = sessionize.run([source], **options)
    assert (result.rows_read, result.filtered_out, result.events_read, result.rejected) == (5, 3, 2, 0)
    assert result.sessions.get_column("exit_page").to_list() == ["https://a.example/b"]
    preset = sessionize.run([source], preset="snowplow", session_col="event", no_geo=True)  # no session id
    assert preset.filtered_out == 3
    buckets = sessionize.run([source], **options, buckets=2, temp_dir=str(tmp_path))
    assert buckets.filtered_out == 3 and buckets.sessions.equals(result.sessions)
    # Without the two columns: a warning, nothing left out.
    plain = write_text(tmp_path / "plain.csv", "domain_userid,derived_tstamp\nu1,2024-05-05T10:00:00Z\n")
    with pytest.warns(SessionizeWarning, match="--max-send-delay"):
        assert sessionize.run([plain], **options).filtered_out == 0


def test_a_malformed_web_page_context_is_no_page_view_id(tmp_path: Path) -> None:
    """The web_page context is client-written JSON: truncated or not JSON at all, it gives no id (the page
    view counts as one, on its own), never an error."""
    source = write_text(
        tmp_path / "events.csv",
        "domain_userid,derived_tstamp,event,page_url,contexts_com_snowplowanalytics_snowplow_web_page_1\n"
        'u1,2024-05-01T10:00:00Z,page_view,https://a.example/,"[{""id"": ""p1""}]"\n'
        'u1,2024-05-01T10:00:05Z,page_view,https://a.example/,"[{""id"": ""p1""}]"\n'
        'u1,2024-05-01T10:00:10Z,page_view,https://a.example/b,"[{""id"": "\n'
        "u1,2024-05-01T10:00:20Z,page_view,https://a.example/c,[not json\n",
    )
    result = sessionize.run([source], user_col="domain_userid", no_geo=True)
    # p1 twice is one page view (the second a duplicate); the two malformed contexts are two page views.
    assert (result.duplicates_removed, result.rejected) == (1, 0)
    assert result.sessions.get_column("pageview_count").to_list() == [3]


SESSION_IDS = """domain_userid,domain_sessionid,derived_tstamp,event,page_url,event_id
u1,s1,2024-05-01T10:00:00Z,page_view,https://shop.example/,e1
u1,,2024-05-01T10:01:00Z,page_view,https://shop.example/no-session,e2
u1,s1,2024-05-01T10:05:00Z,page_view,https://shop.example/cart,e3
u2,,2024-05-01T11:00:00Z,page_view,https://shop.example/,e4
u2,s2,2024-05-01T11:02:00Z,page_view,https://shop.example/b,e5
u3,,not a time,page_view,https://shop.example/,e6
"""


@pytest.mark.parametrize("path", EVERY_PATH)
def test_events_without_a_session_id_are_left_out_and_counted(
    tmp_path: Path, path: dict[str, object]
) -> None:
    """--require-session-id (the snowplow preset's): Snowplow processes no event without its
    domain_sessionid. Those rows are counted as filtered out before any check (the one without a time is
    not rejected); rows read = events + rejected + duplicates + filtered out."""
    source = write_text(tmp_path / "events.csv", SESSION_IDS)
    extra = path_options(path, tmp_path)
    options: dict[str, Any] = {"user_col": "domain_userid", "session_col": "domain_sessionid", "no_geo": True}
    result = sessionize.run([source], **options, require_session_id=True, **extra)
    assert (result.rows_read, result.filtered_out, result.events_read, result.rejected) == (6, 3, 3, 0)
    sessions = path_sessions(result, extra)
    assert sessions.sort("user_id").select("session_id", "event_count").rows() == [("s1", 2), ("s2", 1)]


def test_the_snowplow_preset_requires_a_session_id_and_a_column_is_needed(tmp_path: Path) -> None:
    source = write_text(tmp_path / "events.csv", SESSION_IDS)
    # (No device time columns here: --max-send-delay warns and leaves the rows alone.)
    with pytest.warns(SessionizeWarning, match="--max-send-delay"):
        preset = sessionize.run([source], preset="snowplow", no_geo=True)
        assert preset.filtered_out == 3
        kept = sessionize.run(
            [source], preset="snowplow", no_geo=True, require_session_id=False, on_invalid="skip"
        )
        assert (kept.filtered_out, kept.rejected) == (0, 1)
    frame = pl.read_csv(source, infer_schema=False)
    table = sessionize.sessionize(frame, user_col="domain_userid", require_session_id=True, no_geo=True)
    assert table.collect().get_column("session_id").sort().to_list() == ["s1", "s2"]
    plain = write_text(tmp_path / "plain.csv", "user_id,timestamp\nu1,2024-05-01T10:00:00Z\n")
    result = run_cli(plain, "--require-session-id", "--no-geo", "-o", tmp_path / "s.csv")
    assert result.exit_code == 1 and "--require-session-id" in " ".join(result.output.split())
    assert not (tmp_path / "s.csv").exists()
