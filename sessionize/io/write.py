"""Writing tables: the formats' serializers, and the checks that an output can be written."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Final

import polars as pl

from sessionize.errors import OutputError
from sessionize.io.formats import STDIN, OutputFormat
from sessionize.io.inputs import InputFile

#: Timestamps in CSV and NDJSON outputs: ISO 8601 in UTC with microseconds.
CSV_DATETIME_FORMAT: Final = "%Y-%m-%dT%H:%M:%S%.6fZ"
#: Compression of every Parquet output: zstd at level 1 wrote the 37-column table of 2.5M sessions in
#: 0.95 s against 1.2-1.4 s at Polars' default level, and the file was no larger (103 vs 105 MiB).
PARQUET_COMPRESSION: Final = "zstd"
PARQUET_COMPRESSION_LEVEL: Final = 1


#: A file name to suggest for each table's flag (review 58 F7: --users-output was told "sessions.parquet").
_EXAMPLES = {
    "--rejects": "rejects.csv",
    "--users-output": "users.parquet",
    "--pageviews-output": "pageviews.parquet",
    "--report": "report.html",
}


def check_output(output: str, inputs: Sequence[InputFile], *, option: str = "-o") -> None:
    """Refuse to write the output over one of the inputs. ``option`` is the flag that named the output
    (``--rejects``, ``--users-output``, ...): the message tells which path to change."""
    if output == STDIN:
        return
    target = os.path.realpath(output)
    for source in inputs:
        if not source.is_stdin and os.path.realpath(source.path) == target:
            raise OutputError(
                f"The output {output} is also an input: choose another output path with {option}."
            )
    if os.path.isdir(target):
        example = _EXAMPLES.get(option, "sessions.parquet")
        raise OutputError(f"Cannot write {option} {output}: it is a directory. Give a file name ({example}).")
    check_directory(os.path.dirname(target), output)


def check_directory(parent: str, output: str) -> None:
    """Refuse an output whose directory does not exist, or cannot be reached (the folder above it is
    private to another user: it is there, and "does not exist" sent users looking for a typo), or in which
    no file can be made (a read-only file system, a folder of another user's): the output is written
    there under a temporary name first. That was found only when the run wrote it, after all its work.
    A device or a pipe (``/dev/null`` in a folder this user cannot write) is written where it is."""
    try:
        if os.path.isdir(parent):
            target = os.path.realpath(output)
            if os.path.exists(target) and not os.path.isfile(target):
                return
            if os.access(parent, os.W_OK | os.X_OK, effective_ids=os.access in os.supports_effective_ids):
                return
            if os.statvfs(parent).f_flag & os.ST_RDONLY:
                raise OutputError(
                    f"Cannot write {output}: the directory {parent} is on a read-only file system. Write "
                    "somewhere else."
                )
        os.stat(parent)
    except PermissionError:
        pass
    except OSError:
        raise OutputError(f"Cannot write {output}: the directory {parent} does not exist.") from None
    if not os.path.isdir(parent) and os.path.exists(parent):
        raise OutputError(f"Cannot write {output}: {parent} is not a directory.")
    raise OutputError(
        f"Cannot write {output}: permission denied on the directory {parent}. Give the user who runs "
        "sessionize access to it, or write somewhere else."
    )


def write_parquet(frame: pl.DataFrame, target: str | Path | IO[bytes]) -> None:
    """``frame`` as Parquet with the outputs' compression."""
    frame.write_parquet(target, compression=PARQUET_COMPRESSION, compression_level=PARQUET_COMPRESSION_LEVEL)


#: What a spreadsheet takes for the start of a formula (OWASP's list for CSV injection, and the NUL that
#: OWASP ASVS 5 adds).
FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r", "\0")
_FORMULA_PATTERN: Final = r"^[=+\-@\t\r\x00]"


def _safe_name(name: str, taken: set[str]) -> str:
    if not name.startswith(FORMULA_START):
        return name
    safe = "'" + name
    while safe in taken:
        safe = "'" + safe
    taken.add(safe)
    return safe


def csv_safe(frame: pl.DataFrame) -> pl.DataFrame:
    """Text values that a spreadsheet would run as a formula (``=HYPERLINK(...)``, ``@SUM(...)``, ``+1``,
    ``-2``, a leading tab, carriage return or NUL), prefixed with ``'`` as OWASP advises; other values
    as they are. Column names too: a header is a cell like any other (a rejects file keeps the input's
    column names, which a JSON line's keys choose). For CSV files people open in Excel, LibreOffice or
    Google Sheets (``--csv-safe``)."""
    taken = set(frame.columns)
    renamed = {name: _safe_name(name, taken) for name in frame.columns}
    if any(old != new for old, new in renamed.items()):
        frame = frame.rename(renamed)
    return frame.with_columns(
        pl.when(pl.col(name).str.contains(_FORMULA_PATTERN))
        .then(pl.lit("'") + pl.col(name))
        .otherwise(pl.col(name))
        .alias(name)
        for name, dtype in frame.schema.items()
        if dtype == pl.String
    )


def serialize(
    frame: pl.DataFrame, handle: IO[bytes], fmt: OutputFormat, *, header: bool = True, safe: bool = False
) -> None:
    """``frame`` into ``handle`` as ``fmt`` (``header``: CSV's header row, off for appended parts;
    ``safe``: CSV values neutralised for spreadsheets, see :func:`csv_safe`)."""
    if fmt == "parquet":
        write_parquet(frame, handle)
        return
    if fmt == "csv":
        if safe:
            frame = csv_safe(frame)
        frame.write_csv(handle, datetime_format=CSV_DATETIME_FORMAT, include_header=header)
        return
    as_text = frame.with_columns(
        pl.col(name).dt.strftime(CSV_DATETIME_FORMAT)
        for name, dtype in frame.schema.items()
        if isinstance(dtype, pl.Datetime)
    )
    as_text.write_ndjson(handle)
