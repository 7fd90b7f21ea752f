"""Server-side SVG charts: plain markup, readable without JavaScript, no inline style (the
CSP allows none): colours and sizes are SVG presentation attributes, the legend and titles
are text. Every label is escaped; a chart is a string to put in a page as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

#: One colour per series, in order; chosen to stay apart for common colour blindness.
COLOURS = ("#2f6fb0", "#8aa9c9", "#d08c1f", "#3c9a5f", "#c2362b", "#7a5aa6")

ROW_HEIGHT = 18
LABEL_WIDTH = 180
BAR_WIDTH = 420


def state_bars(rows: Sequence[tuple[str, Sequence[int]]], labels: Sequence[str]) -> str:
    """Horizontal stacked bars, one per row (``(name, values)``), each scaled to the largest
    row's total; a legend of ``labels`` on top. Empty input gives an empty string."""
    if not rows:
        return ""
    largest = max(sum(values) for _, values in rows) or 1
    height = 24 + ROW_HEIGHT * len(rows)
    width = LABEL_WIDTH + BAR_WIDTH + 90
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        'aria-label="jobs per task by state">'
    ]
    x = LABEL_WIDTH
    for index, label in enumerate(labels):
        colour = COLOURS[index % len(COLOURS)]
        parts.append(f'<rect x="{x}" y="4" width="10" height="10" fill="{colour}"/>')
        parts.append(f'<text x="{x + 14}" y="13" font-size="11">{escape(label)}</text>')
        x += 14 + 8 * len(label) + 12
    for row_index, (name, values) in enumerate(rows):
        y = 24 + row_index * ROW_HEIGHT
        shown = name if len(name) <= 28 else name[:27] + "…"
        parts.append(
            f'<text x="{LABEL_WIDTH - 6}" y="{y + 12}" font-size="11" text-anchor="end">'
            f"<title>{escape(name)}</title>{escape(shown)}</text>"
        )
        x = float(LABEL_WIDTH)
        for index, value in enumerate(values):
            if value <= 0:
                continue
            w = BAR_WIDTH * value / largest
            colour = COLOURS[index % len(COLOURS)]
            label = labels[index] if index < len(labels) else ""
            parts.append(
                f'<rect x="{x:.1f}" y="{y + 2}" width="{max(w, 1):.1f}" height="{ROW_HEIGHT - 5}" '
                f'fill="{colour}"><title>{escape(name)}: {value:,} {escape(label)}</title></rect>'
            )
            x += w
        parts.append(f'<text x="{x + 4:.1f}" y="{y + 12}" font-size="11">{sum(values):,}</text>')
    parts.append("</svg>")
    return "".join(parts)


def series_line(
    points: Sequence[tuple[float, float]], *, width: int = 300, height: int = 60, label: str = ""
) -> str:
    """A line of ``(x, y)`` points scaled into a small chart (throughput per minute, p95 run
    time): what the statistics charts draw once the statistics table exists."""
    if not points:
        return ""
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    x0, x1 = min(xs), max(xs)
    top = max(ys) or 1.0
    span = (x1 - x0) or 1.0
    coords = " ".join(
        f"{(x - x0) / span * (width - 4) + 2:.1f},{height - 2 - y / top * (height - 14):.1f}"
        for x, y in points
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(label)}"><text x="2" y="10" font-size="10">{escape(label)} '
        f"(max {top:,.0f})</text>"
        f'<polyline points="{coords}" fill="none" stroke="{COLOURS[0]}" stroke-width="1.5"/>'
        "</svg>"
    )
