"""Issue 18, point 7: a budget the run cannot keep to is said, and a tiny one is clamped.

The peaks themselves are measured in bench/bench_budget.py (a table of budget against peak), not
asserted here.
"""

from __future__ import annotations

import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import sessionize
from sessionize.engines import budget
from sessionize.partition import PartitionJob, PartitionResult, process_partition
from tests.helpers import EVENTS


def run_warned(paths: list[Path], **options: Any) -> tuple[sessionize.RunResult, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = sessionize.run(paths, no_geo=True, **options)
    return result, [str(w.message) for w in caught if issubclass(w.category, sessionize.SessionizeWarning)]


@pytest.mark.slow
def test_a_tiny_budget_is_clamped_to_a_bounded_number_of_buckets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(budget, "MAX_BUCKETS", 16)
    result, said = run_warned([EVENTS], memory_limit="1K")
    assert result.buckets == 16
    assert any("--memory-limit 0 MiB is below" in text or "is below the" in text for text in said)
    whole = sessionize.run([EVENTS], no_geo=True)
    assert result.session_count == whole.session_count == 964


def test_the_default_cap_on_buckets() -> None:
    plan = budget.plan(2_000_000, memory_limit=1 << 20)
    assert plan.buckets == budget.MAX_BUCKETS == 1024


def test_a_budget_within_reach_says_nothing() -> None:
    _, said = run_warned([EVENTS], memory_limit="2GiB")
    assert not [text for text in said if "memory-limit" in text]


def test_one_user_larger_than_the_budget_is_said(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Scaled down: no baseline, so 30,000 events of one user (21 MB at 700 B each) exceed 16 MiB.
    monkeypatch.setattr(budget, "BASELINE_BYTES", 0)
    monkeypatch.setattr(budget, "MIN_CHUNK_ROWS", 1_000)
    start = datetime(2024, 5, 1, tzinfo=UTC)
    path = tmp_path / "crawler.parquet"
    pl.DataFrame(
        {
            "user_id": ["crawler"] * 30_000 + [f"u{n}" for n in range(300)],
            "timestamp": [start + timedelta(seconds=n) for n in range(30_300)],
        }
    ).write_parquet(path)
    result, said = run_warned([path], memory_limit="16MiB", buckets=4)
    assert result.events_read == 30_300
    assert any("holds 30," in text and "cannot be split" in text for text in said), said


@pytest.mark.slow
def test_a_bucket_of_many_one_event_users_goes_through_in_parts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One session per event costs twice what the plan assumes: such a bucket is split by a second
    hash of users, and the table is the same (scaled down: no baseline, a 2 MiB budget)."""
    monkeypatch.setattr(budget, "BASELINE_BYTES", 0)
    monkeypatch.setattr(budget, "MIN_CHUNK_ROWS", 1_000)
    start = datetime(2024, 5, 1, tzinfo=UTC)
    path = tmp_path / "visitors.parquet"
    pl.DataFrame(
        {
            "user_id": [f"v{n}" for n in range(20_000)],
            "timestamp": [start + timedelta(seconds=n) for n in range(20_000)],
            "url": ["https://shop.example/"] * 20_000,
        }
    ).write_parquet(path)
    from sessionize.engines import buckets as bucket_engine

    calls: list[int] = []
    original = process_partition  # what the engine calls by that name

    def counting(events: pl.DataFrame, job: PartitionJob, **kwargs: Any) -> PartitionResult:
        calls.append(events.height)
        return original(events, job, **kwargs)

    monkeypatch.setattr(bucket_engine, "process_partition", counting)
    result, _ = run_warned([path], memory_limit="2MiB", buckets=2)
    assert result.buckets == 2 and len(calls) > 2 and max(calls) < 10_000
    whole = sessionize.run([path], no_geo=True)
    keys = ["user_id", "session_start"]
    assert result.sessions.sort(keys).equals(whole.sessions.sort(keys))
