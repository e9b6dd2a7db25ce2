"""Bounded memory: when the input is larger than the memory budget, split users into hash buckets.

One pass reads the inputs a slice at a time and spills each slice's events to Parquet files by
bucket (``hash(user_id) % N``); then each bucket, holding every event of its users, is sessionized
in memory on its own. Sessions depend only on their user's events, so the result is the same as
one pass in memory.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import polars as pl

from sessionize import schema as S
from sessionize.config import parse_memory as parse_memory
from sessionize.core import claim_key
from sessionize.errors import UsageError

#: Memory of the process before any event is read (Polars, the UA, referer and bot rule sets), bytes.
BASELINE_BYTES = 384 << 20
#: Peak memory per event of a bucket (spilled events read back, sort, session table, enrichment),
#: in bytes: measured on bench/generate.py data at 20M and 100M events with a 1 GiB budget (600 B gave a
#: peak of 1,081 MiB at 100M; 700 B gives 1,018 MiB, 131 buckets).
BYTES_PER_EVENT = 700
#: The part of the budget beyond the baseline a bucket's events may fill (the rest is headroom).
BUCKET_SHARE = 0.8
#: How many times what the spill buffer holds (as the frames' ``estimated_size``) the spill phase
#: takes at its peak, besides the read slice: the frames, their split copy and the allocator's slack
#: (measured on bench/generate.py data, 20M events, 1 GiB: 3.0).
SPILL_COPIES = 3
#: The default budget: this share of the memory available when the run starts.
DEFAULT_SHARE = 0.5
#: The fewest rows a read slice holds (below this, per-slice overhead dominates).
MIN_CHUNK_ROWS = 50_000
#: The most buckets a budget makes: each spill buffer writes a file per bucket, so a budget far below
#: what the data needs made thousands of buckets and hundreds of thousands of temporary files (58x
#: slower, and no lower peak: the baseline dominates).
MAX_BUCKETS = 1024


def available_memory() -> int:
    """Memory available to this process now, in bytes (Linux: MemAvailable and the cgroup limit)."""
    available: int | None = None
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            available = 4 << 30
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as handle:
            limit = handle.read().strip()
        if limit.isdigit():
            available = min(available, int(limit))
    except OSError:
        pass
    return available


def default_memory_limit() -> int:
    """Half of the memory available when the run starts."""
    return int(available_memory() * DEFAULT_SHARE)


@dataclass(frozen=True)
class Plan:
    """How a run goes: ``buckets == 1`` is all in memory; more spills users into buckets."""

    buckets: int
    #: Rows per read slice of a file (bucketed path).
    chunk_rows: int
    estimated_rows: int
    memory_limit: int
    #: Memory held besides the baseline and the events (the GeoIP maps), bytes.
    resident_bytes: int = 0
    #: Events held before they are split and spilled (bucketed path), bytes of their frames (see
    #: SPILL_COPIES).
    spill_bytes: int = 0

    @property
    def in_memory(self) -> bool:
        return self.buckets == 1


def plan(
    estimated_rows: int,
    *,
    memory_limit: int,
    buckets: int | None = None,
    resident_bytes: int = 0,
    resident_while_spilling: bool = False,
) -> Plan:
    """Choose the number of buckets for about ``estimated_rows`` events within ``memory_limit`` bytes.

    ``buckets`` forces a number (1: in memory whatever the size). ``resident_bytes`` is memory the run
    holds besides the baseline and the events: the GeoIP database's memory maps, whose pages become
    resident as the lookups read them (at 100M events with 10M addresses, nearly all of DB-IP City
    Lite's 100 MB, in each of its two maps). They count while the events are spilled only with
    ``resident_while_spilling`` (``--anonymize-ip`` locates the addresses before they go to disk).
    """
    usable = max(memory_limit - BASELINE_BYTES - resident_bytes, memory_limit // 4)
    bucket_rows = max(int(usable * BUCKET_SHARE / BYTES_PER_EVENT), 1)
    if buckets is None:
        buckets = 1 if estimated_rows <= bucket_rows else math.ceil(estimated_rows / bucket_rows)
        buckets = min(buckets, MAX_BUCKETS)
    elif buckets < 1:
        raise UsageError(f"--buckets {buckets} must be at least 1.")
    # A read slice gets the part of the budget a bucket gets.
    chunk_rows = max(bucket_rows, MIN_CHUNK_ROWS)
    # Slices are held until they fill the spill buffer, then split and written together. Unless the
    # addresses are located before they go to disk, the GeoIP database is not read while spilling:
    # its room is the buffer's too.
    spill_resident = resident_bytes if resident_while_spilling else 0
    spill_room = max(memory_limit - BASELINE_BYTES - spill_resident, memory_limit // 4)
    return Plan(
        buckets=buckets,
        chunk_rows=chunk_rows,
        spill_bytes=int(spill_room * BUCKET_SHARE / SPILL_COPIES),
        estimated_rows=estimated_rows,
        memory_limit=memory_limit,
        resident_bytes=resident_bytes,
    )


def minimum_memory(resident_bytes: int = 0) -> int:
    """The least memory any run takes: the baseline, the GeoIP maps and a first slice of events."""
    return BASELINE_BYTES + resident_bytes + MIN_CHUNK_ROWS * BYTES_PER_EVENT


def budget_warning(memory_limit: int, *, resident_bytes: int = 0) -> str | None:
    """What to tell the user about a budget the run cannot keep to, or None."""
    least = minimum_memory(resident_bytes)
    if memory_limit >= least:
        return None
    return (
        f"--memory-limit {_mib(memory_limit)} is below the {_mib(least)} any run takes (the program and its "
        f"rule sets{', the GeoIP database' if resident_bytes else ''} and a first slice of events): the run "
        f"goes on in at most {MAX_BUCKETS} buckets and will use more. Give at least {_mib(least)}."
    )


def bucket_warning(largest_rows: int, *, memory_limit: int, resident_bytes: int = 0) -> str | None:
    """What to tell the user when the largest bucket (one user's events cannot be split) needs more
    memory than the budget leaves it, or None. A budget below what any run takes (:func:`budget_warning`
    says so) is measured as that least memory: a bucket within it is no user's fault."""
    needed = BASELINE_BYTES + resident_bytes + largest_rows * BYTES_PER_EVENT
    if needed <= max(memory_limit, minimum_memory(resident_bytes)) * 1.15:
        return None
    return (
        f"One bucket of users holds {largest_rows:,} events, about {_mib(needed)} to sessionize, more than "
        f"--memory-limit {_mib(memory_limit)}: a user's events cannot be split (a crawler or a shared id "
        "with millions of events does this). The run goes on above the budget; exclude such ids, or give "
        "a larger --memory-limit."
    )


def _mib(size: int) -> str:
    """A size as a message shows it: GiB, MiB, or below a MiB KiB (``--memory-limit 8K`` was "0 MiB")."""
    if size >= 1 << 30:
        return f"{size / (1 << 30):.1f} GiB"
    if size >= 1 << 20:
        return f"{size / (1 << 20):,.0f} MiB"
    return f"{size / (1 << 10):,.0f} KiB" if size >= 1 << 10 else f"{size:,} B"


#: What a bucket's events and users cost to sessionize, bytes each: fitted to the planner's 700 B per
#: event on clickstreams of ten events a user, and to 1,400 B per event on data of one event a user
#: (5M users at --memory-limit 1GiB peaked at 1,382 MiB in 7 buckets; 913 MiB in 14).
BYTES_PER_BUCKET_EVENT = 622
BYTES_PER_BUCKET_USER = 778
#: The most parts a bucket is split into.
MAX_SPLIT = 64


def split_count(events: pl.DataFrame, plan: Plan) -> int:
    """How many parts a bucket's events go through the partition step in, to stay within the budget
    (1 for a budget below what any run takes: the run cannot keep to it anyway)."""
    if plan.memory_limit < minimum_memory(plan.resident_bytes) or not events.height:
        return 1
    allowed = (plan.memory_limit - BASELINE_BYTES - plan.resident_bytes) * BUCKET_SHARE
    # An estimate is enough for a cost (HyperLogLog: 6 ms for 760k ids, where n_unique took 90 ms).
    users = int(events.select(pl.col(S.USER).approx_n_unique()).item())
    cost = BYTES_PER_BUCKET_EVENT * events.height + BYTES_PER_BUCKET_USER * users
    return max(1, min(math.ceil(cost / allowed), MAX_SPLIT, users))


def sub_bucket_of(parts: int) -> pl.Expr:
    """A part of a bucket: another hash of the user id (every event of a user in one part)."""
    return (pl.col(S.USER).hash(seed=0xB0C5) % parts).cast(pl.UInt32).alias("_part")


def bucket_of(buckets: int) -> pl.Expr:
    """Each event's bucket: a hash of its user id modulo ``buckets`` (every event of a user in one)."""
    return (pl.col(S.USER).hash(seed=0x5E55) % buckets).cast(pl.UInt32)


def claim_bucket_of(buckets: int) -> pl.Expr:
    """Each event's bucket before ``--shared-session-ids merge`` gives its client session an owner: a
    hash of its client session id, else of its user id (every event of a client session id in one, so
    that the owner is found there; :func:`sessionize.core.claim_shared_session_ids`)."""
    return (claim_key().hash(seed=0x5E55) % buckets).cast(pl.UInt32)
