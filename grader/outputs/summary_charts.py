"""The summary page's two charts, as inline SVG: the score histogram and the pass rate per tier."""

from __future__ import annotations

import html
import math

from ..text import clean
from .summary_assets import HISTOGRAM_COLOUR, PASS_RATE_COLOUR
from .summary_stats import num, percent


def esc(value: object) -> str:
    """HTML-escaped text (quotes too: safe inside attributes), control characters and lone surrogates made safe."""
    return html.escape(clean(str(value), 5_000_000), quote=True)


def histogram_svg(counts: list[int], max_score: float | None) -> str:
    """Vertical bars, one per slice of the score range, the count above each bar."""
    width, height, left, bottom, top = 520, 240, 36, 44, 16
    plot_w, plot_h = width - left - 18, height - bottom - top
    step = _nice_step(max(counts, default=0))
    peak = step * max(1, math.ceil(max(counts, default=0) / step))
    slot, scale = plot_w / len(counts), max_score or 100.0
    out = [
        f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="score distribution" xmlns="http://www.w3.org/2000/svg">',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#888"/>',
    ]
    for value in range(0, peak + 1, step):
        y = top + plot_h - plot_h * value / peak
        out.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#eee"/><text '
            f'x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" fill="#666">{value}</text>'
        )
    for i, count in enumerate(counts):
        low, high = scale * i / len(counts), scale * (i + 1) / len(counts)
        x, bar_h = left + i * slot + 3, plot_h * count / peak
        y = top + plot_h - bar_h
        out.append(
            f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{slot - 6:.1f}" height="{bar_h:.1f}" '
            f'fill="{HISTOGRAM_COLOUR}"><title>{esc(num(low))}–{esc(num(high))}: {count}</title></rect>'
            f'<text x="{left + i * slot:.1f}" y="{top + plot_h + 14}" text-anchor="middle" font-size="10" '
            f'fill="#444">{esc(num(low))}</text>'
        )
        if count:
            out.append(
                f'<text x="{x + (slot - 6) / 2:.1f}" y="{y - 4:.1f}" text-anchor="middle" font-size="11">{count}</text>'
            )
    axis = "points" if max_score else "% of the maximum"
    out.append(
        f'<text x="{left + plot_w:.1f}" y="{top + plot_h + 14}" text-anchor="middle" font-size="10" '
        f'fill="#444">{esc(num(scale))}</text><text x="{left + plot_w / 2:.1f}" y="{height - 6}" '
        f'text-anchor="middle" font-size="11" fill="#666">score ({axis}; full marks in the last bar)</text></svg>'
    )
    return "".join(out)


def _nice_step(peak: int) -> int:
    """A step of 1, 2 or 5 times a power of ten giving at most five ticks up to ``peak``."""
    step = 1
    while math.ceil(peak / step) > 5:
        step = step * 5 // 2 if str(step).startswith("2") else step * 2
    return step


def pass_rate_svg(rates: list[tuple[str, int, int]]) -> str:
    """Horizontal bars, one per tier: the share of scored submissions that passed it."""
    if not rates:
        return '<p class="empty">No tier results.</p>'
    row_h, label_w, bar_w, width = 30, 100, 290, 520
    height = row_h * len(rates) + 10
    out = [
        f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="pass rate per tier" xmlns="http://www.w3.org/2000/svg">'
    ]
    for i, (name, passed, total) in enumerate(rates):
        y, share = 6 + i * row_h, passed / total if total else 0.0
        text = f"{percent(passed, total)} ({passed} of {total})"
        out.append(
            f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end" font-size="13">{esc(name)}</text>'
            f'<rect x="{label_w}" y="{y + 2}" width="{bar_w}" height="18" rx="3" fill="#e3e7ec"/>'
            f'<rect class="bar" x="{label_w}" y="{y + 2}" width="{bar_w * share:.1f}" height="18" rx="3" '
            f'fill="{PASS_RATE_COLOUR}"><title>{esc(name)}: {esc(text)}</title></rect>'
            f'<text x="{label_w + bar_w + 8}" y="{y + 15}" font-size="13">{esc(text)}</text>'
        )
    out.append("</svg>")
    return "".join(out)
