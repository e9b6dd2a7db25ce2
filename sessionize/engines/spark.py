"""The Spark engine: what ``sessionize run --engine spark`` runs, the steps of the bucketed engine
(:mod:`sessionize.engines.buckets`) as one Spark job:

1. **read**: Spark's ``binaryFile`` source reads each input file whole (any path Spark can read:
   local, ``s3a://``, ``abfss://``, ``gs://``, ``dbfs:/``), and an Arrow task on an executor parses
   and validates it with :func:`sessionize.io.read_file`, the code of local runs: the same canonical
   events, the same errors with ``on_invalid="fail"``, the same rejected rows with ``"skip"``. Each
   event gets ``_order`` (its input file and row: the global input order) and ``_bucket`` (a hash
   of its user id, :func:`sessionize.engines.budget.bucket_of`). With ``--anonymize-ip`` the
   addresses are located and truncated here, before anything is shuffled or spilled.
2. **shuffle**: the events are repartitioned by ``_bucket``: each partition holds every event of
   its users.
3. **sessionize**: each partition is put back in input order and goes through
   :func:`sessionize.partition.process_partition`, the step of every engine (``mapInArrow``).
4. **write**: Spark writes the sessions as a Parquet directory beside the output, with its
   ``_SUCCESS`` marker; the summary is counted on the cluster from the same sessions (persisted,
   not recomputed). When every output of the run is complete the directory is renamed into place.

Only this module imports PySpark, and only when ``--engine spark`` is chosen.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io as io_module
import itertools
import os
import pickle
import shutil
import sys
import tempfile
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import polars as pl

try:
    import pyarrow as pa  # type: ignore[import-untyped]
    from pyspark import StorageLevel
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F
    from pyspark.sql import types as T
except ImportError as exc:  # pragma: no cover - without the spark extra
    _MISSING: ImportError | None = exc
else:
    _MISSING = None

from sessionize import geo, io
from sessionize import schema as S
from sessionize.accesslog import NulRuns, detect_log_format, leading_nul_runs
from sessionize.config import RunConfig, parse_memory
from sessionize.engines.base import PREVIEW_ROWS, Outcome, Progress, RunProgress, refuse_options
from sessionize.engines.budget import available_memory, bucket_of, claim_bucket_of
from sessionize.errors import (
    EngineError,
    EngineUnavailableError,
    NoInputFilesError,
    OutputError,
    SessionizeError,
    SessionizeWarning,
    UnreadableInputError,
    UsageError,
)
from sessionize.io.formats import ACCESS_LOG_FORMATS, InputFormat
from sessionize.io.snowplow import FIELDS as SNOWPLOW_FIELDS
from sessionize.io.snowplow import is_enriched_tsv, parse_enriched
from sessionize.normalize import ROW
from sessionize.partition import (
    CAPPED,
    STORED_GEO_COLUMNS,
    PartitionJob,
    SessionRules,
    Tally,
    check_sums,
    keeps_located_addresses,
    mean_of_microseconds,
    process_partition,
    protect_addresses,
    session_schema,
)
from sessionize.report import REPORT_COLUMNS, read_session_tables

#: The global input order of an event: its input's number in the top bits, its row below.
ORDER = "_order"
#: A hash of the user id: the column the shuffle moves events by.
BUCKET = "_bucket"
#: On the read step's extra row per file: what the file held besides its events (pickled).
SUMMARY = "_summary"
#: On the read step's rows of rejected input rows: the row's text columns (their values and names, as two
#: lists: its original columns, ``source_file``, ``reject_reason``, ``raw_line``) and its ``source_row``.
#: They stay on the cluster: written by Spark as the rejects dataset, or brought to the driver only when
#: asked for.
REJECT = "_reject"
REJECT_KEYS = "_reject_keys"
REJECT_ROW = "_reject_row"
_REJECT_COLUMNS = (REJECT, REJECT_KEYS, REJECT_ROW)
#: The rejects table's place in the input (a name no input column takes).
_REJECT_ORDER = "_sessionize_reject_order"
_ROW_BITS = 40
BUCKET_SPACE = 1 << 32
#: The largest file Spark's ``binaryFile`` source reads (one value: a Java byte array).
MAX_WHOLE_FILE = 2**31 - 1
#: The column the output directory is partitioned by with ``partition_by_date`` (as incremental runs').
DATE_PARTITION = "session_date"
#: The last file of a complete output directory (Spark's own marker).
SUCCESS = "_SUCCESS"
INSTALL = "pip install 'sessionize[spark]'"


def require_spark() -> None:
    """Raise :class:`EngineUnavailableError` without PySpark (with the install command) or Java."""
    if _MISSING is not None:
        raise EngineUnavailableError(
            f"--engine spark needs PySpark ({_MISSING}). Install it with: {INSTALL} "
            "(it needs Java 17 or later too)."
        )
    java_home = os.environ.get("JAVA_HOME")
    if shutil.which("java") is None and not (
        java_home and os.path.exists(os.path.join(java_home, "bin", "java"))
    ):
        raise EngineUnavailableError(
            "--engine spark needs Java 17 or later (PySpark runs Spark in a Java VM), and no `java` is on "
            "the PATH nor in JAVA_HOME. Install a Java 17+ runtime (Debian/Ubuntu: apt-get install "
            "openjdk-17-jre-headless) or set JAVA_HOME."
        )


# Inputs ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SparkInput:
    """One input file as Spark names it, its format, and how messages name it."""

    number: int
    uri: str
    format: InputFormat
    shown: str


def _uri(path: str) -> str:
    return path if io.is_url(path) else Path(path).resolve().as_uri()


def _key(uri: str) -> str:
    """A file's URI as Spark's ``binaryFile`` names it (``file:///a`` is ``file:/a`` there)."""
    return "file:/" + uri[len("file:///") :] if uri.startswith("file:///") else uri


def resolve_inputs(inputs: io.Inputs, *, input_format: str | None = None) -> list[io.InputFile]:
    """Local paths, directories and patterns expanded as a local run expands them; a URL (``s3a://``,
    ``abfss://``, ``dbfs:/``, ``file:``) kept as it is, listed by Spark when the run starts (a URL
    without a known extension is a directory: every supported file in it)."""
    inputs = io.input_list(inputs)
    if not inputs:
        raise UsageError("No input given. Pass one or more files, directories, glob patterns or URLs.")
    result: list[io.InputFile] = []
    for item in inputs:
        path = item.path if isinstance(item, io.InputFile) else str(item)
        if io.is_url(path):
            result.append(io.InputFile(path, io.formats.format_of(path, input_format) or "parquet"))
            continue
        for source in io.resolve_inputs([item], input_format=input_format):
            if source.is_stream:
                raise UsageError(
                    f"--engine spark reads files, not {'standard input' if source.is_stdin else 'a pipe'} "
                    f"({source.shown}): the executors cannot see it. "
                    "Write the events to a file on storage every executor can read."
                )
            result.append(source)
    return result


def plan_inputs(files: Sequence[io.InputFile], session: Any, *, input_format: str | None) -> list[SparkInput]:
    """The files to read, numbered in input order: a URL directory listed by Spark (sorted by path)."""
    found: list[tuple[str, InputFormat, str]] = []
    for source in files:
        if not io.is_url(source.path):
            found.append((_uri(source.path), source.format, source.shown))
            continue
        url = source.path
        if io.formats.format_of(url, input_format) is not None and not url.endswith("/"):
            found.append((url, source.format, url))
            continue
        try:
            listed = sorted(
                row[0]
                for row in session.read.format("binaryFile")
                .option("recursiveFileLookup", "true")
                .load(url)
                .select("path")
                .collect()
            )
        except Exception as exc:  # Spark's AnalysisException: no such path
            raise UnreadableInputError(f"{url}: Spark cannot list it ({_last_line(exc)}).") from exc
        kept = [(path, io.formats.format_of(path, input_format)) for path in listed]
        files_in = [(path, fmt, path) for path, fmt in kept if fmt is not None]
        if not files_in:
            raise NoInputFilesError(
                f"{url} holds no supported files. Point at the files, or give their format with "
                "--input-format."
            )
        found.extend(files_in)
    seen: set[str] = set()
    result: list[SparkInput] = []
    for uri, fmt, shown in found:
        if uri not in seen:
            seen.add(uri)
            result.append(SparkInput(len(result), uri, fmt, shown))
    return result


def _last_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# The executors' tasks ----------------------------------------------------------------------------


def _arrow_type(dtype: pl.DataType) -> Any:
    if dtype == pl.String():
        return pa.string()
    if isinstance(dtype, pl.Datetime):
        return pa.timestamp("us", tz="UTC")
    if dtype == pl.Boolean():
        return pa.bool_()
    if dtype.is_integer():
        return pa.int64()  # Spark has no unsigned integers
    if dtype.is_float():
        return pa.float64()
    raise TypeError(f"no Spark type for {dtype}")


def _spark_type(dtype: Any) -> Any:
    if pa.types.is_string(dtype):
        return T.StringType()
    if pa.types.is_timestamp(dtype):
        return T.TimestampType()
    if pa.types.is_boolean(dtype):
        return T.BooleanType()
    if pa.types.is_int64(dtype):
        return T.LongType()
    if pa.types.is_float64(dtype):
        return T.DoubleType()
    if pa.types.is_binary(dtype):
        return T.BinaryType()
    if pa.types.is_list(dtype) and pa.types.is_string(dtype.value_type):
        return T.ArrayType(T.StringType())
    raise TypeError(f"no Spark type for {dtype}")


def _struct(schema: Any) -> Any:
    return T.StructType([T.StructField(f.name, _spark_type(f.type), True) for f in schema])


def _event_schema(job: PartitionJob) -> Any:
    """The Arrow schema of the read step's rows: the events, their order and bucket, the summary."""
    fields = [(name, _arrow_type(dtype)) for name, dtype in job.event_schema().items()]
    if keeps_located_addresses(job):
        fields += [(name, pa.string()) for name in STORED_GEO_COLUMNS[:-1]] + [
            (STORED_GEO_COLUMNS[-1], pa.bool_())
        ]
    return pa.schema(
        [
            *fields,
            (ORDER, pa.int64()),
            (BUCKET, pa.int64()),
            (REJECT, pa.list_(pa.string())),
            (REJECT_KEYS, pa.list_(pa.string())),
            (REJECT_ROW, pa.int64()),
            (SUMMARY, pa.binary()),
        ]
    )


#: With the page-view and user tables, which table a row of the sessionize step belongs to, and the
#: prefixes of those tables' columns in it (one Arrow schema holds the three).
TABLE = "_table"
_PREFIXES = {"pageviews": "pv__", "users": "us__"}


def _table_schemas(job: PartitionJob) -> dict[str, dict[str, pl.DataType]]:
    """The page-view and user tables' columns of this job (as an empty partition gives them); none when
    it makes neither table."""
    if not (job.pageviews or job.users):
        return {}
    empty = process_partition(pl.DataFrame(schema=job.event_schema()), job)
    tables = {"pageviews": empty.pageviews, "users": empty.users}
    return {name: dict(table.schema) for name, table in tables.items() if table is not None}


def _session_schema(job: PartitionJob, tables: dict[str, dict[str, pl.DataType]]) -> Any:
    """The Arrow schema of the sessionize step's rows: every column, then the geo status; with the
    page-view and user tables (``tables``: their columns, :func:`_table_schemas`), their columns
    (prefixed) and ``_table``."""
    dtypes = {**session_schema(job.settings), geo.STATUS: pl.String()}
    if job.settings.rules.session_cap is not None:
        dtypes[CAPPED] = pl.UInt32()
    for name, schema in tables.items():
        dtypes.update({_PREFIXES[name] + column: dtype for column, dtype in schema.items()})
    if job.pageviews or job.users:
        dtypes[TABLE] = pl.String()
    return pa.schema([(name, _arrow_type(dtype)) for name, dtype in dtypes.items()])


def _arrow(frame: pl.DataFrame, schema: Any) -> Any:
    """``frame`` as an Arrow table of ``schema`` (strings as Spark reads them, integers signed)."""
    missing = [f.name for f in schema if f.name not in frame.columns]
    frame = frame.with_columns(pl.lit(None).alias(name) for name in missing).select(schema.names)
    return frame.to_arrow(compat_level=pl.CompatLevel.oldest()).cast(schema)


@dataclass(frozen=True)
class _ReadTask:
    """What every read task needs: sent to each executor once (broadcast)."""

    files: dict[str, SparkInput]
    options: io.ReadOptions
    job: PartitionJob
    input_format: str | None


def _read_files(batches: Iterable[Any], task: Any) -> Iterator[Any]:
    """The read step on an executor: every file of the batches, parsed and validated."""
    read_task: _ReadTask = task.value
    schema = _event_schema(read_task.job)
    for batch in batches:
        for uri, content in zip(
            batch.column("path").to_pylist(), batch.column("content").to_pylist(), strict=True
        ):
            source = read_task.files[_key(uri)]
            summary: dict[str, Any] = {"number": source.number, "rows": 0, "filtered": 0}
            events = None
            with tempfile.TemporaryDirectory(prefix="sessionize-spark-") as directory:
                local = os.path.join(directory, os.path.basename(uri.rstrip("/")) or "input")
                with open(local, "wb") as handle:
                    handle.write(content)
                del content
                fmt: InputFormat = source.format
                if fmt == "tsv" and read_task.input_format is None and is_enriched_tsv(local):
                    fmt = "snowplow"
                try:
                    with _warnings_kept(summary, local, source.shown):
                        read = io.read.read_file(
                            io.InputFile(local, fmt, name=source.shown), read_task.options
                        )
                except SessionizeError as exc:
                    summary["error"] = (type(exc), str(exc).replace(local, source.shown))
                else:
                    summary.update(rows=read.rows, filtered=read.filtered, rejects=read.rejects)
                    events = _placed(
                        read.events, read_task.job, pl.int_range(pl.len(), dtype=pl.Int64), source
                    )
            yield from _emitted(events, summary, schema)


def _placed(events: pl.DataFrame, job: PartitionJob, row: pl.Expr, source: SparkInput) -> pl.DataFrame:
    """A read's events as the shuffle takes them: no full address (``--anonymize-ip``), their place in
    the input (``row``: their row in the file, or among its events) and their bucket: the user's, or
    with ``--shared-session-ids merge`` the client session id's until sessions have owners."""
    bucket = claim_bucket_of if job.settings.rules.merges_session_ids else bucket_of
    return protect_addresses(events, job).with_columns(
        (row + (source.number << _ROW_BITS)).alias(ORDER),
        bucket(BUCKET_SPACE).cast(pl.Int64).alias(BUCKET),
    )


def _emitted(events: pl.DataFrame | None, summary: dict[str, Any], schema: Any) -> Iterator[Any]:
    """A read task's output: the events, its rejected rows (see :data:`REJECT`), then a row with the
    summary (pickled): its figures and the rejects' column names, never the rejected rows."""
    if events is not None and events.height:
        yield from _arrow(events, schema).to_batches(max_chunksize=100_000)
    rejects: pl.DataFrame | None = summary.pop("rejects", None)
    summary["rejected"] = 0 if rejects is None else rejects.height
    summary["reject_columns"] = [] if rejects is None else rejects.columns
    if rejects is not None and rejects.height:
        row = pl.col("source_row").fill_null(0).cast(pl.Int64)
        names = [c for c in rejects.columns if c != "source_row"]
        rows = rejects.select(
            ((summary["number"] << _ROW_BITS) + row).alias(ORDER),
            pl.concat_list([pl.col(c).cast(pl.String) for c in names]).alias(REJECT),
            pl.lit(pl.Series([names]), dtype=pl.List(pl.String)).first().alias(REJECT_KEYS),
            row.alias(REJECT_ROW),
        )
        del rejects
        yield from _arrow(rows, schema).to_batches(max_chunksize=100_000)
    yield from _arrow(pl.DataFrame({SUMMARY: [pickle.dumps(summary)]}), schema).to_batches()


def _frame_of(batches: Iterable[Any]) -> pl.DataFrame | None:
    """A task's Arrow batches as one frame, or None when there are none."""
    received = list(batches)
    if not received:
        return None
    frame = pl.from_arrow(pa.Table.from_batches(received))
    assert isinstance(frame, pl.DataFrame)
    return frame


def _source_of(read_task: _ReadTask, number: int) -> SparkInput:
    return next(f for f in read_task.files.values() if f.number == number)


def _running_totals(counts: Iterable[tuple[int, int]]) -> dict[int, int]:
    """What comes before each split of a file (by its first byte): the lines, or records, of the splits
    before it, from each split's count."""
    before: dict[int, int] = {}
    total = 0
    for block, count in sorted(counts):
        before[block] = total
        total += count
    return before


def _claim(batches: Iterable[Any], schema: Any, rules: SessionRules) -> Iterator[Any]:
    """One partition of client session ids given to their owners (``--shared-session-ids merge``),
    bucketed again by user."""
    frame = _frame_of(batches)
    if frame is None:
        return
    claimed = rules.claim(frame).with_columns(bucket_of(BUCKET_SPACE).cast(pl.Int64).alias(BUCKET))
    yield from _arrow(claimed, schema).to_batches(max_chunksize=100_000)


#: The row of each event in its Parquet file, from Spark's ``_metadata.row_index``.
_ROW_INDEX = "_sessionize_row_index"
#: Events a split Parquet file's read task parses at once (Spark hands it batches of 10,000).
_SPLIT_ROWS = 200_000


def _read_split(batches: Iterable[Any], task: Any, number: int, uuids: frozenset[str]) -> Iterator[Any]:
    """The read step on an executor for a slice of a large Parquet file that Spark's reader split by
    row group: its rows, as Spark read them, parsed and validated by the local reader's code
    (:func:`sessionize.io.read_file` on rows already read), with their row numbers in the file; binary
    columns as text as a local read makes them, ``uuids`` (the file's 16-byte columns) as UUIDs."""
    read_task: _ReadTask = task.value
    schema = _event_schema(read_task.job)
    source = _source_of(read_task, number)
    pending: list[Any] = []
    held = 0
    for batch in batches:
        pending.append(batch)
        held += batch.num_rows
        if held >= _SPLIT_ROWS:
            yield from _read_rows(pending, read_task, source, schema, uuids)
            pending, held = [], 0
    if pending:
        yield from _read_rows(pending, read_task, source, schema, uuids)


def _read_rows(
    batches: list[Any], read_task: _ReadTask, source: SparkInput, schema: Any, uuids: frozenset[str]
) -> Iterator[Any]:
    frame = _frame_of(batches)
    batches.clear()
    assert frame is not None
    rows = frame.get_column(_ROW_INDEX)
    first = int(rows.min())  # type: ignore[arg-type]
    raw = io.read.binary_as_text(
        io.read.flatten_structs(
            frame.drop(_ROW_INDEX).with_columns(rows.cast(pl.get_index_type()).alias(ROW)).lazy()
        ),
        uuids,
    ).collect()
    del frame, rows
    last = int(raw.get_column(ROW).max())  # type: ignore[arg-type]
    shown = io.InputFile(source.uri, "parquet", name=source.shown)
    yield from _validated(raw, None, shown, read_task, source, schema, first, last)


#: Text formats of one event per line, which Spark's text reader can split (uncompressed only).
_LINE_FORMATS = (*ACCESS_LOG_FORMATS, "snowplow", "tsv")
#: The split a line was read in (its first byte), and the line as bytes (decoded as a local run does).
_BLOCK = "_sessionize_block"
#: The number of the file a line was read from (a first pass reads the lines of several files at once).
_FILE = "_sessionize_file"
_LINE = "_sessionize_line"


@dataclass(frozen=True)
class _LineSlices:
    """What the tasks of a split text file need: its format (told on the driver) and the number of
    lines before each split (by the split's first byte), from a counting pass."""

    number: int
    format: str
    lines_before: dict[int, int]


def _line_format(fs: _HadoopFS, source: SparkInput, input_format: str | None) -> str | None:
    """The format of a large access log or enriched TSV, to be read by Spark's text reader in splits,
    told from its first lines (read on the driver); None for a file that is not one of those (a TSV with
    a header). (Only in UTF-8, the default ``--encoding``: a local run decodes all of a file in another
    encoding with it when any line is not UTF-8.)"""
    first_lines = fs.head(source.uri, 20)
    if io.read.looks_like_utf16(b"\n".join(first_lines)):
        # UTF-16 (valid UTF-8: a NUL beside each letter) cut at its bytes 0x0A: read whole, as the local
        # reader refuses it.
        return None
    first = [line.decode("utf-8", errors="replace") for line in first_lines]
    fmt = source.format
    if fmt == "tsv":
        head = (first[0] if first else "").rstrip("\r").split("\t")
        if input_format is not None or len(head) != len(SNOWPLOW_FIELDS) or "event_id" in head:
            return None
        fmt = "snowplow"
    if fmt == "log":
        detected = detect_log_format([line for line in first if line is not None])
        if detected is None:
            return None  # read whole: the local reader names the problem
        fmt = detected
    return fmt


def _read_lines(batches: Iterable[Any], task: Any, plan: _LineSlices) -> Iterator[Any]:
    """The read step on an executor for the lines of a large text file that Spark's text reader split:
    numbered as in the file (each split arrives whole and in order: the lines before it, then its
    place in it), decoded, parsed and validated by the local reader's code."""
    read_task: _ReadTask = task.value
    schema = _event_schema(read_task.job)
    source = _source_of(read_task, plan.number)
    shown = io.InputFile(source.uri, plan.format, name=source.shown)  # type: ignore[arg-type]
    for _, block, lines in _blocks(batches):
        first = _lines_before(plan.lines_before, block, source)
        undecodable = None
        if plan.format == "snowplow":
            text = _decoded(lines)
        else:
            # A log's line that is not UTF-8 is rejected (undecodable_bytes), as a local run rejects it.
            text, undecodable = _decoded_log(lines, first)
        numbered = pl.DataFrame(
            [
                pl.int_range(first, first + len(lines), dtype=pl.UInt32, eager=True).alias(ROW),
                text.alias("line"),
            ]
        )
        del lines, text
        counted: dict[str, Any] = {}
        if plan.format == "snowplow":
            parsed, malformed = parse_enriched(numbered)
        else:
            # The NUL bytes skipped before its lines: the driver warns of the file's, summed over its splits.
            counted[_NUL_RUNS] = leading_nul_runs(numbered)
            parsed, malformed = io.read.parse_log_lines(numbered, plan.format, read_task.options)
            if undecodable is not None:
                malformed = pl.concat([malformed, undecodable]).sort("source_row")
        last = first + numbered.height - 1
        del numbered
        yield from _validated(parsed, malformed, shown, read_task, source, schema, first, last, counted)


def _lines_before(before: dict[int, int], block: int, source: SparkInput) -> int:
    """The lines (or records) of a split file before one of its splits, as the first pass counted them."""
    if block not in before:
        raise UnreadableInputError(f"{source.shown} changed while Spark read it: run again.")
    return before[block]


def _decoded(lines: pl.Series) -> pl.Series:
    """Lines as bytes -> text, as a local run reads a UTF-8 file: bytes that do not decode replaced
    (U+FFFD; only files of the default ``--encoding`` are split, and a line break never falls inside a
    UTF-8 sequence, so line by line is the same as the whole file); a line's ``\r`` end dropped."""
    try:
        text = lines.cast(pl.String)
    except pl.exceptions.PolarsError:  # bytes that are not UTF-8 (an attacker's user agent, say)
        text = pl.Series(
            [None if b is None else b.decode("utf-8", errors="replace") for b in lines.to_list()],
            dtype=pl.String,
        )
    return text.str.strip_suffix("\r")


def _decoded_log(lines: pl.Series, first: int) -> tuple[pl.Series, pl.DataFrame | None]:
    """A log's lines as bytes -> text (:func:`_decoded`), but a line that is not UTF-8 left empty and
    returned as a malformed row (``undecodable_bytes``, 1-based from ``first``), as a local run of the
    default ``--encoding`` rejects it (:func:`sessionize.io.read.decode_lines`)."""
    try:
        return lines.cast(pl.String).str.strip_suffix("\r"), None
    except pl.exceptions.PolarsError:  # bytes that are not UTF-8: only then line by line
        pass
    values: list[str | None] = []
    bad: list[tuple[int, str, str]] = []
    for index, raw in enumerate(lines.to_list()):
        try:
            values.append(None if raw is None else raw.decode("utf-8"))
        except UnicodeDecodeError:
            values.append("")
            shown = raw.decode("utf-8", errors="replace").removesuffix("\r")
            bad.append((first + index + 1, shown, io.read.UNDECODABLE_REASON))
    rejected = pl.DataFrame(bad, schema=io.read.MALFORMED_LOG_SCHEMA, orient="row")
    return pl.Series(values, dtype=pl.String).str.strip_suffix("\r"), rejected


def _validated(
    raw: pl.DataFrame,
    malformed: pl.DataFrame | None,
    shown: io.InputFile,
    read_task: _ReadTask,
    source: SparkInput,
    schema: Any,
    first: int,
    last: int,
    counted: dict[str, Any] | None = None,
) -> Iterator[Any]:
    """Rows of a slice of a split file, already read: validated by the local reader's code, with their
    place in the input from their row in the file, and the slice's summary row (with ``counted``)."""
    summary: dict[str, Any] = {"number": source.number, "first": first, "rows": 0, "filtered": 0}
    summary.update(counted or {})
    events = None
    try:
        # Its warnings (epoch timestamps of several sizes, a JSON key no event has) to the driver, as a
        # whole file's are; they were lost on the executor.
        with _warnings_kept(summary, shown.shown, shown.shown):
            read = io.read.read_file(
                shown,
                read_task.options,
                raw=raw,
                malformed=malformed,
                keep_row=True,
                rows_are_lines=True,
                part=True,
            )
    except SessionizeError as exc:
        note = (
            f" (Spark's reader split this file: this is the error of its rows {first:,}-{last:,}, the "
            "first slice with invalid rows; a local run reports on the whole file.)"
        )
        summary["error"] = (type(exc), str(exc) + note)
    else:
        summary.update(rows=read.rows, filtered=read.filtered, rejects=read.rejects, notes=read.notes)
        events = _placed(read.events, read_task.job, pl.col(ROW).cast(pl.Int64), source).drop(ROW)
    yield from _emitted(events, summary, schema)


@dataclass(frozen=True)
class _CsvSlices:
    """What the tasks of a split CSV need: its header line, the number of lines before each split (by
    its first byte), and whether a whole read would parse it line by line (the careful reader)."""

    number: int
    separator: str
    header: bytes
    lines_before: dict[int, int]
    careful: bool


def _csv_header(fs: _HadoopFS, source: SparkInput) -> bytes | None:
    """The header line of a large CSV or TSV to be read by Spark's text reader in splits (read on the
    driver); None when it is read whole: an empty file, or UTF-16 (cut at its bytes 0x0A, the local
    reader names it)."""
    first = fs.head(source.uri, 1)
    if not first or io.read.looks_like_utf16(first[0]):
        return None
    return first[0]


def _csv_plans(
    texts: _TextFrames, sources: Sequence[SparkInput], headers: dict[int, bytes]
) -> dict[int, _CsvSlices]:
    """The large CSV and TSV files that can be cut at their lines, in one first pass over all of them:
    UTF-8 (the default ``--encoding``) and no quoted field that spans lines (a line with an odd number of
    quotes); the others are read whole. The pass counts each split's lines and tells whether any needs
    the careful reader."""
    if not sources:
        return {}
    separators = {s.number: "\t" if s.format == "tsv" else "," for s in sources}
    heads = {number: (headers[number], separators[number]) for number in headers}
    schema = T.StructType(
        [
            T.StructField("file", T.LongType()),
            T.StructField("block", T.LongType()),
            T.StructField("lines", T.LongType()),
            T.StructField("spans", T.BooleanType()),
            T.StructField("careful", T.BooleanType()),
        ]
    )
    stats = texts.of(sources).mapInArrow(lambda batches: _csv_stats(batches, heads), schema).collect()
    plans = {}
    by_file = _by_file(stats)
    for source in sources:
        rows = by_file.get(source.number, [])
        if any(row["spans"] for row in rows):
            continue
        before = _running_totals((int(row["block"]), int(row["lines"])) for row in rows)
        careful = any(row["careful"] for row in rows)
        plans[source.number] = _CsvSlices(
            source.number, separators[source.number], headers[source.number], before, careful
        )
    return plans


def _text_lines(session: Any, source: SparkInput) -> Any:
    """A text file's lines as bytes (``\n`` ends), with the first byte of the split each was read in and
    the file's number."""
    return (
        session.read.option("lineSep", "\n")
        .format("text")
        .load(source.uri)
        .select(
            F.col("value").cast("binary").alias(_LINE),
            F.col("_metadata.file_block_start").alias(_BLOCK),
            F.lit(source.number).cast("long").alias(_FILE),
        )
    )


class _TextFrames:
    """Each large text file's lines (:func:`_text_lines`), made once a run: its first pass and its read
    use the same frame (making one lists the file through Spark: some 80 ms of the driver's)."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self._frames: dict[int, Any] = {}

    def __call__(self, source: SparkInput) -> Any:
        if source.number not in self._frames:
            self._frames[source.number] = _text_lines(self._session, source)
        return self._frames[source.number]

    def of(self, sources: Sequence[SparkInput]) -> Any:
        """The lines of several files as one frame, for one first pass over all of them: each task holds
        splits of one file (a union keeps its parts' partitions apart)."""
        return functools.reduce(lambda a, b: a.union(b), (self(s) for s in sources))


def _by_file(stats: Iterable[Any]) -> dict[int, list[Any]]:
    """A first pass's rows (one per split) by the number of their file (``file``): looked up per file in
    one pass, not filtered again for each (a cluster's run may plan thousands of files)."""
    grouped: dict[int, list[Any]] = {}
    for row in stats:
        grouped.setdefault(int(row["file"]), []).append(row)
    return grouped


def _blocks(batches: Iterable[Any]) -> Iterator[tuple[int, int, pl.Series]]:
    """A task's lines, split by split (each arrives whole and in order): (its file's number, its first
    byte, its lines)."""
    frame = _frame_of(batches)
    if frame is None:
        return
    for (number, block), part in frame.partition_by(_FILE, _BLOCK, as_dict=True, maintain_order=True).items():
        yield int(number), int(block), part.get_column(_LINE)


def _joined(lines: pl.Series) -> bytes:
    """A split's lines as the bytes of its text (``\n`` between them)."""
    return b"\n".join(b"" if line is None else line for line in lines.to_list())


def _csv_data(block: int, lines: pl.Series, header: bytes) -> bytes:
    """A split's lines as CSV bytes with the header line first (the first split holds it already)."""
    body = _joined(lines)
    return body if block == 0 else header + b"\n" + body


def _csv_stats(batches: Iterable[Any], heads: dict[int, tuple[bytes, str]]) -> Iterator[Any]:
    for number, block, lines in _blocks(batches):
        header, separator = heads[number]
        try:
            quotes = lines.cast(pl.String).str.count_matches('"', literal=True)
            spans = bool((quotes.fill_null(0) % 2 == 1).any())
        except pl.exceptions.PolarsError:
            spans = True  # bytes that are not UTF-8: the file is read whole, as a local run reads it
        careful = False
        if not spans:
            careful = io.read.parse_csv(_csv_data(block, lines, header), separator=separator)[2]
        yield pa.RecordBatch.from_pydict(
            {
                "file": [number],
                "block": [block],
                "lines": [len(lines)],
                "spans": [spans],
                "careful": [careful],
            }
        )


def _read_csv_lines(batches: Iterable[Any], task: Any, plan: _CsvSlices) -> Iterator[Any]:
    """The read step on an executor for the splits of a large CSV: each split with the header line,
    parsed as a local run parses the whole file, its rows numbered as in the file."""
    read_task: _ReadTask = task.value
    schema = _event_schema(read_task.job)
    source = _source_of(read_task, plan.number)
    shown = io.InputFile(source.uri, source.format, name=source.shown)
    for _, block, lines in _blocks(batches):
        _lines_before(plan.lines_before, block, source)
        rows, malformed, _ = io.read.parse_csv(
            _csv_data(block, lines, plan.header),
            separator=plan.separator,
            careful=plan.careful,
        )
        # The split's first data line is row 0 here; in the file it is its line number - 1.
        shift = max(plan.lines_before[block] - 1, 0)
        dtype = rows.schema[ROW]
        rows = rows.with_columns((pl.col(ROW).cast(pl.Int64) + shift).cast(dtype))
        if malformed is not None:
            malformed = malformed.with_columns(pl.col("source_row") + shift)
        first = shift
        last = shift + len(lines)
        del lines
        yield from _validated(rows, malformed, shown, read_task, source, schema, first, last)


@dataclass(frozen=True)
class _JsonSlices:
    """What the tasks of a split NDJSON file need: the column types of the whole file (merged from each
    split's, as one read infers them from every line) and the records before each split."""

    number: int
    schema: dict[str, pl.DataType]
    records_before: dict[int, int]


def _json_plans(
    texts: _TextFrames, sources: Sequence[SparkInput], options: io.ReadOptions
) -> dict[int, _JsonSlices]:
    """The large NDJSON files to be read by Spark's text reader in splits, in one first pass over all of
    them that infers each split's column types and counts its records. A file is read whole when a split
    does not parse (a malformed line: the careful reader reads the whole file) or is not UTF-8. The id
    fields' numbers are read as text (:func:`sessionize.io.read.ids_as_text`); a file with a split whose
    id field is ``true`` or ``false`` instead is read whole too, where that line is rejected as a local
    read rejects it."""
    if not sources:
        return {}
    schema = T.StructType(
        [
            T.StructField("file", T.LongType()),
            T.StructField("block", T.LongType()),
            T.StructField("records", T.LongType()),
            T.StructField("types", T.BinaryType()),
        ]
    )
    stats = texts.of(sources).mapInArrow(lambda batches: _json_stats(batches, options), schema).collect()
    plans = {}
    by_file = _by_file(stats)
    for source in sources:
        rows = sorted(by_file.get(source.number, []), key=lambda r: int(r["block"]))
        plan = _json_plan(source, rows, options)
        if plan is not None:
            plans[source.number] = plan
    return plans


def _json_plan(source: SparkInput, stats: list[Any], options: io.ReadOptions) -> _JsonSlices | None:
    """One NDJSON file's plan from its splits' statistics (:func:`_json_plans`), or None: read whole."""
    if any(row["types"] is None for row in stats):
        return None
    before = _running_totals((int(row["block"]), int(row["records"])) for row in stats)
    frames = [pl.DataFrame(schema=pickle.loads(row["types"])) for row in stats]
    try:
        merged = io.infer.merge_schemas([frame.schema for frame in frames])
    except pl.exceptions.PolarsError:
        return None  # types no one read of the file can take (an integer and a list): read whole
    typed, text_ids, wide = io.read.ndjson_schema(merged, options)
    for frame in frames:
        leaves = io.read.flatten_structs(frame.lazy().drop(*wide, strict=False)).collect_schema()
        if any(name in leaves and not _number_or_null(leaves[name]) for name in text_ids):
            return None
    return _JsonSlices(source.number, dict(typed), before)


def _number_or_null(dtype: pl.DataType) -> bool:
    return dtype.is_integer() or dtype.is_float() or dtype == pl.Null


def _json_stats(batches: Iterable[Any], options: io.ReadOptions) -> Iterator[Any]:
    for number, block, lines in _blocks(batches):
        data = _joined(lines)
        types: bytes | None = None
        records = 0
        try:
            data.decode("utf-8")
            if any(io.read.prescan_ndjson(data)):
                # Read whole, line by line, where a line nested too deep is rejected (json_too_deep) as a
                # local run rejects it: Polars must not see it. So is a split with a lone surrogate escape,
                # which the local reader replaces (Polars reads it as NUL or fails).
                types = None
            elif data.strip():
                inferred = io.infer.infer_ndjson_schema(data)
                # Every value the run reads parsed, as a local read parses it (one Polars cannot take sends
                # the file to the careful reader); of an object of many keys, only those (wide_objects).
                read_schema = io.read.pruned_schema(inferred, options)[0]
                parsed = pl.read_ndjson(io_module.BytesIO(data), schema=read_schema)
                # A boolean among text ids too (io.read.only_numbers): the careful reader rejects it.
                flat = io.read.flatten_structs(parsed.lazy())
                io.read.only_numbers(flat, io.read.text_ids(read_schema, options)).collect()
                records = parsed.height
                types = pickle.dumps(dict(inferred))
            else:
                types = pickle.dumps({})
        except (UnicodeDecodeError, pl.exceptions.PolarsError):
            types = None
        yield pa.RecordBatch.from_pydict(
            {"file": [number], "block": [block], "records": [records], "types": [types]},
            schema=pa.schema(
                [("file", pa.int64()), ("block", pa.int64()), ("records", pa.int64()), ("types", pa.binary())]
            ),
        )


def _read_json_lines(batches: Iterable[Any], task: Any, plan: _JsonSlices) -> Iterator[Any]:
    """The read step on an executor for the splits of a large NDJSON file: each parsed with the whole
    file's column types, its records numbered as in the file."""
    read_task: _ReadTask = task.value
    schema = _event_schema(read_task.job)
    source = _source_of(read_task, plan.number)
    shown = io.InputFile(source.uri, "ndjson", name=source.shown)
    for _, block, lines in _blocks(batches):
        data = _joined(lines)
        del lines
        first = _lines_before(plan.records_before, block, source)
        if not data.strip():
            continue
        parsed = pl.read_ndjson(io_module.BytesIO(data), schema=plan.schema)
        raw = io.read.flatten_structs(parsed.lazy()).with_row_index(ROW, offset=first).collect()
        del parsed
        last = first + raw.height - 1
        yield from _validated(raw, None, shown, read_task, source, schema, first, last)


def _split_note(split: list[str]) -> str:
    return f", {len(split)} large file(s) read in splits" if split else ""


def _split_bytes(session: Any) -> int:
    """The size above which a Parquet input is read by Spark's reader, split by row group: Spark's own
    ``spark.sql.files.maxPartitionBytes`` (128 MiB by default)."""
    try:
        return int(session._jsparkSession.sessionState().conf().filesMaxPartitionBytes())
    except Exception:  # not a JVM session (Spark Connect): the setting as text
        text = str(session.conf.get("spark.sql.files.maxPartitionBytes", "128m")).lower().rstrip("b")
        return parse_memory(text or "128m")


#: A split log's summary key: the NUL bytes skipped before the lines of the slice (:class:`NulRuns`).
_NUL_RUNS = "nul_runs"


@contextlib.contextmanager
def _warnings_kept(summary: dict[str, Any], local: str, shown: str) -> Iterator[None]:
    """The SessionizeWarnings of a read on an executor, which no one sees there, kept in its summary for
    the driver (:func:`_give_warnings`), as Dask's workers give theirs to the client."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SessionizeWarning)
        try:
            yield
        finally:
            summary["warnings"] = [
                str(w.message).replace(local, shown)
                for w in caught
                if issubclass(w.category, SessionizeWarning)
            ]


def _give_warnings(summaries: list[dict[str, Any]], files: Sequence[SparkInput]) -> None:
    """The read tasks' warnings, given on the driver in input order, up to the first file that fails, as a
    local run gives them: a whole file's as its read gave them; a split file's once for the file, from its
    slices' figures added up (skipped NUL bytes: :func:`sessionize.io.read.warn_of_nul_runs`; epoch units
    and JSON keys: :class:`sessionize.io.ReadNotes`)."""
    failed = min((s["number"] for s in summaries if "error" in s), default=None)
    by_number = {source.number: source for source in files}
    # (In input order: files, then a split file's slices.)
    for number, parts in itertools.groupby(summaries, key=lambda summary: int(summary["number"])):
        if failed is not None and number > failed:
            break
        runs = NulRuns()
        notes = io.ReadNotes()
        given: set[str] = set()
        for summary in parts:
            # A split file's slices may give the same warning each: once.
            for message in summary.get("warnings", ()):
                if message not in given:
                    given.add(message)
                    warnings.warn(message, SessionizeWarning, stacklevel=3)
            runs += summary.get(_NUL_RUNS, NulRuns())
            notes += summary.get("notes", io.ReadNotes())
        source = by_number[number]
        io.read.warn_of_nul_runs(io.InputFile(source.uri, source.format, name=source.shown), runs)
        # Its slices' epoch units added up; a JSON key that none of them has a value for (io.ReadNotes).
        notes.give(source.shown)


def _read_events(
    session: Any,
    files: list[SparkInput],
    task: Any,
    event_schema: Any,
    fs: Any,
    input_format: str | None,
) -> tuple[Any, list[str]]:
    """Every input's events as one Spark frame, with one summary row per file (or per slice of a
    split file). Files larger than a split (``spark.sql.files.maxPartitionBytes``) are read by Spark's
    own readers in splits, each slice parsed by the local reader's code: Parquet row group by row group,
    access logs, enriched TSV and CSV by lines (:func:`_split_reader`); the others whole, by
    ``binaryFile`` and the local reader."""
    limit = _split_bytes(session)
    frames = []
    split: list[str] = []
    sizes = {source.uri: fs.size(source.uri) for source in files}
    # Gzipped files are read whole: one too large for that is refused before any job.
    _check_whole([f for f in files if io.formats.split_gz(f.uri)[1]], sizes)
    large = [f for f in files if not io.formats.split_gz(f.uri)[1] and sizes[f.uri] > limit]
    texts = _TextFrames(session)
    plans = _plan_splits(texts, fs, large, task.value.options, input_format)
    for source in large:
        reader = _split_reader(session, source, task, event_schema, plans.get(source.number), texts)
        if reader is not None:
            frames.append(reader)
            split.append(source.shown)
    whole = [f for f in files if f.shown not in split]
    _check_whole(whole, sizes)
    if whole:
        binary = session.read.format("binaryFile").load([f.uri for f in whole])
        frames.insert(0, binary.mapInArrow(lambda batches: _read_files(batches, task), _struct(event_schema)))
    return functools.reduce(lambda a, b: a.union(b), frames), split


def _check_whole(files: list[SparkInput], sizes: dict[str, int]) -> None:
    """Refuse a file to be read whole that Spark's ``binaryFile`` cannot hold (one value: 2 GiB)."""
    for source in files:
        if sizes[source.uri] > MAX_WHOLE_FILE:
            gz = io.formats.split_gz(source.uri)[1]
            why = "a gzipped file cannot be split" if gz else "its slices would not parse as the whole does"
            fix = "Decompress it (a plain file is read in splits) or split it" if gz else "Split it"
            raise UnreadableInputError(
                f"{source.shown} is {sizes[source.uri] / 2**30:.1f} GiB and is read whole ({why}; see "
                "docs/spark.md), but Spark reads a whole file as one value of at most 2 GiB. "
                f"{fix} into files of less than 2 GiB."
            )


def _fixed_16_columns(session: Any, uri: str) -> frozenset[str]:
    """The top-level columns of 16 fixed bytes (Parquet's ``UUID``, or Spark's, Trino's and Postgres'
    UUIDs) of a Parquet file, from its footer, read through Hadoop's file systems as Spark reads the
    file (local or not). Spark reads them as plain binary, as Polars does: the local reader tells them
    apart by the same footer (:func:`sessionize.io.read.parquet_types`)."""
    jvm = session.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    configuration = session.sparkContext._jsc.hadoopConfiguration()
    opened = jvm.org.apache.parquet.hadoop.util.HadoopInputFile.fromPath(path, configuration)
    reader = jvm.org.apache.parquet.hadoop.ParquetFileReader.open(opened)
    try:
        fields = reader.getFooter().getFileMetaData().getSchema().getFields()
        found = set()
        for field in fields:
            if not field.isPrimitive():
                continue
            primitive = field.asPrimitiveType()
            if (
                primitive.getPrimitiveTypeName().name() == "FIXED_LEN_BYTE_ARRAY"
                and primitive.getTypeLength() == 16
            ):
                found.add(str(field.getName()))
        return frozenset(found)
    finally:
        reader.close()


#: How a large text file is read in splits: its first pass's figures (None: it is read whole).
_TextPlan = _LineSlices | _CsvSlices | _JsonSlices


def _plan_splits(
    texts: _TextFrames,
    fs: _HadoopFS,
    sources: Sequence[SparkInput],
    options: io.ReadOptions,
    input_format: str | None,
) -> dict[int, _TextPlan]:
    """The large text files that can be read in splits, by number, with what their read tasks need. The
    first lines of each are read on the driver (a log's format, a CSV's header), and one first pass per
    kind of file reads all the files of that kind at once: the lines of each split counted (access logs,
    enriched TSV), or checked and counted (CSV, NDJSON). (Each Spark job costs a round of scheduling:
    two jobs per file before.) Only in UTF-8, the default ``--encoding``, except NDJSON (always UTF-8)."""
    utf8 = io.read.is_utf8(options.encoding)
    formats = {
        s.number: fmt
        for s in sources
        if utf8 and s.format in _LINE_FORMATS and (fmt := _line_format(fs, s, input_format)) is not None
    }
    plans: dict[int, _TextPlan] = {}
    counted = [s for s in sources if s.number in formats]
    if counted:
        counts = texts.of(counted).groupBy(F.col(_FILE).alias("file"), F.col(_BLOCK).alias("block")).count()
        by_file = _by_file(counts.collect())
        for source in counted:
            blocks = ((int(row["block"]), int(row["count"])) for row in by_file.get(source.number, []))
            plans[source.number] = _LineSlices(source.number, formats[source.number], _running_totals(blocks))
    # (A .tsv that is not an enriched TSV is a TSV with a header line.)
    tables = [s for s in sources if utf8 and s.format in ("csv", "tsv") and s.number not in formats]
    headers = {s.number: header for s in tables if (header := _csv_header(fs, s)) is not None}
    plans.update(_csv_plans(texts, [s for s in tables if s.number in headers], headers))
    plans.update(_json_plans(texts, [s for s in sources if s.format == "ndjson"], options))
    return plans


def _split_reader(
    session: Any, source: SparkInput, task: Any, event_schema: Any, plan: _TextPlan | None, texts: _TextFrames
) -> Any:
    """The events of one large file read in splits, or None when it is read whole: a text file without
    a plan (:func:`_plan_splits`), a Spark without ``_metadata.row_index``."""
    schema = _struct(event_schema)
    if source.format == "parquet":
        try:
            reader = session.read.parquet(source.uri)
            if "_metadata" in reader.columns:
                return None  # a column of that name hides Spark's file metadata: read whole
            rows = reader.select("*", F.col("_metadata.row_index").alias(_ROW_INDEX))
            uuids = _fixed_16_columns(session, source.uri)
        except Exception:  # a Spark without _metadata.row_index (before 3.5): read whole
            return None
        number = source.number
        return rows.mapInArrow(lambda batches: _read_split(batches, task, number, uuids), schema)
    if plan is None:
        return None
    readers: dict[type, Callable[..., Iterator[Any]]] = {
        _LineSlices: _read_lines,
        _JsonSlices: _read_json_lines,
        _CsvSlices: _read_csv_lines,
    }
    read = readers[type(plan)]
    return texts(source).mapInArrow(lambda batches: read(batches, task, plan), schema)


def _sessionize(batches: Iterable[Any], job: Any, schema: Any) -> Iterator[Any]:
    """The sessionize step on an executor: one partition of users, every session with its geo status
    (and the partition's page views and users), as the Arrow ``schema`` the driver made."""
    partition_job: PartitionJob = job.value
    frame = _frame_of(batches)
    if frame is None or not frame.height:
        return
    columns = [name for name in frame.columns if name not in (ORDER, BUCKET, SUMMARY)]
    events = (
        frame.sort(ORDER)
        .select(columns)
        .with_columns(pl.col(S.TIME).dt.convert_time_zone("UTC").dt.cast_time_unit("us"))
    )
    del frame
    # (--agg sums beyond the largest float are looked for on the driver: see _check_sums.)
    result = process_partition(events, partition_job, keep_all=True, check=False)
    del events
    assert result.all_sessions is not None
    sessions = result.all_sessions
    if TABLE in schema.names:
        sessions = sessions.with_columns(pl.lit("sessions").alias(TABLE))
    yield from _arrow(sessions, schema).to_batches(max_chunksize=100_000)
    for name in ("pageviews", "users"):
        table = getattr(result, name)
        if table is not None and table.height:
            prefixed = table.rename({c: _PREFIXES[name] + c for c in table.columns}).with_columns(
                pl.lit(name).alias(TABLE)
            )
            yield from _arrow(prefixed, schema).to_batches(max_chunksize=100_000)


# The run -----------------------------------------------------------------------------------------


@dataclass
class SparkOutcome:
    """What :func:`run_spark` did: the figures of the run summary."""

    files: list[str]
    sessions: pl.DataFrame
    sessions_complete: bool
    output_dir: str | None
    rows_read: int
    filtered: int
    events: int
    duplicates_removed: int
    #: The rejected rows: all of them with ``keep_rejects`` or without an output directory, else the first.
    rejects: pl.DataFrame | None
    tally: Tally
    partitions: int
    master: str
    rejected: int = 0
    #: The rejects dataset's directory (``rejects``), and where Spark wrote it until :meth:`publish`.
    rejects_dir: str | None = None
    rejects_temp: str | None = None
    #: Where Spark wrote the directory (renamed to ``output_dir`` by :meth:`publish`).
    temp_dir: str | None = None
    #: Renames and removes on Spark's file systems (Hadoop's API, through the session).
    _fs: Any = None
    #: The page-view and user tables, brought to the driver (None: not asked for).
    pageviews: pl.DataFrame | None = None
    users: pl.DataFrame | None = None
    #: The inputs larger than a split read by Spark's own readers in splits (Parquet by row group, access
    #: logs and enriched TSV by lines).
    files_split: list[str] = field(default_factory=list)
    #: With ``report``, when the driver cannot read the directory Spark wrote (a URL, a cluster's file
    #: system) or it holds no part file: the sessions' columns the report reads.
    report_table: pl.DataFrame | None = None

    def publish(self) -> None:
        """Rename the complete directories (Spark wrote their ``_SUCCESS``) into place: the rejects, then
        the sessions; the rejects go back if the sessions cannot (all or nothing)."""
        published: list[tuple[str, str, str]] = []
        for temp, final in (("rejects_temp", self.rejects_dir), ("temp_dir", self.output_dir)):
            written = getattr(self, temp)
            if final is None or written is None:
                continue
            if not self._fs.rename(written, final):
                for _, earlier_final, earlier_temp in published:
                    with contextlib.suppress(Exception):
                        self._fs.rename(earlier_final, earlier_temp)  # (discard removes it then)
                raise OutputError(f"Cannot rename {written} to {final}.")
            published.append((temp, final, written))
        for temp, _, _ in published:
            setattr(self, temp, None)

    def discard(self) -> None:
        """Remove what Spark wrote (the run failed after the cluster's work)."""
        for temp in ("rejects_temp", "temp_dir"):
            written = getattr(self, temp)
            if written is not None:
                self._fs.delete(written)
                setattr(self, temp, None)


class _HadoopFS:
    """The few file system calls the engine needs, on any path Spark can write (Hadoop's API)."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self._jvm = session.sparkContext._jvm
        self._conf = session.sparkContext._jsc.hadoopConfiguration()

    def _path(self, path: str) -> tuple[Any, Any]:
        jpath = self._jvm.org.apache.hadoop.fs.Path(path)
        return jpath.getFileSystem(self._conf), jpath

    def exists(self, path: str) -> bool:
        fs, jpath = self._path(path)
        return bool(fs.exists(jpath))

    def is_empty_dir(self, path: str) -> bool:
        fs, jpath = self._path(path)
        return bool(fs.getFileStatus(jpath).isDirectory()) and len(fs.listStatus(jpath)) == 0

    def rename(self, source: str, target: str) -> bool:
        fs, jsource = self._path(source)
        _, jtarget = self._path(target)
        if fs.exists(jtarget):
            if len(fs.listStatus(jtarget)):
                return False
            fs.delete(jtarget, True)
        return bool(fs.rename(jsource, jtarget))

    def delete(self, path: str) -> None:
        fs, jpath = self._path(path)
        fs.delete(jpath, True)

    def size(self, path: str) -> int:
        fs, jpath = self._path(path)
        return int(fs.getFileStatus(jpath).getLen())

    def head(self, path: str, count: int, chunk: int = 1 << 14) -> list[bytes]:
        """A text file's first ``count`` lines as Spark's text reader cuts them (at ``\n``, a ``\r``
        kept, a UTF-8 byte order mark skipped; no empty line after a last ``\n``), read on the driver: no
        Spark job."""
        fs, jpath = self._path(path)
        stream = fs.open(jpath)
        chunks: list[bytes] = []
        ends = 0
        try:
            while ends < count:
                data = bytes(stream.readNBytes(chunk))
                if not data:
                    break
                chunks.append(data)
                ends += data.count(b"\n")
                # (Bytes cross to Python slowly: a first small read, larger ones for a long first line.)
                chunk = min(chunk * 2, 1 << 24)
        finally:
            stream.close()
        data = b"".join(chunks)
        # Hadoop's line reader skips a UTF-8 byte order mark at the start of a file.
        lines = data.removeprefix(b"\xef\xbb\xbf").split(b"\n")
        if ends < count and lines[-1] == b"":
            lines.pop()  # the end of the file: the last line's \n ends it, no empty line after it
        return lines[:count]


def _session_of(spark: Any, master: str | None) -> tuple[Any, bool]:
    """The given session, or a new one (``master``, default ``local[*]``) and True: stop it after."""
    if spark is not None:
        if master is not None:
            raise UsageError("--spark-master goes with a new Spark session, not with spark=<session>.")
        return spark, False
    active = SparkSession.getActiveSession()
    if active is not None and master is None:
        # Under spark-submit, in a notebook (Databricks), or in a program that made its own session.
        return active, False
    # The executors' Python is this one (local mode), with Polars on one thread per task: Spark runs a
    # task per core.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("POLARS_MAX_THREADS", "1")
    builder = (
        SparkSession.builder.master(master or "local[*]")
        # A local session's executors live in the driver's JVM: give it a quarter of the memory available
        # (Spark's default, 1 GiB, cannot hold one 200 MB file as it is read), unless configured.
        .config("spark.driver.memory", os.environ.get("SESSIONIZE_SPARK_DRIVER_MEMORY") or _driver_memory())
        .appName("sessionize")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.executorEnv.POLARS_MAX_THREADS", "1")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
    )
    try:
        session = builder.getOrCreate()
    except Exception as exc:  # the JVM did not start: no Java, a bad master URL, ...
        raise EngineUnavailableError(
            f"Spark could not start ({_last_line(exc)}). "
            "It needs Java 17 or later (java on the PATH or JAVA_HOME) and a valid --spark-master "
            "(local[*], spark://host:7077, yarn, k8s://...)."
        ) from exc
    session.sparkContext.setLogLevel("ERROR")
    return session, True


def _driver_memory() -> str:
    quarter = available_memory() // 4 // 2**20
    return f"{min(max(quarter, 2048), 16384)}m"


def _absolute(path: str) -> str:
    return path if io.is_url(path) else os.path.abspath(path)


def _rejects_table(rows: Any, summaries: list[dict[str, Any]]) -> Any:
    """The read step's rejected rows (:data:`REJECT`) as the rejects table, with their place in the input
    (``_order``): the columns of every file's rejects in the order they first come, as the local engine
    puts them together (the original columns as text, ``source_file``, ``source_row``, ``reject_reason``,
    ``raw_line``); just those three when nothing was rejected."""
    files: dict[int, list[str]] = {}
    for summary in summaries:  # (in input order: files, then a split file's slices)
        seen = files.setdefault(summary["number"], [])
        seen.extend(c for c in summary["reject_columns"] if c not in seen)
    columns: list[str] = []
    fixed = [*io.formats.REJECTS_COLUMNS, "raw_line"]
    for seen in files.values():
        # A file's rejects as one read gives them: its own columns, then the fixed ones (see io.read).
        ordered = [c for c in seen if c not in fixed] + [c for c in fixed if c in seen]
        columns.extend(c for c in ordered if c not in columns)
    if not columns:
        columns = list(io.formats.REJECTS_COLUMNS)
    values = F.map_from_arrays(F.col(REJECT_KEYS), F.col(REJECT))
    return rows.select(F.col(ORDER).alias(_REJECT_ORDER), values.alias(REJECT), F.col(REJECT_ROW)).select(
        F.col(_REJECT_ORDER),
        *(
            (F.col(REJECT_ROW) if name == "source_row" else F.col(REJECT).getItem(name)).alias(name)
            for name in columns
        ),
    )


def check_output_dir(fs: _HadoopFS, output_dir: str) -> None:
    if fs.exists(output_dir) and not fs.is_empty_dir(output_dir):
        raise OutputError(
            f"The output {output_dir} exists and is not an empty directory: --engine spark writes a new "
            "directory of Parquet files. Give a new or empty directory."
        )


def _temp_sibling(output_dir: str, run_id: str) -> str:
    parent, _, name = output_dir.rstrip("/").rpartition("/")
    return f"{parent}/.{name}.sessionize-{run_id}.tmp" if parent else f".{name}.sessionize-{run_id}.tmp"


def _geo_shipped(session: Any, job: PartitionJob, local: bool) -> PartitionJob:
    """The job, with its GeoIP database shipped to the executors when they may not have its path."""
    database = job.settings.geo_database
    if database is None or local:
        return job
    session.sparkContext.addFile(str(database.path))
    shipped = _ShippedDatabase(Path(database.path).name, database.source, str(database.path))
    return dataclasses.replace(job, settings=dataclasses.replace(job.settings, geo_database=shipped))  # type: ignore[arg-type]


@dataclass(frozen=True)
class _ShippedDatabase:
    """A GeoIP database sent with ``SparkContext.addFile``: it unpickles on an executor as the copy
    there (opened once per Python worker, see :func:`sessionize.geo.reopen_database`)."""

    name: str
    source: str
    path: str

    def __reduce__(self) -> tuple[Any, tuple[str, str, str]]:
        return _open_shipped, (self.name, self.source, self.path)


def _open_shipped(name: str, source: str, path: str) -> Any:
    if os.path.isfile(path):
        return geo.reopen_database(path, source)
    from pyspark import SparkFiles

    return geo.reopen_database(SparkFiles.get(name), source)


def run_spark(
    inputs: Sequence[io.InputFile],
    options: io.ReadOptions,
    job: PartitionJob,
    *,
    output_dir: str | Path | None,
    spark: Any = None,
    master: str | None = None,
    partitions: int | None = None,
    input_format: str | None = None,
    progress: Progress | None = None,
    publish: bool = True,
    partition_by_date: str | None = None,
    rejects: str | Path | None = None,
    keep_rejects: bool = False,
    report: bool = False,
) -> SparkOutcome:
    """Sessionize ``inputs`` with Spark: the same session table as a local run.

    ``spark`` is a ``SparkSession`` to use (kept open); without it a session of ``master`` (default
    ``local[*]``) is started and stopped. The table goes to ``output_dir`` (a new or empty directory
    any executor can write: a local path in local mode, or ``s3a://``, ``abfss://``, ...) as Spark's
    Parquet directory with ``_SUCCESS``; without it the sessions come back in ``sessions``.
    ``partitions`` is the number of partitions of users (default: the session's default
    parallelism, its cores). ``partition_by_date`` (a time zone) partitions the output directory by
    the sessions' start date there (``session_date=YYYY-MM-DD/``). The summary is counted on the cluster.
    ``rejects`` is a new or empty directory for the rejected rows (``on_invalid="skip"``), written by Spark
    as a Parquet dataset; ``SparkOutcome.rejects`` holds them all with ``keep_rejects`` or without
    ``output_dir``, else only the first (they stay on the cluster). With ``report``, the sessions' columns a
    report reads come back in ``report_table`` when the driver cannot read the directory Spark wrote.
    """
    require_spark()
    notify = progress or (lambda event: None)
    session, owned = _session_of(spark, master)
    # Column names as a local run tells them apart (the rejects of two files may hold `Plan` and `plan`),
    # for this run only: a session given to us goes back as it came.
    case_sensitive = session.conf.get("spark.sql.caseSensitive", None)
    session.conf.set("spark.sql.caseSensitive", "true")
    try:
        return _run(
            session,
            inputs,
            options,
            job,
            output_dir=None if output_dir is None else str(output_dir),
            partitions=partitions,
            input_format=input_format,
            notify=notify,
            publish=publish,
            partition_by_date=partition_by_date,
            rejects=None if rejects is None else str(rejects),
            keep_rejects=keep_rejects,
            report=report,
        )
    except SessionizeError:
        raise
    except Exception as exc:  # Py4J's and Spark's errors, a JVM that died
        raise _engine_error(exc) from exc
    finally:
        with contextlib.suppress(Exception):
            if case_sensitive is None:
                session.conf.unset("spark.sql.caseSensitive")
            else:
                session.conf.set("spark.sql.caseSensitive", case_sensitive)
        if owned:
            with contextlib.suppress(Exception):  # a JVM that died cannot be stopped
                session.stop()


def _engine_error(exc: BaseException) -> EngineError:
    text = f"{type(exc).__name__}: {exc}"
    if "OutOfMemoryError" in text:
        return EngineError(
            "Spark ran out of memory (java.lang.OutOfMemoryError). In local mode give its JVM more with "
            "SESSIONIZE_SPARK_DRIVER_MEMORY=8g (default: a quarter of the memory available); on a cluster "
            "raise spark.executor.memory and spark.executor.memoryOverhead, or give more --partitions. "
            "Text files are read whole: split very large ones."
        )
    return EngineError(f"The Spark job failed ({_last_line(exc)}). See Spark's log above for the cause.")


def _run(
    session: Any,
    inputs: Sequence[io.InputFile],
    options: io.ReadOptions,
    job: PartitionJob,
    *,
    output_dir: str | None,
    partitions: int | None,
    input_format: str | None,
    notify: Progress,
    publish: bool,
    partition_by_date: str | None = None,
    rejects: str | None = None,
    keep_rejects: bool = False,
    report: bool = False,
) -> SparkOutcome:
    # Timestamps as UTC instants, written as Parquet's microsecond timestamps (not INT96).
    session.conf.set("spark.sql.session.timeZone", "UTC")
    session.conf.set("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
    fs = _HadoopFS(session)
    target = None if output_dir is None else _absolute(output_dir)
    rejects_target = None if rejects is None else _absolute(rejects)
    for directory in (target, rejects_target):
        if directory is not None:
            check_output_dir(fs, directory)
    if (
        target is not None
        and rejects_target is not None
        and (
            f"{rejects_target.rstrip('/')}/".startswith(f"{target.rstrip('/')}/")
            or f"{target.rstrip('/')}/".startswith(f"{rejects_target.rstrip('/')}/")
        )
    ):
        raise UsageError(
            f"--rejects {rejects} and -o {output_dir}: the rejects directory goes beside the output, not "
            "in it (nor the output in it). Give another --rejects directory."
        )
    files = plan_inputs(inputs, session, input_format=input_format)
    master = str(session.sparkContext.master)
    local = master.startswith("local")
    sc = session.sparkContext
    count = partitions or max(int(sc.defaultParallelism), 1)
    notify(RunProgress("read", 0, len(files), 0))

    job = _geo_shipped(session, job, local)
    task = sc.broadcast(_ReadTask({_key(f.uri): f for f in files}, options, job, input_format))
    shipped = sc.broadcast(job)
    event_schema = _event_schema(job)
    read, split = _read_events(session, files, task, event_schema, fs, input_format)
    read = read.persist(StorageLevel.MEMORY_AND_DISK)
    run_id = uuid.uuid4().hex[:8]
    report_table: pl.DataFrame | None = None
    temp_dir: str | None = None
    rejects_temp: str | None = None
    try:
        summaries = [
            pickle.loads(row[0]) for row in read.where(F.col(SUMMARY).isNotNull()).select(SUMMARY).collect()
        ]
        # In input order: files, then the slices of a split file.
        summaries.sort(key=lambda s: (s["number"], s.get("first", 0)))
        _give_warnings(summaries, files)
        errors = [s["error"] for s in summaries if "error" in s]
        if errors:
            kind, message = errors[0]  # the first invalid input's, as a local run raises it
            raise kind(message)
        rows = sum(s["rows"] for s in summaries)
        rejected = sum(s["rejected"] for s in summaries)
        notify(RunProgress("read", len(files), len(files), rows))
        events = read.where(F.col(SUMMARY).isNull() & F.col(REJECT).isNull())
        events = events.drop(SUMMARY, *_REJECT_COLUMNS)
        rejects_table = _rejects_table(read.where(F.col(REJECT).isNotNull()), summaries)
        if job.settings.rules.merges_session_ids:
            # Every event of a client session id together first: its owner is found there, then its bucket.
            claim_schema = pa.schema([f for f in event_schema if f.name not in (SUMMARY, *_REJECT_COLUMNS)])
            rules = job.settings.rules
            events = events.repartition(count, F.col(BUCKET)).mapInArrow(
                lambda batches: _claim(batches, claim_schema, rules), _struct(claim_schema)
            )
        users = events.repartition(count, F.col(BUCKET))
        # Made once here: the page-view and user tables' columns come from an empty partition's run.
        table_schemas = _table_schemas(job)
        rows_schema = _session_schema(job, table_schemas)
        all_sessions = users.mapInArrow(
            lambda batches: _sessionize(batches, shipped, rows_schema), _struct(rows_schema)
        )
        persisted = all_sessions.persist(StorageLevel.MEMORY_AND_DISK)
        all_sessions = persisted
        try:
            extra_tables = _collect_tables(all_sessions, table_schemas)
            if TABLE in all_sessions.columns:
                all_sessions = all_sessions.where(F.col(TABLE) == "sessions").drop(
                    TABLE, *(c for c in all_sessions.columns if c.startswith(tuple(_PREFIXES.values())))
                )
            counted = all_sessions.where(~F.col("is_bot")) if job.exclude_bots else all_sessions
            output = counted.drop(geo.STATUS, CAPPED, *job.dropped)
            _check_sums(output, job)
            if "users" in extra_tables:
                check_sums(extra_tables["users"], job.settings.aggregates, users=True)
            if target is not None:
                temp_dir = _temp_sibling(target, run_id)
                if partition_by_date is None:
                    output.write.mode("errorifexists").parquet(temp_dir)
                else:
                    start = F.from_utc_timestamp(F.col("session_start"), partition_by_date)
                    dated = output.withColumn(DATE_PARTITION, F.to_date(start))
                    dated.write.mode("errorifexists").partitionBy(DATE_PARTITION).parquet(temp_dir)
                readable = local and not io.is_url(temp_dir)
                parts = sorted(Path(temp_dir).glob("**/part-*.parquet")) if readable else []
                sessions = pl.DataFrame()
                if parts:
                    sessions = pl.read_parquet(parts[0], glob=False).head(PREVIEW_ROWS)
                if report and not parts:
                    # The report's columns of the sessions (never events): the driver cannot read what Spark
                    # wrote (a URL, a cluster's file system), or there is no part file (no sessions).
                    wanted = [c for c in REPORT_COLUMNS if c in output.columns]
                    report_table = _collect(output.select(*wanted))
            else:
                sessions = _collect(output)
            tally, events_count = _tally(all_sessions, job.exclude_bots)
        finally:
            persisted.unpersist()
        ordered = rejects_table.orderBy(_REJECT_ORDER)
        if rejects_target is not None:
            # The rejected rows as Spark's Parquet dataset (in input order), never on the driver.
            rejects_temp = _temp_sibling(rejects_target, run_id)
            ordered.drop(_REJECT_ORDER).write.mode("errorifexists").parquet(rejects_temp)
        if not rejected:
            rejected_rows = None
        elif keep_rejects or target is None:
            rejected_rows = _collect(ordered.drop(_REJECT_ORDER))
        else:
            rejected_rows = _collect(ordered.limit(PREVIEW_ROWS).drop(_REJECT_ORDER))
        notify(RunProgress("buckets", count, count, events_count))
    except BaseException:
        for written in (temp_dir, rejects_temp):
            if written is not None:
                with contextlib.suppress(Exception):
                    fs.delete(written)
        raise
    finally:
        read.unpersist()
    filtered = sum(s["filtered"] for s in summaries)
    result = SparkOutcome(
        files=[f.shown for f in files],
        sessions=sessions,
        sessions_complete=target is None,
        output_dir=target,
        rows_read=rows,
        filtered=filtered,
        events=events_count,
        duplicates_removed=rows - rejected - filtered - tally.capped - events_count,
        rejects=rejected_rows,
        rejected=rejected,
        rejects_dir=rejects_target,
        rejects_temp=rejects_temp,
        tally=tally,
        partitions=count,
        master=master,
        temp_dir=temp_dir,
        _fs=fs,
        pageviews=extra_tables.get("pageviews"),
        users=extra_tables.get("users"),
        files_split=split,
        report_table=report_table,
    )
    if publish:
        result.publish()
    return result


def _collect_tables(rows: Any, schemas: dict[str, dict[str, pl.DataType]]) -> dict[str, pl.DataFrame]:
    """The page-view and user tables (``schemas``: their columns, :func:`_table_schemas`), brought to the
    driver (they are written as one file each, as the other engines write them), with their own column
    types back."""
    tables = {}
    for name, schema in schemas.items():
        prefix = _PREFIXES[name]
        # The columns renamed in one SQL expression: a column at a time made some ten calls to the JVM
        # each, a quarter of a small run's calls.
        fields = ", ".join(f"{_quoted(prefix + c)} AS {_quoted(c)}" for c in schema)
        part = rows.where(F.col(TABLE) == name).select(F.expr(f"struct({fields}) AS t")).select("t.*")
        collected = _collect(part)
        tables[name] = (
            collected.cast(schema) if collected.height else pl.DataFrame(schema=schema)  # type: ignore[arg-type]
        )
    return tables


def _quoted(name: str) -> str:
    """A column name as a Spark SQL identifier (any name: a backtick in it doubled)."""
    return "`" + name.replace("`", "``") + "`"


def _check_sums(output: Any, job: PartitionJob) -> None:
    """:func:`sessionize.partition.check_sums` of the sessions on the cluster (an error an executor raised
    would come back as Spark's, not as itself): one aggregation finds the ``--agg`` sums beyond the
    largest float (none, as a rule), and the first such session of the first such sum comes to the
    driver, whose check raises the error a local run raises."""
    sums = [a.name for a in job.settings.aggregates if a.function == "sum" and a.name in output.columns]
    if not sums:
        return

    def beyond(name: str) -> Any:
        return F.isnan(F.col(name)) | F.col(name).isin(float("inf"), float("-inf"))

    counts = output.agg(*(F.count(F.when(beyond(name), True)).alias(name) for name in sums)).collect()[0]
    keys = [c for c in (S.USER, "session_start") if c in output.columns]
    for name in sums:
        if counts[name]:
            first = output.where(beyond(name)).select(*keys, name).orderBy(*keys).limit(1)
            check_sums(_collect(first), job.settings.aggregates)


def _collect(frame: Any) -> pl.DataFrame:
    """A small Spark frame (sessions, never events) on the driver, as Polars."""
    table = frame.toArrow() if hasattr(frame, "toArrow") else pa.Table.from_pandas(frame.toPandas())
    result = pl.from_arrow(table)
    assert isinstance(result, pl.DataFrame)
    return result


def _tally(all_sessions: Any, exclude_bots: bool) -> tuple[Tally, int]:
    """The summary of the sessions, counted on the cluster in one aggregation: the sessions' events and
    bots over all sessions, the rest over those the run counts (no bots with ``--exclude-bots``). (Each
    Spark job costs a round of scheduling; the summary's three jobs were a sixth of a small run's time.)"""
    bots = F.col("is_bot")
    counts = ~bots if exclude_bots else F.lit(True)
    status = F.col(geo.STATUS)
    figures = all_sessions.agg(
        F.coalesce(F.sum("event_count"), F.lit(0)).alias("events"),
        F.count(F.when(bots, True)).alias("bot_sessions"),
        F.coalesce(F.sum(F.when(bots, F.col("event_count"))), F.lit(0)).alias("bot_events"),
        (F.coalesce(F.sum(CAPPED), F.lit(0)) if CAPPED in all_sessions.columns else F.lit(0)).alias("capped"),
        F.count(F.when(counts, True)).alias("sessions"),
        F.count_distinct(F.when(counts, F.col(S.USER))).alias("users"),
        F.count(F.when(counts & F.col(S.USER).isNull(), True)).alias("null_users"),
        F.percentile(F.when(counts, F.col("duration_s")), F.lit(0.5)).alias("median"),
        # The mean from whole microseconds, as the local engines take it (mean_of_microseconds): the same
        # figure whatever order the partitions add up in.
        F.sum(F.when(counts, F.round(F.col("duration_s") * 1_000_000).cast("long"))).alias("micros"),
        F.count(F.when(counts, F.col("duration_s"))).alias("timed"),
        *(F.count(F.when(counts & (status == name), True)).alias(f"status_{name}") for name in geo.STATUSES),
    ).collect()[0]
    geo_counts = {name: int(figures[f"status_{name}"]) for name in geo.STATUSES if figures[f"status_{name}"]}
    tally = Tally(
        sessions=int(figures["sessions"]),
        users=int(figures["users"]) + int(figures["null_users"] > 0),
        bot_sessions=int(figures["bot_sessions"]),
        bot_events=int(figures["bot_events"]),
        capped=int(figures["capped"]),
        geo_counts=geo_counts,
    )
    tally.counted_median_s = None if figures["median"] is None else float(figures["median"])
    tally.counted_mean_s = (
        None if not figures["timed"] else mean_of_microseconds(int(figures["micros"]), int(figures["timed"]))
    )
    return tally, int(figures["events"])


def _report_table(result: SparkOutcome) -> pl.LazyFrame | None:
    """What ``--report`` reads before the run publishes: the directory Spark wrote (under its temporary
    name), or the report's columns Spark brought back (see ``SparkOutcome.report_table``); None: the
    sessions came back."""
    if result.report_table is not None:
        return result.report_table.lazy()
    if result.temp_dir is None:
        return None
    return read_session_tables([result.temp_dir])


class SparkEngine:
    """Apache Spark (``--engine spark``): a local session, or the cluster of ``--spark-master``."""

    name: ClassVar[str] = "spark"

    def check(self, config: RunConfig) -> None:
        unsupported = {
            "--state": config.incremental,
            "--memory-limit": config.engine.memory_limit,
            "--buckets": config.engine.buckets,
            "--temp-dir": config.engine.temp_dir,
            "--scheduler": config.engine.scheduler,
        }
        refuse_options(
            unsupported, "--engine spark (see docs/spark.md: incremental runs are the local engine's)."
        )
        output = config.output.output
        if output == io.STDIN:
            raise UsageError(
                "--engine spark writes a directory of Parquet files, not one table on stdout: give a "
                "directory with -o DIR (or a URL)."
            )
        if config.output.format not in (None, "parquet"):
            raise UsageError("--engine spark writes Parquet: leave out --format.")
        # (A rejects file is a pending output, checked as every other; a rejects directory is Spark's.)
        rejects = config.output.rejects
        for directory in (output, rejects if rejects is not None and io.is_dataset_target(rejects) else None):
            if directory is not None and not io.is_url(directory):
                io.refuse_planted_symlink(directory, directory)
        if (
            output is not None
            and io.formats.format_of(output.rstrip("/")) is not None
            and not os.path.isdir(output)
        ):
            raise UsageError(
                f"-o {output}: --engine spark writes a directory of Parquet files, not one file. Give a "
                "directory name without a table extension."
            )
        require_spark()

    def run(
        self,
        files: list[io.InputFile],
        config: RunConfig,
        job: PartitionJob,
        outputs: io.Publication,
        progress: Progress,
    ) -> Outcome:
        dataset = config.output.rejects is not None and io.is_dataset_target(config.output.rejects)
        result = run_spark(
            files,
            config.read,
            job,
            output_dir=config.output.output,
            spark=config.engine.spark_session,
            master=config.engine.spark_master,
            partitions=config.engine.partitions,
            input_format=config.read.input_format,
            progress=progress,
            publish=False,
            partition_by_date=config.session.timezone if config.output.partition_by_date else None,
            # A --rejects directory is Spark's dataset; a --rejects file is written from the driver.
            rejects=config.output.rejects if dataset else None,
            keep_rejects=config.output.rejects is not None and not dataset,
            report=config.output.report is not None,
        )
        # The directory is renamed into place when every output of the run is complete.
        outputs.defer(result.publish, result.discard)
        return Outcome(
            sessions=result.sessions,
            tally=result.tally,
            files=result.files,
            rows_read=result.rows_read,
            events=result.events,
            duplicates_removed=result.duplicates_removed,
            rejects=result.rejects,
            # (None: `rejects` holds every rejected row, or there are none.)
            rejected_count=None
            if result.rejected == (0 if result.rejects is None else result.rejects.height)
            else result.rejected,
            rejects_written=dataset,
            report_table=_report_table(result) if config.output.report is not None else None,
            complete=result.sessions_complete,
            written=None if result.output_dir is None else "parquet",
            path_taken=f"spark: {result.partitions} partitions" + _split_note(result.files_split),
            buckets=result.partitions,
            scheduler=result.master,
            filtered=result.filtered,
            pageviews=result.pageviews,
            users=result.users,
        )


__all__ = ["SUCCESS", "SparkEngine", "SparkOutcome", "plan_inputs", "require_spark", "run_spark"]
