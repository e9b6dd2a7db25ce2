"""Every figure of the report, computed in Polars from a session table: :func:`aggregate_sessions`.

Only these small aggregates (:class:`ReportData`) go on to the page, so its size and build time do not
grow with the number of sessions.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

import polars as pl

from sessionize import schema as S
from sessionize.errors import UsageError
from sessionize.report.columns import (
    RANKINGS,
    REPORT_COLUMNS,
    _check_columns,
    _conform,
    _RankingSpec,
)

#: Bars in each ranking chart (``--top``).
DEFAULT_TOP = 10
#: The most bars a ranking may have (``--top``): a page of charts, not a dump of every value.
MAX_TOP = 1_000
#: Sessions over time are counted per hour when the sessions span at most this many calendar days.
HOURLY_MAX_DAYS = 3
_DASH = "\N{EN DASH}"
NO_SESSIONS = "No sessions in this range."
#: Session duration buckets: label and lower bound in seconds (the first holds exactly 0 s: one event).
DURATION_BUCKETS: tuple[tuple[str, float], ...] = (
    ("0 s", 0.0),
    ("<10 s", 0.0),
    (f"10{_DASH}30 s", 10.0),
    (f"30{_DASH}60 s", 30.0),
    (f"1{_DASH}3 m", 60.0),
    (f"3{_DASH}10 m", 180.0),
    (f"10{_DASH}30 m", 600.0),
    (f"30{_DASH}60 m", 1800.0),
    ("1 h+", 3600.0),
)


@dataclass(frozen=True)
class Ranking:
    """Sessions per value of one column, most first (ties by value): the top values and the rest."""

    labels: tuple[str, ...]
    sessions: tuple[int, ...]
    #: Distinct values in all (the top ones and the rest).
    distinct: int
    #: Sessions that have a value (the others have none: no page view, not located, ...).
    known: int

    @property
    def other_values(self) -> int:
        return self.distinct - len(self.labels)

    @property
    def other_sessions(self) -> int:
        return self.known - sum(self.sessions)


TimelineUnit = Literal["hour", "day", "month", "year"]


@dataclass(frozen=True)
class Timeline:
    """Sessions per hour, day, month or year (every bucket from the first session's to the last one's;
    the unit that keeps the bars at most a few thousand: see :func:`_timeline_unit`)."""

    unit: TimelineUnit
    starts: tuple[datetime, ...]
    sessions: tuple[int, ...]
    #: First sessions of their users (``session_number == 1``); None without ``session_number``.
    new: tuple[int, ...] | None
    #: Later sessions (``session_number > 1``); None without ``session_number``. A session whose number
    #: is null is neither (``sessions - new - returning`` of them).
    returning: tuple[int, ...] | None


@dataclass(frozen=True)
class ReportData:
    """Every figure the report shows: small, whatever the number of sessions."""

    sessions: int
    users: int
    median_duration_s: float | None
    mean_duration_s: float | None
    #: Mean page views per session; None without ``pageview_count``.
    pages_per_session: float | None
    #: Share of bounced sessions (0..1); None without ``is_bounce``.
    bounce_rate: float | None
    first_start: datetime | None
    last_start: datetime | None
    #: Sessions with ``session_number == 1`` and ``> 1``; None without ``session_number``.
    new_sessions: int | None
    returning_sessions: int | None
    #: Sessions with ``is_bot``; None without that column.
    bot_sessions: int | None
    timeline: Timeline
    #: Sessions per bucket of :data:`DURATION_BUCKETS`, in that order.
    durations: tuple[tuple[str, int], ...]
    #: Rankings by key (``landing_page``, ``country``, ...), for those with data.
    rankings: dict[str, Ranking]
    #: Why a chart is left out, by key (a ranking key, or ``timeline``, ``durations``, ``new_vs_returning``).
    left_out: dict[str, str]
    #: The filters: sessions starting at or after ``date_from`` and before ``date_to``; bars per ranking.
    date_from: datetime | None = None
    date_to: datetime | None = None
    top: int = DEFAULT_TOP


def _date_filter(date_from: datetime | None, date_to: datetime | None) -> pl.Expr | None:
    start = pl.col("session_start")
    conditions = []
    if date_from is not None:
        conditions.append(start >= pl.lit(date_from, dtype=S.TIMESTAMP))
    if date_to is not None:
        conditions.append(start < pl.lit(date_to, dtype=S.TIMESTAMP))
    return pl.all_horizontal(conditions) if conditions else None


def _ranking_query(frame: pl.LazyFrame, spec: _RankingSpec, names: Sequence[str], top: int) -> pl.LazyFrame:
    """The ``top`` values of one ranking, each row with the ranking's distinct values and known sessions.

    Grouped by the raw columns and labelled after (``London, United Kingdom``), so that no string is
    built per session; one query per ranking, so nothing relies on the optimizer to share work.
    """
    keys = [c for c in spec.columns if c in names]
    label = pl.col(keys[0])
    if len(keys) == 2:
        label = pl.when(pl.col(keys[1]).is_null()).then(label).otherwise(pl.format("{}, {}", *keys))
    return (
        frame.group_by(keys)
        .agg(pl.len().alias("sessions"))
        .filter(pl.col(keys[0]).is_not_null())
        .with_columns(pl.len().alias("distinct"), pl.col("sessions").sum().alias("known"))
        .sort(["sessions", *keys], descending=[True, *(False for _ in keys)], nulls_last=True)
        .head(top)
        .select(label.cast(pl.String).alias("value"), "sessions", "distinct", "known")
    )


def _duration_bucket() -> pl.Expr:
    seconds = pl.col("duration_s")
    bucket: Any = pl.when(seconds <= 0).then(0)
    for index, (_, lower) in enumerate(DURATION_BUCKETS[2:], start=1):
        bucket = bucket.when(seconds < lower).then(index)
    result: pl.Expr = bucket.otherwise(len(DURATION_BUCKETS) - 1).alias("bucket")
    return result


#: The longest span drawn by day, and by month (longer: by year), so that one stray early or late
#: session_start (1970-01-01, 0001-01-01) does not make the page hundreds of thousands of bars.
DAILY_MAX_DAYS = 3 * 366
MONTHLY_MAX_DAYS = 100 * 366
_EVERY: dict[TimelineUnit, str] = {"hour": "1h", "day": "1d", "month": "1mo", "year": "1y"}


def _timeline_unit(first: datetime, last: datetime) -> TimelineUnit:
    days = (last.date() - first.date()).days + 1
    if days <= HOURLY_MAX_DAYS:
        return "hour"
    if days <= DAILY_MAX_DAYS:
        return "day"
    return "month" if days <= MONTHLY_MAX_DAYS else "year"


def _timeline(hourly: pl.DataFrame, *, has_new: bool) -> Timeline:
    # Sessions without a start are in the headline's counts, in no bar.
    hourly = hourly.filter(pl.col("start").is_not_null())
    if hourly.height == 0:
        return Timeline("hour", (), (), () if has_new else None, () if has_new else None)
    first, last = hourly.get_column("start").min(), hourly.get_column("start").max()
    assert isinstance(first, datetime) and isinstance(last, datetime)
    unit = _timeline_unit(first, last)
    every = _EVERY[unit]
    counts = hourly
    if unit != "hour":
        counts = hourly.group_by(pl.col("start").dt.truncate(every)).agg(
            pl.col("sessions", "new", "returning").sum()
        )
        first, last = (
            counts.get_column("start").min(),
            counts.get_column("start").max(),
        )
        assert isinstance(first, datetime) and isinstance(last, datetime)
    buckets = pl.DataFrame({"start": pl.datetime_range(first, last, every, eager=True)}).with_columns(
        pl.col("start").cast(counts.schema["start"])
    )
    filled = buckets.join(counts, on="start", how="left").fill_null(0).sort("start")
    return Timeline(
        unit,
        tuple(filled.get_column("start").to_list()),
        tuple(filled.get_column("sessions").to_list()),
        tuple(filled.get_column("new").to_list()) if has_new else None,
        tuple(filled.get_column("returning").to_list()) if has_new else None,
    )


def aggregate_sessions(
    sessions: pl.LazyFrame | pl.DataFrame,
    *,
    date_from: datetime | None = None,
    date_to: datetime | None = None,
    top: int = DEFAULT_TOP,
) -> ReportData:
    """Every figure of the report, computed in Polars from a session table.

    Keeps the sessions that start at or after ``date_from`` and before ``date_to`` (UTC instants);
    rankings keep the ``top`` values with the most sessions. Columns other than ``user_id``,
    ``session_start`` and ``duration_s`` are optional: the charts that need a missing (or all-null)
    column are listed in ``left_out`` with the reason. All queries run together in one
    :func:`polars.collect_all`, so the table is scanned once.

    Examples
    --------
    >>> import polars as pl
    >>> from datetime import datetime, UTC
    >>> table = pl.DataFrame({
    ...     "user_id": ["a", "a", "b"],
    ...     "session_number": [1, 2, 1],
    ...     "session_start": [datetime(2024, 5, 1, 10, tzinfo=UTC)] * 3,
    ...     "duration_s": [0.0, 60.0, 120.0],
    ... })
    >>> data = aggregate_sessions(table)
    >>> data.sessions, data.users, data.median_duration_s, data.new_sessions, data.returning_sessions
    (3, 2, 60.0, 2, 1)
    """
    if not 1 <= top <= MAX_TOP:
        raise UsageError(f"--top must be from 1 to {MAX_TOP:,}, got {top}.")
    frame = sessions.lazy()
    names = frame.collect_schema().names()
    _check_columns(names, "The session table")
    present = [c for c in REPORT_COLUMNS if c in names]
    frame = _conform(frame, present)
    condition = _date_filter(date_from, date_to)
    if condition is not None:
        frame = frame.filter(condition)

    has = set(present).__contains__
    headline = [
        pl.len().alias("sessions"),
        pl.col("user_id").drop_nulls().n_unique().alias("users"),
        pl.col("duration_s").median().alias("median_duration_s"),
        pl.col("duration_s").mean().alias("mean_duration_s"),
        pl.col("session_start").min().alias("first_start"),
        pl.col("session_start").max().alias("last_start"),
    ]
    if has("pageview_count"):
        headline.append(pl.col("pageview_count").mean().alias("pages_per_session"))
    if has("is_bounce"):
        headline.append(pl.col("is_bounce").mean().alias("bounce_rate"))
    if has("session_number"):
        headline.append((pl.col("session_number") == 1).sum().alias("new_sessions"))
        headline.append((pl.col("session_number") > 1).sum().alias("returning_sessions"))
    if has("is_bot"):
        headline.append(pl.col("is_bot").sum().alias("bot_sessions"))

    new = (pl.col("session_number") == 1) if has("session_number") else pl.lit(False)
    returning = (pl.col("session_number") > 1) if has("session_number") else pl.lit(False)
    queries: list[pl.LazyFrame] = [
        frame.select(headline),
        frame.group_by(pl.col("session_start").dt.truncate("1h").alias("start")).agg(
            pl.len().cast(pl.Int64).alias("sessions"),
            new.sum().cast(pl.Int64).alias("new"),
            returning.sum().cast(pl.Int64).alias("returning"),
        ),
        frame.filter(pl.col("duration_s").is_not_null()).group_by(_duration_bucket()).len(),
    ]
    ranked = [spec for spec in RANKINGS if has(spec.columns[0])]
    queries.extend(_ranking_query(frame, spec, present, top) for spec in ranked)
    results = pl.collect_all(queries)
    figures = results[0].row(0, named=True)

    total = int(figures["sessions"])
    # In the page's order.
    left_out: dict[str, str] = {}
    if total == 0:
        for key in ("timeline", "durations", "new_vs_returning"):
            left_out[key] = NO_SESSIONS
    elif figures["first_start"] is None:
        left_out["timeline"] = "No data: no session has a session_start."
    elif not has("session_number"):
        left_out["new_vs_returning"] = (
            "The table has no session_number column: the table was made with --drop-columns."
        )
    rankings: dict[str, Ranking] = {}
    for spec, top_rows in zip(ranked, results[3:], strict=True):
        if top_rows.height:
            rankings[spec.key] = Ranking(
                labels=tuple(top_rows.get_column("value").to_list()),
                sessions=tuple(int(v) for v in top_rows.get_column("sessions").to_list()),
                distinct=int(top_rows.item(0, "distinct")),
                known=int(top_rows.item(0, "known")),
            )
    for spec in RANKINGS:
        if spec.key in rankings:
            continue
        if total == 0:
            left_out[spec.key] = NO_SESSIONS
        elif not has(spec.columns[0]):
            left_out[spec.key] = f"The table has no {spec.columns[0]} column: {spec.absent_hint}."
        else:
            left_out[spec.key] = f"No data: {spec.empty_hint}."

    bucket_counts = dict(results[2].iter_rows())
    durations = tuple(
        (label, int(bucket_counts.get(index, 0))) for index, (label, _) in enumerate(DURATION_BUCKETS)
    )

    def number(key: str) -> float | None:
        value = figures.get(key)
        return None if value is None else float(value)

    def count(key: str) -> int | None:
        value = figures.get(key)
        return None if key not in figures else int(value or 0)

    return ReportData(
        sessions=total,
        users=int(figures["users"]),
        median_duration_s=number("median_duration_s"),
        mean_duration_s=number("mean_duration_s"),
        pages_per_session=number("pages_per_session"),
        bounce_rate=number("bounce_rate"),
        first_start=figures["first_start"],
        last_start=figures["last_start"],
        new_sessions=count("new_sessions"),
        returning_sessions=count("returning_sessions"),
        bot_sessions=count("bot_sessions"),
        timeline=_timeline(results[1], has_new=has("session_number")),
        durations=durations,
        rankings=rankings,
        left_out=left_out,
        date_from=date_from,
        date_to=date_to,
        top=top,
    )


def parse_date_bound(value: str | date | None, *, option: str, end: bool = False) -> datetime | None:
    """A ``--from``/``--to`` value as a UTC instant.

    A date means midnight UTC at its start, or for the end (``end=True``, exclusive) the midnight after
    it, so ``--to 2024-05-02`` includes the whole of that day. A timestamp is taken as is (UTC when it
    has no offset).

    >>> parse_date_bound("2024-05-02", option="--to", end=True)
    datetime.datetime(2024, 5, 3, 0, 0, tzinfo=datetime.timezone.utc)
    """
    if value is None:
        return None
    parsed: date | datetime
    if isinstance(value, str):
        text = value.strip()
        try:
            # A date alone, extended (2024-05-02) or basic (20240502): its whole day.
            is_date = re.fullmatch(r"[0-9]{4}-?[0-9]{2}-?[0-9]{2}", text) is not None
            parsed = date.fromisoformat(text) if is_date else datetime.fromisoformat(text)
        except ValueError:
            raise UsageError(
                f"{option} {value!r} is not a date or timestamp. "
                "Use ISO 8601: 2024-05-01 or 2024-05-01T10:00:00Z."
            ) from None
    else:
        parsed = value
    if isinstance(parsed, datetime):
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    start = datetime(parsed.year, parsed.month, parsed.day, tzinfo=UTC)
    return start + timedelta(days=1) if end else start
