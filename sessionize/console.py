"""The CLI's console: every line ``sessionize`` prints goes through here.

- **Text is text.** Values, file names, URLs, messages and help are never read as rich markup:
  the consoles made here have markup, emoji codes and highlighting off and print
  :class:`rich.text.Text`; the help text that typer reads as markup is escaped first (:func:`escape`),
  so ``?page[number]=2``, ``[/red]`` or ``'sessionize[dask]'`` come out as written.
- **One place decides panel or JSON** (:func:`wants_json`, :func:`json_for_argv`): with
  ``--log-format json``, or ``auto`` when stderr is not a terminal, every outcome of a command
  (success, usage error, data error, lock held) is exactly one JSON line on stderr with ``status`` and
  ``exit_code``; warnings go into that line. Otherwise: panels and plain lines.
- **Nothing is cut off a terminal**: a console on a pipe or a file is as wide as what it prints.
- The terminal preview of a session table fits the terminal; the progress display shows each stage
  with its elapsed time.

rich is imported when something is printed, not when the CLI starts (``sessionize --version``).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import sys
import time
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any, NoReturn

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup

from sessionize.display import visible
from sessionize.errors import ClosedPipeError, SessionizeError, permission_denied

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.text import Text

#: What ``--log-format`` takes.
LOG_FORMATS = ("auto", "text", "json")
#: The commands whose summary is a JSON line off a terminal (``--log-format auto``).
AUTO_JSON_COMMANDS = frozenset({"run", "report"})
#: The width of a console that is not a terminal: wide enough that nothing is wrapped or cut.
UNBOUNDED_WIDTH = 1_000_000

# rich's markup tags: ``[`` then a letter, ``#``, ``/`` or ``@`` (rich.markup.RE_TAGS). Kept here so
# that escaping help text at start-up does not import rich.
_MARKUP_TAG = re.compile(r"(\\*)(\[[a-z#/@][^[]*?])")


def escape(text: object) -> str:
    """``text`` as rich markup that renders as itself (as :func:`rich.markup.escape` does).

    >>> escape("pip install 'sessionize[dask]'")
    "pip install 'sessionize\\\\[dask]'"
    """
    # Unlike rich's escape, a trailing backslash is left alone: help text is never followed by markup.
    return _MARKUP_TAG.sub(lambda m: f"{m.group(1)}{m.group(1)}\\{m.group(2)}", str(text))


# Terminals and consoles --------------------------------------------------------------------------


def is_terminal(stream: IO[Any] | None) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (ValueError, OSError):  # closed, or not a real stream
        return False


def stdout_is_terminal() -> bool:
    return is_terminal(sys.stdout)


def stderr_is_terminal() -> bool:
    return is_terminal(sys.stderr)


def make_console(*, stderr: bool, terminal: bool | None = None) -> Console:
    """A rich console on stdout or stderr that never reads markup, emoji codes or highlights.

    On a terminal it is as wide as the terminal (``$COLUMNS`` when set); elsewhere it is unbounded,
    so that a pipe or a log file gets whole lines (``sessionize geoip info | grep path``).
    """
    from rich.console import Console

    if terminal is None:
        terminal = stderr_is_terminal() if stderr else stdout_is_terminal()
    return Console(
        stderr=stderr,
        markup=False,
        emoji=False,
        highlight=False,
        width=None if terminal else UNBOUNDED_WIDTH,
    )


def text(value: object, style: str = "") -> Text:
    """A renderable that shows ``value`` exactly (never markup; control characters as escapes)."""
    from rich.text import Text

    return Text("" if value is None else visible(str(value)), style=style)


# Panel or JSON -----------------------------------------------------------------------------------


def wants_json(log_format: str | None) -> bool:
    """Whether a command's messages are JSON lines: ``json``, or ``auto`` with stderr not a terminal."""
    if log_format == "json":
        return True
    return log_format in (None, "auto") and not stderr_is_terminal()


def _option_value(argv: Sequence[str], option: str) -> str | None:
    """The last value given to ``option`` in raw arguments (``--opt value`` or ``--opt=value``)."""
    value = None
    for index, arg in enumerate(argv):
        if arg == "--":
            break
        if arg == option and index + 1 < len(argv):
            value = argv[index + 1]
        elif arg.startswith(option + "="):
            value = arg.split("=", 1)[1]
    return value


def _config_log_format(path: str) -> str | None:
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError):
        return None
    table = data.get("run", data)
    if not isinstance(table, Mapping):
        return None
    value = table.get("log-format", table.get("log_format"))
    return value if isinstance(value, str) else None


def command_of(argv: Sequence[str]) -> str | None:
    """The subcommand named in raw arguments (the first word that is not an option)."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def json_for_argv(argv: Sequence[str]) -> bool:
    """Whether an error found while the arguments are parsed (an unknown option, a bad choice) is a
    JSON line: the form the command would have used for its summary, from the raw arguments."""
    command = command_of(argv)
    if command == "geoip":
        return "--json" in argv
    log_format = _option_value(argv, "--log-format")
    if log_format is None:
        config = _option_value(argv, "--config")
        log_format = None if config is None else _config_log_format(config)
    if log_format in ("json", "text"):
        return log_format == "json"
    return command in AUTO_JSON_COMMANDS and not stderr_is_terminal()


def json_line(fields: Mapping[str, Any], *, stream: IO[str] | None = None) -> None:
    """One JSON object on one line (stderr by default), flushed."""
    out = sys.stderr if stream is None else stream
    out.write(json.dumps(fields, default=str) + "\n")
    out.flush()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Figure:
    """One line of a summary: its label and text in the panel, and the same figures for the JSON line."""

    label: str
    text: str
    fields: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Reporter:
    """Where one command's messages go: a panel and plain lines, or one JSON line per outcome."""

    json: bool
    debug: bool = False
    quiet: bool = False
    started: float = field(default_factory=time.time)
    #: Warnings of the run: printed at once as text, carried in the outcome's line as JSON.
    warnings: list[str] = field(default_factory=list)

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        if not self.json and not self.quiet:
            from rich.text import Text

            make_console(stderr=True).print(Text("Warning: ", style="yellow") + text(message))

    def hint(self, message: str) -> None:
        """A line for a person at a terminal (never in JSON mode, never with --quiet)."""
        if not self.json and not self.quiet:
            make_console(stderr=True).print(text(message))

    def fail(self, exc: BaseException) -> NoReturn:
        """Show an error (a panel, or the outcome's JSON line) and exit with its code."""
        if isinstance(exc, SessionizeError):
            message, code = str(exc), exc.exit_code
        elif isinstance(exc, PermissionError) and exc.filename:
            # Wherever a file turned out unreadable or unwritable (an input, a state, an output's folder):
            # no bug of ours, and nothing a traceback would tell the user.
            message, code = permission_denied(str(exc.filename)), 1
        else:
            message = f"Unexpected error: {type(exc).__name__}: {exc}"
            if not self.debug:
                message += "\nRun again with --debug to see the traceback."
            code = 1
        if self.debug:
            make_console(stderr=True).print_exception(show_locals=False)
        if self.json:
            json_line(
                {
                    "ts": _now(),
                    "status": "error",
                    "error": type(exc).__name__,
                    "message": message,
                    "exit_code": code,
                    "elapsed_s": round(time.time() - self.started, 3),
                    "warnings": self.warnings,
                }
            )
        elif not isinstance(exc, ClosedPipeError):
            # A reader that stopped reading (``| head``) ends the run quietly, with 141 as a shell would
            # report a program killed by SIGPIPE; every other error gets its panel.
            error_panel(message, title="Usage error" if code == 2 else "Error")
        raise typer.Exit(code)

    def summary(self, title: str, figures: Sequence[Figure], fields: Mapping[str, Any]) -> None:
        """The outcome of a successful command: a green panel of ``figures``, or one JSON line of
        ``fields`` and every figure's fields (so the line carries whatever the panel shows)."""
        if self.quiet:
            return
        if self.json:
            line: dict[str, Any] = {"ts": _now(), "status": "ok", "exit_code": 0, **fields}
            for figure in figures:
                line.update(figure.fields)
            line["warnings"] = self.warnings
            json_line(line)
            return
        from rich.panel import Panel

        make_console(stderr=True).print(
            Panel(grid(figures), title=text(title), title_align="left", border_style="green", expand=False)
        )


def grid(figures: Sequence[Figure]) -> RenderableType:
    """Labels and values in two columns (never markup)."""
    from rich.table import Table

    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for figure in figures:
        table.add_row(text(figure.label), text(figure.text))
    return table


def print_fields(figures: Sequence[Figure], *, stderr: bool = False) -> None:
    """Labels and values, one pair a line: a grid on a terminal; plain ``label  value`` lines off one
    (no padding after the value, nothing wrapped), for ``grep`` and ``cut``."""
    terminal = stderr_is_terminal() if stderr else stdout_is_terminal()
    out = make_console(stderr=stderr, terminal=terminal)
    if terminal:
        out.print(grid(figures))
        return
    width = max((len(figure.label) for figure in figures), default=0)
    for figure in figures:
        out.print(text(f"{figure.label:<{width}}  {figure.text}"), soft_wrap=True)


def print_presets(presets: Sequence[tuple[str, str, str, str, Sequence[tuple[str, str]]]]) -> None:
    """``sessionize presets``: each preset's name, vendor, what it reads, its source and its settings."""
    figures: list[Figure] = []
    for name, vendor, reads, source, settings in presets:
        figures.append(Figure(name, f"{vendor}: {reads}"))
        figures.append(Figure("  follows", source))
        figures.extend(Figure(f"  {option}", value) for option, value in settings)
    print_fields(figures)


def error_panel(message: str, *, title: str = "Error") -> None:
    from rich.panel import Panel

    make_console(stderr=True).print(
        Panel(text(message), title=text(title), title_align="left", border_style="red", expand=False)
    )


def show_usage_error(exc: typer.TyperException, *, json: bool) -> int:
    """An error of the command line itself (unknown option, bad value, missing argument), as typer
    finds it before a command runs: a JSON line or the usage, a hint and a panel. Returns the code."""
    code = exc.exit_code
    message = exc.format_message()
    if json:
        json_line(
            {
                "ts": _now(),
                "status": "error",
                "error": type(exc).__name__,
                "message": message,
                "exit_code": code,
            }
        )
        return code
    ctx = getattr(exc, "ctx", None)
    console = make_console(stderr=True)
    if ctx is not None:
        console.print(text(ctx.get_usage()))
        if ctx.command.get_help_option(ctx) is not None:
            console.print(text(f"Try '{ctx.command_path} {ctx.help_option_names[0]}' for help."), style="dim")
    error_panel(message, title="Usage error" if code == 2 else "Error")
    return code


# Help that renders as written ---------------------------------------------------------------------


class _Display:
    """What the CLI's commands and groups share: help text escaped for typer's rich markup, flags
    without a ``<bool>`` type, arguments named in the usage line as their metavar."""

    help: str | None
    epilog: str | None
    short_help: str | None
    params: list[Any]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._escape_help()

    def get_params(self, ctx: Any) -> list[Any]:
        params: list[Any] = super().get_params(ctx)  # type: ignore[misc]
        for param in params:  # with those typer adds later: --help, --install-completion
            _tidy(param)
        return params

    def _escape_help(self) -> None:
        for name in ("help", "epilog", "short_help"):
            value = getattr(self, name, None)
            if value:
                setattr(self, name, escape(value))
        for param in self.params:
            if getattr(param, "help", None):
                param.help = escape(param.help)


def _tidy(param: Any) -> None:
    if getattr(param, "is_flag", False) and param.metavar is None:
        # A flag takes no value: no ``<bool>`` beside it (``--dedupe``, not ``--dedupe <bool>``).
        param.metavar = ""
    if isinstance(param, TyperArgument) and param.metavar:
        # ``INPUT`` says what to give; its Python type (``<list[str]>``) does not.
        setattr(param, "display_type_rich", lambda ctx: None)  # noqa: B010 (an instance's method)


def _usage_pieces(command: Any, ctx: Any) -> list[str]:
    pieces = [command.options_metavar] if command.options_metavar else []
    for param in command.get_params(ctx):
        if isinstance(param, TyperArgument):
            name = param.metavar or (param.name or "").upper()
            name = name if param.required else f"[{name}]"
            pieces.append(name + ("..." if param.nargs != 1 else ""))
    return pieces


#: Words a flag is sometimes given as a value (``--dedupe true``), which would be read as an input.
BOOLEAN_WORDS = frozenset({"true", "false", "yes", "no", "on", "off", "1", "0"})


class Command(_Display, TyperCommand):
    """A command whose help shows as written (see :class:`_Display`), and which says so when a flag
    is given a value (``--dedupe true``: ``true`` would be taken for an input file)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        flags = {
            name: param
            for param in self.get_params(ctx)
            if getattr(param, "is_flag", False)
            for name in param.opts
        }
        for flag, value in itertools.pairwise(args):
            if flag == "--":
                break
            if flag in flags and value.lower() in BOOLEAN_WORDS and not os.path.lexists(value):
                raise typer.BadParameter(
                    f"{value}: no such file or directory. {flag} takes no value: it is a flag, on when "
                    f"given and off when left out (write {flag} alone).",
                    ctx=ctx,
                    param=flags[flag],
                )
        return super().parse_args(ctx, args)

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return _usage_pieces(self, ctx)


class Group(_Display, TyperGroup):
    """A group whose help shows as written, and, as the CLI's root, the one place that turns an error
    of the command line into a panel or a JSON line (:func:`show_usage_error`)."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        try:
            result = super().main(
                argv,
                prog_name=prog_name,
                complete_var=complete_var,
                standalone_mode=False,
                windows_expand_args=windows_expand_args,
                **extra,
            )
        except typer.TyperException as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":
                # ``sessionize`` alone: typer printed the help.
                code = exc.exit_code
            else:
                code = show_usage_error(exc, json=json_for_argv(argv))
        except typer.Abort:
            make_console(stderr=True).print(text("Aborted.", style="red"))
            code = 1
        else:
            # Not standalone, typer returns the code of a typer.Exit, or the command's return value.
            code = result if isinstance(result, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code


# The terminal preview ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PreviewColumn:
    name: str
    header: str
    right: bool = False
    max_width: int | None = None
    format: Callable[[Any], str] = str


def short_duration(seconds: float | None) -> str:
    """``42s``, ``12m 05s``, ``3h 02m``: rounded to what a person reads.

    >>> short_duration(0.4), short_duration(725), short_duration(10_980)
    ('0s', '12m 05s', '3h 03m')
    """
    if seconds is None:
        return "-"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes + round(secs / 60), 60)
    return f"{hours}h {minutes:02d}m"


def _short_time(value: datetime) -> str:
    return f"{value:%Y-%m-%d %H:%M}"


#: The preview's columns, in the order a person scans a session: who, when, how long, how much,
#: from where, where they landed (which takes the width that is left).
PREVIEW_COLUMNS = (
    PreviewColumn("user_id", "user_id", max_width=20),
    PreviewColumn("session_number", "#", right=True),
    PreviewColumn("session_start", "start (UTC)", format=_short_time),
    PreviewColumn("duration_s", "duration", right=True, format=short_duration),
    PreviewColumn("pageview_count", "pages", right=True, format=lambda n: f"{n:,}"),
    PreviewColumn("traffic_source", "source", max_width=16),
    PreviewColumn("channel", "channel", max_width=16),
    PreviewColumn("country_code", "country"),
    PreviewColumn("landing_page", "landing_page"),
)
#: The column that takes the width the others leave, and the least it may have before a column of
#: :data:`PREVIEW_DROP_ORDER` is left out to make room.
PREVIEW_FLEXIBLE = "landing_page"
PREVIEW_FLEXIBLE_MIN = 20
PREVIEW_DROP_ORDER = (
    "country_code",
    "channel",
    "session_number",
    "traffic_source",
    "pageview_count",
    "duration_s",
)
#: Blank characters between two columns.
PREVIEW_GAP = 2


def preview_layout(
    rows: Sequence[Mapping[str, Any]], width: int
) -> list[tuple[PreviewColumn, int, list[str]]]:
    """The columns of the preview that fit ``width`` characters: each with its width and its cells.

    Columns empty in every row shown are left out; every column but the landing page gets the width
    of its longest cell (up to its ``max_width``); the landing page gets what is left, and when that is
    too little, the columns of :data:`PREVIEW_DROP_ORDER` are left out one by one.
    """
    columns = []
    for column in PREVIEW_COLUMNS:
        if not rows or column.name not in rows[0]:
            continue
        values = [row[column.name] for row in rows]
        if all(value is None for value in values) and column.name != "user_id":
            continue
        cells = ["" if value is None else column.format(value) for value in values]
        natural = max([len(column.header), *(len(cell) for cell in cells)])
        columns.append((column, min(natural, column.max_width or natural), cells))

    def flexible_width(chosen: list[tuple[PreviewColumn, int, list[str]]]) -> int:
        fixed = sum(w for c, w, _ in chosen if c.name != PREVIEW_FLEXIBLE)
        return width - fixed - PREVIEW_GAP * (len(chosen) - 1)

    drop = list(PREVIEW_DROP_ORDER)
    while flexible_width(columns) < PREVIEW_FLEXIBLE_MIN and drop:
        name = drop.pop(0)
        columns = [entry for entry in columns if entry[0].name != name]
    layout = []
    for column, natural, cells in columns:
        if column.name == PREVIEW_FLEXIBLE:
            natural = max(min(natural, flexible_width(columns)), len(column.header))
        layout.append((column, natural, cells))
    return layout


def preview(rows: Sequence[Mapping[str, Any]], *, total: int, terminal: bool | None = None) -> None:
    """The first sessions as a table on stdout that fits the terminal: one line per session, long
    values cut with an ellipsis, short timestamps, numbers right-aligned and rounded."""
    from rich.table import Table

    out = make_console(stderr=False, terminal=stdout_is_terminal() if terminal is None else terminal)
    table = Table(
        title=text(f"First {len(rows)} of {total:,} sessions"),
        title_justify="left",
        box=None,
        pad_edge=False,
        padding=(0, PREVIEW_GAP // 2),
        header_style="bold",
    )
    layout = preview_layout(rows, out.width)
    for column, width, _ in layout:
        table.add_column(
            text(column.header),
            justify="right" if column.right else "left",
            no_wrap=True,
            overflow="ellipsis",
            width=width,
        )
    for index in range(len(rows)):
        table.add_row(*(text(cells[index]) for _, _, cells in layout))
    out.print(table)


# Progress ----------------------------------------------------------------------------------------

#: Labels of the stages the engines report (``RunProgress.stage``), with the unit of their steps.
STAGE_LABELS = {"read": "Reading", "buckets": "Sessionizing"}


@contextlib.contextmanager
def progress(*, enabled: bool, unit: str = "buckets") -> Iterator[Callable[[Any], None] | None]:
    """A progress display on stderr: one line per stage (reading files; sessionizing, in ``unit``
    (buckets, partitions) when there are several; then writing the outputs) with steps, rows, rate and
    elapsed time. ``None`` when disabled or stderr is not a terminal. The callback takes ``RunProgress``."""
    if not enabled or not stderr_is_terminal():
        yield None
        return
    from rich.progress import (
        BarColumn,
        Progress,
        SpinnerColumn,
        TaskID,
        TextColumn,
        TimeElapsedColumn,
    )

    columns = (
        SpinnerColumn(finished_text="[green]✓"),
        TextColumn("{task.description}", markup=False),
        BarColumn(bar_width=24),
        TextColumn("{task.fields[steps]}", markup=False, justify="right"),
        TextColumn("{task.fields[detail]}", markup=False),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=make_console(stderr=True), transient=True) as display:
        tasks: dict[str, tuple[TaskID, float]] = {}

        def update(event: Any) -> None:
            stage = event.stage
            if stage not in tasks:
                label = STAGE_LABELS.get(stage, stage.capitalize())
                if stage == "read":
                    label += " files"
                elif event.total > 1:
                    label += f" in {event.total:,} {unit}"
                task_id = display.add_task(label, total=event.total, steps="", detail="")
                tasks[stage] = (task_id, time.perf_counter())
            task, started = tasks[stage]
            elapsed = max(time.perf_counter() - started, 1e-9)
            rate = f" ({event.rows / elapsed:,.0f}/s)" if event.rows else ""
            display.update(
                task,
                completed=event.done,
                steps=f"{event.done:,}/{event.total:,}",
                detail=f"{event.rows:,} rows{rate}",
            )
            if stage == "buckets" and event.done >= event.total and "write" not in tasks:
                display.stop_task(task)
                tasks["write"] = (
                    display.add_task("Writing outputs", total=None, steps="", detail=""),
                    time.perf_counter(),
                )
            elif stage == "read" and event.done >= event.total:
                display.stop_task(task)

        yield update
