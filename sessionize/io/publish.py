"""All-or-nothing outputs: every output of a run is written aside and published only when all are done.

A :class:`Publication` collects a run's outputs. Each :class:`PendingOutput` is written to a
temporary file -- beside its target for a regular file (then renamed over it, so a reader sees the
old file or the new one, never half of one), in the temporary directory for a stream (stdout, a
pipe, a FIFO, a character device such as ``/dev/null``, or a symlink to one of them), which is
never replaced: its bytes are copied into it at publication. Directory outputs that an engine
writes itself (Dask parts) join with :meth:`Publication.defer`.

:meth:`Publication.publish_all` publishes everything, streams first (a copy can fail on a full device or
a closed pipe; a rename within a directory does not), then regular files and directories; leaving
the ``with`` block without it (an error, Ctrl-C) discards every temporary file, and the targets
stay as they were. Every byte written to a stream is checked: a short write, a full disk or a
reader that went away is an :class:`~sessionize.errors.OutputError`, never a truncated output
with exit status 0.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import re
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

import polars as pl

from sessionize.errors import ClosedPipeError, OutputError
from sessionize.io.formats import STDIN, OutputFormat, is_special_file, output_format_of
from sessionize.io.write import PARQUET_COMPRESSION, PARQUET_COMPRESSION_LEVEL, serialize

__all__ = [
    "WRITE_ERRORS",
    "PendingOutput",
    "Publication",
    "TableSink",
    "cannot_write",
    "errno_of",
    "is_stream",
    "refuse_foreign_directory",
    "refuse_planted_symlink",
    "take_mode",
    "write_atomically",
    "write_sessions",
]

_COPY_CHUNK = 1 << 20


def is_stream(target: str) -> bool:
    """Whether ``target`` is stdout or an existing non-regular file that must be written into, not
    replaced: a FIFO, a character device, a socket (through symlinks), or one of the process's open
    file descriptors by name (``/dev/stdout``, ``/dev/fd/3``, ``/proc/self/fd/2``: see
    :func:`descriptor_of`) whatever it is open on."""
    return target == STDIN or descriptor_of(target) is not None or is_special_file(target)


#: The names of a process's own file descriptors once their directories are resolved: Linux's
#: /proc/<pid>/fd/N (/proc/self/fd, /dev/fd) and /proc/<pid>/task/<tid>/fd/N (/proc/thread-self/fd).
_DESCRIPTOR = re.compile(r"/proc/([0-9]+)(?:/task/[0-9]+)?/fd/([0-9]+)")
_STANDARD = {"/dev/stdin": 0, "/dev/stdout": 1, "/dev/stderr": 2}
#: Most symlinks followed to a descriptor's name (the kernel's own limit).
_MOST_LINKS = 40


def descriptor_of(target: str) -> int | None:
    """The file descriptor of this process that ``target`` names (``/dev/stdout``, ``/dev/fd/N``,
    ``/proc/self/fd/N``, ``/proc/thread-self/fd/N``, through symlinks of its own or of a directory on
    the way), else ``None``.

    Such a name is the descriptor's open file, whatever that is: with a shell's ``>> cron.log`` it is
    a regular file, which resolving the name and renaming a new file over it would replace (the log's
    earlier lines gone, and the run's later output written into the unlinked old file). It is written
    into instead, as ``-o -`` writes into standard output.
    """
    if target == STDIN:
        return None
    path = os.path.abspath(target)
    for _ in range(_MOST_LINKS):
        if path in _STANDARD:
            return _STANDARD[path]
        # The directories resolved (/dev/fd, /proc/self, a link to /proc/self/fd), not the name itself:
        # a descriptor's name is a link to its open file, which is what must not be replaced.
        path = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
        found = _DESCRIPTOR.fullmatch(path)
        if found:
            pid, fd = found.groups()
            return int(fd) if int(pid) == os.getpid() else None
        try:
            link = os.readlink(path)
        except OSError:
            return None
        path = os.path.normpath(os.path.join(os.path.dirname(path), link))
    return None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _describe(exc: OSError) -> str:
    if exc.errno == errno.EPIPE:
        return "the reader closed the pipe before the output was complete"
    # Polars' own writes (CSV, NDJSON) add Rust's "(os error 28)" to the system's message.
    return _OS_ERROR.sub("", str(exc.strerror or exc)).rstrip()


#: The errno that Polars puts in the message of a write that failed (``... (os error 28)``).
_OS_ERROR = re.compile(r"\(os error ([0-9]+)\)")
#: What a file system's failure to take a Parquet file is raised as: Polars wraps the ``OSError`` of its
#: own writes in a ``ComputeError`` ("parquet: File out of specification: underlying IO error: No space
#: left on device (os error 28)").
WRITE_ERRORS: tuple[type[Exception], ...] = (OSError, pl.exceptions.ComputeError)


def errno_of(exc: BaseException) -> int | None:
    """The errno of a failed write: an ``OSError``'s, or the one in a Polars error's message."""
    if isinstance(exc, OSError):
        return exc.errno
    found = _OS_ERROR.search(str(exc))
    return None if found is None else int(found.group(1))


def cannot_write(target: str | Path, exc: BaseException, *, label: str | None = None) -> OutputError:
    """The :class:`OutputError` of a file (a partition, a Dask part, the state) that could not be written,
    naming it and the cause as every other output's error does ("Cannot write out.csv: No space left
    on device."), where the cause is Polars' ``ComputeError`` as often as an ``OSError``.

    When the write of a Parquet file's footer fails, Polars says only "Invalid thrift: transport
    error": a file system without a free block is then named as the cause. ``label`` names the
    file in the message (``target`` by default)."""
    name = label or target
    if isinstance(exc, OSError):
        return OutputError(f"Cannot write {name}: {_describe(exc)}.")
    number = errno_of(exc)
    if number is not None:
        return OutputError(f"Cannot write {name}: {os.strerror(number)}.")
    with contextlib.suppress(OSError):
        if os.statvfs(os.path.dirname(os.path.abspath(target))).f_bavail == 0:
            return OutputError(f"Cannot write {name}: {os.strerror(errno.ENOSPC)}.")
    return OutputError(f"Cannot write {name}: {exc}.")


def _write_all(write: Callable[[Any], int | None], data: bytes | memoryview, target: str) -> None:
    """``write`` every byte of ``data``, resuming after short writes (an unbuffered stdout)."""
    view = memoryview(data)
    while view:
        written = write(view)
        if written is None:  # a buffered writer that took everything
            return
        if written <= 0:
            raise OutputError(f"Cannot write {target}: the device accepted no more bytes.")
        view = view[written:]


def left_by_dead_processes(directory: str | Path, prefix: str, *, suffix: str = "") -> list[Path]:
    """This user's entries of ``directory`` named ``{prefix}{pid}...{suffix}`` whose process is gone:
    the temporary files (or spill directories) of runs that were killed. Symlinks are never taken."""
    found: list[Path] = []
    try:
        entries = os.scandir(directory)
    except OSError:
        return found
    with entries:
        for entry in entries:
            if not (entry.name.startswith(prefix) and entry.name.endswith(suffix)):
                continue
            pid = entry.name[len(prefix) :].split(".", 1)[0].split("-", 1)[0]
            if not pid.isdigit() or int(pid) == os.getpid() or process_alive(int(pid)):
                continue
            with contextlib.suppress(OSError):
                if not entry.is_symlink() and entry.stat(follow_symlinks=False).st_uid == os.getuid():
                    found.append(Path(entry.path))
    return found


#: What follows ``.{name}.`` in a temporary file's name: the process id, mkstemp's random part, ``.tmp``.
_TEMP_TAIL = re.compile(r"[0-9]+\.[a-z0-9_]+\.tmp")


def _remove_stale(directory: str, name: str) -> None:
    """Remove the temporary files of ``name`` left by runs that were killed (only ``name``'s: the file
    ``.out.20240501.csv.<pid>...`` of output ``out.20240501.csv`` also starts with ``.out.``)."""
    prefix = f".{name}."
    for path in left_by_dead_processes(directory, prefix, suffix=".tmp"):
        if _TEMP_TAIL.fullmatch(path.name[len(prefix) :]) and path.is_file():
            path.unlink(missing_ok=True)


def process_alive(pid: int) -> bool:
    """Whether the process ``pid`` still runs (temporary files named by it may be in use)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _identity(target: str) -> tuple[int, int] | None:
    """The file that ``target`` writes into (``-``: standard output's), to tell that two outputs name
    one (``-`` and ``/dev/stdout``, a FIFO under two names); None where it does not exist yet, and for
    character devices, which two outputs may share (``/dev/null``)."""
    try:
        found = os.fstat(sys.stdout.fileno()) if target == STDIN else os.stat(target)
    except (AttributeError, OSError, ValueError):
        return None
    if stat.S_ISCHR(found.st_mode):
        return None
    return found.st_dev, found.st_ino


def _shared_directory(path: str | Path) -> bool:
    """Whether ``path`` is in a sticky world-writable directory (``/tmp``)."""
    try:
        return _shared(os.stat(os.path.dirname(os.path.abspath(path))).st_mode)
    except OSError:
        return False


def _shared(mode: int) -> bool:
    """Whether a directory of this mode is sticky and world-writable (``/tmp``)."""
    return bool(mode & stat.S_ISVTX and mode & stat.S_IWOTH)


def refuse_planted_symlink(target: str, label: str) -> None:
    """Refuse an output whose path follows a symlink someone else planted in a directory they can write
    to (``/tmp``, or a folder another user owns, such as a web server's), as its last part
    (``/tmp/sessions.csv``) or a directory on the way (``/tmp/reports/sessions.csv``): the rule of the
    kernel's ``fs.protected_symlinks``, which never applies here because the path is resolved and its
    target renamed over, not opened, made stricter (see :func:`_planted_symlink`). Root in cron would
    otherwise replace a file the link leads to (``/etc/cron.d/x``) with a table whose values strangers
    wrote."""
    planted = _planted_symlink(target)
    if planted is not None:
        raise OutputError(
            f"Cannot write {label}: its path goes through {planted}, a symlink that another user owns in a "
            "directory they can write to. Give an output path in a directory of your own, or the path the "
            "symlink leads to."
        )


def refuse_foreign_directory(directory: str | Path, label: str) -> None:
    """Refuse a working directory (``--state``, ``--output-dir``) that someone other than this user (or
    root) can write to: its owner, or anyone when it is world-writable. Such a person can plant symlinks
    in it (``STATE_DIR/.lock``, ``OUT_DIR/session_date=.../``) or swap its folders between a check and a
    write, so root's cron run would write where they chose (``/etc/shadow``); no check of each path
    closes that race. Git refuses a repository owned by someone else for the same reason. A directory
    that does not exist yet is judged by the nearest one that does, in which it is created. A
    group-writable directory is accepted: its group is trusted by whoever made it so."""
    path = os.path.abspath(directory)
    while True:
        try:
            found = os.stat(path)
            break
        except FileNotFoundError:
            parent = os.path.dirname(path)
            if parent == path:
                return
            path = parent
        except OSError:
            return  # unreadable: the write's own error names it
    own = found.st_uid in (os.geteuid(), 0)
    if own and not found.st_mode & stat.S_IWOTH:
        return
    if own and path != os.path.abspath(directory) and _shared(found.st_mode):
        return  # created in /tmp, it is this user's; one someone made first is judged when it exists
    try:
        owner = pwd.getpwuid(found.st_uid).pw_name
    except KeyError:
        owner = f"uid {found.st_uid}"
    who = f"{owner}, who owns it" if not own else "anyone (it is world-writable)"
    shown = "it" if path == os.path.abspath(directory) else f"{path}, where it would be created,"
    raise OutputError(
        f"Cannot use {label}: {shown} can be written by {who}, who could make this run write its "
        "files elsewhere (a planted symlink). Give a directory that only you (or root) can write to: "
        f"chown it to the user who runs sessionize, or run sessionize as {owner}."
        if not own
        else f"Cannot use {label}: {shown} can be written by {who}, who could make this run write its "
        "files elsewhere (a planted symlink). Give a directory that only you (or root) can write to "
        "(chmod o-w, or a directory of your own inside it)."
    )


def _writable_by_others(directory: os.stat_result) -> bool:
    """Whether someone other than this user and root can write to this directory: its owner, or anyone
    (world-writable, sticky or not). A group-writable one is trusted, as in
    :func:`refuse_foreign_directory`."""
    return directory.st_uid not in (os.geteuid(), 0) or bool(directory.st_mode & stat.S_IWOTH)


def _planted_symlink(target: str) -> str | None:
    """The first symlink on the way to ``target`` (each part, as the kernel resolves it) that is in a
    directory another user can write to (:func:`_writable_by_others`: ``/tmp``, a web server's folder)
    and owned by neither this user nor root. The kernel's ``protected_symlinks`` trusts a link of the
    directory's owner; here that owner is the other user, who could point it at ``/etc/cron.d/x``."""
    # Not normalized: ".." after a symlink is its target's parent, as the kernel takes it.
    path, parts = "/", list(Path(os.path.join(os.getcwd(), target)).parts[1:])
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            path = os.path.dirname(path)
            continue
        step = os.path.join(path, part)
        try:
            found = os.lstat(step)
        except OSError:
            return None  # nothing there (yet): nothing further is followed
        if not stat.S_ISLNK(found.st_mode):
            path = step
            continue
        links += 1
        try:
            directory = os.stat(path)
            link = os.readlink(step)
        except OSError:
            return None
        if _writable_by_others(directory) and found.st_uid not in (os.geteuid(), 0):
            return step
        if links > _MOST_LINKS:
            return None  # the kernel gives up here too (ELOOP)
        if os.path.isabs(link):
            path = "/"
        parts = [*Path(link).parts[1 if os.path.isabs(link) else 0 :], *parts]
    return None


def take_mode(temp: str | Path, final: str | Path) -> None:
    """``temp``, written aside, gets the permissions (and, for root, the owner) of ``final``, the file it
    is to replace, so a table someone locked down (0600) does not become world-readable; where there is
    no file yet, the umask's. Every output takes it, pending outputs and incremental partitions alike."""
    try:
        old = os.stat(final)
    except FileNotFoundError:
        os.chmod(temp, 0o666 & ~_umask())
        return
    if not stat.S_ISREG(old.st_mode):
        os.chmod(temp, 0o666 & ~_umask())
        return
    if os.geteuid() == 0 and (old.st_uid, old.st_gid) != (0, 0) and not _shared_directory(final):
        # Not in a sticky world-writable directory (/tmp): there a stranger could plant the old file
        # to be handed root's output, which they could not replace otherwise.
        os.chown(temp, old.st_uid, old.st_gid)
    os.chmod(temp, stat.S_IMODE(old.st_mode) & 0o777)


def _closed_stdout(label: str) -> OutputError:
    return OutputError(f"Cannot write {label}: standard output is closed. Give a file with -o.")


def check_stdout(label: str) -> None:
    """Refuse an output to stdout that cannot take bytes: closed, or replaced by a text stream
    (``contextlib.redirect_stdout(io.StringIO())`` in an embedding application: review of stop 57, a bare
    AttributeError after the run)."""
    if sys.stdout is None:
        raise _closed_stdout(label)
    try:
        sys.stdout.fileno()
        return
    except (AttributeError, OSError, ValueError):
        pass
    if getattr(sys.stdout, "buffer", None) is None:
        raise OutputError(
            f"Cannot write {label}: standard output is a text stream ({type(sys.stdout).__name__}: "
            "sys.stdout was replaced), and the output is bytes. Give a file path, or output=None to get "
            "the table back."
        )


#: How many sections that put outputs in place are running (see :func:`placing`), and how many runs of
#: this process have published all their outputs: a handler of SIGTERM or Ctrl-C waits while outputs are
#: put in place (so that they are all made or none), and tells a run stopped after them from one stopped
#: before.
_placing = 0
_publications = 0


#: Called as the first section that puts outputs in place begins: the command line's, which stops the run
#: there, before any output is replaced, on a signal that came while Polars ran a callback and still waits
#: to be acted on.
before_placing: Callable[[], None] | None = None


@contextlib.contextmanager
def placing() -> Iterator[None]:
    """A section that puts outputs in place: the renames of :meth:`Publication.publish_all`, and a run's
    publication up to the incremental state that records it (sessionize.pipeline.run)."""
    global _placing
    if not _placing and before_placing is not None:
        before_placing()
    _placing += 1
    try:
        yield
    finally:
        _placing -= 1


def renaming() -> bool:
    """Whether outputs are being put in place now (see :func:`placing`)."""
    return _placing > 0


def publications() -> int:
    """How many times this process has published every output of a run."""
    return _publications


class PendingOutput:
    """One output being written: :attr:`handle` takes its bytes until :meth:`publish` or :meth:`discard`."""

    def __init__(self, target: str, *, label: str | None = None) -> None:
        self.target = target
        #: How the output is named in errors (``--rejects x.csv``); the target by default.
        self.label = label or ("standard output" if target == STDIN else target)
        if target != STDIN:
            refuse_planted_symlink(target, self.label)
        self.stream = is_stream(target)
        if target == STDIN and sys.stdout is None:
            raise _closed_stdout(self.label)
        if not self.stream and os.path.isdir(target):
            raise OutputError(f"Cannot write {self.label}: it is a directory. Give a file name.")
        # A regular file behind symlinks is replaced where it really is, and the symlinks kept.
        self._final = target if self.stream else os.path.realpath(target)
        directory = tempfile.gettempdir() if self.stream else os.path.dirname(self._final)
        name = "stdout" if target == STDIN else os.path.basename(self._final)
        _remove_stale(directory, name)
        try:
            # The process id in the name lets a later run tell the leftovers of a killed one.
            fd, self._temp = tempfile.mkstemp(dir=directory, prefix=f".{name}.{os.getpid()}.", suffix=".tmp")
        except OSError as exc:
            raise OutputError(f"Cannot write {self.label}: {_describe(exc)}.") from exc
        self.handle: IO[bytes] = os.fdopen(fd, "wb")
        self.done = False
        self._prepared = False
        #: A hard link to the file the output replaces, taken before any output is put in place: what
        #: :meth:`restore` puts back when a later output of the run cannot be (review 58 F4).
        self._previous: str | None = None
        self._existed = False
        #: Ends what still writes into the handle (a :class:`TableSink`'s thread and Parquet writer)
        #: before :meth:`discard` closes it.
        self.drain: Callable[[], None] | None = None

    def error(self, exc: BaseException) -> OutputError:
        """The output error of a write into this output that failed: an ``OSError``, or Polars'
        ``ComputeError`` of a Parquet file the disk could not take (see :func:`cannot_write`)."""
        if not isinstance(exc, OSError):
            return cannot_write(self._temp, exc, label=self.label)
        if exc.errno == errno.EPIPE:
            return ClosedPipeError(f"Cannot write {self.label}: {_describe(exc)}.")
        return OutputError(f"Cannot write {self.label}: {_describe(exc)}.")

    def _close(self) -> None:
        try:
            self.handle.flush()
            if not self.stream:
                os.fsync(self.handle.fileno())
        finally:
            self.handle.close()

    def prepare(self) -> None:
        """Flush the written bytes to disk (and close the file), the step that a full disk or a failing
        device can stop, so that every output is safe before the first is put in place."""
        if self.done or self._prepared:
            return
        try:
            self._close()
        except OSError as exc:
            raise self.error(exc) from exc
        self._prepared = True

    def hold_previous(self) -> None:
        """Keep the file this output replaces (a hard link beside it), or refuse now, before any output
        of the run is put in place, a file that cannot be replaced by a rename: a mount point (a file
        bind-mounted into a container, ``docker -v``) or an append-only or immutable file (``chattr``)."""
        if self.stream or self._previous is not None:
            return
        try:
            found = os.lstat(self._final)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise self.error(exc) from exc
        self._existed = True
        directory, name = os.path.dirname(self._final), os.path.basename(self._final)
        for attempt in range(100):
            backup = os.path.join(directory, f".{name}.{os.getpid()}.previous{attempt}.tmp")
            try:
                os.link(self._final, backup)
            except FileExistsError:
                continue
            except OSError as exc:
                if exc.errno == errno.EXDEV:
                    raise OutputError(
                        f"Cannot write {self.label}: it is a mount point (a file mounted on its own, as "
                        "docker -v mounts one), which cannot be replaced. Mount its folder instead, or give "
                        "another path. No output was written."
                    ) from exc
                if exc.errno == errno.EPERM and found.st_uid in (os.geteuid(), 0):
                    raise OutputError(
                        f"Cannot write {self.label}: it cannot be replaced ({_describe(exc)}: an append-only "
                        "or immutable file, see lsattr). Give another path, or chattr -a -i it. No output "
                        "was written."
                    ) from exc
                return  # a file of another user (fs.protected_hardlinks): replaced without a way back
            self._previous = backup
            return

    def restore(self) -> None:
        """Undo :meth:`publish`: put back the file it replaced (or remove the new one there was none)."""
        if not self.done or self.stream:
            return
        if self._previous is not None:
            os.replace(self._previous, self._final)
            self._previous = None
        elif not self._existed:
            Path(self._final).unlink(missing_ok=True)
        self.done = False

    def release(self) -> None:
        """Let go of the file this output replaced (the run's outputs are all in place, or none is)."""
        if self._previous is not None:
            Path(self._previous).unlink(missing_ok=True)
            self._previous = None

    def publish(self) -> None:
        """Put the written bytes in place: rename over a file, copy into a stream."""
        if self.done:
            return
        try:
            if not self._prepared:
                self._close()
            if self.stream:
                self._copy_to_stream()
            else:
                take_mode(self._temp, self._final)
                os.replace(self._temp, self._final)
        except OSError as exc:
            raise self.error(exc) from exc
        finally:
            self.discard()
        self.done = True

    def _copy_to_stream(self) -> None:
        descriptor = descriptor_of(self.target)
        with open(self._temp, "rb") as source:
            if self.target == STDIN or descriptor == 1:
                self._copy_to_stdout(source)
                return
            if descriptor is not None:
                # Into the open descriptor itself (at its offset, or appended with ``>>``), never reopened.
                if descriptor == 2:
                    with contextlib.suppress(Exception):
                        sys.stderr.flush()
                while chunk := source.read(_COPY_CHUNK):
                    _write_all(lambda view: os.write(descriptor, view), chunk, self.label)
                return
            # O_NONBLOCK is not used: a FIFO waits for its reader, as ``cat > fifo`` does.
            fd = os.open(self.target, os.O_WRONLY | os.O_APPEND)
            try:
                while chunk := source.read(_COPY_CHUNK):
                    _write_all(lambda view: os.write(fd, view), chunk, self.label)
            finally:
                os.close(fd)

    def _copy_to_stdout(self, source: IO[bytes]) -> None:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        try:
            fd: int | None = sys.stdout.fileno()
        except (AttributeError, OSError, ValueError):
            fd = None  # replaced by a test runner or an embedding application
        if fd is not None:
            while chunk := source.read(_COPY_CHUNK):
                _write_all(lambda view: os.write(fd, view), chunk, self.label)
            return
        check_stdout(self.label)
        out = sys.stdout.buffer
        while chunk := source.read(_COPY_CHUNK):
            _write_all(out.write, chunk, self.label)
        out.flush()

    def discard(self) -> None:
        """Remove the temporary file; the target stays as it was (safe to call twice). The file goes
        even when waiting for a write in flight is interrupted (a second Ctrl-C, SIGTERM)."""
        try:
            if self.drain is not None:
                self.drain()
        finally:
            with contextlib.suppress(OSError):
                self.handle.close()
            Path(self._temp).unlink(missing_ok=True)


class TableSink:
    """A session table appended part by part to one pending output (Parquet: one row group a part).

    With ``background``, each part is written in a thread of its own while the caller goes on to
    compute the next (encoding and compressing a part takes about a fifth of a bucket's time, mostly
    outside the GIL); one part at most is in flight, and its error is raised by the next
    :meth:`write` or by :meth:`finish`.
    """

    def __init__(
        self, pending: PendingOutput, format: OutputFormat, *, safe: bool = False, background: bool = False
    ) -> None:
        self.pending = pending
        self.format: OutputFormat = format
        self.safe = safe
        self._parts = 0
        self._schema: dict[str, pl.DataType] | None = None
        self._parquet: Any = None
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="sessionize-sink") if background else None
        self._in_flight: Future[None] | None = None
        pending.drain = self._abandon

    def write(self, frame: pl.DataFrame) -> None:
        """Append ``frame`` (every part has the first part's columns)."""
        if self._schema is None:
            self._schema = dict(frame.schema)
        elif dict(frame.schema) != self._schema:
            frame = frame.cast(self._schema)  # type: ignore[arg-type]
        if self._writer is None:
            self._append([frame])
            return
        self._wait()
        self._in_flight = self._writer.submit(self._append, [frame])

    def _wait(self) -> None:
        """Wait for the part in flight; its error is raised here."""
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is not None:
            in_flight.result()

    def _abandon(self) -> None:
        """The output is being discarded: wait for the part in flight and end the Parquet writer,
        whatever their outcome, before the handle is closed."""
        with contextlib.suppress(Exception):
            self._wait()
        if self._writer is not None:
            self._writer.shutdown()
        parquet, self._parquet = self._parquet, None
        if parquet is not None:
            with contextlib.suppress(Exception):
                parquet.close()

    def _append(self, parts: list[pl.DataFrame]) -> None:
        """Write the frame ``parts`` holds (taken out of it, so that a Parquet part's frame is freed
        once converted for the writer, in the thread that writes it)."""
        frame = parts.pop()
        handle = self.pending.handle
        try:
            if self.format == "parquet":
                import pyarrow.parquet as pq  # type: ignore[import-untyped]

                table = frame.to_arrow()
                del frame
                if self._parquet is None:
                    self._parquet = pq.ParquetWriter(
                        handle,
                        table.schema,
                        compression=PARQUET_COMPRESSION,
                        compression_level=PARQUET_COMPRESSION_LEVEL,
                    )
                self._parquet.write_table(table)
            else:
                serialize(frame, handle, self.format, header=not self._parts, safe=self.safe)
        except WRITE_ERRORS as exc:
            raise self.pending.error(exc) from exc
        self._parts += 1

    def finish(self, empty: pl.DataFrame) -> None:
        """End the table (``empty``: its columns, for a table without any part); publication follows."""
        self._wait()
        if not self._parts:
            self._append([empty])
        if self._writer is not None:
            self._writer.shutdown()
        parquet, self._parquet = self._parquet, None
        if parquet is not None:
            try:
                parquet.close()
            except OSError as exc:
                raise self.pending.error(exc) from exc


class Publication:
    """The outputs of one run, published together by :meth:`publish_all` or discarded together."""

    def __init__(self, *, csv_safe: bool = False) -> None:
        #: Whether CSV tables are written with formula-leading values neutralised (``--csv-safe``).
        self.csv_safe = csv_safe
        self._pending: list[PendingOutput] = []
        self._deferred: list[tuple[Callable[[], None], Callable[[], None]]] = []
        self._before_renames: list[Callable[[], None]] = []
        self.published = False

    def __enter__(self) -> Publication:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self.published:
            self.discard()

    def open(self, target: str, *, label: str | None = None) -> PendingOutput:
        """A new pending output for ``target`` (a path, or ``-`` for stdout)."""
        identity = _identity(target)
        for pending in self._pending:
            if (
                pending.target == target
                or (target != STDIN and not pending.stream and pending._final == os.path.realpath(target))
                or (identity is not None and identity == _identity(pending.target))
            ):
                raise OutputError(f"{target} is given as two outputs of the run; give each its own path.")
        pending = PendingOutput(target, label=label)
        self._pending.append(pending)
        return pending

    def write_table(self, frame: pl.DataFrame, target: str, *, format: str | None = None) -> OutputFormat:
        """``frame`` in the format of ``format`` or of ``target``'s extension; returns the format."""
        fmt = output_format_of(target, format)
        pending = self.open(target)
        try:
            serialize(frame, pending.handle, fmt, safe=self.csv_safe)
        except WRITE_ERRORS as exc:
            raise pending.error(exc) from exc
        return fmt

    def sink(self, target: str, *, format: str | None = None, background: bool = False) -> TableSink:
        """A table written part by part (see :class:`TableSink`)."""
        fmt = output_format_of(target, format)
        return TableSink(self.open(target), fmt, safe=self.csv_safe, background=background)

    def write_bytes(self, target: str, data: bytes) -> None:
        pending = self.open(target)
        try:
            _write_all(pending.handle.write, data, pending.label)
        except OSError as exc:
            raise pending.error(exc) from exc

    def defer(self, publish: Callable[[], None], discard: Callable[[], None]) -> None:
        """An output written elsewhere (a directory of parts): ``publish`` or ``discard`` it with the rest."""
        self._deferred.append((publish, discard))

    def before_renames(self, step: Callable[[], None]) -> None:
        """A last step before the first file or directory is put in place, every output being written
        and flushed to disk (an incremental run's new state claiming its output directory): an error
        there still leaves every file as it was."""
        self._before_renames.append(step)

    def publish_all(self) -> None:
        """Publish every output: streams first (copies, which a full disk or a closed pipe can stop:
        then no file has been replaced), then every file flushed to disk (which a full disk or a failing
        device can stop: then too no file has been replaced), then files and directories put in place
        (renames), during which a signal that stops the run waits (see :func:`renaming`)."""
        global _publications
        try:
            for pending in self._pending:
                if pending.stream:
                    pending.publish()
            files = [pending for pending in self._pending if not pending.stream]
            for pending in files:
                pending.prepare()
                pending.hold_previous()
            for step in self._before_renames:
                step()
            with placing():
                try:
                    for pending in files:
                        pending.publish()
                    for publish, _ in self._deferred:
                        publish()
                except BaseException:
                    # One output could not be put in place: the others go back to what they were.
                    for pending in reversed(files):
                        with contextlib.suppress(OSError):
                            pending.restore()
                    raise
        except BaseException:
            self.discard()
            raise
        finally:
            for pending in self._pending:
                with contextlib.suppress(OSError):
                    pending.release()
        self.published = True
        _publications += 1

    def discard(self) -> None:
        """Discard every output; an interruption while one is discarded (a second Ctrl-C) is raised
        once all are."""
        interrupted: BaseException | None = None
        for pending in self._pending:
            try:
                pending.discard()
            except BaseException as exc:  # raised below, after the other outputs
                interrupted = interrupted or exc
        for _, discard in self._deferred:
            with contextlib.suppress(Exception):
                discard()
        self._deferred = []
        if interrupted is not None:
            raise interrupted


def write_atomically(output: str | Path, write: Callable[[IO[bytes]], object]) -> None:
    """Call ``write`` on a pending output for ``output`` and publish it (nothing is left on error)."""
    with Publication() as publication:
        pending = publication.open(str(output))
        try:
            write(pending.handle)
        except WRITE_ERRORS as exc:
            raise pending.error(exc) from exc
        publication.publish_all()


def write_sessions(
    frame: pl.DataFrame, output: str, *, format: str | None = None, csv_safe: bool = False
) -> OutputFormat:
    """Write ``frame`` to ``output`` (``-`` for stdout) all or nothing; returns the format written.
    ``csv_safe`` neutralises formula-leading values in a CSV file (see :func:`sessionize.io.csv_safe`)."""
    with Publication(csv_safe=csv_safe) as publication:
        fmt = publication.write_table(frame, output, format=format)
        publication.publish_all()
    return fmt
