"""What the strategy is compared with: a buy-and-hold benchmark and the statistics against it.

Consumes the window's bars (tradable symbols and the universe's benchmarks) and the strategy's
equity curve; produces the benchmark's equity on the strategy's own timestamps and the relative
statistics (alpha, beta, correlation, tracking error, information ratio) in ``RELATIVE_FORMULAS``.
A strategy that made +57 % while holding the stock made +700 % is not a success: the report
puts the two side by side.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

EQUAL_WEIGHT = "equal_weight"

RELATIVE_FORMULAS = {
    "beta": "cov(r, b) / var(b); r and b the strategy's and the benchmark's bar returns",
    "alpha": "(mean(r) - beta x mean(b)) x P; Jensen's alpha, risk-free 0, annualised by P",
    "correlation": "cov(r, b) / (stdev(r) x stdev(b)), Pearson",
    "tracking_error": "stdev(r - b) x sqrt(P)",
    "information_ratio": "mean(r - b) / stdev(r - b) x sqrt(P)",
}


def describe(choice: str, symbols: Sequence[str]) -> str:
    if choice == EQUAL_WEIGHT:
        return f"buy-and-hold of {', '.join(symbols)} in equal parts"
    return f"buy-and-hold of {choice}"


def buy_and_hold(
    bars: pl.DataFrame, symbols: Sequence[str], timestamps: Sequence[int], capital: float
) -> np.ndarray:
    """Equity of ``capital`` split equally over ``symbols``, each part bought at its symbol's
    first close at or after the first timestamp and held (no rebalancing, no costs), marked at
    ``timestamps``. A part waits in cash until its symbol's first bar, and a symbol that stops
    trading keeps its last close."""
    clock = pl.DataFrame({"timestamp": list(timestamps)}, schema={"timestamp": pl.Int64})
    total = np.zeros(len(timestamps))
    part = capital / len(symbols)
    for symbol in symbols:
        closes = (
            clock.join(
                bars.filter(pl.col("symbol") == symbol).select("timestamp", "close"),
                on="timestamp",
                how="left",
            )
            .sort("timestamp")
            .get_column("close")
            .forward_fill()
            .to_numpy()
            .astype(float)
        )
        held = ~np.isnan(closes)
        if not held.any():
            total += part
            continue
        bought = closes[np.argmax(held)]
        total += np.where(held, part * closes / bought, part)
    return total


def _returns(equity: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):  # bars after a wipe-out: left out
        return equity[1:] / equity[:-1] - 1.0


def relative(strategy: Sequence[float], benchmark: Sequence[float], ppy: float) -> dict[str, Any]:
    """The strategy's bar returns against the benchmark's over the same bars, as in
    ``RELATIVE_FORMULAS`` (sample moments). Bars after the strategy's equity is gone are left
    out; a statistic whose denominator is zero is None."""
    mine, theirs = np.asarray(strategy, dtype=float), np.asarray(benchmark, dtype=float)
    usable = (mine[:-1] > 0) & (theirs[:-1] > 0)
    r, b = _returns(mine)[usable], _returns(theirs)[usable]
    empty = dict.fromkeys(RELATIVE_FORMULAS)
    if len(r) < 2:
        return {**empty, "bars": len(r)}
    covariance = float(np.cov(r, b, ddof=1)[0, 1])
    var_b, sd_r, sd_b = float(np.var(b, ddof=1)), float(np.std(r, ddof=1)), float(np.std(b, ddof=1))
    active = r - b
    sd_active = float(np.std(active, ddof=1))
    beta = covariance / var_b if var_b > 0 else None
    statistics = {
        "beta": beta,
        "alpha": None if beta is None else (float(r.mean()) - beta * float(b.mean())) * ppy,
        "correlation": covariance / (sd_r * sd_b) if sd_r > 0 and sd_b > 0 else None,
        "tracking_error": sd_active * math.sqrt(ppy),
        "information_ratio": (
            float(active.mean()) / sd_active * math.sqrt(ppy) if sd_active > 0 else None
        ),
    }
    # twelve significant digits: numpy's summation order changes between versions and moved the
    # last digit of these, which made a committed report differ on a fresh install
    rounded = {k: None if v is None else float(f"{v:.12g}") for k, v in statistics.items()}
    return {"bars": len(r), **rounded}
