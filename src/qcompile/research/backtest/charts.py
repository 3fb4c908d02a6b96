"""Charts of the HTML report, as inline SVG: equity, drawdown, monthly returns, trade
distribution, Monte Carlo fan and parameter heatmap.

matplotlib renders off-screen (Agg) with a fixed hash salt and no date metadata, so the same run
gives the same SVG text. It is imported only when an HTML report is written.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Sequence
from typing import Any

import matplotlib

from qcompile.research.backtest.svgheatmap import cell_means

matplotlib.use("Agg")
import matplotlib.pyplot as plt

plt.rcParams.update(
    {
        "svg.hashsalt": "qcompile",
        "svg.fonttype": "none",
        "font.size": 9,
        "axes.spines.top": False,
        "axes.spines.right": False,
    }
)


def figure_svg(figure: Any) -> str:
    buffer = io.StringIO()
    figure.savefig(
        buffer, format="svg", metadata={"Date": None, "Creator": None}, bbox_inches="tight"
    )
    plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg") :]  # drop the XML prologue: the SVG is inlined in HTML


def _dates(timestamps: Sequence[int]) -> list[dt.datetime]:
    return [dt.datetime.fromtimestamp(t / 1000, tz=dt.UTC) for t in timestamps]


def equity_chart(timestamps: Sequence[int], equity: Sequence[float]) -> str:
    figure, axes = plt.subplots(figsize=(8, 3))
    axes.plot(_dates(timestamps), equity, linewidth=1)
    axes.set_title("Equity (net of costs)")
    return figure_svg(figure)


def drawdown_chart(timestamps: Sequence[int], equity: Sequence[float]) -> str:
    peak, drawdown = 0.0, []
    for value in equity:
        peak = max(peak, value)
        drawdown.append((value / peak - 1.0) * 100 if peak else 0.0)
    figure, axes = plt.subplots(figsize=(8, 2.2))
    axes.fill_between(_dates(timestamps), drawdown, 0, step="post", alpha=0.5)
    axes.set_title("Drawdown (%)")
    return figure_svg(figure)


def monthly_returns_chart(timestamps: Sequence[int], equity: Sequence[float]) -> str:
    month_end: dict[tuple[int, int], float] = {}
    for moment, value in zip(_dates(timestamps), equity, strict=True):
        month_end[(moment.year, moment.month)] = value
    keys = sorted(month_end)
    years = sorted({y for y, _ in keys})
    grid = [[float("nan")] * 12 for _ in years]
    previous = equity[0] if equity else 0.0
    for year, month in keys:
        grid[years.index(year)][month - 1] = (month_end[(year, month)] / previous - 1.0) * 100
        previous = month_end[(year, month)]
    figure, axes = plt.subplots(figsize=(8, 0.35 * len(years) + 1))
    image = axes.imshow(grid, cmap="RdYlGn", aspect="auto", vmin=-10, vmax=10)
    axes.set_xticks(range(12), ["J", "F", "M", "A", "M", "J", "J", "A", "S", "O", "N", "D"])
    axes.set_yticks(range(len(years)), [str(y) for y in years])
    axes.set_title("Monthly returns (%)")
    figure.colorbar(image, ax=axes)
    return figure_svg(figure)


def trade_distribution_chart(trade_returns: Sequence[float]) -> str:
    figure, axes = plt.subplots(figsize=(8, 2.5))
    axes.hist([r * 100 for r in trade_returns] or [0.0], bins=40)
    axes.set_title(f"Trade returns (%), {len(trade_returns)} trades")
    return figure_svg(figure)


def monte_carlo_fan(equity: Sequence[float], monte_carlo: dict[str, Any]) -> str | None:
    """Percentile bands of the Monte Carlo's resampled paths (the same seeded stationary
    bootstrap the evidence summarises) around the realised path; None without returns."""
    import numpy as np

    from qcompile.dailystats import bar_returns
    from qcompile.research.backtest.robustness import bootstrap_paths

    returns = np.asarray(bar_returns(equity), dtype=float)
    if not len(returns) or monte_carlo.get("method") != "stationary_bootstrap":
        return None
    paths = bootstrap_paths(
        returns, monte_carlo["seed"], monte_carlo["samples"], monte_carlo["mean_block_bars"]
    )
    steps = np.unique(np.linspace(0, len(returns), num=min(len(returns) + 1, 250)).astype(int))
    bands = np.percentile(paths[:, steps], (5, 25, 50, 75, 95), axis=0)
    realised = np.concatenate([[1.0], np.cumprod(1.0 + returns)])[steps]
    figure, axes = plt.subplots(figsize=(8, 3))
    axes.fill_between(steps, bands[0], bands[4], alpha=0.25, label="5-95 %")
    axes.fill_between(steps, bands[1], bands[3], alpha=0.4, label="25-75 %")
    axes.plot(steps, bands[2], linewidth=1, label="median")
    axes.plot(steps, realised, linewidth=1, color="black", label="realised")
    axes.legend(loc="upper left")
    axes.set_title(
        f"Monte Carlo: stationary bootstrap of bar returns, mean block "
        f"{monte_carlo['mean_block_bars']} bars (growth of 1)"
    )
    axes.set_xlabel("bar")
    return figure_svg(figure)


def parameter_heatmap(grid: Sequence[dict[str, Any]]) -> str | None:
    """Sharpe over the first two swept parameters; None when fewer than two vary."""
    varying = sorted(
        k
        for k in (grid[0]["params"] if grid else {})
        if len({str(row["params"][k]) for row in grid}) > 1
    )
    if len(varying) < 2:
        return None
    return heatmap(grid, varying[0], varying[1], "Sharpe across the tested parameters")


def heatmap(rows: Sequence[dict[str, Any]], x_name: str, y_name: str, title: str) -> str:
    """Mean Sharpe of ``rows`` (each with ``params`` and ``sharpe``) per (x, y) cell: with more
    than two parameters swept, the others are averaged over."""
    xs, ys, means = cell_means(rows, x_name, y_name)
    values = [[means.get((y, x), float("nan")) for x in range(len(xs))] for y in range(len(ys))]
    figure, axes = plt.subplots(figsize=(6, 4))
    image = axes.imshow(values, cmap="viridis", aspect="auto", origin="lower")
    axes.set_xticks(range(len(xs)), [str(x) for x in xs])
    axes.set_yticks(range(len(ys)), [str(y) for y in ys])
    axes.set_xlabel(x_name)
    axes.set_ylabel(y_name)
    axes.set_title(title)
    figure.colorbar(image, ax=axes)
    return figure_svg(figure)
