"""Server-side SVG charts for the reports dashboard: stacked bars (calls per day), a funnel, a histogram (survey
ratings) and a heatmap (calls per hour of the week).

Pure functions: plain numbers and labels in, `markupsafe.Markup` out, so a template prints a chart with `{{ chart }}`
(no `|safe`). Every piece of text goes through markupsafe's escaping (`Markup.format` escapes its arguments), so a
label can never become markup. Each chart is an `<svg role="img">` with an `aria-label`, a `<title>` and a `<desc>`
that says what it shows in words; each mark has its own `<title>` (a tooltip with the exact figure). Colours come from
CSS classes (static/reports.css), never from inline styles, so the pages' CSP can forbid inline styles and the charts
follow the light and dark themes. The dashboard puts the same figures next to every chart as a table and as CSV.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup

WIDTH = 960
AXIS_LEFT = 48
AXIS_RIGHT = 12
FONT = 12
HEAT_LEVELS = 5  # heat-1 … heat-5; heat-0 is zero


@dataclass(frozen=True)
class Series:
    """One stacked layer of a bar chart: its name (legend and tooltips), CSS class and one value per category."""

    name: str
    css: str
    values: Sequence[float]


def number(value: float) -> str:
    """A count or amount as text: thousands separated, at most one decimal."""
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.1f}"


def percent(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "–"


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 × 10^k that is ≥ value (at least 1): a round top for an axis."""
    if value <= 1:
        return 1
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude  # pragma: no cover (the loop ends at 10)


def _f(value: float) -> str:
    """A coordinate: two decimals at most, no trailing zeros."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _svg(chart_id: str, title: str, description: str, height: float, body: list[Markup], css: str) -> Markup:
    head = Markup('<svg xmlns="http://www.w3.org/2000/svg" class="chart {}" id="{}" viewBox="0 0 {} {}" '
                  'role="img" aria-label="{}" preserveAspectRatio="xMidYMid meet">'
                  '<title>{}</title><desc>{}</desc>').format(
        css, chart_id, WIDTH, _f(height), f"{title}. {description}", title, description)
    return head + Markup("").join(body) + Markup("</svg>")


def _text(x: float, y: float, text: str, css: str = "", anchor: str = "start") -> Markup:
    return Markup('<text x="{}" y="{}" class="{}" text-anchor="{}">{}</text>').format(_f(x), _f(y), css, anchor, text)


def _rect(x: float, y: float, w: float, h: float, css: str, tooltip: str | None = None) -> Markup:
    if tooltip is None:
        return Markup('<rect x="{}" y="{}" width="{}" height="{}" class="{}"/>').format(
            _f(x), _f(y), _f(max(w, 0)), _f(max(h, 0)), css)
    return Markup('<rect x="{}" y="{}" width="{}" height="{}" class="{}"><title>{}</title></rect>').format(
        _f(x), _f(y), _f(max(w, 0)), _f(max(h, 0)), css, tooltip)


def _y_axis(top: float, bottom: float, maximum: float, right: float) -> list[Markup]:
    """Grid lines and labels at 0, ½ and the top of the scale."""
    parts = []
    for fraction in (0, 0.5, 1):
        y = bottom - (bottom - top) * fraction
        parts.append(Markup('<line x1="{}" x2="{}" y1="{}" y2="{}" class="grid"/>').format(
            AXIS_LEFT, _f(right), _f(y), _f(y)))
        parts.append(_text(AXIS_LEFT - 6, y + FONT / 3, number(maximum * fraction), "axis", "end"))
    return parts


def _legend(series: Sequence[Series], y: float) -> list[Markup]:
    parts, x = [], AXIS_LEFT
    for layer in series:
        parts.append(_rect(x, y - 9, 10, 10, f"swatch {layer.css}"))
        parts.append(_text(x + 14, y, layer.name, "legend"))
        x += 28 + 7.5 * len(layer.name)
    return parts


def stacked_bars(chart_id: str, title: str, categories: Sequence[str], series: Sequence[Series], *,
                 unit: str = "calls", category_unit: str = "bars", height: float = 280) -> Markup:
    """Vertical bars, one per category (e.g. a date), each stacked from `series` (e.g. answered, abandoned,
    missed). At most about 12 category labels are written under the axis; every bar has its tooltip."""
    n = len(categories)
    totals = [sum(layer.values[i] for layer in series) for i in range(n)]
    top, bottom = 30.0, height - 28
    right = WIDTH - AXIS_RIGHT
    maximum = nice_ceiling(max(totals, default=0))
    band = (right - AXIS_LEFT) / max(n, 1)
    bar = max(band * 0.72, 1)
    parts = _legend(series, 14) + _y_axis(top, bottom, maximum, right)
    every = max(1, math.ceil(n / 12))
    for i, category in enumerate(categories):
        x = AXIS_LEFT + band * i + (band - bar) / 2
        y = bottom
        for layer in series:
            value = layer.values[i]
            if value:
                h = (bottom - top) * value / maximum
                y -= h
                parts.append(_rect(x, y, bar, h, f"bar {layer.css}", f"{category}: {number(value)} {layer.name}"))
        parts.append(_rect(x, top, bar, bottom - top, "hit", f"{category}: {number(totals[i])} {unit}"))
        if i % every == 0:
            parts.append(_text(x + bar / 2, bottom + 16, category, "axis", "middle"))
    total = sum(totals)
    if n and total:
        busiest = max(range(n), key=lambda i: totals[i])
        description = (f"{number(total)} {unit} in {n} {category_unit} from {categories[0]} to {categories[-1]}; "
                       f"the most, {number(totals[busiest])}, on {categories[busiest]}.")
    else:
        description = f"No {unit} in this period."
    return _svg(chart_id, title, description, height, parts, "chart-bars")


def funnel(chart_id: str, title: str, steps: Sequence[tuple[str, float]], *, unit: str = "calls") -> Markup:
    """Horizontal bars from the widest (the first step) down, each with its figure, its share of the first step
    and of the step before it."""
    row, gap, label_w = 34.0, 10.0, 200.0
    height = 12 + len(steps) * (row + gap)
    first = steps[0][1] if steps else 0
    span = WIDTH - AXIS_RIGHT - label_w - 190
    parts = []
    previous = None
    for i, (label, value) in enumerate(steps):
        y = 6 + i * (row + gap)
        w = span * value / first if first else 0
        x = label_w + (span - w) / 2
        share = percent(value, first)
        step = percent(value, previous) if previous is not None else ""
        tooltip = f"{label}: {number(value)} {unit} ({share} of {steps[0][0].lower()})"
        parts.append(_text(label_w - 10, y + row / 2 + FONT / 3, label, "label", "end"))
        parts.append(_rect(label_w, y, span, row, "track"))
        parts.append(_rect(x, y, max(w, 1.5 if value else 0), row, f"bar funnel-{i}", tooltip))
        figure = number(value) if i == 0 else f"{number(value)} · {share}"
        parts.append(_text(label_w + span + 10, y + row / 2 - 2, figure, "value"))
        if step:
            parts.append(_text(label_w + span + 10, y + row / 2 + FONT, f"{step} of the step before", "axis"))
        previous = value
    description = "; ".join(f"{label} {number(value)}" for label, value in steps) + "."
    return _svg(chart_id, title, description, height, parts, "chart-funnel")


def histogram(chart_id: str, title: str, buckets: Sequence[tuple[str, float]], *, unit: str = "answers",
              height: float = 220) -> Markup:
    """Vertical bars, one per bucket (e.g. the ratings 1 to 5), each with its count and share on top."""
    top, bottom = 24.0, height - 28
    right = WIDTH - AXIS_RIGHT
    total = sum(value for _, value in buckets)
    maximum = nice_ceiling(max((value for _, value in buckets), default=0))
    band = (right - AXIS_LEFT) / max(len(buckets), 1)
    bar = band * 0.6
    parts = _y_axis(top, bottom, maximum, right)
    for i, (label, value) in enumerate(buckets):
        x = AXIS_LEFT + band * i + (band - bar) / 2
        h = (bottom - top) * value / maximum
        parts.append(_rect(x, bottom - h, bar, h, f"bar bucket-{i}",
                           f"{label}: {number(value)} {unit} ({percent(value, total)})"))
        parts.append(_text(x + bar / 2, bottom - h - 6, f"{number(value)} · {percent(value, total)}", "value",
                           "middle"))
        parts.append(_text(x + bar / 2, bottom + 17, label, "label", "middle"))
    description = (", ".join(f"{label}: {number(value)}" for label, value in buckets) + f"; {number(total)} {unit}."
                   if total else f"No {unit} in this period.")
    return _svg(chart_id, title, description, height, parts, "chart-histogram")


def heat_level(value: float, maximum: float) -> int:
    """0 for nothing, else 1 … HEAT_LEVELS in proportion to the maximum."""
    if value <= 0 or maximum <= 0:
        return 0
    return max(1, math.ceil(HEAT_LEVELS * value / maximum))


def heatmap(chart_id: str, title: str, rows: Sequence[str], columns: Sequence[str],
            values: Sequence[Sequence[float]], *, unit: str = "calls", cell_label=None) -> Markup:
    """A grid (e.g. weekdays × hours) shaded in HEAT_LEVELS steps of the largest value; every cell has its
    tooltip (`cell_label(row, column)` names it, default "row column"). Column labels every third column."""
    label_w, top = 60.0, 22.0
    cell_w = (WIDTH - AXIS_RIGHT - label_w) / max(len(columns), 1)
    cell_h = 26.0
    height = top + cell_h * len(rows) + 34
    maximum = max((v for row in values for v in row), default=0)
    name = cell_label or (lambda r, c: f"{r} {c}")
    parts = []
    for j, column in enumerate(columns):
        if j % 3 == 0:
            parts.append(_text(label_w + cell_w * (j + 0.5), top - 7, column, "axis", "middle"))
    for i, row in enumerate(rows):
        y = top + cell_h * i
        parts.append(_text(label_w - 8, y + cell_h / 2 + FONT / 3, row, "label", "end"))
        for j, column in enumerate(columns):
            value = values[i][j]
            tooltip = f"{name(row, column)}: {number(value)} {unit}"
            parts.append(_rect(label_w + cell_w * j + 1, y + 1, cell_w - 2, cell_h - 2,
                               f"cell heat-{heat_level(value, maximum)}", tooltip))
    legend_y = top + cell_h * len(rows) + 22
    parts.append(_text(label_w, legend_y, "fewer", "axis", "start"))
    for level in range(HEAT_LEVELS + 1):
        parts.append(_rect(label_w + 44 + level * 18, legend_y - 10, 16, 12, f"cell heat-{level}"))
    parts.append(_text(label_w + 50 + (HEAT_LEVELS + 1) * 18, legend_y, f"more (up to {number(maximum)} {unit})",
                       "axis", "start"))
    if maximum:
        i, j = max(((i, j) for i in range(len(rows)) for j in range(len(columns))), key=lambda at: values[at[0]][at[1]])
        total = sum(v for row in values for v in row)
        description = (f"{number(total)} {unit}; the busiest cell is {name(rows[i], columns[j])} with "
                       f"{number(maximum)}.")
    else:
        description = f"No {unit} in this period."
    return _svg(chart_id, title, description, height, parts, "chart-heatmap")
