"""The engine interface: what every engine is given and what it gives back.

An engine turns the resolved inputs of a run into its session table with the one partition step
(:func:`sessionize.partition.process_partition`). It checks its own options (:meth:`Engine.check`,
before any work), and it writes what it writes into the run's :class:`~sessionize.io.Publication`,
which the orchestrator publishes only when every output of the run is complete.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import polars as pl

from sessionize.config import RunConfig
from sessionize.errors import UsageError
from sessionize.partition import PartitionJob, Tally

if TYPE_CHECKING:
    from sessionize.io import InputFile, Publication

#: Sessions kept for the preview and ``RunResult.sessions`` when an engine wrote the table out itself.
PREVIEW_ROWS = 100


@dataclass(frozen=True)
class RunProgress:
    """What ``run`` reports to its ``progress`` callback: a stage, its steps done and total, rows."""

    #: ``read`` (input files: steps are files), ``buckets`` (steps are buckets or partitions sessionized).
    stage: str
    done: int
    total: int
    #: Rows read so far (``read``), or events sessionized so far (``buckets``).
    rows: int


Progress = Callable[[RunProgress], None]


def refuse_options(options: Mapping[str, object], where: str) -> None:
    """Refuse the options an engine cannot honour that were given (``options``: each flag and its value,
    None when not given) with a usage error: "FLAGS cannot be used with WHERE", ``where`` saying why."""
    given = [flag for flag, value in options.items() if value is not None]
    if given:
        raise UsageError(f"{', '.join(given)} cannot be used with {where}")


@dataclass
class Outcome:
    """What an engine produced, before the rejects, the report and the run's result."""

    #: The session table; only its first rows when ``complete`` is false (read the output for all).
    sessions: pl.DataFrame
    tally: Tally
    #: The inputs read (paths or URLs), in input order.
    files: list[str]
    #: Data rows in the inputs: ``rows_read == events + rejected + duplicates_removed + filtered``.
    rows_read: int
    events: int
    duplicates_removed: int
    #: The rejected rows (all original columns as text, ``source_file``, ``source_row``, ``reject_reason``);
    #: only the first when ``rejected_count`` is set (an engine that kept them on its cluster).
    rejects: pl.DataFrame | None
    complete: bool = True
    #: The format of the table when the engine wrote it itself (else the orchestrator writes it).
    written: str | None = None
    #: ``in memory``, ``N buckets``, ``dask: N partitions``, ``incremental``.
    path_taken: str = "in memory"
    buckets: int = 1
    #: What the report reads when it is not ``sessions``; ``cleanup`` removes its files (always called).
    report_table: pl.LazyFrame | None = None
    cleanup: Callable[[], None] = lambda: None
    #: Called once every output of the run is published (the incremental state's commit, a directory's
    #: ``_SUCCESS`` marker): the run's last step. ``abandon`` instead, when the run fails after the engine.
    commit: Callable[[], None] = lambda: None
    abandon: Callable[[], None] = lambda: None
    #: The page-view and user tables when the orchestrator writes them (None: not asked for, or the
    #: engine wrote them itself).
    pageviews: pl.DataFrame | None = None
    users: pl.DataFrame | None = None
    #: Dask: the scheduler's address.
    scheduler: str | None = None
    #: Incremental runs: their :class:`sessionize.engines.incremental.IncrementalOutcome` (files
    #: skipped, late events, partitions written, ...). Typed loosely: no engine is imported here.
    incremental: Any = None
    #: The memory budget of a local run, in bytes.
    memory_limit: int = 0
    #: Rows left out by ``--filter`` and ``--max-send-delay``.
    filtered: int = 0
    #: The rejected rows, when ``rejects`` holds only the first of them (None: ``rejects`` has them all).
    rejected_count: int | None = None
    #: Whether the engine wrote ``--rejects`` itself (Spark's dataset): the orchestrator does not.
    rejects_written: bool = False

    @property
    def rejected(self) -> int:
        if self.rejected_count is not None:
            return self.rejected_count
        return 0 if self.rejects is None else self.rejects.height


class Engine(Protocol):
    """One way to run the partition step over a run's inputs."""

    name: ClassVar[str]

    def check(self, config: RunConfig) -> None:
        """Refuse options this engine cannot honour (a :class:`~sessionize.errors.UsageError`),
        before any input is read or output opened."""

    def run(
        self,
        files: list[InputFile],
        config: RunConfig,
        job: PartitionJob,
        outputs: Publication,
        progress: Progress,
    ) -> Outcome:
        """Sessionize ``files``; write the table into ``outputs`` if the engine writes it itself."""
        ...
