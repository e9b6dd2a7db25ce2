"""Vendor session rules the presets followed only in part (review 59): the ``mixpanel`` preset did not reset
sessions at midnight as Mixpanel does (F2) and dropped events Mixpanel keeps as duplicates (F4), and the
``snowplow`` preset's engaged threshold stayed 20 s (2 x 10 s) under another ``--heartbeat-interval`` (F3).
Each on every engine path, and an incremental state of the former preset refused with a hint."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import sessionize
from sessionize import presets
from tests.helpers import (
    EVERY_PATH,
    invoke,
    path_options,
    path_sessions,
    run_cli,
    run_incremental,
    write_text,
)

SITE = "https://www.myshop.de"


def epoch(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


def mixpanel_export(path: Path, rows: list[tuple[str, str, str, str]]) -> Path:
    """Mixpanel's raw event export: JSON lines of ``event`` and ``properties`` (time in epoch seconds);
    ``rows`` are (UTC time, event, distinct_id, $insert_id)."""
    lines = [
        json.dumps(
            {
                "event": event,
                "properties": {
                    "time": epoch(time),
                    "distinct_id": user,
                    "$insert_id": insert_id,
                    "$current_url": f"{SITE}/{insert_id}",
                    "$referrer": "$direct",
                    "mp_lib": "web",
                },
            }
        )
        for time, event, user, insert_id in rows
    ]
    return write_text(path, "\n".join(lines) + "\n")


#: Mixpanel's "Example 2" (docs.mixpanel.com/docs/features/sessions, Session Computation Deep-Dive): events
#: A and B before midnight, C and D after it, 15 minutes apart at most: two sessions, "because sessions are
#: reset every 24 hours at midnight".
EXAMPLE_2 = [
    ("2024-05-01T23:30:00", "$mp_web_page_view", "u-1", "a"),
    ("2024-05-01T23:50:00", "$mp_web_page_view", "u-1", "b"),
    ("2024-05-02T00:05:00", "$mp_web_page_view", "u-1", "c"),
    ("2024-05-02T00:10:00", "Add To Cart", "u-1", "d"),
]


def run_on(path: dict[str, Any], tmp_path: Path, source: Path, **options: Any) -> tuple[Any, pl.DataFrame]:
    """``sessionize.run([source], **options)`` on engine path ``path``: its result and session table."""
    work = tmp_path / "work"
    work.mkdir(parents=True, exist_ok=True)
    keywords = {**path_options(path, work), "no_geo": True, **options}
    if "output_dir" not in keywords:
        keywords["output"] = str(work / ("sessions" if "engine" in keywords else "sessions.parquet"))
    result = sessionize.run([source], **keywords)
    return result, path_sessions(result, keywords).sort("user_id", "session_start")


def starts(table: pl.DataFrame) -> list[tuple[str, int]]:
    return [
        (start.strftime("%H:%M"), count)
        for start, count in table.select("session_start", "event_count").rows()
    ]


def refusal(result: Any) -> str:
    assert result.exit_code == 2, result.output
    return str(json.loads(result.stderr.splitlines()[-1])["message"])


def hinted_flags(message: str) -> list[str]:
    """The flags of the refusal's "(give FLAGS to continue it as it was built...)"."""
    found = re.search(r"\(give (.*?) to continue it as it was built", message)
    assert found, message
    return [flag.strip("'") for flag in found.group(1).split(" ")]


# --- F2: Mixpanel resets sessions at midnight --------------------------------------------------------------


@pytest.mark.parametrize("path", EVERY_PATH)
def test_mixpanel_resets_sessions_at_midnight(tmp_path: Path, path: dict[str, Any]) -> None:
    source = mixpanel_export(tmp_path / "in" / "mixpanel.ndjson", EXAMPLE_2)
    _, table = run_on(path, tmp_path, source, preset="mixpanel")
    assert starts(table) == [("23:30", 2), ("00:05", 2)]


def test_mixpanel_s_midnight_is_the_project_time_zone_s(tmp_path: Path) -> None:
    """Midnight in --timezone (the project's time zone in Mixpanel): Berlin's is 22:00 UTC, so all four
    events are on one Berlin day, and 21:50 and 22:10 UTC are on two."""
    source = mixpanel_export(tmp_path / "mixpanel.ndjson", EXAMPLE_2)
    berlin = ("--preset", "mixpanel", "--timezone", "Europe/Berlin")
    out = tmp_path / "sessions.csv"
    assert run_cli(source, *berlin, "--no-geo", "-q", "-o", out).exit_code == 0
    assert pl.read_csv(out)["event_count"].to_list() == [4]
    late = mixpanel_export(
        tmp_path / "late.ndjson",
        [("2024-05-01T21:50:00", "$mp_web_page_view", "u-1", "a"), ("2024-05-01T22:10:00", "x", "u-1", "b")],
    )
    assert run_cli(late, *berlin, "--no-geo", "-q", "-o", out).exit_code == 0
    assert pl.read_csv(out)["event_count"].to_list() == [1, 1]


def test_mixpanel_s_midnight_reset_can_be_switched_off(tmp_path: Path) -> None:
    """On the command line (--no-split-at-midnight), in the config file and in Python."""
    source = mixpanel_export(tmp_path / "mixpanel.ndjson", EXAMPLE_2)
    out = tmp_path / "sessions.csv"
    result = run_cli(source, "--preset", "mixpanel", "--no-split-at-midnight", "--no-geo", "-q", "-o", out)
    assert result.exit_code == 0, result.output
    assert pl.read_csv(out)["event_count"].to_list() == [4]
    config = write_text(
        tmp_path / "sessionize.toml", '[run]\npreset = "mixpanel"\nsplit-at-midnight = false\n'
    )
    assert run_cli(source, "--config", config, "--no-geo", "-q", "-o", out).exit_code == 0
    assert pl.read_csv(out)["event_count"].to_list() == [4]
    table = sessionize.run([source], preset="mixpanel", no_geo=True, split_at_midnight=False).sessions
    assert table["event_count"].to_list() == [4]
    # Without the preset the flag still only turns it on (and off), as before.
    plain = sessionize.run(
        [source], no_geo=True, user_col="properties.distinct_id", time_col="properties.time"
    )
    assert plain.sessions["event_count"].to_list() == [4]
    flags = ("--user-col", "properties.distinct_id", "--time-col", "properties.time", "--split-at-midnight")
    assert run_cli(source, *flags, "--no-geo", "-q", "-o", out).exit_code == 0
    assert pl.read_csv(out)["event_count"].to_list() == [2, 2]


def test_an_incremental_state_of_the_former_mixpanel_preset_is_refused_with_a_hint(tmp_path: Path) -> None:
    """A state the mixpanel preset built before ran without the midnight reset: continuing it with the reset
    would cut its open sessions by another rule than its written ones. The refusal says how to continue
    it as it was built, and those flags do."""
    first = mixpanel_export(tmp_path / "a.ndjson", EXAMPLE_2[:2])
    second = mixpanel_export(tmp_path / "b.ndjson", EXAMPLE_2[2:])
    assert run_incremental(first, tmp_path, "--preset", "mixpanel", "--no-split-at-midnight").exit_code == 0
    manifest = tmp_path / "state" / (tmp_path / "state" / "CURRENT").read_text() / "manifest.json"
    written = json.loads(manifest.read_text())
    assert written["settings"]["split_at_midnight"] == "False"
    # A state of the version before recorded no --event-id-scope (F4): it ran with the user's scope.
    del written["settings"]["event_id_scope"]
    manifest.write_text(json.dumps(written, indent=1))
    message = refusal(run_incremental(second, tmp_path, "--preset", "mixpanel"))
    assert "--split-at-midnight off -> on" in message
    assert "--event-id-scope user -> user-event-time" in message
    assert "the mixpanel preset resets sessions at midnight in --timezone" in message
    flags = hinted_flags(message)
    assert flags == ["--event-id-scope", "user", "--no-split-at-midnight"]
    assert run_incremental(second, tmp_path, "--preset", "mixpanel", *flags).exit_code == 0
    table = pl.read_parquet(tmp_path / "out" / "**" / "*.parquet")
    assert table["event_count"].to_list() == [4]


# --- F3: Snowplow's engaged threshold is twice its heartbeat ------------------------------------------------

SNOWPLOW_COLUMNS = (
    "app_id,platform,collector_tstamp,dvce_created_tstamp,dvce_sent_tstamp,derived_tstamp,event,event_id,"
    "domain_userid,domain_sessionid,page_url,useragent,contexts_com_snowplowanalytics_snowplow_web_page_1"
)
BROWSER = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)


def snowplow_pings(path: Path, *seconds: int, hour: int = 10) -> Path:
    """atomic.events: one page view at ``hour``:00:00 and page pings ``seconds`` after it."""
    lines = [SNOWPLOW_COLUMNS]
    for n, second in enumerate((0, *seconds)):
        ts = f"2024-05-01 {hour:02d}:{second // 60:02d}:{second % 60:02d}.000"
        event = "page_ping" if n else "page_view"
        context = f'"[{{""id"":""pv-{hour}""}}]"'
        lines.append(
            f'shop,web,{ts},{ts},{ts},{ts},{event},ev{hour}-{n},du-1,sid-{hour},{SITE}/,"{BROWSER}",{context}'
        )
    return write_text(path, "\n".join(lines) + "\n")


def engaged(table: pl.DataFrame) -> list[tuple[float, bool]]:
    return table.select("engaged_time_s", "is_engaged").rows()


@pytest.mark.parametrize("path", EVERY_PATH)
def test_snowplow_s_engaged_threshold_follows_the_heartbeat_interval(
    tmp_path: Path, path: dict[str, Any]
) -> None:
    """snowplow_web's engaged_session: engaged_time_in_s / snowplow__heartbeat >= 2. With 30 s heartbeats,
    pings at +31 s and +61 s are 2 windows: 30 x (2 - 1) + 5 = 35 s, and 35 / 30 < 2: not engaged."""
    source = snowplow_pings(tmp_path / "in" / "atomic_events.csv", 31, 61)
    _, table = run_on(path, tmp_path, source, preset="snowplow", heartbeat_interval="30s")
    assert engaged(table) == [(35.0, False)]
    # Pings at +10, +20 and +30 s: 3 windows of the default 10 s, 10 x 2 + 5 = 25 s >= 20 s: engaged;
    # 3 windows of 5 s, 5 x 2 + 5 = 15 s >= 10 s: engaged too (not against the former fixed 20 s).
    source = snowplow_pings(tmp_path / "in" / "short.csv", 10, 20, 30)
    for interval in ("10s", "5s"):
        _, table = run_on(path, tmp_path / interval, source, preset="snowplow", heartbeat_interval=interval)
        assert engaged(table) == [(25.0 if interval == "10s" else 15.0, True)]


def test_an_engaged_threshold_given_wins_over_the_heartbeat_s(tmp_path: Path) -> None:
    """--engaged-threshold given (command line, config file, Python) is used as it is; --heartbeat-interval
    given in the config file moves the preset's threshold as on the command line."""
    source = snowplow_pings(tmp_path / "atomic_events.csv", 31, 61)
    out = tmp_path / "sessions.csv"

    def cli(*flags: str | Path) -> list[tuple[float, bool]]:
        result = run_cli(source, "--preset", "snowplow", "--no-geo", "-q", "-o", out, *flags)
        assert result.exit_code == 0, result.output
        return engaged(pl.read_csv(out))

    assert cli("--heartbeat-interval", "30s") == [(35.0, False)]
    assert cli("--heartbeat-interval", "30s", "--engaged-threshold", "30s") == [(35.0, True)]
    config = write_text(tmp_path / "hb.toml", '[run]\nheartbeat-interval = "30s"\n')
    assert cli("--config", config) == [(35.0, False)]
    config = write_text(
        tmp_path / "both.toml", '[run]\nheartbeat-interval = "30s"\nengaged-threshold = "30s"\n'
    )
    assert cli("--config", config) == [(35.0, True)]
    python = sessionize.run([source], preset="snowplow", no_geo=True, heartbeat_interval="30s")
    assert engaged(python.sessions) == [(35.0, False)]
    python = sessionize.run(
        [source], preset="snowplow", no_geo=True, heartbeat_interval="30s", engaged_threshold="30s"
    )
    assert engaged(python.sessions) == [(35.0, True)]
    config_ = sessionize.RunConfig.from_options(**presets.apply("snowplow", {"heartbeat_interval": "1m30s"}))
    assert config_.session.engaged.threshold_s == 180.0


def test_the_presets_list_says_the_threshold_follows_the_heartbeat() -> None:
    assert ("--engaged-threshold", "2 x --heartbeat-interval (20s)") in presets.get("snowplow").settings()
    listing = invoke("presets")
    assert listing.exit_code == 0, listing.output
    assert "2 x --heartbeat-interval" in listing.output


def test_an_incremental_state_of_the_former_snowplow_threshold_is_refused_with_a_hint(tmp_path: Path) -> None:
    """A state the snowplow preset built with --heartbeat-interval 30s held 20 s as the threshold."""
    first = snowplow_pings(tmp_path / "a.csv", 31, hour=10)
    second = snowplow_pings(tmp_path / "b.csv", 61, hour=12)
    former = ("--preset", "snowplow", "--heartbeat-interval", "30s")
    assert run_incremental(first, tmp_path, *former, "--engaged-threshold", "20s").exit_code == 0
    message = refusal(run_incremental(second, tmp_path, *former))
    assert "--engaged-threshold 0:00:20 -> 0:01:00" in message
    assert "engaged threshold is twice --heartbeat-interval" in message
    flags = hinted_flags(message)
    assert flags == ["--engaged-threshold", "20s"]
    assert run_incremental(second, tmp_path, *former, *flags).exit_code == 0


# --- F4: Mixpanel's duplicates share event name, distinct_id, time and $insert_id ---------------------------

#: Rows that share a $insert_id (gen_mixpanel_dedupe.py of review 59): only the last pair is a duplicate
#: to Mixpanel (https://docs.mixpanel.com/reference/event-deduplication: all four of event, distinct_id, time
#: and $insert_id the same).
DEDUPE = [
    ("2024-05-01T10:00:00", "Order Completed", "u-1", "ord-77"),
    ("2024-05-01T10:00:00", "Payment Captured", "u-1", "ord-77"),  # another event name: kept
    ("2024-05-01T10:01:40", "$mp_web_page_view", "u-2", "pv-1"),
    ("2024-05-01T10:01:40", "$mp_web_page_view", "u-3", "pv-1"),  # another distinct_id: kept
    ("2024-05-01T10:03:20", "$mp_web_page_view", "u-4", "pv-9"),
    ("2024-05-01T10:04:20", "$mp_web_page_view", "u-4", "pv-9"),  # another time: kept
    ("2024-05-01T10:05:00", "$mp_web_page_view", "u-5", "pv-5"),
    ("2024-05-01T10:05:00", "$mp_web_page_view", "u-5", "pv-5"),  # all four the same: a duplicate
]

#: Each user's session of ``DEDUPE`` under Mixpanel's rule (name, user, time and id): its events.
DEDUPE_SESSIONS = [("u-1", 2), ("u-2", 1), ("u-3", 1), ("u-4", 2), ("u-5", 1)]


@pytest.mark.parametrize("path", EVERY_PATH)
def test_mixpanel_drops_only_the_duplicates_mixpanel_drops(tmp_path: Path, path: dict[str, Any]) -> None:
    source = mixpanel_export(tmp_path / "in" / "mixpanel.ndjson", DEDUPE)
    result, table = run_on(path, tmp_path, source, preset="mixpanel")
    assert (result.rows_read, result.duplicates_removed, result.events_read) == (8, 1, 7)
    assert table.select("user_id", "event_count").rows() == DEDUPE_SESSIONS
    # --event-id-scope user: a user's events of one id are one event, as before (and as without the preset).
    result, _ = run_on(path, tmp_path / "user", source, preset="mixpanel", event_id_scope="user")
    assert (result.duplicates_removed, result.events_read) == (3, 5)


def test_mixpanel_duplicates_across_incremental_runs(tmp_path: Path) -> None:
    """A later file's event is a duplicate of one the state keeps only when name, time and id all match."""
    first = mixpanel_export(tmp_path / "a.ndjson", [DEDUPE[0], DEDUPE[6]])
    second = mixpanel_export(tmp_path / "b.ndjson", [DEDUPE[1], DEDUPE[7]])
    assert run_incremental(first, tmp_path, "--preset", "mixpanel").exit_code == 0
    result = run_incremental(second, tmp_path, "--preset", "mixpanel")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stderr.splitlines()[-1])
    assert (summary["rows_read"], summary["duplicates_removed"], summary["events"]) == (2, 1, 1)
    table = pl.read_parquet(tmp_path / "out" / "**" / "*.parquet").sort("user_id")
    assert table.select("user_id", "event_count").rows() == [("u-1", 2), ("u-5", 1)]


def test_event_id_scope_on_the_command_line_and_its_errors(tmp_path: Path) -> None:
    source = mixpanel_export(tmp_path / "mixpanel.ndjson", DEDUPE)
    flags = ("--user-col", "properties.distinct_id", "--time-col", "properties.time", "--event-id-col",
             "properties.$insert_id", "--event-col", "event", "--no-geo")  # fmt: skip
    plain = run_cli(source, *flags, "--log-format", "json", "-o", tmp_path / "plain.csv")
    assert json.loads(plain.stderr.splitlines()[-1])["duplicates_removed"] == 3
    scoped = run_cli(source, *flags, "--event-id-scope", "user-event-time", "--log-format", "json", "-o",
                     tmp_path / "scoped.csv")  # fmt: skip
    assert json.loads(scoped.stderr.splitlines()[-1])["duplicates_removed"] == 1
    wrong = run_cli(source, *flags, "--event-id-scope", "session", "-o", tmp_path / "x.csv")
    assert wrong.exit_code == 2
    assert "--event-id-scope 'session' is not one of user, user-event-time" in wrong.output


# --- Spark ------------------------------------------------------------------------------------------------


def test_the_presets_rules_on_spark(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """The same sessions on the Spark engine: Mixpanel's midnight reset and duplicates, Snowplow's engaged
    threshold."""
    pytest.importorskip("pyspark", reason="PySpark is not installed: pip install 'sessionize[spark]'")
    spark = request.getfixturevalue("spark_session")

    def on_spark(source: Path, name: str, **options: Any) -> pl.DataFrame:
        target = tmp_path / name
        sessionize.run([str(source)], spark=spark, partitions=2, output=str(target), no_geo=True, **options)
        return pl.read_parquet(sorted(target.glob("part-*.parquet"))).sort("user_id", "session_start")

    mixpanel = mixpanel_export(tmp_path / "mixpanel.ndjson", EXAMPLE_2)
    assert starts(on_spark(mixpanel, "mp", preset="mixpanel")) == [("23:30", 2), ("00:05", 2)]
    snowplow = snowplow_pings(tmp_path / "atomic_events.csv", 31, 61)
    table = on_spark(snowplow, "sp", preset="snowplow", heartbeat_interval="30s")
    assert engaged(table) == [(35.0, False)]
    dedupe = mixpanel_export(tmp_path / "dedupe.ndjson", DEDUPE)
    table = on_spark(dedupe, "dd", preset="mixpanel")
    assert table.select("user_id", "event_count").rows() == DEDUPE_SESSIONS


# --- Stop 57: GA4's default key events make a session engaged ------------------------------------------


def ga4_export(path: Path, events: list[tuple[str, str, int]]) -> Path:
    """A GA4 BigQuery export (NDJSON) of (user_pseudo_id, event_name, seconds after 2024-05-01T10:00Z)
    events, all in the session 1714557600."""
    lines = [
        json.dumps(
            {
                "event_name": name,
                "user_pseudo_id": user,
                "event_timestamp": (1714557600 + second) * 1_000_000,
                "event_params": [
                    {"key": "ga_session_id", "value": {"int_value": 1714557600}},
                    {"key": "page_location", "value": {"string_value": "https://shop.example.com/"}},
                ],
            }
        )
        for user, name, second in events
    ]
    return write_text(path, "\n".join(lines) + "\n")


def test_a_ga4_session_with_a_default_key_event_is_engaged(tmp_path: Path) -> None:
    """GA4 counts a session engaged that "has a key event", and marks purchase (web) and first_open (apps)
    as key events by default; the preset set no --conversion-events, so a page view with a purchase a
    second later was not engaged, nor an app's first session of one screen view. ``--conversion-events ''``
    goes back to none, and a state the preset built before is refused with that hint."""
    events = [
        ("buyer", "page_view", 0), ("buyer", "purchase", 1),
        ("app", "first_open", 0), ("app", "screen_view", 1),
        ("reader", "page_view", 0), ("reader", "scroll", 1),
    ]  # fmt: skip
    source = ga4_export(tmp_path / "ga4.ndjson", events)
    table = sessionize.run([source], preset="ga4", no_geo=True).sessions.sort("user_id")
    assert table.select("user_id", "is_engaged").rows() == [("app", True), ("buyer", True), ("reader", False)]
    none = sessionize.run([source], preset="ga4", no_geo=True, conversion_events="").sessions
    assert not none["is_engaged"].any()
    # A state the ga4 preset built before this change.
    first = ga4_export(tmp_path / "a.ndjson", events[:2])
    second = ga4_export(tmp_path / "b.ndjson", events[2:])
    assert run_incremental(first, tmp_path, "--preset", "ga4", "--conversion-events", "").exit_code == 0
    message = refusal(run_incremental(second, tmp_path, "--preset", "ga4"))
    assert "the ga4 preset counts GA4's default key events" in message
    flags = hinted_flags(message)
    assert flags == ["--conversion-events", ""], flags
    assert run_incremental(second, tmp_path, "--preset", "ga4", *flags).exit_code == 0
