"""The page-view and user tables (issue 20 items 3 and 4): hand-checked values and invariants."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import timedelta

import polars as pl
import pytest

import sessionize
from tests.helpers import T0

GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"


def frame(rows: Sequence[tuple[str, float, str, str | None, str]]) -> pl.DataFrame:
    """Events of (user_id, seconds after T0, url, referrer, event)."""
    return pl.DataFrame(
        {
            "user_id": [r[0] for r in rows],
            "timestamp": [T0 + timedelta(seconds=r[1]) for r in rows],
            "url": [r[2] for r in rows],
            "referrer": [r[3] for r in rows],
            "event": [r[4] for r in rows],
        },
        schema_overrides={"timestamp": pl.Datetime("us", "UTC")},
    )


def test_page_views_by_hand() -> None:
    """The rule: page views are numbered 1, 2, ... in event order within their session (events at one
    instant keep their input order); time_on_page_s is the time to the session's next page view (a
    non-page-view event in between does not count), null for the session's last page view."""
    rows = [
        (
            "a",
            0,
            "https://s.example/1?utm_source=news&utm_campaign=spring",
            "https://www.google.com/",
            "page_view",
        ),
        ("a", 12.5, "https://s.example/1#cart", None, "add_to_cart"),
        ("a", 30, "https://s.example/2", None, "page_view"),
        ("a", 30, "https://s.example/3", None, "page_view"),  # same instant: input order
        ("a", 95, "https://s.example/4", "https://s.example/3", "page_view"),
        ("b", 10, "https://s.example/x", None, "page_view"),
        ("a", 4000, "https://s.example/5", None, "page_view"),  # a new session (gap > 30 min)
        ("a", 4010, "https://s.example/5#click", None, "click"),
    ]
    tables = sessionize.sessionize_tables(frame(rows), no_geo=True)
    got = tables.pageviews.select(
        "user_id", "page_view_in_session", "page_url", "time_on_page_s", "is_landing", "is_exit"
    ).rows()
    assert got == [
        ("a", 1, "https://s.example/1?utm_source=news&utm_campaign=spring", 30.0, True, False),
        ("a", 2, "https://s.example/2", 0.0, False, False),
        ("a", 3, "https://s.example/3", 65.0, False, False),
        ("a", 4, "https://s.example/4", None, False, True),
        ("a", 1, "https://s.example/5", None, True, True),
        ("b", 1, "https://s.example/x", None, True, True),
    ]
    pv = tables.pageviews
    assert pv.get_column("page_referrer").to_list()[:5] == [
        "https://www.google.com/",
        None,
        None,
        "https://s.example/3",
        None,
    ]
    sessions = tables.sessions
    # every page view carries its session's id, channel and source
    joined = pv.join(sessions, on="session_id", suffix="_s")
    assert joined.height == pv.height
    assert joined.get_column("channel").equals(joined.get_column("channel_s"))
    assert joined.get_column("traffic_source").equals(joined.get_column("traffic_source_s"))
    assert pv.get_column("traffic_source").to_list()[0] == "google"
    assert pv.columns == [
        "session_id", "user_id", "page_view_in_session", "page_url", "page_referrer", "timestamp",
        "time_on_page_s", "is_landing", "is_exit", "channel", "traffic_source", "source_name",
    ]  # fmt: skip


def test_users_by_hand() -> None:
    rows = [
        (
            "a",
            0,
            "https://s.example/1?utm_source=news&utm_medium=email&utm_campaign=spring",
            None,
            "page_view",
        ),
        ("a", 30, "https://s.example/2", None, "page_view"),
        ("a", 40, "https://s.example/2", None, "click"),
        (
            "a",
            4000,
            "https://s.example/5?utm_source=ads&utm_medium=cpc&utm_campaign=summer",
            None,
            "page_view",
        ),
        ("b", 10, "https://s.example/x", "https://www.bing.com/", "page_view"),
    ]
    users = sessionize.sessionize_tables(frame(rows), no_geo=True).users
    a, b = users.to_dicts()
    assert (a["user_id"], a["sessions"], a["events"], a["page_views"]) == ("a", 2, 4, 3)
    assert (a["first_seen"], a["last_seen"]) == (T0, T0 + timedelta(seconds=4000))
    assert (a["first_utm_campaign"], a["last_utm_campaign"]) == ("spring", "summer")
    assert (a["first_channel"], a["last_channel"]) == ("Email", "Paid Other")
    assert a["first_landing_page"].endswith("/1?utm_source=news&utm_medium=email&utm_campaign=spring")
    assert (b["user_id"], b["sessions"], b["first_source_name"], b["last_channel"]) == (
        "b", 1, "Bing", "Organic Search"
    )  # fmt: skip


def random_events(seed: int, n: int = 3000) -> pl.DataFrame:
    """Events of 60 users over a day: page views and other events, gaps short and long, ties."""
    rng = random.Random(seed)
    pages = [f"https://s.example/p{i}" for i in range(8)]
    refs = [None, "https://www.google.com/", "https://t.co/x", "https://s.example/p1"]
    rows = []
    for _ in range(n):
        second = float(rng.choice([rng.randrange(0, 86400), rng.randrange(0, 600)]))
        rows.append(
            (
                f"u{rng.randrange(60)}",
                second,
                rng.choice(pages),
                rng.choice(refs),
                rng.choice(["page_view", "page_view", "click"]),
            )
        )
    return frame(rows)


@pytest.mark.parametrize("seed", [1, 2])
def test_invariants(seed: int) -> None:
    """Page views summed per session == pageview_count; users' sessions == session rows per user;
    first- and last-touch fields == the first and last session's."""
    tables = sessionize.sessionize_tables(random_events(seed), no_geo=True, max_session_length="2h")
    sessions, pv, users = tables.sessions, tables.pageviews, tables.users
    per_session = pv.group_by("session_id").agg(pl.len().alias("n"), pl.col("page_view_in_session").max())
    check = sessions.join(per_session, on="session_id", how="left").with_columns(pl.col("n").fill_null(0))
    assert (check.get_column("n") == check.get_column("pageview_count")).all()
    assert (check.get_column("page_view_in_session").fill_null(0) == check.get_column("n")).all()
    assert pv.get_column("is_landing").sum() == pv.get_column("is_exit").sum() == per_session.height
    counted = sessions.group_by("user_id").agg(pl.len().cast(pl.UInt32).alias("n"))
    assert users.join(counted, on="user_id").select((pl.col("sessions") == pl.col("n")).all()).item()
    assert users.height == counted.height
    first = sessions.sort("session_number").group_by("user_id").first()
    last = sessions.sort("session_number").group_by("user_id").last()
    for column in ("landing_page", "source_name", "medium", "channel", "utm_campaign"):
        both = users.join(first, on="user_id").join(last, on="user_id", suffix="_last")
        assert both.get_column(f"first_{column}").equals(both.get_column(column), check_names=False)
        assert both.get_column(f"last_{column}").equals(both.get_column(f"{column}_last"), check_names=False)
    assert users.get_column("page_views").sum() == pv.height == sessions.get_column("pageview_count").sum()


def test_privacy_flags_apply_to_the_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_FOR_TEST", "k" * 32)
    events = frame(
        [
            ("alice@example.com", 0, "https://s.example/1", None, "page_view"),
            ("alice@example.com", 20, "https://s.example/2", None, "page_view"),
            ("crawler", 0, "https://s.example/1", None, "page_view"),
            ("crawler", 5, "https://s.example/2", None, "page_view"),
        ]
    ).with_columns(user_agent=pl.Series([FIREFOX, FIREFOX, GOOGLEBOT, GOOGLEBOT]))
    tables = sessionize.sessionize_tables(
        events,
        no_geo=True,
        hash_user_ids="SECRET_FOR_TEST",
        exclude_bots=True,
        drop_columns="referrer,utm_campaign",
    )
    hashed = tables.sessions.get_column("user_id").to_list()
    assert len(hashed) == 1 and "alice" not in hashed[0]
    for table in (tables.pageviews, tables.users):
        text = table.write_csv()
        assert "alice" not in text and "crawler" not in text  # hashed ids only, bots left out
        assert set(table.get_column("user_id")) == set(hashed)
    assert tables.pageviews.height == 2
    assert "page_referrer" not in tables.pageviews.columns
    assert not {"first_utm_campaign", "last_utm_campaign"} & set(tables.users.columns)
    assert "first_landing_page" in tables.users.columns
