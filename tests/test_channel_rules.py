"""``--channel-rules snowplow`` (the ``snowplow`` preset's): ``channel`` as Snowplow's sessions model
computes ``default_channel_group`` (its dbt web and unified packages' ``channel_group_query``, from the
campaign fields mkt_source, mkt_medium and mkt_campaign, here the landing page's UTM tags, and the GA4
source category of mkt_source), and ``medium`` as its referer parser's ``refr_medium``. Each case
checked by hand against both rule sets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

import sessionize
from sessionize.errors import UsageError
from tests.helpers import run_cli, write_text

SITE = "https://shop.example.com/"
#: (landing page query, referrer, Snowplow's channel and medium, GA4's channel and medium)
CASES = [
    # Tagged paid search: the same under both.
    ("?utm_source=google&utm_medium=cpc", None, "Paid Search", None, "Paid Search", "direct"),
    # cpm is a paid medium first for Snowplow (Paid Other); GA4 takes it as Display.
    ("?utm_source=newsletter&utm_medium=cpm", None, "Paid Other", None, "Display", "direct"),
    # Untagged: Snowplow reads no referrer (Unassigned), its medium is the referer parser's.
    ("", "https://www.google.com/search?q=shoes", "Unassigned", "search", "Organic Search", "search"),
    ("", None, "Unassigned", None, "Direct", "direct"),
    ("", "https://blog.example.org/post", "Unassigned", "unknown", "Referral", "referral"),
    # A Google Ads click id alone: GA4's Paid Search; Snowplow's campaign fields are empty.
    ("?gclid=abc123", None, "Unassigned", None, "Paid Search", "direct"),
    # Snowplow tests "cross-network" in the medium, GA4 in the campaign.
    ("?utm_source=partner&utm_medium=cross-network", None, "Cross-network", None, "Unassigned", "direct"),
    ("?utm_source=partner&utm_medium=x&utm_campaign=cross-network", None, "Unassigned", None, "Cross-network",
     "direct"),
    # Tagged direct traffic.
    ("?utm_source=(direct)&utm_medium=(none)", None, "Direct", None, "Direct", "direct"),
    # Values are trimmed before they are compared (our UTM parser trims; Snowplow trims too).
    ("?utm_source=%20Google%20&utm_medium=%20CPC", None, "Paid Search", None, "Paid Search", "direct"),
    # "social-media" is in GA4's social media list, not in Snowplow's.
    ("?utm_source=forum&utm_medium=social-media", None, "Unassigned", None, "Organic Social", "direct"),
    ("?utm_source=news&utm_medium=email", None, "Email", None, "Email", "direct"),
]  # fmt: skip


def events() -> pl.DataFrame:
    start = datetime(2024, 5, 1, 10, tzinfo=UTC)
    return pl.DataFrame(
        {
            "user_id": [f"u{n}" for n in range(len(CASES))],
            "timestamp": [start + timedelta(minutes=n) for n in range(len(CASES))],
            "url": [SITE + query for query, *_ in CASES],
            "referrer": [referrer for _, referrer, *_ in CASES],
        }
    )


@pytest.mark.parametrize(("rules", "columns"), [("snowplow", (2, 3)), ("ga4", (4, 5))])
def test_each_case_by_hand(rules: str, columns: tuple[int, int]) -> None:
    table = sessionize.sessionize(events(), no_geo=True, channel_rules=rules).collect().sort("user_id")
    got = table.sort(pl.col("user_id").str.slice(1).cast(pl.Int32)).select("channel", "medium").rows()
    assert got == [(case[columns[0]], case[columns[1]]) for case in CASES]


def test_the_snowplow_preset_sets_them_and_a_flag_wins(tmp_path) -> None:  # type: ignore[no-untyped-def]
    source = tmp_path / "events.csv"
    events().with_columns(pl.col("timestamp").dt.to_string("%Y-%m-%dT%H:%M:%SZ")).rename(
        {
            "user_id": "domain_userid",
            "timestamp": "derived_tstamp",
            "url": "page_url",
            "referrer": "page_referrer",
        }
    ).with_columns(
        pl.format("s{}", pl.int_range(pl.len())).alias("domain_sessionid"),
        pl.format("e{}", pl.int_range(pl.len())).alias("event_id"),
    ).write_csv(source)
    for flags, expected in (([], 2), (["--channel-rules", "ga4"], 4)):
        out = tmp_path / "s.csv"
        result = run_cli(source, "--preset", "snowplow", "--no-geo", "-o", out, *flags)
        assert result.exit_code == 0, result.output
        table = pl.read_csv(out).sort(pl.col("user_id").str.slice(1).cast(pl.Int32))
        assert table.get_column("channel").to_list() == [case[expected] for case in CASES]
    config = write_text(tmp_path / "s.toml", '[run]\nchannel-rules = "snowplow"\n')
    result = run_cli(
        source, "--config", config, "--user-col", "domain_userid", "--no-geo", "-o", tmp_path / "c.csv"
    )
    assert result.exit_code == 0, result.output


def test_an_unknown_rule_set_is_a_usage_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UsageError, match="not one of ga4, snowplow"):
        sessionize.sessionize(events(), channel_rules="adobe")
