"""The default run of two checkouts side by side: did a change cost time or memory?

Usage (from the repository root; the other checkout is a worktree of an older commit)::

    git worktree add /tmp/old dece3bc
    python bench/bench_ab.py --input bench/data/events_10000000.parquet /tmp/old .

Each checkout runs ``python -m sessionize run INPUT -o OUT.parquet --quiet`` (the default run: geo with
the installed database, every enrichment) with its own ``sessionize`` package first on ``PYTHONPATH`` and
this interpreter's dependencies, as a child process, alternating checkout by checkout ``--repeat`` times
(so slow drift of the machine hits both alike). Printed: each run, then the median wall time and the
largest peak RSS (the child's own ``ru_maxrss`` from ``os.wait4``) per checkout.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

from bench_tables import measure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--input", required=True, help="the events file of every run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("checkouts", nargs=2, help="two source trees (each with a sessionize/ package)")
    args = parser.parse_args()
    runs: dict[str, list[tuple[float, float]]] = {root: [] for root in args.checkouts}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeat):
            for root in args.checkouts:
                env = {**os.environ, "PYTHONPATH": str(Path(root).resolve())}
                command = [
                    sys.executable,
                    "-m",
                    "sessionize",
                    "run",
                    args.input,
                    "-o",
                    f"{tmp}/s.parquet",
                    "--quiet",
                ]
                runs[root].append(measure(command, env))
                print(f"{root}: {runs[root][-1][0]:.2f} s, {runs[root][-1][1]:.0f} MiB", flush=True)
    for root, measured in runs.items():
        wall = statistics.median(m[0] for m in measured)
        print(f"{root:30} median {wall:6.2f} s   peak {max(m[1] for m in measured):6.0f} MiB")


if __name__ == "__main__":
    main()
