"""Small inline SVG line charts for the self-contained HTML report (no scripts, no fetches)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape

PALETTE = ("#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2")


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    exponent = math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        nice = float(step * 10**exponent)
        if nice >= value:
            return nice
    return float(10 ** (exponent + 1))


def line_chart(
    title: str,
    series: Mapping[str, Sequence[tuple[float, float | None]]],
    *,
    unit: str = "",
    width: int = 640,
    height: int = 200,
    markers: Sequence[tuple[float, str]] = (),
) -> str:
    """An SVG chart of one or more series of (seconds, value); None leaves a gap."""
    left, right, top, bottom = 56, 12, 26, 28
    plot_w, plot_h = width - left - right, height - top - bottom
    points = [(t, v) for pts in series.values() for t, v in pts if v is not None]
    t_max = max((t for t, _ in points), default=1.0) or 1.0
    y_max = _nice_max(max((v for _, v in points), default=0.0))

    def x(t: float) -> float:
        return left + plot_w * t / t_max

    def y(v: float) -> float:
        return top + plot_h * (1 - v / y_max)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{escape(title)}">',
        f'<text x="{left}" y="16" font-size="13" font-weight="600">{escape(title)}</text>',
    ]
    for i in range(5):
        value = y_max * i / 4
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y(value):.1f}" y2="{y(value):.1f}" '
            'stroke="#e5e7eb"/>'
            f'<text x="{left - 6}" y="{y(value) + 4:.1f}" font-size="10" text-anchor="end">'
            f"{value:g}{escape(unit)}</text>"
        )
    parts.append(
        f'<text x="{width - right}" y="{height - 8}" font-size="10" text-anchor="end">'
        f"{t_max:.0f} s</text>"
        f'<text x="{left}" y="{height - 8}" font-size="10">0 s</text>'
    )
    for at, label in markers:
        parts.append(
            f'<line x1="{x(at):.1f}" x2="{x(at):.1f}" y1="{top}" y2="{top + plot_h}" '
            'stroke="#dc2626" stroke-dasharray="4 3"/>'
            f'<text x="{x(at) + 3:.1f}" y="{top + 10}" font-size="10" fill="#dc2626">'
            f"{escape(label)}</text>"
        )
    for i, (name, pts) in enumerate(series.items()):
        color = PALETTE[i % len(PALETTE)]
        runs: list[list[str]] = [[]]
        for t, v in pts:
            if v is None:
                runs.append([])
            else:
                runs[-1].append(f"{x(t):.1f},{y(v):.1f}")
        for run in runs:
            if run:
                parts.append(
                    f'<polyline fill="none" stroke="{color}" stroke-width="1.5" '
                    f'points="{" ".join(run)}"/>'
                )
        parts.append(
            f'<text x="{width - right - 4}" y="{top + 12 + 12 * i}" font-size="10" '
            f'text-anchor="end" fill="{color}">{escape(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
