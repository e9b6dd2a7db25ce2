"""``--unnest-params``: key/value arrays (GA4's ``event_params``) become columns (sessionize/io/params.py).

The input is written here in the shape of GA4's BigQuery export schema
(https://support.google.com/analytics/answer/7029846: ``event_timestamp`` in microseconds,
``user_pseudo_id``, ``event_name``, ``event_params`` a repeated record of ``key`` and ``value`` with
``string_value``, ``int_value``, ``float_value``, ``double_value``), as NDJSON and as Parquet.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import sessionize
from sessionize.errors import SessionizeWarning
from sessionize.io import params
from tests.helpers import EVERY_PATH, KEYS, path_options, path_sessions, run_cli

SITE = "https://shop.example.com"
T0 = 1_714_557_600_000_000  # 2024-05-01T10:00:00Z in microseconds
MIN = 60_000_000


def value(v: str | int | float | None) -> dict[str, Any]:
    """GA4's value record: exactly one field set."""
    return {
        "string_value": v if isinstance(v, str) else None,
        "int_value": v if isinstance(v, int) else None,
        "float_value": None,
        "double_value": v if isinstance(v, float) else None,
    }


def event(user: str, at: int, name: str, **event_params: str | int | float | None) -> dict[str, Any]:
    return {
        "event_timestamp": T0 + at,
        "event_name": name,
        "user_pseudo_id": user,
        "event_params": [{"key": k, "value": value(v)} for k, v in event_params.items()],
    }


EVENTS = [
    # u1's session 100: lands from Google on /a with a newsletter campaign, then a scroll and /b.
    event("u1", 0, "page_view", page_location=f"{SITE}/a?utm_source=news&utm_medium=email",
          page_referrer="https://www.google.com/", ga_session_id=100, ga_session_number=1),
    event("u1", 1 * MIN, "scroll", page_location=f"{SITE}/a", ga_session_id=100, engagement_time_msec=5300),
    event("u1", 2 * MIN, "page_view", page_location=f"{SITE}/b", page_referrer=f"{SITE}/a",
          ga_session_id=100, ga_session_number=1),
    # u1's session 200, two hours later, direct.
    event("u1", 120 * MIN, "page_view", page_location=f"{SITE}/c", ga_session_id=200, ga_session_number=2),
    # u2: one session, a float parameter and no referrer.
    event("u2", 5 * MIN, "page_view", page_location=f"{SITE}/d", ga_session_id=300, value=12.5),
    event("u2", 6 * MIN, "purchase", page_location=f"{SITE}/d", ga_session_id=300, value=99.0),
]  # fmt: skip

FLAGS = [
    "--unnest-params", "event_params",
    "--url-col", "event_params.page_location",
    "--referrer-col", "event_params.page_referrer",
    "--session-col", "event_params.ga_session_id",
]  # fmt: skip
OPTIONS: dict[str, Any] = {
    "unnest_params": "event_params",
    "url_col": "event_params.page_location",
    "referrer_col": "event_params.page_referrer",
    "session_col": "event_params.ga_session_id",
}


def write_ndjson(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    pl.DataFrame(rows, infer_schema_length=None).write_parquet(path)
    return path


@pytest.mark.parametrize("fmt", ["ndjson", "parquet"])
def test_ga4_event_params_become_columns(tmp_path: Path, fmt: str) -> None:
    write = write_ndjson if fmt == "ndjson" else write_parquet
    source = write(tmp_path / f"events.{fmt}", EVENTS)
    out = tmp_path / "sessions.csv"
    result = run_cli(source, "-o", out, "--no-geo", "-q", *FLAGS)
    assert result.exit_code == 0, result.output
    table = pl.read_csv(out, infer_schema=False).sort("user_id", "session_start")
    got = table.select(
        "user_id", "session_id", "landing_page", "exit_page", "traffic_source", "utm_source", "channel",
        "event_count", "pageview_count",
    ).rows()  # fmt: skip
    assert got == [
        ("u1", "100", f"{SITE}/a?utm_source=news&utm_medium=email", f"{SITE}/b", "google", "news", "Email",
         "3", "2"),
        ("u1", "200", f"{SITE}/c", f"{SITE}/c", "direct", None, "Direct", "1", "1"),
        ("u2", "300", f"{SITE}/d", f"{SITE}/d", "direct", None, "Direct", "2", "1"),
    ]  # fmt: skip


def test_plain_key_value_lists_and_first_value_of_a_repeated_key(tmp_path: Path) -> None:
    rows: list[dict[str, Any]] = [
        {"uid": "a", "ts": "2024-05-01T10:00:00Z", "event": "page_view",
         "props": [{"key": "url", "value": f"{SITE}/1"}, {"key": "url", "value": f"{SITE}/ignored"}]},
        {"uid": "a", "ts": "2024-05-01T10:05:00Z", "event": "page_view", "props": []},
        {"uid": "a", "ts": "2024-05-01T10:06:00Z", "event": "page_view", "props": None},
        {"uid": "a", "ts": "2024-05-01T10:07:00Z", "event": "page_view",
         "props": [{"key": "url", "value": f"{SITE}/4"}]},
    ]  # fmt: skip
    source = write_ndjson(tmp_path / "events.ndjson", rows)
    result = sessionize.run([source], unnest_params="props", url_col="props.url", no_geo=True)
    row = result.sessions.row(0, named=True)
    assert (row["landing_page"], row["exit_page"], row["pageview_count"]) == (f"{SITE}/1", f"{SITE}/4", 4)


def test_bad_column_names_are_errors_naming_the_file_and_the_fix(tmp_path: Path) -> None:
    source = write_ndjson(tmp_path / "events.ndjson", EVENTS)
    missing = run_cli(source, "--no-geo", "--unnest-params", "params")
    assert missing.exit_code != 0
    assert "events.ndjson" in missing.output and "--unnest-params 'params': no such column" in missing.output
    wrong = run_cli(source, "--no-geo", "--unnest-params", "event_name")
    assert wrong.exit_code != 0
    assert "not a list of {key, value} structs" in wrong.output


def test_hostile_number_of_keys_is_capped_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client can send any keys: only the most frequent MAX_KEYS become columns, the rest are named in
    a warning; the keys the run needs, present on every event, are kept."""
    monkeypatch.setattr(params, "MAX_KEYS", 20)
    rows = [
        event("u1", n * MIN, "page_view", page_location=f"{SITE}/{n}", ga_session_id=1, **{f"junk{n}": n})
        for n in range(200)
    ]
    source = write_ndjson(tmp_path / "events.ndjson", rows)
    with pytest.warns(SessionizeWarning, match=r"202 distinct keys; 22 became columns .* 180 did not"):
        result = sessionize.run([source], no_geo=True, **OPTIONS)
    assert result.sessions.height == 1
    assert result.sessions.row(0, named=True)["exit_page"] == f"{SITE}/199"


def test_a_key_whose_column_exists_keeps_the_top_level_column(tmp_path: Path) -> None:
    rows = [dict(e, event_params_page_location=f"{SITE}/top") for e in EVENTS]
    source = write_ndjson(tmp_path / "events.ndjson", rows)
    result = sessionize.run([source], no_geo=True, **OPTIONS)
    assert set(result.sessions.get_column("landing_page")) == {f"{SITE}/top"}


def test_rejects_hold_the_unnested_columns(tmp_path: Path) -> None:
    rows = [*EVENTS, {**event("u3", 0, "page_view", page_location=f"{SITE}/x"), "event_timestamp": "soon"}]
    source = write_ndjson(tmp_path / "events.ndjson", rows)
    rejects = tmp_path / "rejects.csv"
    result = sessionize.run([source], no_geo=True, on_invalid="skip", rejects=str(rejects), **OPTIONS)
    assert (result.rows_read, result.events_read, result.rejected) == (7, 6, 1)
    rejected = pl.read_csv(rejects, infer_schema=False)
    # The list as JSON text, as it came: not one column per (client-chosen) key.
    (params_text,) = rejected.get_column("event_params").to_list()
    assert json.loads(params_text) == [{"key": "page_location", "value": value(f"{SITE}/x")}]
    assert not [name for name in rejected.columns if name.startswith("event_params_")]


HAS_DASK = all(importlib.util.find_spec(name) is not None for name in ("distributed", "dask"))


@pytest.mark.slow
def test_every_engine_path_gives_the_in_memory_sessions(tmp_path: Path) -> None:
    first = write_parquet(tmp_path / "day1.parquet", EVENTS[:3])
    second = write_ndjson(tmp_path / "day2.ndjson", EVENTS[3:])
    files = [str(first), str(second)]
    expected = sessionize.run(files, no_geo=True, **OPTIONS).sessions.sort(KEYS)
    assert expected.height == 3

    target = tmp_path / "buckets.parquet"
    sessionize.run(files, no_geo=True, buckets=3, temp_dir=str(tmp_path), output=str(target), **OPTIONS)
    assert_frame_equal(pl.read_parquet(target).sort(KEYS), expected)

    state, out = tmp_path / "state", tmp_path / "out"
    for batch in ([files[0]], [files[1]]):
        sessionize.run(batch, no_geo=True, state=str(state), output_dir=str(out), **OPTIONS)
    written = pl.read_parquet(out / "**" / "*.parquet", hive_partitioning=True)
    assert_frame_equal(written.drop("is_final", "session_date").sort(KEYS), expected)

    if HAS_DASK:
        distributed = pytest.importorskip("distributed")
        with distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0"
        ) as c:
            directory = tmp_path / "dask"
            sessionize.run(
                files,
                no_geo=True,
                engine="dask",
                scheduler=c.scheduler_address,
                output=str(directory),
                **OPTIONS,
            )
        assert_frame_equal(pl.read_parquet(directory / "part-*.parquet").sort(KEYS), expected)


# --- a whole double is the integer's text (review 59 F5) -----------------------------------------------

#: GA4's ga_session_id of one session: an int_value on most events, a double_value on one (a Measurement
#: Protocol number), and a parameter sent as a whole double by one event and as an integer by the other.
SESSION = 1_714_730_400
WHOLE_DOUBLES = [
    event("e1", 0, "page_view", page_location=f"{SITE}/", ga_session_id=SESSION, lead=99.0),
    event("e1", 20_000_000, "generate_lead", page_location=f"{SITE}/", ga_session_id=float(SESSION), lead=99),
    event("e1", 30_000_000, "page_view", page_location=f"{SITE}/x", ga_session_id=SESSION, price=12.5),
    event("e2", 0, "page_view", page_location=f"{SITE}/", ga_session_id=float(SESSION + 1), lead=99.0),
]  # fmt: skip
#: What every read of them gives: one session of e1's three events, its id and its whole double as the
#: integer's text (one distinct value of `lead`), a fraction as it is.
WHOLE_DOUBLES_SESSIONS = [
    ("e1", str(SESSION), 3, "99", 1, "12.5"),
    ("e2", str(SESSION + 1), 1, "99", 1, None),
]
WHOLE_DOUBLES_OPTIONS: dict[str, Any] = {
    "preset": "ga4",
    "no_geo": True,
    "aggregates": [
        "first_lead=first(event_params.lead)",
        "leads=n_unique(event_params.lead)",
        "price=max(event_params.price)",
    ],
}


def write_bigquery_ndjson(path: Path, rows: list[dict[str, Any]]) -> Path:
    """NDJSON as BigQuery exports a table: its INT64 values as strings, FLOAT64 ones as numbers."""

    def exported(item: Any) -> Any:
        if isinstance(item, dict):
            return {k: exported(v) for k, v in item.items()}
        if isinstance(item, list):
            return [exported(v) for v in item]
        return str(item) if isinstance(item, int) and not isinstance(item, bool) else item

    return write_ndjson(path, [exported(row) for row in rows])


def whole_double_rows(table: pl.DataFrame) -> list[tuple[Any, ...]]:
    rows = table.sort("user_id").select(
        "user_id", "session_id", "event_count", "first_lead", "leads", "price"
    )
    return [(*row[:5], None if row[5] is None else f"{row[5]:g}") for row in rows.rows()]


@pytest.fixture(params=["ndjson", "parquet"])
def whole_doubles(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """:data:`WHOLE_DOUBLES` as GA4's BigQuery export: NDJSON (BigQuery's JSON) or Parquet."""
    if request.param == "ndjson":
        return write_bigquery_ndjson(tmp_path / "events.ndjson", WHOLE_DOUBLES)
    return write_parquet(tmp_path / "events.parquet", WHOLE_DOUBLES)


def test_a_whole_double_session_id_is_the_int_value_session(whole_doubles: Path) -> None:
    table = sessionize.run([str(whole_doubles)], **WHOLE_DOUBLES_OPTIONS).sessions
    assert whole_double_rows(table) == WHOLE_DOUBLES_SESSIONS


def test_a_whole_double_parameter_reads_as_its_integer_in_a_frame(whole_doubles: Path) -> None:
    """sessionize.sessionize(frame, preset="ga4") unnests in memory alike."""
    read = pl.read_ndjson if whole_doubles.suffix == ".ndjson" else pl.read_parquet
    frame = read(whole_doubles)
    table = sessionize.sessionize(frame, **WHOLE_DOUBLES_OPTIONS).collect()
    assert whole_double_rows(table) == WHOLE_DOUBLES_SESSIONS


def test_the_cli_writes_a_whole_double_session_id_as_an_integer(tmp_path: Path) -> None:
    """The reviewer's run: `sessionize run ga4.ndjson --preset ga4`."""
    source = write_bigquery_ndjson(tmp_path / "events.ndjson", WHOLE_DOUBLES)
    out = tmp_path / "sessions.csv"
    result = run_cli(source, "--preset", "ga4", "--no-geo", "-q", "-o", out)
    assert result.exit_code == 0, result.output
    table = pl.read_csv(out, infer_schema=False).sort("user_id")
    assert table.select("session_id", "event_count").rows() == [(str(SESSION), "3"), (str(SESSION + 1), "1")]


@pytest.mark.slow
@pytest.mark.parametrize("path", EVERY_PATH)
def test_every_engine_path_reads_a_whole_double_as_its_integer(
    whole_doubles: Path, path: dict[str, Any], tmp_path: Path
) -> None:
    options = path_options(path, tmp_path)
    result = sessionize.run([str(whole_doubles)], **WHOLE_DOUBLES_OPTIONS, **options)
    assert whole_double_rows(path_sessions(result, options)) == WHOLE_DOUBLES_SESSIONS


@pytest.mark.slow
def test_spark_reads_a_whole_double_as_its_integer(
    whole_doubles: Path, tmp_path: Path, spark_session: Any
) -> None:
    target = tmp_path / "sessions"
    sessionize.run(
        [str(whole_doubles)], **WHOLE_DOUBLES_OPTIONS, spark=spark_session, partitions=2, output=str(target)
    )
    assert whole_double_rows(pl.read_parquet(sorted(target.glob("part-*.parquet")))) == WHOLE_DOUBLES_SESSIONS


# --- NaN and infinities are no value (review 59) ------------------------------------------------------

#: One user's three page views, the first two hours before the others, whose ga_session_id is a NaN
#: double_value, and whose price is an infinity on two of them.
NAN = float("nan")
NOT_NUMBERS = [
    event("n1", 0, "page_view", page_location=f"{SITE}/a", ga_session_id=NAN, price=float("inf")),
    event("n1", 120 * MIN, "page_view", page_location=f"{SITE}/b", ga_session_id=NAN, price=-float("inf")),
    event("n1", 121 * MIN, "page_view", page_location=f"{SITE}/c", ga_session_id=NAN, price=12.5),
]
#: The same events without those values.
WITHOUT_THEM = [
    event("n1", 0, "page_view", page_location=f"{SITE}/a"),
    event("n1", 120 * MIN, "page_view", page_location=f"{SITE}/b"),
    event("n1", 121 * MIN, "page_view", page_location=f"{SITE}/c", price=12.5),
]


def test_a_nan_or_infinite_double_value_is_no_value(tmp_path: Path) -> None:
    """A NaN ``double_value`` was the text ``NaN``: every such event of a user one session of id "NaN",
    however far apart (a NaN or infinite float column is null, and was not here), and an infinite price
    the maximum. They are no value, as in a float column: the sessions of the same events without them."""
    options: dict[str, Any] = {
        "preset": "ga4",
        "no_geo": True,
        "aggregates": ["price=max(event_params.price)"],
    }
    got = sessionize.run([str(write_parquet(tmp_path / "nan.parquet", NOT_NUMBERS))], **options).sessions
    expected = sessionize.run(
        [str(write_parquet(tmp_path / "none.parquet", WITHOUT_THEM))], **options
    ).sessions
    assert got.height == 2
    assert_frame_equal(got.sort(KEYS), expected.sort(KEYS))
    assert got.sort("session_start").get_column("price").to_list() == [None, 12.5]
