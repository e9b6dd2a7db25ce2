"""``--shared-session-ids merge`` (the snowplow preset's): a client session id that several users sent is
one session, of the user id of its first event, as Snowplow's sessions lifecycle manifest keys a session by
``domain_sessionid`` alone and its sessions table takes the first event's ``domain_userid``;
``merge-last`` (the posthog preset's) gives it to the user id of its last event, as PostHog's sessions take
``argMax(distinct_id, timestamp)``. The default, ``split``, keeps one session per user and id. On every
path; an incremental run keeps the owner a session already has, as Snowplow's incremental manifest does."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import sessionize
from sessionize.errors import UsageError
from tests.helpers import (
    EVERY_PATH,
    path_options,
    path_sessions,
    run_cli,
    session_rows,
    values_written,
    write_text,
)
from tests.helpers import SNOWPLOW_HEADER as HEADER
from tests.helpers import SNOWPLOW_OPTIONS as OPTIONS

LINES = [
    # One session id from three cookies (a cross-domain link, a cleared cookie): the first event's user
    # (u2: neither the smallest nor the greatest id) owns it under merge, the last one's (u1) under
    # merge-last.
    "u2,s1,2024-05-01T10:00:00Z,page_view,https://shop.example/a,e1",
    "u3,s1,2024-05-01T10:05:00Z,page_view,https://shop.example/b,e2",
    "u1,s1,2024-05-01T10:10:00Z,page_view,https://shop.example/c,e3",
    # The same event under two cookies: one event of the one session (a duplicate).
    "u2,s1,2024-05-01T10:05:00Z,page_view,https://shop.example/b,e2",
    # u1's events without a session id stay u1's (the timeout's sessions).
    "u1,,2024-05-01T12:00:00Z,page_view,https://shop.example/x,e4",
    "u3,s3,2024-05-01T10:00:00Z,page_view,https://shop.example/z,e5",
]
MERGED = [
    ("u1", "u1-20240501T120000.000000", 1, "https://shop.example/x", "https://shop.example/x"),
    ("u2", "s1", 3, "https://shop.example/a", "https://shop.example/c"),
    ("u3", "s3", 1, "https://shop.example/z", "https://shop.example/z"),
]
MERGED_LAST = [
    ("u1", "s1", 3, "https://shop.example/a", "https://shop.example/c"),
    ("u1", "u1-20240501T120000.000000", 1, "https://shop.example/x", "https://shop.example/x"),
    ("u3", "s3", 1, "https://shop.example/z", "https://shop.example/z"),
]


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return write_text(tmp_path / "events.csv", HEADER + "\n".join(LINES) + "\n")


def rows(table: pl.DataFrame) -> list[tuple[Any, ...]]:
    return session_rows(table, "user_id", "session_id", "event_count", "landing_page", "exit_page")


@pytest.mark.parametrize(
    ("shared", "expected", "users"), [("merge", MERGED, 3), ("merge-last", MERGED_LAST, 2)]
)
@pytest.mark.parametrize("path", EVERY_PATH)
def test_a_session_id_of_several_users_is_one_session(
    source: Path, tmp_path: Path, path: dict[str, Any], shared: str, expected: list[Any], users: int
) -> None:
    chosen = path_options(path, tmp_path)
    result = sessionize.run([source], **OPTIONS, shared_session_ids=shared, **chosen)
    assert rows(path_sessions(result, chosen)) == expected
    assert (result.rows_read, result.events_read, result.duplicates_removed) == (6, 5, 1)
    assert result.user_count == users


@pytest.mark.parametrize("shared", ["merge", "merge-last"])
@pytest.mark.parametrize("path", EVERY_PATH)
def test_events_at_one_instant_give_the_session_to_one_user_on_every_path(
    tmp_path: Path, path: dict[str, Any], shared: str
) -> None:
    """Two cookies whose first (and last) events came at the same instant: the smallest id owns the
    session under merge, the greatest under merge-last, whatever the input order or the engine."""
    lines = [
        "u5,s1,2024-05-01T10:00:00Z,page_view,https://shop.example/a,e1",
        "u4,s1,2024-05-01T10:00:00Z,page_view,https://shop.example/b,e2",
        "u6,s1,2024-05-01T10:00:00Z,page_view,https://shop.example/c,e3",
    ]
    owner = "u4" if shared == "merge" else "u6"
    for order in (lines, lines[::-1]):
        folder = tmp_path / str(len(list(tmp_path.iterdir())))
        source = write_text(folder / "events.csv", HEADER + "\n".join(order) + "\n")
        chosen = path_options(path, folder)
        result = sessionize.run([source], **OPTIONS, shared_session_ids=shared, **chosen)
        table = path_sessions(result, chosen)
        assert table.select("user_id", "session_id", "event_count").rows() == [(owner, "s1", 3)]


def test_split_is_the_default(source: Path) -> None:
    table = sessionize.run([source], **OPTIONS).sessions
    assert rows(table) == [
        ("u1", "s1", 1, "https://shop.example/c", "https://shop.example/c"),
        ("u1", "u1-20240501T120000.000000", 1, "https://shop.example/x", "https://shop.example/x"),
        ("u2", "s1", 2, "https://shop.example/a", "https://shop.example/b"),
        ("u3", "s3", 1, "https://shop.example/z", "https://shop.example/z"),
        ("u3", "s1", 1, "https://shop.example/b", "https://shop.example/b"),
    ]


def test_hashed_user_ids_pick_the_owner_by_the_ids_as_read(
    source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The owner is chosen before ids are hashed, so every path picks the same one."""
    monkeypatch.setenv("SESSIONIZE_TEST_SECRET", "s3cr3t")
    options = {**OPTIONS, "shared_session_ids": "merge", "hash_user_ids": "SESSIONIZE_TEST_SECRET"}
    plain = sessionize.run([source], **OPTIONS, shared_session_ids="merge").sessions
    hashed = sessionize.run([source], **options).sessions
    buckets = sessionize.run([source], **options, buckets=2).sessions
    owner = plain.filter(pl.col("session_id") == "s1").get_column("user_id").to_list()
    assert owner == ["u2"]
    # (A generated session id holds the user id: hashed there too.)
    key = ["event_count", "landing_page", "exit_page"]
    assert hashed.sort(key).select(key).equals(plain.sort(key).select(key))
    assert hashed.filter(pl.col("session_id") == "s1").get_column("event_count").to_list() == [3]
    assert buckets.sort("session_id").equals(hashed.sort("session_id"))


@pytest.mark.parametrize("shared", ["merge", "merge-last"])
def test_an_incremental_run_keeps_the_owner_a_session_has(tmp_path: Path, shared: str) -> None:
    """Snowplow's manifest keeps a session's earlier user identifier when a later run brings the same id
    from another cookie: so does the state, under merge-last too (where a run over both files at once
    gives the session to the last event's user, u1)."""
    first = write_text(tmp_path / "a.csv", HEADER + LINES[0] + "\n")
    second = write_text(tmp_path / "b.csv", HEADER + LINES[1] + "\n" + LINES[2] + "\n")
    dirs: dict[str, Any] = {"state": str(tmp_path / "state"), "output_dir": str(tmp_path / "out")}
    for path in (first, second):
        sessionize.run([path], **OPTIONS, shared_session_ids=shared, **dirs)
    table = pl.read_parquet(tmp_path / "out" / "**" / "*.parquet")
    assert table.select("user_id", "session_id", "event_count", "exit_page").rows() == [
        ("u2", "s1", 3, "https://shop.example/c")
    ]
    both = sessionize.run([first, second], **OPTIONS, shared_session_ids=shared).sessions
    assert both.select("user_id", "event_count").rows() == [("u2" if shared == "merge" else "u1", 3)]


def test_the_snowplow_preset_merges(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "sessions.csv"
    result = run_cli(source, "--preset", "snowplow", "--no-geo", "-o", out)
    assert result.exit_code == 0, result.output
    table = pl.read_csv(out)
    # (The event without a session id is left out by the preset's --require-session-id.)
    assert table.sort("user_id").select("user_id", "session_id", "event_count").rows() == [
        ("u2", "s1", 3),
        ("u3", "s3", 1),
    ]


def test_a_frame_the_config_file_and_a_bad_value(source: Path, tmp_path: Path) -> None:
    frame = pl.read_csv(source, infer_schema=False)
    assert rows(sessionize.sessionize(frame, **OPTIONS, shared_session_ids="merge").collect()) == MERGED
    config = write_text(tmp_path / "s.toml", '[run]\nshared-session-ids = "merge"\n')
    out = tmp_path / "s.parquet"
    flags = ("--user-col", "domain_userid", "--session-col", "domain_sessionid", "--no-geo")
    result = run_cli(source, "--config", config, *flags, "-o", out)
    assert result.exit_code == 0, result.output
    assert rows(pl.read_parquet(out)) == MERGED
    with pytest.raises(UsageError, match="--shared-session-ids"):
        sessionize.run([source], **OPTIONS, shared_session_ids="join")


SECRET_VAR, SECRET = "SESSIONIZE_TEST_SECRET", "s3cr3t"
#: Events of a tracker with its user cookie off (no domain_userid): the session id stands in for one.
STAND_INS = [
    ",cookie-off-1,2024-05-01T10:00:00Z,page_view,https://shop.example/a,e1",
    ",cookie-off-1,2024-05-01T10:03:00Z,page_view,https://shop.example/b,e2",
    ",cookie-off-1,not a time,page_view,https://shop.example/c,e3",
    "u3,s3,2024-05-01T10:00:00Z,page_view,https://shop.example/z,e4",
]


def digest(value: str) -> str:
    return hmac.new(SECRET.encode(), value.encode(), hashlib.sha256).hexdigest()


@pytest.mark.parametrize("shared", ["split", "merge"])
@pytest.mark.parametrize("path", EVERY_PATH)
def test_a_session_id_standing_in_for_a_user_id_is_hashed_as_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: dict[str, Any], shared: str
) -> None:
    """--require-session-id gives a row without a user id its session id as one: under --hash-user-ids
    the session table, the page views, the users, the rejects and the state showed the hash as user_id
    beside the id itself as session_id. The session id is hidden as the user id it stands for is."""
    monkeypatch.setenv(SECRET_VAR, SECRET)
    source = write_text(tmp_path / "input" / "events.csv", HEADER + "\n".join(STAND_INS) + "\n")
    chosen = path_options(path, tmp_path)
    incremental = "output_dir" in chosen
    result = sessionize.run(
        [source],
        **OPTIONS,
        require_session_id=True,
        shared_session_ids=shared,
        hash_user_ids=SECRET_VAR,
        on_invalid="skip",
        rejects=str(tmp_path / "rejects.csv"),
        pageviews_output=str(tmp_path / ("pageviews" if incremental else "pageviews.parquet")),
        users_output=str(tmp_path / "users.parquet"),
        **chosen,
    )
    hidden = digest("cookie-off-1")
    assert rows(path_sessions(result, chosen)) == [
        # Every session id is hashed (any of them may stand in for a user id: another user's too).
        (digest("u3"), digest("s3"), 1, "https://shop.example/z", "https://shop.example/z"),
        (hidden, hidden, 2, "https://shop.example/a", "https://shop.example/b"),
    ]
    assert result.rejected == 1
    assert values_written(tmp_path, ["cookie-off-1"], skip=[source]) == set()


@pytest.mark.parametrize("path", EVERY_PATH)
def test_a_stand_in_session_id_is_hidden_where_another_user_or_a_copy_has_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: dict[str, Any]
) -> None:
    """Review 53: the session id that stands in for a user id was kept in the clear as another user's
    session id (``--shared-session-ids split``, the default: u4's session below) and in another column of
    a rejected row (its URL): every session id is hashed under ``--hash-user-ids`` with
    ``--require-session-id``, and copies in a rejected row are hidden as the id is."""
    monkeypatch.setenv(SECRET_VAR, SECRET)
    lines = [*STAND_INS[:2], ",cookie-off-1,not a time,page_view,cookie-off-1,e3",
             "u4,cookie-off-1,2024-05-01T11:00:00Z,page_view,https://shop.example/y,e5"]  # fmt: skip
    source = write_text(tmp_path / "input" / "events.csv", HEADER + "\n".join(lines) + "\n")
    chosen = path_options(path, tmp_path)
    incremental = "output_dir" in chosen
    result = sessionize.run(
        [source], **OPTIONS, require_session_id=True, hash_user_ids=SECRET_VAR, on_invalid="skip",
        rejects=str(tmp_path / "rejects.csv"),
        pageviews_output=str(tmp_path / ("pageviews" if incremental else "pageviews.parquet")), **chosen,
    )  # fmt: skip
    hidden = digest("cookie-off-1")
    assert sorted(rows(path_sessions(result, chosen))) == sorted([
        (digest("u4"), hidden, 1, "https://shop.example/y", "https://shop.example/y"),
        (hidden, hidden, 2, "https://shop.example/a", "https://shop.example/b"),
    ])  # fmt: skip
    assert result.rejected == 1
    assert values_written(tmp_path, ["cookie-off-1"], skip=[source]) == set()


@pytest.mark.parametrize("stand_in_first", [True, False], ids=["stand-in-first", "user-id-first"])
def test_hashed_ids_keep_the_owner_a_session_has_across_incremental_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stand_in_first: bool
) -> None:
    """A session id the state keeps stays with its owner, a stand-in user id too (docs/presets.md): with
    hashed ids as without (the state keeps the session ids hashed, as the outputs show them)."""
    monkeypatch.setenv(SECRET_VAR, SECRET)
    lines = [
        ",s1,2024-05-01T10:00:00Z,page_view,https://shop.example/a,e1",
        "u1,s1,2024-05-01T10:05:00Z,page_view,https://shop.example/b,e2",
    ]
    if not stand_in_first:
        lines.reverse()
    files = [write_text(tmp_path / f"{n}.csv", HEADER + line + "\n") for n, line in enumerate(lines)]
    tables = []
    for run, secret in (("plain", None), ("hashed", SECRET_VAR)):
        options: dict[str, Any] = {
            **OPTIONS,
            "require_session_id": True,
            "shared_session_ids": "merge",
            "hash_user_ids": secret,
            "state": str(tmp_path / run / "state"),
            "output_dir": str(tmp_path / run / "out"),
        }
        for file in files:
            sessionize.run([file], **options)
        tables.append(pl.read_parquet(tmp_path / run / "out" / "**" / "*.parquet"))
    plain, hashed = (table.select("user_id", "session_id", "event_count").rows() for table in tables)
    assert plain == [("s1" if stand_in_first else "u1", "s1", 2)]
    # Every session id is hashed with --require-session-id (any of them may stand in for a user id).
    assert hashed == [(digest(user), digest(session), count) for user, session, count in plain]
