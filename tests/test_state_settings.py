"""The settings an incremental state records (review 60 F4, F5, F8): what a run that continues it may
change, what it may not, what a state of the previous version continues with, and how a refusal names
the options."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import typer.core
import typer.main
from polars.testing import assert_frame_equal
from typer.testing import CliRunner, Result

from sessionize.cli import app
from sessionize.config import RunConfig
from sessionize.engines import incremental
from tests.helpers import CITY_DB, DATA, EVENTS, KEYS, run_incremental, write_text
from tests.test_incremental import json_error, snapshot, state_snapshot, table

#: States written by the previous release (stop 48), each with its inputs and options: see
#: tests/data/README.md and tests/data/states/make.py.
STATES = DATA / "states"
GEOLITE_DB = DATA / "geoip" / "GeoLite2-City-Test.mmdb"
#: A referer database of one's own: Facebook as a search engine.
OWN_REFERERS = "search:\n  MySearch:\n    domains:\n      - www.facebook.com\n    parameters:\n      - q\n"


def run(path: Path, state: Path, out: Path, *options: str) -> Result:
    """``sessionize run PATH --state STATE --output-dir OUT OPTIONS`` with the JSON log line."""
    return CliRunner().invoke(
        app,
        [
            *("run", str(path), "--state", str(state), "--output-dir", str(out)),
            *("--valid-until", "2100-01-01", "--log-format", "json", *options),
        ],
    )


def warnings_of(result: Result) -> list[str]:
    """The warnings of a run's JSON log line."""
    line: dict[str, Any] = json.loads(result.stderr.strip().splitlines()[-1])
    return list(line.get("warnings", []))


def settings(state: Path) -> dict[str, str]:
    """The settings the state's current version records."""
    manifest = json.loads((state / (state / "CURRENT").read_text() / "manifest.json").read_text())
    return dict(manifest["settings"])


def inputs(tmp_path: Path) -> tuple[Path, Path]:
    """Two batches (the fixtures' ``a.csv`` and ``b.csv``): u1's and u2's sessions are still open after the
    first, and the second continues them, so that it rewrites their partition."""
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    shutil.copyfile(STATES / "plain" / "a.csv", a)
    shutil.copyfile(STATES / "plain" / "b.csv", b)
    return a, b


def refused(result: Result, difference: str) -> None:
    """The run was refused (a usage error) and its message names the ``difference``."""
    assert result.exit_code == 2, result.output
    message = json_error(result)["message"]
    assert "was built with other options" in message and difference in message, message


# -- roles that only a flag switches on (F4, F5) ------------------------------------------------------


@pytest.mark.parametrize("first_with", [True, False], ids=["switched-off", "switched-on"])
def test_switching_stitching_on_or_off_between_runs_is_refused(tmp_path: Path, first_with: bool) -> None:
    """--stitch-col adds stitched_user_id to the session table: given in one run and not the other, the
    second run failed "Unexpected error: ComputeError: schema lengths differ" (exit 1) when it rewrote a
    partition of the first (review 60 F4). It is refused, naming the flag, and changes nothing."""
    a, b = inputs(tmp_path)
    state, out = tmp_path / "state", tmp_path / "out"
    stitch = ["--stitch-col", "login"]
    assert run(a, state, out, "--no-geo", *(stitch if first_with else [])).exit_code == 0
    before, kept = snapshot(out), state_snapshot(state)
    second = run(b, state, out, "--no-geo", *([] if first_with else stitch))
    refused(second, "(--stitch-col on -> off)" if first_with else "(--stitch-col off -> on)")
    assert "Use the same options" in json_error(second)["message"]
    assert snapshot(out) == before and state_snapshot(state) == kept
    # As the message says: the same options continue the state.
    assert run(b, state, out, "--no-geo", *(stitch if first_with else [])).exit_code == 0


#: Roles whose column only a flag (or a preset) names, each given in one of two runs: (the flag and
#: its column, options both runs take).
SWITCHED_ROLES = {
    "stitch_col": (["--stitch-col", "login"], []),
    "engagement_time_col": (["--engagement-time-col", "engagement_ms"], []),
    "ignore_referrer_col": (["--ignore-referrer-col", "ignore_ref"], []),
    "heartbeat_time_col": (["--heartbeat-time-col", "sent_at"], ["--heartbeat-events", "page_ping"]),
}


@pytest.mark.parametrize("name", SWITCHED_ROLES)
def test_a_role_switched_on_between_runs_is_refused(tmp_path: Path, name: str) -> None:
    """--engagement-time-col (engaged_time_s as the events report it), --ignore-referrer-col (the
    attribution) and --heartbeat-time-col (the heartbeats' windows) given in the second run only were
    taken: the sessions it rewrote were measured one way, those before the other (review 60 F5)."""
    flag, common = SWITCHED_ROLES[name]
    a, b = inputs(tmp_path)
    state, out = tmp_path / "state", tmp_path / "out"
    assert run(a, state, out, "--no-geo", *common).exit_code == 0
    before = snapshot(out)
    refused(run(b, state, out, "--no-geo", *common, *flag), f"(--{name.replace('_', '-')} off -> on)")
    assert snapshot(out) == before


@pytest.mark.parametrize("name", SWITCHED_ROLES)
def test_a_role_whose_column_was_renamed_continues(tmp_path: Path, name: str) -> None:
    """Whether the role is on is recorded, not its column: an export whose column was renamed continues
    with the flag naming the new one."""
    (flag, column), common = SWITCHED_ROLES[name]
    a, b = inputs(tmp_path)
    state, out = tmp_path / "state", tmp_path / "out"
    assert run(a, state, out, "--no-geo", *common, flag, column).exit_code == 0
    header, *rows = b.read_text().splitlines(keepends=True)
    write_text(b, header.replace(column, f"new_{column}") + "".join(rows))
    result = run(b, state, out, "--no-geo", *common, flag, f"new_{column}")
    assert result.exit_code == 0, result.output


def test_a_flag_naming_the_column_a_role_was_found_by_continues(tmp_path: Path) -> None:
    """--session-col and --event-id-col name which column holds a role that is found by its usual names
    (session_id, event_id) without them: giving them is no other setting, as for --user-col."""
    a, b = (
        write_text(tmp_path / f"{name}.csv", "user_id,timestamp,url,session_id,event_id\n" + row)
        for name, row in (
            ("a", "u1,2024-05-01T10:00:00Z,/a,s1,e1\n"),
            ("b", "u1,2024-05-01T10:05:00Z,/b,s1,e2\n"),
        )
    )
    state, out = tmp_path / "state", tmp_path / "out"
    assert run(a, state, out, "--no-geo").exit_code == 0
    result = run(b, state, out, "--no-geo", "--session-col", "session_id", "--event-id-col", "event_id")
    assert result.exit_code == 0, result.output
    assert table(out)["event_count"].to_list() == [2]


# -- geo and the referer database (F5) ---------------------------------------------------------------


@pytest.mark.parametrize("first_with", [True, False], ids=["geo-switched-on", "geo-switched-off"])
def test_no_geo_switched_between_runs_is_refused(tmp_path: Path, first_with: bool) -> None:
    """--no-geo added in the second run was taken: the sessions it rewrote lost their country, the others
    kept theirs (review 60 F5)."""
    a, b = inputs(tmp_path)
    state, out = tmp_path / "state", tmp_path / "out"
    geo = ["--geoip-db", str(CITY_DB)]
    assert run(a, state, out, *(["--no-geo"] if first_with else geo)).exit_code == 0
    before = snapshot(out)
    second = run(b, state, out, *(geo if first_with else ["--no-geo"]))
    refused(second, "(--no-geo on -> off)" if first_with else "(--no-geo off -> on)")
    assert snapshot(out) == before


def test_another_geoip_database_edition_continues(tmp_path: Path) -> None:
    """The GeoIP database is data, updated monthly: another edition continues the state."""
    a, b = inputs(tmp_path)
    state, out = tmp_path / "state", tmp_path / "out"
    assert run(a, state, out, "--geoip-db", str(CITY_DB)).exit_code == 0
    result = run(b, state, out, "--geoip-db", str(GEOLITE_DB))
    assert result.exit_code == 0, result.output


def test_another_referer_database_continues_with_a_warning(tmp_path: Path) -> None:
    """A --referers database given (or changed) between runs was taken silently: Facebook sessions
    social in the partitions written before, search in those the run rewrote (review 60 F5). Another
    database is a new edition of data, as a GeoIP database's is: the run continues, warns that the
    partitions written before keep the former attribution, and records the new one; the same content
    at another path is the same database."""
    a, b = inputs(tmp_path)
    c = write_text(
        tmp_path / "c.csv",
        b.read_text().splitlines(keepends=True)[0]
        + "u5,2024-05-01T11:00:00Z,https://shop.example/,,page_view"
        ",,,false,pv9,\n",
    )
    own = write_text(tmp_path / "referers.yml", OWN_REFERERS)
    state, out = tmp_path / "state", tmp_path / "out"
    first = run(a, state, out, "--no-geo")
    assert first.exit_code == 0 and not any("referer" in w for w in warnings_of(first))
    assert table(out).filter(pl.col("user_id") == "u2")["medium"].to_list() == ["social"]
    second = run(b, state, out, "--no-geo", "--referers", str(own))
    assert second.exit_code == 0, second.output
    warned = [w for w in warnings_of(second) if "referer database" in w]
    assert len(warned) == 1 and str(own) in warned[0] and "the bundled referers.yml" in warned[0], warned
    assert "Rebuild the state and output directory with a full run" in warned[0]
    assert settings(state)["referers"].endswith(f" {own}")
    # u2's session came from Facebook in the first run and went on in the second: it was rewritten with
    # the new database, as the warning says.
    u2 = table(out).filter(pl.col("user_id") == "u2")
    assert u2["medium"].to_list() == ["search"]
    # The same database moved elsewhere: no warning.
    moved = write_text(tmp_path / "moved" / "referers.yml", OWN_REFERERS)
    third = run(c, state, out, "--no-geo", "--referers", str(moved))
    assert third.exit_code == 0, third.output
    assert not any("referer" in w for w in warnings_of(third))


# -- inert settings and the flags a refusal names (F8) -----------------------------------------------


@pytest.mark.parametrize(
    "changed",
    [["--min-visit-length", "9s"], ["--heartbeat-interval", "20s"], ["--min-visit-length", "0s"]],
    ids=["min-visit-length", "heartbeat-interval", "no-min-visit"],
)
def test_heartbeat_settings_without_heartbeats_change_nothing_and_continue(
    tmp_path: Path, changed: list[str]
) -> None:
    """Without --heartbeat-events, --min-visit-length and --heartbeat-interval count nothing (the same
    session table), yet a state refused them, naming "engaged EngagedTime(heartbeat_events=(), ...)"
    (review 60 F8). They continue the state; with heartbeats they are compared, by their flags."""
    a, b = inputs(tmp_path)
    state, out = tmp_path / "state", tmp_path / "out"
    assert run(a, state, out, "--no-geo").exit_code == 0
    result = run(b, state, out, "--no-geo", *changed)
    assert result.exit_code == 0, result.output
    heartbeats = ["--heartbeat-events", "page_ping"]
    state, out = tmp_path / "state2", tmp_path / "out2"
    assert run(a, state, out, "--no-geo", *heartbeats).exit_code == 0
    flag, value = changed
    before = {"--min-visit-length": "0:00:05", "--heartbeat-interval": "0:00:10"}[flag]
    after = "0:00:00" if value == "0s" else f"0:00:{value[:-1]:0>2}"
    refused(run(b, state, out, "--no-geo", *heartbeats, *changed), f"({flag} {before} -> {after})")


@pytest.mark.parametrize(
    ("option", "difference"),
    [
        (["--timeout", "10m"], "(--timeout 0:30:00 -> 0:10:00)"),
        (["--engaged-threshold", "20s"], "(--engaged-threshold none -> 0:00:20)"),
        (["--heartbeat-events", "page_ping"], "(--heartbeat-events '' -> page_ping"),
        (["--dedupe"], "(--dedupe off -> on)"),
        (["--filter", "event=page_view,page_ping"], "(--filter '' -> "),
        (["--count-events", "page_ping"], "(--count-events '' -> "),
        (["--agg", "n=count(*)"], "(--agg '' -> "),
        (["--pageviews-output", "PAGEVIEWS"], "(--pageviews-output off -> on)"),
    ],
)
def test_a_refusal_names_the_flags(tmp_path: Path, option: list[str], difference: str) -> None:
    """The differences are named by the flags that give them (it was ``engaged EngagedTime(...)``,
    ``filters``, ``pageviews no -> yes``: review 60 F8)."""
    a, b = inputs(tmp_path)
    state, out = tmp_path / "state", tmp_path / "out"
    assert run(a, state, out, "--no-geo").exit_code == 0
    given = [str(tmp_path / "pv") if value == "PAGEVIEWS" else value for value in option]
    refused(run(b, state, out, "--no-geo", *given), difference)


def test_every_recorded_setting_is_named_by_a_flag_of_run() -> None:
    """Each key a state records is shown as a flag that ``sessionize run`` has."""
    command = typer.main.get_command(app)
    assert isinstance(command, typer.core.TyperGroup)
    flags = {opt for param in command.commands["run"].params for opt in param.opts}
    config = RunConfig.from_options(
        state="st", output_dir="out", pageviews_output="pv", heartbeat_events="page_ping"
    )
    recorded = incremental.settings_of(config)
    rules = set(incremental._RULES_BEFORE)  # (how blank ids are read: a rule of the release, no option)
    unnamed = sorted(name for name in recorded if incremental._flag(name) not in flags and name not in rules)
    assert not unnamed, unnamed


# -- a safety net for what the settings check cannot see ----------------------------------------------


def test_a_partition_of_other_columns_is_a_state_error(tmp_path: Path) -> None:
    """A state whose settings were edited by hand (--stitch-col recorded on, though its partitions have
    no stitched_user_id): the run stops with an error naming the partition, not Polars' "schema lengths
    differ", and writes nothing."""
    a, b = inputs(tmp_path)
    state, out = tmp_path / "state", tmp_path / "out"
    assert run(a, state, out, "--no-geo").exit_code == 0
    path = state / (state / "CURRENT").read_text() / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["settings"]["stitch_col"] = "True"
    path.write_text(json.dumps(manifest))
    before = snapshot(out)
    result = run(b, state, out, "--no-geo", "--stitch-col", "login")
    assert result.exit_code == 1, result.output
    message = json_error(result)["message"]
    assert "part-0.parquet holds other columns than the sessions of this run" in message, message
    assert "it lacks stitched_user_id" in message
    assert snapshot(out) == before


# -- states of the previous version -----------------------------------------------------------------


def old_state(tmp_path: Path, name: str) -> tuple[Path, list[str]]:
    """A copy of the stop 48 state ``name`` (its inputs, state and output directory), and its options."""
    here = tmp_path / name
    shutil.copytree(STATES / name, here)
    return here, list(json.loads((here / "options.json").read_text()))


@pytest.mark.parametrize("name", ["plain", "roles", "heartbeats"])
def test_a_state_of_the_previous_version_continues_with_its_options(tmp_path: Path, name: str) -> None:
    """A state written by the previous release (without the settings recorded since, and engaged time
    as ``EngagedTime(...)``) continues with the options it was built with, with no warning but the blank
    ids' one: the session table is that of one run over both inputs, and the state records today's
    settings."""
    here, options = old_state(tmp_path, name)
    result = run(here / "b.csv", here / "state", here / "out", *options)
    assert result.exit_code == 0, result.output
    # Only the one warning every state of that release gets: ids of only whitespace are read as none now.
    assert [warning for warning in warnings_of(result) if "ids of only whitespace" not in warning] == []
    assert len(warnings_of(result)) == 1
    whole = tmp_path / "whole.parquet"
    one = CliRunner().invoke(
        app, ["run", str(here / "a.csv"), str(here / "b.csv"), "-o", str(whole), *options, "-q"]
    )
    assert one.exit_code == 0, one.output
    assert_frame_equal(
        table(here / "out").drop("is_final"), pl.read_parquet(whole).sort(KEYS), check_row_order=True
    )
    recorded = settings(here / "state")
    assert "engaged" not in recorded
    assert set(recorded) == set(incremental.settings_of(RunConfig.from_options(**_keywords(options))))


def _keywords(options: list[str]) -> dict[str, Any]:
    """The keywords of the flags in ``options`` (each a flag and a value, or ``--no-geo``)."""
    keywords: dict[str, Any] = {"state": "st", "output_dir": "out"}
    items = iter(options)
    for flag in items:
        key = flag.removeprefix("--").replace("-", "_")
        keywords[key] = True if flag == "--no-geo" else next(items)
    return keywords


#: Runs on a state of the previous version with options other than its own: (the state, the options
#: left out, the options added, the difference refused or None where the run continues).
CHANGES_ON_OLD_STATES = {
    # Read from the state's events, which keep the login id: F4's "schema lengths differ" otherwise.
    "stitch-col-off": ("roles", ["--stitch-col", "login"], [], "(--stitch-col on -> off)"),
    "stitch-col-on": ("plain", [], ["--stitch-col", "login"], "(--stitch-col off -> on)"),
    "engagement-off": (
        "roles",
        ["--engagement-time-col", "engagement_ms"],
        [],
        "(--engagement-time-col on -> off)",
    ),
    "heartbeat-time-off": (
        "heartbeats",
        ["--heartbeat-time-col", "sent_at"],
        [],
        "(--heartbeat-time-col on -> off)",
    ),
    # engaged's EngagedTime(...) read as the flags.
    "heartbeat-interval": (
        "heartbeats",
        ["--heartbeat-interval", "20s"],
        ["--heartbeat-interval", "30s"],
        "(--heartbeat-interval 0:00:20 -> 0:00:30)",
    ),
    "heartbeats-off": (
        "heartbeats",
        ["--heartbeat-events", "page_ping", "--heartbeat-interval", "20s", "--heartbeat-time-col", "sent_at"],
        [],
        "(--heartbeat-events page_ping -> '', --heartbeat-time-col on -> off)",
    ),
    # The state's --min-visit-length 9s counted nothing without heartbeats.
    "min-visit-length": ("roles", ["--min-visit-length", "9s"], [], None),
    # The previous version kept no trace of these: the run's are taken (and recorded).
    "ignore-referrer-on": ("plain", [], ["--ignore-referrer-col", "ignore_ref"], None),
    "geo-on": ("plain", ["--no-geo"], ["--geoip-db", str(CITY_DB)], None),
}


@pytest.mark.parametrize("change", CHANGES_ON_OLD_STATES)
def test_a_state_of_the_previous_version_with_other_options(tmp_path: Path, change: str) -> None:
    """A state of the previous version is compared on what it records or what its events show, and a
    setting it records in a form of its own (``engaged``) is compared by today's rules and flags."""
    name, left_out, added, difference = CHANGES_ON_OLD_STATES[change]
    here, options = old_state(tmp_path, name)
    at = options.index(left_out[0]) if left_out else len(options)
    assert options[at : at + len(left_out)] == left_out
    changed = [*options[:at], *options[at + len(left_out) :], *added]
    before = snapshot(here / "out")
    result = run(here / "b.csv", here / "state", here / "out", *changed)
    if difference is not None:
        refused(result, difference)
        assert snapshot(here / "out") == before
        return
    assert result.exit_code == 0, result.output
    # Recorded now: the next run with the state's former options is compared with them.
    back = write_text(
        here / "c.csv", (here / "b.csv").read_text().replace("2024-05-01T10:", "2024-05-01T11:")
    )
    assert run(back, here / "state", here / "out", *options).exit_code == (0 if name == "roles" else 2)


def test_a_refusal_names_the_secret_but_shows_nothing_of_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review 60: a run with another --hash-user-ids secret was refused with both secrets' fingerprints
    (``scrypt:9f3c... -> scrypt:41aa...``; a state of 0.2 keeps a bare SHA-256, which costs nanoseconds a
    guess) in a message that goes to cron's mail and logs. It now says that the secret is another."""
    monkeypatch.setenv("ONE_SECRET", "the first secret")
    monkeypatch.setenv("OTHER_SECRET", "the second secret")
    assert run_incremental(EVENTS, tmp_path, "--hash-user-ids", "ONE_SECRET").exit_code == 0
    state = tmp_path / "state"
    manifest = state / (state / "CURRENT").read_text().strip() / "manifest.json"
    fingerprint = json.loads(manifest.read_text())["settings"]["hash_user_ids"]
    other = run_incremental(EVENTS, tmp_path, "--hash-user-ids", "OTHER_SECRET")
    assert other.exit_code == 2
    message = json.loads(other.stderr.strip().splitlines()[-1])["message"]
    assert "(--hash-user-ids: another secret)" in message
    assert "scrypt" not in message and fingerprint.removeprefix("scrypt:")[:8] not in message
    off = run_incremental(EVENTS, tmp_path)
    assert off.exit_code == 2
    assert "(--hash-user-ids on -> off)" in json.loads(off.stderr.strip().splitlines()[-1])["message"]
