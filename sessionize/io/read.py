"""Reading event files: each file read and validated on its own, so every error names the file and row."""

from __future__ import annotations

import array
import codecs
import contextlib
import csv
import dataclasses
import errno
import functools
import gzip
import io
import itertools
import json
import math
import mmap
import os
import re
import shlex
import sys
import tempfile
import warnings
import zlib
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import polars as pl

from sessionize import schema as S
from sessionize.accesslog import (
    NulRuns,
    detect_log_format,
    leading_nul_runs,
    parse_access_log,
)
from sessionize.config import ReadOptions, RunConfig
from sessionize.distinct import fresh_name
from sessionize.errors import (
    MalformedRowsError,
    MissingColumnError,
    OutputError,
    SessionizeWarning,
    UnknownFormatError,
    UnreadableInputError,
    UsageError,
    permission_denied,
)
from sessionize.io.formats import ACCESS_LOG_FORMATS, REJECTS_COLUMNS, split_gz
from sessionize.io.infer import infer_ndjson_schema
from sessionize.io.inputs import GZIP_MAGIC, InputFile, Inputs, check_compressed_head, resolve_inputs
from sessionize.io.jsontext import asked_columns, read_json_text
from sessionize.io.params import as_json_lists, unnest_params
from sessionize.io.snowplow import parse_enriched
from sessionize.io.surrogates import LoneSurrogateScan, well_formed_surrogates
from sessionize.normalize import (
    KEEP,
    MAX_REPORTED_ROWS,
    RAW_TIME,
    REASON,
    ROW,
    SKIP_HINT,
    check_events,
    date_number_count,
    describe_epoch_units,
    epoch_unit_counts,
    invalid_reason,
    is_invalid,
    json_text,
    keep_expr,
    keyed_by_session,
    prepare_events,
    raw_columns,
)
from sessionize.privacy import Hide, anonymize_ips, hash_user_ids, hide_copies, refuse_private_aggregates

if TYPE_CHECKING:
    from polars._typing import PolarsDataType

_T = TypeVar("_T")


def _corrupt_gzip(path: str, exc: BaseException) -> str:
    try:
        with open(path, "rb") as handle:
            start = handle.read(2)
    except OSError:
        start = b"\x1f\x8b"
    if len(start) == 2 and start != b"\x1f\x8b":
        # A plain file named .gz (a log renamed by hand, an export told to compress that did not).
        return (
            f"{path}: the file is named .gz but is not gzip data (it does not start as gzip does). If it is "
            "plain text, rename it without .gz."
        )
    return f"{path}: the gzip data is corrupt or truncated ({exc}). Re-export or re-download the file."


def _read_bytes_gz(path: str) -> bytes:
    try:
        with gzip.open(path, "rb") as handle:
            return handle.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise UnreadableInputError(_corrupt_gzip(path, exc)) from exc


@dataclass(frozen=True)
class ReadNotes:
    """What a read saw that a warning tells once per file: a slice of a file (a window, a Dask partition,
    a Spark split) keeps them, the slices' notes are added up, and the sum is given for the whole file
    (:meth:`give`), so that it is warned of as a whole read warns of it: once, with the whole file's
    figures, and of a JSON key only when no slice had a value for it."""

    #: Per role read from a key of a JSON text column (``--url-col properties.$current_url``): the key
    #: and its column when no event had a value for it, None when one had.
    json_keys: Mapping[str, tuple[str, str] | None] = dataclasses.field(default_factory=dict)
    #: The epoch numbers of the time column, counted per unit their size suggests.
    epoch_units: Mapping[str, int] = dataclasses.field(default_factory=dict)
    #: Of them, those of a read whose every time is a yyyymmdd date (:func:`date_number_count`).
    date_numbers: int = 0

    def __add__(self, other: ReadNotes) -> ReadNotes:
        keys = dict(self.json_keys)
        for role, unfound in other.json_keys.items():
            keys[role] = None if role in keys and keys[role] is None else unfound
        units = Counter(self.epoch_units)
        units.update(other.epoch_units)
        return ReadNotes(keys, dict(units), self.date_numbers + other.date_numbers)

    def give(self, name: str) -> None:
        """The warnings, for the file shown as ``name``."""
        for role, unfound in self.json_keys.items():
            if unfound is not None:
                given, text = unfound
                warnings.warn(
                    f"{name}: no event has a value for {given!r} ({S.COLUMN_FLAGS[role]}), a key of the "
                    f"JSON objects in its {text!r} column. Keys match exactly, case and punctuation "
                    "included: check the key's spelling.",
                    SessionizeWarning,
                    stacklevel=3,
                )
        numbers = sum(self.epoch_units.values())
        if numbers and self.date_numbers == numbers:
            warnings.warn(
                f"{name}: every timestamp is an 8-digit number such as 20240501, read as epoch seconds "
                "(in August 1970). If they are dates (yyyymmdd: GA4's event_date, a partition column), "
                "they cannot order a visit's events: name the column of event times with --time-col "
                "(GA4's event_timestamp, in microseconds), or write the times in ISO 8601.",
                SessionizeWarning,
                stacklevel=3,
            )
        mixed = describe_epoch_units(self.epoch_units)
        if mixed is not None:
            warnings.warn(
                f"{name}: epoch timestamps of several sizes, each read in the unit its size suggests "
                f"({mixed}). If they are all in one unit, give it with --time-unit s|ms|us|ns.",
                SessionizeWarning,
                stacklevel=3,
            )


@dataclass
class FileRead:
    """One file's valid events (canonical frame), its rejected rows and how many rows it had."""

    events: pl.DataFrame
    rejects: pl.DataFrame | None
    #: Data rows of the file: ``rows == events + rejects + filtered`` (before duplicates are dropped).
    rows: int
    #: Rows left out by ``--filter`` and ``--max-send-delay``.
    filtered: int = 0
    #: A slice's notes, for its file's warnings (a whole file's were given as it was read).
    notes: ReadNotes = dataclasses.field(default_factory=ReadNotes)


def read_stream(source: InputFile) -> bytes:
    """The whole of an input that can be read once (standard input, a named pipe or a device),
    gunzipped. bzip2, xz, zstd and ZIP are refused as they are in files."""
    if source.is_stdin:
        data = sys.stdin.buffer.read()
    else:
        try:
            with open(source.path, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            raise UnreadableInputError(f"{source.shown}: {exc.strerror or exc}.") from exc
    check_compressed_head(data[:10], source.shown, stream=True, fmt=source.format)
    if data.startswith(GZIP_MAGIC):
        try:
            return gzip.decompress(data)
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
            raise UnreadableInputError(_corrupt_gzip(source.shown, exc)) from exc
    return data


def _csv_source(source: InputFile, encoding: str) -> tuple[str | bytes, pl.DataFrame | None]:
    """A path for Polars to read directly, or the file's bytes, as UTF-8 either way; and the lines of a
    file in another ``--encoding`` that do not decode in it (:func:`decode_lines`: left empty in the
    text, so that the line numbers hold), None when there are none.

    What comes back is UTF-8 whatever ``--encoding`` says, and is parsed as such: the careful reader
    once decoded a latin-1 file's already decoded text again (``/café`` became ``/cafÃ©``, exit 0)
    and split a UTF-16 file's at the byte 0x0A (its header lost)."""
    if source.is_stream:
        data = read_stream(source)
    elif split_gz(source.path)[1]:
        data = _read_bytes_gz(source.path)
    elif is_utf8(encoding):
        return source.path, None
    else:
        with open(source.path, "rb") as handle:
            data = handle.read()
    if is_utf8(encoding):
        return data, None
    text, undecodable = decode_lines(data, encoding)
    if undecodable.height and undecodable.item(0, "source_row") == 1:
        # The header line, as a UTF-8 file's: its bytes that do not decode become U+FFFD.
        text = undecodable.item(0, "raw_line").encode("utf-8") + text
        undecodable = undecodable.slice(1)
    return text, (undecodable if undecodable.height else None)


def is_utf8(encoding: str) -> bool:
    return encoding.lower().replace("-", "").replace("_", "") in ("utf8", "utf8sig")


#: A quoted field may span at most this many lines, and this many bytes, in the careful reader: past
#: that, its opening line is an unbalanced quote (an attacker's lone quote must not swallow the file).
MAX_RECORD_LINES = 1000
MAX_RECORD_BYTES = 1 << 20
# Python's csv module refuses a field over 128 KiB ("field larger than field limit"), which the fast
# reader reads: a long valid value (a URL of 200 KB) would become a bad row on the careful path only.
csv.field_size_limit(max(csv.field_size_limit(), (1 << 31) - 1))


def _careful_csv(data: bytes, *, separator: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Parse a malformed CSV line by line: the rows that parse, and the others with line and reason.

    Only used when the fast reader fails. A line is read as Python's csv module reads it (as DuckDB
    and spreadsheets do): a quote inside or at the edge of an unquoted value (``12" pizza``,
    ``screen 12"``) is a character, also in a line with quoted fields. A quoted field may span lines (a
    user agent with a newline, as sessionize itself writes one): a line that ends inside a quoted field
    is joined with the lines up to the one where the csv module closes that field (any quote closes it,
    so the read stops at the next line with a quote), when that makes one record of the header's width
    within :data:`MAX_RECORD_LINES` lines and :data:`MAX_RECORD_BYTES` bytes; otherwise it is a bad
    quote on its own, and the next line is read as a record of its own. Broken quoting is a bad quote:
    a quoted field that never closes, or that a closing quote ends before more text (``"x"y``, which
    the csv module's strict mode refuses). ``data`` is UTF-8 (:func:`_csv_source`); a line that is not
    is rejected as undecodable.
    """
    raw_lines = data.split(b"\n")
    lines = [raw.rstrip(b"\r") for raw in raw_lines]
    header_text = lines[0].decode("utf-8", errors="replace").lstrip("\ufeff")
    try:
        # As the data lines: a "\r" inside the header is a character (see check_header).
        header = _csv_records(header_text, separator)[0] if header_text else [""]
    except csv.Error as exc:
        raise pl.exceptions.ComputeError(f"its header line is not valid CSV: {exc}") from exc
    # A line of whitespace is blank, but for the separator: a TSV line of tabs is a record.
    blank = b" \t\r\n\f\v".replace(separator.encode(), b"")
    good: list[list[str | int | None]] = []
    bad: list[tuple[int, str, str]] = []
    index = 1
    while index < len(lines):
        number, raw = index + 1, lines[index]
        index += 1
        if not raw.strip(blank):
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            bad.append((number, raw.decode("utf-8", errors="replace"), "undecodable_bytes"))
            continue
        if '"' in text and _ends_inside_quotes(text, separator):
            # A quoted field opens here and does not close on this line: a record over lines, up to the
            # line where the csv module closes it (not the next line with an odd number of quotes: a
            # quote in an unquoted value of these lines, `12"` or `sc"r`, changes the count).
            end = _record_end(lines, number - 1, separator)
            record = (
                None
                if end is None
                else _spanning_record(lines, number - 1, end, separator, len(header), raw=raw_lines)
            )
            if end is None or record is None:
                bad.append((number, text, "bad_quote"))
                continue
            good.append([*(value or None for value in record), number - 2])
            index = end + 1
            continue
        try:
            # Strictly: a quoted field followed by more text ("x"y) is broken quoting, not a value.
            fields = _csv_records(text, separator)[0]
        except csv.Error:
            bad.append((number, text, "bad_quote"))
            continue
        if len(fields) != len(header):
            bad.append((number, text, f"wrong_field_count ({len(fields)}, expected {len(header)})"))
        else:
            good.append([*(value or None for value in fields), number - 2])
    schema = {**{name: pl.String for name in header}, ROW: pl.Int64}
    rows = pl.DataFrame(good, schema=schema, orient="row") if good else pl.DataFrame(schema=schema)
    malformed = pl.DataFrame(
        bad, schema={"source_row": pl.Int64, "raw_line": pl.String, "reject_reason": pl.String}, orient="row"
    )
    return rows, malformed


#: Stands for a "\r" inside a line while the csv module reads it (see :func:`_csv_records`).
_CR_MARK = "\ue000"


def _csv_records(text: str, separator: str, *, strict: bool = True) -> list[list[str]]:
    """The records of ``text`` (lines split at "\n" only), strictly parsed unless not ``strict``. A "\r"
    inside a line is a character, as the fast reader reads it (the csv module would refuse it outside
    quotes)."""
    marked = "\r" in text and _CR_MARK not in text
    if marked:
        text = text.replace("\r", _CR_MARK)
    records = list(csv.reader(io.StringIO(text, newline="\n"), delimiter=separator, strict=strict))
    if marked:
        records = [[field.replace(_CR_MARK, "\r") for field in record] for record in records]
    return records


def _ends_inside_quotes(text: str, separator: str) -> bool:
    """Whether one line (no "\n"), read on its own as Python's csv module reads it, ends inside a quoted
    field: a quote opens a field and no quote after it on the line closes it, so that the record may
    go on over the next lines. (A line the module cannot read at all counts as such.)"""
    try:
        records = _csv_records(text + "\n", separator, strict=False)
    except csv.Error:
        return True
    # At the end of the text inside quotes, the module keeps the line's newline in the last field.
    return bool(records and records[-1]) and "\n" in records[-1][-1]


def _record_end(lines: list[bytes], first: int, separator: str) -> int | None:
    """The line where the record that starts at line ``first`` ends, as Python's csv module reads the
    lines from there (at most :data:`MAX_RECORD_LINES` lines and :data:`MAX_RECORD_BYTES` bytes, so that
    one lone quote costs a bounded read); None when its quoted field is still open after them."""

    def feed() -> Iterator[str]:
        budget = MAX_RECORD_BYTES
        for line in lines[first : first + MAX_RECORD_LINES]:
            budget -= len(line) + 1
            if budget < 0:
                return
            yield line.decode("utf-8", errors="replace").replace("\r", _CR_MARK) + "\n"

    reader = csv.reader(feed(), delimiter=separator, strict=False)
    try:
        next(reader)
    except (csv.Error, StopIteration):
        return None
    end = first + reader.line_num - 1
    return end if end > first else None


def _spanning_record(
    lines: list[bytes], first: int, last: int, separator: str, width: int | None, *, raw: list[bytes]
) -> list[str] | None:
    """The one record of ``width`` fields (any number when None) that lines ``first`` to ``last`` make
    together (a quoted field across lines), or None. ``lines`` are without their ``\r`` before the
    ``\n``, ``raw`` with it: the line breaks inside the quoted field are part of its value, a ``\r\n``
    (a Windows file's, a value written on Windows) as much as a ``\n``, as the fast reader keeps them;
    only the last line's ends the record."""
    if last >= len(lines) or last - first >= MAX_RECORD_LINES:
        return None
    if sum(len(line) + 1 for line in lines[first : last + 1]) > MAX_RECORD_BYTES:
        return None
    try:
        text = b"\n".join([*raw[first:last], lines[last]]).decode("utf-8")
        records = _csv_records(text, separator)
    except (UnicodeDecodeError, csv.Error):
        return None
    if len(records) != 1 or (width is not None and len(records[0]) != width):
        return None
    return records[0]


def complete_csv_records(data: bytes, *, separator: str, width: int | None) -> int:
    """How many bytes of ``data`` (whole CSV lines, without the header, from a record's start: a grown
    file's new lines) are complete records: all of them, or those before a record still being written.

    The lines join as the careful reader (:func:`_careful_csv`) joins them: a line that ends inside a
    quoted field opens a record, which ends on the line where Python's csv module closes that field,
    when the lines make one record of the header's ``width`` (any width when None) within
    :data:`MAX_RECORD_LINES` lines and :data:`MAX_RECORD_BYTES` bytes; else the line is a bad quote and
    the next line starts a record. A quote in or at the edge of an unquoted value (``/s?q="x``,
    ``screen 12"``) opens nothing, nor does an escaped quote (``"a"",b"``), whatever the number of quotes
    on the line (``sc"r,"Mozilla`` opens one); a line's ``\r`` before its ``\n`` is no part of it. A
    record still open after the last line waits with the lines after it, unless so many lines or bytes
    follow its first line that no line could close it within the bounds: then it is a bad quote now, so
    that one lone quote cannot hold a live log back for ever. The csv module reads each line once or
    twice (a bad quote's lines again from the line after it), one line at a time: linear in the data.
    """
    if b'"' not in data:
        return len(data)
    raw = data.split(b"\n")
    lines = [line.rstrip(b"\r") for line in raw]
    count = len(lines) - (lines[-1] == b"")
    at = 0
    while (first := _first_record_over_lines(lines, at, separator)) is not None:
        end = _record_end(lines, first, separator)
        if end is not None and end >= count:
            # Still open after the last complete line: being written, unless past the bounds.
            if (
                count - first < MAX_RECORD_LINES
                and sum(len(line) + 1 for line in lines[first:]) < MAX_RECORD_BYTES
            ):
                return sum(len(line) + 1 for line in raw[:first])
            at = first + 1
            continue
        record = None if end is None else _spanning_record(lines, first, end, separator, width, raw=raw)
        # Joined: the line after the record is read next; else this line is a bad quote, and the next
        # line starts a record of its own.
        at = end + 1 if end is not None and record is not None else first + 1
    return len(data)


def _first_record_over_lines(lines: list[bytes], at: int, separator: str) -> int | None:
    """The first line from ``at`` that opens a record over lines, as the csv module reads the lines
    from ``at`` (each line before it is a record of its own), or None."""

    def feed() -> Iterator[str]:
        for index in range(at, len(lines)):
            yield lines[index].decode("utf-8", errors="replace").replace("\r", _CR_MARK) + "\n"
        yield "\n"  # one more (blank) line, which a record still open at the end takes in: over lines too

    reader = csv.reader(feed(), delimiter=separator, strict=False)
    before = 0
    for _ in reader:
        if reader.line_num - before > 1:
            return at + before
        before = reader.line_num
    return None


def header_width(line: bytes, separator: str) -> int | None:
    """The number of fields of a CSV header line (as the careful reader reads it), or None."""
    text = line.decode("utf-8", errors="replace").lstrip("\ufeff").rstrip("\n").rstrip("\r")
    try:
        return len(_csv_records(text, separator)[0]) if text else 1
    except csv.Error:
        return None


def _scan_log(source: InputFile, options: ReadOptions) -> tuple[pl.LazyFrame, pl.DataFrame | None]:
    """Parse an Apache/nginx access log (``.log`` files: combined, common or vhost_combined, told by their
    lines)."""
    data: str | bytes = read_stream(source) if source.is_stream else source.path
    undecodable = None
    if not is_utf8(options.encoding):
        # An encoding the user gave is the log's, as a CSV's (UTF-16 text is valid UTF-8 with a NUL beside
        # each letter: it was read as UTF-8, every line rejected, review 57 F4).
        raw = data if isinstance(data, bytes) else _read_maybe_gz(data)
        text_bytes, undecodable = decode_lines(raw, options.encoding)
        lines = pl.read_lines(text_bytes, row_index_name=ROW)
        return _parsed_log(source, options, lines, undecodable)
    check_not_utf16(source, data if isinstance(data, bytes) else _head_of(data))
    try:
        # read_lines keeps blank lines (so line numbers hold) and gunzips .log.gz by its magic bytes.
        lines = pl.read_lines(data, row_index_name=ROW)
    except pl.exceptions.ComputeError:
        # Bytes that are not UTF-8 (servers escape them as \xHH, so this is rare): decoded as --encoding
        # says, the lines that do not decode in it rejected, as a CSV's are.
        raw = data if isinstance(data, bytes) else _read_maybe_gz(data)
        text_bytes, undecodable = decode_lines(raw, options.encoding)
        lines = pl.read_lines(text_bytes, row_index_name=ROW)
    return _parsed_log(source, options, lines, undecodable)


def _parsed_log(
    source: InputFile, options: ReadOptions, lines: pl.DataFrame, undecodable: pl.DataFrame | None
) -> tuple[pl.LazyFrame, pl.DataFrame | None]:
    text = lines.get_column("line")
    log_format = _log_format(source, text.filter(text.str.contains(r"\S")).head(20).to_list())
    warn_of_nul_runs(source, leading_nul_runs(lines))
    parsed, malformed = parse_log_lines(lines, log_format, options)
    if undecodable is not None and undecodable.height:
        malformed = pl.concat([malformed, undecodable]).sort("source_row")
    return parsed.lazy(), malformed


#: How many first bytes of a text file (a log, a CSV) tell whether it is UTF-16 text.
_UTF16_SAMPLE = 4096


def _head_of(path: str) -> bytes:
    """The first bytes of a text file (gunzipped when its name says ``.gz``); none when unreadable (the
    read that follows names the error)."""
    try:
        with _open_bytes(path) as handle:
            return handle.read(_UTF16_SAMPLE)
    except (OSError, EOFError, zlib.error):
        return b""


def looks_like_utf16(head: bytes) -> bool:
    """Whether the first bytes of a text file (of its first :data:`_UTF16_SAMPLE`, or of its first line)
    are UTF-16: its byte order mark, or a NUL beside most bytes that are not (ASCII text in UTF-16 without
    a byte order mark, little- or big-endian). A run of NULs alone (a log's copytruncate hole) is not, nor
    binary data with NULs here and there (zero-padded numbers): that is not text at all.

    The one definition for every reader: an access log's first bytes, a CSV's (and its header line as
    read, for the readers that are handed rows: ``--buckets`` windows, Spark's splits), and Spark's
    choice not to split such a file."""
    head = head[:_UTF16_SAMPLE]
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return True
    sample = head[: len(head) // 2 * 2]
    if len(sample) < 4:  # two code units: a CSV header "a,b" is 6 bytes
        return False
    even, odd = sample[0::2], sample[1::2]
    for nuls, letters in ((odd, even), (even, odd)):
        if nuls.count(0) >= 0.9 * len(nuls) and letters.count(0) <= 0.1 * len(letters):
            return True
    return False


def check_not_utf16(source: InputFile, head: bytes) -> None:
    """Refuse a text file read as UTF-8 whose first bytes are UTF-16 (:func:`looks_like_utf16`): each line
    of a log was rejected as ``nul_byte_in_line`` and the NULs called a copytruncate hole (review 57 F4); a
    CSV's header names held NULs, or its byte order mark failed the read."""
    if looks_like_utf16(head):
        if source.format == "ndjson":
            raise UnreadableInputError(
                f"{source.shown}: the file looks like UTF-16 text, and JSON lines are UTF-8 (--encoding is "
                f"for CSV, TSV and logs). {_to_utf8(source.shown, 'UTF-16')}"
            )
        raise UnreadableInputError(
            f"{source.shown}: the file looks like UTF-16 text. Give --encoding utf-16 (or utf-16-le, "
            "utf-16-be) and run again."
        )


def _to_utf8(name: str, encoding: str) -> str:
    """The advice to convert an NDJSON file in ``encoding`` to UTF-8, into a new file beside it."""
    stem = name[: -len(".ndjson")] if name.endswith(".ndjson") else name
    return f"Convert it (iconv -f {encoding} -t UTF-8 {name} > {stem}.utf8.ndjson) and run the new file."


#: ``reject_reason`` of a line (a CSV's, a log's) with bytes that do not decode in ``--encoding``.
UNDECODABLE_REASON = "undecodable_bytes"
#: The malformed rows of a text file: the 1-based line, the line as read and why.
MALFORMED_LOG_SCHEMA = {"source_row": pl.Int64, "raw_line": pl.String, "reject_reason": pl.String}


def decode_lines(raw: bytes, encoding: str) -> tuple[bytes, pl.DataFrame]:
    """The text of ``raw``, lines in ``encoding``, as UTF-8 with each line that does not decode in it
    left empty (so that the line numbers hold), and those lines as malformed rows: ``source_row`` (1-based),
    ``raw_line`` (the line decoded with U+FFFD for the bytes that do not decode) and ``reject_reason``
    (``undecodable_bytes``).

    Lines are told apart in the decoded text, never by the byte ``\\n`` in ``raw``: in UTF-16 and UTF-32 a
    line break is two or four bytes, and the byte 0x0A is also half of other characters (``上``, U+4E0A, is
    ``0A 4E`` in UTF-16-LE), so counting that byte numbered the lines after it wrongly and cut characters
    in two. The whole text is decoded at C speed; only a file with bytes that do not decode is decoded
    again with each bad sequence marked (:data:`_UNDECODABLE`), and only its bad lines are looked at one by
    one: linear in the size of the file, however many lines are bad."""
    codec = "utf-8" if is_utf8(encoding) else encoding
    try:
        codecs.lookup(codec)
    except LookupError:
        raise UsageError(
            f"--encoding {encoding!r} is not an encoding Python knows (try latin-1, cp1252)."
        ) from None
    with contextlib.suppress(UnicodeError):  # bytes that do not decode; or decode to what UTF-8 cannot hold
        return raw.decode(codec).encode("utf-8"), pl.DataFrame(schema=MALFORMED_LOG_SCHEMA)
    text = raw.decode(codec, errors=_UNDECODABLE)
    kept: list[str] = []
    bad: list[tuple[int, str, str]] = []
    # Where the text not yet kept starts (a line's start, or the end of the bad line before), and its line.
    position = line = 0
    while (found := _MARKED.search(text, position)) is not None:
        newline = text.rfind("\n", position, found.start())
        start = position if newline < 0 else newline + 1
        end = text.find("\n", found.start())
        end = len(text) if end < 0 else end
        line += text.count("\n", position, start)
        kept.append(text[position:start])
        shown = _MARKED.sub("\ufffd", text[start:end]).removesuffix("\r")
        bad.append((line + 1, shown, UNDECODABLE_REASON))
        position = end  # its line end is kept with the rest: the line stays, empty
    kept.append(text[position:])
    rejected = pl.DataFrame(bad, schema=MALFORMED_LOG_SCHEMA, orient="row")
    return "".join(kept).encode("utf-8"), rejected


#: The error handler that marks each sequence of bytes that does not decode with a lone surrogate, which no
#: strict decoder gives for text (and which UTF-8 cannot hold, so text that a codec decodes to one, UTF-7's
#: ``+2AA-``, is marked alike).
_UNDECODABLE = "sessionize-undecodable"
_MARKED = re.compile("[\ud800-\udfff]")


def _mark_undecodable(exc: UnicodeError) -> tuple[str, int]:
    if isinstance(exc, UnicodeDecodeError):
        return "\udcff", exc.end
    raise exc


codecs.register_error(_UNDECODABLE, _mark_undecodable)


def warn_of_nul_runs(source: InputFile, runs: NulRuns) -> None:
    """Warn that runs of NUL bytes before lines of a log were skipped (:class:`NulRuns`)."""
    if runs.first_row is None:
        return
    others = f" and {runs.lines - 1:,} other line(s)" if runs.lines > 1 else ""
    warnings.warn(
        f"{source.shown}: skipped {runs.nul_bytes:,} NUL byte(s) before {where_row(source, runs.first_row)}"
        f"{others}: the hole a crash, or logrotate's copytruncate, leaves in a log being written, not data. "
        "The lines after them were read as written.",
        SessionizeWarning,
        stacklevel=3,
    )


def parse_log_lines(
    lines: pl.DataFrame, log_format: str, options: ReadOptions
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Access log lines (``line``, ``_row``) parsed with the run's options: the requests and the
    malformed lines (:func:`sessionize.accesslog.parse_access_log`)."""
    return parse_access_log(
        lines,
        log_format=log_format,
        asset_pattern=options.asset_pattern,
        visitor_key=options.visitor_key,
        anonymize_ip=options.anonymize_ip,
        visitor_secret=options.visitor_secret,
    )


def _log_format(source: InputFile, first: list[str]) -> str:
    """``combined`` or ``common``: as given, or told by the first lines of a ``.log`` file (``first``:
    up to 20 lines that are not blank)."""
    if source.format != "log":
        return source.format
    if not first:
        # Empty, or blank lines only (the fresh access.log logrotate creates): no events, in any format.
        return "combined"
    detected = detect_log_format(first)
    if detected is None:
        raise UnknownFormatError(
            f"{source.shown}: the first lines are not in Apache/nginx combined, common or vhost_combined log "
            "format. Give the format with --input-format combined|common|vhost_combined (or csv, ndjson, "
            "...)."
        )
    return detected


def _read_maybe_gz(path: str) -> bytes:
    return _read_bytes_gz(path) if split_gz(path)[1] else Path(path).read_bytes()


#: A slice of a file's data rows: (first row, number of rows). See :func:`iter_reads`.
Window = tuple[int, int]


def _without_blank_rows(frame: pl.DataFrame, records: pl.Series | None = None) -> pl.DataFrame:
    """A blank line (often the last one of a hand-edited file) is not an event; the rows ``records``
    names (``_row``: lines of separators only, records of empty fields) are kept."""
    blank = pl.all_horizontal(pl.exclude(ROW).is_null())
    if records is not None and records.len():
        blank = blank & ~pl.col(ROW).cast(pl.Int64).is_in(records.implode())
    return frame.filter(~blank)


def _batched(batches: Callable[[], Iterator[pl.DataFrame]], chunk_rows: int) -> Iterator[pl.DataFrame]:
    """The batches of a streaming scan, joined into windows of at least ``chunk_rows`` rows."""
    pending: list[pl.DataFrame] = []
    size = 0
    for batch in batches():
        pending.append(batch)
        size += batch.height
        if size >= chunk_rows:
            yield pl.concat(pending)
            pending, size = [], 0
    if pending:
        yield pl.concat(pending)


def _checked_windows(
    batches: Callable[[], Iterator[pl.DataFrame]], chunk_rows: int
) -> Iterator[pl.DataFrame] | None:
    """Windows of a streaming scan after a first pass that only checks that the whole file parses;
    None when it does not (the file is then read whole, as in memory, so that the same rows are
    rejected or the same error is raised)."""
    try:
        for _ in batches():
            pass
    except pl.exceptions.PolarsError:
        return None
    return _batched(batches, chunk_rows)


#: A quoted CSV field (quotes inside doubled), removed before the separators of a line are counted.
_QUOTED_FIELD = r'"(?:[^"]|"")*"'


def parse_csv(
    data: str | bytes, *, separator: str, careful: bool = False
) -> tuple[pl.DataFrame, pl.DataFrame | None, bool]:
    """A CSV (a path to UTF-8 text, or the bytes of a header line then data lines) as :func:`read_file`
    reads it: every column as text, ``_row`` 0 for the first data line, blank rows dropped; line by line
    (:func:`_careful_csv`, which sets aside malformed lines) when ``careful`` or when the fast parser
    cannot (a bad quote, a row of another number of fields). Returns the rows, the malformed lines and
    whether the careful parser read them (Spark's split CSV reading: when one slice needs it, every
    slice is read so, as a whole file is)."""
    if not careful:
        try:
            frame = pl.read_csv(data, separator=separator, infer_schema=False, encoding="utf8", glob=False)
            frame = frame.rename(_header_as_written(data, separator, frame.columns))
            last = frame.columns[-1] if frame.width else None
            empty_records = None
            # A short row reads as nulls at its end: only then can the file hold one.
            if last is not None and frame.get_column(last).null_count():
                ragged, empty_records = _csv_shape(data, separator, frame.width)
                if ragged:
                    raise pl.exceptions.ComputeError("rows with too few fields")
            if _records_merged(data, frame.height, separator):
                raise pl.exceptions.ComputeError("records read as one")
            return _without_blank_rows(frame.with_row_index(ROW), empty_records), None, False
        except pl.exceptions.ComputeError:
            pass
    if isinstance(data, str):
        with open(data, "rb") as handle:
            data = handle.read()
    rows, malformed = _careful_csv(data, separator=separator)
    return rows, malformed, True


_BLOCK = 1 << 26


def _records_merged(data: str | bytes, rows: int, separator: str) -> bool:
    """Whether the fast reader's ``rows`` records may hold two or more of the file's: Polars takes a
    quote inside an unquoted value (``sc"r``) for the start of a quoted section, which runs on to a
    quote on a later line, so that the lines between become one record, of the header's width often
    enough that nothing else notices (review 46: a user's event lost, another's time taken, exit 0).
    Such a record spans lines. Files without a quote (a scan of the bytes: 0.12 s for 1.4 GB) and
    files whose records are each one line (the lines counted) are fine; otherwise the records must be
    as many as Python's csv module reads (the careful reader's reading)."""
    if isinstance(data, bytes):
        if b'"' not in data:
            return False
        newlines, ends = data.count(b"\n"), data.endswith(b"\n")
    else:
        # A block mapped at a time: the pages read count in the process's resident memory while mapped.
        with open(data, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            blocks = range(0, size, _BLOCK)
            if not any(_in_block(handle, at, size, lambda block: block.find(b'"') >= 0) for at in blocks):
                return False
            newlines = sum(_in_block(handle, at, size, lambda block: block[:].count(b"\n")) for at in blocks)
            handle.seek(size - 1)
            ends = handle.read(1) == b"\n"
    if newlines + (0 if ends else 1) <= rows + 1:
        return False
    try:
        return sum(1 for _ in _module_records(data, separator)) - 1 != rows
    except csv.Error:
        return True


#: How much of a CSV's head :func:`_header_as_written` reads for its header record.
_HEADER_BYTES = 1 << 20


def _header_as_written(data: str | bytes, separator: str, names: Sequence[str]) -> dict[str, str]:
    """The renames that make the fast reader's column ``names`` the header's: Polars keeps the doubled
    quotes of a quoted name (``"my ""odd"" col"`` is read as ``my ""odd"" col``), so that a flag naming
    the column did not find it and the rejects file's header doubled them again. The header record as
    Python's csv module reads it (from the file's first MiB), for the names that hold a quote only."""
    if not any('"' in name for name in names):
        return {}
    if isinstance(data, str):
        with open(data, "rb") as handle:
            head = handle.read(_HEADER_BYTES)
    else:
        head = data[:_HEADER_BYTES]
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff")
    try:
        record = next(csv.reader(io.StringIO(text, newline=""), delimiter=separator), None)
    except csv.Error:
        return {}
    if record is None or len(record) != len(names):
        return {}
    renames = {name: written for name, written in zip(names, record, strict=True) if '"' in name}
    kept = [renames.get(name, name) for name in names]
    return renames if len(set(kept)) == len(kept) else {}


def _module_records(data: str | bytes, separator: str, *, newline: str | None = "") -> Iterator[list[str]]:
    """The records of a whole CSV (a path, or its bytes) as Python's csv module reads them, header first
    (``newline`` as :class:`io.StringIO` takes it)."""
    if isinstance(data, str):
        with open(data, "rb") as handle:
            data = handle.read()
    text = data.decode("utf-8", errors="replace").lstrip("\ufeff")
    return csv.reader(io.StringIO(text, newline=newline), delimiter=separator)


def _in_block(handle: IO[bytes], at: int, size: int, look: Callable[[mmap.mmap], _T]) -> _T:
    """``look`` at the block of the file from ``at`` (a multiple of :data:`_BLOCK`), mapped, not read."""
    with mmap.mmap(handle.fileno(), min(_BLOCK, size - at), offset=at, access=mmap.ACCESS_READ) as block:
        return look(block)


def _csv_shape(data: str | bytes, separator: str, width: int) -> tuple[bool, pl.Series | None]:
    """Whether a CSV has a data row with another number of fields than its header's ``width``, and
    the data rows (``_row``) that are lines of separators only, if any.

    Polars reads a row with too few fields as nulls, silently: the lines are checked here, in one
    streaming pass (separators counted outside quoted fields). A file whose quoted fields span lines
    is checked record by record by Python's csv module instead (rare, and only when the fast check
    cannot tell).

    A line of separators only (",,") is a record of empty fields (rejected for its empty user id),
    which the fast reader reads as a row of nulls, as it reads a blank line: its row number tells
    them apart while every record is one line; when records span lines, such a file is read by the
    careful reader."""
    lines = pl.scan_lines(data) if isinstance(data, str) else pl.read_lines(data).lazy()
    line = pl.col("line")
    body = lines.with_row_index("_line").filter(pl.col("_line") > 0)
    # Most files quote nothing: separators are counted as they are. A blank line or a lone "\r"
    # counts as ragged here: the careful reader then skips it (a false alarm only costs time).
    plain = line.str.count_matches(separator, literal=True) + 1
    present = line.str.len_bytes() > 0
    bare = line.str.replace_all(separator, "", literal=True).str.strip_chars().str.len_bytes() == 0
    # Of the header's width: a shorter or longer one is a wrong field count, as the careful reader says.
    separators_only = present & bare & (plain > 1) & (plain == width)
    first = body.select(
        line.str.contains('"', literal=True).any().alias("quotes"),
        ((plain != width) & present).any().alias("ragged"),
        # Their data rows, in the same pass (usually none).
        (pl.col("_line") - 1).cast(pl.Int64).filter(separators_only).implode().alias("empty_rows"),
    ).collect(engine="streaming")
    if first.height == 0:
        return False, None
    quotes, ragged = first.row(0)[:2]
    rows: pl.Series = first.get_column("empty_rows")[0]
    empty_record = bool(rows.len())
    empty_records = rows if empty_record else None
    if not quotes:
        return bool(ragged), empty_records
    text = line.str.strip_chars_end("\r")
    fields = text.str.replace_all(_QUOTED_FIELD, "").str.count_matches(separator, literal=True) + 1
    checked = (
        body.filter(text.str.contains(r"\S"))
        .select(
            (text.str.count_matches('"', literal=True) % 2 == 1).any().alias("spans_lines"),
            (fields != width).any().alias("ragged"),
        )
        .collect(engine="streaming")
    )
    spans_lines, ragged = checked.row(0) if checked.height else (False, False)
    if not spans_lines:
        return bool(ragged), empty_records
    if empty_record:
        return True, None  # rows are not lines: the careful reader tells the records apart
    records = _module_records(data, separator, newline=None)
    try:
        next(records, None)
        return any(len(record) != width for record in records if record), None
    except csv.Error:
        # A lone "\r" in a field, say: the careful reader, line by line, sets such a row aside.
        return True, None


def _csv_windows(path: str, separator: str, chunk_rows: int) -> Iterator[pl.DataFrame] | None:
    """A CSV file's raw rows (all text, with ``_row``), ``chunk_rows`` at a time (see
    :func:`_checked_windows`); None for a file with ragged rows (read whole, carefully)."""
    try:
        header = pl.scan_csv(path, separator=separator, infer_schema=False, n_rows=0, glob=False)
        names = header.collect_schema().names()
        ragged, empty_records = _csv_shape(path, separator, len(names))
        renames = _header_as_written(path, separator, names)
    except pl.exceptions.PolarsError:
        # Bytes that do not decode, say: read whole, as in memory, which rejects that row (or names it).
        return None
    if ragged:
        return None

    def batches() -> Iterator[pl.DataFrame]:
        scan = pl.scan_csv(path, separator=separator, infer_schema=False, glob=False).rename(renames)
        yield from scan.with_row_index(ROW).collect_batches(
            chunk_size=min(chunk_rows, 100_000), engine="streaming"
        )

    # A first pass checks that the whole file parses (else it is read whole, as in memory) and counts
    # its records (which must not hold two of the file's: see _records_merged).
    rows = 0
    try:
        for batch in batches():
            rows += batch.height
    except pl.exceptions.PolarsError:
        return None
    if _records_merged(path, rows, separator):
        return None
    return (_without_blank_rows(window, empty_records) for window in _batched(batches, chunk_rows))


#: The roles whose columns are identifiers: text, however a JSON file writes them.
ID_ROLES = (S.USER, S.CLIENT_SESSION, S.EVENT_ID, S.STITCH, S.PAGE_VIEW_ID, S.USER_FALLBACK)


def _leaf_paths(schema: pl.Schema) -> dict[str, tuple[str, ...]]:
    """The columns :func:`flatten_structs` makes of a frame of ``schema``, each with its path in it."""
    leaves: list[tuple[str, tuple[str, ...]]] = []

    def walk(path: tuple[str, ...], dtype: object) -> None:
        if isinstance(dtype, pl.Struct):
            for field in dtype.fields:
                walk((*path, field.name), field.dtype)
        else:
            leaves.append(("_".join(path), path))

    for name, dtype in schema.items():
        walk((name,), dtype)
    if len({name for name, _ in leaves}) != len(leaves):
        return {name: (name,) for name in schema.names()}  # flattening would clash: not flattened
    return dict(leaves)


def _as_text_at(dtype: PolarsDataType, path: Sequence[str]) -> PolarsDataType:
    """``dtype`` with the value at ``path`` (the fields of nested objects) read as text."""
    if not path:
        return pl.String()
    assert isinstance(dtype, pl.Struct)
    return pl.Struct(
        {f.name: _as_text_at(f.dtype, path[1:]) if f.name == path[0] else f.dtype for f in dtype.fields}
    )


def ids_as_text(schema: pl.Schema, options: ReadOptions) -> tuple[pl.Schema, list[str]]:
    """An NDJSON file's inferred ``schema`` with its id fields' numbers read as text, and the columns
    (as flattened) that are.

    Polars infers one type for a field from every line: integers with one float among them are all
    floats, and ids beyond 2**53 (Snowflake's, Twitter's: 64-bit) lost their last digits, so that
    1234567890123456789 and 1234567890123456790 were one user, "1.2345678901234568e+18". Read as text,
    Polars writes an integer's digits exactly, whatever its size, and a fraction or exponent as the
    shortest text of its double (``1.5``; ``7.0`` and ``7e0`` as ``7``, as a whole float id always was).
    The id columns are found from the file's names as the run finds them (flags, preset, aliases); a
    file whose columns are not found is left as it is (its read names what is missing). Only numbers
    change: a field of text already is text, and one of objects or true/false is not an id.

    The time field too, when its numbers were inferred as floats: epoch nanoseconds (beyond 2**53) with
    one float among them lost up to 128 ns each, and were rounded to the microsecond where a file of
    integers cuts the nanoseconds, so that a user's events were split or joined by another user's line
    (review of stop 52). As text, the integers are read exactly and the fractions as before."""
    changed: list[str] = []
    types: dict[str, PolarsDataType] = dict(schema)
    for column, (path, dtype) in _id_leaves(schema, options).items():
        if dtype.is_integer() or dtype.is_float():
            types[path[0]] = _as_text_at(types[path[0]], path[1:])
            changed.append(column)
    timed = False
    for _, (path, dtype) in _id_leaves(schema, options, roles=(S.TIME,)).items():
        if dtype.is_float():
            types[path[0]] = _as_text_at(types[path[0]], path[1:])
            timed = True
    return (pl.Schema(types), changed) if changed or timed else (schema, [])


def _id_leaves(
    schema: pl.Schema, options: ReadOptions, *, roles: Sequence[str] = ID_ROLES
) -> dict[str, tuple[tuple[str, ...], Any]]:
    """The id columns (as flattened, see :data:`ID_ROLES`; or those of other ``roles``) of a frame of
    ``schema``, each with its path and type."""
    paths = _leaf_paths(schema)
    found = {}
    for column in _id_columns(list(paths), options, roles):
        if column in paths:
            dtype: Any = schema[paths[column][0]]
            for key in paths[column][1:]:
                dtype = next(f.dtype for f in dtype.fields if f.name == key)
            found[column] = (paths[column], dtype)
    return found


def _id_columns(available: Sequence[str], options: ReadOptions, roles: Sequence[str] = ID_ROLES) -> list[str]:
    """The columns of ``available`` that the run reads ids (or the other ``roles``) from (see
    :data:`ID_ROLES`); none when the columns it needs are not found (the read names what is missing)."""
    try:
        columns = options.resolve_columns(available)
    except MissingColumnError:
        return []
    return list(dict.fromkeys(c for role in roles if (c := getattr(columns, role)) is not None))


def text_ids(schema: pl.Schema, options: ReadOptions) -> list[str]:
    """The id columns (as flattened, see :data:`ID_ROLES`) that ``schema`` reads as text: those
    :func:`only_numbers` guards."""
    return [column for column, (_, dtype) in _id_leaves(schema, options).items() if dtype == pl.String]


def only_numbers(frame: pl.LazyFrame, columns: Sequence[str]) -> pl.LazyFrame:
    """``frame`` whose text ``columns`` (its ids: :func:`text_ids`) fail to read when one holds ``true``
    or ``false``, so that the file is read line by line (:func:`_careful_ndjson`), where a line whose
    id is a JSON boolean is rejected (bad_json_value) and one whose id is the text ``"true"`` is read.
    Polars makes a boolean text in a field of text (``"a"``, ``true``: the user "true"), and a number
    field of numbers and a boolean failed to read already; a tracker that sends ``false`` for every
    anonymous visitor made them one user, and ``true`` event ids dropped events as duplicates (review
    53)."""
    checks = [
        pl.when(pl.col(name).is_in(["true", "false"]))
        .then(pl.col(name))
        .otherwise(pl.lit("0"))
        .cast(pl.Int8, strict=True)
        for name in columns
    ]
    return frame.with_columns(
        pl.when(check == 0).then(pl.col(name)).alias(name)
        for name, check in zip(columns, checks, strict=True)
    )


def ndjson_schema(inferred: pl.Schema, options: ReadOptions) -> tuple[pl.Schema, list[str], list[str]]:
    """The schema an NDJSON file is read with, from the one Polars inferred from every line: the objects
    too wide to flatten with only the leaves the run can use (:func:`pruned_schema`; the objects given
    third), then the id fields' numbers as text (:func:`ids_as_text`, the columns given second)."""
    pruned, wide = pruned_schema(inferred, options)
    return (*ids_as_text(pruned, options), wide)


def pruned_schema(inferred: pl.Schema, options: ReadOptions) -> tuple[pl.Schema, list[str]]:
    """``inferred`` with the objects too wide to flatten (:func:`wide_objects`, given second) cut to the
    leaves the run can use."""
    wide = wide_objects(inferred)
    if not wide:
        return inferred, []
    keys = {S.name_key(name) for name in _names_read(options)}
    types: dict[str, PolarsDataType] = {}
    for name, dtype in inferred.items():
        kept = _pruned(dtype, (name,), keys) if name in wide else dtype
        if kept is not None:
            types[name] = kept
    return pl.Schema(types), wide


def _ndjson_windows(path: str, chunk_rows: int, options: ReadOptions) -> Iterator[pl.DataFrame] | None:
    """An NDJSON file's rows, ``chunk_rows`` at a time, with the schema inferred from every line as when
    it is read whole (:func:`ndjson_schema`)."""

    def batches() -> Iterator[pl.DataFrame]:
        scan = only_numbers(flatten_structs(pl.scan_ndjson(path, schema=schema)), guarded)
        flat = scan.with_row_index(ROW)
        yield from flat.collect_batches(chunk_size=min(chunk_rows, 100_000), engine="streaming")

    deep, lone_surrogates = prescan_ndjson(path)
    if deep or lone_surrogates:
        # Read whole, as in memory: line by line where the deep line is rejected; with its lone
        # surrogate escapes replaced (Polars reads the file it is given).
        return None
    try:
        inferred = infer_ndjson_schema(path)
    except pl.exceptions.PolarsError:
        return None  # read whole, line by line, as in memory: the lines it cannot take are rejected
    schema = ndjson_schema(inferred, options)[0]
    guarded = text_ids(schema, options)
    if any(_wide_integer(dtype) for dtype in schema.values()):
        # An integer beyond 64 bits (read as Int128): the file is read whole, line by line, as in
        # memory, where that line is rejected (bad_json_value). (No line nests deeper than the limit
        # here, so the walk for them is short.)
        return None
    return _checked_windows(batches, chunk_rows)


def _wide_integer(dtype: Any) -> bool:
    """Whether ``dtype`` (a Polars type or type class) holds an integer wider than 64 bits."""
    if isinstance(dtype, pl.Struct):
        return any(_wide_integer(field.dtype) for field in dtype.fields)
    if isinstance(dtype, pl.List | pl.Array):
        return _wide_integer(dtype.inner)
    return dtype in (pl.Int128, pl.UInt128)


def _log_windows(
    source: InputFile, options: ReadOptions, chunk_rows: int, path: str | None = None
) -> Iterator[tuple[pl.DataFrame, pl.DataFrame]] | None:
    """An access log's parsed requests and malformed lines, ``chunk_rows`` lines at a time (a
    ``.log.gz`` is decompressed as it streams); None when its bytes are not UTF-8. ``path``: the log
    decoded from ``--encoding`` into UTF-8 (see :func:`_decoded_copy`)."""
    text_path = source.path if path is None else path
    if path is None:
        check_not_utf16(source, _head_of(source.path))

    def batches() -> Iterator[pl.DataFrame]:
        scan = pl.scan_lines(text_path, row_index_name=ROW)
        yield from scan.collect_batches(chunk_size=min(chunk_rows, 100_000), engine="streaming")

    windows = _checked_windows(batches, chunk_rows)
    if windows is None:
        return None
    first = pl.scan_lines(text_path).filter(pl.col("line").str.contains(r"\S")).head(20)
    log_format = _log_format(source, first.collect(engine="streaming").get_column("line").to_list())

    def parsed(windows: Iterator[pl.DataFrame]) -> Iterator[tuple[pl.DataFrame, pl.DataFrame]]:
        runs = NulRuns()
        for window in windows:
            runs += leading_nul_runs(window)
            yield parse_log_lines(window, log_format, options)
        warn_of_nul_runs(source, runs)  # once for the file, as when it is read whole

    return parsed(windows)


def _enriched_windows(
    source: InputFile, chunk_rows: int
) -> Iterator[tuple[pl.DataFrame, pl.DataFrame]] | None:
    """A Snowplow enriched TSV's events and malformed lines, ``chunk_rows`` lines at a time (a
    ``.tsv.gz`` is decompressed as it streams); None when its bytes are not UTF-8."""

    def batches() -> Iterator[pl.DataFrame]:
        scan = pl.scan_lines(source.path, row_index_name=ROW)
        yield from scan.collect_batches(chunk_size=min(chunk_rows, 100_000), engine="streaming")

    windows = _checked_windows(batches, chunk_rows)
    return None if windows is None else (parse_enriched(window) for window in windows)


def _decoded_copy(source: InputFile, options: ReadOptions, scratch: Path) -> str | None:
    """A gzipped or non-UTF-8 text file as plain UTF-8 in ``scratch``, streamed so that memory stays
    bounded; None when its bytes do not decode (it is then read whole, as in memory, so that the
    same rows are rejected). NDJSON is UTF-8 whatever ``--encoding`` says, as when read whole."""
    compressed = split_gz(source.path)[1]
    as_is = source.format == "ndjson" or is_utf8(options.encoding)
    try:
        decoder = None if as_is else codecs.getincrementaldecoder(options.encoding)()
    except LookupError:
        raise UsageError(
            f"--encoding {options.encoding!r} is not an encoding Python knows (try latin-1, cp1252)."
        ) from None
    fd, name = tempfile.mkstemp(dir=scratch, prefix="input-", suffix=".txt")
    try:
        with os.fdopen(fd, "wb") as copy, (gzip.open if compressed else open)(source.path, "rb") as raw:
            if source.format == "ndjson" and raw.read(len(codecs.BOM_UTF8)) != codecs.BOM_UTF8:
                raw.seek(0)  # NDJSON's byte order mark is left out; CSV's readers skip it themselves
            while block := raw.read(1 << 20):
                copy.write(block if decoder is None else decoder.decode(block).encode("utf-8"))
            if decoder is not None:
                copy.write(decoder.decode(b"", final=True).encode("utf-8"))
    except UnicodeError:  # UnicodeDecodeError; and utf-16's "stream does not start with BOM", streamed only
        Path(name).unlink(missing_ok=True)
        return None
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        Path(name).unlink(missing_ok=True)
        raise UnreadableInputError(_corrupt_gzip(source.path, exc)) from exc
    except OSError as exc:
        Path(name).unlink(missing_ok=True)
        if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            raise OutputError(temp_dir_full(scratch, exc)) from exc
        raise
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return name


def temp_dir_full(directory: Path | str, exc: BaseException) -> str:
    """The message for temporary files that do not fit where they are written."""
    return (
        f"Cannot write temporary files to {directory}: {getattr(exc, 'strerror', None) or exc}. "
        "Free space there, or give a directory with room with --temp-dir."
    )


def _scan(
    source: InputFile, options: ReadOptions, window: Window | None = None
) -> tuple[pl.LazyFrame, pl.DataFrame | None]:
    """A lazy scan of one file with a 0-based ``_row`` column, and the malformed CSV rows, if any.

    CSV columns are all read as strings, so ids stay exactly as written. ``window`` limits the scan
    of a Parquet file to a slice of its rows.
    """
    encoding = options.encoding
    if source.format in ("csv", "tsv"):
        separator = "\t" if source.format == "tsv" else ","
        data, undecodable = _csv_source(source, encoding)
        if is_utf8(encoding):
            check_not_utf16(source, data if isinstance(data, bytes) else _head_of(data))
        if (isinstance(data, bytes) and not data.strip() and undecodable is None) or (
            isinstance(data, str) and os.path.getsize(data) == 0
        ):
            return pl.LazyFrame(), None
        # Lines that did not decode are read line by line, as a UTF-8 file's are: rows are then lines.
        rows, malformed, _ = parse_csv(data, separator=separator, careful=undecodable is not None)
        if undecodable is not None:
            parts = [undecodable] if malformed is None else [undecodable, malformed]
            malformed = pl.concat(parts).sort("source_row")
        return rows.lazy(), malformed
    if source.format in ACCESS_LOG_FORMATS:
        return _scan_log(source, options)
    if source.format == "snowplow":
        data = read_stream(source) if source.is_stream else source.path
        # read_lines keeps blank lines (so line numbers hold) and gunzips by the magic bytes.
        events, malformed = parse_enriched(pl.read_lines(data, row_index_name=ROW))
        return events.lazy(), malformed
    if source.format == "parquet":
        if source.is_stream:
            data = read_stream(source)
            types = parquet_types(io.BytesIO(data))
            if types.utc_schema is not None:
                piped = read_relabelled(io.BytesIO(data), types.utc_schema)
            else:
                piped = pl.read_parquet(io.BytesIO(data), glob=False)
            return binary_as_text(flatten_structs(piped.lazy()), types.uuids).with_row_index(ROW), None
        types = parquet_types(source.path)
        if types.utc_schema is not None:
            relabelled = read_relabelled(source.path, types.utc_schema, window)
            scan = relabelled.lazy().with_row_index(ROW, offset=0 if window is None else window[0])
        else:
            scan = pl.scan_parquet(source.path, row_index_name=ROW, glob=False)
            if window is not None:
                scan = scan.slice(*window)
        return binary_as_text(flatten_structs(scan), types.uuids), None
    # JSON exporters omit null keys and mix numeric and text ids: infer the schema from every line.
    ndjson: str | io.BytesIO = source.path
    if source.is_stream:
        ndjson = io.BytesIO(_without_bom(read_stream(source)))
    elif split_gz(source.path)[1]:
        ndjson = io.BytesIO(_without_bom(_read_bytes_gz(source.path)))
    elif os.path.getsize(source.path) == 0:
        return pl.LazyFrame(), None
    elif starts_with_bom(source.path):
        ndjson = io.BytesIO(_ndjson_bytes(source))
    if isinstance(ndjson, io.BytesIO) and not ndjson.getvalue().strip():
        return pl.LazyFrame(), None
    lone_surrogates, written = False, b""
    try:
        # Brackets nested deep are never handed to Polars (lists in lists can keep it busy for hours);
        # the schema comes from every line: a malformed one fails here.
        careful, lone_surrogates = prescan_ndjson(ndjson)
        if lone_surrogates:
            # Polars is given the text with each lone surrogate escape replaced (the careful reader
            # replaces them in the lines it hands on, and shows a rejected line as it was written).
            written = ndjson.getvalue() if isinstance(ndjson, io.BytesIO) else _ndjson_bytes(source)
            ndjson = io.BytesIO(well_formed_surrogates(written))
        if not careful:
            schema = ndjson_schema(infer_ndjson_schema(ndjson), options)[0]
    except pl.exceptions.PolarsError:
        careful = True
    if careful:
        data = (
            written
            if lone_surrogates
            else ndjson.getvalue()
            if isinstance(ndjson, io.BytesIO)
            else _ndjson_bytes(source)
        )
        rows, malformed = _careful_ndjson(data, options)
        return rows.lazy(), malformed
    scan = pl.scan_ndjson(ndjson, schema=schema)  # the schema given: no second pass to infer it
    return only_numbers(flatten_structs(scan), text_ids(schema, options)).with_row_index(ROW), None


#: The deepest nesting of objects and lists a JSON line may have, its own object being level 1. Events
#: nest a few levels (a GA4 export 4, Segment's 4). Polars takes up to 1,024 but slowly (a minute for one
#: line of objects 300 deep), the flattening of objects into columns recurses once per level, and
#: ``pl.read_ndjson`` crashes the process on objects about 900 deep. Lists nested in lists cost far more:
#: a file with one line of lists 24 deep took 2 s, 32 deep more than ten minutes (without answering
#: SIGTERM), where 16 take 0.9 s. A deeper line is rejected as ``json_too_deep``, whichever way the
#: file is read.
JSON_DEPTH_LIMIT = 16


def prescan_ndjson(ndjson: str | io.BytesIO | bytes) -> tuple[bool, bool]:
    """Whether brackets (``[``, ``{``) in an NDJSON file nest deeper than :data:`JSON_DEPTH_LIMIT`,
    counted over the bytes (numpy, 16 MiB at a time): brackets inside strings and unbalanced lines count
    too, so this may say yes for a file without a deep line, which is then only read the careful way
    (line by line, exact). Polars must not see a deep line at all: lists nested in lists 32 deep kept
    its reader busy for more than ten minutes, deaf to SIGTERM.

    Second, whether the file holds a lone surrogate escape (:mod:`sessionize.io.surrogates`), which
    Polars must see replaced (false when the first answer is yes: the careful reader replaces them)."""
    import numpy as np

    # Only brackets and line ends count: each block is cut to them first (bytes.translate, a few in a
    # hundred bytes of an event), and the depths worked out over them alone. Over every byte, a
    # 2M-event file (420 MB) took 12 s, more than its read; cut first, 0.3 s.
    kind = np.zeros(256, dtype=np.int8)
    kind[[ord("["), ord("{")]], kind[[ord("]"), ord("}")]], kind[ord("\n")] = 1, -1, 2
    others = bytes(byte for byte in range(256) if byte not in b"[]{}\n")
    depth = 0  # the depth at the block's start, within its line
    lone = LoneSurrogateScan()
    with contextlib.ExitStack() as stack:
        if isinstance(ndjson, str):
            handle: Any = stack.enter_context(open(ndjson, "rb"))
        else:
            handle = io.BytesIO(ndjson if isinstance(ndjson, bytes) else ndjson.getbuffer())
        while block := handle.read(1 << 24):
            lone.feed(block)
            marks = kind[np.frombuffer(block.translate(None, others), dtype=np.uint8)]
            if not marks.size:
                continue
            newline = marks == 2
            running = np.cumsum(np.where(newline, 0, marks), dtype=np.int64) + depth
            # Each line counted from its own start, so that a line with more closing brackets than
            # opening ones cannot hide a deep line after it.
            last = np.maximum.accumulate(np.where(newline, np.arange(marks.size), -1))
            base = np.where(last >= 0, running[np.maximum(last, 0)], 0)
            if (running - base).max() > JSON_DEPTH_LIMIT:
                return True, False
            depth = int(running[-1] - base[-1])
    return False, lone.close()


def _fast_ndjson(source: InputFile, raw: pl.DataFrame | None, window: Window | None) -> bool:
    """Whether an NDJSON file was read by the fast reader, whole, from a file that can be read again
    (line by line, :func:`_careful_ndjson`)."""
    return raw is None and window is None and source.format == "ndjson" and not source.is_stream


def _ndjson_bytes(source: InputFile) -> bytes:
    """The bytes of an NDJSON file (gunzipped), without a byte order mark; a UTF-16 file is refused
    (:func:`check_not_utf16`: each of its lines was malformed)."""
    if split_gz(source.path)[1]:
        data = _read_bytes_gz(source.path)
    else:
        with open(source.path, "rb") as handle:
            data = handle.read()
    check_not_utf16(source, data[:4096])
    return _without_bom(data)


def _without_bom(data: bytes) -> bytes:
    """``data`` without the UTF-8 byte order mark that Windows PowerShell and .NET write at the start of
    a text file (the first JSON line was malformed with it; CSV and access logs skip it too)."""
    return data[len(codecs.BOM_UTF8) :] if data.startswith(codecs.BOM_UTF8) else data


def starts_with_bom(path: str) -> bool:
    """Whether the file at ``path`` (gzipped or not) starts with a UTF-8 byte order mark."""
    try:
        with (gzip.open if split_gz(path)[1] else open)(path, "rb") as handle:
            return handle.read(len(codecs.BOM_UTF8)) == codecs.BOM_UTF8
    except (OSError, EOFError, zlib.error):
        return False  # the read itself names what is wrong


class _WideInteger(str):
    """An integer beyond 64 bits (within Polars' 128), as its text: only an id field, read as text, may
    hold one (see :func:`_careful_ndjson`)."""


def _strict_number(text: str) -> float | int | _WideInteger:
    """A JSON number as Polars reads one: an integer within 64 bits (one within 128, as
    :class:`_WideInteger`), a finite float."""
    number = float(text) if any(c in text for c in ".eE") else int(text)
    if isinstance(number, int) and not -(1 << 63) <= number < (1 << 64):
        if -(1 << 127) <= number < (1 << 127):
            return _WideInteger(text)
        raise ValueError(f"integer out of range: {text}")
    if isinstance(number, float) and not math.isfinite(number):
        raise ValueError(f"number out of range: {text}")
    return number


def _no_constant(text: str) -> None:
    raise ValueError(f"not JSON: {text}")


def _kinds(
    value: object, path: tuple[str, ...], into: dict[tuple[str, ...], str], beyond_64: set[tuple[str, ...]]
) -> str | None:
    """Record the kind of every value of a JSON line by its path (a list's elements at ``path + ("[]",)``),
    and the paths of its integers beyond 64 bits in ``beyond_64``; the line's reject reason, if any:
    ``bad_json_value`` when one path has two kinds within the line (``[1, true]``), ``json_too_deep``
    when a list or object is deeper than :data:`JSON_DEPTH_LIMIT`. A walk with a stack of its own, not
    Python's: a deep line must not end the run with a ``RecursionError``."""
    pending: list[tuple[object, tuple[str, ...]]] = [(value, path)]
    while pending:
        item, where = pending.pop()
        if item is None:
            continue
        if isinstance(item, _WideInteger):
            beyond_64.add(where)
        if isinstance(item, bool):
            kind = "bool"
        elif isinstance(item, int | float | str):
            kind = "scalar"  # numbers and text mix: the reader makes the column text
        elif isinstance(item, dict):
            kind = "object"
        else:
            kind = "list"
        if kind in ("object", "list") and len(where) + 1 > JSON_DEPTH_LIMIT:
            return "json_too_deep"
        if into.setdefault(where, kind) != kind:
            return "bad_json_value"
        if isinstance(item, dict):
            pending.extend((inner, (*where, key)) for key, inner in item.items())
        elif isinstance(item, list):
            pending.extend((inner, (*where, "[]")) for inner in item)
    return None


def _careful_ndjson(data: bytes, options: ReadOptions) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Parse an NDJSON file the fast reader failed on, line by line: the lines that are JSON objects
    (``_row``: their 0-based line; read with :func:`ndjson_schema`), and the others with their line
    number, text and reason:
    ``malformed_json`` for a line that is not a JSON object, ``json_too_deep`` for one whose objects and
    lists nest deeper than :data:`JSON_DEPTH_LIMIT` (valid JSON or not: beyond about 1,000 levels
    Python's parser cannot tell), ``bad_json_value`` for one whose number is out of range (an integer
    beyond 64 bits is one but in an id field, read as text: see :func:`ids_as_text`) or whose value has
    another kind than the same field's on most lines (a time that is ``true`` where the others are
    numbers, a list where the others hold an object). Linear: one parse and one walk of each line."""
    parsed_lines: list[tuple[int, bytes, dict[tuple[str, ...], str], set[tuple[str, ...]]]] = []
    bad: list[tuple[int, str, str]] = []
    counts: dict[tuple[str, ...], Counter[str]] = {}
    mixed: list[tuple[int, bytes]] = []
    for number, line in enumerate(_without_bom(data).split(b"\n")):
        if not line.strip():
            continue
        shown = line.decode("utf-8", errors="replace").rstrip("\r")
        try:
            value = json.loads(
                line.decode("utf-8"), parse_int=_strict_number, parse_float=_strict_number,
                parse_constant=_no_constant,
            )  # fmt: skip
        except RecursionError:
            bad.append((number + 1, shown, "json_too_deep"))
            continue
        except (UnicodeDecodeError, ValueError):
            bad.append((number + 1, shown, "malformed_json" if _is_json(line) is False else "bad_json_value"))
            continue
        if not isinstance(value, dict):
            bad.append((number + 1, shown, "malformed_json"))
            continue
        kinds: dict[tuple[str, ...], str] = {}
        beyond_64: set[tuple[str, ...]] = set()
        reason = _kinds(value, (), kinds, beyond_64)
        if reason == "bad_json_value" and not beyond_64:
            mixed.append((number, line))  # two kinds in one field within the line: see below
            continue
        if reason is not None:
            bad.append((number + 1, shown, reason))
            continue
        for path, kind in kinds.items():
            counts.setdefault(path, Counter())[kind] += 1
        parsed_lines.append((number, line, kinds, beyond_64))
    usual = {path: counted.most_common(1)[0][0] for path, counted in counts.items()}
    # An integer beyond 64 bits is an id's (read as text), or a number out of range.
    leaves = {"_".join(path): path for path, kind in usual.items() if kind != "object" and "[]" not in path}
    ids = {leaves[name] for name in _id_columns(list(leaves), options) if name in leaves}
    for path in ids:
        if usual[path] == "bool":
            usual[path] = "scalar"  # a JSON boolean is no id, however many lines send one
    # The lines the fast reader would have read without the ones rejected above are read as it reads them:
    # a field of text on some lines and a boolean, list or object on others is one it takes (as text). Only
    # when they cannot be read together is each line held to its fields' usual kinds below. Before, one
    # malformed line sent such valid lines to the rejects, lines that a file without it had read.
    whole = sorted(
        [*((number, line) for number, line, _, beyond_64 in parsed_lines if beyond_64 <= ids), *mixed]
    )
    read_whole = _ndjson_lines([line for _, line in whole], [number for number, _ in whole], options)
    if read_whole is not None:
        bad.extend(
            (number + 1, line.decode("utf-8", errors="replace").rstrip("\r"), "bad_json_value")
            for number, line, _, beyond_64 in parsed_lines
            if not beyond_64 <= ids
        )
        bad.sort()
        return read_whole, _malformed_frame(bad)
    bad.extend(
        (number + 1, line.decode("utf-8", errors="replace").rstrip("\r"), "bad_json_value")
        for number, line in mixed
    )
    good: list[bytes] = []
    rows: list[int] = []
    for number, line, kinds, beyond_64 in parsed_lines:
        if all(usual[path] == kind for path, kind in kinds.items()) and beyond_64 <= ids:
            good.append(line)
            rows.append(number)
        else:
            bad.append((number + 1, line.decode("utf-8", errors="replace").rstrip("\r"), "bad_json_value"))
    bad.sort()
    malformed = _malformed_frame(bad)
    if not good:
        return pl.DataFrame({ROW: pl.Series([], dtype=pl.Int64)}), malformed
    joined = well_formed_surrogates(b"\n".join(good))
    inferred = infer_ndjson_schema(joined)
    schema, _, _ = ndjson_schema(inferred, options)
    parsed = flatten_structs(pl.read_ndjson(io.BytesIO(joined), schema=schema).lazy())
    return parsed.with_columns(pl.Series(ROW, rows, dtype=pl.Int64)).collect(), malformed


def _malformed_frame(bad: list[tuple[int, str, str]]) -> pl.DataFrame:
    return pl.DataFrame(
        bad, schema={"source_row": pl.Int64, "raw_line": pl.String, "reject_reason": pl.String}, orient="row"
    )


def _ndjson_lines(lines: list[bytes], rows: list[int], options: ReadOptions) -> pl.DataFrame | None:
    """NDJSON ``lines`` (with their 0-based ``rows``) read together as the fast reader reads a file (the
    schema inferred from every line, ids guarded by :func:`only_numbers`), or None when they cannot be:
    a field whose kinds Polars cannot unify, an id that is a JSON boolean, an integer beyond 64 bits."""
    if not lines:
        return pl.DataFrame({ROW: pl.Series([], dtype=pl.Int64)})
    joined = well_formed_surrogates(b"\n".join(lines))
    try:
        schema, _, _ = ndjson_schema(infer_ndjson_schema(joined), options)
        if any(_wide_integer(dtype) for dtype in schema.values()):
            return None
        guarded = text_ids(schema, options)
        frame = only_numbers(
            flatten_structs(pl.read_ndjson(io.BytesIO(joined), schema=schema).lazy()), guarded
        )
        return frame.with_columns(pl.Series(ROW, rows, dtype=pl.Int64)).collect()
    except pl.exceptions.PolarsError:
        return None


def _is_json(line: bytes) -> bool | None:
    """False when ``line`` is not JSON at all, None when it is (with a value the strict reading refused)."""
    try:
        json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return False
    return None


#: Hex pairs of one valid UTF-8 character (RFC 3629's table: no overlong forms, no surrogates, at most
#: U+10FFFF), as ``bin.encode("hex")`` writes the bytes; of the control characters only tab, line feed
#: and carriage return (bytes with a NUL or an ESC are not text, whatever UTF-8 says).
_CONTINUATION = "[89ab][0-9a-f]"
_UTF8_HEX = (
    "^(?:"
    + "|".join(
        (
            "0[9ad]|[2-6][0-9a-f]|7[0-9a-e]",
            f"c[2-9a-f]{_CONTINUATION}",
            f"d[0-9a-f]{_CONTINUATION}",
            f"e0[ab][0-9a-f]{_CONTINUATION}",
            f"e[1-9a-cef]{_CONTINUATION}{_CONTINUATION}",
            f"ed[89][0-9a-f]{_CONTINUATION}",
            f"f0[9ab][0-9a-f]{_CONTINUATION}{_CONTINUATION}",
            f"f[1-3]{_CONTINUATION}{_CONTINUATION}{_CONTINUATION}",
            f"f48[0-9a-f]{_CONTINUATION}{_CONTINUATION}",
        )
    )
    + ")*$"
)


@dataclass(frozen=True)
class ParquetTypes:
    """What a Parquet file's schema (its footer, not its data) tells the reader that Polars' types do not.

    ``uuids``: the top-level columns that hold UUIDs by their type, Parquet's ``UUID`` (Arrow's
    ``arrow.uuid``) or 16 fixed bytes (``fixed_size_binary(16)``: Spark, Trino, Postgres); Polars reads both
    as plain binary. ``utc_schema``: when a timestamp's time zone is one Polars cannot read (a fixed
    offset, ``+05:30``, as pandas and pyarrow write a column of offset-aware times), the file's Arrow
    schema with those zones as UTC (the same instants: Parquet stores them in UTC), else None. Polars
    panicked on such a file ("unable to parse time zone"), in every engine."""

    uuids: frozenset[str] = frozenset()
    utc_schema: Any = None


def parquet_types(parquet: str | io.BytesIO) -> ParquetTypes:
    """The :class:`ParquetTypes` of a Parquet file (a path, or its bytes); none for a file whose footer
    cannot be read (Polars' read then names the problem)."""
    import pyarrow as pa  # type: ignore[import-untyped]
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    try:
        schema = pq.read_schema(parquet)
    except (pa.ArrowException, OSError):
        return ParquetTypes()
    finally:
        if isinstance(parquet, io.BytesIO):
            parquet.seek(0)
    found = set()
    for item in schema:
        kind = item.type
        storage = getattr(kind, "storage_type", kind)  # an extension type's bytes
        if pa.types.is_fixed_size_binary(storage) and storage.byte_width == 16:
            found.add(item.name)
    fields = [item.with_type(_zones_polars_reads(item.type)) for item in schema]
    changed = any(not item.type.equals(given.type) for item, given in zip(fields, schema, strict=True))
    return ParquetTypes(frozenset(found), pa.schema(fields) if changed else None)


def _zones_polars_reads(kind: Any) -> Any:
    """An Arrow type with each timestamp's time zone that Polars cannot read as UTC, in structs, lists
    and maps too (Polars converts a file's whole schema, so any column of such a type fails the read);
    an extension type (a UUID) as its storage, which is how Polars reads it from a file."""
    import pyarrow as pa

    if isinstance(kind, pa.ExtensionType):
        return _zones_polars_reads(kind.storage_type)
    if pa.types.is_timestamp(kind):
        return kind if kind.tz is None or _polars_zone(kind.tz) else pa.timestamp(kind.unit, "UTC")
    if pa.types.is_struct(kind):
        return pa.struct(
            [kind.field(n).with_type(_zones_polars_reads(kind.field(n).type)) for n in range(kind.num_fields)]
        )
    if pa.types.is_map(kind):
        return pa.map_(
            kind.key_field.with_type(_zones_polars_reads(kind.key_type)),
            kind.item_field.with_type(_zones_polars_reads(kind.item_type)),
        )
    if pa.types.is_fixed_size_list(kind):
        return pa.list_(kind.value_field.with_type(_zones_polars_reads(kind.value_type)), kind.list_size)
    if pa.types.is_large_list(kind):
        return pa.large_list(kind.value_field.with_type(_zones_polars_reads(kind.value_type)))
    if pa.types.is_list(kind):
        return pa.list_(kind.value_field.with_type(_zones_polars_reads(kind.value_type)))
    return kind


@functools.cache
def _polars_zone(zone: str) -> bool:
    """Whether Polars reads ``zone`` (an IANA name, ``UTC``, ``+00:00``), not a fixed offset (``+05:30``)."""
    try:
        pl.Series([0], dtype=pl.Int64).cast(pl.Datetime("us", zone))
    except pl.exceptions.PolarsError:
        return False
    return True


def read_relabelled(parquet: str | io.BytesIO, schema: Any, window: Window | None = None) -> pl.DataFrame:
    """A Parquet file whose schema Polars cannot read (:class:`ParquetTypes`), or the ``window`` of its
    rows (first row, row count), read by pyarrow and cast to ``schema`` (its time zones as UTC: the same
    instants), then handed to Polars. A window reads only the row groups it overlaps, so that a file read
    in slices (the bucketed path's windows, Dask's partitions) is not read whole for each."""
    import pyarrow.parquet as pq

    if window is None:
        return pl.from_arrow(pq.read_table(parquet).cast(schema))  # type: ignore[return-value]
    first, count = window
    reader = pq.ParquetFile(parquet)
    groups, start, before = [], 0, None
    for group in range(reader.num_row_groups):
        rows = reader.metadata.row_group(group).num_rows
        if start + rows > first and start < first + count:
            groups.append(group)
            before = start if before is None else before
        start += rows
    if not groups or before is None:
        return pl.from_arrow(schema.empty_table())  # type: ignore[return-value]
    table = reader.read_row_groups(groups).slice(first - before, count)
    return pl.from_arrow(table.cast(schema))  # type: ignore[return-value]


def binary_as_text(frame: pl.LazyFrame, uuids: Collection[str] = ()) -> pl.LazyFrame:
    """Binary columns as text, so that ids stored as bytes are ids like any other.

    A column of ``uuids`` (a Parquet ``UUID`` or 16-byte column: :class:`ParquetTypes`) is each UUID's
    canonical text (``0f8fad5b-d9cb-469f-a165-70867728950e``), whatever its bytes. In another binary column,
    bytes that are UTF-8 (without control characters but tab and line ends) are that text: strings
    written without the UTF-8 annotation, as older Hive and Impala do; 16 other bytes are taken for a UUID
    too; anything else is hex. Before, such a user or event id made the whole file "not a readable
    Parquet file (invalid utf8)"; and a UUID whose 16 bytes happen to be UTF-8 was those bytes as text."""
    schema = frame.collect_schema()
    binary = [name for name, dtype in schema.items() if dtype == pl.Binary]
    if not binary:
        return frame

    def text(name: str) -> pl.Expr:
        raw = pl.col(name)
        hexed = raw.bin.encode("hex")
        groups = ((0, 8), (8, 4), (12, 4), (16, 4), (20, 12))
        uuid = pl.concat_str([hexed.str.slice(start, length) for start, length in groups], separator="-")
        if name in uuids:
            return pl.when(raw.bin.size() == 16).then(uuid).otherwise(hexed).alias(name)
        valid = hexed.str.contains(_UTF8_HEX)
        return (
            pl.when(valid)
            # Only valid bytes reach the cast (a null keeps its bytes in the buffer, and the cast reads them).
            .then(pl.when(valid).then(raw).otherwise(pl.lit(b"")).cast(pl.String))
            .when(raw.bin.size() == 16)
            .then(uuid)
            .otherwise(hexed)
            .alias(name)
        )

    return frame.with_columns(text(name) for name in binary)


#: A nested object of an NDJSON file becomes a column per leaf (``context_page_url``). Polars types each
#: leaf through its whole object, so the time grows with the square of an object's leaves: one event
#: with 8,000 keys 13 levels deep took 91 s, 50,000 keys never ended (deaf to SIGTERM). And its reader
#: makes every key any event has a column of every event: 8,000 events each with a property of its own
#: (PostHog's ``$feature/...``) took 6 GB. A top-level object with more leaves than this, and the
#: widest others while the file's objects hold more than :data:`OBJECTS_LEAVES_LIMIT` leaves in all, is
#: read with only the leaves a run can use (its column options, ``--agg``, ``--filter``, a preset's and
#: the built-in column names: :func:`ndjson_schema`): Polars' reader skips the others, and what the run
#: reads is typed and checked as in a narrow object. A rejected row keeps those leaves, not the whole
#: object (its line is in the file, at the row the rejects name). Exports nest far fewer: a GA4 event
#: ~150 leaves in all, a Segment or PostHog event tens to a few hundred.
OBJECT_LEAVES_LIMIT = 500
#: See :data:`OBJECT_LEAVES_LIMIT`.
OBJECTS_LEAVES_LIMIT = 2_000


def _leaf_count(dtype: object) -> int:
    """How many leaves (values that are not objects) a nested object type has."""
    if not isinstance(dtype, pl.Struct):
        return 1
    return sum(_leaf_count(field.dtype) for field in dtype.fields)


def wide_objects(schema: Mapping[str, Any]) -> list[str]:
    """The top-level objects of ``schema`` too wide to flatten whole (see :data:`OBJECT_LEAVES_LIMIT`)."""
    leaves = {name: _leaf_count(dtype) for name, dtype in schema.items() if isinstance(dtype, pl.Struct)}
    wide = [name for name, count in leaves.items() if count > OBJECT_LEAVES_LIMIT]
    total = sum(count for name, count in leaves.items() if name not in wide)
    for name in sorted((n for n in leaves if n not in wide), key=lambda n: -leaves[n]):
        if total <= OBJECTS_LEAVES_LIMIT:
            break
        wide.append(name)
        total -= leaves[name]
    return wide


def _pruned(dtype: PolarsDataType, path: tuple[str, ...], keys: Collection[str]) -> PolarsDataType | None:
    """The type of the object (or value) at ``path`` with only the leaves whose flattened name
    (``properties_$current_url``) is one of ``keys`` (as :func:`sessionize.schema.name_key` gives
    them); None when it keeps none. Polars' reader, given it, skips every other key."""
    if not isinstance(dtype, pl.Struct):
        return dtype if S.name_key("_".join(path)) in keys else None
    fields = {
        field.name: kept
        for field in dtype.fields
        if (kept := _pruned(field.dtype, (*path, field.name), keys)) is not None
    }
    return pl.Struct(fields) if fields else None


def flatten_structs(frame: pl.LazyFrame) -> pl.LazyFrame:
    """Nested objects become columns named by their path: Segment's ``context.page.url`` is
    ``context_page_url``, which the column aliases know."""
    schema = frame.collect_schema()
    if not any(isinstance(dtype, pl.Struct) for dtype in schema.values()):
        return frame

    def leaves(expr: pl.Expr, name: str, dtype: object) -> list[pl.Expr]:
        if not isinstance(dtype, pl.Struct):
            return [expr.alias(name)]
        return [
            leaf
            for field in dtype.fields
            for leaf in leaves(expr.struct.field(field.name), f"{name}_{field.name}", field.dtype)
        ]

    columns = [leaf for name, dtype in schema.items() for leaf in leaves(pl.col(name), name, dtype)]
    names = [c.meta.output_name() for c in columns]
    if len(set(names)) != len(names):
        return frame  # flattening would clash with a top-level column: keep the frame as it is
    return frame.select(columns)


def _format_name(source: InputFile) -> str:
    if source.format in ACCESS_LOG_FORMATS:
        return "a web-server access log line"
    if source.format == "snowplow":
        return "a Snowplow enriched event (131 tab-separated fields)"
    return source.format.upper()


@functools.lru_cache(maxsize=4)
def _continued_lines(path: str, size: int, mtime_ns: int, separator: str, codec: str) -> array.array[int]:
    """Where a CSV file's records take more than one line (a quoted field with a line break): for each
    line that continues a record, the number of lines before it that begin one (the header counts).
    Empty for the usual file. ``size`` and ``mtime_ns`` key the cache; a file is read twice at most.

    The fast reader numbers records, and its ``_row`` is a line only while each record is one line:
    :func:`physical_rows` turns it into one with these. A first pass counts quotes per line (a line
    with an odd number can open a field that spans lines); only a file with such a line is read
    record by record by Python's csv module, which splits records as the fast reader does."""

    if not _has_odd_quote_line(path, codec):
        return array.array("q")
    continued = array.array("q")  # 8 bytes a line, not a Python int's 36: a file may have millions
    # Lines end at "\n" alone, as the fast reader's and the careful reader's do; a "\r" elsewhere is
    # a character to them, which the csv module would take for a line end (or refuse, unquoted).
    with io.TextIOWrapper(_open_bytes(path), encoding=codec, errors="replace", newline="\n") as stream:
        records = csv.reader((line.replace("\r", " ") for line in stream), delimiter=separator)
        before = 0
        for _ in records:
            # The lines the record took beyond its first continue it.
            for line in range(before + 1, records.line_num):
                continued.append(line - len(continued))
            before = records.line_num
    return continued


def _has_odd_quote_line(path: str, codec: str) -> bool:
    """Whether a line of the file has an odd number of quotes (a UTF-8 file: in one streaming scan)."""
    if not split_gz(path)[1] and codec == "utf-8":
        odd = pl.col("line").str.count_matches('"', literal=True) % 2 == 1
        try:
            return bool(pl.scan_lines(path).select(odd.any()).collect(engine="streaming").item())
        except pl.exceptions.PolarsError:
            pass  # bytes that are not UTF-8: the careful reader's, line by line below
    with _open_bytes(path) as handle:
        return any(line.count(b'"') % 2 for line in handle)


def _open_bytes(path: str) -> gzip.GzipFile | io.BufferedReader:
    """A file's bytes as they stream, gunzipped when its name says ``.gz``."""
    if split_gz(path)[1]:
        return gzip.open(path)
    return open(path, "rb")


def physical_rows(source: InputFile, encoding: str) -> Callable[[pl.Expr], pl.Expr] | None:
    """For a CSV file read by the fast reader whose records span lines: an expression that turns its
    record number (``_row``) into the line's (0 for the line after the header), as the careful reader
    numbers rows. None for every other file (rows are lines already)."""
    # An incremental run's grown file is a copy of its new lines (``first_line`` numbers them): its
    # lines are counted in the copy. Standard input is not read twice: its rows stay records.
    if source.format not in ("csv", "tsv") or source.is_stream:
        return None
    try:
        stat = os.stat(source.path)
    except OSError:
        return None
    codec = "utf-8" if is_utf8(encoding) else encoding
    separator = "\t" if source.format == "tsv" else ","
    try:
        continued = _continued_lines(source.path, stat.st_size, stat.st_mtime_ns, separator, codec)
    except (OSError, LookupError, EOFError, zlib.error, csv.Error):
        return None
    if not continued:
        return None
    bounds = pl.Series(continued, dtype=pl.Int64)

    def physical(row: pl.Expr) -> pl.Expr:
        record = row.cast(pl.Int64)
        return record + pl.lit(bounds).search_sorted(record + 1, side="right").cast(pl.Int64)

    return physical


def aligned_chunks(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with every column cut into chunks of the same lengths, without copying a value.

    The streaming engine gives the columns it computes one chunk per morsel, but a constant column
    (an input column the file lacks) and the read's row numbers in other chunks. On such a frame every
    eager operation first copies the columns into one layout, and throws the copies away: 10M CSV
    events, 0.1-0.9 s a ``select`` or ``drop``, where it takes 0.01 s on aligned chunks. Here the
    other columns are sliced at the chunk boundaries most columns share (0.02 s). A column of nulls
    only (the constant columns) is left as it is: rebuilt from its values, it held them (16 bytes an
    event for a text) where it had held none, and the bucketed read's slices, held until they are
    spilled, took 250-300 MB more at 100M events in a 1 GiB budget."""
    layouts = {name: [len(chunk) for chunk in frame.get_column(name).get_chunks()] for name in frame.columns}
    shared = Counter(tuple(layout) for layout in layouts.values())
    if len(shared) <= 1:
        return frame
    # The layout most columns have (the costly text columns), the finer one on a tie.
    target = max(shared, key=lambda layout: (shared[layout], len(layout)))
    starts = list(itertools.accumulate(target, initial=0))
    realigned = []
    for name, layout in layouts.items():
        column = frame.get_column(name)
        if tuple(layout) != target and column.null_count() < column.len():
            whole = column.rechunk()  # copies only a column in many chunks of other lengths
            realigned.append(
                pl.concat(
                    [whole.slice(start, length) for start, length in zip(starts, target, strict=False)],
                    rechunk=False,
                )
            )
    return frame.with_columns(realigned) if realigned else frame


def where_row(source: InputFile, row: int) -> str:
    """How a message names the 0-based data row ``row`` of ``source``: ``line 3`` (a CSV has its header on
    line 1; a log's lines) or ``row 3``."""
    if source.format in ("csv", "tsv"):
        return f"line {row + 2 + source.first_line}"
    if source.format in (*ACCESS_LOG_FORMATS, "snowplow"):
        return f"line {row + 1 + source.first_line}"
    return f"row {row + 1 + source.first_line}"


def source_row(source: InputFile, row: pl.Expr) -> pl.Expr:
    """The row number users see: the line for CSV (header = line 1), 1-based otherwise."""
    return row + (2 if source.format in ("csv", "tsv") else 1) + source.first_line


def _names_read(options: ReadOptions) -> list[str]:
    """Every input column name a run can read: those it names (:func:`asked_columns`, ``--unnest-params``)
    and the roles' built-in names."""
    aliases = [name for names in S.COLUMN_ALIASES.values() for name in names]
    return [*asked_columns(options), *options.unnest_params, *aliases]


def _json_keys_found(
    frame: pl.DataFrame, columns: S.ColumnMap, options: ReadOptions, from_json: Mapping[str, str]
) -> dict[str, tuple[str, str] | None]:
    """For a column flag that names a key of a JSON text column (``--url-col properties.$current_url``):
    whether an event has a value for it (None), or the key and its column (:attr:`ReadNotes.json_keys`):
    a misspelled key would otherwise make a column of nulls without a word, where a misspelled column is
    an error."""
    found: dict[str, tuple[str, str] | None] = {}
    for role, given in options.columns.by_role().items():
        source = getattr(columns, role, None)
        if given is None or source not in from_json or role not in frame.columns or not frame.height:
            continue
        unfound = frame.get_column(role).null_count() == frame.height
        found[role] = (given, from_json[str(source)]) if unfound else None
    return found


#: The roles whose preferred columns (a preset's) are forms of one value, taken event by event in turn:
#: Amplitude's page URL as Browser SDK 2 names it and as SDK 1 does, PostHog's ``properties.$ip`` and
#: ``$ip``. The referrer is not: Amplitude's second is the user's last referrer, not the event's; nor
#: Snowplow's page view id, whose later columns are contexts the id is parsed from, not ids.
_IN_TURN_ROLES = (S.URL, S.CLIENT_SESSION, S.IP, S.USER_AGENT, S.EVENT_ID)
#: Of those, the roles whose values the privacy options hide (the address, the session id standing in
#: for a user id): every column they are read from is hidden.
_PRIVATE_ROLES = (S.IP, S.CLIENT_SESSION)


def _columns_in_turn(
    columns: S.ColumnMap, options: ReadOptions, available: Sequence[str], schema: pl.Schema
) -> dict[str, list[str]]:
    """The columns each role of :data:`_IN_TURN_ROLES` is read from, in turn: a preset's preferred names
    that the file has, the first of them the role's column (one: the role's column alone; none: no column).
    For an event without a value in the first, the next one's is taken: the first column found was the
    role's for the whole file, and an Amplitude export mixing Browser SDK 1 and 2 events (a migration, or
    SDK 2's page-view-v1-enrichment plugin on some pages) gave the events of the other SDK no URL, their
    sessions no landing page. A column flag names the one column to read. The privacy options hide every
    column of a private role (:data:`_PRIVATE_ROLES`)."""
    preferred = options.preferred()
    explicit = options.columns.by_role()
    turns: dict[str, list[str]] = {}
    for role in _IN_TURN_ROLES:
        column = getattr(columns, role, None)
        if column is None:
            turns[role] = []
            continue
        turns[role] = [column]
        if explicit.get(role) is not None or len(preferred.get(role, ())) < 2:
            continue
        found = [c for given in preferred[role] if (c := S.match_column(given, available)) is not None]
        found = list(dict.fromkeys(found))
        if len(found) > 1 and found[0] == column and len({schema[c] for c in found}) == 1:
            turns[role] = found
    return turns


def _refuse_repeated_columns(columns: S.ColumnMap, available: Sequence[str], name: str) -> None:
    """Refuse a header that names a column the run reads (the user id, the address, ...) more than once:
    the CSV reader keeps the first and renames the others (``user_id_duplicated_0``), so the run would
    pick one silently, and a rejected row would keep the others as read, under the privacy options too
    (review 52)."""
    used = {column for column in dataclasses.astuple(columns) if isinstance(column, str)}
    for column in available:
        found = re.fullmatch(r"(.+)_duplicated_[0-9]+", column)
        if found is not None and found.group(1) in used and found.group(1) in available:
            raise MissingColumnError(
                f"{name}: its header names the column {found.group(1)!r} more than once, and which one "
                "is meant is unknown. Rename the others."
            )


#: What MySQL (``SELECT ... INTO OUTFILE``), PostgreSQL (``COPY``'s text format) and Hive write for a NULL
#: in a CSV or TSV, and Snowflake's default ``NULL_IF``.
NULL_MARKER = "\\N"


def without_null_markers(frame: pl.LazyFrame) -> pl.LazyFrame:
    """A CSV's text columns with :data:`NULL_MARKER` as null: a warehouse unload's NULL referrer was the
    referrer ``\\N`` (a referral from the site "\\n"), its NULL user id the user ``\\N`` (every such event
    one user), its NULL address the address ``\\N``. The rejects file keeps the rows as written."""
    text = [name for name, dtype in frame.collect_schema().items() if dtype == pl.String]
    if not text:
        return frame
    return frame.with_columns(
        pl.when(pl.col(name) != NULL_MARKER).then(pl.col(name)).alias(name) for name in text
    )


def read_file(
    source: InputFile,
    options: ReadOptions,
    window: Window | None = None,
    *,
    raw: pl.DataFrame | None = None,
    malformed: pl.DataFrame | None = None,
    keep_row: bool = False,
    rows_are_lines: bool = False,
    part: bool = False,
) -> FileRead:
    """Read one file (or a ``window`` of its rows) into the canonical events frame and set aside
    (or raise on) invalid rows. ``raw`` gives some of the file's rows already read (text columns
    and ``_row``, or an access log's parsed requests; see :func:`iter_reads`), with ``malformed`` the rows
    among them that did not parse. ``keep_row`` keeps each event's 0-based data row in ``_row``.
    ``rows_are_lines``: the ``_row`` of ``raw`` are lines of the file already (Spark's split reading,
    which numbers each split's rows itself), not records to turn into lines. ``part`` (and a ``window``):
    the rows are a slice of the file, whose warnings are kept in :attr:`FileRead.notes` for the file's
    reader to give once (:class:`ReadNotes`); a whole file's are given here."""
    name = source.shown
    try:
        if raw is not None:
            scan = raw.lazy()
        else:
            scan, malformed = _scan(source, options, window)
        # The rejected rows keep their key/value lists as JSON text: one column per key for them
        # would cost (keys x parameters), and a client chooses the keys.
        original = as_json_lists(scan, options.unnest_params)
        if source.format in ("csv", "tsv"):
            scan = without_null_markers(scan)
        if options.unnest_params:
            scan = unnest_params(scan, options.unnest_params, source=name, wanted=options.wanted_columns())
        # A text column of JSON objects (PostHog's properties in its Parquet and CSV exports): the keys
        # the run names, as nested objects' (io/jsontext.py).
        scan, from_json = read_json_text(scan, asked_columns(options))
        if malformed is not None and source.first_line:
            malformed = malformed.with_columns(pl.col("source_row") + source.first_line)
        available = [c for c in scan.collect_schema().names() if c != ROW]
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise UnreadableInputError(_describe_read_error(name, source, exc)) from exc
    if not available:
        # An empty file holds no events; one whose every row is malformed holds only rejects.
        if malformed is None or not malformed.height:
            return FileRead(pl.DataFrame(schema=options.event_schema()), None, 0)
        if options.on_invalid == "fail":
            raise_malformed(name, malformed, what=_format_name(source))
        none = pl.DataFrame(schema={ROW: pl.Int64, REASON: pl.String})
        rejects = _private_rejects(
            _rejects(original, none, malformed, source=source, name=name), options, None
        )
        return FileRead(pl.DataFrame(schema=options.event_schema()), rejects, malformed.height)
    check_header(source, available)
    try:
        columns = options.resolve_columns(available, source=name)
    except MissingColumnError:
        if not _fast_ndjson(source, raw, window):
            raise
        # A field that is an object on one line and a value on the others is read as an object: the
        # column the run needs became its fields (timestamp_a). Line by line, that line is set aside.
        rows_read, bad_lines = _careful_ndjson(_ndjson_bytes(source), options)
        return read_file(source, options, raw=rows_read, malformed=bad_lines, keep_row=keep_row)
    _refuse_repeated_columns(columns, available, name)
    turns = _columns_in_turn(columns, options, available, scan.collect_schema())
    merged = [pl.coalesce(found).alias(found[0]) for found in turns.values() if len(found) > 1]
    if merged:
        scan = scan.with_columns(merged)
    in_turn = {role: turns[role] for role in _PRIVATE_ROLES}
    # An access log's authenticated user (HTTP basic auth) is a login name: hidden as the login id is.
    logins = ("auth_user",) if source.format in ACCESS_LOG_FORMATS else ()
    refuse_private_aggregates(
        options.aggregates,
        columns,
        available,
        source=name,
        anonymize_ip=bool(options.anonymize_ip),
        hash_ids=options.user_id_secret is not None,
        hash_sessions=options.require_session_id,
        json_sources=from_json,
        in_turn=in_turn,
        logins=logins,
    )
    keep = keep_expr(
        options.filters,
        scan.collect_schema(),
        source=name,
        max_send_delay=options.max_send_delay,
    )
    if keep is not None:
        scan = scan.with_columns(keep)
    events = prepare_events(
        scan,
        columns=columns,
        keep_raw=True,
        carry=[KEEP] if keep is not None else [],
        source=name,
        **options.prepare_options(),
    )
    try:
        # Row by row work only (parsing, renaming, typing), which the streaming engine spreads over every
        # core, morsel by morsel and in order, where the in-memory engine parses a text column on one
        # thread: 10M CSV events took 4.6-4.9 s instead of 6.6 s, with the same peak memory (Parquet:
        # the same time either way). The sessions themselves are built in memory (see pipeline).
        frame = aligned_chunks(events.collect(engine="streaming"))
    except (pl.exceptions.PolarsError, OSError) as exc:
        if _fast_ndjson(source, raw, window):
            # Lines of valid JSON whose values the fast reader cannot take together (a time that is
            # true on one line and a number on the others, a number out of range): read line by line,
            # those lines set aside with their numbers.
            rows_read, bad_lines = _careful_ndjson(_ndjson_bytes(source), options)
            return read_file(source, options, raw=rows_read, malformed=bad_lines, keep_row=keep_row)
        raise UnreadableInputError(_describe_read_error(name, source, exc)) from exc
    json_keys = _json_keys_found(frame, columns, options, from_json) if from_json else {}
    rows = frame.height + (0 if malformed is None else malformed.height)
    filtered = 0
    if keep is not None:
        # Left out by --filter or --max-send-delay before any check: counted, never rejected.
        filtered = frame.height - int(frame.get_column(KEEP).sum())
        frame = frame.filter(pl.col(KEEP)).drop(KEEP)
    if options.require_session_id:
        # Snowplow leaves out the events without a session id (--require-session-id): counted as filtered.
        before = frame.height
        frame = keyed_by_session(frame, columns, source=name)
        filtered += before - frame.height
    # Which rows are invalid, as flags (cheap); their reasons and messages only when a row is flagged.
    flags = frame.select(
        is_invalid(
            valid_from=options.valid_from,
            valid_until=options.valid_until,
            aggregates=options.aggregates,
            heartbeat_time=options.heartbeat_timing,
        )
    ).to_series()
    flagged = bool(flags.any())
    units, dates = {}, 0
    if options.time_unit is None and frame.height:
        # The units of the times read: a rejected row's (a bad time, an empty user id) is not one.
        times = frame.get_column(RAW_TIME)
        read_times = times.filter(~flags) if flagged else times
        units = epoch_unit_counts(read_times)
        if set(units) == {"s"}:
            dates = date_number_count(read_times)
    notes = ReadNotes(json_keys, units, dates)
    if not part and window is None:
        notes.give(name)
        notes = ReadNotes()
    raw_text = [RAW_TIME, *raw_columns(options.aggregates, heartbeat_time=options.heartbeat_timing)]
    # A CSV whose records span lines: the fast reader's row numbers made lines.
    physical = (
        physical_rows(source, options.encoding)
        if malformed is None and (flagged or keep_row) and not rows_are_lines
        else None
    )
    if physical is not None:
        dtype = frame.schema[ROW]
        frame = frame.with_columns(physical(pl.col(ROW)).cast(dtype))
        original = original.with_columns(physical(pl.col(ROW)).cast(dtype))
    if options.on_invalid == "fail":
        if malformed is not None and malformed.height:
            raise_malformed(name, malformed, what=_format_name(source))
        if flagged:
            # The rows' own messages; check_events raises for every reason invalid_reason gives.
            check_events(
                frame,
                source=name,
                columns=columns,
                where=lambda row: where_row(source, row),
                valid_from=options.valid_from,
                valid_until=options.valid_until,
                timezone=options.input_timezone,
                aggregates=options.aggregates,
                heartbeat_time=options.heartbeat_timing,
                hide_values=options.anonymize_ip or options.user_id_secret is not None,
            )
        return FileRead(frame.drop(*raw_text, *([] if keep_row else [ROW])), None, rows, filtered, notes)
    invalid = frame.filter(flags).select(
        ROW,
        invalid_reason(
            valid_from=options.valid_from,
            valid_until=options.valid_until,
            timezone=options.input_timezone,
            aggregates=options.aggregates,
            heartbeat_time=options.heartbeat_timing,
        ),
        *_read_values(frame.schema, options),
    )
    good = (frame.filter(~flags) if flagged else frame).drop(*raw_text, *([] if keep_row else [ROW]))
    rejects = _private_rejects(
        _rejects(original, invalid, malformed, source=source, name=name),
        options,
        columns,
        from_json,
        logins,
        in_turn,
    )
    return FileRead(good, rejects, rows, filtered, notes)


def _private_rejects(
    rejects: pl.DataFrame | None,
    options: ReadOptions,
    columns: S.ColumnMap | None,
    from_json: Mapping[str, str] | None = None,
    logins: Sequence[str] = (),
    in_turn: Mapping[str, Sequence[str]] | None = None,
) -> pl.DataFrame | None:
    """The rejects file is an output too: personal data kept out of it as the options say.

    A malformed row's raw line may hold anything: it is left out. A row rejected before its columns
    were found (a malformed log or JSON line) has no address or user id column to hide. A text column of
    JSON objects that the address or a user id was read from (``from_json``: PostHog's ``properties``,
    see io/jsontext.py) holds it as sent, and is left out as a raw line is. Every column a role is read
    from in turn (``in_turn``: a preset's ``properties.ip`` and ``properties.$ip``) is hidden as the
    role's column. A copy of the address or id in another column of the row (the same text as the
    column's, or as the value the row was read with: :func:`_read_values`' columns, dropped here) is
    hidden as the value is.
    """
    if rejects is None or not (options.anonymize_ip or options.user_id_secret is not None):
        return rejects
    private = rejects.lazy().drop("raw_line", strict=False)
    turns = in_turn or {}
    ips: list[str | None] = []
    ids: list[str | None] = []
    if columns is not None and options.anonymize_ip:
        ips = [*turns.get(S.IP, ()), columns.ip]
    if columns is not None and options.user_id_secret is not None:
        # The user id and the login id (--stitch-col, --user-fallback-col: Segment's userId, often an
        # e-mail address) alike.
        ids = [columns.user_id, columns.stitch, columns.user_fallback, *logins]
        if options.require_session_id:
            # A row without a user id takes its session id as one: every session id is hidden as one
            # (sessionize.partition.hidden_ids), and so are its copies.
            ids += [*turns.get(S.CLIENT_SESSION, ()), columns.client_session_id]
    if from_json:
        sources = [from_json[c] for c in [*ips, *ids] if c is not None and c in from_json]
        private = private.drop(sources, strict=False)
    schema = private.collect_schema()
    read = [name for name in schema if name.startswith(_READ_PREFIX)]
    secret = options.user_id_secret

    def hashed(frame: pl.LazyFrame, column: str) -> pl.LazyFrame:
        assert secret is not None
        return hash_user_ids(frame, secret=secret, column=column)

    hidden: dict[str, Hide] = {c: anonymize_ips for c in ips if c is not None and c in schema}
    for column in ids:
        if column is not None and column in schema:
            hidden.setdefault(column, hashed)
    # A copy of a hidden value in another column of the same row (PostHog's SDK sends the user id again as
    # properties.distinct_id, flattened to properties_distinct_id) is hidden as the value itself is.
    others = [
        n
        for n, dtype in schema.items()
        if dtype == pl.String and n not in hidden and n not in REJECTS_COLUMNS and n not in read
    ]
    strings = [(name, hide) for name, hide in hidden.items() if schema[name] == pl.String]
    strings += [(name, anonymize_ips if name == _READ_IP else hashed) for name in read]
    private = hide_copies(private, others, strings).drop(read)
    for name, hide in hidden.items():
        private = hide(private, name)
    return private.collect(engine="in-memory")


#: The values a rejected row was read with (its address, user id, login id, session id), carried into
#: its rejects row under these names for :func:`_private_rejects`, which hides their copies and drops them.
_READ_PREFIX = "\x00read_"
_READ_IP = f"{_READ_PREFIX}ip"


def _read_values(schema: pl.Schema, options: ReadOptions) -> list[pl.Expr]:
    """The values a rejected row was read with that the privacy options hide (see :func:`_private_rejects`):
    the row's address as read (from the column that had one: a preset reads several in turn) and its ids
    (a user id or address read from a JSON text column is in no column of the rejects)."""
    values = []
    if options.anonymize_ip and S.IP in schema:
        values.append(pl.col(S.IP).alias(_READ_IP))
    if options.user_id_secret is not None:
        ids = [S.USER, S.STITCH_ID, *([S.CLIENT_SESSION] if options.require_session_id else [])]
        values += [pl.col(name).alias(f"{_READ_PREFIX}{name}") for name in ids if name in schema]
    return values


def as_text(name: str, dtype: pl.DataType) -> pl.Expr:
    """Column ``name`` (of type ``dtype``) as text, as a rejects file shows it: a list, array or object as
    its JSON (``[{"key":"page_location","value":{...}}]``: GA4's ``event_params``, which no cast makes
    text); any other value cast."""
    column = pl.col(name)
    if not dtype.is_nested():
        return column.cast(pl.String)
    return json_text(_hex_bytes(column, dtype)).alias(name)


def _holds_bytes(dtype: PolarsDataType) -> bool:
    if dtype == pl.Binary:
        return True
    if isinstance(dtype, pl.List | pl.Array):
        return _holds_bytes(dtype.inner)
    if isinstance(dtype, pl.Struct):
        return any(_holds_bytes(field.dtype) for field in dtype.fields)
    return False


def _hex_bytes(value: pl.Expr, dtype: PolarsDataType) -> pl.Expr:
    """``value`` with the bytes nested in it as hex text: Polars' JSON writer panics on bytes ("Writing
    BinaryView to JSON"), and a list of bytes cannot be cast to text (which is refused for invalid UTF-8)."""
    if not _holds_bytes(dtype):
        return value
    if dtype == pl.Binary:
        return value.bin.encode("hex")
    if isinstance(dtype, pl.Array):
        return _hex_bytes(value.arr.to_list(), pl.List(dtype.inner))
    if isinstance(dtype, pl.List):
        return value.list.eval(_hex_bytes(pl.element(), dtype.inner))
    assert isinstance(dtype, pl.Struct)
    fields = [_hex_bytes(value.struct.field(f.name), f.dtype).alias(f.name) for f in dtype.fields]
    return pl.when(value.is_not_null()).then(pl.struct(fields))


def _rejects(
    scan: pl.LazyFrame, invalid: pl.DataFrame, malformed: pl.DataFrame | None, *, source: InputFile, name: str
) -> pl.DataFrame | None:
    """The rejected rows with all their original columns (as text), file, row and reason. An input
    column named as one of the rejects' own (a rejects file sent again, an export with a
    ``source_file`` column) is kept as ``input_<name>``: the file, row and reason are this run's."""
    parts: list[pl.DataFrame] = []
    if invalid.height:
        columns = scan.collect_schema()
        own = [c for c in columns if c not in (ROW, REASON)]
        renamed: dict[str, str] = {}
        for column in own:
            if column in (*REJECTS_COLUMNS, "raw_line") or column.startswith(_READ_PREFIX):
                renamed[column] = fresh_name(f"input_{column}", [*own, *renamed.values()])
        original = (
            scan.join(invalid.lazy(), on=ROW, how="inner", maintain_order="left")
            .with_columns(as_text(column, columns[column]) for column in own)
            .rename(renamed)
            .collect(engine="in-memory")
        )
        parts.append(
            original.with_columns(
                pl.lit(name).alias("source_file"),
                source_row(source, pl.col(ROW)).cast(pl.Int64).alias("source_row"),
            )
            .rename({REASON: "reject_reason"})
            .drop(ROW)
        )
    if malformed is not None and malformed.height:
        parts.append(malformed.with_columns(pl.lit(name).alias("source_file")))
    if not parts:
        return None
    table = pl.concat(parts, how="diagonal_relaxed").sort("source_row")
    extra = [c for c in table.columns if c not in REJECTS_COLUMNS and c != "raw_line"]
    return table.select(*extra, *REJECTS_COLUMNS, *(["raw_line"] if "raw_line" in table.columns else []))


def raise_malformed(name: str, malformed: pl.DataFrame, *, what: str = "CSV") -> None:
    """Raise :class:`MalformedRowsError` for the malformed rows of one file."""
    examples = "; ".join(
        f"line {line}: {reason}"
        for line, reason in malformed.select("source_row", "reject_reason")
        .head(MAX_REPORTED_ROWS)
        .iter_rows()
    )
    lines = malformed.get_column("raw_line") if "raw_line" in malformed.columns else None
    first = lines[0] if lines is not None and len(lines) else None
    if what == "NDJSON" and isinstance(first, str) and first.lstrip().startswith("["):
        # A .json export of one array (jq -s, a REST API's dump), not JSON lines.
        raise MalformedRowsError(
            f"{name}: {malformed.height} row(s) cannot be parsed as {what} ({examples}): the file looks like "
            f"one JSON array, not one object per line. Convert it ({_jq_command(name)}) and run the new file."
        )
    if what == "NDJSON":
        # JSON lines are UTF-8 (--encoding is for CSV, TSV and logs): a Latin-1 byte makes a line malformed.
        raise MalformedRowsError(
            f"{name}: {malformed.height} row(s) cannot be parsed as {what} ({examples}). Fix the file (JSON "
            "lines are UTF-8: a file in another encoding, iconv -f LATIN1 -t UTF-8 converts), or pass "
            f"{SKIP_HINT}."
        )
    raise MalformedRowsError(
        f"{name}: {malformed.height} row(s) cannot be parsed as {what} ({examples}). Fix the file, give its "
        f"encoding with --encoding, or pass {SKIP_HINT}."
    )


def _jq_command(name: str) -> str:
    """The command that turns ``name``, a file of one JSON array, into JSON lines in a new file next to
    it: ``x.json`` into ``x.ndjson``, and ``x.ndjson`` into ``x.lines.ndjson`` (not ``x.ndjson.ndjson``,
    nor the file itself, which the shell would empty before jq reads it)."""
    jq = "jq -c '.[]'"
    if name == "standard input":
        return f"... | {jq} > events.ndjson"
    gzipped = split_gz(name)[1]
    stem = name[:-3] if gzipped else name
    base, suffix = os.path.splitext(stem.rstrip("/").rsplit("/", 1)[-1] if "://" in stem else stem)
    target = shlex.quote(base + (".lines.ndjson" if suffix.lower() == ".ndjson" else ".ndjson"))
    if "://" in name:  # a URL: fetched, into the working directory
        return f"curl -sL {shlex.quote(name)}{' | gunzip -c' if gzipped else ''} | {jq} > {target}"
    if gzipped:
        return f"gunzip -c {shlex.quote(name)} | {jq} > {target}"
    return f"{jq} {shlex.quote(name)} > {target}"


def check_header(source: InputFile, columns: Sequence[str]) -> None:
    """Refuse a CSV or TSV header with a carriage return inside a column name: the file's lines end
    with "\r" alone (classic Mac OS, Excel's "CSV (Macintosh)"), so that the whole file reads as one
    header line, or with "\r\r\n" (every last value would keep a "\r"), or the header itself is
    broken. Read as it was, a classic Mac OS file held no events and the run ended well (review 44). And
    a header with NUL bytes: UTF-16 text (:func:`check_not_utf16`), or else no text at all."""
    if source.format not in ("csv", "tsv"):
        return
    if any("\x00" in name for name in columns):
        # UTF-16 without a byte order mark read as UTF-8 (rows handed over: --buckets windows, Spark's
        # splits; a whole read checks the file's first bytes first): the header line as it was read.
        separator = "\t" if source.format == "tsv" else ","
        check_not_utf16(source, separator.join(columns).encode("utf-8"))
        raise UnreadableInputError(
            f"{source.shown}: its header holds NUL bytes: the file is not {source.format.upper()} text "
            "(binary data, or another format). Check the file, or give its format with --input-format."
        )
    broken = next((name for name in columns if "\r" in name), None)
    if broken is not None:
        shown = broken if len(broken) <= 60 else broken[:60] + "..."
        raise UnreadableInputError(
            f"{source.shown}: line 1 (the header) holds a carriage return inside a column name ({shown!r}): "
            "the file's lines end with a carriage return alone (classic Mac OS, Excel's CSV (Macintosh)) or "
            "with two before the line feed (Python's csv module on Windows, without newline=''), or its "
            "header is broken. Convert the line ends (tr '\\r' '\\n' < FILE > NEW.csv: blank lines are "
            "skipped) or mend the header, and run again."
        )


def _describe_read_error(name: str, source: InputFile, exc: BaseException) -> str:
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, FileNotFoundError):
        return f"{name}: the file disappeared or cannot be found ({detail})."
    if isinstance(exc, PermissionError):
        return permission_denied(name)
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return (
            f"{name}: no space left on the device while reading it through temporary files. Free "
            "space in the temporary directory, or give one with room with --temp-dir."
        )
    if ROW in detail and any(word in detail for word in ("occurrence", "already exists", "duplicate")):
        return (
            f"{name}: it has a column named {ROW!r}, a name sessionize keeps for row numbers. Rename "
            "that column in the file (or leave it out) and run again."
        )
    duplicated = re.search(r"column (?:with )?name '([^']*)'", detail)
    if duplicated is not None and ("more than one occurrence" in detail or "de-duplication" in detail):
        # Two columns of one name (a Parquet file a tool wrote so; a CSV header x,x,x_duplicated_0, where
        # Polars' name for the second x is taken): no reader can tell them apart.
        return (
            f"{name}: two of its columns are named {duplicated.group(1)!r} ({detail}). Rename one of them "
            "in the file (or leave it out) and run again."
        )
    if source.format == "parquet":
        return (
            f"{name}: not a readable Parquet file ({detail}). Check that the file is complete, "
            "or give its real format with --input-format."
        )
    return (
        f"{name}: cannot be read as {source.format.upper()} ({detail}). "
        "Check the file, or give its real format with --input-format."
    )


def can_window(source: InputFile, options: ReadOptions) -> bool:
    """Whether :func:`iter_reads` can read ``source`` a slice at a time (else it reads it whole): any
    file on disk but standard input, a pipe or a device. A malformed CSV, and a file whose bytes do not
    decode, are still read whole (see :func:`iter_reads`)."""
    return not source.is_stream


def estimate_rows(source: InputFile) -> int:
    """About how many events ``source`` holds: exact for Parquet, from the size for text files."""
    if source.is_stream:
        return 0
    if source.format == "parquet":
        try:
            if parquet_types(source.path).utc_schema is not None:
                import pyarrow.parquet as pq

                return int(pq.read_metadata(source.path).num_rows)
            rows = pl.scan_parquet(source.path, glob=False).select(pl.len())
            return int(rows.collect(engine="in-memory").item())
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise UnreadableInputError(_describe_read_error(source.path, source, exc)) from exc
    compressed = split_gz(source.path)[1]
    try:
        size = os.path.getsize(source.path)
        with (gzip.open if compressed else open)(source.path, "rb") as handle:
            try:
                sample = handle.read(1 << 16)
            except (OSError, EOFError, zlib.error):
                sample = b""
    except OSError as exc:  # not readable (permissions), gone, a directory in its place
        raise UnreadableInputError(_describe_read_error(source.path, source, exc)) from exc
    lines = max(sample.count(b"\n"), 1)
    # A gzipped log or CSV is about 5-10x smaller than its text: count it as 8x.
    return int(size * (8 if compressed else 1) / max(len(sample) / lines, 1.0))


def iter_reads(
    source: InputFile, options: ReadOptions, chunk_rows: int, scratch: Path | None = None
) -> Iterator[FileRead]:
    """Read one file ``chunk_rows`` data rows at a time (see :func:`can_window`), or whole.

    Parquet by row slices; CSV, TSV and NDJSON by streaming windows after a pass that checks that
    the whole file parses; access logs by windows of lines. A gzipped file, or a CSV in another
    encoding than UTF-8, is first decompressed or decoded into ``scratch`` (without it, it is read
    whole). A file that does not parse or decode is read whole, as in memory, so that the same rows
    are rejected. Row numbers in errors and rejects are the file's own, whichever slice they are in.
    """
    if not can_window(source, options):
        yield read_file(source, options)
        return
    if source.format == "parquet":
        notes = ReadNotes()
        for first in range(0, max(estimate_rows(source), 1), chunk_rows):
            sliced = read_file(source, options, window=(first, chunk_rows))
            notes += sliced.notes
            yield sliced
        notes.give(source.shown)
        return
    copy = None
    if source.format == "snowplow":
        line_windows = _guarded(lambda: _enriched_windows(source, chunk_rows), source)
        reads: Iterator[FileRead] | None = None
        if line_windows is not None:
            reads = (
                read_file(source, options, raw=parsed, malformed=bad, part=True)
                for parsed, bad in line_windows
            )
    elif source.format in ACCESS_LOG_FORMATS:
        log_windows = None
        if is_utf8(options.encoding):
            log_windows = _guarded(lambda: _log_windows(source, options, chunk_rows), source)
        elif scratch is not None:
            # In another encoding: decoded into a UTF-8 copy first, as a CSV is (none when its bytes do not
            # decode: it is then read whole, so that those lines are rejected as in memory).
            copy = _decoded_copy(source, options, scratch)
            log_path = copy
            if log_path is not None:
                log_windows = _guarded(lambda: _log_windows(source, options, chunk_rows, log_path), source)
        reads = None
        if log_windows is not None:
            reads = (
                read_file(source, options, raw=parsed, malformed=bad, part=True)
                for parsed, bad in log_windows
            )
    else:
        path: str | None = source.path
        if (
            split_gz(source.path)[1]
            or (source.format != "ndjson" and not is_utf8(options.encoding))
            or (source.format == "ndjson" and starts_with_bom(source.path))
        ):
            path = copy = None if scratch is None else _decoded_copy(source, options, scratch)
        reads = None
        if path is not None and os.path.getsize(path) > 0:
            text_path = path
            if source.format == "ndjson":
                windows = _guarded(lambda: _ndjson_windows(text_path, chunk_rows, options), source)
            else:
                separator = "\t" if source.format == "tsv" else ","
                windows = _guarded(lambda: _csv_windows(text_path, separator, chunk_rows), source)
            if windows is not None:
                reads = (read_file(source, options, raw=frame, part=True) for frame in windows)
    read_any = False
    notes = ReadNotes()
    try:
        while reads is not None:
            try:
                part = next(reads, None)
            except (pl.exceptions.PolarsError, OSError) as exc:
                raise UnreadableInputError(_describe_read_error(source.path, source, exc)) from exc
            if part is None:
                break
            read_any = True
            notes += part.notes
            yield part
    finally:
        if copy is not None:
            Path(copy).unlink(missing_ok=True)
    if not read_any:
        # Empty, header only, malformed or undecodable: read whole, as in memory.
        yield read_file(source, options)
    # The file's warnings once, with its figures (ReadNotes).
    notes.give(source.shown)


def _guarded(open_windows: Callable[[], _T | None], source: InputFile) -> _T | None:
    """``open_windows()``, with the read errors of its checking pass named as a whole read names them."""
    try:
        return open_windows()
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise UnreadableInputError(_describe_read_error(source.path, source, exc)) from exc


_Frame = TypeVar("_Frame", pl.DataFrame, pl.LazyFrame)


def drop_duplicate_events(events: _Frame, *, dedupe: bool = False) -> _Frame:
    """Drop repeated events: a user's events that share an event id (the first is kept, as
    Snowplow and Segment do; events without an id are kept), and with ``dedupe`` exact copies.

    Both depend only on one user's events, so bucket by bucket gives the same result as all at once.
    A DataFrame without any event id skips the first test.
    """
    if isinstance(events, pl.LazyFrame) or events.get_column(S.EVENT_ID).null_count() < events.height:
        events = events.filter(
            pl.col(S.EVENT_ID).is_null() | pl.struct(S.USER, S.EVENT_ID).is_first_distinct()
        )
    if dedupe:
        events = events.unique(maintain_order=True, keep="first")
    return events


@dataclass
class ReadResult:
    """Every input read: valid events (in input order), rejected rows and the counts."""

    events: pl.DataFrame
    rejects: pl.DataFrame | None
    files: list[InputFile]
    rows_read: int
    duplicates_removed: int
    filtered: int = 0

    @property
    def rejected(self) -> int:
        return 0 if self.rejects is None else self.rejects.height


def read_inputs(
    paths: Inputs,
    options: ReadOptions | None = None,
    *,
    input_format: str | None = None,
    dedupe: bool = False,
) -> ReadResult:
    """Read every input; drop duplicate events (same event id; or exact copies with ``dedupe``)."""
    options = options or ReadOptions()
    files = resolve_inputs(paths, input_format=input_format)
    reads = [read_file(source, options) for source in files]
    events = pl.concat([r.events for r in reads], how="vertical", rechunk=False)
    rejected = [r.rejects for r in reads if r.rejects is not None]
    before = events.height
    events = drop_duplicate_events(events, dedupe=dedupe)
    return ReadResult(
        events=events,
        rejects=pl.concat(rejected, how="diagonal_relaxed") if rejected else None,
        files=files,
        rows_read=sum(r.rows for r in reads),
        duplicates_removed=before - events.height,
        filtered=sum(r.filtered for r in reads),
    )


def read_events(paths: Inputs, *, input_format: str | None = None, **options: Any) -> pl.DataFrame:
    """Read every input into one canonical events frame, in input order; raise on invalid rows.

    ``paths`` are files, directories, glob patterns, ``-`` for CSV on stdin, or already resolved
    :class:`InputFile` objects (see :func:`resolve_inputs`). ``options`` are the reading options of
    ``sessionize run`` (``user_col``, ``time_unit``, ``timezone``, ``pageview_events``, ...).
    :func:`read_inputs` does the same and returns rejected rows and counts too.
    """
    read = RunConfig.from_options(**options).read
    return read_inputs(paths, read, input_format=input_format).events
