"""Start-up time of the ``sessionize`` command: ``--version`` and ``--help``, whole processes.

Usage (from the repository root)::

    python bench/bench_startup.py                 # 5 runs of each, the median
    python bench/bench_startup.py --repeat 11 --command=--version --command="run --help"

Each run is a fresh ``.venv/bin/sessionize`` process (the console script a user runs), so Python's start,
the imports and the CLI's set-up all count. Prints the median and the fastest run per command, in seconds.
Also lists the heavy modules (plotly, ua_parser, crawlerdetect, tldextract, geoip2, maxminddb, dask,
pyarrow) that ``import sessionize.cli`` loads: none should be, they are imported when a run needs them.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("plotly", "ua_parser", "crawlerdetect", "tldextract", "geoip2", "maxminddb", "dask", "pyarrow")


def _executable() -> list[str]:
    script = Path(sys.executable).parent / "sessionize"
    return [str(script)] if script.exists() else [sys.executable, "-m", "sessionize"]


def time_command(args: list[str], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run([*_executable(), *args], check=True, capture_output=True, cwd=ROOT)
        times.append(time.perf_counter() - started)
    return times


def heavy_modules() -> list[str]:
    code = f"import sys, sessionize.cli; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=ROOT)
    return out.stdout.split()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs of each command (default: 5)")
    parser.add_argument(
        "--command",
        action="append",
        help='arguments of sessionize to time (repeatable; default: "--version" and "--help")',
    )
    options = parser.parse_args()
    commands = options.command or ["--version", "--help"]
    time_command(["--version"], 1)  # warm the file cache
    for command in commands:
        times = time_command(shlex.split(command), options.repeat)
        print(
            f"sessionize {command:<14} median {statistics.median(times):.3f}s  "
            f"fastest {min(times):.3f}s  ({options.repeat} runs)"
        )
    loaded = heavy_modules()
    print("heavy modules loaded by import sessionize.cli:", ", ".join(loaded) if loaded else "none")


if __name__ == "__main__":
    main()
