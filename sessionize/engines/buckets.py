"""The bucketed engine: users split into hash buckets spilled to disk, one bucket in memory at a time.

When the inputs hold more events than fit in the memory budget, one pass reads them a slice at a
time and spills each slice's events to Parquet files by bucket of users
(:func:`sessionize.engines.budget.bucket_of`); then each bucket, holding every event of its users, goes
through the partition step on its own. The result is the same as in memory, sorted by user within
each bucket. The spill directory is removed when the run ends or fails (Ctrl-C and SIGTERM included).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import polars as pl

from sessionize import io
from sessionize.config import RunConfig
from sessionize.engines.base import PREVIEW_ROWS, Outcome, Progress, RunProgress
from sessionize.engines.budget import (
    Plan,
    bucket_of,
    bucket_warning,
    claim_bucket_of,
    split_count,
    sub_bucket_of,
)
from sessionize.errors import SessionizeWarning, UsageError
from sessionize.partition import (
    PartitionJob,
    SessionRules,
    Tally,
    empty_sessions,
    process_partition,
    protect_addresses,
)

#: Spill directories are named with their process id, so that a later run can tell the ones left by
#: a process that died (``kill -9``, a crash) and remove them.
_SPILL_PREFIX = "sessionize-buckets-"
#: With ``--shared-session-ids merge``: each event's place in the input, kept through the two spills.
_ORDER = "_input_order"


def _claimed(
    claims: io.BucketSpill, directory: Path, schema: dict[str, pl.DataType], rules: SessionRules
) -> io.BucketSpill:
    """Events spilled by client session id (:func:`claim_bucket_of`), given to their sessions' owners
    and spilled again by user, one bucket in memory at a time."""
    directory.mkdir()
    buckets = claims.buckets
    users = io.BucketSpill(directory, buckets, bucket_of(buckets), buffer_bytes=claims.buffer_bytes)
    for index in range(buckets):
        events = claims.read(index, schema)
        claims.remove(index)
        users.add(rules.claim(events))
        del events
    users.flush()
    return users


def _remove_stale_spills(directory: Path) -> None:
    """Remove spill directories of processes that are gone (they hold raw events)."""
    for path in io.left_by_dead_processes(directory, _SPILL_PREFIX):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)


class BucketEngine:
    """Hash buckets of users, within ``--memory-limit``."""

    name: ClassVar[str] = "buckets"

    def __init__(self, plan: Plan) -> None:
        self.plan = plan

    def check(self, config: RunConfig) -> None:
        temp_dir = config.engine.temp_dir
        if temp_dir is not None and not os.path.isdir(temp_dir):
            raise UsageError(f"--temp-dir {temp_dir}: no such directory.")
        if temp_dir is not None:
            # The spilled events (user ids, addresses) would be in a stranger's directory.
            io.refuse_planted_symlink(temp_dir, f"--temp-dir {temp_dir}")

    def run(
        self,
        files: list[io.InputFile],
        config: RunConfig,
        job: PartitionJob,
        outputs: io.Publication,
        progress: Progress,
    ) -> Outcome:
        plan = self.plan
        _remove_stale_spills(Path(config.engine.temp_dir or tempfile.gettempdir()))
        # mkdtemp makes the directory 0700: the spilled events (addresses, user ids) are the user's alone.
        work = Path(tempfile.mkdtemp(prefix=f"{_SPILL_PREFIX}{os.getpid()}-", dir=config.engine.temp_dir))
        keep_work = False
        target = config.output.output
        # Each bucket's tables are written while the next bucket is computed.
        sink = None if target is None else outputs.sink(target, format=config.output.format, background=True)
        # The page-view and user tables: written bucket by bucket as the session table (a user's page
        # views and row depend only on their own events, all in one bucket).
        extra_sinks = {
            name: outputs.sink(path, background=True)
            for name, path in (
                ("pageviews", config.output.pageviews_output),
                ("users", config.output.users_output),
            )
            if path is not None
        }
        try:
            # --shared-session-ids merge: a first spill by client session id finds each session's owner.
            merge = job.settings.rules.merges_session_ids
            bucket = claim_bucket_of(plan.buckets) if merge else bucket_of(plan.buckets)
            spill = io.BucketSpill(work, plan.buckets, bucket, buffer_bytes=plan.spill_bytes)
            schema = {**job.event_schema(), **({_ORDER: pl.Int64()} if merge else {})}
            order = 0
            rows = filtered = 0
            progress(RunProgress("read", 0, len(files), 0))
            rejected: list[pl.DataFrame] = []
            for number, source in enumerate(files, start=1):
                for part in io.iter_reads(source, config.read, plan.chunk_rows, scratch=work):
                    rows += part.rows
                    filtered += part.filtered
                    if part.rejects is not None:
                        rejected.append(part.rejects)
                    # No full address in the spill files with --anonymize-ip (located first after-geo).
                    chunk = protect_addresses(part.events, job)
                    if merge:
                        chunk = chunk.with_columns(
                            (pl.int_range(pl.len(), dtype=pl.Int64) + order).alias(_ORDER)
                        )
                        order += chunk.height
                    spill.add(chunk)
                    del chunk
                    del part
                    progress(RunProgress("read", number - 1, len(files), rows))
                progress(RunProgress("read", number, len(files), rows))
            spill.flush()
            if merge:
                spill = _claimed(spill, work / "users", schema, job.settings.rules)
            too_big = bucket_warning(
                max(spill.rows, default=0), memory_limit=plan.memory_limit, resident_bytes=plan.resident_bytes
            )
            if too_big is not None:
                warnings.warn(too_big, SessionizeWarning, stacklevel=2)
            # Within a budget, the geo lookup waits for the sessions instead of running beside them.
            sequential = replace(job.settings, overlap_geo=False)
            tally = Tally()
            kept: list[pl.DataFrame] = []
            report_parts = work / "report"
            if config.output.report is not None:
                report_parts.mkdir()
            events = duplicates = 0
            for index in range(plan.buckets):
                bucket_events = spill.read(index, schema)
                if merge:
                    bucket_events = bucket_events.sort(_ORDER).drop(_ORDER)
                # A bucket of many users with few events each (one session per event) costs about twice
                # what the plan assumed: it goes through the step in parts, by a second hash of users.
                parts = split_count(bucket_events, plan)
                pieces = (
                    [bucket_events]
                    if parts == 1
                    else bucket_events.with_columns(sub_bucket_of(parts)).partition_by(
                        "_part", include_key=False, maintain_order=True
                    )
                )
                del bucket_events
                for number, piece in enumerate(pieces):
                    result = process_partition(piece, job, settings=sequential)
                    tally.merge(result.tally)
                    events += result.events
                    duplicates += result.duplicates
                    table = result.sessions
                    for name, extra_sink in extra_sinks.items():
                        part_table = getattr(result, name)
                        assert part_table is not None
                        extra_sink.write(part_table)
                        del part_table  # the sink's thread frees it once converted
                    if config.output.report is not None and table.height:
                        name = f"{index:05d}-{number:03d}.parquet"
                        table.write_parquet(report_parts / name, compression="lz4")
                    if sink is None:
                        kept.append(table)
                    else:
                        sink.write(table)
                        if sum(part.height for part in kept) < PREVIEW_ROWS:
                            # A copy: a slice would keep the whole table's buffers for the run.
                            kept.append(pl.read_ipc(table.head(PREVIEW_ROWS).write_ipc(None).getvalue()))
                    del result, table
                del pieces
                spill.remove(index)
                progress(RunProgress("buckets", index + 1, plan.buckets, events))
            empty = empty_sessions(job)
            sessions = pl.concat(kept, how="vertical") if kept else empty
            if extra_sinks:
                nothing = process_partition(pl.DataFrame(schema=job.event_schema()), job)
                for name, extra_sink in extra_sinks.items():
                    empty_part = getattr(nothing, name)
                    assert empty_part is not None
                    extra_sink.finish(empty_part)
            if sink is not None:
                sink.finish(empty)
                sessions = sessions.head(PREVIEW_ROWS)
            report_table = None
            if config.output.report is not None:
                keep_work = True
                report_files = sorted(report_parts.glob("*.parquet"))
                report_table = pl.scan_parquet(report_files, glob=False) if report_files else empty.lazy()
            return Outcome(
                sessions=sessions,
                tally=tally,
                files=[source.path for source in files],
                rows_read=rows,
                events=events,
                duplicates_removed=duplicates,
                rejects=pl.concat(rejected, how="diagonal_relaxed") if rejected else None,
                complete=sink is None,
                written=None if sink is None else sink.format,
                path_taken=f"{plan.buckets} buckets",
                buckets=plan.buckets,
                report_table=report_table,
                cleanup=lambda: shutil.rmtree(work, ignore_errors=True),
                memory_limit=plan.memory_limit,
                filtered=filtered,
            )
        finally:
            if not keep_work:
                shutil.rmtree(work, ignore_errors=True)
