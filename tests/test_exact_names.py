"""A known column name is the column named exactly as it, in its flattened spelling too, before a look-alike
(one equal to it with case and punctuation ignored), wherever each stands in the file (docs/input.md).

Review 59 F1: the exact test compared the preset's dotted name (``properties.$session_id``) with the
columns, whose nested objects flattening had named ``properties_$session_id``; it never matched, and the
first look-alike in column order won. posthog-js puts an app's own event properties before
``$session_id`` (``posthog.capture('add_to_cart', {session_id: ...})``), so a PostHog NDJSON export was
sessionized by the app's ``session_id``, one session per event, with no warning; Mixpanel's app-defined
``current_url`` and ``referrer`` took the landing page and channel, and Amplitude's custom ``Referrer`` the
referrer. The same export with ``properties`` as JSON text (a CSV) was right.

The inputs are generated here: the same events written cleanly (the vendor's keys only) and with the
app's look-alike keys before the vendor's; both must give the same session table on every engine path,
for a frame too, and the CSV with JSON text the same as the nested export.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import sessionize
from sessionize import presets
from sessionize import schema as S
from sessionize.config import RunConfig
from tests.helpers import EVERY_PATH, KEYS, path_options, path_sessions, run_cli

SITE = "https://shop.example.com"
T0 = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
#: The visits: user, the vendor's session id, minutes after T0, the pages, the referrer of the first.
#: ph-1's two visits are 10 minutes apart: two sessions by the vendor's session ids only.
VISITS = (
    ("u-1", "0190-s1", 0, ("/a?utm_source=news&utm_medium=email", "/b", "/c"), "https://www.google.com/"),
    ("u-1", "0190-s2", 15, ("/d", "/e"), "https://www.bing.com/"),
    ("u-2", "0190-s3", 5, ("/f", "/g"), "https://news.example.org/"),
)
#: What the app's own look-alike keys hold: never what a session may show.
APP_URL = "https://app.internal/x"
APP_REFERRER = "https://custom.example/"


def pages() -> list[dict[str, Any]]:
    """One page view a row: user, session, time, URL, referrer (the page before, or the visit's)."""
    rows = []
    for user, session, minutes, paths, referrer in VISITS:
        for n, path in enumerate(paths):
            rows.append(
                {
                    "user": user,
                    "session": session,
                    "at": T0 + timedelta(minutes=minutes + n),
                    "url": SITE + path,
                    "referrer": referrer if n == 0 else SITE + paths[n - 1],
                }
            )
    return rows


def posthog(app: bool) -> list[dict[str, Any]]:
    """PostHog events in posthog-js's key order: the app's own properties (with ``app``) before
    ``$session_id``."""
    events = []
    for number, page in enumerate(pages()):
        own = {"session_id": f"srv-{number}", "current_url": APP_URL, "referrer": APP_REFERRER} if app else {}
        properties = {
            **own,
            "$current_url": page["url"],
            "$referrer": page["referrer"],
            "$session_id": page["session"],
        }
        events.append(
            {
                "uuid": f"e{number:03d}",
                "event": "$pageview",
                "distinct_id": page["user"],
                "timestamp": page["at"].isoformat().replace("+00:00", "Z"),
                "properties": properties,
            }
        )
    return events


def mixpanel(app: bool) -> list[dict[str, Any]]:
    """Mixpanel raw export events; with ``app``, the app's own ``current_url`` and ``referrer`` first."""
    events = []
    for number, page in enumerate(pages()):
        own = {"current_url": APP_URL, "referrer": APP_REFERRER} if app else {}
        properties = {
            **own,
            "time": int(page["at"].timestamp()),
            "distinct_id": page["user"],
            "$insert_id": f"ins-{number}",
            "$current_url": page["url"],
            "$referrer": page["referrer"],
        }
        events.append({"event": "$mp_web_page_view", "properties": properties})
    return events


def amplitude(app: bool) -> list[dict[str, Any]]:
    """Amplitude Export API events (Browser SDK 1's page views: ``event_properties.referrer``); with
    ``app``, a custom ``Referrer`` first, differing in case only."""
    events = []
    for number, page in enumerate(pages()):
        own = {"Referrer": APP_REFERRER} if app else {}
        start = next(T0 + timedelta(minutes=m) for _, s, m, _, _ in VISITS if s == page["session"])
        events.append(
            {
                "insert_id": f"ins-{number}",
                "event_time": page["at"].strftime("%Y-%m-%d %H:%M:%S.%f"),
                "event_type": "Page View",
                "device_id": page["user"],
                "session_id": int(start.timestamp() * 1000),
                "event_properties": {**own, "page_location": page["url"], "referrer": page["referrer"]},
            }
        )
    return events


EXPORTS = {"posthog": posthog, "mixpanel": mixpanel, "amplitude": amplitude}


def write_ndjson(path: Path, events: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(event) + "\n" for event in events), encoding="utf-8")
    return str(path)


def clean_and_colliding(tmp_path: Path, preset: str) -> tuple[str, str]:
    """The vendor's export as NDJSON, without and with the app's look-alike keys."""
    make = EXPORTS[preset]
    return (
        write_ndjson(tmp_path / f"{preset}-clean.ndjson", make(False)),
        write_ndjson(tmp_path / f"{preset}-app.ndjson", make(True)),
    )


def comparable(table: pl.DataFrame) -> pl.DataFrame:
    """The session table without the incremental output's own columns, by user and start."""
    return table.drop("is_final", "session_date", strict=False).sort(KEYS)


def expected_sessions(table: pl.DataFrame, preset: str) -> None:
    """What the vendor's keys give: a session a visit (u-1's two by their session ids; Mixpanel's export
    has none, and its 10 minutes between them make one), each landing on its visit's first page from its
    referrer; nothing of the app's keys."""
    rows = table.sort(KEYS).select("user_id", "event_count", "landing_page", "referrer").rows()
    visits = [(user, len(paths), SITE + paths[0], referrer) for user, _, _, paths, referrer in VISITS]
    if preset == "mixpanel":
        visits[0:2] = [(*visits[0][:1], visits[0][1] + visits[1][1], *visits[0][2:])]
    assert rows == visits, rows
    if preset == "posthog":
        assert table.sort(KEYS).get_column("session_id").to_list() == [v[1] for v in VISITS]


@pytest.mark.parametrize("preset", list(EXPORTS))
def test_the_vendors_name_wins_over_the_apps_look_alike(tmp_path: Path, preset: str) -> None:
    clean, colliding = clean_and_colliding(tmp_path, preset)
    expected = sessionize.run([clean], preset=preset, no_geo=True).sessions
    expected_sessions(expected, preset)
    got = sessionize.run([colliding], preset=preset, no_geo=True).sessions
    assert_frame_equal(comparable(got), comparable(expected))


def test_the_cli_reads_the_posthog_session_id_the_nested_export_holds(tmp_path: Path) -> None:
    """The reviewer's run: `sessionize run posthog.ndjson --preset posthog` (the app's session_id first)."""
    _, colliding = clean_and_colliding(tmp_path, "posthog")
    out = tmp_path / "sessions.csv"
    result = run_cli(colliding, "--preset", "posthog", "--no-geo", "-q", "-o", out)
    assert result.exit_code == 0, result.output
    table = pl.read_csv(out, infer_schema=False).sort("session_id")
    assert table.select("session_id", "event_count").rows() == [
        ("0190-s1", "3"),
        ("0190-s2", "2"),
        ("0190-s3", "2"),
    ]


def test_posthog_json_text_gives_the_nested_sessions(tmp_path: Path) -> None:
    """The same export with ``properties`` as JSON text (a CSV) gives the sessions of the nested one."""
    _, colliding = clean_and_colliding(tmp_path, "posthog")
    events = posthog(True)
    frame = pl.DataFrame(
        {
            "uuid": [e["uuid"] for e in events],
            "event": [e["event"] for e in events],
            "distinct_id": [e["distinct_id"] for e in events],
            "timestamp": [e["timestamp"] for e in events],
            "properties": [json.dumps(e["properties"]) for e in events],
        }
    )
    frame.write_csv(tmp_path / "posthog.csv")
    text = sessionize.run([str(tmp_path / "posthog.csv")], preset="posthog", no_geo=True).sessions
    nested = sessionize.run([colliding], preset="posthog", no_geo=True).sessions
    assert_frame_equal(comparable(nested), comparable(text))


@pytest.mark.parametrize("preset", list(EXPORTS))
def test_a_frame_reads_the_vendors_name(tmp_path: Path, preset: str) -> None:
    """sessionize.sessionize(frame, preset=...): the frame's nested objects are flattened alike."""
    clean, colliding = clean_and_colliding(tmp_path, preset)
    expected = sessionize.run([clean], preset=preset, no_geo=True).sessions
    frame = pl.read_ndjson(colliding, infer_schema_length=None)
    got = sessionize.sessionize(frame, preset=preset, no_geo=True).collect()
    assert_frame_equal(comparable(got), comparable(expected))


@pytest.mark.slow
@pytest.mark.parametrize("preset", list(EXPORTS))
@pytest.mark.parametrize("path", EVERY_PATH)
def test_every_engine_path_reads_the_vendors_name(tmp_path: Path, preset: str, path: dict[str, Any]) -> None:
    clean, colliding = clean_and_colliding(tmp_path, preset)
    expected = sessionize.run([clean], preset=preset, no_geo=True).sessions
    options = path_options(path, tmp_path)
    result = sessionize.run([colliding], preset=preset, no_geo=True, **options)
    assert_frame_equal(comparable(path_sessions(result, options)), comparable(expected))


@pytest.mark.slow
@pytest.mark.parametrize("preset", list(EXPORTS))
def test_spark_reads_the_vendors_name(tmp_path: Path, preset: str, spark_session: Any) -> None:
    clean, colliding = clean_and_colliding(tmp_path, preset)
    expected = sessionize.run([clean], preset=preset, no_geo=True).sessions
    target = tmp_path / "sessions"
    sessionize.run(
        [colliding], preset=preset, no_geo=True, spark=spark_session, partitions=2, output=str(target)
    )
    written = pl.read_parquet(sorted(target.glob("part-*.parquet")))
    # Spark has no unsigned integers: the counts come back as Int64 (as in test_equivalence).
    written = written.cast({name: pl.UInt32 for name, dtype in written.schema.items() if dtype == pl.Int64})
    assert_frame_equal(comparable(written), comparable(expected))


# --- every preset's names, and the built-in ones -----------------------------------------------------


def look_alikes(name: str) -> list[str]:
    """Columns that differ from ``name``'s flattened spelling in punctuation only (``properties_session_id``
    for ``properties.$session_id``) or in case only (``EVENT_PROPERTIES_REFERRER``)."""
    flattened = name.replace(".", "_")
    alike = [re.sub(r"[^0-9A-Za-z_]", "", flattened), flattened.upper(), flattened.title()]
    return [column for column in dict.fromkeys(alike) if column != flattened]


def preset_cases() -> list[Any]:
    """(preset, role, name): each name a preset prefers for a role."""
    return [
        pytest.param(name, role, column, id=f"{name}-{role}-{column}")
        for name, preset in presets.PRESETS.items()
        for role, columns in preset.preferred_columns.items()
        for column in columns
    ]


def preset_config(name: str) -> RunConfig:
    """The options preset ``name`` sets, as a run takes them."""
    return presets.configured(RunConfig.from_options(**presets.apply(name, {})), name, {})


def first_exact(names: tuple[str, ...], available: list[str]) -> str:
    """The column named exactly as the first of ``names`` that one is named as (dotted or flattened)."""
    return next(c for name in names for c in (name, name.replace(".", "_")) if c in available)


@pytest.mark.parametrize(("preset", "role", "name"), preset_cases())
def test_each_preset_name_in_its_flattened_spelling_wins_over_look_alikes(
    preset: str, role: str, name: str
) -> None:
    """Each name a preset prefers, held (flattened) after its look-alikes: the role's column is the one
    named exactly (it, or an earlier name of the role that a look-alike happens to spell exactly:
    ``insert_id`` for Amplitude's ``$insert_id``), never a look-alike."""
    config = preset_config(preset)
    flagged = [c.replace(".", "_") for c in config.read.columns.by_role().values() if c is not None]
    # A user id and a time for the presets that name neither (Segment's found by the built-in names).
    flagged += [] if config.read.columns.user else ["uid"]
    exact = name.replace(".", "_")
    available = [*look_alikes(name), exact, *(c for c in flagged if S.name_key(c) != S.name_key(name))]
    available = list(dict.fromkeys(available))
    found = config.read.resolve_columns(available)
    names = (*config.read.preferred()[role], *S.COLUMN_ALIASES[role])
    assert getattr(found, role) == first_exact(names, available), (found, available)


@pytest.mark.parametrize(
    ("role", "alias"), [(role, alias) for role, aliases in S.COLUMN_ALIASES.items() for alias in aliases]
)
def test_each_built_in_name_wins_over_look_alikes(role: str, alias: str) -> None:
    """Each built-in name, after its look-alikes: the column named exactly wins."""
    fillers = {S.USER: ["ts"], S.TIME: ["uid"]}.get(role, ["uid", "ts"])
    available = list(dict.fromkeys([*fillers, *look_alikes(alias), alias]))
    found = S.resolve_columns(available)
    assert getattr(found, role) == first_exact(S.COLUMN_ALIASES[role], available)


def test_an_exact_name_wins_over_an_earlier_names_look_alike() -> None:
    """PostHog's ``$session_id`` column (an events table's) over the app's nested ``session_id``, when the
    events' properties lack ``$session_id``: exact names first, then look-alikes, each in order."""
    available = ["distinct_id", "timestamp", "event", "uuid", "properties_session_id", "$session_id"]
    config = preset_config("posthog")
    assert config.read.resolve_columns(available).client_session_id == "$session_id"
    # Without an exact one, a look-alike that keeps the `$` (a warehouse's upper-case names), never the
    # app's own `session_id` (review of stop 55: PostHog's server events, which have no session, were put
    # in one by an app's checkout id).
    assert config.read.resolve_columns(available[:-1]).client_session_id is None
    upper = [*available[:-1], "PROPERTIES_$SESSION_ID"]
    assert config.read.resolve_columns(upper).client_session_id == "PROPERTIES_$SESSION_ID"


@pytest.mark.parametrize("export", ["ndjson", "parquet"])
def test_an_apps_own_property_is_not_the_vendors_without_its_dollar(tmp_path: Path, export: str) -> None:
    """A PostHog export of server events (no ``$session_id``, ``$current_url``, ``$referrer`` or ``$ip``)
    whose app sends its own ``session_id``, ``current_url``, ``referrer`` and ``ip`` properties: none of
    them is read for PostHog's (they were, in a nested export: one session of three hours by the app's
    checkout id, and its URL as the landing page), as in the same export with properties as JSON text."""
    properties = {
        "session_id": "checkout-77",
        "current_url": "https://app/x",
        "referrer": "https://r.example/",
        "ip": "81.2.69.160",
    }
    frame = pl.DataFrame(
        {
            "uuid": ["e1", "e2"],
            "event": ["order_paid", "refund"],
            "distinct_id": ["user-1", "user-1"],
            "timestamp": ["2024-05-01T10:02:00Z", "2024-05-01T13:00:00Z"],
            "properties": [properties, properties],
        }
    )
    source = tmp_path / f"events.{export}"
    frame.write_ndjson(source) if export == "ndjson" else frame.write_parquet(source)
    out = tmp_path / "out.csv"
    result = run_cli(source, "--preset", "posthog", "-o", out, "--no-geo", "-q")
    assert result.exit_code == 0, result.output
    table = pl.read_csv(out, infer_schema=False)
    assert table.height == 2
    assert table.select("landing_page", "referrer", "ip").unique().rows() == [(None, None, None)]
    assert "checkout-77" not in table["session_id"].to_list()


def test_a_name_differing_in_case_only_is_a_look_alike() -> None:
    """Amplitude's ``event_properties.referrer`` over a custom ``Referrer`` standing first."""
    available = ["device_id", "event_time", "event_properties_Referrer", "event_properties_referrer"]
    preferred = {S.REFERRER: ("event_properties.referrer",)}
    found = S.resolve_columns(available, preferred=preferred, user_col="device_id", time_col="event_time")
    assert found.referrer == "event_properties_referrer"
    # Without the exact one the look-alike is still found: a Snowflake export's upper-case names.
    found = S.resolve_columns(available[:3], preferred=preferred, user_col="device_id", time_col="event_time")
    assert found.referrer == "event_properties_Referrer"


def test_event_name_fallbacks_take_the_exact_name() -> None:
    """The further event-name columns (Segment's ``type`` of page calls) are the exact ones too."""
    found = S.resolve_columns(["user_id", "timestamp", "Type", "event", "type"])
    assert (found.event, found.event_fallbacks) == ("event", ("type",))


# --- a quoted header name with quotes inside ------------------------------------------------------------


#: Quoted header names with quotes inside, doubled as CSV writes them: ``user "id"`` and ``page "url"``.
QUOTED_HEADER = '"user ""id""",timestamp,"page ""url""",referrer'
QUOTED_OPTIONS: dict[str, Any] = {"user_col": 'user "id"', "url_col": 'page "url"', "no_geo": True}


def quoted_header_csv(tmp_path: Path) -> Path:
    """200 events of 20 users (a page each), and one row with a bad time, under :data:`QUOTED_HEADER`."""
    lines = [
        f"u{i % 20},{(T0 + timedelta(minutes=i)).isoformat()},{SITE}/p{i},https://www.google.com/"
        for i in range(200)
    ]
    lines.insert(7, f"u1,not a time,{SITE}/bad,")
    path = tmp_path / "quoted.csv"
    path.write_text(QUOTED_HEADER + "\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "path",
    [*EVERY_PATH, pytest.param({"buckets": 7, "memory_limit": "8K"}, id="buckets-windows")],
)
def test_a_quoted_header_name_is_read_as_written(
    tmp_path: Path, path: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Polars keeps the doubled quotes of a quoted CSV header name (:data:`QUOTED_HEADER`'s second
    name read as ``page ""url""``): ``--url-col 'page "url"'`` found no such column, and the rejects
    file's header doubled them again (review 58 F7). The name is the one the header holds."""
    from sessionize.engines import budget

    monkeypatch.setattr(budget, "MIN_CHUNK_ROWS", 50)  # (buckets-windows: windows of 50 rows)
    source = quoted_header_csv(tmp_path)
    rejects = tmp_path / "rejects.csv"
    options = path_options(path, tmp_path)
    result = sessionize.run([source], on_invalid="skip", rejects=str(rejects), **QUOTED_OPTIONS, **options)
    sessions = path_sessions(result, options)
    assert sorted(sessions.get_column("landing_page").to_list()) == sorted(f"{SITE}/p{i}" for i in range(20))
    assert sorted(sessions.get_column("user_id").to_list()) == sorted(f"u{i}" for i in range(20))
    assert result.rejected == 1
    header = rejects.read_text(encoding="utf-8").splitlines()[0]
    assert header.startswith(QUOTED_HEADER + ","), header
    assert pl.read_csv(rejects, infer_schema=False).get_column("timestamp").to_list() == ["not a time"]


@pytest.mark.slow
def test_spark_reads_a_quoted_header_name_as_written(tmp_path: Path, spark_session: Any) -> None:
    """The same, with Spark reading the file in splits (each slice parsed under the header's bytes)."""
    source = quoted_header_csv(tmp_path)
    expected = sessionize.run([source], on_invalid="skip", **QUOTED_OPTIONS).sessions
    previous = spark_session.conf.get("spark.sql.files.maxPartitionBytes")
    spark_session.conf.set("spark.sql.files.maxPartitionBytes", "4k")
    try:
        result = sessionize.run(
            [source], on_invalid="skip", spark=spark_session, output=str(tmp_path / "out"), **QUOTED_OPTIONS
        )
    finally:
        spark_session.conf.set("spark.sql.files.maxPartitionBytes", previous)
    assert result.path_taken.endswith("read in splits")
    written = pl.read_parquet(sorted((tmp_path / "out").glob("part-*.parquet")))
    assert sorted(written.get_column("landing_page").to_list()) == sorted(
        expected.get_column("landing_page").to_list()
    )
    assert written.height == expected.height == 20
