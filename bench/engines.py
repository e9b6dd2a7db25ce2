"""The engines that ``bench/compare.py`` times, each run as its own child process.

Usage (from the repository root)::

    python bench/engines.py ENGINE INPUT.parquet OUTPUT.parquet

Every engine reads the events (``user_id``, ``timestamp``, ``event``, ``url``, ``referrer``, ``ip``) from
Parquet and writes the core session columns to Parquet, with the session rule of ``sessionize``:

* events are ordered by user, then time, then their row in the file (events at the same instant keep
  their input order);
* a user's first event starts a session, and so does every event more than 30 minutes after the user's
  previous one (a gap of exactly 30 minutes stays in the session);
* a page view is an event named ``page_view``, ``pageview``, ``$pageview`` or ``page``, case-insensitive
  (a null event name is not a page view);
* ``landing_page`` / ``exit_page``: URL of the first / last page view (null without a page view);
  ``referrer``: of the landing page view, or of the first event when there is no page view; ``ip``: of
  the first event. A null value there is a value (a null referrer means direct): it is never replaced by
  a later event's.

The SQL engines (DuckDB, chDB, Apache DataFusion) run one statement of the same shape: LAG over each
user's events, a running SUM of the new-session flag, GROUP BY session with first/last values that keep
nulls.

Output columns: ``user_id, session_start, session_end, duration_s, event_count, pageview_count,
landing_page, exit_page, referrer, ip`` (``sessionize-core`` writes its whole core table). The floors
(``polars-read``, ``polars-sort``) write nothing.

Only the standard library is imported at the top: each engine imports its own library, so no child
pays for another's imports.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Final

PAGEVIEW_EVENTS: Final = ("page_view", "pageview", "$pageview", "page")
TIMEOUT_US: Final = 30 * 60 * 1_000_000
CORE_COLUMNS: Final = (
    "user_id",
    "session_start",
    "session_end",
    "duration_s",
    "event_count",
    "pageview_count",
    "landing_page",
    "exit_page",
    "referrer",
    "ip",
)


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def is_csv(source: str | Path) -> bool:
    return str(source).endswith(".csv")


def duckdb_sql(source: str, target: str) -> str:
    """The DuckDB statement: LAG over each user's events, a running SUM of the new-session flag, then a
    GROUP BY session with ``arg_min_null``/``arg_max_null`` (plain ``arg_min`` skips null values, which
    would give a later event's referrer when the landing page view has none).

    A CSV input is read by ``read_csv`` (types detected, so ``timestamp`` is a timestamp); its row
    number, which ``read_csv`` does not give, is ``row_number() OVER ()`` in the order read (DuckDB
    keeps insertion order by default)."""
    pageviews = ", ".join(_sql_string(name) for name in PAGEVIEW_EVENTS)
    if is_csv(source):
        relation = (
            f"(SELECT *, row_number() OVER () - 1 AS file_row_number FROM read_csv({_sql_string(source)}))"
        )
    else:
        relation = f"read_parquet({_sql_string(source)}, file_row_number = true)"
    return f"""
COPY (
    WITH events AS (
        SELECT user_id, "timestamp" AS ts, epoch_us("timestamp") AS t_us, url, referrer, ip,
               coalesce(lower(event) IN ({pageviews}), false) AS is_pv,
               file_row_number AS rn
        FROM {relation}
    ),
    gaps AS (
        SELECT *, t_us - lag(t_us) OVER w AS gap_us, row_number() OVER w AS pos
        FROM events
        WINDOW w AS (PARTITION BY user_id ORDER BY t_us, rn)
    ),
    numbered AS (
        SELECT *,
               sum(CASE WHEN gap_us IS NULL OR gap_us > {TIMEOUT_US} THEN 1 ELSE 0 END)
                   OVER (PARTITION BY user_id ORDER BY pos ROWS UNBOUNDED PRECEDING) AS session_idx
        FROM gaps
    )
    SELECT user_id,
           min(ts) AS session_start,
           max(ts) AS session_end,
           (max(t_us) - min(t_us)) / 1e6 AS duration_s,
           count(*) AS event_count,
           count(*) FILTER (WHERE is_pv) AS pageview_count,
           arg_min_null(url, pos) FILTER (WHERE is_pv) AS landing_page,
           arg_max_null(url, pos) FILTER (WHERE is_pv) AS exit_page,
           CASE WHEN bool_or(is_pv) THEN arg_min_null(referrer, pos) FILTER (WHERE is_pv)
                ELSE arg_min_null(referrer, pos) END AS referrer,
           arg_min_null(ip, pos) AS ip
    FROM numbered
    GROUP BY user_id, session_idx
) TO {_sql_string(target)} (FORMAT parquet)
"""


def run_duckdb(source: Path, target: Path) -> None:
    import duckdb

    duckdb.sql(duckdb_sql(str(source), str(target)))


def chdb_sql(source: str, target: str) -> str:
    """The DuckDB statement's shape in ClickHouse SQL (chDB is ClickHouse in process).

    ``_row_number`` is the row in the file (Parquet and CSV alike); ``lagInFrame`` is LAG; the first
    event of a user starts a session (``pos = 1``), as LAG's null does in the DuckDB statement.
    ``argMin(tuple(x), pos).1`` keeps a null ``x`` (plain ``argMin`` skips nulls, as DuckDB's ``arg_min``
    does). CSV: the columns are given (no type detection), timestamps parsed as ISO 8601 with ``Z``, and
    values are not trimmed (ClickHouse trims CSV fields by default; DuckDB and ``sessionize`` do not).
    """
    pv = ", ".join(_sql_string(n) for n in PAGEVIEW_EVENTS)
    if is_csv(source):
        structure = (
            "user_id String, timestamp DateTime64(6, 'UTC'), event Nullable(String), "
            "url Nullable(String), referrer Nullable(String), ip Nullable(String)"
        )
        relation = f"file({_sql_string(source)}, 'CSVWithNames', {_sql_string(structure)})"
    else:
        relation = f"file({_sql_string(source)}, 'Parquet')"
    return f"""
INSERT INTO FUNCTION file({_sql_string(target)}, 'Parquet')
WITH events AS (
    SELECT user_id, "timestamp" AS ts, toUnixTimestamp64Micro("timestamp") AS t_us, url, referrer, ip,
           coalesce(lower(event) IN ({pv}), false) AS is_pv, _row_number AS rn
    FROM {relation}
),
gaps AS (
    SELECT *, row_number() OVER w AS pos, t_us - lagInFrame(t_us) OVER w AS gap_us
    FROM events
    WINDOW w AS (PARTITION BY user_id ORDER BY t_us, rn ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
),
numbered AS (
    SELECT *, sum(if(pos = 1 OR gap_us > {TIMEOUT_US}, 1, 0))
                  OVER (PARTITION BY user_id ORDER BY pos ROWS UNBOUNDED PRECEDING) AS session_idx
    FROM gaps
)
SELECT user_id,
       min(ts) AS session_start,
       max(ts) AS session_end,
       (max(t_us) - min(t_us)) / 1e6 AS duration_s,
       count() AS event_count,
       countIf(is_pv) AS pageview_count,
       argMinIf(tuple(url), pos, is_pv).1 AS landing_page,
       argMaxIf(tuple(url), pos, is_pv).1 AS exit_page,
       if(countIf(is_pv) > 0, argMinIf(tuple(referrer), pos, is_pv).1,
          argMin(tuple(referrer), pos).1) AS referrer,
       argMin(tuple(ip), pos).1 AS ip
FROM numbered
GROUP BY user_id, session_idx
SETTINGS engine_file_truncate_on_insert = 1, input_format_csv_trim_whitespaces = 0,
         date_time_input_format = 'best_effort'
"""


def run_chdb(source: Path, target: Path) -> None:
    import chdb  # type: ignore[import-untyped]

    chdb.query(chdb_sql(str(source), str(target)))


def datafusion_sql(csv: bool) -> str:
    """The DuckDB statement's shape in Apache DataFusion's SQL, over the table ``events_file``.

    The row in the file is ``file_row_index()`` for Parquet (it must be taken in a projection of plain
    columns, hence ``raw``); for CSV, ``row_number() OVER ()`` over a scan that is not split
    (``repartition_file_scans`` off, so rows arrive in file order). ``first_value(x ORDER BY pos)``
    keeps nulls.
    """
    pv = ", ".join(_sql_string(n) for n in PAGEVIEW_EVENTS)
    rn = "row_number() OVER ()" if csv else "file_row_index()"
    return f"""
WITH raw AS (
    SELECT user_id, "timestamp", event, url, referrer, ip, {rn} AS rn FROM events_file
),
events AS (
    SELECT user_id, "timestamp" AS ts, arrow_cast("timestamp", 'Int64') AS t_us, url, referrer, ip,
           coalesce(lower(event) IN ({pv}), false) AS is_pv, rn
    FROM raw
),
gaps AS (
    SELECT *, t_us - lag(t_us) OVER w AS gap_us, row_number() OVER w AS pos
    FROM events
    WINDOW w AS (PARTITION BY user_id ORDER BY t_us, rn)
),
numbered AS (
    SELECT *, sum(CASE WHEN gap_us IS NULL OR gap_us > {TIMEOUT_US} THEN 1 ELSE 0 END)
                  OVER (PARTITION BY user_id ORDER BY pos ROWS UNBOUNDED PRECEDING) AS session_idx
    FROM gaps
)
SELECT user_id,
       min(ts) AS session_start,
       max(ts) AS session_end,
       (max(t_us) - min(t_us)) / 1e6 AS duration_s,
       count(*) AS event_count,
       count(*) FILTER (WHERE is_pv) AS pageview_count,
       first_value(url ORDER BY pos) FILTER (WHERE is_pv) AS landing_page,
       last_value(url ORDER BY pos) FILTER (WHERE is_pv) AS exit_page,
       CASE WHEN bool_or(is_pv) THEN first_value(referrer ORDER BY pos) FILTER (WHERE is_pv)
            ELSE first_value(referrer ORDER BY pos) END AS referrer,
       first_value(ip ORDER BY pos) AS ip
FROM numbered
GROUP BY user_id, session_idx
"""


def run_datafusion(source: Path, target: Path) -> None:
    import datafusion
    import pyarrow as pa

    config = datafusion.SessionConfig()
    if is_csv(source):
        config = config.set("datafusion.optimizer.repartition_file_scans", "false")
    ctx = datafusion.SessionContext(config)
    if is_csv(source):
        schema = pa.schema(
            [
                ("user_id", pa.string()),
                ("timestamp", pa.timestamp("us", "UTC")),
                ("event", pa.string()),
                ("url", pa.string()),
                ("referrer", pa.string()),
                ("ip", pa.string()),
            ]
        )
        ctx.register_csv("events_file", str(source), schema=schema)
    else:
        ctx.register_parquet("events_file", str(source))
    ctx.sql(datafusion_sql(is_csv(source))).write_parquet(str(target))


def run_pandas(source: Path, target: Path) -> None:
    """Sort, diff, cumsum, then one groupby for the counts and first/last rows for the rest."""
    import numpy as np
    import pandas as pd  # type: ignore[import-untyped]

    columns = ["user_id", "timestamp", "event", "url", "referrer", "ip"]
    if is_csv(source):
        events = pd.read_csv(source, usecols=columns, dtype=str, keep_default_na=False, na_values=[""])
        events["timestamp"] = pd.to_datetime(events["timestamp"], format="ISO8601", utc=True)
    else:
        events = pd.read_parquet(source, columns=columns)
    events["_row"] = np.arange(len(events))
    events = events.sort_values(["user_id", "timestamp", "_row"], ignore_index=True)
    user, ts = events["user_id"], events["timestamp"]
    is_new = (user != user.shift()) | ((ts - ts.shift()) > pd.Timedelta(microseconds=TIMEOUT_US))
    events["_session"] = is_new.cumsum()
    events["_pv"] = events["event"].str.lower().isin(PAGEVIEW_EVENTS).fillna(False).astype(bool)

    sessions = events.groupby("_session", sort=False).agg(
        user_id=("user_id", "first"),
        session_start=("timestamp", "min"),
        session_end=("timestamp", "max"),
        event_count=("timestamp", "size"),
        pageview_count=("_pv", "sum"),
    )
    # Rows are in session order: the first row of a session is where it starts; drop_duplicates keeps
    # null values (groupby's first() would skip them).
    first = events.loc[is_new.to_numpy(), ["_session", "referrer", "ip"]].set_index("_session")
    pageviews = events.loc[events["_pv"].to_numpy(), ["_session", "url", "referrer"]]
    first_pv = pageviews.drop_duplicates("_session", keep="first").set_index("_session")
    last_pv = pageviews.drop_duplicates("_session", keep="last").set_index("_session")
    index = sessions.index
    has_pv = sessions["pageview_count"] > 0
    duration_us = (sessions["session_end"] - sessions["session_start"]).to_numpy().astype("timedelta64[us]")
    sessions["duration_s"] = (duration_us.astype(np.int64) / 1e6).round(6)
    sessions["landing_page"] = first_pv["url"].reindex(index)
    sessions["exit_page"] = last_pv["url"].reindex(index)
    sessions["referrer"] = first_pv["referrer"].reindex(index).where(has_pv, first["referrer"].reindex(index))
    sessions["ip"] = first["ip"].reindex(index)
    sessions.reset_index(drop=True)[list(CORE_COLUMNS)].to_parquet(target, index=False)


def run_sessionize_core(source: Path, target: Path) -> None:
    """The library's core steps only (no validation, attribution or geo), collected in memory as
    ``sessionize run`` does."""
    import polars as pl

    import sessionize

    # CSV as sessionize reads it: every column as text, parsed by prepare_events.
    events = (pl.read_csv(source, infer_schema=False) if is_csv(source) else pl.read_parquet(source)).lazy()
    columns = sessionize.resolve_columns(events.collect_schema().names())
    prepared = sessionize.prepare_events(events, columns=columns)
    table = sessionize.summarize_sessions(sessionize.assign_sessions(prepared, label=False))
    # Written as `sessionize run` writes Parquet (zstd level 1).
    sessionize.io.write_parquet(table.collect(engine="in-memory"), target)


def run_polars_read(source: Path, target: Path) -> None:
    import polars as pl

    pl.read_csv(source, infer_schema=False) if is_csv(source) else pl.read_parquet(source)


def run_polars_sort(source: Path, target: Path) -> None:
    """Read, then a stable sort by (user_id, timestamp): ties keep their input order."""
    import polars as pl

    # A CSV's timestamps are ISO 8601 text of one width and zone (Z): they sort as the times do.
    events = pl.read_csv(source, infer_schema=False) if is_csv(source) else pl.read_parquet(source)
    events.sort("user_id", "timestamp", maintain_order=True)


ENGINES: Final[dict[str, Callable[[Path, Path], None]]] = {
    "duckdb": run_duckdb,
    "chdb": run_chdb,
    "datafusion": run_datafusion,
    "pandas": run_pandas,
    "sessionize-core": run_sessionize_core,
    "polars-read": run_polars_read,
    "polars-sort": run_polars_sort,
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3 or args[0] not in ENGINES:
        print(f"usage: engines.py {{{','.join(ENGINES)}}} INPUT.parquet OUTPUT.parquet", file=sys.stderr)
        return 2
    ENGINES[args[0]](Path(args[1]), Path(args[2]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
