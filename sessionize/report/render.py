"""The report page: :func:`render_report` lays the figures out in cards under the headline numbers,
in one HTML document with plotly.js inlined once (no CDN, no network: it opens from disk and can be
mailed)."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sessionize import __version__
from sessionize.display import visible
from sessionize.report.aggregate import _DASH, Ranking, ReportData
from sessionize.report.columns import _RANKING_BY_KEY, RANKINGS, _RankingSpec
from sessionize.report.figures import (
    _BLUE,
    _FONT,
    _ORANGE,
    _PALETTE,
    _donut_figure,
    _durations_figure,
    _figure_html,
    _ranking_figure,
    _timeline_figure,
)

DEFAULT_TITLE = "Session insights"


def format_duration(seconds: float | None) -> str:
    """``5m 25s``, ``1h 02m 03s``, ``4.2s``, ``-1m 04s`` (a table from elsewhere); a dash for None."""
    if seconds is None:
        return _DASH
    if seconds < 0:
        return "-" + format_duration(-seconds)
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    return f"{minutes}m {secs:02d}s" if minutes else f"{seconds:.1f}s"


@dataclass(frozen=True)
class _Card:
    key: str
    title: str
    width: Literal["wide", "half", "third"]
    figure: dict[str, Any] | None = None
    subtitle: str = ""
    note: str = ""


def _sessions(count: int) -> str:
    """``count`` sessions, in the singular for one."""
    return f"{count:,} session{'' if count == 1 else 's'}"


def _ranking_subtitle(spec: _RankingSpec, ranking: Ranking, total: int) -> str:
    parts = [
        f"Top {len(ranking.labels)} of {ranking.distinct:,} {spec.noun}"
        if ranking.other_values
        else f"All {ranking.distinct:,} {spec.noun}"
    ]
    if ranking.other_sessions:
        parts.append(f"{_sessions(ranking.other_sessions)} on the others")
    unknown = total - ranking.known
    if unknown:
        why = {
            "landing_page": "without a page view",
            "exit_page": "without a page view",
            "country": "not located",
            "city": "without a city",
            "device_category": "without a user agent",
        }.get(spec.key, "unknown")
        parts.append(f"{_sessions(unknown)} {why}")
    return " · ".join(parts)


def _cards(data: ReportData) -> list[_Card]:
    cards: list[_Card] = []
    total = data.sessions
    unit = data.timeline.unit
    if "timeline" in data.left_out:
        cards.append(_Card("timeline", "Sessions over time", "wide", note=data.left_out["timeline"]))
    else:
        subtitle = f"Sessions per {unit} (UTC)"
        if data.timeline.new is not None:
            subtitle += ", by new and returning users"
        cards.append(_Card("timeline", "Sessions over time", "wide", _timeline_figure(data), subtitle))
    if "durations" in data.left_out:
        cards.append(_Card("durations", "Session duration", "half", note=data.left_out["durations"]))
    else:
        cards.append(
            _Card(
                "durations",
                "Session duration",
                "half",
                _durations_figure(data),
                "Sessions by time from first to last event; 0 s is a single event",
            )
        )
    if "new_vs_returning" in data.left_out or data.new_sessions is None:
        note = data.left_out.get("new_vs_returning", "")
        cards.append(_Card("new_vs_returning", "New vs returning", "half", note=note))
    else:
        returning = data.returning_sessions or 0
        cards.append(
            _Card(
                "new_vs_returning",
                "New vs returning",
                "half",
                _donut_figure(
                    ["New (first session)", "Returning"], [data.new_sessions, returning], [_BLUE, _ORANGE]
                ),
                "A user's first session is new (session_number 1); later ones are returning",
            )
        )
    widths: dict[str, Literal["wide", "half", "third"]] = {
        "device_category": "third",
        "browser": "third",
        "os": "third",
    }
    for spec in RANKINGS:
        width = widths.get(spec.key, "half")
        ranking = data.rankings.get(spec.key)
        if ranking is None:
            cards.append(_Card(spec.key, spec.title, width, note=data.left_out.get(spec.key, "No data.")))
            continue
        subtitle = _ranking_subtitle(spec, ranking, total)
        if spec.key == "device_category":
            figure = _donut_figure(
                ranking.labels,
                ranking.sessions,
                [_PALETTE[i % len(_PALETTE)] for i in range(len(ranking.labels))],
            )
        else:
            figure = _ranking_figure(spec, ranking, total)
        cards.append(_Card(spec.key, spec.title, width, figure, subtitle))
    return cards


def _options_as_code(text: str) -> str:
    """``--no-geo`` in (escaped) text as ``<code>``, so that it does not break across lines."""
    return re.sub(r"(?<![\w-])(--[a-z][a-z-]*)", r"<code>\1</code>", text)


def _when(moment: datetime | None) -> str:
    return _DASH if moment is None else f"{moment:%Y-%m-%d %H:%M}"


_CSS = """
:root { --font: FONT; --ink: #2d3436; --muted: #636e72; --line: #e3e6ea; --bg: #f5f6f8; --blue: #3867d6; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink); font: 14px/1.45 var(--font); }
main { max-width: 1240px; margin: 0 auto; padding: 24px 20px 40px; }
header h1 { margin: 0 0 4px; font-size: 24px; font-weight: 650; }
header p { margin: 2px 0; color: var(--muted); }
header p strong { color: var(--ink); font-weight: 600; }
.kpis { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: 12px;
  margin: 20px 0; }
.kpi { background: white; border: 1px solid var(--line); border-radius: 10px; padding: 12px 16px; }
.kpi .label { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.kpi .value { font-size: 26px; font-weight: 650; margin-top: 2px; font-variant-numeric: tabular-nums; }
.kpi .detail { color: var(--muted); font-size: 12px; }
.grid { display: grid; grid-template-columns: repeat(6, minmax(0, 1fr)); gap: 12px; }
.card { background: white; border: 1px solid var(--line); border-radius: 10px; padding: 14px 16px 10px; }
.card h2 { margin: 0; font-size: 15px; font-weight: 620; }
.card .subtitle { margin: 2px 0 8px; color: var(--muted); font-size: 12px; }
.card .note { margin: 10px 0 8px; color: var(--muted); font-style: italic; }
.card.left-out { background: #fafbfc; align-self: start; }
code { font: 12px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; white-space: nowrap; }
.wide { grid-column: span 6; } .half { grid-column: span 3; } .third { grid-column: span 2; }
@media (max-width: 900px) { .half, .third { grid-column: span 6; } }
footer { margin-top: 20px; color: var(--muted); font-size: 12px; }
"""


def render_report(
    data: ReportData,
    *,
    title: str = DEFAULT_TITLE,
    sources: Sequence[str] = (),
    generated_at: datetime | None = None,
) -> str:
    """The report page for ``data``: one HTML document with plotly.js inlined once.

    ``sources`` (the tables' paths) and the time it was made are shown in the header. Every text from
    the data is escaped (page URLs come from the outside world).
    """
    from plotly.offline import get_plotlyjs, get_plotlyjs_version

    def esc(value: str) -> str:
        return html.escape(visible(value))

    generated_at = generated_at or datetime.now(UTC)
    cards = _cards(data)
    total = data.sessions

    def kpi(label: str, value: str, detail: str = "") -> str:
        extra = f'<div class="detail">{esc(detail)}</div>' if detail else ""
        return (
            f'<div class="kpi"><div class="label">{esc(label)}</div>'
            f'<div class="value">{esc(value)}</div>{extra}</div>'
        )

    kpis = [
        kpi("Sessions", f"{total:,}", "" if not data.bot_sessions else f"{data.bot_sessions:,} by bots"),
        kpi(
            "Users",
            f"{data.users:,}",
            f"{total / data.users:.2f} sessions per user" if data.users else "",
        ),
        kpi("Median duration", format_duration(data.median_duration_s)),
        kpi("Mean duration", format_duration(data.mean_duration_s)),
        kpi(
            "Pages / session",
            _DASH if data.pages_per_session is None else f"{data.pages_per_session:.2f}",
            "no pageview_count column" if data.pages_per_session is None and total else "",
        ),
        kpi(
            "Bounce rate",
            _DASH if data.bounce_rate is None else f"{100 * data.bounce_rate:.1f}%",
            "no is_bounce column" if data.bounce_rate is None and total else "not engaged (GA4)",
        ),
    ]

    if data.date_from is None and data.date_to is None:
        filters = "none"
    else:
        filters = " and ".join(
            part
            for part in (
                "" if data.date_from is None else f"at or after {_when(data.date_from)}",
                "" if data.date_to is None else f"before {_when(data.date_to)}",
            )
            if part
        )
        filters = f"sessions starting {filters} UTC"
    if data.first_start is not None:
        span = f"{_when(data.first_start)} to {_when(data.last_start)} UTC"
    else:
        span = "no sessions"
    if len(sources) > 3:
        source_text = ", ".join(sources[:3]) + f" and {len(sources) - 3:,} more"
    else:
        source_text = ", ".join(sources) or "a session table in memory"

    blocks = []
    for card in cards:
        subtitle = f'<p class="subtitle">{esc(card.subtitle)}</p>' if card.subtitle else ""
        if card.figure is None:
            body = f'<p class="note">Left out. {_options_as_code(esc(card.note))}</p>'
            classes = f"card {card.width} left-out"
        else:
            body = _figure_html(card.key, card.figure)
            classes = f"card {card.width}"
        blocks.append(
            f'<section class="{classes}" data-chart="{esc(card.key)}">'
            f"<h2>{esc(card.title)}</h2>{subtitle}{body}</section>"
        )
    charts = sum(card.figure is not None for card in cards)
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="sessionize {esc(__version__)}">
<title>{esc(title)}</title>
<style>{_CSS.replace("FONT", _FONT)}</style>
<script>window.PlotlyConfig = {{MathJaxConfig: 'local'}};</script>
<script>{get_plotlyjs()}</script>
</head>
<body>
<main>
<header>
<h1>{esc(title)}</h1>
<p><strong>{_sessions(total)}</strong> starting {esc(span)}</p>
<p>Filters: {esc(filters)} · top {data.top} per ranking</p>
<p>From {esc(source_text)}</p>
</header>
<div class="kpis">{"".join(kpis)}</div>
<div class="grid">
{chr(10).join(blocks)}
</div>
<footer>Made by sessionize {esc(__version__)} on {generated_at:%Y-%m-%d %H:%M} UTC · {charts} charts ·
charts drawn with plotly.js {esc(get_plotlyjs_version())}, inlined: this page needs no network.</footer>
</main>
</body>
</html>
"""
    return page


def chart_title(key: str) -> str:
    """The title of a chart by its key (``landing_page`` -> ``Top landing pages``)."""
    fixed = {"timeline": "Sessions over time", "durations": "Session duration"}
    fixed["new_vs_returning"] = "New vs returning"
    return fixed.get(key) or _RANKING_BY_KEY[key].title
