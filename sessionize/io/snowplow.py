"""Snowplow's enriched events as the pipeline writes them: headerless TSV, one event a line.

The field order is Snowplow's canonical event model (131 fields, the order of its analytics SDKs'
``ENRICHED_EVENT_FIELD_TYPES``; https://docs.snowplow.io/docs/fundamentals/canonical-event/). Values
are never quoted (a tab inside a value is escaped by the pipeline), so a line is split on its tabs:
the JSON of ``contexts`` and ``unstruct_event``, full of quotes, stays one field. An empty field is
null. A line with another number of fields is malformed (rejected with its line number).

A ``.tsv`` file is read as enriched events when its first line has exactly these 131 fields and is
not a header (none of its fields is ``event_id``); ``--input-format snowplow`` says so explicitly.
"""

from __future__ import annotations

import gzip
from typing import Final

import polars as pl

ROW: Final = "_row"

#: The enriched event's fields, in the order of the TSV.
FIELDS: Final = (
    "app_id", "platform", "etl_tstamp", "collector_tstamp", "dvce_created_tstamp", "event", "event_id",
    "txn_id", "name_tracker", "v_tracker", "v_collector", "v_etl", "user_id", "user_ipaddress",
    "user_fingerprint", "domain_userid", "domain_sessionidx", "network_userid", "geo_country", "geo_region",
    "geo_city", "geo_zipcode", "geo_latitude", "geo_longitude", "geo_region_name", "ip_isp",
    "ip_organization", "ip_domain", "ip_netspeed", "page_url", "page_title", "page_referrer",
    "page_urlscheme", "page_urlhost", "page_urlport", "page_urlpath", "page_urlquery", "page_urlfragment",
    "refr_urlscheme", "refr_urlhost", "refr_urlport", "refr_urlpath", "refr_urlquery", "refr_urlfragment",
    "refr_medium", "refr_source", "refr_term", "mkt_medium", "mkt_source", "mkt_term", "mkt_content",
    "mkt_campaign", "contexts", "se_category", "se_action", "se_label", "se_property", "se_value",
    "unstruct_event", "tr_orderid", "tr_affiliation", "tr_total", "tr_tax", "tr_shipping", "tr_city",
    "tr_state", "tr_country", "ti_orderid", "ti_sku", "ti_name", "ti_category", "ti_price", "ti_quantity",
    "pp_xoffset_min", "pp_xoffset_max", "pp_yoffset_min", "pp_yoffset_max", "useragent", "br_name",
    "br_family", "br_version", "br_type", "br_renderengine", "br_lang", "br_features_pdf",
    "br_features_flash", "br_features_java", "br_features_director", "br_features_quicktime",
    "br_features_realplayer", "br_features_windowsmedia", "br_features_gears", "br_features_silverlight",
    "br_cookies", "br_colordepth", "br_viewwidth", "br_viewheight", "os_name", "os_family",
    "os_manufacturer", "os_timezone", "dvce_type", "dvce_ismobile", "dvce_screenwidth",
    "dvce_screenheight", "doc_charset", "doc_width", "doc_height", "tr_currency", "tr_total_base",
    "tr_tax_base", "tr_shipping_base", "ti_currency", "ti_price_base", "base_currency", "geo_timezone",
    "mkt_clickid", "mkt_network", "etl_tags", "dvce_sent_tstamp", "refr_domain_userid",
    "refr_device_tstamp", "derived_contexts", "domain_sessionid", "derived_tstamp", "event_vendor",
    "event_name", "event_format", "event_version", "event_fingerprint", "true_tstamp",
)  # fmt: skip


def is_enriched_tsv(path: str) -> bool:
    """Whether the first line of ``path`` (gzipped or not) is an enriched event, not a header."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            first = handle.readline(1 << 20)
    except (OSError, EOFError):
        return False
    return is_enriched_line(first)


def is_enriched_line(first: bytes) -> bool:
    """Whether a file's first line is an enriched event (131 tab-separated fields), not a header."""
    fields = first.rstrip(b"\r\n").split(b"\t")
    return len(fields) == len(FIELDS) and b"event_id" not in fields


def parse_enriched(lines: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The events (one text column per field, ``_row``) and the malformed lines of a frame of lines
    (``line`` and ``_row``, 0-based), as :func:`sessionize.io.read` reads access logs."""
    line = pl.col("line").str.strip_chars_end("\r")
    count = line.str.count_matches("\t", literal=True) + 1
    blank = line.str.len_bytes() == 0
    checked = lines.with_columns(line.alias("line"), count.alias("_fields"))
    good = checked.filter((pl.col("_fields") == len(FIELDS)) & ~blank)
    split = pl.col("line").str.split_exact("\t", len(FIELDS) - 1).struct.rename_fields(list(FIELDS))
    events = (
        good.select(ROW, split.alias("_event"))
        .unnest("_event")
        .with_columns(pl.when(pl.col(name) != "").then(pl.col(name)).alias(name) for name in FIELDS)
        .select(*FIELDS, ROW)
    )
    malformed = checked.filter((pl.col("_fields") != len(FIELDS)) & ~blank).select(
        (pl.col(ROW).cast(pl.Int64) + 1).alias("source_row"),
        pl.col("line").alias("raw_line"),
        pl.format("wrong_field_count ({}, expected {})", pl.col("_fields"), pl.lit(len(FIELDS))).alias(
            "reject_reason"
        ),
    )
    return events, malformed


__all__ = ["FIELDS", "is_enriched_tsv", "parse_enriched"]
