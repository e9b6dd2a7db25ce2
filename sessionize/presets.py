"""Vendor presets: ``--preset NAME`` reads a vendor's export as it comes (see docs/presets.md).

A preset is a set of options of ``sessionize run``, applied under the ones the user gives: any flag,
config-file key or keyword given explicitly wins. Columns come in two kinds: the ones a preset
*requires* (set as column flags: the user and time columns that decide the sessions, so a Snowplow
table never falls back to ``user_id``, the login id) and the ones it *prefers* (tried before the
built-in names, skipped when an export leaves them out: PostHog without ``$ip``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sessionize import schema as S
from sessionize.errors import UsageError

if TYPE_CHECKING:
    from sessionize.config import RunConfig


@dataclass(frozen=True)
class Multiple:
    """A preset's duration option that follows another duration option: ``factor`` times its value, the
    user's where they give it (Snowplow's engaged threshold is 2 heartbeats: ``--heartbeat-interval 30s``
    makes it 60 s). An option the user gives itself wins, as any other."""

    option: str
    factor: int

    def of(self, options: Mapping[str, Any]) -> timedelta:
        flag = f"--{self.option.replace('_', '-')}"
        return self.factor * S.parse_duration(options[self.option], option=flag)

    def __str__(self) -> str:
        return f"{self.factor} x --{self.option.replace('_', '-')}"


@dataclass(frozen=True)
class Preset:
    """One vendor's export format and session rules, as options of ``sessionize run``."""

    name: str
    vendor: str
    #: The export this preset reads.
    reads: str
    #: The vendor's documentation page that the preset follows.
    source: str
    #: Options of :meth:`sessionize.config.RunConfig.from_options`, applied under the user's.
    options: Mapping[str, Any] = field(default_factory=dict)
    #: Column names per role tried first (``url``: ``("properties.$current_url",)``).
    preferred_columns: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: ``--agg`` specs of the vendor's own session fields, appended after the user's; a column an
    #: export leaves out gives a null column (see :attr:`sessionize.schema.Aggregate.optional`).
    aggregates: tuple[str, ...] = ()

    def settings(self) -> list[tuple[str, str]]:
        """What the preset sets, as (option, value) lines for ``sessionize presets``."""
        lines = [
            (f"--{key.replace('_', '-')}", _shown(value, self.options)) for key, value in self.options.items()
        ]
        lines += [(f"{role} column", " or ".join(names)) for role, names in self.preferred_columns.items()]
        lines += [("--agg", spec) for spec in self.aggregates]
        return lines

    def optional_aggregates(self) -> list[S.Aggregate]:
        return [dataclasses.replace(S.parse_aggregate(spec), optional=True) for spec in self.aggregates]


def _shown(value: object, options: Mapping[str, Any]) -> str:
    if isinstance(value, Multiple):
        return f"{value} ({value.of(options).total_seconds():g}s)"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple | list):
        return ",".join(str(v) for v in value)
    return str(value)


#: The events GA4 marks as key events by default (web: ``purchase``; apps: ``first_open``, the store's
#: purchases and subscriptions).
GA4_KEY_EVENTS = (
    "purchase,first_open,in_app_purchase,app_store_subscription_convert,app_store_subscription_renew"
)

PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset(
            name="ga4",
            vendor="Google Analytics 4",
            reads="the BigQuery export (events_YYYYMMDD) as NDJSON or Parquet",
            source="https://support.google.com/analytics/answer/7029846",
            options={
                "unnest_params": "event_params",
                "user_col": "user_pseudo_id",
                "time_col": "event_timestamp",
                "time_unit": "us",
                # "The time (in microseconds, UTC)": never re-read in --timezone, which sets the local day.
                "input_timezone": "UTC",
                "session_col": "event_params.ga_session_id",
                # An app stream's screen views count as GA4's engaged rule counts them ("at least 2
                # pageviews or screenviews").
                "pageview_events": "page_view,screen_view",
                # GA4's default key events, which make a session engaged ("has a key event"): a purchase,
                # and an app's first open and store purchases (review of stop 57: a session of a page view
                # and a purchase a second apart was not engaged). A property's own are --conversion-events.
                "conversion_events": GA4_KEY_EVENTS,
            },
            preferred_columns={
                "url": ("event_params.page_location",),
                "referrer": ("event_params.page_referrer",),
                # Foreground milliseconds each event reports: engaged_time_s is their sum (GA4's rule).
                "engagement_time": ("event_params.engagement_time_msec",),
                # An unwanted referral (the stream's list, or a self-referral): GA4 ignores its referrer.
                "ignore_referrer": ("event_params.ignore_referrer",),
                "event": ("event_name",),
            },
            # GA4's own session fields, beside ours: its session number and engaged flag (event
            # parameters), the traffic source it collected (UTM tags, gclid) and its geolocation (the
            # export has no IP address for ours).
            aggregates=(
                "ga_session_number=max(event_params.ga_session_number)",
                "session_engaged=max(event_params.session_engaged)",
                "ga4_source=first(collected_traffic_source.manual_source)",
                "ga4_medium=first(collected_traffic_source.manual_medium)",
                "ga4_campaign=first(collected_traffic_source.manual_campaign_name)",
                "ga4_gclid=first(collected_traffic_source.gclid)",
                # The session-scoped last-click source GA4 puts on every event.
                "ga4_session_source=first(session_traffic_source_last_click.manual_campaign.source)",
                "ga4_session_medium=first(session_traffic_source_last_click.manual_campaign.medium)",
                "ga4_session_campaign=first(session_traffic_source_last_click.manual_campaign.campaign_name)",
                "ga4_country=first(geo.country)",
                "ga4_region=first(geo.region)",
                "ga4_city=first(geo.city)",
                # The export has no user agent: GA4's own device fields of the first event.
                "ga4_device_category=first(device.category)",
                "ga4_os=first(device.operating_system)",
                "ga4_browser=first(device.web_info.browser)",
            ),
        ),
        Preset(
            name="snowplow",
            vendor="Snowplow",
            reads="the warehouse table atomic.events (CSV, Parquet or NDJSON with a header)",
            source="https://docs.snowplow.io/docs/fundamentals/canonical-event/",
            options={
                "user_col": "domain_userid",
                "time_col": "derived_tstamp",
                # Snowplow's timestamps are UTC (a warehouse's or CSV's carry no offset): --timezone sets
                # the local day only.
                "input_timezone": "UTC",
                "session_col": "domain_sessionid",
                "event_id_col": "event_id",
                "pageview_events": "page_view",
                # Page pings carry the page they are sent from: the landing and exit pages, and the
                # engaged time (Snowplow's heartbeat and minimum visit length, its defaults).
                "page_activity_events": "page_ping",
                "heartbeat_events": "page_ping",
                "heartbeat_interval": "10s",
                "min_visit_length": "5s",
                # Snowplow's engaged session: page_views >= 2 or engaged_time_in_s / heartbeat >= 2 (its
                # engaged_session macro), so 2 heartbeats of engaged time (20 s; 60 s with
                # --heartbeat-interval 30s, review 59 F3) rather than GA4's duration of 10 s.
                "engaged_threshold": Multiple("heartbeat_interval", 2),
                # Snowplow's web model filters bots' user agents out (snowplow__ua_bot_filter: true).
                "exclude_bots": True,
                # Snowplow's days_late_allowed (3): events a device sent more than 3 days after creating them.
                "max_send_delay": "3d",
                # Snowplow's max_session_days (3): a session's events more than 3 days after its start.
                "session_cap": "3d",
                # One session per domain_sessionid (Snowplow's sessions manifest), of the domain_userid of
                # its first event (its sessions table's).
                "shared_session_ids": "merge",
                # default_channel_group as Snowplow's sessions model computes it (the campaign fields).
                "channel_rules": "snowplow",
                # Snowplow's stitched_user_id is the domain_userid itself until a login id maps it.
                "stitch_fallback": True,
                # Snowplow processes no event without a domain_sessionid (its sessions lifecycle manifest).
                "require_session_id": True,
            },
            preferred_columns={
                # The web_page context's id: a column, a warehouse's context column, or the TSV's contexts.
                "page_view_id": (
                    "page_view_id",
                    "contexts_com_snowplowanalytics_snowplow_web_page_1",
                    "contexts_com_snowplowanalytics_snowplow_web_page_1_0_0",
                    "contexts",
                ),
                # The device's creation time: the page pings' windows of engaged time (Snowplow's
                # web model counts them on it); an export without it counts them on derived_tstamp.
                "heartbeat_time": ("dvce_created_tstamp",),
                # The login id: stitched_user_id, the user's latest (Snowplow's session stitching).
                "stitch": ("user_id",),
                "url": ("page_url",),
                "referrer": ("page_referrer",),
                "ip": ("user_ipaddress",),
                "user_agent": ("useragent",),
                "event": ("event",),
            },
        ),
        Preset(
            name="segment",
            vendor="Segment",
            reads="raw Segment exports (track, page and identify calls, as NDJSON or a warehouse table)",
            source="https://segment.com/docs/connections/spec/common/",
            # Segment's timestamps are UTC (ISO 8601; a warehouse table's carry no offset).
            options={
                "time_col": "timestamp",
                "input_timezone": "UTC",
                # "A userId or an anonymousId is required" (Segment's Spec): a server-side call (Node's
                # analytics-node, a warehouse row with a null anonymous_id) has the userId only, and it is
                # that event's user id (and its stitched_user_id).
                "user_fallback_col": "user_id",
            },
            # anonymousId in the raw JSON, anonymous_id in a warehouse table (and the same for the rest).
            preferred_columns={
                "user_id": ("anonymous_id",),
                # userId of identify (and later) calls: stitched_user_id, as Segment's identity graph.
                "stitch": ("user_id",),
                "event_id": ("message_id",),
                "url": ("context.page.url", "url"),
                "referrer": ("context.page.referrer", "referrer"),
                "ip": ("context.ip",),
                "user_agent": ("context.user_agent",),
            },
        ),
        Preset(
            name="posthog",
            vendor="PostHog",
            reads="PostHog's events (NDJSON, Parquet or CSV; properties nested, flattened or JSON text)",
            source="https://posthog.com/docs/data/sessions",
            options={
                "user_col": "distinct_id",
                "time_col": "timestamp",
                # PostHog stores and exports timestamps in UTC (a CSV export's carry no offset).
                "input_timezone": "UTC",
                "event_id_col": "uuid",
                "event_col": "event",
                "pageview_events": "$pageview",
                # PostHog: a session ends after 30 minutes of inactivity, and lasts at most 24 hours.
                "max_session_length": "24h",
                # channel as PostHog's sessions compute $channel_type.
                "channel_rules": "posthog",
                # PostHog keys a session by $session_id alone: identify() changes distinct_id mid-visit
                # and keeps the session, whose raw_sessions table takes the latest distinct_id
                # (argMax(distinct_id, timestamp)).
                "shared_session_ids": "merge-last",
            },
            preferred_columns={
                "client_session_id": ("properties.$session_id", "$session_id"),
                "url": ("properties.$current_url", "$current_url"),
                "referrer": ("properties.$referrer", "$referrer"),
                "ip": ("properties.$ip", "$ip"),
                "user_agent": ("properties.$raw_user_agent", "$raw_user_agent"),
            },
        ),
        Preset(
            name="amplitude",
            vendor="Amplitude",
            reads="Amplitude's Export API files (JSON lines, one event each)",
            source="https://amplitude.com/docs/apis/analytics/export",
            options={
                "user_col": "device_id",
                # "device_id: required unless user_id is present" (the HTTP V2 API): an event with a
                # user_id and no device_id has its user_id as user id.
                "user_fallback_col": "user_id",
                "time_col": "event_time",
                # "event_time": UTC, written without an offset (2024-05-01 10:00:00.000000): --timezone
                # sets the local day only, it does not move these times.
                "input_timezone": "UTC",
                "session_col": "session_id",
                # session_id is the session's start in epoch milliseconds; -1 means out of any session.
                "session_id_nulls": "-1",
                "event_col": "event_type",
                # Browser SDK 2's page view tracking, and Browser SDK 1's ("Page View", which Amplitude's
                # page-view-v1-enrichment plugin still writes for SDK 2 users who keep the old shape).
                "pageview_events": "[Amplitude] Page Viewed,Page View",
            },
            preferred_columns={
                "event_id": ("insert_id", "$insert_id", "uuid"),
                # Page Location is the page's whole URL; Page URL leaves out the query string, and so
                # the UTM tags and click ids (Amplitude's page view tracking: href.split('?')[0]).
                # SDK 1 names them page_location and page_url.
                "url": (
                    "event_properties.[Amplitude] Page Location",
                    "event_properties.page_location",
                    "event_properties.[Amplitude] Page URL",
                    "event_properties.page_url",
                ),
                "referrer": ("event_properties.referrer", "user_properties.referrer"),
                "ip": ("ip_address",),
            },
        ),
        Preset(
            name="mixpanel",
            vendor="Mixpanel",
            reads="Mixpanel's raw event export (JSON lines: event and properties)",
            source="https://developer.mixpanel.com/reference/raw-event-export",
            options={
                "user_col": "properties.distinct_id",
                "time_col": "properties.time",
                "event_id_col": "properties.$insert_id",
                # Mixpanel's duplicates share event name, distinct_id, time and $insert_id (its event
                # deduplication): "Order Completed" and "Payment Captured" of one $insert_id are two
                # events (review 59 F4).
                "event_id_scope": "user-event-time",
                "event_col": "event",
                "pageview_events": "$mp_web_page_view",
                # "Sessions are reset every 24 hours at midnight (according to your project timezone)"
                # (Mixpanel's timeout-based sessions): midnight in --timezone, which the user sets to the
                # project's (review 59 F2).
                "split_at_midnight": True,
            },
            preferred_columns={
                "url": ("properties.$current_url",),
                "referrer": ("properties.$referrer",),
                "ip": ("properties.ip", "properties.$ip"),
            },
        ),
    )
}


def get(name: str) -> Preset:
    """The preset called ``name``; a :class:`~sessionize.errors.UsageError` lists them otherwise."""
    try:
        return PRESETS[name.strip().lower()]
    except KeyError:
        raise UsageError(
            f"--preset {name!r} is not one of {', '.join(PRESETS)} (`sessionize presets` lists them)."
        ) from None


def apply(name: str | None, given: Mapping[str, Any]) -> dict[str, Any]:
    """``given`` (the options set explicitly) over the options of preset ``name``; the preset's
    preferred columns under any the user gives."""
    if name is None:
        return dict(given)
    preset = get(name)
    merged: dict[str, Any] = {**preset.options, **given}
    for key, value in preset.options.items():
        if isinstance(value, Multiple) and key not in given:
            merged[key] = value.of(merged)
    preferred = dict(preset.preferred_columns)
    preferred.update(given.get("preferred_columns") or {})
    merged["preferred_columns"] = preferred
    if preset.aggregates:
        # The user's --agg first; the preset's after them, but for a name the user gives.
        own = S.aggregates_of(given.get("aggregates"))
        names = {a.name for a in own}
        merged["aggregates"] = [*own, *(a for a in preset.optional_aggregates() if a.name not in names)]
    return merged


def configured(config: RunConfig, name: str | None, given: Mapping[str, Any]) -> RunConfig:
    """``config`` (built from :func:`apply`'s options) as preset ``name`` made it: the preset recorded, and
    its ``--user-fallback-col`` optional (an export without the column has no fallback, and no error)
    unless ``given`` (the options set explicitly) names the column, which must then exist (review 57 F5)."""
    config = dataclasses.replace(config, preset=name)
    if name is None or "user_fallback_col" in given or "user_fallback_col" not in get(name).options:
        return config
    return dataclasses.replace(config, read=dataclasses.replace(config.read, user_fallback_optional=True))


__all__ = ["PRESETS", "Multiple", "Preset", "apply", "configured", "get"]
