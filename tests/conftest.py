"""Shared fixtures: an ``events()`` factory that builds tiny canonical frames from literal rows."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import polars as pl
import pytest
from hypothesis import settings

# No per-example deadline: speed is measured in bench/, never asserted in a test. Hypothesis' default of
# 200 ms failed property tests on a loaded machine (first examples at 290-390 ms) with nothing wrong.
settings.register_profile("sessionize", deadline=None)
settings.load_profile("sessionize")

REPO = Path(__file__).resolve().parent.parent
SAMPLE_DATA = REPO / "sample_data"
DATA = REPO / "tests" / "data"  # what each file is, its source and licence: data/README.md

T0 = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)


def load_generator() -> ModuleType:
    """bench/generate.py, the benchmarks' clickstream generator (not a package: loaded by path)."""
    spec = importlib.util.spec_from_file_location("bench_generate", REPO / "bench" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


EventRow = tuple[Any, ...]
EventsFactory = Callable[..., pl.DataFrame]


def at(**delta: float) -> datetime:
    """``T0`` plus a timedelta: ``at(minutes=30)``."""
    return T0 + timedelta(**delta)


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
