"""``engaged_time_s``: from heartbeats (Snowplow's page pings) or from the gaps between events, and
``--engaged-threshold`` for ``is_engaged``. Every value below is worked out by hand from the rule
written beside it (docs/metrics.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest

import sessionize
from sessionize import core
from sessionize import schema as S
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


def test_the_snowplow_preset_counts_its_pings() -> None:
    """tests/data/presets/snowplow_page_pings.csv: the first session's two pings before any page view
    (windows 09:00:00 and 09:00:10: 10 x 1 + 5 = 15 s) and one ping after /next (5 s): 20 s; the second
    session's two pings (15 s)."""
    result = sessionize.run([DATA / "presets" / "snowplow_page_pings.csv"], preset="snowplow", no_geo=True)
    assert result.sessions.sort("user_id").get_column("engaged_time_s").to_list() == [20.0, 15.0]


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
