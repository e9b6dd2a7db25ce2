"""Files that grow, and logrotate's ``compress``, under ``--state`` (review 58 F2 and F3): whatever is
written to an input during a run or between runs, the runs together read each line once, as one run
over the final files does."""

from __future__ import annotations

import gzip
import json
import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import sessionize
from sessionize.engines import incremental
from tests.helpers import run_cli

T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
UA = "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0"
HEADERS = {"log": "", "csv": "user_id,timestamp,url\n", "ndjson": ""}


def lines(kind: str, start: int, count: int) -> str:
    """``count`` events from number ``start`` on, one a second, a visitor for each 20, as ``kind``
    writes them (an access log's, a CSV's or NDJSON lines, without a header)."""
    out = []
    for i in range(start, start + count):
        moment, visitor = T0 + timedelta(seconds=i), f"10.0.{i // 20}.1"
        if kind == "log":
            out.append(
                f'{visitor} - - [{moment:%d/%b/%Y:%H:%M:%S +0000}] "GET /p/{i} HTTP/1.1" 200 5 "-" "{UA}"\n'
            )
        elif kind == "csv":
            out.append(f"{visitor},{moment:%Y-%m-%dT%H:%M:%SZ},https://shop.example/p/{i}\n")
        else:
            record = {"user_id": visitor, "timestamp": f"{moment:%Y-%m-%dT%H:%M:%SZ}", "url": f"/p/{i}"}
            out.append(json.dumps(record) + "\n")
    return "".join(out)


def name_of(kind: str) -> str:
    return {"log": "access.log", "csv": "events.csv", "ndjson": "events.ndjson"}[kind]


def cron_run(inputs: str | Path, state: Path, out: Path, *flags: str) -> dict[str, Any]:
    """One incremental run through the CLI: its JSON summary line (exit code 0 asserted)."""
    result = run_cli(
        inputs, "--state", state, "--output-dir", out, "--no-geo", "--log-format", "json", *flags
    )
    assert result.exit_code == 0, result.stderr
    summary: dict[str, Any] = json.loads(result.stderr.strip().splitlines()[-1])
    return summary


def events_written(out: Path) -> int:
    return int(
        pl.scan_parquet(out, hive_partitioning=True).select(pl.col("event_count").sum()).collect().item()
    )


def one_run(paths: list[Path], **options: Any) -> pl.DataFrame:
    columns = ["user_id", "session_start", "event_count", "landing_page", "exit_page"]
    return sessionize.run(paths, no_geo=True, **options).sessions.select(columns).sort(columns)


def written_after_the_hash_pass(
    monkeypatch: pytest.MonkeyPatch, path: Path, write: Callable[[Path], None]
) -> None:
    """``write`` changes ``path`` right after the run's hash pass over it, before the file is read (as a
    live log's writer does: review 58's race.py)."""
    real = incremental._scan_file

    def scan_then_write(name: str, prefixes: Any = (), encoding: str = "utf-8") -> Any:
        found = real(name, prefixes, encoding)
        if Path(name) == path:
            write(path)
        return found

    monkeypatch.setattr(incremental, "_scan_file", scan_then_write)


def appending(text: str) -> Callable[[Path], None]:
    def append(path: Path) -> None:
        with path.open("a", encoding="utf-8") as handle:
            handle.write(text)

    return append


# --- F2: lines written between the hash pass and the read ----------------------------------------


@pytest.mark.parametrize("kind", ["log", "csv", "ndjson"])
def test_lines_appended_during_a_first_read_are_read_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """Review 58 F2: the first run hashed the live file and recorded its size, then read it to its end,
    lines appended in between included; the next run took everything after the recorded size as new
    and read those lines again (1,300 events for 1,200 lines, exit 0). A run reads what it hashed: the
    lines appended meanwhile are the next run's."""
    path = tmp_path / name_of(kind)
    path.write_text(HEADERS[kind] + lines(kind, 0, 100), encoding="utf-8")
    state, out = tmp_path / "state", tmp_path / "out"
    written_after_the_hash_pass(monkeypatch, path, appending(lines(kind, 100, 10)))
    first = cron_run(path, state, out)
    monkeypatch.undo()
    assert first["rows_read"] == 100
    appending(lines(kind, 110, 10))(path)
    second = cron_run(path, state, out)
    assert second["files_grown"] == [str(path)]
    assert second["rows_read"] == 20
    assert events_written(out) == 120
    columns = ["user_id", "session_start", "event_count", "landing_page", "exit_page"]
    table = pl.read_parquet(out / "**" / "*.parquet").select(columns).sort(columns)
    assert table.equals(one_run([path]))


def test_a_line_half_written_when_hashed_is_read_whole_by_the_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A live log hashed while its writer was in the middle of a line, then written on during the run:
    the run reads up to the last complete line it hashed, the next run the line from its start (no
    half line rejected as malformed, which stops a default run)."""
    path = tmp_path / "access.log"
    text = lines("log", 0, 60)
    cut = len(lines("log", 0, 50)) + 30
    path.write_text(text[:cut], encoding="utf-8")
    state, out = tmp_path / "state", tmp_path / "out"
    written_after_the_hash_pass(monkeypatch, path, appending(text[cut:]))
    first = cron_run(path, state, out)
    monkeypatch.undo()
    assert (first["rows_read"], first["rejected"]) == (50, 0)
    second = cron_run(path, state, out)
    assert (second["rows_read"], second["rejected"], second["files_grown"]) == (10, 0, [str(path)])
    assert events_written(out) == 60


def test_a_log_truncated_during_a_first_read_stops_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """copytruncate between the hash pass and the read: what the run read is not what it hashed. It
    stops before anything is written, and the next run reads the file as it is then."""
    path = tmp_path / "access.log"
    path.write_text(lines("log", 0, 50), encoding="utf-8")
    state, out = tmp_path / "state", tmp_path / "out"

    def copytruncate(log: Path) -> None:
        shutil.copy(log, tmp_path / "access.log.1")
        log.write_text(lines("log", 50, 5), encoding="utf-8")

    written_after_the_hash_pass(monkeypatch, path, copytruncate)
    result = run_cli(path, "--state", state, "--output-dir", out, "--no-geo")
    monkeypatch.undo()
    assert result.exit_code != 0
    assert "changed while this run read it" in " ".join(result.stderr.split())
    assert not out.exists() or not any(out.rglob("*.parquet"))
    again = cron_run(path, state, out)
    assert again["rows_read"] == 5


# --- F3: logrotate's compress of a log that grew after the last run ------------------------------


def rotation(kind: str, tmp_path: Path, rotate: Callable[[Path], None]) -> tuple[dict[str, Any], Path]:
    """Run 1 over ``logs/*`` reads 100 lines; 50 more are written; ``rotate(live file)`` rotates it (and
    writes lines 150 on to the new live file); run 2 reads ``logs/*`` again."""
    logs, state, out = tmp_path / "logs", tmp_path / "state", tmp_path / "out"
    logs.mkdir()
    live = logs / name_of(kind)
    live.write_text(HEADERS[kind] + lines(kind, 0, 100), encoding="utf-8")
    assert cron_run(logs / "*", state, out)["rows_read"] == 100
    appending(lines(kind, 100, 50))(live)
    rotate(live)
    return cron_run(logs / "*", state, out), out


def compressed_name(live: Path) -> Path:
    """logrotate's name for ``live`` compressed (``access.log.1.gz``; a CSV's ``events-1.csv.gz``, whose
    format its name still tells)."""
    if live.suffix == ".log":
        return live.with_name(live.name + ".1.gz")
    return live.with_name(f"{live.stem}-1{live.suffix}.gz")


def compressed(live: Path) -> Path:
    gz = compressed_name(live)
    with gzip.open(gz, "wb") as handle:
        handle.write(live.read_bytes())
    return gz


@pytest.mark.parametrize("kind", ["log", "csv", "ndjson"])
def test_a_log_compressed_by_logrotate_after_it_grew_is_read_from_where_the_last_run_stopped(
    tmp_path: Path, kind: str
) -> None:
    """Review 58 F3: logrotate's ``compress`` without ``delaycompress`` of a log that grew since the last
    run (access.log -> access.log.1.gz, a new access.log) had the .gz read whole, its 100 lines already
    processed with it (2,150 events for 1,150 lines, exit 0). A .gz file that holds what a run read at
    another path with the same first lines grew: only its new lines are read."""

    def rotate(live: Path) -> None:
        compressed(live)
        live.write_text(HEADERS[kind] + lines(kind, 150, 30), encoding="utf-8")

    second, out = rotation(kind, tmp_path, rotate)
    gz = str(compressed_name(tmp_path / "logs" / name_of(kind)))
    assert (second["files_grown"], second["rows_read"]) == ([gz], 80)
    assert events_written(out) == 180
    whole = tmp_path / ("whole." + name_of(kind).rsplit(".", 1)[-1])
    whole.write_text(HEADERS[kind] + lines(kind, 0, 180), encoding="utf-8")
    columns = ["user_id", "session_start", "event_count", "landing_page", "exit_page"]
    table = pl.read_parquet(out / "**" / "*.parquet").select(columns).sort(columns)
    assert table.equals(one_run([whole]))


def test_copytruncate_and_compress_of_a_grown_log_reads_each_line_once(tmp_path: Path) -> None:
    """Review 58 F3 with ``copytruncate``: the live log copied to access.log.1.gz and emptied in place,
    then written on."""

    def rotate(live: Path) -> None:
        compressed(live)
        with live.open("r+", encoding="utf-8") as handle:
            handle.truncate(0)
            handle.write(lines("log", 150, 30))

    second, out = rotation("log", tmp_path, rotate)
    assert second["rows_read"] == 80
    assert events_written(out) == 180


@pytest.mark.parametrize("kind", ["csv", "log"])
@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_a_utf16_file_grows_by_whole_characters(kind: str, encoding: str, tmp_path: Path) -> None:
    """A line break in UTF-16 is two bytes, and the byte 0x0A is also half of other characters (``上``,
    U+4E0A, is ``0A 4E`` in UTF-16-LE). Cut at that byte, a grown UTF-16 CSV lost its header and its new
    rows were read as none (exit 0), and a grown log's new lines were undecodable. Runs over a file that
    grows, a line at a time half written, read each line once, as one run over the final file does, and
    number its lines as that run does."""
    path = tmp_path / name_of(kind)
    append = encoding if encoding not in ("utf-16", "utf-32") else f"{encoding}-le"  # the BOM once
    # 上 in the text: its byte 0x0A is no line break.
    first = HEADERS[kind] + lines(kind, 0, 20).replace("/p/1", "/上/1")
    later = lines(kind, 20, 21).replace("/p/3", "/上/3")
    path.write_bytes(first.encode(encoding))
    state, out = tmp_path / "state", tmp_path / "out"
    flags = ("--encoding", encoding)
    runs = [cron_run(path, state, out, *flags)]
    cut = len(later) - 30  # the last line half written
    with open(path, "ab") as handle:
        handle.write(later[:cut].encode(append))
    runs.append(cron_run(path, state, out, *flags))
    with open(path, "ab") as handle:
        handle.write(later[cut:].encode(append))
    runs.append(cron_run(path, state, out, *flags))
    assert [run["rows_read"] for run in runs] == [20, 20, 1]
    assert events_written(out) == 41
    whole = one_run([path], encoding=encoding)
    assert whole["event_count"].sum() == 41
    assert any("/上/1" in page for page in whole["exit_page"].to_list())
    written = pl.read_parquet(out / "**" / "*.parquet").select(whole.columns).sort(whole.columns)
    assert written.equals(whole)
    # A malformed line after them is named by its line in the file, as one run over it names it.
    with open(path, "ab") as handle:
        handle.write(("not a line of this format,,,,\n" + lines(kind, 41, 1)).encode(append))
    failed = run_cli(path, "--state", state, "--output-dir", out, "--no-geo", *flags)
    expected = 2 + 41 if kind == "csv" else 1 + 41
    assert failed.exit_code == 1 and f"line {expected}" in " ".join(failed.stderr.split()), failed.stderr


def test_new_log_lines_that_start_with_a_bad_one_keep_the_files_format(tmp_path: Path) -> None:
    """A log's format is told by its first lines. New lines of a grown log that began with a bad one were
    "not in Apache/nginx combined, common or vhost_combined log format" (exit 1), named by the run's
    scratch copy, where one run over the file rejects that line alone."""
    path = tmp_path / "access.log"
    path.write_text(lines("log", 0, 5))
    state, out = tmp_path / "state", tmp_path / "out"
    cron_run(path, state, out)
    with open(path, "a") as handle:
        handle.write("garbage written by a crashing writer\n" + lines("log", 5, 1))
    grown = cron_run(path, state, out, "--on-invalid", "skip")
    assert (grown["rows_read"], grown["rejected"], grown["events"]) == (2, 1, 1)
    assert events_written(out) == 6
