"""The session rule and the session table, on tiny literal frames."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

import polars as pl
import pytest

import sessionize
from sessionize.attribution import CAMPAIGN, add_campaign_key
from sessionize.core import assign_sessions
from tests.helpers import SAMPLE_DATA, T0, EventsFactory, at

MIN = 60
HOUR = 3600


def sessions_of(frame: pl.DataFrame, **options: Any) -> pl.DataFrame:
    return sessionize.sessionize(frame, **options).collect()


def test_gap_of_exactly_the_timeout_stays_in_the_session(events: EventsFactory) -> None:
    table = sessions_of(events([("u", 0), ("u", 30 * MIN)]))
    assert table.height == 1
    assert table["duration_s"].to_list() == [1800.0]
    assert table["event_count"].to_list() == [2]


def test_one_microsecond_more_than_the_timeout_starts_a_new_session(events: EventsFactory) -> None:
    frame = events([("u", T0), ("u", at(minutes=30, microseconds=1))])
    table = sessions_of(frame)
    assert table["session_number"].to_list() == [1, 2]
    assert table["session_start"].to_list() == [T0, at(minutes=30, microseconds=1)]
    assert table["duration_s"].to_list() == [0.0, 0.0]


def test_gap_is_measured_from_the_previous_event_not_the_session_start(events: EventsFactory) -> None:
    # Ten events 20 minutes apart: no single gap exceeds 30 minutes, so one 3-hour session.
    table = sessions_of(events([("u", i * 20 * MIN) for i in range(10)]))
    assert table.height == 1
    assert table["duration_s"].item() == 9 * 20 * MIN


def test_custom_timeout(events: EventsFactory) -> None:
    frame = events([("u", 0), ("u", 45 * MIN)])
    assert sessions_of(frame).height == 2
    assert sessions_of(frame, timeout="1h").height == 1
    assert sessions_of(frame, timeout=timedelta(minutes=44)).height == 2
    assert sessions_of(frame, timeout="90s").height == 2


@pytest.mark.parametrize("bad", ["10 minutes", "30", "", "-5m", "0s"])
def test_bad_timeouts_are_usage_errors(events: EventsFactory, bad: str) -> None:
    with pytest.raises(sessionize.UsageError, match="timeout"):
        sessionize.sessionize(events([("u", 0)]), timeout=bad)


def test_single_event_session(events: EventsFactory) -> None:
    table = sessions_of(events([("u", 0, "https://s.example/a", "https://www.google.com/")]))
    row = table.row(0, named=True)
    assert row["duration_s"] == 0.0
    assert row["session_start"] == row["session_end"] == T0
    assert row["landing_page"] == row["exit_page"] == "https://s.example/a"
    assert row["event_count"] == row["pageview_count"] == 1
    assert row["traffic_source"] == "google"


def test_unsorted_input_is_sorted_per_user(events: EventsFactory) -> None:
    rows = [
        ("u", 35 * MIN, "https://s.example/c"),
        ("u", 0, "https://s.example/a"),
        ("u", 10 * MIN, "https://s.example/b"),
    ]
    table = sessions_of(events(rows))
    assert table.height == 1
    assert table["landing_page"].item() == "https://s.example/a"
    assert table["exit_page"].item() == "https://s.example/c"


def test_equal_timestamps_keep_input_order(events: EventsFactory) -> None:
    rows = [("u", 0, "https://s.example/first"), ("u", 0, "https://s.example/second")]
    table = sessions_of(events(rows))
    assert table["landing_page"].item() == "https://s.example/first"
    assert table["exit_page"].item() == "https://s.example/second"
    reversed_table = sessions_of(events(rows[::-1]))
    assert reversed_table["landing_page"].item() == "https://s.example/second"


def test_many_users_are_independent(events: EventsFactory) -> None:
    # Interleaved users: a's events are 20 min apart (one session) although b's fall in between.
    rows = [("a", 0), ("b", 5 * MIN), ("a", 20 * MIN), ("b", 50 * MIN), ("a", 40 * MIN), ("c", 0)]
    table = sessions_of(events(rows))
    counts = dict(table.group_by("user_id").len().iter_rows())
    assert counts == {"a": 1, "b": 2, "c": 1}
    assert table["user_id"].to_list() == ["a", "b", "b", "c"]
    assert table.filter(pl.col("user_id") == "b")["session_number"].to_list() == [1, 2]


@pytest.mark.parametrize("with_client_ids", [False, True])
def test_users_whose_ids_hash_alike_are_not_interleaved(
    events: EventsFactory, monkeypatch: pytest.MonkeyPatch, with_client_ids: bool
) -> None:
    """The sort key holds a hash of the user id: ids that hash alike must still be told apart."""
    rows = [
        ("a", 0, "https://s.example/1", None, "page_view", None),
        ("b", 5 * MIN, "https://s.example/2", None, "page_view", "s1" if with_client_ids else None),
        ("a", 20 * MIN, "https://s.example/3", None, "click", None),
        ("b", 50 * MIN, "https://s.example/4", None, "page_view", None),
        ("a", 40 * MIN, "https://s.example/5", None, "page_view", None),
        ("c", 0, "https://s.example/6", None, "page_view", None),
    ]
    frame = events(rows)
    prepared = sessionize.prepare_events(frame.lazy(), columns=sessionize.resolve_columns(frame.columns))

    def results() -> tuple[pl.DataFrame, pl.DataFrame]:
        # Users come in the order of their hashes: compare each user's events, in their order.
        labelled = assign_sessions(prepared).collect().sort("user_id", maintain_order=True)
        table = sessionize.summarize_sessions(assign_sessions(prepared, label=False)).collect()
        return labelled, table

    expected = results()
    # Every id hashes to 0: all users collide.
    for cls in (pl.Series, pl.Expr):
        original = cls.hash
        monkeypatch.setattr(cls, "hash", lambda self, *a, original=original, **k: original(self, *a, **k) * 0)
    assert pl.Series(["a", "b"]).hash().to_list() == [0, 0]
    labelled, table = results()
    assert labelled.equals(expected[0])
    assert table.equals(expected[1])
    assert table["user_id"].to_list() == ["a", "b", "b", "c"]


def test_ids_sorted_by_the_top_bits_of_their_hashes_are_told_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    """With 8,193 events over 50 years, the packed sort key holds 51 bits of time (microseconds), 14
    of rows and so only 62 of the ids' hashes: two ids whose hashes differ only in the bits left out
    are sorted as one, and must be found out as a collision (not compared by their whole hashes)."""
    start = pl.datetime(2000, 1, 1, time_zone="UTC")
    minutes = list(range(6)) + [t for t in range(10, 8196)] + [50 * 365 * 24 * 60]
    frame = pl.select(
        user_id=pl.Series(["bb", "ccc", "bb", "ccc", "bb", "ccc", *["fillers"] * (len(minutes) - 6)]),
        timestamp=start + pl.duration(minutes=pl.lit(pl.Series(minutes))),
    )
    assert frame.height == 8193
    prepared = sessionize.prepare_events(frame.lazy(), columns=sessionize.resolve_columns(frame.columns))

    def table() -> pl.DataFrame:
        return sessionize.summarize_sessions(assign_sessions(prepared, label=False)).collect()

    expected = table()
    assert expected.select("user_id", "event_count").rows() == [
        ("bb", 3),
        ("ccc", 3),
        ("fillers", 8186),
        ("fillers", 1),
    ]
    # The ids hash to 2, 3 and 7: "bb" and "ccc" share the top 62 bits, but not their hashes.
    for cls in (pl.Series, pl.Expr):
        monkeypatch.setattr(cls, "hash", lambda self, *a, **k: self.str.len_bytes().cast(pl.UInt64))
    assert pl.Series(["bb", "ccc"]).hash().to_list() == [2, 3]
    assert table().equals(expected)


def test_mixed_offsets_are_compared_as_instants() -> None:
    frame = pl.DataFrame(
        {
            "user_id": ["u", "u", "u"],
            # 10:00Z, then 12:20+02:00 (= 10:20Z), then 05:45-05:00 (= 10:45Z): one session.
            "timestamp": ["2024-05-01T10:00:00Z", "2024-05-01T12:20:00+02:00", "2024-05-01T05:45:00-05:00"],
        }
    )
    table = sessions_of(frame)
    assert table.height == 1
    assert table["duration_s"].item() == 45 * MIN


@pytest.mark.parametrize(
    ("values", "unit"),
    [
        ([1714557600, 1714559400], "s"),
        ([1714557600_000, 1714559400_000], "ms"),
        ([1714557600_000_000, 1714559400_000_000], "us"),
        ([1714557600_000_000_000, 1714559400_000_000_000], "ns"),
    ],
)
def test_epoch_units_given_or_detected(values: list[int], unit: str) -> None:
    frame = pl.DataFrame({"user_id": ["u", "u"], "ts": values})
    for time_unit in (unit, None):
        table = sessions_of(frame, time_unit=time_unit)
        assert table["session_start"].item() == T0
        assert table["duration_s"].item() == 1800.0


def test_epoch_seconds_with_fraction_keep_microseconds() -> None:
    frame = pl.DataFrame({"user_id": ["u"], "ts": ["1714557600.123456"]})
    assert sessions_of(frame)["session_start"].item() == at(microseconds=123456)


def test_leading_zero_and_long_numeric_ids_stay_strings() -> None:
    frame = pl.DataFrame({"user_id": ["00042", "1000000000001"], "timestamp": ["2024-05-01T10:00:00Z"] * 2})
    table = sessions_of(frame)
    assert table["user_id"].to_list() == ["00042", "1000000000001"]
    assert table.schema["user_id"] == pl.String


def test_integer_user_ids_become_exact_strings() -> None:
    frame = pl.DataFrame({"user_id": [1000000000001, 42], "timestamp": ["2024-05-01T10:00:00Z"] * 2})
    assert sorted(sessions_of(frame)["user_id"].to_list()) == ["1000000000001", "42"]


def test_landing_and_exit_are_page_views_not_other_events(events: EventsFactory) -> None:
    rows = [
        ("u", 0, "https://s.example/scroll", "https://www.bing.com/", "scroll"),
        ("u", 1, "https://s.example/landing", "https://www.google.com/", "page_view"),
        ("u", 2, "https://s.example/exit", "https://s.example/landing", "page_view"),
        ("u", 3, "https://s.example/after", None, "click"),
    ]
    row = sessions_of(events(rows)).row(0, named=True)
    assert row["landing_page"] == "https://s.example/landing"
    assert row["exit_page"] == "https://s.example/exit"
    assert row["referrer"] == "https://www.google.com/"
    assert row["traffic_source"] == "google"
    assert row["event_count"] == 4
    assert row["pageview_count"] == 2


def test_null_referrer_of_the_landing_page_is_direct(events: EventsFactory) -> None:
    # The landing page view has no referrer; a later one has: the session is still direct.
    rows = [
        ("u", 0, "https://s.example/a", None, "page_view"),
        ("u", 1, "https://s.example/b", "https://www.google.com/", "page_view"),
    ]
    row = sessions_of(events(rows)).row(0, named=True)
    assert row["referrer"] is None
    assert row["traffic_source"] == "direct"


def test_session_without_page_views_uses_the_first_event(events: EventsFactory) -> None:
    rows = [
        ("u", 0, "https://s.example/a", "https://www.quora.com/q", "click"),
        ("u", 1, "https://s.example/b", "https://www.google.com/", "scroll"),
    ]
    row = sessions_of(events(rows)).row(0, named=True)
    assert row["pageview_count"] == 0
    assert row["landing_page"] is None
    assert row["exit_page"] is None
    assert row["referrer"] == "https://www.quora.com/q"
    assert row["traffic_source"] == "quora"


def test_custom_pageview_events_are_case_insensitive(events: EventsFactory) -> None:
    rows = [("u", 0, "https://s.example/a", None, "Screen View"), ("u", 1, "https://s.example/b", None, "x")]
    row = sessions_of(events(rows), pageview_events="screen view").row(0, named=True)
    assert row["pageview_count"] == 1
    assert row["landing_page"] == "https://s.example/a"


def test_without_event_column_every_event_with_url_is_a_page_view(events: EventsFactory) -> None:
    rows = [("u", 0, None, "https://t.co/x"), ("u", 1, "https://s.example/a", "https://www.google.com/")]
    row = sessions_of(events(rows)).row(0, named=True)
    assert row["pageview_count"] == 1
    assert row["landing_page"] == "https://s.example/a"
    assert row["traffic_source"] == "google"


def test_client_session_ids_are_kept_and_not_split_by_the_timeout(events: EventsFactory) -> None:
    rows = [
        ("u", 0, "https://s.example/a", None, "page_view", "app-1"),
        ("u", 2 * HOUR, "https://s.example/b", None, "page_view", "app-1"),
        ("u", 30, "https://s.example/web", None, "page_view", None),
        ("u", 45 * MIN, "https://s.example/web2", None, "page_view", None),
        ("v", 0, "https://s.example/v", None, "page_view", "app-1"),
    ]
    table = sessions_of(events(rows))
    u = table.filter(pl.col("user_id") == "u")
    assert u["session_id"].to_list()[0] == "app-1"
    assert u.filter(pl.col("session_id") == "app-1")["duration_s"].item() == 2 * HOUR
    # The events without an id are split by the timeout among themselves (30 s and 45 min: gap > 30 min).
    assert u.height == 3
    assert u["session_number"].to_list() == [1, 2, 3]
    assert u["session_start"].to_list() == [T0, at(seconds=30), at(minutes=45)]
    # Client ids are grouped within the user: v's "app-1" is another session.
    assert table.filter(pl.col("user_id") == "v").height == 1


def test_session_ids_are_deterministic_and_unique(events: EventsFactory) -> None:
    rows = [("u", 0), ("u", 2 * HOUR), ("w", 0)]
    first = sessions_of(events(rows))
    second = sessions_of(events(rows[::-1]))
    assert first["session_id"].to_list() == second["session_id"].to_list()
    assert first["session_id"].to_list() == [
        "u-20240501T100000.000000",
        "u-20240501T120000.000000",
        "w-20240501T100000.000000",
    ]
    assert first["session_id"].is_unique().all()


def test_output_schema_and_order(events: EventsFactory) -> None:
    table = sessions_of(events([("u", 0, "https://s.example/")]))
    assert table.schema == pl.Schema(sessionize.SESSION_SCHEMA)


def test_empty_frame_gives_empty_table_with_schema(events: EventsFactory) -> None:
    table = sessions_of(events([]))
    assert table.height == 0
    assert table.schema == pl.Schema(sessionize.SESSION_SCHEMA)


def test_missing_user_column_lists_the_columns() -> None:
    frame = pl.DataFrame({"who": ["u"], "timestamp": ["2024-05-01T10:00:00Z"]})
    with pytest.raises(sessionize.MissingColumnError, match=r"who, timestamp.*--user-col"):
        sessionize.sessionize(frame)
    assert sessions_of(frame, user_col="who")["user_id"].to_list() == ["u"]


def test_unparsable_timestamp_names_the_row_and_value() -> None:
    frame = pl.DataFrame({"user_id": ["u", "u", "u"], "timestamp": ["2024-05-01T10:00:00Z", "soon", "later"]})
    with pytest.raises(sessionize.BadTimestampError, match=r"2 timestamp.*row index 1: 'soon'; row index 2"):
        sessionize.sessionize(frame)


def test_empty_user_id_is_an_error() -> None:
    frame = pl.DataFrame({"user_id": ["u", ""], "timestamp": ["2024-05-01T10:00:00Z"] * 2})
    with pytest.raises(sessionize.MissingUserIdError, match="row index 1"):
        sessionize.sessionize(frame)


@pytest.mark.parametrize("engine", ["in-memory", "streaming"])
def test_same_result_on_both_polars_engines(
    events: EventsFactory, engine: Literal["in-memory", "streaming"]
) -> None:
    rows = [
        (
            "u",
            i * 7 * MIN,
            f"https://s.example/{i}",
            "https://www.google.com/" if i == 0 else None,
            "page_view",
        )
        for i in range(12)
    ] + [("v", 0, "https://s.example/v", None, "click"), ("v", 1, "https://s.example/w", None, "page_view")]
    lazy = sessionize.sessionize(events(rows), timeout="10m")
    expected = lazy.collect(engine="in-memory")
    assert lazy.collect(engine=engine).equals(expected)


def test_assign_sessions_labels_every_event(events: EventsFactory) -> None:
    frame = sessionize.prepare_events(
        events([("u", 0), ("u", 31 * MIN), ("u", 32 * MIN)]).lazy(),
        columns=sessionize.ColumnMap(user_id="user_id", timestamp="timestamp"),
    )
    labelled = assign_sessions(frame).collect()
    assert labelled["session_id"].to_list() == [
        "u-20240501T100000.000000",
        "u-20240501T103100.000000",
        "u-20240501T103100.000000",
    ]


# --- engagement ------------------------------------------------------------------------------------------


def test_engagement_follows_ga4(events: EventsFactory) -> None:
    rows = [
        ("short", 0, "https://s.example/a", None, "page_view"),
        ("short", 9.999, "https://s.example/a", None, "click"),
        # GA4: "lasts longer than 10 seconds", so exactly 10 s (common with second-rounded times) is not.
        ("ten", 0, "https://s.example/a", None, "page_view"),
        ("ten", 10, "https://s.example/a", None, "scroll"),
        ("longer", 0, "https://s.example/a", None, "page_view"),
        ("longer", 10.001, "https://s.example/a", None, "scroll"),
        ("two", 0, "https://s.example/a", None, "page_view"),
        ("two", 1, "https://s.example/b", None, "page_view"),
        ("buyer", 0, "https://s.example/a", None, "Purchase"),
    ]
    table = sessions_of(events(rows), conversion_events="purchase,sign_up")
    engaged = dict(table.select("user_id", "is_engaged").iter_rows())
    assert engaged == {"short": False, "ten": False, "longer": True, "two": True, "buyer": True}
    assert (table["is_bounce"] == ~table["is_engaged"]).all()
    # Without --conversion-events a purchase alone is a bounce.
    assert sessions_of(events(rows[-1:]))["is_bounce"].to_list() == [True]


# --- opt-in session rules ----------------------------------------------------------------------------------


def test_max_session_length_cuts_long_activity_into_consecutive_sessions(events: EventsFactory) -> None:
    # Events every 20 minutes for 30 hours: one session by the timeout, cut after 24 h.
    rows = [("bot", i * 20 * MIN) for i in range(91)]
    assert sessions_of(events(rows)).height == 1
    table = sessions_of(events(rows), max_session_length="24h")
    assert table["session_start"].to_list() == [T0, at(hours=24, minutes=20)]
    assert table["event_count"].to_list() == [73, 18]
    longest = table["duration_s"].max()
    assert isinstance(longest, float) and longest <= 24 * HOUR


def test_max_session_length_edges(events: EventsFactory) -> None:
    # Exactly the limit stays; one microsecond more starts a new session, whose own limit counts from it.
    rows = [("u", T0), ("u", at(minutes=20)), ("u", at(minutes=40)), ("u", at(hours=1, microseconds=1))]
    limit = timedelta(hours=1)
    assert sessions_of(events(rows[:3]), max_session_length=limit).height == 1
    table = sessions_of(events(rows), max_session_length=limit)
    assert table["event_count"].to_list() == [3, 1]
    # Greedy from each new start, not fixed hour windows (which would give 3, 3, 2):
    # 0, 25, 50 | 61, 85, 110, 121 (exactly 60 after 61) | 122.
    greedy = [("u", m * MIN) for m in (0, 25, 50, 61, 85, 110, 121, 122)]
    table = sessions_of(events(greedy), max_session_length=limit)
    assert table["event_count"].to_list() == [3, 4, 1]
    # Client session ids are never cut.
    client = [("c", 0, None, None, None, "s1"), ("c", 20 * HOUR, None, None, None, "s1")]
    assert sessions_of(events(client), max_session_length=limit).height == 1


def test_split_at_midnight_in_the_time_zone(events: EventsFactory) -> None:
    # 23:50 and 00:10 UTC: one session normally, two when split at UTC midnight; in New York
    # (UTC-4 in May) both are on the same local day.
    late = T0.replace(hour=23, minute=50)
    rows = [("u", late), ("u", late + timedelta(minutes=20))]
    assert sessions_of(events(rows)).height == 1
    assert sessions_of(events(rows), split_at_midnight=True).height == 2
    assert sessions_of(events(rows), split_at_midnight=True, timezone="America/New_York").height == 1
    ny_midnight = T0.replace(hour=3, minute=50)  # 23:50 in New York
    rows = [("u", ny_midnight), ("u", ny_midnight + timedelta(minutes=20))]
    assert sessions_of(events(rows), split_at_midnight=True, timezone="America/New_York").height == 2


def test_split_on_campaign(events: EventsFactory) -> None:
    base = "https://s.example/"
    rows = [
        ("u", 0, base + "?utm_source=news&utm_campaign=a", None, "page_view"),
        ("u", 60, base + "page", None, "page_view"),  # no campaign: same session
        ("u", 120, base + "?utm_source=news&utm_campaign=a", None, "page_view"),  # same campaign
        ("u", 180, base + "?utm_source=news&utm_campaign=b", None, "page_view"),  # new campaign
        ("u", 240, base + "?gclid=xyz", None, "click"),  # not a page view
        ("u", 300, base + "?gclid=xyz", None, "page_view"),  # new campaign (paid click)
    ]
    assert sessions_of(events(rows)).height == 1
    table = sessions_of(events(rows), split_on_campaign=True)
    assert table["event_count"].to_list() == [3, 2, 1]
    assert table["utm_campaign"].to_list() == ["a", "b", None]
    assert table["gclid"].to_list() == [None, None, "xyz"]
    # A direct session that later sees a campaign is split too, as Universal Analytics did.
    direct_then_campaign = [
        ("v", 0, base, None, "page_view"),
        ("v", 60, base + "?utm_source=x", None, "page_view"),
    ]
    assert sessions_of(events(direct_then_campaign), split_on_campaign=True).height == 2


@pytest.mark.parametrize("click_id", ["gbraid", "wbraid"])
def test_split_on_campaign_splits_on_a_new_ios_click_id(events: EventsFactory, click_id: str) -> None:
    """gbraid and wbraid make Paid Search as gclid does, but the campaign key read only the UTM tags
    and gclid: a second ad click with a new gbraid stayed in the session, and a click after a direct
    landing did not start one (review of stop 37, item 6)."""
    base = "https://s.example/"
    rows = [
        ("u", 0, f"{base}a?{click_id}=A", None, "page_view"),
        ("u", 300, f"{base}b?{click_id}=B", None, "page_view"),  # a new click: a new session
        ("v", 0, f"{base}a", None, "page_view"),
        ("v", 300, f"{base}b?{click_id}=B", None, "page_view"),  # direct, then an ad click
    ]
    table = sessions_of(events(rows), split_on_campaign=True)
    assert table["user_id"].to_list() == ["u", "u", "v", "v"]
    assert table["channel"].to_list() == ["Paid Search", "Paid Search", "Direct", "Paid Search"]


def test_sessions_split_by_a_campaign_at_the_same_instant_get_unique_ids(events: EventsFactory) -> None:
    """A campaign change between two events at the same instant starts a session at the same time as
    the one before: the later session's id gets ``-2`` (then ``-3``, ...), the first keeps the plain id."""
    base = "https://s.example/"
    rows = [
        ("u", 0, base + "?utm_source=news&utm_campaign=a", None, "page_view"),
        ("u", 0, base + "?utm_source=news&utm_campaign=b", None, "page_view"),  # same instant, new campaign
        ("u", 0, base + "?utm_source=news&utm_campaign=c", None, "page_view"),  # and again
        ("u", 60, base + "?utm_source=news&utm_campaign=d", None, "page_view"),
        ("v", 0, base + "?utm_source=news&utm_campaign=a", None, "page_view"),
    ]
    table = sessions_of(events(rows), split_on_campaign=True)
    plain = "u-20240501T100000.000000"
    assert table["session_id"].to_list() == [
        plain,
        plain + "-2",
        plain + "-3",
        "u-20240501T100100.000000",
        "v-20240501T100000.000000",
    ]
    assert table["utm_campaign"].to_list() == ["a", "b", "c", "d", "a"]
    assert table["session_number"].to_list() == [1, 2, 3, 4, 1]
    # The labelled events carry the same ids.
    prepared = sessionize.prepare_events(
        events(rows).lazy(), columns=sessionize.resolve_columns(events(rows).columns)
    ).pipe(add_campaign_key)
    labelled = assign_sessions(prepared, campaign_col=CAMPAIGN).collect()
    assert labelled["session_id"].to_list() == [plain, plain + "-2", plain + "-3", *table["session_id"][3:]]


def test_bad_rule_values_are_usage_errors(events: EventsFactory) -> None:
    with pytest.raises(sessionize.UsageError, match="--max-session-length"):
        sessionize.sessionize(events([("u", 0)]), max_session_length="a day")
    with pytest.raises(sessionize.UsageError, match="--timezone"):
        sessionize.sessionize(events([("u", 0)]), split_at_midnight=True, timezone="Mars/Olympus")


# --- devices and bots --------------------------------------------------------------------------------------

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/142.0.0.0 Safari/537.36"
)
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.6 Mobile/15E148 Safari/604.1"
)
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


def test_device_columns_and_bots_per_session(events: EventsFactory) -> None:
    frame = events(
        [
            ("desk", 0, "https://s.example/"),
            ("desk", 1, "https://s.example/a"),  # the first event's user agent counts
            ("phone", 0, "https://s.example/"),
            ("crawler", 0, "https://s.example/"),
            ("sneaky", 0, "https://s.example/robots.txt"),
            ("sneaky", 5, "https://s.example/"),
            ("nobody", 0, "https://s.example/"),
        ],
    ).with_columns(user_agent=pl.Series([CHROME, IPHONE, IPHONE, GOOGLEBOT, CHROME, CHROME, None]))
    table = sessions_of(frame).sort("user_id")
    rows = {
        r["user_id"]: (r["device_category"], r["browser"], r["os"], r["is_bot"]) for r in table.to_dicts()
    }
    assert rows == {
        "crawler": ("bot", "Googlebot", None, True),
        "desk": ("desktop", "Chrome", "Windows", False),
        "nobody": (None, None, None, False),
        "phone": ("mobile", "Mobile Safari", "iOS", False),
        # A desktop browser, but it asked for /robots.txt: a crawler in disguise, a bot device (review 56 F8).
        "sneaky": ("bot", "Chrome", "Windows", True),
    }
    assert table.filter(pl.col("user_id") == "desk")["user_agent"].item() == CHROME
    kept = sessions_of(frame, exclude_bots=True)
    assert sorted(kept["user_id"]) == ["desk", "nobody", "phone"]


def test_a_null_time_keeps_its_event_in_the_session_for_every_count() -> None:
    """A gap to or from a null time is unknown: the event stays in its user's session, and the running
    counts of aggregates and heartbeats see the same sessions as the starts and ends do (review40: a
    sum over the events took one event too few, then raised a ShapeError)."""
    from sessionize import schema as S

    raw = pl.DataFrame(
        {
            "user_id": ["a", "a", "b", "b"],
            "timestamp": ["2024-05-01T10:00:00Z", "2024-05-01T10:01:00Z", "2024-05-01T10:00:00Z", None],
            "event": ["page_view", "page_ping", "page_view", "page_ping"],
            "url": ["https://x.example/"] * 4,
            "revenue": ["1", "2", "3", "4"],
        }
    )
    aggregates = [S.parse_aggregate("r=sum(revenue)")]
    events = sessionize.prepare_events(
        raw.lazy(), columns=sessionize.resolve_columns(raw.columns), aggregates=aggregates
    ).collect()
    events = events.with_columns(
        pl.when(pl.int_range(pl.len()) == 0).then(None).otherwise(pl.col(S.TIME)).alias(S.TIME)
    )
    table = (
        assign_sessions(events.lazy(), label=False)
        .pipe(
            sessionize.summarize_sessions,
            aggregates=aggregates,
            event_counts=[("pings", "page_ping")],
            engaged=S.EngagedTime(heartbeat_events=("page_ping",)),
        )
        .collect(engine="in-memory")
        .sort(S.USER)
    )
    assert table.get_column("event_count").to_list() == [2, 2]
    assert table.get_column("r").to_list() == [3.0, 7.0]
    assert table.get_column("pings").to_list() == [1, 1]


def test_the_two_summaries_agree_with_every_per_session_column_at_once() -> None:
    """The session-order summary (positions, running counts, threads, one parallel gather into the
    table's order) and the group_by summary of labelled events give the same table when counts,
    aggregates, conversions and heartbeats are all asked for together, on the sample data (client
    session ids and all)."""
    from sessionize import schema as S

    frame = pl.read_csv(SAMPLE_DATA / "events.csv", infer_schema=False).with_columns(
        pl.col("event_id").str.len_chars().cast(pl.String).alias("size")
    )
    aggregates = [
        S.parse_aggregate(text)
        for text in (
            "total=sum(size)",
            "biggest=max(size)",
            "pages=n_unique(url)",
            "carts=count(event=add_to_cart)",
            "exit=last(url)",
        )
    ]
    events = sessionize.prepare_events(
        frame.lazy(), columns=sessionize.resolve_columns(frame.columns), aggregates=aggregates
    )
    options: dict[str, Any] = {
        "aggregates": aggregates,
        "event_counts": [("clicks", "click"), ("scrolls", "scroll")],
        "conversion_events": ["purchase", "sign_up"],
        "engaged": S.EngagedTime(heartbeat_events=("scroll",), heartbeat_s=20.0, min_visit_s=3.0),
    }
    labelled = sessionize.summarize_sessions(assign_sessions(events, label=True), **options).collect()
    in_order = sessionize.summarize_sessions(assign_sessions(events, label=False), **options).collect()
    keys = ["user_id", "session_id"]
    assert labelled.columns == in_order.columns
    assert labelled.sort(keys).equals(in_order.sort(keys))
    assert in_order.height > 900
    for column in ("clicks", "scrolls", "total", "carts", "engaged_time_s"):
        assert in_order.get_column(column).sum() > 0, column
    assert in_order.get_column("is_engaged").any()
