"""One test per defect that the run's old shape caused where features met (issue 16, "Why").

Each drives the real CLI or ``sessionize.run`` on files on disk and checks what a user sees: the
summary, the files written, the files left alone.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from typer.testing import CliRunner, Result

import sessionize
from sessionize import io as sio
from sessionize import schema as S
from sessionize.cli import app
from sessionize.engines import incremental
from sessionize.errors import OutputError, StateError, UsageError
from sessionize.io.formats import OutputFormat
from sessionize.io.write import serialize
from tests.helpers import CITY_DB, KEYS, SAMPLE_DATA, T0, listing

#: Addresses the MaxMind test database locates, one it does not know, and a private one.
ADDRESSES = ["81.2.69.142", "89.160.20.112", "216.160.83.56", "2.125.160.216", "203.0.113.9", "10.0.0.1"]
BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"
BOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def write_events(path: Path, start: datetime, users: int = 12, *, bad_row: bool = False) -> Path:
    """A CSV of page views: every user two visits an hour apart, some users crawlers."""
    lines = ["user_id,timestamp,url,referrer,ip,user_agent"]
    for n in range(users):
        agent = BOT if n % 5 == 0 else BROWSER
        ip = ADDRESSES[n % len(ADDRESSES)]
        for visit in range(2):
            for step in range(3):
                moment = start + timedelta(hours=visit, minutes=n + step * 4)
                url = f"https://shop.example/p{step}"
                referrer = "https://www.google.com/" if step == 0 else url
                lines.append(f"u{n},{stamp(moment)},{url},{referrer},{ip},{agent}")
    if bad_row:
        lines.append(f"u99,not a time,https://shop.example/,,{ADDRESSES[0]},{BROWSER}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def invoke(*args: str | Path, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def summary(result: Result) -> dict[str, Any]:
    line: dict[str, Any] = json.loads(result.stderr.strip().splitlines()[-1])
    return line


# -- incremental runs print every figure of the summary --------------------------------------------


def test_incremental_summary_counts_located_sessions_and_bots(tmp_path: Path) -> None:
    events = write_events(tmp_path / "events.csv", T0)
    common: list[str | Path] = ["--geoip-db", CITY_DB, "--log-format", "json", "--valid-until", "2100-01-01"]
    whole = invoke("run", events, "-o", tmp_path / "all.parquet", *common)
    assert whole.exit_code == 0, whole.output
    cron = invoke("run", events, "--state", tmp_path / "st", "--output-dir", tmp_path / "out", *common)
    assert cron.exit_code == 0, cron.output
    expected, got = summary(whole), summary(cron)
    assert expected["bot_sessions"] == 6 and expected["geo"]["resolved"] > 0
    for key in ("sessions", "users", "bot_sessions", "geo"):
        assert got[key] == expected[key], key


# -- privacy options with rejected rows --------------------------------------------------------------

ACCESS_LOG = (
    '83.149.9.216 - - [17/May/2015:10:05:03 +0000] "GET /index.html HTTP/1.1" 200 203023 '
    '"http://semicomplete.com/" "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_9_1) Firefox/27.0"\n'
    "this line is not an access log line\n"
    '83.149.9.216 - - [17/May/2015:10:05:43 +0000] "GET /about.html HTTP/1.1" 200 171717 '
    '"http://semicomplete.com/index.html" "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_9_1) Firefox/27.0"\n'
)


@pytest.mark.parametrize(
    "privacy",
    [["--anonymize-ip"], ["--anonymize-ip=before-geo"], ["--hash-user-ids", "SECRET_FOR_TEST"]],
    ids=["anonymize", "anonymize-before-geo", "hash-user-ids"],
)
def test_privacy_options_with_skipped_malformed_lines(tmp_path: Path, privacy: list[str]) -> None:
    log = tmp_path / "access.log"
    log.write_text(ACCESS_LOG, encoding="utf-8")
    rejects = tmp_path / "rejects.csv"
    result = invoke(
        "run", log, "--on-invalid", "skip", "--rejects", rejects, "--no-geo", "-o", tmp_path / "s.parquet",
        *privacy, env={"SECRET_FOR_TEST": "s3cret"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert pl.read_parquet(tmp_path / "s.parquet").height == 1
    rejected = pl.read_csv(rejects)
    assert rejected.height == 1 and rejected.get_column("source_row").to_list() == [2]
    # The malformed line is kept as read only where it holds no address the options hide.
    assert "83.149.9.216" not in rejects.read_text(encoding="utf-8")


# -- Dask output --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "message"),
    [("-", "must be a directory|give a directory with -o DIR"), ("dask.csv", "not one file")],
)
def test_dask_refuses_a_table_output(
    tmp_path: Path, output: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("distributed")
    events = write_events(tmp_path / "events.csv", T0)
    monkeypatch.chdir(tmp_path)
    result = invoke("run", events, "--engine", "dask", "-o", output, "--no-geo")
    assert result.exit_code == 2
    assert pytest.importorskip("re").search(message, " ".join(result.stderr.replace("│", "").split()))
    assert result.stdout == ""
    assert listing(tmp_path) == ["events.csv"]


def test_dask_refuses_a_piped_stdout(tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    events = write_events(tmp_path / "events.csv", T0)
    # The CLI runner's stdout is not a terminal: as with `sessionize run ... | head`.
    result = invoke("run", events, "--engine", "dask", "--no-geo")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "directory" in result.stderr


@pytest.mark.slow
def test_dask_parts_are_invisible_until_the_run_publishes(tmp_path: Path) -> None:
    """A run killed after the workers wrote their parts leaves no part-*.parquet and no _SUCCESS."""
    pytest.importorskip("distributed")
    from sessionize.engines import dask as dask_engine
    from sessionize.partition import PartitionJob

    events = write_events(tmp_path / "events.csv", T0)
    out = tmp_path / "out"
    outcome = dask_engine.run_dask(
        [events],
        sio.ReadOptions(valid_until=datetime(2100, 1, 1, tzinfo=UTC)),
        PartitionJob(),
        output_dir=out,
        workers=1,
        publish=False,
    )
    assert not list(out.glob("part-*")) and not (out / "_SUCCESS").exists()
    assert outcome.part_files and all(Path(p).name.startswith(".part-") for p in outcome.part_files)
    # sessionize report does not read the hidden parts as a table
    report = invoke("report", out, "-o", tmp_path / "r.html")
    assert report.exit_code != 0
    outcome.publish()
    assert (out / "_SUCCESS").is_file()
    names = listing(out)
    assert names[0] == "_SUCCESS" and all(n.startswith("part-") for n in names[1:])
    assert pl.read_parquet(out / "part-*.parquet").height == outcome.session_count


# -- incremental: the state is the last thing written --------------------------------------------


def test_a_failed_rejects_write_leaves_the_state_and_the_retry_keeps_the_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = write_events(tmp_path / "events.csv", T0, bad_row=True)
    state, out, rejects = tmp_path / "st", tmp_path / "out", tmp_path / "rejects.csv"
    options: dict[str, Any] = {
        "state": state, "output_dir": out, "no_geo": True, "on_invalid": "skip", "rejects": rejects,
        "valid_until": "2100-01-01",
    }  # fmt: skip
    real = serialize  # as publish calls it (its name there is patched)

    def full_disk(frame: pl.DataFrame, handle: IO[bytes], fmt: OutputFormat, **kwargs: Any) -> None:
        if "reject_reason" in frame.columns:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(frame, handle, fmt, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(sio.publish, "serialize", full_disk)
        with pytest.raises(OutputError, match="No space left"):
            sessionize.run([events], **options)
    assert not rejects.exists()
    assert not (state / "CURRENT").exists()
    assert not list(out.rglob("*.parquet")), "partitions are published with the other outputs"
    retry = sessionize.run([events], **options)
    assert retry.incremental is not None and retry.incremental.files_processed == [str(events)]
    assert pl.read_csv(rejects).height == 1


# -- incremental identity -------------------------------------------------------------------------


def step(paths: list[Path], state: Path, out: Path, **options: Any) -> sessionize.RunResult:
    return sessionize.run(
        paths, state=state, output_dir=out, no_geo=True, valid_until="2100-01-01", **options
    )


def test_two_inputs_with_the_same_content_in_one_run_count_once(tmp_path: Path) -> None:
    first = write_events(tmp_path / "a.csv", T0)
    copy = tmp_path / "copy-of-a.csv"
    copy.write_bytes(first.read_bytes())
    result = step([first, copy], tmp_path / "st", tmp_path / "out")
    alone = sessionize.run([first], no_geo=True, valid_until="2100-01-01")
    assert result.incremental is not None and result.incremental.files_skipped == [str(copy)]
    assert (result.rows_read, result.events_read, result.session_count) == (
        alone.rows_read,
        alone.events_read,
        alone.session_count,
    )


def test_a_new_state_next_to_a_non_empty_output_dir_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    step([write_events(tmp_path / "a.csv", T0)], tmp_path / "st", out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(StateError, match="already holds sessions"):
        step([write_events(tmp_path / "b.csv", T0 + timedelta(days=1))], tmp_path / "new-state", out)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    result = invoke("run", tmp_path / "b.csv", "--state", tmp_path / "other", "--output-dir", out, "--no-geo")
    assert result.exit_code != 0
    assert "already holds sessions" in " ".join(result.stderr.replace("│", "").split())


def test_a_grown_log_has_only_its_new_lines_read(tmp_path: Path) -> None:
    full = write_events(tmp_path / "full.csv", T0, users=10)
    lines = full.read_text(encoding="utf-8").splitlines(keepends=True)
    live = tmp_path / "live.csv"
    live.write_text("".join(lines[:31]), encoding="utf-8")  # the header and 30 events
    state, out = tmp_path / "st", tmp_path / "out"
    first = step([live], state, out)
    assert first.rows_read == 30
    # The log grows, the last line still being written when the run reads it.
    live.write_text("".join(lines) + "u3,2024-05-01T1", encoding="utf-8")
    second = step([live], state, out)
    assert second.incremental is not None and second.incremental.files_grown == [str(live)]
    assert second.rows_read == len(lines) - 31
    table = pl.read_parquet(out / "**/*.parquet", hive_partitioning=False).drop("is_final").sort(KEYS)
    whole = sessionize.run([full], no_geo=True, valid_until="2100-01-01").sessions.sort(KEYS)
    assert_frame_equal(table, whole)
    # The partial line is read when it is complete, by the next run.
    live.write_text(
        "".join(lines) + f"u3,{stamp(T0 + timedelta(hours=1, minutes=20))},https://shop.example/x,,,\n"
    )
    third = step([live], state, out)
    assert third.rows_read == 1 and third.incremental is not None and third.incremental.files_grown


def test_a_grown_csv_record_still_being_written_waits_whole(tmp_path: Path) -> None:
    """A CSV record whose quoted field holds a newline (a user agent, an attacker's URL), half written
    when a run reads the grown file: it waits for the next run whole (its first line was read and
    rejected, then the rest rejected by the next run: one event lost, two rejects)."""
    live = write_events(tmp_path / "live.csv", T0, users=3)
    state, out = tmp_path / "st", tmp_path / "out"
    step([live], state, out)
    base = live.read_text(encoding="utf-8")
    at = stamp(T0 + timedelta(hours=3))
    complete = f"u1,{at},https://shop.example/,,,\n"
    half = f'u2,{at},"https://shop.example/a\n'  # the writer is inside the quoted field
    live.write_text(base + complete + half, encoding="utf-8")
    second = step([live], state, out, on_invalid="skip", rejects=tmp_path / "rejects2.csv")
    assert (second.rows_read, second.rejected) == (1, 0)
    rest = f'b",,,\nu2,{stamp(T0 + timedelta(hours=3, minutes=5))},https://shop.example/c,,,\n'
    live.write_text(base + complete + half + rest, encoding="utf-8")
    third = step([live], state, out, on_invalid="skip", rejects=tmp_path / "rejects3.csv")
    assert (third.rows_read, third.rejected) == (2, 0)
    table = pl.read_parquet(out / "**/*.parquet", hive_partitioning=False).drop("is_final").sort(KEYS)
    whole = sessionize.run([live], no_geo=True, valid_until="2100-01-01").sessions.sort(KEYS)
    assert_frame_equal(table, whole)
    assert "https://shop.example/a\nb" in table.get_column("landing_page").to_list()


def test_a_lone_quote_in_a_grown_csv_holds_nothing_back_past_the_readers_bounds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An attacker's lone quote opens a "record" that never ends: its line is read and rejected once
    more lines follow than a quoted field may span (the careful reader's bound), so one quote cannot
    hold the rest of a live log back for ever."""
    monkeypatch.setattr(sio.read, "MAX_RECORD_LINES", 5)
    live = write_events(tmp_path / "live.csv", T0, users=2)
    state, out = tmp_path / "st", tmp_path / "out"
    step([live], state, out)
    base = live.read_text(encoding="utf-8")
    lone = f'u1,{stamp(T0 + timedelta(hours=3))},"https://shop.example/lone,,,\n'
    after = [
        f"u1,{stamp(T0 + timedelta(hours=3, minutes=m))},https://shop.example/{m},,,\n" for m in range(1, 4)
    ]
    live.write_text(base + lone + "".join(after), encoding="utf-8")
    held = step([live], state, out, on_invalid="skip", rejects=tmp_path / "r1.csv")
    assert (held.rows_read, held.rejected) == (0, 0)  # within the bound: it may still be closed
    more = [
        f"u1,{stamp(T0 + timedelta(hours=3, minutes=m))},https://shop.example/{m},,,\n" for m in range(4, 9)
    ]
    live.write_text(base + lone + "".join(after + more), encoding="utf-8")
    read = step([live], state, out, on_invalid="skip", rejects=tmp_path / "r2.csv")
    assert read.rejected == 1 and read.rows_read == 9
    assert pl.read_csv(tmp_path / "r2.csv", infer_schema=False).get_column("reject_reason").to_list() == [
        "bad_quote"
    ]


def test_a_quote_inside_an_unquoted_value_holds_nothing_back(tmp_path: Path) -> None:
    """A quote in the middle of a value (``/s?q="x``) opens no quoted field: the lines after it in a
    grown CSV are read by the run that finds them, as one run over the file reads them (every quote was
    counted, and the lines waited until a thousand more came)."""
    live = write_events(tmp_path / "live.csv", T0, users=2)
    state, out = tmp_path / "st", tmp_path / "out"
    step([live], state, out)
    base = live.read_text(encoding="utf-8")
    more = [
        f'u1,{stamp(T0 + timedelta(hours=3))},https://shop.example/s?q="x,,,\n',
        *(
            f"u{n},{stamp(T0 + timedelta(hours=3, minutes=n))},https://shop.example/{n},,,\n"
            for n in range(3, 6)
        ),
    ]
    live.write_text(base + "".join(more), encoding="utf-8")
    grown = step([live], state, out, on_invalid="skip", rejects=tmp_path / "rejects.csv")
    whole = sessionize.run([live], no_geo=True, valid_until="2100-01-01", on_invalid="skip")
    assert grown.rows_read == 4 and grown.rejected == whole.rejected
    table = pl.read_parquet(out / "**/*.parquet", hive_partitioning=False).drop("is_final").sort(KEYS)
    assert_frame_equal(table, whole.sessions.sort(KEYS))


def grown_run(live: Path, state: Path, out: Path, rejects: Path) -> dict[str, Any]:
    """``sessionize run LIVE --state --output-dir`` (invalid rows set aside): its JSON summary."""
    result = invoke(
        "run",
        live,
        "--state",
        state,
        "--output-dir",
        out,
        "--no-geo",
        "--valid-until",
        "2100-01-01",
        "--on-invalid",
        "skip",
        "--rejects",
        rejects,
        "--log-format",
        "json",
    )
    assert result.exit_code == 0, result.stderr
    return summary(result)


def as_one_run(out: Path, live: Path) -> sessionize.RunResult:
    """One run over all of ``live`` (which rejects nothing), its sessions checked equal to the
    incremental runs' session table in ``out``."""
    table = pl.read_parquet(out / "**/*.parquet", hive_partitioning=False).drop("is_final").sort(KEYS)
    whole = sessionize.run([live], no_geo=True, valid_until="2100-01-01")
    assert whole.rejected == 0
    assert_frame_equal(table, whole.sessions.sort(KEYS))
    return whole


def test_a_quote_at_the_edge_of_a_value_in_a_grown_csv_holds_nothing_back(tmp_path: Path) -> None:
    """A quote that ends an unquoted value (``screen 12"``) counted as one closing a quoted field: the
    complete record looked open and waited (up to a thousand lines) in a grown CSV. It is read by the
    run that finds it, as one run over the whole file reads it."""
    live = write_events(tmp_path / "live.csv", T0, users=2)
    state, out, rejects = tmp_path / "st", tmp_path / "out", tmp_path / "rejects.csv"
    grown_run(live, state, out, rejects)
    at = stamp(T0 + timedelta(hours=3))
    with live.open("a", encoding="utf-8") as handle:
        handle.write(f'u1,{at},"https://shop.example/c",,,size 5" wide\n')
        handle.write(f'u1,{at},https://shop.example/tv,,,screen 12"\n')
    grown = grown_run(live, state, out, rejects)
    assert (grown["rows_read"], grown["rejected"]) == (2, 0)
    as_one_run(out, live)


def test_a_grown_csv_record_with_an_escaped_quote_is_read_by_the_run_that_completes_it(
    tmp_path: Path,
) -> None:
    """``"https://shop.example/a"",b"`` (an escaped quote before a separator, inside a quoted field)
    counted as a quote that closes a field: the complete record looked open and waited up to a thousand
    lines or 1 MiB, and every run in between added the same entry to the state again. It is read by the
    run that finds it; a run that finds no complete line (one still being written) adds no entry."""
    live = write_events(tmp_path / "live.csv", T0, users=2)
    state, out, rejects = tmp_path / "st", tmp_path / "out", tmp_path / "rejects.csv"
    grown_run(live, state, out, rejects)

    def entries() -> list[tuple[int, str]]:
        return [(entry["size"], entry["sha256"]) for entry in incremental.load_state(state).files]

    with live.open("a", encoding="utf-8") as handle:
        handle.write(f'u1,{stamp(T0 + timedelta(hours=3))},"https://shop.example/a"",b",,,\n')
    grown = grown_run(live, state, out, rejects)
    assert (grown["rows_read"], grown["rejected"]) == (1, 0)
    assert len(entries()) == len(set(entries())) == 2
    partial = f'u1,{stamp(T0 + timedelta(hours=3, minutes=1))},"https://shop.example/c,""d"""'
    with live.open("a", encoding="utf-8") as handle:
        handle.write(partial)  # no newline yet: still being written
    waiting = grown_run(live, state, out, rejects)
    assert waiting["rows_read"] == 0
    assert len(entries()) == len(set(entries())) == 2
    with live.open("a", encoding="utf-8") as handle:
        handle.write(",,,\n")
    completed = grown_run(live, state, out, rejects)
    assert (completed["rows_read"], completed["rejected"]) == (1, 0)
    assert len(entries()) == len(set(entries())) == 3
    sessions = as_one_run(out, live).sessions
    pages = set(sessions.get_column("landing_page")) | set(sessions.get_column("exit_page"))
    assert {'https://shop.example/a",b', 'https://shop.example/c,"d"'} <= pages


def test_a_grown_csv_record_whose_first_line_has_an_even_number_of_quotes_waits_whole(
    tmp_path: Path,
) -> None:
    """Review 46: the open record of a grown CSV was found by the number of quotes on its first line, so
    ``/s?q=sc"r,"https://ref.example/a`` (a quote in an unquoted value, then a quoted field that goes on
    over lines: two quotes) was not held back while it was being written: the run read it as a bad quote
    and the next run its rest as another. It waits for the run that finds it whole, as the careful
    reader joins it in one run over the file."""
    live = write_events(tmp_path / "live.csv", T0, users=2)
    state, out, rejects = tmp_path / "st", tmp_path / "out", tmp_path / "rejects.csv"
    grown_run(live, state, out, rejects)
    at = stamp(T0 + timedelta(hours=3))
    with live.open("a", encoding="utf-8") as handle:
        handle.write(f"u1,{at},https://shop.example/p0,,,\n")
        handle.write(f'u1,{at},https://shop.example/s?q=sc"r,"https://ref.example/a\n')  # being written
    waiting = grown_run(live, state, out, rejects)
    assert (waiting["rows_read"], waiting["rejected"]) == (1, 0)
    with live.open("a", encoding="utf-8") as handle:
        handle.write('b",,\n')
        handle.write(f"u1,{stamp(T0 + timedelta(hours=3, minutes=1))},https://shop.example/p1,,,\n")
    completed = grown_run(live, state, out, rejects)
    assert (completed["rows_read"], completed["rejected"]) == (2, 0)
    whole = as_one_run(out, live)
    assert whole.rows_read == 12 + waiting["rows_read"] + completed["rows_read"]


@pytest.mark.parametrize("eol", ["\n", "\r\n"], ids=["lf", "crlf"])
def test_a_grown_csv_record_over_lines_is_read_whole_with_either_line_ending(
    tmp_path: Path, eol: str
) -> None:
    """Review 47: with Windows line endings, a grown CSV's complete record over lines (a comment with a
    line break, its closing quote alone on the next line) was taken for a bad quote, its closing line
    for a record being written: the run rejected the record and the next run that line, one event lost
    with exit 0 (and with --on-invalid fail, every cron run failed). Read whole, as one run reads it."""
    live = tmp_path / "live.csv"
    live.write_bytes(
        f"user_id,timestamp,url,comment{eol}u1,2024-05-01T10:00:00Z,https://s.example/a,ok{eol}".encode()
    )
    state, out, rejects = tmp_path / "st", tmp_path / "out", tmp_path / "rejects.csv"
    grown_run(live, state, out, rejects)
    with live.open("ab") as handle:
        handle.write(f'u1,2024-05-01T10:01:00Z,https://s.example/b,"thanks{eol}"{eol}'.encode())
    second = grown_run(live, state, out, rejects)
    assert (second["rows_read"], second["rejected"]) == (1, 0)
    with live.open("ab") as handle:
        handle.write(
            f'u2,2024-05-01T10:02:00Z,https://s.example/c,x{eol}u3,2024-05-01T10:03:00Z,https://s.example/d,"y"{eol}'.encode()
        )
    third = grown_run(live, state, out, rejects)
    assert (third["rows_read"], third["rejected"]) == (2, 0)
    sessions = as_one_run(out, live).sessions
    assert sessions.filter(pl.col("user_id") == "u1").get_column("event_count").to_list() == [2]


def test_complete_csv_records_reads_each_line_at_most_twice() -> None:
    """The csv module reads a grown CSV's new lines from where it left them, however many records span
    lines or lone quotes there are: at most twice each (a bad quote's lines again from the line after
    it), besides the bounded reads of each record over lines. (Review 47's quadratic cost, the rest of
    the lines joined and decoded again for each such record, is measured in bench/README.md: 64,000
    lines 23.5 -> 0.33 s.)"""
    reads = 0
    real_reader = csv.reader

    def counting(lines: Any, **kwargs: Any) -> Any:
        def counted() -> Any:
            nonlocal reads
            for line in lines:
                reads += 1
                yield line

        return real_reader(counted(), **kwargs)

    pad = "p" * 40
    for body in (f'u,{pad},"a\nb"\n' * 2000, f'u,{pad},"x\n' * 4000, f'u,{pad},"a\r\nb"\r\n' * 2000):
        data = body.encode()
        reads = 0
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(csv, "reader", counting)
            sio.read.complete_csv_records(data, separator=",", width=3)
        assert reads <= 2 * data.count(b"\n") + 2 * 4000 + 2000 * 4


def test_a_grown_log_names_its_real_file_and_line_in_errors(tmp_path: Path) -> None:
    live = write_events(tmp_path / "live.csv", T0, users=2)
    state, out = tmp_path / "st", tmp_path / "out"
    step([live], state, out)
    old_lines = len(live.read_text(encoding="utf-8").splitlines())
    with live.open("a", encoding="utf-8") as handle:
        handle.write(f"u1,{stamp(T0 + timedelta(hours=3))},https://shop.example/,,,\n")
        handle.write("u1,yesterday,https://shop.example/,,,\n")
    with pytest.raises(sessionize.InvalidEventsError) as caught:
        step([live], state, out)
    assert str(live) in str(caught.value) and f"line {old_lines + 2}" in str(caught.value)
    result = step([live], state, out, on_invalid="skip", rejects=tmp_path / "rejects.csv")
    rejected = pl.read_csv(tmp_path / "rejects.csv")
    assert rejected.select("source_file", "source_row").rows() == [(str(live), old_lines + 2)]
    assert result.rows_read == 2


def test_an_edited_input_is_an_error_unless_reprocessed(tmp_path: Path) -> None:
    path = write_events(tmp_path / "a.csv", T0)
    state, out = tmp_path / "st", tmp_path / "out"
    step([path], state, out)
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("https://shop.example/p2", "https://shop.example/p9"), encoding="utf-8")
    with pytest.raises(StateError, match=r"changed since it was processed.*--reprocess"):
        step([path], state, out)
    again = step([path], state, out, reprocess=True)
    assert again.incremental is not None and again.incremental.files_processed == [str(path)]


def test_a_rotated_log_at_the_same_path_is_read_as_a_new_file(tmp_path: Path) -> None:
    path = tmp_path / "access.csv"
    state, out = tmp_path / "st", tmp_path / "out"
    write_events(path, T0)
    step([path], state, out)
    write_events(path, T0 + timedelta(days=1))  # logrotate: the same name, the next day's lines
    second = step([path], state, out)
    assert second.incremental is not None and second.incremental.files_processed == [str(path)]
    assert second.rows_read == 72


# -- nothing is published when one output fails ---------------------------------------------------


@pytest.mark.parametrize("failing", ["rejects", "report"])
def test_a_failing_rejects_or_report_leaves_the_old_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    events = write_events(tmp_path / "events.csv", T0, bad_row=True)
    table = tmp_path / "sessions.csv"
    table.write_text("the previous run's table\n", encoding="utf-8")
    if failing == "rejects":
        real = serialize  # as publish calls it (its name there is patched)

        def full_disk(frame: pl.DataFrame, handle: IO[bytes], fmt: OutputFormat, **kwargs: Any) -> None:
            if "reject_reason" in frame.columns:
                raise OSError(errno.ENOSPC, "No space left on device")
            real(frame, handle, fmt, **kwargs)

        monkeypatch.setattr(sio.publish, "serialize", full_disk)
    else:
        from sessionize import report

        def broken(*args: object, **kwargs: object) -> str:
            raise OSError(errno.EIO, "Input/output error")

        monkeypatch.setattr(report, "render_report", broken)
    result = invoke(
        "run", events, "-o", table, "--on-invalid", "skip", "--rejects", tmp_path / "rejects.csv",
        "--report", tmp_path / "report.html", "--no-geo",
    )  # fmt: skip
    assert result.exit_code != 0
    assert table.read_text(encoding="utf-8") == "the previous run's table\n"
    assert listing(tmp_path) == ["events.csv", "sessions.csv"]


def test_the_same_path_for_two_outputs_is_refused_before_any_work(tmp_path: Path) -> None:
    events = write_events(tmp_path / "events.csv", T0)
    with pytest.raises(UsageError, match="same"):
        sessionize.run([events], rejects=tmp_path / "x.csv", report=tmp_path / "x.csv", on_invalid="skip")
    result = invoke("run", events, "--on-invalid", "skip", "--rejects", "x.html", "--report", "x.html")
    assert result.exit_code == 2
    assert listing(tmp_path) == ["events.csv"]


# -- streams are written into, never replaced ------------------------------------------------------


def test_rejects_to_a_fifo_is_written_into_not_replaced(tmp_path: Path) -> None:
    events = write_events(tmp_path / "events.csv", T0, bad_row=True)
    fifo = tmp_path / "rejects.fifo"
    os.mkfifo(fifo)
    reader = subprocess.Popen(
        [sys.executable, "-c", f"import sys; sys.stdout.buffer.write(open({str(fifo)!r}, 'rb').read())"],
        stdout=subprocess.PIPE,
    )
    result = invoke(
        "run", events, "--on-invalid", "skip", "--rejects", fifo, "--no-geo", "-o", tmp_path / "s.parquet"
    )
    out, _ = reader.communicate(timeout=30)
    assert result.exit_code == 0, result.output
    assert fifo.is_fifo()
    assert b"reject_reason" in out and b"u99" in out


def test_a_grown_log_larger_than_a_read_block(tmp_path: Path) -> None:
    """The file is read in 1 MiB blocks: what was read before may end inside any block."""
    rows = [
        f"u{n % 500},{stamp(T0 + timedelta(seconds=7 * n))},https://shop.example/{'p' * 60}{n},,,"
        for n in range(40_000)
    ]
    header = "user_id,timestamp,url,referrer,ip,user_agent\n"
    live = tmp_path / "live.csv"
    live.write_text(header + "\n".join(rows[:20_000]) + "\n", encoding="utf-8")
    assert live.stat().st_size > 1 << 20
    state, out = tmp_path / "st", tmp_path / "out"
    step([live], state, out)
    live.write_text(header + "\n".join(rows) + "\n", encoding="utf-8")
    second = step([live], state, out)
    assert second.incremental is not None and second.incremental.files_grown == [str(live)]
    assert second.rows_read == 20_000
    table = pl.read_parquet(out / "**/*.parquet", hive_partitioning=False).drop("is_final").sort(KEYS)
    whole = tmp_path / "whole.csv"
    whole.write_text(header + "\n".join(rows) + "\n", encoding="utf-8")
    assert_frame_equal(
        table, sessionize.run([whole], no_geo=True, valid_until="2100-01-01").sessions.sort(KEYS)
    )


def _events_alive_at(
    monkeypatch: pytest.MonkeyPatch, handed_to: tuple[Any, str], checked_at: tuple[Any, str], **options: Any
) -> list[bool]:
    """Whether the events frame handed to ``handed_to`` (a module and the name of a function there) is
    still alive at each call of ``checked_at``, in a run on the sample events with ``options``, whose
    sessions must be those of a run without the watch."""
    import weakref

    expected = sessionize.run([SAMPLE_DATA / "events.csv"], **options).sessions
    handed: list[Any] = []
    alive: list[bool] = []
    step, checked = getattr(*handed_to), getattr(*checked_at)

    def watched_step(events: Any, *args: Any, **kwargs: Any) -> Any:
        handed.append(weakref.ref(events[0] if isinstance(events, list) else events))
        return step(events, *args, **kwargs)

    def watched(*args: Any, **kwargs: Any) -> Any:
        alive.append(handed[0]() is not None)
        return checked(*args, **kwargs)

    monkeypatch.setattr(*handed_to, watched_step)
    monkeypatch.setattr(*checked_at, watched)
    result = sessionize.run([SAMPLE_DATA / "events.csv"], **options)
    assert_frame_equal(result.sessions, expected)
    return alive


def test_the_in_memory_engine_frees_its_events_once_the_sessions_are_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The events (1.2 GiB at 10M) are handed to the partition step, which drops them once the sessions
    are built: gone before the geo columns are joined and the output written (bench/README.md), with
    the same table as before."""
    from sessionize import geo
    from sessionize.engines import memory

    alive = _events_alive_at(
        monkeypatch, (memory, "process_partition"), (geo, "join_geo"), geoip_db=str(CITY_DB)
    )
    assert alive == [False]


@pytest.mark.parametrize("geo_options", [{"geoip_db": str(CITY_DB)}, {"no_geo": True}], ids=["geo", "no-geo"])
def test_the_events_are_freed_before_the_sessions_are_enriched(
    monkeypatch: pytest.MonkeyPatch, geo_options: dict[str, Any]
) -> None:
    """Only the core session table reads the events: it is collected on its own, and the events are
    gone before the attribution and user agent columns are made (10M events, in process: peak 2.5-2.65
    -> 2.2-2.45 GiB, bench/README.md), with the geo lookup beside the build or without one, and the
    same table as before."""
    from sessionize import partition

    alive = _events_alive_at(
        monkeypatch, (partition, "sessionize_partition"), (partition, "enrich_attribution"), **geo_options
    )
    assert alive == [False]


@pytest.mark.parametrize(
    ("options", "event_read"),
    [
        ({}, False),
        ({"conversion_events": ["purchase"]}, True),
        ({"count_events": ["purchase"]}, True),
        ({"heartbeat_events": ["page_ping"]}, True),
        ({"stitch_col": "referrer"}, False),
        ({"aggregates": ["buys=count(event=purchase)"]}, True),
    ],
    ids=["default", "conversions", "count-events", "heartbeats", "stitching", "agg-event-count"],
)
def test_the_session_build_holds_only_the_event_columns_it_reads(
    monkeypatch: pytest.MonkeyPatch, options: dict[str, Any], event_read: bool
) -> None:
    """The event ids, login ids and (unless conversions, counts or heartbeats read them) the event names
    are dropped before the session build, not held through it (10M events: 160 MB of event names at the
    run's peak, bench/README.md); the sessions are those of a build that keeps every column."""
    from sessionize import partition

    seen: list[list[str]] = []
    build = partition._core_sessions

    def watched(events: pl.LazyFrame, *args: Any, **kwargs: Any) -> pl.LazyFrame:
        seen.append(events.collect_schema().names())
        return build(events, *args, **kwargs)

    with monkeypatch.context() as keeping:
        keeping.setattr(partition, "unread_columns", lambda settings: [])
        expected = sessionize.run([SAMPLE_DATA / "events.csv"], no_geo=True, **options).sessions
    monkeypatch.setattr(partition, "_core_sessions", watched)
    result = sessionize.run([SAMPLE_DATA / "events.csv"], no_geo=True, **options)
    assert_frame_equal(result.sessions, expected)
    assert seen
    for names in seen:
        assert S.EVENT_ID not in names and S.STITCH_ID not in names and (S.EVENT in names) == event_read


def test_a_text_read_holds_the_raw_text_of_only_the_timestamps_it_can_report(tmp_path: Path) -> None:
    """The raw timestamps are kept for the messages of invalid rows and the epoch-unit check: a text time
    in a common shape that parsed within the valid range is neither, and its text is not held (10M CSV
    events: 257 MiB, bench/README.md). Every row is still read, rejected and reported as before."""
    from sessionize.io.read import read_inputs
    from sessionize.normalize import RAW_TIME, prepare_events

    times = [
        "2026-05-01T10:00:00Z",  # the common shapes, in range: not held
        "2026-05-01 10:00:01.5",
        "2026-05-01T10:00:02+02:00",  # the general parsers (in a file this small)
        "2026-05-01T10:00:03+02:00[Europe/Paris]",  # and their rarer forms
        "1777629600",  # an epoch number
        "soon",  # does not parse
        "2031-01-01T00:00:00Z",  # after the valid range
        "2020-01-01T00:00:00Z",  # before it
        "",
    ]
    path = tmp_path / "e.csv"
    path.write_text("user_id,timestamp\n" + "".join(f"u{i},{t}\n" for i, t in enumerate(times)))
    scan = pl.scan_csv(path, infer_schema=False)
    columns = S.resolve_columns(scan.collect_schema().names())
    bounds = (datetime(2021, 1, 1, tzinfo=UTC), datetime(2030, 1, 1, tzinfo=UTC))
    raw = (
        prepare_events(scan, columns=columns, keep_raw=True, valid_range=bounds)
        .collect()
        .get_column(RAW_TIME)
        .to_list()
    )
    assert raw == [None, None, *times[2:8], None]
    assert prepare_events(scan, columns=columns, keep_raw=True).collect().get_column(RAW_TIME).to_list() == [
        *times[:8],
        None,
    ]
    # A run reads the file so: the same rows and reasons as ever.
    result = read_inputs(
        [path],
        sessionize.config.RunConfig.from_options(
            on_invalid="skip", valid_from="2021-01-01", valid_until="2030-01-01"
        ).read,
    )
    assert result.events.height == 5
    assert result.rejects is not None
    assert result.rejects.select("timestamp", "reject_reason").rows() == [
        ("soon", "bad_timestamp"),
        ("2031-01-01T00:00:00Z", "out_of_range"),
        ("2020-01-01T00:00:00Z", "out_of_range"),
        (None, "bad_timestamp"),
    ]


@pytest.mark.slow
@pytest.mark.parametrize("threads", ["1", "2"])
def test_runs_in_threads_of_one_process_all_finish(tmp_path: Path, threads: str) -> None:
    """The session build collects with the streaming engine inside a function of an in-memory plan (the
    event keys, see core._packed_order). Several runs at once in one process, as a Dask worker's threads
    make them, with Polars given one or two threads, must all finish, with the sessions of a run alone."""
    # Without client session ids, so that the keys are packed (core._packed_order).
    events = write_events(tmp_path / "events.csv", T0, users=2000)
    script = tmp_path / "threads.py"
    script.write_text(
        "import sys\n"
        "from concurrent.futures import ThreadPoolExecutor\n"
        "import sessionize\n"
        "from sessionize import core\n"
        "packed = core._packed_order\n"
        "used = []\n"
        "core._packed_order = lambda *args: used.append(1) or packed(*args)\n"
        "events = [sys.argv[1]]\n"
        "alone = sessionize.run(events, no_geo=True).sessions\n"
        "with ThreadPoolExecutor(max_workers=4) as pool:\n"
        "    runs = list(pool.map(lambda _: sessionize.run(events, no_geo=True).sessions, range(12)))\n"
        "assert all(run.equals(alone) for run in runs) and len(used) == 13\n"
        "print('finished', alone.height)\n"
    )
    env = {**os.environ, "POLARS_MAX_THREADS": threads}
    done = subprocess.run(
        [sys.executable, str(script), str(events)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("finished ")
