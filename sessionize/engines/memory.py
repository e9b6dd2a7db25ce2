"""The in-memory engine: every input read, then one partition step over all users."""

from __future__ import annotations

from typing import ClassVar

import polars as pl

from sessionize import io
from sessionize.config import RunConfig
from sessionize.engines.base import Outcome, Progress, RunProgress
from sessionize.partition import PartitionJob, process_partition


class MemoryEngine:
    """All events in memory at once: the fastest path while they fit in the budget."""

    name: ClassVar[str] = "memory"

    def __init__(self, memory_limit: int = 0) -> None:
        #: The budget the run fitted in (for the summary).
        self.memory_limit = memory_limit

    def check(self, config: RunConfig) -> None:
        """Every option works in memory."""

    def run(
        self,
        files: list[io.InputFile],
        config: RunConfig,
        job: PartitionJob,
        outputs: io.Publication,
        progress: Progress,
    ) -> Outcome:
        reads: list[io.FileRead] = []
        rows = 0
        progress(RunProgress("read", 0, len(files), 0))
        for number, source in enumerate(files, start=1):
            reads.append(io.read.read_file(source, config.read))
            rows += reads[-1].rows
            progress(RunProgress("read", number, len(files), rows))
        events = pl.concat([r.events for r in reads], how="vertical", rechunk=False)
        rejected = [r.rejects for r in reads if r.rejects is not None]
        filtered = sum(r.filtered for r in reads)
        del reads
        progress(RunProgress("buckets", 0, 1, 0))
        # Handed over: the step frees the events once the sessions are built.
        handed = [events]
        del events
        result = process_partition(handed, job)
        progress(RunProgress("buckets", 1, 1, result.events))
        return Outcome(
            sessions=result.sessions,
            tally=result.tally,
            files=[source.path for source in files],
            rows_read=rows,
            events=result.events,
            duplicates_removed=result.duplicates,
            rejects=pl.concat(rejected, how="diagonal_relaxed") if rejected else None,
            memory_limit=self.memory_limit,
            pageviews=result.pageviews,
            users=result.users,
            filtered=filtered,
        )
