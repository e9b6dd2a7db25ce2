"""``--user-fallback-col``: an event whose user id column is empty takes its login id as its user id
(review 55 F1). Segment's Spec requires "a userId or an anonymousId", and a server-side library sends the
userId only (a warehouse row with ``anonymous_id`` null); Amplitude's HTTP API takes an event without a
device_id when it has a user_id. The segment and amplitude presets rejected those events (a failed run by
default) while a file of such events alone was read by its userId: whether a valid event was kept depended
on the other rows of its file."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import sessionize
from sessionize import presets
from sessionize.errors import MissingColumnError, MissingUserIdError, UsageError
from tests.helpers import (
    EVERY_PATH,
    path_options,
    path_sessions,
    run_cli,
    run_incremental,
    values_written,
    write_text,
)

SECRET_VAR = "SESSIONIZE_USER_FALLBACK_TEST_SECRET"
SECRET = "user-fallback-secret"
SITE = "https://shop.example.com"

#: Segment's raw export (review 55's repro): four browser calls of anonymousId a1, who logs in as user-42
#: (identify), then the server-side track of analytics-node with the userId only.
SEGMENT_RAW: list[dict[str, Any]] = [
    {"type": "page", "messageId": "m1", "anonymousId": "a1", "userId": None,
     "timestamp": "2024-05-01T08:00:00.000Z",
     "context": {"ip": "8.8.8.8", "page": {"url": f"{SITE}/?utm_source=fb&utm_medium=paid_social",
                                           "referrer": "https://l.facebook.com/"}}},
    {"type": "track", "event": "Product Viewed", "messageId": "m2", "anonymousId": "a1",
     "timestamp": "2024-05-01T08:01:00.000Z", "context": {"page": {"url": f"{SITE}/p/1"}}},
    {"type": "identify", "messageId": "m3", "anonymousId": "a1", "userId": "user-42",
     "timestamp": "2024-05-01T08:02:00.000Z", "traits": {"email": "x@example.com"}},
    {"type": "page", "messageId": "m4", "anonymousId": "a1", "userId": "user-42",
     "timestamp": "2024-05-01T08:03:00.000Z", "context": {"page": {"url": f"{SITE}/checkout"}}},
    {"type": "track", "event": "Order Completed", "messageId": "m5", "userId": "user-42",
     "timestamp": "2024-05-01T08:04:00.000Z", "context": {"library": {"name": "analytics-node"}},
     "properties": {"revenue": 10}},
]  # fmt: skip

#: A Segment warehouse table (``tracks`` and ``pages`` alike): a null anonymous_id on server-side rows, one
#: user seen server-side only, and a row with neither id (an empty_user_id reject, as before).
WAREHOUSE = (
    "anonymous_id,user_id,timestamp,event,type,context_page_url,context_page_referrer,message_id\n"
    f"anon-1,,2024-05-01 08:00:00,,page,{SITE}/?utm_source=newsletter&utm_medium=email,,m1\n"
    f"anon-1,,2024-05-01 08:01:00,Product Viewed,track,{SITE}/p/1,{SITE}/,m2\n"
    "anon-1,user-42,2024-05-01 08:02:00,,identify,,,m3\n"
    ",user-42,2024-05-01 08:04:00,Order Completed,track,,,m4\n"
    ",user-77,2024-05-01 09:00:00,Order Completed,track,,,m5\n"
    ",,2024-05-01 09:10:00,Ping,track,,,m6\n"
)
#: (user_id, stitched_user_id, event_count) of the warehouse table's sessions.
WAREHOUSE_SESSIONS = [("anon-1", "user-42", 3), ("user-42", "user-42", 1), ("user-77", "user-77", 1)]


def amplitude_event(insert_id: str, device: str | None, user: str | None, time: str, **more: Any) -> str:
    event = {
        "$insert_id": insert_id,
        "device_id": device,
        "user_id": user,
        "event_time": f"2024-05-01 {time}.000000",
        "event_type": more.pop("event_type", "add_to_cart"),
        "session_id": more.pop("session_id", -1),
        "event_properties": more.pop("event_properties", {}),
        **more,
    }
    return json.dumps(event) + "\n"


#: Amplitude's Export API lines: a device's two events, then an event of user@x without a device_id.
AMPLITUDE = "".join(
    [
        amplitude_event(
            "i1", "d1", None, "08:00:00", event_type="[Amplitude] Page Viewed", session_id=1714550400000,
            event_properties={"[Amplitude] Page Location": f"{SITE}/"},
        ),
        amplitude_event("i2", "d1", None, "08:00:20", session_id=1714550400000),
        amplitude_event("srv1", None, "user@x", "08:00:30", event_type="purchase"),
    ]
)  # fmt: skip


def digest(value: str) -> str:
    return hmac.new(SECRET.encode(), value.encode(), hashlib.sha256).hexdigest()


@pytest.fixture(autouse=True)
def secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_VAR, SECRET)


def ndjson(path: Path, rows: list[dict[str, Any]]) -> Path:
    return write_text(path, "".join(json.dumps(row) + "\n" for row in rows))


def rows_of(table: pl.DataFrame, *columns: str) -> list[tuple[Any, ...]]:
    return table.sort("session_start", "user_id").select(columns).rows()


# --- the presets ------------------------------------------------------------------------------------


def test_segment_raw_export_keeps_a_server_side_call(tmp_path: Path) -> None:
    """The repro: exit 1 ("1 row(s) have an empty user id in column 'anonymousId'") before."""
    source = ndjson(tmp_path / "segment_raw.ndjson", SEGMENT_RAW)
    out = tmp_path / "sessions.csv"
    result = run_cli(source, "--preset", "segment", "--no-geo", "-o", out)
    assert result.exit_code == 0, result.output
    table = pl.read_csv(out)
    assert rows_of(table, "user_id", "stitched_user_id", "event_count", "channel") == [
        ("a1", "user-42", 4, "Paid Social"),
        # The server-side call: its login id is its user id, and its stitched_user_id.
        ("user-42", "user-42", 1, "Direct"),
    ]


def test_segment_server_side_calls_alone_are_stitched_to_their_login_id(tmp_path: Path) -> None:
    """A file of server-side calls only (no anonymousId column): userId is the user id, as before, and
    the stitched_user_id too (null before: the one column was the user id role's)."""
    source = ndjson(tmp_path / "server.ndjson", SEGMENT_RAW[-1:])
    table = sessionize.run([source], preset="segment", no_geo=True).sessions
    assert rows_of(table, "user_id", "stitched_user_id", "event_count") == [("user-42", "user-42", 1)]


@pytest.mark.parametrize("path", EVERY_PATH)
@pytest.mark.parametrize("hashed", [False, True], ids=["clear", "hash_user_ids"])
def test_segment_warehouse_table_on_every_path(tmp_path: Path, path: dict[str, Any], hashed: bool) -> None:
    """A warehouse table's rows with anonymous_id null are their user_id's, on every engine path; with
    --hash-user-ids no id is written in the clear, not in the rejects file either."""
    source = write_text(tmp_path / "in" / "pages.csv", WAREHOUSE)
    (tmp_path / "out").mkdir()
    (tmp_path / "work").mkdir()
    rejects = tmp_path / "out" / "rejects.csv"
    options = {
        **path_options(path, tmp_path / "work"),
        "preset": "segment",
        "no_geo": True,
        "on_invalid": "skip",
        "rejects": str(rejects),
        **({"hash_user_ids": SECRET_VAR} if hashed else {}),
    }
    if "output_dir" not in options:
        # Dask writes a directory of Parquet parts.
        options["output"] = str(
            tmp_path / "out" / ("sessions" if "engine" in options else "sessions.parquet")
        )
    result = sessionize.run([source], **options)
    table = path_sessions(result, options)
    shown = digest if hashed else str
    expected = [(shown(user), shown(login), count) for user, login, count in WAREHOUSE_SESSIONS]
    assert rows_of(table, "user_id", "stitched_user_id", "event_count") == expected
    assert result.rejected == 1
    assert pl.read_csv(rejects)["reject_reason"].to_list() == ["empty_user_id"]
    if hashed:
        written = values_written(tmp_path / "out", ["anon-1", "user-42", "user-77"])
        if "output_dir" in options:
            written |= values_written(Path(options["output_dir"]), ["anon-1", "user-42", "user-77"])
            written |= values_written(Path(options["state"]), ["anon-1", "user-42", "user-77"])
        assert written == set()


def test_segment_warehouse_table_on_spark(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    pytest.importorskip("pyspark", reason="PySpark is not installed: pip install 'sessionize[spark]'")
    spark = request.getfixturevalue("spark_session")
    source = write_text(tmp_path / "pages.csv", WAREHOUSE)
    target = tmp_path / "sessions"
    sessionize.run(
        [str(source)],
        spark=spark,
        partitions=2,
        output=str(target),
        preset="segment",
        no_geo=True,
        on_invalid="skip",
        hash_user_ids=SECRET_VAR,
    )
    table = pl.read_parquet(sorted(target.glob("part-*.parquet")))
    expected = [(digest(user), digest(login), count) for user, login, count in WAREHOUSE_SESSIONS]
    assert rows_of(table, "user_id", "stitched_user_id", "event_count") == expected


def test_amplitude_event_with_a_user_id_and_no_device_id(tmp_path: Path) -> None:
    """Exit 1 ("empty user id in column 'device_id'") before."""
    source = write_text(tmp_path / "export.json", AMPLITUDE)
    out = tmp_path / "sessions.csv"
    result = run_cli(source, "--preset", "amplitude", "--no-geo", "-o", out)
    assert result.exit_code == 0, result.output
    assert rows_of(pl.read_csv(out), "user_id", "event_count") == [("d1", 2), ("user@x", 1)]


def test_amplitude_hash_user_ids_hides_the_login_ids_of_kept_and_rejected_events(tmp_path: Path) -> None:
    """The login id column is a user id column: hashed where it is the user id, and in the rejects file
    (a rejected event of a device with a user_id wrote it in the clear: the preset has no login id role)."""
    bad = amplitude_event("b1", "d3", "user@y", "08:10:00").replace("2024-05-01 08:10:00.000000", "yesterday")
    source = write_text(tmp_path / "in" / "export.json", AMPLITUDE + bad)
    (tmp_path / "out").mkdir()
    out, rejects = tmp_path / "out" / "sessions.csv", tmp_path / "out" / "rejects.csv"
    result = run_cli(
        source, "--preset", "amplitude", "--no-geo", "-o", out, "--hash-user-ids", SECRET_VAR,
        "--on-invalid", "skip", "--rejects", rejects,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert rows_of(pl.read_csv(out), "user_id", "event_count") == [(digest("d1"), 2), (digest("user@x"), 1)]
    rejected = pl.read_csv(rejects)
    assert rejected.select("reject_reason", "device_id", "user_id").rows() == [
        ("bad_timestamp", digest("d3"), digest("user@y"))
    ]
    assert values_written(tmp_path / "out", ["user@x", "user@y"]) == set()


def test_an_agg_of_the_login_id_is_refused_under_hash_user_ids(tmp_path: Path) -> None:
    source = write_text(tmp_path / "export.json", AMPLITUDE)
    with pytest.raises(UsageError, match="user_id, the login id column that --hash-user-ids hides"):
        sessionize.run(
            [source],
            preset="amplitude",
            no_geo=True,
            hash_user_ids=SECRET_VAR,
            aggregates=["u=first(user_id)"],
        )
    # Counting them writes no id.
    result = sessionize.run(
        [source], preset="amplitude", no_geo=True, hash_user_ids=SECRET_VAR, aggregates=["u=count(user_id)"]
    )
    assert sorted(result.sessions["u"].to_list()) == [0, 1]


# --- the option -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "off", [("--user-fallback-col", ""), ("--user-fallback-col=",)], ids=["space", "equals"]
)
def test_switched_off_the_old_behaviour_is_back(tmp_path: Path, off: tuple[str, ...]) -> None:
    """Without the fallback a server-side call has no user id: the run fails (exit 1), as before."""
    source = ndjson(tmp_path / "segment_raw.ndjson", SEGMENT_RAW)
    result = run_cli(source, "--preset", "segment", "--no-geo", "-o", tmp_path / "s.csv", *off)
    assert result.exit_code == 1, result.output
    assert "1 row(s) have an empty user id in column 'anonymousId'" in result.output
    amplitude = write_text(tmp_path / "export.json", AMPLITUDE)
    with pytest.raises(MissingUserIdError, match="empty user id in column 'device_id'"):
        sessionize.run([amplitude], preset="amplitude", no_geo=True, user_fallback_col="")


def test_an_event_with_neither_id_is_rejected_naming_both_columns(tmp_path: Path) -> None:
    neither = {"type": "track", "event": "Ping", "timestamp": "2024-05-01T09:00:00Z"}
    source = ndjson(tmp_path / "segment.ndjson", [*SEGMENT_RAW, neither])
    with pytest.raises(MissingUserIdError) as raised:
        sessionize.run([source], preset="segment", no_geo=True)
    message = str(raised.value)
    assert (
        "1 row(s) have an empty user id in column 'anonymousId' and no login id in column 'userId'" in message
    )
    result = sessionize.run([source], preset="segment", no_geo=True, on_invalid="skip")
    assert result.rejected == 1 and result.session_count == 2


def test_the_option_without_a_preset_and_in_a_config_file(tmp_path: Path) -> None:
    """Any column, named as a flag's (case and punctuation aside); a config file key too; another column
    changes it."""
    source = write_text(
        tmp_path / "events.csv",
        "visitor,account,email,timestamp,url\n"
        f"v1,,,2024-05-01T08:00:00Z,{SITE}/\n"
        f",acc-1,a@example.com,2024-05-01T08:01:00Z,{SITE}/x\n",
    )
    with pytest.raises(MissingUserIdError):
        sessionize.run([source], no_geo=True, user_col="visitor")
    table = sessionize.run([source], no_geo=True, user_col="visitor", user_fallback_col="Account").sessions
    assert rows_of(table, "user_id") == [("v1",), ("acc-1",)]
    config = write_text(tmp_path / "run.toml", '[run]\nuser-col = "visitor"\nuser-fallback-col = "email"\n')
    out = tmp_path / "sessions.csv"
    result = run_cli(source, "--config", config, "--no-geo", "-o", out)
    assert result.exit_code == 0, result.output
    assert rows_of(pl.read_csv(out), "user_id") == [("v1",), ("a@example.com",)]
    # A file without a column named explicitly is refused, as --stitch-col's (review 57 F5): the preset's
    # value alone is optional (see test_a_user_fallback_col_named_explicitly_must_exist).
    other = write_text(tmp_path / "browser.csv", f"visitor,timestamp,url\nv2,2024-05-01T08:00:00Z,{SITE}/\n")
    with pytest.raises(MissingColumnError, match="no column 'email' \\(given with --user-fallback-col\\)"):
        sessionize.run([other], no_geo=True, user_col="visitor", user_fallback_col="email")


def test_the_presets_list_shows_it() -> None:
    for name in ("segment", "amplitude"):
        assert ("--user-fallback-col", "user_id") in presets.get(name).settings()


# --- incremental states -------------------------------------------------------------------------------


def manifest_path(state: Path) -> Path:
    return state / (state / "CURRENT").read_text() / "manifest.json"


def test_the_state_records_the_option(tmp_path: Path) -> None:
    a = ndjson(tmp_path / "a.ndjson", SEGMENT_RAW[:3])
    b = ndjson(tmp_path / "b.ndjson", SEGMENT_RAW[3:])
    assert run_incremental(a, tmp_path, "--preset", "segment").exit_code == 0
    assert (
        json.loads(manifest_path(tmp_path / "state").read_text())["settings"]["user_fallback_col"]
        == "user_id"
    )
    refused = run_incremental(b, tmp_path, "--preset", "segment", "--user-fallback-col", "")
    assert refused.exit_code == 2
    assert "(--user-fallback-col user_id -> '')" in json.loads(refused.stderr.splitlines()[-1])["message"]
    assert run_incremental(b, tmp_path, "--preset", "segment").exit_code == 0
    table = pl.read_parquet(tmp_path / "out" / "**" / "*.parquet")
    assert rows_of(table, "user_id", "stitched_user_id", "event_count") == [
        ("a1", "user-42", 4),
        ("user-42", "user-42", 1),
    ]


def test_a_segment_state_written_before_the_option_is_not_continued_with_it_unasked(tmp_path: Path) -> None:
    """A state of --preset segment from before ran without the fallback (it rejected, or failed on, the
    events the preset keeps now): continued with --user-fallback-col '' only."""
    a = ndjson(tmp_path / "a.ndjson", SEGMENT_RAW[:3])
    b = ndjson(tmp_path / "b.ndjson", SEGMENT_RAW[3:4])
    assert run_incremental(a, tmp_path, "--preset", "segment", "--user-fallback-col", "").exit_code == 0
    path = manifest_path(tmp_path / "state")
    manifest = json.loads(path.read_text())
    del manifest["settings"]["user_fallback_col"]
    path.write_text(json.dumps(manifest, indent=1))
    refused = run_incremental(b, tmp_path, "--preset", "segment")
    assert refused.exit_code == 2
    assert "(--user-fallback-col '' -> user_id)" in json.loads(refused.stderr.splitlines()[-1])["message"]
    assert run_incremental(b, tmp_path, "--preset", "segment", "--user-fallback-col", "").exit_code == 0


def test_a_user_fallback_col_named_explicitly_must_exist(tmp_path: Path) -> None:
    """--user-fallback-col emial (a typo) was ignored: the events it should key rejected, exit 0 under
    --on-invalid skip, while --stitch-col emial said "did you mean 'email'?" (review 57 F5). Named on the
    command line, as a keyword or in the config file, it must exist; the segment and amplitude presets'
    user_id stays optional (an export of browser calls only has none)."""
    source = write_text(
        tmp_path / "w.csv",
        "anonymous_id,email,timestamp,url\n"
        f"a1,,2024-05-01T08:00:00Z,{SITE}/a\n"
        f",bob@x.com,2024-05-01T08:01:00Z,{SITE}/b\n",
    )
    out = tmp_path / "s.csv"
    refused = "no column 'emial' (given with --user-fallback-col; did you mean 'email'?)"
    for extra in ((), ("--on-invalid", "skip"), ("--preset", "segment"), ("--buckets", "2")):
        result = run_cli(
            source,
            "--user-col",
            "anonymous_id",
            "--user-fallback-col",
            "emial",
            "--no-geo",
            "-o",
            out,
            *extra,
        )
        assert result.exit_code != 0 and refused in " ".join(result.output.split()), (extra, result.output)
        assert not out.exists()
    with pytest.raises(MissingColumnError, match="did you mean 'email'"):
        sessionize.run([source], no_geo=True, user_col="anonymous_id", user_fallback_col="emial")
    config = write_text(
        tmp_path / "run.toml", '[run]\nuser-col = "anonymous_id"\nuser-fallback-col = "emial"\n'
    )
    result = run_cli(source, "--config", config, "--no-geo", "-o", out)
    assert result.exit_code != 0 and refused in " ".join(result.output.split()), result.output
    result = run_cli(
        source, "--user-col", "anonymous_id", "--user-fallback-col", "email", "--no-geo", "-o", out
    )
    assert result.exit_code == 0 and pl.read_csv(out).height == 2, result.output
    # The preset's own value: a browser-only warehouse table without user_id reads as before.
    browser = write_text(
        tmp_path / "pages.csv",
        "anonymous_id,timestamp,type,context_page_url,message_id\n"
        f"anon-1,2024-05-01 08:00:00,page,{SITE}/,m1\nanon-2,2024-05-01 08:01:00,page,{SITE}/x,m2\n",
    )
    assert sessionize.run([browser], no_geo=True, preset="segment").session_count == 2
    result = run_cli(browser, "--preset", "segment", "--no-geo", "-o", out, "--buckets", "2")
    assert result.exit_code == 0, result.output
