"""Identity stitching (``--stitch-col``): sessions keyed by an anonymous id get ``stitched_user_id``, the
user's latest login id, as Snowplow's ``stitched_user_id`` and Segment's identify calls give it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import sessionize
from sessionize.errors import MissingColumnError, UsageError
from tests.helpers import DATA, EVERY_PATH, KEYS, path_options, path_sessions, run_cli, write_text

EVENTS = """anonymous_id,user_id,timestamp,event,url,ip
a1,,2024-05-01T10:00:00Z,page,https://x.example/,81.2.69.142
a1,alice,2024-05-01T10:01:00Z,identify,,81.2.69.142
a1,,2024-05-01T12:00:00Z,page,https://x.example/b,81.2.69.142
a2,,2024-05-01T10:00:00Z,page,https://x.example/,81.2.69.142
a3,bob,2024-05-01T09:00:00Z,identify,,81.2.69.142
a3,robert,2024-05-01T09:00:00Z,identify,,81.2.69.142
a3,,2024-05-01T09:05:00Z,page,https://x.example/,81.2.69.142
"""
#: By hand: a1 logs in as alice in its first session: both its sessions, the earlier one too, get alice
#: (the latest login id of the anonymous id across the input). a2 never logs in: null. a3 sends two
#: identify calls at one instant: the later in input order wins, robert.
EXPECTED = [("a1", "alice"), ("a1", "alice"), ("a2", None), ("a3", "robert")]
OPTIONS: dict[str, Any] = {"user_col": "anonymous_id", "stitch_col": "user_id", "no_geo": True}


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return write_text(tmp_path / "events.csv", EVENTS)


def stitched(table: pl.DataFrame) -> list[tuple[str, str | None]]:
    return table.sort("user_id", "session_start").select("user_id", "stitched_user_id").rows()


def test_every_session_gets_the_latest_login_id(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "s.csv"
    result = run_cli(source, "-o", out, "--no-geo", "--user-col", "anonymous_id", "--stitch-col", "user_id")
    assert result.exit_code == 0, result.output
    table = pl.read_csv(out)
    assert table.columns == [*sessionize.schema.SESSION_SCHEMA, "stitched_user_id"]
    assert stitched(table) == EXPECTED
    # The sessions stay keyed by the anonymous id: stitching adds a column, it merges nothing.
    assert table.height == 4


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({"buckets": 2}, id="buckets"),
        pytest.param({"engine": "dask", "partitions": 2}, id="dask"),
    ],
)
def test_other_paths(source: Path, tmp_path: Path, extra: dict[str, Any]) -> None:
    if extra.get("engine") == "dask":
        pytest.importorskip("distributed")
    memory = sessionize.run([source], **OPTIONS).sessions
    if "buckets" in extra:
        extra = {**extra, "temp_dir": str(tmp_path)}
    other = sessionize.run([source], **OPTIONS, **extra).sessions
    assert stitched(other) == EXPECTED
    assert other.sort(KEYS).equals(memory.sort(KEYS))


def test_hashed_user_ids_hash_the_login_id_too(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STITCH_TEST_SECRET", "s3cret")
    out = tmp_path / "s.ndjson"
    result = sessionize.run([source], **OPTIONS, hash_user_ids="STITCH_TEST_SECRET", output=str(out))
    values = result.sessions.get_column("stitched_user_id").drop_nulls().to_list()
    assert len(values) == 3 and all(len(v) == 64 for v in values)
    text = out.read_text()
    assert "alice" not in text and "robert" not in text and "bob" not in text
    # The same person as another run with the same secret would see: the HMAC of the login id.
    plain = sessionize.sessionize(
        pl.read_csv(source), **OPTIONS, hash_user_ids="STITCH_TEST_SECRET"
    ).collect()
    assert sorted(plain.get_column("stitched_user_id").drop_nulls()) == sorted(values)


def test_incremental_runs_stitch_what_they_write(source: Path, tmp_path: Path) -> None:
    """The rule documented in docs/metrics.md: a run stitches the sessions it writes from its events and
    those the state keeps; a session written earlier keeps its stitched_user_id."""
    lines = EVENTS.splitlines()
    first = write_text(tmp_path / "1.csv", "\n".join(lines[:3]) + "\n")  # a1: page, identify alice
    second = write_text(tmp_path / "2.csv", "\n".join([lines[0], *lines[3:]]) + "\n")
    state, out = tmp_path / "state", tmp_path / "out"
    for part in (first, second):
        sessionize.run([part], **OPTIONS, state=str(state), output_dir=str(out))
    written = pl.read_parquet(out / "**" / "*.parquet", hive_partitioning=True)
    assert stitched(written) == EXPECTED


def test_the_presets_stitch(tmp_path: Path) -> None:
    """Segment: userId of the identify call; Snowplow: user_id (alice logs in on her second page view)."""
    segment = sessionize.run([DATA / "presets" / "segment.ndjson"], preset="segment", no_geo=True).sessions
    assert segment.get_column("stitched_user_id").to_list() == ["user-42", "user-42"]
    snowplow = sessionize.run(
        [DATA / "presets" / "snowplow_atomic_events.csv"], preset="snowplow", no_geo=True
    )
    by_user = dict(stitched(snowplow.sessions))
    assert by_user["d1a2b3c4-0000-4000-8000-000000000001"] == "alice"
    # Snowplow's rule (--stitch-fallback, which the preset sets): a cookie that never logs in is
    # stitched to itself (its sessions model starts stitched_user_id as domain_userid and maps it).
    assert by_user["d9f8e7d6-0000-4000-8000-000000000002"] == "d9f8e7d6-0000-4000-8000-000000000002"
    without = sessionize.run(
        [DATA / "presets" / "snowplow_atomic_events.csv"],
        preset="snowplow",
        no_geo=True,
        stitch_fallback=False,
    )
    assert dict(stitched(without.sessions))["d9f8e7d6-0000-4000-8000-000000000002"] is None
    # An export without the login id column: stitched_user_id is there, null.
    posthogless = write_text(tmp_path / "s.csv", "anonymous_id,timestamp\na,2024-05-01T10:00:00Z\n")
    table = sessionize.run([posthogless], preset="segment", no_geo=True).sessions
    assert table.get_column("stitched_user_id").to_list() == [None]


@pytest.mark.parametrize("path", EVERY_PATH)
def test_the_fallback_stitches_a_user_without_login_to_itself(
    source: Path, tmp_path: Path, path: dict[str, Any]
) -> None:
    """--stitch-fallback (Snowplow's rule): a2 never logs in, so its stitched_user_id is a2 itself."""
    chosen = path_options(path, tmp_path)
    result = sessionize.run([source], **OPTIONS, stitch_fallback=True, **chosen)
    assert stitched(path_sessions(result, chosen)) == [
        ("a1", "alice"),
        ("a1", "alice"),
        ("a2", "a2"),
        ("a3", "robert"),
    ]
    with pytest.raises(UsageError, match="--stitch-fallback goes with --stitch-col"):
        sessionize.run([source], no_geo=True, user_col="anonymous_id", stitch_fallback=True)


@pytest.mark.parametrize("fallback", [False, True], ids=["no-fallback", "fallback"])
@pytest.mark.parametrize("path", EVERY_PATH)
def test_a_session_without_a_user_id_is_not_stitched(
    tmp_path: Path, path: dict[str, Any], fallback: bool
) -> None:
    """Snowplow's "NULL domain_userid" case (its dbt web integration test, tests/test_peers.py): a
    session of events with a session id and no user id takes its session id as user id
    (``--require-session-id``), but no ``stitched_user_id``, its login id's or (``--stitch-fallback``) its
    own: Snowplow maps login ids to a ``domain_userid``, and such a session has none. A session of a
    user id with the same login id is stitched as ever."""
    source = write_text(
        tmp_path / "input" / "events.csv",
        "anonymous_id,sid,user_id,timestamp,event,url\n"
        ",s1,alice,2024-05-01T10:00:00Z,page,https://x.example/\n"
        ",s1,,2024-05-01T10:05:00Z,page,https://x.example/b\n"
        "a1,s2,alice,2024-05-01T11:00:00Z,page,https://x.example/\n"
        "a2,s3,,2024-05-01T11:00:00Z,page,https://x.example/\n",
    )
    chosen = path_options(path, tmp_path)
    options = {**OPTIONS, "session_col": "sid", "require_session_id": True, "stitch_fallback": fallback}
    result = sessionize.run([source], **options, **chosen)
    assert stitched(path_sessions(result, chosen)) == [
        ("a1", "alice"),
        ("a2", "a2" if fallback else None),
        ("s1", None),
    ]


def test_a_missing_stitch_column_is_named(source: Path) -> None:
    with pytest.raises(MissingColumnError, match="--stitch-col"):
        sessionize.run([source], user_col="anonymous_id", stitch_col="login", no_geo=True)
    flags = ("--user-col", "anonymous_id", "--stitch-col", "user_id", "--drop-columns", "stitched_user_id")
    result = run_cli(source, "--no-geo", *flags, "--log-format", "json", "-o", "-")
    assert result.exit_code == 0
    assert "stitched_user_id" not in result.stdout.splitlines()[0]
    json.loads(result.stderr.strip().splitlines()[-1])
