"""Inline SVG charts for the dashboard and the report: no script, no external asset."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

__all__ = ["bar_chart", "burndown_chart", "hbar_chart", "value_ticks"]

_COLOURS = ("#2b6cb0", "#c05621", "#2f855a", "#b7791f", "#6b46c1", "#c53030", "#4a5568")


def value_ticks(peak: int, *, most: int = 5) -> list[int]:
    """Round values for a count axis from 0 to at least ``peak``: steps of 1, 2 or 5 times a
    power of ten, at most ``most`` steps."""
    peak = max(peak, 1)
    magnitude = 1
    while True:
        for factor in (1, 2, 5):
            step = factor * magnitude
            if -(-peak // step) <= most:
                top = -(-peak // step) * step
                return list(range(0, top + 1, step))
        magnitude *= 10


def _frame(
    title: str, width: int, height: int, pad_left: int, pad_top: int, plot_h: int, ticks: list[int]
) -> list[str]:
    """The opening of a chart: the SVG element, its title and the count axis's lines."""
    top = ticks[-1]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" aria-label="{escape(title)}">',
        f'<text x="{pad_left}" y="14" font-size="12" fill="#333">{escape(title)}</text>',
    ]
    for tick in ticks:
        y = pad_top + plot_h - plot_h * tick / top
        colour = "#999" if tick == 0 else "#e2e8f0"
        parts.append(
            f'<line x1="{pad_left}" y1="{y:.1f}" x2="{width - 8}" y2="{y:.1f}" '
            f'stroke="{colour}"/><text x="{pad_left - 4}" y="{y + 3:.1f}" font-size="10" '
            f'text-anchor="end" fill="#666">{tick}</text>'
        )
    return parts


def bar_chart(
    points: Sequence[tuple[str, int]], *, title: str, width: int = 640, height: int = 180
) -> str:
    """Vertical bars over a labelled count axis, with labels under every few bars."""
    pad_left, pad_bottom, pad_top = 40, 28, 20
    plot_w, plot_h = width - pad_left - 8, height - pad_bottom - pad_top
    ticks = value_ticks(max([v for _, v in points] + [1]))
    top = ticks[-1]
    step = plot_w / max(len(points), 1)
    parts = _frame(title, width, height, pad_left, pad_top, plot_h, ticks)
    label_every = max(1, len(points) // 8)
    for i, (label, value) in enumerate(points):
        h = plot_h * value / top
        x = pad_left + i * step + 1
        y = pad_top + plot_h - h
        parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(step - 2, 1):.1f}" height="{h:.1f}" '
            f'fill="{_COLOURS[0]}"><title>{escape(label)}: {value}</title></rect>'
        )
        if i % label_every == 0:
            parts.append(
                f'<text x="{x:.1f}" y="{height - 10}" font-size="10" fill="#666">'
                f"{escape(label)}</text>"
            )
    parts.append("</svg>")
    return "".join(parts)


def hbar_chart(items: Sequence[tuple[str, int]], *, title: str, width: int = 420) -> str:
    """Horizontal bars, one per labelled count (e.g. certificates by profile)."""
    row, pad_top, label_w = 20, 22, 140
    height = pad_top + row * max(len(items), 1) + 6
    peak = max([v for _, v in items] + [1])
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" aria-label="{escape(title)}">',
        f'<text x="0" y="14" font-size="12" fill="#333">{escape(title)}</text>',
    ]
    for i, (label, value) in enumerate(items):
        y = pad_top + i * row
        w = (width - label_w - 60) * value / peak
        colour = _COLOURS[i % len(_COLOURS)]
        parts.append(
            f'<text x="0" y="{y + 13}" font-size="11" fill="#333">{escape(label[:22])}</text>'
            f'<rect x="{label_w}" y="{y + 2}" width="{w:.1f}" height="{row - 6}" '
            f'fill="{colour}"/>'
            f'<text x="{label_w + w + 4:.1f}" y="{y + 13}" font-size="11" fill="#333">'
            f"{value}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def burndown_chart(
    remaining: Sequence[tuple[str, int]],
    planned: Sequence[int],
    *,
    title: str,
    width: int = 640,
    height: int = 200,
) -> str:
    """Bars of what remains to do per period so far, and the planned remainder as a line over
    every period up to the deadline."""
    pad_left, pad_bottom, pad_top = 48, 28, 20
    plot_w, plot_h = width - pad_left - 8, height - pad_bottom - pad_top
    ticks = value_ticks(max([v for _, v in remaining] + list(planned) + [1]))
    top = ticks[-1]
    periods = max(len(planned), len(remaining), 1)
    step = plot_w / periods
    parts = _frame(title, width, height, pad_left, pad_top, plot_h, ticks)
    label_every = max(1, periods // 8)
    for i, (label, value) in enumerate(remaining):
        h = plot_h * value / top
        x = pad_left + i * step + 1
        parts.append(
            f'<rect x="{x:.1f}" y="{pad_top + plot_h - h:.1f}" width="{max(step - 2, 1):.1f}" '
            f'height="{h:.1f}" fill="{_COLOURS[0]}"><title>{escape(label)}: {value} '
            "remaining</title></rect>"
        )
        if i % label_every == 0:
            parts.append(
                f'<text x="{x:.1f}" y="{height - 10}" font-size="10" fill="#666">'
                f"{escape(label)}</text>"
            )
    line = " ".join(
        f"{pad_left + (i + 0.5) * step:.1f},{pad_top + plot_h - plot_h * v / top:.1f}"
        for i, v in enumerate(planned)
    )
    parts.append(
        f'<polyline points="{line}" fill="none" stroke="{_COLOURS[1]}" stroke-width="2">'
        "<title>planned: what the windows leave remaining</title></polyline>"
    )
    parts.append("</svg>")
    return "".join(parts)
