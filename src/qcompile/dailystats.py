"""Daily statistics of an equity curve, shared by the backtest's evidence, the weekly review and
the production runner's deviation alert, so that the three compare like for like (one function,
not three copies that drift).

Also the two curve primitives the backtest's metrics build on: per-bar returns and the maximum
drawdown.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Drawdown:
    depth: float  # <= 0
    peak_index: int
    trough_index: int


def bar_returns(equity: Sequence[float]) -> list[float]:
    """Per-bar returns; a bar after the account reached zero (or less) has none."""
    return [equity[i] / equity[i - 1] - 1.0 for i in range(1, len(equity)) if equity[i - 1] > 0]


def max_drawdown(equity: Sequence[float]) -> Drawdown:
    peak_value, peak_index = equity[0], 0
    worst = Drawdown(0.0, 0, 0)
    for index, value in enumerate(equity):
        if value > peak_value:
            peak_value, peak_index = value, index
        depth = value / peak_value - 1.0
        if depth < worst.depth:
            worst = Drawdown(depth, peak_index, index)
    return worst


REVIEW_WINDOW = 20  # trading days: the weekly review's trailing window (source document §6)
# The statistics the weekly review and the runner's deviation alert compare, in page order.
DAILY_STATISTICS = {
    "win_rate": "win rate (share of up days)",
    "mean_return": "mean daily return",
    "volatility": "daily volatility",
    "max_drawdown": f"max drawdown over {REVIEW_WINDOW} days",
}


def daily_returns(dates: list[str], equity: list[float]) -> list[float]:
    """Close-to-close returns of the last equity value of each date: the same daily series
    whatever the bar interval, so a backtest and a live journal compare like for like."""
    closes: dict[str, float] = {}
    for day, value in zip(dates, equity, strict=True):
        closes[day] = value
    values = [closes[day] for day in sorted(closes)]
    return bar_returns(values)


def daily_statistics(
    dates: list[str], equity: list[float], window: int = REVIEW_WINDOW
) -> dict[str, float | int | None]:
    """Win rate (share of days with a positive return), mean daily return, daily volatility
    (sample stdev) and the max drawdown expected over ``window`` days: the mean, over every
    trailing ``window``-day stretch, of that stretch's max drawdown. A drawdown over years is
    not comparable with one over 20 days; this is."""
    returns = daily_returns(dates, equity)
    if len(returns) < 2:
        return {
            "days": len(returns),
            "window": window,
            "win_rate": None,
            "mean_return": None,
            "volatility": None,
            "max_drawdown": None,
        }
    mean = sum(returns) / len(returns)
    volatility = float(np.std(returns, ddof=1))
    growth = np.cumprod(np.concatenate([[1.0], 1.0 + np.asarray(returns)]))
    depths = [
        max_drawdown(growth[start : start + window + 1].tolist()).depth
        for start in range(max(1, len(growth) - window))
    ]
    return {
        "days": len(returns),
        "window": window,
        "win_rate": sum(1 for r in returns if r > 0) / len(returns),
        "mean_return": mean,
        "volatility": volatility,
        "max_drawdown": sum(depths) / len(depths),
    }


def relative_deviation(live: float | None, expected: float | None) -> float | None:
    """How far ``live`` is from ``expected``, relative to the expectation's magnitude."""
    if live is None or expected is None:
        return None
    if expected == 0:
        return 0.0 if live == 0 else math.inf
    return abs(live - expected) / abs(expected)
