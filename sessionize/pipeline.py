"""The public entry points: :func:`sessionize` for frames and :func:`run` for files.

``run`` is what ``sessionize run`` calls, with the same option names as keywords.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from sessionize import buckets as buckets_module
from sessionize import geo, incremental, io
from sessionize import report as report_module
from sessionize import schema as S
from sessionize.accesslog import (
    DEFAULT_ASSET_PATTERN,
    DEFAULT_VISITOR_KEY,
    check_asset_pattern,
    check_visitor_key,
)
from sessionize.attribution import (
    CAMPAIGN,
    RefererDatabase,
    add_campaign_key,
    enrich_attribution,
    load_referers,
    normalize_internal_domains,
)
from sessionize.core import ROBOTS_TXT, assign_sessions, summarize_sessions
from sessionize.errors import SessionizeWarning, UsageError
from sessionize.geo import GeoDatabase, GeoDatabaseInfo, enrich_geo
from sessionize.normalize import (
    OnInvalid,
    TimeUnit,
    check_events,
    check_time_unit,
    check_timezone,
    prepare_events,
)
from sessionize.privacy import ANONYMIZE_MODES, AnonymizeIp, anonymize_ips, read_secret
from sessionize.privacy import hash_user_ids as hash_user_ids_of
from sessionize.useragent import enrich_user_agent

SESSION_COLUMN_NAMES: tuple[str, ...] = tuple(c.name for c in S.SESSION_COLUMNS)
#: Where ``run`` sessionizes: this process, or a Dask cluster (``pip install 'sessionize[dask]'``).
ENGINES = ("local", "dask")
#: Events later than this after the run's start are invalid unless --valid-until says otherwise.
DEFAULT_FUTURE_LIMIT = timedelta(days=1)


@dataclass(frozen=True)
class SessionRules:
    """The opt-in session rules besides the timeout (see :func:`sessionize.core.assign_sessions`)."""

    max_session_length: timedelta | None = None
    split_on_campaign: bool = False
    split_at_midnight: bool = False
    #: Time zone of ``split_at_midnight``.
    timezone: str = "UTC"

    @classmethod
    def of(
        cls,
        *,
        max_session_length: str | timedelta | None,
        split_on_campaign: bool,
        split_at_midnight: bool,
        timezone: str | None,
    ) -> SessionRules:
        """Validated rules from the option values."""
        return cls(
            max_session_length=None
            if max_session_length is None
            else S.parse_duration(max_session_length, option="--max-session-length"),
            split_on_campaign=split_on_campaign,
            split_at_midnight=split_at_midnight,
            timezone=check_timezone(timezone),
        )


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
) -> pl.LazyFrame:
    """The session table of a canonical events frame (see :func:`sessionize.normalize.prepare_events`).

    ``keep_geo_status`` keeps the per-session lookup outcome (``_geo_status``) for the summary.
    ``anonymize_ip`` truncates the ``ip`` column after the geo lookup, or before it. ``referers`` is
    the referer database for attribution (default: the packaged one). ``exclude_bots`` leaves out
    the sessions of crawlers and scripts.
    """
    sessions = _sessions_before_geo(
        events,
        timeout=timeout,
        anonymize_ip=anonymize_ip,
        referers=referers,
        internal_domains=internal_domains,
        conversion_events=conversion_events,
        rules=rules or SessionRules(),
        exclude_bots=exclude_bots,
    )
    sessions = sessions.pipe(enrich_geo, database=geo_database)
    return _sessions_after_geo(sessions, anonymize_ip=anonymize_ip, keep_geo_status=keep_geo_status)


def _sessions_before_geo(
    events: pl.LazyFrame,
    *,
    timeout: timedelta,
    anonymize_ip: AnonymizeIp | None,
    referers: RefererDatabase | None,
    internal_domains: Sequence[str],
    conversion_events: Iterable[str],
    rules: SessionRules,
    exclude_bots: bool,
) -> pl.LazyFrame:
    """:func:`build_sessions` up to the geo lookup: sessions, attribution, user agent, bots and the
    ``before-geo`` anonymization."""
    if rules.split_on_campaign:
        events = add_campaign_key(events)
    sessions = (
        events.pipe(
            assign_sessions,
            timeout=timeout,
            max_session_length=rules.max_session_length,
            split_at_midnight=rules.split_at_midnight,
            timezone=rules.timezone,
            campaign_col=CAMPAIGN if rules.split_on_campaign else None,
            label=False,
        )
        .pipe(summarize_sessions, conversion_events=conversion_events)
        .pipe(
            enrich_attribution,
            referers=referers if referers is not None else default_referers(),
            internal_domains=internal_domains,
        )
    )
    sessions = enrich_user_agent(sessions).with_columns(pl.col("is_bot") | pl.col(ROBOTS_TXT))
    if exclude_bots:
        sessions = sessions.filter(~pl.col("is_bot"))
    if anonymize_ip == "before-geo":
        sessions = anonymize_ips(sessions)
    return sessions


def _sessions_after_geo(
    sessions: pl.LazyFrame, *, anonymize_ip: AnonymizeIp | None, keep_geo_status: bool
) -> pl.LazyFrame:
    """:func:`build_sessions` after the geo lookup: the ``after-geo`` anonymization and the columns."""
    if anonymize_ip == "after-geo":
        sessions = anonymize_ips(sessions)
    return sessions.select(*SESSION_COLUMN_NAMES, *([geo.STATUS] if keep_geo_status else []))


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
    #: Look the addresses up in a thread while the sessions are built (faster), or after them (less
    #: memory at once: the bucketed path, which keeps within a budget).
    overlap_geo: bool = True


def sessionize_partition(events: pl.DataFrame, settings: SessionSettings) -> pl.DataFrame:
    """The session table of a canonical events frame that holds every event of each of its users.

    The engine-neutral step: the in-memory path calls it once on all events, the bucketed path once
    per bucket, and a distributed engine once per partition of users; the union of the results is
    the same. Events must already be validated (:func:`sessionize.io.read_file`) and de-duplicated
    (:func:`sessionize.io.drop_duplicate_events`). The result has the session table's columns plus
    ``_geo_status`` (the IP lookup's outcome), sorted by user and session number.
    """
    before_geo = functools.partial(
        _sessions_before_geo,
        timeout=settings.timeout,
        anonymize_ip=settings.anonymize_ip,
        referers=settings.referers,
        internal_domains=settings.internal_domains,
        conversion_events=settings.conversion_events,
        rules=settings.rules,
        exclude_bots=False,
    )
    after_geo = functools.partial(
        _sessions_after_geo, anonymize_ip=settings.anonymize_ip, keep_geo_status=True
    )
    database = settings.geo_database
    if database is None or settings.anonymize_ip == "before-geo" or not settings.overlap_geo:
        # Nothing to look up, the addresses to look up are the sessions' anonymized ones, or memory
        # comes first.
        return after_geo(before_geo(events.lazy()).pipe(enrich_geo, database=database)).collect(
            engine="in-memory"
        )
    # A session's address is one of its events' addresses: the events' distinct addresses are looked up
    # in a thread of their own while Polars builds the sessions. The lookup is mostly single-threaded
    # (Python and numpy) and Polars releases the GIL, so the two overlap: on 10M events with 1M
    # addresses this step took 1.1-1.3 s less (bench/README.md).
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sessionize-geo") as pool:
        table = pool.submit(geo.geo_table, events.get_column(S.IP), database)
        sessions = before_geo(events.lazy()).collect(engine="in-memory")
        sessions = geo.join_geo(sessions, table.result(), database)
    return after_geo(sessions.lazy()).collect(engine="in-memory")


@functools.cache
def default_referers() -> RefererDatabase:
    """The packaged referer database, loaded once per process."""
    return load_referers()


def _geo_database(geoip_db: str | Path | None, *, geo_enabled: bool) -> GeoDatabase | None:
    if not geo_enabled:
        return None
    database = geo.open_database(geoip_db)
    if database is None:
        warnings.warn(geo.NO_DATABASE_HINT, SessionizeWarning, stacklevel=3)
    return database


def sessionize(
    events: pl.LazyFrame | pl.DataFrame,
    *,
    timeout: str | timedelta = S.DEFAULT_TIMEOUT,
    user_col: str | None = None,
    time_col: str | None = None,
    url_col: str | None = None,
    referrer_col: str | None = None,
    ip_col: str | None = None,
    event_col: str | None = None,
    session_col: str | None = None,
    user_agent_col: str | None = None,
    time_unit: TimeUnit | None = None,
    timezone: str | None = None,
    pageview_events: str | Iterable[str] = S.DEFAULT_PAGEVIEW_EVENTS,
    geoip_db: str | Path | None = None,
    no_geo: bool = False,
    referers: str | Path | None = None,
    internal_domains: str | Iterable[str] = (),
    conversion_events: str | Iterable[str] = (),
    max_session_length: str | timedelta | None = None,
    split_on_campaign: bool = False,
    split_at_midnight: bool = False,
    exclude_bots: bool = False,
) -> pl.LazyFrame:
    """Split a frame of events into sessions and return the session table, lazily.

    Columns are found as in the CLI (``user_id``, ``timestamp``, ``url``, ... or the ``*_col``
    names). ``geoip_db`` picks the GeoIP database (default: ``$SESSIONIZE_GEOIP_DB``, then the
    bundled DB-IP City Lite if installed); ``no_geo=True`` skips the lookup. Rows with an empty
    user id or a timestamp that does not parse raise :class:`~sessionize.errors.InvalidEventsError`;
    for a LazyFrame that check reads the rows it needs when this function is called.

    Examples
    --------
    >>> import polars as pl, sessionize
    >>> events = pl.DataFrame({
    ...     "user_id": ["u1", "u1", "u1"],
    ...     "timestamp": ["2024-05-01T10:00:00Z", "2024-05-01T10:10:00Z", "2024-05-01T12:00:00Z"],
    ...     "url": ["https://a.example/", "https://a.example/b", "https://a.example/"],
    ...     "referrer": ["https://www.google.com/", None, None],
    ... })
    >>> table = sessionize.sessionize(events).collect()
    >>> table.select("session_number", "duration_s", "traffic_source").rows()
    [(1, 600.0, 'google'), (2, 0.0, 'direct')]
    """
    timeout = S.parse_duration(timeout)
    check_time_unit(time_unit)
    check_timezone(timezone)
    frame = events.lazy()
    columns = S.resolve_columns(
        frame.collect_schema().names(),
        source="The events frame",
        user_col=user_col,
        time_col=time_col,
        url_col=url_col,
        referrer_col=referrer_col,
        ip_col=ip_col,
        event_col=event_col,
        session_col=session_col,
        user_agent_col=user_agent_col,
    )
    options = {"columns": columns, "time_unit": time_unit, "timezone": timezone}
    pageviews = S.split_list(pageview_events)
    checked = prepare_events(frame, **options, pageview_events=pageviews, keep_raw=True)  # type: ignore[arg-type]
    invalid = checked.filter(pl.col(S.USER).is_null() | pl.col(S.TIME).is_null()).collect(engine="in-memory")
    check_events(invalid, source="The events frame", columns=columns, where=lambda row: f"row index {row}")
    prepared = prepare_events(frame, **options, pageview_events=pageviews)  # type: ignore[arg-type]
    return build_sessions(
        prepared,
        timeout=timeout,
        geo_database=_geo_database(geoip_db, geo_enabled=not no_geo),
        referers=None if referers is None else load_referers(referers),
        internal_domains=normalize_internal_domains(internal_domains),
        conversion_events=S.split_list(conversion_events),
        rules=SessionRules.of(
            max_session_length=max_session_length,
            split_on_campaign=split_on_campaign,
            split_at_midnight=split_at_midnight,
            timezone=timezone,
        ),
        exclude_bots=exclude_bots,
    )


def _peak_memory_mib() -> float:
    try:
        import resource
    except ImportError:  # Windows
        return 0.0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


@dataclass
class RunResult:
    """What :func:`run` did: the session table and the figures of the summary."""

    sessions: pl.DataFrame
    files: list[str]
    #: Events that were sessionized.
    events_read: int
    output: str | None
    output_format: str | None
    elapsed_s: float
    timeout: timedelta = field(default=S.DEFAULT_TIMEOUT)
    #: The GeoIP database used, or None.
    geo_database: GeoDatabaseInfo | None = None
    #: Sessions per IP lookup outcome: resolved, not_found, private, invalid, missing.
    geo_counts: dict[str, int] = field(default_factory=dict)
    #: Data rows in the inputs: ``rows_read == events_read + rejected + duplicates_removed``
    #: (``events_read`` includes the events of bot sessions left out with ``exclude_bots``).
    rows_read: int = 0
    rejected: int = 0
    duplicates_removed: int = 0
    #: Sessions of crawlers and scripts; those left out with ``exclude_bots``, and their events.
    bot_sessions: int = 0
    bot_sessions_excluded: int = 0
    bot_events_excluded: int = 0
    #: Peak resident memory of the process so far, in MiB (Linux and macOS; 0 elsewhere).
    peak_memory_mib: float = 0.0
    #: Where the rejected rows were written (``--rejects``), if anywhere.
    rejects_output: str | None = None
    #: The rejected rows (all original columns as text, ``source_file``, ``source_row``, ``reject_reason``).
    rejects: pl.DataFrame | None = None

    session_count: int = 0
    user_count: int = 0
    median_duration_s: float | None = None
    mean_duration_s: float | None = None
    #: Users' hash buckets the run went through: 1 means all in memory (see ``memory_limit``).
    buckets: int = 1
    #: The memory budget of the run, in bytes.
    memory_limit: int = 0
    #: Whether ``buckets`` was given rather than chosen from the budget.
    buckets_forced: bool = False
    #: Whether ``sessions`` holds every session. The bucketed path keeps only the first rows when
    #: the table went to ``output`` (read the output for the rest).
    sessions_complete: bool = True

    #: What an incremental run (``state``) did: files skipped, late events, partitions written, ...
    incremental: incremental.IncrementalOutcome | None = None
    #: ``local`` or ``dask``; for Dask, the scheduler's address and the partitions of users.
    engine: str = "local"
    scheduler: str | None = None

    @property
    def path_taken(self) -> str:
        """``in memory``, ``N buckets`` or ``dask: N partitions``."""
        if self.engine == "dask":
            return f"dask: {self.buckets} partitions"
        return "in memory" if self.buckets == 1 else f"{self.buckets} buckets"


def _timestamp_option(value: str | datetime | None, option: str) -> datetime | None:
    if value is None or isinstance(value, datetime):
        parsed = value
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


def _anonymize_mode(value: bool | str | None) -> AnonymizeIp | None:
    if value is None or value is False:
        return None
    if value is True:
        return "after-geo"
    if value not in ANONYMIZE_MODES:
        raise UsageError(f"--anonymize-ip={value} is not one of {', '.join(ANONYMIZE_MODES)}.")
    return value


def _drop_columns(value: str | Iterable[str] | None) -> tuple[str, ...]:
    names = S.split_list(value or ())
    unknown = [name for name in names if name not in SESSION_COLUMN_NAMES]
    if unknown:
        raise UsageError(
            f"--drop-columns: {', '.join(unknown)} not in the session table. Its columns are: "
            f"{', '.join(SESSION_COLUMN_NAMES)}."
        )
    return names


def run(
    inputs: Sequence[str | Path],
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
    time_unit: TimeUnit | None = None,
    timezone: str | None = None,
    pageview_events: str | Iterable[str] = S.DEFAULT_PAGEVIEW_EVENTS,
    encoding: str = "utf-8",
    on_invalid: OnInvalid = "fail",
    rejects: str | Path | None = None,
    valid_from: str | datetime | None = None,
    valid_until: str | datetime | None = None,
    dedupe: bool = False,
    geoip_db: str | Path | None = None,
    no_geo: bool = False,
    anonymize_ip: bool | str | None = None,
    hash_user_ids: str | None = None,
    drop_columns: str | Iterable[str] | None = None,
    referers: str | Path | None = None,
    internal_domains: str | Iterable[str] = (),
    conversion_events: str | Iterable[str] = (),
    max_session_length: str | timedelta | None = None,
    split_on_campaign: bool = False,
    split_at_midnight: bool = False,
    exclude_bots: bool = False,
    visitor_key: str = DEFAULT_VISITOR_KEY,
    asset_pattern: str = DEFAULT_ASSET_PATTERN,
    report: str | Path | None = None,
    memory_limit: str | int | None = None,
    buckets: int | None = None,
    temp_dir: str | Path | None = None,
    state: str | Path | None = None,
    output_dir: str | Path | None = None,
    lateness: str | timedelta = incremental.DEFAULT_LATENESS,
    reprocess: bool = False,
    engine: str = "local",
    scheduler: str | None = None,
    partitions: int | None = None,
    progress: Callable[[RunProgress], None] | None = None,
) -> RunResult:
    """Read event files, sessionize them and write the session table to ``output``.

    The Python face of ``sessionize run``: same options, same result. ``inputs`` are files,
    directories, glob patterns or ``-`` (CSV on stdin). ``output`` is a path (format by extension or
    ``format``), ``-`` for stdout, or ``None`` to only return the table. Nothing is written when
    an error is raised. ``valid_until`` defaults to one day after now. ``report`` is a path for the
    session insights page of the table (see :func:`sessionize.report.write_report`), written after it.

    When the inputs hold more events than fit in ``memory_limit`` (``2GiB``, ``512M``, bytes;
    default: half the memory available), users are split into hash buckets spilled to ``temp_dir``
    and sessionized a bucket at a time (``buckets`` forces a number; 1 means in memory). The
    result is the same, sorted by user within each bucket; ``RunResult.sessions`` then holds only
    the first rows when the table went to ``output``. ``progress`` is called with a
    :class:`RunProgress` as files are read and buckets done.

    With ``state`` (a directory) and ``output_dir``, the run is incremental (for cron): only
    inputs not yet in the state are read, sessions that continue across runs are continued, and
    the sessions are written to Hive partitions ``output_dir/session_date=YYYY-MM-DD/`` with an
    ``is_final`` column (see :mod:`sessionize.incremental`). Events more than ``lateness`` older
    than their user's last processed event are rejected as ``late``; ``reprocess`` reads inputs
    the state already holds again.

    ``engine="dask"`` runs the same per-partition step on a Dask cluster (``scheduler``: its
    address; default: a local cluster), with ``partitions`` partitions of users, and writes the
    table as Parquet partitions in the directory ``output`` (see :mod:`sessionize.dask_engine`).

    Examples
    --------
    ``result = sessionize.run(["sample_data/events.csv"], output="sessions.parquet")`` writes the
    table and returns it with the summary figures (``result.session_count``, ...).
    """
    started = time.perf_counter()
    timeout = S.parse_duration(timeout)
    if on_invalid not in ("fail", "skip"):
        raise UsageError(f"--on-invalid {on_invalid!r} is not one of fail, skip.")
    if rejects is not None and on_invalid != "skip":
        raise UsageError("--rejects needs --on-invalid skip: with the default (fail) no row is set aside.")
    options = io.ReadOptions(
        user_col=user_col,
        time_col=time_col,
        url_col=url_col,
        referrer_col=referrer_col,
        ip_col=ip_col,
        event_col=event_col,
        session_col=session_col,
        user_agent_col=user_agent_col,
        event_id_col=event_id_col,
        time_unit=check_time_unit(time_unit),
        timezone=check_timezone(timezone),
        pageview_events=S.split_list(pageview_events),
        encoding=encoding,
        on_invalid=on_invalid,
        visitor_key=check_visitor_key(visitor_key),
        asset_pattern=check_asset_pattern(asset_pattern),
        valid_from=_timestamp_option(valid_from, "--valid-from"),
        valid_until=_timestamp_option(valid_until, "--valid-until")
        or datetime.now(UTC) + DEFAULT_FUTURE_LIMIT,
    )
    anonymize = _anonymize_mode(anonymize_ip)
    dropped = _drop_columns(drop_columns)
    secret = None if hash_user_ids is None else read_secret(hash_user_ids)
    options = replace(options, anonymize_ip=anonymize is not None, user_id_secret=secret)
    rules = SessionRules.of(
        max_session_length=max_session_length,
        split_on_campaign=split_on_campaign,
        split_at_midnight=split_at_midnight,
        timezone=timezone,
    )
    referer_database = None if referers is None else load_referers(referers)
    database = _geo_database(geoip_db, geo_enabled=not no_geo)
    target = None if output is None else str(output)
    rejects_target = None if rejects is None else str(rejects)
    settings = SessionSettings(
        timeout=timeout,
        rules=rules,
        geo_database=database,
        anonymize_ip=anonymize,
        referers=referer_database,
        internal_domains=normalize_internal_domains(internal_domains),
        conversion_events=S.split_list(conversion_events),
    )
    if engine not in ENGINES:
        raise UsageError(f"--engine {engine!r} is not one of {', '.join(ENGINES)}.")
    if engine == "dask":
        return _run_dask(
            inputs,
            options,
            started=started,
            input_format=input_format,
            output=target,
            format=format,
            rejects_target=rejects_target,
            report=report,
            scheduler=scheduler,
            partitions=partitions,
            dedupe=dedupe,
            secret=secret,
            exclude_bots=exclude_bots,
            dropped=dropped,
            database=database,
            progress=progress,
            unsupported={
                "--state": state,
                "--output-dir": output_dir,
                "--memory-limit": memory_limit,
                "--buckets": buckets,
                "--temp-dir": temp_dir,
            },
            settings=settings,
        )
    if scheduler is not None or partitions is not None:
        raise UsageError("--scheduler and --partitions go with --engine dask.")
    files = io.resolve_inputs(inputs, input_format=input_format)
    # Fail on a bad output before spending time on the input.
    if target is not None:
        io.output_format_of(target, format)
        io.check_output(target, files)
    if rejects_target is not None:
        io.check_output(rejects_target, files)
        if target is not None and os.path.realpath(rejects_target) == os.path.realpath(target):
            raise UsageError("--rejects and -o name the same file: give the rejected rows their own file.")
    if report is not None:
        report_module.check_report_output(report, [source.path for source in files])
        if target is not None and os.path.realpath(report) == os.path.realpath(target):
            raise UsageError("--report and -o name the same file: give the report its own file (.html).")
    if state is not None or output_dir is not None:
        return _run_incremental(
            files,
            options,
            started=started,
            state=state,
            output_dir=output_dir,
            output=target,
            report=report,
            rejects_target=rejects_target,
            format=format,
            lateness=lateness,
            reprocess=reprocess,
            dedupe=dedupe,
            secret=secret,
            exclude_bots=exclude_bots,
            dropped=dropped,
            database=database,
            settings=settings,
            fingerprint=incremental.settings_fingerprint(
                timeout=timeout,
                lateness=S.parse_duration(lateness, option="--lateness"),
                timezone=rules.timezone,
                max_session_length=rules.max_session_length,
                split_on_campaign=rules.split_on_campaign,
                split_at_midnight=rules.split_at_midnight,
                pageview_events=",".join(options.pageview_events),
                conversion_events=",".join(S.split_list(conversion_events)),
                internal_domains=",".join(normalize_internal_domains(internal_domains)),
                hash_user_ids=None if secret is None else hashlib.sha256(secret).hexdigest()[:16],
                anonymize_ip=anonymize,
                dedupe=dedupe,
                exclude_bots=exclude_bots,
                drop_columns=",".join(dropped),
            ),
        )
    limit = (
        buckets_module.default_memory_limit()
        if memory_limit is None
        else buckets_module.parse_memory(memory_limit)
    )
    estimated = sum(io.estimate_rows(source) for source in files) if buckets is None else 0
    chosen = buckets_module.plan(
        estimated,
        memory_limit=limit,
        buckets=buckets,
        # The database is mapped twice (the reader's map and the tree walk's), and pages of both become
        # resident as lookups read them.
        resident_bytes=0 if database is None else 2 * database.info.size_bytes,
    )
    notify = progress or (lambda event: None)
    notify(RunProgress("read", 0, len(files), 0))
    if chosen.in_memory:
        outcome = _run_in_memory(
            files,
            options,
            settings,
            dedupe=dedupe,
            secret=secret,
            notify=notify,
            exclude_bots=exclude_bots,
            dropped=dropped,
        )
    else:
        outcome = _run_in_buckets(
            files,
            options,
            settings,
            chosen,
            dedupe=dedupe,
            secret=secret,
            notify=notify,
            target=target,
            format=format,
            dropped=dropped,
            exclude_bots=exclude_bots,
            temp_dir=temp_dir,
            report=report,
        )
    sessions = outcome.sessions
    written = outcome.written
    if target is not None and written is None:
        written = io.write_sessions(sessions, target, format=format)
    if rejects_target is not None:
        rejected = outcome.rejects if outcome.rejects is not None else io.empty_rejects()
        io.write_sessions(
            rejected, rejects_target, format=io.rejects_format(rejects_target, written or format)
        )
    if report is not None:
        try:
            report_module.write_report(
                outcome.report_table if outcome.report_table is not None else sessions,
                report,
                sources=[source.path for source in files],
            )
        finally:
            outcome.cleanup()
    return RunResult(
        peak_memory_mib=_peak_memory_mib(),
        sessions=sessions,
        sessions_complete=outcome.complete,
        files=[source.path for source in files],
        **_counts(outcome, exclude_bots=exclude_bots),
        rejects_output=rejects_target,
        output=target,
        output_format=written,
        elapsed_s=time.perf_counter() - started,
        timeout=timeout,
        geo_database=None if database is None else database.info,
        buckets=chosen.buckets,
        memory_limit=limit,
        buckets_forced=buckets is not None,
    )


def _counts(outcome: Any, *, exclude_bots: bool) -> dict[str, Any]:
    """The summary figures of ``RunResult`` from what a path returned (``_Outcome``, ``DaskOutcome``
    or ``IncrementalOutcome``: the same names)."""
    counts = {
        "rows_read": outcome.rows_read,
        "events_read": outcome.events,
        "rejected": 0 if outcome.rejects is None else outcome.rejects.height,
        "duplicates_removed": outcome.duplicates_removed,
        "rejects": outcome.rejects,
    }
    if hasattr(outcome, "geo_counts"):
        counts.update(
            geo_counts=outcome.geo_counts,
            bot_sessions=outcome.bot_sessions,
            bot_sessions_excluded=outcome.bot_sessions if exclude_bots else 0,
            bot_events_excluded=outcome.bot_events if exclude_bots else 0,
            session_count=outcome.session_count,
            user_count=outcome.user_count,
            median_duration_s=outcome.median_duration_s,
            mean_duration_s=outcome.mean_duration_s,
        )
    return counts


@dataclass(frozen=True)
class RunProgress:
    """What ``run`` reports to its ``progress`` callback: a stage, its steps done and total, rows."""

    #: ``read`` (input files: steps are files), ``buckets`` (steps are buckets sessionized).
    stage: str
    done: int
    total: int
    #: Rows read so far (``read``), or events sessionized so far (``buckets``).
    rows: int


@dataclass
class _Outcome:
    """What one path of :func:`run` produced, before the rejects, report and result."""

    sessions: pl.DataFrame
    rejects: pl.DataFrame | None
    rows_read: int
    events: int
    duplicates_removed: int
    geo_counts: dict[str, int]
    bot_sessions: int
    bot_events: int
    session_count: int
    user_count: int
    median_duration_s: float | None
    mean_duration_s: float | None
    complete: bool = True
    #: The format written, when the path wrote the output itself.
    written: str | None = None
    #: What the report reads when it is not ``sessions``; ``cleanup`` removes its files.
    report_table: pl.LazyFrame | None = None
    cleanup: Callable[[], None] = lambda: None


@dataclass
class _Tally:
    """The summary figures of a session table, added up part by part."""

    sessions: int = 0
    users: int = 0
    bot_sessions: int = 0
    bot_events: int = 0
    geo_counts: dict[str, int] = field(default_factory=dict)
    durations: list[pl.Series] = field(default_factory=list)

    def add(self, table: pl.DataFrame, *, exclude_bots: bool, dropped: Sequence[str]) -> pl.DataFrame:
        """Count a part with ``_geo_status`` (every session, bots too) and return its output rows.

        The sessions of each user must be next to each other, as :func:`sessionize_partition` gives them.
        """
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
        self.durations.append(table.get_column("duration_s"))
        return table.drop(geo.STATUS, *dropped)

    def outcome(self, **figures: Any) -> _Outcome:
        durations = pl.concat(self.durations) if self.durations else pl.Series([], dtype=pl.Float64)
        return _Outcome(
            geo_counts=self.geo_counts,
            bot_sessions=self.bot_sessions,
            bot_events=self.bot_events,
            session_count=self.sessions,
            user_count=self.users,
            median_duration_s=_float(durations.median()),
            mean_duration_s=_float(durations.mean()),
            **figures,
        )


def _run_in_memory(
    files: list[io.InputFile],
    options: io.ReadOptions,
    settings: SessionSettings,
    *,
    dedupe: bool,
    secret: bytes | None,
    notify: Callable[[RunProgress], None],
    exclude_bots: bool,
    dropped: Sequence[str],
) -> _Outcome:
    reads: list[io.FileRead] = []
    rows = 0
    for number, source in enumerate(files, start=1):
        reads.append(io.read_file(source, options))
        rows += reads[-1].rows
        notify(RunProgress("read", number, len(files), rows))
    events = pl.concat([r.events for r in reads], how="vertical", rechunk=False)
    rejected = [r.rejects for r in reads if r.rejects is not None]
    del reads
    before = events.height
    events = io.drop_duplicate_events(events, dedupe=dedupe)
    if secret is not None:
        events = hash_user_ids_of(events.lazy(), secret=secret).collect(engine="in-memory")
    tally = _Tally()
    sessions = tally.add(sessionize_partition(events, settings), exclude_bots=exclude_bots, dropped=dropped)
    return tally.outcome(
        sessions=sessions,
        rejects=pl.concat(rejected, how="diagonal_relaxed") if rejected else None,
        rows_read=rows,
        events=events.height,
        duplicates_removed=before - events.height,
    )


#: Sessions kept for the preview and ``RunResult.sessions`` when the bucketed path wrote them out.
PREVIEW_ROWS = 100


def _run_in_buckets(
    files: list[io.InputFile],
    options: io.ReadOptions,
    settings: SessionSettings,
    chosen: buckets_module.Plan,
    *,
    dedupe: bool,
    secret: bytes | None,
    notify: Callable[[RunProgress], None],
    exclude_bots: bool,
    dropped: Sequence[str],
    target: str | None,
    format: str | None,
    temp_dir: str | Path | None,
    report: str | Path | None,
) -> _Outcome:
    """Spill the events by bucket of users, then sessionize one bucket at a time.

    The temporary directory is removed when this returns or raises (Ctrl-C included), except for
    the report's parts, which the caller's ``cleanup`` removes once the report is written.
    """
    if temp_dir is not None and not os.path.isdir(temp_dir):
        raise UsageError(f"--temp-dir {temp_dir}: no such directory.")
    work = Path(tempfile.mkdtemp(prefix="sessionize-buckets-", dir=temp_dir))
    keep_work = False
    sink = None if target is None else io.SessionSink(target, format=format)
    try:
        spill = io.BucketSpill(work, chosen.buckets)
        bucket = buckets_module.bucket_of(chosen.buckets)
        rows = duplicates = events = 0
        rejected: list[pl.DataFrame] = []
        for number, source in enumerate(files, start=1):
            for part in io.iter_reads(source, options, chosen.chunk_rows, scratch=work):
                rows += part.rows
                if part.rejects is not None:
                    rejected.append(part.rejects)
                spill.add(part.events, bucket)
                del part
                notify(RunProgress("read", number - 1, len(files), rows))
            notify(RunProgress("read", number, len(files), rows))
        # Within a budget, the geo lookup waits for the sessions instead of running beside them.
        sequential = replace(settings, overlap_geo=False)
        tally = _Tally()
        kept: list[pl.DataFrame] = []
        report_parts = work / "report"
        if report is not None:
            report_parts.mkdir()
        for index in range(chosen.buckets):
            batch = spill.read(index, S.EVENT_SCHEMA)
            before = batch.height
            batch = io.drop_duplicate_events(batch, dedupe=dedupe)
            duplicates += before - batch.height
            events += batch.height
            if secret is not None:
                batch = hash_user_ids_of(batch.lazy(), secret=secret).collect(engine="in-memory")
            table = tally.add(
                sessionize_partition(batch, sequential), exclude_bots=exclude_bots, dropped=dropped
            )
            del batch
            spill.remove(index)
            if report is not None and table.height:
                table.write_parquet(report_parts / f"{index:05d}.parquet", compression="lz4")
            if sink is None:
                kept.append(table)
            else:
                sink.write(table)
                if sum(part.height for part in kept) < PREVIEW_ROWS:
                    kept.append(table.head(PREVIEW_ROWS))
            notify(RunProgress("buckets", index + 1, chosen.buckets, events))
        empty = pl.DataFrame(schema={c.name: c.dtype for c in S.SESSION_COLUMNS})
        empty = empty.drop(*dropped)
        sessions = pl.concat(kept, how="vertical") if kept else empty
        if sink is not None:
            sink.commit(empty)
            sessions = sessions.head(PREVIEW_ROWS)
        report_table = None
        if report is not None:
            keep_work = True
            report_table = (
                pl.scan_parquet(report_parts / "*.parquet") if any(report_parts.iterdir()) else empty.lazy()
            )
        return tally.outcome(
            sessions=sessions,
            rejects=pl.concat(rejected, how="diagonal_relaxed") if rejected else None,
            rows_read=rows,
            events=events,
            duplicates_removed=duplicates,
            complete=sink is None,
            written=None if sink is None else sink.format,
            report_table=report_table,
            cleanup=lambda: shutil.rmtree(work, ignore_errors=True),
        )
    except BaseException:
        if sink is not None:
            sink.abort()
        raise
    finally:
        if not keep_work:
            shutil.rmtree(work, ignore_errors=True)


def _float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


#: Columns an incremental run needs in its partitions to replace sessions (not for --drop-columns).
_INCREMENTAL_KEYS = (S.USER, S.SESSION_ID, "session_start", "session_end", "session_number", "is_bot")


def _run_incremental(
    files: list[io.InputFile],
    options: io.ReadOptions,
    *,
    started: float,
    state: str | Path | None,
    output_dir: str | Path | None,
    output: str | None,
    report: str | Path | None,
    rejects_target: str | None,
    format: str | None,
    lateness: str | timedelta,
    reprocess: bool,
    dedupe: bool,
    secret: bytes | None,
    exclude_bots: bool,
    dropped: Sequence[str],
    database: GeoDatabase | None,
    settings: SessionSettings,
    fingerprint: dict[str, str],
) -> RunResult:
    if state is None or output_dir is None:
        raise UsageError(
            "--state and --output-dir go together: the state says what was processed, the output "
            "directory holds the session partitions."
        )
    if output is not None:
        raise UsageError("With --state the sessions go to --output-dir: leave out -o.")
    if report is not None:
        raise UsageError(
            "--report is not available with --state: run sessionize report OUT_DIR after the run."
        )
    kept_out = [name for name in dropped if name in _INCREMENTAL_KEYS]
    if kept_out:
        raise UsageError(
            f"--drop-columns cannot drop {', '.join(kept_out)} with --state: runs replace sessions by them."
        )
    outcome = incremental.run_incremental(
        files,
        options,
        lambda events: sessionize_partition(events, settings),
        state_dir=state,
        output_dir=output_dir,
        timeout=settings.timeout,
        lateness=S.parse_duration(lateness, option="--lateness"),
        timezone=settings.rules.timezone,
        reprocess=reprocess,
        dedupe=dedupe,
        secret_hash=None
        if secret is None
        else lambda frame: hash_user_ids_of(frame.lazy(), secret=secret).collect(engine="in-memory"),
        exclude_bots=exclude_bots,
        dropped=dropped,
        settings=fingerprint,
    )
    if rejects_target is not None:
        rejected = outcome.rejects if outcome.rejects is not None else io.empty_rejects()
        io.write_sessions(rejected, rejects_target, format=io.rejects_format(rejects_target, format))
    sessions = outcome.sessions
    durations = sessions.get_column("duration_s") if sessions.height else pl.Series([], dtype=pl.Float64)
    return RunResult(
        peak_memory_mib=_peak_memory_mib(),
        sessions=sessions,
        files=outcome.files_processed,
        **_counts(outcome, exclude_bots=exclude_bots),
        rejects_output=rejects_target,
        output=str(output_dir),
        output_format="parquet",
        elapsed_s=time.perf_counter() - started,
        timeout=settings.timeout,
        geo_database=None if database is None else database.info,
        session_count=sessions.height,
        user_count=sessions.get_column(S.USER).n_unique() if sessions.height else 0,
        median_duration_s=_float(durations.median()),
        mean_duration_s=_float(durations.mean()),
        incremental=outcome,
    )


def _run_dask(
    inputs: Sequence[str | Path],
    options: io.ReadOptions,
    *,
    started: float,
    input_format: str | None,
    output: str | None,
    format: str | None,
    rejects_target: str | None,
    report: str | Path | None,
    scheduler: str | None,
    partitions: int | None,
    dedupe: bool,
    secret: bytes | None,
    exclude_bots: bool,
    dropped: Sequence[str],
    database: GeoDatabase | None,
    progress: Callable[[RunProgress], None] | None,
    unsupported: dict[str, object],
    settings: SessionSettings,
) -> RunResult:
    """``run(engine="dask")``: the same sessions from a Dask cluster (see :mod:`sessionize.dask_engine`)."""
    from sessionize import dask_engine

    given = [name for name, value in unsupported.items() if value is not None]
    if given:
        raise UsageError(f"{', '.join(given)} cannot be used with --engine dask.")
    if output == io.STDIN:
        raise UsageError(
            "--engine dask writes a directory of Parquet partitions: give one with -o DIR (or a URL)."
        )
    if format not in (None, "parquet"):
        raise UsageError("--engine dask writes Parquet partitions: leave out --format.")
    dask_engine.require_dask()
    files = dask_engine.resolve_inputs(inputs, input_format=input_format)
    if output is not None:
        dask_engine.check_output_dir(output)
    if rejects_target is not None:
        io.check_output(rejects_target, files)
    if report is not None:
        report_module.check_report_output(report, [source.path for source in files])
    outcome = dask_engine.run_dask(
        files,
        options,
        settings,
        output_dir=output,
        dedupe=dedupe,
        secret=secret,
        exclude_bots=exclude_bots,
        dropped=dropped,
        scheduler=scheduler,
        partitions=partitions,
        progress=progress,
    )
    if rejects_target is not None:
        rejected = outcome.rejects if outcome.rejects is not None else io.empty_rejects()
        io.write_sessions(rejected, rejects_target, format=io.rejects_format(rejects_target, "parquet"))
    if report is not None:
        table = (
            outcome.sessions
            if outcome.sessions_complete or output is None
            else report_module.read_session_tables([output])
        )
        report_module.write_report(table, report, sources=[source.path for source in files])
    return RunResult(
        peak_memory_mib=_peak_memory_mib(),
        sessions=outcome.sessions,
        sessions_complete=outcome.sessions_complete,
        files=outcome.files,
        **_counts(outcome, exclude_bots=exclude_bots),
        rejects_output=rejects_target,
        output=output,
        output_format=None if output is None else "parquet",
        elapsed_s=time.perf_counter() - started,
        timeout=settings.timeout,
        geo_database=None if database is None else database.info,
        buckets=outcome.partitions,
        buckets_forced=True,
        engine="dask",
        scheduler=outcome.scheduler,
    )
