"""``--engine spark``: the session table of the local engine, computed by Apache Spark (local[2]).

Every test compares a Spark run with ``sessionize.run`` (the local engine) on the same files: the whole
table, every column (Spark has no unsigned integers: the counts come back as Int64, the same values),
and the figures of the summary. The tests share one Spark session (``spark_session`` in conftest.py);
tests/test_equivalence.py runs every option set on Spark too (rejects, privacy, geo, client session
ids, filters).
"""

from __future__ import annotations

import codecs
import gzip
import json
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import sessionize
from sessionize import schema as S
from sessionize.engines.base import PREVIEW_ROWS
from sessionize.errors import (
    BadTimestampError,
    EngineUnavailableError,
    MissingColumnError,
    MissingUserIdError,
    OutputError,
    UnreadableInputError,
    UsageError,
)
from tests.helpers import CITY_DB, DATA, KEYS, SAMPLE_DATA, run_cli, write_text
from tests.test_wide_objects import posthog_events, write_lines

pytest.importorskip("pyspark", reason="PySpark is not installed: pip install 'sessionize[spark]'")

from sessionize.engines import spark as spark_engine

pytestmark = pytest.mark.slow

UNSIGNED: dict[str, pl.DataType] = {
    name: pl.UInt32() for name, dtype in S.SESSION_SCHEMA.items() if dtype == pl.UInt32
}
FIGURES = ("rows_read", "events_read", "rejected", "duplicates_removed", "filtered_out", "session_count",
           "user_count", "bot_sessions", "geo_counts", "median_duration_s")  # fmt: skip
APACHE_LOG = DATA / "apache_logs" / "apache_access.log"


def read_dir(directory: Path) -> pl.DataFrame:
    assert (directory / spark_engine.SUCCESS).is_file()
    written = pl.read_parquet(sorted(directory.glob("part-*.parquet")))
    return written.cast({k: v for k, v in UNSIGNED.items() if k in written.columns})


def same_as_local(files: list[Path], tmp_path: Path, spark: Any, **options: Any) -> sessionize.RunResult:
    local = sessionize.run(files, **options)
    out = tmp_path / "spark-sessions"
    result = sessionize.run(files, spark=spark, output=str(out), **options)
    assert result.engine == "spark" and result.path_taken.startswith("spark: ")
    assert_frame_equal(read_dir(out).sort(KEYS), local.sessions.sort(KEYS))
    assert {k: getattr(result, k) for k in FIGURES} == {k: getattr(local, k) for k in FIGURES}
    assert result.mean_duration_s == local.mean_duration_s
    return result


def rejects_as_local(
    files: list[Path], tmp_path: Path, spark: Any, **options: Any
) -> tuple[sessionize.RunResult, sessionize.RunResult, pl.DataFrame]:
    """:func:`same_as_local` with ``--on-invalid skip`` and a rejects file each, which must be equal: the
    local run, Spark's, and the rejects read back."""
    local_rejects, spark_rejects = tmp_path / "local.csv", tmp_path / "spark.csv"
    options = {"no_geo": True, "on_invalid": "skip", **options}
    local = sessionize.run(files, rejects=str(local_rejects), **options)
    result = same_as_local(files, tmp_path, spark, rejects=str(spark_rejects), **options)
    rejects = pl.read_csv(local_rejects)
    assert pl.read_csv(spark_rejects).equals(rejects)
    return local, result, rejects


def test_sample_data_with_geo(tmp_path: Path, spark_session: Any) -> None:
    result = same_as_local([SAMPLE_DATA / "events.csv"], tmp_path, spark_session, geoip_db=str(CITY_DB))
    assert result.session_count > 900


def test_the_real_apache_log(tmp_path: Path, spark_session: Any) -> None:
    """10,000 lines of a real combined log (one of them malformed): the same visitors, sessions, bots
    and reject."""
    result = same_as_local([APACHE_LOG], tmp_path, spark_session, no_geo=True, on_invalid="skip")
    assert result.rows_read == 10_000 and result.rejected == 1 and result.bot_sessions > 0


def test_a_vhost_combined_log_with_proxy_address_lists(tmp_path: Path, spark_session: Any) -> None:
    """Apache's vhost_combined, some client fields a proxy's X-Forwarded-For list: the same sessions,
    one site selected by its vhost column."""
    lines = APACHE_LOG.read_text(encoding="utf-8", errors="replace").splitlines()[:400]
    lines = [
        f"site{n % 2}.example:443 " + (text.replace(" - - [", ", 10.0.0.2 - - [", 1) if n % 3 == 0 else text)
        for n, text in enumerate(lines)
    ]
    log = write_text(tmp_path / "other_vhosts_access.log", "\n".join(lines) + "\n")
    result = same_as_local([log], tmp_path, spark_session, no_geo=True, filter=["vhost=site1.example:443"])
    assert result.filtered_out == 200 and result.rejected == 0 and result.session_count > 10


def test_malformed_and_invalid_rows_rejected_alike(tmp_path: Path, spark_session: Any) -> None:
    lines = APACHE_LOG.read_text(encoding="utf-8", errors="replace").splitlines()[:300]
    lines[7] = "this is not a log line"
    log = write_text(tmp_path / "access.log", "\n".join(lines) + "\n")
    csv = write_text(
        tmp_path / "events.csv",
        "user_id,timestamp,url\nu1,2024-05-01T10:00:00Z,https://a.example/\nu1,not a time,https://a.example/x\n"
        ",2024-05-01T10:00:00Z,https://a.example/\nu2,2024-05-01T11:00:00Z,https://a.example/\n",
    )
    local_rejects, spark_rejects = tmp_path / "local.csv", tmp_path / "spark.csv"
    options: dict[str, Any] = {"no_geo": True, "on_invalid": "skip"}
    local = sessionize.run([log, csv], rejects=str(local_rejects), **options)
    out = tmp_path / "out"
    result = sessionize.run(
        [log, csv], spark=spark_session, output=str(out), rejects=str(spark_rejects), **options
    )
    assert result.rejected == local.rejected == 3
    key = ["source_file", "source_row"]
    assert_frame_equal(
        pl.read_csv(spark_rejects, infer_schema=False).sort(key),
        pl.read_csv(local_rejects, infer_schema=False).sort(key),
    )
    assert_frame_equal(read_dir(out).sort(KEYS), local.sessions.sort(KEYS))


def dirty_inputs(tmp_path: Path, bad: int = 2) -> list[Path]:
    """Two CSVs with invalid rows (``bad`` bad timestamps in the first), different columns (one named with
    a space, ``Plan`` in one and ``plan`` in the other, one value a spreadsheet formula), and an access
    log with a malformed line."""
    rows = ["user_id,timestamp,url,user agent,Plan"]
    for n in range(bad):
        rows += [
            f"u{n},2024-05-01T10:00:00Z,https://a.example/{n},Mozilla,pro",
            f"u{n},not a time {n},x,=SUM(1),",
        ]
    rows.append(",2024-05-01T10:00:00Z,https://a.example/,curl,free")
    first = write_text(tmp_path / "in" / "a.csv", "\n".join(rows) + "\n")
    second = write_text(
        tmp_path / "in" / "b.csv",
        "user_id,timestamp,url,plan\nv1,2024-05-01T10:00:00Z,https://a.example/,pro\nv1,bad,x,free\n",
    )
    lines = APACHE_LOG.read_text(encoding="utf-8", errors="replace").splitlines()[:50]
    lines[7] = "this is not a log line"
    log = write_text(tmp_path / "in" / "access.log", "\n".join(lines) + "\n")
    return [first, log, second]


def read_rejects_dir(directory: Path) -> pl.DataFrame:
    """A rejects dataset: Spark's part files in name order (their rows in input order)."""
    assert (directory / spark_engine.SUCCESS).is_file()
    return pl.concat([pl.read_parquet(p) for p in sorted(directory.glob("part-*.parquet"))], how="vertical")


def test_a_rejects_directory_is_a_dataset_written_by_spark(tmp_path: Path, spark_session: Any) -> None:
    """``--rejects DIR`` (no table extension): Spark writes the rejected rows as a Parquet directory with
    ``_SUCCESS``, the rows of the local run's rejects file in the same order with the same columns (every
    file's, in the order they come); the result keeps only the first rows (the rest stay on the cluster)."""
    files = dirty_inputs(tmp_path, bad=120)
    options: dict[str, Any] = {"no_geo": True, "on_invalid": "skip"}
    local = sessionize.run(files, rejects=str(tmp_path / "local.parquet"), **options)
    out, rejects = tmp_path / "out", tmp_path / "rejects"
    result = sessionize.run(files, spark=spark_session, output=str(out), rejects=str(rejects), **options)
    expected = pl.read_parquet(tmp_path / "local.parquet")
    assert expected.height == local.rejected == 123 and "user agent" in expected.columns
    assert_frame_equal(read_rejects_dir(rejects), expected)
    assert result.rejected == 123 and result.rejects_output == str(rejects)
    assert result.rejects is not None and not result.rejects_complete
    assert_frame_equal(result.rejects, expected.head(PREVIEW_ROWS))
    assert_frame_equal(read_dir(out).sort(KEYS), local.sessions.sort(KEYS))
    assert not list(tmp_path.glob(".*.tmp"))
    # (Case-sensitive names for the run only: the session given goes back as it was.)
    assert spark_session.conf.get("spark.sql.caseSensitive") == "false"


def test_a_rejects_file_comes_back_whole(tmp_path: Path, spark_session: Any) -> None:
    """``--rejects FILE.csv`` with Spark: one file written from the driver, as a local run writes it."""
    files = dirty_inputs(tmp_path, bad=3)
    options: dict[str, Any] = {"no_geo": True, "on_invalid": "skip"}
    local = sessionize.run(files, rejects=str(tmp_path / "local.csv"), **options)
    result = sessionize.run(
        files, spark=spark_session, output=str(tmp_path / "out"), rejects=str(tmp_path / "r.csv"), **options
    )
    assert (tmp_path / "r.csv").read_bytes() == (tmp_path / "local.csv").read_bytes()
    assert result.rejects_complete and result.rejects is not None and result.rejects.height == local.rejected


def test_the_cli_writes_an_empty_rejects_dataset(tmp_path: Path, spark_session: Any) -> None:
    """A cron job always finds the rejects: with nothing rejected, a dataset of no rows."""
    out, rejects = tmp_path / "out", tmp_path / "rejects"
    result = run_cli(
        SAMPLE_DATA / "events.csv", "--engine", "spark", "-o", out, "--no-geo", "--on-invalid", "skip",
        "--rejects", rejects,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    empty = read_rejects_dir(rejects)
    assert empty.height == 0 and empty.columns == ["source_file", "source_row", "reject_reason"]


def test_a_rejects_directory_is_checked_before_the_run(tmp_path: Path, spark_session: Any) -> None:
    files = dirty_inputs(tmp_path)
    options: dict[str, Any] = {"no_geo": True, "on_invalid": "skip", "spark": spark_session}
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "old.parquet").write_bytes(b"x")
    with pytest.raises(OutputError, match="not an empty directory"):
        sessionize.run(files, output=str(tmp_path / "out"), rejects=str(taken), **options)
    with pytest.raises(UsageError, match="beside the output"):
        sessionize.run(
            files, output=str(tmp_path / "out"), rejects=str(tmp_path / "out" / "rejects"), **options
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "taken"]


def test_rejects_go_back_when_the_sessions_cannot_be_published(
    tmp_path: Path, spark_session: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rejects are renamed into place first; when the sessions' rename then fails, they go back and
    the run leaves neither (all or nothing)."""
    files = dirty_inputs(tmp_path)
    out, rejects = tmp_path / "out", tmp_path / "rejects"
    rename = spark_engine._HadoopFS.rename

    def failing(fs: Any, source: str, target: str) -> bool:
        return False if target == str(out) else bool(rename(fs, source, target))

    monkeypatch.setattr(spark_engine._HadoopFS, "rename", failing)
    with pytest.raises(OutputError, match="Cannot rename"):
        sessionize.run(
            files, spark=spark_session, output=str(out), rejects=str(rejects), no_geo=True, on_invalid="skip"
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_an_interrupt_after_the_write_leaves_nothing(tmp_path: Path, spark_session: Any) -> None:
    """Ctrl-C (a KeyboardInterrupt from the progress callback) once Spark wrote the sessions and rejects:
    both hidden directories are removed."""
    files = dirty_inputs(tmp_path)

    def progress(event: Any) -> None:
        if event.stage == "buckets":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sessionize.run(
            files, spark=spark_session, output=str(tmp_path / "out"), rejects=str(tmp_path / "rejects"),
            no_geo=True, on_invalid="skip", progress=progress,
        )  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_nothing_rejected_is_a_complete_rejects_and_rejects_on_stdout_are_a_file(
    tmp_path: Path, spark_session: Any
) -> None:
    """Without rejected rows ``rejects`` is complete (none), as on the local engine; ``--rejects -`` is
    standard output (a CSV written from the driver), never a directory named ``-``."""
    result = sessionize.run(
        [SAMPLE_DATA / "events.csv"], spark=spark_session, output=str(tmp_path / "out"), no_geo=True,
        on_invalid="skip",
    )  # fmt: skip
    assert result.rejected == 0 and result.rejects is None and result.rejects_complete
    files = dirty_inputs(tmp_path, bad=1)
    cli = run_cli(*files, "--engine", "spark", "-o", tmp_path / "out2", "--no-geo", "--on-invalid", "skip",
                  "--rejects", "-", "--log-format", "json")  # fmt: skip
    assert cli.exit_code == 0, cli.output
    assert not Path("-").exists() and "bad_timestamp" in cli.output


def page_of(path: Path) -> bytes:
    """A report page, but the minute it was made (its footer's ``on 2026-12-04 12:38 UTC``), which may
    turn between two runs."""
    made = rb"(<footer>Made by sessionize \S+) on \d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC"
    page, count = re.subn(made, rb"\1 on (time) UTC", path.read_bytes())
    assert count == 1
    return page


def test_a_report_of_no_sessions_by_date(tmp_path: Path, spark_session: Any) -> None:
    """``--partition-by-date`` with no session (every row rejected) writes no part file: the report of
    no sessions is still the local run's."""
    source = write_text(tmp_path / "in" / "bad.csv", "user_id,timestamp\nu1,not a time\nu2,never\n")
    options: dict[str, Any] = {"no_geo": True, "on_invalid": "skip"}
    sessionize.run([source], output=str(tmp_path / "l.parquet"), report=str(tmp_path / "l.html"), **options)
    result = sessionize.run(
        [source], spark=spark_session, output=str(tmp_path / "out"), report=str(tmp_path / "s.html"),
        partition_by_date=True, **options,
    )  # fmt: skip
    assert result.session_count == 0 and result.rejected == 2
    assert page_of(tmp_path / "s.html") == page_of(tmp_path / "l.html")


def test_the_report_is_the_local_runs(tmp_path: Path, spark_session: Any) -> None:
    """``--report`` with an output directory: read from the directory Spark wrote before it is published
    (a path), or from the report's columns Spark brings back (a URL the driver cannot read): the same page
    as a local run's, byte for byte."""
    events = SAMPLE_DATA / "events.csv"
    sessionize.run(
        [events], no_geo=True, output=str(tmp_path / "local.parquet"), report=str(tmp_path / "local.html")
    )
    expected = page_of(tmp_path / "local.html")
    for name, output in (("path", str(tmp_path / "out")), ("url", (tmp_path / "out-url").as_uri())):
        page = tmp_path / f"{name}.html"
        sessionize.run([events], spark=spark_session, no_geo=True, output=output, report=str(page))
        assert page_of(page) == expected, name
    assert read_dir(tmp_path / "out-url").height == read_dir(tmp_path / "out").height > 900


def test_a_run_that_fails_leaves_no_rejects_nor_sessions(
    tmp_path: Path, spark_session: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """All or nothing: a failure on the cluster's side after the sessions were written, or after the
    engine (the report), removes both directories Spark wrote."""
    files = dirty_inputs(tmp_path)
    options: dict[str, Any] = {"no_geo": True, "on_invalid": "skip", "spark": spark_session}
    out, rejects = tmp_path / "out", tmp_path / "rejects"

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the report broke")

    monkeypatch.setattr("sessionize.pipeline.report_module.render_report", broken)
    with pytest.raises(RuntimeError, match="report broke"):
        sessionize.run(
            files, output=str(out), rejects=str(rejects), report=str(tmp_path / "r.html"), **options
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]
    monkeypatch.undo()
    monkeypatch.setattr(spark_engine, "_tally", broken)
    with pytest.raises(Exception, match="report broke"):
        sessionize.run(files, output=str(out), rejects=str(rejects), **options)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_a_huge_value_and_a_split_files_rejects_are_kept_as_a_local_run_keeps_them(
    tmp_path: Path, spark_session: Any
) -> None:
    """A rejected row with a 21-million-character value (a JSON parser's limit is 20M) keeps every column;
    a log read in splits whose first split rejects only a malformed line (no columns of its own) keeps
    the local run's column order."""
    huge = write_text(
        tmp_path / "in" / "huge.csv",
        "user_id,timestamp,note\nu1,2024-05-01T10:00:00Z,a\nu1,not a time," + "x" * 21_000_000 + "\n",
    )
    line = '10.0.0.{n} - - [01/May/2024:10:{m:02d}:00 +0000] "GET /p{n} HTTP/1.1" 200 5'
    lines = [line.format(n=i % 50, m=i % 60) for i in range(400)]
    lines[3] = "junk"
    lines[200] = lines[250] = line.format(n=1, m=1).replace("2024", "2099")
    log = write_text(tmp_path / "in" / "split.log", "\n".join(lines) + "\n")
    options: dict[str, Any] = {"no_geo": True, "on_invalid": "skip"}
    previous = spark_session.conf.get("spark.sql.files.maxPartitionBytes")
    for name, files, extra in (("huge", [huge], {}), ("split", [log], {"input_format": "common"})):
        if name == "split":
            spark_session.conf.set("spark.sql.files.maxPartitionBytes", "8k")
        try:
            run = {**options, **extra}
            local = sessionize.run(files, rejects=str(tmp_path / f"{name}.parquet"), **run)
            target, rejects = tmp_path / f"out-{name}", tmp_path / f"rejects-{name}"
            result = sessionize.run(
                files, spark=spark_session, output=str(target), rejects=str(rejects), **run
            )
            expected = pl.read_parquet(tmp_path / f"{name}.parquet")
            assert local.rejected == expected.height == result.rejected >= 1
            assert_frame_equal(read_rejects_dir(rejects), expected)
        finally:
            spark_session.conf.set("spark.sql.files.maxPartitionBytes", previous)
    assert result.path_taken.endswith("read in splits")
    assert len(expected.columns) > 5 and expected.columns[-1] == "raw_line"


def test_a_file_read_whole_over_spark_limit_is_refused_by_name(
    tmp_path: Path, spark_session: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gzipped file is read whole, by Spark's binaryFile (one value: at most 2 GiB): one larger is
    refused before the job with its name and what to do (here the limit is lowered to 100 bytes)."""
    source = tmp_path / "events.csv.gz"
    source.write_bytes(gzip.compress((SAMPLE_DATA / "events.csv").read_bytes()))
    monkeypatch.setattr(spark_engine, "MAX_WHOLE_FILE", 100)
    with pytest.raises(UnreadableInputError, match=r"events\.csv\.gz is 0\.0 GiB and is read whole") as error:
        sessionize.run([source], spark=spark_session, output=str(tmp_path / "out"), no_geo=True)
    assert "Decompress it" in str(error.value)
    assert not (tmp_path / "out").exists()


def test_an_invalid_row_fails_as_in_a_local_run(tmp_path: Path, spark_session: Any) -> None:
    source = write_text(tmp_path / "events.csv", "user_id,timestamp\nu1,2024-05-01T10:00:00Z\nu1,yesterday\n")
    out = tmp_path / "out"
    with pytest.raises(BadTimestampError) as local:
        sessionize.run([source], no_geo=True)
    with pytest.raises(BadTimestampError) as spark:
        sessionize.run([source], spark=spark_session, output=str(out), no_geo=True)
    assert str(spark.value) == str(local.value)
    assert str(source) in str(spark.value) and "line 3" in str(spark.value)
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_client_session_ids_privacy_and_dedupe(tmp_path: Path, spark_session: Any) -> None:
    source = write_text(
        tmp_path / "events.csv",
        "user_id,timestamp,url,session_id,ip,event_id\n"
        "u1,2024-05-01T10:00:00Z,https://a.example/,s1,81.2.69.142,e1\n"
        "u1,2024-05-01T12:00:00Z,https://a.example/b,s1,81.2.69.142,e2\n"
        "u1,2024-05-01T12:00:00Z,https://a.example/b,s1,81.2.69.142,e2\n"
        "u2,2024-05-01T10:00:00Z,https://a.example/,,175.16.199.1,e3\n",
    )
    result = same_as_local(
        [source], tmp_path, spark_session, geoip_db=str(CITY_DB), anonymize_ip=True, drop_columns="user_agent"
    )
    table = read_dir(tmp_path / "spark-sessions")
    assert table.filter(pl.col("user_id") == "u1").get_column("session_id").to_list() == ["s1"]
    assert set(table.get_column("ip")) == {"81.2.69.0", "175.16.199.0"}  # truncated, still located
    assert table.get_column("city").null_count() == 0 and "user_agent" not in table.columns
    assert result.duplicates_removed == 1


def test_a_directory_url_is_listed_by_spark(tmp_path: Path, spark_session: Any) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(SAMPLE_DATA / "events.csv", folder / "a.csv")
    write_text(folder / "b.csv", "user_id,timestamp,url\nz9,2024-05-01T10:00:00Z,https://a.example/\n")
    write_text(folder / "notes.txt", "not events")
    local = sessionize.run([folder], no_geo=True)
    out = tmp_path / "out"
    result = sessionize.run([folder.as_uri() + "/"], spark=spark_session, output=str(out), no_geo=True)
    assert_frame_equal(read_dir(out).sort(KEYS), local.sessions.sort(KEYS))
    assert len(result.files) == 2


def test_without_an_output_the_sessions_come_back(tmp_path: Path, spark_session: Any) -> None:
    local = sessionize.run([SAMPLE_DATA / "events.csv"], no_geo=True)
    result = sessionize.run([SAMPLE_DATA / "events.csv"], spark=spark_session, no_geo=True, partitions=3)
    assert result.sessions_complete and result.path_taken == "spark: 3 partitions"
    returned = result.sessions.cast(UNSIGNED)  # type: ignore[arg-type]
    assert_frame_equal(returned.sort(KEYS), local.sessions.sort(KEYS))


def test_the_cli(tmp_path: Path, spark_session: Any) -> None:
    """In this process the CLI uses the session already open (as under spark-submit or in a notebook)."""
    out = tmp_path / "sessions"
    result = run_cli(
        SAMPLE_DATA / "events.csv", "--engine", "spark", "-o", out, "--no-geo", "--log-format", "json"
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["engine"] == "spark" and summary["sessions"] == read_dir(out).height
    assert not spark_session.sparkContext._jsc.sc().isStopped()  # not stopped: it was not ours


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--state", "S", "--output-dir", "O"], "--state"),
        (["--buckets", "2"], "--buckets"),
        (["--format", "csv", "-o", "out"], "--format"),
        (["-o", "sessions.csv"], "not one file"),
        (["-o", "-"], "stdout"),
    ],
)
def test_options_the_spark_engine_refuses(tmp_path: Path, extra: list[str], message: str) -> None:
    result = run_cli(SAMPLE_DATA / "events.csv", "--engine", "spark", "--no-geo", *extra)
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_spark_master_needs_the_spark_engine() -> None:
    result = run_cli(SAMPLE_DATA / "events.csv", "--spark-master", "local[2]", "--no-geo")
    assert (
        result.exit_code == 2
        and "--spark-master and --partition-by-date go with --engine spark" in result.output
    )


def test_a_non_empty_output_directory_is_refused(tmp_path: Path, spark_session: Any) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.parquet").write_bytes(b"x")
    with pytest.raises(OutputError, match="not an empty directory"):
        sessionize.run([SAMPLE_DATA / "events.csv"], spark=spark_session, output=str(out), no_geo=True)
    assert sorted(p.name for p in out.iterdir()) == ["old.parquet"]


def test_missing_pyspark_or_java_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spark_engine, "_MISSING", ImportError("No module named 'pyspark'"))
    with pytest.raises(EngineUnavailableError, match=r"pip install 'sessionize\[spark\]'"):
        spark_engine.require_spark()
    monkeypatch.setattr(spark_engine, "_MISSING", None)
    monkeypatch.setattr("shutil.which", lambda name: None)
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(EngineUnavailableError, match="Java 17 or later") as caught:
        spark_engine.require_spark()
    assert isinstance(caught.value, UsageError)  # exit code 2 on the CLI


def test_the_output_partitioned_by_date(tmp_path: Path, spark_session: Any) -> None:
    """--partition-by-date: session_date=YYYY-MM-DD/ directories (the start's date in --timezone), as the
    incremental output; together they hold the local table."""
    source = SAMPLE_DATA / "events.csv"
    local = sessionize.run([source], no_geo=True, timezone="America/New_York")
    out = tmp_path / "by-day"
    result = run_cli(source, "--engine", "spark", "-o", out, "--no-geo", "--partition-by-date",
                     "--timezone", "America/New_York")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (out / spark_engine.SUCCESS).is_file()
    written = pl.read_parquet(out / "**" / "*.parquet", hive_partitioning=True)
    days = written.get_column("session_start").dt.convert_time_zone("America/New_York").dt.date()
    assert days.equals(written.get_column("session_date"), check_names=False)
    assert written.get_column("session_date").n_unique() > 1
    table = written.drop("session_date").cast({k: v for k, v in UNSIGNED.items()})
    assert_frame_equal(table.sort(KEYS), local.sessions.sort(KEYS))
    refused = run_cli(source, "--partition-by-date", "-o", tmp_path / "x.parquet", "--no-geo")
    assert refused.exit_code == 2 and "--partition-by-date go with --engine spark" in refused.output


def test_reported_engagement_time_and_stitching(tmp_path: Path, spark_session: Any) -> None:
    """The optional event columns (GA4's engagement time, the login id) travel through Spark's shuffle."""
    source = write_text(
        tmp_path / "events.csv",
        "anonymous_id,user_id,timestamp,event,url,engagement_ms\n"
        "a,,2024-05-01T10:00:00Z,page_view,https://x.example/,\n"
        "a,alice,2024-05-01T10:01:00Z,user_engagement,https://x.example/,12500\n"
        "b,,2024-05-01T10:00:00Z,page_view,https://x.example/,\n",
    )
    result = same_as_local(
        [source], tmp_path, spark_session, no_geo=True, user_col="anonymous_id", stitch_col="user_id",
        engagement_time_col="engagement_ms",
    )  # fmt: skip
    assert result.session_count == 2


def large_parquet(path: Path, rows: int = 30_000) -> Path:
    """A Parquet file of many row groups: users with client session ids and without, some rows with a
    time that does not parse (text column) or no user, and a nested struct column."""
    users = [f"u{i % 997:03d}" if i % 1499 else "" for i in range(rows)]
    times = [
        f"2024-05-01T{10 + (i * 7 % 600) // 60:02d}:{i * 7 % 60:02d}:{i % 60:02d}Z" if i % 2311 else "soon"
        for i in range(rows)
    ]
    frame = pl.DataFrame(
        {
            "user_id": users,
            "timestamp": times,
            "session_id": [f"s{i % 41}" if i % 3 == 0 else None for i in range(rows)],
            "event": ["page_view" if i % 4 else "click" for i in range(rows)],
            "context": [{"page": {"url": f"https://shop.example/p{i % 13}"}} for i in range(rows)],
            "event_id": [f"e{i if i % 101 else i - 1}" for i in range(rows)],
        }
    )
    frame.write_parquet(path, row_group_size=1_000, compression="uncompressed")
    return path


def test_a_large_parquet_file_is_split_by_row_group(tmp_path: Path, spark_session: Any) -> None:
    """A Parquet file larger than Spark's split size (spark.sql.files.maxPartitionBytes) is read by Spark's
    own reader, row group by row group in several tasks, each slice parsed by the local reader's code: the
    same sessions, figures and rejects (with the file's own row numbers) as a local run, and with
    --on-invalid fail the same error, naming the first invalid row."""
    big = large_parquet(tmp_path / "big.parquet")
    small = write_text(
        tmp_path / "small.csv", "user_id,timestamp,context.page.url\nu001,2024-05-01T09:00:00Z,https://a/\n"
    )
    previous = spark_session.conf.get("spark.sql.files.maxPartitionBytes")
    spark_session.conf.set("spark.sql.files.maxPartitionBytes", str(big.stat().st_size // 5))
    try:
        local_rejects, spark_rejects = tmp_path / "local.csv", tmp_path / "spark.csv"
        options: dict[str, Any] = {"no_geo": True, "on_invalid": "skip", "url_col": "context.page.url"}
        local = sessionize.run([small, big], rejects=str(local_rejects), **options)
        result = same_as_local([small, big], tmp_path, spark_session, rejects=str(spark_rejects), **options)
        assert result.path_taken.endswith(", 1 large file(s) read in splits")
        assert local.rejected > 20 and result.rejected == local.rejected
        assert pl.read_csv(spark_rejects).equals(pl.read_csv(local_rejects))
        with pytest.raises(MissingUserIdError) as local_error:
            sessionize.run([big], no_geo=True)
        with pytest.raises(MissingUserIdError) as spark_error:
            sessionize.run([big], no_geo=True, spark=spark_session)
        # The same message, but for the count: that of the first slice with invalid rows, as it says.
        local_text, spark_text = str(local_error.value), str(spark_error.value)
        assert local_text.startswith(f"{big}: 21 row(s) have an empty user id")
        assert spark_text.startswith(f"{big}: 5 row(s) have an empty user id")
        assert local_text.split(" row(s)", 1)[1] in spark_text and "split this file" in spark_text
    finally:
        spark_session.conf.set("spark.sql.files.maxPartitionBytes", previous)


def test_a_split_parquet_file_reads_binary_and_uuid_ids_as_a_local_run(
    tmp_path: Path, spark_session: Any
) -> None:
    """Spark's split reading of a large Parquet file handed the local reader rows whose binary columns
    were left as bytes: a user id of 16 fixed bytes (a UUID, as Spark, Trino and Postgres write them) or
    a URL stored as plain binary made the run fail with "not a readable Parquet file (invalid utf8)"
    (review of stop 51). They are read as a local run reads them: the 16-byte columns as UUIDs, even a
    UUID whose bytes are all ASCII, other bytes as their text or hex."""
    import uuid
    from datetime import UTC, datetime

    import pyarrow as pa  # type: ignore[import-untyped]
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    users = [uuid.UUID(int=(n * 7919) << 64 | 12345) for n in range(40)]
    users.append(uuid.UUID("30313233-3435-3637-3839-616263646566"))  # its bytes are "0123456789abcdef"
    n = 2000
    start = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    table = pa.table(
        {
            "user_id": pa.array([users[i % len(users)].bytes for i in range(n)], pa.binary(16)),
            "timestamp": pa.array([start.timestamp() * 1e6 + i * 60e6 for i in range(n)]).cast(pa.int64())
            .cast(pa.timestamp("us", "UTC")),
            "url": pa.array([f"/p{i % 9}".encode() if i % 5 else b"/\xff\xfe" for i in range(n)],
                            pa.binary()),
        }
    )  # fmt: skip
    path = tmp_path / "binary.parquet"
    pq.write_table(table, path, row_group_size=200)
    previous = spark_session.conf.get("spark.sql.files.maxPartitionBytes")
    spark_session.conf.set("spark.sql.files.maxPartitionBytes", str(path.stat().st_size // 5))
    try:
        result = same_as_local([path], tmp_path, spark_session, no_geo=True)
    finally:
        spark_session.conf.set("spark.sql.files.maxPartitionBytes", previous)
    assert result.path_taken.endswith("read in splits")
    sessions = read_dir(tmp_path / "spark-sessions")
    assert set(sessions.get_column("user_id")) == {str(user) for user in users}
    assert "2ffffe" in set(sessions.get_column("landing_page"))  # its bytes as hex, as a local run has them


def test_large_access_logs_and_enriched_tsv_are_read_in_splits(tmp_path: Path, spark_session: Any) -> None:
    """An access log and a Snowplow enriched TSV larger than a split are read by Spark's text reader in
    several tasks, their lines numbered by a counting pass: the same sessions, figures, rejects (with the
    file's line numbers: a malformed line, blank lines, CRLF ends) as a local run."""
    lines = APACHE_LOG.read_text(encoding="utf-8", errors="replace").splitlines()
    lines[4321] = "this is not a log line"
    lines[777] = ""
    log = tmp_path / "access.log"
    data = ("\r\n".join(lines[:5000]) + "\n" + "\n".join(lines[5000:]) + "\n").encode()
    # A byte that is not UTF-8 in a user agent: those 3 lines are undecodable_bytes, on both (review 56 F9).
    log.write_bytes(data.replace(b"Mozilla", b"Mozi\xe9lla", 3))
    enriched = (DATA / "presets" / "snowplow_enriched.tsv").read_text(encoding="utf-8").splitlines()
    copies = []
    for n in range(300):
        for line in enriched:
            fields = line.split("\t")
            fields[6] = f"{fields[6]}-{n}"  # another event id per copy
            fields[15] = f"{fields[15]}-{n}"  # another visitor and session per copy
            fields[123] = f"{fields[123]}-{n}"
            copies.append("\t".join(fields))
    copies[1234] = "too\tfew\tfields"
    tsv = write_text(tmp_path / "events.tsv", "\n".join(copies) + "\n")
    previous = spark_session.conf.get("spark.sql.files.maxPartitionBytes")
    spark_session.conf.set(
        "spark.sql.files.maxPartitionBytes", str(min(log.stat().st_size, tsv.stat().st_size) // 6)
    )
    try:
        for files, extra in (([log], {}), ([tsv], {"preset": "snowplow"})):
            local_rejects, spark_rejects = tmp_path / "local.csv", tmp_path / "spark.csv"
            options: dict[str, Any] = {"no_geo": True, "on_invalid": "skip", **extra}
            local = sessionize.run(files, rejects=str(local_rejects), **options)
            out = tmp_path / f"spark-{files[0].stem}"
            result = sessionize.run(
                files, spark=spark_session, output=str(out), rejects=str(spark_rejects), **options
            )
            assert result.path_taken.endswith(", 1 large file(s) read in splits")
            assert_frame_equal(read_dir(out).sort(KEYS), local.sessions.sort(KEYS))
            assert {k: getattr(result, k) for k in FIGURES} == {k: getattr(local, k) for k in FIGURES}
            assert local.rejected >= 1 and pl.read_csv(spark_rejects).equals(pl.read_csv(local_rejects))
    finally:
        spark_session.conf.set("spark.sql.files.maxPartitionBytes", previous)


def test_a_csv_is_read_in_splits_unless_a_quoted_field_spans_lines(
    tmp_path: Path, spark_session: Any
) -> None:
    """A large CSV (and a TSV with a header) is cut at its lines; one whose quoted field holds a line break
    cannot be, nor one with bytes that are not UTF-8 (the careful reader rejects that row), and is read
    whole: the same table (and rejects) either way."""
    rows = [
        f'u{i % 50},2024-05-01T10:{i % 60:02d}:{i % 7:02d}Z,https://a.example/{i % 9},"x, {i}"'
        for i in range(3000)
    ]
    plain = write_text(tmp_path / "plain.csv", "user_id,timestamp,url,note\n" + "\n".join(rows) + "\n")
    tsv = write_text(
        tmp_path / "plain.tsv",
        "user_id\ttimestamp\turl\n" + "\n".join(r.rsplit(",", 2)[0].replace(",", "\t") for r in rows) + "\n",
    )
    spanning = rows.copy()
    spanning[1500] = 'u1,2024-05-01T10:00:00Z,https://a.example/,"two\nlines"'
    quoted = write_text(tmp_path / "quoted.csv", "user_id,timestamp,url,note\n" + "\n".join(spanning) + "\n")
    latin = tmp_path / "latin.csv"
    latin.write_bytes(plain.read_bytes().replace(b"x, 2000", b"caf\xe9, 2000"))
    previous = spark_session.conf.get("spark.sql.files.maxPartitionBytes")
    spark_session.conf.set("spark.sql.files.maxPartitionBytes", "16k")
    try:
        for path, split in ((plain, True), (tsv, True), (quoted, False), (latin, False)):
            work = tmp_path / f"run-{path.name}"
            work.mkdir()
            options: dict[str, Any] = {"no_geo": True, "on_invalid": "skip"}
            local_rejects, spark_rejects = work / "local.parquet", work / "spark.parquet"
            local = sessionize.run([path], rejects=str(local_rejects), **options)
            result = same_as_local([path], work, spark_session, rejects=str(spark_rejects), **options)
            assert result.path_taken.endswith("read in splits") is split, (path, result.path_taken)
            assert_frame_equal(pl.read_parquet(spark_rejects), pl.read_parquet(local_rejects))
            assert local.rejected == (1 if path == latin else 0)
    finally:
        spark_session.conf.set("spark.sql.files.maxPartitionBytes", previous)


def spark_jobs(spark: Any, run: Any, group: str) -> int:
    """How many Spark jobs ``run()`` started (in a new job ``group`` of its own)."""
    spark.sparkContext.setJobGroup(group, "counted")
    try:
        run()
    finally:
        spark.sparkContext.setLocalProperty("spark.jobGroup.id", None)
    return len(spark.sparkContext.statusTracker().getJobIdsForGroup(group))


def test_several_large_text_files_are_planned_in_one_pass_per_kind(
    tmp_path: Path, spark_session: Any
) -> None:
    """The first pass over large text files (each split's lines counted and checked) reads every file of a
    kind at once, and the first lines of each (a log's format, a CSV's header) on the driver: three large
    CSVs cost the run as many Spark jobs as one (two per file before). Each file keeps its own plan: one
    whose quoted field spans lines is read whole beside two read in splits, a malformed NDJSON file whole
    beside a good one, two logs each with its own line numbers; the same table and rejects as locally."""
    header = "user_id,timestamp,url,note\n"
    rows = [
        f'u{i % 50},2024-05-01T10:{i % 60:02d}:{i % 7:02d}Z,https://a.example/{i % 9},"x, {i}"'
        for i in range(3000)
    ]
    csvs = [
        write_text(
            tmp_path / f"plain{n}.csv", header + "\n".join(r.replace("u", f"f{n}u", 1) for r in rows) + "\n"
        )
        for n in range(4)
    ]
    # An invalid time in the second split of one: rejected with its line number in the file.
    text = csvs[3].read_text()
    cut = text.rindex("2024-05-01T10:20:05Z")
    csvs[3].write_text(text[:cut] + "not a time" + text[cut + 20 :])
    spanning = rows.copy()
    spanning[1500] = 'u1,2024-05-01T10:00:00Z,https://a.example/,"two\nlines"'
    quoted = write_text(tmp_path / "quoted.csv", header + "\n".join(spanning) + "\n")
    lines = [
        f'{{"user_id": "u{i % 40}", "timestamp": "2024-05-01T10:{i % 60:02d}:{i % 13:02d}Z", "ref": '
        + (f'"r{i}"' if i % 2 else str(i))
        + "}"
        for i in range(3000)
    ]
    good = write_text(tmp_path / "good.ndjson", "\n".join(lines) + "\n")
    bad = write_text(tmp_path / "bad.ndjson", "\n".join(lines).replace(lines[2222], "{not json") + "\n")
    apache = APACHE_LOG.read_text(encoding="utf-8", errors="replace").splitlines()
    apache[1234] = "this is not a log line"
    logs = [
        write_text(tmp_path / "first.log", "\n".join(apache[:3000]) + "\n"),
        write_text(tmp_path / "second.log", "\n".join(apache[3000:6000]) + "\n"),
    ]
    previous = spark_session.conf.get("spark.sql.files.maxPartitionBytes")
    spark_session.conf.set("spark.sql.files.maxPartitionBytes", "48k")
    try:
        for name, files, split in (
            ("csv", [csvs[0], quoted, csvs[3]], 2),
            ("ndjson", [bad, good], 1),
            ("log", logs, 2),
        ):
            work = tmp_path / f"run-{name}"
            work.mkdir()
            local, result, _ = rejects_as_local(files, work, spark_session)
            assert result.path_taken.endswith(f", {split} large file(s) read in splits"), result.path_taken
            assert local.rejected >= 1
        # (Without adaptive query execution, whose jobs vary with the data's sizes.)
        spark_session.conf.set("spark.sql.adaptive.enabled", "false")
        jobs = {}
        for n, files in ((1, csvs[:1]), (3, csvs[:3])):
            out = tmp_path / f"jobs{n}"
            jobs[n] = spark_jobs(
                spark_session,
                lambda files=files, out=out: sessionize.run(
                    files, spark=spark_session, no_geo=True, on_invalid="skip", output=str(out)
                ),
                f"planned-{n}",
            )
        assert jobs[3] == jobs[1], jobs
    finally:
        spark_session.conf.set("spark.sql.files.maxPartitionBytes", previous)
        spark_session.conf.unset("spark.sql.adaptive.enabled")


def test_a_large_ndjson_file_is_read_in_splits_with_the_whole_files_types(
    tmp_path: Path, spark_session: Any
) -> None:
    """NDJSON cut at its lines: each split is parsed with the column types of the whole file (a field that
    is an integer in one split and a float or text in another, a struct whose keys differ), its records
    numbered as in the file (blank lines and CRLF ends skipped as a local read skips them); a file with a
    malformed line is read whole. The same table and rejects as a local run either way."""
    lines = []
    for i in range(4000):
        value = f"{i}.5" if i > 3000 else str(i)  # integers first, floats later
        ref = f'"ref": "r{i}"' if i % 2 else f'"ref": {i}'  # text and numbers mixed
        page = f'{{"url": "https://a.example/{i % 9}"' + (f', "title": "t{i}"}}' if i > 2500 else "}")
        user = "" if i % 997 == 5 else f"u{i % 40}"
        lines.append(
            f'{{"user_id": "{user}", "timestamp": "2024-05-01T10:{i % 60:02d}:{i % 13:02d}Z", '
            f'"value": {value}, {ref}, "page": {page}}}'
        )
    text = "\r\n".join(lines[:2000]) + "\n\n  \n" + "\n".join(lines[2000:]) + "\n"
    good = write_text(tmp_path / "events.ndjson", text)
    bad = write_text(tmp_path / "bad.ndjson", text.replace(lines[3333], "{not json"))
    previous = spark_session.conf.get("spark.sql.files.maxPartitionBytes")
    spark_session.conf.set("spark.sql.files.maxPartitionBytes", "32k")
    try:
        for path, split in ((good, True), (bad, False)):
            work = tmp_path / f"run-{path.stem}"
            work.mkdir()
            local, result, _ = rejects_as_local([path], work, spark_session, url_col="page.url")
            assert result.path_taken.endswith("read in splits") is split, (path, result.path_taken)
            assert local.rejected >= 4
    finally:
        spark_session.conf.set("spark.sql.files.maxPartitionBytes", previous)


def test_an_ndjson_file_of_wide_objects_is_read_in_splits_as_locally(
    tmp_path: Path, spark_session: Any
) -> None:
    """PostHog events whose properties hold more keys than flattening takes (tests/test_wide_objects.py):
    each split reads the leaves a local run reads; the same table and rejects."""
    events = posthog_events(wide=True)
    events[7]["timestamp"] = "not a time"
    source = write_lines(tmp_path / "events.ndjson", events)
    previous = spark_session.conf.get("spark.sql.files.maxPartitionBytes")
    spark_session.conf.set("spark.sql.files.maxPartitionBytes", "48k")
    try:
        local, result, rejects = rejects_as_local([source], tmp_path, spark_session, preset="posthog")
        assert result.path_taken.endswith("read in splits"), result.path_taken
        assert local.rejected == 1 and "properties_$current_url" in rejects.columns
    finally:
        spark_session.conf.set("spark.sql.files.maxPartitionBytes", previous)


def test_ndjson_numeric_ids_in_splits_are_never_widened_to_floats(tmp_path: Path, spark_session: Any) -> None:
    """64-bit integer user ids with one float in a later split: the merged types made every id a float
    (users 1234567890123456789 and ...790 one user). Read as text, as a local run reads them; a ``true``
    among them, or among text ids, sends the file to the whole read, which rejects that line as a local
    run does."""
    lines = [
        f'{{"user_id": {1234567890123456789 + i % 40}, "timestamp": "2024-05-01T10:{i % 60:02d}:00Z"}}'
        for i in range(3000)
    ]
    lines[2900] = '{"user_id": 1.5, "timestamp": "2024-05-01T10:00:00Z"}'
    good = write_text(tmp_path / "events.ndjson", "\n".join(lines) + "\n")
    lines[100] = '{"user_id": true, "timestamp": "2024-05-01T10:00:00Z"}'
    boolean = write_text(tmp_path / "boolean.ndjson", "\n".join(lines) + "\n")
    # Among text ids too (the field read as text by Polars itself): the boolean line is rejected.
    lines[2900] = '{"user_id": "1.5", "timestamp": "2024-05-01T10:00:00Z"}'
    texts = [line.replace('"user_id": 1', '"user_id": "1').replace(', "timestamp"', '", "timestamp"', 1)
             if '"user_id": 1' in line else line for line in lines]  # fmt: skip
    text = write_text(tmp_path / "text.ndjson", "\n".join(texts) + "\n")
    previous = spark_session.conf.get("spark.sql.files.maxPartitionBytes")
    spark_session.conf.set("spark.sql.files.maxPartitionBytes", "32k")
    try:
        for path, split in ((good, True), (boolean, False), (text, False)):
            work = tmp_path / f"run-{path.stem}"
            work.mkdir()
            result = same_as_local([path], work, spark_session, no_geo=True, on_invalid="skip")
            assert result.path_taken.endswith("read in splits") is split, (path, result.path_taken)
            assert result.rejected == (0 if split else 1)
            users = set(read_dir(work / "spark-sessions")["user_id"])
            assert users == {str(1234567890123456789 + n) for n in range(40)} | {"1.5"}
    finally:
        spark_session.conf.set("spark.sql.files.maxPartitionBytes", previous)


def test_lines_keep_their_numbers_in_a_split_of_many_lines(tmp_path: Path, spark_session: Any) -> None:
    """A split of more than 200,000 lines (a 128 MiB split of short log lines holds millions): every line
    keeps its number in the file, so rejects and errors name the right line."""
    line = '10.0.0.{n} - - [01/May/2024:10:{m:02d}:00 +0000] "GET /p{n} HTTP/1.1" 200 5'
    lines = [line.format(n=i % 200, m=i % 60) for i in range(300_000)]
    lines[10] = lines[220_000] = "junk"
    log = write_text(tmp_path / "big.log", "\n".join(lines) + "\n")
    previous = spark_session.conf.get("spark.sql.files.maxPartitionBytes")
    spark_session.conf.set("spark.sql.files.maxPartitionBytes", str(int(log.stat().st_size * 0.9)))
    # (Else Spark makes splits of the file's size over the session's cores: two here.)
    spark_session.conf.set("spark.sql.files.minPartitionNum", "1")
    try:
        local, result, rejects = rejects_as_local([log], tmp_path, spark_session, input_format="common")
        assert result.path_taken.endswith("read in splits")
        assert rejects.get_column("source_row").to_list() == [11, 220_001]
        assert local.rows_read == 300_000
    finally:
        spark_session.conf.set("spark.sql.files.maxPartitionBytes", previous)
        spark_session.conf.unset("spark.sql.files.minPartitionNum")


def test_a_large_parquet_file_that_is_truncated_or_lacks_a_column_is_named(
    tmp_path: Path, spark_session: Any
) -> None:
    """Bad input on the split path gives a local run's typed error: a truncated file (Spark cannot read
    its footer: it is read whole, by the local reader) and a missing user column (each slice's read)."""
    big = large_parquet(tmp_path / "big.parquet")
    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes(big.read_bytes()[: big.stat().st_size // 2])
    no_user = tmp_path / "no_user.parquet"
    pl.read_parquet(big).rename({"user_id": "who"}).write_parquet(no_user, row_group_size=1_000)
    previous = spark_session.conf.get("spark.sql.files.maxPartitionBytes")
    spark_session.conf.set("spark.sql.files.maxPartitionBytes", "64k")
    try:
        for path, kind in ((truncated, UnreadableInputError), (no_user, MissingColumnError)):
            with pytest.raises(kind) as local_error:
                sessionize.run([path], no_geo=True)
            with pytest.raises(kind) as spark_error:
                sessionize.run([path], no_geo=True, spark=spark_session)
            assert str(spark_error.value).startswith(str(local_error.value))
    finally:
        spark_session.conf.set("spark.sql.files.maxPartitionBytes", previous)


def test_a_directory_url_reads_the_files_a_local_directory_reads(tmp_path: Path, spark_session: Any) -> None:
    """Spark lists a directory URL itself, skipping names that start with ``_`` or ``.``; the local path
    and Dask's URL listing skip the same ones, so every engine reads the same files."""
    from tests.test_glob_paths import hidden_layout

    directory = hidden_layout(tmp_path / "logs")
    with pytest.warns(sessionize.SessionizeWarning):
        local = sessionize.run([directory], no_geo=True)
    out = tmp_path / "spark-sessions"
    result = sessionize.run([directory.as_uri() + "/"], spark=spark_session, output=str(out), no_geo=True)
    users = sorted(local.sessions["user_id"].to_list())
    assert sorted(read_dir(out)["user_id"].to_list()) == users == ["a", "e"]
    assert result.rows_read == local.rows_read == 2


def test_a_line_nested_too_deep_in_a_file_read_in_splits_is_rejected_as_locally(
    tmp_path: Path, spark_session: Any
) -> None:
    """An NDJSON file large enough to be read in splits, with one line nested deeper than the readers
    take (``JSON_DEPTH_LIMIT``): Spark's splits read it as a local run does, that line rejected as
    ``json_too_deep`` (the splits' own reader took it, so the engines' tables differed)."""
    from sessionize.io.read import JSON_DEPTH_LIMIT

    lines = [
        json.dumps({"user_id": f"u{i % 20}", "timestamp": f"2024-05-01T10:{i % 60:02d}:00Z", "url": f"/p{i}"})
        for i in range(400)
    ]
    deep: Any = "x"
    for _ in range(JSON_DEPTH_LIMIT + 5):
        deep = {"a": deep}
    lines[150] = json.dumps({"user_id": "u1", "timestamp": "2024-05-01T10:00:00Z", "props": deep})
    events = write_text(tmp_path / "in" / "events.ndjson", "\n".join(lines) + "\n")
    options: dict[str, Any] = {"no_geo": True, "on_invalid": "skip"}
    local = sessionize.run([events], rejects=str(tmp_path / "local.parquet"), **options)
    expected = pl.read_parquet(tmp_path / "local.parquet")
    assert expected["reject_reason"].to_list() == ["json_too_deep"]
    previous = spark_session.conf.get("spark.sql.files.maxPartitionBytes")
    spark_session.conf.set("spark.sql.files.maxPartitionBytes", "8k")
    try:
        result = sessionize.run(
            [events],
            spark=spark_session,
            output=str(tmp_path / "out"),
            rejects=str(tmp_path / "rej"),
            **options,
        )
    finally:
        spark_session.conf.set("spark.sql.files.maxPartitionBytes", previous)
    assert result.rejected == local.rejected == 1
    assert_frame_equal(read_rejects_dir(tmp_path / "rej"), expected)
    assert_frame_equal(
        pl.read_parquet(tmp_path / "out" / "*.parquet").sort("session_id"),
        local.sessions.sort("session_id"),
        check_dtypes=False,
    )


def test_lone_surrogate_escapes_in_a_file_read_in_splits_are_read_as_locally(
    tmp_path: Path, spark_session: Any
) -> None:
    """Lone halves of UTF-16 surrogate pairs (``\\ud800``, as JavaScript's JSON.stringify writes them)
    in a file read in splits: U+FFFD as in a local run (Polars' own reader made a lone high half NUL
    and failed on a lone low one)."""
    lines = [
        json.dumps({"user_id": f"u{i % 20}", "timestamp": f"2024-05-01T10:{i % 60:02d}:00Z", "url": f"/p{i}"})
        for i in range(400)
    ]
    lines[150] = '{"user_id": "u\\ud800", "timestamp": "2024-05-01T10:00:00Z", "url": "/a"}'
    events = write_text(tmp_path / "in" / "events.ndjson", "\n".join(lines) + "\n")
    local = sessionize.run([events], no_geo=True)
    assert "u\ufffd" in local.sessions["user_id"].to_list()
    previous = spark_session.conf.get("spark.sql.files.maxPartitionBytes")
    spark_session.conf.set("spark.sql.files.maxPartitionBytes", "8k")
    try:
        result = sessionize.run([events], spark=spark_session, output=str(tmp_path / "out"), no_geo=True)
    finally:
        spark_session.conf.set("spark.sql.files.maxPartitionBytes", previous)
    assert result.rows_read == local.rows_read == 400
    assert_frame_equal(
        pl.read_parquet(tmp_path / "out" / "*.parquet").sort("session_id"),
        local.sessions.sort("session_id"),
        check_dtypes=False,
    )


def _warned(run: Any) -> list[str]:
    """The SessionizeWarnings that ``run()`` gives (each once), in order."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", sessionize.SessionizeWarning)
        run()
    return [str(w.message) for w in caught if issubclass(w.category, sessionize.SessionizeWarning)]


def test_nul_bytes_before_log_lines_are_warned_of_on_the_driver(tmp_path: Path, spark_session: Any) -> None:
    """Runs of NUL bytes before log lines (a copytruncate hole), in a log read whole and in one read in
    splits: a local run and Dask warn that they were skipped; Spark read them as those do but said nothing
    (the whole file's warning was raised on an executor, the split file's never counted). The driver gives
    the local run's warnings: one per file, the split file's summed over its splits."""
    lines = APACHE_LOG.read_bytes().splitlines()[:3000]
    small = tmp_path / "in" / "small.log"
    small.parent.mkdir()
    small.write_bytes(b"\n".join(lines[:20]).replace(lines[2], b"\0" * 300 + lines[2]) + b"\n")
    holed = [b"\0" * 100 + lines[0], *lines[1:1500], b"\0" * 4096 + lines[1500], *lines[1501:2800]]
    holed += [b"\0" * 7 + lines[2800], *lines[2801:]]
    big = tmp_path / "in" / "big.log"
    big.write_bytes(b"\n".join(holed) + b"\n")
    options: dict[str, Any] = {"no_geo": True, "on_invalid": "skip"}
    local = _warned(lambda: sessionize.run([small, big], **options))
    hole = (
        ": the hole a crash, or logrotate's copytruncate, leaves in a log being written, not data. The lines "
        "after them were read as written."
    )
    assert [w for w in local if "NUL" in w] == [
        f"{small}: skipped 300 NUL byte(s) before line 3{hole}",
        f"{big}: skipped 4,203 NUL byte(s) before line 1 and 2 other line(s){hole}",
    ]
    previous = spark_session.conf.get("spark.sql.files.maxPartitionBytes")
    spark_session.conf.set("spark.sql.files.maxPartitionBytes", str(big.stat().st_size // 5))
    try:
        result: list[sessionize.RunResult] = []
        spark = _warned(
            lambda: result.append(same_as_local([small, big], tmp_path, spark_session, **options))
        )
        assert result[0].path_taken.endswith(", 1 large file(s) read in splits")
    finally:
        spark_session.conf.set("spark.sql.files.maxPartitionBytes", previous)
    # (same_as_local's own local run gives the local warnings first.)
    assert spark == local + local


def test_a_utf16_log_is_read_with_its_encoding_and_named_without_it(
    tmp_path: Path, spark_session: Any
) -> None:
    """UTF-16 logs with a line that is not a log line (4) and one that does not decode (6), with and without
    a byte order mark: read with --encoding (whole: Spark's reader splits only UTF-8), their bad lines are
    named by their line numbers, as in a local run. Larger than a split and read without --encoding, the
    log was split at the byte 0x0A as UTF-8 when its format was given (--input-format combined: every line
    rejected as nul_byte_in_line, its NULs called a copytruncate hole); it is refused as a local run
    refuses it."""
    from tests.test_logs_as_written import (
        WIDE,
        _numbered_utf16_lines,
        _utf16_text,
        _wide_request,
        write_bytes,
    )

    layouts = {"utf-16": (codecs.BOM_UTF16_BE, "be"), "utf-16-le": (b"", "le")}
    for encoding, (bom, order) in layouts.items():
        folder = tmp_path / encoding
        log = folder / "in" / "access.log"
        log.parent.mkdir(parents=True)
        log.write_bytes(bom + _utf16_text(_numbered_utf16_lines(order), order))
        _, result, rejects = rejects_as_local([log], folder, spark_session, encoding=encoding)
        assert rejects.select("source_row", "reject_reason").rows() == [
            (4, "malformed_log_line"),
            (6, "undecodable_bytes"),
        ]
        assert (result.rows_read, result.rejected) == (8, 2)
    big = tmp_path / "big" / "access.log"
    big.parent.mkdir()
    big.write_bytes(_utf16_text([_wide_request(n % 60) for n in range(600)], "le"))
    previous = spark_session.conf.get("spark.sql.files.maxPartitionBytes")
    spark_session.conf.set("spark.sql.files.maxPartitionBytes", str(big.stat().st_size // 4))
    try:
        extras: list[dict[str, Any]] = [{}, {"input_format": "combined"}]
        for extra in extras:
            with pytest.raises(
                UnreadableInputError, match=r"looks like UTF-16 text\. Give --encoding utf-16"
            ):
                sessionize.run([big], no_geo=True, spark=spark_session, output=str(tmp_path / "o"), **extra)
            result = same_as_local(
                [big], tmp_path / "ok", spark_session, encoding="utf-16-le", no_geo=True, **extra
            )
            assert result.rows_read == 600 and result.path_taken == "spark: 2 partitions"
            shutil.rmtree(tmp_path / "ok")
        # A CSV alike: refused as a local run refuses it, not slice by slice ("Spark's reader split...").
        rows = "".join(f"u{n % 7},2024-05-01T10:{n % 60:02d}:00Z,/{WIDE}{n}\n" for n in range(900))
        csv = write_bytes(
            tmp_path / "big" / "events.csv", ("user_id,timestamp,url\n" + rows).encode("utf-16-le")
        )
        with pytest.raises(UnreadableInputError) as local_error:
            sessionize.run([csv], no_geo=True)
        with pytest.raises(UnreadableInputError) as spark_error:
            sessionize.run([csv], no_geo=True, spark=spark_session, output=str(tmp_path / "o"))
        assert str(spark_error.value) == str(local_error.value) and "looks like UTF-16" in str(
            local_error.value
        )
    finally:
        spark_session.conf.set("spark.sql.files.maxPartitionBytes", previous)


@pytest.mark.slow
def test_a_split_files_warnings_reach_the_driver(tmp_path: Path, spark_session: Any) -> None:
    """A warning of a slice of a file read in splits (here epoch timestamps in seconds and milliseconds)
    was given on the executor, where no one sees it: the driver gives it as a local run gives the whole
    file's, once however many slices give it."""
    rows = [
        f"u{i % 40},{1714550400 + i if i % 2 else (1714550400 + i) * 1000},https://a.example/{i % 9}"
        for i in range(3000)
    ]
    path = write_text(tmp_path / "mixed.csv", "user_id,timestamp,url\n" + "\n".join(rows) + "\n")
    previous = spark_session.conf.get("spark.sql.files.maxPartitionBytes")
    spark_session.conf.set("spark.sql.files.maxPartitionBytes", "16k")
    try:
        with pytest.warns(sessionize.SessionizeWarning, match="epoch timestamps of several sizes"):
            local = sessionize.run([path], no_geo=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", sessionize.SessionizeWarning)
            result = sessionize.run([path], spark=spark_session, output=str(tmp_path / "out"), no_geo=True)
    finally:
        spark_session.conf.set("spark.sql.files.maxPartitionBytes", previous)
    assert result.path_taken.endswith("read in splits")
    assert_frame_equal(read_dir(tmp_path / "out").sort(KEYS), local.sessions.sort(KEYS))
    given = [str(w.message) for w in caught if "epoch timestamps of several sizes" in str(w.message)]
    assert given and all("mixed.csv" in message for message in given)
    assert len(given) == len(set(given))


def test_the_summary_names_the_spark_path(tmp_path: Path, spark_session: Any) -> None:
    """Review of stop 57: a Spark run's text summary said "2 buckets of users (memory budget 0KiB)", and
    its JSON a memory budget of 0 beside the right path: the summary took it for the bucketed engine.
    It says Spark's partitions, and the master."""
    from sessionize.cli import run_figures

    result = sessionize.run(
        [SAMPLE_DATA / "events.csv"], spark=spark_session, output=str(tmp_path / "out"), no_geo=True
    )
    figures, _ = run_figures(result)
    path = next(figure for figure in figures if figure.label == "path")
    assert path.text.startswith(f"spark, {result.buckets} partitions"), path
    assert "bucket" not in path.text and "memory budget" not in path.text
    assert path.fields["path"] == result.path_taken and "memory_limit_bytes" not in path.fields
