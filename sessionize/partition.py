"""The partition step: the events of whole users -> their sessions and a tally of them.

Every engine calls :func:`process_partition`: the in-memory engine once on all events, the bucketed
engine once per bucket of users, the incremental engine once on the users a run touches, and a
distributed engine once per partition of users on its workers. Sessions depend only on their user's
events, so the union of the results is the same however users are partitioned. This module
imports no engine.

The step, in order: drop duplicate events (same event id; exact copies with ``dedupe``), hash the
user ids (``--hash-user-ids``), build the sessions (:func:`sessionize_partition`), count them in a
:class:`Tally` (bots before ``--exclude-bots`` leaves them out), and drop the columns the privacy
options ask to drop.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Self, TypeVar

import polars as pl

from sessionize import geo
from sessionize import schema as S
from sessionize.attribution import (
    CAMPAIGN,
    RefererDatabase,
    add_campaign_key,
    enrich_attribution,
    load_referers,
)
from sessionize.config import SESSION_COLUMN_NAMES, AnonymizeIp, RunConfig
from sessionize.core import (
    ROBOTS_TXT,
    USER_TABLE_INPUTS,
    assign_sessions,
    beyond_session_cap,
    claim_shared_session_ids,
    reads_event_names,
    summarize_pageviews,
    summarize_sessions,
    summarize_users,
)
from sessionize.distinct import fresh_name
from sessionize.errors import SumOverflowError
from sessionize.geo import GeoDatabase, enrich_geo
from sessionize.io import drop_duplicate_events
from sessionize.privacy import CLIENT_PORT, Hide, anonymize_ips, client_addresses, hash_user_ids, hide_copies
from sessionize.useragent import BOT, enrich_user_agent

_F = TypeVar("_F", pl.DataFrame, pl.LazyFrame)


@dataclass(frozen=True)
class SessionRules:
    """The opt-in session rules besides the timeout (see :func:`sessionize.core.assign_sessions`)."""

    max_session_length: timedelta | None = None
    split_on_campaign: bool = False
    split_at_midnight: bool = False
    #: Time zone of ``split_at_midnight``.
    timezone: str = "UTC"
    #: How ``channel`` (and ``medium``) are computed: ``ga4`` or ``snowplow`` (``--channel-rules``,
    #: :data:`sessionize.config.CHANNEL_RULES`).
    channel_rules: str = "ga4"
    #: ``--session-cap``: events of a client session more than this after its first event are left
    #: out (Snowplow's session cap), counted in the summary's ``filtered out``.
    session_cap: timedelta | None = None
    #: ``--shared-session-ids``: ``split``, ``merge`` or ``merge-last``
    #: (:func:`sessionize.core.claim_shared_session_ids`).
    shared_session_ids: str = "split"

    @property
    def merges_session_ids(self) -> bool:
        return self.shared_session_ids != "split"

    def claim(self, events: _F) -> _F:
        """``events`` given to their client sessions' owners (:func:`claim_shared_session_ids`)."""
        return claim_shared_session_ids(events, last=self.shared_session_ids == "merge-last")


#: Internal column of the step's full table (``keep_all``) with ``--session-cap``: the events of the
#: session left out by the cap, which the tally counts.
CAPPED = "_capped"


def cap_sessions(events: pl.DataFrame, cap: timedelta | None) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """Events without those beyond the session cap (:func:`sessionize.core.beyond_session_cap`), and
    how many each client session lost (user, ``session_id``, ``_capped``), or None when none did."""
    if cap is None or not events.height:
        return events, None
    beyond = events.select(beyond_session_cap(cap).alias(CAPPED)).to_series()
    if not beyond.any():
        return events, None
    counts = (
        events.filter(beyond)
        .group_by(S.USER, S.CLIENT_SESSION)
        .agg(pl.len().cast(pl.UInt32).alias(CAPPED))
        .rename({S.CLIENT_SESSION: S.SESSION_ID})
    )
    return events.filter(~beyond), counts


def cap_lazy(events: pl.LazyFrame, cap: timedelta | None) -> pl.LazyFrame:
    """:func:`cap_sessions` on a LazyFrame, without the counts."""
    return events if cap is None else events.filter(~beyond_session_cap(cap))


def _with_capped(table: pl.DataFrame, counts: pl.DataFrame | None) -> pl.DataFrame:
    """The step's table with ``_capped`` (0 for the sessions that lost no event). A client may send a
    session id equal to a timeout session's generated one: the count goes to the first session of that
    user and id only, so that it is counted once."""
    if counts is None:
        return table.with_columns(pl.lit(0, pl.UInt32).alias(CAPPED))
    joined = table.join(
        counts, on=[S.USER, S.SESSION_ID], how="left", maintain_order="left", nulls_equal=True
    )
    first = pl.int_range(pl.len()).over(S.USER, S.SESSION_ID) == 0
    return joined.with_columns(pl.when(first).then(pl.col(CAPPED)).fill_null(0).alias(CAPPED))


def build_sessions(
    events: pl.LazyFrame,
    *,
    timeout: timedelta = S.DEFAULT_TIMEOUT,
    geo_database: GeoDatabase | None = None,
    keep_geo_status: bool = False,
    anonymize_ip: AnonymizeIp | None = None,
    referers: RefererDatabase | None = None,
    internal_domains: Sequence[str] = (),
    conversion_events: Iterable[str] = (),
    rules: SessionRules | None = None,
    exclude_bots: bool = False,
    event_counts: Sequence[tuple[str, str]] = (),
    engaged: S.EngagedTime | None = None,
    stitching: bool = False,
    aggregates: Sequence[S.Aggregate] = (),
    stitch_fallback: bool = False,
) -> pl.LazyFrame:
    """The session table of a canonical events frame (see :func:`sessionize.normalize.prepare_events`).

    ``keep_geo_status`` keeps the per-session lookup outcome (``_geo_status``) for the summary.
    ``anonymize_ip`` truncates the ``ip`` column after the geo lookup, or before it. ``referers`` is
    the referer database for attribution (default: the packaged one). ``exclude_bots`` leaves out
    the sessions of crawlers and scripts.
    """
    settings = SessionSettings(
        timeout=timeout,
        rules=rules or SessionRules(),
        anonymize_ip=anonymize_ip,
        referers=referers,
        internal_domains=tuple(internal_domains),
        conversion_events=tuple(conversion_events),
        event_counts=tuple(event_counts),
        aggregates=tuple(aggregates),
        engaged=engaged or S.EngagedTime(),
    )
    sessions = _enriched_sessions(_core_sessions(events, settings), settings, exclude_bots=exclude_bots)
    sessions = sessions.pipe(enrich_geo, database=geo_database)
    return _sessions_after_geo(
        sessions,
        anonymize_ip=anonymize_ip,
        keep_geo_status=keep_geo_status,
        extra=[*(c for c, _ in event_counts), *(a.name for a in aggregates)],
        stitched=stitched_ids(events) if stitching else None,
        stitch_fallback=stitch_fallback,
    )


def stand_in(session: str = S.CLIENT_SESSION) -> pl.Expr:
    """Whether a row's user id is the stand-in of an event that had none: its client session id
    (``session``: the events' column, or the session table's ``session_id``), which
    :func:`sessionize.normalize.keyed_by_session` gives such an event under ``--require-session-id``."""
    return (pl.col(S.USER) == pl.col(session)).fill_null(False)


def stitched_ids(events: pl.LazyFrame | pl.DataFrame) -> pl.LazyFrame:
    """Each user's latest login id (``--stitch-col``): the last non-null one in time (ties: in input
    order), Snowplow's ``stitched_user_id`` and Segment's identify. Users without one are absent, and so
    are the stand-ins of events without a user id (:func:`stand_in`): Snowplow maps a login id to a
    ``domain_userid``, and a session without one has no ``stitched_user_id``."""
    events = events.lazy()
    logins = pl.col(S.STITCH_ID).is_not_null()
    if S.CLIENT_SESSION in events.collect_schema():
        logins = logins & ~stand_in()
    return (
        events.filter(logins)
        .group_by(S.USER)
        .agg(pl.col(S.STITCH_ID).sort_by(S.TIME, maintain_order=True).last().alias(S.STITCHED_USER_ID))
    )


def _core_sessions(events: pl.LazyFrame, settings: SessionSettings) -> pl.LazyFrame:
    """The session table without its enrichment: the only part of the build that reads the events."""
    rules = settings.rules
    if rules.split_on_campaign:
        events = add_campaign_key(events)
    return events.pipe(
        assign_sessions,
        timeout=settings.timeout,
        max_session_length=rules.max_session_length,
        split_at_midnight=rules.split_at_midnight,
        timezone=rules.timezone,
        campaign_col=CAMPAIGN if rules.split_on_campaign else None,
        label=False,
    ).pipe(
        summarize_sessions,
        conversion_events=settings.conversion_events,
        event_counts=settings.event_counts,
        engaged=settings.engaged,
        aggregates=settings.aggregates,
    )


def _enriched_sessions(
    sessions: pl.LazyFrame, settings: SessionSettings, *, exclude_bots: bool = False
) -> pl.LazyFrame:
    """:func:`_core_sessions`' table with attribution, user agent, bots (left out with ``exclude_bots``)
    and the ``before-geo`` anonymization: :func:`build_sessions` up to the geo lookup. Without
    ``exclude_bots`` it only adds and replaces columns: :func:`sessionize_partition` joins the geo
    columns by the sessions' rows as they were before it."""
    sessions = sessions.pipe(
        enrich_attribution,
        referers=settings.referers if settings.referers is not None else default_referers(),
        internal_domains=settings.internal_domains,
        channel_rules=settings.rules.channel_rules,
    )
    # A session that fetched /robots.txt is a bot's whatever its user agent says, and so is its device:
    # every bot's device_category is "bot" (its browser and os stay what the user agent says).
    is_bot = pl.col("is_bot") | pl.col(ROBOTS_TXT)
    sessions = enrich_user_agent(sessions).with_columns(
        is_bot.alias("is_bot"),
        pl.when(is_bot).then(pl.lit(BOT)).otherwise(pl.col("device_category")).alias("device_category"),
    )
    if exclude_bots:
        sessions = sessions.filter(~pl.col("is_bot"))
    if settings.anonymize_ip == "before-geo":
        sessions = anonymize_ips(sessions)
    return sessions


def _sessions_after_geo(
    sessions: pl.LazyFrame,
    *,
    anonymize_ip: AnonymizeIp | None,
    keep_geo_status: bool,
    extra: Sequence[str] = (),
    stitched: pl.LazyFrame | None = None,
    stitch_fallback: bool = False,
    strip_ports: bool = True,
) -> pl.LazyFrame:
    """:func:`build_sessions` after the geo lookup: the ``after-geo`` anonymization and the columns
    (``stitched``: each user's login id, :func:`stitched_ids`, else with ``stitch_fallback`` the user
    id itself, Snowplow's rule; ``extra``: the counts, after them)."""
    if anonymize_ip == "after-geo":
        sessions = anonymize_ips(sessions)
    elif anonymize_ip is None and strip_ports:
        # The client's address without the port a proxy may have written after it (anonymized ones
        # have none); the lookup read it through the port.
        sessions = sessions.with_columns(
            pl.col(S.IP).map_batches(client_addresses, return_dtype=pl.String, is_elementwise=True)
        )
    columns: list[str] = [*SESSION_COLUMN_NAMES]
    if stitched is not None:
        sessions = sessions.join(stitched, on=S.USER, how="left", maintain_order="left")
        if stitch_fallback:
            # (Not a stand-in's: Snowplow's fallback is the domain_userid, which such a session lacks.)
            own = pl.when(~stand_in(S.SESSION_ID)).then(pl.col(S.USER))
            sessions = sessions.with_columns(pl.coalesce(S.STITCHED_USER_ID, own).alias(S.STITCHED_USER_ID))
        columns.append(S.STITCHED_USER_ID)
    return sessions.select(*columns, *extra, *([geo.STATUS] if keep_geo_status else []))


@dataclass(frozen=True)
class SessionSettings:
    """Everything :func:`sessionize_partition` needs besides the events (the run's session options)."""

    timeout: timedelta = S.DEFAULT_TIMEOUT
    rules: SessionRules = field(default_factory=SessionRules)
    geo_database: GeoDatabase | None = None
    anonymize_ip: AnonymizeIp | None = None
    referers: RefererDatabase | None = None
    internal_domains: tuple[str, ...] = ()
    conversion_events: tuple[str, ...] = ()
    #: ``--count-events``: (column, event name) pairs.
    event_counts: tuple[tuple[str, str], ...] = ()
    #: ``--agg``: further columns, after the counts.
    aggregates: tuple[S.Aggregate, ...] = ()
    #: How ``engaged_time_s`` is measured.
    engaged: S.EngagedTime = field(default_factory=S.EngagedTime)
    #: Identity stitching: the events have ``_stitch_id``, the sessions get ``stitched_user_id``.
    stitching: bool = False
    #: ``--stitch-fallback``: a user without a login id is stitched to their own user id (Snowplow).
    stitch_fallback: bool = False
    #: The events report their engagement time (``_engagement_ms``): GA4's rule for engaged time.
    engagement: bool = False
    #: The events carry the page view id (``_page_view_id``) and the heartbeat time (``_heartbeat_time``)
    #: that heartbeats are grouped and counted by (Snowplow's rule for engaged time).
    page_view_ids: bool = False
    heartbeat_time: bool = False
    #: Look the addresses up in a thread while the sessions are built (faster), or after them (less
    #: memory at once: the bucketed path, which keeps within a budget).
    overlap_geo: bool = True


#: Events handed over to the partition step: a list of the one frame, which the step takes out, so that
#: the caller keeps no reference and the frame is freed as soon as the step no longer needs it (the
#: in-memory engine's 10M events, 1.2 GiB, are gone before the geo join and the output).
Handed = list[pl.DataFrame]


def _taken(events: pl.DataFrame | Handed) -> pl.DataFrame:
    return events.pop() if isinstance(events, list) else events


def sessionize_partition(events: pl.DataFrame | Handed, settings: SessionSettings) -> pl.DataFrame:
    """The session table of a canonical events frame that holds every event of each of its users.

    The engine-neutral step: the in-memory path calls it once on all events, the bucketed path once
    per bucket, and a distributed engine once per partition of users; the union of the results is
    the same. Events must already be validated (:func:`sessionize.io.read_file`) and de-duplicated
    (:func:`sessionize.io.drop_duplicate_events`). The result has the session table's columns plus
    ``_geo_status`` (the IP lookup's outcome), sorted by user and session number. ``events`` as a
    :data:`Handed` list is released once the sessions are built.
    """
    events = _taken(events)
    after_geo = functools.partial(
        _sessions_after_geo,
        anonymize_ip=settings.anonymize_ip,
        keep_geo_status=True,
        extra=extra_columns(settings),
        # Computed now (one row per user with a login id): the plan would hold every event until the end.
        stitched=stitched_ids(events).collect(engine="in-memory").lazy() if settings.stitching else None,
        stitch_fallback=settings.stitch_fallback,
        strip_ports=False,  # done on the collected table: see _without_ports
    )
    # The columns the session build does not read go now rather than when it ends (the event names alone
    # are 160 MB of 10M events, held through the build's peak).
    events = events.drop(*unread_columns(settings), strict=False)
    database = settings.geo_database
    if database is None or settings.anonymize_ip == "before-geo" or not settings.overlap_geo:
        # Nothing to look up, the addresses to look up are the sessions' anonymized ones, or memory
        # comes first. The core table is collected on its own, so that the events are freed before
        # the enrichment (see below).
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sessionize-ports") as pool:
            ports = pool.submit(_any_port, events.get_column(S.IP, default=None), settings)
            built = _core_sessions(events.lazy(), settings).collect(engine="in-memory")
            del events
            located = _enriched_sessions(built.lazy(), settings).pipe(enrich_geo, database=database)
            collected = located.collect(engine="in-memory")
            return after_geo(_without_ports(collected, ports.result()).lazy()).collect(engine="in-memory")
    # A session's address is one of its events' addresses: the events' distinct addresses are looked up
    # in a thread of their own while Polars builds the sessions. The lookup is mostly single-threaded
    # (Python and numpy) and Polars releases the GIL, so the two overlap: on 10M events with 1M
    # addresses this step took 1.1-1.3 s less (bench/README.md).
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sessionize-geo") as pool:
        table = pool.submit(geo.geo_table, events.get_column(S.IP), database)
        # On the same thread once the table is made, while the session rows are built (it idles then).
        ports = pool.submit(_any_port, events.get_column(S.IP, default=None), settings)
        # The events are read by the core table only: collected on its own, the events are freed before
        # the attribution and user agent columns are made (10M events: 1.2 GiB less at that point).
        sessions = _core_sessions(events.lazy(), settings).collect(engine="in-memory")
        del events
        # The sessions' addresses are matched to the table on the same thread, beside the attribution
        # (mostly on one core); only the geo columns are joined after it. Not the whole join: its
        # columns would add 200 MB at the run's peak (10M events: 0.27 s less, 2.5M sessions).
        matched = pool.submit(_match_addresses, sessions.get_column("ip"), table)
        sessions = _enriched_sessions(sessions.lazy(), settings).collect(engine="in-memory")
        sessions = geo.join_geo(sessions, table.result(), database, matched.result())
    return after_geo(_without_ports(sessions, ports.result()).lazy()).collect(engine="in-memory")


def _any_port(ips: pl.Series | None, settings: SessionSettings) -> bool:
    """Whether an event's address has a port after it (see :func:`_sessions_after_geo`); never under
    ``--anonymize-ip`` (the truncated addresses have none). Tested on the events' addresses, in order in
    memory (10M: 0.27 s, on a thread of its own), not on the sessions': gathered from the events, those
    are read in random order, and the same test cost 0.42 s of a 7.2 s default run on the main path."""
    if settings.anonymize_ip is not None or ips is None:
        return False
    return bool(ips.cast(pl.String).str.contains(CLIENT_PORT).any())


def _without_ports(sessions: pl.DataFrame, any_port: bool) -> pl.DataFrame:
    """The sessions with each ``ip`` the client's address without its port, where an event had one."""
    if not any_port:
        return sessions
    at = sessions.get_column_index(S.IP)
    return sessions.replace_column(at, client_addresses(sessions.get_column(S.IP)))


def _match_addresses(ips: pl.Series, table: Future[geo.GeoTable]) -> pl.Series | None:
    """:func:`geo.match_addresses` of the sessions' addresses, once the table is made."""
    return geo.match_addresses(ips, table.result())


def unread_columns(settings: SessionSettings) -> list[str]:
    """The canonical event columns the session build (:func:`sessionize_partition`, after the login ids
    are taken) does not read: the event id (duplicates are gone by then), the login id, and the event
    name unless conversions, heartbeats or event counts look at it."""
    reads_event = reads_event_names(
        conversion_events=settings.conversion_events,
        event_counts=settings.event_counts,
        engaged=settings.engaged,
        aggregates=settings.aggregates,
    )
    return [S.EVENT_ID, S.STITCH_ID, *([] if reads_event else [S.EVENT])]


def build_pageviews(
    events: pl.DataFrame,
    sessions: pl.DataFrame,
    rules: SessionRules,
    timeout: timedelta,
    engaged: S.EngagedTime | None = None,
) -> pl.DataFrame:
    """The page-view table of a canonical events frame and its output session table.

    The events are split into sessions by the same rules and code as the session table
    (:func:`sessionize.core.assign_sessions`), so each page view's ``session_id`` is its session's;
    only the page views of ``sessions`` are kept (``--exclude-bots`` leaves out the bots').
    """
    # Only the columns the sessions and the page views read: the labelled events are every column put
    # in session order, and the others (ip, user agent, event names, ...) would be moved for nothing.
    engaged = engaged or S.EngagedTime()
    lazy = events.lazy().select(
        S.USER,
        S.CLIENT_SESSION,
        S.TIME,
        S.URL,
        S.REFERRER,
        S.IS_PAGEVIEW,
        *([S.EVENT] if engaged.heartbeat_events else []),
        *(
            name
            for name in (S.ENGAGEMENT_MS, S.PAGE_VIEW_KEY, S.HEARTBEAT_TS)
            if name in events.columns and (name == S.ENGAGEMENT_MS or engaged.heartbeat_events)
        ),
    )
    if rules.split_on_campaign:
        lazy = add_campaign_key(lazy)
    labelled = lazy.pipe(
        assign_sessions,
        timeout=timeout,
        max_session_length=rules.max_session_length,
        split_at_midnight=rules.split_at_midnight,
        timezone=rules.timezone,
        campaign_col=CAMPAIGN if rules.split_on_campaign else None,
    )
    return summarize_pageviews(labelled, sessions.lazy(), engaged=engaged).collect(engine="in-memory")


#: The page-view and user table columns that show what a session column shows: left out when
#: ``--drop-columns`` drops that session column, so no table shows what the flag hides.
_SHOWN_BY: dict[str, tuple[str, ...]] = {
    "landing_page": ("page_url", "first_landing_page", "last_landing_page"),
    "exit_page": ("page_url",),
    "referrer": ("page_referrer",),
    "session_start": ("first_seen",),
    "session_end": ("last_seen",),
    "engaged_time_s": ("engaged_time_s",),
    S.STITCHED_USER_ID: (S.STITCHED_USER_ID,),
    **{
        name: (name, f"first_{name}", f"last_{name}")
        for name in ("source_name", "medium", "channel", "utm_campaign")
    },
}


def drop_shown(table: pl.DataFrame, dropped: Sequence[str]) -> pl.DataFrame:
    """A page-view or user table without the columns that show a dropped session column."""
    hidden = {shown for name in dropped for shown in _SHOWN_BY.get(name, (name,))}
    return table.drop(*(c for c in table.columns if c in hidden))


def check_sums(table: pl.DataFrame, aggregates: Sequence[S.Aggregate], *, users: bool = False) -> None:
    """Raise :class:`SumOverflowError` for an ``--agg`` sum of ``table`` (a session table, or with
    ``users`` a user table) beyond the largest 64-bit float: ``inf`` is no sum, and no output should
    carry one the input did not have (a mean never overflows: see :func:`sessionize.core.scaled_sum`).
    The error names the first such row by user id and start, so that every engine names the same one."""
    for aggregate in aggregates:
        name = aggregate.name
        if aggregate.function != "sum" or name not in table.columns:
            continue
        beyond = table.filter(~pl.col(name).is_finite())
        if not beyond.height:
            continue
        keys = [c for c in (S.USER, "first_seen" if users else "session_start") if c in beyond.columns]
        first = beyond.sort(keys, nulls_last=True).row(0, named=True)
        user = f" of user {first[S.USER]!r}" if S.USER in first else ""
        if users:
            where = f"the sessions{user} in the user table (--users-output)"
        else:
            start = first.get("session_start")
            starting = f" that starts {_utc_text(start)}" if start is not None else ""
            where = f"the session{user}{starting}"
        column = aggregate.column
        raise SumOverflowError(
            f"--agg {aggregate.spec}: the values of column {column!r} in {where} add up beyond the largest "
            "64-bit float (about 1.8e308), which no table can hold. Check that column's values (a unit or "
            f"an export gone wrong?) and fix or empty those out of scale; mean({column}), min({column}) and "
            f"max({column}) stay within the values and can be written."
        )


def _utc_text(moment: datetime) -> str:
    """``2024-05-01T10:00:00Z`` (a naive time is UTC's: Spark's, brought back)."""
    utc = moment.astimezone(UTC) if moment.tzinfo is not None else moment
    return utc.replace(tzinfo=None).isoformat() + "Z"


def checked_sums(table: pl.DataFrame, *, aggregates: Sequence[S.Aggregate]) -> pl.DataFrame:
    """``table`` once :func:`check_sums` passed it: for a lazy session table (``LazyFrame.map_batches``)."""
    check_sums(table, aggregates)
    return table


def build_users(sessions: pl.DataFrame, settings: SessionSettings | None = None) -> pl.DataFrame:
    """The user table of output sessions that hold every session of each of their users (with the
    counts and ``--agg`` columns of ``settings`` rolled up)."""
    settings = settings or SessionSettings()
    return summarize_users(
        sessions.lazy(),
        counts=[column for column, _ in settings.event_counts],
        aggregates=settings.aggregates,
    ).collect(engine="in-memory")


@functools.cache
def default_referers() -> RefererDatabase:
    """The packaged referer database, loaded once per process."""
    return load_referers()


@dataclass(frozen=True)
class PartitionJob:
    """Everything the step needs besides the events: sent once to every worker of a cluster."""

    settings: SessionSettings = field(default_factory=SessionSettings)
    dedupe: bool = False
    secret: bytes | None = field(default=None, repr=False)
    exclude_bots: bool = False
    dropped: tuple[str, ...] = ()
    #: Build the page-view table (``--pageviews-output``) and the user table (``--users-output``).
    pageviews: bool = False
    users: bool = False
    #: Hash the client session ids too (``--hash-user-ids`` with ``--require-session-id``: see
    #: :func:`hidden_ids`).
    hash_sessions: bool = False

    def event_schema(self) -> dict[str, pl.DataType]:
        """The columns of the events this job sessionizes."""
        return S.event_schema(
            stitch=self.settings.stitching,
            engagement=self.settings.engagement,
            page_view_ids=self.settings.page_view_ids,
            heartbeat_time=self.settings.heartbeat_time,
            aggregates=self.settings.aggregates,
        )

    @classmethod
    def of(
        cls,
        config: RunConfig,
        *,
        geo_database: GeoDatabase | None,
        referers: RefererDatabase | None = None,
    ) -> Self:
        """The job of a run's config, with the databases the run opened."""
        session = config.session
        return cls(
            settings=SessionSettings(
                timeout=session.timeout,
                rules=SessionRules(
                    max_session_length=session.max_session_length,
                    split_on_campaign=session.split_on_campaign,
                    split_at_midnight=session.split_at_midnight,
                    timezone=session.timezone,
                    channel_rules=session.channel_rules,
                    session_cap=session.session_cap,
                    shared_session_ids=session.shared_session_ids,
                ),
                geo_database=geo_database,
                anonymize_ip=config.privacy.anonymize_ip,
                referers=referers,
                internal_domains=session.internal_domains,
                conversion_events=session.conversion_events,
                event_counts=session.event_counts,
                aggregates=session.aggregates,
                engaged=session.engaged,
                stitching=config.read.stitching,
                stitch_fallback=session.stitch_fallback,
                engagement=config.read.engagement_timing,
                page_view_ids=config.read.page_view_ids,
                heartbeat_time=config.read.heartbeat_timing,
            ),
            dedupe=config.privacy.dedupe,
            secret=config.privacy.secret,
            exclude_bots=config.privacy.exclude_bots,
            dropped=config.privacy.drop_columns,
            pageviews=config.output.pageviews_output is not None,
            users=config.output.users_output is not None,
            hash_sessions=config.read.require_session_id and config.privacy.secret is not None,
        )


@dataclass
class Tally:
    """The summary figures of session tables, added up part by part (:meth:`add`, :meth:`merge`)."""

    sessions: int = 0
    users: int = 0
    bot_sessions: int = 0
    bot_events: int = 0
    #: Sessions per IP lookup outcome: resolved, not_found, private, invalid, missing.
    geo_counts: dict[str, int] = field(default_factory=dict)
    durations: list[pl.Series] = field(default_factory=list)
    #: The durations' sum in whole microseconds and their number (nulls left out), added part by part:
    #: the mean is taken from them, not from every duration at the end (at 100M events, 24.6M durations
    #: and three temporaries as long: 370 MB more at the end of a run in a 1 GiB budget).
    duration_micros: int = 0
    timed: int = 0
    #: Events left out by ``--session-cap`` (the sessions' ``_capped``): counted as filtered out.
    capped: int = 0
    #: The median and mean duration when an engine counted them itself (Spark, on the cluster).
    counted_median_s: float | None = None
    counted_mean_s: float | None = None

    def add(
        self, table: pl.DataFrame, *, exclude_bots: bool = False, dropped: Sequence[str] = ()
    ) -> pl.DataFrame:
        """Count a part with ``_geo_status`` (every session, bots too) and return its output rows.

        The sessions of each user must be next to each other, as :func:`sessionize_partition` gives them.
        """
        if CAPPED in table.columns:
            self.capped += int(table.get_column(CAPPED).sum())
            table = table.drop(CAPPED)
        bots = table.filter(pl.col("is_bot"))
        self.bot_sessions += bots.height
        self.bot_events += int(bots.get_column("event_count").sum())
        if exclude_bots:
            table = table.filter(~pl.col("is_bot"))
        for status, count in table.get_column(geo.STATUS).drop_nulls().value_counts().iter_rows():
            self.geo_counts[status] = self.geo_counts.get(status, 0) + count
        self.sessions += table.height
        # A user's sessions are all in one part, so users add up; within the part they are next to each
        # other (sessionize_partition's order), so users are counted where the user id changes: 20 ms
        # for 2.5M sessions, against 0.3-0.6 s for n_unique.
        users = table.get_column(S.USER)
        self.users += int(users.ne_missing(users.shift()).sum()) + int(users.len() > 0 and users[0] is None)
        durations = table.get_column("duration_s")
        self.durations.append(durations)
        # Durations are whole microseconds: their sum is exact, so the mean is the same figure on every
        # engine, whatever order the buckets or partitions come in (a float sum's last digit is not).
        self.duration_micros += int((durations * 1_000_000).round().cast(pl.Int64).sum())
        self.timed += durations.len() - durations.null_count()
        return table.drop(geo.STATUS, *dropped)

    def merge(self, other: Tally) -> Tally:
        """Add another part's tally (its users are not in this one's)."""
        self.sessions += other.sessions
        self.users += other.users
        self.bot_sessions += other.bot_sessions
        self.bot_events += other.bot_events
        self.capped += other.capped
        for status, number in other.geo_counts.items():
            self.geo_counts[status] = self.geo_counts.get(status, 0) + number
        self.durations.extend(other.durations)
        self.duration_micros += other.duration_micros
        self.timed += other.timed
        return self

    @property
    def median_duration_s(self) -> float | None:
        if self.counted_median_s is not None:
            return self.counted_median_s
        return median_of(self.durations)

    @property
    def mean_duration_s(self) -> float | None:
        if self.counted_mean_s is not None:
            return self.counted_mean_s
        return mean_of_microseconds(self.duration_micros, self.timed) if self.timed else None


def median_of(parts: Sequence[pl.Series]) -> float | None:
    """The median of the values of ``parts`` (nulls left out), as Polars' ``median`` gives it: the
    middle value, or between the two middle ones ``low + (high - low) * 0.5``.

    Found by selection (``numpy.partition``) in their concatenation, where ``median`` sorts a copy of
    it: 24.6M durations, 266 ms against 475 ms (2.5M: 26 against 36 ms), at the very end of every run.
    """
    import numpy as np

    arrays = [part.drop_nulls().cast(pl.Float64).to_numpy() for part in parts]
    values = np.concatenate(arrays) if arrays else np.zeros(0)
    del arrays
    if not values.size:
        return None
    middle = values.size // 2
    if values.size % 2:
        values.partition(middle)
        return float(values[middle])
    values.partition((middle - 1, middle))
    low, high = float(values[middle - 1]), float(values[middle])
    return low if low == high else low + (high - low) * 0.5


def mean_of_microseconds(total: int, count: int) -> float:
    """The mean duration in seconds of ``count`` sessions lasting ``total`` microseconds in all."""
    return total / count / 1_000_000


@dataclass
class PartitionResult:
    """One partition's sessions (the output rows) and its counts."""

    sessions: pl.DataFrame
    tally: Tally
    #: Events sessionized, and duplicate events dropped before.
    events: int
    duplicates: int
    #: Every session with ``_geo_status``, bots included, before any column is dropped (``keep_all``).
    all_sessions: pl.DataFrame | None = None
    #: The page views and users of the partition's output sessions, when the job asks for them.
    pageviews: pl.DataFrame | None = None
    users: pl.DataFrame | None = None


def hash_ids(events: pl.DataFrame, job: PartitionJob) -> pl.DataFrame:
    """The events with their user ids hashed when the job says so (``--hash-user-ids``), and the
    copies of hidden values in ``--agg``'s inputs hidden (:func:`hidden_copies`)."""
    if job.settings.aggregates:
        events = hidden_copies(events.lazy(), job).collect(engine="in-memory")
    if job.secret is None:
        return events
    hidden = hidden_ids(
        events.lazy(), job.secret, stitching=S.STITCH_ID in events.columns, sessions=job.hash_sessions
    )
    return hidden.collect(engine="in-memory")


def hidden_copies(events: pl.LazyFrame, job: PartitionJob, *, ids: bool = True) -> pl.LazyFrame:
    """The text that ``--agg`` reads (``first``, ``last``, ``min``, ``max`` write it) with each cell that
    copies a value the privacy options hide in the same event (PostHog's SDK sends the user id again as
    ``properties.distinct_id``, and the address as ``properties.$ip``) hidden as that value is: the
    user id's hash (the login id's; every session id's too with ``--require-session-id``, see
    :func:`hidden_ids`) under ``--hash-user-ids``, the truncated address under ``--anonymize-ip``. The
    rejects file hides such copies the same way (:func:`sessionize.io.read._private_rejects`). Run
    before the ids are hashed: it compares them as read (with ``ids`` false, only the address's copies:
    a truncated address is truncated again as it was, a hashed id would be hashed again)."""
    schema = events.collect_schema()
    inputs = [
        name
        for (_, numeric), name in S.aggregate_inputs(job.settings.aggregates).items()
        if not numeric and schema.get(name) == pl.String
    ]
    hidden: list[tuple[str, Hide]] = []
    if ids and job.secret is not None:
        secret = job.secret

        def hashed(frame: pl.LazyFrame, column: str) -> pl.LazyFrame:
            return hash_user_ids(frame, secret=secret, column=column)

        hashed_ids = [S.USER, S.STITCH_ID, *([S.CLIENT_SESSION] if job.hash_sessions else [])]
        hidden += [(column, hashed) for column in hashed_ids if schema.get(column) == pl.String]
    if job.settings.anonymize_ip and schema.get(S.IP) == pl.String:
        hidden.append((S.IP, anonymize_ips))
    return hide_copies(events, inputs, hidden)


def hidden_ids(
    events: pl.LazyFrame, secret: bytes, *, stitching: bool, sessions: bool = False
) -> pl.LazyFrame:
    """Events with their user ids, login ids and the client session ids that stand in for a user id hashed.

    ``--require-session-id`` gives a row without a user id its session id as one
    (:func:`sessionize.normalize.keyed_by_session`): ``sessions`` (set then) hashes every client session
    id as a user id is, since no row tells which of them stands in for a user somewhere: under
    ``--shared-session-ids split`` that id is another user's session id too, and a rejected row may hold
    it in another column (review 53). Otherwise a client session id equal to its row's user id takes the
    user id's hash, else every table would show the hash as ``user_id`` beside the id itself as
    ``session_id``. The hash is the user id's, so a stand-in's session and user ids stay one value."""
    client, user = pl.col(S.CLIENT_SESSION), pl.col(S.USER)
    flag = fresh_name("_stand_in", events.collect_schema().names())
    if sessions:
        hashed = hash_user_ids(hash_user_ids(events, secret=secret), secret=secret, column=S.CLIENT_SESSION)
    else:
        hashed = hash_user_ids(events.with_columns(stand_in().alias(flag)), secret=secret)
        hashed = hashed.with_columns(pl.when(flag).then(user).otherwise(client).alias(S.CLIENT_SESSION))
    if stitching:
        # The login id is a user id too: never in the clear where the user ids are hashed.
        hashed = hash_user_ids(hashed, secret=secret, column=S.STITCH_ID)
    return hashed.drop(flag, strict=False)


#: With ``--anonymize-ip`` (after the geo lookup) events kept on disk (the incremental state, the
#: bucket spill) hold truncated addresses, and beside each the place its full address was located at
#: (the lookup's outcome only, without a database): a session is then located as if its first
#: event's full address were there, and no full address is written anywhere.
STORED_GEO = {f"_stored_{name}": name for name in (*geo.GEO_COLUMNS, geo.STATUS)}
#: Whether an event's stored geo columns hold its full address's outcome (null: stored without them).
LOCATED = "_stored_located"
STORED_GEO_COLUMNS = (*STORED_GEO, LOCATED)


def keeps_located_addresses(job: PartitionJob) -> bool:
    return job.settings.anonymize_ip == "after-geo"


def protect_addresses(events: pl.DataFrame, job: PartitionJob) -> pl.DataFrame:
    """Events about to be written to disk, with no full address when the job anonymizes them:
    located first (after-geo), then truncated."""
    if job.settings.anonymize_ip is None:
        return events
    lazy = hidden_copies(events.lazy(), job, ids=False)  # (the address's copies in --agg's inputs too)
    if keeps_located_addresses(job):
        lazy = enrich_geo(lazy, database=job.settings.geo_database).rename(
            {column: name for name, column in STORED_GEO.items()}
        )
        lazy = lazy.with_columns(pl.lit(True).alias(LOCATED))
    return anonymize_ips(lazy, S.IP).collect(engine="in-memory")


def with_stored_geo(events: pl.DataFrame) -> pl.DataFrame:
    """Events with the stored geo columns (null where they were stored without them)."""
    missing = [name for name in STORED_GEO if name not in events.columns]
    events = events.with_columns(pl.lit(None, pl.String).alias(name) for name in missing)
    if LOCATED not in events.columns:
        events = events.with_columns(pl.lit(None, pl.Boolean).alias(LOCATED))
    return events


def _geo_of_first_events(sessions: pl.DataFrame, events: pl.DataFrame) -> pl.DataFrame:
    """The sessions' geo columns from where their first event's full address was located (the step
    looked up the truncated addresses)."""
    firsts = (
        events.sort(S.USER, S.TIME, maintain_order=True)
        .unique(subset=[S.USER, S.TIME], keep="first", maintain_order=True)
        .select(S.USER, pl.col(S.TIME).alias("session_start"), *STORED_GEO_COLUMNS)
    )
    joined = sessions.join(firsts, on=[S.USER, "session_start"], how="left", maintain_order="left")
    known = pl.col(LOCATED).fill_null(False)
    return joined.with_columns(
        pl.when(known).then(pl.col(stored)).otherwise(pl.col(column)).alias(column)
        for stored, column in STORED_GEO.items()
    ).drop(*STORED_GEO_COLUMNS)


def process_partition(
    events: pl.DataFrame | Handed,
    job: PartitionJob,
    *,
    prepared: bool = False,
    keep_all: bool = False,
    settings: SessionSettings | None = None,
    check: bool = True,
) -> PartitionResult:
    """The sessions of a canonical events frame that holds every event of each of its users.

    Events must be validated (:func:`sessionize.io.read_file`). ``prepared`` says that the shared
    session ids were given their owners, duplicates dropped, :func:`hash_ids` applied and the session
    cap too (the incremental engine does all of it before it compares with its state, and counts what
    the cap leaves out itself). ``settings`` overrides the job's (a budgeted engine looks addresses up
    after the sessions, not beside them). ``events`` as a :data:`Handed` list is released as soon as
    the step no longer needs it (with the page-view table, or addresses located before they were
    truncated, not before the end). ``check`` raises :class:`SumOverflowError` for an ``--agg`` sum
    beyond the largest float (:func:`check_sums`): the Spark engine checks on the driver instead, where
    its errors are raised as they are.
    """
    events = _taken(events)
    before = events.height
    if not prepared:
        if job.settings.rules.merges_session_ids:
            # Before the ids are hashed: the owner is chosen from the ids as read, on every path.
            events = job.settings.rules.claim(events)
        events = hash_ids(drop_duplicate_events(events, dedupe=job.dedupe), job)
    deduplicated = events.height
    cap = None if prepared else job.settings.rules.session_cap
    events, capped = cap_sessions(events, cap)
    count = events.height
    kept = events if job.pageviews else None
    if LOCATED in events.columns:
        table = _geo_of_first_events(
            sessionize_partition(events.select(*job.event_schema()), settings or job.settings), events
        )
    else:
        handed = [events]
        del events
        table = sessionize_partition(handed, settings or job.settings)
    if cap is not None:
        table = _with_capped(table, capped)
    tally = Tally()
    sessions = tally.add(table, exclude_bots=job.exclude_bots, dropped=())
    pageviews = users = None
    if kept is not None:
        chosen = settings or job.settings
        pageviews = build_pageviews(
            kept.select(*job.event_schema()), sessions, chosen.rules, chosen.timeout, chosen.engaged
        )
        pageviews = drop_shown(pageviews, job.dropped)
    if job.users:
        users = drop_shown(build_users(sessions, job.settings), job.dropped)
    output = sessions.drop(*job.dropped)
    if check:
        check_sums(output, job.settings.aggregates)
        if users is not None:
            check_sums(users, job.settings.aggregates, users=True)
    return PartitionResult(
        sessions=output,
        tally=tally,
        events=count,
        duplicates=before - deduplicated,
        all_sessions=table if keep_all else None,
        pageviews=pageviews,
        users=users,
    )


def process_lazy(events: pl.LazyFrame, job: PartitionJob) -> pl.LazyFrame:
    """The step of :func:`process_partition` on a LazyFrame, without the tally: the session table
    of validated canonical events, for :func:`sessionize.sessionize` (bots left out and columns
    dropped as the job says)."""
    if job.settings.rules.merges_session_ids:
        events = job.settings.rules.claim(events)
    events = cap_lazy(drop_duplicate_events(events, dedupe=job.dedupe), job.settings.rules.session_cap)
    events = hidden_copies(events, job)
    if job.secret is not None:
        events = hidden_ids(events, job.secret, stitching=job.settings.stitching, sessions=job.hash_sessions)
    settings = job.settings
    sessions = build_sessions(
        events,
        timeout=settings.timeout,
        geo_database=settings.geo_database,
        anonymize_ip=settings.anonymize_ip,
        referers=settings.referers,
        internal_domains=settings.internal_domains,
        conversion_events=settings.conversion_events,
        rules=settings.rules,
        exclude_bots=job.exclude_bots,
        event_counts=settings.event_counts,
        engaged=settings.engaged,
        stitching=settings.stitching,
        aggregates=settings.aggregates,
        stitch_fallback=settings.stitch_fallback,
    )
    sessions = sessions.drop(*job.dropped)
    if any(a.function == "sum" and a.name not in job.dropped for a in settings.aggregates):
        # Checked as the table is collected: only the rows and columns asked for (pushed down).
        check = functools.partial(checked_sums, aggregates=settings.aggregates)
        sessions = sessions.map_batches(
            check, predicate_pushdown=True, projection_pushdown=True, slice_pushdown=True
        )
    return sessions


def empty_sessions(job: PartitionJob) -> pl.DataFrame:
    """The output table with no rows (the columns the job keeps)."""
    return pl.DataFrame(schema=session_schema(job.settings)).drop(*job.dropped)


def session_schema(settings: SessionSettings) -> dict[str, pl.DataType]:
    """The session table's columns with these settings: the built-in ones, the stitched user id, the
    counts."""
    stitched: dict[str, pl.DataType] = {S.STITCHED_USER_ID: pl.String()} if settings.stitching else {}
    counts: dict[str, pl.DataType] = {column: pl.UInt32() for column, _ in settings.event_counts}
    return {**S.SESSION_SCHEMA, **stitched, **counts, **{a.name: a.dtype for a in settings.aggregates}}


def user_table_inputs(settings: SessionSettings) -> list[str]:
    """The session columns :func:`build_users` reads with these settings."""
    return [*USER_TABLE_INPUTS, *extra_columns(settings)]


def extra_columns(settings: SessionSettings) -> list[str]:
    """The session columns after the built-in ones and ``stitched_user_id``: the counts, the ``--agg``."""
    return [*(column for column, _ in settings.event_counts), *(a.name for a in settings.aggregates)]


__all__ = [
    "PartitionJob",
    "PartitionResult",
    "SessionRules",
    "SessionSettings",
    "Tally",
    "build_pageviews",
    "build_sessions",
    "build_users",
    "check_sums",
    "default_referers",
    "hash_ids",
    "process_lazy",
    "process_partition",
    "sessionize_partition",
]
