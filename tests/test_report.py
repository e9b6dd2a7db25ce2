"""``sessionize report``: aggregates checked by hand, files read, the CLI, and the page in Chromium."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
import pytest
from typer.testing import CliRunner, Result

import sessionize
from sessionize import io as sio
from sessionize import report as R
from sessionize.cli import app
from sessionize.errors import (
    IncompleteOutputError,
    NoInputFilesError,
    NotASessionTableError,
    OutputError,
    UnknownFormatError,
    UnreadableInputError,
    UsageError,
)
from tests.helpers import CHROMIUM, CHROMIUM_ARGS, SAMPLE_DATA, T0, flat, invoke

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Dialog

EVIL_URL = "https://shop.example/</script><script>alert('x')</script>"

# Six sessions of four users, small enough to add up by hand (see the expected values in the tests).
SMALL: dict[str, list[Any]] = {
    "user_id": ["a", "a", "b", "c", "c", "d"],
    "session_number": [1, 2, 1, 1, 2, 1],
    "session_start": [T0 + timedelta(minutes=m) for m in (0, 65, 70, 180, 210, 239)],
    "duration_s": [0.0, 5.0, 45.0, 600.0, 4000.0, 120.0],
    "pageview_count": [1, 1, 3, 2, 5, 0],
    "landing_page": ["/home", "/home", "/blog", "/home", "/pricing", None],
    "exit_page": ["/home", "/cart", "/home", "/cart", "/cart", None],
    "traffic_source": ["google", "direct", "google", "facebook", "direct", "bing"],
    "channel": ["Organic Search", "Direct", "Organic Search", "Organic Social", "Direct", "Organic Search"],
    "city": ["London", "London", "New York", None, None, "Paris"],
    "country": ["United Kingdom", "United Kingdom", "United States", "United States", None, "France"],
    "is_bounce": [True, True, False, False, False, False],
    "device_category": ["mobile", "mobile", "desktop", "desktop", "tablet", None],
    "browser": ["Chrome Mobile", "Chrome Mobile", "Chrome", "Firefox", "Safari", None],
    "os": ["Android", "Android", "Windows", "Mac OS X", "iOS", None],
    "is_bot": [False, False, False, False, False, True],
}


def small_table(**drop_or_replace: Any) -> pl.DataFrame:
    """The six sessions in the session table's types; ``column=None`` drops a column."""
    columns = {**SMALL, **drop_or_replace}
    return pl.DataFrame(
        {name: values for name, values in columns.items() if values is not None},
        schema={name: sessionize.SESSION_SCHEMA[name] for name, v in columns.items() if v is not None},
    )


def make_sessions(rows: int, *, seed: int = 0, days: int = 30) -> pl.DataFrame:
    """A generated session table of ``rows`` sessions with realistic cardinalities (for size and speed)."""
    rng = pl.int_range(0, rows, eager=True)
    frame = pl.DataFrame({"i": rng}).with_columns(
        h=pl.col("i").hash(seed),
    )
    h = pl.col("h")
    return frame.select(
        pl.format("u{}", h % max(rows // 3, 1)).alias("user_id"),
        ((h // 7) % 5 + 1).cast(pl.UInt32).alias("session_number"),
        (pl.lit(T0) + pl.duration(seconds=(h % (days * 86400)).cast(pl.Int64))).alias("session_start"),
        ((h // 11) % 4000).cast(pl.Float64).alias("duration_s"),
        ((h // 13) % 8).cast(pl.UInt32).alias("pageview_count"),
        pl.format("https://shop.example/p/{}", (h // 17) % 50_000).alias("landing_page"),
        pl.format("https://shop.example/p/{}", (h // 19) % 50_000).alias("exit_page"),
        pl.format("source{}", (h // 23) % 5000).alias("traffic_source"),
        pl.format("channel{}", (h // 29) % 12).alias("channel"),
        pl.format("city{}", (h // 31) % 20_000).alias("city"),
        pl.format("country{}", (h // 37) % 200).alias("country"),
        ((h // 41) % 3 == 0).alias("is_bounce"),
        pl.format("device{}", (h // 43) % 4).alias("device_category"),
        pl.format("browser{}", (h // 47) % 40).alias("browser"),
        pl.format("os{}", (h // 53) % 20).alias("os"),
        ((h // 59) % 50 == 0).alias("is_bot"),
    )


def report_cli(*args: str | Path) -> Result:
    # The summary as text (a terminal's): off a terminal it is one JSON line.
    if "--log-format" not in args:
        args = (*args, "--log-format", "text")
    return invoke("report", *args)


# ---------------------------------------------------------------------------------------------------
# Aggregates, by hand
# ---------------------------------------------------------------------------------------------------


def test_headline_figures_by_hand() -> None:
    data = R.aggregate_sessions(small_table().lazy())
    assert data.sessions == 6
    assert data.users == 4
    # Durations 0, 5, 45, 120, 600, 4000: median of the middle two, mean of all.
    assert data.median_duration_s == pytest.approx((45 + 120) / 2)
    assert data.mean_duration_s == pytest.approx(4770 / 6)
    assert data.pages_per_session == pytest.approx(12 / 6)
    assert data.bounce_rate == pytest.approx(2 / 6)
    assert (data.new_sessions, data.returning_sessions, data.bot_sessions) == (4, 2, 1)
    assert data.first_start == T0
    assert data.last_start == T0 + timedelta(minutes=239)
    assert data.left_out == {}


def test_duration_buckets_by_hand() -> None:
    data = R.aggregate_sessions(small_table())
    assert dict(data.durations) == {
        "0 s": 1,
        "<10 s": 1,
        "10\u201330 s": 0,
        "30\u201360 s": 1,
        "1\u20133 m": 1,
        "3\u201310 m": 0,
        "10\u201330 m": 1,
        "30\u201360 m": 0,
        "1 h+": 1,
    }
    assert [label for label, _ in data.durations] == [label for label, _ in R.DURATION_BUCKETS]


def test_bucket_edges_belong_to_the_bucket_above() -> None:
    table = small_table().head(4).with_columns(pl.Series("duration_s", [10.0, 60.0, 1800.0, 3600.0]))
    counts = dict(R.aggregate_sessions(table).durations)
    assert counts["10\u201330 s"] == counts["1\u20133 m"] == counts["30\u201360 m"] == counts["1 h+"] == 1
    assert sum(counts.values()) == 4


def test_rankings_by_hand_most_sessions_first_ties_by_name() -> None:
    rankings = R.aggregate_sessions(small_table()).rankings
    assert rankings["landing_page"] == R.Ranking(
        ("/home", "/blog", "/pricing"), (3, 1, 1), distinct=3, known=5
    )
    assert rankings["exit_page"] == R.Ranking(("/cart", "/home"), (3, 2), distinct=2, known=5)
    assert rankings["traffic_source"].labels == ("direct", "google", "bing", "facebook")
    assert rankings["traffic_source"].sessions == (2, 2, 1, 1)
    assert rankings["channel"].labels == ("Organic Search", "Direct", "Organic Social")
    assert rankings["channel"].sessions == (3, 2, 1)
    assert rankings["country"] == R.Ranking(
        ("United Kingdom", "United States", "France"), (2, 2, 1), distinct=3, known=5
    )
    # Cities carry their country, so two Londons would not be counted together.
    assert rankings["city"] == R.Ranking(
        ("London, United Kingdom", "New York, United States", "Paris, France"), (2, 1, 1), distinct=3, known=4
    )
    assert rankings["device_category"] == R.Ranking(("desktop", "mobile", "tablet"), (2, 2, 1), 3, 5)
    assert rankings["os"].labels == ("Android", "Mac OS X", "Windows", "iOS")


def test_top_n_keeps_the_rest_as_counts() -> None:
    landing = R.aggregate_sessions(small_table(), top=2).rankings["landing_page"]
    assert landing.labels == ("/home", "/blog")
    assert (landing.other_values, landing.other_sessions) == (1, 1)


def test_timeline_per_hour_with_empty_hours_filled() -> None:
    timeline = R.aggregate_sessions(small_table()).timeline
    assert timeline.unit == "hour"
    assert timeline.starts == tuple(T0 + timedelta(hours=h) for h in range(4))
    # 10:00 a#1; 11:05 a#2, 11:10 b#1; none at 12; 13:00 c#1, 13:30 c#2, 13:59 d#1.
    assert timeline.sessions == (1, 2, 0, 3)
    assert timeline.new == (1, 1, 0, 2)


def test_timeline_per_day_beyond_three_days() -> None:
    starts = [T0, T0 + timedelta(hours=1), T0 + timedelta(days=1), T0 + timedelta(days=4, hours=5)]
    table = (
        small_table()
        .head(4)
        .with_columns(pl.Series("session_start", starts, dtype=sessionize.SESSION_SCHEMA["session_start"]))
    )
    timeline = R.aggregate_sessions(table).timeline
    midnight = T0.replace(hour=0)
    assert timeline.unit == "day"
    assert timeline.starts == tuple(midnight + timedelta(days=d) for d in range(5))
    assert timeline.sessions == (2, 1, 0, 0, 1)
    assert timeline.new == (1, 1, 0, 0, 1)  # a#1 (a#2 returns the same day), b#1, c#1


def test_date_filters_keep_sessions_starting_in_the_range() -> None:
    data = R.aggregate_sessions(
        small_table(), date_from=T0 + timedelta(hours=1), date_to=T0 + timedelta(hours=3, minutes=30)
    )
    # 11:05 a#2, 11:10 b, 13:00 c#1; 13:30 is the (exclusive) end.
    assert (data.sessions, data.users, data.new_sessions, data.returning_sessions) == (3, 3, 2, 1)
    assert data.date_from == T0 + timedelta(hours=1)


def test_date_bounds_dates_cover_whole_days_in_utc() -> None:
    assert R.parse_date_bound("2024-05-02", option="--from") == datetime(2024, 5, 2, tzinfo=UTC)
    assert R.parse_date_bound("2024-05-02", option="--to", end=True) == datetime(2024, 5, 3, tzinfo=UTC)
    assert R.parse_date_bound("2024-05-02T10:00:00+02:00", option="--to", end=True) == datetime(
        2024, 5, 2, 8, tzinfo=UTC
    )
    assert R.parse_date_bound("2024-05-02T10:00", option="--from") == datetime(2024, 5, 2, 10, tzinfo=UTC)
    assert R.parse_date_bound(None, option="--from") is None
    with pytest.raises(UsageError, match="--from 'last week' is not a date"):
        R.parse_date_bound("last week", option="--from")


def test_charts_without_data_are_left_out_with_the_reason() -> None:
    table = small_table(
        session_number=None,
        device_category=None,
        browser=None,
        os=None,
        city=[None] * 6,
        country=[None] * 6,
    )
    data = R.aggregate_sessions(table)
    assert set(data.left_out) == {"new_vs_returning", "country", "city", "device_category", "browser", "os"}
    assert "no session_number column" in data.left_out["new_vs_returning"]
    assert "no device_category column" in data.left_out["device_category"]
    assert "--drop-columns" in data.left_out["device_category"]
    assert data.left_out["country"].startswith("No data: no session was located by its IP")
    assert data.new_sessions is None
    assert data.timeline.new is None
    assert "landing_page" in data.rankings


def test_only_the_required_columns_still_give_a_report() -> None:
    table = small_table().select(R.REQUIRED_COLUMNS)
    data = R.aggregate_sessions(table)
    assert (data.sessions, data.users, data.pages_per_session, data.bounce_rate) == (6, 4, None, None)
    assert data.rankings == {}
    assert set(data.left_out) == {"new_vs_returning", *(spec.key for spec in R.RANKINGS)}


def test_no_sessions_in_the_range_leaves_every_chart_out() -> None:
    data = R.aggregate_sessions(small_table(), date_from=datetime(2030, 1, 1, tzinfo=UTC))
    assert data.sessions == data.users == 0
    assert data.median_duration_s is None
    assert set(data.left_out.values()) == {R.NO_SESSIONS}
    assert len(data.left_out) == 3 + len(R.RANKINGS)
    assert "0 sessions" in R.render_report(data)


def test_missing_required_columns_are_a_typed_error() -> None:
    with pytest.raises(NotASessionTableError, match="no session_start, duration_s columns"):
        R.aggregate_sessions(pl.DataFrame({"user_id": ["a"], "timestamp": [T0]}))
    with pytest.raises(UsageError, match="--top must be from 1 to 1,000"):
        R.aggregate_sessions(small_table(), top=0)
    # Review 54 L5: --top 99999999999999999999 was an unexpected OverflowError.
    with pytest.raises(UsageError, match="--top must be from 1 to 1,000, got 99999999999999999999"):
        R.aggregate_sessions(small_table(), top=99999999999999999999)


# ---------------------------------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------------------------------


def test_page_is_self_contained_and_escapes_the_data() -> None:
    table = small_table(landing_page=[EVIL_URL, *SMALL["landing_page"][1:]])
    page = R.render_report(R.aggregate_sessions(table), title="<b>Shop</b> & co", sources=["a.parquet"])
    assert "<title>&lt;b&gt;Shop&lt;/b&gt; &amp; co</title>" in page
    assert "alert('x')</script>" not in page
    # No script, style or image from anywhere but the page itself.
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=", page)
    assert page.count("plotly.js v") == 1  # the library, once
    assert page.count('class="plotly-graph-div"') == 12


@pytest.mark.slow
def test_page_size_does_not_grow_with_the_sessions() -> None:
    small = R.render_report(R.aggregate_sessions(make_sessions(2_000)))
    large = R.render_report(R.aggregate_sessions(make_sessions(200_000)))
    assert abs(len(large) - len(small)) < 10_000


# ---------------------------------------------------------------------------------------------------
# Reading session tables and writing the page
# ---------------------------------------------------------------------------------------------------


def test_parquet_csv_and_ndjson_tables_give_the_same_figures(workdir: Path) -> None:
    table = small_table()
    expected = R.aggregate_sessions(table)
    for name in ("s.parquet", "s.csv", "s.ndjson"):
        sio.write_sessions(table, name)
        assert R.aggregate_sessions(R.read_session_tables([name])) == expected, name


def test_directories_and_globs_of_tables_with_different_columns(workdir: Path) -> None:
    (workdir / "out").mkdir()
    sio.write_sessions(small_table().head(3), "out/part-1.parquet")
    sio.write_sessions(small_table().slice(3).drop("device_category", "browser", "os"), "out/part-2.csv")
    (workdir / "out" / "README.txt").write_text("not a table")
    for inputs in (["out"], ["out/*"], ["out/part-1.parquet", "out/part-2.csv"]):
        data = R.aggregate_sessions(R.read_session_tables(inputs))
        assert data.sessions == 6
        assert data.rankings["device_category"].known == 3


def write_parts(directory: Path, *, marker: bool) -> None:
    """Six sessions in two part files, as the Dask engine names them, with or without ``_SUCCESS``."""
    directory.mkdir()
    sio.write_sessions(small_table().head(3), str(directory / "part-00000.parquet"))
    sio.write_sessions(small_table().slice(3), str(directory / "part-00001.parquet"))
    if marker:
        (directory / R.SUCCESS_MARKER).write_bytes(b"")


def test_parts_without_success_marker_are_refused(workdir: Path) -> None:
    # A distributed run writes _SUCCESS last: without it, the run was killed or failed part-way.
    write_parts(workdir / "sessions", marker=False)
    result = report_cli("sessions", "-o", "out.html")
    assert result.exit_code == 1
    message = flat(result.stderr)
    assert "Thedirectorysessionshaspartfilesbutno_SUCCESSmarker" in message
    assert "didnotfinish(itwaskilledorfailed)" in message and "Runitagain" in message
    assert "Traceback" not in result.output
    assert not (workdir / "out.html").exists()
    with pytest.raises(IncompleteOutputError, match="The directory sessions has part files but no _SUCCESS"):
        R.read_session_tables(["sessions"])


def test_parts_with_success_marker_are_read(workdir: Path) -> None:
    write_parts(workdir / "sessions", marker=True)
    result = report_cli("sessions", "-o", "out.html")
    assert result.exit_code == 0, result.output
    assert "<strong>6 sessions</strong>" in (workdir / "out.html").read_text(encoding="utf-8")
    assert R.aggregate_sessions(R.read_session_tables(["sessions"])) == R.aggregate_sessions(small_table())


def test_incremental_output_needs_no_success_marker(workdir: Path) -> None:
    # An incremental run's Hive partitions: part files only below the top level, and no marker.
    for day, rows in (("2024-05-01", small_table().head(3)), ("2024-05-02", small_table().slice(3))):
        (workdir / f"out/session_date={day}").mkdir(parents=True)
        sio.write_sessions(rows, f"out/session_date={day}/part-0.parquet")
    result = report_cli("out", "-o", "out.html")
    assert result.exit_code == 0, result.output
    assert R.aggregate_sessions(R.read_session_tables(["out"])).sessions == 6


@pytest.mark.parametrize(
    ("setup", "inputs", "error", "message"),
    [
        (None, ["nope.parquet"], UnreadableInputError, "nope.parquet: no such file or directory"),
        ("events", ["events.csv"], NotASessionTableError, "events.csv is not a session table"),
        ("empty_dir", ["empty"], NoInputFilesError, "The directory empty holds no session tables"),
        ("txt", ["notes.txt"], UnknownFormatError, "Cannot tell the format of notes.txt"),
        ("corrupt", ["bad.parquet"], UnreadableInputError, "bad.parquet: cannot be read as Parquet"),
        ("empty_csv", ["empty.csv"], NotASessionTableError, "empty.csv is empty"),
    ],
)
def test_bad_inputs_are_typed_errors(
    workdir: Path, setup: str | None, inputs: list[str], error: type[Exception], message: str
) -> None:
    if setup == "events":
        (workdir / "events.csv").write_bytes((SAMPLE_DATA / "events.csv").read_bytes()[:2000])
    elif setup == "empty_dir":
        (workdir / "empty").mkdir()
    elif setup == "txt":
        (workdir / "notes.txt").write_text("hello")
    elif setup == "corrupt":
        (workdir / "bad.parquet").write_bytes(b"PAR1 not really")
    elif setup == "empty_csv":
        (workdir / "empty.csv").write_bytes(b"")
    with pytest.raises(error, match=re.escape(message)):
        R.make_report(inputs, output="r.html")
    assert not (workdir / "r.html").exists()


def test_values_that_a_session_table_cannot_hold_are_an_error_naming_the_file(workdir: Path) -> None:
    (workdir / "s.csv").write_text("user_id,session_start,duration_s\nu,2024-05-01T10:00:00Z,long\n")
    with pytest.raises(UnreadableInputError, match=r"s\.csv: a column does not hold"):
        R.make_report(["s.csv"], output="r.html")


def test_report_is_written_atomically(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sio.write_sessions(small_table(), "s.parquet")
    (workdir / "r.html").write_text("last week's report")

    def broken(*args: Any, **kwargs: Any) -> str:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patched:
        patched.setattr(R.write, "render_report", broken)
        with pytest.raises(OSError):
            R.make_report(["s.parquet"], output="r.html")
    assert (workdir / "r.html").read_text() == "last week's report"
    result = R.make_report(["s.parquet"], output="r.html")
    assert sorted(p.name for p in workdir.iterdir()) == ["r.html", "s.parquet"]
    assert result.size_bytes == (workdir / "r.html").stat().st_size
    assert result.charts == ["timeline", "durations", "new_vs_returning", *(s.key for s in R.RANKINGS)]


@pytest.mark.parametrize(
    ("output", "message"),
    [("s.parquet", "is also an input"), ("nope/r.html", "does not exist"), (".", "it is a directory")],
)
def test_bad_report_paths_are_refused(workdir: Path, output: str, message: str) -> None:
    sio.write_sessions(small_table(), "s.parquet")
    with pytest.raises(OutputError, match=message):
        R.make_report(["s.parquet"], output=output)
    assert sorted(p.name for p in workdir.iterdir()) == ["s.parquet"]


# ---------------------------------------------------------------------------------------------------
# The command line, end to end on the sample data
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample_reports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``sessionize run`` on the sample data, then ``sessionize report`` on its table; also ``--report``."""
    folder = tmp_path_factory.mktemp("sample")
    old = Path.cwd()
    os.chdir(folder)
    try:
        run = CliRunner().invoke(
            app, ["run", str(SAMPLE_DATA / "events.csv"), "-o", "t.parquet", "--report", "run.html"]
        )
        assert run.exit_code == 0, run.output
        # A table without geo, device or session numbers, and an attacker's landing page.
        table = pl.read_parquet("t.parquet")
        table.drop("session_number", "device_category", "browser", "os").with_columns(
            pl.lit(None, pl.String).alias("country"),
            pl.lit(None, pl.String).alias("city"),
            pl.when(pl.int_range(pl.len()) < 5)
            .then(pl.lit(EVIL_URL))
            .otherwise("landing_page")
            .alias("landing_page"),
        ).write_csv("partial.csv")
        yield folder
    finally:
        os.chdir(old)


def test_cli_report_of_the_sample_table(sample_reports: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(sample_reports)
    result = report_cli(
        "t.parquet", "-o", "r.html", "--top", "5", "--from", "2026-11-03", "--to", "2026-11-03"
    )
    assert result.exit_code == 0, result.output
    summary = flat(result.stderr)
    assert "writtentor.html(4." in summary
    assert "charts12" in summary
    page = (sample_reports / "r.html").read_text(encoding="utf-8")
    assert "at or after 2026-11-03 00:00 and before 2026-11-04 00:00 UTC" in page
    assert "top 5 per ranking" in page
    # The same table through the library, for the figures.
    data = R.aggregate_sessions(
        pl.scan_parquet(sample_reports / "t.parquet"),
        date_from=datetime(2026, 11, 3, tzinfo=UTC),
        date_to=datetime(2026, 11, 4, tzinfo=UTC),
        top=5,
    )
    assert f"<strong>{data.sessions:,} sessions</strong>" in page
    assert f"sessions{data.sessions:,}" in summary


def test_run_report_writes_the_same_page_as_report(sample_reports: Path) -> None:
    page = (sample_reports / "run.html").read_text(encoding="utf-8")
    assert "<strong>964 sessions</strong>" in page
    assert "events.csv" in page
    assert page.count('class="plotly-graph-div"') >= 10


def test_cli_report_to_stdout(sample_reports: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(sample_reports)
    before = sorted(p.name for p in sample_reports.iterdir())
    result = report_cli("t.parquet", "-o", "-", "--title", "Shop")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("<!DOCTYPE html>")
    assert "<title>Shop</title>" in result.stdout
    assert "writtentostdout(4." in flat(result.stderr)
    assert sorted(p.name for p in sample_reports.iterdir()) == before


def test_cli_errors_are_shown_like_run_does(workdir: Path) -> None:
    (workdir / "events.csv").write_text("user_id,timestamp\nu,2024-05-01T10:00:00Z\n")
    result = report_cli("events.csv", "-o", "r.html")
    assert result.exit_code == 1
    assert "Error" in result.stderr
    assert "events.csvisnotasessiontable:ithasnosession_start,duration_scolumns" in flat(result.stderr)
    assert "Traceback" not in result.output
    assert report_cli("events.csv", "--from", "soon").exit_code == 2
    assert report_cli("events.csv", "--top", "0").exit_code == 2
    assert sorted(p.name for p in workdir.iterdir()) == ["events.csv"]


def test_cli_notes_the_charts_left_out(sample_reports: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(sample_reports)
    result = report_cli("partial.csv", "-o", "partial.html")
    assert result.exit_code == 0, result.output
    summary = flat(result.stderr)
    assert "leftoutCountries:Nodata:nosessionwaslocatedbyitsIP" in summary
    assert "leftoutDevices:Thetablehasnodevice_categorycolumn" in summary


# ---------------------------------------------------------------------------------------------------
# In a browser
# ---------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(
    not CHROMIUM.exists() and not os.environ.get("CI"),
    reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium; CI installs it)",
)
def test_pages_render_in_headless_chromium_without_errors_or_network(sample_reports: Path) -> None:
    from playwright.sync_api import sync_playwright

    complete = R.make_report([sample_reports / "t.parquet"], output=sample_reports / "full.html")
    partial = R.make_report([sample_reports / "partial.csv"], output=sample_reports / "partial-page.html")
    assert complete.left_out == {}
    assert set(partial.left_out) == {
        "new_vs_returning",
        "country",
        "city",
        "device_category",
        "browser",
        "os",
    }

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            for result in (complete, partial):
                problems, requests, shown = _open_in_browser(browser, result)
                assert problems == [], result.output
                assert [u for u in requests if not u.startswith(("file:", "data:", "about:", "blob:"))] == []
                assert [s["key"] for s in shown if not s["leftOut"]] == result.charts
                assert [s["key"] for s in shown if s["leftOut"]] == list(result.left_out)
                for chart in shown:
                    if not chart["leftOut"]:
                        assert chart["marks"] > 0 and chart["width"] > 200, chart
        finally:
            browser.close()


def _open_in_browser(
    browser: Browser, result: R.ReportResult
) -> tuple[list[str], list[str], list[dict[str, Any]]]:
    """Open the page: console errors, uncaught exceptions and dialogs; URLs requested; the chart cards."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    requests: list[str] = []

    def dismiss(dialog: Dialog) -> None:
        problems.append(f"dialog: {dialog.message}")
        dialog.dismiss()

    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("dialog", dismiss)
    page.on("request", lambda r: requests.append(r.url))
    page.goto(Path(result.output).resolve().as_uri(), wait_until="load")
    page.wait_for_function(
        f"document.querySelectorAll('.js-plotly-plot .main-svg').length >= {len(result.charts)}",
        timeout=15_000,
    )
    shown: list[dict[str, Any]] = page.evaluate(
        """() => [...document.querySelectorAll('section[data-chart]')].map(s => ({
            key: s.dataset.chart,
            marks: s.querySelectorAll('.js-plotly-plot g.point, .js-plotly-plot g.slice').length,
            leftOut: s.classList.contains('left-out'),
            width: s.querySelector('.main-svg') ? s.querySelector('.main-svg').clientWidth : 0,
        }))"""
    )
    page.close()
    return problems, requests, shown


@pytest.mark.parametrize(
    ("stray", "unit"),
    [(datetime(1970, 1, 1, tzinfo=UTC), "month"), (datetime(1, 1, 1, tzinfo=UTC), "year")],
)
def test_one_stray_early_start_gives_coarser_bars_not_a_huge_page(
    tmp_path: Path, stray: datetime, unit: str
) -> None:
    """One session at 1970-01-01 (an epoch zero) or 0001-01-01 made a bar per day back to it: 20,761 bars
    (6.6 MB) or about 740,000 (65 MB, 8 s). Such a span is drawn by month or by year."""
    table = make_sessions(500).with_columns(
        pl.when(pl.int_range(pl.len()) == 0)
        .then(pl.lit(stray))
        .otherwise(pl.col("session_start"))
        .alias("session_start")
    )
    data = R.aggregate_sessions(table)
    assert data.timeline.unit == unit
    assert sum(data.timeline.sessions) == 500
    assert len(data.timeline.starts) <= 2_100
    path = tmp_path / "sessions.parquet"
    table.write_parquet(path)
    out = tmp_path / "report.html"
    assert report_cli(path, "-o", out).exit_code == 0
    assert out.stat().st_size < 6_000_000
    assert f"Sessions per {unit} (UTC)" in out.read_text(encoding="utf-8")


def test_sessions_without_a_number_are_neither_new_nor_returning_in_the_timeline() -> None:
    """Two tables read together, one written with --drop-columns session_number: its sessions were drawn as
    returning (sessions - new), where the donut counts them as neither."""
    table = make_sessions(300).with_columns(
        pl.when(pl.int_range(pl.len()) % 3 == 0)
        .then(None)
        .otherwise(pl.col("session_number"))
        .alias("session_number")
    )
    data = R.aggregate_sessions(table)
    numbers = table.get_column("session_number")
    assert data.timeline.new is not None and data.timeline.returning is not None
    assert sum(data.timeline.new) == (numbers == 1).sum() == data.new_sessions
    assert sum(data.timeline.returning) == (numbers > 1).sum() == data.returning_sessions
    assert sum(data.timeline.sessions) - sum(data.timeline.new) - sum(data.timeline.returning) == 100
    page = R.render_report(data)
    assert '"name": "Unknown"' in page or '"name":"Unknown"' in page


def test_sessions_without_a_start_stay_out_of_the_timeline(tmp_path: Path) -> None:
    """A table whose session_start is empty made the report fail with "Unexpected error: AssertionError";
    sessions without a start are now counted in the headline and left out of the timeline, with a note when
    none has one."""
    table = make_sessions(50)
    some = table.with_columns(
        pl.when(pl.int_range(pl.len()) < 10)
        .then(None)
        .otherwise(pl.col("session_start"))
        .alias("session_start")
    )
    data = R.aggregate_sessions(some)
    assert data.sessions == 50 and sum(data.timeline.sessions) == 40
    none = table.with_columns(pl.lit(None, pl.Datetime("us", "UTC")).alias("session_start"))
    empty = R.aggregate_sessions(none)
    assert empty.sessions == 50 and empty.timeline.sessions == ()
    assert "no session has a session_start" in empty.left_out["timeline"]
    path = tmp_path / "sessions.parquet"
    none.write_parquet(path)
    result = report_cli(path, "-o", tmp_path / "report.html")
    assert result.exit_code == 0, result.output
    assert "no session has a session_start" in (tmp_path / "report.html").read_text(encoding="utf-8")


def test_an_empty_ndjson_table_that_run_writes_is_a_report_of_no_sessions(tmp_path: Path) -> None:
    """``sessionize run`` writes an NDJSON table of no sessions as an empty file (JSON lines have no
    header); ``sessionize report`` refused it ("is empty: not a session table"), alone or in a folder,
    where the same table as CSV or Parquet gave a page of 0 sessions."""
    events = tmp_path / "events.csv"
    events.write_text("user_id,timestamp,url\n", encoding="utf-8")
    folder = tmp_path / "tables"
    folder.mkdir()
    table = folder / "sessions.ndjson"
    done = invoke("run", events, "--no-geo", "-q", "-o", table)
    assert done.exit_code == 0, done.output
    assert table.stat().st_size == 0
    for given in (table, folder):
        out = tmp_path / "report.html"
        result = report_cli(given, "-o", out)
        assert result.exit_code == 0, result.output
        assert "0 sessions" in out.read_text(encoding="utf-8")


@pytest.mark.parametrize("dropped", ["duration_s", "session_start"])
def test_a_report_of_a_run_that_drops_a_column_it_needs_is_refused_before_any_work(
    tmp_path: Path, dropped: str
) -> None:
    """``run --drop-columns duration_s --report r.html`` sessionized the whole input, then failed (exit 1)
    saying to write the report in the same run, which it was: refused before any work now (exit 2)."""
    out, report = tmp_path / "sessions.csv", tmp_path / "report.html"
    result = invoke(
        "run", SAMPLE_DATA, "--no-geo", "-q", "-o", out, "--report", report, "--drop-columns", dropped
    )
    assert result.exit_code == 2, result.output
    assert flat(f"--report needs the sessions' {dropped}, which --drop-columns leaves out") in flat(
        result.output
    )
    assert not out.exists() and not report.exists()


def test_make_report_takes_top_as_its_flag_does(tmp_path: Path) -> None:
    """``make_report(top=...)``: a whole number as an ``int`` or its text, as every keyword of ``run``
    takes its flag's values; anything else a ``UsageError`` naming --top (``"5"`` and ``3.5`` were a
    ``TypeError``)."""
    table = tmp_path / "sessions.parquet"
    make_sessions(100).write_parquet(table)
    R.make_report(table, output=tmp_path / "five.html", top="5")
    assert (tmp_path / "five.html").exists()
    for wrong in (3.5, True, "x"):
        with pytest.raises(UsageError, match="--top takes a whole number"):
            R.make_report(table, output=tmp_path / "no.html", top=wrong)  # type: ignore[arg-type]
    assert not (tmp_path / "no.html").exists()


def test_a_basic_format_date_covers_its_whole_day() -> None:
    """``--to 20261103`` (ISO 8601's basic format) was read as that day's midnight, so ``--from 20261102
    --to 20261103`` covered 2 November only; a date in either format covers its whole day."""
    basic = R.parse_date_bound("20261103", option="--to", end=True)
    assert (
        basic
        == R.parse_date_bound("2026-11-03", option="--to", end=True)
        == datetime(2026, 11, 4, tzinfo=UTC)
    )
    assert R.parse_date_bound("20261103", option="--from") == datetime(2026, 11, 3, tzinfo=UTC)


def test_a_negative_duration_is_shown_with_its_sign() -> None:
    """A table from elsewhere may hold negative durations: -64 s was shown as "-1h 58m 56s"."""
    assert [R.render.format_duration(s) for s in (-64, -3, -3725, 4.2, 0)] == [
        "-1m 04s",
        "-3.0s",
        "-1h 02m 05s",
        "4.2s",
        "0.0s",
    ]


def test_one_session_is_one_session_not_one_sessions() -> None:
    # A stop-55 review: the header of a report of one session said "1 sessions".
    text = re.sub(r"<[^>]+>", "", R.render_report(R.aggregate_sessions(small_table().head(1))))
    assert "1 session starting" in text
    # The sixth session has no page view (its landing page is null).
    text = re.sub(r"<[^>]+>", "", R.render_report(R.aggregate_sessions(small_table())))
    assert "6 sessions starting" in text
    assert "1 session without a page view" in text
    assert "1 sessions" not in text
