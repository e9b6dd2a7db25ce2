"""The session rule and the session table: pure ``LazyFrame -> LazyFrame`` functions.

No I/O, no printing, no ``collect``. Every step depends only on one user's events, so the same code
can run per partition of users on a distributed engine.
"""

from __future__ import annotations

from datetime import timedelta

import polars as pl

from sessionize import schema as S

#: Format of the session start inside generated session ids; fixed width, so ids stay unique.
_SESSION_ID_TIME_FORMAT = "%Y%m%dT%H%M%S%.6f"


def assign_sessions(events: pl.LazyFrame, *, timeout: timedelta = S.DEFAULT_TIMEOUT) -> pl.LazyFrame:
    """Add a ``session_id`` to every event of a canonical events frame.

    A user's events without a client session id are split by the timeout: a new session starts at
    the user's first such event and whenever the gap since the previous one is greater than
    ``timeout`` (a gap of exactly ``timeout`` stays in the session). Events with a client session id
    keep it: they form one session per (user, client id), whatever their gaps.

    The result is sorted by user, client session id (nulls first) and time; events at the same
    instant keep their input order.

    Examples
    --------
    >>> import polars as pl
    >>> from datetime import datetime, timedelta, timezone
    >>> t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
    >>> ev = pl.LazyFrame(
    ...     {"user_id": ["a", "a"], "timestamp": [t0, t0 + timedelta(hours=1)]},
    ... ).with_columns(client_session_id=pl.lit(None, pl.String))
    >>> assign_sessions(ev).collect()["session_id"].to_list()
    ['a-20240101T000000.000000', 'a-20240101T010000.000000']
    """
    user, ts, client = pl.col(S.USER), pl.col(S.TIME), pl.col(S.CLIENT_SESSION)
    # The gap is computed in its own step: nesting it inside the boundary expression was much slower.
    ordered = events.sort([S.USER, S.CLIENT_SESSION, S.TIME], nulls_last=False, maintain_order=True)
    with_gap = ordered.with_columns(
        (user.eq(user.shift(1)) & client.eq_missing(client.shift(1))).fill_null(False).alias("_same"),
        (ts - ts.shift(1)).alias("_gap"),
    )
    is_new = ~pl.col("_same") | (client.is_null() & (pl.col("_gap") > timeout))
    start = pl.when(is_new).then(ts).forward_fill()
    generated = pl.concat_str([user, pl.lit("-"), start.dt.strftime(_SESSION_ID_TIME_FORMAT)])
    return with_gap.with_columns(pl.coalesce(client, generated).alias(S.SESSION_ID)).drop("_same", "_gap")


def summarize_sessions(sessions: pl.LazyFrame) -> pl.LazyFrame:
    """One row per session from the output of :func:`assign_sessions`.

    Gives every column of the session table but the enrichment ones (traffic source and geo), in
    the table's order, sorted by user and session number.
    """
    ts, pv = pl.col(S.TIME), pl.col(S.IS_PAGEVIEW)
    # `filter(...).first()` keeps a null value of the first page view: a null referrer means "direct".
    landing_referrer = (
        pl.when(pv.any()).then(pl.col(S.REFERRER).filter(pv).first()).otherwise(pl.col(S.REFERRER).first())
    )
    table = (
        sessions.group_by(S.USER, S.SESSION_ID)
        .agg(
            ts.min().alias("session_start"),
            ts.max().alias("session_end"),
            pl.len().cast(pl.UInt32).alias("event_count"),
            pv.sum().cast(pl.UInt32).alias("pageview_count"),
            pl.col(S.URL).filter(pv).first().alias("landing_page"),
            pl.col(S.URL).filter(pv).last().alias("exit_page"),
            landing_referrer.alias("referrer"),
            pl.col(S.IP).first().alias("ip"),
        )
        .sort(S.USER, "session_start", S.SESSION_ID)
        .with_columns(
            (pl.int_range(pl.len(), dtype=pl.UInt32).over(S.USER) + 1).alias("session_number"),
            # round(6): exact microseconds as the nearest float, whatever order Polars divides in.
            ((pl.col("session_end") - pl.col("session_start")).dt.total_microseconds() / 1e6)
            .round(6)
            .alias("duration_s"),
        )
    )
    return table.select(c.name for c in S.SESSION_COLUMNS if c.name in _CORE_COLUMNS)


_CORE_COLUMNS = frozenset(c.name for c in S.SESSION_COLUMNS) - {
    "traffic_source",
    "city",
    "region",
    "country",
    "country_code",
}
