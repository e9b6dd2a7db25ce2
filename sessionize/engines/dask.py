"""The Dask engine: what ``sessionize run --engine dask`` runs, the steps of the bucketed engine
(:mod:`sessionize.engines.buckets`) spread over Dask workers:

1. **read**: every input partition (a file, or a slice of rows of a local Parquet file) is read and
   validated on a worker by :func:`sessionize.io.read_file`, the code of local runs: the same
   canonical events, the same errors with ``on_invalid="fail"``, the same rejected rows with
   ``"skip"``. Each event gets ``_order`` (its input file and row: the global input order) and
   ``_bucket`` (a hash of its user id, :func:`sessionize.buckets.bucket_of`).
2. **shuffle**: Dask moves the events by ``_bucket`` so that each partition holds every event of its
   users (peer-to-peer shuffle on a distributed cluster).
3. **sessionize**: each partition is put back in input order (ties at one instant keep it, as in a
   local run) and goes through :func:`sessionize.partition.process_partition`, the step of every
   engine. Its sessions are written to ``output_dir`` under a temporary name.
4. **publish**: when every partition is written (and the run's other outputs are complete), the
   parts are renamed to ``part-NNNNN.parquet`` and a ``_SUCCESS`` marker is written last, as Spark
   and Hadoop do: a directory without it is the output of a run that did not finish, and
   ``sessionize report`` refuses it.

Only :func:`run_dask` starts anything: it starts a :class:`distributed.LocalCluster` (one worker
process per CPU) or connects to the scheduler it is given, and closes what it opened.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import itertools
import logging
import os
import posixpath
import re
import shutil
import tempfile
import threading
import uuid
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import polars as pl

try:
    import dask
    import dask.dataframe as dd
    import distributed
    import fsspec  # type: ignore[import-untyped]  # noqa: F401  (URLs need it on every worker)
    from dask.delayed import delayed
except ImportError as exc:  # pragma: no cover - without the dask extra
    _MISSING: ImportError | None = exc
else:
    _MISSING = None

from sessionize import geo, io
from sessionize._version import __version__
from sessionize.config import RunConfig
from sessionize.engines.base import PREVIEW_ROWS, Outcome, Progress, RunProgress, refuse_options
from sessionize.engines.budget import bucket_of, claim_bucket_of
from sessionize.errors import (
    GeoIPDatabaseError,
    OutputError,
    SessionizeError,
    SessionizeWarning,
    UnreadableInputError,
    UsageError,
)
from sessionize.partition import PartitionJob, SessionRules, Tally, process_partition

#: The global input order of an event: its input's number in the top bits, its row below.
ORDER = "_order"
#: A hash of the user id: the column that the shuffle moves events by.
BUCKET = "_bucket"
_ROW_BITS = 40
#: The range of ``_bucket``: wide, so that Dask's own hash of it spreads users evenly.
BUCKET_SPACE = 1 << 32
#: Rows per input partition of a local Parquet file (other inputs are read a file per partition).
DEFAULT_PARTITION_ROWS = 1_000_000
#: Sessions kept in :attr:`DaskOutcome.sessions` when the table went to ``output_dir``.
#: Name of each partition's file in ``output_dir``.
PART_NAME = "part-{:05d}.parquet"
#: A part's name while the run is not complete (hidden: readers skip names that start with a dot).
TEMP_PART_NAME = ".part-{:05d}.parquet.{}.tmp"
#: The last file of a complete output directory (the marker Spark and Hadoop write).
SUCCESS = "_SUCCESS"
#: How long to wait for a first worker on a cluster that has none yet.
WORKER_WAIT_S = 60
POLARS_THREADS = "POLARS_MAX_THREADS"
#: Dask's shuffle method: None lets Dask choose (peer-to-peer on a distributed cluster).
SHUFFLE_METHOD: str | None = None


def _event_columns(schema: dict[str, pl.DataType]) -> dict[str, pl.DataType]:
    """The columns Dask shuffles: the events', their order and bucket."""
    return {**schema, ORDER: pl.Int64(), BUCKET: pl.UInt32()}


#: A file name of a table (``sessions.csv``), which a directory output must not look like.
_TABLE_NAME = re.compile(r"\.(?:csv|tsv|tab|parquet|pq|ndjson|jsonl|json)(?:\.gz)?/?$", re.IGNORECASE)
is_url = io.is_url


def require_dask() -> None:
    """Raise :class:`UsageError` with the install command when Dask is not installed."""
    if _MISSING is not None:
        raise UsageError(
            f"--engine dask needs Dask ({_MISSING}). Install it with: pip install 'sessionize[dask]' "
            "(on this machine and every worker)."
        )


@dataclass(frozen=True)
class InputPart:
    """One partition of the input: a file, or ``window`` (first row, rows) of a local Parquet file."""

    #: The file's position among the inputs (its events come before those of later files).
    number: int
    source: io.InputFile
    window: io.Window | None = None

    @property
    def first_row(self) -> int:
        return 0 if self.window is None else self.window[0]


@dataclass
class DaskOutcome:
    """What :func:`run_dask` did: the figures of the run summary, as ``pipeline.RunResult`` has them."""

    #: The input files (paths or URLs), in input order.
    files: list[str]
    #: Every session when ``output_dir`` is None; else the first ``PREVIEW_ROWS`` (read the output).
    sessions: pl.DataFrame
    sessions_complete: bool
    #: Where the session table went (one Parquet file per partition), and those files.
    output_dir: str | None
    part_files: list[str]
    #: Data rows in the inputs: ``rows_read == events + rejected + duplicates_removed + filtered``.
    rows_read: int
    #: Rows left out by ``--filter`` and ``--max-send-delay``.
    filtered: int
    #: Events sessionized (bots' too, when ``exclude_bots`` left their sessions out).
    events: int
    #: The rejected rows (``on_invalid="skip"``), as the local engine gives them; None for none.
    rejects: pl.DataFrame | None
    duplicates_removed: int
    #: The summary figures of the sessions written (sessions, users, bots, geo outcomes, durations).
    tally: Tally
    #: Input partitions read, and partitions of users after the shuffle.
    input_partitions: int
    partitions: int
    #: Workers of the cluster, and its scheduler's address.
    workers: int
    scheduler: str
    #: Whether the run made ``output_dir`` (a failed run removes it again), and its parts' name tag.
    created: bool = False
    run_id: str = ""
    #: The page-view and user tables, sent back by the workers (the orchestrator writes each as one
    #: file); None when not asked for.
    pageviews: pl.DataFrame | None = None
    users: pl.DataFrame | None = None

    @property
    def rejected(self) -> int:
        return 0 if self.rejects is None else self.rejects.height

    # The summary figures, as RunResult names them.
    @property
    def session_count(self) -> int:
        return self.tally.sessions

    @property
    def user_count(self) -> int:
        return self.tally.users

    @property
    def geo_counts(self) -> dict[str, int]:
        return self.tally.geo_counts

    @property
    def bot_sessions(self) -> int:
        return self.tally.bot_sessions

    @property
    def median_duration_s(self) -> float | None:
        return self.tally.median_duration_s

    @property
    def mean_duration_s(self) -> float | None:
        return self.tally.mean_duration_s

    def publish(self) -> None:
        """Give the parts their names, then write ``_SUCCESS``: the directory is complete."""
        if self.output_dir is None:
            return
        try:
            finals = []
            for temp in self.part_files:
                number = int(temp.rsplit(".part-", 1)[1].split(".", 1)[0])
                final = _join(self.output_dir, PART_NAME.format(number))
                _rename(temp, final)
                finals.append(final)
            self.part_files = finals
            _write_marker(self.output_dir)
        except OSError as exc:
            raise OutputError(f"Cannot write {self.output_dir}: {exc.strerror or exc}.") from exc

    def discard(self) -> None:
        """Remove the parts written (the run failed after the cluster's work)."""
        if self.output_dir is not None:
            _remove_parts(self.output_dir, self.run_id, self.partitions, created=self.created)


# Inputs ------------------------------------------------------------------------------------------


def resolve_inputs(inputs: io.Inputs, *, input_format: str | None = None) -> list[io.InputFile]:
    """Files to read, as :func:`sessionize.io.resolve_inputs` expands them, fsspec URLs included (a
    file, a directory, or a glob pattern such as ``s3://logs/2024-05-*/*.parquet``).

    Standard input is refused: workers cannot read the client's stdin.
    """
    inputs = io.input_list(inputs)
    if not inputs:
        raise UsageError("No input given. Pass one or more files, directories, glob patterns or URLs.")
    if any(is_url(str(item)) for item in inputs if not isinstance(item, io.InputFile)):
        require_dask()
    result = io.resolve_inputs(inputs, input_format=input_format, urls=True)
    for source in result:
        if source.is_stream:
            raise UsageError(
                f"--engine dask reads files, not {'standard input' if source.is_stdin else 'a pipe'} "
                f"({source.shown}): the workers cannot see it. "
                "Write the events to a file on storage every worker can read."
            )
    return result


def _filesystem(url: str) -> tuple[Any, str]:
    require_dask()
    return io.filesystem(url)


def _absolute(path: str) -> str:
    """A local path as every worker finds it: absolute. A worker of a cluster started elsewhere
    (``--scheduler``) runs in a folder of its own, where a relative path names another file, or none."""
    return path if is_url(path) else os.path.abspath(path)


def _as_workers_read_it(source: io.InputFile) -> io.InputFile:
    """``source`` with an absolute path (see :func:`_absolute`), still named as it was given."""
    path = _absolute(source.path)
    if source.is_stdin or path == source.path:
        return source
    return dataclasses.replace(source, path=path, name=source.shown)


def plan_parts(files: Sequence[io.InputFile], *, partition_rows: int) -> list[InputPart]:
    """The input partitions: local Parquet files by slices of ``partition_rows`` rows, other files whole.

    A slice of a Parquet file reads only its row groups; text files (and URLs, fetched whole) are
    one partition each: split large ones into several files to spread their reading.
    """
    if partition_rows < 1:
        raise UsageError(f"partition_rows {partition_rows} must be at least 1.")
    parts: list[InputPart] = []
    for number, source in enumerate(files):
        if source.format == "parquet" and not is_url(source.path):
            rows = io.estimate_rows(source)
            if rows > partition_rows:
                parts.extend(
                    InputPart(number, source, (first, partition_rows))
                    for first in range(0, rows, partition_rows)
                )
                continue
        parts.append(InputPart(number, source))
    return parts


@contextlib.contextmanager
def _local_copy(source: io.InputFile) -> Iterator[io.InputFile]:
    """``source`` itself, or for a URL a copy in a temporary directory of the worker (removed after)."""
    if not is_url(source.path):
        yield source
        return
    directory = tempfile.mkdtemp(prefix="sessionize-dask-")
    try:
        name = posixpath.basename(source.path.rstrip("/").split("://", 1)[1]) or "input"
        local = os.path.join(directory, name)
        fs, path = _filesystem(source.path)
        try:
            fs.get_file(path, local)
        except OSError as exc:
            raise UnreadableInputError(f"{source.path}: cannot be read ({exc}).") from exc
        yield io.InputFile(local, source.format)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@dataclass
class _Read:
    """One input partition read on a worker: its events for the shuffle, and what the client gets."""

    events: Any  # pandas.DataFrame
    summary: _ReadSummary


@dataclass
class _ReadSummary:
    rows: int
    rejects: pl.DataFrame | None
    filtered: int = 0
    #: The warnings of the read (a log's skipped NUL bytes), given again on the client: a worker
    #: process's own are seen by no one.
    warnings: tuple[str, ...] = ()
    #: What the warnings of the partition's file are given from, once for the file (io.ReadNotes).
    notes: io.ReadNotes = field(default_factory=io.ReadNotes)


#: Held while a task of this process runs Polars. The threads of one worker would otherwise run
#: Polars at once, and a Python function inside one thread's query (the core's and the enrichments'
#: callbacks) needs the GIL on Polars' thread pool while another thread may wait for that pool with
#: the GIL held (``to_pandas``, ``from_pandas``): a deadlock, seen in the tests. Polars uses every
#: core for one task, so little is lost; separate worker processes still run side by side.
_POLARS_LOCK = threading.RLock()


def _read_part(part: InputPart, options: io.ReadOptions, merge: bool = False) -> _Read:
    """Read and validate one input partition (on a worker) with the local engine's reader."""
    with _local_copy(part.source) as local, _POLARS_LOCK:
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", SessionizeWarning)
                read = io.read.read_file(local, options, window=part.window, part=True)
        except SessionizeError as exc:
            if local is part.source:
                raise
            # The error names the worker's copy: name the URL instead.
            raise type(exc)(str(exc).replace(local.path, part.source.path)) from None
        given = []
        for caught_warning in caught:
            if issubclass(caught_warning.category, SessionizeWarning):
                given.append(str(caught_warning.message).replace(local.path, part.source.shown))
            else:
                warnings.warn_explicit(
                    caught_warning.message,
                    caught_warning.category,
                    caught_warning.filename,
                    caught_warning.lineno,
                )
        rejects = read.rejects
        if rejects is not None and local is not part.source:
            rejects = rejects.with_columns(pl.lit(part.source.path).alias("source_file"))
        first = (part.number << _ROW_BITS) + part.first_row
        events = read.events.with_columns(
            (pl.int_range(pl.len(), dtype=pl.Int64) + first).alias(ORDER),
            # --shared-session-ids merge: by client session id first, until each session has its owner.
            (claim_bucket_of if merge else bucket_of)(BUCKET_SPACE).alias(BUCKET),
        )
        return _Read(
            _to_pandas(events, options.event_schema()),
            _ReadSummary(read.rows, rejects, read.filtered, tuple(given), read.notes),
        )


def _give_notes(parts: list[InputPart], notes: dict[int, io.ReadNotes], before: int | None = None) -> None:
    """The warnings of each file (before the file numbered ``before``) from its partitions' notes."""
    for number, indexes in itertools.groupby(range(len(parts)), key=lambda index: parts[index].number):
        if before is not None and number >= before:
            break
        together, shown = io.ReadNotes(), ""
        for index in indexes:
            together += notes.get(index, io.ReadNotes())
            shown = parts[index].source.shown
        together.give(shown)


def _claim_part(frame: Any, schema: dict[str, pl.DataType], rules: SessionRules) -> Any:
    """One partition of client session ids given to their owners, bucketed again by user."""
    with _POLARS_LOCK:
        events = rules.claim(_from_pandas(frame, schema))
        return _to_pandas(events.with_columns(bucket_of(BUCKET_SPACE).alias(BUCKET)), schema)


def _events_of(read: _Read) -> Any:
    return read.events


def _summary_of(read: _Read) -> _ReadSummary:
    return read.summary


def _to_pandas(frame: pl.DataFrame, schema: dict[str, pl.DataType]) -> Any:
    """The events as the pandas frame that Dask shuffles (Dask partitions are pandas).

    The event columns are Arrow-backed, so strings and UTC microsecond timestamps come back
    exactly; ``_order`` and ``_bucket`` are NumPy integers, which Dask hashes and splits several
    times faster than Arrow-backed ones (10M events: 20 s of shuffle tasks instead of 54 s).
    """
    events = frame.select(list(schema)).to_pandas(use_pyarrow_extension_array=True)
    events[ORDER] = frame.get_column(ORDER).to_numpy()
    events[BUCKET] = frame.get_column(BUCKET).cast(pl.Int64).to_numpy()
    return events


def _from_pandas(frame: Any, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    columns = _event_columns(schema)
    return pl.from_pandas(frame).select(list(columns)).cast(columns)  # type: ignore[arg-type]


# Sessionizing a partition ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Job:
    """What every partition's task needs: sent to each worker once."""

    job: PartitionJob
    output_dir: str | None
    #: Part of the parts' temporary names: a run never takes another's parts for its own.
    run_id: str = ""


@dataclass
class _Part:
    """One partition sessionized: its counts, its file, and its table (or the table's first rows)."""

    number: int
    events: int
    duplicates: int
    tally: Tally
    path: str | None
    table: pl.DataFrame
    #: The partition's page views and users (``--pageviews-output``, ``--users-output``), sent back.
    pageviews: pl.DataFrame | None = None
    users: pl.DataFrame | None = None


def _sessionize_part(frame: Any, number: int, job: _Job) -> _Part:
    """Sessionize one partition of users (on a worker), as the local bucketed path does a bucket."""
    with _POLARS_LOCK:
        return _sessionize_part_locked(frame, number, job)


def _sessionize_part_locked(frame: Any, number: int, job: _Job) -> _Part:
    events = _from_pandas(frame, job.job.event_schema()).sort(ORDER).drop(ORDER, BUCKET)
    del frame
    result = process_partition(events, job.job)
    del events
    table = result.sessions
    path = None
    if job.output_dir is not None:
        path = _join(job.output_dir, TEMP_PART_NAME.format(number, job.run_id))
        _write_parquet(table, path)
        table = table.head(PREVIEW_ROWS)
    return _Part(
        number, result.events, result.duplicates, result.tally, path, table, result.pageviews, result.users
    )


# Output ------------------------------------------------------------------------------------------


def _join(directory: str, name: str) -> str:
    return directory.rstrip("/") + "/" + name if is_url(directory) else os.path.join(directory, name)


#: Errors of a part's write that say a worker cannot reach the output directory (not a full disk).
_UNREACHABLE = (errno.EACCES, errno.EPERM, errno.ENOENT, errno.EROFS)


def _write_parquet(table: pl.DataFrame, path: str) -> None:
    """Write one part; a file system that cannot take it (a full disk, which Polars raises as a
    ``ComputeError``; a directory a worker cannot reach) is an :class:`OutputError` naming the part."""
    try:
        if is_url(path):
            fs, target = _filesystem(path)
            with fs.open(target, "wb") as handle:
                io.write_parquet(table, handle)
        else:
            io.write_parquet(table, path)
    except io.WRITE_ERRORS as exc:
        error = io.cannot_write(path, exc)
        if io.errno_of(exc) in _UNREACHABLE:
            error = OutputError(
                f"{error} The output directory must be on storage that every worker can write (a shared "
                "file system, or a URL such as s3://bucket/sessions)."
            )
        raise error from exc


def check_output_dir(output_dir: str | Path) -> None:
    """Refuse an output directory that cannot be made or already holds files (a run never mixes its
    partitions with another's)."""
    target = str(output_dir)
    if is_url(target):
        fs, root = _filesystem(target)
        if fs.exists(root) and (not fs.isdir(root) or fs.ls(root)):
            raise OutputError(
                f"The output directory {target} is not empty: give a new or empty directory for the "
                "session partitions."
            )
        return
    io.refuse_planted_symlink(target, target)
    if os.path.exists(target):
        if not os.path.isdir(target):
            raise OutputError(
                f"The output {target} is a file: --engine dask writes a directory of Parquet files."
            )
        if os.listdir(target):
            raise OutputError(
                f"The output directory {target} is not empty: give a new or empty directory for the "
                "session partitions."
            )
        return
    io.check_directory(os.path.dirname(os.path.abspath(target)), target)


def _make_output_dir(output_dir: str) -> bool:
    """Create the output directory; whether it was created (and so is removed on failure)."""
    try:
        if is_url(output_dir):
            fs, root = _filesystem(output_dir)
            created = not fs.exists(root)
            fs.makedirs(root, exist_ok=True)
            return created
        created = not os.path.exists(output_dir)
        os.makedirs(output_dir, exist_ok=True)
        return created
    except OSError as exc:
        raise OutputError(f"Cannot create {output_dir}: {exc.strerror or exc}.") from exc


def _remove_parts(output_dir: str, run_id: str, count: int, *, created: bool) -> None:
    """After a failure: remove the run's parts (and the directory when the run made it)."""
    with contextlib.suppress(Exception):
        names = [TEMP_PART_NAME.format(number, run_id) for number in range(count)]
        if is_url(output_dir):
            fs, root = _filesystem(output_dir)
            for name in names:
                path = posixpath.join(root, name)
                if fs.exists(path):
                    fs.rm(path)
            if created and not fs.ls(root):
                fs.rmdir(root)
            return
        for name in names:
            Path(output_dir, name).unlink(missing_ok=True)
        if created:
            os.rmdir(output_dir)


# The cluster -------------------------------------------------------------------------------------


def default_workers() -> int:
    """Worker processes of a local cluster: one per CPU."""
    return max(os.cpu_count() or 1, 1)


@contextlib.contextmanager
def connect(scheduler: str | None = None, *, workers: int | None = None) -> Iterator[distributed.Client]:
    """A client of the scheduler at ``scheduler`` (``tcp://host:8786``, or a scheduler file
    ``*.json``), or of a new local cluster of ``workers`` processes that is closed afterwards."""
    require_dask()
    if scheduler is not None:
        try:
            if scheduler.endswith(".json") and os.path.isfile(scheduler):
                client = distributed.Client(scheduler_file=scheduler, set_as_default=False)  # type: ignore[no-untyped-call]
            else:
                client = distributed.Client(scheduler, set_as_default=False)  # type: ignore[no-untyped-call]
        except (OSError, TimeoutError, ValueError) as exc:
            raise UsageError(
                f"--scheduler {scheduler}: cannot connect to a Dask scheduler ({exc}). Give its address "
                "(tcp://host:8786) or its scheduler file, and check that it is running."
            ) from exc
        with client:
            yield client
        return
    count = default_workers() if workers is None else workers
    if count < 1:
        raise UsageError(f"workers {count} must be at least 1.")
    cluster = _local_cluster(count)
    try:
        with distributed.Client(cluster, set_as_default=False) as client:  # type: ignore[no-untyped-call]
            yield client
    finally:
        cluster.close()


def _local_cluster(workers: int) -> distributed.LocalCluster:
    """A cluster of ``workers`` processes of one thread each on this machine, quiet."""
    # Polars sizes its thread pool at import, which the worker process does before the Nanny's
    # ``env``: the variable must be in the environment the process starts with. The Nanny sets it
    # in this process too, so put back what was there (a POLARS_MAX_THREADS set by the user wins).
    threads = str(max((os.cpu_count() or 1) // workers, 1))
    before = os.environ.get(POLARS_THREADS)
    environ = {**dask.config.get("distributed.nanny.pre-spawn-environ"), POLARS_THREADS: threads}
    try:
        with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
            return distributed.LocalCluster(  # type: ignore[no-untyped-call]
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",  # no dashboard port to collide with another cluster
                # The workers share this terminal: a task's error is raised here, not logged there.
                silence_logs=logging.CRITICAL,
            )
    finally:
        if before is None:
            os.environ.pop(POLARS_THREADS, None)
        else:
            os.environ[POLARS_THREADS] = before


def _open_geo(path: str, source: str) -> None:
    geo.reopen_database(path, source)


def _check_geo(client: distributed.Client, database: geo.GeoDatabase | None) -> None:
    """Open the GeoIP database on every worker now (once per worker process, see
    :func:`sessionize.geo.reopen_database`): a worker without it fails here, with a clear error."""
    if database is None:
        return
    try:
        client.run(_open_geo, str(database.path), database.source)
    except GeoIPDatabaseError as exc:
        raise GeoIPDatabaseError(
            f"On a Dask worker: {exc} Every worker opens the database at the path given here: put the "
            "same file at that path on each of them."
        ) from None


def _versions() -> tuple[str, str]:
    return __version__, pl.__version__


def _check_workers(client: distributed.Client) -> int:
    """Wait for a worker, and check that every worker runs this sessionize and Polars."""
    try:
        client.wait_for_workers(1, timeout=WORKER_WAIT_S)
    except TimeoutError:
        raise UsageError(
            f"No Dask worker joined the scheduler within {WORKER_WAIT_S} s: start workers "
            "(dask worker tcp://scheduler:8786) with sessionize installed."
        ) from None
    try:
        versions: dict[str, tuple[str, str]] = client.run(_versions)
    except ImportError as exc:
        raise UsageError(
            f"A Dask worker cannot import sessionize ({exc}): install the same sessionize version "
            "on every worker."
        ) from exc
    here = _versions()
    different = {address: found for address, found in versions.items() if tuple(found) != here}
    if different:
        address, (theirs, polars) = next(iter(different.items()))
        raise UsageError(
            f"{len(different)} Dask worker(s) run another sessionize or Polars than this machine "
            f"({address}: sessionize {theirs}, polars {polars}; here: sessionize {here[0]}, polars "
            f"{here[1]}). Install the same versions everywhere: results would differ."
        )
    return len(versions)


# The run -----------------------------------------------------------------------------------------


def run_dask(
    inputs: Sequence[str | Path | io.InputFile],
    options: io.ReadOptions,
    job: PartitionJob,
    *,
    output_dir: str | Path | None,
    scheduler: str | None = None,
    partitions: int | None = None,
    partition_rows: int = DEFAULT_PARTITION_ROWS,
    workers: int | None = None,
    input_format: str | None = None,
    progress: Progress | None = None,
    publish: bool = True,
) -> DaskOutcome:
    """Sessionize ``inputs`` on a Dask cluster: the same session table as a local run.

    ``inputs`` are resolved :class:`~sessionize.io.InputFile` objects, or paths, directories, glob
    patterns and fsspec URLs (see :func:`resolve_inputs`); every worker must be able to read them.
    ``options`` and ``job`` mean what they mean to every engine. The table goes to ``output_dir``
    (a new or empty directory, or URL, that every worker can write) as one Parquet file per
    partition of users, sorted by user within each, and a ``_SUCCESS`` marker written last (with
    ``publish=False`` the parts keep their temporary names until :meth:`DaskOutcome.publish`). With
    ``output_dir=None`` the workers send the table back and ``sessions`` holds it all.

    ``scheduler`` is a Dask scheduler's address (or scheduler file); without it a local cluster of
    ``workers`` processes (default: one per CPU) is started and closed. ``partitions`` is the number
    of partitions of users after the shuffle (default: the number of input partitions, at least
    the workers); ``partition_rows`` the rows per input partition of a local Parquet file.
    ``progress`` gets ``RunProgress("read", ...)`` per input partition read, then
    ``RunProgress("buckets", ...)`` per partition of users sessionized.
    """
    require_dask()
    target = None if output_dir is None else str(output_dir)
    if partitions is not None and partitions < 1:
        raise UsageError(f"--partitions {partitions} must be at least 1.")
    files = resolve_inputs(inputs, input_format=input_format)
    if target is not None:
        check_output_dir(target)
    parts = plan_parts([_as_workers_read_it(source) for source in files], partition_rows=partition_rows)
    notify = progress or (lambda event: None)
    task_job = _Job(
        job=job, output_dir=None if target is None else _absolute(target), run_id=uuid.uuid4().hex[:8]
    )
    with connect(scheduler, workers=workers) as client, client.as_current():
        worker_count = _check_workers(client)
        _check_geo(client, job.settings.geo_database)
        count = partitions or max(len(parts), worker_count)
        created = False if target is None else _make_output_dir(target)
        try:
            outcome = _compute(client, parts, options, task_job, count=count, notify=notify)
        except BaseException:
            if target is not None:
                _remove_parts(target, task_job.run_id, count, created=created)
            raise
        result = DaskOutcome(
            files=[source.path for source in files],
            output_dir=target,
            input_partitions=len(parts),
            partitions=count,
            workers=worker_count,
            scheduler=str(client.scheduler_info().get("address", scheduler or "local")),
            created=created,
            run_id=task_job.run_id,
            **outcome,
        )
    if publish:
        result.publish()
    return result


def _compute(
    client: distributed.Client,
    parts: list[InputPart],
    options: io.ReadOptions,
    job: _Job,
    *,
    count: int,
    notify: Progress,
) -> dict[str, Any]:
    run_id = job.run_id
    reads = client.map(
        _read_part,
        parts,
        options=options,
        merge=job.job.settings.rules.merges_session_ids,
        key=[f"sessionize-read-{run_id}-{i}" for i in range(len(parts))],
    )
    summaries = client.map(
        _summary_of, reads, key=[f"sessionize-summary-{run_id}-{i}" for i in range(len(parts))]
    )
    frames = client.map(_events_of, reads, key=[f"sessionize-events-{run_id}-{i}" for i in range(len(parts))])
    del reads  # the scheduler keeps each read until its events and summary are taken
    rows = filtered = 0
    rejected: list[pl.DataFrame | None] = [None] * len(parts)
    index_of = {future.key: index for index, future in enumerate(summaries)}
    finished: set[int] = set()
    failed: dict[int, Any] = {}
    # A file's warnings once, from its partitions' notes added up, as a local run gives them.
    notes: dict[int, io.ReadNotes] = {}
    for future in distributed.as_completed(summaries):  # type: ignore[no-untyped-call]
        index = index_of[future.key]
        finished.add(index)
        if future.status == "error":
            failed[index] = future
        else:
            summary: _ReadSummary = future.result()
            rows += summary.rows
            filtered += summary.filtered
            rejected[index] = summary.rejects
            for message in summary.warnings:
                warnings.warn(message, SessionizeWarning, stacklevel=2)
            notes[index] = summary.notes
            notify(RunProgress("read", len(finished), len(parts), rows))
        # A local run raises the first invalid input's error: wait for the partitions before it.
        if failed and finished.issuperset(range(min(failed))):
            _give_notes(parts, notes, before=parts[min(failed)].number)
            failed[min(failed)].result()  # raises the worker's error, with its traceback
    del summaries
    _give_notes(parts, notes)

    with _POLARS_LOCK:  # an in-process cluster's worker threads share this process
        schema = job.job.event_schema()
        meta = _to_pandas(pl.DataFrame(schema=_event_columns(schema)), schema)
    events = dd.from_delayed(frames, meta=meta, verify_meta=False)
    if job.job.settings.rules.merges_session_ids:
        # Every event of a client session id together first: its owner is found there, then its bucket.
        events = events.shuffle(
            on=BUCKET, npartitions=count, ignore_index=True, shuffle_method=SHUFFLE_METHOD
        ).map_partitions(_claim_part, schema, job.job.settings.rules, meta=meta)
    shuffled = events.shuffle(on=BUCKET, npartitions=count, ignore_index=True, shuffle_method=SHUFFLE_METHOD)
    shared = client.scatter(job, broadcast=True, hash=False)  # type: ignore[no-untyped-call]
    tasks = [
        delayed(_sessionize_part, pure=False, name=f"sessionize-part-{run_id}-{number}")(
            piece, number, shared
        )
        for number, piece in enumerate(shuffled.to_delayed())
    ]
    futures = client.compute(tasks)  # type: ignore[no-untyped-call]
    del frames, events, shuffled, tasks  # the scheduler holds the events until the shuffle took them

    done_parts: list[_Part | None] = [None] * count
    sessionized = 0
    for done, future in enumerate(distributed.as_completed(futures), start=1):  # type: ignore[no-untyped-call]
        part: _Part = future.result()
        done_parts[part.number] = part
        sessionized += part.events
        notify(RunProgress("buckets", done, count, sessionized))
    del futures, shared
    results = [part for part in done_parts if part is not None]

    tally = Tally()
    for part in results:
        tally.merge(part.tally)
    tables = [part.table for part in results]
    sessions = pl.concat(tables, how="vertical") if tables else pl.DataFrame()
    found = [r for r in rejected if r is not None]
    extra: dict[str, pl.DataFrame | None] = {}
    for name in ("pageviews", "users"):
        if getattr(job.job, name):
            frames_of = [getattr(part, name) for part in results if getattr(part, name) is not None]
            if not frames_of:
                frames_of = [
                    getattr(process_partition(pl.DataFrame(schema=job.job.event_schema()), job.job), name)
                ]
            extra[name] = pl.concat(frames_of, how="vertical")
    return {
        **extra,
        "sessions": sessions if job.output_dir is None else sessions.head(PREVIEW_ROWS),
        "sessions_complete": job.output_dir is None,
        "part_files": [part.path for part in results if part.path is not None],
        "rows_read": rows,
        "filtered": filtered,
        "events": sessionized,
        "rejects": pl.concat(found, how="diagonal_relaxed") if found else None,
        "duplicates_removed": sum(part.duplicates for part in results),
        "tally": tally,
    }


def _rename(source: str, target: str) -> None:
    if is_url(source):
        fs, path = _filesystem(source)
        fs.mv(path, _filesystem(target)[1])
    else:
        os.replace(source, target)


def _write_marker(output_dir: str) -> None:
    path = _join(output_dir, SUCCESS)
    if is_url(path):
        fs, name = _filesystem(path)
        fs.pipe_file(name, b"")
    else:
        with open(path, "wb") as handle:
            os.fsync(handle.fileno())


class DaskEngine:
    """A Dask cluster (``--engine dask``): a local one, or the scheduler at ``--scheduler``."""

    name: ClassVar[str] = "dask"

    def check(self, config: RunConfig) -> None:
        unsupported = {
            "--state": config.incremental,
            "--memory-limit": config.engine.memory_limit,
            "--buckets": config.engine.buckets,
            "--temp-dir": config.engine.temp_dir,
            "--spark-master": config.engine.spark_master,
            "--partition-by-date": config.output.partition_by_date or None,
        }
        refuse_options(unsupported, "--engine dask.")
        output = config.output.output
        if output == io.STDIN:
            raise UsageError(
                "--engine dask writes a directory of Parquet partitions, not one table on stdout: "
                "give a directory with -o DIR (or a URL)."
            )
        if config.output.format not in (None, "parquet"):
            raise UsageError("--engine dask writes Parquet partitions: leave out --format.")
        if output is not None and not os.path.isdir(output) and _TABLE_NAME.search(output):
            raise UsageError(
                f"-o {output}: --engine dask writes a directory of Parquet partitions, not one file. "
                f"Give a directory name without a table extension (e.g. -o {_TABLE_NAME.sub('', output)}/)."
            )
        require_dask()

    def run(
        self,
        files: list[io.InputFile],
        config: RunConfig,
        job: PartitionJob,
        outputs: io.Publication,
        progress: Progress,
    ) -> Outcome:
        result = run_dask(
            files,
            config.read,
            job,
            output_dir=config.output.output,
            scheduler=config.engine.scheduler,
            partitions=config.engine.partitions,
            progress=progress,
            publish=False,
        )
        # The parts are renamed and the _SUCCESS marker written when every output of the run is.
        outputs.defer(result.publish, result.discard)
        return Outcome(
            sessions=result.sessions,
            tally=result.tally,
            files=result.files,
            rows_read=result.rows_read,
            events=result.events,
            duplicates_removed=result.duplicates_removed,
            rejects=result.rejects,
            complete=result.sessions_complete,
            written=None if result.output_dir is None else "parquet",
            path_taken=f"dask: {result.partitions} partitions",
            buckets=result.partitions,
            scheduler=result.scheduler,
            report_table=_report_table(result) if config.output.report is not None else None,
            pageviews=result.pageviews,
            users=result.users,
            filtered=result.filtered,
        )


def _report_table(result: DaskOutcome) -> pl.LazyFrame | None:
    """What ``--report`` reads: the parts under their temporary names (before the run publishes)."""
    if result.output_dir is None or not result.part_files:
        return None
    return pl.scan_parquet(result.part_files, glob=False)


__all__ = [
    "DEFAULT_PARTITION_ROWS",
    "SUCCESS",
    "DaskEngine",
    "DaskOutcome",
    "InputPart",
    "check_output_dir",
    "connect",
    "default_workers",
    "is_url",
    "plan_parts",
    "resolve_inputs",
    "run_dask",
]
