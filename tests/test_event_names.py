"""Event names compared case-insensitively (page views, page activity, heartbeats, conversions,
``--count-events``) by listing their spellings: the same answer as lowercasing the column."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

import sessionize
from sessionize import schema as S
from tests.helpers import write_text


def lowered(values: list[str | None], names: list[str]) -> list[bool | None]:
    """What lowercasing the column gives: the rule the spellings must follow."""
    column = pl.Series("event", values, dtype=pl.String)
    lowered_names = [name.lower() for name in names]
    return pl.select(column.str.to_lowercase().is_in(lowered_names)).to_series().to_list()


def spelled(values: list[str | None], names: list[str]) -> list[bool | None]:
    column = pl.Series("event", values, dtype=pl.String)
    return pl.select(S.event_named(pl.lit(column), names)).to_series().to_list()


def test_every_character_that_lowercases_to_ascii_is_a_spelling() -> None:
    """Over every code point, as Polars lowercases it: a character whose lowercase is ASCII is that ASCII
    character, its uppercase, or one listed as another case (the KELVIN SIGN, whose lowercase is "k");
    and no character lowercases to more than one ASCII character. A Unicode update that adds one fails
    here, not silently in the page-view flags."""
    chars = [chr(code) for code in range(0x110000) if not 0xD800 <= code < 0xE000]
    table = pl.DataFrame({"char": chars}).with_columns(lower=pl.col("char").str.to_lowercase())
    to_ascii = table.filter(
        pl.col("lower").str.contains(r"^[\x00-\x7f]+$") & (pl.col("char") != pl.col("lower"))
    )
    for char, lower in to_ascii.iter_rows():
        assert len(lower) == 1, (char, lower)
        assert char == lower.upper() or char in S._OTHER_CASES.get(lower, ""), (hex(ord(char)), lower)
    assert "\u212a" in to_ascii.get_column("char").to_list()


def test_spellings_of_the_default_page_view_names() -> None:
    names = ["page_view", "pageview", "$pageview", "page"]
    values = [
        "page_view",
        "Page_View",
        "PAGE_VIEW",
        "pAgEvIeW",
        "$PageView",
        "PAGE",
        "page_views",
        "pag",
        "page\u212a",
        "pa\u0307ge",
        "\u0130page",
        " page",
        "",
        None,
        "click",
        "\u212aick",
    ]
    assert spelled(values, names) == lowered(values, names)
    assert spelled(["clic\u212a", "CLICK", "clicK"], ["Click"]) == [True, True, True]


def test_long_and_non_ascii_names_lowercase_the_column() -> None:
    """Names with too many spellings, or not ASCII, take the lowercasing path: the same answer."""
    long_name = "a_very_long_custom_event_name"
    assert S._spellings([long_name]) is None
    assert S._spellings(["café"]) is None
    values = [long_name.upper(), "CAFÉ", "Café", "cafe", None]
    for names in ([long_name], ["café"], ["Café", "page_view"]):
        assert spelled(values, names) == lowered(values, names)


@settings(max_examples=300, deadline=None)
@given(
    names=st.lists(
        st.text(alphabet="abkKvVie_$Ü\u212a\u0130", min_size=1, max_size=6), min_size=1, max_size=3
    ),
    values=st.lists(
        st.none() | st.text(alphabet="abkKvVie_$Üü\u212a\u0130\u0307ABIE", max_size=7), max_size=20
    ),
)
def test_spellings_agree_with_lowercasing(names: list[str], values: list[str | None]) -> None:
    assert spelled(values, names) == lowered(values, names)


def test_page_views_and_counts_in_any_case(tmp_path: Path) -> None:
    """Through the CLI's library entry: event names in any case count as the configured names."""
    source = write_text(
        tmp_path / "events.csv",
        "user_id,timestamp,event,url\n"
        "u1,2024-05-01T10:00:00Z,PAGE_VIEW,https://a.example/\n"
        "u1,2024-05-01T10:00:05Z,Page_View,https://a.example/b\n"
        "u1,2024-05-01T10:00:07Z,Add_To_Cart,https://a.example/b\n"
        "u1,2024-05-01T10:00:09Z,add_to_car\u212a,https://a.example/b\n"
        "u1,2024-05-01T10:00:10Z,clic\u212a,https://a.example/c\n",
    )
    result = sessionize.run([source], no_geo=True, count_events="add_to_cart,Click")
    assert result.sessions.select(
        "pageview_count", "event_count", "exit_page", "add_to_cart_count", "click_count"
    ).rows() == [(2, 5, "https://a.example/b", 1, 1)]
