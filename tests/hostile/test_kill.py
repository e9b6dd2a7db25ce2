"""kill -9 at several points of an in-memory, a bucketed and an incremental run: the re-run gives
exactly the uninterrupted result, and no stale file remains after it (issue 18, "Must show")."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from tests.helpers import EVENTS, KEYS

# Each test runs the CLI in subprocesses, killed and re-run.
pytestmark = pytest.mark.slow

#: Runs the CLI with one function replaced by a kill -9 of the process on its Nth call.
SCRIPT = """
import importlib, os, signal, sys
module_name, attribute, nth = sys.argv[1], sys.argv[2], int(sys.argv[3])
owner = importlib.import_module(module_name)
*path, name = attribute.split(".")
for part in path:
    owner = getattr(owner, part)
real = getattr(owner, name)
calls = [0]
def dying(*args, **kwargs):
    calls[0] += 1
    if calls[0] == nth:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, **kwargs)
setattr(owner, name, dying)
from sessionize.cli import app
app(sys.argv[4:], prog_name="sessionize")
"""


def killed_run(kill_at: tuple[str, str, int], *args: str | Path) -> None:
    module, attribute, nth = kill_at
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, module, attribute, str(nth), "run", *map(str, args)],
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == -9, done.stderr.decode()


def clean_run(*args: str | Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sessionize", "run", *map(str, args)],
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()


def files(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file() or p.is_dir())


def table(path: Path) -> pl.DataFrame:
    if path.is_dir():
        parts = sorted(path.glob("session_date=*/*.parquet"))
        return pl.concat([pl.read_parquet(p) for p in parts]).drop("is_final").sort(KEYS)
    return pl.read_parquet(path).sort(KEYS)


KILLS_LOCAL = {
    "memory-while-sessionizing": ("sessionize.partition", "sessionize_partition", 1),
    "memory-before-publishing": ("sessionize.io.publish", "PendingOutput.publish", 1),
    "memory-between-outputs": ("sessionize.io.publish", "PendingOutput.publish", 2),
    "buckets-in-the-second-bucket": ("sessionize.partition", "sessionize_partition", 2),
    "buckets-while-spilling": ("sessionize.io.spill", "BucketSpill.add", 1),
}


@pytest.mark.parametrize("kill_at", list(KILLS_LOCAL.values()), ids=list(KILLS_LOCAL))
def test_a_killed_local_run_and_its_rerun(tmp_path: Path, kill_at: tuple[str, str, int]) -> None:
    expected_dir, out_dir, spill = tmp_path / "expected", tmp_path / "out", tmp_path / "spill"
    for directory in (expected_dir, out_dir, spill):
        directory.mkdir()
    options: list[str | Path] = ["--no-geo", "--valid-until", "2100-01-01", "--on-invalid", "skip"]
    if kill_at in (KILLS_LOCAL["buckets-in-the-second-bucket"], KILLS_LOCAL["buckets-while-spilling"]):
        options += ["--buckets", "3", "--temp-dir", spill]
    clean_run(EVENTS, "-o", expected_dir / "s.parquet", "--rejects", expected_dir / "r.csv", *options)
    killed_run(kill_at, EVENTS, "-o", out_dir / "s.parquet", "--rejects", out_dir / "r.csv", *options)
    # Nothing under the outputs' names before publication; killed between two renames, the first
    # output is complete and the second not there (the re-run writes both).
    published = [name for name in ("s.parquet", "r.csv") if (out_dir / name).exists()]
    assert published == (["s.parquet"] if kill_at == KILLS_LOCAL["memory-between-outputs"] else [])
    clean_run(EVENTS, "-o", out_dir / "s.parquet", "--rejects", out_dir / "r.csv", *options)
    assert_frame_equal(table(out_dir / "s.parquet"), table(expected_dir / "s.parquet"))
    assert (out_dir / "r.csv").read_bytes() == (expected_dir / "r.csv").read_bytes()
    assert files(out_dir) == ["r.csv", "s.parquet"], "a stale temporary file remains"
    assert files(spill) == [], "a stale spill directory remains"


KILLS_INCREMENTAL = {
    "while-reading": ("sessionize.io.read", "read_file", 1),
    "before-the-partitions-are-renamed": ("sessionize.engines.incremental", "_PendingPartitions.publish", 1),
    "while-writing-the-state": ("sessionize.engines.incremental", "_fsync_dir", 1),
    "between-partitions-and-state": ("sessionize.engines.incremental", "commit_state", 1),
}


@pytest.mark.parametrize("kill_at", list(KILLS_INCREMENTAL.values()), ids=list(KILLS_INCREMENTAL))
def test_a_killed_incremental_run_and_its_rerun(tmp_path: Path, kill_at: tuple[str, str, int]) -> None:
    frame = pl.read_csv(EVENTS, infer_schema=False).sort("timestamp")
    days = frame.get_column("timestamp").str.slice(0, 10)
    first_day = days.min()
    early, late = tmp_path / "a.csv", tmp_path / "b.csv"
    frame.filter(days == first_day).write_csv(early)
    frame.filter(days != first_day).write_csv(late)
    options = ["--no-geo", "--valid-until", "2100-01-01"]
    expected_state, expected_out = tmp_path / "expected-state", tmp_path / "expected-out"
    clean_run(early, "--state", expected_state, "--output-dir", expected_out, *options)
    clean_run(late, "--state", expected_state, "--output-dir", expected_out, *options)
    state, out = tmp_path / "state", tmp_path / "out"
    clean_run(early, "--state", state, "--output-dir", out, *options)
    killed_run(kill_at, early, late, "--state", state, "--output-dir", out, *options)
    clean_run(late, "--state", state, "--output-dir", out, *options)
    assert_frame_equal(table(out), table(expected_out))
    assert [name for name in files(out) if "/." in name or name.startswith(".")] == []
    assert [name for name in files(state) if ".tmp" in name] == []
    assert sorted(p.name for p in state.iterdir() if not p.name.startswith("state-")) == sorted(
        p.name for p in expected_state.iterdir() if not p.name.startswith("state-")
    )
    assert [p.name for p in state.glob("state-*")] == [(state / "CURRENT").read_text()]


def test_a_first_incremental_run_killed_before_its_state_and_its_rerun(tmp_path: Path) -> None:
    """Killed once its partitions are in place, before its new state is committed (the second commit: the
    first is the empty state that claims the output directory): the re-run processes the files again,
    where it was refused (the output directory held sessions beside a new state)."""
    options = ["--no-geo", "--valid-until", "2100-01-01"]
    expected_state, expected_out = tmp_path / "expected-state", tmp_path / "expected-out"
    clean_run(EVENTS, "--state", expected_state, "--output-dir", expected_out, *options)
    state, out = tmp_path / "state", tmp_path / "out"
    killed_run(
        ("sessionize.engines.incremental", "commit_state", 2),
        EVENTS,
        "--state",
        state,
        "--output-dir",
        out,
        *options,
    )
    assert table(out).height == table(expected_out).height, "the partitions were published"
    clean_run(EVENTS, "--state", state, "--output-dir", out, *options)
    assert_frame_equal(table(out), table(expected_out))
    assert [p.name for p in state.glob("state-*")] == [(state / "CURRENT").read_text()]
