"""The session insights report: one self-contained HTML page of charts from session tables.

Three steps, each usable alone:

- :func:`aggregate_sessions` computes every figure of the page from a session table in Polars (a pure
  function of a LazyFrame); only these small aggregates go on, so the page's size and build time do not
  grow with the number of sessions.
- :func:`render_report` turns the aggregates into HTML, with Plotly charts and plotly.js inlined once:
  no CDN, no network, the page opens from disk and can be mailed.
- :func:`make_report` reads session tables (what ``sessionize report`` does) and :func:`write_report`
  writes the page for a table in memory (what ``sessionize run --report`` does), atomically.
"""

from __future__ import annotations

import glob
import html
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import polars as pl

from sessionize import __version__
from sessionize import schema as S
from sessionize.errors import (
    NoInputFilesError,
    NotASessionTableError,
    OutputError,
    UnknownFormatError,
    UnreadableInputError,
    UsageError,
)
from sessionize.io import OUTPUT_EXTENSIONS, write_atomically

#: Bars in each ranking chart (``--top``).
DEFAULT_TOP = 10
DEFAULT_OUTPUT = "report.html"
STDOUT = "-"
DEFAULT_TITLE = "Session insights"
#: Columns a session table must have for a report; every other column is optional.
REQUIRED_COLUMNS: tuple[str, ...] = ("user_id", "session_start", "duration_s")
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

# A session table is read in any format that sessionize run writes.
_FORMATS = OUTPUT_EXTENSIONS
_SUPPORTED = ".parquet, .csv, .ndjson (what sessionize run writes)"


@dataclass(frozen=True)
class _RankingSpec:
    key: str
    title: str
    #: Name of the thing counted, plural ("landing pages").
    noun: str
    #: The columns it needs (the first one is the one shown).
    columns: tuple[str, ...]
    #: Why a column can be absent, and why it can be empty in every session.
    absent_hint: str
    empty_hint: str
    is_url: bool = False


_GEO_ABSENT = "the table was made with --no-geo or --drop-columns, or by an older sessionize"
_GEO_EMPTY = (
    "no session was located by its IP (the table was made with --no-geo or without a GeoIP database, "
    "or its addresses are private or missing)"
)
_UA_ABSENT = "the table was made with --drop-columns or by an older sessionize"
_UA_EMPTY = "no session has a user agent"

RANKINGS: tuple[_RankingSpec, ...] = (
    _RankingSpec(
        "landing_page",
        "Top landing pages",
        "landing pages",
        ("landing_page",),
        "the table was made with --drop-columns",
        "no session has a page view",
        is_url=True,
    ),
    _RankingSpec(
        "exit_page",
        "Top exit pages",
        "exit pages",
        ("exit_page",),
        "the table was made with --drop-columns",
        "no session has a page view",
        is_url=True,
    ),
    _RankingSpec(
        "traffic_source",
        "Traffic sources",
        "sources",
        ("traffic_source",),
        "the table was made with --drop-columns or by an older sessionize",
        "no session has a traffic source",
    ),
    _RankingSpec(
        "channel",
        "Channels",
        "channels",
        ("channel",),
        "the table was made with --drop-columns or by an older sessionize",
        "no session has a channel",
    ),
    _RankingSpec("country", "Countries", "countries", ("country",), _GEO_ABSENT, _GEO_EMPTY),
    _RankingSpec("city", "Cities", "cities", ("city", "country"), _GEO_ABSENT, _GEO_EMPTY),
    _RankingSpec("device_category", "Devices", "device types", ("device_category",), _UA_ABSENT, _UA_EMPTY),
    _RankingSpec("browser", "Browsers", "browsers", ("browser",), _UA_ABSENT, _UA_EMPTY),
    _RankingSpec("os", "Operating systems", "systems", ("os",), _UA_ABSENT, _UA_EMPTY),
)
_RANKING_BY_KEY = {spec.key: spec for spec in RANKINGS}

#: Every column the report reads (others are never loaded).
REPORT_COLUMNS: tuple[str, ...] = (
    *REQUIRED_COLUMNS,
    "session_number",
    "pageview_count",
    "is_bounce",
    "is_bot",
    *dict.fromkeys(c for spec in RANKINGS for c in spec.columns),
)


# --------------------------------------------------------------------------------------------------
# Aggregates


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


@dataclass(frozen=True)
class Timeline:
    """Sessions per hour or per day (every bucket from the first session's to the last one's)."""

    unit: Literal["hour", "day"]
    starts: tuple[datetime, ...]
    sessions: tuple[int, ...]
    #: First sessions of their users (``session_number == 1``); None without ``session_number``.
    new: tuple[int, ...] | None


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


def _conform(frame: pl.LazyFrame, names: Sequence[str]) -> pl.LazyFrame:
    """The report's columns in the session table's types; times as UTC instants."""
    schema = frame.collect_schema()
    exprs: list[pl.Expr] = []
    for name in names:
        if name not in schema:
            continue
        actual, wanted = schema[name], S.SESSION_SCHEMA[name]
        column = pl.col(name)
        if isinstance(wanted, pl.Datetime):
            if actual == pl.String:
                column = column.str.to_datetime(time_unit="us", time_zone="UTC")
            elif isinstance(actual, pl.Datetime):
                column = (
                    column.dt.replace_time_zone("UTC")
                    if actual.time_zone is None
                    else column.dt.convert_time_zone("UTC")
                )
                column = column.dt.cast_time_unit("us")
            else:
                column = column.cast(wanted)
        elif actual != wanted:
            column = column.cast(wanted)
        exprs.append(column.alias(name))
    return frame.select(exprs)


def _check_columns(names: Sequence[str], source: str) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        listing = ", ".join(names) if names else "(none)"
        raise NotASessionTableError(
            f"{source} is not a session table: it has no {', '.join(missing)} column"
            f"{'s' if len(missing) > 1 else ''}. Its columns are: {listing}. Make a session table with "
            "`sessionize run EVENTS -o sessions.parquet`, or write the report in the same run with "
            "`sessionize run EVENTS --report report.html`."
        )


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


def _timeline(hourly: pl.DataFrame, *, has_new: bool) -> Timeline:
    if hourly.height == 0:
        return Timeline("hour", (), (), () if has_new else None)
    first, last = hourly.get_column("start").min(), hourly.get_column("start").max()
    assert isinstance(first, datetime) and isinstance(last, datetime)
    days = (last.date() - first.date()).days + 1
    unit: Literal["hour", "day"] = "hour" if days <= HOURLY_MAX_DAYS else "day"
    counts = hourly
    if unit == "day":
        counts = hourly.group_by(pl.col("start").dt.truncate("1d")).agg(pl.col("sessions", "new").sum())
        first = first.replace(hour=0)
        last = last.replace(hour=0)
    buckets = pl.DataFrame(
        {"start": pl.datetime_range(first, last, "1h" if unit == "hour" else "1d", eager=True)}
    ).with_columns(pl.col("start").cast(counts.schema["start"]))
    filled = buckets.join(counts, on="start", how="left").fill_null(0).sort("start")
    return Timeline(
        unit,
        tuple(filled.get_column("start").to_list()),
        tuple(filled.get_column("sessions").to_list()),
        tuple(filled.get_column("new").to_list()) if has_new else None,
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
    if top < 1:
        raise UsageError(f"--top must be at least 1, got {top}.")
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
    queries: list[pl.LazyFrame] = [
        frame.select(headline),
        frame.group_by(pl.col("session_start").dt.truncate("1h").alias("start")).agg(
            pl.len().cast(pl.Int64).alias("sessions"), new.sum().cast(pl.Int64).alias("new")
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
            parsed = date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(text)
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


# --------------------------------------------------------------------------------------------------
# Reading session tables


def resolve_session_tables(inputs: Sequence[str | Path]) -> list[str]:
    """Session table files from files, directories (recursively) and glob patterns, in a stable order."""
    if not inputs:
        raise UsageError("No session table given. Pass one or more .parquet, .csv or .ndjson files.")
    found: list[str] = []

    def supported(path: str) -> bool:
        return os.path.splitext(path.lower())[1] in _FORMATS

    for raw in inputs:
        path = str(raw)
        if os.path.isdir(path):
            names = sorted(glob.glob(os.path.join(glob.escape(path), "**", "*"), recursive=True))
            matches = [
                n for n in names if os.path.isfile(n) and supported(n) and os.path.basename(n)[0] != "."
            ]
            if not matches:
                raise NoInputFilesError(f"The directory {path} holds no session tables ({_SUPPORTED}).")
        elif os.path.isfile(path):
            if not supported(path):
                raise UnknownFormatError(
                    f"Cannot tell the format of {path} from its extension. Session tables are {_SUPPORTED}."
                )
            matches = [path]
        elif glob.has_magic(path):
            matches = sorted(m for m in glob.glob(path, recursive=True) if os.path.isfile(m) and supported(m))
            if not matches:
                raise NoInputFilesError(f"The pattern {path} matches no session tables ({_SUPPORTED}).")
        else:
            raise UnreadableInputError(f"{path}: no such file or directory.")
        for match in matches:
            if match not in found:
                found.append(match)
    return found


def _scan_table(path: str) -> pl.LazyFrame:
    fmt = _FORMATS[os.path.splitext(path.lower())[1]]
    try:
        if fmt == "parquet":
            frame = pl.scan_parquet(path)
            names = frame.collect_schema().names()
        elif fmt == "csv":
            if os.path.getsize(path) == 0:
                raise NotASessionTableError(f"{path} is empty: not a session table.")
            names = pl.scan_csv(path, infer_schema=False).collect_schema().names()
            # Only the report's columns are typed: the others are never read.
            types = {c: S.SESSION_SCHEMA[c] for c in names if c in REPORT_COLUMNS}
            frame = pl.scan_csv(path, infer_schema=False, schema_overrides=types)
        else:
            if os.path.getsize(path) == 0:
                raise NotASessionTableError(f"{path} is empty: not a session table.")
            frame = pl.scan_ndjson(path, infer_schema_length=None)
            names = frame.collect_schema().names()
    except (pl.exceptions.PolarsError, OSError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnreadableInputError(
            f"{path}: cannot be read as {fmt.upper() if fmt != 'parquet' else 'Parquet'} ({detail}). "
            "Check that the file is complete."
        ) from exc
    _check_columns(names, path)
    return _conform(frame, [c for c in REPORT_COLUMNS if c in names])


def read_session_tables(inputs: Sequence[str | Path]) -> pl.LazyFrame:
    """One lazy frame of the report's columns from session tables (Parquet, CSV or NDJSON).

    ``inputs`` are files, directories (every table inside, recursively) or glob patterns. Tables may
    differ in their columns (a column missing from some is null there). Raises
    :class:`~sessionize.errors.NotASessionTableError` for a file without ``user_id``, ``session_start``
    or ``duration_s``.
    """
    return _read_tables(resolve_session_tables(inputs))


def _read_tables(files: Sequence[str]) -> pl.LazyFrame:
    frames = [_scan_table(path) for path in files]
    return frames[0] if len(frames) == 1 else pl.concat(frames, how="diagonal_relaxed")


# --------------------------------------------------------------------------------------------------
# Rendering

_BLUE = "#3867d6"
_ORANGE = "#f39c4a"
_PALETTE = ["#3867d6", "#f39c4a", "#20bf6b", "#8854d0", "#eb3b5a", "#0fb9b1", "#f7b731", "#778ca3"]
_FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"
# No mode bar: it would cover the bars of small charts; drag still zooms and a double click resets.
_PLOTLY_CONFIG = {"displaylogo": False, "responsive": True, "displayModeBar": False}
_URL_LABEL_LENGTH = 48


def format_duration(seconds: float | None) -> str:
    """``5m 25s``, ``1h 02m 03s``, ``4.2s``; a dash for None."""
    if seconds is None:
        return _DASH
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    return f"{minutes}m {secs:02d}s" if minutes else f"{seconds:.1f}s"


def _percent(part: float, whole: float) -> str:
    return _DASH if not whole else f"{100 * part / whole:.1f}%"


def _url_label(url: str) -> str:
    """A URL without its scheme, shortened in the middle to fit beside a bar."""
    text = url.split("://", 1)[1] if "://" in url else url
    if len(text) <= _URL_LABEL_LENGTH:
        return text
    keep = _URL_LABEL_LENGTH - 1
    return text[: keep * 2 // 3] + "…" + text[-(keep - keep * 2 // 3) :]


def _plain_label(label: str) -> str:
    return label if len(label) <= _URL_LABEL_LENGTH else label[: _URL_LABEL_LENGTH - 1] + "…"


def _layout(height: int, **extra: Any) -> dict[str, Any]:
    layout: dict[str, Any] = {
        "height": height,
        "margin": {"l": 8, "r": 16, "t": 8, "b": 8},
        "font": {"family": _FONT, "size": 12, "color": "#2d3436"},
        "paper_bgcolor": "white",
        "plot_bgcolor": "white",
        "colorway": _PALETTE,
        "separators": ".,",
        "hoverlabel": {"font": {"family": _FONT}},
        "showlegend": False,
    }
    layout.update(extra)
    return layout


def _axis(**extra: Any) -> dict[str, Any]:
    axis: dict[str, Any] = {"gridcolor": "#eceff4", "zeroline": False, "automargin": True}
    axis.update(extra)
    return axis


def _timeline_figure(data: ReportData) -> dict[str, Any]:
    timeline = data.timeline
    hover = "%{x|%a %d %b %Y %H:00}" if timeline.unit == "hour" else "%{x|%a %d %b %Y}"
    width = 3600_000 if timeline.unit == "hour" else 86400_000
    starts = [start.isoformat() for start in timeline.starts]
    traces: list[dict[str, Any]]
    if timeline.new is None:
        traces = [
            {
                "type": "bar",
                "x": starts,
                "y": list(timeline.sessions),
                "name": "Sessions",
                "marker": {"color": _BLUE},
                "width": [width * 0.85] * len(starts),
                "hovertemplate": hover + "<br>%{y:,} sessions<extra></extra>",
            }
        ]
    else:
        returning = [s - n for s, n in zip(timeline.sessions, timeline.new, strict=True)]
        traces = [
            {
                "type": "bar",
                "x": starts,
                "y": values,
                "name": name,
                "marker": {"color": color},
                "width": [width * 0.85] * len(starts),
                "hovertemplate": hover + f"<br>%{{y:,}} {name.lower()} sessions<extra></extra>",
            }
            for name, values, color in (
                ("New", list(timeline.new), _BLUE),
                ("Returning", returning, _ORANGE),
            )
        ]
    return {
        "data": traces,
        "layout": _layout(
            300,
            barmode="stack",
            bargap=0.1,
            showlegend=timeline.new is not None,
            legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0, "traceorder": "normal"},
            xaxis=_axis(type="date", showgrid=False),
            yaxis=_axis(title={"text": "sessions"}, rangemode="tozero", tickformat=","),
            margin={"l": 8, "r": 16, "t": 30, "b": 8},
        ),
    }


def _durations_figure(data: ReportData) -> dict[str, Any]:
    labels = [label for label, _ in data.durations]
    values = [value for _, value in data.durations]
    return {
        "data": [
            {
                "type": "bar",
                "x": labels,
                "y": values,
                "marker": {"color": _BLUE},
                "text": [_percent(v, data.sessions) for v in values],
                "textposition": "outside",
                "cliponaxis": False,
                "hovertemplate": "%{x}<br>%{y:,} sessions<extra></extra>",
            }
        ],
        "layout": _layout(
            300,
            xaxis=_axis(type="category", showgrid=False, tickangle=0),
            yaxis=_axis(title={"text": "sessions"}, rangemode="tozero", tickformat=","),
            margin={"l": 8, "r": 16, "t": 24, "b": 8},
        ),
    }


def _donut_figure(labels: Sequence[str], values: Sequence[int], colors: Sequence[str]) -> dict[str, Any]:
    return {
        "data": [
            {
                "type": "pie",
                "labels": list(labels),
                "values": list(values),
                "hole": 0.55,
                "sort": False,
                "direction": "clockwise",
                "marker": {"colors": list(colors)},
                "textinfo": "percent",
                "hovertemplate": "%{label}<br>%{value:,} sessions (%{percent})<extra></extra>",
            }
        ],
        "layout": _layout(
            260, showlegend=True, legend={"orientation": "v", "x": 1, "y": 0.5}, margin={"t": 8, "b": 8}
        ),
    }


def _ranking_figure(spec: _RankingSpec, ranking: Ranking, total: int) -> dict[str, Any]:
    labels = list(ranking.labels)
    short = _url_label if spec.is_url else _plain_label
    values = list(ranking.sessions)
    return {
        "data": [
            {
                "type": "bar",
                "orientation": "h",
                "x": values,
                "y": labels,
                "marker": {"color": _BLUE},
                "text": [f"{v:,} · {_percent(v, total)}" for v in values],
                "textposition": "outside",
                "cliponaxis": False,
                "hovertemplate": "%{y}<br>%{x:,} sessions<extra></extra>",
            }
        ],
        "layout": _layout(
            40 + 26 * len(labels),
            bargap=0.25,
            # Room on the right for the text beside the longest bar.
            margin={"l": 8, "r": 72, "t": 8, "b": 8},
            xaxis=_axis(visible=False, rangemode="tozero", range=[0, max(values) * 1.1]),
            yaxis=_axis(
                type="category",
                autorange="reversed",
                tickmode="array",
                tickvals=labels,
                ticktext=[short(label) for label in labels],
                showgrid=False,
            ),
        ),
    }


@dataclass(frozen=True)
class _Card:
    key: str
    title: str
    width: Literal["wide", "half", "third"]
    figure: dict[str, Any] | None = None
    subtitle: str = ""
    note: str = ""


def _ranking_subtitle(spec: _RankingSpec, ranking: Ranking, total: int) -> str:
    parts = [
        f"Top {len(ranking.labels)} of {ranking.distinct:,} {spec.noun}"
        if ranking.other_values
        else f"All {ranking.distinct:,} {spec.noun}"
    ]
    if ranking.other_sessions:
        parts.append(f"{ranking.other_sessions:,} sessions on the others")
    unknown = total - ranking.known
    if unknown:
        why = {
            "landing_page": "without a page view",
            "exit_page": "without a page view",
            "country": "not located",
            "city": "without a city",
            "device_category": "without a user agent",
        }.get(spec.key, "unknown")
        parts.append(f"{unknown:,} sessions {why}")
    return " · ".join(parts)


def _cards(data: ReportData) -> list[_Card]:
    cards: list[_Card] = []
    total = data.sessions
    unit = "hour" if data.timeline.unit == "hour" else "day"
    if "timeline" in data.left_out:
        cards.append(_Card("timeline", "Sessions over time", "wide", note=data.left_out["timeline"]))
    else:
        subtitle = f"Sessions per {unit} (UTC)"
        if data.timeline.new is not None:
            subtitle += ", by new and returning users"
        cards.append(_Card("timeline", "Sessions over time", "wide", _timeline_figure(data), subtitle))
    if "durations" in data.left_out:
        cards.append(_Card("durations", "Session duration", "half", note=data.left_out["durations"]))
    else:
        cards.append(
            _Card(
                "durations",
                "Session duration",
                "half",
                _durations_figure(data),
                "Sessions by time from first to last event; 0 s is a single event",
            )
        )
    if "new_vs_returning" in data.left_out or data.new_sessions is None:
        note = data.left_out.get("new_vs_returning", "")
        cards.append(_Card("new_vs_returning", "New vs returning", "half", note=note))
    else:
        returning = data.returning_sessions or 0
        cards.append(
            _Card(
                "new_vs_returning",
                "New vs returning",
                "half",
                _donut_figure(
                    ["New (first session)", "Returning"], [data.new_sessions, returning], [_BLUE, _ORANGE]
                ),
                "A user's first session is new (session_number 1); later ones are returning",
            )
        )
    widths: dict[str, Literal["wide", "half", "third"]] = {
        "device_category": "third",
        "browser": "third",
        "os": "third",
    }
    for spec in RANKINGS:
        width = widths.get(spec.key, "half")
        ranking = data.rankings.get(spec.key)
        if ranking is None:
            cards.append(_Card(spec.key, spec.title, width, note=data.left_out.get(spec.key, "No data.")))
            continue
        subtitle = _ranking_subtitle(spec, ranking, total)
        if spec.key == "device_category":
            figure = _donut_figure(
                ranking.labels,
                ranking.sessions,
                [_PALETTE[i % len(_PALETTE)] for i in range(len(ranking.labels))],
            )
        else:
            figure = _ranking_figure(spec, ranking, total)
        cards.append(_Card(spec.key, spec.title, width, figure, subtitle))
    return cards


def _figure_html(key: str, figure: dict[str, Any]) -> str:
    import plotly.io as pio

    height = int(figure["layout"]["height"])
    return str(
        pio.to_html(
            figure,
            full_html=False,
            include_plotlyjs=False,
            config=_PLOTLY_CONFIG,
            div_id=f"chart-{key}",
            default_height=f"{height}px",
            validate=True,
        )
    )


def _options_as_code(text: str) -> str:
    """``--no-geo`` in (escaped) text as ``<code>``, so that it does not break across lines."""
    return re.sub(r"(?<![\w-])(--[a-z][a-z-]*)", r"<code>\1</code>", text)


def _when(moment: datetime | None) -> str:
    return _DASH if moment is None else f"{moment:%Y-%m-%d %H:%M}"


_CSS = """
:root { --font: FONT; --ink: #2d3436; --muted: #636e72; --line: #e3e6ea; --bg: #f5f6f8; --blue: #3867d6; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink); font: 14px/1.45 var(--font); }
main { max-width: 1240px; margin: 0 auto; padding: 24px 20px 40px; }
header h1 { margin: 0 0 4px; font-size: 24px; font-weight: 650; }
header p { margin: 2px 0; color: var(--muted); }
header p strong { color: var(--ink); font-weight: 600; }
.kpis { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: 12px;
  margin: 20px 0; }
.kpi { background: white; border: 1px solid var(--line); border-radius: 10px; padding: 12px 16px; }
.kpi .label { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.kpi .value { font-size: 26px; font-weight: 650; margin-top: 2px; font-variant-numeric: tabular-nums; }
.kpi .detail { color: var(--muted); font-size: 12px; }
.grid { display: grid; grid-template-columns: repeat(6, minmax(0, 1fr)); gap: 12px; }
.card { background: white; border: 1px solid var(--line); border-radius: 10px; padding: 14px 16px 10px; }
.card h2 { margin: 0; font-size: 15px; font-weight: 620; }
.card .subtitle { margin: 2px 0 8px; color: var(--muted); font-size: 12px; }
.card .note { margin: 10px 0 8px; color: var(--muted); font-style: italic; }
.card.left-out { background: #fafbfc; align-self: start; }
code { font: 12px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; white-space: nowrap; }
.wide { grid-column: span 6; } .half { grid-column: span 3; } .third { grid-column: span 2; }
@media (max-width: 900px) { .half, .third { grid-column: span 6; } }
footer { margin-top: 20px; color: var(--muted); font-size: 12px; }
"""


def render_report(
    data: ReportData,
    *,
    title: str = DEFAULT_TITLE,
    sources: Sequence[str] = (),
    generated_at: datetime | None = None,
) -> str:
    """The report page for ``data``: one HTML document with plotly.js inlined once.

    ``sources`` (the tables' paths) and the time it was made are shown in the header. Every text from
    the data is escaped (page URLs come from the outside world).
    """
    from plotly.offline import get_plotlyjs, get_plotlyjs_version

    esc = html.escape
    generated_at = generated_at or datetime.now(UTC)
    cards = _cards(data)
    total = data.sessions

    def kpi(label: str, value: str, detail: str = "") -> str:
        extra = f'<div class="detail">{esc(detail)}</div>' if detail else ""
        return (
            f'<div class="kpi"><div class="label">{esc(label)}</div>'
            f'<div class="value">{esc(value)}</div>{extra}</div>'
        )

    kpis = [
        kpi("Sessions", f"{total:,}", "" if not data.bot_sessions else f"{data.bot_sessions:,} by bots"),
        kpi(
            "Users",
            f"{data.users:,}",
            f"{total / data.users:.2f} sessions per user" if data.users else "",
        ),
        kpi("Median duration", format_duration(data.median_duration_s)),
        kpi("Mean duration", format_duration(data.mean_duration_s)),
        kpi(
            "Pages / session",
            _DASH if data.pages_per_session is None else f"{data.pages_per_session:.2f}",
            "no pageview_count column" if data.pages_per_session is None and total else "",
        ),
        kpi(
            "Bounce rate",
            _DASH if data.bounce_rate is None else f"{100 * data.bounce_rate:.1f}%",
            "no is_bounce column" if data.bounce_rate is None and total else "not engaged (GA4)",
        ),
    ]

    if data.date_from is None and data.date_to is None:
        filters = "none"
    else:
        filters = " and ".join(
            part
            for part in (
                "" if data.date_from is None else f"at or after {_when(data.date_from)}",
                "" if data.date_to is None else f"before {_when(data.date_to)}",
            )
            if part
        )
        filters = f"sessions starting {filters} UTC"
    if data.first_start is not None:
        span = f"{_when(data.first_start)} to {_when(data.last_start)} UTC"
    else:
        span = "no sessions"
    if len(sources) > 3:
        source_text = ", ".join(sources[:3]) + f" and {len(sources) - 3:,} more"
    else:
        source_text = ", ".join(sources) or "a session table in memory"

    blocks = []
    for card in cards:
        subtitle = f'<p class="subtitle">{esc(card.subtitle)}</p>' if card.subtitle else ""
        if card.figure is None:
            body = f'<p class="note">Left out. {_options_as_code(esc(card.note))}</p>'
            classes = f"card {card.width} left-out"
        else:
            body = _figure_html(card.key, card.figure)
            classes = f"card {card.width}"
        blocks.append(
            f'<section class="{classes}" data-chart="{esc(card.key)}">'
            f"<h2>{esc(card.title)}</h2>{subtitle}{body}</section>"
        )
    charts = sum(card.figure is not None for card in cards)
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="sessionize {esc(__version__)}">
<title>{esc(title)}</title>
<style>{_CSS.replace("FONT", _FONT)}</style>
<script>window.PlotlyConfig = {{MathJaxConfig: 'local'}};</script>
<script>{get_plotlyjs()}</script>
</head>
<body>
<main>
<header>
<h1>{esc(title)}</h1>
<p><strong>{total:,} sessions</strong> starting {esc(span)}</p>
<p>Filters: {esc(filters)} · top {data.top} per ranking</p>
<p>From {esc(source_text)}</p>
</header>
<div class="kpis">{"".join(kpis)}</div>
<div class="grid">
{chr(10).join(blocks)}
</div>
<footer>Made by sessionize {esc(__version__)} on {generated_at:%Y-%m-%d %H:%M} UTC · {charts} charts ·
charts drawn with plotly.js {esc(get_plotlyjs_version())}, inlined: this page needs no network.</footer>
</main>
</body>
</html>
"""
    return page


# --------------------------------------------------------------------------------------------------
# Writing


@dataclass
class ReportResult:
    """What :func:`make_report` or :func:`write_report` did."""

    output: str
    data: ReportData
    size_bytes: int
    elapsed_s: float
    sources: list[str] = field(default_factory=list)

    @property
    def charts(self) -> list[str]:
        """Keys of the charts on the page."""
        keys = ["timeline", "durations", "new_vs_returning", *(spec.key for spec in RANKINGS)]
        return [key for key in keys if key not in self.data.left_out]

    @property
    def left_out(self) -> dict[str, str]:
        return self.data.left_out


def chart_title(key: str) -> str:
    """The title of a chart by its key (``landing_page`` -> ``Top landing pages``)."""
    fixed = {"timeline": "Sessions over time", "durations": "Session duration"}
    fixed["new_vs_returning"] = "New vs returning"
    return fixed.get(key) or _RANKING_BY_KEY[key].title


def check_report_output(output: str | Path, inputs: Sequence[str] = ()) -> str:
    """The report's path, after checking that its directory exists and that it is not an input.

    ``-`` means stdout.
    """
    target = str(output)
    if target == STDOUT:
        return target
    real = os.path.realpath(target)
    if os.path.isdir(real):
        raise OutputError(
            f"Cannot write the report to {target}: it is a directory. Name a file: -o report.html."
        )
    for source in inputs:
        if os.path.realpath(source) == real:
            raise OutputError(f"The report {target} is also an input: choose another path with -o.")
    parent = os.path.dirname(real)
    if not os.path.isdir(parent):
        raise OutputError(f"Cannot write {target}: the directory {parent} does not exist.")
    return target


def write_report(
    sessions: pl.LazyFrame | pl.DataFrame,
    output: str | Path,
    *,
    date_from: str | date | None = None,
    date_to: str | date | None = None,
    top: int = DEFAULT_TOP,
    title: str = DEFAULT_TITLE,
    sources: Sequence[str] = (),
) -> ReportResult:
    """Aggregate a session table and write its report page to ``output`` (atomically; ``-`` is stdout).

    ``date_from``/``date_to`` are dates or timestamps (ISO 8601 text or objects; see
    :func:`parse_date_bound`). ``sources`` names the inputs in the page's header (and the report
    may not overwrite one of them).
    """
    started = time.perf_counter()
    start, end = _date_bounds(date_from, date_to)
    target = check_report_output(output, sources)
    data = _collect(lambda: aggregate_sessions(sessions, date_from=start, date_to=end, top=top), sources)
    page = render_report(data, title=title, sources=sources)
    if target == STDOUT:
        encoded = page.encode("utf-8")
        sys.stdout.buffer.write(encoded)
        sys.stdout.buffer.flush()
        size = len(encoded)
    else:
        encoded = page.encode("utf-8")
        write_atomically(target, lambda handle: handle.write(encoded))
        size = len(encoded)
    return ReportResult(
        output=target,
        data=data,
        size_bytes=size,
        elapsed_s=time.perf_counter() - started,
        sources=list(sources),
    )


def _date_bounds(
    date_from: str | date | None, date_to: str | date | None
) -> tuple[datetime | None, datetime | None]:
    start = parse_date_bound(date_from, option="--from")
    end = parse_date_bound(date_to, option="--to", end=True)
    if start is not None and end is not None and start >= end:
        raise UsageError(f"--from ({date_from}) must be before --to ({date_to}).")
    return start, end


def _collect(compute: Callable[[], ReportData], sources: Sequence[str]) -> ReportData:
    try:
        return compute()
    except pl.exceptions.PolarsError as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        where = ", ".join(sources) or "The session table"
        raise UnreadableInputError(
            f"{where}: a column does not hold what a session table does ({detail}). Check that the "
            "files are session tables written by sessionize run."
        ) from exc


def make_report(
    inputs: Sequence[str | Path],
    *,
    output: str | Path = DEFAULT_OUTPUT,
    date_from: str | date | None = None,
    date_to: str | date | None = None,
    top: int = DEFAULT_TOP,
    title: str = DEFAULT_TITLE,
) -> ReportResult:
    """Read session tables and write their report: what ``sessionize report`` does.

    ``inputs`` are Parquet, CSV or NDJSON session tables, directories of them or glob patterns.

    Examples
    --------
    ``sessionize.make_report(["sessions.parquet"], output="report.html", date_from="2024-05-01")``
    """
    started = time.perf_counter()
    # Usage errors first, before any file is read.
    _date_bounds(date_from, date_to)
    if top < 1:
        raise UsageError(f"--top must be at least 1, got {top}.")
    files = resolve_session_tables(inputs)
    check_report_output(output, files)
    result = write_report(
        _read_tables(files), output, date_from=date_from, date_to=date_to, top=top, title=title, sources=files
    )
    result.elapsed_s = time.perf_counter() - started
    return result
