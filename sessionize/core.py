"""The session rule and the session table: pure ``LazyFrame -> LazyFrame`` functions.

No I/O, no printing, no ``collect``. Every step depends only on one user's events, so the same code
can run per partition of users on a distributed engine.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

import polars as pl

from sessionize import schema as S

#: Format of the session start inside generated session ids; fixed width, so ids stay unique.
_SESSION_ID_TIME_FORMAT = "%Y%m%dT%H%M%S%.6f"


def assign_sessions(
    events: pl.LazyFrame,
    *,
    timeout: timedelta = S.DEFAULT_TIMEOUT,
    max_session_length: timedelta | None = None,
    split_at_midnight: bool = False,
    timezone: str = "UTC",
    campaign_col: str | None = None,
    label: bool = True,
) -> pl.LazyFrame:
    """Add a ``session_id`` to every event of a canonical events frame.

    A user's events without a client session id are split by the timeout: a new session starts at
    the user's first such event and whenever the gap since the previous one is greater than
    ``timeout`` (a gap of exactly ``timeout`` stays in the session). Events with a client session id
    keep it: they form one session per (user, client id), whatever their gaps.

    Opt-in rules for the events without a client id, as other analytics tools apply them:

    * ``max_session_length`` (PostHog: 24 h): an event more than this after its session's start
      starts a new session, so a longer run of activity becomes consecutive sessions.
    * ``split_at_midnight`` (Universal Analytics, Matomo): an event on another calendar day than
      the previous one, in ``timezone``, starts a new session.
    * ``campaign_col`` (Universal Analytics): the column that holds a page view's campaign (null for
      none); a campaign other than the session's current one starts a new session.

    The result has each user's events together, sorted by client session id (nulls first) and
    time; events at the same instant keep their input order. With ``label=False`` it numbers the
    sessions in ``_session`` instead (each session's events are contiguous), and
    :func:`summarize_sessions` makes the ids: one string per session rather than per event.

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
    generated = client.is_null()
    # Only each user's events need to be together, not users in lexical order (the session table is
    # sorted at the end), so the sort leads with a hash of the user id: at 10M events that beats a
    # string sort, and dictionary codes (2.2 s to build). The id itself breaks ties between users
    # whose hashes collide. The client session id sorts as codes: it is usually all null.
    client_code = pl.col("_client")
    ordered = events.with_columns(
        user.hash().alias("_user"),
        client.cast(pl.Categorical).to_physical().alias("_client"),
    ).sort(["_user", S.USER, "_client", S.TIME], nulls_last=False, maintain_order=True)
    # The gap is computed in its own step: nesting it inside the boundary expression was much slower.
    with_gap = ordered.with_columns(
        (user.eq(user.shift(1)) & client_code.eq_missing(client_code.shift(1)))
        .fill_null(False)
        .alias("_same"),
        (ts - ts.shift(1)).alias("_gap"),
    )
    is_new = ~pl.col("_same") | (generated & (pl.col("_gap") > timeout))
    if split_at_midnight:
        day = ts.dt.convert_time_zone(timezone).dt.date()
        is_new = is_new | (generated & (day != day.shift(1))).fill_null(False)
    frame = with_gap.with_columns(is_new.alias("_new"))
    temporary = ["_user", "_client", "_same", "_gap", "_new"]
    if campaign_col is not None:
        # The latest campaign seen in the session so far is its current one: every change splits.
        campaign = pl.col(campaign_col)
        previous = campaign.forward_fill().shift(1).over("_idx")
        changed = generated & campaign.is_not_null() & campaign.ne_missing(previous)
        frame = frame.with_columns(pl.col("_new").cum_sum().alias("_idx")).with_columns(
            (pl.col("_new") | changed.fill_null(False)).alias("_new")
        )
        temporary.append("_idx")
    if max_session_length is not None:
        limit = int(max_session_length / timedelta(microseconds=1))
        frame = frame.with_columns(pl.col("_new").cum_sum().alias("_idx")).with_columns(
            (
                pl.col("_new")
                | (
                    generated
                    & pl.struct(pl.col("_idx"), ts.dt.epoch("us")).map_batches(
                        lambda rows: _cuts_of_long_sessions(rows, limit), return_dtype=pl.Boolean
                    )
                )
            ).alias("_new")
        )
        temporary.append("_idx")
    if not label:
        # Sessions are contiguous runs here: number them, and leave the ids to summarize_sessions,
        # which makes one string per session instead of one per event.
        return frame.with_columns(pl.col("_new").cum_sum().alias(SESSION_INDEX)).drop(*set(temporary))
    start = pl.when(pl.col("_new")).then(ts).forward_fill()
    return frame.with_columns(session_id_expr(client, user, start).alias(S.SESSION_ID)).drop(*set(temporary))


def session_id_expr(client: pl.Expr, user: pl.Expr, start: pl.Expr) -> pl.Expr:
    """The client's session id, else ``<user_id>-<start as YYYYMMDDTHHMMSS.ffffff>``."""
    return pl.coalesce(client, pl.concat_str([user, pl.lit("-"), start.dt.strftime(_SESSION_ID_TIME_FORMAT)]))


def _cuts_of_long_sessions(rows: pl.Series, limit_us: int) -> pl.Series:
    """Where a session longer than the limit is cut: each event more than ``limit_us`` after the
    start of its (already cut) session starts a new one.

    The cut points depend on each other, so this walks the events in order, but only those of
    sessions longer than the limit: a few per data set, not the hot path.
    """
    frame = rows.struct.unnest()
    index, micros = frame.columns
    spans = frame.group_by(index).agg((pl.col(micros).max() - pl.col(micros).min()).alias("_span"))
    long = spans.filter(pl.col("_span") > limit_us).get_column(index)
    cuts = [False] * frame.height
    if long.len():
        positions = frame.with_row_index("_pos").filter(pl.col(index).is_in(long.implode()))
        current, start = None, 0
        for position, session, moment in positions.select("_pos", index, micros).iter_rows():
            if session != current:
                current, start = session, moment
            elif moment - start > limit_us:
                cuts[position] = True
                start = moment
    return pl.Series(rows.name, cuts, dtype=pl.Boolean)


#: Session number of each event from ``assign_sessions(label=False)``.
SESSION_INDEX = "_session"
#: Internal column of :func:`summarize_sessions`: the session requested ``/robots.txt``.
ROBOTS_TXT = "_fetched_robots_txt"


def summarize_sessions(sessions: pl.LazyFrame, *, conversion_events: Iterable[str] = ()) -> pl.LazyFrame:
    """One row per session from the output of :func:`assign_sessions`.

    Gives every column of the session table but the enrichment ones (attribution, geo, device), in
    the table's order, sorted by user and session number, plus the internal ``_fetched_robots_txt``.
    A session is engaged (GA4's rule) when it lasts at least 10 s, has at least 2 page views, or has
    an event named in ``conversion_events`` (case-insensitive).
    """
    conversions = [name.lower() for name in conversion_events]
    ts, pv = pl.col(S.TIME), pl.col(S.IS_PAGEVIEW)
    # `filter(...).first()` keeps a null value of the first page view: a null referrer means "direct".
    landing_referrer = (
        pl.when(pv.any()).then(pl.col(S.REFERRER).filter(pv).first()).otherwise(pl.col(S.REFERRER).first())
    )
    # The robots.txt test runs per row, before the group_by: inside the aggregation it was 3x slower.
    robots = pl.col(S.URL).str.contains(r"^(?:[A-Za-z][A-Za-z0-9+.-]*://[^/]+)?/robots\.txt(?:[?#]|$)")
    numbered = SESSION_INDEX in sessions.collect_schema().names()
    keys = [SESSION_INDEX] if numbered else [S.USER, S.SESSION_ID]
    ids = (
        [
            pl.col(S.USER).first(),
            session_id_expr(pl.col(S.CLIENT_SESSION).first(), pl.col(S.USER).first(), ts.min()).alias(
                S.SESSION_ID
            ),
        ]
        if numbered
        else []
    )
    table = (
        sessions.with_columns(robots.alias(ROBOTS_TXT))
        .group_by(keys)
        .agg(
            *ids,
            ts.min().alias("session_start"),
            ts.max().alias("session_end"),
            pl.len().cast(pl.UInt32).alias("event_count"),
            pv.sum().cast(pl.UInt32).alias("pageview_count"),
            pl.col(S.URL).filter(pv).first().alias("landing_page"),
            pl.col(S.URL).filter(pv).last().alias("exit_page"),
            landing_referrer.alias("referrer"),
            pl.col(S.IP).first().alias("ip"),
            pl.col(S.USER_AGENT).first().alias("user_agent"),
            # Only crawlers ask for /robots.txt: the session is a bot's whatever its user agent says.
            pl.col(ROBOTS_TXT).any(),
            (
                pl.col(S.EVENT).str.to_lowercase().is_in(conversions).any() if conversions else pl.lit(False)
            ).alias("_converted"),
        )
        .sort(S.USER, "session_start", S.SESSION_ID)
        .with_columns(
            (pl.int_range(pl.len(), dtype=pl.UInt32).over(S.USER) + 1).alias("session_number"),
            # round(6): exact microseconds as the nearest float, whatever order Polars divides in.
            ((pl.col("session_end") - pl.col("session_start")).dt.total_microseconds() / 1e6)
            .round(6)
            .alias("duration_s"),
        )
        .with_columns(
            (
                (pl.col("duration_s") >= S.ENGAGED_DURATION_S)
                | (pl.col("pageview_count") >= 2)
                | pl.col("_converted")
            ).alias("is_engaged")
        )
        .with_columns((~pl.col("is_engaged")).alias("is_bounce"))
    )
    return table.select(*(c.name for c in S.SESSION_COLUMNS if c.core), ROBOTS_TXT)
