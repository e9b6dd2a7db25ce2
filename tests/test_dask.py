"""``--engine dask``: the session table of the local engine, computed on a Dask cluster.

Every test compares :func:`sessionize.dask_engine.run_dask` with ``sessionize.run`` (the local
engine) on the same files: the whole table, every column, and the figures of the summary. The inputs
are several files of several formats, each user's events spread over many of them, with events of
one user at the same instant in different files (input order breaks the tie), repeated event ids,
exact copies, client session ids, bots and addresses in the test GeoIP database.

The tests share one in-process cluster (threads); one test starts its own cluster of worker
processes, so that settings, the GeoIP database and the tasks really go through pickle.
"""

from __future__ import annotations

import gzip
import json
import pickle
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from typer.testing import CliRunner, Result

import sessionize
from sessionize import geo, io, pipeline
from sessionize.config import OnInvalid
from sessionize.errors import (
    GeoIPDatabaseError,
    InvalidEventsError,
    MalformedRowsError,
    OutOfRangeError,
    OutputError,
    UsageError,
)
from tests.helpers import CITY_DB, DATA, KEYS, load_generator

distributed = pytest.importorskip(
    "distributed",
    reason="Dask is not installed: pip install 'sessionize[dask]' to run the --engine dask tests",
)
pytest.importorskip(
    "dask.dataframe", reason="dask[dataframe] is not installed: pip install 'sessionize[dask]'"
)
import dask  # noqa: E402  (after the skip)

from sessionize.cli import app  # noqa: E402
from sessionize.engines import dask as dask_engine  # noqa: E402
from sessionize.engines.base import PREVIEW_ROWS  # noqa: E402
from sessionize.partition import PartitionJob  # noqa: E402

# A Dask cluster (in-process, and one of processes).
pytestmark = pytest.mark.slow

SECRET_VAR = "SESSIONIZE_DASK_TEST_SECRET"
#: Small input partitions and several partitions of users, so that every path is taken.
PARTITION_ROWS = 700
PARTITIONS = 5
USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "curl/8.5.0",
)
#: Addresses of the test database (resolved), private, malformed and missing ones.
KNOWN_IPS = ("81.2.69.160", "2.125.160.216", "89.160.20.112", "67.43.156.1", "10.0.0.1", "not-an-ip", None)
ISO = "%Y-%m-%dT%H:%M:%S%.6fZ"
VALID_UNTIL = datetime.now(UTC) + timedelta(days=1)
OPTIONS = io.ReadOptions(valid_until=VALID_UNTIL)


def clickstream(n_events: int, seed: int) -> pl.DataFrame:
    """bench/generate.py's events plus what a run must keep straight across partitions."""
    events: pl.DataFrame = load_generator().generate(n_events, n_events // 8, n_events // 8, seed=seed)
    rng = np.random.default_rng(seed)
    number = pl.col("user_id").str.slice(1).cast(pl.Int64)
    events = events.with_columns(
        pl.format("e{}", pl.int_range(pl.len())).alias("event_id"),
        pl.lit(pl.Series(USER_AGENTS)).gather(number % len(USER_AGENTS)).alias("user_agent"),
        pl.when(number % 29 == 0).then(pl.format("app-{}", number % 3)).alias("session_id"),
        pl.when(number % 3 == 0)
        .then(pl.lit(pl.Series(KNOWN_IPS, dtype=pl.String)).gather(number % len(KNOWN_IPS)))
        .otherwise(pl.col("ip"))
        .alias("ip"),
    )
    height = events.height
    # Event ids repeated later in the input (the first in input order wins), exact copies without one.
    repeated = events.gather(rng.choice(height, size=height // 40, replace=False)).with_columns(
        pl.col("timestamp") - timedelta(seconds=1), pl.lit("https://shop.example.com/repeat").alias("url")
    )
    copies = events.gather(rng.choice(height, size=height // 60, replace=False)).with_columns(
        pl.lit(None, pl.String).alias("event_id")
    )
    # A second event at the same instant for some users, with another page: input order decides
    # which is the landing and exit page.
    ties = events.gather(rng.choice(height, size=height // 10, replace=False)).with_columns(
        pl.concat_str(pl.col("url"), pl.lit("?tie=1")).alias("url"), pl.lit(None, pl.String).alias("event_id")
    )
    return pl.concat([events, repeated, copies, copies, ties]).sample(fraction=1.0, shuffle=True, seed=seed)


def write_inputs(directory: Path, events: pl.DataFrame, parts: int) -> list[Path]:
    """``events`` dealt round-robin into ``parts`` files: CSV, Parquet, NDJSON and .csv.gz in turn."""
    numbered = events.with_row_index("_n")
    paths = []
    for k in range(parts):
        part = numbered.filter(pl.col("_n") % parts == k).drop("_n")
        kind = ("csv", "parquet", "ndjson", "csv.gz")[k % 4]
        path = directory / f"events-{k}.{kind}"
        if kind == "parquet":
            part.write_parquet(path)
        elif kind == "ndjson":
            part.with_columns(pl.col("timestamp").dt.strftime(ISO)).write_ndjson(path)
        else:
            text = part.write_csv(datetime_format=ISO)
            if kind == "csv":
                path.write_text(text, encoding="utf-8")
            else:
                path.write_bytes(gzip.compress(text.encode("utf-8")))
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    directory = tmp_path_factory.mktemp("dask-inputs")
    files = write_inputs(directory, clickstream(6_000, seed=5), parts=6)
    users = [
        set(io.read_file(io.InputFile(str(f), io.format_of(str(f)) or "csv"), OPTIONS).events["user_id"])
        for f in files
    ]
    assert len(set.intersection(*users)) > 20  # users' events are spread over every file
    return files


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory: pytest.TempPathFactory, inputs: list[Path]) -> list[Path]:
    """The inputs plus a CSV with an empty user id, a bad timestamp and a line with a field too
    many, and a Parquet file with rows out of the valid range in two of its partitions."""
    directory = tmp_path_factory.mktemp("dask-bad")
    bad_csv = directory / "bad.csv"
    header = "user_id,timestamp,event,url,referrer,ip,event_id,user_agent,session_id"
    bad_csv.write_text(
        f"{header}\n"
        "u0000001,2024-05-01T10:00:00Z,page_view,https://shop.example.com/,,81.2.69.160,,,\n"
        ",2024-05-01T10:01:00Z,page_view,https://shop.example.com/a,,,,,\n"
        "u0000002,not a time,page_view,https://shop.example.com/b,,,,,\n"
        "u0000003,2024-05-01T10:03:00Z,page_view,https://shop.example.com/c,,,,,,extra\n"
        "u0000003,2024-05-01T10:04:00Z,page_view,https://shop.example.com/d,,,,,\n",
        encoding="utf-8",
    )
    rows = 2 * PARTITION_ROWS + 10
    stamps = [datetime(2024, 5, 1, tzinfo=UTC) + timedelta(minutes=i) for i in range(rows)]
    for i in (5, PARTITION_ROWS + 7):
        stamps[i] = datetime(2099, 1, 1, tzinfo=UTC)  # after valid_until
    bad_parquet = directory / "late.parquet"
    pl.DataFrame(
        {
            "user_id": [f"u{i % 40:07d}" for i in range(rows)],
            "timestamp": stamps,
            "url": ["https://x.example/"] * rows,
        }
    ).write_parquet(bad_parquet)
    return [*inputs, bad_csv, bad_parquet]


@pytest.fixture(scope="module")
def scheduler() -> Any:
    """The address of an in-process cluster of two single-threaded workers, for the whole module."""
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0"
    ) as cluster:
        yield cluster.scheduler_address


def run_local(files: list[Path], **options: Any) -> sessionize.RunResult:
    return sessionize.run(files, output=None, valid_until=VALID_UNTIL, **options)


def run_dask(
    files: list[Path] | list[str],
    *,
    scheduler: str | None,
    geoip_db: Path | None = None,
    on_invalid: OnInvalid = "fail",
    secret: bytes | None = None,
    rules: pipeline.SessionRules | None = None,
    conversion_events: tuple[str, ...] = (),
    output_dir: Path | str | None = None,
    **options: Any,
) -> dask_engine.DaskOutcome:
    """run_dask with the options and job that ``sessionize.run`` builds from the same arguments."""
    read_options = io.ReadOptions(
        valid_until=VALID_UNTIL,
        on_invalid=on_invalid,
        user_id_secret=secret,
    )
    settings = pipeline.SessionSettings(
        geo_database=None if geoip_db is None else geo.open_database(geoip_db),
        rules=rules or pipeline.SessionRules(),
        conversion_events=conversion_events,
    )
    job = PartitionJob(
        settings=settings,
        secret=secret,
        dedupe=options.pop("dedupe", False),
        exclude_bots=options.pop("exclude_bots", False),
        dropped=tuple(options.pop("dropped", ())),
    )
    return dask_engine.run_dask(
        files,
        read_options,
        job,
        output_dir=output_dir,
        scheduler=scheduler,
        partitions=options.pop("partitions", PARTITIONS),
        partition_rows=PARTITION_ROWS,
        **options,
    )


def assert_same_run(local: sessionize.RunResult, remote: dask_engine.DaskOutcome) -> None:
    """The same table (every column, every row) and the same figures."""
    assert remote.sessions_complete
    assert remote.sessions.columns == local.sessions.columns
    assert_frame_equal(remote.sessions.sort(KEYS), local.sessions.sort(KEYS))
    assert remote.files == local.files
    assert (remote.rows_read, remote.events, remote.rejected, remote.duplicates_removed) == (
        local.rows_read,
        local.events_read,
        local.rejected,
        local.duplicates_removed,
    )
    assert remote.rows_read == remote.events + remote.rejected + remote.duplicates_removed
    assert (remote.session_count, remote.user_count, remote.geo_counts) == (
        local.session_count,
        local.user_count,
        local.geo_counts,
    )
    assert remote.bot_sessions == local.bot_sessions
    assert remote.median_duration_s == local.median_duration_s
    assert remote.mean_duration_s == local.mean_duration_s


# --- the same table as the local engine -------------------------------------------------------------


def test_same_table_as_local_engine_with_geo(inputs: list[Path], scheduler: str) -> None:
    local = run_local(inputs, geoip_db=CITY_DB)
    remote = run_dask(inputs, scheduler=scheduler, geoip_db=CITY_DB)
    assert_same_run(local, remote)
    # The data exercise what partitions must keep straight.
    assert local.duplicates_removed > 100 and local.bot_sessions > 50
    assert local.geo_counts["resolved"] > 50 and local.geo_counts["not_found"] > 50
    assert remote.sessions.get_column("city").drop_nulls().len() > 50
    assert remote.input_partitions > len(inputs)  # the Parquet files were read in slices
    assert remote.partitions == PARTITIONS and remote.workers == 2


def test_same_table_with_dedupe_and_session_rules(inputs: list[Path], scheduler: str) -> None:
    rules = pipeline.SessionRules(max_session_length=timedelta(minutes=20), split_at_midnight=True)
    local = run_local(inputs, no_geo=True, dedupe=True, max_session_length="20m", split_at_midnight=True)
    remote = run_dask(inputs, scheduler=scheduler, dedupe=True, rules=rules, partitions=3)
    assert_same_run(local, remote)
    assert local.duplicates_removed > run_local(inputs, no_geo=True).duplicates_removed


def test_order_of_ties_comes_from_the_input(inputs: list[Path], scheduler: str) -> None:
    """Reversed files give other landing and exit pages for the sessions with ties, as locally."""
    local = run_local(inputs[::-1], no_geo=True)
    remote = run_dask(inputs[::-1], scheduler=scheduler)
    assert_same_run(local, remote)
    forward = run_local(inputs, no_geo=True).sessions.sort(KEYS)
    assert not forward.get_column("landing_page").equals(local.sessions.sort(KEYS).get_column("landing_page"))


def test_rejects_with_on_invalid_skip(bad_inputs: list[Path], scheduler: str) -> None:
    local = run_local(bad_inputs, no_geo=True, on_invalid="skip")
    remote = run_dask(bad_inputs, scheduler=scheduler, on_invalid="skip")
    assert_same_run(local, remote)
    assert local.rejects is not None and remote.rejects is not None
    assert_frame_equal(remote.rejects, local.rejects)
    assert remote.rejects.get_column("reject_reason").to_list() == [
        "empty_user_id",
        "bad_timestamp",
        "wrong_field_count (10, expected 9)",
        "out_of_range",
        "out_of_range",
    ]
    assert remote.rejects.get_column("source_row").to_list() == [3, 4, 5, 6, PARTITION_ROWS + 8]


def test_invalid_rows_fail_as_in_a_local_run(bad_inputs: list[Path], scheduler: str) -> None:
    """The first invalid input's error, whichever worker finishes first."""
    with pytest.raises(InvalidEventsError) as expected:
        run_local(bad_inputs, no_geo=True)
    with pytest.raises(InvalidEventsError) as raised:
        run_dask(bad_inputs, scheduler=scheduler)
    assert type(raised.value) is type(expected.value) is MalformedRowsError
    assert str(raised.value) == str(expected.value)


def test_invalid_rows_of_a_parquet_slice(bad_inputs: list[Path], scheduler: str) -> None:
    """A file read in slices fails on its first slice with bad rows, as the bucketed local path does:
    same error and first row, the count is the slice's."""
    late = bad_inputs[-1]
    with pytest.raises(OutOfRangeError) as expected:
        run_local([late], no_geo=True, buckets=2, memory_limit="1M")
    with pytest.raises(OutOfRangeError) as raised:
        run_dask([late], scheduler=scheduler)
    assert str(raised.value).startswith(f"{late}: 1 timestamp(s) in column 'timestamp' are outside")
    assert "row 6: " in str(raised.value)
    assert str(expected.value).startswith(f"{late}: ")


def test_a_vhost_combined_log_with_proxy_address_lists(tmp_path: Path, scheduler: str) -> None:
    """Apache's vhost_combined, some client fields a proxy's X-Forwarded-For list: the same sessions."""
    lines = (DATA / "apache_logs" / "apache_access.log").read_text(encoding="utf-8", errors="replace")
    vhost = [
        f"site{n % 2}.example:443 " + (text.replace(" - - [", ", 10.0.0.2 - - [", 1) if n % 3 == 0 else text)
        for n, text in enumerate(lines.splitlines()[:400])
    ]
    log = tmp_path / "other_vhosts_access.log"
    log.write_text("\n".join(vhost) + "\n")
    local = run_local([log], no_geo=True)
    assert local.rejected == 0 and local.session_count > 10
    assert_same_run(local, run_dask([log], scheduler=scheduler))


def test_malformed_rows_fail_as_in_a_local_run(tmp_path: Path, scheduler: str) -> None:
    bad = tmp_path / "broken.csv"
    bad.write_text("user_id,timestamp\nu1,2024-05-01T10:00:00Z\nu2,2024-05-01T10:00:00Z,extra\n")
    with pytest.raises(MalformedRowsError) as expected:
        run_local([bad], no_geo=True)
    with pytest.raises(MalformedRowsError, match=r"broken\.csv") as raised:
        run_dask([bad], scheduler=scheduler)
    assert str(raised.value) == str(expected.value)


# --- output directory -----------------------------------------------------------------------------


def test_output_dir_holds_one_parquet_file_per_partition(
    inputs: list[Path], scheduler: str, tmp_path: Path
) -> None:
    target = tmp_path / "sessions"
    local = run_local(inputs, no_geo=True, drop_columns="user_agent,search_term")
    remote = run_dask(inputs, scheduler=scheduler, output_dir=target, dropped=("user_agent", "search_term"))
    names = sorted(p.name for p in target.iterdir() if p.name != dask_engine.SUCCESS)
    assert names == [f"part-{n:05d}.parquet" for n in range(PARTITIONS)]
    assert (target / dask_engine.SUCCESS).is_file()
    assert remote.part_files == [str(target / name) for name in names]
    written = pl.read_parquet(target / "*.parquet")
    assert written.schema == local.sessions.schema
    assert_frame_equal(written.sort(KEYS), local.sessions.sort(KEYS))
    assert not remote.sessions_complete and remote.sessions.height == PREVIEW_ROWS
    assert remote.session_count == local.session_count
    # Each partition is sorted by user, every user in one partition.
    users = [set(pl.read_parquet(target / name).get_column("user_id")) for name in names]
    assert sum(len(u) for u in users) == local.user_count
    # A second run does not mix its partitions with these.
    with pytest.raises(OutputError, match="not empty"):
        run_dask(inputs, scheduler=scheduler, output_dir=target)
    assert sorted(p.name for p in target.iterdir()) == [dask_engine.SUCCESS, *names]


def test_a_failed_run_leaves_no_output_dir(bad_inputs: list[Path], scheduler: str, tmp_path: Path) -> None:
    target = tmp_path / "sessions"
    with pytest.raises(InvalidEventsError):
        run_dask(bad_inputs, scheduler=scheduler, output_dir=target)
    assert not target.exists()


def test_a_full_disk_under_a_part_is_an_output_error(
    inputs: list[Path], scheduler: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A part that does not fit on the disk (Polars raises a ``ComputeError`` for it): an output error
    naming the part and the cause, as for any other output (it was "Unexpected error: ComputeError"),
    and the directory the run made is gone."""
    out = tmp_path / "sessions"
    written = io.write_parquet
    parts: list[object] = []

    def fills_the_disk(frame: pl.DataFrame, target: Any) -> None:
        parts.append(target)
        if len(parts) == 2:
            raise pl.exceptions.ComputeError(
                "parquet: File out of specification: underlying IO error: "
                "No space left on device (os error 28)"
            )
        written(frame, target)

    monkeypatch.setattr(io, "write_parquet", fills_the_disk)
    result = run_on_cluster(inputs, scheduler, out)
    assert result.exit_code == 1, result.output
    line = json.loads(result.stderr.strip().splitlines()[-1])
    assert line["error"] == "OutputError", line
    assert line["message"] == f"Cannot write {parts[1]}: No space left on device.", line
    assert str(parts[1]).startswith(f"{out}/.part-")
    assert not out.exists()


def test_fsspec_urls(inputs: list[Path], scheduler: str, tmp_path: Path) -> None:
    """``file://`` URLs are read through fsspec, as s3:// or gs:// ones would be (and listed as their paths
    are: a glob expands too)."""
    pattern = f"file://{inputs[0].parent}/events-*"
    files = dask_engine.resolve_inputs([pattern])
    assert [f.path for f in files] == [f"file://{p}" for p in sorted(inputs)]
    target = f"file://{tmp_path}/out"
    remote = run_dask([pattern], scheduler=scheduler, output_dir=target, partitions=2)
    local = run_local(sorted(inputs), geoip_db=None, no_geo=True)
    written = pl.read_parquet(tmp_path / "out" / "*.parquet")
    assert_frame_equal(written.sort(KEYS), local.sessions.sort(KEYS))
    assert remote.rows_read == local.rows_read


# --- worker processes: everything through pickle --------------------------------------------------


def test_local_cluster_of_processes(inputs: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """No scheduler: run_dask starts worker processes and stops them; settings with the GeoIP
    database, hashed user ids, excluded bots and dropped columns cross process boundaries."""
    monkeypatch.setenv(SECRET_VAR, "s3cret")
    local = run_local(
        inputs,
        geoip_db=CITY_DB,
        hash_user_ids=SECRET_VAR,
        exclude_bots=True,
        drop_columns="ip",
        max_session_length="1h",
        conversion_events="add_to_cart",
    )
    remote = run_dask(
        inputs,
        scheduler=None,
        workers=2,
        geoip_db=CITY_DB,
        secret=b"s3cret",
        exclude_bots=True,
        dropped=("ip",),
        rules=pipeline.SessionRules(max_session_length=timedelta(hours=1)),
        conversion_events=("add_to_cart",),
    )
    assert_same_run(local, remote)
    assert remote.workers == 2 and remote.scheduler.startswith("tcp://")
    assert local.bot_sessions > 0 and "ip" not in remote.sessions.columns
    assert remote.sessions.get_column("user_id").str.len_chars().min() == 64  # HMAC-SHA256 in hex


# --- pieces ---------------------------------------------------------------------------------------


def test_geo_database_pickles_as_its_path_and_opens_once_per_process() -> None:
    database = geo.open_database(CITY_DB)
    assert database is not None
    data = pickle.dumps(database)
    assert len(data) < 500  # the path and source, not the file
    first, second = pickle.loads(data), pickle.loads(data)
    assert first is second  # one open reader per process
    assert first.path == database.path and first.info == database.info
    assert first.lookup("81.2.69.160") == database.lookup("81.2.69.160")
    settings = pipeline.SessionSettings(geo_database=database, referers=pipeline.default_referers())
    copy = pickle.loads(pickle.dumps(settings))
    assert copy.geo_database is first and len(copy.referers or ()) == len(pipeline.default_referers())
    first.close()
    assert pickle.loads(data) is not first  # a closed reader is not handed out again


def test_worker_without_the_geo_database(tmp_path: Path, scheduler: str, inputs: list[Path]) -> None:
    moved = tmp_path / "city.mmdb"
    moved.write_bytes(CITY_DB.read_bytes())
    database = geo.open_database(moved)
    moved.unlink()
    options = io.ReadOptions(valid_until=VALID_UNTIL)
    with pytest.raises(GeoIPDatabaseError, match=r"On a Dask worker.*does not exist"):
        dask_engine.run_dask(
            inputs,
            options,
            PartitionJob(settings=pipeline.SessionSettings(geo_database=database)),
            output_dir=None,
            scheduler=scheduler,
        )


def test_bad_arguments(inputs: list[Path], tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="standard input"):
        dask_engine.resolve_inputs(["-"])
    with pytest.raises(UsageError, match="partitions"):
        run_dask(inputs, scheduler=None, partitions=0)
    (tmp_path / "file.parquet").write_bytes(b"")
    with pytest.raises(OutputError, match="is a file"):
        dask_engine.check_output_dir(tmp_path / "file.parquet")
    with pytest.raises(OutputError, match="does not exist"):
        dask_engine.check_output_dir(tmp_path / "missing" / "out")
    with (
        dask.config.set({"distributed.comm.timeouts.connect": "2s"}),
        pytest.raises(UsageError, match="cannot connect"),
    ):
        run_dask(inputs, scheduler="tcp://127.0.0.1:9")


def test_plan_reads_local_parquet_in_slices(inputs: list[Path]) -> None:
    files = dask_engine.resolve_inputs(inputs)
    parts = dask_engine.plan_parts(files, partition_rows=PARTITION_ROWS)
    for number, source in enumerate(files):
        mine = [p for p in parts if p.number == number]
        if source.format == "parquet":
            rows = io.estimate_rows(source)
            assert [p.window for p in mine] == [
                (first, PARTITION_ROWS) for first in range(0, rows, PARTITION_ROWS)
            ]
        else:
            assert [p.window for p in mine] == [None]


def run_on_cluster(inputs: list[Path], scheduler: str, out: Path) -> Result:
    """``sessionize run INPUTS --engine dask --scheduler ADDRESS --partitions 3 -o OUT`` (JSON log)."""
    args = ["run", *map(str, inputs), "--engine", "dask", "--scheduler", scheduler, "--partitions", "3"]
    return CliRunner().invoke(app, [*args, "-o", str(out), "--no-geo", "--log-format", "json"])


def test_the_cli_runs_on_the_cluster(inputs: list[Path], scheduler: str, tmp_path: Path) -> None:
    """``sessionize run --engine dask --scheduler ADDRESS -o DIR``: the local table, in partitions."""
    out = tmp_path / "sessions"
    result = run_on_cluster(inputs, scheduler, out)
    assert result.exit_code == 0, result.output
    line = json.loads(result.stderr.strip().splitlines()[-1])
    assert line["path"] == "dask: 3 partitions"
    keys = ["user_id", "session_start", "session_id"]
    remote = pl.read_parquet(sorted(out.glob("*.parquet"))).sort(keys)
    local = sessionize.run(inputs, no_geo=True).sessions.sort(keys)
    assert_frame_equal(remote, local)
    assert line["sessions"] == local.height


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--buckets", "4"], "--buckets cannot be used with --engine dask"),
        (["--state", "S", "--output-dir", "O"], "--state cannot be used with --engine dask"),
        (["-o", "-"], "give a directory with -o DIR"),
    ],
)
def test_options_the_dask_engine_refuses(inputs: list[Path], extra: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["run", str(inputs[0]), "--engine", "dask", "--no-geo", *extra])
    assert result.exit_code == 2
    assert message in " ".join(result.stderr.replace("│", "").split())


def test_scheduler_needs_the_dask_engine(inputs: list[Path]) -> None:
    result = CliRunner().invoke(app, ["run", str(inputs[0]), "--scheduler", "tcp://x:1", "--no-geo"])
    assert result.exit_code == 2
    assert "go with --engine dask" in result.stderr


def test_a_directory_url_reads_the_files_a_local_directory_reads(tmp_path: Path, scheduler: str) -> None:
    """``file://`` directories (as s3:// ones) skip the names that start with ``_`` or ``.`` below them, as
    the local path and Spark do: Dask read ``.hid/b.csv`` where the others did not."""
    from tests.test_glob_paths import hidden_layout

    directory = hidden_layout(tmp_path / "logs")
    with pytest.warns(sessionize.SessionizeWarning):
        local = sessionize.run([directory], no_geo=True)
    with pytest.warns(sessionize.SessionizeWarning):
        remote = sessionize.run([directory.as_uri()], engine="dask", no_geo=True, scheduler=scheduler)
    assert sorted(remote.sessions["user_id"].to_list()) == sorted(local.sessions["user_id"].to_list())
    assert remote.rows_read == local.rows_read == 2


def test_a_snowplow_enriched_tsv_url_is_read_as_one(tmp_path: Path, scheduler: str) -> None:
    """A headerless enriched TSV given as a URL: its first line is an event, not a header, as for a
    local path (Dask took it for a header: a missing-column error)."""
    directory = tmp_path / "enriched"
    directory.mkdir()
    shutil.copy(DATA / "presets" / "snowplow_enriched.tsv", directory / "enriched.tsv")
    local = sessionize.run([directory], preset="snowplow", no_geo=True)
    remote = sessionize.run([directory.as_uri()], engine="dask", preset="snowplow", no_geo=True,
                            scheduler=scheduler)  # fmt: skip
    assert remote.session_count == local.session_count == 3


@pytest.mark.parametrize("named", [True, False], ids=["file", "directory"])
def test_compressed_files_behind_a_url_are_named(tmp_path: Path, named: bool) -> None:
    """Review 46: a bzip2 file named .csv behind a ``file://`` URL skipped the compression check local
    paths get, and was read as text. Its first bytes are read through fsspec, as a local file's are."""
    import bz2

    folder = tmp_path / "logs"
    folder.mkdir()
    (folder / "events.csv").write_bytes(bz2.compress(b"user_id,timestamp\nu,2024-05-01T10:00:00Z\n"))
    url = f"file://{folder / 'events.csv'}" if named else f"file://{folder}"
    with pytest.raises(sessionize.UnreadableInputError, match="is bzip2-compressed") as caught:
        dask_engine.resolve_inputs([url])
    assert "bunzip2 -c" in str(caught.value)
    assert f"file://{folder}/events.csv" in str(caught.value)


_CLUSTER_ELSEWHERE = """
import sys, time
from distributed import LocalCluster
if __name__ == "__main__":
    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0")
    with open("address.tmp", "w") as handle:
        handle.write(cluster.scheduler_address)
    import os
    os.replace("address.tmp", "address")
    sys.stdin.read()  # until the test closes it
    cluster.close()
"""


def test_relative_paths_name_the_clients_files_on_a_cluster_started_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop-56 review: with --scheduler, a relative input was opened in the workers' folder, where
    another ev.csv was read (exit 0, a table of the wrong file), and a relative -o was written there
    (or failed). Both are the client's, as on every other engine."""
    import subprocess
    import sys
    import time

    client_dir, workers_dir = tmp_path / "client", tmp_path / "workers"
    client_dir.mkdir()
    workers_dir.mkdir()
    row = "user_id,timestamp,url\n{},2024-05-01T10:00:00Z,https://s.example/\n"
    (client_dir / "ev.csv").write_text(row.format("CLIENT"), encoding="utf-8")
    (workers_dir / "ev.csv").write_text(row.format("WORKER"), encoding="utf-8")
    cluster = subprocess.Popen(
        [sys.executable, "-c", _CLUSTER_ELSEWHERE], cwd=workers_dir, stdin=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while not (workers_dir / "address").exists():
            assert cluster.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        address = (workers_dir / "address").read_text(encoding="utf-8")
        monkeypatch.chdir(client_dir)
        args = [
            "run",
            "ev.csv",
            "--engine",
            "dask",
            "--scheduler",
            address,
            "--no-geo",
            "--log-format",
            "json",
        ]
        whole = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "whole")])
        assert whole.exit_code == 0, whole.output
        assert pl.read_parquet(sorted((tmp_path / "whole").glob("*.parquet")))["user_id"].to_list() == [
            "CLIENT"
        ]
        result = CliRunner().invoke(app, [*args, "-o", "out"])
        assert result.exit_code == 0, result.output
        assert pl.read_parquet(sorted((client_dir / "out").glob("*.parquet")))["user_id"].to_list() == [
            "CLIENT"
        ]
        assert not (workers_dir / "out").exists()
    finally:
        assert cluster.stdin is not None
        cluster.stdin.close()
        try:
            cluster.wait(timeout=60)
        except subprocess.TimeoutExpired:
            cluster.kill()
