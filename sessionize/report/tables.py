"""Session tables found and read for a report: files, directories (recursively) and glob patterns,
in any format that ``sessionize run`` writes.

A directory that a distributed engine (Dask, later Spark) writes gets a ``_SUCCESS`` marker last,
as Spark and Hadoop do; one that holds part files without it is refused (see :data:`SUCCESS_MARKER`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import polars as pl

from sessionize import io
from sessionize import schema as S
from sessionize.errors import (
    IncompleteOutputError,
    NoInputFilesError,
    NotASessionTableError,
    UnknownFormatError,
    UnreadableInputError,
    UsageError,
)
from sessionize.io import OUTPUT_EXTENSIONS
from sessionize.report.columns import REPORT_COLUMNS, _check_columns, _conform

# A session table is read in any format that sessionize run writes.
_FORMATS = OUTPUT_EXTENSIONS
_SUPPORTED = ".parquet, .csv, .ndjson (what sessionize run writes)"
#: The file a distributed engine writes last in its output directory: a directory of part files
#: without it was left by a run that did not finish (killed, or failed), and may lack sessions.
SUCCESS_MARKER = "_SUCCESS"
# Part files as those engines number them, after Hadoop: Dask's part-00000.parquet, Spark's
# part-00000-<uuid>-c000.snappy.parquet. A table someone named part-1.parquet is not one.
_PART_FILE = re.compile(r"part-\d{5}.*\.parquet", re.IGNORECASE)


def resolve_session_tables(inputs: io.Inputs) -> list[str]:
    """Session table files from files, directories (recursively) and glob patterns, in a stable order.

    The paths are expanded as ``sessionize run`` expands its inputs (:func:`sessionize.io.resolve_inputs`),
    keeping the formats that ``run`` writes. One path alone is one table.
    """
    inputs = io.input_list(inputs, what="session table")
    if not inputs:
        raise UsageError("No session table given. Pass one or more .parquet, .csv or .ndjson files.")
    for raw in inputs:
        path = str(raw)
        if path == io.STDIN:
            raise UsageError("sessionize report reads session table files, not standard input.")
        if os.path.isdir(path):
            _check_complete(path)
    try:
        found = io.resolve_inputs(list(inputs), formats=("parquet", "csv", "ndjson"))
    except UnknownFormatError as exc:
        named = str(exc).split(" Supported:")[0]
        raise UnknownFormatError(f"{named} Session tables are {_SUPPORTED}.") from exc
    except NoInputFilesError as exc:
        message = str(exc)
        verb = "holds" if " holds " in message else "matches"
        where = message.split(f" {verb} ")[0]
        raise NoInputFilesError(f"{where} {verb} no session tables ({_SUPPORTED}).") from exc
    tables = [source.path for source in found if os.path.splitext(source.path.lower())[1] in _FORMATS]
    if not tables:
        raise NoInputFilesError(f"No session tables among {', '.join(map(str, inputs))} ({_SUPPORTED}).")
    return tables


def _check_complete(directory: str) -> None:
    """Refuse a directory with part files at its top level and no :data:`SUCCESS_MARKER`.

    Only the top level counts: the Hive partitions of incremental runs
    (``session_date=YYYY-MM-DD/part-0.parquet``) have no marker and need none.
    """
    try:
        names = os.listdir(directory)
    except OSError:
        return  # the search for tables finds none, and says so
    if SUCCESS_MARKER in names:
        return
    if any(_PART_FILE.fullmatch(name) and os.path.isfile(os.path.join(directory, name)) for name in names):
        raise IncompleteOutputError(
            f"The directory {directory} has part files but no {SUCCESS_MARKER} marker: the run that "
            "wrote it did not finish (it was killed or failed), so sessions may be missing. Run it "
            "again, into a new or empty directory, and make the report from that."
        )


def _scan_table(path: str) -> pl.LazyFrame:
    fmt = _FORMATS[os.path.splitext(path.lower())[1]]
    try:
        if fmt == "parquet":
            frame = pl.scan_parquet(path, glob=False)
            names = frame.collect_schema().names()
        elif fmt == "csv":
            if os.path.getsize(path) == 0:
                raise NotASessionTableError(f"{path} is empty: not a session table.")
            names = pl.scan_csv(path, infer_schema=False, glob=False).collect_schema().names()
            # Only the report's columns are typed: the others are never read.
            types = {c: S.SESSION_SCHEMA[c] for c in names if c in REPORT_COLUMNS}
            frame = pl.scan_csv(path, infer_schema=False, schema_overrides=types, glob=False)
        elif os.path.getsize(path) == 0:
            # No sessions: what `sessionize run -o x.ndjson` writes for none (JSON lines have no header).
            names = [c for c in REPORT_COLUMNS if c in S.SESSION_SCHEMA]
            frame = pl.LazyFrame(schema={c: S.SESSION_SCHEMA[c] for c in names})
        else:
            frame = pl.scan_ndjson(path, infer_schema_length=None)
            names = frame.collect_schema().names()
    except (pl.exceptions.PolarsError, OSError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnreadableInputError(
            f"{path}: cannot be read as {fmt.upper() if fmt != 'parquet' else 'Parquet'} ({detail}). "
            "Check that the file is complete."
        ) from exc
    _check_columns(names, path)
    return _conform(frame, [c for c in REPORT_COLUMNS if c in names])


def read_session_tables(inputs: io.Inputs) -> pl.LazyFrame:
    """One lazy frame of the report's columns from session tables (Parquet, CSV or NDJSON).

    ``inputs`` are files, directories (every table inside, recursively) or glob patterns. Tables may
    differ in their columns (a column missing from some is null there). Raises
    :class:`~sessionize.errors.NotASessionTableError` for a file without ``user_id``, ``session_start``
    or ``duration_s``, and :class:`~sessionize.errors.IncompleteOutputError` for a directory of part
    files (``part-00000.parquet``, ...) without its ``_SUCCESS`` marker.
    """
    return _read_tables(resolve_session_tables(inputs))


def _read_tables(files: Sequence[str]) -> pl.LazyFrame:
    frames = [_scan_table(path) for path in files]
    return frames[0] if len(frames) == 1 else pl.concat(frames, how="diagonal_relaxed")
