"""The local engine against ``--engine dask`` on a local cluster of this machine: wall time and memory.

Usage (from the repository root)::

    python bench/bench_dask.py                          # 1M events, 3 rounds
    python bench/bench_dask.py --events 10000000 --repeat 2 --geo --json bench/results/dask_10m.json

Each round runs, as child processes, ``sessionize run INPUT.parquet -o OUT.parquet -q`` (the local
engine) and a child that sessionizes the same file with :func:`sessionize.engines.dask.run_dask` on a
new :class:`distributed.LocalCluster` (``--workers`` processes, default one per CPU) into a directory
of Parquet partitions, the cluster's start and stop included. Both use ``--no-geo``, and with
``--geo`` also the default GeoIP database (DB-IP City Lite). The table shows the median wall time,
the Dask run's stages (cluster start, reading, shuffle and sessionizing), the peak RSS (the local
process; for Dask the client and the largest worker process) and the ratio to the local engine. Both
outputs are compared after the first round: the same sessions, every column.

This machine's Dask cluster runs on the same CPUs as the local engine: the figures show what the
shuffle costs, not what a cluster of many machines gains (see docs/dask.md).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
from bench_run import DATA_DIR, SESSIONIZE, dataset, warm_page_cache

KEY = ["user_id", "session_start", "session_id"]


@dataclass
class Run:
    wall_s: float
    max_rss_mib: float
    #: Dask runs: their stages, the client's and the largest worker's peak RSS, from the child's report.
    stages: dict[str, float] = field(default_factory=dict)
    client_rss_mib: float = 0.0
    worker_rss_mib: float = 0.0


@dataclass
class Case:
    engine: str
    geo: bool
    command: list[str]
    output: Path
    runs: list[Run] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.engine}{'' if self.geo else ' --no-geo'}"

    @property
    def median_s(self) -> float:
        return statistics.median(r.wall_s for r in self.runs)


def child(input_path: str, output_dir: str, *, workers: int | None, geo: bool, partition_rows: int) -> None:
    """The Dask side, in its own process: a local cluster, one run, the figures as JSON on stdout."""
    from sessionize import geo as geo_module
    from sessionize import io, pipeline
    from sessionize.engines import dask as dask_engine
    from sessionize.partition import PartitionJob

    stages: dict[str, float] = {}
    last = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal last
        now = time.perf_counter()
        stages[name] = now - last
        last = now

    def progress(event: pipeline.RunProgress) -> None:
        if event.done == event.total:
            lap("read" if event.stage == "read" else "shuffle + sessionize")

    with dask_engine.connect(None, workers=workers) as client:
        lap("cluster start")
        options = io.ReadOptions(valid_until=datetime.now(UTC) + timedelta(days=1))
        settings = pipeline.SessionSettings(geo_database=geo_module.open_database() if geo else None)
        outcome = dask_engine.run_dask(
            [input_path],
            options,
            PartitionJob(settings=settings),
            output_dir=output_dir,
            scheduler=client.scheduler_info()["address"],
            partition_rows=partition_rows,
            progress=progress,
        )
        worker_rss = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    lap("cluster stop")
    report = {
        "stages": stages,
        "client_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "worker_rss_mib": max(worker_rss.values()),
        "sessions": outcome.session_count,
        "workers": outcome.workers,
        "input_partitions": outcome.input_partitions,
        "partitions": outcome.partitions,
    }
    print(json.dumps(report))


def measure(command: list[str]) -> tuple[float, float, str]:
    """Run ``command``; its wall time, the peak RSS in MiB of it or of the largest of its children (what
    ``wait4`` reports on Linux), and its stdout."""
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        if os.waitstatus_to_exitcode(status) != 0:
            stderr.seek(0)
            raise RuntimeError(f"{' '.join(command)} failed:\n{stderr.read().decode(errors='replace')}")
        stdout.seek(0)
        return wall, usage.ru_maxrss / 1024, stdout.read().decode()


def build_cases(
    input_path: Path, out: Path, *, geo_modes: list[bool], workers: int | None, partition_rows: int
) -> list[Case]:
    cases = []
    for geo in geo_modes:
        tag = "geo" if geo else "nogeo"
        local_out = out / f"local-{tag}.parquet"
        local = [SESSIONIZE, "run", str(input_path), "-o", str(local_out), "-q"]
        cases.append(Case("local", geo, local + ([] if geo else ["--no-geo"]), local_out))
        dask_out = out / f"dask-{tag}"
        command = [sys.executable, __file__, "--child", str(input_path), str(dask_out)]
        command += ["--partition-rows", str(partition_rows)] + (["--geo"] if geo else [])
        if workers is not None:
            command += ["--workers", str(workers)]
        cases.append(Case("dask", geo, command, dask_out))
    return cases


def run_cases(cases: list[Case], repeat: int) -> None:
    for round_number in range(1, repeat + 1):
        for case in cases:
            if case.output.is_dir():
                for part in case.output.iterdir():
                    part.unlink()
                case.output.rmdir()
            wall, rss, stdout = measure(case.command)
            run = Run(wall, rss)
            if case.engine == "dask":
                report = json.loads(stdout.strip().splitlines()[-1])
                run.stages = report["stages"]
                run.client_rss_mib, run.worker_rss_mib = report["client_rss_mib"], report["worker_rss_mib"]
            case.runs.append(run)
            print(
                f"  round {round_number}/{repeat}  {case.label:<16} {wall:7.2f}s  {rss:7.0f} MiB",
                file=sys.stderr,
            )
        if round_number == 1:
            check_same_tables(cases)


def check_same_tables(cases: list[Case]) -> None:
    """The local and the Dask table of each geo mode hold the same sessions (compared in a child
    process: on Linux a child's peak RSS counts the parent's at fork, so this one stays small)."""
    for geo in sorted({case.geo for case in cases}):
        outputs = {case.engine: case.output for case in cases if case.geo == geo}
        command = [sys.executable, __file__, "--compare", str(outputs["local"]), str(outputs["dask"])]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise AssertionError(f"geo={geo}: the Dask table differs from the local one:\n{result.stderr}")
        print(f"  same table (geo={geo}): {result.stdout.strip()} sessions", file=sys.stderr)


def compare(local_output: str, dask_output: str) -> None:
    local = pl.read_parquet(local_output).sort(KEY)
    remote = pl.read_parquet(Path(dask_output) / "*.parquet").sort(KEY)
    if not local.equals(remote):
        raise SystemExit("the tables differ")
    print(f"{local.height:,}")


def table(cases: list[Case], events: int) -> str:
    lines = [
        "| events | engine | median wall | min - max | Dask stages (median) | peak RSS | vs local |",
        "|---:|---|---:|---:|---|---:|---:|",
    ]
    local = {case.geo: case.median_s for case in cases if case.engine == "local"}
    for case in cases:
        walls = [r.wall_s for r in case.runs]
        if case.engine == "dask":
            names = list(case.runs[0].stages)
            stages = ", ".join(
                f"{n} {statistics.median(r.stages[n] for r in case.runs):.1f} s" for n in names
            )
            rss = (
                f"{max(r.client_rss_mib for r in case.runs):,.0f} MiB client, "
                f"{max(r.worker_rss_mib for r in case.runs):,.0f} MiB worker"
            )
        else:
            stages, rss = "-", f"{max(r.max_rss_mib for r in case.runs):,.0f} MiB"
        lines.append(
            f"| {events:,} | {case.label} | {case.median_s:.1f} s | {min(walls):.1f} - {max(walls):.1f} s "
            f"| {stages} | {rss} | {case.median_s / local[case.geo]:.2f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The local engine against --engine dask on this machine.")
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the data set (default 1M)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of every case (default 3)")
    parser.add_argument("--geo", action="store_true", help="also with the default GeoIP database")
    parser.add_argument("--workers", type=int, default=None, help="Dask worker processes (default: CPUs)")
    parser.add_argument("--partition-rows", type=int, default=1_000_000, help="rows per input partition")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw measurements here")
    parser.add_argument("--child", nargs=2, metavar=("INPUT", "OUTPUT_DIR"), help=argparse.SUPPRESS)
    parser.add_argument("--compare", nargs=2, metavar=("LOCAL", "DASK_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.compare:
        compare(*args.compare)
        return 0
    if args.child:
        child(*args.child, workers=args.workers, geo=args.geo, partition_rows=args.partition_rows)
        return 0

    stem = dataset(args.events)
    input_path = stem.with_suffix(".parquet")
    warm_page_cache(input_path)
    modes = [False, True] if args.geo else [False]
    with tempfile.TemporaryDirectory(dir=DATA_DIR, prefix="out-") as out:
        cases = build_cases(
            input_path, Path(out), geo_modes=modes, workers=args.workers, partition_rows=args.partition_rows
        )
        started = time.perf_counter()
        run_cases(cases, args.repeat)
        total = time.perf_counter() - started
    from importlib import metadata

    versions = f"Polars {pl.__version__}, Dask {metadata.version('dask')}"
    print(
        f"\n{args.events:,} events ({input_path.name}), {args.repeat} rounds, {versions}, "
        f"{os.cpu_count()} CPUs, {args.workers or os.cpu_count()} Dask workers; benchmark took {total:.0f}s\n"
    )
    print(table(cases, args.events))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload: dict[str, Any] = {
            "events": args.events,
            "dataset": stem.name,
            "polars": pl.__version__,
            "dask": metadata.version("dask"),
            "cpus": os.cpu_count(),
            "workers": args.workers or os.cpu_count(),
            "cases": [
                {"engine": c.engine, "geo": c.geo, "command": c.command, "runs": [asdict(r) for r in c.runs]}
                for c in cases
            ],
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
