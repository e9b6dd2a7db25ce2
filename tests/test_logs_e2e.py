"""End to end on a real Apache combined log (10,000 lines), with figures checked by hand with grep/awk."""

from __future__ import annotations

import gzip
import re
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

import sessionize
from sessionize.cli import app
from tests.helpers import DATA, words

LOG = DATA / "apache_logs" / "apache_access.log"


@pytest.fixture(scope="module")
def result() -> sessionize.RunResult:
    return sessionize.run([LOG], on_invalid="skip", no_geo=True)


def test_the_truncated_line_stops_a_default_run_and_is_rejected_with_skip(
    tmp_path: Path, result: sessionize.RunResult
) -> None:
    failed = CliRunner().invoke(app, ["run", str(LOG), "--no-geo", "-o", str(tmp_path / "s.parquet")])
    assert failed.exit_code == 1
    assert "line 8899" in words(failed.stderr)
    # Line 8899 is a Googlebot request whose user agent lost its closing quote.
    assert (result.rows_read, result.rejected, result.events_read) == (10_000, 1, 9_999)
    assert result.rejects is not None and result.rejects["source_row"].to_list() == [8899]


def test_headline_figures(result: sessionize.RunResult) -> None:
    table = result.sessions
    assert table.height == 3_223
    # Visitors are IP + user agent: 1,861 of them on 1,753 distinct IPs.
    assert table["user_id"].n_unique() == 1_861
    assert table["user_id"].str.split("|").list.first().n_unique() == 1_753
    assert table["event_count"].sum() == 9_999
    # 3,282 before PDFs were assets: 55 GETs of /images/logstash_OSCON.pdf (15 200s, 34 206s, 6 304s).
    assert table["pageview_count"].sum() == 3_227
    assert table["is_bot"].sum() == 1_383


def test_a_google_referred_visit_checked_by_hand(result: sessionize.RunResult) -> None:
    # Lines 25-30: 93.114.45.13 reads one article (found on google.ro) and loads its CSS, images and
    # favicon between 10:05:04 and 10:05:45: one session with one page view.
    visit = result.sessions.filter(pl.col("user_id").str.starts_with("93.114.45.13|"))
    assert visit.height == 1
    row = visit.row(0, named=True)
    assert row["session_start"] == datetime(2015, 5, 17, 10, 5, 4, tzinfo=UTC)
    assert (row["duration_s"], row["event_count"], row["pageview_count"]) == (41.0, 6, 1)
    assert row["landing_page"] == row["exit_page"] == "/articles/dynamic-dns-with-dhcp/"
    assert row["referrer"].startswith("http://www.google.ro/url?")
    assert (row["traffic_source"], row["source_name"], row["medium"], row["channel"]) == (
        "google",
        "Google",
        "search",
        "Organic Search",
    )
    assert (row["device_category"], row["browser"], row["os"], row["is_bot"]) == (
        "desktop",
        "Firefox",
        "Linux",
        False,
    )


def test_sessions_of_one_visitor_match_an_independent_count(result: sessionize.RunResult) -> None:
    # 75.97.9.59 with desktop Chrome: 266 requests over two days. Sessionize them here with plain
    # Python (sort, split at gaps over 30 minutes) and compare.
    chrome = "Mozilla/5.0 (Windows NT 6.1; WOW64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/32.0.1700.107"
    times = sorted(
        datetime.strptime(match.group(1), "%d/%b/%Y:%H:%M:%S %z")
        for line in LOG.read_text(encoding="utf-8").splitlines()
        if line.startswith("75.97.9.59 ") and chrome in line
        for match in [re.search(r"\[([^]]+)\]", line)]
        if match
    )
    assert len(times) == 266
    starts = [t for i, t in enumerate(times) if i == 0 or t - times[i - 1] > timedelta(minutes=30)]
    mine = result.sessions.filter(
        pl.col("user_id").str.starts_with("75.97.9.59|") & (pl.col("browser") == "Chrome")
    ).sort("session_number")
    assert mine["session_start"].to_list() == starts
    assert mine["event_count"].sum() == 266


def test_googlebot_sessions_are_bots_and_can_be_left_out(result: sessionize.RunResult) -> None:
    googlebot = result.sessions.filter(pl.col("user_id").str.starts_with("66.249.73.135|"))
    assert googlebot.height > 0 and googlebot["is_bot"].all()
    humans = sessionize.run([LOG], on_invalid="skip", no_geo=True, exclude_bots=True)
    assert humans.session_count == 3_223 - 1_383
    assert humans.bot_sessions_excluded == 1_383
    assert humans.sessions["is_bot"].any() is False


def test_internal_domains_turn_own_pages_into_internal_referrers(result: sessionize.RunResult) -> None:
    own = sessionize.run([LOG], on_invalid="skip", no_geo=True, internal_domains="semicomplete.com")
    before = result.sessions.filter(pl.col("referrer_host").str.ends_with("semicomplete.com"))
    after = own.sessions.filter(pl.col("referrer_host").str.ends_with("semicomplete.com"))
    assert before.height > 300 and (before["medium"] == "referral").all()
    assert (after["medium"] == "internal").all() and (after["traffic_source"] == "direct").all()


def test_gzip_common_format_and_ip_visitors(tmp_path: Path, result: sessionize.RunResult) -> None:
    zipped = tmp_path / "access.log.gz"
    with LOG.open("rb") as source, gzip.open(zipped, "wb") as target:
        shutil.copyfileobj(source, target)
    assert sessionize.run([zipped], on_invalid="skip", no_geo=True).sessions.equals(result.sessions)
    by_ip = sessionize.run([LOG], on_invalid="skip", no_geo=True, visitor_key="ip")
    assert by_ip.user_count == 1_753
    # Read as common log format: a line with the combined fields after the common ones is read as written,
    # referrer and user agent kept (review 56 F4), so the sessions are the combined read's: 3,052 by IP,
    # 1,240 bots, the same referrers. Line 8899, whose user agent lost its closing quote, is a common line
    # with something after it here (so not rejected): its session has no user agent.
    common = sessionize.run([LOG], input_format="common", on_invalid="skip", no_geo=True, visitor_key="ip")
    assert (common.events_read, common.rejected) == (10_000, 0)
    sessions, combined = common.sessions, by_ip.sessions
    assert (sessions.height, sessions["is_bot"].sum()) == (combined.height, combined["is_bot"].sum())
    assert (sessions.height, sessions["is_bot"].sum()) == (3_052, 1_240)
    assert sessions["referrer"].null_count() == combined["referrer"].null_count()


def test_log_options_on_the_command_line(tmp_path: Path) -> None:
    out = tmp_path / "s.csv"
    args = ["run", str(LOG), "--on-invalid", "skip", "--no-geo", "-o", str(out)]
    pages_only = CliRunner().invoke(app, [*args, "--asset-pattern", r"\.(css|js|png|gif|jpg|ico)$", "-q"])
    assert pages_only.exit_code == 0, pages_only.output
    assert CliRunner().invoke(app, [*args, "--asset-pattern", "(unclosed"]).exit_code == 2
    assert CliRunner().invoke(app, [*args, "--visitor-key", "cookie"]).exit_code == 2
    text = tmp_path / "notes.log"
    text.write_text("this is not an access log\nnor is this\n")
    unknown = CliRunner().invoke(app, ["run", str(text), "-o", str(out)])
    assert unknown.exit_code == 1
    assert "--input-format combined|common" in words(unknown.stderr)
