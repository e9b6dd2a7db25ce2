"""The ``sessionize`` command line: parse options, call the library, report on stderr.

stdout carries data only (so ``-o -`` pipes); the summary, previews of a terminal run and errors
go to stderr. Library errors become a red panel and exit code 1 (2 for usage errors).
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from typer.core import TyperGroup

from sessionize import __version__, geo, pipeline
from sessionize import report as report_module
from sessionize import schema as S
from sessionize.config import DEFAULT_ASSET_PATTERN, RunConfig, load_toml
from sessionize.errors import SessionizeError, SessionizeWarning, UsageError

geoip_app = typer.Typer(help="Inspect the GeoIP database.", no_args_is_help=True)

ATTRIBUTION = "Default GeoIP database: " + geo.DBIP_ATTRIBUTION + "."

ANONYMIZE_DEFAULT = "--anonymize-ip=after-geo"


class _Group(TyperGroup):
    """Lets ``--anonymize-ip`` stand alone (meaning ``--anonymize-ip=after-geo``)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(
            ctx, [ANONYMIZE_DEFAULT if arg == "--anonymize-ip" else arg for arg in args]
        )


app = typer.Typer(
    name="sessionize",
    help="Turn raw web and product event logs into a session table.",
    epilog=ATTRIBUTION,
    no_args_is_help=True,
    add_completion=False,
    # Event logs hold IPs and user ids: never dump local variables in a traceback.
    pretty_exceptions_show_locals=False,
    cls=_Group,
)
err = Console(stderr=True)


class OutputFormat(StrEnum):
    parquet = "parquet"
    csv = "csv"
    ndjson = "ndjson"


class InputFormat(StrEnum):
    csv = "csv"
    tsv = "tsv"
    parquet = "parquet"
    ndjson = "ndjson"
    combined = "combined"
    common = "common"


class VisitorKeyChoice(StrEnum):
    ip_ua = "ip+ua"
    ip = "ip"


class OnInvalidChoice(StrEnum):
    fail = "fail"
    skip = "skip"


class AnonymizeChoice(StrEnum):
    after_geo = "after-geo"
    before_geo = "before-geo"


class TimeUnitChoice(StrEnum):
    s = "s"
    ms = "ms"
    us = "us"
    ns = "ns"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sessionize {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """Turn raw web and product event logs into a session table."""


app.add_typer(geoip_app, name="geoip")


def _stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def _fail(exc: BaseException, *, debug: bool) -> NoReturn:
    if debug:
        err.print_exception(show_locals=False)
    if isinstance(exc, SessionizeError):
        message, code = str(exc), exc.exit_code
    else:
        message = (
            f"Unexpected error: {type(exc).__name__}: {exc}\nRun again with --debug to see the traceback."
        )
        code = 1
    title = "Usage error" if code == 2 else "Error"
    err.print(Panel(message, title=title, title_align="left", border_style="red", expand=False))
    raise typer.Exit(code)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    return f"{minutes}m {secs:02d}s" if minutes else f"{seconds:.1f}s"


def _summary(result: pipeline.RunResult, *, report: str | None = None) -> None:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(justify="right")
    files = len(result.files)
    grid.add_row("rows read", f"{result.rows_read:,} from {files} file{'s' if files != 1 else ''}")
    if result.rejected:
        grid.add_row(
            "rejected",
            f"{result.rejected:,} ("
            + (
                f"written to {result.rejects_output}"
                if result.rejects_output
                else "keep them with --rejects PATH"
            )
            + ")",
        )
    if result.duplicates_removed:
        grid.add_row("duplicates removed", f"{result.duplicates_removed:,}")
    grid.add_row("events sessionized", f"{result.events_read:,}")
    if result.bot_sessions_excluded:
        grid.add_row(
            "bot sessions left out",
            f"{result.bot_sessions_excluded:,} ({result.bot_events_excluded:,} events)",
        )
    elif result.bot_sessions:
        grid.add_row("bot sessions", f"{result.bot_sessions:,} (--exclude-bots leaves them out)")
    grid.add_row("users", f"{result.user_count:,}")
    grid.add_row("sessions", f"{result.session_count:,}")
    grid.add_row("median duration", _duration(result.median_duration_s))
    grid.add_row("mean duration", _duration(result.mean_duration_s))
    grid.add_row("elapsed", f"{result.elapsed_s:.2f}s")
    if result.engine == "dask":
        grid.add_row("path", f"dask, {result.buckets:,} partitions of users ({result.scheduler})")
    elif result.buckets == 1:
        grid.add_row("path", "in memory")
    else:
        grid.add_row(
            "path",
            f"{result.buckets:,} buckets of users"
            + ("" if result.buckets_forced else f" (memory budget {_mib(result.memory_limit)})"),
        )
    if result.peak_memory_mib:
        grid.add_row("peak memory", f"{result.peak_memory_mib:,.0f} MiB")
    if result.geo_database is not None:
        counts = result.geo_counts
        located = counts.get(geo.RESOLVED, 0)
        unlocated = ", ".join(
            f"{counts[key]:,} {label}"
            for key, label in (
                (geo.NOT_FOUND, "not in database"),
                (geo.PRIVATE, "private/reserved"),
                (geo.INVALID, "malformed"),
                (geo.MISSING, "no IP"),
            )
            if counts.get(key)
        )
        total = f"{located:,} of {result.session_count:,} sessions"
        grid.add_row("located by IP", total + (f" (not: {unlocated})" if unlocated else ""))
    if result.incremental is not None:
        inc = result.incremental
        if inc.files_skipped:
            grid.add_row(
                "files skipped",
                f"{len(inc.files_skipped):,} already in the state (--reprocess reads them again)",
            )
        if inc.files_grown:
            grid.add_row("files grown", f"{len(inc.files_grown):,}: only their new lines were read")
        if inc.late:
            grid.add_row("late events", f"{inc.late:,} rejected (older than --lateness)")
        grid.add_row("open sessions", f"{inc.open_sessions:,} (is_final = false)")
        grid.add_row("partitions written", f"{len(inc.partitions):,}")
        grid.add_row("state", f"{inc.users_in_state:,} users, {inc.events_in_state:,} events kept")
    if result.output is not None:
        where = "stdout" if result.output == "-" else result.output
        grid.add_row("written to", f"{where} ({result.output_format})")
    if report is not None:
        grid.add_row("report", report)
    err.print(Panel(grid, title="sessionize", title_align="left", border_style="green", expand=False))


def _terminate(signum: int, frame: object) -> NoReturn:
    raise SystemExit(128 + signum)


class Engine(StrEnum):
    local = "local"
    dask = "dask"


class LogFormat(StrEnum):
    auto = "auto"
    text = "text"
    json = "json"


def _load_config(ctx: typer.Context, param: Any, value: str | None) -> str | None:
    """``--config FILE``: options of ``run`` from a TOML file, as defaults the command line overrides."""
    if value is None or ctx.resilient_parsing:
        return value
    try:
        defaults = load_toml(
            value, also=(p.name for p in ctx.command.params if p.name not in ("config", "inputs"))
        )
    except UsageError as exc:
        raise typer.BadParameter(str(exc).removeprefix("--config: ")) from None
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return value


def _log_json(result: pipeline.RunResult, *, warnings: list[str]) -> None:
    """One JSON line on stderr: what a log collector (cron, systemd, Kubernetes) keeps of the run."""
    line: dict[str, Any] = {
        "ts": datetime.now(UTC).isoformat(timespec="seconds"),
        "status": "ok",
        "files": result.files,
        "rows_read": result.rows_read,
        "rejected": result.rejected,
        "duplicates_removed": result.duplicates_removed,
        "events": result.events_read,
        "sessions": result.session_count,
        "users": result.user_count,
        "bot_sessions": result.bot_sessions,
        # Sessions per IP lookup outcome (resolved, not_found, private, invalid, missing), as the panel.
        "geo": result.geo_counts,
        "path": result.path_taken,
        "engine": result.engine,
        "output": result.output,
        "rejects_output": result.rejects_output,
        "elapsed_s": round(result.elapsed_s, 3),
        "peak_memory_mib": round(result.peak_memory_mib, 1),
        "warnings": warnings,
    }
    if result.incremental is not None:
        inc = result.incremental
        line.update(
            files=inc.files_processed,
            files_skipped=inc.files_skipped,
            files_grown=inc.files_grown,
            late=inc.late,
            open_sessions=inc.open_sessions,
            partitions=inc.partitions,
            users_in_state=inc.users_in_state,
            events_in_state=inc.events_in_state,
            watermark=None if inc.watermark is None else inc.watermark.isoformat(),
        )
    sys.stderr.write(json.dumps(line) + "\n")
    sys.stderr.flush()


def _fail_json(exc: BaseException, *, started: float) -> NoReturn:
    code = exc.exit_code if isinstance(exc, SessionizeError) else 1
    line = {
        "ts": datetime.now(UTC).isoformat(timespec="seconds"),
        "status": "error",
        "exit_code": code,
        "error": type(exc).__name__,
        "message": str(exc),
        "elapsed_s": round(time.time() - started, 3),
    }
    sys.stderr.write(json.dumps(line) + "\n")
    sys.stderr.flush()
    raise typer.Exit(code)


def _mib(size: int) -> str:
    if size >= 1 << 30:
        return f"{size / (1 << 30):,.1f}GiB"
    return f"{size / (1 << 20):,.0f}MiB" if size >= 1 << 20 else f"{size / 1024:,.0f}KiB"


@contextlib.contextmanager
def _progress(*, enabled: bool) -> Iterator[Callable[[pipeline.RunProgress], None] | None]:
    """A rich progress display on stderr (files read, buckets done, rows per second), or None
    when stderr is not a terminal or the run is --quiet."""
    if not enabled or not err.is_terminal:
        yield None
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rows]:,} rows  {task.fields[rate]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, transient=True) as display:
        tasks: dict[str, tuple[TaskID, float]] = {}

        def update(event: pipeline.RunProgress) -> None:
            label = "Reading files" if event.stage == "read" else "Sessionizing"
            if event.stage not in tasks:
                task = display.add_task(label, total=event.total, rows=0, rate="")
                tasks[event.stage] = (task, time.perf_counter())
            task, started = tasks[event.stage]
            elapsed = max(time.perf_counter() - started, 1e-9)
            display.update(
                task,
                completed=event.done,
                rows=event.rows,
                rate=f"({event.rows / elapsed:,.0f}/s)",
            )

        yield update


def _preview(result: pipeline.RunResult, rows: int = 10) -> None:
    out = Console()
    table = Table(title=f"First {min(rows, result.session_count)} of {result.session_count:,} sessions")
    shown = [
        "user_id",
        "session_number",
        "session_start",
        "duration_s",
        "pageview_count",
        "landing_page",
        "traffic_source",
    ]
    for name in shown:
        table.add_column(name, overflow="fold")
    for row in result.sessions.head(rows).select(shown).iter_rows():
        table.add_row(*("" if v is None else str(v) for v in row))
    out.print(table)
    err.print("Write the whole table with -o sessions.parquet (or .csv, .ndjson; -o - for stdout).")


@app.command("run", epilog=ATTRIBUTION)
def run(
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="Event files (.csv, .csv.gz, .tsv, .parquet, .ndjson, .jsonl), directories, glob patterns, "
            "or - for CSV on stdin.",
            show_default=False,
            metavar="INPUT",
        ),
    ],
    output: Annotated[
        str | None,
        typer.Option(
            "-o",
            "--output",
            metavar="PATH",
            help="Where to write the session table; - for stdout. Without it: a preview on a terminal, "
            "CSV on stdout otherwise.",
        ),
    ] = None,
    format: Annotated[
        OutputFormat | None,
        typer.Option("--format", help="Output format (default: from the output's extension; CSV on stdout)."),
    ] = None,
    input_format: Annotated[
        InputFormat | None,
        typer.Option("--input-format", help="Input format for every input (default: from each extension)."),
    ] = None,
    timeout: Annotated[
        str,
        typer.Option(
            "--timeout", metavar="DURATION", help="Inactivity that ends a session: 90s, 30m, 1h, 1h30m."
        ),
    ] = "30m",
    user_col: Annotated[
        str | None, typer.Option("--user-col", metavar="COLUMN", help="Column with the user id.")
    ] = None,
    time_col: Annotated[
        str | None, typer.Option("--time-col", metavar="COLUMN", help="Column with the event time.")
    ] = None,
    url_col: Annotated[
        str | None, typer.Option("--url-col", metavar="COLUMN", help="Column with the page URL.")
    ] = None,
    referrer_col: Annotated[
        str | None, typer.Option("--referrer-col", metavar="COLUMN", help="Column with the referrer URL.")
    ] = None,
    ip_col: Annotated[
        str | None, typer.Option("--ip-col", metavar="COLUMN", help="Column with the client IP address.")
    ] = None,
    event_col: Annotated[
        str | None, typer.Option("--event-col", metavar="COLUMN", help="Column with the event name.")
    ] = None,
    session_col: Annotated[
        str | None,
        typer.Option("--session-col", metavar="COLUMN", help="Column with a client-provided session id."),
    ] = None,
    user_agent_col: Annotated[
        str | None, typer.Option("--user-agent-col", metavar="COLUMN", help="Column with the user agent.")
    ] = None,
    event_id_col: Annotated[
        str | None,
        typer.Option(
            "--event-id-col",
            metavar="COLUMN",
            help="Column with an event id; events sharing one are one event.",
        ),
    ] = None,
    time_unit: Annotated[
        TimeUnitChoice | None,
        typer.Option(
            "--time-unit", help="Unit of epoch-number timestamps (default: guessed from magnitude)."
        ),
    ] = None,
    timezone: Annotated[
        str | None,
        typer.Option(
            "--timezone", metavar="TZ", help="IANA time zone of timestamps without an offset (default: UTC)."
        ),
    ] = None,
    pageview_events: Annotated[
        str,
        typer.Option(
            "--pageview-events", metavar="NAMES", help="Comma-separated event names that are page views."
        ),
    ] = ",".join(S.DEFAULT_PAGEVIEW_EVENTS),
    encoding: Annotated[
        str,
        typer.Option("--encoding", metavar="NAME", help="Encoding of CSV/TSV inputs (latin-1, cp1252, ...)."),
    ] = "utf-8",
    on_invalid: Annotated[
        OnInvalidChoice,
        typer.Option(
            "--on-invalid",
            help="Rows with an empty user id, a bad or out-of-range timestamp, or malformed CSV: fail (stop, "
            "write nothing) or skip (set aside and count).",
        ),
    ] = OnInvalidChoice.fail,
    rejects: Annotated[
        str | None,
        typer.Option(
            "--rejects", metavar="PATH", help="With --on-invalid skip: write the rejected rows here."
        ),
    ] = None,
    valid_from: Annotated[
        str | None,
        typer.Option("--valid-from", metavar="TIME", help="Events before this (ISO 8601) are invalid."),
    ] = None,
    valid_until: Annotated[
        str | None,
        typer.Option(
            "--valid-until",
            metavar="TIME",
            help="Events after this (ISO 8601) are invalid (default: now + 1 day).",
        ),
    ] = None,
    dedupe: Annotated[
        bool,
        typer.Option(
            "--dedupe", help="Drop exact duplicate events (events with an id are deduplicated by it)."
        ),
    ] = False,
    geoip_db: Annotated[
        str | None,
        typer.Option(
            "--geoip-db",
            metavar="PATH",
            help=f"MaxMind DB (.mmdb) City or Country database for city, region and country (default: "
            f"${geo.ENV_VAR}, else DB-IP City Lite if installed).",
        ),
    ] = None,
    no_geo: Annotated[
        bool, typer.Option("--no-geo", help="Skip the IP lookup; geo columns stay null.")
    ] = False,
    anonymize_ip: Annotated[
        AnonymizeChoice | None,
        typer.Option(
            "--anonymize-ip",
            help="Zero the last octet of IPv4 and the last 80 bits of IPv6 in the output; "
            "--anonymize-ip=before-geo also before the geo lookup.",
        ),
    ] = None,
    hash_user_ids: Annotated[
        str | None,
        typer.Option(
            "--hash-user-ids",
            metavar="SECRET_ENV",
            help="Replace user ids by HMAC-SHA256 with the secret in this environment variable.",
        ),
    ] = None,
    drop_columns: Annotated[
        str | None,
        typer.Option("--drop-columns", metavar="NAMES", help="Comma-separated output columns to leave out."),
    ] = None,
    referers: Annotated[
        str | None,
        typer.Option(
            "--referers",
            metavar="PATH",
            help="Snowplow referer database (referers.yml or .json) instead of the bundled copy.",
        ),
    ] = None,
    internal_domains: Annotated[
        str | None,
        typer.Option(
            "--internal-domains",
            metavar="DOMAINS",
            help="Comma-separated hosts of your own sites (and their subdomains): referrers from them are "
            "internal.",
        ),
    ] = None,
    conversion_events: Annotated[
        str | None,
        typer.Option(
            "--conversion-events",
            metavar="NAMES",
            help="Comma-separated event names that make a session engaged.",
        ),
    ] = None,
    max_session_length: Annotated[
        str | None,
        typer.Option(
            "--max-session-length",
            metavar="DURATION",
            help="Cut longer runs of activity into consecutive sessions (PostHog: 24h).",
        ),
    ] = None,
    split_on_campaign: Annotated[
        bool,
        typer.Option(
            "--split-on-campaign", help="A page view with other UTM/click-id values starts a new session."
        ),
    ] = False,
    split_at_midnight: Annotated[
        bool, typer.Option("--split-at-midnight", help="Start a new session at midnight in --timezone.")
    ] = False,
    visitor_key: Annotated[
        VisitorKeyChoice,
        typer.Option(
            "--visitor-key", help="Access logs: who a visitor is, client IP + user agent or the IP alone."
        ),
    ] = VisitorKeyChoice.ip_ua,
    asset_pattern: Annotated[
        str,
        typer.Option(
            "--asset-pattern",
            metavar="REGEX",
            help="Access logs: paths that are static assets, not page views (case-insensitive regex).",
        ),
    ] = DEFAULT_ASSET_PATTERN,
    exclude_bots: Annotated[
        bool, typer.Option("--exclude-bots", help="Leave out the sessions of crawlers and scripts (counted).")
    ] = False,
    report: Annotated[
        str | None,
        typer.Option(
            "--report",
            metavar="PATH",
            help="Also write the session insights report of the table here (one HTML file; see "
            "sessionize report).",
        ),
    ] = None,
    memory_limit: Annotated[
        str | None,
        typer.Option(
            "--memory-limit",
            metavar="SIZE",
            help="Memory budget (2GiB, 512M). Larger inputs are split into buckets of users spilled to "
            "disk and sessionized one at a time. Default: half the memory available.",
            show_default=False,
        ),
    ] = None,
    buckets: Annotated[
        int | None,
        typer.Option(
            "--buckets",
            metavar="N",
            min=1,
            help="Use exactly N buckets of users (1: all in memory) instead of deciding from --memory-limit.",
            show_default=False,
        ),
    ] = None,
    temp_dir: Annotated[
        str | None,
        typer.Option(
            "--temp-dir",
            metavar="DIR",
            help="Where bucket files go (removed at the end, also on errors and Ctrl-C). Default: $TMPDIR.",
            show_default=False,
        ),
    ] = None,
    state: Annotated[
        str | None,
        typer.Option(
            "--state",
            metavar="STATE_DIR",
            help="Incremental runs (cron): remember processed files and open sessions here, continue "
            "them on the next run. Needs --output-dir.",
            show_default=False,
        ),
    ] = None,
    output_dir: Annotated[
        str | None,
        typer.Option(
            "--output-dir",
            metavar="OUT_DIR",
            help="With --state: write sessions as Parquet partitions OUT_DIR/session_date=YYYY-MM-DD/, "
            "with is_final false for sessions that may go on.",
            show_default=False,
        ),
    ] = None,
    lateness: Annotated[
        str,
        typer.Option(
            "--lateness",
            metavar="DURATION",
            help="With --state: events up to this much older than their user's last processed event "
            "rebuild their sessions; older ones are rejected as late.",
        ),
    ] = "6h",
    reprocess: Annotated[
        bool,
        typer.Option("--reprocess", help="With --state: read inputs the state already holds again."),
    ] = False,
    engine: Annotated[
        Engine,
        typer.Option(
            "--engine",
            help="Where to sessionize: this process, or a Dask cluster (pip install 'sessionize[dask]'; "
            "-o is then a directory of Parquet partitions).",
        ),
    ] = Engine.local,
    scheduler: Annotated[
        str | None,
        typer.Option(
            "--scheduler",
            metavar="ADDRESS",
            help="With --engine dask: the scheduler (tcp://host:8786 or a scheduler file). Default: a "
            "local cluster of one worker per CPU.",
            show_default=False,
        ),
    ] = None,
    partitions: Annotated[
        int | None,
        typer.Option(
            "--partitions",
            metavar="N",
            min=1,
            help="With --engine dask: partitions of users after the shuffle (default: input partitions "
            "or workers, whichever is more).",
            show_default=False,
        ),
    ] = None,
    config: Annotated[
        str | None,
        typer.Option(
            "--config",
            metavar="FILE",
            help="Read options from a TOML file ([run] table, option names as keys); the command line wins.",
            is_eager=True,
            callback=_load_config,
            show_default=False,
        ),
    ] = None,
    log_format: Annotated[
        LogFormat,
        typer.Option(
            "--log-format",
            help="The run's summary on stderr: a text panel, or one JSON line (auto: text on a terminal, "
            "json otherwise).",
        ),
    ] = LogFormat.auto,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="No summary or warnings on stderr.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of an error.")] = False,
) -> None:
    """Split events into sessions and write one row per session."""
    started = time.time()
    # kill (SIGTERM, as cron and systemd stop jobs) unwinds like Ctrl-C: temporary files are removed.
    with contextlib.suppress(ValueError):  # only the main thread may set handlers
        signal.signal(signal.SIGTERM, _terminate)
    as_json = log_format == LogFormat.json or (log_format == LogFormat.auto and not err.is_terminal)
    target = output
    if target is None and state is None and not _stdout_is_terminal():
        # Piped: the table goes to stdout as data (an engine that cannot write one there says so).
        target = "-"
    try:
        with (
            warnings.catch_warnings(record=True) as caught,
            _progress(enabled=not quiet and not as_json) as progress,
        ):
            warnings.simplefilter("always", SessionizeWarning)
            run_config = RunConfig.from_options(
                output=target,
                format=None if format is None else format.value,
                input_format=None if input_format is None else input_format.value,
                timeout=timeout,
                user_col=user_col,
                time_col=time_col,
                url_col=url_col,
                referrer_col=referrer_col,
                ip_col=ip_col,
                event_col=event_col,
                session_col=session_col,
                user_agent_col=user_agent_col,
                event_id_col=event_id_col,
                time_unit=None if time_unit is None else time_unit.value,
                timezone=timezone,
                pageview_events=pageview_events,
                encoding=encoding,
                on_invalid=on_invalid.value,
                rejects=rejects,
                valid_from=valid_from,
                valid_until=valid_until,
                dedupe=dedupe,
                geoip_db=geoip_db,
                no_geo=no_geo,
                anonymize_ip=None if anonymize_ip is None else anonymize_ip.value,
                hash_user_ids=hash_user_ids,
                drop_columns=drop_columns,
                referers=referers,
                internal_domains=internal_domains or (),
                conversion_events=conversion_events or (),
                max_session_length=max_session_length,
                split_on_campaign=split_on_campaign,
                split_at_midnight=split_at_midnight,
                exclude_bots=exclude_bots,
                visitor_key=visitor_key.value,
                asset_pattern=asset_pattern,
                report=report,
                memory_limit=memory_limit,
                buckets=buckets,
                temp_dir=temp_dir,
                state=state,
                output_dir=output_dir,
                lateness=lateness,
                reprocess=reprocess,
                engine=engine.value,
                scheduler=scheduler,
                partitions=partitions,
            )
            result = pipeline.run(inputs, config=run_config, progress=progress)
    except (SessionizeError, Exception) as exc:
        if log_format == LogFormat.json:
            _fail_json(exc, started=started)
        _fail(exc, debug=debug)
    messages = [str(w.message) for w in caught if issubclass(w.category, SessionizeWarning)]
    if not quiet and not as_json:
        for message in messages:
            err.print(f"[yellow]Warning:[/yellow] {message}", highlight=False, markup=True)
    if target is None and state is None:
        _preview(result)
    if quiet:
        return
    if as_json:
        _log_json(result, warnings=messages)
    else:
        _summary(result, report=report)


def _size(size: int) -> str:
    return f"{size / 1e6:,.1f} MB" if size >= 1e6 else f"{size / 1e3:,.0f} kB"


@app.command("report")
def report(
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="Session tables written by sessionize run (.parquet, .csv, .ndjson), directories of them "
            "or glob patterns.",
            show_default=False,
            metavar="SESSIONS",
        ),
    ],
    output: Annotated[
        str,
        typer.Option(
            "-o", "--output", metavar="PATH", help="Where to write the report (one HTML file); - for stdout."
        ),
    ] = report_module.DEFAULT_OUTPUT,
    date_from: Annotated[
        str | None,
        typer.Option(
            "--from", metavar="DATE", help="Only sessions starting on or after this date or time (UTC)."
        ),
    ] = None,
    date_to: Annotated[
        str | None,
        typer.Option(
            "--to",
            metavar="DATE",
            help="Only sessions starting up to this date (the whole day, UTC) or before this time.",
        ),
    ] = None,
    top: Annotated[
        int, typer.Option("--top", metavar="N", min=1, help="Bars in each ranking (pages, sources, ...).")
    ] = report_module.DEFAULT_TOP,
    title: Annotated[
        str, typer.Option("--title", metavar="TEXT", help="The page's title.")
    ] = report_module.DEFAULT_TITLE,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="No summary on stderr.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of an error.")] = False,
) -> None:
    """Write a session insights report: one self-contained HTML page of charts, for any browser."""
    try:
        result = report_module.make_report(
            inputs, output=output, date_from=date_from, date_to=date_to, top=top, title=title
        )
    except (SessionizeError, Exception) as exc:
        _fail(exc, debug=debug)
    if quiet:
        return
    data = result.data
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    files = len(result.sources)
    grid.add_row("tables read", f"{files} file{'s' if files != 1 else ''}")
    grid.add_row("sessions", f"{data.sessions:,}")
    if data.first_start is not None and data.last_start is not None:
        grid.add_row("starting", f"{data.first_start:%Y-%m-%d %H:%M} to {data.last_start:%Y-%m-%d %H:%M} UTC")
    if date_from is not None or date_to is not None:
        grid.add_row("filters", f"--from {date_from or '-'} --to {date_to or '-'}")
    grid.add_row("charts", f"{len(result.charts)}")
    if data.sessions == 0:
        grid.add_row("left out", f"every chart: {report_module.NO_SESSIONS}")
    else:
        for key, why in result.left_out.items():
            grid.add_row("left out", f"{report_module.chart_title(key)}: {why}")
    grid.add_row("elapsed", f"{result.elapsed_s:.2f}s")
    where = "stdout" if result.output == report_module.STDOUT else result.output
    grid.add_row("written to", f"{where} ({_size(result.size_bytes)})")
    err.print(Panel(grid, title="sessionize report", title_align="left", border_style="green", expand=False))


@geoip_app.command("info", epilog=ATTRIBUTION)
def geoip_info(
    geoip_db: Annotated[
        str | None, typer.Option("--geoip-db", metavar="PATH", help="Database to describe (default: as run).")
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of an error.")] = False,
) -> None:
    """Show which GeoIP database `sessionize run` uses, its type, build date and size."""
    try:
        info = geo.geoip_info(geoip_db=geoip_db)
    except (SessionizeError, Exception) as exc:
        _fail(exc, debug=debug)
    if info is None:
        err.print(f"[yellow]{geo.NO_DATABASE_HINT}[/yellow]")
        raise typer.Exit(1)
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    grid.add_row("path", str(info.path))
    grid.add_row("chosen by", info.source)
    grid.add_row("type", f"{info.database_type} ({info.kind} database)")
    grid.add_row("built", f"{info.build_date:%Y-%m-%d} ({info.age_days:,} days ago)")
    grid.add_row(
        "size", f"{info.size_bytes / 1e6:,.1f} MB" if info.size_bytes >= 1e6 else f"{info.size_bytes:,} bytes"
    )
    grid.add_row("IP versions", "IPv4 and IPv6" if info.ip_version == 6 else "IPv4 only")
    if info.attribution:
        grid.add_row("attribution", info.attribution)
    Console().print(grid)


def main() -> None:
    """Console-script entry point."""
    app()
