"""The default run of two checkouts side by side: did a change cost time or memory?

Usage (from the repository root; the other checkout is a worktree of an older commit)::

    git worktree add /tmp/old dece3bc
    python bench/bench_ab.py --input bench/data/events_10000000.parquet /tmp/old .

Each checkout runs ``python -P -m sessionize run INPUT -o OUT.parquet --quiet`` (the default run: geo
with the installed database, every enrichment) with its own ``sessionize`` package first on
``PYTHONPATH`` and this interpreter's dependencies, as a child process, alternating checkout by checkout
``--repeat`` times (so slow drift of the machine hits both alike). Printed: each run, then the median wall
time and the largest peak RSS (the child's own ``ru_maxrss`` from ``os.wait4``) per checkout.

``-P`` keeps the working directory off ``sys.path``: without it ``-m`` put it first, so that, run from
the repository root as above, both children imported the root's package and compared it with itself
(until 2026-12-04; the A/B figures in bench/README.md taken with it before then are marked so). Before
timing, each checkout's child must import ``sessionize`` from that checkout, or the script stops.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_run import compile_package
from bench_tables import measure


def _environment(root: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(Path(root).resolve())}


def check_imports(roots: list[str]) -> None:
    """Stop unless a child run as the timed ones are imports ``sessionize`` from ``ROOT/sessionize`` for
    each root, and the roots are two packages, not one (a folder without a ``sessionize`` package would
    fall back to the installed one)."""
    found = []
    for root in roots:
        imported = subprocess.run(
            [sys.executable, "-P", "-c", "import sessionize; print(sessionize.__file__)"],
            env=_environment(root),
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        package = Path(imported).resolve()
        if package != (Path(root) / "sessionize" / "__init__.py").resolve():
            raise SystemExit(f"{root}: the child imports sessionize from {imported}, not from this checkout")
        found.append(package)
    if len(set(found)) < len(found):
        raise SystemExit(f"{' and '.join(roots)} are the same package ({found[0].parent})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--input", required=True, help="the events file of every run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("checkouts", nargs=2, help="two source trees (each with a sessionize/ package)")
    args = parser.parse_args()
    runs: dict[str, list[tuple[float, float]]] = {root: [] for root in args.checkouts}
    check_imports(args.checkouts)
    for root in args.checkouts:
        compile_package(Path(root))
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeat):
            for root in args.checkouts:
                env = _environment(root)
                command = [
                    sys.executable,
                    "-P",
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
