"""Files in and out: the only package that touches them.

``formats`` (names and extensions), ``inputs`` (the one path expander), ``read`` (reading and
validating event files, in windows when they are large), ``write`` (the serializers and output
checks), ``publish`` (all-or-nothing outputs) and ``spill`` (the bucketed engine's scratch files).
"""

from __future__ import annotations

from sessionize.config import ReadOptions as ReadOptions
from sessionize.io.formats import (
    INPUT_FORMATS,
    OUTPUT_EXTENSIONS,
    OUTPUT_FORMATS,
    REJECTS_COLUMNS,
    STDIN,
    InputFormat,
    OutputFormat,
    empty_rejects,
    format_of,
    names_table_file,
    output_format_of,
    rejects_format,
)
from sessionize.io.inputs import InputFile, filesystem, is_dataset_target, is_url, resolve_inputs
from sessionize.io.publish import (
    WRITE_ERRORS,
    PendingOutput,
    Publication,
    TableSink,
    cannot_write,
    errno_of,
    is_stream,
    left_by_dead_processes,
    placing,
    refuse_planted_symlink,
    take_mode,
    write_atomically,
    write_sessions,
)
from sessionize.io.read import (
    FileRead,
    ReadResult,
    Window,
    can_window,
    drop_duplicate_events,
    estimate_rows,
    iter_reads,
    raise_malformed,
    read_events,
    read_file,
    read_inputs,
    source_row,
)
from sessionize.io.spill import BucketSpill
from sessionize.io.write import (
    CSV_DATETIME_FORMAT,
    PARQUET_COMPRESSION,
    PARQUET_COMPRESSION_LEVEL,
    check_output,
    csv_safe,
    serialize,
    write_parquet,
)

__all__ = [
    "CSV_DATETIME_FORMAT",
    "INPUT_FORMATS",
    "OUTPUT_EXTENSIONS",
    "OUTPUT_FORMATS",
    "PARQUET_COMPRESSION",
    "PARQUET_COMPRESSION_LEVEL",
    "REJECTS_COLUMNS",
    "STDIN",
    "WRITE_ERRORS",
    "BucketSpill",
    "FileRead",
    "InputFile",
    "InputFormat",
    "OutputFormat",
    "PendingOutput",
    "Publication",
    "ReadOptions",
    "ReadResult",
    "TableSink",
    "Window",
    "can_window",
    "cannot_write",
    "check_output",
    "csv_safe",
    "drop_duplicate_events",
    "empty_rejects",
    "errno_of",
    "estimate_rows",
    "filesystem",
    "format_of",
    "is_dataset_target",
    "is_stream",
    "is_url",
    "iter_reads",
    "left_by_dead_processes",
    "names_table_file",
    "output_format_of",
    "placing",
    "raise_malformed",
    "read_events",
    "read_file",
    "read_inputs",
    "refuse_planted_symlink",
    "rejects_format",
    "resolve_inputs",
    "serialize",
    "source_row",
    "take_mode",
    "write_atomically",
    "write_parquet",
    "write_sessions",
]
