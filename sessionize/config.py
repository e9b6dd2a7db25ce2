"""The run config: every option of ``sessionize run`` as typed, frozen option objects.

The CLI and the Python API stay flat at the edges (``--user-col``, ``user_col=``) and build one
:class:`RunConfig` with :meth:`RunConfig.from_options`, which parses every value and makes every
cross-option check before any file or database is opened. The library below works on these
objects, never on loose keywords.

>>> config = RunConfig.from_options(timeout="45m", user_col="visitor", anonymize_ip=True)
>>> config.session.timeout, config.read.columns.user, config.privacy.anonymize_ip
(datetime.timedelta(seconds=2700), 'visitor', 'after-geo')

This module imports nothing of sessionize but :mod:`sessionize.schema`, :mod:`sessionize.presets` (the
vendor presets, options under the user's) and :mod:`sessionize.errors`.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import inspect
import os
import re
import secrets
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Concatenate, Literal, ParamSpec, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import polars as pl

from sessionize import presets
from sessionize import schema as S
from sessionize.errors import UsageError
from sessionize.schema import ColumnNames as ColumnNames

OnInvalid = Literal["fail", "skip"]
TimeUnit = Literal["s", "ms", "us", "ns"]
TIME_UNITS: tuple[TimeUnit, ...] = get_args(TimeUnit)
AnonymizeIp = Literal["after-geo", "before-geo"]
ANONYMIZE_MODES: tuple[AnonymizeIp, ...] = get_args(AnonymizeIp)
VisitorKey = Literal["ip+ua", "ip"]
VISITOR_KEYS: tuple[VisitorKey, ...] = get_args(VisitorKey)
DEFAULT_VISITOR_KEY: VisitorKey = "ip+ua"
#: Request paths of static assets and feeds in access logs (not page views), matched on the path: what a
#: page loads (images, styles, scripts, source maps, fonts, WebAssembly, the web app manifest), audio and
#: video and their streaming playlists and segments (HLS, DASH), documents a page links to (PDF: GA4
#: counts it a file_download, not a page view) and JSON (an API call a script makes, not a page a person
#: views); see docs/input.md.
DEFAULT_ASSET_PATTERN = (
    r"(?i)\.(?:png|jpe?g|gif|bmp|ico|cur|svgz?|webp|avif|tiff?"
    r"|css|js|mjs|map|wasm|webmanifest|json"
    r"|woff2?|ttf|otf|eot"
    r"|mp4|m4v|webm|ogg|ogv|oga|opus|mov|mp3|m4a|wav|flac|aac|m3u8|ts|mpd|m4s"
    r"|pdf"
    r"|rss|atom|xml|rdf)$"
    r"|(?:^|/)(?:feed|rss|atom)/?$"
    r"|(?:^|/)robots\.txt$"
)
#: The default ``--asset-pattern`` of earlier versions (before stop 48: without audio and video, HLS and
#: DASH, ``.webmanifest``, ``.wasm``, PDF and JSON). An incremental state that recorded it continues with
#: the current default (see :data:`sessionize.engines.incremental._FORMER_DEFAULTS`).
FORMER_DEFAULT_ASSET_PATTERNS: tuple[str, ...] = (
    r"(?i)\.(?:png|jpe?g|gif|bmp|ico|cur|svgz?|webp|avif|tiff?"
    r"|css|js|mjs|map"
    r"|woff2?|ttf|otf|eot"
    r"|rss|atom|xml|rdf)$"
    r"|(?:^|/)(?:feed|rss|atom)/?$"
    r"|(?:^|/)robots\.txt$",
)
#: The fingerprint's record of how ids of only whitespace are read (not an option): as empty ones, since
#: stop 49 (``BLANK_IDS``); as ids before (``FORMER_BLANK_IDS``: a state that recorded nothing holds them
#: as read, and continues with the current rule: see :data:`sessionize.engines.incremental._FORMER_DEFAULTS`).
BLANK_IDS = "missing"
FORMER_BLANK_IDS = "as-written"
#: Where ``run`` sessionizes: this process, or a Dask cluster (``pip install 'sessionize[dask]'``).
ENGINES = ("local", "dask", "spark")
#: What ``--ambiguous-time`` accepts (see :func:`sessionize.normalize.local_time_reason`).
AMBIGUOUS_TIMES = ("earliest", "latest", "reject")
#: Events later than this after the run's start are invalid unless ``--valid-until`` says otherwise.
DEFAULT_FUTURE_LIMIT = timedelta(days=1)
DEFAULT_LATENESS = timedelta(hours=6)
SESSION_COLUMN_NAMES: tuple[str, ...] = tuple(c.name for c in S.SESSION_COLUMNS)
#: Columns an incremental run needs in its partitions to replace sessions (not for --drop-columns).
INCREMENTAL_KEYS = (S.USER, S.SESSION_ID, "session_start", "session_end", "session_number", "is_bot")

_P = ParamSpec("_P")

#: Field metadata: the field changes the sessions, so an incremental state records it.
_FINGERPRINT = {"fingerprint": True}


# Parsers of single values ------------------------------------------------------------------------


def check_timezone(timezone: str | None, option: str = "--timezone") -> str:
    """Return a valid IANA time zone name (``UTC`` for ``None``) or raise :class:`UsageError`."""
    if timezone is None:
        return "UTC"
    try:
        ZoneInfo(timezone)
        # Python's zoneinfo also takes names Polars refuses (localtime, posix/..., right/...): those
        # failed in the middle of the run as an unexpected error.
        pl.Series([0], dtype=pl.Int64).cast(pl.Datetime("us", "UTC")).dt.convert_time_zone(timezone)
    except (ZoneInfoNotFoundError, ValueError, pl.exceptions.PolarsError):
        raise UsageError(
            f"{option} {timezone!r} is not a known time zone. Use an IANA name such as "
            "UTC, Europe/Berlin or America/New_York."
        ) from None
    return timezone


def check_ambiguous_time(value: str) -> str:
    if value not in AMBIGUOUS_TIMES:
        raise UsageError(f"--ambiguous-time {value!r} is not one of {', '.join(AMBIGUOUS_TIMES)}.")
    return value


def check_time_unit(time_unit: str | None) -> TimeUnit | None:
    """Validate ``--time-unit``."""
    if time_unit is None or time_unit in TIME_UNITS:
        return time_unit
    raise UsageError(f"--time-unit {time_unit!r} is not one of {', '.join(TIME_UNITS)}.")


def check_pattern(pattern: str, option: str) -> str:
    """Validate a regular expression option (Polars' syntax), or raise :class:`UsageError`."""
    try:
        pl.Series([""], dtype=pl.String).str.contains(pattern)
    except pl.exceptions.PolarsError as exc:
        # The regex crate's reason ("error: look-around ... is not supported"), not the expression Polars
        # names after it (review of stop 52).
        lines = [line.strip() for line in str(exc).splitlines()]
        reasons = [line.removeprefix("error:").strip() for line in lines if line.startswith("error:")]
        detail = reasons[0] if reasons else next((line for line in lines if line), type(exc).__name__)
        detail = detail.rstrip(".")
        unsupported = any(word in detail for word in ("look-around", "backreference"))
        hint = " (no look-around and no backreferences)" if unsupported else ""
        raise UsageError(
            f"{option} '{pattern}' is not a valid regular expression: {detail}. Polars' syntax is the regex "
            f"crate's{hint}: https://docs.rs/regex/latest/regex/#syntax."
        ) from None
    return pattern


def check_asset_pattern(pattern: str) -> str:
    """Validate ``--asset-pattern`` (a regular expression), or raise :class:`UsageError`."""
    return check_pattern(pattern, "--asset-pattern")


def check_visitor_key(kind: str) -> VisitorKey:
    """Validate ``--visitor-key``, or raise :class:`UsageError`."""
    if kind not in VISITOR_KEYS:
        raise UsageError(f"--visitor-key {kind!r} is not one of {', '.join(VISITOR_KEYS)}.")
    return kind


def anonymize_mode(value: bool | str | None) -> AnonymizeIp | None:
    """``--anonymize-ip``: ``True`` means ``after-geo``."""
    if value is None or value is False:
        return None
    if value is True:
        return "after-geo"
    if value not in ANONYMIZE_MODES:
        raise UsageError(f"--anonymize-ip={value} is not one of {', '.join(ANONYMIZE_MODES)}.")
    return value


def read_secret(env_var: str) -> bytes:
    """The HMAC key from the environment variable named by ``--hash-user-ids``."""
    value = os.environ.get(env_var, "")
    if not value:
        raise UsageError(
            f"--hash-user-ids {env_var}: the environment variable {env_var} is not set or empty. "
            f"Set it to a secret (e.g. export {env_var}=$(openssl rand -hex 32)) and keep it: the same "
            "secret gives the same hashed ids on every run."
        )
    return value.encode("utf-8")


def visitor_secret(anonymize: str | None, secret: bytes | None, *, incremental: bool) -> bytes | None:
    """The key of access-log visitor ids under ``--anonymize-ip``
    (:func:`sessionize.accesslog.keyed_visitor_ids`): the ``--hash-user-ids`` secret when given (the
    same ids on every run), else a random key of this run only, never written: its ids differ from
    another run's. An incremental run continues the sessions its state keeps, by visitor id, so it
    needs the secret (None here: reading a log refuses then), as no key is kept on disk where
    it would turn the ids back into the full addresses."""
    if anonymize is None:
        return None
    if secret is not None:
        return secret
    return None if incremental else secrets.token_bytes(32)


def normalize_internal_domains(domains: str | Iterable[str]) -> tuple[str, ...]:
    """``"Example.com, .shop.example.com"`` -> ``("example.com", "shop.example.com")``.

    Each value is read as a host, as referrer hosts are compared: a URL gives its host (a scheme, user,
    port and path are left out), and a Unicode name (``bücher.de``) is given in both spellings, Unicode
    and the ASCII form (``xn--bcher-kva.de``) that browsers send. A value that names no host is a
    :class:`~sessionize.errors.UsageError`: it could never match a referrer.

    >>> normalize_internal_domains(["*.Example.com", " cdn.example.net ", "https://shop.example:8443/x"])
    ('example.com', 'cdn.example.net', 'shop.example')
    """
    items = domains.split(",") if isinstance(domains, str) else domains
    hosts: list[str] = []
    for item in items:
        if not item.strip():
            continue
        host = _internal_host(item)
        for spelling in (host, *_ascii_spelling(item, host)):
            if spelling not in hosts:
                hosts.append(spelling)
    return tuple(hosts)


_HOST_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*://")
_HOST_CHARACTERS = re.compile(r"[^\x00-\x2c/:;<=>?@\[\\\]^`{|}~\x7f\s]+")


def _internal_host(item: str) -> str:
    text = item.strip().lower()
    if match := _HOST_SCHEME.match(text):
        text = text[match.end() :]
    text = re.split(r"[/?#\\]", text, maxsplit=1)[0].rpartition("@")[2]
    if text.count(":") > 1 or (text.startswith("[") and text.find("]") > 0):
        # An IPv6 address, as a referrer's host gives it: without brackets or port.
        host = text[1 : text.index("]")] if text.startswith("[") else text
        valid = bool(re.fullmatch(r"[0-9a-f:.]+", host))
    else:
        host = re.sub(r":[0-9]*$", "", text).removeprefix("*").strip(".")
        valid = bool(_HOST_CHARACTERS.fullmatch(host))
    if not valid:
        raise UsageError(
            f"--internal-domains {item.strip()!r} is not a host name. Give the hosts of your own sites, "
            "separated by commas (example.com,shop.example.net): each counts with its subdomains."
        )
    return host


def _ascii_spelling(item: str, host: str) -> list[str]:
    """The ASCII form (IDNA) of a Unicode host name, as browsers send it in referrers."""
    if host.isascii():
        return []
    spelled = ascii_host(host)
    if spelled is None:
        raise UsageError(
            f"--internal-domains {item.strip()!r} is not a valid international domain name: give it as "
            "browsers send it (its xn-- form)."
        )
    return [spelled]


def ascii_host(host: str) -> str | None:
    """``host`` in ASCII (IDNA: ``bücher.de`` is ``xn--bcher-kva.de``, as browsers send it); None for a
    Unicode name that has no such spelling."""
    if host.isascii():
        return host
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return None


_MEMORY_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_memory(value: str | int) -> int:
    """Bytes from ``--memory-limit`` text: ``2GiB``, ``1.5G``, ``512MB``, ``800M`` or a byte count.

    Units are binary (``1G`` = ``1GiB`` = 2**30 bytes), as in ``free`` and container limits.
    """
    if isinstance(value, int):
        number, unit = float(value), ""
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgtKMGT]?)(?:i?[bB])?\s*", value)
        if match is None:
            raise UsageError(
                f"--memory-limit {value!r} is not an amount of memory. Use a number with a unit: "
                "2GiB, 1.5G, 512M."
            )
        number, unit = float(match.group(1)), match.group(2).lower()
    amount = int(number * _MEMORY_UNITS[unit])
    if amount <= 0:
        raise UsageError(f"--memory-limit {value!r} must be more than zero.")
    return amount


def parse_timestamp(value: str | datetime | date | None, option: str) -> datetime | None:
    """An ISO 8601 date or timestamp option (UTC when it has no offset; a date is its midnight)."""
    if value is None or isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime(value.year, value.month, value.day)
    else:
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise UsageError(
                f"{option} {value!r} is not a date or timestamp. "
                "Use ISO 8601: 2024-05-01 or 2024-05-01T10:00:00Z."
            ) from None
    if parsed is not None and parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def check_drop_columns(value: str | Iterable[str] | None, *, extra: Sequence[str] = ()) -> tuple[str, ...]:
    """``--drop-columns``: names of the session table's columns (``extra``: the ones options add)."""
    names = S.split_list(value or ())
    known = (*SESSION_COLUMN_NAMES, *extra)
    unknown = [name for name in names if name not in known]
    if unknown:
        raise UsageError(
            f"--drop-columns: {', '.join(unknown)} not in the session table. Its columns are: "
            f"{S.column_listing(known)}."
        )
    return names


def _check_dropped_user_id(privacy: PrivacyOptions, *, stitch_fallback: bool) -> None:
    """``--drop-columns user_id`` in clear ids: refused while a kept column shows the id (review of stop 57:
    the generated session ids, ``<user_id>-<start>``, kept every user id that the flag was to leave out)."""
    dropped = privacy.drop_columns
    if S.USER not in dropped or privacy.secret is not None:
        return
    showing = [S.SESSION_ID] if S.SESSION_ID not in dropped else []
    if stitch_fallback and S.STITCHED_USER_ID not in dropped:
        showing.append(S.STITCHED_USER_ID)  # an id that never logs in is its own stitched id
    if showing:
        one = len(showing) == 1
        raise UsageError(
            f"--drop-columns user_id leaves {' and '.join(showing)}, which show{'s' if one else ''} the user "
            f"id (a generated session id is <user_id>-<start>). Leave {'it' if one else 'them'} out too "
            f"(--drop-columns {','.join([S.USER, *showing])}), or hash the ids instead (--hash-user-ids)."
        )


def _non_negative(value: str | timedelta, option: str) -> float:
    """A duration that may be zero (``0s``)."""
    if isinstance(value, str) and value.strip() in ("0", "0s"):
        return 0.0
    return S.parse_duration(value, option=option).total_seconds()


#: The column names no ``--count-events`` or ``--agg`` column may take: those of the session table
#: (``stitched_user_id`` too), of the user table and of the incremental output.
_RESERVED_NAMES = frozenset(
    (*SESSION_COLUMN_NAMES, S.STITCHED_USER_ID, *S.USER_TABLE_COLUMNS, *S.OUTPUT_COLUMNS)
)


def _why_taken(name: str) -> str:
    """Why a column an option names cannot be added (a built-in one, or one of sessionize's own)."""
    if name in _RESERVED_NAMES:
        return "is a built-in column of the session or user table"
    return "starts with _, which names sessionize's own working columns"


def check_event_counts(value: str | Iterable[str] | None) -> tuple[tuple[str, str], ...]:
    """``--count-events purchase,orders=Order Completed``: (column, event name) pairs. A bare name
    counts in ``<name>_count`` (lower case, other characters than letters and digits as ``_``)."""
    result: dict[str, str] = {}
    for item in S.split_list(value or ()):
        column, equals, event = item.partition("=")
        if not equals:
            event = item
            stem = re.sub(r"[^0-9a-z]+", "_", item.lower()).strip("_")
            if not stem and item.strip():
                raise UsageError(
                    f"--count-events {item!r}: the event name has no letter or digit to name its column "
                    f"after: name the column yourself (--count-events my_count={item.strip()})."
                )
            column = stem + "_count"
        column, event = column.strip(), event.strip()
        if not event or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", column):
            raise UsageError(
                f"--count-events {item!r}: give an event name, or COLUMN=EVENT with a column name of "
                "letters, digits and _ (--count-events purchase,orders=Order Completed)."
            )
        if column in _RESERVED_NAMES or column.startswith("_"):
            raise UsageError(
                f"--count-events: the column {column!r} {_why_taken(column)}: "
                f"name the count yourself (--count-events my_{column.lstrip('_')}={event})."
            )
        if column in result:
            raise UsageError(f"--count-events names the column {column!r} twice.")
        result[column] = event
    return tuple(result.items())


#: ``--channel-rules``: GA4's default channel group (from the UTM tags, else the referrer), Snowplow's
#: (from the UTM tags alone, as its sessions model computes ``default_channel_group``), or PostHog's
#: ``$channel_type`` (UTM tags, click ids and the referring domain, by its own rules and names).
CHANNEL_RULES = ("ga4", "snowplow", "posthog")
#: ``--shared-session-ids``: one session per user and client session id (``split``), or one per client
#: session id, of the user id of its first event (``merge``: Snowplow's sessions) or of its last
#: (``merge-last``: PostHog's).
SHARED_SESSION_IDS = ("split", "merge", "merge-last")
#: ``--event-id-scope``: events of one user that share an event id are one event (``user``), or only those
#: that also share the event name and time (``user-event-time``: Mixpanel's ``$insert_id``).
EVENT_ID_SCOPES = ("user", "user-event-time")
#: The most ``--buckets`` and ``--partitions``: each costs a pass (some 25 ms however few its events), so
#: a mistyped count (1e20) would run for ever.
MAX_BUCKETS = 4_096
MAX_PARTITIONS = 100_000


def one_of(value: str, choices: Sequence[str], *, option: str) -> str:
    """A choice option's value (case and surrounding spaces ignored), or a usage error naming them."""
    chosen = value.strip().lower()
    if chosen not in choices:
        raise UsageError(f"{option} {value!r} is not one of {', '.join(choices)}.")
    return chosen


def check_aggregates(
    value: str | S.Aggregate | Iterable[str | S.Aggregate] | Mapping[str, str] | None,
    *,
    taken: Iterable[str] = (),
) -> tuple[S.Aggregate, ...]:
    """``--agg NAME=FUNC(COLUMN)``, repeatable: one spec, a list of them, Aggregates, or a mapping
    ``{"revenue": "sum(properties.revenue)"}``. ``taken`` are further column names already used (the
    ``--count-events`` columns)."""
    result: dict[str, S.Aggregate] = {}
    used = set(taken)
    for aggregate in S.aggregates_of(value):
        name = aggregate.name
        if name in _RESERVED_NAMES or name.startswith("_"):
            raise UsageError(
                f"--agg {aggregate.spec!r}: {name!r} {_why_taken(name)}: "
                f"name the column yourself (--agg my_{name.lstrip('_')}=...)."
            )
        if name in result or name in used:
            raise UsageError(f"--agg names the column {name!r} twice (or --count-events names it too).")
        result[name] = aggregate
    return tuple(result.values())


def check_preferred_columns(
    value: Mapping[str, Sequence[str]] | None,
) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Preferred column names per role, keyed by role (``url``) or by its flag's keyword (``url_col``)."""
    names = ColumnNames()
    keywords = dict(zip(names.column_options(), names.by_role(), strict=True))
    result = []
    for key, columns in (value or {}).items():
        role = key if key in S.COLUMN_ALIASES else keywords.get(key)
        if role is None:
            raise UsageError(f"preferred_columns: {key!r} is not one of {', '.join(keywords)}.")
        result.append((role, (columns,) if isinstance(columns, str) else tuple(columns)))
    return tuple(result)


def check_filters(
    value: str | Iterable[str] | Mapping[str, str | Iterable[str]] | None,
) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``--filter COLUMN=VALUE[,VALUE...]`` (repeatable; a mapping in Python): keep only the rows whose
    ``COLUMN`` is one of the values. Several filters all apply; one column may be filtered once."""
    if value is None:
        return ()
    if isinstance(value, Mapping):
        pairs = [(str(k), v if isinstance(v, str) else ",".join(v)) for k, v in value.items()]
    else:
        pairs = []
        for item in [value] if isinstance(value, str) else value:
            column, equals, values = str(item).partition("=")
            if not equals or not column.strip():
                raise UsageError(
                    f"--filter {item!r} is not COLUMN=VALUE[,VALUE...] (for example --filter app_id=shop)."
                )
            pairs.append((column, values))
    result: dict[str, tuple[str, ...]] = {}
    for column, values in pairs:
        name = column.strip()
        kept = S.split_list(values)
        if not kept:
            raise UsageError(f"--filter {name}=: give at least one value to keep (--filter {name}=VALUE).")
        if name in result:
            raise UsageError(f"--filter names {name!r} twice: give its values once, comma-separated.")
        result[name] = kept
    return tuple(result.items())


def _path(value: str | Path | None) -> str | None:
    return None if value is None else str(value)


# The types of the flat options ------------------------------------------------------------------


def flag_of(name: str) -> str:
    """The flag of a flat option (``user_col`` -> ``--user-col``; ``aggregates`` -> ``--agg``)."""
    return "--" + {"aggregates": "agg"}.get(name, name).replace("_", "-")


def _typename(value: object) -> str:
    return type(value).__name__


def _wrong(name: str, value: object, takes: str) -> UsageError:
    return UsageError(f"{flag_of(name)} takes {takes}, not {value!r} ({_typename(value)}).")


def _as_text(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise _wrong(name, value, "text")
    return value


def _path_value(name: str, value: object) -> str | os.PathLike[str]:
    if not isinstance(value, str | os.PathLike) or isinstance(os.fspath(value), bytes):
        raise _wrong(name, value, "a path (text or a pathlib.Path)")
    return value


def _switch(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise _wrong(name, value, "true or false (True or False in Python)")
    return value


def _texts(name: str, value: object) -> str | tuple[str, ...]:
    """A list option: comma-separated text, or a list of texts."""
    if isinstance(value, str):
        return value
    if isinstance(value, Iterable) and not isinstance(value, Mapping | bytes):
        items = tuple(value)
        for item in items:
            if not isinstance(item, str):
                raise UsageError(
                    f"{flag_of(name)} takes names as text, comma-separated or as a list; "
                    f"{item!r} in {value!r} is {_typename(item)}."
                )
        return items
    raise _wrong(name, value, "comma-separated text or a list of texts")


def _duration(name: str, value: object) -> str | timedelta:
    if isinstance(value, str | timedelta):
        return value
    unit = " (a number alone has no unit: '30s', '30m')" if isinstance(value, int | float) else ""
    raise _wrong(name, value, f"a duration as text with its unit, or a datetime.timedelta{unit}")


def _instant(name: str, value: object) -> str | datetime:
    if isinstance(value, str | datetime):
        return value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    raise _wrong(name, value, "an ISO 8601 date or timestamp (text, a date or a datetime)")


def _choice_or_switch(name: str, value: object) -> bool | str:
    if isinstance(value, bool | str):
        return value
    raise _wrong(name, value, f"one of {', '.join(ANONYMIZE_MODES)} (or True for after-geo)")


def _amount(name: str, value: object) -> str | int:
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise _wrong(name, value, "an amount of memory as text with its unit ('2GiB', '512M') or whole bytes")


def whole_number(name: str, value: object) -> int:
    """A keyword's whole number, given as an ``int`` or its text (``top="5"``); else a
    :class:`UsageError` naming its flag (``--top takes a whole number, not 3.5 (float).``)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    raise _wrong(name, value, "a whole number")


def _filters(name: str, value: object) -> object:
    if isinstance(value, Mapping):
        for column, kept in value.items():
            if not isinstance(column, str):
                raise _wrong(name, column, "a column name as text")
            _texts(name, kept)
        return value
    return _texts(name, value)


def _aggregates(name: str, value: object) -> object:
    if isinstance(value, S.Aggregate):
        return value
    if isinstance(value, Mapping):
        for column, spec in value.items():
            if not isinstance(column, str) or not isinstance(spec, str):
                raise UsageError(
                    f"--agg takes a mapping of column names to specs as text "
                    f"({{'revenue': 'sum(properties.revenue)'}}), not {column!r}: {spec!r}."
                )
        return value
    if isinstance(value, str):
        return value
    if isinstance(value, Iterable) and not isinstance(value, bytes):
        items = tuple(value)
        for item in items:
            if not isinstance(item, str | S.Aggregate):
                raise UsageError(
                    f"--agg takes specs as text (revenue=sum(properties.revenue)), not {_typename(item)} "
                    f"{item!r}."
                )
        return items
    raise _wrong(name, value, "a spec as text (revenue=sum(properties.revenue)), a list or a mapping of them")


def _preferred(name: str, value: object) -> object:
    if not isinstance(value, Mapping):
        raise _wrong(name, value, "a mapping of roles to column names")
    for role, names in value.items():
        if not isinstance(role, str):
            raise _wrong(name, role, "roles as text")
        _texts(name, names)
    return value


def _anything(name: str, value: object) -> object:
    return value


#: How each flat option's value is checked, by its annotation in :meth:`RunConfig.from_options` (an
#: option with another annotation is an error at import: give it a check here).
_CHECKS: dict[str, Callable[[str, object], object]] = {
    "str": _as_text,
    "str | None": _as_text,
    "str | Path | None": _path_value,
    "bool": _switch,
    "bool | str | None": _choice_or_switch,
    "str | Iterable[str]": _texts,
    "str | Iterable[str] | None": _texts,
    "str | timedelta": _duration,
    "str | timedelta | None": _duration,
    "str | datetime | date | None": _instant,
    "str | int | None": _amount,
    "int | str | None": whole_number,
    "str | Iterable[str] | Mapping[str, str | Iterable[str]] | None": _filters,
    "str | S.Aggregate | Iterable[str | S.Aggregate] | Mapping[str, str] | None": _aggregates,
    "Mapping[str, Sequence[str]] | None": _preferred,
    "Any": _anything,
}


def _typed(
    build: Callable[Concatenate[type[RunConfig], _P], RunConfig],
) -> Callable[Concatenate[type[RunConfig], _P], RunConfig]:
    """:meth:`RunConfig.from_options` with every value's type checked first, as the option objects'
    parsers need it: a :class:`UsageError` naming the flag, not a TypeError deep inside (review 60 F7).
    ``None`` is the option's default, as leaving it out; an unknown keyword is a usage error too."""
    parameters = [p for p in inspect.signature(build).parameters.values() if p.kind is p.KEYWORD_ONLY]
    checks = {p.name: _CHECKS[str(p.annotation)] for p in parameters}

    def checked(cls: type[RunConfig], /, *args: _P.args, **options: _P.kwargs) -> RunConfig:
        unknown = sorted(set(options) - checks.keys())
        if unknown:
            raise UsageError(_unknown_option(unknown[0], checks))
        values = {name: checks[name](name, value) for name, value in options.items() if value is not None}
        return build(cls, *args, **values)  # type: ignore[arg-type]

    functools.update_wrapper(checked, build)  # its signature and docstring
    return checked


def _unknown_option(name: str, known: Iterable[str]) -> str:
    names = sorted(known)
    alias = _TOML_ALIASES.get(name)
    close = [alias] if alias else difflib.get_close_matches(name, names, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"Unknown option {name!r}.{hint}"


# The option objects ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReadOptions:
    """How to read and validate every input file."""

    columns: ColumnNames = field(default_factory=ColumnNames)
    input_format: str | None = None
    #: The unit of numeric times (None: read from their size): it decides the events' instants.
    time_unit: TimeUnit | None = field(default=None, metadata=_FINGERPRINT)
    #: ``--input-timezone``: the zone of input times without an offset (default: ``--timezone``'s; UTC
    #: for the presets whose vendor writes UTC). It decides the events' instants.
    input_timezone: str = field(default="UTC", metadata=_FINGERPRINT)
    #: A local time that happens twice (the hour repeated when DST ends): earliest, latest or reject.
    ambiguous_time: str = field(default="earliest", metadata=_FINGERPRINT)
    pageview_events: tuple[str, ...] = field(default=S.DEFAULT_PAGEVIEW_EVENTS, metadata=_FINGERPRINT)
    #: Key/value list columns (GA4's ``event_params``) whose keys become columns (io/params.py).
    unnest_params: tuple[str, ...] = field(default=(), metadata=_FINGERPRINT)
    #: Client session id values that mean "none" (Amplitude's -1), besides the empty one.
    session_id_nulls: tuple[str, ...] = field(default=(), metadata=_FINGERPRINT)
    #: Events that are page activity but not page views (Snowplow's page_ping): they count for the
    #: landing and exit pages, not as page views.
    page_activity_events: tuple[str, ...] = field(default=(), metadata=_FINGERPRINT)
    #: ``--filter``: (column, values to keep) pairs; other rows are counted as filtered out.
    filters: tuple[tuple[str, tuple[str, ...]], ...] = field(default=(), metadata=_FINGERPRINT)
    #: ``--max-send-delay``: rows sent by the device longer than this after their creation are left out
    #: (Snowplow's ``days_late_allowed``), counted as filtered out.
    max_send_delay: timedelta | None = field(default=None, metadata=_FINGERPRINT)
    #: ``--event-id-scope``: which events sharing an event id are duplicates (:data:`EVENT_ID_SCOPES`).
    event_id_scope: str = field(default="user", metadata=_FINGERPRINT)
    #: ``--require-session-id``: rows without a client session id are left out, counted as filtered out
    #: (Snowplow processes no event without its domain_sessionid).
    require_session_id: bool = field(default=False, metadata=_FINGERPRINT)
    #: Column names per role tried before the built-in aliases, absent ones skipped (a preset's).
    preferred_columns: tuple[tuple[str, tuple[str, ...]], ...] = ()
    #: ``--user-fallback-col``: the login id column whose value an event without a user id takes as its
    #: user id (the segment and amplitude presets' ``user_id``); empty: such an event has none (a reject).
    #: It decides which events are kept and whose they are. Empty rather than None when off, so that a
    #: state's settings show it as the flag that gives it: ``--user-fallback-col ''``.
    user_fallback_col: str = field(default="", metadata=_FINGERPRINT)
    #: :attr:`user_fallback_col` is a preset's: an input without the column has no fallback, and no error.
    #: One the user names (a flag, a keyword, the config file) must exist, as ``--stitch-col``'s must: a
    #: typo was ignored, its events rejected (review 57 F5).
    user_fallback_optional: bool = field(default=False, compare=False)
    encoding: str = "utf-8"
    on_invalid: OnInvalid = "fail"
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    #: Web-server logs: how a visitor is identified (their user ids), and which paths are static
    #: assets (not page views).
    visitor_key: VisitorKey = field(default=DEFAULT_VISITOR_KEY, metadata=_FINGERPRINT)
    asset_pattern: str = field(default=DEFAULT_ASSET_PATTERN, metadata=_FINGERPRINT)
    #: ``--agg``: the input columns they read are carried into the events (the same as SessionOptions').
    aggregates: tuple[S.Aggregate, ...] = ()
    #: Engaged time is measured from heartbeats (``--heartbeat-events``): the events carry the page view
    #: id and the heartbeat time (:attr:`page_view_ids`, :attr:`heartbeat_timing`) that group and count them.
    heartbeats: bool = False
    #: Privacy controls that also apply to the rejected rows' original columns (from PrivacyOptions).
    anonymize_ip: bool = False
    user_id_secret: bytes | None = field(default=None, repr=False)
    #: The key of access-log visitor ids under ``--anonymize-ip`` (:func:`visitor_secret`): random per run
    #: without ``--hash-user-ids``, so left out of comparisons (the same options compare equal).
    visitor_secret: bytes | None = field(default=None, repr=False, compare=False)

    def column_options(self) -> dict[str, str | None]:
        return self.columns.column_options()

    def wanted_columns(self) -> list[str]:
        """The input columns named by a column flag or an ``--agg``: ``--unnest-params`` always makes
        those of its keys, null where no event has the key."""
        named = [column for column in self.column_options().values() if column]
        named += [self.user_fallback_col] if self.user_fallback_col else []
        return [*named, *(a.column for a in self.aggregates if a.column is not None)]

    def prepare_options(self) -> dict[str, Any]:
        """The keywords of :func:`sessionize.normalize.prepare_events` that these options set."""
        return {
            "time_unit": self.time_unit,
            "timezone": self.input_timezone,
            "pageview_events": self.pageview_events,
            "ambiguous": self.ambiguous_time,
            "session_id_nulls": self.session_id_nulls,
            "page_activity_events": self.page_activity_events,
            "event_id_scope": self.event_id_scope,
            "stitching": self.stitching,
            "engagement": self.engagement_timing,
            "page_view_ids": self.page_view_ids,
            "heartbeat_time": self.heartbeat_timing,
            "aggregates": self.aggregates,
            "valid_range": (self.valid_from, self.valid_until),
        }

    def preferred(self) -> dict[str, tuple[str, ...]]:
        """:attr:`preferred_columns` by role, for :func:`sessionize.schema.resolve_columns`."""
        return dict(self.preferred_columns)

    def resolve_columns(self, available: Sequence[str], *, source: str = "the input") -> S.ColumnMap:
        """The columns of ``available`` for each role under these options (the column flags, the
        preferred names and ``--user-fallback-col``): see :func:`sessionize.schema.resolve_columns`."""
        return S.resolve_columns(
            available,
            source=source,
            columns=self.columns,
            preferred=self.preferred(),
            user_fallback=self.user_fallback_col or None,
            user_fallback_required=not self.user_fallback_optional,
        )

    def switched_on(self) -> dict[str, bool]:
        """Whether each column role that only an option names (no usual column names: the login id of
        stitching, the reported engagement time, the ignore-referrer flag, the heartbeat time) is on,
        by its flag's keyword stem (``stitch``): its flag or a preset names a column for it. Each
        changes the sessions (``stitched_user_id``, ``engaged_time_s``, the attribution), so an
        incremental state records these (review 60 F4, F5); the heartbeat time only with heartbeats,
        which alone it times. A role found by its usual names (the client session id, ...) is the
        input's: its flag only says which column holds it, as a renamed export needs."""
        preferred = self.preferred()
        return {
            item.name: (getattr(self.columns, item.name) is not None or role in preferred)
            and (role != S.HEARTBEAT_TIME or self.heartbeats)
            for item in dataclasses.fields(self.columns)
            for role in (item.metadata["role"],)
            if not S.COLUMN_ALIASES[role]
        }

    @property
    def stitching(self) -> bool:
        """Identity stitching is on: ``--stitch-col``, or a preset that names the login id's columns."""
        return self.columns.stitch is not None or S.STITCH in self.preferred()

    @property
    def engagement_timing(self) -> bool:
        """The events report their engagement time (``--engagement-time-col``, the ``ga4`` preset)."""
        return self.columns.engagement_time is not None or S.ENGAGEMENT in self.preferred()

    @property
    def page_view_ids(self) -> bool:
        """Heartbeats are grouped by page view id: with heartbeats, the page view id column
        (``--page-view-id-col``, the ``snowplow`` preset's, or one found by its usual names; null where
        an input has none) is carried."""
        return self.heartbeats

    @property
    def heartbeat_timing(self) -> bool:
        """Heartbeats are counted on a time of their own (``--heartbeat-time-col``, the ``snowplow``
        preset's ``dvce_created_tstamp``)."""
        return self.heartbeats and (
            self.columns.heartbeat_time is not None or S.HEARTBEAT_TIME in self.preferred()
        )

    def event_schema(self) -> dict[str, pl.DataType]:
        """The columns of the events these options read (see :func:`sessionize.schema.event_schema`)."""
        return S.event_schema(
            stitch=self.stitching,
            engagement=self.engagement_timing,
            page_view_ids=self.page_view_ids,
            heartbeat_time=self.heartbeat_timing,
            aggregates=self.aggregates,
        )


@dataclass(frozen=True)
class SessionOptions:
    """What decides the sessions and their enrichment."""

    timeout: timedelta = field(default=S.DEFAULT_TIMEOUT, metadata=_FINGERPRINT)
    max_session_length: timedelta | None = field(default=None, metadata=_FINGERPRINT)
    #: ``--session-cap``: a client session's events more than this after its first are left out.
    session_cap: timedelta | None = field(default=None, metadata=_FINGERPRINT)
    #: ``--shared-session-ids``: ``split`` (per user and id) or ``merge`` (per id, Snowplow's rule).
    shared_session_ids: str = field(default="split", metadata=_FINGERPRINT)
    split_on_campaign: bool = field(default=False, metadata=_FINGERPRINT)
    split_at_midnight: bool = field(default=False, metadata=_FINGERPRINT)
    #: Time zone of ``split_at_midnight`` and of incremental partitions.
    timezone: str = field(default="UTC", metadata=_FINGERPRINT)
    conversion_events: tuple[str, ...] = field(default=(), metadata=_FINGERPRINT)
    internal_domains: tuple[str, ...] = field(default=(), metadata=_FINGERPRINT)
    #: ``--count-events``: (column, event name) pairs, counted per session after the built-in columns.
    event_counts: tuple[tuple[str, str], ...] = field(default=(), metadata=_FINGERPRINT)
    #: ``--stitch-fallback``: a user without a login id gets their own user id as ``stitched_user_id``.
    stitch_fallback: bool = field(default=False, metadata=_FINGERPRINT)
    #: ``--channel-rules``: GA4's default channel group, or Snowplow's (sessionize/attribution.py).
    channel_rules: str = field(default="ga4", metadata=_FINGERPRINT)
    #: ``--agg NAME=FUNC(COLUMN)``: further session columns, after the counts.
    aggregates: tuple[S.Aggregate, ...] = field(default=(), metadata=_FINGERPRINT)
    #: How ``engaged_time_s`` is measured (``--heartbeat-events``, ``--heartbeat-interval``,
    #: ``--min-visit-length``, ``--engaged-threshold``).
    engaged: S.EngagedTime = field(
        default_factory=S.EngagedTime, metadata={"fingerprint": lambda engaged: engaged_settings(engaged)}
    )
    #: A referer database file (default: the packaged one). Not in the fingerprint: an incremental
    #: state records the database's content, and a run with another one continues with a warning (see
    #: :func:`sessionize.engines.incremental._check_referers`).
    referers: str | None = None
    #: The GeoIP database (default: ``$SESSIONIZE_GEOIP_DB``, then the bundled one), or no lookup
    #: (``--no-geo``, in the fingerprint). The database is not: a newer edition continues a state.
    geoip_db: str | None = None
    geo: bool = field(default=True, metadata={"fingerprint": lambda geo: {"no_geo": _text(not geo)}})


@dataclass(frozen=True)
class PrivacyOptions:
    """What is hidden, hashed, dropped or left out of every output."""

    anonymize_ip: AnonymizeIp | None = field(default=None, metadata=_FINGERPRINT)
    #: The environment variable holding the secret of ``--hash-user-ids``, and the secret itself.
    hash_user_ids_env: str | None = None
    secret: bytes | None = field(default=None, repr=False, metadata=_FINGERPRINT)
    drop_columns: tuple[str, ...] = field(default=(), metadata=_FINGERPRINT)
    dedupe: bool = field(default=False, metadata=_FINGERPRINT)
    exclude_bots: bool = field(default=False, metadata=_FINGERPRINT)


@dataclass(frozen=True)
class OutputOptions:
    """Where the run's outputs go (``-`` is stdout)."""

    output: str | None = None
    format: str | None = None
    rejects: str | None = None
    report: str | None = None
    #: CSV outputs (the table and the rejects) with formula-leading values neutralised for spreadsheets.
    csv_safe: bool = False
    #: The page-view and user tables (issue 20; see docs/output.md).
    pageviews_output: str | None = None
    users_output: str | None = None
    #: ``--engine spark``: the output directory partitioned by the sessions' start date
    #: (``session_date=YYYY-MM-DD/``, in ``--timezone``), as the incremental output is.
    partition_by_date: bool = False

    def by_option(self) -> dict[str, str]:
        """Every output given, by option name (``-`` for stdout included)."""
        named = {
            "-o": self.output,
            "--rejects": self.rejects,
            "--report": self.report,
            "--pageviews-output": self.pageviews_output,
            "--users-output": self.users_output,
        }
        return {option: path for option, path in named.items() if path is not None}

    def targets(self) -> dict[str, str]:
        """The file outputs by option name (stdout excluded)."""
        return {option: path for option, path in self.by_option().items() if path != "-"}


@dataclass(frozen=True)
class EngineOptions:
    """Where and how the sessions are computed."""

    engine: str = "local"
    #: The memory budget in bytes (None: half the memory available) and a forced number of buckets.
    memory_limit: int | None = None
    buckets: int | None = None
    temp_dir: str | None = None
    #: Dask: the scheduler's address; Dask and Spark: the partitions of users.
    scheduler: str | None = None
    partitions: int | None = None
    #: Spark: the master of a new session (``local[*]`` by default), or a session to use (Python only).
    spark_master: str | None = None
    spark_session: Any = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class IncrementalOptions:
    """``--state`` and ``--output-dir``: runs for cron that continue each other."""

    state: str
    output_dir: str
    lateness: timedelta = field(default=DEFAULT_LATENESS, metadata=_FINGERPRINT)
    reprocess: bool = False


@dataclass(frozen=True)
class RunConfig:
    """Every option of a run, parsed and checked (see :meth:`from_options`)."""

    read: ReadOptions = ReadOptions()
    session: SessionOptions = SessionOptions()
    privacy: PrivacyOptions = PrivacyOptions()
    output: OutputOptions = OutputOptions()
    engine: EngineOptions = EngineOptions()
    incremental: IncrementalOptions | None = None
    #: The ``--preset`` the options were built with (applied before :meth:`from_options`, by the CLI and
    #: :func:`sessionize.run`): an incremental state written before an option was recorded had the
    #: preset's value of it (see :func:`sessionize.engines.incremental`'s settings check).
    preset: str | None = None

    @classmethod
    @_typed
    def from_options(
        cls,
        *,
        output: str | Path | None = None,
        format: str | None = None,
        input_format: str | None = None,
        timeout: str | timedelta = S.DEFAULT_TIMEOUT,
        user_col: str | None = None,
        time_col: str | None = None,
        url_col: str | None = None,
        referrer_col: str | None = None,
        ip_col: str | None = None,
        event_col: str | None = None,
        session_col: str | None = None,
        user_agent_col: str | None = None,
        event_id_col: str | None = None,
        page_view_id_col: str | None = None,
        stitch_col: str | None = None,
        user_fallback_col: str | None = None,
        engagement_time_col: str | None = None,
        heartbeat_time_col: str | None = None,
        ignore_referrer_col: str | None = None,
        time_unit: str | None = None,
        timezone: str | None = None,
        input_timezone: str | None = None,
        ambiguous_time: str = "earliest",
        pageview_events: str | Iterable[str] = S.DEFAULT_PAGEVIEW_EVENTS,
        unnest_params: str | Iterable[str] = (),
        preferred_columns: Mapping[str, Sequence[str]] | None = None,
        session_id_nulls: str | Iterable[str] = (),
        require_session_id: bool = False,
        page_activity_events: str | Iterable[str] = (),
        event_id_scope: str = "user",
        filter: str | Iterable[str] | Mapping[str, str | Iterable[str]] | None = None,
        max_send_delay: str | timedelta | None = None,
        encoding: str = "utf-8",
        on_invalid: str = "fail",
        rejects: str | Path | None = None,
        valid_from: str | datetime | date | None = None,
        valid_until: str | datetime | date | None = None,
        dedupe: bool = False,
        geoip_db: str | Path | None = None,
        no_geo: bool = False,
        anonymize_ip: bool | str | None = None,
        hash_user_ids: str | None = None,
        drop_columns: str | Iterable[str] | None = None,
        referers: str | Path | None = None,
        internal_domains: str | Iterable[str] = (),
        conversion_events: str | Iterable[str] = (),
        count_events: str | Iterable[str] = (),
        channel_rules: str = "ga4",
        stitch_fallback: bool = False,
        aggregates: str | S.Aggregate | Iterable[str | S.Aggregate] | Mapping[str, str] | None = None,
        heartbeat_events: str | Iterable[str] = (),
        heartbeat_interval: str | timedelta = "10s",
        min_visit_length: str | timedelta = "5s",
        engaged_threshold: str | timedelta | None = None,
        max_session_length: str | timedelta | None = None,
        session_cap: str | timedelta | None = None,
        shared_session_ids: str = "split",
        split_on_campaign: bool = False,
        split_at_midnight: bool = False,
        exclude_bots: bool = False,
        visitor_key: str = DEFAULT_VISITOR_KEY,
        asset_pattern: str = DEFAULT_ASSET_PATTERN,
        report: str | Path | None = None,
        csv_safe: bool = False,
        partition_by_date: bool = False,
        pageviews_output: str | Path | None = None,
        users_output: str | Path | None = None,
        memory_limit: str | int | None = None,
        buckets: int | str | None = None,
        temp_dir: str | Path | None = None,
        state: str | Path | None = None,
        output_dir: str | Path | None = None,
        lateness: str | timedelta | None = None,
        reprocess: bool = False,
        engine: str = "local",
        scheduler: str | None = None,
        partitions: int | str | None = None,
        spark_master: str | None = None,
        spark: Any = None,
    ) -> RunConfig:
        """The config of the flat options of ``sessionize run`` (same names as its flags).

        Every value is parsed and every combination checked here, before any input, output or
        database is opened: a :class:`~sessionize.errors.UsageError` names the flag and the fix, a
        value of the wrong type too (``buckets=3.5``, ``dedupe="no"``, ``timeout=30``: a duration takes
        its unit, ``"30m"``). Each option takes its flag's text or the Python value it stands for (a
        ``timedelta``, a ``datetime`` or ``date``, a list of names, a ``pathlib.Path``); ``None`` is the
        default, as leaving the option out.
        """
        if on_invalid not in ("fail", "skip"):
            raise UsageError(f"--on-invalid {on_invalid!r} is not one of fail, skip.")
        # As the CLI's choices take them (a TOML config's "CSV" was accepted here, refused at run time).
        if format is not None and format not in S.OUTPUT_FORMATS:
            raise UsageError(f"--format {format!r} is not one of {', '.join(S.OUTPUT_FORMATS)}.")
        if input_format is not None and input_format not in S.INPUT_FORMATS:
            raise UsageError(f"--input-format {input_format!r} is not one of {', '.join(S.INPUT_FORMATS)}.")
        if rejects is not None and on_invalid != "skip":
            raise UsageError(
                "--rejects needs --on-invalid skip: with the default (fail) no row is set aside."
            )
        if spark is not None and engine == "local":
            engine = "spark"  # a SparkSession given: the Spark engine
        if engine not in ENGINES:
            raise UsageError(f"--engine {engine!r} is not one of {', '.join(ENGINES)}.")
        # Whole numbers by now (see _typed), the text of one too.
        buckets = None if buckets is None else whole_number("buckets", buckets)
        partitions = None if partitions is None else whole_number("partitions", partitions)
        if buckets is not None and not 1 <= buckets <= MAX_BUCKETS:
            raise UsageError(
                f"--buckets {buckets} must be from 1 to {MAX_BUCKETS:,} (each bucket is a pass over its "
                "spill files). Leave it out to choose it from --memory-limit."
            )
        if partitions is not None and not 1 <= partitions <= MAX_PARTITIONS:
            raise UsageError(f"--partitions {partitions} must be from 1 to {MAX_PARTITIONS:,}.")
        anonymize = anonymize_mode(anonymize_ip)
        secret = None if hash_user_ids is None else read_secret(hash_user_ids)
        zone = check_timezone(timezone)
        event_counts = check_event_counts(count_events)
        checked_aggregates = check_aggregates(aggregates, taken=[column for column, _ in event_counts])
        read = ReadOptions(
            # The *_col keywords of this signature, as ColumnNames' fields name them.
            columns=ColumnNames.of(locals()),
            input_format=input_format,
            time_unit=check_time_unit(time_unit),
            # Naive input times are in --timezone unless --input-timezone (a preset's UTC) says otherwise.
            input_timezone=zone
            if input_timezone is None
            else check_timezone(input_timezone, "--input-timezone"),
            ambiguous_time=check_ambiguous_time(ambiguous_time),
            pageview_events=S.split_list(pageview_events),
            unnest_params=S.split_list(unnest_params),
            preferred_columns=check_preferred_columns(preferred_columns),
            # Empty: off (``--user-fallback-col ''`` switches a preset's off).
            user_fallback_col=(user_fallback_col or "").strip(),
            session_id_nulls=S.split_list(session_id_nulls),
            require_session_id=require_session_id,
            page_activity_events=S.split_list(page_activity_events),
            event_id_scope=one_of(event_id_scope, EVENT_ID_SCOPES, option="--event-id-scope"),
            filters=check_filters(filter),
            max_send_delay=None
            if max_send_delay is None
            else S.parse_duration(max_send_delay, option="--max-send-delay"),
            encoding=encoding,
            on_invalid=on_invalid,  # type: ignore[arg-type]
            valid_from=parse_timestamp(valid_from, "--valid-from"),
            # None: a day after the run starts, taken then (RunConfig.at_run_time), not when the config is
            # built (review of stop 57: a config built once by a service rejected every event a day later).
            valid_until=parse_timestamp(valid_until, "--valid-until"),
            visitor_key=check_visitor_key(visitor_key),
            asset_pattern=check_asset_pattern(asset_pattern),
            aggregates=checked_aggregates,
            heartbeats=bool(S.split_list(heartbeat_events)),
            anonymize_ip=anonymize is not None,
            user_id_secret=secret,
            visitor_secret=visitor_secret(anonymize, secret, incremental=state is not None),
        )
        if stitch_fallback and not read.stitching:
            raise UsageError(
                "--stitch-fallback goes with --stitch-col (the login id column): without it there is no "
                "stitched_user_id to fall back."
            )
        if heartbeat_time_col is not None and not read.heartbeats:
            raise UsageError(
                "--heartbeat-time-col goes with --heartbeat-events (the heartbeats whose windows it times): "
                "without them engaged time counts no heartbeat."
            )
        session = SessionOptions(
            timeout=S.parse_duration(timeout),
            max_session_length=None
            if max_session_length is None
            else S.parse_duration(max_session_length, option="--max-session-length"),
            session_cap=None
            if session_cap is None
            else S.parse_duration(session_cap, option="--session-cap"),
            shared_session_ids=one_of(shared_session_ids, SHARED_SESSION_IDS, option="--shared-session-ids"),
            split_on_campaign=split_on_campaign,
            split_at_midnight=split_at_midnight,
            timezone=zone,
            conversion_events=S.split_list(conversion_events),
            internal_domains=normalize_internal_domains(internal_domains),
            event_counts=event_counts,
            channel_rules=one_of(channel_rules, CHANNEL_RULES, option="--channel-rules"),
            stitch_fallback=stitch_fallback,
            aggregates=checked_aggregates,
            engaged=S.EngagedTime(
                heartbeat_events=S.split_list(heartbeat_events),
                heartbeat_s=S.parse_duration(
                    heartbeat_interval, option="--heartbeat-interval"
                ).total_seconds(),
                min_visit_s=_non_negative(min_visit_length, "--min-visit-length"),
                threshold_s=None
                if engaged_threshold is None
                else S.parse_duration(engaged_threshold, option="--engaged-threshold").total_seconds(),
            ),
            referers=_path(referers),
            geoip_db=_path(geoip_db),
            geo=not no_geo,
        )
        privacy = PrivacyOptions(
            anonymize_ip=anonymize,
            hash_user_ids_env=hash_user_ids,
            secret=secret,
            drop_columns=check_drop_columns(
                drop_columns,
                extra=[
                    *([S.STITCHED_USER_ID] if read.stitching else []),
                    *(column for column, _ in event_counts),
                    *(aggregate.name for aggregate in checked_aggregates),
                ],
            ),
            dedupe=dedupe,
            exclude_bots=exclude_bots,
        )
        _check_dropped_user_id(privacy, stitch_fallback=stitch_fallback)
        outputs = OutputOptions(
            output=_path(output),
            format=format,
            rejects=_path(rejects),
            report=_path(report),
            csv_safe=csv_safe,
            partition_by_date=partition_by_date,
            pageviews_output=_path(pageviews_output),
            users_output=_path(users_output),
        )
        _check_distinct_outputs(outputs)
        engines = EngineOptions(
            engine=engine,
            memory_limit=None if memory_limit is None else parse_memory(memory_limit),
            buckets=buckets,
            temp_dir=_path(temp_dir),
            scheduler=scheduler,
            partitions=partitions,
            spark_master=spark_master,
            spark_session=spark,
        )
        incremental = None
        # Checked with or without --state: a negative or mistyped --lateness is an error wherever it is given.
        late = DEFAULT_LATENESS if lateness is None else S.parse_duration(lateness, option="--lateness")
        if state is not None or output_dir is not None:
            if state is None or output_dir is None:
                raise UsageError(
                    "--state and --output-dir go together: the state says what was processed, the output "
                    "directory holds the session partitions."
                )
            incremental = IncrementalOptions(
                state=str(state),
                output_dir=str(output_dir),
                lateness=late,
                reprocess=reprocess,
            )
        elif reprocess:
            raise UsageError("--reprocess goes with --state: without a state every input is read.")
        elif lateness is not None:
            raise UsageError(
                "--lateness goes with --state: without a state no event is late (every input is read whole)."
            )
        return cls(read, session, privacy, outputs, engines, incremental)

    def at_run_time(self) -> RunConfig:
        """This config as a run starting now takes it: the default ``--valid-until`` (none given) is
        :data:`DEFAULT_FUTURE_LIMIT` after now."""
        if self.read.valid_until is not None:
            return self
        until = datetime.now(UTC) + DEFAULT_FUTURE_LIMIT
        return dataclasses.replace(self, read=dataclasses.replace(self.read, valid_until=until))

    @classmethod
    def build(
        cls,
        options: Mapping[str, Any],
        *,
        preset: str | None = None,
        given: Mapping[str, Any] | None = None,
    ) -> RunConfig:
        """The config of flat ``options`` under ``preset`` (a vendor preset's options under the ones
        set explicitly): what the CLI, :func:`sessionize.run` and :meth:`from_toml` build. ``given`` are
        the options set explicitly (default: every one of ``options``), which win over the preset's."""
        explicit = {
            key: value for key, value in (options if given is None else given).items() if value is not None
        }
        merged = {**options, **presets.apply(preset, explicit)}
        return presets.configured(cls.from_options(**merged), preset, explicit)

    @classmethod
    def from_toml(cls, path: str | Path, **overrides: Any) -> tuple[list[str], RunConfig]:
        """The inputs and config of a TOML file, as ``sessionize run --config`` reads it (see
        :func:`load_toml`): its ``preset`` applied as the CLI applies it, and ``overrides`` (flat options,
        ``preset`` too) taking precedence over the file. The CLI's own keys (``log-format``, ``quiet``,
        ``debug``) are checked and left to it."""
        options = {**load_toml(path), **overrides}
        inputs = options.pop("inputs", [])
        for key in CLI_KEYS:
            options.pop(key, None)
        preset = options.pop("preset", None)
        return list(inputs), cls.build(options, preset=preset)

    def fingerprint(self) -> dict[str, str]:
        """The options the sessions depend on, as text: an incremental state is only continued with
        the same ones. Derived from the fields marked as changing sessions, never listed by hand (a
        mark may be a function of the field's value giving its settings: ``engaged``, ``geo``), and
        from the column roles that only an option switches on (:meth:`ReadOptions.switched_on`)."""
        values: dict[str, str] = {}
        for group in (self.read, self.session, self.privacy, self.incremental):
            if group is None:
                continue
            for item in dataclasses.fields(group):
                mark = item.metadata.get("fingerprint")
                if callable(mark):
                    values.update(mark(getattr(group, item.name)))
                elif mark:
                    values[_FINGERPRINT_NAMES.get(item.name, item.name)] = _text(getattr(group, item.name))
        # Whether each such role is on, not its column: an export whose column was renamed continues.
        values.update({f"{name}_col": _text(on) for name, on in self.read.switched_on().items()})
        if self.incremental is not None:
            # Page views are kept in partitions run after run: a state continues with or without them.
            values["pageviews"] = "yes" if self.output.pageviews_output is not None else "no"
        # A rule, not an option: recorded so that a state written under an earlier one is told apart.
        values["blank_ids"] = BLANK_IDS
        return values


#: Fingerprint keys whose name differs from their field (the names states were written with).
_FINGERPRINT_NAMES = {"secret": "hash_user_ids"}


def engaged_settings(engaged: S.EngagedTime) -> dict[str, str]:
    """The fingerprint's settings of how engaged time is measured, keyed as their flags are named. The
    heartbeat interval and the minimum visit length count only heartbeats: without
    ``--heartbeat-events`` they change nothing, and are not recorded (review 60 F8)."""
    values = {"heartbeat_events": _text(engaged.heartbeat_events)}
    if engaged.heartbeat_events:
        values["heartbeat_interval"] = _text(timedelta(seconds=engaged.heartbeat_s))
        values["min_visit_length"] = _text(timedelta(seconds=engaged.min_visit_s))
    threshold = engaged.threshold_s
    values["engaged_threshold"] = _text(None if threshold is None else timedelta(seconds=threshold))
    return values


def _text(value: object) -> str:
    if isinstance(value, tuple):
        return ",".join(str(item) for item in value)
    if isinstance(value, bytes):
        return secret_fingerprint(value)
    return str(value)


#: scrypt's cost: about 30 ms and 16 MiB a guess, so that the fingerprint a state keeps is no help
#: to someone guessing the secret offline (a bare SHA-256 costs nanoseconds a guess).
_SCRYPT = {"n": 1 << 14, "r": 8, "p": 1, "dklen": 16}
_SCRYPT_SALT = b"sessionize: does this run use the state's --hash-user-ids secret?"


def secret_fingerprint(secret: bytes) -> str:
    """What an incremental state keeps of the ``--hash-user-ids`` secret: enough to tell whether a run
    uses the same one, costly to test guesses against (scrypt, not a bare hash)."""
    return "scrypt:" + hashlib.scrypt(secret, salt=_SCRYPT_SALT, **_SCRYPT).hex()


def legacy_secret_fingerprint(secret: bytes) -> str:
    """The fingerprint states written before 0.3 keep (a SHA-256 prefix): recognised, then replaced."""
    return hashlib.sha256(secret).hexdigest()[:16]


#: The names of standard output besides ``-`` (review of stop 57: ``-o - --rejects /dev/stdout`` were two
#: outputs on one stream, found only when the second was opened, after the run).
_STDOUT_NAMES = ("-", "/dev/stdout", "/dev/fd/1", "/proc/self/fd/1")


def _is_stdout(path: str) -> bool:
    return path in _STDOUT_NAMES


def _check_distinct_outputs(outputs: OutputOptions) -> None:
    """Two outputs naming one file would overwrite each other, and two on stdout would be one stream
    (refused here, before any work, rather than when the second is opened)."""
    on_stdout = [option for option, path in outputs.by_option().items() if _is_stdout(path)]
    if len(on_stdout) > 1:
        *others, last = on_stdout
        named = f"{', '.join(others)} and {last}"
        table = " (the session table, which goes to stdout when -o is not given and stdout is piped)"
        verb = "both write" if len(on_stdout) == 2 else "all write"
        raise UsageError(
            f"{named} {verb} to stdout (-){table if on_stdout[0] == '-o' else ''}, and stdout can carry "
            f"only one output: give {' and '.join(on_stdout[1:])} a file."
        )
    seen: dict[str, str] = {}
    for option, path in outputs.targets().items():
        key = os.path.realpath(path)
        if key in seen:
            raise UsageError(
                f"{seen[key]} and {option} name the same file ({path}): give each output its own file."
            )
        seen[key] = option


#: The flat option names (``RunConfig.from_options``' keywords), e.g. for the TOML file's keys; not
#: ``preferred_columns``, which presets set (sessionize/presets.py) and Python may give, nor ``spark``
#: (a ``SparkSession`` object, Python only).
OPTION_NAMES: tuple[str, ...] = tuple(
    name
    for name in inspect.signature(RunConfig.from_options).parameters
    if name not in ("preferred_columns", "spark")
)
#: The check of each flat option's type (see :func:`_typed`).
_OPTION_CHECKS: dict[str, Callable[[str, object], object]] = {
    p.name: _CHECKS[str(p.annotation)]
    for p in inspect.signature(RunConfig.from_options).parameters.values()
    if p.kind is p.KEYWORD_ONLY
}


#: Config file keys spelled as their flag where the keyword differs (``agg = [...]`` for ``--agg``).
_TOML_ALIASES = {"agg": "aggregates"}
#: What ``--log-format`` takes (the same as :data:`sessionize.console.LOG_FORMATS`, checked by the tests).
LOG_FORMATS = ("auto", "text", "json")
#: The config file's keys of the CLI's own flags, how it reports a run: the CLI takes them, the library
#: checks them and leaves them (``RunConfig.from_toml`` reads the file the CLI reads).
CLI_KEYS: dict[str, Callable[[str, object], object]] = {
    "log_format": lambda name, value: one_of(_as_text(name, value), LOG_FORMATS, option=flag_of(name)),
    "quiet": _switch,
    "debug": _switch,
}


def _config_value(name: str, value: object) -> object:
    """One value of a config file, checked as :meth:`RunConfig.from_options` checks a keyword and in the
    form the CLI's flags take it: a list option's array stays a list (not its text), a table of
    ``filter``/``agg`` becomes their specs, a TOML date or datetime ISO 8601 text."""
    if name == "preset":
        return presets.get(_as_text(name, value)).name
    if name in CLI_KEYS:
        return CLI_KEYS[name](name, value)
    if name == "anonymize_ip" and not isinstance(value, str):
        # The flag has a mode as its value: `anonymize-ip = true` is not one (review 42).
        raise UsageError(
            f"--anonymize-ip {value!r} is not one of {', '.join(ANONYMIZE_MODES)}: give one as text."
        )
    if name == "filter" and isinstance(value, Mapping):
        checked = _filters(name, value)
        assert isinstance(checked, Mapping)
        value = [f"{column}={','.join(S.split_list(kept))}" for column, kept in checked.items()]
    elif name == "aggregates" and isinstance(value, Mapping):
        _aggregates(name, value)
        value = [f"{column}={spec}" for column, spec in value.items()]
    if name in ("filter", "aggregates") and isinstance(value, str):
        value = [value]  # repeatable flags: one spec is a list of one
    checked = _OPTION_CHECKS[name](name, value)
    return checked.isoformat() if isinstance(checked, datetime) else checked


def load_toml(path: str | Path) -> dict[str, Any]:
    """The options of a TOML config file, checked: its ``[run]`` table (or its top level), keys as the
    flags are spelled (``user-col``) or as keywords (``user_col``); ``input``/``inputs`` a path or a
    list, ``preset`` a vendor preset, and the CLI's own ``log-format``, ``quiet`` and ``debug``.

    The one reader of config files: ``sessionize run --config`` and :meth:`RunConfig.from_toml` take
    the same keys and the same values, each value checked here as its keyword is (a key of the wrong
    type is a :class:`UsageError` naming it, never its text read as a name: review 60 F1, F6). A list
    option takes comma-separated text or an array."""
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise UsageError(f"--config: cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"--config: {path} is not valid TOML: {exc}") from None
    table = data.get("run", data)
    if not isinstance(table, Mapping):
        raise UsageError(f"--config: {path}: [run] must be a table of options")
    if table is not data:
        # Review of stop 57: a key above the [run] header (or a misspelt table beside it) was ignored, and
        # the run went on with the default.
        outside = [key for key in data if key != "run"]
        if outside:
            raise UsageError(
                f"--config: {path}: {', '.join(repr(key) for key in outside)} outside the [run] table: "
                "with a [run] table, every option goes in it (below the [run] line)."
            )
    names = {*OPTION_NAMES, *CLI_KEYS, "preset"}
    options: dict[str, Any] = {}
    given: dict[str, str] = {}
    for key, value in table.items():
        name = key.replace("-", "_").lstrip("_")
        name = _TOML_ALIASES.get(name, name)
        taken = "inputs" if name == "input" else name
        if taken in given:
            # Two spellings of one option (count-events and count_events, agg and aggregates): the last
            # one won, without a word (review of stop 57).
            raise UsageError(
                f"--config: {path}: {given[taken]!r} and {key!r} are the same option: give it once."
            )
        given[taken] = key
        if name in ("input", "inputs"):
            paths = [value] if isinstance(value, str) else value
            if not isinstance(paths, list) or not all(isinstance(item, str) for item in paths):
                raise UsageError(
                    f"--config: {path}: {key} = {_toml_text(value)}: give a path or a list of paths as text."
                )
            options["inputs"] = list(paths)
            continue
        if name not in names:
            known = ", ".join(sorted(n.replace("_", "-") for n in names))
            close = difflib.get_close_matches(name, sorted(names), n=1)
            hint = f" Did you mean {close[0].replace('_', '-')!r}?" if close else ""
            raise UsageError(
                f"--config: {path}: unknown option {key!r}.{hint} Known options: inputs, {known}."
            )
        try:
            options[name] = _config_value(name, value)
        except UsageError as exc:
            raise UsageError(f"--config: {path}: {key} = {_toml_text(value)}: {exc}") from None
    return options


def _toml_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


__all__ = [
    "ColumnNames",
    "EngineOptions",
    "IncrementalOptions",
    "OutputOptions",
    "PrivacyOptions",
    "ReadOptions",
    "RunConfig",
    "SessionOptions",
    "flag_of",
    "load_toml",
]
