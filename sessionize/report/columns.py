"""The columns a report reads: the required ones, the rankings and the columns each needs, and how a
table's columns are brought to the session table's types."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from sessionize import schema as S
from sessionize.errors import NotASessionTableError

#: Columns a session table must have for a report; every other column is optional.
REQUIRED_COLUMNS: tuple[str, ...] = ("user_id", "session_start", "duration_s")


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
        if wanted.is_float():
            # 1e400 (inf) or nan in a table from elsewhere: no duration, not a crash of the report.
            column = pl.when(column.is_finite()).then(column)
        exprs.append(column.alias(name))
    return frame.select(exprs)


def _check_columns(names: Sequence[str], source: str) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        listing = S.column_listing(names)
        raise NotASessionTableError(
            f"{source} is not a session table: it has no {', '.join(missing)} column"
            f"{'s' if len(missing) > 1 else ''}. Its columns are: {listing}. Make a session table with "
            "`sessionize run EVENTS -o sessions.parquet`, or write the report in the same run with "
            "`sessionize run EVENTS --report report.html`."
        )
