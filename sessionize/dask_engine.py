"""Sessionize on a Dask cluster: what ``sessionize run --engine dask`` runs (issue #10).

The steps of the bucketed local path (``pipeline._run_in_buckets``), spread over Dask workers:

1. **read**: every input partition (a file, or a slice of rows of a local Parquet file) is read and
   validated on a worker by :func:`sessionize.io.read_file`, the code of local runs: the same
   canonical events, the same errors with ``on_invalid="fail"``, the same rejected rows with
   ``"skip"``. Each event gets ``_order`` (its input file and row: the global input order) and
   ``_bucket`` (a hash of its user id, :func:`sessionize.buckets.bucket_of`).
2. **shuffle**: Dask moves the events by ``_bucket`` so that each partition holds every event of its
   users (peer-to-peer shuffle on a distributed cluster).
3. **sessionize**: each partition is put back in input order (ties at one instant keep it, as in a
   local run), de-duplicated (:func:`sessionize.io.drop_duplicate_events`), its user ids hashed
   when asked, and sessionized by :func:`sessionize.pipeline.sessionize_partition`, the function of
   the local engine. Its sessions are counted as the local path counts them and written to
   ``output_dir/part-NNNNN.parquet``.

Only :func:`run_dask` starts anything: it starts a :class:`distributed.LocalCluster` (one worker
process per CPU) or connects to the scheduler it is given, and closes what it opened.
"""

from __future__ import annotations

import contextlib
import logging
import os
import posixpath
import re
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

try:
    import dask
    import dask.dataframe as dd
    import distributed
    import fsspec  # type: ignore[import-untyped]
    from dask.delayed import delayed
except ImportError as exc:  # pragma: no cover - without the dask extra
    _MISSING: ImportError | None = exc
else:
    _MISSING = None

import sessionize
from sessionize import buckets, geo, io, pipeline
from sessionize import schema as S
from sessionize.errors import (
    GeoIPDatabaseError,
    NoInputFilesError,
    OutputError,
    SessionizeError,
    UnknownFormatError,
    UnreadableInputError,
    UsageError,
)
from sessionize.privacy import hash_user_ids

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
PREVIEW_ROWS = pipeline.PREVIEW_ROWS
#: Name of each partition's file in ``output_dir``.
PART_NAME = "part-{:05d}.parquet"
#: How long to wait for a first worker on a cluster that has none yet.
WORKER_WAIT_S = 60
POLARS_THREADS = "POLARS_MAX_THREADS"
#: Dask's shuffle method: None lets Dask choose (peer-to-peer on a distributed cluster).
SHUFFLE_METHOD: str | None = None

_EVENT_COLUMNS: dict[str, pl.DataType] = {**S.EVENT_SCHEMA, ORDER: pl.Int64(), BUCKET: pl.UInt32()}
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def require_dask() -> None:
    """Raise :class:`UsageError` with the install command when Dask is not installed."""
    if _MISSING is not None:
        raise UsageError(
            f"--engine dask needs Dask ({_MISSING}). Install it with: pip install 'sessionize[dask]' "
            "(on this machine and every worker)."
        )


def is_url(path: str) -> bool:
    """Whether ``path`` is a URL for fsspec (``s3://bucket/key``, ``gs://...``, ``file:///...``)."""
    return _URL.match(path) is not None


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
    #: Data rows in the inputs: ``rows_read == events + rejected + duplicates_removed``.
    rows_read: int
    #: Events sessionized (bots' too, when ``exclude_bots`` left their sessions out).
    events: int
    #: The rejected rows (``on_invalid="skip"``), as the local engine gives them; None for none.
    rejects: pl.DataFrame | None
    duplicates_removed: int
    #: Sessions per IP lookup outcome (of the sessions written).
    geo_counts: dict[str, int]
    #: Sessions of crawlers and scripts, and their events (excluded or not).
    bot_sessions: int
    bot_events: int
    #: Sessions and users written.
    session_count: int
    user_count: int
    median_duration_s: float | None
    mean_duration_s: float | None
    #: Input partitions read, and partitions of users after the shuffle.
    input_partitions: int
    partitions: int
    #: Workers of the cluster, and its scheduler's address.
    workers: int
    scheduler: str

    @property
    def rejected(self) -> int:
        return 0 if self.rejects is None else self.rejects.height


# Inputs ------------------------------------------------------------------------------------------


def resolve_inputs(
    inputs: Sequence[str | Path | io.InputFile], *, input_format: str | None = None
) -> list[io.InputFile]:
    """Files to read: local paths as :func:`sessionize.io.resolve_inputs` expands them, and fsspec
    URLs (a file, a directory, or a glob pattern such as ``s3://logs/2024-05-*/*.parquet``).

    Standard input is refused: workers cannot read the client's stdin.
    """
    result: list[io.InputFile] = []
    seen: set[str] = set()
    for item in inputs:
        if isinstance(item, io.InputFile):
            found = [item]
        elif is_url(str(item)):
            found = _resolve_url(str(item), input_format)
        else:
            found = io.resolve_inputs([item], input_format=input_format)
        for source in found:
            if source.is_stdin:
                raise UsageError(
                    "--engine dask reads files, not standard input: the workers cannot see it. "
                    "Write the events to a file on storage every worker can read."
                )
            key = source.path if is_url(source.path) else os.path.realpath(source.path)
            if key not in seen:
                seen.add(key)
                result.append(source)
    if not result:
        raise UsageError("No input given. Pass one or more files, directories, glob patterns or URLs.")
    return result


def _filesystem(url: str) -> tuple[Any, str]:
    require_dask()
    try:
        return fsspec.core.url_to_fs(url)  # type: ignore[no-any-return]
    except (ImportError, ValueError) as exc:
        scheme = url.split("://", 1)[0]
        raise UsageError(
            f"{url}: cannot open {scheme}:// URLs ({exc}). Install the fsspec package for them "
            f"(s3fs for s3://, gcsfs for gs://, adlfs for az://) on this machine and every worker."
        ) from exc


def _resolve_url(url: str, input_format: str | None) -> list[io.InputFile]:
    fs, root = _filesystem(url)
    try:
        if any(char in root for char in "*?["):
            names, explicit = sorted(name for name in fs.glob(root) if fs.isfile(name)), False
            if not names:
                raise NoInputFilesError(f"The pattern {url} matches no files.")
        elif fs.isdir(root):
            names, explicit = sorted(fs.find(root)), False
        elif fs.exists(root):
            names, explicit = [root], True
        else:
            raise UnreadableInputError(f"{url}: no such file or directory.")
    except OSError as exc:
        raise UnreadableInputError(f"{url}: cannot be listed ({exc}).") from exc
    found: list[io.InputFile] = []
    for name in names:
        if posixpath.basename(name).startswith("."):
            continue
        fmt = io.format_of(name, input_format)
        if fmt is None:
            if explicit:
                raise UnknownFormatError(
                    f"Cannot tell the format of {url} from its extension. Supported: .csv, .tsv, .parquet, "
                    ".ndjson, .jsonl (each also .gz for text formats). Give the format with --input-format."
                )
            continue
        found.append(io.InputFile(fs.unstrip_protocol(name), fmt))
    if not found:
        raise NoInputFilesError(
            f"{url} holds no supported files (.csv, .tsv, .parquet, .ndjson, .jsonl, optionally .gz). "
            "Give their format with --input-format."
        )
    return found


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


#: Held while a task of this process runs Polars. The threads of one worker would otherwise run
#: Polars at once, and a Python function inside one thread's query (the core's and the enrichments'
#: callbacks) needs the GIL on Polars' thread pool while another thread may wait for that pool with
#: the GIL held (``to_pandas``, ``from_pandas``): a deadlock, seen in the tests. Polars uses every
#: core for one task, so little is lost; separate worker processes still run side by side.
_POLARS_LOCK = threading.RLock()


def _read_part(part: InputPart, options: io.ReadOptions) -> _Read:
    """Read and validate one input partition (on a worker) with the local engine's reader."""
    with _local_copy(part.source) as local, _POLARS_LOCK:
        try:
            read = io.read_file(local, options, window=part.window)
        except SessionizeError as exc:
            if local is part.source:
                raise
            # The error names the worker's copy: name the URL instead.
            raise type(exc)(str(exc).replace(local.path, part.source.path)) from None
        rejects = read.rejects
        if rejects is not None and local is not part.source:
            rejects = rejects.with_columns(pl.lit(part.source.path).alias("source_file"))
        first = (part.number << _ROW_BITS) + part.first_row
        events = read.events.with_columns(
            (pl.int_range(pl.len(), dtype=pl.Int64) + first).alias(ORDER),
            buckets.bucket_of(BUCKET_SPACE).alias(BUCKET),
        )
        return _Read(_to_pandas(events), _ReadSummary(read.rows, rejects))


def _events_of(read: _Read) -> Any:
    return read.events


def _summary_of(read: _Read) -> _ReadSummary:
    return read.summary


def _to_pandas(frame: pl.DataFrame) -> Any:
    """The events as the pandas frame that Dask shuffles (Dask partitions are pandas).

    The event columns are Arrow-backed, so strings and UTC microsecond timestamps come back
    exactly; ``_order`` and ``_bucket`` are NumPy integers, which Dask hashes and splits several
    times faster than Arrow-backed ones (10M events: 20 s of shuffle tasks instead of 54 s).
    """
    events = frame.select(list(S.EVENT_SCHEMA)).to_pandas(use_pyarrow_extension_array=True)
    events[ORDER] = frame.get_column(ORDER).to_numpy()
    events[BUCKET] = frame.get_column(BUCKET).cast(pl.Int64).to_numpy()
    return events


def _from_pandas(frame: Any) -> pl.DataFrame:
    return pl.from_pandas(frame).select(list(_EVENT_COLUMNS)).cast(_EVENT_COLUMNS)  # type: ignore[arg-type]


# Sessionizing a partition ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Job:
    """What every partition's task needs: sent to each worker once."""

    settings: pipeline.SessionSettings
    dedupe: bool
    secret: bytes | None
    exclude_bots: bool
    dropped: tuple[str, ...]
    output_dir: str | None


@dataclass
class _Part:
    """One partition sessionized: its counts, its file, and its table (or the table's first rows)."""

    number: int
    events: int
    duplicates: int
    tally: pipeline._Tally
    path: str | None
    table: pl.DataFrame


def _sessionize_part(frame: Any, number: int, job: _Job) -> _Part:
    """Sessionize one partition of users (on a worker), as the local bucketed path does a bucket."""
    with _POLARS_LOCK:
        return _sessionize_part_locked(frame, number, job)


def _sessionize_part_locked(frame: Any, number: int, job: _Job) -> _Part:
    events = _from_pandas(frame).sort(ORDER).drop(ORDER, BUCKET)
    del frame
    before = events.height
    events = io.drop_duplicate_events(events, dedupe=job.dedupe)
    if job.secret is not None:
        events = hash_user_ids(events.lazy(), secret=job.secret).collect(engine="in-memory")
    tally = pipeline._Tally()
    table = tally.add(
        pipeline.sessionize_partition(events, job.settings),
        exclude_bots=job.exclude_bots,
        dropped=job.dropped,
    )
    path = None
    if job.output_dir is not None:
        path = _join(job.output_dir, PART_NAME.format(number))
        _write_parquet(table, path)
        table = table.head(PREVIEW_ROWS)
    return _Part(number, events.height, before - events.height, tally, path, table)


# Output ------------------------------------------------------------------------------------------


def _join(directory: str, name: str) -> str:
    return directory.rstrip("/") + "/" + name if is_url(directory) else os.path.join(directory, name)


def _write_parquet(table: pl.DataFrame, path: str) -> None:
    try:
        if is_url(path):
            fs, target = _filesystem(path)
            with fs.open(target, "wb") as handle:
                io.write_parquet(table, handle)
        else:
            io.write_parquet(table, path)
    except OSError as exc:
        raise OutputError(
            f"Cannot write {path}: {exc.strerror or exc}. The output directory must be on storage that "
            "every worker can write (a shared file system, or a URL such as s3://bucket/sessions)."
        ) from exc


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
    parent = os.path.dirname(os.path.abspath(target))
    if not os.path.isdir(parent):
        raise OutputError(f"Cannot write {target}: the directory {parent} does not exist.")


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


def _remove_parts(output_dir: str, count: int, *, created: bool) -> None:
    """After a failure: remove the partitions written (and the directory when the run made it)."""
    with contextlib.suppress(Exception):
        if is_url(output_dir):
            fs, root = _filesystem(output_dir)
            for number in range(count):
                name = posixpath.join(root, PART_NAME.format(number))
                if fs.exists(name):
                    fs.rm(name)
            if created and not fs.ls(root):
                fs.rmdir(root)
            return
        for number in range(count):
            Path(output_dir, PART_NAME.format(number)).unlink(missing_ok=True)
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
    return sessionize.__version__, pl.__version__


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
    settings: pipeline.SessionSettings,
    *,
    output_dir: str | Path | None,
    dedupe: bool = False,
    secret: bytes | None = None,
    exclude_bots: bool = False,
    dropped: Sequence[str] = (),
    scheduler: str | None = None,
    partitions: int | None = None,
    partition_rows: int = DEFAULT_PARTITION_ROWS,
    workers: int | None = None,
    input_format: str | None = None,
    progress: Callable[[pipeline.RunProgress], None] | None = None,
) -> DaskOutcome:
    """Sessionize ``inputs`` on a Dask cluster: the same session table as a local run.

    ``inputs`` are resolved :class:`~sessionize.io.InputFile` objects, or paths, directories, glob
    patterns and fsspec URLs (see :func:`resolve_inputs`); every worker must be able to read them.
    ``options``, ``settings``, ``dedupe``, ``secret``, ``exclude_bots`` and ``dropped`` mean what
    they mean to the local engine. The table goes to ``output_dir`` (a new or empty directory, or
    URL, that every worker can write) as one Parquet file per partition of users, sorted by user
    within each; with ``output_dir=None`` the workers send it back and ``sessions`` holds it all.

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
    parts = plan_parts(files, partition_rows=partition_rows)
    notify = progress or (lambda event: None)
    job = _Job(
        settings=settings,
        dedupe=dedupe,
        secret=secret,
        exclude_bots=exclude_bots,
        dropped=tuple(dropped),
        output_dir=target,
    )
    with connect(scheduler, workers=workers) as client, client.as_current():
        worker_count = _check_workers(client)
        _check_geo(client, settings.geo_database)
        count = partitions or max(len(parts), worker_count)
        created = False if target is None else _make_output_dir(target)
        try:
            outcome = _compute(client, parts, options, job, count=count, notify=notify)
        except BaseException:
            if target is not None:
                _remove_parts(target, count, created=created)
            raise
        return DaskOutcome(
            files=[source.path for source in files],
            output_dir=target,
            input_partitions=len(parts),
            partitions=count,
            workers=worker_count,
            scheduler=str(client.scheduler_info().get("address", scheduler or "local")),
            **outcome,
        )


def _compute(
    client: distributed.Client,
    parts: list[InputPart],
    options: io.ReadOptions,
    job: _Job,
    *,
    count: int,
    notify: Callable[[pipeline.RunProgress], None],
) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:8]
    reads = client.map(
        _read_part,
        parts,
        options=options,
        key=[f"sessionize-read-{run_id}-{i}" for i in range(len(parts))],
    )
    summaries = client.map(
        _summary_of, reads, key=[f"sessionize-summary-{run_id}-{i}" for i in range(len(parts))]
    )
    frames = client.map(_events_of, reads, key=[f"sessionize-events-{run_id}-{i}" for i in range(len(parts))])
    del reads  # the scheduler keeps each read until its events and summary are taken
    rows = 0
    rejected: list[pl.DataFrame | None] = [None] * len(parts)
    index_of = {future.key: index for index, future in enumerate(summaries)}
    finished: set[int] = set()
    failed: dict[int, Any] = {}
    for future in distributed.as_completed(summaries):  # type: ignore[no-untyped-call]
        index = index_of[future.key]
        finished.add(index)
        if future.status == "error":
            failed[index] = future
        else:
            summary: _ReadSummary = future.result()
            rows += summary.rows
            rejected[index] = summary.rejects
            notify(pipeline.RunProgress("read", len(finished), len(parts), rows))
        # A local run raises the first invalid input's error: wait for the partitions before it.
        if failed and finished.issuperset(range(min(failed))):
            failed[min(failed)].result()  # raises the worker's error, with its traceback
    del summaries

    with _POLARS_LOCK:  # an in-process cluster's worker threads share this process
        meta = _to_pandas(pl.DataFrame(schema=_EVENT_COLUMNS))
    events = dd.from_delayed(frames, meta=meta, verify_meta=False)
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
        notify(pipeline.RunProgress("buckets", done, count, sessionized))
    del futures, shared
    results = [part for part in done_parts if part is not None]

    tally = _merge(part.tally for part in results)
    durations = pl.concat(tally.durations) if tally.durations else pl.Series([], dtype=pl.Float64)
    tables = [part.table for part in results]
    sessions = pl.concat(tables, how="vertical") if tables else pl.DataFrame()
    found = [r for r in rejected if r is not None]
    return {
        "sessions": sessions if job.output_dir is None else sessions.head(PREVIEW_ROWS),
        "sessions_complete": job.output_dir is None,
        "part_files": [part.path for part in results if part.path is not None],
        "rows_read": rows,
        "events": sessionized,
        "rejects": pl.concat(found, how="diagonal_relaxed") if found else None,
        "duplicates_removed": sum(part.duplicates for part in results),
        "geo_counts": tally.geo_counts,
        "bot_sessions": tally.bot_sessions,
        "bot_events": tally.bot_events,
        "session_count": tally.sessions,
        "user_count": tally.users,
        "median_duration_s": _float(durations.median()),
        "mean_duration_s": _float(durations.mean()),
    }


def _merge(tallies: Iterable[pipeline._Tally]) -> pipeline._Tally:
    """One tally of the partitions' tallies (a user's sessions are all in one partition)."""
    total = pipeline._Tally()
    for tally in tallies:
        total.sessions += tally.sessions
        total.users += tally.users
        total.bot_sessions += tally.bot_sessions
        total.bot_events += tally.bot_events
        for status, number in tally.geo_counts.items():
            total.geo_counts[status] = total.geo_counts.get(status, 0) + number
        total.durations.extend(tally.durations)
    return total


def _float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


__all__ = [
    "DEFAULT_PARTITION_ROWS",
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
