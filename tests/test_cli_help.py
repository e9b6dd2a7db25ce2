"""Help that guides (issue 17, points 2 and 6): panels by purpose, examples, ``-h``, plain flags, choices
from the library's constants with clear errors, completion, did-you-mean, and a light start-up.

Everything through the real CLI (typer's CliRunner, or a subprocess for start-up and completion).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import get_args

import polars as pl
import pytest
import typer.core
import typer.main
from typer.testing import Result

from sessionize import cli, config, geo
from sessionize import schema as S
from sessionize.cli import app
from sessionize.io import INPUT_FORMATS, OUTPUT_FORMATS
from tests.helpers import invoke, words

PANELS = [
    "Input and columns",
    "Output",
    "Session rules",
    "Attribution",
    "Geolocation",
    "Devices and bots",
    "Privacy",
    "Bad input",
    "Scale",
    "Incremental",
    "Cluster (Dask, Spark)",
    "Logging",
]
HEAVY = ("plotly", "ua_parser", "crawlerdetect", "tldextract", "geoip2", "maxminddb", "dask", "pyarrow")


def run_command() -> typer.core.TyperCommand:
    """The (click) command behind ``sessionize run``."""
    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    command = group.commands["run"]
    assert isinstance(command, typer.core.TyperCommand)
    return command


def run_text(*args: str | Path) -> Result:
    """``sessionize run ARGS`` with text messages (as on a terminal)."""
    return invoke("run", *args, "--log-format", "text")


def message(result: Result) -> str:
    """stderr with rich's boxes and line breaks taken out."""
    return words(result.stderr)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "events.csv").write_text("user_id,timestamp\nu,2024-05-01T10:00:00Z\n", encoding="utf-8")
    return tmp_path


# --- the shape of the help ----------------------------------------------------------------------------


def test_dash_h_is_help_everywhere() -> None:
    for command in ([], ["run"], ["report"], ["geoip"], ["geoip", "info"]):
        short, long = invoke(*command, "-h"), invoke(*command, "--help")
        assert short.exit_code == long.exit_code == 0, command
        assert short.stdout == long.stdout and "Usage: sessionize" in short.stdout


def test_run_help_groups_options_in_panels_by_purpose() -> None:
    text = invoke("run", "--help").stdout
    titles = re.findall(r"^╭─ (.+?) ─", text, flags=re.M)
    assert titles == ["Arguments", "Options", *PANELS]
    # Every option of run is in a panel of its purpose, bar --config and --help.
    command = run_command()
    loose = [p.name for p in command.params if getattr(p, "rich_help_panel", None) is None]
    assert loose == ["inputs", "config"]


def test_run_help_has_examples_and_a_plain_usage_line() -> None:
    text = invoke("run", "--help", columns=100).stdout
    assert "Usage: sessionize run [OPTIONS] INPUT..." in text
    examples = text[text.index("Examples") :]
    for command in (
        "sessionize run sample_data/events.csv",
        "sessionize run /var/log/nginx/access.log -o sessions.parquet",
        "sessionize run - -o - --format parquet > s.parquet",
        "sessionize run 'logs/*.csv' --state state/ --output-dir sessions/",
    ):
        assert command in examples, command
    # The examples fit 100 columns as written: no line of them is wrapped.
    assert "IP Geolocation by DB-IP" in examples
    assert "{INPUT}" not in text and "<list[str]>" not in text


@pytest.mark.parametrize("command", [[], ["run"], ["report"], ["geoip", "info"]])
def test_flags_show_no_type(command: list[str]) -> None:
    text = invoke(*command, "--help").stdout
    assert "<bool>" not in text
    assert re.search(r"--help +-h +Show this message", text)


def test_boolean_options_are_plain_flags() -> None:
    command = run_command()
    options = [p for p in command.params if isinstance(p, typer.core.TyperOption)]
    booleans = [p for p in options if p.type_descriptor.annotation is bool]
    assert {p.name for p in booleans} >= {"dedupe", "no_geo", "exclude_bots", "csv_safe", "quiet", "debug"}
    assert all(p.is_flag for p in booleans)


def test_a_flag_given_a_value_says_it_takes_none(workdir: Path) -> None:
    result = run_text("events.csv", "--dedupe", "true", "-o", "out.csv")
    assert result.exit_code == 2
    assert "true: no such file or directory" in message(result)
    assert "--dedupe takes no value" in message(result)
    assert not (workdir / "out.csv").exists()
    # A file that is called true is an input like any other.
    (workdir / "true").write_text("user_id,timestamp\nv,2024-05-01T11:00:00Z\n", encoding="utf-8")
    both = run_text("events.csv", "--dedupe", "true", "--input-format", "csv", "-o", "out.csv")
    assert both.exit_code == 0, both.output
    assert pl.read_csv(workdir / "out.csv")["user_id"].to_list() == ["u", "v"]


def test_the_root_help_offers_completion() -> None:
    text = invoke("--help").stdout
    assert "--install-completion" in text and "--show-completion" in text


@pytest.mark.slow
def test_shell_completion_completes_choices_and_options(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "_SESSIONIZE_COMPLETE": "complete_bash",
        "COMP_WORDS": "sessionize run --format p",
        "COMP_CWORD": "3",
    }
    done = subprocess.run(
        [sys.executable, "-m", "sessionize"],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    # python -m names the program __main__.py: complete as the console script would.
    if "parquet" not in done.stdout:
        script = Path(sys.executable).parent / "sessionize"
        done = subprocess.run([script], env=env, capture_output=True, text=True, cwd=tmp_path, check=False)
    assert done.stdout.split() == ["parquet"]


# --- choices from the library's constants, with clear errors --------------------------------------------

CHOICES = [
    ("--format", OUTPUT_FORMATS),
    ("--input-format", INPUT_FORMATS),
    ("--time-unit", config.TIME_UNITS),
    ("--visitor-key", config.VISITOR_KEYS),
    ("--engine", config.ENGINES),
    ("--on-invalid", get_args(config.OnInvalid)),
    ("--ambiguous-time", config.AMBIGUOUS_TIMES),
    ("--anonymize-ip", config.ANONYMIZE_MODES),
    ("--log-format", ("auto", "text", "json")),
]


@pytest.mark.parametrize(("option", "choices"), CHOICES, ids=[option for option, _ in CHOICES])
def test_choices_are_the_library_constants(workdir: Path, option: str, choices: tuple[str, ...]) -> None:
    text_mode = [] if option == "--log-format" else ["--log-format", "text"]
    result = invoke("run", "events.csv", f"{option}=xlsx", *text_mode)
    assert result.exit_code == 2
    text = message(result)
    assert f"Invalid value for '{option}': 'xlsx' is not one of {', '.join(choices)}." in text
    assert "Value error" not in text
    for choice in choices:
        ok = invoke("run", "events.csv", "--no-geo", f"{option}={choice}", "-o", "-", "--log-format", "text")
        assert "is not one of" not in ok.stderr, (option, choice)


def test_a_mistyped_choice_gets_a_suggestion(workdir: Path) -> None:
    result = run_text("events.csv", "--format", "parqet")
    assert result.exit_code == 2
    assert "Did you mean parquet?" in message(result)


def test_numbers_are_checked_with_plain_words(workdir: Path) -> None:
    assert "'many' is not a whole number." in message(run_text("events.csv", "--buckets", "many"))
    assert "0 is less than 1." in message(run_text("events.csv", "--partitions", "0"))
    report = invoke("report", "s.parquet", "--top", "x", "--log-format", "text")
    assert report.exit_code == 2 and "'x' is not a whole number." in message(report)


def test_csv_safe_is_a_flag_of_run(workdir: Path) -> None:
    (workdir / "formula.csv").write_text(
        "user_id,timestamp,url\n=1+1,2024-05-01T10:00:00Z,@SUM(A1)\n", encoding="utf-8"
    )
    kept = run_text("formula.csv", "--no-geo", "-o", "kept.csv")
    safe = run_text("formula.csv", "--no-geo", "-o", "safe.csv", "--csv-safe")
    assert kept.exit_code == safe.exit_code == 0, safe.output
    assert "=1+1" in (workdir / "kept.csv").read_text() and "'=1+1" not in (workdir / "kept.csv").read_text()
    assert "'=1+1" in (workdir / "safe.csv").read_text() and "'@SUM(A1)" in (workdir / "safe.csv").read_text()


# --- did you mean ----------------------------------------------------------------------------------------


def test_an_unknown_column_gets_a_suggestion(workdir: Path) -> None:
    result = run_text("events.csv", "--user-col", "usrid", "-o", "-")
    assert result.exit_code == 1
    assert "has no column 'usrid' (given with --user-col; did you mean 'user_id'?)" in message(result)
    # A name equal to one column with case and punctuation ignored is that column.
    assert run_text("events.csv", "--user-col", "USERID", "-o", "-").exit_code == 0


def test_both_missing_required_columns_are_named_in_one_error(workdir: Path) -> None:
    (workdir / "odd.csv").write_text("usr_id,when\nu,2024-05-01T10:00:00Z\n", encoding="utf-8")
    text = message(run_text("odd.csv", "-o", "-"))
    assert "no user id column" in text and "no timestamp column" in text
    assert "Its columns are: usr_id, when." in text
    assert "--user-col (perhaps --user-col usr_id) and --time-col" in text
    wrong = message(run_text("events.csv", "--user-col", "usrid", "--time-col", "tiemstamp", "-o", "-"))
    assert "'usrid'" in wrong and "'tiemstamp'" in wrong and "did you mean 'timestamp'?" in wrong


def test_a_column_a_flag_took_is_named_where_a_role_misses_it(workdir: Path) -> None:
    """``--session-col user_id`` takes the column the user id would be: "no user id column" and the whole
    listing, which holds ``user_id``, left the reader puzzled. The message says which flag took it."""
    text = message(run_text("events.csv", "--session-col", "user_id", "-o", "-"))
    assert "no user id column ('user_id' is taken by --session-col)" in text
    assert "Name the column with --user-col." in text
    time = message(run_text("events.csv", "--url-col", "timestamp", "-o", "-"))
    assert "no timestamp column ('timestamp' is taken by --url-col)" in time


def test_the_listing_of_columns_is_capped(workdir: Path) -> None:
    """An NDJSON file whose objects hold 2,000 distinct keys gave a 40 KB message listing every column."""
    keys = {f"key_{n:04d}": n for n in range(2000)}
    (workdir / "wide.ndjson").write_text(json.dumps(keys) + "\n", encoding="utf-8")
    listed = S.column_listing(list(keys))
    assert listed.startswith("key_0000, key_0001,") and listed.endswith(f"and {2000 - S.LISTED_COLUMNS} more")
    assert S.column_listing([]) == "(none)" and S.column_listing(["a", "b"]) == "a, b"
    more = f" and {2000 - S.LISTED_COLUMNS} more."
    for flags in ([], ["--user-col", "key_0001", "--time-col", "stamp"], ["--unnest-params", "params"]):
        result = invoke("run", "wide.ndjson", *flags, "-o", "-", "--log-format", "json")
        text = json.loads(result.stderr)["message"]
        assert "Its columns are: key_" in text and more in text and len(text) < 2000, text[:300]
    (workdir / "sessions.csv").write_text(",".join(keys) + "\n", encoding="utf-8")
    report = json.loads(invoke("report", "sessions.csv", "-o", "r.html", "--log-format", "json").stderr)
    assert f"Its columns are: {listed}." in report["message"] and len(report["message"]) < 2000


def test_an_unknown_config_key_gets_a_suggestion(workdir: Path) -> None:
    (workdir / "s.toml").write_text('[run]\ntimeot = "10m"\n', encoding="utf-8")
    result = invoke("run", "events.csv", "--config", "s.toml", "--log-format", "json")
    assert result.exit_code == 2
    line = json.loads(result.stderr)
    assert "unknown option 'timeot'. Did you mean 'timeout'?" in line["message"]


# --- start-up -------------------------------------------------------------------------------------------


def test_the_geo_constants_of_the_help_are_the_geo_packages() -> None:
    assert cli.GEOIP_ENV_VAR == geo.ENV_VAR
    assert cli.DBIP_ATTRIBUTION == geo.DBIP_ATTRIBUTION


@pytest.mark.slow
@pytest.mark.parametrize("args", [["--version"], ["--help"], ["run", "--help"]])
def test_start_up_imports_no_heavy_module(tmp_path: Path, args: list[str]) -> None:
    code = (
        "import sys\n"
        "from sessionize.cli import main\n"
        f"sys.argv = ['sessionize', *{args!r}]\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print('LOADED', [m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True, timeout=60
    )
    assert done.stdout.splitlines()[-1] == "LOADED []"


def test_the_package_imports_its_api_on_first_use(tmp_path: Path) -> None:
    code = (
        "import sys, sessionize\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])\n"
        "print(sessionize.run.__module__, sessionize.SESSION_SCHEMA is not None,"
        " sessionize.schema.__name__)\n"
        "print(sorted(set(sessionize.__all__) - set(dir(sessionize))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True, timeout=60
    )
    assert done.stdout.splitlines() == ["[]", "sessionize.pipeline True sessionize.schema", "[]"]


def test_csv_safe_help_names_every_character_it_neutralises() -> None:
    # A stop-55 review: the help named =, +, -, @ while the code (and docs/output.md) also take a tab, a
    # carriage return and NUL at the start.
    from sessionize.io.write import FORMULA_START

    option = next(p for p in run_command().params if p.name == "csv_safe")
    assert isinstance(option, typer.core.TyperOption)
    help_text = option.help or ""
    names = {"\t": "a tab", "\r": "a carriage return", "\0": "NUL"}
    for character in FORMULA_START:
        assert names.get(character, character) in help_text, character
