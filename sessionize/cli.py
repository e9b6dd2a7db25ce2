"""The ``sessionize`` command line: parse options, call the library, report on stderr.

stdout carries data only (so ``-o -`` pipes); the summary, previews of a terminal run and errors
go to stderr, all through :mod:`sessionize.console` (panels on a terminal, one JSON line per
outcome for machines). Library errors exit with their code (1; 2 for usage errors; 75 when an
incremental state is locked).

Start-up stays light (``sessionize --version``): the engines, geo lookups and the report's charts
are imported by the command that needs them.
"""

from __future__ import annotations

import contextlib
import difflib
import gc
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any, get_args

import typer

from sessionize import __version__, console, presets
from sessionize import schema as S
from sessionize.config import (
    AMBIGUOUS_TIMES,
    ANONYMIZE_MODES,
    DEFAULT_ASSET_PATTERN,
    ENGINES,
    TIME_UNITS,
    VISITOR_KEYS,
    OnInvalid,
    RunConfig,
    load_toml,
)
from sessionize.console import Figure
from sessionize.errors import SessionizeWarning, StoppedError, UsageError
from sessionize.io.formats import INPUT_FORMATS, OUTPUT_FORMATS
from sessionize.report import DEFAULT_OUTPUT as REPORT_OUTPUT
from sessionize.report import DEFAULT_TITLE as REPORT_TITLE
from sessionize.report import DEFAULT_TOP as REPORT_TOP

if TYPE_CHECKING:
    from sessionize.pipeline import RunResult
    from sessionize.report import ReportResult

# The geo package's constants, spelled here so that the help needs no geoip2 (tests/test_cli_help.py
# checks that they equal sessionize.geo's).
GEOIP_ENV_VAR = "SESSIONIZE_GEOIP_DB"
DBIP_ATTRIBUTION = "IP Geolocation by DB-IP (https://db-ip.com), CC BY 4.0"
ATTRIBUTION = "Default GeoIP database: " + DBIP_ATTRIBUTION + "."
ON_INVALID: tuple[str, ...] = get_args(OnInvalid)
LOG_FORMATS = console.LOG_FORMATS

ANONYMIZE_DEFAULT = "--anonymize-ip=after-geo"

# The panels of ``run --help``, by purpose.
INPUT = "Input and columns"
OUTPUT = "Output"
RULES = "Session rules"
ATTRIBUTION_PANEL = "Attribution"
GEOLOCATION = "Geolocation"
BOTS = "Devices and bots"
PRIVACY = "Privacy"
BAD_INPUT = "Bad input"
SCALE = "Scale"
INCREMENTAL = "Incremental"
DASK = "Cluster (Dask, Spark)"
LOGGING = "Logging"

RUN_EXAMPLES = f"""Examples

  The sample data, previewed (-o sessions.parquet keeps the whole table):
    sessionize run sample_data/events.csv

  A web server's access log (combined, common or vhost_combined), visitors by IP and agent:
    sessionize run /var/log/nginx/access.log -o sessions.parquet

  A pipe: CSV events on stdin, Parquet sessions on stdout:
    zcat events.csv.gz | sessionize run - -o - --format parquet > s.parquet

  Cron: each run reads only the new files and continues the open sessions;
  its summary is one JSON line on stderr (for the job's log):
    sessionize run 'logs/*.csv' --state state/ --output-dir sessions/

{ATTRIBUTION}"""


def _anonymize_ip_values(args: list[str]) -> list[str]:
    """``--anonymize-ip`` alone as ``--anonymize-ip=after-geo``, and followed by a mode (``--anonymize-ip
    before-geo``) as ``--anonymize-ip=before-geo``.

    Click has no option with an optional value, so the bare flag is rewritten before parsing. Its mode
    must be taken with a space too, as every other option's value is: else ``before-geo`` would be read
    as an input file (a file of that name!) and the privacy mode would silently be after-geo. After
    ``--`` every argument is an input, as Click has it.
    """
    rewritten: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--":
            rewritten.extend(args[index:])
            break
        index += 1
        if arg != "--anonymize-ip":
            rewritten.append(arg)
        elif index < len(args) and args[index] in ANONYMIZE_MODES:
            rewritten.append(f"--anonymize-ip={args[index]}")
            index += 1
        else:
            rewritten.append(ANONYMIZE_DEFAULT)
    return rewritten


class _Group(console.Group):
    """Lets ``--anonymize-ip`` stand alone (meaning ``--anonymize-ip=after-geo``) or take its mode after a
    space (see :func:`_anonymize_ip_values`)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, _anonymize_ip_values(args))


app = typer.Typer(
    name="sessionize",
    help="Turn raw web and product event logs into a session table.",
    epilog=ATTRIBUTION,
    no_args_is_help=True,
    # Event logs hold IPs and user ids: never dump local variables in a traceback.
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    cls=_Group,
)
geoip_app = typer.Typer(help="Inspect the GeoIP database.", no_args_is_help=True, cls=console.Group)


# Values: choices from the library's own constants, and numbers, with errors that say what to type.


def _choice(choices: Sequence[str], metavar: str | None = None) -> dict[str, Any]:
    """``typer.Option`` settings for a value out of ``choices``: the check, its metavar, completion."""

    def parse(value: str) -> str:
        if value in choices:
            return value
        if not isinstance(value, str):  # a config file's `anonymize_ip = true`
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(choices)}: give one as text.")
        close = difflib.get_close_matches(value, choices, n=1, cutoff=0.5)
        hint = f" Did you mean {close[0]}?" if close else ""
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(choices)}.{hint}")

    def complete(incomplete: str) -> list[str]:
        return [choice for choice in choices if choice.startswith(incomplete)]

    return {"parser": parse, "metavar": metavar or "|".join(choices), "autocompletion": complete}


def _whole_number(minimum: int = 1) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise typer.BadParameter(f"{value!r} is not a whole number.") from None
        if number < minimum:
            raise typer.BadParameter(f"{number} is less than {minimum}.")
        return number

    return parse


def _names(value: str | Sequence[str]) -> str | tuple[str, ...]:
    """A comma-separated list option: text on the command line; a config file's array is kept a list,
    never read as the text of it (``['page_view']`` as an event name: review 60 F1)."""
    return value if isinstance(value, str) else tuple(value)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sessionize {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit."),
    ] = False,
) -> None:
    """Turn raw web and product event logs into a session table."""


app.add_typer(geoip_app, name="geoip")


def _stdout_is_terminal() -> bool:
    return console.stdout_is_terminal()


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether option ``name`` was given (command line, environment, config file), not defaulted."""
    source = ctx.get_parameter_source(name)
    # By name: Typer vendors its own copy of click's ParameterSource.
    return source is not None and source.name != "DEFAULT"


#: The signals that stopped the run, as they were acted on.
_STOPPED_BY: list[int] = []
#: Signals that came while the outputs were being put in place: acted on once the run has finished.
_DEFERRED: list[int] = []
#: Signals that came while Polars ran a callback, delivered again until acted on: if they are still
#: waiting when the outputs are about to be put in place, the run stops there (see _stop_if_pending).
_PENDING: list[int] = []


def _stop_if_pending() -> None:
    """Stop the run before its outputs are put in place on a signal that came earlier (io.placing)."""
    if _PENDING:
        signum = _PENDING[-1]
        _STOPPED_BY.append(signum)
        raise KeyboardInterrupt if signum == signal.SIGINT else SystemExit(128 + signum)


def _inside_polars(frame: FrameType | None) -> bool:
    """Whether ``frame`` runs in a Python function that Polars called from a collect (a callback): some
    frame of Polars' Python code is further out than frames of other code. Polars' own frames innermost
    (a collect just returned from Rust) are not a callback: an exception there unwinds as usual."""
    polars = sys.modules.get("polars")
    if polars is None or polars.__file__ is None:
        return False
    where = os.path.dirname(polars.__file__) + os.sep
    while frame is not None and frame.f_code.co_filename.startswith(where):
        frame = frame.f_back
    while frame is not None:
        if frame.f_code.co_filename.startswith(where):
            return True
        frame = frame.f_back
    return False


def _terminate(signum: int, frame: FrameType | None) -> None:
    """SIGTERM (how cron and systemd stop a job) and Ctrl-C unwind the run: temporary files are removed,
    no output is published. The signal is acted on only outside Polars: in a Python function that a
    collect calls (a ``map_batches`` callback), an exception would come out as a Polars error or a Rust
    panic (exit 1) instead; there it is delivered again 50 ms later, until the run is back in its own
    code."""
    from sessionize.io import publish  # loaded by the run that set this handler

    if publish.renaming():
        # While the outputs are put in place (renames, milliseconds): all of them or none. The run
        # finishes (its state too), then stops with the signal's exit code.
        _DEFERRED.append(signum)
        return
    if _inside_polars(frame):
        _PENDING.append(signum)
        timer = threading.Timer(0.05, os.kill, (os.getpid(), signum))
        timer.daemon = True
        timer.start()
        return
    _STOPPED_BY.append(signum)
    raise KeyboardInterrupt if signum == signal.SIGINT else SystemExit(128 + signum)


def _load_config(ctx: typer.Context, param: Any, value: str | None) -> str | None:
    """``--config FILE``: options of ``run`` from a TOML file, as defaults the command line overrides."""
    if value is None or ctx.resilient_parsing:
        return value
    try:
        defaults = load_toml(value)
    except UsageError as exc:
        raise typer.BadParameter(str(exc).removeprefix("--config: ")) from None
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return value


# Summaries: the figures of the panel and of the JSON line, from one list ---------------------------


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    return f"{minutes}m {secs:02d}s" if minutes else f"{seconds:.1f}s"


def _mib(size: int) -> str:
    if size >= 1 << 30:
        return f"{size / (1 << 30):,.1f}GiB"
    return f"{size / (1 << 20):,.0f}MiB" if size >= 1 << 20 else f"{size / 1024:,.0f}KiB"


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def run_figures(result: RunResult, *, report: str | None = None) -> tuple[list[Figure], dict[str, Any]]:
    """The summary of a run: the panel's lines (each with the JSON fields of its figures) and the
    fields every JSON line has, whether or not the panel shows them."""
    from sessionize import geo

    # Incremental runs name the files they processed, not every input.
    files = result.files if result.incremental is None else result.incremental.files_processed
    fields: dict[str, Any] = {
        "files": files,
        "rows_read": result.rows_read,
        "rejected": result.rejected,
        "duplicates_removed": result.duplicates_removed,
        "filtered_out": result.filtered_out,
        "events": result.events_read,
        "sessions": result.session_count,
        "users": result.user_count,
        "bot_sessions": result.bot_sessions,
        "bot_sessions_excluded": result.bot_sessions_excluded,
        "bot_events_excluded": result.bot_events_excluded,
        "median_duration_s": result.median_duration_s,
        "mean_duration_s": result.mean_duration_s,
        # Sessions per IP lookup outcome (resolved, not_found, private, invalid, missing).
        "geo": result.geo_counts,
        "geo_database": None if result.geo_database is None else str(result.geo_database.path),
        "path": result.path_taken,
        "engine": result.engine,
        "buckets": result.buckets,
        "memory_limit_bytes": result.memory_limit,
        "scheduler": result.scheduler,
        "output": result.output,
        "output_format": result.output_format,
        "rejects_output": result.rejects_output,
        "report": report,
        "elapsed_s": round(result.elapsed_s, 3),
        "peak_memory_mib": round(result.peak_memory_mib, 1),
    }
    figures = [
        Figure(
            "rows read",
            f"{result.rows_read:,} from {_plural(len(result.files), 'file')}",
            {"rows_read": result.rows_read, "files": files},
        )
    ]
    if result.rejected:
        where = (
            f"written to {result.rejects_output}"
            if result.rejects_output
            else "keep them with --rejects PATH"
        )
        figures.append(
            Figure(
                "rejected",
                f"{result.rejected:,} ({where})",
                {"rejected": result.rejected, "rejects_output": result.rejects_output},
            )
        )
    if result.duplicates_removed:
        figures.append(
            Figure(
                "duplicates removed",
                f"{result.duplicates_removed:,}",
                {"duplicates_removed": result.duplicates_removed},
            )
        )
    if result.filtered_out:
        figures.append(
            Figure(
                "filtered out",
                f"{result.filtered_out:,} (--filter, --max-send-delay, --session-cap)",
                {"filtered_out": result.filtered_out},
            )
        )
    figures.append(Figure("events sessionized", f"{result.events_read:,}", {"events": result.events_read}))
    if result.bot_sessions_excluded:
        figures.append(
            Figure(
                "bot sessions left out",
                f"{result.bot_sessions_excluded:,} ({result.bot_events_excluded:,} events)",
                {
                    "bot_sessions_excluded": result.bot_sessions_excluded,
                    "bot_events_excluded": result.bot_events_excluded,
                },
            )
        )
    elif result.bot_sessions:
        figures.append(
            Figure(
                "bot sessions",
                f"{result.bot_sessions:,} (--exclude-bots leaves them out)",
                {"bot_sessions": result.bot_sessions},
            )
        )
    figures += [
        Figure("users", f"{result.user_count:,}", {"users": result.user_count}),
        Figure("sessions", f"{result.session_count:,}", {"sessions": result.session_count}),
        Figure(
            "median duration",
            _duration(result.median_duration_s),
            {"median_duration_s": result.median_duration_s},
        ),
        Figure(
            "mean duration", _duration(result.mean_duration_s), {"mean_duration_s": result.mean_duration_s}
        ),
        Figure("elapsed", f"{result.elapsed_s:.2f}s", {"elapsed_s": round(result.elapsed_s, 3)}),
    ]
    path_fields = {"path": result.path_taken, "engine": result.engine, "buckets": result.buckets}
    if result.engine == "dask":
        path = f"dask, {result.buckets:,} partitions of users ({result.scheduler})"
        path_fields["scheduler"] = result.scheduler
    elif result.engine == "spark":
        # Its own words: the partitions, and how many files were split (review of stop 57: a Spark run's
        # summary said "2 buckets of users (memory budget 0KiB)").
        path = result.path_taken.replace("spark: ", "spark, ", 1)
        if result.scheduler:
            path += f" ({result.scheduler})"
            path_fields["scheduler"] = result.scheduler
    elif result.buckets == 1:
        path = "in memory"
    else:
        path = f"{result.buckets:,} buckets of users"
        if not result.buckets_forced:
            path += f" (memory budget {_mib(result.memory_limit)})"
            path_fields["memory_limit_bytes"] = result.memory_limit
    figures.append(Figure("path", path, path_fields))
    if result.peak_memory_mib:
        figures.append(
            Figure(
                "peak memory",
                f"{result.peak_memory_mib:,.0f} MiB",
                {"peak_memory_mib": round(result.peak_memory_mib, 1)},
            )
        )
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
        figures.append(
            Figure(
                "located by IP",
                total + (f" (not: {unlocated})" if unlocated else ""),
                {"geo": counts, "geo_database": str(result.geo_database.path)},
            )
        )
    if result.incremental is not None:
        inc = result.incremental
        fields.update(
            files_skipped=inc.files_skipped,
            files_grown=inc.files_grown,
            late=inc.late,
            open_sessions=inc.open_sessions,
            partitions=inc.partitions,
            users_in_state=inc.users_in_state,
            events_in_state=inc.events_in_state,
            watermark=None if inc.watermark is None else inc.watermark.isoformat(),
        )
        if inc.files_skipped:
            figures.append(
                Figure(
                    "files skipped",
                    f"{len(inc.files_skipped):,} already in the state (--reprocess reads them again)",
                    {"files_skipped": inc.files_skipped},
                )
            )
        if inc.files_grown:
            figures.append(
                Figure(
                    "files grown",
                    f"{len(inc.files_grown):,}: only their new lines were read",
                    {"files_grown": inc.files_grown},
                )
            )
        if inc.late:
            figures.append(
                Figure("late events", f"{inc.late:,} rejected (older than --lateness)", {"late": inc.late})
            )
        figures += [
            Figure(
                "open sessions",
                f"{inc.open_sessions:,} (is_final = false)",
                {"open_sessions": inc.open_sessions},
            ),
            Figure("partitions written", f"{len(inc.partitions):,}", {"partitions": inc.partitions}),
            Figure(
                "state",
                f"{inc.users_in_state:,} users, {inc.events_in_state:,} events kept",
                {"users_in_state": inc.users_in_state, "events_in_state": inc.events_in_state},
            ),
        ]
    if result.output is not None:
        where = "stdout" if result.output == "-" else result.output
        figures.append(
            Figure(
                "written to",
                f"{where} ({result.output_format})",
                {"output": result.output, "output_format": result.output_format},
            )
        )
    if report is not None:
        figures.append(Figure("report", report, {"report": report}))
    return figures, fields


PREVIEW_ROWS = 10


def _preview(result: RunResult, reporter: console.Reporter) -> None:
    rows = result.sessions.head(PREVIEW_ROWS).to_dicts()
    console.preview(rows, total=result.session_count, terminal=True)
    reporter.hint("Write the whole table with -o sessions.parquet (or .csv, .ndjson; -o - for stdout).")


def _warnings(caught: list[warnings.WarningMessage] | None) -> list[str]:
    return [str(w.message) for w in caught or () if issubclass(w.category, SessionizeWarning)]


@app.command("run", epilog=RUN_EXAMPLES, cls=console.Command)
def run(
    ctx: typer.Context,
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="Event files (.csv, .csv.gz, .tsv, .parquet, .ndjson, .jsonl, .log), directories, glob "
            "patterns, or - for CSV on stdin.",
            show_default=False,
            metavar="INPUT",
        ),
    ],
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
    # Input and columns ---------------------------------------------------------------------------
    preset: Annotated[
        str | None,
        typer.Option(
            "--preset",
            metavar="NAME",
            help="Read a vendor's export as it comes: ga4, snowplow, segment, posthog, amplitude, mixpanel "
            "(`sessionize presets` shows what each sets); any option given explicitly wins.",
            rich_help_panel=INPUT,
            show_default=False,
        ),
    ] = None,
    input_format: Annotated[
        str | None,
        typer.Option(
            "--input-format",
            help=f"Input format for every input: {', '.join(INPUT_FORMATS)} (default: from each "
            "extension; .log: combined, common or vhost_combined, by its lines).",
            rich_help_panel=INPUT,
            **_choice(INPUT_FORMATS, metavar="FORMAT"),
        ),
    ] = None,
    user_col: Annotated[
        str | None,
        typer.Option("--user-col", metavar="COLUMN", help="Column with the user id.", rich_help_panel=INPUT),
    ] = None,
    time_col: Annotated[
        str | None,
        typer.Option(
            "--time-col", metavar="COLUMN", help="Column with the event time.", rich_help_panel=INPUT
        ),
    ] = None,
    url_col: Annotated[
        str | None,
        typer.Option("--url-col", metavar="COLUMN", help="Column with the page URL.", rich_help_panel=INPUT),
    ] = None,
    referrer_col: Annotated[
        str | None,
        typer.Option(
            "--referrer-col", metavar="COLUMN", help="Column with the referrer URL.", rich_help_panel=INPUT
        ),
    ] = None,
    ip_col: Annotated[
        str | None,
        typer.Option(
            "--ip-col", metavar="COLUMN", help="Column with the client IP address.", rich_help_panel=INPUT
        ),
    ] = None,
    event_col: Annotated[
        str | None,
        typer.Option(
            "--event-col", metavar="COLUMN", help="Column with the event name.", rich_help_panel=INPUT
        ),
    ] = None,
    session_col: Annotated[
        str | None,
        typer.Option(
            "--session-col",
            metavar="COLUMN",
            help="Column with a client-provided session id.",
            rich_help_panel=INPUT,
        ),
    ] = None,
    user_agent_col: Annotated[
        str | None,
        typer.Option(
            "--user-agent-col", metavar="COLUMN", help="Column with the user agent.", rich_help_panel=INPUT
        ),
    ] = None,
    event_id_col: Annotated[
        str | None,
        typer.Option(
            "--event-id-col",
            metavar="COLUMN",
            help="Column with an event id; events sharing one are one event.",
            rich_help_panel=INPUT,
        ),
    ] = None,
    event_id_scope: Annotated[
        str,
        typer.Option(
            "--event-id-scope",
            metavar="user|user-event-time",
            help="Which events sharing an event id are one event: a user's (user), or a user's with the same "
            "event name and time too (user-event-time: Mixpanel's $insert_id; the mixpanel preset sets it).",
            rich_help_panel=INPUT,
        ),
    ] = "user",
    page_view_id_col: Annotated[
        str | None,
        typer.Option(
            "--page-view-id-col",
            metavar="COLUMN",
            help="Column with a page view id (Snowplow's web_page context, as a column, JSON or contexts); "
            "page views sharing one are one page view.",
            rich_help_panel=INPUT,
        ),
    ] = None,
    stitch_col: Annotated[
        str | None,
        typer.Option(
            "--stitch-col",
            metavar="COLUMN",
            help="The login id column (user_id) while sessions are keyed by an anonymous id: every session "
            "gets stitched_user_id, the user's latest login id (identity stitching).",
            rich_help_panel=INPUT,
        ),
    ] = None,
    stitch_fallback: Annotated[
        bool,
        typer.Option(
            "--stitch-fallback",
            help="With --stitch-col: a user without a login id gets their own user id as stitched_user_id "
            "(Snowplow's rule; the snowplow preset sets it) instead of null.",
            rich_help_panel=INPUT,
        ),
    ] = False,
    user_fallback_col: Annotated[
        str | None,
        typer.Option(
            "--user-fallback-col",
            metavar="COLUMN",
            help="The login id column (user_id) whose value is the user id of an event whose user id column "
            "is empty (a server-side Segment call with a userId only; an Amplitude event with a user_id "
            "and no device_id); such an event is otherwise rejected. The segment and amplitude presets "
            "set it; '' switches it off.",
            rich_help_panel=INPUT,
        ),
    ] = None,
    engagement_time_col: Annotated[
        str | None,
        typer.Option(
            "--engagement-time-col",
            metavar="COLUMN",
            help="Milliseconds of engagement each event reports (GA4's engagement_time_msec): engaged_time_s "
            "is their sum where a session has any.",
            rich_help_panel=INPUT,
        ),
    ] = None,
    ignore_referrer_col: Annotated[
        str | None,
        typer.Option(
            "--ignore-referrer-col",
            metavar="COLUMN",
            help="A flag column (GA4's ignore_referrer; the ga4 preset reads it): an event where it is "
            "true, 1 or yes has no referrer, as GA4 ignores an unwanted referral's.",
            rich_help_panel=INPUT,
        ),
    ] = None,
    time_unit: Annotated[
        str | None,
        typer.Option(
            "--time-unit",
            help="Unit of epoch-number timestamps (default: guessed from magnitude).",
            rich_help_panel=INPUT,
            **_choice(TIME_UNITS),
        ),
    ] = None,
    timezone: Annotated[
        str | None,
        typer.Option(
            "--timezone",
            metavar="TZ",
            help="IANA time zone of the local day (--split-at-midnight, the session_date partitions) and, "
            "unless --input-timezone says otherwise, of timestamps without an offset (default: UTC).",
            rich_help_panel=INPUT,
        ),
    ] = None,
    input_timezone: Annotated[
        str | None,
        typer.Option(
            "--input-timezone",
            metavar="TZ",
            help="IANA time zone of timestamps without an offset (default: --timezone; UTC with the "
            "presets whose vendor writes UTC times).",
            rich_help_panel=INPUT,
        ),
    ] = None,
    ambiguous_time: Annotated[
        str,
        typer.Option(
            "--ambiguous-time",
            help="A local time that happens twice (the hour repeated when daylight saving time ends): "
            "take the earliest or the latest, or reject the row.",
            rich_help_panel=INPUT,
            **_choice(AMBIGUOUS_TIMES),
        ),
    ] = AMBIGUOUS_TIMES[0],
    pageview_events: Annotated[
        str,
        typer.Option(
            "--pageview-events",
            metavar="NAMES",
            parser=_names,
            help="Comma-separated event names that are page views.",
            rich_help_panel=INPUT,
        ),
    ] = ",".join(S.DEFAULT_PAGEVIEW_EVENTS),
    unnest_params: Annotated[
        str,
        typer.Option(
            "--unnest-params",
            metavar="COLUMNS",
            parser=_names,
            help="Comma-separated columns of {key, value} lists (GA4's event_params) whose keys become "
            "columns named COLUMN_KEY (--url-col event_params.page_location).",
            rich_help_panel=INPUT,
        ),
    ] = "",
    session_id_nulls: Annotated[
        str,
        typer.Option(
            "--session-id-nulls",
            metavar="VALUES",
            parser=_names,
            help="Comma-separated client session id values that mean none (Amplitude's -1): those events "
            "are sessionized by the timeout.",
            rich_help_panel=INPUT,
        ),
    ] = "",
    require_session_id: Annotated[
        bool,
        typer.Option(
            "--require-session-id",
            help="Leave out (and count) the events without a client session id, as Snowplow processes "
            "none without its domain_sessionid (the snowplow preset sets it); an event with one and no "
            "user id takes its session id as its user id.",
            rich_help_panel=INPUT,
        ),
    ] = False,
    filter: Annotated[
        list[str] | None,
        typer.Option(
            "--filter",
            metavar="COLUMN=VALUES",
            help="Keep only the rows whose COLUMN is one of the comma-separated VALUES (--filter "
            "app_id=shop); repeatable, all apply. The others are counted as filtered out.",
            rich_help_panel=INPUT,
        ),
    ] = None,
    max_send_delay: Annotated[
        str | None,
        typer.Option(
            "--max-send-delay",
            metavar="DURATION",
            help="Leave out (and count) the rows a device sent longer than this after creating them "
            "(Snowplow's dvce_sent_tstamp - dvce_created_tstamp; its days_late_allowed, 3d with the preset).",
            rich_help_panel=INPUT,
        ),
    ] = None,
    page_activity_events: Annotated[
        str,
        typer.Option(
            "--page-activity-events",
            metavar="NAMES",
            parser=_names,
            help="Comma-separated event names that are page activity but not page views (Snowplow's "
            "page_ping): they count for the landing and exit pages.",
            rich_help_panel=INPUT,
        ),
    ] = "",
    encoding: Annotated[
        str,
        typer.Option(
            "--encoding",
            metavar="NAME",
            help="Encoding of CSV/TSV inputs (latin-1, cp1252, ...).",
            rich_help_panel=INPUT,
        ),
    ] = "utf-8",
    visitor_key: Annotated[
        str,
        typer.Option(
            "--visitor-key",
            help="Access logs: who a visitor is, client IP + user agent or the IP alone.",
            rich_help_panel=INPUT,
            **_choice(VISITOR_KEYS),
        ),
    ] = VISITOR_KEYS[0],
    asset_pattern: Annotated[
        str,
        typer.Option(
            "--asset-pattern",
            metavar="REGEX",
            help="Access logs: paths that are static assets, not page views (case-insensitive regex; "
            "default: images, CSS, JavaScript, fonts, audio and video, PDF, JSON, feeds and robots.txt).",
            show_default=False,
            rich_help_panel=INPUT,
        ),
    ] = DEFAULT_ASSET_PATTERN,
    # Output --------------------------------------------------------------------------------------
    output: Annotated[
        str | None,
        typer.Option(
            "-o",
            "--output",
            metavar="PATH",
            help="Where to write the session table; - for stdout. Without it: a preview on a terminal, "
            "CSV on stdout otherwise.",
            rich_help_panel=OUTPUT,
        ),
    ] = None,
    format: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="Output format (default: from the output's extension; CSV on stdout).",
            rich_help_panel=OUTPUT,
            **_choice(OUTPUT_FORMATS),
        ),
    ] = None,
    report: Annotated[
        str | None,
        typer.Option(
            "--report",
            metavar="PATH",
            help="Also write the session insights report of the table here (one HTML file; see "
            "sessionize report).",
            rich_help_panel=OUTPUT,
        ),
    ] = None,
    pageviews_output: Annotated[
        str | None,
        typer.Option(
            "--pageviews-output",
            metavar="PATH",
            help="Also write the page-view table here: one row per page view, its number and time on "
            "page in the session (see docs/tables.md).",
            rich_help_panel=OUTPUT,
        ),
    ] = None,
    users_output: Annotated[
        str | None,
        typer.Option(
            "--users-output",
            metavar="PATH",
            help="Also write the user table here: one row per user, counts and first- and last-touch "
            "attribution (see docs/tables.md).",
            rich_help_panel=OUTPUT,
        ),
    ] = None,
    csv_safe: Annotated[
        bool,
        typer.Option(
            "--csv-safe",
            help="Neutralise values that a spreadsheet would run as formulas (=, +, -, @, a tab, a carriage "
            "return or NUL at the start) in CSV outputs and their column names, by prefixing ', as OWASP "
            "advises; the default keeps every value as it came.",
            rich_help_panel=OUTPUT,
        ),
    ] = False,
    partition_by_date: Annotated[
        bool,
        typer.Option(
            "--partition-by-date",
            help="With --engine spark: write the output directory partitioned by the sessions' start date "
            "(session_date=YYYY-MM-DD/ in --timezone), as incremental runs do.",
            rich_help_panel=OUTPUT,
        ),
    ] = False,
    # Session rules -------------------------------------------------------------------------------
    timeout: Annotated[
        str,
        typer.Option(
            "--timeout",
            metavar="DURATION",
            help="Inactivity that ends a session: 90s, 30m, 1h, 1h30m.",
            rich_help_panel=RULES,
        ),
    ] = "30m",
    max_session_length: Annotated[
        str | None,
        typer.Option(
            "--max-session-length",
            metavar="DURATION",
            help="Cut longer runs of activity into consecutive sessions (PostHog: 24h).",
            rich_help_panel=RULES,
        ),
    ] = None,
    session_cap: Annotated[
        str | None,
        typer.Option(
            "--session-cap",
            metavar="DURATION",
            help="Leave out a client session's events more than this after its first (Snowplow: 3d).",
            rich_help_panel=RULES,
        ),
    ] = None,
    shared_session_ids: Annotated[
        str,
        typer.Option(
            "--shared-session-ids",
            metavar="split|merge|merge-last",
            help="A client session id sent by several users: a session per user (split), or one session "
            "of its first event's user (merge: Snowplow) or its last event's (merge-last: PostHog).",
            rich_help_panel=RULES,
        ),
    ] = "split",
    split_on_campaign: Annotated[
        bool,
        typer.Option(
            "--split-on-campaign",
            help="A page view with other UTM/click-id values starts a new session.",
            rich_help_panel=RULES,
        ),
    ] = False,
    split_at_midnight: Annotated[
        bool,
        typer.Option(
            "--split-at-midnight",
            help="Start a new session at midnight in --timezone.",
            rich_help_panel=RULES,
        ),
    ] = False,
    no_split_at_midnight: Annotated[
        bool,
        typer.Option(
            "--no-split-at-midnight",
            help="Do not start one at midnight, though the preset does (mixpanel).",
            rich_help_panel=RULES,
        ),
    ] = False,
    conversion_events: Annotated[
        str | None,
        typer.Option(
            "--conversion-events",
            metavar="NAMES",
            parser=_names,
            help="Comma-separated event names that make a session engaged.",
            rich_help_panel=RULES,
        ),
    ] = None,
    count_events: Annotated[
        str | None,
        typer.Option(
            "--count-events",
            metavar="NAMES",
            parser=_names,
            help="Comma-separated event names counted per session, each in a column <name>_count after the "
            "others (COLUMN=EVENT names the column: --count-events purchase,orders=Order Completed).",
            rich_help_panel=RULES,
        ),
    ] = None,
    channel_rules: Annotated[
        str,
        typer.Option(
            "--channel-rules",
            metavar="ga4|snowplow|posthog",
            help="How channel is grouped: GA4's default channel group (UTM tags, else the referrer), "
            "Snowplow's (the UTM tags alone: untagged sessions are Unassigned; medium as its "
            "referer parser gives it), or PostHog's $channel_type (its own rules and names: Paid "
            "Unknown, Push, Unknown; gad_source and fbclid read).",
            rich_help_panel=RULES,
        ),
    ] = "ga4",
    aggregates: Annotated[
        list[str] | None,
        typer.Option(
            "--agg",
            metavar="NAME=FUNC(COLUMN)",
            help="A session column of your own, repeatable: FUNC is sum, mean, min, max, count, n_unique, "
            "first or last of an input column (--agg revenue=sum(properties.revenue)); count(event=VALUE) "
            "counts one event name; count(*) the events.",
            rich_help_panel=RULES,
        ),
    ] = None,
    heartbeat_events: Annotated[
        str | None,
        typer.Option(
            "--heartbeat-events",
            metavar="NAMES",
            parser=_names,
            help="Comma-separated heartbeat event names (Snowplow's page_ping): engaged_time_s counts their "
            "windows per page view, as Snowplow does, instead of the gaps between events.",
            rich_help_panel=RULES,
        ),
    ] = None,
    heartbeat_interval: Annotated[
        str,
        typer.Option(
            "--heartbeat-interval",
            metavar="DURATION",
            help="The heartbeat's period (Snowplow's heartbeat; its default 10s).",
            rich_help_panel=RULES,
        ),
    ] = "10s",
    heartbeat_time_col: Annotated[
        str | None,
        typer.Option(
            "--heartbeat-time-col",
            metavar="COLUMN",
            help="With --heartbeat-events: the time column the heartbeats' windows are counted on "
            "(Snowplow's dvce_created_tstamp; the snowplow preset prefers it), parsed as --time-col; an "
            "empty one: the event time.",
            rich_help_panel=RULES,
        ),
    ] = None,
    min_visit_length: Annotated[
        str,
        typer.Option(
            "--min-visit-length",
            metavar="DURATION",
            help="Time on a page before its first heartbeat (Snowplow's minimum visit length, its default "
            "5s).",
            rich_help_panel=RULES,
        ),
    ] = "5s",
    engaged_threshold: Annotated[
        str | None,
        typer.Option(
            "--engaged-threshold",
            metavar="DURATION",
            help="is_engaged from engaged time at least this long, instead of GA4's duration longer than "
            "10 s (page views and conversions still count). The snowplow preset's: twice "
            "--heartbeat-interval.",
            rich_help_panel=RULES,
        ),
    ] = None,
    # Attribution ---------------------------------------------------------------------------------
    referers: Annotated[
        str | None,
        typer.Option(
            "--referers",
            metavar="PATH",
            help="Snowplow referer database (referers.yml or .json) instead of the bundled copy.",
            rich_help_panel=ATTRIBUTION_PANEL,
        ),
    ] = None,
    internal_domains: Annotated[
        str | None,
        typer.Option(
            "--internal-domains",
            metavar="DOMAINS",
            parser=_names,
            help="Comma-separated hosts of your own sites (and their subdomains): referrers from them are "
            "internal. A URL or host:port counts as its host.",
            rich_help_panel=ATTRIBUTION_PANEL,
        ),
    ] = None,
    # Geolocation ---------------------------------------------------------------------------------
    geoip_db: Annotated[
        str | None,
        typer.Option(
            "--geoip-db",
            metavar="PATH",
            help="MaxMind DB (.mmdb) City or Country database for city, region and country (default: "
            f"${GEOIP_ENV_VAR}, else DB-IP City Lite if installed).",
            rich_help_panel=GEOLOCATION,
        ),
    ] = None,
    no_geo: Annotated[
        bool,
        typer.Option(
            "--no-geo", help="Skip the IP lookup; geo columns stay null.", rich_help_panel=GEOLOCATION
        ),
    ] = False,
    # Devices and bots ----------------------------------------------------------------------------
    exclude_bots: Annotated[
        bool,
        typer.Option(
            "--exclude-bots",
            help="Leave out the sessions of crawlers and scripts (counted in the summary).",
            rich_help_panel=BOTS,
        ),
    ] = False,
    # Privacy -------------------------------------------------------------------------------------
    anonymize_ip: Annotated[
        str | None,
        typer.Option(
            "--anonymize-ip",
            help="Zero the last octet of IPv4 and the last 80 bits of IPv6 in the output; "
            "--anonymize-ip=before-geo also before the geo lookup.",
            rich_help_panel=PRIVACY,
            **_choice(ANONYMIZE_MODES),
        ),
    ] = None,
    hash_user_ids: Annotated[
        str | None,
        typer.Option(
            "--hash-user-ids",
            metavar="SECRET_ENV",
            help="Replace user ids by HMAC-SHA256 with the secret in this environment variable.",
            rich_help_panel=PRIVACY,
        ),
    ] = None,
    drop_columns: Annotated[
        str | None,
        typer.Option(
            "--drop-columns",
            metavar="NAMES",
            parser=_names,
            help="Comma-separated output columns to leave out.",
            rich_help_panel=PRIVACY,
        ),
    ] = None,
    # Bad input -----------------------------------------------------------------------------------
    on_invalid: Annotated[
        str,
        typer.Option(
            "--on-invalid",
            help="Rows with an empty user id, a bad or out-of-range timestamp, or malformed CSV: fail (stop, "
            "write nothing) or skip (set aside and count).",
            rich_help_panel=BAD_INPUT,
            **_choice(ON_INVALID),
        ),
    ] = ON_INVALID[0],
    rejects: Annotated[
        str | None,
        typer.Option(
            "--rejects",
            metavar="PATH",
            help=(
                "With --on-invalid skip: write the rejected rows here (with --engine spark, a name without "
                "a table extension is a directory: Spark writes them as a Parquet dataset)."
            ),
            rich_help_panel=BAD_INPUT,
        ),
    ] = None,
    valid_from: Annotated[
        str | None,
        typer.Option(
            "--valid-from",
            metavar="TIME",
            help="Events before this (ISO 8601) are invalid.",
            rich_help_panel=BAD_INPUT,
        ),
    ] = None,
    valid_until: Annotated[
        str | None,
        typer.Option(
            "--valid-until",
            metavar="TIME",
            help="Events after this (ISO 8601) are invalid (default: now + 1 day).",
            rich_help_panel=BAD_INPUT,
        ),
    ] = None,
    dedupe: Annotated[
        bool,
        typer.Option(
            "--dedupe",
            help="Drop exact duplicate events (events with an id are deduplicated by it).",
            rich_help_panel=BAD_INPUT,
        ),
    ] = False,
    # Scale ---------------------------------------------------------------------------------------
    memory_limit: Annotated[
        str | None,
        typer.Option(
            "--memory-limit",
            metavar="SIZE",
            help="Memory budget (2GiB, 512M). Larger inputs are split into buckets of users spilled to "
            "disk and sessionized one at a time. Default: half the memory available.",
            show_default=False,
            rich_help_panel=SCALE,
        ),
    ] = None,
    buckets: Annotated[
        int | None,
        typer.Option(
            "--buckets",
            metavar="N",
            parser=_whole_number(1),
            help="Use exactly N buckets of users (1: all in memory) instead of deciding from --memory-limit.",
            show_default=False,
            rich_help_panel=SCALE,
        ),
    ] = None,
    temp_dir: Annotated[
        str | None,
        typer.Option(
            "--temp-dir",
            metavar="DIR",
            help="Where bucket files go (removed at the end, also on errors and Ctrl-C). Default: $TMPDIR.",
            show_default=False,
            rich_help_panel=SCALE,
        ),
    ] = None,
    # Incremental ---------------------------------------------------------------------------------
    state: Annotated[
        str | None,
        typer.Option(
            "--state",
            metavar="STATE_DIR",
            help="Incremental runs (cron): remember processed files and open sessions here, continue "
            "them on the next run. Needs --output-dir.",
            show_default=False,
            rich_help_panel=INCREMENTAL,
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
            rich_help_panel=INCREMENTAL,
        ),
    ] = None,
    lateness: Annotated[
        str | None,
        typer.Option(
            "--lateness",
            metavar="DURATION",
            help="With --state: events up to this much older than their user's last processed event "
            "rebuild their sessions; older ones are rejected as late. [default: 6h]",
            rich_help_panel=INCREMENTAL,
        ),
    ] = None,
    reprocess: Annotated[
        bool,
        typer.Option(
            "--reprocess",
            help="With --state: read inputs the state already holds again.",
            rich_help_panel=INCREMENTAL,
        ),
    ] = False,
    # Dask ----------------------------------------------------------------------------------------
    engine: Annotated[
        str,
        typer.Option(
            "--engine",
            help="Where to sessionize: this process, a Dask cluster (pip install 'sessionize[dask]') or "
            "Apache Spark (pip install 'sessionize[spark]', Java 17+); with either, -o is a directory of "
            "Parquet files.",
            rich_help_panel=DASK,
            **_choice(ENGINES),
        ),
    ] = ENGINES[0],
    scheduler: Annotated[
        str | None,
        typer.Option(
            "--scheduler",
            metavar="ADDRESS",
            help="With --engine dask: the scheduler (tcp://host:8786 or a scheduler file). Default: a "
            "local cluster of one worker per CPU.",
            show_default=False,
            rich_help_panel=DASK,
        ),
    ] = None,
    partitions: Annotated[
        int | None,
        typer.Option(
            "--partitions",
            metavar="N",
            parser=_whole_number(1),
            help="With --engine dask or spark: partitions of users after the shuffle (default: Dask: "
            "input partitions or workers, whichever is more; Spark: its cores).",
            show_default=False,
            rich_help_panel=DASK,
        ),
    ] = None,
    spark_master: Annotated[
        str | None,
        typer.Option(
            "--spark-master",
            metavar="URL",
            help="With --engine spark: the master of the Spark session (default local[*]; spark://host:7077, "
            "yarn, k8s://...). Under spark-submit, leave it out.",
            rich_help_panel=DASK,
        ),
    ] = None,
    # Logging -------------------------------------------------------------------------------------
    log_format: Annotated[
        str,
        typer.Option(
            "--log-format",
            help="The summary, warnings and errors on stderr: text (panels), or one JSON line per run "
            "(auto: text on a terminal, json otherwise).",
            rich_help_panel=LOGGING,
            **_choice(LOG_FORMATS),
        ),
    ] = "auto",
    quiet: Annotated[
        bool,
        typer.Option(
            "-q", "--quiet", help="No summary or warnings on stderr (errors still).", rich_help_panel=LOGGING
        ),
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the traceback of an error.", rich_help_panel=LOGGING)
    ] = False,
) -> None:
    """Split events into sessions and write one row per session."""
    reporter = console.Reporter(json=console.wants_json(log_format), debug=debug, quiet=quiet)
    # kill (SIGTERM, as cron and systemd stop jobs) unwinds like Ctrl-C: temporary files are removed.
    with contextlib.suppress(ValueError):  # only the main thread may set handlers
        signal.signal(signal.SIGTERM, _terminate)
        signal.signal(signal.SIGINT, _terminate)
        from sessionize.io import publish

        publish.before_placing = _stop_if_pending
    target = output
    if target is None and state is None and not _stdout_is_terminal():
        # Piped: the table goes to stdout as data (an engine that cannot write one there says so).
        target = "-"
    caught: list[warnings.WarningMessage] | None = None
    try:
        with (
            warnings.catch_warnings(record=True) as caught,
            console.progress(
                enabled=not quiet and not reporter.json, unit="partitions" if engine == "dask" else "buckets"
            ) as progress,
        ):
            warnings.simplefilter("always", SessionizeWarning)
            options: dict[str, Any] = dict(
                output=target,
                format=format,
                input_format=input_format,
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
                page_view_id_col=page_view_id_col,
                stitch_col=stitch_col,
                user_fallback_col=user_fallback_col,
                engagement_time_col=engagement_time_col,
                time_unit=time_unit,
                timezone=timezone,
                input_timezone=input_timezone,
                ambiguous_time=ambiguous_time,
                pageview_events=pageview_events,
                unnest_params=unnest_params,
                session_id_nulls=session_id_nulls,
                require_session_id=require_session_id,
                page_activity_events=page_activity_events,
                event_id_scope=event_id_scope,
                filter=filter,
                max_send_delay=max_send_delay,
                encoding=encoding,
                on_invalid=on_invalid,
                rejects=rejects,
                valid_from=valid_from,
                valid_until=valid_until,
                dedupe=dedupe,
                geoip_db=geoip_db,
                no_geo=no_geo,
                anonymize_ip=anonymize_ip,
                hash_user_ids=hash_user_ids,
                drop_columns=drop_columns,
                referers=referers,
                internal_domains=internal_domains or (),
                conversion_events=conversion_events or (),
                count_events=count_events or (),
                aggregates=aggregates or (),
                channel_rules=channel_rules,
                stitch_fallback=stitch_fallback,
                heartbeat_events=heartbeat_events or (),
                heartbeat_interval=heartbeat_interval,
                heartbeat_time_col=heartbeat_time_col,
                ignore_referrer_col=ignore_referrer_col,
                min_visit_length=min_visit_length,
                engaged_threshold=engaged_threshold,
                max_session_length=max_session_length,
                session_cap=session_cap,
                shared_session_ids=shared_session_ids,
                split_on_campaign=split_on_campaign,
                split_at_midnight=split_at_midnight,
                exclude_bots=exclude_bots,
                visitor_key=visitor_key,
                asset_pattern=asset_pattern,
                report=report,
                csv_safe=csv_safe,
                partition_by_date=partition_by_date,
                pageviews_output=pageviews_output,
                users_output=users_output,
                memory_limit=memory_limit,
                buckets=buckets,
                temp_dir=temp_dir,
                state=state,
                output_dir=output_dir,
                lateness=lateness,
                reprocess=reprocess,
                engine=engine,
                scheduler=scheduler,
                partitions=partitions,
                spark_master=spark_master,
            )
            # The preset under every option given on the command line or in the config file.
            given = {key: value for key, value in options.items() if _given(ctx, key)}
            if no_split_at_midnight:
                # Off, over the preset's (mixpanel) and the config file's.
                source = ctx.get_parameter_source("split_at_midnight")
                if split_at_midnight and source is not None and source.name == "COMMANDLINE":
                    raise UsageError(
                        "--split-at-midnight and --no-split-at-midnight contradict each other: give one."
                    )
                options["split_at_midnight"] = given["split_at_midnight"] = False
            run_config = RunConfig.build(options, preset=preset, given=given)
            from sessionize import pipeline

            result = pipeline.run(inputs, config=run_config, progress=progress)
    except BaseException as exc:
        for message in _warnings(caught):
            reporter.warn(message)
        if _STOPPED_BY or _DEFERRED or isinstance(exc, KeyboardInterrupt):
            # One outcome like any other: a panel, or the JSON line, with 143 or 130.
            signum = (_STOPPED_BY or _DEFERRED or [signal.SIGINT])[-1]
            from sessionize.io import publish

            reporter.fail(StoppedError(signum, published=publish.publications() > 0))
        if not isinstance(exc, Exception):
            raise
        reporter.fail(exc)
    for message in _warnings(caught):
        reporter.warn(message)
    if _DEFERRED:
        reporter.fail(StoppedError(_DEFERRED[-1], published=True))
    if target is None and state is None:
        _preview(result, reporter)
    figures, fields = run_figures(result, report=report)
    reporter.summary("sessionize", figures, fields)


def _size(size: int) -> str:
    return f"{size / 1e6:,.1f} MB" if size >= 1e6 else f"{size / 1e3:,.0f} kB"


def report_figures(
    result: ReportResult, *, date_from: str | None, date_to: str | None
) -> tuple[list[Figure], dict[str, Any]]:
    """The summary of ``sessionize report``: the panel's lines and the JSON line's fields."""
    from sessionize import report as report_module

    data = result.data
    where = "stdout" if result.output == report_module.STDOUT else result.output
    first = None if data.first_start is None else data.first_start.isoformat()
    last = None if data.last_start is None else data.last_start.isoformat()
    left_out = (
        {"*": report_module.NO_SESSIONS}
        if data.sessions == 0
        else {report_module.chart_title(key): why for key, why in result.left_out.items()}
    )
    fields: dict[str, Any] = {
        "tables": result.sources,
        "sessions": data.sessions,
        "first_start": first,
        "last_start": last,
        "from": date_from,
        "to": date_to,
        "charts": result.charts,
        "left_out": left_out,
        "elapsed_s": round(result.elapsed_s, 3),
        "output": result.output,
        "size_bytes": result.size_bytes,
    }
    figures = [
        Figure("tables read", _plural(len(result.sources), "file"), {"tables": result.sources}),
        Figure("sessions", f"{data.sessions:,}", {"sessions": data.sessions}),
    ]
    if data.first_start is not None and data.last_start is not None:
        figures.append(
            Figure(
                "starting",
                f"{data.first_start:%Y-%m-%d %H:%M} to {data.last_start:%Y-%m-%d %H:%M} UTC",
                {"first_start": first, "last_start": last},
            )
        )
    if date_from is not None or date_to is not None:
        figures.append(
            Figure(
                "filters",
                f"--from {date_from or '-'} --to {date_to or '-'}",
                {"from": date_from, "to": date_to},
            )
        )
    figures.append(Figure("charts", f"{len(result.charts)}", {"charts": result.charts}))
    if data.sessions == 0:
        figures.append(
            Figure("left out", f"every chart: {report_module.NO_SESSIONS}", {"left_out": left_out})
        )
    else:
        for title, why in left_out.items():
            figures.append(Figure("left out", f"{title}: {why}", {"left_out": left_out}))
    figures += [
        Figure("elapsed", f"{result.elapsed_s:.2f}s", {"elapsed_s": round(result.elapsed_s, 3)}),
        Figure(
            "written to",
            f"{where} ({_size(result.size_bytes)})",
            {"output": result.output, "size_bytes": result.size_bytes},
        ),
    ]
    return figures, fields


@app.command("presets", cls=console.Command)
def list_presets() -> None:
    """List the vendor presets of --preset and what each sets."""
    console.print_presets(
        [
            (preset.name, preset.vendor, preset.reads, preset.source, preset.settings())
            for preset in presets.PRESETS.values()
        ]
    )


@app.command("report", cls=console.Command)
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
    ] = REPORT_OUTPUT,
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
        int,
        typer.Option(
            "--top",
            metavar="N",
            parser=_whole_number(1),
            help="Bars in each ranking (pages, sources, ...).",
        ),
    ] = REPORT_TOP,
    title: Annotated[str, typer.Option("--title", metavar="TEXT", help="The page's title.")] = REPORT_TITLE,
    log_format: Annotated[
        str,
        typer.Option(
            "--log-format",
            help="The summary and errors on stderr: text (a panel), or one JSON line (auto: text on a "
            "terminal, json otherwise).",
            **_choice(LOG_FORMATS),
        ),
    ] = "auto",
    quiet: Annotated[
        bool, typer.Option("-q", "--quiet", help="No summary on stderr (errors still).")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of an error.")] = False,
) -> None:
    """Write a session insights report: one self-contained HTML page of charts, for any browser."""
    reporter = console.Reporter(json=console.wants_json(log_format), debug=debug, quiet=quiet)
    try:
        from sessionize import report as report_module

        result = report_module.make_report(
            inputs, output=output, date_from=date_from, date_to=date_to, top=top, title=title
        )
    except Exception as exc:
        reporter.fail(exc)
    figures, fields = report_figures(result, date_from=date_from, date_to=date_to)
    reporter.summary("sessionize report", figures, fields)


@geoip_app.command("info", epilog=ATTRIBUTION, cls=console.Command)
def geoip_info(
    geoip_db: Annotated[
        str | None, typer.Option("--geoip-db", metavar="PATH", help="Database to describe (default: as run).")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object on stdout (errors: one JSON line on stderr).")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of an error.")] = False,
) -> None:
    """Show which GeoIP database `sessionize run` uses, its type, build date and size."""
    from sessionize import geo
    from sessionize.errors import GeoIPDatabaseError

    reporter = console.Reporter(json=as_json, debug=debug)
    try:
        info = geo.geoip_info(geoip_db=geoip_db)
    except Exception as exc:
        reporter.fail(exc)
    if info is None:
        reporter.fail(GeoIPDatabaseError(geo.NO_DATABASE_HINT))
    fields = {
        "path": str(info.path),
        "chosen_by": info.source,
        "type": info.database_type,
        "kind": info.kind,
        "built": f"{info.build_date:%Y-%m-%d}",
        "age_days": info.age_days,
        "size_bytes": info.size_bytes,
        "ip_versions": [4, 6] if info.ip_version == 6 else [4],
        "languages": list(info.languages),
        "attribution": info.attribution,
    }
    if as_json:
        console.json_line(fields, stream=sys.stdout)
        return
    size = f"{info.size_bytes / 1e6:,.1f} MB" if info.size_bytes >= 1e6 else f"{info.size_bytes:,} bytes"
    figures = [
        Figure("path", str(info.path)),
        Figure("chosen by", info.source),
        Figure("type", f"{info.database_type} ({info.kind} database)"),
        Figure("built", f"{info.build_date:%Y-%m-%d} ({info.age_days:,} days ago)"),
        Figure("size", size),
        Figure("IP versions", "IPv4 and IPv6" if info.ip_version == 6 else "IPv4 only"),
    ]
    if info.attribution:
        figures.append(Figure("attribution", info.attribution))
    console.print_fields(figures)


def main() -> None:
    """Console-script entry point."""
    # numpy, imported on first use (the geo lookup, session ids), starts OpenBLAS's thread pool, and
    # nothing here multiplies matrices: 50-60 ms of numpy's import (bench/README.md, stop 41).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    # The imports' objects live as long as the process: kept out of the cyclic collector's full
    # passes, which otherwise walk them all again (10M events: 0.14 -> 0.07 CPU-s of collections).
    gc.freeze()
    app()
