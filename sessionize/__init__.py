"""sessionize: turn raw web and product event logs into a session table.

Use :func:`sessionize` on a Polars frame, or :func:`run` on files (what ``sessionize run`` does).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from sessionize._version import __version__

if TYPE_CHECKING:
    from sessionize.attribution import enrich_attribution
    from sessionize.config import RunConfig
    from sessionize.core import assign_sessions, summarize_pageviews, summarize_sessions, summarize_users
    from sessionize.errors import (
        BadNumberError,
        BadTimestampError,
        ClosedPipeError,
        EngineError,
        EngineUnavailableError,
        GeoIPDatabaseError,
        IncompleteOutputError,
        InputError,
        InvalidEventsError,
        LateEventsError,
        MalformedRowsError,
        MissingColumnError,
        MissingUserIdError,
        NoInputFilesError,
        NotASessionTableError,
        OutOfRangeError,
        OutputError,
        RefererDatabaseError,
        SessionizeError,
        SessionizeWarning,
        StateError,
        StateLockedError,
        StoppedError,
        SumOverflowError,
        UnknownFormatError,
        UnreadableInputError,
        UsageError,
    )
    from sessionize.geo import GeoDatabaseInfo, enrich_geo, geoip_info
    from sessionize.io import read_events, resolve_inputs, write_sessions
    from sessionize.normalize import prepare_events
    from sessionize.pipeline import RunResult, Tables, build_sessions, run, sessionize, sessionize_tables
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

#: Where each public name lives. They are imported on first use, so that ``import sessionize`` (and
#: ``sessionize --version``) does not load the engines, the geo lookups and the report's charts.
_MODULES = {
    "sessionize.attribution": ("enrich_attribution",),
    "sessionize.config": ("RunConfig",),
    "sessionize.core": ("assign_sessions", "summarize_pageviews", "summarize_sessions", "summarize_users"),
    "sessionize.errors": (
        "BadNumberError",
        "BadTimestampError",
        "ClosedPipeError",
        "EngineError",
        "EngineUnavailableError",
        "GeoIPDatabaseError",
        "IncompleteOutputError",
        "InputError",
        "InvalidEventsError",
        "LateEventsError",
        "MalformedRowsError",
        "MissingColumnError",
        "MissingUserIdError",
        "NoInputFilesError",
        "NotASessionTableError",
        "OutOfRangeError",
        "OutputError",
        "RefererDatabaseError",
        "SessionizeError",
        "SessionizeWarning",
        "StateError",
        "StateLockedError",
        "StoppedError",
        "SumOverflowError",
        "UnknownFormatError",
        "UnreadableInputError",
        "UsageError",
    ),
    "sessionize.geo": ("GeoDatabaseInfo", "enrich_geo", "geoip_info"),
    "sessionize.io": ("read_events", "resolve_inputs", "write_sessions"),
    "sessionize.normalize": ("prepare_events",),
    "sessionize.pipeline": (
        "RunResult",
        "Tables",
        "build_sessions",
        "run",
        "sessionize",
        "sessionize_tables",
    ),
    "sessionize.report": (
        "ReportData",
        "ReportResult",
        "aggregate_sessions",
        "make_report",
        "read_session_tables",
        "render_report",
        "write_report",
    ),
    "sessionize.schema": (
        "DEFAULT_PAGEVIEW_EVENTS",
        "DEFAULT_TIMEOUT",
        "SESSION_COLUMNS",
        "SESSION_SCHEMA",
        "ColumnMap",
        "resolve_columns",
    ),
}
_WHERE = {name: module for module, names in _MODULES.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        if not name.startswith("__"):
            # ``sessionize.schema`` and the other submodules, as an eager import made them attributes.
            try:
                return import_module(f"{__name__}.{name}")
            except ModuleNotFoundError as exc:
                if exc.name != f"{__name__}.{name}":
                    raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "DEFAULT_PAGEVIEW_EVENTS",
    "DEFAULT_TIMEOUT",
    "SESSION_COLUMNS",
    "SESSION_SCHEMA",
    "BadNumberError",
    "BadTimestampError",
    "ClosedPipeError",
    "ColumnMap",
    "EngineError",
    "EngineUnavailableError",
    "GeoDatabaseInfo",
    "GeoIPDatabaseError",
    "IncompleteOutputError",
    "InputError",
    "InvalidEventsError",
    "LateEventsError",
    "MalformedRowsError",
    "MissingColumnError",
    "MissingUserIdError",
    "NoInputFilesError",
    "NotASessionTableError",
    "OutOfRangeError",
    "OutputError",
    "RefererDatabaseError",
    "ReportData",
    "ReportResult",
    "RunConfig",
    "RunResult",
    "SessionizeError",
    "SessionizeWarning",
    "StateError",
    "StateLockedError",
    "StoppedError",
    "SumOverflowError",
    "Tables",
    "UnknownFormatError",
    "UnreadableInputError",
    "UsageError",
    "__version__",
    "aggregate_sessions",
    "assign_sessions",
    "build_sessions",
    "enrich_attribution",
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
    "sessionize_tables",
    "summarize_pageviews",
    "summarize_sessions",
    "summarize_users",
    "write_report",
    "write_sessions",
]
