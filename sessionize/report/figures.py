"""The report's charts as Plotly figures (plain dicts), and each figure's HTML.

Colours, fonts and layout are shared here so that every chart looks alike. Every label a figure shows
(values from the data, and the report's own) passes through :func:`_text`: Plotly draws a subset of HTML
in its texts, and a label must show as the characters it holds. Only hover templates are markup.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from sessionize.display import visible
from sessionize.report.aggregate import _DASH, Ranking, ReportData
from sessionize.report.columns import _RankingSpec

_BLUE = "#3867d6"
_ORANGE = "#f39c4a"
_GREY = "#a5adb8"
_PALETTE = ["#3867d6", "#f39c4a", "#20bf6b", "#8854d0", "#eb3b5a", "#0fb9b1", "#f7b731", "#778ca3"]
_FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"
# No mode bar: it would cover the bars of small charts; drag still zooms and a double click resets.
_PLOTLY_CONFIG = {"displaylogo": False, "responsive": True, "displayModeBar": False}
_URL_LABEL_LENGTH = 48
#: The longest text from the data that the page embeds, in characters: beyond it a value is cut with an
#: ellipsis. Plotly needs each category's whole text (on the bars, the ticks' values and the hover), so
#: one huge value (a 24 MB URL) would otherwise be copied into the page several times over.
LABEL_LIMIT = 1_000


def _text(value: str) -> str:
    """A text for Plotly that shows as the characters it holds.

    Plotly draws a subset of HTML in every text it renders (tick, hover and legend labels, titles,
    annotations): ``<a href>`` is a link, ``<b>``, ``<i>``, ``<sup>``, ``<sub>``, ``<span style>`` format,
    ``<br>`` breaks the line, and ``&amp;``, ``&lt;``, ``&gt;`` and numeric entities are decoded. So ``&``,
    ``<`` and ``>`` become entities, and no tag can form. Quotes are kept: they mean something only
    inside a tag, and Plotly would show ``&quot;`` as it is. One to one, so distinct values stay distinct.
    Shorten a text before this, never after: a cut could split an entity.

    The characters a browser obeys rather than shows (the bidirectional overrides that draw
    ``/\u202egpj.exe`` as ``/exe.jpg``, controls) are shown as escapes (:func:`sessionize.display.visible`).

    >>> _text("/<a href='https://e.vil/'>LOGIN</a> &amp;")
    "/&lt;a href='https://e.vil/'&gt;LOGIN&lt;/a&gt; &amp;amp;"
    >>> _text("/\\u202egpj.exe")
    '/\\\\u202egpj.exe'
    """
    return html.escape(visible(value), quote=False)


def _bounded(labels: Sequence[str]) -> list[str]:
    """Each label as it is, or cut after :data:`LABEL_LIMIT` characters with an ellipsis; still distinct,
    as Plotly's categories must be: a second label cut to the same text is numbered (``… (2)``).

    A cut label is longer than the limit and a whole one is not, so the two never meet. The cut is by
    code point (a Python ``str``), before :func:`_text` escapes it and before the JSON encoder writes
    ``\\u`` escapes and surrogate pairs: no entity, escape or pair is split.

    >>> _bounded(["a" * 1_001, "a" * 1_002, "b"]) == ["a" * 1_000 + "…", "a" * 1_000 + "… (2)", "b"]
    True
    """
    bounded: list[str] = []
    cuts: dict[str, int] = {}
    for label in labels:
        if len(label) <= LABEL_LIMIT:
            bounded.append(label)
            continue
        cut = label[:LABEL_LIMIT] + "\N{HORIZONTAL ELLIPSIS}"
        cuts[cut] = cuts.get(cut, 0) + 1
        bounded.append(cut if cuts[cut] == 1 else f"{cut} ({cuts[cut]})")
    return bounded


def _percent(part: float, whole: float) -> str:
    return _DASH if not whole else f"{100 * part / whole:.1f}%"


def _url_label(url: str) -> str:
    """A URL without its scheme, shortened in the middle to fit beside a bar."""
    text = url.split("://", 1)[1] if "://" in url else url
    if len(text) <= _URL_LABEL_LENGTH:
        return text
    keep = _URL_LABEL_LENGTH - 1
    return text[: keep * 2 // 3] + "…" + text[-(keep - keep * 2 // 3) :]


def _plain_label(label: str) -> str:
    return label if len(label) <= _URL_LABEL_LENGTH else label[: _URL_LABEL_LENGTH - 1] + "…"


def _layout(height: int, **extra: Any) -> dict[str, Any]:
    layout: dict[str, Any] = {
        "height": height,
        "margin": {"l": 8, "r": 16, "t": 8, "b": 8},
        "font": {"family": _FONT, "size": 12, "color": "#2d3436"},
        "paper_bgcolor": "white",
        "plot_bgcolor": "white",
        "colorway": _PALETTE,
        "separators": ".,",
        "hoverlabel": {"font": {"family": _FONT}},
        "showlegend": False,
    }
    layout.update(extra)
    return layout


def _axis(**extra: Any) -> dict[str, Any]:
    axis: dict[str, Any] = {"gridcolor": "#eceff4", "zeroline": False, "automargin": True}
    axis.update(extra)
    return axis


def _timeline_figure(data: ReportData) -> dict[str, Any]:
    timeline = data.timeline
    hover = {
        "hour": "%{x|%a %d %b %Y %H:00}",
        "day": "%{x|%a %d %b %Y}",
        "month": "%{x|%b %Y}",
        "year": "%{x|%Y}",
    }[timeline.unit]
    width = {"hour": 3600_000, "day": 86400_000, "month": 28 * 86400_000, "year": 365 * 86400_000}[
        timeline.unit
    ]
    starts = [start.isoformat() for start in timeline.starts]
    traces: list[dict[str, Any]]
    if timeline.new is None:
        traces = [
            {
                "type": "bar",
                "x": starts,
                "y": list(timeline.sessions),
                "name": "Sessions",
                "marker": {"color": _BLUE},
                "width": [width * 0.85] * len(starts),
                "hovertemplate": hover + "<br>%{y:,} sessions<extra></extra>",
            }
        ]
    else:
        assert timeline.returning is not None  # counted whenever new sessions are
        returning = list(timeline.returning)
        # Sessions whose session_number is null (a table from elsewhere): neither new nor returning.
        unknown = [s - n - r for s, n, r in zip(timeline.sessions, timeline.new, returning, strict=True)]
        parts = [("New", list(timeline.new), _BLUE), ("Returning", returning, _ORANGE)]
        if any(unknown):
            parts.append(("Unknown", unknown, _GREY))
        traces = [
            {
                "type": "bar",
                "x": starts,
                "y": values,
                "name": _text(name),
                "marker": {"color": color},
                "width": [width * 0.85] * len(starts),
                "hovertemplate": hover + f"<br>%{{y:,}} {_text(name.lower())} sessions<extra></extra>",
            }
            for name, values, color in parts
        ]
    return {
        "data": traces,
        "layout": _layout(
            300,
            barmode="stack",
            bargap=0.1,
            showlegend=timeline.new is not None,
            legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0, "traceorder": "normal"},
            xaxis=_axis(type="date", showgrid=False),
            yaxis=_axis(title={"text": "sessions"}, rangemode="tozero", tickformat=","),
            margin={"l": 8, "r": 16, "t": 30, "b": 8},
        ),
    }


def _durations_figure(data: ReportData) -> dict[str, Any]:
    labels = [_text(label) for label, _ in data.durations]
    values = [value for _, value in data.durations]
    return {
        "data": [
            {
                "type": "bar",
                "x": labels,
                "y": values,
                "marker": {"color": _BLUE},
                "text": [_percent(v, data.sessions) for v in values],
                "textposition": "outside",
                "cliponaxis": False,
                "hovertemplate": "%{x}<br>%{y:,} sessions<extra></extra>",
            }
        ],
        "layout": _layout(
            300,
            xaxis=_axis(type="category", showgrid=False, tickangle=0),
            yaxis=_axis(title={"text": "sessions"}, rangemode="tozero", tickformat=","),
            margin={"l": 8, "r": 16, "t": 24, "b": 8},
        ),
    }


def _donut_figure(labels: Sequence[str], values: Sequence[int], colors: Sequence[str]) -> dict[str, Any]:
    return {
        "data": [
            {
                "type": "pie",
                "labels": [_text(label) for label in _bounded(labels)],
                "values": list(values),
                "hole": 0.55,
                "sort": False,
                "direction": "clockwise",
                "marker": {"colors": list(colors)},
                "textinfo": "percent",
                "hovertemplate": "%{label}<br>%{value:,} sessions (%{percent})<extra></extra>",
            }
        ],
        "layout": _layout(
            260, showlegend=True, legend={"orientation": "v", "x": 1, "y": 0.5}, margin={"t": 8, "b": 8}
        ),
    }


def _ranking_figure(spec: _RankingSpec, ranking: Ranking, total: int) -> dict[str, Any]:
    # Categories by their whole value up to LABEL_LIMIT (escaped alike on the bars and the ticks, so still
    # distinct), shown shortened: shortened first, then escaped, so that no entity is cut.
    labels = [_text(label) for label in _bounded(ranking.labels)]
    short = _url_label if spec.is_url else _plain_label
    ticktext = [_text(short(label)) for label in ranking.labels]
    values = list(ranking.sessions)
    return {
        "data": [
            {
                "type": "bar",
                "orientation": "h",
                "x": values,
                "y": labels,
                "marker": {"color": _BLUE},
                "text": [f"{v:,} · {_percent(v, total)}" for v in values],
                "textposition": "outside",
                "cliponaxis": False,
                "hovertemplate": "%{y}<br>%{x:,} sessions<extra></extra>",
            }
        ],
        "layout": _layout(
            40 + 26 * len(labels),
            bargap=0.25,
            # Room on the right for the text beside the longest bar.
            margin={"l": 8, "r": 72, "t": 8, "b": 8},
            xaxis=_axis(visible=False, rangemode="tozero", range=[0, max(values) * 1.1]),
            yaxis=_axis(
                type="category",
                autorange="reversed",
                tickmode="array",
                tickvals=labels,
                ticktext=ticktext,
                showgrid=False,
            ),
        ),
    }


def _figure_html(key: str, figure: dict[str, Any]) -> str:
    import plotly.io as pio

    height = int(figure["layout"]["height"])
    return str(
        pio.to_html(
            figure,
            full_html=False,
            include_plotlyjs=False,
            config=_PLOTLY_CONFIG,
            div_id=f"chart-{key}",
            default_height=f"{height}px",
            validate=True,
        )
    )
