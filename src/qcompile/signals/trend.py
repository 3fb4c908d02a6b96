"""Trend signals: moving-average crossovers and channel breakouts."""

from __future__ import annotations

import polars as pl

from qcompile.signals._frames import hold, per_symbol
from qcompile.signals.registry import signal


def _crossover(fast_ma: pl.Expr, slow_ma: pl.Expr, allow_short: bool) -> pl.Expr:
    short = pl.lit(-1 if allow_short else 0, pl.Int8)
    position = pl.when(fast_ma > slow_ma).then(pl.lit(1, pl.Int8)).otherwise(short)
    # no position until both averages exist
    return (
        pl.when(slow_ma.is_null() | fast_ma.is_null()).then(pl.lit(0, pl.Int8)).otherwise(position)
    )


@signal("ma_crossover", version="1.0.0")
def ma_crossover(
    bars: pl.DataFrame, *, fast: int, slow: int, allow_short: bool = False
) -> pl.DataFrame:
    """Long while the simple moving average of closes over ``fast`` bars is above ``slow``."""
    fast_ma = per_symbol(pl.col("close").rolling_mean(fast))
    slow_ma = per_symbol(pl.col("close").rolling_mean(slow))
    return bars.with_columns(signal=_crossover(fast_ma, slow_ma, allow_short))


@signal("vwma_crossover", version="1.0.0")
def vwma_crossover(
    bars: pl.DataFrame, *, fast: int, slow: int, allow_short: bool = False
) -> pl.DataFrame:
    """As ``ma_crossover`` on volume-weighted averages: sum(close x volume) / sum(volume)."""

    def vwma(window: int) -> pl.Expr:
        weighted = per_symbol((pl.col("close") * pl.col("volume")).rolling_sum(window))
        return weighted / per_symbol(pl.col("volume").rolling_sum(window))

    return bars.with_columns(signal=_crossover(vwma(fast), vwma(slow), allow_short))


@signal("breakout", version="1.0.0")
def breakout(
    bars: pl.DataFrame, *, lookback: int, exit_lookback: int, allow_short: bool = False
) -> pl.DataFrame:
    """Long when the close breaks the highest high of the previous ``lookback`` bars; flat when it
    breaks the lowest low of the previous ``exit_lookback`` bars (mirrored for shorts)."""
    prior_high = per_symbol(pl.col("high").shift(1).rolling_max(lookback))
    prior_low = per_symbol(pl.col("low").shift(1).rolling_min(lookback))
    exit_high = per_symbol(pl.col("high").shift(1).rolling_max(exit_lookback))
    exit_low = per_symbol(pl.col("low").shift(1).rolling_min(exit_lookback))
    enter_long = pl.col("close") > prior_high
    enter_short = (pl.col("close") < prior_low) & pl.lit(allow_short)
    leave = (pl.col("close") < exit_low) | (pl.col("close") > exit_high)
    return bars.with_columns(
        signal=hold(enter_long, enter_short, leave & ~enter_long & ~enter_short)
    )
