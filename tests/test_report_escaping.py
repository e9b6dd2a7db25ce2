"""Issue 18, point 5: data text in the report's charts is shown as text, never as Plotly's label markup.

Plotly draws a subset of HTML in every text it renders (tick labels, hover labels, legend entries,
titles, annotations): ``<a href>`` becomes a link, ``<b>``, ``<i>``, ``<span style>``, ``<sup>``,
``<sub>``, ``<br>`` format the text, and ``&lt;``/``&gt;``/``&amp;`` are decoded. So each data string is
escaped for it (truncated first, so that no entity is cut in half) and shows as the characters it holds.

Two views of one report made from a session table with hostile values in every charted column: the
figures' JSON in the page, and the page as headless Chromium draws it (links, styled text, tick, legend
and hover texts).
"""

from __future__ import annotations

import html
import json
import os
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from plotly.offline import get_plotlyjs

import sessionize
from sessionize import report as R
from sessionize.report.figures import LABEL_LIMIT
from tests.helpers import CHROMIUM, CHROMIUM_ARGS, T0, invoke

LINK = "<a href='https://e.vil/'>LOGIN</a>"
# Cut by the URL label (31 characters kept at the start, 16 at the end): '&<' are the last two kept at
# the start and '>' is the first kept at the end, so that an entity cut after escaping would show.
LONG_URL_TEXT = "a.example/" + "p" * 19 + "&<" + "b>" + "q" * 30 + "><u>u</u>&amp;zz"
LONG_URL_SHOWN = LONG_URL_TEXT[:31] + "\N{HORIZONTAL ELLIPSIS}" + LONG_URL_TEXT[-16:]
# Cut by the plain label after 47 characters: '&<' are the last two kept.
LONG_PLAIN = "x" * 45 + "&<b>bold</b> and more"
LONG_PLAIN_SHOWN = LONG_PLAIN[:47] + "\N{HORIZONTAL ELLIPSIS}"
# Ten values per column: one session each, so every one is among the top 10 of its ranking. Two of
# them are the same text once Plotly's markup is applied unescaped (<b>bold</b> and its entities).
HOSTILE = [
    LINK,
    "<b>bold</b>",
    "&lt;b&gt;bold&lt;/b&gt;",
    '<span style="color:red">red</span>',
    "<br>next line",
    "&amp; &nbsp; &#60;b&#62;",
    "<script>alert(1)</script>",
    '<a href="https://e.vil/">LOGIN2</a>',
    "<i>i</i><sup>2</sup><sub>3</sub><em>e</em><s>s</s><u>u</u>",
    LONG_PLAIN,
]
URLS = [f"https://a.example/{value}" for value in HOSTILE[:-1]] + ["https://" + LONG_URL_TEXT]
TITLE = f"{LINK} <b>report</b> &amp;"
SOURCE_NAME = "<i>t&amp;.parquet"
# Markup that Plotly draws as formatting; none of it may come from the data.
MARKUP_TAGS = ("a", "b", "i", "em", "s", "u", "sup", "sub", "span", "br")


def rotated(values: list[str], by: int) -> list[str]:
    return values[by:] + values[:by]


def hostile_table() -> pl.DataFrame:
    rows = len(HOSTILE)
    columns: dict[str, list[Any]] = {
        "user_id": [f"u{i}" for i in range(rows)],
        "session_number": [1 if i % 2 else 2 for i in range(rows)],
        "session_start": [T0 + timedelta(minutes=7 * i) for i in range(rows)],
        "duration_s": [float(30 * i) for i in range(rows)],
        "pageview_count": [i % 4 for i in range(rows)],
        "landing_page": URLS,
        "exit_page": rotated(URLS, 3),
        "referrer": rotated(URLS, 5),
        "referrer_host": HOSTILE,
        "traffic_source": HOSTILE,
        "source_name": rotated(HOSTILE, 1),
        "medium": rotated(HOSTILE, 2),
        "utm_campaign": rotated(HOSTILE, 3),
        "channel": rotated(HOSTILE, 4),
        "country": rotated(HOSTILE, 5),
        "city": rotated(HOSTILE, 6),
        "region": rotated(HOSTILE, 7),
        "device_category": rotated(HOSTILE, 7),
        "browser": rotated(HOSTILE, 8),
        "os": rotated(HOSTILE, 9),
        "user_agent": HOSTILE,
        "is_bounce": [i % 3 == 0 for i in range(rows)],
        "is_bot": [False] * rows,
    }
    return pl.DataFrame(columns, schema={name: sessionize.SESSION_SCHEMA[name] for name in columns})


def shown(label: str, *, url: bool) -> str:
    """What a tick shows for a value, character for character: a URL without its scheme; beyond 48
    characters, a URL keeps its first 31 and last 16 around an ellipsis, another text its first 47."""
    text = label.split("://", 1)[1] if url else label
    if len(text) <= 48:
        return text
    ellipsis = "\N{HORIZONTAL ELLIPSIS}"
    return text[:31] + ellipsis + text[-16:] if url else text[:47] + ellipsis


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Iterator[R.ReportResult]:
    folder = tmp_path_factory.mktemp("escaping")
    table = folder / SOURCE_NAME
    hostile_table().write_parquet(table)
    yield R.make_report([table], output=folder / "r.html", title=TITLE)


def figures_in(page: str) -> dict[str, dict[str, Any]]:
    """Each chart's figure (``data`` and ``layout``) by key, parsed from the page's scripts."""
    decoder = json.JSONDecoder()
    figures: dict[str, dict[str, Any]] = {}
    for match in re.finditer(r'Plotly\.newPlot\(\s*"chart-([\w-]+)",\s*', page):
        data, end = decoder.raw_decode(page, match.end())
        comma = re.compile(r",\s*").match(page, end)
        assert comma is not None, page[end : end + 80]
        end = comma.end()
        layout, _ = decoder.raw_decode(page, end)
        figures[match.group(1)] = {"data": data, "layout": layout}
    return figures


def strings(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Every string in a figure, with its path (``data.0.y.3``)."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from strings(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from strings(item, f"{path}.{index}")


# ---------------------------------------------------------------------------------------------------
# The figures' JSON
# ---------------------------------------------------------------------------------------------------


def test_no_data_text_reaches_plotly_as_markup(report: R.ReportResult) -> None:
    page = Path(report.output).read_text(encoding="utf-8")
    figures = figures_in(page)
    assert list(figures) == report.charts
    for key, figure in figures.items():
        for path, text in strings(figure):
            if path.endswith("hovertemplate"):
                # The report's own markup: line breaks and the hidden trace name, around placeholders.
                rest = re.sub(r"<br>|<extra></extra>|%\{[^}]*\}", "", text)
                assert "<" not in rest and ">" not in rest and "&" not in rest, (key, path, text)
                continue
            assert "<" not in text and ">" not in text, (key, path, text)
            # Only the three entities Plotly decodes, and never half of one.
            assert re.fullmatch(r"(?:[^&]|&(?:amp|lt|gt);)*", text), (key, path, text)


def test_charted_values_keep_their_text_and_stay_distinct(report: R.ReportResult) -> None:
    figures = figures_in(Path(report.output).read_text(encoding="utf-8"))
    for spec in R.RANKINGS:
        raw = list(report.data.rankings[spec.key].labels)
        assert len(raw) == len(HOSTILE), spec.key
        trace = figures[spec.key]["data"][0]
        if spec.key == "device_category":
            assert [html.unescape(label) for label in trace["labels"]] == raw
            assert len(set(trace["labels"])) == len(raw)
            continue
        yaxis = figures[spec.key]["layout"]["yaxis"]
        # Categories: escaped alike on the bars and the ticks, so distinct, and the hover shows them.
        assert trace["y"] == yaxis["tickvals"]
        assert [html.unescape(label) for label in trace["y"]] == raw
        assert len(set(trace["y"])) == len(raw)
        assert [html.unescape(text) for text in yaxis["ticktext"]] == [
            shown(label, url=spec.is_url) for label in raw
        ]
    # Shortened, then escaped: the '&<' before the cut and the '>' after it are whole entities.
    assert html.escape(LONG_URL_SHOWN, quote=False) in figures["landing_page"]["layout"]["yaxis"]["ticktext"]
    assert html.escape(LONG_PLAIN_SHOWN, quote=False) in figures["os"]["layout"]["yaxis"]["ticktext"]
    assert "<b>bold</b>" in report.data.rankings["browser"].labels
    assert "&lt;b&gt;bold&lt;/b&gt;" in report.data.rankings["browser"].labels
    durations = figures["durations"]["data"][0]["x"]
    assert [html.unescape(label) for label in durations] == [label for label, _ in R.DURATION_BUCKETS]


def test_the_page_markup_escapes_the_title_and_the_sources(report: R.ReportResult) -> None:
    page = Path(report.output).read_text(encoding="utf-8")
    assert f"<title>{html.escape(TITLE)}</title>" in page
    assert f"<h1>{html.escape(TITLE)}</h1>" in page
    assert html.escape(SOURCE_NAME) in page
    outside_scripts = re.sub(r"<script>.*?</script>", "", page, flags=re.DOTALL)
    assert "e.vil/'>" not in outside_scripts and "<b>" not in outside_scripts and "<i>" not in outside_scripts


# ---------------------------------------------------------------------------------------------------
# A huge value
# ---------------------------------------------------------------------------------------------------


def test_a_huge_value_is_cut_and_the_page_stays_small(tmp_path: Path) -> None:
    """Plotly needs each category's text on the bars, the ticks' values and the hover: one URL of
    megabytes would be copied into the page several times (review 41, F9: a 196 MB page from 24 MB URLs,
    where docs/report.md promises about 4.9 MB whatever the table). Such a value is cut after
    LABEL_LIMIT characters with an ellipsis; two cut alike stay distinct; the cut keeps whole the
    surrogate pair (an emoji in the page's JSON) and the entities ('&<') just before it."""
    huge = 3_000_000
    prefix = "https://a.example/"
    head = prefix + "p" * (LABEL_LIMIT - len(prefix) - 3) + "\N{GRINNING FACE}&<"
    assert len(head) == LABEL_LIMIT
    short = prefix + "short"
    urls = [head + ">" + "q" * huge, head + "<" + "r" * huge, short]
    columns: dict[str, list[Any]] = {
        "user_id": ["u1", "u2", "u3"],
        "session_start": [T0 + timedelta(minutes=i) for i in range(3)],
        "duration_s": [10.0, 20.0, 30.0],
        "landing_page": urls,
        "device_category": ["d" * huge, "mobile", "mobile"],
    }
    table = tmp_path / "huge.parquet"
    pl.DataFrame(columns, schema={name: sessionize.SESSION_SCHEMA[name] for name in columns}).write_parquet(
        table
    )
    output = tmp_path / "r.html"
    result = invoke("report", table, "-o", output, "-q")
    assert result.exit_code == 0, result.output
    assert output.stat().st_size < len(get_plotlyjs().encode()) + 200_000
    page = output.read_text(encoding="utf-8")
    assert (
        "q" * LABEL_LIMIT not in page and "r" * LABEL_LIMIT not in page and "d" * 2 * LABEL_LIMIT not in page
    )
    figures = figures_in(page)
    cut = html.escape(head, quote=False) + "\N{HORIZONTAL ELLIPSIS}"
    trace = figures["landing_page"]["data"][0]
    assert sorted(trace["y"]) == sorted([cut, cut + " (2)", short])
    assert figures["landing_page"]["layout"]["yaxis"]["tickvals"] == trace["y"]
    assert sorted(figures["device_category"]["data"][0]["labels"]) == [
        "d" * LABEL_LIMIT + "\N{HORIZONTAL ELLIPSIS}",
        "mobile",
    ]
    docs = (Path(__file__).parent.parent / "docs" / "report.md").read_text(encoding="utf-8")
    assert f"longer than {LABEL_LIMIT:,} characters" in " ".join(docs.split())
    for key, figure in figures.items():
        for path, text in strings(figure):
            if not path.endswith("hovertemplate"):
                assert re.fullmatch(r"(?:[^&<>]|&(?:amp|lt|gt);)*", text), (key, path, text[:80])


# ---------------------------------------------------------------------------------------------------
# In a browser
# ---------------------------------------------------------------------------------------------------

# Everything Plotly drew from text: links, formatted pieces (a tspan with a style, or any tspan but
# the line of a multi-line text) and, per chart, the tick and legend texts as shown.
_DRAWN = """() => {
    const xlink = 'http://www.w3.org/1999/xlink';
    const links = [...document.querySelectorAll('a')].map(
        a => a.getAttribute('href') || a.getAttributeNS(xlink, 'href') || '');
    const formatted = [...document.querySelectorAll('.js-plotly-plot tspan')]
        .filter(t => t.hasAttribute('style') || !t.classList.contains('line'))
        .map(t => t.outerHTML);
    // The dates on the timeline's ticks are on two lines, by Plotly: no other tick or legend text is.
    const lines = [...document.querySelectorAll(
        'section:not([data-chart=timeline]) :is(.xtick text, .ytick text, .legendtext)')]
        .filter(t => t.querySelector('tspan')).map(t => t.outerHTML);
    const elements = [...document.querySelectorAll(TAGS)].map(e => e.outerHTML);
    const charts = {};
    for (const s of document.querySelectorAll('section[data-chart]')) {
        charts[s.dataset.chart] = {
            ticks: [...s.querySelectorAll('.ytick text, .xtick text')].map(t => t.textContent),
            legend: [...s.querySelectorAll('.legendtext')].map(t => t.textContent),
        };
    }
    return {
        links, formatted, lines, elements, charts,
        title: document.querySelector('h1').textContent,
        titleChildren: document.querySelector('h1').children.length,
        header: document.querySelector('header').textContent,
    };
}"""

_HOVER = """() => {
    const layer = document.querySelectorAll('.hoverlayer .hovertext');
    return [...layer].map(h => ({
        lines: [...h.querySelectorAll('text.nums tspan.line')].map(t => t.textContent),
        formatted: [...h.querySelectorAll('tspan')].filter(
            t => t.hasAttribute('style') || !t.classList.contains('line')).map(t => t.outerHTML),
        links: h.querySelectorAll('a').length,
    }));
}"""


@pytest.mark.slow
@pytest.mark.skipif(
    not CHROMIUM.exists() and not os.environ.get("CI"),
    reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium; CI installs it)",
)
def test_headless_chromium_shows_the_hostile_text_as_text(report: R.ReportResult) -> None:
    from playwright.sync_api import Dialog, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            problems: list[str] = []

            def dismiss(dialog: Dialog) -> None:
                problems.append(f"dialog: {dialog.message}")
                dialog.dismiss()

            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("dialog", dismiss)
            page.goto(Path(report.output).resolve().as_uri(), wait_until="load")
            page.wait_for_function(
                f"document.querySelectorAll('.js-plotly-plot .main-svg').length >= {len(report.charts)}",
                timeout=15_000,
            )
            drawn = page.evaluate(_DRAWN.replace("TAGS", json.dumps(",".join(MARKUP_TAGS))))
            hovers = _hover_every_mark(page)
        finally:
            browser.close()

    assert problems == []
    # No link at all (the page has none of its own), no formatted text, no element from the data.
    assert drawn["links"] == []
    assert drawn["formatted"] == []
    assert drawn["lines"] == []
    assert drawn["elements"] == []
    assert drawn["title"] == TITLE and drawn["titleChildren"] == 0
    assert SOURCE_NAME in drawn["header"]

    charts = drawn["charts"]
    for spec in R.RANKINGS:
        labels = list(report.data.rankings[spec.key].labels)
        if spec.key == "device_category":
            assert charts[spec.key]["legend"] == labels
        else:
            assert charts[spec.key]["ticks"] == [shown(label, url=spec.is_url) for label in labels]
    assert "a.example/" + LINK in charts["landing_page"]["ticks"]
    assert LONG_URL_SHOWN in charts["landing_page"]["ticks"] and LONG_PLAIN_SHOWN in charts["os"]["ticks"]
    assert "<10 s" in charts["durations"]["ticks"]

    for spec in R.RANKINGS:
        labels = list(report.data.rankings[spec.key].labels)
        seen = hovers[spec.key]
        assert len(seen) == len(labels), spec.key
        for label, hover in zip(labels, seen, strict=True):
            assert hover["links"] == 0 and hover["formatted"] == [], (spec.key, hover)
            # The first of the hover's two lines is the value as its tick shows it (a slice: its label).
            expected = label if spec.key == "device_category" else shown(label, url=spec.is_url)
            assert hover["lines"] == [expected, hover["lines"][-1]], (spec.key, label, hover)


def _hover_every_mark(page: Any) -> dict[str, list[dict[str, Any]]]:
    """The hover label of every bar and slice of the rankings, hovered one after the other."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    hovers: dict[str, list[dict[str, Any]]] = {}
    for spec in R.RANKINGS:
        section = page.locator(f'section[data-chart="{spec.key}"]')
        marks = section.locator("g.slice" if spec.key == "device_category" else "g.point path")
        hovers[spec.key] = []
        for index in range(marks.count()):
            page.mouse.move(0, 0)
            if spec.key == "device_category":
                marks.nth(index).dispatch_event("mouseover")
            else:
                marks.nth(index).hover(force=True)
            try:
                page.wait_for_function(
                    "document.querySelectorAll('.hoverlayer .hovertext').length > 0", timeout=3_000
                )
            except PlaywrightTimeout:
                found = []
            else:
                found = page.evaluate(_HOVER)
            hovers[spec.key].append(found[0] if len(found) == 1 else {"lines": [], "found": found})
            if spec.key == "device_category":
                marks.nth(index).dispatch_event("mouseout")
    return hovers


def test_bidirectional_overrides_in_the_data_are_shown_not_obeyed(tmp_path: Path) -> None:
    """A landing page ``/<U+202E>gpj.exe`` was drawn by the browser as ``/exe.jpg`` in the rankings
    (review 55 F4): the overrides and isolates that reorder text, and control characters, are shown as
    escapes in the charts' labels and in the page's own text, as they are in the terminal."""
    override = "\u202e"
    urls = [
        f"https://x.example/{override}gpj.exe",
        "https://x.example/\u2066a\u2069\x1b[2J",
        "https://x.example/ok",
    ]
    rows = len(urls)
    table = pl.DataFrame(
        {
            "user_id": [f"u{i}" for i in range(rows)],
            "session_number": [1] * rows,
            "session_start": [T0 + timedelta(minutes=i) for i in range(rows)],
            "duration_s": [10.0] * rows,
            "pageview_count": [1] * rows,
            "landing_page": urls,
            "exit_page": urls,
            "referrer": urls,
            "referrer_host": ["x.example"] * rows,
            "traffic_source": [f"src{override}"] * rows,
            "channel": ["Referral"] * rows,
            "is_bounce": [True] * rows,
            "is_bot": [False] * rows,
        },
        schema={
            name: sessionize.SESSION_SCHEMA[name]
            for name in (
                "user_id",
                "session_number",
                "session_start",
                "duration_s",
                "pageview_count",
                "landing_page",
                "exit_page",
                "referrer",
                "referrer_host",
                "traffic_source",
                "channel",
                "is_bounce",
                "is_bot",
            )
        },
    )
    source = tmp_path / f"t{override}.parquet"
    table.write_parquet(source)
    out = tmp_path / "page.html"
    result = invoke("report", source, "-o", out, "--title", f"T{override}x", "-q")
    assert result.exit_code == 0, result.output
    page = out.read_text(encoding="utf-8")
    # The figures' data: the page's scripts but plotly.js itself.
    data = "".join(
        re.findall(r"<script[^>]*>(.*?)</script>", page.replace(get_plotlyjs(), ""), flags=re.DOTALL)
    )
    for char in (override, "\u2066", "\u2069", "\x1b"):
        assert char not in page
        # Nor as a JSON escape that the page's script turns back into the character.
        escape = rf"(?<!\\)\\u{ord(char):04x}"
        assert not re.search(escape, data, flags=re.IGNORECASE), hex(ord(char))
    assert "x.example\\u002f\\\\u202egpj.exe" in page or "x.example/\\\\u202egpj.exe" in page
    assert "<title>T\\u202ex</title>" in page
