"""``--count-events``: events of a name counted per session, in columns after the built-in ones."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

import sessionize
from sessionize.errors import UsageError
from tests.helpers import KEYS, run_cli, write_text

EVENTS = """user_id,timestamp,event,session_id,url
u1,2024-05-01T10:00:00Z,page_view,,https://a.example/
u1,2024-05-01T10:00:00Z,Add_To_Cart,,https://a.example/
u1,2024-05-01T10:01:00Z,add_to_cart,,https://a.example/p
u1,2024-05-01T10:02:00Z,,,https://a.example/p
u1,2024-05-01T10:03:00Z,Order Completed,,https://a.example/thanks
u1,2024-05-01T12:00:00Z,page_view,,https://a.example/
u2,2024-05-01T10:00:00Z,add_to_cart,app-1,
u2,2024-05-01T13:00:00Z,add_to_cart,app-1,
u2,2024-05-01T13:00:00Z,page_view,,https://a.example/
"""
#: By hand: u1's first session (10:00-10:03) has 2 add_to_cart (case ignored, one at the same instant as
#: the page view), 1 order, 1 page view and an event without a name; its second 1 page view. u2's client
#: session app-1 keeps both add_to_cart 3 hours apart; its page view without a client id is a session of
#: its own.
EXPECTED = [
    ("u1", "u1-20240501T100000.000000", 2, 1, 1),
    ("u1", "u1-20240501T120000.000000", 0, 0, 1),
    ("u2", "app-1", 2, 0, 0),
    ("u2", "u2-20240501T130000.000000", 0, 0, 1),
]
FLAGS = "add_to_cart,orders=Order Completed,page_view"


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return write_text(tmp_path / "events.csv", EVENTS)


def test_counts_by_hand_on_every_local_path(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "sessions.csv"
    result = run_cli(source, "-o", out, "--no-geo", "--count-events", FLAGS)
    assert result.exit_code == 0, result.output
    table = pl.read_csv(out)
    # Appended after today's columns, in the order given.
    assert table.columns == [
        *sessionize.schema.SESSION_SCHEMA,
        "add_to_cart_count",
        "orders",
        "page_view_count",
    ]
    rows = table.sort("user_id", "session_start").select(
        "user_id", "session_id", "add_to_cart_count", "orders", "page_view_count"
    )
    assert rows.rows() == EXPECTED
    assert table.get_column("page_view_count").to_list() == table.get_column("pageview_count").to_list()
    memory = sessionize.run([source], no_geo=True, count_events=FLAGS).sessions.sort(KEYS)
    assert memory.schema["orders"] == pl.UInt32
    buckets = tmp_path / "b.parquet"
    sessionize.run(
        [source], no_geo=True, count_events=FLAGS, buckets=3, temp_dir=str(tmp_path), output=str(buckets)
    )
    assert pl.read_parquet(buckets).sort(KEYS).equals(memory)
    frame = sessionize.sessionize(pl.read_csv(source), no_geo=True, count_events=FLAGS).collect()
    assert frame.sort(KEYS).equals(memory)
    # The labelled summary (the lazy path of sessionize.sessionize) and the in-order one agree: see
    # tests/test_equivalence.py for the other engines.


def test_a_count_column_can_be_dropped_and_the_config_file_takes_it(source: Path, tmp_path: Path) -> None:
    table = sessionize.run([source], no_geo=True, count_events=FLAGS, drop_columns="orders").sessions
    assert "orders" not in table.columns and "add_to_cart_count" in table.columns
    config = write_text(tmp_path / "s.toml", '[run]\ncount-events = "add_to_cart"\n')
    out = tmp_path / "s.csv"
    assert run_cli(source, "--config", config, "-o", out, "--no-geo").exit_code == 0
    assert pl.read_csv(out).columns[-1] == "add_to_cart_count"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("pageview", "built-in column"),  # pageview_count
        ("event_count=purchase", "built-in column"),
        # The user table's and the incremental output's own columns.
        ("events=purchase", "built-in column of the session or user table"),
        ("is_final=purchase", "built-in column"),
        ("session_date=purchase", "built-in column"),
        ("2x=purchase", "letters, digits"),
        ("purchase,purchase_count=buy", "twice"),
        ("orders=", "give an event name"),
        # A stop-56 review: these two were called built-in columns.
        ("_x=purchase", "starts with _, which names sessionize's own"),
        ("__", "no letter or digit to name its column after"),
    ],
)
def test_bad_names_are_usage_errors(source: Path, value: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        sessionize.run([source], no_geo=True, count_events=value)
    result = run_cli(source, "--no-geo", "--count-events", value, "-o", "x.csv")
    assert result.exit_code == 2 and "--count-events" in result.output


def test_the_two_summaries_of_the_core_agree(source: Path) -> None:
    """core.summarize_sessions counts the same from labelled events (group_by) and from the session order."""
    from sessionize import core
    from sessionize.normalize import prepare_events
    from sessionize.schema import resolve_columns

    frame = pl.read_csv(source).lazy()
    events = prepare_events(frame, columns=resolve_columns(frame.collect_schema().names()))
    counts = [("carts", "ADD_TO_CART"), ("orders", "order completed")]
    labelled = core.summarize_sessions(core.assign_sessions(events, label=True), event_counts=counts)
    in_order = core.summarize_sessions(core.assign_sessions(events, label=False), event_counts=counts)
    columns = ["user_id", "session_id", "carts", "orders"]
    assert labelled.collect().select(columns).rows() == in_order.collect().select(columns).rows()
    assert labelled.collect().get_column("carts").to_list() == [2, 0, 2, 0]


def test_an_aggregate_named_with_a_leading_underscore_is_told_why(source: Path) -> None:
    # A stop-56 review: '--agg _x=count(*)' was refused as "a built-in column".
    with pytest.raises(UsageError, match="'_x' starts with _, which names sessionize's own"):
        sessionize.run([source], no_geo=True, aggregates="_x=count(*)")
    with pytest.raises(UsageError, match="'duration_s' is a built-in column"):
        sessionize.run([source], no_geo=True, aggregates="duration_s=count(*)")


def test_a_bare_name_drops_its_leading_underscore_as_its_other_separators(source: Path) -> None:
    table = sessionize.run([source], no_geo=True, count_events="_purchase").sessions
    assert table.columns[-1] == "purchase_count"
