"""A Sharpe heatmap as plain SVG text, for the sweep summary's page and the backtest report's
parameter sensitivity.

A grid of coloured cells with their values needs no plotting library: drawing it here costs
microseconds where importing one costs about a second.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any


def ordered(values: set[Any]) -> list[Any]:
    """Numbers (or numeric text) in numeric order, anything else as text: the order of a heatmap's
    axes, and of the steps between a sweep's neighbouring values."""
    try:
        return sorted(values, key=float)
    except (TypeError, ValueError):
        return sorted(values, key=str)


def cell_means(
    rows: Sequence[dict[str, Any]], x_name: str, y_name: str, minimum_trades: int = 0
) -> tuple[list[Any], list[Any], dict[tuple[int, int], float]]:
    """The ordered x and y values and the mean Sharpe of ``rows`` (each with ``params`` and
    ``sharpe``, and ``trades`` when ``minimum_trades`` is set) per (y index, x index) cell that
    has one: with more than two keys swept, the others are averaged over; a row with fewer than
    ``minimum_trades`` trades counts for none (its axes' values stay)."""
    xs = ordered({row["params"][x_name] for row in rows})
    ys = ordered({row["params"][y_name] for row in rows})
    cells: dict[tuple[int, int], list[float]] = {}
    for row in rows:
        if row["sharpe"] is not None and (row.get("trades") or 0) >= minimum_trades:
            key = (ys.index(row["params"][y_name]), xs.index(row["params"][x_name]))
            cells.setdefault(key, []).append(row["sharpe"])
    return xs, ys, {key: sum(values) / len(values) for key, values in cells.items()}


# viridis at nine even stops: low Sharpe dark blue, high Sharpe yellow
PALETTE = (
    (68, 1, 84), (71, 45, 123), (59, 82, 139), (44, 114, 142), (33, 145, 140),
    (40, 174, 128), (94, 201, 98), (173, 220, 48), (253, 231, 37),
)  # fmt: skip
# cells wide enough for a value in each, at a size a reader does not have to zoom for
CELL_W, CELL_H, LEFT, TOP_MARGIN, BOTTOM, LEGEND = 58, 30, 120, 40, 80, 80


def _colour(share: float) -> str:
    position = min(max(share, 0.0), 1.0) * (len(PALETTE) - 1)
    low = min(int(position), len(PALETTE) - 2)
    weight = position - low
    mixed = (
        round(a + (b - a) * weight) for a, b in zip(PALETTE[low], PALETTE[low + 1], strict=True)
    )
    return "#{:02x}{:02x}{:02x}".format(*mixed)


def heatmap(
    rows: Sequence[dict[str, Any]],
    x_name: str,
    y_name: str,
    title: str,
    minimum_trades: int = 0,
) -> str:
    """Mean Sharpe of ``rows`` (each with ``params``, ``sharpe`` and, for ``minimum_trades``,
    ``trades``) per (x, y) cell as an SVG grid, the value written in each cell and a colour
    scale beside it; with more than two keys swept, the others are averaged over. A cell is
    the mean of its jobs that meet ``minimum_trades``; one with none is drawn faded, its value
    (over all its jobs) marked with an asterisk: not ranked. The same rows always give the same
    text."""
    xs, ys, means = cell_means(rows, x_name, y_name, minimum_trades)
    _, _, everything = cell_means(rows, x_name, y_name)
    scaled = means or everything
    low, high = (min(scaled.values()), max(scaled.values())) if scaled else (0.0, 0.0)
    span = (high - low) or 1.0
    width = LEFT + CELL_W * len(xs) + LEGEND
    height = TOP_MARGIN + CELL_H * len(ys) + BOTTOM
    bottom = TOP_MARGIN + CELL_H * len(ys)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12" role="img">',
        f"<title>{escape(title)}</title>",
        f'<text x="{width / 2:g}" y="16" text-anchor="middle" font-size="14">{escape(title)}</text>',
    ]
    for (y, x), mean in sorted({**everything, **means}.items()):
        left, top = LEFT + CELL_W * x, bottom - CELL_H * (y + 1)
        share = min(max((mean - low) / span, 0.0), 1.0)
        where = f"{x_name}={xs[x]}, {y_name}={ys[y]}: Sharpe {mean:.2f}"
        ranked = (y, x) in means
        ink = "#ffffff" if share < 0.6 and ranked else "#000000"
        label, tip, opacity = f"{mean:.2f}", where, ""
        if not ranked:
            label += "*"
            tip += f" (fewer than {minimum_trades} trades: not ranked)"
            opacity = ' fill-opacity="0.35"'
        parts += [
            f'<rect x="{left}" y="{top}" width="{CELL_W}" height="{CELL_H}" '
            f'fill="{_colour(share)}"{opacity} stroke="#ffffff"><title>{escape(tip)}</title></rect>',
            f'<text x="{left + CELL_W / 2:g}" y="{top + CELL_H / 2 + 4:g}" text-anchor="middle" '
            f'fill="{ink}">{label}</text>',
        ]
    for x, value in enumerate(xs):
        centre = LEFT + CELL_W * x + CELL_W / 2
        parts.append(
            f'<text x="{centre:g}" y="{bottom + 14}" text-anchor="end" '
            f'transform="rotate(-45 {centre:g} {bottom + 14})">{escape(str(value))}</text>'
        )
    for y, value in enumerate(ys):
        parts.append(
            f'<text x="{LEFT - 4}" y="{bottom - CELL_H * y - CELL_H / 2 + 3:g}" '
            f'text-anchor="end">{escape(str(value))}</text>'
        )
    parts += [
        f'<text x="{LEFT + CELL_W * len(xs) / 2:g}" y="{height - 6}" text-anchor="middle">'
        f"{escape(x_name)}</text>",
        f'<text x="10" y="{TOP_MARGIN + CELL_H * len(ys) / 2:g}" text-anchor="middle" '
        f'transform="rotate(-90 10 {TOP_MARGIN + CELL_H * len(ys) / 2:g})">{escape(y_name)}</text>',
    ]
    scale_x, steps = LEFT + CELL_W * len(xs) + 14, 20
    step_h = CELL_H * max(len(ys), 4) / steps
    for step in range(steps):
        parts.append(
            f'<rect x="{scale_x}" y="{bottom - step_h * (step + 1):.2f}" width="10" '
            f'height="{step_h + 0.5:.2f}" fill="{_colour(step / (steps - 1))}"/>'
        )
    parts += [
        f'<text x="{scale_x + 14}" y="{bottom:g}">{low:.2f}</text>',
        f'<text x="{scale_x + 14}" y="{bottom - step_h * steps + 8:.2f}">{high:.2f}</text>',
        "</svg>",
    ]
    return "\n".join(parts)
