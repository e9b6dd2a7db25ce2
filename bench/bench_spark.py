"""The local engine against ``--engine dask`` and ``--engine spark`` on this machine: wall time and memory.

Usage (from the repository root)::

    python bench/bench_spark.py                                   # 1M events, --no-geo, 1 round
    python bench/bench_spark.py --events 10000000 --repeat 1 --json bench/results/spark_10m.json

Each case is one ``sessionize run INPUT.parquet -o OUT -q --no-geo`` child process: the local engine
(``-o out.parquet``), ``--engine dask`` (a local cluster of one worker process per CPU) and ``--engine
spark --spark-master local[N]`` (N = CPUs), each writing a directory. The wall time includes starting
the cluster or the JVM. Memory is the peak of the **sum** of the RSS of the whole process tree (the
run, Spark's JVM, its Python workers, Dask's workers), sampled every 50 ms from /proc: one figure that
compares a single process with a cluster on the same machine. The outputs are checked equal (every
column; Spark's counts cast back from Int64) after the first round.

On one machine the distributed engines pay for what a cluster would spread: the shuffle, serialisation
between the JVM and Python, and their start-up; docs/spark.md turns the per-partition rate measured here
into the cost of a larger day on N executors.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import polars as pl
from bench_run import SESSIONIZE, dataset, warm_page_cache

KEY = ["user_id", "session_start", "session_id"]
PAGE = os.sysconf("SC_PAGE_SIZE")


def tree_rss(pid: int) -> int:
    """Bytes resident in ``pid`` and every descendant (from /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        child, parent = int(entry), int(fields[1])
        children.setdefault(parent, []).append(child)
        rss[child] = int(fields[21]) * PAGE
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        total += rss.get(current, 0)
        stack.extend(children.get(current, []))
    return total


def measure(command: list[str]) -> tuple[float, float]:
    """Wall seconds and the peak tree RSS in MiB of ``command``."""
    peak = 0
    with tempfile.TemporaryFile() as stderr:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, tree_rss(process.pid))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample)
        sampler.start()
        code = process.wait()
        wall = time.perf_counter() - started
        done.set()
        sampler.join()
        if code != 0:
            stderr.seek(0)
            raise RuntimeError(
                f"{' '.join(command)} failed:\n{stderr.read().decode(errors='replace')[-3000:]}"
            )
    return wall, peak / 2**20


def read_output(path: Path) -> pl.DataFrame:
    table = pl.read_parquet(sorted(path.glob("part-*.parquet")) if path.is_dir() else path)
    return table.cast({name: pl.Int64 for name, dtype in table.schema.items() if dtype == pl.UInt32})


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--engines", default="local,dask,spark")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--input", type=Path, help="a Parquet file of events (default: generated)")
    args = parser.parse_args()
    source = args.input or dataset(args.events).with_suffix(".parquet")
    warm_page_cache(source)
    cpus = os.cpu_count() or 1
    results: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-spark-") as work:
        outputs: dict[str, Path] = {}
        for round_number in range(args.repeat):
            for engine in args.engines.split(","):
                out = (
                    Path(work) / f"{engine}-{round_number}" / ("out.parquet" if engine == "local" else "out")
                )
                out.parent.mkdir(parents=True)
                command = [SESSIONIZE, "run", str(source), "-o", str(out), "-q", "--no-geo"]
                if engine != "local":
                    command += ["--engine", engine]
                if engine == "spark":
                    command += ["--spark-master", f"local[{cpus}]"]
                results.setdefault(engine, []).append(measure(command))
                print(
                    f"{engine}: {results[engine][-1][0]:.1f} s, {results[engine][-1][1]:,.0f} MiB", flush=True
                )
                outputs.setdefault(engine, out)
        base = read_output(outputs["local"]).sort(KEY) if "local" in outputs else None
        for engine, out in outputs.items():
            if base is not None and engine != "local":
                other = read_output(out).select(base.columns).sort(KEY)
                assert other.equals(base), f"{engine}: not the local engine's table"
    local_s = statistics.median(w for w, _ in results["local"]) if "local" in results else None
    print(f"\n{args.events:,} events (Parquet in and out, --no-geo), {cpus} CPUs")
    print("| engine | wall s (median) | peak RSS of the process tree, MiB | x local wall |")
    print("|---|---:|---:|---:|")
    for engine, runs in results.items():
        wall = statistics.median(w for w, _ in runs)
        peak = max(p for _, p in runs)
        ratio = f"{wall / local_s:.2f}x" if local_s else "-"
        print(f"| {engine} | {wall:.1f} | {peak:,.0f} | {ratio} |")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"events": args.events, "runs": results}, indent=2))


if __name__ == "__main__":
    main()
