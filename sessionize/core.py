"""The session rule and the session table: pure ``LazyFrame -> LazyFrame`` functions.

No I/O, no printing, no ``collect``. Every step depends only on one user's events, so the same code
can run per partition of users on a distributed engine.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from functools import partial
from typing import Any, TypeVar

import polars as pl

from sessionize import schema as S

#: Format of the session start inside generated session ids; fixed width, so ids stay unique.
_SESSION_ID_TIME_FORMAT = "%Y%m%dT%H%M%S%.6f"

#: Internal columns of ``assign_sessions(label=False)``. They describe the events in *session order*
#: (each user's events together, then by client session id and time), while the event columns stay
#: in input order: the i-th value of ``_order`` is the input row of the i-th event in session order,
#: ``_new`` whether that event starts a session, ``_ts`` its timestamp.
SESSION_ORDER = "_order"
SESSION_NEW = "_new"
SESSION_TIME = "_ts"
#: Internal column of :func:`summarize_sessions`: the session requested ``/robots.txt``.
ROBOTS_TXT = "_fetched_robots_txt"

_IDX = pl.get_index_type()
_SAME = "_same"
_GENERATED = "_generated"


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
    time; events at the same instant keep their input order. With ``label=False`` nothing is
    labelled or reordered: the events stay in input order, and the internal columns ``_order``,
    ``_new`` and ``_ts`` give the session order (see :data:`SESSION_ORDER`), from which
    :func:`summarize_sessions` makes the table without moving every event.

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
    order, new = pl.col(SESSION_ORDER), pl.col(SESSION_NEW)
    schema = events.collect_schema()
    names = schema.names()
    # The opt-in rules read whether each event (in session order) has a generated id; the labels of
    # sessions split by a campaign also read whether it continues the user's run of events.
    rules = split_at_midnight or campaign_col is not None or max_session_length is not None
    # Only the keys are put in session order, never the whole events: the event columns stay as read
    # (in many chunks after a Parquet read); the few values taken from them later rechunk on the way.
    # The columns as they are (a struct would first rechunk them all to one layout).
    frame = events.with_columns(
        pl.map_batches(
            [user, client, ts],
            partial(_session_order, timeout=timeout, with_rule_columns=rules),
            return_dtype=_order_dtype(schema[S.TIME], with_rule_columns=rules),
        ).alias("_keys")
    ).unnest("_keys")
    ts_sorted = pl.col(SESSION_TIME)
    generated = pl.col(_GENERATED)
    temporary = [_SAME, _GENERATED] if rules else []
    if split_at_midnight:
        day = ts_sorted.dt.convert_time_zone(timezone).dt.date()
        frame = frame.with_columns(
            (new | (generated & (day != day.shift(1))).fill_null(False)).alias(SESSION_NEW)
        )
    if campaign_col is not None:
        # The latest campaign seen in the session so far is its current one: every change splits.
        campaign = pl.col("_campaign_in_order")
        previous = campaign.forward_fill().shift(1).over("_idx")
        changed = generated & campaign.is_not_null() & campaign.ne_missing(previous)
        frame = frame.with_columns(
            new.cum_sum().alias("_idx"),
            _contiguous(pl.col(campaign_col)).gather(order).alias(campaign.meta.output_name()),
        ).with_columns((new | changed.fill_null(False)).alias(SESSION_NEW))
        temporary += ["_idx", "_campaign_in_order"]
    if max_session_length is not None:
        limit = int(max_session_length / timedelta(microseconds=1))
        frame = frame.with_columns(new.cum_sum().alias("_idx")).with_columns(
            (
                new
                | (
                    generated
                    & pl.struct(pl.col("_idx"), ts_sorted.dt.epoch("us")).map_batches(
                        lambda rows: _cuts_of_long_sessions(rows, limit), return_dtype=pl.Boolean
                    )
                )
            ).alias(SESSION_NEW)
        )
        temporary.append("_idx")
    if not label:
        return frame.drop(*dict.fromkeys(temporary))
    start = pl.when(new).then(ts_sorted).forward_fill()
    number = None
    if campaign_col is not None:
        # Only a campaign change can start a session at the same instant as the user's previous one
        # (every other rule splits at a later event): such a session continues a run of generated
        # sessions, and its number in that run tells its id apart (see `session_id_expr`).
        count = new.cum_sum()
        continues = (new & pl.col(_SAME) & generated & (ts_sorted == start.shift(1))).fill_null(False)
        number = count - pl.when(new & ~continues).then(count).forward_fill() + 1
    return frame.select(
        *(_contiguous(pl.col(name)).gather(order) for name in names),
        session_id_expr(
            _contiguous(client).gather(order), _contiguous(user).gather(order), start, number=number
        ).alias(S.SESSION_ID),
    )


_Frame = TypeVar("_Frame", pl.DataFrame, pl.LazyFrame)


def claim_shared_session_ids(events: _Frame, *, last: bool = False) -> _Frame:
    """Events whose client session id several users sent, all given to one of those user ids
    (``--shared-session-ids merge``): the user id of the session's first event (the smallest of those
    sent at that instant), as Snowplow's sessions table takes the ``domain_userid`` of a session's
    first event (its lifecycle manifest keys the session by ``domain_sessionid`` alone); with ``last``
    (``merge-last``) that of its last event (the greatest at that instant), as PostHog's sessions
    take the latest ``distinct_id`` (``argMax(distinct_id, timestamp)``: an ``identify()`` mid-visit
    gives the session to the identified user). Events without a client session id keep their user.
    The result holds the same events in the same order, so it is the same whether it is applied once
    to all events or to groups that each hold every event of their client session ids (and applying it
    again changes nothing).

    A user id equal to its event's client session id is the stand-in of an event that had none
    (:func:`sessionize.normalize.keyed_by_session`): it owns the session only when no other user id
    sent it, as Snowplow's null ``domain_userid`` owns none."""
    client, user, ts = pl.col(S.CLIENT_SESSION), pl.col(S.USER), pl.col(S.TIME)
    sent = pl.when(user != client).then(user)
    sent_at = pl.when(sent.is_not_null()).then(ts)
    edge = (sent_at.max() if last else sent_at.min()).over(S.CLIENT_SESSION)
    at_edge = pl.when(ts == edge).then(sent)
    owner = pl.coalesce(
        (at_edge.max() if last else at_edge.min()).over(S.CLIENT_SESSION),
        # Events without a time (none reach a run: they are rejected) or only stand-ins.
        sent.max().over(S.CLIENT_SESSION),
        user.max().over(S.CLIENT_SESSION),
    )
    return events.with_columns(pl.when(client.is_not_null()).then(owner).otherwise(user).alias(S.USER))


def claim_key() -> pl.Expr:
    """What puts an event with its client session's other events before the owner is known: the client
    session id, else the user id (``--shared-session-ids merge`` on a partitioned engine)."""
    return pl.coalesce(pl.col(S.CLIENT_SESSION), pl.col(S.USER))


def beyond_session_cap(cap: timedelta) -> pl.Expr:
    """Whether an event with a client session id comes more than ``cap`` after the first event of
    its client session (the same user and client session id): Snowplow's session cap
    (``snowplow__max_session_days``), which leaves such events out. An event exactly ``cap`` after
    the first stays in. Events without a client session id are never beyond it (their sessions are
    cut by ``max_session_length`` instead)."""
    client, ts = pl.col(S.CLIENT_SESSION), pl.col(S.TIME)
    start = ts.min().over(S.USER, S.CLIENT_SESSION)
    return (client.is_not_null() & (ts > start + cap)).fill_null(False)


def session_id_expr(
    client: pl.Expr, user: pl.Expr, start: pl.Expr, *, number: pl.Expr | None = None
) -> pl.Expr:
    """The client's session id, else ``<user_id>-<start as YYYYMMDDTHHMMSS.ffffff>``.

    Two sessions of a user can start at the same instant when a campaign change splits events with
    the same timestamp. ``number`` is then the session's place (1, 2, ...) in the run of the user's
    sessions that start at that instant, in session order: the first keeps the plain id, the later
    ones get ``-2``, ``-3``, ... appended, so ids stay unique and every other id stays the same.
    """
    start_text = start.map_batches(_format_starts, return_dtype=pl.String, is_elementwise=True)
    parts = [user, pl.lit("-"), start_text]
    if number is not None:
        parts.append(pl.when(number > 1).then(pl.lit("-") + number.cast(pl.String)).otherwise(pl.lit("")))
    return pl.coalesce(client, pl.concat_str(parts))


def _format_starts(starts: pl.Series) -> pl.Series:
    """``starts.dt.strftime(_SESSION_ID_TIME_FORMAT)``: the session starts as generated ids hold them.

    Microsecond times in UTC (or without a time zone) from the year 1000 to 9999, the usual case, are
    put together from tables of their day's and second's texts (numpy): 0.1 s for 2.5M sessions
    against 0.35-0.4 s for ``strftime``, which formats each with chrono. Any other time goes to
    ``strftime``, as does a span of days longer than the values (the days' table would be larger).
    """
    dtype = starts.dtype
    n = len(starts)
    if (
        not n
        or not isinstance(dtype, pl.Datetime)
        or dtype.time_unit != "us"
        or dtype.time_zone not in (None, "UTC")
        or starts.null_count()
    ):
        return starts.dt.strftime(_SESSION_ID_TIME_FORMAT)
    import numpy as np

    ticks = starts.to_physical()
    low, high = ticks.min(), ticks.max()
    assert isinstance(low, int) and isinstance(high, int)
    first, last = low // _DAY_US, high // _DAY_US
    calendar = np.arange(first, last + 1, dtype=np.int64).astype("datetime64[D]")
    years = calendar.astype("datetime64[Y]").astype(np.int64) + 1970
    if last - first > n + 366 or years[0] < 1000 or years[-1] > 9999:
        return starts.dt.strftime(_SESSION_ID_TIME_FORMAT)
    months = calendar.astype("datetime64[M]")
    month = months.astype(np.int64) % 12 + 1
    day = (calendar - months.astype("datetime64[D]")).astype(np.int64) + 1
    # "YYYYMMDD" of each day and "THHMMSS." of each second of a day, 8 bytes each: one uint64 a row.
    dates = _digits(years * 10000 + month * 100 + day, 8).view("<u8").ravel()
    # A block at a time: the temporaries of every start at once would add ~150 MB at the session
    # build's peak (2.5M sessions).
    return pl.concat(
        [
            _start_texts(ticks.slice(at, _TEXT_BLOCK).to_numpy(), dates, first)
            for at in range(0, n, _TEXT_BLOCK)
        ],
        rechunk=False,
    ).alias(starts.name)


#: Starts made into text at once.
_TEXT_BLOCK = 1 << 18


def _start_texts(ticks: Any, dates: Any, first: int) -> pl.Series:
    """The texts of microsecond ``ticks`` (numpy, none before the day ``first``) from ``dates``, the
    "YYYYMMDD" of each day from ``first`` on."""
    import numpy as np

    days, time_of_day = np.divmod(ticks, _DAY_US)
    seconds, micros = np.divmod(time_of_day, 1_000_000)
    record = _start_text_record()
    texts = np.empty(len(ticks), record)
    texts["date"] = dates[days - first]
    texts["time"] = _seconds_of_day()[seconds]
    pairs, micros = _digit_pairs(), micros.astype(np.int32)
    texts["micros"][:, 0] = pairs[micros // 10000]
    texts["micros"][:, 1] = pairs[micros // 100 % 100]
    texts["micros"][:, 2] = pairs[micros % 100]
    # The bytes of each row as a list of 22, then as text (all ASCII digits, "T" and ".").
    rows = pl.Series(texts.view(np.uint8).reshape(len(ticks), record.itemsize))
    return rows.cast(pl.List(pl.UInt8)).cast(pl.Binary).cast(pl.String)


_DAY_US = 86_400_000_000


def _digits(values: Any, width: int) -> Any:
    """The ASCII digits of non-negative integers (a numpy array), zero-padded: ``(len, width)`` bytes."""
    import numpy as np

    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    return (values[:, None] // powers % 10 + ord("0")).astype(np.uint8)


@functools.cache
def _seconds_of_day() -> Any:
    """``"THHMMSS."`` of each second of a day, as a little-endian uint64 (its 8 bytes in order)."""
    import numpy as np

    second = np.arange(86_400, dtype=np.int64)
    texts = np.empty((86_400, 8), np.uint8)
    texts[:, 0], texts[:, 7] = ord("T"), ord(".")
    texts[:, 1:7] = _digits(second // 3600 * 10000 + second // 60 % 60 * 100 + second % 60, 6)
    return texts.view("<u8").ravel()


@functools.cache
def _digit_pairs() -> Any:
    """``"00"`` to ``"99"`` as little-endian uint16s (their 2 bytes in order)."""
    import numpy as np

    return _digits(np.arange(100, dtype=np.int64), 2).view("<u2").ravel()


@functools.cache
def _start_text_record() -> Any:
    """numpy's record of a start's 22 bytes: "YYYYMMDD", "THHMMSS." and the microseconds' 3 pairs."""
    import numpy as np

    return np.dtype([("date", "<u8"), ("time", "<u8"), ("micros", "<u2", (3,))])


def _contiguous(column: pl.Expr) -> pl.Expr:
    """``column`` in one chunk, to gather from: gathers from the many chunks of a Parquet or
    multi-file read are several times slower. Rechunking right before the gather keeps the copy
    short-lived (only the gathered values stay), rather than holding a second copy of every event."""
    return column.map_batches(pl.Series.rechunk, return_dtype=pl.self_dtype())


def _order_dtype(time: pl.DataType, *, with_rule_columns: bool) -> pl.Struct:
    if with_rule_columns:
        return pl.Struct(
            {
                SESSION_ORDER: _IDX,
                SESSION_NEW: pl.Boolean(),
                SESSION_TIME: time,
                _SAME: pl.Boolean(),
                _GENERATED: pl.Boolean(),
            }
        )
    return pl.Struct({SESSION_ORDER: _IDX, SESSION_NEW: pl.Boolean(), SESSION_TIME: time})


def _session_order(keys: Sequence[pl.Series], *, timeout: timedelta, with_rule_columns: bool) -> pl.Series:
    """The session order of events given as their user ids, client session ids and timestamps, and
    the timeout rule.

    Returns a struct of ``_order`` (the input row of each event in session order), ``_new`` (whether
    it starts a session by the timeout rule: another user or client session id than the event before
    it in that order, or a gap over ``timeout`` between events without a client id) and ``_ts`` (its
    time); with ``with_rule_columns`` also ``_same`` (same user and client session id as the event
    before) and ``_generated`` (no client session id), which the opt-in rules read.

    The sort is on integers only: a hash of the user id, the client session id as dictionary codes
    (usually all null), the time and the input row (so that ties keep their input order without a
    slower stable sort). Without client session ids the hash, time and row fit in one 128-bit key
    (see :func:`_packed_order`), and sorting the keys themselves is faster and lighter than sorting
    row numbers by them: the sorted keys hold the rows, times and hashes in session order. Two users
    whose ids hash alike would be interleaved: that is checked on the sorted ids, and only then are
    the events sorted with the id itself after its hash.
    """
    user, client, ts = keys
    n = len(user)
    with_client = client.null_count() < n
    client_code = (
        client.cast(pl.Categorical).to_physical().rechunk().alias("_client") if with_client else None
    )
    packed = None if with_client else _packed_order(user, ts)
    # Contiguous: random gathers from many chunks are several times slower; a copy only while here.
    user = user.rechunk()
    ts_sorted: pl.Series | None = None
    if packed is not None:
        order, ts_sorted, unsorted_bits = packed
    else:
        order, unsorted_bits = _sort_order(user, client_code, ts, with_id=False), 0
    sorted_user = user.gather(order)
    same_user = _same_as_before(sorted_user)
    # The events were sorted by the top bits of their ids' hashes: two ids with the same top bits that
    # are not the same id are a collision. Hashing the sorted ids again (by the streaming engine, so that
    # the hashes are never all held at once) is cheaper than putting their hashes in order, or than
    # taking the bits from the sorted keys (a 128-bit division).
    sorted_hash = (
        pl.LazyFrame([sorted_user.alias("_user")])
        .select(pl.col("_user").hash() // pl.lit(1 << unsorted_bits, pl.UInt64))
        .collect(engine="streaming")
        .to_series()
    )
    same_group = _same_as_before(sorted_hash)
    del sorted_hash
    if (same_group & ~same_user).any():
        order, ts_sorted = _sort_order(user, client_code, ts, with_id=True), None
        sorted_user = user.gather(order)
        same_user = _same_as_before(sorted_user)
    del same_group, sorted_user, user
    if ts_sorted is None:
        ts_sorted = ts.rechunk().gather(order)
    del ts
    same = same_user
    if client_code is not None:
        sorted_client = client_code.gather(order)
        same = same & sorted_client.eq_missing(sorted_client.shift(1))
        generated = client.is_null().rechunk().gather(order)
    else:
        generated = pl.repeat(True, n, dtype=pl.Boolean, eager=True)
    same = same.fill_null(False)
    columns = pl.DataFrame(
        [
            order.alias(SESSION_ORDER),
            same.alias(_SAME),
            generated.alias(_GENERATED),
            ts_sorted.alias(SESSION_TIME),
        ]
    )
    ts_col, generated_col = pl.col(SESSION_TIME), pl.col(_GENERATED)
    # A gap to or from a null time is unknown: the event stays in the session (null would be read as
    # false by the starts, but as neither by the running counts of aggregates and heartbeats).
    new = (~pl.col(_SAME) | (generated_col & ((ts_col - ts_col.shift(1)) > timeout))).fill_null(False)
    return columns.select(
        order.alias(SESSION_ORDER),
        new.alias(SESSION_NEW),
        ts_col,
        *((pl.col(_SAME), generated_col) if with_rule_columns else ()),
    ).to_struct("_keys")


def _same_as_before(values: pl.Series) -> pl.Series:
    """Whether each value equals the one before it (null where either is null, false for the first),
    compared on two views of ``values``: a shifted copy would hold all of them again (10M user ids:
    160 MB, at the session build's peak)."""
    n = len(values)
    if n < 2:
        return pl.repeat(False, n, dtype=pl.Boolean, eager=True)
    return pl.concat([pl.Series([False]), values.slice(1).eq(values.slice(0, n - 1))])


#: Fewest bits of the user id's hash in a single sort key; with fewer, three keys are sorted.
_MIN_HASH_BITS = 40


def _sort_order(user: pl.Series, client_code: pl.Series | None, ts: pl.Series, *, with_id: bool) -> pl.Series:
    """The session order by (hash of the user id, [the id itself,] client code, time, row)."""
    keys_frame = pl.DataFrame(
        [
            user.hash().alias("_hash"),
            *([user] if with_id else []),
            *([client_code] if client_code is not None else []),
            ts,
            pl.int_range(len(user), dtype=_IDX, eager=True).alias("_row"),
        ]
    )
    return keys_frame.select(pl.arg_sort_by(keys_frame.columns)).to_series()


def _packed_order(user: pl.Series, ts: pl.Series) -> tuple[pl.Series, pl.Series, int] | None:
    """The session order of events without client session ids from one sorted Int128 key per event.

    From high to low bits the key holds the top bits of the user id's hash (``Expr.hash``), the time
    since the earliest event (in the timestamps' unit) and the input row, each in as many bits as it
    needs, 127 in all (so the key is never negative). Sorting the keys puts the events in (hash, time,
    row) order, and then the keys give back, without a gather, the input rows (``_order``) and the
    times in that order. Returns them and how many low bits of the hash the key leaves out (two ids
    whose hashes differ only there are sorted as one: the caller checks); ``None`` when the key leaves
    fewer than :data:`_MIN_HASH_BITS` bits of the hash, or a timestamp is null.
    """
    n = len(ts)
    if not n or ts.null_count() or not isinstance(ts.dtype, pl.Datetime):
        return None
    ticks = ts.to_physical()
    first, last = ticks.min(), ticks.max()
    assert isinstance(first, int) and isinstance(last, int)
    time_bits, row_bits = (last - first).bit_length(), (n - 1).bit_length()
    hash_bits = min(64, 127 - time_bits - row_bits)
    if hash_bits < _MIN_HASH_BITS:
        return None
    wide = pl.Int128()
    # One expression over contiguous columns: with the times in many chunks (a Parquet read), mixing
    # them with the one-chunk hashes and rows cost 150 MB more, near the plan's peak memory. Made by the
    # streaming engine, morsel by morsel on every core: the in-memory one makes each 128-bit step whole
    # (10M events: 0.21-0.36 s on one core, against 0.05-0.08 s); the sort makes it one chunk again.
    frame = pl.DataFrame([user.alias("_user"), ticks.rechunk().alias("_ticks")])
    del ticks
    key = (
        frame.lazy()
        .select(
            (
                (
                    (pl.col("_user").hash() // (1 << (64 - hash_bits))).cast(wide)
                    * pl.lit(1 << time_bits, wide)
                    + (pl.col("_ticks") - first).cast(wide)
                )
                * pl.lit(1 << row_bits, wide)
                + pl.int_range(pl.len(), dtype=wide)
            ).alias("_key")
        )
        .collect(engine="streaming")
        .to_series()
    )
    del frame
    key = key.sort()
    # One part at a time, each temporary gone before the next: still near the plan's peak memory.
    ts_sorted = pl.select(
        (
            (pl.lit(key) // pl.lit(1 << row_bits, wide)).cast(pl.Int64, wrap_numerical=True)
            & ((1 << time_bits) - 1)
        )
        + first
    ).to_series()
    # The low bits are the row: the key's low 32 (or 64) bits, masked. Wrapping casts take low bits.
    order = key.cast(_IDX, wrap_numerical=True) & ((1 << row_bits) - 1)
    del key
    return order, ts_sorted.cast(ts.dtype), 64 - hash_bits


def _string_order(strings: pl.Series) -> pl.Series:
    """``strings.arg_sort()`` for distinct non-null strings, faster when their first bytes differ.

    The first 8 bytes (NUL-padded) as a big-endian integer order the strings as their bytes do,
    except for ties, which the strings themselves break; integers sort several times faster.
    """
    prefix = (
        strings.str.pad_end(8, "\0")
        .cast(pl.Binary)
        .bin.head(8)
        .bin.reinterpret(dtype=pl.UInt64, endianness="big")
    )
    return (
        pl.DataFrame([prefix.alias("_prefix"), strings.alias("_strings")])
        .select(pl.arg_sort_by("_prefix", "_strings"))
        .to_series()
    )


def _changes(values: pl.Series) -> pl.Series:
    """Whether each value differs from the one before it (null from non-null too); true for the first."""
    return values.ne_missing(values.shift(1)).scatter(0, True) if len(values) else values.is_null()


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


#: The ``/robots.txt`` request of a crawler, as a URL or a path.
_ROBOTS_TXT_URL = r"^(?:[A-Za-z][A-Za-z0-9+.-]*://[^/]+)?/robots\.txt(?:[?#]|$)"


def summarize_sessions(
    sessions: pl.LazyFrame,
    *,
    conversion_events: Iterable[str] = (),
    event_counts: Sequence[tuple[str, str]] = (),
    engaged: S.EngagedTime | None = None,
    aggregates: Sequence[S.Aggregate] = (),
) -> pl.LazyFrame:
    """One row per session from the output of :func:`assign_sessions`.

    Gives every column of the session table but the enrichment ones (attribution, geo, device), in
    the table's order, sorted by user and session number, plus the internal ``_fetched_robots_txt``
    and ``_referrer_page`` (:data:`sessionize.schema.REFERRER_PAGE`, read and dropped by attribution).
    A session is engaged (GA4's rule) when it lasts longer than 10 s, has at least 2 page views, or has
    an event named in ``conversion_events`` (case-insensitive). ``event_counts`` are (column, event
    name) pairs: the session's events of that name (case-insensitive), counted in that column after
    the others. ``engaged`` says how ``engaged_time_s`` is measured (:class:`sessionize.schema.EngagedTime`).
    ``aggregates`` (``--agg``) add their columns last, from the event columns
    :func:`sessionize.schema.aggregate_inputs` names (see :func:`aggregate_expr`).
    """
    engaged = engaged or S.EngagedTime()
    beats = engaged.heartbeat_events
    heartbeat = S.event_named(pl.col(S.EVENT), beats).fill_null(False) if beats else None
    converted = S.event_named(pl.col(S.EVENT), conversion_events) if conversion_events else None
    # count(event=VALUE) is an event count under its own name.
    pairs = [*event_counts, *((a.name, a.event) for a in aggregates if a.event is not None)]
    counted = {column: S.event_named(pl.col(S.EVENT), [event]).fill_null(False) for column, event in pairs}
    others = tuple(a for a in aggregates if a.event is None)
    if SESSION_ORDER in sessions.collect_schema().names():
        table = _summarize_in_order(sessions, converted, counted, heartbeat, engaged, others)
    else:
        table = _summarize_labelled(sessions, converted, counted, heartbeat, engaged, others)
    long_enough = (
        pl.col("duration_s") > S.ENGAGED_DURATION_S
        if engaged.threshold_s is None
        else pl.col("engaged_time_s") >= engaged.threshold_s
    )
    table = (
        table.with_columns(
            # round(6): exact microseconds as the nearest float, whatever order Polars divides in.
            ((pl.col("session_end") - pl.col("session_start")).dt.total_microseconds() / 1e6)
            .round(6)
            .alias("duration_s"),
        )
        .with_columns(
            (long_enough | (pl.col("pageview_count") >= 2) | pl.col("_converted")).alias("is_engaged")
        )
        .with_columns((~pl.col("is_engaged")).alias("is_bounce"))
    )
    return table.select(
        *(c.name for c in S.SESSION_COLUMNS if c.core),
        ROBOTS_TXT,
        S.REFERRER_PAGE,
        *(column for column, _ in event_counts),
        *(a.name for a in aggregates),
    )


def reads_event_names(
    *,
    conversion_events: Iterable[str] = (),
    event_counts: Sequence[tuple[str, str]] = (),
    engaged: S.EngagedTime | None = None,
    aggregates: Sequence[S.Aggregate] = (),
) -> bool:
    """Whether :func:`summarize_sessions` with these arguments reads the event names (``S.EVENT``):
    for conversions, heartbeats and the counts of events by name (``--count-events``, ``count(event=)``)."""
    return bool(
        tuple(conversion_events)
        or event_counts
        or (engaged is not None and engaged.heartbeat_events)
        or any(a.event is not None for a in aggregates)
    )


#: ``--agg``'s sums and means add up their values times 2**-40, then multiply by 2**40: a power of two
#: scales a float exactly, so the result is the plain sum's to the last bit, but no sum on the way goes
#: beyond the largest float (1.8e308): the mean of 1e308 and 1e308 is 1e308 (not ``inf``), and the sum
#: of 1e308, 1e308 and -1e308 is 1e308 (not ``inf``, nor NaN when two overflows meet). Up to 2**39 values
#: of the largest float add up below it. Only values below 2**-982 (1e-296) would lose digits.
_SCALE_DOWN = 2.0**-40
_SCALE_UP = 2.0**40


def scaled_sum(column: pl.Expr) -> pl.Expr:
    """The sum of ``column``, added up scaled (see :data:`_SCALE_DOWN`): infinite only where the sum
    itself is beyond the largest float (:func:`sessionize.partition.check_sums` refuses to write it)."""
    return (column * _SCALE_DOWN).sum() * _SCALE_UP


def aggregate_expr(aggregate: S.Aggregate, inputs: Mapping[tuple[str, bool], str]) -> pl.Expr:
    """One ``--agg`` over a session's events, in event order, from its event column (``inputs``:
    :func:`sessionize.schema.aggregate_inputs`). As SQL has them: ``sum``, ``mean``, ``min`` and ``max``
    of the non-null values (null without one; sums and means without overflow on the way, see
    :func:`scaled_sum`); ``count(COLUMN)`` the non-null values, ``count(*)`` the
    events; ``n_unique`` the distinct non-null values; ``first`` and ``last`` the first and last event's
    value, null included. ``count(event=VALUE)`` is counted with ``--count-events``' flags instead."""
    if aggregate.column is None:
        return pl.len().cast(pl.UInt32).alias(aggregate.name)
    column = pl.col(inputs[aggregate.column, aggregate.numeric])
    expr: pl.Expr
    match aggregate.function:
        case "sum":
            expr = pl.when(column.count() > 0).then(scaled_sum(column))
        case "mean":
            expr = (column * _SCALE_DOWN).mean() * _SCALE_UP
        case "min":
            expr = column.min()
        case "max":
            expr = column.max()
        case "count":
            expr = column.count().cast(pl.UInt32)
        case "n_unique":
            expr = column.drop_nulls().n_unique().cast(pl.UInt32)
        case "first":
            expr = column.first()
        case "last":
            expr = column.last()
        case _:  # pragma: no cover - parse_aggregate checks the names
            raise ValueError(aggregate.function)
    return expr.cast(aggregate.dtype).alias(aggregate.name)


def _summarize_labelled(
    sessions: pl.LazyFrame,
    converted: pl.Expr | None,
    counted: dict[str, pl.Expr],
    heartbeat: pl.Expr | None,
    engaged: S.EngagedTime,
    aggregates: Sequence[S.Aggregate] = (),
) -> pl.LazyFrame:
    """The session table of labelled events (``session_id`` on every event), by a ``group_by``."""
    ts, pv = pl.col(S.TIME), pl.col(S.IS_PAGEVIEW)
    # Page views and page activity (null: Snowplow's page pings) give the landing and exit pages.
    page = pv.fill_null(True)
    # `filter(...).first()` keeps a null value of the first page view: a null referrer means "direct".
    landing_referrer = (
        pl.when(page.any())
        .then(pl.col(S.REFERRER).filter(page).first())
        .otherwise(pl.col(S.REFERRER).first())
    )
    # The robots.txt test runs per row, before the group_by: inside the aggregation it was 3x slower.
    robots = pl.col(S.URL).str.contains(_ROBOTS_TXT_URL)
    micros = ts.dt.epoch("us")
    reported = S.ENGAGEMENT_MS in sessions.collect_schema().names()
    if heartbeat is None:
        # The gap to the session's next event (its events are in session order), capped.
        gaps = (micros.shift(-1) - micros).clip(0, int(engaged.gap_cap_s * 1e6)).fill_null(0).sum()
        engaged_us = gaps.alias("_engaged_us")
    else:
        engaged_us = pl.lit(0, dtype=pl.Int64).alias("_engaged_us")
    # Each session's events are in event order (assign_sessions' session order), as the gaps above and
    # the aggregates' first and last read them.
    inputs = S.aggregate_inputs(aggregates)
    table = (
        sessions.with_columns(robots.alias(ROBOTS_TXT))
        .group_by(S.USER, S.SESSION_ID)
        .agg(
            ts.min().alias("session_start"),
            ts.max().alias("session_end"),
            pl.len().cast(pl.UInt32).alias("event_count"),
            pv.sum().cast(pl.UInt32).alias("pageview_count"),
            pl.col(S.URL).filter(page).first().alias("landing_page"),
            pl.col(S.URL).filter(page).last().alias("exit_page"),
            landing_referrer.alias("referrer"),
            pl.when(page.any()).then(pl.lit(None)).otherwise(pl.col(S.URL).first()).alias(S.REFERRER_PAGE),
            pl.col(S.IP).first().alias("ip"),
            pl.col(S.USER_AGENT).first().alias("user_agent"),
            # Only crawlers ask for /robots.txt: the session is a bot's whatever its user agent says.
            pl.col(ROBOTS_TXT).any(),
            (converted.any() if converted is not None else pl.lit(False)).alias("_converted"),
            *(flags.sum().cast(pl.UInt32).alias(column) for column, flags in counted.items()),
            engaged_us,
            *(
                [
                    pl.col(S.ENGAGEMENT_MS).sum().alias("_reported_ms"),
                    pl.col(S.ENGAGEMENT_MS).count().alias("_reported"),
                ]
                if reported
                else []
            ),
            *(aggregate_expr(aggregate, inputs) for aggregate in aggregates),
        )
        .sort(S.USER, "session_start", S.SESSION_ID)
        .with_columns((pl.int_range(pl.len(), dtype=pl.UInt32).over(S.USER) + 1).alias("session_number"))
    )
    if heartbeat is not None:
        # Each heartbeat counts for the page view of its page view id in its session where it has one
        # (Snowplow's rule), else for the page view before it in its session (Snowplow's pings follow
        # theirs); its window is on its heartbeat time where it has one, else on its event time.
        keys = [S.USER, S.SESSION_ID]
        names = _beat_columns(sessions.collect_schema().names())
        by_id = S.PAGE_VIEW_KEY in names
        page = pl.col(S.IS_PAGEVIEW).fill_null(False).cast(pl.UInt32).cum_sum().over(keys)
        if by_id:
            page = pl.when(pl.col(S.PAGE_VIEW_KEY).is_null()).then(page)
        window = _beat_micros(micros, names) // int(engaged.heartbeat_s * 1e6)
        per_page = (
            sessions.with_columns(page.alias("_page"), window.alias("_window"))
            .filter(heartbeat)
            .group_by(*keys, "_page", *([S.PAGE_VIEW_KEY] if by_id else []))
            .agg(pl.col("_window").n_unique().alias("_windows"))
            .group_by(keys)
            .agg(_heartbeat_engaged_us(pl.col("_windows"), engaged).sum().alias("_beats_us"))
        )
        table = (
            table.join(per_page, on=keys, how="left", maintain_order="left")
            .with_columns(pl.col("_beats_us").fill_null(0).alias("_engaged_us"))
            .drop("_beats_us")
        )
    if reported:
        # GA4's rule where the events report their engagement time: its sum.
        table = table.with_columns(
            pl.when(pl.col("_reported") > 0)
            .then((pl.col("_reported_ms") * 1000).round().cast(pl.Int64))
            .otherwise(pl.col("_engaged_us"))
            .alias("_engaged_us")
        ).drop("_reported_ms", "_reported")
    return table.with_columns((pl.col("_engaged_us") / 1e6).round(6).alias("engaged_time_s")).drop(
        "_engaged_us"
    )


def _beat_columns(names: Sequence[str]) -> list[str]:
    """The event columns heartbeats are grouped and timed by that the events carry: the page view id
    (:data:`sessionize.schema.PAGE_VIEW_KEY`) and the heartbeat time
    (:data:`sessionize.schema.HEARTBEAT_TS`)."""
    return [name for name in (S.PAGE_VIEW_KEY, S.HEARTBEAT_TS) if name in names]


def _beat_micros(micros: pl.Expr, names: Sequence[str]) -> pl.Expr:
    """The epoch microseconds a heartbeat's window is counted on: its heartbeat time
    (:data:`sessionize.schema.HEARTBEAT_TS`) where the events have one and it is not null, else
    ``micros`` (its event time)."""
    if S.HEARTBEAT_TS not in names:
        return micros
    return pl.coalesce(pl.col(S.HEARTBEAT_TS).dt.epoch("us"), micros)


def _heartbeat_engaged_us(windows: pl.Expr, engaged: S.EngagedTime) -> pl.Expr:
    """A page view's engaged time from its heartbeats' distinct windows: Snowplow's
    ``heartbeat x (windows - 1) + min_visit_length``, in microseconds."""
    return (windows.cast(pl.Int64) - 1) * int(engaged.heartbeat_s * 1e6) + int(engaged.min_visit_s * 1e6)


def _summarize_in_order(
    sessions: pl.LazyFrame,
    converted: pl.Expr | None,
    counted: dict[str, pl.Expr],
    heartbeat: pl.Expr | None,
    engaged: S.EngagedTime,
    aggregates: Sequence[S.Aggregate] = (),
) -> pl.LazyFrame:
    """The session table from ``assign_sessions(label=False)``, without a ``group_by``.

    In session order each session is a run of events that starts where ``_new`` is set, so every
    value comes from a row of that run: the start and end rows, the first and last page view, counts
    from running sums. The table's order is settled on those positions first; then only those rows'
    values are taken from the events, by their input row. All in one function (see
    :func:`_session_rows`), so that each step's full-length temporaries are gone before the next (but
    for the engaged time and the table's order, which run beside the page view steps on threads);
    its inputs, evaluated in parallel, already hold the flags it reads in session order.
    """
    order = pl.col(SESSION_ORDER)
    names = sessions.collect_schema().names()
    reported = S.ENGAGEMENT_MS in names
    beat_columns = _beat_columns(names) if heartbeat is not None else []

    def in_order(flags: pl.Expr) -> pl.Expr:
        return _contiguous(flags.fill_null(False)).gather(order)

    inputs = [
        order,
        pl.col(SESSION_NEW),
        pl.col(SESSION_TIME),
        # Page views (true) and page activity (null), not filled: see `_session_rows`.
        _contiguous(pl.col(S.IS_PAGEVIEW)).gather(order),
        # Every /robots.txt request contains the literal "/robots.txt", a quick test; the exact one
        # runs only on the URLs that pass it.
        in_order(pl.col(S.URL).str.contains("/robots.txt", literal=True)),
        # The user id of each session's first event, in session order.
        _contiguous(pl.col(S.USER)).gather(order.filter(pl.col(SESSION_NEW))),
        pl.col(S.URL),
        pl.col(S.CLIENT_SESSION),
        pl.col(S.REFERRER),
        pl.col(S.IP),
        pl.col(S.USER_AGENT),
        *([in_order(converted)] if converted is not None else []),
        *([in_order(heartbeat)] if heartbeat is not None else []),
        # The page view ids and heartbeat times in input order: only the heartbeats' are taken.
        *(pl.col(name) for name in beat_columns),
        *([_contiguous(pl.col(S.ENGAGEMENT_MS)).gather(order)] if reported else []),
        *(in_order(flags) for flags in counted.values()),
        *(pl.col(name) for name in S.aggregate_inputs(aggregates).values()),
    ]
    schema = sessions.collect_schema()
    dtype = pl.Struct(
        {
            S.SESSION_ID: pl.String(),
            S.USER: schema[S.USER],
            "session_number": pl.UInt32(),
            "session_start": schema[SESSION_TIME],
            "session_end": schema[SESSION_TIME],
            "event_count": pl.UInt32(),
            "pageview_count": pl.UInt32(),
            "landing_page": schema[S.URL],
            "exit_page": schema[S.URL],
            "referrer": schema[S.REFERRER],
            S.REFERRER_PAGE: schema[S.URL],
            "ip": schema[S.IP],
            "user_agent": schema[S.USER_AGENT],
            ROBOTS_TXT: pl.Boolean(),
            "_converted": pl.Boolean(),
            **dict.fromkeys(counted, pl.UInt32()),
            "engaged_time_s": pl.Float64(),
            **{aggregate.name: aggregate.dtype for aggregate in aggregates},
        }
    )
    rows = partial(
        _session_rows,
        converted=converted is not None,
        counted=tuple(counted),
        engaged=engaged,
        reported=reported,
        page_view_ids=S.PAGE_VIEW_KEY in beat_columns,
        heartbeat_time=S.HEARTBEAT_TS in beat_columns,
        aggregates=tuple(aggregates),
    )
    return sessions.select(pl.map_batches(inputs, rows, return_dtype=dtype).alias("_table")).unnest("_table")


def _session_rows(
    columns: Sequence[pl.Series],
    *,
    converted: bool = False,
    counted: Sequence[str] = (),
    engaged: S.EngagedTime | None = None,
    reported: bool = False,
    page_view_ids: bool = False,
    heartbeat_time: bool = False,
    aggregates: Sequence[S.Aggregate] = (),
) -> pl.Series:
    """The session table (a struct, one row per session) from the inputs of
    :func:`_summarize_in_order`: ``_order``, ``_new``, ``_ts``, the page view and possible robots.txt
    flags (in session order), the sessions' first user ids (in session order), then the events'
    URL, client session id, referrer, IP, user agent (in input order) and, if given, the conversion
    flags (``converted``), the heartbeat flags (with ``engaged.heartbeat_events``), the page view ids
    (``page_view_ids``) and heartbeat times (``heartbeat_time``) in input order, the reported engagement
    times (``reported``) and the flags of each counted event (``counted``), in session order.
    """
    order, new, ts, pv, maybe, first_user, url, client, referrer, ip, user_agent, *rest = columns
    engaged = engaged or S.EngagedTime()
    conversions = rest.pop(0) if converted else None
    beats = rest.pop(0) if engaged.heartbeat_events else None
    page_view_id = rest.pop(0) if page_view_ids else None
    beat_time = rest.pop(0) if heartbeat_time else None
    reported_ms = rest.pop(0) if reported else None
    inputs = S.aggregate_inputs(aggregates)
    count_flags = rest[: len(rest) - len(inputs)]
    per_session = _aggregated(rest[len(count_flags) :], inputs, aggregates, order, new)
    del rest
    n = len(order)
    # Positions in session order of each session's first and last event.
    starts = new.arg_true()
    ends = (starts.shift(-1) - 1).fill_null(n - 1) if n else starts
    first = order.gather(starts)

    # Page activity (a null flag: Snowplow's page pings) gives the landing and exit pages as page views
    # do, without counting as one.
    activity = pv.null_count() > 0
    page = pv.fill_null(True) if activity else pv
    pv = pv.fill_null(False)
    # The engaged time and the table's order are worked out on threads of their own, beside the page
    # views, robots.txt and counts here: these steps are mostly on one core each, and Polars lets go
    # of the GIL while it works (10M events: 0.35 s of the two, then beside 0.3 s of the rest). Not on
    # one of Polars' own workers (see _on_a_python_thread): there, one after the other.
    pool = ThreadPoolExecutor(2, thread_name_prefix="sessionize-rows") if _on_a_python_thread() else None
    with pool or contextlib.nullcontext():
        engaged_later = _submit(
            pool,
            _engaged_in_order,
            ts,
            new,
            starts,
            ends,
            pv,
            beats,
            engaged,
            order=order,
            page_view_id=page_view_id,
            beat_time=beat_time,
        )
        del page_view_id, beat_time
        # The table's order, the session numbers and the numbers that tell same-instant ids apart.
        first_client = _gather(client, first)
        session_start = ts.gather(starts)
        order_later = _submit(pool, _table_order, first_user, first_client, session_start)
        page_rows = _page_rows(order, starts, ends, pv, page, activity, maybe, url, conversions, count_flags)
        del pv, page, maybe, conversions
        engaged_us = engaged_later.result()
        table, number, id_number = order_later.result()
    pageviews, landing, exit_, fetched_robots, converted_any, counts = page_rows
    del page_rows, order, count_flags
    if reported_ms is not None:
        # GA4's rule where a session's events report their engagement time: its sum.
        sums = _run_sums(reported_ms.fill_null(0.0), starts, ends)
        present = _counts_of(reported_ms.is_not_null(), starts, ends)[2]
        engaged_us = pl.select(
            pl.when(pl.lit(present) > 0)
            .then((pl.lit(sums) * 1000).round().cast(pl.Int64))
            .otherwise(pl.lit(engaged_us))
        ).to_series()
    # Every per-session column in the table's order, in parallel (named by position: a count or an
    # aggregate may share a name). Taken in session order first where that reads the events in order
    # (the ends' times).
    sessions = len(table)
    by_session = {
        "first": first,
        "landing": landing,
        "exit": exit_,
        "first_user": first_user,
        "first_client": first_client,
        "session_start": session_start,
        "session_end": ts.gather(ends),
        "event_count": (ends - starts + 1).cast(pl.UInt32),
        "pageview_count": pageviews,
        ROBOTS_TXT: fetched_robots,
        "_converted": converted_any if converted_any is not None else pl.repeat(False, sessions, eager=True),
        "engaged_us": engaged_us,
    }
    values = [*by_session.values(), *counts, *per_session]
    names = list(by_session)
    del by_session, first, landing, exit_, first_user, first_client, session_start, starts, ends
    del pageviews, fetched_robots, converted_any, engaged_us, counts, per_session
    taken = pl.DataFrame([v.alias(str(i)) for i, v in enumerate(values)]).select(pl.all().gather(table))
    columns = [column.alias(v.name) for column, v in zip(taken.get_columns(), values, strict=True)]
    ordered = dict(zip(names, columns[: len(names)], strict=True))
    counts = columns[len(names) : len(names) + len(counted)]
    per_session = columns[len(names) + len(counted) :]
    del values, taken, columns
    first, landing = ordered["first"], ordered["landing"]
    # The session ids beside the other string values, which are taken one column at a time: the three
    # taken from the URLs next to each other, so that they share one contiguous copy (see _gathered).
    parts = [
        ("landing_page", url, landing),
        ("exit_page", url, ordered["exit"]),
        # Without a page view, the page that referrer led to: the first event's (see S.REFERRER_PAGE).
        (S.REFERRER_PAGE, url, pl.select(pl.when(pl.lit(landing).is_null()).then(pl.lit(first))).to_series()),
        # The landing page view's referrer, else the first event's; a null one means "direct".
        ("referrer", referrer, pl.select(pl.coalesce(landing, first)).to_series()),
        ("ip", ip, first),
        ("user_agent", user_agent, first),
    ]
    strings = pl.select(
        session_id_expr(
            pl.lit(ordered["first_client"]),
            pl.lit(ordered["first_user"]),
            pl.lit(ordered["session_start"]),
            number=pl.lit(id_number) if id_number is not None else None,
        ).alias(S.SESSION_ID),
        pl.lit(first)
        .map_batches(
            lambda _: _gathered(parts),
            return_dtype=pl.Struct({name: values.dtype for name, values, _ in parts}),
        )
        .alias("_values"),
    )
    others = strings.get_column("_values").struct.unnest()
    return pl.DataFrame(
        [
            strings.get_column(S.SESSION_ID),
            ordered["first_user"],
            number.alias("session_number"),
            *(
                ordered[name].alias(name)
                for name in ("session_start", "session_end", "event_count", "pageview_count")
            ),
            *others.select(
                "landing_page", "exit_page", "referrer", S.REFERRER_PAGE, "ip", "user_agent"
            ).get_columns(),
            *(ordered[name].alias(name) for name in (ROBOTS_TXT, "_converted")),
            *(count.alias(name) for count, name in zip(counts, counted, strict=True)),
            (ordered["engaged_us"] / 1e6).round(6).alias("engaged_time_s"),
            *per_session,
        ]
    ).to_struct("_table")


def _on_a_python_thread() -> bool:
    """Whether this runs on a thread Python started (the main thread, a Dask worker's, one of ours), not
    on one of Polars' own workers, where Polars calls a function of a plan when it runs parts of the plan
    side by side (a ``concat`` or ``join`` of two lazy session tables, say). A worker that waits for
    threads which give Polars more work can wait for ever: with every worker waiting, none is left to
    do it. Python knows the threads it did not start as ``_DummyThread``."""
    return not isinstance(threading.current_thread(), threading._DummyThread)


_Result = TypeVar("_Result")


def _submit(
    pool: ThreadPoolExecutor | None, function: Callable[..., _Result], *args: Any, **kwargs: Any
) -> Future[_Result]:
    """``pool.submit(function, ...)``, or without a pool its call now, on this thread, as a done future."""
    if pool is not None:
        return pool.submit(function, *args, **kwargs)
    done: Future[_Result] = Future()
    try:
        done.set_result(function(*args, **kwargs))
    except Exception as exc:  # raised by .result(), as from a pool
        done.set_exception(exc)
    return done


def _counts_of(
    flags: pl.Series, starts: pl.Series, ends: pl.Series
) -> tuple[pl.Series, pl.Series, pl.Series]:
    """Per run ``starts[i]..ends[i]``: the flags set before it, through its end, and in it."""
    # Cast first: a running sum of 32-bit integers is faster than the booleans' (10M: 41 against 47-80 ms).
    ones = flags.cast(pl.UInt32)
    running = ones.cum_sum()
    before = running.gather(starts) - ones.gather(starts)
    through = running.gather(ends)
    return before, through, through - before


def _page_rows(
    order: pl.Series,
    starts: pl.Series,
    ends: pl.Series,
    pv: pl.Series,
    page: pl.Series,
    activity: bool,
    maybe: pl.Series,
    url: pl.Series,
    conversions: pl.Series | None,
    count_flags: Sequence[pl.Series],
) -> tuple[pl.Series, pl.Series, pl.Series, pl.Series, pl.Series | None, list[pl.Series]]:
    """What :func:`_session_rows` takes from the flags in session order, per session (in session order):
    the page view count, the input rows of the landing and exit page views (null without one), whether
    it fetched /robots.txt (``maybe``: the events whose URL may be it), whether it converted, and the
    count of each of ``count_flags``. ``page`` are the page views and page activity, ``pv`` the page
    views alone (the same without ``activity``)."""
    # Page views up to and including each event; the sessions' first and last ones by their rank.
    before, through, pages = _counts_of(page, starts, ends)
    pageviews = _counts_of(pv, starts, ends)[2] if activity else pages
    page_positions = page.arg_true()
    # Input rows of the first and last page views (null without one).
    landing, exit_ = (
        order.gather(page_positions.gather(pl.select(pl.when(pages > 0).then(rank)).to_series()))
        for rank in (before, through - 1)
    )
    del page_positions, before, through, pages
    maybe = maybe.arg_true()
    robots = maybe.filter(url.gather(order.gather(maybe)).str.contains(_ROBOTS_TXT_URL).fill_null(False))
    fetched_robots = _any_between(robots, starts, ends)
    converted_any = _any_between(conversions.arg_true(), starts, ends) if conversions is not None else None
    counts = [_counts_of(flags, starts, ends)[2] for flags in count_flags]
    return pageviews, landing, exit_, fetched_robots, converted_any, counts


def _aggregated(
    values: Sequence[pl.Series],
    inputs: Mapping[tuple[str, bool], str],
    aggregates: Sequence[S.Aggregate],
    order: pl.Series,
    new: pl.Series,
) -> list[pl.Series]:
    """The ``--agg`` columns in session order, from their event columns (``values``, in input order,
    one per entry of ``inputs``), ``_order`` and ``_new``."""
    if not aggregates:
        return []
    session = (new.cast(pl.UInt32).cum_sum() - 1).alias("_session").set_sorted()
    frame = pl.DataFrame(
        [session, *(_gather(v, order).alias(name) for v, name in zip(values, inputs.values(), strict=True))]
    )
    result = frame.group_by("_session", maintain_order=True).agg(
        aggregate_expr(aggregate, inputs) for aggregate in aggregates
    )
    return [result.get_column(aggregate.name) for aggregate in aggregates]


def _run_sums(values: pl.Series, starts: pl.Series, ends: pl.Series) -> pl.Series:
    """The sum of ``values`` over each run ``starts[i]..ends[i]`` (from one running sum)."""
    running = values.cum_sum()
    return running.gather(ends) - running.gather(starts) + values.gather(starts)


def _engaged_in_order(
    ts: pl.Series,
    new: pl.Series,
    starts: pl.Series,
    ends: pl.Series,
    pv: pl.Series,
    beats: pl.Series | None,
    engaged: S.EngagedTime,
    *,
    order: pl.Series | None = None,
    page_view_id: pl.Series | None = None,
    beat_time: pl.Series | None = None,
) -> pl.Series:
    """Each session's engaged time in microseconds (in session order), from the events' times, page
    view and heartbeat flags in session order (see :class:`sessionize.schema.EngagedTime`), and their
    page view ids and heartbeat times, if given, in input order (``order``: the input row of each
    position in session order)."""
    micros = ts.dt.epoch("us")
    if beats is None:
        # Each event's capped gap to the next one, none for a session's last, summed in one pass: each
        # session's sum is the running sum at its end less the one before its start.
        following = pl.lit(micros)
        gap = (following.shift(-1) - following).clip(0, int(engaged.gap_cap_s * 1e6)).fill_null(0)
        last = pl.lit(new).shift(-1, fill_value=True)
        running = pl.select(pl.when(last).then(0).otherwise(gap).cum_sum()).to_series()
        before = pl.select(pl.lit(running).shift(1, fill_value=0).gather(pl.lit(starts))).to_series()
        return running.gather(ends) - before
    positions = beats.arg_true()
    interval = int(engaged.heartbeat_s * 1e6)
    windows = pl.DataFrame(
        {
            "session": (new.cast(pl.UInt32).cum_sum() - 1).gather(positions),
            "page": pv.cast(pl.UInt32).cum_sum().gather(positions),
            "window": micros.gather(positions) // interval,
        }
    )
    keys = ["session", "page"]
    if order is not None and (page_view_id is not None or beat_time is not None):
        # Only the heartbeats' ids and times, from their input rows.
        rows = order.gather(positions)
        if beat_time is not None:
            beat_us = _gather(beat_time, rows).dt.epoch("us").alias("beat_us")
            windows = windows.with_columns(beat_us).with_columns(
                pl.when(pl.col("beat_us").is_not_null())
                .then(pl.col("beat_us") // interval)
                .otherwise(pl.col("window"))
                .alias("window")
            )
        if page_view_id is not None:
            # A heartbeat with a page view id counts for that page view (whichever comes before it).
            ids = _gather(page_view_id, rows).alias("page_view_id")
            windows = windows.with_columns(ids).with_columns(
                pl.when(pl.col("page_view_id").is_null()).then(pl.col("page")).alias("page")
            )
            keys.append("page_view_id")
    per_session = (
        windows.group_by(*keys)
        .agg(pl.col("window").n_unique().alias("_windows"))
        .group_by("session")
        .agg(_heartbeat_engaged_us(pl.col("_windows"), engaged).sum().alias("us"))
    )
    result = pl.zeros(len(starts), dtype=pl.Int64, eager=True)
    if per_session.height:
        result = result.scatter(per_session.get_column("session"), per_session.get_column("us"))
    return result


def _gathered(parts: Sequence[tuple[str, pl.Series, pl.Series]]) -> pl.Series:
    """A struct of each part's ``values`` at its ``rows``, named ``name``, one column at a time (see
    :func:`_gather`); consecutive parts of one column share its rechunked copy."""
    taken, previous, contiguous = [], None, None
    for name, values, rows in parts:
        if values is not previous:
            previous, contiguous = values, None  # the previous copy goes first
            contiguous = None if values.null_count() == len(values) else values.rechunk()
        taken.append(
            (
                pl.repeat(None, len(rows), dtype=values.dtype, eager=True)
                if contiguous is None
                else contiguous.gather(rows)
            ).alias(name)
        )
    return pl.struct(taken, eager=True)


def _gather(values: pl.Series, rows: pl.Series) -> pl.Series:
    """``values`` at ``rows``.

    Rechunked first: a gather from the many chunks of a Parquet read is several times slower, and
    this copy lives only while the values are taken, rather than a second copy of every column for
    the whole plan. All null values need neither.
    """
    if values.null_count() == len(values):
        return pl.repeat(None, len(rows), dtype=values.dtype, eager=True).alias(values.name)
    return values.rechunk().gather(rows)


def _any_between(positions: pl.Series, starts: pl.Series, ends: pl.Series) -> pl.Series:
    """Whether any of the sorted ``positions`` lies in each run ``starts[i]..ends[i]``."""
    if not len(positions):
        return pl.repeat(False, len(starts), dtype=pl.Boolean, eager=True)
    return positions.search_sorted(ends, side="right") > positions.search_sorted(starts, side="left")


def _table_order(
    user: pl.Series, client: pl.Series, start: pl.Series
) -> tuple[pl.Series, pl.Series, pl.Series | None]:
    """The order of the session table (by user id, start and session id), the session numbers in
    that order, and the numbers that tell apart the ids of a user's sessions that start at the same
    instant (``number`` of :func:`session_id_expr`; ``None`` when no two do).

    The arguments are the sessions' user ids, client session ids and starts, in session order. Each
    user's sessions are together in session order, and usually already by start (sessions split by
    the timeout start strictly later than the one before). Then it is enough to sort the users, one
    string per user rather than three keys per session, and keep each user's sessions as they are.
    Otherwise (client session ids, null user ids or times, a campaign change at one instant) the
    sessions are sorted.
    """
    n = len(start)
    first_of_user = _changes(user)
    if user.null_count() == start.null_count() == 0 and (first_of_user | (start > start.shift(1))).all():
        firsts = first_of_user.arg_true()
        counts = pl.concat([firsts, pl.Series([n], dtype=firsts.dtype)]).diff(null_behavior="drop")
        by_user = _string_order(user.gather(firsts))
        table = pl.DataFrame({"first": firsts.gather(by_user), "count": counts.gather(by_user)}).select(
            pl.int_ranges("first", pl.col("first") + pl.col("count"), dtype=_IDX).explode().alias("_session"),
            pl.int_ranges(1, pl.col("count") + 1, dtype=pl.UInt32).explode().alias("session_number"),
        )
        return table.to_series(0), table.to_series(1), None
    session_id = (
        pl.DataFrame([client.alias("_client"), user.alias("_user"), start.alias("_start")])
        .select(session_id_expr(pl.col("_client"), pl.col("_user"), pl.col("_start")))
        .to_series()
    )
    session = (
        pl.DataFrame([user.alias("_user"), start.alias("_start"), session_id.alias("_id")])
        # Sessions alike in all three (split by a campaign at the same instant) stay in session order.
        .select(pl.arg_sort_by("_user", "_start", "_id", pl.int_range(pl.len(), dtype=_IDX)))
        .to_series()
    )
    position = pl.int_range(n, dtype=_IDX, eager=True)

    def run_number(first_of_run: pl.Series) -> pl.Series:
        run_start = pl.select(pl.when(first_of_run).then(position).forward_fill()).to_series()
        return (position - run_start + 1).cast(pl.UInt32)

    number = run_number(_changes(user.gather(session)))
    # Generated ids alike (same user and start) follow each other in session order: number them.
    generated = client.gather(session).is_null()
    repeated = (~_changes(session_id.gather(session)) & generated & generated.shift(1)).fill_null(False)
    return session, number, run_number(~repeated) if repeated.any() else None


#: The page-view table's columns, in order (see docs/output.md).
PAGEVIEW_COLUMN_NAMES = (
    S.SESSION_ID,
    S.USER,
    "page_view_in_session",
    "page_url",
    "page_referrer",
    S.TIME,
    "time_on_page_s",
    "engaged_time_s",
    "is_landing",
    "is_exit",
    "channel",
    "traffic_source",
    "source_name",
)
#: The session columns a page view carries for convenience.
_PAGEVIEW_SESSION_COLUMNS = ("channel", "traffic_source", "source_name")


def summarize_pageviews(
    events: pl.LazyFrame, sessions: pl.LazyFrame, *, engaged: S.EngagedTime | None = None
) -> pl.LazyFrame:
    """One row per page view from the labelled events of :func:`assign_sessions` (``label=True``).

    The events are in session order (each session's events together, by time; events at one
    instant keep their input order), so a page view's number in its session (1, 2, ...) follows
    that order. ``time_on_page_s`` is the time to the session's next page view; for the last one,
    the time to its last heartbeat (``engaged.heartbeat_events``; where the events carry page view ids,
    of its id's heartbeats and those without an id after it), else null. ``engaged_time_s`` is
    the session's rule (:class:`sessionize.schema.EngagedTime`) applied to the events from the page
    view to the next one (heartbeats, page activity and other events count for the page view before
    them): its heartbeats' windows (where the events carry page view ids, a heartbeat with one counts
    for the page view of that id in its session instead, and its windows are on its heartbeat time
    where the events carry one); else the reported engagement time (``_engagement_ms``) where the
    session's events report it; else the capped gaps from each of those events to the next one in the
    session. A session's page views add up to its ``engaged_time_s`` but for events before its first
    page view (and heartbeats whose page view id is no page view of the session). Only the page views
    of sessions in ``sessions`` are kept (a session left out there, a
    bot's with ``exclude_bots``, leaves out its page views), in the sessions' order, with their
    ``channel``, ``traffic_source`` and ``source_name``.
    """
    engaged = engaged or S.EngagedTime()
    key = [S.USER, S.SESSION_ID]
    names = events.collect_schema().names()
    reported = S.ENGAGEMENT_MS in names
    beats = engaged.heartbeat_events
    ts = pl.col(S.TIME)
    micros = ts.dt.epoch("us")
    # Each session's events are together: sessions and their page views are numbered by runs, with
    # integer run numbers as the keys (string keys cost more).
    run, page = pl.col("_run"), pl.col("_page")
    starts = pl.col(S.USER).ne_missing(pl.col(S.USER).shift()) | pl.col(S.SESSION_ID).ne_missing(
        pl.col(S.SESSION_ID).shift()
    )
    is_view = pl.col(S.IS_PAGEVIEW).fill_null(False)
    heartbeat = S.event_named(pl.col(S.EVENT), beats).fill_null(False) if beats else pl.lit(False)
    # Heartbeats with a page view id count for its page view, the others for the page view before them;
    # their windows are on their heartbeat time where they have one (see _summarize_labelled).
    beat_columns = _beat_columns(names) if beats else []
    by_id = S.PAGE_VIEW_KEY in beat_columns
    window = _beat_micros(micros, beat_columns) // int(engaged.heartbeat_s * 1e6)
    same_session = run.shift(-1).eq_missing(run)
    base = (
        events.select(
            *key,
            S.URL,
            S.REFERRER,
            ts,
            S.IS_PAGEVIEW,
            *([S.EVENT] if beats else []),
            *([S.ENGAGEMENT_MS] if reported else []),
            *beat_columns,
        )
        .with_columns(starts.cum_sum().alias("_run"))
        .with_columns(
            is_view.cast(pl.UInt32).cum_sum().over(run).alias("_page"),
            pl.when(same_session)
            .then((micros.shift(-1) - micros).clip(0, int(engaged.gap_cap_s * 1e6)))
            .otherwise(0)
            .alias("_gap_us"),
            heartbeat.alias("_beat"),
            *([(pl.col(S.ENGAGEMENT_MS).count().over(run) > 0).alias("_reports")] if reported else []),
        )
    )
    beat = pl.col("_beat")
    loose = beat & pl.col(S.PAGE_VIEW_KEY).is_null() if by_id else beat
    per_page = (
        base.filter(page > 0)
        .group_by("_run", "_page")
        .agg(
            pl.col("_gap_us").sum().alias("_gaps_us"),
            window.filter(loose).n_unique().alias("_windows"),
            micros.filter(loose).max().alias("_last_beat_us"),
            *(
                [pl.col(S.ENGAGEMENT_MS).sum().alias("_reported_ms"), pl.col("_reports").first()]
                if reported
                else []
            ),
        )
    )
    windows = pl.col("_windows")
    engaged_us: pl.Expr = (
        pl.when(windows > 0).then(_heartbeat_engaged_us(windows, engaged)).otherwise(0)
        if beats
        else pl.col("_gaps_us")
    )
    # The windows of the heartbeats of each page view id in its session.
    per_id = (
        base.filter(beat & pl.col(S.PAGE_VIEW_KEY).is_not_null())
        .group_by("_run", S.PAGE_VIEW_KEY)
        .agg(window.n_unique().alias("_id_windows"), micros.max().alias("_id_last_beat_us"))
        if by_id
        else None
    )
    if per_id is not None:
        id_windows = pl.col("_id_windows")
        engaged_us = engaged_us + pl.when(id_windows > 0).then(
            _heartbeat_engaged_us(id_windows, engaged)
        ).otherwise(0)
    if reported:
        # GA4's rule where the session's events report their engagement time: its sum.
        reported_us = (pl.col("_reported_ms").fill_null(0.0) * 1000).round().cast(pl.Int64)
        engaged_us = pl.when(pl.col("_reports")).then(reported_us).otherwise(engaged_us)
    same_next = run.shift(-1).eq_missing(run)
    to_next = pl.when(same_next).then((ts.shift(-1) - ts).dt.total_microseconds() / 1e6)
    # The last page view's own heartbeats: with page view ids, those of its id and those without one that
    # follow it (not another tab's, review of stop 52), as for its engaged time.
    last_beat = pl.col("_last_beat_us")
    views = base.filter(is_view).join(per_page, on=["_run", "_page"], how="left", maintain_order="left")
    if per_id is not None:
        views = views.join(per_id, on=["_run", S.PAGE_VIEW_KEY], how="left", maintain_order="left")
        last_beat = pl.max_horizontal(last_beat, pl.col("_id_last_beat_us"))
    # (A heartbeat of its id sent before the page view, by a skewed clock: no time after it.)
    to_last_beat = ((last_beat - micros) / 1e6).clip(lower_bound=0.0)
    views = views.select(
        *key,
        page.alias("page_view_in_session"),
        pl.col(S.URL).alias("page_url"),
        pl.col(S.REFERRER).alias("page_referrer"),
        ts,
        pl.coalesce(to_next, to_last_beat).round(6).alias("time_on_page_s"),
        (engaged_us / 1e6).round(6).alias("engaged_time_s"),
        (page == 1).alias("is_landing"),
        (~same_next).alias("is_exit"),
    )
    names = sessions.collect_schema().names()
    carried = [c for c in _PAGEVIEW_SESSION_COLUMNS if c in names]
    table = sessions.select(*key, *carried).join(views, on=key, how="inner", maintain_order="left_right")
    return table.select(
        c for c in PAGEVIEW_COLUMN_NAMES if c in carried or c not in _PAGEVIEW_SESSION_COLUMNS
    )


#: The session columns the user table takes from a user's first and last session.
TOUCH_COLUMNS = S.TOUCH_COLUMNS
#: The session columns :func:`summarize_users` reads (besides the counts and ``--agg`` columns).
USER_TABLE_INPUTS = (
    S.USER,
    "session_number",
    "session_start",
    "session_end",
    "event_count",
    "pageview_count",
    *TOUCH_COLUMNS,
    "country",
    "engaged_time_s",
    S.STITCHED_USER_ID,
)


def summarize_users(
    sessions: pl.LazyFrame, *, counts: Sequence[str] = (), aggregates: Sequence[S.Aggregate] = ()
) -> pl.LazyFrame:
    """One row per user from the session table (every session of each user it holds).

    ``first_seen``/``last_seen`` are the start of the user's first session and the end of the last;
    ``sessions``, ``events`` and ``page_views`` add up the sessions; ``first_<column>`` comes from the
    first session (by ``session_number``) and ``last_<column>`` from the last, for the columns of
    :data:`TOUCH_COLUMNS`; ``country`` is the last session's; ``engaged_time_s`` adds up the sessions';
    ``stitched_user_id`` (identity stitching) is the user's. A user depends only on their own sessions,
    so the table of a partition of users is that partition's rows. Columns missing from the session
    table (``--drop-columns``) are missing here too. Sorted by user id.

    Then the ``counts`` (``--count-events``) and ``aggregates`` (``--agg``) columns, rolled up from the
    sessions' (:func:`user_rollup`).
    """
    names = sessions.collect_schema().names()
    rollups = [
        *(pl.col(c).sum().cast(pl.UInt64) for c in counts if c in names),
        *(user_rollup(a) for a in aggregates if a.name in names),
    ]
    touch = [c for c in TOUCH_COLUMNS if c in names]
    ordered = sessions.sort(S.USER, "session_number")
    return ordered.group_by(S.USER, maintain_order=True).agg(
        pl.col("session_start").min().alias("first_seen"),
        pl.col("session_end").max().alias("last_seen"),
        pl.len().cast(pl.UInt32).alias("sessions"),
        pl.col("event_count").sum().cast(pl.UInt64).alias("events"),
        pl.col("pageview_count").sum().cast(pl.UInt64).alias("page_views"),
        *(pl.col(c).first().alias(f"first_{c}") for c in touch),
        *(pl.col(c).last().alias(f"last_{c}") for c in touch),
        *([pl.col("country").last()] if "country" in names else []),
        *([pl.col("engaged_time_s").sum().round(6)] if "engaged_time_s" in names else []),
        *([pl.col(S.STITCHED_USER_ID).last()] if S.STITCHED_USER_ID in names else []),
        *(rollup for rollup in rollups if rollup is not None),
    )


def user_rollup(aggregate: S.Aggregate) -> pl.Expr | None:
    """A user's value of a session column of ``--agg`` (or ``--count-events``), from their sessions in
    order: counts and sums add up (a sum stays null when every session's is), ``min`` and ``max`` are the
    smallest and largest, ``first`` the first session's and ``last`` the last's. None for ``mean`` and
    ``n_unique``, which do not add up from sessions: the user table leaves them out (docs/metrics.md)."""
    column = pl.col(aggregate.name)
    match aggregate.function:
        case "count":
            return column.sum().cast(pl.UInt64)
        case "sum":
            return pl.when(column.count() > 0).then(scaled_sum(column)).alias(aggregate.name)
        case "min":
            return column.min()
        case "max":
            return column.max()
        case "first":
            return column.first()
        case "last":
            return column.last()
    return None
