"""What several test modules share: the repository's paths and test data, constants, and small helpers
(reading CLI output, driving the CLI, writing and listing files). Fixtures live in ``conftest.py``."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable, Collection
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import polars as pl
import pytest
from typer.testing import CliRunner, Result

import sessionize
from sessionize.cli import app

HAS_DASK = all(importlib.util.find_spec(name) is not None for name in ("distributed", "dask"))
#: The engine paths besides the in-memory one, as ``sessionize.run`` keywords for :func:`path_options`.
OTHER_PATHS = [
    pytest.param({"buckets": 3}, id="buckets"),
    pytest.param({"state": "STATE", "output_dir": "OUT"}, id="incremental"),
    pytest.param(
        {"engine": "dask", "partitions": 2},
        id="dask",
        marks=pytest.mark.skipif(not HAS_DASK, reason="Dask is not installed"),
    ),
]
#: The same with the in-memory path first.
EVERY_PATH = [pytest.param({}, id="memory"), *OTHER_PATHS]
#: The same and Spark (a local session: slow), for :func:`any_path_options`.
EVERY_PATH_AND_SPARK = [
    *EVERY_PATH,
    pytest.param({"spark": "SPARK", "partitions": 2}, id="spark", marks=pytest.mark.slow),
]


def path_options(path: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """A path of :data:`OTHER_PATHS` as keywords: the state and output directories in ``tmp_path``,
    which the local paths also spill to; the Dask path on the tests' shared cluster."""
    options = {k: str(tmp_path / str(v)) if k in ("state", "output_dir") else v for k, v in path.items()}
    if path and "engine" not in path and "state" not in path:  # (no buckets with --state)
        options["temp_dir"] = str(tmp_path)
    if options.get("engine") == "dask" and "scheduler" not in options:
        options["scheduler"] = shared_dask_scheduler()
    return options


#: The tests' shared Dask cluster, once started (see :func:`shared_dask_scheduler`).
_DASK_CLUSTERS: list[Any] = []


def shared_dask_scheduler() -> str:
    """The address of an in-process Dask cluster of two single-threaded workers, started on first use and
    closed when the test session ends (conftest.py), for every test that runs the Dask path through
    :func:`path_options`. A run without a scheduler starts a local cluster of processes of its own, 4-6 s a
    run here, some 70 times in a CI run; test_dask.py runs that way (``test_local_cluster_of_processes``)."""
    if not _DASK_CLUSTERS:
        import distributed

        cluster = distributed.LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0"
        )
        _DASK_CLUSTERS.append(cluster)
    return str(_DASK_CLUSTERS[0].scheduler_address)


def close_shared_dask() -> None:
    """Close the shared Dask cluster, if one was started."""
    while _DASK_CLUSTERS:
        _DASK_CLUSTERS.pop().close()


def any_path_options(path: dict[str, Any], tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, Any]:
    """A path of :data:`EVERY_PATH_AND_SPARK` as keywords (:func:`path_options`): Spark's with the test
    session's ``spark_session`` and an output directory in ``tmp_path``."""
    if "spark" not in path:
        return path_options(path, tmp_path)
    return {**path, "spark": request.getfixturevalue("spark_session"), "output": str(tmp_path / "spark-out")}


def path_sessions(result: sessionize.RunResult, options: dict[str, Any]) -> pl.DataFrame:
    """The session table a run of :func:`path_options` (or :func:`any_path_options`) wrote: the
    incremental one's partitions, Spark's part files."""
    if "output_dir" in options:
        return pl.read_parquet(Path(options["output_dir"]) / "**" / "*.parquet")
    if "spark" in options:
        return pl.read_parquet(Path(options["output"]) / "*.parquet")
    return result.sessions


def session_rows(table: pl.DataFrame, *columns: str) -> list[tuple[Any, ...]]:
    """``columns`` of each session, by user and start."""
    return table.sort("user_id", "session_start").select(columns).rows()


#: A CSV in Snowplow's atomic.events layout (the columns the session rules read) and how it is read.
SNOWPLOW_HEADER = "domain_userid,domain_sessionid,derived_tstamp,event,page_url,event_id\n"
SNOWPLOW_OPTIONS: dict[str, Any] = {
    "user_col": "domain_userid",
    "session_col": "domain_sessionid",
    "no_geo": True,
}


REPO = Path(__file__).resolve().parent.parent
SAMPLE_DATA = REPO / "sample_data"
DATA = REPO / "tests" / "data"  # what each file is, its source and licence: data/README.md
#: The sample clickstream (964 sessions).
EVENTS = SAMPLE_DATA / "events.csv"
#: MaxMind's test database of cities.
CITY_DB = DATA / "geoip" / "GeoIP2-City-Test.mmdb"
APACHE_LOG = DATA / "apache_logs" / "apache_access.log"

T0 = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
#: The order to sort session tables by before comparing them.
KEYS = ["user_id", "session_start", "session_id"]
COLUMN_NAMES = [c.name for c in sessionize.SESSION_COLUMNS]

#: Debian's Chromium, for the tests that open a report page (never a browser of Playwright's own).
CHROMIUM = Path("/usr/bin/chromium")
# As root (CI) Chromium needs --no-sandbox (Playwright adds it); this machine has no network to talk to.
CHROMIUM_ARGS = [
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

EventRow = tuple[Any, ...]
EventsFactory = Callable[..., pl.DataFrame]


def at(**delta: float) -> datetime:
    """``T0`` plus a timedelta: ``at(minutes=30)``."""
    return T0 + timedelta(**delta)


def load_generator() -> ModuleType:
    """bench/generate.py, the benchmarks' clickstream generator (not a package: loaded by path)."""
    spec = importlib.util.spec_from_file_location("bench_generate", REPO / "bench" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- text the CLI printed --------------------------------------------------------------------------

_BOX_AND_SPACE = re.compile(r"[\s\u2500-\u257f]+")


def flat(text: str) -> str:
    """``text`` without whitespace and box-drawing characters, so that rich's wrapping does not matter."""
    return _BOX_AND_SPACE.sub("", text)


def words(text: str) -> str:
    """The words of ``text`` one space apart: rich's panel borders and line breaks taken out."""
    return " ".join(text.replace("│", " ").split())


# -- the CLI ---------------------------------------------------------------------------------------


def invoke(*args: str | Path, columns: int = 200, input: str | bytes | None = None) -> Result:
    """``sessionize ARGS`` through CliRunner on a terminal ``columns`` wide; an exception escaping the CLI
    fails the test."""
    result = CliRunner().invoke(app, [str(a) for a in args], input=input, env={"COLUMNS": str(columns)})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def run_cli(*args: str | Path, input: str | bytes | None = None, columns: int = 80) -> Result:
    """``sessionize run ARGS`` through CliRunner; an exception escaping the CLI fails the test."""
    # The summary as text (a terminal's); tests of the JSON log line pass --log-format json.
    if "--log-format" not in args:
        args = (*args, "--log-format", "text")
    return invoke("run", *args, columns=columns, input=input)


def run_incremental(source: str | Path, tmp_path: Path, *flags: str) -> Result:
    """``sessionize run SOURCE --state tmp_path/state --output-dir tmp_path/out --no-geo`` with the JSON
    log line (the summary, or the error, on stderr)."""
    return run_cli(
        source, "--state", tmp_path / "state", "--output-dir", tmp_path / "out", "--no-geo",
        "--log-format", "json", *flags,
    )  # fmt: skip


# -- files -----------------------------------------------------------------------------------------


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def listing(directory: Path) -> list[str]:
    """The names in ``directory``, sorted."""
    return sorted(p.name for p in directory.iterdir())


def values_written(directory: Path, values: Collection[str], *, skip: Collection[Path] = ()) -> set[str]:
    """Which of ``values`` a file under ``directory`` (but ``skip``) holds: a text value of a Parquet
    file (compressed, so never found in its bytes), or text anywhere in any other file."""
    found: set[str] = set()
    for file in sorted(directory.rglob("*")):
        if not file.is_file() or file in skip:
            continue
        if file.suffix == ".parquet":
            table = pl.read_parquet(file)
            for column in table.select(pl.col(pl.String)).columns:
                found |= set(values) & set(table.get_column(column).drop_nulls())
        else:
            text = file.read_bytes().decode("utf-8", errors="replace")
            found |= {value for value in values if value in text}
    return found
