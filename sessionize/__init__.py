"""sessionize: turn raw web and product event logs into a session table.

Use :func:`sessionize` on a Polars frame, or :func:`run` on files (what ``sessionize run`` does).
"""

from __future__ import annotations

from sessionize._version import __version__
from sessionize.core import assign_sessions, summarize_sessions
from sessionize.errors import (
    BadTimestampError,
    GeoIPDatabaseError,
    InputError,
    InvalidEventsError,
    MissingColumnError,
    MissingUserIdError,
    NoInputFilesError,
    NotASessionTableError,
    OutputError,
    SessionizeError,
    SessionizeWarning,
    UnknownFormatError,
    UnreadableInputError,
    UsageError,
)
from sessionize.geo import GeoDatabaseInfo, enrich_geo, geoip_info
from sessionize.io import read_events, resolve_inputs, write_sessions
from sessionize.normalize import prepare_events
from sessionize.pipeline import RunResult, build_sessions, run, sessionize
from sessionize.report import (
    ReportData,
    ReportResult,
    aggregate_sessions,
    make_report,
    read_session_tables,
    render_report,
    write_report,
)
from sessionize.schema import (
    DEFAULT_PAGEVIEW_EVENTS,
    DEFAULT_TIMEOUT,
    SESSION_COLUMNS,
    SESSION_SCHEMA,
    ColumnMap,
    resolve_columns,
)

__all__ = [
    "DEFAULT_PAGEVIEW_EVENTS",
    "DEFAULT_TIMEOUT",
    "SESSION_COLUMNS",
    "SESSION_SCHEMA",
    "BadTimestampError",
    "ColumnMap",
    "GeoDatabaseInfo",
    "GeoIPDatabaseError",
    "InputError",
    "InvalidEventsError",
    "MissingColumnError",
    "MissingUserIdError",
    "NoInputFilesError",
    "NotASessionTableError",
    "OutputError",
    "ReportData",
    "ReportResult",
    "RunResult",
    "SessionizeError",
    "SessionizeWarning",
    "UnknownFormatError",
    "UnreadableInputError",
    "UsageError",
    "__version__",
    "aggregate_sessions",
    "assign_sessions",
    "build_sessions",
    "enrich_geo",
    "geoip_info",
    "make_report",
    "prepare_events",
    "read_events",
    "read_session_tables",
    "render_report",
    "resolve_columns",
    "resolve_inputs",
    "run",
    "sessionize",
    "summarize_sessions",
    "write_report",
    "write_sessions",
]
