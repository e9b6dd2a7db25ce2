"""Incremental runs at scale: a daily run that carries the state of ~1M users, against a full re-run
over the last 7 days.

Usage (from the repository root; needs bench/data/events_10m.parquet from bench/generate.py)::

    python bench/bench_incremental.py [--events bench/data/events_10m.parquet] [--work /tmp/sessionize-inc]

It splits the events into one Parquet file per UTC day, builds the state with one incremental run
over every day but the last, then times (each as a separate ``sessionize run`` process, wall time and
peak RSS) the daily run of the last day against the state, and a full (non-incremental) run over the
last 7 days. It also checks that the last day's sessions agree: the incremental table (every
partition) against one run over every day.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parent.parent
KEYS = ["user_id", "session_start", "session_id"]


def timed(args: list[str]) -> tuple[float, float, dict[str, object]]:
    """Run ``sessionize run ARGS`` in a new process: wall seconds, peak RSS MiB (from its own
    JSON log line: getrusage of the process) and that log line."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "sessionize", "run", *args, "--no-geo", "--log-format", "json"],
        capture_output=True,
        check=False,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(done.stderr.decode())
    line = json.loads(done.stderr.decode().strip().splitlines()[-1])
    return wall, float(line["peak_memory_mib"]), line  # type: ignore[arg-type]


def split(events_path: Path, directory: Path) -> None:
    """One Parquet file per UTC day of the events."""
    events = pl.read_parquet(events_path)
    for (value,), part in events.group_by(pl.col("timestamp").dt.date()):
        part.write_parquet(directory / f"events-{value}.parquet")
    print(f"{events.height:,} events, {events['user_id'].n_unique():,} users", flush=True)


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--split":
        split(Path(sys.argv[2]), Path(sys.argv[3]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=Path, default=ROOT / "bench/data/events_10m.parquet")
    parser.add_argument("--work", type=Path, default=Path("/tmp/sessionize-inc"))
    options = parser.parse_args()
    work: Path = options.work
    shutil.rmtree(work, ignore_errors=True)
    (work / "days").mkdir(parents=True)
    # Split in a child process: a child's peak RSS (getrusage) starts from its parent's at fork, so the
    # parent stays small for the timed runs.
    subprocess.run([sys.executable, __file__, "--split", str(options.events), str(work / "days")], check=True)
    paths = sorted((work / "days").glob("events-*.parquet"))
    history, last = paths[:-1], paths[-1]
    week = paths[-7:]
    print(f"{len(paths)} days of {options.events.name}", flush=True)

    state, out = work / "state", work / "out"
    wall, rss, line = timed([*map(str, history), "--state", str(state), "--output-dir", str(out)])
    print(f"seed state ({len(history)} days, one run): {wall:.1f} s, {rss:,.0f} MiB", flush=True)
    print(f"  state: {line['users_in_state']:,} users, {line['events_in_state']:,} events kept", flush=True)
    rows = pl.scan_parquet(last).select(pl.len()).collect().item()
    daily_wall, daily_rss, daily = timed([str(last), "--state", str(state), "--output-dir", str(out)])
    full_wall, full_rss, full = timed([*map(str, week), "-o", str(work / "week.parquet")])
    print(
        json.dumps(
            {
                "daily_run": {
                    "events": rows,
                    "wall_s": round(daily_wall, 2),
                    "peak_rss_mib": round(daily_rss),
                    "users_in_state": daily["users_in_state"],
                    "events_in_state": daily["events_in_state"],
                    "sessions_written": daily["sessions"],
                    "partitions": len(daily["partitions"]),  # type: ignore[arg-type]
                },
                "full_7_day_run": {
                    "events": full["events"],
                    "wall_s": round(full_wall, 2),
                    "peak_rss_mib": round(full_rss),
                    "sessions": full["sessions"],
                },
                "ratio_wall": round(daily_wall / full_wall, 3),
                "cpus": os.cpu_count(),
            },
            indent=1,
        ),
        flush=True,
    )
    # The incremental table equals one run over every day.
    incremental = pl.scan_parquet(out / "*" / "*.parquet").drop("is_final").collect().sort(KEYS)
    timed([*map(str, paths), "-o", str(work / "all.parquet")])
    together = pl.read_parquet(work / "all.parquet").sort(KEYS)
    print("incremental table equals one run over all days:", incremental.equals(together), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
