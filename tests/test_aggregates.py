"""``--agg NAME=FUNC(COLUMN)``: session columns of the user's own, checked against DuckDB computing the
same aggregates with SQL over sessions it builds itself (window functions, as users write them)."""

from __future__ import annotations

import csv
import json
import random
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import sessionize
from sessionize.errors import BadNumberError, MissingColumnError, SumOverflowError, UsageError
from tests.helpers import (
    EVERY_PATH_AND_SPARK,
    KEYS,
    OTHER_PATHS,
    any_path_options,
    path_options,
    path_sessions,
    run_cli,
    write_text,
)

duckdb = pytest.importorskip("duckdb")


#: Every function, numbers from text with blanks and spaces, text with nulls, one event's count.
AGGREGATES = [
    "revenue=sum(Revenue)",
    "mean_revenue=mean(revenue)",
    "low=min(revenue)",
    "high=max(revenue)",
    "priced=count(revenue)",
    "plans=n_unique(plan)",
    "first_plan=first(plan)",
    "last_plan=last(plan)",
    "purchases=count(event=Purchase)",
    "all_events=count(*)",
]
#: The same in DuckDB, over a session's events in event order (time, then input row). ``count`` reads
#: the column as it is (a value of spaces counts), the numeric functions its numbers.
SQL_AGGREGATES = """
    sum(rev) AS revenue, avg(rev) AS mean_revenue, min(rev) AS low, max(rev) AS high,
    count(revenue) AS priced, count(DISTINCT plan) AS plans,
    first(plan ORDER BY ts, rn) AS first_plan, last(plan ORDER BY ts, rn) AS last_plan,
    count(*) FILTER (WHERE lower(event) = 'purchase') AS purchases, count(*) AS all_events
"""
NUMBERS = ["12.5", "-3", "1e2", " 7 ", "0.1", "", "", "", "40", "  "]
PLANS = ["free", "pro", "team", None, None]


def generate(path: Path, seed: int = 7) -> Path:
    """Events of 60 users: visits with gaps around the timeout, ties at one instant, blanks, and users
    whose app sends its own session ids (every event of theirs has one)."""
    rng = random.Random(seed)
    rows = []
    start = datetime(2024, 5, 1, 8, tzinfo=UTC)
    for u in range(60):
        app = u % 5 == 0
        moment = start + timedelta(minutes=rng.randrange(600))
        for visit in range(1 + rng.randrange(3)):
            moment += timedelta(minutes=rng.choice((31, 45, 120)))
            for n in range(1 + rng.randrange(8)):
                if n:
                    moment += timedelta(seconds=rng.choice((0, 0, 5, 60, 600, 1700)))
                rows.append(
                    {
                        "user_id": f"u{u:02d}",
                        "timestamp": moment.isoformat().replace("+00:00", "Z"),
                        "event": rng.choice(("page_view", "purchase", "PURCHASE", "click", "")),
                        "session_id": f"app-{u}-{visit}" if app else "",
                        "url": f"https://shop.example/{rng.randrange(5)}",
                        "revenue": rng.choice(NUMBERS),
                        "plan": rng.choice(PLANS) or "",
                    }
                )
    rng.shuffle(rows)  # the input is in no order; ties keep the input's order
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path


def duckdb_sessions(path: Path) -> pl.DataFrame:
    """The sessions and their aggregates by SQL: a client session id groups its events; other events
    start a session after 30 minutes without one."""
    query = f"""
    WITH e AS (
        SELECT row_number() OVER () AS rn, user_id, CAST("timestamp" AS TIMESTAMPTZ) AS ts, event,
               session_id, plan, revenue, TRY_CAST(trim(revenue) AS DOUBLE) AS rev
        FROM read_csv('{path}', all_varchar = true, header = true)
    ),
    gaps AS (
        SELECT *, CASE WHEN ts - lag(ts) OVER w <= INTERVAL 30 MINUTE THEN 0 ELSE 1 END AS new
        FROM e WHERE session_id IS NULL
        WINDOW w AS (PARTITION BY user_id ORDER BY ts, rn)
    ),
    labelled AS (
        SELECT *, 't' || sum(new) OVER (PARTITION BY user_id ORDER BY ts, rn ROWS UNBOUNDED PRECEDING) AS k
        FROM gaps
        UNION ALL BY NAME
        SELECT *, 0 AS new, 'c' || session_id AS k FROM e WHERE session_id IS NOT NULL
    )
    SELECT user_id, min(ts) AS session_start, {SQL_AGGREGATES}
    FROM labelled GROUP BY user_id, k ORDER BY user_id, session_start
    """
    return pl.from_arrow(duckdb.sql(query).arrow())  # type: ignore[return-value]


def test_every_function_equals_duckdb(tmp_path: Path) -> None:
    source = generate(tmp_path / "events.csv")
    out = tmp_path / "sessions.parquet"
    flags = [arg for spec in AGGREGATES for arg in ("--agg", spec)]
    result = run_cli(source, "-o", out, "--no-geo", *flags)
    assert result.exit_code == 0, result.output
    table = pl.read_parquet(out)
    names = [spec.split("=")[0] for spec in AGGREGATES]
    # Appended after the built-in columns, in the order given, typed by function.
    assert table.columns == [*sessionize.schema.SESSION_SCHEMA, *names]
    assert table.schema["revenue"] == pl.Float64 and table.schema["plans"] == pl.UInt32
    assert table.schema["first_plan"] == pl.String
    ours = table.sort("user_id", "session_start").select("user_id", "session_start", *names)
    theirs = duckdb_sessions(source).with_columns(pl.col("session_start").dt.convert_time_zone("UTC"))
    assert ours.height == theirs.height > 100
    # The data has what the rules are about: nulls, sessions without a value, ties, client ids.
    assert ours.get_column("revenue").null_count() > 5 and ours.get_column("first_plan").null_count() > 5
    assert (ours.get_column("priced") < ours.get_column("all_events")).sum() > 20
    assert table.get_column("session_id").str.starts_with("app-").sum() > 5
    for name in names:
        mine, sql = ours.get_column(name), theirs.get_column(name)
        assert mine.is_null().to_list() == sql.is_null().to_list(), name
        if mine.dtype == pl.Float64:
            assert mine.drop_nulls().to_list() == pytest.approx(sql.drop_nulls().to_list(), rel=1e-12), name
        else:
            assert mine.cast(pl.String).to_list() == sql.cast(pl.String).to_list(), name


def test_first_and_last_keep_the_input_order_at_one_instant(tmp_path: Path) -> None:
    source = write_text(
        tmp_path / "events.csv",
        "user_id,timestamp,plan,revenue\n"
        "u1,2024-05-01T10:00:00Z,,\n"  # the first event has no plan: first is null, as in SQL's first()
        "u1,2024-05-01T10:00:00Z,b,1\n"
        "u1,2024-05-01T10:05:00Z,c,2\n"
        "u1,2024-05-01T10:05:00Z,d,\n"
        "u2,2024-05-01T10:00:00Z,x,\n",
    )
    table = sessionize.run(
        [source], no_geo=True, aggregates={"fp": "first(plan)", "lp": "last(plan)", "r": "sum(revenue)"}
    ).sessions.sort(KEYS)
    assert table.select("fp", "lp", "r").rows() == [(None, "d", 3.0), ("x", "x", None)]


def test_the_user_table_rolls_the_sessions_up(tmp_path: Path) -> None:
    source = generate(tmp_path / "events.csv")
    result = sessionize.run(
        [source],
        no_geo=True,
        aggregates=AGGREGATES,
        count_events="page_view",
        users_output=str(tmp_path / "users.parquet"),
    )
    sessions = result.sessions.sort("user_id", "session_number")
    users = pl.read_parquet(tmp_path / "users.parquet").sort("user_id")
    expected = sessions.group_by("user_id", maintain_order=True).agg(
        pl.col("revenue").sum().alias("sum_revenue"),
        pl.col("revenue").count().alias("sessions_with_revenue"),
        pl.col("low").min(),
        pl.col("high").max(),
        pl.col("priced").sum().cast(pl.UInt64),
        pl.col("purchases").sum().cast(pl.UInt64),
        pl.col("all_events").sum().cast(pl.UInt64),
        pl.col("page_view_count").sum().cast(pl.UInt64),
        pl.col("first_plan").first(),
        pl.col("last_plan").last(),
    )
    assert users.get_column("user_id").to_list() == expected.get_column("user_id").to_list()
    # Sums add up, a sum stays null where every session's is; min and max over the sessions; counts add
    # up; first from the first session, last from the last.
    revenue = expected.select(
        pl.when(pl.col("sessions_with_revenue") > 0).then(pl.col("sum_revenue")).alias("revenue")
    )
    assert users.get_column("revenue").to_list() == pytest.approx(revenue.to_series().to_list())
    for name in (
        "low",
        "high",
        "priced",
        "purchases",
        "all_events",
        "page_view_count",
        "first_plan",
        "last_plan",
    ):
        assert users.get_column(name).to_list() == expected.get_column(name).to_list(), name
    assert users.get_column("all_events").to_list() == users.get_column("events").to_list()
    # A mean or a distinct count does not add up from sessions: left out (docs/metrics.md).
    assert "mean_revenue" not in users.columns and "plans" not in users.columns


def test_a_value_that_is_not_a_number_fails_or_is_rejected(tmp_path: Path) -> None:
    source = write_text(
        tmp_path / "events.csv",
        "user_id,timestamp,properties.revenue\n"
        "u1,2024-05-01T10:00:00Z,3\n"
        "u1,2024-05-01T10:01:00Z,12.5 EUR\n"
        "u1,2024-05-01T10:02:00Z,inf\n"
        "u2,2024-05-01T10:00:00Z,\n",
    )
    out = tmp_path / "s.csv"
    result = run_cli(source, "-o", out, "--no-geo", "--agg", "revenue=sum(properties.revenue)")
    assert result.exit_code == 1 and not out.exists()
    message = " ".join(result.output.split())
    assert str(source) in message and "'properties.revenue'" in message
    assert "line 3: '12.5 EUR'" in message and "line 4: 'inf'" in message and "--on-invalid skip" in message
    with pytest.raises(BadNumberError, match=r"12\.5 EUR"):
        sessionize.run([source], no_geo=True, aggregates="revenue=sum(properties.revenue)")
    # Text functions read the column as it is: nothing to reject.
    assert sessionize.run([source], no_geo=True, aggregates="r=last(properties.revenue)").rejected == 0

    rejects = tmp_path / "rejects.csv"
    result = run_cli(source, "-o", out, "--no-geo", "--agg", "revenue=sum(properties.revenue)",
                     "--on-invalid", "skip", "--rejects", rejects)  # fmt: skip
    assert result.exit_code == 0, result.output
    rejected = pl.read_csv(rejects)
    assert rejected.select("source_row", "reject_reason").rows() == [(3, "bad_number"), (4, "bad_number")]
    assert pl.read_csv(out).sort("user_id").get_column("revenue").to_list() == [3.0, None]


def test_a_frame_with_a_bad_number_raises(tmp_path: Path) -> None:
    frame = pl.DataFrame(
        {"user_id": ["u1", "u1"], "timestamp": ["2024-05-01T10:00:00Z"] * 2, "v": ["1", "x"]}
    )
    with pytest.raises(BadNumberError, match="row index 1: 'x'"):
        sessionize.sessionize(frame, no_geo=True, aggregates="v=max(v)").collect()
    numbers = frame.with_columns(pl.Series("v", [1.5, 2.5]))
    table = sessionize.sessionize(numbers, no_geo=True, aggregates=["v=max(v)", "m=mean(v)"]).collect()
    assert table.select("v", "m").rows() == [(2.5, 2.0)]


def test_nested_json_paths_and_the_config_file(tmp_path: Path) -> None:
    lines = [
        {"anonymous_id": "a1", "timestamp": "2024-05-01T10:00:00Z", "event": "Product Added",
         "properties": {"revenue": 10, "currency": "EUR"}},
        {"anonymous_id": "a1", "timestamp": "2024-05-01T10:02:00Z", "event": "Order Completed",
         "properties": {"revenue": 25.5, "currency": "USD"}},
    ]  # fmt: skip
    source = write_text(tmp_path / "events.ndjson", "".join(json.dumps(line) + "\n" for line in lines))
    config = write_text(
        tmp_path / "run.toml",
        '[run]\nuser-col = "anonymous_id"\nagg = ["revenue=sum(properties.revenue)", '
        '"currencies=n_unique(Properties Currency)", "orders=count(event=order completed)"]\n',
    )
    out = tmp_path / "s.csv"
    result = run_cli(source, "--config", config, "-o", out, "--no-geo")
    assert result.exit_code == 0, result.output
    assert pl.read_csv(out).select("revenue", "currencies", "orders").rows() == [(35.5, 2, 1)]


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ("revenue", "write NAME=FUNC(COLUMN)"),
        ("revenue=summ(x)", "did you mean 'sum'"),
        ("revenue=sum()", "sum needs a column"),
        ("revenue=sum(event=buy)", "event=VALUE goes with count"),
        ("event_count=count(*)", "built-in column of the session or user table"),
        ("sessions=count(*)", "built-in column of the session or user table"),
        ("_x=count(*)", "starts with _"),
        ("is_final=count(*)", "built-in column"),
        ("session_date=first(url)", "built-in column"),
    ],
)
def test_bad_specs_are_usage_errors(spec: str, error: str, tmp_path: Path) -> None:
    source = write_text(tmp_path / "e.csv", "user_id,timestamp\nu1,2024-05-01T10:00:00Z\n")
    result = run_cli(source, "-o", tmp_path / "s.csv", "--agg", spec)
    assert result.exit_code == 2 and error in " ".join(result.output.split())


def test_names_used_twice_and_a_missing_column(tmp_path: Path) -> None:
    source = write_text(tmp_path / "e.csv", "user_id,timestamp,revenue\nu1,2024-05-01T10:00:00Z,1\n")
    with pytest.raises(UsageError, match="'n' twice"):
        sessionize.run([source], no_geo=True, aggregates=["n=count(*)", "n=sum(revenue)"])
    with pytest.raises(UsageError, match="twice"):
        sessionize.run([source], no_geo=True, aggregates="orders=count(*)", count_events="orders=Order")
    with pytest.raises(MissingColumnError, match="did you mean 'revenue'"):
        sessionize.run([source], no_geo=True, aggregates="r=sum(revenu)")


@pytest.mark.parametrize("path", OTHER_PATHS)
def test_every_path_rejects_and_aggregates_alike(tmp_path: Path, path: dict[str, object]) -> None:
    source = generate(tmp_path / "events.csv")
    text = source.read_text(encoding="utf-8").splitlines(keepends=True)
    text.insert(40, "u07,2024-05-01T12:00:00Z,purchase,,https://shop.example/,twelve,pro\n")
    source.write_text("".join(text), encoding="utf-8")
    options: dict[str, Any] = {"no_geo": True, "aggregates": AGGREGATES, "on_invalid": "skip"}
    memory = sessionize.run([source], **options)
    assert memory.rejected == 1 and memory.rows_read == memory.events_read + 1
    extra = path_options(path, tmp_path)
    other = sessionize.run([source], **options, **extra)
    figures = ("rows_read", "rejected", "events_read", "session_count")
    assert [getattr(other, name) for name in figures] == [getattr(memory, name) for name in figures]
    sessions = path_sessions(other, extra)
    assert sessions.select(memory.sessions.columns).sort(KEYS).equals(memory.sessions.sort(KEYS))


def test_the_two_summaries_of_the_core_agree(tmp_path: Path) -> None:
    """core.summarize_sessions gives every aggregate alike from labelled events (group_by) and from the
    session order, on the shuffled data with ties and client session ids."""
    from sessionize import core
    from sessionize.normalize import prepare_events
    from sessionize.schema import parse_aggregate, resolve_columns

    frame = pl.read_csv(generate(tmp_path / "events.csv"), infer_schema=False).lazy()
    aggregates = [parse_aggregate(spec) for spec in AGGREGATES]
    events = prepare_events(
        frame, columns=resolve_columns(frame.collect_schema().names()), aggregates=aggregates
    )
    tables = [
        core.summarize_sessions(core.assign_sessions(events, label=label), aggregates=aggregates)
        .collect()
        .select("user_id", "session_id", *(a.name for a in aggregates))
        for label in (True, False)
    ]
    assert tables[0].height > 100
    # Sums and means to the last bits: the two add in different orders.
    assert_frame_equal(tables[0], tables[1], check_exact=False, rel_tol=1e-12)


def test_an_aggregate_of_a_column_the_privacy_options_hide_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``first(ip)`` under --anonymize-ip would write the full address, ``first``/``min`` of the user or
    login id under --hash-user-ids the id in clear: refused before any output. Counting them is fine."""
    source = write_text(
        tmp_path / "events.csv",
        "anon_id,login,timestamp,url,ip,price\n"
        "a1,alice@example.com,2024-05-01T10:00:00Z,/a,203.0.113.77,1\n"
        "a1,,2024-05-01T10:01:00Z,/b,203.0.113.77,2\n",
    )
    monkeypatch.setenv("SALT", "s3cret")
    base = ("--user-col", "anon_id", "--stitch-col", "login", "--no-geo")
    out = tmp_path / "sessions.csv"
    for flags, agg in [
        (("--anonymize-ip",), "firstip=first(ip)"),
        (("--anonymize-ip=before-geo",), "lastip=last(IP)"),
        (("--hash-user-ids", "SALT"), "u=first(anon_id)"),
        (("--hash-user-ids", "SALT"), "who=last(login)"),
        (("--hash-user-ids", "SALT"), "low=min(anon_id)"),
        # Every session id is hashed with --require-session-id (one may stand in for a user id).
        (("--hash-user-ids", "SALT", "--session-col", "price", "--require-session-id"), "s=first(price)"),
    ]:
        result = run_cli(source, *base, *flags, "--agg", agg, "-o", out)
        assert result.exit_code == 2, (agg, result.output)
        assert f"--agg {agg.split('=')[0]}=" in result.output and "count(" in result.output
        assert not out.exists()
    counted = run_cli(source, *base, "--anonymize-ip", "--hash-user-ids", "SALT",
                      "--agg", "ips=n_unique(ip)", "--agg", "logins=count(login)", "-o", out)  # fmt: skip
    assert counted.exit_code == 0, counted.output
    assert pl.read_csv(out).select("ips", "logins").rows() == [(1, 1)]
    # Without the privacy options the values are the user's to aggregate.
    plain = run_cli(source, *base, "--agg", "firstip=first(ip)", "-o", out)
    assert plain.exit_code == 0, plain.output
    assert pl.read_csv(out)["firstip"].to_list() == ["203.0.113.77"]
    # The Python API on a frame: the same refusal.
    frame = pl.read_csv(source)
    with pytest.raises(UsageError, match="anonymize-ip"):
        sessionize.sessionize(frame, user_col="anon_id", anonymize_ip=True, aggregates=["f=first(ip)"])


def test_an_aggregate_of_any_column_a_hidden_value_is_read_from_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review of stop 57: the mixpanel preset reads the address from ``properties.ip`` or else
    ``properties.$ip``; ``first(properties.ip)`` was refused under --anonymize-ip but
    ``first(properties.$ip)`` wrote a full address. And an access log's ``auth_user`` (a login name, hashed
    in the rejects file) was written in the clear by ``first(auth_user)`` under --hash-user-ids."""
    monkeypatch.setenv("SALT", "s3cret")
    mixpanel = write_text(
        tmp_path / "events.ndjson",
        '{"event":"page","properties":{"time":1714557600,"distinct_id":"u1","$insert_id":"a1","ip":"203.0.113.77",'
        '"$current_url":"/a"}}\n'
        '{"event":"page","properties":{"time":1714557660,"distinct_id":"u2","$insert_id":"a2","$ip":"203.0.113.66",'
        '"$current_url":"/b"}}\n',
    )
    log = write_text(
        tmp_path / "access.log",
        '203.0.113.77 - alice [01/May/2024:10:00:00 +0000] "GET /a HTTP/1.1" 200 1 "-" "Firefox/120.0"\n',
    )
    out = tmp_path / "sessions.csv"
    for source, flags, agg in [
        (mixpanel, ("--preset", "mixpanel", "--anonymize-ip"), "x=first(properties.$ip)"),
        (mixpanel, ("--preset", "mixpanel", "--anonymize-ip"), "x=last(properties.ip)"),
        (log, ("--hash-user-ids", "SALT"), "login=first(auth_user)"),
    ]:
        result = run_cli(source, "--no-geo", *flags, "--agg", agg, "-o", out)
        assert result.exit_code == 2, (agg, result.output)
        assert "would write values of" in " ".join(result.output.split()), result.output
        assert not out.exists()
    counted = run_cli(log, "--no-geo", "--hash-user-ids", "SALT", "--agg", "n=n_unique(auth_user)", "-o", out)
    assert counted.exit_code == 0, counted.output
    assert pl.read_csv(out)["n"].to_list() == [1]
    plain = run_cli(log, "--no-geo", "--agg", "login=first(auth_user)", "-o", out)
    assert plain.exit_code == 0, plain.output
    assert pl.read_csv(out)["login"].to_list() == ["alice"]


def test_an_aggregate_of_a_list_column(tmp_path: Path) -> None:
    """``first``/``last`` of an NDJSON field of lists (``tags``) failed with "cannot be read as NDJSON"
    (review 53 F11): the list is its JSON text, as the rejects file writes it, and counted as a value;
    ``sum`` of it is an error naming the column."""
    source = write_text(
        tmp_path / "events.ndjson",
        '{"user_id":"u1","timestamp":"2024-05-01T10:00:00Z","url":"/a","tags":["a","b"]}\n'
        '{"user_id":"u1","timestamp":"2024-05-01T10:01:00Z","url":"/b"}\n'
        '{"user_id":"u1","timestamp":"2024-05-01T10:02:00Z","url":"/c","tags":["c"]}\n',
    )
    out = tmp_path / "sessions.csv"
    result = run_cli(source, "--no-geo", "--agg", "f=first(tags)", "--agg", "l=last(tags)", "--agg",
                     "n=n_unique(tags)", "-o", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert pl.read_csv(out).select("f", "l", "n").rows() == [('["a","b"]', '["c"]', 2)]
    result = run_cli(source, "--no-geo", "--agg", "s=sum(tags)", "-o", out)
    assert result.exit_code == 2
    assert "'tags' holds lists or objects, not numbers" in " ".join(result.output.split())


@pytest.mark.parametrize("path", [pytest.param({}, id="memory"), *OTHER_PATHS])
def test_a_copy_of_a_hidden_value_is_hidden_in_the_aggregates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: dict[str, Any]
) -> None:
    """Review 54 F3: PostHog's SDK sends the user id again as ``properties.distinct_id``;
    ``--agg who=first(properties.distinct_id)`` under ``--hash-user-ids`` wrote the id in the clear beside
    its hash (the rejects file hid the same copy). A cell of an ``--agg`` input equal to a hidden value of
    its event is hidden as that value is (the hash; the truncated address under ``--anonymize-ip``); other
    values are kept, and the counts are the same."""
    monkeypatch.setenv("SESSIONIZE_TEST_SECRET", "s3cr3t")
    lines = [
        {"distinct_id": "alice@example.com", "note": "alice@example.com", "client_ip": "81.2.69.142"},
        {"distinct_id": "anon-7", "note": "hello", "client_ip": "10.0.0.1"},
    ]
    events = [
        {
            "uuid": f"e{n}",
            "event": "$pageview",
            "distinct_id": "alice@example.com",
            "timestamp": f"2024-05-01T10:0{n}:00Z",
            "properties": {
                "$session_id": "s1",
                "$current_url": f"https://s.example/{n}",
                "$ip": "81.2.69.142",
                **line,
            },
        }
        for n, line in enumerate(lines)
    ]
    source = write_text(tmp_path / "input" / "events.ndjson", "".join(json.dumps(e) + "\n" for e in events))
    chosen = path_options(path, tmp_path)
    result = sessionize.run(
        [source],
        preset="posthog",
        no_geo=True,
        hash_user_ids="SESSIONIZE_TEST_SECRET",
        anonymize_ip=True,
        aggregates=[
            "who=first(properties.distinct_id)",
            "other=last(properties.distinct_id)",
            "said=first(properties.note)",
            "copy=first(properties.client_ip)",
            "last_ip=last(properties.client_ip)",
            "ids=n_unique(properties.distinct_id)",
        ],
        **chosen,
    )
    table = path_sessions(result, chosen)
    user = table.get_column("user_id").to_list()
    assert table.select("who", "other", "said", "copy", "last_ip", "ids").rows() == [
        (user[0], "anon-7", user[0], "81.2.69.0", "10.0.0.1", 2)
    ]
    assert user[0] != "alice@example.com" and len(user[0]) == 64


def test_an_aggregate_of_the_json_text_a_hidden_value_was_read_from_is_refused(tmp_path: Path) -> None:
    """Review 54 F3 (its F8 reproducer): PostHog's CSV export keeps ``properties`` as JSON text, from
    which the preset reads the address (``$ip``); ``--agg props=first(properties)`` under
    ``--anonymize-ip`` wrote the full address (and the user id) in that text. It is refused as
    ``first(ip)`` is; without the option it is written."""
    source = write_text(
        tmp_path / "events.csv",
        "uuid,event,distinct_id,timestamp,properties\n"
        "0190-1,$pageview,alice,2024-05-01T10:00:00Z,"
        '"{""$current_url"": ""https://s/a"", ""$ip"": ""203.0.113.7""}"\n',
    )
    options: dict[str, Any] = {"preset": "posthog", "no_geo": True, "aggregates": ["props=first(properties)"]}
    with pytest.raises(UsageError, match=r"--agg props=first\(properties\) would write values of properties"):
        sessionize.run([source], **options, anonymize_ip=True)
    written = sessionize.run([source], **options).sessions
    assert "203.0.113.7" in written.get_column("props").to_list()[0]


# --- values near the largest float (a mean or sum that overflowed to inf) -------------------------

#: The largest 64-bit float.
FLOAT_MAX = 1.7976931348623157e308
T = "2024-05-01T10:0{}:00Z"


def write_huge(path: Path) -> Path:
    """Values whose sum overflows on the way (``swing``: 1e308 + 1e308 - 1e308 is 1e308) or at the end
    while their mean is within range (``huge``), and Int64 ids at its limits (``n``), typed in Parquet."""
    rows = [
        ("u1", 1e308, 1.7e308, 2**63 - 1),
        ("u1", 1e308, 1.7e308, 2**63 - 1),
        ("u1", -1e308, None, None),
        ("u2", 1.5e308, FLOAT_MAX, -(2**63)),
        ("u2", 1.5e308, FLOAT_MAX, -(2**63)),
        ("u2", -1.5e308, FLOAT_MAX, None),
        ("u2", -1.5e308, None, None),
    ]
    pl.DataFrame(
        {
            "user_id": [r[0] for r in rows],
            "timestamp": [T.format(n) for n in range(len(rows))],
            "swing": [r[1] for r in rows],
            "huge": [r[2] for r in rows],
            "n": [r[3] for r in rows],
        },
        schema_overrides={"swing": pl.Float64, "huge": pl.Float64, "n": pl.Int64},
    ).write_parquet(path, mkdir=True)
    return path


HUGE_AGGREGATES = ["swing=sum(swing)", "mean_swing=mean(swing)", "mean_huge=mean(huge)", "big=max(huge)",
                   "total=sum(n)", "mean_n=mean(n)"]  # fmt: skip
#: What they are, by user: the exact sums and means, as the nearest float.
HUGE_EXPECTED = [
    ("u1", 1e308, 1e308 / 3, 1.7e308, 1.7e308, 2.0**64, 2.0**63),
    ("u2", 0.0, 0.0, FLOAT_MAX, FLOAT_MAX, -(2.0**64), -(2.0**63)),
]


def test_sums_and_means_of_values_near_the_largest_float_are_exact(tmp_path: Path) -> None:
    """A mean of values near the largest float (1.7e308 and 1.7e308) was ``inf``: Polars adds them up
    first, and the sum overflows; a sum that overflows on the way but not at the end (1e308 + 1e308 -
    1e308) was ``inf`` or NaN. Both are exact now; an Int64 column at its limits is summed as floats
    (no wrap-around: 2**63 - 1 twice is 2**64)."""
    source = write_huge(tmp_path / "events.parquet")
    out = tmp_path / "sessions.parquet"
    flags = [arg for spec in HUGE_AGGREGATES for arg in ("--agg", spec)]
    result = run_cli(source, "-o", out, "--no-geo", "--users-output", tmp_path / "users.parquet", *flags)
    assert result.exit_code == 0, result.output
    names = [spec.split("=")[0] for spec in HUGE_AGGREGATES]
    assert pl.read_parquet(out).sort("user_id").select("user_id", *names).rows() == HUGE_EXPECTED
    users = pl.read_parquet(tmp_path / "users.parquet").sort("user_id")
    assert users.select("swing", "total").rows() == [(e[1], e[5]) for e in HUGE_EXPECTED]
    # The Python API on a frame (a lazy table) gives the same.
    frame = pl.read_parquet(source)
    table = sessionize.sessionize(frame, no_geo=True, aggregates=HUGE_AGGREGATES).collect()
    assert table.sort("user_id").select("user_id", *names).rows() == HUGE_EXPECTED


def write_overflow(path: Path) -> Path:
    """u2's one session sums beyond the largest float; u3's two sessions (two hours apart) each within
    it, but not together."""
    return write_text(
        path,
        "user_id,timestamp,amount\n"
        f"u1,{T.format(0)},1e308\n"
        f"u2,{T.format(0)},1.5e308\n"
        f"u2,{T.format(1)},1.5e308\n"
        "u3,2024-05-01T08:00:00Z,1e308\n"
        f"u3,{T.format(0)},1e308\n",
    )


OVERFLOW = (
    "--agg total=sum(amount): the values of column 'amount' in the session of user 'u2' that starts "
    "2024-05-01T10:00:00Z add up beyond the largest 64-bit float (about 1.8e308), which no table can hold."
)
USERS_OVERFLOW = (
    "--agg total=sum(amount): the values of column 'amount' in the sessions of user 'u3' in the user "
    "table (--users-output) add up beyond the largest 64-bit float"
)


def test_a_sum_beyond_the_largest_float_is_an_error(tmp_path: Path) -> None:
    """Such a sum was written as ``inf`` (``null`` in NDJSON): a value no input had. It is an error
    naming the aggregate, the column and the session, and nothing is written; a mean of the same values
    is fine. A user table whose sum of a user's sessions goes beyond it is refused likewise."""
    source = write_overflow(tmp_path / "events.csv")
    out = tmp_path / "sessions.csv"
    result = run_cli(source, "-o", out, "--no-geo", "--agg", "total=sum(amount)")
    assert result.exit_code == 1 and not out.exists()
    message = " ".join(result.output.split())
    assert OVERFLOW in message and "mean(amount)" in message, message
    with pytest.raises(SumOverflowError, match=re.escape(OVERFLOW)):
        sessionize.run([source], no_geo=True, aggregates="total=sum(amount)")
    frame = pl.read_csv(source)
    with pytest.raises(SumOverflowError, match=re.escape(OVERFLOW)):
        sessionize.sessionize(frame, no_geo=True, aggregates="total=sum(amount)").collect()
    assert sessionize.run([source], no_geo=True, aggregates="m=mean(amount)").sessions.sort(KEYS).get_column(
        "m"
    ).to_list() == [1e308, 1.5e308, 1e308, 1e308]

    fine = write_text(
        tmp_path / "fine.csv", "".join(source.read_text().splitlines(True)[i] for i in (0, 4, 5))
    )
    users = tmp_path / "users.parquet"
    result = run_cli(fine, "-o", out, "--no-geo", "--agg", "total=sum(amount)", "--users-output", users)
    assert result.exit_code == 1 and not out.exists() and not users.exists()
    assert USERS_OVERFLOW in " ".join(result.output.split())
    assert run_cli(fine, "-o", out, "--no-geo", "--agg", "total=sum(amount)").exit_code == 0


@pytest.mark.parametrize("path", EVERY_PATH_AND_SPARK)
def test_every_path_sums_near_the_largest_float_alike(
    tmp_path: Path, path: dict[str, Any], request: pytest.FixtureRequest
) -> None:
    """The sums and means above on every engine path, and the same error for a sum beyond the largest
    float (an executor's or worker's error raised as itself), the user table's too."""
    source = write_huge(tmp_path / "huge" / "events.parquet")
    options = any_path_options(path, tmp_path / "huge", request)
    result = sessionize.run([source], no_geo=True, aggregates=HUGE_AGGREGATES, **options)
    table = path_sessions(result, options)
    names = [spec.split("=")[0] for spec in HUGE_AGGREGATES]
    assert table.sort("user_id").select("user_id", *names).rows() == HUGE_EXPECTED

    source = write_overflow(tmp_path / "over" / "events.csv")
    options = any_path_options(path, tmp_path / "over", request)
    with pytest.raises(SumOverflowError, match=re.escape(OVERFLOW)):
        sessionize.run([source], no_geo=True, aggregates="total=sum(amount)", **options)
    users = tmp_path / "users.parquet"
    fine = write_text(
        tmp_path / "fine" / "e.csv", "".join(source.read_text().splitlines(True)[i] for i in (0, 4, 5))
    )
    options = any_path_options(path, tmp_path / "fine", request)
    with pytest.raises(SumOverflowError, match=re.escape(USERS_OVERFLOW)):
        sessionize.run(
            [fine], no_geo=True, aggregates="total=sum(amount)", users_output=str(users), **options
        )
    assert not users.exists()
