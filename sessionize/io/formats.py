"""Input and output formats: names, extensions, and the format of a path."""

from __future__ import annotations

import os
import re
import stat
from typing import Final

import polars as pl

from sessionize.errors import (
    UsageError,
)

# The formats' names live in the schema, where the config checks them as it is built.
from sessionize.schema import INPUT_FORMATS as INPUT_FORMATS
from sessionize.schema import OUTPUT_FORMATS as OUTPUT_FORMATS
from sessionize.schema import InputFormat as InputFormat
from sessionize.schema import OutputFormat as OutputFormat

#: The access log formats, and ``log`` (one of them, told by the lines).
ACCESS_LOG_FORMATS: tuple[InputFormat, ...] = ("combined", "common", "vhost_combined", "log")

STDIN = "-"
_EXTENSIONS: dict[str, InputFormat] = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
    ".json": "ndjson",
    ".log": "log",
}
#: The input extensions, for messages.
SUPPORTED_INPUTS: Final = f"{', '.join(_EXTENSIONS)} and rotated .log.1 (each also .gz, but .parquet and .pq)"
OUTPUT_EXTENSIONS: dict[str, OutputFormat] = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
    ".json": "ndjson",
}
#: Columns added to every rejected row (after its original columns; malformed CSV rows also get
#: ``raw_line``, the line as read).
REJECTS_COLUMNS = ("source_file", "source_row", "reject_reason")


def split_gz(path: str) -> tuple[str, bool]:
    lower = path.lower()
    if lower.endswith(".gz"):
        return lower[:-3], True
    return lower, False


def format_of(path: str, input_format: str | None = None) -> InputFormat | None:
    """The format of ``path`` by ``input_format`` or by extension (``.csv.gz`` is CSV)."""
    if input_format is not None:
        if input_format not in INPUT_FORMATS:
            raise UsageError(f"--input-format {input_format!r} is not one of {', '.join(INPUT_FORMATS)}.")
        return input_format
    stem, _ = split_gz(path)
    if _ROTATED_LOG.search(os.path.basename(stem)):
        return "log"
    return _EXTENSIONS.get(os.path.splitext(stem)[1])


#: A log that logrotate rotated: ``access.log.1``, ``access.log.2.gz`` (numbered) or ``access.log-20240501``
#: (``dateext``), which the docs' cron recipe reads; with other ``dateformat``s too: ``-2024-05-01``,
#: ``-2024050110`` and the man page's ``-20240501-1714521600`` (``-%Y%m%d-%s``), which were skipped without a
#: word in a directory (review of stop 52). And Apache's own name, ``access_log`` (httpd.conf, RHEL), rotated
#: or not.
_ROTATION = r"(?:\.\d+|-(?:\d{8}(?:\d{2})?|\d{4}-\d{2}-\d{2})(?:-\d+)?)"
_ROTATED_LOG = re.compile(rf"(?:\.log{_ROTATION}|(?:^|[._-])access_log{_ROTATION}?)$")


def output_format_of(output: str, format: str | None = None) -> OutputFormat:
    """The output format from ``format`` or the output's extension (stdout defaults to CSV)."""
    if format is not None:
        if format not in OUTPUT_FORMATS:
            raise UsageError(f"--format {format!r} is not one of {', '.join(OUTPUT_FORMATS)}.")
        return format
    if output == STDIN:
        return "csv"
    fmt = OUTPUT_EXTENSIONS.get(os.path.splitext(output.lower())[1])
    if fmt is None:
        raise UsageError(
            f"Cannot tell the output format of {output} from its extension. "
            "Use .parquet, .csv or .ndjson, or give --format parquet|csv|ndjson."
        )
    return fmt


def format_mismatch(output: str, format: str | None) -> str | None:
    """What to tell the user when ``format`` (``--format``) is not the format ``output``'s extension
    names (``-o sessions.parquet --format csv``): the file gets ``format``, which readers that go by the
    name (Spark, DuckDB, pandas) then fail on. None when they agree, or either says nothing."""
    named = OUTPUT_EXTENSIONS.get(os.path.splitext(output.lower())[1])
    if format is None or output == STDIN or named is None or named == format:
        return None
    return (
        f"{output} is written as {format}, as --format says, though its name says {named}: readers that go "
        f"by the name will fail on it. Give the file a .{format} name, or leave --format out."
    )


def empty_rejects() -> pl.DataFrame:
    """A rejects table with no rows (written so that a cron job always finds the file)."""
    return pl.DataFrame(schema={"source_file": pl.String, "source_row": pl.Int64, "reject_reason": pl.String})


def names_table_file(path: str) -> bool:
    """Whether ``path`` ends in a table file's extension (``.csv``, ``.parquet``, ``.ndjson``, ...)."""
    return OUTPUT_EXTENSIONS.get(os.path.splitext(path.rstrip("/").lower())[1]) is not None


def rejects_format(path: str, fallback: str | None) -> OutputFormat:
    """The rejects file's format: from its extension, else the output's, else CSV."""
    fmt = OUTPUT_EXTENSIONS.get(os.path.splitext(path.lower())[1])
    if fmt is not None:
        return fmt
    return output_format_of("-", fallback)


def is_special_file(path: str) -> bool:
    """Whether ``path`` exists and is neither a regular file nor a directory (through symlinks): a named
    pipe, a character device, a socket. What is read from it is gone; what is written into it is not a
    file that could be replaced."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)
