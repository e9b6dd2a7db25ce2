"""The scale run: 100M events through the bucketed path with a memory budget.

Usage (from the repository root)::

    python bench/bench_scale.py [--parts 10] [--memory-limit 1GiB] [--data bench/data/scale]

Generates (once) ``--parts`` Parquet files of 10M events each with bench/generate.py (seed = part
number; user ids prefixed by the part, so 1M users per part and 10M in all), then runs
``sessionize run DIR --memory-limit ... --no-geo -o sessions.parquet`` (``--geo``: with geo, the default
run) as its own process and prints its
wall time, events per second, peak RSS (from the run's JSON log line: getrusage of that process,
launched from this small parent) and the number of buckets.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PART_EVENTS = 10_000_000


def make_part(number: int, path: Path) -> None:
    """One part of 10M events (run in a child process, so that the parent stays small)."""
    code = (
        "import sys; sys.path.insert(0, 'bench'); import polars as pl; from generate import generate\n"
        f"frame = generate({PART_EVENTS}, {PART_EVENTS // 10}, {PART_EVENTS // 10}, seed={number})\n"
        f"frame = frame.with_columns(pl.lit('p{number:02d}-') + pl.col('user_id'))\n"
        f"frame.write_parquet({str(path)!r})\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--parts", type=int, default=10)
    parser.add_argument("--memory-limit", default="1GiB")
    parser.add_argument("--data", type=Path, default=ROOT / "bench/data/scale")
    parser.add_argument("--out", type=Path, default=Path("/tmp/sessionize-scale.parquet"))
    parser.add_argument("--geo", action="store_true", help="with geo (the default database), not --no-geo")
    options = parser.parse_args()
    options.data.mkdir(parents=True, exist_ok=True)
    for number in range(options.parts):
        path = options.data / f"part-{number:02d}.parquet"
        if not path.exists():
            started = time.perf_counter()
            make_part(number, path)
            print(f"generated {path.name} in {time.perf_counter() - started:.0f} s", flush=True)
    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "sessionize",
            "run",
            str(options.data),
            "--memory-limit",
            options.memory_limit,
            *([] if options.geo else ["--no-geo"]),
            "-o",
            str(options.out),
            "--log-format",
            "json",
        ],
        capture_output=True,
        check=False,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        print(done.stderr.decode(), file=sys.stderr)
        return 1
    line = json.loads(done.stderr.decode().strip().splitlines()[-1])
    print(
        json.dumps(
            {
                "events": line["events"],
                "sessions": line["sessions"],
                "path": line["path"],
                "memory_limit": options.memory_limit,
                "geo": options.geo,
                "wall_s": round(wall, 1),
                "events_per_s": round(line["events"] / wall),
                "peak_rss_mib": line["peak_memory_mib"],
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
