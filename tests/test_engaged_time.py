"""``engaged_time_s``: from heartbeats (Snowplow's page pings) or from the gaps between events, and
``--engaged-threshold`` for ``is_engaged``. Every value below is worked out by hand from the rule
written beside it (docs/metrics.md)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import sessionize
from sessionize import core
from sessionize import schema as S
from sessionize.errors import SessionizeWarning
from sessionize.normalize import prepare_events
from tests.helpers import DATA, KEYS, run_cli, write_text

HEADER = "user_id,timestamp,event,url\n"


def engaged(source: Path, **options: Any) -> list[tuple[str, float, bool]]:
    table = sessionize.run([source], no_geo=True, **options).sessions.sort("user_id", "session_start")
    return table.select("user_id", "engaged_time_s", "is_engaged").rows()


def test_without_heartbeats_the_gaps_capped_at_five_minutes(tmp_path: Path) -> None:
    source = write_text(
        tmp_path / "e.csv",
        HEADER
        # Gaps 60 s and 600 s (capped at 300 s): 360 s; 25 minutes apart, so one session.
        + "a,2024-05-01T10:00:00Z,page_view,https://x.example/\n"
        + "a,2024-05-01T10:01:00Z,click,https://x.example/\n"
        + "a,2024-05-01T10:11:00Z,page_view,https://x.example/b\n"
        # One event: 0.
        + "b,2024-05-01T10:00:00Z,page_view,https://x.example/\n",
    )
    assert engaged(source) == [("a", 360.0, True), ("b", 0.0, False)]


def test_snowplow_page_pings(tmp_path: Path) -> None:
    """Per page view, its pings' distinct 10-second windows (floor(epoch / 10)): 10 x (windows - 1) + 5;
    0 for a page view without pings; the session adds its page views'."""
    source = write_text(
        tmp_path / "e.csv",
        HEADER
        + "a,2024-05-01T10:00:00Z,page_view,https://x.example/\n"
        # Windows ...:01 (10:00:10) and ...:02 (10:00:20, 10:00:25): 2 -> 10 x 1 + 5 = 15 s.
        + "a,2024-05-01T10:00:10Z,page_ping,https://x.example/\n"
        + "a,2024-05-01T10:00:20Z,page_ping,https://x.example/\n"
        + "a,2024-05-01T10:00:25Z,page_ping,https://x.example/\n"
        # No ping: 0 s.
        + "a,2024-05-01T10:00:40Z,page_view,https://x.example/b\n"
        # One window: 5 s.
        + "a,2024-05-01T10:01:00Z,page_view,https://x.example/c\n"
        + "a,2024-05-01T10:01:12Z,page_ping,https://x.example/c\n"
        # Pings without a page view before them in the session: a page of their own, 10 x 2 + 5.
        + "b,2024-05-01T10:00:00Z,page_ping,https://x.example/\n"
        + "b,2024-05-01T10:00:10Z,page_ping,https://x.example/\n"
        + "b,2024-05-01T10:00:29Z,page_ping,https://x.example/\n",
    )
    rule = {"heartbeat_events": "page_ping", "page_activity_events": "page_ping"}
    assert engaged(source, **rule) == [("a", 20.0, True), ("b", 25.0, True)]
    # Another heartbeat and minimum visit: a's first page 20 x (2 - 1) + 0 (windows :00-:19, :20-:39),
    # its last 0 + 0 (one window); b 20 x (2 - 1) + 0.
    other = {**rule, "heartbeat_interval": "20s", "min_visit_length": "0s"}
    assert [row[1] for row in engaged(source, **other)] == [20.0, 20.0]


def test_the_engaged_threshold(tmp_path: Path) -> None:
    """A page view and a click 30 s later, 4 minutes apart in one case: GA4's rule (10 s of duration) says
    engaged; with --engaged-threshold 60s only the one with 240 s of engaged time is."""
    source = write_text(
        tmp_path / "e.csv",
        HEADER
        + "a,2024-05-01T10:00:00Z,page_view,https://x.example/\n"
        + "a,2024-05-01T10:00:30Z,click,https://x.example/\n"
        + "b,2024-05-01T10:00:00Z,page_view,https://x.example/\n"
        + "b,2024-05-01T10:04:00Z,click,https://x.example/\n",
    )
    assert engaged(source) == [("a", 30.0, True), ("b", 240.0, True)]
    assert engaged(source, engaged_threshold="60s") == [("a", 30.0, False), ("b", 240.0, True)]
    out = tmp_path / "s.csv"
    result = run_cli(source, "-o", out, "--no-geo", "--engaged-threshold", "60s")
    assert result.exit_code == 0, result.output
    assert pl.read_csv(out).get_column("is_bounce").to_list() == [True, False]


def test_ten_seconds_exactly_is_not_engaged_as_the_column_says(tmp_path: Path) -> None:
    # A stop-56 review: SESSION_COLUMNS (the output schema the docs point to) said "at least 10 s" while
    # the run, docs/output.md and GA4 say longer than 10 s.
    source = write_text(
        tmp_path / "e.csv",
        HEADER
        + "a,2024-05-01T10:00:00Z,page_view,https://x.example/\n"
        + "a,2024-05-01T10:00:10Z,click,https://x.example/\n"
        + "b,2024-05-01T10:00:00Z,page_view,https://x.example/\n"
        + "b,2024-05-01T10:00:10.000001Z,click,https://x.example/\n",
    )
    assert engaged(source) == [("a", 10.0, False), ("b", 10.000001, True)]
    column = next(c for c in sessionize.SESSION_COLUMNS if c.name == "is_engaged")
    assert "lasts longer than 10 s" in column.description
    assert "lasts longer than 10 s" in (core.summarize_sessions.__doc__ or "")


def test_the_snowplow_preset_counts_its_pings(tmp_path: Path) -> None:
    """tests/data/presets/snowplow_page_pings.csv, by Snowplow's rule: pings grouped by their web_page id,
    windows on dvce_created_tstamp. The first session: page view id ...a0's two pings (its page view was
    never received; windows 09:00:00 and 09:00:10: 10 x 1 + 5 = 15 s) and ...a2's one ping after /next
    (5 s): 20 s. The second session's two pings of ...b0 were created on the device at 10:00:00 and
    10:00:09 (its clock a second behind: derived_tstamp 10:00:10), one window: 5 s (15 s on
    derived_tstamp, which an export without dvce_created_tstamp falls back to)."""
    source = DATA / "presets" / "snowplow_page_pings.csv"
    result = sessionize.run([source], preset="snowplow", no_geo=True)
    assert result.sessions.sort("user_id").get_column("engaged_time_s").to_list() == [20.0, 5.0]
    # The device time typed (Parquet), and an export without it.
    frame = pl.read_csv(source, infer_schema=False)
    typed = tmp_path / "typed.parquet"
    frame.with_columns(pl.col("dvce_created_tstamp").str.to_datetime(time_zone="UTC")).write_parquet(typed)
    without = tmp_path / "without.csv"
    frame.drop("dvce_created_tstamp", "dvce_sent_tstamp").write_csv(without)
    for path, expected in ((typed, [20.0, 5.0]), (without, [20.0, 15.0])):
        warns = pytest.warns(SessionizeWarning, match="dvce_created_tstamp")
        with warns if path == without else contextlib.nullcontext():
            table = sessionize.run([path], preset="snowplow", no_geo=True).sessions
        assert table.sort("user_id").get_column("engaged_time_s").to_list() == expected


@pytest.mark.parametrize("beats", [(), ("scroll",)])
def test_the_core_s_two_summaries_agree(beats: tuple[str, ...]) -> None:
    """The group_by summary (labelled events) and the session-order one give the same engaged time on
    the sample data, with and without heartbeats."""
    frame = pl.read_csv(Path(__file__).parent.parent / "sample_data" / "events.csv").lazy()
    events = prepare_events(frame, columns=S.resolve_columns(frame.collect_schema().names()))
    rule = S.EngagedTime(heartbeat_events=beats, heartbeat_s=20.0, min_visit_s=3.0)
    labelled = core.summarize_sessions(core.assign_sessions(events, label=True), engaged=rule).collect()
    in_order = core.summarize_sessions(core.assign_sessions(events, label=False), engaged=rule).collect()
    columns = [*KEYS, "engaged_time_s", "is_engaged"]
    assert labelled.sort(KEYS).select(columns).equals(in_order.sort(KEYS).select(columns))
    assert labelled.get_column("engaged_time_s").sum() > 0


REPORTED = """user_id,timestamp,event,url,engagement_ms
a,2024-05-01T10:00:00Z,page_view,https://x.example/,
a,2024-05-01T10:01:00Z,user_engagement,https://x.example/,12500
a,2024-05-01T10:02:00Z,scroll,https://x.example/,"2500"
b,2024-05-01T10:00:00Z,page_view,https://x.example/,
b,2024-05-01T10:04:00Z,click,https://x.example/,not a number
"""


def test_reported_engagement_time_is_summed_where_a_session_has_it(tmp_path: Path) -> None:
    """GA4's rule: engaged time is the sum of the events' engagement_time_msec (a: 12.5 s + 2.5 s). A
    session whose events report none (b: a value that is not a number counts as none) falls back to the
    gaps (240 s)."""
    source = write_text(tmp_path / "e.csv", REPORTED)
    options: dict[str, Any] = {"engagement_time_col": "engagement_ms"}
    assert engaged(source, **options) == [("a", 15.0, True), ("b", 240.0, True)]
    memory = sessionize.run([source], no_geo=True, **options).sessions.sort(KEYS)
    buckets = sessionize.run([source], no_geo=True, buckets=2, temp_dir=str(tmp_path), **options).sessions
    assert buckets.sort(KEYS).equals(memory)
    frame = sessionize.sessionize(pl.read_csv(source), no_geo=True, **options).collect()
    assert frame.sort(KEYS).equals(memory)
    out = tmp_path / "s.csv"
    assert run_cli(source, "-o", out, "--no-geo", "--engagement-time-col", "engagement_ms").exit_code == 0
    assert pl.read_csv(out).get_column("engaged_time_s").to_list() == [15.0, 240.0]


@pytest.mark.parametrize("buckets", [None, "2"])
def test_a_negative_reported_engagement_time_counts_as_none(tmp_path: Path, buckets: str | None) -> None:
    """A negative engagement_time_msec (a broken SDK's) counts as none, as text does: it made the
    session's, the user's and the page view's engaged time negative (-5000 + 1000 ms: -4 s)."""
    source = write_text(
        tmp_path / "events.csv",
        "user_id,timestamp,event,url,engagement_ms\n"
        "e,2024-05-01T10:00:00Z,page_view,/a,-5000\n"
        "e,2024-05-01T10:00:20Z,click,,1000\n"
        "f,2024-05-01T10:00:00Z,page_view,/a,-1\n",
    )
    out, users, views = tmp_path / "s.csv", tmp_path / "u.csv", tmp_path / "p.csv"
    args: list[str | Path] = [
        *("--engagement-time-col", "engagement_ms", "--users-output", users, "--pageviews-output", views)
    ]
    result = run_cli(source, "-o", out, "--no-geo", *args, *(["--buckets", buckets] if buckets else []))
    assert result.exit_code == 0, result.output
    # f reports none: the fallback (a session of one event has 0 s).
    assert dict(pl.read_csv(out).select("user_id", "engaged_time_s").iter_rows()) == {"e": 1.0, "f": 0.0}
    assert dict(pl.read_csv(users).select("user_id", "engaged_time_s").iter_rows()) == {"e": 1.0, "f": 0.0}
    assert (pl.read_csv(views)["engaged_time_s"].drop_nulls() >= 0).all()


def test_the_ga4_preset_reads_engagement_time_msec() -> None:
    """tests/data/presets/ga4.ndjson: the scroll reports 28000 ms in the first session, the newsletter
    visit's user_engagement 60000 ms; the second session reports none and has one event (0 s)."""
    result = sessionize.run([DATA / "presets" / "ga4.ndjson"], preset="ga4", no_geo=True)
    table = result.sessions.sort("user_id", "session_start")
    assert table.get_column("engaged_time_s").to_list() == [28.0, 0.0, 60.0]


def test_the_core_s_two_summaries_agree_on_reported_time(tmp_path: Path) -> None:
    source = write_text(tmp_path / "e.csv", REPORTED)
    frame = pl.read_csv(source).lazy()
    columns = S.resolve_columns(frame.collect_schema().names(), engagement_time_col="engagement_ms")
    events = prepare_events(frame, columns=columns, engagement=True)
    labelled = core.summarize_sessions(core.assign_sessions(events, label=True)).collect()
    in_order = core.summarize_sessions(core.assign_sessions(events, label=False)).collect()
    assert labelled.sort(KEYS).get_column("engaged_time_s").to_list() == [15.0, 240.0]
    assert in_order.sort(KEYS).get_column("engaged_time_s").to_list() == [15.0, 240.0]


# --- Snowplow's rule: pings grouped by page view id, windows on the device's creation time -----------

SNOWPLOW_HEADER = "user_id,timestamp,dvce,event,url,pv\n"
SNOWPLOW_RULE = (
    "--heartbeat-events", "page_ping", "--page-activity-events", "page_ping",
    "--page-view-id-col", "pv", "--heartbeat-time-col", "dvce",
)  # fmt: skip
#: Every case below, worked out by hand: windows are floor(epoch seconds / 10); a page view's engaged time
#: is 10 x (distinct windows - 1) + 5, 0 without pings; a session adds its page views'.
SNOWPLOW_EVENTS = (
    SNOWPLOW_HEADER
    # a: two tabs, pings of page views A and B interleave. By id: A's windows 1, 2, 3 -> 25 s; B's 1, 2
    # -> 15 s; 40 s. The old rule gave every ping to B, the page view before them: windows 1, 2, 3 -> 25 s.
    + "a,2024-05-01T10:00:00Z,2024-05-01T10:00:00Z,page_view,https://x.example/a,A\n"
    + "a,2024-05-01T10:00:05Z,2024-05-01T10:00:05Z,page_view,https://x.example/b,B\n"
    + "a,2024-05-01T10:00:10Z,2024-05-01T10:00:10Z,page_ping,https://x.example/a,A\n"
    + "a,2024-05-01T10:00:12Z,2024-05-01T10:00:12Z,page_ping,https://x.example/b,B\n"
    + "a,2024-05-01T10:00:20Z,2024-05-01T10:00:20Z,page_ping,https://x.example/a,A\n"
    + "a,2024-05-01T10:00:22Z,2024-05-01T10:00:22Z,page_ping,https://x.example/b,B\n"
    + "a,2024-05-01T10:00:30Z,2024-05-01T10:00:30Z,page_ping,https://x.example/a,A\n"
    # b: the device's clock is off. On the device's times (:08, :11) the windows are 0 and 1 -> 15 s; on
    # the event times (:10, :19) one window, 1 -> 5 s.
    + "b,2024-05-01T10:00:00Z,2024-05-01T10:00:00Z,page_view,https://x.example/c,C\n"
    + "b,2024-05-01T10:00:10Z,2024-05-01T10:00:08Z,page_ping,https://x.example/c,C\n"
    + "b,2024-05-01T10:00:19Z,2024-05-01T10:00:11Z,page_ping,https://x.example/c,C\n"
    # c: a ping without a page view id counts for the page view before it (E: window 2 -> 5 s); D's own
    # pings, windows 1 and 3 -> 15 s; 20 s. The old rule: all three for E, windows 1, 2, 3 -> 25 s.
    + "c,2024-05-01T10:00:00Z,2024-05-01T10:00:00Z,page_view,https://x.example/d,D\n"
    + "c,2024-05-01T10:00:05Z,2024-05-01T10:00:05Z,page_view,https://x.example/e,E\n"
    + "c,2024-05-01T10:00:10Z,2024-05-01T10:00:10Z,page_ping,https://x.example/d,D\n"
    + "c,2024-05-01T10:00:20Z,2024-05-01T10:00:20Z,page_ping,https://x.example/e,\n"
    + "c,2024-05-01T10:00:30Z,2024-05-01T10:00:30Z,page_ping,https://x.example/d,D\n"
    # d: a ping without a device time is counted on its event time: windows 2 (:21 on the device), 2
    # (:20) and 4 (:40) -> 2 windows, 15 s. The event times alone: 1, 2, 4 -> 25 s.
    + "d,2024-05-01T10:00:00Z,2024-05-01T10:00:00Z,page_view,https://x.example/f,F\n"
    + "d,2024-05-01T10:00:10Z,2024-05-01T10:00:21Z,page_ping,https://x.example/f,F\n"
    + "d,2024-05-01T10:00:20Z,,page_ping,https://x.example/f,F\n"
    + "d,2024-05-01T10:00:40Z,,page_ping,https://x.example/f,F\n"
)
SNOWPLOW_SESSIONS = [("a", 40.0), ("b", 15.0), ("c", 20.0), ("d", 15.0)]
#: Per page view (user, page view in session, engaged_time_s): the same rule, the pings of its id in its
#: session and those without an id that follow it.
SNOWPLOW_PAGEVIEWS = [
    ("a", 1, 25.0), ("a", 2, 15.0), ("b", 1, 15.0), ("c", 1, 15.0), ("c", 2, 5.0), ("d", 1, 15.0),
]  # fmt: skip
#: Per page view, ``time_on_page_s``: to the next page view; for a session's last, to its own last ping (of
#: its id, or without an id after it), on the event time. a's B: its pings :12 and :22 -> 17 s, not A's :30
#: (25 s, review of stop 52); c's E: the ping without an id at :20 -> 15 s, not D's :30.
SNOWPLOW_TIME_ON_PAGE = [5.0, 17.0, 19.0, 5.0, 15.0, 40.0]


def test_pings_by_page_view_id_on_the_device_s_time(tmp_path: Path) -> None:
    source = write_text(tmp_path / "e.csv", SNOWPLOW_EVENTS)
    out, pageviews = tmp_path / "s.csv", tmp_path / "pv.csv"
    flags = ("--no-geo", "--pageviews-output", pageviews, *SNOWPLOW_RULE)
    result = run_cli(source, "-o", out, *flags)
    assert result.exit_code == 0, result.output
    table = pl.read_csv(out).sort("user_id")
    assert table.select("user_id", "engaged_time_s").rows() == SNOWPLOW_SESSIONS
    views = pl.read_csv(pageviews).sort("user_id", "page_view_in_session")
    assert views.select("user_id", "page_view_in_session", "engaged_time_s").rows() == SNOWPLOW_PAGEVIEWS
    assert views.get_column("time_on_page_s").to_list() == SNOWPLOW_TIME_ON_PAGE
    # The bucketed path (spilled events carry the id and the device time) gives the same.
    result = run_cli(source, "-o", tmp_path / "b.csv", "--buckets", "3", "--temp-dir", tmp_path, *flags[:1],
                     *SNOWPLOW_RULE)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert pl.read_csv(tmp_path / "b.csv").sort("user_id").equals(table)


def test_each_half_of_snowplow_s_rule_alone(tmp_path: Path) -> None:
    """Page view ids alone (windows on the event time): a 40, b 5 (:10, :19), c 20, d 15 (windows 1, 2,
    4 by id F: 25 s; F is d's only page view, so the same as the old rule: 25). The device time alone
    (pings for the page view before them): a 25 (B: windows 1, 2, 3), b 15, c 25 (E: 1, 2, 3), d 15."""
    source = write_text(tmp_path / "e.csv", SNOWPLOW_EVENTS)
    out = tmp_path / "s.csv"
    ids = SNOWPLOW_RULE[:6]
    assert run_cli(source, "-o", out, "--no-geo", *ids).exit_code == 0
    assert pl.read_csv(out).sort("user_id").get_column("engaged_time_s").to_list() == [40.0, 5.0, 20.0, 25.0]
    times = (*SNOWPLOW_RULE[:4], *SNOWPLOW_RULE[6:])
    assert run_cli(source, "-o", out, "--no-geo", *times).exit_code == 0
    assert pl.read_csv(out).sort("user_id").get_column("engaged_time_s").to_list() == [25.0, 15.0, 25.0, 15.0]


def test_the_core_s_two_summaries_agree_on_snowplow_s_rule(tmp_path: Path) -> None:
    source = write_text(tmp_path / "e.csv", SNOWPLOW_EVENTS)
    frame = pl.read_csv(source).lazy()
    names = frame.collect_schema().names()
    columns = S.resolve_columns(names, page_view_id_col="pv", heartbeat_time_col="dvce")
    events = prepare_events(
        frame, columns=columns, page_activity_events=["page_ping"], page_view_ids=True, heartbeat_time=True
    )
    rule = S.EngagedTime(heartbeat_events=("page_ping",))
    for label in (True, False):
        table = core.summarize_sessions(core.assign_sessions(events, label=label), engaged=rule).collect()
        assert table.sort(KEYS).select("user_id", "engaged_time_s").rows() == SNOWPLOW_SESSIONS


def test_a_device_time_column_named_like_a_parsers_helper_is_read_and_quoted(tmp_path: Path) -> None:
    # The heartbeat time's parser adds helper columns: an input column of that name is not overwritten.
    source = write_text(
        tmp_path / "e.csv",
        SNOWPLOW_HEADER.replace("dvce", "_heartbeat_fast")
        + "a,2024-05-01T10:00:00Z,2024-05-01T10:00:00Z,page_view,https://x.example/a,A\n"
        + "a,2024-05-01T10:00:10Z,yesterday,page_ping,https://x.example/a,A\n",
    )
    rule = [*SNOWPLOW_RULE[:-1], "_heartbeat_fast"]
    result = run_cli(source, "-o", tmp_path / "s.csv", "--no-geo", *rule)
    assert result.exit_code != 0
    message = " ".join(result.output.split())
    assert "line 3" in message and "'_heartbeat_fast'" in message and "'yesterday'" in message


def test_a_device_time_that_does_not_parse_is_bad_input(tmp_path: Path) -> None:
    """As a timestamp that does not parse: an error naming the file, line and column, or a reject."""
    source = write_text(
        tmp_path / "e.csv",
        SNOWPLOW_HEADER
        + "a,2024-05-01T10:00:00Z,2024-05-01T10:00:00Z,page_view,https://x.example/a,A\n"
        + "a,2024-05-01T10:00:10Z,yesterday,page_ping,https://x.example/a,A\n"
        + "a,2024-05-01T10:00:20Z,2024-05-01T10:00:20Z,page_ping,https://x.example/a,A\n",
    )
    result = run_cli(source, "-o", tmp_path / "s.csv", "--no-geo", *SNOWPLOW_RULE)
    assert result.exit_code != 0
    message = " ".join(result.output.split())
    assert "e.csv" in message and "line 3" in message and "'dvce'" in message and "'yesterday'" in message
    rejects = tmp_path / "r.csv"
    flags = ("--no-geo", "--on-invalid", "skip", "--rejects", rejects, *SNOWPLOW_RULE)
    result = run_cli(source, "-o", tmp_path / "s.csv", *flags)
    assert result.exit_code == 0, result.output
    assert pl.read_csv(rejects).select("source_row", "reject_reason").rows() == [(3, "bad_heartbeat_time")]
    # The two other events: one ping, window 2 -> 5 s.
    assert pl.read_csv(tmp_path / "s.csv").get_column("engaged_time_s").to_list() == [5.0]
    # Without heartbeats the column is not read (and naming it is a usage error).
    result = run_cli(source, "-o", tmp_path / "s.csv", "--no-geo", "--heartbeat-time-col", "dvce")
    assert result.exit_code == 2
    assert "--heartbeat-events" in result.output
