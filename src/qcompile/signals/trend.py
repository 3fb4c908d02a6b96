"""Trend signals: moving-average crossovers and channel breakouts."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import numba
import numpy as np
import polars as pl

from qcompile.signals.frames import FrameColumns, hold, per_symbol, symbol_starts
from qcompile.signals.registry import signal


@numba.njit(cache=True)
def _rolling_run(
    values: np.ndarray, first: int, last: int, window: int, divisor: float, out: np.ndarray
) -> None:
    """One symbol run of ``_rolling_sums``: its arithmetic is sequential and fixed."""
    warm = min(first + window - 1, last)
    total = 0.0
    for i in range(first, warm):
        total += values[i]
        out[i] = np.nan
    for i in range(warm, last):
        total += values[i]
        if i - first >= window:
            total -= values[i - window]
        out[i] = total / divisor


@numba.njit(cache=True)
def _rolling_sums_serial(
    values: np.ndarray, starts: np.ndarray, window: int, divisor: float
) -> np.ndarray:
    out = np.empty(values.shape[0])
    for run in range(starts.shape[0] - 1):
        _rolling_run(values, starts[run], starts[run + 1], window, divisor, out)
    return out


@numba.njit(cache=True, parallel=True)
def _rolling_sums_parallel(
    values: np.ndarray, starts: np.ndarray, window: int, divisor: float
) -> np.ndarray:
    out = np.empty(values.shape[0])
    for run in numba.prange(starts.shape[0] - 1):
        _rolling_run(values, starts[run], starts[run + 1], window, divisor, out)
    return out


PARALLEL_ROWS = 1_000_000  # below this, threads cost more than they save


def _rolling_sums(
    values: np.ndarray, starts: np.ndarray, window: int, divisor: float
) -> np.ndarray:
    """Sum of the last ``window`` values per symbol run, divided by ``divisor`` (NaN until a full
    window exists). Symbols run in parallel for a long history, on one thread otherwise (the
    same numbers: each run's arithmetic is its own); a process that never needs the parallel
    kernel never compiles it, which a first backtest's compilation would otherwise wait for."""
    kernel = _rolling_sums_parallel if values.shape[0] >= PARALLEL_ROWS else _rolling_sums_serial
    return kernel(values, starts, window, divisor)


def _sma(columns: Mapping[str, np.ndarray], starts: np.ndarray) -> Callable[[int], np.ndarray]:
    close = columns["close"]
    return lambda window: _rolling_sums(close, starts, window, float(window))


def _vwma(columns: Mapping[str, np.ndarray], starts: np.ndarray) -> Callable[[int], np.ndarray]:
    """sum(close x volume) / sum(volume) over the window."""
    volume = columns["volume"]
    weighted = columns["close"] * volume

    def average(window: int) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):  # no volume in the window: undefined
            ratio = _rolling_sums(weighted, starts, window, 1.0) / _rolling_sums(
                volume, starts, window, 1.0
            )
        return np.where(np.isfinite(ratio), ratio, np.nan)

    return average


@numba.njit(cache=True)
def _crossover_targets(fast: np.ndarray, slow: np.ndarray, short: int, out: np.ndarray) -> None:
    """Long while fast > slow, else ``short``; flat until both averages exist."""
    for i in range(fast.shape[0]):
        if np.isnan(fast[i]) or np.isnan(slow[i]):
            out[i] = 0
        else:
            out[i] = 1 if fast[i] > slow[i] else short


Averages = Callable[[Mapping[str, np.ndarray], np.ndarray], Callable[[int], np.ndarray]]


def _crossovers(
    averages: Averages,
    columns: Mapping[str, np.ndarray],
    starts: np.ndarray,
    combos: Sequence[dict[str, Any]],
) -> np.ndarray:
    """Targets of many (fast, slow) pairs, each distinct window's average computed once."""
    windows = sorted({c["fast"] for c in combos} | {c["slow"] for c in combos})
    average = averages(columns, starts)
    series = {w: average(w) for w in windows}
    out = np.empty((len(combos), len(columns["close"])), dtype=np.int8)
    for row, combo in enumerate(combos):
        short = -1 if combo.get("allow_short", False) else 0
        _crossover_targets(series[combo["fast"]], series[combo["slow"]], short, out[row])
    return out


def _ma_grid(bars: pl.DataFrame, combos: Sequence[dict[str, Any]]) -> np.ndarray:
    return _crossovers(_sma, FrameColumns(bars), symbol_starts(bars), combos)


def _vwma_grid(bars: pl.DataFrame, combos: Sequence[dict[str, Any]]) -> np.ndarray:
    return _crossovers(_vwma, FrameColumns(bars), symbol_starts(bars), combos)


def _crossover_arrays(
    averages: Averages,
    columns: Mapping[str, np.ndarray],
    starts: np.ndarray,
    *,
    fast: int,
    slow: int,
    allow_short: bool = False,
) -> np.ndarray:
    """One (fast, slow) pair's targets from bar arrays: the crossovers' arrays companion."""
    combo = {"fast": fast, "slow": slow, "allow_short": allow_short}
    return _crossovers(averages, columns, starts, [combo])[0]


def _with_targets(bars: pl.DataFrame, targets: np.ndarray) -> pl.DataFrame:
    return bars.with_columns(signal=pl.Series(targets, dtype=pl.Int8))


def _fast_below_slow(params: Mapping[str, Any]) -> str | None:
    """A crossover needs a fast average shorter than the slow one: equal windows never cross."""
    fast, slow = params.get("fast"), params.get("slow")
    if isinstance(fast, int | float) and isinstance(slow, int | float) and fast >= slow:
        return f"fast ({fast}) must be shorter than slow ({slow})"
    return None


@signal(
    "ma_crossover",
    version="1.4.0",
    grid=_ma_grid,
    arrays=partial(_crossover_arrays, _sma),
    valid=_fast_below_slow,
)
def ma_crossover(
    bars: pl.DataFrame, *, fast: int, slow: int, allow_short: bool = False
) -> pl.DataFrame:
    """Long while the simple moving average of closes over ``fast`` bars is above ``slow``."""
    columns, starts = FrameColumns(bars), symbol_starts(bars)
    targets = _crossover_arrays(
        _sma, columns, starts, fast=fast, slow=slow, allow_short=allow_short
    )
    return _with_targets(bars, targets)


@signal(
    "vwma_crossover",
    version="1.4.0",
    grid=_vwma_grid,
    arrays=partial(_crossover_arrays, _vwma),
    valid=_fast_below_slow,
)
def vwma_crossover(
    bars: pl.DataFrame, *, fast: int, slow: int, allow_short: bool = False
) -> pl.DataFrame:
    """As ``ma_crossover`` on volume-weighted averages: sum(close x volume) / sum(volume)."""
    columns, starts = FrameColumns(bars), symbol_starts(bars)
    targets = _crossover_arrays(
        _vwma, columns, starts, fast=fast, slow=slow, allow_short=allow_short
    )
    return _with_targets(bars, targets)


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
