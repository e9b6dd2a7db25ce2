"""Bring any event frame to the canonical events schema: pure ``LazyFrame -> LazyFrame`` steps.

The canonical frame has the columns of :data:`sessionize.schema.EVENT_SCHEMA`: string ids and URLs,
``timestamp`` as UTC microseconds, and an ``is_pageview`` flag.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TypeVar

import polars as pl

from sessionize import schema as S
from sessionize.config import OnInvalid as OnInvalid
from sessionize.config import TimeUnit as TimeUnit
from sessionize.config import check_timezone
from sessionize.distinct import fresh_name
from sessionize.errors import (
    BadNumberError,
    BadTimestampError,
    MissingColumnError,
    MissingUserIdError,
    OutOfRangeError,
    SessionizeWarning,
    UsageError,
)

#: Extra columns of a prepared frame that :func:`check_events` reads.
ROW = "_row"
RAW_TIME = "_raw_time"
#: With ``keep_raw``: each number column of ``--agg`` as its input text (``_raw_agg0``), so that a value
#: that is not a number is told from a missing one.
RAW_PREFIX = "_raw"
#: The reason a row is invalid (null for a valid row), in :func:`invalid_reason`.
REASON = "_reason"
#: How many bad rows an error message shows.
MAX_REPORTED_ROWS = 5
SKIP_HINT = "--on-invalid skip to set them aside (and --rejects PATH to keep them)"


_MICROS_PER_UNIT = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": 0.001}
# Epoch magnitudes at which a number is taken to be in the next finer unit: 1e11 seconds is the year
# 5138, 1e11 milliseconds is 1973. The usual heuristic of log tools.
_AUTO_UNIT_LIMITS = ((1e11, "s"), (1e14, "ms"), (1e17, "us"))  # below 1e17: us, above: ns

# ISO 8601 variants are rewritten to one shape before parsing: a `T` between date and time, `Z` or
# ` UTC` as `+00:00`, no space before the offset, `+hh:mm` offsets, seconds always present.
_ISO_AWARE = "%Y-%m-%dT%H:%M:%S%.f%z"
_ISO_NAIVE = "%Y-%m-%dT%H:%M:%S%.f"
_DATE_ONLY = "%Y-%m-%d"
# Other shapes with an offset, after timestamp_text (which drops the space before it and writes
# UTC/GMT as +00:00): RFC 2822 with and without its weekday (email, RSS, HTTP dates) and an access
# log's own [10/Oct/2000:13:55:36 -0700], as exports copy it into a column.
_OTHER_AWARE = ("%a, %d %b %Y %H:%M:%S%z", "%d %b %Y %H:%M:%S%z", "%d/%b/%Y:%H:%M:%S%z")
# Their year has four digits (chrono's %Y takes fewer: "01 May 24" would be the year 24).
_OTHER_AWARE_YEAR = r"[A-Za-z]{3}[ /][0-9]{4}[ :]"
# The commonest shapes, tried first as they are: ISO 8601 in UTC with `Z` (what trackers and
# `date -u +%FT%T.%6NZ` write) and SQL's naive `YYYY-MM-DD HH:MM:SS[.f]`. Only the values that fail
# both go through the rewrite and the general parsers, which take 2-3x as long.
_FAST_UTC = "%Y-%m-%dT%H:%M:%S%.fZ"
_FAST_NAIVE = "%Y-%m-%d %H:%M:%S%.f"
# Within those shapes, the fractions of 0, 3, 6 and 9 digits have a fixed width, by the value's length:
# Polars parses a fixed-width format itself, 6x faster than chrono parses `%.f` (10M timestamps of 6
# digits: 0.21 s against 1.3 s; bench/README.md, stop 37). A value of such a length that the fixed format
# rejects falls through to the format above, so the two give the same instants (tests/test_io.py).
# Polars tries chrono too when its own parser fails, so only values of the right length are handed it.
# Chrono is lenient where the general parsers are not (it takes `+2024-05-1 10:00:00`, a space before a
# field, any whitespace for the space): the naive formats see only the values that start as
# _NAIVE_DATE does (the `Z` ones the same values as the general parsers' `%z` format, also chrono's).
_FIXED_UTC = {
    20: "%Y-%m-%dT%H:%M:%SZ",
    24: "%Y-%m-%dT%H:%M:%S.%3fZ",
    27: "%Y-%m-%dT%H:%M:%S.%6fZ",
    30: "%Y-%m-%dT%H:%M:%S.%9fZ",
}
_FIXED_NAIVE = {
    19: "%Y-%m-%d %H:%M:%S",
    23: "%Y-%m-%d %H:%M:%S.%3f",
    26: "%Y-%m-%d %H:%M:%S.%6f",
    29: "%Y-%m-%d %H:%M:%S.%9f",
}
# ISO 8601 with a `T` and no `Z`: naive (Python's `isoformat()`) or with a `+hh:mm` offset (`isoformat()`
# of an aware time, Java's OffsetDateTime, most APIs): the date and time by these fixed-width formats,
# by the length without the offset; the offset added as minutes. 3-4x faster than the rewrite and
# chrono's `%.f%z`, which see only what these leave (an offset of another form, other fractions).
_FIXED_T = {
    19: "%Y-%m-%dT%H:%M:%S",
    23: "%Y-%m-%dT%H:%M:%S.%3f",
    26: "%Y-%m-%dT%H:%M:%S.%6f",
    29: "%Y-%m-%dT%H:%M:%S.%9f",
}
#: The naive SQL shape's date and space, as the general parsers' rewrite (:func:`timestamp_text`) takes
#: them to put a `T` for the space, in ASCII digits (the regex crate's ``\d`` is any script's; chrono's
#: are ASCII). What follows is read by chrono in both paths alike: the fast formats' space takes any
#: whitespace after it, as chrono's hour after the `T` does.
_NAIVE_DATE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2} "
#: The largest length :func:`_shape_of` tells (any longer is of no fixed width).
_LONGEST_SHAPE = 127
_TEXT = "_time_text"
_FAST = "_time_fast"
_RAW = "_time_raw"


#: The instants a timestamp may be: years 1 to 9999, as Python's datetime and every warehouse take
#: them. An epoch number beyond is invalid (``bad_timestamp``), never wrapped around.
_MIN_MICROS = -62_135_596_800 * 1_000_000
_MAX_MICROS = 253_402_300_799_999_999
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


def _epoch_to_micros(value: pl.Expr, time_unit: TimeUnit | None, *, is_float: bool) -> pl.Expr:
    # Magnitudes and ranges in floating point: abs() of the smallest Int64 and a product beyond
    # Int64 would wrap around (-9223372036854775808 became 1970-01-01).
    approximate = value.cast(pl.Float64)
    if not is_float:
        # The smallest Int64 is numpy's and pandas' NaT (and the largest a common "no value"): missing.
        value = pl.when(value.is_between(_INT64_MIN + 1, _INT64_MAX - 1)).then(value)
        approximate = value.cast(pl.Float64)

    def scaled(unit: str) -> pl.Expr:
        factor = _MICROS_PER_UNIT[unit]
        in_range = (approximate * factor).is_between(_MIN_MICROS, _MAX_MICROS)
        kept = pl.when(in_range).then(value)  # out of range: null before any integer product
        if is_float:
            return (kept * factor).round(0).cast(pl.Int64)
        if unit == "ns":
            return kept // 1_000
        return kept * int(factor)

    if time_unit is not None:
        return scaled(time_unit)
    magnitude = approximate.abs()
    return (
        pl.when(magnitude < _AUTO_UNIT_LIMITS[0][0])
        .then(scaled("s"))
        .when(magnitude < _AUTO_UNIT_LIMITS[1][0])
        .then(scaled("ms"))
        .when(magnitude < _AUTO_UNIT_LIMITS[2][0])
        .then(scaled("us"))
        .otherwise(scaled("ns"))
    )


_UNIT_NAMES = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}


def epoch_unit_counts(raw: pl.Series) -> dict[str, int]:
    """How many epoch numbers of a raw timestamp column each unit reads; empty for text timestamps (ISO
    8601) or no number at all. The unit is guessed value by value from the size (below 1e11: seconds;
    1e14: milliseconds; 1e17: microseconds; else nanoseconds), so a file that mixes units still reads;
    :func:`describe_epoch_units` tells the user when the counts hold more than one unit.

    Counts of a file's slices add up to the whole file's (:func:`describe_epoch_units` of their sum),
    so that a file read a slice at a time is told of once, as a whole read tells it."""
    if raw.dtype == pl.String:
        sample = raw.head(1000).drop_nulls().str.strip_chars()
        if not sample.str.contains(r"^-?\d+(\.\d+)?$").any():
            return {}  # text timestamps (ISO 8601): no unit to guess
        if _one_size_of_text(raw):
            # One unit: the size of any one of them (a cast of the whole column took 0.8 s for 10M).
            first = sample.cast(pl.Float64, strict=False).drop_nulls().drop_nans()
            return _one_unit(first, raw)
        numbers = raw.str.strip_chars().cast(pl.Float64, strict=False)
    elif raw.dtype.is_numeric():
        low, high = _extremes(raw)
        if low is None or high is None:
            return {}
        small = 0.0 if low < 0 < high else min(abs(low), abs(high))
        if _unit_band(small) == _unit_band(max(abs(low), abs(high))):
            # Every magnitude lies between the two: one unit (two reductions, no copy).
            return _one_unit(pl.Series([max(abs(low), abs(high))]), raw)
        numbers = raw.cast(pl.Float64)
    else:
        return {}
    # Each number's band: how many of the limits it reaches (a NaN is in none).
    magnitude = pl.col("number").abs()
    bands = (
        numbers.drop_nulls()
        .drop_nans()
        .to_frame("number")
        .select(pl.sum_horizontal((magnitude >= limit).cast(pl.UInt8) for limit, _ in _AUTO_UNIT_LIMITS))
        .to_series()
    )
    counts = dict(bands.value_counts().iter_rows())
    return {unit: counts[band] for band, unit in enumerate(_UNIT_NAMES) if counts.get(band)}


#: Whole numbers that read as a yyyymmdd date (``20240501``, GA4's ``event_date``, a partition column):
#: as epoch seconds they fall in August 1970, where no event log has events.
DATE_NUMBERS = (19000101, 21001231)


def date_number_count(raw: pl.Series) -> int:
    """How many values a raw timestamp column holds when every one is a whole number in
    :data:`DATE_NUMBERS` (a column of dates, which the size rule reads as epoch seconds); else 0. Costs
    two reductions of an integer column, and of a text one only when its first values are all 8 digits."""
    numbers = raw
    if raw.dtype == pl.String:
        sample = raw.head(1000).drop_nulls().str.strip_chars()
        if not sample.len() or not sample.str.contains(r"^[0-9]{8}$").all():
            return 0
        numbers = raw.str.strip_chars().cast(pl.Int64, strict=False)
        if numbers.null_count() != raw.null_count():
            return 0  # some value is not such a number
    elif not raw.dtype.is_integer():
        return 0
    low, high = _extremes(numbers)
    if low is None or high is None or low < DATE_NUMBERS[0] or high > DATE_NUMBERS[1]:
        return 0
    return numbers.len() - numbers.null_count()


def _one_unit(sample: pl.Series, raw: pl.Series) -> dict[str, int]:
    """Every value of ``raw`` (but nulls and NaN) counted in the unit of ``sample``'s first, when there
    is one (text that is not a number, which the reader rejects, is counted with them)."""
    if not sample.len():
        return {}
    count = raw.len() - raw.null_count()
    if raw.dtype.is_float():
        count -= int(raw.is_nan().sum())
    return {list(_UNIT_NAMES)[_unit_band(abs(float(sample[0])))]: count} if count else {}


def describe_epoch_units(counts: Mapping[str, int]) -> str | None:
    """``"1,204 read as seconds, 3 as milliseconds"`` for counts of :func:`epoch_unit_counts` in more
    than one unit; else None."""
    found = [(unit, counts[unit]) for unit in _UNIT_NAMES if counts.get(unit)]
    if len(found) < 2:
        return None
    return ", ".join(
        f"{count:,} read as {_UNIT_NAMES[unit]}" if n == 0 else f"{count:,} as {_UNIT_NAMES[unit]}"
        for n, (unit, count) in enumerate(found)
    )


def _unit_band(magnitude: float) -> int:
    """0 for the seconds' sizes, 1 milliseconds', 2 microseconds', 3 nanoseconds' (see
    :data:`_AUTO_UNIT_LIMITS`)."""
    return sum(magnitude >= limit for limit, _ in _AUTO_UNIT_LIMITS)


def _one_size_of_text(raw: pl.Series) -> bool:
    """Whether text epochs fall in one unit's sizes, told cheaply by their lengths (35 ms for 10M
    values, where reading them as numbers took 0.8 s): whole numbers of 11 characters or fewer are
    seconds', 12-14 milliseconds', and so on. A sign or decimals make a value look longer, never
    shorter, so only a column of seconds with long decimals next to milliseconds can pass unnoticed;
    lengths in two ranges are counted exactly by the caller."""
    shortest, longest = _extremes(raw.str.len_bytes())
    if shortest is None or longest is None:
        return True
    return _unit_band(10.0 ** (shortest - 1)) == _unit_band(10.0 ** (longest - 1))


def _extremes(values: pl.Series) -> tuple[float | None, float | None]:
    """The smallest and largest value, as floats (None for a column of nulls)."""
    low, high = (
        values.to_frame("v")
        .select(pl.col("v").min().cast(pl.Float64), pl.col("v").max().cast(pl.Float64).alias("w"))
        .row(0)
    )
    return low, high


def _micros_to_utc(micros: pl.Expr) -> pl.Expr:
    return micros.cast(pl.Int64).cast(S.TIMESTAMP)


def _localize(naive: pl.Expr, timezone: str, ambiguous: str = "earliest") -> pl.Expr:
    # A local time in the hour a clock change skips does not exist: null (``nonexistent_local_time``).
    return (
        naive.dt.cast_time_unit("us")
        .dt.replace_time_zone(
            timezone,
            ambiguous="null"
            if ambiguous == "reject"
            else ("latest" if ambiguous == "latest" else "earliest"),
            non_existent="null",
        )
        .dt.convert_time_zone("UTC")
    )


def local_time_reason(raw: pl.Expr, timezone: str) -> pl.Expr:
    """Why a raw timestamp that did not become an instant failed, when it is a local time of
    ``timezone``: ``nonexistent_local_time`` (in the hour a clock change skips) or
    ``ambiguous_local_time`` (twice, with ``--ambiguous-time reject``); else null."""
    text = timestamp_text(_rarer_forms(raw.cast(pl.String).str.strip_chars()))
    naive = pl.coalesce(
        text.str.to_datetime(_ISO_NAIVE, time_unit="us", strict=False),
        text.str.to_datetime(_DATE_ONLY, time_unit="us", strict=False),
    )
    earliest = naive.dt.replace_time_zone(timezone, ambiguous="earliest", non_existent="null")
    return (
        pl.when(naive.is_null())
        .then(None)
        .when(earliest.is_null())
        .then(pl.lit("nonexistent_local_time"))
        .otherwise(pl.lit("ambiguous_local_time"))
    )


def _is_text(dtype: pl.DataType) -> bool:
    return isinstance(dtype, pl.String | pl.Categorical | pl.Enum)


def timestamp_text(text: pl.Expr) -> pl.Expr:
    """Rewrite the ISO 8601 variants of a text column to the one shape that the parsers expect."""
    return (
        text.cast(pl.String)
        .str.strip_chars()
        # RFC 3339 allows a lower-case t and z.
        .str.replace(r"^(\d{4}-\d{2}-\d{2})[ Tt]", "${1}T")
        .str.replace(r"(?i)(\s*(?:utc|gmt)|z)$", "+00:00")
        .str.replace(r"\s+([+-]\d{2}(?::?\d{2})?)$", "${1}")
        # An offset of hours only, as PostgreSQL prints it: +02 -> +02:00.
        .str.replace(r"(T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?[+-]\d{2})$", "${1}:00")
        # Minutes without seconds: T10:05 -> T10:05:00.
        .str.replace(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2})($|[+-])", "${1}:00${2}")
    )


def parse_timestamp_text(
    text: pl.Expr, *, time_unit: TimeUnit | None, timezone: str, ambiguous: str = "earliest"
) -> pl.Expr:
    """UTC timestamps from the output of :func:`timestamp_text`: epoch numbers or ISO 8601, then the
    rarer forms (:func:`_rarer_forms`, RFC 2822, an access log's time) of the values those leave."""
    parsed = _parse_usual(text, time_unit=time_unit, timezone=timezone, ambiguous=ambiguous)
    # Taken out of the column (none, for a file in the usual forms) and put back by their places: on
    # the whole column, the rarer forms' rewrites and parses of nulls cost a 10M-event CSV in the
    # usual forms 0.6 s and 500 MiB at the peak.
    left = parsed.is_null() & text.is_not_null()
    places = pl.when(left).then(left.cum_sum() - 1)
    return pl.coalesce(parsed, _parse_rarer(text.filter(left), timezone, ambiguous).gather(places))


def _parse_usual(text: pl.Expr, *, time_unit: TimeUnit | None, timezone: str, ambiguous: str) -> pl.Expr:
    as_int = _epoch_to_micros(text.cast(pl.Int64, strict=False), time_unit, is_float=False)
    as_float = _epoch_to_micros(text.cast(pl.Float64, strict=False), time_unit, is_float=True)
    # A whole number is read as an integer (exactly; a NaT sentinel or one beyond Int64 is missing),
    # a decimal one as a float.
    numeric = (
        pl.when(text.str.contains(r"^-?\d+$"))
        .then(as_int)
        .when(text.str.contains(r"^-?\d+\.\d+$"))
        .then(as_float)
    )
    aware = text.str.to_datetime(_ISO_AWARE, time_unit="us", strict=False)
    naive = pl.coalesce(
        text.str.to_datetime(_ISO_NAIVE, time_unit="us", strict=False),
        text.str.to_datetime(_DATE_ONLY, time_unit="us", strict=False),
    )
    return pl.coalesce(
        _micros_to_utc(numeric), aware.dt.convert_time_zone("UTC"), _localize(naive, timezone, ambiguous)
    )


def _parse_rarer(text: pl.Expr, timezone: str, ambiguous: str) -> pl.Expr:
    """The rarer forms of :func:`timestamp_text`'s output, for the values the usual ones leave (the
    others masked to null, which string kernels skip)."""
    left = timestamp_text(_rarer_forms(text))
    dated = pl.when(left.str.contains(_OTHER_AWARE_YEAR)).then(left)
    rarer = [
        left.str.to_datetime(_ISO_AWARE, time_unit="us", strict=False),
        *(dated.str.to_datetime(form, time_unit="us", strict=False) for form in _OTHER_AWARE),
    ]
    naive_left = pl.coalesce(
        left.str.to_datetime(_ISO_NAIVE, time_unit="us", strict=False),
        left.str.to_datetime(_DATE_ONLY, time_unit="us", strict=False),
    )
    return pl.coalesce(
        *(other.dt.convert_time_zone("UTC") for other in rarer), _localize(naive_left, timezone, ambiguous)
    )


def _rarer_forms(text: pl.Expr) -> pl.Expr:
    """ISO 8601's basic format (``20240501T103000Z``), a date with slashes (``2024/05/01``), a decimal
    comma (``10:00:00,5``) and a zone name after the offset (Java's ``ZonedDateTime``, RFC 9557: the
    offset says the instant) rewritten for :func:`timestamp_text`."""
    return (
        text.str.replace(r"^(\d{4})(\d{2})(\d{2})[Tt](\d{2})(\d{2})(\d{2})", "${1}-${2}-${3}T${4}:${5}:${6}")
        .str.replace(r"^(\d{4})/(\d{2})/(\d{2})", "${1}-${2}-${3}")
        .str.replace(r"^(\d{4}-\d{2}-\d{2}[ Tt]\d{2}:\d{2}:\d{2}),(\d)", "${1}.${2}")
        .str.replace(r"([+-]\d{2}(?::?\d{2})?|[Zz])\[[^\]]*\]$", "${1}")
    )


def with_parsed_text_time(
    events: pl.LazyFrame,
    column: str,
    *,
    time_unit: TimeUnit | None,
    timezone: str,
    ambiguous: str = "earliest",
    helpers: tuple[str, str] = (_FAST, _TEXT),
) -> tuple[pl.LazyFrame, pl.Expr]:
    """``events`` with helper columns (named ``helpers``: one pair per parsed column), and the expression
    of the UTC timestamps that :func:`parse_timestamp_text` gives for :func:`timestamp_text` of the text
    ``column``.

    The common shapes are parsed first as they are; the rewrite and the general parsers see only the
    values those left null (the others are masked to null, which string kernels skip), so a file in
    one of the common shapes is parsed in a fifth of the time. Plain expressions in steps, no Python
    function in the plan: a Python callback inside a collect can deadlock against another thread
    that waits for Polars' thread pool while holding the GIL (seen on a Dask worker).
    """
    fast_name, text_name = helpers
    text = pl.col(column).cast(pl.String)
    fast = pl.col(fast_name)
    taken = [*events.collect_schema().names(), *helpers]
    shape_name = fresh_name("_time_shape", taken)
    # Each text's shape computed once, in a byte: each of the ten steps below measured the text and
    # looked at its end again (12 ms a step for 3M values, a tenth of a fixed-width parse).
    frame = events.with_columns(
        pl.lit(None, pl.Datetime("us", "UTC")).alias(fast_name), _shape_of(text).alias(shape_name)
    )
    # One shape a step, each parse on the values still null and in its shape (the others masked to
    # null, which Polars skips: a failed fixed-width parse would cost a chrono parse), so that the
    # in-memory engine holds one masked copy of the text at a time.
    t_shapes = _has_t_shapes(events, column)
    for number, (shaped, form, utc) in enumerate(_common_shapes(pl.col(shape_name))):
        if t_shapes and number == len(_FIXED_UTC) + 1:
            # After the `Z` shapes, before the naive SQL ones (whose fixed-width formats would hand a
            # naive `T` or offset time of their length to chrono, and whose last format every text
            # left), in steps, each of its values computed once: the texts left that have a `T` where
            # ISO 8601 has it, or SQL's space and a sign after the seconds; their date and time and
            # their offset; their instants. SQL's naive times are left to their own formats.
            offset_name = fresh_name("_time_offset", [*taken, shape_name])
            frame = (
                frame.with_columns(pl.when(fast.is_null() & _t_like(text)).then(text).alias(text_name))
                .with_columns(_t_shape_parts(pl.col(text_name), text_name, offset_name))
                .with_columns(
                    pl.coalesce(
                        fast, _t_shape_instants(pl.col(text_name), pl.col(offset_name), timezone, ambiguous)
                    ).alias(fast_name)
                )
            )
        parsed = (
            pl.when(fast.is_null() & shaped)
            .then(text)
            .str.to_datetime(form, time_unit="us", strict=False, cache=False)
        )
        instant = parsed.dt.replace_time_zone("UTC") if utc else _localize(parsed, timezone, ambiguous)
        frame = frame.with_columns(pl.coalesce(fast, instant).alias(fast_name))
    frame = (
        frame.drop(shape_name)
        # Rewritten in its own step: inside one expression each parse attempt would redo it.
        .with_columns(timestamp_text(pl.when(pl.col(fast_name).is_null()).then(text)).alias(text_name))
    )
    general = parse_timestamp_text(
        pl.col(text_name), time_unit=time_unit, timezone=timezone, ambiguous=ambiguous
    )
    return frame, pl.coalesce(pl.col(fast_name), general)


#: How many of a column's first values tell whether its times have a `T` and no `Z` (see _has_t_shapes).
T_SHAPE_SAMPLE = 10_000


#: Fewest values of :func:`_t_shape_parts`' shapes in a column's sample for its step to be in the plan.
T_SHAPE_MIN = 1_000


def _has_t_shapes(events: pl.LazyFrame, column: str) -> bool:
    """Whether :func:`_t_shape_parts`' step is in the plan: when at least :data:`T_SHAPE_MIN` and a tenth of
    the first :data:`T_SHAPE_SAMPLE` values of the text ``column`` look like its shapes (a ``T`` where
    ISO 8601 has it and no ``Z``, or SQL's space and a sign after the seconds). Its step costs every
    value about a fifth of what it saves one of its shapes over the general parsers: for a file of
    ``Z`` times (its parse of 10M nulls would cost 1.6 GB at the in-memory engine's peak), of SQL's
    naive times with a few others, or a small one, it is not. Those values then go to the general
    parsers, which give the same instants."""
    text = pl.col(column).cast(pl.String)
    counts = (
        events.select(text)
        .head(T_SHAPE_SAMPLE)
        .select((_t_like(text) & ~text.str.ends_with("Z")).sum().alias("shaped"), text.count().alias("set"))
        .collect(engine="in-memory")
    )
    shaped, present = (int(value) for value in counts.row(0))
    return shaped >= T_SHAPE_MIN and shaped * 10 >= present


def _t_like(text: pl.Expr) -> pl.Expr:
    """Whether each text may be one of :func:`_t_shape_parts`' shapes: a ``T`` where ISO 8601 has it, or
    SQL's space and a sign after the seconds."""
    separator, after = text.str.slice(10, 1), text.str.slice(19)
    sign = after.str.contains("+", literal=True) | after.str.contains("-", literal=True)
    return (separator == "T") | ((separator == " ") & sign)


#: The date and time of :func:`_t_shape_parts`, ASCII digits only (the regex crate's ``\d`` is any script's).
_T_SHAPE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.(?:[0-9]{3}|[0-9]{6}|[0-9]{9}))?$"


def _t_shape_parts(left: pl.Expr, local_name: str, offset_name: str) -> list[pl.Expr]:
    """The parts of the texts ``left`` that are ISO 8601 with a ``T`` or SQL's shape with a space, a
    fraction of 0, 3, 6 or 9 digits, and an offset (``+hh:mm``, ``+hhmm``, PostgreSQL's ``+hh``), or
    naive with a ``T``, for :func:`_t_shape_instants` (the naive SQL shape is one of the common shapes):
    each text's date and time with a ``T`` (named ``local_name``; null where the
    text is not of the shapes), and its offset in microseconds (``offset_name``; null for none). An
    offset is taken only as chrono's ``%z`` takes it: ASCII digits, hours 00-23, minutes 00-59 (a cast
    would take ``+5`` or `` 5`` for a number)."""
    length = left.str.len_bytes()
    signs = ["+", "-"]
    # Where the offset's sign is: 6 from the end (+hh:mm), 5 (+hhmm) or 3 (+hh); 0 for none.
    size = (
        pl.when(left.str.slice(-6, 1).is_in(signs) & (left.str.slice(-3, 1) == ":"))
        .then(6)
        .when(left.str.slice(-5, 1).is_in(signs))
        .then(5)
        .when(left.str.slice(-3, 1).is_in(signs))
        .then(3)
        .otherwise(0)
    )
    offset = left.str.tail(size)
    hours = offset.str.slice(1, 2)
    minutes = pl.when(size == 3).then(pl.lit("00")).otherwise(offset.str.tail(2))
    digits = hours.str.contains(r"^(?:[01][0-9]|2[0-3])$") & minutes.str.contains(r"^[0-5][0-9]$")
    micros = (hours.cast(pl.Int64, strict=False) * 60 + minutes.cast(pl.Int64, strict=False)) * 60_000_000
    # Exactly the shape, in ASCII digits: on a failed fixed-width parse Polars asks chrono, which takes
    # a sign before the year, one-digit fields and spaces before them (the general parsers do not).
    # A naive time only with a T: a naive time with a space that the common shapes left is not one.
    head = left.str.head(length - size)
    local = (
        pl.when(
            (((size > 0) & digits) | ((size == 0) & (left.str.slice(10, 1) == "T")))
            & head.str.contains(_T_SHAPE)
        )
        .then(head.str.replace(" ", "T", literal=True, n=1))
        .alias(local_name)
    )
    signed = pl.when(size > 0).then(pl.when(offset.str.head(1) == "-").then(-micros).otherwise(micros))
    return [local, signed.alias(offset_name)]


def _t_shape_instants(local: pl.Expr, offset_us: pl.Expr, timezone: str, ambiguous: str) -> pl.Expr:
    """The instants of :func:`_t_shape_parts` (naive ones local times of ``timezone``), the date and time
    by the fixed-width formats: the same instants as the general parsers give those texts."""
    width = local.str.len_bytes()
    when = pl.coalesce(
        *(
            pl.when(width == chars).then(local).str.to_datetime(form, time_unit="us", strict=False)
            for chars, form in _FIXED_T.items()
        )
    )
    aware = when.dt.replace_time_zone("UTC").dt.epoch("us") - offset_us
    naive = pl.when(offset_us.is_null()).then(when)
    return pl.coalesce(_micros_to_utc(aware), _localize(naive, timezone, ambiguous))


def _shape_of(text: pl.Expr) -> pl.Expr:
    """Which of the common shapes each text may be, for :func:`_common_shapes`: its length in bytes
    (at most :data:`_LONGEST_SHAPE`) for a text ending in ``Z``, minus it for one that starts as
    :data:`_NAIVE_DATE`, null for any other (Int8)."""
    length = text.str.len_bytes().clip(upper_bound=_LONGEST_SHAPE).cast(pl.Int8)
    zulu = text.str.ends_with("Z")
    # Only the other texts searched (a null is skipped): a file of `Z` times pays no search.
    naive = pl.when(~zulu).then(text).str.contains(_NAIVE_DATE)
    return pl.when(zulu).then(length).when(naive).then(-length)


def _common_shapes(shape: pl.Expr) -> list[tuple[pl.Expr, str, bool]]:
    """The common shapes' formats in the order they are tried, each with the test of the texts it is
    tried on (by their ``shape``, :func:`_shape_of`) and whether it is UTC (else a local time): ISO 8601
    with ``Z``, by the fixed widths of its fraction, then any fraction; then the naive SQL shape
    likewise. No text ending in ``Z`` matches the naive formats."""
    return [
        *((shape == width, form, True) for width, form in _FIXED_UTC.items()),
        (shape > 0, _FAST_UTC, True),
        *((shape == -width, form, False) for width, form in _FIXED_NAIVE.items()),
        (shape < 0, _FAST_NAIVE, False),
    ]


def parse_timestamp_series(text: pl.Series, *, time_unit: TimeUnit | None, timezone: str) -> pl.Series:
    """UTC timestamps of a text Series, as :func:`prepare_events` parses them."""
    frame, parsed = with_parsed_text_time(
        text.to_frame(_RAW).lazy(), _RAW, time_unit=time_unit, timezone=timezone
    )
    return frame.select(parsed.alias(text.name)).collect(engine="in-memory").to_series()


def timestamp_expr(
    column: str,
    dtype: pl.DataType,
    *,
    time_unit: TimeUnit | None = None,
    timezone: str | None = None,
    ambiguous: str = "earliest",
    flag: str = "--time-col",
) -> pl.Expr:
    """Expression turning ``column`` of type ``dtype`` into UTC microsecond timestamps (``flag``: the
    option that names the column, for the error of a type that cannot hold timestamps).

    Strings may be ISO 8601 with ``Z`` or any offset (mixed offsets are fine), naive ISO 8601 (taken
    in ``timezone``, default UTC), a date, or epoch numbers. Numbers are epoch values in
    ``time_unit``, or in a unit guessed from their magnitude. Values that do not parse become null.
    """
    tz = check_timezone(timezone)
    col = pl.col(column)
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is None:
            return _localize(col, tz, ambiguous)
        return col.dt.convert_time_zone("UTC").dt.cast_time_unit("us")
    if isinstance(dtype, pl.Date):
        return _localize(col.cast(pl.Datetime("us")), tz, ambiguous)
    if dtype.is_integer():
        return _micros_to_utc(_epoch_to_micros(col.cast(pl.Int64), time_unit, is_float=False))
    if dtype.is_float():
        return _micros_to_utc(_epoch_to_micros(col.cast(pl.Float64), time_unit, is_float=True))
    if _is_text(dtype):
        return parse_timestamp_text(
            timestamp_text(col), time_unit=time_unit, timezone=tz, ambiguous=ambiguous
        )
    raise UsageError(
        f"The timestamp column {column!r} has type {dtype}, which cannot hold timestamps. "
        f"Name another column with {flag}."
    )


def _as_number(column: str | None) -> pl.Expr:
    """A column of numbers, or of their text (what does not read as a finite number is null)."""
    if column is None:
        return pl.lit(None, dtype=pl.Float64)
    number = pl.col(column).cast(pl.String).str.strip_chars().cast(pl.Float64, strict=False)
    return pl.when(number.is_finite()).then(number)


def _non_negative(number: pl.Expr) -> pl.Expr:
    return pl.when(number >= 0).then(number)


def float_text(value: pl.Expr) -> pl.Expr:
    """The text of a float ``value``: a whole one as an integer while the float holds it exactly (below
    2**53: ``1714730400.0`` is ``1714730400``, as its integer is written), others as Polars writes them
    (``1.5``, ``1e+16``, ``NaN``, ``inf``)."""
    whole = (value == value.floor()) & (value.abs() < 2.0**53)
    return (
        pl.when(whole)
        .then(value.cast(pl.Int64, strict=False).cast(pl.String))
        .otherwise(value.cast(pl.String))
    )


def _as_text(
    column: str | None,
    schema: Mapping[str, pl.DataType],
    *,
    nulls: Iterable[str] = ("",),
    blank: bool = False,
) -> pl.Expr:
    """A column as text, ``nulls`` as null. A whole float is written as an integer: JSON's ``7.0`` is
    ``7`` (a file with ``42`` on one line and ``7.0`` on another is read as floats, and its user 42
    was ``42.0``), and so is a pandas integer column with gaps, while the float holds the integer
    exactly (below 2**53; a larger one keeps its float text rather than digits it never had); NaN and
    infinities are null. A whole decimal (BigQuery's NUMERIC: ``42.000000000``) is its integer too.
    With ``blank`` (an id's column), text of only whitespace (``"   "``, a tab) is null as an empty one
    is; other text is kept as written, spaces around it too (ids are opaque: ``" u1"`` is not ``"u1"``)."""
    if column is None:
        return pl.lit(None, dtype=pl.String)
    col = pl.col(column)
    dtype = schema.get(column)
    text: pl.Expr
    if dtype is not None and dtype.is_float():
        text = pl.when(col.is_finite()).then(float_text(col))
    elif isinstance(dtype, pl.Decimal):
        text = col.cast(pl.String).str.replace(r"\.0+$", "")
    else:
        text = col.cast(pl.String)
    missing = text.is_in(list(nulls))
    if blank and dtype is not None and _is_text(dtype):
        # (Only text can be blank: a number column is not tested.)
        missing |= S.is_blank(text)
    return pl.when(missing).then(None).otherwise(text)


def _referrer(columns: S.ColumnMap, schema: Mapping[str, pl.DataType]) -> pl.Expr:
    """The referrer, null where an ``--ignore-referrer-col`` flag is set (GA4's unwanted referrals)."""
    # Apache and nginx write "-" for "no referrer", PostHog's SDK "$direct".
    referrer = _as_text(columns.referrer, schema, nulls=("", "-", "$direct"))
    if columns.ignore_referrer is None:
        return referrer
    return pl.when(_is_true(columns.ignore_referrer, schema)).then(None).otherwise(referrer)


def _is_true(column: str, schema: Mapping[str, pl.DataType]) -> pl.Expr:
    """Whether a flag column is set: boolean true, a finite number other than 0, or the text ``true``
    or ``yes`` or of such a number (``1``, ``1.0``; any case, spaces around ignored; GA4 writes
    ``ignore_referrer`` as the text ``true``). Null, NaN and infinities are false: a pandas 0/1 column
    with gaps (NaN in Parquet, empty in a CSV) reads alike in both."""
    col = pl.col(column)
    dtype = schema.get(column)
    if dtype == pl.Boolean:
        return col.fill_null(False)
    if dtype is not None and dtype.is_numeric():
        return _is_set_number(col)
    text = col.cast(pl.String).str.strip_chars().str.to_lowercase()
    return text.is_in(["true", "yes"]).fill_null(False) | _is_set_number(text.cast(pl.Float64, strict=False))


def _is_set_number(number: pl.Expr) -> pl.Expr:
    """A finite number other than 0 (null, NaN and infinities are false)."""
    value = number.cast(pl.Float64)
    return ((value != 0) & value.is_finite()).fill_null(False)


#: The web_page entity inside Snowplow's self-describing ``contexts`` JSON, and its ``id``.
_WEB_PAGE_ID = (
    r'"schema"\s*:\s*"iglu:com\.snowplowanalytics\.snowplow/web_page/jsonschema/[0-9-]+"\s*,'
    r'\s*"data"\s*:\s*\{\s*"id"\s*:\s*"([^"\\]*)"'
)


def page_view_id_expr(column: str | None, dtype: pl.DataType | None) -> pl.Expr:
    """The page view id from its column: plain text, Snowplow's self-describing ``contexts`` JSON (the
    web_page entity's ``id``), a warehouse's web_page context column (JSON text ``[{"id": ...}]`` or
    a list of structs), or a struct with an ``id``. Null where there is none."""
    if column is None or dtype is None:
        return pl.lit(None, dtype=pl.String)
    col = pl.col(column)
    if isinstance(dtype, pl.List) and isinstance(dtype.inner, pl.Struct):
        if "id" not in [f.name for f in dtype.inner.fields]:
            return pl.lit(None, dtype=pl.String)
        col = col.list.first().struct.field("id")
    elif isinstance(dtype, pl.Struct):
        if "id" not in [f.name for f in dtype.fields]:
            return pl.lit(None, dtype=pl.String)
        col = col.struct.field("id")
    elif not (_is_text(dtype) or dtype.is_integer()):
        return pl.lit(None, dtype=pl.String)
    text = col.cast(pl.String).str.strip_chars()
    return (
        pl.when(text.str.contains("web_page/jsonschema", literal=True))
        .then(text.str.extract(_WEB_PAGE_ID, 1))
        .when(text.str.starts_with("["))
        .then(text.str.json_path_match("$[0].id"))
        .otherwise(text)
        .replace("", None)
    )


#: The column :func:`keep_expr` makes: whether a row passes every ``--filter``.
KEEP = "_keep"


#: The device's creation and sending times of Snowplow's events, which ``--max-send-delay`` compares.
SEND_DELAY_COLUMNS = ("dvce_created_tstamp", "dvce_sent_tstamp")


def keep_expr(
    filters: Sequence[tuple[str, Sequence[str]]],
    schema: Mapping[str, pl.DataType],
    *,
    source: str,
    max_send_delay: timedelta | None = None,
) -> pl.Expr | None:
    """Whether a row passes every ``--filter`` (its column's text is one of the values; a null never
    passes) and ``--max-send-delay`` (Snowplow's ``days_late_allowed``: sent by the device at most that
    long after it was created; a row without both times, or with one that does not parse, is left out, as
    Snowplow's ``dvce_sent_tstamp <= dvce_created_tstamp + days_late_allowed`` leaves it), or None
    without either. Raises
    :class:`MissingColumnError` for a column not found."""
    available = [name for name in schema if name != ROW]  # (the reader's row number is no input column)
    tests = [
        pl.col(S.find_column(column, available, source=source, flag=f"--filter {column}=..."))
        .cast(pl.String)
        .is_in(list(values))
        .fill_null(False)
        for column, values in filters
    ]
    if max_send_delay is not None:
        try:
            created, sent = (
                S.find_column(name, available, source=source, flag="--max-send-delay")
                for name in SEND_DELAY_COLUMNS
            )
        except MissingColumnError:
            warnings.warn(
                f"{source} has no {' and '.join(SEND_DELAY_COLUMNS)} columns: --max-send-delay (Snowplow's "
                "late events) is not applied to it.",
                SessionizeWarning,
                stacklevel=2,
            )
        else:
            created_at, sent_at = (timestamp_expr(name, schema[name]) for name in (created, sent))
            tests.append(((sent_at - created_at) <= max_send_delay).fill_null(False))
    if not tests:
        return None
    return pl.all_horizontal(tests).alias(KEEP)


def _refuse_nested(columns: S.ColumnMap, schema: Mapping[str, pl.DataType], source: str) -> None:
    """A column of lists, arrays or Python objects named for a role (the user id, the time, the URL)
    failed deep in the read with Polars' "cannot cast List type", which the CLI named "not a readable
    Parquet file" and the frame API raised as a Polars error: a run needs one value per event. (The page
    view id may be a warehouse's web_page context, a list of structs: :func:`page_view_id_expr`.)"""
    for role, flag in S.COLUMN_FLAGS.items():
        if role == "page_view_id":
            continue
        name = getattr(columns, role, None)
        dtype = schema.get(name) if isinstance(name, str) else None
        if dtype is not None and (isinstance(dtype, pl.List | pl.Array | pl.Struct) or dtype == pl.Object):
            raise MissingColumnError(
                f"{source}: column {name!r} ({flag}) holds {dtype}, not one value per event: name a column "
                f"of text, numbers or times with {flag}."
            )


def prepare_events(
    events: pl.LazyFrame,
    *,
    columns: S.ColumnMap,
    time_unit: TimeUnit | None = None,
    timezone: str | None = None,
    pageview_events: Iterable[str] = S.DEFAULT_PAGEVIEW_EVENTS,
    keep_raw: bool = False,
    ambiguous: str = "earliest",
    session_id_nulls: Iterable[str] = (),
    page_activity_events: Iterable[str] = (),
    event_id_scope: str = "user",
    carry: Sequence[str] = (),
    stitching: bool = False,
    engagement: bool = False,
    page_view_ids: bool = False,
    heartbeat_time: bool = False,
    aggregates: Iterable[S.Aggregate] = (),
    source: str = "the input",
    valid_range: tuple[datetime | None, datetime | None] | None = None,
) -> pl.LazyFrame:
    """Select, rename, type and parse the input columns into the canonical events frame.

    ``keep_raw`` adds the input row number (``_row``: kept if the input has it, else counted from 0)
    and the raw timestamp (``_raw_time``) that :func:`check_events` reports. With ``valid_range``
    (the ``valid_from`` and ``valid_until`` of that check), a text timestamp that the common shapes
    parsed within it has a null raw timestamp: nothing reports it, and it need not be held.
    Page views are events whose name is in ``pageview_events`` (case-insensitive); without an event
    column, every event with a URL is a page view. ``session_id_nulls`` are client session id values
    that mean "none" (Amplitude's ``-1``), besides the empty one. Events named in
    ``page_activity_events`` (Snowplow's ``page_ping``) are page activity: ``is_pageview`` null (see
    :data:`sessionize.schema.IS_PAGEVIEW`). With ``event_id_scope`` ``user-event-time`` (Mixpanel's
    ``$insert_id``) an event id names one event of its event name and time only: the event id becomes
    name, time and id, so that events of one user share it only when all three match (see
    :func:`sessionize.io.drop_duplicate_events`). ``carry`` names columns kept as they are, after the
    canonical ones. An event whose user id is empty takes the login id of ``columns.user_fallback``
    (``--user-fallback-col``) as its user id, if it has one. With ``stitching`` the login id
    (``columns.stitch``, null when the input has none) becomes the ``_stitch_id`` column
    (:func:`sessionize.schema.event_schema`). A page view
    with a page view id (``columns.page_view_id``) takes ``page_view:<id>`` as its event id, so that
    repeated page views of one id are dropped as duplicate events: page views count by distinct id,
    as Snowplow counts them. With ``page_view_ids`` that id becomes the ``_page_view_id`` column, and
    with ``heartbeat_time`` the heartbeat time (``columns.heartbeat_time``, parsed as the timestamps
    are; null when the input has none) the ``_heartbeat_time`` column, which ``keep_raw`` also keeps as
    text (see :func:`bad_heartbeat_times`). The input columns ``aggregates`` read become the columns
    :func:`sessionize.schema.aggregate_inputs` names (numbers, or text), found in ``source`` like a
    flag's column (:func:`sessionize.schema.find_column`).
    """
    schema = events.collect_schema()
    _refuse_nested(columns, schema, source)
    carried = _aggregate_columns(
        aggregates,
        {c: t for c, t in schema.items() if c not in (ROW, KEEP)},
        source=source,
        keep_raw=keep_raw,
    )
    dtype = schema[columns.timestamp]
    row_number = pl.col(ROW) if ROW in schema else pl.int_range(pl.len()).alias(ROW)
    # The parsers' helper columns, named apart from the input's (a file may have a "_time_fast").
    helpers = (fresh_name(_FAST, schema), fresh_name(_TEXT, schema))
    raw_time = pl.col(columns.timestamp)
    if _is_text(dtype):
        events, parsed = with_parsed_text_time(
            events,
            columns.timestamp,
            time_unit=time_unit,
            timezone=check_timezone(timezone),
            ambiguous=ambiguous,
            helpers=helpers,
        )
        if valid_range is not None:
            # Only where the common shapes failed, or the time is out of range: the others parsed, and
            # are neither reported nor an epoch number (see epoch_unit_counts). 10M CSV events:
            # bench/README.md.
            fast = pl.col(helpers[0])
            reported = fast.is_null() | ~fast.dt.epoch("us").is_between(_MIN_MICROS, _MAX_MICROS)
            valid_from, valid_until = valid_range
            if valid_from is not None:
                reported |= fast < valid_from
            if valid_until is not None:
                reported |= fast > valid_until
            raw_time = pl.when(reported).then(raw_time)
    else:
        parsed = timestamp_expr(
            columns.timestamp, dtype, time_unit=time_unit, timezone=timezone, ambiguous=ambiguous
        )
    # Years 1 to 9999, as for epoch numbers: a text or a datetime beyond is no instant (a bad timestamp;
    # a state's times and Python's datetime stop there).
    parsed = pl.when(parsed.dt.epoch("us").is_between(_MIN_MICROS, _MAX_MICROS)).then(parsed)
    event = pl.coalesce(
        _as_text(columns.event, schema), *(_as_text(name, schema) for name in columns.event_fallbacks)
    )
    url = _as_text(columns.url, schema)
    is_pageview = (
        S.event_named(event, pageview_events).fill_null(False)
        if columns.event is not None
        else url.is_not_null()
    )
    if page_activity_events and columns.event is not None:
        is_pageview = (
            pl.when(~is_pageview & S.event_named(event, page_activity_events).fill_null(False))
            .then(None)
            .otherwise(is_pageview)
        )
    heartbeat = _heartbeat_time_columns(
        columns.heartbeat_time if heartbeat_time else None,
        schema,
        time_unit=time_unit,
        timezone=timezone,
        ambiguous=ambiguous,
        helpers=(
            fresh_name(_HEARTBEAT_HELPERS[0], [*schema, *helpers]),
            fresh_name(_HEARTBEAT_HELPERS[1], [*schema, *helpers]),
        ),
    )
    heartbeat_parsed: pl.Expr | None = None
    if heartbeat is not None:
        events, heartbeat_parsed = heartbeat(events)
    event_id = _as_text(columns.event_id, schema, blank=True)
    page_view_id = page_view_id_expr(columns.page_view_id, schema.get(columns.page_view_id or ""))
    if columns.page_view_id is not None:
        event_id = (
            pl.when(is_pageview.fill_null(False) & page_view_id.is_not_null())
            .then(pl.lit("page_view:") + page_view_id)
            .otherwise(event_id)
        )
    if event_id_scope == "user-event-time":
        # Mixpanel deduplicates on event name, distinct_id, time and $insert_id: the same id with another
        # name or time is another event (review 59 F4). The user is the duplicates' key already.
        event_id = pl.concat_str(
            [event.fill_null(""), parsed.dt.epoch("us").cast(pl.String).fill_null(""), event_id],
            separator="\x1f",
        )
    # --user-fallback-col: an event without a user id takes its login id as one (a server-side Segment
    # call has a userId and no anonymousId; an Amplitude event a user_id and no device_id).
    # Ids of only whitespace are none, as empty ones (a blank user id takes the login id, or is rejected).
    user = _as_text(columns.user_id, schema, blank=True)
    if columns.user_fallback is not None and columns.user_fallback != columns.user_id:
        user = pl.coalesce(user, _as_text(columns.user_fallback, schema, blank=True))
    return events.select(
        user.alias(S.USER),
        parsed.alias(S.TIME),
        url.alias(S.URL),
        _referrer(columns, schema).alias(S.REFERRER),
        _as_text(columns.ip, schema, nulls=("", "-")).alias(S.IP),
        event.alias(S.EVENT),
        _as_text(columns.client_session_id, schema, nulls=("", *session_id_nulls), blank=True).alias(
            S.CLIENT_SESSION
        ),
        event_id.alias(S.EVENT_ID),
        _as_text(columns.user_agent, schema, nulls=("", "-")).alias(S.USER_AGENT),
        is_pageview.alias(S.IS_PAGEVIEW),
        *([_as_text(columns.stitch, schema, blank=True).alias(S.STITCH_ID)] if stitching else []),
        # A foreground time is never negative: a negative one (a broken SDK's) counts as none, as text does,
        # rather than cancel other events' time.
        *([_non_negative(_as_number(columns.engagement_time)).alias(S.ENGAGEMENT_MS)] if engagement else []),
        *([page_view_id.alias(S.PAGE_VIEW_KEY)] if page_view_ids else []),
        *(
            [
                (heartbeat_parsed if heartbeat_parsed is not None else pl.lit(None, S.TIMESTAMP)).alias(
                    S.HEARTBEAT_TS
                )
            ]
            if heartbeat_time
            else []
        ),
        *(
            [
                (
                    pl.col(columns.heartbeat_time).cast(pl.String)
                    if heartbeat_parsed is not None and columns.heartbeat_time is not None
                    else pl.lit(None, pl.String)
                ).alias(RAW_HEARTBEAT_TIME)
            ]
            if heartbeat_time and keep_raw
            else []
        ),
        *carried,
        *([row_number, raw_time.alias(RAW_TIME)] if keep_raw else []),
        *carry,
    )


#: With ``keep_raw`` and a heartbeat time: its input text, so that one that does not parse is told from
#: a missing one.
RAW_HEARTBEAT_TIME = RAW_PREFIX + S.HEARTBEAT_TS
_HEARTBEAT_HELPERS = ("_heartbeat_fast", "_heartbeat_text")


def _heartbeat_time_columns(
    column: str | None,
    schema: Mapping[str, pl.DataType],
    *,
    time_unit: TimeUnit | None,
    timezone: str | None,
    ambiguous: str,
    helpers: tuple[str, str] = _HEARTBEAT_HELPERS,
) -> Callable[[pl.LazyFrame], tuple[pl.LazyFrame, pl.Expr]] | None:
    """How the heartbeat time column is parsed, as the timestamp column is (the events with helper
    columns, named ``helpers``, and the expression of its UTC timestamps), or None without one."""
    if column is None or isinstance(schema[column], pl.Null):
        return None
    dtype = schema[column]
    if _is_text(dtype):
        zone = check_timezone(timezone)

        def parse_text(events: pl.LazyFrame) -> tuple[pl.LazyFrame, pl.Expr]:
            return with_parsed_text_time(
                events,
                column,
                time_unit=time_unit,
                timezone=zone,
                ambiguous=ambiguous,
                helpers=helpers,
            )

        return parse_text
    parsed = timestamp_expr(
        column,
        dtype,
        time_unit=time_unit,
        timezone=timezone,
        ambiguous=ambiguous,
        flag="--heartbeat-time-col",
    )
    return lambda events: (events, parsed)


def json_text(value: pl.Expr) -> pl.Expr:
    """A list, array or object value as its JSON (``["a","b"]``, ``{"key":...}``), which no cast makes
    text; a null stays null."""
    # The JSON of an object of one key, its key and braces taken off: the value's own JSON.
    encoded = pl.struct(value.alias("v")).struct.json_encode()
    return pl.when(value.is_not_null()).then(encoded.str.strip_prefix('{"v":').str.strip_suffix("}"))


def _aggregate_columns(
    aggregates: Iterable[S.Aggregate], schema: Mapping[str, pl.DataType], *, source: str, keep_raw: bool
) -> list[pl.Expr]:
    """The event columns of the input columns ``--agg`` reads (and their text, for a number column
    with ``keep_raw``). A column of lists or objects is its JSON text (``["a","b"]``) for ``first``,
    ``last`` and the counts, and no number: an error names it for ``sum`` and the like."""
    available = list(schema)
    aggregates = tuple(aggregates)
    specs: dict[tuple[str, bool], str] = {}
    for aggregate in aggregates:
        if aggregate.column is not None:
            specs.setdefault((aggregate.column, aggregate.numeric), aggregate.spec)
    exprs: list[pl.Expr] = []
    optional = {(a.column, a.numeric) for a in aggregates if a.optional}
    for (given, numeric), name in S.aggregate_inputs(aggregates).items():
        try:
            column = S.find_column(given, available, source=source, flag=f"--agg {specs[given, numeric]}")
        except MissingColumnError:
            if (given, numeric) not in optional:
                raise
            # A preset's aggregate of a column this input leaves out: null.
            exprs.append(pl.lit(None, pl.Float64 if numeric else pl.String).alias(name))
            if numeric and keep_raw:
                exprs.append(pl.lit(None, pl.String).alias(RAW_PREFIX + name))
            continue
        nested = schema[column].is_nested()
        if numeric and nested:
            raise UsageError(
                f"--agg {specs[given, numeric]}: {source}'s column {column!r} holds lists or objects, not "
                "numbers. Name one of its fields, or count its values: count() or n_unique()."
            )
        if numeric:
            exprs.append(_as_number(column).alias(name))
            if keep_raw:
                exprs.append(pl.col(column).cast(pl.String).alias(RAW_PREFIX + name))
        elif nested:
            exprs.append(json_text(pl.col(column)).alias(name))
        else:
            exprs.append(pl.col(column).cast(pl.String).alias(name))
    return exprs


def bad_numbers(aggregates: Iterable[S.Aggregate]) -> pl.Expr | None:
    """Whether a prepared row (``keep_raw``) has a value that ``--agg`` reads as a number and that is
    not one (a finite number; an empty value is a missing one), or None when no ``--agg`` reads numbers."""
    tests = [
        _unparsed(RAW_PREFIX + name, name)
        for (_, numeric), name in S.aggregate_inputs(aggregates).items()
        if numeric
    ]
    return pl.any_horizontal(tests) if tests else None


def _unparsed(raw: str, parsed: str) -> pl.Expr:
    """Whether the event column ``parsed`` is null where its input text (``raw``) is not empty."""
    return pl.col(raw).str.strip_chars().ne("").fill_null(False) & pl.col(parsed).is_null()


def bad_heartbeat_times(heartbeat_time: bool) -> pl.Expr | None:
    """Whether a prepared row (``keep_raw``) has a heartbeat time that does not parse (an empty one is a
    missing one: the event time counts), or None without a heartbeat time column."""
    return _unparsed(RAW_HEARTBEAT_TIME, S.HEARTBEAT_TS) if heartbeat_time else None


def raw_columns(aggregates: Iterable[S.Aggregate], *, heartbeat_time: bool = False) -> list[str]:
    """The text columns ``keep_raw`` adds for ``--agg`` and the heartbeat time (dropped with
    ``_raw_time``)."""
    numbers = [RAW_PREFIX + name for (_, numeric), name in S.aggregate_inputs(aggregates).items() if numeric]
    return [*numbers, *([RAW_HEARTBEAT_TIME] if heartbeat_time else [])]


def has_session_id(columns: S.ColumnMap, *, source: str) -> pl.Expr:
    """``--require-session-id``: whether a prepared row has a client session id. Raises
    :class:`MissingColumnError` when ``source`` has no session id column at all."""
    if columns.client_session_id is None:
        raise MissingColumnError(
            f"{source} has no client session id column, and --require-session-id leaves out the events "
            "without one: name it with --session-col (session_col= in Python), or leave the option out."
        )
    return pl.col(S.CLIENT_SESSION).is_not_null()


_Rows = TypeVar("_Rows", pl.DataFrame, pl.LazyFrame)


def keyed_by_session(frame: _Rows, columns: S.ColumnMap, *, source: str) -> _Rows:
    """``--require-session-id``: a prepared frame without the rows that have no client session id, and
    the session id as the user id of a row that has none. Snowplow keys a session by its
    ``domain_sessionid`` alone and keeps the sessions of a tracker whose user cookie is off (no
    ``domain_userid``); such an event was rejected as ``empty_user_id``, a failed run by default."""
    return frame.filter(has_session_id(columns, source=source)).with_columns(
        pl.coalesce(pl.col(S.USER), pl.col(S.CLIENT_SESSION)).alias(S.USER)
    )


def is_invalid(
    *,
    valid_from: datetime | None = None,
    valid_until: datetime | None = None,
    aggregates: Iterable[S.Aggregate] = (),
    heartbeat_time: bool = False,
) -> pl.Expr:
    """Whether :func:`invalid_reason` gives a row a reason, as a boolean: the same tests without a text
    per row (0.5 s for 10M rows), so that only the rows it flags, usually none, get their reason."""
    tests = _invalid_tests(
        valid_from=valid_from, valid_until=valid_until, aggregates=aggregates, heartbeat_time=heartbeat_time
    )
    return pl.any_horizontal(test.fill_null(False) for test, _ in tests)


def invalid_reason(
    *,
    valid_from: datetime | None = None,
    valid_until: datetime | None = None,
    timezone: str | None = None,
    aggregates: Iterable[S.Aggregate] = (),
    heartbeat_time: bool = False,
) -> pl.Expr:
    """Why a row of a prepared frame (``keep_raw=True`` for ``timezone``) cannot be sessionized:
    ``empty_user_id``, ``bad_timestamp``, ``nonexistent_local_time`` / ``ambiguous_local_time`` (a
    local time of ``timezone`` that a clock change skips, or makes happen twice with
    ``--ambiguous-time reject``), ``out_of_range`` (outside ``valid_from``/``valid_until``),
    ``bad_number`` (a value ``aggregates`` read as a number that is not one: :func:`bad_numbers`),
    ``bad_heartbeat_time`` (with ``heartbeat_time``, one that does not parse: :func:`bad_heartbeat_times`),
    or null for a valid row."""
    (user, empty), (time, bad_time), *rest = _invalid_tests(
        valid_from=valid_from,
        valid_until=valid_until,
        timezone=timezone,
        aggregates=aggregates,
        heartbeat_time=heartbeat_time,
    )
    chained = pl.when(user).then(empty).when(time).then(bad_time)
    for test, reason in rest:
        chained = chained.when(test).then(reason)
    return chained.otherwise(None).alias(REASON)


def _invalid_tests(
    *,
    valid_from: datetime | None,
    valid_until: datetime | None,
    timezone: str | None = None,
    aggregates: Iterable[S.Aggregate],
    heartbeat_time: bool,
) -> list[tuple[pl.Expr, pl.Expr]]:
    """The tests of :func:`invalid_reason`, in its order, each with its reason (``timezone`` only
    changes the reason of a time that did not parse)."""
    ts = pl.col(S.TIME)
    bad_time: pl.Expr = pl.lit("bad_timestamp")
    if timezone is not None and timezone != "UTC":
        # Only the rows whose time did not parse: the others are masked to null, which the string
        # kernels skip (a second parse of every timestamp otherwise).
        raw = pl.when(ts.is_null()).then(pl.col(RAW_TIME))
        bad_time = pl.coalesce(local_time_reason(raw, timezone), bad_time)
    tests = [(pl.col(S.USER).is_null(), pl.lit("empty_user_id")), (ts.is_null(), bad_time)]
    if valid_from is not None:
        tests.append((ts < valid_from, pl.lit("out_of_range")))
    if valid_until is not None:
        tests.append((ts > valid_until, pl.lit("out_of_range")))
    numbers = bad_numbers(aggregates)
    if numbers is not None:
        tests.append((numbers, pl.lit("bad_number")))
    heartbeats = bad_heartbeat_times(heartbeat_time)
    if heartbeats is not None:
        tests.append((heartbeats, pl.lit("bad_heartbeat_time")))
    return tests


def check_events(
    frame: pl.DataFrame,
    *,
    source: str,
    columns: S.ColumnMap,
    where: Callable[[int], str],
    valid_from: datetime | None = None,
    valid_until: datetime | None = None,
    timezone: str | None = None,
    aggregates: Iterable[S.Aggregate] = (),
    heartbeat_time: bool = False,
    hide_values: bool = False,
    skip: str | None = None,
) -> None:
    """Raise if a row of a prepared frame (``keep_raw=True``) cannot be sessionized: no user id, a
    timestamp that does not parse, one outside ``valid_from``/``valid_until``, a value that
    ``aggregates`` read as a number and that is not one, or (with ``heartbeat_time``) a heartbeat time
    that does not parse.

    ``where`` turns a 0-based row number into a location for the message (``line 7``). The message
    shows the first values (see :func:`shown_value`): none with ``hide_values`` (``--hash-user-ids``,
    ``--anonymize-ip``: a value may be a copy of a hidden id or address, and errors go to cron's log).
    ``skip``: what to do to go on without those rows, after "or" (default: pass ``--on-invalid skip``;
    a frame has no such option).
    """
    hint = skip or f"pass {SKIP_HINT}"

    def examples(rows: pl.DataFrame) -> str:
        return _examples(rows, where, hide_values)

    bad_user = frame.filter(pl.col(S.USER).is_null())
    if bad_user.height:
        rows = ", ".join(where(row) for row in bad_user[ROW].head(MAX_REPORTED_ROWS).to_list())
        if columns.user_id == S.VISITOR:
            raise MissingUserIdError(
                f"{source}: {bad_user.height} line(s) have no client address (first at {rows}), so no "
                f"visitor: a proxy logs '-' for a request it did not forward. {hint[0].upper()}{hint[1:]}."
            )
        fallback = columns.user_fallback
        login = (
            f" and no login id in column {fallback!r} (--user-fallback-col)"
            if fallback is not None and fallback != columns.user_id
            else ""
        )
        raise MissingUserIdError(
            f"{source}: {bad_user.height} row(s) have an empty user id in column {columns.user_id!r}{login} "
            f"(first at {rows}). Every event needs a user id; if another column identifies visitors, "
            f"name it with --user-col (or the login id column with --user-fallback-col); or {hint}."
        )
    bad_time = frame.filter(pl.col(S.TIME).is_null())
    if bad_time.height and timezone is not None and timezone != "UTC":
        local = bad_time.with_columns(local_time_reason(pl.col(RAW_TIME), timezone).alias(REASON))
        gaps = local.filter(pl.col(REASON) == "nonexistent_local_time")
        if gaps.height:
            raise BadTimestampError(
                f"{source}: {gaps.height} local time(s) in column {columns.timestamp!r} do not exist in "
                f"{timezone}: the clock skips that hour when daylight saving time starts "
                f"({examples(gaps)}). Check the data's --timezone, fix the times, "
                f"or {hint}."
            )
        doubled = local.filter(pl.col(REASON) == "ambiguous_local_time")
        if doubled.height:
            raise BadTimestampError(
                f"{source}: {doubled.height} local time(s) in column {columns.timestamp!r} happen twice in "
                f"{timezone} (the hour repeated when daylight saving time ends) and --ambiguous-time is "
                f"reject ({examples(doubled)}). Pass --ambiguous-time earliest or latest, "
                f"or {hint}."
            )
    if bad_time.height:
        raise BadTimestampError(
            f"{source}: {bad_time.height} timestamp(s) in column {columns.timestamp!r} are empty or do not "
            f"parse ({examples(bad_time)}). Use ISO 8601 (2024-05-17T10:05:03Z), epoch numbers "
            f"(--time-unit s|ms|us|ns) or name another column with --time-col; or {hint}."
        )
    outside = frame.filter(
        pl.col(S.TIME).is_not_null()
        & invalid_reason(valid_from=valid_from, valid_until=valid_until).is_not_null()
    )
    if outside.height:
        bounds = " and ".join(
            f"{label} {value.isoformat()}"
            for label, value in (("not before", valid_from), ("not after", valid_until))
            if value is not None
        )
        raise OutOfRangeError(
            f"{source}: {outside.height} timestamp(s) in column {columns.timestamp!r} are outside the valid "
            f"range ({bounds}): {examples(outside)}. Widen it with --valid-from/--valid-until, "
            f"or {hint}."
        )
    _check_numbers(frame, source=source, where=where, aggregates=tuple(aggregates), hide_values=hide_values)
    heartbeats = bad_heartbeat_times(heartbeat_time)
    bad_beats = frame.filter(heartbeats) if heartbeats is not None else frame.clear()
    if bad_beats.height:
        beats = "; ".join(
            f"{where(row)}: {shown_value(value, hidden=hide_values)}"
            for row, value in bad_beats.select(ROW, RAW_HEARTBEAT_TIME).head(MAX_REPORTED_ROWS).iter_rows()
        )
        raise BadTimestampError(
            f"{source}: {bad_beats.height} heartbeat time(s) in column {columns.heartbeat_time!r} do not "
            f"parse ({beats}). Use ISO 8601 (2024-05-17T10:05:03Z) or epoch numbers, empty them (the "
            f"event time counts then), or name another column with --heartbeat-time-col; or {hint}."
        )


def _check_numbers(
    frame: pl.DataFrame,
    *,
    source: str,
    where: Callable[[int], str],
    aggregates: Sequence[S.Aggregate],
    hide_values: bool = False,
) -> None:
    """Raise :class:`BadNumberError` for the first ``--agg`` number column with a value that is not one."""
    for (given, numeric), name in S.aggregate_inputs(aggregates).items():
        if not numeric:
            continue
        bad = frame.filter(_unparsed(RAW_PREFIX + name, name))
        if bad.height:
            examples = "; ".join(
                f"{where(row)}: {shown_value(value, hidden=hide_values)}"
                for row, value in bad.select(ROW, RAW_PREFIX + name).head(MAX_REPORTED_ROWS).iter_rows()
            )
            users = ", ".join(a.spec for a in aggregates if a.column == given and a.numeric)
            raise BadNumberError(
                f"{source}: {bad.height} value(s) in column {given!r} are not numbers ({examples}), and "
                f"--agg {users} reads it as numbers. Fix or empty those values, or pass {SKIP_HINT}."
            )


def _examples(rows: pl.DataFrame, where: Callable[[int], str], hide_values: bool = False) -> str:
    return "; ".join(
        f"{where(row)}: {shown_value(value, hidden=hide_values)}"
        for row, value in rows.select(ROW, pl.col(RAW_TIME).cast(pl.String))
        .head(MAX_REPORTED_ROWS)
        .iter_rows()
    )


#: The most characters of a value an error message shows: a longer one (a stranger's megabyte-long
#: "timestamp") is cut there, with its length, so that an error stays one paragraph in cron's log.
MAX_SHOWN_CHARACTERS = 100


def shown_value(value: str | None, *, hidden: bool = False) -> str:
    """A value as an error message shows it: ``'x'``, ``empty``, cut after
    :data:`MAX_SHOWN_CHARACTERS`, or not at all when ``hidden``.

    >>> shown_value("2024-13-01"), shown_value(None), shown_value("9" * 150)[-22:]
    ("'2024-13-01'", 'empty', "9'... (150 characters)")
    """
    if value is None:
        return "empty"
    if hidden:
        return "value not shown (--hash-user-ids, --anonymize-ip)"
    if len(value) > MAX_SHOWN_CHARACTERS:
        return f"{value[:MAX_SHOWN_CHARACTERS]!r}... ({len(value):,} characters)"
    return repr(value)
