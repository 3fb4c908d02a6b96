"""Helpers shared by the built-in signals (and the grid engine): per-symbol windows, symbol runs
and position holding."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numba
import numpy as np
import polars as pl

SYMBOL = "symbol"
RUNS_FROM_TIMES = 50_000  # rows from which symbol runs are read off the times (fixed costs)


@numba.njit(cache=True)
def _time_drops(times: np.ndarray, out: np.ndarray) -> int:
    """Rows whose time is not after the previous row's, written to ``out`` as far as it goes;
    returns how many there are."""
    count = 0
    for row in range(1, times.shape[0]):
        if times[row] <= times[row - 1]:
            if count < out.shape[0]:
                out[count] = row
            count += 1
    return count


def compared_starts(symbols: pl.Series) -> np.ndarray:
    """First row of each symbol's run in a frame sorted by symbol, plus the row count: each row
    against the one before, on zero-copy slices (cheaper than rle, which also builds the values)."""
    rows = symbols.len()
    if rows == 0:
        return np.zeros(1, dtype=np.int64)
    changes = symbols.slice(1).ne_missing(symbols.slice(0, rows - 1)).arg_true().to_numpy()
    return np.concatenate(([0], changes.astype(np.int64) + 1, [rows])).astype(np.int64)


def symbol_starts(bars: pl.DataFrame) -> np.ndarray:
    """``compared_starts`` of bars sorted by symbol then time, on large frames read off the
    timestamps first, which costs a fraction of comparing strings.

    Within a symbol the times rise, so wherever the time does not rise a symbol starts. The runs
    between those rows are exactly the symbols' if each run begins and ends on the same symbol
    (the frame being sorted by symbol, so is every row between) and differs from the run before.
    Otherwise (a symbol whose first bar comes after the previous symbol's last, or a repeated
    timestamp), every symbol is compared with the one before after all.
    """
    symbols, stamps = bars[SYMBOL], bars["timestamp"]
    rows = bars.height
    if rows >= RUNS_FROM_TIMES and stamps.dtype.is_integer() and stamps.null_count() == 0:
        times = stamps.to_numpy()
        drops = np.empty(4096, dtype=np.int64)
        count = _time_drops(times, drops)
        if count > len(drops):
            drops = np.empty(count, dtype=np.int64)
            _time_drops(times, drops)
        starts = np.concatenate(([0], drops[:count], [rows])).astype(np.int64)
        firsts, lasts = symbols.gather(starts[:-1]), symbols.gather(starts[1:] - 1)
        if (
            firsts.eq_missing(lasts).all()
            and firsts.slice(1).ne_missing(lasts.slice(0, count)).all()
        ):
            return starts
    return compared_starts(symbols)


class FrameColumns(Mapping[str, np.ndarray]):
    """A frame's bar columns as numpy arrays, each converted on first use (float64; the
    timestamp int64): what an ``arrays`` companion reads, given a frame (the backtest) or the
    runner's history buffers (no frame at all)."""

    def __init__(self, bars: pl.DataFrame) -> None:
        self._bars = bars
        self._arrays: dict[str, np.ndarray] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        array = self._arrays.get(name)
        if array is None:
            if name not in self._bars.columns:
                raise KeyError(name)
            kind = pl.Int64 if name == "timestamp" else pl.Float64
            array = self._arrays[name] = self._bars[name].cast(kind).to_numpy()
        return array

    def __iter__(self) -> Iterator[str]:
        return iter(self._bars.columns)

    def __len__(self) -> int:
        return self._bars.width


def per_symbol(expr: pl.Expr) -> pl.Expr:
    """Evaluate ``expr`` separately for each symbol (bars are sorted by symbol, timestamp)."""
    return expr.over(SYMBOL)


def hold(enter_long: pl.Expr, enter_short: pl.Expr, leave: pl.Expr) -> pl.Expr:
    """Target position that stays in a trade from its entry bar until an exit bar.

    Entries win over an exit on the same bar; with no event yet, the position is flat.
    """
    event = (
        pl.when(enter_long)
        .then(pl.lit(1, pl.Int8))
        .when(enter_short)
        .then(pl.lit(-1, pl.Int8))
        .when(leave)
        .then(pl.lit(0, pl.Int8))
        .otherwise(pl.lit(None, pl.Int8))
    )
    return per_symbol(event.forward_fill()).fill_null(0).cast(pl.Int8)
