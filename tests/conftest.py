"""Shared fixtures: an ``events()`` factory that builds tiny canonical frames from literal rows, and a
``workdir`` to run the CLI in. What is not a fixture (paths, constants, helpers) is in ``helpers.py``."""

from __future__ import annotations

import compileall
import contextlib
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import settings

import sessionize
from tests.helpers import REPO as REPO  # tests/test_docs.py imports it from here
from tests.helpers import T0, EventRow, EventsFactory, close_shared_dask

# No per-example deadline: speed is measured in bench/, never asserted in a test. Hypothesis' default of
# 200 ms failed property tests on a loaded machine (first examples at 290-390 ms) with nothing wrong.
settings.register_profile("sessionize", deadline=None)
settings.load_profile("sessionize")


def pytest_sessionstart(session: pytest.Session) -> None:
    """The package compiled to bytecode once, before any test: the tests start hundreds of Python
    processes (the CLI in a subprocess, Spark's Python workers), and where ``PYTHONDONTWRITEBYTECODE`` is
    set (as on the CI machine) each compiled every module of the checkout again: some 0.3 s a process
    (``tests/test_publish.py`` and ``tests/test_run_shape.py`` took 56 s before, 47 s after). Only the
    controller compiles (xdist's workers start after it); a checkout it cannot write is left as it is."""
    if hasattr(session.config, "workerinput"):
        return
    with contextlib.suppress(OSError):
        compileall.compile_dir(Path(sessionize.__file__).parent, quiet=1)


def uses_spark(item: pytest.Item) -> bool:
    """Whether a test runs on the shared ``spark_session``: it asks for the fixture, or it is a Spark cell
    of a path matrix (``any_path_options`` asks for the fixture as it runs; every such cell's id names
    Spark)."""
    return "spark_session" in getattr(item, "fixturenames", ()) or "spark" in item.nodeid.lower()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The work units of ``--dist loadgroup`` (pyproject.toml): every Spark test in one group, so that one
    test worker starts a JVM (some 30 s of two cores each) and runs them all; each other test with the
    rest of its file, so that a module's fixtures are made once."""
    for item in items:
        group = "spark" if uses_spark(item) else item.nodeid.split("::", 1)[0]
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture
def events() -> EventsFactory:
    """An input events frame from rows of (user_id, timestamp[, url[, referrer[, event[, session_id]]]]).

    Timestamps may be datetimes or numbers of seconds after ``T0``.
    """

    def make(rows: Sequence[EventRow], **extra: Sequence[Any]) -> pl.DataFrame:
        names = ("user_id", "timestamp", "url", "referrer", "event", "session_id")
        width = max((len(r) for r in rows), default=2)
        columns: dict[str, list[Any]] = {name: [] for name in names[:width]}
        for row in rows:
            padded = (*row, *([None] * (width - len(row))))
            for name, value in zip(names[:width], padded, strict=True):
                if name == "timestamp" and isinstance(value, int | float):
                    value = T0 + timedelta(seconds=value)
                columns[name].append(value)
        schema: dict[str, pl.DataType] = {name: pl.String() for name in columns}
        schema["timestamp"] = pl.Datetime("us", "UTC")
        frame = pl.DataFrame(columns, schema=schema)
        return frame.with_columns(pl.Series(k, v) for k, v in extra.items())

    return make


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in ``tmp_path`` so paths in messages are short and stray files are easy to spot."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def spark_session() -> Iterator[Any]:
    """One local Spark session (``local[2]``) for every Spark test: starting one takes seconds."""
    pytest.importorskip("pyspark", reason="PySpark is not installed: pip install 'sessionize[spark]'")
    import os
    import sys

    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    session = (
        SparkSession.builder.master("local[2]")
        .appName("sessionize-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.executorEnv.POLARS_MAX_THREADS", "1")
        .config("spark.ui.showConsoleProgress", "false")
        # The JIT's quick tier only, and one GC thread: the tests' jobs are small and short, and the JVM
        # shares two cores with the other test worker (the Spark tests took a fifth less time).
        .config("spark.driver.extraJavaOptions", "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="session", autouse=True)
def _shared_dask_closed() -> Iterator[None]:
    """The tests' shared Dask cluster (tests/helpers.py: ``shared_dask_scheduler``) closed at the end."""
    yield
    close_shared_dask()
