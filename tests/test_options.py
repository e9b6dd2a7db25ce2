"""The flat options at the edges (review 60): a config file reads the same through ``--config`` and
``RunConfig.from_toml``, every keyword of the wrong type is a usage error naming its flag, one path is one
input, and a frame's events are held to the valid range as a file's are."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import sessionize
from sessionize import cli, pipeline
from sessionize.config import RunConfig, load_toml
from sessionize.errors import OutOfRangeError, UsageError
from tests.helpers import EVENTS, KEYS, REPO, flat, run_cli, write_text

EVENTS_CSV = (
    "user_id,timestamp,event,url,referrer\n"
    "u1,2024-05-01T10:00:00Z,page_view,https://a.example/,https://www.google.com/\n"
    "u1,2024-05-01T10:05:00Z,purchase,https://a.example/buy,\n"
    "u1,2024-05-01T10:06:00Z,page_view,https://a.example/thanks,\n"
    "u2,2024-05-01T11:00:00Z,page_view,https://a.example/,\n"
)

#: Every comma-separated list option: a value as an array, and the same as the flag's text.
LIST_OPTIONS: dict[str, list[str]] = {
    "pageview-events": ["page_view", "screen_view"],
    "conversion-events": ["purchase", "sign_up"],
    "internal-domains": ["a.example", "b.example"],
    "heartbeat-events": ["page_ping"],
    "session-id-nulls": ["-1", "0"],
    "page-activity-events": ["page_ping", "scroll"],
    "unnest-params": ["event_params"],
    "count-events": ["purchase", "orders=Order Completed"],
    "drop-columns": ["ip", "city"],
}


class _Captured(Exception):
    pass


def cli_config(monkeypatch: pytest.MonkeyPatch, *args: str | Path) -> RunConfig:
    """The RunConfig ``sessionize run ARGS`` builds (the run itself is not made)."""
    seen: list[RunConfig] = []

    def capture(inputs: Any, *, config: RunConfig, progress: Any = None) -> Any:
        seen.append(config)
        raise _Captured

    monkeypatch.setattr(pipeline, "run", capture)
    result = run_cli(*args)
    assert seen, result.output
    return seen[0]


def comparable(config: RunConfig) -> RunConfig:
    """``config`` without what differs between two builds of the same options (the default end of the
    valid range is the build's now, and -o is ``-`` when the CLI's stdout is not a terminal)."""
    return dataclasses.replace(
        config,
        read=dataclasses.replace(config.read, valid_until=None),
        output=dataclasses.replace(config.output, output=None),
    )


# F1: a config file's arrays ------------------------------------------------------------------------


@pytest.mark.parametrize("key", list(LIST_OPTIONS))
def test_a_toml_array_is_the_list_it_holds_in_the_cli_and_from_toml(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, key: str
) -> None:
    """``pageview-events = ["page_view"]`` was the event name ``['page_view']`` through ``--config``
    (review 60 F1): every list option's array is read as the flag's comma-separated text is."""
    events = write_text(workdir / "e.csv", EVENTS_CSV)
    values = LIST_OPTIONS[key]
    items = ", ".join(f'"{value}"' for value in values)
    config_file = write_text(workdir / "c.toml", f"[run]\n{key} = [{items}]\n")
    from_file = cli_config(monkeypatch, events, "--no-geo", "--config", config_file)
    from_flag = cli_config(monkeypatch, events, "--no-geo", f"--{key}", ",".join(values))
    assert comparable(from_file) == comparable(from_flag)
    _, from_toml = RunConfig.from_toml(config_file, no_geo=True)
    assert comparable(from_toml) == comparable(from_file)


def test_page_views_of_a_toml_array_are_counted(workdir: Path) -> None:
    """End to end: the array's event names are the page views (0 page views before)."""
    events = write_text(workdir / "e.csv", EVENTS_CSV)
    config_file = write_text(
        workdir / "c.toml", '[run]\npageview-events = ["page_view"]\nconversion-events = ["purchase"]\n'
    )
    by_file = run_cli(events, "--no-geo", "--config", config_file, "-o", workdir / "file.csv")
    by_flag = run_cli(
        events,
        "--no-geo",
        "--pageview-events",
        "page_view",
        "--conversion-events",
        "purchase",
        "-o",
        "flag.csv",
    )
    assert by_file.exit_code == by_flag.exit_code == 0, by_file.output
    file_table, flag_table = pl.read_csv(workdir / "file.csv"), pl.read_csv(workdir / "flag.csv")
    assert file_table["pageview_count"].sum() == 3
    assert_frame_equal(file_table, flag_table)


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ("pageview-events = 5", "pageview-events"),
        ('pageview-events = ["page_view", 5]', "pageview-events"),
        ("drop-columns = true", "drop-columns"),
        ("timeout = 30", "timeout"),
        ('dedupe = "no"', "dedupe"),
        ('no-geo = "false"', "no-geo"),
        ("buckets = 3.5", "buckets"),
        ("user-col = 7", "user-col"),
        ("valid-from = 10:00:00", "valid-from"),
        ("log-format = true", "log-format"),
        ('log-format = "jsn"', "log-format"),
        ('quiet = "yes"', "quiet"),
        ('preset = "ga5"', "preset"),
        ("inputs = [1]", "inputs"),
        ("filter = 3", "filter"),
        ("agg = 3", "agg"),
    ],
)
def test_a_key_of_the_wrong_type_is_a_usage_error_naming_it(workdir: Path, body: str, named: str) -> None:
    """In the CLI (exit 2, nothing written) and in from_toml alike: the same message."""
    events = write_text(workdir / "e.csv", EVENTS_CSV)
    config_file = write_text(workdir / "c.toml", f"[run]\n{body}\n")
    result = run_cli(events, "--no-geo", "--config", config_file, "-o", workdir / "o.csv")
    assert result.exit_code == 2, result.output
    assert f"{named}=" in flat(result.output)
    assert not (workdir / "o.csv").exists()
    with pytest.raises(UsageError, match=rf"c\.toml: {named} = "):
        RunConfig.from_toml(config_file)


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ('timeout = "20m"\n[run]\nno-geo = true', "'timeout' outside the [run] table"),
        ('[run]\nno-geo = true\n[rnu]\ntimeout = "20m"', "'rnu' outside the [run] table"),
        (
            '[run]\ncount_events = "purchase"\ncount-events = "sign_up"',
            "'count_events' and 'count-events' are",
        ),
        ('[run]\naggregates = ["n=count(*)"]\nagg = ["m=count(*)"]', "'aggregates' and 'agg' are the same"),
        ('input = "a.csv"\ninputs = ["b.csv"]', "'input' and 'inputs' are the same option"),
    ],
)
def test_a_key_the_run_would_not_take_is_a_usage_error(workdir: Path, body: str, said: str) -> None:
    """Review of stop 57: a key above the [run] header, or a misspelt table beside it, was ignored (the run
    went on with the default timeout), and of one option given under two spellings the last one won."""
    events = write_text(workdir / "e.csv", EVENTS_CSV)
    config_file = write_text(workdir / "c.toml", body + "\n")
    result = run_cli(events, "--no-geo", "--config", config_file, "-o", workdir / "o.csv")
    assert result.exit_code == 2, result.output
    assert flat(said) in flat(result.output), result.output
    assert not (workdir / "o.csv").exists()
    with pytest.raises(UsageError, match=re.escape(said)):
        RunConfig.from_toml(config_file)


# F3, F6: one reader of config files ----------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        'preset = "ga4"',
        'preset = "snowplow"\nexclude-bots = false',
        'log-format = "json"\nquiet = true\ndebug = false',
        'buckets = "3"',
        "buckets = 3",
        "valid-from = 2024-01-01",
        "valid-until = 2030-01-01T00:00:00Z",
        "valid-until = 2030-01-01T00:00:00",
        'agg = "n=count(*)"',
        'agg = ["n=count(*)"]',
        '[run.agg]\nn = "count(*)"',
        'filter = "event=page_view"',
        '[run.filter]\nevent = "page_view"',
        '[run.filter]\nevent = ["page_view", "purchase"]',
        "memory-limit = 1000000000",
        'memory-limit = "1GiB"',
        'anonymize-ip = "before-geo"',
        'shared-session-ids = "MERGE"',
        'user-fallback-col = ""',
    ],
)
def test_the_cli_and_from_toml_build_the_same_config_from_one_file(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, body: str
) -> None:
    """The same file gave different runs (``dedupe = "no"`` off in the CLI, on in Python), or an
    AttributeError in Python (a TOML date), or an unknown option (``preset``, ``log-format``): review 60
    F3, F6. Both read it with :func:`load_toml` and build with :meth:`RunConfig.build`."""
    events = write_text(workdir / "e.csv", EVENTS_CSV)
    config_file = write_text(workdir / "c.toml", body if body.startswith("[") else f"[run]\n{body}\n")
    from_cli = cli_config(monkeypatch, events, "--config", config_file)
    _, from_toml = RunConfig.from_toml(config_file)
    assert comparable(from_cli) == comparable(from_toml)


def test_from_toml_applies_the_preset_as_run_does(workdir: Path) -> None:
    config_file = write_text(workdir / "c.toml", '[run]\npreset = "snowplow"\ntimeout = "20m"\n')
    inputs, config = RunConfig.from_toml(config_file)
    assert inputs == []
    assert config.preset == "snowplow"
    assert config.read.columns.user == "domain_userid"
    expected = RunConfig.build({"timeout": "20m"}, preset="snowplow")
    assert comparable(config) == comparable(expected)
    # A preset given beside the file wins, as any other option.
    _, other = RunConfig.from_toml(config_file, preset="ga4")
    assert other.preset == "ga4" and other.read.columns.user == "user_pseudo_id"


def test_the_config_file_of_the_docs_is_read_by_from_toml(tmp_path: Path) -> None:
    """docs/incremental.md's example (with ``log-format``) was refused by from_toml (review 60 F3)."""
    text = (REPO / "docs" / "incremental.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```toml\n(.*?)```", text, flags=re.DOTALL)
    assert blocks
    for number, block in enumerate(blocks):
        path = write_text(tmp_path / f"{number}.toml", block)
        assert load_toml(path)
        RunConfig.from_toml(path)


def test_every_cli_flag_is_a_config_key() -> None:
    """The reader knows every flag of ``run``: the options, ``preset`` and the CLI's own."""
    import typer.main

    from sessionize.config import CLI_KEYS, OPTION_NAMES

    command = typer.main.get_command(cli.app).commands["run"]  # type: ignore[attr-defined]
    # --no-split-at-midnight (which turns off a preset's reset) is ``split-at-midnight = false`` in a file.
    flags = {p.name for p in command.params} - {"config", "inputs", "no_split_at_midnight"}
    assert flags == {*OPTION_NAMES, *CLI_KEYS, "preset"}


def test_log_formats_are_the_consoles() -> None:
    from sessionize import console
    from sessionize.config import LOG_FORMATS

    assert LOG_FORMATS == console.LOG_FORMATS


# F7: keywords of the wrong type -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "flag"),
    [
        ({"buckets": 3.5}, "--buckets"),
        ({"buckets": True}, "--buckets"),
        ({"partitions": "two"}, "--partitions"),
        ({"timeout": 30}, "--timeout"),
        ({"memory_limit": 1.5}, "--memory-limit"),
        ({"user_col": Path("user_id")}, "--user-col"),
        ({"dedupe": "no"}, "--dedupe"),
        ({"no_geo": "false"}, "--no-geo"),
        ({"pageview_events": 5}, "--pageview-events"),
        ({"internal_domains": ["a.example", 5]}, "--internal-domains"),
        ({"filter": {"event": 5}}, "--filter"),
        ({"aggregates": 5}, "--agg"),
        ({"valid_from": 20240101}, "--valid-from"),
        ({"output": 5}, "--output"),
        ({"timout": "5m"}, "timeout"),
    ],
)
def test_a_keyword_of_the_wrong_type_is_a_usage_error_naming_its_flag(
    tmp_path: Path, options: dict[str, Any], flag: str
) -> None:
    """A TypeError or AttributeError deep inside before, or (``dedupe="no"``) taken as true."""
    with pytest.raises(UsageError, match=flag):
        RunConfig.from_options(**options)
    with pytest.raises(UsageError, match=flag):
        sessionize.run([tmp_path / "missing.csv"], **options)
    assert list(tmp_path.iterdir()) == []


def test_keywords_take_their_python_values() -> None:
    """A date, whole-number text, and None (the default) are what they say."""
    defaults: dict[str, Any] = dict.fromkeys(
        ("pageview_events", "internal_domains", "conversion_events", "on_invalid")
    )
    config = RunConfig.from_options(
        valid_from=date(2024, 1, 1), buckets="3", timeout=timedelta(minutes=5), **defaults
    )
    assert config.read.valid_from == datetime(2024, 1, 1, tzinfo=UTC)
    assert config.engine.buckets == 3
    assert config.read.pageview_events == RunConfig.from_options().read.pageview_events
    assert config.session.internal_domains == () and config.session.conversion_events == ()
    assert config.read.on_invalid == "fail"


def test_a_config_that_is_not_a_run_config_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="config= takes a RunConfig"):
        sessionize.run([EVENTS], config={"no_geo": True})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"output": "sessions.csv"}, "output"),
        ({"report": "report.html"}, "report"),
        ({"pageviews_output": "pv.csv", "users_output": "users.csv"}, "pageviews_output, users_output"),
        ({"buckets": 4}, "buckets"),
        ({"on_invalid": "skip"}, "on_invalid"),
        ({"state": "state", "output_dir": "out"}, "state, output_dir"),
    ],
)
def test_a_frame_refuses_a_config_that_sets_options_for_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, options: dict[str, Any], named: str
) -> None:
    """Review of stop 57: sessionize(frame, output=...) is refused, but the same option in a config built
    for run() (config=RunConfig.from_options(output=...)) was ignored: no file, no word."""
    monkeypatch.chdir(tmp_path)
    frame = pl.read_csv(EVENTS)
    config = RunConfig.from_options(no_geo=True, **options)
    with pytest.raises(UsageError, match=f"The config sets {named}: options for files"):
        sessionize.sessionize(frame, config=config)
    with pytest.raises(UsageError, match=f"The config sets {named}"):
        sessionize.sessionize_tables(frame, config=config)
    assert list(tmp_path.iterdir()) == []
    plain = sessionize.sessionize(frame, config=RunConfig.from_options(no_geo=True)).collect()
    assert plain.height == sessionize.run([EVENTS], no_geo=True).session_count


@pytest.mark.parametrize(
    "frame",
    [
        pl.DataFrame({"user_id": ["a", "b"], "timestamp": ["2024-05-01T10:00:00Z", "not a time"]}),
        pl.DataFrame({"user_id": ["a", ""], "timestamp": ["2024-05-01T10:00:00Z"] * 2}),
    ],
    ids=["bad-time", "empty-user"],
)
def test_an_error_on_a_frames_rows_gives_advice_a_frame_takes(frame: pl.DataFrame) -> None:
    """Review of stop 57: the error told to pass --on-invalid skip, which sessionize() on a frame refuses."""
    with pytest.raises(sessionize.SessionizeError) as raised:
        sessionize.sessionize(frame, no_geo=True)
    said = " ".join(str(raised.value).split())
    assert "filter those rows out of the frame first" in said and "--on-invalid skip" not in said
    with pytest.raises(UsageError, match="on_invalid"):
        sessionize.sessionize(frame, no_geo=True, on_invalid="skip")


@pytest.mark.parametrize("events", ["events.csv", Path("events.csv")], ids=["text", "path"])
def test_sessionize_refuses_a_path_for_a_frame(events: Any) -> None:
    with pytest.raises(UsageError, match=r"Polars DataFrame or LazyFrame.*sessionize\.run"):
        sessionize.sessionize(events)


def test_sessionize_refuses_a_pandas_frame_with_the_conversion() -> None:
    pandas = pytest.importorskip("pandas")
    with pytest.raises(UsageError, match=r"pandas\.DataFrame.*pl\.from_pandas"):
        sessionize.sessionize(pandas.DataFrame({"user_id": ["u1"], "timestamp": ["2024-05-01T10:00:00Z"]}))


# F2: one path is one input ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [str, Path], ids=["text", "path"])
def test_one_path_given_alone_is_one_input(workdir: Path, kind: type) -> None:
    """``sessionize.run("events.csv")`` took each character as an input (``/`` first: the whole
    filesystem walked): review 60 F2."""
    events = write_text(workdir / "e.csv", EVENTS_CSV)
    alone = sessionize.run(kind(events), no_geo=True)
    listed = sessionize.run([events], no_geo=True)
    assert alone.files == listed.files == [str(events)]
    assert_frame_equal(alone.sessions.sort(KEYS), listed.sessions.sort(KEYS))
    assert [f.path for f in sessionize.resolve_inputs(kind(events))] == [str(events)]
    assert sessionize.read_events(kind(events)).height == 4
    sessionize.run([events], no_geo=True, output=workdir / "s.parquet")
    report = sessionize.make_report(kind(workdir / "s.parquet"), output=workdir / "r.html")
    assert report.data.sessions == 2
    assert sessionize.read_session_tables(kind(workdir / "s.parquet")).collect().height == 2


@pytest.mark.parametrize("inputs", [5, [5], b"events.csv", {"a": "b"}])
def test_inputs_of_another_type_are_a_usage_error(workdir: Path, inputs: Any) -> None:
    with pytest.raises(UsageError, match="path"):
        sessionize.run(inputs, no_geo=True)
    with pytest.raises(UsageError, match="path"):
        sessionize.make_report(inputs, output=workdir / "r.html")


# F9: a frame's valid range --------------------------------------------------------------------------


FUTURE = pl.DataFrame(
    {"user_id": ["u1", "u1"], "timestamp": ["2999-05-01T10:00:00Z", "2999-05-01T10:05:00Z"]}
)


def test_a_frames_events_after_the_valid_range_are_invalid_as_a_files(workdir: Path) -> None:
    """Events in 2999 were sessionized from a frame, refused from a file (review 60 F9)."""
    with pytest.raises(OutOfRangeError, match="outside the valid range"):
        sessionize.sessionize(FUTURE, no_geo=True)
    future_file = workdir / "future.csv"
    FUTURE.write_csv(future_file)
    with pytest.raises(OutOfRangeError, match="outside the valid range"):
        sessionize.run([future_file], no_geo=True)
    # valid_until and valid_from apply to a frame too, as keywords or in a config.
    table = sessionize.sessionize(FUTURE, no_geo=True, valid_until="3000-01-01").collect()
    assert table["event_count"].to_list() == [2]
    config = RunConfig.from_options(no_geo=True, valid_until="3000-01-01", valid_from="2999-05-01T10:03:00Z")
    with pytest.raises(OutOfRangeError, match="not before 2999-05-01T10:03:00"):
        sessionize.sessionize(FUTURE, config=config)
    whole = sessionize.run([future_file], no_geo=True, valid_until="3000-01-01")
    assert_frame_equal(table.sort(KEYS), whole.sessions.sort(KEYS), check_dtypes=False)


def test_a_config_built_once_takes_the_default_valid_until_at_each_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review of stop 57: the default --valid-until (a day after now) was taken when the config was built,
    so a service that builds its config once (docs/python.md) rejected every new event a day later as in
    the future. It is taken when each run starts."""
    from sessionize import config as config_module

    real = datetime

    class ThreeDaysAgo(real):  # type: ignore[misc, valid-type]
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return real.now(tz) - timedelta(days=3)

    monkeypatch.setattr(config_module, "datetime", ThreeDaysAgo)
    config = RunConfig.from_options(no_geo=True)
    monkeypatch.setattr(config_module, "datetime", real)
    recent = real.now(UTC) - timedelta(hours=1)
    events = pl.DataFrame({"user_id": ["u1"], "timestamp": [recent.strftime("%Y-%m-%dT%H:%M:%SZ")]})
    events.write_csv(tmp_path / "events.csv")
    assert sessionize.sessionize(events, config=config).collect().height == 1
    assert sessionize.run([tmp_path / "events.csv"], config=config).session_count == 1
    # Still a day: an event two days ahead is in the future, for this config as for keywords.
    ahead = pl.DataFrame({"user_id": ["u1"], "timestamp": [(recent + timedelta(days=2)).isoformat()]})
    with pytest.raises(OutOfRangeError, match="outside the valid range"):
        sessionize.sessionize(ahead, config=config)


def test_output_to_a_replaced_stdout_is_an_output_error_before_any_work() -> None:
    """Review of stop 57: under contextlib.redirect_stdout(io.StringIO()) (an embedding application),
    output="-" ended in a bare AttributeError ('StringIO' object has no attribute 'buffer') after the
    run. It is an OutputError, before any work, and nothing is written."""
    import contextlib
    import io as text_io

    replaced = text_io.StringIO()
    with contextlib.redirect_stdout(replaced), pytest.raises(sessionize.OutputError) as raised:
        sessionize.run([EVENTS], output="-", no_geo=True)
    assert "Cannot write -o -: standard output is a text stream (StringIO" in str(raised.value)
    assert replaced.getvalue() == ""
