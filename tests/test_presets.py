"""``--preset``: each vendor's export read as it comes, sessions checked by hand (fixtures in
tests/data/presets/, written from each vendor's published schema: see the README there)."""

from __future__ import annotations

import gzip
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import sessionize
from sessionize import presets
from sessionize.errors import UsageError
from tests.helpers import DATA, KEYS, invoke, run_cli, write_text

FIXTURES = DATA / "presets"
SITE = "https://shop.example.com"
COLUMNS = ["user_id", "session_id", "event_count", "pageview_count", "landing_page", "exit_page",
           "traffic_source", "channel", "duration_s"]  # fmt: skip


def session_table(tmp_path: Path, source: Path, *flags: str) -> pl.DataFrame:
    """The session table of ``sessionize run SOURCE FLAGS`` (no geo), every value as its text."""
    out = tmp_path / "sessions.csv"
    result = run_cli(source, "-o", out, "--no-geo", "-q", *flags)
    assert result.exit_code == 0, result.output
    return pl.read_csv(out, infer_schema=False)


def sessions(tmp_path: Path, source: Path, *flags: str, preset: str = "") -> list[tuple[str | None, ...]]:
    table = session_table(tmp_path, source, *flags)
    # The output schema is today's, and the presets that stitch identities append stitched_user_id,
    # the ga4 preset GA4's own session fields.
    added = ["stitched_user_id"] if any(p in flags for p in ("snowplow", "segment")) else []
    if "ga4" in (*flags, preset):
        added = [spec.split("=")[0] for spec in presets.get("ga4").aggregates]
    assert table.columns == [*sessionize.schema.SESSION_SCHEMA, *added]
    return table.sort("user_id", "session_start").select(COLUMNS).rows()


def test_ga4_bigquery_export(tmp_path: Path) -> None:
    """GA4: sessions are user_pseudo_id + ga_session_id; URL and referrer from event_params."""
    assert sessions(tmp_path, FIXTURES / "ga4.ndjson", "--preset", "ga4") == [
        # 10:00 page_view / from Google, 10:00:30 scroll, 10:02 page_view /product/42.
        ("1234567.1714557600", "1714557600", "3", "2", f"{SITE}/", f"{SITE}/product/42", "google",
         "Organic Search", "120.0"),
        # Two hours later, a new ga_session_id, direct (logged in as alice: the user is still the device).
        ("1234567.1714557600", "1714564800", "1", "1", f"{SITE}/cart", f"{SITE}/cart", "direct", "Direct",
         "0.0"),
        # A newsletter link: the UTM tags make the channel Email.
        ("7654321.1714557900", "1714557900", "2", "1",
         f"{SITE}/blog?utm_source=newsletter&utm_medium=email&utm_campaign=may",
         f"{SITE}/blog?utm_source=newsletter&utm_medium=email&utm_campaign=may", "direct", "Email", "60.0"),
    ]  # fmt: skip


GA4_OWN = ["ga_session_number", "session_engaged", "ga4_source", "ga4_medium", "ga4_campaign", "ga4_gclid",
           "ga4_session_source", "ga4_session_medium", "ga4_session_campaign",
           "ga4_country", "ga4_region", "ga4_city"]  # fmt: skip
GA4_DEVICE = ["ga4_device_category", "ga4_os", "ga4_browser"]


def test_ga4_events_without_a_session_id_left_out_as_ga4_does(tmp_path: Path) -> None:
    """An event without ``ga_session_id`` (a Measurement Protocol hit) is in no session in GA4; the preset
    makes it a session of its own by the timeout, and ``--require-session-id`` (as docs/presets.md says)
    leaves it out for GA4's count, counted as filtered."""
    lines = FIXTURES.joinpath("ga4.ndjson").read_text(encoding="utf-8").splitlines()
    event = json.loads(lines[-1])
    event["event_params"] = [p for p in event["event_params"] if p["key"] != "ga_session_id"]
    event["event_timestamp"] = str(int(event["event_timestamp"]) + 3 * 3600 * 10**6)
    source = write_text(tmp_path / "ga4.ndjson", "\n".join([*lines[:-1], json.dumps(event)]) + "\n")
    everything = session_table(tmp_path, source, "--preset", "ga4")
    out = tmp_path / "ga4_sessions.csv"
    result = run_cli(
        source, "--preset", "ga4", "--require-session-id", "--no-geo", "-o", out, "--log-format", "json"
    )
    assert result.exit_code == 0, result.output
    kept = pl.read_csv(out, infer_schema=False)
    assert kept.height == everything.height - 1
    assert kept.get_column("session_id").null_count() == 0
    counts = json.loads(result.output.strip().splitlines()[-1])
    assert (counts["rows_read"], counts["filtered_out"], counts["events"]) == (len(lines), 1, len(lines) - 1)


def test_ga4_own_session_fields(tmp_path: Path) -> None:
    """GA4's session number and engaged flag (event parameters: the largest), the traffic source it
    collected, its session-scoped last-click source and its geolocation (the first event's); null where
    the export has no such field."""
    out = tmp_path / "sessions.csv"
    result = run_cli(FIXTURES / "ga4.ndjson", "--preset", "ga4", "--no-geo", "-o", out)
    assert result.exit_code == 0, result.output
    table = pl.read_csv(out, infer_schema=False).sort("user_id", "session_start")
    assert table.select(GA4_OWN).rows() == [
        # Session 1 (ga_session_number 1 on its first event) is engaged from its second page view on.
        (
            "1.0",
            "1.0",
            None,
            None,
            None,
            None,
            "google",
            "organic",
            "(organic)",
            "United Kingdom",
            None,
            "London",
        ),
        # Session 2: number 2, no event says engaged, no collected traffic source.
        (
            "2.0",
            None,
            None,
            None,
            None,
            None,
            "(direct)",
            "(none)",
            "(direct)",
            "United Kingdom",
            None,
            "London",
        ),
        # The newsletter visit: GA4 collected its UTM tags; its geo has a region.
        (
            "1.0",
            "1.0",
            "newsletter",
            "email",
            "may",
            None,
            "newsletter",
            "email",
            "may",
            "Sweden",
            "Ostergotland County",
            "Linkoping",
        ),
    ]
    # An export without collected_traffic_source, geo and those parameters: null columns, no error;
    # a --agg of one of the names replaces the preset's.
    bare = tmp_path / "bare.ndjson"
    pl.read_ndjson(FIXTURES / "ga4.ndjson", infer_schema_length=None).drop(
        "collected_traffic_source", "geo", "session_traffic_source_last_click"
    ).write_ndjson(bare)
    run = sessionize.run([bare], preset="ga4", no_geo=True, aggregates="ga4_city=count(*)")
    table = run.sessions.sort("user_id", "session_start")
    own = [*GA4_OWN, *GA4_DEVICE]
    assert table.columns[-len(own) :] == ["ga4_city", *(c for c in own if c != "ga4_city")]
    assert table.get_column("ga4_country").null_count() == 3
    assert table.get_column("ga4_city").to_list() == [3, 1, 2]


def test_ga4_parquet_export_alike(tmp_path: Path) -> None:
    parquet = tmp_path / "events.parquet"
    pl.read_ndjson(FIXTURES / "ga4.ndjson", infer_schema_length=None).write_parquet(parquet)
    assert sessions(tmp_path, parquet, "--preset", "ga4") == sessions(
        tmp_path, FIXTURES / "ga4.ndjson", "--preset", "ga4"
    )


def test_snowplow_atomic_events(tmp_path: Path) -> None:
    """Snowplow: domain_userid (not the login id user_id) and domain_sessionid; derived_tstamp; the
    repeated event_id is one event. Snowplow's channel rules read the UTM tags alone: these untagged
    sessions are Unassigned, whatever the referrer (tests/test_channel_rules.py)."""
    source = FIXTURES / "snowplow_atomic_events.csv"
    d1, d2 = "d1a2b3c4-0000-4000-8000-000000000001", "d9f8e7d6-0000-4000-8000-000000000002"
    assert sessions(tmp_path, source, "--preset", "snowplow") == [
        # page_view (from Bing), page_ping, page_view /pricing (sent twice): 3 events, 2 page views.
        (d1, "5e5e0001-0000-4000-8000-000000000001", "3", "2", f"{SITE}/", f"{SITE}/pricing", "bing",
         "Unassigned", "60.0"),
        (d1, "5e5e0001-0000-4000-8000-000000000002", "1", "1", f"{SITE}/docs", f"{SITE}/docs", "direct",
         "Unassigned", "0.0"),
        # t.co is Twitter's link shortener: social.
        (d2, "5e5e0002-0000-4000-8000-000000000003", "1", "1", f"{SITE}/", f"{SITE}/", "t", "Unassigned",
         "0.0"),
    ]  # fmt: skip
    # Without the preset the login id column user_id is taken, and it is empty on anonymous events.
    assert run_cli(source, "--no-geo", "-o", tmp_path / "plain.csv").exit_code != 0


@pytest.mark.parametrize("path", ["memory", "buckets", "memory-limit", "incremental", "frame"])
def test_snowplow_event_without_domain_userid_keeps_its_session(tmp_path: Path, path: str) -> None:
    """Snowplow keys a session by domain_sessionid alone (dbt-snowplow-web's "NULL domain_userid" test
    case keeps it): such an event was rejected as empty_user_id, and the run failed by default. Its
    session id stands in for the user id only when no event of the session has a domain_userid
    (Snowplow's max(domain_userid) skips nulls): a session id that sorts above its user's id must not
    take the session from them. An event without a session id is still left out."""
    rows = pl.read_csv(FIXTURES / "snowplow_atomic_events.csv", infer_schema=False)
    cookieless_id, mixed_id = "5e5e0009-0000-4000-8000-000000000009", "fe5e0010-0000-4000-8000-000000000010"
    cookieless = rows.head(1).with_columns(
        pl.lit(None, pl.String).alias("domain_userid"),
        pl.lit(cookieless_id).alias("domain_sessionid"),
        pl.lit("3f1c7a52-0009-4c3e-9b1a-000000000009").alias("event_id"),
    )
    neither = cookieless.with_columns(
        pl.lit(None, pl.String).alias("domain_sessionid"), pl.lit("3f1c7a52-0010").alias("event_id")
    )
    # A session whose first event had the user cookie off and whose later ones have it.
    mixed = pl.concat([rows.tail(1)] * 3).with_columns(
        pl.Series("domain_userid", [None, "d9f8e7d6-0000-4000-8000-000000000002", None]),
        pl.lit(mixed_id).alias("domain_sessionid"),
        pl.Series("event_id", [f"3f1c7a52-001{n}-4c3e-9b1a-00000000001{n}" for n in (1, 2, 3)]),
        pl.Series("derived_tstamp", [f"2024-05-01 12:0{n}:00.000" for n in (0, 1, 2)]),
    )
    source = tmp_path / "events.csv"
    pl.concat([rows, cookieless, neither, mixed]).write_csv(source)
    if path == "frame":
        table = sessionize.sessionize(pl.read_csv(source, infer_schema=False), preset="snowplow", no_geo=True)
        sessions = table.collect()
    else:
        engines: dict[str, dict[str, Any]] = {
            "memory": {},
            "buckets": {"buckets": 2},
            "memory-limit": {"memory_limit": "1M"},
            "incremental": {"state": tmp_path / "state", "output_dir": tmp_path / "out"},
        }
        result = sessionize.run([source], preset="snowplow", no_geo=True, **engines[path])
        assert result.rejected == 0 and result.filtered_out == 1
        sessions = result.sessions
        if path == "incremental":
            sessions = pl.concat(pl.read_parquet(f) for f in sorted((tmp_path / "out").rglob("*.parquet")))
    assert sessions.height == 5
    found = sessions.filter(pl.col("session_id").is_in([cookieless_id, mixed_id])).sort("session_id")
    assert found.select("session_id", "user_id", "event_count").rows() == [
        (cookieless_id, cookieless_id, 1),
        (mixed_id, "d9f8e7d6-0000-4000-8000-000000000002", 3),
    ]
    # The user of the mixed session has both of its sessions.
    assert sessions.filter(pl.col("user_id") == "d9f8e7d6-0000-4000-8000-000000000002").height == 2


def test_segment_raw_export(tmp_path: Path) -> None:
    """Segment: anonymousId keys the sessions, messageId de-duplicates, context.page.* are the page."""
    assert sessions(tmp_path, FIXTURES / "segment.ndjson", "--preset", "segment") == [
        # page (from Facebook), Order Completed (sent twice), identify: 3 events, 1 page view.
        ("anon-1", "anon-1-20240501T100000.000000", "3", "1", f"{SITE}/", f"{SITE}/", "facebook",
         "Organic Social", "240.0"),
        # 56 minutes later: a new session.
        ("anon-1", "anon-1-20240501T110000.000000", "1", "1", f"{SITE}/account", f"{SITE}/account", "direct",
         "Direct", "0.0"),
    ]  # fmt: skip


def test_posthog_export(tmp_path: Path) -> None:
    assert sessions(tmp_path, FIXTURES / "posthog.ndjson", "--preset", "posthog") == [
        # $pageview, $autocapture, $pageview, $pageleave in one $session_id: 2 page views.
        ("ph-user-1", "018f3a1e-5e55-7000-8000-00000000000a", "4", "2", f"{SITE}/", f"{SITE}/features",
         "duckduckgo", "Organic Search", "420.0"),
        # No $ip and no $referrer in the export: still read (preferred columns are optional).
        ("ph-user-2", "018f3a1e-5e55-7000-8000-00000000000b", "1", "1",
         f"{SITE}/pricing?utm_source=linkedin&utm_medium=social",
         f"{SITE}/pricing?utm_source=linkedin&utm_medium=social", "direct", "Organic Social", "0.0"),
    ]  # fmt: skip


def test_posthog_direct_marker_is_no_referrer(tmp_path: Path) -> None:
    """PostHog's SDK writes ``$direct`` as ``$referrer`` when there is none: a direct visit, not a
    referral from a site called ``$direct``."""
    lines = ['{"uuid": "u1", "event": "$pageview", "distinct_id": "d1", "timestamp": "2024-05-01T10:00:00Z",'
             ' "properties": {"$session_id": "s1", "$current_url": "https://shop.example.com/",'
             ' "$referrer": "$direct"}}']  # fmt: skip
    source = write_text(tmp_path / "posthog.ndjson", "\n".join(lines) + "\n")
    table = session_table(tmp_path, source, "--preset", "posthog")
    assert table.select("referrer", "traffic_source", "medium", "channel").rows() == [
        (None, "direct", "direct", "Direct")
    ]


def test_posthog_identify_keeps_the_session(tmp_path: Path) -> None:
    """posthog.identify() changes distinct_id mid-visit and keeps $session_id: PostHog's sessions are
    keyed by $session_id alone, so the visit is one session, its landing page the anonymous one's (it
    was two sessions, the second Organic Search; review 49)."""
    lines = [
        '{"uuid":"e1","event":"$pageview","distinct_id":"anon-1","timestamp":"2024-05-01T10:00:00.000000+00:00",'
        '"properties":{"$session_id":"018f-s1","$current_url":"https://shop.example.com/?utm_source=google&'
        'utm_medium=cpc&gclid=x","$referrer":"https://www.google.com/"}}',
        '{"uuid":"e2","event":"$identify","distinct_id":"user@example.com",'
        '"timestamp":"2024-05-01T10:00:20.000000+00:00","properties":{"$session_id":"018f-s1",'
        '"$anon_distinct_id":"anon-1","$current_url":"https://shop.example.com/login",'
        '"$referrer":"https://www.google.com/"}}',
        '{"uuid":"e3","event":"$pageview","distinct_id":"user@example.com",'
        '"timestamp":"2024-05-01T10:00:30.000000+00:00","properties":{"$session_id":"018f-s1",'
        '"$current_url":"https://shop.example.com/account","$referrer":"https://www.google.com/"}}',
        # Another visitor's session: never merged with the first.
        '{"uuid":"e4","event":"$pageview","distinct_id":"anon-2","timestamp":"2024-05-01T10:05:00.000000+00:00",'
        '"properties":{"$session_id":"018f-s2","$current_url":"https://shop.example.com/"}}',
    ]
    source = write_text(tmp_path / "posthog.ndjson", "\n".join(lines) + "\n")
    rows = sessions(tmp_path, source, "--preset", "posthog")
    assert [(r[1], r[2], r[3], r[4], r[5], r[7], r[8]) for r in rows] == [
        ("018f-s2", "1", "1", f"{SITE}/", f"{SITE}/", "Direct", "0.0"),
        ("018f-s1", "3", "2", f"{SITE}/?utm_source=google&utm_medium=cpc&gclid=x", f"{SITE}/account",
         "Paid Search", "30.0"),
    ]  # fmt: skip


def test_amplitude_page_location_keeps_the_campaign(tmp_path: Path) -> None:
    """Amplitude's page view tracking writes [Amplitude] Page URL without the query string and Page
    Location with it: the landing page is Page Location, so its UTM tags give the channel (they were
    lost: Direct, no utm_source; review 49)."""
    line = (
        '{"uuid":"u-1","$insert_id":"i-1","event_time":"2024-05-01 10:00:00.000000",'
        '"event_type":"[Amplitude] Page Viewed","device_id":"dev-1","session_id":1714557600000,'
        '"event_properties":{"[Amplitude] Page Location":'
        '"https://shop.example.com/?utm_source=newsletter&utm_medium=email&utm_campaign=may",'
        '"[Amplitude] Page URL":"https://shop.example.com/","[Amplitude] Page Path":"/"}}'
    )
    source = write_text(tmp_path / "amplitude.ndjson", line + "\n")
    table = session_table(tmp_path, source, "--preset", "amplitude")
    assert table.select("landing_page", "utm_source", "utm_campaign", "channel").rows() == [
        (f"{SITE}/?utm_source=newsletter&utm_medium=email&utm_campaign=may", "newsletter", "may", "Email")
    ]


def test_amplitude_browser_sdk_1_page_views(tmp_path: Path) -> None:
    """Amplitude's Browser SDK 1 (and SDK 2 with the page-view-v1-enrichment plugin) names the page view
    ``Page View`` and its properties ``page_location`` (the whole URL) and ``page_url`` (no query string):
    the preset counted no page view and gave no landing page for such an export."""
    lines = [
        '{"uuid":"u-1","event_time":"2024-05-01 10:00:00.000000","event_type":"Page View",'
        '"device_id":"dev-1","session_id":1714557600000,"event_properties":{"page_location":'
        '"https://shop.example.com/?utm_source=newsletter&utm_medium=email","page_url":"https://shop.example.com/",'
        '"page_path":"/"}}',
        '{"uuid":"u-2","event_time":"2024-05-01 10:01:00.000000","event_type":"Page View",'
        '"device_id":"dev-1","session_id":1714557600000,"event_properties":{"page_location":'
        '"https://shop.example.com/pricing","page_url":"https://shop.example.com/pricing","page_path":"/pricing"}}',
    ]
    source = write_text(tmp_path / "amplitude.ndjson", "\n".join(lines) + "\n")
    table = session_table(tmp_path, source, "--preset", "amplitude")
    assert table.select("pageview_count", "landing_page", "exit_page", "utm_source", "channel").rows() == [
        ("2", f"{SITE}/?utm_source=newsletter&utm_medium=email", f"{SITE}/pricing", "newsletter", "Email")
    ]


def test_amplitude_export_mixing_browser_sdk_1_and_2(tmp_path: Path) -> None:
    """One export with both SDKs' page views (a migration; SDK 2's page-view-v1-enrichment plugin on some
    pages): the URL column was chosen for the whole file, the first preferred one it has, so the events of
    the other SDK had no URL and their sessions no landing page. Each event takes the first it has."""
    sdk2 = (
        '{{"uuid":"u-{n}","event_time":"2024-05-01 {t}.000000","event_type":"[Amplitude] Page Viewed",'
        '"device_id":"dev-{d}","session_id":{s},"event_properties":{{"[Amplitude] Page Location":'
        '"https://shop.example.com/{page}","[Amplitude] Page URL":"https://shop.example.com/{page}"}}}}'
    )
    sdk1 = (
        '{{"uuid":"u-{n}","event_time":"2024-05-01 {t}.000000","event_type":"Page View",'
        '"device_id":"dev-{d}","session_id":{s},"event_properties":{{"page_location":'
        '"https://shop.example.com/{page}","page_url":"https://shop.example.com/{page}"}}}}'
    )
    lines = [
        sdk2.format(n=1, t="10:00:00", d=1, s=1714557600000, page="a"),
        sdk2.format(n=2, t="10:01:00", d=1, s=1714557600000, page="b"),
        sdk1.format(n=3, t="11:00:00", d=2, s=1714561200000, page="c?utm_source=news"),
        sdk1.format(n=4, t="11:02:00", d=2, s=1714561200000, page="d"),
    ]
    source = write_text(tmp_path / "amplitude.ndjson", "\n".join(lines) + "\n")
    table = session_table(tmp_path, source, "--preset", "amplitude")
    assert sorted(table.select("user_id", "landing_page", "exit_page", "utm_source").rows()) == [
        ("dev-1", f"{SITE}/a", f"{SITE}/b", None),
        ("dev-2", f"{SITE}/c?utm_source=news", f"{SITE}/d", "news"),
    ]


@pytest.mark.parametrize("flags", [("--preset", "snowplow"), ("--user-col", "domain_userid", "--time-col",
                                   "derived_tstamp", "--session-col", "DOMAIN_sessionid")])  # fmt: skip
def test_required_columns_match_ignoring_case(tmp_path: Path, flags: tuple[str, ...]) -> None:
    """A Snowflake export's upper-case header (``DOMAIN_USERID``): the preset's required columns, and any
    column flag, find the one column equal to the name with case and punctuation ignored, as preferred
    names and --agg columns do (it was "no column 'domain_userid'"; review 49)."""
    source = write_text(
        tmp_path / "events.csv",
        "DOMAIN_USERID,DOMAIN_SESSIONID,DERIVED_TSTAMP,EVENT_ID,EVENT,PAGE_URL\n"
        f"d1,s1,2024-05-01 10:00:00.000,e1,page_view,{SITE}/\n"
        f"d1,s1,2024-05-01 10:01:00.000,e2,page_view,{SITE}/b\n",
    )
    table = session_table(tmp_path, source, *flags)
    assert table.select("session_id", "user_id", "event_count", "exit_page").rows() == [
        ("s1", "d1", "2", f"{SITE}/b")
    ]


def test_a_column_flag_matching_two_columns_is_refused(tmp_path: Path) -> None:
    """Two columns equal to the name with case ignored (``user_id`` and ``UserId`` for ``USER_ID``): the
    flag names neither, and the error names both (review 51)."""
    source = write_text(tmp_path / "events.csv", "user_id,UserId,timestamp\na,b,2024-05-01T10:00:00Z\n")
    result = run_cli(source, "-o", tmp_path / "o.csv", "--no-geo", "--user-col", "USER_ID")
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert (
        "no column 'USER_ID' (given with --user-col; it is ambiguous: 'user_id', 'UserId' all match it"
        in text
    )


def test_ga4_device_fields(tmp_path: Path) -> None:
    """The export has no user agent: GA4's own device category, operating system and browser of the
    session's first event are columns of the preset (null when the export has none)."""
    device = ('"device": {"category": "mobile", "operating_system": "Android", '
              '"web_info": {"browser": "Chrome"}}')  # fmt: skip
    lines = [
        '{"event_name": "page_view", "user_pseudo_id": "d-1", "event_timestamp": 1714557600000000, '
        '"event_params": [{"key": "ga_session_id", "value": {"int_value": 1714557600}}], ' + device + "}",
        '{"event_name": "page_view", "user_pseudo_id": "d-2", "event_timestamp": 1714557600000000, '
        '"event_params": [{"key": "ga_session_id", "value": {"int_value": 1714557600}}]}',
    ]
    source = write_text(tmp_path / "ga4.ndjson", "\n".join(lines) + "\n")
    table = session_table(tmp_path, source, "--preset", "ga4").sort("user_id")
    assert table.select(GA4_DEVICE).rows() == [("mobile", "Android", "Chrome"), (None, None, None)]


def test_ga4_screen_views_count_as_page_views(tmp_path: Path) -> None:
    """GA4's engaged rule counts "pageviews or screenviews": an app session of two screen views 3 s apart
    is engaged."""
    lines = [
        '{"event_name": "screen_view", "user_pseudo_id": "app-1", "event_timestamp": 1714557600000000,'
        ' "event_params": [{"key": "ga_session_id", "value": {"int_value": 1714557600}}]}',
        '{"event_name": "screen_view", "user_pseudo_id": "app-1", "event_timestamp": 1714557603000000,'
        ' "event_params": [{"key": "ga_session_id", "value": {"int_value": 1714557600}}]}',
    ]
    source = write_text(tmp_path / "ga4.ndjson", "\n".join(lines) + "\n")
    table = session_table(tmp_path, source, "--preset", "ga4")
    assert table.select("event_count", "pageview_count", "is_engaged").rows() == [("2", "2", "true")]


def test_ga4_ignores_the_referrer_of_an_unwanted_referral(tmp_path: Path) -> None:
    """GA4 marks a page view whose referrer is on the stream's unwanted-referrals list (a payment
    provider's page) with ignore_referrer = "true", and does not take that referrer: the session is
    direct. Without the flag, paypal.com was the session's Referral."""

    def page_view(user: str, params: str) -> str:
        return (
            f'{{"event_name": "page_view", "user_pseudo_id": "{user}", "event_timestamp": 1714557600000000, '
            '"event_params": [{"key": "ga_session_id", "value": {"int_value": 1714557600}}, '
            '{"key": "page_location", "value": {"string_value": "https://shop.example.com/thanks"}}, '
            '{"key": "page_referrer", "value": {"string_value": "https://www.paypal.com/checkout"}}'
            f"{params}]}}"
        )

    ignored = ', {"key": "ignore_referrer", "value": {"string_value": "true"}}'
    source = write_text(
        tmp_path / "ga4.ndjson", page_view("paid", ignored) + "\n" + page_view("ref", "") + "\n"
    )
    table = session_table(tmp_path, source, "--preset", "ga4").sort("user_id")
    assert table.select("user_id", "referrer", "traffic_source", "channel").rows() == [
        ("paid", None, "direct", "Direct"),
        ("ref", "https://www.paypal.com/checkout", "paypal", "Referral"),
    ]
    # The same flag named by hand, in a CSV with other spellings of true.
    csv = write_text(
        tmp_path / "events.csv",
        "user_id,timestamp,url,referrer,skip\n"
        "a,2024-05-01T10:00:00Z,/,https://www.paypal.com/,TRUE\n"
        "b,2024-05-01T10:00:00Z,/,https://www.paypal.com/, yes \n"
        "c,2024-05-01T10:00:00Z,/,https://www.paypal.com/,false\n"
        "d,2024-05-01T10:00:00Z,/,https://www.paypal.com/,\n",
    )
    table = session_table(tmp_path, csv, "--ignore-referrer-col", "skip").sort("user_id")
    assert table["channel"].to_list() == ["Direct", "Direct", "Referral", "Referral"]
    # An export where no event has the parameter (no unwanted referrals listed) reads as before.
    plain = write_text(tmp_path / "plain.ndjson", page_view("ref", "") + "\n")
    assert session_table(tmp_path, plain, "--preset", "ga4")["channel"].to_list() == ["Referral"]
    # A flag column that is not there is named, with the flag that named it.
    missing = run_cli(csv, "-o", tmp_path / "none.csv", "--no-geo", "-q", "--ignore-referrer-col", "skp")
    assert missing.exit_code != 0
    assert "--ignore-referrer-col" in missing.output and "'skip'" in missing.output
    assert not (tmp_path / "none.csv").exists()


def test_an_ignore_referrer_flag_with_gaps_reads_alike_in_parquet_and_csv(tmp_path: Path) -> None:
    """A pandas 0/1 column with gaps is float: NaN in Parquet, empty in a CSV, where pandas writes the
    ones as "1.0". NaN counted as set, and "1.0" as not set, so the two exports of the same data gave
    other channels (review of stop 37, item 5)."""
    flags = [1.0, float("nan"), 0.0, None, 2.0]
    frame = pl.DataFrame(
        {
            "user_id": ["a", "b", "c", "d", "e"],
            "timestamp": ["2024-05-01T10:00:00Z"] * 5,
            "url": ["https://shop.example/"] * 5,
            "referrer": ["https://pay.provider.example/return"] * 5,
            "flag": pl.Series(flags, dtype=pl.Float64),
        }
    )
    frame.write_parquet(tmp_path / "events.parquet")
    text = ["1.0", "", "0.0", "", "2.0"]
    frame.with_columns(pl.Series("flag", text)).write_csv(tmp_path / "events.csv")
    expected = ["Direct", "Referral", "Referral", "Referral", "Direct"]
    for name in ("events.parquet", "events.csv"):
        out = tmp_path / f"{name}.out.csv"
        result = run_cli(tmp_path / name, "-o", out, "--no-geo", "-q", "--ignore-referrer-col", "flag")
        assert result.exit_code == 0, result.output
        assert pl.read_csv(out, infer_schema=False).sort("user_id")["channel"].to_list() == expected, name


def test_an_ignore_referrer_flag_is_set_only_by_a_finite_non_zero_number(tmp_path: Path) -> None:
    """A flag is set by a finite number other than 0, or by its text: an infinity counted as set, as a
    float and as the text "inf" alike, where NaN did not (review of stop 37, item 5). Text is read
    trimmed and in any case: " TRUE ", "Yes", "1", "1.0" and "-2" are set; "0.0", "no" and "" are not."""
    floats = [float("inf"), float("-inf"), 1.0, -2.0, 0.0]
    texts = [" INF ", "-inf", " 1.0 ", "-2", "0.0", " TRUE ", "Yes", "1", "no", ""]
    users = [f"u{i}" for i in range(len(texts))]
    base = {"timestamp": "2024-05-01T10:00:00Z", "url": "https://shop.example/"}
    referrer = "https://pay.provider.example/return"
    expected_floats = ["Referral", "Referral", "Direct", "Direct", "Referral"]
    expected_texts = ["Referral", "Referral", "Direct", "Direct", "Referral", "Direct", "Direct", "Direct",
                      "Referral", "Referral"]  # fmt: skip
    for flags, expected in (
        (pl.Series(floats, dtype=pl.Float64), expected_floats),
        (pl.Series(texts), expected_texts),
    ):
        name = f"events_{flags.dtype}.parquet".lower()
        pl.DataFrame(
            {"user_id": users[: len(flags)], **base, "referrer": referrer, "flag": flags}
        ).write_parquet(tmp_path / name)
        out = tmp_path / f"{name}.out.csv"
        result = run_cli(tmp_path / name, "-o", out, "--no-geo", "-q", "--ignore-referrer-col", "flag")
        assert result.exit_code == 0, result.output
        table = pl.read_csv(out, infer_schema=False)
        assert table.sort("user_id")["channel"].to_list() == expected, name


def test_posthog_sessions_last_at_most_24_hours(tmp_path: Path) -> None:
    """PostHog's rule: 30 minutes of inactivity, and at most 24 hours (events without $session_id)."""
    lines = ["distinct_id,timestamp,event,uuid"]
    lines += [
        f"bot-ish,2024-05-01T{h:02d}:{m:02d}:00Z,$pageview,u-{h}-{m}" for h in range(24) for m in (0, 20, 40)
    ]
    lines += [f"bot-ish,2024-05-02T00:{m:02d}:00Z,$pageview,u-24-{m}" for m in (0, 20, 40)]
    source = write_text(tmp_path / "events.csv", "\n".join(lines) + "\n")
    rows = sessions(tmp_path, source, "--preset", "posthog")
    # The event exactly 24 hours after the start still belongs (a duration of 24 h is not more).
    assert [(row[2], row[3], row[8]) for row in rows] == [("73", "73", "86400.0"), ("2", "2", "1200.0")]
    # Without the preset: one session of 75 events (the timeout never passes).
    plain = sessions(tmp_path, source)
    assert [row[2] for row in plain] == ["75"]


def test_mixpanel_export(tmp_path: Path) -> None:
    """Mixpanel: properties.time in seconds, distinct_id, $insert_id de-duplicates."""
    assert sessions(tmp_path, FIXTURES / "mixpanel.ndjson", "--preset", "mixpanel") == [
        ("mp-1", "mp-1-20240501T100000.000000", "3", "2", f"{SITE}/", f"{SITE}/cart", "google",
         "Organic Search", "120.0"),
        ("mp-1", "mp-1-20240501T120000.000000", "1", "1", f"{SITE}/", f"{SITE}/", "direct", "Direct", "0.0"),
    ]  # fmt: skip


def test_amplitude_export(tmp_path: Path) -> None:
    """Amplitude: device_id and session_id (its start in epoch ms); -1 means out of session, and those
    events are sessionized by the timeout; insert_id de-duplicates."""
    assert sessions(tmp_path, FIXTURES / "amplitude.ndjson", "--preset", "amplitude") == [
        # Page Viewed / (referrer in user_properties: Google), add_to_cart (sent twice), Page Viewed /cart.
        ("dev-1", "1714557600000", "3", "2", f"{SITE}/", f"{SITE}/cart", "google", "Organic Search", "300.0"),
        # Two server-side events with session_id -1, 10 minutes apart: one session by the timeout.
        ("dev-1", "dev-1-20240501T140000.000000", "2", "0", None, None, "direct", "Direct", "600.0"),
    ]  # fmt: skip
    # Without --session-id-nulls the -1 events would share one client session "-1".
    rows = sessions(
        tmp_path, FIXTURES / "amplitude.ndjson", "--preset", "amplitude", "--session-id-nulls", ""
    )
    assert rows[1][1] == "-1"


def test_a_preset_on_a_frame_in_memory() -> None:
    """sessionize.sessionize(frame, preset=...) reads a frame of the export as sessionize run reads the file
    (GA4's event_params unnested in memory too)."""
    frame = pl.read_ndjson(FIXTURES / "ga4.ndjson", infer_schema_length=None)
    table = sessionize.sessionize(frame, preset="ga4", no_geo=True).collect()
    files = sessionize.run([FIXTURES / "ga4.ndjson"], preset="ga4", no_geo=True).sessions
    assert table.sort(KEYS).equals(files.sort(KEYS))
    assert table.get_column("session_id").to_list() == ["1714557600", "1714564800", "1714557900"]


def test_explicit_options_win_over_the_preset(tmp_path: Path) -> None:
    source = FIXTURES / "ga4.ndjson"
    # --session-col given: GA4's ga_session_id is not used; the timeout decides (3 sessions still).
    rows = sessions(tmp_path, source, "--preset", "ga4", "--session-col", "event_date")
    assert {row[1] for row in rows} == {"20240501"}
    # In a config file too: a key there is given explicitly; the preset may come from the file.
    config = write_text(tmp_path / "sessionize.toml", '[run]\npreset = "ga4"\ntimeout = "1m"\n')
    rows = sessions(tmp_path, source, "--config", str(config), preset="ga4")
    assert [row[1] for row in rows] == ["1714557600", "1714564800", "1714557900"]
    # The Python face: keywords given are explicit.
    result = sessionize.run([source], preset="ga4", no_geo=True, session_col="event_date")
    assert set(result.sessions.get_column("session_id")) == {"20240501"}


def test_unknown_preset_and_the_list(tmp_path: Path) -> None:
    result = run_cli(FIXTURES / "ga4.ndjson", "--preset", "ga5", "--no-geo")
    assert result.exit_code != 0
    assert "'ga5' is not one of ga4, snowplow, segment, posthog, amplitude, mixpanel" in result.output
    with pytest.raises(UsageError, match="sessionize presets"):
        presets.get("nope")
    listing = invoke("presets")
    assert listing.exit_code == 0, listing.output
    for preset in presets.PRESETS.values():
        assert preset.name in listing.output and preset.source in listing.output
    assert "--user-col" in listing.output and "domain_userid" in listing.output
    assert "ga_session_number=max(event_params.ga_session_number)" in listing.output


# --- Snowplow's enriched TSV (headerless, 131 fields) ----------------------------------------------

ENRICHED = FIXTURES / "snowplow_enriched.tsv"


def test_snowplow_enriched_tsv_gives_the_sessions_of_atomic_events(tmp_path: Path) -> None:
    """The same events as snowplow_atomic_events.csv, as the pipeline writes them (contexts JSON with
    quotes included): detected by their first line, the same sessions, gzipped or not, whole or in
    windows (buckets)."""
    expected = sessions(tmp_path, FIXTURES / "snowplow_atomic_events.csv", "--preset", "snowplow")
    assert sessions(tmp_path, ENRICHED, "--preset", "snowplow") == expected
    gz = tmp_path / "enriched.tsv.gz"
    gz.write_bytes(gzip.compress(ENRICHED.read_bytes()))
    assert sessions(tmp_path, gz, "--preset", "snowplow") == expected
    other = tmp_path / "events.txt"
    other.write_bytes(ENRICHED.read_bytes())
    assert sessions(tmp_path, other, "--preset", "snowplow", "--input-format", "snowplow") == expected
    out = tmp_path / "buckets.parquet"
    sessionize.run([gz], preset="snowplow", no_geo=True, buckets=2, temp_dir=str(tmp_path), output=str(out))
    in_memory = sessionize.run([ENRICHED], preset="snowplow", no_geo=True).sessions
    assert pl.read_parquet(out).sort(KEYS).equals(in_memory.sort(KEYS))


def test_a_tsv_with_a_header_is_not_enriched_events(tmp_path: Path) -> None:
    atomic = pl.read_csv(FIXTURES / "snowplow_atomic_events.csv", infer_schema=False)
    tsv = tmp_path / "atomic.tsv"
    atomic.write_csv(tsv, separator="\t")
    assert sessions(tmp_path, tsv, "--preset", "snowplow") == sessions(
        tmp_path, FIXTURES / "snowplow_atomic_events.csv", "--preset", "snowplow"
    )


def test_a_malformed_enriched_line_is_named_and_set_aside(tmp_path: Path) -> None:
    lines = ENRICHED.read_text(encoding="utf-8").splitlines()
    lines.insert(2, "\t".join(lines[2].split("\t")[:40]))  # a truncated event: line 3
    source = write_text(tmp_path / "enriched.tsv", "\n".join(lines) + "\n")
    failed = run_cli(source, "--preset", "snowplow", "--no-geo", "-o", tmp_path / "x.csv")
    assert failed.exit_code == 1
    assert "line 3: wrong_field_count (40, expected 131)" in failed.output
    assert not (tmp_path / "x.csv").exists()
    rejects = tmp_path / "rejects.csv"
    result = sessionize.run([source], preset="snowplow", no_geo=True, on_invalid="skip", rejects=str(rejects))
    assert (result.rows_read, result.rejected, result.duplicates_removed, result.events_read) == (7, 1, 1, 5)
    rejected = pl.read_csv(rejects, infer_schema=False)
    assert rejected.select("source_row", "reject_reason").rows() == [
        ("3", "wrong_field_count (40, expected 131)")
    ]


# --- Snowplow's page pings and page view ids -------------------------------------------------------

PINGS = FIXTURES / "snowplow_page_pings.csv"
U1, U2 = "d1a2b3c4-0000-4000-8000-00000000000a", "d1a2b3c4-0000-4000-8000-00000000000b"
PINGS_EXPECTED = [
    # ping, ping on /article (its page view was never received), page_view /next, the same page view
    # (its web_page id) sent again with another event id, ping on /next. The pings are page activity:
    # /article is the landing page, with its referrer (Google); one page view by distinct id, 4 events.
    (U1, "5e5e0001-0000-4000-8000-00000000000a", "4", "1", f"{SITE}/article", f"{SITE}/next", "google",
     "Unassigned", "40.0"),
    # Only pings: no page view, yet /blog is the landing and exit page, and HN the source.
    (U2, "5e5e0001-0000-4000-8000-00000000000b", "2", "0", f"{SITE}/blog", f"{SITE}/blog", "ycombinator",
     "Unassigned", "10.0"),
]  # fmt: skip


def test_snowplow_page_pings_are_page_activity_and_page_views_count_by_id(tmp_path: Path) -> None:
    assert sessions(tmp_path, PINGS, "--preset", "snowplow") == PINGS_EXPECTED
    # Without the rule (explicit flags win): pings are plain events, so the second session has no
    # landing page, and the repeated page view counts twice.
    flags = ("--page-activity-events", "", "--page-view-id-col", "event_id")
    plain = sessions(tmp_path, PINGS, "--preset", "snowplow", *flags)
    assert [row[2:6] for row in plain] == [
        ("5", "2", f"{SITE}/next", f"{SITE}/next"),
        ("2", "0", None, None),
    ]


def test_snowplow_engaged_sessions_and_bots(tmp_path: Path) -> None:
    """Snowplow's engaged session is ``page_views >= 2 or engaged_time_in_s / heartbeat >= 2`` (its
    engaged_session macro), and its web model filters bots out (``snowplow__ua_bot_filter``)."""
    header = ("derived_tstamp,dvce_created_tstamp,event,event_id,domain_userid,domain_sessionid,page_url,"
              "useragent,page_view_id")  # fmt: skip
    browser = "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"
    bot = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"

    def row(user: str, second: int, event: str, agent: str, pv: str) -> str:
        time = f"2024-05-01 10:00:{second:02d}"
        return f"{time},{time},{event},{user}-{second},{user},s-{user},{SITE}/a,{agent},{pv}"

    lines = [
        header,
        # A page view and two pings 10 s apart: 15 s of engaged time (5 + 10), 20 s long: not engaged.
        row("short", 0, "page_view", browser, "pv1"),
        row("short", 10, "page_ping", browser, "pv1"),
        row("short", 20, "page_ping", browser, "pv1"),
        # Three pings: 25 s of engaged time: engaged.
        row("long", 0, "page_view", browser, "pv2"),
        row("long", 10, "page_ping", browser, "pv2"),
        row("long", 20, "page_ping", browser, "pv2"),
        row("long", 30, "page_ping", browser, "pv2"),
        # Googlebot's page views: no session.
        row("crawler", 0, "page_view", bot, "pv3"),
        row("crawler", 5, "page_view", bot, "pv4"),
    ]
    source = write_text(tmp_path / "events.csv", "\n".join(lines) + "\n")
    table = session_table(tmp_path, source, "--preset", "snowplow").sort("user_id")
    assert table.select("user_id", "engaged_time_s", "is_engaged").rows() == [
        ("long", "25.0", "true"),
        ("short", "15.0", "false"),
    ]


def test_the_web_page_context_as_a_warehouse_writes_it(tmp_path: Path) -> None:
    """BigQuery and Databricks hold the web_page context as a list of structs, a derived table as a plain
    page_view_id column: the same sessions; and buckets and Dask give what memory gives."""
    frame = pl.read_csv(PINGS, infer_schema=False)
    context = "contexts_com_snowplowanalytics_snowplow_web_page_1"
    ids = pl.col(context).str.json_path_match("$[0].id")
    bigquery = tmp_path / "bigquery.parquet"
    frame.with_columns(pl.concat_list(pl.struct(ids.alias("id"))).alias(f"{context}_0_0")).drop(
        context
    ).write_parquet(bigquery)
    assert sessions(tmp_path, bigquery, "--preset", "snowplow") == PINGS_EXPECTED
    derived = tmp_path / "derived.csv"
    frame.with_columns(ids.alias("page_view_id")).drop(context).write_csv(derived)
    assert sessions(tmp_path, derived, "--preset", "snowplow") == PINGS_EXPECTED
    in_memory = sessionize.run([PINGS], preset="snowplow", no_geo=True).sessions.sort(KEYS)
    out = tmp_path / "buckets.parquet"
    sessionize.run(
        [PINGS], preset="snowplow", no_geo=True, buckets=2, temp_dir=str(tmp_path), output=str(out)
    )
    assert pl.read_parquet(out).sort(KEYS).equals(in_memory)
    dask = sessionize.run([PINGS], preset="snowplow", no_geo=True, engine="dask", partitions=2).sessions
    assert dask.sort(KEYS).equals(in_memory)


def test_page_activity_and_page_view_ids_without_a_preset(tmp_path: Path) -> None:
    """The two rules are general flags: any export with heartbeat events and a page view id."""
    source = write_text(
        tmp_path / "events.csv",
        "visitor,ts,name,pv,url\n"
        "v1,2024-05-01T10:00:00Z,heartbeat,p0,https://a.example/first\n"
        "v1,2024-05-01T10:00:05Z,view,p1,https://a.example/second\n"
        "v1,2024-05-01T10:00:06Z,view,p1,https://a.example/second\n"
        "v1,2024-05-01T10:00:20Z,heartbeat,p1,https://a.example/second\n"
        "v1,2024-05-01T10:00:30Z,click,p1,https://a.example/second?button\n",
    )
    flags = ("--user-col", "visitor", "--event-col", "name", "--pageview-events", "view")
    rows = sessions(
        tmp_path, source, *flags, "--page-activity-events", "heartbeat", "--page-view-id-col", "pv"
    )
    assert [row[2:6] for row in rows] == [("4", "1", "https://a.example/first", "https://a.example/second")]
    # The click is neither: not the exit page. Without the flags: 5 events, 2 page views.
    rows = sessions(tmp_path, source, *flags)
    assert [row[2:6] for row in rows] == [("5", "2", "https://a.example/second", "https://a.example/second")]
    table = sessionize.sessionize(
        pl.read_csv(source), user_col="visitor", event_col="name", pageview_events="view",
        page_activity_events="heartbeat", page_view_id_col="pv", no_geo=True,
    ).collect()  # fmt: skip
    assert table.select("event_count", "pageview_count", "landing_page").row(0) == (
        4, 1, "https://a.example/first"
    )  # fmt: skip


def test_a_flattened_ga4_export_is_told_how_to_read_it(tmp_path: Path) -> None:
    """A GA4 export whose parameters are already columns: the error lists the file's own columns (not the
    reader's internal row number) and says how to read it, and that way works (review 49)."""
    source = write_text(
        tmp_path / "ga4.csv",
        "event_date,event_timestamp,event_name,user_pseudo_id,page_location,ga_session_id\n"
        f"20240501,1714550400000000,page_view,111.222,{SITE}/,1714550400\n",
    )
    out = tmp_path / "sessions.csv"
    refused = run_cli(source, "-o", out, "--no-geo", "--preset", "ga4")
    assert refused.exit_code == 1
    text = " ".join(refused.output.split())
    assert "Its columns are: event_date, event_timestamp, event_name," in text and "_row" not in text
    assert "give --unnest-params '' and name the columns" in text
    flags = ["--unnest-params", "", "--session-col", "ga_session_id", "--url-col", "page_location"]
    result = run_cli(source, "-o", out, "--no-geo", "-q", "--preset", "ga4", *flags)
    assert result.exit_code == 0, result.output
    table = pl.read_csv(out, infer_schema=False)
    assert table.select("session_id", "landing_page").rows() == [("1714550400", f"{SITE}/")]


def test_a_flag_matched_ignoring_case_is_no_other_role(tmp_path: Path) -> None:
    """``--stitch-col user_id`` on an upper-case header is ``USER_ID``, which the user id's built-in names
    then may not take as well: it did (one user, alice, instead of two anonymous ids; review 51)."""
    source = write_text(
        tmp_path / "events.csv",
        "ANONYMOUS_ID,USER_ID,TIMESTAMP\n"
        "a1,alice,2024-01-01T00:00:00Z\na2,alice,2024-01-01T00:01:00Z\na1,alice,2024-01-01T00:02:00Z\n",
    )
    table = session_table(tmp_path, source, "--stitch-col", "user_id").sort("user_id")
    assert table.select("user_id", "event_count", "stitched_user_id").rows() == [
        ("a1", "2", "alice"),
        ("a2", "1", "alice"),
    ]


#: The presets whose vendor documents its time column as UTC, with a fixture whose times carry no
#: offset (Amplitude's and Snowplow's as exported; Segment's and PostHog's as a warehouse table or CSV
#: export writes them: the fixtures' ISO times without their Z).
UTC_PRESETS = {
    "amplitude": "amplitude.ndjson",
    "snowplow": "snowplow_atomic_events.csv",
    "segment": "segment.ndjson",
    "posthog": "posthog.ndjson",
}


def naive_copy(tmp_path: Path, name: str) -> Path:
    text = (FIXTURES / name).read_text(encoding="utf-8")
    return write_text(tmp_path / name, text.replace('.000Z"', '.000"'))


@pytest.mark.parametrize("name", UTC_PRESETS)
def test_timezone_sets_only_the_local_day_of_a_preset_whose_times_are_utc(tmp_path: Path, name: str) -> None:
    """--preset amplitude --timezone Europe/Berlin re-read Amplitude's event_time (UTC without an offset)
    as Berlin time: every session 2 hours early, exit 0 (review 54 F2). --timezone now sets the local day
    and the preset's times stay UTC."""
    source = naive_copy(tmp_path, UTC_PRESETS[name])
    utc = session_table(tmp_path, source, "--preset", name)
    berlin = session_table(tmp_path, source, "--preset", name, "--timezone", "Europe/Berlin")
    assert berlin.get_column("session_start").to_list() == utc.get_column("session_start").to_list()
    assert berlin.height == utc.height > 0
    # An explicit --input-timezone wins over the preset's UTC, as every explicit option does.
    local = session_table(tmp_path, source, "--preset", name, "--input-timezone", "Europe/Berlin")
    assert local.get_column("session_start").to_list() == [
        (datetime.fromisoformat(start) - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        for start in utc.get_column("session_start").to_list()
    ]


def amplitude_events(tmp_path: Path, *times: str) -> Path:
    lines = [
        json.dumps({"event_type": "Page View", "device_id": "dev-1", "event_time": t, "session_id": -1})
        for t in times
    ]
    return write_text(tmp_path / "amplitude.ndjson", "\n".join(lines) + "\n")


def test_a_utc_time_in_the_local_clock_change_is_no_error(tmp_path: Path) -> None:
    """02:10 on 31 March 2024 does not exist in Berlin (clocks jump from 02:00 to 03:00) but is a real UTC
    time: with --timezone Europe/Berlin it stopped the run as a nonexistent local time."""
    source = amplitude_events(tmp_path, "2024-03-31 01:45:00.000000", "2024-03-31 02:10:00.000000")
    table = session_table(tmp_path, source, "--preset", "amplitude", "--timezone", "Europe/Berlin")
    assert table.select("session_start", "session_end", "event_count").rows() == [
        ("2024-03-31T01:45:00.000000Z", "2024-03-31T02:10:00.000000Z", "2")
    ]


def test_timezone_still_splits_a_preset_s_sessions_at_local_midnight(tmp_path: Path) -> None:
    """21:50 and 22:10 UTC on 1 May are 23:50 and 00:10 in Berlin: --split-at-midnight cuts there."""
    source = amplitude_events(tmp_path, "2024-05-01 21:50:00.000000", "2024-05-01 22:10:00.000000")
    flags = ("--preset", "amplitude", "--timezone", "Europe/Berlin", "--split-at-midnight")
    table = session_table(tmp_path, source, *flags)
    assert table.get_column("session_start").to_list() == [
        "2024-05-01T21:50:00.000000Z",
        "2024-05-01T22:10:00.000000Z",
    ]


@pytest.mark.parametrize("name", presets.PRESETS)
def test_presets_read_naive_times_as_their_vendor_writes_them(name: str) -> None:
    config = sessionize.RunConfig.from_options(**presets.apply(name, {"timezone": "Europe/Berlin"}))
    assert config.session.timezone == "Europe/Berlin"
    # Mixpanel's time is epoch seconds, which no zone moves (in the project's zone on older projects:
    # docs/presets.md); the others are UTC by their vendors' documentation.
    assert config.read.input_timezone == ("Europe/Berlin" if name == "mixpanel" else "UTC")


def test_input_timezone_without_a_preset(tmp_path: Path) -> None:
    """Without a preset, naive times are in --timezone (as before) unless --input-timezone says otherwise."""
    source = write_text(
        tmp_path / "events.csv",
        "user_id,timestamp,url\nu,2024-05-01 21:50:00,https://s.example/a\nu,2024-05-01 22:10:00,https://s.example/b\n",
    )
    starts = {
        flags: session_table(tmp_path, source, *flags).get_column("session_start").to_list()
        for flags in [
            (),
            ("--timezone", "Europe/Berlin"),
            ("--timezone", "Europe/Berlin", "--input-timezone", "UTC", "--split-at-midnight"),
            ("--input-timezone", "Europe/Berlin"),
        ]
    }
    assert list(starts.values()) == [
        ["2024-05-01T21:50:00.000000Z"],
        ["2024-05-01T19:50:00.000000Z"],
        ["2024-05-01T21:50:00.000000Z", "2024-05-01T22:10:00.000000Z"],
        ["2024-05-01T19:50:00.000000Z"],
    ]
    result = run_cli(source, "--no-geo", "--input-timezone", "Mars/Olympus")
    assert (
        result.exit_code == 2 and "--input-timezone 'Mars/Olympus' is not a known time zone" in result.output
    )
