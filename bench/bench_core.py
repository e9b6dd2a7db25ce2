"""Timing of the core (``assign_sessions(label=False)`` then ``summarize_sessions``), variant against variant.

Usage (from the repository root)::

    python bench/bench_core.py                                  # in process, 1M events, 5 rounds
    python bench/bench_core.py --events 10000000 --repeat 3 --phases core
    python bench/bench_core.py --variant base=/tmp/core_old.py --variant new=sessionize/core.py
    python bench/bench_core.py --processes --events 10000000 --repeat 3 \\
        --variant base=/tmp/core_old.py --variant new=sessionize/core.py

A variant is a version of ``sessionize/core.py`` (``NAME=PATH``, e.g. a copy of the committed one); the
default is the package's own.

In process (the default): reads ``bench/data/events_<size>.parquet`` once and prepares it
(``prepare_events``, collected), then times, round after round, each variant on the same in-memory frame,
alternating the variants and the order they run in, so drift of the machine hits them alike. Per variant
and round: ``assign`` (collect of ``assign_sessions(label=False)``), ``summarize`` (collect of
``summarize_sessions`` on that result) and ``core`` (both in one plan, one collect, as ``sessionize run``
does). The table gives medians and fastest rounds, each with the ratio of the variant to the first (the
fastest round is the least disturbed when other work shares the machine). Every variant's table must equal
the first one's (exit code 1 otherwise). Repeated collects in one process reuse memory that a fresh
process would have to fault in, so these times are lower than a process's.

``--processes``: whole child processes, as ``compare.py`` runs them, round-robin with DuckDB: per variant
``bench/engines.py sessionize-core`` and ``sessionize run INPUT -o OUT.parquet -q --no-geo`` (each with a
copy of the package that holds that variant's ``core.py``), and ``bench/engines.py duckdb``. The table gives
median wall time, peak RSS and the ratio to DuckDB of the same run; the variants' core tables must equal
each other's and DuckDB's core columns (``compare.py``'s check).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import polars as pl

import sessionize

BENCH_DIR = Path(__file__).resolve().parent
DATA_DIR = BENCH_DIR / "data"
PHASES = ("assign", "summarize", "core")


def load_variant(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_core_variant_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def timed(run: Callable[[], pl.DataFrame]) -> tuple[float, pl.DataFrame]:
    gc.collect()
    started = time.perf_counter()
    result = run()
    return time.perf_counter() - started, result


def size_name(events: int) -> str:
    return f"{events // 1_000_000}m" if events % 1_000_000 == 0 else f"{events // 1000}k"


def in_process(source: Path, variants: dict[str, Path], phases: list[str], repeat: int) -> bool:
    modules = {name: load_variant(name, path) for name, path in variants.items()}
    started = time.perf_counter()
    raw = pl.read_parquet(source)
    read_s = time.perf_counter() - started
    columns = sessionize.resolve_columns(raw.columns)
    prepared = sessionize.prepare_events(raw.lazy(), columns=columns).collect(engine="in-memory")
    del raw
    print(f"{source.name}: {prepared.height:,} events; read {read_s:.2f}s", file=sys.stderr)

    times: dict[str, dict[str, list[float]]] = {v: {p: [] for p in phases} for v in modules}
    reference: pl.DataFrame | None = None
    agreed = True
    names = list(modules)
    for round_index in range(repeat):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            core = modules[name]

            def assign(core: ModuleType = core) -> pl.DataFrame:
                return core.assign_sessions(prepared.lazy(), label=False).collect(engine="in-memory")  # type: ignore[no-any-return]

            assigned = None
            line = []
            for phase in phases:
                if phase == "assign":
                    seconds, assigned = timed(assign)
                    result = None
                elif phase == "summarize":
                    frame = assigned if assigned is not None else assign()
                    seconds, result = timed(
                        lambda core=core, frame=frame: core.summarize_sessions(frame.lazy()).collect(
                            engine="in-memory"
                        )
                    )
                else:
                    seconds, result = timed(
                        lambda core=core: core.summarize_sessions(
                            core.assign_sessions(prepared.lazy(), label=False)
                        ).collect(engine="in-memory")
                    )
                times[name][phase].append(seconds)
                line.append(f"{phase} {seconds:6.2f}s")
                if result is not None:
                    if reference is None:
                        reference = result
                    elif not result.equals(reference):
                        print(f"  {name} {phase}: RESULT DIFFERS from the first variant's", file=sys.stderr)
                        agreed = False
            print(f"  round {round_index + 1}/{repeat} {name:<10} " + "  ".join(line), file=sys.stderr)

    first = names[0]
    # The fastest round too: on a machine shared with other work, the minimum is the least disturbed.
    print(
        f"\n{prepared.height:,} events in process, {repeat} rounds, median and fastest (ratio to {first}):\n"
    )
    print("| variant | " + " | ".join(phases) + " |")
    print("|---|" + "---:|" * len(phases))
    for name in names:
        cells = []
        for phase in phases:
            median, fastest = statistics.median(times[name][phase]), min(times[name][phase])
            base, base_fastest = statistics.median(times[first][phase]), min(times[first][phase])
            cells.append(
                f"{median:.2f} s ({median / base:.2f}x), min {fastest:.2f} s ({fastest / base_fastest:.2f}x)"
            )
        print(f"| {name} | " + " | ".join(cells) + " |")
    return agreed


def processes(source: Path, variants: dict[str, Path], repeat: int, skip_run: bool) -> bool:
    sys.path.insert(0, str(BENCH_DIR))
    from bench_run import SESSIONIZE, Measurement, measure, warm_page_cache
    from compare import compare_outputs, report_disagreements

    engines_py = str(BENCH_DIR / "engines.py")
    agreed = True
    with tempfile.TemporaryDirectory(prefix="bench-core-") as directory:
        work = Path(directory)
        package = Path(sessionize.__file__).parent
        cases: list[tuple[str, list[str], dict[str, str]]] = [
            ("duckdb", [sys.executable, engines_py, "duckdb", str(source), str(work / "duckdb.parquet")], {})
        ]
        for name, path in variants.items():
            # A copy of the package with this variant's core.py, first on the child's path.
            root = work / f"pkg-{name}"
            shutil.copytree(package, root / "sessionize", ignore=shutil.ignore_patterns("__pycache__"))
            shutil.copyfile(path, root / "sessionize" / "core.py")
            env = {"PYTHONPATH": str(root)}
            target = work / f"core-{name}.parquet"
            cases.append(
                (
                    f"core {name}",
                    [sys.executable, engines_py, "sessionize-core", str(source), str(target)],
                    env,
                )
            )
            if not skip_run:
                # The console script: `python -m` would import the package in the current directory.
                run = [
                    SESSIONIZE,
                    "run",
                    str(source),
                    "-o",
                    str(work / f"run-{name}.parquet"),
                    "-q",
                    "--no-geo",
                ]
                cases.append((f"run {name}", run, env))
        runs: dict[str, list[Measurement]] = {case[0]: [] for case in cases}
        warm_page_cache(source)
        for round_index in range(repeat):
            shift = round_index % len(cases)
            for label, command, env in cases[shift:] + cases[:shift]:
                saved = dict(os.environ)
                os.environ.update(env)
                try:
                    result = measure(command)
                finally:
                    os.environ.clear()
                    os.environ.update(saved)
                runs[label].append(result)
                print(
                    f"  round {round_index + 1}/{repeat}  {label:<16} {result.wall_s:7.2f}s "
                    f"{result.max_rss_mib:7.0f} MiB",
                    file=sys.stderr,
                )
        outputs = {"duckdb": work / "duckdb.parquet"} | {
            f"core-{name}": work / f"core-{name}.parquet" for name in variants
        }
        found = compare_outputs(outputs, None)
        report_disagreements(source.name, found, list(outputs))
        agreed &= not found
        tables = [pl.read_parquet(work / f"core-{name}.parquet") for name in variants]
        if any(not table.equals(tables[0]) for table in tables[1:]):
            print("the variants' core tables DIFFER")
            agreed = False

    duckdb = statistics.median(m.wall_s for m in runs["duckdb"])
    print(f"\n{source.name}, whole processes, {repeat} rounds:\n")
    print("| case | median wall | min - max | peak RSS | wall / DuckDB |")
    print("|---|---:|---:|---:|---:|")
    for label, measurements in runs.items():
        walls = [m.wall_s for m in measurements]
        median = statistics.median(walls)
        print(
            f"| {label} | {median:.2f} s | {min(walls):.2f} - {max(walls):.2f} s "
            f"| {max(m.max_rss_mib for m in measurements):,.0f} MiB | {median / duckdb:.2f}x |"
        )
    return agreed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--input", type=Path, default=None, help="a Parquet file instead of events_<size>")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="NAME=PATH of a core.py to time (repeatable; default: the package's own)",
    )
    parser.add_argument(
        "--phases", default=",".join(PHASES), help="in process: phases to time (default: all)"
    )
    parser.add_argument("--processes", action="store_true", help="whole processes, with DuckDB")
    parser.add_argument(
        "--skip-run", action="store_true", help="with --processes: leave out `sessionize run`"
    )
    args = parser.parse_args(argv)
    specs = args.variant or [f"current={Path(sessionize.__file__).parent / 'core.py'}"]
    variants = {}
    for spec in specs:
        name, _, path = spec.partition("=")
        variants[name] = Path(path).resolve()
    source = args.input or DATA_DIR / f"events_{size_name(args.events)}.parquet"
    if args.processes:
        agreed = processes(source, variants, args.repeat, args.skip_run)
    else:
        agreed = in_process(source, variants, [p for p in args.phases.split(",") if p], args.repeat)
    print("\nresults agree" if agreed else "\nRESULTS DIFFER")
    return 0 if agreed else 1


if __name__ == "__main__":
    raise SystemExit(main())
