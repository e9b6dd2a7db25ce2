"""Events spilled to disk by bucket of users (the bucketed engine's scratch files)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from sessionize.errors import (
    OutputError,
)


class BucketSpill:
    """Events spilled to Parquet files by bucket of users, in a directory the caller owns.

    :meth:`add` appends a frame's rows to their buckets (one file per bucket and call, so every
    bucket keeps the input order); :meth:`read` returns one bucket's events, and :meth:`remove`
    frees its disk space.
    """

    def __init__(self, directory: str | Path, buckets: int) -> None:
        self.directory = Path(directory)
        self.buckets = buckets
        self._added = 0
        self._files: list[list[Path]] = [[] for _ in range(buckets)]
        #: Events spilled to each bucket.
        self.rows: list[int] = [0] * buckets

    def add(self, events: pl.DataFrame, bucket: pl.Expr) -> None:
        """Write ``events`` split by ``bucket`` (an expression giving 0..buckets-1 per row)."""
        if not events.height:
            return
        parts = events.with_columns(bucket.cast(pl.UInt32).alias("_bucket")).partition_by(
            "_bucket", as_dict=True, include_key=False
        )
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
