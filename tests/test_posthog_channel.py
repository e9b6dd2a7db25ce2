"""``--channel-rules posthog`` (the ``posthog`` preset's): ``channel`` as PostHog's sessions compute
``$channel_type``, checked with PostHog's own test cases.

The cases are those of PostHog's ``posthog/hogql/database/schema/test/test_channel_type.py`` (PostHog/posthog,
MIT outside ``ee/``; read at commit ad219e56a6a6979477963436ba98477a40171465): each test's inputs and the
channel it expects. PostHog's tests give event or person properties; here they become what sessionize reads,
a landing page URL and a referrer: ``utm_*``, ``gclid``, ``gad_source`` and ``fbclid`` go in the landing
page's query string, a ``$referring_domain`` (or ``$initial_referring_domain``) of ``$direct`` is no
referrer, another one the referrer ``https://<domain>/``, and the wild clicks keep their own URLs. A case
without any referring domain (``test_no_info_is_unknown``, ``test_empty_session``) has a referrer without
a host, the one way a session here has no referring domain. The custom channel rules tests have no
counterpart (sessionize has no custom rules); ``TestReferringDomainType``'s domains are checked as the
organic channel of a session from that referrer.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import polars as pl
import pytest

import sessionize
from sessionize.attribution import POSTHOG_CHANNELS
from tests.helpers import run_cli

SITE = "https://shop.example.net/"
DIRECT = "$direct"


def tags(**values: str | int) -> str:
    """A query string of these parameters, percent-encoded."""
    return "?" + "&".join(f"{name}={quote(str(value), safe='')}" for name, value in values.items())


def ref(domain: str) -> str | None:
    """The referrer of a PostHog referring domain (``$direct``: none)."""
    return None if domain == DIRECT else f"https://{domain}/"


NO_HOST = "https://"
EMPTY = {"utm_source": "", "utm_medium": "", "utm_campaign": "", "gclid": "", "gad_source": ""}
NULLS = dict.fromkeys(EMPTY, "null")

# fmt: off
#: (PostHog's test, landing page URL, referrer, the channel PostHog expects)
CASES: list[tuple[str, str, str | None, str]] = [
    ("test_direct", SITE, None, "Direct"),
    ("test_direct_empty_string", SITE + tags(**EMPTY), None, "Direct"),
    ("test_direct_null_string", SITE + tags(**NULLS), None, "Direct"),
    ("test_cross_network", SITE + tags(utm_campaign="cross-network"), None, "Cross Network"),
    ("test_paid_shopping_domain", SITE + tags(utm_medium="ppc"), ref("www.ebay.co.uk"), "Paid Shopping"),
    ("test_paid_shopping_source", SITE + tags(utm_source="ebay", utm_medium="ppc"), None, "Paid Shopping"),
    ("test_paid_shopping_campaign", SITE + tags(utm_campaign="shopping", utm_medium="ppc"), None,
     "Paid Shopping"),
    ("test_paid_search", SITE + tags(gclid="some-gclid"), ref("www.google.co.uk"), "Paid Search"),
    ("test_paid_search_source", SITE + tags(utm_source="yahoo", utm_medium="ppc"), None, "Paid Search"),
    ("test_paid_video", SITE + tags(utm_medium="cpc"), ref("youtube.com"), "Paid Video"),
    ("test_paid_video_source", SITE + tags(utm_source="youtube.com", utm_medium="cpc"), None, "Paid Video"),
    ("test_organic_video", SITE, ref("youtube.com"), "Organic Video"),
    ("test_direct_with_red_herring_utm_tags_is_direct",
     SITE + tags(utm_source="what", utm_medium="who", utm_campaign="slim shady"), None, "Direct"),
    ("test_no_info_is_unknown", SITE, NO_HOST, "Unknown"),
    ("test_unknown_domain_is_referral", SITE, ref("some-unknown-domain.example.com"), "Referral"),
    ("test_doesnt_fail_on_numbers", SITE + tags(utm_source=123, utm_medium=123, utm_campaign=123),
     ref("example.com"), "Referral"),
    ("test_empty_session", SITE, NO_HOST, "Unknown"),
    ("test_empty_string_session", SITE + tags(**EMPTY), NO_HOST, "Unknown"),
    # The wild clicks: real landing pages and referrers.
    ("test_yahoo_search_for_shoes",
     "https://www.temu.com/subject/n9/googleshopping-landingpage-a-psurl.html?_bg_fs=1&_p_rfs=1&_x_ads_sub_channel=shopping&_x_vst_scene=adg&mkt_rec=1&goods_id=601099512027500&sku_id=17592188550581&_x_ns_sku_id=17592188550581&_x_ads_channel=bing&_x_gmc_account=3429411&_x_gmc_catalog=1080172&_x_ads_creative_id=82326302656241&_x_ns_device=c&_x_ads_account=176202708&_x_ns_match_type=e&_x_ns_msclkid=98833ce81fa416f104e8599a17a48b7d&_x_ads_set=519351414&_x_ns_source=o&_x_ads_id=1317217234030436&msclkid=98833ce81fa416f104e8599a17a48b7d&utm_source=bing&utm_medium=cpc&utm_campaign=Bing%E8%B4%AD%E7%89%A9_GB_ROI_31148%E6%88%B7%E5%A4%96%E8%BF%90%E5%8A%A8_%E5%85%9C%E5%BA%95_%E9%80%9A%E6%8A%95_CHERIE_0812&utm_term=4585925565374752&utm_content=Bing%E8%B4%AD%E7%89%A9_GB_ROI_31148%E6%88%B7%E5%A4%96%E8%BF%90%E5%8A%A8_%E5%85%9C%E5%BA%95_%E9%80%9A%E6%8A%95_CHERIE_0812_2&adg_ctx=f-939d4ecb",
     "https://uk.search.yahoo.com/", "Paid Search"),
    ("test_chrome_google_search_for_shoes",
     "https://www.vivaia.com/item/square-toe-v-cut-flats-p_10003645.html?gid=10011676&currency=GBP&shipping_country_code=GB&gad_source=1&gclid=CjwKCAiA98WrBhAYEiwA2WvhOuiyZpOvzXUVBP0KNplo9EFUSYmm4-gaxt_nFGB4knYLxi-l909iYxoC3OsQAvD_BwE",
     None, "Paid Search"),
    ("test_firefox_google_search_for_shoes",
     "https://www.allbirds.co.uk/products/mens-wool-runner-mizzles-deep-emerald?gad_source=1&size=uk-7&utm_campaign=PMax%20%2F%2F%20UK%20%2F%2F%20Lifestyle%20Shoes&utm_content=&utm_medium=pmax&utm_source=google&utm_term=",
     None, "Paid Search"),
    ("test_daily_mail_ad_click",
     "https://www.vivaia.com/item/square-toe-v-cut-flats-p_10003645.html?gid=10011676&currency=GBP&shipping_country_code=GB&gclid=EAIaIQobChMIxvGy5rr_ggMVYi0GAB0KSAumEAEYASABEgLZ2PD_BwE",
     "https://2bb5cd7f10ba63d8b55ecfac1a3948db.safeframe.googlesyndication.com/", "Paid Unknown"),
    ("test_google_organic", "https://www.office.co.uk/", "https://www.google.com/", "Organic Search"),
    ("test_youtube_organic", "https://twitter.com/hbomberguy", "https://www.youtube.com/", "Organic Video"),
    ("test_youtube_sidebar_ad",
     "https://www.quooker.co.uk/?gclid=CjwKCAiAmsurBhBvEiwA6e-WPNVcMzaGnrW8G2Wd4Ye-dB5GZMPxohf-_sJRqThISXVzS97mq4s2MBoCK_wQAvD_BwE",
     "https://www.youtube.com/", "Paid Video"),
    ("test_facebook_sidebar_ad",
     "https://www.tothefairest.com/shop/?utm_source=facebook&utm_medium=cpc&utm_campaign=120201466136570051&fbclid=IwAR30EpkagUJ3vLo7_tl0R8FjnA3vnm5d6jzHvjwhNCm4kXDsAmTfDsckJBc",
     "https://l.facebook.com/", "Paid Social"),
    ("test_facebook_feed_ad",
     "https://www.loopearplugs.com/products/switch?utm_source=facebook&utm_medium=paid&utm_campaign=UK_EN_TOF_Purchase_BAU_ABO_NoScale_19.05.23&utm_content=UK_EN_TOF-Fashion-Interest-TOF_AllPlacements_AllGenders_18-65%2B_Carouselimage-Mix-3in1-v2_carousel-image_Question-overstimulation-v1_All_Purchase_LP-Switch_Highest-Value_BAU_Switch_NA&utm_term=120201603163080541&fbclid=IwAR3KhttbYqH0GWskV5LGQKXnPKmHwaKdW8gvHbEPHR5IYX8GDf2hhxAslso",
     "https://l.facebook.com/", "Paid Social"),
    ("test_facebook_feed_organic_link",
     "https://lifehacker.com/get-two-of-obsidian-entertainments-best-pc-rpgs-for-fre-1845845998?fbclid=IwAR1ZEOUVr76FRjZWnIio-v0gl5WWvd8soknOd6W6h580Grk34-Jpl1ai-kU",
     "https://l.facebook.com/", "Organic Social"),
    ("test_bing_ad_click (chrome)",
     "https://www.mrporter.com/en-gb/mens/product/brunello-cucinelli/shoes/espadrilles/suede-espadrilles/1647597324114522?cm_mmc=sea&vtp00=BING&vtp01=SEAU&vtp02=483499616&vtp03=1239150613976957&vtp04=&vtp05=&vtp06=pla-4581046492826348&vtp07=&vtp08=&vtp09=e&vtp10=o&vtp11=c&vtp12=77447044368184&vtp13=shoes&vtp14=&vtp15=MR%20PORTER&vtp16=0400639982683&vtp17=GB&vtp18=EN&vtp19=4581046492826348&msclkid=f72b49e2bf2719cb4ee22c91ac4963a7&utm_source=bing&utm_medium=cpc&utm_campaign=BNG%3AMRP%3AEU%3AGB%3ALO%3AENG%3ASEAU%3APLA%3ASLR%3AMXO%3ANEW%3AMN%3ABRUNELLO-CUCINELLI%3ALV0%3ALV1%3ALV2%3AXXX%3A14%3AEMPTY%3A&utm_term=4581046492826348&utm_content=GOO%3AMRP%3AEU%3AGB%3ALO%3AENG%3ASEAU%3APLA%3ASLR%3AMXO%3ANEW%3AMN%3ABRUNELLO-CUCINELLI%3ASHOES%3ASUEDE_SHOES%3ASUEDE_SHOES%3AXXX%3A14%3AEMPTY%3A",
     "https://www.bing.com/", "Paid Search"),
    ("test_bing_ad_click (firefox)",
     "https://www.nisbets.co.uk/nisbets-essentials-chefs-clog-black-3839/b979-3839?vatToggle=incvat&plaid=1&cm_mmc=BingPLA-_-710225369-_-1246847484880804-_-B979-3839&cm_mmca1=bi_710225369_1246847484880804_77928093437482_pla-4581527532440033_c_&utm_id=bing_710225369_1246847484880804_77928093437482_pla-4581527532440033%3Apla-4581527532440033_c&kpid=bi_cmp-710225369_adg-1246847484880804_ad-77928093437482_pla-4581527532440033_dev-c_ext-_prd-B979-3839_sig-febaceddde9f13596573abaecd6840bc&utm_source=bing&utm_medium=cpc&utm_campaign=8+-+Shopping+-+Clothing&utm_term=4581527532440033&utm_content=Clothing",
     None, "Paid Search"),
    ("test_bing_organic_click", "https://www.schuh.co.uk/", "https://www.bing.com/", "Organic Search"),
    ("test_duckduckgo_organic_click", "https://www.asos.com/women/shoes/cat/?cid=4172", "https://duckduckgo.com/",
     "Organic Search"),
    ("test_duckduckgo_paid_click",
     "https://www.temu.com/uk/kuiper/un2.html?_p_rfs=1&subj=un-search1&_p_jump_id=831&_x_vst_scene=adg&search_key=.%20shoes&_x_ads_sub_channel=search&_x_ads_channel=bing&_x_ads_account=176202190&_x_ads_set=519193183&_x_ads_id=1316117718217619&_x_ads_creative_id=82257583982288&_x_ns_source=s&_x_ns_msclkid=0c97748ea8581c0fa51611f9afccba18&_x_ns_match_type=e&_x_ns_bid_match_type=be&_x_ns_query=shoes&_x_ns_keyword=.%20shoes&_x_ns_device=c&_x_ns_targetid=kwd-82258273368290%3Aloc-188&_x_ns_extensionid=&msclkid=0c97748ea8581c0fa51611f9afccba18&utm_source=bing&utm_medium=cpc&utm_campaign=0725_WJJ_UK_KW_web-app-purchase-offline%7Cweb-purchase-offline_UK%E9%AB%98%E8%8A%B1%E8%B4%B9%E8%AF%8D9533&utm_term=.%20shoes&utm_content=0725_WJJ-%E9%80%9A%E6%8A%95-UK_UK_%E7%BB%9F%E4%B8%80%E6%90%9C%E7%B4%A2%E9%A1%B5%20%E3%80%90%E7%9B%B4%E6%8E%A5%E6%8A%95%E6%94%BE%E7%94%A8%E3%80%91_webtoapp_EXACT_UK%E9%AB%98%E8%8A%B1%E8%B4%B9%E8%AF%8D4977&adg_ctx=f-939d4ecb",
     "https://duckduckgo.com/", "Paid Search"),
    ("test_fbclid_only", "https://xyz.com/?fbclid=ABC", None, "Organic Social"),
    ("test_zendesk_ticket_14945 (Paid)",
     SITE + tags(utm_source="Facebook", utm_medium="Paid", utm_campaign="Foo"), NO_HOST, "Paid Social"),
    ("test_zendesk_ticket_14945 (email)",
     SITE + tags(utm_source="substack", utm_medium="email"), ref("bing.com"), "Email"),
    ("test_zendesk_ticket_14945 (affiliate)", SITE + tags(utm_source="Foo", utm_medium="affiliate"),
     ref("bing.com"), "Affiliate"),
    ("test_zendesk_ticket_14945 (partnership)", SITE + tags(utm_source="Foo", utm_medium="partnership"),
     ref("foo.com"), "Affiliate"),
    ("test_hacker_news (referrer)",
     SITE + tags(utm_source="", utm_medium="in-product", utm_campaign="empty-state-docs-link"),
     ref("news.ycombinator.com"), "Organic Social"),
    ("test_hacker_news (source)",
     SITE + tags(utm_source="news.ycombinator.com", utm_medium="in-product",
                 utm_campaign="empty-state-docs-link"), None, "Organic Social"),
    ("test_google_plus (source)", SITE + tags(utm_source="plus.google.com"), None, "Organic Social"),
    ("test_google_plus (referrer)", SITE, ref("plus.google.com"), "Organic Social"),
    ("test_gmail_app", SITE, "android-app://com.google.android.gm/", "Email"),
    # TestReferringDomainType: the domain's type, as the organic channel of a session from it.
    *((f"TestReferringDomainType {domain}", SITE, ref(domain), f"Organic {kind}") for domain, kind in (
        ("www.google.co.uk", "Search"), ("yahoo.co.jp", "Search"), ("m.alibaba.com", "Shopping"),
        ("stripe.com", "Shopping"), ("shopping.yahoo.co.jp", "Shopping"), ("lnkd.in", "Social"),
        ("old.reddit.com", "Social"), ("plus.google.com", "Social"), ("news.ycombinator.com", "Social"),
    )),
]
# fmt: on

#: Identical inputs of two PostHog tests (its YouTube sidebar and video ads).
SAME_AS = {"test_youtube_video_ad": "test_youtube_sidebar_ad"}


def write_events(path: Path, *, posthog: bool = False) -> Path:
    """One page view per case, one user each; as PostHog's export (its preset's columns, ``$direct`` for
    no referrer) with ``posthog``."""
    events = pl.DataFrame(
        {
            "user_id": [f"u{n:02d}" for n in range(len(CASES))],
            "timestamp": [f"2024-05-01T10:{n:02d}:00Z" for n in range(len(CASES))],
            "url": [url for _, url, _, _ in CASES],
            "referrer": [referrer for _, _, referrer, _ in CASES],
        }
    )
    if posthog:
        events = events.select(
            pl.col("user_id").alias("distinct_id"),
            pl.col("timestamp"),
            pl.format("e{}", pl.int_range(pl.len())).alias("uuid"),
            pl.lit("$pageview").alias("event"),
            pl.col("url").alias("properties.$current_url"),
            pl.col("referrer").fill_null(DIRECT).alias("properties.$referrer"),
        )
    events.write_csv(path)
    return path


@pytest.fixture(scope="module")
def channels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Each case's channel under --channel-rules posthog, by the CLI."""
    base = tmp_path_factory.mktemp("posthog-channel")
    out = base / "sessions.csv"
    result = run_cli(
        write_events(base / "events.csv"), "-o", out, "--no-geo", "-q", "--channel-rules", "posthog"
    )
    assert result.exit_code == 0, result.output
    table = pl.read_csv(out, infer_schema=False).sort("user_id")
    assert table.height == len(CASES)
    return dict(zip([name for name, *_ in CASES], table["channel"], strict=True))


@pytest.mark.parametrize(("name", "expected"), [(name, expected) for name, _, _, expected in CASES])
def test_posthog_s_own_case(name: str, expected: str, channels: dict[str, str]) -> None:
    assert channels[name] == expected


def test_every_case_is_a_channel_posthog_names() -> None:
    assert {expected for *_, expected in CASES} <= set(POSTHOG_CHANNELS)
    assert all(case in {name for name, *_ in CASES} for case in SAME_AS.values())


def test_the_posthog_preset_gives_posthog_s_channel_and_a_flag_wins(tmp_path: Path) -> None:
    source = write_events(tmp_path / "export.csv", posthog=True)
    out = tmp_path / "sessions.csv"
    for flags, expected in (([], [case[3] for case in CASES]), (["--channel-rules", "ga4"], None)):
        result = run_cli(source, "--preset", "posthog", "--no-geo", "-q", "-o", out, *flags)
        assert result.exit_code == 0, result.output
        got = pl.read_csv(out, infer_schema=False).sort("user_id")["channel"].to_list()
        if expected is not None:
            assert got == expected
        else:
            # GA4's names: no "Unknown", "Paid Unknown" or "Cross Network", and its "Paid Other".
            assert not {"Unknown", "Paid Unknown", "Cross Network"} & set(got)
            assert "Paid Other" in got


def test_more_of_posthog_s_rules() -> None:
    """Rules PostHog's tests leave out: Push, Display, a paid medium alone, a video campaign, a gad_source
    other than 1, a campaign of "shop" as a word, values compared lower-cased but not trimmed, and an
    internal referrer (no referring domain: PostHog reads the site's own host)."""
    cases = [
        (SITE + tags(utm_medium="web-push"), None, "Push"),
        (SITE + tags(utm_medium="mobile"), None, "Push"),
        (SITE + tags(utm_medium="CPM"), None, "Display"),
        (SITE + tags(utm_medium="Banner"), None, "Display"),
        (SITE + tags(utm_medium="cpc"), None, "Paid Unknown"),
        (SITE + tags(utm_medium="cpc", utm_campaign="Spring Video"), None, "Paid Video"),
        (SITE + tags(utm_campaign="spring-video"), ref("example.org"), "Organic Video"),
        (SITE + tags(gad_source="5"), None, "Paid Unknown"),
        (SITE + tags(utm_campaign="summer_shop"), ref("example.org"), "Organic Shopping"),
        (SITE + tags(utm_campaign="workshop"), ref("example.org"), "Referral"),
        (SITE + tags(utm_source=" google", utm_medium="cpc"), None, "Paid Unknown"),
        (SITE + tags(utm_source="GOOGLE", utm_medium="CPC"), None, "Paid Search"),
        (SITE + tags(utm_source="google"), None, "Organic Search"),
        (SITE + tags(utm_source="direct"), None, "Direct"),
        (SITE + tags(utm_source="(direct)", fbclid="x"), None, "Organic Social"),
        (SITE + tags(utm_medium="sms"), None, "Direct"),
        (SITE + tags(utm_medium="sms"), ref("example.org"), "Referral"),
        (SITE + tags(utm_medium="organic"), ref("www.google.com"), "Organic Search"),
        (SITE + "other", "https://shop.example.net/cart", "Direct"),
        # An internal referrer of a site GA4's table lists: no referring domain still, so no type.
        ("https://www.youtube.com/watch?utm_medium=cpc", "https://m.youtube.com/", "Paid Unknown"),
        (SITE + tags(utm_medium="email"), "https://mail.google.com/", "Email"),
        # A search engine's domain as the source (review 46: GA4's table keys its name, google).
        (SITE + tags(utm_source="google.com", utm_medium="cpc"), None, "Paid Search"),
        (SITE + tags(utm_source="www.bing.com"), None, "Organic Search"),
        (SITE + tags(utm_source="duckduckgo.com", utm_medium="cpc"), None, "Paid Search"),
        (SITE + tags(utm_source="m.facebook.com", utm_medium="paid"), None, "Paid Social"),
        (SITE, "https://mail.google.com/mail/u/0/", "Email"),
    ]
    events = pl.DataFrame(
        {
            "user_id": [f"u{n:02d}" for n in range(len(cases))],
            "timestamp": [f"2024-05-01T10:{n:02d}:00Z" for n in range(len(cases))],
            "url": [url for url, _, _ in cases],
            "referrer": [referrer for _, referrer, _ in cases],
        }
    ).with_columns(pl.col("timestamp").str.to_datetime(time_zone="UTC"))
    table = sessionize.sessionize(events, no_geo=True, channel_rules="posthog").collect().sort("user_id")
    assert table["channel"].to_list() == [expected for *_, expected in cases]
