"""Memory budget against peak: the cases of issue 18 (point 7), each run in a child process.

    .venv/bin/python bench/bench_budget.py [--work /tmp/sessionize-budget] [--scale 1.0]

Prints a table: case, events, --memory-limit, buckets, peak RSS of the run (MiB), peak / limit,
wall time, and the warnings the run gave. Data are generated once into --work (deterministic).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

CHILD = """
import json, resource, sys, time, warnings
import sessionize
started = time.perf_counter()
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    result = sessionize.run([sys.argv[1]], no_geo=True, memory_limit=sys.argv[2], output=sys.argv[3])
print(json.dumps({
    "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "buckets": result.buckets,
    "events": result.events_read,
    "wall_s": time.perf_counter() - started,
    "warnings": [str(w.message)[:90] for w in caught],
}))
"""


def events(users: np.ndarray, n: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    start = np.datetime64("2024-05-01T00:00:00", "us")
    offsets = np.sort(rng.integers(0, 30 * 86_400 * 10**6, n))
    return pl.DataFrame(
        {
            "user_id": users,
            "timestamp": pl.Series(start + offsets.astype("timedelta64[us]")).dt.replace_time_zone("UTC"),
            "url": pl.Series(rng.integers(0, 500, n))
            .cast(pl.String)
            .map_elements(lambda p: f"https://shop.example/p{p}", return_dtype=pl.String)
            if n <= 50_000
            else ("https://shop.example/p" + pl.Series(rng.integers(0, 500, n)).cast(pl.String)),
            "referrer": pl.Series(["https://www.google.com/", None, None, "https://t.co/x"] * (n // 4 + 1))[
                :n
            ],
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/sessionize-budget"))
    parser.add_argument("--scale", type=float, default=1.0)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    n5 = int(5_000_000 * args.scale)
    n2 = int(2_000_000 * args.scale)
    cases = []
    one_user = args.work / f"one-user-{n5}.parquet"
    if not one_user.exists():
        events(np.full(n5, "u1"), n5, 1).write_parquet(one_user)
    cases.append(("5M events of one user", one_user, "512MiB"))
    many = args.work / f"one-event-users-{n5}.parquet"
    if not many.exists():
        events(np.arange(n5).astype(str), n5, 2).write_parquet(many)
    cases.append(("5M users of one event", many, "1GiB"))
    csv = args.work / f"events-{n5}.csv"
    if not csv.exists():
        events((np.arange(n5) % (n5 // 10)).astype(str), n5, 3).write_csv(csv)
    cases.append((f"{csv.stat().st_size / 1e6:.0f} MB CSV", csv, "300MiB"))
    small = args.work / f"events-{n2}.parquet"
    if not small.exists():
        events((np.arange(n2) % (n2 // 10)).astype(str), n2, 4).write_parquet(small)
    cases.append(("2M events, a tiny budget", small, "1M"))
    header = f"{'case':28} {'events':>10} {'limit':>8} {'buckets':>8} {'peak MiB':>9} {'peak/limit':>10}"
    print(f"{header} {'wall s':>7}")
    for name, path, limit in cases:
        out = args.work / "out.parquet"
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(path), limit, str(out)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            print(f"{name:28} failed: {done.stderr.strip().splitlines()[-1]}")
            continue
        row = json.loads(done.stdout.strip().splitlines()[-1])
        from sessionize.config import parse_memory

        ratio = row["peak_mib"] * (1 << 20) / parse_memory(limit)
        print(
            f"{name:28} {row['events']:>10,} {limit:>8} {row['buckets']:>8} {row['peak_mib']:>9,.0f} "
            f"{ratio:>10.2f} {time.perf_counter() - started:>7.1f}"
        )
        for warning in row["warnings"]:
            print(f"{'':28} warning: {warning}")


if __name__ == "__main__":
    main()
