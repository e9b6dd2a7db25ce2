"""The bucketed engine's two phases, timed in one process: spilling the events, then the buckets.

Usage (from the repository root)::

    python bench/bench_phases.py bench/data/scale/part-00.parquet bench/data/scale/part-01.parquet \
        --memory-limit 1GiB [--no-geo] [other sessionize run options]

Runs ``sessionize run ARGS -o /tmp/sessionize-phases.parquet -q`` in this process and prints the time
until the first bucket is read back (the spill phase), the time after it, the peak RSS of each (the
kernel's high-water mark, reset between the phases) and the number of spill files.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from typer.testing import CliRunner

from sessionize.cli import app
from sessionize.io import spill

OUT = "/tmp/sessionize-phases.parquet"


def peak_mib() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        fields = dict(line.split(":", 1) for line in status)
    return int(fields["VmHWM"].split()[0]) // 1024


def main() -> int:
    start = time.perf_counter()
    marks: dict[str, float] = {}
    read = spill.BucketSpill.read

    def timed_read(self: spill.BucketSpill, *args: Any, **kwargs: Any) -> Any:
        if "spill" not in marks:
            self.flush()
            marks.update(spill=time.perf_counter() - start, peak=peak_mib(), files=sum(map(len, self._files)))
            with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
                refs.write("5")  # resets VmHWM
        return read(self, *args, **kwargs)

    spill.BucketSpill.read = timed_read  # type: ignore[method-assign]
    result = CliRunner().invoke(app, ["run", *sys.argv[1:], "-o", OUT, "-q"])
    total = time.perf_counter() - start
    if result.exit_code or "spill" not in marks:
        print(result.output, file=sys.stderr)
        print(f"exit {result.exit_code}; the run did not go through buckets" if not result.exit_code else "")
        return 1
    print(
        f"spill {marks['spill']:.1f} s, peak {marks['peak']:,.0f} MiB, {marks['files']:,.0f} files | "
        f"buckets {total - marks['spill']:.1f} s, peak {peak_mib():,} MiB | total {total:.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
