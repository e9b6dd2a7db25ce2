"""Hypothesis checks of the session rule's invariants on random event streams."""

from __future__ import annotations

import itertools
import tempfile
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sessionize
from sessionize.core import assign_sessions
from tests.helpers import T0

# Property tests: hundreds of generated inputs each.
pytestmark = pytest.mark.slow

USERS = st.sampled_from(["a", "b", "00c", "10"])
# Offsets in seconds, dense around the 30-minute timeout so exact-timeout gaps happen often.
OFFSETS = st.one_of(
    st.integers(0, 4 * 3600),
    st.sampled_from([0, 1799, 1800, 1801, 3600, 3601]),
)
TIMEOUTS = st.sampled_from([timedelta(minutes=30), timedelta(seconds=90), timedelta(hours=1)])

event_rows = st.lists(st.tuples(USERS, OFFSETS), min_size=1, max_size=60)


def frame_of(rows: list[tuple[str, int]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user_id": [u for u, _ in rows],
            "timestamp": [T0 + timedelta(seconds=s) for _, s in rows],
            "url": [f"https://s.example/{i}" for i in range(len(rows))],
        },
        schema={"user_id": pl.String, "timestamp": pl.Datetime("us", "UTC"), "url": pl.String},
    )


def labelled(rows: list[tuple[str, int]], timeout: timedelta) -> pl.DataFrame:
    prepared = sessionize.prepare_events(
        frame_of(rows).lazy(), columns=sessionize.resolve_columns(["user_id", "timestamp", "url"])
    )
    return assign_sessions(prepared, timeout=timeout).collect()


@given(event_rows, TIMEOUTS)
def test_every_event_is_in_exactly_one_session(rows: list[tuple[str, int]], timeout: timedelta) -> None:
    events = labelled(rows, timeout)
    assert events.height == len(rows)
    assert events["session_id"].null_count() == 0
    table = sessionize.sessionize(frame_of(rows), timeout=timeout).collect()
    assert table["event_count"].sum() == len(rows)
    assert table["session_id"].is_unique().all()
    # Each session belongs to one user.
    assert events.group_by("session_id").agg(pl.col("user_id").n_unique())["user_id"].max() == 1


@given(event_rows, TIMEOUTS)
def test_gaps_inside_sessions_are_at_most_the_timeout(
    rows: list[tuple[str, int]], timeout: timedelta
) -> None:
    events = labelled(rows, timeout).sort("user_id", "timestamp")
    gaps = events.with_columns(
        gap=pl.col("timestamp").diff().over("user_id"),
        same=pl.col("session_id") == pl.col("session_id").shift(1).over("user_id"),
    ).filter(pl.col("gap").is_not_null())
    assert (gaps.filter(pl.col("same"))["gap"] <= timeout).all()
    assert (gaps.filter(~pl.col("same"))["gap"] > timeout).all()


@given(event_rows, TIMEOUTS)
def test_consecutive_sessions_of_a_user_are_more_than_the_timeout_apart(
    rows: list[tuple[str, int]], timeout: timedelta
) -> None:
    table = sessionize.sessionize(frame_of(rows), timeout=timeout).collect()
    between = table.with_columns(
        gap=pl.col("session_start") - pl.col("session_end").shift(1).over("user_id"),
        previous_number=pl.col("session_number").shift(1).over("user_id"),
    ).filter(pl.col("gap").is_not_null())
    assert (between["gap"] > timeout).all()
    assert (between["session_number"] == between["previous_number"] + 1).all()


distinct_instant_rows = st.lists(st.tuples(USERS, OFFSETS), min_size=1, max_size=60, unique=True)


@given(distinct_instant_rows, st.integers(0, 2**32 - 1))
def test_result_does_not_depend_on_row_order(rows: list[tuple[str, int]], seed: int) -> None:
    first = frame_of(rows)
    second = first.sample(fraction=1.0, shuffle=True, seed=seed)
    assert sessionize.sessionize(first).collect().equals(sessionize.sessionize(second).collect())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(distinct_instant_rows, st.lists(st.integers(0, 60), max_size=4))
def test_result_does_not_depend_on_how_rows_are_split_across_files(
    rows: list[tuple[str, int]], cuts: list[int]
) -> None:
    frame = frame_of(rows).sample(fraction=1.0, shuffle=True, seed=7)
    bounds = sorted({0, len(rows), *(c for c in cuts if c < len(rows))})
    with tempfile.TemporaryDirectory() as tmp:
        whole = Path(tmp, "whole.csv")
        frame.write_csv(whole)
        parts_dir = Path(tmp, "parts")
        parts_dir.mkdir()
        for i, (lo, hi) in enumerate(itertools.pairwise(bounds)):
            frame.slice(lo, hi - lo).write_csv(parts_dir / f"part-{i:02d}.csv")
        one = sessionize.run([whole]).sessions
        split = sessionize.run([parts_dir]).sessions
    assert one.equals(split)


_US_1000 = -30_610_224_000_000_000  # 1000-01-01T00:00:00Z
_US_9999 = 253_402_300_799_999_999  # 9999-12-31T23:59:59.999999Z
_DAY = 86_400_000_000


@given(
    base=st.one_of(
        st.integers(_US_1000 - 400 * _DAY, _US_9999 + 400 * _DAY),
        st.sampled_from([0, -1, _US_1000, _US_9999, 951_782_400_000_000]),  # 2000-02-29
    ),
    offsets=st.lists(
        st.one_of(st.integers(-3 * _DAY, 3 * _DAY), st.sampled_from([0, 1, -1, _DAY, _DAY - 1])),
        min_size=1,
        max_size=40,
    ),
    time_zone=st.sampled_from([None, "UTC"]),
)
@settings(max_examples=300, deadline=None)
def test_session_id_starts_are_strftime_texts(base: int, offsets: list[int], time_zone: str | None) -> None:
    """The generated ids' start texts (built from tables of days and seconds) equal chrono's strftime
    for every time, before 1970, around leap days and the years 1000 and 9999 (where it falls back)."""
    from sessionize.core import _SESSION_ID_TIME_FORMAT, _format_starts

    ticks = [min(max(base + offset, -(2**62)), 2**62) for offset in offsets]
    starts = pl.Series("start", ticks, dtype=pl.Int64).cast(pl.Datetime("us", time_zone))
    texts = _format_starts(starts)
    assert texts.dtype == pl.String
    assert texts.to_list() == starts.dt.strftime(_SESSION_ID_TIME_FORMAT).to_list()


@pytest.mark.parametrize(
    "starts",
    [
        pl.Series([0, 1_000], dtype=pl.Int64).cast(pl.Datetime("ns", "UTC")),
        pl.Series([0, 1_000], dtype=pl.Int64).cast(pl.Datetime("ms")),
        pl.Series([0, 3_600_000_000], dtype=pl.Int64).cast(pl.Datetime("us", "Europe/Berlin")),
        pl.Series([0, None, 5], dtype=pl.Int64).cast(pl.Datetime("us", "UTC")),
        # Days apart by more than there are values: strftime, not a table of every day between.
        pl.Series([_US_1000, _US_9999], dtype=pl.Int64).cast(pl.Datetime("us", "UTC")),
        pl.Series([], dtype=pl.Datetime("us", "UTC")),
    ],
    ids=["ns", "ms", "berlin", "null", "wide", "empty"],
)
def test_session_id_starts_of_other_times(starts: pl.Series) -> None:
    from sessionize.core import _SESSION_ID_TIME_FORMAT, _format_starts

    assert _format_starts(starts).to_list() == starts.dt.strftime(_SESSION_ID_TIME_FORMAT).to_list()


def test_session_id_starts_in_several_blocks() -> None:
    """More starts than one block of the numpy path: the blocks are joined in order."""
    from sessionize.core import _SESSION_ID_TIME_FORMAT, _TEXT_BLOCK, _format_starts

    n = 2 * _TEXT_BLOCK + 7
    ticks = pl.int_range(n, eager=True, dtype=pl.Int64) * 123_456_789 - 10 * _DAY
    starts = ticks.cast(pl.Datetime("us", "UTC")).shuffle(seed=1)
    texts = _format_starts(starts)
    assert texts.n_chunks() == 3
    assert texts.equals(starts.dt.strftime(_SESSION_ID_TIME_FORMAT))
