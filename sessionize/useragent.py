"""Device category, browser, OS and bot flag from the user agent.

The only module that imports ``ua-parser`` and ``crawlerdetect``. Both ship their rules in the package
(uap-core's ``regexes.yaml`` in ``ua-parser-builtins``, JayBizzle's Crawler-Detect patterns in
``crawlerdetect``): nothing is fetched at run time. Each distinct user agent is parsed once and joined back.

- ``browser`` and ``os`` are uap-core's family names, as Snowplow's and Matomo's ua-parser enrichments
  report them: ``Chrome``, ``Firefox``, ``Safari``, ``Mobile Safari``, ``Edge``, ``Chrome Mobile``,
  ``Samsung Internet``; ``Windows``, ``Mac OS X``, ``iOS``, ``Android``, ``Linux``, ``Ubuntu``,
  ``Chrome OS``. A bot keeps the name uap-core gives it (``Googlebot``, ``bingbot``). Null when unknown.
- ``is_bot`` is true for crawlers, spiders, link-preview fetchers, feed readers, monitors, headless
  browsers, and HTTP libraries and command-line clients (``curl``, ``Wget``, ``python-requests``,
  ``Go-http-client``, ``okhttp``): none of them is a person visiting the site. It is uap-core's ``Spider``
  device or a Crawler-Detect match.
- ``device_category`` is ``bot`` for a bot; else ``tablet`` for an iPad, Kindle/Silk, PlayBook or a user
  agent that says ``Tablet`` (but not Windows' ``Tablet PC``), and for an Android *browser* without
  ``Mobile`` in its user agent (Android's convention for tablets); ``mobile`` for ``Mobi``, iPhone, iPod,
  Opera Mini, Windows Phone, BlackBerry, Symbian and feature phones, other Android clients (app HTTP
  stacks such as Dalvik) and iOS; ``desktop`` for everything else, smart TVs and consoles included, and
  for user agents nobody recognises (as GA does). An iPad in "desktop site" mode sends a Mac user agent
  and is counted as desktop: nothing in the string tells them apart.
- An empty or missing user agent (``None``, ``""``, or ``-`` as web servers write it) gives null
  ``device_category``, ``browser`` and ``os`` and ``is_bot`` false: there is no evidence either way, and
  events without a user agent column must not all be taken for bots.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Final

import polars as pl
import ua_parser
from crawlerdetect import CrawlerDetect

from sessionize.distinct import map_distinct

DEFAULT_USER_AGENT_COLUMN = "user_agent"
DESKTOP, MOBILE, TABLET, BOT = "desktop", "mobile", "tablet", "bot"
DEVICE_CATEGORIES = (DESKTOP, MOBILE, TABLET, BOT)
#: Output columns, in the order they are added.
USER_AGENT_COLUMNS = ("device_category", "browser", "os", "is_bot")
USER_AGENT_DTYPE = pl.Struct(
    {"device_category": pl.String, "browser": pl.String, "os": pl.String, "is_bot": pl.Boolean}
)

UserAgentInfo = dict[str, str | bool | None]

_STRUCT = "_user_agent"

_EMPTY = frozenset({"", "-"})
#: What an empty user agent (one of ``_EMPTY``, or none) gives.
_NO_USER_AGENT: Final[UserAgentInfo] = {"device_category": None, "browser": None, "os": None, "is_bot": False}
_TABLET = re.compile(r"\biPad\b|\bKindle\b|\bSilk\b|PlayBook|\bTablet\b(?! PC)")
_MOBILE = re.compile(
    r"Mobi|\biPhone\b|\biPod\b|Opera Mini|Windows Phone|BlackBerry|\bBB10\b|Symbian|SymbOS|Series ?60|"
    r"\bMIDP\b|\bJ2ME\b|\bKAIOS\b|UP\.Browser|NetFront"
)
# Smart TVs, streaming sticks and consoles: Android ones leave out "Mobile" but are no tablets.
_TV = re.compile(
    r"SMART-TV|SmartTV|Smart-TV|Smart TV|SMART TV|Google ?TV|Android ?TV|\bAFT[A-Z0-9]{1,6}\b|BRAVIA|HbbTV|"
    r"CrKey|AppleTV|Roku|PlayStation|Xbox|Nintendo|\bWeb0S\b|webOS\.TV"
)
_MOBILE_OSES = frozenset({"iOS", "Windows Phone", "BlackBerry OS", "Symbian OS", "Firefox OS", "KaiOS"})
_PHONE_DEVICES = frozenset({"Generic Smartphone", "Generic Feature Phone", "iPhone", "iPod"})


class _BotDetector:
    """Crawler-Detect's test over a whole column at once: ``CrawlerDetect().is_crawler`` of each value.

    Its patterns are ~1,400 plain names, matched with Aho-Corasick, and ~80 regular expressions, run by
    Polars' Rust engine (those that need look-around, by Python's re). This is about 80x faster than
    Crawler-Detect's one Python regular expression per value, and gives the same answers
    (``tests/test_useragent.py``). Should a later crawlerdetect change its data layout or use syntax the
    Rust engine lacks, its own per-value test is used instead.
    """

    def __init__(self) -> None:
        self._per_value: CrawlerDetect | None = None
        try:
            from crawlerdetect.providers.crawlers import data as crawlers
            from crawlerdetect.providers.exclusions import data as exclusions

            literals = [name for name in map(_literal, crawlers) if name is not None]
            regexes = [p for p in crawlers if _literal(p) is None and not _LOOK_AROUND.search(p)]
            python_only = [p for p in crawlers if _literal(p) is None and _LOOK_AROUND.search(p)]
            self._literals = literals
            self._regex = f"(?i)(?:{'|'.join(regexes)})" if regexes else None
            self._python = re.compile("|".join(python_only), re.IGNORECASE) if python_only else None
            self._exclusions = f"(?i)(?:{'|'.join(exclusions)})"
            self._vectorized(pl.Series(["Mozilla/5.0 (compatible; Googlebot/2.1)"]))
        except (ImportError, pl.exceptions.ComputeError):
            self._per_value = CrawlerDetect()

    def flags(self, user_agents: pl.Series) -> pl.Series:
        """Whether each (stripped, non-empty) user agent is a crawler."""
        if self._per_value is not None:
            return pl.Series([self._per_value.is_crawler(ua) for ua in user_agents], dtype=pl.Boolean)
        return self._vectorized(user_agents)

    def _vectorized(self, user_agents: pl.Series) -> pl.Series:
        # As Crawler-Detect: strip the tokens of real browsers first, then look for a crawler's.
        agents = user_agents.str.replace_all(self._exclusions, "")
        found = agents.str.contains_any(self._literals, ascii_case_insensitive=True)
        if self._regex is not None:
            found = found | agents.str.contains(self._regex)
        if self._python is not None:
            search = self._python.search
            found = found | pl.Series([search(agent) is not None for agent in agents], dtype=pl.Boolean)
        return found.fill_null(False)


_LOOK_AROUND = re.compile(r"\(\?[=!<]|\\[1-9]")
_REGEX_SYNTAX = re.compile(r"[][(){}|*+?^$.\\]")


def _literal(pattern: str) -> str | None:
    """The text a pattern matches when it is a plain (ASCII) name with escaped punctuation, else None."""
    if not pattern.isascii() or _REGEX_SYNTAX.search(re.sub(r"\\\W", "", pattern)):
        return None
    return re.sub(r"\\(\W)", r"\1", pattern)


class _Parser:
    """uap-core through ua-parser (with the ua-parser-rs engine when installed) plus Crawler-Detect."""

    def __init__(self, *, accelerated: bool = True) -> None:
        resolver: ua_parser.Resolver
        try:
            if not accelerated:
                raise ImportError
            from ua_parser.regex import Resolver as RegexResolver
        except ImportError:
            # ua-parser without its [regex] extra: the same rules in Python's re, about 30x slower.
            resolver = ua_parser.BasicResolver(ua_parser.load_builtins())
            self.engine = "re"
        else:
            resolver = RegexResolver(ua_parser.load_lazy_builtins())
            self.engine = "ua-parser-rs"
        # No ua-parser cache: callers parse each distinct value once.
        self._uap = ua_parser.Parser(resolver)
        self._bots = _BotDetector()

    def parse_many(self, user_agents: Sequence[str | None]) -> pl.DataFrame:
        texts = [(ua or "").strip() for ua in user_agents]
        crawler = self._bots.flags(pl.Series(texts, dtype=pl.String)).to_list()
        columns: dict[str, list[str | bool | None]] = {name: [] for name in USER_AGENT_COLUMNS}
        for text, is_crawler in zip(texts, crawler, strict=True):
            row = self._parse(text, is_crawler=is_crawler)
            for name in USER_AGENT_COLUMNS:
                columns[name].append(row[name])
        return pl.DataFrame(columns, schema=dict(USER_AGENT_DTYPE.to_schema()))

    def _parse(self, text: str, *, is_crawler: bool) -> UserAgentInfo:
        if text in _EMPTY:
            return dict(_NO_USER_AGENT)
        result = self._uap.parse(text)
        browser = _family(result.user_agent)
        os = _family(result.os)
        device = _family(result.device)
        is_bot = is_crawler or device == "Spider"
        return {
            "device_category": BOT if is_bot else _category(text, os, device),
            "browser": browser,
            "os": os,
            "is_bot": is_bot,
        }


def _family(part: ua_parser.UserAgent | ua_parser.OS | ua_parser.Device | None) -> str | None:
    if part is None or part.family == "Other":
        return None
    return part.family


def _category(text: str, os: str | None, device: str | None) -> str:
    # TVs and consoles first: a Fire TV's WebView says "Mobile Safari", its Silk browser and a PS Vita's
    # say "Silk" (review of stop 57: they were mobile and tablet, where the docs promise desktop).
    if _TV.search(text):
        return DESKTOP
    if _TABLET.search(text):
        return TABLET
    if _MOBILE.search(text):
        return MOBILE
    if os == "Android" or "Android" in text:
        # Android browsers say "Mobile" on phones only; app HTTP stacks (Dalvik) say neither.
        return TABLET if "AppleWebKit" in text or "Gecko/" in text else MOBILE
    if os in _MOBILE_OSES or device in _PHONE_DEVICES:
        return MOBILE
    return DESKTOP


@functools.cache
def _default_parser() -> _Parser:
    # Loading the rules takes about 0.15 s: only when the first user agent is parsed.
    return _Parser()


def parse_user_agent(user_agent: str | None) -> UserAgentInfo:
    """``device_category``, ``browser``, ``os`` and ``is_bot`` of one user agent (see the module doc).

    >>> parse_user_agent("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)")
    {'device_category': 'bot', 'browser': 'Googlebot', 'os': None, 'is_bot': True}
    >>> parse_user_agent(None)
    {'device_category': None, 'browser': None, 'os': None, 'is_bot': False}
    """
    row: UserAgentInfo = parse_user_agents([user_agent]).row(0, named=True)
    return row


def parse_user_agents(user_agents: Sequence[str | None]) -> pl.DataFrame:
    """:func:`parse_user_agent` of each value, as a frame with the :data:`USER_AGENT_COLUMNS`.

    Parses every value given: pass distinct ones (``enrich_user_agent`` does). Without any user agent
    (an input without the column has only nulls) the rules are not loaded (0.15-0.2 s).
    """
    if all((user_agent or "").strip() in _EMPTY for user_agent in user_agents):
        return pl.DataFrame([_NO_USER_AGENT] * len(user_agents), schema=dict(USER_AGENT_DTYPE.to_schema()))
    return _default_parser().parse_many(user_agents)


def user_agent_struct(column: str | pl.Expr = DEFAULT_USER_AGENT_COLUMN) -> pl.Expr:
    """A struct expression of :func:`parse_user_agent`'s fields, for events or sessions alike.

    Parses each distinct value of the column once, the whole column at a time: use it in ``select`` or
    ``with_columns`` (not in ``group_by().agg()``), as one column, and take its fields from that column
    (each ``.struct.field()`` on the expression itself would parse again).
    """
    expr = pl.col(column) if isinstance(column, str) else column
    return expr.cast(pl.String).map_batches(
        lambda values: map_distinct(values, parse_user_agents),
        return_dtype=USER_AGENT_DTYPE,
        is_elementwise=False,
    )


def enrich_user_agent(frame: pl.LazyFrame, *, column: str = DEFAULT_USER_AGENT_COLUMN) -> pl.LazyFrame:
    """Add ``device_category``, ``browser``, ``os`` and ``is_bot`` from the user agent ``column``.

    Works on the session table (with the user agent of each session's first event) and on events.
    Each distinct user agent is parsed once. Existing columns of those names are replaced. Without the
    column, the three text columns are null and ``is_bot`` is false, as for an empty user agent.

    >>> frame = pl.LazyFrame({"user_agent": ["curl/8.5.0", None]})
    >>> enrich_user_agent(frame).collect().rows()
    [('curl/8.5.0', 'bot', 'curl', None, True), (None, None, None, None, False)]
    """
    if column not in frame.collect_schema().names():
        return frame.with_columns(
            *(pl.lit(None, pl.String).alias(name) for name in USER_AGENT_COLUMNS[:3]),
            pl.lit(False).alias("is_bot"),
        )
    # Through a column: taking the struct's fields straight from the expression would parse once per field.
    return (
        frame.with_columns(user_agent_struct(column).alias(_STRUCT))
        .with_columns(pl.col(_STRUCT).struct.unnest())
        .drop(_STRUCT)
    )
