"""Events spilled to disk by bucket of users (the bucketed engine's scratch files)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from sessionize.errors import (
    OutputError,
)


class BucketSpill:
    """Events spilled to Parquet files by bucket of users, in a directory the caller owns.

    :meth:`add` appends a frame's rows to their buckets, in input order; :meth:`read` returns one
    bucket's events, and :meth:`remove` frees its disk space.

    Added frames are held until they fill ``buffer_bytes`` (their ``estimated_size``), then split and
    written together: one file per bucket and flush. Each file costs a few milliseconds to write and to
    read back whatever its size, and a slice of input split into hundreds of buckets makes files of a
    few thousand rows (at 100M events in 209 buckets, 44,000 files).
    """

    def __init__(
        self, directory: str | Path, buckets: int, bucket: pl.Expr, *, buffer_bytes: int = 0
    ) -> None:
        self.directory = Path(directory)
        self.buckets = buckets
        #: Each event's bucket: an expression giving 0..buckets-1 per row.
        self.bucket = bucket
        self.buffer_bytes = buffer_bytes
        self._added = 0
        self._files: list[list[Path]] = [[] for _ in range(buckets)]
        self._held: list[pl.DataFrame] = []
        self._held_bytes = 0
        #: Events written to each bucket (all that were added, after :meth:`flush`).
        self.rows: list[int] = [0] * buckets

    def add(self, events: pl.DataFrame) -> None:
        """Add ``events`` to their buckets."""
        if not events.height:
            return
        self._held.append(events)
        self._held_bytes += int(events.estimated_size())
        if self._held_bytes >= self.buffer_bytes:
            self.flush()

    def flush(self) -> None:
        """Write the events held (:meth:`read` does it first)."""
        if not self._held:
            return
        held, self._held, self._held_bytes = self._held, [], 0
        events = held[0] if len(held) == 1 else pl.concat(held, how="vertical")
        parts = events.with_columns(self.bucket.cast(pl.UInt32).alias("_bucket")).partition_by(
            "_bucket", as_dict=True, include_key=False
        )
        del held, events
        for (number, *_), part in parts.items():
            path = self.directory / f"b{number:05d}-{self._added:07d}.parquet"
            try:
                part.write_parquet(path, compression="lz4", statistics=False)
            except (OSError, pl.exceptions.PolarsError) as exc:
                # Polars reports a full disk as a ComputeError ("File out of specification ... os error 28").
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else _short(exc)
                path.unlink(missing_ok=True)
                raise OutputError(
                    f"Cannot write temporary bucket files to {self.directory}: {reason}. "
                    "Free disk space there or give another directory with --temp-dir."
                ) from exc
            self._files[int(number)].append(path)
            self.rows[int(number)] += part.height
        self._added += 1

    def read(self, bucket: int, schema: dict[str, pl.DataType]) -> pl.DataFrame:
        """One bucket's events, in input order."""
        self.flush()
        files = self._files[bucket]
        if not files:
            return pl.DataFrame(schema=schema)
        return pl.read_parquet(files, glob=False)

    def remove(self, bucket: int) -> None:
        for path in self._files[bucket]:
            path.unlink(missing_ok=True)
        self._files[bucket] = []


def _short(exc: BaseException) -> str:
    text = str(exc)
    if "os error 28" in text or "No space left" in text:
        return "No space left on device"
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__
