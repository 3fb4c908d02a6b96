"""The engine the runner uses: the compiled per-sleeve loop of ``kernel`` over every symbol.

Same inputs and outputs as ``engine.run`` (the readable reference); tests check they agree. All
sleeves go through the compiled loop in one call; Python only touches the trades.
"""

from __future__ import annotations

import itertools

import numpy as np
import polars as pl

from qcompile.research.backtest.engine import (
    Result,
    Settings,
    Trade,
    combine_arrays,
    sleeve_capital,
)
from qcompile.research.backtest.kernel import simulate_many


def run(bars: pl.DataFrame, settings: Settings) -> Result:
    """Backtest ``bars`` (symbol, timestamp, open, close, signal; sorted) under ``settings``."""
    if bars.height == 0:
        raise ValueError("no bars to backtest")
    # bars arrive sorted by symbol then time (the loader's order); sort only if they are not
    ordered = (
        bars
        if bars["symbol"].is_sorted()
        else bars.sort("symbol", "timestamp", maintain_order=True)
    )
    symbols = ordered["symbol"].to_numpy()
    boundaries = np.flatnonzero(symbols[1:] != symbols[:-1]) + 1
    starts = np.concatenate(([0], boundaries, [len(symbols)])).astype(np.int64)
    names = [str(symbols[s]) for s in starts[:-1]]
    capital = sleeve_capital(settings, len(names))
    times = ordered["timestamp"].to_numpy()
    closes = ordered["close"].cast(pl.Float64).to_numpy()
    # int8, as the grid passes them: one compiled specialisation of the kernel serves both
    signal = ordered["signal"].fill_null(0).cast(pl.Int8).to_numpy()
    if settings.execution == "next_open":
        prices = ordered["open"].cast(pl.Float64).to_numpy()
        wanted = np.concatenate(([0], signal[:-1])).astype(np.int8)
        wanted[starts[:-1]] = 0  # each sleeve starts flat: no signal before its first bar
    else:
        prices, wanted = closes, signal.copy()  # writable, as the grid's: the same kernel types
    n = len(times)
    equity, gross = np.empty(n), np.empty(n)
    position = np.empty(n, dtype=np.int8)
    # reversals close a trade on every bar: at most one per bar, plus one final close per sleeve
    records = np.zeros((n + len(names), 10))
    costs = settings.costs
    count = simulate_many(
        prices,
        closes,
        wanted,
        starts,
        capital,
        costs.slippage_bps / 10_000.0,
        costs.commission_per_share,
        costs.min_commission,
        settings.fractional_shares,
        equity,
        position,
        gross,
        records,
    )
    trades = [
        Trade(
            names[int(r[9])],
            int(r[2]),
            int(times[int(r[0])]),
            float(r[4]),
            int(times[int(r[1])]),
            float(r[5]),
            float(r[3]),
            float(r[6]),
            float(r[7]),
            float(r[8]),
        )
        for r in records[:count]
    ]
    trades.sort(key=lambda t: (t.entry_time, t.symbol))
    sleeves = {
        name: pl.DataFrame(
            {
                "timestamp": times[a:b],
                "position": position[a:b],
                "equity": equity[a:b],
                "gross": gross[a:b],
            }
        )
        for name, (a, b) in zip(names, itertools.pairwise(starts), strict=True)
    }
    bounds = list(itertools.pairwise(starts))
    curve = combine_arrays(
        [times[a:b] for a, b in bounds],
        [equity[a:b] for a, b in bounds],
        [gross[a:b] for a, b in bounds],
        settings.initial_capital - capital * len(names),
        capital,
    )
    return Result(curve, trades, sleeves)
