"""Reading event files and writing session tables: the only module that touches files.

Each input file is read and validated on its own, so every error names the file and the row.
Outputs are written to a temporary file beside the target and renamed into place.
"""

from __future__ import annotations

import glob
import gzip
import io
import os
import sys
import tempfile
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

import polars as pl

from sessionize import schema as S
from sessionize.errors import (
    NoInputFilesError,
    OutputError,
    UnknownFormatError,
    UnreadableInputError,
    UsageError,
)
from sessionize.normalize import RAW_TIME, ROW, TimeUnit, check_events, prepare_events

InputFormat = Literal["csv", "tsv", "parquet", "ndjson"]
OutputFormat = Literal["parquet", "csv", "ndjson"]
INPUT_FORMATS: tuple[InputFormat, ...] = ("csv", "tsv", "parquet", "ndjson")
OUTPUT_FORMATS: tuple[OutputFormat, ...] = ("parquet", "csv", "ndjson")

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
}
_OUTPUT_EXTENSIONS: dict[str, OutputFormat] = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
    ".json": "ndjson",
}
_CSV_DATETIME_FORMAT = "%Y-%m-%dT%H:%M:%S%.6fZ"


@dataclass(frozen=True)
class InputFile:
    """One input to read: a path (or ``-`` for stdin) and its format."""

    path: str
    format: InputFormat

    @property
    def is_stdin(self) -> bool:
        return self.path == STDIN


def _split_gz(path: str) -> tuple[str, bool]:
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
    stem, _ = _split_gz(path)
    return _EXTENSIONS.get(os.path.splitext(stem)[1])


def resolve_inputs(paths: Sequence[str | Path], *, input_format: str | None = None) -> list[InputFile]:
    """Expand files, directories (every supported file inside, recursively) and glob patterns.

    Files named explicitly must have a known format; unsupported files inside a directory are
    skipped. The order is the order given, and sorted by path within a directory or pattern, so
    input order (which breaks ties between events at the same instant) is reproducible.
    """
    if not paths:
        raise UsageError(
            "No input given. Pass one or more files, directories or glob patterns, or - for stdin."
        )
    result: list[InputFile] = []
    seen: set[str] = set()

    def add(path: str, *, explicit: bool) -> None:
        fmt = format_of(path, input_format)
        if fmt is None:
            if explicit:
                raise UnknownFormatError(
                    f"Cannot tell the format of {path} from its extension. Supported: .csv, .tsv, .parquet, "
                    ".ndjson, .jsonl (each also .gz for text formats). Give the format with --input-format."
                )
            return
        key = os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            result.append(InputFile(path, fmt))

    for raw in paths:
        path = str(raw)
        if path == STDIN:
            fmt = format_of("stdin.csv", input_format)
            result.append(InputFile(STDIN, fmt or "csv"))
        elif os.path.isdir(path):
            before = len(result)
            for name in sorted(glob.glob(os.path.join(glob.escape(path), "**", "*"), recursive=True)):
                if os.path.isfile(name) and not os.path.basename(name).startswith("."):
                    add(name, explicit=False)
            if len(result) == before:
                raise NoInputFilesError(
                    f"The directory {path} holds no supported files (.csv, .tsv, .parquet, .ndjson, .jsonl, "
                    "optionally .gz). Point at the files, or give their format with --input-format."
                )
        elif os.path.exists(path):
            add(path, explicit=True)
        elif glob.has_magic(path):
            matches = sorted(m for m in glob.glob(path, recursive=True) if os.path.isfile(m))
            if not matches:
                raise NoInputFilesError(f"The pattern {path} matches no files.")
            before = len(result)
            for name in matches:
                add(name, explicit=False)
            if len(result) == before:
                raise NoInputFilesError(
                    f"The pattern {path} matches {len(matches)} file(s), none in a supported format "
                    "(.csv, .tsv, .parquet, .ndjson, .jsonl, optionally .gz). "
                    "Give their format with --input-format."
                )
        else:
            raise UnreadableInputError(f"{path}: no such file or directory.")
    return result


def _read_bytes_gz(path: str) -> bytes:
    try:
        with gzip.open(path, "rb") as handle:
            return handle.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise UnreadableInputError(
            f"{path}: the gzip data is corrupt or truncated ({exc}). Re-export or re-download the file."
        ) from exc


def _scan(source: InputFile) -> pl.LazyFrame:
    """A lazy scan of one file; CSV columns are all read as strings (ids stay exactly as written)."""
    path = source.path
    gz = _split_gz(path)[1] if not source.is_stdin else False
    if source.format in ("csv", "tsv"):
        data: str | bytes | IO[bytes]
        data = path
        if source.is_stdin:
            data = sys.stdin.buffer.read()
        elif gz:
            data = _read_bytes_gz(path)
        if isinstance(data, bytes) and not data.strip():
            return pl.LazyFrame()
        if isinstance(data, str) and os.path.getsize(path) == 0:
            return pl.LazyFrame()
        return pl.scan_csv(
            data,
            separator="\t" if source.format == "tsv" else ",",
            infer_schema=False,
            encoding="utf8-lossy",
        )
    if source.format == "parquet":
        return pl.scan_parquet(path)
    # JSON exporters omit null keys and mix numeric and text ids: infer the schema from every line.
    if gz:
        return pl.scan_ndjson(io.BytesIO(_read_bytes_gz(path)), infer_schema_length=None)
    return pl.scan_ndjson(path, infer_schema_length=None)


def _where(source: InputFile, row: int) -> str:
    # row is the 0-based data row; a CSV has its header on line 1.
    if source.format in ("csv", "tsv"):
        return f"line {row + 2}"
    return f"row {row + 1}"


def read_file(
    source: InputFile,
    *,
    column_options: dict[str, str | None],
    time_unit: TimeUnit | None = None,
    timezone: str | None = None,
    pageview_events: Iterable[str] = S.DEFAULT_PAGEVIEW_EVENTS,
) -> pl.DataFrame:
    """Read one file into the canonical events frame, raising on rows that cannot be sessionized."""
    name = "standard input" if source.is_stdin else source.path
    try:
        scan = _scan(source)
        available = scan.collect_schema().names()
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise UnreadableInputError(_describe_read_error(name, source, exc)) from exc
    if not available:
        return pl.DataFrame(schema=S.EVENT_SCHEMA)  # an empty file holds no events
    columns = S.resolve_columns(available, source=name, **column_options)
    if source.format in ("csv", "tsv"):
        # A blank line (often the last one of a hand-edited file) is not an event.
        scan = scan.with_row_index(ROW).filter(~pl.all_horizontal(pl.exclude(ROW).is_null()))
    events = prepare_events(
        scan,
        columns=columns,
        time_unit=time_unit,
        timezone=timezone,
        pageview_events=pageview_events,
        keep_raw=True,
    )
    try:
        frame = events.collect(engine="in-memory")
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise UnreadableInputError(_describe_read_error(name, source, exc)) from exc

    check_events(frame, source=name, columns=columns, where=lambda row: _where(source, row))
    return frame.drop(ROW, RAW_TIME)


def _describe_read_error(name: str, source: InputFile, exc: BaseException) -> str:
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, FileNotFoundError):
        return f"{name}: the file disappeared or cannot be found ({detail})."
    if isinstance(exc, PermissionError):
        return f"{name}: permission denied. Check the file's permissions."
    if source.format == "parquet":
        return (
            f"{name}: not a readable Parquet file ({detail}). Check that the file is complete, "
            "or give its real format with --input-format."
        )
    return (
        f"{name}: cannot be read as {source.format.upper()} ({detail}). "
        "Check the file, or give its real format with --input-format."
    )


def read_events(
    paths: Sequence[str | Path | InputFile],
    *,
    input_format: str | None = None,
    user_col: str | None = None,
    time_col: str | None = None,
    url_col: str | None = None,
    referrer_col: str | None = None,
    ip_col: str | None = None,
    event_col: str | None = None,
    session_col: str | None = None,
    time_unit: TimeUnit | None = None,
    timezone: str | None = None,
    pageview_events: Iterable[str] = S.DEFAULT_PAGEVIEW_EVENTS,
) -> pl.DataFrame:
    """Read every input into one canonical events frame, in input order.

    ``paths`` are files, directories, glob patterns, ``-`` for CSV on stdin, or already resolved
    :class:`InputFile` objects (see :func:`resolve_inputs`).
    """
    files = [p for p in paths if isinstance(p, InputFile)]
    if len(files) != len(paths):
        files = resolve_inputs([str(p) for p in paths], input_format=input_format)
    column_options = {
        "user_col": user_col,
        "time_col": time_col,
        "url_col": url_col,
        "referrer_col": referrer_col,
        "ip_col": ip_col,
        "event_col": event_col,
        "session_col": session_col,
    }
    pageviews = tuple(pageview_events)
    frames = [
        read_file(
            source,
            column_options=column_options,
            time_unit=time_unit,
            timezone=timezone,
            pageview_events=pageviews,
        )
        for source in files
    ]
    return pl.concat(frames, how="vertical", rechunk=False)


def output_format_of(output: str, format: str | None = None) -> OutputFormat:
    """The output format from ``format`` or the output's extension (stdout defaults to CSV)."""
    if format is not None:
        if format not in OUTPUT_FORMATS:
            raise UsageError(f"--format {format!r} is not one of {', '.join(OUTPUT_FORMATS)}.")
        return format
    if output == STDIN:
        return "csv"
    fmt = _OUTPUT_EXTENSIONS.get(os.path.splitext(output.lower())[1])
    if fmt is None:
        raise UsageError(
            f"Cannot tell the output format of {output} from its extension. "
            "Use .parquet, .csv or .ndjson, or give --format parquet|csv|ndjson."
        )
    return fmt


def check_output(output: str, inputs: Sequence[InputFile]) -> None:
    """Refuse to write the output over one of the inputs."""
    if output == STDIN:
        return
    target = os.path.realpath(output)
    for source in inputs:
        if not source.is_stdin and os.path.realpath(source.path) == target:
            raise OutputError(f"The output {output} is also an input: choose another output path with -o.")
    parent = os.path.dirname(target)
    if not os.path.isdir(parent):
        raise OutputError(f"Cannot write {output}: the directory {parent} does not exist.")


def _write(frame: pl.DataFrame, handle: IO[bytes], fmt: OutputFormat) -> None:
    if fmt == "parquet":
        frame.write_parquet(handle)
        return
    if fmt == "csv":
        frame.write_csv(handle, datetime_format=_CSV_DATETIME_FORMAT)
        return
    as_text = frame.with_columns(
        pl.col(name).dt.strftime(_CSV_DATETIME_FORMAT)
        for name, dtype in frame.schema.items()
        if isinstance(dtype, pl.Datetime)
    )
    as_text.write_ndjson(handle)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_sessions(frame: pl.DataFrame, output: str, *, format: str | None = None) -> OutputFormat:
    """Write ``frame`` to ``output`` (``-`` for stdout) atomically: temp file beside it, then rename."""
    fmt = output_format_of(output, format)
    if output == STDIN:
        buffer = io.BytesIO()
        _write(frame, buffer, fmt)
        sys.stdout.buffer.write(buffer.getvalue())
        sys.stdout.buffer.flush()
        return fmt
    target = Path(output)
    try:
        fd, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as exc:
        raise OutputError(f"Cannot write {output}: {exc.strerror or exc}.") from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            _write(frame, handle, fmt)
        # mkstemp creates 0600; give the output the usual permissions.
        os.chmod(temp_name, 0o666 & ~_umask())
        os.replace(temp_name, target)
    except BaseException as exc:
        Path(temp_name).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise OutputError(f"Cannot write {output}: {exc.strerror or exc}.") from exc
        raise
    return fmt
