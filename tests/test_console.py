"""The console layer (issue 17, point 1): text is never read as markup, and with JSON every outcome of a
command is exactly one JSON line on stderr.

Bracketed values, URLs and file names go through the real CLI (typer's CliRunner, and subprocesses
where a pipe matters) into the preview, the summary, the warnings and the errors, and must come out
as written, without a MarkupError.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from rich.console import Console
from rich.text import Text
from typer.testing import Result

from sessionize import cli, console
from sessionize.engines.base import RunProgress
from tests import helpers
from tests.helpers import CITY_DB, flat

HOSTILE_URLS = [
    "https://shop.example/?page[number]=2&filter[color]=red",
    "https://shop.example/list?sort[/price]=asc",
    "https://shop.example/[bold]x[/bold]",
]
HOSTILE_USER = "[/red]"
HOSTILE_FILE = "copy [red].csv"
MARKUP_LIKE = [
    *HOSTILE_URLS,
    HOSTILE_USER,
    HOSTILE_FILE,
    "'sessionize[dask]'",
    "[run]",
    "a\\[b]",
    "x\\",
    "[@click]",
]


def invoke(*args: str | Path, columns: int = 250) -> Result:
    """``sessionize ARGS`` (see ``helpers.invoke``) on a terminal 250 columns wide."""
    return helpers.invoke(*args, columns=columns)


def hostile_events(directory: Path, name: str = HOSTILE_FILE) -> Path:
    rows = [
        f"{HOSTILE_USER},2024-05-01T10:00:00Z,{HOSTILE_URLS[0]},",
        f"u2,2024-05-01T10:00:00Z,{HOSTILE_URLS[1]},https://ref.example/[i]",
        f"u3,2024-05-01T11:00:00Z,{HOSTILE_URLS[2]},",
    ]
    path = directory / name
    path.write_text("user_id,timestamp,url,referrer\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


# --- escaping --------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", MARKUP_LIKE)
def test_escaped_text_renders_as_itself(value: str) -> None:
    assert Text.from_markup(console.escape(value)).plain == value


def test_consoles_read_no_markup_or_emoji_codes() -> None:
    out = console.make_console(stderr=False, terminal=False)
    out.file = io.StringIO()
    for value in [*MARKUP_LIKE, ":smile:"]:
        out.print(value)
        out.print(console.text(value))
    printed = out.file.getvalue().splitlines()
    assert printed == [value for value in [*MARKUP_LIKE, ":smile:"] for _ in range(2)]


# --- bracketed text through the real CLI -------------------------------------------------------------


def test_the_preview_shows_bracketed_values_as_they_are(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hostile_events(workdir)
    monkeypatch.setattr(cli, "_stdout_is_terminal", lambda: True)
    result = invoke("run", HOSTILE_FILE, "--no-geo", "--log-format", "text", columns=250)
    assert result.exit_code == 0, result.output
    for value in [*HOSTILE_URLS, HOSTILE_USER]:
        assert value in result.stdout
    assert "First 3 of 3 sessions" in result.stdout


ESCAPES = "\x1b]0;PWNED\x07\x1b[2J\x1b[31m\r\u202e"


def test_control_characters_reach_the_terminal_as_escapes(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A value or a file name written by a stranger holds ESC sequences (set the window title, clear
    the screen) or a CR: the preview, the warnings and the error panel show them as escapes."""
    (workdir / "ansi.csv").write_text(
        f"user_id,timestamp,url\nu{ESCAPES},2024-05-01T10:00:00Z,https://s.example/{ESCAPES}\n",
        encoding="utf-8",
    )
    monkeypatch.setattr(cli, "_stdout_is_terminal", lambda: True)
    result = invoke("run", "ansi.csv", "--no-geo", "--log-format", "text")
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.stdout and "\u202e" not in result.stdout and "\r" not in result.stdout
    assert "u\\x1b]0;PWNED\\x07" in result.stdout
    bad = workdir / f"bad{ESCAPES}.csv"
    bad.write_text("user_id,timestamp\nu,not a time\n", encoding="utf-8")
    failed = invoke("run", bad.name, "-o", "out.csv", "--log-format", "text")
    assert failed.exit_code == 1
    assert "\x1b" not in failed.stderr and "\r" not in failed.stderr
    assert "bad\\x1b]0;PWNED" in flat(failed.stderr)


def test_the_summary_names_a_bracketed_output_as_it_is(workdir: Path) -> None:
    hostile_events(workdir)
    result = invoke("run", HOSTILE_FILE, "--no-geo", "-o", "out [bold].csv", "--log-format", "text")
    assert result.exit_code == 0, result.output
    assert re.search(r"written to +out \[bold\]\.csv \(csv\)", result.stderr)
    table = pl.read_csv((workdir / "out [bold].csv").read_bytes(), infer_schema=False)
    assert sorted(table["landing_page"].to_list()) == sorted(HOSTILE_URLS)


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_errors_name_bracketed_files_and_values_as_they_are(workdir: Path, log_format: str) -> None:
    missing = invoke("run", "missing [red].csv", "-o", "out.csv", "--log-format", log_format)
    assert missing.exit_code == 1
    (workdir / "bad [red].csv").write_text("user_id,timestamp\nu,[/red]\n", encoding="utf-8")
    bad = invoke("run", "bad [red].csv", "-o", "out.csv", "--log-format", log_format)
    assert bad.exit_code == 1
    if log_format == "json":
        assert "missing [red].csv" in json.loads(missing.stderr)["message"]
        message = json.loads(bad.stderr)["message"]
        assert "bad [red].csv" in message and "'[/red]'" in message
    else:
        assert "missing[red].csv" in flat(missing.stderr)
        assert "bad[red].csv" in flat(bad.stderr) and "'[/red]'" in flat(bad.stderr)
    assert "MarkupError" not in missing.output + bad.output


def test_warnings_name_bracketed_files_as_they_are(workdir: Path) -> None:
    # Epochs in seconds and in nanoseconds: a warning that names the file.
    (workdir / "mixed [red].csv").write_text(
        "user_id,timestamp\nu,1714557600\nu,1714557700000000000\n", encoding="utf-8"
    )
    text = invoke("run", "mixed [red].csv", "--no-geo", "-o", "o.csv", "--log-format", "text")
    assert text.exit_code == 0, text.output
    assert "Warning: " in text.stderr and "mixed[red].csv" in flat(text.stderr)
    line = json.loads(
        invoke("run", "mixed [red].csv", "--no-geo", "-o", "o.csv", "--log-format", "json").stderr
    )
    assert any("mixed [red].csv" in warning for warning in line["warnings"])


def test_help_keeps_bracketed_words() -> None:
    result = invoke("run", "--help", columns=250)
    assert result.exit_code == 0
    assert "pip install 'sessionize[dask]'" in result.stdout
    assert "([run] table" in result.stdout


# --- one JSON line per outcome -------------------------------------------------------------------------


def good_events(directory: Path) -> Path:
    path = directory / "events.csv"
    path.write_text("user_id,timestamp\nu,2024-05-01T10:00:00Z\nu,2024-05-01T10:05:00Z\n", encoding="utf-8")
    return path


OUTCOMES: dict[str, tuple[list[str], int, str]] = {
    "success": (["-o", "out.csv"], 0, "ok"),
    "usage error from the library": (["-o", "out.csv", "--timeout", "soon"], 2, "UsageError"),
    "bad choice": (["-o", "out.csv", "--format", "xlsx"], 2, "BadParameter"),
    "unknown option": (["--frmat", "csv"], 2, "NoSuchOption"),
    "bad number": (["--buckets", "many"], 2, "BadParameter"),
    "flag given a value": (["--dedupe", "true"], 2, "BadParameter"),
    "unknown config key": (["--config", "bad.toml"], 2, "BadParameter"),
    "data error": (["-o", "out.csv", "--user-col", "usrid"], 1, "MissingColumnError"),
}


@pytest.mark.parametrize("how", ["--log-format json", "auto (stderr is not a terminal)"])
@pytest.mark.parametrize("outcome", list(OUTCOMES))
def test_every_outcome_of_run_is_one_json_line(workdir: Path, outcome: str, how: str) -> None:
    good_events(workdir)
    (workdir / "bad.toml").write_text('[run]\ntimeot = "10m"\n', encoding="utf-8")
    extra, code, kind = OUTCOMES[outcome]
    args = ["run", "events.csv", "--no-geo", *extra]
    if how.startswith("--log-format"):
        # After the problem, so that it is found before the option is parsed.
        args += ["--log-format", "json"]
    result = invoke(*args)
    assert result.exit_code == code, result.output
    (line,) = json_lines(result.stderr)
    assert line["exit_code"] == code
    if kind == "ok":
        assert line["status"] == "ok" and line["sessions"] == 1
    else:
        assert line["status"] == "error" and line["error"] == kind and line["message"]
    assert result.stdout == ""


def test_text_mode_errors_are_panels_not_json(workdir: Path) -> None:
    good_events(workdir)
    result = invoke("run", "events.csv", "--frmat", "csv", "--log-format", "text")
    assert result.exit_code == 2
    assert "Usage: sessionize run [OPTIONS] INPUT..." in result.stderr
    assert "No such option: --frmat" in result.stderr
    assert not result.stderr.lstrip().startswith("{")


def test_a_held_lock_is_one_json_line_with_exit_75(workdir: Path) -> None:
    good_events(workdir)
    state = workdir / "state"
    state.mkdir()
    with open(state / ".lock", "w") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)
        holder.write("pid 4242 since 2024-05-01T00:00:00Z")
        holder.flush()
        result = invoke("run", "events.csv", "--state", "state", "--output-dir", "out", "--no-geo")
    assert result.exit_code == 75
    (line,) = json_lines(result.stderr)
    assert line["status"] == "error" and line["exit_code"] == 75 and line["error"] == "StateLockedError"
    assert "pid 4242" in line["message"]


def test_report_outcomes_are_one_json_line(workdir: Path) -> None:
    good_events(workdir)
    assert invoke("run", "events.csv", "--no-geo", "-o", "s.parquet", "-q").exit_code == 0
    ok = invoke("report", "s.parquet", "-o", "r.html", "--log-format", "json")
    assert ok.exit_code == 0, ok.output
    (line,) = json_lines(ok.stderr)
    assert line["status"] == "ok" and line["sessions"] == 1 and line["output"] == "r.html"
    assert line["size_bytes"] == (workdir / "r.html").stat().st_size
    failed = invoke("report", "events.csv", "-o", "r2.html")
    assert failed.exit_code == 1
    (line,) = json_lines(failed.stderr)
    assert line["status"] == "error" and line["error"] == "NotASessionTableError"
    usage = invoke("report", "s.parquet", "--top", "0")
    assert usage.exit_code == 2
    (line,) = json_lines(usage.stderr)
    assert line["exit_code"] == 2 and "--top" in line["message"]


def test_the_json_summary_carries_every_figure_of_the_panel(workdir: Path) -> None:
    (workdir / "e.csv").write_text(
        "user_id,timestamp,ip,user_agent\n"
        "u,2024-05-01T10:00:00Z,81.2.69.142,Mozilla/5.0\n"
        "u,2024-05-01T10:00:00Z,81.2.69.142,Mozilla/5.0\n"
        "bot,2024-05-01T10:00:00Z,10.0.0.1,Googlebot/2.1 (+http://www.google.com/bot.html)\n"
        ",2024-05-01T10:00:00Z,,\n",
        encoding="utf-8",
    )
    common: list[str | Path] = [
        "run",
        "e.csv",
        "--geoip-db",
        CITY_DB,
        "--dedupe",
        "--on-invalid",
        "skip",
        "--report",
        "r.html",
    ]
    text = invoke(*common, "-o", "t.csv", "--log-format", "text")
    assert text.exit_code == 0, text.output
    line = json.loads(invoke(*common, "-o", "j.csv", "--log-format", "json").stderr)
    shown = flat(text.stderr)
    # Each figure of the panel, and its value in the line.
    for label, key, value in [
        ("rejected", "rejected", 1),
        ("duplicatesremoved", "duplicates_removed", 1),
        ("botsessions", "bot_sessions", 1),
        ("users", "users", 2),
        ("sessions", "sessions", 2),
        ("medianduration", "median_duration_s", 0.0),
        ("locatedbyIP", "geo", {"resolved": 1, "private": 1}),
        ("report", "report", "r.html"),
        ("writtento", "output_format", "csv"),
        ("path", "path", "in memory"),
    ]:
        assert label in shown, label
        assert line[key] == value, key
    assert line["geo_database"] == str(CITY_DB) and line["peak_memory_mib"] > 0


def test_every_figure_of_a_run_has_its_json_fields(workdir: Path) -> None:
    import sessionize

    good_events(workdir)
    result = sessionize.run(["events.csv"], no_geo=True)
    figures, fields = cli.run_figures(result, report="r.html")
    assert [f for f in figures if not f.fields] == []
    for figure in figures:
        for key in figure.fields:
            assert key in fields, key


# --- nothing wrapped or cut off a terminal --------------------------------------------------------------


def sessionize_process(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "80", "NO_COLOR": "1"}
    env.pop("FORCE_COLOR", None)
    return subprocess.run(
        [sys.executable, "-m", "sessionize", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


@pytest.mark.slow
def test_geoip_info_in_a_pipe_gives_the_whole_path(tmp_path: Path) -> None:
    deep = tmp_path / ("a-long-directory-name-" * 4) / ("and-another-one-[with]-brackets-" * 3)
    deep.mkdir(parents=True)
    database = deep / "GeoIP2-City-Test.mmdb"
    database.write_bytes(CITY_DB.read_bytes())
    done = sessionize_process("geoip", "info", "--geoip-db", str(database), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (path_line,) = [line for line in done.stdout.splitlines() if line.startswith("path")]
    assert path_line.split(maxsplit=1)[1] == str(database)
    assert all(line == line.rstrip() for line in done.stdout.splitlines())
    as_json = sessionize_process("geoip", "info", "--geoip-db", str(database), "--json", cwd=tmp_path)
    info = json.loads(as_json.stdout)
    assert info["path"] == str(database) and info["type"] == "GeoIP2-City" and info["built"] == "2026-02-04"
    missing = sessionize_process("geoip", "info", "--geoip-db", "nope [x].mmdb", "--json", cwd=tmp_path)
    assert missing.returncode == 1 and missing.stdout == ""
    (line,) = json_lines(missing.stderr)
    assert line["status"] == "error" and "nope [x].mmdb" in line["message"]


@pytest.mark.slow
def test_a_text_summary_off_a_terminal_is_not_wrapped(tmp_path: Path) -> None:
    good_events(tmp_path)
    output = "sessions-" + "x" * 150 + ".csv"
    done = sessionize_process(
        "run", "events.csv", "-o", output, "--no-geo", "--log-format", "text", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert f"{output} (csv)" in done.stderr


# --- the preview and the progress -----------------------------------------------------------------------


def test_the_preview_fits_the_terminal(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    long_url = "https://shop.example/" + "very-long-path/" * 12
    (workdir / "e.csv").write_text(
        "user_id,timestamp,url\n"
        f"someone-with-a-rather-long-user-id-0001,2024-05-01T10:00:00.123456Z,{long_url}\n"
        "someone-with-a-rather-long-user-id-0001,2024-05-01T10:12:05Z,https://shop.example/b\n"
        "u2,2024-05-01T11:00:00Z,https://shop.example/\n",
        encoding="utf-8",
    )
    monkeypatch.setattr(cli, "_stdout_is_terminal", lambda: True)
    result = invoke("run", "e.csv", "--no-geo", "-q", columns=80)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 80
    (first,) = [line for line in lines if line.startswith("someone")]
    # Cut with an ellipsis, never wrapped; a short timestamp; the duration rounded and right-aligned.
    assert first.rstrip().endswith("\N{HORIZONTAL ELLIPSIS}") and "https://shop.example/" in first
    assert "2024-05-01 10:00 " in first and ".123456" not in first
    assert re.search(r" 12m 05s  +2 ", first)
    assert len([line for line in lines if line.strip()]) == 4  # title, header, two sessions


def test_a_narrow_terminal_leaves_out_columns_before_cutting_the_landing_page() -> None:
    rows = [
        {
            "user_id": "u1",
            "session_number": 1,
            "session_start": datetime(2024, 5, 1, 10, 0),
            "duration_s": 61.4,
            "pageview_count": 1234,
            "traffic_source": "google",
            "channel": "Organic Search",
            "country_code": None,
            "landing_page": "https://shop.example/" + "p" * 60,
        }
    ]
    wide = [column.name for column, _, _ in console.preview_layout(rows, 200)]
    assert wide == [
        "user_id",
        "session_number",
        "session_start",
        "duration_s",
        "pageview_count",
        "traffic_source",
        "channel",
        "landing_page",
    ]
    narrow = console.preview_layout(rows, 70)
    names = [column.name for column, _, _ in narrow]
    assert names == ["user_id", "session_start", "duration_s", "pageview_count", "landing_page"]
    cells = {column.name: cells[0] for column, _, cells in narrow}
    assert cells["duration_s"] == "1m 01s" and cells["pageview_count"] == "1,234"
    assert sum(width for _, width, _ in narrow) + console.PREVIEW_GAP * (len(narrow) - 1) <= 70


def test_progress_shows_each_stage(monkeypatch: pytest.MonkeyPatch) -> None:
    buffer = io.StringIO()
    monkeypatch.setattr(console, "stderr_is_terminal", lambda: True)
    monkeypatch.setattr(
        console,
        "make_console",
        lambda **kwargs: Console(file=buffer, force_terminal=True, width=120, markup=False),
    )
    with console.progress(enabled=True) as update:
        assert update is not None
        update(RunProgress("read", 0, 2, 0))
        update(RunProgress("read", 1, 2, 10))
        update(RunProgress("read", 2, 2, 20))
        update(RunProgress("buckets", 0, 1, 0))
        update(RunProgress("buckets", 1, 1, 20))
    shown = buffer.getvalue()
    for label in ("Reading files", "2/2", "20 rows", "Sessionizing", "Writing outputs", "0:00:00"):
        assert label in shown, label
    with console.progress(enabled=False) as off:
        assert off is None
