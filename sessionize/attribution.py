"""Attribution: where each session came from, the way analytics tools report it.

* ``source_name``, ``medium`` and ``search_term`` of the referrer, from Snowplow's referer database
  (referer-parser's ``referers.yml``, GPL-3.0 data shipped in ``sessionize/data``; see
  ``REFERERS-NOTICE.md``), looked up with referer-parser's own rules.
* ``utm_*`` fields and the click ids ``gclid``, ``fbclid``, ``msclkid`` from the landing page's query string
  (and Google Ads' ``gbraid`` and ``wbraid``, read for the channel only).
* ``channel``: the GA4 default channel group (or Snowplow's, or PostHog's channel type: ``channel_rules``).

URL parsing needs Python, so it runs once per distinct landing URL and once per distinct (referrer,
landing host) pair, and is joined back; the channel rules are one vectorized Polars expression.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, NamedTuple
from urllib.parse import SplitResult, unquote, unquote_plus, urlsplit

import polars as pl
import yaml

from sessionize import schema as S
from sessionize.config import ascii_host, normalize_internal_domains
from sessionize.distinct import distinct_rows, fresh_name, gather_rows, map_distinct
from sessionize.errors import RefererDatabaseError
from sessionize.referrer import (
    DIRECT,
    registered_domain,
    splittable,
    traffic_source,
    valid_host,
    web_referrer,
)

LANDING_PAGE = "landing_page"
TRAFFIC_SOURCE = "traffic_source"

# Mediums. The database's own sections (``unknown``, ``email``, ``social``, ``search``, ``paid``,
# ``chatbot``, or any other a newer file adds) are passed through as they are named there.
INTERNAL = "internal"
REFERRAL = "referral"
SEARCH = "search"
SOCIAL = "social"
EMAIL = "email"
PAID = "paid"

#: What :func:`classify_referrer` returns.
REFERRER_FIELDS: tuple[str, ...] = ("referrer_host", "source_name", "medium", "search_term", TRAFFIC_SOURCE)
#: What :func:`parse_utm` returns, in this order.
UTM_FIELDS: tuple[str, ...] = (
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_term",
    "utm_content",
    "gclid",
    "fbclid",
    "msclkid",
)
#: Google Ads' click ids of iOS traffic: GA4 reads them as it reads ``gclid`` (Paid Search), and they
#: are not output columns.
GOOGLE_CLICK_IDS: tuple[str, ...] = ("gbraid", "wbraid")
_GOOGLE_CLICKS = ("gclid", *GOOGLE_CLICK_IDS)
#: Google Ads' ``gad_source`` (``1``: a search ad): PostHog's channel type reads it (``--channel-rules
#: posthog``); not an output column, and no part of a campaign (:func:`campaign_key`).
CHANNEL_PARAMS: tuple[str, ...] = ("gad_source",)
#: The columns :func:`enrich_attribution` adds, in this order (it also rewrites ``traffic_source``).
ATTRIBUTION_COLUMNS: tuple[str, ...] = (
    "referrer_host",
    "source_name",
    "medium",
    "search_term",
    *UTM_FIELDS,
    "channel",
)

SourceCategory = Literal["shopping", "search", "social", "video"]


# GA4 classifies a source by a published table ("source categories", linked from the Default channel
# group article, https://support.google.com/analytics/answer/9756891): 819 sources, each a search, social,
# shopping or video site. Its conditions "source matches a list of ... sites" read that table and nothing
# else (a site it does not list, x.com or mastodon.social, is no social site to GA4), and Snowplow's
# channel group reads the same table. It is shipped as data/ga4_source_categories.csv (see the notice
# beside it). Keys are lower-case, as GA4's channel conditions are case-insensitive.
_GA4_CATEGORIES_FILE = ("data", "ga4_source_categories.csv")


@functools.cache
def ga4_source_categories() -> Mapping[str, SourceCategory]:
    """GA4's source category of each source name or domain in its published table, lower-case keys.

    >>> table = ga4_source_categories()
    >>> table["google"], table["l.facebook.com"], table["ebay"], table["youtube.com"], len(table)
    ('search', 'social', 'shopping', 'video', 819)
    """
    text = resources.files("sessionize").joinpath(*_GA4_CATEGORIES_FILE).read_text(encoding="utf-8")
    rows = iter(text.splitlines())
    next(rows)  # the header: source,source_category
    table: dict[str, SourceCategory] = {}
    for row in rows:
        source, _, category = row.rpartition(",")
        name = category.removeprefix("SOURCE_CATEGORY_").lower()
        if source and name in ("search", "social", "shopping", "video"):
            table.setdefault(source.strip().lower(), name)  # type: ignore[arg-type]
    return table


_PACKAGE_FILE = ("data", "referers.yml")
#: How many suffixes of a host :meth:`RefererDatabase.lookup` tries, at most: a DNS name has at most
#: 127 labels, so every real host is tried whole; a longer "host" is attacker-written and cut short.
_MAX_KEY_LABELS = 127


@dataclass(frozen=True)
class Referer:
    """A known referring site: its name, its medium and the query parameters that carry a search term."""

    source: str
    medium: str
    parameters: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class RefererDatabase:
    """Snowplow's referer database: known sites by host (or host and path prefix), lower-case hosts.

    Build it with :func:`load_referers`.
    """

    path: str
    entries: Mapping[str, Referer] = field(repr=False)
    #: GA4's source category of a source name or domain (:func:`ga4_source_categories`; with a database
    #: of the user's own, also its search and social sites), for ``utm_source`` values and referrers.
    categories: Mapping[str, SourceCategory] = field(repr=False, default_factory=ga4_source_categories)

    def __len__(self) -> int:
        return len(self.entries)

    def lookup(self, host: str, path: str = "") -> Referer | None:
        """The site a referrer host and path belong to, with referer-parser's rules.

        Tries the full path, then its first segment, then no path; for each, the full host and then
        the host without its leading labels one at a time (``www.google.com``, ``google.com``, ``com``).

        >>> db = load_referers()
        >>> db.lookup("www.google.fr", "/imgres").source
        'Google Images'
        >>> db.lookup("www.google.fr", "/search").source
        'Google'
        """
        host = host.lower()
        for suffix in _paths_to_try(path):
            for candidate in _hosts_to_try(host):
                found = self.entries.get(candidate + suffix)
                if found is not None:
                    return found
        return None

    def source_category(self, source: str | None) -> SourceCategory | None:
        """GA4's source category of a source (``utm_source``) value, case-insensitive.

        >>> db = load_referers()
        >>> db.source_category("Google"), db.source_category("fb"), db.source_category("youtube")
        ('search', 'social', 'video')
        """
        if source is None:
            return None
        return self.categories.get(source.strip().lower())


def _hosts_to_try(host: str) -> Iterator[str]:
    """The host, then without its leading labels one at a time, as long as a key of the database
    can be that long: each suffix is a slice of the host, so a host of many labels costs linear time."""
    start = 0
    for _ in range(_MAX_KEY_LABELS):
        yield host[start:]
        dot = host.find(".", start)
        if dot < 0:
            return
        start = dot + 1


def _paths_to_try(path: str) -> list[str]:
    first = next((part for part in path.split("/") if part), None)
    return [path, "/" + first, ""] if first is not None else [""]


def _key(domain: str) -> str:
    host, slash, rest = domain.strip().partition("/")
    return host.lower() + slash + rest


def load_referers(path: str | Path | None = None) -> RefererDatabase:
    """Load a referer database in referer-parser's format (``referers.yml``, or its JSON twin).

    ``path`` defaults to the copy shipped with sessionize (referer-parser at commit b70173e, 2025-11-25).
    When a domain is listed twice, the first entry in the file wins.

    >>> db = load_referers()
    >>> db.lookup("t.co")
    Referer(source='Twitter', medium='social', parameters=())
    """
    if path is None:
        shown = "the bundled referers.yml"
        text = resources.files("sessionize").joinpath(*_PACKAGE_FILE).read_text(encoding="utf-8")
    else:
        shown = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as ex:
            reason = ex.strerror if isinstance(ex, OSError) and ex.strerror else str(ex)
            raise RefererDatabaseError(
                f"{shown}: cannot read the referer database ({reason}). Give --referers a referers.yml "
                "from github.com/snowplow-referer-parser/referer-parser (resources/referers.yml)."
            ) from ex
    # BaseLoader keeps every scalar a string: a parameter named "on" or "no" must not become a bool.
    loader = getattr(yaml, "CBaseLoader", yaml.BaseLoader)
    try:
        document = yaml.load(text, Loader=loader)
    except yaml.YAMLError as ex:
        raise RefererDatabaseError(
            f"{shown}: not a referer database: the YAML does not parse ({ex}). Give --referers a "
            "referers.yml from github.com/snowplow-referer-parser/referer-parser (resources/referers.yml)."
        ) from ex
    entries = _parse_document(document, shown)
    if path is None:
        return RefererDatabase(path=shown, entries=entries)
    return RefererDatabase(path=shown, entries=entries, categories=_with_own_sites(entries))


def referers_identity(path: str | Path | None = None) -> str:
    """What an incremental state records of the referer database (``--referers``; ``None``: the bundled
    one): the SHA-256 of its bytes (the first 16 hex digits), then the file as shown in messages.
    ``""`` when the file cannot be read (:func:`load_referers` says why)."""
    try:
        if path is None:
            shown, data = "the bundled referers.yml", resources.files("sessionize").joinpath(*_PACKAGE_FILE)
            content = data.read_bytes()
        else:
            shown, content = str(path), Path(path).read_bytes()
    except OSError:
        return ""
    return f"sha256:{hashlib.sha256(content).hexdigest()[:16]} {shown}"


def _parse_document(document: Any, shown: str) -> dict[str, Referer]:
    def bad(what: str) -> RefererDatabaseError:
        return RefererDatabaseError(
            f"{shown}: not a referer database: {what}. Expected referer-parser's format: mediums "
            "(search, social, ...) holding sources, each with a 'domains' list and optional 'parameters'."
        )

    if not isinstance(document, dict) or not document:
        raise bad("the top level is not a mapping of mediums")
    entries: dict[str, Referer] = {}
    for medium, sources in document.items():
        if not isinstance(sources, dict):
            raise bad(f"medium {medium!r} is not a mapping of sources")
        for source, spec in sources.items():
            if not isinstance(spec, dict) or not isinstance(spec.get("domains"), list):
                raise bad(f"source {source!r} (medium {medium!r}) has no 'domains' list")
            parameters = spec.get("parameters") or []
            if not isinstance(parameters, list):
                raise bad(f"the 'parameters' of source {source!r} (medium {medium!r}) are not a list")
            referer = Referer(source=source, medium=medium.lower(), parameters=tuple(parameters))
            for domain in spec["domains"]:
                if isinstance(domain, str) and domain.strip():
                    entries.setdefault(_key(domain), referer)
    if not entries:
        raise bad("it lists no domains")
    return entries


class _Url(NamedTuple):
    host: str | None
    path: str
    query: str


def _url_parts(url: str) -> tuple[SplitResult, str | None] | None:
    """``urlsplit`` of a URL and its lower-case host; a bare ``host/path`` counts as a URL."""
    text = splittable(url)
    if text is None:
        return None
    try:
        parts = urlsplit(text)
        host = parts.hostname
    except ValueError:
        return None
    return parts, valid_host(host)


def _split_url(url: str) -> _Url | None:
    """Lower-case host, percent-decoded path and raw query; a bare ``host/path`` counts as a URL."""
    split = _url_parts(url)
    if split is None:
        return None
    parts, host = split
    return _Url(host, unquote(parts.path), parts.query)


def _search_term(query: str, parameters: Sequence[str]) -> str | None:
    # referer-parser: the first query parameter, in query order, whose name is one of the site's.
    for pair in query.split("&"):
        equals = pair.find("=")
        name, value = (pair[:equals], pair[equals + 1 :]) if equals > 0 else (pair, "")
        if unquote_plus(name) in parameters:
            return unquote_plus(value) or None
    return None


def _is_internal(
    host: str, landing_host: str | None, internal_domains: Sequence[str], *, same_site: bool = True
) -> bool:
    """Whether a referrer from ``host`` is the site's own. GA4 (``same_site``) counts a referrer of the
    landing page's domain or any of its subdomains as a self-referral (``blog.example.com`` to
    ``www.example.com``: both ``example.com``, with the Public Suffix List); Snowplow's referer parser
    only the landing page's own host. Hosts in ``internal_domains`` and their subdomains are internal
    under both. A Unicode host is compared in its ASCII spelling (``bücher.de`` is ``xn--bcher-kva.de``,
    as browsers send it), so that one site spelled both ways is one site."""
    host = ascii_host(host) or host
    landing_host = None if landing_host is None else ascii_host(landing_host) or landing_host
    if host == landing_host:
        return True
    site = registered_domain(host) if same_site and landing_host is not None else None
    if site is not None and landing_host is not None and site == registered_domain(landing_host):
        return True
    return any(host == domain or host.endswith("." + domain) for domain in internal_domains)


def _landing_host(url: str | None) -> str | None:
    if url is None:
        return None
    parsed = _split_url(url)
    return None if parsed is None else parsed.host


class _Classified(NamedTuple):
    referrer_host: str | None
    source_name: str | None
    medium: str | None
    search_term: str | None
    traffic_source: str | None
    # For the channel: GA4's source and medium of a session without UTM tags, and the source category.
    ga_source: str
    ga_medium: str
    category: SourceCategory | None


_DIRECT = _Classified(None, None, DIRECT, None, DIRECT, "(direct)", "(none)", None)
# GA4 gives referrals from search engines the medium "organic" and every other site "referral": it has no
# list of webmail or ad sites, so a link from mail.google.com is mail.google.com / referral, a Referral.
_GA_MEDIUM = {SEARCH: "organic"}


def _spellings(name: str) -> tuple[str, str]:
    """A source name as GA4's table may spell it: as it is, and without spaces and punctuation
    (``yahoo!`` is ``yahoo``)."""
    return name, re.sub(r"[^0-9a-z.]+", "", name)


def _with_own_sites(entries: Mapping[str, Referer]) -> dict[str, SourceCategory]:
    """GA4's table, and the search and social sites a referer database the user gave (``--referers``,
    usually a fork of the bundled one) adds to the bundled database: their names and hosts, where the
    table has no category for them. A name or host the bundled database has gets none, also when the
    fork changes its entry or adds a host to its site (GA4's table alone decides, as without
    ``--referers``): the bundled file given by name gives the default's channels."""
    categories: dict[str, SourceCategory] = dict(ga4_source_categories())
    bundled = {alias for key, referer in load_referers().entries.items() for alias in _aliases(key, referer)}
    for key, referer in entries.items():
        if referer.medium not in (SEARCH, SOCIAL):
            continue
        category: SourceCategory = "search" if referer.medium == SEARCH else "social"
        for alias in _aliases(key, referer):
            if alias not in bundled:
                categories.setdefault(alias, category)
    return categories


def _aliases(key: str, referer: Referer) -> set[str]:
    """The names of an entry (as GA4's table may spell them) and its host (with and without ``www.``)."""
    host = key.partition("/")[0]
    return {*_spellings(referer.source.lower()), host, host.removeprefix("www.")} - {""}


def _table_category(names: Iterable[str], db: RefererDatabase) -> SourceCategory | None:
    """The category of the first of ``names`` the database's categories list (GA4's table)."""
    return next((db.categories[name] for name in names if name in db.categories), None)


def _classify(
    referrer: str | None,
    landing_host: str | None,
    internal_domains: Sequence[str],
    db: RefererDatabase,
    same_site: bool = True,
) -> _Classified:
    if referrer is None or not referrer.strip():
        return _DIRECT
    parsed = _split_url(referrer)
    if parsed is None or parsed.host is None or not web_referrer(splittable(referrer) or ""):
        return _Classified(None, None, None, None, traffic_source(referrer), "(not set)", "(not set)", None)
    host = parsed.host
    if _is_internal(host, landing_host, internal_domains, same_site=same_site):
        return _DIRECT._replace(referrer_host=host, medium=INTERNAL)
    names = (host, host.removeprefix("www."))
    referer = db.lookup(host, parsed.path)
    if referer is None:
        return _Classified(
            host, None, REFERRAL, None, traffic_source(referrer), host, REFERRAL, _table_category(names, db)
        )
    source = referer.source.lower()
    term = _search_term(parsed.query, referer.parameters) if referer.medium == SEARCH else None
    # GA4's source is the search engine's name for a search, else the referring host.
    engine = _spellings(source) if referer.medium == SEARCH else ()
    category = _table_category((*names, *engine), db)
    return _Classified(
        host,
        referer.source,
        referer.medium,
        term,
        traffic_source(referrer),
        source,
        _GA_MEDIUM.get(referer.medium, REFERRAL),
        category,
    )


def classify_referrer(
    referrer: str | None,
    *,
    landing_url: str | None,
    internal_domains: Sequence[str] = (),
    db: RefererDatabase,
) -> dict[str, str | None]:
    """The referrer's host, source name, medium, search term and traffic source.

    ``medium`` is the referer database's section for a known site (``search``, ``social``, ``email``,
    ``paid``, ``chatbot``, ``unknown``), ``referral`` for any other site, ``internal`` when the
    referrer's host is the landing page's host or one of ``internal_domains`` or a subdomain of one
    (then ``traffic_source`` is ``direct``), ``direct`` without a referrer, and null for a referrer
    that has no host.

    >>> db = load_referers()
    >>> classify_referrer("https://www.google.co.uk/search?q=tarot+cards", landing_url=None, db=db)
    {'referrer_host': 'www.google.co.uk', 'source_name': 'Google', 'medium': 'search', \
'search_term': 'tarot cards', 'traffic_source': 'google'}
    >>> landing = "https://shop.example.com/a"
    >>> internal = classify_referrer("https://shop.example.com/", landing_url=landing, db=db)
    >>> internal["medium"], internal["traffic_source"]
    ('internal', 'direct')
    """
    internal = normalize_internal_domains(internal_domains)
    result = _classify(referrer, _landing_host(landing_url), internal, db)
    return dict(zip(REFERRER_FIELDS, result[: len(REFERRER_FIELDS)], strict=True))


def parse_utm(url: str | None) -> dict[str, str | None]:
    """UTM fields and click ids from a URL's query string, percent-decoded (``+`` is a space).

    A parameter given twice keeps its first non-empty value; an empty value is null. Names are
    case-sensitive, as in GA4. The fragment (after ``#``) is not read.

    >>> parse_utm("https://a.example/?utm_source=news+letter&utm_medium=e%2Dmail&gclid=")["utm_medium"]
    'e-mail'
    """
    return {name: value for name, value in _url_fields(url).items() if name in UTM_FIELDS}


CAMPAIGN = "_campaign"


def campaign_key(url: str | None) -> str | None:
    """The campaign a URL carries (its UTM values and click ids, joined), or None without any.

    >>> campaign_key("https://a.example/?utm_source=news&utm_campaign=bf"), campaign_key("https://a.example/")
    ('news||bf|||||', None)
    >>> campaign_key("https://a.example/?gbraid=B")
    '||||||||B|'
    """
    fields = _url_fields(url)
    values = [fields[name] for name in UTM_FIELDS]
    # gbraid and wbraid (Paid Search as gclid is) only where present: the keys of other URLs stay as
    # they were, and an incremental state's open session keeps its campaign.
    clicks = [fields[name] for name in GOOGLE_CLICK_IDS]
    if any(clicks):
        values += clicks
    return "|".join(v or "" for v in values) if any(values) else None


def add_campaign_key(events: pl.LazyFrame) -> pl.LazyFrame:
    """Add the ``_campaign`` of each page view's URL (null for other events), once per distinct URL."""

    def keys(urls: list[str | None]) -> pl.Series:
        return pl.Series([campaign_key(url) for url in urls], dtype=pl.String)

    key = pl.col(S.URL).map_batches(lambda urls: map_distinct(urls, keys), return_dtype=pl.String)
    return events.with_columns(pl.when(pl.col(S.IS_PAGEVIEW)).then(key).otherwise(None).alias(CAMPAIGN))


def _url_fields(url: str | None) -> dict[str, str | None]:
    """:func:`_utm_from_query` of a URL's query string."""
    parsed = None if url is None else _split_url(url)
    return _utm_from_query("" if parsed is None else parsed.query)


def _utm_from_query(query: str) -> dict[str, str | None]:
    """:data:`UTM_FIELDS`, :data:`GOOGLE_CLICK_IDS` and :data:`CHANNEL_PARAMS` of a query string, in that
    order."""
    result: dict[str, str | None] = dict.fromkeys((*UTM_FIELDS, *GOOGLE_CLICK_IDS, *CHANNEL_PARAMS))
    if not query:
        return result
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        name = unquote_plus(name)
        if name in result and result[name] is None:
            result[name] = unquote_plus(value) or None
    return result


# ---------------------------------------------------------------------------------------------------
# GA4 default channel group.
#
# The rules for manual (non-Google-Ads) traffic, in GA4's order, first match wins, from Google's
# "[GA4] Default channel group", https://support.google.com/analytics/answer/9756891 ("Channels for
# manual traffic"). Matching is case-insensitive (GA4's channel definitions are), so values are
# lower-cased first. "Source matches a list of ... sites" is the source category (ga4_source_categories).
# A Google Ads click id (gclid, or gbraid/wbraid for iOS traffic: auto-tagging) makes the session Paid
# Search before any of these rules, as GA4 does for Google Ads search clicks. GA4 does not read Microsoft
# Ads' msclkid: such a click is what its UTM tags or referrer make it (bing / organic without tags).

_Field = Literal["source", "medium", "campaign", "category"]
_PAID_MEDIUM = r"^(.*cp.*|ppc|retargeting|paid.*)$"
_SHOP_CAMPAIGN = r"^(.*(([^a-df-z]|^)shop|shopping).*)$"
_EMAIL = ("email", "e-mail", "e_mail", "e mail")


@dataclass(frozen=True)
class _Test:
    """One condition: the field is one of ``values``, or contains a match of ``pattern``."""

    field: _Field
    values: tuple[str, ...] = ()
    pattern: str | None = None

    def holds(self, value: str | None) -> bool:
        if value is None:
            return False
        if self.pattern is not None:
            return re.search(self.pattern, value) is not None
        return value in self.values

    def expr(self, column: pl.Expr) -> pl.Expr:
        test = column.str.contains(self.pattern) if self.pattern is not None else column.is_in(self.values)
        return test.fill_null(False)


def _is(field: _Field, *values: str) -> _Test:
    return _Test(field, values=values)


def _matches(field: _Field, pattern: str) -> _Test:
    return _Test(field, pattern=pattern)


# Each rule: channel, then alternatives (OR) of conditions that must all hold (AND).
_Rule = tuple[str, tuple[tuple[_Test, ...], ...]]
_DIRECT_RULE: _Rule = ("Direct", ((_is("source", "(direct)"), _is("medium", "(not set)", "(none)")),))
#: The paid channels: a paid medium and one of the alternatives ("Paid Other": any paid medium).
_PAID: tuple[_Rule, ...] = tuple(
    (channel, tuple((_matches("medium", _PAID_MEDIUM), *tests) for tests in alternatives))
    for channel, alternatives in (
        ("Paid Shopping", ((_is("category", "shopping"),), (_matches("campaign", _SHOP_CAMPAIGN),))),
        ("Paid Search", ((_is("category", "search"),),)),
        ("Paid Social", ((_is("category", "social"),),)),
        ("Paid Video", ((_is("category", "video"),),)),
        ("Paid Other", ((),)),
    )
)
_DISPLAY: _Rule = ("Display", ((_is("medium", "display", "banner", "expandable", "interstitial", "cpm"),),))
_SOCIAL_MEDIA = ("social", "social-network", "sm", "social network", "social media")


def _organic(*social_media: str) -> tuple[_Rule, ...]:
    """The rules after the paid ones and Display, the same in both rule sets but for the social media."""
    return (
        ("Organic Shopping", ((_is("category", "shopping"),), (_matches("campaign", _SHOP_CAMPAIGN),))),
        ("Organic Social", ((_is("category", "social"),), (_is("medium", *social_media),))),
        ("Organic Video", ((_is("category", "video"),), (_matches("medium", r"^(.*video.*)$"),))),
        ("Organic Search", ((_is("category", "search"),), (_is("medium", "organic"),))),
        ("Referral", ((_is("medium", "referral", "app", "link"),),)),
        ("Email", ((_is("source", *_EMAIL),), (_is("medium", *_EMAIL),))),
        ("Affiliates", ((_is("medium", "affiliate"),),)),
        ("Audio", ((_is("medium", "audio"),),)),
        ("SMS", ((_is("source", "sms"),), (_is("medium", "sms"),))),
        (
            "Mobile Push Notifications",
            (
                (_matches("medium", r"push$"),),
                (_matches("medium", "mobile|notification"),),
                (_is("source", "firebase"),),
            ),
        ),
    )


# GA4's: Display before Paid Other, "cross-network" in the campaign.
_RULES: tuple[_Rule, ...] = (
    _DIRECT_RULE,
    ("Cross-network", ((_matches("campaign", "cross-network"),),)),
    *_PAID[:-1],
    _DISPLAY,
    _PAID[-1],
    *_organic(*_SOCIAL_MEDIA, "social-media"),
)
# Snowplow's default channel group (its web and unified dbt packages' ``channel_group_query``, documented
# at https://docs.snowplow.io/docs/modeling-your-data/modeling-your-data-with-dbt/dbt-models/dbt-web-data-model/):
# GA4's rules on the campaign fields alone (mkt_source, mkt_medium, mkt_campaign: the landing page's UTM
# tags), with the source category of mkt_source; no referrer fallback (an untagged session is
# Unassigned), no click id precedence, "cross-network" in the medium, the paid branch before Display,
# and no "social-media" among the social media.
_SNOWPLOW_RULES: tuple[_Rule, ...] = (
    _DIRECT_RULE,
    ("Cross-network", ((_matches("medium", "cross-network"),),)),
    *_PAID,
    _DISPLAY,
    *_organic(*_SOCIAL_MEDIA),
)
PAID_SEARCH = "Paid Search"
UNASSIGNED = "Unassigned"
#: Every value ``channel`` can take.
CHANNELS: tuple[str, ...] = (*dict.fromkeys(name for name, _ in _RULES), UNASSIGNED)


def channel_group(
    source: str | None,
    medium: str | None,
    campaign: str | None,
    *,
    has_google_click_id: bool,
    source_category: SourceCategory | None,
) -> str:
    """GA4's default channel group of a session's source, medium and campaign (case-insensitive).

    ``source_category`` is GA4's category of the source (``shopping``, ``search``, ``social``,
    ``video``; see :meth:`RefererDatabase.source_category`). The same rules as
    :func:`channel_expr`, one value at a time.

    >>> channel_group("google", "cpc", None, has_google_click_id=False, source_category="search")
    'Paid Search'
    >>> channel_group("newsletter", "email", "spring", has_google_click_id=False, source_category=None)
    'Email'
    """
    if has_google_click_id:
        return PAID_SEARCH
    values: dict[_Field, str | None] = {
        "source": None if source is None else source.lower(),
        "medium": None if medium is None else medium.lower(),
        "campaign": None if campaign is None else campaign.lower(),
        "category": source_category,
    }
    for channel, alternatives in _RULES:
        if any(all(test.holds(values[test.field]) for test in tests) for tests in alternatives):
            return channel
    return UNASSIGNED


def channel_expr(
    source: pl.Expr,
    medium: pl.Expr,
    campaign: pl.Expr,
    *,
    has_google_click_id: pl.Expr,
    source_category: pl.Expr,
    snowplow: bool = False,
) -> pl.Expr:
    """:func:`channel_group` as one Polars expression over columns (a ``when`` chain, no Python per
    row); with ``snowplow``, Snowplow's rules (trimmed values, no click id precedence; see
    :data:`sessionize.config.CHANNEL_RULES`)."""
    columns: dict[_Field, pl.Expr] = {
        "source": source.str.to_lowercase(),
        "medium": medium.str.to_lowercase(),
        "campaign": campaign.str.to_lowercase(),
        "category": source_category,
    }
    if snowplow:
        columns = {field: expr.str.strip_chars() for field, expr in columns.items()}
    rules = [
        (
            pl.any_horizontal(
                pl.all_horizontal(test.expr(columns[test.field]) for test in tests) for tests in alternatives
            ),
            channel,
        )
        for channel, alternatives in (_SNOWPLOW_RULES if snowplow else _RULES)
    ]
    (condition, channel), *rest = rules
    clicked = pl.lit(False) if snowplow else has_google_click_id.fill_null(False)
    chain = pl.when(clicked).then(pl.lit(PAID_SEARCH))
    chained = chain.when(condition).then(pl.lit(channel))
    for condition, channel in rest:
        chained = chained.when(condition).then(pl.lit(channel))
    return chained.otherwise(pl.lit(UNASSIGNED))


# ---------------------------------------------------------------------------------------------------
# PostHog's channel type (``$channel_type`` of its sessions; ``--channel-rules posthog``).
#
# The default rules of PostHog's ``posthog/hogql/database/schema/channel_type.py`` (PostHog/posthog, read at
# commit a6e3cd83a8e653036341a236edd2cbfe268470e5; documented at https://posthog.com/docs/data/channel-type),
# in their order: Cross Network; the paid branch (a paid
# medium, a gclid or any gad_source), whose type is the first of the paid type of the source, a shopping
# campaign, the paid type of the medium, the paid type of the referring domain, then gad_source 1 (Paid
# Search), a video campaign, an fbclid (Paid Social), else Paid Unknown; Direct (no referrer, no medium,
# no source but a direct one, no fbclid); else the organic types in the same order, then a video
# campaign, a medium ending in "push", an fbclid (Organic Social), no referrer (Direct), a referrer
# (Referral), else Unknown. Source, medium, campaign and gad_source are null when empty or "null" (then
# lower-cased, ASCII only, as ClickHouse's lower); the source and referring domain are looked up as they
# are, then cut to their registered domain (ClickHouse's cutToFirstSignificantSubdomain; here the Public
# Suffix List's, see sessionize.referrer.registered_domain).
#
# PostHog's own table of source types (channel_definitions.json) is not shipped: a source's type is its
# GA4 source category (the same table as --channel-rules ga4, from which PostHog's derives), and for a
# referring domain also that of its search engine's name and its host without www. (as --channel-rules
# ga4 reads it) and Email for a webmail site of the referer database. The medium types are PostHog's own.

POSTHOG_DIRECT = "$direct"
_PH_PAID_MEDIUMS = ("cpc", "cpm", "cpv", "cpa", "ppc", "retargeting")
_PH_SHOP_CAMPAIGN = r"(?s)^(.*(([^a-df-z]|^)shop|shopping).*)$"
_PH_VIDEO_CAMPAIGN = r"(?s)^(.*video.*)$"
_PH_SOCIAL_MEDIA = ("sm", "social", "social media", "social network", "social-media", "social-network")
#: PostHog's medium types: medium -> (type if paid, type if organic).
_PH_MEDIUM_TYPES: dict[str, tuple[str | None, str]] = {
    **dict.fromkeys(("affiliate", "partnership", "partnerships"), (None, "Affiliate")),
    **dict.fromkeys(("app", "link", "referral"), (None, "Referral")),
    "audio": (None, "Audio"),
    **dict.fromkeys(("banner", "cpm", "display", "expandable", "interstitial"), ("Display", "Display")),
    **dict.fromkeys(_EMAIL, (None, "Email")),
    **dict.fromkeys(("mobile", "notification", "push"), (None, "Push")),
    **dict.fromkeys(_PH_SOCIAL_MEDIA, ("Paid Social", "Organic Social")),
    "video": ("Paid Video", "Organic Video"),
}
_PH_CATEGORY_TYPES = {"search": "Search", "social": "Social", "shopping": "Shopping", "video": "Video"}
#: Every value ``channel`` takes under ``--channel-rules posthog``.
POSTHOG_CHANNELS: tuple[str, ...] = (
    "Cross Network",
    *(f"Paid {kind}" for kind in _PH_CATEGORY_TYPES.values()),
    "Display",
    "Paid Unknown",
    "Direct",
    *(f"Organic {kind}" for kind in _PH_CATEGORY_TYPES.values()),
    "Affiliate",
    "Referral",
    "Audio",
    "Email",
    "Push",
    "Unknown",
)


def _null_if_empty(value: pl.Expr) -> pl.Expr:
    """PostHog's ``nullIf(nullIf(value, ''), 'null')``."""
    return pl.when(value.is_in(["", "null"]).not_()).then(value)


def _ascii_lower(value: pl.Expr) -> pl.Expr:
    """ClickHouse's ``lower``: ASCII letters only. Polars lower-cases all of Unicode, where only the
    Kelvin sign becomes an ASCII letter (``k``): it is kept apart (as a character no rule reads)."""
    return value.str.replace_all("\u212a", "\ufffd", literal=True).str.to_lowercase()


def _typed(key: pl.Expr, types: Mapping[str, str]) -> pl.Expr:
    """The type of a key in a table (null for none, or a null key): a vectorized lookup."""
    return key.replace_strict(list(types), list(types.values()), default=None, return_dtype=pl.String)


def posthog_channel_expr(
    source: pl.Expr,
    medium: pl.Expr,
    campaign: pl.Expr,
    *,
    referring_domain: pl.Expr,
    source_site: pl.Expr,
    referrer_site: pl.Expr,
    referrer_category: pl.Expr,
    referrer_is_email: pl.Expr,
    gclid: pl.Expr,
    fbclid: pl.Expr,
    gad_source: pl.Expr,
    categories: Mapping[str, SourceCategory],
) -> pl.Expr:
    """PostHog's channel type as one Polars expression (see the notes above).

    ``source``, ``medium``, ``campaign``, ``gclid``, ``fbclid`` and ``gad_source`` are the landing page's
    values; ``referring_domain`` is PostHog's: ``$direct`` without an (external) referrer, else the
    referrer's host, null for a referrer without one. ``source_site`` and ``referrer_site`` are the
    registered domains of the lower-cased source and of the referrer's host; ``referrer_category`` the
    referrer's GA4 source category as ``--channel-rules ga4`` finds it; ``referrer_is_email`` whether
    the referer database lists it as a webmail site.
    """
    source = _ascii_lower(_null_if_empty(source))
    medium = _ascii_lower(_null_if_empty(medium))
    campaign = _ascii_lower(_null_if_empty(campaign))
    gad_source = _null_if_empty(gad_source)
    has_gclid = _null_if_empty(gclid).is_not_null()
    has_fbclid = _null_if_empty(fbclid).is_not_null()
    paid = {key: f"Paid {_PH_CATEGORY_TYPES[category]}" for key, category in categories.items()}
    organic = {key: f"Organic {_PH_CATEGORY_TYPES[category]}" for key, category in categories.items()}
    own_category = referrer_category.replace_strict(
        list(_PH_CATEGORY_TYPES), list(_PH_CATEGORY_TYPES.values()), default=None, return_dtype=pl.String
    )

    def named(site: pl.Expr) -> pl.Expr:
        # A registered domain's name without its suffix (google.co.uk: google), as GA4's table keys
        # the big sites, where PostHog's own table also lists their domains (review 46).
        return site.str.extract(r"^([^.]+)\.", 1)

    def referrer_type(table: Mapping[str, str], prefix: str) -> pl.Expr:
        return pl.coalesce(
            _typed(referring_domain, table),
            _typed(referrer_site, table),
            # Not a webmail site's (mail.google.com: Email below, not Search).
            _typed(pl.when(referrer_is_email.fill_null(False).not_()).then(named(referrer_site)), table),
            prefix + own_category,
        )

    shop = campaign.str.contains(_PH_SHOP_CAMPAIGN)
    video = campaign.str.contains(_PH_VIDEO_CAMPAIGN)
    paid_types = {name: kind for name, (kind, _) in _PH_MEDIUM_TYPES.items() if kind is not None}
    organic_types = {name: kind for name, (_, kind) in _PH_MEDIUM_TYPES.items()}

    def typed(table: Mapping[str, str], medium_types: Mapping[str, str], kind: str) -> list[pl.Expr]:
        # The source's type, a shopping campaign, the medium's type, the referrer's: PostHog's order.
        return [
            _typed(source, table),
            _typed(source_site, table),
            _typed(named(source_site), table),
            pl.when(shop).then(pl.lit(f"{kind} Shopping")),
            _typed(medium, medium_types),
            referrer_type(table, f"{kind} "),
        ]

    paid_type = pl.coalesce(
        *typed(paid, paid_types, "Paid"),
        pl.when(gad_source == "1")
        .then(pl.lit("Paid Search"))
        .when(video)
        .then(pl.lit("Paid Video"))
        .when(has_fbclid)
        .then(pl.lit("Paid Social"))
        .otherwise(pl.lit("Paid Unknown")),
    )
    organic_type = pl.coalesce(
        *typed(organic, organic_types, "Organic"),
        pl.when(referrer_is_email.fill_null(False)).then(pl.lit("Email")),
        pl.when(video)
        .then(pl.lit("Organic Video"))
        .when(medium.str.contains("push$"))
        .then(pl.lit("Push"))
        .when(has_fbclid)
        .then(pl.lit("Organic Social"))
        .when(referring_domain == POSTHOG_DIRECT)
        .then(pl.lit("Direct"))
        .when(referring_domain.is_not_null())
        .then(pl.lit("Referral"))
        .otherwise(pl.lit("Unknown")),
    )
    is_paid = (
        medium.is_in(_PH_PAID_MEDIUMS).fill_null(False)
        | medium.str.starts_with("paid").fill_null(False)
        | has_gclid
        | gad_source.is_not_null()
    )
    direct = (
        (referring_domain == POSTHOG_DIRECT).fill_null(False)
        & medium.is_null()
        & (source.is_null() | source.is_in(["(direct)", "direct", POSTHOG_DIRECT]).fill_null(False))
        & has_fbclid.not_()
    )
    return (
        pl.when(campaign.str.contains("cross-network").fill_null(False))
        .then(pl.lit("Cross Network"))
        .when(is_paid)
        .then(paid_type)
        .when(direct)
        .then(pl.lit("Direct"))
        .otherwise(organic_type)
    )


def attribute_session(
    referrer: str | None,
    landing_url: str | None,
    *,
    internal_domains: Sequence[str] = (),
    db: RefererDatabase,
    referrer_page: str | None = None,
) -> dict[str, str | None]:
    """Every attribution column of one session: :func:`classify_referrer`, :func:`parse_utm` and the channel.

    What :func:`enrich_attribution` computes for each row, one session at a time. ``referrer_page``
    is the page the referrer led to when the session has no landing page (its first event's URL):
    the internal-referrer test compares with its host then.

    >>> db = load_referers()
    >>> landing = "https://a.example/?utm_source=fb&utm_medium=paid"
    >>> attribute_session("https://l.facebook.com/", landing, db=db)["channel"]
    'Paid Social'
    """
    internal = normalize_internal_domains(internal_domains)
    host = _landing_host(landing_url) if landing_url is not None else _landing_host(referrer_page)
    referrer_part = _classify(referrer, host, internal, db)
    fields = _url_fields(landing_url)
    utm = {name: fields[name] for name in UTM_FIELDS}
    tagged = utm["utm_source"] is not None or utm["utm_medium"] is not None
    channel = channel_group(
        (utm["utm_source"] or "(not set)") if tagged else referrer_part.ga_source,
        (utm["utm_medium"] or "(not set)") if tagged else referrer_part.ga_medium,
        utm["utm_campaign"],
        has_google_click_id=any(fields[name] is not None for name in _GOOGLE_CLICKS),
        source_category=db.source_category(utm["utm_source"]) if tagged else referrer_part.category,
    )
    return {
        **dict(zip(REFERRER_FIELDS, referrer_part[: len(REFERRER_FIELDS)], strict=True)),
        **utm,
        "channel": channel,
    }


# ---------------------------------------------------------------------------------------------------
# Vectorized: Python once per distinct landing URL and per distinct (referrer, landing host) pair.

_LANDING = "_attr_landing"
_REFERRER = "_attr_referrer"
_LANDING_FIELDS = ("_landing_host", *UTM_FIELDS, *GOOGLE_CLICK_IDS, *CHANNEL_PARAMS, "_utm_category")
_REFERRER_STRUCT_FIELDS = _Classified._fields
_LANDING_DTYPE = pl.Struct({name: pl.String for name in _LANDING_FIELDS})
_REFERRER_DTYPE = pl.Struct({name: pl.String for name in _REFERRER_STRUCT_FIELDS})


#: An absolute http(s) URL of printable ASCII with a plain host (letters, digits, dots, hyphens; at
#: most a DNS name's length), an optional port and no user info: its host and query, as ``urlsplit``
#: gives them, are the two groups (the query null when it has none). Other URLs go to ``urlsplit``.
_SIMPLE_URL = (
    # The host not ending with a dot: a fully qualified name's final dot is left out by the slow path.
    r"^https?://([A-Za-z0-9.-]{0,252}[A-Za-z0-9-])(?::[0-9]{1,5})?"
    r"(?:/[!-~&&[^?#]]*)?(?:\?([!-~&&[^#]]*))?(?:#[!-~]*)?$"
)


def _hosts_and_queries(urls: list[str | None]) -> tuple[list[str | None], list[str]]:
    """The lower-case host (null without a valid one) and the raw query ("" without one) of each URL,
    as :func:`_host_and_query` gives them: by one vectorized match for the plain ``http(s)`` URLs that
    almost every landing page is (``urlsplit`` costs about 11 µs a URL: 0.27 s for the 24k distinct
    landing pages of 10M events), by :func:`_host_and_query` for the others."""
    simple = (
        pl.Series(urls, dtype=pl.String)
        .str.extract_groups(_SIMPLE_URL)
        .struct.unnest()
        .select(pl.col("1").str.to_lowercase(), pl.col("2").fill_null(""))
    )
    hosts: list[str | None] = []
    queries: list[str] = []
    for url, host, query in zip(urls, *simple.to_dict(as_series=False).values(), strict=True):
        if host is None and url is not None:
            # One parse per URL gives both the host (for the internal-referrer test) and the query.
            host, query = parsed if (parsed := _host_and_query(url)) is not None else (None, "")
        hosts.append(host)
        queries.append(query)
    return hosts, queries


def _landing_batch(urls: list[str | None], db: RefererDatabase) -> pl.DataFrame:
    hosts, queries = _hosts_and_queries(urls)
    # Landing pages share few query strings (one per campaign link): each is read once.
    tags: dict[str, tuple[str | None, ...]] = {}
    for query in queries:
        if query not in tags:
            utm = _utm_from_query(query)
            tags[query] = (*utm.values(), db.source_category(utm["utm_source"]))
    rows = [tags[query] for query in queries]
    columns = {name: [row[i] for row in rows] for i, name in enumerate(_LANDING_FIELDS[1:])}
    return pl.DataFrame({_LANDING_FIELDS[0]: hosts, **columns}, schema=_LANDING_DTYPE.to_schema())


#: The longest landing URL whose host and query are kept for later batches. Real landing pages are far
#: shorter; a longer one (attacker-written, megabytes) is split each time it comes rather than kept:
#: 65,536 kept URLs of 100 KB would hold 13 GB, which no memory budget counts.
CACHED_URL_LENGTH = 2048


def _host_and_query(url: str) -> tuple[str | None, str] | None:
    """``_split_url(url)``'s host and query, without decoding the path.

    Kept for the most recent 65,536 URLs of at most :data:`CACHED_URL_LENGTH` characters (a few MB): a
    bucketed run parses each bucket's landing pages, mostly the same ones (20M events in 40 buckets:
    4.6 s of ``urlsplit``)."""
    if len(url) > CACHED_URL_LENGTH:
        return _split_host_and_query(url)
    return _cached_host_and_query(url)


def _split_host_and_query(url: str) -> tuple[str | None, str] | None:
    split = _url_parts(url)
    return None if split is None else (split[1], split[0].query)


_cached_host_and_query = functools.lru_cache(maxsize=1 << 16)(_split_host_and_query)


def _referrer_batch(
    pairs: list[dict[str, str | None]],
    db: RefererDatabase,
    internal_domains: Sequence[str],
    same_site: bool = True,
) -> pl.DataFrame:
    rows = [
        _classify(pair[S.REFERRER], pair["_landing_host"], internal_domains, db, same_site) for pair in pairs
    ]
    return pl.DataFrame(rows, schema=_REFERRER_DTYPE.to_schema(), orient="row")


def enrich_attribution(
    sessions: pl.LazyFrame,
    *,
    referers: RefererDatabase,
    internal_domains: Sequence[str] = (),
    channel_rules: str = "ga4",
) -> pl.LazyFrame:
    """Add the attribution columns to a session table with ``referrer`` and ``landing_page`` columns.

    Adds :data:`ATTRIBUTION_COLUMNS` (the same values as :func:`attribute_session` row by row) and sets
    ``traffic_source`` to ``direct`` for internal referrers. They depend only on the (landing page,
    referrer) pair, so they are computed once per distinct pair (sessions far outnumber pairs: 2.5M
    sessions have 300k pairs in the benchmark) and gathered back by each session's index among the
    pairs (see :func:`~sessionize.distinct.distinct_rows`), then added beside the session columns.
    Within the pairs, the URLs are parsed once per distinct landing page and once per distinct
    (referrer, landing host); the channel is a vectorized expression. ``channel_rules`` (see
    :data:`sessionize.config.CHANNEL_RULES`) ``snowplow`` gives Snowplow's channel from the UTM tags
    alone and its referer medium (``unknown`` for a site the database does not know, null without a referrer).
    """
    internal = normalize_internal_domains(internal_domains)
    present = sessions.collect_schema().names()
    replaced = [name for name in (*ATTRIBUTION_COLUMNS, TRAFFIC_SOURCE) if name in present]
    # A session without a page view: its referrer is tested against its first event's page.
    keys = [LANDING_PAGE, S.REFERRER, *([S.REFERRER_PAGE] if S.REFERRER_PAGE in present else [])]
    attributed = pl.struct(keys).map_batches(
        lambda pairs: _attribute_rows(pairs, referers=referers, internal=internal, rules=channel_rules),
        return_dtype=_ATTRIBUTION_DTYPE,
        is_elementwise=False,
    )
    return (
        sessions.drop(replaced)
        .with_columns(attributed.alias(_ATTRIBUTION))
        .unnest(_ATTRIBUTION)
        .drop(S.REFERRER_PAGE, strict=False)
    )


_ATTRIBUTION = "_attribution"
#: The columns :func:`_attribute_pairs` adds, in its order (the order :func:`enrich_attribution` adds them).
_ADDED_COLUMNS = (TRAFFIC_SOURCE, *(name for name in ATTRIBUTION_COLUMNS if name != "channel"), "channel")
_ATTRIBUTION_DTYPE = pl.Struct(dict.fromkeys(_ADDED_COLUMNS, pl.String))


def _attribute_rows(
    pairs: pl.Series, *, referers: RefererDatabase, internal: Sequence[str], rules: str = "ga4"
) -> pl.Series:
    """The attribution struct of each (landing page, referrer) row, computed once per distinct pair."""
    keys = pairs.struct.unnest()
    distinct, index = distinct_rows(keys)
    attributed = _attribute_pairs(distinct.lazy(), referers=referers, internal=internal, rules=rules).collect(
        engine="in-memory"
    )
    # A column null for every pair (click ids, utm_content: often absent from a whole data set) is made
    # null rather than gathered: a gathered text column holds 16 bytes a session even where null (40 MB
    # for 2.5M sessions), a null one nothing.
    empty = [name for name in _ADDED_COLUMNS if attributed.get_column(name).null_count() == attributed.height]
    gathered = attributed.select(name for name in _ADDED_COLUMNS if name not in empty)
    if gathered.width:
        gathered = gather_rows(gathered, index)
    nulls = pl.repeat(None, index.len(), dtype=pl.String, eager=True)
    return pl.struct(
        [gathered.get_column(name) if name not in empty else nulls.alias(name) for name in _ADDED_COLUMNS],
        eager=True,
    ).alias(pairs.name)


def _attribute_pairs(
    sessions: pl.LazyFrame, *, referers: RefererDatabase, internal: Sequence[str], rules: str = "ga4"
) -> pl.LazyFrame:
    """The attribution columns of each row of ``sessions`` (``internal``: normalized internal domains)."""
    landing = pl.col(LANDING_PAGE).map_batches(
        lambda urls: map_distinct(urls, lambda values: _landing_batch(values, referers)),
        return_dtype=_LANDING_DTYPE,
        is_elementwise=False,
    )
    host = pl.col(_LANDING).struct.field("_landing_host")
    if S.REFERRER_PAGE in sessions.collect_schema().names():
        # Sessions without a landing page: the host of the page their referrer led to (see
        # S.REFERRER_PAGE), so a same-site referrer is internal with or without a page view.
        page_host = pl.col(S.REFERRER_PAGE).map_batches(
            lambda urls: map_distinct(urls, lambda values: pl.Series([_landing_host(v) for v in values])),
            return_dtype=pl.String,
            is_elementwise=False,
        )
        host = pl.coalesce(host, page_host)
    pair = pl.struct(pl.col(S.REFERRER), host.alias("_landing_host"))
    referrer = pair.map_batches(
        lambda pairs: map_distinct(
            pairs, lambda values: _referrer_batch(values, referers, internal, same_site=rules != "snowplow")
        ),
        return_dtype=_REFERRER_DTYPE,
        is_elementwise=False,
    )
    utm = pl.col(_LANDING).struct.field
    ref = pl.col(_REFERRER).struct.field
    tagged = utm("utm_source").is_not_null() | utm("utm_medium").is_not_null()
    medium = ref("medium")
    if rules == "snowplow":
        # Snowplow: the campaign fields alone, and its referer parser's medium.
        channel = _on_distinct(
            lambda source, medium, campaign, category: channel_expr(
                source,
                medium,
                campaign,
                has_google_click_id=pl.lit(False),
                source_category=category,
                snowplow=True,
            ),
            source=utm("utm_source"),
            medium=utm("utm_medium"),
            campaign=utm("utm_campaign"),
            category=utm("_utm_category"),
        )
        medium = pl.when(medium == "referral").then(pl.lit("unknown")).when(medium != "direct").then(medium)
        return _attributed(sessions, landing, referrer, channel, medium)
    if rules == "posthog":
        # No referrer, or the site's own (internal): PostHog's "$direct".
        own = medium.is_in([DIRECT, INTERNAL]).fill_null(False)
        channel = _on_distinct(
            lambda **c: posthog_channel_expr(
                c["source"],
                c["medium"],
                c["campaign"],
                referring_domain=pl.when(c["own"]).then(pl.lit(POSTHOG_DIRECT)).otherwise(c["referrer_host"]),
                source_site=_sites(_ascii_lower(_null_if_empty(c["source"]))),
                referrer_site=_sites(pl.when(c["own"].not_()).then(c["referrer_host"])),
                referrer_category=c["referrer_category"],
                referrer_is_email=c["referrer_is_email"],
                gclid=c["gclid"],
                fbclid=c["fbclid"],
                gad_source=c["gad_source"],
                categories=referers.categories,
            ),
            source=utm("utm_source"),
            medium=utm("utm_medium"),
            campaign=utm("utm_campaign"),
            referrer_host=ref("referrer_host"),
            own=own,
            referrer_category=ref("category"),
            referrer_is_email=medium == EMAIL,
            gclid=utm("gclid"),
            fbclid=utm("fbclid"),
            gad_source=utm("gad_source"),
        )
        return _attributed(sessions, landing, referrer, channel, medium)
    channel = _on_distinct(
        lambda source, medium, campaign, clicked, category: channel_expr(
            source, medium, campaign, has_google_click_id=clicked, source_category=category
        ),
        source=pl.when(tagged).then(utm("utm_source").fill_null("(not set)")).otherwise(ref("ga_source")),
        medium=pl.when(tagged).then(utm("utm_medium").fill_null("(not set)")).otherwise(ref("ga_medium")),
        campaign=utm("utm_campaign"),
        clicked=pl.any_horizontal(utm(name).is_not_null() for name in _GOOGLE_CLICKS),
        category=pl.when(tagged).then(utm("_utm_category")).otherwise(ref("category")),
    )
    return _attributed(sessions, landing, referrer, channel, medium)


def _on_distinct(build: Callable[..., pl.Expr], **arguments: pl.Expr) -> pl.Expr:
    """``build(**arguments)``, a text expression, evaluated once per distinct row of the arguments' values
    and mapped back. The channel rules are a long ``when`` chain, each test evaluated on every row, and the
    rows repeat few combinations: of the 300k (landing page, referrer) pairs of 2.5M sessions in the
    benchmark, 287: their columns took 0.22 s, now 0.16 s (bench/README.md, stop 45)."""

    def evaluate(rows: pl.Series) -> pl.Series:
        distinct, index = distinct_rows(rows.struct.unnest())
        result = fresh_name("_result", distinct.columns)
        values = distinct.with_columns(build(**{name: pl.col(name) for name in arguments}).alias(result))
        return values.get_column(result).gather(index).alias(rows.name)

    inputs = pl.struct([expr.alias(name) for name, expr in arguments.items()])
    return inputs.map_batches(evaluate, return_dtype=pl.String, is_elementwise=False)


def _sites(hosts: pl.Expr) -> pl.Expr:
    """The registered domain of each host (null for none), computed once per distinct host."""

    def sites(values: list[str | None]) -> pl.Series:
        valid = (valid_host(value) if value is not None else None for value in values)
        return pl.Series(
            [None if host is None else registered_domain(host) for host in valid], dtype=pl.String
        )

    return hosts.map_batches(
        lambda batch: map_distinct(batch, sites), return_dtype=pl.String, is_elementwise=False
    )


def _attributed(
    sessions: pl.LazyFrame, landing: pl.Expr, referrer: pl.Expr, channel: pl.Expr, medium: pl.Expr
) -> pl.LazyFrame:
    """``sessions`` with the attribution columns of their landing page and referrer structs."""
    utm = pl.col(_LANDING).struct.field
    ref = pl.col(_REFERRER).struct.field
    return (
        sessions.with_columns(landing.alias(_LANDING))
        .with_columns(referrer.alias(_REFERRER))
        .with_columns(
            ref(TRAFFIC_SOURCE).alias(TRAFFIC_SOURCE),
            *(
                (medium if name == "medium" else ref(name)).alias(name)
                for name in REFERRER_FIELDS
                if name != TRAFFIC_SOURCE
            ),
            *(utm(name).alias(name) for name in UTM_FIELDS),
            channel.alias("channel"),
        )
        .drop(_LANDING, _REFERRER)
    )
