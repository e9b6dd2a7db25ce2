"""The run config: one constructor from the flat options, one from TOML, checks before any work."""

from __future__ import annotations

import dataclasses
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import sessionize
from sessionize import presets
from sessionize.config import OPTION_NAMES, RunConfig
from sessionize.errors import UsageError
from tests.helpers import EVENTS, KEYS, REPO, invoke, words


def test_groups_hold_the_parsed_values() -> None:
    config = RunConfig.from_options(
        user_col="uid",
        timeout="45m",
        anonymize_ip=True,
        drop_columns="ip, user_agent",
        state="st",
        output_dir="out",
        lateness="2h",
        memory_limit="1GiB",
        conversion_events="purchase,signup",
    )
    assert config.read.columns.user == "uid"
    assert config.read.column_options()["user_col"] == "uid"
    assert config.session.timeout == timedelta(minutes=45)
    assert config.session.conversion_events == ("purchase", "signup")
    assert config.privacy.anonymize_ip == "after-geo"
    assert config.privacy.drop_columns == ("ip", "user_agent")
    assert config.engine.memory_limit == 1 << 30
    assert config.incremental is not None and config.incremental.lateness == timedelta(hours=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.session.timeout = timedelta(1)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"rejects": "r.csv"}, "--rejects needs --on-invalid skip"),
        ({"state": "st"}, "--state and --output-dir go together"),
        ({"reprocess": True}, "--reprocess goes with --state"),
        ({"timezone": "Mars/Olympus"}, "Mars/Olympus"),
        ({"timeout": "soon"}, "--timeout"),
        ({"on_invalid": "skip", "rejects": "x.csv", "report": "x.csv"}, "same file"),
        ({"output": "x.csv", "report": "./x.csv"}, "same file"),
        ({"engine": "flink"}, "--engine"),
        ({"buckets": 0}, "--buckets"),
        ({"hash_user_ids": "SESSIONIZE_TEST_NO_SUCH_VARIABLE"}, "SESSIONIZE_TEST_NO_SUCH_VARIABLE"),
    ],
)
def test_every_check_happens_before_any_file_or_database_is_opened(
    tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    # A GeoIP database that does not exist and an input that does not exist: neither is looked at.
    with pytest.raises(UsageError, match=message):
        sessionize.run([tmp_path / "missing.csv"], geoip_db=tmp_path / "missing.mmdb", **options)
    assert list(tmp_path.iterdir()) == []


def test_the_fingerprint_follows_the_options_that_change_sessions() -> None:
    base = RunConfig.from_options(state="st", output_dir="out")
    prints = base.fingerprint()
    # The keys states have been written with since the first incremental release.
    assert {"timeout", "max_session_length", "split_on_campaign", "split_at_midnight", "timezone"} <= set(
        prints
    )
    assert {
        "pageview_events",
        "conversion_events",
        "internal_domains",
        "anonymize_ip",
        "hash_user_ids",
    } <= set(prints)
    assert {"drop_columns", "dedupe", "exclude_bots", "lateness"} <= set(prints)
    changed: dict[str, Any] = {
        "timeout": "10m",
        "split_at_midnight": True,
        "dedupe": True,
        "exclude_bots": True,
        "anonymize_ip": True,
        "drop_columns": "search_term",
        "internal_domains": "shop.example",
        "lateness": "1h",
        "pageview_events": "pv",
        # Recorded since stop 47 (review 54 F1): they decide users, client sessions and page views.
        "visitor_key": "ip",
        "asset_pattern": r"\.css$",
        "session_id_nulls": "-1",
        "unnest_params": "event_params",
        "time_unit": "ms",
        "input_timezone": "Europe/Berlin",
        # Recorded since stop 49 (review 60 F4, F5): geo, and the roles only a flag switches on.
        "no_geo": True,
        "stitch_col": "login",
        "engagement_time_col": "engagement_ms",
        "ignore_referrer_col": "ignore_referrer",
        "heartbeat_events": "page_ping",
        "engaged_threshold": "20s",
    }
    for name, value in changed.items():
        other = RunConfig.from_options(state="st", output_dir="out", **{name: value}).fingerprint()
        assert other != prints, name
    # Where the outputs go, and which database edition locates addresses, do not change sessions' identity.
    same = RunConfig.from_options(state="st", output_dir="elsewhere", geoip_db="new.mmdb", rejects=None)
    assert same.fingerprint() == prints
    # Nor where a value is read from (an export whose columns were renamed continues) or how the
    # bytes are decoded and bad rows handled.
    read = RunConfig.from_options(
        state="st", output_dir="out", user_col="visitor", encoding="latin-1", on_invalid="skip"
    )
    assert read.fingerprint() == prints
    # A column flag of a role found by its usual names says where it is, not whether it is there.
    for name in ("session_col", "event_id_col", "page_view_id_col", "referrer_col", "ip_col"):
        given: dict[str, Any] = {name: "x"}
        assert RunConfig.from_options(state="st", output_dir="out", **given).fingerprint() == prints


def test_the_fingerprint_records_whether_a_role_is_on_not_its_column() -> None:
    stitched = RunConfig.from_options(state="st", output_dir="out", stitch_col="login").fingerprint()
    renamed = RunConfig.from_options(state="st", output_dir="out", stitch_col="email").fingerprint()
    assert stitched == renamed and stitched["stitch_col"] == "True"
    # The ga4 preset names the engagement time's and the ignore-referrer flag's columns.
    ga4 = RunConfig.from_options(state="st", output_dir="out", **presets.apply("ga4", {})).fingerprint()
    assert (ga4["engagement_time_col"], ga4["ignore_referrer_col"]) == ("True", "True")


def test_settings_that_count_nothing_are_not_in_the_fingerprint() -> None:
    """The heartbeat interval and minimum visit length count heartbeats only (review 60 F8)."""
    base = RunConfig.from_options(state="st", output_dir="out").fingerprint()
    inert = RunConfig.from_options(
        state="st", output_dir="out", min_visit_length="9s", heartbeat_interval="1h"
    ).fingerprint()
    assert inert == base and "heartbeat_interval" not in base
    beats = RunConfig.from_options(state="st", output_dir="out", heartbeat_events="page_ping").fingerprint()
    changes: dict[str, Any] = {"min_visit_length": "9s", "heartbeat_interval": "1h"}
    for name, value in changes.items():
        other = RunConfig.from_options(
            state="st", output_dir="out", heartbeat_events="page_ping", **{name: value}
        ).fingerprint()
        assert other != beats and {k for k in other if other[k] != beats[k]} == {name}


def test_the_secret_is_not_in_the_fingerprint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESSIONIZE_TEST_SECRET", "correct horse battery staple")
    config = RunConfig.from_options(hash_user_ids="SESSIONIZE_TEST_SECRET", state="st", output_dir="out")
    assert "correct horse" not in repr(config)
    assert all("correct horse" not in value for value in config.fingerprint().values())


def test_toml_gives_the_same_config_as_the_flat_options(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text(
        '[run]\ninputs = ["a.csv", "b.csv"]\ntimeout = "20m"\nuser-col = "uid"\nexclude_bots = true\n'
        'drop-columns = ["ip"]\nvalid-until = "2100-01-01"\n',
        encoding="utf-8",
    )
    inputs, config = RunConfig.from_toml(path)
    assert inputs == ["a.csv", "b.csv"]
    flat: dict[str, Any] = {"timeout": "20m", "user_col": "uid", "exclude_bots": True, "drop_columns": ["ip"]}
    assert config == RunConfig.from_options(**flat, valid_until="2100-01-01")
    # Flat options given beside the file win.
    _, overridden = RunConfig.from_toml(path, timeout="5m")
    assert overridden.session.timeout == timedelta(minutes=5)
    path.write_text('[run]\ntimeuot = "20m"\n', encoding="utf-8")
    with pytest.raises(UsageError, match="unknown option 'timeuot'"):
        RunConfig.from_toml(path)


@pytest.mark.parametrize(
    ("key", "value", "flag"),
    [
        ("format", "CSV", "--format"),
        ("format", "xlsx", "--format"),
        ("input-format", "Parquet", "--input-format"),
    ],
)
def test_a_format_the_cli_refuses_is_refused_as_the_config_is_built(
    tmp_path: Path, key: str, value: str, flag: str
) -> None:
    """``format = "CSV"`` in a TOML config was accepted by ``RunConfig.from_toml`` (and by
    ``from_options``), then refused once the run began, where the CLI refuses it as it parses the file."""
    path = tmp_path / "run.toml"
    path.write_text(f'[run]\ninputs = ["a.csv"]\n{key} = "{value}"\n', encoding="utf-8")
    with pytest.raises(UsageError, match=f"^{flag} '{value}' is not one of "):
        RunConfig.from_toml(path)
    option: dict[str, Any] = {key.replace("-", "_"): value}
    with pytest.raises(UsageError, match=f"^{flag} '{value}' is not one of "):
        RunConfig.from_options(**option)
    if value.lower() in ("csv", "parquet"):
        lowered: dict[str, Any] = {name: value.lower() for name in option}
        assert RunConfig.from_options(**lowered) is not None


def test_option_names_are_the_cli_flags() -> None:
    import typer.core
    import typer.main

    from sessionize.cli import app

    command = typer.main.get_command(app)
    assert isinstance(command, typer.core.TyperGroup)
    run = command.commands["run"]
    flags = {p.name for p in run.params}
    missing = sorted(set(OPTION_NAMES) - flags)
    assert missing == [], f"options of RunConfig.from_options without a flag: {missing}"


def test_run_with_a_config_equals_run_with_flat_options() -> None:
    options: dict[str, Any] = {"timeout": "20m", "no_geo": True, "exclude_bots": True, "dedupe": True}
    flat = sessionize.run([EVENTS], **options)
    given = sessionize.run([EVENTS], config=RunConfig.from_options(**options))
    assert_frame_equal(flat.sessions.sort(KEYS), given.sessions.sort(KEYS))
    assert (flat.session_count, flat.bot_sessions_excluded) == (
        given.session_count,
        given.bot_sessions_excluded,
    )
    with pytest.raises(UsageError, match="not both"):
        sessionize.run([EVENTS], config=RunConfig(), timeout="10m")


def test_sessionize_takes_every_option_that_applies_to_a_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESSIONIZE_TEST_SECRET", "s3cret")
    frame = pl.read_csv(EVENTS)
    options: dict[str, Any] = {
        "no_geo": True,
        "dedupe": True,
        "exclude_bots": True,
        "hash_user_ids": "SESSIONIZE_TEST_SECRET",
        "anonymize_ip": True,
        "drop_columns": "search_term",
        "split_at_midnight": True,
    }
    table = sessionize.sessionize(frame, **options).collect()
    whole = sessionize.run([EVENTS], **options)
    assert "search_term" not in table.columns
    assert not table.get_column("is_bot").any()
    assert_frame_equal(table.sort(KEYS), whole.sessions.sort(KEYS))
    raw_users = set(frame.get_column("user_id").cast(pl.String))
    assert raw_users.isdisjoint(set(table.get_column("user_id")))
    with pytest.raises(UsageError, match="options for files, not frames"):
        sessionize.sessionize(frame, output="x.parquet")


def test_lateness_without_a_state_is_refused_as_reprocess_is(tmp_path: Path) -> None:
    # A stop-56 review: --lateness without --state was taken and did nothing (exit 0), while --reprocess,
    # its neighbour in the help's Incremental panel, was refused.
    with pytest.raises(UsageError, match="--lateness goes with --state"):
        RunConfig.from_options(lateness="1h")
    assert RunConfig.from_options().incremental is None
    config = RunConfig.from_options(state=tmp_path / "s", output_dir=tmp_path / "o")
    assert config.incremental is not None and config.incremental.lateness == timedelta(hours=6)
    result = invoke("run", str(EVENTS), "-o", str(tmp_path / "s.csv"), "--lateness", "1h", "--no-geo")
    assert result.exit_code == 2
    assert "--lateness goes with --state" in words(result.output)
    assert not (tmp_path / "s.csv").exists()


def test_the_documented_building_blocks_are_exported() -> None:
    for name in ("enrich_attribution", "enrich_geo", "RunConfig", "read_events", "resolve_inputs"):
        assert name in sessionize.__all__ and getattr(sessionize, name) is not None


def test_every_error_the_library_raises_is_exported() -> None:
    # A stop-56 review: docs/python.md names OutOfRangeError, which only sessionize.errors had.
    import sessionize.errors

    raised = {
        name
        for name, value in vars(sessionize.errors).items()
        if isinstance(value, type) and issubclass(value, (sessionize.SessionizeError, Warning))
    }
    assert {"OutOfRangeError", "StateLockedError", "LateEventsError"} <= raised
    for name in raised:
        assert name in sessionize.__all__ and getattr(sessionize, name) is getattr(sessionize.errors, name)
    documented = set(re.findall(r"`(\w+(?:Error|Warning))`", (REPO / "docs" / "python.md").read_text()))
    assert "OutOfRangeError" in documented and documented <= set(sessionize.__all__)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("1h30m", timedelta(minutes=90)),
        ("1h 30m", timedelta(minutes=90)),
        ("2d", timedelta(days=2)),
        ("1w2d", timedelta(days=9)),
        ("1.5h", timedelta(minutes=90)),
        ("500ms", timedelta(milliseconds=500)),
        ("36500d", timedelta(days=36500)),
    ],
)
def test_a_duration_is_numbers_with_units_largest_first(given: str, expected: timedelta) -> None:
    assert RunConfig.from_options(timeout=given).session.timeout == expected


@pytest.mark.parametrize(
    ("given", "message"),
    [
        # A repeated or out-of-order unit is a typo: it was read as 2 h, 61 min (review 50).
        ("1h1h", "is not a duration"),
        ("1m1h", "is not a duration"),
        # M is not minutes (months elsewhere), S not seconds: units are lower-case.
        ("30M", "is not a duration"),
        ("90S", "is not a duration"),
        ("10min", "is not a duration"),
        ("0s", "longer than zero"),
        # A duration the run's microsecond arithmetic overflows: it crashed with an OverflowError.
        ("100000000000d", "at most 100 years"),
        ("1000000000d", "at most 100 years"),
        ("36501d", "at most 100 years"),
        (timedelta(days=10**8), "at most 100 years"),
        (timedelta(minutes=-5), "longer than zero"),
    ],
)
def test_a_bad_duration_is_a_usage_error(given: str | timedelta, message: str) -> None:
    # --lateness too without --state (review 60: a negative one was taken when no state was given).
    for option in ("timeout", "max_session_length", "session_cap", "max_send_delay", "lateness"):
        with pytest.raises(UsageError, match=message):
            options: dict[str, Any] = {option: given}
            RunConfig.from_options(**options)
