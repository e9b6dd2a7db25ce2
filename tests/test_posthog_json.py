"""PostHog's ``properties`` as one JSON-encoded text column (its S3/batch Parquet export, CSV and SQL
exports of the events table): the same sessions as the same events with ``properties`` nested (its
NDJSON export), on every engine path, and for a frame (see sessionize/io/jsontext.py).

Before, the ``posthog`` preset found none of its columns in such an export and made every session Direct,
with no landing page and no ``$session_id``, without a warning.
"""

from __future__ import annotations

import json
import random
import time
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import sessionize
from sessionize import io as sio
from sessionize.engines import budget as buckets_module
from sessionize.errors import SessionizeWarning
from sessionize.io.jsontext import json_text_columns
from tests.helpers import EVERY_PATH, KEYS, path_options, path_sessions, run_cli

SITE = "https://shop.example.com"
START = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
#: The two files of each export hold the events before and after this instant.
CUT = datetime(2024, 5, 1, 20, 0, tzinfo=UTC)
AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
)
LANDINGS = (
    "/",
    "/pricing?utm_source=newsletter&utm_medium=email&utm_campaign=may",
    "/features?gclid=abc123",
    "/?utm_source=facebook&utm_medium=paid_social",
    "/blog/launch",
)
REFERRERS = (
    "$direct",
    "https://www.google.com/",
    "https://www.bing.com/search?q=x",
    "https://news.example.org/",
)
PAGES = ("/", "/pricing", "/features", "/docs", "/signup")
#: The event whose properties are not valid JSON in the text exports (absent in the nested one).
BROKEN = "e0007"
#: Its text in the exports: a JSON object cut short.
BROKEN_TEXT = '{"$session_id": "never-read", "$current_url": "https://shop.example.com/'
#: An event whose properties are empty (a null in Parquet, an empty field in CSV; absent when nested).
EMPTY = "e0011"


def generate() -> list[dict[str, Any]]:
    """PostHog events (nested properties), in time order: page views and other events of 25 users, most
    with a ``$session_id`` (some events without one), and keys of every JSON type beside the preset's."""
    rng = random.Random(20240501)
    events: list[dict[str, Any]] = []
    for u in range(25):
        user = f"ph-{u:02d}"
        for visit in range(1 + rng.randrange(3)):
            moment = START + timedelta(hours=rng.uniform(0, 22))
            session = f"019{u:02d}{visit:02d}-5e55-7000-8000-{rng.randrange(16**12):012x}"
            url = SITE + rng.choice(LANDINGS)
            referrer = rng.choice(REFERRERS)
            for n in range(1 + rng.randrange(6)):
                if n:
                    moment += timedelta(seconds=rng.uniform(5, 600))
                    referrer, url = url, SITE + rng.choice(PAGES)
                event = (
                    "$pageview"
                    if n == 0 or rng.random() < 0.6
                    else rng.choice(("$autocapture", "$pageleave"))
                )
                properties: dict[str, Any] = {
                    "$current_url": url,
                    "$referrer": referrer,
                    "$raw_user_agent": AGENTS[u % len(AGENTS)],
                    "$screen_width": 1280 + 10 * u,
                    "$feature/new.flow": u % 2 == 0,
                    "$set": {"plan": "pro" if u % 3 else "free"},
                    "tags": ["a", "b"],
                    "price": 9.5 + u,
                    "it's": "quoted",
                }
                if u % 5 != 4:  # some exports leave $ip out (PostHog's "discard client IP data")
                    properties["$ip"] = f"81.2.69.{u + 1}"
                if (n + u) % 7 != 3:  # some events without a session id: PostHog's 30-minute rule
                    properties["$session_id"] = session
                events.append(
                    {
                        "uuid": "",
                        "event": event,
                        "distinct_id": user,
                        "timestamp": moment,
                        "properties": properties,
                    }
                )
    events.sort(key=lambda e: e["timestamp"])
    for number, record in enumerate(events):
        record["uuid"] = f"e{number:04d}"
    return events


def as_text(events: list[dict[str, Any]]) -> pl.DataFrame:
    """The events as PostHog's batch export writes them: ``properties`` a JSON-encoded string."""
    properties = [
        BROKEN_TEXT if e["uuid"] == BROKEN else None if e["uuid"] == EMPTY else json.dumps(e["properties"])
        for e in events
    ]
    return pl.DataFrame(
        {
            "uuid": [e["uuid"] for e in events],
            "event": [e["event"] for e in events],
            "distinct_id": [e["distinct_id"] for e in events],
            "timestamp": pl.Series([e["timestamp"] for e in events], dtype=pl.Datetime("us", "UTC")),
            "properties": properties,
        }
    )


def write_ndjson(path: Path, events: list[dict[str, Any]]) -> str:
    """PostHog's NDJSON export: ``properties`` nested (the broken and empty events without it)."""
    lines = []
    for e in events:
        record = {**e, "timestamp": e["timestamp"].isoformat().replace("+00:00", "Z")}
        if e["uuid"] in (BROKEN, EMPTY):
            del record["properties"]
        lines.append(json.dumps(record))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """The events in two files (before and after :data:`CUT`) per export: nested NDJSON, Parquet and CSV
    with JSON text."""
    events = generate()
    base = tmp_path_factory.mktemp("posthog-json")
    parts = [[e for e in events if e["timestamp"] < CUT], [e for e in events if e["timestamp"] >= CUT]]
    files: dict[str, list[str]] = {"ndjson": [], "parquet": [], "csv": []}
    for number, part in enumerate(parts):
        files["ndjson"].append(write_ndjson(base / f"events-{number}.ndjson", part))
        frame = as_text(part)
        frame.write_parquet(base / f"events-{number}.parquet")
        files["parquet"].append(str(base / f"events-{number}.parquet"))
        frame.write_csv(base / f"events-{number}.csv")
        files["csv"].append(str(base / f"events-{number}.csv"))
    return files


@pytest.fixture(scope="module")
def nested(exports: dict[str, list[str]]) -> pl.DataFrame:
    """The session table of the nested export, in memory: what every other read must give."""
    table = sessionize.run(exports["ndjson"], preset="posthog", no_geo=True).sessions.sort(KEYS)
    # The inputs do what the tests need: client session ids, landing pages with UTM tags, referrals.
    assert table.get_column("session_id").str.starts_with("019").sum() > 20
    assert table.get_column("landing_page").str.contains("utm_source").sum() > 3
    assert set(table.get_column("channel")) >= {"Direct", "Email", "Organic Search", "Paid Social"}
    return table


def comparable(table: pl.DataFrame) -> pl.DataFrame:
    """The session table without the incremental output's own columns, by user and start."""
    return table.drop("is_final", "session_date", strict=False).sort(KEYS)


@pytest.mark.slow
@pytest.mark.parametrize("export", ["parquet", "csv"])
@pytest.mark.parametrize("path", EVERY_PATH)
def test_json_text_properties_give_the_nested_sessions(
    export: str, path: dict[str, Any], exports: dict[str, list[str]], nested: pl.DataFrame, tmp_path: Path
) -> None:
    options = path_options(path, tmp_path)
    result = sessionize.run(exports[export], preset="posthog", no_geo=True, **options)
    assert_frame_equal(comparable(path_sessions(result, options)), nested)


@pytest.mark.slow
@pytest.mark.parametrize("export", ["parquet", "csv"])
def test_json_text_properties_on_spark(
    export: str, exports: dict[str, list[str]], nested: pl.DataFrame, tmp_path: Path, spark_session: Any
) -> None:
    """Spark's executors read each file with the local code, the JSON text included."""
    target = tmp_path / "sessions"
    sessionize.run(
        exports[export], preset="posthog", no_geo=True, spark=spark_session, partitions=2, output=str(target)
    )
    written = pl.read_parquet(sorted(target.glob("part-*.parquet")))
    # Spark has no unsigned integers: the counts come back as Int64 (as in test_equivalence).
    written = written.cast({name: pl.UInt32 for name, dtype in written.schema.items() if dtype == pl.Int64})
    assert_frame_equal(comparable(written), nested)


@pytest.mark.slow
@pytest.mark.parametrize("export", ["parquet", "csv"])
def test_json_text_properties_in_windows_of_rows(
    export: str,
    exports: dict[str, list[str]],
    nested: pl.DataFrame,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The bucketed engine reading each file in windows of 50 rows, and under the smallest memory limit
    (below what a run takes: a warning, and as many buckets as it allows): every window finds the same
    columns in the JSON (by the names asked for, never by the values a window holds)."""
    monkeypatch.setattr(buckets_module, "MIN_CHUNK_ROWS", 50)
    windows: list[int | None] = []
    read_file = sio.read_file

    def spy(
        source: sio.InputFile, options: sio.ReadOptions, window: Any = None, **kwargs: Any
    ) -> sio.FileRead:
        # A Parquet window is (first row, rows); a CSV one comes as its rows; None: a whole file.
        raw = kwargs.get("raw")
        windows.append(raw.height if raw is not None else None if window is None else window[1])
        return read_file(source, options, window, **kwargs)

    monkeypatch.setattr(sio.read, "read_file", spy)
    for limit, buckets in (("8K", 4), ("64MiB", None)):
        windows.clear()
        # Below what any run takes, and (8K) than a user's events: warned of, the run goes on.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = sessionize.run(
                exports[export],
                preset="posthog",
                no_geo=True,
                temp_dir=str(tmp_path),
                memory_limit=limit,
                buckets=buckets,
            )
        assert any(w.category is SessionizeWarning and "is below the" in str(w.message) for w in caught)
        if buckets:
            assert result.path_taken == "4 buckets"
            assert len(windows) > 3 and all(rows is not None and rows <= 50 for rows in windows)
        assert_frame_equal(comparable(result.sessions), nested)


@pytest.mark.slow
@pytest.mark.parametrize("export", ["parquet", "csv"])
def test_json_text_properties_in_incremental_runs_file_after_file(
    export: str, exports: dict[str, list[str]], nested: pl.DataFrame, tmp_path: Path
) -> None:
    state, out = tmp_path / "state", tmp_path / "out"
    for file in exports[export]:
        sessionize.run([file], preset="posthog", no_geo=True, state=str(state), output_dir=str(out))
    assert_frame_equal(comparable(pl.read_parquet(out / "**" / "*.parquet")), nested)


@pytest.mark.parametrize("export", ["parquet", "csv"])
def test_a_frame_with_json_text_properties(
    export: str, exports: dict[str, list[str]], nested: pl.DataFrame
) -> None:
    """The Python API: ``sessionize.sessionize(frame, preset="posthog")`` on the export read by Polars."""
    read = pl.read_parquet if export == "parquet" else pl.read_csv
    frame = pl.concat([read(file) for file in exports[export]])
    table = sessionize.sessionize(frame, preset="posthog", no_geo=True).collect()
    assert_frame_equal(comparable(table), nested)


def test_the_cli_reads_a_posthog_batch_export(tmp_path: Path) -> None:
    """The review's case: three events, ``properties`` JSON text, in Parquet and CSV, by the CLI: the
    landing page, referrer, channel and ``$session_id`` of the JSON (not Direct with no landing page)."""
    events = [
        {"uuid": f"u{n}", "event": "$pageview", "distinct_id": "d1",
         "timestamp": START + timedelta(minutes=m),
         "properties": {"$session_id": "s-1", "$current_url": f"{SITE}{page}", "$referrer": referrer,
                        "$ip": "81.2.69.160", "$raw_user_agent": AGENTS[0]}}
        for n, (m, page, referrer) in enumerate([
            (0, "/?utm_source=google&utm_medium=cpc&utm_campaign=spring", "https://www.google.com/"),
            (2, "/pricing", f"{SITE}/"),
            # An hour later, the same $session_id: one session (PostHog's id), not two (30 minutes' rule).
            (62, "/signup", f"{SITE}/pricing"),
        ])
    ]  # fmt: skip
    frame = as_text(events)
    rows = []
    for name in ("ph.parquet", "ph.csv", "ph.ndjson"):
        source = tmp_path / name
        if name.endswith(".parquet"):
            frame.write_parquet(source)
        elif name.endswith(".csv"):
            frame.write_csv(source)
        else:
            write_ndjson(source, events)
        out = tmp_path / f"{name}.csv"
        result = run_cli(source, "--preset", "posthog", "--no-geo", "-q", "-o", out)
        assert result.exit_code == 0, result.output
        table = pl.read_csv(out, infer_schema=False)
        rows.append(
            table.select(
                "session_id", "event_count", "landing_page", "exit_page", "referrer", "traffic_source",
                "utm_campaign", "channel", "ip", "browser",
            ).rows()
        )  # fmt: skip
    assert rows[0] == rows[1] == rows[2] == [
        ("s-1", "3", f"{SITE}/?utm_source=google&utm_medium=cpc&utm_campaign=spring", f"{SITE}/signup",
         "https://www.google.com/", "google", "spring", "Paid Search", "81.2.69.160", "Chrome"),
    ]  # fmt: skip


@pytest.mark.parametrize("export", ["parquet", "csv"])
def test_an_event_whose_properties_are_not_json(
    export: str, exports: dict[str, list[str]], nested: pl.DataFrame
) -> None:
    """Invalid JSON (and an empty value) in one row: that event is read with null properties, as the nested
    export's event without them (no client session id, page or referrer of its own), and nothing is
    rejected: the keys are optional columns, read as a nested object's missing keys are."""
    result = sessionize.run(exports[export], preset="posthog", no_geo=True, on_invalid="skip")
    assert result.rejected == 0
    assert result.events_read == sum(len(Path(f).read_text().splitlines()) for f in exports["ndjson"])
    read = pl.read_parquet if export == "parquet" else pl.read_csv
    events = pl.concat([read(f) for f in exports[export]])
    assert events.filter(pl.col("uuid") == BROKEN).get_column("properties").to_list() == [BROKEN_TEXT]
    assert events.filter(pl.col("uuid") == EMPTY).get_column("properties").to_list() == [None]
    assert "never-read" not in result.sessions.get_column("session_id").to_list()
    assert_frame_equal(comparable(result.sessions), nested)


def test_session_ids_come_from_the_json(exports: dict[str, list[str]], nested: pl.DataFrame) -> None:
    """The sessions are PostHog's ``$session_id``s of the JSON (not the 30 minutes' rule's own ids)."""
    events = [json.loads(line) for file in exports["ndjson"] for line in Path(file).read_text().splitlines()]
    ids = {e["properties"]["$session_id"] for e in events if "$session_id" in e.get("properties", {})}
    table = sessionize.run(exports["parquet"], preset="posthog", no_geo=True).sessions
    from_json = set(table.get_column("session_id")) & ids
    assert from_json == ids
    assert len(from_json) == table.get_column("session_id").str.starts_with("019").sum()


def test_column_options_name_keys_of_the_json(tmp_path: Path) -> None:
    """Without a preset: ``--url-col``, ``--session-col``, ``--agg`` and ``--filter`` name keys of a JSON
    text column as they name a nested object's (``properties.KEY``): numbers read as numbers."""
    frame = pl.DataFrame(
        {
            "user_id": ["a", "a", "b"],
            "timestamp": ["2024-05-01T10:00:00Z", "2024-05-01T10:01:00Z", "2024-05-01T10:00:00Z"],
            "props": [
                json.dumps({"page": f"{SITE}/x", "sid": "s-a", "n": 2, "browser": "Chrome"}),
                json.dumps({"page": f"{SITE}/y", "sid": "s-a", "n": 3.5, "browser": "Chrome"}),
                json.dumps({"page": f"{SITE}/z", "sid": "s-b", "n": 10, "browser": "Firefox"}),
            ],
        }
    )
    source = tmp_path / "events.parquet"
    frame.write_parquet(source)
    out = tmp_path / "sessions.csv"
    result = run_cli(
        source, "--no-geo", "-q", "-o", out, "--url-col", "props.page", "--session-col", "props.sid",
        "--agg", "total=sum(props.n)", "--agg", "top=max(props.n)", "--filter", "props.browser=Chrome",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    table = pl.read_csv(out, infer_schema=False)
    assert table.select("session_id", "landing_page", "exit_page", "total", "top").rows() == [
        ("s-a", f"{SITE}/x", f"{SITE}/y", "5.5", "3.5")
    ]


def test_values_of_every_json_type() -> None:
    """A key's value as text: strings as they are, numbers and booleans as their JSON text, objects and
    arrays as JSON text; null for JSON's null, an absent key, invalid JSON, an array or a scalar instead
    of an object, and an empty value. Keys with ``$``, dots, quotes and spaces are keys as they are; a
    dotted path is the dotted key first, else the nested keys."""
    values = [
        json.dumps({"$s": "x", "n": 3, "f": 1.5, "t": True, "o": {"a": [1, 2]}, "l": [1, "b"], "z": None,
                    "$feature/new.flow": False, "it's": "q", "x y": "sp", "a.b": "dotted",
                    "a": {"b": "nested"}, "c": {"d": "only nested"}}),
        '{"$s": "cut',
        "[1, 2]",
        "42",
        "",
        None,
        '  {"$s": "spaces before"}',
    ]  # fmt: skip
    frame = pl.LazyFrame({"p": values})
    paths = ["p.$s", "p.n", "p.f", "p.t", "p.o", "p.l", "p.z", "p.missing", "p.$feature/new.flow", "p.it's",
             "p.x y", "p.a.b", "p.c.d"]  # fmt: skip
    got = json_text_columns(frame, paths).collect()
    assert got.schema == pl.Schema(
        {"p": pl.String, **{"p_" + path[2:].replace(".", "_"): pl.String for path in paths}}
    )
    first = got.row(0, named=True)
    assert [first["p_" + path[2:].replace(".", "_")] for path in paths] == [
        "x", "3", "1.5", "true", '{"a":[1,2]}', '[1,"b"]', None, None, "false", "q", "sp", "dotted",
        "only nested",
    ]  # fmt: skip
    assert got.get_column("p_$s").to_list() == ["x", None, None, None, None, None, "spaces before"]


def test_columns_already_there_are_read_as_they_are() -> None:
    """A nested (flattened) column, a column of the path's name, or a column that is not text is read as
    before: no key is looked for in JSON."""
    frame = pl.LazyFrame(
        {
            "properties": ['{"$current_url": "from json", "x": "1"}'],
            "properties_$current_url": ["flattened"],
            "numbers": [1],
        }
    )
    got = json_text_columns(frame, ["properties.$current_url", "numbers.x", "properties.x", "url"]).collect()
    assert got.columns == ["properties", "properties_$current_url", "numbers", "properties_x"]
    assert got.row(0) == ('{"$current_url": "from json", "x": "1"}', "flattened", 1, "1")


def test_a_large_properties_value_takes_linear_time() -> None:
    """A 1 MB properties object, its key last: read in time linear in its size (well under a second)."""
    big = json.dumps({**{f"k{i}": "v" * 100 for i in range(10_000)}, "$current_url": f"{SITE}/"})
    assert len(big) > 1_000_000
    frame = pl.LazyFrame({"properties": [big] * 20})
    begun = time.perf_counter()
    got = json_text_columns(frame, ["properties.$current_url", "properties.k9999"]).collect()
    assert time.perf_counter() - begun < 5
    assert got.get_column("properties_$current_url").to_list() == [f"{SITE}/"] * 20


@pytest.mark.parametrize(
    ("options", "kept"),
    [
        ({}, True),
        ({"anonymize_ip": True}, False),
        ({"hash_user_ids": "POSTHOG_JSON_TEST_SECRET", "user_col": "properties.uid"}, False),
        ({"hash_user_ids": "POSTHOG_JSON_TEST_SECRET"}, True),
    ],
    ids=["no-privacy", "anonymize-ip", "hashed-id-from-json", "hashed-id-not-from-json"],
)
def test_rejects_keep_no_address_or_id_read_from_the_json(
    options: dict[str, Any], kept: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rejected row keeps its original columns, ``properties`` among them, but for one the privacy
    options hide: the address (``--anonymize-ip``) or the user id (``--hash-user-ids``) read from the
    JSON is there as sent, so that column is left out, as a malformed row's raw line is."""
    monkeypatch.setenv("POSTHOG_JSON_TEST_SECRET", "s3cret")
    properties = [
        json.dumps({"$ip": "81.2.69.160", "uid": "alice@example.com", "$current_url": f"{SITE}/"}),
        json.dumps({"$ip": "81.2.69.142", "uid": "bob@example.com", "$current_url": f"{SITE}/b"}),
    ]
    source = tmp_path / "events.csv"
    pl.DataFrame(
        {
            "uuid": ["e1", "e2"],
            "event": ["$pageview", "$pageview"],
            "distinct_id": ["d1", "d2"],
            "timestamp": ["2024-05-01T10:00:00Z", "not a time"],
            "properties": properties,
        }
    ).write_csv(source)
    rejects = tmp_path / "rejects.csv"
    result = sessionize.run(
        [source], preset="posthog", no_geo=True, on_invalid="skip", rejects=str(rejects), **options
    )
    assert result.rejected == 1 and result.events_read == 1
    written = pl.read_csv(rejects, infer_schema=False)
    assert written.get_column("uuid").to_list() == ["e2"]
    assert ("properties" in written.columns) is kept
    if kept:
        assert written.get_column("properties").to_list() == [properties[1]]
    text = rejects.read_text()
    if "anonymize_ip" in options:
        assert "81.2.69.142" not in text
    if "user_col" in options:
        assert "bob@example.com" not in text


def test_a_flag_naming_a_key_no_event_has_is_warned_of(tmp_path: Path) -> None:
    """A misspelled key of the JSON (``--url-col props.pgae``) made a column of nulls without a word, where a
    misspelled column is an error: now a warning names the flag, the key and the column. The key spelled
    right, or a preset's preferred key that some events lack, warns of nothing."""
    frame = pl.DataFrame(
        {
            "user_id": ["a", "a"],
            "timestamp": ["2024-05-01T10:00:00Z", "2024-05-01T10:01:00Z"],
            "props": [json.dumps({"page": f"{SITE}/x"}), json.dumps({"page": f"{SITE}/y", "ua": None})],
        }
    )
    source = tmp_path / "events.parquet"
    frame.write_parquet(source)
    out = tmp_path / "sessions.csv"
    result = run_cli(source, "--no-geo", "-o", out, "--url-col", "props.pgae", "--user-agent-col", "props.ua")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "no event has a value for 'props.pgae' (--url-col)" in text
    assert "no event has a value for 'props.ua' (--user-agent-col)" in text
    assert "'props' column" in text
    assert pl.read_csv(out).get_column("landing_page").to_list() == [None]
    result = run_cli(source, "--no-geo", "-o", out, "--url-col", "props.page")
    assert result.exit_code == 0, result.output
    assert "no event has a value" not in result.output
    assert pl.read_csv(out).get_column("landing_page").to_list() == [f"{SITE}/x"]


def test_other_text_is_not_read_as_json(tmp_path: Path) -> None:
    """A text column none of whose first values is a JSON object stays text: a flag naming a path into it
    (a typo, or a column that is a URL) is the error it was, not a column of nulls. One JSON object among
    them, or no value at all, and it is read as JSON."""
    source = tmp_path / "events.csv"
    source.write_text(
        "user_id,timestamp,page\nu1,2024-05-01T10:00:00Z,https://a.example/\nu1,2024-05-01T10:01:00Z,\n",
        encoding="utf-8",
    )
    result = run_cli(source, "--no-geo", "-q", "-o", tmp_path / "out.csv", "--url-col", "page.url")
    assert result.exit_code != 0
    assert "no column 'page.url'" in result.output
    frame = pl.LazyFrame(
        {"page": ["https://a.example/", None], "mixed": ["oops", ' {"url": "x"}'], "empty": [None, None]}
    )
    got = json_text_columns(frame, ["page.url", "mixed.url", "empty.url"]).collect()
    assert got.columns == ["page", "mixed", "empty", "mixed_url", "empty_url"]
    assert got.get_column("mixed_url").to_list() == [None, "x"]


def test_names_alike_are_one_column_of_the_first_key_found() -> None:
    """The mixpanel preset's ``properties.ip`` and ``properties.$ip``: one column (the column options
    would find either by its name), the first key an event has, so a key no event has hides no other."""
    frame = pl.LazyFrame({"properties": ['{"$ip": "81.2.69.160"}', '{"ip": "10.0.0.1", "$ip": "1.1.1.1"}']})
    got = json_text_columns(frame, ["properties.ip", "properties.$ip"]).collect()
    assert got.columns == ["properties", "properties_ip"]
    assert got.get_column("properties_ip").to_list() == ["81.2.69.160", "10.0.0.1"]
