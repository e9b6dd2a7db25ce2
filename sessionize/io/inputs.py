"""The one path expander of every command: files, directories, glob patterns, URLs and stdin.

``sessionize run``, ``sessionize report`` and the Dask engine all find their inputs here, so a
directory or a pattern means the same files everywhere.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import posixpath
import re
import shlex
import stat
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sessionize.errors import (
    NoInputFilesError,
    SessionizeWarning,
    UnknownFormatError,
    UnreadableInputError,
    UsageError,
    permission_denied,
)
from sessionize.io.formats import (
    ACCESS_LOG_FORMATS,
    STDIN,
    SUPPORTED_INPUTS,
    InputFormat,
    format_of,
    is_special_file,
    names_table_file,
)
from sessionize.io.snowplow import is_enriched_line, is_enriched_tsv

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(path: str) -> bool:
    """Whether ``path`` is a URL such as ``s3://bucket/key`` (``file://`` included)."""
    return bool(_URL.match(path))


def is_dataset_target(path: str) -> bool:
    """Whether an engine that writes directories of parts (Spark) takes the output ``path`` for one: a
    URL, or a name without a table file's extension; never ``-`` (standard output)."""
    return path != STDIN and (is_url(path) or not names_table_file(path))


@dataclass(frozen=True)
class InputFile:
    """One input to read: a path (or ``-`` for stdin) and its format."""

    path: str
    format: InputFormat
    #: How messages and ``source_file`` name the input when ``path`` is a stand-in for it (the new
    #: lines of a grown log file, copied aside), and the lines of the real file before ``path``'s first.
    name: str | None = None
    first_line: int = 0
    #: A named pipe or a device (``<(zcat events.csv.gz)``, ``/dev/stdin``): its bytes can be read once.
    stream: bool = False

    @property
    def is_stdin(self) -> bool:
        return self.path == STDIN

    @property
    def is_stream(self) -> bool:
        """Whether the input can be read only once, start to end (standard input, a pipe, a device):
        read whole, never sniffed, sliced or read again."""
        return self.is_stdin or self.stream

    @property
    def shown(self) -> str:
        """The input as messages name it."""
        if self.name is not None:
            return self.name
        return "standard input" if self.is_stdin else self.path


#: What the functions that read inputs take: one path (text, a ``pathlib.Path``, an :class:`InputFile`),
#: or a list of them.
Inputs = str | os.PathLike[str] | InputFile | Iterable[str | os.PathLike[str] | InputFile]


def input_list(inputs: Inputs, *, what: str = "input") -> list[str | os.PathLike[str] | InputFile]:
    """``inputs`` as a list of inputs: one path given alone is one input, never its characters (a path
    as text was taken for the list of its characters, ``/`` first: review 60 F2).

    >>> input_list("events.csv"), input_list(["a.csv", "b.csv"])
    (['events.csv'], ['a.csv', 'b.csv'])
    """
    if isinstance(inputs, str | os.PathLike | InputFile):
        return [inputs]
    if isinstance(inputs, Iterable) and not isinstance(inputs, bytes | Mapping):
        items = list(inputs)
        for item in items:
            if not isinstance(item, str | os.PathLike | InputFile):
                raise UsageError(
                    f"An {what} is a path as text or a pathlib.Path, not {item!r} ({type(item).__name__})."
                )
        return items
    raise UsageError(
        f"Give the {what}s as a path (text or a pathlib.Path) or a list of them, not {inputs!r} "
        f"({type(inputs).__name__})."
    )


def resolve_inputs(
    paths: Inputs,
    *,
    input_format: str | None = None,
    urls: bool = False,
    formats: Sequence[str] | None = None,
) -> list[InputFile]:
    """Expand files, directories (every supported file inside, recursively) and glob patterns.

    Files named explicitly must have a known format; unsupported files inside a directory are
    skipped. The order is the order given, and sorted by path within a directory or pattern, so
    input order (which breaks ties between events at the same instant) is reproducible. With
    ``urls``, fsspec URLs (``s3://logs/2024-05-*/*.parquet``, a directory, a file) are expanded the
    same way. ``formats`` keeps only files of those formats (``sessionize report`` reads tables). One
    path alone is one input.
    """
    paths = input_list(paths)
    if not paths:
        raise UsageError(
            "No input given. Pass one or more files, directories or glob patterns, or - for stdin."
        )
    result: list[InputFile] = []
    seen: set[str] = set()
    error_logs: list[str] = []

    def add(path: str, *, explicit: bool) -> bool:
        """Add a file to read; whether it is one (a supported format, whether or not named before)."""
        fmt = format_of(path, input_format)
        if fmt is not None and formats is not None and fmt not in formats:
            fmt = None
        # The file on this machine (a path, or a file:// URL's), whose first bytes can be read here.
        local = path.removeprefix("file://") if path.startswith("file://") else None if is_url(path) else path
        # A pipe or a device is never read here: its first bytes would be gone, or the open would wait.
        special = local is not None and is_special_file(local)
        stream = explicit and not is_url(path) and special
        if (fmt is not None or explicit) and local is not None and not special:
            _check_compression(path, local, fmt)
        name = os.path.basename(path.rstrip("/"))
        if fmt in ACCESS_LOG_FORMATS and not explicit and _ERROR_LOG.search(name):
            # A web server's error log beside its access logs (/var/log/nginx/error.log.1): not requests.
            error_logs.append(path)
            return False
        if fmt is None:
            if explicit:
                raise UnknownFormatError(
                    f"Cannot tell the format of {path} from its extension. Supported: {SUPPORTED_INPUTS}. "
                    "Give the format with --input-format."
                )
            return False
        if (
            fmt == "tsv"
            and input_format is None
            and not special
            and (_enriched_url(path) if is_url(path) else is_enriched_tsv(path))
        ):
            fmt = "snowplow"  # a headerless TSV of Snowplow's enriched events
        # A file:// URL's file by its real path too: through a link, it would be read twice.
        key = path if local is None else os.path.realpath(local)
        if key not in seen:
            seen.add(key)
            result.append(InputFile(path, fmt, stream=stream))
        return True

    for raw in paths:
        if isinstance(raw, InputFile):
            key = raw.path if raw.is_stdin or is_url(raw.path) else os.path.realpath(raw.path)
            if key not in seen:
                seen.add(key)
                result.append(raw)
            continue
        path = str(raw)
        if is_url(path):
            if not urls:
                raise UsageError(
                    f"{path}: URLs are read with --engine dask; download the file to read it here."
                )
            for name, explicit in _expand_url(path, input_format):
                add(name, explicit=explicit)
        elif path == STDIN:
            result.append(InputFile(STDIN, format_of("stdin.csv", input_format) or "csv"))
        elif os.path.isdir(path):
            # Files named before count: `run logs/a.csv logs` reads logs/a.csv once, and is no error.
            supported = False
            skipped = 0
            for name in _files_below(path):
                if _hidden(os.path.relpath(name, path).split(os.sep)):
                    skipped += format_of(name, input_format) is not None
                    continue
                supported = add(name, explicit=False) or supported
            _warn_hidden(path, skipped)
            if not supported:
                if error_logs:
                    raise NoInputFilesError(
                        f"The directory {path} holds error logs only ({', '.join(error_logs[:3])}), which "
                        "hold no requests. Point at the access logs."
                    )
                raise NoInputFilesError(
                    f"The directory {path} holds no supported files ({SUPPORTED_INPUTS}). Point at the "
                    "files, or give their format with --input-format."
                )
        elif os.path.exists(path):
            add(path, explicit=True)
        elif glob.has_magic(path):
            found = _matching_files(path)
            matches = [m for m in found if not _hidden([os.path.basename(m)])]
            hidden = [m for m in found if _hidden([os.path.basename(m)])]  # not `m not in matches`: n² time
            _warn_hidden(path, sum(format_of(m, input_format) is not None for m in hidden))
            if not matches:
                raise NoInputFilesError(f"The pattern {path} matches no files.")
            supported = False
            for name in matches:
                supported = add(name, explicit=False) or supported
            if not supported and error_logs:
                raise NoInputFilesError(
                    f"The pattern {path} matches error logs only ({', '.join(error_logs[:3])}), which hold "
                    "no requests. Point at the access logs."
                )
            if not supported:
                raise NoInputFilesError(
                    f"The pattern {path} matches {len(matches)} file(s), none in a supported format "
                    f"({SUPPORTED_INPUTS}). Give their format with --input-format."
                )
        else:
            _check_enterable(path)
            raise UnreadableInputError(f"{path}: no such file or directory.")
    if error_logs:
        warnings.warn(
            f"{len(error_logs)} error log(s) skipped ({', '.join(error_logs[:3])}"
            f"{', ...' if len(error_logs) > 3 else ''}): a web server's error log holds no requests. "
            "Name a file to read it.",
            SessionizeWarning,
            stacklevel=2,
        )
    return result


def filesystem(url: str) -> tuple[Any, str]:
    """The fsspec file system of ``url`` and the path on it."""
    try:
        import fsspec  # type: ignore[import-untyped]

        return fsspec.core.url_to_fs(url)  # type: ignore[no-any-return]
    except (ImportError, ValueError) as exc:
        scheme = url.split("://", 1)[0]
        raise UsageError(
            f"{url}: cannot open {scheme}:// URLs ({exc}). Install the fsspec package for them "
            f"(s3fs for s3://, gcsfs for gs://, adlfs for az://) on this machine and every worker."
        ) from exc


def _enriched_url(url: str) -> bool:
    """Whether the file at ``url`` is a headerless TSV of Snowplow's enriched events (as a local one is
    told by :func:`~sessionize.io.snowplow.is_enriched_tsv`)."""
    try:
        fs, path = filesystem(url)
        with fs.open(path, "rb", compression="gzip" if path.endswith(".gz") else None) as handle:
            first = handle.readline(1 << 20)
    except (OSError, EOFError, ValueError, UsageError):
        return False
    return is_enriched_line(first)


#: The first bytes of compressed files sessionize does not read (gzip is read when the name ends in .gz),
#: with the command that makes a file it reads.
#: Magic bytes, what they are, the command that makes a file of them readable, and a pipe's decompressor.
_COMPRESSED: tuple[tuple[bytes, str, str, str], ...] = (
    (b"BZh", "bzip2-compressed", "bunzip2 -c {path} | gzip > {target}", "bunzip2 -c"),
    (b"\xfd7zXZ\x00", "xz-compressed", "xz -dc {path} | gzip > {target}", "xz -dc"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed", "zstd -dc {path} | gzip > {target}", "zstd -dc"),
    (
        b"PK\x03\x04",
        "a ZIP archive (or an Excel workbook)",
        "unzip {path}, and give the files inside",
        "unzip -p",
    ),
)
GZIP_MAGIC = b"\x1f\x8b"


def _check_compression(path: str, local: str, fmt: str | None) -> None:
    """Refuse a compressed file sessionize would read as text (binary "column names", or a failure in
    the middle of a large file): bzip2, xz, zstd and ZIP by their first bytes, and gzip whose name does
    not end in ``.gz`` (it is decompressed by its name on every path). ``local`` is the file on this
    machine (``path`` itself, or a ``file://`` URL's path); a file on remote storage is not opened here,
    one request an object."""
    try:
        with open(local, "rb") as handle:
            head = handle.read(10)
    except OSError:
        return  # not readable here: the reader names the error
    check_compressed_head(head, path, fmt=fmt)
    if head.startswith(GZIP_MAGIC) and not path.lower().endswith(".gz"):
        raise UnreadableInputError(
            f"{path} is gzip-compressed but its name does not end in .gz: rename it to {path}.gz "
            "(sessionize decompresses a file by its name)."
        )


def check_compressed_head(head: bytes, path: str, *, stream: bool = False, fmt: str | None = None) -> None:
    """Refuse an input whose first bytes are bzip2, xz, zstd or ZIP's, with the command that makes it
    readable (for a ``stream``, a pipe or standard input, the decompressor to put in the pipe); and a
    Parquet file to be read as text (``fmt``: named .csv, ``--input-format csv``, piped), which was
    said to look like UTF-16 text."""
    if head.startswith(b"PAR1") and fmt is not None and fmt != "parquet":
        rename = "" if stream else ", or name it .parquet,"
        raise UnreadableInputError(
            f"{path} is a Parquet file (it starts with PAR1), not {fmt.upper()}. Give --input-format "
            f"parquet{rename} and run again."
        )
    stem = re.sub(r"\.(bz2|xz|zst|zip|gz)$", "", path, flags=re.IGNORECASE)
    # Never the file read: the shell would empty it before the decompressor reads it (access.log.gz
    # that holds bzip2 data).
    folder, name = os.path.split(stem)
    # Compared ignoring case: ACCESS.LOG.GZ and ACCESS.LOG.gz are one file on macOS, Windows and SMB shares.
    same = (stem + ".gz").casefold() == path.casefold()
    target = shlex.quote(os.path.join(folder, f"recompressed-{name}.gz") if same else stem + ".gz")
    for magic, what, fix, decompressor in _COMPRESSED:
        # bzip2: "BZh", the block size digit, and the first block's magic number.
        if head.startswith(magic) and (magic != b"BZh" or (head[3:4].isdigit() and head[4:10] == b"1AY&SY")):
            how = (
                f"Decompress it in the pipe with {decompressor}"
                if stream
                else f"Decompress it first: {fix.format(path=shlex.quote(path), target=target)}"
            )
            raise UnreadableInputError(f"{path} is {what}, which sessionize does not read. {how}.")


#: A web server's error log by its name (``error.log``, ``ssl_error.log``, ``site-error.log.1``, rotated;
#: Apache's ``error_log``).
_ERROR_LOG = re.compile(r"(?:^|[._-])error[._]log(?:$|[.-])")


def _denied(path: str, what: str) -> UnreadableInputError:
    return UnreadableInputError(permission_denied(path or os.curdir, what))


def _check_enterable(path: str) -> None:
    """Raise the permission error of a path that ``os.path.exists`` said was missing because a folder
    above it cannot be entered (``exists`` swallows EACCES: a file in a private folder was "no such file")."""
    try:
        os.stat(path)
    except PermissionError:
        raise _denied(path, "a folder on its path cannot be entered") from None
    except OSError:
        return
    if os.path.isdir(path) and not os.access(path, os.R_OK | os.X_OK):
        raise _denied(path, "a directory that cannot be listed")


def _listing(folder: str, *, quiet: bool = False) -> list[os.DirEntry[str]]:
    """The entries of ``folder`` (``""``: the working directory), for the expander's own walks. A folder
    that cannot be listed (no r), or can be listed but not entered (no x: what is in it can be neither
    told a file nor opened), is a permission error naming it, where glob and ``os.walk`` skipped it and its
    files were left out of the run (review 57 F2); ``quiet``, it holds nothing. One gone since, or not
    a folder, holds nothing, as for glob."""
    try:
        with os.scandir(folder or os.curdir) as found:
            entries = list(found)
    except (FileNotFoundError, NotADirectoryError):
        return []
    except PermissionError:
        if quiet:
            return []
        raise _denied(folder, "a directory that cannot be listed") from None
    except OSError as exc:
        if quiet:
            return []
        raise UnreadableInputError(
            f"{folder or os.curdir}: the directory cannot be listed ({exc.strerror or exc})."
        ) from None
    if entries:
        try:
            os.lstat(entries[0].path)  # listing takes r; reaching what is listed takes x
        except PermissionError:
            if quiet:
                return []
            raise _denied(folder, "a directory that can be listed but not entered") from None
        except OSError:
            pass
    return entries


def _is(entry: os.DirEntry[str], path: str, *, want_folder: bool, quiet: bool = False) -> bool:
    """Whether a listed entry (at ``path``) is a folder (not ``want_folder``: a file), through a symbolic
    link; a link to a place the user cannot reach is a permission error naming it (``quiet``: neither)."""
    try:
        return entry.is_dir() if want_folder else entry.is_file()
    except PermissionError:
        if quiet:
            return False
        raise _denied(path, "a link to a place that cannot be reached") from None
    except OSError:
        return False


def _walk(folder: str, *, dotted: bool) -> list[tuple[str, bool]]:
    """Every path below ``folder`` at any depth, each with whether it is a folder, in path order, through
    symbolic links to folders (each real folder once: a link back up the tree would be walked forever).

    A folder that cannot be listed or entered is a permission error (see :func:`_listing`). ``dotted``
    (a directory input) walks names starting with ``.`` too, to count the hidden files it skips, and
    below a hidden name (see :func:`_hidden`) a folder that cannot be listed is no error: its files
    would be skipped anyway. Not ``dotted`` (a pattern's ``**``), such names are left out, as glob
    leaves them out, and every folder walked must be listed: the pattern reads ``_temporary/x.csv``."""
    found: list[tuple[str, bool]] = []
    seen: set[str] = set()
    stack = [folder]
    while stack:
        top = stack.pop()
        real = os.path.realpath(top or os.curdir)
        if real in seen:
            continue
        seen.add(real)
        quiet = dotted and top != folder and _hidden(os.path.relpath(top, folder).split(os.sep))
        below: list[str] = []
        for entry in sorted(_listing(top, quiet=quiet), key=lambda entry: entry.name):
            if not dotted and entry.name.startswith("."):
                continue
            path = os.path.join(top, entry.name)
            hidden = quiet or (dotted and _hidden([entry.name]))
            if _is(entry, path, want_folder=True, quiet=hidden):
                found.append((path, True))
                below.append(path)
            elif _is(entry, path, want_folder=False, quiet=hidden):
                found.append((path, False))
        stack.extend(reversed(below))
    return sorted(found)


def _files_below(folder: str) -> list[str]:
    """Every file below ``folder`` at any depth, sorted by path, hidden ones included (see :func:`_walk`):
    a folder that cannot be listed or entered is an error, one that is hidden (its files would be
    skipped) is not."""
    return [path for path, is_folder in _walk(folder, dotted=True) if not is_folder]


def _matching_files(pattern: str) -> list[str]:
    """The files ``glob.glob(pattern, recursive=True)`` matches, sorted, but a folder the pattern leads
    into that cannot be listed or entered is a permission error naming it, where glob skipped it and the
    files of it the pattern matches were left out of the run: below ``**`` (``logs/**/*.csv``), or
    matched by a wildcard (``logs/*/a.csv``). As in glob, ``*`` and ``**`` match no name starting with
    ``.`` (a part of the pattern starting with one does), and links are followed; a folder the pattern
    does not match is never listed."""
    parts = pattern.split(os.sep)
    fixed = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    start = os.sep.join(parts[:fixed]) or (os.sep if pattern.startswith(os.sep) else "")
    if not os.path.isdir(start or os.curdir):
        _check_enterable(start)  # a folder above the pattern that cannot be entered: not "no files"
        return []
    reached = [start]  # the folders the parts so far match (the files, after the last part)
    for index in range(fixed, len(parts)):
        part, last = parts[index], index == len(parts) - 1
        matched: list[str] = []
        for folder in reached:
            if part == "**":
                if not last:
                    matched.append(folder)
                matched.extend(path for path, is_folder in _walk(folder, dotted=False) if is_folder != last)
            elif glob.has_magic(part):
                entries = _listing(folder)
                names = {entry.name for entry in entries if part.startswith(".") or entry.name[:1] != "."}
                names.intersection_update(fnmatch.filter(names, part))
                matched.extend(
                    os.path.join(folder, entry.name)
                    for entry in entries
                    if entry.name in names
                    and _is(entry, os.path.join(folder, entry.name), want_folder=not last)
                )
            elif _literal(folder, part, want_folder=not last):
                matched.append(os.path.join(folder, part))
        reached = matched
    return sorted(set(reached))


def _literal(folder: str, name: str, *, want_folder: bool) -> bool:
    """Whether ``name`` in ``folder``, a part of a pattern without wildcards after one with (``2024`` of
    ``logs/*/2024/*.csv``), is a folder (not ``want_folder``: a file), through links. Where ``folder``
    (matched, not yet listed) cannot be entered, it is named in a permission error, where glob said
    nothing matched; where ``name`` is a link to a place that cannot be reached, the link is."""
    path = os.path.join(folder, name)
    try:
        mode = os.stat(path).st_mode
    except PermissionError:
        try:
            os.lstat(path)
        except PermissionError:
            raise _denied(folder, "a directory that cannot be entered") from None
        except OSError:
            pass
        raise _denied(path, "a link to a place that cannot be reached") from None
    except OSError:
        return False
    return stat.S_ISDIR(mode) if want_folder else stat.S_ISREG(mode)


def _hidden(parts: Sequence[str]) -> bool:
    """Whether a file found in a directory (its path below the directory, as parts) is hidden: a name
    starting with ``.`` or ``_`` (``_SUCCESS``, ``_temporary/``, ``.part-0.parquet.tmp``), as Spark,
    Hadoop and Arrow datasets skip them, so that every engine reads the same files of a directory."""
    return any(part.startswith((".", "_")) for part in parts)


def _warn_hidden(where: str, skipped: int) -> None:
    if skipped:
        warnings.warn(
            f"{where}: {skipped} file(s) whose name or folder starts with _ or . were skipped (hidden, as "
            "Spark and Hadoop skip them: a job's temporary parts); name a file to read it.",
            SessionizeWarning,
            stacklevel=3,
        )


def _expand_url(url: str, input_format: str | None = None) -> list[tuple[str, bool]]:
    """The files behind a URL: (URL of the file, whether it was named explicitly). A directory's hidden
    files (see :func:`_hidden`, by their path below it) and a pattern's hidden names are skipped. A
    ``file://`` URL is listed as its path is: fsspec's ``*`` and ``**`` match names starting with ``.``,
    which glob's do not, and its listing skips a folder that cannot be entered."""
    fs, root = filesystem(url)
    local = bool(getattr(fs, "local_file", False))
    directory: str | None = None
    try:
        if any(char in root for char in "*?["):
            names = _matching_files(root) if local else sorted(n for n in fs.glob(root) if fs.isfile(n))
            explicit = False
            if not names:
                raise NoInputFilesError(f"The pattern {url} matches no files.")
        elif fs.isdir(root):
            names, explicit = _files_below(root) if local else sorted(fs.find(root)), False
            directory = root.rstrip("/")
            if not names:
                raise NoInputFilesError(f"The directory {url} holds no files.")
        elif fs.exists(root):
            names, explicit = [root], True
        else:
            if local:
                _check_enterable(root)
            raise UnreadableInputError(f"{url}: no such file or directory.")
    except OSError as exc:
        raise UnreadableInputError(f"{url}: cannot be listed ({exc}).") from exc
    if explicit:
        return [(fs.unstrip_protocol(name), explicit) for name in names]

    def below(name: str) -> list[str]:
        return posixpath.relpath(name, directory).split("/") if directory else [posixpath.basename(name)]

    visible = [name for name in names if not _hidden(below(name))]
    hidden = [name for name in names if _hidden(below(name))]
    _warn_hidden(url, sum(format_of(name, input_format) is not None for name in hidden))
    return [(fs.unstrip_protocol(name), explicit) for name in visible]
