"""Issue 18, point 10: a CSV row with too few fields is invalid, not a row of nulls.

In memory, in buckets and in windowed reads alike; with --on-invalid fail the run stops, with skip
the row is rejected as wrong_field_count with its line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest

import sessionize
from sessionize.errors import MalformedRowsError

ROWS = [
    "user_id,timestamp,url,referrer",
    "u1,2024-05-01T10:00:00Z,https://shop.example/,https://www.google.com/",
    "u2,2024-05-01T10:00:00Z,https://shop.example/",
    "u3,2024-05-01T10:01:00Z,https://shop.example/b,",
    'u4,2024-05-01T10:02:00Z,"https://shop.example/?a=1,2",',
    "u5,2024-05-01T10:03:00Z",
]


def write(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("path", ["memory", "buckets"])
def test_short_rows_fail_the_run(tmp_path: Path, path: str) -> None:
    events = write(tmp_path / "events.csv", ROWS)
    options: dict[str, Any] = {"buckets": 3} if path == "buckets" else {}
    with pytest.raises(MalformedRowsError, match=r"line 3: wrong_field_count \(3, expected 4\)"):
        sessionize.run([events], no_geo=True, **options)


@pytest.mark.parametrize("path", ["memory", "buckets", "windows"])
def test_short_rows_are_rejected_with_their_lines(
    tmp_path: Path, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = write(tmp_path / "events.csv", ROWS)
    options: dict[str, Any] = {}
    if path == "buckets":
        options["buckets"] = 3
    if path == "windows":
        from sessionize.engines import budget

        monkeypatch.setattr(budget, "MIN_CHUNK_ROWS", 2)
        options.update(memory_limit="1MiB", buckets=2)
    rejects = tmp_path / "rejects.csv"
    result = sessionize.run(
        [events],
        no_geo=True,
        on_invalid="skip",
        rejects=rejects,
        **options,
    )
    rejected = pl.read_csv(rejects)
    assert sorted(rejected.get_column("source_row").to_list()) == [3, 6]
    assert set(rejected.get_column("reject_reason")) == {
        "wrong_field_count (3, expected 4)",
        "wrong_field_count (2, expected 4)",
    }
    assert result.rows_read == 5 == result.events_read + result.rejected
    # The empty last field and the quoted comma are fine.
    assert set(result.sessions.get_column("user_id")) == {"u1", "u3", "u4"}


def test_empty_last_fields_are_not_short_rows(tmp_path: Path) -> None:
    events = write(tmp_path / "events.csv", [ROWS[0], ROWS[1], ROWS[3], ROWS[4]])
    assert sessionize.run([events], no_geo=True).events_read == 3


def test_quoted_fields_over_several_lines_are_counted_as_records(tmp_path: Path) -> None:
    rows = [ROWS[0], 'u1,2024-05-01T10:00:00Z,"https://shop.example/\nsecond line",', ROWS[1]]
    events = write(tmp_path / "events.csv", rows)
    assert sessionize.run([events], no_geo=True).events_read == 2
