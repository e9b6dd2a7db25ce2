"""Engines: the ways a run goes through its inputs, each behind one interface (:class:`Engine`).

``memory`` (all events at once), ``buckets`` (hash buckets of users spilled to disk, within a
memory budget), ``incremental`` (runs for cron that continue each other), ``dask`` (a Dask
cluster) and ``spark`` (Apache Spark; both imported only when chosen). Every engine runs the one
partition step, :func:`sessionize.partition.process_partition`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from sessionize import io
from sessionize.config import RunConfig
from sessionize.engines import budget
from sessionize.engines.base import Engine, Outcome, RunProgress
from sessionize.engines.buckets import BucketEngine
from sessionize.engines.incremental import IncrementalEngine
from sessionize.engines.memory import MemoryEngine
from sessionize.errors import SessionizeWarning

__all__ = ["Engine", "Outcome", "RunProgress", "choose_engine"]


def choose_engine(inputs: io.Inputs, config: RunConfig) -> tuple[Engine, list[io.InputFile]]:
    """The engine for ``config`` (after its own option checks) and the run's input files."""
    engine: Engine
    if config.engine.engine == "dask":
        from sessionize.engines.dask import DaskEngine, resolve_inputs

        engine = DaskEngine()
        engine.check(config)
        return engine, resolve_inputs(inputs, input_format=config.read.input_format)
    if config.engine.engine == "spark":
        from sessionize.engines.spark import SparkEngine
        from sessionize.engines.spark import resolve_inputs as resolve_spark_inputs

        engine = SparkEngine()
        engine.check(config)
        return engine, resolve_spark_inputs(inputs, input_format=config.read.input_format)
    if config.engine.spark_master is not None or config.output.partition_by_date:
        from sessionize.errors import UsageError

        raise UsageError("--spark-master and --partition-by-date go with --engine spark.")
    if config.engine.scheduler is not None or config.engine.partitions is not None:
        from sessionize.errors import UsageError

        raise UsageError(
            "--scheduler and --partitions go with --engine dask (--partitions also with --engine spark)."
        )
    if config.incremental is not None:
        engine = IncrementalEngine()
        engine.check(config)
        return engine, io.resolve_inputs(inputs, input_format=config.read.input_format)
    files = io.resolve_inputs(inputs, input_format=config.read.input_format)
    limit = config.engine.memory_limit or budget.default_memory_limit()
    buckets = config.engine.buckets
    estimated = sum(io.estimate_rows(source) for source in files) if buckets is None else 0
    resident = 0
    if config.session.geo:
        from sessionize import geo

        found = geo.find_database(config.session.geoip_db)
        # The database is mapped twice (the reader's map and the tree walk's), and pages of both become
        # resident as lookups read them; the records decoded are kept for later lookups.
        resident = 0 if found is None else 2 * _size(found[0]) + geo.DECODED_RECORDS_BYTES
    chosen = budget.plan(
        estimated,
        memory_limit=limit,
        buckets=buckets,
        resident_bytes=resident,
        # --anonymize-ip (after the lookup): the read slices are located before they are spilled.
        resident_while_spilling=config.privacy.anonymize_ip == "after-geo",
    )
    if config.engine.memory_limit is not None:
        low = budget.budget_warning(limit, resident_bytes=resident)
        if low is not None:
            warnings.warn(low, SessionizeWarning, stacklevel=3)
    engine = MemoryEngine(limit) if chosen.in_memory else BucketEngine(chosen)
    engine.check(config)
    return engine, files


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
