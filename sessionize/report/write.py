"""Writing the report: :func:`make_report` reads session tables and writes their page (what
``sessionize report`` does); :func:`write_report` writes the page of a table in memory (what
``sessionize run --report`` does). Both write atomically, or to stdout."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import polars as pl

from sessionize.config import whole_number
from sessionize.errors import OutputError, UnreadableInputError, UsageError
from sessionize.io import Inputs, Publication, check_directory
from sessionize.report.aggregate import (
    DEFAULT_TOP,
    MAX_TOP,
    ReportData,
    aggregate_sessions,
    parse_date_bound,
)
from sessionize.report.columns import RANKINGS
from sessionize.report.render import DEFAULT_TITLE, render_report
from sessionize.report.tables import _read_tables, resolve_session_tables

DEFAULT_OUTPUT = "report.html"
STDOUT = "-"


@dataclass
class ReportResult:
    """What :func:`make_report` or :func:`write_report` did."""

    output: str
    data: ReportData
    size_bytes: int
    elapsed_s: float
    sources: list[str] = field(default_factory=list)

    @property
    def charts(self) -> list[str]:
        """Keys of the charts on the page."""
        keys = ["timeline", "durations", "new_vs_returning", *(spec.key for spec in RANKINGS)]
        return [key for key in keys if key not in self.data.left_out]

    @property
    def left_out(self) -> dict[str, str]:
        return self.data.left_out


def check_report_output(output: str | Path, inputs: Sequence[str] = (), *, option: str = "-o") -> str:
    """The report's path, after checking that its directory exists and that it is not an input.

    ``-`` means stdout. ``option`` is the flag that named it (``-o`` of ``sessionize report``, ``--report``
    of ``sessionize run``), which the messages tell to change.
    """
    target = str(output)
    if target == STDOUT:
        return target
    real = os.path.realpath(target)
    if os.path.isdir(real):
        raise OutputError(
            f"Cannot write the report to {target}: it is a directory. Name a file: {option} report.html."
        )
    for source in inputs:
        if os.path.realpath(source) == real:
            raise OutputError(f"The report {target} is also an input: choose another path with {option}.")
    check_directory(os.path.dirname(real), str(target))
    return target


def write_report(
    sessions: pl.LazyFrame | pl.DataFrame,
    output: str | Path,
    *,
    date_from: str | date | None = None,
    date_to: str | date | None = None,
    top: int = DEFAULT_TOP,
    title: str = DEFAULT_TITLE,
    sources: Sequence[str] = (),
) -> ReportResult:
    """Aggregate a session table and write its report page to ``output`` (atomically; ``-`` is stdout).

    ``date_from``/``date_to`` are dates or timestamps (ISO 8601 text or objects; see
    :func:`parse_date_bound`). ``sources`` names the inputs in the page's header (and the report
    may not overwrite one of them).
    """
    started = time.perf_counter()
    start, end = _date_bounds(date_from, date_to)
    target = check_report_output(output, sources)
    data = _collect(lambda: aggregate_sessions(sessions, date_from=start, date_to=end, top=top), sources)
    page = render_report(data, title=title, sources=sources)
    encoded = page.encode("utf-8")
    # Files by rename, stdout and devices by a checked copy: never a truncated page with success.
    with Publication() as publication:
        publication.write_bytes(target, encoded)
        publication.publish_all()
    size = len(encoded)
    return ReportResult(
        output=target,
        data=data,
        size_bytes=size,
        elapsed_s=time.perf_counter() - started,
        sources=list(sources),
    )


def _date_bounds(
    date_from: str | date | None, date_to: str | date | None
) -> tuple[datetime | None, datetime | None]:
    start = parse_date_bound(date_from, option="--from")
    end = parse_date_bound(date_to, option="--to", end=True)
    if start is not None and end is not None and start >= end:
        raise UsageError(f"--from ({date_from}) must be before --to ({date_to}).")
    return start, end


def _collect(compute: Callable[[], ReportData], sources: Sequence[str]) -> ReportData:
    try:
        return compute()
    except pl.exceptions.PolarsError as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        where = ", ".join(sources) or "The session table"
        raise UnreadableInputError(
            f"{where}: a column does not hold what a session table does ({detail}). Check that the "
            "files are session tables written by sessionize run."
        ) from exc


def make_report(
    inputs: Inputs,
    *,
    output: str | Path = DEFAULT_OUTPUT,
    date_from: str | date | None = None,
    date_to: str | date | None = None,
    top: int | str = DEFAULT_TOP,
    title: str = DEFAULT_TITLE,
) -> ReportResult:
    """Read session tables and write their report: what ``sessionize report`` does.

    ``inputs`` are Parquet, CSV or NDJSON session tables, directories of them or glob patterns.

    Examples
    --------
    ``sessionize.make_report(["sessions.parquet"], output="report.html", date_from="2024-05-01")``
    """
    started = time.perf_counter()
    # Usage errors first, before any file is read.
    _date_bounds(date_from, date_to)
    top = whole_number("top", top)
    if not 1 <= top <= MAX_TOP:
        raise UsageError(f"--top must be from 1 to {MAX_TOP:,}, got {top}.")
    files = resolve_session_tables(inputs)
    check_report_output(output, files)
    result = write_report(
        _read_tables(files), output, date_from=date_from, date_to=date_to, top=top, title=title, sources=files
    )
    result.elapsed_s = time.perf_counter() - started
    return result
