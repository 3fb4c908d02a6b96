"""Robustness checks of a backtest: Monte Carlo, parameter sensitivity, look-ahead, survivorship.

Each check returns plain data for evidence.json and the report. Everything random is seeded, so
the same inputs give the same numbers.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Sequence
from typing import Any

import polars as pl

from qcompile.research.backtest.metrics import max_drawdown

PERCENTILES = (5, 50, 95)
MAX_GRID = 64  # combinations; larger grids belong to `qcompile sweep`


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    picked = {}
    for p in PERCENTILES:
        index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
        picked[f"p{p}"] = ordered[index]
    return picked


def _path_stats(returns: Sequence[float]) -> tuple[float, float]:
    equity = [1.0]
    for r in returns:
        equity.append(equity[-1] * (1.0 + r))
    return equity[-1] - 1.0, max_drawdown(equity).depth


def monte_carlo(
    trade_returns: Sequence[float], bar_returns: Sequence[float], seed: int, samples: int = 1000
) -> dict[str, Any]:
    """Trade-order bootstrap and bar-return resampling: percentiles of final return and drawdown."""
    rng = random.Random(seed)
    result: dict[str, Any] = {"samples": samples, "seed": seed}
    for name, pool in (
        ("trade_bootstrap", list(trade_returns)),
        ("return_resampling", list(bar_returns)),
    ):
        if not pool:
            result[name] = None
            continue
        finals, drawdowns = [], []
        for _ in range(samples):
            final, drawdown = _path_stats([rng.choice(pool) for _ in pool])
            finals.append(final)
            drawdowns.append(drawdown)
        result[name] = {
            "final_return": _percentiles(finals),
            "max_drawdown": _percentiles(drawdowns),
        }
    return result


def parameter_grid(ranges: dict[str, list[Any]], chosen: dict[str, Any]) -> list[dict[str, Any]]:
    """Every combination of the tested ranges (other parameters as chosen), at most MAX_GRID."""
    names = sorted(ranges)
    combos = []
    for values in itertools.product(*(ranges[n] for n in names)):
        combos.append({**chosen, **dict(zip(names, values, strict=True))})
        if len(combos) == MAX_GRID:
            break
    return combos


def look_ahead(
    signal: Callable[[pl.DataFrame], pl.DataFrame],
    bars: pl.DataFrame,
    full: pl.DataFrame,
    checkpoints: int = 12,
) -> dict[str, Any]:
    """Recompute the signal on truncated histories; any value that differs from the full-history
    signal at the same bar used data from after that bar."""
    times = bars["timestamp"].unique().sort()
    cuts = sorted(
        {times[int(i * (len(times) - 1) / checkpoints)] for i in range(1, checkpoints + 1)}
    )
    reference = full.select("symbol", "timestamp", pl.col("signal").fill_null(0).alias("full"))
    for cut in cuts:
        truncated = signal(bars.filter(pl.col("timestamp") <= cut)).select(
            "symbol", "timestamp", pl.col("signal").fill_null(0).alias("partial")
        )
        compared = (
            truncated.join(reference, on=["symbol", "timestamp"])
            .filter(pl.col("partial") != pl.col("full"))
            .sort("timestamp", "symbol")
        )
        if compared.height:
            first = compared.row(0, named=True)
            return {
                "passed": False,
                "checkpoints": len(cuts),
                "first_offending_bar": {
                    "symbol": first["symbol"],
                    "timestamp": first["timestamp"],
                    "with_full_history": first["full"],
                    "with_history_to_then": first["partial"],
                },
            }
    return {"passed": True, "checkpoints": len(cuts), "first_offending_bar": None}


def survivorship(
    bars: pl.DataFrame,
    window_end: int,
    declared: str,
    as_of: str,
    tolerance_ms: int = 10 * 86_400_000,
) -> dict[str, Any]:
    """Which symbols stop trading before the window ends, and whether that looks survivor-biased."""
    last = bars.group_by("symbol").agg(pl.col("timestamp").max().alias("last")).sort("symbol")
    stopped = last.filter(pl.col("last") < window_end - tolerance_ms)
    warning = None
    if declared == "survivors_only":
        warning = "the universe holds only survivors by declaration: results are biased upwards"
    elif declared == "as_of" and stopped.height == 0:
        warning = (
            f"the universe is declared as of {as_of} but every member trades to the end of the "
            "window: it may contain only survivors"
        )
    return {
        "declared": declared,
        "stopped_trading": [
            {"symbol": r["symbol"], "last_timestamp": r["last"]}
            for r in stopped.iter_rows(named=True)
        ],
        "warning": warning,
    }
