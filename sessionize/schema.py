"""Column names, defaults and the output schema: the contract between input, core and output."""

from __future__ import annotations

import difflib
import itertools
import math
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import timedelta
from typing import Final, Literal

import polars as pl

from sessionize.errors import MissingColumnError, UsageError

#: The input formats (``--input-format``) and output formats (``--format``).
InputFormat = Literal[
    "csv", "tsv", "parquet", "ndjson", "combined", "common", "vhost_combined", "log", "snowplow"
]
OutputFormat = Literal["parquet", "csv", "ndjson"]
#: What --input-format accepts; ``log`` (a ``.log`` file) means "an access log format, by its lines".
#: ``snowplow``: Snowplow's enriched events, headerless TSV (io/snowplow.py; detected in a ``.tsv``).
INPUT_FORMATS: tuple[InputFormat, ...] = (
    "csv",
    "tsv",
    "parquet",
    "ndjson",
    "combined",
    "common",
    "vhost_combined",
    "snowplow",
)
OUTPUT_FORMATS: tuple[OutputFormat, ...] = ("parquet", "csv", "ndjson")

DEFAULT_TIMEOUT = timedelta(minutes=30)
DEFAULT_PAGEVIEW_EVENTS: tuple[str, ...] = ("page_view", "pageview", "$pageview", "page")
#: GA4 counts a session as engaged once it lasts longer than this ("longer than 10 seconds").
ENGAGED_DURATION_S = 10.0
#: Without heartbeat events, a session's engaged time adds the gaps between its events, each capped here.
ENGAGED_GAP_CAP_S = 300.0


@dataclass(frozen=True)
class EngagedTime:
    """How ``engaged_time_s`` is measured (see docs/metrics.md).

    With ``heartbeat_events`` (Snowplow's ``page_ping``): per page view, its heartbeats fall in windows of
    ``heartbeat_s``; its engaged time is ``heartbeat_s`` x (distinct windows - 1) + ``min_visit_s``
    (Snowplow's web model), 0 without heartbeats; a session adds its page views'. A heartbeat belongs to
    the page view of its page view id in its session where the events carry one (:data:`PAGE_VIEW_KEY`),
    else to the page view before it in its session; its window is taken on its heartbeat time where the
    events carry one (:data:`HEARTBEAT_TS`, null: its event time), else on its event time. Without: the
    gaps between a session's consecutive events, each capped at ``gap_cap_s``.
    ``threshold_s`` (``--engaged-threshold``) makes ``is_engaged`` read engaged time instead of the
    duration.
    """

    heartbeat_events: tuple[str, ...] = ()
    heartbeat_s: float = 10.0
    min_visit_s: float = 5.0
    gap_cap_s: float = ENGAGED_GAP_CAP_S
    threshold_s: float | None = None


#: The functions of ``--agg NAME=FUNC(COLUMN)``; the numeric ones read the column as numbers.
AGG_FUNCTIONS = ("sum", "mean", "min", "max", "count", "n_unique", "first", "last")
NUMERIC_AGG_FUNCTIONS = ("sum", "mean", "min", "max")
_AGG = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*([A-Za-z_]+)\s*\((.*)\)\s*", re.DOTALL)
_AGG_EVENT = re.compile(r"\s*event\s*=\s*(.*?)\s*", re.DOTALL)


@dataclass(frozen=True)
class Aggregate:
    """One ``--agg NAME=FUNC(COLUMN)``: a column of the session table computed from an input column.

    ``column`` is the input column as given (found like the others: case and punctuation ignored,
    ``properties.revenue`` for a nested JSON field); ``None`` with ``count(*)`` (the events) and with
    ``count(event=VALUE)`` (the events named ``event``, case-insensitive). See docs/metrics.md.
    """

    name: str
    function: str
    column: str | None = None
    event: str | None = None
    #: A preset's: an input without the column gets a null column instead of an error.
    optional: bool = False

    @property
    def numeric(self) -> bool:
        """The input column is read as numbers (text that is not one rejects the row)."""
        return self.function in NUMERIC_AGG_FUNCTIONS

    @property
    def dtype(self) -> pl.DataType:
        """The session column's type."""
        if self.numeric:
            return pl.Float64()
        return pl.String() if self.function in ("first", "last") else pl.UInt32()

    @property
    def spec(self) -> str:
        """As written on the command line."""
        argument = f"event={self.event}" if self.event is not None else (self.column or "*")
        return f"{self.name}={self.function}({argument})"

    def __str__(self) -> str:
        return self.spec


def parse_aggregate(text: str) -> Aggregate:
    """``revenue=sum(properties.revenue)``, ``carts=count(event=add_to_cart)``, ``events=count(*)``."""
    match = _AGG.fullmatch(text)
    example = "--agg revenue=sum(properties.revenue)"
    if match is None:
        raise UsageError(f"--agg {text!r}: write NAME=FUNC(COLUMN), as in {example}.")
    name, function, argument = match.group(1), match.group(2).lower(), match.group(3).strip()
    if function not in AGG_FUNCTIONS:
        close = difflib.get_close_matches(function, AGG_FUNCTIONS, n=1)
        raise UsageError(
            f"--agg {text!r}: no function {function!r}"
            + (f" (did you mean {close[0]!r}?)" if close else "")
            + f". The functions are: {', '.join(AGG_FUNCTIONS)}."
        )
    event = _AGG_EVENT.fullmatch(argument)
    if event is not None:
        if function != "count" or not event.group(1):
            raise UsageError(
                f"--agg {text!r}: event=VALUE goes with count: --agg carts=count(event=add_to_cart)."
            )
        return Aggregate(name, function, event=event.group(1))
    if argument in ("", "*"):
        if function != "count":
            raise UsageError(f"--agg {text!r}: {function} needs a column: {example}.")
        return Aggregate(name, function)
    return Aggregate(name, function, column=argument)


def aggregates_of(value: object) -> list[Aggregate]:
    """The ``aggregates`` option in any of its forms as Aggregates: one spec, specs or Aggregates, or a
    mapping ``{"revenue": "sum(properties.revenue)"}``; None is none."""
    if value is None:
        return []
    if isinstance(value, Mapping):
        return [parse_aggregate(f"{name}={spec}") for name, spec in value.items()]
    items = [value] if isinstance(value, str | Aggregate) else value
    if not isinstance(items, Iterable):
        raise UsageError(f"--agg: {value!r} is not a spec such as revenue=sum(properties.revenue).")
    return [item if isinstance(item, Aggregate) else parse_aggregate(str(item)) for item in items]


def aggregate_inputs(aggregates: Iterable[Aggregate]) -> dict[tuple[str, bool], str]:
    """The event column that carries each input column the aggregates read, numeric or as text:
    ``(column, numeric) -> "_agg0"``, numbered in order of first use."""
    inputs: dict[tuple[str, bool], str] = {}
    for aggregate in aggregates:
        if aggregate.column is not None:
            inputs.setdefault((aggregate.column, aggregate.numeric), f"_agg{len(inputs)}")
    return inputs


#: The session columns the user table shows from the first and the last session (``first_channel``).
TOUCH_COLUMNS = ("landing_page", "source_name", "medium", "channel", "utm_campaign")
#: The user table's own columns (docs/tables.md), which no ``--agg`` or ``--count-events`` may take.
USER_TABLE_COLUMNS = (
    "user_id",
    "first_seen",
    "last_seen",
    "sessions",
    "events",
    "page_views",
    *(f"{end}_{name}" for end in ("first", "last") for name in TOUCH_COLUMNS),
    "country",
    "engaged_time_s",
)

#: Columns the incremental output adds (``is_final``) and its partitions' key (``session_date``, also
#: Spark's ``--partition-by-date``): no ``--agg`` or ``--count-events`` column may take their names.
OUTPUT_COLUMNS = ("is_final", "session_date")

#: The timestamp type of every output time column: UTC instants with microsecond precision.
TIMESTAMP = pl.Datetime("us", "UTC")

# Canonical names of the event columns after normalization.
USER = "user_id"
#: The user id an access log's lines get: the visitor (address and user agent; see sessionize.accesslog).
VISITOR = "visitor_id"
TIME = "timestamp"
URL = "url"
REFERRER = "referrer"
IP = "ip"
EVENT = "event"
CLIENT_SESSION = "client_session_id"
EVENT_ID = "event_id"
USER_AGENT = "user_agent"
#: True for a page view, False for other events, null for *page activity* that is not a page view
#: (``--page-activity-events``: Snowplow's page pings): it counts for the landing and exit pages, not as a
#: page view.
IS_PAGEVIEW = "is_pageview"
#: The role of the page view id column (Snowplow's web_page context ``id``), and the event column it
#: becomes when engaged time is measured from heartbeats (they are grouped by it; see :func:`event_schema`).
PAGE_VIEW_ID = "page_view_id"
PAGE_VIEW_KEY = "_page_view_id"
#: The role of ``--heartbeat-time-col`` (Snowplow's ``dvce_created_tstamp``: the time a heartbeat's windows
#: are counted on), and the event column it becomes with heartbeats (a timestamp, null: the event time).
HEARTBEAT_TIME = "heartbeat_time"
HEARTBEAT_TS = "_heartbeat_time"
#: The role of ``--stitch-col`` (the login id: Snowplow's and Segment's ``user_id``), and the event
#: column it becomes when identity stitching is on (see :func:`event_schema`).
STITCH = "stitch"
STITCH_ID = "_stitch_id"
#: The session column identity stitching adds.
STITCHED_USER_ID = "stitched_user_id"
#: The role of ``--user-fallback-col`` (the login id: Segment's ``userId``, Amplitude's ``user_id``):
#: its value is the user id of an event whose user column is empty (see :attr:`ColumnMap.user_fallback`).
USER_FALLBACK = "user_fallback"
#: The role of ``--engagement-time-col`` (GA4's ``engagement_time_msec``: milliseconds of foreground time
#: an event reports), and the event column it becomes (a float of milliseconds).
ENGAGEMENT = "engagement_time"
ENGAGEMENT_MS = "_engagement_ms"
#: The role of ``--ignore-referrer-col`` (GA4's ``ignore_referrer`` event parameter: ``true`` on an
#: event whose referrer GA4 ignores, an unwanted referral): that event has no referrer.
IGNORE_REFERRER = "ignore_referrer"
SESSION_ID = "session_id"
#: Hidden column of the session summary, read by attribution and dropped by it: the URL of the event
#: whose referrer a session without a page view takes (its first event), null when the session has a
#: page view (its referrer is then the landing page view's). The "internal referrer" test compares the
#: referrer's host with this page's host, as it does with the landing page's.
REFERRER_PAGE = "_referrer_page"

#: Names recognised for each input column, in order of preference. Matching ignores case and any
#: character that is not a letter or digit, so ``userId``, ``user_id`` and ``User ID`` all match; a column
#: named exactly as one of them wins over such a look-alike (see :func:`resolve_columns`).
#: Besides the usual names this covers Segment, Snowplow and PostHog exports.
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    USER: (
        "user_id",
        "anonymous_id",
        "visitor_id",
        "client_id",
        "domain_userid",
        # GA4's BigQuery export: the device's pseudonymous id (its user_id is the login id, taken first).
        "user_pseudo_id",
        "distinct_id",
        "uid",
        "user",
    ),
    TIME: (
        "timestamp",
        "ts",
        "time",
        "event_time",
        "event_timestamp",
        "received_at",
        "derived_tstamp",
        "collector_tstamp",
        "datetime",
    ),
    URL: ("url", "page_url", "page", "$current_url", "page_location", "uri", "context_page_url"),
    REFERRER: (
        "referrer",
        "referer",
        "page_referrer",
        "$referrer",
        "http_referer",
        "context_page_referrer",
    ),
    IP: ("ip", "ip_address", "context_ip", "user_ipaddress", "$ip", "client_ip", "remote_addr"),
    EVENT: ("event", "event_name", "type", "event_type"),
    CLIENT_SESSION: ("session_id", "domain_sessionid", "$session_id", "sessionid"),
    EVENT_ID: ("event_id", "message_id", "id", "$insert_id", "uuid"),
    USER_AGENT: ("user_agent", "useragent", "context_user_agent", "http_user_agent", "$user_agent", "ua"),
    # The login id of identity stitching: only a column named with --stitch-col or a preset.
    STITCH: (),
    # GA4's engagement_time_msec: only named with --engagement-time-col or the ga4 preset.
    ENGAGEMENT: (),
    # GA4's ignore_referrer: only named with --ignore-referrer-col or the ga4 preset.
    IGNORE_REFERRER: (),
    # Snowplow: the web_page context's id, as a column of its own or the context column of a warehouse
    # table (Snowflake: JSON text; BigQuery: an array of structs).
    PAGE_VIEW_ID: (
        "page_view_id",
        "pageview_id",
        "contexts_com_snowplowanalytics_snowplow_web_page_1",
        "contexts_com_snowplowanalytics_snowplow_web_page_1_0_0",
    ),
    # The time of a heartbeat's window (Snowplow: dvce_created_tstamp): only named with
    # --heartbeat-time-col or the snowplow preset.
    HEARTBEAT_TIME: (),
}

#: The CLI flag that names each input column.


@dataclass(frozen=True)
class ColumnNames:
    """Input column names given by the user (``None``: found by the usual names), one field a role.

    Each field is the flag ``--<field>-col`` of ``sessionize run`` and the keyword ``<field>_col``
    of the Python API; this class is the one list of them.
    """

    user: str | None = field(default=None, metadata={"role": USER})
    time: str | None = field(default=None, metadata={"role": TIME})
    url: str | None = field(default=None, metadata={"role": URL})
    referrer: str | None = field(default=None, metadata={"role": REFERRER})
    ip: str | None = field(default=None, metadata={"role": IP})
    event: str | None = field(default=None, metadata={"role": EVENT})
    session: str | None = field(default=None, metadata={"role": CLIENT_SESSION})
    user_agent: str | None = field(default=None, metadata={"role": USER_AGENT})
    event_id: str | None = field(default=None, metadata={"role": EVENT_ID})
    page_view_id: str | None = field(default=None, metadata={"role": PAGE_VIEW_ID})
    stitch: str | None = field(default=None, metadata={"role": STITCH})
    engagement_time: str | None = field(default=None, metadata={"role": ENGAGEMENT})
    heartbeat_time: str | None = field(default=None, metadata={"role": HEARTBEAT_TIME})
    ignore_referrer: str | None = field(default=None, metadata={"role": IGNORE_REFERRER})

    @classmethod
    def of(cls, options: Mapping[str, object]) -> ColumnNames:
        """From the ``*_col`` keywords among ``options`` (others are ignored)."""
        return cls(**{f.name: options.get(f"{f.name}_col") for f in fields(cls)})  # type: ignore[arg-type]

    def column_options(self) -> dict[str, str | None]:
        """As keywords: ``{"user_col": ..., ...}``."""
        return {f"{f.name}_col": getattr(self, f.name) for f in fields(self)}

    def by_role(self) -> dict[str, str | None]:
        """The given names by canonical role (``user_id``, ``timestamp``, ...)."""
        return {f.metadata["role"]: getattr(self, f.name) for f in fields(self)}


#: The flag that names each role's column (``--user-col``).
COLUMN_FLAGS: dict[str, str] = {
    f.metadata["role"]: f"--{f.name.replace('_', '-')}-col" for f in fields(ColumnNames)
}

#: The canonical events frame that the core works on (output of ``prepare_events``).
EVENT_SCHEMA: dict[str, pl.DataType] = {
    USER: pl.String(),
    TIME: TIMESTAMP,
    URL: pl.String(),
    REFERRER: pl.String(),
    IP: pl.String(),
    EVENT: pl.String(),
    CLIENT_SESSION: pl.String(),
    EVENT_ID: pl.String(),
    USER_AGENT: pl.String(),
    IS_PAGEVIEW: pl.Boolean(),
}


def event_schema(
    *,
    stitch: bool = False,
    engagement: bool = False,
    page_view_ids: bool = False,
    heartbeat_time: bool = False,
    aggregates: Iterable[Aggregate] = (),
) -> dict[str, pl.DataType]:
    """The canonical events frame's columns: :data:`EVENT_SCHEMA`, the login id with stitching, the
    reported engagement time with ``--engagement-time-col``, the page view id and the heartbeat time
    that heartbeats are grouped and counted by (``page_view_ids``, ``heartbeat_time``), the input
    columns ``--agg`` reads (:func:`aggregate_inputs`: numbers as Float64, others as text)."""
    schema = dict(EVENT_SCHEMA)
    if stitch:
        schema[STITCH_ID] = pl.String()
    if engagement:
        schema[ENGAGEMENT_MS] = pl.Float64()
    if page_view_ids:
        schema[PAGE_VIEW_KEY] = pl.String()
    if heartbeat_time:
        schema[HEARTBEAT_TS] = TIMESTAMP
    for (_, numeric), column in aggregate_inputs(aggregates).items():
        schema[column] = pl.Float64() if numeric else pl.String()
    return schema


@dataclass(frozen=True)
class OutputColumn:
    """One column of the session table."""

    name: str
    dtype: pl.DataType
    description: str
    #: Whether ``summarize_sessions`` makes it (else an enrichment step: attribution, geo).
    core: bool = True


#: The session table, in its stable column order. The README documents each one (a test checks it).
SESSION_COLUMNS: tuple[OutputColumn, ...] = (
    OutputColumn(
        "session_id",
        pl.String(),
        "Client-provided session id when the events carry one; otherwise `<user_id>-<start>` with the start "
        "as `YYYYMMDDTHHMMSS.ffffff` UTC. The same on every run; (user_id, session_id) is unique.",
    ),
    OutputColumn("user_id", pl.String(), "The user id exactly as written in the input."),
    OutputColumn("session_number", pl.UInt32(), "1, 2, ... per user in order of session start."),
    OutputColumn("session_start", TIMESTAMP, "Time of the session's first event (UTC, microseconds)."),
    OutputColumn("session_end", TIMESTAMP, "Time of the session's last event (UTC, microseconds)."),
    OutputColumn("duration_s", pl.Float64(), "`session_end - session_start` in seconds; 0 for one event."),
    OutputColumn("event_count", pl.UInt32(), "Number of events in the session."),
    OutputColumn("pageview_count", pl.UInt32(), "Number of page views in the session."),
    OutputColumn(
        "landing_page",
        pl.String(),
        "URL of the first page view (or page activity: `--page-activity-events`); null without either.",
    ),
    OutputColumn(
        "exit_page",
        pl.String(),
        "URL of the last page view (or page activity: `--page-activity-events`); null without either.",
    ),
    OutputColumn(
        "referrer",
        pl.String(),
        "Referrer of the landing page view (the first event's when there is no page view); null = none.",
    ),
    OutputColumn(
        "traffic_source",
        pl.String(),
        "The referrer's domain name, lower case, without subdomains and public suffix (`google`, "
        "`facebook`); `direct` when there is no referrer.",
        core=False,
    ),
    OutputColumn("ip", pl.String(), "IP address of the session's first event."),
    OutputColumn("city", pl.String(), "City of `ip` (English name), from the GeoIP database.", core=False),
    OutputColumn(
        "region",
        pl.String(),
        "Most general subdivision of `ip` (English name): the state, province or constituent country, "
        "e.g. England rather than West Berkshire.",
        core=False,
    ),
    OutputColumn("country", pl.String(), "Country of `ip` (English name).", core=False),
    OutputColumn(
        "country_code", pl.String(), "ISO 3166-1 alpha-2 code of that country (`GB`, `US`).", core=False
    ),
    OutputColumn("referrer_host", pl.String(), "Lower-case host of `referrer`.", core=False),
    OutputColumn(
        "source_name",
        pl.String(),
        "Name of a known referring site from Snowplow's referer database (`Google`, `Facebook`).",
        core=False,
    ),
    OutputColumn(
        "medium",
        pl.String(),
        "`search`, `social`, `email`, `paid`, `chatbot`, `unknown` (known site, unknown medium) from the "
        "referer database; `referral` (other sites), `internal` (own site), `direct` (no referrer).",
        core=False,
    ),
    OutputColumn(
        "search_term", pl.String(), "Search query from the referrer, where the database names it.", core=False
    ),
    OutputColumn(
        "utm_source", pl.String(), "`utm_source` of the landing page URL (percent-decoded).", core=False
    ),
    OutputColumn("utm_medium", pl.String(), "`utm_medium` of the landing page URL.", core=False),
    OutputColumn("utm_campaign", pl.String(), "`utm_campaign` of the landing page URL.", core=False),
    OutputColumn("utm_term", pl.String(), "`utm_term` of the landing page URL.", core=False),
    OutputColumn("utm_content", pl.String(), "`utm_content` of the landing page URL.", core=False),
    OutputColumn("gclid", pl.String(), "Google Ads click id of the landing page URL.", core=False),
    OutputColumn("fbclid", pl.String(), "Facebook click id of the landing page URL.", core=False),
    OutputColumn("msclkid", pl.String(), "Microsoft Ads click id of the landing page URL.", core=False),
    OutputColumn(
        "channel",
        pl.String(),
        "GA4 default channel group (`Organic Search`, `Paid Social`, `Direct`, ...): UTM source and medium "
        "when present, else the referrer's; a Google Ads click id (gclid, gbraid, wbraid) means Paid Search.",
        core=False,
    ),
    OutputColumn(
        "is_engaged",
        pl.Boolean(),
        "GA4's engaged session: lasts longer than 10 s, or has at least 2 page views, or a conversion event.",
    ),
    OutputColumn("is_bounce", pl.Boolean(), "Not engaged (GA4's bounce)."),
    OutputColumn("user_agent", pl.String(), "User agent of the session's first event."),
    OutputColumn(
        "device_category",
        pl.String(),
        "`desktop`, `mobile`, `tablet` or `bot`, from `user_agent` (ua-parser); null without one.",
        core=False,
    ),
    OutputColumn(
        "browser", pl.String(), "Browser family of `user_agent` (`Chrome`, `Mobile Safari`).", core=False
    ),
    OutputColumn(
        "os", pl.String(), "Operating system family of `user_agent` (`Windows`, `iOS`).", core=False
    ),
    OutputColumn(
        "is_bot",
        pl.Boolean(),
        "A crawler or script by its user agent (crawler list of ua-parser, plus HTTP libraries and "
        "headless browsers), or a session that fetched `/robots.txt`.",
        core=False,
    ),
    OutputColumn(
        "engaged_time_s",
        pl.Float64(),
        "Engaged time in seconds: from heartbeat events with `--heartbeat-events` (Snowplow's page pings), "
        "else the time to the next event of the session, each gap capped at 5 minutes.",
    ),
)

SESSION_SCHEMA: dict[str, pl.DataType] = {c.name: c.dtype for c in SESSION_COLUMNS}


@dataclass(frozen=True)
class ColumnMap:
    """Which input column plays each role; ``None`` for an optional column that is absent."""

    user_id: str
    timestamp: str
    url: str | None = None
    referrer: str | None = None
    ip: str | None = None
    event: str | None = None
    client_session_id: str | None = None
    event_id: str | None = None
    user_agent: str | None = None
    page_view_id: str | None = None
    stitch: str | None = None
    engagement_time: str | None = None
    heartbeat_time: str | None = None
    ignore_referrer: str | None = None
    #: Further event-name columns, used where ``event`` is empty (Segment: ``event`` for track
    #: calls, ``type`` = ``page`` for page calls).
    event_fallbacks: tuple[str, ...] = ()
    #: ``--user-fallback-col``: the column whose value is the user id of an event whose ``user_id``
    #: column is empty (the login id of a server-side Segment call, of an Amplitude event without a
    #: device_id); None without the option, or in an input without that column. It may be the column of
    #: another role (the login id is also the ``stitch`` column of the segment preset).
    user_fallback: str | None = None


def name_key(name: str) -> str:
    """A column name with case and punctuation ignored, as names are matched (``userId`` and
    ``user_id`` are both ``userid``)."""
    return re.sub(r"[^0-9a-z]", "", name.lower())


def _dollar_key(name: str) -> str:
    """:func:`name_key` with each ``$`` kept: PostHog and Mixpanel mark their own properties with it
    (``$session_id``, ``$current_url``), and an app's property of the same name without it is not theirs."""
    return re.sub(r"[^0-9a-z$]", "", name.lower())


def _closest(name: str, available: Sequence[str], *, taken: Iterable[str] = ()) -> str | None:
    """The column of ``available`` whose name is closest to ``name`` (case and punctuation aside)."""
    candidates: dict[str, str] = {}
    for column in available:
        if column not in taken:
            candidates.setdefault(name_key(column), column)
    close = difflib.get_close_matches(name_key(name), list(candidates), n=1, cutoff=0.75)
    return candidates[close[0]] if close else None


#: How many column names an error lists: an NDJSON file with thousands of distinct nested keys has as many
#: columns, and listing them all made a message of tens of kilobytes. The session table's 38 are listed
#: whole.
LISTED_COLUMNS: Final = 40


def column_listing(names: Sequence[str]) -> str:
    """``names`` for an error's "Its columns are: ...": the first :data:`LISTED_COLUMNS`, then how many
    more there are; ``(none)`` for none.

    >>> column_listing(["user_id", "timestamp"]), column_listing([])
    ('user_id, timestamp', '(none)')
    """
    if not names:
        return "(none)"
    shown = ", ".join(names[:LISTED_COLUMNS])
    return shown if len(names) <= LISTED_COLUMNS else f"{shown} and {len(names) - LISTED_COLUMNS} more"


def resolve_columns(
    available: Sequence[str],
    *,
    source: str = "the input",
    columns: ColumnNames | None = None,
    preferred: Mapping[str, Sequence[str]] | None = None,
    user_fallback: str | None = None,
    user_fallback_required: bool = False,
    **named: str | None,
) -> ColumnMap:
    """Find the input column for each role, from the explicit names or the known aliases.

    The explicit names come as ``columns`` or as the ``*_col`` keywords (``user_col="uid"``).
    ``preferred`` gives names per role (``url``: ``["properties.$current_url"]``, a preset's) tried
    before the role's aliases, matched like them, and no error when absent.
    A role takes the first of its names that a column is named exactly (:func:`exact_column`: itself or
    its flattened spelling, ``properties_$current_url``), else the first that a look-alike matches (case
    and punctuation ignored), wherever each column stands.
    ``user_fallback`` (``--user-fallback-col``) names the login id column whose value an event without
    a user id takes as its user id (:attr:`ColumnMap.user_fallback`), matched as a flag's column is
    (:func:`match_column`); an input without it has none, and no error: one run reads files with and
    without it (a Segment export of browser calls only has no ``userId``). It takes the column from no
    role, and the login id role (``stitch``) may take it even where the user id role found it (a file of
    server-side calls only, whose one id column is ``userId``): every event that carries the login id is
    stitched to it. With ``user_fallback_required`` (a column the user named, not a preset's) an input
    without it is an error, as a flag's column is.
    Raises :class:`MissingColumnError` when a named column does not exist, or when no user id or
    timestamp column can be found.
    """
    unknown = sorted(set(named) - set(ColumnNames().column_options()))
    if unknown:
        raise TypeError(f"resolve_columns() got unexpected keyword arguments: {', '.join(unknown)}")
    explicit = (columns or ColumnNames.of(named)).by_role()
    by_norm: dict[str, str] = {}
    by_dollar: dict[str, str] = {}
    for name in available:
        by_norm.setdefault(name_key(name), name)
        by_dollar.setdefault(_dollar_key(name), name)
    names = set(available)

    def named_as(alias: str) -> tuple[str | None, str | None]:
        """The column named exactly ``alias`` (:func:`exact_column`), and its first look-alike: one that
        keeps its ``$`` where it has one (``PROPERTIES_$SESSION_ID`` for PostHog's
        ``properties.$session_id``, not the app's own ``properties_session_id``)."""
        alike = by_dollar.get(_dollar_key(alias)) if "$" in alias else by_norm.get(name_key(alias))
        return exact_column(alias, names), alike

    listing = column_listing(available)
    found: dict[str, str | None] = {}
    # The flags' columns first, as they resolve (``--stitch-col user_id`` is ``USER_ID``): no role guessed
    # from the built-in names may take one of them.
    given_columns = {role: match_column(name, available) for role, name in explicit.items() if name}
    taken: set[str] = {name for name in explicit.values() if name}
    taken.update(column for column in given_columns.values() if column is not None)
    fallback_column = match_column(user_fallback, available) if user_fallback else None
    # Every column that cannot be found, named in one error (a wrong --user-col and no timestamp).
    problems: list[str] = []
    if user_fallback and user_fallback_required and fallback_column is None:
        problems.append(
            f"no column {user_fallback!r} (given with --user-fallback-col{_hint(user_fallback, available)})"
        )
    for role, known in COLUMN_ALIASES.items():
        aliases = (*(preferred or {}).get(role, ()), *known)
        given = explicit[role]
        if given is not None:
            column = given_columns[role]
            if column is None:
                problems.append(
                    f"no column {given!r} (given with {COLUMN_FLAGS[role]}{_hint(given, available)})"
                )
            found[role] = column or given
            continue
        # The columns named exactly as one of the role's names, in the names' order, before any look-alike
        # (equal to a name with case and punctuation ignored), in the same order: `user_id` is the user id
        # whether `User ID` or `userId` comes before it in the file (the first look-alike won, so column
        # order decided), and a preset's `properties.$session_id` is the flattened `properties_$session_id`
        # whether the app's own `properties_session_id` comes before it or not (review 59 F1: the exact
        # test missed the flattened spelling, and the app's property won).
        spellings = [named_as(alias) for alias in aliases]
        match = next(
            (
                column
                for column in [*(exact for exact, _ in spellings), *(alike for _, alike in spellings)]
                if column is not None
                and (column not in taken or (role == STITCH and column == fallback_column))
            ),
            None,
        )
        found[role] = match
        if match is not None:
            taken.add(match)
    fallbacks: tuple[str, ...] = ()
    if explicit[EVENT] is None and found[EVENT] is not None:
        # One column a name, the exact one before its look-alike.
        spelled = (exact or alike for exact, alike in map(named_as, COLUMN_ALIASES[EVENT]))
        fallbacks = tuple(dict.fromkeys(c for c in spelled if c is not None and c not in taken))
    hints: list[str] = []
    for role in (USER, TIME):
        if found[role] is None:
            what = "user id" if role == USER else "timestamp"
            claimed = _claimed(role, given_columns, preferred)
            if claimed is not None:
                # A flag took the column this role would have found (--session-col user_id).
                column, by = claimed
                problems.append(f"no {what} column ({column!r} is taken by {COLUMN_FLAGS[by]})")
                hints.append(COLUMN_FLAGS[role])
                continue
            problems.append(f"no {what} column (looked for {', '.join(COLUMN_ALIASES[role])})")
            close = next(
                (c for alias in COLUMN_ALIASES[role] if (c := _closest(alias, available, taken=taken))), None
            )
            hints.append(COLUMN_FLAGS[role] + (f" (perhaps {COLUMN_FLAGS[role]} {close})" if close else ""))
    if problems:
        joined = problems[0] if len(problems) == 1 else f"{', '.join(problems[:-1])} and {problems[-1]}"
        message = f"{source} has {joined}. Its columns are: {listing}."
        if len(available) == 1 and ";" in available[0]:
            # Excel in many locales writes CSV with semicolons.
            message += (
                " Its header looks separated by semicolons: sessionize reads commas (CSV) and tabs (TSV). "
                "Save it as comma-separated, or convert it (for example with Python's csv module)."
            )
        elif len(available) == 1 and "\t" in available[0]:
            message += (
                " Its header looks separated by tabs: read it as TSV, with --input-format tsv or a .tsv name."
            )
        elif hints:
            message += f" Name the column{'s' if len(hints) > 1 else ''} with {' and '.join(hints)}."
        raise MissingColumnError(message)
    return ColumnMap(**found, event_fallbacks=fallbacks, user_fallback=fallback_column)  # type: ignore[arg-type]


def _claimed(
    role: str, given_columns: Mapping[str, str | None], preferred: Mapping[str, Sequence[str]] | None
) -> tuple[str, str] | None:
    """The column another role's flag took that ``role`` would have found by one of its names, and that
    role; None when no flag took one."""
    aliases = {name_key(alias) for alias in (*(preferred or {}).get(role, ()), *COLUMN_ALIASES[role])}
    return next(
        (
            (column, other)
            for other, column in given_columns.items()
            if other != role and column is not None and name_key(column) in aliases
        ),
        None,
    )


def exact_column(name: str, available: Collection[str]) -> str | None:
    """The column of ``available`` named exactly ``name``, case and punctuation kept: ``name`` itself, else
    its flattened spelling (``properties.$session_id`` -> ``properties_$session_id``, the column flattening
    or --unnest-params made); None for none. A look-alike (``properties_session_id``, ``Referrer`` for
    ``referrer``) is not one: the known names take it only when no column is named exactly."""
    if name in available:
        return name
    flattened = name.replace(".", "_")
    return flattened if flattened in available else None


def match_column(given: str, available: Sequence[str]) -> str | None:
    """The column ``given`` names: itself, its flattened form (``context.page.url`` -> ``context_page_url``,
    the column flattening or --unnest-params made) or the one column equal to it with case and
    punctuation ignored (a Snowflake export's ``DOMAIN_USERID``); None for none, or several."""
    exact = exact_column(given, available)
    if exact is not None:
        return exact
    matches = [name for name in available if name_key(name) == name_key(given)]
    return matches[0] if len(matches) == 1 else None


def _hint(given: str, available: Sequence[str]) -> str:
    """What a flag's message adds for a name no column has: the columns equal to it with case and
    punctuation ignored when there are several (it names neither), else the closest."""
    alike = [name for name in available if name_key(name) == name_key(given)]
    if len(alike) > 1:
        return f"; it is ambiguous: {', '.join(repr(name) for name in alike)} all match it, give one exactly"
    close = _closest(given, available)
    return f"; did you mean {close!r}?" if close else ""


def find_column(given: str, available: Sequence[str], *, source: str, flag: str) -> str:
    """The column ``given`` names (see :func:`match_column`); else :class:`MissingColumnError`."""
    column = match_column(given, available)
    if column is not None:
        return column
    listing = column_listing(available)
    raise MissingColumnError(
        f"{source} has no column {given!r} (given with {flag}{_hint(given, available)}). "
        f"Its columns are: {listing}."
    )


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
#: The longest duration an option takes: longer ones overflow the microsecond arithmetic of the run.
_LONGEST_DURATION: Final = timedelta(days=36500)


def duration_text(value: timedelta) -> str:
    """``value`` as a duration option is written, the inverse of :func:`parse_duration` for whole
    milliseconds: ``6h``, ``1h30m``, ``1m30s``, ``1w2d``, ``250ms``.

    >>> duration_text(timedelta(hours=1, minutes=30))
    '1h30m'
    """
    milliseconds = round(value / timedelta(milliseconds=1))
    parts = []
    for unit, seconds in sorted(_UNIT_SECONDS.items(), key=lambda item: -item[1]):
        count, milliseconds = divmod(milliseconds, round(seconds * 1000))
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def parse_duration(value: str | timedelta, *, option: str = "--timeout") -> timedelta:
    """Parse ``90s``, ``30m``, ``1h``, ``1h30m``, ``2d`` (or pass a ``timedelta`` through).

    >>> parse_duration("1h30m")
    datetime.timedelta(seconds=5400)
    """
    if isinstance(value, timedelta):
        result = value
    else:
        text = value.strip().replace(" ", "")
        parts = _DURATION_PART.findall(text)
        units = [unit for _, unit in parts]
        # Each unit once, largest first (``1h30m``): ``1h1h`` or ``1m1h`` is a typo, not 2 h or 61 min.
        ordered = units == sorted(set(units), key=_UNIT_SECONDS.__getitem__, reverse=True)
        if not text or "".join(n + u for n, u in parts) != text or not ordered:
            raise UsageError(
                f"{option} {value!r} is not a duration. Use numbers with lower-case units, largest first "
                "(w, d, h, m, s, ms): 90s, 30m, 1h, 1h30m, 2d."
            )
        # Beyond the longest, just past it (a timedelta of the number itself can overflow).
        seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
        result = timedelta(seconds=min(seconds, _LONGEST_DURATION.total_seconds() + 1))
    if result > _LONGEST_DURATION:
        raise UsageError(f"{option} {value!r} is longer than any run needs: give at most 100 years (36500d).")
    if result <= timedelta(0):
        raise UsageError(f"{option} must be longer than zero, got {value!r}.")
    return result


def split_list(value: str | Iterable[str]) -> tuple[str, ...]:
    """``"a, b,c"`` or ``["a", "b"]`` -> ``("a", "b", "c")``; empty items are dropped."""
    items = value.split(",") if isinstance(value, str) else value
    return tuple(item.strip() for item in items if item.strip())


#: The characters other than an ASCII letter's own two cases that lowercase to it (Unicode's KELVIN
#: SIGN lowercases to ``k``); tests/test_event_names.py checks every code point against Polars.
_OTHER_CASES: dict[str, str] = {"k": "\u212a"}
#: The most spellings :func:`event_named` lists; more (long names), and it lowercases the column.
MOST_SPELLINGS = 4096


def _spellings(names: Iterable[str]) -> list[str] | None:
    """Every text whose lowercase is one of ``names`` (each lowercase ASCII), or None when a name is
    not ASCII or they have more than :data:`MOST_SPELLINGS`."""
    choices = []
    for name in names:
        if not name.isascii():
            return None
        choices.append([c + c.upper() + _OTHER_CASES.get(c, "") if c.islower() else c for c in name])
    if sum(math.prod(len(option) for option in options) for options in choices) > MOST_SPELLINGS:
        return None
    return sorted({"".join(spelling) for options in choices for spelling in itertools.product(*options)})


def is_blank(text: pl.Expr) -> pl.Expr:
    """Whether each text is empty or only whitespace (null for a null): an id that is no id, as the user,
    client session, event and login ids are read (docs/input.md). Whitespace is Unicode's White_Space
    (spaces, tabs, line breaks, a no-break space; not U+200B nor U+FEFF), as Rust's ``char::is_whitespace``
    strips it: the same set as the regex ``^\\s*$``, which took twice as long (143 against 83 ms for 10M ids
    per id column: bench/README.md, stop 49)."""
    return text.str.strip_chars_start() == ""


def event_named(event: pl.Expr, names: Iterable[str]) -> pl.Expr:
    """Whether ``event`` is one of ``names``, ignoring case: ``event.str.to_lowercase().is_in(lowered
    names)``, null for a null event. For ASCII names it compares the text with each of their spellings
    instead (``page_view``'s 256: ``Page_View``, ``PAGE_VIEW``, ...), 6x faster than lowercasing 10M
    event names (bench/README.md, stop 42)."""
    lowered = sorted({name.lower() for name in names})
    spellings = _spellings(lowered)
    if spellings is None:
        return event.str.to_lowercase().is_in(lowered)
    return event.is_in(spellings)
