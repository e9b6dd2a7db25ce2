"""Incremental runs for cron: sessions that span batches, idempotent re-runs, partitioned output.

``sessionize run NEW_FILES --state STATE_DIR --output-dir OUT_DIR`` carries between runs, in
``STATE_DIR``:

* ``users.parquet``: every user seen, with the time of their last event, the first event time
  still kept for them (``retained_from``), how many of their sessions lie before it and in all, and
  their latest login id (``--stitch-col``) with its time;
* ``events.parquet``: each active user's events from ``retained_from`` on, that is every session
  that ended less than ``timeout + lateness`` before the user's last event (so at least the last
  one). Users idle for longer than ``timeout + lateness`` before the watermark keep no events: an
  event that would join their last session is late;
* ``manifest.json``: the input files already processed (path, size, SHA-256), the watermark (the
  newest event time seen) and the settings the state was built with.

A run sessionizes the kept events of the users it touches together with the new events, and
rewrites those users' sessions from ``retained_from`` on in ``OUT_DIR/session_date=YYYY-MM-DD/``
(Hive partitions by the session's start date in ``--timezone``). A session whose last event is
within the timeout of the watermark is written with ``is_final = false`` and rewritten when a later
run extends or closes it; its ``session_id`` stays the same as long as its first event does.

The partitions and the new state (a new version directory beside the current one) are written and
flushed to disk before anything is published; then the partitions are renamed into place, and last
``CURRENT`` is renamed to name the new version. A run that fails before that leaves the old state
(a new state's first run commits an empty one that claims the output directory just before its
partitions are renamed), and the next run rewrites the same partitions again.
"""

from __future__ import annotations

import array
import ast
import codecs
import contextlib
import dataclasses
import errno
import fcntl
import gzip
import hashlib
import json
import os
import shutil
import sys
import tempfile
import warnings
import zlib
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, ClassVar, cast

import polars as pl

from sessionize import io, presets
from sessionize import schema as S
from sessionize.accesslog import detect_log_format
from sessionize.attribution import referers_identity
from sessionize.config import (
    BLANK_IDS,
    DEFAULT_ASSET_PATTERN,
    FORMER_BLANK_IDS,
    FORMER_DEFAULT_ASSET_PATTERNS,
    INCREMENTAL_KEYS,
    ReadOptions,
    RunConfig,
    engaged_settings,
    legacy_secret_fingerprint,
)
from sessionize.config import DEFAULT_LATENESS as DEFAULT_LATENESS
from sessionize.core import beyond_session_cap
from sessionize.engines.base import Outcome, Progress, RunProgress, refuse_options
from sessionize.errors import (
    LateEventsError,
    OutputError,
    SessionizeWarning,
    StateError,
    StateLockedError,
    UnreadableInputError,
    UsageError,
)
from sessionize.io.formats import ACCESS_LOG_FORMATS, InputFormat, split_gz
from sessionize.normalize import MAX_REPORTED_ROWS, ROW, SKIP_HINT
from sessionize.partition import (
    STORED_GEO_COLUMNS,
    PartitionJob,
    Tally,
    build_users,
    check_sums,
    drop_shown,
    empty_sessions,
    hash_ids,
    keeps_located_addresses,
    process_partition,
    protect_addresses,
    stand_in,
    stitched_ids,
    user_table_inputs,
    with_stored_geo,
)

#: Bump when the state's files change shape; older states are refused with a clear message.
STATE_VERSION = 1
#: The reason of an event rejected for arriving too late (``reject_reason`` in --rejects).
LATE = "late"
IS_FINAL = "is_final"
PARTITION = "session_date"
_LOCK = ".lock"
#: The fingerprint's key for the --hash-user-ids secret.
_SECRET = "hash_user_ids"
#: The settings' key for the referer database (see :func:`_check_referers`).
_REFERERS = "referers"
_CURRENT = "CURRENT"
_FILE = "_file"
_ORDER = "_order"
#: A user's latest login id (``--stitch-col``, hashed as the events' are) and the time of its event.
_LOGIN = "login_id"
_LOGIN_TIME = "login_time"
_USERS_SCHEMA: dict[str, pl.DataType] = {
    S.USER: pl.String(),
    "last_event": S.TIMESTAMP,
    "retained_from": S.TIMESTAMP,
    "sessions_before": pl.UInt32(),
    "sessions_total": pl.UInt32(),
    "has_events": pl.Boolean(),
    _LOGIN: pl.String(),
    _LOGIN_TIME: S.TIMESTAMP,
}


@dataclass
class State:
    """What one incremental run hands to the next (see the module's docstring)."""

    users: pl.DataFrame
    events: pl.DataFrame
    files: list[dict[str, Any]] = field(default_factory=list)
    watermark: datetime | None = None
    settings: dict[str, str] = field(default_factory=dict)
    runs: int = 0

    @classmethod
    def empty(cls) -> State:
        return cls(users=pl.DataFrame(schema=_USERS_SCHEMA), events=pl.DataFrame(schema=S.EVENT_SCHEMA))


def _flocked(fd: int) -> bool:
    """Take an exclusive ``flock`` on ``fd`` without waiting: False when another process holds one."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise
        return False
    return True


@contextlib.contextmanager
def locked(state_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``state_dir`` (``flock``: the kernel releases it if we die)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    io.refuse_foreign_directory(state_dir, f"--state {state_dir}")  # as made: no one else's since the check
    path = state_dir / _LOCK
    try:
        # Never through a link, which would truncate and write the file it leads to (review 58 F1).
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise OutputError(
            f"Cannot use --state {state_dir}: its lock file {path} is a symbolic link, which no run makes. "
            "Remove it (and check who put it there)."
        ) from None
    handle = os.fdopen(fd, "r+")  # held until the end of the run
    try:
        if not _flocked(handle.fileno()):
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise StateLockedError(
                f"The state {state_dir} is in use by another sessionize run ({holder}). This run did "
                "nothing; let the other one finish (cron: space the runs out, or wrap them in flock)."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} since {datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}")
        handle.flush()
        yield
    finally:
        handle.close()


def load_state(state_dir: Path) -> State:
    """The state in ``state_dir``, or an empty one for a directory that holds none yet."""
    pointer = state_dir / _CURRENT
    if not pointer.exists():
        return State.empty()
    version_dir = state_dir / pointer.read_text(encoding="utf-8").strip()
    try:
        manifest = json.loads((version_dir / "manifest.json").read_text(encoding="utf-8"))
        if not isinstance(manifest, dict):
            raise ValueError("manifest.json holds no object")
        if manifest.get("version") != STATE_VERSION:
            raise StateError(
                f"The state {state_dir} was written by another version of sessionize "
                f"(state version {manifest.get('version')}, this one reads {STATE_VERSION}). "
                "Start a new state directory (and output directory) with a full run."
            )
        files, watermark, settings, runs = _manifest_fields(manifest)
        users = pl.read_parquet(version_dir / "users.parquet", glob=False)
        events = pl.read_parquet(version_dir / "events.parquet", glob=False)
        # A state written before the users kept their login id: none kept.
        users = users.with_columns(
            pl.lit(None, dtype).alias(name)
            for name, dtype in _USERS_SCHEMA.items()
            if name not in users.columns
        )
    except (OSError, ValueError, pl.exceptions.PolarsError) as exc:
        raise StateError(
            f"The state {state_dir} cannot be read ({exc}). Restore it from a backup, or start a new "
            "state and output directory with a full run over all inputs."
        ) from exc
    return State(users=users, events=events, files=files, watermark=watermark, settings=settings, runs=runs)


#: The session columns the user table adds up that no default makes up for when a partition lacks them.
_USER_TABLE_COUNTS = ("event_count", "pageview_count")
#: The fields each entry of a manifest's ``files`` has, and their types (see :func:`_scan_file`).
_ENTRY_FIELDS: dict[str, type] = {"path": str, "size": int, "sha256": str}


def _manifest_fields(
    manifest: dict[str, Any],
) -> tuple[list[dict[str, Any]], datetime | None, dict[str, str], int]:
    """The files, watermark, settings and run count of a state's manifest, each checked for its type:
    ``ValueError`` naming the field for one that is not (a file edited by hand, or by someone else),
    rather than a ``TypeError`` from deep in the run after its partitions were written."""
    files = manifest.get("files", [])
    if not isinstance(files, list) or not all(
        isinstance(entry, dict)
        and all(isinstance(entry.get(name), kind) for name, kind in _ENTRY_FIELDS.items())
        for entry in files
    ):
        raise ValueError("manifest.json: 'files' is not a list of files, each with its path, size and sha256")
    runs = manifest.get("runs", 0)
    if not isinstance(runs, int) or isinstance(runs, bool) or runs < 0:
        raise ValueError(f"manifest.json: 'runs' is {runs!r}, not a count of runs")
    settings = manifest.get("settings", {})
    if not isinstance(settings, dict) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in settings.items()
    ):
        raise ValueError("manifest.json: 'settings' is not an object of texts")
    text = manifest.get("watermark")
    watermark = None
    if text is not None:
        try:
            watermark = datetime.fromisoformat(text) if isinstance(text, str) else None
        except ValueError:
            watermark = None
        if watermark is None or watermark.tzinfo is None:
            raise ValueError(f"manifest.json: 'watermark' is {str(text)[:40]!r}, not a time with its offset")
    return files, watermark, settings, runs


@dataclass
class PreparedState:
    """A new state written beside the current one (see :func:`prepare_state`), which
    :func:`commit_state` makes current or :meth:`discard` removes."""

    state_dir: Path
    #: The new version directory, complete and flushed to disk; no run reads it before ``CURRENT`` names it.
    version: Path
    #: ``CURRENT``'s new content (the version's name), flushed to disk, renamed over ``CURRENT`` to commit.
    pointer: Path
    committed: bool = False

    def discard(self) -> None:
        """Remove what :func:`prepare_state` wrote (nothing once committed); the state stays as it was."""
        if self.committed:
            return
        self.pointer.unlink(missing_ok=True)
        shutil.rmtree(self.version, ignore_errors=True)


def prepare_state(state_dir: Path, state: State) -> PreparedState:
    """Write ``state`` as a new version directory and ``CURRENT``'s new content beside the current ones,
    every file flushed to disk: the part of saving a state that a full disk can stop, done before any
    output is published. What the runs read does not change until :func:`commit_state`; on an error
    nothing written here is left (a version directory of a run killed meanwhile is removed by the next
    run: see :func:`remove_stale_versions`)."""
    version = state_dir / f"state-{state.runs:06d}-{os.getpid()}"
    pointer: Path | None = None
    try:
        if version.exists():  # not the current one (its run number is older): left by a failed run
            shutil.rmtree(version)
        version.mkdir()
        state.users.write_parquet(version / "users.parquet")
        state.events.write_parquet(version / "events.parquet")
        manifest = {
            "version": STATE_VERSION,
            "runs": state.runs,
            "watermark": None if state.watermark is None else state.watermark.isoformat(),
            "settings": state.settings,
            "files": state.files,
        }
        (version / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        _fsync_dir(version)
        fd, name = tempfile.mkstemp(dir=state_dir, prefix=".tmp-current-")
        pointer = Path(name)
        with os.fdopen(fd, "wb") as handle:
            handle.write(version.name.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
        _fsync_directory([(None, version)])
    except BaseException as exc:
        # Told before the version goes: Polars names a full disk only as "Invalid thrift: transport
        # error", which cannot_write recognises by the file system having no free block, as it has while
        # the failed file is there (a review of stop 57 had the state's parquet message on a full disk).
        error = io.cannot_write(version / "users.parquet", exc, label=f"the state {state_dir}")
        if pointer is not None:
            pointer.unlink(missing_ok=True)
        shutil.rmtree(version, ignore_errors=True)
        if isinstance(exc, io.WRITE_ERRORS):
            raise error from exc
        raise
    return PreparedState(state_dir, version, pointer)


def commit_state(prepared: PreparedState, *, prune: bool = True) -> None:
    """Make the prepared state current: a rename of ``CURRENT``'s new content over it, the run's last
    step. Should even that fail, the prepared version goes and the previous state stays. ``prune``
    removes every other version (not while another one is prepared: see :func:`claim_output_dir`)."""
    state_dir = prepared.state_dir
    try:
        io.take_mode(prepared.pointer, state_dir / _CURRENT)
        os.replace(prepared.pointer, state_dir / _CURRENT)
    except OSError as exc:
        prepared.discard()
        raise _state_uncommitted(state_dir, exc) from exc
    prepared.committed = True
    _fsync_directory([(None, prepared.version)])
    if not prune:
        return
    for old in state_dir.glob("state-*"):
        if old.name != prepared.version.name:
            shutil.rmtree(old, ignore_errors=True)


def save_state(state_dir: Path, state: State) -> None:
    """Write ``state`` as a new version directory, then point ``CURRENT`` at it (atomic rename)."""
    commit_state(prepare_state(state_dir, state))


def remove_stale_versions(state_dir: Path) -> None:
    """Remove the version directories ``CURRENT`` does not name: those of runs that failed or were killed
    before their state was committed, which no run reads (called with the state's lock held). Nothing is
    removed while ``CURRENT`` names no version that exists: the state is then for its owner to repair."""
    pointer = state_dir / _CURRENT
    try:
        current = pointer.read_text(encoding="utf-8").strip() if pointer.exists() else None
    except (OSError, UnicodeError):
        return
    if current is not None and not (state_dir / current / "manifest.json").is_file():
        return
    for old in state_dir.glob("state-*"):
        if old.name != current and old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)


def claim_output_dir(state_dir: Path, settings: dict[str, str]) -> None:
    """Before the first run of a new state publishes its partitions, commit an empty state built with its
    options: should the run fail after publishing them (its state not committed: a full disk, a
    ``kill -9``), the next run finds a state, not a new one beside an output directory that holds
    sessions (which it refuses), and processes the same files again as any run after such a failure."""
    if (state_dir / _CURRENT).exists():
        return
    empty = dataclasses.replace(State.empty(), settings=settings)
    prepared = prepare_state(state_dir, empty)
    try:
        commit_state(prepared, prune=False)
    except OutputError as exc:  # nothing is published yet: not the error of a state after its outputs
        cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc
        raise io.cannot_write(state_dir / _CURRENT, cause, label=f"the state {state_dir}") from exc


def _state_uncommitted(state_dir: Path, exc: BaseException) -> OutputError:
    """The error of a state that could not be made current after the outputs were published: the
    previous state stays, and the next run reads the same files again and rewrites the same partitions."""
    cause = io.cannot_write(state_dir / _CURRENT, exc, label=f"the state {state_dir}")
    return OutputError(
        f"{cause} The outputs of this run are written but the state was kept as it was: the next run "
        "processes the same files again."
    )


def _fsync_dir(path: Path) -> None:
    for child in path.iterdir():
        with open(child, "rb") as handle:
            os.fsync(handle.fileno())


#: Bytes at the start of a file whose hash the state keeps: a file whose head is unchanged but whose
#: content is not what was processed was edited, one with another head is a new file (rotated).
_HEAD_BYTES = 4096
#: Text formats whose new lines can be read on their own (a CSV's header is put back in front).
_GROWABLE = ("csv", "tsv", "ndjson", *ACCESS_LOG_FORMATS)


def _head_of(start: bytes) -> bytes:
    """A file's head: its first two lines (a CSV's header and first row, a log's first two requests),
    at most ``_HEAD_BYTES``. A rotated log starts with other requests; an edited file rarely changes there."""
    start = start[:_HEAD_BYTES]
    first = start.find(b"\n")
    second = start.find(b"\n", first + 1) if first >= 0 else -1
    return start if second < 0 else start[: second + 1]


@dataclass
class _Scan:
    """One pass over an input: its entry in the state, its first bytes, and for each size of
    ``prefixes`` it has (what an earlier run read of it, or of the file it was before a rotation) the
    SHA-256 of its first that many bytes (as a hash object, to go on from) and their newlines."""

    entry: dict[str, Any]
    start: bytes
    prefixes: dict[int, tuple[Any, int]] = field(default_factory=dict)
    #: The bytes of the file on disk that the pass read (a .gz file's compressed bytes): a file of
    #: another size when it is read was written to in between (a live log).
    disk_size: int = 0
    #: A line break in the file's encoding (:func:`_line_end`); its ``lines`` count these.
    line_end: bytes = b"\n"


def _line_end(encoding: str, start: bytes) -> bytes:
    """The bytes of a line break in a text file of ``encoding`` that starts with ``start``: ``\n`` in UTF-8
    and every encoding that extends ASCII; two or four bytes in UTF-16 and UTF-32, in the order of the
    file's byte order mark (the machine's without one, as Python decodes it). Such a break is only one
    at an offset that is a multiple of its length: the byte 0x0A is also half of other characters
    (``上``, U+4E0A, is ``0A 4E`` in UTF-16-LE), so that counting or cutting at that byte cut a UTF-16
    file's header and lines in two (its new rows lost, exit 0)."""
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        return b"\n"  # the read says that the encoding is unknown
    if name in ("utf-16", "utf-32"):
        boms = {
            "utf-16": (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE),
            "utf-32": (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE),
        }[name]
        order = "le" if start.startswith(boms[0]) else "be" if start.startswith(boms[1]) else None
        name = f"{name}-{order or sys.byteorder[0] + 'e'}"
    if name.startswith("utf-8"):
        return b"\n"
    try:
        return "\n".encode(name)
    except UnicodeError:
        return b"\n"


def _line_ends_in(data: bytes, end: bytes) -> int:
    """The line breaks ``end`` in ``data``, which starts at a character's start."""
    if len(end) == 1:
        return data.count(end)
    units = array.array("H" if len(end) == 2 else "I", data[: len(data) - len(data) % len(end)])
    return units.count(int.from_bytes(end, sys.byteorder))


def _last_line_end(data: bytes, end: bytes) -> int:
    """The offset of the last byte of the last line break ``end`` in ``data`` (which starts at a
    character's start), -1 if none."""
    stop = len(data)
    while (at := data.rfind(end, 0, stop)) >= 0:
        if at % len(end) == 0:
            return at + len(end) - 1
        stop = at + len(end) - 1
    return -1


def _first_line(handle: IO[bytes], end: bytes) -> bytes:
    """The first line of ``handle`` (from its start), with its line break ``end``."""
    if end == b"\n":
        return handle.readline()
    head = handle.read(_BLOCK)
    at = head.find(end)
    while at >= 0 and at % len(end):
        at = head.find(end, at + 1)
    line = head if at < 0 else head[: at + len(end)]
    handle.seek(len(line))
    return line


def _scan_file(path: str, prefixes: Collection[int] = (), encoding: str = "utf-8") -> _Scan:
    digest = hashlib.sha256()
    start = b""
    size = lines = 0
    line_end: bytes | None = None
    wanted = sorted(set(prefixes))
    found: dict[int, tuple[Any, int]] = {}
    gz = path.lower().endswith(".gz")
    with open(path, "rb") as raw, contextlib.ExitStack() as stack:
        # A .gz file by the content it holds (logrotate compresses a processed log: it is that log).
        handle: IO[bytes] | gzip.GzipFile = stack.enter_context(gzip.GzipFile(fileobj=raw)) if gz else raw
        try:
            for block in iter(lambda: handle.read(1 << 20), b""):
                if len(start) < _HEAD_BYTES:
                    start += block[: _HEAD_BYTES - len(start)]
                if line_end is None:
                    line_end = _line_end(encoding, start)
                at = 0
                while wanted and size + len(block) >= wanted[0]:  # a prefix ends in this block
                    end = wanted.pop(0) - size
                    lines += _line_ends_in(block[at:end], line_end)
                    digest.update(block[at:end])
                    found[size + end] = (digest.copy(), lines)
                    at = end
                lines += _line_ends_in(block[at:], line_end) if wanted else 0
                digest.update(block[at:])
                size += len(block)
            disk_size = raw.tell()
        except (OSError, EOFError, zlib.error) as exc:
            if not gz:
                raise
            raise UnreadableInputError(
                f"{path}: cannot be read as gzip ({exc}). Check that the file is complete."
            ) from exc
    head = _head_of(start)
    entry = {
        "path": os.path.abspath(path),
        # The bytes hashed, not the size now: a live log may have grown since.
        "size": size,
        "sha256": digest.hexdigest(),
        "head": hashlib.sha256(head).hexdigest(),
        "head_size": len(head),
    }
    if gz:  # and by its own bytes, as states before 2026-12 knew a .gz file
        with open(path, "rb") as raw:
            entry["raw_sha256"] = hashlib.file_digest(raw, "sha256").hexdigest()
    return _Scan(entry, start, found, disk_size, line_end or b"\n")


def file_fingerprint(path: str) -> dict[str, Any]:
    """Path, size, SHA-256 and the SHA-256 of the head of an input file: how a re-run recognises it."""
    return _scan_file(path).entry


@dataclass
class IncrementalOutcome:
    """What an incremental run did."""

    #: The sessions this run wrote (new or rewritten), with ``is_final``.
    sessions: pl.DataFrame
    rejects: pl.DataFrame | None
    files_processed: list[str]
    #: Inputs left alone because the state already holds them, or another input of this run has the
    #: same content (same SHA-256).
    files_skipped: list[str]
    rows_read: int
    events: int
    duplicates_removed: int
    late: int
    partitions: list[str]
    open_sessions: int
    users_in_state: int
    events_in_state: int
    watermark: datetime | None
    #: Inputs that grew since they were processed, of which only the new lines were read.
    files_grown: list[str] = field(default_factory=list)
    #: The summary figures of the sessions this run wrote.
    tally: Tally = field(default_factory=Tally)
    #: Rows left out by ``--filter`` and ``--max-send-delay``.
    filtered: int = 0
    #: The user table of every session in the output directory after this run (``--users-output``).
    users: pl.DataFrame | None = None


@dataclass
class _Todo:
    """An input to read: the file (or its new lines, copied aside) and its entry in the next state."""

    source: io.InputFile
    entry: dict[str, Any]
    grown: bool = False
    #: A file read whole: its bytes on disk when it was hashed. Written to since, it is read as hashed.
    disk_size: int | None = None
    #: A line break in the file's encoding (:func:`_line_end`).
    line_end: bytes = b"\n"


def _plan(
    files: Sequence[io.InputFile], state: State, *, reprocess: bool, scratch: Path, encoding: str = "utf-8"
) -> tuple[list[_Todo], list[str]]:
    """Which inputs to read, and how: whole, only their new lines, or not at all (skipped).

    A file is recognised by its content (a .gz file by the content it holds): one the state holds, or
    that another input of this run repeats, is skipped. A file that starts with what was processed at
    its path, or at another path with the same head (a live log that logrotate renamed after a run
    read it, or compressed: ``access.log.1.gz``), grew: only its new part is read. One whose head is
    what was processed at its path but whose content is not was edited: an error unless ``reprocess``.
    Another head means another file at the same path (the new log after a rotation): read whole, as it
    was hashed (see :func:`_read`).
    """
    known = {entry.get(key) for entry in state.files for key in ("sha256", "raw_sha256")} - {None}
    by_path = {entry["path"]: entry for entry in state.files}
    by_head: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for entry in state.files:
        if entry.get("head") and entry["size"]:
            by_head.setdefault((entry["head"], entry["head_size"]), []).append(entry)
    todo: list[_Todo] = []
    skipped: list[str] = []
    seen: set[str] = set()
    for number, source in enumerate(files):
        prior = by_path.get(os.path.abspath(source.path))
        # What was read of this file before: at its path, or at another path with the same head.
        priors = [] if reprocess else _priors(source.path, prior, by_head)
        # One read of the file: its fingerprint, and whether it starts with what was read before.
        # NDJSON is UTF-8 whatever --encoding says, as its reader reads it.
        text_encoding = "utf-8" if source.format == "ndjson" else encoding
        scan = _scan_file(source.path, [p["size"] for p in priors], text_encoding)
        entry = scan.entry
        if entry["sha256"] in seen or (not reprocess and {entry["sha256"], entry.get("raw_sha256")} & known):
            skipped.append(source.path)
            continue
        seen.add(entry["sha256"])
        grown = next(
            (g for p in priors if (g := _grown(source, p, scan, scratch / f"grown-{number}")) is not None),
            None,
        )
        if grown is not None:
            todo.append(grown)
            continue
        whole = _Todo(source, entry, disk_size=scan.disk_size, line_end=scan.line_end)
        if prior is None or reprocess or "head" not in prior or not prior["size"]:
            # Nothing read there yet (or the file was empty then: the access.log logrotate just created).
            todo.append(whole)
            continue
        head = scan.start[: prior["head_size"]]
        if len(head) == prior["head_size"] and hashlib.sha256(head).hexdigest() == prior["head"]:
            raise StateError(
                f"{source.path} changed since it was processed: it starts as before but its content is not "
                f"the {prior['size']:,} bytes the state holds. Pass --reprocess to read it again (events the "
                "state still keeps are not counted twice), or restore the file."
            )
        todo.append(whole)  # another file at the same path: a rotated log
    return todo, skipped


def _priors(
    path: str, prior: dict[str, Any] | None, by_head: Mapping[tuple[str, int], list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """The state's entries ``path`` may have grown from: the one at its path, then those of other paths
    with the same head (its first two lines; a .gz file's as it holds them: logrotate's ``compress``
    of a log that grew after a run read it), largest first. The head is read alone, and only of a
    file the state has heads like."""
    found = [prior] if prior is not None and prior.get("head") and prior["size"] else []
    if not by_head:
        return found
    try:
        with _content(path) as handle:
            start = handle.read(_HEAD_BYTES)
    except (OSError, EOFError, zlib.error):
        return found  # a broken .gz: the scan says what is wrong with it
    others: list[dict[str, Any]] = []
    for size in {size for _, size in by_head}:
        head = start[:size]
        if len(head) == size:
            others += by_head.get((hashlib.sha256(head).hexdigest(), size), [])
    others.sort(key=lambda entry: -entry["size"])
    return found + [entry for entry in others if entry is not prior]


def _content(path: str) -> IO[bytes]:
    """The bytes ``path`` holds, decompressed as they are read for a .gz file."""
    return cast(IO[bytes], gzip.open(path, "rb")) if split_gz(path)[1] else open(path, "rb")


def _create(copy: Path) -> IO[bytes]:
    """``copy`` opened to be written (in the run's scratch directory under the state)."""
    try:
        return open(copy, "wb")
    except OSError as exc:
        raise io.cannot_write(copy, exc) from exc


#: Bytes read at a time where an input is copied aside: memory holds one block, however large the file.
_BLOCK = 1 << 20


def _copy_from(
    handle: IO[bytes], out: IO[bytes], copy: Path, limit: int | None = None, line_end: bytes = b"\n"
) -> tuple[int, int]:
    """Copy ``handle`` from where it is (a character's start) to ``out`` (the file ``copy``), a block at a
    time, to its end or ``limit`` bytes: the bytes copied, and the offset of the last byte of the last
    line break ``line_end`` among them (-1 if none)."""
    copied, newline = 0, -1
    while limit is None or copied < limit:
        block = handle.read(_BLOCK if limit is None else min(_BLOCK, limit - copied))
        if not block:
            break
        try:
            out.write(block)
        except OSError as exc:
            raise io.cannot_write(copy, exc) from exc
        if (at := _last_line_end(block, line_end)) >= 0:
            newline = copied + at
        copied += len(block)
    return copied, newline


def _hash_of(copy: Path, start: int, size: int, digest: Any) -> Any:
    """``digest`` updated with ``size`` bytes of ``copy`` from ``start``, a block at a time."""
    with open(copy, "rb") as handle:
        handle.seek(start)
        while size > 0 and (block := handle.read(min(_BLOCK, size))):
            digest.update(block)
            size -= len(block)
    return digest


def _log_format_of(start: bytes, line_end: bytes) -> InputFormat | None:
    """The access log format of a file's first lines (``start``: its first bytes), or None."""
    codec = "utf-8" if line_end == b"\n" else _codec_of(line_end)
    complete = start.decode(codec, errors="replace").lstrip("\ufeff").split("\n")[:-1]
    return detect_log_format([line for line in complete if line.strip()][:20])


def _codec_of(line_end: bytes) -> str:
    """The codec whose line break is ``line_end`` (two or four bytes: UTF-16 or UTF-32, in byte order)."""
    width = "16" if len(line_end) == 2 else "32"
    return f"utf-{width}-{'le' if line_end[0] else 'be'}"


def _stand_in_path(copy: Path, source: io.InputFile) -> Path:
    """Where the copy of (part of) ``source`` goes: its suffix without .gz, as the copy is plain."""
    return copy.with_name(copy.name + Path(split_gz(source.path)[0]).suffix)


def _grown(source: io.InputFile, prior: dict[str, Any], scan: _Scan, copy: Path) -> _Todo | None:
    """The new part of a file that starts with what the state holds, copied to ``copy``: its new complete
    lines, or all of a .gz file's (nobody writes on in one: logrotate compressed the log that a run read
    before it grew). Streamed, a .gz file decompressed as it is read: memory holds a block at a time
    (and a CSV's new lines, to find its complete records)."""
    digest, lines = scan.prefixes.get(prior["size"], (None, 0))
    if (
        digest is None
        or scan.entry["size"] <= prior["size"]
        or source.format not in _GROWABLE
        or digest.hexdigest() != prior["sha256"]
    ):
        return None
    csv = source.format in ("csv", "tsv")
    gz = split_gz(source.path)[1]
    copy = _stand_in_path(copy, source)
    line_end = scan.line_end
    with _create(copy) as out:
        try:
            with _content(source.path) as handle:
                header = _first_line(handle, line_end) if csv else b""
                if gz:  # no seeking in a gzip stream: what was processed is read past, a block at a time
                    skip = prior["size"] - len(header)
                    while skip > 0 and (block := handle.read(min(_BLOCK, skip))):
                        skip -= len(block)
                else:
                    handle.seek(prior["size"])
                try:
                    out.write(header)
                except OSError as exc:
                    raise io.cannot_write(copy, exc) from exc
                copied, newline = _copy_from(handle, out, copy, line_end=line_end)
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise UnreadableInputError(
                f"{source.path}: cannot be read as gzip ({exc}). Check that the file is complete."
            ) from exc
    # Only complete lines, and in a CSV complete records: what is being written while we read is read by
    # the next run. A .gz file is complete: all of it.
    kept = copied if gz else newline + 1
    if csv and not gz and kept:
        with open(copy, "rb") as handle:
            handle.seek(len(header))
            tail = handle.read(kept)
        separator = "\t" if source.format == "tsv" else ","
        if line_end == b"\n":
            width = io.read.header_width(header, separator)
            kept = io.read.complete_csv_records(tail, separator=separator, width=width)
        else:  # UTF-16 or UTF-32: the records are found in the text (whole characters: whole lines)
            codec = _codec_of(line_end)
            text = tail.decode(codec, errors="surrogatepass").encode("utf-8", errors="surrogatepass")
            width = io.read.header_width(header.decode(codec, errors="replace").encode("utf-8"), separator)
            done = io.read.complete_csv_records(text, separator=separator, width=width)
            # The complete records' bytes in the file's encoding.
            records = text[:done].decode("utf-8", errors="surrogatepass")
            kept = len(records.encode(codec, errors="surrogatepass"))
            del text
        del tail
    if kept < copied:
        os.truncate(copy, len(header) + kept)
    # A CSV copy's header stands for the file's first line.
    first_line = lines - 1 if csv else lines
    digest = _hash_of(copy, len(header), kept, digest.copy())
    # Nothing complete yet: the state holds the file as it was (the same entry again would be a duplicate).
    grown_entry = (
        {**scan.entry, "size": prior["size"] + kept, "sha256": digest.hexdigest()} if kept else prior
    )
    # A log's format is told by the file's first lines, as one run over it tells it: new lines that start
    # with a bad one were "not in Apache/nginx format" (exit 1) where that run rejects the line.
    fmt = source.format
    if fmt == "log":
        fmt = _log_format_of(scan.start, line_end) or fmt
    stand_in = io.InputFile(str(copy), fmt, name=source.path, first_line=first_line)
    return _Todo(stand_in, grown_entry, grown=True)


def _read(item: _Todo, options: ReadOptions, copy: Path) -> io.FileRead:
    """Read one input as it was hashed, so that its entry in the state is what was read: the union of
    the runs is one run.

    A file read whole that was written to since its hash pass (a live log, or a CSV being written) may
    hold more than the bytes hashed, which the next run takes for new: it is read (again) from a copy of
    the bytes hashed, up to their last complete line (what follows is read by the next run). A file of
    its hashed size after the read held nothing more while it was read: files are written to at their
    end."""
    source = item.source
    if item.disk_size is None:
        return io.read.read_file(source, options, keep_row=True)
    if _disk_size(source.path) == item.disk_size:
        read = io.read.read_file(source, options, keep_row=True)
        if _disk_size(source.path) == item.disk_size:
            return read
    item.source, item.entry = _as_hashed(source, item.entry, copy, item.line_end)
    return io.read.read_file(item.source, options, keep_row=True)


def _disk_size(path: str) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:
        return None


def _as_hashed(
    source: io.InputFile, entry: dict[str, Any], copy: Path, line_end: bytes = b"\n"
) -> tuple[io.InputFile, dict[str, Any]]:
    """A copy of the bytes of ``source`` that its hash pass read (decompressed, for a .gz file), up to
    their last complete line in a text format read by lines, and its entry for the state."""
    gz = split_gz(source.path)[1]
    copy = _stand_in_path(copy, source)
    size = entry["size"]
    with _create(copy) as out:
        try:
            with _content(source.path) as handle:
                copied, newline = _copy_from(handle, out, copy, size, line_end)
        except (OSError, EOFError, zlib.error):  # gone, or no longer a whole gzip stream
            copied, newline = -1, -1
    if copied != size or _hash_of(copy, 0, size, hashlib.sha256()).hexdigest() != entry["sha256"]:
        raise StateError(
            f"{source.path} changed while this run read it: its first {size:,} bytes are no longer those it "
            "hashed (the file was truncated or rewritten, as logrotate's copytruncate does). Nothing was "
            "written; run again."
        )
    kept = size
    if not gz and source.format in _GROWABLE and 0 <= newline < size - 1:
        kept = newline + 1
        os.truncate(copy, kept)
        with open(copy, "rb") as handle:
            head = _head_of(handle.read(_HEAD_BYTES))
        entry = {
            **entry,
            "size": kept,
            "sha256": _hash_of(copy, 0, kept, hashlib.sha256()).hexdigest(),
            "head": hashlib.sha256(head).hexdigest(),
            "head_size": len(head),
        }
    entry = {key: value for key, value in entry.items() if key != "raw_sha256"} if gz else entry
    return io.InputFile(str(copy), source.format, name=source.path), entry


@contextlib.contextmanager
def directory_locked(directory: Path, option: str) -> Iterator[None]:
    """Hold an exclusive lock on ``directory`` itself (``flock`` on its descriptor: no file in it, which
    readers of an output directory would list). Two new states on one empty ``--output-dir``, started in
    the same minute, each found it empty and both wrote into it for good (review of stop 57); the state's
    own lock cannot tell, as each run holds another state's."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if not _flocked(fd):
            raise StateLockedError(
                f"{option} {directory} is in use by another sessionize run (with another --state). This run "
                "did nothing; let the other one finish. One output directory takes the sessions of one state."
            ) from None
        yield
    finally:
        os.close(fd)


class _Lock:
    """The state's exclusive lock and its output directories', held from the start of the run to its
    commit (or its failure)."""

    def __init__(self, state_dir: Path, outputs: Mapping[str, Path | None]) -> None:
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(locked(state_dir))
        try:
            for option, directory in outputs.items():
                if directory is not None and directory.is_dir():
                    self._stack.enter_context(directory_locked(directory, option))
        except BaseException:
            self._stack.close()
            raise

    def release(self) -> None:
        self._stack.close()


class IncrementalEngine:
    """``--state`` and ``--output-dir``: runs for cron that continue each other."""

    name: ClassVar[str] = "incremental"

    def check(self, config: RunConfig) -> None:
        incremental = config.incremental
        assert incremental is not None
        if config.output.output is not None:
            raise UsageError("With --state the sessions go to --output-dir: leave out -o.")
        scale = {
            "--memory-limit": config.engine.memory_limit,
            "--buckets": config.engine.buckets,
            "--temp-dir": config.engine.temp_dir,
        }
        # Review 58 F5: they were ignored, and a backfill under a cgroup cap was killed.
        refuse_options(
            scale,
            "--state: an incremental run holds the new files' events and the state's in memory, in no "
            "buckets. Bound its memory by giving each run fewer files (a backfill: several runs, oldest "
            "files first), or run the backfill without --state.",
        )
        if config.output.report is not None:
            raise UsageError(
                "--report is not available with --state: run sessionize report OUT_DIR after the run."
            )
        # (--pageviews-output, --users-output and --rejects inside --output-dir or --state: refused by
        # sessionize.pipeline._check_outside_incremental_dirs, before anything is written.)
        pageviews = config.output.pageviews_output
        if pageviews is not None and Path(pageviews).exists() and not Path(pageviews).is_dir():
            raise UsageError(
                f"--pageviews-output {pageviews} is a file: with --state the page views go to a directory of "
                "partitions, as the sessions do. Give a directory path."
            )
        kept_out = [name for name in config.privacy.drop_columns if name in INCREMENTAL_KEYS]
        if kept_out:
            raise UsageError(
                f"--drop-columns cannot drop {', '.join(kept_out)} with --state: "
                "runs replace sessions by them."
            )
        counted = [name for name in config.privacy.drop_columns if name in _USER_TABLE_COUNTS]
        if counted and config.output.users_output is not None:
            # The user table of a state is made from the output's partitions (every run's sessions).
            raise UsageError(
                f"--drop-columns cannot drop {', '.join(counted)} with --state and --users-output: the user "
                "table adds up its users' sessions from the output's partitions, which would lack them. "
                "Keep them in the sessions, or leave out --users-output."
            )
        if Path(incremental.state).resolve() == Path(incremental.output_dir).resolve():
            raise UsageError("--state and --output-dir must be different directories.")
        directories = {"--state": incremental.state, "--output-dir": incremental.output_dir}
        for option, value in {**directories, "--pageviews-output": pageviews}.items():
            if value is not None:
                # Root in cron: a stranger's /tmp/out -> /etc/cron.d would take the run's files.
                io.refuse_planted_symlink(str(value), f"{option} {value}")
                io.refuse_foreign_directory(value, f"{option} {value}")
        for option, value in directories.items():
            path = Path(value)
            if path.is_symlink() and not path.exists():
                raise UsageError(
                    f"{option} {value} is a symbolic link to {os.readlink(path)}, which does not exist. "
                    "Create that directory, or give another path."
                )
            if path.exists() and not path.is_dir():
                raise UsageError(f"{option} {value} is a file, not a directory. Give a directory path.")
            parent = path.absolute().parent
            if not path.exists() and parent.exists() and not parent.is_dir():
                raise UsageError(f"{option} {value}: {parent} is a file, not a directory.")

    def run(
        self,
        files: list[io.InputFile],
        config: RunConfig,
        job: PartitionJob,
        outputs: io.Publication,
        progress: Progress,
    ) -> Outcome:
        incremental = config.incremental
        assert incremental is not None
        state_path, out_path = Path(incremental.state), Path(incremental.output_dir)
        for source in files:
            if source.is_stream:
                raise UsageError(
                    f"--state needs input files: {source.shown} is a pipe or a device, which cannot be "
                    "recognised on a re-run. Write the events to a file first."
                )
        out_path.mkdir(parents=True, exist_ok=True)
        io.refuse_foreign_directory(out_path, f"--output-dir {out_path}")
        pageviews_path = (
            None if config.output.pageviews_output is None else Path(config.output.pageviews_output)
        )
        lock = _Lock(state_path, {"--output-dir": out_path, "--pageviews-output": pageviews_path})
        # Left by a run that was killed or failed: with the lock held, nothing else uses them.
        for stale in state_path.glob(".tmp-*"):
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
        remove_stale_versions(state_path)
        for directory in (out_path, pageviews_path):
            for stale in directory.glob(f"{PARTITION}=*/.part-*.tmp") if directory is not None else ():
                stale.unlink(missing_ok=True)
        try:
            scratch = Path(tempfile.mkdtemp(dir=state_path, prefix=".tmp-run-"))
        except OSError as exc:
            # Named as the state (review 58 F7: the error named the random folder it could not make).
            lock.release()
            raise io.cannot_write(state_path, exc, label=f"the state {state_path}") from exc
        prepared: PreparedState | None = None

        def release() -> None:
            try:
                if prepared is not None:
                    prepared.discard()
                shutil.rmtree(scratch, ignore_errors=True)
            finally:
                lock.release()

        try:
            state = load_state(state_path)
            fingerprint = settings_of(config)
            _check_settings(
                state,
                fingerprint,
                state_path,
                config.privacy.secret,
                defaults=_defaults(config),
                formerly=_preset_changes(config),
            )
            _check_output_dir(state, state_path, out_path)
            todo, skipped = _plan(
                files, state, reprocess=incremental.reprocess, scratch=scratch, encoding=config.read.encoding
            )
            if todo:
                new_state, written, pending = _process(
                    state,
                    todo,
                    config,
                    job,
                    out_path=out_path,
                    pageviews_path=pageviews_path,
                    progress=progress,
                    scratch=scratch,
                )
                # Registered first: an error from here on removes the partitions written aside.
                outputs.defer(pending.publish, pending.discard)
                new_state.settings = fingerprint
                # A grown file with no complete line yet keeps its entry (not another copy of it).
                new_state.files = [
                    *state.files,
                    *(item.entry for item in todo if item.entry not in state.files),
                ]
                new_state.runs = state.runs + 1
                # The new state is written (and flushed) with the partitions, before anything is
                # published: a full disk stops the run here, every output and the state as they were.
                # Only CURRENT's rename is left for the commit, after the partitions are in place.
                prepared = prepare_state(state_path, new_state)
                # A new state claims the output directory just before the first file is renamed into it
                # (see claim_output_dir): the run after one that failed then is no first run.
                outputs.before_renames(lambda: claim_output_dir(state_path, fingerprint))
            else:
                new_state = None
                written = IncrementalOutcome(
                    sessions=pl.DataFrame(),
                    rejects=None,
                    files_processed=[],
                    files_skipped=[],
                    rows_read=0,
                    events=0,
                    duplicates_removed=0,
                    late=0,
                    partitions=[],
                    open_sessions=0,
                    users_in_state=state.users.height,
                    events_in_state=state.events.height,
                    watermark=state.watermark,
                )
            written.files_skipped = skipped
            if job.users and new_state is None:
                # Nothing new: the user table as the output directory holds it.
                written.users = _user_table(out_path, _PendingPartitions(), job)
        except BaseException:
            release()
            raise

        def commit() -> None:
            try:
                if prepared is not None:
                    commit_state(prepared)
            finally:
                release()

        return Outcome(
            sessions=written.sessions if written.sessions.width else empty_sessions(job),
            tally=written.tally,
            files=written.files_processed,
            rows_read=written.rows_read,
            events=written.events,
            duplicates_removed=written.duplicates_removed,
            rejects=written.rejects,
            written="parquet",
            path_taken="incremental",
            filtered=written.filtered,
            commit=commit,
            abandon=release,
            incremental=written,
            users=written.users,
        )


def settings_of(config: RunConfig) -> dict[str, str]:
    """What a state records of the run's options: :meth:`RunConfig.fingerprint`, and the referer
    database's content (:func:`sessionize.attribution.referers_identity`)."""
    return {**config.fingerprint(), _REFERERS: referers_identity(config.session.referers)}


def _defaults(config: RunConfig) -> dict[str, str]:
    """The fingerprint of ``config``'s preset with every other option at its default: what a state
    written before an option was recorded ran with (the preset's value where it sets one: Amplitude's
    ``--session-id-nulls -1``, GA4's ``--unnest-params event_params``)."""
    return RunConfig.from_options(**presets.apply(config.preset, {}), state=".", output_dir=".").fingerprint()


#: Settings recorded since whose value another setting held before: times without an offset were read in
#: ``--timezone`` until ``--input-timezone`` (review 54 F2), so a state of ``--preset amplitude --timezone
#: Europe/Berlin`` holds Berlin-read times and is not continued with the preset's UTC unasked.
_RECORDED_IN = {"input_timezone": "timezone"}
#: Settings that every state written before they were recorded ran without, whatever its preset sets now:
#: the segment and amplitude presets set ``--user-fallback-col user_id`` since stop 48 (review 55 F1), and
#: such a state rejected (or failed on) the events the preset keeps now, so it is not continued with it
#: unasked (``--user-fallback-col ''`` continues it as it was). Likewise the mixpanel preset sets
#: ``--event-id-scope user-event-time`` since review 59 F4: a state written before dropped the events of a
#: repeated ``$insert_id`` that it keeps now (``--event-id-scope user`` continues it).
_OFF_BEFORE = {"user_fallback_col": "", "event_id_scope": "user"}
#: Rules that every state written before they were recorded ran by (not options: no flag restores them).
_RULES_BEFORE = {"blank_ids": FORMER_BLANK_IDS}


def _blank_ids_as_missing(state: State) -> None:
    """A state's kept events and users with their blank (only whitespace) client session, event and login
    ids null, as the current rule reads them: the sessions a run rewrites from them are those a run over
    their inputs gives. A blank user id stays: it keys its user's kept events and written sessions. A
    hashed id (``--hash-user-ids``) is no longer blank, and stays too."""

    def cleared(frame: pl.DataFrame, columns: Sequence[str]) -> pl.DataFrame:
        return frame.with_columns(
            pl.when(S.is_blank(pl.col(c))).then(None).otherwise(pl.col(c)).alias(c)
            for c in columns
            if frame.schema.get(c) == pl.String
        )

    state.events = cleared(state.events, (S.CLIENT_SESSION, S.EVENT_ID, S.STITCH_ID))
    state.users = cleared(state.users, (_LOGIN,))


#: Settings whose default changed, with the former defaults: a state that recorded one continues with the
#: current default, with a warning (and the change its kept data needs, if any). Review 57 F1: every state
#: of the version before stop 48 was refused for the --asset-pattern it had never been given, CSV and
#: NDJSON states too. Only an access log's page views depend on the asset pattern, and they changed in the
#: same version in a way no option restores (206 answers are no page views): a state cannot keep the
#: former counting by keeping the pattern. Ids of only whitespace were ids before stop 49 (one user owned
#: every event of a blank user id): no option keeps them so.
_FORMER_DEFAULTS: dict[str, tuple[Collection[str], str, str, Callable[[State], None] | None]] = {
    "asset_pattern": (
        FORMER_DEFAULT_ASSET_PATTERNS,
        DEFAULT_ASSET_PATTERN,
        "The state {state} was built with the former default --asset-pattern; it continues with the "
        "current one, which also takes audio and video, HLS and DASH, .webmanifest, .wasm, PDF and JSON URLs "
        "for assets, and no 206 answer is a page view: an access log's page views in the partitions written "
        "before are counted the former way. Rebuild the state and output directory with a full run to count "
        "them alike.",
        None,
    ),
    "blank_ids": (
        (FORMER_BLANK_IDS,),
        BLANK_IDS,
        "The state {state} was built when ids of only whitespace ('   ', a tab) were ids; it continues with "
        "the current rule, which reads them as empty: an event whose user id is blank takes its login id "
        "(--user-fallback-col) or is rejected as empty_user_id, and blank client session, event and login "
        "ids are none, the state's kept events' too. Sessions written before keep the ids they were written "
        "with (a blank user's too). Rebuild the state and output directory with a full run to read every "
        "event alike.",
        _blank_ids_as_missing,
    ),
}
#: Settings recorded since stop 49 (review 60 F4, F5) that a state written before ran with either way,
#: whatever the defaults: not taken for the default (a state of --no-geo or --stitch-col, refused after
#: the upgrade, is what review 57 F1 was). A role that only a flag switches on is read from the column
#: the state's events keep for it (the login id, the reported engagement time, the heartbeat time); the
#: ignore-referrer flag and --no-geo leave no trace, so such a state continues with the run's (as those
#: versions did, which compared neither) and records it.
_RECORDED_SINCE_49: dict[str, str | None] = {
    "stitch_col": S.STITCH_ID,
    "engagement_time_col": S.ENGAGEMENT_MS,
    "heartbeat_time_col": S.HEARTBEAT_TS,
    "ignore_referrer_col": None,
    "no_geo": None,
}
#: The settings' key of how engaged time was measured until stop 48: ``EngagedTime(...)``'s repr, which
#: recorded the heartbeat interval and minimum visit length also where no heartbeat used them (review 60
#: F8). Read into the settings that replace it (:func:`sessionize.config.engaged_settings`).
_ENGAGED = "engaged"
#: The flag of each setting whose key is not the flag's name (``--`` and the key with dashes).
_FLAGS = {
    "filters": "--filter",
    "event_counts": "--count-events",
    "aggregates": "--agg",
    "pageviews": "--pageviews-output",
}


def _preset_changes(config: RunConfig) -> dict[str, tuple[str, str, str]]:
    """Settings that ``config``'s preset changed: the value a state it built before holds, the flags that
    continue such a state as it was built, and what changed. Such a state is refused, not continued with
    the new value unasked: its open sessions would be cut by another rule than its written ones."""
    if config.preset == "mixpanel":
        return {
            # Review 59 F2: Mixpanel's sessions reset at midnight in the project's time zone.
            "split_at_midnight": (
                "False",
                "--no-split-at-midnight",
                "the mixpanel preset resets sessions at midnight in --timezone, as Mixpanel does",
            ),
            # Review 59 F4: Mixpanel's duplicates share event name, distinct_id, time and $insert_id.
            "event_id_scope": (
                "user",
                "--event-id-scope user",
                "its duplicates share the event name and time too, as Mixpanel's",
            ),
        }
    if config.preset == "ga4":
        # Review of stop 57: GA4's default key events make a session engaged.
        return {
            "conversion_events": (
                "",
                "--conversion-events ''",
                "the ga4 preset counts GA4's default key events (purchase, ...) as conversions, as GA4 does",
            )
        }
    if config.preset == "snowplow":
        # Review 59 F3: 2 heartbeats (engaged_time_in_s / snowplow__heartbeat >= 2), not a fixed 20 s.
        former = engaged_settings(dataclasses.replace(config.session.engaged, threshold_s=20.0))
        return {
            "engaged_threshold": (
                former["engaged_threshold"],
                "--engaged-threshold 20s",
                "the snowplow preset's engaged threshold is twice --heartbeat-interval, as Snowplow's is",
            )
        }
    return {}


def _check_settings(
    state: State,
    fingerprint: dict[str, str],
    state_path: Path,
    secret: bytes | None = None,
    *,
    defaults: dict[str, str] | None = None,
    formerly: Mapping[str, tuple[str, str, str]] | None = None,
) -> None:
    if secret is not None and state.settings.get(_SECRET) == legacy_secret_fingerprint(secret):
        # A state written before the secret's fingerprint was an scrypt: the same secret, upgraded.
        state.settings = {**state.settings, _SECRET: fingerprint.get(_SECRET, "")}
    if state.settings:
        state.settings = _upgraded(state, fingerprint)
        state.settings = {
            **{
                name: state.settings[before]
                for name, before in _RECORDED_IN.items()
                if before in state.settings
            },
            **_OFF_BEFORE,
            **_RULES_BEFORE,
            **state.settings,
        }
        # An option recorded since the state was written was at its default then: the run continues it
        # at that default, and is refused with another value.
        if defaults is None:
            defaults = RunConfig.from_options(state=".", output_dir=".").fingerprint()
        added = {
            name: value
            for name, value in fingerprint.items()
            if name not in state.settings and defaults.get(name) == value
        }
        state.settings = {**state.settings, **added}
        for name, (former, current, changed, upgrade) in _FORMER_DEFAULTS.items():
            if state.settings.get(name) in former and fingerprint.get(name) == current:
                state.settings = {**state.settings, name: current}
                if upgrade is not None:
                    upgrade(state)
                warnings.warn(changed.format(state=state_path), SessionizeWarning, stacklevel=2)
    if state.settings:
        _check_referers(state, fingerprint, state_path)
    if state.settings and state.settings != fingerprint:
        differing = [
            name
            for name in sorted(set(state.settings) | set(fingerprint))
            if state.settings.get(name) != fingerprint.get(name)
        ]
        # A setting recorded on one side only counts nothing on the other (the heartbeat interval
        # without heartbeats): named where it is all that differs.
        both = [name for name in differing if name in state.settings and name in fingerprint]
        changed = ", ".join(
            _change(name, state.settings.get(name), fingerprint.get(name)) for name in both or differing
        )
        # A setting every earlier state ran without, which a preset sets now: say how to continue as before.
        hints = [
            f"{_flag(name)} {_shown(off)}"
            for name, off in _OFF_BEFORE.items()
            if state.settings.get(name) == off != fingerprint.get(name)
        ]
        # A setting the preset changed: the same, and why.
        changes = [
            (flags, why)
            for name, (former, flags, why) in (formerly or {}).items()
            if state.settings.get(name) == former != fingerprint.get(name)
        ]
        hints += [flags for flags, _ in changes if flags not in hints]
        why = f": {'; '.join(reason for _, reason in changes)}" if changes else ""
        before = f" (give {' '.join(hints)} to continue it as it was built{why})" if hints else ""
        raise UsageError(
            f"The state {state_path} was built with other options ({changed}). Use the same options{before}, "
            "or start a new state and output directory with a full run."
        )


def _upgraded(state: State, fingerprint: Mapping[str, str]) -> dict[str, str]:
    """The settings of a state written by an earlier version in today's keys: ``engaged`` read into the
    settings that replace it, and those of :data:`_RECORDED_SINCE_49` it lacks found (or taken from the
    run, ``fingerprint``)."""
    settings = dict(state.settings)
    engaged = _engaged_of(settings.get(_ENGAGED))
    if engaged is not None:
        del settings[_ENGAGED]
        settings = {**engaged, **settings}
    for name, column in _RECORDED_SINCE_49.items():
        if name not in settings and name in fingerprint:
            # (A state that only claimed its output directory holds no events: nothing to go by.)
            known = column is not None and state.runs > 0
            settings[name] = str(column in state.events.columns) if known else fingerprint[name]
    return settings


def _engaged_of(recorded: str | None) -> dict[str, str] | None:
    """The settings of a recorded ``EngagedTime(heartbeat_events=(...), heartbeat_s=10.0, ...)``, or
    None for none (or one that does not read as such)."""
    if recorded is None:
        return None
    try:
        call = ast.parse(recorded, mode="eval").body
        if not isinstance(call, ast.Call) or call.args:
            return None
        values = {item.arg: ast.literal_eval(item.value) for item in call.keywords if item.arg is not None}
        return engaged_settings(S.EngagedTime(**values))
    except (SyntaxError, ValueError, TypeError):
        return None


def _check_referers(state: State, fingerprint: Mapping[str, str], state_path: Path) -> None:
    """Another referer database than the state's is a new edition of data, as a GeoIP database's is: the
    run continues the state with it, with a warning that the partitions written before keep the former
    attribution, and records it (review 60 F5). The same content at another path is the same database.
    A state written before the database was recorded takes the run's."""
    recorded, current = state.settings.get(_REFERERS), fingerprint.get(_REFERERS)
    if current is None:
        return
    before, _, shown_before = (recorded or "").partition(" ")
    now, _, shown_now = current.partition(" ")
    if recorded is not None and before != now:
        warnings.warn(
            f"The referer database ({shown_now or 'unreadable'}) is not the one the state {state_path} was "
            f"built with ({shown_before or 'unreadable'}, another content): the sessions it writes or "
            "rewrites get their traffic source, medium and channel from it, those of the partitions "
            "written before keep the former ones. Rebuild the state and output directory with a full run "
            "to attribute them alike.",
            SessionizeWarning,
            stacklevel=3,
        )
    state.settings = {**state.settings, _REFERERS: current}


def _flag(name: str) -> str:
    """The flag that gives a setting: ``--timeout``, ``--filter`` for ``filters``."""
    return _FLAGS.get(name, "--" + name.replace("_", "-"))


def _change(name: str, before: str | None, after: str | None) -> str:
    """One setting's change in a refusal. The secret's fingerprint is not shown: error messages go to
    logs that more people read than the state (and a legacy state's is a bare hash, quick to guess)."""
    if name == _SECRET:
        given = [value not in (None, "", "None") for value in (before, after)]
        if all(given):
            return f"{_flag(name)}: another secret"
        before, after = ("on" if on else "off" for on in given)
    return f"{_flag(name)} {_shown(before)} -> {_shown(after)}"


def _shown(value: str | None) -> str:
    """A setting in the list of differences: ``on`` and ``off`` for a switch (``--dedupe``, a role's
    column, ``--pageviews-output``), ``none`` for an option not given, an empty one (no
    --session-id-nulls) as ''."""
    shown = {"True": "on", "yes": "on", "False": "off", "no": "off", "None": "none", "": "''"}
    return "none" if value is None else shown.get(value, value)


def _check_output_dir(state: State, state_path: Path, out_path: Path) -> None:
    """A new state must start with an empty output directory: its sessions would be numbered from 1
    again next to the old ones, and never replaced."""
    if (state_path / _CURRENT).exists():
        return
    held = []
    for entry in sorted(out_path.iterdir()):
        if entry.name.startswith((".", "_")):
            continue
        if entry.name.startswith(f"{PARTITION}=") and entry.is_dir() and not entry.is_symlink():
            # Empty once its temporary files are gone: a first run killed before it published anything
            # (review of stop 57: the next run was refused, and only removing the directory helped).
            with contextlib.suppress(OSError):
                entry.rmdir()
                continue
        held.append(entry.name)
    if held:
        raise StateError(
            f"--output-dir {out_path} already holds sessions ({', '.join(held[:3])}"
            f"{', ...' if len(held) > 3 else ''}) but the state {state_path} is new or empty. Give the "
            "--state those sessions were written with, or an empty --output-dir for a new state (sessions "
            "that a failed first run of this state left before the state claimed its --output-dir: remove "
            "them and run again)."
        )


def _process(
    state: State,
    todo: list[_Todo],
    config: RunConfig,
    job: PartitionJob,
    *,
    out_path: Path,
    pageviews_path: Path | None = None,
    progress: Progress,
    scratch: Path,
) -> tuple[State, IncrementalOutcome, _PendingPartitions]:
    incremental = config.incremental
    assert incremental is not None
    timeout, lateness = config.session.timeout, incremental.lateness
    timezone = config.session.timezone
    reads = []
    rows_read = filtered = 0
    for number, item in enumerate(todo):
        read = _read(item, config.read, scratch / f"whole-{number}")
        filtered += read.filtered
        events = read.events
        if ROW not in events.columns:
            events = events.with_columns(pl.lit(None, pl.UInt32).alias(ROW))
        reads.append((item.source, read, events.with_columns(pl.lit(number, pl.UInt32).alias(_FILE))))
        rows_read += read.rows
        progress(RunProgress("read", number + 1, len(todo), rows_read))
    new = pl.concat([events for _, _, events in reads], how="vertical_relaxed")
    new = new.with_columns(pl.col(ROW).cast(pl.Int64))
    merge = job.settings.rules.merges_session_ids
    if merge:
        # One session per client session id, of its first (or last) event's user id as read (before
        # ids are hashed).
        new = job.settings.rules.claim(new)
    # Ids are hashed before anything is compared with the state or kept in it.
    new = hash_ids(new, job)
    if merge and state.events.height:
        new = _keep_owners(new, state.events)

    # Late events: older than lateness before their user's last event in the state.
    users = state.users
    checked = new.join(
        users.select(S.USER, "last_event", "has_events"), on=S.USER, how="left", maintain_order="left"
    )
    # Late: older than lateness before the user's last event; or, for a user whose events left the
    # state (idle for longer than timeout + lateness before the watermark), an event that would
    # join their last session (it arrives more than lateness behind the newest event seen).
    is_late = (pl.col(S.TIME) < pl.col("last_event") - lateness) | (
        ~pl.col("has_events") & (pl.col(S.TIME) - pl.col("last_event") <= timeout)
    )
    late = checked.filter(is_late.fill_null(False))
    sources = [source for source, _, _ in reads]
    # A file read again (--reprocess) holds the events already written as final: late, but expected.
    if late.height and config.read.on_invalid == "fail" and not incremental.reprocess:
        _refuse_late(late, sources, lateness)
    new = checked.filter(~is_late.fill_null(False)).drop("last_event", "has_events")
    late_rows = _late_rejects(late, sources, config.read) if late.height else {}
    rejected = []
    for number, (_, read, _) in enumerate(reads):
        # A file's late rows among its other rejected rows, in line order (the late rows first: they
        # have the file's columns, where its malformed lines alone have none).
        found = [part for part in (late_rows.get(number), read.rejects) if part is not None]
        if len(found) > 1:
            found = [pl.concat(found, how="diagonal_relaxed").sort("source_row", maintain_order=True)]
        rejected.extend(found)
    before = new.height

    # Events of the users this run touches: what the state kept of them, then the new ones.
    watermark_old = state.watermark
    newest = new.get_column(S.TIME).max() if new.height else None
    candidates = [w for w in (watermark_old, newest) if isinstance(w, datetime)]
    watermark = max(candidates) if candidates else None
    touched = new.select(S.USER).unique()
    if watermark_old is not None and watermark is not None and watermark > watermark_old:
        # Sessions that were open and are closed by the new watermark are rewritten as final. A user
        # with open sessions may have one that closes while their last event stays open (client session
        # ids interleave with the timeout's sessions): any kept session starting before the new limit
        # may close, and the state keeps every open session's events (from retained_from on).
        # (The limits in Polars: a watermark in the year 1 minus the timeout is before Python's dates.)
        was_open = pl.col("last_event") >= pl.lit(watermark_old) - timeout
        closes = pl.col("retained_from") < pl.lit(watermark) - timeout
        closing = users.filter(was_open & closes).select(S.USER)
        touched = pl.concat([touched, closing]).unique()
    # With --anonymize-ip no full address is kept: new events are located (after-geo), then truncated.
    kept = state.events.join(touched, on=S.USER, how="semi", maintain_order="left")
    schema = job.event_schema()
    # A state written without a column the events now have (identity stitching turned on): null there.
    kept = kept.with_columns(
        pl.lit(None, dtype).alias(name) for name, dtype in schema.items() if name not in kept.columns
    )
    fresh = protect_addresses(new.select(*schema), job)
    if keeps_located_addresses(job):
        kept = with_stored_geo(kept)
    if incremental.reprocess and kept.height:
        # A file processed again: its events that the state still keeps are not new.
        fresh = fresh.join(kept, on=list(schema), how="anti", nulls_equal=True, maintain_order="left")
    combined = io.drop_duplicate_events(pl.concat([kept, fresh], how="vertical_relaxed"), dedupe=job.dedupe)
    duplicates = before - (combined.height - kept.height)
    # The session cap leaves out events before the state keeps them, so that no later run counts them
    # again: only this run's events count (the kept ones come first). A kept event is left out only when
    # an earlier event of its session arrives, more than the cap before it (a lateness beyond the cap).
    # (The partition step below, given prepared events, does not cap them again.)
    capped = 0
    cap = job.settings.rules.session_cap
    if cap is not None and combined.height:
        beyond = combined.select(beyond_session_cap(cap)).to_series()
        capped = int(beyond.slice(kept.height).sum())
        combined = combined.filter(~beyond)

    # Sessions of the touched users from their retained_from on, numbered after the earlier ones: the
    # one partition step, its tally counting what this run writes.
    progress(RunProgress("buckets", 0, 1, 0))
    offsets = touched.join(users.select(S.USER, "sessions_before", "retained_from"), on=S.USER, how="left")
    tally = Tally()
    table = pl.DataFrame()
    output = pl.DataFrame()
    pageviews = None
    logins = None
    if combined.height:
        result = process_partition(combined, job, prepared=True, keep_all=True)
        assert result.all_sessions is not None
        table = (
            result.all_sessions.join(
                offsets.select(S.USER, "sessions_before"), on=S.USER, how="left", maintain_order="left"
            )
            .with_columns(
                (pl.col("session_number") + pl.col("sessions_before").fill_null(0)).alias("session_number"),
                (pl.lit(watermark) - pl.col("session_end") > timeout).alias(IS_FINAL),
            )
            .drop("sessions_before")
        )
        if job.settings.stitching:
            logins = _latest_logins(users, combined)
            table = _stitched(table, logins, fallback=job.settings.stitch_fallback)
        output = tally.add(table, exclude_bots=job.exclude_bots, dropped=job.dropped)
        pageviews = result.pageviews
    tally.capped = capped
    progress(RunProgress("buckets", 1, 1, combined.height))
    kept_days = set(kept.select(_local_day(pl.col(S.TIME), timezone).unique()).to_series().to_list())
    pending = _write_partitions(out_path, output, offsets, kept_days=kept_days, timezone=timezone)
    if pageviews_path is not None:
        try:
            # Page views go to partitions of their session's start day, replaced as the sessions are.
            starts = output.select(S.USER, S.SESSION_ID, "session_start") if output.height else None
            rows = (
                pageviews.join(starts, on=[S.USER, S.SESSION_ID], how="inner", maintain_order="left")
                if pageviews is not None and starts is not None
                else pl.DataFrame()
            )
            pending.also(
                _write_partitions(
                    pageviews_path,
                    rows,
                    offsets,
                    kept_days=kept_days,
                    timezone=timezone,
                    order=_PAGEVIEW_ORDER,
                )
            )
        except BaseException:
            pending.discard()
            raise

    new_users, new_events = _next_state(
        users,
        state.events,
        combined,
        table,
        touched,
        timeout=timeout,
        lateness=lateness,
        watermark=watermark,
        columns=(*schema, *STORED_GEO_COLUMNS),
        logins=logins,
    )
    open_sessions = 0 if not table.height else int(table.filter(~pl.col(IS_FINAL)).height)
    rejects = pl.concat(rejected, how="diagonal_relaxed") if rejected else None
    outcome = IncrementalOutcome(
        sessions=output,
        rejects=rejects,
        files_processed=[item.source.shown for item in todo],
        files_skipped=[],
        rows_read=rows_read,
        filtered=filtered,
        events=new.height - duplicates - capped,
        duplicates_removed=duplicates,
        late=late.height,
        partitions=pending.names,
        open_sessions=open_sessions,
        users_in_state=new_users.height,
        events_in_state=new_events.height,
        watermark=watermark,
        files_grown=[item.source.shown for item in todo if item.grown],
        tally=tally,
    )
    if job.users:
        try:
            outcome.users = _user_table(out_path, pending, job)
        except BaseException:
            pending.discard()
            raise
    return State(users=new_users, events=new_events, watermark=watermark), outcome, pending


def _latest_logins(users: pl.DataFrame, combined: pl.DataFrame) -> pl.DataFrame:
    """The latest login id of each user of ``combined`` (user, login id, its event's time), by the rule of
    ``stitched_user_id`` (:func:`sessionize.partition.stitched_ids`: the latest in time; at one instant,
    the later in input order) over every event the state has seen: the user's login id the state
    carries, then ``combined``'s events (a later input). Without the carried one, a user whose login
    events left the state would get no ``stitched_user_id`` from a later run, where one run over every
    input gives the login."""
    carried = users.filter(pl.col(_LOGIN).is_not_null()).select(
        S.USER, pl.col(_LOGIN).alias(S.STITCH_ID), pl.col(_LOGIN_TIME).alias(S.TIME)
    )
    seen = pl.concat(
        [
            carried.join(combined.select(S.USER).unique(), on=S.USER, how="semi"),
            combined.filter(~stand_in()).select(S.USER, S.STITCH_ID, S.TIME),
        ],
        how="vertical_relaxed",
    )
    latest = stitched_ids(seen).rename({S.STITCHED_USER_ID: _LOGIN})
    times = (
        seen.lazy()
        .filter(pl.col(S.STITCH_ID).is_not_null())
        .group_by(S.USER)
        .agg(pl.col(S.TIME).max().alias(_LOGIN_TIME))
    )
    return latest.join(times, on=S.USER).collect(engine="in-memory")


def _stitched(table: pl.DataFrame, logins: pl.DataFrame, *, fallback: bool) -> pl.DataFrame:
    """``table``'s ``stitched_user_id`` from ``logins`` (:func:`_latest_logins`); with ``fallback``
    (``--stitch-fallback``) the user id where there is none, as one run gives it."""
    joined = table.join(logins.select(S.USER, _LOGIN), on=S.USER, how="left", maintain_order="left")
    own = pl.when(~stand_in(S.SESSION_ID)).then(pl.col(S.USER))  # (as _sessions_after_geo's)
    login = pl.coalesce(_LOGIN, own) if fallback else pl.col(_LOGIN)
    return joined.with_columns(login.alias(S.STITCHED_USER_ID)).drop(_LOGIN)


def _keep_owners(new: pl.DataFrame, kept: pl.DataFrame) -> pl.DataFrame:
    """New events of a client session id the state keeps go to the user who has it (Snowplow's sessions
    manifest keeps a session's earlier user identifier too). Both hold their ids hashed alike under
    ``--hash-user-ids`` (session ids too with ``--require-session-id``: see
    :func:`sessionize.partition.hidden_ids`)."""
    owners = (
        kept.filter(pl.col(S.CLIENT_SESSION).is_not_null())
        .select(S.CLIENT_SESSION, pl.col(S.USER).alias("_owner"))
        .unique(S.CLIENT_SESSION, keep="first", maintain_order=True)
    )
    joined = new.join(owners, on=S.CLIENT_SESSION, how="left", maintain_order="left")
    return joined.with_columns(pl.coalesce("_owner", S.USER).alias(S.USER)).drop("_owner")


#: The order of the page-view partitions' rows.
_PAGEVIEW_ORDER = (S.USER, "session_start", S.SESSION_ID, "page_view_in_session")


def _user_table(out_path: Path, pending: _PendingPartitions, job: PartitionJob) -> pl.DataFrame:
    """The user table of every session in the output directory once ``pending`` is published: each
    user's row from all their sessions, whichever runs wrote them (a user's row is replaced, never
    added twice). Reads the sessions' columns the table needs from every partition."""
    # This table's partitions (not the page views'), each as this run leaves it.
    replaced = {target: temp for temp, target in pending.files if target.parent.parent == out_path}
    files = [replaced.get(path, path) for path in sorted(out_path.glob(f"{PARTITION}=*/part-0.parquet"))]
    files += [temp for target, temp in replaced.items() if not target.exists()]
    present = [path for path in files if path is not None]
    if not present:
        return drop_shown(build_users(empty_sessions(job), job.settings), job.dropped)
    # Only the columns the user table reads (each partition as written: an older one may lack some).
    needed = user_table_inputs(job.settings)
    sessions = pl.concat([_read_partition(path, needed) for path in present], how="diagonal_relaxed")
    users = drop_shown(build_users(sessions, job.settings), job.dropped)
    # A user's sessions of every run add up here: a sum beyond the largest float is refused, as in one run.
    check_sums(users, job.settings.aggregates, users=True)
    return users


def _read_partition(path: Path, columns: Sequence[str] | None = None) -> pl.DataFrame:
    """A partition file of the output (the ``columns`` of them it has), or :class:`StateError` naming
    it when it cannot be read (truncated, overwritten, not Parquet)."""
    try:
        if columns is None:
            return pl.read_parquet(path, glob=False)
        present = pl.read_parquet_schema(path)
        return pl.read_parquet(path, columns=[c for c in present if c in columns], glob=False)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise StateError(
            f"{path}: a partition this state's runs wrote cannot be read ({exc}). Restore it from a "
            "backup, or start a new state and output directory with a full run."
        ) from exc


def _refuse_late(late: pl.DataFrame, sources: list[io.InputFile], lateness: timedelta) -> None:
    """Stop the run (``--on-invalid fail``) on late events, as on any other invalid row: the message names
    the first file with late events, its first rows and their times, and what to do."""
    number = late.get_column(_FILE).min()
    assert isinstance(number, int)
    source = sources[number]
    rows = late.filter(pl.col(_FILE) == number).sort(ROW)
    examples = "; ".join(
        f"{io.read.where_row(source, row)}: {moment.isoformat()}"
        for row, moment in rows.select(ROW, S.TIME).head(MAX_REPORTED_ROWS).iter_rows()
    )
    raise LateEventsError(
        f"{source.shown}: {rows.height} event(s) too late for this incremental run, more than --lateness "
        f"({S.duration_text(lateness)}) before their user's last processed event or in a session already "
        f"written as final: {examples}. Give a longer --lateness, or pass {SKIP_HINT}; they are counted "
        "as late."
    )


def _late_rejects(
    late: pl.DataFrame, sources: list[io.InputFile], options: ReadOptions
) -> dict[int, pl.DataFrame]:
    """Late events as rejected rows, written as every other rejected row is: all their original columns
    as text under the input's own names (the ``--agg`` inputs, the login id, the timestamp as written),
    then file, row and reason (``late``), with addresses and ids hidden as the options say.

    The events no longer hold that text: each file with late events is read again, by the read path of
    the first read (so with the same columns, line numbers and privacy), with every row up to the
    newest late one out of range. Of the rows it sets aside, the late ones are kept: a late event is
    rare (a file that comes in days behind), and then only the rows of its file that are no newer than
    it are turned into text. Returned by the file's number among ``sources``."""
    parts: dict[int, pl.DataFrame] = {}
    for number, source in enumerate(sources):
        rows = late.filter(pl.col(_FILE) == number)
        if not rows.height:
            continue
        newest = rows.get_column(S.TIME).max()
        assert isinstance(newest, datetime)
        again = dataclasses.replace(options, on_invalid="skip", valid_from=newest + timedelta(microseconds=1))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SessionizeWarning)  # given by the first read already
            read = io.read.read_file(source, again, keep_row=True)
        assert read.rejects is not None
        wanted = rows.select(io.source_row(source, pl.col(ROW)).cast(pl.Int64).alias("source_row"))
        found = read.rejects.join(wanted, on="source_row", how="semi", maintain_order="left")
        # The same file through the same read path: every late event is one of its rows set aside.
        assert found.height == rows.height, f"{source.shown}: {rows.height} late events, {found.height} rows"
        parts[number] = found.with_columns(pl.lit(LATE).alias("reject_reason"))
    return parts


def _partition_dir(out_path: Path, day: str) -> Path:
    return out_path / f"{PARTITION}={day}"


def _local_day(time: pl.Expr, timezone: str) -> pl.Expr:
    """The day of ``time`` in ``timezone`` as its partition names it (``YYYY-MM-DD``), formatted by
    Polars: Python's dates stop at the year 1, where the time 0001-01-01T00:00:00Z (Go's zero time,
    .NET's ``DateTime.MinValue``) is in the year 0 west of UTC."""
    return time.dt.convert_time_zone(timezone).dt.date().dt.to_string("%Y-%m-%d")


@dataclass
class _PendingPartitions:
    """Partition files written under temporary names, renamed into place when the run publishes."""

    names: list[str] = field(default_factory=list)
    #: (temporary file, target); a target without a temporary file is removed (no rows left).
    files: list[tuple[Path | None, Path]] = field(default_factory=list)

    def also(self, other: _PendingPartitions) -> None:
        """Publish (or discard) ``other``'s files with these (its partitions are not this table's)."""
        self.files.extend(other.files)

    def publish(self) -> None:
        for temp, target in self.files:
            if temp is None:
                target.unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    target.parent.rmdir()
            else:
                try:
                    io.take_mode(temp, target)
                    os.replace(temp, target)
                except OSError as exc:
                    raise io.cannot_write(target, exc) from exc
        _fsync_directory(self.files)

    def discard(self) -> None:
        for temp, target in self.files:
            if temp is not None:
                temp.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                target.parent.rmdir()  # a partition directory this run created, still empty


def _fsync_directory(files: list[tuple[Path | None, Path]]) -> None:
    for directory in {target.parent for _, target in files if target.parent.exists()}:
        with contextlib.suppress(OSError):
            fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _write_partitions(
    out_path: Path,
    output: pl.DataFrame,
    touched: pl.DataFrame,
    *,
    kept_days: set[str],
    timezone: str,
    order: Sequence[str] = (S.USER, "session_start", S.SESSION_ID),
) -> _PendingPartitions:
    """Replace the touched users' sessions from their ``retained_from`` on, partition by partition,
    into temporary files that :meth:`_PendingPartitions.publish` renames into place.

    Old rows of a touched user are dropped when they start at or after the user's
    ``retained_from`` (every row, for a user the state does not know: only a run that crashed
    before saving its state can have written those, on the same days as this run). Such a row
    starts at one of the kept events, so only the days of ``output`` and ``kept_days`` (the days
    of the touched users' kept events) are read. The page-view partitions are replaced the same way:
    each page view carries its session's ``session_start`` (rows sorted by ``order``).
    """
    day_of = _local_day(pl.col("session_start"), timezone)
    days: set[str] = set(kept_days)
    if output.height:
        days.update(output.select(day_of.unique()).to_series().to_list())
    replaced = touched.select(S.USER, "retained_from")
    pending = _PendingPartitions()
    try:
        for day in sorted(days):
            directory = _partition_dir(out_path, day)
            target = directory / "part-0.parquet"
            rows = output.filter(day_of == day) if output.height else output
            if target.exists():
                old = _read_partition(target)
                stale = (
                    old.join(replaced, on=S.USER, how="left")
                    .select(
                        pl.col(S.USER).is_in(replaced.get_column(S.USER).implode())
                        & (
                            pl.col("retained_from").is_null()
                            | (pl.col("session_start") >= pl.col("retained_from"))
                        )
                    )
                    .to_series()
                )
                if not stale.any() and not rows.height:
                    continue
                old = old.filter(~stale)
                if rows.height and old.columns != rows.columns:
                    raise _other_columns(target, old.columns, rows.columns)
                rows = pl.concat([old, rows], how="vertical_relaxed") if rows.height else old
            elif not rows.height:
                continue
            pending.names.append(directory.name)
            if not rows.height:
                pending.files.append((None, target))
                continue
            rows = rows.sort(*order, maintain_order=True)
            try:
                directory.mkdir(parents=True, exist_ok=True)
                fd, name = tempfile.mkstemp(dir=directory, prefix=".part-0.parquet.", suffix=".tmp")
                temp = Path(name)
                pending.files.append((temp, target))
                with os.fdopen(fd, "wb") as handle:
                    io.write_parquet(rows, handle)
                    handle.flush()
                    os.fsync(handle.fileno())
            except io.WRITE_ERRORS as exc:
                # A full disk: every partition written so far goes (below), the old ones stay.
                raise io.cannot_write(target, exc) from exc
    except BaseException:
        pending.discard()
        raise
    return pending


def _other_columns(target: Path, old: Sequence[str], new: Sequence[str]) -> StateError:
    """A partition whose columns are not this run's (a setting that changes them, changed where the
    settings check could not see it: a state edited by hand): an error naming it, not Polars' "schema
    lengths differ" (review 60 F4)."""
    extra = [name for name in old if name not in new]
    missing = [name for name in new if name not in old]
    differences = [
        *([f"it has {', '.join(extra)}, which this run's sessions lack"] if extra else []),
        *([f"it lacks {', '.join(missing)}"] if missing else []),
    ] or ["its columns are in another order"]
    return StateError(
        f"{target} holds other columns than the sessions of this run ({'; '.join(differences)}): the "
        "output directory was written with other options, or by a version of sessionize with other session "
        "columns. Run with the options it was written with, or start a new state and output directory with "
        "a full run."
    )


def _next_state(
    users: pl.DataFrame,
    events: pl.DataFrame,
    combined: pl.DataFrame,
    table: pl.DataFrame,
    touched: pl.DataFrame,
    *,
    timeout: timedelta,
    lateness: timedelta,
    watermark: datetime | None,
    columns: Sequence[str],
    logins: pl.DataFrame | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Keep, for each touched user, the sessions a later run may still change; then drop the events
    of users idle for longer than timeout + lateness before the watermark (only their last event
    time, session count and latest login id stay). The state keeps the events' ``columns`` (every
    column of the job's events: the login id, the engagement time and the ``--agg`` inputs too; the
    stored geo), and each user's latest login id of ``logins`` (:func:`_latest_logins`), which a
    later session of theirs takes when their events with it are gone."""
    untouched = events.join(touched, on=S.USER, how="anti", maintain_order="left")
    if not table.height:
        return _drop_idle(users, untouched, watermark=watermark, horizon=timeout + lateness)
    last = combined.group_by(S.USER).agg(pl.col(S.TIME).max().alias("last_event"))
    spans = table.select(S.USER, "session_start", "session_end", "session_number").join(last, on=S.USER)
    cutoff = pl.col("last_event") - timeout - lateness
    first_kept = (
        spans.filter(pl.col("session_end") >= cutoff)
        .group_by(S.USER)
        .agg(pl.col("session_start").min().alias("retained_from"))
    )
    # A session that overlaps the kept ones (client session ids can interleave) is kept too.
    first_kept = (
        spans.join(first_kept, on=S.USER)
        .filter(pl.col("session_end") >= pl.col("retained_from"))
        .group_by(S.USER)
        .agg(pl.col("session_start").min().alias("retained_from"))
    )
    before = (
        spans.join(first_kept, on=S.USER)
        .group_by(S.USER)
        .agg(
            (pl.col("session_start") < pl.col("retained_from")).sum().cast(pl.UInt32).alias("_pruned"),
            pl.col("session_number").max().alias("sessions_total"),
            pl.col("last_event").first(),
        )
    )
    if logins is None:
        logins = users.select(S.USER, _LOGIN, _LOGIN_TIME)  # (identity stitching is off: all null)
    updated = (
        before.join(first_kept, on=S.USER)
        .join(users.select(S.USER, "sessions_before"), on=S.USER, how="left")
        .join(logins, on=S.USER, how="left")
        .select(
            S.USER,
            "last_event",
            "retained_from",
            (pl.col("sessions_before").fill_null(0) + pl.col("_pruned"))
            .cast(pl.UInt32)
            .alias("sessions_before"),
            pl.col("sessions_total").cast(pl.UInt32),
            pl.lit(True).alias("has_events"),
            _LOGIN,
            _LOGIN_TIME,
        )
    )
    new_users = pl.concat(
        [users.join(updated, on=S.USER, how="anti"), updated.select(*_USERS_SCHEMA)], how="vertical_relaxed"
    )
    kept = combined.join(first_kept, on=S.USER, how="left", maintain_order="left").filter(
        pl.col(S.TIME) >= pl.col("retained_from")
    )
    stored = [name for name in kept.columns if name in columns]
    new_events = pl.concat([untouched, kept.select(stored)], how="diagonal_relaxed")
    return _drop_idle(new_users, new_events, watermark=watermark, horizon=timeout + lateness)


def _drop_idle(
    users: pl.DataFrame, events: pl.DataFrame, *, watermark: datetime | None, horizon: timedelta
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Users whose last event is more than ``horizon`` before the watermark keep no events: their
    sessions are final and no event that is not late can change them. A later event of theirs
    starts a new session (numbered after ``sessions_total``); nothing before it is replaced."""
    if watermark is None:
        return users, events
    idle = pl.col("has_events") & (pl.col("last_event") < pl.lit(watermark) - horizon)
    gone = users.filter(idle).select(S.USER)
    if not gone.height:
        return users, events
    users = users.with_columns(
        pl.when(idle)
        .then(pl.col("last_event") + timedelta(microseconds=1))
        .otherwise(pl.col("retained_from"))
        .alias("retained_from"),
        pl.when(idle)
        .then(pl.col("sessions_total"))
        .otherwise(pl.col("sessions_before"))
        .alias("sessions_before"),
        pl.when(idle).then(False).otherwise(pl.col("has_events")).alias("has_events"),
    )
    return users, events.join(gone, on=S.USER, how="anti", maintain_order="left")
