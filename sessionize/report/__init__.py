"""The session insights report: one self-contained HTML page of charts from session tables.

Three steps, each usable alone:

- :func:`aggregate_sessions` computes every figure of the page from a session table in Polars (a pure
  function of a LazyFrame); only these small aggregates go on, so the page's size and build time do not
  grow with the number of sessions.
- :func:`render_report` turns the aggregates into HTML, with Plotly charts and plotly.js inlined once:
  no CDN, no network, the page opens from disk and can be mailed.
- :func:`make_report` reads session tables (what ``sessionize report`` does) and :func:`write_report`
  writes the page for a table in memory (what ``sessionize run --report`` does), atomically.

Modules: :mod:`~sessionize.report.columns` (the columns a report reads), :mod:`~.aggregate` (the
figures), :mod:`~.tables` (finding and reading session tables), :mod:`~.figures` (the Plotly charts),
:mod:`~.render` (the page) and :mod:`~.write` (writing it). The names below are the public API.
"""

from __future__ import annotations

from sessionize.report.aggregate import (
    DEFAULT_TOP,
    DURATION_BUCKETS,
    HOURLY_MAX_DAYS,
    NO_SESSIONS,
    Ranking,
    ReportData,
    Timeline,
    aggregate_sessions,
    parse_date_bound,
)
from sessionize.report.columns import RANKINGS, REPORT_COLUMNS, REQUIRED_COLUMNS
from sessionize.report.render import DEFAULT_TITLE, chart_title, format_duration, render_report
from sessionize.report.tables import SUCCESS_MARKER, read_session_tables, resolve_session_tables
from sessionize.report.write import (
    DEFAULT_OUTPUT,
    STDOUT,
    ReportResult,
    check_report_output,
    make_report,
    write_report,
)

__all__ = [
    "DEFAULT_OUTPUT",
    "DEFAULT_TITLE",
    "DEFAULT_TOP",
    "DURATION_BUCKETS",
    "HOURLY_MAX_DAYS",
    "NO_SESSIONS",
    "RANKINGS",
    "REPORT_COLUMNS",
    "REQUIRED_COLUMNS",
    "STDOUT",
    "SUCCESS_MARKER",
    "Ranking",
    "ReportData",
    "ReportResult",
    "Timeline",
    "aggregate_sessions",
    "chart_title",
    "check_report_output",
    "format_duration",
    "make_report",
    "parse_date_bound",
    "read_session_tables",
    "render_report",
    "resolve_session_tables",
    "write_report",
]
