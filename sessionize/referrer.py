"""Referrer enrichment: the traffic source (the referrer's domain name) of each session.

Parsing a URL's domain needs Python, so it runs once per distinct referrer and is mapped back.
The Public Suffix List comes from tldextract's bundled snapshot; nothing is fetched.
"""

from __future__ import annotations

import functools
from urllib.parse import urlsplit

import polars as pl
import tldextract

from sessionize import schema as S
from sessionize.distinct import map_distinct

DIRECT = "direct"

# suffix_list_urls=() and cache_dir=None: use the snapshot shipped in the package, never the network.
_EXTRACT = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


def referrer_host(referrer: str | None) -> str | None:
    """The lower-case host of a referrer URL (``None`` when there is none).

    >>> referrer_host("https://WWW.Google.co.uk/search?q=x")
    'www.google.co.uk'
    """
    if referrer is None or not referrer.strip():
        return None
    text = referrer.strip()
    if "://" not in text:
        text = "//" + text  # a bare host such as "t.co/abc"
    try:
        parts = urlsplit(text)
        host = parts.hostname
    except ValueError:
        return None
    if parts.scheme == "android-app" and host:
        # android-app://com.google.android.gm/ names an app package: reverse it to a domain.
        host = ".".join(reversed(host.split(".")[:2]))
    return host or None


@functools.lru_cache(maxsize=65536)
def traffic_source(referrer: str | None) -> str | None:
    """The referrer's domain name without subdomains and public suffix, lower case.

    ``direct`` when there is no referrer; ``None`` when a referrer is present but has no host.

    >>> traffic_source("https://l.facebook.com/l.php?u=x")
    'facebook'
    >>> traffic_source(None)
    'direct'
    """
    if referrer is None or not referrer.strip():
        return DIRECT
    host = referrer_host(referrer)
    if host is None:
        return None
    domain: str = _EXTRACT(host).domain
    return domain or host


def _traffic_sources(referrers: list[str | None]) -> pl.Series:
    return pl.Series([traffic_source(value) for value in referrers], dtype=pl.String)


def enrich_traffic_source(sessions: pl.LazyFrame) -> pl.LazyFrame:
    """Add ``traffic_source`` from the ``referrer`` column, once per distinct referrer."""
    return sessions.with_columns(
        pl.col(S.REFERRER)
        .map_batches(
            lambda s: map_distinct(s, _traffic_sources), return_dtype=pl.String, is_elementwise=False
        )
        .alias("traffic_source")
    )
